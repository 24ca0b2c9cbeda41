// libFuzzer target for SCEP's PKIOperation parser (core/enroll/scep.cpp): any input
// must get a SCEP answer (CertRep, signed by the CA) or a 400/413 with a reason, never
// a crash or a 500. The CA is a fixed test-only one (tests/fuzz/scep_ca/) so that the
// seeds (tests/fuzz/seeds/scep_fuzz/, messages encrypted to it) reach the envelope,
// the CSR and the challenge check; the static challenge is "fuzz-challenge".
#include <openssl/cms.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string_view>

#include "enroll/ca.h"
#include "enroll/challenges.h"
#include "enroll/issued.h"
#include "enroll/scep.h"
#include "store/store.h"

namespace {

struct Env {
  std::unique_ptr<orchard::store::Store> store;
  std::unique_ptr<orchard::enroll::DeviceCa> ca;
  std::unique_ptr<orchard::enroll::IssuedCerts> issued;
  std::unique_ptr<orchard::enroll::Challenges> challenges;
  std::unique_ptr<orchard::enroll::ScepServer> scep;

  Env() {
    char dir[] = "/tmp/orchard-scep-fuzz-XXXXXX";
    if (!mkdtemp(dir)) abort();
    auto st = orchard::store::Store::Open({.path = std::string(dir) + "/db"});
    if (!st.ok()) abort();
    store = std::move(st.value());
    const std::string ca_dir = std::string(ORCHARD_SOURCE_DIR) + "/tests/fuzz/scep_ca/";
    auto c = orchard::enroll::DeviceCa::Load({.cert_file = ca_dir + "ca.pem", .key_file = ca_dir + "ca.key"});
    if (!c.ok()) abort();
    ca = std::move(c.value());
    issued = std::make_unique<orchard::enroll::IssuedCerts>(store.get());
    challenges = std::make_unique<orchard::enroll::Challenges>(store.get(), "fuzz-challenge");
    scep = std::make_unique<orchard::enroll::ScepServer>(
        orchard::enroll::ScepOptions{}, orchard::enroll::ScepDeps{ca.get(), issued.get(), challenges.get(), store.get()});
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Env env;  // one CA and store for the whole run
  std::string_view der(reinterpret_cast<const char*>(data), size);
  orchard::enroll::ScepReply r = env.scep->PkiOperation(der);
  if (r.status != 200 && r.status != 400 && r.status != 413) abort();
  if (r.status != 200) {
    if (r.reason.empty()) abort();
    return 0;
  }
  // A CertRep: CMS SignedData by the CA.
  const unsigned char* p = reinterpret_cast<const unsigned char*>(r.body.data());
  CMS_ContentInfo* cms = d2i_CMS_ContentInfo(nullptr, &p, static_cast<long>(r.body.size()));
  if (cms == nullptr) abort();
  if (CMS_verify(cms, nullptr, nullptr, nullptr, nullptr, CMS_NO_SIGNER_CERT_VERIFY | CMS_BINARY) != 1) abort();
  CMS_ContentInfo_free(cms);
  return 0;
}
