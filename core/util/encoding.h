// Byte/text encodings shared by every module: base64, hex, percent-decoding,
// SHA-256, UUIDs, constant-time comparison and clock helpers.
// All functions are pure and thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace orchard {

std::string Base64Encode(std::string_view bytes);
// Accepts standard and URL-safe alphabets, ignores ASCII whitespace, padding optional.
// Returns nullopt on any other character or an impossible length.
std::optional<std::string> Base64Decode(std::string_view text);

std::string HexEncode(std::string_view bytes);  // lower case
std::optional<std::string> HexDecode(std::string_view text);

// RFC 3986 percent-decoding ("%2F" -> "/"); '+' is kept as '+'.
std::optional<std::string> PercentDecode(std::string_view text);
// Percent-encodes everything outside unreserved characters.
std::string PercentEncode(std::string_view text);

std::string Sha256(std::string_view bytes);     // 32 raw bytes
std::string Sha256Hex(std::string_view bytes);  // 64 hex chars

// Random version-4 UUID, upper case like Apple's.
std::string NewUuid();

// Constant-time equality of two secrets (lengths may differ; time does not leak content).
bool SecretEquals(std::string_view a, std::string_view b);

// Wall clock, milliseconds since the Unix epoch.
int64_t NowMillis();
// RFC 3339 UTC, e.g. 2026-11-23T15:42:00Z (seconds precision).
std::string FormatRfc3339(int64_t unix_millis);

// Big-endian fixed-width integers, for sortable RocksDB keys.
void PutBigEndian64(std::string* out, uint64_t v);
uint64_t GetBigEndian64(std::string_view in);  // requires in.size() >= 8
void PutBigEndian32(std::string* out, uint32_t v);
uint32_t GetBigEndian32(std::string_view in);  // requires in.size() >= 4

// FNV-1a, 64 bits: stable across builds and machines (unlike std::hash), for
// assignments that are stored or must agree between processes.
uint64_t StableHash64(std::string_view bytes);

}  // namespace orchard
