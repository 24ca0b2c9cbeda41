#include "ctl/commands.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <set>
#include <sstream>
#include <streambuf>

#include "ctl/format.h"
#include "plist/plist.h"
#include "policy/harness.h"
#include "util/encoding.h"

#ifndef ORCHARDCTL_VERSION
#define ORCHARDCTL_VERSION "unknown"
#endif

namespace orchard::ctl {
namespace {

using plist::Value;

// Responses can be far bigger than a request (a page of events with payloads).
constexpr plist::Limits kReplyLimits{256u * 1024 * 1024, 256};

void Print(Context& ctx, const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), ctx.out);
}

template <typename... Args>
void Err(Context& ctx, const char* fmt, Args... args) {
  std::fputs("orchardctl: ", ctx.err);
  std::fprintf(ctx.err, fmt, args...);
  std::fputc('\n', ctx.err);
}

int Usage(Context& ctx, const char* command, const std::string& message) {
  const CommandSpec* cmd = FindCommand(command);
  std::fprintf(ctx.err, "orchardctl %s: %s\n", command, message.c_str());
  if (cmd) std::fprintf(ctx.err, "usage: orchardctl %s %s\n", cmd->name, cmd->synopsis);
  std::fprintf(ctx.err, "run \"orchardctl %s --help\" for details\n", command);
  return kExitUsage;
}

void PrintJson(Context& ctx, const Value& v) {
  Print(ctx, plist::ToJson(v, /*pretty=*/true) + "\n");
}

// Reads a file, or stdin for "-".
Result<std::string> ReadInput(const std::string& path) {
  if (path == "-") {
    std::string data((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    return data;
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::Io("cannot read " + path + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return Status::Io("cannot read " + path);
  return ss.str();
}

bool ParseCount(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 18) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  *out = std::stoll(s);
  return true;
}

std::string JoinIds(const std::vector<std::string>& ids) {
  std::string out;
  for (const auto& id : ids) out += (out.empty() ? "" : ",") + PathSegment(id);
  return out;
}

std::string EnrollmentPath(const std::string& id) { return "/v1/enrollments/" + PathSegment(id); }

struct Reply {
  long status = 0;
  Value json;
};

// Prints why a request failed: the server's {"error"} message and the status.
void PrintHttpError(Context& ctx, const HttpReply& r) {
  auto parsed = plist::ParseJson(r.body, kReplyLimits);
  std::string message;
  if (parsed.ok()) message = std::string(parsed->GetString("error"));
  if (message.empty()) {
    std::string body = r.body.substr(0, 200);
    while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
    message = "unexpected answer from " + ctx.client->base_url() +
              (body.empty() ? std::string() : ": " + Printable(body));
  }
  Err(ctx, "%s (HTTP %ld)", Printable(message).c_str(), r.status);
  if (r.status == 401)
    std::fprintf(ctx.err, ctx.api_key_set
                              ? "hint: check --api-key, --api-key-file or ORCHARD_API_KEY\n"
                              : "hint: no API key given; set ORCHARD_API_KEY or pass "
                                "--api-key-file\n");
  if (r.status == 404 && !parsed.ok())
    std::fprintf(ctx.err, "hint: is --url (%s) the address of orchardd?\n",
                 ctx.client->base_url().c_str());
}

// Sends a request and parses its JSON answer into *reply. Returns kExitOk, or
// prints the failure and returns kExitFailed. With per_id, a 207 or 500 whose
// body carries a per-id "status" object is an answer, not an error.
// On an HTTP error, reply->status (and reply->json, when the body is JSON) still
// tell the caller what the server said, for hints.
int Send(Context& ctx, const std::string& method, const std::string& path, const Query& query,
         const std::string& body, const std::string& content_type, Reply* reply,
         bool per_id = false, const std::vector<std::string>& headers = {}) {
  auto r = ctx.client->Call(method, path, query, body, content_type, headers);
  if (!r.ok()) {
    Err(ctx, "%s", r.status().message().c_str());
    return kExitFailed;
  }
  auto parsed = plist::ParseJson(r->body, kReplyLimits);
  const bool is_per_id = per_id && (r->status == 207 || r->status == 500) && parsed.ok() &&
                         parsed->Find("status") && parsed->Find("status")->is(plist::Type::kDict);
  if ((r->status < 200 || r->status >= 300) && !is_per_id) {
    PrintHttpError(ctx, *r);
    reply->status = r->status;
    if (parsed.ok()) reply->json = std::move(parsed.value());
    return kExitFailed;
  }
  if (!parsed.ok() || !parsed->is(plist::Type::kDict)) {
    Err(ctx,
        "the answer from %s is not a JSON object (HTTP %ld, %s); is --url the address of orchardd?",
        ctx.client->base_url().c_str(), r->status,
        r->content_type.empty() ? "no content type" : Printable(r->content_type).c_str());
    return kExitFailed;
  }
  reply->status = r->status;
  reply->json = std::move(parsed.value());
  return kExitOk;
}

int ExitForIdResults(long status) {
  if (status == 200) return kExitOk;
  return status == 207 ? kExitPartial : kExitFailed;
}

// The per-id results of enqueue and push, as a table.
int PrintIdResults(Context& ctx, const Reply& reply, bool enqueue, size_t total) {
  if (ctx.json) {
    PrintJson(ctx, reply.json);
  } else {
    if (enqueue) {
      Value head;
      head.Set("command_uuid", Value::String(std::string(reply.json.GetString("command_uuid"))));
      head.Set("request_type", Value::String(std::string(reply.json.GetString("request_type"))));
      Print(ctx, RenderKeyValues(head) + "\n");
    }
    Table t({"ID", "RESULT"});
    const bool nopush = reply.json.GetBool("no_push", false);
    if (const Value* st = reply.json.Find("status"); st && st->AsDict()) {
      for (const auto& [id, r] : *st->AsDict()) {
        std::string text;
        const std::string command_error = Field(r, "command_error");
        const std::string push_error = Field(r, "push_error");
        const std::string push_result = Field(r, "push_result");
        if (!command_error.empty()) {
          text = "not queued: " + command_error;
        } else {
          if (enqueue) text = "queued; ";
          if (!push_error.empty())
            text += (enqueue ? "push failed: " : "failed: ") + push_error;
          else if (r.Find("push_result"))
            // Accepted for APNs (its answer comes later: `orchardctl device ID`).
            text += push_result.empty() ? std::string("push accepted") : "push accepted (apns-id " + push_result + ")";
          else if (nopush)
            text += "not pushed (--nopush)";
          else
            text += "ok";
        }
        t.AddRow({id, text});
      }
    }
    Print(ctx, t.Render());
  }
  if (reply.status != 200) {
    size_t failed = 0;
    if (const Value* st = reply.json.Find("status"); st && st->AsDict())
      for (const auto& [id, r] : *st->AsDict())
        if (r.Find("command_error") || r.Find("push_error")) ++failed;
    Err(ctx, "%zu of %zu ids failed (HTTP %ld)", failed, total, reply.status);
  }
  return ExitForIdResults(reply.status);
}

// ---- enqueue ----------------------------------------------------------------

int RunEnqueue(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 1)
    return Usage(ctx, "enqueue", "give exactly one enrollment id list (comma-separated)");
  auto ids = SplitList(a.positionals[0]);
  if (ids.empty()) return Usage(ctx, "enqueue", "the enrollment id list is empty");
  const bool raw = a.Has("file");
  const bool built = a.Has("type") || a.Has("json-command") || a.Has("set") || a.Has("data-file");
  if (raw && built)
    return Usage(ctx, "enqueue",
                 "--file cannot be combined with --type, --set, --data-file or --json-command");
  if (!raw && !built) return Usage(ctx, "enqueue", "give --file CMD.plist or --type RequestType");
  if (raw && a.Has("priority"))
    return Usage(ctx, "enqueue",
                 "--priority needs --type or --json-command (raw plists have no priority)");
  const bool nopush = a.Has("nopush");

  Reply reply;
  int rc;
  if (raw) {
    auto body = ReadInput(a.Get("file"));
    if (!body.ok()) return Usage(ctx, "enqueue", body.status().message());
    Query q;
    if (nopush) q.emplace_back("nopush", "1");
    rc = Send(ctx, "PUT", "/v1/enqueue/" + JoinIds(ids), q, *body, "application/xml", &reply, true);
  } else {
    Value command;
    if (a.Has("json-command")) {
      std::string text = a.Get("json-command");
      if (!text.empty() && text[0] == '@') {
        auto file = ReadInput(text.substr(1));
        if (!file.ok()) return Usage(ctx, "enqueue", file.status().message());
        text = *file;
      }
      auto parsed = plist::ParseJson(text);
      if (!parsed.ok())
        return Usage(ctx, "enqueue", "--json-command: " + parsed.status().message());
      if (!parsed->is(plist::Type::kDict))
        return Usage(ctx, "enqueue", "--json-command must be a JSON object (the Command dict)");
      command = std::move(parsed.value());
    }
    if (a.Has("type")) command.Set("RequestType", Value::String(a.Get("type")));
    for (const auto& kv : a.All("set")) {
      auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0 || (eq == 1 && kv[0] == ':'))
        return Usage(ctx, "enqueue",
                     "--set takes Key=Value (string) or Key:=JSON (typed), got \"" + kv + "\"");
      if (kv[eq - 1] == ':') {
        auto v = plist::ParseJson(kv.substr(eq + 1));
        if (!v.ok())
          return Usage(ctx, "enqueue",
                       "--set " + kv.substr(0, eq - 1) + ":= " + v.status().message());
        command.Set(kv.substr(0, eq - 1), std::move(v.value()));
      } else {
        command.Set(kv.substr(0, eq), Value::String(kv.substr(eq + 1)));
      }
    }
    for (const auto& kv : a.All("data-file")) {
      auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == kv.size())
        return Usage(ctx, "enqueue", "--data-file takes Key=FILE, got \"" + kv + "\"");
      auto bytes = ReadInput(kv.substr(eq + 1));
      if (!bytes.ok()) return Usage(ctx, "enqueue", bytes.status().message());
      command.Set(kv.substr(0, eq), Value::DataValue(std::move(bytes.value())));
    }
    if (command.GetString("RequestType").empty())
      return Usage(ctx, "enqueue", "the command has no RequestType: give --type");
    Value body;
    Value id_list = Value::MakeArray();
    for (const auto& id : ids) id_list.AsArray()->push_back(Value::String(id));
    body.Set("enrollment_ids", std::move(id_list));
    body.Set("command", std::move(command));
    if (a.Has("priority")) {
      int64_t p = 0;
      if (!ParseCount(a.Get("priority"), &p) || p > 255)
        return Usage(ctx, "enqueue", "--priority must be an integer from 0 to 255");
      body.Set("priority", Value::Integer(p));
    }
    if (nopush) body.Set("nopush", Value::Bool(true));
    rc = Send(ctx, "POST", "/v1/commands", {}, plist::ToJson(body), "application/json", &reply,
              true);
  }
  if (rc != kExitOk) return rc;
  return PrintIdResults(ctx, reply, /*enqueue=*/true, ids.size());
}

// ---- push, push certificates -----------------------------------------------

int RunPush(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 1)
    return Usage(ctx, "push", "give exactly one enrollment id list (comma-separated)");
  auto ids = SplitList(a.positionals[0]);
  if (ids.empty()) return Usage(ctx, "push", "the enrollment id list is empty");
  Reply reply;
  int rc = Send(ctx, "POST", "/v1/push/" + JoinIds(ids), {}, "", "", &reply, true);
  if (rc != kExitOk) return rc;
  return PrintIdResults(ctx, reply, /*enqueue=*/false, ids.size());
}

// "N" whole days from now_ms until an RFC 3339 time (rounded down, as the
// server's orchard_push_certificate_days_left metric), "expired" once it has
// passed, "" if the time cannot be read.
std::string DaysLeft(const std::string& rfc3339, int64_t now_ms) {
  auto at = ParseTimeArg(rfc3339, now_ms);
  if (rfc3339.empty() || !at.ok()) return "";
  if (*at <= now_ms) return "expired";
  return std::to_string((*at - now_ms) / 86400000);
}

// The PKCS#12 password for pushcert --p12: the value of the environment
// variable named by --password-env, or the first line of --password-file (its
// line ending dropped, nothing else), or "" without either. It travels in an
// HTTP header, so control characters and leading or trailing spaces (which
// headers cannot carry) are refused. Messages never contain the password.
Result<std::string> ReadP12Password(const ParsedArgs& a) {
  std::string pw;
  if (a.Has("password-env")) {
    const std::string var = a.Get("password-env");
    if (var.empty())
      return Status::InvalidArgument("--password-env needs the name of an environment variable");
    const char* value = std::getenv(var.c_str());
    if (!value)
      return Status::InvalidArgument("environment variable " + var +
                                     " (named by --password-env) is not set");
    pw = value;
  } else if (a.Has("password-file")) {
    auto text = ReadInput(a.Get("password-file"));
    if (!text.ok()) return text.status();
    pw = text->substr(0, text->find('\n'));
    if (!pw.empty() && pw.back() == '\r') pw.pop_back();
  }
  for (char c : pw) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f)
      return Status::InvalidArgument(
          "the PKCS#12 password contains a control character, which cannot be sent in the "
          "X-Pkcs12-Password header; re-export the .p12 with another password");
  }
  if (!pw.empty() && (pw.front() == ' ' || pw.back() == ' '))
    return Status::InvalidArgument(
        "the PKCS#12 password starts or ends with a space, which does not survive an HTTP "
        "header; re-export the .p12 with another password");
  return pw;
}

