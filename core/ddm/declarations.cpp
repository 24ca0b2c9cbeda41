#include "ddm/declarations.h"

#include <algorithm>
#include <deque>
#include <mutex>
#include <unordered_map>

#include "ddm/json.h"
#include "ddm/schema.h"
#include "log/log.h"
#include "util/encoding.h"
#include "util/record.h"
#include "util/utf8.h"

namespace orchard::ddm {
namespace {

constexpr const char* kLog = "ddm";
constexpr uint64_t kDeclarationVersion = 1;
constexpr uint64_t kTokenVersion = 1;
constexpr size_t kMaxPageLimit = 1000;
constexpr size_t kMaxEnrollmentIdBytes = 256;
constexpr size_t kMaxSetNameBytes = 64;

// ---- keys (Cf::kDdm) ----

std::string Key(std::string_view tag, std::string_view a) {
  std::string k(tag);
  k.push_back('\0');
  k.append(a);
  return k;
}
std::string Key(std::string_view tag, std::string_view a, std::string_view b) {
  std::string k = Key(tag, a);
  k.push_back('\0');
  k.append(b);
  return k;
}
// Every key tag\0a\0<suffix>.
std::string Prefix(std::string_view tag, std::string_view a) { return Key(tag, a) + std::string(1, '\0'); }

std::string DeclKey(std::string_view id) { return Key("d", id); }
std::string TokenKey(std::string_view enrollment) { return Key("t", enrollment); }
std::string VersionKey(std::string_view set) { return Key("sv", set); }

// A new content version for each of sets (see the header: manifest cache).
void BumpVersions(store::Batch& batch, const std::vector<std::string>& sets) {
  for (const auto& s : sets) batch.Put(store::Cf::kDdm, VersionKey(s), NewUuid());
}

std::string PayloadOf(const Declaration& d) { return d.payload_json.empty() ? "{}" : d.payload_json; }

Status CheckIdentifier(std::string_view id, size_t max_bytes) {
  if (id.empty()) return Status::InvalidArgument("Identifier: must not be empty");
  if (id.size() > max_bytes)
    return Status::InvalidArgument("Identifier: longer than " + std::to_string(max_bytes) + " bytes");
  if (id == "." || id == "..") return Status::InvalidArgument("Identifier: must not be \".\" or \"..\"");
  for (size_t i = 0; i < id.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(id[i]);
    if (c == '/') return Status::InvalidArgument("Identifier: must not contain '/'");
    if (c < 0x21 || c > 0x7e) {
      static constexpr char kHex[] = "0123456789abcdef";
      return Status::InvalidArgument(std::string("Identifier: must be printable ASCII without spaces (byte 0x") +
                                     kHex[c >> 4] + kHex[c & 15] + " at offset " + std::to_string(i) + ")");
    }
  }
  return Status::Ok();
}

Result<Kind> KindFor(std::string_view type, const Limits& limits) {
  if (type.empty()) return Status::InvalidArgument("Type: must not be empty");
  if (!IsValidUtf8(type)) return Status::InvalidArgument("Type: invalid UTF-8");
  if (auto k = KindOfType(type)) return *k;
  if (limits.allow_other_types) return Kind::kConfiguration;
  return Status::InvalidArgument(
      "Type: must start with com.apple.activation., com.apple.configuration., com.apple.asset. or "
      "com.apple.management.");
}

Status CheckEnrollmentId(std::string_view id) {
  if (id.empty()) return Status::InvalidArgument("enrollment id: must not be empty");
  if (id.size() > kMaxEnrollmentIdBytes)
    return Status::InvalidArgument("enrollment id: longer than " + std::to_string(kMaxEnrollmentIdBytes) + " bytes");
  if (id.find('\0') != std::string_view::npos) return Status::InvalidArgument("enrollment id: contains NUL");
  return Status::Ok();
}

Status CheckSet(std::string_view set) {
  if (DeclarationStore::ValidSetName(set)) return Status::Ok();
  return Status::InvalidArgument("set " + json::Excerpt(set) + ": 1 to 64 letters, digits, '.', '_' or '-'");
}

Status CheckLimit(size_t limit) {
  if (limit >= 1 && limit <= kMaxPageLimit) return Status::Ok();
  return Status::InvalidArgument("limit: must be 1 to " + std::to_string(kMaxPageLimit));
}

// A key component read from the store or given by a caller: no NUL, not empty.
bool IsKeyPart(std::string_view s) { return !s.empty() && s.find('\0') == std::string_view::npos; }

// ---- records ----

// The value of sd\0<set>\0<identifier>: the declaration's kind and
// ServerToken, so a manifest is computed from index scans alone. Kept by
// every write of the declaration; an empty value (older records) is read from
// the declaration record instead.
std::string EncodeMember(Kind kind, std::string_view server_token) {
  std::string v(1, static_cast<char>('0' + static_cast<int>(kind)));
  v.append(server_token);
  return v;
}

std::string EncodeDeclaration(const Declaration& d) {
  RecordWriter w;
  w.PutVarint(kDeclarationVersion);
  w.PutString(d.type);
  w.PutVarint(static_cast<uint64_t>(d.kind));
  w.PutString(d.server_token);
  w.PutSigned(d.revision);
  w.PutString(d.owner);
  w.PutSigned(d.created_ms);
  w.PutSigned(d.modified_ms);
  w.PutString(d.payload_json);
  return w.Take();
}

Result<Declaration> DecodeDeclaration(std::string_view id, std::string_view bytes) {
  RecordReader r(bytes);
  if (r.GetVarint() != kDeclarationVersion)
    return Status::Internal("corrupt declaration record " + json::Excerpt(id) + " (version)");
  Declaration d;
  d.identifier = std::string(id);
  d.type = r.GetString();
  const uint64_t kind = r.GetVarint();
  d.server_token = r.GetString();
  d.revision = r.GetSigned();
  d.owner = r.GetString();
  d.created_ms = r.GetSigned();
  d.modified_ms = r.GetSigned();
  d.payload_json = r.GetString();
  if (r.corrupt() || kind > static_cast<uint64_t>(Kind::kManagement))
    return Status::Internal("corrupt declaration record " + json::Excerpt(id));
  d.kind = static_cast<Kind>(kind);
  return d;
}

struct TokenRecord {
  std::string declarations_token;
  int64_t changed_ms = 0;
};

std::string EncodeToken(const TokenRecord& t) {
  RecordWriter w;
  w.PutVarint(kTokenVersion);
  w.PutString(t.declarations_token);
  w.PutSigned(t.changed_ms);
  return w.Take();
}

std::optional<TokenRecord> DecodeToken(std::string_view bytes) {
  RecordReader r(bytes);
  if (r.GetVarint() != kTokenVersion) return std::nullopt;
  TokenRecord t;
  t.declarations_token = r.GetString();
  t.changed_ms = r.GetSigned();
  if (r.corrupt() || t.declarations_token.empty()) return std::nullopt;
  return t;
}

const std::string& EmptyManifestToken() {
  static const std::string kToken = Sha256Hex("");
  return kToken;
}

// ---- store reads ----

Result<std::optional<Declaration>> ReadDeclaration(store::Store* db, std::string_view id) {
  if (!IsKeyPart(id)) return std::optional<Declaration>();
  auto v = db->Get(store::Cf::kDdm, DeclKey(id));
  if (!v.ok()) return v.status();
  if (!v->has_value()) return std::optional<Declaration>();
  auto d = DecodeDeclaration(id, **v);
  if (!d.ok()) return d.status();
  return std::optional<Declaration>(std::move(*d));
}

Result<bool> Exists(store::Store* db, const std::string& key) {
  auto v = db->Get(store::Cf::kDdm, key);
  if (!v.ok()) return v.status();
  return v->has_value();
}

// The last components of the keys under prefix (in key order), from lower on,
// at most max of them (0: all).
Result<std::vector<std::string>> Suffixes(store::Store* db, const std::string& prefix, const std::string& lower,
                                          size_t max = 0) {
  std::vector<std::string> out;
  auto it = db->Scan(store::Cf::kDdm, lower, store::PrefixEnd(prefix));
  for (; it->Valid() && (max == 0 || out.size() < max); it->Next())
    out.emplace_back(it->key().substr(prefix.size()));
  ORCHARD_RETURN_IF_ERROR(it->status());
  return out;
}

Result<std::vector<std::string>> AllSuffixes(store::Store* db, const std::string& prefix) {
  return Suffixes(db, prefix, prefix);
}

// One page of suffixes of prefix after `after`.
Result<Page<std::string>> SuffixPage(store::Store* db, const std::string& prefix, std::string_view after,
                                     size_t limit) {
  ORCHARD_RETURN_IF_ERROR(CheckLimit(limit));
  const std::string lower = after.empty() ? prefix : prefix + std::string(after) + std::string(1, '\0');
  auto items = Suffixes(db, prefix, lower, limit + 1);
  if (!items.ok()) return items.status();
  Page<std::string> page;
  page.items = std::move(*items);
  if (page.items.size() > limit) {
    page.items.pop_back();
    page.next = page.items.back();
  }
  return page;
}

// The distinct first components a of the keys tag\0a\0..., in order, from
// the first one greater than `after`. One seek per name.
class DistinctNames {
 public:
  DistinctNames(store::Store* db, std::string_view tag, std::string_view after)
      : db_(db), prefix_(std::string(tag) + std::string(1, '\0')) {
    lower_ = after.empty() ? prefix_ : prefix_ + std::string(after) + "\x01";
  }
  Result<std::optional<std::string>> Next() {
    auto it = db_->Scan(store::Cf::kDdm, lower_, store::PrefixEnd(prefix_));
    if (!it->Valid()) {
      ORCHARD_RETURN_IF_ERROR(it->status());
      return std::optional<std::string>();
    }
    const std::string_view rest = it->key().substr(prefix_.size());
    std::string name(rest.substr(0, rest.find('\0')));
    lower_ = prefix_ + name + "\x01";  // past every key of this name
    return std::optional<std::string>(std::move(name));
  }

