// Shared pieces of bench_ddm (tests/bench/ddm_bench.cpp, ddm_bench_http.cpp):
// the DDM fixtures the benchmark writes (declarations, sets, assignments), the
// summary rows scripts/bench-ddm prints, and the subcommands.
// Benchmarks only; not used by orchardd. Not thread-safe unless stated.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "store/store.h"
#include "util/status.h"

namespace orchard::bench::ddm {

// ---- fixtures ----

// A declaration upload (JSON) of the manifest fixtures: activations are
// com.apple.activation.simple listing configurations; configurations are
// com.apple.configuration.management.test (an Echo of echo_bytes) or, every
// passcode_every-th, com.apple.configuration.passcode.settings.
std::string ActivationJson(const std::string& id, const std::vector<std::string>& configurations);
std::string TestConfigurationJson(const std::string& id, size_t echo_bytes, const std::string& salt = "");
std::string PasscodeJson(const std::string& id, int min_length);

// Writes declarations (already-parsed uploads) straight through
// ddm::DeclarationStore into db, in batches, with owner "admin"; then adds
// each (set, identifier) pair. No enrollment may hold these sets yet (no token
// changes are expected; InvalidArgument otherwise).
Status PutDeclarations(store::Store* db, const std::vector<std::string>& uploads);
Status AddToSets(store::Store* db, const std::vector<std::pair<std::string, std::string>>& members);

// Assigns set_of(i) to bench enrollment i for i in [first, first + count),
// through DeclarationStore::Assign (token records computed as orchardd does),
// `per_batch` enrollments per RocksDB write. Each call handles one set per
// enrollment (Assign reads the committed assignments: one pass per set).
Status AssignPass(store::Store* db, uint64_t first, uint64_t count, const std::function<std::string(uint64_t)>& set_of,
                  size_t per_batch = 2000);

// The set-list design of the fan-out and start-up fixtures: every enrollment
// holds "bench.common" and two of 20 sets "bench.sNN"; enrollment i gets the
// (i % lists)-th pair, so there are `lists` distinct set lists (at most 190).
// common: 1 activation + 4 configurations; each sNN: 1 activation + 2.
struct ListDesign {
  size_t lists = 100;
  std::vector<std::pair<int, int>> pairs;  // list -> (a, b)
  static Result<ListDesign> Make(size_t lists);
  std::string SetOf(uint64_t enrollment, int pass) const;  // pass 0: common, 1: sA, 2: sB
  static std::string CommonConfig(int k);  // identifier of common configuration k (0..3)
};
// Declarations + sets of the design (into an empty DDM column family), then
// the three assignment passes over enrollments [0, n). Prints timings to stderr.
Status SeedDesign(store::Store* db, const ListDesign& design, uint64_t n, double* assign_seconds);

// ---- output ----

// One row of the final summary (TSV: figure, value, target, result, baseline,
// other: CPU seconds other processes used meanwhile), appended to path
// (scripts/bench-ddm prints them as a table).
void SummaryRow(const std::string& path, const std::string& figure, const std::string& value,
                const std::string& target, const std::string& result, const std::string& baseline,
                const std::string& other);
// CPU seconds the rest of the machine used since Interference() was made
// (machine busy time minus this process's own CPU).
class Interference {
 public:
  Interference() : sys0_(SystemBusySeconds()), self0_(SelfCpuSeconds()) {}
  double OtherSeconds() const;
  std::string Text() const;  // "1.23 s"

 private:
  double sys0_, self0_;
};
std::string Fmt(const char* format, ...) __attribute__((format(printf, 1, 2)));
const char* PassFail(bool met);

// ---- subcommands ----
int SeedHttp(const Flags& f);   // the orchardd data dir of the HTTP part (50-declaration manifest)
int RunHttp(const Flags& f);    // HTTP rates against a running orchardd
int SeedSets(const Flags& f);   // the start-up fixture into an orchardd data dir
int TokenCost(const Flags& f);  // ManifestOf over 10,000 declarations, cold and second call
int FanOut(const Flags& f);     // one edit -> 100k tokens, commands and pushes
int Policy(const Flags& f);     // policies/min-os-ddm.lua on ddm.status.changed events

}  // namespace orchard::bench::ddm
