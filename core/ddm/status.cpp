#include "ddm/status.h"

#include <algorithm>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "ddm/json.h"
#include "util/record.h"

namespace orchard::ddm {
namespace {

constexpr uint64_t kVersion = 1;
constexpr size_t kMaxListing = 1000;
constexpr std::string_view kDeclarationsItem = "management.declarations";
constexpr std::string_view kCapabilitiesItem = "management.client-capabilities";

// ---- JSON ----
// A report is parsed whole (json::Parse) with objects' members sorted by key,
// of duplicate keys the last one winning; values are stored in canonical form.

using json::Member;
using json::Type;
using Node = json::Value;

// Validates a whole document: UTF-8, syntax, depth.
Result<Node> ParseDoc(std::string_view doc, size_t max_depth) {
  auto v = json::Parse(doc, {.max_depth = max_depth, .duplicates = json::Duplicates::kLastWins, .sort_members = true});
  if (!v.ok()) return Status::InvalidArgument("status: " + v.status().message());
  return v;
}

// The identifier of an object element that has a string "identifier", else nullopt.
std::optional<std::string> IdentifierOf(const Node& e, bool* removed = nullptr) {
  if (!e.is(Type::kObject)) return std::nullopt;
  const Node* id = e.Find("identifier");
  if (!id || !id->is(Type::kString)) return std::nullopt;
  if (removed) {
    const Node* r = e.Find("_removed");
    *removed = r && r->is(Type::kBool) && r->boolean;
  }
  return id->text;
}

// A non-empty array whose every element is an object with a string "identifier".
bool IsIdentifierArray(const Node& n) {
  if (!n.is(Type::kArray) || n.elements.empty()) return false;
  for (const Node& e : n.elements)
    if (!IdentifierOf(e)) return false;
  return true;
}

std::string JoinArray(const std::map<std::string, std::string>& by_id) {
  std::string out = "[";
  for (const auto& [id, v] : by_id) {
    if (out.size() > 1) out.push_back(',');
    out += v;
  }
  out.push_back(']');
  return out;
}

// ---- the report ----

std::optional<Kind> KindOfReportKey(std::string_view key) {
  if (key == "management") return KindFromName(key);
  if (key.size() > 1 && key.back() == 's') return KindFromName(key.substr(0, key.size() - 1));
  return std::nullopt;
}

bool ValidName(std::string_view s) { return !s.empty() && s.find('\0') == std::string_view::npos; }

class ReportParser {
 public:
  ReportParser(const StatusLimits& limits, ParsedReport* out) : limits_(limits), out_(out) {}

  // The members of a StatusItems object (or one below it) under prefix.
  Status Items(const std::vector<Member>& members, const std::string& prefix) {
    for (const auto& [key, v] : members) {
      if (!ValidName(key)) return Status::InvalidArgument("status: empty key or NUL in a key under '" + prefix + "'");
      const std::string name = prefix.empty() ? key : prefix + "." + key;
      if (name.size() > limits_.max_item_name_bytes)
        return Status::InvalidArgument("status: item name longer than " +
                                       std::to_string(limits_.max_item_name_bytes) + " bytes: " + name.substr(0, 64));
      if (name == kDeclarationsItem) {
        ORCHARD_RETURN_IF_ERROR(Declarations(v));
      } else if (v.is(Type::kObject)) {
        ORCHARD_RETURN_IF_ERROR(v.members.empty() ? AddItem(name, "{}") : Items(v.members, name));
      } else if (v.is(Type::kArray)) {
        ORCHARD_RETURN_IF_ERROR(ArrayItem(name, v));
      } else {
        ORCHARD_RETURN_IF_ERROR(AddItem(name, json::Canonical(v)));
      }
    }
    return Status::Ok();
  }

  Status Errors(const Node& arr) {
    if (!arr.is(Type::kArray)) return Status::InvalidArgument("status: Errors is not an array");
    for (const Node& e : arr.elements) {
      ORCHARD_RETURN_IF_ERROR(Count());
      if (!e.is(Type::kObject)) return Status::InvalidArgument("status: an Errors element is not an object");
      StatusError err;
      if (const Node* s = e.Find("StatusItem")) {
        if (!s->is(Type::kString)) return Status::InvalidArgument("status: Errors StatusItem is not a string");
        err.status_item = s->text;
      }
      if (const Node* r = e.Find("Reasons"))
        ORCHARD_RETURN_IF_ERROR(Reasons(*r, "Code", "Description", "Details", &err.reasons));
      out_->errors.push_back(std::move(err));
    }
    return Status::Ok();
  }

