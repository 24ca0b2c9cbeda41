#include "sim/simulator.h"

#include <curl/curl.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_set>

#include "sim/enroll_profile.h"
#include "util/encoding.h"

namespace orchard::sim {
namespace {

constexpr char kCheckInType[] = "application/x-apple-aspen-mdm-checkin";
constexpr char kConnectType[] = "application/x-apple-aspen-mdm";

std::once_flag g_curl_once;
CURLcode g_curl_init = CURLE_OK;

Status InitCurl() {
  std::call_once(g_curl_once, [] { g_curl_init = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (g_curl_init != CURLE_OK) {
    return Status::Internal(std::string("curl_global_init: ") + curl_easy_strerror(g_curl_init));
  }
  return Status::Ok();
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

std::string_view HeaderName(std::string_view line) {
  size_t colon = line.find(':');
  return Trim(colon == std::string_view::npos ? line : line.substr(0, colon));
}

size_t WriteBody(char* data, size_t size, size_t n, void* user) {
  static_cast<HttpResponse*>(user)->body.append(data, size * n);
  return size * n;
}

size_t WriteHeader(char* data, size_t size, size_t n, void* user) {
  auto* r = static_cast<HttpResponse*>(user);
  std::string_view line(data, size * n);
  if (line.starts_with("HTTP/")) {
    r->headers.clear();  // a new response (e.g. after 100 Continue)
  } else {
    size_t colon = line.find(':');
    if (colon != std::string_view::npos) {
      r->headers.emplace_back(std::string(Trim(line.substr(0, colon))),
                              std::string(Trim(line.substr(colon + 1))));
    }
  }
  return size * n;
}

std::string CommonNameOf(const std::string& der) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
  X509* x = d2i_X509(nullptr, &p, static_cast<long>(der.size()));
  if (x == nullptr) return {};
  char buf[256] = {0};
  int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, sizeof buf);
  X509_free(x);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

Status HttpError(std::string_view what, long code, std::string_view body) {
  std::string msg = std::string(what) + ": HTTP " + std::to_string(code);
  if (!body.empty()) {
    msg += " body=";
    msg.append(body.substr(0, 200));
  }
  switch (code) {
    case 400:
      return Status::InvalidArgument(std::move(msg));
    case 401:
      return Status::Unauthenticated(std::move(msg));
    case 403:
      return Status::PermissionDenied(std::move(msg));
    case 404:
      return Status::NotFound(std::move(msg));
    case 413:
      return Status::TooLarge(std::move(msg));
    default:
      return Status::Unavailable(std::move(msg));
  }
}

ReportStatus StatusFromReport(const plist::Value& report) {
  std::string_view s = report.GetString("Status");
  if (s == "NotNow") return ReportStatus::kNotNow;
  if (s == "Error") return ReportStatus::kError;
  if (s == "CommandFormatError") return ReportStatus::kCommandFormatError;
  return ReportStatus::kAcknowledged;
}

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    for (auto& c : out) c = static_cast<char>(std::rand());
  }
  return out;
}

}  // namespace

bool ParseCertMode(std::string_view name, CertMode* out) {
  if (name == "header")
    *out = CertMode::kHeader;
  else if (name == "signature")
    *out = CertMode::kSignature;
  else if (name == "both")
    *out = CertMode::kHeaderAndSignature;
  else if (name == "tls")
    *out = CertMode::kTls;
  else if (name == "none")
    *out = CertMode::kNone;
  else
    return false;
  return true;
}

std::string HttpResponse::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (EqualsIgnoreCase(k, name)) return v;
  }
  return {};
}

void SessionStats::Add(const SessionStats& o) {
  requests += o.requests;
  commands += o.commands;
  acknowledged += o.acknowledged;
  not_now += o.not_now;
  errors += o.errors;
  format_errors += o.format_errors;
  not_now_redelivered += o.not_now_redelivered;
  handled.insert(handled.end(), o.handled.begin(), o.handled.end());
}

// ---------------------------------------------------------------- Device

