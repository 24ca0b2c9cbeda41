#include <catch2/catch.hpp>

#include "config/config.h"
#include "support/orchardd_process.h"

using namespace orchard;

namespace {
Result<config::LoadResult> Load(std::vector<std::string> args) {
  std::vector<const char*> argv = {"orchardd"};
  for (auto& a : args) argv.push_back(a.c_str());
  return config::Load(static_cast<int>(argv.size()), argv.data());
}
}  // namespace

TEST_CASE("the shipped example config is valid", "[config]") {
  config::Config c;
  auto text = testing::ReadFile(std::string(ORCHARD_SOURCE_DIR) + "/examples/orchard.conf");
  REQUIRE_FALSE(text.empty());
  REQUIRE(config::ParseFile(text, "orchard.conf", &c).ok());
  CHECK(c.listen_port == 9000);
  CHECK(c.device_ca_files == std::vector<std::string>{"/etc/orchard/device-ca.pem"});
  CHECK(c.result_retention_hours == 720);
  // The push settings it shows are the defaults.
  const config::Config defaults;
  CHECK(c.push_endpoint == defaults.push_endpoint);
  CHECK(c.push_ca_file == defaults.push_ca_file);
  CHECK(c.push_connections == defaults.push_connections);
  CHECK(c.push_expiration_seconds == defaults.push_expiration_seconds);
  CHECK(c.push_coalesce_ms == defaults.push_coalesce_ms);
  CHECK(c.push_retry_max == defaults.push_retry_max);
  CHECK(c.push_retry_base_ms == defaults.push_retry_base_ms);
  CHECK(c.push_repush_interval_seconds == defaults.push_repush_interval_seconds);
  CHECK(c.push_expiry_warn_days == defaults.push_expiry_warn_days);
  CHECK(c.push_key_encryption_key.empty());
  CHECK(c.trusted_proxies == defaults.trusted_proxies);
  CHECK(c.store_wal_recovery == "strict");
  CHECK(config::Validate(c).ok());
}

TEST_CASE("store.wal_recovery takes strict or point_in_time, from the file or --wal-recovery", "[config]") {
  config::Config c;
  CHECK(c.store_wal_recovery == "strict");
  REQUIRE(config::ParseFile("store.wal_recovery = point_in_time", "f", &c).ok());
  CHECK(c.store_wal_recovery == "point_in_time");
  auto bad = config::ParseFile("store.wal_recovery = skip_any", "f", &c);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.message().find("store.wal_recovery") != std::string::npos);
  auto flag = Load({"--insecure-dev", "--wal-recovery", "point_in_time"});
  REQUIRE(flag.ok());
  CHECK(flag->config.store_wal_recovery == "point_in_time");
  CHECK_FALSE(Load({"--insecure-dev", "--wal-recovery", "lenient"}).ok());
  CHECK(config::HelpText().find("--wal-recovery") != std::string::npos);
}

TEST_CASE("bad values name the key and line", "[config]") {
  config::Config c;
  auto st = config::ParseFile("listen = 127.0.0.1:9000\nthreads = many\n", "f.conf", &c);
  REQUIRE_FALSE(st.ok());
  CHECK(st.message().find("f.conf:2") != std::string::npos);
  CHECK(st.message().find("threads") != std::string::npos);
  CHECK(config::ParseFile("listen = nope", "f", &c).message().find("listen") != std::string::npos);
  CHECK(config::ParseFile("colour = blue", "f", &c).message().find("unknown config key 'colour'") !=
        std::string::npos);
  CHECK_FALSE(config::ParseFile("store.sync = maybe", "f", &c).ok());
  CHECK_FALSE(config::ParseFile("no equals sign", "f", &c).ok());
  CHECK_FALSE(config::ParseFile("listen = 127.0.0.1:70000", "f", &c).ok());
}

TEST_CASE("device protocol limits are read from the file and checked", "[config]") {
  config::Config c;
  const config::Config defaults;
  CHECK(defaults.queue_max_deliveries == 5);
  CHECK(defaults.max_user_channels == 32);
  REQUIRE(config::ParseFile("queue.max_deliveries = 0\ncheckin.max_user_channels = 3\n", "f", &c).ok());
  CHECK(c.queue_max_deliveries == 0);
  CHECK(c.max_user_channels == 3);
  auto st = config::ParseFile("queue.max_deliveries = -1\n", "f", &c);
  CHECK(st.message().find("queue.max_deliveries") != std::string::npos);
  st = config::ParseFile("checkin.max_user_channels = 0\n", "f", &c);
  CHECK(st.message().find("checkin.max_user_channels") != std::string::npos);
  // The example shows the defaults.
  config::Config example;
  REQUIRE(config::ParseFile(testing::ReadFile(std::string(ORCHARD_SOURCE_DIR) + "/examples/orchard.conf"),
                            "orchard.conf", &example).ok());
  CHECK(example.queue_max_deliveries == defaults.queue_max_deliveries);
  CHECK(example.max_user_channels == defaults.max_user_channels);
}

