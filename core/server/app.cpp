#include "server/app.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <set>

#include "api/admin_api.h"
#include "automation/device_watch.h"
#include "automation/runner.h"
#include "automation/scheduler.h"
#include "automation/store_host.h"
#include "domain/commands.h"
#include "plist/plist.h"
#include "plugin/plugin_set.h"
#include "policy/policy_set.h"
#include "auth/auth.h"
#include "events/events.h"
#include "http/metrics.h"
#include "http/server.h"
#include "log/log.h"
#include "domain/enrollments.h"
#include "enroll/ca.h"
#include "enroll/challenges.h"
#include "enroll/issued.h"
#include "ddm/service.h"
#include "enroll/scep.h"
#include "protocol/service.h"
#include "push/push.h"
#include "push/push_service.h"
#include "server/housekeeping.h"
#include "server/enroll_route.h"
#include "server/repush.h"
#include "queue/queue.h"
#include "store/store.h"
#include "util/encoding.h"
#include "util/secret_box.h"

namespace orchard::server {

const char kVersion[] = "0.1.0";

namespace {

constexpr const char* kLog = "server";
// Seconds a client is asked to wait when the disk is full (RocksDB 7.8 checks
// for free space again every 5 s and resumes writes by itself).
constexpr const char* kRetryAfterSeconds = "30";
// Retention deletes in batches of this many records per write.
constexpr size_t kRetentionBatch = 10000;

// Metric label for a device message: only known kinds, so that a client cannot
// create new series (or break the exposition format) with made-up MessageTypes.
std::string KindLabel(const std::string& kind) {
  static const std::set<std::string> kKnown = {
      "Authenticate", "TokenUpdate",  "CheckOut", "UserAuthenticate", "SetBootstrapToken",
      "GetBootstrapToken", "GetToken", "DeclarativeManagement", "Idle", "Acknowledged", "Error",
      "CommandFormatError", "NotNow", "checkin", "report"};
  return kKnown.count(kind) ? kind : "other";
}

// Orchard's CA records as the device service sees them (takeover checks, revocation).
class IssuedLookup : public protocol::IssuedCertLookup {
 public:
  explicit IssuedLookup(enroll::IssuedCerts* issued) : issued_(issued) {}
  Result<std::optional<protocol::IssuedInfo>> Issued(const std::string& cert_sha256) override {
    auto c = issued_->BySha256(cert_sha256);
    if (!c.ok()) return c.status();
    if (!c->has_value()) return std::optional<protocol::IssuedInfo>();
    return std::optional<protocol::IssuedInfo>(
        protocol::IssuedInfo{(*c)->udid, (*c)->revoked, (*c)->renewed_from_sha256});
  }
  bool Revoked(const std::string& cert_sha256) override { return issued_->IsRevoked(cert_sha256); }

 private:
  enroll::IssuedCerts* issued_;
};

// ctx:renewal_profile() for policies: the enrollment's bound certificate and
// the enroll route's renewal profile.
class Renewals : public automation::RenewalProfiles {
 public:
  Renewals(domain::Enrollments* enrollments, EnrollRoute* route) : enrollments_(enrollments), route_(route) {}
  Result<std::optional<std::string>> RenewalProfile(const std::string& enrollment_id) override {
    auto e = enrollments_->Get(enrollment_id);
    if (!e.ok()) return e.status();
    if (!e->has_value() || (*e)->cert_sha256.empty() || (*e)->state == store::EnrollmentState::kCheckedOut ||
        !(*e)->parent_id.empty())
      return std::optional<std::string>();
    auto profile = route_->RenewalProfile(enrollment_id, (*e)->cert_sha256);
    if (!profile.ok()) return profile.status();
    return std::optional<std::string>(std::move(profile).value());
  }

 private:
  domain::Enrollments* enrollments_;
  EnrollRoute* route_;
};

class AppImpl : public App {
 public:
  AppImpl(const config::Config& c, const TestHooks& hooks) : config_(c), hooks_(hooks) {}
  ~AppImpl() override { Stop(); }

