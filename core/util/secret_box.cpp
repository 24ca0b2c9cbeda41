#include "util/secret_box.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <memory>

#include "util/encoding.h"

namespace orchard {
namespace {
constexpr std::string_view kMagic = "OSB1";
constexpr size_t kNonce = 12, kTag = 16;
struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
}  // namespace

Result<SecretBox> SecretBox::FromKeyText(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  if (text.size() == 32) return SecretBox(std::string(text));
  if (text.size() == 64) {
    if (auto k = HexDecode(text)) return SecretBox(*k);
  }
  if (auto k = Base64Decode(text); k && k->size() == 32) return SecretBox(*k);
  return Status::InvalidArgument(
      "encryption key must be 32 bytes: 64 hex characters or base64 of 32 bytes");
}

bool SecretBox::IsSealed(std::string_view data) {
  return data.size() >= kMagic.size() + kNonce + kTag && data.substr(0, kMagic.size()) == kMagic;
}

std::string SecretBox::Seal(std::string_view plaintext) const {
  unsigned char nonce[kNonce];
  RAND_bytes(nonce, sizeof nonce);
  std::unique_ptr<EVP_CIPHER_CTX, CtxFree> ctx(EVP_CIPHER_CTX_new());
  std::string out(kMagic);
  out.append(reinterpret_cast<char*>(nonce), kNonce);
  std::string ct(plaintext.size() + 16, '\0');
  int len = 0, total = 0;
  EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr,
                     reinterpret_cast<const unsigned char*>(key_.data()), nonce);
  EVP_EncryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(ct.data()), &len,
                    reinterpret_cast<const unsigned char*>(plaintext.data()),
                    static_cast<int>(plaintext.size()));
  total = len;
  EVP_EncryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(ct.data()) + total, &len);
  total += len;
  ct.resize(total);
  unsigned char tag[kTag];
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTag, tag);
  out += ct;
  out.append(reinterpret_cast<char*>(tag), kTag);
  return out;
}

Result<std::string> SecretBox::Open(std::string_view sealed) const {
  if (!IsSealed(sealed)) return Status::InvalidArgument("data is not sealed");
  std::string_view nonce = sealed.substr(kMagic.size(), kNonce);
  std::string_view ct = sealed.substr(kMagic.size() + kNonce, sealed.size() - kMagic.size() - kNonce - kTag);
  std::string tag(sealed.substr(sealed.size() - kTag));
  std::unique_ptr<EVP_CIPHER_CTX, CtxFree> ctx(EVP_CIPHER_CTX_new());
  std::string out(ct.size() + 16, '\0');
  int len = 0, total = 0;
  EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr,
                     reinterpret_cast<const unsigned char*>(key_.data()),
                     reinterpret_cast<const unsigned char*>(nonce.data()));
  EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len,
                    reinterpret_cast<const unsigned char*>(ct.data()), static_cast<int>(ct.size()));
  total = len;
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTag, tag.data());
  if (EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(out.data()) + total, &len) != 1)
    return Status::InvalidArgument("sealed data does not open with this key (wrong key or tampered)");
  total += len;
  out.resize(total);
  return out;
}

}  // namespace orchard