 private:
  store::Store* db_;
  std::string prefix_, lower_;
};

// ---- manifests ----

struct DeclInfo {
  Kind kind = Kind::kConfiguration;
  std::string server_token;
};

// The change a write is making, seen by the manifest computation before it is
// committed (each write changes one declaration, one membership or one
// assignment).
struct Overlay {
  std::string decl_id;           // non-empty: this declaration is replaced or deleted
  std::optional<DeclInfo> decl;  // its new state; nullopt: deleted
  std::string member_set, member_id;  // non-empty: member_id joins or leaves member_set
  bool member_present = false;
  std::string assign_enrollment, assign_set;  // non-empty: the enrollment joins or leaves the set
  bool assign_present = false;
};

// Apply a membership change to a sorted list.
void ApplyChange(std::vector<std::string>* list, const std::string& item, bool present) {
  auto pos = std::lower_bound(list->begin(), list->end(), item);
  const bool there = pos != list->end() && *pos == item;
  if (present && !there) list->insert(pos, item);
  if (!present && there) list->erase(pos);
}

// Computes manifests from committed state plus an overlay. Caches each set's
// declarations, each declaration's token and each distinct set list's
// DeclarationsToken, so a fan-out to many enrollments reads each once.
class ManifestCalc {
 public:
  ManifestCalc(store::Store* db, const Overlay& overlay) : db_(db), ov_(overlay) {}

