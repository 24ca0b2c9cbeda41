// The device protocol, in process: real RocksDB in a temp dir, real auth with a
// test CA, the Service called directly (the HTTP layer is covered by the
// integration tests).
#include <catch2/catch.hpp>

#include <filesystem>

#include "auth/auth.h"
#include "domain/reenroll.h"
#include "util/encoding.h"
#include "events/events.h"
#include "plist/plist.h"
#include "protocol/service.h"
#include "queue/queue.h"
#include "store/store.h"
#include "support/orchardd_process.h"
#include "support/test_pki.h"

using namespace orchard;
using plist::Value;

namespace {

constexpr const char* kCheckin = "application/x-apple-aspen-mdm-checkin";

struct Harness {
  std::string dir = testing::MakeTempDir("orchard-service");
  std::unique_ptr<testing::TestCa> ca = testing::TestCa::Create("Device CA");
  std::unique_ptr<store::Store> store;
  std::unique_ptr<events::EventLog> events;
  std::unique_ptr<queue::CommandQueue> queue;
  std::unique_ptr<domain::Enrollments> enrollments;
  domain::EnrollmentLocks locks;
  std::unique_ptr<auth::Authenticator> auth;
  std::unique_ptr<protocol::Service> service;

  explicit Harness(bool digest = false) : Harness(DigestOptions(digest)) {}
  explicit Harness(const protocol::ServiceOptions& o, const events::Interest* interest = nullptr,
                   protocol::IssuedCertLookup* issued = nullptr, protocol::DeclarativeHandler* ddm = nullptr) {
    REQUIRE(ca->WriteCertPem(dir + "/ca.pem"));
    store = std::move(store::Store::Open({.path = dir + "/db"}).value());
    events = std::move(events::EventLog::Open(store.get()).value());
    queue = std::make_unique<queue::CommandQueue>(store.get());
    enrollments = std::make_unique<domain::Enrollments>(store.get());
    auth = std::move(auth::Authenticator::Create({.device_ca_files = {dir + "/ca.pem"}}).value());
    service = std::make_unique<protocol::Service>(
        o, protocol::Deps{store.get(), events.get(), queue.get(), auth.get(), enrollments.get(), &locks,
                          interest, issued, ddm});
  }
  ~Harness() {
    service.reset();
    auth.reset();
    enrollments.reset();
    queue.reset();
    events.reset();
    store.reset();
    std::filesystem::remove_all(dir);
  }

  static protocol::ServiceOptions DigestOptions(bool digest) {
    protocol::ServiceOptions o;
    o.user_authenticate_digest = digest;
    return o;
  }

  // Identified by an Mdm-Signature made with the named digest (no certificate header).
  protocol::DeviceResponse SendSigned(const testing::Identity& id, const Value& msg, bool checkin,
                                      const char* digest) {
    std::string body = plist::ToXml(msg);
    std::string signature = id.MdmSignatureWith(body, digest);
    protocol::DeviceRequest req;
    req.content_type = checkin ? kCheckin : "application/x-apple-aspen-mdm";
    req.body = body;
    req.presented.mdm_signature = signature;
    req.presented.body = body;
    return service->Handle(req);
  }

  protocol::DeviceResponse Send(const testing::Identity& id, const Value& msg, bool checkin) {
    std::string body = plist::ToXml(msg);
    std::string header = id.Rfc9440Header();
    protocol::DeviceRequest req;
    req.content_type = checkin ? kCheckin : "application/x-apple-aspen-mdm";
    req.body = body;
    req.presented.cert_header = header;
    req.presented.body = body;
    return service->Handle(req);
  }

  void Enqueue(const std::string& id, const std::string& uuid, const std::string& type, int priority = 0) {
    Value cmd;
    cmd.Set("CommandUUID", Value::String(uuid));
    Value inner;
    inner.Set("RequestType", Value::String(type));
    cmd.Set("Command", inner);
    events::Transaction txn(events.get());
    REQUIRE(queue->Enqueue(txn.batch(), id, {uuid, type, plist::ToXml(cmd), priority, "test"}, 1).ok());
    REQUIRE(events->Commit(txn).ok());
  }

  std::vector<events::Event> Events() { return events->Read(0, 100000).value(); }
};

Value Msg(std::initializer_list<std::pair<const char*, Value>> kv) {
  Value v;
  for (auto& [k, val] : kv) v.Set(k, val);
  return v;
}
Value S(const char* s) { return Value::String(s); }

Value Authenticate(const char* udid, const char* serial = "SERIAL1") {
  return Msg({{"MessageType", S("Authenticate")}, {"UDID", S(udid)}, {"SerialNumber", S(serial)},
              {"Model", S("iPhone15,2")}, {"OSVersion", S("17.4")}, {"BuildVersion", S("21E219")},
              {"ProductName", S("iPhone15,2")}, {"DeviceName", S("Test phone")},
              {"IMEI", S("35 000000 000000 0")}, {"MEID", S("35000000000000")},
              {"Topic", S("com.apple.mgmt.test")}});
}

Value TokenUpdate(const char* udid, bool awaiting = false) {
  return Msg({{"MessageType", S("TokenUpdate")}, {"UDID", S(udid)},
              {"Token", Value::DataValue(std::string(32, '\x01'))}, {"PushMagic", S("MAGIC-1")},
              {"Topic", S("com.apple.mgmt.test")},
              {"UnlockToken", Value::DataValue("unlock")},
              {"AwaitingConfiguration", Value::Bool(awaiting)}});
}

Value Report(const char* udid, const char* status, const char* uuid = nullptr) {
  Value v = Msg({{"UDID", S(udid)}, {"Status", S(status)}});
  if (uuid) v.Set("CommandUUID", S(uuid));
  return v;
}

std::string UuidOf(const protocol::DeviceResponse& r) {
  auto v = plist::ParseXml(r.body);
  if (!v.ok()) return "";
  return std::string(v->GetString("CommandUUID"));
}

}  // namespace

