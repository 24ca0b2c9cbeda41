#include "queue/queue.h"

#include <algorithm>

#include "log/log.h"
#include "util/encoding.h"

namespace orchard::queue {
namespace {
constexpr const char* kLog = "queue";
constexpr size_t kMaxHints = 200000;
constexpr size_t kSuffixBytes = 9;  // priority byte + big-endian sequence
// Index value: suffix, then (once delivered) the delivery time in ms (8 bytes),
// then the deliveries since the last report (4 bytes; absent in values written
// before it existed, which count as one delivery).
constexpr size_t kSentBytes = kSuffixBytes + 8;
constexpr size_t kDeliveriesBytes = kSentBytes + 4;
constexpr char kSeqLeaseKey[] = "queue/seq_lease_end";
constexpr uint64_t kSeqLease = 1000000;

constexpr char kResultIndexMarker[] = "queue/results_by_enrollment_v1";

std::string Prefix(const std::string& id) {
  std::string p = id;
  p.push_back('\0');
  return p;
}

// Position of a result in its enrollment's newest-first index: ~received ms(8) uuid.
std::string ResultSuffix(int64_t received_ms, const std::string& uuid) {
  std::string k;
  PutBigEndian64(&k, ~static_cast<uint64_t>(received_ms));
  k += uuid;
  return k;
}

// The summary kept in the index: the result without the raw report.
std::string ResultSummary(const store::CommandResult& r) {
  store::CommandResult s = r;
  s.raw.clear();
  return s.Encode();
}

// Fills the delivery fields of e from an index value.
void ReadDelivery(std::string_view index_value, store::QueueEntry* e) {
  if (index_value.size() < kSentBytes) {
    e->last_sent_ms = 0;
    e->deliveries = 0;
    return;
  }
  e->last_sent_ms = static_cast<int64_t>(GetBigEndian64(index_value.substr(kSuffixBytes, 8)));
  e->deliveries = 1;
  if (index_value.size() >= kDeliveriesBytes) {
    const auto* p = reinterpret_cast<const unsigned char*>(index_value.data() + kSentBytes);
    e->deliveries = (int64_t{p[0]} << 24) | (int64_t{p[1]} << 16) | (int64_t{p[2]} << 8) | p[3];
  }
}

std::string IndexValue(std::string_view suffix, int64_t sent_ms, int64_t deliveries) {
  std::string v(suffix);
  PutBigEndian64(&v, static_cast<uint64_t>(sent_ms));
  const auto d = static_cast<uint32_t>(std::clamp<int64_t>(deliveries, 0, UINT32_MAX));
  for (int shift = 24; shift >= 0; shift -= 8) v.push_back(static_cast<char>((d >> shift) & 0xFF));
  return v;
}
}  // namespace

CommandQueue::CommandQueue(store::Store* store) : store_(store) {
  // Sequence numbers never repeat: every one handed out is below a durably
  // stored lease end, and a new process starts at or above the last lease end
  // (and at least at the current time in microseconds).
  uint64_t start = static_cast<uint64_t>(NowMillis()) * 1000;
  auto hw = store_->Get(store::Cf::kMeta, kSeqLeaseKey);
  if (hw.ok() && hw->has_value() && (*hw)->size() == 8) start = std::max(start, GetBigEndian64(**hw));
  else if (!hw.ok()) log::Error(kLog, "event=seq_lease_unreadable error=\"{}\"", hw.status().message());
  seq_ = start;
  lease_end_ = start;  // the first enqueue takes a lease
  Status st = BackfillResultIndex();
  if (!st.ok()) log::Error(kLog, "event=result_index_backfill_failed error=\"{}\"", st.message());
}

Status CommandQueue::BackfillResultIndex() {
  auto done = store_->Get(store::Cf::kMeta, kResultIndexMarker);
  if (!done.ok()) return done.status();
  if (done->has_value()) return Status::Ok();
  uint64_t n = 0;
  store::Batch batch;
  auto it = store_->Scan(store::Cf::kResults, "", "");
  for (; it->Valid(); it->Next()) {
    auto r = store::CommandResult::Decode(it->value(), /*with_raw=*/false);
    const std::string_view key = it->key();
    if (!r.ok() || key.size() <= r->command_uuid.size()) continue;
    const std::string prefix(key.substr(0, key.size() - r->command_uuid.size()));
    batch.Put(store::Cf::kResultsByEnrollment, prefix + ResultSuffix(r->received_ms, r->command_uuid),
              ResultSummary(*r));
    if (++n % 1000 == 0) {
      ORCHARD_RETURN_IF_ERROR(store_->Write(batch));
      batch.Clear();
    }
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  batch.Put(store::Cf::kMeta, kResultIndexMarker, "1");
  ORCHARD_RETURN_IF_ERROR(store_->Write(batch));
  if (n) log::Info(kLog, "event=result_index_backfilled results={}", n);
  return Status::Ok();
}

Result<std::string> CommandQueue::NextSeqKey(int priority) {
  const uint64_t seq = seq_.fetch_add(1);
  if (seq >= lease_end_.load()) {
    std::lock_guard lock(lease_mu_);
    if (seq >= lease_end_.load()) {
      // No number is used before a lease covering it is durable: after a
      // restart with the clock behind, numbers start at the lease end.
      const uint64_t end = seq + kSeqLease;
      std::string v;
      PutBigEndian64(&v, end);
      store::Batch b;
      b.Put(store::Cf::kMeta, kSeqLeaseKey, v);
      Status st = store_->Write(b);
      if (!st.ok()) {
        log::Error(kLog, "event=seq_lease_write_failed error={}", log::Quote(st.message()));
        return st;  // the number is skipped; the next enqueue tries again
      }
      lease_end_ = end;
    }
  }
  std::string k;
  k.push_back(static_cast<char>(255 - std::clamp(priority, 0, 255)));
  PutBigEndian64(&k, seq);
  return k;
}

void CommandQueue::LowerHint(const std::string& id, const std::string& key) {
  std::lock_guard lock(hint_mu_);
  auto it = head_hint_.find(id);
  if (it != head_hint_.end() && key < it->second) head_hint_.erase(it);
}

Status CommandQueue::Enqueue(store::Batch& batch, const std::string& id, const NewCommand& cmd,
                             int64_t now_ms) {
  if (cmd.command_uuid.empty()) return Status::InvalidArgument("CommandUUID is empty");
  if (cmd.command_uuid.size() > kMaxCommandUuidBytes)
    return Status::InvalidArgument("CommandUUID is too long: " + std::to_string(cmd.command_uuid.size()) +
                                   " bytes (at most " + std::to_string(kMaxCommandUuidBytes) + ")");
  if (cmd.request_type.size() > kMaxRequestTypeBytes)
    return Status::InvalidArgument("RequestType is too long: " + std::to_string(cmd.request_type.size()) +
                                   " bytes (at most " + std::to_string(kMaxRequestTypeBytes) + ")");
  std::string index_key = Prefix(id) + cmd.command_uuid;
  if (!cmd.fresh_uuid) {
    auto existing = store_->Get(store::Cf::kQueueIndex, index_key);
    if (!existing.ok()) return existing.status();
    if (existing->has_value())
      return Status::AlreadyExists("command " + cmd.command_uuid + " is already queued for " + id);
  }
  store::QueueEntry e;
  e.command_uuid = cmd.command_uuid;
  e.request_type = cmd.request_type;
  e.plist = cmd.plist;
  e.enqueued_ms = now_ms;
  e.priority = std::clamp(cmd.priority, 0, 255);
  e.origin = cmd.origin;
  e.trigger = cmd.trigger;
  auto next = NextSeqKey(cmd.priority);
  if (!next.ok()) return next.status();
  std::string suffix = std::move(next.value());
  std::string key = Prefix(id) + suffix;
  batch.Put(store::Cf::kQueue, key, e.Encode());
  batch.Put(store::Cf::kQueueIndex, index_key, suffix);
  batch.AddCounter(kDepthCounter, 1);
  LowerHint(id, key);
  return Status::Ok();
}

Result<std::optional<Located>> CommandQueue::Next(const std::string& id, int64_t session,
                                                  const std::vector<std::string>& exclude_keys) {
  const std::string prefix = Prefix(id);
  std::string start = prefix;
  {
    std::lock_guard lock(hint_mu_);
    auto it = head_hint_.find(id);
    if (it != head_hint_.end()) start = it->second;
  }
  auto it = store_->Scan(store::Cf::kQueue, start, store::PrefixEnd(prefix));
  bool first = true;
  for (; it->Valid(); it->Next()) {
    std::string key(it->key());
    if (first) {
      // Everything before the first live key is deleted: remember where the queue starts.
      std::lock_guard lock(hint_mu_);
      if (head_hint_.size() >= kMaxHints) head_hint_.clear();
      head_hint_[id] = key;
      first = false;
    }
    if (std::find(exclude_keys.begin(), exclude_keys.end(), key) != exclude_keys.end()) continue;
    auto e = store::QueueEntry::Decode(it->value());
    if (!e.ok()) {
      log::Error(kLog, "event=corrupt_queue_entry enrollment_id={}", id);
      continue;
    }
    if (e->status == store::QueueStatus::kNotNow && e->not_now_session == session) continue;
    auto idx = store_->Get(store::Cf::kQueueIndex, prefix + e->command_uuid);
    if (!idx.ok()) return idx.status();
    if (idx->has_value()) ReadDelivery(**idx, &e.value());
    return std::optional<Located>(Located{std::move(key), std::move(e.value())});
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  return std::optional<Located>();
}

Result<std::optional<Located>> CommandQueue::Find(const std::string& id, const std::string& uuid) {
  auto suffix = store_->Get(store::Cf::kQueueIndex, Prefix(id) + uuid);
  if (!suffix.ok()) return suffix.status();
  if (!suffix->has_value()) return std::optional<Located>();
  if ((*suffix)->size() < kSuffixBytes) return Status::Internal("corrupt queue index for " + id);
  std::string key = Prefix(id) + (*suffix)->substr(0, kSuffixBytes);
  auto v = store_->Get(store::Cf::kQueue, key);
  if (!v.ok()) return v.status();
  if (!v->has_value()) return std::optional<Located>();
  auto e = store::QueueEntry::Decode(**v);
  if (!e.ok()) return e.status();
  ReadDelivery(**suffix, &e.value());
  return std::optional<Located>(Located{std::move(key), std::move(e.value())});
}

void CommandQueue::Update(store::Batch& batch, const std::string&, const Located& loc) {
  batch.Put(store::Cf::kQueue, loc.key, loc.entry.Encode());
}

void CommandQueue::MarkSent(store::Batch& batch, const std::string& id, const Located& loc,
                            int64_t now_ms) {
  const std::string prefix = Prefix(id);
  batch.Put(store::Cf::kQueueIndex, prefix + loc.entry.command_uuid,
            IndexValue(std::string_view(loc.key).substr(prefix.size()), now_ms, loc.entry.deliveries + 1));
}

void CommandQueue::MarkAnswered(store::Batch& batch, const std::string& id, const Located& loc) {
  const std::string prefix = Prefix(id);
  batch.Put(store::Cf::kQueueIndex, prefix + loc.entry.command_uuid,
            IndexValue(std::string_view(loc.key).substr(prefix.size()), loc.entry.last_sent_ms, 0));
}

void CommandQueue::Remove(store::Batch& batch, const std::string& id, const Located& loc) {
  batch.Delete(store::Cf::kQueue, loc.key);
  batch.Delete(store::Cf::kQueueIndex, Prefix(id) + loc.entry.command_uuid);
  batch.AddCounter(kDepthCounter, -1);
}

Result<std::vector<store::QueueEntry>> CommandQueue::List(const std::string& id, size_t limit) {
  const std::string prefix = Prefix(id);
  std::vector<store::QueueEntry> out;
  auto it = store_->Scan(store::Cf::kQueue, prefix, store::PrefixEnd(prefix));
  for (; it->Valid() && out.size() < limit; it->Next()) {
    auto e = store::QueueEntry::Decode(it->value());
    if (!e.ok()) continue;
    // The delivery time and count live in the index value (see MarkSent).
    auto idx = store_->Get(store::Cf::kQueueIndex, prefix + e->command_uuid);
    if (idx.ok() && idx->has_value()) ReadDelivery(**idx, &e.value());
    out.push_back(std::move(e.value()));
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  return out;
}

std::string CommandQueue::QueuePosition(const std::string& id, const std::string& key) {
  const size_t p = Prefix(id).size();
  return key.size() > p ? key.substr(p) : std::string();
}

Result<std::vector<Located>> CommandQueue::ListPage(const std::string& id, std::string_view after,
                                                    size_t limit) {
  const std::string prefix = Prefix(id);
  std::string start = prefix;
  if (!after.empty()) {
    start.append(after);
    start.push_back('\0');  // strictly after
  }
  std::vector<Located> out;
  auto it = store_->Scan(store::Cf::kQueue, start, store::PrefixEnd(prefix));
  for (; it->Valid() && out.size() < limit; it->Next()) {
    auto e = store::QueueEntry::Decode(it->value());
    if (!e.ok()) continue;
    auto idx = store_->Get(store::Cf::kQueueIndex, prefix + e->command_uuid);
    if (idx.ok() && idx->has_value() && (*idx)->size() >= kSuffixBytes + 8)
      e->last_sent_ms = static_cast<int64_t>(GetBigEndian64((*idx)->substr(kSuffixBytes)));
    out.push_back(Located{std::string(it->key()), std::move(e.value())});
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  return out;
}

Result<uint64_t> CommandQueue::Count(const std::string& id) {
  const std::string prefix = Prefix(id);
  uint64_t n = 0;
  auto it = store_->Scan(store::Cf::kQueueIndex, prefix, store::PrefixEnd(prefix));
  for (; it->Valid(); it->Next()) ++n;
  ORCHARD_RETURN_IF_ERROR(it->status());
  return n;
}

Result<uint64_t> CommandQueue::Clear(store::Batch& batch, const std::string& id) {
  const std::string prefix = Prefix(id);
  auto count = Count(id);
  if (!count.ok()) return count.status();
  const uint64_t n = *count;
  if (n == 0) return n;
  batch.DeleteRange(store::Cf::kQueue, prefix, store::PrefixEnd(prefix));
  batch.DeleteRange(store::Cf::kQueueIndex, prefix, store::PrefixEnd(prefix));
  batch.AddCounter(kDepthCounter, -static_cast<int64_t>(n));
  std::lock_guard lock(hint_mu_);
  head_hint_.erase(id);
  return n;
}

void CommandQueue::PutResult(store::Batch& batch, const std::string& id,
                             const store::CommandResult& result) {
  std::string key = Prefix(id) + result.command_uuid;
  // A result replacing one under the same key also replaces its index entry.
  auto old = store_->Get(store::Cf::kResults, key);
  if (old.ok() && old->has_value()) {
    auto prev = store::CommandResult::Decode(**old, /*with_raw=*/false);
    if (prev.ok() && prev->received_ms != result.received_ms)
      batch.Delete(store::Cf::kResultsByEnrollment,
                   Prefix(id) + ResultSuffix(prev->received_ms, result.command_uuid));
  }
  batch.Put(store::Cf::kResultsByEnrollment,
            Prefix(id) + ResultSuffix(result.received_ms, result.command_uuid), ResultSummary(result));
  batch.Put(store::Cf::kResults, key, result.Encode());
  std::string tkey;
  PutBigEndian64(&tkey, static_cast<uint64_t>(result.received_ms));
  batch.Put(store::Cf::kResultsByTime, tkey + key, "");
  if (!result.request_type.empty())
    batch.Put(store::Cf::kLatestResults, Prefix(id) + result.request_type, result.command_uuid);
}

Result<std::optional<store::CommandResult>> CommandQueue::LatestResult(const std::string& id,
                                                                       const std::string& request_type) {
  auto uuid = store_->Get(store::Cf::kLatestResults, Prefix(id) + request_type);
  if (!uuid.ok()) return uuid.status();
  if (!uuid->has_value()) return std::optional<store::CommandResult>();
  return GetResult(id, **uuid);  // gone after retention: none
}

Result<std::optional<store::CommandResult>> CommandQueue::GetResult(const std::string& id,
                                                                    const std::string& uuid) {
  auto v = store_->Get(store::Cf::kResults, Prefix(id) + uuid);
  if (!v.ok()) return v.status();
  if (!v->has_value()) return std::optional<store::CommandResult>();
  auto r = store::CommandResult::Decode(**v);
  if (!r.ok()) return r.status();
  return std::optional<store::CommandResult>(std::move(r.value()));
}

std::string CommandQueue::ResultPosition(const store::CommandResult& r) {
  return ResultSuffix(r.received_ms, r.command_uuid);
}

Result<std::vector<store::CommandResult>> CommandQueue::ListResults(const std::string& id,
                                                                    size_t limit,
                                                                    std::string_view after) {
  const std::string prefix = Prefix(id);
  std::string start = prefix;
  if (!after.empty()) {
    start.append(after);
    start.push_back('\0');  // strictly after
  }
  std::vector<store::CommandResult> out;
  auto it = store_->Scan(store::Cf::kResultsByEnrollment, start, store::PrefixEnd(prefix));
  for (; it->Valid() && out.size() < limit; it->Next()) {
    auto r = store::CommandResult::Decode(it->value(), /*with_raw=*/false);
    if (r.ok()) out.push_back(std::move(r.value()));
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  return out;
}

Result<uint64_t> CommandQueue::SweepResults(int64_t cutoff_ms, size_t batch_size,
                                             const std::function<bool()>& keep_going) {
  batch_size = std::max<size_t>(batch_size, 1);
  std::string upper;
  PutBigEndian64(&upper, static_cast<uint64_t>(std::max<int64_t>(cutoff_ms, 0)));
  std::string lower;  // where this batch starts: earlier batches' entries are deleted
  uint64_t total = 0;
  for (;;) {
    store::Batch batch;
    size_t n = 0;
    std::string last;
    auto it = store_->Scan(store::Cf::kResultsByTime, lower, upper);
    for (; it->Valid() && n < batch_size; it->Next()) {
      auto k = it->key();
      last.assign(k);
      ++n;
      if (k.size() <= 8) continue;
      std::string result_key(k.substr(8));
      // Only delete the result if this index entry is still the current one
      // (a re-sent command may have produced a newer result under the same key).
      auto cur = store_->Get(store::Cf::kResults, result_key);
      if (!cur.ok()) return cur.status();  // keep the index entry: retried next round
      if (cur->has_value()) {
        auto r = store::CommandResult::Decode(**cur, /*with_raw=*/false);
        // An undecodable result goes too: nothing else would ever remove it.
        if (!r.ok()) {
          batch.Delete(store::Cf::kResults, result_key);
        } else if (r->received_ms < cutoff_ms) {
          batch.Delete(store::Cf::kResults, result_key);
          if (result_key.size() > r->command_uuid.size()) {
            const std::string prefix = result_key.substr(0, result_key.size() - r->command_uuid.size());
            batch.Delete(store::Cf::kResultsByEnrollment,
                         prefix + ResultSuffix(r->received_ms, r->command_uuid));
          }
        }
      }
    }
    ORCHARD_RETURN_IF_ERROR(it->status());
    if (n == 0) break;
    // The batch's index entries are exactly [lower, last]: one range deletion.
    std::string end = last;
    end.push_back('\0');  // the smallest key after last
    batch.DeleteRange(store::Cf::kResultsByTime, lower, end);
    ORCHARD_RETURN_IF_ERROR(store_->Write(batch));
    total += n;
    if (n < batch_size || (keep_going && !keep_going())) break;
    lower = std::move(end);
  }
  return total;
}

Result<int64_t> CommandQueue::Depth() { return store_->GetCounter(kDepthCounter); }

}  // namespace orchard::queue
