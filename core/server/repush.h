// Periodic re-push: wakes devices that have pending commands but have not
// checked in, the delivery feature users of other MDMs ask for most.
// Thread-safety: call from one thread (the housekeeping thread).
#pragma once

#include <cstdint>

#include "domain/enrollments.h"
#include "push/push.h"
#include "store/store.h"
#include "util/status.h"

namespace orchard::server {

// Pushes every enrolled, unblocked enrollment that has queued commands, has not
// been seen for interval_ms, was not pushed within interval_ms (its push state
// as the provider knows it, including outcomes not yet written), and has no
// push still waiting for APNs (an APNs outage must not add one push per round).
// Returns how many were pushed (asynchronously; outcomes are recorded by the
// provider).
Result<uint64_t> RepushStale(store::Store* store, domain::Enrollments* enrollments,
                             push::PushProvider* push, int64_t interval_ms, int64_t now_ms);

}  // namespace orchard::server
