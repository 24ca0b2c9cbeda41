#include "sender.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <numeric>

#include "json.h"

namespace orchard_webhook {
namespace {

constexpr size_t kPage = 256;            // kv_scan page
constexpr size_t kMaxScanPerFill = 4096;  // outbox records looked at per endpoint per fill
constexpr int64_t kFastPollMs = 10;       // after a Wake, until the records are committed
constexpr int64_t kFastWindowMs = 500;
constexpr size_t kMaxOpsPerWrite = 5000;
constexpr size_t kFlushOps = 256;
constexpr int64_t kFlushDelayMs = 5;
constexpr int64_t kFullScanMs = 2000;
constexpr size_t kMaxHeldPerPass = 100000;  // then the pass starts over (bounded memory)

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

size_t Discard(char*, size_t size, size_t n, void*) { return size * n; }

std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s.substr(0, 300)) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c == '\n' || c == '\r' ? ' ' : c);
  }
  return out + "\"";
}

}  // namespace

struct Sender::Transfer {
  CURL* easy = nullptr;
  Endpoint* ep = nullptr;
  bool busy = false;
  std::string key;
  uint64_t seq = 0;
  Record rec;
  std::string body;
  curl_slist* headers = nullptr;
  char error[CURL_ERROR_SIZE] = {0};
};

struct Sender::Endpoint {
  const EndpointConfig* cfg = nullptr;
  std::string prefix;  // out/<name>/
  std::vector<std::unique_ptr<Transfer>> slots;
  int busy = 0;
  std::unordered_set<std::string> busy_keys;            // in flight, or written by the next Flush
  std::unordered_map<std::string, int> busy_devices;    // ordering groups with a record in flight
  std::unordered_set<std::string> pending_devices;      // a failed record's retry not yet written
  bool in_pass = false;                                 // a scan pass is under way
  bool pass_first = false;                              // it has not seen a record yet
  std::string pass_after;                               // the current scan pass is past this key
  std::string floor_after;                              // passes start after this key (see Fill)
  int64_t next_full_scan_ms = 0;
  std::unordered_set<std::string> pass_held;            // devices held for the rest of the pass
  int64_t stored_dead = 0;                              // dead/ keys (approximate after write failures)
  bool failing = false;                                 // for endpoint_failing / endpoint_recovered lines
  struct Stats {
    uint64_t delivered = 0, failed_attempts = 0, dead = 0;
    int64_t last_delivered_ms = 0, last_failure_ms = 0;
    std::string last_error;
  } stats;  // guarded by Sender::stats_mu_
};

Sender::Sender(const Config& config, Host* host) : config_(config), host_(host), rng_(std::random_device{}()) {}

Sender::~Sender() {
  Stop();
  for (auto& ep : endpoints_)
    for (auto& t : ep->slots) {
      if (t->easy) curl_easy_cleanup(t->easy);
      if (t->headers) curl_slist_free_all(t->headers);
    }
  if (multi_) curl_multi_cleanup(multi_);
}