// Same CMS as testing::Identity::MdmSignature (detached SignedData, SHA-1,
// signer certificate included, no S/MIME capabilities), with the key and
// certificate parsed once instead of on every request.
struct Device::Signer {
  X509* cert = nullptr;
  EVP_PKEY* key = nullptr;
  ~Signer() {
    X509_free(cert);
    EVP_PKEY_free(key);
  }
};

Result<std::string> Device::Sign(std::string_view body) {
  if (!signer_) {
    auto s = std::make_unique<Signer>();
    const auto* p = reinterpret_cast<const unsigned char*>(identity_.cert_der.data());
    s->cert = d2i_X509(nullptr, &p, static_cast<long>(identity_.cert_der.size()));
    BIO* kb = BIO_new_mem_buf(identity_.key_pem.data(), static_cast<int>(identity_.key_pem.size()));
    if (kb != nullptr) s->key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
    BIO_free(kb);
    if (s->cert == nullptr || s->key == nullptr) {
      ERR_clear_error();
      return Status::InvalidArgument("Mdm-Signature: identity certificate or key does not parse");
    }
    signer_ = std::move(s);
  }
  static const char kEmpty[] = "";
  BIO* data = BIO_new_mem_buf(body.empty() ? kEmpty : body.data(), static_cast<int>(body.size()));
  CMS_ContentInfo* cms =
      CMS_sign(nullptr, nullptr, nullptr, nullptr, CMS_DETACHED | CMS_BINARY | CMS_PARTIAL);
  std::string out;
  if (data != nullptr && cms != nullptr &&
      CMS_add1_signer(cms, signer_->cert, signer_->key, EVP_sha1(), CMS_BINARY | CMS_NOSMIMECAP) !=
          nullptr &&
      CMS_final(cms, data, nullptr, CMS_DETACHED | CMS_BINARY) == 1) {
    unsigned char* der = nullptr;
    int len = i2d_CMS_ContentInfo(cms, &der);
    if (len > 0) {
      out = Base64Encode(std::string_view(reinterpret_cast<char*>(der), static_cast<size_t>(len)));
    }
    OPENSSL_free(der);
  }
  CMS_ContentInfo_free(cms);
  BIO_free(data);
  if (out.empty()) {
    ERR_clear_error();
    return Status::Internal("Mdm-Signature: CMS signing failed");
  }
  return out;
}

Device::Device(const SimConfig& config, DeviceState state, testing::Identity identity)
    : config_(config), state_(std::move(state)) {
  responder_ = Responder(std::hash<std::string>{}(state_.udid));
  (void)SetIdentity(std::move(identity));
}

Device::~Device() {
  if (curl_ != nullptr) curl_easy_cleanup(static_cast<CURL*>(curl_));
}

Result<std::unique_ptr<Device>> Device::Create(const SimConfig& config, DeviceState state,
                                               testing::Identity identity) {
  ORCHARD_RETURN_IF_ERROR(InitCurl());
  if (config.base_url.empty()) return Status::InvalidArgument("SimConfig.base_url is empty");
  if (config.cert_mode == CertMode::kTls && !config.base_url.starts_with("https://")) {
    return Status::InvalidArgument("cert mode tls needs an https:// base_url, got " +
                                   config.base_url);
  }
  if ((config.cert_mode != CertMode::kNone) && identity.cert_der.empty()) {
    return Status::InvalidArgument("device identity has no certificate");
  }
  if (state.udid.empty() && state.enrollment_id.empty()) {
    return Status::InvalidArgument("device state has neither UDID nor EnrollmentID");
  }
  std::unique_ptr<Device> d(new Device(config, std::move(state), std::move(identity)));
  ORCHARD_RETURN_IF_ERROR(d->InitHandle());
  return d;
}

