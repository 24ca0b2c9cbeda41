#include "store/pending_view.h"

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

namespace orchard::store {
namespace {

// A DeleteRange op's upper key is literal (never "to the end").
bool RangeCovers(const Batch::Op& op, std::string_view key) {
  return std::string_view(op.key) <= key && key < std::string_view(op.value);
}

Status MergeUnsupported(Cf cf, std::string_view key) {
  // Merges only update counters (Cf::kCounters), whose names are plain text.
  return Status::FailedPrecondition(std::string("pending view: ") + CfName(cf) + " key \"" +
                                    std::string(key) +
                                    "\" has a pending merge and cannot be read before the batch "
                                    "is written");
}

// The last pending op on each key of [lower, upper) that still counts, plus the
// range deletions (disjoint, sorted) that hide base keys without an entry.
struct PendingState {
  enum class Kind { kPut, kDeleted, kMerge };
  struct Entry {
    Kind kind;
    std::string value;
  };
  std::map<std::string, Entry, std::less<>> entries;
  std::vector<std::pair<std::string, std::string>> ranges;  // [first, second)
};

// Sorts and coalesces overlapping and touching ranges: sorted by start, a
// forward cursor answers "covered?" in amortised O(1).
void Coalesce(std::vector<std::pair<std::string, std::string>>* ranges) {
  std::sort(ranges->begin(), ranges->end());
  size_t out = 0;
  for (size_t i = 0; i < ranges->size(); ++i) {
    auto& r = (*ranges)[i];
    if (out > 0 && r.first <= (*ranges)[out - 1].second) {
      if (r.second > (*ranges)[out - 1].second) (*ranges)[out - 1].second = std::move(r.second);
    } else {
      if (out != i) (*ranges)[out] = std::move(r);
      ++out;
    }
  }
  ranges->resize(out);
}

class MergingIterator : public Iterator {
 public:
  MergingIterator(std::unique_ptr<Iterator> base, PendingState pending, Cf cf)
      : base_(std::move(base)), pending_(std::move(pending)), cf_(cf) {
    entry_ = pending_.entries.begin();
    Settle();
  }

  bool Valid() const override { return source_ != Source::kNone; }
  void Next() override {
    if (source_ == Source::kBase) {
      base_->Next();
    } else if (source_ == Source::kPending) {
      ++entry_;
    }
    Settle();
  }
  std::string_view key() const override {
    return source_ == Source::kBase ? base_->key() : std::string_view(entry_->first);
  }
  std::string_view value() const override {
    return source_ == Source::kBase ? base_->value() : std::string_view(entry_->second.value);
  }
  Status status() const override {
    if (!error_.ok()) return error_;
    return base_->status();
  }

 private:
  enum class Source { kNone, kBase, kPending };

  // True when a range deletion covers key; keys asked about never decrease.
  bool Covered(std::string_view key) {
    const auto& ranges = pending_.ranges;
    while (range_ < ranges.size() && std::string_view(ranges[range_].second) <= key) ++range_;
    return range_ < ranges.size() && std::string_view(ranges[range_].first) <= key;
  }

  // Positions on the next visible key at or after the current candidates.
  void Settle() {
    source_ = Source::kNone;
    for (;;) {
      bool base_valid = base_->Valid();
      // A base that stopped on an error ends the merged iteration too.
      if (!base_valid && !base_->status().ok()) return;
      bool pending_valid = entry_ != pending_.entries.end();
      if (!base_valid && !pending_valid) return;
      int cmp;
      if (!base_valid) {
        cmp = 1;  // only pending keys remain
      } else if (!pending_valid) {
        cmp = -1;
      } else {
        cmp = base_->key().compare(entry_->first);
      }
      if (cmp < 0) {
        if (Covered(base_->key())) {
          base_->Next();
          continue;
        }
        source_ = Source::kBase;
        return;
      }
      // The pending entry decides this key; a base key equal to it is shadowed.
      if (cmp == 0) base_->Next();
      switch (entry_->second.kind) {
        case PendingState::Kind::kPut:
          source_ = Source::kPending;
          return;
        case PendingState::Kind::kDeleted:
          ++entry_;
          continue;
        case PendingState::Kind::kMerge:
          error_ = MergeUnsupported(cf_, entry_->first);
          return;
      }
    }
  }