int RunPushCert(Context& ctx, const ParsedArgs& a) {
  if (!a.positionals.empty())
    return Usage(ctx, "pushcert", "unexpected argument " + a.positionals[0]);
  const bool p12 = a.Has("p12");
  const bool password = a.Has("password-env") || a.Has("password-file");
  if (p12 && (a.Has("cert") || a.Has("key")))
    return Usage(ctx, "pushcert", "--p12 cannot be combined with --cert or --key");
  if (!p12 && password)
    return Usage(ctx, "pushcert", "--password-env and --password-file go with --p12");
  if (a.Has("password-env") && a.Has("password-file"))
    return Usage(ctx, "pushcert", "give --password-env or --password-file, not both");
  if (!p12 && !a.Has("cert"))
    return Usage(ctx, "pushcert",
                 "give --cert FILE [--key FILE] (PEM) or --p12 FILE (PKCS#12)");

  std::string body, content_type;
  std::vector<std::string> headers;
  if (p12) {
    if (a.Get("p12") == "-" && a.Get("password-file") == "-")
      return Usage(ctx, "pushcert", "--p12 and --password-file cannot both read stdin");
    auto pw = ReadP12Password(a);
    if (!pw.ok()) return Usage(ctx, "pushcert", pw.status().message());
    auto der = ReadInput(a.Get("p12"));
    if (!der.ok()) return Usage(ctx, "pushcert", der.status().message());
    if (der->empty()) return Usage(ctx, "pushcert", a.Get("p12") + " is empty");
    if (der->front() != 0x30 && der->find("-----BEGIN") != std::string::npos)
      return Usage(ctx, "pushcert",
                   a.Get("p12") + " is PEM text, not PKCS#12: use --cert FILE [--key FILE]");
    body = std::move(der.value());
    content_type = "application/x-pkcs12";
    if (!pw->empty()) headers.push_back("X-Pkcs12-Password: " + *pw);
  } else {
    auto cert = ReadInput(a.Get("cert"));
    if (!cert.ok()) return Usage(ctx, "pushcert", cert.status().message());
    if (cert->find("-----BEGIN") == std::string::npos)
      return Usage(ctx, "pushcert",
                   a.Get("cert") + " is not PEM (no -----BEGIN line); for a PKCS#12 (.p12) file "
                                   "use --p12 FILE");
    body = std::move(cert.value());
    if (a.Has("key")) {
      auto key = ReadInput(a.Get("key"));
      if (!key.ok()) return Usage(ctx, "pushcert", key.status().message());
      if (!body.empty() && body.back() != '\n') body += '\n';
      body += *key;
    } else if (body.find("PRIVATE KEY-----") == std::string::npos) {
      return Usage(ctx, "pushcert",
                   "--key FILE is required (the certificate file holds no private key)");
    }
    content_type = "application/x-pem-file";
  }
  Reply reply;
  std::vector<std::pair<std::string, std::string>> query;
  if (a.Has("force")) query.emplace_back("force", "true");
  int rc = Send(ctx, "PUT", "/v1/pushcert", query, body, content_type, &reply, false, headers);
  if (rc != kExitOk) {
    if (p12 && reply.status == 400 &&
        reply.json.GetString("error").find("password") != std::string_view::npos)
      std::fputs(password ? "hint: check the password (--password-env VAR or --password-file FILE)\n"
                          : "hint: the file may be password-protected: give --password-env VAR or "
                            "--password-file FILE\n",
                 ctx.err);
    return rc;
  }
  if (ctx.json) {
    PrintJson(ctx, reply.json);
    return kExitOk;
  }
  const std::string not_after = Field(reply.json, "not_after");
  std::string left = DaysLeft(not_after, NowMillis());
  if (!left.empty() && left != "expired") left += left == "1" ? " day left" : " days left";
  Print(ctx, "stored push certificate for topic " + Printable(Field(reply.json, "topic")) +
                 " (valid until " + Printable(not_after) + (left.empty() ? "" : ", " + left) +
                 ")\n");
  if (const std::string previous = Field(reply.json, "previous_topic"); !previous.empty())
    Print(ctx, "the enrollment topic changed from " + Printable(previous) +
                   ": devices enrolled with it need re-enrollment once its certificate expires\n");
  return kExitOk;
}

// ---- listings -----------------------------------------------------------------

// Reads a paged listing, following next_cursor from `cursor` until the listing ends or
// max_items (0: no limit) items were read. *out is the last page with `array_key` holding
// every item read, in order; *next is the cursor to continue from ("" at the end).
// page_max is the server's largest page size for the route.
int FetchPages(Context& ctx, const std::string& path, const Query& q, const char* array_key,
               int64_t page_max, int64_t max_items, std::string cursor, Value* out,
               std::string* next) {
  Value items = Value::MakeArray();
  std::set<std::string> seen_cursors;
  Reply reply;
  for (;;) {
    Query page;
    for (const auto& kv : q)
      if (cursor.empty() || kv.first != "after") page.push_back(kv);  // the cursor continues it
    int64_t want = page_max;
    if (max_items > 0) want = std::min<int64_t>(page_max, max_items - static_cast<int64_t>(items.AsArray()->size()));
    page.emplace_back("limit", std::to_string(want));
    if (!cursor.empty()) page.emplace_back("cursor", cursor);
    int rc = Send(ctx, "GET", path, page, "", "", &reply);
    if (rc != kExitOk) return rc;
    if (const Value* list = reply.json.Find(array_key); list && list->AsArray())
      for (const auto& e : *list->AsArray()) items.AsArray()->push_back(e);
    *next = std::string(reply.json.GetString("next_cursor"));
    if (next->empty()) break;
    if (max_items > 0 && static_cast<int64_t>(items.AsArray()->size()) >= max_items) break;
    if (!seen_cursors.insert(*next).second) {
      Err(ctx, "the server repeated a page cursor; stopping");
      return kExitFailed;
    }
    cursor = *next;
  }
  *out = std::move(reply.json);
  out->Set(array_key, std::move(items));
  out->Set("next_cursor", Value::String(*next));
  return kExitOk;
}

// Reads --limit N (0 when absent).
bool ItemLimit(Context& ctx, const ParsedArgs& a, const char* command, int64_t* out, int* rc) {
  *out = 0;
  if (!a.Has("limit")) return true;
  if (!ParseCount(a.Get("limit"), out) || *out < 1) {
    *rc = Usage(ctx, command, "--limit must be a positive integer");
    return false;
  }
  return true;
}

void MoreHint(Context& ctx, const std::string& next, const char* what) {
  if (!next.empty())
    std::fprintf(ctx.err, "more %s than --limit; next page: --cursor %s\n", what,
                 Printable(next).c_str());
}

int RunPushCerts(Context& ctx, const ParsedArgs& a) {
  if (!a.positionals.empty())
    return Usage(ctx, "pushcerts", "unexpected argument " + a.positionals[0]);
  Reply reply;
  std::string next;
  int rc = FetchPages(ctx, "/v1/pushcerts", {}, "push_certs", 1000, 0, "", &reply.json, &next);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(ctx, reply.json);
    return kExitOk;
  }
  const int64_t now = NowMillis();
  Table t({"TOPIC", "NOT AFTER", "DAYS LEFT"});
  if (const Value* list = reply.json.Find("push_certs"); list && list->AsArray())
    for (const auto& c : *list->AsArray())
      t.AddRow({Field(c, "topic"), Field(c, "not_after"), DaysLeft(Field(c, "not_after"), now)});
  if (t.rows() == 0)
    Print(ctx, "no push certificates stored\n");
  else
    Print(ctx, t.Render());
  return kExitOk;
}

// ---- device CA: SCEP challenges and issued certificates ----------------------

// "enroll profile": fetches the enrollment profile as a device would (GET
// /mdm/enroll with the enrollment token or a challenge; not the admin API).
int RunEnrollProfile(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 1) return Usage(ctx, "enroll", "unexpected argument " + a.positionals[1]);
  if (a.Has("ttl") || a.Has("udid")) return Usage(ctx, "enroll", "--ttl and --udid go with challenge");
  if (!a.Has("out")) return Usage(ctx, "enroll", "give --out FILE ('-' for stdout: the profile may be binary)");
  if (a.Has("token-env") && a.Has("token-file"))
    return Usage(ctx, "enroll", "give --token-env or --token-file, not both");
  std::string token;
  if (a.Has("token-file")) {
    auto text = ReadInput(a.Get("token-file"));
    if (!text.ok()) return Usage(ctx, "enroll", text.status().message());
    token = text->substr(0, text->find_first_of("\r\n"));
  } else {
    const std::string var = a.Has("token-env") ? a.Get("token-env") : "ORCHARD_ENROLL_TOKEN";
    if (const char* env = std::getenv(var.c_str()); env && *env) token = env;
    else if (a.Has("token-env")) return Usage(ctx, "enroll", "environment variable " + var + " is empty");
  }
  std::vector<std::string> headers;
  if (!token.empty()) headers.push_back("Authorization: Bearer " + token);
  Query query;
  if (a.Has("challenge")) query.emplace_back("challenge", a.Get("challenge"));
  auto reply = ctx.client->Call("GET", "/mdm/enroll", query, "", "", headers);
  if (!reply.ok()) {
    std::fprintf(ctx.err, "orchardctl: %s\n", reply.status().message().c_str());
    return kExitFailed;
  }
  if (reply->status != 200) {
    std::string reason = reply->body.substr(0, 500);
    while (!reason.empty() && (reason.back() == '\n' || reason.back() == '\r')) reason.pop_back();
    std::fprintf(ctx.err, "orchardctl: HTTP %ld: %s\n", reply->status, Printable(reason).c_str());
    return kExitFailed;
  }
  const bool is_signed = !reply->body.empty() && static_cast<unsigned char>(reply->body[0]) == 0x30;
  if (a.Get("out") == "-") {
    std::fwrite(reply->body.data(), 1, reply->body.size(), ctx.out);
    return kExitOk;
  }
  FILE* f = std::fopen(a.Get("out").c_str(), "wb");
  if (!f || std::fwrite(reply->body.data(), 1, reply->body.size(), f) != reply->body.size()) {
    if (f) std::fclose(f);
    std::fprintf(ctx.err, "orchardctl: cannot write %s\n", a.Get("out").c_str());
    return kExitFailed;
  }
  if (std::fclose(f) != 0) {
    std::fprintf(ctx.err, "orchardctl: cannot write %s\n", a.Get("out").c_str());
    return kExitFailed;
  }
  Print(ctx, "wrote " + std::to_string(reply->body.size()) + " bytes to " + a.Get("out") + " (" +
                 (is_signed ? "CMS-signed" : "unsigned") + " enrollment profile)\n");
  return kExitOk;
}

int RunEnroll(Context& ctx, const ParsedArgs& a) {
  if (!a.positionals.empty() && a.positionals[0] == "profile") return RunEnrollProfile(ctx, a);
  if (a.positionals.size() != 1 || a.positionals[0] != "challenge")
    return Usage(ctx, "enroll", "give the action: challenge or profile");
  if (a.Has("out") || a.Has("token-env") || a.Has("token-file") || a.Has("challenge"))
    return Usage(ctx, "enroll", "--out, --token-env, --token-file and --challenge go with profile");
  Value body;
  if (a.Has("ttl")) {
    int64_t ttl = 0;
    if (!ParseCount(a.Get("ttl"), &ttl) || ttl < 1) return Usage(ctx, "enroll", "--ttl must be a positive number of seconds");
    body.Set("ttl_seconds", Value::Integer(ttl));
  }
  if (a.Has("udid")) body.Set("udid", Value::String(a.Get("udid")));
  Reply reply;
  int rc = Send(ctx, "POST", "/v1/enroll/challenges", {}, plist::ToJson(body), "application/json", &reply);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(ctx, reply.json);
    return kExitOk;
  }
  // The challenge alone on the first line, for scripts; then what it is bound to.
  Print(ctx, std::string(reply.json.GetString("challenge")) + "\n");
  std::fprintf(ctx.err, "expires %s%s\n", Printable(Field(reply.json, "expires_at")).c_str(),
               reply.json.GetString("udid").empty()
                   ? ", for any device"
                   : (", for device " + Printable(Field(reply.json, "udid"))).c_str());
  return kExitOk;
}

