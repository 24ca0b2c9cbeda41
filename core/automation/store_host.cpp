#include "automation/store_host.h"

#include <algorithm>
#include <set>

#include "log/log.h"
#include "util/encoding.h"

namespace orchard::automation {
namespace {

constexpr const char* kLog = "automation";
using plist::Value;


// Record values: time ms(8) then JSON, so pruning reads no JSON.
std::string RecordValue(int64_t time_ms, const Value& v) {
  std::string out;
  PutBigEndian64(&out, static_cast<uint64_t>(time_ms));
  out += plist::ToJson(v);
  return out;
}

log::Level LevelOf(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return log::Level::kDebug;
    case LogLevel::kInfo: return log::Level::kInfo;
    case LogLevel::kWarn: return log::Level::kWarn;
    case LogLevel::kError: return log::Level::kError;
  }
  return log::Level::kInfo;
}

Value ComplianceJson(const std::string& id, const ComplianceState& s) {
  Value v;
  v.Set("enrollment_id", Value::String(id));
  v.Set("status", Value::String(ComplianceStatusName(s.status)));
  if (!s.reason.empty()) v.Set("reason", Value::String(s.reason));
  v.Set("attempts", Value::Integer(s.attempts));
  v.Set("step", Value::Integer(s.step));
  if (s.first_failed_ms) v.Set("first_failed_at", Value::String(FormatRfc3339(s.first_failed_ms)));
  if (!s.last_command_uuid.empty()) v.Set("last_command_uuid", Value::String(s.last_command_uuid));
  return v;
}

// The part of a record every kind shares.
// A DDM write as a decision record shows it.
Value DdmOpJson(const DdmOp& op, const std::string& outcome, const std::string& error) {
  Value v;
  v.Set("op", Value::String(DdmOpName(op.kind)));
  switch (op.kind) {
    case DdmOp::Kind::kPutDeclaration: v.Set("declaration", Value::String(op.a)); break;
    case DdmOp::Kind::kDeleteDeclaration:
    case DdmOp::Kind::kTouch: v.Set("identifier", Value::String(op.a)); break;
    case DdmOp::Kind::kSetAdd:
    case DdmOp::Kind::kSetRemove:
      v.Set("set", Value::String(op.a));
      v.Set("identifier", Value::String(op.b));
      break;
    case DdmOp::Kind::kAssign:
    case DdmOp::Kind::kUnassign:
      v.Set("enrollment_id", Value::String(op.a));
      v.Set("set", Value::String(op.b));
      break;
  }
  v.Set("outcome", Value::String(outcome));
  if (!error.empty()) v.Set("error", Value::String(error));
  return v;
}

Value RecordHeader(const std::string& consumer, const std::string& cursor, const RunRecord& r, int64_t now) {
  Value v;
  v.Set("cursor", Value::String(cursor));
  v.Set("consumer", Value::String(consumer));
  v.Set("time", Value::String(FormatRfc3339(now)));
  Value ev;
  ev.Set("type", Value::String(r.event.type));
  if (!r.event.enrollment_id.empty()) ev.Set("enrollment_id", Value::String(r.event.enrollment_id));
  if (!r.event.command_uuid.empty()) ev.Set("command_uuid", Value::String(r.event.command_uuid));
  if (!r.event.request_type.empty()) ev.Set("request_type", Value::String(r.event.request_type));
  if (r.event.time_ms) ev.Set("time", Value::String(FormatRfc3339(r.event.time_ms)));
  v.Set("event", std::move(ev));
  v.Set("attempts", Value::Integer(r.attempts));
  return v;
}

Value LogsJson(const std::vector<LogLine>& logs) {
  Value list = Value::MakeArray();
  for (const auto& l : logs) {
    Value line;
    line.Set("level", Value::String(LogLevelName(l.level)));
    line.Set("message", Value::String(l.message));
    list.AsArray()->push_back(std::move(line));
  }
  return list;
}

}  // namespace

std::string AutomationStore::Key(std::string_view kind, std::string_view consumer, std::string_view rest) {
  std::string k(kind);
  k.push_back('\0');
  k.append(consumer);
  k.push_back('\0');
  k.append(rest);
  return k;
}

std::string AutomationStore::RecordKey(std::string_view kind, std::string_view consumer, uint32_t partition,
                                       uint64_t seq) {
  std::string k = Key(kind, consumer, "");
  PutBigEndian32(&k, partition);
  PutBigEndian64(&k, seq);
  return k;
}

