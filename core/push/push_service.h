// PushService: Orchard's PushProvider on APNs.
//
// Push() answers at once: per target it refuses what cannot be sent (no
// token, a token APNs declared invalid until the next TokenUpdate, a topic
// disabled by a 403, no usable push certificate), joins a push to the same
// token that is still waiting for APNs (queued, in flight or waiting to
// retry) or was delivered within coalesce_ms and not answered by the device
// since, and otherwise assigns a new apns-id and hands the request to the
// topic's ApnsClient (one per topic, with the certificate from
// PushCertStore). So there is at most one push per token at a time: an APNs
// outage never builds up a storm of pushes for one device.
//
// APNs' answers are handed by the client's I/O thread to the service's worker
// thread, which classifies each once (Verdict) and acts on it:
//   200                         -> last push time and apns-id
//   410 Unregistered/Expired    -> token marked invalid with Apple's timestamp, event push.unregistered
//   400 BadDeviceToken, DeviceTokenNotForTopic -> token marked invalid, event push.rejected (no retry)
//   other 400, 404, 405, 413    -> event push.rejected (no retry)
//   403 certificate errors      -> the topic is flagged, pushes for it stop, event push.certificate_error
//   429, 500, 503, transport    -> retried with exponential backoff and jitter, at most retry_max times
// Outcomes are recorded per enrollment (Cf::kPushState) and, for the ones an
// admin or a policy must see, as events in the same batch, written by the
// worker. The I/O thread never touches the store.
//
// Thread-safety: all public methods are safe for concurrent use. Owns its
// clients and its worker thread (which catches every exception at its top);
// borrows store, events and certs.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "events/events.h"
#include "push/apns_client.h"
#include "push/push.h"
#include "store/records.h"
#include "store/store.h"

namespace orchard::push {

namespace event_type {
inline constexpr const char* kUnregistered = ORCHARD_EVENT_PUSH_UNREGISTERED;
inline constexpr const char* kRejected = ORCHARD_EVENT_PUSH_REJECTED;
inline constexpr const char* kCertificateError = ORCHARD_EVENT_PUSH_CERTIFICATE_ERROR;
inline constexpr const char* kCertificateExpiring = ORCHARD_EVENT_PUSH_CERTIFICATE_EXPIRING;
}  // namespace event_type

struct PushServiceOptions {
  ApnsEndpoint endpoint;
  int connections = 2;
  int64_t expiration_seconds = 86400;
  int64_t coalesce_ms = 1000;  // joining a delivered push (a pending one is always joined)
  int retry_max = 3;
  int64_t retry_base_ms = 1000;
  std::vector<int> expiry_warn_days = {30, 14, 7, 1};
};

using ClientFactory =
    std::function<Result<std::unique_ptr<ApnsClient>>(const ApnsClientOptions& options)>;

// Resolves "production", "sandbox" or "HOST:PORT" to an endpoint.
Result<ApnsEndpoint> ParseEndpoint(const std::string& text);

class PushService : public PushProvider {
 public:
  PushService(const PushServiceOptions& options, store::Store* store, events::EventLog* events,
              PushCertStore* certs, ClientFactory factory = nullptr);
  ~PushService() override;

  std::vector<Outcome> Push(const std::vector<Target>& targets) override;
  // A new certificate for topic was stored: reconnect with it and lift a 403 flag.
  void CertificateUpdated(const std::string& topic) override;
  bool Pending(const std::string& token) override;
  // Emits push.certificate_expiring once per threshold and certificate.
  Status CheckExpiry(int64_t now_ms);
  Result<std::optional<store::PushState>> State(const std::string& enrollment_id) override;
  // Waits until no push is pending (every APNs answer handled, no retry
  // scheduled) and every outcome is written (tests, benchmarks, shutdown).
  bool WaitIdle(std::chrono::milliseconds timeout);
  // Counters since start (the orchard_push_total series).
  struct Counters {
    uint64_t ok = 0, unregistered = 0, rejected = 0, certificate_error = 0, retried = 0, failed = 0,
             coalesced = 0, skipped_invalid = 0;
  };
  Counters counters() const;
  // Appends Prometheus lines (counters, certificate days left, client stats).
  void RenderMetrics(std::string* out);

