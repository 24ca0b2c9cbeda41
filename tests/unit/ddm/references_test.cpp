// References between declarations: what an activation and a configuration
// reference, and the references a set's members make that the set does not
// satisfy (through a view with pending writes, as the service checks them).
#include <catch2/catch.hpp>

#include "ddm/references.h"
#include "ddm/service.h"
#include "store/pending_view.h"
#include "support/store_world.h"
#include <filesystem>
#include <set>

#include "support/orchardd_process.h"

using namespace orchard;
using ddm::Kind;

namespace {

ddm::Declaration Parse(const std::string& json) {
  auto d = ddm::ParseDeclaration(json, ddm::Limits{});
  INFO(json);
  REQUIRE(d.ok());
  return std::move(*d);
}

const char* const kActivation =
    R"({"Type":"com.apple.activation.simple","Identifier":"act",)"
    R"("Payload":{"StandardConfigurations":["cfg.mail","cfg.passcode","cfg.mail"]}})";
const char* const kMail =
    R"({"Type":"com.apple.configuration.account.mail","Identifier":"cfg.mail","Payload":{)"
    R"("UserIdentityAssetReference":"asset.identity",)"
    R"("IncomingServer":{"ServerType":"IMAP","HostName":"imap.example.com",)"
    R"("AuthenticationCredentialsAssetReference":"asset.creds","AuthenticationMethod":"Password"},)"
    R"("OutgoingServer":{"HostName":"smtp.example.com","AuthenticationMethod":"Password",)"
    R"("AuthenticationCredentialsAssetReference":"asset.creds"}}})";
const char* const kPasscode =
    R"({"Type":"com.apple.configuration.passcode.settings","Identifier":"cfg.passcode","Payload":{}})";
const char* const kIdentity =
    R"({"Type":"com.apple.asset.useridentity","Identifier":"asset.identity","Payload":{"FullName":"A"}})";
const char* const kCreds =
    R"({"Type":"com.apple.asset.credential.userpassword","Identifier":"asset.creds",)"
    R"("Payload":{"Reference":{"DataURL":"https://example.com/c","ContentType":"application/json"}}})";

}  // namespace

TEST_CASE("ddm references: activations name configurations and configurations name assets", "[ddm]") {
  auto act = ddm::ReferencesOf(Parse(kActivation));
  REQUIRE(act.size() == 2);  // each once, in payload order
  CHECK((act[0].identifier == "cfg.mail" && act[0].kind == Kind::kConfiguration));
  CHECK(act[1].identifier == "cfg.passcode");
  auto mail = ddm::ReferencesOf(Parse(kMail));
  REQUIRE(mail.size() == 2);
  std::set<std::string> ids{mail[0].identifier, mail[1].identifier};
  CHECK(ids == std::set<std::string>{"asset.identity", "asset.creds"});
  CHECK(mail[0].kind == Kind::kAsset);
  CHECK(ddm::ReferencesOf(Parse(kPasscode)).empty());
  CHECK(ddm::ReferencesOf(Parse(kIdentity)).empty());  // assets reference nothing here
}

TEST_CASE("ddm references: a set's unsatisfied references, seen through pending writes", "[ddm]") {
  const std::string dir = testing::MakeTempDir("orchard-ddm-refs");
  auto db = std::move(store::Store::Open({.path = dir + "/db"}).value());
  store::Batch pending;
  store::PendingView view(db.get(), &pending);
  ddm::DeclarationStore decls(&view, ddm::Limits{});
  for (const char* json : {kActivation, kMail, kPasscode, kIdentity})
    REQUIRE(decls.Put(pending, Parse(json), "admin", 1).ok());
  REQUIRE(decls.SetAdd(pending, "s", "act", 1).ok());
  REQUIRE(decls.SetAdd(pending, "s", "cfg.mail", 1).ok());

  auto problems = ddm::UnsatisfiedReferences(decls, "s").value();
  REQUIRE(problems.size() == 3);
  CHECK(problems[0] == "set s: activation act references configuration cfg.passcode, but the set does not carry it");
  // The configuration's references in the stored (canonical, key-sorted) payload's order.
  CHECK(problems[1] == "set s: configuration cfg.mail references asset asset.creds, but the set does not carry it");
  CHECK(problems[2] ==
        "set s: configuration cfg.mail references asset asset.identity, but the set does not carry it");

  REQUIRE(decls.SetAdd(pending, "s", "cfg.passcode", 1).ok());
  REQUIRE(decls.SetAdd(pending, "s", "asset.identity", 1).ok());
  problems = ddm::UnsatisfiedReferences(decls, "s").value();
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].find("asset.creds") != std::string::npos);

  // A reference to a declaration of the wrong kind.
  REQUIRE(decls.Put(pending,
                    Parse(R"({"Type":"com.apple.configuration.passcode.settings","Identifier":"asset.creds",)"
                          R"("Payload":{}})"),
                    "admin", 1)
              .ok());
  REQUIRE(decls.SetAdd(pending, "s", "asset.creds", 1).ok());
  problems = ddm::UnsatisfiedReferences(decls, "s").value();
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].find("but it is a configuration") != std::string::npos);
  REQUIRE(decls.Put(pending, Parse(kCreds), "admin", 1).ok());
  CHECK(ddm::UnsatisfiedReferences(decls, "s")->empty());
  // Nothing was written to the store itself.
  CHECK(ddm::DeclarationStore(db.get()).SetDeclarations("s", "", 10)->items.empty());
  CHECK(ddm::UnsatisfiedReferences(decls, "empty-set")->empty());
  db.reset();
  std::filesystem::remove_all(dir);
}

