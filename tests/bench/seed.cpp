// bench_seed: benchmark fixtures.
//
//   bench_seed identities --dir DIR --count N [--threads 2]
//       Ensures DIR holds a device CA (ca.pem, ca-key.pem) and at least N device
//       identity certificates (identities.bin); issues only what is missing.
//
//   bench_seed enrollments --data-dir DIR --count N [--identities DIR] [--batch 10000]
//       Writes N enrolled device enrollments (state enrolled, push token and
//       PushMagic, inventory; with --identities also the certificate binding of
//       device i's identity) straight into orchardd's RocksDB at DIR/db, through
//       store::Store and domain::Enrollments so that the records, the serial
//       index and the bindings have exactly the server's format. Device i is
//       bench::DeviceUdid(i). orchardd must not be running on DIR. No events are
//       emitted (these are fixtures, not check-ins). The per-state counters are
//       added once per batch instead of once per record.
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "bench/bench_common.h"
#include "domain/enrollments.h"
#include "store/records.h"
#include "store/store.h"
#include "util/encoding.h"

using namespace orchard;
using namespace orchard::bench;

namespace {


int SeedEnrollments(const Flags& f) {
  const std::string data_dir = f.Get("data-dir");
  const uint64_t count = static_cast<uint64_t>(std::max<int64_t>(0, f.GetInt("count", 0)));
  const uint64_t first = static_cast<uint64_t>(std::max<int64_t>(0, f.GetInt("first", 0)));
  const uint64_t batch_size = static_cast<uint64_t>(std::max<int64_t>(1, f.GetInt("batch", 10000)));
  if (data_dir.empty() || count == 0) {
    std::fputs("bench_seed enrollments: --data-dir DIR and --count N are required\n", stderr);
    return 2;
  }
  std::vector<std::string> ders;
  if (f.Has("identities")) {
    auto cache = IdentityCache::Load(f.Get("identities"), first + count);
    if (!cache.ok()) {
      std::fprintf(stderr, "bench_seed: %s\n", cache.status().message().c_str());
      return 1;
    }
    ders = std::move(cache->ders);
  }
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) {
    std::fprintf(stderr, "bench_seed: %s: %s\n", data_dir.c_str(), ec.message().c_str());
    return 1;
  }
  auto opened = store::Store::Open({.path = data_dir + "/db"});
  if (!opened.ok()) {
    std::fprintf(stderr, "bench_seed: %s\n", opened.status().message().c_str());
    return 1;
  }
  auto& st = *opened.value();
  domain::Enrollments enrollments(&st);

  const uint64_t start = NowNs();
  const int64_t now = NowMillis();
  store::Batch batch, scratch;
  std::map<std::string, int64_t> counters;
  auto flush = [&]() -> bool {
    for (const auto& [name, delta] : counters) batch.AddCounter(name, delta);
    counters.clear();
    Status s = st.Write(batch);
    batch.Clear();
    if (!s.ok()) std::fprintf(stderr, "bench_seed: write failed: %s\n", s.message().c_str());
    return s.ok();
  };
  for (uint64_t i = first; i < first + count; ++i) {
    const std::string* der = ders.empty() ? nullptr : &ders[i];
    store::Enrollment e = BenchEnrollment(i, now, der);
    // Enrollments::Put writes the record and the serial index, plus one counter
    // merge per record; the merges are summed here and written once per batch.
    scratch.Clear();
    enrollments.Put(scratch, std::nullopt, e);
    if (der) enrollments.Bind(scratch, e.cert_sha256, e.id);
    for (const auto& op : scratch.ops()) {
      switch (op.kind) {
        case store::Batch::Op::kPut: batch.Put(op.cf, op.key, op.value); break;
        case store::Batch::Op::kDelete: batch.Delete(op.cf, op.key); break;
        case store::Batch::Op::kDeleteRange: batch.DeleteRange(op.cf, op.key, op.value); break;
        case store::Batch::Op::kMerge: {
          int64_t delta = 0;
          if (op.value.size() == 8) std::memcpy(&delta, op.value.data(), 8);
          counters[op.key] += delta;
          break;
        }
      }
    }
    if ((i - first + 1) % batch_size == 0 && !flush()) return 1;
  }
  if (!batch.empty() || !counters.empty()) {
    if (!flush()) return 1;
  }
  const double secs = SecondsSince(start);
  auto n = enrollments.CountInState(store::EnrollmentState::kEnrolled);
  std::printf("bench_seed: wrote %" PRIu64 " enrollments%s into %s/db in %.2f s (%.0f/s); enrolled counter=%" PRId64
              "\n",
              count, ders.empty() ? "" : " with certificate bindings", data_dir.c_str(), secs,
              static_cast<double>(count) / secs, n.ok() ? *n : -1);
  return 0;
}

int SeedIdentities(const Flags& f) {
  const std::string dir = f.Get("dir");
  const int64_t count = f.GetInt("count", 0);
  if (dir.empty() || count <= 0) {
    std::fputs("bench_seed identities: --dir DIR and --count N are required\n", stderr);
    return 2;
  }
  auto c = IdentityCache::Ensure(dir, static_cast<size_t>(count), static_cast<int>(f.GetInt("threads", 2)));
  if (!c.ok()) {
    std::fprintf(stderr, "bench_seed: %s\n", c.status().message().c_str());
    return 1;
  }
  std::printf("bench_seed: %zu identities in %s (CA %s)\n", c->ders.size(), dir.c_str(), c->ca_pem_path.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f(argc, argv, {"dir", "count", "threads", "data-dir", "identities", "batch", "first", "help!"});
  const std::string mode = f.positional().empty() ? "" : f.positional()[0];
  if (!f.ok() || f.Has("help") || (mode != "identities" && mode != "enrollments")) {
    if (!f.ok()) std::fprintf(stderr, "bench_seed: %s\n", f.error().c_str());
    std::fputs(
        "usage: bench_seed identities --dir DIR --count N [--threads 2]\n"
        "       bench_seed enrollments --data-dir DIR --count N [--identities DIR] [--batch 10000] [--first 0]\n",
        stderr);
    return 2;
  }
  return mode == "identities" ? SeedIdentities(f) : SeedEnrollments(f);
}
