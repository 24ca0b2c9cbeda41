// Tests for the device simulator: response builders against Apple's command
// schemas (no network), and one loopback session against an in-test HTTP/1.1
// server that checks paths, content types and the Mdm-Signature.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "plist/plist.h"
#include "sim/responder.h"
#include "sim/simulator.h"
#include "support/fixtures.h"
#include "support/test_pki.h"
#include "util/encoding.h"

using namespace orchard;
using namespace orchard::sim;
using plist::Type;
using plist::Value;

namespace {

// ---------------------------------------------------------------- schema scanning

struct SchemaKey {
  std::string name, type, presence;
  std::vector<SchemaKey> subkeys;  // one level only
};

struct CommandSchema {
  std::string file, request_type;
  std::vector<SchemaKey> response_keys;
};

std::string CommandsDir() {
  return testing::FixturePath("apple-device-management/mdm/commands");
}

std::string_view After(std::string_view line, std::string_view prefix) {
  return line.substr(prefix.size());
}

// Simple text scan of a command YAML: the requesttype line, and under
// `responsekeys:` the top-level keys ("- key:" at column 0, "  type:") with their
// first level of subkeys ("  - key:" / "    type:").
CommandSchema ScanCommandYaml(const std::filesystem::path& path) {
  CommandSchema s;
  s.file = path.filename().string();
  std::ifstream in(path);
  std::string raw;
  bool in_resp = false;
  while (std::getline(in, raw)) {
    std::string_view line = raw;
    if (s.request_type.empty() && line.starts_with("  requesttype: ")) {
      s.request_type = std::string(After(line, "  requesttype: "));
      continue;
    }
    if (line == "responsekeys:") {
      in_resp = true;
      continue;
    }
    if (!in_resp) continue;
    if (!line.empty() && line[0] != ' ' && line[0] != '-') break;  // next section
    if (line.starts_with("- key: ")) {
      s.response_keys.push_back({std::string(After(line, "- key: ")), "", "", {}});
    } else if (s.response_keys.empty()) {
      continue;
    } else if (line.starts_with("  type: ")) {
      s.response_keys.back().type = std::string(After(line, "  type: "));
    } else if (line.starts_with("  presence: ")) {
      s.response_keys.back().presence = std::string(After(line, "  presence: "));
    } else if (line.starts_with("  - key: ")) {
      s.response_keys.back().subkeys.push_back({std::string(After(line, "  - key: ")), "", "", {}});
    } else if (line.starts_with("    type: ") && !s.response_keys.back().subkeys.empty()) {
      s.response_keys.back().subkeys.back().type = std::string(After(line, "    type: "));
    }
  }
  return s;
}

std::vector<CommandSchema> LoadSchemas() {
  std::vector<CommandSchema> out;
  std::error_code ec;
  if (!std::filesystem::is_directory(CommandsDir(), ec)) return out;
  for (const auto& e : std::filesystem::directory_iterator(CommandsDir())) {
    if (e.path().extension() != ".yaml") continue;
    CommandSchema s = ScanCommandYaml(e.path());
    if (!s.request_type.empty()) out.push_back(std::move(s));
  }
  std::sort(out.begin(), out.end(),
            [](const CommandSchema& a, const CommandSchema& b) { return a.file < b.file; });
  return out;
}

// "<string>" -> kString, ...; nullopt for <any> and unknown spellings.
std::optional<Type> SchemaType(std::string_view t) {
  if (t == "<string>") return Type::kString;
  if (t == "<integer>") return Type::kInteger;
  if (t == "<real>") return Type::kReal;
  if (t == "<boolean>") return Type::kBool;
  if (t == "<date>") return Type::kDate;
  if (t == "<data>") return Type::kData;
  if (t == "<array>") return Type::kArray;
  if (t == "<dictionary>") return Type::kDict;
  return std::nullopt;
}

// ---------------------------------------------------------------- helpers

Value MakeCommand(std::string uuid, std::string request_type, plist::Dict extra = {}) {
  Value cmd = Value::MakeDict();
  cmd.Set("RequestType", Value::String(std::move(request_type)));
  for (auto& [k, v] : extra) cmd.Set(k, std::move(v));
  Value outer = Value::MakeDict();
  outer.Set("CommandUUID", Value::String(std::move(uuid)));
  outer.Set("Command", std::move(cmd));
  return outer;
}

Value StringArray(std::initializer_list<const char*> items) {
  Value a = Value::MakeArray();
  for (const char* s : items) a.AsArray()->push_back(Value::String(s));
  return a;
}

DeviceState TestState(Platform p = Platform::kIos) {
  DeviceState s = RandomDeviceState(p, 42);
  s.identity_cert_der = std::string("\x30\x03\x02\x01\x01", 5);
  s.identity_common_name = "sim-device";
  return s;
}

testing::TestCa& SharedCa() {
  static std::unique_ptr<testing::TestCa> ca = testing::TestCa::Create("sim_test CA");
  return *ca;
}

// ---------------------------------------------------------------- loopback server

struct Request {
  std::string method, path, body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string Header(std::string_view name) const {
    for (const auto& [k, v] : headers) {
      if (k.size() == name.size() &&
          std::equal(k.begin(), k.end(), name.begin(), [](char a, char b) {
            return std::tolower(static_cast<unsigned char>(a)) ==
                   std::tolower(static_cast<unsigned char>(b));
          })) {
        return v;
      }
    }
    return "";
  }
  bool HasHeader(std::string_view name) const {
    for (const auto& [k, v] : headers) {
      if (strcasecmp(k.c_str(), std::string(name).c_str()) == 0) return true;
    }
    return false;
  }
};

struct Reply {
  int status = 200;
  std::string body;
  std::string content_type = "application/xml; charset=UTF-8";
};

// Takes one complete HTTP/1.1 request off the front of *buf; false when incomplete.
bool ParseRequest(std::string* buf, Request* r) {
  size_t end = buf->find("\r\n\r\n");
  if (end == std::string::npos) return false;
  std::istringstream head(buf->substr(0, end));
  std::string line;
  std::getline(head, line);
  std::istringstream first(line);
  first >> r->method >> r->path;
  size_t content_length = 0;
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string k = line.substr(0, colon);
    std::string v = line.substr(colon + 1);
    while (!v.empty() && v.front() == ' ') v.erase(0, 1);
    if (strcasecmp(k.c_str(), "Content-Length") == 0) content_length = std::stoul(v);
    r->headers.emplace_back(std::move(k), std::move(v));
  }
  if (buf->size() < end + 4 + content_length) return false;
  r->body = buf->substr(end + 4, content_length);
  buf->erase(0, end + 4 + content_length);
  return true;
}

