#include "bench/bench_common.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "support/test_pki.h"
#include "util/encoding.h"

namespace orchard::bench {
namespace {

constexpr char kMagic[] = "ORCHID1\n";

std::string ReadAll(const std::string& path, bool* ok) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    *ok = false;
    return "";
  }
  std::stringstream ss;
  ss << f.rdbuf();
  *ok = true;
  return ss.str();
}

bool WriteAtomically(const std::string& path, const std::string& data) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return false;
    f << data;
    if (!f) return false;
  }
  return rename(tmp.c_str(), path.c_str()) == 0;
}

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

bool GetU32(std::string_view* in, uint32_t* v) {
  if (in->size() < 4) return false;
  *v = 0;
  for (int i = 0; i < 4; ++i) *v |= static_cast<uint32_t>(static_cast<unsigned char>((*in)[i])) << (8 * i);
  in->remove_prefix(4);
  return true;
}

Status ParseIdentities(const std::string& data, std::vector<std::string>* out) {
  std::string_view in = data;
  if (in.substr(0, sizeof kMagic - 1) != kMagic) return Status::InvalidArgument("bad identities.bin magic");
  in.remove_prefix(sizeof kMagic - 1);
  uint32_t n = 0;
  if (!GetU32(&in, &n)) return Status::InvalidArgument("truncated identities.bin");
  out->clear();
  out->reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t len = 0;
    if (!GetU32(&in, &len) || in.size() < len) return Status::InvalidArgument("truncated identities.bin");
    out->emplace_back(in.substr(0, len));
    in.remove_prefix(len);
  }
  return Status::Ok();
}

}  // namespace

std::string DeviceUdid(uint64_t index) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "0BE7C4A0-0000-4000-8000-%012" PRIX64, index);
  return buf;
}

std::string DeviceSerial(uint64_t index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "B%011" PRIu64, static_cast<uint64_t>(index % 100000000000ULL));
  return buf;
}

store::Enrollment BenchEnrollment(uint64_t i, int64_t now, const std::string* cert_der) {
  store::Enrollment e;
  e.id = DeviceUdid(i);
  e.type = store::EnrollmentType::kDevice;
  e.udid = e.id;
  e.topic = "com.apple.mgmt.External.orchard-bench";
  e.serial = DeviceSerial(i);
  e.model = "iPhone15,2";
  e.model_name = "iPhone";
  e.product_name = "iPhone15,2";
  e.os_version = i % 3 == 0 ? "17.5.1" : "18.1";
  e.build_version = i % 3 == 0 ? "21F90" : "22B83";
  e.device_name = "Bench iPhone " + std::to_string(i);
  e.state = store::EnrollmentState::kEnrolled;
  e.generation = 1;
  e.authenticated_ms = now;
  e.enrolled_ms = now;
  e.last_seen_ms = now;
  e.token_updates = 1;
  e.push_token = Sha256(e.id);  // 32 bytes, like a real APNs token
  e.push_magic = "B7C4A000-0000-4000-8000-" + e.id.substr(24);
  if (cert_der) e.cert_sha256 = Sha256Hex(*cert_der);
  return e;
}

Result<IdentityCache> IdentityCache::Load(const std::string& dir, size_t count) {
  IdentityCache c;
  c.dir = dir;
  c.ca_pem_path = dir + "/ca.pem";
  bool ok = false;
  std::string data = ReadAll(dir + "/identities.bin", &ok);
  if (!ok) return Status::NotFound("no identity cache in " + dir + " (run bench_seed identities)");
  ORCHARD_RETURN_IF_ERROR(ParseIdentities(data, &c.ders));
  if (c.ders.size() < count)
    return Status::InvalidArgument("identity cache " + dir + " holds " + std::to_string(c.ders.size()) +
                                   " identities, " + std::to_string(count) + " needed");
  return c;
}