  std::unique_ptr<Iterator> base_;
  PendingState pending_;
  Cf cf_;
  std::map<std::string, PendingState::Entry, std::less<>>::const_iterator entry_;
  size_t range_ = 0;  // first range that may still cover a key at or after the current one
  Source source_ = Source::kNone;
  Status error_ = Status::Ok();
};

}  // namespace

void PendingView::Index() {
  const auto& ops = pending_->ops();
  if (pending_->generation() != generation_ || ops.size() < indexed_) {
    generation_ = pending_->generation();
    indexed_ = 0;
    last_.clear();
    ranges_.clear();
  }
  for (; indexed_ < ops.size(); ++indexed_) {
    const auto& op = ops[indexed_];
    if (op.kind == Batch::Op::kDeleteRange) ranges_.push_back(indexed_);
    else last_[op.cf].insert_or_assign(op.key, indexed_);
  }
}

std::optional<size_t> PendingView::Last(Cf cf, std::string_view key) const {
  std::optional<size_t> at;
  if (auto c = last_.find(cf); c != last_.end())
    if (auto k = c->second.find(key); k != c->second.end()) at = k->second;
  // A range delete after the key's last op (or with no op) hides it.
  const auto& ops = pending_->ops();
  for (auto r = ranges_.rbegin(); r != ranges_.rend() && (!at || *r > *at); ++r)
    if (ops[*r].cf == cf && RangeCovers(ops[*r], key)) return kDeleted;
  return at;
}

Result<std::optional<std::string>> PendingView::Get(Cf cf, std::string_view key) {
  Index();
  const auto at = Last(cf, key);
  if (!at) return base_->Get(cf, key);
  if (*at == kDeleted) return std::optional<std::string>();
  const auto& op = pending_->ops()[*at];
  switch (op.kind) {
    case Batch::Op::kPut: return std::optional<std::string>(op.value);
    case Batch::Op::kDelete: return std::optional<std::string>();
    case Batch::Op::kMerge: return MergeUnsupported(cf, key);
    case Batch::Op::kDeleteRange: break;  // not indexed per key
  }
  return std::optional<std::string>();
}

Status PendingView::Write(Batch& batch) {
  return Status::FailedPrecondition("pending view: read-only, write the batch to the base store");
}

std::unique_ptr<Iterator> PendingView::Scan(Cf cf, std::string_view lower, std::string_view upper) {
  Index();
  using Kind = PendingState::Kind;
  PendingState pending;
  const auto& ops = pending_->ops();
  const bool empty_range = !upper.empty() && upper <= lower;  // nothing is in [lower, upper)
  if (auto c = last_.find(cf); c != last_.end() && !empty_range) {
    auto end = upper.empty() ? c->second.end() : c->second.lower_bound(upper);
    for (auto it = c->second.lower_bound(lower); it != end; ++it) {
      const auto at = Last(cf, it->first);
      if (!at) continue;
      if (*at == kDeleted) {
        pending.entries.emplace(it->first, PendingState::Entry{Kind::kDeleted, {}});
        continue;
      }
      const auto& op = ops[*at];
      const Kind kind = op.kind == Batch::Op::kPut ? Kind::kPut
                        : op.kind == Batch::Op::kMerge ? Kind::kMerge
                                                       : Kind::kDeleted;
      pending.entries.emplace(it->first, PendingState::Entry{kind, kind == Kind::kPut ? op.value : std::string()});
    }
  }
  // Range deletes hide base keys (and pending keys they follow: see Last).
  for (size_t r : ranges_) {
    const auto& op = ops[r];
    if (op.cf != cf) continue;
    std::string_view begin = op.key, end = op.value;  // clipped to the scan's bounds
    if (begin < lower) begin = lower;
    if (!upper.empty() && upper < end) end = upper;
    if (begin < end) pending.ranges.emplace_back(std::string(begin), std::string(end));
  }
  Coalesce(&pending.ranges);
  return std::make_unique<MergingIterator>(base_->Scan(cf, lower, upper), std::move(pending), cf);
}

Result<std::optional<std::string>> PendingView::LastKey(Cf cf) {
  return Status::FailedPrecondition(std::string("pending view: LastKey(") + CfName(cf) +
                                    ") is not supported");
}

Result<int64_t> PendingView::GetCounter(std::string_view name) {
  for (const auto& op : pending_->ops()) {
    if (op.cf != Cf::kCounters) continue;
    bool touches = op.kind == Batch::Op::kDeleteRange ? RangeCovers(op, name) : op.key == name;
    if (touches) {
      return Status::FailedPrecondition("pending view: counter \"" + std::string(name) +
                                        "\" has pending changes and cannot be read before the "
                                        "batch is written");
    }
  }
  return base_->GetCounter(name);
}

}  // namespace orchard::store