TEST_CASE("flags override the file and validation runs", "[config]") {
  auto r = Load({"--listen", "0.0.0.0:8080", "--data-dir", "/tmp/x", "--insecure-dev", "--api-key",
                 "0123456789abcdef"});
  REQUIRE(r.ok());
  CHECK(r->config.listen_host == "0.0.0.0");
  CHECK(r->config.listen_port == 8080);
  CHECK(r->config.insecure_dev);
  // No device CA file and not insecure: fine, Orchard's own device CA is trusted.
  CHECK(Load({"--data-dir", "/tmp/x"}).ok());
  auto short_key = Load({"--insecure-dev", "--api-key", "short"});
  REQUIRE_FALSE(short_key.ok());
  CHECK(short_key.status().message().find("api_key") != std::string::npos);
  CHECK_FALSE(Load({"--bogus"}).ok());
  CHECK(Load({"--help"})->show_help);
  CHECK(config::HelpText().find("--insecure-dev") != std::string::npos);
}

TEST_CASE("orchardd refuses a bad config with exit status 2 and names the key", "[config][integration]") {
  std::string cmd = testing::OrchardBinary("orchardd") + " --threads 0 --insecure-dev 2>&1; echo status=$?";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p);
  std::string out;
  char buf[256];
  while (fgets(buf, sizeof buf, p)) out += buf;
  pclose(p);
  CHECK(out.find("threads") != std::string::npos);
  CHECK(out.find("status=2") != std::string::npos);
}

TEST_CASE("api.max_response_bytes is read and bounded", "[config]") {
  config::Config c;
  CHECK(c.api_max_response_bytes == 16u * 1024 * 1024);
  REQUIRE(config::ParseFile("api.max_response_bytes = 65536\n", "f", &c).ok());
  CHECK(c.api_max_response_bytes == 65536);
  auto st = config::ParseFile("api.max_response_bytes = 65535\n", "f", &c);
  REQUIRE_FALSE(st.ok());
  CHECK(st.message().find("api.max_response_bytes") != std::string::npos);
}

TEST_CASE("config: automation keys parse, and bad values name the key", "[config]") {
  config::Config c;
  REQUIRE(config::ParseFile("policy.dir = /p\npolicy.lanes = 4\npolicy.memory_mb = 64\n"
                            "device.silent_days = 30, 7, 7\ncertificates.expiry_warn_days =\n"
                            "events.device_idle = always\nautomation.max_attempts = 5\n",
                            "t.conf", &c)
              .ok());
  CHECK(c.policy_dir == "/p");
  CHECK(c.policy_lanes == 4);
  CHECK(c.policy_memory_mb == 64);
  CHECK(c.device_silent_days == std::vector<int>{7, 30});  // sorted, deduplicated
  CHECK(c.certificate_expiry_warn_days.empty());           // off
  CHECK(c.events_device_idle == "always");
  CHECK(c.automation_max_attempts == 5);
  for (const char* bad : {"policy.lanes = 0", "policy.lanes = 99", "device.silent_days = 0",
                          "device.silent_days = x", "events.device_idle = sometimes",
                          "policy.deadline_ms = 1", "automation.max_attempts = 0"}) {
    config::Config d;
    auto st = config::ParseFile(bad, "t.conf", &d);
    INFO(bad);
    REQUIRE_FALSE(st.ok());
    const std::string key = std::string(bad).substr(0, std::string(bad).find(' '));
    CHECK(st.message().find(key) != std::string::npos);
  }
}

TEST_CASE("config: plugin.dir and plugin.<name>.<key> sections, bad names refused", "[config]") {
  config::Config c;
  REQUIRE(config::ParseFile("plugin.dir = /opt/orchard/plugins\nplugin.lanes = 3\n"
                            "plugin.webhook.url = \"https://example.test/hook\"\n"
                            "plugin.webhook.retry.max = 5\nplugin.inv-export.format = csv\n",
                            "t.conf", &c)
              .ok());
  CHECK(c.plugin_dir == "/opt/orchard/plugins");
  CHECK(c.plugin_lanes == 3);
  REQUIRE(c.plugin_configs.size() == 2);
  CHECK(c.plugin_configs["webhook"]["url"] == "https://example.test/hook");
  CHECK(c.plugin_configs["webhook"]["retry.max"] == "5");
  CHECK(c.plugin_configs["inv-export"]["format"] == "csv");
  for (const char* bad : {"plugin.lanes = 0", "plugin.bad!name.k = v", "plugin.x. = v", "plugin..k = v"}) {
    config::Config d;
    auto st = config::ParseFile(bad, "t.conf", &d);
    INFO(bad);
    REQUIRE_FALSE(st.ok());
    const std::string key = std::string(bad).substr(0, std::string(bad).find(' '));
    CHECK(st.message().find(key) != std::string::npos);
  }
  const char* argv[] = {"orchardd", "--insecure-dev", "--plugin-dir", "/tmp/p"};
  auto loaded = config::Load(4, argv);
  REQUIRE(loaded.ok());
  CHECK(loaded->config.plugin_dir == "/tmp/p");
}

