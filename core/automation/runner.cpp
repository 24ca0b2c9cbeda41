#include "automation/runner.h"

#include <algorithm>
#include <charconv>

#include "log/log.h"
#include "util/encoding.h"

namespace orchard::automation {
namespace {
constexpr const char* kLog = "automation";
constexpr uint64_t kEpoch = 1;  // one node: the lease is always held

}  // namespace

std::string Cursor::ToString() const { return std::to_string(partition) + "." + std::to_string(seq); }

std::optional<Cursor> Cursor::Parse(std::string_view text) {
  size_t dot = text.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 >= text.size()) return std::nullopt;
  Cursor c;
  auto [p1, e1] = std::from_chars(text.data(), text.data() + dot, c.partition);
  auto [p2, e2] = std::from_chars(text.data() + dot + 1, text.data() + text.size(), c.seq);
  if (e1 != std::errc() || p1 != text.data() + dot || e2 != std::errc() || p2 != text.data() + text.size())
    return std::nullopt;
  return c;
}

struct Runner::Lane {
  int index = 0;
  std::mutex mu;
  std::condition_variable cv;       // lane: work or stop; reader: room
  std::deque<events::Event> queue;  // events waiting, in order
  uint64_t start = 0;               // checkpoint at registration (the reader skips up to it)
  uint64_t checkpoint = 0;          // committed
  uint64_t reader_mark = 0;         // every event of this lane <= mark was queued (or filtered out)
  uint64_t handled_through = 0;     // every event of this lane <= it handled (maybe not committed)
  int64_t last_commit_ms = 0;
  std::thread thread;
};

struct Runner::Running {
  std::shared_ptr<Consumer> consumer;
  uint32_t partition = 0;
  std::vector<std::unique_ptr<Lane>> lanes;
  std::atomic<bool> stop{false};
  std::thread reader;
  std::atomic<uint64_t> read_seq{0};
  std::atomic<uint64_t> handled{0}, failed{0}, parked{0}, commits{0};
  std::mutex err_mu;
  std::string last_error;
  std::mutex pause_mu;
  std::condition_variable pause_cv;

  void Error(const std::string& e) {
    std::lock_guard lock(err_mu);
    last_error = e;
  }
};

Runner::Runner(const RunnerOptions& options, EventSource* source, Committer* committer)
    : options_(options), source_(source), committer_(committer) {}

Runner::~Runner() { Stop(); }

int Runner::LaneOf(const std::string& id, int lanes) {
  if (lanes <= 1) return 0;
  std::string_view device(id);
  device = device.substr(0, device.find(':'));  // a user channel goes with its device
  return static_cast<int>(StableHash64(device) % static_cast<uint64_t>(lanes));
}

Status Runner::Register(std::shared_ptr<Consumer> consumer) {
  const std::string name = consumer->name();
  std::lock_guard lock(mu_);
  if (running_.count(name)) return Status::AlreadyExists("consumer " + name + " is already registered");
  auto r = std::make_unique<Running>();
  r->consumer = std::move(consumer);
  const int n = std::max(1, r->consumer->lanes());
  auto saved = committer_->LoadCheckpoints(name, r->partition);
  if (!saved.ok()) return saved.status();
  // Lanes own checkpoints; if the lane count changed, every lane restarts
  // from the lowest one (a device may have moved lanes): replays are harmless.
  bool same_lanes = !saved->empty() && static_cast<int>(saved->size()) == n;
  for (const auto& [i, cp] : *saved) same_lanes = same_lanes && i >= 0 && i < n;
  uint64_t lowest = UINT64_MAX;
  for (const auto& [i, cp] : *saved) lowest = std::min(lowest, cp.seq);
  uint64_t start_default = 0;
  if (saved->empty()) {
    start_default = r->consumer->StartAtHead() ? source_->Head(r->partition) : 0;
    // Saved at once: a restart before the first commit must not move the start.
    for (int i = 0; i < n; ++i) {
      std::vector<RunRecord> none;
      ORCHARD_RETURN_IF_ERROR(committer_->Commit({name, r->partition, i}, start_default, kEpoch, none));
    }
  }
  for (int i = 0; i < n; ++i) {
    auto lane = std::make_unique<Lane>();
    lane->index = i;
    if (saved->empty()) lane->checkpoint = start_default;
    else if (same_lanes) lane->checkpoint = saved->at(i).seq;
    else lane->checkpoint = lowest;
    lane->start = lane->checkpoint;
    lane->reader_mark = lane->checkpoint;
    lane->handled_through = lane->checkpoint;
    lane->last_commit_ms = NowMillis();
    r->lanes.push_back(std::move(lane));
  }
  Running* raw = r.get();
  for (auto& lane : raw->lanes) {
    Lane* l = lane.get();
    l->thread = std::thread([this, raw, l] { LaneLoop(raw, l); });
  }
  raw->reader = std::thread([this, raw] { ReaderLoop(raw); });
  log::Info(kLog, "event=consumer_registered consumer={} lanes={} start={}", name, n,
            Cursor{raw->partition, raw->lanes[0]->checkpoint}.ToString());
  running_[name] = std::move(r);
  if (raw->consumer->WantsType(events::type::kDeviceIdle)) idle_wanted_ = true;
  return Status::Ok();
}

