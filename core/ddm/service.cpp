#include "ddm/service.h"

#include <algorithm>
#include <map>
#include <set>

#include "domain/tx.h"
#include "log/log.h"
#include "plist/plist.h"
#include "ddm/references.h"
#include "store/pending_view.h"
#include "util/encoding.h"

namespace orchard::ddm {
namespace {

constexpr const char* kLog = "ddm";
constexpr const char* kRequestType = "DeclarativeManagement";
constexpr const char* kJson = "application/json";

std::string StateKey(std::string_view enrollment_id) {
  std::string k = "m";
  k.push_back('\0');
  k.append(enrollment_id);
  return k;
}

std::string EncodeState(const EnrollmentDdm& s) {
  plist::Value v;
  v.Set("v", plist::Value::Integer(1));
  v.Set("enabled", plist::Value::Bool(s.enabled));
  v.Set("served_token", plist::Value::String(s.served_token));
  v.Set("served_ms", plist::Value::Integer(s.served_ms));
  v.Set("status_ms", plist::Value::Integer(s.status_ms));
  v.Set("pending_command", plist::Value::String(s.pending_command));
  v.Set("sync_queued_ms", plist::Value::Integer(s.sync_queued_ms));
  v.Set("synced_token", plist::Value::String(s.synced_token));
  v.Set("synced_ms", plist::Value::Integer(s.synced_ms));
  return plist::ToJson(v);
}

int64_t IntOf(const plist::Value& v, const char* key) {
  const plist::Value* f = v.Find(key);
  return f != nullptr && f->AsInteger() != nullptr ? *f->AsInteger() : 0;
}

Result<EnrollmentDdm> DecodeState(std::string_view json) {
  auto v = plist::ParseJson(json);
  if (!v.ok() || !v->is(plist::Type::kDict)) return Status::Internal("ddm enrollment state is damaged");
  EnrollmentDdm s;
  s.enabled = v->GetBool("enabled", false);
  s.served_token = std::string(v->GetString("served_token"));
  s.served_ms = IntOf(*v, "served_ms");
  s.status_ms = IntOf(*v, "status_ms");
  s.pending_command = std::string(v->GetString("pending_command"));
  s.sync_queued_ms = IntOf(*v, "sync_queued_ms");
  s.synced_token = std::string(v->GetString("synced_token"));
  s.synced_ms = IntOf(*v, "synced_ms");
  return s;
}

protocol::DeviceResponse Answer(int status, std::string body, std::string error = {}) {
  protocol::DeviceResponse r;
  r.status = status;
  if (!body.empty()) r.content_type = kJson;
  r.body = std::move(body);
  r.kind = kRequestType;
  r.error = std::move(error);
  return r;
}

protocol::DeviceResponse FromStatus(const orchard::Status& st) {
  switch (st.code()) {
    case Code::kInvalidArgument:
      return Answer(400, {}, st.message());
    case Code::kTooLarge:
      return Answer(413, {}, st.message());
    case Code::kResourceExhausted:
      return Answer(503, {}, "server temporarily unable to store: " + st.message());
    default:
      return Answer(500, {}, "server error: " + st.message());
  }
}

std::string ReasonsJson(const std::vector<Reason>& reasons) {
  std::string out = "[";
  for (size_t i = 0; i < reasons.size(); ++i) {
    plist::Value r;
    r.Set("code", plist::Value::String(reasons[i].code));
    r.Set("description", plist::Value::String(reasons[i].description));
    std::string one = plist::ToJson(r);
    if (!reasons[i].details_json.empty()) {
      one.pop_back();  // '}'
      one += ",\"details\":" + reasons[i].details_json + "}";
    }
    out += (i ? "," : "") + one;
  }
  return out + "]";
}

}  // namespace

DdmService::DdmService(const DdmOptions& options, const DdmDeps& deps)
    : options_(options),
      d_(deps),
      declarations_(deps.store, options.limits, options.manifest_cache_items),
      status_(deps.store, options.status_limits) {}

Result<EnrollmentDdm> DdmService::State(std::string_view enrollment_id) {
  auto raw = d_.store->Get(store::Cf::kDdm, StateKey(enrollment_id));
  if (!raw.ok()) return raw.status();
  if (!raw->has_value()) return EnrollmentDdm{};
  return DecodeState(**raw);
}

orchard::Status DdmService::PutState(store::Batch& batch, std::string_view enrollment_id, const EnrollmentDdm& s) {
  batch.Put(store::Cf::kDdm, StateKey(enrollment_id), EncodeState(s));
  return orchard::Status::Ok();
}

// ---- writes ----

Result<std::vector<std::string>> DdmService::ScopeSets(DeclarationStore& store, const RefScope& scope) {
  if (options_.references == ReferenceCheck::kOff) return std::vector<std::string>();
  if (!scope.set.empty()) return std::vector<std::string>{scope.set};
  std::vector<std::string> sets;
  if (scope.identifier.empty()) return sets;
  std::string after;
  do {
    auto page = store.DeclarationSets(scope.identifier, after, 1000);
    if (!page.ok()) return page.status();
    sets.insert(sets.end(), page->items.begin(), page->items.end());
    after = page->next;
  } while (!after.empty() && sets.size() < 10000);
  return sets;
}

Result<std::vector<std::string>> DdmService::NewReferenceProblems(DeclarationStore& before, DeclarationStore& after,
                                                                  const std::vector<std::string>& sets) {
  std::vector<std::string> added;
  for (const auto& set : sets) {
    // Whole lists (not capped): a capped one would make problems that only
    // scrolled into view look new.
    auto was = UnsatisfiedReferences(before, set);
    if (!was.ok()) return was.status();
    auto now = UnsatisfiedReferences(after, set);
    if (!now.ok()) return now.status();
    std::set<std::string> old(was->begin(), was->end());
    std::vector<std::string> fresh;
    for (auto& p : *now)
      if (!old.count(p)) fresh.push_back(std::move(p));
    for (auto& p : Capped(std::move(fresh), set)) added.push_back(std::move(p));
  }
  return added;
}

template <typename Write>
Result<WriteOutcome> DdmService::Apply(bool notify, const RefScope& scope, Write write) {
  std::lock_guard lock(write_mu_);
  SettleCheckouts();
  const int64_t now = NowMillis();
  // The sets whose references this write can change, read before it (a
  // delete takes the declaration's memberships with it).
  auto sets = ScopeSets(declarations_, scope);
  if (!sets.ok()) return sets.status();
  domain::Tx tx(d_.locks, d_.events);
  auto changes = write(tx.batch(), now);
  if (!changes.ok()) return changes.status();
  const bool wrote = !tx.batch().empty();  // an identical re-upload or a no-op membership writes nothing
  std::vector<std::string> problems;
  if (wrote && !sets->empty()) {
    store::PendingView view(d_.store, &tx.batch());
    DeclarationStore after(&view, options_.limits);
    auto added = NewReferenceProblems(declarations_, after, *sets);
    if (!added.ok()) return added.status();
    problems = std::move(*added);
    if (!problems.empty() && options_.references == ReferenceCheck::kRefuse) {
      std::string msg = "references: ";
      for (size_t i = 0; i < problems.size(); ++i) msg += (i ? "; " : "") + problems[i];
      return orchard::Status::InvalidArgument(msg);  // nothing is committed
    }
  }
  std::vector<std::string> extra;  // an assignment's channel, locked and redone even without a token change
  if (wrote && !scope.enrollment.empty()) extra.push_back(scope.enrollment);
  auto out = Finish(tx, *changes, notify, now, extra);
  if (out.ok()) {
    out->changed = wrote;
    out->warnings = std::move(problems);
  }
  return out;
}

Result<WriteOutcome> DdmService::Put(std::string_view json, std::string_view owner, bool notify) {
  auto d = ParseDeclaration(json, options_.limits);
  if (!d.ok()) return d.status();
  const std::string identifier = d->identifier;
  std::vector<std::string> warnings = d->warnings;
  auto out = Apply(notify, {identifier, {}},
                   [&](store::Batch& b, int64_t now) { return declarations_.Put(b, std::move(*d), owner, now); });
  if (!out.ok()) return out;
  out->warnings.insert(out->warnings.begin(), warnings.begin(), warnings.end());
  auto stored = declarations_.Get(identifier);
  if (stored.ok() && stored->has_value()) out->server_token = (*stored)->server_token;
  return out;
}

Result<WriteOutcome> DdmService::Touch(std::string_view identifier, bool notify) {
  auto out = Apply(notify, {std::string(identifier), {}},
                   [&](store::Batch& b, int64_t now) { return declarations_.Touch(b, identifier, now); });
  if (!out.ok()) return out;
  auto stored = declarations_.Get(identifier);
  if (stored.ok() && stored->has_value()) out->server_token = (*stored)->server_token;
  return out;
}

Result<WriteOutcome> DdmService::Delete(std::string_view identifier, bool notify) {
  return Apply(notify, {std::string(identifier), {}},
               [&](store::Batch& b, int64_t now) { return declarations_.Delete(b, identifier, now); });
}

Result<WriteOutcome> DdmService::SetAdd(std::string_view set, std::string_view identifier, bool notify) {
  return Apply(notify, {{}, std::string(set)},
               [&](store::Batch& b, int64_t now) { return declarations_.SetAdd(b, set, identifier, now); });
}

Result<WriteOutcome> DdmService::SetRemove(std::string_view set, std::string_view identifier, bool notify) {
  return Apply(notify, {{}, std::string(set)},
               [&](store::Batch& b, int64_t now) { return declarations_.SetRemove(b, set, identifier, now); });
}

Result<WriteOutcome> DdmService::Assign(std::string_view enrollment_id, std::string_view set, bool notify) {
  return Apply(notify, {{}, {}, std::string(enrollment_id)},
               [&](store::Batch& b, int64_t now) { return declarations_.Assign(b, enrollment_id, set, now); });
}

Result<WriteOutcome> DdmService::Unassign(std::string_view enrollment_id, std::string_view set, bool notify) {
  return Apply(notify, {{}, {}, std::string(enrollment_id)},
               [&](store::Batch& b, int64_t now) { return declarations_.Unassign(b, enrollment_id, set, now); });
}

Result<WriteOutcome> DdmService::Notify(const std::vector<std::string>& enrollment_ids) {
  std::lock_guard lock(write_mu_);
  SettleCheckouts();
  const int64_t now = NowMillis();
  std::vector<TokenChange> all;
  for (const auto& id : enrollment_ids) {
    auto m = declarations_.ManifestOf(id);
    if (!m.ok()) return m.status();
    all.push_back({id, m->declarations_token, m->changed_ms});
  }
  domain::Tx tx(d_.locks, d_.events);
  return Finish(tx, all, true, now);
}

// ---- policies and plugins (automation::DdmHost) ----

orchard::Status CheckOp(const automation::DdmOp& op, const Limits& limits, std::vector<std::string>* warnings) {
  using Kind = automation::DdmOp::Kind;
  switch (op.kind) {
    case Kind::kPutDeclaration: {
      auto d = ParseDeclaration(op.a, limits);
      if (!d.ok()) return d.status();
      if (warnings) *warnings = std::move(d->warnings);
      return orchard::Status::Ok();
    }
    case Kind::kDeleteDeclaration:
    case Kind::kTouch: return CheckIdentifierArg(op.a, limits);
    case Kind::kSetAdd:
    case Kind::kSetRemove:
      ORCHARD_RETURN_IF_ERROR(CheckSetArg(op.a));
      return CheckIdentifierArg(op.b, limits);
    case Kind::kAssign:
    case Kind::kUnassign:
      ORCHARD_RETURN_IF_ERROR(CheckEnrollmentArg(op.a));
      return CheckSetArg(op.b);
  }
  return orchard::Status::InvalidArgument("unknown ddm write");
}

class DdmService::Staged : public automation::DdmStaged {
 public:
  Staged(DdmService* service, std::unique_lock<std::mutex> lock) : service_(service), lock_(std::move(lock)) {}

