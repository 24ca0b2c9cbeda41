// Push certificates (PEM, PKCS#12, sealed at rest) and PushService outcome
// handling against a scripted ApnsClient (the real client and the mock APNs
// are exercised in tests/unit/push and the integration tests).
#include <catch2/catch.hpp>

#include <openssl/pem.h>
#include <openssl/pkcs12.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>

#include "events/events.h"
#include "push/push.h"
#include "push/push_service.h"
#include "store/records.h"
#include "support/orchardd_process.h"
#include "support/test_pki.h"
#include "util/encoding.h"
#include "util/secret_box.h"

using namespace orchard;

namespace {

testing::Identity PushIdentity(testing::TestCa& ca, const std::string& topic, int64_t not_after_s = 365 * 86400,
                               int64_t not_before_s = -3600) {
  testing::IssueOptions o;
  o.common_name = "APSP:" + topic;
  o.uid = topic;
  o.not_after_offset_s = not_after_s;
  o.not_before_offset_s = not_before_s;
  return ca.Issue(o);
}


struct TempStore {
  std::string dir = testing::MakeTempDir("orchard-push");
  std::unique_ptr<store::Store> db = std::move(store::Store::Open({.path = dir + "/db"}).value());
  std::unique_ptr<events::EventLog> log = std::move(events::EventLog::Open(db.get()).value());
  ~TempStore() {
    log.reset();
    db.reset();
    std::filesystem::remove_all(dir);
  }
  std::vector<events::Event> Events() { return log->Read(0, 10000).value(); }
};

// Answers each request from a script keyed by device token (hex); default 200.
class ScriptedClient : public push::ApnsClient {
 public:
  explicit ScriptedClient(std::map<std::string, std::vector<push::ApnsResponse>>* script,
                          std::vector<push::ApnsRequest>* seen)
      : script_(script), seen_(seen) {}
  void Send(push::ApnsRequest request, push::ApnsCallback done) override {
    seen_->push_back(request);
    push::ApnsResponse r{200, request.apns_id, "", 0, ""};
    auto it = script_->find(request.device_token_hex);
    if (it != script_->end() && !it->second.empty()) {
      r = it->second.front();
      it->second.erase(it->second.begin());
      if (r.apns_id.empty()) r.apns_id = request.apns_id;
    }
    done(r);
  }
  Stats stats() const override { return {}; }

 private:
  std::map<std::string, std::vector<push::ApnsResponse>>* script_;
  std::vector<push::ApnsRequest>* seen_;
};

// Keeps every request unanswered until the test answers it (an APNs that is
// down or slow); answers run on the test's thread.
class HoldingClient : public push::ApnsClient {
 public:
  struct Sent {
    push::ApnsRequest request;
    push::ApnsCallback done;
  };
  void Send(push::ApnsRequest request, push::ApnsCallback done) override {
    std::lock_guard lock(mu_);
    sent_.push_back({std::move(request), std::move(done)});
    cv_.notify_all();
  }
  Stats stats() const override { return {}; }
  // Waits until `n` requests were sent in all.
  bool WaitSent(size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return sent_.size() >= n; });
  }
  size_t sent() {
    std::lock_guard lock(mu_);
    return sent_.size();
  }
  push::ApnsRequest Request(size_t i) {
    std::lock_guard lock(mu_);
    return sent_.at(i).request;
  }
  // Answers request i (once).
  void Answer(size_t i, int status, const std::string& reason = "") {
    push::ApnsCallback done;
    push::ApnsResponse r;
    {
      std::lock_guard lock(mu_);
      done = std::move(sent_.at(i).done);
      r = {status, sent_[i].request.apns_id, reason, 0, ""};
    }
    if (status == 0) {
      r.failure = push::ApnsFailure::kTimeout;
      r.error = "timeout";
    }
    done(r);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Sent> sent_;
};

struct PushCertFixture {
  TempStore t;
  std::unique_ptr<testing::TestCa> ca = testing::TestCa::Create("CA");
  std::string topic = "com.apple.mgmt.External.fixture";
  push::PushCertStore certs{t.db.get(), nullptr};
  PushCertFixture() {
    auto id = PushIdentity(*ca, topic);
    REQUIRE(certs.Put(push::ParsePushCert(id.cert_pem + id.key_pem).value()).ok());
  }
  push::Target Target(const std::string& eid, char tok) {
    return push::Target{eid, topic, std::string(32, tok), "magic-" + eid};
  }
};

}  // namespace