void Runner::Stop(Running* r) {
  r->stop = true;
  {
    std::lock_guard lock(r->pause_mu);
    r->pause_cv.notify_all();
  }
  for (auto& l : r->lanes) {
    std::lock_guard lock(l->mu);
    l->cv.notify_all();
  }
  if (r->reader.joinable()) r->reader.join();
  for (auto& l : r->lanes) {
    {
      std::lock_guard lock(l->mu);
      l->cv.notify_all();
    }
    if (l->thread.joinable()) l->thread.join();
  }
}

Status Runner::Unregister(const std::string& name, bool drop_checkpoints) {
  std::unique_ptr<Running> r;
  {
    std::lock_guard lock(mu_);
    auto it = running_.find(name);
    if (it == running_.end() && !drop_checkpoints) return Status::NotFound("no consumer " + name);
    if (it != running_.end()) {
      r = std::move(it->second);
      running_.erase(it);
    }
  }
  if (r) Stop(r.get());
  RefreshInterest();
  if (drop_checkpoints) ORCHARD_RETURN_IF_ERROR(committer_->DropCheckpoints(name));
  log::Info(kLog, "event=consumer_unregistered consumer={} checkpoints_dropped={}", name, drop_checkpoints);
  return Status::Ok();
}

void Runner::Stop() {
  std::map<std::string, std::unique_ptr<Running>> all;
  {
    std::lock_guard lock(mu_);
    all.swap(running_);
  }
  for (auto& [name, r] : all) Stop(r.get());
}

void Runner::ReaderLoop(Running* r) {
  const std::string& name = r->consumer->name();
  uint64_t pos = UINT64_MAX;
  for (auto& l : r->lanes) pos = std::min(pos, l->start);
  int64_t backoff = options_.host_retry_ms;
  while (!r->stop) {
    try {
      auto batch = source_->Read(r->partition, pos, options_.read_batch);
      if (!batch.ok()) {
        r->Error("reading events: " + batch.status().ToString());
        log::Error(kLog, "event=consumer_read_failed consumer={} error=\"{}\"", name, batch.status().message());
        if (!Pause(r, &backoff)) return;
        continue;
      }
      backoff = options_.host_retry_ms;
      // Sorted into lanes first, then handed over with one lock and one
      // wake-up per lane and batch (a wake-up per event costs more than the
      // handler on a busy machine).
      std::vector<std::vector<events::Event>> per_lane(r->lanes.size());
      for (auto& ev : *batch) {
        const size_t li = static_cast<size_t>(LaneOf(ev.enrollment_id, static_cast<int>(r->lanes.size())));
        const uint64_t seq = ev.seq;
        if (seq > r->lanes[li]->start && r->consumer->Wants(ev)) per_lane[li].push_back(std::move(ev));
        pos = seq;
      }
      for (size_t li = 0; li < per_lane.size(); ++li) {
        Lane* lane = r->lanes[li].get();
        auto& evs = per_lane[li];
        size_t next = 0;
        while (next < evs.size()) {
          std::unique_lock lock(lane->mu);
          lane->cv.wait(lock, [&] { return r->stop || lane->queue.size() < options_.lane_queue; });
          if (r->stop) return;
          while (next < evs.size() && lane->queue.size() < options_.lane_queue)
            lane->queue.push_back(std::move(evs[next++]));
          lane->cv.notify_all();
        }
      }
      for (auto& l : r->lanes) {
        std::lock_guard lock(l->mu);
        if (pos > l->reader_mark) {
          l->reader_mark = pos;
          l->cv.notify_all();
        }
      }
      r->read_seq = pos;
      if (batch->size() < options_.read_batch &&
          source_->WaitFor(r->partition, pos, std::chrono::milliseconds(options_.poll_ms)) &&
          options_.read_linger_us > 0 && !r->stop) {
        std::unique_lock lock(r->pause_mu);
        r->pause_cv.wait_for(lock, std::chrono::microseconds(options_.read_linger_us), [&] { return r->stop.load(); });
      }
    } catch (const std::exception& e) {
      r->Error(std::string("reader: ") + e.what());
      log::Error(kLog, "event=consumer_reader_exception consumer={} error=\"{}\"", name, e.what());
    } catch (...) {
      r->Error("reader: unknown exception");
      log::Error(kLog, "event=consumer_reader_exception consumer={}", name);
    }
  }
}