std::string FormatReply(const Reply& reply) {
  std::string out = "HTTP/1.1 " + std::to_string(reply.status) + " X\r\n";
  if (!reply.body.empty()) out += "Content-Type: " + reply.content_type + "\r\n";
  out += "Content-Length: " + std::to_string(reply.body.size()) + "\r\n\r\n" + reply.body;
  return out;
}

// A one-thread HTTP/1.1 server on 127.0.0.1:<ephemeral>. Serves `replies` in
// order, then "200, empty body" forever. Keeps connections alive. Records
// every request before answering it, so a client that got its response can
// read the record.
class LoopbackServer {
 public:
  explicit LoopbackServer(std::vector<Reply> replies) : replies_(std::move(replies)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listen_fd_, 16) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Loop(); });
  }
  ~LoopbackServer() {
    stop_ = true;
    thread_.join();
    for (int fd : clients_) ::close(fd);
    ::close(listen_fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::vector<Request> requests() {
    std::lock_guard<std::mutex> l(mu_);
    return requests_;
  }
  int connections() const { return accepted_; }

 private:
  void Loop() {
    std::vector<std::string> buffers;
    while (!stop_) {
      std::vector<pollfd> fds;
      fds.push_back({listen_fd_, POLLIN, 0});
      for (int fd : clients_) fds.push_back({fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        int c = ::accept(listen_fd_, nullptr, nullptr);
        if (c >= 0) {
          clients_.push_back(c);
          buffers.emplace_back();
          ++accepted_;
        }
      }
      for (size_t i = 1; i < fds.size(); ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        size_t ci = i - 1;
        char buf[16384];
        ssize_t n = ::recv(fds[i].fd, buf, sizeof buf, 0);
        if (n <= 0) {
          ::close(fds[i].fd);
          clients_[ci] = -1;
          continue;
        }
        buffers[ci].append(buf, static_cast<size_t>(n));
        while (ServeOne(fds[i].fd, &buffers[ci])) {
        }
      }
      for (size_t i = clients_.size(); i-- > 0;) {
        if (clients_[i] < 0) {
          clients_.erase(clients_.begin() + static_cast<std::ptrdiff_t>(i));
          buffers.erase(buffers.begin() + static_cast<std::ptrdiff_t>(i));
        }
      }
    }
  }

  // Answers one complete request from *buf; false when incomplete.
  bool ServeOne(int fd, std::string* buf) {
    Request r;
    if (!ParseRequest(buf, &r)) return false;
    Reply reply;
    {
      std::lock_guard<std::mutex> l(mu_);
      requests_.push_back(std::move(r));
      if (next_ < replies_.size()) reply = replies_[next_++];
    }
    std::string out = FormatReply(reply);
    size_t off = 0;
    while (off < out.size()) {
      ssize_t n = ::send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    return true;
  }

  std::vector<Reply> replies_;
  size_t next_ = 0;
  int listen_fd_ = -1;
  int port_ = 0;
  std::vector<int> clients_;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::mutex mu_;
  std::vector<Request> requests_;
  std::thread thread_;
};

// A one-thread HTTPS server that requires a client certificate issued by `ca`
// and answers every request with 200 and an empty body. Records, per request,
// the DER of the client certificate presented on that connection.
class TlsServer {
 public:
  TlsServer(testing::TestCa& ca, const testing::Identity& server_id) {
    ctx_ = SSL_CTX_new(TLS_server_method());
    REQUIRE(ctx_ != nullptr);
    BIO* cb =
        BIO_new_mem_buf(server_id.cert_pem.data(), static_cast<int>(server_id.cert_pem.size()));
    X509* cert = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
    BIO_free(cb);
    BIO* kb = BIO_new_mem_buf(server_id.key_pem.data(), static_cast<int>(server_id.key_pem.size()));
    EVP_PKEY* key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
    BIO_free(kb);
    REQUIRE(SSL_CTX_use_certificate(ctx_, cert) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey(ctx_, key) == 1);
    X509_free(cert);
    EVP_PKEY_free(key);
    BIO* ab = BIO_new_mem_buf(ca.cert_pem().data(), static_cast<int>(ca.cert_pem().size()));
    X509* ca_cert = PEM_read_bio_X509(ab, nullptr, nullptr, nullptr);
    BIO_free(ab);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx_), ca_cert);
    X509_free(ca_cert);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);

    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listen_fd_, 16) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Loop(); });
  }
  ~TlsServer() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
    SSL_CTX_free(ctx_);
  }
  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_); }
  std::vector<std::string> peer_certs() {
    std::lock_guard<std::mutex> l(mu_);
    return peers_;
  }
  int connections() const { return accepted_; }

 private:
  void Loop() {
    while (!stop_) {
      pollfd pfd{listen_fd_, POLLIN, 0};
      if (::poll(&pfd, 1, 20) <= 0) continue;
      int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      ++accepted_;
      timeval tv{0, 200 * 1000};  // lets Loop notice stop_ while a client idles
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      Serve(fd);
      ::close(fd);
    }
  }

  void Serve(int fd) {
    SSL* ssl = SSL_new(ctx_);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1) {
      std::string peer;
      if (X509* x = SSL_get1_peer_certificate(ssl)) {
        int len = i2d_X509(x, nullptr);
        peer.assign(static_cast<size_t>(len), '\0');
        auto* p = reinterpret_cast<unsigned char*>(peer.data());
        i2d_X509(x, &p);
        X509_free(x);
      }
      std::string buf;
      while (!stop_) {
        char tmp[16384];
        int n = SSL_read(ssl, tmp, sizeof tmp);
        if (n <= 0) {
          int err = SSL_get_error(ssl, n);
          if (err == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ERR_clear_error();
            continue;  // idle keep-alive; poll stop_
          }
          break;
        }
        buf.append(tmp, static_cast<size_t>(n));
        Request r;
        while (ParseRequest(&buf, &r)) {
          {
            std::lock_guard<std::mutex> l(mu_);
            peers_.push_back(peer);
          }
          std::string out = FormatReply(Reply{200, "", ""});
          SSL_write(ssl, out.data(), static_cast<int>(out.size()));
          r = Request();
        }
      }
    }
    ERR_clear_error();
    SSL_free(ssl);
  }

  SSL_CTX* ctx_ = nullptr;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::mutex mu_;
  std::vector<std::string> peers_;
  std::thread thread_;
};

