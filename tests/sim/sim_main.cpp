// orchard-sim: drives N simulated Apple devices against an MDM server.
// Phases: issue identities, enroll (Authenticate + TokenUpdate), K rounds of
// command sessions, optional CheckOut. Prints counts, rates and latencies per
// phase; exits non-zero when anything failed.
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>

#include "sim/simulator.h"
#include "support/test_pki.h"

namespace {

using orchard::sim::CertMode;
using orchard::sim::Fleet;
using orchard::sim::FleetOptions;
using orchard::sim::FleetStats;

constexpr char kUsage[] = R"(usage: orchard-sim [options]
       orchard-sim enroll --profile-url URL [options]

Simulates enrolled Apple devices talking to an MDM server. With "enroll" (or
--profile-url) each device enrolls the real way: it fetches the enrollment
profile, checks its signature, gets its identity certificate by SCEP with the
profile's challenge, then checks in at the profile's ServerURL/CheckInURL with
the profile's topic (--url, --checkin-path, --connect-path and --topic are
then taken from the profile).

  --profile-url URL      enrollment URL (e.g. https://mdm.example.com/mdm/enroll)
  --enroll-token T       enrollment token (sent as Authorization: Bearer; or env ORCHARD_ENROLL_TOKEN)
  --enroll-challenge C   one-time challenge (?challenge=)
  --machine-info         POST CMS-signed machine info (UDID, SERIAL, ...) like ADE/OTA
                         devices, signed by the device CA (--ca-cert/--ca-key or ephemeral)
  --profile-ca FILE      the profile must be signed by a certificate chaining to FILE
  --pause                after enrolling, print the devices' UDIDs and wait for Enter
                         before the command sessions (queue commands meanwhile)

  --url URL              server base URL (default http://127.0.0.1:8080)
  --checkin-path PATH    check-in path (default /mdm/checkin)
  --connect-path PATH    command path (default /mdm/connect)
  --devices N            number of devices (default 1)
  --sessions K           command-session rounds per device (default 1; 0 = none)
  --threads T            worker threads (default 4)
  --mode M               identity presentation: header|signature|both|tls|none (default both)
  --cert-header NAME     header carrying the certificate (default Client-Cert, RFC 9440)
  --escaped-pem          send the header as nginx URL-escaped PEM instead of RFC 9440
  --ca-cert FILE         device CA certificate (PEM) to issue identities from
  --ca-key FILE          its private key (PEM)
  --write-ca FILE        write the device CA certificate (PEM) to FILE
  --tls-ca FILE          CA bundle to verify an https server
  --insecure             do not verify the https server certificate
  --topic TOPIC          APNs topic (default com.apple.mgmt.External.orchard-sim)
  --notnow-rate X        fraction 0..1 of commands answered NotNow
  --error-rate X         fraction 0..1 of commands answered Error
  --macos-fraction X     fraction 0..1 of devices that are Macs (default 0)
  --seed S               seed for UDIDs/serials/inventory (default random; same seed,
                         same devices, e.g. to re-run sessions with --skip-enroll)
  --no-keepalive         open a new connection for every request
  --skip-enroll          do not Authenticate/TokenUpdate (devices already enrolled)
  --checkout             send CheckOut for every device at the end
  --timeout-ms MS        per-request timeout (default 30000)
  --help                 this text
)";

struct Args {
  FleetOptions fleet;
  int sessions = 1;
  int threads = 4;
  std::string ca_cert, ca_key, write_ca;
  bool skip_enroll = false;
  bool enroll_command = false;  // "orchard-sim enroll ..."
  bool pause = false;           // wait for a line on stdin before the sessions
  bool checkout = false;
};

[[noreturn]] void Die(const std::string& msg, int code = 2) {
  std::fprintf(stderr, "orchard-sim: %s\n", msg.c_str());
  std::exit(code);
}

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return static_cast<bool>(in) || in.eof();
}

int ParseInt(std::string_view flag, std::string_view v, int min) {
  int out = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || p != v.data() + v.size() || out < min) {
    Die(std::string(flag) + " needs an integer >= " + std::to_string(min) + ", got '" +
        std::string(v) + "'");
  }
  return out;
}

uint64_t ParseU64(std::string_view flag, std::string_view v) {
  uint64_t out = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || p != v.data() + v.size()) {
    Die(std::string(flag) + " needs an unsigned integer, got '" + std::string(v) + "'");
  }
  return out;
}

double ParseFraction(std::string_view flag, const std::string& v) {
  char* end = nullptr;
  double d = std::strtod(v.c_str(), &end);
  if (end == v.c_str() || *end != '\0' || !(d >= 0.0 && d <= 1.0)) {
    Die(std::string(flag) + " needs a number between 0 and 1, got '" + v + "'");
  }
  return d;
}