TEST_CASE("push certificates: PEM in any order, topic and not_after", "[push]") {
  auto ca = testing::TestCa::Create("Apple WWDR (test)");
  auto id = PushIdentity(*ca, "com.apple.mgmt.External.1234");
  for (const std::string& pem : {id.cert_pem + id.key_pem, id.key_pem + id.cert_pem}) {
    auto c = push::ParsePushCert(pem);
    REQUIRE(c.ok());
    CHECK(c->topic == "com.apple.mgmt.External.1234");
    CHECK(c->not_after_unix > NowMillis() / 1000 + 364 * 86400);
    CHECK(c->key_pem.find("PRIVATE KEY") != std::string::npos);
  }
}

TEST_CASE("push certificates: every bad upload is refused with the reason", "[push]") {
  auto ca = testing::TestCa::Create("CA");
  auto id = PushIdentity(*ca, "com.apple.mgmt.External.1");
  auto other = PushIdentity(*ca, "com.apple.mgmt.External.2");
  auto mismatched = push::ParsePushCert(id.cert_pem + other.key_pem);
  REQUIRE_FALSE(mismatched.ok());
  CHECK(mismatched.status().message().find("does not match") != std::string::npos);
  auto not_mdm = PushIdentity(*ca, "com.example.app");
  CHECK(push::ParsePushCert(not_mdm.cert_pem + not_mdm.key_pem).status().message().find("not an MDM topic") !=
        std::string::npos);
  auto no_uid = ca->Issue();
  CHECK(push::ParsePushCert(no_uid.cert_pem + no_uid.key_pem).status().message().find("UID") !=
        std::string::npos);
  auto expired = PushIdentity(*ca, "com.apple.mgmt.External.3", -86400, -2 * 86400);
  CHECK(push::ParsePushCert(expired.cert_pem + expired.key_pem).status().message().find("expired") !=
        std::string::npos);
  CHECK_FALSE(push::ParsePushCert(id.cert_pem).ok());  // no key
  CHECK_FALSE(push::ParsePushCert("garbage").ok());
}

TEST_CASE("push certificates: PKCS#12 with its password", "[push]") {
  auto ca = testing::TestCa::Create("CA");
  auto id = PushIdentity(*ca, "com.apple.mgmt.External.p12");
  std::string p12 = id.Pkcs12("s3cret");
  auto c = push::ParsePushCertPkcs12(p12, "s3cret");
  REQUIRE(c.ok());
  CHECK(c->topic == "com.apple.mgmt.External.p12");
  CHECK(push::ParsePushCertPkcs12(p12, "wrong").status().message().find("password") != std::string::npos);
  CHECK_FALSE(push::ParsePushCertPkcs12("not der", "x").ok());
}

TEST_CASE("secret box seals, detects tampering and wrong keys", "[push][util]") {
  auto box = SecretBox::FromKeyText(std::string(64, 'a'));
  REQUIRE(box.ok());
  std::string sealed = box->Seal("private key");
  CHECK(SecretBox::IsSealed(sealed));
  CHECK(sealed.find("private key") == std::string::npos);
  CHECK(box->Open(sealed).value() == "private key");
  std::string tampered = sealed;
  tampered[tampered.size() - 20] ^= 1;
  CHECK_FALSE(box->Open(tampered).ok());
  auto other = SecretBox::FromKeyText(std::string(64, 'b'));
  CHECK_FALSE(other->Open(sealed).ok());
  CHECK_FALSE(SecretBox::FromKeyText("short").ok());
  CHECK(SecretBox::FromKeyText(Base64Encode(std::string(32, 'k'))).ok());
}