TEST_CASE("Authenticate then TokenUpdate enrolls and stores inventory", "[protocol]") {
  Harness h;
  auto dev = h.ca->Issue();
  auto r = h.Send(dev, Authenticate("UDID-1"), true);
  REQUIRE(r.status == 200);
  CHECK(r.body.empty());
  auto e = h.enrollments->Get("UDID-1").value();
  REQUIRE(e);
  CHECK(e->state == store::EnrollmentState::kAuthenticated);
  CHECK(e->serial == "SERIAL1");
  CHECK(e->model == "iPhone15,2");
  CHECK(e->os_version == "17.4");
  CHECK(e->build_version == "21E219");
  CHECK(e->product_name == "iPhone15,2");
  CHECK(e->device_name == "Test phone");
  CHECK(e->imei == "35 000000 000000 0");
  CHECK(e->meid == "35000000000000");
  CHECK(e->cert_sha256 == dev.Sha256Hex());

  REQUIRE(h.Send(dev, TokenUpdate("UDID-1", true), true).status == 200);
  e = h.enrollments->Get("UDID-1").value();
  CHECK(e->state == store::EnrollmentState::kEnrolled);
  CHECK(e->push_token == std::string(32, '\x01'));
  CHECK(e->push_magic == "MAGIC-1");
  CHECK(e->unlock_token == "unlock");
  CHECK(e->awaiting_configuration);
  CHECK(h.enrollments->CountInState(store::EnrollmentState::kEnrolled).value() == 1);

  // A later TokenUpdate without UnlockToken keeps the stored one and is not "first".
  Value again = TokenUpdate("UDID-1");
  again.Erase("UnlockToken");
  again.Set("PushMagic", S("MAGIC-2"));
  REQUIRE(h.Send(dev, again, true).status == 200);
  e = h.enrollments->Get("UDID-1").value();
  CHECK(e->push_magic == "MAGIC-2");
  CHECK(e->unlock_token == "unlock");
  CHECK_FALSE(e->awaiting_configuration);
  CHECK(e->token_updates == 2);

  auto evs = h.Events();
  REQUIRE(evs.size() == 4);
  CHECK(evs[0].type == "enrollment.authenticated");
  CHECK(evs[1].type == "enrollment.token_updated");
  CHECK(evs[1].payload_json.find("\"FirstTokenUpdate\":true") != std::string::npos);
  // The first TokenUpdate also completes the enrollment: enrollment.enrolled, once.
  CHECK(evs[2].type == "enrollment.enrolled");
  CHECK(evs[3].type == "enrollment.token_updated");
  CHECK(evs[3].payload_json.find("\"FirstTokenUpdate\":false") != std::string::npos);
  // Secrets never reach events.
  for (const auto& ev : evs) {
    CHECK(ev.payload_json.find("MAGIC") == std::string::npos);
    CHECK(ev.payload_json.find("UnlockToken") == std::string::npos);
  }
}

TEST_CASE("Idle with an empty queue answers a zero-length 200", "[protocol]") {
  Harness h;
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  auto r = h.Send(dev, Report("U", "Idle"), false);
  CHECK(r.status == 200);
  CHECK(r.body.empty());
  CHECK(h.Events().back().type == "device.idle");
}

TEST_CASE("commands are delivered in FIFO order, priority first, and results stored", "[protocol]") {
  Harness h;
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  h.Enqueue("U", "C1", "DeviceInformation");
  h.Enqueue("U", "C2", "SecurityInfo");
  h.Enqueue("U", "C3", "ProfileList", 10);

  auto r = h.Send(dev, Report("U", "Idle"), false);
  REQUIRE(r.status == 200);
  CHECK(r.content_type.find("xml") != std::string::npos);
  CHECK(UuidOf(r) == "C3");
  Value ack = Report("U", "Acknowledged", "C3");
  ack.Set("ProfileList", Value::MakeArray());
  r = h.Send(dev, ack, false);
  CHECK(UuidOf(r) == "C1");
  Value err = Report("U", "Error", "C1");
  Value chain = Value::MakeArray();
  chain.AsArray()->push_back(Msg({{"ErrorCode", Value::Integer(12021)}, {"ErrorDomain", S("MCMDMErrorDomain")},
                                   {"LocalizedDescription", S("bad")}, {"USEnglishDescription", S("bad")}}));
  err.Set("ErrorChain", chain);
  r = h.Send(dev, err, false);
  CHECK(UuidOf(r) == "C2");
  r = h.Send(dev, Report("U", "CommandFormatError", "C2"), false);
  CHECK(r.status == 200);
  CHECK(r.body.empty());

  auto res = h.queue->GetResult("U", "C1").value();
  REQUIRE(res);
  CHECK(res->status == "Error");
  CHECK(res->request_type == "DeviceInformation");
  CHECK(res->error_chain.find("12021") != std::string::npos);
  CHECK(res->raw.find("<key>ErrorChain</key>") != std::string::npos);
  CHECK(h.queue->GetResult("U", "C2").value()->status == "CommandFormatError");
  CHECK(h.queue->GetResult("U", "C3").value()->status == "Acknowledged");
  CHECK(h.queue->Depth().value() == 0);
  std::vector<std::string> types;
  for (auto& e : h.Events()) types.push_back(e.type);
  CHECK(std::count(types.begin(), types.end(), "command.acknowledged") == 1);
  CHECK(std::count(types.begin(), types.end(), "command.error") == 1);
  CHECK(std::count(types.begin(), types.end(), "command.format_error") == 1);
}

TEST_CASE("NotNow keeps the command, skips it for the session, re-sends it next session", "[protocol]") {
  Harness h;
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  h.Enqueue("U", "A", "InstallProfile");
  h.Enqueue("U", "B", "DeviceInformation");
  auto r = h.Send(dev, Report("U", "Idle"), false);
  REQUIRE(UuidOf(r) == "A");
  r = h.Send(dev, Report("U", "NotNow", "A"), false);
  CHECK(UuidOf(r) == "B");  // not A again in the same session
  size_t not_now_events = 0;
  for (auto& e : h.Events()) not_now_events += e.type == "command.not_now";
  // The same NotNow again (as if our answer had been lost) changes nothing.
  r = h.Send(dev, Report("U", "NotNow", "A"), false);
  CHECK(UuidOf(r) == "B");
  size_t after_repeat = 0;
  for (auto& e : h.Events()) after_repeat += e.type == "command.not_now";
  CHECK(after_repeat == not_now_events);
  r = h.Send(dev, Report("U", "Acknowledged", "B"), false);
  CHECK(r.body.empty());    // session ends; A is still queued
  auto q = h.queue->List("U", 10).value();
  REQUIRE(q.size() == 1);
  CHECK(q[0].command_uuid == "A");
  CHECK(q[0].not_now_count == 1);
  r = h.Send(dev, Report("U", "Idle"), false);  // a new session
  CHECK(UuidOf(r) == "A");
  r = h.Send(dev, Report("U", "Acknowledged", "A"), false);
  CHECK(r.body.empty());
  CHECK(h.queue->GetResult("U", "A").value()->not_now_count == 1);
}

TEST_CASE("repeated and unknown reports are idempotent and answered with the next command", "[protocol]") {
  Harness h;
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  h.Enqueue("U", "A", "DeviceInformation");
  h.Enqueue("U", "B", "SecurityInfo");
  REQUIRE(UuidOf(h.Send(dev, Report("U", "Idle"), false)) == "A");
  REQUIRE(UuidOf(h.Send(dev, Report("U", "Acknowledged", "A"), false)) == "B");
  size_t events_before = h.Events().size();
  auto r = h.Send(dev, Report("U", "Acknowledged", "A"), false);  // repeat
  CHECK(r.status == 200);
  CHECK(UuidOf(r) == "B");
  r = h.Send(dev, Report("U", "Acknowledged", "NEVER-QUEUED"), false);
  CHECK(r.status == 200);
  CHECK(UuidOf(r) == "B");
  // Only the delivery bookkeeping changed: no new command events.
  for (size_t i = events_before; i < h.Events().size(); ++i)
    CHECK(h.Events()[i].type.rfind("command.", 0) != 0);
}

TEST_CASE("bad reports are refused with 400 and store nothing", "[protocol]") {
  Harness h;
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  size_t before = h.Events().size();
  CHECK(h.Send(dev, Msg({{"UDID", S("U")}}), false).status == 400);                    // no Status
  CHECK(h.Send(dev, Report("U", "Sleeping"), false).status == 400);                    // unknown Status
  CHECK(h.Send(dev, Report("U", "Acknowledged"), false).status == 400);                // no CommandUUID
  CHECK(h.Send(dev, Msg({{"Status", S("Idle")}}), false).status == 400);               // no UDID
  protocol::DeviceRequest req;
  req.body = "<plist><dict><key>Status</key>";
  req.presented.cert_header = "";
  auto r = h.service->Handle(req);
  CHECK(r.status == 400);
  CHECK(h.Events().size() == before);
}

