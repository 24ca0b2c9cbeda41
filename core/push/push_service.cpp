#include "push/push_service.h"

#include <algorithm>
#include <random>

#include "log/log.h"
#include "plist/plist.h"
#include "util/encoding.h"

namespace orchard::push {
namespace {
constexpr const char* kLog = "push";
constexpr const char* kFlagPrefix = "push_topic_flag/";
constexpr const char* kWarnedPrefix = "push_cert_warned/";

bool Retryable(const ApnsResponse& r) {
  if (r.status == 0) return r.error.rfind("invalid request", 0) != 0;  // malformed: never retried
  return r.status == 429 || r.status == 500 || r.status == 503;
}

// Identifies which token a stored "token invalid" mark is about.
std::string TokenFingerprint(const std::string& token) { return HexEncode(token.substr(0, 8)); }

std::string Short(const std::string& token_hex) { return token_hex.substr(0, 8) + "…"; }

int64_t Jittered(int64_t base_ms, int attempt) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const int64_t d = base_ms << std::min(attempt, 16);
  std::uniform_int_distribution<int64_t> dist(d / 2, d + d / 2);
  return dist(rng);
}
}  // namespace

struct PushService::Pending {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Outcome> outcomes;
  size_t remaining = 0;
  void Done(size_t i, Outcome o) {
    std::lock_guard lock(mu);
    if (outcomes[i].error == "pending") {
      outcomes[i] = std::move(o);
      if (--remaining == 0) cv.notify_all();
    }
  }
};

Result<ApnsEndpoint> ParseEndpoint(const std::string& text) {
  ApnsEndpoint e;
  if (text == "production") return e;
  if (text == "sandbox") {
    e.host = "api.sandbox.push.apple.com";
    return e;
  }
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return Status::InvalidArgument("push endpoint must be production, sandbox or HOST:PORT");
  e.host = text.substr(0, colon);
  if (e.host.size() > 2 && e.host.front() == '[' && e.host.back() == ']')
    e.host = e.host.substr(1, e.host.size() - 2);
  int port = std::atoi(text.c_str() + colon + 1);
  if (port <= 0 || port > 65535) return Status::InvalidArgument("push endpoint port must be 1-65535");
  e.port = static_cast<uint16_t>(port);
  return e;
}

PushService::PushService(const PushServiceOptions& options, store::Store* store,
                         events::EventLog* events, PushCertStore* certs, ClientFactory factory)
    : options_(options), store_(store), events_(events), certs_(certs), factory_(std::move(factory)) {
  if (!factory_) factory_ = [](const ApnsClientOptions& o) { return ApnsClient::Create(o); };
  // Topics flagged by a 403 stay flagged across restarts until a new certificate arrives.
  auto it = store_->Scan(store::Cf::kMeta, kFlagPrefix, store::PrefixEnd(kFlagPrefix));
  for (; it->Valid(); it->Next())
    flagged_[std::string(it->key().substr(std::string_view(kFlagPrefix).size()))] =
        std::string(it->value());
  worker_ = std::thread([this] { Worker(); });
}

