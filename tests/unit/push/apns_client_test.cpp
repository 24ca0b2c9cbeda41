// ApnsClient against the project's mock APNs (TLS + ALPN h2 + client
// certificates, fault injection). Synchronisation is by callbacks and
// condition variables with bounded waits; WaitUntil polls a predicate with a
// deadline where the client offers no event (stats counters).
#include <catch2/catch.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "apns_mock/mock_apns.h"
#include "push/apns_client.h"
#include "support/test_pki.h"

using namespace orchard;
using namespace std::chrono_literals;
using orchard::push::ApnsClient;
using orchard::push::ApnsClientOptions;
using orchard::push::ApnsRequest;
using orchard::push::ApnsResponse;
using orchard::testing::Identity;
using orchard::testing::IssueOptions;
using orchard::testing::MockApns;
using orchard::testing::MockApnsOptions;
using orchard::testing::MockPush;
using orchard::testing::TestCa;
using Clock = std::chrono::steady_clock;

namespace {

constexpr char kTopic[] = "com.apple.mgmt.External.2f9a1c3e-0b7d-4c55-9e1a-7d3b2c1f0e99";

std::string Token(size_t i) {
  char buf[65];
  snprintf(buf, sizeof buf, "%064zx", i + 0xabc000);
  return buf;
}

std::string Magic(size_t i) { return "magic-" + std::to_string(i) + "-4f1b2d6e-8c3a-4e0f-a1b2-c3d4e5f60718"; }

ApnsRequest Req(size_t i, const std::string& topic = kTopic) {
  ApnsRequest r;
  r.device_token_hex = Token(i);
  r.topic = topic;
  r.push_magic = Magic(i);
  return r;
}

// Polls `pred` until true or the deadline; for state that has no event.
template <typename Pred>
bool WaitUntil(Pred pred, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (!pred()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// Collects responses by request index; counts callbacks to catch duplicates.
class Collector {
 public:
  explicit Collector(size_t n) : responses_(n), calls_(n, 0) {}

  push::ApnsCallback Callback(size_t i) {
    return [this, i](const ApnsResponse& r) {
      std::lock_guard<std::mutex> lock(mu_);
      responses_[i] = r;
      calls_[i]++;
      done_++;
      cv_.notify_all();
    };
  }
  bool Wait(size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return done_ >= n; });
  }
  size_t done() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }
  ApnsResponse Get(size_t i) {
    std::lock_guard<std::mutex> lock(mu_);
    return responses_[i].value_or(ApnsResponse{});
  }
  // Every callback ran exactly once.
  bool ExactlyOnce() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::all_of(calls_.begin(), calls_.end(), [](int c) { return c == 1; });
  }
  std::map<int, size_t> StatusCounts() {
    std::lock_guard<std::mutex> lock(mu_);
    std::map<int, size_t> out;
    for (auto& r : responses_)
      if (r) out[r->status]++;
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::optional<ApnsResponse>> responses_;
  std::vector<int> calls_;
  size_t done_ = 0;
};

// Counts 200 deliveries per token as the mock sees them.
class Deliveries {
 public:
  void Attach(MockApns& mock) {
    mock.OnDelivered([this](const MockPush& p) {
      std::lock_guard<std::mutex> lock(mu_);
      by_token_[p.token_hex]++;
      total_++;
    });
  }
  size_t total() {
    std::lock_guard<std::mutex> lock(mu_);
    return total_;
  }
  size_t count(const std::string& token) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_token_.find(token);
    return it == by_token_.end() ? 0 : it->second;
  }

 private:
  std::mutex mu_;
  std::map<std::string, size_t> by_token_;
  size_t total_ = 0;
};

struct Pki {
  std::unique_ptr<TestCa> ca = TestCa::Create("Orchard Test APNs CA");
  Identity server, push;
  Pki() {
    IssueOptions so;
    so.common_name = "localhost";
    so.dns_name = "localhost,127.0.0.1";
    so.server_auth_eku = true;
    server = ca->Issue(so);
    IssueOptions po;
    po.common_name = "APSP:orchard-test";
    po.uid = kTopic;
    push = ca->Issue(po);
  }
};

Pki& SharedPki() {
  static Pki pki;  // issuing is slowish; certificates are immutable
  return pki;
}

struct Env {
  Pki& pki = SharedPki();
  std::unique_ptr<MockApns> mock;

