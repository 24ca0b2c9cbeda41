// Enrollment repository: enrollment records, the serial-number index, the
// certificate bindings and the per-state counters, all kept consistent by
// writing them through Put() into the caller's batch.
//
// Thread-safety: safe for concurrent use; read-modify-write of one enrollment
// must hold that enrollment's lock (EnrollmentLocks).
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "store/records.h"
#include "store/store.h"
#include "util/status.h"

namespace orchard::domain {

// Striped mutexes keyed by enrollment id; serialize one enrollment's changes.
// Several enrollments are locked through Tx::LockAll, which takes stripes in
// ascending order (deadlock-free).
class EnrollmentLocks {
 public:
  static constexpr size_t kStripes = 1024;
  std::mutex& For(const std::string& enrollment_id) { return stripes_[StripeOf(enrollment_id)]; }
  static size_t StripeOf(const std::string& enrollment_id);
  std::mutex& Stripe(size_t i) { return stripes_[i]; }

 private:
  std::array<std::mutex, kStripes> stripes_;
};

struct EnrollmentFilter {
  std::string serial;       // exact
  std::string model;        // exact match on model or product name
  std::string os_version;   // prefix, e.g. "17." matches 17.x
  std::string state;        // authenticated | enrolled | checked_out
  std::string type;         // device | user | ...
  int64_t seen_after_ms = 0;
  int64_t seen_before_ms = 0;
  std::optional<bool> blocked;
};

struct EnrollmentPage {
  std::vector<store::Enrollment> items;
  std::string next_cursor;  // empty at the end
};

class Enrollments {
 public:
  explicit Enrollments(store::Store* store) : store_(store) {}

  Result<std::optional<store::Enrollment>> Get(const std::string& id);
  // Writes `updated` (and index/counter changes relative to `previous`, which
  // is nullopt for a new enrollment) into batch.
  void Put(store::Batch& batch, const std::optional<store::Enrollment>& previous,
           const store::Enrollment& updated);

  // Certificate bindings: cert sha256 -> device channel id.
  Result<std::optional<std::string>> BoundTo(const std::string& cert_sha256);
  void Bind(store::Batch& batch, const std::string& cert_sha256, const std::string& device_id);
  void Unbind(store::Batch& batch, const std::string& cert_sha256);

  // Pages through enrollments in id order starting after cursor, returning at
  // most limit matches; scans at most scan_budget records per call.
  Result<EnrollmentPage> List(const EnrollmentFilter& filter, const std::string& cursor,
                              size_t limit, size_t scan_budget = 200000);

  // Counters of enrollments per state (by name).
  Result<int64_t> CountInState(store::EnrollmentState state);
  static std::string StateCounter(store::EnrollmentState state);

 private:
  store::Store* store_;
};

}  // namespace orchard::domain