PushService::~PushService() {
  {
    std::lock_guard lock(work_mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  std::map<std::string, std::shared_ptr<ApnsClient>> clients;
  {
    std::lock_guard lock(clients_mu_);
    clients.swap(clients_);
  }
  clients.clear();  // fails whatever is still in flight; callbacks may take clients_mu_
  Flush();
}

Result<std::shared_ptr<ApnsClient>> PushService::ClientFor(const std::string& topic) {
  std::lock_guard lock(clients_mu_);
  if (auto f = flagged_.find(topic); f != flagged_.end())
    return Status::Unavailable("topic " + topic + " is disabled after APNs refused its certificate (" +
                               f->second + "); upload a new push certificate");
  if (auto it = clients_.find(topic); it != clients_.end()) return it->second;
  auto cert = certs_->Get(topic);
  if (!cert.ok()) return cert.status();
  if (!cert->has_value()) return Status::Unavailable("no push certificate for topic " + topic);
  ApnsClientOptions o;
  o.endpoint = options_.endpoint;
  o.cert_pem = (*cert)->cert_pem;
  o.key_pem = (*cert)->key_pem;
  o.connections = options_.connections;
  auto client = factory_(o);
  if (!client.ok()) return client.status();
  std::shared_ptr<ApnsClient> shared(std::move(client.value()));
  clients_[topic] = shared;
  log::Info(kLog, "event=apns_client_created topic={} host={} port={}", topic,
            options_.endpoint.host, options_.endpoint.port);
  return shared;
}

void PushService::CertificateUpdated(const std::string& topic) {
  std::shared_ptr<ApnsClient> old;  // its unanswered requests fail and are retried on the new one
  {
    std::lock_guard lock(clients_mu_);
    if (auto it = clients_.find(topic); it != clients_.end()) {
      old = std::move(it->second);
      clients_.erase(it);
    }
    flagged_.erase(topic);
  }
  store::Batch b;
  b.Delete(store::Cf::kMeta, kFlagPrefix + topic);
  Status st = store_->Write(b);
  if (!st.ok()) log::Error(kLog, "event=flag_clear_failed topic={} error=\"{}\"", topic, st.message());
}

std::vector<Outcome> PushService::Push(const std::vector<Target>& targets) {
  auto pending = std::make_shared<Pending>();
  pending->outcomes.resize(targets.size());
  for (size_t i = 0; i < targets.size(); ++i)
    pending->outcomes[i] = {targets[i].enrollment_id, false, "", "pending"};
  pending->remaining = targets.size();
  for (size_t i = 0; i < targets.size(); ++i) Send(targets[i], 0, pending, i);
  std::unique_lock lock(pending->mu);
  pending->cv.wait_for(lock, std::chrono::milliseconds(options_.wait_ms),
                       [&] { return pending->remaining == 0; });
  std::vector<Outcome> out = pending->outcomes;
  lock.unlock();
  for (auto& o : out)
    if (o.error == "pending") o.error = "no answer from APNs yet (still trying)";
  Flush();  // the caller (the admin API) reads the recorded state next
  return out;
}

void PushService::PushAsync(const std::vector<Target>& targets) {
  for (const auto& t : targets) Send(t, 0, nullptr, 0);
}

void PushService::Send(const Target& t, int attempt, std::shared_ptr<Pending> pending, size_t index) {
  auto finish = [&](bool ok, std::string apns_id, std::string error) {
    if (pending) pending->Done(index, {t.enrollment_id, ok, std::move(apns_id), std::move(error)});
  };
  if (t.token.empty() || t.push_magic.empty()) {
    finish(false, "", "enrollment has no push token");
    return;
  }
  const int64_t now = NowMillis();
  if (attempt == 0) {
    auto state = State(t.enrollment_id);
    if (state.ok() && state->has_value() && (*state)->token_invalid_ms &&
        (*state)->token_fingerprint == TokenFingerprint(t.token)) {
      ++n_skipped_invalid_;
      finish(false, "", "push token invalid (" + (*state)->token_invalid_reason +
                            "); waiting for a new TokenUpdate");
      return;
    }
    if (options_.coalesce_ms > 0) {
      std::lock_guard lock(coalesce_mu_);
      auto it = recent_.find(t.enrollment_id);
      // A recent delivered push still pending (the device has not come since)
      // covers this one; once the device has come, a new push is needed.
      if (it != recent_.end() && now - it->second.first < options_.coalesce_ms &&
          t.last_seen_ms < it->second.first) {
        ++n_coalesced_;
        finish(true, it->second.second, "");
        return;
      }
    }
  }
  auto client = ClientFor(t.topic);
  if (!client.ok()) {
    ++n_failed_;
    finish(false, "", client.status().message());
    return;
  }
  ApnsRequest req;
  req.device_token_hex = HexEncode(t.token);
  req.topic = t.topic;
  req.push_magic = t.push_magic;
  if (options_.expiration_seconds > 0) req.expiration_unix = now / 1000 + options_.expiration_seconds;
  req.apns_id = NewUuid();
  (*client)->Send(std::move(req), [this, t, attempt, pending, index](const ApnsResponse& r) {
    Handle(t, attempt, r, pending, index);
  });
}

void PushService::Handle(const Target& t, int attempt, const ApnsResponse& r,
                         std::shared_ptr<Pending> pending, size_t index) {
  const int64_t now = NowMillis();
  bool stopping;
  {
    std::lock_guard lock(work_mu_);
    stopping = stopping_;
  }
  if (r.status == 0 && r.error == "client shut down" && stopping) {
    // orchardd is stopping: not an outcome worth recording or retrying.
    if (pending) pending->Done(index, {t.enrollment_id, false, "", r.error});
    return;
  }
  store::PushState s;  // a success fully determines the state; a failure builds on the last one
  if (r.status != 200) {
    auto existing = State(t.enrollment_id);
    if (existing.ok() && existing->has_value()) s = **existing;
  }
  s.last_push_ms = now;
  s.last_apns_id = r.apns_id;
  s.last_status = r.status;
  s.last_reason = r.status == 0 ? r.error : r.reason;
  std::string token_short = Short(HexEncode(t.token));
  events::Event ev{.time_ms = now, .enrollment_id = t.enrollment_id};
  bool emit = false;
  Outcome outcome{t.enrollment_id, false, r.apns_id, ""};

  if (r.status == 200) {
    ++n_ok_;
    s.last_success_ms = now;
    s.failures = 0;
    outcome.ok = true;
    if (options_.coalesce_ms > 0) {
      // Only a delivered push lets a duplicate within the window coalesce.
      std::lock_guard lock(coalesce_mu_);
      if (recent_.size() > 200000) recent_.clear();
      recent_[t.enrollment_id] = {now, r.apns_id};
    }
  } else {
    s.failures += 1;
    plist::Value payload;
    payload.Set("status", plist::Value::Integer(r.status));
    payload.Set("reason", plist::Value::String(s.last_reason));
    payload.Set("topic", plist::Value::String(t.topic));
    payload.Set("apns_id", plist::Value::String(r.apns_id));
    if (r.status == 410 ||
        (r.status == 400 && (r.reason == "BadDeviceToken" || r.reason == "DeviceTokenNotForTopic"))) {
      s.token_invalid_ms = r.timestamp_ms ? r.timestamp_ms : now;
      s.token_invalid_reason = r.reason;
      s.token_fingerprint = TokenFingerprint(t.token);
      if (r.timestamp_ms) payload.Set("timestamp_ms", plist::Value::Integer(r.timestamp_ms));
      ev.type = r.status == 410 ? event_type::kUnregistered : event_type::kRejected;
      (r.status == 410 ? n_unregistered_ : n_rejected_)++;
      emit = true;
      log::Warn(kLog, "event=token_invalid enrollment_id={} token={} status={} reason={}",
                t.enrollment_id, token_short, r.status, r.reason);
    } else if (r.status == 403) {
      ++n_cert_error_;
      {
        std::lock_guard lock(clients_mu_);
        flagged_[t.topic] = r.reason;
      }
      store::Batch b;
      b.Put(store::Cf::kMeta, kFlagPrefix + t.topic, r.reason);
      (void)store_->Write(b);
      ev.type = event_type::kCertificateError;
      emit = true;
      log::Error(kLog, "event=push_certificate_refused topic={} reason={} action=pushes_stopped",
                 t.topic, r.reason);
    } else if (Retryable(r) && attempt < options_.retry_max) {
      ++n_retried_;
      const int64_t delay = Jittered(options_.retry_base_ms, attempt);
      {
        std::lock_guard lock(work_mu_);
        retries_.push_back({now + delay, t, attempt + 1});
      }
      work_cv_.notify_all();
      log::Info(kLog, "event=push_retry enrollment_id={} status={} reason=\"{}\" attempt={} delay_ms={}",
                t.enrollment_id, r.status, s.last_reason, attempt + 1, delay);
      outcome.error = "retrying after " + std::to_string(r.status) + " " + s.last_reason;
    } else if (r.status == 400 || r.status == 413 || r.status == 405 || r.status == 404) {
      ++n_rejected_;
      ev.type = event_type::kRejected;
      emit = true;
    } else {
      ++n_failed_;
      log::Warn(kLog, "event=push_failed enrollment_id={} status={} reason=\"{}\" attempts={}",
                t.enrollment_id, r.status, s.last_reason, attempt + 1);
    }
    if (outcome.error.empty())
      outcome.error = r.status ? std::to_string(r.status) + " " + r.reason : r.error;
    if (emit) ev.payload_json = plist::ToJson(payload);
  }
  Record(t.enrollment_id, std::move(s), emit ? &ev : nullptr);
  if (pending) pending->Done(index, std::move(outcome));
}

void PushService::Record(const std::string& id, store::PushState state, events::Event* event) {
  {
    std::lock_guard lock(work_mu_);
    writes_.insert_or_assign(id, std::move(state));
    if (event) events_out_.push_back(std::move(*event));
  }
  work_cv_.notify_all();
}

Result<std::optional<store::PushState>> PushService::State(const std::string& id) {
  {
    // A state not yet flushed is the freshest.
    std::lock_guard lock(work_mu_);
    if (auto it = writes_.find(id); it != writes_.end())
      return std::optional<store::PushState>(it->second);
  }
  auto v = store_->Get(store::Cf::kPushState, id);
  if (!v.ok()) return v.status();
  if (!v->has_value()) return std::optional<store::PushState>();
  auto s = store::PushState::Decode(**v);
  if (!s.ok()) return s.status();
  return std::optional<store::PushState>(std::move(s.value()));
}

bool PushService::WaitIdle(std::chrono::milliseconds timeout) {
  std::unique_lock lock(work_mu_);
  work_cv_.notify_all();
  return idle_cv_.wait_for(lock, timeout, [&] {
    return !worker_busy_ && retries_.empty() && writes_.empty() && events_out_.empty();
  });
}

void PushService::Flush() {
  // One flusher at a time, so states of one enrollment land in order.
  std::lock_guard flush_lock(flush_mu_);
  std::unordered_map<std::string, store::PushState> writes;
  std::vector<events::Event> evs;
  {
    std::lock_guard lock(work_mu_);
    writes.swap(writes_);
    evs.swap(events_out_);
  }
  if (writes.empty() && evs.empty()) return;
  events::Transaction txn(events_);
  for (auto& [id, s] : writes) txn.batch().Put(store::Cf::kPushState, id, s.Encode());
  for (auto& e : evs) txn.Emit(std::move(e));
  Status st = events_->Commit(txn);
  if (!st.ok()) log::Error(kLog, "event=push_state_write_failed error=\"{}\"", st.message());
}

void PushService::Worker() {
  std::unique_lock lock(work_mu_);
  while (!stopping_) {
    int64_t now = NowMillis();
    std::vector<Retry> due;
    int64_t next = now + 1000;
    for (auto it = retries_.begin(); it != retries_.end();) {
      if (it->due_ms <= now) {
        due.push_back(std::move(*it));
        it = retries_.erase(it);
      } else {
        next = std::min(next, it->due_ms);
        ++it;
      }
    }
    const bool have_writes = !writes_.empty() || !events_out_.empty();
    worker_busy_ = true;
    lock.unlock();
    if (have_writes) Flush();
    for (auto& r : due) Send(r.target, r.attempt, nullptr, 0);
    lock.lock();
    worker_busy_ = false;
    if (retries_.empty() && writes_.empty() && events_out_.empty()) idle_cv_.notify_all();
    if (stopping_) break;
    if (writes_.empty() && events_out_.empty()) {
      // Batch state writes: wake at most every 5 ms for them, or for the next retry.
      work_cv_.wait_for(lock, std::chrono::milliseconds(std::max<int64_t>(1, next - NowMillis())),
                        [&] { return stopping_ || !writes_.empty() || !events_out_.empty() ||
                                     (!retries_.empty() && retries_.front().due_ms <= NowMillis()); });
      if (!writes_.empty() && !stopping_)
        work_cv_.wait_for(lock, std::chrono::milliseconds(5), [&] { return stopping_; });
    }
  }
}

Status PushService::CheckExpiry(int64_t now_ms) {
  auto certs = certs_->List();
  if (!certs.ok()) return certs.status();
  events::Transaction txn(events_);
  for (const auto& c : *certs) {
    const int64_t days_left = (c.not_after_unix * 1000 - now_ms) / 86400000;
    for (int threshold : options_.expiry_warn_days) {
      if (days_left > threshold) continue;
      std::string key = std::string(kWarnedPrefix) + c.topic + "/" + std::to_string(c.not_after_unix) +
                        "/" + std::to_string(threshold);
      auto seen = store_->Get(store::Cf::kMeta, key);
      if (!seen.ok()) return seen.status();
      if (seen->has_value()) continue;
      txn.batch().Put(store::Cf::kMeta, key, "1");
      plist::Value payload;
      payload.Set("topic", plist::Value::String(c.topic));
      payload.Set("days_left", plist::Value::Integer(days_left));
      payload.Set("threshold_days", plist::Value::Integer(threshold));
      payload.Set("not_after", plist::Value::String(FormatRfc3339(c.not_after_unix * 1000)));
      txn.Emit({.type = event_type::kCertificateExpiring, .time_ms = now_ms,
                .payload_json = plist::ToJson(payload)});
      log::Warn(kLog, "event=push_certificate_expiring topic={} days_left={} threshold={} not_after={}",
                c.topic, days_left, threshold, FormatRfc3339(c.not_after_unix * 1000));
    }
  }
  return events_->Commit(txn);
}

void PushService::RenderMetrics(std::string* out) {
  *out += "# HELP orchard_push_total Push attempts by outcome.\n# TYPE orchard_push_total counter\n";
  for (auto [name, v] : {std::pair{"ok", n_ok_.load()}, {"unregistered", n_unregistered_.load()},
                         {"rejected", n_rejected_.load()}, {"certificate_error", n_cert_error_.load()},
                         {"retried", n_retried_.load()}, {"failed", n_failed_.load()},
                         {"coalesced", n_coalesced_.load()},
                         {"skipped_invalid_token", n_skipped_invalid_.load()}})
    *out += std::string("orchard_push_total{outcome=\"") + name + "\"} " + std::to_string(v) + "\n";
  auto certs = certs_->List();
  *out += "# HELP orchard_push_certificate_days_left Days until each push certificate expires.\n"
          "# TYPE orchard_push_certificate_days_left gauge\n";
  if (certs.ok()) {
    const int64_t now = NowMillis();
    for (const auto& c : *certs)
      *out += "orchard_push_certificate_days_left{topic=\"" + c.topic + "\"} " +
              std::to_string((c.not_after_unix * 1000 - now) / 86400000) + "\n";
  }
  std::lock_guard lock(clients_mu_);
  *out += "# HELP orchard_push_topic_disabled 1 while APNs refuses a topic's certificate.\n"
          "# TYPE orchard_push_topic_disabled gauge\n";
  for (const auto& [topic, reason] : flagged_)
    *out += "orchard_push_topic_disabled{topic=\"" + topic + "\"} 1\n";
  *out += "# HELP orchard_apns_connects_total HTTP/2 connections opened to APNs, per topic.\n"
          "# TYPE orchard_apns_connects_total counter\n"
          "# HELP orchard_apns_goaways_total GOAWAY frames received from APNs, per topic.\n"
          "# TYPE orchard_apns_goaways_total counter\n"
          "# HELP orchard_apns_in_flight Push requests awaiting an APNs answer, per topic.\n"
          "# TYPE orchard_apns_in_flight gauge\n";
  for (const auto& [topic, client] : clients_) {
    auto st = client->stats();
    *out += "orchard_apns_connects_total{topic=\"" + topic + "\"} " + std::to_string(st.connects) + "\n";
    *out += "orchard_apns_goaways_total{topic=\"" + topic + "\"} " + std::to_string(st.goaways) + "\n";
    *out += "orchard_apns_in_flight{topic=\"" + topic + "\"} " + std::to_string(st.in_flight) + "\n";
  }
}

}  // namespace orchard::push