  Status Init() {
    std::error_code ec;
    std::filesystem::create_directories(config_.data_dir, ec);
    if (ec) return Status::Io("data_dir " + config_.data_dir + ": " + ec.message());
    auto wal_recovery = store::ParseWalRecovery(config_.store_wal_recovery);
    if (!wal_recovery)
      return Status::InvalidArgument("store.wal_recovery: expected strict or point_in_time");
    if (*wal_recovery == store::WalRecovery::kPointInTime)
      log::Warn(kLog, "event=wal_recovery_point_in_time detail=\"a damaged write-ahead log will be "
                      "cut at the damage, discarding acknowledged writes after it; set "
                      "store.wal_recovery back to strict once the store has opened\"");
    auto st = store::Store::Open({.path = config_.data_dir + "/db",
                                  .sync = config_.store_sync,
                                  .wal_recovery = *wal_recovery,
                                  .env = hooks_.store_env});
    if (!st.ok()) return st.status();
    store_ = std::move(st.value());
    auto ev = events::EventLog::Open(store_.get());
    if (!ev.ok()) return ev.status();
    events_ = std::move(ev.value());
    queue_ = std::make_unique<queue::CommandQueue>(store_.get());
    enrollments_ = std::make_unique<domain::Enrollments>(store_.get());
    if (!config_.push_key_encryption_key.empty()) {
      auto box = SecretBox::FromKeyText(config_.push_key_encryption_key);
      if (!box.ok()) return Status::InvalidArgument("push.key_encryption_key: " + box.status().message());
      secret_box_ = std::make_unique<SecretBox>(std::move(box.value()));
    } else {
      log::Warn(kLog, "event=push_keys_unencrypted detail=\"set push.key_encryption_key or "
                      "ORCHARD_PUSH_KEY to seal push certificate keys and the device CA key at rest\"");
    }
    // The device CA (generated on the first start unless provided) and SCEP.
    auto ca = enroll::DeviceCa::Load({.dir = config_.data_dir + "/ca",
                                      .cert_file = config_.enroll_ca_cert_file,
                                      .key_file = config_.enroll_ca_key_file,
                                      .box = secret_box_.get()});
    if (!ca.ok()) return Status(ca.status().code(), "enroll: " + ca.status().message());
    device_ca_ = std::move(ca.value());
    issued_ = std::make_unique<enroll::IssuedCerts>(store_.get());
    if (Status st = issued_->LoadRevoked(); !st.ok()) return st;
    issued_lookup_ = std::make_unique<IssuedLookup>(issued_.get());
    challenges_ = std::make_unique<enroll::Challenges>(store_.get(), config_.enroll_scep_challenge);
    scep_ = std::make_unique<enroll::ScepServer>(
        enroll::ScepOptions{.cert_validity_days = config_.enroll_cert_validity_days},
        enroll::ScepDeps{device_ca_.get(), issued_.get(), challenges_.get(), store_.get()});
    // Orchard's own device CA is always trusted, besides auth.device_ca files.
    auto au = auth::Authenticator::Create({.device_ca_files = config_.device_ca_files,
                                           .device_ca_ders = {device_ca_->cert_der()},
                                           .insecure_allow_anonymous = config_.insecure_dev});
    if (!au.ok()) return Status::InvalidArgument("auth.device_ca: " + au.status().message());
    auth_ = std::move(au.value());
    push_certs_ = std::make_unique<push::PushCertStore>(store_.get(), secret_box_.get());
    // The enrollment profile at /mdm/enroll; its topic is the push certificates' current one.
    auto enroll_route = EnrollRoute::Create(
        config_, enroll::EnrollDeps{device_ca_.get(), challenges_.get(), issued_.get(), store_.get(), nullptr,
                                    [this] { return push_certs_->CurrentTopic(); }});
    if (!enroll_route.ok()) return enroll_route.status();
    enroll_route_ = std::move(enroll_route).value();
    auto endpoint = push::ParseEndpoint(config_.push_endpoint);
    if (!endpoint.ok()) return Status::InvalidArgument("push.endpoint: " + endpoint.status().message());
    endpoint->ca_file = config_.push_ca_file;
    push::PushServiceOptions po;
    po.endpoint = *endpoint;
    po.connections = config_.push_connections;
    po.expiration_seconds = config_.push_expiration_seconds;
    po.coalesce_ms = config_.push_coalesce_ms;
    po.retry_max = config_.push_retry_max;
    po.retry_base_ms = config_.push_retry_base_ms;
    po.expiry_warn_days = config_.push_expiry_warn_days;
    push_ = std::make_unique<push::PushService>(po, store_.get(), events_.get(), push_certs_.get());

    commands_ = std::make_unique<domain::CommandService>(
        domain::CommandDeps{events_.get(), queue_.get(), enrollments_.get(), &locks_, push_.get()});
    // The automation host: events -> consumers (Lua policies, plugins) -> the command path.
    automation_ = std::make_unique<automation::AutomationStore>(store_.get(), enrollments_.get(), queue_.get());
    renewals_ = std::make_unique<Renewals>(enrollments_.get(), enroll_route_.get());
    automation_->SetRenewalProfiles(renewals_.get());
    committer_ = std::make_unique<automation::StoreCommitter>(automation::CommitterDeps{
        automation_.get(), events_.get(), commands_.get(), enrollments_.get(), &locks_});
    event_source_ = std::make_unique<automation::LogSource>(events_.get());
    automation::RunnerOptions ro;
    ro.max_attempts = config_.automation_max_attempts;
    runner_ = std::make_unique<automation::Runner>(ro, event_source_.get(), committer_.get());
    protocol::ServiceOptions so;
    so.limits = {config_.max_body_bytes, config_.max_plist_depth};
    so.user_authenticate_digest = config_.user_authenticate_digest;
    so.max_deliveries = config_.queue_max_deliveries;
    so.cert_warn_days = config_.certificate_expiry_warn_days;
    so.max_user_channels = config_.max_user_channels;
    so.reenroll = config_.enroll_reenroll == "allow"  ? protocol::ReenrollPolicy::kAllow
                  : config_.enroll_reenroll == "deny" ? protocol::ReenrollPolicy::kDeny
                                                      : protocol::ReenrollPolicy::kApprove;
    ddm::DdmOptions ddo;
    ddo.limits.max_declaration_bytes = config_.max_body_bytes;
    ddo.status_limits.max_report_bytes = config_.max_body_bytes;
    ddo.status_limits.keep_raw_reports = static_cast<size_t>(config_.ddm_keep_status_reports);
    ddo.enable_on_enroll = config_.ddm_enable_on_enroll;
    ddo.manifest_cache_items = config_.ddm_manifest_cache_items;
    ddo.keep_assignments = config_.ddm_keep_assignments;
    ddo.references = config_.ddm_references == "off"      ? ddm::ReferenceCheck::kOff
                     : config_.ddm_references == "refuse" ? ddm::ReferenceCheck::kRefuse
                                                          : ddm::ReferenceCheck::kWarn;
    ddm_ = std::make_unique<ddm::DdmService>(
        ddo, ddm::DdmDeps{store_.get(), events_.get(), queue_.get(), enrollments_.get(), &locks_, commands_.get()});
    automation_->SetDdm(ddm_.get());  // policies' and plugins' ddm.* calls
    service_ = std::make_unique<protocol::Service>(
        so, protocol::Deps{store_.get(), events_.get(), queue_.get(), auth_.get(),
                           enrollments_.get(), &locks_,
                           config_.events_device_idle == "always" ? nullptr : runner_.get(),
                           issued_lookup_.get(), ddm_.get()});
    scheduler_ = std::make_unique<automation::Scheduler>(automation::SchedulerOptions{}, store_.get(),
                                                         events_.get(), enrollments_.get());
    device_watch_ = std::make_unique<automation::DeviceWatch>(
        automation::DeviceWatchOptions{config_.device_silent_days, config_.certificate_expiry_warn_days},
        store_.get(), events_.get(), enrollments_.get());
    policy::PolicySetOptions pso;
    pso.dir = config_.policy_dir;
    pso.limits.instructions = static_cast<uint64_t>(config_.policy_instruction_budget);
    pso.limits.pattern_steps = static_cast<uint64_t>(config_.policy_instruction_budget);
    pso.limits.memory_bytes = static_cast<size_t>(config_.policy_memory_mb) << 20;
    pso.limits.wall_ms = config_.policy_deadline_ms;
    pso.lanes = config_.policy_lanes;
    pso.watch_interval_ms = config_.policy_watch_seconds * 1000;
    policies_ = std::make_unique<policy::PolicySet>(pso, runner_.get(), automation_.get(), scheduler_.get());
    if (!config_.policy_dir.empty()) {
      Status st = policies_->Start();
      if (!st.ok()) return Status::InvalidArgument("policy.dir: " + st.message());
    }
    plugin::PluginSetOptions plo;
    plo.dir = config_.plugin_dir;
    plo.default_lanes = config_.plugin_lanes;
    for (const auto& section : config_.plugin_configs) {
      plist::Value json = plist::Value::MakeDict();
      for (const auto& kv : section.second) json.Set(kv.first, plist::Value::String(kv.second));
      plo.configs[section.first] = plist::ToJson(json);
    }
    plugins_ = std::make_unique<plugin::PluginSet>(
        plo, plugin::PluginSetDeps{runner_.get(), automation_.get(), automation_.get(), scheduler_.get()});
    if (!config_.plugin_dir.empty()) {
      Status st = plugins_->Start();  // a refused plugin is listed, not fatal
      if (!st.ok()) return Status::InvalidArgument("plugin.dir: " + st.message());
    }
    scheduler_->Start();

    api_ = std::make_unique<api::AdminApi>(
        api::Options{config_.api_key, config_.max_body_bytes, config_.max_plist_depth, kVersion,
                     config_.api_max_response_bytes},
        api::Deps{store_.get(), events_.get(), queue_.get(), enrollments_.get(), &locks_,
                  push_.get(), push_certs_.get(), commands_.get(), runner_.get(), automation_.get(),
                  policies_.get(), plugins_.get(), issued_.get(), challenges_.get(), ddm_.get()});
    RegisterCollectors();

    if (config_.insecure_dev)
      log::Warn(kLog, "event=INSECURE_DEVELOPMENT_MODE detail=\"devices without certificates are "
                      "trusted; never use this in production\"");
    if (config_.listen_host != "127.0.0.1" && config_.listen_host != "::1" &&
        config_.listen_host != "localhost")
      log::Warn(kLog, "event=listening_beyond_loopback host={} detail=\"put nginx in front; only "
                      "auth.trusted_proxies may supply the {} header\"",
                config_.listen_host, config_.cert_header);
    if (config_.api_key.empty())
      log::Warn(kLog, "event=admin_api_disabled detail=\"no api_key configured\"");

    auto srv = http::Server::Start({.host = config_.listen_host,
                                    .port = config_.listen_port,
                                    .threads = config_.threads,
                                    .max_request_bytes = config_.max_body_bytes,
                                    .max_connections = config_.max_connections,
                                    .metrics = &metrics_},
                                   [this](const http::Request& r) { return Dispatch(r); });
    if (!srv.ok()) return srv.status();
    server_ = std::move(srv.value());
    StartHousekeeping();
    return Status::Ok();
  }

