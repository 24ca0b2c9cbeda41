// DdmService: Declarative Device Management on top of the declaration and
// status stores (docs/ddm.md).
//
// Writes (admin API; policies and plugins through automation::DdmHost, in
// their handler's transaction) are serialised by one mutex: each computes the
// enrollments whose DeclarationsToken it changes,
// locks them, and commits in ONE transaction the declaration store's writes,
// the new token records and, for every such enrollment that is enrolled, a
// DeclarativeManagement command whose Data is its TokensResponse (a newer
// one replaces an undelivered older one: at most one is pending). After the
// commit the enrollments are pushed (unless the write asked not to notify).
//
// Check-outs drop an enrollment's keys under its lock, without the mutex
// (SettleCheckouts and Redo keep a concurrent write from undoing that).
//
// Check-ins (protocol::DeclarativeHandler): tokens, declaration-items,
// declaration/<kind>/<Identifier> (404 when not in the channel's manifest),
// status (parsed, stored, turned into ddm.* events, all in one transaction
// under the channel's lock).
//
// Thread-safety: safe for concurrent use. Borrows its dependencies.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "automation/host.h"
#include "ddm/declarations.h"
#include "ddm/status.h"
#include "domain/commands.h"
#include "domain/enrollments.h"
#include "events/events.h"
#include "protocol/service.h"
#include "queue/queue.h"
#include "store/store.h"

namespace orchard::ddm {

struct DdmDeps {
  store::Store* store;
  events::EventLog* events;
  queue::CommandQueue* queue;
  domain::Enrollments* enrollments;
  domain::EnrollmentLocks* locks;
  domain::CommandService* commands;
};

struct DdmOptions {
  Limits limits;
  StatusLimits status_limits;
  // Queue the sync command at enrollment even for a channel without sets
  // (ddm.enable_on_enroll); otherwise only channels with sets get it.
  bool enable_on_enroll = false;
  // Keep a channel's assignments (and its stored status) when it checks out
  // (ddm.keep_assignments); otherwise the check-out drops them.
  bool keep_assignments = false;
  // The manifest cache's budget (DeclarationStore; ddm.manifest_cache_items).
  size_t manifest_cache_items = 200000;
  // Writes that leave a set with an unsatisfied reference (an activation
  // naming a configuration the set does not carry, a configuration naming an
  // asset): warned about (the admin API's "warnings"), refused, or not checked
  // (ddm.references).
  ReferenceCheck references = ReferenceCheck::kWarn;
};

// What a write did.
struct WriteOutcome {
  bool changed = false;        // the store changed
  size_t tokens_changed = 0;   // enrollments whose DeclarationsToken changed
  size_t commands_queued = 0;  // sync commands queued (enrolled ones among them)
  size_t pushed = 0;           // of those, pushed
  std::string server_token;    // Put and Touch: the declaration's ServerToken
  // Put: keys Apple's schema does not name; any write: references it left
  // unsatisfied in a set (ddm.references = warn). Stored all the same.
  std::vector<std::string> warnings;
};

// What Orchard keeps about an enrollment's DDM use (key m\0<enrollment>).
struct EnrollmentDdm {
  // The channel has turned DDM on: it acknowledged the DeclarativeManagement
  // command or made a DeclarativeManagement check-in (until it checks out).
  bool enabled = false;
  std::string served_token;      // the DeclarationsToken last answered in tokens / declaration-items
  int64_t served_ms = 0;
  int64_t status_ms = 0;         // the last status report
  std::string pending_command;   // the sync command queued last (may have been answered)
  int64_t sync_queued_ms = 0;
  std::string synced_token;      // the token for which ddm.synced was emitted last
  int64_t synced_ms = 0;         // when it was emitted
};

// Checks a write a policy or plugin asks for, before it is recorded as a
// decision: a declaration as ParseDeclaration checks it, identifiers, set
// names and enrollment ids as the store's writes do. InvalidArgument naming
// what is wrong (TooLarge for an oversized declaration). warnings (may be
// null) gets what the schema check warned about (unknown payload keys).
orchard::Status CheckOp(const automation::DdmOp& op, const Limits& limits = {},
                        std::vector<std::string>* warnings = nullptr);

class DdmService : public protocol::DeclarativeHandler, public automation::DdmHost {
 public:
  DdmService(const DdmOptions& options, const DdmDeps& deps);

  DeclarationStore& declarations() { return declarations_; }
  // Check-outs recorded and not yet settled by a write (bounded: OnCheckedOut).
  size_t unsettled_checkouts() {
    std::lock_guard lock(checkout_mu_);
    return checked_out_.size();
  }
  StatusStore& status() { return status_; }

  // Admin writes; owner "admin", "policy:<name>" or "plugin:<name>".
  // notify=false: tokens and sync commands are written, nothing is pushed.
  Result<WriteOutcome> Put(std::string_view json, std::string_view owner, bool notify);
  Result<WriteOutcome> Touch(std::string_view identifier, bool notify);
  Result<WriteOutcome> Delete(std::string_view identifier, bool notify);
  Result<WriteOutcome> SetAdd(std::string_view set, std::string_view identifier, bool notify);
  Result<WriteOutcome> SetRemove(std::string_view set, std::string_view identifier, bool notify);
  Result<WriteOutcome> Assign(std::string_view enrollment_id, std::string_view set, bool notify);
  Result<WriteOutcome> Unassign(std::string_view enrollment_id, std::string_view set, bool notify);
  // Queues (and pushes) a sync command for each enrolled id whatever changed.
  Result<WriteOutcome> Notify(const std::vector<std::string>& enrollment_ids);

