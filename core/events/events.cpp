#include "events/events.h"

#include <algorithm>
#include <optional>

#include "log/log.h"
#include "util/encoding.h"
#include "util/record.h"

namespace orchard::events {
namespace {
constexpr const char* kLog = "events";
constexpr uint64_t kVersion = 1;
constexpr char kCheckpointPrefix[] = "checkpoint/";

uint64_t NowMicros() { return static_cast<uint64_t>(NowMillis()) * 1000; }
}  // namespace

std::string EventKey(uint64_t seq) {
  std::string k;
  PutBigEndian64(&k, seq);
  return k;
}

std::string Event::Encode() const {
  RecordWriter w;
  w.PutVarint(kVersion);
  w.PutString(type);
  w.PutSigned(time_ms);
  w.PutString(enrollment_id);
  w.PutString(command_uuid);
  w.PutString(request_type);
  w.PutString(payload_json);
  return w.Take();
}

Result<Event> Event::Decode(uint64_t seq, std::string_view bytes) {
  RecordReader r(bytes);
  if (r.GetVarint() != kVersion) return Status::Internal("corrupt event record");
  Event e;
  e.seq = seq;
  e.type = r.GetString();
  e.time_ms = r.GetSigned();
  e.enrollment_id = r.GetString();
  e.command_uuid = r.GetString();
  e.request_type = r.GetString();
  e.payload_json = r.GetString();
  if (r.corrupt()) return Status::Internal("corrupt event record");
  return e;
}

void Transaction::Emit(Event event) {
  if (event.time_ms == 0) event.time_ms = NowMillis();
  events_.push_back(std::move(event));
}

Result<std::unique_ptr<EventLog>> EventLog::Open(store::Store* store) {
  auto last = store->LastKey(store::Cf::kEvents);
  if (!last.ok()) return last.status();
  uint64_t next = NowMicros();  // survives full pruning: never reuses a number
  if (last->has_value() && (*last)->size() == 8) next = std::max(next, GetBigEndian64(**last) + 1);
  return std::unique_ptr<EventLog>(new EventLog(store, next));
}

Status EventLog::Commit(Transaction& txn) {
  if (txn.events_.empty()) return store_->Write(txn.batch_);
  // Numbers are taken now, just before the write: the window in which they
  // hold the watermark back is the write itself.
  std::vector<uint64_t> seqs;
  seqs.reserve(txn.events_.size());
  {
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < txn.events_.size(); ++i) {
      seqs.push_back(next_++);
      in_flight_.insert(seqs.back());
    }
  }
  for (size_t i = 0; i < txn.events_.size(); ++i) {
    txn.events_[i].seq = seqs[i];
    txn.batch_.Put(store::Cf::kEvents, EventKey(seqs[i]), txn.events_[i].Encode());
  }
  Status st = store_->Write(txn.batch_);
  {
    std::lock_guard lock(mu_);
    for (auto s : seqs) in_flight_.erase(s);  // committed or failed: no longer in flight
  }
  cv_.notify_all();
  if (st.ok()) txn.seqs_ = std::move(seqs);
  return st;
}

uint64_t EventLog::Watermark() {
  std::lock_guard lock(mu_);
  return in_flight_.empty() ? next_ - 1 : *in_flight_.begin() - 1;
}

