// Declarative Device Management: declarations, sets, assignments and the
// per-enrollment manifest with its DeclarationsToken (docs/ddm.md).
//
// Model (KMFDDM's): declarations keyed by Identifier; named sets, many-to-many
// with declarations; enrollment ids (each channel on its own) many-to-many
// with sets. An enrollment's manifest is the union of its sets' declarations,
// sorted by kind and Identifier. Orchard computes every token:
//   ServerToken       = hex SHA-256 of the canonical JSON of {Identifier,
//                       Payload, Type}, "\n", the revision (touch count)
//   DeclarationsToken = hex SHA-256 of "<Identifier>\t<ServerToken>\n" for
//                       every item of the manifest in manifest order
// Nothing time-, order- or failure-dependent goes into a token; an identical
// re-upload changes nothing.
//
// Storage (Cf::kDdm; NUL-separated keys, identifiers contain dots):
//   d\0<identifier>              Declaration record
//   sd\0<set>\0<identifier>      set -> declaration; value: kind digit and
//                                ServerToken (manifests from scans alone)
//   ds\0<identifier>\0<set>      declaration -> set
//   es\0<enrollment>\0<set>      enrollment -> set
//   se\0<set>\0<enrollment>      set -> enrollment
//   t\0<enrollment>              the enrollment's last DeclarationsToken and
//                                when it changed (TokenRecord)
//   sv\0<set>                    the set's content version: a fresh random
//                                value written with every change to the set's
//                                declarations or to a declaration in it
//
// Manifest cache: manifests are cached in memory per distinct set list (many
// enrollments share one), keyed by the sets' names and content versions as
// committed. A change writes new versions in its batch, so once it commits no
// read finds the old entry: the cache needs no invalidation and cannot serve
// a manifest older than what the store holds. An entry is only added when the
// versions read after building it equal those read before.
//
// Writes go into a caller's batch and report the enrollments whose
// DeclarationsToken they changed, so the caller can queue the sync command
// in the same batch. Thread-safety: reads are safe from any thread; writers
// must be serialised by the caller (DdmService holds one mutex for them), as
// each write reads what earlier writes committed.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "store/store.h"
#include "util/status.h"