  // The enrollment's sets, sorted.
  Result<std::vector<std::string>> SetsOf(std::string_view enrollment) {
    auto sets = AllSuffixes(db_, Prefix("es", enrollment));
    if (!sets.ok()) return sets.status();
    if (!ov_.assign_enrollment.empty() && ov_.assign_enrollment == enrollment)
      ApplyChange(&*sets, ov_.assign_set, ov_.assign_present);
    return sets;
  }

  Result<Manifest> Build(const std::vector<std::string>& sets) {
    std::vector<std::string> ids;
    for (const auto& s : sets) {
      auto decls = SetDeclarations(s);
      if (!decls.ok()) return decls.status();
      ids.insert(ids.end(), (*decls)->begin(), (*decls)->end());
    }
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    Manifest m;
    for (const auto& id : ids) {
      auto info = Info(id);
      if (!info.ok()) return info.status();
      if (!(*info)->has_value()) continue;  // deleted (or a dangling membership)
      const DeclInfo& di = ***info;
      std::vector<ManifestItem>* list = &m.configurations;
      switch (di.kind) {
        case Kind::kActivation: list = &m.activations; break;
        case Kind::kConfiguration: list = &m.configurations; break;
        case Kind::kAsset: list = &m.assets; break;
        case Kind::kManagement: list = &m.management; break;
      }
      list->push_back({id, di.server_token});
    }
    m.declarations_token = DeclarationsTokenOf(m);
    return m;
  }

  Result<std::string> TokenOf(const std::vector<std::string>& sets) {
    std::string key;
    for (const auto& s : sets) {
      key.append(s);
      key.push_back('\0');
    }
    auto hit = tokens_.find(key);
    if (hit != tokens_.end()) return hit->second;
    auto m = Build(sets);
    if (!m.ok()) return m.status();
    tokens_.emplace(std::move(key), m->declarations_token);
    return m->declarations_token;
  }

 private:
  Result<const std::vector<std::string>*> SetDeclarations(const std::string& set) {
    auto hit = set_decls_.find(set);
    if (hit != set_decls_.end()) return &hit->second;
    // The members' kinds and ServerTokens come with the keys (EncodeMember);
    // the declaration the overlay changes is taken from the overlay.
    const std::string prefix = Prefix("sd", set);
    std::vector<std::string> ids;
    auto it = db_->Scan(store::Cf::kDdm, prefix, store::PrefixEnd(prefix));
    for (; it->Valid(); it->Next()) {
      std::string id(it->key().substr(prefix.size()));
      const std::string_view v = it->value();
      if (v.size() > 1 && v[0] >= '0' && v[0] <= '3' && id != ov_.decl_id && !infos_.count(id))
        infos_.emplace(id, DeclInfo{static_cast<Kind>(v[0] - '0'), std::string(v.substr(1))});
      ids.push_back(std::move(id));
    }
    ORCHARD_RETURN_IF_ERROR(it->status());
    if (!ov_.member_set.empty() && ov_.member_set == set) ApplyChange(&ids, ov_.member_id, ov_.member_present);
    return &set_decls_.emplace(set, std::move(ids)).first->second;
  }

  Result<const std::optional<DeclInfo>*> Info(const std::string& id) {
    auto hit = infos_.find(id);
    if (hit != infos_.end()) return &hit->second;
    std::optional<DeclInfo> info;
    if (!ov_.decl_id.empty() && ov_.decl_id == id) {
      info = ov_.decl;
    } else {
      auto d = ReadDeclaration(db_, id);
      if (!d.ok()) return d.status();
      if (d->has_value()) info = DeclInfo{(*d)->kind, std::move((*d)->server_token)};
    }
    return &infos_.emplace(id, std::move(info)).first->second;
  }

