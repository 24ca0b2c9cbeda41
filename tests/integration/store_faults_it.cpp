// Damaged storage under the real orchardd: a damaged write-ahead log stops the
// start with a message that says what to do, point-in-time recovery is an
// explicit choice, and a damaged table file is logged, counted and reported
// by /healthz and /metrics instead of failing silently.
#include <catch2/catch.hpp>

#include <rocksdb/db.h>

#include <filesystem>
#include <fstream>

#include "plist/plist.h"
#include "support/orchardd_process.h"

using namespace orchard;
using namespace orchard::testing;
using plist::Value;
namespace fs = std::filesystem;

namespace {

constexpr const char* kKey = "store-faults-it-api-key-0001";

struct Node {
  std::string dir = MakeTempDir("orchard-store-it");
  std::string data() const { return dir + "/data"; }
  std::string db() const { return data() + "/db"; }
  std::vector<std::string> args = {"--insecure-dev", "--api-key", kKey};
  std::unique_ptr<OrchardProcess> proc;

  ~Node() {
    proc.reset();
    fs::remove_all(dir);
    fs::remove(data() + ".log");
  }
  bool Start(std::vector<std::string> extra = {}) {
    std::vector<std::string> a = args;
    a.insert(a.end(), extra.begin(), extra.end());
    proc = std::make_unique<OrchardProcess>(data(), a);
    return proc->Start();
  }
  std::string Log() const { return ReadFile(data() + ".log"); }
  HttpResult Device(const std::string& body) {
    return HttpCall("PUT", proc->url() + "/mdm", body,
                    {"Content-Type: application/x-apple-aspen-mdm-checkin"});
  }
  HttpResult Api(const std::string& path) {
    return HttpCall("GET", proc->url() + path, "", {std::string("X-API-Key: ") + kKey});
  }
  void Enroll(const std::string& udid) {
    Value v;
    v.Set("MessageType", Value::String("Authenticate"));
    v.Set("UDID", Value::String(udid));
    v.Set("SerialNumber", Value::String("SN-" + udid));
    v.Set("Topic", Value::String("com.apple.mgmt.test"));
    REQUIRE(Device(plist::ToXml(v)).status == 200);
  }
};

void FlipByte(const std::string& file, uint64_t offset) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  REQUIRE(f);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
  REQUIRE(f);
}

std::string NewestWal(const std::string& db) {
  std::vector<std::string> wals;
  for (const auto& e : fs::directory_iterator(db))
    if (e.path().extension() == ".log") wals.push_back(e.path().string());
  REQUIRE_FALSE(wals.empty());
  std::sort(wals.begin(), wals.end());
  return wals.back();
}

// The table files that hold one column family, asked of RocksDB itself.
std::vector<std::string> TablesOf(const std::string& db_path, const std::string& cf_name) {
  std::vector<std::string> names;
  REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), db_path, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (const auto& n : names) cfs.emplace_back(n, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  REQUIRE(rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), db_path, cfs, &handles, &raw).ok());
  std::vector<std::string> out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] != cf_name) continue;
    rocksdb::ColumnFamilyMetaData meta;
    raw->GetColumnFamilyMetaData(handles[i], &meta);
    for (const auto& level : meta.levels)
      for (const auto& f : level.files) out.push_back(f.db_path + "/" + f.name);
  }
  for (auto* h : handles) raw->DestroyColumnFamilyHandle(h);
  delete raw;
  return out;
}

double Metric(const std::string& text, const std::string& series) {
  auto pos = text.find("\n" + series + " ");
  if (pos == std::string::npos) return -1;
  return std::stod(text.substr(pos + series.size() + 2));
}

}  // namespace

TEST_CASE("a damaged write-ahead log stops orchardd, point_in_time is an explicit way out", "[integration][store]") {
  Node n;
  REQUIRE(n.Start());
  for (const char* udid : {"WAL-A", "WAL-B", "WAL-C"}) n.Enroll(udid);
  n.proc->Kill();  // the writes are in the write-ahead log only
  const std::string wal = NewestWal(n.db());
  FlipByte(wal, fs::file_size(wal) - 3);  // inside the last record

  REQUIRE_FALSE(n.Start());
  const std::string refused = n.Log();
  INFO(refused);
  CHECK(refused.find("refusing to open the database at " + n.db()) != std::string::npos);
  CHECK(refused.find("--wal-recovery point_in_time") != std::string::npos);

  REQUIRE(n.Start({"--wal-recovery", "point_in_time"}));
  const std::string recovered = n.Log();
  CHECK(recovered.find("event=wal_point_in_time_recovery path=" + n.db()) != std::string::npos);
  CHECK(n.Api("/v1/enrollments/WAL-A").status == 200);  // written before the damage
  CHECK(n.proc->Stop() == 0);

  // The damaged log is gone: the default (strict) start works again.
  REQUIRE(n.Start());
  CHECK(n.Api("/v1/enrollments/WAL-B").status == 200);
}

TEST_CASE("a damaged table file is logged, counted in /metrics and makes /healthz unhealthy", "[integration][store]") {
  Node n;
  REQUIRE(n.Start());
  for (const char* udid : {"SST-A", "SST-B", "SST-C"}) n.Enroll(udid);
  CHECK(n.proc->Stop() == 0);
  REQUIRE(n.Start());  // opening writes the log's contents into table files
  CHECK(n.proc->Stop() == 0);
  auto tables = TablesOf(n.db(), "enrollments");
  REQUIRE(tables.size() == 1);
  FlipByte(tables[0], 100);  // inside the first data block

  REQUIRE(n.Start());
  REQUIRE(n.proc->port() > 0);
  CHECK(n.Api("/v1/enrollments/SST-A").status == 500);
  CHECK(n.Log().find("event=store_error kind=corruption") != std::string::npos);
  auto metrics = n.Api("/metrics").body;
  CHECK(Metric(metrics, "orchard_store_errors_total{kind=\"corruption\"}") >= 1);
  CHECK(Metric(metrics, "orchard_store_corrupt") == 1);
  auto health = HttpCall("GET", n.proc->url() + "/healthz");
  CHECK(health.status == 503);
  CHECK(health.body.find("corruption") != std::string::npos);
}
