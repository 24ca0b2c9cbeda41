// A raw HTTP/1.x client for tests that must control every byte on the wire
// (keep-alive, framing, smuggling): plain loopback TCP, blocking only through
// poll() with a deadline. Header-only. Not thread-safe per instance.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace orchard::testing {

struct RawResponse {
  std::string version;  // "HTTP/1.1"
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  // Case-insensitive; empty if absent.
  std::string Header(std::string_view name) const {
    for (const auto& [k, v] : headers)
      if (k.size() == name.size() && strncasecmp(k.data(), name.data(), k.size()) == 0) return v;
    return "";
  }
};

// Takes one complete Content-Length-framed response off the front of buf.
// Responses to HEAD have a Content-Length but no body: pass head = true.
inline std::optional<RawResponse> TakeResponse(std::string* buf, bool head = false) {
  const size_t end = buf->find("\r\n\r\n");
  if (end == std::string::npos) return std::nullopt;
  RawResponse r;
  std::string_view h(buf->data(), end);
  size_t eol = h.find("\r\n");
  std::string_view line = h.substr(0, eol);
  const size_t sp = line.find(' ');
  if (sp == std::string_view::npos) return std::nullopt;
  r.version = std::string(line.substr(0, sp));
  r.status = std::atoi(std::string(line.substr(sp + 1, 3)).c_str());
  size_t length = 0;
  while (eol != std::string_view::npos) {
    h.remove_prefix(eol + 2);
    eol = h.find("\r\n");
    std::string_view field = h.substr(0, eol);
    const size_t colon = field.find(':');
    if (colon == std::string_view::npos) continue;
    std::string name(field.substr(0, colon));
    std::string_view value = field.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    if (strcasecmp(name.c_str(), "content-length") == 0) length = std::strtoul(std::string(value).c_str(), nullptr, 10);
    r.headers.emplace_back(std::move(name), std::string(value));
  }
  if (head) length = 0;
  if (buf->size() < end + 4 + length) return std::nullopt;
  r.body = buf->substr(end + 4, length);
  buf->erase(0, end + 4 + length);
  return r;
}

class RawConnection {
 public:
  enum class End { kClosed, kReset, kTimeout };

  // nullptr if the connection cannot be made.
  static std::unique_ptr<RawConnection> Connect(uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return nullptr;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd);
      return nullptr;
    }
    return std::unique_ptr<RawConnection>(new RawConnection(fd));
  }
  ~RawConnection() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  int fd() const { return fd_; }
  // Bytes received and not yet taken as a response.
  const std::string& pending() const { return buf_; }

  bool Send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // The next complete response, or nullopt if none arrived within timeout
  // (or the connection ended first).
  std::optional<RawResponse> Read(std::chrono::milliseconds timeout = std::chrono::seconds(10),
                                  bool head = false) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto r = TakeResponse(&buf_, head)) return r;
      if (ended_ || !Fill(deadline)) return std::nullopt;
    }
  }

  // Waits until the server ends the connection, collecting what it still
  // sends into pending().
  End WaitClosed(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!ended_)
      if (!Fill(deadline)) return End::kTimeout;
    return end_;
  }

  // Makes close() send RST instead of FIN, and closes.
  void Reset() {
    linger l{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    ::close(fd_);
    fd_ = -1;
  }

 private:
  explicit RawConnection(int fd) : fd_(fd) {}

  // Reads what is available before deadline; false on timeout.
  bool Fill(std::chrono::steady_clock::time_point deadline) {
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      const int rc = ::poll(&p, 1, static_cast<int>(left.count()));
      if (rc < 0 && errno == EINTR) continue;
      if (rc <= 0) return false;
      char tmp[16384];
      const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n > 0) {
        buf_.append(tmp, static_cast<size_t>(n));
      } else if (n == 0) {
        ended_ = true;
        end_ = End::kClosed;
      } else if (errno == EINTR || errno == EAGAIN) {
        continue;
      } else {
        ended_ = true;
        end_ = End::kReset;
      }
      return true;
    }
  }

  int fd_;
  std::string buf_;
  bool ended_ = false;
  End end_ = End::kTimeout;
};

}  // namespace orchard::testing