int RunCerts(Context& ctx, const ParsedArgs& a) {
  const std::string action = a.positionals.empty() ? "list" : a.positionals[0];
  if (action == "list") {
    if (a.positionals.size() > 1) return Usage(ctx, "certs", "list takes no argument (use --udid)");
    int rc = kExitOk;
    int64_t max_items = 0;
    if (!ItemLimit(ctx, a, "certs", &max_items, &rc)) return rc;
    Query q;
    if (a.Has("udid")) q.emplace_back("udid", a.Get("udid"));
    Value out;
    std::string next;
    rc = FetchPages(ctx, "/v1/certificates", q, "certificates", 1000, max_items, a.Get("cursor"), &out, &next);
    if (rc != kExitOk) return rc;
    if (ctx.json) {
      PrintJson(ctx, out);
      return kExitOk;
    }
    const int64_t now = NowMillis();
    Table t({"SERIAL", "SUBJECT", "UDID", "NOT AFTER", "DAYS LEFT", "REVOKED"});
    if (const Value* list = out.Find("certificates"); list && list->AsArray())
      for (const auto& c : *list->AsArray())
        t.AddRow({Field(c, "serial"), Field(c, "subject"), Field(c, "udid"), Field(c, "not_after"),
                  DaysLeft(Field(c, "not_after"), now), c.GetBool("revoked", false) ? Field(c, "revoked_at") : ""});
    Print(ctx, t.rows() == 0 ? std::string("no certificates issued\n") : t.Render());
    MoreHint(ctx, next, "certificates");
    return kExitOk;
  }
  if (action != "show" && action != "revoke")
    return Usage(ctx, "certs", "unknown action \"" + action + "\" (list, show, revoke)");
  if (a.positionals.size() != 2) return Usage(ctx, "certs", action + " needs the certificate's SERIAL");
  if (action == "show" && a.Has("reason")) return Usage(ctx, "certs", "--reason only applies to revoke");
  const std::string path = "/v1/certificates/" + PathSegment(a.positionals[1]);
  Reply reply;
  int rc;
  if (action == "show") {
    rc = Send(ctx, "GET", path, {}, "", "", &reply);
  } else {
    Value body;
    if (a.Has("reason")) body.Set("reason", Value::String(a.Get("reason")));
    rc = Send(ctx, "POST", path + "/revoke", {}, plist::ToJson(body), "application/json", &reply);
  }
  if (rc != kExitOk) return rc;
  if (ctx.json) PrintJson(ctx, reply.json);
  else Print(ctx, RenderKeyValues(reply.json));
  return kExitOk;
}

// ---- enrollments ------------------------------------------------------------

int RunDevices(Context& ctx, const ParsedArgs& a) {
  if (!a.positionals.empty())
    return Usage(ctx, "devices",
                 "unexpected argument " + a.positionals[0] + " (use \"device ID\" for one)");
  Query q;
  for (auto [flag, param] : {std::pair{"serial", "serial"},
                             {"model", "model"},
                             {"os", "os"},
                             {"state", "state"},
                             {"type", "type"}}) {
    if (a.Has(flag)) q.emplace_back(param, a.Get(flag));
  }
  if (a.Has("blocked")) {
    std::string b = a.Get("blocked");
    if (b != "true" && b != "false") return Usage(ctx, "devices", "--blocked takes true or false");
    q.emplace_back("blocked", b);
  }
  const int64_t now = NowMillis();
  for (auto [flag, param] :
       {std::pair{"seen-after", "seen_after"}, {"seen-before", "seen_before"}}) {
    if (!a.Has(flag)) continue;
    auto ms = ParseTimeArg(a.Get(flag), now);
    if (!ms.ok())
      return Usage(ctx, "devices", std::string("--") + flag + ": " + ms.status().message());
    q.emplace_back(param, std::to_string(*ms));
  }
  int64_t max_items = 0;
  int bad = 0;
  if (!ItemLimit(ctx, a, "devices", &max_items, &bad)) return bad;
  if (a.Has("all") && a.Has("cursor")) return Usage(ctx, "devices", "--all and --cursor cannot be combined");
  int64_t page_max = 1000;
  if (a.Has("all") && max_items > 0) {
    page_max = std::min<int64_t>(max_items, 1000);  // --limit is then the page size
    max_items = 0;
  }
  Value listing;
  std::string next;
  int rc = FetchPages(ctx, "/v1/enrollments", q, "enrollments", page_max, max_items, a.Get("cursor"),
                      &listing, &next);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(ctx, listing);
    return kExitOk;
  }
  const Value& enrollments = *listing.Find("enrollments");
  Table t({"ID", "SERIAL", "MODEL/PRODUCT", "OS", "STATE", "LAST SEEN", "BLOCKED"});
  for (const auto& e : *enrollments.AsArray()) {
    std::string model = Field(e, "model");
    if (model.empty()) model = Field(e, "product_name");
    t.AddRow({Field(e, "id"), Field(e, "serial_number"), model, Field(e, "os_version"),
              Field(e, "state"), Field(e, "last_seen_at"),
              Field(e, "blocked") == "true" ? "yes" : "no"});
  }
  if (t.rows() == 0)
    Print(ctx, "no enrollments match\n");
  else
    Print(ctx, t.Render());
  MoreHint(ctx, next, "enrollments");
  return kExitOk;
}

int RunDevice(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 1) return Usage(ctx, "device", "give exactly one enrollment id");
  Reply reply;
  int rc = Send(ctx, "GET", EnrollmentPath(a.positionals[0]), {}, "", "", &reply);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(ctx, reply.json);
    return kExitOk;
  }
  // The push state and the DDM state (nested objects) get their own indented sections.
  Value enrollment = reply.json;
  std::optional<Value> push;
  if (const Value* p = enrollment.Find("push"); p && p->AsDict()) {
    push = *p;
    enrollment.Erase("push");
  }
  std::optional<Value> ddm;
  if (const Value* d = enrollment.Find("ddm"); d && d->AsDict()) {
    ddm = *d;
    enrollment.Erase("ddm");
  }
  std::string text = RenderKeyValues(enrollment) + "\n";
  if (!push) {
    text += "push: none recorded\n";
  } else {
    text += "push:\n";
    std::istringstream lines(RenderKeyValues(*push));
    for (std::string line; std::getline(lines, line);) text += "  " + line + "\n";
    if (push->GetBool("token_invalid", false))
      text += "note: APNs declared the push token invalid (" +
              Printable(Field(*push, "token_invalid_reason")) +
              "); no pushes until the device sends a new TokenUpdate\n";
  }
  if (ddm) {
    text += "ddm:\n";
    std::istringstream lines(RenderKeyValues(*ddm));
    for (std::string line; std::getline(lines, line);) text += "  " + line + "\n";
  }
  Print(ctx, text);
  return kExitOk;
}

int RunQueue(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 1) return Usage(ctx, "queue", "give exactly one enrollment id");
  const std::string& id = a.positionals[0];
  if (a.Has("clear") && a.Has("delete"))
    return Usage(ctx, "queue", "--clear and --delete cannot be combined");
  if (a.Has("limit") && (a.Has("clear") || a.Has("delete")))
    return Usage(ctx, "queue", "--limit only applies to listing");
  Reply reply;
  if (a.Has("clear") || a.Has("delete")) {
    const std::string uuid = a.Get("delete");
    if (a.Has("delete") && uuid.empty())
      return Usage(ctx, "queue", "--delete needs a command UUID");
    std::string path = EnrollmentPath(id) + "/queue";
    if (!uuid.empty()) path += "/" + PathSegment(uuid);
    int rc = Send(ctx, "DELETE", path, {}, "", "", &reply);
    if (rc != kExitOk) return rc;
    if (ctx.json) {
      PrintJson(ctx, reply.json);
    } else if (uuid.empty()) {
      Print(ctx, "removed " + Field(reply.json, "removed") + " queued command(s) of " +
                     Printable(id) + "\n");
    } else {
      Print(ctx,
            "removed command " + Printable(uuid) + " from the queue of " + Printable(id) + "\n");
    }
    return kExitOk;
  }
  int64_t max_items = 0;
  int bad = 0;
  if (!ItemLimit(ctx, a, "queue", &max_items, &bad)) return bad;
  std::string next;
  int rc = FetchPages(ctx, EnrollmentPath(id) + "/queue", {}, "commands", 100000, max_items, "",
                      &reply.json, &next);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(ctx, reply.json);
    return kExitOk;
  }
  Table t({"COMMAND UUID", "REQUEST TYPE", "STATUS", "PRIORITY", "ENQUEUED", "LAST SENT", "NOT NOW",
           "ORIGIN"});
  if (const Value* list = reply.json.Find("commands"); list && list->AsArray())
    for (const auto& c : *list->AsArray())
      t.AddRow({Field(c, "command_uuid"), Field(c, "request_type"), Field(c, "status"),
                Field(c, "priority"), Field(c, "enqueued_at"), Field(c, "last_sent_at"),
                Field(c, "not_now_count"), Field(c, "origin")});
  if (t.rows() == 0)
    Print(ctx, "no commands queued for " + Printable(id) + "\n");
  else
    Print(ctx, t.Render());
  if (!next.empty()) std::fprintf(ctx.err, "more commands queued than --limit\n");
  return kExitOk;
}

int RunResults(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.empty() || a.positionals.size() > 2)
    return Usage(ctx, "results", "give an enrollment id, and optionally a command UUID");
  const std::string& id = a.positionals[0];
  if (a.positionals.size() == 2) {
    if (a.Has("limit")) return Usage(ctx, "results", "--limit only applies to listing");
    const std::string path = EnrollmentPath(id) + "/results/" + PathSegment(a.positionals[1]);
    if (a.Has("plist")) {
      auto r = ctx.client->Call("GET", path, {{"format", "plist"}});
      if (!r.ok()) {
        Err(ctx, "%s", r.status().message().c_str());
        return kExitFailed;
      }
      if (r->status != 200) {
        PrintHttpError(ctx, *r);
        return kExitFailed;
      }
      Print(ctx, r->body);  // the device's report, byte for byte
      return kExitOk;
    }
    Reply reply;
    int rc = Send(ctx, "GET", path, {}, "", "", &reply);
    if (rc != kExitOk) return rc;
    PrintJson(ctx, reply.json);
    return kExitOk;
  }
  if (a.Has("plist")) return Usage(ctx, "results", "--plist needs a command UUID");
  int64_t max_items = 0;
  int bad = 0;
  if (!ItemLimit(ctx, a, "results", &max_items, &bad)) return bad;
  Reply reply;
  std::string next;
  int rc = FetchPages(ctx, EnrollmentPath(id) + "/results", {}, "results", 10000, max_items, "",
                      &reply.json, &next);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(ctx, reply.json);
    return kExitOk;
  }
  Table t({"COMMAND UUID", "REQUEST TYPE", "STATUS", "RECEIVED", "NOT NOW", "ORIGIN"});
  if (const Value* list = reply.json.Find("results"); list && list->AsArray())
    for (const auto& r : *list->AsArray())
      t.AddRow({Field(r, "command_uuid"), Field(r, "request_type"), Field(r, "status"),
                Field(r, "received_at"), Field(r, "not_now_count"), Field(r, "origin")});
  if (t.rows() == 0)
    Print(ctx, "no results for " + Printable(id) + "\n");
  else
    Print(ctx, t.Render());
  if (!next.empty()) std::fprintf(ctx.err, "more results than --limit\n");
  return kExitOk;
}

int SetBlocked(Context& ctx, const ParsedArgs& a, bool blocked) {
  const char* name = blocked ? "block" : "unblock";
  if (a.positionals.size() != 1) return Usage(ctx, name, "give exactly one enrollment id");
  const std::string& id = a.positionals[0];
  Reply reply;
  int rc = Send(ctx, blocked ? "PUT" : "DELETE", EnrollmentPath(id) + "/block", {}, "", "", &reply);
  if (rc != kExitOk) return rc;
  if (ctx.json)
    PrintJson(ctx, reply.json);
  else if (blocked)
    Print(ctx, "blocked " + Printable(id) + ": its next check-in or report is refused with 401\n");
  else
    Print(ctx, "unblocked " + Printable(id) + "\n");
  return kExitOk;
}

int RunBlock(Context& ctx, const ParsedArgs& a) { return SetBlocked(ctx, a, true); }
int RunUnblock(Context& ctx, const ParsedArgs& a) { return SetBlocked(ctx, a, false); }

// ---- events, version ----------------------------------------------------------

int RunEvents(Context& ctx, const ParsedArgs& a) {
  if (!a.positionals.empty())
    return Usage(ctx, "events", "unexpected argument " + a.positionals[0]);
  Query q;
  int64_t n;
  if (a.Has("after")) {
    if (!ParseCount(a.Get("after"), &n))
      return Usage(ctx, "events", "--after must be an event sequence number");
    q.emplace_back("after", a.Get("after"));
  }
  int64_t max_items = 100;
  if (a.Has("limit") && (!ParseCount(a.Get("limit"), &max_items) || max_items < 1))
    return Usage(ctx, "events", "--limit must be a positive integer");
  Reply reply;
  std::string next;
  int rc = FetchPages(ctx, "/v1/events", q, "events", 10000, max_items, "", &reply.json, &next);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(ctx, reply.json);
    return kExitOk;
  }
  Table t({"SEQ", "TIME", "TYPE", "ENROLLMENT", "COMMAND"});
  if (const Value* list = reply.json.Find("events"); list && list->AsArray())
    for (const auto& e : *list->AsArray()) {
      std::string command = Field(e, "command_uuid");
      if (std::string rt = Field(e, "request_type"); !rt.empty())
        command += command.empty() ? rt : " (" + rt + ")";
      t.AddRow({Field(e, "seq"), Field(e, "time"), Field(e, "type"), Field(e, "enrollment_id"),
                command});
    }
  if (t.rows() == 0)
    Print(ctx, "no events\n");
  else
    Print(ctx, t.Render());
  std::fprintf(ctx.err, "last_seq %s (continue with --after %s)\n",
               Field(reply.json, "last_seq").c_str(), Field(reply.json, "last_seq").c_str());
  return kExitOk;
}