namespace orchard::ddm {

enum class Kind { kActivation = 0, kConfiguration, kAsset, kManagement };
// "activation", "configuration", "asset", "management" (as in declaration/<kind>/<id>).
const char* KindName(Kind kind);
std::optional<Kind> KindFromName(std::string_view name);
// The kind of a Type "com.apple.<kind>.<more>"; nullopt for any other Type.
std::optional<Kind> KindOfType(std::string_view type);

// What a write leaving a set with an unsatisfied reference between
// declarations gets (ddm.references; docs/ddm.md "References").
enum class ReferenceCheck { kOff = 0, kWarn, kRefuse };

struct Limits {
  size_t max_identifier_bytes = 64;           // Identifier (Apple: "should not exceed 64 octets")
  size_t max_declaration_bytes = 1024 * 1024;  // the uploaded JSON
  size_t max_depth = 32;                      // nesting of the uploaded JSON
  bool allow_other_types = false;             // Types outside com.apple.{activation,...}.
};

struct Declaration {
  std::string identifier;
  std::string type;
  Kind kind = Kind::kConfiguration;
  std::string payload_json;  // canonical JSON of the Payload object
  std::string server_token;  // computed (ServerTokenOf)
  int64_t revision = 0;      // bumped by Touch
  std::string owner;         // "admin", "policy:<name>", "plugin:<name>"
  int64_t created_ms = 0;
  int64_t modified_ms = 0;
  // Not stored: what the last parse warned about (ParseDeclaration: the
  // Payload's keys Apple's schema for the Type does not name).
  std::vector<std::string> warnings;
};

// Canonical JSON: object keys sorted (bytewise), no whitespace, strings as
// JSON escapes them (non-ASCII kept as UTF-8), numbers as given in the input
// when they are integers, else the shortest round-trip form. InvalidArgument
// for anything that is not valid JSON (or invalid UTF-8, or deeper than
// max_depth).
Result<std::string> CanonicalJson(std::string_view json, size_t max_depth = 32);

// Parses and validates an uploaded declaration {Type, Identifier, Payload,
// ServerToken?}: Type and Identifier non-empty strings, Identifier at most
// max_identifier_bytes, printable ASCII (0x21..0x7e) without '/' and not "."
// or ".."; Type com.apple.<kind>.<something> (others refused unless
// allow_other_types, then of kind configuration); Payload an object; no other
// top-level keys; a Payload of a Type Apple publishes a schema for checked
// against it (ddm/schema.h: "Payload.<key path>: ..."; unknown keys only
// warn). A given ServerToken is ignored (Orchard computes it). The
// result has identifier, type, kind, payload_json, server_token (revision
// 0) and warnings set. InvalidArgument naming the key otherwise; TooLarge
// over max_declaration_bytes.
Result<Declaration> ParseDeclaration(std::string_view json, const Limits& limits);

// What writes check their arguments for before reading anything
// (InvalidArgument naming the argument), so that a policy's or plugin's call
// can be refused at once rather than when its run commits.
Status CheckIdentifierArg(std::string_view identifier, const Limits& limits);
Status CheckSetArg(std::string_view set);
Status CheckEnrollmentArg(std::string_view enrollment_id);

// The ServerToken of d's identifier, type, payload_json and revision.
std::string ServerTokenOf(const Declaration& d);
// The declaration as the device gets it: {"Identifier","Payload","ServerToken","Type"}.
std::string DeviceJson(const Declaration& d);

struct ManifestItem {
  std::string identifier;
  std::string server_token;
};
struct Manifest {
  // Each sorted by identifier.
  std::vector<ManifestItem> activations, configurations, assets, management;
  std::string declarations_token;  // never empty (an empty manifest has a token too)
  int64_t changed_ms = 0;          // when the token last changed (0: never stored)
  const std::vector<ManifestItem>& Of(Kind k) const;
};
// The DeclarationsToken of a manifest's items (in manifest order).
std::string DeclarationsTokenOf(const Manifest& m);
// {"SyncTokens":{"DeclarationsToken":...,"Timestamp":"YYYY-MM-DDTHH:MM:SSZ"}}
std::string TokensResponseJson(const Manifest& m);
// {"Declarations":{"Activations":[...],"Assets":[...],"Configurations":[...],
//  "Management":[...]},"DeclarationsToken":...}; all four arrays always present.
std::string DeclarationItemsJson(const Manifest& m);

// An enrollment whose DeclarationsToken a write changed.
struct TokenChange {
  std::string enrollment_id;
  std::string declarations_token;  // the new one
  int64_t changed_ms = 0;
};

template <typename T>
struct Page {
  std::vector<T> items;
  std::string next;  // pass as `after` for the next page; empty: no more
};

class ManifestCache;

class DeclarationStore {
 public:
  // cache_items: the manifest cache's budget, in manifest items (identifier
  // and ServerToken pairs, about 200 bytes each) summed over the cached
  // manifests; 0: no cache (the stores DdmService makes over pending batches).
  explicit DeclarationStore(store::Store* store, Limits limits = {}, size_t cache_items = 0);
  ~DeclarationStore();
  DeclarationStore(const DeclarationStore&) = delete;
  DeclarationStore& operator=(const DeclarationStore&) = delete;

  const Limits& limits() const { return limits_; }

