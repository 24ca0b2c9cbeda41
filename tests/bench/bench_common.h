// Shared helpers for the benchmark tools (bench_load, bench_seed,
// bench_roundtrip): deterministic device naming, the on-disk identity cache,
// process CPU/RSS probes, latency summaries and a tiny flag parser.
// Benchmarks only; not used by orchardd. Thread-safety: free functions are
// thread-safe; IdentityCache is built once and then read-only.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "store/records.h"
#include "util/status.h"

namespace orchard::bench {

// UDID of bench device `index` ("0BE7C4A0-0000-4000-8000-<12 hex digits>").
// bench_seed writes enrollments under these ids and bench_load speaks as them.
std::string DeviceUdid(uint64_t index);
// 12-character serial number of bench device `index`.
std::string DeviceSerial(uint64_t index);
// The enrolled device enrollment of bench device `index` (push token, topic,
// one OS version in three 17.5.1, the others 18.1); bound to the certificate
// when cert_der is given.
store::Enrollment BenchEnrollment(uint64_t index, int64_t now_ms, const std::string* cert_der);

// Device identity certificates cached on disk so that 10,000 EC certificates
// are issued once per work directory, not per run. Layout of `dir`:
//   ca.pem, ca-key.pem   the device CA (pass ca.pem to orchardd --device-ca)
//   identities.bin       "ORCHID1\n", u32 count, then per identity u32 length + DER
// Only certificates are kept: the load generator presents them in the
// Client-Cert header and never signs.
struct IdentityCache {
  std::string dir;
  std::string ca_pem_path;        // dir + "/ca.pem"
  std::vector<std::string> ders;  // leaf certificates, DER; index = device index

  // Loads the cache, issuing (on `threads` threads) and saving whatever is
  // missing so that at least `count` identities exist. Prints progress to stderr.
  static Result<IdentityCache> Ensure(const std::string& dir, size_t count, int threads);
  // Loads an existing cache (error if it holds fewer than `count`).
  static Result<IdentityCache> Load(const std::string& dir, size_t count);
};

// RFC 9440 Client-Cert value for a DER certificate: ":<base64>:".
std::string ClientCertValue(std::string_view der);

// Monotonic clock.
uint64_t NowNs();
double SecondsSince(uint64_t start_ns);

// utime + stime of a process (all threads), seconds; < 0 when unreadable.
double ProcessCpuSeconds(pid_t pid);
// VmRSS of a process in KiB; < 0 when unreadable.
long ProcessRssKb(pid_t pid);
// This process's user + system CPU seconds.
double SelfCpuSeconds();
// Busy CPU seconds of the whole machine (all CPUs, /proc/stat: everything but
// idle and iowait). Subtracting the server's and the load generator's own CPU
// over a window gives what other processes used meanwhile (interference).
double SystemBusySeconds();

// Raises RLIMIT_NOFILE's soft limit to at least `needed` (up to the hard limit);
// returns the resulting soft limit.
uint64_t RaiseFileLimit(uint64_t needed);

struct LatencySummary {
  uint64_t count = 0;
  double p50_ms = 0, p90_ms = 0, p99_ms = 0, max_ms = 0, mean_ms = 0;
};
// Sorts `us` (microseconds) in place and summarizes it.
LatencySummary Summarize(std::vector<uint32_t>* us);

// "--name value" / "--name=value" / "--flag" parser. Unknown flags are errors.
class Flags {
 public:
  // known: flag names without dashes; a trailing '!' marks a boolean flag.
  Flags(int argc, char** argv, std::vector<std::string> known);
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  int64_t GetInt(const std::string& name, int64_t fallback) const;
  double GetDouble(const std::string& name, double fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
  std::string error_;
};

// Appends `line` to `path` (JSON-lines result files read by scripts/bench).
void AppendLine(const std::string& path, const std::string& line);

}  // namespace orchard::bench