TEST_CASE("every check-in MessageType gets its answer", "[protocol]") {
  Harness h;
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);

  auto ua = h.Send(dev, Msg({{"MessageType", S("UserAuthenticate")}, {"UDID", S("U")}, {"UserID", S("USER-1")}}), true);
  CHECK(ua.status == 410);

  auto get_none = h.Send(dev, Msg({{"MessageType", S("GetBootstrapToken")}, {"UDID", S("U")}}), true);
  CHECK(get_none.status == 200);
  CHECK(get_none.body.empty());
  CHECK(h.Send(dev, Msg({{"MessageType", S("SetBootstrapToken")}, {"UDID", S("U")},
                         {"BootstrapToken", Value::DataValue("boot-secret")}}), true).status == 200);
  auto get = h.Send(dev, Msg({{"MessageType", S("GetBootstrapToken")}, {"UDID", S("U")}}), true);
  REQUIRE(get.status == 200);
  auto gv = plist::ParseXml(get.body).value();
  REQUIRE(gv.GetData("BootstrapToken"));
  CHECK(*gv.GetData("BootstrapToken") == "boot-secret");

  auto tok = h.Send(dev, Msg({{"MessageType", S("GetToken")}, {"UDID", S("U")},
                              {"TokenServiceType", S("com.apple.maid")}}), true);
  CHECK(tok.status == 400);
  CHECK(tok.error.find("com.apple.maid") != std::string::npos);
  auto ddm = h.Send(dev, Msg({{"MessageType", S("DeclarativeManagement")}, {"UDID", S("U")},
                              {"Endpoint", S("tokens")}}), true);
  CHECK(ddm.status == 400);
  CHECK(ddm.error.find("not configured") != std::string::npos);
  CHECK(h.Send(dev, Msg({{"MessageType", S("Bogus")}, {"UDID", S("U")}}), true).status == 400);

  CHECK(h.Send(dev, Msg({{"MessageType", S("CheckOut")}, {"UDID", S("U")}}), true).status == 200);
  CHECK(h.enrollments->Get("U").value()->state == store::EnrollmentState::kCheckedOut);
  CHECK(h.Events().back().type == "enrollment.checked_out");
}

TEST_CASE("UserAuthenticate digest mode challenges then accepts", "[protocol]") {
  Harness h(/*digest=*/true);
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  auto first = h.Send(dev, Msg({{"MessageType", S("UserAuthenticate")}, {"UDID", S("U")}, {"UserID", S("USER-1")}}), true);
  REQUIRE(first.status == 200);
  auto v = plist::ParseXml(first.body).value();
  REQUIRE(v.Find("DigestChallenge"));
  CHECK(v.GetString("DigestChallenge").empty());
  auto second = h.Send(dev, Msg({{"MessageType", S("UserAuthenticate")}, {"UDID", S("U")}, {"UserID", S("USER-1")},
                                 {"DigestResponse", S("x")}}), true);
  CHECK(second.status == 200);
  CHECK(second.body.empty());
}

TEST_CASE("user channel, Shared iPad and User Enrollment ids hang off the device", "[protocol]") {
  Harness h;
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  Value user = TokenUpdate("U");
  user.Set("UserID", S("USER-1"));
  user.Set("UserShortName", S("alice"));
  user.Set("UserLongName", S("Alice A"));
  REQUIRE(h.Send(dev, user, true).status == 200);
  auto ue = h.enrollments->Get("U:USER-1").value();
  REQUIRE(ue);
  CHECK(ue->type == store::EnrollmentType::kUser);
  CHECK(ue->parent_id == "U");
  CHECK(ue->user_short_name == "alice");
  CHECK(ue->state == store::EnrollmentState::kEnrolled);

  Value shared = TokenUpdate("U");
  shared.Set("UserID", S("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"));
  shared.Set("UserShortName", S("bob"));
  REQUIRE(h.Send(dev, shared, true).status == 200);
  CHECK(h.enrollments->Get("U:bob").value()->type == store::EnrollmentType::kSharedIpadUser);

  // User channel commands go to the user's own queue.
  h.Enqueue("U:USER-1", "UC", "ProfileList");
  Value idle = Report("U", "Idle");
  idle.Set("UserID", S("USER-1"));
  CHECK(UuidOf(h.Send(dev, idle, false)) == "UC");
  CHECK(h.Send(dev, Report("U", "Idle"), false).body.empty());  // device channel queue is empty

  // User Enrollment: EnrollmentID and EnrollmentUserID.
  auto byod = h.ca->Issue();
  REQUIRE(h.Send(byod, Msg({{"MessageType", S("Authenticate")}, {"EnrollmentID", S("E-1")}}), true).status == 200);
  CHECK(h.enrollments->Get("E-1").value()->type == store::EnrollmentType::kUserEnrollmentDevice);
  Value uet = Msg({{"MessageType", S("TokenUpdate")}, {"EnrollmentID", S("E-1")},
                   {"EnrollmentUserID", S("EU-1")}, {"Token", Value::DataValue("t")},
                   {"PushMagic", S("m")}});
  REQUIRE(h.Send(byod, uet, true).status == 200);
  CHECK(h.enrollments->Get("E-1:EU-1").value()->type == store::EnrollmentType::kUserEnrollmentUser);
}

TEST_CASE("certificate binding refusals", "[protocol][auth]") {
  Harness h;
  auto dev = h.ca->Issue();
  auto other = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U1"), true).status == 200);
  REQUIRE(h.Send(other, Authenticate("U2"), true).status == 200);

  // A certificate bound to another enrollment is refused with 403, never 401.
  auto r = h.Send(other, TokenUpdate("U1"), true);
  CHECK(r.status == 403);
  CHECK(h.Send(other, Report("U1", "Idle"), false).status == 403);
  CHECK(h.Send(other, Authenticate("U1"), true).status == 403);
  // An unbound (but valid) certificate must Authenticate first.
  auto fresh = h.ca->Issue();
  CHECK(h.Send(fresh, Report("U1", "Idle"), false).status == 403);
  // A certificate from another CA is refused.
  auto foreign_ca = testing::TestCa::Create("Other CA");
  CHECK(h.Send(foreign_ca->Issue(), Report("U1", "Idle"), false).status == 403);
  // No certificate at all is refused outside insecure mode.
  protocol::DeviceRequest req;
  std::string body = plist::ToXml(Report("U1", "Idle"));
  req.body = body;
  CHECK(h.service->Handle(req).status == 403);
  // Refusals stored nothing.
  CHECK(h.enrollments->Get("U1").value()->push_token.empty());

  // Another certificate for the enrolled U1 (not issued by Orchard for it) waits for an
  // admin's approval (the default enroll.reenroll = approve); once approved it is accepted
  // through a new Authenticate and the old one stops working.
  REQUIRE(h.Send(dev, TokenUpdate("U1"), true).status == 200);
  auto renewed = h.ca->Issue();
  CHECK(h.Send(renewed, Authenticate("U1"), true).status == 403);
  domain::Reenrollments reenroll(h.store.get());
  auto pending = reenroll.Pending("U1").value();
  REQUIRE(pending);
  store::Batch approve;
  reenroll.PutApproved(approve, *pending);
  REQUIRE(h.store->Write(approve).ok());
  REQUIRE(h.Send(renewed, Authenticate("U1"), true).status == 200);
  CHECK(h.Send(renewed, Report("U1", "Idle"), false).status == 200);
  CHECK(h.Send(dev, Report("U1", "Idle"), false).status == 403);
  CHECK_FALSE(reenroll.Approved("U1").value());  // used once
  CHECK_FALSE(reenroll.Pending("U1").value());
}