orchard_status Sender::Start(std::string* error) {
  multi_ = curl_multi_init();
  if (!multi_) {
    *error = "curl_multi_init failed";
    return ORCHARD_ERR_FAILED;
  }
  int total = 0;
  for (const auto& cfg : config_.endpoints) total += cfg.concurrency;
  curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, static_cast<long>(total + 4));
  for (const auto& cfg : config_.endpoints) {
    auto ep = std::make_unique<Endpoint>();
    ep->cfg = &cfg;
    ep->prefix = OutPrefix(cfg.name);
    for (int i = 0; i < cfg.concurrency; ++i) {
      auto t = std::make_unique<Transfer>();
      t->ep = ep.get();
      t->easy = curl_easy_init();
      if (!t->easy) {
        *error = "curl_easy_init failed";
        return ORCHARD_ERR_FAILED;
      }
      CURL* e = t->easy;
      curl_easy_setopt(e, CURLOPT_URL, cfg.url.c_str());
      curl_easy_setopt(e, CURLOPT_POST, 1L);
      curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
      curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(cfg.timeout_ms));
      curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(cfg.connect_timeout_ms));
      curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
      curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
      curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &Discard);
      curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->error);
      curl_easy_setopt(e, CURLOPT_PRIVATE, t.get());
      curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
      curl_easy_setopt(e, CURLOPT_USERAGENT, "orchard-webhook/1.0");
      ep->slots.push_back(std::move(t));
    }
    // Dead letters kept so far (bounded by dead_max, trimmed in Flush).
    int64_t n = 0;
    std::string after;
    while (true) {
      size_t page = 0;
      std::string last;
      orchard_status st = host_->Scan(DeadPrefix(cfg.name), after, 10000, [&](std::string_view k, std::string_view) {
        ++page;
        last.assign(k);
        return true;
      });
      if (st != ORCHARD_OK) {
        *error = "kv_scan failed (status " + std::to_string(static_cast<int>(st)) + ")";
        return st == ORCHARD_ERR_UNSUPPORTED ? ORCHARD_ERR_UNSUPPORTED : ORCHARD_ERR_FAILED;
      }
      n += static_cast<int64_t>(page);
      if (page < 10000 || n > 10LL * 1000 * 1000) break;
      after = last;
    }
    ep->stored_dead = n;
    endpoints_.push_back(std::move(ep));
  }
  thread_ = std::thread([this] { Run(); });
  started_ = true;
  return ORCHARD_OK;
}

void Sender::Wake() {
  fast_until_ms_.store(NowMs() + kFastWindowMs, std::memory_order_relaxed);
  if (!woken_.exchange(true) && multi_) curl_multi_wakeup(multi_);
}

void Sender::Stop() {
  if (!started_) return;
  started_ = false;
  stop_.store(true);
  if (multi_) curl_multi_wakeup(multi_);
  if (thread_.joinable()) thread_.join();
}