  void Finish() {
    out_->items.assign(std::make_move_iterator(items_.begin()), std::make_move_iterator(items_.end()));
    for (auto& [name, ids] : removed_) out_->removed.emplace_back(name, std::vector<std::string>(ids.begin(), ids.end()));
    for (auto& [id, d] : declarations_) out_->declarations.push_back(std::move(d));
    std::sort(out_->declarations.begin(), out_->declarations.end(), [](const auto& a, const auto& b) {
      return std::tie(a.kind, a.identifier) < std::tie(b.kind, b.identifier);
    });
  }

 private:
  Status Count() {
    if (++count_ > limits_.max_items)
      return Status::InvalidArgument("status: more than " + std::to_string(limits_.max_items) + " items");
    return Status::Ok();
  }

  Status AddItem(const std::string& name, std::string value) {
    ORCHARD_RETURN_IF_ERROR(Count());
    if (value.size() > limits_.max_value_bytes)
      return Status::InvalidArgument("status: value of " + name + " longer than " +
                                     std::to_string(limits_.max_value_bytes) + " bytes");
    items_[name] = std::move(value);
    removed_.erase(name);
    return Status::Ok();
  }

  // Arrays of identified objects: tombstones become removals (dropped in a FullReport).
  Status ArrayItem(const std::string& name, const Node& v) {
    if (!IsIdentifierArray(v)) return AddItem(name, json::Canonical(v));
    std::map<std::string, std::string> by_id;
    std::set<std::string> removed;
    for (const Node& e : v.elements) {
      bool tombstone = false;
      std::string id = *IdentifierOf(e, &tombstone);
      if (tombstone) {
        by_id.erase(id);
        if (!out_->full) removed.insert(std::move(id));
      } else {
        removed.erase(id);
        by_id[std::move(id)] = json::Canonical(e);
      }
    }
    ORCHARD_RETURN_IF_ERROR(AddItem(name, JoinArray(by_id)));
    if (!removed.empty()) removed_[name] = std::move(removed);
    return Status::Ok();
  }

  Status Declarations(const Node& v) {
    if (!v.is(Type::kObject)) return Status::InvalidArgument("status: management.declarations is not an object");
    out_->has_declarations = true;
    for (const auto& [key, arr] : v.members) {
      const std::optional<Kind> kind = KindOfReportKey(key);
      if (!kind) continue;  // a kind Orchard does not know: nothing to keep it under
      if (!arr.is(Type::kArray))
        return Status::InvalidArgument("status: management.declarations." + key + " is not an array");
      for (const Node& e : arr.elements) {
        ORCHARD_RETURN_IF_ERROR(Count());
        auto d = Declaration(e, *kind);
        if (!d.ok()) return d.status();
        std::string id = d->identifier;
        declarations_[std::move(id)] = std::move(*d);
      }
    }
    return Status::Ok();
  }

  Result<DeclarationStatus> Declaration(const Node& e, Kind kind) {
    const std::string where = "status: a management.declarations element";
    if (!e.is(Type::kObject)) return Status::InvalidArgument(where + " is not an object");
    DeclarationStatus d;
    d.kind = kind;
    const Node* id = e.Find("identifier");
    if (!id || !id->is(Type::kString)) return Status::InvalidArgument(where + " has no string identifier");
    d.identifier = id->text;
    if (!ValidName(d.identifier) || d.identifier.size() > limits_.max_item_name_bytes)
      return Status::InvalidArgument(where + " has an empty, too long or NUL-bearing identifier");
    if (const Node* t = e.Find("server-token")) {
      if (!t->is(Type::kString)) return Status::InvalidArgument(where + ": server-token is not a string");
      d.server_token = t->text;
    }
    if (const Node* a = e.Find("active")) {
      if (!a->is(Type::kBool)) return Status::InvalidArgument(where + ": active is not a boolean");
      d.active = a->boolean;
    }
    if (const Node* s = e.Find("valid")) {
      if (!s->is(Type::kString)) return Status::InvalidArgument(where + ": valid is not a string");
      d.valid = s->text;
    }
    if (const Node* r = e.Find("reasons")) ORCHARD_RETURN_IF_ERROR(Reasons(*r, "code", "description", "details", &d.reasons));
    if (d.server_token.size() > limits_.max_value_bytes || d.valid.size() > limits_.max_value_bytes)
      return Status::InvalidArgument(where + " has a value over the limit");
    return d;
  }