Result<IdentityCache> IdentityCache::Ensure(const std::string& dir, size_t count, int threads) {
  mkdir(dir.c_str(), 0755);
  IdentityCache c;
  c.dir = dir;
  c.ca_pem_path = dir + "/ca.pem";
  bool have_cert = false, have_key = false;
  std::string ca_cert = ReadAll(dir + "/ca.pem", &have_cert);
  std::string ca_key = ReadAll(dir + "/ca-key.pem", &have_key);
  std::unique_ptr<testing::TestCa> ca;
  try {
    if (have_cert && have_key) {
      ca = testing::TestCa::Load(ca_cert, ca_key);
      bool ok = false;
      std::string data = ReadAll(dir + "/identities.bin", &ok);
      if (ok) ORCHARD_RETURN_IF_ERROR(ParseIdentities(data, &c.ders));
    } else {
      ca = testing::TestCa::Create("Orchard Bench Device CA");
      if (!WriteAtomically(dir + "/ca-key.pem", ca->key_pem()) ||
          !WriteAtomically(dir + "/ca.pem", ca->cert_pem()))
        return Status::Io("cannot write the CA into " + dir);
    }
  } catch (const std::exception& e) {
    return Status::Internal(e.what());
  }
  if (!ca) return Status::Internal("cannot create or load the bench CA in " + dir);
  if (c.ders.size() >= count) return c;

  const size_t have = c.ders.size();
  std::fprintf(stderr, "bench: issuing %zu device identities into %s (%d threads)...\n", count - have,
               dir.c_str(), threads);
  const uint64_t start = NowNs();
  c.ders.resize(count);
  std::atomic<size_t> next{have};
  std::atomic<bool> failed{false};
  std::vector<std::thread> pool;
  for (int t = 0; t < std::max(1, threads); ++t) {
    pool.emplace_back([&] {
      try {
        for (size_t i = next++; i < count; i = next++) {
          testing::IssueOptions o;
          o.common_name = "bench-" + DeviceUdid(i);
          c.ders[i] = ca->Issue(o).cert_der;
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "bench: issuing failed: %s\n", e.what());
        failed = true;
      }
    });
  }
  for (auto& t : pool) t.join();
  if (failed) return Status::Internal("issuing identities failed");
  std::string out(kMagic);
  PutU32(&out, static_cast<uint32_t>(c.ders.size()));
  for (const auto& d : c.ders) {
    PutU32(&out, static_cast<uint32_t>(d.size()));
    out += d;
  }
  if (!WriteAtomically(dir + "/identities.bin", out)) return Status::Io("cannot write identities.bin");
  std::fprintf(stderr, "bench: issued %zu identities in %.1f s\n", count - have, SecondsSince(start));
  return c;
}

std::string ClientCertValue(std::string_view der) {
  std::string out(1, ':');
  out += Base64Encode(der);
  out.push_back(':');
  return out;
}

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

double SecondsSince(uint64_t start_ns) { return static_cast<double>(NowNs() - start_ns) / 1e9; }

double ProcessCpuSeconds(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  bool ok = false;
  std::string s = ReadAll(path, &ok);
  if (!ok) return -1;
  // The command name may contain spaces: fields are counted after the last ')'.
  size_t p = s.rfind(')');
  if (p == std::string::npos) return -1;
  std::istringstream in(s.substr(p + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  // Field 3 is the state; utime and stime are fields 14 and 15.
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

long ProcessRssKb(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/status", static_cast<int>(pid));
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  return -1;
}

double SelfCpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

double SystemBusySeconds() {
  std::ifstream f("/proc/stat");
  std::string cpu;
  unsigned long long v[8] = {};
  if (!(f >> cpu) || cpu != "cpu") return -1;
  for (auto& x : v) f >> x;
  // user nice system idle iowait irq softirq steal
  const unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
  return static_cast<double>(busy) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

uint64_t RaiseFileLimit(uint64_t needed) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < needed) {
    rlimit nrl = rl;
    nrl.rlim_cur = (rl.rlim_max != RLIM_INFINITY && needed > rl.rlim_max) ? rl.rlim_max : needed;
    if (setrlimit(RLIMIT_NOFILE, &nrl) == 0) rl = nrl;
  }
  return rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : static_cast<uint64_t>(rl.rlim_cur);
}

LatencySummary Summarize(std::vector<uint32_t>* us) {
  LatencySummary s;
  if (us->empty()) return s;
  std::sort(us->begin(), us->end());
  s.count = us->size();
  auto at = [&](double q) {
    size_t i = static_cast<size_t>(q * static_cast<double>(us->size() - 1) + 0.5);
    return static_cast<double>((*us)[std::min(i, us->size() - 1)]) / 1000.0;
  };
  s.p50_ms = at(0.50);
  s.p90_ms = at(0.90);
  s.p99_ms = at(0.99);
  s.max_ms = static_cast<double>(us->back()) / 1000.0;
  double sum = 0;
  for (uint32_t v : *us) sum += v;
  s.mean_ms = sum / static_cast<double>(us->size()) / 1000.0;
  return s;
}

Flags::Flags(int argc, char** argv, std::vector<std::string> known) {
  std::map<std::string, bool> is_bool;
  for (auto& k : known) {
    bool b = !k.empty() && k.back() == '!';
    if (b) k.pop_back();
    is_bool[k] = b;
  }
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0) {
      positional_.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    auto it = is_bool.find(name);
    if (it == is_bool.end()) {
      error_ = "unknown flag --" + name;
      return;
    }
    if (it->second) {
      values_[name] = has_value ? value : "1";
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) {
        error_ = "--" + name + " needs a value";
        return;
      }
      value = argv[++i];
    }
    values_[name] = value;
  }
}

std::string Flags::Get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

int64_t Flags::GetInt(const std::string& name, int64_t fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : std::strtoll(it->second.c_str(), nullptr, 10);
}

double Flags::GetDouble(const std::string& name, double fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : std::strtod(it->second.c_str(), nullptr);
}

void AppendLine(const std::string& path, const std::string& line) {
  if (path.empty()) return;
  std::ofstream f(path, std::ios::app);
  f << line << "\n";
}

}  // namespace orchard::bench