  explicit Env(uint32_t max_streams = 1000, bool record = true) {
    MockApnsOptions mo;
    mo.cert_pem = pki.server.cert_pem;
    mo.key_pem = pki.server.key_pem;
    mo.client_ca_pem = pki.ca->cert_pem();
    mo.max_concurrent_streams = max_streams;
    mo.record_requests = record;
    mock = MockApns::Start(mo);
    REQUIRE(mock);
  }

  ApnsClientOptions Options(int connections = 1) const {
    ApnsClientOptions o;
    o.endpoint.host = "127.0.0.1";
    o.endpoint.port = mock ? mock->port() : 1;
    o.endpoint.ca_pem = pki.ca->cert_pem();
    o.cert_pem = pki.push.cert_pem;
    o.key_pem = pki.push.key_pem;
    o.connections = connections;
    o.request_timeout_ms = 20000;
    o.connect_backoff_initial_ms = 100;
    o.connect_backoff_max_ms = 1000;
    return o;
  }

  std::unique_ptr<ApnsClient> Client(const ApnsClientOptions& o) const {
    auto r = ApnsClient::Create(o);
    INFO(r.status().ToString());
    REQUIRE(r.ok());
    return std::move(r).value();
  }
};

// Sends one request and waits for its answer.
ApnsResponse SendOne(ApnsClient& client, ApnsRequest req, std::chrono::milliseconds timeout = 10s) {
  Collector c(1);
  client.Send(std::move(req), c.Callback(0));
  REQUIRE(c.Wait(1, timeout));
  return c.Get(0);
}

// Sends requests 0..n-1 (indexes offset by `base` for tokens) and waits for all.
void SendMany(ApnsClient& client, Collector& c, size_t n, size_t base = 0,
              std::chrono::milliseconds timeout = 60s) {
  for (size_t i = 0; i < n; ++i) client.Send(Req(base + i), c.Callback(i));
  REQUIRE(c.Wait(n, timeout));
}

}  // namespace

TEST_CASE("apns: 200 answer carries the apns-id", "[push][apns]") {
  Env env;
  auto client = env.Client(env.Options());
  ApnsRequest r = Req(1);
  r.apns_id = "6F2B1A4C-3D5E-4F60-8172-93A4B5C6D7E8";
  ApnsResponse a = SendOne(*client, r);
  CHECK(a.status == 200);
  CHECK(a.apns_id == r.apns_id);
  CHECK(a.error.empty());
  CHECK(a.reason.empty());

  ApnsResponse b = SendOne(*client, Req(2));  // id generated by the client
  CHECK(b.status == 200);
  CHECK(b.apns_id.size() == 36);
  auto rec = env.mock->Received();
  REQUIRE(rec.size() == 2);
  CHECK(rec[1].apns_id == b.apns_id);
  auto s = client->stats();
  CHECK(s.connects == 1);
  CHECK(s.connect_failures == 0);
  CHECK(s.max_concurrent_streams == 1000);
  CHECK(s.in_flight == 0);
  CHECK(s.queued == 0);
}

TEST_CASE("apns: request format as the mock sees it", "[push][apns]") {
  Env env;
  auto client = env.Client(env.Options());
  ApnsRequest r = Req(7);
  r.push_magic = "quote\" backslash\\ tab\t end";  // must be JSON-escaped in the body
  r.expiration_unix = 1893456000;
  r.apns_id = "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D";
  REQUIRE(SendOne(*client, r).status == 200);
  auto rec = env.mock->Received();
  REQUIRE(rec.size() == 1);
  CHECK(rec[0].status == 200);
  CHECK(rec[0].token_hex == r.device_token_hex);
  CHECK(rec[0].topic == kTopic);
  CHECK(rec[0].push_magic == r.push_magic);
  CHECK(rec[0].apns_id == r.apns_id);
  CHECK(rec[0].expiration == 1893456000);
  CHECK(rec[0].priority == 10);

  ApnsRequest no_exp = Req(8);  // expiration 0: header omitted
  REQUIRE(SendOne(*client, no_exp).status == 200);
  rec = env.mock->Received();
  REQUIRE(rec.size() == 2);
  CHECK(rec[1].expiration == 0);
  CHECK(rec[1].push_magic == no_exp.push_magic);
}