  const std::vector<std::string>& enrollments() const override { return ids_; }

  orchard::Status Write(domain::Tx& tx, int64_t now_ms) override {
    for (const auto& op : batch_.ops()) {
      switch (op.kind) {
        case store::Batch::Op::kPut: tx.batch().Put(op.cf, op.key, op.value); break;
        case store::Batch::Op::kDelete: tx.batch().Delete(op.cf, op.key); break;
        case store::Batch::Op::kDeleteRange: tx.batch().DeleteRange(op.cf, op.key, op.value); break;
        case store::Batch::Op::kMerge: return orchard::Status::Internal("ddm: a staged write holds a merge");
      }
    }
    for (const auto& [id, change] : changes_) {
      auto redone = service_->Redo(tx, id);
      if (!redone.ok()) return redone.status();
      if (*redone) continue;
      ORCHARD_RETURN_IF_ERROR(service_->QueueSync(tx, id, change, now_ms, &queued_));
    }
    // Assigned or unassigned without a token change: a check-out that raced
    // the write must still win.
    for (const auto& id : assigned_) {
      if (changes_.count(id)) continue;
      auto redone = service_->Redo(tx, id);
      if (!redone.ok()) return redone.status();
    }
    return orchard::Status::Ok();
  }

  void Wake() override {
    size_t pushed = 0;
    if (!queued_.empty())
      for (const auto& o : service_->d_.commands->Wake(queued_)) pushed += o.ok ? 1 : 0;
    if (!changes_.empty())
      log::Info(kLog, "event=ddm_tokens_changed by=automation enrollments={} commands={} pushed={}", changes_.size(),
                queued_.size(), pushed);
  }

