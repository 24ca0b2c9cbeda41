#include "bench/http_engine.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>

#include "bench/bench_common.h"

namespace orchard::bench {
namespace {

bool IStartsWith(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && strncasecmp(s.data(), prefix.data(), prefix.size()) == 0;
}

bool IContains(std::string_view s, std::string_view needle) {
  if (needle.size() > s.size()) return false;
  for (size_t i = 0; i + needle.size() <= s.size(); ++i)
    if (strncasecmp(s.data() + i, needle.data(), needle.size()) == 0) return true;
  return false;
}

std::string_view Trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t' || v.back() == '\r')) v.remove_suffix(1);
  return v;
}

struct Conn {
  enum State : uint8_t { kNew, kConnecting, kBusy, kParked, kRetry, kDone };
  int fd = -1;
  State state = kNew;
  bool has_request = false;   // a request was taken from Next() and is unanswered
  bool want_write = false;    // EPOLLOUT registered for a partial write
  bool established = false;   // at least one response received, ever
  std::string_view req;
  size_t off = 0;
  uint64_t sent_ns = 0;
  uint64_t retry_at_ns = 0;
  std::string in;  // bytes of an incomplete response
};

}  // namespace

long ParseResponse(std::string_view data, Response* out) {
  size_t hdr_end = data.find("\r\n\r\n");
  if (hdr_end == std::string_view::npos) return data.size() > 256 * 1024 ? -1 : 0;
  if (data.size() < 12 || data.substr(0, 7) != "HTTP/1.") return -1;
  int status = 0;
  for (size_t i = 9; i < 12; ++i) {
    if (data[i] < '0' || data[i] > '9') return -1;
    status = status * 10 + (data[i] - '0');
  }
  long content_length = -1;
  bool close = false;
  std::string_view headers = data.substr(0, hdr_end + 2);
  size_t pos = headers.find("\r\n") + 2;
  while (pos < headers.size()) {
    size_t eol = headers.find("\r\n", pos);
    if (eol == std::string_view::npos) break;
    std::string_view line = headers.substr(pos, eol - pos);
    pos = eol + 2;
    if (IStartsWith(line, "content-length:")) {
      std::string_view v = Trim(line.substr(15));
      content_length = 0;
      for (char c : v) {
        if (c < '0' || c > '9') return -1;
        content_length = content_length * 10 + (c - '0');
      }
    } else if (IStartsWith(line, "connection:")) {
      close = IContains(line.substr(11), "close");
    } else if (IStartsWith(line, "transfer-encoding:")) {
      return -1;  // chunked: not needed for these servers
    }
  }
  if (content_length < 0) {
    if (status == 204 || status == 304 || (status >= 100 && status < 200)) content_length = 0;
    else return -1;
  }
  const size_t total = hdr_end + 4 + static_cast<size_t>(content_length);
  if (data.size() < total) return 0;
  out->status = status;
  out->close = close;
  out->body = data.substr(hdr_end + 4, static_cast<size_t>(content_length));
  return static_cast<long>(total);
}

Engine::Engine(EngineOptions options, Driver* driver) : options_(std::move(options)), driver_(driver) {
  options_.threads = std::max(1, std::min<int>(options_.threads, static_cast<int>(std::max<size_t>(1, options_.connections))));
}

Engine::~Engine() { Stop(); }

void Engine::Start() {
  const size_t n = options_.connections;
  const size_t t = static_cast<size_t>(options_.threads);
  if (!options_.ramp) go_ = true;
  for (size_t i = 0; i < t; ++i) {
    size_t begin = n * i / t, end = n * (i + 1) / t;
    threads_.emplace_back([this, i, begin, end] { ThreadMain(static_cast<int>(i), begin, end); });
  }
}

