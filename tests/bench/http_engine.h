// A small closed-loop HTTP/1.1 client engine for benchmarks: many keep-alive
// connections driven by epoll over non-blocking sockets, one epoll loop per
// thread. Each connection has at most one request in flight; when its response
// is complete the engine asks the Driver for that connection's next request
// (closed loop). Responses are framed by Content-Length (chunked encoding is
// not supported and counts as a protocol error).
//
// Ramp-up: with EngineOptions::ramp, every connection is first opened and
// completes one request while at most max_connecting connections are opening
// at once (Pistache listens with a backlog of 128), then parks until Go(): so
// 10,000 connections never pile into the listen queue, and the measured phase
// starts with every connection established.
//
// Failures: a reset or an unexpected close counts as a transport error and the
// connection reconnects and resends the unanswered request; a response with
// `Connection: close` counts as a server close and the connection reconnects
// before its next request.
//
// Threading: connections [0, n) are split into contiguous ranges, one per
// thread; Driver methods are called concurrently for different connections,
// never concurrently for the same connection. The Engine itself is controlled
// from one thread (the caller).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace orchard::bench {

struct Response {
  int status = 0;
  bool close = false;  // the server sent Connection: close
  std::string_view body;
};

class Driver {
 public:
  virtual ~Driver() = default;
  // The next request (complete HTTP/1.1 bytes) for connection `conn`, or false
  // when that connection is finished (it is closed and not reopened). The bytes
  // must stay valid until the response arrives.
  virtual bool Next(size_t conn, std::string_view* request) = 0;
  // A complete response to the request last returned by Next(conn).
  // `thread` is the engine thread (0..threads-1) for per-thread accumulators.
  virtual void OnResponse(int thread, size_t conn, const Response& response, uint32_t latency_us) = 0;
};

struct EngineOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  size_t connections = 1;
  int threads = 1;
  int max_connecting = 64;  // connections opening at once during ramp-up (all threads)
  bool ramp = true;         // open everything (one request each) before Go()
};

class Engine {
 public:
  Engine(EngineOptions options, Driver* driver);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Starts the threads; connections start opening at once.
  void Start();
  // Blocks until every connection is established or finished, or timeout; true when done.
  // Gives up after 10 s when no connection could be established at all.
  bool WaitRamp(double timeout_s);
  // Ends ramp-up: parked connections send their next request.
  void Go();
  // Blocks until every connection is finished (Driver::Next returned false) or timeout.
  bool WaitFinished(double timeout_s);
  // Stops the threads and closes every connection. Idempotent.
  void Stop();

  uint64_t responses() const { return responses_.load(); }
  uint64_t transport_errors() const { return transport_errors_.load(); }
  uint64_t connect_errors() const { return connect_errors_.load(); }
  uint64_t protocol_errors() const { return protocol_errors_.load(); }
  uint64_t server_closes() const { return server_closes_.load(); }  // Connection: close, reconnected
  size_t established() const { return established_.load(); }
  size_t finished() const { return finished_.load(); }

 private:
  void ThreadMain(int thread, size_t begin, size_t end);

  EngineOptions options_;
  Driver* driver_;
  std::vector<std::thread> threads_;
  std::atomic<bool> go_{false}, stop_{false};
  std::atomic<uint64_t> responses_{0}, transport_errors_{0}, connect_errors_{0}, protocol_errors_{0},
      server_closes_{0};
  std::atomic<size_t> established_{0}, finished_{0};
};

// Parses one HTTP/1.1 response at the start of `data`. Returns its total length
// when complete, 0 when more bytes are needed, -1 when malformed.
long ParseResponse(std::string_view data, Response* out);

}  // namespace orchard::bench