// Verifies a base64 Mdm-Signature over body; returns the signer DER and digest NID.
bool VerifySignature(const std::string& b64, const std::string& body, std::string* signer_der,
                     int* digest_nid) {
  auto der = Base64Decode(b64);
  if (!der) return false;
  BIO* in = BIO_new_mem_buf(der->data(), static_cast<int>(der->size()));
  CMS_ContentInfo* cms = d2i_CMS_bio(in, nullptr);
  BIO_free(in);
  if (cms == nullptr) return false;
  BIO* content = BIO_new_mem_buf(body.data(), static_cast<int>(body.size()));
  X509_STORE* store = X509_STORE_new();
  int ok = CMS_verify(cms, nullptr, store, content, nullptr,
                      CMS_DETACHED | CMS_BINARY | CMS_NO_SIGNER_CERT_VERIFY);
  if (ok == 1) {
    STACK_OF(X509)* signers = CMS_get0_signers(cms);
    if (signers != nullptr && sk_X509_num(signers) == 1) {
      X509* x = sk_X509_value(signers, 0);
      int len = i2d_X509(x, nullptr);
      signer_der->assign(static_cast<size_t>(len), '\0');
      auto* p = reinterpret_cast<unsigned char*>(signer_der->data());
      i2d_X509(x, &p);
    }
    sk_X509_free(signers);
    STACK_OF(CMS_SignerInfo)* infos = CMS_get0_SignerInfos(cms);
    X509_ALGOR* dig = nullptr;
    CMS_SignerInfo_get0_algs(sk_CMS_SignerInfo_value(infos, 0), nullptr, nullptr, &dig, nullptr);
    *digest_nid = OBJ_obj2nid(dig->algorithm);
  }
  ERR_clear_error();
  X509_STORE_free(store);
  BIO_free(content);
  CMS_ContentInfo_free(cms);
  return ok == 1;
}

}  // namespace

// ---------------------------------------------------------------- builders

