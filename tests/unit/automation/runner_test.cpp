// The runner with an in-memory event source and committer: order per device,
// checkpoints committed with decisions, retries, parking, host failures,
// restart from checkpoints, unregistering, backpressure.
#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "automation/runner.h"
#include "util/encoding.h"

using namespace orchard;
using namespace orchard::automation;

namespace {

class FakeSource : public EventSource {
 public:
  void Add(const std::string& type, const std::string& id) {
    std::lock_guard lock(mu_);
    events::Event e;
    e.seq = ++last_;
    e.type = type;
    e.enrollment_id = id;
    e.time_ms = NowMillis();
    events_.push_back(e);
    cv_.notify_all();
  }
  Result<std::vector<events::Event>> Read(uint32_t, uint64_t after, size_t limit) override {
    std::lock_guard lock(mu_);
    std::vector<events::Event> out;
    for (const auto& e : events_)
      if (e.seq > after && out.size() < limit) out.push_back(e);
    return out;
  }
  bool WaitFor(uint32_t, uint64_t after, std::chrono::milliseconds t) override {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, t, [&] { return last_ > after; });
  }
  uint64_t Head(uint32_t) override {
    std::lock_guard lock(mu_);
    return last_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<events::Event> events_;
  uint64_t last_ = 0;
};

class FakeCommitter : public Committer {
 public:
  Status Commit(const LaneKey& lane, uint64_t seq, uint64_t epoch, std::vector<RunRecord>& runs) override {
    std::lock_guard lock(mu_);
    if (fail_next > 0) {
      --fail_next;
      return Status::Io("injected commit failure");
    }
    auto& cp = checkpoints[lane.consumer][lane.lane];
    REQUIRE(seq >= cp.seq);  // checkpoints never move back
    cp = {seq, epoch};
    for (auto& r : runs) committed.push_back(r);
    return Status::Ok();
  }
  Result<std::map<int, SavedCheckpoint>> LoadCheckpoints(const std::string& consumer, uint32_t) override {
    std::lock_guard lock(mu_);
    return checkpoints[consumer];
  }
  Status DropCheckpoints(const std::string& consumer) override {
    std::lock_guard lock(mu_);
    checkpoints.erase(consumer);
    return Status::Ok();
  }
  HostReader* reader() override { return &host; }

  std::vector<RunRecord> Committed() {
    std::lock_guard lock(mu_);
    return committed;
  }

  MemoryHost host;
  std::mutex mu_;
  int fail_next = 0;
  std::map<std::string, std::map<int, SavedCheckpoint>> checkpoints;
  std::vector<RunRecord> committed;
};

class FnConsumer : public Consumer {
 public:
  using Fn = std::function<RunOutcome(int lane, const events::Event&, Decisions*)>;
  FnConsumer(std::string name, Fn fn, int lanes = 2, bool at_head = false)
      : name_(std::move(name)), fn_(std::move(fn)), lanes_(lanes), at_head_(at_head) {}
  const std::string& name() const override { return name_; }
  int lanes() const override { return lanes_; }
  bool Wants(const events::Event& e) const override { return e.type != "ignored"; }
  bool StartAtHead() const override { return at_head_; }
  RunOutcome Handle(int lane, const events::Event& e, const std::string&, HostReader*, Decisions* out,
                    bool*) override {
    return fn_(lane, e, out);
  }

 private:
  std::string name_;
  Fn fn_;
  int lanes_;
  bool at_head_;
};

RunnerOptions Fast() {
  RunnerOptions o;
  o.commit_interval_ms = 20;
  o.poll_ms = 20;
  o.host_retry_ms = 5;
  return o;
}

Decisions Put(const std::string& key) {
  Decisions d;
  d.kv.push_back({key, std::string("1")});
  return d;
}

}  // namespace

TEST_CASE("runner: every event once, in order per device, with its decisions", "[automation][runner]") {
  FakeSource source;
  FakeCommitter committer;
  Runner runner(Fast(), &source, &committer);
  std::mutex mu;
  std::map<std::string, std::vector<uint64_t>> seen;
  std::set<std::thread::id> threads;
  REQUIRE(runner.Register(std::make_shared<FnConsumer>("c", [&](int, const events::Event& e, Decisions* d) {
            std::lock_guard lock(mu);
            seen[e.enrollment_id].push_back(e.seq);
            threads.insert(std::this_thread::get_id());
            *d = Put(e.enrollment_id + "/" + std::to_string(e.seq));
            return RunOutcome{};
          }, 4)).ok());
  for (int i = 0; i < 400; ++i) source.Add(i % 7 == 0 ? "ignored" : "x", "DEV-" + std::to_string(i % 13) + (i % 2 ? ":user" : ""));
  REQUIRE(runner.WaitCaughtUp(std::chrono::seconds(10)));
  size_t total = 0;
  for (auto& [id, seqs] : seen) {
    CHECK(std::is_sorted(seqs.begin(), seqs.end()));
    CHECK(std::set<uint64_t>(seqs.begin(), seqs.end()).size() == seqs.size());
    total += seqs.size();
  }
  CHECK(total == 400 - 58);  // the ignored ones were filtered
  CHECK(threads.size() > 1);   // lanes ran in parallel
  CHECK(committer.Committed().size() == total);
  // Every lane's checkpoint reached the head, ignored events included.
  for (auto& [lane, cp] : committer.checkpoints["c"]) CHECK(cp.seq == source.Head(0));
  auto st = runner.Statuses();
  REQUIRE(st.size() == 1);
  CHECK(st[0].handled == total);
  CHECK(st[0].pending == 0);
}

