// orchardctl ddm against the real orchardd: declarations uploaded from a file
// and from stdin, listings followed page by page, sets and assignments that
// queue the DeclarativeManagement command for a simulated device, the
// device's sync and status reports read back, previews, touch, sync, and the
// usage and server errors. Every check runs the real orchardctl binary.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "plist/plist.h"
#include "sim/ddm_client.h"
#include "sim/simulator.h"
#include "support/orchardd_process.h"
#include "support/strict_utf8.h"
#include "support/test_pki.h"

namespace {

using orchard::plist::Value;
using orchard::testing::MakeTempDir;
using orchard::testing::OrchardBinary;
using orchard::testing::OrchardProcess;
using orchard::testing::ReadFile;
using orchard::testing::TestCa;
using orchard::testing::WriteFile;
namespace sim = orchard::sim;

constexpr char kKey[] = "ctl-ddm-it-api-key-000000000001";

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

struct CtlRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

Value Json(const std::string& text) {
  INFO("output: " << text.substr(0, 2000));
  REQUIRE(orchard::testing::IsStrictUtf8(text));
  auto v = orchard::plist::ParseJson(text);
  REQUIRE(v.ok());
  return std::move(v.value());
}

int64_t Int(const Value& v, const char* key) {
  const Value* f = v.Find(key);
  INFO("key " << key << " in " << orchard::plist::ToJson(v));
  REQUIRE(f != nullptr);
  REQUIRE(f->AsInteger() != nullptr);
  return *f->AsInteger();
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// The cursor of a "more ... than --limit; next page: --cursor C" hint.
std::string CursorHint(const std::string& err) {
  const auto at = err.find("--cursor ");
  if (at == std::string::npos) return "";
  std::string cursor = err.substr(at + 9);
  return cursor.substr(0, cursor.find('\n'));
}

std::string Declaration(const std::string& type, const std::string& identifier,
                        const std::string& payload) {
  return R"({"Type":")" + type + R"(","Identifier":")" + identifier + R"(","Payload":)" + payload +
         "}";
}
const std::string kActivation = Declaration("com.apple.activation.simple", "act.base",
                                            R"({"StandardConfigurations":["cfg.passcode"]})");
const std::string kPasscode =
    Declaration("com.apple.configuration.passcode.settings", "cfg.passcode",
                R"({"RequirePasscode":true,"MinimumLength":6})");
std::string Extra(int n) {
  return Declaration("com.apple.configuration.management.test", "cfg.extra" + std::to_string(n),
                     R"({"Echo":"extra )" + std::to_string(n) + R"("})");
}

// orchardd with a device CA (simulated devices send their certificate in a
// header) and an API key, in a fresh directory.
struct Server {
  std::string dir = MakeTempDir("orchard-ctl-ddm-it");
  std::unique_ptr<TestCa> ca = TestCa::Create("Device CA (ctl ddm it)");
  std::unique_ptr<OrchardProcess> proc;

  Server() {
    REQUIRE(ca->WriteCertPem(dir + "/device-ca.pem"));
    proc = std::make_unique<OrchardProcess>(
        dir + "/data",
        std::vector<std::string>{"--device-ca", dir + "/device-ca.pem", "--api-key", kKey});
    const bool started = proc->Start();
    if (!started) UNSCOPED_INFO("orchardd log:\n" << ReadFile(proc->log_path()));
    REQUIRE(started);
  }
  ~Server() {
    proc.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  // Runs orchardctl against this server (the key in the environment); args are
  // shell text, stdin_text (when given) is what it reads on stdin.
  CtlRun Ctl(const std::string& args, const std::string* stdin_text = nullptr) const {
    const std::string in_path = dir + "/ctl.stdin", err_path = dir + "/ctl.stderr";
    REQUIRE(WriteFile(in_path, stdin_text ? *stdin_text : ""));
    const std::string cmd = std::string("ORCHARD_API_KEY=") + kKey + " " +
                            ShellQuote(OrchardBinary("orchardctl")) + " --url " +
                            ShellQuote(proc->url()) + " " + args + " <" + ShellQuote(in_path) +
                            " 2>" + ShellQuote(err_path);
    CtlRun r;
    FILE* p = popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
    const int status = pclose(p);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.err = ReadFile(err_path);
    return r;
  }
  // orchardctl that must succeed.
  CtlRun Ok(const std::string& args, const std::string* stdin_text = nullptr) const {
    CtlRun r = Ctl(args, stdin_text);
    INFO("orchardctl " << args << "\nstdout: " << r.out << "\nstderr: " << r.err);
    REQUIRE(r.exit_code == 0);
    return r;
  }
  // Writes text to a file in the server's directory; returns its shell-quoted path.
  std::string File(const std::string& name, const std::string& text) const {
    REQUIRE(WriteFile(dir + "/" + name, text));
    return ShellQuote(dir + "/" + name);
  }

  std::unique_ptr<sim::Device> Enroll(uint64_t seed) {
    sim::SimConfig c;
    c.base_url = proc->url();
    c.cert_mode = sim::CertMode::kHeader;
    sim::DeviceState st = sim::RandomDeviceState(sim::Platform::kIos, seed);
    orchard::testing::IssueOptions io;
    io.common_name = st.udid;
    auto d = sim::Device::Create(c, st, ca->Issue(io));
    REQUIRE(d.ok());
    REQUIRE((*d)->Authenticate().ok());
    REQUIRE((*d)->TokenUpdate().ok());
    return std::move(d.value());
  }
};

// The Data (a TokensResponse) of the DeclarativeManagement command the device
// gets in one session; "" when it gets none.
std::string RunSessionForSync(sim::Device& d) {
  d.ClearReceived();
  REQUIRE(d.RunSession().ok());
  std::string data;
  for (const auto& c : d.received()) {
    if (c.request_type != "DeclarativeManagement") continue;
    const Value* cmd = c.command.Find("Command");
    REQUIRE(cmd != nullptr);
    REQUIRE(cmd->GetData("Data") != nullptr);
    data = *cmd->GetData("Data");
  }
  return data;
}

}  // namespace

TEST_CASE("orchardctl ddm puts declarations and lists them page by page",
          "[integration][ctl][ddm]") {
  Server s;

  // From a file, then from stdin.
  CtlRun r = s.Ok("ddm put " + s.File("act.json", kActivation));
  CHECK(r.out.find("stored declaration act.base\n") == 0);
  CHECK(r.out.find("changed:") != std::string::npos);
  CHECK(r.out.find("tokens_changed:") != std::string::npos);
  CHECK(r.out.find("commands_queued:") != std::string::npos);
  CHECK(r.out.find("server_token:") != std::string::npos);
  r = s.Ok("ddm put -", &kPasscode);
  CHECK(r.out.find("stored declaration cfg.passcode\n") == 0);
  // An identical upload (stdin again, --json): nothing changes.
  Value same = Json(s.Ok("ddm put - --json", &kPasscode).out);
  CHECK_FALSE(same.GetBool("changed", true));
  CHECK(Int(same, "tokens_changed") == 0);
  CHECK(Int(same, "commands_queued") == 0);
  CHECK(same.GetString("server_token").size() > 0);
  CHECK(s.Ok("ddm put -", &kPasscode).out.find("stored declaration cfg.passcode (no change)") == 0);
  for (int i = 1; i <= 3; ++i) s.Ok("ddm put " + s.File("extra.json", Extra(i)));

  // Five declarations, two per page: --limit stops with a cursor, --cursor continues,
  // --all follows the cursors to the end.
  r = s.Ok("ddm declarations --limit 2");
  CHECK(r.out.find("IDENTIFIER") == 0);
  CHECK(r.out.find("MODIFIED") != std::string::npos);
  CHECK(r.out.find("act.base") != std::string::npos);
  CHECK(r.out.find("com.apple.activation.simple") != std::string::npos);
  CHECK(r.out.find("cfg.extra1") != std::string::npos);
  CHECK(r.out.find("cfg.extra2") == std::string::npos);
  CHECK(Count(r.out, "\n") == 3);
  const std::string cursor = CursorHint(r.err);
  REQUIRE_FALSE(cursor.empty());
  r = s.Ok("ddm declarations --limit 2 --cursor " + ShellQuote(cursor));
  CHECK(r.out.find("cfg.extra2") != std::string::npos);
  CHECK(r.out.find("cfg.extra3") != std::string::npos);
  CHECK(r.out.find("act.base") == std::string::npos);
  r = s.Ok("ddm declarations --all --limit 2");
  CHECK(r.err.empty());
  for (const char* id : {"act.base", "cfg.extra1", "cfg.extra2", "cfg.extra3", "cfg.passcode"})
    CHECK(r.out.find(id) != std::string::npos);
  CHECK(Count(r.out, "\n") == 6);
  CHECK(r.out.find("admin") != std::string::npos);  // OWNER

  Value listing = Json(s.Ok("ddm declarations --all --limit 2 --json").out);
  REQUIRE(listing.Find("declarations") != nullptr);
  REQUIRE(listing.Find("declarations")->AsArray() != nullptr);
  const auto& decls = *listing.Find("declarations")->AsArray();
  REQUIRE(decls.size() == 5);
  CHECK(decls[0].GetString("identifier") == "act.base");
  CHECK(decls[4].GetString("identifier") == "cfg.passcode");
  CHECK(decls[4].GetString("type") == "com.apple.configuration.passcode.settings");
  CHECK(listing.GetString("next_cursor").empty());

  // get: the declaration as devices get it, or the summary.
  Value got = Json(s.Ok("ddm get cfg.passcode").out);
  CHECK(got.GetString("Identifier") == "cfg.passcode");
  REQUIRE(got.Find("Payload") != nullptr);
  CHECK(Int(*got.Find("Payload"), "MinimumLength") == 6);
  r = s.Ok("ddm get cfg.passcode --summary");
  CHECK(r.out.find("identifier:") == 0);
  CHECK(r.out.find("server_token:") != std::string::npos);

  // delete: gone from the listing, and get fails clearly.
  r = s.Ok("ddm delete cfg.extra3");
  CHECK(r.out.find("deleted declaration cfg.extra3") == 0);
  r = s.Ctl("ddm get cfg.extra3");
  CHECK(r.exit_code == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("no declaration cfg.extra3") != std::string::npos);
  CHECK(r.err.find("HTTP 404") != std::string::npos);
  CHECK(s.Ok("ddm declarations").out.find("cfg.extra3") == std::string::npos);
}

TEST_CASE("orchardctl ddm sets and assign drive a simulated device and read its status back",
          "[integration][ctl][ddm]") {
  Server s;
  auto dev = s.Enroll(0xc7d1);
  const std::string id = dev->udid();
  s.Ok("ddm put -", &kActivation);
  s.Ok("ddm put -", &kPasscode);
  const std::string extra = Extra(1);
  s.Ok("ddm put -", &extra);

  // A set: nothing is queued until an enrollment has it.
  CtlRun r = s.Ok("ddm set-add base act.base");
  CHECK(r.out.find("added declaration act.base to set base") == 0);
  Value added = Json(s.Ok("ddm set-add base cfg.passcode --json").out);
  CHECK(added.GetBool("changed", false));
  CHECK(Int(added, "tokens_changed") == 0);
  CHECK(s.Ok("ddm sets").out == "SET\nbase\n");
  r = s.Ok("ddm set base");
  CHECK(r.out.find("DECLARATION\nact.base\ncfg.passcode\n") == 0);
  CHECK(r.out.find("no enrollment is assigned set base") != std::string::npos);
  CHECK(s.Ok("queue " + id).out.find("DeclarativeManagement") == std::string::npos);

  // Before any assignment the device would get an empty manifest.
  r = s.Ok("ddm status " + id);
  CHECK(r.out.find("enabled:") != std::string::npos);
  CHECK(r.out.find("has not made a DeclarativeManagement check-in yet") != std::string::npos);
  CHECK(r.out.find("no declaration status reported") != std::string::npos);

  // assign: the enrollment's token changes and the sync command is queued.
  Value assigned = Json(s.Ok("ddm assign " + id + " base --nonotify --json").out);
  CHECK(Int(assigned, "tokens_changed") == 1);
  CHECK(Int(assigned, "commands_queued") == 1);
  CHECK(Int(assigned, "pushed") == 0);
  r = s.Ok("queue " + id);
  CHECK(Count(r.out, "DeclarativeManagement") == 1);
  CHECK(s.Ok("ddm sets --enrollment " + id).out == "SET\nbase\n");
  CHECK(s.Ok("ddm sets --declaration cfg.passcode").out == "SET\nbase\n");
  CHECK(s.Ok("ddm sets --declaration cfg.extra1").out == "no set carries declaration cfg.extra1\n");
  r = s.Ok("ddm set base --json");
  Value set = Json(r.out);
  REQUIRE(set.Find("enrollment_ids") != nullptr);
  REQUIRE(set.Find("enrollment_ids")->AsArray() != nullptr);
  REQUIRE(set.Find("enrollment_ids")->AsArray()->size() == 1);
  CHECK(*set.Find("enrollment_ids")->AsArray()->at(0).AsString() == id);
  CHECK(set.Find("declarations")->AsArray()->size() == 2);

  // preview: what the device will be answered.
  Value tokens = Json(s.Ok("ddm preview " + id + " tokens").out);
  REQUIRE(tokens.Find("SyncTokens") != nullptr);
  const std::string token(tokens.Find("SyncTokens")->GetString("DeclarationsToken"));
  CHECK(token.size() == 64);
  r = s.Ok("ddm preview " + id + " declaration-items");
  CHECK(r.out.find("cfg.passcode") != std::string::npos);
  CHECK(r.out.find("cfg.extra1") == std::string::npos);
  Value preview = Json(s.Ok("ddm preview " + id + " declaration/configuration/cfg.passcode").out);
  CHECK(preview.GetString("Identifier") == "cfg.passcode");
  CHECK(Json(s.Ok("ddm preview " + id + " declaration activation act.base").out)
            .GetString("Identifier") == "act.base");
  r = s.Ctl("ddm preview " + id + " declaration/configuration/cfg.extra1");
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("answered 404") != std::string::npos);

  // No report yet.
  CHECK(s.Ok("ddm values " + id).out == "no status values from " + id + "\n");
  CHECK(s.Ok("ddm errors " + id).out == "no status errors reported by " + id + "\n");
  CHECK(s.Ok("ddm report " + id).out == "no status reports stored for " + id + "\n");

  // The device gets the command, syncs and reports what it holds.
  const std::string data = RunSessionForSync(*dev);
  REQUIRE_FALSE(data.empty());
  sim::DdmClient ddm(dev.get());
  auto synced = ddm.Sync(data);
  REQUIRE(synced.ok());
  CHECK(synced->fetched == 2);
  CHECK(ddm.token() == token);
  r = s.Ok("ddm status " + id);
  CHECK(r.out.find("declarations_token:") != std::string::npos);
  CHECK(r.out.find(token) != std::string::npos);
  CHECK(r.out.find("has not made") == std::string::npos);
  CHECK(r.out.find("IDENTIFIER") != std::string::npos);
  CHECK(r.out.find("act.base") != std::string::npos);
  CHECK(r.out.find("cfg.passcode") != std::string::npos);
  {
    const size_t row = r.out.find("\ncfg.passcode ");
    REQUIRE(row != std::string::npos);
    const std::string line = r.out.substr(row + 1, r.out.find('\n', row + 1) - row - 1);
    CHECK(line.find("configuration") != std::string::npos);
    CHECK(line.find("valid") != std::string::npos);
    CHECK(Count(line, "yes") == 2);  // ACTIVE, CURRENT
  }
  Value status = Json(s.Ok("ddm status " + id + " --json").out);
  REQUIRE(status.Find("state") != nullptr);
  CHECK(status.Find("state")->GetBool("enabled", false));
  CHECK(status.Find("state")->GetBool("in_sync", false));
  REQUIRE(status.Find("declaration_status") != nullptr);
  REQUIRE(status.Find("declaration_status")->AsArray() != nullptr);
  REQUIRE(status.Find("declaration_status")->AsArray()->size() == 2);
  for (const Value& d : *status.Find("declaration_status")->AsArray())
    CHECK(d.GetBool("current", false));

  // Status values, an error report, the raw reports.
  auto code =
      ddm.Report(R"({"device":{"operating-system":{"version":"26.0","build-version":"23A341"}}})");
  REQUIRE(code.ok());
  CHECK(*code == 200);
  r = s.Ok("ddm values " + id + " --prefix device.");
  CHECK(r.out.find("ITEM") == 0);
  CHECK(r.out.find("device.operating-system.version") != std::string::npos);
  CHECK(r.out.find("26.0") != std::string::npos);
  Value values = Json(s.Ok("ddm values " + id + " --prefix device. --limit 1 --all --json").out);
  REQUIRE(values.Find("values")->AsArray()->size() == 2);
  CHECK(values.Find("values")->AsArray()->at(1).GetString("value") == "26.0");
  r = s.Ok("ddm values " + id + " --prefix device. --limit 1");
  CHECK(Count(r.out, "\n") == 2);
  CHECK_FALSE(CursorHint(r.err).empty());
  const std::string errors =
      R"({"StatusItems":{},"Errors":[{"StatusItem":"softwareupdate.failure-reason",)"
      R"("Reasons":[{"Code":"Error.CtlTest","Description":"a test error"}]}],"FullReport":false})";
  auto reported = ddm.Call("status", &errors);
  REQUIRE(reported.ok());
  REQUIRE(reported->status == 200);
  r = s.Ok("ddm errors " + id);
  CHECK(r.out.find("STATUS ITEM") == 0);
  CHECK(r.out.find("softwareupdate.failure-reason") != std::string::npos);
  CHECK(r.out.find("Error.CtlTest") != std::string::npos);
  CHECK(r.out.find("a test error") != std::string::npos);
  r = s.Ok("ddm report " + id);
  CHECK(Count(r.out, "report received ") == 1);
  CHECK(r.out.find("Error.CtlTest") != std::string::npos);
  Value reports = Json(s.Ok("ddm report " + id + " --limit 3 --json").out);
  REQUIRE(reports.Find("reports") != nullptr);
  CHECK(reports.Find("reports")->AsArray()->size() == 3);

  // touch: a new server token for the same content, and a new sync command.
  Value before = Json(s.Ok("ddm get cfg.passcode --summary --json").out);
  r = s.Ok("ddm touch cfg.passcode --nonotify");
  CHECK(r.out.find("touched declaration cfg.passcode") == 0);
  CHECK(r.out.find("server_token:") != std::string::npos);
  CHECK(r.out.find(std::string(before.GetString("server_token"))) == std::string::npos);
  CHECK(r.out.find("not pushed (--nonotify)") != std::string::npos);
  Value after = Json(s.Ok("ddm get cfg.passcode --summary --json").out);
  CHECK(after.GetString("server_token") != before.GetString("server_token"));
  CHECK(Int(after, "revision") == Int(before, "revision") + 1);
  CHECK(Json(s.Ok("ddm preview " + id + " tokens").out)
            .Find("SyncTokens")
            ->GetString("DeclarationsToken") != token);
  CHECK(Count(s.Ok("queue " + id).out, "DeclarativeManagement") == 1);

  // sync: one pending sync command however often it is asked for.
  r = s.Ok("ddm sync " + id);
  CHECK(r.out.find("requested a sync of 1 enrollment\n") == 0);
  CHECK(r.out.find("\nchanged:") == std::string::npos);  // a sync writes no declaration
  CHECK(r.out.find("commands_queued:") != std::string::npos);
  CHECK(Count(s.Ok("queue " + id).out, "DeclarativeManagement") == 1);

  // unassign and set-remove: the enrollment's token changes again.
  Value unassigned = Json(s.Ok("ddm unassign " + id + " base --json").out);
  CHECK(Int(unassigned, "tokens_changed") == 1);
  CHECK(s.Ok("ddm sets --enrollment " + id).out == "no sets assigned to " + id + "\n");
  r = s.Ok("ddm set-remove base act.base");
  CHECK(r.out.find("removed declaration act.base from set base") == 0);
  CHECK(s.Ok("ddm set base").out.find("DECLARATION\ncfg.passcode\n") == 0);
  Value items = Json(s.Ok("ddm preview " + id + " declaration-items").out);
  CHECK(orchard::plist::ToJson(items).find("cfg.passcode") == std::string::npos);
}

TEST_CASE("orchardctl ddm refuses bad usage with exit 2 and reports server errors clearly",
          "[integration][ctl][ddm]") {
  Server s;
  struct Bad {
    const char* args;
    const char* message;
  };
  for (const Bad& b : {
           Bad{"ddm", "give an action: declarations, get, put"},
           Bad{"ddm frobnicate", "unknown action \"frobnicate\""},
           Bad{"ddm put", "usage: orchardctl ddm put FILE|- [--nonotify]"},
           Bad{"ddm put a.json b.json", "give exactly one declaration file"},
           Bad{"ddm put /nonexistent/decl.json", "cannot read /nonexistent/decl.json"},
           Bad{"ddm put -", "stdin is empty"},
           Bad{"ddm get", "usage: orchardctl ddm get IDENTIFIER"},
           Bad{"ddm assign ONLY-ONE", "give an enrollment id and a set name"},
           Bad{"ddm set-add base", "give a set name and a declaration identifier"},
           Bad{"ddm preview ID", "tokens, declaration-items or declaration/KIND/IDENTIFIER"},
           Bad{"ddm preview ID bogus", "usage: orchardctl ddm preview"},
           Bad{"ddm preview ID declaration/configuration", "declaration/KIND/IDENTIFIER"},
           Bad{"ddm status", "give exactly one enrollment id"},
           Bad{"ddm sync", "give one or more enrollment ids"},
           Bad{"ddm declarations --nonotify", "--nonotify does not apply to ddm declarations"},
           Bad{"ddm declarations --limit 0", "--limit must be a positive integer"},
           Bad{"ddm declarations --all --cursor X", "--all and --cursor cannot be combined"},
           Bad{"ddm sets --enrollment A --declaration B", "not both"},
           Bad{"ddm report ID --limit 101", "--limit must be an integer from 1 to 100"},
           Bad{"ddm touch --frob", "unknown option --frob"},
       }) {
    CtlRun r = s.Ctl(b.args);
    INFO(b.args << "\nstderr: " << r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.out.empty());
    CHECK(r.err.find(b.message) != std::string::npos);
  }

  // Unknown declarations and bad declarations: the server's reason, exit 1.
  for (const char* args :
       {"ddm get nope", "ddm touch nope", "ddm delete nope", "ddm set-add base nope"}) {
    CtlRun r = s.Ctl(args);
    INFO(args << "\nstderr: " << r.err);
    CHECK(r.exit_code == 1);
    CHECK(r.out.empty());
    CHECK(r.err.find("orchardctl: no declaration ") == 0);
    CHECK(r.err.find("nope") != std::string::npos);
    CHECK(r.err.find("(HTTP 404)") != std::string::npos);
  }
  const std::string no_type = R"({"Identifier":"cfg.x","Payload":{}})";
  CtlRun r = s.Ctl("ddm put -", &no_type);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("(HTTP 400)") != std::string::npos);
  const std::string not_json = "Identifier: cfg.x";
  r = s.Ctl("ddm put " + s.File("bad.json", not_json));
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("(HTTP 400)") != std::string::npos);
  CHECK(s.Ok("ddm declarations").out == "no declarations\n");

  // A wrong key is refused with a hint; --json does not change the error.
  r = s.Ctl("--api-key wrong-key-000000000000 ddm declarations --json");
  CHECK(r.exit_code == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("HTTP 401") != std::string::npos);
  CHECK(r.err.find("hint:") != std::string::npos);
}