Args ParseArgs(int argc, char** argv) {
  Args a;
  a.fleet.config.base_url = "http://127.0.0.1:8080";
  a.fleet.config.record_commands = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view f = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Die(std::string(f) + " needs a value");
      return argv[++i];
    };
    if (i == 1 && f == "enroll") {
      a.enroll_command = true;
    } else if (f == "--profile-url") {
      a.fleet.profile.url = value();
    } else if (f == "--enroll-token") {
      a.fleet.profile.token = value();
    } else if (f == "--enroll-challenge") {
      a.fleet.profile.challenge = value();
    } else if (f == "--machine-info") {
      a.fleet.profile.machine_info = true;
    } else if (f == "--profile-ca") {
      std::string path = value();
      if (!ReadFile(path, &a.fleet.profile.trust_ca_pem)) Die("cannot read --profile-ca " + path, 1);
      a.fleet.profile.require_signed = true;
    } else if (f == "--pause") {
      a.pause = true;
    } else if (f == "--help" || f == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (f == "--url") {
      a.fleet.config.base_url = value();
      while (a.fleet.config.base_url.ends_with('/')) a.fleet.config.base_url.pop_back();
    } else if (f == "--checkin-path") {
      a.fleet.config.checkin_path = value();
    } else if (f == "--connect-path") {
      a.fleet.config.connect_path = value();
    } else if (f == "--devices") {
      a.fleet.devices = ParseInt(f, value(), 1);
    } else if (f == "--sessions") {
      a.sessions = ParseInt(f, value(), 0);
    } else if (f == "--threads") {
      a.threads = ParseInt(f, value(), 1);
    } else if (f == "--mode") {
      std::string m = value();
      if (!orchard::sim::ParseCertMode(m, &a.fleet.config.cert_mode)) {
        Die("--mode must be header, signature, both, tls or none; got '" + m + "'");
      }
    } else if (f == "--cert-header") {
      a.fleet.config.cert_header = value();
    } else if (f == "--escaped-pem") {
      a.fleet.config.cert_header_format = orchard::sim::CertHeaderFormat::kEscapedPem;
    } else if (f == "--ca-cert") {
      a.ca_cert = value();
    } else if (f == "--ca-key") {
      a.ca_key = value();
    } else if (f == "--write-ca") {
      a.write_ca = value();
    } else if (f == "--tls-ca") {
      a.fleet.config.tls_ca_file = value();
    } else if (f == "--insecure") {
      a.fleet.config.tls_verify = false;
    } else if (f == "--topic") {
      a.fleet.config.topic = value();
    } else if (f == "--notnow-rate") {
      a.fleet.not_now_rate = ParseFraction(f, value());
    } else if (f == "--error-rate") {
      a.fleet.error_rate = ParseFraction(f, value());
    } else if (f == "--macos-fraction") {
      a.fleet.macos_fraction = ParseFraction(f, value());
    } else if (f == "--seed") {
      a.fleet.seed = ParseU64(f, value());
    } else if (f == "--no-keepalive") {
      a.fleet.config.keep_alive = false;
    } else if (f == "--skip-enroll") {
      a.skip_enroll = true;
    } else if (f == "--checkout") {
      a.checkout = true;
    } else if (f == "--timeout-ms") {
      a.fleet.config.timeout_ms = ParseInt(f, value(), 1);
    } else {
      Die("unknown option '" + std::string(f) + "' (see --help)");
    }
  }
  if (a.ca_cert.empty() != a.ca_key.empty()) Die("--ca-cert and --ca-key go together");
  if (a.enroll_command && a.fleet.profile.url.empty()) Die("enroll needs --profile-url");
  if (!a.fleet.profile.url.empty()) {
    if (a.fleet.profile.token.empty())
      if (const char* env = std::getenv("ORCHARD_ENROLL_TOKEN"); env && *env) a.fleet.profile.token = env;
    a.fleet.profile.tls_ca_file = a.fleet.config.tls_ca_file;
    a.fleet.profile.tls_verify = a.fleet.config.tls_verify;
    a.fleet.profile.timeout_ms = a.fleet.config.timeout_ms;
  }
  if (a.fleet.not_now_rate + a.fleet.error_rate > 1.0) {
    Die("--notnow-rate plus --error-rate must not exceed 1");
  }
  if (a.fleet.config.cert_mode == CertMode::kTls &&
      !a.fleet.config.base_url.starts_with("https://")) {
    Die("--mode tls needs an https:// --url");
  }
  if (!a.fleet.config.base_url.starts_with("http://") &&
      !a.fleet.config.base_url.starts_with("https://")) {
    Die("--url must start with http:// or https://, got '" + a.fleet.config.base_url + "'");
  }
  return a;
}

