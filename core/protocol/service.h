// The device side of the MDM protocol: check-in messages and command reports.
//
// Handle() takes one device HTTP request (already size-limited by the HTTP
// layer) and returns the HTTP answer. Every state change it makes, and the
// events it causes, commit in one batch before the answer is returned; on any
// failure nothing is stored. Statuses follow the device's rules: 200 ok, 400 bad
// input, 403 identity refused, 410 declined user channel, 500 server fault, 503
// storage full for now (retry later), and 401 only for a deliberately blocked
// device (401 unenrolls it).
//
// Thread-safety: Handle() may be called concurrently; one enrollment's requests
// are serialized internally. Borrows every dependency (they must outlive it).
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "auth/auth.h"
#include "events/events.h"
#include "plist/plist.h"
#include "domain/enrollments.h"
#include "domain/reenroll.h"
#include "domain/tx.h"
#include "protocol/messages.h"
#include "queue/queue.h"
#include "store/store.h"

namespace orchard::protocol {

enum class Endpoint { kAuto, kCheckin, kConnect };

struct DeviceRequest {
  Endpoint endpoint = Endpoint::kAuto;
  std::string_view content_type;
  std::string_view body;
  auth::Presented presented;  // certificate header, Mdm-Signature, TLS peer
};

struct DeviceResponse {
  int status = 200;
  std::string content_type;  // empty for a zero-length body
  std::string body;
  std::string kind;          // message type or report status, for logs and metrics
  std::string error;         // reason for a non-2xx answer (logged, sent as text)
};

// What happens when an enrolled device channel Authenticates with another
// certificate than the one bound to it, and Orchard's CA did not issue that
// certificate for this device (docs/enrollment.md, "Re-enrollment").
enum class ReenrollPolicy {
  kAllow,    // accept it (as NanoMDM does): the new certificate takes over the enrollment
  kApprove,  // refuse (403) until an admin approves that certificate; the default
  kDeny,     // always refuse (403)
};
const char* ReenrollPolicyName(ReenrollPolicy p);  // "allow", "approve", "deny"

// What Orchard's device CA knows of a certificate it issued (the enroll
// module implements it). nullopt: not issued by Orchard's CA.
struct IssuedInfo {
  std::string udid;  // the device it was issued for; empty when unknown
  bool revoked = false;
  // The certificate this one renews (SCEP RenewalReq signed with it); empty
  // for a first issue. A renewal of the certificate bound to the device
  // replaces it in place: queue, results, state and inventory stay.
  std::string renews_sha256;
};
class IssuedCertLookup {
 public:
  virtual ~IssuedCertLookup() = default;
  virtual Result<std::optional<IssuedInfo>> Issued(const std::string& cert_sha256) = 0;
  // Whether Orchard's CA revoked the certificate (answered from memory: it is
  // asked on every device request).
  virtual bool Revoked(const std::string& cert_sha256) = 0;
};

// A DeclarativeManagement check-in, after the identity was checked (the ddm
// module answers it).
struct DeclarativeRequest {
  std::string enrollment_id;  // the channel (device or user)
  std::string device_id;      // its device channel
  std::string endpoint;       // "tokens", "declaration-items", "declaration/<kind>/<id>", "status"
  std::string data;           // the decoded Data (status only); empty when absent
  bool has_data = false;
};
class DeclarativeHandler {
 public:
  virtual ~DeclarativeHandler() = default;
  // The device's answer: 200 with JSON (or empty for status), 404 for a
  // declaration not in the channel's manifest, 400 for a bad endpoint or Data.
  virtual DeviceResponse Checkin(const DeclarativeRequest& request) = 0;
  // The channel e completed an enrollment (its first TokenUpdate after an
  // Authenticate: the device's DDM state is gone). Called inside tx, which
  // holds e's lock and writes e as enrolled; may queue a sync command in it.
  virtual Status OnEnrolled(domain::Tx& tx, const store::Enrollment& e, int64_t now_ms) = 0;
  // The channel e checked out: its own CheckOut, or its device's (a device's
  // CheckOut ends its enrolled user channels too). Called inside tx, which
  // holds e's lock and writes e as checked out.
  virtual Status OnCheckedOut(domain::Tx& tx, const store::Enrollment& e, int64_t now_ms) = 0;
  // The channel acknowledged a DeclarativeManagement command (the device has
  // turned DDM on). Called inside tx, which holds the channel's lock and
  // stores the command's result.
  virtual Status OnSyncAcknowledged(domain::Tx& tx, const std::string& enrollment_id,
                                    const std::string& command_uuid, int64_t now_ms) = 0;
};

struct ServiceOptions {
  plist::Limits limits;
  bool user_authenticate_digest = false;
  // A command delivered this many times without any report for it (a NotNow
  // counts as a report) is failed instead of being delivered again; 0 = never.
  int max_deliveries = 5;
  // User channels (user, Shared iPad user, User Enrollment user) one device may
  // create; beyond it a new channel is declined with 410.
  int max_user_channels = 32;
  // Certificates a device reports in CertificateList within one of these days
  // of expiry get a certificate.expiring event (kind "device_reported"), once
  // per threshold; ascending, empty = off.
  std::vector<int> cert_warn_days = {1, 7, 14, 30};
  ReenrollPolicy reenroll = ReenrollPolicy::kApprove;
};

struct Deps {
  store::Store* store;
  events::EventLog* events;
  queue::CommandQueue* queue;
  auth::Authenticator* auth;
  domain::Enrollments* enrollments;
  domain::EnrollmentLocks* locks;
  // device.idle is written only when someone consumes it (null: always).
  const events::Interest* interest = nullptr;
  // Orchard's CA records (null: no CA, every certificate is "not issued by Orchard").
  IssuedCertLookup* issued = nullptr;
  // Declarative Device Management (null: DeclarativeManagement check-ins get 400).
  DeclarativeHandler* ddm = nullptr;
};

class Service {
 public:
  Service(const ServiceOptions& options, const Deps& deps) : options_(options), d_(deps) {}