  uint16_t port() const override { return server_ ? server_->port() : 0; }

  void Stop() override {
    if (server_) server_->Stop();
    if (policies_) policies_->Stop();
    if (plugins_) plugins_->Stop();  // unregisters, calls shutdown, unloads
    if (scheduler_) scheduler_->Stop();
    if (runner_) runner_->Stop();  // lanes finish their runs; uncommitted ones replay at start
    if (push_) push_->WaitIdle(std::chrono::seconds(2));  // write recorded outcomes
    if (housekeeper_) housekeeper_->Stop();
    server_.reset();
  }

 private:
  http::Response Dispatch(const http::Request& r) {
    const auto start = std::chrono::steady_clock::now();
    std::string route;
    http::Response resp = Route(r, &route);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    metrics_.ObserveRequest(route, resp.status, secs);
    return resp;
  }

  http::Response Route(const http::Request& r, std::string* route) {
    const std::string& p = r.path;
    if (p == "/mdm" || p == "/mdm/checkin" || p == "/mdm/connect") {
      *route = p == "/mdm" ? "mdm" : (p == "/mdm/checkin" ? "mdm_checkin" : "mdm_connect");
      if (r.method != "PUT" && r.method != "POST")
        return {405, "text/plain", "devices use PUT\n", {}};
      return Device(r, p == "/mdm" ? protocol::Endpoint::kAuto
                                   : (p == "/mdm/checkin" ? protocol::Endpoint::kCheckin
                                                          : protocol::Endpoint::kConnect));
    }
    if (p == "/mdm/enroll") {
      *route = "mdm_enroll";
      enroll::EnrollOutcome outcome = enroll::EnrollOutcome::kInternal;
      http::Response resp = enroll_route_->Handle(r, &outcome);
      metrics_.Increment(std::string("orchard_enroll_profile_requests_total{outcome=\"") +
                         enroll::EnrollOutcomeName(outcome) + "\"}");
      return resp;
    }
    if (p == "/scep" || p == "/scep/pkiclient.exe" || p == "/cgi-bin/pkiclient.exe") {
      *route = "scep";
      return Scep(r);
    }
    if (p == "/metrics") {
      *route = "metrics";
      if (!config_.metrics_enabled) return {404, "text/plain", "metrics disabled\n", {}};
      return {200, "text/plain; version=0.0.4", metrics_.Render(), {}};
    }
    if (p == "/healthz") {
      *route = "healthz";
      const store::Health h = store_->health();
      if (!h.healthy()) {
        http::Response resp{503, "text/plain", "unhealthy: store: " + h.reason + "\n", {}};
        if (!h.writable) resp.headers.emplace_back("Retry-After", kRetryAfterSeconds);
        return resp;
      }
      return {200, "text/plain", "ok\n", {}};
    }
    if (api::AdminApi::Owns(p)) {
      *route = api::AdminApi::RouteLabel(r);
      return api_->Handle(r);
    }
    *route = "not_found";
    return {404, "text/plain", "not found\n", {}};
  }

