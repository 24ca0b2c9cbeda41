// orchardd: the Orchard MDM server.
#include <signal.h>

#include <cstdio>
#include <string>

#include "config/config.h"
#include "log/log.h"
#include "server/app.h"

int main(int argc, char** argv) {
  auto loaded = orchard::config::Load(argc, argv);
  if (!loaded.ok()) {
    std::fprintf(stderr, "orchardd: %s\n", loaded.status().message().c_str());
    return 2;
  }
  if (loaded->show_help) {
    std::fputs(orchard::config::HelpText().c_str(), stdout);
    return 0;
  }
  if (loaded->show_version) {
    std::printf("orchardd %s\n", orchard::server::kVersion);
    return 0;
  }
  const auto& config = loaded->config;
  bool ok = true;
  orchard::log::Configure(orchard::log::ParseLevel(config.log_level, &ok));

  // Block the shutdown signals before any thread starts, then wait for one.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  auto app = orchard::server::App::Start(config);
  if (!app.ok()) {
    std::fprintf(stderr, "orchardd: %s\n", app.status().message().c_str());
    return 1;
  }
  orchard::log::Info("server", "event=started version={} listen={}:{} data_dir={}",
                     orchard::server::kVersion, config.listen_host, (*app)->port(), config.data_dir);
  // Scripts and tests read the bound port from this line on stdout.
  std::printf("orchardd listening on %s:%u\n", config.listen_host.c_str(), (*app)->port());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  orchard::log::Info("server", "event=stopping signal={}", sig);
  (*app)->Stop();
  return 0;
}