namespace {

struct Service : testing::StoreWorld {
  std::unique_ptr<ddm::DdmService> ddm;
  explicit Service(ddm::ReferenceCheck check) : StoreWorld("orchard-ddm-refs-svc") {
    ddm::DdmOptions o;
    o.references = check;
    ddm = std::make_unique<ddm::DdmService>(o, ddm::DdmDeps{db.get(), log.get(), &queue, &enrollments, &locks, &commands});
  }
};

}  // namespace

TEST_CASE("ddm references: admin writes warn about a new unsatisfied reference, or are refused", "[ddm]") {
  for (auto check : {ddm::ReferenceCheck::kWarn, ddm::ReferenceCheck::kRefuse, ddm::ReferenceCheck::kOff}) {
    Service s(check);
    REQUIRE(s.ddm->Put(kActivation, "admin", false).ok());  // in no set: nothing to check
    REQUIRE(s.ddm->Put(kPasscode, "admin", false).ok());
    auto add = s.ddm->SetAdd("s", "act", false);  // references cfg.mail and cfg.passcode, neither in s
    if (check == ddm::ReferenceCheck::kRefuse) {
      REQUIRE_FALSE(add.ok());
      CHECK(add.status().code() == Code::kInvalidArgument);
      CHECK(add.status().message().find("activation act references configuration cfg.mail") != std::string::npos);
      CHECK(s.ddm->declarations().SetDeclarations("s", "", 10)->items.empty());  // nothing stored
      // The configurations first, then the activation.
      REQUIRE(s.ddm->SetAdd("s", "cfg.passcode", false).ok());
      REQUIRE(s.ddm->Put(R"({"Type":"com.apple.configuration.passcode.settings","Identifier":"cfg.mail",)"
                         R"("Payload":{}})",
                         "admin", false)
                  .ok());
      REQUIRE(s.ddm->SetAdd("s", "cfg.mail", false).ok());
      auto ok = s.ddm->SetAdd("s", "act", false);
      REQUIRE(ok.ok());
      CHECK(ok->warnings.empty());
      // Taking a referenced configuration out is refused too.
      auto out = s.ddm->SetRemove("s", "cfg.passcode", false);
      REQUIRE_FALSE(out.ok());
      CHECK(out.status().message().find("cfg.passcode, but the set does not carry it") != std::string::npos);
      // So is deleting it (its memberships go with it).
      CHECK_FALSE(s.ddm->Delete("cfg.passcode", false).ok());
      CHECK(s.ddm->declarations().Get("cfg.passcode")->has_value());
    } else {
      REQUIRE(add.ok());
      if (check == ddm::ReferenceCheck::kWarn) {
        REQUIRE(add->warnings.size() == 2);
        CHECK(add->warnings[0].find("references configuration cfg.mail") != std::string::npos);
      } else {
        CHECK(add->warnings.empty());
      }
      // An unrelated write to the set does not repeat a problem that was there before.
      auto more = s.ddm->SetAdd("s", "cfg.passcode", false);
      REQUIRE(more.ok());
      CHECK(more->warnings.empty());
    }
  }
}

TEST_CASE("ddm references: a policy's write that would leave a reference unsatisfied is refused in refuse mode",
          "[ddm]") {
  Service s(ddm::ReferenceCheck::kRefuse);
  using K = automation::DdmOp::Kind;
  std::vector<automation::DdmOp> ops = {{K::kPutDeclaration, kPasscode, {}},
                                        {K::kPutDeclaration, kActivation, {}},
                                        {K::kSetAdd, "s", "act"},           // cfg.mail, cfg.passcode missing
                                        {K::kSetAdd, "s", "cfg.passcode"},  // fine
                                        {K::kPutDeclaration,
                                         R"({"Type":"com.apple.activation.simple","Identifier":"act2",)"
                                         R"("Payload":{"StandardConfigurations":["cfg.passcode"]}})",
                                         {}},
                                        {K::kSetAdd, "s", "act2"}};  // satisfied by the op before the last
  std::vector<const automation::DdmOp*> ptrs;
  for (const auto& op : ops) ptrs.push_back(&op);
  std::vector<std::string> outcomes;
  auto staged = s.ddm->Stage(ptrs, "policy:p", NowMillis(), &outcomes);
  REQUIRE(staged.ok());
  REQUIRE(outcomes.size() == 6);
  CHECK(outcomes[0].empty());
  CHECK(outcomes[2].find("references: set s: activation act references configuration cfg.mail") == 0);
  CHECK(outcomes[3].empty());
  CHECK(outcomes[5].empty());
  domain::Tx tx(&s.locks, s.log.get());
  tx.LockAll((*staged)->enrollments());
  REQUIRE((*staged)->Write(tx, NowMillis()).ok());
  REQUIRE(tx.Commit().ok());
  staged->reset();
  auto members = s.ddm->declarations().SetDeclarations("s", "", 10)->items;
  CHECK(members == std::vector<std::string>{"act2", "cfg.passcode"});
}