TEST_CASE("DeviceInformation answers exactly the asked queries with typed values", "[sim]") {
  DeviceState s = TestState();
  Value cmd = MakeCommand(
      "UUID-1", "DeviceInformation",
      {{"Queries", StringArray({"DeviceName", "OSVersion", "BuildVersion", "ModelName", "Model",
                                "ProductName", "SerialNumber", "UDID", "IMEI", "MEID",
                                "DeviceCapacity", "AvailableDeviceCapacity", "BatteryLevel",
                                "WiFiMAC", "IsSupervised", "NoSuchQueryKey"})}});
  Value r = BuildReport(s, cmd, ReportStatus::kAcknowledged, nullptr);
  CHECK(r.GetString("Status") == "Acknowledged");
  CHECK(r.GetString("CommandUUID") == "UUID-1");
  CHECK(r.GetString("UDID") == s.udid);
  const Value* q = r.Find("QueryResponses");
  REQUIRE(q != nullptr);
  REQUIRE(q->AsDict() != nullptr);
  CHECK(q->AsDict()->size() == 15);  // the unknown key is omitted
  CHECK(q->Find("NoSuchQueryKey") == nullptr);
  CHECK(q->GetString("DeviceName") == s.device_name);
  CHECK(q->GetString("SerialNumber") == s.serial_number);
  CHECK(q->GetString("UDID") == s.udid);
  CHECK(q->GetString("IMEI") == s.imei);
  CHECK(q->Find("DeviceCapacity")->is(Type::kReal));
  CHECK(q->Find("AvailableDeviceCapacity")->is(Type::kReal));
  CHECK(q->Find("BatteryLevel")->is(Type::kReal));
  CHECK(q->Find("IsSupervised")->is(Type::kBool));
  CHECK(q->GetString("WiFiMAC").size() == 17);
  CHECK(s.serial_number.size() == 12);
  CHECK(s.push_token.size() == 32);

  // A Mac has no IMEI/MEID: those are omitted, the rest still answered.
  DeviceState mac = TestState(Platform::kMacos);
  Value rm = BuildReport(mac, cmd, ReportStatus::kAcknowledged, nullptr);
  CHECK(rm.Find("QueryResponses")->Find("IMEI") == nullptr);
  CHECK(rm.Find("QueryResponses")->Find("MEID") == nullptr);
  CHECK(rm.Find("QueryResponses")->GetString("SerialNumber") == mac.serial_number);
}

TEST_CASE("DeviceInformation values have the schema's types", "[sim]") {
  auto schemas = LoadSchemas();
  INFO("command schemas under " << CommandsDir());
  REQUIRE_FALSE(schemas.empty());
  const SchemaKey* qr = nullptr;
  for (const auto& s : schemas) {
    if (s.request_type != "DeviceInformation") continue;
    for (const auto& k : s.response_keys) {
      if (k.name == "QueryResponses") qr = &k;
    }
  }
  REQUIRE(qr != nullptr);
  REQUIRE(qr->subkeys.size() > 50);
  int answered = 0;
  for (Platform p : {Platform::kIos, Platform::kMacos}) {
    DeviceState s = TestState(p);
    for (const SchemaKey& k : qr->subkeys) {
      auto v = QueryValue(s, k.name);
      if (!v) continue;
      ++answered;
      auto want = SchemaType(k.type);
      INFO(PlatformName(p) << " " << k.name << " schema " << k.type << " got "
                           << plist::TypeName(v->type()));
      REQUIRE(want.has_value());
      CHECK(v->type() == *want);
    }
  }
  CHECK(answered > 60);
}

TEST_CASE("CertificateList contains the device identity certificate", "[sim]") {
  testing::Identity id = SharedCa().Issue({.common_name = "sim-cert-list"});
  SimConfig config;
  auto dev = Device::Create(config, RandomDeviceState(Platform::kIos, 7), id);
  REQUIRE(dev.ok());
  Value r = BuildReport((*dev)->state(), MakeCommand("C-1", "CertificateList"),
                        ReportStatus::kAcknowledged, nullptr);
  const Value* list = r.Find("CertificateList");
  REQUIRE(list != nullptr);
  REQUIRE(list->AsArray() != nullptr);
  REQUIRE(list->AsArray()->size() == 1);
  const Value& item = list->AsArray()->front();
  REQUIRE(item.GetData("Data") != nullptr);
  CHECK(*item.GetData("Data") == id.cert_der);
  CHECK(item.GetString("CommonName") == "sim-cert-list");
  CHECK(item.GetBool("IsIdentity", false));
}

TEST_CASE("NotNow, Error and CommandFormatError report shapes", "[sim]") {
  DeviceState s = TestState();
  Value cmd = MakeCommand("U-2", "DeviceInformation", {{"Queries", StringArray({"UDID"})}});

  Value nn = BuildReport(s, cmd, ReportStatus::kNotNow, nullptr);
  CHECK(nn.GetString("Status") == "NotNow");
  CHECK(nn.GetString("CommandUUID") == "U-2");
  CHECK(nn.GetString("UDID") == s.udid);
  CHECK(nn.Find("QueryResponses") == nullptr);
  CHECK(nn.Find("ErrorChain") == nullptr);

  ErrorInfo err{12345, "MCTestDomain", "Boom"};
  Value er = BuildReport(s, cmd, ReportStatus::kError, nullptr, err);
  CHECK(er.GetString("Status") == "Error");
  CHECK(er.GetString("CommandUUID") == "U-2");
  CHECK(er.Find("QueryResponses") == nullptr);
  const Value* chain = er.Find("ErrorChain");
  REQUIRE(chain != nullptr);
  REQUIRE(chain->AsArray() != nullptr);
  REQUIRE(chain->AsArray()->size() == 1);
  const Value& e = chain->AsArray()->front();
  REQUIRE(e.Find("ErrorCode") != nullptr);
  CHECK(*e.Find("ErrorCode")->AsInteger() == 12345);
  CHECK(e.GetString("ErrorDomain") == "MCTestDomain");
  CHECK(e.GetString("LocalizedDescription") == "Boom");
  CHECK(e.GetString("USEnglishDescription") == "Boom");

  Value fe = BuildReport(s, cmd, ReportStatus::kCommandFormatError, nullptr);
  CHECK(fe.GetString("Status") == "CommandFormatError");
  CHECK(fe.GetString("CommandUUID") == "U-2");

  // A command without RequestType is a format error whatever the policy says.
  Value broken = Value::MakeDict();
  broken.Set("CommandUUID", Value::String("U-3"));
  broken.Set("Command", Value::MakeDict());
  Value bf = BuildReport(s, broken, ReportStatus::kAcknowledged, nullptr);
  CHECK(bf.GetString("Status") == "CommandFormatError");
  CHECK(bf.GetString("CommandUUID") == "U-3");
}

