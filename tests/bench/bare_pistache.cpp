// bench_bare_pistache: the ceiling for orchardd's HTTP layer. A bare Pistache
// Http::Endpoint whose handler answers every request 200 with an empty body,
// configured like orchardd's http::Server (same thread count, flags, request
// size limit and timeouts), so bench_load can compare the two on one machine.
//
//   bench_bare_pistache [--listen 127.0.0.1:0] [--threads 2]
// Prints "listening on 127.0.0.1:PORT" on stdout once it accepts; stops on
// SIGINT/SIGTERM.
#include <pistache/endpoint.h>
#include <pistache/http.h>
#include <pistache/net.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

class BareHandler : public Pistache::Http::Handler {
 public:
  HTTP_PROTOTYPE(BareHandler)
  void onRequest(const Pistache::Http::Request&, Pistache::Http::ResponseWriter writer) override {
    writer.send(Pistache::Http::Code::Ok);
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  int port = 0, threads = 2;
  size_t max_body = 8 * 1024 * 1024;  // orchardd's default max_body_bytes
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--listen" && i + 1 < argc) {
      std::string v = argv[++i];
      auto colon = v.rfind(':');
      host = v.substr(0, colon);
      port = std::atoi(v.c_str() + colon + 1);
    } else if (a == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (a == "--help") {
      std::puts("usage: bench_bare_pistache [--listen 127.0.0.1:0] [--threads 2]");
      return 0;
    } else {
      std::fprintf(stderr, "bench_bare_pistache: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);  // as orchardd: a client reset must not kill the process

  Pistache::Address addr(host, Pistache::Port(static_cast<uint16_t>(port)));
  Pistache::Http::Endpoint endpoint(addr);
  // Same options as core/http/server.cpp.
  auto opts = Pistache::Http::Endpoint::options()
                  .threads(threads)
                  .flags(Pistache::Tcp::Options::ReuseAddr)
                  .maxRequestSize(max_body + 64 * 1024)
                  .maxResponseSize(64 * 1024 * 1024)
                  .headerTimeout(std::chrono::seconds(30))
                  .bodyTimeout(std::chrono::seconds(60));
  endpoint.init(opts);
  endpoint.setHandler(Pistache::Http::make_handler<BareHandler>());
  endpoint.serveThreaded();
  std::printf("bench_bare_pistache listening on %s:%u\n", host.c_str(),
              static_cast<unsigned>(static_cast<uint16_t>(endpoint.getPort())));
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  endpoint.shutdown();
  return 0;
}
