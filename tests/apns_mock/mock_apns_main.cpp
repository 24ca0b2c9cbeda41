// mock-apns: the mock APNs provider API as a stand-alone server, for manual
// tests (nghttp --cert/--key) and load baselines (h2load, with --no-client-cert
// because h2load cannot present a client certificate). Without --cert/--key it
// generates a throw-away CA, server certificate and push certificate and writes
// them to --pki-dir (or a new directory under /tmp). Runs until SIGINT/SIGTERM.
#include <signal.h>
#include <stdlib.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "apns_mock/mock_apns.h"
#include "support/test_pki.h"

namespace {

using orchard::testing::MockApns;
using orchard::testing::MockApnsOptions;

constexpr char kUsage[] =
    "usage: mock-apns [options]\n"
    "  --host ADDR            listen address (default 127.0.0.1)\n"
    "  --port N               listen port (default 0: ephemeral)\n"
    "  --cert FILE --key FILE server certificate and key, PEM (default: generated)\n"
    "  --client-ca FILE       CA(s) for push certificates, PEM (default: the generated CA)\n"
    "  --no-client-cert       accept clients without certificates; no topic check\n"
    "  --topic UID            topic (subject UID) of the generated push certificate\n"
    "  --pki-dir DIR          where generated PEM files go (default: mkdtemp under /tmp)\n"
    "  --max-streams N        SETTINGS_MAX_CONCURRENT_STREAMS (default 1000)\n"
    "  --unregistered TOKEN   answer 410 Unregistered for TOKEN (repeatable)\n"
    "  --fail-rate P[:STATUS[:REASON]]  fail a fraction P of requests (default 503 "
    "ServiceUnavailable)\n"
    "  --delay-ms N           answer every request N ms late\n"
    "  --record               keep every request in memory (off: long runs stay small)\n";

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return static_cast<bool>(in) || in.eof();
}

bool WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  out.close();
  return static_cast<bool>(out);
}

[[noreturn]] void Usage(const std::string& error) {
  std::fprintf(stderr, "mock-apns: %s\n%s", error.c_str(), kUsage);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  MockApnsOptions options;
  options.record_requests = false;
  std::string cert_file, key_file, ca_file, pki_dir;
  std::string topic = "com.apple.mgmt.External.00000000-0000-0000-0000-000000000000";
  std::vector<std::string> unregistered;
  double fail_rate = 0;
  int fail_status = 503;
  std::string fail_reason = "ServiceUnavailable";
  int64_t delay_ms = 0;

  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(arg + " needs a value");
      return argv[++i];
    };
    try {
      if (arg == "--help" || arg == "-h") {
        std::fputs(kUsage, stdout);
        return 0;
      } else if (arg == "--host") {
        options.host = value();
      } else if (arg == "--port") {
        int port = std::stoi(value());
        if (port < 0 || port > 65535) Usage("--port out of range");
        options.port = static_cast<uint16_t>(port);
      } else if (arg == "--cert") {
        cert_file = value();
      } else if (arg == "--key") {
        key_file = value();
      } else if (arg == "--client-ca") {
        ca_file = value();
      } else if (arg == "--no-client-cert") {
        options.require_client_cert = false;
      } else if (arg == "--topic") {
        topic = value();
      } else if (arg == "--pki-dir") {
        pki_dir = value();
      } else if (arg == "--max-streams") {
        options.max_concurrent_streams = static_cast<uint32_t>(std::stoul(value()));
      } else if (arg == "--unregistered") {
        unregistered.push_back(value());
      } else if (arg == "--fail-rate") {
        std::string v = value();
        size_t c1 = v.find(':');
        fail_rate = std::stod(v.substr(0, c1));
        if (c1 != std::string::npos) {
          size_t c2 = v.find(':', c1 + 1);
          fail_status = std::stoi(
              v.substr(c1 + 1, c2 == std::string::npos ? std::string::npos : c2 - c1 - 1));
          fail_reason = c2 == std::string::npos ? "Failure" : v.substr(c2 + 1);
        }
      } else if (arg == "--delay-ms") {
        delay_ms = std::stoll(value());
      } else if (arg == "--record") {
        options.record_requests = true;
      } else {
        Usage("unknown option " + arg);
      }
    } catch (const std::exception&) {
      Usage("bad value for " + arg);
    }
  }
  if (cert_file.empty() != key_file.empty()) Usage("--cert and --key go together");

  // Load or generate the PKI.
  std::unique_ptr<orchard::testing::TestCa> ca;
  auto pki_path = [&](const std::string& name) {
    if (pki_dir.empty()) {
      char tmpl[] = "/tmp/mock-apns.XXXXXX";
      if (!mkdtemp(tmpl)) {
        std::perror("mkdtemp");
        std::exit(1);
      }
      pki_dir = tmpl;
    }
    return pki_dir + "/" + name;
  };
  if (!cert_file.empty()) {
    if (!ReadFile(cert_file, &options.cert_pem) || !ReadFile(key_file, &options.key_pem)) {
      std::fprintf(stderr, "mock-apns: cannot read %s / %s\n", cert_file.c_str(), key_file.c_str());
      return 1;
    }
  } else {
    ca = orchard::testing::TestCa::Create("Mock APNs Test CA");
    orchard::testing::IssueOptions server;
    server.common_name = "localhost";
    server.server_auth_eku = true;
    server.dns_name = "localhost,127.0.0.1";
    auto id = ca->Issue(server);
    options.cert_pem = id.cert_pem;
    options.key_pem = id.key_pem;
    std::string path = pki_path("ca.pem");
    if (!WriteFile(path, ca->cert_pem())) return std::perror(path.c_str()), 1;
    std::printf("server CA (for --cacert / ca_file): %s\n", path.c_str());
  }
  if (options.require_client_cert) {
    if (!ca_file.empty()) {
      if (!ReadFile(ca_file, &options.client_ca_pem)) {
        std::fprintf(stderr, "mock-apns: cannot read %s\n", ca_file.c_str());
        return 1;
      }
    } else {
      if (!ca) ca = orchard::testing::TestCa::Create("Mock APNs Test CA");
      options.client_ca_pem = ca->cert_pem();
      orchard::testing::IssueOptions push;
      push.common_name = "APSP:mock-apns";
      push.uid = topic;
      auto id = ca->Issue(push);
      std::string cert = pki_path("push.pem"), key = pki_path("push.key");
      if (!WriteFile(cert, id.cert_pem) || !WriteFile(key, id.key_pem))
        return std::perror(cert.c_str()), 1;
      std::printf("push certificate (topic %s): %s %s\n", topic.c_str(), cert.c_str(), key.c_str());
    }
  }

  // Threads started from here on inherit the blocked signals; main waits for them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  auto mock = MockApns::Start(options);
  if (!mock) return 1;
  for (const auto& token : unregistered) mock->SetUnregistered(token, 0);
  if (fail_rate > 0) mock->SetFailRate(fail_rate, fail_status, fail_reason);
  if (delay_ms > 0) mock->SetDelayMs(delay_ms);
  std::printf("listening on %s:%u\n", options.host.c_str(), static_cast<unsigned>(mock->port()));
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop, &sig);
  std::printf("answered %llu requests; %llu connections, %llu failed handshakes\n",
              static_cast<unsigned long long>(mock->requests_answered()),
              static_cast<unsigned long long>(mock->connections_accepted()),
              static_cast<unsigned long long>(mock->handshake_failures()));
  return 0;
}