  Status Reasons(const Node& arr, std::string_view code, std::string_view description, std::string_view details,
                 std::vector<Reason>* out) {
    if (!arr.is(Type::kArray)) return Status::InvalidArgument("status: reasons are not an array");
    for (const Node& e : arr.elements) {
      ORCHARD_RETURN_IF_ERROR(Count());
      if (!e.is(Type::kObject)) return Status::InvalidArgument("status: a reason is not an object");
      Reason r;
      for (auto [key, field] : {std::pair{code, &r.code}, std::pair{description, &r.description}}) {
        const Node* n = e.Find(key);
        if (!n) continue;
        if (!n->is(Type::kString))
          return Status::InvalidArgument("status: reason " + std::string(key) + " is not a string");
        *field = n->text;
      }
      if (const Node* n = e.Find(details)) r.details_json = json::Canonical(*n);
      if (r.code.size() + r.description.size() + r.details_json.size() > limits_.max_value_bytes)
        return Status::InvalidArgument("status: a reason over the value limit");
      out->push_back(std::move(r));
    }
    return Status::Ok();
  }

  const StatusLimits& limits_;
  ParsedReport* out_;
  size_t count_ = 0;
  std::map<std::string, std::string> items_;
  std::map<std::string, std::set<std::string>> removed_;
  std::map<std::string, DeclarationStatus> declarations_;
};

// ---- storage ----

std::string Prefix(char tag, std::string_view enrollment_id) {
  std::string k{'s', tag, '\0'};
  k.append(enrollment_id);
  k.push_back('\0');
  return k;
}
std::string ItemPrefix(std::string_view e) { return Prefix('i', e); }
std::string DeclPrefix(std::string_view e) { return Prefix('x', e); }
std::string RawPrefix(std::string_view e) { return Prefix('r', e); }
std::string ErrorsKey(std::string_view e) {
  std::string k = Prefix('z', e);
  k.pop_back();
  return k;
}
std::string MetaKey(std::string_view e) {
  std::string k = Prefix('m', e);
  k.pop_back();
  return k;
}
std::string RawKey(std::string_view e, uint64_t seq) {
  std::string k = RawPrefix(e);
  for (int i = 7; i >= 0; --i) k.push_back(static_cast<char>((seq >> (i * 8)) & 0xFF));
  return k;
}

Status CheckEnrollment(std::string_view e) {
  if (!ValidName(e)) return Status::InvalidArgument("enrollment id is empty or contains NUL");
  return Status::Ok();
}
Status CheckLimit(size_t limit) {
  if (limit < 1 || limit > kMaxListing) return Status::InvalidArgument("limit must be 1..1000");
  return Status::Ok();
}
Status Corrupt(const char* what) { return Status::Internal(std::string("corrupt DDM ") + what + " record"); }

void PutReasons(RecordWriter& w, const std::vector<Reason>& reasons) {
  w.PutVarint(reasons.size());
  for (const Reason& r : reasons) {
    w.PutString(r.code);
    w.PutString(r.description);
    w.PutString(r.details_json);
  }
}
bool GetReasons(RecordReader& r, size_t record_bytes, std::vector<Reason>* out) {
  const uint64_t n = r.GetVarint();
  if (n > record_bytes) return false;  // each reason takes at least a byte
  for (uint64_t i = 0; i < n && !r.corrupt(); ++i) {
    Reason x;
    x.code = r.GetString();
    x.description = r.GetString();
    x.details_json = r.GetString();
    out->push_back(std::move(x));
  }
  return !r.corrupt();
}

std::string EncodeDeclaration(const DeclarationStatus& d) {
  RecordWriter w;
  w.PutVarint(kVersion);
  w.PutString(d.identifier);
  w.PutVarint(static_cast<uint64_t>(d.kind));
  w.PutString(d.server_token);
  w.PutBool(d.active);
  w.PutString(d.valid);
  PutReasons(w, d.reasons);
  return w.Take();
}
Result<DeclarationStatus> DecodeDeclaration(std::string_view bytes) {
  RecordReader r(bytes);
  if (r.GetVarint() != kVersion) return Corrupt("declaration status");
  DeclarationStatus d;
  d.identifier = r.GetString();
  const uint64_t kind = r.GetVarint();
  if (kind > static_cast<uint64_t>(Kind::kManagement)) return Corrupt("declaration status");
  d.kind = static_cast<Kind>(kind);
  d.server_token = r.GetString();
  d.active = r.GetBool();
  d.valid = r.GetString();
  if (!GetReasons(r, bytes.size(), &d.reasons) || r.corrupt()) return Corrupt("declaration status");
  return d;
}

std::string EncodeErrors(const std::vector<StatusError>& errors) {
  RecordWriter w;
  w.PutVarint(kVersion);
  w.PutVarint(errors.size());
  for (const StatusError& e : errors) {
    w.PutString(e.status_item);
    PutReasons(w, e.reasons);
  }
  return w.Take();
}
Result<std::vector<StatusError>> DecodeErrors(std::string_view bytes) {
  RecordReader r(bytes);
  if (r.GetVarint() != kVersion) return Corrupt("status errors");
  const uint64_t n = r.GetVarint();
  if (n > bytes.size()) return Corrupt("status errors");
  std::vector<StatusError> out;
  for (uint64_t i = 0; i < n; ++i) {
    StatusError e;
    e.status_item = r.GetString();
    if (!GetReasons(r, bytes.size(), &e.reasons)) return Corrupt("status errors");
    out.push_back(std::move(e));
  }
  if (r.corrupt()) return Corrupt("status errors");
  return out;
}

struct StatusMeta {
  int64_t last_report_ms = 0;
  uint64_t next_seq = 0;
  // The oldest raw report that may still be stored: raw reports are deleted
  // by key from here, never found by scanning (a scan over a queue whose head
  // is deleted walks every tombstone until compaction). nullopt in a record
  // written before the field existed: found once with a seek.
  std::optional<uint64_t> raw_from;
};
std::string EncodeMeta(const StatusMeta& m) {
  RecordWriter w;
  w.PutVarint(kVersion);
  w.PutSigned(m.last_report_ms);
  w.PutVarint(m.next_seq);
  w.PutVarint(m.raw_from ? *m.raw_from + 1 : 0);  // 0: unknown (the record ended)
  return w.Take();
}
Result<StatusMeta> DecodeMeta(std::string_view bytes) {
  RecordReader r(bytes);
  if (r.GetVarint() != kVersion) return Corrupt("status meta");
  StatusMeta m;
  m.last_report_ms = r.GetSigned();
  m.next_seq = r.GetVarint();
  if (uint64_t from = r.GetVarint(); from > 0) m.raw_from = from - 1;
  if (r.corrupt() || (m.raw_from && *m.raw_from > m.next_seq)) return Corrupt("status meta");
  return m;
}

Result<StatusMeta> ReadMeta(store::Store* db, std::string_view enrollment_id) {
  StatusMeta meta;
  auto m = db->Get(store::Cf::kDdm, MetaKey(enrollment_id));
  if (!m.ok()) return m.status();
  if (m->has_value()) {
    auto decoded = DecodeMeta(**m);
    if (!decoded.ok()) return decoded.status();
    meta = *decoded;
  }
  return meta;
}

// The sequence number in a raw report's key (its last 8 bytes, big-endian).
uint64_t RawSeqOf(std::string_view key) {
  uint64_t seq = 0;
  for (size_t i = key.size() - 8; i < key.size(); ++i) seq = (seq << 8) | static_cast<uint8_t>(key[i]);
  return seq;
}

// The oldest raw report's sequence number: meta's, or (an older record) the
// first stored key's; next_seq when none is stored.
Result<uint64_t> RawFrom(store::Store* db, std::string_view enrollment_id, const StatusMeta& meta) {
  if (meta.raw_from) return *meta.raw_from;
  const std::string rp = RawPrefix(enrollment_id);
  auto it = db->Scan(store::Cf::kDdm, rp, store::PrefixEnd(rp));
  if (it->Valid() && it->key().size() == rp.size() + 8) return std::min(RawSeqOf(it->key()), meta.next_seq);
  ORCHARD_RETURN_IF_ERROR(it->status());
  return meta.next_seq;
}

std::string EncodeRaw(int64_t received_ms, std::string_view json) {
  RecordWriter w;
  w.PutVarint(kVersion);
  w.PutSigned(received_ms);
  w.PutString(json);
  return w.Take();
}
Result<StatusStore::RawReport> DecodeRaw(std::string_view bytes) {
  RecordReader r(bytes);
  if (r.GetVarint() != kVersion) return Corrupt("raw status report");
  StatusStore::RawReport raw;
  raw.received_ms = r.GetSigned();
  raw.json = r.GetString();
  if (r.corrupt()) return Corrupt("raw status report");
  return raw;
}

bool SameStatus(const DeclarationStatus& a, const DeclarationStatus& b) {
  if (a.identifier != b.identifier || a.kind != b.kind || a.server_token != b.server_token || a.active != b.active ||
      a.valid != b.valid || a.reasons.size() != b.reasons.size())
    return false;
  for (size_t i = 0; i < a.reasons.size(); ++i) {
    const Reason &x = a.reasons[i], &y = b.reasons[i];
    if (x.code != y.code || x.description != y.description || x.details_json != y.details_json) return false;
  }
  return true;
}

bool IsCapabilityItem(std::string_view item) {
  return item == kCapabilitiesItem ||
         (item.size() > kCapabilitiesItem.size() && item.substr(0, kCapabilitiesItem.size()) == kCapabilitiesItem &&
          item[kCapabilitiesItem.size()] == '.');
}

// Merges an incremental array into the stored one by identifier: removals
// first, then the report's elements replace those with their identifier.
// A stored value that is not such an array is replaced.
Result<std::string> MergeArray(std::string_view stored, std::string_view value, const std::vector<std::string>& removed,
                               size_t max_depth) {
  std::map<std::string, std::string> by_id;
  if (!stored.empty()) {
    auto n = ParseDoc(stored, max_depth);
    if (n.ok() && IsIdentifierArray(*n)) {
      for (const Node& e : n->elements) by_id[*IdentifierOf(e)] = json::Canonical(e);
    }
  }
  for (const std::string& id : removed) by_id.erase(id);
  auto n = ParseDoc(value, max_depth);
  if (!n.ok()) return n.status();
  if (!n->is(Type::kArray)) return Status::InvalidArgument("status: merged item is not an array");
  for (const Node& e : n->elements) {
    auto id = IdentifierOf(e);
    if (!id) return Status::InvalidArgument("status: merged array element without identifier");
    by_id[std::move(*id)] = json::Canonical(e);
  }
  return JoinArray(by_id);
}

}  // namespace

Result<ParsedReport> ParseStatusReport(std::string_view json, const StatusLimits& limits) {
  if (json.size() > limits.max_report_bytes)
    return Status::TooLarge("status: report of " + std::to_string(json.size()) + " bytes exceeds the limit of " +
                            std::to_string(limits.max_report_bytes));
  auto root = ParseDoc(json, limits.max_depth);
  if (!root.ok()) return root.status();
  if (!root->is(Type::kObject)) return Status::InvalidArgument("status: the report is not a JSON object");
  ParsedReport out;
  if (const Node* f = root->Find("FullReport")) {
    if (!f->is(Type::kBool)) return Status::InvalidArgument("status: FullReport is not a boolean");
    out.full = f->boolean;
  }
  ReportParser parser(limits, &out);
  if (const Node* items = root->Find("StatusItems")) {
    if (!items->is(Type::kObject)) return Status::InvalidArgument("status: StatusItems is not an object");
    ORCHARD_RETURN_IF_ERROR(parser.Items(items->members, ""));
  }
  if (const Node* errors = root->Find("Errors")) ORCHARD_RETURN_IF_ERROR(parser.Errors(*errors));
  parser.Finish();
  return out;
}

StatusStore::StatusStore(store::Store* store, StatusLimits limits) : store_(store), limits_(limits) {}

Result<ApplyResult> StatusStore::Apply(store::Batch& batch, std::string_view enrollment_id, const ParsedReport& report,
                                       std::string_view raw_json, int64_t now_ms) {
  ORCHARD_RETURN_IF_ERROR(CheckEnrollment(enrollment_id));
  if (raw_json.size() > limits_.max_report_bytes) return Status::TooLarge("status: raw report over max_report_bytes");
  // Everything is read and checked before the first write into batch, so an
  // error leaves batch as it was.
  store::Batch out;
  ApplyResult res;

  // Items.
  const std::string ip = ItemPrefix(enrollment_id);
  std::map<std::string, std::string> stored;
  if (report.full) {
    auto it = store_->Scan(store::Cf::kDdm, ip, store::PrefixEnd(ip));
    for (; it->Valid(); it->Next()) stored.emplace(std::string(it->key().substr(ip.size())), std::string(it->value()));
    ORCHARD_RETURN_IF_ERROR(it->status());
  } else {
    for (const auto& [name, value] : report.items) {
      if (!ValidName(name)) continue;  // refused below
      auto v = store_->Get(store::Cf::kDdm, ip + name);
      if (!v.ok()) return v.status();
      if (v->has_value()) stored.emplace(name, std::move(**v));
    }
  }
  std::map<std::string_view, const std::vector<std::string>*> removed;
  if (!report.full)
    for (const auto& [name, ids] : report.removed) removed[name] = &ids;
  static const std::vector<std::string> kNone;
  std::set<std::string_view> reported;
  for (const auto& [name, value] : report.items) {
    if (!ValidName(name) || name.size() > limits_.max_item_name_bytes)
      return Status::InvalidArgument("status: invalid item name");
    reported.insert(name);
    auto s = stored.find(name);
    const std::string previous = s == stored.end() ? std::string() : s->second;
    std::string next = value;
    if (!report.full) {
      auto r = removed.find(name);
      bool merge = r != removed.end();
      if (!merge) {
        auto n = ParseDoc(value, limits_.max_depth);
        if (!n.ok()) return n.status();
        merge = IsIdentifierArray(*n);
      }
      if (merge) {
        auto m = MergeArray(previous, value, r != removed.end() ? *r->second : kNone, limits_.max_depth);
        if (!m.ok()) return m.status();
        next = std::move(*m);
      }
    }
    if (next.empty()) return Status::InvalidArgument("status: empty value for " + name);
    if (next.size() > limits_.max_value_bytes)
      return Status::InvalidArgument("status: value of " + name + " over max_value_bytes");
    if (s != stored.end() && s->second == next) continue;
    out.Put(store::Cf::kDdm, ip + name, next);
    res.items.push_back({name, std::move(next), previous});
  }
  if (report.full) {
    for (const auto& [name, value] : stored) {
      if (reported.count(name)) continue;
      out.Delete(store::Cf::kDdm, ip + name);
      res.items.push_back({name, "", value});
    }
  }
  std::sort(res.items.begin(), res.items.end(), [](const auto& a, const auto& b) { return a.item < b.item; });
  for (const ItemChange& c : res.items) res.capabilities_changed |= IsCapabilityItem(c.item);

  // Declaration statuses: management.declarations is the device's whole list.
  if (report.has_declarations) {
    const std::string dp = DeclPrefix(enrollment_id);
    std::map<std::string, DeclarationStatus> known;
    auto it = store_->Scan(store::Cf::kDdm, dp, store::PrefixEnd(dp));
    for (; it->Valid(); it->Next()) {
      auto d = DecodeDeclaration(it->value());
      if (!d.ok()) return d.status();
      known.emplace(std::string(it->key().substr(dp.size())), std::move(*d));
    }
    ORCHARD_RETURN_IF_ERROR(it->status());
    std::set<std::string_view> listed;
    for (const DeclarationStatus& d : report.declarations) {
      if (!ValidName(d.identifier)) return Status::InvalidArgument("status: invalid declaration identifier");
      listed.insert(d.identifier);
      auto k = known.find(d.identifier);
      if (k != known.end() && SameStatus(k->second, d)) continue;
      out.Put(store::Cf::kDdm, dp + d.identifier, EncodeDeclaration(d));
      res.declarations.push_back({d, false});
    }
    for (const auto& [id, d] : known) {
      if (listed.count(id)) continue;
      out.Delete(store::Cf::kDdm, dp + id);
      res.declarations.push_back({d, true});
    }
    std::sort(res.declarations.begin(), res.declarations.end(), [](const auto& a, const auto& b) {
      return std::tie(a.status.kind, a.status.identifier) < std::tie(b.status.kind, b.status.identifier);
    });
  }

  // Errors.
  res.errors = report.errors;
  if (!report.errors.empty()) out.Put(store::Cf::kDdm, ErrorsKey(enrollment_id), EncodeErrors(report.errors));

  // Raw reports and meta: the newest keep_raw_reports are kept, the rest
  // deleted by key (RawFrom).
  auto meta = ReadMeta(store_, enrollment_id);
  if (!meta.ok()) return meta.status();
  auto raw_from = RawFrom(store_, enrollment_id, *meta);
  if (!raw_from.ok()) return raw_from.status();
  if (limits_.keep_raw_reports > 0)
    out.Put(store::Cf::kDdm, RawKey(enrollment_id, meta->next_seq), EncodeRaw(now_ms, raw_json));
  ++meta->next_seq;
  const uint64_t keep_from = meta->next_seq - std::min<uint64_t>(meta->next_seq, limits_.keep_raw_reports);
  // At most one delete per report, more only after keep_raw_reports shrank.
  for (uint64_t seq = *raw_from; seq < keep_from; ++seq) out.Delete(store::Cf::kDdm, RawKey(enrollment_id, seq));
  meta->raw_from = std::max(*raw_from, keep_from);
  meta->last_report_ms = now_ms;
  out.Put(store::Cf::kDdm, MetaKey(enrollment_id), EncodeMeta(*meta));

  for (const store::Batch::Op& op : out.ops()) {
    if (op.kind == store::Batch::Op::kPut) batch.Put(op.cf, op.key, op.value);
    else batch.Delete(op.cf, op.key);
  }
  return res;
}

Result<std::optional<std::string>> StatusStore::Item(std::string_view enrollment_id, std::string_view item) {
  ORCHARD_RETURN_IF_ERROR(CheckEnrollment(enrollment_id));
  if (item.empty()) return std::optional<std::string>();
  return store_->Get(store::Cf::kDdm, ItemPrefix(enrollment_id) + std::string(item));
}

Result<Page<std::pair<std::string, std::string>>> StatusStore::Items(std::string_view enrollment_id,
                                                                     std::string_view prefix, std::string_view after,
                                                                     size_t limit) {
  ORCHARD_RETURN_IF_ERROR(CheckEnrollment(enrollment_id));
  ORCHARD_RETURN_IF_ERROR(CheckLimit(limit));
  const std::string ip = ItemPrefix(enrollment_id);
  const std::string scope = ip + std::string(prefix);
  std::string lower = scope;
  if (!after.empty()) lower = std::max(lower, ip + std::string(after) + std::string(1, '\0'));
  Page<std::pair<std::string, std::string>> page;
  auto it = store_->Scan(store::Cf::kDdm, lower, store::PrefixEnd(scope));
  for (; it->Valid() && it->key().substr(0, scope.size()) == scope; it->Next()) {
    if (page.items.size() == limit) {
      page.next = page.items.back().first;
      break;
    }
    page.items.emplace_back(std::string(it->key().substr(ip.size())), std::string(it->value()));
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  return page;
}

Result<std::optional<DeclarationStatus>> StatusStore::Declaration(std::string_view enrollment_id,
                                                                  std::string_view identifier) {
  ORCHARD_RETURN_IF_ERROR(CheckEnrollment(enrollment_id));
  if (identifier.empty()) return std::optional<DeclarationStatus>();
  auto v = store_->Get(store::Cf::kDdm, DeclPrefix(enrollment_id) + std::string(identifier));
  if (!v.ok()) return v.status();
  if (!v->has_value()) return std::optional<DeclarationStatus>();
  auto d = DecodeDeclaration(**v);
  if (!d.ok()) return d.status();
  return std::optional<DeclarationStatus>(std::move(*d));
}

Result<Page<DeclarationStatus>> StatusStore::Declarations(std::string_view enrollment_id, std::string_view after,
                                                          size_t limit) {
  ORCHARD_RETURN_IF_ERROR(CheckEnrollment(enrollment_id));
  ORCHARD_RETURN_IF_ERROR(CheckLimit(limit));
  const std::string dp = DeclPrefix(enrollment_id);
  std::string lower = dp;
  if (!after.empty()) lower = dp + std::string(after) + std::string(1, '\0');
  Page<DeclarationStatus> page;
  auto it = store_->Scan(store::Cf::kDdm, lower, store::PrefixEnd(dp));
  for (; it->Valid() && it->key().substr(0, dp.size()) == dp; it->Next()) {
    if (page.items.size() == limit) {
      page.next = page.items.back().identifier;
      break;
    }
    auto d = DecodeDeclaration(it->value());
    if (!d.ok()) return d.status();
    page.items.push_back(std::move(*d));
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  return page;
}

Result<std::vector<StatusStore::RawReport>> StatusStore::RawReports(std::string_view enrollment_id, size_t limit) {
  ORCHARD_RETURN_IF_ERROR(CheckEnrollment(enrollment_id));
  ORCHARD_RETURN_IF_ERROR(CheckLimit(limit));
  auto meta = ReadMeta(store_, enrollment_id);
  if (!meta.ok()) return meta.status();
  auto raw_from = RawFrom(store_, enrollment_id, *meta);
  if (!raw_from.ok()) return raw_from.status();
  const std::string rp = RawPrefix(enrollment_id);
  // From the newest `limit` on (keys are dense up to next_seq), past no tombstone.
  const uint64_t first = std::max(*raw_from, meta->next_seq - std::min<uint64_t>(meta->next_seq, limit));
  std::deque<std::string> values;  // the newest `limit`, oldest first
  auto it = store_->Scan(store::Cf::kDdm, RawKey(enrollment_id, first), store::PrefixEnd(rp));
  for (; it->Valid(); it->Next()) {
    values.emplace_back(it->value());
    if (values.size() > limit) values.pop_front();
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  std::vector<RawReport> out;
  for (auto v = values.rbegin(); v != values.rend(); ++v) {
    auto r = DecodeRaw(*v);
    if (!r.ok()) return r.status();
    out.push_back(std::move(*r));
  }
  return out;
}

Result<std::vector<StatusError>> StatusStore::Errors(std::string_view enrollment_id) {
  ORCHARD_RETURN_IF_ERROR(CheckEnrollment(enrollment_id));
  auto v = store_->Get(store::Cf::kDdm, ErrorsKey(enrollment_id));
  if (!v.ok()) return v.status();
  if (!v->has_value()) return std::vector<StatusError>();
  return DecodeErrors(**v);
}

Status StatusStore::Forget(store::Batch& batch, std::string_view enrollment_id) {
  ORCHARD_RETURN_IF_ERROR(CheckEnrollment(enrollment_id));
  for (const std::string& p : {ItemPrefix(enrollment_id), DeclPrefix(enrollment_id), RawPrefix(enrollment_id)})
    batch.DeleteRange(store::Cf::kDdm, p, store::PrefixEnd(p));
  batch.Delete(store::Cf::kDdm, ErrorsKey(enrollment_id));
  batch.Delete(store::Cf::kDdm, MetaKey(enrollment_id));
  return Status::Ok();
}

bool IsCurrent(const Manifest& m, const DeclarationStatus& s) {
  const auto& items = m.Of(s.kind);
  auto it = std::lower_bound(items.begin(), items.end(), s.identifier,
                             [](const ManifestItem& item, const std::string& id) { return item.identifier < id; });
  return it != items.end() && it->identifier == s.identifier && it->server_token == s.server_token;
}

}  // namespace orchard::ddm