  store::Batch batch_;
  std::map<std::string, TokenChange> changes_;  // the last change of each enrollment
  std::set<std::string> assigned_;              // the targets of accepted assign / unassign writes
  std::vector<std::string> ids_;                // to lock: both of the above

 private:
  DdmService* service_;
  std::unique_lock<std::mutex> lock_;  // write_mu_, until the commit is over
  std::vector<store::Enrollment> queued_;
};

Result<std::unique_ptr<automation::DdmStaged>> DdmService::Stage(const std::vector<const automation::DdmOp*>& ops,
                                                                 const std::string& owner, int64_t now_ms,
                                                                 std::vector<std::string>* outcomes) {
  using Kind = automation::DdmOp::Kind;
  auto staged = std::make_unique<Staged>(this, std::unique_lock<std::mutex>(write_mu_));
  SettleCheckouts();
  // Each write reads the store as the earlier ones left it in the staged
  // batch, and writes into a batch of its own (over a view of that one), kept
  // only if the write is not refused.
  store::PendingView view(d_.store, &staged->batch_);
  DeclarationStore decls(&view, options_.limits);
  store::Batch b;
  store::PendingView op_view(&view, &b);
  DeclarationStore op_decls(&op_view, options_.limits);
  outcomes->assign(ops.size(), std::string());
  for (size_t i = 0; i < ops.size(); ++i) {
    const automation::DdmOp& op = *ops[i];
    b.Clear();
    RefScope scope;
    if (op.kind == Kind::kSetAdd || op.kind == Kind::kSetRemove) scope.set = op.a;
    if (op.kind == Kind::kDeleteDeclaration || op.kind == Kind::kTouch) scope.identifier = op.a;
    Result<std::vector<TokenChange>> r = std::vector<TokenChange>();
    std::optional<Declaration> put;
    if (op.kind == Kind::kPutDeclaration) {
      auto d = ParseDeclaration(op.a, options_.limits);
      if (d.ok()) scope.identifier = d->identifier, put = std::move(*d);
      else r = d.status();
    }
    auto sets = r.ok() ? ScopeSets(decls, scope) : Result<std::vector<std::string>>(std::vector<std::string>());
    if (!sets.ok()) return sets.status();
    switch (op.kind) {
      case Kind::kPutDeclaration:
        if (put) r = decls.Put(b, std::move(*put), owner, now_ms);
        break;
      case Kind::kDeleteDeclaration: r = decls.Delete(b, op.a, now_ms); break;
      case Kind::kTouch: r = decls.Touch(b, op.a, now_ms); break;
      case Kind::kSetAdd: r = decls.SetAdd(b, op.a, op.b, now_ms); break;
      case Kind::kSetRemove: r = decls.SetRemove(b, op.a, op.b, now_ms); break;
      case Kind::kAssign: r = decls.Assign(b, op.a, op.b, now_ms); break;
      case Kind::kUnassign: r = decls.Unassign(b, op.a, op.b, now_ms); break;
    }
    if (r.ok() && !b.empty() && !sets->empty()) {
      auto added = NewReferenceProblems(decls, op_decls, *sets);
      if (!added.ok()) return added.status();
      for (const auto& p : *added)
        log::Info(kLog, "event=ddm_reference_unsatisfied owner={} detail={}", log::Quote(owner), log::Quote(p));
      if (!added->empty() && options_.references == ReferenceCheck::kRefuse) {
        std::string msg = "references: ";
        for (size_t k = 0; k < added->size(); ++k) msg += (k ? "; " : "") + (*added)[k];
        r = orchard::Status::InvalidArgument(msg);
      }
    }
    if (!r.ok()) {
      const Code c = r.status().code();
      if (c == Code::kInvalidArgument || c == Code::kNotFound || c == Code::kTooLarge) {
        (*outcomes)[i] = r.status().message();  // this write is refused; the others stand
        continue;
      }
      return r.status();
    }
    for (const auto& o : b.ops()) {
      if (o.kind == store::Batch::Op::kPut) staged->batch_.Put(o.cf, o.key, o.value);
      else if (o.kind == store::Batch::Op::kDelete) staged->batch_.Delete(o.cf, o.key);
      else return orchard::Status::Internal("ddm: a staged write holds a range delete or a merge");
    }
    for (auto& change : *r) staged->changes_[change.enrollment_id] = std::move(change);
    if ((op.kind == Kind::kAssign || op.kind == Kind::kUnassign) && !b.empty()) staged->assigned_.insert(op.a);
  }
  for (const auto& [id, change] : staged->changes_) staged->ids_.push_back(id);
  for (const auto& id : staged->assigned_)
    if (!staged->changes_.count(id)) staged->ids_.push_back(id);
  return std::unique_ptr<automation::DdmStaged>(std::move(staged));
}

Result<std::optional<plist::Value>> DdmService::Status(const std::string& enrollment_id, const std::string& item) {
  auto raw = status_.Item(enrollment_id, item);
  if (!raw.ok()) return raw.status();
  if (!raw->has_value()) return std::optional<plist::Value>();
  plist::Limits lim;
  lim.drop_nulls = true;
  auto v = plist::ParseJson(**raw, lim);
  if (!v.ok()) return std::optional<plist::Value>();  // a bare null: as absent
  return std::optional<plist::Value>(std::move(*v));
}

Result<std::optional<plist::Value>> DdmService::DeclarationStatus(const std::string& enrollment_id,
                                                                  const std::string& identifier) {
  auto st = status_.Declaration(enrollment_id, identifier);
  if (!st.ok()) return st.status();
  if (!st->has_value()) return std::optional<plist::Value>();
  auto manifest = declarations_.SharedManifestOf(enrollment_id);
  if (!manifest.ok()) return manifest.status();
  const ddm::DeclarationStatus& d = **st;
  plist::Value v;
  v.Set("identifier", plist::Value::String(d.identifier));
  v.Set("kind", plist::Value::String(KindName(d.kind)));
  v.Set("server_token", plist::Value::String(d.server_token));
  v.Set("active", plist::Value::Bool(d.active));
  v.Set("valid", plist::Value::String(d.valid));
  v.Set("current", plist::Value::Bool(IsCurrent(**manifest, d)));
  plist::Value reasons = plist::Value::MakeArray();
  for (const auto& r : d.reasons) {
    plist::Value rv;
    rv.Set("code", plist::Value::String(r.code));
    rv.Set("description", plist::Value::String(r.description));
    reasons.AsArray()->push_back(std::move(rv));
  }
  v.Set("reasons", std::move(reasons));
  return std::optional<plist::Value>(std::move(v));
}

orchard::Status DdmService::QueueSync(domain::Tx& tx, const std::string& enrollment_id, const TokenChange& token,
                                      int64_t now_ms, std::vector<store::Enrollment>* queued) {
  auto e = d_.enrollments->Get(enrollment_id);
  if (!e.ok()) return e.status();
  // Only enrolled channels can be told; the others sync when they enroll (their
  // token record is written all the same).
  if (!e->has_value() || (*e)->state != store::EnrollmentState::kEnrolled || (*e)->blocked)
    return orchard::Status::Ok();
  auto state = State(enrollment_id);
  if (!state.ok()) return state.status();
  ORCHARD_RETURN_IF_ERROR(QueueSyncFor(tx, **e, std::move(*state), token, now_ms));
  queued->push_back(std::move(**e));
  return orchard::Status::Ok();
}

orchard::Status DdmService::QueueSyncFor(domain::Tx& tx, const store::Enrollment& e, EnrollmentDdm state,
                                         const TokenChange& token, int64_t now_ms) {
  // At most one pending: an older sync command the device has not been given
  // (or answered NotNow) is replaced; one it holds now stays.
  if (!state.pending_command.empty()) {
    auto old = d_.queue->Find(e.id, state.pending_command);
    if (!old.ok()) return old.status();
    if (old->has_value() &&
        ((*old)->entry.last_sent_ms == 0 || (*old)->entry.status == store::QueueStatus::kNotNow))
      d_.queue->Remove(tx.batch(), e.id, **old);
  }
  Manifest m;
  m.declarations_token = token.declarations_token;
  m.changed_ms = token.changed_ms;
  queue::NewCommand cmd;
  cmd.command_uuid = NewUuid();
  cmd.fresh_uuid = true;
  cmd.request_type = kRequestType;
  cmd.origin = "ddm";
  plist::Value command;
  command.Set("RequestType", plist::Value::String(kRequestType));
  command.Set("Data", plist::Value::DataValue(TokensResponseJson(m)));
  plist::Value full;
  full.Set("CommandUUID", plist::Value::String(cmd.command_uuid));
  full.Set("Command", std::move(command));
  cmd.plist = plist::ToXml(full);
  ORCHARD_RETURN_IF_ERROR(d_.commands->EnqueueLocked(tx, e, cmd, now_ms));
  state.pending_command = cmd.command_uuid;
  state.sync_queued_ms = now_ms;
  return PutState(tx.batch(), e.id, state);
}

orchard::Status DdmService::OnEnrolled(domain::Tx& tx, const store::Enrollment& e, int64_t now_ms) {
  auto state = State(e.id);
  if (!state.ok()) return state.status();
  auto m = declarations_.ManifestOf(e.id);
  if (!m.ok()) return m.status();
  size_t items = 0;
  for (Kind k : {Kind::kActivation, Kind::kConfiguration, Kind::kAsset, Kind::kManagement}) items += m->Of(k).size();
  // The device holds nothing any more: what it was answered or reported is void.
  EnrollmentDdm fresh;
  fresh.pending_command = state->pending_command;
  if (items == 0 && !options_.enable_on_enroll) {
    if (state->enabled || !state->served_token.empty()) return PutState(tx.batch(), e.id, fresh);
    return orchard::Status::Ok();
  }
  return QueueSyncFor(tx, e, std::move(fresh), {e.id, m->declarations_token, m->changed_ms}, now_ms);
}

orchard::Status DdmService::OnCheckedOut(domain::Tx& tx, const store::Enrollment& e, int64_t /*now_ms*/) {
  auto state = State(e.id);
  if (!state.ok()) return state.status();
  // Its profile is gone and its DDM state with it. The sync command queued
  // last is remembered: OnEnrolled replaces it if it was never delivered.
  EnrollmentDdm fresh;
  fresh.pending_command = state->pending_command;
  fresh.sync_queued_ms = state->sync_queued_ms;
  if (!options_.keep_assignments) {
    {
      std::lock_guard lock(checkout_mu_);
      checked_out_[e.id] = e.checked_out_ms;  // before the commit: see SettleCheckouts
      // Without writes nothing settles them: past kCheckoutsKept, entries whose
      // check-out began kCheckoutHorizonMs before this one go (their
      // transactions have ended: committed, or failed).
      if (checked_out_.size() > kCheckoutsKept)
        std::erase_if(checked_out_, [&](const auto& entry) {
          return entry.second < e.checked_out_ms - kCheckoutHorizonMs;
        });
    }
    ORCHARD_RETURN_IF_ERROR(declarations_.Forget(tx.batch(), e.id));
    ORCHARD_RETURN_IF_ERROR(status_.Forget(tx.batch(), e.id));
  }
  if (fresh.pending_command.empty()) tx.batch().Delete(store::Cf::kDdm, StateKey(e.id));
  else ORCHARD_RETURN_IF_ERROR(PutState(tx.batch(), e.id, fresh));
  log::Info(kLog, "event=ddm_checked_out enrollment_id={} assignments={}", log::Quote(e.id),
            options_.keep_assignments ? "kept" : "dropped");
  return orchard::Status::Ok();
}

orchard::Status DdmService::OnSyncAcknowledged(domain::Tx& tx, const std::string& enrollment_id,
                                               const std::string& command_uuid, int64_t /*now_ms*/) {
  auto state = State(enrollment_id);
  if (!state.ok()) return state.status();
  if (state->enabled) return orchard::Status::Ok();
  state->enabled = true;
  log::Info(kLog, "event=ddm_enabled enrollment_id={} command_uuid={}", log::Quote(enrollment_id),
            log::Quote(command_uuid));
  return PutState(tx.batch(), enrollment_id, *state);
}

void DdmService::SettleCheckouts() {
  std::vector<std::string> ids;
  {
    std::lock_guard lock(checkout_mu_);
    for (const auto& [id, at] : checked_out_) ids.push_back(id);
    checked_out_.clear();
  }
  if (ids.empty()) return;
  // Each check-out's transaction holds its enrollment's lock until it ends.
  domain::Tx wait(d_.locks, d_.events);
  wait.LockAll(ids);
}

Result<bool> DdmService::Redo(domain::Tx& tx, const std::string& enrollment_id) {
  int64_t at = 0;
  {
    std::lock_guard lock(checkout_mu_);
    auto it = checked_out_.find(enrollment_id);
    if (it == checked_out_.end()) return false;
    at = it->second;
  }
  auto e = d_.enrollments->Get(enrollment_id);
  if (!e.ok()) return e.status();
  if (!e->has_value() || (*e)->checked_out_ms != at) return false;  // that check-out did not commit
  store::PendingView view(d_.store, &tx.batch());
  DeclarationStore pending(&view, options_.limits);
  ORCHARD_RETURN_IF_ERROR(pending.Forget(tx.batch(), enrollment_id));
  log::Info(kLog, "event=ddm_write_after_checkout enrollment_id={} detail=\"its assignments dropped again\"",
            log::Quote(enrollment_id));
  return true;
}

Result<WriteOutcome> DdmService::Finish(domain::Tx& tx, const std::vector<TokenChange>& changes, bool notify,
                                        int64_t now_ms, const std::vector<std::string>& extra) {
  WriteOutcome out;
  out.tokens_changed = changes.size();
  std::vector<std::string> ids;
  ids.reserve(changes.size() + extra.size());
  for (const auto& c : changes) ids.push_back(c.enrollment_id);
  ids.insert(ids.end(), extra.begin(), extra.end());
  tx.LockAll(ids);
  for (const auto& id : extra) {
    if (std::any_of(changes.begin(), changes.end(), [&](const TokenChange& c) { return c.enrollment_id == id; }))
      continue;  // redone below
    auto redone = Redo(tx, id);
    if (!redone.ok()) return redone.status();
  }
  std::vector<store::Enrollment> queued;
  for (const auto& c : changes) {
    auto redone = Redo(tx, c.enrollment_id);
    if (!redone.ok()) return redone.status();
    if (*redone) continue;
    ORCHARD_RETURN_IF_ERROR(QueueSync(tx, c.enrollment_id, c, now_ms, &queued));
  }
  ORCHARD_RETURN_IF_ERROR(tx.Commit());
  out.commands_queued = queued.size();
  if (notify && !queued.empty()) {
    for (const auto& o : d_.commands->Wake(queued)) out.pushed += o.ok ? 1 : 0;
  }
  if (!changes.empty())
    log::Info(kLog, "event=ddm_tokens_changed enrollments={} commands={} pushed={}", changes.size(), queued.size(),
              out.pushed);
  return out;
}

// ---- check-ins ----

protocol::DeviceResponse DdmService::Served(const std::string& enrollment_id, const Manifest& m, std::string body) {
  auto state = State(enrollment_id);
  if (!state.ok()) return FromStatus(state.status());
  if (!state->enabled || state->served_token != m.declarations_token) {
    domain::Tx tx(d_.locks, d_.events);
    tx.Lock(enrollment_id);
    auto fresh = State(enrollment_id);  // under the lock
    if (!fresh.ok()) return FromStatus(fresh.status());
    fresh->enabled = true;
    fresh->served_token = m.declarations_token;
    fresh->served_ms = NowMillis();
    orchard::Status st = PutState(tx.batch(), enrollment_id, *fresh);
    if (st.ok()) st = tx.Commit();
    if (!st.ok()) return FromStatus(st);
  }
  return Answer(200, std::move(body));
}

protocol::DeviceResponse DdmService::Checkin(const protocol::DeclarativeRequest& r) {
  const std::string& ep = r.endpoint;
  // Only an enrolled channel speaks DDM (it got the command): a made-up user
  // channel of an authenticated device must not create state here.
  auto e = d_.enrollments->Get(r.enrollment_id);
  if (!e.ok()) return FromStatus(e.status());
  if (!e->has_value() || (*e)->state != store::EnrollmentState::kEnrolled)
    return Answer(400, {}, "this channel is not enrolled");
  if (ep == "tokens" || ep == "declaration-items") {
    if (r.has_data) return Answer(400, {}, ep + " takes no Data");
    // tokens: the stored token record (one read; every write keeps it in
    // the change's batch); declaration-items needs the manifest itself.
    if (ep == "tokens") {
      auto m = declarations_.TokenOf(r.enrollment_id);
      if (!m.ok()) return FromStatus(m.status());
      return Served(r.enrollment_id, *m, TokensResponseJson(*m));
    }
    auto m = declarations_.SharedManifestOf(r.enrollment_id);
    if (!m.ok()) return FromStatus(m.status());
    return Served(r.enrollment_id, **m, DeclarationItemsJson(**m));
  }
  if (ep == "status") return StatusCheckin(r);
  constexpr std::string_view kDeclaration = "declaration/";
  if (ep.compare(0, kDeclaration.size(), kDeclaration) == 0) {
    if (r.has_data) return Answer(400, {}, "declaration takes no Data");
    const std::string_view rest = std::string_view(ep).substr(kDeclaration.size());
    const size_t slash = rest.find('/');
    if (slash == std::string_view::npos) return Answer(400, {}, "Endpoint must be declaration/<kind>/<Identifier>");
    auto kind = KindFromName(rest.substr(0, slash));
    if (!kind) return Answer(400, {}, "unknown declaration kind in Endpoint");
    const std::string_view id = rest.substr(slash + 1);
    // Anything that cannot be an identifier is not in any manifest: the device drops it.
    if (id.empty() || id.size() > options_.limits.max_identifier_bytes || id.find('/') != std::string_view::npos)
      return Answer(404, {}, "no such declaration for this enrollment");
    auto d = declarations_.Resolve(r.enrollment_id, *kind, id);
    if (!d.ok()) return FromStatus(d.status());
    if (!d->has_value()) return Answer(404, {}, "no such declaration for this enrollment");
    return Answer(200, DeviceJson(**d));
  }
  return Answer(400, {}, "unknown DeclarativeManagement Endpoint");
}

protocol::DeviceResponse DdmService::StatusCheckin(const protocol::DeclarativeRequest& r) {
  if (!r.has_data) return Answer(400, {}, "status needs Data (a StatusReport)");
  auto report = ParseStatusReport(r.data, status_.limits());
  if (!report.ok()) return FromStatus(report.status());
  const int64_t now = NowMillis();
  domain::Tx tx(d_.locks, d_.events);
  tx.Lock(r.enrollment_id);
  auto applied = status_.Apply(tx.batch(), r.enrollment_id, *report, r.data, now);
  if (!applied.ok()) return FromStatus(applied.status());
  const std::string& id = r.enrollment_id;
  // The channel's manifest, read once and only for a report about
  // declarations: "current" and ddm.synced compare against it.
  std::shared_ptr<const Manifest> manifest;
  if (report->has_declarations) {  // (declaration statuses come only with management.declarations)
    auto m = declarations_.SharedManifestOf(id);
    if (!m.ok()) return FromStatus(m.status());
    manifest = std::move(*m);
  }
  for (const auto& c : applied->items) {
    plist::Value p;
    p.Set("item", plist::Value::String(c.item));
    std::string json = plist::ToJson(p);
    json.pop_back();
    json += ",\"value\":" + (c.value.empty() ? std::string("null") : c.value);
    json += ",\"previous\":" + (c.previous.empty() ? std::string("null") : c.previous);
    json += ",\"removed\":" + std::string(c.value.empty() ? "true" : "false") + "}";
    tx.Emit({.type = events::type::kDdmStatusChanged, .time_ms = now, .enrollment_id = id,
             .payload_json = std::move(json)});
  }
  for (const auto& c : applied->declarations) {
    plist::Value p;
    p.Set("identifier", plist::Value::String(c.status.identifier));
    p.Set("kind", plist::Value::String(KindName(c.status.kind)));
    p.Set("server_token", plist::Value::String(c.status.server_token));
    p.Set("active", plist::Value::Bool(c.status.active));
    p.Set("valid", plist::Value::String(c.status.valid));
    p.Set("removed", plist::Value::Bool(c.removed));
    p.Set("current", plist::Value::Bool(IsCurrent(*manifest, c.status)));
    std::string json = plist::ToJson(p);
    json.pop_back();
    json += ",\"reasons\":" + ReasonsJson(c.status.reasons) + "}";
    tx.Emit({.type = events::type::kDdmDeclarationStatus, .time_ms = now, .enrollment_id = id,
             .payload_json = std::move(json)});
  }
  for (const auto& e : applied->errors) {
    plist::Value p;
    p.Set("status_item", plist::Value::String(e.status_item));
    std::string json = plist::ToJson(p);
    json.pop_back();
    json += ",\"reasons\":" + ReasonsJson(e.reasons) + "}";
    tx.Emit({.type = events::type::kDdmStatusError, .time_ms = now, .enrollment_id = id,
             .payload_json = std::move(json)});
  }
  if (applied->capabilities_changed)
    tx.Emit({.type = events::type::kDdmCapabilitiesChanged, .time_ms = now, .enrollment_id = id, .payload_json = "{}"});

