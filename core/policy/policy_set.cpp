#include "policy/policy_set.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "log/log.h"
#include "util/encoding.h"

namespace orchard::policy {
namespace {
constexpr const char* kLog = "policy";
constexpr size_t kMaxPolicyBytes = 1 << 20;
namespace fs = std::filesystem;

int64_t MtimeNs(const fs::path& p) {
  std::error_code ec;
  auto t = fs::last_write_time(p, ec);
  if (ec) return -1;
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

Result<std::string> ReadFile(const fs::path& p) {
  std::error_code ec;
  auto size = fs::file_size(p, ec);
  if (ec) return Status::Io("cannot read " + p.string() + ": " + ec.message());
  if (size > kMaxPolicyBytes) return Status::TooLarge(p.string() + " is larger than 1 MiB");
  std::ifstream in(p, std::ios::binary);
  if (!in) return Status::Io("cannot open " + p.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

// One policy: the consumer the runner drives, holding the running version.
class PolicySet::Entry : public automation::Consumer {
 public:
  struct Version {
    std::vector<std::unique_ptr<Policy>> lanes;  // one instance per lane
    std::string file;
    int64_t mtime_ns = 0;
    int64_t loaded_ms = 0;
    const PolicyInfo& info() const { return lanes[0]->info(); }
  };

  Entry(std::string name, int lanes, PolicyFlagValues flags)
      : name_(std::move(name)), consumer_(ConsumerName(name_)), lanes_(lanes) {
    enabled_ = flags.enabled;
    dry_run_ = flags.dry_run;
  }

  const std::string& name() const override { return consumer_; }
  const std::string& policy_name() const { return name_; }
  int lanes() const override { return lanes_; }

  bool Wants(const events::Event& ev) const override {
    auto v = version();
    if (!v) return false;
    if (ev.type == events::type::kScheduleTick || ev.type == events::type::kPolicyRun) {
      // request_type names the target: "<consumer>/<schedule>" or "<consumer>".
      return ev.request_type.compare(0, consumer_.size(), consumer_) == 0 &&
             (ev.request_type.size() == consumer_.size() || ev.request_type[consumer_.size()] == '/');
    }
    return v->lanes[0]->Wants(ev.type, ev.request_type);
  }

  bool WantsType(std::string_view type) const override {
    auto v = version();
    if (!v || !enabled_) return false;
    const auto& info = v->info();
    return info.event_types.count(std::string(type)) || info.event_types.count("*") ||
           (IsResultEvent(type) && !info.result_types.empty());
  }

  automation::RunOutcome Handle(int lane, const events::Event& ev, const std::string& trigger,
                                automation::HostReader* reader, automation::Decisions* out,
                                bool* dry_run) override {
    out->Clear();
    if (!enabled_) return {};
    auto v = version();
    if (!v) return {};
    Policy* p = v->lanes[static_cast<size_t>(lane) % v->lanes.size()].get();
    RunInput in{consumer_, trigger, NowMillis(), dry_run_.load()};
    *dry_run = in.dry_run;
    if (ev.type == events::type::kScheduleTick) {
      const std::string schedule = ev.request_type.size() > consumer_.size()
                                       ? ev.request_type.substr(consumer_.size() + 1)
                                       : std::string();
      const auto& schedules = p->info().schedules;
      for (size_t i = 0; i < schedules.size(); ++i)
        if (schedules[i].name == schedule) return p->RunSchedule(in, i, ev.enrollment_id, reader, out);
      return {};  // a schedule the current version no longer has
    }
    plist::Value payload;
    if (!ev.payload_json.empty()) {
      plist::Limits lim;
      lim.drop_nulls = true;  // ddm.status.changed: null = absent (nil in Lua)
      auto parsed = plist::ParseJson(ev.payload_json, lim);
      if (parsed.ok()) payload = std::move(parsed.value());
    }
    return p->HandleEvent(in, ev, payload, reader, out);
  }

  bool StartAtHead() const override { return true; }

  std::shared_ptr<const Version> version() const {
    std::lock_guard lock(mu_);
    return version_;
  }
  void set_version(std::shared_ptr<const Version> v) {
    std::lock_guard lock(mu_);
    version_ = std::move(v);
  }
  void set_enabled(bool e) { enabled_ = e; }
  void set_dry_run(bool d) { dry_run_ = d; }
  PolicyFlagValues flags() const { return {enabled_.load(), dry_run_.load()}; }

  std::string load_error;  // guarded by PolicySet::mu_

 private:
  std::string name_, consumer_;
  int lanes_;
  std::atomic<bool> enabled_{true}, dry_run_{false};
  mutable std::mutex mu_;
  std::shared_ptr<const Version> version_;
};

PolicySet::PolicySet(const PolicySetOptions& options, automation::Runner* runner, automation::FlagStore* flags,
                     automation::ScheduleRegistry* schedules)
    : options_(options), runner_(runner), flags_(flags), schedules_(schedules) {}

PolicySet::~PolicySet() { Stop(); }

Status PolicySet::Start() {
  if (options_.dir.empty()) return Status::Ok();
  std::error_code ec;
  if (!fs::is_directory(options_.dir, ec))
    return Status::InvalidArgument("policy.dir " + options_.dir + " is not a readable directory");
  {
    std::lock_guard lock(mu_);
    Status st = ReloadLocked("");
    if (!st.ok()) log::Warn(kLog, "event=policies_loaded_with_errors detail=\"{}\"", st.message());
  }
  if (options_.watch_interval_ms > 0) watcher_ = std::thread([this] { Watch(); });
  return Status::Ok();
}

void PolicySet::Stop() {
  {
    std::lock_guard lock(watch_mu_);
    stopping_ = true;
  }
  watch_cv_.notify_all();
  if (watcher_.joinable()) watcher_.join();
}

void PolicySet::Watch() {
  std::unique_lock lock(watch_mu_);
  while (!stopping_) {
    watch_cv_.wait_for(lock, std::chrono::milliseconds(options_.watch_interval_ms), [this] { return stopping_; });
    if (stopping_) return;
    lock.unlock();
    try {
      std::lock_guard set_lock(mu_);
      (void)ReloadLocked("");  // errors are kept per policy and logged
    } catch (const std::exception& e) {
      log::Error(kLog, "event=policy_watch_exception error=\"{}\"", e.what());
    } catch (...) {
      log::Error(kLog, "event=policy_watch_exception");
    }
    lock.lock();
  }
}

Status PolicySet::LoadFile(const std::string& path_text, int64_t mtime_ns) {
  const fs::path path(path_text);
  const std::string stem = path.stem().string();
  auto source = ReadFile(path);
  Status failure = Status::Ok();
  auto version = std::make_shared<Entry::Version>();
  version->file = path_text;
  version->mtime_ns = mtime_ns;
  version->loaded_ms = NowMillis();
  if (!source.ok()) {
    failure = source.status();
  } else if (!ValidPolicyName(stem)) {
    failure = Status::InvalidArgument("file name " + path.filename().string() +
                                      " is not a valid policy name (letters, digits, '.', '_', '-')");
  } else {
    for (int i = 0; i < std::max(1, options_.lanes) && failure.ok(); ++i) {
      auto p = Policy::Load(stem, *source, path.filename().string(), options_.limits);
      if (!p.ok()) failure = p.status();
      else version->lanes.push_back(std::move(p.value()));
    }
  }
  // The entry this file feeds today, if any.
  std::shared_ptr<Entry> existing;
  for (auto& [name, e] : entries_) {
    auto v = e->version();
    if (v && v->file == path_text) existing = e;
  }
  if (!failure.ok()) {
    if (existing) {
      existing->load_error = failure.message();
      log::Error(kLog, "event=policy_reload_failed policy={} file={} kept=previous error=\"{}\"",
                 existing->policy_name(), path_text, failure.message());
    } else {
      load_errors_[path_text] = failure.message();
      log::Error(kLog, "event=policy_load_failed file={} error=\"{}\"", path_text,
                 failure.message());
    }
    return Status::InvalidArgument(path.filename().string() + ": " + failure.message());
  }
  load_errors_.erase(path_text);
  const std::string name = version->info().name;
  auto same_name = entries_.find(name);
  if (same_name != entries_.end() && same_name->second != existing) {
    std::string other = same_name->second->version() ? same_name->second->version()->file : "?";
    std::string msg = "policy name '" + name + "' is already used by " + other;
    if (existing) existing->load_error = msg;
    else load_errors_[path_text] = msg;
    return Status::AlreadyExists(path.filename().string() + ": " + msg);
  }
  if (existing && existing->policy_name() != name) {
    // The file now declares another name: the old policy goes away.
    ORCHARD_RETURN_IF_ERROR(runner_->Unregister(existing->name(), false));
    if (schedules_) schedules_->SetSchedules(existing->name(), {});
    entries_.erase(existing->policy_name());
    existing.reset();
  }
  for (const auto& l : version->lanes[0]->load_logs())
    log::Info(kLog, "event=policy_load_log policy={} level={} message={}", name, automation::LogLevelName(l.level),
              log::Quote(l.message));
  if (existing) {
    existing->set_version(version);
    existing->load_error.clear();
    runner_->RefreshInterest();
    if (schedules_ && existing->flags().enabled) schedules_->SetSchedules(existing->name(), version->info().schedules);
    log::Info(kLog, "event=policy_reloaded policy={} version={} sha256={}", name,
              version->info().version, version->info().source_sha256.substr(0, 16));
    return Status::Ok();
  }
  PolicyFlagValues flags;
  if (flags_) {
    auto saved = flags_->GetFlags(ConsumerName(name));
    if (!saved.ok()) return saved.status();
    if (saved->has_value()) flags = **saved;
  }
  auto entry = std::make_shared<Entry>(name, std::max(1, options_.lanes), flags);
  entry->set_version(version);
  ORCHARD_RETURN_IF_ERROR(runner_->Register(entry));
  if (schedules_ && flags.enabled) schedules_->SetSchedules(entry->name(), version->info().schedules);
  entries_[name] = entry;
  log::Info(kLog, "event=policy_loaded policy={} file={} version={} enabled={} dry_run={} handlers={} schedules={}",
            name, path.filename().string(), version->info().version, flags.enabled,
            flags.dry_run, version->info().event_types.size() + version->info().result_types.size(),
            version->info().schedules.size());
  return Status::Ok();
}

Status PolicySet::ReloadLocked(const std::string& only) {
  std::error_code ec;
  std::vector<std::pair<std::string, int64_t>> files;
  for (const auto& de : fs::directory_iterator(options_.dir, ec)) {
    if (de.path().extension() != ".lua" || !de.is_regular_file()) continue;
    files.emplace_back(de.path().string(), MtimeNs(de.path()));
  }
  if (ec) return Status::Io("cannot list policy.dir " + options_.dir + ": " + ec.message());
  std::sort(files.begin(), files.end());
  std::string only_file;
  if (!only.empty()) {
    auto it = entries_.find(only);
    const std::string by_stem = (fs::path(options_.dir) / (only + ".lua")).string();
    if (it != entries_.end() && it->second->version()) only_file = it->second->version()->file;
    else if (std::any_of(files.begin(), files.end(), [&](auto& f) { return f.first == by_stem; }))
      only_file = by_stem;
    else return Status::NotFound("no policy " + only);
  }
  std::string errors;
  for (const auto& [path, mtime] : files) {
    if (!only_file.empty() && path != only_file) continue;
    // A scan loads new and changed files only; a named reload always loads.
    if (only_file.empty()) {
      auto seen = seen_.find(path);
      if (seen != seen_.end() && seen->second == mtime) continue;
    }
    seen_[path] = mtime;
    Status st = LoadFile(path, mtime);
    if (!st.ok()) errors += (errors.empty() ? "" : "; ") + st.message();
  }
  if (only_file.empty()) {
    // Files that disappeared: their policies are unloaded.
    auto exists = [&](const std::string& file) {
      return std::any_of(files.begin(), files.end(), [&](auto& f) { return f.first == file; });
    };
    for (auto it = entries_.begin(); it != entries_.end();) {
      auto v = it->second->version();
      if (!v || exists(v->file)) {
        ++it;
        continue;
      }
      (void)runner_->Unregister(it->second->name(), false);
      if (schedules_) schedules_->SetSchedules(it->second->name(), {});
      log::Info(kLog, "event=policy_unloaded policy={} reason=file_removed", it->first);
      seen_.erase(v->file);
      it = entries_.erase(it);
    }
    for (auto it = load_errors_.begin(); it != load_errors_.end();) {
      if (exists(it->first)) {
        ++it;
      } else {
        seen_.erase(it->first);
        it = load_errors_.erase(it);
      }
    }
  }
  if (!errors.empty()) return Status::InvalidArgument(errors);
  return Status::Ok();
}

Status PolicySet::Reload(const std::string& name) {
  std::lock_guard lock(mu_);
  if (name.empty()) seen_.clear();  // every file is read again
  return ReloadLocked(name);
}

Status PolicySet::SetEnabled(const std::string& name, bool enabled) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return Status::NotFound("no policy " + name);
  PolicyFlagValues f = it->second->flags();
  f.enabled = enabled;
  if (flags_) ORCHARD_RETURN_IF_ERROR(flags_->PutFlags(ConsumerName(name), f));
  it->second->set_enabled(enabled);
  runner_->RefreshInterest();
  if (schedules_) {
    auto v = it->second->version();
    schedules_->SetSchedules(it->second->name(), enabled && v ? v->info().schedules : std::vector<ScheduleInfo>{});
  }
  log::Info(kLog, "event=policy_{} policy={}", enabled ? "enabled" : "disabled", name);
  return Status::Ok();
}

Status PolicySet::SetDryRun(const std::string& name, bool dry_run) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return Status::NotFound("no policy " + name);
  PolicyFlagValues f = it->second->flags();
  f.dry_run = dry_run;
  if (flags_) ORCHARD_RETURN_IF_ERROR(flags_->PutFlags(ConsumerName(name), f));
  it->second->set_dry_run(dry_run);
  log::Info(kLog, "event=policy_dry_run policy={} dry_run={}", name, dry_run);
  return Status::Ok();
}

std::vector<PolicyStatus> PolicySet::List() {
  std::lock_guard lock(mu_);
  std::vector<PolicyStatus> out;
  for (auto& [name, e] : entries_) {
    PolicyStatus s;
    s.name = name;
    auto v = e->version();
    if (v) {
      s.file = v->file;
      s.loaded = true;
      s.info = v->info();
      s.loaded_ms = v->loaded_ms;
      for (const auto& p : v->lanes) s.memory_bytes += p->memory_used();
    }
    s.load_error = e->load_error;
    s.flags = e->flags();
    out.push_back(std::move(s));
  }
  for (const auto& [file, error] : load_errors_) {
    PolicyStatus s;
    s.name = fs::path(file).stem().string();
    s.file = file;
    s.load_error = error;
    out.push_back(std::move(s));
  }
  return out;
}

Result<PolicyStatus> PolicySet::Get(const std::string& name) {
  for (auto& s : List())
    if (s.name == name) return s;
  return Status::NotFound("no policy " + name);
}

}  // namespace orchard::policy