void Sender::Run() noexcept {
  // Every failure ends here, never in the host: the thread restarts its loop
  // after an unexpected exception (bounded by a pause) until stopped.
  while (!stop_.load()) {
    try {
      Loop();
      return;
    } catch (const std::exception& e) {
      try {
        host_->Log(ORCHARD_LOG_ERROR, "event=webhook_sender_error detail=" + Quote(e.what()));
      } catch (...) {
      }
    } catch (...) {
      try {
        host_->Log(ORCHARD_LOG_ERROR, "event=webhook_sender_error detail=\"unknown exception\"");
      } catch (...) {
      }
    }
    // Drop what was in flight (still in the outbox: sent again later).
    try {
      for (auto& ep : endpoints_)
        for (auto& t : ep->slots)
          if (t->busy) {
            curl_multi_remove_handle(multi_, t->easy);
            Release(*t);
          }
    } catch (...) {
    }
    for (int i = 0; i < 100 && !stop_.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void Sender::Loop() {
  int64_t next_fill = 0;
  int64_t stop_deadline = 0;
  bool any_busy = false;
  while (true) {
    const int64_t now = NowMs();
    const bool stopping = stop_.load();
    if (stopping && stop_deadline == 0) stop_deadline = now + config_.shutdown_grace_ms;
    int running = 0;
    curl_multi_perform(multi_, &running);
    const size_t ops_before = ops_.size();
    Collect(now);
    const bool completed = ops_.size() != ops_before;
    if (ops_.empty()) ops_since_ms_ = 0;
    else if (ops_since_ms_ == 0) ops_since_ms_ = now;
    any_busy = std::any_of(endpoints_.begin(), endpoints_.end(), [](const auto& ep) { return ep->busy > 0; });
    // Outcomes are written in batches (one kv_write per batch, not per
    // delivery): when enough piled up, when the oldest waited kFlushDelayMs,
    // or when nothing is in flight.
    if (!ops_.empty() && (ops_.size() >= kFlushOps || now - ops_since_ms_ >= kFlushDelayMs || !any_busy || stopping))
      Flush();
    if (stopping && (!any_busy || now >= stop_deadline)) break;

    const bool woke = woken_.exchange(false);
    int64_t earliest_due = INT64_MAX;
    if (!stopping && (completed || woke || now >= next_fill)) {
      bool started = false;
      for (auto& ep : endpoints_) started |= Fill(*ep, now, woke || now >= next_fill, &earliest_due);
      const bool fast = fast_until_ms_.load(std::memory_order_relaxed) > now;
      next_fill = now + (fast ? kFastPollMs : config_.poll_ms);
      if (earliest_due != INT64_MAX) next_fill = std::min(next_fill, std::max(earliest_due, now + 1));
      if (started) curl_multi_perform(multi_, &running);
    }
    int64_t wait = std::max<int64_t>(0, next_fill - NowMs());
    // Transfers can finish inside curl_multi_perform (a nearby receiver
    // answers while curl is still sending the other requests): their messages
    // wait in the multi handle with no socket left to wake the poll. Collect
    // them now instead of sleeping until the next fill timer (up to poll_ms;
    // this capped the drain rate at a few hundred to a few thousand per second).
    if (running < std::accumulate(endpoints_.begin(), endpoints_.end(), 0,
                                  [](int n, const auto& ep) { return n + ep->busy; }))
      wait = 0;
    if (stopping) wait = std::min<int64_t>(wait, std::max<int64_t>(0, stop_deadline - NowMs()));
    if (!ops_.empty()) wait = std::min<int64_t>(wait, kFlushDelayMs);
    curl_multi_poll(multi_, nullptr, 0, static_cast<int>(std::min<int64_t>(wait, 1000)), nullptr);
  }
  // Whatever is still in flight is abandoned: it stays in the outbox and is
  // sent again on the next start.
  size_t abandoned = 0;
  for (auto& ep : endpoints_)
    for (auto& t : ep->slots)
      if (t->busy) {
        curl_multi_remove_handle(multi_, t->easy);
        Release(*t);
        ++abandoned;
      }
  Flush();
  if (abandoned > 0)
    host_->Log(ORCHARD_LOG_INFO, "event=webhook_stopped in_flight_abandoned=" + std::to_string(abandoned) +
                                     " detail=\"sent again after the next start\"");
}

bool Sender::Fill(Endpoint& ep, int64_t now, bool timer, int64_t* earliest_due) {
  const int free_slots = ep.cfg->concurrency - ep.busy;
  // Refill in batches (half the slots), not after every completion: each
  // fill costs a seek, and the outbox is full of tombstones while it drains.
  if (free_slots <= 0 || (ep.busy > 0 && free_slots * 2 < ep.cfg->concurrency && !timer)) return false;
  struct Candidate {
    std::string key, value;
  };
  std::vector<Candidate> picked;
  int started = 0;
  size_t scanned = 0;
  bool wrapped = false;
  // A pass walks the outbox from its start to its end over several fills; a
  // device with a record earlier in the pass that is still pending (in
  // flight, waiting for a retry, or itself held) stays held for the rest of
  // the pass, so its records go out in order. The next pass starts over.
  while (scanned < kMaxScanPerFill && started < free_slots) {
    if (ep.pass_held.size() > kMaxHeldPerPass) ep.in_pass = false;
    if (!ep.in_pass) {
      // Delivered records leave tombstones that RocksDB skips on every seek
      // until compaction: a pass starts at the first record the last one saw
      // (the floor), and from the very start only every kFullScanMs (to find
      // records another lane committed late with a lower seq).
      ep.in_pass = true;
      ep.pass_first = true;
      ep.pass_held.clear();
      if (now >= ep.next_full_scan_ms) {
        ep.pass_after.clear();
        ep.next_full_scan_ms = now + kFullScanMs;
      } else {
        ep.pass_after = ep.floor_after;
      }
    }
    size_t page = 0;
    orchard_status st = host_->Scan(ep.prefix, ep.pass_after, kPage, [&](std::string_view key, std::string_view value) {
      ++page;
      ++scanned;
      ep.pass_after.assign(key);
      if (ep.pass_first) {
        ep.pass_first = false;
        uint64_t seq = 0;
        ep.floor_after = SeqOfKey(key, &seq) && seq > 0 ? OutKey(ep.cfg->name, seq - 1) : std::string();
      }
      if (ep.busy_keys.count(ep.pass_after)) return true;
      Record rec;
      if (!DecodeRecord(value, &rec, /*header_only=*/true)) {
        picked.push_back({ep.pass_after, std::string(value)});  // Begin drops it
        return started + static_cast<int>(picked.size()) < free_slots;
      }
      if (ep.busy_devices.count(rec.device) || ep.pending_devices.count(rec.device) ||
          !ep.pass_held.insert(rec.device).second)
        return true;
      if (rec.next_ms > now) {
        *earliest_due = std::min(*earliest_due, rec.next_ms);
        return true;
      }
      picked.push_back({ep.pass_after, std::string(value)});
      return started + static_cast<int>(picked.size()) < free_slots;
    });
    if (st != ORCHARD_OK) {
      host_->Log(ORCHARD_LOG_WARN, "event=webhook_scan_failed endpoint=" + ep.cfg->name +
                                       " status=" + std::to_string(static_cast<int>(st)));
      break;
    }
    // Start what this page found before the next page (or a new pass) looks
    // again: the started records are then busy, their devices held.
    for (const auto& c : picked) started += Begin(ep, c.key, c.value, now) ? 1 : 0;
    picked.clear();
    if (page < kPage && started + static_cast<int>(picked.size()) < free_slots) {
      // The end of the outbox: the next pass starts over (at most once per fill).
      ep.in_pass = false;
      if (wrapped) break;
      wrapped = true;
    }
  }
  return started > 0;
}

bool Sender::Begin(Endpoint& ep, const std::string& key, std::string_view value, int64_t now) {
  uint64_t seq = 0;
  Record rec;
  if (!SeqOfKey(key, &seq) || !DecodeRecord(value, &rec, /*header_only=*/false)) {
    host_->Log(ORCHARD_LOG_ERROR, "event=webhook_corrupt_record endpoint=" + ep.cfg->name + " key=" + Quote(key));
    ops_.push_back({key, "", true});
    ep.busy_keys.insert(key);
    return false;
  }
  if (rec.parts > 0) {
    rec.body.clear();
    int got = 0;
    orchard_status st = host_->Scan(PartPrefix(ep.cfg->name, seq), "", static_cast<size_t>(rec.parts) + 1,
                                    [&](std::string_view, std::string_view v) {
                                      rec.body.append(v);
                                      ++got;
                                      return true;
                                    });
    if (st != ORCHARD_OK) return false;  // tried again at the next fill
    if (got != rec.parts) {
      DeadLetter(ep, seq, rec, key, "corrupt", now);
      return false;
    }
  }
  Transfer* t = nullptr;
  for (auto& s : ep.slots)
    if (!s->busy) {
      t = s.get();
      break;
    }
  if (!t) return false;
  t->busy = true;
  t->key = key;
  t->seq = seq;
  t->body = std::move(rec.body);
  rec.body.clear();
  t->rec = std::move(rec);
  t->error[0] = 0;
  curl_slist* h = curl_slist_append(nullptr, "Content-Type: application/json");
  h = curl_slist_append(h, "Expect:");
  if (!ep.cfg->secret.empty()) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (HMAC(EVP_sha256(), ep.cfg->secret.data(), static_cast<int>(ep.cfg->secret.size()),
             reinterpret_cast<const unsigned char*>(t->body.data()), t->body.size(), mac, &len) == nullptr) {
      curl_slist_free_all(h);
      t->busy = false;
      host_->Log(ORCHARD_LOG_ERROR, "event=webhook_hmac_failed endpoint=" + ep.cfg->name);
      return false;
    }
    const std::string sig =
        "X-Hmac-Signature: " + Base64(std::string_view(reinterpret_cast<const char*>(mac), len));
    h = curl_slist_append(h, sig.c_str());
  }
  t->headers = h;
  curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, t->body.data());
  curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(t->body.size()));
  if (curl_multi_add_handle(multi_, t->easy) != CURLM_OK) {
    Release(*t);
    return false;
  }
  ep.busy += 1;
  ep.busy_keys.insert(key);
  ep.busy_devices[t->rec.device] += 1;
  return true;
}