Status Device::InitHandle() {
  if (curl_ != nullptr) curl_easy_cleanup(static_cast<CURL*>(curl_));
  CURL* c = curl_easy_init();
  curl_ = c;
  if (c == nullptr) return Status::Internal("curl_easy_init failed");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, config_.timeout_ms);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, config_.connect_timeout_ms);
  curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(c, CURLOPT_FORBID_REUSE, config_.keep_alive ? 0L : 1L);
  const std::string ua = !config_.user_agent.empty()           ? config_.user_agent
                         : state_.platform == Platform::kMacos ? "MDM-OSX/1.0 mdmclient"
                                                               : "MDM/1.0";
  curl_easy_setopt(c, CURLOPT_USERAGENT, ua.c_str());  // curl copies strings
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &WriteBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &last_);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &WriteHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &last_);
  if (config_.base_url.starts_with("https://")) {
    if (!config_.tls_ca_file.empty())
      curl_easy_setopt(c, CURLOPT_CAINFO, config_.tls_ca_file.c_str());
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, config_.tls_verify ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, config_.tls_verify ? 2L : 0L);
  }
  if (config_.cert_mode == CertMode::kTls) {
    curl_blob cert{const_cast<char*>(identity_.cert_pem.data()), identity_.cert_pem.size(),
                   CURL_BLOB_COPY};
    curl_blob key{const_cast<char*>(identity_.key_pem.data()), identity_.key_pem.size(),
                  CURL_BLOB_COPY};
    if (curl_easy_setopt(c, CURLOPT_SSLCERT_BLOB, &cert) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_SSLKEY_BLOB, &key) != CURLE_OK) {
      return Status::Unavailable("libcurl lacks client-certificate blob support");
    }
    curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM");
    curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM");
  }
  return Status::Ok();
}

Status Device::SetIdentity(testing::Identity identity) {
  identity_ = std::move(identity);
  signer_.reset();
  state_.identity_cert_der = identity_.cert_der;
  state_.identity_common_name = CommonNameOf(identity_.cert_der);
  cert_header_line_.clear();
  if (!identity_.cert_der.empty()) {
    cert_header_line_ =
        config_.cert_header + ": " +
        (config_.cert_header_format == CertHeaderFormat::kEscapedPem ? identity_.EscapedPemHeader()
                                                                     : identity_.Rfc9440Header());
  }
  if (curl_ == nullptr) return Status::Ok();  // called from the constructor
  // A fresh handle drops the connection and any TLS session bound to the old cert.
  return InitHandle();
}

void Device::Disconnect() { (void)InitHandle(); }

Result<HttpResponse> Device::Put(std::string_view path, std::string_view content_type,
                                 std::string_view body,
                                 const std::vector<std::string>& extra_headers) {
  return Perform(path, content_type, body, extra_headers);
}

Result<HttpResponse> Device::Perform(std::string_view path, std::string_view content_type,
                                     std::string_view body, const std::vector<std::string>& extra) {
  CURL* c = static_cast<CURL*>(curl_);
  if (c == nullptr) return Status::Internal("device has no curl handle");
  url_.assign(config_.base_url);
  url_.append(path);

  std::vector<std::string> lines;
  lines.reserve(4 + extra.size());
  lines.emplace_back("Expect:");  // real devices never send Expect: 100-continue
  if (content_type.empty() || content_type == "-") {  // else curl adds a form type
    lines.emplace_back("Content-Type:");
  } else if (!content_type.empty()) {
    lines.emplace_back("Content-Type: ").append(content_type);
  }
  const CertMode mode = config_.cert_mode;
  if ((mode == CertMode::kHeader || mode == CertMode::kHeaderAndSignature) &&
      !cert_header_line_.empty()) {
    lines.push_back(cert_header_line_);
  }
  if ((mode == CertMode::kSignature || mode == CertMode::kHeaderAndSignature) &&
      !identity_.cert_der.empty()) {
    Result<std::string> sig = Sign(body);
    if (!sig.ok()) return sig.status();
    lines.emplace_back("Mdm-Signature: ").append(*sig);
  }
  for (const std::string& e : extra) {
    std::string_view name = HeaderName(e);
    std::erase_if(lines,
                  [&](const std::string& l) { return EqualsIgnoreCase(HeaderName(l), name); });
    lines.push_back(e);
  }
  curl_slist* list = nullptr;
  for (const std::string& l : lines) {
    // "Name:" removes a header in curl; "Name;" would send it empty. Keep as given.
    curl_slist* next = curl_slist_append(list, l.c_str());
    if (next == nullptr) {
      curl_slist_free_all(list);
      return Status::Internal("out of memory building headers");
    }
    list = next;
  }

  last_.status = 0;
  last_.body.clear();
  last_.headers.clear();
  curl_easy_setopt(c, CURLOPT_URL, url_.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
  static const char kEmpty[] = "";  // a null POSTFIELDS would make curl read stdin
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.empty() ? kEmpty : body.data());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);

  auto start = std::chrono::steady_clock::now();
  CURLcode rc = curl_easy_perform(c);
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                  start)
                .count();
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, nullptr);
  curl_slist_free_all(list);
  if (config_.record_latencies) {
    latencies_.push_back(static_cast<uint32_t>(std::min<int64_t>(us, UINT32_MAX)));
  }
  if (rc != CURLE_OK) {
    last_status_ = 0;
    return Status::Io("PUT " + url_ + ": " + curl_easy_strerror(rc) +
                      (errbuf[0] ? std::string(" (") + errbuf + ")" : std::string()));
  }
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  last_.status = code;
  last_status_ = code;
  if (code == 401 ||
      (code == 403 && last_.body.find("com.apple.unrecognized.device") != std::string::npos)) {
    unenrolled_ = true;
  }
  return last_;
}