  auto state = State(id);
  if (!state.ok()) return FromStatus(state.status());
  state->enabled = true;
  state->status_ms = now;
  // ddm.synced: once per DeclarationsToken, when the device reports every
  // declaration of its manifest with the current ServerToken.
  if (report->has_declarations) {
    const Manifest* m = manifest.get();
    if (state->synced_token != m->declarations_token) {
      std::set<std::pair<std::string, std::string>> reported;  // (identifier, server token)
      for (const auto& ds : report->declarations) reported.insert({ds.identifier, ds.server_token});
      bool all = true;
      for (Kind k : {Kind::kActivation, Kind::kConfiguration, Kind::kAsset, Kind::kManagement})
        for (const auto& item : m->Of(k)) all = all && reported.count({item.identifier, item.server_token}) == 1;
      if (all) {
        state->synced_token = m->declarations_token;
        state->synced_ms = now;
        plist::Value p;
        p.Set("declarations_token", plist::Value::String(m->declarations_token));
        tx.Emit({.type = events::type::kDdmSynced, .time_ms = now, .enrollment_id = id,
                 .payload_json = plist::ToJson(p)});
      }
    }
  }
  orchard::Status st = PutState(tx.batch(), id, *state);
  if (st.ok()) st = tx.Commit();
  if (!st.ok()) return FromStatus(st);
  return Answer(200, {});
}

}  // namespace orchard::ddm
