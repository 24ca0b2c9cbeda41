// A fast webhook receiver for benchmarks (bench_webhook): a real HTTP/1.1
// server on 127.0.0.1, non-blocking sockets on epoll, one loop per thread
// (the listening socket is shared with EPOLLEXCLUSIVE), keep-alive and
// pipelining, Content-Length bodies. Every POST's X-Hmac-Signature is checked
// against HMAC-SHA256(secret, body) (OpenSSL, compared in constant time):
// a valid one is answered 200, a missing or wrong one 401 (and counted).
// The event_id of each accepted body is kept to count duplicates afterwards;
// optionally the first keep_bodies bodies are kept (for the baseline driver).
//
// Thread-safety: counters may be read from any thread while running;
// Start/Stop and the after-Stop accessors from the owner only.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace orchard::bench {

struct ReceiverOptions {
  std::string secret;        // HMAC key; every request must be signed with it
  int threads = 2;           // epoll loops
  uint16_t port = 0;         // 0: ephemeral
  size_t keep_bodies = 0;    // bodies kept for TakeBodies (bounded)
  size_t max_body = 8 << 20;  // larger requests are refused (413) and the connection closed
};

class HookReceiver {
 public:
  explicit HookReceiver(ReceiverOptions options);
  ~HookReceiver();
  HookReceiver(const HookReceiver&) = delete;
  HookReceiver& operator=(const HookReceiver&) = delete;

  // Binds (SO_REUSEADDR) and starts the loops; false with *error on failure.
  bool Start(std::string* error);
  // Closes the listener and every connection, joins the loops. Idempotent.
  void Stop();

  uint16_t port() const { return port_; }
  uint64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }  // 200, HMAC valid
  uint64_t bad_hmac() const { return bad_hmac_.load(std::memory_order_relaxed); }
  uint64_t protocol_errors() const { return protocol_errors_.load(std::memory_order_relaxed); }
  uint64_t connections() const { return connections_.load(std::memory_order_relaxed); }
  uint64_t first_ns() const { return first_ns_.load(); }  // NowNs() of the first accepted request (0: none)
  uint64_t last_ns() const { return last_ns_.load(); }    // ... of the last one

  // After Stop: accepted requests whose event_id was seen before (0 = none),
  // and requests without an event_id.
  uint64_t Duplicates() const;
  uint64_t MissingIds() const;
  // After Stop: the kept bodies (moved out).
  std::vector<std::string> TakeBodies();

 private:
  struct Loop;
  void Run(Loop* loop) noexcept;
  void Serve(Loop* loop);

  ReceiverOptions options_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::vector<std::unique_ptr<Loop>> loops_;
  std::vector<std::thread> threads_;
  std::atomic<uint64_t> accepted_{0}, bad_hmac_{0}, protocol_errors_{0}, connections_{0};
  std::atomic<uint64_t> first_ns_{0}, last_ns_{0};
  std::mutex bodies_mu_;
  std::vector<std::string> bodies_;
};

}  // namespace orchard::bench