  Result<EnrollmentDdm> State(std::string_view enrollment_id);

  // automation::DdmHost: what policies and plugins read and write. Stage
  // applies their writes over a pending batch (each sees the ones before it)
  // under the write mutex, which the staged result holds until destroyed.
  Result<std::optional<plist::Value>> Status(const std::string& enrollment_id, const std::string& item) override;
  Result<std::optional<plist::Value>> DeclarationStatus(const std::string& enrollment_id,
                                                        const std::string& identifier) override;
  Result<std::unique_ptr<automation::DdmStaged>> Stage(const std::vector<const automation::DdmOp*>& ops,
                                                       const std::string& owner, int64_t now_ms,
                                                       std::vector<std::string>* outcomes) override;

  // protocol::DeclarativeHandler
  protocol::DeviceResponse Checkin(const protocol::DeclarativeRequest& request) override;
  // Forgets what the device held (served and synced tokens) and queues the
  // sync command when the channel has sets (or enable_on_enroll).
  orchard::Status OnEnrolled(domain::Tx& tx, const store::Enrollment& e, int64_t now_ms) override;
  // The device dropped its DDM state: what it was served, reported and synced
  // is forgotten (the pending sync command is remembered for OnEnrolled to
  // replace). Unless keep_assignments, its assignments, token record and
  // stored status are dropped as well (a re-enrollment starts clean). Does not
  // take write_mu_ (the caller holds e's lock, and writes take write_mu_ before
  // enrollment locks): a write that read e's assignments before this commits
  // and writes e's token record after it is caught in Finish (see Redo).
  orchard::Status OnCheckedOut(domain::Tx& tx, const store::Enrollment& e, int64_t now_ms) override;
  // Sets enabled (the first acknowledged sync command turns DDM on).
  orchard::Status OnSyncAcknowledged(domain::Tx& tx, const std::string& enrollment_id,
                                     const std::string& command_uuid, int64_t now_ms) override;

 private:
  class Staged;
  // Which sets a write's reference check looks at: `set` (a membership
  // write), else the sets carrying `identifier` (a declaration written or
  // deleted), else none (assignments).
  struct RefScope {
    std::string identifier;
    std::string set;
    std::string enrollment;  // an assignment's channel (locked with the write; see Redo)
  };
  Result<std::vector<std::string>> ScopeSets(DeclarationStore& store, const RefScope& scope);
  // The unsatisfied references in sets that `after` has and `before` had not.
  Result<std::vector<std::string>> NewReferenceProblems(DeclarationStore& before, DeclarationStore& after,
                                                        const std::vector<std::string>& sets);
  // Runs one store write (write(batch, now) -> token changes) under write_mu_,
  // checks the references in scope, and Finish()es it; changed = whether it
  // wrote anything.
  template <typename Write>
  Result<WriteOutcome> Apply(bool notify, const RefScope& scope, Write write);
  // Commits the store writes in tx with a sync command for every changed
  // enrollment, then pushes them when notify.
  // extra: channels to lock and Redo as well (an assignment without a token change).
  Result<WriteOutcome> Finish(domain::Tx& tx, const std::vector<TokenChange>& changes, bool notify, int64_t now_ms,
                              const std::vector<std::string>& extra = {});
  // Queues the sync command for the enrollment (holding its lock in tx) when
  // it is enrolled; its record is appended to queued then (to be woken).
  orchard::Status QueueSync(domain::Tx& tx, const std::string& enrollment_id, const TokenChange& token,
                            int64_t now_ms, std::vector<store::Enrollment>* queued);
  // The same for the record e (read or being written under e's lock in tx).
  orchard::Status QueueSyncFor(domain::Tx& tx, const store::Enrollment& e, EnrollmentDdm state,
                               const TokenChange& token, int64_t now_ms);
  protocol::DeviceResponse StatusCheckin(const protocol::DeclarativeRequest& request);
  // Records that the channel was answered m's token (when it differs from the last one).
  protocol::DeviceResponse Served(const std::string& enrollment_id, const Manifest& m, std::string body);
  orchard::Status PutState(store::Batch& batch, std::string_view enrollment_id, const EnrollmentDdm& s);
  // Check-outs against writes (OnCheckedOut drops an enrollment's keys without
  // write_mu_). A write holding write_mu_ first settles the check-outs recorded
  // so far: waits for their transactions to end, so it reads what they left.
  // A check-out recorded after that may have committed between the write's
  // reads and its commit; holding the enrollment's lock, Redo then drops again
  // whatever the write put for it into tx's batch (the write is ordered before
  // the check-out) and reports true: no sync command for it.
  void SettleCheckouts();
  Result<bool> Redo(domain::Tx& tx, const std::string& enrollment_id);

  DdmOptions options_;
  DdmDeps d_;
  DeclarationStore declarations_;
  StatusStore status_;
  std::mutex write_mu_;  // serialises declaration-store writes
  std::mutex checkout_mu_;  // guards checked_out_; never held while waiting for another lock
  // Check-outs that dropped data since the running write settled: id -> checked_out_ms.
  std::map<std::string, int64_t> checked_out_;
  // Bound on checked_out_ when no write settles it (OnCheckedOut): beyond this
  // many entries, those a minute older than the newest go. A check-out
  // transaction holds its enrollment's lock for a few milliseconds; one still
  // open a minute later would escape Redo, the price of the bound.
  static constexpr size_t kCheckoutsKept = 1024;
  static constexpr int64_t kCheckoutHorizonMs = 60 * 1000;
};

}  // namespace orchard::ddm