namespace {
bool HasRecords(const std::vector<RunRecord>& runs) {
  for (const auto& run : runs)
    if (run.dry_run || run.parked || run.decisions.HasEffects()) return true;
  return false;
}
}  // namespace

void Runner::LaneLoop(Running* r, Lane* lane) {
  const std::string& name = r->consumer->name();
  std::vector<events::Event> batch;
  while (!r->stop) {
    try {
      uint64_t target = 0;
      {
        std::unique_lock lock(lane->mu);
        // Everything of this lane up to `ready` is handled when the queue is empty.
        auto ready = [&] { return lane->queue.empty() ? std::max(lane->reader_mark, lane->handled_through)
                                                      : lane->handled_through; };
        auto due = [&] {
          return ready() > lane->checkpoint && NowMillis() - lane->last_commit_ms >= options_.commit_interval_ms;
        };
        lane->cv.wait_for(lock, std::chrono::milliseconds(options_.commit_interval_ms),
                          [&] { return r->stop.load() || !lane->queue.empty() || due(); });
        if (r->stop) return;  // uncommitted runs replay after a restart
        const size_t n = std::min(lane->queue.size(), options_.commit_batch);
        batch.assign(std::make_move_iterator(lane->queue.begin()),
                     std::make_move_iterator(lane->queue.begin() + static_cast<ptrdiff_t>(n)));
        lane->queue.erase(lane->queue.begin(), lane->queue.begin() + static_cast<ptrdiff_t>(n));
        target = lane->queue.empty() ? std::max(lane->reader_mark, batch.empty() ? 0 : batch.back().seq)
                                     : batch.back().seq;
        target = std::max(target, lane->handled_through);
        lane->cv.notify_all();  // room for the reader
        if (batch.empty() && !due()) continue;
      }
      std::vector<RunRecord> runs;
      if (!batch.empty() && !RunBatch(r, lane, batch, &runs)) return;  // stopping
      lane->handled_through = target;
      if (!HasRecords(runs) && NowMillis() - lane->last_commit_ms < options_.commit_interval_ms)
        continue;  // nothing to write but the checkpoint: later
      if (!CommitWithRetry(r, lane, target, runs)) return;
    } catch (const std::exception& e) {
      r->Error(std::string("lane: ") + e.what());
      log::Error(kLog, "event=consumer_lane_exception consumer={} lane={} error=\"{}\"", name, lane->index,
                 e.what());
    } catch (...) {
      r->Error("lane: unknown exception");
      log::Error(kLog, "event=consumer_lane_exception consumer={} lane={}", name, lane->index);
    }
  }
}

bool Runner::Pause(Running* r, int64_t* backoff_ms) {
  std::unique_lock lock(r->pause_mu);
  r->pause_cv.wait_for(lock, std::chrono::milliseconds(*backoff_ms), [&] { return r->stop.load(); });
  *backoff_ms = std::min<int64_t>(*backoff_ms * 2, 10000);
  return !r->stop;
}