TEST_CASE("every RequestType in the schemas yields a complete report", "[sim]") {
  auto schemas = LoadSchemas();
  INFO("command schemas under " << CommandsDir());
  REQUIRE_FALSE(schemas.empty());
  CHECK(schemas.size() >= 60);
  UserChannel user{
      "B0B5E4D8-1111-2222-3333-444455556666", "alice", "Alice Example", "", "tok", "magic"};
  for (Platform p : {Platform::kIos, Platform::kMacos}) {
    DeviceState s = TestState(p);
    for (const CommandSchema& schema : schemas) {
      INFO(schema.file << " " << schema.request_type << " on " << PlatformName(p));
      std::string uuid = NewUuid();
      Value cmd = MakeCommand(uuid, schema.request_type);
      for (ReportStatus st :
           {ReportStatus::kAcknowledged, ReportStatus::kNotNow, ReportStatus::kError}) {
        Value r = BuildReport(s, cmd, st, nullptr);
        CHECK(r.GetString("Status") == ReportStatusName(st));
        CHECK(r.GetString("CommandUUID") == uuid);
        CHECK(r.GetString("UDID") == s.udid);
      }
      Value ack = BuildReport(s, cmd, ReportStatus::kAcknowledged, nullptr);
      for (const SchemaKey& k : schema.response_keys) {
        if (k.presence != "required") continue;
        INFO("required response key " << k.name << " " << k.type);
        const Value* v = ack.Find(k.name);
        REQUIRE(v != nullptr);
        if (auto want = SchemaType(k.type)) CHECK(v->type() == *want);
      }
      // The user channel adds its keys; the report stays serializable and parseable.
      Value ur = BuildReport(s, cmd, ReportStatus::kAcknowledged, &user);
      CHECK(ur.GetString("UserID") == user.user_id);
      CHECK(ur.GetString("UserShortName") == "alice");
      CHECK(ur.GetString("UserLongName") == "Alice Example");
      auto round = plist::ParseXml(plist::ToXml(ur));
      REQUIRE(round.ok());
      CHECK(*round == ur);
    }
  }
}

TEST_CASE("SecurityInfo, ProfileList and InstalledApplicationList shapes", "[sim]") {
  DeviceState mac = TestState(Platform::kMacos);
  Value si =
      BuildReport(mac, MakeCommand("S", "SecurityInfo"), ReportStatus::kAcknowledged, nullptr);
  const Value* info = si.Find("SecurityInfo");
  REQUIRE(info != nullptr);
  CHECK(info->Find("FDE_Enabled")->is(Type::kBool));
  CHECK(info->Find("HardwareEncryptionCaps")->is(Type::kInteger));
  CHECK(info->Find("PasscodePresent")->is(Type::kBool));
  CHECK(info->Find("ManagementStatus")->is(Type::kDict));
  DeviceState ios = TestState(Platform::kIos);
  Value sii =
      BuildReport(ios, MakeCommand("S", "SecurityInfo"), ReportStatus::kAcknowledged, nullptr);
  CHECK(sii.Find("SecurityInfo")->Find("FDE_Enabled") == nullptr);
  CHECK(sii.Find("SecurityInfo")->Find("PasscodeCompliant")->is(Type::kBool));

  Value pl =
      BuildReport(ios, MakeCommand("P", "ProfileList"), ReportStatus::kAcknowledged, nullptr);
  const Value* profiles = pl.Find("ProfileList");
  REQUIRE(profiles != nullptr);
  REQUIRE(profiles->AsArray()->size() == ios.profiles.size());
  const Value& first = profiles->AsArray()->front();
  CHECK(!first.GetString("PayloadIdentifier").empty());
  CHECK(!first.GetString("PayloadUUID").empty());
  CHECK(first.Find("PayloadVersion")->is(Type::kInteger));
  CHECK(first.Find("IsManaged")->is(Type::kBool));
  CHECK(first.Find("PayloadContent")->is(Type::kArray));
  Value managed_only =
      BuildReport(ios, MakeCommand("P2", "ProfileList", {{"ManagedOnly", Value::Bool(true)}}),
                  ReportStatus::kAcknowledged, nullptr);
  CHECK(managed_only.Find("ProfileList")->AsArray()->size() < ios.profiles.size());

  Value apps = BuildReport(ios,
                           MakeCommand("A", "InstalledApplicationList",
                                       {{"Identifiers", StringArray({"com.apple.Keynote"})}}),
                           ReportStatus::kAcknowledged, nullptr);
  const Value* list = apps.Find("InstalledApplicationList");
  REQUIRE(list != nullptr);
  REQUIRE(list->AsArray()->size() == 1);
  const Value& app = list->AsArray()->front();
  CHECK(app.GetString("Identifier") == "com.apple.Keynote");
  CHECK(!app.GetString("Name").empty());
  CHECK(!app.GetString("Version").empty());
  CHECK(!app.GetString("ShortVersion").empty());
  CHECK(app.Find("BundleSize")->is(Type::kInteger));
  CHECK(app.Find("DynamicSize")->is(Type::kInteger));
  CHECK(app.Find("IsValidated")->is(Type::kBool));
}

