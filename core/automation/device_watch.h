// DeviceWatch: events about enrollments that nothing else reports, found by
// walking the enrollments a page at a time (housekeeping):
//   device.silent        no contact for one of device.silent_days (once per
//                        threshold per silence; a new contact starts over)
//   certificate.expiring the device identity certificate bound to the
//                        enrollment is within one of certificates.expiry_warn_days
//                        of its expiry (once per threshold per certificate)
// Device channels that are enrolled and not blocked only. What was reported is
// remembered in markers (Cf::kAutomation "mk"), written with the events.
//
// Thread-compatible: one thread calls Round. Borrows its dependencies.
#pragma once

#include <string>
#include <vector>

#include "domain/enrollments.h"
#include "events/events.h"
#include "store/store.h"
#include "util/status.h"

namespace orchard::automation {

struct DeviceWatchOptions {
  std::vector<int> silent_days;     // ascending; empty = no device.silent
  std::vector<int> cert_warn_days;  // ascending; empty = no identity expiry warnings
  size_t per_round = 20000;         // enrollments examined per round
};

class DeviceWatch {
 public:
  DeviceWatch(const DeviceWatchOptions& options, store::Store* store, events::EventLog* events,
              domain::Enrollments* enrollments)
      : options_(options), store_(store), events_(events), enrollments_(enrollments) {}
  // Examines the next per_round enrollments (wrapping around at the end);
  // returns the number of events emitted.
  Result<size_t> Round(int64_t now_ms);

 private:
  Status Check(const store::Enrollment& e, int64_t now_ms, events::Transaction* txn, size_t* emitted);

  DeviceWatchOptions options_;
  store::Store* store_;
  events::EventLog* events_;
  domain::Enrollments* enrollments_;
  std::string cursor_;  // where the next round starts ("" = the beginning)
};

}  // namespace orchard::automation
