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

// The client's answer never came (watchdog): well past its own request timeout.
const int64_t kWatchdogMs = ApnsClientOptions{}.request_timeout_ms + 30 * 1000;
// The worker writes recorded outcomes at most this often (one commit for many).
constexpr int64_t kFlushEveryMs = 5;
// How often the worker looks for sends the client never answered.
constexpr int64_t kSweepEveryMs = 5000;
// Fewer answers than this waiting: the worker lets them gather for 1 ms.
constexpr size_t kBatch = 256;

// Identifies which token a stored "token invalid" mark is about.
std::string TokenFingerprint(const std::string& token) { return HexEncode(token.substr(0, 8)); }

std::string Short(const std::string& token_hex) { return token_hex.substr(0, 8) + "…"; }

int64_t Jittered(int64_t base_ms, int attempt) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const int64_t d = base_ms << std::min(attempt, 16);
  std::uniform_int_distribution<int64_t> dist(d / 2, d + d / 2);
  return dist(rng);
}

Outcome Refused(const Target& t, PushRefusal why, std::string error) {
  Outcome o;
  o.enrollment_id = t.enrollment_id;
  o.refusal = why;
  o.error = std::move(error);
  return o;
}

Outcome Accepted(const Target& t, std::string apns_id, bool coalesced) {
  Outcome o;
  o.enrollment_id = t.enrollment_id;
  o.ok = true;
  o.apns_id = std::move(apns_id);
  o.coalesced = coalesced;
  return o;
}
}  // namespace

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
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  std::map<std::string, std::shared_ptr<ApnsClient>> clients;
  {
    std::lock_guard lock(clients_mu_);
    clients.swap(clients_);
  }
  clients.clear();  // fails whatever is still in flight; callbacks may take mu_
  // Answers that came after the worker's last turn are still recorded (no retries now).
  std::vector<Completion> done;
  {
    std::lock_guard lock(mu_);
    done.swap(completions_);
  }
  try {
    HandleCompletions(&done);
    Flush();
  } catch (const std::exception& e) {
    log::Error(kLog, "event=push_shutdown_error error=\"{}\"", e.what());
  } catch (...) {
    log::Error(kLog, "event=push_shutdown_error error=unknown");
  }
}

