// The one command path, shared by the admin API, policies and plugins:
// lock the enrollment -> read it -> queue the command -> emit command.enqueued
// -> commit -> push. Nothing else writes to command queues on behalf of a
// caller (the device service only delivers and settles commands).
//
// A CommandUUID names one command of one enrollment: it is refused while the
// command is queued for that enrollment or its result is kept (AlreadyExists),
// which also makes replays of automation decisions (derived UUIDs) harmless.
//
// Thread-safety: safe for concurrent use. Borrows its dependencies.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "domain/enrollments.h"
#include "domain/tx.h"
#include "events/events.h"
#include "push/push.h"
#include "queue/queue.h"
#include "util/status.h"

namespace orchard::domain {

struct CommandDeps {
  events::EventLog* events;
  queue::CommandQueue* queue;
  Enrollments* enrollments;
  EnrollmentLocks* locks;
  push::PushProvider* push;
};

struct EnqueueResult {
  std::string enrollment_id;
  Status status = Status::Ok();       // NotFound, AlreadyExists, ResourceExhausted, Io...
  std::optional<push::Outcome> push;  // when a push was asked for and the command was queued
};

class CommandService {
 public:
  explicit CommandService(const CommandDeps& deps) : d_(deps) {}

  // Queues cmd for every id (one transaction each), then wakes the enrollments
  // it was queued for when push is true. One result per id, in order; an
  // enrollment that cannot be pushed (no token yet) gets a refused Outcome.
  std::vector<EnqueueResult> Enqueue(const std::vector<std::string>& ids, const queue::NewCommand& cmd,
                                     bool push);

  // Queues cmd for e inside tx, which must hold e's lock: checks that the
  // CommandUUID is unused for e, queues, emits command.enqueued (with origin
  // and trigger). AlreadyExists if it was queued or used before.
  Status EnqueueLocked(Tx& tx, const store::Enrollment& e, const queue::NewCommand& cmd, int64_t now_ms);

  // Wakes enrollments (after their commands committed). One Outcome per id.
  std::vector<push::Outcome> Wake(const std::vector<std::string>& ids);
  // The same for enrollments the caller read in the transaction that queued
  // their commands (no second read). One Outcome per enrollment.
  std::vector<push::Outcome> Wake(const std::vector<store::Enrollment>& enrollments);
  // The push target of an enrollment, or why it cannot be pushed.
  static Result<push::Target> TargetOf(const store::Enrollment& e);

 private:
  // Pushes targets; target_of[i] is the index in out of targets[i].
  std::vector<push::Outcome> Push(std::vector<push::Outcome> out, const std::vector<push::Target>& targets,
                                  const std::vector<size_t>& target_of);
  CommandDeps d_;
};

}  // namespace orchard::domain
