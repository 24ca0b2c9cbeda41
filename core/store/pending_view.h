// PendingView: read-your-writes over a Batch that has not been written yet.
//
// A writer that applies several dependent changes in one transaction (one
// Batch) reads through the view to see what the earlier changes put into the
// batch: the base store with the pending ops applied on top, in order, exactly
// as Store::Write would apply them. Nothing is written; the batch stays the
// caller's to commit or drop.
//
// Semantics of the pending ops (the last op touching a key wins):
//   Put         the key reads as its value (an empty value is a value);
//   Delete      the key is absent;
//   DeleteRange keys k with lower <= k < upper are absent, until a later Put
//               makes one visible again. The upper key is literal: an empty
//               or lower-or-equal upper covers nothing (RocksDB deletes
//               nothing, or rejects the batch when upper < lower);
//   Merge       (counters) is not interpreted: a read whose answer depends on
//               a pending Merge fails with FailedPrecondition.
//
// Ownership: borrows base and batch (both non-null, both must outlive the view
// and every iterator it returns). The batch may grow between calls: each call
// sees the batch as it is at that moment; an iterator sees the batch as it was
// when Scan() was called.
// Thread-safety: thread-compatible, not thread-safe (like Batch). Do not
// append to the batch while another thread reads through the view.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <vector>
#include <string>
#include <string_view>

#include "store/store.h"
#include "util/status.h"

namespace orchard::store {

class PendingView : public Store {
 public:
  PendingView(Store* base, const Batch* pending) : base_(base), pending_(pending) {}

  // The value after the pending ops (O(log n) through an index of the batch,
  // kept up to date incrementally); base->Get when no pending op touches the
  // key. Errors: base errors; FailedPrecondition when the last pending op on
  // the key is a Merge.
  Result<std::optional<std::string>> Get(Cf cf, std::string_view key) override;
  // Always FailedPrecondition: a view does not write (commit the batch to the
  // base store instead).
  Status Write(Batch& batch) override;
  // Merges base->Scan(cf, lower, upper) lazily with the pending ops in
  // [lower, upper): keys in order, each once, with the pending effects. The
  // pending keys in range are copied once per call (O(log n + k) through the
  // view's index of the batch); base keys are never materialised. status() is the base iterator's, or FailedPrecondition when
  // iteration stopped at a key whose value depends on a pending Merge.
  std::unique_ptr<Iterator> Scan(Cf cf, std::string_view lower, std::string_view upper) override;
  // Always FailedPrecondition: answering needs reverse iteration over the base
  // store when its last keys are deleted by the batch, which Store lacks.
  Result<std::optional<std::string>> LastKey(Cf cf) override;
  // base->GetCounter when no pending op touches the counter; FailedPrecondition
  // otherwise (pending AddCounter deltas are not interpreted).
  Result<int64_t> GetCounter(std::string_view name) override;
  const std::string& path() const override { return base_->path(); }
  Health health() const override { return base_->health(); }

 private:
  // Brings the index up to the batch's current ops (incremental: ops only grow
  // within one generation of the batch; a Clear starts over).
  void Index();
  // The last op on (cf, key) that counts, after range deletes: its index, or
  // nullopt when none (kDeleted when a later range delete covers it).
  static constexpr size_t kDeleted = static_cast<size_t>(-1);
  std::optional<size_t> Last(Cf cf, std::string_view key) const;

  Store* base_;
  const Batch* pending_;
  uint64_t generation_ = 0;
  size_t indexed_ = 0;
  std::map<Cf, std::map<std::string, size_t, std::less<>>> last_;  // cf -> key -> index of its last op
  std::vector<size_t> ranges_;  // indexes of the DeleteRange ops, in batch order
};

}  // namespace orchard::store