namespace {
// The enroll module's view of issued certificates, as the tests set it.
class FakeIssued : public protocol::IssuedCertLookup {
 public:
  Result<std::optional<protocol::IssuedInfo>> Issued(const std::string& sha) override {
    auto it = certs.find(sha);
    if (it == certs.end()) return std::optional<protocol::IssuedInfo>();
    return std::optional<protocol::IssuedInfo>(it->second);
  }
  bool Revoked(const std::string& sha) override {
    auto it = certs.find(sha);
    return it != certs.end() && it->second.revoked;
  }
  std::map<std::string, protocol::IssuedInfo> certs;
};

std::string Sha256Of(const testing::Identity& id) {
  auto der = auth::ParseCertHeader(id.cert_pem);
  REQUIRE(der.ok());
  return Sha256Hex(*der);
}

// enrollment.reenroll events' payloads, oldest first.
std::vector<Value> ReenrollEvents(Harness& h) {
  std::vector<Value> out;
  for (const auto& ev : h.events->Read(0, 1000).value())
    if (ev.type == events::type::kEnrollmentReenroll) out.push_back(plist::ParseJson(ev.payload_json).value());
  return out;
}
}  // namespace

TEST_CASE("enrollment takeover: another device's or an unapproved certificate cannot take an enrolled UDID",
          "[protocol][auth]") {
  FakeIssued issued;
  protocol::ServiceOptions o;
  Harness h(o, nullptr, &issued);
  auto victim = h.ca->Issue();
  issued.certs[Sha256Of(victim)] = {"VICTIM", false, ""};
  REQUIRE(h.Send(victim, Authenticate("VICTIM"), true).status == 200);
  REQUIRE(h.Send(victim, TokenUpdate("VICTIM"), true).status == 200);
  h.Enqueue("VICTIM", "V-CMD", "DeviceInformation");

  // A certificate Orchard issued for another device: refused, even for a new UDID.
  auto attacker = h.ca->Issue();
  const std::string attacker_sha = Sha256Of(attacker);
  issued.certs[attacker_sha] = {"ATTACKER", false, ""};
  auto r = h.Send(attacker, Authenticate("VICTIM"), true);
  CHECK(r.status == 403);
  CHECK(r.error == "certificate was issued for another device");
  CHECK(h.Send(attacker, Authenticate("SOMEONE-ELSE"), true).status == 403);
  // A valid certificate from the CA without a recorded device: pending approval, not taken over.
  auto unbound = h.ca->Issue();
  r = h.Send(unbound, Authenticate("VICTIM"), true);
  CHECK(r.status == 403);
  CHECK(r.error.find("an admin must approve") != std::string::npos);
  // A revoked certificate, even one issued for the device, is refused before anything else.
  auto revoked = h.ca->Issue();
  issued.certs[Sha256Of(revoked)] = {"VICTIM", true, ""};
  r = h.Send(revoked, Authenticate("VICTIM"), true);
  CHECK(r.status == 403);
  CHECK(r.error.find("is revoked") != std::string::npos);

  // The victim is untouched: its binding, queue and state stay, and it keeps working.
  auto e = h.enrollments->Get("VICTIM").value();
  REQUIRE(e);
  CHECK(e->state == store::EnrollmentState::kEnrolled);
  CHECK(e->cert_sha256 == Sha256Of(victim));
  CHECK(h.queue->List("VICTIM", 10).value().size() == 1);
  CHECK(h.Send(victim, Report("VICTIM", "Idle"), false).status == 200);
  CHECK(h.Send(unbound, Report("VICTIM", "Idle"), false).status == 403);

  // Every attempt is an event with both fingerprints.
  auto evs = ReenrollEvents(h);
  REQUIRE(evs.size() == 3);
  CHECK(evs[0].GetString("decision") == "refused");
  CHECK(evs[0].GetString("reason") == "issued_for_another_device");
  CHECK(evs[0].GetString("new_cert_sha256") == attacker_sha);
  CHECK(evs[0].GetString("old_cert_sha256") == Sha256Of(victim));
  CHECK(evs[2].GetString("decision") == "pending_approval");
  CHECK(evs[2].GetString("policy") == "approve");

  // A new certificate Orchard issued for this device (a new profile, a SCEP renewal) is accepted.
  auto renewed = h.ca->Issue();
  issued.certs[Sha256Of(renewed)] = {"VICTIM", false, ""};
  REQUIRE(h.Send(renewed, Authenticate("VICTIM"), true).status == 200);
  CHECK(ReenrollEvents(h).back().GetString("reason") == "issued_for_this_device");
  CHECK(h.enrollments->Get("VICTIM").value()->cert_sha256 == Sha256Of(renewed));
  CHECK_FALSE(domain::Reenrollments(h.store.get()).Pending("VICTIM").value());  // the stale request is gone
}

TEST_CASE("enroll.reenroll allow and deny", "[protocol][auth]") {
  for (auto policy : {protocol::ReenrollPolicy::kAllow, protocol::ReenrollPolicy::kDeny}) {
    protocol::ServiceOptions o;
    o.reenroll = policy;
    Harness h(o);
    auto dev = h.ca->Issue();
    REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
    REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
    auto other = h.ca->Issue();
    const int want = policy == protocol::ReenrollPolicy::kAllow ? 200 : 403;
    CHECK(h.Send(other, Authenticate("U"), true).status == want);
    auto evs = ReenrollEvents(h);
    REQUIRE(evs.size() == 1);
    CHECK(evs[0].GetString("decision") == (want == 200 ? "allowed" : "refused"));
    CHECK(evs[0].GetString("reason") == (want == 200 ? "policy_allow" : "policy_deny"));
    CHECK_FALSE(domain::Reenrollments(h.store.get()).Pending("U").value());
    // After a CheckOut, any valid certificate may enroll again (the device left on purpose).
    if (want == 403) {
      Value checkout;
      checkout.Set("MessageType", Value::String("CheckOut"));
      checkout.Set("UDID", Value::String("U"));
      REQUIRE(h.Send(dev, checkout, true).status == 200);
      CHECK(h.Send(other, Authenticate("U"), true).status == 200);
    }
  }
}

