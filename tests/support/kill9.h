// kill -9 tests: a writer runs as a separate process (the test binary
// re-executed with one of its hidden tests, so that nothing RocksDB started in
// the parent is inherited across fork), acknowledges each durable step by
// writing a 4-byte number to a pipe, and is killed at a random moment.
// Header-only.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>

#include <catch2/catch.hpp>

namespace orchard::testing {

// In the child: the directory the parent named (nullptr when this hidden test
// was not started by Kill9Child: it should return at once).
inline const char* Kill9Dir() {
  return std::getenv("ORCHARD_KILL9_FD") ? std::getenv("ORCHARD_KILL9_DIR") : nullptr;
}
// In the child: acknowledges step n (after it is durable); exits if the parent is gone.
inline void Kill9Ack(uint32_t n) {
  static const int fd = std::atoi(std::getenv("ORCHARD_KILL9_FD"));
  if (write(fd, &n, sizeof n) != sizeof n) _exit(3);
}

// Runs the hidden test `child_test` of this binary with ORCHARD_KILL9_DIR=dir,
// waits until it acknowledged a step >= min_ack, lets it run for `delay`,
// kills it (SIGKILL) and returns the last step it acknowledged before dying
// (-1: none).
inline int64_t Kill9Child(const std::string& child_test, const std::string& dir, int64_t min_ack,
                          std::chrono::microseconds delay) {
  int pipefd[2];
  REQUIRE(pipe(pipefd) == 0);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(pipefd[0]);
    setenv("ORCHARD_KILL9_DIR", dir.c_str(), 1);
    setenv("ORCHARD_KILL9_FD", std::to_string(pipefd[1]).c_str(), 1);
    execl("/proc/self/exe", "kill9-child", child_test.c_str(), nullptr);
    _exit(127);
  }
  close(pipefd[1]);
  int64_t acked = -1;
  uint32_t n = 0;
  while (acked < min_ack && read(pipefd[0], &n, sizeof n) == sizeof n) acked = n;
  std::this_thread::sleep_for(delay);  // picks the instant of the crash; nothing waits on it
  kill(pid, SIGKILL);
  while (read(pipefd[0], &n, sizeof n) == sizeof n) acked = n;  // acks sent before it died
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return acked;
}

}  // namespace orchard::testing