TEST_CASE("check-in messages carry the schema's required keys", "[sim]") {
  DeviceState s = TestState();
  Value a = BuildAuthenticate(s, "com.apple.mgmt.External.x");
  for (const char* k : {"MessageType", "Topic", "UDID", "DeviceName", "ModelName", "Model",
                        "OSVersion", "BuildVersion", "ProductName", "SerialNumber"}) {
    INFO(k);
    CHECK(a.Find(k) != nullptr);
  }
  CHECK(a.GetString("MessageType") == "Authenticate");

  Value t = BuildTokenUpdate(s, "com.apple.mgmt.External.x", true, nullptr);
  CHECK(t.GetString("MessageType") == "TokenUpdate");
  REQUIRE(t.GetData("Token") != nullptr);
  CHECK(*t.GetData("Token") == s.push_token);
  CHECK(t.GetString("PushMagic") == s.push_magic);
  CHECK(t.GetString("Topic") == "com.apple.mgmt.External.x");
  CHECK(t.GetData("UnlockToken") != nullptr);
  CHECK(t.GetBool("AwaitingConfiguration", false));

  UserChannel u{"UID-1", "bob", "Bob Example", "", std::string(32, 'u'), "USER-MAGIC"};
  Value ut = BuildTokenUpdate(s, "com.apple.mgmt.External.x", false, &u);
  CHECK(ut.GetString("UDID") == s.udid);
  CHECK(ut.GetString("UserID") == "UID-1");
  CHECK(ut.GetString("UserShortName") == "bob");
  CHECK(ut.GetString("UserLongName") == "Bob Example");
  CHECK(*ut.GetData("Token") == u.push_token);
  CHECK(ut.GetString("PushMagic") == "USER-MAGIC");
  CHECK(ut.Find("UnlockToken") == nullptr);

  Value co = BuildCheckOut(s, "com.apple.mgmt.External.x");
  CHECK(co.GetString("MessageType") == "CheckOut");
  CHECK(co.GetString("UDID") == s.udid);

  DeviceState ue = s;
  ue.enrollment_id = "ENROLLMENT-ID-1";
  Value idle = BuildIdle(ue, nullptr);
  CHECK(idle.GetString("Status") == "Idle");
  CHECK(idle.GetString("EnrollmentID") == "ENROLLMENT-ID-1");
  CHECK(idle.Find("UDID") == nullptr);
}

TEST_CASE("Responder policies: override, NotNow-once, rates", "[sim]") {
  Responder r(1);
  CHECK(r.Decide("DeviceInformation", "a") == ReportStatus::kAcknowledged);
  r.SetBehavior("InstallProfile", Behavior::kError);
  r.SetBehavior("ProfileList", Behavior::kNotNowOnce);
  r.SetBehavior("EraseDevice", Behavior::kCommandFormatError);
  CHECK(r.Decide("InstallProfile", "b") == ReportStatus::kError);
  CHECK(r.Decide("EraseDevice", "e") == ReportStatus::kCommandFormatError);
  CHECK(r.Decide("ProfileList", "c") == ReportStatus::kNotNow);
  CHECK(r.Decide("ProfileList", "c") == ReportStatus::kAcknowledged);
  CHECK(r.Decide("ProfileList", "d") == ReportStatus::kNotNow);
  r.SetDefault(Behavior::kNotNow);
  CHECK(r.Decide("SecurityInfo", "f") == ReportStatus::kNotNow);

  Responder rates(2);
  rates.SetRates(0.25, 0.25);
  int nn = 0, err = 0, ack = 0;
  for (int i = 0; i < 4000; ++i) {
    switch (rates.Decide("X", std::to_string(i))) {
      case ReportStatus::kNotNow:
        ++nn;
        break;
      case ReportStatus::kError:
        ++err;
        break;
      case ReportStatus::kAcknowledged:
        ++ack;
        break;
      default:
        break;
    }
  }
  CHECK(nn > 800);
  CHECK(nn < 1200);
  CHECK(err > 800);
  CHECK(err < 1200);
  CHECK(ack > 1800);
  CHECK(ParseBehavior("notnow-once") == Behavior::kNotNowOnce);
  CHECK_FALSE(ParseBehavior("bogus").has_value());
}