TEST_CASE("re-Authenticate starts a fresh enrollment and clears the old queue", "[protocol]") {
  Harness h;
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  h.Enqueue("U", "OLD1", "DeviceInformation");
  h.Enqueue("U", "OLD2", "DeviceInformation");
  CHECK(h.queue->Depth().value() == 2);
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  auto e = h.enrollments->Get("U").value();
  CHECK(e->state == store::EnrollmentState::kAuthenticated);
  CHECK(e->generation == 2);
  CHECK(h.queue->List("U", 10).value().empty());
  CHECK(h.queue->Depth().value() == 0);
  CHECK(h.enrollments->CountInState(store::EnrollmentState::kEnrolled).value() == 0);
  CHECK(h.enrollments->CountInState(store::EnrollmentState::kAuthenticated).value() == 1);
}

TEST_CASE("a blocked device is unenrolled with 401 on its next contact", "[protocol]") {
  Harness h;
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  auto prev = h.enrollments->Get("U").value();
  store::Enrollment e = *prev;
  e.blocked = true;
  store::Batch b;
  h.enrollments->Put(b, prev, e);
  REQUIRE(h.store->Write(b).ok());
  CHECK(h.Send(dev, Report("U", "Idle"), false).status == 401);
  CHECK(h.Send(dev, Authenticate("U"), true).status == 401);
}

TEST_CASE("a blocked user channel is unenrolled on check-in and report", "[protocol]") {
  Harness h;
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  Value user = TokenUpdate("U");
  user.Set("UserID", S("USER-1"));
  REQUIRE(h.Send(dev, user, true).status == 200);
  auto prev = h.enrollments->Get("U:USER-1").value();
  store::Enrollment e = *prev;
  e.blocked = true;
  store::Batch b;
  h.enrollments->Put(b, prev, e);
  REQUIRE(h.store->Write(b).ok());
  CHECK(h.Send(dev, user, true).status == 401);
  Value idle = Report("U", "Idle");
  idle.Set("UserID", S("USER-1"));
  CHECK(h.Send(dev, idle, false).status == 401);
  CHECK(h.Send(dev, Report("U", "Idle"), false).status == 200);  // the device channel is not blocked
}

TEST_CASE("NotNow answers of an earlier session are all offered again in the next session", "[protocol]") {
  Harness h;
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  h.Enqueue("U", "A", "InstallProfile");
  h.Enqueue("U", "B", "DeviceInformation");
  h.Enqueue("U", "C", "SecurityInfo");

  // Session 1: the device answers NotNow to all three; none comes back in it.
  REQUIRE(UuidOf(h.Send(dev, Report("U", "Idle"), false)) == "A");
  REQUIRE(UuidOf(h.Send(dev, Report("U", "NotNow", "A"), false)) == "B");
  REQUIRE(UuidOf(h.Send(dev, Report("U", "NotNow", "B"), false)) == "C");
  auto r = h.Send(dev, Report("U", "NotNow", "C"), false);
  CHECK(r.status == 200);
  CHECK(r.body.empty());
  CHECK(h.Send(dev, Report("U", "NotNow", "C"), false).body.empty());  // a repeat changes nothing

  // Session 2: all three, in queue order; A answered NotNow again waits for session 3.
  CHECK(UuidOf(h.Send(dev, Report("U", "Idle"), false)) == "A");
  CHECK(UuidOf(h.Send(dev, Report("U", "NotNow", "A"), false)) == "B");
  CHECK(UuidOf(h.Send(dev, Report("U", "Acknowledged", "B"), false)) == "C");
  CHECK(h.Send(dev, Report("U", "Acknowledged", "C"), false).body.empty());

  // Session 3.
  CHECK(UuidOf(h.Send(dev, Report("U", "Idle"), false)) == "A");
  CHECK(h.Send(dev, Report("U", "Acknowledged", "A"), false).body.empty());
  CHECK(h.queue->GetResult("U", "A").value()->not_now_count == 2);
  CHECK(h.queue->GetResult("U", "B").value()->not_now_count == 1);
  CHECK(h.queue->GetResult("U", "C").value()->not_now_count == 1);
  CHECK(h.queue->Depth().value() == 0);
}

TEST_CASE("three NotNow commands are all delivered in the next session", "[protocol]") {
  Harness h;
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  h.Enqueue("U", "A", "InstallProfile");
  h.Enqueue("U", "B", "DeviceInformation");
  h.Enqueue("U", "C", "SecurityInfo");
  REQUIRE(UuidOf(h.Send(dev, Report("U", "Idle"), false)) == "A");
  REQUIRE(UuidOf(h.Send(dev, Report("U", "NotNow", "A"), false)) == "B");
  REQUIRE(UuidOf(h.Send(dev, Report("U", "NotNow", "B"), false)) == "C");
  REQUIRE(h.Send(dev, Report("U", "NotNow", "C"), false).body.empty());
  // Idle -> A -> ack -> B -> ack -> C -> ack -> empty.
  CHECK(UuidOf(h.Send(dev, Report("U", "Idle"), false)) == "A");
  CHECK(UuidOf(h.Send(dev, Report("U", "Acknowledged", "A"), false)) == "B");
  CHECK(UuidOf(h.Send(dev, Report("U", "Acknowledged", "B"), false)) == "C");
  CHECK(h.Send(dev, Report("U", "Acknowledged", "C"), false).body.empty());
}

TEST_CASE("a command delivered max_deliveries times without a report is failed and the next delivered",
          "[protocol]") {
  protocol::ServiceOptions o;
  o.max_deliveries = 3;
  Harness h(o);
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  h.Enqueue("U", "POISON", "InstallProfile");
  h.Enqueue("U", "NEXT", "DeviceInformation");
  // The device takes POISON and never reports on it (each session starts over).
  for (int i = 1; i <= 3; ++i) {
    INFO("delivery " << i);
    REQUIRE(UuidOf(h.Send(dev, Report("U", "Idle"), false)) == "POISON");
    CHECK(h.queue->Find("U", "POISON").value()->entry.deliveries == i);
  }
  const size_t events_before = h.Events().size();
  auto r = h.Send(dev, Report("U", "Idle"), false);
  REQUIRE(r.status == 200);
  CHECK(UuidOf(r) == "NEXT");

  CHECK_FALSE(h.queue->Find("U", "POISON").value());
  auto res = h.queue->GetResult("U", "POISON").value();
  REQUIRE(res);
  CHECK(res->status == "Failed");
  CHECK(res->request_type == "InstallProfile");
  CHECK(res->error_chain.find("after 3 deliveries") != std::string::npos);
  CHECK(res->raw.empty());
  CHECK(h.queue->Depth().value() == 1);
  // The failure's event commits with the Idle that caused it.
  auto evs = h.Events();
  REQUIRE(evs.size() == events_before + 2);
  CHECK(evs[events_before].type == "device.idle");
  CHECK(evs[events_before + 1].type == "command.failed");
  CHECK(evs[events_before + 1].command_uuid == "POISON");
  CHECK(evs[events_before + 1].request_type == "InstallProfile");
  CHECK(evs[events_before + 1].payload_json.find("\"deliveries\":3") != std::string::npos);

  CHECK(h.Send(dev, Report("U", "Acknowledged", "NEXT"), false).body.empty());
  // A late report for the failed command is only logged.
  CHECK(h.Send(dev, Report("U", "Acknowledged", "POISON"), false).status == 200);
  CHECK(h.queue->GetResult("U", "POISON").value()->status == "Failed");
}