void Sender::Release(Transfer& t) {
  if (!t.busy) return;
  Endpoint& ep = *t.ep;
  t.busy = false;
  if (t.headers) curl_slist_free_all(t.headers);
  t.headers = nullptr;
  ep.busy -= 1;
  ep.busy_keys.erase(t.key);
  auto it = ep.busy_devices.find(t.rec.device);
  if (it != ep.busy_devices.end() && --it->second <= 0) ep.busy_devices.erase(it);
  std::string().swap(t.body);
}

void Sender::Collect(int64_t now) {
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL* easy = msg->easy_handle;
    const CURLcode rc = msg->data.result;
    Transfer* t = nullptr;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, reinterpret_cast<char**>(&t));
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(multi_, easy);
    if (t) Finish(*t, rc, status, now);
  }
}

void Sender::Finish(Transfer& t, CURLcode rc, long status, int64_t now) {
  Endpoint& ep = *t.ep;
  const std::string key = t.key;
  Record rec = t.rec;
  const uint64_t seq = t.seq;
  const std::string body = rec.parts == 0 ? std::move(t.body) : std::string();
  Release(t);
  // The key stays busy until Flush wrote what happened to it.
  ep.busy_keys.insert(key);

  if (rc == CURLE_OK && status >= 200 && status < 300) {
    ops_.push_back({key, "", true});
    for (int p = 0; p < rec.parts; ++p) ops_.push_back({PartKey(ep.cfg->name, seq, p), "", true});
    bool recovered = false;
    {
      std::lock_guard lock(stats_mu_);
      ep.stats.delivered += 1;
      ep.stats.last_delivered_ms = now;
    }
    if (ep.failing) {
      ep.failing = false;
      recovered = true;
    }
    if (recovered)
      host_->Log(ORCHARD_LOG_INFO, "event=webhook_endpoint_recovered endpoint=" + ep.cfg->name);
    return;
  }
  std::string error;
  if (rc != CURLE_OK) error = std::string(curl_easy_strerror(rc)) + (t.error[0] ? std::string(": ") + t.error : "");
  else error = "HTTP " + std::to_string(status);
  {
    std::lock_guard lock(stats_mu_);
    ep.stats.failed_attempts += 1;
    ep.stats.last_failure_ms = now;
    ep.stats.last_error = error;
  }
  if (!ep.failing) {
    ep.failing = true;
    host_->Log(ORCHARD_LOG_WARN, "event=webhook_endpoint_failing endpoint=" + ep.cfg->name +
                                     " url=" + Quote(ep.cfg->RedactedUrl()) + " error=" + Quote(error));
  }
  rec.attempts += 1;
  rec.last_error = error;
  const bool permanent = rc == CURLE_OK && status >= 400 && status < 500 && status != 408 && status != 429;
  if (permanent) {
    DeadLetter(ep, seq, rec, key, "http_" + std::to_string(status), now);
    return;
  }
  if (rec.attempts >= config_.max_attempts || now - rec.created_ms >= config_.max_age_ms) {
    DeadLetter(ep, seq, rec, key, "gave_up", now);
    return;
  }
  rec.next_ms = now + Backoff(rec.attempts);
  rec.body = body;
  ep.pending_devices.insert(rec.device);  // its later records wait for this one
  ops_.push_back({key, EncodeRecord(rec), false});
}