int RunVersion(Context& ctx, const ParsedArgs& a) {
  if (!a.positionals.empty())
    return Usage(ctx, "version", "unexpected argument " + a.positionals[0]);
  if (!ctx.json) Print(ctx, std::string("orchardctl ") + ORCHARDCTL_VERSION + "\n");
  Reply reply;
  int rc = Send(ctx, "GET", "/version", {}, "", "", &reply);
  if (rc != kExitOk) return rc;
  if (ctx.json)
    PrintJson(ctx, reply.json);
  else
    Print(ctx, "orchardd " + Printable(Field(reply.json, "version")) + " at " +
                   ctx.client->base_url() + "\n");
  return kExitOk;
}

// ---- policies, compliance -------------------------------------------------------

// --limit N, --all and --cursor C of a listing read page by page, as for devices:
// without --all at most N items from the cursor (default: every page); with --all
// every page, N being the page size.
struct Paging {
  int64_t page_max = 0;
  int64_t max_items = 0;  // 0: no limit
  std::string cursor;
};

Status ReadPaging(const ParsedArgs& a, int64_t server_max, Paging* out) {
  out->page_max = server_max;
  out->max_items = 0;
  out->cursor = a.Get("cursor");
  if (a.Has("limit") && (!ParseCount(a.Get("limit"), &out->max_items) || out->max_items < 1))
    return Status::InvalidArgument("--limit must be a positive integer");
  if (a.Has("all") && a.Has("cursor"))
    return Status::InvalidArgument("--all and --cursor cannot be combined");
  if (a.Has("all") && out->max_items > 0) {
    out->page_max = std::min(out->max_items, server_max);
    out->max_items = 0;
  }
  return Status::Ok();
}

std::string PolicyPath(const std::string& name) { return "/v1/policies/" + PathSegment(name); }

std::string YesNo(const Value& v, std::string_view key) {
  const Value* b = v.Find(key);
  if (!b || !b->AsBool()) return "";
  return *b->AsBool() ? "yes" : "no";
}

// Errors carry a Lua traceback after their first line; tables show the first line.
std::string FirstLine(std::string_view text) {
  return std::string(text.substr(0, text.find('\n')));
}

std::string Indent(const std::string& text) {
  std::string out;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) out += "  " + line + "\n";
  return out;
}

// A runner lag: "0s", "2.5s", "42s", "3m07s", "2h05m".
std::string LagText(int64_t ms) {
  char buf[48];
  const long long s = ms / 1000;
  if (ms <= 0)
    return "0s";
  else if (ms < 10000)
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000);
  else if (s < 60)
    std::snprintf(buf, sizeof buf, "%llds", s);
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, s / 60 % 60);
  return buf;
}

// "loaded"; "reload failed" (the previous version runs); "not loaded" (none runs).
std::string PolicyState(const Value& p) {
  if (!p.GetBool("loaded", false)) return "not loaded";
  return p.Find("load_error") ? "reload failed" : "loaded";
}

// The policies of a GET /v1/policies or reload answer as a table, then their load errors.
std::string PolicyTable(const Value* list) {
  Table t({"NAME", "VERSION", "ENABLED", "DRY RUN", "STATE", "HANDLED", "FAILED", "PARKED", "LAG"});
  std::string notes;
  if (list && list->AsArray())
    for (const auto& p : *list->AsArray()) {
      const Value* c = p.Find("consumer");
      std::vector<std::string> row = {Field(p, "name"), Field(p, "version"), YesNo(p, "enabled"),
                                      YesNo(p, "dry_run"), PolicyState(p)};
      if (c && c->AsDict()) {
        const Value* lag = c->Find("lag_ms");
        row.insert(row.end(), {Field(*c, "handled"), Field(*c, "failed"), Field(*c, "parked"),
                               lag && lag->AsInteger() ? LagText(*lag->AsInteger()) : ""});
      }
      t.AddRow(std::move(row));
      const std::string error = Field(p, "load_error");
      if (!error.empty())
        notes += Printable(Field(p, "name")) +
                 (p.GetBool("loaded", false) ? " (the previous version keeps running): " : ": ") +
                 Printable(FirstLine(error)) + "\n";
    }
  if (t.rows() == 0) return "no policies (is policy.dir set?)\n";
  return t.Render() + (notes.empty() ? "" : "\n" + notes);
}

// GET /v1/plugins as a table: every plugin the server tried to load, then
// why the refused ones are not running.
int RunPlugins(Context& ctx, const ParsedArgs& a) {
  if (!a.positionals.empty()) return Usage(ctx, "plugins", "unexpected argument " + a.positionals[0]);
  Reply reply;
  int rc = Send(ctx, "GET", "/v1/plugins", {}, "", "", &reply);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(ctx, reply.json);
    return kExitOk;
  }
  Table t({"NAME", "VERSION", "STATUS", "HANDLED", "ERRORS", "PARKED", "LAG"});
  std::string notes;
  const Value* list = reply.json.Find("plugins");
  if (list && list->AsArray())
    for (const auto& p : *list->AsArray()) {
      const Value* lag = p.Find("lag_ms");
      t.AddRow({Field(p, "name"), Field(p, "version"), Field(p, "status"), Field(p, "handled"), Field(p, "errors"),
                Field(p, "parked"), lag && lag->AsInteger() ? LagText(*lag->AsInteger()) : ""});
      if (p.Find("message"))
        notes += Printable(Field(p, "name")) + " (" + Printable(Field(p, "file")) + "): " + Field(p, "error") + ": " +
                 Printable(FirstLine(Field(p, "message"))) + "\n";
      else if (p.Find("last_error"))
        notes += Printable(Field(p, "name")) + ": last error: " + Printable(FirstLine(Field(p, "last_error"))) + "\n";
    }
  if (t.rows() == 0) {
    Print(ctx, "no plugins (is plugin.dir set?)\n");
    return kExitOk;
  }
  if (reply.json.GetBool("truncated", false)) notes += "(the server listed only the first plugins)\n";
  Print(ctx, t.Render() + (notes.empty() ? "" : "\n" + notes));
  return kExitOk;
}

// After an empty listing of a policy's records: says so when there is no such policy
// (the server keeps records of policies that are gone, so it answers 200 either way).
void NoteUnknownPolicy(Context& ctx, const std::string& name) {
  auto r = ctx.client->Call("GET", PolicyPath(name));
  if (r.ok() && r->status == 404)
    std::fprintf(ctx.err, "note: there is no policy %s (see \"orchardctl policy list\")\n",
                 Printable(name).c_str());
}

// An action of a command that has several ("orchardctl policy ACTION ...",
// "orchardctl ddm ACTION ...").
struct Action {
  const char* name;
  const char* synopsis;                              // the arguments after "COMMAND ACTION"
  std::vector<std::string> flags;                    // which of the command's flags it takes
  int (*run)(Context& ctx, const ParsedArgs& args);  // args: positionals after the action
};

int ActionUsage(Context& ctx, const char* command, const std::vector<Action>& actions,
                const std::string& action, const std::string& message) {
  std::fprintf(ctx.err, "orchardctl %s %s: %s\n", command, action.c_str(), message.c_str());
  for (const auto& act : actions)
    if (action == act.name)
      std::fprintf(ctx.err, "usage: orchardctl %s %s%s%s\n", command, act.name,
                   *act.synopsis ? " " : "", act.synopsis);
  std::fprintf(ctx.err, "run \"orchardctl help %s\" for details\n", command);
  return kExitUsage;
}

// Finds the action named by the first positional, refuses the command's flags
// that do not belong to it, and runs it with the positionals after its name.
int RunAction(Context& ctx, const char* command, const std::vector<Action>& actions,
              const ParsedArgs& a) {
  std::string names;
  for (const auto& act : actions) names += (names.empty() ? "" : ", ") + std::string(act.name);
  if (a.positionals.empty()) return Usage(ctx, command, "give an action: " + names);
  const std::string& action = a.positionals[0];
  const Action* act = nullptr;
  for (const auto& x : actions)
    if (action == x.name) act = &x;
  if (!act) return Usage(ctx, command, "unknown action \"" + action + "\" (" + names + ")");
  for (const auto& given : a.flags) {
    const std::string& flag = given.first;
    const bool global = std::any_of(GlobalFlags().begin(), GlobalFlags().end(),
                                    [&](const FlagSpec& s) { return s.name == flag; });
    if (!global && std::find(act->flags.begin(), act->flags.end(), flag) == act->flags.end())
      return ActionUsage(ctx, command, actions, action,
                         "--" + flag + " does not apply to " + command + " " + action);
  }
  ParsedArgs rest = a;
  rest.positionals.erase(rest.positionals.begin());
  return act->run(ctx, rest);
}

// The "policy" command's actions.
const std::vector<Action>& PolicyActions();

int PolicyUsage(Context& ctx, const std::string& action, const std::string& message) {
  return ActionUsage(ctx, "policy", PolicyActions(), action, message);
}

int RunPolicyList(Context& ctx, const ParsedArgs& a) {
  if (!a.positionals.empty())
    return PolicyUsage(ctx, "list", "unexpected argument " + a.positionals[0]);
  Reply reply;
  int rc = Send(ctx, "GET", "/v1/policies", {}, "", "", &reply);
  if (rc != kExitOk) return rc;
  if (ctx.json)
    PrintJson(ctx, reply.json);
  else
    Print(ctx, PolicyTable(reply.json.Find("policies")));
  return kExitOk;
}

int RunPolicyShow(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 1) return PolicyUsage(ctx, "show", "give exactly one policy name");
  Reply reply;
  int rc = Send(ctx, "GET", PolicyPath(a.positionals[0]), {}, "", "", &reply);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(ctx, reply.json);
    return kExitOk;
  }
  // Schedules and the runner's state get sections of their own; lists read as "a, b".
  Value p = reply.json;
  std::optional<Value> consumer, schedules;
  if (const Value* c = p.Find("consumer"); c && c->AsDict()) consumer = *c;
  if (const Value* s = p.Find("schedules"); s && s->AsArray()) schedules = *s;
  p.Erase("consumer");
  p.Erase("schedules");
  for (const char* key : {"events", "results"})
    if (const Value* list = p.Find(key); list && list->AsArray()) {
      std::string joined;
      for (const auto& e : *list->AsArray()) joined += (joined.empty() ? "" : ", ") + ScalarText(e);
      p.Set(key, Value::String(joined));
    }
  if (p.Find("load_error"))
    p.Set("load_error", Value::String(FirstLine(p.GetString("load_error"))));
  std::string text = RenderKeyValues(p);
  if (schedules && !schedules->AsArray()->empty()) {
    Table t({"SCHEDULE", "EVERY", "SPLAY", "PER DEVICE"});
    for (const auto& s : *schedules->AsArray())
      t.AddRow({Field(s, "name"), Field(s, "interval_seconds") + "s",
                Field(s, "splay_seconds") + "s", YesNo(s, "per_device")});
    text += "\nschedules:\n" + Indent(t.Render());
  }
  if (consumer) {
    if (consumer->Find("last_error"))
      consumer->Set("last_error", Value::String(FirstLine(consumer->GetString("last_error"))));
    text += "\nconsumer:\n" + Indent(RenderKeyValues(*consumer));
  } else if (p.GetBool("loaded", false)) {
    text += "\nconsumer: not running\n";
  }
  Print(ctx, text);
  return kExitOk;
}

int RunPolicyReload(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() > 1)
    return PolicyUsage(ctx, "reload", "give at most one policy name (none: every policy)");
  const std::string name = a.positionals.empty() ? "" : a.positionals[0];
  Reply reply;
  int rc = Send(ctx, "POST", name.empty() ? "/v1/policies/reload" : PolicyPath(name) + "/reload",
                {}, "", "", &reply);
  if (rc != kExitOk) {
    // 422: a file failed to load; the answer still lists the policies.
    if (reply.status == 422 && reply.json.Find("policies")) {
      if (ctx.json) PrintJson(ctx, reply.json);
      for (const auto& p : *reply.json.Find("policies")->AsArray())
        if (p.GetBool("loaded", false) && p.Find("load_error"))
          std::fprintf(ctx.err, "note: policy %s keeps running its previous version%s\n",
                       Printable(Field(p, "name")).c_str(),
                       Field(p, "version").empty()
                           ? ""
                           : (" (" + Printable(Field(p, "version")) + ")").c_str());
    }
    return rc;
  }
  if (ctx.json)
    PrintJson(ctx, reply.json);
  else
    Print(ctx, PolicyTable(reply.json.Find("policies")));
  return kExitOk;
}