TEST_CASE("apns: error answers surface status, reason and timestamp", "[push][apns]") {
  Env env;
  auto client = env.Client(env.Options());

  env.mock->SetUnregistered(Token(1), 1700000000123);
  ApnsResponse gone = SendOne(*client, Req(1));
  CHECK(gone.status == 410);
  CHECK(gone.reason == "Unregistered");
  CHECK(gone.timestamp_ms == 1700000000123);
  CHECK(gone.error.empty());
  CHECK_FALSE(gone.apns_id.empty());

  struct Case {
    int status;
    const char* reason;
  };
  for (Case c : {Case{400, "BadDeviceToken"}, Case{403, "BadCertificate"}, Case{429, "TooManyRequests"},
                 Case{500, "InternalServerError"}, Case{503, "ServiceUnavailable"}}) {
    env.mock->FailNext(1, c.status, c.reason);
    ApnsResponse a = SendOne(*client, Req(2));
    INFO(c.status);
    CHECK(a.status == c.status);
    CHECK(a.reason == c.reason);
    CHECK(a.timestamp_ms == 0);
  }
  // A real check by the mock: topic not the certificate's UID.
  ApnsResponse wrong = SendOne(*client, Req(3, "com.apple.mgmt.External.other"));
  CHECK(wrong.status == 400);
  CHECK(wrong.reason == "TopicDisallowed");
  // Answered requests are never re-sent.
  CHECK(client->stats().resent == 0);
  CHECK(env.mock->Received().size() == 7);
}

TEST_CASE("apns: GOAWAY loses no request and re-sends are counted", "[push][apns]") {
  Env env;
  Deliveries seen;
  seen.Attach(*env.mock);
  auto client = env.Client(env.Options(1));
  REQUIRE(SendOne(*client, Req(100000)).status == 200);  // connection up, SETTINGS known
  env.mock->GoawayAfter(100);
  constexpr size_t kN = 600;
  Collector c(kN);
  SendMany(*client, c, kN);
  CHECK(c.ExactlyOnce());
  CHECK(c.StatusCounts() == std::map<int, size_t>{{200, kN}});
  auto s = client->stats();
  CHECK(s.goaways >= 1);
  CHECK(s.connects >= 2);
  CHECK(s.in_flight == 0);
  for (size_t i = 0; i < kN; ++i) REQUIRE(seen.count(Token(i)) >= 1);
  // Duplicates at the server only among the re-sent ones.
  CHECK(seen.total() - 1 <= kN + s.resent);
}

TEST_CASE("apns: a dropped connection re-sends unanswered requests", "[push][apns]") {
  Env env;
  Deliveries seen;
  seen.Attach(*env.mock);
  auto client = env.Client(env.Options(1));
  REQUIRE(SendOne(*client, Req(100000)).status == 200);
  env.mock->DropConnectionsAfter(50);
  constexpr size_t kN = 400;
  Collector c(kN);
  SendMany(*client, c, kN);
  CHECK(c.ExactlyOnce());
  CHECK(c.StatusCounts() == std::map<int, size_t>{{200, kN}});
  auto s = client->stats();
  CHECK(s.connects >= 2);
  CHECK(s.resent >= 1);
  CHECK(s.connect_failures == 0);
  for (size_t i = 0; i < kN; ++i) REQUIRE(seen.count(Token(i)) >= 1);
  CHECK(seen.total() - 1 <= kN + s.resent);
}

TEST_CASE("apns: REFUSED_STREAM is re-sent", "[push][apns]") {
  Env env;
  auto client = env.Client(env.Options(1));
  REQUIRE(SendOne(*client, Req(100000)).status == 200);
  env.mock->RefuseStreamsNext(3);
  constexpr size_t kN = 10;
  Collector c(kN);
  SendMany(*client, c, kN);
  CHECK(c.ExactlyOnce());
  CHECK(c.StatusCounts() == std::map<int, size_t>{{200, kN}});
  CHECK(client->stats().resent == 3);
  CHECK(client->stats().connects == 1);
  auto rec = env.mock->Received();
  CHECK(std::count_if(rec.begin(), rec.end(), [](const MockPush& p) { return p.reason == "RefusedStream"; }) == 3);
  CHECK(std::count_if(rec.begin(), rec.end(), [](const MockPush& p) { return p.status == 200; }) == kN + 1);
}

