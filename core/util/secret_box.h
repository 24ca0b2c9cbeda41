// Authenticated encryption of small secrets at rest (AES-256-GCM, OpenSSL).
// Sealed format: "OSB1" | 12-byte random nonce | ciphertext | 16-byte tag.
// Thread-safe (no shared state).
#pragma once

#include <string>
#include <string_view>

#include "util/status.h"

namespace orchard {

class SecretBox {
 public:
  // key: 32 raw bytes, or 64 hex characters, or base64 of 32 bytes.
  static Result<SecretBox> FromKeyText(std::string_view key_text);
  std::string Seal(std::string_view plaintext) const;
  // InvalidArgument if the data is not sealed or was sealed with another key / tampered.
  Result<std::string> Open(std::string_view sealed) const;
  static bool IsSealed(std::string_view data);

 private:
  explicit SecretBox(std::string key) : key_(std::move(key)) {}
  std::string key_;
};

}  // namespace orchard