// PUT /v1/policies/{name}/flags with one flag; prints the policy's flags afterwards.
int SetPolicyFlag(Context& ctx, const std::string& name, const std::string& flag, bool value) {
  Value body;
  body.Set(flag, Value::Bool(value));
  Reply reply;
  int rc = Send(ctx, "PUT", PolicyPath(name) + "/flags", {}, plist::ToJson(body),
                "application/json", &reply);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(ctx, reply.json);
    return kExitOk;
  }
  const bool enabled = reply.json.GetBool("enabled", true);
  const bool dry_run = reply.json.GetBool("dry_run", false);
  std::string text = "policy " + Printable(name) + ": " + (enabled ? "enabled" : "disabled") +
                     ", dry run " + (dry_run ? "on" : "off");
  if (flag == "enabled" && !enabled)
    text += " (its events are skipped, and not replayed when it is enabled again)";
  if (flag == "dry_run" && dry_run) text += " (decisions are recorded, nothing is applied)";
  Print(ctx, text + "\n");
  return kExitOk;
}

int RunPolicyEnable(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 1) return PolicyUsage(ctx, "enable", "give exactly one policy name");
  return SetPolicyFlag(ctx, a.positionals[0], "enabled", true);
}

int RunPolicyDisable(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 1) return PolicyUsage(ctx, "disable", "give exactly one policy name");
  return SetPolicyFlag(ctx, a.positionals[0], "enabled", false);
}

int RunPolicyDryRun(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 2 || (a.positionals[1] != "on" && a.positionals[1] != "off"))
    return PolicyUsage(ctx, "dry-run", "give a policy name and on or off");
  return SetPolicyFlag(ctx, a.positionals[0], "dry_run", a.positionals[1] == "on");
}

int RunPolicyRun(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 1) return PolicyUsage(ctx, "run", "give exactly one policy name");
  const std::string& name = a.positionals[0];
  Value body;
  const std::string device = a.Get("device");
  if (a.Has("device") && device.empty())
    return PolicyUsage(ctx, "run", "--device needs an enrollment id");
  if (!device.empty()) body.Set("enrollment_id", Value::String(device));
  Value args;
  for (const auto& kv : a.All("arg")) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0 || (eq == 1 && kv[0] == ':'))
      return PolicyUsage(
          ctx, "run", "--arg takes key=value (a string) or key:=JSON (typed), got \"" + kv + "\"");
    if (kv[eq - 1] == ':') {
      auto v = plist::ParseJson(kv.substr(eq + 1));
      if (!v.ok())
        return PolicyUsage(ctx, "run",
                           "--arg " + kv.substr(0, eq - 1) + ":= " + v.status().message());
      args.Set(kv.substr(0, eq - 1), std::move(v.value()));
    } else {
      args.Set(kv.substr(0, eq), Value::String(kv.substr(eq + 1)));
    }
  }
  body.Set("args", std::move(args));
  Reply reply;
  int rc = Send(ctx, "POST", PolicyPath(name) + "/run", {}, plist::ToJson(body), "application/json",
                &reply);
  if (rc != kExitOk) return rc;
  if (ctx.json)
    PrintJson(ctx, reply.json);
  else
    Print(ctx, "sent policy.run to policy " + Printable(name) +
                   (device.empty() ? "" : " about " + Printable(device)) + " (cursor " +
                   Printable(Field(reply.json, "cursor")) +
                   "); its decisions: orchardctl policy decisions " + Printable(name) + "\n");
  if (const std::string w = Field(reply.json, "warning"); !w.empty())
    Err(ctx, "warning: %s", Printable(w).c_str());
  return kExitOk;
}

// A decision record in a few words: "InstallProfile queued; compliance non_compliant".
std::string DecisionSummary(const Value& rec) {
  std::vector<std::string> parts;
  if (const Value* cmds = rec.Find("commands"); cmds && cmds->AsArray()) {
    size_t shown = 0;
    for (const auto& c : *cmds->AsArray())
      if (shown++ < 3) parts.push_back(Field(c, "request_type") + " " + Field(c, "outcome"));
    if (shown > 3) parts.push_back("+" + std::to_string(shown - 3) + " commands");
  }
  const auto count = [&](const char* key, const char* one, const char* many) {
    const Value* list = rec.Find(key);
    const size_t n = list && list->AsArray() ? list->AsArray()->size() : 0;
    if (n > 0) parts.push_back(n == 1 ? std::string(one) : std::to_string(n) + " " + many);
  };
  count("pushes", "push", "pushes");
  if (const Value* cl = rec.Find("compliance"); cl && cl->AsArray() && cl->AsArray()->size() == 1)
    parts.push_back("compliance " + Field(cl->AsArray()->at(0), "status"));
  else
    count("compliance", "compliance", "compliance states");
  count("store", "store write", "store writes");
  count("logs", "log line", "log lines");
  std::string out = rec.GetBool("dry_run", false) ? "dry run: " : "";
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? "; " : "") + parts[i];
  return out;
}

// The device column of a record: the event's, else the one device it touched, else "N devices".
std::string RecordDevice(const Value& rec) {
  if (const Value* ev = rec.Find("event"); ev && !ev->GetString("enrollment_id").empty())
    return std::string(ev->GetString("enrollment_id"));
  const Value* devs = rec.Find("devices");
  const size_t n = devs && devs->AsArray() ? devs->AsArray()->size() : 0;
  if (n == 1) return ScalarText(devs->AsArray()->at(0));
  return n == 0 ? "" : std::to_string(n) + " devices";
}

// policy decisions and policy parked: GET /v1/policies/{name}/decisions or /parked.
int RunPolicyRecords(Context& ctx, const ParsedArgs& a, const std::string& action) {
  if (a.positionals.size() != 1) return PolicyUsage(ctx, action, "give exactly one policy name");
  const std::string& name = a.positionals[0];
  Query q;
  if (a.Has("device")) {
    if (a.Get("device").empty()) return PolicyUsage(ctx, action, "--device needs an enrollment id");
    q.emplace_back("enrollment_id", a.Get("device"));
  }
  Paging paging;
  if (Status st = ReadPaging(a, 1000, &paging); !st.ok())
    return PolicyUsage(ctx, action, st.message());
  Value listing;
  std::string next;
  int rc = FetchPages(ctx, PolicyPath(name) + "/" + action, q, action.c_str(), paging.page_max,
                      paging.max_items, paging.cursor, &listing, &next);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(ctx, listing);
    return kExitOk;
  }
  const bool decisions = action == "decisions";
  Table t = decisions ? Table({"CURSOR", "TIME", "EVENT", "DEVICE", "DECISIONS"})
                      : Table({"CURSOR", "TIME", "EVENT", "DEVICE", "ATTEMPTS", "ERROR"});
  for (const auto& rec : *listing.Find(action)->AsArray()) {
    const Value* ev = rec.Find("event");
    const std::string event = ev ? Field(*ev, "type") : "";
    if (decisions) {
      t.AddRow({Field(rec, "cursor"), Field(rec, "time"), event, RecordDevice(rec),
                DecisionSummary(rec)});
    } else {
      const Value* err = rec.Find("error");
      std::string error = err ? Field(*err, "error") : "";
      if (err && !Field(*err, "message").empty()) error += ": " + FirstLine(Field(*err, "message"));
      t.AddRow({Field(rec, "cursor"), Field(rec, "time"), event, RecordDevice(rec),
                Field(rec, "attempts"), error});
    }
  }
  if (t.rows() == 0) {
    Print(ctx, "no " + std::string(decisions ? "decisions" : "parked events") + " of policy " +
                   Printable(name) +
                   (a.Has("device") ? " about " + Printable(a.Get("device")) : std::string()) +
                   "\n");
    if (paging.cursor.empty()) NoteUnknownPolicy(ctx, name);
  } else {
    Print(ctx, t.Render());
  }
  MoreHint(ctx, next, decisions ? "decisions" : "parked events");
  return kExitOk;
}

int RunPolicyDecisions(Context& ctx, const ParsedArgs& a) {
  return RunPolicyRecords(ctx, a, "decisions");
}
int RunPolicyParked(Context& ctx, const ParsedArgs& a) {
  return RunPolicyRecords(ctx, a, "parked");
}

// An ostream's buffer that writes straight to a FILE (the harness output streams out).
class FileStreamBuf : public std::streambuf {
 public:
  explicit FileStreamBuf(FILE* f) : f_(f) {}

 protected:
  int overflow(int c) override {
    if (c == traits_type::eof()) return traits_type::not_eof(c);
    return std::fputc(c, f_) == EOF ? traits_type::eof() : c;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    return static_cast<std::streamsize>(std::fwrite(s, 1, static_cast<size_t>(n), f_));
  }

 private:
  FILE* f_;
};

// policy test: the harness, locally (no server). Exit status: the harness's.
int RunPolicyTest(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 1) return PolicyUsage(ctx, "test", "give exactly one policy file");
  const std::string& file = a.positionals[0];
  const std::string events_path = a.Get("events");
  if (events_path.empty())
    return PolicyUsage(ctx, "test", "--events EVENTS.jsonl is required (one JSON event per line)");
  std::error_code ec;
  for (const std::string& path : {file, events_path})
    if (path != "-" && std::filesystem::is_directory(path, ec))
      return PolicyUsage(ctx, "test", path + " is a directory");
  std::ifstream events_file;
  std::istream* events = &std::cin;
  if (events_path != "-") {
    events_file.open(events_path, std::ios::binary);
    if (!events_file) {
      Err(ctx, "policy test: cannot read %s: %s", events_path.c_str(), std::strerror(errno));
      return kExitUsage;
    }
    events = &events_file;
  }
  policy::HarnessOptions options;
  options.dry_run = a.Has("dry-run");
  FileStreamBuf out_buf(ctx.out);
  std::ostream out(&out_buf);
  std::ostringstream err;
  const int status = policy::RunHarness(file, *events, out, err, options);
  out.flush();
  std::istringstream lines(err.str());
  for (std::string line; std::getline(lines, line);)
    Err(ctx, "policy test: %s", Printable(line).c_str());
  switch (status) {
    case 0:
      return kExitOk;
    case 1:
      Err(ctx, "policy test: a run failed (its \"kind\":\"error\" line says why)");
      return kExitFailed;
    default:
      return kExitUsage;
  }
}

const std::vector<Action>& PolicyActions() {
  static const std::vector<Action> kActions = {
      {"list", "", {}, RunPolicyList},
      {"show", "NAME", {}, RunPolicyShow},
      {"reload", "[NAME]", {}, RunPolicyReload},
      {"enable", "NAME", {}, RunPolicyEnable},
      {"disable", "NAME", {}, RunPolicyDisable},
      {"dry-run", "NAME on|off", {}, RunPolicyDryRun},
      {"run", "NAME [--device ID] [--arg KEY=VALUE ...]", {"device", "arg"}, RunPolicyRun},
      {"decisions",
       "NAME [--device ID] [--limit N] [--all | --cursor C]",
       {"device", "limit", "all", "cursor"},
       RunPolicyDecisions},
      {"parked",
       "NAME [--device ID] [--limit N] [--all | --cursor C]",
       {"device", "limit", "all", "cursor"},
       RunPolicyParked},
      {"test", "FILE --events EVENTS.jsonl [--dry-run]", {"events", "dry-run"}, RunPolicyTest},
  };
  return kActions;
}

int RunPolicy(Context& ctx, const ParsedArgs& a) {
  return RunAction(ctx, "policy", PolicyActions(), a);
}