 private:
  // APNs' answer (or the client's failure), classified once.
  enum class Verdict {
    kDelivered,      // 200
    kTokenGone,      // 410: the token is no longer valid
    kTokenRejected,  // 400 BadDeviceToken / DeviceTokenNotForTopic: the token is wrong
    kRejected,       // other 400, 404, 405, 413: the request is wrong; not retried
    kCertificate,    // 403: APNs refuses the topic's certificate
    kRetry,          // 429, 500, 503, timeout, connection trouble: retried
    kFailed,         // anything else: recorded, not retried
    kStopped,        // the client shut down because orchardd is stopping: nothing recorded
  };
  static Verdict Classify(const ApnsResponse& r, bool stopping);

  // One push waiting for APNs, per token: sent (the client must answer), or
  // waiting to retry (its due time is in timers_).
  struct Slot {
    Target target;  // the latest target (a joining push may bring a newer push magic)
    std::string apns_id;
    int attempt = 0;
    uint64_t gen = 0;  // the send the next answer must belong to
    bool retry_wait = false;
    int64_t sent_ms = 0;  // when the current send was handed to the client (watchdog)
  };
  // An answer as the client's callback hands it over (apns_id left out: the slot has it).
  struct Completion {
    std::string token;
    uint64_t gen;
    ApnsResponse response;
  };
  // An answer taken off its slot, to be recorded.
  struct Answered {
    Target target;
    ApnsResponse response;
    Verdict verdict = Verdict::kFailed;
    int attempt = 0;
    int64_t retry_delay_ms = 0;  // > 0: a retry is scheduled
  };
  struct SendJob {
    std::shared_ptr<ApnsClient> client;
    std::string token;
    uint64_t gen;
    ApnsRequest request;
  };
  struct ClientOrRefusal {
    std::shared_ptr<ApnsClient> client;
    PushRefusal refusal = PushRefusal::kNone;
    std::string error;
  };

  // The apns-id of a pending or just-delivered push this target joins (mu_ held).
  std::optional<std::string> JoinLocked(const Target& target, int64_t now);
  // Sends (no lock held: a client may call back on this thread).
  void Dispatch(SendJob job);
  // Classifies an answer and updates its slot (mu_ held): done, or a retry scheduled.
  void TakeAnswerLocked(Completion& c, int64_t now, std::vector<Answered>* out);
  // Builds the push state (and event) an answer leads to.
  void Record(Answered& a, std::unordered_map<std::string, store::PushState>* states,
              std::vector<events::Event>* evs);
  void Retry(const std::string& token);
  // Shared: a certificate upload may replace the topic's client while a push
  // is being handed to the old one.
  ClientOrRefusal ClientFor(const std::string& topic);
  ApnsRequest MakeRequest(const Target& target, const std::string& apns_id) const;
  void RememberDelivered(const std::string& token, const std::string& apns_id, int64_t now);
  void Worker();
  void WorkerTurn(std::unique_lock<std::mutex>& lock);
  void HandleCompletions(std::vector<Completion>* done);
  bool IdleLocked() const;
  void Flush();

  PushServiceOptions options_;
  store::Store* store_;
  events::EventLog* events_;
  PushCertStore* certs_;
  ClientFactory factory_;

  std::mutex clients_mu_;
  std::map<std::string, std::shared_ptr<ApnsClient>> clients_;  // by topic
  std::map<std::string, std::string> flagged_;                    // topic -> reason (403)

  std::mutex flush_mu_;
  mutable std::mutex mu_;  // everything below
  std::condition_variable work_cv_;
  std::condition_variable idle_cv_;
  std::unordered_map<std::string, Slot> slots_;   // by raw token
  std::multimap<int64_t, std::string> timers_;    // retry due ms -> token
  std::vector<Completion> completions_;           // answers the worker has not handled
  uint64_t next_gen_ = 0;
  // Delivered pushes within coalesce_ms: token -> (ms, apns-id), expired in
  // insertion order.
  std::unordered_map<std::string, std::pair<int64_t, std::string>> recent_;
  std::deque<std::pair<int64_t, std::string>> recent_order_;
  // Outcomes not yet written, latest per enrollment (a later one replaces an earlier).
  std::unordered_map<std::string, store::PushState> writes_;
  std::vector<events::Event> events_out_;
  bool stopping_ = false;
  bool worker_busy_ = false;  // processing outside mu_
  int64_t last_flush_ms_ = 0;  // worker only
  int64_t next_sweep_ms_ = 0;  // watchdog (mu_)
  std::thread worker_;

  std::atomic<uint64_t> n_ok_{0}, n_unregistered_{0}, n_rejected_{0}, n_cert_error_{0},
      n_retried_{0}, n_failed_{0}, n_coalesced_{0}, n_skipped_invalid_{0};
};

}  // namespace orchard::push