TEST_CASE("enrollment profile settings are read, and bad ones name the key", "[config][enroll]") {
  const std::string dir = testing::MakeTempDir("orchard-config-enroll");
  REQUIRE(testing::WriteFile(dir + "/sign.pem", "pem"));
  REQUIRE(testing::WriteFile(dir + "/sign.key", "key"));
  config::Config c;
  REQUIRE(config::ParseFile("enroll.public_url = https://mdm.example.com/\n"
                            "enroll.token = 0123456789abcdef0123\n"
                            "enroll.identity = pkcs12\n"
                            "enroll.profile_signing_cert = " + dir + "/sign.pem\n"
                            "enroll.profile_signing_key = " + dir + "/sign.key\n"
                            "enroll.anchor_certs = " + dir + "/sign.pem, " + dir + "/sign.pem\n"
                            "enroll.challenge_ttl_seconds = 600\n"
                            "enroll.profile_organization = \"Example, Inc.\"\n",
                            "f", &c)
              .ok());
  CHECK(c.enroll_public_url == "https://mdm.example.com");  // trailing slash dropped
  CHECK(c.enroll_identity == "pkcs12");
  CHECK(c.enroll_anchor_certs.size() == 2);
  CHECK(c.enroll_challenge_ttl_seconds == 600);
  CHECK(c.enroll_profile_organization == "Example, Inc.");
  c.insecure_dev = true;
  CHECK(config::Validate(c).ok());

  auto bad = [](const std::string& line, const char* key) {
    config::Config b;
    b.insecure_dev = true;
    Status st = config::ParseFile(line, "f", &b);
    if (st.ok()) st = config::Validate(b);
    REQUIRE_FALSE(st.ok());
    INFO(st.message());
    CHECK(st.message().find(key) != std::string::npos);
  };
  bad("enroll.public_url = mdm.example.com\n", "enroll.public_url");
  bad("enroll.server_url = https://x/mdm?x=1\n", "enroll.server_url");
  bad("enroll.identity = tls\n", "enroll.identity");
  bad("enroll.token = short\n", "enroll.token");
  bad("enroll.profile_signing_cert = " + dir + "/sign.pem\n", "enroll.profile_signing_key");
  bad("enroll.profile_signing_cert = /nonexistent.pem\nenroll.profile_signing_key = /nonexistent.key\n",
      "enroll.profile_signing_cert");
  bad("enroll.anchor_certs = /nonexistent.pem\n", "enroll.anchor_certs");
  bad("enroll.challenge_ttl_seconds = 5\n", "enroll.challenge_ttl_seconds");
}

TEST_CASE("config: ddm keys parse, and bad values name the key", "[config][ddm]") {
  const config::Config defaults;
  CHECK(defaults.ddm_keep_status_reports == 10);
  CHECK_FALSE(defaults.ddm_enable_on_enroll);
  CHECK_FALSE(defaults.ddm_keep_assignments);
  config::Config c;
  REQUIRE(config::ParseFile("ddm.keep_assignments = on\nddm.enable_on_enroll = on\nddm.keep_status_reports = 0\n", "f",
                            &c)
              .ok());
  CHECK(c.ddm_keep_assignments);
  CHECK(c.ddm_enable_on_enroll);
  CHECK(c.ddm_keep_status_reports == 0);
  auto st = config::ParseFile("ddm.keep_assignments = sometimes\n", "f", &c);
  REQUIRE_FALSE(st.ok());
  CHECK(st.message().find("ddm.keep_assignments") != std::string::npos);
  CHECK(defaults.ddm_references == "warn");
  REQUIRE(config::ParseFile("ddm.references = refuse\n", "f", &c).ok());
  CHECK(c.ddm_references == "refuse");
  auto refs = config::ParseFile("ddm.references = strict\n", "f", &c);
  REQUIRE_FALSE(refs.ok());
  CHECK(refs.message().find("ddm.references") != std::string::npos);
  CHECK(refs.message().find("expected off, warn or refuse") != std::string::npos);
}