Status Device::ExpectOk(const char* what, const Result<HttpResponse>& r) {
  if (!r.ok()) return r.status();
  if (r->status != 200) return HttpError(what, r->status, r->body);
  return Status::Ok();
}

Status Device::PutPlist(const char* what, const std::string& path, const char* content_type,
                        const plist::Value& v) {
  std::string body = plist::ToXml(v);
  return ExpectOk(what, Perform(path, content_type, body, {}));
}

Result<HttpResponse> Device::CheckIn(const plist::Value& message) {
  std::string body = plist::ToXml(message);
  return Perform(config_.checkin_path, kCheckInType, body, {});
}

Status Device::Authenticate() {
  return PutPlist("Authenticate", config_.checkin_path, kCheckInType,
                  BuildAuthenticate(state_, config_.topic));
}

Status Device::TokenUpdate(bool awaiting_configuration) {
  state_.awaiting_configuration = awaiting_configuration;
  return PutPlist("TokenUpdate", config_.checkin_path, kCheckInType,
                  BuildTokenUpdate(state_, config_.topic, awaiting_configuration, nullptr));
}

Status Device::UserTokenUpdate(std::string user_id, std::string short_name, std::string long_name) {
  if (!user_) {
    user_ = std::make_unique<UserChannel>();
    user_->push_token = RandomBytes(32);
    user_->push_magic = NewUuid();
  }
  user_->user_id = std::move(user_id);
  user_->short_name = std::move(short_name);
  user_->long_name = std::move(long_name);
  return PutPlist("UserTokenUpdate", config_.checkin_path, kCheckInType,
                  BuildTokenUpdate(state_, config_.topic, false, user_.get()));
}

Status Device::CheckOut() {
  return PutPlist("CheckOut", config_.checkin_path, kCheckInType,
                  BuildCheckOut(state_, config_.topic));
}