  http::Response Device(const http::Request& r, protocol::Endpoint endpoint) {
    if (r.body.size() > config_.max_body_bytes)
      return {413, "text/plain", "body exceeds the configured limit\n", {}};
    protocol::DeviceRequest req;
    req.endpoint = endpoint;
    req.content_type = r.Header("Content-Type");
    req.body = r.body;
    if (!config_.cert_header.empty()) {
      std::string_view header = r.Header(config_.cert_header);
      if (!header.empty()) {
        if (std::find(config_.trusted_proxies.begin(), config_.trusted_proxies.end(), r.peer) !=
            config_.trusted_proxies.end()) {
          req.presented.cert_header = header;
        } else {
          log::Warn(kLog, "event=cert_header_ignored peer={} reason=untrusted_proxy", log::Quote(r.peer));
        }
      }
    }
    req.presented.mdm_signature = r.Header("Mdm-Signature");
    req.presented.body = r.body;
    protocol::DeviceResponse d = service_->Handle(req);
    metrics_.Increment("orchard_device_messages_total{kind=\"" + KindLabel(d.kind) + "\",status=\"" +
                       std::to_string(d.status) + "\"}");
    if (d.status >= 400)
      log::Warn(kLog, "event=device_request_refused path={} kind={} status={} reason={}", log::Quote(r.path),
                log::Quote(d.kind), d.status, log::Quote(d.error));
    http::Response resp{d.status, d.content_type, std::move(d.body), {}};
    // The device service answers 503 only when storage is full for now.
    if (d.status == 503) resp.headers.emplace_back("Retry-After", kRetryAfterSeconds);
    return resp;
  }

