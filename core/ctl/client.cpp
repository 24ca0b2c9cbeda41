#include "ctl/client.h"

#include <curl/curl.h>

#include "util/encoding.h"

namespace orchard::ctl {

struct AdminClient::CurlHandle {
  CURL* easy = nullptr;
  ~CurlHandle() {
    if (easy) curl_easy_cleanup(easy);
  }
};

namespace {

size_t CollectBody(char* ptr, size_t size, size_t n, void* userdata) {
  static_cast<std::string*>(userdata)->append(ptr, size * n);
  return size * n;
}

struct HeaderList {
  curl_slist* list = nullptr;
  ~HeaderList() {
    // Header values may be secret (a PKCS#12 password): wipe them before freeing.
    for (curl_slist* n = list; n; n = n->next)
      for (volatile char* p = n->data; p && *p; ++p) *p = 0;
    curl_slist_free_all(list);
  }
  void Add(const std::string& line) { list = curl_slist_append(list, line.c_str()); }
};

}  // namespace

AdminClient::AdminClient(ClientOptions options, std::unique_ptr<CurlHandle> handle)
    : options_(std::move(options)), curl_(std::move(handle)) {}

AdminClient::~AdminClient() = default;

Result<std::unique_ptr<AdminClient>> AdminClient::Create(ClientOptions options) {
  const std::string& u = options.base_url;
  if (u.rfind("http://", 0) != 0 && u.rfind("https://", 0) != 0)
    return Status::InvalidArgument("--url must start with http:// or https:// (got \"" + u + "\")");
  while (options.base_url.size() > 8 && options.base_url.back() == '/') options.base_url.pop_back();
  auto handle = std::make_unique<CurlHandle>();
  handle->easy = curl_easy_init();
  if (!handle->easy) return Status::Internal("curl_easy_init failed");
  return std::unique_ptr<AdminClient>(new AdminClient(std::move(options), std::move(handle)));
}

Result<HttpReply> AdminClient::Call(const std::string& method, const std::string& path,
                                    const Query& query, const std::string& body,
                                    const std::string& content_type,
                                    const std::vector<std::string>& extra_headers) {
  CURL* c = curl_->easy;
  curl_easy_reset(c);
  std::string url = options_.base_url + path;
  char sep = '?';
  for (const auto& [k, v] : query) {
    url += sep + PercentEncode(k) + "=" + PercentEncode(v);
    sep = '&';
  }
  HeaderList headers;
  headers.Add("Expect:");  // no 100-continue round trip
  headers.Add("Accept: application/json");
  if (!content_type.empty()) headers.Add("Content-Type: " + content_type);
  for (const auto& h : extra_headers) headers.Add(h);

  HttpReply reply;
  char error[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (!content_type.empty()) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  } else if (method == "GET") {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  } else if (method != "DELETE") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(0));
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.list);
  if (!options_.api_key.empty()) {
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
    curl_easy_setopt(c, CURLOPT_USERNAME, "orchardctl");
    curl_easy_setopt(c, CURLOPT_PASSWORD, options_.api_key.c_str());
  }
  if (!options_.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, options_.ca_file.c_str());
  curl_easy_setopt(c, CURLOPT_USERAGENT, "orchardctl");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, CollectBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply.body);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, options_.timeout_seconds);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");

  CURLcode rc = curl_easy_perform(c);
  // The error buffer and header list must not outlive this call in the handle.
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, nullptr);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
  if (rc != CURLE_OK) {
    std::string detail = error[0] ? error : curl_easy_strerror(rc);
    while (!detail.empty() && (detail.back() == '\n' || detail.back() == ' ')) detail.pop_back();
    std::string hint;
    if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
        rc == CURLE_SSL_CONNECT_ERROR)
      hint = " (is --cacert set to the CA that signed the server's certificate?)";
    return Status::Unavailable("cannot reach orchardd at " + options_.base_url + ": " + detail +
                               hint);
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
  char* ct = nullptr;
  curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
  if (ct) reply.content_type = ct;
  return reply;
}

std::string PathSegment(const std::string& raw) { return PercentEncode(raw); }

}  // namespace orchard::ctl
