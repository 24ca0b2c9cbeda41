// kill -9 while a declaration change fans out to thousands of enrollments: a
// child process (this binary re-executed with a hidden test, so nothing
// RocksDB started is inherited across fork) edits a declaration in a set
// assigned to every enrollment, again and again; the parent kills it at a
// random moment, reopens the store and checks every enrollment: exactly one
// pending DeclarativeManagement command, whose TokensResponse carries the
// DeclarationsToken its manifest has now, and whose UUID is the one the
// enrollment's DDM state names.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <thread>

#include "ddm/service.h"
#include "plist/plist.h"
#include "support/kill9.h"
#include "support/store_world.h"

using namespace orchard;

namespace {

#ifdef __SANITIZE_ADDRESS__
constexpr int kEnrollments = 2000;  // instrumented: the same paths, fewer of them
constexpr int kTrials = 2;
#else
constexpr int kEnrollments = 10000;
constexpr int kTrials = 3;
#endif

// The services on one store, with DDM.
struct Services {
  std::unique_ptr<testing::StoreWorld> w;
  std::unique_ptr<ddm::DdmService> ddm;
  explicit Services(const std::string& path) : w(testing::StoreWorld::At(path)) {
    ddm = std::make_unique<ddm::DdmService>(
        ddm::DdmOptions{}, ddm::DdmDeps{w->db.get(), w->log.get(), &w->queue, &w->enrollments, &w->locks, &w->commands});
  }
  ~Services() { ddm.reset(); }
};

std::string Id(int i) { return "ENR-" + std::to_string(100000 + i); }

std::string Declaration(int revision) {
  return R"({"Type":"com.apple.configuration.passcode.settings","Identifier":"cfg.passcode",)"
         R"("Payload":{"RequirePasscode":true,"MinimumLength":)" +
         std::to_string(4 + revision % 10) + R"(,"MaximumFailedAttempts":)" + std::to_string(2 + revision % 9) +
         "}}";
}

// Enrolled channels, all assigned the set "all" holding cfg.passcode.
void Seed(const std::string& path) {
  Services s(path);
  store::Batch b;
  for (int i = 0; i < kEnrollments; ++i) s.w->enrollments.Put(b, std::nullopt, testing::StoreWorld::Enrolled(Id(i)));
  REQUIRE(s.w->db->Write(b).ok());
  REQUIRE(s.ddm->Put(Declaration(0), "admin", false).ok());
  REQUIRE(s.ddm->SetAdd("all", "cfg.passcode", false).ok());
  for (int i = 0; i < kEnrollments; ++i) REQUIRE(s.ddm->Assign(Id(i), "all", false).ok());
}

}  // namespace

// The writer (see the top): edits the declaration in a loop, acknowledging
// each revision once it is committed.
TEST_CASE("ddm kill -9 writer child", "[.ddmkill9child]") {
  const char* dir = testing::Kill9Dir();
  if (!dir) return;  // only meaningful when started by the test below
  Services s(dir);
  for (uint32_t revision = 1;; ++revision) {
    auto out = s.ddm->Put(Declaration(static_cast<int>(revision)), "admin", false);
    REQUIRE(out.ok());
    testing::Kill9Ack(revision);
  }
}

TEST_CASE("ddm: kill -9 during a fan-out leaves consistent tokens and one pending sync command each",
          "[ddm][fault]") {
  const std::string root = testing::MakeTempDir("orchard-ddm-kill9");
  const std::string seed = root + "/seed";
  Seed(seed);
  std::mt19937 rng(4242);
  for (int trial = 0; trial < kTrials; ++trial) {
    const std::string db = root + "/db" + std::to_string(trial);
    std::filesystem::copy(seed, db, std::filesystem::copy_options::recursive);
    // After the first acknowledged edit, kill it somewhere inside a later one.
    const int64_t acked =
        testing::Kill9Child("ddm kill -9 writer child", db, 1, std::chrono::microseconds(rng() % 300000));
    INFO("trial " << trial << ": acknowledged revision " << acked);
    REQUIRE(acked >= 1);

    Services s(db);
    auto d = s.ddm->declarations().Get("cfg.passcode").value();
    REQUIRE(d.has_value());
    // The store holds an acknowledged revision or the one in flight, never less.
    auto payload = plist::ParseJson(d->payload_json).value();
    CHECK((*payload.Find("MinimumLength")->AsInteger() == 4 + acked % 10 ||
           *payload.Find("MinimumLength")->AsInteger() == 4 + (acked + 1) % 10));
    size_t checked = 0;
    for (int i = 0; i < kEnrollments; ++i) {
      const std::string id = Id(i);
      auto m = s.ddm->declarations().ManifestOf(id).value();
      REQUIRE(m.configurations.size() == 1);
      CHECK(m.configurations[0].server_token == d->server_token);
      std::vector<store::QueueEntry> syncs;
      for (auto& q : s.w->queue.List(id, 100).value())
        if (q.request_type == "DeclarativeManagement") syncs.push_back(std::move(q));
      INFO("enrollment " << id);
      REQUIRE(syncs.size() == 1);
      auto cmd = plist::ParseXml(syncs[0].plist).value();
      CHECK(cmd.Find("Command")->Find("Data")->AsData()->bytes == ddm::TokensResponseJson(m));
      CHECK(s.ddm->State(id)->pending_command == syncs[0].command_uuid);
      CHECK(s.ddm->declarations().TokenOf(id)->declarations_token == m.declarations_token);  // `tokens`
      ++checked;
    }
    CHECK(checked == static_cast<size_t>(kEnrollments));
  }
  std::filesystem::remove_all(root);
}