int RunCompliance(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() > 1) return Usage(ctx, "compliance", "give at most one policy name");
  if (a.positionals.empty()) {
    for (const char* flag : {"status", "limit", "all", "cursor"})
      if (a.Has(flag))
        return Usage(ctx, "compliance",
                     std::string("--") + flag + " lists one policy's devices: give its NAME");
    Reply reply;
    int rc = Send(ctx, "GET", "/v1/compliance", {}, "", "", &reply);
    if (rc != kExitOk) return rc;
    if (ctx.json) {
      PrintJson(ctx, reply.json);
      return kExitOk;
    }
    Table t(
        {"POLICY", "ENABLED", "DRY RUN", "COMPLIANT", "NON-COMPLIANT", "REMEDIATING", "EXEMPT"});
    if (const Value* list = reply.json.Find("compliance"); list && list->AsArray())
      for (const auto& p : *list->AsArray()) {
        const Value* d = p.Find("devices");
        const Value none;
        const Value& n = d ? *d : none;
        t.AddRow({Field(p, "policy"), YesNo(p, "enabled"), YesNo(p, "dry_run"),
                  Field(n, "compliant"), Field(n, "non_compliant"), Field(n, "remediation_pending"),
                  Field(n, "exempt")});
      }
    Print(ctx, t.rows() == 0 ? std::string("no policies (is policy.dir set?)\n") : t.Render());
    return kExitOk;
  }
  const std::string& name = a.positionals[0];
  Query q;
  if (a.Has("status")) q.emplace_back("status", a.Get("status"));
  Paging paging;
  if (Status st = ReadPaging(a, 1000, &paging); !st.ok())
    return Usage(ctx, "compliance", st.message());
  Value listing;
  std::string next;
  int rc = FetchPages(ctx, "/v1/compliance/" + PathSegment(name), q, "devices", paging.page_max,
                      paging.max_items, paging.cursor, &listing, &next);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(ctx, listing);
    return kExitOk;
  }
  Table t({"ENROLLMENT", "STATUS", "SINCE", "ATTEMPTS", "STEP", "REASON"});
  for (const auto& d : *listing.Find("devices")->AsArray())
    t.AddRow({Field(d, "enrollment_id"), Field(d, "status"), Field(d, "since"),
              Field(d, "attempts"), Field(d, "step"), Field(d, "reason")});
  if (t.rows() == 0) {
    Print(ctx, "no device has a compliance state" +
                   (a.Has("status") ? " " + Printable(a.Get("status")) : std::string()) +
                   " for policy " + Printable(name) + "\n");
    if (paging.cursor.empty()) NoteUnknownPolicy(ctx, name);
  } else {
    Print(ctx, t.Render());
  }
  MoreHint(ctx, next, "devices");
  return kExitOk;
}

// ---- declarative device management --------------------------------------------

// The "ddm" command's actions, over /v1/ddm (docs/ddm.md "Admin API").
const std::vector<Action>& DdmActions();

int DdmUsage(Context& ctx, const std::string& action, const std::string& message) {
  return ActionUsage(ctx, "ddm", DdmActions(), action, message);
}

constexpr int64_t kDdmPageMax = 1000;  // the largest page the /v1/ddm listings give

std::string DdmPath(const std::string& route, const std::string& key) {
  return "/v1/ddm/" + route + "/" + PathSegment(key);
}

Query NoNotify(const ParsedArgs& a) {
  Query q;
  if (a.Has("nonotify")) q.emplace_back("nonotify", "1");
  return q;
}

// Sends one of the DDM writes and prints its outcome ({changed, tokens_changed,
// commands_queued, pushed, server_token}) under a headline; "(no change)" when
// nothing was written. sync: the notify route, whose "changed" means nothing.
int DdmWrite(Context& ctx, const ParsedArgs& a, const std::string& method, const std::string& path,
             const std::string& body, const std::string& content_type, const std::string& headline,
             Query q, bool sync = false) {
  Reply reply;
  int rc = Send(ctx, method, path, q, body, content_type, &reply);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(ctx, reply.json);
    return kExitOk;
  }
  Value shown = reply.json;
  std::string text = headline;
  if (sync)
    shown.Erase("changed");  // a sync request writes no declaration or set
  else if (!shown.GetBool("changed", true))
    text += " (no change)";
  text += "\n" + RenderKeyValues(shown);
  const Value* queued = reply.json.Find("commands_queued");
  if (a.Has("nonotify") && queued && queued->AsInteger() && *queued->AsInteger() > 0)
    text += "not pushed (--nonotify): the devices sync at their next check-in\n";
  Print(ctx, text);
  return kExitOk;
}

// Reads --limit N, --all and --cursor C of a DDM listing (as for devices).
bool DdmPaging(Context& ctx, const ParsedArgs& a, const char* action, Paging* paging, int* rc) {
  if (Status st = ReadPaging(a, kDdmPageMax, paging); !st.ok()) {
    *rc = DdmUsage(ctx, action, st.message());
    return false;
  }
  return true;
}

// One column of names from a listing array (sets, set members).
std::string NameTable(const char* header, const Value& listing, const char* key) {
  Table t({header});
  if (const Value* list = listing.Find(key); list && list->AsArray())
    for (const auto& n : *list->AsArray()) t.AddRow({ScalarText(n)});
  return t.rows() == 0 ? "" : t.Render();
}

std::string Plural(int64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

int RunDdmDeclarations(Context& ctx, const ParsedArgs& a) {
  if (!a.positionals.empty())
    return DdmUsage(ctx, "declarations",
                    "unexpected argument " + a.positionals[0] + " (use \"ddm get ID\" for one)");
  Paging paging;
  int bad = 0;
  if (!DdmPaging(ctx, a, "declarations", &paging, &bad)) return bad;
  Value listing;
  std::string next;
  int rc = FetchPages(ctx, "/v1/ddm/declarations", {}, "declarations", paging.page_max,
                      paging.max_items, paging.cursor, &listing, &next);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(ctx, listing);
    return kExitOk;
  }
  Table t({"IDENTIFIER", "TYPE", "TOKEN", "OWNER", "MODIFIED"});
  for (const auto& d : *listing.Find("declarations")->AsArray())
    t.AddRow({Field(d, "identifier"), Field(d, "type"), Field(d, "server_token").substr(0, 12),
              Field(d, "owner"), Field(d, "modified_at")});
  Print(ctx, t.rows() == 0 ? std::string("no declarations\n") : t.Render());
  MoreHint(ctx, next, "declarations");
  return kExitOk;
}

int RunDdmGet(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 1)
    return DdmUsage(ctx, "get", "give exactly one declaration identifier");
  Query q;
  if (a.Has("summary")) q.emplace_back("format", "summary");
  Reply reply;
  int rc = Send(ctx, "GET", DdmPath("declarations", a.positionals[0]), q, "", "", &reply);
  if (rc != kExitOk) return rc;
  // The declaration itself is a JSON document: printed as such either way.
  if (ctx.json || !a.Has("summary"))
    PrintJson(ctx, reply.json);
  else
    Print(ctx, RenderKeyValues(reply.json));
  return kExitOk;
}

int RunDdmPut(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 1)
    return DdmUsage(ctx, "put", "give exactly one declaration file ('-' reads stdin)");
  const std::string& file = a.positionals[0];
  auto body = ReadInput(file);
  if (!body.ok()) return DdmUsage(ctx, "put", body.status().message());
  if (body->find_first_not_of(" \t\r\n") == std::string::npos)
    return DdmUsage(ctx, "put", (file == "-" ? std::string("stdin") : file) + " is empty");
  // Only to name it in the headline: the server checks the declaration.
  auto parsed = plist::ParseJson(*body, kReplyLimits);
  std::string identifier = parsed.ok() ? std::string(parsed->GetString("Identifier")) : "";
  return DdmWrite(ctx, a, "PUT", "/v1/ddm/declarations", *body, "application/json",
                  "stored declaration " + Printable(identifier.empty() ? file : identifier),
                  NoNotify(a));
}

int RunDdmDelete(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 1)
    return DdmUsage(ctx, "delete", "give exactly one declaration identifier");
  const std::string& id = a.positionals[0];
  return DdmWrite(ctx, a, "DELETE", DdmPath("declarations", id), "", "",
                  "deleted declaration " + Printable(id) + " (and removed it from every set)",
                  NoNotify(a));
}

int RunDdmTouch(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 1)
    return DdmUsage(ctx, "touch", "give exactly one declaration identifier");
  const std::string& id = a.positionals[0];
  return DdmWrite(ctx, a, "POST", DdmPath("declarations", id) + "/touch", "", "",
                  "touched declaration " + Printable(id) + " (new server token, same content)",
                  NoNotify(a));
}

int RunDdmSets(Context& ctx, const ParsedArgs& a) {
  if (!a.positionals.empty())
    return DdmUsage(ctx, "sets",
                    "unexpected argument " + a.positionals[0] + " (use \"ddm set SET\" for one)");
  if (a.Has("enrollment") && a.Has("declaration"))
    return DdmUsage(ctx, "sets", "give --enrollment or --declaration, not both");
  std::string path = "/v1/ddm/sets", empty = "no sets\n";
  for (const char* flag : {"enrollment", "declaration"}) {
    if (!a.Has(flag)) continue;
    const std::string key = a.Get(flag);
    if (key.empty()) return DdmUsage(ctx, "sets", std::string("--") + flag + " needs a value");
    const bool enrollment = std::string_view(flag) == "enrollment";
    path = DdmPath(enrollment ? "enrollment-sets" : "declaration-sets", key);
    empty = enrollment ? "no sets assigned to " + Printable(key) + "\n"
                       : "no set carries declaration " + Printable(key) + "\n";
  }
  Paging paging;
  int bad = 0;
  if (!DdmPaging(ctx, a, "sets", &paging, &bad)) return bad;
  Value listing;
  std::string next;
  int rc = FetchPages(ctx, path, {}, "sets", paging.page_max, paging.max_items, paging.cursor,
                      &listing, &next);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(ctx, listing);
    return kExitOk;
  }
  const std::string table = NameTable("SET", listing, "sets");
  Print(ctx, table.empty() ? empty : table);
  MoreHint(ctx, next, "sets");
  return kExitOk;
}

// A set's declarations and the enrollments assigned it (two listings).
int RunDdmSet(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 1) return DdmUsage(ctx, "set", "give exactly one set name");
  const std::string& set = a.positionals[0];
  int64_t max_items = 0;
  if (a.Has("limit") && (!ParseCount(a.Get("limit"), &max_items) || max_items < 1))
    return DdmUsage(ctx, "set", "--limit must be a positive integer");
  Value declarations, enrollments;
  std::string next_declarations, next_enrollments;
  int rc = FetchPages(ctx, DdmPath("set-declarations", set), {}, "declarations", kDdmPageMax,
                      max_items, "", &declarations, &next_declarations);
  if (rc != kExitOk) return rc;
  rc = FetchPages(ctx, DdmPath("set-enrollments", set), {}, "enrollment_ids", kDdmPageMax,
                  max_items, "", &enrollments, &next_enrollments);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    Value out;
    out.Set("set", Value::String(set));
    out.Set("declarations", *declarations.Find("declarations"));
    out.Set("enrollment_ids", *enrollments.Find("enrollment_ids"));
    PrintJson(ctx, out);
  } else {
    const std::string d = NameTable("DECLARATION", declarations, "declarations");
    const std::string e = NameTable("ENROLLMENT", enrollments, "enrollment_ids");
    Print(ctx, (d.empty() ? "set " + Printable(set) + " has no declarations\n" : d) + "\n" +
                   (e.empty() ? "no enrollment is assigned set " + Printable(set) + "\n" : e));
  }
  if (!next_declarations.empty()) std::fprintf(ctx.err, "more declarations than --limit\n");
  if (!next_enrollments.empty()) std::fprintf(ctx.err, "more enrollments than --limit\n");
  return kExitOk;
}

// set-add, set-remove, assign, unassign: PUT or DELETE of one membership.
int DdmMembership(Context& ctx, const ParsedArgs& a, const char* action) {
  const std::string name = action;
  const bool set_side = name == "set-add" || name == "set-remove";
  const bool add = name == "set-add" || name == "assign";
  if (a.positionals.size() != 2)
    return DdmUsage(ctx, name,
                    set_side ? "give a set name and a declaration identifier"
                             : "give an enrollment id and a set name");
  const std::string& first = a.positionals[0];
  const std::string& second = a.positionals[1];
  Query q = NoNotify(a);
  q.emplace_back(set_side ? "declaration" : "set", second);
  std::string headline;
  if (set_side)
    headline = add ? "added declaration " + Printable(second) + " to set " + Printable(first)
                   : "removed declaration " + Printable(second) + " from set " + Printable(first);
  else
    headline = add ? "assigned set " + Printable(second) + " to " + Printable(first)
                   : "unassigned set " + Printable(second) + " from " + Printable(first);
  return DdmWrite(ctx, a, add ? "PUT" : "DELETE",
                  DdmPath(set_side ? "set-declarations" : "enrollment-sets", first), "", "",
                  headline, q);
}

int RunDdmSetAdd(Context& ctx, const ParsedArgs& a) { return DdmMembership(ctx, a, "set-add"); }
int RunDdmSetRemove(Context& ctx, const ParsedArgs& a) {
  return DdmMembership(ctx, a, "set-remove");
}
int RunDdmAssign(Context& ctx, const ParsedArgs& a) { return DdmMembership(ctx, a, "assign"); }
int RunDdmUnassign(Context& ctx, const ParsedArgs& a) { return DdmMembership(ctx, a, "unassign"); }

// The reasons of a status as "Code: Description; ...".
std::string ReasonsText(const Value& v) {
  std::string out;
  if (const Value* list = v.Find("reasons"); list && list->AsArray())
    for (const auto& r : *list->AsArray()) {
      std::string one = Field(r, "code");
      if (const std::string d = Field(r, "description"); !d.empty())
        one += (one.empty() ? "" : ": ") + FirstLine(d);
      out += (out.empty() ? "" : "; ") + one;
    }
  return out;
}