TEST_CASE("runner: a device's user channels share its lane", "[automation][runner]") {
  for (int lanes : {2, 3, 8}) {
    CHECK(Runner::LaneOf("ABC", lanes) == Runner::LaneOf("ABC:501", lanes));
    CHECK(Runner::LaneOf("ABC", lanes) == Runner::LaneOf("ABC:jdoe", lanes));
  }
  CHECK(Runner::LaneOf("anything", 1) == 0);
}

TEST_CASE("runner: a failing event is retried, then parked, and the stream moves on", "[automation][runner]") {
  FakeSource source;
  FakeCommitter committer;
  RunnerOptions o = Fast();
  o.max_attempts = 3;
  Runner runner(o, &source, &committer);
  std::atomic<int> poison_attempts{0};
  REQUIRE(runner.Register(std::make_shared<FnConsumer>("c", [&](int, const events::Event& e, Decisions* d) {
            if (e.type == "poison") {
              ++poison_attempts;
              d->logs.push_back({LogLevel::kInfo, "trying"});
              return RunOutcome{RunError::kScript, "boom"};
            }
            *d = Put(std::to_string(e.seq));
            return RunOutcome{};
          }, 1)).ok());
  source.Add("x", "D");
  source.Add("poison", "D");
  source.Add("x", "D");
  REQUIRE(runner.WaitCaughtUp(std::chrono::seconds(10)));
  CHECK(poison_attempts == 3);
  auto runs = committer.Committed();
  REQUIRE(runs.size() == 3);
  CHECK_FALSE(runs[0].parked);
  CHECK(runs[1].parked);
  CHECK(runs[1].attempts == 3);
  CHECK(runs[1].outcome.error == RunError::kScript);
  CHECK(runs[1].outcome.message == "boom");
  CHECK_FALSE(runs[1].decisions.HasEffects());
  CHECK(runs[2].event.seq == 3);
  CHECK(runner.Statuses()[0].parked == 1);
  CHECK(runner.Statuses()[0].last_error.find("boom") != std::string::npos);
}

TEST_CASE("runner: host failures are retried without parking", "[automation][runner]") {
  FakeSource source;
  FakeCommitter committer;
  Runner runner(Fast(), &source, &committer);
  std::atomic<int> calls{0};
  REQUIRE(runner.Register(std::make_shared<FnConsumer>("c", [&](int, const events::Event&, Decisions* d) {
            if (++calls <= 5) return RunOutcome{RunError::kHost, "disk on fire"};
            *d = Put("k");
            return RunOutcome{};
          }, 1)).ok());
  source.Add("x", "D");
  REQUIRE(runner.WaitCaughtUp(std::chrono::seconds(10)));
  CHECK(calls == 6);
  REQUIRE(committer.Committed().size() == 1);
  CHECK_FALSE(committer.Committed()[0].parked);
}

TEST_CASE("runner: a failed commit is retried and writes each run once", "[automation][runner]") {
  FakeSource source;
  FakeCommitter committer;
  Runner runner(Fast(), &source, &committer);
  REQUIRE(runner.Register(std::make_shared<FnConsumer>("c", [&](int, const events::Event& e, Decisions* d) {
            *d = Put(std::to_string(e.seq));
            return RunOutcome{};
          }, 1)).ok());
  {
    std::lock_guard lock(committer.mu_);
    committer.fail_next = 3;
  }
  for (int i = 0; i < 5; ++i) source.Add("x", "D");
  REQUIRE(runner.WaitCaughtUp(std::chrono::seconds(10)));
  CHECK(committer.Committed().size() == 5);
  CHECK(committer.fail_next == 0);
}

TEST_CASE("runner: a restart resumes after the committed checkpoints", "[automation][runner]") {
  FakeSource source;
  FakeCommitter committer;
  std::atomic<int> handled{0};
  auto make = [&] {
    return std::make_shared<FnConsumer>("c", [&](int, const events::Event& e, Decisions* d) {
      ++handled;
      *d = Put(std::to_string(e.seq));
      return RunOutcome{};
    }, 2);
  };
  {
    Runner runner(Fast(), &source, &committer);
    REQUIRE(runner.Register(make()).ok());
    for (int i = 0; i < 50; ++i) source.Add("x", "D" + std::to_string(i % 5));
    REQUIRE(runner.WaitCaughtUp(std::chrono::seconds(10)));
  }
  CHECK(handled == 50);
  for (int i = 0; i < 10; ++i) source.Add("x", "D" + std::to_string(i % 5));
  Runner runner(Fast(), &source, &committer);
  REQUIRE(runner.Register(make()).ok());
  REQUIRE(runner.WaitCaughtUp(std::chrono::seconds(10)));
  CHECK(handled == 60);
  CHECK(committer.Committed().size() == 60);

  // With another lane count every lane restarts at the lowest checkpoint.
  runner.Stop();
  Runner resized(Fast(), &source, &committer);
  REQUIRE(resized.Register(std::make_shared<FnConsumer>("c", [&](int, const events::Event&, Decisions*) {
            ++handled;
            return RunOutcome{};
          }, 3)).ok());
  REQUIRE(resized.WaitCaughtUp(std::chrono::seconds(10)));
  CHECK(handled == 60);  // all lanes were at the head: nothing to replay
}