PushService::ClientOrRefusal PushService::ClientFor(const std::string& topic) {
  ClientOrRefusal out;
  std::lock_guard lock(clients_mu_);
  if (auto f = flagged_.find(topic); f != flagged_.end()) {
    out.refusal = PushRefusal::kTopicDisabled;
    out.error = "topic " + topic + " is disabled after APNs refused its certificate (" + f->second +
                "); upload a new push certificate";
    return out;
  }
  if (auto it = clients_.find(topic); it != clients_.end()) {
    out.client = it->second;
    return out;
  }
  auto cert = certs_->Get(topic);
  if (!cert.ok()) {
    out.refusal = PushRefusal::kNoCertificate;  // stored, but its key cannot be opened
    out.error = cert.status().message();
    return out;
  }
  if (!cert->has_value()) {
    out.refusal = PushRefusal::kNoCertificate;
    out.error = "no push certificate for topic " + topic;
    return out;
  }
  ApnsClientOptions o;
  o.endpoint = options_.endpoint;
  o.cert_pem = (*cert)->cert_pem;
  o.key_pem = (*cert)->key_pem;
  o.connections = options_.connections;
  Result<std::unique_ptr<ApnsClient>> client = Status::Internal("no client");
  try {
    client = factory_(o);
  } catch (const std::exception& e) {
    client = Status::Internal(std::string("apns: client factory threw: ") + e.what());
  } catch (...) {
    client = Status::Internal("apns: client factory threw");
  }
  if (!client.ok()) {
    out.refusal = PushRefusal::kUnavailable;
    out.error = client.status().message();
    return out;
  }
  out.client = std::shared_ptr<ApnsClient>(std::move(client.value()));
  clients_[topic] = out.client;
  log::Info(kLog, "event=apns_client_created topic={} host={} port={}", topic,
            options_.endpoint.host, options_.endpoint.port);
  return out;
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

bool PushService::Pending(const std::string& token) {
  std::lock_guard lock(mu_);
  return slots_.count(token) != 0;
}

std::optional<std::string> PushService::JoinLocked(const Target& t, int64_t now) {
  // A push already waiting for APNs, or just delivered and not answered by the
  // device since, covers this one.
  if (auto it = slots_.find(t.token); it != slots_.end()) {
    if (it->second.target.push_magic != t.push_magic)
      it->second.target.push_magic = t.push_magic;  // retries carry the latest
    return it->second.apns_id;
  }
  if (options_.coalesce_ms > 0) {
    if (auto it = recent_.find(t.token); it != recent_.end() &&
                                           now - it->second.first < options_.coalesce_ms &&
                                           t.last_seen_ms < it->second.first)
      return it->second.second;
  }
  return std::nullopt;
}

std::vector<Outcome> PushService::Push(const std::vector<Target>& targets) {
  // Three passes, so that a batch takes this service's lock twice, not per
  // target: join pending pushes; check tokens and clients (store reads,
  // unlocked); then create the new pushes.
  std::vector<Outcome> out(targets.size());
  std::vector<size_t> todo;
  const int64_t now = NowMillis();
  auto internal = [&](size_t i, const char* what) {
    log::Error(kLog, "event=push_accept_error enrollment_id={} error=\"{}\"", targets[i].enrollment_id, what);
    out[i] = Refused(targets[i], PushRefusal::kUnavailable, std::string("internal error: ") + what);
  };
  {
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < targets.size(); ++i) {
      const Target& t = targets[i];
      try {
        if (t.token.empty() || t.push_magic.empty()) {
          out[i] = Refused(t, PushRefusal::kNoToken, "enrollment has no push token");
        } else if (auto id = JoinLocked(t, now)) {
          ++n_coalesced_;
          out[i] = Accepted(t, std::move(*id), true);
        } else {
          todo.push_back(i);
        }
      } catch (const std::exception& e) {
        internal(i, e.what());
      }
    }
  }
  std::vector<std::shared_ptr<ApnsClient>> clients(targets.size());
  std::vector<size_t> ready;
  ready.reserve(todo.size());
  ClientOrRefusal last;  // targets of one batch usually share a topic
  const std::string* last_topic = nullptr;
  for (size_t i : todo) {
    const Target& t = targets[i];
    try {
      auto state = State(t.enrollment_id);
      if (state.ok() && state->has_value() && (*state)->token_invalid_ms &&
          (*state)->token_fingerprint == TokenFingerprint(t.token)) {
        ++n_skipped_invalid_;
        out[i] = Refused(t, PushRefusal::kTokenInvalid,
                         "push token invalid (" + (*state)->token_invalid_reason +
                             "); waiting for a new TokenUpdate");
        continue;
      }
      if (!last_topic || *last_topic != t.topic) {
        last = ClientFor(t.topic);
        last_topic = &t.topic;
      }
      if (!last.client) {
        ++n_failed_;
        out[i] = Refused(t, last.refusal, last.error);
        continue;
      }
      clients[i] = last.client;
      ready.push_back(i);
    } catch (const std::exception& e) {
      internal(i, e.what());
    }
  }
  std::vector<SendJob> sends;
  sends.reserve(ready.size());
  {
    std::lock_guard lock(mu_);
    for (size_t i : ready) {
      const Target& t = targets[i];
      try {
        if (auto id = JoinLocked(t, now)) {  // another caller got there first
          ++n_coalesced_;
          out[i] = Accepted(t, std::move(*id), true);
          continue;
        }
        auto [it, inserted] = slots_.try_emplace(t.token);
        Slot& slot = it->second;
        slot.target = t;
        slot.apns_id = NewUuid();
        slot.gen = ++next_gen_;
        slot.sent_ms = now;
        sends.push_back({std::move(clients[i]), t.token, slot.gen, MakeRequest(t, slot.apns_id)});
        out[i] = Accepted(t, slot.apns_id, false);
      } catch (const std::exception& e) {
        internal(i, e.what());
      }
    }
  }
  for (auto& job : sends) Dispatch(std::move(job));
  return out;
}