TEST_CASE("a NotNow counts as a report: unanswered deliveries start again from zero", "[protocol]") {
  protocol::ServiceOptions o;
  o.max_deliveries = 2;
  Harness h(o);
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  h.Enqueue("U", "X", "InstallProfile");
  REQUIRE(UuidOf(h.Send(dev, Report("U", "Idle"), false)) == "X");
  REQUIRE(UuidOf(h.Send(dev, Report("U", "Idle"), false)) == "X");
  REQUIRE(h.Send(dev, Report("U", "NotNow", "X"), false).body.empty());
  CHECK(h.queue->Find("U", "X").value()->entry.deliveries == 0);
  CHECK(UuidOf(h.Send(dev, Report("U", "Idle"), false)) == "X");
  CHECK(UuidOf(h.Send(dev, Report("U", "Idle"), false)) == "X");
  CHECK(h.Send(dev, Report("U", "Idle"), false).body.empty());  // now failed
  CHECK(h.queue->GetResult("U", "X").value()->status == "Failed");
  CHECK(h.queue->GetResult("U", "X").value()->not_now_count == 1);
}

TEST_CASE("max_deliveries 0 never fails a command", "[protocol]") {
  protocol::ServiceOptions o;
  o.max_deliveries = 0;
  Harness h(o);
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  h.Enqueue("U", "X", "InstallProfile");
  for (int i = 0; i < 12; ++i) REQUIRE(UuidOf(h.Send(dev, Report("U", "Idle"), false)) == "X");
  CHECK(h.queue->Find("U", "X").value()->entry.deliveries == 12);
}

TEST_CASE("too-long device strings are refused with 400 naming the key and nothing is stored", "[protocol]") {
  Harness h;
  auto dev = h.ca->Issue();
  const std::vector<std::pair<const char*, size_t>> inventory = {
      {"UDID", 256},       {"SerialNumber", 128}, {"Model", 128},     {"ModelName", 128},
      {"ProductName", 128}, {"OSVersion", 64},    {"BuildVersion", 64}, {"IMEI", 64},
      {"MEID", 64},        {"DeviceName", 1024},  {"Topic", 256}};
  for (const auto& [key, limit] : inventory) {
    INFO(key);
    Value msg = Authenticate("U");
    msg.Set(key, Value::String(std::string(limit + 1, 'x')));
    auto r = h.Send(dev, msg, true);
    CHECK(r.status == 400);
    CHECK(r.error.find(std::string(key) + " is too long") != std::string::npos);
    CHECK(r.error.find(std::string(limit + 1, 'x')) == std::string::npos);  // the value is not echoed
    CHECK_FALSE(h.enrollments->Get("U").value());
  }
  CHECK(h.Events().empty());
  // At the limit everything is accepted (UDID stays "U": the id must match the reports below).
  Value at_limit = Authenticate("U");
  for (const auto& [key, limit] : inventory)
    if (std::string(key) != "UDID") at_limit.Set(key, Value::String(std::string(limit, 'y')));
  REQUIRE(h.Send(dev, at_limit, true).status == 200);
  CHECK(h.enrollments->Get("U").value()->device_name == std::string(1024, 'y'));

  const std::vector<std::pair<const char*, size_t>> token_keys = {
      {"UserID", 256}, {"UserShortName", 256}, {"UserLongName", 1024}, {"PushMagic", 256}};
  for (const auto& [key, limit] : token_keys) {
    INFO(key);
    Value msg = TokenUpdate("U");
    msg.Set(key, Value::String(std::string(limit + 1, 'x')));
    auto r = h.Send(dev, msg, true);
    CHECK(r.status == 400);
    CHECK(r.error.find(std::string(key) + " is too long") != std::string::npos);
  }
  Value big_token = TokenUpdate("U");
  big_token.Set("Token", Value::DataValue(std::string(1025, '\x01')));
  auto r = h.Send(dev, big_token, true);
  CHECK(r.status == 400);
  CHECK(r.error.find("Token is too long") != std::string::npos);
  CHECK(h.enrollments->Get("U").value()->push_token.empty());
  CHECK(h.enrollments->Get("U").value()->state == store::EnrollmentState::kAuthenticated);

  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  h.Enqueue("U", "C1", "DeviceInformation");
  REQUIRE(UuidOf(h.Send(dev, Report("U", "Idle"), false)) == "C1");
  const size_t before = h.Events().size();
  r = h.Send(dev, Report("U", "Acknowledged", std::string(129, 'c').c_str()), false);
  CHECK(r.status == 400);
  CHECK(r.error.find("CommandUUID is too long") != std::string::npos);
  Value long_user = Report("U", "Idle");
  long_user.Set("EnrollmentUserID", Value::String(std::string(257, 'e')));
  r = h.Send(dev, long_user, false);
  CHECK(r.status == 400);
  CHECK(r.error.find("EnrollmentUserID is too long") != std::string::npos);
  CHECK(h.Events().size() == before);
}

TEST_CASE("a device may create at most max_user_channels user channels", "[protocol]") {
  protocol::ServiceOptions o;
  o.max_user_channels = 2;
  o.user_authenticate_digest = true;
  Harness h(o);
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  auto user = [](const char* user_id) {
    Value v = TokenUpdate("U");
    v.Set("UserID", S(user_id));
    v.Set("UserShortName", S("alice"));
    return v;
  };
  REQUIRE(h.Send(dev, user("USER-1"), true).status == 200);
  Value shared = TokenUpdate("U");
  shared.Set("UserID", S("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"));
  shared.Set("UserShortName", S("bob"));
  REQUIRE(h.Send(dev, shared, true).status == 200);  // Shared iPad users count too

  const size_t before = h.Events().size();
  auto r = h.Send(dev, user("USER-3"), true);
  CHECK(r.status == 410);
  CHECK(r.error.find("checkin.max_user_channels") != std::string::npos);
  CHECK_FALSE(h.enrollments->Get("U:USER-3").value());
  CHECK(h.Events().size() == before);
  // UserAuthenticate for a channel that cannot be created is declined at once.
  auto ua = h.Send(dev, Msg({{"MessageType", S("UserAuthenticate")}, {"UDID", S("U")}, {"UserID", S("USER-3")}}), true);
  CHECK(ua.status == 410);
  CHECK(ua.error.find("checkin.max_user_channels") != std::string::npos);

  // The existing channels keep working.
  ua = h.Send(dev, Msg({{"MessageType", S("UserAuthenticate")}, {"UDID", S("U")}, {"UserID", S("USER-1")}}), true);
  CHECK(ua.status == 200);
  CHECK(h.Send(dev, user("USER-1"), true).status == 200);
  h.Enqueue("U:USER-1", "UC", "ProfileList");
  Value idle = Report("U", "Idle");
  idle.Set("UserID", S("USER-1"));
  CHECK(UuidOf(h.Send(dev, idle, false)) == "UC");
  CHECK(h.Send(dev, Report("U", "Idle"), false).status == 200);
  // Another device has its own allowance (ids sharing a prefix do not count).
  auto dev2 = h.ca->Issue();
  REQUIRE(h.Send(dev2, Authenticate("U2"), true).status == 200);
  Value other = TokenUpdate("U2");
  other.Set("UserID", S("USER-9"));
  CHECK(h.Send(dev2, other, true).status == 200);
}