void Sender::DeadLetter(Endpoint& ep, uint64_t seq, const Record& rec, const std::string& key,
                        const std::string& reason, int64_t now) {
  std::string summary = "{\"event_id\":";
  AppendJsonString(&summary, rec.event_id);
  summary.append(",\"topic\":");
  AppendJsonString(&summary, rec.topic);
  summary.append(",\"seq\":").append(std::to_string(seq));
  summary.append(",\"reason\":");
  AppendJsonString(&summary, reason);
  summary.append(",\"attempts\":").append(std::to_string(rec.attempts));
  summary.append(",\"last_error\":");
  AppendJsonString(&summary, rec.last_error);
  summary.append(",\"created_at\":");
  AppendJsonString(&summary, Rfc3339Millis(rec.created_ms));
  summary.append(",\"dead_at\":");
  AppendJsonString(&summary, Rfc3339Millis(now));
  summary.append("}");
  ops_.push_back({key, "", true});
  for (int p = 0; p < rec.parts; ++p) ops_.push_back({PartKey(ep.cfg->name, seq, p), "", true});
  if (config_.dead_max > 0) {
    ops_.push_back({DeadKey(ep.cfg->name, seq), summary, false});
    ep.stored_dead += 1;
  }
  ep.busy_keys.insert(key);
  {
    std::lock_guard lock(stats_mu_);
    ep.stats.dead += 1;
  }
  host_->Log(ORCHARD_LOG_WARN, "event=webhook_dead endpoint=" + ep.cfg->name + " event_id=" + rec.event_id +
                                   " topic=" + rec.topic + " reason=" + reason +
                                   " attempts=" + std::to_string(rec.attempts) + " error=" + Quote(rec.last_error));
}