  store::Store* db_;
  const Overlay& ov_;
  std::unordered_map<std::string, std::vector<std::string>> set_decls_;
  std::unordered_map<std::string, std::optional<DeclInfo>> infos_;
  std::unordered_map<std::string, std::string> tokens_;  // NUL-joined set list -> token
};

// The enrollments assigned to any of sets (sorted, each once).
Status AddEnrollmentsOf(store::Store* db, const std::vector<std::string>& sets, std::vector<std::string>* out) {
  for (const auto& s : sets) {
    auto enrollments = AllSuffixes(db, Prefix("se", s));
    if (!enrollments.ok()) return enrollments.status();
    out->insert(out->end(), std::make_move_iterator(enrollments->begin()),
                std::make_move_iterator(enrollments->end()));
  }
  return Status::Ok();
}

// Recomputes the DeclarationsToken of each enrollment with the overlay applied;
// where it differs from the stored one (none stored: the empty manifest's), the
// new token record goes into batch and the enrollment is reported.
Result<std::vector<TokenChange>> UpdateTokens(store::Store* db, store::Batch& batch, const Overlay& overlay,
                                              std::vector<std::string> enrollments, int64_t now_ms) {
  std::sort(enrollments.begin(), enrollments.end());
  enrollments.erase(std::unique(enrollments.begin(), enrollments.end()), enrollments.end());
  ManifestCalc calc(db, overlay);
  std::vector<TokenChange> changes;
  for (const auto& e : enrollments) {
    auto sets = calc.SetsOf(e);
    if (!sets.ok()) return sets.status();
    auto token = calc.TokenOf(*sets);
    if (!token.ok()) return token.status();
    auto stored = db->Get(store::Cf::kDdm, TokenKey(e));
    if (!stored.ok()) return stored.status();
    std::string old = EmptyManifestToken();
    if (stored->has_value()) {
      if (auto t = DecodeToken(**stored)) {
        old = std::move(t->declarations_token);
      } else {
        log::Warn(kLog, "event=token_record_corrupt enrollment={} detail=\"rewritten\"", log::Quote(e));
        old.clear();
      }
    }
    if (*token == old) continue;
    batch.Put(store::Cf::kDdm, TokenKey(e), EncodeToken({*token, now_ms}));
    changes.push_back({e, std::move(*token), now_ms});
  }
  return changes;
}

// Appends the puts and deletes of `from` (a write's own batch, filled only
// once everything it needed to read succeeded) to the caller's batch.
void Append(store::Batch& to, const store::Batch& from) {
  for (const auto& op : from.ops()) {
    if (op.kind == store::Batch::Op::kDelete) to.Delete(op.cf, op.key);
    else to.Put(op.cf, op.key, op.value);
  }
}

// The enrollments whose manifests may carry declaration id: those of its sets.
Result<std::vector<std::string>> EnrollmentsCarrying(store::Store* db, std::string_view id,
                                                     std::vector<std::string>* sets_out = nullptr) {
  auto sets = AllSuffixes(db, Prefix("ds", id));
  if (!sets.ok()) return sets.status();
  std::vector<std::string> enrollments;
  ORCHARD_RETURN_IF_ERROR(AddEnrollmentsOf(db, *sets, &enrollments));
  if (sets_out) *sets_out = std::move(*sets);
  return enrollments;
}

// Writes d (its token computed) and the token records of the enrollments
// whose manifests it changes; batch is untouched when it fails.
Result<std::vector<TokenChange>> WriteDeclaration(store::Store* db, store::Batch& batch, const Declaration& d,
                                                  int64_t now_ms) {
  std::vector<std::string> sets;
  auto enrollments = EnrollmentsCarrying(db, d.identifier, &sets);
  if (!enrollments.ok()) return enrollments.status();
  Overlay ov;
  ov.decl_id = d.identifier;
  ov.decl = DeclInfo{d.kind, d.server_token};
  store::Batch mine;
  mine.Put(store::Cf::kDdm, DeclKey(d.identifier), EncodeDeclaration(d));
  for (const auto& s : sets) mine.Put(store::Cf::kDdm, Key("sd", s, d.identifier), EncodeMember(d.kind, d.server_token));
  BumpVersions(mine, sets);
  auto changes = UpdateTokens(db, mine, ov, std::move(*enrollments), now_ms);
  if (!changes.ok()) return changes.status();
  Append(batch, mine);
  return changes;
}

}  // namespace

// ---- kinds ----

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kActivation: return "activation";
    case Kind::kConfiguration: return "configuration";
    case Kind::kAsset: return "asset";
    case Kind::kManagement: return "management";
  }
  return "unknown";
}

std::optional<Kind> KindFromName(std::string_view name) {
  for (Kind k : {Kind::kActivation, Kind::kConfiguration, Kind::kAsset, Kind::kManagement})
    if (name == KindName(k)) return k;
  return std::nullopt;
}

std::optional<Kind> KindOfType(std::string_view type) {
  constexpr std::string_view kApple = "com.apple.";
  if (type.substr(0, kApple.size()) != kApple) return std::nullopt;
  type.remove_prefix(kApple.size());
  for (Kind k : {Kind::kActivation, Kind::kConfiguration, Kind::kAsset, Kind::kManagement}) {
    const std::string_view name = KindName(k);
    if (type.size() > name.size() + 1 && type.substr(0, name.size()) == name && type[name.size()] == '.') return k;
  }
  return std::nullopt;
}

// ---- JSON ----

Result<std::string> CanonicalJson(std::string_view json, size_t max_depth) {
  auto v = json::Parse(json, {.max_depth = max_depth});
  if (!v.ok()) return v.status();
  return json::Canonical(*v);
}

Result<Declaration> ParseDeclaration(std::string_view json, const Limits& limits) {
  if (json.size() > limits.max_declaration_bytes)
    return Status::TooLarge("declaration: " + std::to_string(json.size()) + " bytes exceeds the limit of " +
                            std::to_string(limits.max_declaration_bytes));
  // "Payload: json: ... at offset N" for an error inside a declaration's member.
  auto doc = json::Parse(json, {.max_depth = limits.max_depth, .label_top_members = true});
  if (!doc.ok()) return doc.status();
  if (!doc->is(json::Type::kObject)) return Status::InvalidArgument("declaration: must be a JSON object");
  const json::Value *type = nullptr, *identifier = nullptr, *payload = nullptr;
  for (const auto& m : doc->members) {
    if (m.key == "Type") type = &m.value;
    else if (m.key == "Identifier") identifier = &m.value;
    else if (m.key == "Payload") payload = &m.value;
    else if (m.key != "ServerToken")  // Orchard computes the ServerToken
      return Status::InvalidArgument(json::Excerpt(m.key) +
                                     ": unknown key (a declaration has Type, Identifier, Payload and ServerToken)");
  }
  if (!type) return Status::InvalidArgument("Type: missing");
  if (!type->is(json::Type::kString)) return Status::InvalidArgument("Type: must be a string");
  if (!identifier) return Status::InvalidArgument("Identifier: missing");
  if (!identifier->is(json::Type::kString)) return Status::InvalidArgument("Identifier: must be a string");
  if (!payload) return Status::InvalidArgument("Payload: missing");
  if (!payload->is(json::Type::kObject)) return Status::InvalidArgument("Payload: must be an object");
  auto kind = KindFor(type->text, limits);
  if (!kind.ok()) return kind.status();
  ORCHARD_RETURN_IF_ERROR(CheckIdentifier(identifier->text, limits.max_identifier_bytes));
  // Against Apple's schema for the Type (none for other Types); unknown keys warn.
  std::vector<std::string> warnings;
  ORCHARD_RETURN_IF_ERROR(CheckPayload(type->text, *payload, &warnings));
  Declaration d;
  d.identifier = identifier->text;
  d.type = type->text;
  d.kind = *kind;
  d.payload_json = json::Canonical(*payload);
  d.server_token = ServerTokenOf(d);
  d.warnings = std::move(warnings);
  return d;
}