TEST_CASE("apns: re-sends are bounded", "[push][apns]") {
  Env env;
  auto o = env.Options(1);
  o.max_resends = 2;
  auto client = env.Client(o);
  REQUIRE(SendOne(*client, Req(100000)).status == 200);
  env.mock->RefuseStreamsNext(100);
  ApnsResponse a = SendOne(*client, Req(1));
  CHECK(a.status == 0);
  CHECK_THAT(a.error, Catch::StartsWith("gave up after 3 sends"));
  CHECK(client->stats().resent == 2);
}

TEST_CASE("apns: requests refused by GOAWAY are re-sent without counting against max_resends", "[push][apns]") {
  Env env;
  auto o = env.Options(1);
  o.max_resends = 0;  // any re-send that counts would fail its request
  auto client = env.Client(o);
  REQUIRE(SendOne(*client, Req(100000)).status == 200);
  // Answers come 100 ms late, so every request is on a stream when the
  // GOAWAY after the 20th answer refuses the streams above it.
  env.mock->SetDelayMs(100);
  env.mock->GoawayAfter(20);
  constexpr size_t kN = 200;
  Collector c(kN);
  SendMany(*client, c, kN);
  CHECK(c.ExactlyOnce());
  CHECK(c.StatusCounts() == std::map<int, size_t>{{200, kN}});
  auto s = client->stats();
  CHECK(s.goaways >= 1);
  CHECK(s.goaway_refused >= 1);
  CHECK(s.resent >= s.goaway_refused);
  CHECK(s.connects >= 2);
}

TEST_CASE("apns: after an outage the client reconnects within seconds of the server's return", "[push][apns]") {
  Env env;
  const int64_t cap_ms = ApnsClientOptions{}.connect_backoff_max_ms;  // the default cap is under test
  auto o = env.Options(1);
  o.connect_backoff_initial_ms = 100;
  o.connect_backoff_max_ms = cap_ms;
  o.request_timeout_ms = 120000;
  auto client = env.Client(o);
  REQUIRE(SendOne(*client, Req(100000)).status == 200);
  REQUIRE(env.mock->SetListening(false));  // APNs unreachable: connections refused
  Collector c(1);
  client->Send(Req(1), c.Callback(0));
  // Down long enough for an uncapped backoff to grow far (from 100 ms, the
  // 8th failure would wait 6.4-12.8 s).
  REQUIRE(WaitUntil([&] { return client->stats().connect_failures >= 8; }, 60000ms));
  REQUIRE(env.mock->SetListening(true));
  const auto back = Clock::now();
  REQUIRE(c.Wait(1, 60s));
  const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - back);
  CHECK(c.Get(0).status == 200);
  INFO("answered " << waited.count() << " ms after the server came back (backoff cap " << cap_ms << " ms)");
  CHECK(waited < 5000ms);  // within seconds, whatever the outage's length
}

TEST_CASE("apns: a slow DNS lookup does not stall requests on open connections", "[push][apns]") {
  Env env(1);  // one stream per connection: waiting requests make the client open the second
  std::mutex mu;
  std::condition_variable cv;
  int lookups = 0;
  bool release = false;
  auto o = env.Options(2);
  o.endpoint.host = "localhost";  // a name, so it is looked up (the certificate names localhost)
  o.resolver = [&](const std::string& host) -> Result<std::vector<std::string>> {
    std::unique_lock<std::mutex> lock(mu);
    const int n = ++lookups;
    cv.notify_all();
    if (n == 2) cv.wait_for(lock, 20s, [&] { return release; });  // the second lookup hangs
    if (host != "localhost") return Status::InvalidArgument("unexpected host " + host);
    return std::vector<std::string>{"127.0.0.1"};
  };
  auto client = env.Client(o);
  REQUIRE(SendOne(*client, Req(100000)).status == 200);  // first connection, first lookup
  env.mock->SetDelayMs(100);
  constexpr size_t kN = 4;
  Collector c(kN);
  for (size_t i = 0; i < kN; ++i) client->Send(Req(i), c.Callback(i));
  {
    std::unique_lock<std::mutex> lock(mu);
    REQUIRE(cv.wait_for(lock, 5s, [&] { return lookups >= 2; }));
  }
  // The lookup for the second connection hangs; the first connection serves
  // the requests one by one meanwhile (4 x 100 ms): the I/O thread is not stuck.
  CHECK(c.Wait(kN, 5s));
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  CHECK(c.StatusCounts() == std::map<int, size_t>{{200, kN}});
  // The released lookup completes (the resolver must not outlive this scope).
  client->Send(Req(10), [](const ApnsResponse&) {});
  client->Send(Req(11), [](const ApnsResponse&) {});
  CHECK(WaitUntil([&] { return client->stats().connects >= 2; }, 10000ms));
}