void Sender::Flush() {
  // Keep dead letters bounded: drop the oldest beyond dead_max.
  for (auto& ep : endpoints_) {
    if (ep->stored_dead <= config_.dead_max) continue;
    const int64_t excess = ep->stored_dead - config_.dead_max;
    int64_t removed = 0;
    std::unordered_set<std::string> new_dead;
    for (const auto& op : ops_)
      if (!op.remove && op.key.rfind("dead/", 0) == 0) new_dead.insert(op.key);
    (void)host_->Scan(DeadPrefix(ep->cfg->name), "", static_cast<size_t>(std::min<int64_t>(excess, 10000)),
                      [&](std::string_view k, std::string_view) {
                        ops_.push_back({std::string(k), "", true});
                        ++removed;
                        return true;
                      });
    // Dead letters not yet written count as the newest; if there are still
    // too many, the next flush trims again.
    ep->stored_dead -= removed;
  }
  if (ops_.empty()) return;
  size_t done = 0;
  while (done < ops_.size()) {
    const size_t n = std::min(kMaxOpsPerWrite, ops_.size() - done);
    std::vector<KvOp> chunk(ops_.begin() + static_cast<std::ptrdiff_t>(done),
                            ops_.begin() + static_cast<std::ptrdiff_t>(done + n));
    orchard_status st = host_->Write(chunk);
    if (st != ORCHARD_OK) {
      if (flush_failures_++ % 100 == 0)
        host_->Log(ORCHARD_LOG_ERROR, "event=webhook_kv_write_failed status=" + std::to_string(static_cast<int>(st)) +
                                          " pending=" + std::to_string(ops_.size() - done) +
                                          " detail=\"retried; records stay in the outbox\"");
      break;
    }
    done += n;
  }
  // Keys whose outcome is written are no longer busy.
  for (size_t i = 0; i < done; ++i) {
    const std::string& k = ops_[i].key;
    if (k.rfind("out/", 0) != 0) continue;
    for (auto& ep : endpoints_)
      if (k.compare(0, ep->prefix.size(), ep->prefix) == 0) {
        if (!std::any_of(ep->slots.begin(), ep->slots.end(), [&](const auto& t) { return t->busy && t->key == k; }))
          ep->busy_keys.erase(k);
        break;
      }
  }
  if (done > 0) flush_failures_ = 0;
  if (done == ops_.size())
    for (auto& ep : endpoints_) ep->pending_devices.clear();
  ops_.erase(ops_.begin(), ops_.begin() + static_cast<std::ptrdiff_t>(done));
}