ApnsRequest PushService::MakeRequest(const Target& t, const std::string& apns_id) const {
  ApnsRequest req;
  req.device_token_hex = HexEncode(t.token);
  req.topic = t.topic;
  req.push_magic = t.push_magic;
  if (options_.expiration_seconds > 0)
    req.expiration_unix = NowMillis() / 1000 + options_.expiration_seconds;
  req.apns_id = apns_id;  // the same on every retry: one logical push
  return req;
}

void PushService::Dispatch(SendJob job) {
  std::string token = job.token;
  const uint64_t gen = job.gen;
  try {
    // The callback only hands the answer over (the I/O thread never waits on
    // the store); the worker picks answers up in batches.
    job.client->Send(std::move(job.request), [this, token = std::move(job.token),
                                              gen](const ApnsResponse& r) mutable {
      Completion c{std::move(token), gen, {}};
      c.response.status = r.status;
      c.response.reason = r.reason;
      c.response.timestamp_ms = r.timestamp_ms;
      c.response.error = r.error;
      c.response.failure = r.failure;  // apns_id: the slot's
      bool first;
      {
        std::lock_guard lock(mu_);
        first = completions_.empty();
        completions_.push_back(std::move(c));
      }
      if (first) work_cv_.notify_all();
    });
  } catch (const std::exception& e) {
    ApnsResponse r;
    r.failure = ApnsFailure::kInternal;
    r.error = std::string("send failed: ") + e.what();
    {
      std::lock_guard lock(mu_);
      completions_.push_back({std::move(token), gen, std::move(r)});
    }
    work_cv_.notify_all();
  }
}

PushService::Verdict PushService::Classify(const ApnsResponse& r, bool stopping) {
  if (r.status == 0) {
    switch (r.failure) {
      case ApnsFailure::kShutdown:
        // orchardd stopping; otherwise a replaced client (new certificate): try the new one.
        return stopping ? Verdict::kStopped : Verdict::kRetry;
      case ApnsFailure::kTimeout:
      case ApnsFailure::kGaveUp:
      case ApnsFailure::kQueueFull:
      case ApnsFailure::kInternal:
        return Verdict::kRetry;
      case ApnsFailure::kInvalidRequest:
      case ApnsFailure::kNone:
        return Verdict::kFailed;
    }
    return Verdict::kFailed;
  }
  switch (r.status) {
    case 200: return Verdict::kDelivered;
    case 410: return Verdict::kTokenGone;
    case 403: return Verdict::kCertificate;
    case 429:
    case 500:
    case 503: return Verdict::kRetry;
    case 400:
      // APNs' reason codes (protocol values, not messages) that condemn the token.
      if (r.reason == "BadDeviceToken" || r.reason == "DeviceTokenNotForTopic")
        return Verdict::kTokenRejected;
      return Verdict::kRejected;
    case 404:
    case 405:
    case 413: return Verdict::kRejected;
    default: return Verdict::kFailed;
  }
}

void PushService::TakeAnswerLocked(Completion& c, int64_t now, std::vector<Answered>* out) {
  auto it = slots_.find(c.token);
  if (it == slots_.end() || it->second.gen != c.gen) return;  // an answer the watchdog gave up on
  Slot& s = it->second;
  Answered a;
  a.verdict = Classify(c.response, stopping_);
  a.attempt = s.attempt;
  a.response = std::move(c.response);
  a.response.apns_id = s.apns_id;
  if (a.verdict == Verdict::kRetry && s.attempt < options_.retry_max && !stopping_) {
    a.retry_delay_ms = Jittered(options_.retry_base_ms, s.attempt);
    a.target = s.target;
    s.attempt++;
    s.retry_wait = true;
    timers_.emplace(now + a.retry_delay_ms, c.token);  // O(log n)
  } else {
    if (a.verdict == Verdict::kDelivered) RememberDelivered(c.token, s.apns_id, now);
    a.target = std::move(s.target);
    slots_.erase(it);
  }
  if (a.verdict != Verdict::kStopped) out->push_back(std::move(a));  // stopping: nothing to record
}