TEST_CASE("Mdm-Signature made with MD5 is refused with 403 while SHA-1 and SHA-256 are accepted", "[protocol][auth]") {
  Harness h;
  testing::IssueOptions rsa;
  rsa.rsa_key = true;
  auto dev = h.ca->Issue(rsa);
  auto md5 = h.SendSigned(dev, Authenticate("U"), true, "MD5");
  CHECK(md5.status == 403);
  CHECK(md5.error.find("MD5") != std::string::npos);
  CHECK_FALSE(h.enrollments->Get("U").value());
  CHECK(h.SendSigned(dev, Authenticate("U"), true, "SHA1").status == 200);
  CHECK(h.SendSigned(dev, TokenUpdate("U"), true, "SHA256").status == 200);
  CHECK(h.SendSigned(dev, Report("U", "Idle"), false, "MD5").status == 403);
  CHECK(h.SendSigned(dev, Report("U", "Idle"), false, "SHA1").status == 200);
}

TEST_CASE("enrollment.enrolled fires on the first TokenUpdate of each enrollment only", "[protocol]") {
  Harness h;
  auto dev = h.ca->Issue();
  auto enrolled = [&] {
    int n = 0;
    for (const auto& e : h.Events()) n += e.type == "enrollment.enrolled";
    return n;
  };
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  CHECK(enrolled() == 0);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  CHECK(enrolled() == 1);
  for (int i = 0; i < 3; ++i) REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  CHECK(enrolled() == 1);  // token refreshes are not enrollments (a bug peers shipped)
  // A re-enrollment (Authenticate again) is a new enrollment: it fires again, once.
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  CHECK(enrolled() == 2);
}

namespace {
struct Switch : events::Interest {
  bool idle = false;
  bool Wanted(std::string_view type) const override { return type != "device.idle" || idle; }
};
}  // namespace

TEST_CASE("device.idle is written only while someone consumes it", "[protocol]") {
  Switch interest;
  Harness h(protocol::ServiceOptions{}, &interest);
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  auto idles = [&] {
    int n = 0;
    for (const auto& e : h.Events()) n += e.type == "device.idle";
    return n;
  };
  REQUIRE(h.Send(dev, Report("U", "Idle"), false).status == 200);
  CHECK(idles() == 0);
  CHECK(h.enrollments->Get("U").value()->last_seen_ms > 0);  // the device is still seen
  interest.idle = true;
  REQUIRE(h.Send(dev, Report("U", "Idle"), false).status == 200);
  CHECK(idles() == 1);
}

TEST_CASE("certificates a device reports near expiry raise certificate.expiring once per threshold",
          "[protocol]") {
  protocol::ServiceOptions o;
  o.cert_warn_days = {1, 7, 14, 30};
  Harness h(o);
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  testing::IssueOptions soon, later;
  soon.common_name = "Wi-Fi client";
  soon.not_after_offset_s = 10 * 86400 + 3600;
  later.common_name = "VPN";
  later.not_after_offset_s = 300 * 86400;
  auto near = h.ca->Issue(soon);
  auto far = h.ca->Issue(later);
  auto report = [&](const std::string& uuid) {
    h.Enqueue("U", uuid, "CertificateList");
    REQUIRE(h.Send(dev, Report("U", "Idle"), false).status == 200);
    Value list = Value::MakeArray();
    for (const auto* c : {&near, &far}) {
      Value item;
      item.Set("CommonName", Value::String("x"));
      item.Set("Data", Value::DataValue(c->cert_der));
      item.Set("IsIdentity", Value::Bool(false));
      list.AsArray()->push_back(std::move(item));
    }
    Value bad;
    bad.Set("Data", Value::DataValue("not a certificate"));
    list.AsArray()->push_back(std::move(bad));
    Value r = Report("U", "Acknowledged", uuid.c_str());
    r.Set("CertificateList", std::move(list));
    REQUIRE(h.Send(dev, r, false).status == 200);
  };
  report("C-1");
  report("C-2");  // the same certificates again: no new warning
  std::vector<events::Event> warnings;
  for (auto& e : h.Events())
    if (e.type == "certificate.expiring") warnings.push_back(e);
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].enrollment_id == "U");
  CHECK(warnings[0].payload_json.find("\"kind\":\"device_reported\"") != std::string::npos);
  CHECK(warnings[0].payload_json.find("\"common_name\":\"Wi-Fi client\"") != std::string::npos);
  CHECK(warnings[0].payload_json.find("\"threshold_days\":14") != std::string::npos);
}

TEST_CASE("identity renewal: a certificate Orchard renewed for the device replaces the bound one in place",
          "[protocol][auth]") {
  FakeIssued issued;
  protocol::ServiceOptions o;
  o.reenroll = protocol::ReenrollPolicy::kDeny;  // renewals never need the policy
  Harness h(o, nullptr, &issued);
  auto first = h.ca->Issue();
  issued.certs[Sha256Of(first)] = {"DEV", false, ""};
  REQUIRE(h.Send(first, Authenticate("DEV"), true).status == 200);
  REQUIRE(h.Send(first, TokenUpdate("DEV"), true).status == 200);
  h.Enqueue("DEV", "KEEP-1", "DeviceInformation");
  const auto before = h.enrollments->Get("DEV").value().value();
  REQUIRE(before.state == store::EnrollmentState::kEnrolled);

  // SCEP RenewalReq: the first request with the new certificate is a report, not an Authenticate.
  auto second = h.ca->Issue();
  issued.certs[Sha256Of(second)] = {"DEV", false, Sha256Of(first)};
  auto r = h.Send(second, Report("DEV", "Idle"), false);
  CHECK(r.status == 200);
  CHECK(r.body.find("KEEP-1") != std::string::npos);  // the queue is intact: its command is delivered
  auto after = h.enrollments->Get("DEV").value().value();
  CHECK(after.cert_sha256 == Sha256Of(second));
  CHECK(after.state == store::EnrollmentState::kEnrolled);
  CHECK(after.generation == before.generation);
  CHECK(h.Send(first, Report("DEV", "Idle"), false).status == 403);  // the old certificate is unbound
  auto evs = ReenrollEvents(h);
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].GetString("reason") == "renewed");
  CHECK(evs[0].GetString("old_cert_sha256") == Sha256Of(first));

  // A renewal of a certificate that is not the bound one is not a renewal.
  auto stray = h.ca->Issue();
  issued.certs[Sha256Of(stray)] = {"DEV", false, Sha256Of(first)};
  CHECK(h.Send(stray, Report("DEV", "Idle"), false).status == 403);

  // A renewal that Authenticates again keeps the queue, the state and the generation.
  auto third = h.ca->Issue();
  issued.certs[Sha256Of(third)] = {"DEV", false, Sha256Of(second)};
  REQUIRE(h.Send(third, Authenticate("DEV"), true).status == 200);
  after = h.enrollments->Get("DEV").value().value();
  CHECK(after.cert_sha256 == Sha256Of(third));
  CHECK(after.state == store::EnrollmentState::kEnrolled);
  CHECK(after.generation == before.generation);
  CHECK(h.queue->List("DEV", 10).value().size() == 1);
  CHECK(ReenrollEvents(h).back().GetString("reason") == "renewed");

  // Revoking the bound certificate cuts the device off on its next request.
  issued.certs[Sha256Of(third)].revoked = true;
  auto refused = h.Send(third, Report("DEV", "Idle"), false);
  CHECK(refused.status == 403);
  CHECK(refused.error.find("revoked") != std::string::npos);
}

