// Orchard's webhook plugin: posts events in the MicroMDM/NanoMDM webhook shape
// to configured endpoints, through a durable outbox in the plugin's key-value
// namespace (docs/plugins/webhook.md).
//
// on_event (a run) writes one outbox record per (endpoint, event): committed
// with the plugin's checkpoint, so an event is either handled and queued for
// every endpoint that wants it, or delivered again. The Sender thread (started
// in Init, joined in Shutdown) delivers committed records.
#include <curl/curl.h>
#include <openssl/rand.h>

#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config.h"
#include "event_body.h"
#include "json.h"
#include "orchard/plugin.hpp"
#include "outbox.h"
#include "sender.h"

namespace orchard_webhook {
namespace {

using orchard::plugin::Event;
using orchard::plugin::HttpRequest;
using orchard::plugin::HttpResponse;
using orchard::plugin::Run;

constexpr char kInstanceKey[] = "meta/instance";

class WebhookPlugin;

// The Sender's view of the host: the plugin's kv namespace outside runs.
class HostAdapter : public Host {
 public:
  explicit HostAdapter(const orchard::plugin::Plugin* p) : p_(p) {}
  orchard_status Scan(std::string_view prefix, std::string_view after, size_t limit,
                      const std::function<bool(std::string_view, std::string_view)>& fn) override {
    return p_->KvScan(prefix, after, limit, [&fn](std::string_view k, std::string_view v) { return fn(k, v); });
  }
  orchard_status Write(const std::vector<KvOp>& ops) override {
    std::vector<orchard::plugin::Plugin::KvOp> raw;
    raw.reserve(ops.size());
    for (const auto& o : ops) raw.push_back({o.key, o.value, o.remove});
    return p_->KvWrite(raw);
  }
  void Log(orchard_log_level level, const std::string& message) override { p_->Log(level, message); }

 private:
  const orchard::plugin::Plugin* p_;
};

class WebhookPlugin : public orchard::plugin::Plugin {
 public:
  ~WebhookPlugin() override { StopSender(); }

  orchard_status Init(std::string_view config_json) override {
    std::string error;
    if (ParseConfig(config_json, &config_, &error) != ORCHARD_OK) {
      Log(ORCHARD_LOG_ERROR, "event=webhook_config_invalid " + error + " detail=\"plugin refused\"");
      return ORCHARD_ERR_INVALID_ARGUMENT;
    }
    const orchard_host_api* a = api();
    if (!ORCHARD_HOST_HAS(a, kv_scan) || !ORCHARD_HOST_HAS(a, kv_write) || !ORCHARD_HOST_HAS(a, kv_read)) {
      Log(ORCHARD_LOG_ERROR,
          "event=webhook_host_unsupported detail=\"needs kv_read, kv_scan and kv_write (plugin ABI 1.1)\"");
      return ORCHARD_ERR_UNSUPPORTED;
    }
    orchard_status st = LoadInstance(&error);
    if (st != ORCHARD_OK) {
      Log(ORCHARD_LOG_ERROR, "event=webhook_init_failed detail=\"" + error + "\"");
      return st;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      Log(ORCHARD_LOG_ERROR, "event=webhook_init_failed detail=\"curl_global_init failed\"");
      return ORCHARD_ERR_FAILED;
    }
    curl_initialized_ = true;
    host_ = std::make_unique<HostAdapter>(this);
    sender_ = std::make_unique<Sender>(config_, host_.get());
    st = sender_->Start(&error);
    if (st != ORCHARD_OK) {
      Log(ORCHARD_LOG_ERROR, "event=webhook_init_failed detail=\"" + error + "\"");
      StopSender();
      return st;
    }
    for (const auto& ep : config_.endpoints) {
      std::string topics;
      for (const auto& t : ep.topics) topics += (topics.empty() ? "" : ",") + t;
      Log(ORCHARD_LOG_INFO, "event=webhook_endpoint endpoint=" + ep.name + " url=\"" + ep.RedactedUrl() +
                                "\" signed=" + (ep.secret.empty() ? "false" : "true") + " topics=\"" +
                                (topics.empty() ? "*" : topics) + "\" concurrency=" + std::to_string(ep.concurrency));
    }
    return ORCHARD_OK;
  }