TEST_CASE("push certificate keys are sealed at rest when a key is configured", "[push]") {
  TempStore t;
  auto ca = testing::TestCa::Create("CA");
  auto id = PushIdentity(*ca, "com.apple.mgmt.External.sealed");
  auto box = SecretBox::FromKeyText(std::string(64, 'c')).value();
  push::PushCertStore sealed_store(t.db.get(), &box);
  REQUIRE(sealed_store.Put(push::ParsePushCert(id.cert_pem + id.key_pem).value()).ok());
  auto raw = t.db->Get(store::Cf::kMeta, "pushcert/com.apple.mgmt.External.sealed").value();
  REQUIRE(raw);
  CHECK(raw->find("PRIVATE KEY") == std::string::npos);
  auto back = sealed_store.Get("com.apple.mgmt.External.sealed").value();
  REQUIRE(back);
  CHECK(back->key_pem.find("PRIVATE KEY") != std::string::npos);
  push::PushCertStore no_key(t.db.get(), nullptr);
  auto refused = no_key.Get("com.apple.mgmt.External.sealed");
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().message().find("encrypted") != std::string::npos);
  // Several topics at once; a second topic is a change of the enrollment topic: only with force.
  CHECK(sealed_store.CurrentTopic().value() == std::optional<std::string>("com.apple.mgmt.External.sealed"));
  auto id2 = PushIdentity(*ca, "com.apple.mgmt.External.second");
  auto second = push::ParsePushCert(id2.cert_pem + id2.key_pem).value();
  Status refused_change = sealed_store.Put(second);
  CHECK(refused_change.code() == Code::kFailedPrecondition);
  CHECK(refused_change.message().find("force=true") != std::string::npos);
  CHECK(sealed_store.List().value().size() == 1);
  REQUIRE(sealed_store.Put(second, /*force=*/true).ok());
  CHECK(sealed_store.List().value().size() == 2);
  CHECK(sealed_store.CurrentTopic().value() == std::optional<std::string>("com.apple.mgmt.External.second"));
  // Renewing the old topic's certificate keeps it, without force, and does not move the topic back.
  REQUIRE_FALSE(sealed_store.Put(push::ParsePushCert(id.cert_pem + id.key_pem).value()).ok());
  REQUIRE(sealed_store.Put(push::ParsePushCert(id2.cert_pem + id2.key_pem).value()).ok());
  CHECK(sealed_store.CurrentTopic().value() == std::optional<std::string>("com.apple.mgmt.External.second"));
}