void PushService::RememberDelivered(const std::string& token, const std::string& apns_id, int64_t now) {
  if (options_.coalesce_ms <= 0) return;
  while (!recent_order_.empty() && now - recent_order_.front().first >= options_.coalesce_ms) {
    auto it = recent_.find(recent_order_.front().second);
    if (it != recent_.end() && it->second.first == recent_order_.front().first) recent_.erase(it);
    recent_order_.pop_front();
  }
  recent_[token] = {now, apns_id};
  recent_order_.emplace_back(now, token);
}

void PushService::Record(Answered& a, std::unordered_map<std::string, store::PushState>* states,
                         std::vector<events::Event>* evs) {
  const Target& t = a.target;
  const ApnsResponse& r = a.response;
  const Verdict v = a.verdict;
  const int64_t now = NowMillis();
  store::PushState s;  // a success fully determines the state; a failure builds on the last one
  if (v != Verdict::kDelivered) {
    if (auto it = states->find(t.enrollment_id); it != states->end()) {
      s = it->second;
    } else {
      auto existing = State(t.enrollment_id);
      if (existing.ok() && existing->has_value()) s = **existing;
    }
  }
  s.last_push_ms = now;
  s.last_apns_id = r.apns_id;
  s.last_status = r.status;
  s.last_reason = r.status == 0 ? r.error : r.reason;
  if (v == Verdict::kDelivered) {
    ++n_ok_;
    s.last_success_ms = now;
    s.failures = 0;
    states->insert_or_assign(t.enrollment_id, std::move(s));
    return;
  }
  events::Event ev{.time_ms = now, .enrollment_id = t.enrollment_id};
  bool emit = false;
  s.failures += 1;
  plist::Value payload;
  payload.Set("status", plist::Value::Integer(r.status));
  payload.Set("reason", plist::Value::String(s.last_reason));
  payload.Set("topic", plist::Value::String(t.topic));
  payload.Set("apns_id", plist::Value::String(r.apns_id));
  switch (v) {
    case Verdict::kTokenGone:
    case Verdict::kTokenRejected:
      s.token_invalid_ms = r.timestamp_ms ? r.timestamp_ms : now;
      s.token_invalid_reason = r.reason;
      s.token_fingerprint = TokenFingerprint(t.token);
      if (r.timestamp_ms) payload.Set("timestamp_ms", plist::Value::Integer(r.timestamp_ms));
      ev.type = v == Verdict::kTokenGone ? event_type::kUnregistered : event_type::kRejected;
      (v == Verdict::kTokenGone ? n_unregistered_ : n_rejected_)++;
      emit = true;
      log::Warn(kLog, "event=token_invalid enrollment_id={} token={} status={} reason={}",
                t.enrollment_id, Short(HexEncode(t.token)), r.status, r.reason);
      break;
    case Verdict::kCertificate: {
      ++n_cert_error_;
      {
        std::lock_guard lock(clients_mu_);
        flagged_[t.topic] = r.reason;
      }
      store::Batch b;
      b.Put(store::Cf::kMeta, kFlagPrefix + t.topic, r.reason);
      Status st = store_->Write(b);
      if (!st.ok())
        log::Error(kLog, "event=flag_write_failed topic={} error=\"{}\"", t.topic, st.message());
      ev.type = event_type::kCertificateError;
      emit = true;
      log::Error(kLog, "event=push_certificate_refused topic={} reason={} action=pushes_stopped",
                 t.topic, r.reason);
      break;
    }
    case Verdict::kRejected:
      ++n_rejected_;
      ev.type = event_type::kRejected;
      emit = true;
      break;
    case Verdict::kRetry:
      if (a.retry_delay_ms > 0) {
        ++n_retried_;
        log::Info(kLog,
                  "event=push_retry enrollment_id={} status={} reason=\"{}\" attempt={} delay_ms={}",
                  t.enrollment_id, r.status, s.last_reason, a.attempt + 1, a.retry_delay_ms);
        break;
      }
      [[fallthrough]];  // retries exhausted (or stopping)
    default:
      ++n_failed_;
      log::Warn(kLog, "event=push_failed enrollment_id={} status={} reason=\"{}\" attempts={}",
                t.enrollment_id, r.status, s.last_reason, a.attempt + 1);
      break;
  }
  states->insert_or_assign(t.enrollment_id, std::move(s));
  if (emit) {
    ev.payload_json = plist::ToJson(payload);
    evs->push_back(std::move(ev));
  }
}