Result<SessionStats> Device::RunSession(bool user_channel) {
  const UserChannel* user = nullptr;
  if (user_channel) {
    if (!user_) return Status::InvalidArgument("no user channel: call UserTokenUpdate first");
    user = user_.get();
  }
  SessionStats st;
  std::unordered_set<std::string> not_now;  // NotNow'd in this session
  plist::Value message = BuildIdle(state_, user);
  std::string body;
  for (;;) {
    body = plist::ToXml(message);
    Result<HttpResponse> r = Perform(config_.connect_path, kConnectType, body, {});
    ++st.requests;
    if (!r.ok()) return r.status();
    if (r->status != 200) {
      return HttpError(st.commands == 0 ? "connect (Idle)" : "connect (report)", r->status,
                       r->body);
    }
    if (r->body.empty()) break;
    if (st.commands >= config_.max_commands_per_session) {
      return Status::Internal("session exceeded " +
                              std::to_string(config_.max_commands_per_session) +
                              " commands; the server never ended it");
    }
    Result<plist::Value> cmd = plist::ParseXml(r->body);
    if (!cmd.ok()) {
      return Status::InvalidArgument("connect: server sent a body that is not a plist: " +
                                     cmd.status().message());
    }
    ++st.commands;
    std::string uuid(cmd->GetString("CommandUUID"));
    const plist::Value* inner = cmd->Find("Command");
    std::string rt(inner ? inner->GetString("RequestType") : std::string_view());
    if (not_now.count(uuid) != 0) ++st.not_now_redelivered;

    ReportStatus decided = responder_.Decide(rt, uuid);
    message = BuildReport(state_, *cmd, decided, user, responder_.error());
    ReportStatus sent = StatusFromReport(message);
    switch (sent) {
      case ReportStatus::kAcknowledged:
        ++st.acknowledged;
        ApplyCommand(&state_, *cmd);
        break;
      case ReportStatus::kNotNow:
        ++st.not_now;
        not_now.insert(uuid);
        break;
      case ReportStatus::kError:
        ++st.errors;
        break;
      case ReportStatus::kCommandFormatError:
        ++st.format_errors;
        break;
    }
    st.handled.emplace_back(uuid, rt);
    if (config_.record_commands) {
      received_.push_back({std::move(uuid), std::move(rt), sent, std::move(cmd).value()});
    }
  }
  return st;
}

// ---------------------------------------------------------------- Fleet

uint64_t EnsureFileLimit(uint64_t needed) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < needed) {
    rlim_t want = needed;
    if (rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max) want = rl.rlim_max;
    rlimit nrl = rl;
    nrl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &nrl) == 0) rl = nrl;
  }
  return rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : static_cast<uint64_t>(rl.rlim_cur);
}

Fleet::~Fleet() = default;

Result<std::unique_ptr<Fleet>> Fleet::Create(const FleetOptions& options,
                                             std::unique_ptr<testing::TestCa> ca) {
  if (ca == nullptr) return Status::InvalidArgument("Fleet needs a TestCa");
  if (options.devices < 0) return Status::InvalidArgument("negative device count");
  const uint64_t needed = static_cast<uint64_t>(options.devices) + 256;
  if (options.config.keep_alive && EnsureFileLimit(needed) < needed) {
    return Status::Unavailable(
        "RLIMIT_NOFILE too low for " + std::to_string(options.devices) +
        " keep-alive connections; raise the hard limit (ulimit -Hn) or disable keep-alive");
  }
  std::unique_ptr<Fleet> f(new Fleet());
  f->ca_ = std::move(ca);
  f->devices_.reserve(static_cast<size_t>(options.devices));
  SimConfig config = options.config;
  config.record_latencies = true;
  uint64_t seed = options.seed;
  while (seed == 0) seed = (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}();
  f->seed_ = seed;
  const int macs = static_cast<int>(options.devices * options.macos_fraction + 0.5);
  for (int i = 0; i < options.devices; ++i) {
    // Spread the Macs evenly over the index range.
    const bool mac = macs > 0 && (static_cast<int64_t>(i) * macs / options.devices !=
                                  static_cast<int64_t>(i + 1) * macs / options.devices);
    DeviceState st = RandomDeviceState(mac ? Platform::kMacos : Platform::kIos,
                                       seed * 1000003ULL + static_cast<uint64_t>(i));
    char name[32];
    std::snprintf(name, sizeof name, "sim-%06d", i);
    st.device_name = name;
    if (!options.profile.url.empty()) {  // the real way: profile, SCEP, profile's URLs
      testing::Identity attestation;
      try {
        attestation = f->ca_->Issue({.common_name = st.udid + " attestation"});
      } catch (const std::exception& e) {
        return Status::Internal(std::string("issuing a device attestation identity: ") + e.what());
      }
      auto d = EnrollViaProfile(config, std::move(st), options.profile, &attestation);
      if (!d.ok()) return Status(d.status().code(), std::string(name) + ": " + d.status().message());
      (*d)->responder().SetRates(options.not_now_rate, options.error_rate);
      if (options.customize) options.customize(i, **d);
      f->devices_.push_back(std::move(d).value());
      continue;
    }
    testing::IssueOptions io;
    io.common_name = st.udid;
    testing::Identity id;
    try {
      id = f->ca_->Issue(io);
    } catch (const std::exception& e) {
      return Status::Internal(std::string("issuing a device identity: ") + e.what());
    }
    if (id.cert_der.empty()) return Status::Internal("TestCa::Issue returned no certificate");
    auto d = Device::Create(config, std::move(st), std::move(id));
    if (!d.ok()) return d.status();
    (*d)->responder().SetRates(options.not_now_rate, options.error_rate);
    if (options.customize) options.customize(i, **d);
    f->devices_.push_back(std::move(d).value());
  }
  return f;
}