  // ---- reads ----
  Result<std::optional<Declaration>> Get(std::string_view identifier);
  // Declarations in identifier order after `after`, at most limit (1..1000).
  Result<Page<Declaration>> List(std::string_view after, size_t limit);
  Result<Page<std::string>> Sets(std::string_view after, size_t limit);
  Result<Page<std::string>> SetDeclarations(std::string_view set, std::string_view after, size_t limit);
  Result<Page<std::string>> DeclarationSets(std::string_view identifier, std::string_view after, size_t limit);
  Result<Page<std::string>> EnrollmentSets(std::string_view enrollment_id, std::string_view after, size_t limit);
  Result<Page<std::string>> SetEnrollments(std::string_view set, std::string_view after, size_t limit);

  // The enrollment's manifest as of now (computed from its sets; its
  // changed_ms from the stored token record, 0 when none is stored).
  Result<Manifest> ManifestOf(std::string_view enrollment_id);
  // The same items and DeclarationsToken, shared with the manifest cache (no
  // copy); changed_ms is 0 (ManifestOf and TokenOf read it).
  Result<std::shared_ptr<const Manifest>> SharedManifestOf(std::string_view enrollment_id);
  struct CacheStats {
    uint64_t hits = 0, misses = 0;
    size_t entries = 0, items = 0;
  };
  CacheStats cache_stats() const;
  // The enrollment's DeclarationsToken and when it changed, as the writes
  // keep them (the token record, written with every change in the change's
  // batch): one read, what `tokens` answers. An enrollment without a record
  // has the empty manifest's token (changed_ms 0). The manifest's item lists
  // are left empty. A record that does not decode falls back to ManifestOf.
  Result<Manifest> TokenOf(std::string_view enrollment_id);
  // The declaration `identifier` of `kind` when it is in the enrollment's
  // manifest; nullopt when it is not (another enrollment's, removed, or of
  // another kind): the device is answered 404.
  Result<std::optional<Declaration>> Resolve(std::string_view enrollment_id, Kind kind, std::string_view identifier);

  // ---- writes (callers serialise them; see above) ----
  // Each writes into batch and returns the enrollments whose DeclarationsToken
  // changed (their token records are updated in the same batch).

  // Creates or replaces d (parsed by ParseDeclaration) owned by owner. Same
  // type and payload as stored: nothing written, no change (the owner is kept).
  // A replacement keeps created_ms and the revision.
  Result<std::vector<TokenChange>> Put(store::Batch& batch, Declaration d, std::string_view owner, int64_t now_ms,
                                       bool* changed = nullptr);
  // Bumps the revision (a new ServerToken). NotFound if absent.
  Result<std::vector<TokenChange>> Touch(store::Batch& batch, std::string_view identifier, int64_t now_ms);
  // Deletes the declaration and its set memberships. NotFound if absent.
  Result<std::vector<TokenChange>> Delete(store::Batch& batch, std::string_view identifier, int64_t now_ms);
  // Set membership; the set exists while it has a declaration or an enrollment.
  // NotFound when the declaration does not exist (SetAdd). No-ops change nothing.
  Result<std::vector<TokenChange>> SetAdd(store::Batch& batch, std::string_view set, std::string_view identifier,
                                          int64_t now_ms);
  Result<std::vector<TokenChange>> SetRemove(store::Batch& batch, std::string_view set, std::string_view identifier,
                                             int64_t now_ms);
  Result<std::vector<TokenChange>> Assign(store::Batch& batch, std::string_view enrollment_id, std::string_view set,
                                          int64_t now_ms);
  Result<std::vector<TokenChange>> Unassign(store::Batch& batch, std::string_view enrollment_id, std::string_view set,
                                            int64_t now_ms);
  // Drops every assignment and the token record of an enrollment (check-out).
  Status Forget(store::Batch& batch, std::string_view enrollment_id);

  // Set names: 1..64 bytes of letters, digits, '.', '_', '-'.
  static bool ValidSetName(std::string_view set);

 private:
  // The cache key of a sorted set list: each set's name and content version.
  Result<std::string> CacheKey(const std::vector<std::string>& sets);

  store::Store* store_;
  Limits limits_;
  std::unique_ptr<ManifestCache> cache_;  // null: no cache
};

}  // namespace orchard::ddm