std::string ServerTokenOf(const Declaration& d) {
  std::string s = "{\"Identifier\":";
  json::AppendQuoted(&s, d.identifier);
  s.append(",\"Payload\":");
  s.append(PayloadOf(d));
  s.append(",\"Type\":");
  json::AppendQuoted(&s, d.type);
  s.append("}\n");
  s.append(std::to_string(d.revision));
  return Sha256Hex(s);
}

std::string DeviceJson(const Declaration& d) {
  std::string s = "{\"Identifier\":";
  json::AppendQuoted(&s, d.identifier);
  s.append(",\"Payload\":");
  s.append(PayloadOf(d));
  s.append(",\"ServerToken\":");
  json::AppendQuoted(&s, d.server_token.empty() ? ServerTokenOf(d) : d.server_token);
  s.append(",\"Type\":");
  json::AppendQuoted(&s, d.type);
  s.push_back('}');
  return s;
}

// ---- manifests ----

const std::vector<ManifestItem>& Manifest::Of(Kind k) const {
  switch (k) {
    case Kind::kActivation: return activations;
    case Kind::kConfiguration: return configurations;
    case Kind::kAsset: return assets;
    case Kind::kManagement: return management;
  }
  return configurations;
}

std::string DeclarationsTokenOf(const Manifest& m) {
  std::string s;
  for (const auto* list : {&m.activations, &m.configurations, &m.assets, &m.management}) {
    for (const auto& item : *list) {
      s.append(item.identifier);
      s.push_back('\t');
      s.append(item.server_token);
      s.push_back('\n');
    }
  }
  return Sha256Hex(s);
}

namespace {
std::string TokenOfManifest(const Manifest& m) {
  return m.declarations_token.empty() ? DeclarationsTokenOf(m) : m.declarations_token;
}
}  // namespace

std::string TokensResponseJson(const Manifest& m) {
  // From the stored change time only (never the clock); 0 is the epoch.
  constexpr int64_t kMaxMs = 253402300799999;  // 9999-12-31T23:59:59.999Z
  const int64_t ms = std::clamp<int64_t>(m.changed_ms, 0, kMaxMs);
  std::string s = "{\"SyncTokens\":{\"DeclarationsToken\":";
  json::AppendQuoted(&s, TokenOfManifest(m));
  s.append(",\"Timestamp\":");
  json::AppendQuoted(&s, FormatRfc3339(ms));
  s.append("}}");
  return s;
}

std::string DeclarationItemsJson(const Manifest& m) {
  std::string s = "{\"Declarations\":{";
  const std::pair<const char*, const std::vector<ManifestItem>*> lists[] = {
      {"Activations", &m.activations},
      {"Assets", &m.assets},
      {"Configurations", &m.configurations},
      {"Management", &m.management}};
  bool first_list = true;
  for (const auto& [name, list] : lists) {
    if (!first_list) s.push_back(',');
    first_list = false;
    json::AppendQuoted(&s, name);
    s.append(":[");
    for (size_t i = 0; i < list->size(); ++i) {
      if (i) s.push_back(',');
      s.append("{\"Identifier\":");
      json::AppendQuoted(&s, (*list)[i].identifier);
      s.append(",\"ServerToken\":");
      json::AppendQuoted(&s, (*list)[i].server_token);
      s.push_back('}');
    }
    s.push_back(']');
  }
  s.append("},\"DeclarationsToken\":");
  json::AppendQuoted(&s, TokenOfManifest(m));
  s.push_back('}');
  return s;
}

// ---- manifest cache ----

// Manifests by cache key (DeclarationStore::CacheKey), within a budget of
// items; the oldest entries go first. Thread-safe.
class ManifestCache {
 public:
  explicit ManifestCache(size_t budget_items) : budget_(budget_items) {}

  std::shared_ptr<const Manifest> Find(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) {
      ++misses_;
      return nullptr;
    }
    ++hits_;
    return it->second;
  }

  void Insert(const std::string& key, std::shared_ptr<const Manifest> m) {
    const size_t cost = ItemsOf(*m);
    if (cost > budget_) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (map_.count(key)) return;
    while (items_ + cost > budget_ && !order_.empty()) {
      auto old = map_.find(order_.front());
      items_ -= ItemsOf(*old->second);
      map_.erase(old);
      order_.pop_front();
    }
    map_.emplace(key, std::move(m));
    order_.push_back(key);
    items_ += cost;
  }

  DeclarationStore::CacheStats Stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return {hits_, misses_, map_.size(), items_};
  }

 private:
  static size_t ItemsOf(const Manifest& m) {
    return 1 + m.activations.size() + m.configurations.size() + m.assets.size() + m.management.size();
  }

  const size_t budget_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<const Manifest>> map_;
  std::deque<std::string> order_;  // keys, oldest first
  size_t items_ = 0;
  uint64_t hits_ = 0, misses_ = 0;
};

