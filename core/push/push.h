// Push: waking devices through APNs.
//
// This header holds the interface the rest of the core calls (PushProvider)
// and push-certificate handling (parse, validate, store). PushService
// (push_service.h) implements PushProvider on APNs.
//
// Thread-safety: PushProvider implementations and PushCertStore are safe for
// concurrent use.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "store/records.h"
#include "store/store.h"
#include "util/secret_box.h"
#include "util/status.h"

namespace orchard::push {

struct Target {
  std::string enrollment_id;
  std::string topic;
  std::string token;       // raw device token bytes
  std::string push_magic;  // secret
  int64_t last_seen_ms = 0;  // when the device last contacted the server (coalescing)
};

// Why a push was refused at once, without being sent (Outcome::refusal).
enum class PushRefusal {
  kNone = 0,       // accepted
  kNoToken,        // the target has no push token or push magic
  kTokenInvalid,   // APNs declared this token invalid; no pushes until a TokenUpdate
  kTopicDisabled,  // APNs refused the topic's certificate (403); upload a new one
  kNoCertificate,  // no push certificate for the topic, or its key cannot be opened
  kUnavailable,    // the APNs client could not be set up, or an internal error
};

// The immediate answer for one target. APNs' own answer comes later and is
// recorded in the enrollment's push state (State()) and as push events.
struct Outcome {
  std::string enrollment_id;
  bool ok = false;        // accepted: queued for APNs (or joined a push that is)
  std::string apns_id;    // when accepted: the apns-id the push carries (assigned by Orchard)
  std::string error;      // when refused: human readable
  PushRefusal refusal = PushRefusal::kNone;
  bool coalesced = false;  // accepted by joining a pending or just-delivered push to the same token
};

class PushProvider {
 public:
  virtual ~PushProvider() = default;
  // Accepts or refuses a push to every target and returns one outcome per
  // target, in order, without waiting for APNs (never blocks on the network:
  // safe on an HTTP worker). A target whose token already has a push waiting
  // for APNs (queued, in flight or waiting to retry) joins it: one push per
  // token at a time, whatever the number of callers.
  virtual std::vector<Outcome> Push(const std::vector<Target>& targets) = 0;
  // Push() for callers that ignore the immediate outcomes.
  virtual void PushAsync(const std::vector<Target>& targets) { (void)Push(targets); }
  // A push certificate for topic was stored or replaced.
  virtual void CertificateUpdated(const std::string& topic) {}
  // True while a push to this raw device token waits for APNs (a new push
  // to it would join that one).
  virtual bool Pending(const std::string& token) { return false; }
  // The enrollment's latest recorded push outcome, if any (including
  // outcomes not yet written to the store).
  virtual Result<std::optional<store::PushState>> State(const std::string& enrollment_id) = 0;
};

struct PushCert {
  std::string topic;  // subject UID (0.9.2342.19200300.100.1.1), com.apple.mgmt.…
  int64_t not_after_unix = 0;
  std::string cert_pem;
  std::string key_pem;  // secret: never logged or returned by the API
  std::string key_error;  // set by PushCertStore::List when the sealed key cannot be opened
};

// Parses PEM text holding the certificate and its private key (any order).
// Errors: no certificate, no key, key does not match, topic missing or not an
// MDM topic (must start with "com.apple.mgmt."), certificate expired.
Result<PushCert> ParsePushCert(std::string_view pem);
// Parses a PKCS#12 (.p12) bundle with its password; same checks as above.
Result<PushCert> ParsePushCertPkcs12(std::string_view der, const std::string& password);

// Stores push certificates by topic (several topics at once). When a
// SecretBox is given, private keys are sealed with it at rest; a key stored
// sealed cannot be read without the same box (Get returns an error).
class PushCertStore {
 public:
  PushCertStore(store::Store* store, const SecretBox* box) : store_(store), box_(box) {}
  // Stores (or replaces, same topic) a certificate. The first one stored sets
  // the enrollment topic (CurrentTopic: the Topic enrollment profiles carry).
  // A certificate for another topic than the current one is refused with
  // FailedPrecondition unless force: a new topic would strand every device
  // enrolled with the old one (they only accept pushes on it). With force it
  // is stored and becomes the current topic; older topics' certificates stay.
  Status Put(const PushCert& cert, bool force = false);
  // The enrollment topic; nullopt before the first certificate.
  Result<std::optional<std::string>> CurrentTopic();
  // The certificate with its usable key; Unavailable if the key cannot be opened.
  Result<std::optional<PushCert>> Get(const std::string& topic);
  // Every stored certificate; one whose key cannot be opened is listed with
  // key_error set and no key (so listings, metrics and expiry warnings keep it).
  Result<std::vector<PushCert>> List();
  // As List, one page: up to limit certificates whose topic sorts after after_topic
  // ("" = from the first), in topic order. Reads at most limit records.
  Result<std::vector<PushCert>> ListPage(const std::string& after_topic, size_t limit);

 private:
  Result<PushCert> Decode(std::string_view bytes) const;
  store::Store* store_;
  const SecretBox* box_;  // may be null (keys stored in clear; logged at start)
  std::mutex put_mu_;     // Put: the topic check and the write, one at a time
};

}  // namespace orchard::push
