#include "bench/webhook_receiver.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <string_view>
#include <unordered_map>

#include "bench/bench_common.h"

namespace orchard::bench {
namespace {

constexpr size_t kMaxHeader = 64 * 1024;

bool IStartsWith(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && strncasecmp(s.data(), prefix.data(), prefix.size()) == 0;
}

std::string_view Trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t' || v.back() == '\r')) v.remove_suffix(1);
  return v;
}

struct Conn {
  int fd = -1;
  std::string in;
  size_t parsed = 0;  // bytes of `in` already consumed
  std::string out;    // unsent reply bytes
  bool want_write = false;
  bool close_after = false;
};

const char kOk[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";
const char kUnauthorized[] = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n";
const char kBad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const char kTooLarge[] = "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

}  // namespace

struct HookReceiver::Loop {
  int epfd = -1;
  std::unordered_map<int, std::unique_ptr<Conn>> conns;
  std::vector<std::string> ids;  // event_ids accepted by this loop
  uint64_t missing_ids = 0;
  unsigned char mac[EVP_MAX_MD_SIZE];
  char b64[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
};

HookReceiver::HookReceiver(ReceiverOptions options) : options_(std::move(options)) {}

HookReceiver::~HookReceiver() { Stop(); }

bool HookReceiver::Start(std::string* error) {
  stop_ = false;
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) {
    *error = std::string("socket: ") + strerror(errno);
    return false;
  }
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(options_.port);
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(listen_fd_, 1024) != 0) {
    *error = std::string("bind/listen: ") + strerror(errno);
    close(listen_fd_);
    listen_fd_ = -1;
    return false;
  }
  socklen_t len = sizeof a;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  for (int i = 0; i < std::max(1, options_.threads); ++i) {
    auto loop = std::make_unique<Loop>();
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLEXCLUSIVE;
    ev.data.fd = listen_fd_;
    if (loop->epfd < 0 || epoll_ctl(loop->epfd, EPOLL_CTL_ADD, listen_fd_, &ev) != 0) {
      *error = std::string("epoll: ") + strerror(errno);
      if (loop->epfd >= 0) close(loop->epfd);
      Stop();
      return false;
    }
    loops_.push_back(std::move(loop));
  }
  for (auto& loop : loops_) threads_.emplace_back([this, l = loop.get()] { Run(l); });
  return true;
}

void HookReceiver::Stop() {
  stop_ = true;
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
  for (auto& loop : loops_) {
    for (auto& [fd, c] : loop->conns) close(fd);
    loop->conns.clear();
    if (loop->epfd >= 0) close(loop->epfd);
    loop->epfd = -1;
  }
  if (listen_fd_ >= 0) close(listen_fd_);
  listen_fd_ = -1;
}

uint64_t HookReceiver::Duplicates() const {
  std::vector<std::string_view> all;
  for (const auto& loop : loops_)
    for (const auto& id : loop->ids) all.push_back(id);
  std::sort(all.begin(), all.end());
  uint64_t dup = 0;
  for (size_t i = 1; i < all.size(); ++i) dup += all[i] == all[i - 1];
  return dup;
}

uint64_t HookReceiver::MissingIds() const {
  uint64_t n = 0;
  for (const auto& loop : loops_) n += loop->missing_ids;
  return n;
}

std::vector<std::string> HookReceiver::TakeBodies() {
  std::lock_guard lock(bodies_mu_);
  return std::move(bodies_);
}

void HookReceiver::Run(Loop* loop) noexcept {
  // A benchmark tool: an unexpected failure ends this loop, visibly.
  try {
    Serve(loop);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "webhook receiver: loop failed: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "webhook receiver: loop failed\n");
  }
}