  // SCEP (RFC 8894) for devices: no API key; PKIOperation is guarded by challenges.
  http::Response Scep(const http::Request& r) {
    enroll::ScepReply s = scep_->Handle(r.method, r.Param("operation"), r.Param("message"), r.body);
    http::Response resp{s.status, std::move(s.content_type), std::move(s.body), {}};
    if (s.status == 503) resp.headers.emplace_back("Retry-After", kRetryAfterSeconds);
    return resp;
  }

  void RegisterCollectors() {
    metrics_.AddCollector([this](std::string* out) {
      scep_->RenderMetrics(out);
      auto depth = queue_->Depth();
      *out += "# HELP orchard_queue_depth Commands queued across all enrollments.\n";
      *out += "# TYPE orchard_queue_depth gauge\n";
      *out += "orchard_queue_depth " + std::to_string(depth.ok() ? *depth : -1) + "\n";
      *out += "# HELP orchard_enrollments Enrollments by state.\n";
      *out += "# TYPE orchard_enrollments gauge\n";
      for (auto s : {store::EnrollmentState::kAuthenticated, store::EnrollmentState::kEnrolled,
                     store::EnrollmentState::kCheckedOut}) {
        auto n = enrollments_->CountInState(s);
        *out += std::string("orchard_enrollments{state=\"") + store::EnrollmentStateName(s) +
                "\"} " + std::to_string(n.ok() ? *n : -1) + "\n";
      }
      push_->RenderMetrics(out);
      const store::Health health = store_->health();
      *out += "# HELP orchard_store_errors_total Storage errors since start, by kind.\n";
      *out += "# TYPE orchard_store_errors_total counter\n";
      for (size_t k = 0; k < store::kErrorKinds; ++k)
        *out += std::string("orchard_store_errors_total{kind=\"") +
                store::ErrorKindName(static_cast<store::ErrorKind>(k)) + "\"} " +
                std::to_string(health.errors[k]) + "\n";
      *out += "# HELP orchard_store_writable 1 while the store accepts writes.\n";
      *out += "# TYPE orchard_store_writable gauge\n";
      *out += std::string("orchard_store_writable ") + (health.writable ? "1" : "0") + "\n";
      *out += "# HELP orchard_store_corrupt 1 once corruption was seen (until restart).\n";
      *out += "# TYPE orchard_store_corrupt gauge\n";
      *out += std::string("orchard_store_corrupt ") + (health.corrupt ? "1" : "0") + "\n";
      {
        auto consumers = runner_->Statuses();
        struct Series {
          const char* name;
          const char* type;
          const char* help;
          std::function<std::string(const automation::ConsumerStatus&)> value;
        };
        const Series series[] = {
            {"orchard_consumer_lag_seconds", "gauge", "Age of the oldest event a consumer has not handled yet.",
             [](const auto& c) { return std::to_string(static_cast<double>(c.lag_ms) / 1000.0); }},
            {"orchard_consumer_pending", "gauge", "Events waiting in a consumer's lanes.",
             [](const auto& c) { return std::to_string(c.pending); }},
            {"orchard_consumer_handled_total", "counter", "Handler runs since start.",
             [](const auto& c) { return std::to_string(c.handled); }},
            {"orchard_consumer_failed_total", "counter", "Failed handler runs since start (retried or parked).",
             [](const auto& c) { return std::to_string(c.failed); }},
            {"orchard_consumer_parked_total", "counter", "Events parked after repeated failures since start.",
             [](const auto& c) { return std::to_string(c.parked); }},
        };
        for (const auto& s : series) {
          *out += std::string("# HELP ") + s.name + " " + s.help + "\n# TYPE " + s.name + " " + s.type + "\n";
          for (const auto& c : consumers)  // names are [A-Za-z0-9._:-]: safe as label values
            *out += std::string(s.name) + "{consumer=\"" + c.name + "\"} " + s.value(c) + "\n";
        }
      }
      *out += "# HELP orchard_events_watermark Highest committed event sequence.\n";
      *out += "# TYPE orchard_events_watermark gauge\n";
      *out += "orchard_events_watermark " + std::to_string(events_->Watermark()) + "\n";
    });
  }

