// Enrollment profile generation rate (a command, not a test; docs/performance.md):
//   build      ProfileSettings -> XML plist
//   sign       build + CMS SignedData (RSA 2048 signer, SHA-256)
//   serve GET  ProfileService::Handle: one-time challenge written to RocksDB, build, sign
//   serve POST the same after reading a CMS-signed machine-info body (signature check)
// each with 1 and 2 threads for --seconds (default 3) per phase.
// Usage: bench_profile [--seconds S]
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "enroll/profile.h"
#include "store/store.h"
#include "support/orchardd_process.h"
#include "support/test_pki.h"
#include "util/encoding.h"

using namespace orchard;

namespace {

double Rate(int threads, double seconds, const std::function<bool()>& op) {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> done{0}, failed{0};
  std::vector<std::thread> workers;
  const auto start = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) (op() ? done : failed).fetch_add(1);
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));  // a measurement window, not synchronisation
  stop = true;
  for (auto& w : workers) w.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (failed) std::fprintf(stderr, "bench_profile: %llu operations failed\n", (unsigned long long)failed.load());
  return done / secs;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 3;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = std::atof(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench_profile [--seconds S]\n");
      return 2;
    }
  }
  const std::string dir = testing::MakeTempDir("orchard-bench-profile");
  auto db = store::Store::Open({.path = dir + "/db"});
  auto ca = enroll::DeviceCa::Load({.dir = dir + "/ca"});
  if (!db.ok() || !ca.ok()) {
    std::fprintf(stderr, "bench_profile: setup failed\n");
    return 1;
  }
  enroll::Challenges challenges((*db).get(), "");
  enroll::IssuedCerts issued((*db).get());
  auto signing_ca = testing::TestCa::Create("Bench Signing CA");
  auto signer_id = signing_ca->Issue({.common_name = "bench profile signing", .client_auth_eku = false, .rsa_key = true});
  auto signer = enroll::ProfileSigner::FromPem(signer_id.cert_pem, signer_id.key_pem, signing_ca->cert_pem());
  if (!signer.ok()) return 1;

  enroll::ProfileSettings s;
  s.identifier = "com.example.mdm.orchard";
  s.server_url = "https://mdm.example.com/mdm/connect";
  s.checkin_url = "https://mdm.example.com/mdm/checkin";
  s.topic = "com.apple.mgmt.External.bench";
  s.scep.url = "https://mdm.example.com/scep";
  s.scep.subject = {{"CN", "Orchard device 0001"}};
  s.scep.challenge = "0123456789abcdef";
  s.scep.ca_cert_der = (*ca)->cert_der();

  enroll::EnrollOptions o;
  o.profile = s;
  o.profile.scep.subject.clear();
  o.profile.scep.challenge.clear();
  o.token = "bench-token-0123456789";
  enroll::ProfileService service(
      o, enroll::EnrollDeps{(*ca).get(), &challenges, &issued, (*db).get(), (*signer).get(),
                            []() -> Result<std::optional<std::string>> {
                              return std::optional<std::string>("com.apple.mgmt.External.bench");
                            }});
  auto device_ca = testing::TestCa::Create("Bench Device CA");
  auto device = device_ca->Issue({.common_name = "bench device", .rsa_key = true});
  auto body = enroll::SignMachineInfo({.udid = "00008110-000A1B2C3D4E5F60", .serial = "F2LXK0ABCDEF"}, device.cert_pem,
                                      device.key_pem);
  if (!body.ok()) return 1;

  struct Phase {
    const char* name;
    std::function<bool()> op;
  };
  const Phase phases[] = {
      {"build", [&] { return BuildProfileXml(s).ok(); }},
      {"sign", [&] {
         auto x = BuildProfileXml(s);
         return x.ok() && (*signer)->Sign(*x).ok();
       }},
      {"serve_get", [&] {
         return service.Handle({.method = "GET", .token = "bench-token-0123456789"}, NowMillis()).status == 200;
       }},
      {"serve_post", [&] {
         return service.Handle({.method = "POST", .token = "bench-token-0123456789", .body = *body}, NowMillis())
                    .status == 200;
       }},
  };
  std::printf("enrollment profile generation (%.0f s per phase, %u cores)\n", seconds,
              std::thread::hardware_concurrency());
  for (const auto& p : phases)
    for (int threads : {1, 2})
      std::printf("%-10s threads=%d profiles/s=%.0f\n", p.name, threads, Rate(threads, seconds, p.op));
  return 0;
}
