#include "ddm/schema.h"

#include <algorithm>
#include <charconv>
#include <system_error>

namespace orchard::ddm {
namespace {

using enum ValueType;
#include "ddm/declaration_schemas.inc"

constexpr bool SchemasSorted() {
  for (size_t i = 1; i < std::size(kSchemas); ++i)
    if (!(kSchemas[i - 1].type < kSchemas[i].type)) return false;
  return true;
}
static_assert(SchemasSorted(), "kSchemas must be sorted by type, each type once");

constexpr std::string_view kAnyKey = "ANY";
constexpr size_t kMaxPlainKey = 40;

bool IsInteger(const json::Value& v) {
  return v.is(json::Type::kNumber) && v.text.find_first_of(".eE") == std::string::npos;
}

// The number's value; beyond the range of a double (only integers can be:
// other numbers are already doubles), +-infinity.
double NumberOf(std::string_view text) {
  double d = 0;
  const auto r = std::from_chars(text.data(), text.data() + text.size(), d);
  if (r.ec == std::errc::result_out_of_range)
    return !text.empty() && text[0] == '-' ? kNoMin : kNoMax;
  return d;
}

// A number's text for a message, at most 40 bytes.
std::string NumberText(std::string_view text) {
  return text.size() <= kMaxPlainKey ? std::string(text)
                                     : std::string(text.substr(0, kMaxPlainKey)) + "...";
}

std::string BoundText(double b) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, b);
  return std::string(buf, r.ptr);
}

const char* Described(const json::Value& v) {
  switch (v.type) {
    case json::Type::kNull:
      return "null";
    case json::Type::kBool:
      return "a boolean";
    case json::Type::kNumber:
      return IsInteger(v) ? "an integer" : "a number with a fraction or exponent";
    case json::Type::kString:
      return "a string";
    case json::Type::kArray:
      return "an array";
    case json::Type::kObject:
      return "an object";
  }
  return "a value";
}

const char* Wanted(ValueType t) {
  switch (t) {
    case kString:
      return "a string";
    case kInteger:
      return "an integer";
    case kBoolean:
      return "a boolean";
    case kReal:
      return "a number";
    case kArray:
      return "an array";
    case kDictionary:
      return "an object";
    case kData:
      return "a string (base64 data)";
    case kDate:
      return "a string (a date)";
    case kAny:
      return "anything";
  }
  return "?";
}

// path extended by a member key: ".Key" when the key reads plainly, else
// ["<excerpt>"].
void AppendKey(std::string* path, std::string_view key) {
  bool plain = !key.empty() && key.size() <= kMaxPlainKey;
  for (char c : key) {
    if (c < 0x20 || c > 0x7e || c == '.' || c == '[' || c == ']' || c == '"' || c == '\\')
      plain = false;
  }
  if (plain) {
    path->push_back('.');
    path->append(key);
  } else {
    path->push_back('[');
    path->append(json::Excerpt(key));
    path->push_back(']');
  }
}

class Checker {
 public:
  Checker(std::string_view type, std::vector<std::string>* warnings)
      : type_(type), warnings_(warnings) {}

  Status Object(const json::Value& obj, std::span<const SchemaKey> keys, std::string* path) {
    if (keys.empty()) return Status::Ok();  // not described: anything goes
    const SchemaKey* any = nullptr;
    for (const SchemaKey& k : keys)
      if (k.name == kAnyKey) any = &k;
    const size_t base = path->size();
    for (const json::Member& m : obj.members) {
      const SchemaKey* k = any;
      for (const SchemaKey& s : keys)
        if (s.name == m.key && s.name != kAnyKey) k = &s;
      AppendKey(path, m.key);
      if (k) {
        ORCHARD_RETURN_IF_ERROR(Value(m.value, *k, path));
      } else {
        Warn(*path);
      }
      path->resize(base);
    }
    for (const SchemaKey& k : keys) {
      if (!k.required || k.name == kAnyKey || obj.Find(k.name)) continue;
      AppendKey(path, k.name);
      return Status::InvalidArgument(*path + ": missing (required by " + std::string(type_) + ")");
    }
    return Status::Ok();
  }

  void Finish() {
    if (warnings_ && dropped_)
      warnings_->push_back("... and " + std::to_string(dropped_) + " more unknown keys");
  }

