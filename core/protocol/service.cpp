#include "protocol/service.h"

#include <algorithm>
#include <functional>
#include <optional>
#include <vector>

#include "log/log.h"
#include "util/encoding.h"

namespace orchard::protocol {
namespace {

constexpr const char* kLog = "protocol";

DeviceResponse Empty(std::string kind) {
  DeviceResponse r;
  r.kind = std::move(kind);
  return r;
}

DeviceResponse Fail(int status, std::string kind, std::string error) {
  DeviceResponse r;
  r.status = status;
  r.kind = std::move(kind);
  r.error = std::move(error);
  r.content_type = "text/plain; charset=utf-8";
  r.body = r.error + "\n";
  return r;
}

DeviceResponse Plist(std::string kind, const plist::Value& v) {
  DeviceResponse r;
  r.kind = std::move(kind);
  r.content_type = "application/xml; charset=UTF-8";
  r.body = plist::ToXml(v);
  return r;
}

DeviceResponse FromStatus(const Status& st, std::string kind) {
  switch (st.code()) {
    case Code::kInvalidArgument:
    case Code::kTooLarge:
      return Fail(st.code() == Code::kTooLarge ? 413 : 400, std::move(kind), st.message());
    case Code::kUnauthenticated:
    case Code::kPermissionDenied:
      return Fail(403, std::move(kind), st.message());
    case Code::kResourceExhausted:  // disk full: the device retries later (app adds Retry-After)
      return Fail(503, std::move(kind), "server temporarily unable to store: " + st.message());
    default:
      return Fail(500, std::move(kind), "server error: " + st.message());
  }
}

// A stored copy of the device report's JSON without secrets, for events.
std::string EventPayload(const plist::Value& body) { return plist::ToJson(WithoutSecrets(body)); }

}  // namespace

DeviceResponse Service::Handle(const DeviceRequest& request) {
  Endpoint ep = request.endpoint;
  if (ep == Endpoint::kAuto) {
    // One path serves both: the check-in content type says check-in; anything
    // else (including no Content-Type) is a command report.
    std::string_view ct = request.content_type;
    ep = ct.substr(0, kCheckinContentType.size()) == kCheckinContentType ? Endpoint::kCheckin
                                                                          : Endpoint::kConnect;
  }
  return ep == Endpoint::kCheckin ? HandleCheckin(request) : HandleReport(request);
}

Status Service::CheckIdentity(const DeviceRequest& request, const std::string& message_type,
                              const std::string& device_id, auth::Identity* identity,
                              const std::string* bound_cert, const Locked* locked) {
  auto id = d_.auth->Identify(request.presented);
  if (!id.ok()) return id.status();
  *identity = std::move(id.value());
  if (identity->anonymous) return Status::Ok();
  if (d_.issued && d_.issued->Revoked(identity->cert_sha256))
    return Status::PermissionDenied("certificate " + identity->cert_sha256.substr(0, 16) + "… is revoked");
  if (message_type == "Authenticate") return Status::Ok();
  if (bound_cert && !bound_cert->empty() && *bound_cert == identity->cert_sha256) return Status::Ok();
  auto bound = d_.enrollments->BoundTo(identity->cert_sha256);
  if (!bound.ok()) return bound.status();
  if (!bound->has_value()) {
    bool rebound = false;
    Status st = RebindRenewed(device_id, *identity, locked, &rebound);
    if (!st.ok()) return st;
    if (rebound) return Status::Ok();
    return Status::PermissionDenied("certificate " + identity->cert_sha256.substr(0, 16) +
                                    "… is not bound to any enrollment; the device must Authenticate");
  }
  if (**bound != device_id)
    return Status::PermissionDenied("certificate " + identity->cert_sha256.substr(0, 16) +
                                    "… is bound to another enrollment");
  return Status::Ok();
}

DeviceResponse Service::HandleCheckin(const DeviceRequest& request) {
  auto msg = DecodeCheckin(request.body, options_.limits);
  if (!msg.ok()) return FromStatus(msg.status(), "checkin");
  const std::string& type = msg->message_type;
  auth::Identity identity;
  Status st = CheckIdentity(request, type, msg->ids.device_id, &identity);
  if (!st.ok()) {
    log::Warn(kLog, "event=identity_refused type={} enrollment_id={} reason={}", log::Quote(type),
              log::Quote(msg->ids.id), log::Quote(st.message()));
    return FromStatus(st, type);
  }
  // A device an admin blocked is unenrolled on purpose, whatever it sends.
  auto device = d_.enrollments->Get(msg->ids.device_id);
  if (!device.ok()) return FromStatus(device.status(), type);
  if (device->has_value() && (*device)->blocked) {
    log::Info(kLog, "event=blocked_device_unenrolled type={} enrollment_id={}", log::Quote(type), log::Quote(msg->ids.id));
    return Fail(401, type, "device is blocked");
  }
  if (msg->ids.id != msg->ids.device_id) {
    auto channel = d_.enrollments->Get(msg->ids.id);
    if (channel.ok() && channel->has_value() && (*channel)->blocked) {
      log::Info(kLog, "event=blocked_channel_unenrolled type={} enrollment_id={}", log::Quote(type), log::Quote(msg->ids.id));
      return Fail(401, type, "enrollment is blocked");
    }
  }

  if (type == "Authenticate") return Authenticate(*msg, identity);
  if (type == "TokenUpdate") return TokenUpdate(*msg);
  if (type == "CheckOut") return CheckOut(*msg);
  if (type == "UserAuthenticate") return UserAuthenticate(*msg);
  if (type == "SetBootstrapToken") return SetBootstrapToken(*msg);
  if (type == "GetBootstrapToken") return GetBootstrapToken(*msg);
  if (type == "GetToken") {
    std::string service(msg->body.GetString("TokenServiceType"));
    return Fail(400, type,
                "no handler for token service type '" + service + "' is configured");
  }
  if (type == "DeclarativeManagement") return Declarative(*msg);
  return Fail(400, "checkin", "unknown check-in MessageType '" + type + "'");
}

DeviceResponse Service::Authenticate(const CheckinMessage& msg, const auth::Identity& identity) {
  const std::string& type = msg.message_type;
  if (msg.ids.id != msg.ids.device_id)
    return Fail(400, type, "Authenticate must come from the device channel (no user keys)");
  const std::string& id = msg.ids.id;
  domain::Tx txn(d_.locks, d_.events);
  txn.Lock(id);
  std::lock_guard bind_lock(bind_mu_);  // held until the binding is committed

  if (!identity.anonymous) {
    auto bound = d_.enrollments->BoundTo(identity.cert_sha256);
    if (!bound.ok()) return FromStatus(bound.status(), type);
    if (bound->has_value() && **bound != id) {
      log::Warn(kLog, "event=identity_refused type=Authenticate enrollment_id={} reason=cert_bound_elsewhere",
                log::Quote(id));
      return Fail(403, type, "certificate is bound to another enrollment");
    }
  }
  auto prev = d_.enrollments->Get(id);
  if (!prev.ok()) return FromStatus(prev.status(), type);

  const int64_t now = NowMillis();
  bool renewal = false;  // the bound certificate's renewal: the enrollment goes on as it was
  if (!identity.anonymous) {
    std::string refusal;
    Status checked = CheckReenroll(txn, msg, identity, *prev, now, &refusal, &renewal);
    if (!checked.ok()) return FromStatus(checked, type);
    if (!refusal.empty()) {
      // Only the event (and a pending request) are written: the enrollment is untouched.
      Status st = txn.Commit();
      if (!st.ok()) return FromStatus(st, type);
      log::Warn(kLog, "event=identity_refused type=Authenticate enrollment_id={} reason={} cert_sha256={}",
                log::Quote(id), log::Quote(refusal), identity.cert_sha256);
      return Fail(403, type, refusal);
    }
  }
  store::Enrollment e = prev->value_or(store::Enrollment{});
  const bool re_enroll = prev->has_value();
  uint64_t cleared_commands = 0;
  if (re_enroll && renewal) {
    d_.enrollments->Unbind(txn.batch(), e.cert_sha256);
  } else if (re_enroll) {
    // A fresh enrollment: the old queue is cleared, as the established servers do.
    auto cleared = d_.queue->Clear(txn.batch(), id);
    if (!cleared.ok()) return FromStatus(cleared.status(), type);
    cleared_commands = *cleared;
    if (*cleared) {
      plist::Value payload;
      payload.Set("removed", plist::Value::Integer(static_cast<int64_t>(*cleared)));
      payload.Set("reason", plist::Value::String("re_authenticate"));
      txn.Emit({.type = events::type::kQueueCleared, .time_ms = now, .enrollment_id = id,
                .payload_json = plist::ToJson(payload)});
    }
    if (!e.cert_sha256.empty() && e.cert_sha256 != identity.cert_sha256)
      d_.enrollments->Unbind(txn.batch(), e.cert_sha256);  // renewed identity replaces the old
  }
  e.id = id;
  e.type = msg.ids.type;
  e.udid = std::string(msg.body.GetString("UDID"));
  e.enrollment_id = std::string(msg.body.GetString("EnrollmentID"));
  e.topic = std::string(msg.body.GetString("Topic"));
  e.serial = std::string(msg.body.GetString("SerialNumber"));
  e.model = std::string(msg.body.GetString("Model"));
  e.model_name = std::string(msg.body.GetString("ModelName"));
  e.os_version = std::string(msg.body.GetString("OSVersion"));
  e.build_version = std::string(msg.body.GetString("BuildVersion"));
  e.product_name = std::string(msg.body.GetString("ProductName"));
  e.device_name = std::string(msg.body.GetString("DeviceName"));
  e.imei = std::string(msg.body.GetString("IMEI"));
  e.meid = std::string(msg.body.GetString("MEID"));
  if (!renewal) {  // a renewal keeps the enrollment as it is: state, generation (no second enrollment.enrolled)
    e.state = store::EnrollmentState::kAuthenticated;
    e.generation += 1;
    e.authenticated_ms = now;
    e.awaiting_configuration = false;
  }
  e.last_seen_ms = now;
  e.cert_sha256 = identity.cert_sha256;
  e.cert_not_after_ms = identity.not_after_unix * 1000;
  if (!identity.anonymous) d_.enrollments->Bind(txn.batch(), identity.cert_sha256, id);
  d_.enrollments->Put(txn.batch(), *prev, e);

  plist::Value payload = WithoutSecrets(msg.body);
  payload.Set("ReEnrollment", plist::Value::Bool(re_enroll && !renewal));
  if (renewal) payload.Set("Renewal", plist::Value::Bool(true));
  txn.Emit({.type = events::type::kEnrollmentAuthenticated,
            .time_ms = now,
            .enrollment_id = id,
            .payload_json = plist::ToJson(payload)});
  Status st = txn.Commit();
  if (!st.ok()) return FromStatus(st, type);
  if (cleared_commands)
    log::Info(kLog, "event=queue_cleared reason=re_authenticate enrollment_id={} commands={}", log::Quote(id),
              cleared_commands);
  log::Info(kLog, "event=authenticate enrollment_id={} serial={} re_enroll={} generation={}", log::Quote(id),
            log::Quote(e.serial), re_enroll, e.generation);
  return Empty(type);
}

Status Service::RebindRenewed(const std::string& device_id, const auth::Identity& identity, const Locked* locked,
                              bool* rebound) {
  *rebound = false;
  if (!d_.issued || device_id.empty() || (locked && locked->txn == nullptr)) return Status::Ok();
  auto issued = d_.issued->Issued(identity.cert_sha256);
  if (!issued.ok()) return issued.status();
  if (!issued->has_value() || (*issued)->revoked || (*issued)->udid != device_id || (*issued)->renews_sha256.empty())
    return Status::Ok();
  std::optional<domain::Tx> own;
  std::optional<store::Enrollment> own_record;
  domain::Tx* txn = locked ? locked->txn : nullptr;
  std::optional<store::Enrollment>* record = locked ? locked->record : nullptr;
  if (!locked) {
    own.emplace(d_.locks, d_.events);
    own->Lock(device_id);
    auto got = d_.enrollments->Get(device_id);
    if (!got.ok()) return got.status();
    own_record = std::move(got.value());
    txn = &*own;
    record = &own_record;
  }
  std::lock_guard bind_lock(bind_mu_);
  const std::optional<store::Enrollment>& prev = *record;
  if (!prev.has_value() || prev->cert_sha256 != (*issued)->renews_sha256) return Status::Ok();
  auto bound = d_.enrollments->BoundTo(identity.cert_sha256);  // another request may have rebound it meanwhile
  if (!bound.ok()) return bound.status();
  if (bound->has_value()) {
    *rebound = **bound == device_id;
    return Status::Ok();
  }
  store::Enrollment e = *prev;
  const std::string old_cert = e.cert_sha256;
  d_.enrollments->Unbind(txn->batch(), old_cert);
  d_.enrollments->Bind(txn->batch(), identity.cert_sha256, device_id);
  e.cert_sha256 = identity.cert_sha256;
  e.cert_not_after_ms = identity.not_after_unix * 1000;
  d_.enrollments->Put(txn->batch(), prev, e);
  plist::Value payload;
  payload.Set("decision", plist::Value::String("allowed"));
  payload.Set("reason", plist::Value::String("renewed"));
  payload.Set("new_cert_sha256", plist::Value::String(identity.cert_sha256));
  payload.Set("old_cert_sha256", plist::Value::String(old_cert));
  payload.Set("serial_number", plist::Value::String(e.serial));
  payload.Set("policy", plist::Value::String(ReenrollPolicyName(options_.reenroll)));
  txn->Emit({.type = events::type::kEnrollmentReenroll, .time_ms = NowMillis(), .enrollment_id = device_id,
             .payload_json = plist::ToJson(payload)});
  *record = e;  // the caller's later Put starts from the rebound record
  if (own) {
    Status st = own->Commit();
    if (!st.ok()) return st;
  }
  log::Info(kLog, "event=identity_renewed enrollment_id={} cert_sha256={} not_after={}", log::Quote(device_id),
            identity.cert_sha256, FormatRfc3339(e.cert_not_after_ms));
  *rebound = true;
  return Status::Ok();
}

const char* ReenrollPolicyName(ReenrollPolicy p) {
  switch (p) {
    case ReenrollPolicy::kAllow: return "allow";
    case ReenrollPolicy::kApprove: return "approve";
    case ReenrollPolicy::kDeny: return "deny";
  }
  return "unknown";
}

Status Service::CheckReenroll(domain::Tx& txn, const CheckinMessage& msg, const auth::Identity& identity,
                              const std::optional<store::Enrollment>& prev, int64_t now, std::string* refusal,
                              bool* renewal) {
  const std::string& id = msg.ids.id;
  std::optional<IssuedInfo> issued;
  if (d_.issued) {
    auto found = d_.issued->Issued(identity.cert_sha256);
    if (!found.ok()) return found.status();
    issued = std::move(found.value());
  }
  const std::string old_cert = prev ? prev->cert_sha256 : std::string();
  auto emit = [&](const char* decision, const char* reason) {
    plist::Value payload;
    payload.Set("decision", plist::Value::String(decision));
    payload.Set("reason", plist::Value::String(reason));
    payload.Set("new_cert_sha256", plist::Value::String(identity.cert_sha256));
    payload.Set("old_cert_sha256", plist::Value::String(old_cert));
    payload.Set("serial_number", plist::Value::String(std::string(msg.body.GetString("SerialNumber"))));
    payload.Set("policy", plist::Value::String(ReenrollPolicyName(options_.reenroll)));
    txn.Emit({.type = events::type::kEnrollmentReenroll, .time_ms = now, .enrollment_id = id,
              .payload_json = plist::ToJson(payload)});
  };
  // Certificates Orchard issued: revoked ones never, and only the device they were issued for.
  if (issued && issued->revoked) {
    *refusal = "certificate is revoked";
    emit("refused", "revoked");
    return Status::Ok();
  }
  if (issued && !issued->udid.empty() && issued->udid != msg.ids.device_id) {
    *refusal = "certificate was issued for another device";
    emit("refused", "issued_for_another_device");
    return Status::Ok();
  }
  // A new enrollment, the same certificate again, or a device that checked out: nothing to decide.
  if (!prev || old_cert.empty() || old_cert == identity.cert_sha256 ||
      prev->state == store::EnrollmentState::kCheckedOut)
    return Status::Ok();
  domain::Reenrollments reenroll(d_.store);
  auto clear_pending = [&]() -> Status {
    auto pending = reenroll.Pending(id);
    if (!pending.ok()) return pending.status();
    if (pending->has_value()) reenroll.ClearPending(txn.batch(), id);
    return Status::Ok();
  };
  if (issued && issued->udid == msg.ids.device_id) {  // Orchard issued it for this device (new profile, renewal)
    *renewal = issued->renews_sha256 == old_cert;
    emit("allowed", *renewal ? "renewed" : "issued_for_this_device");
    return clear_pending();
  }
  auto approved = reenroll.Approved(id);
  if (!approved.ok()) return approved.status();
  if (approved->has_value() && (*approved)->new_cert_sha256 == identity.cert_sha256) {
    reenroll.ClearApproved(txn.batch(), id);
    emit("allowed", "approved");
    return clear_pending();
  }
  switch (options_.reenroll) {
    case ReenrollPolicy::kAllow:
      emit("allowed", "policy_allow");
      return clear_pending();
    case ReenrollPolicy::kDeny:
      *refusal = "enrollment is bound to another certificate (enroll.reenroll = deny)";
      emit("refused", "policy_deny");
      return Status::Ok();
    case ReenrollPolicy::kApprove: {
      domain::ReenrollRequest r;
      r.enrollment_id = id;
      r.new_cert_sha256 = identity.cert_sha256;
      r.old_cert_sha256 = old_cert;
      r.serial = std::string(msg.body.GetString("SerialNumber"));
      r.requested_ms = now;
      reenroll.PutPending(txn.batch(), r);
      *refusal = "enrollment is bound to another certificate; an admin must approve this one "
                 "(POST /v1/enrollments/{id}/reenroll/approve)";
      emit("pending_approval", "policy_approve");
      return Status::Ok();
    }
  }
  return Status::Ok();
}

DeviceResponse Service::TokenUpdate(const CheckinMessage& msg) {
  const std::string& type = msg.message_type;
  const std::string& id = msg.ids.id;
  const std::string* token = msg.body.GetData("Token");
  std::string_view magic = msg.body.GetString("PushMagic");
  if (!token || token->empty()) return Fail(400, type, "TokenUpdate without Token data");
  if (magic.empty()) return Fail(400, type, "TokenUpdate without PushMagic");

  // A user channel also holds its device's lock: creating one counts the
  // device's channels, and two creations must not both pass the limit.
  domain::Tx txn(d_.locks, d_.events);
  txn.LockAll({id, msg.ids.device_id});
  auto prev = d_.enrollments->Get(id);
  if (!prev.ok()) return FromStatus(prev.status(), type);
  store::Enrollment e;
  if (prev->has_value()) {
    e = **prev;
  } else if (msg.ids.id == msg.ids.device_id) {
    return Fail(400, type, "unknown enrollment " + id + ": the device must Authenticate first");
  } else {
    // First TokenUpdate of a user channel creates it under its device.
    auto parent = d_.enrollments->Get(msg.ids.device_id);
    if (!parent.ok()) return FromStatus(parent.status(), type);
    if (!parent->has_value())
      return Fail(400, type, "user channel for unknown device " + msg.ids.device_id);
    std::string declined;
    Status limit = CheckUserChannelLimit(msg.ids.device_id, &declined);
    if (!limit.ok()) return FromStatus(limit, type);
    if (!declined.empty()) {
      log::Warn(kLog, "event=user_channel_declined enrollment_id={} reason=limit limit={}", log::Quote(id),
                options_.max_user_channels);
      return Fail(410, type, declined);
    }
    e.id = id;
    e.type = msg.ids.type;
    e.parent_id = msg.ids.device_id;
    e.udid = (*parent)->udid;
    e.enrollment_id = (*parent)->enrollment_id;
    e.serial = (*parent)->serial;
    e.cert_sha256 = (*parent)->cert_sha256;
    e.cert_not_after_ms = (*parent)->cert_not_after_ms;
    e.authenticated_ms = NowMillis();
  }
  const int64_t now = NowMillis();
  const bool first = e.state != store::EnrollmentState::kEnrolled;
  e.push_token = *token;
  e.push_magic = std::string(magic);
  if (auto t = msg.body.GetString("Topic"); !t.empty()) e.topic = std::string(t);
  if (const std::string* unlock = msg.body.GetData("UnlockToken")) e.unlock_token = *unlock;
  e.awaiting_configuration = msg.body.GetBool("AwaitingConfiguration", false);
  for (auto [key, field] : {std::pair{"UserID", &e.user_id}, {"UserShortName", &e.user_short_name},
                            {"UserLongName", &e.user_long_name},
                            {"EnrollmentUserID", &e.enrollment_user_id}}) {
    if (auto v = msg.body.GetString(key); !v.empty()) *field = std::string(v);
  }
  e.state = store::EnrollmentState::kEnrolled;
  if (first) e.enrolled_ms = now;
  e.token_updates += 1;
  e.last_seen_ms = now;

  d_.enrollments->Put(txn.batch(), *prev, e);
  // A new token (or the same one re-sent) lifts any "token invalid" mark from APNs.
  txn.batch().Delete(store::Cf::kPushState, id);
  plist::Value payload = WithoutSecrets(msg.body);
  payload.Set("FirstTokenUpdate", plist::Value::Bool(first));
  std::string payload_json = plist::ToJson(payload);
  txn.Emit({.type = events::type::kEnrollmentTokenUpdated,
            .time_ms = now,
            .enrollment_id = id,
            .payload_json = payload_json});
  // The first TokenUpdate of an enrollment (after each Authenticate) completes
  // it: enrollment actions hang on this event, never on every TokenUpdate.
  if (first)
    txn.Emit({.type = events::type::kEnrollmentEnrolled,
              .time_ms = now,
              .enrollment_id = id,
              .payload_json = std::move(payload_json)});
  // DDM: a channel with declarations gets its sync command with its enrollment.
  if (first && d_.ddm != nullptr) {
    Status ddm = d_.ddm->OnEnrolled(txn, e, now);
    if (!ddm.ok()) return FromStatus(ddm, type);
  }
  Status st = txn.Commit();
  if (!st.ok()) return FromStatus(st, type);
  log::Info(kLog, "event=token_update enrollment_id={} first={} awaiting_configuration={}", log::Quote(id),
            first, e.awaiting_configuration);
  return Empty(type);
}

DeviceResponse Service::UpdateKnown(const CheckinMessage& msg, const std::string& id,
                                    const char* event_type,
                                    const std::function<void(store::Enrollment&)>& change) {
  const std::string& type = msg.message_type;
  domain::Tx txn(d_.locks, d_.events);
  txn.Lock(id);
  auto prev = d_.enrollments->Get(id);
  if (!prev.ok()) return FromStatus(prev.status(), type);
  if (!prev->has_value()) return Fail(400, type, "unknown enrollment " + id);
  store::Enrollment e = **prev;
  const int64_t now = NowMillis();
  e.last_seen_ms = now;
  change(e);
  d_.enrollments->Put(txn.batch(), *prev, e);
  txn.Emit({.type = event_type, .time_ms = now, .enrollment_id = id,
            .payload_json = EventPayload(msg.body)});
  Status st = txn.Commit();
  if (!st.ok()) return FromStatus(st, type);
  return Empty(type);
}

Result<std::vector<std::string>> Service::UserChannels(const std::string& device_id) {
  // User channel ids are "<device id>:<suffix>" and a device id has no ':'.
  const std::string prefix = device_id + ":";
  std::vector<std::string> ids;
  auto it = d_.store->Scan(store::Cf::kEnrollments, prefix, store::PrefixEnd(prefix));
  for (; it->Valid(); it->Next()) ids.emplace_back(it->key());
  ORCHARD_RETURN_IF_ERROR(it->status());
  return ids;
}

DeviceResponse Service::CheckOut(const CheckinMessage& msg) {
  const std::string& type = msg.message_type;
  const std::string& id = msg.ids.id;
  const bool device = id == msg.ids.device_id;
  // A device's CheckOut (its profile is gone) ends its user channels too. They
  // are listed before locking; a channel is only created under its device's
  // lock, so the list read again under the locks can only differ when one was
  // created in between: then list and lock again.
  constexpr int kAttempts = 3;
  for (int attempt = 1;; ++attempt) {
    std::vector<std::string> channels;
    if (device) {
      auto listed = UserChannels(id);
      if (!listed.ok()) return FromStatus(listed.status(), type);
      channels = std::move(*listed);
    }
    domain::Tx txn(d_.locks, d_.events);
    std::vector<std::string> ids = channels;
    ids.push_back(id);
    txn.LockAll(ids);
    if (device) {
      auto again = UserChannels(id);
      if (!again.ok()) return FromStatus(again.status(), type);
      if (*again != channels) {
        if (attempt < kAttempts) continue;
        return Fail(503, type, "user channels of the device changed during its CheckOut; retry");
      }
    }
    auto prev = d_.enrollments->Get(id);
    if (!prev.ok()) return FromStatus(prev.status(), type);
    if (!prev->has_value()) return Fail(400, type, "unknown enrollment " + id);
    const int64_t now = NowMillis();
    store::Enrollment e = **prev;
    e.last_seen_ms = now;
    e.state = store::EnrollmentState::kCheckedOut;
    e.checked_out_ms = now;
    d_.enrollments->Put(txn.batch(), *prev, e);
    txn.Emit({.type = events::type::kEnrollmentCheckedOut, .time_ms = now, .enrollment_id = id,
              .payload_json = EventPayload(msg.body)});
    if (d_.ddm != nullptr) {
      Status ddm = d_.ddm->OnCheckedOut(txn, e, now);
      if (!ddm.ok()) return FromStatus(ddm, type);
    }
    std::vector<std::string> ended;
    for (const std::string& cid : channels) {
      auto c = d_.enrollments->Get(cid);
      if (!c.ok()) return FromStatus(c.status(), type);
      if (!c->has_value() || (*c)->state != store::EnrollmentState::kEnrolled) continue;
      store::Enrollment u = **c;
      u.state = store::EnrollmentState::kCheckedOut;
      u.checked_out_ms = now;
      d_.enrollments->Put(txn.batch(), *c, u);
      plist::Value payload = WithoutSecrets(msg.body);
      payload.Set("DeviceCheckOut", plist::Value::Bool(true));
      txn.Emit({.type = events::type::kEnrollmentCheckedOut, .time_ms = now, .enrollment_id = cid,
                .payload_json = plist::ToJson(payload)});
      if (d_.ddm != nullptr) {
        Status ddm = d_.ddm->OnCheckedOut(txn, u, now);
        if (!ddm.ok()) return FromStatus(ddm, type);
      }
      ended.push_back(cid);
    }
    Status st = txn.Commit();
    if (!st.ok()) return FromStatus(st, type);
    log::Info(kLog, "event=checkout enrollment_id={} user_channels_ended={}", log::Quote(id), ended.size());
    for (const auto& cid : ended)
      log::Info(kLog, "event=checkout enrollment_id={} reason=device_checked_out", log::Quote(cid));
    return Empty(type);
  }
}

DeviceResponse Service::UserAuthenticate(const CheckinMessage& msg) {
  const std::string& type = msg.message_type;
  if (!options_.user_authenticate_digest) {
    log::Info(kLog, "event=user_authenticate_declined enrollment_id={}", log::Quote(msg.ids.id));
    return Fail(410, type, "user channel is not managed by this server");
  }
  // A channel the device may not create is declined here already.
  auto existing = d_.enrollments->Get(msg.ids.id);
  if (!existing.ok()) return FromStatus(existing.status(), type);
  if (!existing->has_value()) {
    std::string declined;
    Status limit = CheckUserChannelLimit(msg.ids.device_id, &declined);
    if (!limit.ok()) return FromStatus(limit, type);
    if (!declined.empty()) {
      log::Warn(kLog, "event=user_channel_declined enrollment_id={} reason=limit limit={}", log::Quote(msg.ids.id),
                options_.max_user_channels);
      return Fail(410, type, declined);
    }
  }
  if (msg.body.Find("DigestResponse") == nullptr) {
    plist::Value challenge;
    challenge.Set("DigestChallenge", plist::Value::String(""));
    return Plist(type, challenge);
  }
  return Empty(type);
}

Status Service::CheckUserChannelLimit(const std::string& device_id, std::string* declined) {
  // User channel ids are "<device id>:<suffix>" and a device id has no ':', so
  // the device's channels are one key range. Counts at most limit keys.
  const std::string prefix = device_id + ":";
  const auto limit = static_cast<size_t>(std::max(options_.max_user_channels, 0));
  size_t channels = 0;
  auto it = d_.store->Scan(store::Cf::kEnrollments, prefix, store::PrefixEnd(prefix));
  for (; it->Valid() && channels < limit; it->Next()) ++channels;
  ORCHARD_RETURN_IF_ERROR(it->status());
  if (channels >= limit)
    *declined = "device " + device_id + " already has " + std::to_string(channels) +
                " user channels, the limit (checkin.max_user_channels)";
  return Status::Ok();
}

DeviceResponse Service::SetBootstrapToken(const CheckinMessage& msg) {
  const std::string* token = msg.body.GetData("BootstrapToken");
  auto r = UpdateKnown(msg, msg.ids.device_id, events::type::kBootstrapTokenSet,
                       [&](store::Enrollment& e) { e.bootstrap_token = token ? *token : std::string(); });
  if (r.status == 200)
    log::Info(kLog, "event=bootstrap_token_set enrollment_id={} present={}", log::Quote(msg.ids.device_id),
              token != nullptr);
  return r;
}

DeviceResponse Service::Declarative(const CheckinMessage& msg) {
  const std::string& type = msg.message_type;
  if (d_.ddm == nullptr) return Fail(400, type, "declarative management is not configured on this server");
  const plist::Value* endpoint = msg.body.Find("Endpoint");
  if (endpoint == nullptr || endpoint->AsString() == nullptr || endpoint->AsString()->empty())
    return Fail(400, type, "Endpoint must be a non-empty string");
  // declaration/<kind>/<Identifier>: 64-byte identifiers and a kind name fit easily.
  constexpr size_t kMaxEndpointBytes = 512;
  if (endpoint->AsString()->size() > kMaxEndpointBytes) return Fail(400, type, "Endpoint is too long");
  DeclarativeRequest req;
  req.enrollment_id = msg.ids.id;
  req.device_id = msg.ids.device_id;
  req.endpoint = *endpoint->AsString();
  if (const plist::Value* data = msg.body.Find("Data")) {
    if (data->AsData() == nullptr) return Fail(400, type, "Data must be <data>");
    req.data = data->AsData()->bytes;
    req.has_data = true;
  }
  DeviceResponse r = d_.ddm->Checkin(req);
  if (r.kind.empty()) r.kind = type;
  return r;
}

DeviceResponse Service::GetBootstrapToken(const CheckinMessage& msg) {
  const std::string& type = msg.message_type;
  auto e = d_.enrollments->Get(msg.ids.device_id);
  if (!e.ok()) return FromStatus(e.status(), type);
  if (!e->has_value()) return Fail(400, type, "unknown enrollment " + msg.ids.device_id);
  if ((*e)->bootstrap_token.empty()) return Empty(type);
  plist::Value v;
  v.Set("BootstrapToken", plist::Value::DataValue((*e)->bootstrap_token));
  return Plist(type, v);
}

DeviceResponse Service::HandleReport(const DeviceRequest& request) {
  auto report = DecodeReport(request.body, options_.limits);
  if (!report.ok()) return FromStatus(report.status(), "report");
  const Report& r = *report;
  const std::string& id = r.ids.id;
  domain::Tx txn(d_.locks, d_.events);
  txn.Lock(id);
  auto prev = d_.enrollments->Get(id);
  if (!prev.ok()) return FromStatus(prev.status(), r.status);
  auth::Identity identity;
  const std::string* bound =
      prev->has_value() && id == r.ids.device_id ? &(*prev)->cert_sha256 : nullptr;
  // A user channel's report never rebinds the device's certificate (lock order: the device first).
  const Locked locked = id == r.ids.device_id ? Locked{&txn, &prev.value()} : Locked{nullptr, nullptr};
  Status st = CheckIdentity(request, r.status, r.ids.device_id, &identity, bound, &locked);
  if (!st.ok()) {
    log::Warn(kLog, "event=identity_refused status={} enrollment_id={} command_uuid={} reason={}",
              log::Quote(r.status), log::Quote(id), log::Quote(r.command_uuid), log::Quote(st.message()));
    return FromStatus(st, r.status);
  }
  if (!prev->has_value())
    return Fail(400, r.status, "unknown enrollment " + id + ": the device must Authenticate first");
  if ((*prev)->blocked) {
    log::Info(kLog, "event=blocked_device_unenrolled enrollment_id={}", log::Quote(id));
    return Fail(401, r.status, "device is blocked");
  }
  if (id != r.ids.device_id) {
    auto parent = d_.enrollments->Get(r.ids.device_id);
    if (parent.ok() && parent->has_value() && (*parent)->blocked)
      return Fail(401, r.status, "device is blocked");
  }

  const int64_t now = NowMillis();
  store::Enrollment e = **prev;
  e.last_seen_ms = now;
  if (r.status == "Idle") e.session += 1;  // a new command session
  d_.enrollments->Put(txn.batch(), *prev, e);

  // Log lines describe committed changes: collected here, written after Commit.
  std::string reported_type;      // request type of the queued command this report is about
  bool reported_known = false;
  std::vector<std::string> exclude;  // entries this batch finishes or fails
  if (r.status == "Idle") {
    if (d_.interest == nullptr || d_.interest->Wanted(events::type::kDeviceIdle))
      txn.Emit({.type = events::type::kDeviceIdle, .time_ms = now, .enrollment_id = id});
  } else {
    auto found = d_.queue->Find(id, r.command_uuid);
    if (!found.ok()) return FromStatus(found.status(), r.status);
    if (!found->has_value()) {
      // Either a repeat of a report we already stored, or a command we never queued.
      auto existing = d_.queue->GetResult(id, r.command_uuid);
      if (!existing.ok()) return FromStatus(existing.status(), r.status);
      if (existing->has_value())
        log::Debug(kLog, "event=repeated_report enrollment_id={} command_uuid={} status={}", log::Quote(id),
                   log::Quote(r.command_uuid), log::Quote(r.status));
      else
        log::Warn(kLog, "event=unknown_command_report enrollment_id={} command_uuid={} status={}",
                  log::Quote(id), log::Quote(r.command_uuid), log::Quote(r.status));
    } else {
      queue::Located loc = std::move(**found);
      exclude.push_back(loc.key);
      reported_known = true;
      reported_type = loc.entry.request_type;
      const char* event_type = events::type::kCommandAcknowledged;
      // A command answered NotNow is not handed out again in the same session,
      // so a second NotNow for it in this session is the first one repeated
      // (our answer was lost). (Delivery times cannot tell: two sessions may
      // deliver it within the same millisecond.)
      const bool repeated_not_now = r.status == "NotNow" &&
                                    loc.entry.status == store::QueueStatus::kNotNow &&
                                    loc.entry.not_now_session == e.session;
      if (repeated_not_now) {
        // Nothing new happened.
        event_type = nullptr;
      } else if (r.status == "NotNow") {
        loc.entry.status = store::QueueStatus::kNotNow;
        loc.entry.not_now_count += 1;
        loc.entry.not_now_for_sent_ms = loc.entry.last_sent_ms;
        loc.entry.not_now_session = e.session;
        d_.queue->Update(txn.batch(), id, loc);
        if (loc.entry.deliveries != 0) d_.queue->MarkAnswered(txn.batch(), id, loc);
        event_type = events::type::kCommandNotNow;
      } else {
        store::CommandResult res;
        res.command_uuid = r.command_uuid;
        res.request_type = loc.entry.request_type;
        res.status = r.status;
        res.raw = std::string(request.body);
        if (const plist::Value* chain = r.body.Find("ErrorChain")) res.error_chain = plist::ToJson(*chain);
        res.enqueued_ms = loc.entry.enqueued_ms;
        res.received_ms = now;
        res.not_now_count = loc.entry.not_now_count;
        res.origin = loc.entry.origin;
        res.trigger = loc.entry.trigger;
        d_.queue->Remove(txn.batch(), id, loc);
        d_.queue->PutResult(txn.batch(), id, res);
        if (r.status == "Acknowledged" && res.request_type == "CertificateList") {
          Status warned = WarnReportedCertificates(txn, id, r.body, now);
          if (!warned.ok()) return FromStatus(warned, r.status);
        }
        if (r.status == "Acknowledged" && res.request_type == "DeclarativeManagement" && d_.ddm != nullptr) {
          Status ddm = d_.ddm->OnSyncAcknowledged(txn, id, r.command_uuid, now);
          if (!ddm.ok()) return FromStatus(ddm, r.status);
        }
        if (r.status == "Error") event_type = events::type::kCommandError;
        if (r.status == "CommandFormatError") event_type = events::type::kCommandFormatError;
      }
      if (event_type)
        txn.Emit({.type = event_type,
                  .time_ms = now,
                  .enrollment_id = id,
                  .command_uuid = r.command_uuid,
                  .request_type = loc.entry.request_type,
                  .payload_json = EventPayload(r.body)});
    }
  }

  // The next command. NotNow answers of this session wait for the next one; a
  // command delivered max_deliveries times without any report is failed.
  std::vector<store::QueueEntry> failed;
  std::optional<queue::Located> next;
  for (;;) {
    auto candidate = d_.queue->Next(id, e.session, exclude);
    if (!candidate.ok()) return FromStatus(candidate.status(), r.status);
    if (!candidate->has_value()) break;
    queue::Located& loc = **candidate;
    if (options_.max_deliveries <= 0 || loc.entry.deliveries < options_.max_deliveries) {
      next = std::move(loc);
      break;
    }
    if (failed.size() == kMaxFailuresPerReport) break;  // the rest on the next report
    FailUndelivered(txn, id, loc, now);
    exclude.push_back(loc.key);
    failed.push_back(std::move(loc.entry));
  }
  DeviceResponse resp = Empty(r.status);
  if (next) {
    d_.queue->MarkSent(txn.batch(), id, *next, now);
    resp.content_type = "application/xml; charset=UTF-8";
    resp.body = next->entry.plist;
  }
  st = txn.Commit();
  if (!st.ok()) return FromStatus(st, r.status);
  if (reported_known)
    log::Info(kLog, "event=command_report enrollment_id={} command_uuid={} request_type={} status={}",
              log::Quote(id), log::Quote(r.command_uuid), log::Quote(reported_type), log::Quote(r.status));
  for (const auto& f : failed)
    log::Warn(kLog,
              "event=command_failed enrollment_id={} command_uuid={} request_type={} deliveries={} "
              "reason=no_report",
              log::Quote(id), log::Quote(f.command_uuid), log::Quote(f.request_type), f.deliveries);
  if (next)
    log::Info(kLog, "event=command_sent enrollment_id={} command_uuid={} request_type={} delivery={}",
              log::Quote(id), log::Quote(next->entry.command_uuid), log::Quote(next->entry.request_type), next->entry.deliveries + 1);
  return resp;
}

void Service::FailUndelivered(domain::Tx& txn, const std::string& id,
                              const queue::Located& loc, int64_t now) {
  const std::string reason = "the device did not report on the command after " +
                             std::to_string(loc.entry.deliveries) + " deliveries";
  plist::Value detail;
  detail.Set("ErrorDomain", plist::Value::String("Orchard"));
  detail.Set("ErrorCode", plist::Value::Integer(1));
  detail.Set("LocalizedDescription", plist::Value::String(reason));
  detail.Set("USEnglishDescription", plist::Value::String(reason));
  store::CommandResult res;
  res.command_uuid = loc.entry.command_uuid;
  res.request_type = loc.entry.request_type;
  res.status = kFailedStatus;
  res.error_chain = plist::ToJson(plist::Value::MakeArray({detail}));
  res.enqueued_ms = loc.entry.enqueued_ms;
  res.received_ms = now;
  res.not_now_count = loc.entry.not_now_count;
  res.origin = loc.entry.origin;
  res.trigger = loc.entry.trigger;
  d_.queue->Remove(txn.batch(), id, loc);
  d_.queue->PutResult(txn.batch(), id, res);
  plist::Value payload;
  payload.Set("reason", plist::Value::String(reason));
  payload.Set("deliveries", plist::Value::Integer(loc.entry.deliveries));
  txn.Emit({.type = events::type::kCommandFailed,
            .time_ms = now,
            .enrollment_id = id,
            .command_uuid = loc.entry.command_uuid,
            .request_type = loc.entry.request_type,
            .payload_json = plist::ToJson(payload)});
}


Status Service::WarnReportedCertificates(domain::Tx& txn, const std::string& id, const plist::Value& report,
                                         int64_t now) {
  constexpr size_t kMaxCertificates = 200;
  constexpr int64_t kDay = 86400 * 1000LL;
  if (options_.cert_warn_days.empty()) return Status::Ok();
  const plist::Value* list = report.Find("CertificateList");
  if (!list || !list->AsArray()) return Status::Ok();
  size_t n = 0;
  for (const auto& item : *list->AsArray()) {
    if (++n > kMaxCertificates) break;
    const std::string* der = item.GetData("Data");
    if (!der) continue;
    auto cert = auth::SummarizeCertificate(*der);
    if (!cert.ok()) continue;  // a device's bad bytes are not our error
    const int64_t days_left = (cert->not_after_unix * 1000 - now) / kDay;
    int crossed = -1;
    for (auto it = options_.cert_warn_days.rbegin(); it != options_.cert_warn_days.rend(); ++it)
      if (days_left <= *it) crossed = *it;
    if (crossed < 0) continue;
    // Once per threshold and certificate: the marker holds the smallest warned.
    std::string key = "certwarn/" + id;
    key.push_back('\0');
    key += cert->sha256;
    auto seen = d_.store->Get(store::Cf::kMeta, key);
    if (!seen.ok()) return seen.status();
    if (seen->has_value() && std::atoi((*seen)->c_str()) <= crossed) continue;
    txn.batch().Put(store::Cf::kMeta, key, std::to_string(crossed));
    plist::Value payload;
    payload.Set("kind", plist::Value::String("device_reported"));
    if (!cert->common_name.empty()) payload.Set("common_name", plist::Value::String(cert->common_name));
    payload.Set("is_identity", plist::Value::Bool(item.GetBool("IsIdentity", false)));
    payload.Set("sha256", plist::Value::String(cert->sha256));
    payload.Set("not_after", plist::Value::String(FormatRfc3339(cert->not_after_unix * 1000)));
    payload.Set("days_left", plist::Value::Integer(days_left));
    payload.Set("threshold_days", plist::Value::Integer(crossed));
    txn.Emit({.type = events::type::kCertificateExpiring, .time_ms = now, .enrollment_id = id,
              .payload_json = plist::ToJson(payload)});
  }
  return Status::Ok();
}

}  // namespace orchard::protocol
