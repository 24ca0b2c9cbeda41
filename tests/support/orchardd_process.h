// Runs the real orchardd binary for integration tests and benchmarks: a child
// process on an ephemeral loopback port with its own data directory. Start()
// blocks until the server prints its "listening on" line (no sleeps), so the
// port is known and the server is accepting. Also a tiny blocking HTTP client.
// Not thread-safe per instance.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

namespace orchard::testing {

std::string OrchardBinary(const char* name);  // ORCHARD_BINARY_DIR-relative path of a tool
std::string MakeTempDir(const char* prefix);  // mkdtemp under /tmp
std::string ReadFile(const std::string& path);
bool WriteFile(const std::string& path, const std::string& data);

class OrchardProcess {
 public:
  // args are appended after --listen 127.0.0.1:0 --data-dir DIR.
  explicit OrchardProcess(std::string data_dir, std::vector<std::string> args = {});
  ~OrchardProcess();

  // Starts and waits until listening; false (with log() explaining) on failure.
  bool Start();
  // SIGKILL, as a crash would; the data dir stays.
  void Kill();
  // SIGTERM and wait; returns the exit status.
  int Stop();
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  const std::string& data_dir() const { return data_dir_; }
  // Everything the process wrote to stderr so far is in this file.
  std::string log_path() const { return data_dir_ + ".log"; }

 private:
  std::string data_dir_;
  std::vector<std::string> args_;
  pid_t pid_ = -1;
  int port_ = 0;
};

struct HttpResult {
  long status = 0;  // 0: transport error (see error)
  std::string body;
  std::string content_type;
  std::string error;
};

// One blocking request with libcurl. headers are "Name: value" lines.
HttpResult HttpCall(const std::string& method, const std::string& url, const std::string& body = "",
                    const std::vector<std::string>& headers = {});

}  // namespace orchard::testing