int RunDdmStatus(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 1) return DdmUsage(ctx, "status", "give exactly one enrollment id");
  const std::string& id = a.positionals[0];
  Reply state;
  int rc = Send(ctx, "GET", DdmPath("enrollments", id), {}, "", "", &state);
  if (rc != kExitOk) return rc;
  Value statuses;
  std::string next;
  rc = FetchPages(ctx, DdmPath("declaration-status", id), {}, "declarations", kDdmPageMax, 0, "",
                  &statuses, &next);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    Value out;
    out.Set("state", std::move(state.json));
    out.Set("declaration_status", *statuses.Find("declarations"));
    PrintJson(ctx, out);
    return kExitOk;
  }
  std::string text = RenderKeyValues(state.json);
  if (!state.json.GetBool("enabled", false))
    text += "note: " + Printable(id) + " has not made a DeclarativeManagement check-in yet\n";
  Table t({"IDENTIFIER", "KIND", "ACTIVE", "VALID", "CURRENT", "REASONS"});
  for (const auto& d : *statuses.Find("declarations")->AsArray())
    t.AddRow({Field(d, "identifier"), Field(d, "kind"), YesNo(d, "active"), Field(d, "valid"),
              YesNo(d, "current"), ReasonsText(d)});
  text += "\n" + (t.rows() == 0 ? std::string("no declaration status reported\n") : t.Render());
  Print(ctx, text);
  return kExitOk;
}

int RunDdmValues(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 1) return DdmUsage(ctx, "values", "give exactly one enrollment id");
  const std::string& id = a.positionals[0];
  Query q;
  if (a.Has("prefix")) q.emplace_back("prefix", a.Get("prefix"));
  Paging paging;
  int bad = 0;
  if (!DdmPaging(ctx, a, "values", &paging, &bad)) return bad;
  Value listing;
  std::string next;
  int rc = FetchPages(ctx, DdmPath("status-values", id), q, "values", paging.page_max,
                      paging.max_items, paging.cursor, &listing, &next);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(ctx, listing);
    return kExitOk;
  }
  Table t({"ITEM", "VALUE"});
  for (const auto& v : *listing.Find("values")->AsArray()) {
    const Value* value = v.Find("value");
    t.AddRow({Field(v, "item"), value ? ScalarText(*value) : ""});
  }
  if (t.rows() == 0)
    Print(ctx, "no status values from " + Printable(id) +
                   (a.Has("prefix") ? " under " + Printable(a.Get("prefix")) : std::string()) +
                   "\n");
  else
    Print(ctx, t.Render());
  MoreHint(ctx, next, "values");
  return kExitOk;
}

int RunDdmErrors(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 1) return DdmUsage(ctx, "errors", "give exactly one enrollment id");
  const std::string& id = a.positionals[0];
  Reply reply;
  int rc = Send(ctx, "GET", DdmPath("status-errors", id), {}, "", "", &reply);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(ctx, reply.json);
    return kExitOk;
  }
  Table t({"STATUS ITEM", "CODE", "DESCRIPTION"});
  if (const Value* list = reply.json.Find("errors"); list && list->AsArray())
    for (const auto& e : *list->AsArray()) {
      const Value* reasons = e.Find("reasons");
      if (!reasons || !reasons->AsArray() || reasons->AsArray()->empty()) {
        t.AddRow({Field(e, "status_item")});
        continue;
      }
      for (const auto& r : *reasons->AsArray())
        t.AddRow({Field(e, "status_item"), Field(r, "code"), FirstLine(Field(r, "description"))});
    }
  Print(ctx, t.rows() == 0 ? "no status errors reported by " + Printable(id) + "\n" : t.Render());
  return kExitOk;
}

int RunDdmReport(Context& ctx, const ParsedArgs& a) {
  if (a.positionals.size() != 1) return DdmUsage(ctx, "report", "give exactly one enrollment id");
  const std::string& id = a.positionals[0];
  Query q;
  if (a.Has("limit")) {
    int64_t n = 0;
    if (!ParseCount(a.Get("limit"), &n) || n < 1 || n > 100)
      return DdmUsage(ctx, "report", "--limit must be an integer from 1 to 100");
    q.emplace_back("limit", a.Get("limit"));
  }
  Reply reply;
  int rc = Send(ctx, "GET", DdmPath("status-report", id), q, "", "", &reply);
  if (rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(ctx, reply.json);
    return kExitOk;
  }
  std::string text;
  if (const Value* list = reply.json.Find("reports"); list && list->AsArray())
    for (const auto& r : *list->AsArray()) {
      const Value* report = r.Find("report");
      text += (text.empty() ? "" : "\n") + std::string("report received ") +
              Printable(Field(r, "received_at")) + ":\n" +
              (report ? plist::ToJson(*report, /*pretty=*/true) : std::string("-")) + "\n";
    }
  Print(ctx, text.empty() ? "no status reports stored for " + Printable(id) + "\n" : text);
  return kExitOk;
}

int RunDdmPreview(Context& ctx, const ParsedArgs& a) {
  const auto bad = [&] {
    return DdmUsage(ctx, "preview",
                    "give an enrollment id and what to preview: tokens, declaration-items or "
                    "declaration/KIND/IDENTIFIER");
  };
  if (a.positionals.size() != 2 && a.positionals.size() != 4) return bad();
  const std::string& id = a.positionals[0];
  std::vector<std::string> what = {a.positionals[1]};
  if (a.positionals.size() == 4) {  // "declaration KIND IDENTIFIER"
    what.push_back(a.positionals[2]);
    what.push_back(a.positionals[3]);
  } else if (what[0].rfind("declaration/", 0) == 0) {
    const std::string rest = what[0].substr(12);
    const size_t slash = rest.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 == rest.size()) return bad();
    what = {"declaration", rest.substr(0, slash), rest.substr(slash + 1)};
  }
  const bool ok = what.size() == 1 ? what[0] == "tokens" || what[0] == "declaration-items"
                                   : what[0] == "declaration";
  if (!ok) return bad();
  std::string path = DdmPath("preview", id);
  for (const auto& segment : what) path += "/" + PathSegment(segment);
  Reply reply;
  int rc = Send(ctx, "GET", path, {}, "", "", &reply);
  if (rc != kExitOk) return rc;
  PrintJson(ctx, reply.json);  // exactly what the device would get
  return kExitOk;
}

int RunDdmSync(Context& ctx, const ParsedArgs& a) {
  std::vector<std::string> ids;
  for (const auto& p : a.positionals)
    for (auto& id : SplitList(p)) ids.push_back(std::move(id));
  if (ids.empty()) return DdmUsage(ctx, "sync", "give one or more enrollment ids");
  Value list = Value::MakeArray();
  for (const auto& id : ids) list.AsArray()->push_back(Value::String(id));
  Value body;
  body.Set("enrollment_ids", std::move(list));
  return DdmWrite(ctx, a, "POST", "/v1/ddm/notify", plist::ToJson(body), "application/json",
                  "requested a sync of " +
                      Plural(static_cast<int64_t>(ids.size()), "enrollment", "enrollments"),
                  {}, /*sync=*/true);
}

const std::vector<Action>& DdmActions() {
  static const std::vector<Action> kActions = {
      {"declarations",
       "[--limit N] [--all | --cursor C]",
       {"limit", "all", "cursor"},
       RunDdmDeclarations},
      {"get", "IDENTIFIER [--summary]", {"summary"}, RunDdmGet},
      {"put", "FILE|- [--nonotify]", {"nonotify"}, RunDdmPut},
      {"delete", "IDENTIFIER [--nonotify]", {"nonotify"}, RunDdmDelete},
      {"touch", "IDENTIFIER [--nonotify]", {"nonotify"}, RunDdmTouch},
      {"sets",
       "[--enrollment ID | --declaration IDENTIFIER] [--limit N] [--all | --cursor C]",
       {"enrollment", "declaration", "limit", "all", "cursor"},
       RunDdmSets},
      {"set", "SET [--limit N]", {"limit"}, RunDdmSet},
      {"set-add", "SET IDENTIFIER [--nonotify]", {"nonotify"}, RunDdmSetAdd},
      {"set-remove", "SET IDENTIFIER [--nonotify]", {"nonotify"}, RunDdmSetRemove},
      {"assign", "ENROLLMENT SET [--nonotify]", {"nonotify"}, RunDdmAssign},
      {"unassign", "ENROLLMENT SET [--nonotify]", {"nonotify"}, RunDdmUnassign},
      {"status", "ENROLLMENT", {}, RunDdmStatus},
      {"values",
       "ENROLLMENT [--prefix P] [--limit N] [--all | --cursor C]",
       {"prefix", "limit", "all", "cursor"},
       RunDdmValues},
      {"errors", "ENROLLMENT", {}, RunDdmErrors},
      {"report", "ENROLLMENT [--limit N]", {"limit"}, RunDdmReport},
      {"preview",
       "ENROLLMENT tokens|declaration-items|declaration/KIND/IDENTIFIER",
       {},
       RunDdmPreview},
      {"sync", "ENROLLMENT[,ENROLLMENT...] ...", {}, RunDdmSync},
  };
  return kActions;
}

int RunDdm(Context& ctx, const ParsedArgs& a) { return RunAction(ctx, "ddm", DdmActions(), a); }

}  // namespace

const std::vector<FlagSpec>& GlobalFlags() {
  static const std::vector<FlagSpec> kFlags = {
      {"url", true},    {"api-key", true}, {"api-key-file", true}, {"json", false},
      {"cacert", true}, {"timeout", true}, {"help", false},
  };
  return kFlags;
}