  orchard_status OnEvent(Run& run, const Event& event) override {
    const std::string topic = TopicFor(event.type(), config_.orchard_events);
    if (topic.empty()) return ORCHARD_OK;
    std::vector<const EndpointConfig*> targets;
    for (const auto& ep : config_.endpoints)
      if (ep.Wants(topic)) targets.push_back(&ep);
    if (targets.empty()) return ORCHARD_OK;

    EventView ev;
    ev.seq = event.seq();
    ev.time_ms = event.time_ms();
    ev.type = event.type();
    ev.cursor = event.cursor();
    ev.enrollment_id = event.enrollment_id();
    ev.command_uuid = event.command_uuid();
    ev.request_type = event.request_type();
    ev.payload_json = event.payload_json();
    ev.raw_plist = event.raw_plist();
    if (topic == "mdm.TokenUpdate") ev.token_update_tally = TokenUpdateTally(run, ev.payload_json);

    MappedEvent m;
    std::string error;
    if (!BuildBody(ev, topic, EventId(instance_, ev.cursor), &m, &error)) {
      // A payload we cannot read will not get better: skip it, visibly.
      run.Log(ORCHARD_LOG_WARN, "event=webhook_skipped cursor=" + std::string(ev.cursor) + " type=" +
                                    std::string(ev.type) + " reason=\"" + error + "\"");
      return ORCHARD_OK;
    }
    Record rec;
    rec.created_ms = ev.time_ms;
    rec.device = m.device;
    rec.topic = m.topic;
    rec.event_id = m.event_id;
    const bool too_large = static_cast<int64_t>(m.body.size()) > config_.max_body_bytes;
    const int parts = m.body.size() > kPartBytes ? static_cast<int>((m.body.size() + kPartBytes - 1) / kPartBytes) : 0;
    for (const EndpointConfig* ep : targets) {
      orchard_status st;
      if (too_large) {
        std::string summary = "{\"event_id\":";
        AppendJsonString(&summary, m.event_id);
        summary += ",\"topic\":";
        AppendJsonString(&summary, m.topic);
        summary += ",\"seq\":" + std::to_string(ev.seq) + ",\"reason\":\"too_large\",\"attempts\":0,\"body_bytes\":" +
                   std::to_string(m.body.size()) + ",\"created_at\":\"" + Rfc3339Millis(ev.time_ms) + "\"}";
        run.Log(ORCHARD_LOG_WARN, "event=webhook_dead endpoint=" + ep->name + " event_id=" + m.event_id +
                                      " topic=" + m.topic + " reason=too_large body_bytes=" +
                                      std::to_string(m.body.size()));
        st = config_.dead_max > 0 ? run.KvPut(DeadKey(ep->name, ev.seq), summary) : ORCHARD_OK;
      } else if (parts == 0) {
        rec.parts = 0;
        rec.body = m.body;
        st = run.KvPut(OutKey(ep->name, ev.seq), EncodeRecord(rec));
      } else {
        rec.parts = parts;
        rec.body.clear();
        st = ORCHARD_OK;
        for (int p = 0; p < parts && st == ORCHARD_OK; ++p)
          st = run.KvPut(PartKey(ep->name, ev.seq, p),
                         std::string_view(m.body).substr(static_cast<size_t>(p) * kPartBytes, kPartBytes));
        if (st == ORCHARD_OK) st = run.KvPut(OutKey(ep->name, ev.seq), EncodeRecord(rec));
      }
      if (st != ORCHARD_OK) {
        run.SetError("kv_put of the outbox record failed (status " + std::to_string(static_cast<int>(st)) + ")");
        return st;
      }
    }
    if (sender_) sender_->Wake();
    return ORCHARD_OK;
  }

  orchard_status OnHttp(const HttpRequest& request, HttpResponse& response) override {
    if (request.path() != "/status" && request.path() != "/" && !request.path().empty())
      return ORCHARD_ERR_NOT_FOUND;
    if (request.method() != "GET") {
      response.Header("Allow", "GET");
      return response.Respond(405, "application/json", "{\"error\":\"method not allowed\"}");
    }
    size_t dead_limit = 20;
    const std::string limit = request.Param("dead_limit");
    if (!limit.empty()) {
      char* end = nullptr;
      const unsigned long v = std::strtoul(limit.c_str(), &end, 10);
      if (end == limit.c_str() || *end != 0 || v > 100)
        return response.Respond(400, "application/json", "{\"error\":\"dead_limit must be 0..100\"}");
      dead_limit = v;
    }
    if (!sender_) return ORCHARD_ERR_FAILED;
    return response.Respond(200, "application/json", sender_->StatusJson(100000, dead_limit));
  }