namespace {

struct Partial {
  int ok = 0, failed = 0, sessions = 0;
  SessionStats stats;
  std::vector<std::string> errors;
};

// Runs op over devices in `threads` workers; worker t owns devices t, t+T, ...
// and visits them `rounds` times, round by round.
template <typename Op>
FleetStats RunParallel(std::vector<std::unique_ptr<Device>>& devices, int threads, int rounds,
                       Op op) {
  FleetStats out;
  out.devices = static_cast<int>(devices.size());
  if (threads < 1) threads = 1;
  if (static_cast<size_t>(threads) > devices.size()) threads = std::max<int>(1, devices.size());
  for (auto& d : devices) d->latencies_us().clear();
  std::vector<Partial> parts(static_cast<size_t>(threads));
  auto start = std::chrono::steady_clock::now();
  auto worker = [&](int t) {
    Partial& p = parts[static_cast<size_t>(t)];
    for (int r = 0; r < rounds; ++r) {
      for (size_t i = static_cast<size_t>(t); i < devices.size();
           i += static_cast<size_t>(threads)) {
        op(*devices[i], p);
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker, t);
  worker(0);
  for (auto& th : pool) th.join();
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (Partial& p : parts) {
    out.ok += p.ok;
    out.failed += p.failed;
    out.sessions_run += p.sessions;
    out.sessions.Add(p.stats);
    for (auto& e : p.errors) {
      if (out.first_errors.size() < 10) out.first_errors.push_back(std::move(e));
    }
  }
  std::vector<uint32_t> all;
  for (auto& d : devices) {
    all.insert(all.end(), d->latencies_us().begin(), d->latencies_us().end());
  }
  if (!all.empty()) {
    auto pct = [&](double q) {
      size_t k = std::min(all.size() - 1, static_cast<size_t>(q * static_cast<double>(all.size())));
      std::nth_element(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(k), all.end());
      return all[k] / 1000.0;
    };
    out.p50_ms = pct(0.50);
    out.p99_ms = pct(0.99);
    out.max_ms = *std::max_element(all.begin(), all.end()) / 1000.0;
  }
  return out;
}

void NoteError(Partial& p, const Device& d, const Status& s) {
  ++p.failed;
  if (p.errors.size() < 10) p.errors.push_back(d.udid() + ": " + s.ToString());
}

}  // namespace

FleetStats Fleet::ForEach(int threads, const std::function<Status(Device&)>& fn) {
  return RunParallel(devices_, threads, 1, [&](Device& d, Partial& p) {
    Status s = fn(d);
    if (s.ok()) {
      ++p.ok;
    } else {
      NoteError(p, d, s);
    }
  });
}

FleetStats Fleet::Enroll(int threads) {
  return ForEach(threads, [](Device& d) -> Status {
    ORCHARD_RETURN_IF_ERROR(d.Authenticate());
    return d.TokenUpdate(false);
  });
}

FleetStats Fleet::RunSessions(int threads, int rounds) {
  return RunParallel(devices_, threads, rounds, [](Device& d, Partial& p) {
    ++p.sessions;
    Result<SessionStats> r = d.RunSession(false);
    if (r.ok()) {
      ++p.ok;
      r->handled.clear();  // per-command detail stays on the device (received())
      p.stats.Add(*r);
    } else {
      NoteError(p, d, r.status());
    }
  });
}

}  // namespace orchard::sim