void PushService::Retry(const std::string& token) {
  Target target;
  std::string apns_id;
  uint64_t gen;
  {
    std::lock_guard lock(mu_);
    auto it = slots_.find(token);
    if (it == slots_.end() || !it->second.retry_wait) return;
    it->second.retry_wait = false;
    target = it->second.target;
    apns_id = it->second.apns_id;
    gen = it->second.gen = ++next_gen_;
    it->second.sent_ms = NowMillis();
  }
  ClientOrRefusal client = ClientFor(target.topic);
  if (!client.client) {
    // Cannot be sent any more (topic disabled, certificate gone): give up.
    {
      std::lock_guard lock(mu_);
      auto it = slots_.find(token);
      if (it == slots_.end() || it->second.gen != gen) return;
      slots_.erase(it);
    }
    ++n_failed_;
    log::Warn(kLog, "event=push_failed enrollment_id={} reason=\"{}\" detail=\"retry not sent\"",
              target.enrollment_id, client.error);
    return;
  }
  Dispatch({std::move(client.client), token, gen, MakeRequest(target, apns_id)});
}

void PushService::HandleCompletions(std::vector<Completion>* done) {
  if (done->empty()) return;
  std::vector<Answered> answered;
  answered.reserve(done->size());
  {
    std::lock_guard lock(mu_);
    const int64_t now = NowMillis();
    for (auto& c : *done) {
      try {
        TakeAnswerLocked(c, now, &answered);
      } catch (const std::exception& e) {
        log::Error(kLog, "event=push_outcome_error error=\"{}\"", e.what());
      }
    }
  }
  done->clear();
  std::unordered_map<std::string, store::PushState> states;
  std::vector<events::Event> evs;
  for (auto& a : answered) {
    try {
      Record(a, &states, &evs);
    } catch (const std::exception& e) {
      log::Error(kLog, "event=push_outcome_error enrollment_id={} error=\"{}\"", a.target.enrollment_id,
                 e.what());
    }
  }
  std::lock_guard lock(mu_);
  for (auto& [id, s] : states) writes_.insert_or_assign(id, std::move(s));
  for (auto& e : evs) events_out_.push_back(std::move(e));
}