TEST_CASE("PushService maps APNs answers to push state, events, retries and flags", "[push]") {
  TempStore t;
  auto ca = testing::TestCa::Create("CA");
  const std::string topic = "com.apple.mgmt.External.svc";
  auto id = PushIdentity(*ca, topic);
  push::PushCertStore certs(t.db.get(), nullptr);
  REQUIRE(certs.Put(push::ParsePushCert(id.cert_pem + id.key_pem).value()).ok());

  std::map<std::string, std::vector<push::ApnsResponse>> script;
  std::vector<push::ApnsRequest> seen;
  int clients_made = 0;
  push::PushServiceOptions o;
  o.retry_base_ms = 10;
  o.coalesce_ms = 60000;
  o.expiration_seconds = 3600;
  push::PushService svc(o, t.db.get(), t.log.get(), &certs, [&](const push::ApnsClientOptions& co) {
    ++clients_made;
    CHECK(co.cert_pem == certs.Get(topic).value()->cert_pem);
    return Result<std::unique_ptr<push::ApnsClient>>(std::make_unique<ScriptedClient>(&script, &seen));
  });
  auto target = [&](const std::string& eid, char tok) {
    return push::Target{eid, topic, std::string(32, tok), "magic-" + eid};
  };
  const std::string tok_gone = HexEncode(std::string(32, 'g'));
  const std::string tok_bad = HexEncode(std::string(32, 'b'));
  const std::string tok_busy = HexEncode(std::string(32, 'r'));
  script[tok_gone] = {{410, "", "Unregistered", 1700000000123, ""}};
  script[tok_bad] = {{400, "", "BadDeviceToken", 0, ""}};
  script[tok_busy] = {{429, "", "TooManyRequests", 0, ""}, {503, "", "ServiceUnavailable", 0, ""}};

  // Push() answers at once: every target is accepted with the apns-id Orchard assigned.
  auto out = svc.Push({target("OK", 'o'), target("GONE", 'g'), target("BAD", 'b'), target("BUSY", 'r')});
  REQUIRE(out.size() == 4);
  std::set<std::string> ids;
  for (const auto& o : out) {
    CHECK(o.ok);
    CHECK(o.refusal == push::PushRefusal::kNone);
    CHECK(o.apns_id.size() == 36);
    ids.insert(o.apns_id);
  }
  CHECK(ids.size() == 4);
  CHECK(clients_made == 1);

  // Retries: 429 then 503 then the default 200, with backoff, in the background,
  // all carrying the push's apns-id.
  REQUIRE(svc.WaitIdle(std::chrono::seconds(10)));
  REQUIRE(seen.size() == 6);
  // (seen is written by the retrying worker: read it only once idle.)
  // The request format; the apns-id sent is the one reported.
  const auto& first = seen.front();
  CHECK(first.device_token_hex == HexEncode(std::string(32, 'o')));
  CHECK(first.topic == topic);
  CHECK(first.push_magic == "magic-OK");
  CHECK(first.expiration_unix >= NowMillis() / 1000 + 3500);
  CHECK(first.apns_id == out[0].apns_id);

  for (const auto& r : seen)
    if (r.device_token_hex == tok_busy) CHECK(r.apns_id == out[3].apns_id);
  // Outcomes are recorded per enrollment.
  auto ok = svc.State("OK").value();
  REQUIRE(ok);
  CHECK(ok->last_status == 200);
  CHECK(ok->last_apns_id == out[0].apns_id);
  auto busy = svc.State("BUSY").value();
  REQUIRE(busy);
  CHECK(busy->last_status == 200);
  auto gone = svc.State("GONE").value();
  REQUIRE(gone);
  CHECK(gone->token_invalid_ms == 1700000000123);
  CHECK(gone->token_invalid_reason == "Unregistered");
  auto bad = svc.State("BAD").value();
  REQUIRE(bad);
  CHECK(bad->token_invalid_reason == "BadDeviceToken");

  // No further pushes to an invalid token (refused at once); duplicates coalesce.
  size_t before = seen.size();
  auto again = svc.Push({target("GONE", 'g'), target("BAD", 'b'), target("OK", 'o')});
  CHECK(seen.size() == before);
  CHECK_FALSE(again[0].ok);
  CHECK(again[0].refusal == push::PushRefusal::kTokenInvalid);
  CHECK(again[0].error.find("invalid") != std::string::npos);
  CHECK(again[1].refusal == push::PushRefusal::kTokenInvalid);
  CHECK(again[2].ok);  // coalesced with the earlier, delivered push
  CHECK(again[2].coalesced);
  CHECK(again[2].apns_id == out[0].apns_id);
  // Once the device has come since that push, a new push is sent.
  auto after_visit = target("OK", 'o');
  after_visit.last_seen_ms = NowMillis() + 1;
  CHECK(svc.Push({after_visit})[0].ok);
  CHECK(seen.size() == before + 1);

  // The invalid mark is about that token: a new token (after a TokenUpdate that a
  // late answer raced with) is pushed.
  before = seen.size();
  CHECK(svc.Push({target("GONE", 'n')})[0].ok);
  CHECK(seen.size() == before + 1);
  // Coalescing never hides a failure: after a failed push the next one is sent.
  const std::string tok_flaky = HexEncode(std::string(32, 'f'));
  script[tok_flaky] = {{400, "", "BadTopic", 0, ""}};
  before = seen.size();
  CHECK(svc.Push({target("FLAKY", 'f')})[0].ok);
  REQUIRE(svc.WaitIdle(std::chrono::seconds(10)));
  CHECK(svc.State("FLAKY").value()->last_reason == "BadTopic");
  CHECK(svc.Push({target("FLAKY", 'f')})[0].ok);
  CHECK(seen.size() == before + 2);

  // A 403 flags the topic: pushes for it are refused until a new certificate arrives.
  const std::string tok_cert = HexEncode(std::string(32, 'c'));
  script[tok_cert] = {{403, "", "BadCertificateEnvironment", 0, ""}};
  CHECK(svc.Push({target("CERT", 'c')})[0].ok);
  REQUIRE(svc.WaitIdle(std::chrono::seconds(10)));
  auto blocked = svc.Push({target("OTHER", 'x')});
  CHECK_FALSE(blocked[0].ok);
  CHECK(blocked[0].refusal == push::PushRefusal::kTopicDisabled);
  CHECK(blocked[0].error.find("disabled") != std::string::npos);
  svc.CertificateUpdated(topic);
  CHECK(svc.Push({target("OTHER2", 'y')})[0].ok);
  CHECK(clients_made == 2);
  // A target without a token, and a topic without a certificate, are refused at once.
  auto refused = svc.Push({push::Target{"NOTOKEN", topic, "", ""},
                           push::Target{"NOCERT", "com.apple.mgmt.External.none", std::string(32, 'z'), "m"}});
  CHECK(refused[0].refusal == push::PushRefusal::kNoToken);
  CHECK(refused[1].refusal == push::PushRefusal::kNoCertificate);
  CHECK(refused[1].error.find("no push certificate") != std::string::npos);

  // Events for what an admin must see.
  REQUIRE(svc.WaitIdle(std::chrono::seconds(10)));
  std::vector<std::string> types;
  for (auto& e : t.Events()) types.push_back(e.type);
  CHECK(std::count(types.begin(), types.end(), "push.unregistered") == 1);
  CHECK(std::count(types.begin(), types.end(), "push.rejected") == 2);  // BadDeviceToken, BadTopic
  CHECK(std::count(types.begin(), types.end(), "push.certificate_error") == 1);

  std::string metrics;
  svc.RenderMetrics(&metrics);
  CHECK(metrics.find("orchard_push_total{outcome=\"unregistered\"} 1") != std::string::npos);
  CHECK(metrics.find("orchard_push_certificate_days_left{topic=\"" + topic + "\"} 36") != std::string::npos);
  CHECK(metrics.find("orchard_push_pending 0") != std::string::npos);
}