TEST_CASE("apns: a failing or throwing resolver is a connect failure", "[push][apns]") {
  Env env;
  std::atomic<int> calls{0};
  auto o = env.Options(1);
  o.endpoint.host = "localhost";
  o.connect_backoff_initial_ms = 10;
  o.resolver = [&](const std::string&) -> Result<std::vector<std::string>> {
    const int n = ++calls;
    if (n == 1) throw std::runtime_error("resolver exploded");
    if (n == 2) return Status::Unavailable("Name or service not known");
    if (n == 3) return std::vector<std::string>{"not an address"};
    return std::vector<std::string>{"127.0.0.1"};
  };
  auto client = env.Client(o);
  CHECK(SendOne(*client, Req(1)).status == 200);
  CHECK(client->stats().connect_failures == 3);
  CHECK(calls.load() == 4);
}

TEST_CASE("apns: a lowered MAX_CONCURRENT_STREAMS is respected mid-connection", "[push][apns]") {
  Env env;
  auto client = env.Client(env.Options(1));
  REQUIRE(SendOne(*client, Req(100000)).status == 200);
  REQUIRE(client->stats().max_concurrent_streams == 1000);
  constexpr uint32_t kLimit = 4;
  env.mock->SetMaxConcurrentStreams(kLimit);
  REQUIRE(WaitUntil([&] { return client->stats().max_concurrent_streams == kLimit; }, 5000ms));
  constexpr int64_t kDelay = 25;
  env.mock->SetDelayMs(kDelay);
  constexpr size_t kN = 40;
  Collector c(kN);
  auto start = Clock::now();
  for (size_t i = 0; i < kN; ++i) client->Send(Req(i), c.Callback(i));
  uint64_t max_in_flight = 0;
  while (!c.Wait(kN, 1ms)) {
    max_in_flight = std::max(max_in_flight, client->stats().in_flight);
    REQUIRE(Clock::now() - start < 20s);
  }
  auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
  CHECK(c.StatusCounts() == std::map<int, size_t>{{200, kN}});
  CHECK(max_in_flight <= kLimit);
  // kN / kLimit waves of kDelay each; without the limit this takes about one kDelay.
  CHECK(elapsed >= static_cast<int64_t>(kN / kLimit) * kDelay * 8 / 10);
  // The mock refuses streams above its limit; nothing was refused or re-sent.
  CHECK(client->stats().resent == 0);
  CHECK(client->stats().connects == 1);
}

TEST_CASE("apns: a burst beyond one connection's streams opens the next pooled connection", "[push][apns]") {
  Env env(100);
  auto client = env.Client(env.Options(2));
  REQUIRE(SendOne(*client, Req(100000)).status == 200);
  CHECK(client->stats().connects == 1);  // lazily: one is enough so far
  env.mock->SetDelayMs(50);
  constexpr size_t kN = 300;
  Collector c(kN);
  SendMany(*client, c, kN);
  CHECK(c.StatusCounts() == std::map<int, size_t>{{200, kN}});
  CHECK(client->stats().connects == 2);
  CHECK(env.mock->connections_accepted() == 2);
  CHECK(client->stats().resent == 0);
}

TEST_CASE("apns: connect failures back off, never a tight loop", "[push][apns]") {
  uint16_t dead_port;
  {
    Env env;
    dead_port = env.mock->port();
  }  // mock stopped: connections to the port are refused
  Pki& pki = SharedPki();
  ApnsClientOptions o;
  o.endpoint.host = "127.0.0.1";
  o.endpoint.port = dead_port;
  o.endpoint.ca_pem = pki.ca->cert_pem();
  o.cert_pem = pki.push.cert_pem;
  o.key_pem = pki.push.key_pem;
  o.connect_backoff_initial_ms = 100;
  o.connect_backoff_max_ms = 1000;
  o.request_timeout_ms = 2000;
  auto r = ApnsClient::Create(o);
  REQUIRE(r.ok());
  auto client = std::move(r).value();
  auto start = Clock::now();
  double cpu_start = CpuSeconds();
  ApnsResponse a = SendOne(*client, Req(1), 5s);
  auto elapsed = Clock::now() - start;
  CHECK(CpuSeconds() - cpu_start < 0.5);  // waiting, not spinning
  CHECK(a.status == 0);
  CHECK(a.error == "timeout");
  CHECK(elapsed >= 1900ms);
  auto s = client->stats();
  CHECK(s.connects == 0);
  CHECK(s.connect_failures >= 2);
  CHECK(s.connect_failures <= 2 * 10);  // each of the 2 pooled slots backs off on its own
}