 private:
  Status Value(const json::Value& v, const SchemaKey& k, std::string* path) {
    bool type_ok = false;
    switch (k.type) {
      case kString:
      case kData:
      case kDate:
        type_ok = v.is(json::Type::kString);
        break;
      case kInteger:
        type_ok = IsInteger(v);
        break;
      case kReal:
        type_ok = v.is(json::Type::kNumber);
        break;
      case kBoolean:
        type_ok = v.is(json::Type::kBool);
        break;
      case kArray:
        type_ok = v.is(json::Type::kArray);
        break;
      case kDictionary:
        type_ok = v.is(json::Type::kObject);
        break;
      case kAny:
        return Status::Ok();
    }
    if (!type_ok)
      return Status::InvalidArgument(*path + ": must be " + Wanted(k.type) + ", not " +
                                     Described(v));
    if (v.is(json::Type::kNumber)) ORCHARD_RETURN_IF_ERROR(Range(v.text, k, *path));
    if (!k.rangelist.empty()) ORCHARD_RETURN_IF_ERROR(RangeList(v, k, *path));
    if (v.is(json::Type::kObject)) return Object(v, k.subkeys, path);
    if (v.is(json::Type::kArray) && !k.subkeys.empty()) {
      const size_t base = path->size();
      for (size_t i = 0; i < v.elements.size(); ++i) {
        path->append("[" + std::to_string(i) + "]");
        ORCHARD_RETURN_IF_ERROR(Value(v.elements[i], k.subkeys[0], path));
        path->resize(base);
      }
    }
    return Status::Ok();
  }

  static Status Range(std::string_view text, const SchemaKey& k, const std::string& path) {
    const double d = NumberOf(text);
    if (d >= k.min && d <= k.max) return Status::Ok();
    std::string want;
    if (k.min != kNoMin && k.max != kNoMax)
      want = "between " + BoundText(k.min) + " and " + BoundText(k.max);
    else if (k.min != kNoMin)
      want = "at least " + BoundText(k.min);
    else
      want = "at most " + BoundText(k.max);
    return Status::InvalidArgument(path + ": must be " + want + ", not " + NumberText(text));
  }

  static Status RangeList(const json::Value& v, const SchemaKey& k, const std::string& path) {
    const bool number = v.is(json::Type::kNumber);
    for (std::string_view allowed : k.rangelist) {
      if (number ? NumberOf(allowed) == NumberOf(v.text) : allowed == v.text) return Status::Ok();
    }
    std::string list;
    for (std::string_view allowed : k.rangelist) {
      if (!list.empty()) list.append(", ");
      list.append(number ? std::string(allowed) : json::Quote(allowed));
    }
    return Status::InvalidArgument(path + ": must be one of " + list + ", not " +
                                   (number ? NumberText(v.text) : json::Excerpt(v.text)));
  }

  void Warn(const std::string& path) {
    if (!warnings_) return;
    if (warned_ == kMaxSchemaWarnings) {
      ++dropped_;
      return;
    }
    ++warned_;
    warnings_->push_back(path + ": unknown key (not in Apple's schema for " + std::string(type_) +
                         ")");
  }

  std::string_view type_;
  std::vector<std::string>* warnings_;
  size_t warned_ = 0, dropped_ = 0;
};

}  // namespace

std::span<const SchemaType> AllSchemas() { return kSchemas; }

const SchemaType* FindSchema(std::string_view type) {
  const auto* it =
      std::lower_bound(std::begin(kSchemas), std::end(kSchemas), type,
                       [](const SchemaType& s, std::string_view t) { return s.type < t; });
  return it != std::end(kSchemas) && it->type == type ? it : nullptr;
}

const char* ValueTypeName(ValueType t) {
  switch (t) {
    case kString:
      return "string";
    case kInteger:
      return "integer";
    case kBoolean:
      return "boolean";
    case kReal:
      return "real";
    case kArray:
      return "array";
    case kDictionary:
      return "dictionary";
    case kData:
      return "data";
    case kDate:
      return "date";
    case kAny:
      return "any";
  }
  return "?";
}

Status CheckPayload(std::string_view type, const json::Value& payload,
                    std::vector<std::string>* warnings) {
  const SchemaType* schema = FindSchema(type);
  if (!schema) return Status::Ok();
  if (!payload.is(json::Type::kObject))
    return Status::InvalidArgument("Payload: must be an object");
  Checker checker(schema->type, warnings);
  std::string path = "Payload";
  ORCHARD_RETURN_IF_ERROR(checker.Object(payload, schema->keys, &path));
  checker.Finish();
  return Status::Ok();
}

Status CheckPayload(std::string_view type, std::string_view payload_json,
                    std::vector<std::string>* warnings) {
  if (!FindSchema(type)) return Status::Ok();
  auto v = json::Parse(payload_json);
  if (!v.ok()) return Status::InvalidArgument("Payload: " + v.status().message());
  return CheckPayload(type, *v, warnings);
}

}  // namespace orchard::ddm