// ---- DeclarationStore ----

DeclarationStore::DeclarationStore(store::Store* store, Limits limits, size_t cache_items)
    : store_(store), limits_(limits) {
  if (cache_items > 0) cache_ = std::make_unique<ManifestCache>(cache_items);
}

DeclarationStore::~DeclarationStore() = default;

DeclarationStore::CacheStats DeclarationStore::cache_stats() const {
  return cache_ ? cache_->Stats() : CacheStats{};
}

Result<std::string> DeclarationStore::CacheKey(const std::vector<std::string>& sets) {
  std::string key;
  for (const auto& s : sets) {
    auto v = store_->Get(store::Cf::kDdm, VersionKey(s));
    if (!v.ok()) return v.status();
    key.append(s);
    key.push_back('\0');
    if (v->has_value()) key.append(**v);
    key.push_back('\0');
  }
  return key;
}

Result<std::shared_ptr<const Manifest>> DeclarationStore::SharedManifestOf(std::string_view enrollment_id) {
  ORCHARD_RETURN_IF_ERROR(CheckEnrollmentId(enrollment_id));
  const Overlay none;
  ManifestCalc calc(store_, none);
  auto sets = calc.SetsOf(enrollment_id);
  if (!sets.ok()) return sets.status();
  std::string key;
  if (cache_) {
    auto k = CacheKey(*sets);
    if (!k.ok()) return k.status();
    if (auto hit = cache_->Find(*k)) return hit;
    key = std::move(*k);
  }
  auto m = calc.Build(*sets);
  if (!m.ok()) return m.status();
  auto shared = std::make_shared<const Manifest>(std::move(*m));
  if (cache_) {
    // Only what was consistent: no change to these sets committed while the
    // manifest was read (each writes new versions).
    auto after = CacheKey(*sets);
    if (!after.ok()) return after.status();
    if (*after == key) cache_->Insert(key, shared);
  }
  return shared;
}