void PrintPhase(const char* name, const FleetStats& s, bool sessions) {
  const double secs = s.seconds > 0 ? s.seconds : 1e-9;
  const int ops = s.ok + s.failed;
  std::printf("%-9s ok=%d failed=%d time=%.3fs rate=%.1f/s", name, s.ok, s.failed, s.seconds,
              ops / secs);
  if (sessions) {
    std::printf(
        " requests=%d (%.1f/s) commands=%d acknowledged=%d notnow=%d error=%d"
        " format_error=%d",
        s.sessions.requests, s.sessions.requests / secs, s.sessions.commands,
        s.sessions.acknowledged, s.sessions.not_now, s.sessions.errors, s.sessions.format_errors);
    if (s.sessions.not_now_redelivered > 0) {
      std::printf(" notnow_redelivered_same_session=%d", s.sessions.not_now_redelivered);
    }
  }
  std::printf(" latency_ms p50=%.2f p99=%.2f max=%.2f\n", s.p50_ms, s.p99_ms, s.max_ms);
  for (const std::string& e : s.first_errors) std::fprintf(stderr, "  error: %s\n", e.c_str());
  std::fflush(stdout);
}

int Run(const Args& args) {
  std::unique_ptr<orchard::testing::TestCa> ca;
  if (!args.ca_cert.empty()) {
    std::string cert, key;
    if (!ReadFile(args.ca_cert, &cert)) Die("cannot read --ca-cert " + args.ca_cert, 1);
    if (!ReadFile(args.ca_key, &key)) Die("cannot read --ca-key " + args.ca_key, 1);
    ca = orchard::testing::TestCa::Load(cert, key);
    if (!ca) Die("cannot load the device CA from " + args.ca_cert + " / " + args.ca_key, 1);
  } else {
    ca = orchard::testing::TestCa::Create("Orchard Simulator Device CA");
    if (!ca) Die("cannot create an ephemeral device CA", 1);
    if (args.fleet.config.cert_mode != CertMode::kNone && args.fleet.profile.url.empty()) {
      std::fprintf(stderr,
                   "orchard-sim: warning: no --ca-cert/--ca-key given; devices use an ephemeral "
                   "CA that the server must trust%s\n",
                   args.write_ca.empty() ? " (use --write-ca FILE to export it)" : "");
    }
  }
  if (!args.write_ca.empty() && !ca->WriteCertPem(args.write_ca)) {
    Die("cannot write the device CA to " + args.write_ca, 1);
  }

  auto start = std::chrono::steady_clock::now();
  auto fleet = Fleet::Create(args.fleet, std::move(ca));
  if (!fleet.ok()) Die("creating devices: " + fleet.status().ToString(), 1);
  double create_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("devices   created=%zu time=%.3fs seed=%llu url=%s%s\n", (*fleet)->size(), create_s,
              static_cast<unsigned long long>((*fleet)->seed()),
              (*fleet)->size() ? (*fleet)->device(0).config().base_url.c_str() : args.fleet.config.base_url.c_str(),
              args.fleet.profile.url.empty() ? "" : " identities=scep-via-profile");

  bool failed = false;
  if (!args.skip_enroll) {
    FleetStats s = (*fleet)->Enroll(args.threads);
    PrintPhase("enroll", s, false);
    failed |= s.failed > 0;
    if (s.ok == 0) {
      std::fprintf(stderr, "orchard-sim: no device could enroll; stopping\n");
      return 1;
    }
  }
  if (args.pause) {
    for (size_t i = 0; i < (*fleet)->size(); ++i) std::printf("udid      %s\n", (*fleet)->device(i).udid().c_str());
    std::printf("paused    press Enter to run the command sessions\n");
    std::fflush(stdout);
    std::getchar();
  }
  if (args.sessions > 0) {
    FleetStats s = (*fleet)->RunSessions(args.threads, args.sessions);
    PrintPhase("sessions", s, true);
    failed |= s.failed > 0;
  }
  if (args.checkout) {
    FleetStats s =
        (*fleet)->ForEach(args.threads, [](orchard::sim::Device& d) { return d.CheckOut(); });
    PrintPhase("checkout", s, false);
    failed |= s.failed > 0;
  }
  if (failed) {
    std::fprintf(stderr, "orchard-sim: some requests failed (see errors above)\n");
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args = ParseArgs(argc, argv);

  try {
    return Run(args);
  } catch (const std::exception& e) {  // test_pki reports PKI failures by throwing
    Die(std::string("fatal: ") + e.what(), 1);
  }
}