std::string AutomationStore::CounterName(const std::string& consumer, ComplianceStatus s) {
  return "compliance/" + consumer + "/" + ComplianceStatusName(s);
}

Result<std::optional<store::Enrollment>> AutomationStore::Device(const std::string& id) {
  return enrollments_->Get(id);
}

Result<std::optional<store::CommandResult>> AutomationStore::LastResult(const std::string& id,
                                                                        const std::string& rt) {
  return queue_->LatestResult(id, rt);
}

Result<std::optional<std::string>> AutomationStore::KvGet(const std::string& ns, const std::string& key) {
  return store_->Get(store::Cf::kAutomation, Key("kv", ns, key));
}

Result<KvPairs> AutomationStore::KvScan(const std::string& ns, const std::string& prefix, const std::string& after,
                                        size_t limit) {
  const std::string base = Key("kv", ns, "");
  std::string lower = base + prefix;
  if (!after.empty() && after >= prefix) {
    lower = base + after;
    lower.push_back('\0');  // strictly after
  }
  const std::string upper = store::PrefixEnd(base + prefix);
  KvPairs out;
  auto it = store_->Scan(store::Cf::kAutomation, lower, upper);
  for (; it->Valid() && out.size() < limit; it->Next())
    out.emplace_back(std::string(it->key().substr(base.size())), std::string(it->value()));
  ORCHARD_RETURN_IF_ERROR(it->status());
  return out;
}

Status AutomationStore::KvWriteNow(const std::string& ns, const std::vector<KvWrite>& writes) {
  store::Batch batch;
  for (const auto& w : writes) {
    if (w.value) batch.Put(store::Cf::kAutomation, Key("kv", ns, w.key), *w.value);
    else batch.Delete(store::Cf::kAutomation, Key("kv", ns, w.key));
  }
  if (batch.empty()) return Status::Ok();
  return store_->Write(batch);
}

Result<std::optional<ComplianceState>> AutomationStore::Compliance(const std::string& consumer,
                                                                   const std::string& id) {
  auto v = store_->Get(store::Cf::kAutomation, Key("cs", consumer, id));
  if (!v.ok()) return v.status();
  if (!v->has_value()) return std::optional<ComplianceState>();
  auto s = ComplianceState::Decode(**v);
  if (!s.ok()) return s.status();
  return std::optional<ComplianceState>(std::move(s.value()));
}

Result<std::optional<ConsumerFlags>> AutomationStore::GetFlags(const std::string& consumer) {
  auto v = store_->Get(store::Cf::kAutomation, Key("fl", consumer, ""));
  if (!v.ok()) return v.status();
  if (!v->has_value()) return std::optional<ConsumerFlags>();
  auto parsed = plist::ParseJson(**v);
  if (!parsed.ok()) return Status::Internal("corrupt flags of " + consumer);
  ConsumerFlags f;
  f.enabled = parsed->GetBool("enabled", true);
  f.dry_run = parsed->GetBool("dry_run", false);
  return std::optional<ConsumerFlags>(f);
}

Status AutomationStore::PutFlags(const std::string& consumer, const ConsumerFlags& flags) {
  Value v;
  v.Set("enabled", Value::Bool(flags.enabled));
  v.Set("dry_run", Value::Bool(flags.dry_run));
  store::Batch b;
  b.Put(store::Cf::kAutomation, Key("fl", consumer, ""), plist::ToJson(v));
  return store_->Write(b);
}

