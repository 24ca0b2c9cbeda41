// Redirects this process's stderr (where orchard's log goes) to a temporary
// file while alive, so tests can read what was logged. Header-only. Not
// thread-safe: one instance at a time.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace orchard::testing {

class StderrCapture {
 public:
  StderrCapture() {
    char path[] = "/tmp/orchard-log-XXXXXX";
    fd_ = mkstemp(path);
    if (fd_ < 0) return;
    path_ = path;
    std::fflush(stderr);
    saved_ = dup(2);
    dup2(fd_, 2);
  }
  ~StderrCapture() {
    if (fd_ < 0) return;
    std::fflush(stderr);
    dup2(saved_, 2);
    close(saved_);
    close(fd_);
    unlink(path_.c_str());
  }
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;

  bool ok() const { return fd_ >= 0; }

  // Everything written to stderr since construction.
  std::string Text() const {
    std::fflush(stderr);
    std::ifstream f(path_, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }

  // Waits until the text contains needle (for lines logged by other threads).
  bool WaitFor(const std::string& needle,
               std::chrono::milliseconds timeout = std::chrono::seconds(10)) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (Text().find(needle) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polls a file
    }
    return Text().find(needle) != std::string::npos;
  }

 private:
  int fd_ = -1;
  int saved_ = -1;
  std::string path_;
};

}  // namespace orchard::testing