Result<std::vector<Event>> EventLog::Read(uint64_t after, size_t limit) {
  const uint64_t mark = Watermark();
  std::vector<Event> out;
  if (after >= mark) return out;
  auto it = store_->Scan(store::Cf::kEvents, EventKey(after + 1), EventKey(mark + 1));
  for (; it->Valid() && out.size() < limit; it->Next()) {
    auto k = it->key();
    if (k.size() != 8) continue;
    auto ev = Event::Decode(GetBigEndian64(k), it->value());
    if (!ev.ok()) {
      log::Error(kLog, "event=corrupt_event seq={}", GetBigEndian64(k));
      continue;
    }
    out.push_back(std::move(ev.value()));
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  return out;
}

bool EventLog::WaitFor(uint64_t after, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  auto ready = [&] {
    uint64_t mark = in_flight_.empty() ? next_ - 1 : *in_flight_.begin() - 1;
    return mark > after && store_ != nullptr;
  };
  return cv_.wait_for(lock, timeout, ready);
}

Status EventLog::SetCheckpoint(const std::string& consumer, uint64_t seq) {
  store::Batch b;
  b.Put(store::Cf::kMeta, kCheckpointPrefix + consumer, EventKey(seq));
  return store_->Write(b);
}

Result<uint64_t> EventLog::GetCheckpoint(const std::string& consumer) {
  auto r = store_->Get(store::Cf::kMeta, kCheckpointPrefix + consumer);
  if (!r.ok()) return r.status();
  if (!r->has_value() || (*r)->size() != 8) return uint64_t{0};
  return GetBigEndian64(**r);
}

namespace {
// "checkpoint/<consumer>" (SetCheckpoint) or "checkpoint/<consumer>\0<partition(4)><lane(4)>"
// (lane checkpoints); the value starts with the sequence (8 bytes).
std::string LaneKeyPrefix(const std::string& consumer) {
  std::string k = kCheckpointPrefix + consumer;
  k.push_back('\0');
  return k;
}
}  // namespace

void EventLog::PutLaneCheckpoint(store::Batch& batch, const std::string& consumer, uint32_t partition, int lane,
                                 const LaneCheckpoint& cp) {
  std::string key = LaneKeyPrefix(consumer);
  PutBigEndian32(&key, partition);
  PutBigEndian32(&key, static_cast<uint32_t>(lane));
  std::string value = EventKey(cp.seq);
  PutBigEndian64(&value, cp.epoch);
  batch.Put(store::Cf::kMeta, key, value);
}

Result<std::map<int, EventLog::LaneCheckpoint>> EventLog::LaneCheckpoints(const std::string& consumer,
                                                                          uint32_t partition) {
  std::string lower = LaneKeyPrefix(consumer);
  PutBigEndian32(&lower, partition);
  std::map<int, LaneCheckpoint> out;
  auto it = store_->Scan(store::Cf::kMeta, lower, store::PrefixEnd(lower));
  for (; it->Valid(); it->Next()) {
    if (it->key().size() != lower.size() + 4 || it->value().size() < 16) continue;
    const int lane = static_cast<int>(GetBigEndian32(it->key().substr(lower.size())));
    out[lane] = {GetBigEndian64(it->value()), GetBigEndian64(it->value().substr(8))};
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  return out;
}

Result<bool> EventLog::UnregisterConsumer(const std::string& consumer) {
  const std::string key = kCheckpointPrefix + consumer;
  const std::string lanes = LaneKeyPrefix(consumer);
  bool found = false;
  uint64_t lowest = UINT64_MAX;
  auto r = store_->Get(store::Cf::kMeta, key);
  if (!r.ok()) return r.status();
  if (r->has_value() && (*r)->size() >= 8) {
    found = true;
    lowest = GetBigEndian64(**r);
  }
  auto it = store_->Scan(store::Cf::kMeta, lanes, store::PrefixEnd(lanes));
  for (; it->Valid(); it->Next()) {
    found = true;
    if (it->value().size() >= 8) lowest = std::min(lowest, GetBigEndian64(it->value()));
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  if (!found) return false;
  store::Batch b;
  b.Delete(store::Cf::kMeta, key);
  b.DeleteRange(store::Cf::kMeta, lanes, store::PrefixEnd(lanes));
  ORCHARD_RETURN_IF_ERROR(store_->Write(b));
  log::Info(kLog, "event=consumer_unregistered consumer={} checkpoint={}", log::Quote(consumer),
            lowest == UINT64_MAX ? 0 : lowest);
  return true;
}

Result<std::vector<EventLog::Consumer>> EventLog::ListConsumers(size_t limit) {
  const std::string lower = kCheckpointPrefix;
  std::vector<Consumer> out;
  auto it = store_->Scan(store::Cf::kMeta, lower, store::PrefixEnd(lower));
  for (; it->Valid(); it->Next()) {
    std::string_view rest = it->key().substr(lower.size());
    std::string_view name = rest.substr(0, rest.find('\0'));  // lane checkpoints group by consumer
    const uint64_t cp = it->value().size() >= 8 ? GetBigEndian64(it->value()) : 0;
    if (!out.empty() && out.back().name == name) {
      out.back().checkpoint = std::min(out.back().checkpoint, cp);
      continue;
    }
    if (out.size() >= limit) break;
    out.push_back({std::string(name), cp});
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  return out;
}

namespace {
// The time of a stored event, reading only the fields before it; nullopt if the
// record cannot be decoded (such an event is pruned like an old one).
std::optional<int64_t> EventTime(std::string_view bytes) {
  RecordReader r(bytes);
  if (r.GetVarint() != kVersion) return std::nullopt;
  r.SkipString();  // type
  const int64_t t = r.GetSigned();
  if (r.corrupt()) return std::nullopt;
  return t;
}
}  // namespace

Result<uint64_t> EventLog::Prune(int64_t min_age_ms, size_t batch_size,
                                 const std::function<bool()>& keep_going) {
  batch_size = std::max<size_t>(batch_size, 1);
  // The lowest checkpoint bounds what may go; with no consumers, age alone decides.
  uint64_t limit = Watermark();
  std::string lower = kCheckpointPrefix;
  auto cps = store_->Scan(store::Cf::kMeta, lower, store::PrefixEnd(lower));
  for (; cps->Valid(); cps->Next()) {
    if (cps->value().size() >= 8) limit = std::min(limit, GetBigEndian64(cps->value()));
  }
  ORCHARD_RETURN_IF_ERROR(cps->status());
  const int64_t cutoff = NowMillis() - min_age_ms;
  uint64_t start;
  {
    std::lock_guard lock(mu_);
    start = pruned_below_;
  }
  uint64_t removed = 0;
  // Events are in time order: scan from where the last batch ended (so the
  // deleted ones are not walked again) up to the first one that is too young.
  while (start <= limit) {
    size_t n = 0;
    uint64_t last = 0;
    bool young = false;
    auto it = store_->Scan(store::Cf::kEvents, EventKey(start), EventKey(limit + 1));
    for (; it->Valid() && n < batch_size; it->Next()) {
      if (it->key().size() != 8) continue;
      auto t = EventTime(it->value());
      if (t && *t > cutoff) {
        young = true;
        break;
      }
      last = GetBigEndian64(it->key());
      ++n;
    }
    ORCHARD_RETURN_IF_ERROR(it->status());
    if (n == 0) break;
    store::Batch b;
    b.DeleteRange(store::Cf::kEvents, EventKey(start), EventKey(last + 1));
    ORCHARD_RETURN_IF_ERROR(store_->Write(b));
    removed += n;
    start = last + 1;
    {
      std::lock_guard lock(mu_);
      pruned_below_ = start;
    }
    if (young || n < batch_size || (keep_going && !keep_going())) break;
  }
  return removed;
}

}  // namespace orchard::events
