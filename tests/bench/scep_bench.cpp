// SCEP enrollments per second through real HTTP against the real orchardd
// (scripts/bench-scep), and the enrollment profile generation rate (GET
// /mdm/enroll?token=..., CMS-signed) when the build has it.
//
// Each client thread has its own connection and one pre-generated key (key
// generation is the device's cost, not the server's) and loops PKCSReq with the
// static challenge; every answer is checked (CertRep signed by the CA, nonces,
// the issued certificate decrypted). Not a test.
//
//   bench_scep [--clients N] [--seconds S] [--server-threads N] [--client-key ec|rsa]
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "plist/plist.h"
#include "support/orchardd_process.h"
#include "support/scep_client.h"
#include "support/test_pki.h"

using namespace orchard;
using namespace orchard::testing;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kChallenge = "bench-scep-challenge";
constexpr const char* kKey = "bench-scep-api-key-000001";
constexpr const char* kToken = "bench-enroll-token-0001";

std::string NewKeyPem(bool rsa) {
  EVP_PKEY* k = rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr, nullptr);
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  std::string s(p, static_cast<size_t>(n));
  BIO_free(b);
  EVP_PKEY_free(k);
  return s;
}

struct Window {
  double seconds = 0;
  long ok = 0, failed = 0;
};

// Runs fn(thread index) in n threads for the given time; fn returns whether it succeeded.
template <typename F>
Window Measure(int n, double seconds, F fn) {
  std::atomic<bool> stop{false};
  std::atomic<long> ok{0}, failed{0};
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      try {
        while (!stop.load(std::memory_order_relaxed)) (fn(i) ? ok : failed).fetch_add(1);
      } catch (...) {
        failed.fetch_add(1);
      }
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));  // the measuring window
  stop = true;
  for (auto& t : threads) t.join();
  Window w;
  w.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  w.ok = ok.load();
  w.failed = failed.load();
  return w;
}

}  // namespace

int main(int argc, char** argv) {
  int clients = 4, server_threads = 2;
  double seconds = 10;
  bool client_rsa = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--clients") clients = std::stoi(v);
    else if (a == "--seconds") seconds = std::stod(v);
    else if (a == "--server-threads") server_threads = std::stoi(v);
    else if (a == "--client-key") client_rsa = v == "rsa";
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  const std::string dir = MakeTempDir("orchard-bench-scep");
  // A profile-signing identity (RSA, as a public TLS certificate would be).
  auto signing_ca = TestCa::Create("Bench Signing CA");
  IssueOptions so;
  so.rsa_key = true;
  so.common_name = "mdm.example.com";
  Identity signer = signing_ca->Issue(so);
  WriteFile(dir + "/sign.pem", signer.cert_pem);
  WriteFile(dir + "/sign.key", signer.key_pem);
  WriteFile(dir + "/orchard.conf", std::string("api_key = ") + kKey + "\nenroll.scep_challenge = " + kChallenge +
                                       "\nenroll.token = " + kToken + "\nenroll.public_url = https://mdm.example.com\n" +
                                       "enroll.profile_signing_cert = " + dir + "/sign.pem\nenroll.profile_signing_key = " +
                                       dir + "/sign.key\n" +
                                       "log.level = warn\nthreads = " + std::to_string(server_threads) + "\n");
  OrchardProcess proc(dir + "/data", {"--config", dir + "/orchard.conf"});
  if (!proc.Start()) {
    std::fprintf(stderr, "orchardd did not start (log: %s)\n", proc.log_path().c_str());
    return 1;
  }
  const std::string url = proc.url() + "/scep";
  std::vector<std::unique_ptr<ScepClient>> conns;
  std::vector<std::string> keys;
  for (int i = 0; i < clients; ++i) {
    conns.push_back(std::make_unique<ScepClient>(url));
    keys.push_back(NewKeyPem(client_rsa));
    if (!conns.back()->GetCaCert().ok()) return 1;
  }
  std::atomic<long> checks_failed{0};
  auto enroll = [&](int i) {
    ScepRequest r;
    r.challenge = kChallenge;
    r.key_pem = keys[i];
    r.subject = "CN=bench-device-" + std::to_string(i);
    auto res = conns[i]->Enroll(r);
    if (!res.ok() || res->pki_status != 0 || res->identity.cert_der.empty()) {
      if (checks_failed.fetch_add(1) == 0)
        std::fprintf(stderr, "first failure: %s\n", res.ok() ? res->body.c_str() : res.status().ToString().c_str());
      return false;
    }
    return true;
  };
  Measure(clients, 1.0, enroll);  // warm-up
  Window w = Measure(clients, seconds, enroll);
  std::printf("scep_enrollments_per_second %.1f (PKCSReq over HTTP, %d client threads, client key %s, orchardd "
              "threads=%d, %.1f s, %ld ok, %ld failed)\n",
              w.ok / w.seconds, clients, client_rsa ? "RSA 2048" : "EC P-256", server_threads, w.seconds, w.ok,
              w.failed);
  // Enrollment profiles: needs a push certificate for the topic.
  auto push_ca = TestCa::Create("Bench Push CA");
  IssueOptions po;
  po.uid = "com.apple.mgmt.External.bench";
  Identity push = push_ca->Issue(po);
  auto up = HttpCall("PUT", proc.url() + "/v1/pushcert", push.cert_pem + push.key_pem, {std::string("X-API-Key: ") + kKey});
  auto probe = HttpCall("GET", proc.url() + "/mdm/enroll?token=" + kToken);
  if (up.status != 200 || probe.status != 200) {
    std::printf("profile_generation_per_second n/a (pushcert HTTP %ld, /mdm/enroll HTTP %ld)\n", up.status, probe.status);
  } else {
    Window p = Measure(clients, seconds / 2, [&](int) {
      return HttpCall("GET", proc.url() + "/mdm/enroll?token=" + kToken).status == 200;
    });
    std::printf("profile_generation_per_second %.1f (GET /mdm/enroll with a one-time challenge each, %d client "
                "threads, CMS-signed with an RSA 2048 key, %.1f s, %ld ok, %ld failed)\n",
                p.ok / p.seconds, clients, p.seconds, p.ok, p.failed);
  }
  proc.Stop();
  std::filesystem::remove_all(dir);
  return w.failed == 0 ? 0 : 1;
}