TEST_CASE("acknowledged commands change the simulated inventory", "[sim]") {
  DeviceState s = TestState();
  const size_t before = s.profiles.size();
  std::string profile =
      plist::ToXml(Value::MakeDict({{"PayloadIdentifier", Value::String("com.example.vpn")},
                                    {"PayloadUUID", Value::String("P-UUID")},
                                    {"PayloadDisplayName", Value::String("VPN")},
                                    {"PayloadType", Value::String("Configuration")},
                                    {"PayloadVersion", Value::Integer(1)},
                                    {"PayloadContent", Value::MakeArray()}}));
  // Signed profiles carry the plist inside CMS; simulate the surrounding bytes.
  std::string signed_like = std::string("\x30\x82\x01\x00junk", 8) + profile + "trailer";
  ApplyCommand(&s,
               MakeCommand("I", "InstallProfile", {{"Payload", Value::DataValue(signed_like)}}));
  REQUIRE(s.profiles.size() == before + 1);
  Value pl = BuildReport(s, MakeCommand("L", "ProfileList"), ReportStatus::kAcknowledged, nullptr);
  bool found = false;
  for (const Value& p : *pl.Find("ProfileList")->AsArray()) {
    found |= p.GetString("PayloadIdentifier") == "com.example.vpn";
  }
  CHECK(found);
  ApplyCommand(
      &s, MakeCommand("R", "RemoveProfile", {{"Identifier", Value::String("com.example.vpn")}}));
  CHECK(s.profiles.size() == before);

  s.awaiting_configuration = true;
  ApplyCommand(&s, MakeCommand("D", "DeviceConfigured"));
  CHECK_FALSE(s.awaiting_configuration);
}

// ---------------------------------------------------------------- loopback

TEST_CASE("RunSession over loopback: paths, content types, signature", "[sim][net]") {
  testing::Identity id = SharedCa().Issue({.common_name = "loopback-device"});
  Value cmd = MakeCommand("CMD-UUID-1", "DeviceInformation",
                          {{"Queries", StringArray({"UDID", "SerialNumber"})}});
  LoopbackServer server({Reply{200, "", ""}, Reply{200, plist::ToXml(cmd)}});

  SimConfig config;
  config.base_url = server.url();
  config.cert_mode = CertMode::kHeaderAndSignature;
  auto dev = Device::Create(config, RandomDeviceState(Platform::kIos, 9), id);
  REQUIRE(dev.ok());
  Device& d = **dev;

  REQUIRE(d.Authenticate().ok());
  auto session = d.RunSession();
  REQUIRE(session.ok());
  CHECK(session->commands == 1);
  CHECK(session->acknowledged == 1);
  CHECK(session->requests == 2);
  REQUIRE(session->handled.size() == 1);
  CHECK(session->handled[0].first == "CMD-UUID-1");
  CHECK(session->handled[0].second == "DeviceInformation");
  REQUIRE(d.received().size() == 1);
  CHECK(d.received()[0].command == cmd);
  CHECK(d.last_http_status() == 200);

  auto reqs = server.requests();
  REQUIRE(reqs.size() == 3);
  CHECK(server.connections() == 1);  // keep-alive: one connection for all requests
  CHECK(reqs[0].method == "PUT");
  CHECK(reqs[0].path == "/mdm/checkin");
  CHECK(reqs[0].Header("Content-Type") == "application/x-apple-aspen-mdm-checkin");
  CHECK(reqs[1].path == "/mdm/connect");
  CHECK(reqs[1].Header("Content-Type") == "application/x-apple-aspen-mdm");
  CHECK(reqs[2].path == "/mdm/connect");
  CHECK(reqs[2].Header("Content-Type") == "application/x-apple-aspen-mdm");
  CHECK(reqs[1].Header("User-Agent") == "MDM/1.0");
  CHECK_FALSE(reqs[1].HasHeader("Expect"));

  auto idle = plist::ParseXml(reqs[1].body);
  REQUIRE(idle.ok());
  CHECK(idle->GetString("Status") == "Idle");
  CHECK(idle->GetString("UDID") == d.udid());
  auto report = plist::ParseXml(reqs[2].body);
  REQUIRE(report.ok());
  CHECK(report->GetString("Status") == "Acknowledged");
  CHECK(report->GetString("CommandUUID") == "CMD-UUID-1");
  CHECK(report->Find("QueryResponses")->GetString("SerialNumber") == d.state().serial_number);

  for (const Request& r : reqs) {
    INFO(r.path);
    CHECK(r.Header("Client-Cert") == id.Rfc9440Header());
    std::string signer;
    int nid = 0;
    REQUIRE(VerifySignature(r.Header("Mdm-Signature"), r.body, &signer, &nid));
    CHECK(signer == id.cert_der);
    CHECK(nid == NID_sha1);
    // The signature covers the exact body: a changed body fails.
    CHECK_FALSE(VerifySignature(r.Header("Mdm-Signature"), r.body + " ", &signer, &nid));
  }
}

