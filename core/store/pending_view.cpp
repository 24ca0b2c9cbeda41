#include "store/pending_view.h"

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

namespace orchard::store {
namespace {

bool InRange(std::string_view key, std::string_view lower, std::string_view upper) {
  return key >= lower && (upper.empty() || key < upper);
}

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

PendingState BuildPending(const Batch& batch, Cf cf, std::string_view lower,
                          std::string_view upper) {
  using Kind = PendingState::Kind;
  PendingState state;
  auto set = [&](const Batch::Op& op, Kind kind) {
    if (!InRange(op.key, lower, upper)) return;
    state.entries.insert_or_assign(
        op.key, PendingState::Entry{kind, kind == Kind::kPut ? op.value : std::string()});
  };
  for (const auto& op : batch.ops()) {
    if (op.cf != cf) continue;
    switch (op.kind) {
      case Batch::Op::kPut:
        set(op, Kind::kPut);
        break;
      case Batch::Op::kDelete:
        set(op, Kind::kDeleted);
        break;
      case Batch::Op::kMerge:
        set(op, Kind::kMerge);
        break;
      case Batch::Op::kDeleteRange: {
        // Clip to the scan's bounds; an empty result covers nothing.
        std::string_view begin = op.key, end = op.value;
        if (begin < lower) begin = lower;
        if (!upper.empty() && upper < end) end = upper;
        if (begin >= end) break;
        // Earlier point ops in the range are hidden; later ones override the range.
        state.entries.erase(state.entries.lower_bound(begin), state.entries.lower_bound(end));
        state.ranges.emplace_back(std::string(begin), std::string(end));
        break;
      }
    }
  }
  // Sorted by start, a forward cursor answers "covered?" in amortised O(1);
  // coalescing overlapping and touching ranges keeps the list short.
  auto& ranges = state.ranges;
  std::sort(ranges.begin(), ranges.end());
  size_t out = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    if (out > 0 && ranges[i].first <= ranges[out - 1].second) {
      if (ranges[i].second > ranges[out - 1].second)
        ranges[out - 1].second = std::move(ranges[i].second);
    } else {
      if (out != i) ranges[out] = std::move(ranges[i]);
      ++out;
    }
  }
  ranges.resize(out);
  return state;
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

Result<std::optional<std::string>> PendingView::Get(Cf cf, std::string_view key) {
  const auto& ops = pending_->ops();
  for (auto it = ops.rbegin(); it != ops.rend(); ++it) {
    if (it->cf != cf) continue;
    switch (it->kind) {
      case Batch::Op::kPut:
        if (it->key == key) return std::optional<std::string>(it->value);
        break;
      case Batch::Op::kDelete:
        if (it->key == key) return std::optional<std::string>();
        break;
      case Batch::Op::kMerge:
        if (it->key == key) return MergeUnsupported(cf, key);
        break;
      case Batch::Op::kDeleteRange:
        if (RangeCovers(*it, key)) return std::optional<std::string>();
        break;
    }
  }
  return base_->Get(cf, key);
}

Status PendingView::Write(Batch& batch) {
  return Status::FailedPrecondition("pending view: read-only, write the batch to the base store");
}

std::unique_ptr<Iterator> PendingView::Scan(Cf cf, std::string_view lower, std::string_view upper) {
  PendingState pending = BuildPending(*pending_, cf, lower, upper);
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