  void StartHousekeeping() {
    using std::chrono::milliseconds;
    using std::chrono::seconds;
    std::vector<Housekeeper::Task> tasks;
    tasks.push_back({"push_expiry_check", std::chrono::hours(1), milliseconds(0), [this](int64_t now) {
                       Status st = push_->CheckExpiry(now);
                       if (!st.ok())
                         log::Error(kLog, "event=expiry_check_failed error=\"{}\"", st.message());
                     }});
    const int64_t repush_s = config_.push_repush_interval_seconds;
    if (repush_s > 0) {
      tasks.push_back({"repush", seconds(repush_s), seconds(repush_s), [this, repush_s](int64_t now) {
                         auto n = RepushStale(store_.get(), enrollments_.get(), push_.get(),
                                              repush_s * 1000, now);
                         if (!n.ok())
                           log::Error(kLog, "event=repush_failed error=\"{}\"", n.status().message());
                       }});
    }
    tasks.push_back({"scep_challenge_sweep", std::chrono::hours(1), seconds(30), [this](int64_t now) {
                       auto n = challenges_->Sweep(now, kRetentionBatch);
                       if (!n.ok()) log::Error(kLog, "event=challenge_sweep_failed error={}", log::Quote(n.status().ToString()));
                       else if (*n) log::Info(kLog, "event=challenges_swept count={}", *n);
                     }});
    tasks.push_back({"retention", seconds(config_.sweep_interval_seconds), milliseconds(0),
                     [this](int64_t now) { Retention(now); }});
    tasks.push_back({"device_watch", seconds(60), seconds(5), [this](int64_t now) {
                       auto n = device_watch_->Round(now);
                       if (!n.ok()) log::Error(kLog, "event=device_watch_failed error={}", log::Quote(n.status().ToString()));
                       else if (*n) log::Info(kLog, "event=device_watch events={}", *n);
                     }});
    housekeeper_ = std::make_unique<Housekeeper>(std::move(tasks));
    housekeeper_->Start();
  }