const std::vector<CommandSpec>& Commands() {
  static const std::vector<CommandSpec> kCommands = {
      {"enqueue",
       "ID[,ID...] (--file CMD.plist | --type RequestType [--set Key=Value ...] "
       "[--data-file Key=FILE ...] [--json-command JSON]) [--priority N] [--nopush]",
       "queue a command for one or more enrollments (and push them)",
       "  --file CMD.plist      send a complete command plist as-is (PUT /v1/enqueue);\n"
       "                        '-' reads stdin; the server assigns a missing CommandUUID\n"
       "  --type RequestType    build the Command dict here (POST /v1/commands);\n"
       "                        the server assigns the CommandUUID\n"
       "  --set Key=Value       add a string key to the Command dict (repeatable)\n"
       "  --set Key:=JSON       add a typed key: --set 'Queries:=[\"UDID\",\"OSVersion\"]'\n"
       "                        or --set Flag:=true\n"
       "  --data-file Key=FILE  add FILE's bytes as <data> (repeatable), e.g. for InstallProfile:\n"
       "                        --type InstallProfile --data-file Payload=profile.mobileconfig\n"
       "  --json-command JSON   the Command dict as a JSON object (or @FILE); --type, --set and\n"
       "                        --data-file add to it. <data> is {\"$data\":\"BASE64\"},\n"
       "                        <date> is {\"$date\":\"RFC 3339\"}\n"
       "  --priority N          0-255, higher is sent first (default 0)\n"
       "  --nopush              queue only, do not send an APNs push\n"
       "prints the command UUID and one line per id;\n"
       "exit 3 if some ids failed, 1 if all did.\n",
       {{"file", true},
        {"type", true},
        {"set", true, true},
        {"data-file", true, true},
        {"json-command", true},
        {"priority", true},
        {"nopush", false}},
       RunEnqueue},
      {"push", "ID[,ID...]", "send an APNs push so the devices check in", "", {}, RunPush},
      {"pushcert",
       "--cert FILE [--key FILE] | --p12 FILE [--password-env VAR | --password-file FILE] [--force]",
       "store an APNs push certificate and its private key (PEM or PKCS#12)",
       "  --cert FILE           the push certificate (PEM); may also hold the key, then --key\n"
       "                        is optional\n"
       "  --key FILE            its unencrypted private key (PEM)\n"
       "  --p12 FILE            certificate and key as one PKCS#12 file (.p12, as exported\n"
       "                        from Keychain Access)\n"
       "  --password-env VAR    the .p12 password is in environment variable VAR\n"
       "  --password-file FILE  the .p12 password is the first line of FILE\n"
       "                        (no password option: the .p12 has an empty password)\n"
       "  --force               accept a certificate for another topic than the enrollment\n"
       "                        topic (refused otherwise: devices enrolled with the old topic\n"
       "                        would be stranded); it becomes the enrollment topic\n"
       "'-' reads a file from stdin. The password is sent in the X-Pkcs12-Password header\n"
       "and never printed; it is not accepted as an argument (others could see it in ps).\n"
       "prints the certificate's topic, expiry date and days left.\n",
       {{"cert", true},
        {"key", true},
        {"p12", true},
        {"password-env", true},
        {"password-file", true},
        {"force", false}},
       RunPushCert},
      {"enroll",
       "challenge [--ttl SECONDS] [--udid UDID] | profile --out FILE [--token-env VAR | --token-file FILE] "
       "[--challenge C]",
       "create a one-time SCEP challenge, or fetch the enrollment profile",
       "challenge: create a one-time SCEP challenge (for an enrollment profile or a SCEP client)\n"
       "  --ttl SECONDS   how long it is valid (default 3600, at most 30 days)\n"
       "  --udid UDID     the device it is for: the certificate it pays for records that UDID,\n"
       "                  and only that device can Authenticate with it\n"
       "prints the challenge on stdout (a secret: it is not logged by orchardd), the expiry on\n"
       "stderr. A challenge is used once.\n"
       "profile: GET /mdm/enroll as a device would (docs/enrollment.md) and write the\n"
       ".mobileconfig, CMS-signed when the server has a signing certificate\n"
       "  --out FILE          where to write it ('-': stdout)\n"
       "  --token-env VAR     the enrollment token (enroll.token) is in environment variable\n"
       "                      VAR (default: ORCHARD_ENROLL_TOKEN, if set)\n"
       "  --token-file FILE   the token is the first line of FILE\n"
       "  --challenge C       fetch with a one-time challenge (from enroll challenge) instead\n"
       "The token is sent as Authorization: Bearer and never printed.\n",
       {{"ttl", true}, {"udid", true}, {"out", true}, {"token-env", true}, {"token-file", true}, {"challenge", true}},
       RunEnroll},
      {"certs",
       "[list [--udid UDID] [--limit N] [--all | --cursor C] | show SERIAL | revoke SERIAL [--reason TEXT]]",
       "certificates issued by Orchard's device CA: list, show, revoke",
       "  list            every issued certificate (serial, subject, UDID, expiry, revocation)\n"
       "  --udid UDID     only that device's certificates\n"
       "  show SERIAL     one certificate (SERIAL in hex, any case; ':' and leading zeros ok)\n"
       "  revoke SERIAL   revoke it: the device can no longer authenticate or renew with it\n"
       "  --reason TEXT   why (kept with the record)\n",
       {{"udid", true}, {"limit", true}, {"all", false}, {"cursor", true}, {"reason", true}},
       RunCerts},
      {"pushcerts",
       "",
       "list the stored push certificates (topic, expiry, days left)",
       "",
       {},
       RunPushCerts},
      {"devices",
       "[--serial S] [--model M] [--os PREFIX] [--state S] [--type T] [--blocked true|false] "
       "[--seen-after TIME] [--seen-before TIME] [--limit N] [--all | --cursor C]",
       "list enrollments",
       "  --serial S             exact serial number\n"
       "  --model M              exact model or product name (e.g. iPad2,5)\n"
       "  --os PREFIX            OS version prefix (\"17.\" matches every 17.x)\n"
       "  --state S              authenticated, enrolled or checked_out\n"
       "  --type T               device, user, shared_ipad_user, user_enrollment_device,\n"
       "                         user_enrollment_user\n"
       "  --blocked true|false\n"
       "  --seen-after TIME      last seen at or after TIME\n"
       "  --seen-before TIME     last seen before TIME\n"
       "                         TIME: RFC 3339 (2026-11-23T15:42:00Z), a date (2026-11-23),\n"
       "                         Unix milliseconds, or a duration ago (90s, 15m, 36h, 7d)\n"
       "  --limit N              list at most N (default: every page)\n"
       "  --all                  every page (the default); with --limit N, N is the page size\n"
       "  --cursor C             start at this page cursor (printed when --limit stops early)\n",
       {{"serial", true},
        {"model", true},
        {"os", true},
        {"state", true},
        {"type", true},
        {"blocked", true},
        {"seen-after", true},
        {"seen-before", true},
        {"limit", true},
        {"all", false},
        {"cursor", true}},
       RunDevices},
      {"device",
       "ID",
       "show one enrollment",
       "prints the enrollment as key: value lines, then its push state (last push, APNs\n"
       "status and reason, failures, whether APNs declared the token invalid)\n",
       {},
       RunDevice},
      {"queue",
       "ID [--limit N | --clear | --delete UUID]",
       "list or edit an enrollment's command queue",
       "  --limit N       list at most N commands (default: all)\n"
       "  --clear         remove every queued command\n"
       "  --delete UUID   remove one queued command\n",
       {{"clear", false}, {"delete", true}, {"limit", true}},
       RunQueue},
      {"results",
       "ID [--limit N] | ID UUID [--plist]",
       "list command results, or show one",
       "  with ID only: the results, newest first (--limit N: at most N; default: all)\n"
       "  with ID UUID: that result as JSON including the device's response;\n"
       "  --plist prints the device's report plist byte for byte instead\n",
       {{"limit", true}, {"plist", false}},
       RunResults},
      {"block",
       "ID",
       "block an enrollment: the device's next message is refused with 401",
       "",
       {},
       RunBlock},
      {"unblock", "ID", "unblock an enrollment", "", {}, RunUnblock},
      {"events",
       "[--after SEQ] [--limit N]",
       "list events from the durable event log",
       "  --after SEQ   only events after this sequence number (see last_seq)\n"
       "  --limit N     at most N events (default 100), read page by page\n",
       {{"after", true}, {"limit", true}},
       RunEvents},
      {"policy",
       "ACTION [arguments]",
       "list, inspect, reload, switch and run Lua policies; test a policy file locally",
       "actions:\n"
       "  list                       every policy: version, enabled, dry run, load state, runs\n"
       "                             handled, failed and parked since orchardd started, lag\n"
       "  show NAME                  one policy: metadata, schedules, its runner's state\n"
       "  reload [NAME]              re-read one policy's file, or every file; a version that\n"
       "                             fails to load leaves the previous one running (exit 1)\n"
       "  enable NAME\n"
       "  disable NAME               a disabled policy skips its events (not replayed later)\n"
       "  dry-run NAME on|off        record decisions without applying them\n"
       "  run NAME [--device ID] [--arg KEY=VALUE ...]\n"
       "                             send the policy a policy.run event now, about device ID;\n"
       "                             --arg KEY:=JSON gives a typed value. It runs shortly\n"
       "                             after: see \"policy decisions NAME\"\n"
       "  decisions NAME [--device ID] [--limit N] [--all | --cursor C]\n"
       "                             what the policy decided, oldest first\n"
       "  parked NAME [--device ID] [--limit N] [--all | --cursor C]\n"
       "                             events on which the policy failed every attempt\n"
       "  test FILE --events EVENTS.jsonl [--dry-run]\n"
       "                             run a policy file here, without a server, on events (one\n"
       "                             JSON object per line; '-' reads stdin) and print each\n"
       "                             decision as a JSON line; --dry-run runs it as a dry-run\n"
       "                             policy. Exit 0 ok, 1 a run failed, 2 bad input or the\n"
       "                             policy does not load\n"
       "options:\n"
       "  --device ID     run: the enrollment the run is about; decisions, parked: only\n"
       "                  records about it\n"
       "  --limit N       list at most N (default: every page); with --all, N is the page size\n"
       "  --cursor C      start at this page cursor (printed when --limit stops early)\n"
       "writing policies: docs/lua-api.md\n",
       {{"device", true},
        {"arg", true, true},
        {"limit", true},
        {"all", false},
        {"cursor", true},
        {"events", true},
        {"dry-run", false}},
       RunPolicy},
      {"compliance",
       "[NAME [--status S] [--limit N] [--all | --cursor C]]",
       "compliance of the fleet per policy, or each device's state for one policy",
       "  without NAME: per policy, how many devices are compliant, non-compliant,\n"
       "  remediating (remediation_pending) and exempt\n"
       "  with NAME: the state of each device the policy judged, in enrollment id order\n"
       "  --status S     only devices in status S: compliant, non_compliant,\n"
       "                 remediation_pending, exempt or unknown\n"
       "  --limit N      list at most N (default: every page); with --all, N is the page size\n"
       "  --cursor C     start at this page cursor (printed when --limit stops early)\n",
       {{"status", true}, {"limit", true}, {"all", false}, {"cursor", true}},
       RunCompliance},
      {"ddm",
       "ACTION [arguments]",
       "declarative device management: declarations, sets, assignments, status, sync",
       "actions:\n"
       "  declarations [--limit N] [--all | --cursor C]\n"
       "                             every declaration: identifier, type, server token (its\n"
       "                             start), owner, last change\n"
       "  get IDENTIFIER [--summary] the declaration as devices get it (JSON); --summary: the\n"
       "                             listing's fields\n"
       "  put FILE|- [--nonotify]    store a declaration (a JSON file, '-' reads stdin); an\n"
       "                             identical upload changes nothing\n"
       "  delete IDENTIFIER [--nonotify]\n"
       "                             delete it (it leaves every set)\n"
       "  touch IDENTIFIER [--nonotify]\n"
       "                             a new server token, same content: devices fetch it again\n"
       "  sets [--enrollment ID | --declaration IDENTIFIER] [--limit N] [--all | --cursor C]\n"
       "                             every set name, or the sets assigned to an enrollment, or\n"
       "                             the sets carrying a declaration\n"
       "  set SET [--limit N]        a set's declarations and the enrollments assigned it\n"
       "  set-add SET IDENTIFIER [--nonotify]\n"
       "  set-remove SET IDENTIFIER [--nonotify]\n"
       "                             put a declaration in a set, or take it out\n"
       "  assign ENROLLMENT SET [--nonotify]\n"
       "  unassign ENROLLMENT SET [--nonotify]\n"
       "                             give an enrollment a set, or take it away\n"
       "  status ENROLLMENT          its DDM state (tokens, in sync, pending sync command) and\n"
       "                             the status of each declaration it reported\n"
       "  values ENROLLMENT [--prefix P] [--limit N] [--all | --cursor C]\n"
       "                             the status items it reported, and their values\n"
       "  errors ENROLLMENT          the errors of its latest status report that had any\n"
       "  report ENROLLMENT [--limit N]\n"
       "                             its raw status reports, newest first (default 1, at most\n"
       "                             100)\n"
       "  preview ENROLLMENT tokens|declaration-items|declaration/KIND/IDENTIFIER\n"
       "                             exactly what the device would be answered (JSON)\n"
       "  sync ENROLLMENT[,ENROLLMENT...] ...\n"
       "                             queue and push a DeclarativeManagement sync command, up to\n"
       "                             1000 enrollments, whatever changed\n"
       "options:\n"
       "  --nonotify      queue the sync commands a write causes, but send no push\n"
       "  --limit N       list at most N (default: every page); with --all, N is the page size\n"
       "  --cursor C      start at this page cursor (printed when --limit stops early)\n"
       "writes print changed, tokens_changed (enrollments whose declarations token changed),\n"
       "commands_queued, pushed and server_token. More: docs/ddm.md\n",
       {{"limit", true},
        {"all", false},
        {"cursor", true},
        {"nonotify", false},
        {"summary", false},
        {"enrollment", true},
        {"declaration", true},
        {"prefix", true}},
       RunDdm},
      {"plugins", "", "the plugins the server loaded or refused: version, status, errors, lag",
       "  status: loaded (running as consumer plugin:NAME), refused (a check failed before\n"
       "  it ran: file permissions, entry symbol, ABI version) or error (its entry point or\n"
       "  init failed); the reason follows the table. ERRORS counts failed runs since start\n"
       "  (retried, then PARKED); LAG is the age of the oldest event not yet handled\n",
       {}, RunPlugins},
      {"version", "", "print orchardctl's and the server's version", "", {}, RunVersion},
  };
  return kCommands;
}

const CommandSpec* FindCommand(const std::string& name) {
  for (const auto& c : Commands())
    if (name == c.name) return &c;
  return nullptr;
}

std::string CommandUsage(const CommandSpec& cmd) {
  std::string out = std::string("usage: orchardctl [global options] ") + cmd.name;
  if (*cmd.synopsis) out += std::string(" ") + cmd.synopsis;
  out += "\n\n" + std::string(cmd.summary) + "\n";
  if (*cmd.help) out += "\n" + std::string(cmd.help);
  out += "\nrun \"orchardctl --help\" for the global options\n";
  return out;
}

std::string GeneralUsage() {
  std::string out =
      "usage: orchardctl [global options] COMMAND [arguments]\n"
      "\n"
      "orchardctl talks to orchardd's admin API.\n"
      "\n"
      "commands:\n";
  size_t width = 0;
  for (const auto& c : Commands()) width = std::max(width, std::strlen(c.name));
  for (const auto& c : Commands())
    out += "  " + std::string(c.name) + std::string(width - std::strlen(c.name) + 2, ' ') +
           c.summary + "\n";
  out +=
      "\n"
      "global options (before or after the command):\n"
      "  --url URL            orchardd's address (default: $ORCHARD_URL or http://127.0.0.1:9000)\n"
      "  --api-key KEY        the admin API key (default: $ORCHARD_API_KEY); prefer the\n"
      "                       environment or --api-key-file, arguments are visible to other users\n"
      "  --api-key-file FILE  read the API key from the first line of FILE\n"
      "  --json               print the server's JSON (pretty) instead of tables\n"
      "  --cacert FILE        CA certificates to verify an https:// server with\n"
      "  --timeout SECONDS    give up on a request after this long (default 60)\n"
      "  --help               this text; \"orchardctl COMMAND --help\" for one command\n"
      "\n"
      "exit status: 0 ok, 1 request failed or server error, 2 usage error,\n"
      "             3 partial failure (some ids failed, HTTP 207);\n"
      "             policy test: 0 ok, 1 a run failed, 2 bad input or the policy does not load\n";
  return out;
}

}  // namespace orchard::ctl