bool Runner::RunBatch(Running* r, Lane* lane, std::vector<events::Event>& batch, std::vector<RunRecord>* runs) {
  Consumer* c = r->consumer.get();
  Overlay overlay(committer_->reader());
  runs->reserve(batch.size());
  for (auto& ev : batch) {
    const std::string trigger = Cursor{r->partition, ev.seq}.ToString();
    int attempts = 0;
    int64_t backoff = options_.host_retry_ms;
    while (true) {
      RunRecord rec;
      bool dry = false;
      RunOutcome out = c->Handle(lane->index, ev, trigger, &overlay, &rec.decisions, &dry);
      if (out.ok()) {
        rec.attempts = attempts + 1;
        rec.dry_run = dry;
        if (!dry) overlay.Apply(c->name(), rec.decisions);
        r->handled++;
        if (rec.dry_run || rec.decisions.HasEffects() || !rec.decisions.logs.empty()) {
          rec.event = ev;
          rec.event.payload_json.clear();  // kept in the log; not needed again
          runs->push_back(std::move(rec));
        }
        break;
      }
      if (out.error == RunError::kHost) {  // storage trouble: not the event's fault
        r->Error(out.message);
        log::Warn(kLog, "event=consumer_host_error consumer={} cursor={} error=\"{}\"", c->name(), trigger,
                  out.message);
        if (!Pause(r, &backoff)) return false;
        continue;
      }
      ++attempts;
      r->failed++;
      r->Error(std::string(RunErrorName(out.error)) + " at " + trigger + ": " + out.message);
      log::Warn(kLog, "event=consumer_run_failed consumer={} cursor={} type={} enrollment_id={} attempt={} "
                      "error={} message=\"{}\"",
                c->name(), trigger, ev.type, ev.enrollment_id, attempts, RunErrorName(out.error), out.message);
      if (attempts >= options_.max_attempts) {
        rec.event = ev;
        rec.event.payload_json.clear();
        rec.outcome = std::move(out);
        rec.attempts = attempts;
        rec.parked = true;
        rec.decisions.commands.clear();
        rec.decisions.pushes.clear();
        rec.decisions.kv.clear();
        rec.decisions.compliance.clear();
        rec.decisions.ddm.clear();
        r->parked++;
        log::Error(kLog, "event=consumer_event_parked consumer={} cursor={} type={} enrollment_id={} error={}",
                   c->name(), trigger, ev.type, ev.enrollment_id, RunErrorName(rec.outcome.error));
        runs->push_back(std::move(rec));
        break;
      }
    }
  }
  return true;
}

bool Runner::CommitWithRetry(Running* r, Lane* lane, uint64_t target, std::vector<RunRecord>& runs) {
  int64_t backoff = options_.host_retry_ms;
  LaneKey key{r->consumer->name(), r->partition, lane->index};
  while (true) {
    Status st = committer_->Commit(key, target, kEpoch, runs);
    if (st.ok()) break;
    r->Error("commit: " + st.ToString());
    log::Error(kLog, "event=consumer_commit_failed consumer={} lane={} error=\"{}\"", key.consumer, lane->index,
               st.message());
    if (!Pause(r, &backoff)) return false;
  }
  r->commits++;
  std::lock_guard lock(lane->mu);
  lane->checkpoint = std::max(lane->checkpoint, target);
  lane->last_commit_ms = NowMillis();
  lane->cv.notify_all();
  return true;
}

bool Runner::Wanted(std::string_view type) const {
  if (type == events::type::kDeviceIdle) return idle_wanted_.load(std::memory_order_relaxed);
  return true;
}

void Runner::RefreshInterest() {
  bool idle = false;
  std::lock_guard lock(mu_);
  for (const auto& [name, r] : running_) idle = idle || r->consumer->WantsType(events::type::kDeviceIdle);
  idle_wanted_ = idle;
}

std::vector<ConsumerStatus> Runner::Statuses() {
  std::vector<ConsumerStatus> out;
  std::lock_guard lock(mu_);
  const int64_t now = NowMillis();
  for (auto& [name, r] : running_) {
    ConsumerStatus s;
    s.name = name;
    s.lanes = static_cast<int>(r->lanes.size());
    uint64_t lowest = UINT64_MAX;
    int64_t oldest = 0;
    for (auto& l : r->lanes) {
      std::lock_guard ll(l->mu);
      lowest = std::min(lowest, l->checkpoint);
      s.pending += l->queue.size();
      if (!l->queue.empty() && (oldest == 0 || l->queue.front().time_ms < oldest)) oldest = l->queue.front().time_ms;
    }
    s.checkpoint = Cursor{r->partition, lowest}.ToString();
    s.read = Cursor{r->partition, r->read_seq.load()}.ToString();
    s.lag_ms = oldest ? std::max<int64_t>(0, now - oldest) : 0;
    s.handled = r->handled;
    s.failed = r->failed;
    s.parked = r->parked;
    s.commits = r->commits;
    {
      std::lock_guard el(r->err_mu);
      s.last_error = r->last_error;
    }
    s.running = !r->stop;
    out.push_back(std::move(s));
  }
  return out;
}

bool Runner::WaitCaughtUp(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<std::pair<Running*, uint64_t>> targets;
  {
    std::lock_guard lock(mu_);
    for (auto& [name, r] : running_) targets.emplace_back(r.get(), source_->Head(r->partition));
  }
  for (const auto& target : targets) {
    Running* r = target.first;
    const uint64_t head = target.second;
    for (auto& l : r->lanes) {
      std::unique_lock lock(l->mu);
      if (!l->cv.wait_until(lock, deadline, [&] { return l->checkpoint >= head || r->stop.load(); }))
        return false;
    }
  }
  return true;
}

}  // namespace orchard::automation