namespace {

// Records the DDM hooks the protocol layer calls (and whether each ran with
// the record already written as it should be).
struct RecordingDdm : protocol::DeclarativeHandler {
  std::vector<std::string> enrolled, checked_out, acknowledged;
  bool fail_checkout = false;
  protocol::DeviceResponse Checkin(const protocol::DeclarativeRequest&) override { return {}; }
  Status OnEnrolled(domain::Tx&, const store::Enrollment& e, int64_t) override {
    enrolled.push_back(e.id);
    return Status::Ok();
  }
  Status OnCheckedOut(domain::Tx& tx, const store::Enrollment& e, int64_t now_ms) override {
    if (fail_checkout) return Status::Internal("ddm hook failed");
    CHECK(e.state == store::EnrollmentState::kCheckedOut);
    CHECK(e.checked_out_ms == now_ms);
    tx.batch().Put(store::Cf::kMeta, "test-checkout/" + e.id, "1");  // commits with the check-out or not at all
    checked_out.push_back(e.id);
    return Status::Ok();
  }
  Status OnSyncAcknowledged(domain::Tx&, const std::string& id, const std::string& uuid, int64_t) override {
    acknowledged.push_back(id + "/" + uuid);
    return Status::Ok();
  }
};

Value UserMsg(Value v, const char* user_id, const char* short_name = nullptr) {
  v.Set("UserID", S(user_id));
  if (short_name) v.Set("UserShortName", S(short_name));
  return v;
}

}  // namespace

TEST_CASE("protocol ddm hooks: a device CheckOut also checks out its user channels, each hooked in the transaction",
          "[protocol][ddm]") {
  RecordingDdm ddm;
  Harness h(protocol::ServiceOptions{}, nullptr, nullptr, &ddm);
  auto dev = h.ca->Issue();
  auto other = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  REQUIRE(h.Send(dev, UserMsg(TokenUpdate("U"), "USER-1"), true).status == 200);
  REQUIRE(h.Send(dev, UserMsg(TokenUpdate("U"), "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "bob"), true).status == 200);
  REQUIRE(h.Send(other, Authenticate("V", "SERIAL2"), true).status == 200);
  REQUIRE(h.Send(other, TokenUpdate("V"), true).status == 200);
  REQUIRE(h.Send(other, UserMsg(TokenUpdate("V"), "USER-1"), true).status == 200);
  CHECK(ddm.enrolled == std::vector<std::string>{"U", "U:USER-1", "U:bob", "V", "V:USER-1"});
  auto state = [&](const char* id) { return h.enrollments->Get(id).value()->state; };
  using State = store::EnrollmentState;

  // A user channel's own CheckOut ends only that channel.
  const Value user_checkout = UserMsg(Msg({{"MessageType", S("CheckOut")}, {"UDID", S("U")}}), "USER-1");
  REQUIRE(h.Send(dev, user_checkout, true).status == 200);
  CHECK(ddm.checked_out == std::vector<std::string>{"U:USER-1"});
  CHECK(state("U") == State::kEnrolled);
  CHECK(state("U:bob") == State::kEnrolled);

  // A failing hook fails the CheckOut: nothing is stored.
  ddm.fail_checkout = true;
  const Value checkout = Msg({{"MessageType", S("CheckOut")}, {"UDID", S("U")}});
  CHECK(h.Send(dev, checkout, true).status == 500);
  CHECK(state("U") == State::kEnrolled);
  CHECK(state("U:bob") == State::kEnrolled);
  ddm.fail_checkout = false;

  // The device's CheckOut ends its enrolled user channels with it; another device's stay.
  const size_t seen = h.Events().size();
  REQUIRE(h.Send(dev, checkout, true).status == 200);
  CHECK(ddm.checked_out == std::vector<std::string>{"U:USER-1", "U", "U:bob"});
  for (const char* id : {"U", "U:bob", "U:USER-1"}) {
    INFO(id);
    CHECK(state(id) == State::kCheckedOut);
    CHECK(h.enrollments->Get(id).value()->checked_out_ms > 0);
  }
  CHECK(state("V") == State::kEnrolled);
  CHECK(state("V:USER-1") == State::kEnrolled);
  for (const char* id : {"U", "U:bob", "U:USER-1"})
    CHECK(h.store->Get(store::Cf::kMeta, std::string("test-checkout/") + id).value().has_value());
  auto events = h.Events();
  std::vector<std::pair<std::string, bool>> checked_out;  // enrollment, DeviceCheckOut
  for (size_t i = seen; i < events.size(); ++i) {
    if (events[i].type != "enrollment.checked_out") continue;
    auto payload = plist::ParseJson(events[i].payload_json).value();
    checked_out.emplace_back(events[i].enrollment_id, payload.GetBool("DeviceCheckOut", false));
  }
  CHECK(checked_out == std::vector<std::pair<std::string, bool>>{{"U", false}, {"U:bob", true}});

  // Enrolling again: the user channels' first TokenUpdate enrolls them again.
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  REQUIRE(h.Send(dev, UserMsg(TokenUpdate("U"), "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "bob"), true).status == 200);
  CHECK(state("U:bob") == State::kEnrolled);
  CHECK(ddm.enrolled.back() == "U:bob");
  CHECK(ddm.enrolled.size() == 7);
}

TEST_CASE("protocol ddm hooks: an acknowledged DeclarativeManagement command is told to the handler", "[protocol][ddm]") {
  RecordingDdm ddm;
  Harness h(protocol::ServiceOptions{}, nullptr, nullptr, &ddm);
  auto dev = h.ca->Issue();
  REQUIRE(h.Send(dev, Authenticate("U"), true).status == 200);
  REQUIRE(h.Send(dev, TokenUpdate("U"), true).status == 200);
  h.Enqueue("U", "DM1", "DeclarativeManagement");
  h.Enqueue("U", "DI1", "DeviceInformation");
  h.Enqueue("U", "DM2", "DeclarativeManagement");
  CHECK(UuidOf(h.Send(dev, Report("U", "Idle"), false)) == "DM1");
  CHECK(UuidOf(h.Send(dev, Report("U", "NotNow", "DM1"), false)) == "DI1");
  CHECK(ddm.acknowledged.empty());  // NotNow is not an acknowledgement
  CHECK(UuidOf(h.Send(dev, Report("U", "Acknowledged", "DI1"), false)) == "DM2");
  CHECK(ddm.acknowledged.empty());
  CHECK(h.Send(dev, Report("U", "Error", "DM2"), false).status == 200);
  CHECK(ddm.acknowledged.empty());
  CHECK(UuidOf(h.Send(dev, Report("U", "Idle"), false)) == "DM1");  // the next session
  CHECK(h.Send(dev, Report("U", "Acknowledged", "DM1"), false).status == 200);
  CHECK(ddm.acknowledged == std::vector<std::string>{"U/DM1"});
  // A repeated report is not a second acknowledgement.
  CHECK(h.Send(dev, Report("U", "Acknowledged", "DM1"), false).status == 200);
  CHECK(ddm.acknowledged.size() == 1);
}