TEST_CASE("apns: a rejected client certificate backs off too", "[push][apns]") {
  Env env;
  auto other_ca = TestCa::Create("Not the APNs CA");
  IssueOptions po;
  po.uid = kTopic;
  Identity stranger = other_ca->Issue(po);
  auto o = env.Options(1);
  o.cert_pem = stranger.cert_pem;
  o.key_pem = stranger.key_pem;
  o.request_timeout_ms = 1500;
  auto client = env.Client(o);
  ApnsResponse a = SendOne(*client, Req(1), 5s);
  CHECK(a.status == 0);
  CHECK(a.error == "timeout");
  auto s = client->stats();
  CHECK(s.connects == 0);
  CHECK(s.connect_failures >= 1);
  CHECK(s.connect_failures <= 8);
  CHECK(env.mock->Received().empty());
}

TEST_CASE("apns: the server certificate is verified", "[push][apns]") {
  Env env;
  auto other_ca = TestCa::Create("Unrelated CA");
  auto o = env.Options(1);
  o.endpoint.ca_pem = other_ca->cert_pem();
  o.request_timeout_ms = 500;
  auto client = env.Client(o);
  ApnsResponse a = SendOne(*client, Req(1), 5s);
  CHECK(a.status == 0);
  CHECK(client->stats().connect_failures >= 1);
  CHECK(env.mock->connections_accepted() == 0);

  // Host name check: the certificate names 127.0.0.1 and localhost only.
  auto o2 = env.Options(1);
  o2.endpoint.host = "localhost";
  auto client2 = env.Client(o2);
  CHECK(SendOne(*client2, Req(2)).status == 200);
}

TEST_CASE("apns: request timeout fails the request and keeps the connection", "[push][apns]") {
  Env env;
  auto o = env.Options(1);
  o.request_timeout_ms = 300;
  auto client = env.Client(o);
  // The timeout also covers the connect and TLS handshake, which a loaded
  // sanitizer run can stretch past 300 ms: a timed-out request leaves the
  // connection being set up, so the next attempt finds it.
  auto send_until_ok = [&](size_t token) {
    ApnsResponse r;
    for (int attempt = 0; attempt < 20; ++attempt) {
      r = SendOne(*client, Req(token));
      if (r.status == 200) break;
      REQUIRE(r.error == "timeout");
    }
    return r;
  };
  REQUIRE(send_until_ok(100000).status == 200);
  env.mock->SetDelayMs(1500);
  ApnsResponse a = SendOne(*client, Req(1), 5s);
  CHECK(a.status == 0);  // the answer would be 200, 1.5 s later
  CHECK(a.error == "timeout");
  env.mock->SetDelayMs(0);
  CHECK(send_until_ok(2).status == 200);
  CHECK(client->stats().connects == 1);
  CHECK(client->stats().in_flight == 0);
}

TEST_CASE("apns: idle connections are pinged and kept", "[push][apns]") {
  Env env;
  auto o = env.Options(1);
  o.ping_after_idle_ms = 40;
  o.ping_timeout_ms = 2000;
  auto client = env.Client(o);
  REQUIRE(SendOne(*client, Req(100000)).status == 200);
  double cpu_start = CpuSeconds();
  REQUIRE(WaitUntil([&] { return client->stats().pings >= 3; }, 5000ms));
  CHECK(CpuSeconds() - cpu_start < 0.3);
  CHECK(SendOne(*client, Req(1)).status == 200);
  auto s = client->stats();
  CHECK(s.connects == 1);
  CHECK(s.connect_failures == 0);
  CHECK(env.mock->connections_accepted() == 1);
}