bool DeclarationStore::ValidSetName(std::string_view set) {
  if (set.empty() || set.size() > kMaxSetNameBytes) return false;
  for (char c : set) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Result<std::optional<Declaration>> DeclarationStore::Get(std::string_view identifier) {
  return ReadDeclaration(store_, identifier);
}

Result<Page<Declaration>> DeclarationStore::List(std::string_view after, size_t limit) {
  ORCHARD_RETURN_IF_ERROR(CheckLimit(limit));
  const std::string prefix = DeclKey("");
  const std::string lower = after.empty() ? prefix : prefix + std::string(after) + std::string(1, '\0');
  Page<Declaration> page;
  auto it = store_->Scan(store::Cf::kDdm, lower, store::PrefixEnd(prefix));
  for (; it->Valid() && page.items.size() <= limit; it->Next()) {
    auto d = DecodeDeclaration(it->key().substr(prefix.size()), it->value());
    if (!d.ok()) return d.status();
    page.items.push_back(std::move(*d));
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  if (page.items.size() > limit) {
    page.items.pop_back();
    page.next = page.items.back().identifier;
  }
  return page;
}

Result<Page<std::string>> DeclarationStore::Sets(std::string_view after, size_t limit) {
  ORCHARD_RETURN_IF_ERROR(CheckLimit(limit));
  if (after.find('\0') != std::string_view::npos) return Status::InvalidArgument("after: contains NUL");
  // A set exists while it has a declaration (sd) or an enrollment (se).
  DistinctNames with_decls(store_, "sd", after), with_enrollments(store_, "se", after);
  auto a = with_decls.Next();
  if (!a.ok()) return a.status();
  auto b = with_enrollments.Next();
  if (!b.ok()) return b.status();
  Page<std::string> page;
  while (page.items.size() <= limit && (a->has_value() || b->has_value())) {
    const bool take_a = a->has_value() && (!b->has_value() || **a <= **b);
    const bool take_b = b->has_value() && (!a->has_value() || **b <= **a);
    page.items.push_back(take_a ? **a : **b);
    if (take_a) {
      a = with_decls.Next();
      if (!a.ok()) return a.status();
    }
    if (take_b) {
      b = with_enrollments.Next();
      if (!b.ok()) return b.status();
    }
  }
  if (page.items.size() > limit) {
    page.items.pop_back();
    page.next = page.items.back();
  }
  return page;
}

Result<Page<std::string>> DeclarationStore::SetDeclarations(std::string_view set, std::string_view after,
                                                            size_t limit) {
  ORCHARD_RETURN_IF_ERROR(CheckSet(set));
  return SuffixPage(store_, Prefix("sd", set), after, limit);
}

Result<Page<std::string>> DeclarationStore::DeclarationSets(std::string_view identifier, std::string_view after,
                                                            size_t limit) {
  if (!IsKeyPart(identifier)) return Status::InvalidArgument("Identifier: empty or contains NUL");
  return SuffixPage(store_, Prefix("ds", identifier), after, limit);
}

Result<Page<std::string>> DeclarationStore::EnrollmentSets(std::string_view enrollment_id, std::string_view after,
                                                           size_t limit) {
  ORCHARD_RETURN_IF_ERROR(CheckEnrollmentId(enrollment_id));
  return SuffixPage(store_, Prefix("es", enrollment_id), after, limit);
}

Result<Page<std::string>> DeclarationStore::SetEnrollments(std::string_view set, std::string_view after,
                                                           size_t limit) {
  ORCHARD_RETURN_IF_ERROR(CheckSet(set));
  return SuffixPage(store_, Prefix("se", set), after, limit);
}

Result<Manifest> DeclarationStore::ManifestOf(std::string_view enrollment_id) {
  auto shared = SharedManifestOf(enrollment_id);
  if (!shared.ok()) return shared.status();
  Result<Manifest> m = Manifest(**shared);
  auto stored = store_->Get(store::Cf::kDdm, TokenKey(enrollment_id));
  if (!stored.ok()) return stored.status();
  if (stored->has_value()) {
    if (auto t = DecodeToken(**stored)) m->changed_ms = t->changed_ms;
  }
  return m;
}

Result<Manifest> DeclarationStore::TokenOf(std::string_view enrollment_id) {
  ORCHARD_RETURN_IF_ERROR(CheckEnrollmentId(enrollment_id));
  auto stored = store_->Get(store::Cf::kDdm, TokenKey(enrollment_id));
  if (!stored.ok()) return stored.status();
  Manifest m;
  if (!stored->has_value()) {
    m.declarations_token = EmptyManifestToken();
    return m;
  }
  auto t = DecodeToken(**stored);
  if (!t) return ManifestOf(enrollment_id);
  m.declarations_token = std::move(t->declarations_token);
  m.changed_ms = t->changed_ms;
  return m;
}

Result<std::optional<Declaration>> DeclarationStore::Resolve(std::string_view enrollment_id, Kind kind,
                                                             std::string_view identifier) {
  if (!CheckEnrollmentId(enrollment_id).ok() || !IsKeyPart(identifier)) return std::optional<Declaration>();
  auto sets = AllSuffixes(store_, Prefix("es", enrollment_id));
  if (!sets.ok()) return sets.status();
  for (const auto& s : *sets) {
    auto member = Exists(store_, Key("sd", s, identifier));
    if (!member.ok()) return member.status();
    if (!*member) continue;
    auto d = ReadDeclaration(store_, identifier);
    if (!d.ok()) return d.status();
    if (!d->has_value() || (*d)->kind != kind) return std::optional<Declaration>();
    return d;
  }
  return std::optional<Declaration>();
}

Result<std::vector<TokenChange>> DeclarationStore::Put(store::Batch& batch, Declaration d, std::string_view owner,
                                                       int64_t now_ms, bool* changed) {
  if (changed) *changed = false;
  // Revalidated: d may not come from ParseDeclaration.
  ORCHARD_RETURN_IF_ERROR(CheckIdentifier(d.identifier, limits_.max_identifier_bytes));
  auto kind = KindFor(d.type, limits_);
  if (!kind.ok()) return kind.status();
  auto payload = CanonicalJson(PayloadOf(d), limits_.max_depth);
  if (!payload.ok()) return Status::InvalidArgument("Payload: " + payload.status().message());
  if (payload->empty() || payload->front() != '{') return Status::InvalidArgument("Payload: must be an object");
  if (payload->size() > limits_.max_declaration_bytes)
    return Status::TooLarge("Payload: " + std::to_string(payload->size()) + " bytes exceeds the limit of " +
                            std::to_string(limits_.max_declaration_bytes));
  d.kind = *kind;
  d.payload_json = std::move(*payload);

  auto existing = ReadDeclaration(store_, d.identifier);
  if (!existing.ok()) return existing.status();
  if (existing->has_value() && (*existing)->type == d.type && (*existing)->payload_json == d.payload_json)
    return std::vector<TokenChange>();
  d.owner = std::string(owner);
  d.revision = existing->has_value() ? (*existing)->revision : 0;
  d.created_ms = existing->has_value() ? (*existing)->created_ms : now_ms;
  d.modified_ms = now_ms;
  d.server_token = ServerTokenOf(d);
  auto changes = WriteDeclaration(store_, batch, d, now_ms);
  if (changes.ok() && changed) *changed = true;
  return changes;
}

Result<std::vector<TokenChange>> DeclarationStore::Touch(store::Batch& batch, std::string_view identifier,
                                                         int64_t now_ms) {
  auto existing = ReadDeclaration(store_, identifier);
  if (!existing.ok()) return existing.status();
  if (!existing->has_value()) return Status::NotFound("no declaration " + json::Excerpt(identifier));
  Declaration d = std::move(**existing);
  ++d.revision;
  d.modified_ms = now_ms;
  d.server_token = ServerTokenOf(d);
  return WriteDeclaration(store_, batch, d, now_ms);
}

Result<std::vector<TokenChange>> DeclarationStore::Delete(store::Batch& batch, std::string_view identifier,
                                                          int64_t now_ms) {
  auto existing = ReadDeclaration(store_, identifier);
  if (!existing.ok()) return existing.status();
  if (!existing->has_value()) return Status::NotFound("no declaration " + json::Excerpt(identifier));
  std::vector<std::string> sets;
  auto enrollments = EnrollmentsCarrying(store_, identifier, &sets);
  if (!enrollments.ok()) return enrollments.status();
  Overlay ov;
  ov.decl_id = std::string(identifier);  // decl stays nullopt: deleted
  store::Batch mine;
  mine.Delete(store::Cf::kDdm, DeclKey(identifier));
  for (const auto& s : sets) {
    mine.Delete(store::Cf::kDdm, Key("ds", identifier, s));
    mine.Delete(store::Cf::kDdm, Key("sd", s, identifier));
  }
  BumpVersions(mine, sets);
  auto changes = UpdateTokens(store_, mine, ov, std::move(*enrollments), now_ms);
  if (!changes.ok()) return changes.status();
  Append(batch, mine);
  return changes;
}

Result<std::vector<TokenChange>> DeclarationStore::SetAdd(store::Batch& batch, std::string_view set,
                                                          std::string_view identifier, int64_t now_ms) {
  ORCHARD_RETURN_IF_ERROR(CheckSet(set));
  auto existing = ReadDeclaration(store_, identifier);
  if (!existing.ok()) return existing.status();
  if (!existing->has_value()) return Status::NotFound("no declaration " + json::Excerpt(identifier));
  auto member = Exists(store_, Key("sd", set, identifier));
  if (!member.ok()) return member.status();
  if (*member) return std::vector<TokenChange>();
  std::vector<std::string> enrollments;
  ORCHARD_RETURN_IF_ERROR(AddEnrollmentsOf(store_, {std::string(set)}, &enrollments));
  Overlay ov;
  ov.member_set = std::string(set);
  ov.member_id = std::string(identifier);
  ov.member_present = true;
  store::Batch mine;
  auto changes = UpdateTokens(store_, mine, ov, std::move(enrollments), now_ms);
  if (!changes.ok()) return changes.status();
  Append(batch, mine);
  batch.Put(store::Cf::kDdm, Key("sd", set, identifier),
            EncodeMember((*existing)->kind, (*existing)->server_token));
  batch.Put(store::Cf::kDdm, Key("ds", identifier, set), "");
  BumpVersions(batch, {std::string(set)});
  return changes;
}

Result<std::vector<TokenChange>> DeclarationStore::SetRemove(store::Batch& batch, std::string_view set,
                                                             std::string_view identifier, int64_t now_ms) {
  ORCHARD_RETURN_IF_ERROR(CheckSet(set));
  if (!IsKeyPart(identifier)) return std::vector<TokenChange>();
  auto member = Exists(store_, Key("sd", set, identifier));
  if (!member.ok()) return member.status();
  if (!*member) return std::vector<TokenChange>();
  std::vector<std::string> enrollments;
  ORCHARD_RETURN_IF_ERROR(AddEnrollmentsOf(store_, {std::string(set)}, &enrollments));
  Overlay ov;
  ov.member_set = std::string(set);
  ov.member_id = std::string(identifier);
  ov.member_present = false;
  store::Batch mine;
  auto changes = UpdateTokens(store_, mine, ov, std::move(enrollments), now_ms);
  if (!changes.ok()) return changes.status();
  Append(batch, mine);
  batch.Delete(store::Cf::kDdm, Key("sd", set, identifier));
  batch.Delete(store::Cf::kDdm, Key("ds", identifier, set));
  BumpVersions(batch, {std::string(set)});
  return changes;
}

Result<std::vector<TokenChange>> DeclarationStore::Assign(store::Batch& batch, std::string_view enrollment_id,
                                                          std::string_view set, int64_t now_ms) {
  ORCHARD_RETURN_IF_ERROR(CheckEnrollmentId(enrollment_id));
  ORCHARD_RETURN_IF_ERROR(CheckSet(set));
  auto assigned = Exists(store_, Key("es", enrollment_id, set));
  if (!assigned.ok()) return assigned.status();
  if (*assigned) return std::vector<TokenChange>();
  Overlay ov;
  ov.assign_enrollment = std::string(enrollment_id);
  ov.assign_set = std::string(set);
  ov.assign_present = true;
  store::Batch mine;
  auto changes = UpdateTokens(store_, mine, ov, {std::string(enrollment_id)}, now_ms);
  if (!changes.ok()) return changes.status();
  Append(batch, mine);
  batch.Put(store::Cf::kDdm, Key("es", enrollment_id, set), "");
  batch.Put(store::Cf::kDdm, Key("se", set, enrollment_id), "");
  return changes;
}

Result<std::vector<TokenChange>> DeclarationStore::Unassign(store::Batch& batch, std::string_view enrollment_id,
                                                            std::string_view set, int64_t now_ms) {
  ORCHARD_RETURN_IF_ERROR(CheckEnrollmentId(enrollment_id));
  ORCHARD_RETURN_IF_ERROR(CheckSet(set));
  auto assigned = Exists(store_, Key("es", enrollment_id, set));
  if (!assigned.ok()) return assigned.status();
  if (!*assigned) return std::vector<TokenChange>();
  Overlay ov;
  ov.assign_enrollment = std::string(enrollment_id);
  ov.assign_set = std::string(set);
  ov.assign_present = false;
  store::Batch mine;
  auto changes = UpdateTokens(store_, mine, ov, {std::string(enrollment_id)}, now_ms);
  if (!changes.ok()) return changes.status();
  Append(batch, mine);
  batch.Delete(store::Cf::kDdm, Key("es", enrollment_id, set));
  batch.Delete(store::Cf::kDdm, Key("se", set, enrollment_id));
  return changes;
}

Status CheckIdentifierArg(std::string_view identifier, const Limits& limits) {
  return CheckIdentifier(identifier, limits.max_identifier_bytes);
}
Status CheckSetArg(std::string_view set) { return CheckSet(set); }
Status CheckEnrollmentArg(std::string_view enrollment_id) { return CheckEnrollmentId(enrollment_id); }

Status DeclarationStore::Forget(store::Batch& batch, std::string_view enrollment_id) {
  ORCHARD_RETURN_IF_ERROR(CheckEnrollmentId(enrollment_id));
  auto sets = AllSuffixes(store_, Prefix("es", enrollment_id));
  if (!sets.ok()) return sets.status();
  for (const auto& s : *sets) {
    batch.Delete(store::Cf::kDdm, Key("es", enrollment_id, s));
    batch.Delete(store::Cf::kDdm, Key("se", s, enrollment_id));
  }
  batch.Delete(store::Cf::kDdm, TokenKey(enrollment_id));
  return Status::Ok();
}

}  // namespace orchard::ddm