Result<RecordPage> AutomationStore::Records(const std::string& kind, const std::string& consumer,
                                            const std::string& enrollment_id, const std::string& after,
                                            size_t limit, size_t scan_budget) {
  const std::string base = Key(kind, consumer, "");
  std::string lower = base;
  if (!after.empty()) {
    auto c = Cursor::Parse(after);
    if (!c) return Status::InvalidArgument("after must be a cursor like 0.1234");
    lower = RecordKey(kind, consumer, c->partition, c->seq);
    lower.push_back('\0');  // strictly after
  }
  RecordPage page;
  size_t scanned = 0;
  std::string last_cursor;
  auto it = store_->Scan(store::Cf::kAutomation, lower, store::PrefixEnd(base));
  for (; it->Valid() && page.items.size() < limit && scanned < scan_budget; it->Next()) {
    ++scanned;
    auto k = it->key();
    if (k.size() != base.size() + 12 || it->value().size() < 8) continue;
    last_cursor = Cursor{GetBigEndian32(k.substr(base.size())), GetBigEndian64(k.substr(base.size() + 4))}.ToString();
    auto v = plist::ParseJson(it->value().substr(8));
    if (!v.ok()) continue;
    if (!enrollment_id.empty()) {
      bool match = false;
      if (const Value* devs = v->Find("devices"); devs && devs->AsArray())
        for (const auto& d : *devs->AsArray()) match = match || (d.AsString() && *d.AsString() == enrollment_id);
      if (!match) continue;
    }
    page.items.push_back(std::move(v.value()));
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  if (it->Valid()) page.next_after = last_cursor;  // more may follow
  return page;
}

Result<std::vector<ComplianceEntry>> AutomationStore::ComplianceList(const std::string& consumer,
                                                                     const std::optional<ComplianceStatus>& status,
                                                                     const std::string& after, size_t limit,
                                                                     std::string* next_after, size_t scan_budget) {
  const std::string base = Key("cs", consumer, "");
  std::string lower = base + after;
  if (!after.empty()) lower.push_back('\0');
  std::vector<ComplianceEntry> out;
  next_after->clear();
  size_t scanned = 0;
  std::string last;
  auto it = store_->Scan(store::Cf::kAutomation, lower, store::PrefixEnd(base));
  for (; it->Valid() && out.size() < limit && scanned < scan_budget; it->Next()) {
    ++scanned;
    last.assign(it->key().substr(base.size()));
    auto s = ComplianceState::Decode(it->value());
    if (!s.ok() || (status && s->status != *status)) continue;
    out.push_back({last, std::move(s.value())});
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  if (it->Valid()) *next_after = last;
  return out;
}

Result<std::map<std::string, int64_t>> AutomationStore::ComplianceCounts(const std::string& consumer) {
  std::map<std::string, int64_t> out;
  for (int i = 0; i <= static_cast<int>(ComplianceStatus::kExempt); ++i) {
    auto s = static_cast<ComplianceStatus>(i);
    if (s == ComplianceStatus::kUnknown) continue;  // never stored as such for long; not counted
    auto n = store_->GetCounter(CounterName(consumer, s));
    if (!n.ok()) return n.status();
    out[ComplianceStatusName(s)] = std::max<int64_t>(0, *n);
  }
  return out;
}

Result<uint64_t> AutomationStore::PruneRecords(int64_t cutoff_ms, size_t batch_size) {
  uint64_t removed = 0;
  for (const char* kind : {"dl", "pk"}) {
    std::string lower = std::string(kind) + '\0';
    const std::string end = store::PrefixEnd(lower);
    while (lower < end) {
      store::Batch b;
      size_t n = 0;
      std::string next_lower;
      auto it = store_->Scan(store::Cf::kAutomation, lower, end);
      for (; it->Valid() && n < batch_size; it->Next()) {
        auto k = it->key();
        if (it->value().size() >= 8 && static_cast<int64_t>(GetBigEndian64(it->value())) >= cutoff_ms) {
          // Records of one consumer are in event order: skip to the next consumer.
          const size_t sep = k.find('\0', std::string_view(kind).size() + 1);
          next_lower = store::PrefixEnd(std::string(k.substr(0, sep + 1)));
          break;
        }
        b.Delete(store::Cf::kAutomation, k);
        ++n;
      }
      ORCHARD_RETURN_IF_ERROR(it->status());
      const bool more = it->Valid();
      if (!b.empty()) ORCHARD_RETURN_IF_ERROR(store_->Write(b));
      removed += n;
      if (!next_lower.empty()) lower = next_lower;
      else if (!more) break;
      // else: a full batch; continue from where it stopped (deleted keys are gone)
    }
  }
  return removed;
}

Status StoreCommitter::Commit(const LaneKey& lane, uint64_t checkpoint_seq, uint64_t epoch,
                              std::vector<RunRecord>& runs) {
  // Fencing: a lane saved under a newer lease epoch belongs to another node now.
  auto saved = d_.events->LaneCheckpoints(lane.consumer, lane.partition);
  if (!saved.ok()) return saved.status();
  if (auto it = saved->find(lane.lane); it != saved->end() && it->second.epoch > epoch)
    return Status::PermissionDenied("lane " + std::to_string(lane.lane) + " of " + lane.consumer +
                                    " is held under a newer lease");
  std::vector<std::string> ids;
  std::vector<const DdmOp*> ddm_ops;
  for (const auto& r : runs) {
    if (r.dry_run || r.parked) continue;
    for (const auto& c : r.decisions.commands) ids.push_back(c.enrollment_id);
    for (const auto& op : r.decisions.ddm) ddm_ops.push_back(&op);
  }
  // DDM writes are staged first (under the DDM write lock, held to the
  // commit): the enrollments whose tokens they change get sync commands in
  // this transaction, so their locks are taken with the others.
  std::unique_ptr<DdmStaged> staged;
  std::vector<std::string> ddm_outcomes(ddm_ops.size());
  if (!ddm_ops.empty()) {
    if (DdmHost* ddm = d_.automation->ddm()) {
      auto st = ddm->Stage(ddm_ops, lane.consumer, NowMillis(), &ddm_outcomes);
      if (!st.ok()) return st.status();
      staged = std::move(*st);
      ids.insert(ids.end(), staged->enrollments().begin(), staged->enrollments().end());
    } else {
      for (auto& o : ddm_outcomes) o = "Declarative Device Management is not configured";
    }
  }
  size_t ddm_index = 0;
  domain::Tx tx(d_.locks, d_.events);
  tx.LockAll(ids);
  const int64_t now = NowMillis();
  std::vector<std::string> wake;
  std::map<std::string, int64_t> counters;
  std::map<std::string, ComplianceState> batch_state;  // compliance written earlier in this batch
  for (auto& r : runs) {
    const std::string cursor = Cursor{lane.partition, r.event.seq}.ToString();
    Value rec = RecordHeader(lane.consumer, cursor, r, now);
    std::set<std::string> devices;
    if (!r.event.enrollment_id.empty()) devices.insert(r.event.enrollment_id);
    if (r.parked) {
      Value err;
      err.Set("error", Value::String(RunErrorName(r.outcome.error)));
      err.Set("message", Value::String(r.outcome.message));
      rec.Set("error", std::move(err));
      rec.Set("logs", LogsJson(r.decisions.logs));
      Value devs = Value::MakeArray();
      for (const auto& d : devices) devs.AsArray()->push_back(Value::String(d));
      rec.Set("devices", std::move(devs));
      tx.batch().Put(store::Cf::kAutomation, AutomationStore::RecordKey("pk", lane.consumer, lane.partition, r.event.seq),
                     RecordValue(now, rec));
      continue;
    }
    Value commands = Value::MakeArray();
    for (const auto& c : r.decisions.commands) {
      devices.insert(c.enrollment_id);
      Value cv;
      cv.Set("enrollment_id", Value::String(c.enrollment_id));
      cv.Set("command_uuid", Value::String(c.command_uuid));
      cv.Set("request_type", Value::String(c.request_type));
      cv.Set("priority", Value::Integer(c.priority));
      if (r.dry_run) {
        cv.Set("outcome", Value::String("dry_run"));
        cv.Set("plist", Value::String(c.plist));
        commands.AsArray()->push_back(std::move(cv));
        continue;
      }
      auto e = d_.enrollments->Get(c.enrollment_id);
      if (!e.ok()) return e.status();
      std::string outcome = "queued";
      if (!e->has_value()) {
        outcome = "unknown_enrollment";
      } else {
        queue::NewCommand nc{c.command_uuid, c.request_type, c.plist, c.priority, lane.consumer, cursor};
        Status st = d_.commands->EnqueueLocked(tx, **e, nc, now);
        if (st.code() == Code::kAlreadyExists) outcome = "duplicate";  // a replay: already queued or done
        else if (!st.ok()) return st;  // nothing is written; the runner retries
        else if (c.push) wake.push_back(c.enrollment_id);
      }
      cv.Set("outcome", Value::String(outcome));
      commands.AsArray()->push_back(std::move(cv));
    }
    if (!commands.AsArray()->empty()) rec.Set("commands", std::move(commands));
    if (!r.decisions.pushes.empty()) {
      Value pushes = Value::MakeArray();
      for (const auto& id : r.decisions.pushes) {
        devices.insert(id);
        pushes.AsArray()->push_back(Value::String(id));
        if (!r.dry_run) wake.push_back(id);
      }
      rec.Set("pushes", std::move(pushes));
    }
    if (!r.decisions.kv.empty()) {
      Value kv = Value::MakeArray();
      for (const auto& w : r.decisions.kv) {
        Value kvv;
        kvv.Set("key", Value::String(w.key));
        if (w.value) kvv.Set("value", Value::String(*w.value));
        else kvv.Set("deleted", Value::Bool(true));
        kv.AsArray()->push_back(std::move(kvv));
        if (r.dry_run) continue;
        const std::string key = AutomationStore::Key("kv", lane.consumer, w.key);
        if (w.value) tx.batch().Put(store::Cf::kAutomation, key, *w.value);
        else tx.batch().Delete(store::Cf::kAutomation, key);
      }
      rec.Set("store", std::move(kv));
    }
    if (!r.decisions.compliance.empty()) {
      Value cl = Value::MakeArray();
      for (const auto& w : r.decisions.compliance) {
        devices.insert(w.enrollment_id);
        cl.AsArray()->push_back(ComplianceJson(w.enrollment_id, w.state));
        if (r.dry_run) continue;
        std::optional<ComplianceState> prev;
        if (auto it = batch_state.find(w.enrollment_id); it != batch_state.end()) {
          prev = it->second;
        } else {
          auto p = d_.automation->Compliance(lane.consumer, w.enrollment_id);
          if (!p.ok()) return p.status();
          prev = *p;
        }
        if (!prev || prev->status != w.state.status) {
          if (prev && prev->status != ComplianceStatus::kUnknown)
            counters[AutomationStore::CounterName(lane.consumer, prev->status)] -= 1;
          if (w.state.status != ComplianceStatus::kUnknown)
            counters[AutomationStore::CounterName(lane.consumer, w.state.status)] += 1;
        }
        batch_state[w.enrollment_id] = w.state;
        tx.batch().Put(store::Cf::kAutomation, AutomationStore::Key("cs", lane.consumer, w.enrollment_id),
                       w.state.Encode());
      }
      rec.Set("compliance", std::move(cl));
    }
    if (!r.decisions.ddm.empty()) {
      Value dv = Value::MakeArray();
      for (const auto& op : r.decisions.ddm) {
        if (op.kind == DdmOp::Kind::kAssign || op.kind == DdmOp::Kind::kUnassign) devices.insert(op.a);
        std::string outcome = r.dry_run ? "dry_run" : "applied";
        std::string error;
        if (!r.dry_run) {
          error = ddm_outcomes[ddm_index++];
          if (!error.empty()) outcome = "refused";
        }
        dv.AsArray()->push_back(DdmOpJson(op, outcome, error));
      }
      rec.Set("ddm", std::move(dv));
    }
    if (!r.decisions.logs.empty()) rec.Set("logs", LogsJson(r.decisions.logs));
    if (r.dry_run) rec.Set("dry_run", Value::Bool(true));
    Value devs = Value::MakeArray();
    for (const auto& d : devices) devs.AsArray()->push_back(Value::String(d));
    rec.Set("devices", std::move(devs));
    if (r.dry_run || r.decisions.HasEffects())
      tx.batch().Put(store::Cf::kAutomation, AutomationStore::RecordKey("dl", lane.consumer, lane.partition, r.event.seq),
                     RecordValue(now, rec));
  }
  for (const auto& [name, delta] : counters)
    if (delta != 0) tx.batch().AddCounter(name, delta);
  if (staged) ORCHARD_RETURN_IF_ERROR(staged->Write(tx, now));
  events::EventLog::PutLaneCheckpoint(tx.batch(), lane.consumer, lane.partition, lane.lane, {checkpoint_seq, epoch});
  ORCHARD_RETURN_IF_ERROR(tx.Commit());
  if (staged) staged->Wake();

  // Committed: now the log lines and the pushes.
  for (const auto& r : runs) {
    for (const auto& l : r.decisions.logs) {
      log::Write(kLog, LevelOf(l.level),
                 fmt::format("event=consumer_log consumer={} cursor={} enrollment_id={} message={}", lane.consumer,
                             Cursor{lane.partition, r.event.seq}.ToString(), log::Quote(r.event.enrollment_id),
                             log::Quote(l.message)));
    }
  }
  if (!wake.empty()) {
    std::sort(wake.begin(), wake.end());
    wake.erase(std::unique(wake.begin(), wake.end()), wake.end());
    (void)d_.commands->Wake(wake);  // outcomes are recorded by the push service
  }
  return Status::Ok();
}

Result<std::map<int, SavedCheckpoint>> StoreCommitter::LoadCheckpoints(const std::string& consumer,
                                                                      uint32_t partition) {
  auto cps = d_.events->LaneCheckpoints(consumer, partition);
  if (!cps.ok()) return cps.status();
  std::map<int, SavedCheckpoint> out;
  for (const auto& [lane, cp] : *cps) out[lane] = {cp.seq, cp.epoch};
  return out;
}

Status StoreCommitter::DropCheckpoints(const std::string& consumer) {
  auto r = d_.events->UnregisterConsumer(consumer);
  return r.ok() ? Status::Ok() : r.status();
}

}  // namespace orchard::automation