void HookReceiver::Serve(Loop* loop) {
  epoll_event events[64];
  char buf[64 * 1024];
  auto drop = [&](Conn* c) {
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, c->fd, nullptr);
    close(c->fd);
    loop->conns.erase(c->fd);
  };
  // Sends c->out; false when the connection is gone.
  auto flush = [&](Conn* c) {
    while (!c->out.empty()) {
      const ssize_t n = send(c->fd, c->out.data(), c->out.size(), MSG_NOSIGNAL);
      if (n > 0) {
        c->out.erase(0, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      return false;
    }
    const bool want = !c->out.empty();
    if (want != c->want_write) {
      epoll_event ev{};
      ev.events = EPOLLIN | (want ? static_cast<uint32_t>(EPOLLOUT) : 0u);
      ev.data.fd = c->fd;
      epoll_ctl(loop->epfd, EPOLL_CTL_MOD, c->fd, &ev);
      c->want_write = want;
    }
    return !(c->out.empty() && c->close_after);
  };
  // Answers every complete request in c->in; false on a fatal protocol error.
  auto handle = [&](Conn* c) {
    while (true) {
      std::string_view data(c->in);
      data.remove_prefix(c->parsed);
      const size_t end = data.find("\r\n\r\n");
      if (end == std::string_view::npos) {
        if (data.size() > kMaxHeader) {
          protocol_errors_.fetch_add(1, std::memory_order_relaxed);
          c->out.append(kBad);
          c->close_after = true;
        }
        break;
      }
      const std::string_view head = data.substr(0, end + 2);
      size_t content_length = 0;
      bool has_length = false;
      std::string_view signature;
      size_t pos = head.find("\r\n");
      if (pos == std::string_view::npos || !IStartsWith(head, "POST ")) {
        protocol_errors_.fetch_add(1, std::memory_order_relaxed);
        c->out.append(kBad);
        c->close_after = true;
        break;
      }
      pos += 2;
      while (pos < head.size()) {
        const size_t eol = head.find("\r\n", pos);
        const std::string_view line = head.substr(pos, eol - pos);
        pos = eol + 2;
        if (IStartsWith(line, "content-length:")) {
          has_length = true;
          for (char ch : Trim(line.substr(15))) content_length = content_length * 10 + static_cast<size_t>(ch - '0');
        } else if (IStartsWith(line, "x-hmac-signature:")) {
          signature = Trim(line.substr(17));
        } else if (IStartsWith(line, "connection:") && Trim(line.substr(11)) == "close") {
          c->close_after = true;
        }
      }
      if (!has_length || content_length > options_.max_body) {
        protocol_errors_.fetch_add(1, std::memory_order_relaxed);
        c->out.append(has_length ? kTooLarge : kBad);
        c->close_after = true;
        break;
      }
      if (data.size() < end + 4 + content_length) break;  // the body is not complete yet
      const std::string_view body = data.substr(end + 4, content_length);
      unsigned int mac_len = 0;
      bool ok = false;
      if (HMAC(EVP_sha256(), options_.secret.data(), static_cast<int>(options_.secret.size()),
               reinterpret_cast<const unsigned char*>(body.data()), body.size(), loop->mac, &mac_len) != nullptr) {
        const int b64_len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(loop->b64), loop->mac,
                                            static_cast<int>(mac_len));
        ok = b64_len > 0 && signature.size() == static_cast<size_t>(b64_len) &&
             CRYPTO_memcmp(signature.data(), loop->b64, signature.size()) == 0;
      }
      if (ok) {
        const uint64_t now = NowNs();
        uint64_t zero = 0;
        first_ns_.compare_exchange_strong(zero, now);
        last_ns_.store(now);
        const size_t k = body.find("\"event_id\":\"");
        const size_t q = k == std::string_view::npos ? k : body.find('"', k + 12);
        if (q == std::string_view::npos) ++loop->missing_ids;
        else loop->ids.emplace_back(body.substr(k + 12, q - k - 12));
        if (options_.keep_bodies > 0) {
          std::lock_guard lock(bodies_mu_);
          if (bodies_.size() < options_.keep_bodies) bodies_.emplace_back(body);
        }
        accepted_.fetch_add(1, std::memory_order_relaxed);
        c->out.append(kOk, sizeof kOk - 1);
      } else {
        bad_hmac_.fetch_add(1, std::memory_order_relaxed);
        c->out.append(kUnauthorized, sizeof kUnauthorized - 1);
      }
      c->parsed += end + 4 + content_length;
      if (c->close_after) break;
    }
    if (c->parsed == c->in.size()) {
      c->in.clear();
      c->parsed = 0;
    } else if (c->parsed > 32 * 1024) {
      c->in.erase(0, c->parsed);
      c->parsed = 0;
    }
  };

  while (!stop_.load(std::memory_order_relaxed)) {
    const int n = epoll_wait(loop->epfd, events, 64, 20);
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == listen_fd_) {
        while (true) {
          const int cfd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (cfd < 0) break;
          int one = 1;
          setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          auto c = std::make_unique<Conn>();
          c->fd = cfd;
          c->in.reserve(16 * 1024);
          epoll_event ev{};
          ev.events = EPOLLIN;
          ev.data.fd = cfd;
          epoll_ctl(loop->epfd, EPOLL_CTL_ADD, cfd, &ev);
          loop->conns.emplace(cfd, std::move(c));
          connections_.fetch_add(1, std::memory_order_relaxed);
        }
        continue;
      }
      auto it = loop->conns.find(fd);
      if (it == loop->conns.end()) continue;
      Conn* c = it->second.get();
      if (events[i].events & EPOLLOUT) {
        if (!flush(c)) {
          drop(c);
          continue;
        }
      }
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        bool alive = true;
        while (true) {
          const ssize_t r = recv(fd, buf, sizeof buf, 0);
          if (r > 0) {
            c->in.append(buf, static_cast<size_t>(r));
            if (static_cast<size_t>(r) < sizeof buf) break;
            continue;
          }
          if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
          alive = false;  // EOF or error
          break;
        }
        if (!c->close_after) handle(c);
        if (!flush(c) || !alive) drop(c);
      }
    }
  }
}

}  // namespace orchard::bench
