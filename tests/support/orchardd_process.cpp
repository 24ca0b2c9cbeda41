#include "support/orchardd_process.h"

#include <curl/curl.h>
#include <signal.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace orchard::testing {

std::string OrchardBinary(const char* name) {
  std::string n = name;
  if (n == "orchardd") return std::string(ORCHARD_BINARY_DIR) + "/core/server/orchardd";
  if (n == "orchardctl") return std::string(ORCHARD_BINARY_DIR) + "/core/ctl/orchardctl";
  return std::string(ORCHARD_BINARY_DIR) + "/" + n;
}

std::string MakeTempDir(const char* prefix) {
  std::string t = std::string("/tmp/") + prefix + "-XXXXXX";
  std::vector<char> buf(t.begin(), t.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) return "";
  return buf.data();
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool WriteFile(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary);
  f << data;
  return bool(f);
}

OrchardProcess::OrchardProcess(std::string data_dir, std::vector<std::string> args)
    : data_dir_(std::move(data_dir)), args_(std::move(args)) {}

OrchardProcess::~OrchardProcess() {
  if (pid_ > 0) Stop();
}

bool OrchardProcess::Start() {
  int out[2];
  if (pipe(out) != 0) return false;
  std::vector<std::string> argv = {OrchardBinary("orchardd"), "--listen", "127.0.0.1:0",
                                   "--data-dir", data_dir_};
  argv.insert(argv.end(), args_.begin(), args_.end());
  pid_ = fork();
  if (pid_ < 0) return false;
  if (pid_ == 0) {
    dup2(out[1], 1);
    int err = open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (err >= 0) dup2(err, 2);
    close(out[0]);
    close(out[1]);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  close(out[1]);
  // Block on the child's stdout until it says where it listens (or exits).
  FILE* f = fdopen(out[0], "r");
  char line[512];
  bool ok = false;
  while (fgets(line, sizeof line, f)) {
    const char* p = strstr(line, "listening on 127.0.0.1:");
    if (p) {
      port_ = atoi(p + strlen("listening on 127.0.0.1:"));
      ok = port_ > 0;
      break;
    }
  }
  fclose(f);  // later stdout writes get EPIPE-free: orchardd prints nothing else to stdout
  if (!ok) {
    int status;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  return ok;
}

void OrchardProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

int OrchardProcess::Stop() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

namespace {
size_t Collect(char* ptr, size_t size, size_t n, void* userdata) {
  static_cast<std::string*>(userdata)->append(ptr, size * n);
  return size * n;
}
}  // namespace

HttpResult HttpCall(const std::string& method, const std::string& url, const std::string& body,
                    const std::vector<std::string>& headers) {
  HttpResult r;
  CURL* c = curl_easy_init();
  if (!c) {
    r.error = "curl_easy_init failed";
    return r;
  }
  curl_slist* hs = nullptr;
  for (const auto& h : headers) hs = curl_slist_append(hs, h.c_str());
  hs = curl_slist_append(hs, "Expect:");
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (method != "GET" && method != "DELETE") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    r.error = curl_easy_strerror(rc);
  } else {
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    char* ct = nullptr;
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
    if (ct) r.content_type = ct;
  }
  curl_slist_free_all(hs);
  curl_easy_cleanup(c);
  return r;
}

}  // namespace orchard::testing
