#include "domain/commands.h"

#include "plist/plist.h"
#include "util/encoding.h"

namespace orchard::domain {

Result<push::Target> CommandService::TargetOf(const store::Enrollment& e) {
  if (e.state != store::EnrollmentState::kEnrolled || e.push_token.empty())
    return Status::Unavailable("enrollment has no push token (not enrolled)");
  return push::Target{e.id, e.topic, e.push_token, e.push_magic, e.last_seen_ms};
}

Status CommandService::EnqueueLocked(Tx& tx, const store::Enrollment& e, const queue::NewCommand& cmd,
                                     int64_t now) {
  // A CommandUUID names one command of an enrollment: not reused while its
  // result is kept (one just generated cannot have been).
  if (!cmd.fresh_uuid) {
    auto used = d_.queue->GetResult(e.id, cmd.command_uuid);
    if (!used.ok()) return used.status();
    if (used->has_value())
      return Status::AlreadyExists("command " + cmd.command_uuid + " was already used for " + e.id +
                                   " (its result is stored); use a new CommandUUID");
  }
  ORCHARD_RETURN_IF_ERROR(d_.queue->Enqueue(tx.batch(), e.id, cmd, now));
  std::string payload;
  if (cmd.origin != "api" || !cmd.trigger.empty()) {
    plist::Value p;
    p.Set("origin", plist::Value::String(cmd.origin));
    if (!cmd.trigger.empty()) p.Set("trigger", plist::Value::String(cmd.trigger));
    payload = plist::ToJson(p);
  }
  tx.Emit({.type = events::type::kCommandEnqueued,
           .time_ms = now,
           .enrollment_id = e.id,
           .command_uuid = cmd.command_uuid,
           .request_type = cmd.request_type,
           .payload_json = std::move(payload)});
  return Status::Ok();
}

std::vector<EnqueueResult> CommandService::Enqueue(const std::vector<std::string>& ids,
                                                   const queue::NewCommand& cmd, bool push) {
  std::vector<EnqueueResult> out;
  out.reserve(ids.size());
  std::vector<push::Target> targets;
  std::vector<size_t> target_of;  // out index of each target
  const int64_t now = NowMillis();
  for (const auto& id : ids) {
    EnqueueResult r;
    r.enrollment_id = id;
    Tx tx(d_.locks, d_.events);
    tx.Lock(id);
    auto e = d_.enrollments->Get(id);
    if (!e.ok()) r.status = e.status();
    else if (!e->has_value()) r.status = Status::NotFound("unknown enrollment");
    else r.status = EnqueueLocked(tx, **e, cmd, now);
    if (r.status.ok()) r.status = tx.Commit();
    if (r.status.ok() && push) {
      auto target = TargetOf(**e);
      if (target.ok()) {
        targets.push_back(std::move(target.value()));
        target_of.push_back(out.size());
      } else {
        push::Outcome refused;
        refused.enrollment_id = id;
        refused.error = target.status().message();
        r.push = std::move(refused);
      }
    }
    out.push_back(std::move(r));
  }
  if (!targets.empty()) {
    auto outcomes = d_.push->Push(targets);
    for (size_t i = 0; i < outcomes.size() && i < target_of.size(); ++i) out[target_of[i]].push = std::move(outcomes[i]);
  }
  return out;
}

std::vector<push::Outcome> CommandService::Wake(const std::vector<std::string>& ids) {
  std::vector<push::Outcome> out(ids.size());
  std::vector<push::Target> targets;
  std::vector<size_t> target_of;
  for (size_t i = 0; i < ids.size(); ++i) {
    out[i].enrollment_id = ids[i];
    auto e = d_.enrollments->Get(ids[i]);
    if (!e.ok()) {
      out[i].error = e.status().message();
    } else if (!e->has_value()) {
      out[i].error = "unknown enrollment";
    } else if (auto t = TargetOf(**e); !t.ok()) {
      out[i].error = t.status().message();
    } else {
      targets.push_back(std::move(t.value()));
      target_of.push_back(i);
    }
  }
  return Push(std::move(out), targets, target_of);
}

std::vector<push::Outcome> CommandService::Wake(const std::vector<store::Enrollment>& enrollments) {
  std::vector<push::Outcome> out(enrollments.size());
  std::vector<push::Target> targets;
  std::vector<size_t> target_of;
  for (size_t i = 0; i < enrollments.size(); ++i) {
    out[i].enrollment_id = enrollments[i].id;
    if (auto t = TargetOf(enrollments[i]); !t.ok()) {
      out[i].error = t.status().message();
    } else {
      targets.push_back(std::move(t.value()));
      target_of.push_back(i);
    }
  }
  return Push(std::move(out), targets, target_of);
}

std::vector<push::Outcome> CommandService::Push(std::vector<push::Outcome> out,
                                                const std::vector<push::Target>& targets,
                                                const std::vector<size_t>& target_of) {
  if (!targets.empty()) {
    auto outcomes = d_.push->Push(targets);
    for (size_t i = 0; i < outcomes.size() && i < target_of.size(); ++i) out[target_of[i]] = std::move(outcomes[i]);
  }
  return out;
}

}  // namespace orchard::domain
