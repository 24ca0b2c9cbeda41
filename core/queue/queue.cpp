#include "queue/queue.h"

#include <algorithm>

#include "log/log.h"
#include "util/encoding.h"

namespace orchard::queue {
namespace {
constexpr const char* kLog = "queue";
constexpr size_t kMaxHints = 200000;
constexpr size_t kSuffixBytes = 9;  // priority byte + big-endian sequence
constexpr char kSeqLeaseKey[] = "queue/seq_lease_end";
constexpr uint64_t kSeqLease = 1000000;

std::string Prefix(const std::string& id) {
  std::string p = id;
  p.push_back('\0');
  return p;
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
}

std::string CommandQueue::NextSeqKey(int priority) {
  const uint64_t seq = seq_.fetch_add(1);
  if (seq >= lease_end_.load()) {
    std::lock_guard lock(lease_mu_);
    if (seq >= lease_end_.load()) {
      const uint64_t end = seq + kSeqLease;
      std::string v;
      PutBigEndian64(&v, end);
      store::Batch b;
      b.Put(store::Cf::kMeta, kSeqLeaseKey, v);
      Status st = store_->Write(b);
      if (!st.ok()) log::Error(kLog, "event=seq_lease_write_failed error=\"{}\"", st.message());
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
  std::string index_key = Prefix(id) + cmd.command_uuid;
  auto existing = store_->Get(store::Cf::kQueueIndex, index_key);
  if (!existing.ok()) return existing.status();
  if (existing->has_value())
    return Status::AlreadyExists("command " + cmd.command_uuid + " is already queued for " + id);
  store::QueueEntry e;
  e.command_uuid = cmd.command_uuid;
  e.request_type = cmd.request_type;
  e.plist = cmd.plist;
  e.enqueued_ms = now_ms;
  e.priority = std::clamp(cmd.priority, 0, 255);
  e.origin = cmd.origin;
  std::string suffix = NextSeqKey(cmd.priority);
  std::string key = Prefix(id) + suffix;
  batch.Put(store::Cf::kQueue, key, e.Encode());
  batch.Put(store::Cf::kQueueIndex, index_key, suffix);
  batch.AddCounter(kDepthCounter, 1);
  LowerHint(id, key);
  return Status::Ok();
}

Result<std::optional<Located>> CommandQueue::Next(const std::string& id, bool skip_not_now,
                                                  const std::string& exclude_key) {
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
    if (key == exclude_key) continue;
    auto e = store::QueueEntry::Decode(it->value());
    if (!e.ok()) {
      log::Error(kLog, "event=corrupt_queue_entry enrollment_id={}", id);
      continue;
    }
    if (skip_not_now && e->status == store::QueueStatus::kNotNow) continue;
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
  if ((*suffix)->size() >= kSuffixBytes + 8)
    e->last_sent_ms = static_cast<int64_t>(GetBigEndian64((*suffix)->substr(kSuffixBytes)));
  return std::optional<Located>(Located{std::move(key), std::move(e.value())});
}

void CommandQueue::Update(store::Batch& batch, const std::string&, const Located& loc) {
  batch.Put(store::Cf::kQueue, loc.key, loc.entry.Encode());
}

void CommandQueue::MarkSent(store::Batch& batch, const std::string& id, const Located& loc,
                            int64_t now_ms) {
  std::string value = loc.key.substr(Prefix(id).size());
  PutBigEndian64(&value, static_cast<uint64_t>(now_ms));
  batch.Put(store::Cf::kQueueIndex, Prefix(id) + loc.entry.command_uuid, value);
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
    // The delivery time lives in the index value (see MarkSent).
    auto idx = store_->Get(store::Cf::kQueueIndex, prefix + e->command_uuid);
    if (idx.ok() && idx->has_value() && (*idx)->size() >= kSuffixBytes + 8)
      e->last_sent_ms = static_cast<int64_t>(GetBigEndian64((*idx)->substr(kSuffixBytes)));
    out.push_back(std::move(e.value()));
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
  batch.Put(store::Cf::kResults, key, result.Encode());
  std::string tkey;
  PutBigEndian64(&tkey, static_cast<uint64_t>(result.received_ms));
  batch.Put(store::Cf::kResultsByTime, tkey + key, "");
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

Result<std::vector<store::CommandResult>> CommandQueue::ListResults(const std::string& id,
                                                                    size_t limit) {
  const std::string prefix = Prefix(id);
  std::vector<store::CommandResult> out;
  auto it = store_->Scan(store::Cf::kResults, prefix, store::PrefixEnd(prefix));
  for (; it->Valid(); it->Next()) {
    auto r = store::CommandResult::Decode(it->value(), /*with_raw=*/false);
    if (r.ok()) out.push_back(std::move(r.value()));
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.received_ms > b.received_ms; });
  if (out.size() > limit) out.resize(limit);
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
        auto r = store::CommandResult::Decode(**cur);
        // An undecodable result goes too: nothing else would ever remove it.
        if (!r.ok() || r->received_ms < cutoff_ms) batch.Delete(store::Cf::kResults, result_key);
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