  // Deletes every expired result and event, in bounded batches, until done (or
  // until the server stops).
  void Retention(int64_t now) {
    auto keep_going = [this] { return !housekeeper_->stop_requested(); };
    auto swept = queue_->SweepResults(now - config_.result_retention_hours * 3600 * 1000,
                                      kRetentionBatch, keep_going);
    if (!swept.ok()) log::Error(kLog, "event=sweep_failed error=\"{}\"", swept.status().message());
    else if (*swept) log::Info(kLog, "event=results_swept count={}", *swept);
    auto pruned = events_->Prune(config_.event_retention_hours * 3600 * 1000, kRetentionBatch,
                                 keep_going);
    if (!pruned.ok()) log::Error(kLog, "event=prune_failed error=\"{}\"", pruned.status().message());
    else if (*pruned) log::Info(kLog, "event=events_pruned count={}", *pruned);
    auto records = automation_->PruneRecords(now - config_.automation_record_retention_hours * 3600 * 1000);
    if (!records.ok()) log::Error(kLog, "event=record_prune_failed error={}", log::Quote(records.status().ToString()));
    else if (*records) log::Info(kLog, "event=automation_records_pruned count={}", *records);
  }

  config::Config config_;
  TestHooks hooks_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<events::EventLog> events_;
  std::unique_ptr<queue::CommandQueue> queue_;
  std::unique_ptr<domain::Enrollments> enrollments_;
  domain::EnrollmentLocks locks_;
  std::unique_ptr<auth::Authenticator> auth_;
  std::unique_ptr<SecretBox> secret_box_;
  std::unique_ptr<enroll::DeviceCa> device_ca_;
  std::unique_ptr<enroll::IssuedCerts> issued_;
  std::unique_ptr<IssuedLookup> issued_lookup_;
  std::unique_ptr<enroll::Challenges> challenges_;
  std::unique_ptr<enroll::ScepServer> scep_;
  std::unique_ptr<push::PushCertStore> push_certs_;
  std::unique_ptr<EnrollRoute> enroll_route_;  // borrows the CA, challenges, issued records, push certificates
  std::unique_ptr<Renewals> renewals_;         // borrows the enroll route
  std::unique_ptr<push::PushService> push_;  // after what it borrows: destroyed first
  std::unique_ptr<ddm::DdmService> ddm_;  // answers the service's DDM check-ins: destroyed after it
  std::unique_ptr<protocol::Service> service_;
  std::unique_ptr<domain::CommandService> commands_;
  // The automation host (destroyed before what it borrows).
  std::unique_ptr<automation::AutomationStore> automation_;
  std::unique_ptr<automation::StoreCommitter> committer_;
  std::unique_ptr<automation::LogSource> event_source_;
  std::unique_ptr<automation::Runner> runner_;
  std::unique_ptr<automation::Scheduler> scheduler_;
  std::unique_ptr<automation::DeviceWatch> device_watch_;
  std::unique_ptr<policy::PolicySet> policies_;
  std::unique_ptr<plugin::PluginSet> plugins_;  // after the runner: unloaded first
  std::unique_ptr<api::AdminApi> api_;
  http::Metrics metrics_;
  std::unique_ptr<http::Server> server_;
  std::unique_ptr<Housekeeper> housekeeper_;
};

}  // namespace

Result<std::unique_ptr<App>> App::Start(const config::Config& config, const TestHooks& hooks) {
  auto app = std::make_unique<AppImpl>(config, hooks);
  ORCHARD_RETURN_IF_ERROR(app->Init());
  return std::unique_ptr<App>(std::move(app));
}

}  // namespace orchard::server