  void Shutdown() override { StopSender(); }

 private:
  void StopSender() {
    if (sender_) sender_->Stop();
    sender_.reset();
    host_.reset();
    if (curl_initialized_) curl_global_cleanup();
    curl_initialized_ = false;
  }

  // The random id behind event ids: read, or created once and kept.
  orchard_status LoadInstance(std::string* error) {
    std::string v;
    orchard_status st = KvRead(kInstanceKey, &v);
    if (st == ORCHARD_OK && v.size() == 32) {
      instance_ = v;
      return ORCHARD_OK;
    }
    if (st != ORCHARD_OK && st != ORCHARD_ERR_NOT_FOUND) {
      *error = "kv_read of meta/instance failed (status " + std::to_string(static_cast<int>(st)) + ")";
      return st;
    }
    unsigned char bytes[16];
    if (RAND_bytes(bytes, sizeof bytes) != 1) {
      *error = "RAND_bytes failed";
      return ORCHARD_ERR_FAILED;
    }
    instance_ = Hex(std::string_view(reinterpret_cast<const char*>(bytes), sizeof bytes));
    st = KvWrite({{kInstanceKey, instance_, false}});
    if (st != ORCHARD_OK) {
      *error = "kv_write of meta/instance failed (status " + std::to_string(static_cast<int>(st)) + ")";
      return st;
    }
    return ORCHARD_OK;
  }

  // token_update_tally as NanoMDM sends it: 1 for an enrollment's first
  // TokenUpdate, else the enrollment's count as the host knows it now (at
  // least 2); 0 (left out) if unknown.
  static int64_t TokenUpdateTally(const Run& run, std::string_view payload_json) {
    JsonValue payload;
    std::string err;
    if (!ParseJson(payload_json, &payload, &err)) return 0;
    const JsonValue* first = payload.Find("FirstTokenUpdate");
    if (first && first->kind == JsonValue::Kind::kBool && first->boolean) return 1;
    std::string device;
    if (run.Device("", &device) != ORCHARD_OK) return 0;
    JsonValue d;
    if (!ParseJson(device, &d, &err)) return 0;
    const JsonValue* n = d.Find("token_updates");
    if (!n || n->kind != JsonValue::Kind::kNumber) return 0;
    const long long v = std::strtoll(n->text.c_str(), nullptr, 10);
    return v < 2 ? 2 : v;
  }

  Config config_;
  std::string instance_;
  std::unique_ptr<HostAdapter> host_;
  std::unique_ptr<Sender> sender_;
  bool curl_initialized_ = false;
};

}  // namespace
}  // namespace orchard_webhook

ORCHARD_PLUGIN_DEFINE_1_1(orchard_webhook::WebhookPlugin, "webhook", "1.0.0", 0, nullptr, 0,
                          ORCHARD_EVENT_ENROLLMENT_AUTHENTICATED, ORCHARD_EVENT_ENROLLMENT_ENROLLED,
                          ORCHARD_EVENT_ENROLLMENT_TOKEN_UPDATED, ORCHARD_EVENT_ENROLLMENT_CHECKED_OUT,
                          ORCHARD_EVENT_ENROLLMENT_BLOCKED, ORCHARD_EVENT_ENROLLMENT_UNBLOCKED,
                          ORCHARD_EVENT_BOOTSTRAP_TOKEN_SET, ORCHARD_EVENT_COMMAND_ENQUEUED,
                          ORCHARD_EVENT_COMMAND_DELETED, ORCHARD_EVENT_COMMAND_ACKNOWLEDGED,
                          ORCHARD_EVENT_COMMAND_ERROR, ORCHARD_EVENT_COMMAND_FORMAT_ERROR,
                          ORCHARD_EVENT_COMMAND_NOT_NOW, ORCHARD_EVENT_COMMAND_FAILED, ORCHARD_EVENT_QUEUE_CLEARED,
                          ORCHARD_EVENT_DEVICE_SILENT, ORCHARD_EVENT_CERTIFICATE_EXPIRING,
                          ORCHARD_EVENT_PUSH_UNREGISTERED, ORCHARD_EVENT_PUSH_REJECTED,
                          ORCHARD_EVENT_PUSH_CERTIFICATE_ERROR, ORCHARD_EVENT_PUSH_CERTIFICATE_EXPIRING)
