// Declarative Device Management status: a device's StatusReport
// ({StatusItems, Errors, FullReport}) parsed into flat items, merged into
// what Orchard keeps per enrollment, and the changes that become events.
//
// Items: nested StatusItems objects become dotted names
// ("device.operating-system.version"); a leaf (string, number, bool, null)
// or an array is one item whose value is its canonical JSON. Arrays of
// objects that carry "identifier" (apps, accounts, certificates ...) are
// merged by identifier: an element {"identifier": x, "_removed": true}
// removes x, others replace x; the item's stored value is the array sorted
// by identifier. management.declarations is not an item: it becomes
// per-declaration statuses. An incremental report changes only what it
// mentions; a FullReport replaces every item and every declaration status
// (what it lacks is removed, and reported as a removal). management.declarations,
// in any report that has it, is the device's whole list (declarations it lacks
// are removed); a report without it, FullReport or not, leaves the declaration
// statuses as they are (devices omit it from reports).
//
// Storage (Cf::kDdm, NUL-separated; prefixes distinct from declarations.h's):
//   si\0<enrollment>\0<item>                the item's value (canonical JSON)
//   sx\0<enrollment>\0<identifier>          DeclarationStatus record
//   sz\0<enrollment>                        the errors of the latest report that had any
//   sr\0<enrollment>\0<seq(8, big-endian)>  a raw report (the last keep_raw_reports kept)
//   sm\0<enrollment>                        StatusMeta (last report time, next and oldest raw seq)
//
// Thread-safety: callers hold the enrollment's lock around Apply and its commit.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ddm/declarations.h"
#include "store/store.h"
#include "util/status.h"

namespace orchard::ddm {

struct StatusLimits {
  size_t max_report_bytes = 4 * 1024 * 1024;  // the JSON of one report
  size_t max_depth = 32;
  size_t max_items = 10000;        // items one report may carry
  size_t max_item_name_bytes = 256;
  size_t max_value_bytes = 256 * 1024;  // one item's canonical value
  size_t keep_raw_reports = 10;    // raw reports kept per enrollment (0: none)
};

struct Reason {
  std::string code;
  std::string description;
  std::string details_json;  // canonical JSON of "details" ("" when absent)
};

struct DeclarationStatus {
  std::string identifier;
  Kind kind = Kind::kConfiguration;
  std::string server_token;  // as the device reported it
  bool active = false;
  std::string valid;  // "valid" | "invalid" | "unknown" | anything else the device sent
  std::vector<Reason> reasons;
};

struct StatusError {
  std::string status_item;
  std::vector<Reason> reasons;
};

struct ParsedReport {
  bool full = false;
  std::vector<std::pair<std::string, std::string>> items;  // name, canonical JSON value, sorted by name
  // For merged arrays, removals: name -> identifiers with _removed (applied in Apply).
  std::vector<std::pair<std::string, std::vector<std::string>>> removed;
  bool has_declarations = false;  // management.declarations present
  std::vector<DeclarationStatus> declarations;  // sorted by kind, identifier
  std::vector<StatusError> errors;
};

// Whether s reports, for its kind and identifier, the ServerToken manifest m
// has now ("current").
bool IsCurrent(const Manifest& m, const DeclarationStatus& s);

// Parses a StatusReport (the decoded Data of a status check-in). Unknown items
// and enum values are kept; InvalidArgument for what is not a JSON object with
// an object StatusItems (or none), invalid UTF-8, nesting over max_depth, an
// item name over max_item_name_bytes, more than max_items items, a value over
// max_value_bytes; TooLarge over max_report_bytes.
Result<ParsedReport> ParseStatusReport(std::string_view json, const StatusLimits& limits);

// One change a report made, for the events.
struct ItemChange {
  std::string item;
  std::string value;     // canonical JSON; empty when removed
  std::string previous;  // canonical JSON; empty when it was absent
};
struct DeclarationChange {
  DeclarationStatus status;
  bool removed = false;  // the report's management.declarations no longer lists it
};
struct ApplyResult {
  std::vector<ItemChange> items;              // sorted by item
  std::vector<DeclarationChange> declarations;  // sorted by kind, identifier
  std::vector<StatusError> errors;             // the report's errors (each an event)
  // management.client-capabilities changed (an item under that prefix changed).
  bool capabilities_changed = false;
};

class StatusStore {
 public:
  explicit StatusStore(store::Store* store, StatusLimits limits = {});
  const StatusLimits& limits() const { return limits_; }

  // Merges report into the enrollment's stored status (writes into batch,
  // including the raw JSON as the newest raw report, dropping the oldest
  // beyond keep_raw_reports) and returns what changed. Values equal to the
  // stored ones are not changes.
  Result<ApplyResult> Apply(store::Batch& batch, std::string_view enrollment_id, const ParsedReport& report,
                            std::string_view raw_json, int64_t now_ms);

  // Reads.
  Result<std::optional<std::string>> Item(std::string_view enrollment_id, std::string_view item);
  // Items whose name starts with prefix, in name order after `after`, at most limit (1..1000).
  Result<Page<std::pair<std::string, std::string>>> Items(std::string_view enrollment_id, std::string_view prefix,
                                                          std::string_view after, size_t limit);
  Result<std::optional<DeclarationStatus>> Declaration(std::string_view enrollment_id, std::string_view identifier);
  Result<Page<DeclarationStatus>> Declarations(std::string_view enrollment_id, std::string_view after, size_t limit);
  struct RawReport {
    int64_t received_ms = 0;
    std::string json;
  };
  // Newest first.
  Result<std::vector<RawReport>> RawReports(std::string_view enrollment_id, size_t limit);
  // The errors of the latest report that had any.
  Result<std::vector<StatusError>> Errors(std::string_view enrollment_id);
  // Drops everything kept for the enrollment (check-out).
  Status Forget(store::Batch& batch, std::string_view enrollment_id);

 private:
  store::Store* store_;
  StatusLimits limits_;
};

}  // namespace orchard::ddm