TEST_CASE("certificate expiry warnings fire once per threshold crossed, in both catalogue names", "[push]") {
  TempStore t;
  auto ca = testing::TestCa::Create("CA");
  auto id = PushIdentity(*ca, "com.apple.mgmt.External.exp", 10 * 86400 + 3600);
  push::PushCertStore certs(t.db.get(), nullptr);
  REQUIRE(certs.Put(push::ParsePushCert(id.cert_pem + id.key_pem).value()).ok());
  push::PushService svc({}, t.db.get(), t.log.get(), &certs);
  REQUIRE(svc.CheckExpiry(NowMillis()).ok());
  REQUIRE(svc.CheckExpiry(NowMillis()).ok());
  auto evs = t.Events();
  // First seen 10 days out: 30 and 14 are crossed; one warning names 14 (not two, not twice).
  REQUIRE(evs.size() == 2);
  CHECK(evs[0].type == "push.certificate_expiring");
  CHECK(evs[1].type == "certificate.expiring");
  for (auto& e : evs) CHECK(e.payload_json.find("\"threshold_days\":14") != std::string::npos);
  CHECK(evs[1].payload_json.find("\"kind\":\"push\"") != std::string::npos);
  // Four days later the 7-day warning fires.
  REQUIRE(svc.CheckExpiry(NowMillis() + 4 * 86400 * 1000LL).ok());
  evs = t.Events();
  REQUIRE(evs.size() == 4);
  CHECK(evs[3].payload_json.find("\"threshold_days\":7") != std::string::npos);
}

TEST_CASE("a push waiting for APNs absorbs later pushes to the same token", "[push]") {
  PushCertFixture f;
  auto* held = new HoldingClient;
  std::unique_ptr<push::ApnsClient> owned(held);
  push::PushServiceOptions o;
  o.coalesce_ms = 0;  // joining a pending push does not depend on the delivered-push window
  o.retry_base_ms = 10;
  push::PushService svc(o, f.t.db.get(), f.t.log.get(), &f.certs, [&](const push::ApnsClientOptions&) {
    REQUIRE(owned);
    return Result<std::unique_ptr<push::ApnsClient>>(std::move(owned));
  });
  const auto target = f.Target("DEV", 'd');
  // APNs does not answer: three callers (enqueues, re-push rounds) push the same device.
  auto a = svc.Push({target});
  auto b = svc.Push({target});
  auto c = svc.Push({target, f.Target("OTHER", 'o')});
  REQUIRE(a[0].ok);
  CHECK_FALSE(a[0].coalesced);
  CHECK(b[0].ok);
  CHECK(b[0].coalesced);
  CHECK(b[0].apns_id == a[0].apns_id);
  CHECK(c[0].apns_id == a[0].apns_id);
  CHECK_FALSE(c[1].coalesced);  // another token is its own push
  CHECK(svc.Pending(target.token));
  REQUIRE(held->WaitSent(2, std::chrono::seconds(5)));
  CHECK(held->sent() == 2);  // one request per token

  // A retryable failure keeps it pending while it waits to retry: still joined.
  held->Answer(0, 503, "ServiceUnavailable");
  auto d = svc.Push({target});
  CHECK(d[0].apns_id == a[0].apns_id);
  CHECK(svc.Pending(target.token));
  REQUIRE(held->WaitSent(3, std::chrono::seconds(5)));  // the retry, same apns-id
  CHECK(held->Request(2).apns_id == a[0].apns_id);
  held->Answer(2, 200);
  held->Answer(1, 200);
  REQUIRE(svc.WaitIdle(std::chrono::seconds(5)));
  CHECK_FALSE(svc.Pending(target.token));
  CHECK(held->sent() == 3);
  CHECK(svc.State("DEV").value()->last_status == 200);
  CHECK(svc.counters().coalesced == 3);
  // Delivered, and joining on delivered pushes is off: the next push is sent.
  auto e = svc.Push({target});
  CHECK_FALSE(e[0].coalesced);
  CHECK(e[0].apns_id != a[0].apns_id);
  REQUIRE(held->WaitSent(4, std::chrono::seconds(5)));
  held->Answer(3, 200);
  REQUIRE(svc.WaitIdle(std::chrono::seconds(5)));
}