int64_t Sender::Backoff(int attempts) {
  int64_t d = config_.backoff_min_ms;
  for (int i = 1; i < attempts && d < config_.backoff_max_ms; ++i) d *= 2;
  d = std::min(d, config_.backoff_max_ms);
  // Jitter: uniformly in [d/2, d].
  std::uniform_int_distribution<int64_t> dist(d / 2, d);
  return std::max<int64_t>(1, dist(rng_));
}

std::string Sender::StatusJson(size_t depth_limit, size_t dead_limit) {
  std::string out = "{\"endpoints\":[";
  bool first_ep = true;
  for (auto& ep : endpoints_) {
    if (!first_ep) out.push_back(',');
    first_ep = false;
    size_t depth = 0;
    std::string after;
    bool capped = false;
    while (true) {
      size_t page = 0;
      const size_t want = std::min<size_t>(10000, depth_limit - depth + 1);
      orchard_status st = host_->Scan(ep->prefix, after, want, [&](std::string_view k, std::string_view) {
        ++page;
        after.assign(k);
        return true;
      });
      if (st != ORCHARD_OK) break;
      depth += page;
      if (depth > depth_limit) {
        depth = depth_limit;
        capped = true;
        break;
      }
      if (page < want) break;
    }
    std::string dead = "[";
    size_t dead_n = 0;
    (void)host_->Scan(DeadPrefix(ep->cfg->name), "", std::max<size_t>(1, dead_limit),
                      [&](std::string_view, std::string_view v) {
                        if (dead_n >= dead_limit) return false;
                        JsonValue parsed;
                        std::string err;
                        if (!ParseJson(v, &parsed, &err)) return true;
                        if (dead_n++) dead.push_back(',');
                        AppendJson(&dead, parsed);
                        return true;
                      });
    dead.push_back(']');
    Endpoint::Stats s;
    {
      std::lock_guard lock(stats_mu_);
      s = ep->stats;
    }
    out.append("{\"name\":");
    AppendJsonString(&out, ep->cfg->name);
    out.append(",\"url\":");
    AppendJsonString(&out, ep->cfg->RedactedUrl());
    out.append(",\"signed\":").append(ep->cfg->secret.empty() ? "false" : "true");
    out.append(",\"topics\":[");
    for (size_t i = 0; i < ep->cfg->topics.size(); ++i) {
      if (i) out.push_back(',');
      AppendJsonString(&out, ep->cfg->topics[i]);
    }
    out.append("],\"depth\":").append(std::to_string(depth));
    out.append(",\"depth_capped\":").append(capped ? "true" : "false");
    out.append(",\"delivered\":").append(std::to_string(s.delivered));
    out.append(",\"failed_attempts\":").append(std::to_string(s.failed_attempts));
    out.append(",\"dead\":").append(std::to_string(s.dead));
    if (s.last_delivered_ms) {
      out.append(",\"last_delivered_at\":");
      AppendJsonString(&out, Rfc3339Millis(s.last_delivered_ms));
    }
    if (!s.last_error.empty()) {
      out.append(",\"last_error\":");
      AppendJsonString(&out, s.last_error);
      out.append(",\"last_failure_at\":");
      AppendJsonString(&out, Rfc3339Millis(s.last_failure_ms));
    }
    out.append(",\"dead_letters\":").append(dead);
    out.append("}");
  }
  out.append("]}");
  return out;
}

}  // namespace orchard_webhook