bool Engine::WaitRamp(double timeout_s) {
  const uint64_t start = NowNs();
  while (established_.load() + finished_.load() < options_.connections) {
    if (SecondsSince(start) > timeout_s) return false;
    // Nobody listening: give up early instead of retrying until the timeout.
    if (established_.load() == 0 && connect_errors_.load() > 0 && SecondsSince(start) > 10) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

void Engine::Go() { go_ = true; }

bool Engine::WaitFinished(double timeout_s) {
  const uint64_t start = NowNs();
  while (finished_.load() < options_.connections) {
    if (SecondsSince(start) > timeout_s) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

void Engine::Stop() {
  stop_ = true;
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

void Engine::ThreadMain(int thread, size_t begin, size_t end) {
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  std::vector<Conn> conns(end - begin);
  std::deque<size_t> to_open;  // local indices
  for (size_t i = 0; i < conns.size(); ++i) to_open.push_back(i);
  std::vector<size_t> parked, retry;
  const int max_opening = std::max(1, options_.max_connecting / options_.threads);
  int opening = 0;  // never-established connections in flight (ramp limit)

  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(options_.port);
  inet_pton(AF_INET, options_.host.c_str(), &addr.sin_addr);

  std::vector<char> buf(256 * 1024);

  auto finish = [&](size_t li) {
    Conn& c = conns[li];
    if (c.fd >= 0) close(c.fd);
    c.fd = -1;
    if (!c.established) --opening;
    c.state = Conn::kDone;
    ++finished_;
  };

  auto drop_fd = [&](Conn& c) {
    if (c.fd >= 0) {
      epoll_ctl(ep, EPOLL_CTL_DEL, c.fd, nullptr);
      close(c.fd);
    }
    c.fd = -1;
    c.in.clear();
    c.want_write = false;
  };

  // Transport failure: reconnect after a short pause and resend the request.
  auto fail = [&](size_t li, bool connect_error) {
    Conn& c = conns[li];
    drop_fd(c);
    (connect_error ? connect_errors_ : transport_errors_)++;
    c.state = Conn::kRetry;
    c.retry_at_ns = NowNs() + 10'000'000;  // 10 ms: no hot loop against a dead server
    retry.push_back(li);
  };

  auto write_req = [&](size_t li) {
    Conn& c = conns[li];
    while (c.off < c.req.size()) {
      ssize_t n = send(c.fd, c.req.data() + c.off, c.req.size() - c.off, MSG_NOSIGNAL);
      if (n > 0) {
        c.off += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!c.want_write) {
          epoll_event ev{};
          ev.events = EPOLLIN | EPOLLOUT;
          ev.data.u64 = li;
          epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
          c.want_write = true;
        }
        return;
      }
      fail(li, false);
      return;
    }
    if (c.want_write) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = li;
      epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
      c.want_write = false;
    }
  };

  auto send_current = [&](size_t li) {
    Conn& c = conns[li];
    c.state = Conn::kBusy;
    c.off = 0;
    c.sent_ns = NowNs();
    write_req(li);
  };

  // Takes the next request from the driver (unless one is pending) and sends it
  // on the open connection; finishes the connection when the driver is done.
  auto send_next = [&](size_t li) {
    Conn& c = conns[li];
    if (!c.has_request) {
      if (!driver_->Next(begin + li, &c.req)) {
        drop_fd(c);
        finish(li);
        return;
      }
      c.has_request = true;
    }
    send_current(li);
  };

  auto on_connected = [&](size_t li) {
    Conn& c = conns[li];
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = li;
    epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
    send_next(li);
  };

  auto open_conn = [&](size_t li) {
    Conn& c = conns[li];
    if (!c.has_request) {
      if (!driver_->Next(begin + li, &c.req)) {
        finish(li);
        return;
      }
      c.has_request = true;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      fail(li, true);
      return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c.fd = fd;
    c.state = Conn::kConnecting;
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.u64 = li;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    int rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    if (rc == 0) on_connected(li);
    else if (errno != EINPROGRESS) fail(li, true);
  };

  auto on_response = [&](size_t li, const Response& r) {
    Conn& c = conns[li];
    const uint64_t now = NowNs();
    c.has_request = false;
    ++responses_;
    driver_->OnResponse(thread, begin + li, r, static_cast<uint32_t>(std::min<uint64_t>((now - c.sent_ns) / 1000, UINT32_MAX)));
    if (!c.established) {
      c.established = true;
      --opening;
      ++established_;
    }
    if (r.close) {
      ++server_closes_;
      drop_fd(c);
      c.state = Conn::kNew;
      open_conn(li);  // reconnect now; the next request goes out once connected
      return;
    }
    if (!go_.load(std::memory_order_relaxed)) {
      c.state = Conn::kParked;
      parked.push_back(li);
      return;
    }
    send_next(li);
  };

  auto on_readable = [&](size_t li) {
    Conn& c = conns[li];
    while (c.fd >= 0) {
      ssize_t n = recv(c.fd, buf.data(), buf.size(), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        fail(li, false);
        return;
      }
      if (n == 0) {
        // Closed by the server: an error when a request was outstanding.
        if (c.has_request) {
          fail(li, false);
        } else {
          ++server_closes_;
          drop_fd(c);
          c.state = Conn::kNew;
          open_conn(li);
        }
        return;
      }
      std::string_view data(buf.data(), static_cast<size_t>(n));
      if (!c.in.empty()) {
        c.in.append(data);
        data = c.in;
      }
      if (!c.has_request) {
        ++protocol_errors_;  // bytes nobody asked for
        fail(li, false);
        return;
      }
      Response r;
      long used = ParseResponse(data, &r);
      if (used < 0) {
        ++protocol_errors_;
        fail(li, false);
        return;
      }
      if (used == 0) {
        if (c.in.empty()) c.in.assign(data);
        continue;  // read more (until EAGAIN)
      }
      if (static_cast<size_t>(used) != data.size()) {
        ++protocol_errors_;  // pipelining is never used: extra bytes are a server bug
        fail(li, false);
        return;
      }
      // The response views into buf or c.in: both stay untouched until the
      // driver has seen it (on_response calls OnResponse first).
      on_response(li, r);
      c.in.clear();
      return;  // level-triggered: anything further arrives as a new event
    }
  };

  std::vector<epoll_event> events(1024);
  bool was_go = go_.load();
  while (!stop_.load(std::memory_order_relaxed)) {
    // Open connections (limited while ramping).
    while (!to_open.empty() && (go_.load(std::memory_order_relaxed) || opening < max_opening)) {
      size_t li = to_open.front();
      to_open.pop_front();
      ++opening;
      open_conn(li);
    }
    if (!was_go && go_.load()) {
      was_go = true;
      for (size_t li : parked)
        if (conns[li].state == Conn::kParked) send_next(li);
      parked.clear();
    }
    if (!retry.empty()) {
      const uint64_t now = NowNs();
      std::vector<size_t> later;
      for (size_t li : retry) {
        if (conns[li].state != Conn::kRetry) continue;
        if (conns[li].retry_at_ns <= now) open_conn(li);
        else later.push_back(li);
      }
      retry.swap(later);
    }
    int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), 5);
    for (int k = 0; k < n; ++k) {
      size_t li = events[k].data.u64;
      Conn& c = conns[li];
      if (c.fd < 0) continue;
      const uint32_t ev = events[k].events;
      if (c.state == Conn::kConnecting) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0 || (ev & (EPOLLERR | EPOLLHUP))) fail(li, true);
        else on_connected(li);
        continue;
      }
      if (ev & EPOLLIN) on_readable(li);
      else if (ev & (EPOLLERR | EPOLLHUP)) fail(li, false);
      if (c.fd >= 0 && (ev & EPOLLOUT) && c.want_write) write_req(li);
    }
  }
  for (auto& c : conns)
    if (c.fd >= 0) close(c.fd);
  close(ep);
}

}  // namespace orchard::bench