TEST_CASE("push outcome handling survives throwing clients and factories", "[push]") {
  PushCertFixture f;
  std::map<std::string, std::vector<push::ApnsResponse>> script;
  std::vector<push::ApnsRequest> seen;
  std::atomic<bool> factory_throws{false};
  // Sends to this token throw (a broken client must not take the service down).
  const std::string tok_throw = HexEncode(std::string(32, 't'));
  class ThrowingClient : public push::ApnsClient {
   public:
    ThrowingClient(ScriptedClient inner, std::string bad) : inner_(std::move(inner)), bad_(std::move(bad)) {}
    void Send(push::ApnsRequest r, push::ApnsCallback done) override {
      if (r.device_token_hex == bad_) throw std::runtime_error("client exploded");
      inner_.Send(std::move(r), std::move(done));
    }
    Stats stats() const override { return {}; }

   private:
    ScriptedClient inner_;
    std::string bad_;
  };
  push::PushServiceOptions o;
  o.retry_base_ms = 10;
  o.retry_max = 2;
  push::PushService svc(o, f.t.db.get(), f.t.log.get(), &f.certs, [&](const push::ApnsClientOptions&) {
    return Result<std::unique_ptr<push::ApnsClient>>(
        std::make_unique<ThrowingClient>(ScriptedClient(&script, &seen), tok_throw));
  });
  // A send that throws is a failed attempt, retried, then given up.
  auto out = svc.Push({f.Target("THROW", 't')});
  CHECK(out[0].ok);
  REQUIRE(svc.WaitIdle(std::chrono::seconds(10)));
  auto st = svc.State("THROW").value();
  REQUIRE(st);
  CHECK(st->last_status == 0);
  CHECK(st->last_reason.find("client exploded") != std::string::npos);
  CHECK(st->failures == 3);  // the first send and two retries
  CHECK(svc.counters().failed == 1);

  // The retry of a 503 needs a new client (the certificate was replaced) and the
  // factory throws, on the worker thread: the push is given up, the worker lives on.
  auto held = std::make_shared<HoldingClient>();
  class Forward : public push::ApnsClient {
   public:
    explicit Forward(std::shared_ptr<HoldingClient> h) : h_(std::move(h)) {}
    void Send(push::ApnsRequest r, push::ApnsCallback done) override { h_->Send(std::move(r), std::move(done)); }
    Stats stats() const override { return {}; }

   private:
    std::shared_ptr<HoldingClient> h_;
  };
  push::PushService svc2(o, f.t.db.get(), f.t.log.get(), &f.certs, [&](const push::ApnsClientOptions&) {
    if (factory_throws) throw std::runtime_error("factory exploded");
    return Result<std::unique_ptr<push::ApnsClient>>(std::make_unique<Forward>(held));
  });
  CHECK(svc2.Push({f.Target("BUSY", 'b')})[0].ok);
  REQUIRE(held->WaitSent(1, std::chrono::seconds(5)));
  svc2.CertificateUpdated(f.topic);  // drops the client
  factory_throws = true;
  held->Answer(0, 503, "ServiceUnavailable");
  REQUIRE(svc2.WaitIdle(std::chrono::seconds(10)));
  CHECK_FALSE(svc2.Pending(std::string(32, 'b')));
  CHECK(svc2.State("BUSY").value()->last_status == 503);
  CHECK(held->sent() == 1);
  // On the caller's thread the factory's exception is a refusal, not an exception.
  auto refused = svc2.Push({f.Target("NEW", 'n')});
  CHECK_FALSE(refused[0].ok);
  CHECK(refused[0].refusal == push::PushRefusal::kUnavailable);
  CHECK(refused[0].error.find("factory exploded") != std::string::npos);
  // Everything still works once the factory does.
  factory_throws = false;
  CHECK(svc2.Push({f.Target("NEW", 'n')})[0].ok);
  REQUIRE(held->WaitSent(2, std::chrono::seconds(5)));
  held->Answer(1, 200);
  REQUIRE(svc2.WaitIdle(std::chrono::seconds(10)));
  CHECK(svc2.State("NEW").value()->last_status == 200);
}