TEST_CASE("runner: a new consumer starts at the head unless it asks for history", "[automation][runner]") {
  FakeSource source;
  FakeCommitter committer;
  for (int i = 0; i < 10; ++i) source.Add("x", "D");
  Runner runner(Fast(), &source, &committer);
  std::atomic<int> head_seen{0}, history_seen{0};
  REQUIRE(runner.Register(std::make_shared<FnConsumer>("head", [&](int, const events::Event&, Decisions*) {
            ++head_seen;
            return RunOutcome{};
          }, 1, true)).ok());
  REQUIRE(runner.Register(std::make_shared<FnConsumer>("all", [&](int, const events::Event&, Decisions*) {
            ++history_seen;
            return RunOutcome{};
          }, 1, false)).ok());
  source.Add("x", "D");
  REQUIRE(runner.WaitCaughtUp(std::chrono::seconds(10)));
  CHECK(head_seen == 1);
  CHECK(history_seen == 11);
  CHECK_FALSE(runner.Register(std::make_shared<FnConsumer>("all", nullptr)).ok());
}

TEST_CASE("runner: unregistering stops delivery and can drop the checkpoints", "[automation][runner]") {
  FakeSource source;
  FakeCommitter committer;
  Runner runner(Fast(), &source, &committer);
  std::atomic<int> n{0};
  REQUIRE(runner.Register(std::make_shared<FnConsumer>("c", [&](int, const events::Event&, Decisions*) {
            ++n;
            return RunOutcome{};
          }, 1, false)).ok());
  source.Add("x", "D");
  REQUIRE(runner.WaitCaughtUp(std::chrono::seconds(10)));
  REQUIRE(runner.Unregister("c", true).ok());
  CHECK(committer.checkpoints.count("c") == 0);
  source.Add("x", "D");
  CHECK(runner.WaitCaughtUp(std::chrono::seconds(1)));  // nothing registered to wait for
  CHECK(n == 1);
  CHECK(runner.Unregister("c", false).code() == Code::kNotFound);
}

TEST_CASE("runner: a slow lane holds the reader back (bounded queue)", "[automation][runner]") {
  FakeSource source;
  FakeCommitter committer;
  RunnerOptions o = Fast();
  o.lane_queue = 8;
  o.commit_batch = 4;
  Runner runner(o, &source, &committer);
  std::mutex gate_mu;
  std::condition_variable gate_cv;
  bool open = false;
  REQUIRE(runner.Register(std::make_shared<FnConsumer>("c", [&](int, const events::Event&, Decisions*) {
            std::unique_lock lock(gate_mu);
            gate_cv.wait(lock, [&] { return open; });
            return RunOutcome{};
          }, 1)).ok());
  for (int i = 0; i < 100; ++i) source.Add("x", "D");
  // The reader stops once the lane's queue is full: it cannot read ahead.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  uint64_t pending = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    pending = runner.Statuses()[0].pending;
    if (pending == 8) break;
    std::this_thread::yield();
  }
  CHECK(pending == 8);
  CHECK(runner.Statuses()[0].read != "0.100");
  {
    std::lock_guard lock(gate_mu);
    open = true;
  }
  gate_cv.notify_all();
  REQUIRE(runner.WaitCaughtUp(std::chrono::seconds(10)));
  CHECK(runner.Statuses()[0].handled == 100);
}

TEST_CASE("runner: a new consumer's starting point is saved at once", "[automation][runner]") {
  FakeSource source;
  FakeCommitter committer;
  for (int i = 0; i < 5; ++i) source.Add("x", "D");
  std::atomic<int> n{0};
  auto make = [&] {
    return std::make_shared<FnConsumer>("c", [&](int, const events::Event&, Decisions*) {
      ++n;
      return RunOutcome{};
    }, 2, /*at_head=*/true);
  };
  {
    Runner runner(Fast(), &source, &committer);
    REQUIRE(runner.Register(make()).ok());
    // Stopped at once: nothing handled, nothing committed by the lanes yet.
  }
  for (auto& [lane, cp] : committer.checkpoints["c"]) CHECK(cp.seq == 5);
  // Events arriving while it was down are not skipped by a new "head".
  for (int i = 0; i < 3; ++i) source.Add("x", "D");
  Runner runner(Fast(), &source, &committer);
  REQUIRE(runner.Register(make()).ok());
  REQUIRE(runner.WaitCaughtUp(std::chrono::seconds(10)));
  CHECK(n == 3);
}
