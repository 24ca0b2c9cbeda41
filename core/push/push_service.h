// PushService: Orchard's PushProvider on APNs.
//
// For each target it checks the enrollment's push state (no pushes to a token
// APNs declared invalid until the next TokenUpdate), coalesces duplicate pushes
// to one device within a short window, and sends through one ApnsClient per
// topic (each topic with its own push certificate from PushCertStore).
// Outcomes are recorded per enrollment (Cf::kPushState) and, for the ones an
// admin or a policy must see, as events in the same batch:
//   200                         -> last push time and apns-id
//   410 Unregistered/Expired    -> token marked invalid with Apple's timestamp, event push.unregistered
//   400 BadDeviceToken, DeviceTokenNotForTopic -> token marked invalid, event push.rejected (no retry)
//   other 400                   -> event push.rejected (no retry)
//   403 certificate errors      -> the topic is flagged, pushes for it stop, event push.certificate_error
//   429, 500, 503, transport    -> retried with exponential backoff and jitter, at most retry_max times
// Push() waits (bounded) for the first answers so the admin API can report them;
// retries continue in the background.
//
// Thread-safety: all public methods are safe for concurrent use. Owns its
// clients and its worker thread; borrows store, events and certs.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
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
inline constexpr const char* kUnregistered = "push.unregistered";
inline constexpr const char* kRejected = "push.rejected";
inline constexpr const char* kCertificateError = "push.certificate_error";
inline constexpr const char* kCertificateExpiring = "push.certificate_expiring";
}  // namespace event_type

struct PushServiceOptions {
  ApnsEndpoint endpoint;
  int connections = 2;
  int64_t expiration_seconds = 86400;
  int64_t coalesce_ms = 1000;
  int retry_max = 3;
  int64_t retry_base_ms = 1000;
  int64_t wait_ms = 3000;  // how long Push() waits for first answers (it runs on an HTTP worker)
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
  // Fire-and-forget variant (periodic re-push): outcomes are only recorded.
  void PushAsync(const std::vector<Target>& targets) override;

  // A new certificate for topic was stored: reconnect with it and lift a 403 flag.
  void CertificateUpdated(const std::string& topic) override;
  // Emits push.certificate_expiring once per threshold and certificate.
  Status CheckExpiry(int64_t now_ms);
  Result<std::optional<store::PushState>> State(const std::string& enrollment_id) override;
  // Waits until no retry is scheduled and every outcome is written (tests, shutdown).
  bool WaitIdle(std::chrono::milliseconds timeout);
  // Appends Prometheus lines (counters, certificate days left, client stats).
  void RenderMetrics(std::string* out);

 private:
  struct Pending;
  struct Retry {
    int64_t due_ms;
    Target target;
    int attempt;
  };
  void Send(const Target& target, int attempt, std::shared_ptr<Pending> pending, size_t index);
  void Handle(const Target& target, int attempt, const ApnsResponse& response,
              std::shared_ptr<Pending> pending, size_t index);
  // Shared: a certificate upload may replace the topic's client while a push
  // is being handed to the old one.
  Result<std::shared_ptr<ApnsClient>> ClientFor(const std::string& topic);
  void Record(const std::string& enrollment_id, store::PushState state, events::Event* event);
  void Worker();
  void Flush();

  PushServiceOptions options_;
  store::Store* store_;
  events::EventLog* events_;
  PushCertStore* certs_;
  ClientFactory factory_;

  std::mutex clients_mu_;
  std::map<std::string, std::shared_ptr<ApnsClient>> clients_;  // by topic
  std::map<std::string, std::string> flagged_;                    // topic -> reason (403)

  std::mutex coalesce_mu_;
  std::unordered_map<std::string, std::pair<int64_t, std::string>> recent_;  // id -> (ms, apns-id)

  std::mutex flush_mu_;
  std::mutex work_mu_;
  std::condition_variable work_cv_;
  std::vector<Retry> retries_;
  // Outcomes not yet written, latest per enrollment (a later one replaces an earlier).
  std::unordered_map<std::string, store::PushState> writes_;
  std::vector<events::Event> events_out_;
  bool stopping_ = false;
  bool worker_busy_ = false;  // processing outside work_mu_
  std::condition_variable idle_cv_;
  std::thread worker_;

  std::atomic<uint64_t> n_ok_{0}, n_unregistered_{0}, n_rejected_{0}, n_cert_error_{0},
      n_retried_{0}, n_failed_{0}, n_coalesced_{0}, n_skipped_invalid_{0};
};

}  // namespace orchard::push