TEST_CASE("apns: queue bound, invalid requests and shutdown", "[push][apns]") {
  Env env;
  auto o = env.Options(1);
  o.max_queued = 3;
  auto client = env.Client(o);
  REQUIRE(SendOne(*client, Req(100000)).status == 200);
  env.mock->SetDelayMs(10000);
  env.mock->SetMaxConcurrentStreams(1);
  REQUIRE(WaitUntil([&] { return client->stats().max_concurrent_streams == 1; }, 5000ms));
  constexpr size_t kN = 8;
  Collector c(kN);
  client->Send(Req(0), c.Callback(0));  // takes the only stream
  REQUIRE(WaitUntil([&] { return client->stats().in_flight == 1; }, 5000ms));
  for (size_t i = 1; i < 7; ++i) client->Send(Req(i), c.Callback(i));  // 3 wait, 3 rejected
  ApnsRequest bad = Req(7);
  bad.device_token_hex = "not-hex";
  client->Send(bad, c.Callback(7));
  REQUIRE(c.Wait(4, 5s));
  for (size_t i = 4; i < 7; ++i) {
    CHECK(c.Get(i).status == 0);
    CHECK(c.Get(i).error == "queue full");
  }
  CHECK_THAT(c.Get(7).error, Catch::StartsWith("invalid request"));
  CHECK(client->stats().queued == 3);
  client.reset();  // fails everything outstanding, callbacks before returning
  CHECK(c.done() == kN);
  CHECK(c.ExactlyOnce());
  for (size_t i = 0; i < 4; ++i) CHECK(c.Get(i).error == "client shut down");
}

TEST_CASE("apns: bad credentials are refused by Create", "[push][apns]") {
  Pki& pki = SharedPki();
  ApnsClientOptions o;
  o.endpoint.host = "127.0.0.1";
  o.cert_pem = pki.push.cert_pem;
  o.key_pem = pki.server.key_pem;  // not this certificate's key
  auto r = ApnsClient::Create(o);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kInvalidArgument);
  CHECK_THAT(r.status().message(), Catch::Contains("does not match"));
  o.key_pem = "garbage";
  r = ApnsClient::Create(o);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.status().message(), Catch::Contains("key_pem"));
  o.key_pem = pki.push.key_pem;
  o.cert_pem.clear();
  r = ApnsClient::Create(o);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.status().message(), Catch::Contains("cert_pem"));
}

TEST_CASE("apns: 10,000 pushes on one connection", "[push][apns]") {
  Env env;
  auto client = env.Client(env.Options(1));
  constexpr size_t kN = 10000;
  Collector c(kN);
  auto start = Clock::now();
  SendMany(*client, c, kN);
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  WARN("10000 pushes in " << secs << " s (" << kN / secs << "/s)");
  CHECK(c.StatusCounts() == std::map<int, size_t>{{200, kN}});
  CHECK(c.ExactlyOnce());
  auto s = client->stats();
  CHECK(s.connects == 1);
  CHECK(s.resent == 0);
  CHECK(env.mock->requests_answered() == kN);
  CHECK(env.mock->connections_accepted() == 1);
}

// Throughput, run by hand: apns_client_test "[.bench]"
TEST_CASE("apns: bench 100,000 pushes", "[.bench]") {
  for (int conns : {1, 2}) {
    Env env(1000, /*record=*/false);
    auto o = env.Options(conns);
    o.max_queued = 1000000;
    auto client = env.Client(o);
    REQUIRE(SendOne(*client, Req(999999)).status == 200);  // connect outside the timing
    constexpr size_t kN = 100000;
    std::atomic<size_t> ok{0}, done{0};
    std::mutex mu;
    std::condition_variable cv;
    auto start = Clock::now();
    for (size_t i = 0; i < kN; ++i) {
      client->Send(Req(i), [&](const ApnsResponse& r) {
        if (r.status == 200) ok++;
        if (++done == kN) {
          std::lock_guard<std::mutex> lock(mu);
          cv.notify_all();
        }
      });
    }
    {
      std::unique_lock<std::mutex> lock(mu);
      REQUIRE(cv.wait_for(lock, 120s, [&] { return done.load() == kN; }));
    }
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    auto s = client->stats();
    WARN("connections=" << conns << " pushes=" << kN << " ok=" << ok.load() << " seconds=" << secs
                        << " pushes_per_s=" << kN / secs << " connects=" << s.connects);
    CHECK(ok.load() == kN);
  }
}