TEST_CASE("loopback: errors, raw Put, cert modes and identity swap", "[sim][net]") {
  testing::Identity id = SharedCa().Issue({.common_name = "dev-a"});
  testing::Identity other = SharedCa().Issue({.common_name = "dev-b"});
  LoopbackServer server({Reply{401, "", ""}, Reply{200, "not a plist"}, Reply{200, "", ""},
                         Reply{200, "", ""}, Reply{200, "", ""}});
  SimConfig config;
  config.base_url = server.url();
  config.cert_mode = CertMode::kHeader;
  config.cert_header = "X-Client-Cert";
  auto dev = Device::Create(config, RandomDeviceState(Platform::kMacos, 3), id);
  REQUIRE(dev.ok());
  Device& d = **dev;

  Status st = d.TokenUpdate();
  CHECK(st.code() == Code::kUnauthenticated);
  CHECK(st.message().find("401") != std::string::npos);
  CHECK(d.last_http_status() == 401);
  CHECK(d.unenrolled());

  auto bad = d.RunSession();
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().code() == Code::kInvalidArgument);

  auto raw = d.Put("/mdm", "", "garbage", {"X-Extra: 1"});
  REQUIRE(raw.ok());
  CHECK(raw->status == 200);

  REQUIRE(d.SetIdentity(other).ok());
  REQUIRE(d.UserTokenUpdate("USER-1", "carol", "Carol Example").ok());
  auto user_session = d.RunSession(/*user_channel=*/true);
  REQUIRE(user_session.ok());
  CHECK(user_session->commands == 0);

  auto reqs = server.requests();
  REQUIRE(reqs.size() == 5);
  CHECK(reqs[0].Header("X-Client-Cert") == id.Rfc9440Header());
  CHECK_FALSE(reqs[0].HasHeader("Mdm-Signature"));
  CHECK(reqs[0].Header("User-Agent").starts_with("MDM-OSX/1.0"));
  CHECK(reqs[2].path == "/mdm");
  CHECK_FALSE(reqs[2].HasHeader("Content-Type"));
  CHECK(reqs[2].Header("X-Extra") == "1");
  CHECK(reqs[2].body == "garbage");
  CHECK(reqs[3].Header("X-Client-Cert") == other.Rfc9440Header());
  auto tu = plist::ParseXml(reqs[3].body);
  REQUIRE(tu.ok());
  CHECK(tu->GetString("UserID") == "USER-1");
  CHECK(tu->GetString("UserShortName") == "carol");
  auto idle = plist::ParseXml(reqs[4].body);
  REQUIRE(idle.ok());
  CHECK(idle->GetString("Status") == "Idle");
  CHECK(idle->GetString("UserID") == "USER-1");
  CHECK(idle->GetString("UDID") == d.udid());
  CHECK(server.connections() == 2);  // SetIdentity reconnects
}

TEST_CASE("Fleet enrolls and runs sessions in parallel over loopback", "[sim][net]") {
  LoopbackServer server({});  // every request: 200 empty
  FleetOptions opts;
  opts.devices = 6;
  opts.config.base_url = server.url();
  opts.config.cert_mode = CertMode::kSignature;
  opts.macos_fraction = 0.5;
  auto fleet = Fleet::Create(opts, testing::TestCa::Create("fleet CA"));
  REQUIRE(fleet.ok());
  int macs = 0;
  for (size_t i = 0; i < (*fleet)->size(); ++i) {
    macs += (*fleet)->device(i).state().platform == Platform::kMacos;
  }
  CHECK(macs == 3);
  FleetStats e = (*fleet)->Enroll(3);
  CHECK(e.ok == 6);
  CHECK(e.failed == 0);
  FleetStats s = (*fleet)->RunSessions(3, 2);
  CHECK(s.ok == 12);
  CHECK(s.sessions_run == 12);
  CHECK(s.sessions.requests == 12);
  CHECK(s.p50_ms > 0);
  CHECK(server.requests().size() == 6 * 2 + 12);
  CHECK(server.connections() == 6);
}

TEST_CASE("cert mode tls presents the identity as the TLS client certificate", "[sim][net]") {
  testing::TestCa& ca = SharedCa();
  testing::IssueOptions server_opts;
  server_opts.common_name = "127.0.0.1";
  server_opts.dns_name = "127.0.0.1";
  server_opts.server_auth_eku = true;
  server_opts.client_auth_eku = false;
  TlsServer server(ca, ca.Issue(server_opts));
  const std::string ca_file =
      (std::filesystem::temp_directory_path() / ("sim_test_ca_" + NewUuid() + ".pem")).string();
  REQUIRE(ca.WriteCertPem(ca_file));

  testing::Identity id = ca.Issue({.common_name = "tls-device"});
  testing::Identity renewed = ca.Issue({.common_name = "tls-device"});
  SimConfig config;
  config.base_url = server.url();
  config.cert_mode = CertMode::kTls;
  config.tls_ca_file = ca_file;
  auto dev = Device::Create(config, RandomDeviceState(Platform::kIos, 11), id);
  REQUIRE(dev.ok());
  Status a = (*dev)->Authenticate();
  INFO(a.ToString());
  REQUIRE(a.ok());
  REQUIRE((*dev)->TokenUpdate().ok());
  REQUIRE((*dev)->SetIdentity(renewed).ok());
  REQUIRE((*dev)->RunSession().ok());
  std::filesystem::remove(ca_file);

  auto peers = server.peer_certs();
  REQUIRE(peers.size() == 3);
  CHECK(peers[0] == id.cert_der);
  CHECK(peers[1] == id.cert_der);
  CHECK(peers[2] == renewed.cert_der);
  CHECK(server.connections() == 2);

  // A plain-http URL is refused up front in tls mode.
  config.base_url = "http://127.0.0.1:1";
  CHECK_FALSE(Device::Create(config, RandomDeviceState(Platform::kIos, 12), id).ok());
}
