// The webhook plugin's delivery thread: finds committed outbox records
// (outbox.h) with kv_scan, posts them with libcurl's multi interface
// (bounded concurrent transfers per endpoint, reused handles and
// connections), and removes delivered ones / records failed attempts with
// kv_write. Per endpoint, records of one device are delivered one at a time,
// in stream order (a retried record holds back that device's later ones).
//
// Thread-safety: Wake() and StatusJson() may be called from any thread;
// Start() and Stop() from the owner only (init and shutdown).
#pragma once

#include <curl/curl.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "config.h"
#include "orchard/plugin.h"
#include "outbox.h"

namespace orchard_webhook {

struct KvOp {
  std::string key;
  std::string value;
  bool remove = false;
};

// What the sender needs of the host (the plugin implements it; thread-safe).
class Host {
 public:
  virtual ~Host() = default;
  // fn returns false to stop.
  virtual orchard_status Scan(std::string_view prefix, std::string_view after, size_t limit,
                              const std::function<bool(std::string_view key, std::string_view value)>& fn) = 0;
  virtual orchard_status Write(const std::vector<KvOp>& ops) = 0;
  virtual void Log(orchard_log_level level, const std::string& message) = 0;
};

class Sender {
 public:
  Sender(const Config& config, Host* host);  // both must outlive the sender
  ~Sender();
  Sender(const Sender&) = delete;
  Sender& operator=(const Sender&) = delete;

  // Creates the curl handles and starts the thread.
  orchard_status Start(std::string* error);
  // An on_event wrote records: scan soon (they are visible once committed).
  void Wake();
  // Stops starting transfers, lets those in flight finish for up to
  // shutdown_grace_ms, then joins. Idempotent.
  void Stop();
  // {"endpoints": [...]} for the status route: per endpoint its outbox depth
  // (counted up to depth_limit), counters and up to dead_limit dead letters.
  std::string StatusJson(size_t depth_limit, size_t dead_limit);

 private:
  struct Transfer;
  struct Endpoint;

  void Run() noexcept;
  void Loop();
  bool Fill(Endpoint& ep, int64_t now, bool timer, int64_t* earliest_due);
  bool Begin(Endpoint& ep, const std::string& key, std::string_view value, int64_t now);
  void Collect(int64_t now);
  void Finish(Transfer& t, CURLcode rc, long status, int64_t now);
  void DeadLetter(Endpoint& ep, uint64_t seq, const Record& rec, const std::string& key, const std::string& reason,
                  int64_t now);
  void Flush();
  int64_t Backoff(int attempts);
  void Release(Transfer& t);

  const Config& config_;
  Host* host_;
  CURLM* multi_ = nullptr;
  std::vector<std::unique_ptr<Endpoint>> endpoints_;
  std::vector<KvOp> ops_;  // written by Flush; their out/ keys stay busy until then
  std::mt19937_64 rng_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> woken_{false};
  std::atomic<int64_t> fast_until_ms_{0};
  bool started_ = false;
  int64_t flush_failures_ = 0;
  int64_t ops_since_ms_ = 0;  // when the oldest unwritten op was added (0: none)
  std::mutex stats_mu_;  // guards Endpoint::stats
};

}  // namespace orchard_webhook
