#include "domain/tx.h"

#include <algorithm>

namespace orchard::domain {

void Tx::Lock(const std::string& id) { LockAll({id}); }

void Tx::LockAll(const std::vector<std::string>& ids) {
  if (!held_.empty()) Unlock();  // misuse guard: never hold two unordered sets
  for (const auto& id : ids) held_.push_back(EnrollmentLocks::StripeOf(id));
  std::sort(held_.begin(), held_.end());
  held_.erase(std::unique(held_.begin(), held_.end()), held_.end());
  for (size_t s : held_) locks_->Stripe(s).lock();
}

void Tx::Unlock() {
  for (auto it = held_.rbegin(); it != held_.rend(); ++it) locks_->Stripe(*it).unlock();
  held_.clear();
}

Status Tx::Commit() {
  Status st = log_->Commit(txn_);
  Unlock();
  return st;
}

}  // namespace orchard::domain
