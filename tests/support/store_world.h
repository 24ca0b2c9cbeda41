// The core services on a real RocksDB for in-process tests: a store in a temp
// directory (or a given path), the event log, the command queue, enrollments
// and their locks, the one command path with a recording push provider.
// Header-only: a test links the modules it uses (store, events, queue, domain).
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include <catch2/catch.hpp>

#include "domain/commands.h"
#include "domain/enrollments.h"
#include "events/events.h"
#include "queue/queue.h"
#include "store/store.h"
#include "support/orchardd_process.h"
#include "support/recording_push.h"
#include "util/encoding.h"

namespace orchard::testing {

struct StoreWorld {
  // A new store in a temp directory (removed afterwards) named after prefix.
  explicit StoreWorld(const char* prefix) : StoreWorld(MakeTempDir(prefix), "/db", true) {}
  // The store at path (kept afterwards).
  static std::unique_ptr<StoreWorld> At(const std::string& path) {
    return std::unique_ptr<StoreWorld>(new StoreWorld(path, "", false));
  }
  ~StoreWorld() {
    db.reset();
    if (remove_) std::filesystem::remove_all(dir);
  }
  StoreWorld(const StoreWorld&) = delete;
  StoreWorld& operator=(const StoreWorld&) = delete;

  // An enrolled device channel with a push token (serial "SER-<id>").
  static store::Enrollment Enrolled(const std::string& id) {
    store::Enrollment e;
    e.id = id;
    e.udid = id;
    e.serial = "SER-" + id;
    e.state = store::EnrollmentState::kEnrolled;
    e.push_token = "tok";
    e.push_magic = "magic";
    e.last_seen_ms = NowMillis();
    return e;
  }
  void Put(const store::Enrollment& e) {
    store::Batch b;
    enrollments.Put(b, std::nullopt, e);
    REQUIRE(db->Write(b).ok());
  }
  void Enroll(const std::string& id) { Put(Enrolled(id)); }

  std::string dir;

 private:
  bool remove_;
  StoreWorld(std::string d, const std::string& sub, bool remove)
      : dir(std::move(d)), remove_(remove), db(Open(dir + sub)), log(std::move(events::EventLog::Open(db.get()).value())) {}
  static std::unique_ptr<store::Store> Open(const std::string& path) {
    auto s = store::Store::Open({.path = path});
    REQUIRE(s.ok());
    return std::move(s.value());
  }

 public:
  std::unique_ptr<store::Store> db;
  std::unique_ptr<events::EventLog> log;
  queue::CommandQueue queue{db.get()};
  domain::Enrollments enrollments{db.get()};
  domain::EnrollmentLocks locks;
  RecordingPush push;
  domain::CommandService commands{{log.get(), &queue, &enrollments, &locks, &push}};
};

}  // namespace orchard::testing