Result<std::optional<store::PushState>> PushService::State(const std::string& id) {
  {
    // A state not yet flushed is the freshest.
    std::lock_guard lock(mu_);
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

bool PushService::IdleLocked() const {
  return !worker_busy_ && slots_.empty() && completions_.empty() && writes_.empty() &&
         events_out_.empty();
}

bool PushService::WaitIdle(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  work_cv_.notify_all();
  return idle_cv_.wait_for(lock, timeout, [&] { return IdleLocked(); });
}

PushService::Counters PushService::counters() const {
  Counters c;
  c.ok = n_ok_.load();
  c.unregistered = n_unregistered_.load();
  c.rejected = n_rejected_.load();
  c.certificate_error = n_cert_error_.load();
  c.retried = n_retried_.load();
  c.failed = n_failed_.load();
  c.coalesced = n_coalesced_.load();
  c.skipped_invalid = n_skipped_invalid_.load();
  return c;
}

void PushService::Flush() {
  // One flusher at a time, so states of one enrollment land in order.
  std::lock_guard flush_lock(flush_mu_);
  std::unordered_map<std::string, store::PushState> writes;
  std::vector<events::Event> evs;
  {
    std::lock_guard lock(mu_);
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
  std::unique_lock lock(mu_);
  while (!stopping_) {
    // Every exception is caught here, at the top of each turn: logged, and the
    // worker goes on (after a pause, never a tight loop).
    try {
      WorkerTurn(lock);
    } catch (const std::exception& e) {
      if (!lock.owns_lock()) lock.lock();
      worker_busy_ = false;
      log::Error(kLog, "event=push_worker_error error=\"{}\"", e.what());
      work_cv_.wait_for(lock, std::chrono::milliseconds(100), [&] { return stopping_; });
    } catch (...) {
      if (!lock.owns_lock()) lock.lock();
      worker_busy_ = false;
      log::Error(kLog, "event=push_worker_error error=unknown");
      work_cv_.wait_for(lock, std::chrono::milliseconds(100), [&] { return stopping_; });
    }
  }
}

void PushService::WorkerTurn(std::unique_lock<std::mutex>& lock) {
  auto timer_due = [&] { return !timers_.empty() && timers_.begin()->first <= NowMillis(); };
  auto urgent = [&] { return stopping_ || !completions_.empty() || timer_due(); };
  if (!urgent()) {
    if (IdleLocked()) idle_cv_.notify_all();
    const int64_t now = NowMillis();
    int64_t wait_ms = 1000;
    if (!timers_.empty()) wait_ms = std::clamp<int64_t>(timers_.begin()->first - now, 1, 1000);
    if (!slots_.empty()) wait_ms = std::min(wait_ms, std::max<int64_t>(1, next_sweep_ms_ - now));
    if (!writes_.empty() || !events_out_.empty())  // batch state writes: one commit per kFlushEveryMs
      wait_ms = std::clamp<int64_t>(last_flush_ms_ + kFlushEveryMs - now, 0, wait_ms);
    work_cv_.wait_for(lock, std::chrono::milliseconds(wait_ms), urgent);
  }
  if (stopping_) return;
  if (!completions_.empty() && completions_.size() < kBatch && !timer_due()) {
    // Let answers gather: one hand-off from the I/O thread per batch, not per answer.
    work_cv_.wait_for(lock, std::chrono::milliseconds(1), [&] { return stopping_; });
    if (stopping_) return;
  }
  std::vector<Completion> done;
  done.swap(completions_);
  std::vector<std::string> fired;
  const int64_t now = NowMillis();
  while (!timers_.empty() && timers_.begin()->first <= now) {  // O(log n) each
    auto t = timers_.begin();
    fired.push_back(std::move(t->second));
    timers_.erase(t);
  }
  if (now >= next_sweep_ms_) {
    // Watchdog: the client always answers (its own timeout is 30 s); should an
    // answer ever be lost, the push is treated as timed out rather than stuck.
    next_sweep_ms_ = now + kSweepEveryMs;
    for (auto& [token, slot] : slots_) {
      if (slot.retry_wait || now - slot.sent_ms < kWatchdogMs) continue;
      log::Error(kLog, "event=push_watchdog enrollment_id={} detail=\"no answer from the APNs client\"",
                 slot.target.enrollment_id);
      slot.gen = ++next_gen_;  // a late answer to that send is ignored
      ApnsResponse r;
      r.failure = ApnsFailure::kTimeout;
      r.error = "no answer from the APNs client";
      done.push_back({token, slot.gen, std::move(r)});
    }
  }
  worker_busy_ = true;
  lock.unlock();
  HandleCompletions(&done);
  for (const auto& token : fired) {
    try {
      Retry(token);
    } catch (const std::exception& e) {
      log::Error(kLog, "event=push_retry_error error=\"{}\"", e.what());
    } catch (...) {
      log::Error(kLog, "event=push_retry_error error=unknown");
    }
  }
  if (NowMillis() - last_flush_ms_ >= kFlushEveryMs) {
    Flush();
    last_flush_ms_ = NowMillis();
  }
  lock.lock();
  worker_busy_ = false;
  if (IdleLocked()) idle_cv_.notify_all();
}

Status PushService::CheckExpiry(int64_t now_ms) {
  auto certs = certs_->List();
  if (!certs.ok()) return certs.status();
  events::Transaction txn(events_);
  std::vector<std::string> warned;  // logged once committed
  for (const auto& c : *certs) {
    const int64_t days_left = (c.not_after_unix * 1000 - now_ms) / 86400000;
    // Every threshold crossed is marked; one warning names the smallest (a
    // certificate first seen 5 days before expiry gets one event, not three).
    int crossed = -1;
    for (int threshold : options_.expiry_warn_days) {
      if (days_left > threshold) continue;
      std::string key = std::string(kWarnedPrefix) + c.topic + "/" + std::to_string(c.not_after_unix) +
                        "/" + std::to_string(threshold);
      auto seen = store_->Get(store::Cf::kMeta, key);
      if (!seen.ok()) return seen.status();
      if (seen->has_value()) continue;
      txn.batch().Put(store::Cf::kMeta, key, "1");
      if (crossed < 0 || threshold < crossed) crossed = threshold;
    }
    if (crossed < 0) continue;
    plist::Value payload;
    payload.Set("topic", plist::Value::String(c.topic));
    payload.Set("days_left", plist::Value::Integer(days_left));
    payload.Set("threshold_days", plist::Value::Integer(crossed));
    payload.Set("not_after", plist::Value::String(FormatRfc3339(c.not_after_unix * 1000)));
    txn.Emit({.type = event_type::kCertificateExpiring, .time_ms = now_ms, .payload_json = plist::ToJson(payload)});
    // The same, in the catalogue's one event for every kind of certificate.
    payload.Set("kind", plist::Value::String("push"));
    txn.Emit({.type = events::type::kCertificateExpiring, .time_ms = now_ms,
              .payload_json = plist::ToJson(payload)});
    warned.push_back("topic=" + log::Quote(c.topic) + " days_left=" + std::to_string(days_left) +
                     " threshold=" + std::to_string(crossed) + " not_after=" + FormatRfc3339(c.not_after_unix * 1000));
  }
  ORCHARD_RETURN_IF_ERROR(events_->Commit(txn));
  for (const auto& w : warned) log::Warn(kLog, "event=push_certificate_expiring {}", w);
  return Status::Ok();
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
  {
    std::lock_guard plock(mu_);
    *out += "# HELP orchard_push_pending Device tokens with a push waiting for APNs (sent, queued or "
            "waiting to retry).\n# TYPE orchard_push_pending gauge\norchard_push_pending " +
            std::to_string(slots_.size()) + "\n";
  }
  // Each family's lines together (Prometheus text format), one line per topic.
  std::vector<std::pair<std::string, ApnsClient::Stats>> stats;
  for (const auto& [topic, client] : clients_) stats.emplace_back(topic, client->stats());
  struct Family {
    const char* name;
    const char* help;
    const char* type;
    uint64_t (*value)(const ApnsClient::Stats&);
  };
  static const Family kFamilies[] = {
      {"orchard_apns_connects_total", "HTTP/2 connections opened to APNs, per topic.", "counter",
       [](const ApnsClient::Stats& s) { return s.connects; }},
      {"orchard_apns_connect_failures_total", "Failed connection attempts to APNs, per topic.",
       "counter", [](const ApnsClient::Stats& s) { return s.connect_failures; }},
      {"orchard_apns_goaways_total", "GOAWAY frames received from APNs, per topic.", "counter",
       [](const ApnsClient::Stats& s) { return s.goaways; }},
      {"orchard_apns_in_flight", "Push requests awaiting an APNs answer, per topic.", "gauge",
       [](const ApnsClient::Stats& s) { return s.in_flight; }},
      {"orchard_apns_queued", "Push requests waiting for a connection or a stream, per topic.",
       "gauge", [](const ApnsClient::Stats& s) { return static_cast<uint64_t>(s.queued); }},
  };
  for (const Family& f : kFamilies) {
    *out += std::string("# HELP ") + f.name + " " + f.help + "\n# TYPE " + f.name + " " + f.type + "\n";
    for (const auto& [topic, st] : stats)
      *out += std::string(f.name) + "{topic=\"" + topic + "\"} " + std::to_string(f.value(st)) + "\n";
  }
}

}  // namespace orchard::push