  DeviceResponse Handle(const DeviceRequest& request);

  static constexpr std::string_view kCheckinContentType = "application/x-apple-aspen-mdm-checkin";
  // CommandResult::status of a command failed by the server (see max_deliveries).
  static constexpr const char* kFailedStatus = "Failed";
  // At most this many commands are failed while answering one report; any
  // further ones are failed on the next report.
  static constexpr size_t kMaxFailuresPerReport = 16;

 private:
  DeviceResponse HandleCheckin(const DeviceRequest& request);
  DeviceResponse HandleReport(const DeviceRequest& request);
  // Fails a command delivered max_deliveries times without a report: removed,
  // a Failed result and a command.failed event, all in txn.
  // certificate.expiring for certificates of a CertificateList report near expiry.
  Status WarnReportedCertificates(domain::Tx& txn, const std::string& enrollment_id, const plist::Value& report,
                                  int64_t now_ms);
  void FailUndelivered(domain::Tx& txn, const std::string& enrollment_id,
                       const queue::Located& loc, int64_t now_ms);
  // Whether the device may create one more user channel (call holding the
  // device's lock to enforce it): when not, *declined says why (answer 410).
  Status CheckUserChannelLimit(const std::string& device_id, std::string* declined);
  // Identity of the caller and whether it may speak for device_id; fills
  // *identity on success. bound_cert, when given, is the certificate hash the
  // device channel's record holds (bound in the same batch as the binding), so
  // a match needs no binding lookup.
  // locked: the caller's transaction holding device_id's lock and the device
  // record it read (a renewal rebind is then written into it and *record
  // updated); null: RebindRenewed takes the lock itself.
  struct Locked {
    domain::Tx* txn;
    std::optional<store::Enrollment>* record;
  };
  Status CheckIdentity(const DeviceRequest& request, const std::string& message_type,
                       const std::string& device_id, auth::Identity* identity,
                       const std::string* bound_cert = nullptr, const Locked* locked = nullptr);

  DeviceResponse Authenticate(const CheckinMessage& msg, const auth::Identity& identity);
  // DeclarativeManagement: Endpoint and Data checked, then handed to d_.ddm.
  DeviceResponse Declarative(const CheckinMessage& msg);
  // The takeover checks of Authenticate (holding the enrollment lock): fills
  // *refusal (403 reason) when the certificate may not enroll this device;
  // emits enrollment.reenroll and writes approval state into txn either way.
  Status CheckReenroll(domain::Tx& txn, const CheckinMessage& msg, const auth::Identity& identity,
                       const std::optional<store::Enrollment>& prev, int64_t now, std::string* refusal,
                       bool* renewal);
  // A renewed certificate's first request (no Authenticate): when Orchard's CA
  // issued it for device_id as the renewal of the certificate bound there, it
  // replaces that binding in place (*rebound = true). Otherwise nothing.
  Status RebindRenewed(const std::string& device_id, const auth::Identity& identity, const Locked* locked,
                       bool* rebound);
  DeviceResponse TokenUpdate(const CheckinMessage& msg);
  // Lock, read (400 if unknown), change, write with one event, commit.
  DeviceResponse UpdateKnown(const CheckinMessage& msg, const std::string& id, const char* event_type,
                             const std::function<void(store::Enrollment&)>& change);
  // Checks out the channel; a device channel's CheckOut also checks out its
  // enrolled user channels (locked with it; DDM hook for each).
  DeviceResponse CheckOut(const CheckinMessage& msg);
  // The ids of device_id's user channels ("<device id>:<suffix>"), sorted.
  Result<std::vector<std::string>> UserChannels(const std::string& device_id);
  DeviceResponse SetBootstrapToken(const CheckinMessage& msg);
  DeviceResponse GetBootstrapToken(const CheckinMessage& msg);
  DeviceResponse UserAuthenticate(const CheckinMessage& msg);

  ServiceOptions options_;
  Deps d_;
  // Authenticate checks and writes a certificate binding; two devices with the
  // same certificate (different lock stripes) must not both pass the check.
  std::mutex bind_mu_;
};

}  // namespace orchard::protocol
