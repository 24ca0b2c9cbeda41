// Damaged storage under the real orchardd: a damaged write-ahead log stops the
// start with a message that says what to do, point-in-time recovery is an
// explicit choice, and a damaged table file is logged, counted and reported
// by /healthz and /metrics instead of failing silently.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <rocksdb/db.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "plist/plist.h"
#include "support/orchardd_process.h"
#include "support/skip.h"

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

namespace {

// A small tmpfs mounted for one test; mounting needs root and CAP_SYS_ADMIN.
struct Tmpfs {
  std::string path;
  bool mounted = false;
  std::string error;
  Tmpfs(const std::string& p, const char* size) : path(p) {
    fs::create_directories(path);
    mounted = mount("tmpfs", path.c_str(), "tmpfs", 0, (std::string("size=") + size).c_str()) == 0;
    if (!mounted) error = std::strerror(errno);
  }
  ~Tmpfs() {
    if (mounted) umount2(path.c_str(), MNT_DETACH);
  }
};

// Fills the file system holding dir until about keep_bytes are left.
bool Fill(const std::string& file, uint64_t keep_bytes) {
  struct statvfs st;
  if (statvfs(fs::path(file).parent_path().c_str(), &st) != 0) return false;
  const uint64_t avail = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  if (avail <= keep_bytes) return true;
  int fd = open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return false;
  std::string chunk(1 << 20, '\0');
  uint64_t left = avail - keep_bytes;
  while (left > 0) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(left, chunk.size()));
    const ssize_t w = write(fd, chunk.data(), n);
    if (w <= 0) break;
    left -= static_cast<uint64_t>(w);
  }
  close(fd);
  return true;
}

std::string PaddedCommand(const std::string& uuid) {
  Value cmd;
  cmd.Set("RequestType", Value::String("DeviceInformation"));
  cmd.Set("Pad", Value::String(std::string(60000, 'x')));
  Value v;
  v.Set("CommandUUID", Value::String(uuid));
  v.Set("Command", cmd);
  return plist::ToXml(v);
}

}  // namespace

// The store's and RocksDB's lines of an orchardd log (the last 30), to say why
// a test waiting for recovery failed.
std::string StoreLogLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    if (line.find("module=store") != std::string::npos || line.find("module=rocksdb") != std::string::npos)
      lines.push_back(line);
  std::string out;
  for (size_t i = lines.size() > 30 ? lines.size() - 30 : 0; i < lines.size(); ++i) out += lines[i] + "\n";
  return out;
}

// A bonus over the fault-injecting file system of the unit tests: a real
// ENOSPC. Runs only where a tmpfs can be mounted (root with CAP_SYS_ADMIN).
TEST_CASE("a really full disk (tmpfs): 503, unhealthy, recovery once space is freed, nothing lost", "[integration][store]") {
  Node n;
  // Large enough that what the filler frees covers RocksDB's 16 MB resume
  // buffer even when the store itself (a preallocated log, memtables flushed
  // before the filler was written) holds tens of MB of it: with 40 MB the
  // test failed now and then with 4.8 MB free after the filler went.
  Tmpfs disk(n.dir + "/mnt", "160m");
  if (!disk.mounted) ORCHARD_SKIP("cannot mount a tmpfs here (" << disk.error << ")");
  n.args.push_back("--data-dir");
  n.args.push_back(disk.path + "/data");
  REQUIRE(n.Start());
  n.Enroll("FULL-T");
  const std::string key = std::string("X-API-Key: ") + kKey;
  REQUIRE(Fill(disk.path + "/filler", 200 << 10));

  // Enqueue until the disk refuses (RocksDB preallocates its log, so this takes
  // a few MB of commands).
  std::vector<std::string> stored;
  long refused = 0;
  for (int i = 0; i < 1000 && refused == 0; ++i) {
    const std::string uuid = "PAD-" + std::to_string(i);
    auto r = HttpCall("PUT", n.proc->url() + "/v1/enqueue/FULL-T?nopush=1", PaddedCommand(uuid), {key});
    if (r.status == 200) stored.push_back(uuid);
    else refused = r.status;
  }
  REQUIRE(refused == 503);
  CHECK(HttpCall("GET", n.proc->url() + "/healthz").status == 503);
  CHECK(Metric(n.Api("/metrics").body, "orchard_store_writable") == 0);

  fs::remove(disk.path + "/filler");
  // RocksDB 7.8 checks every 5 s whether 16 MB (write_buffer_size) are free.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (HttpCall("GET", n.proc->url() + "/healthz").status != 200 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto health = HttpCall("GET", n.proc->url() + "/healthz");
  INFO("healthz: " << health.body << "\nstore log lines:\n" << StoreLogLines(n.proc->log_path()));
  REQUIRE(health.status == 200);
  CHECK(HttpCall("PUT", n.proc->url() + "/v1/enqueue/FULL-T?nopush=1", PaddedCommand("AFTER"), {key}).status == 200);
  auto queue = n.Api("/v1/enrollments/FULL-T/queue?limit=2000").body;
  for (const auto& uuid : stored) CHECK(queue.find("\"" + uuid + "\"") != std::string::npos);
  CHECK(queue.find("\"AFTER\"") != std::string::npos);
  CHECK(n.proc->Stop() == 0);
}
