#include "outbox.h"

#include <charconv>
#include <cstdio>

namespace orchard_webhook {
namespace {

// Newlines separate header fields: keep them out of the text fields.
std::string OneLine(std::string_view s, size_t max) {
  std::string out(s.substr(0, max));
  for (char& c : out)
    if (c == '\n' || c == '\r') c = ' ';
  return out;
}

bool NextLine(std::string_view* v, std::string_view* line) {
  const size_t nl = v->find('\n');
  if (nl == std::string_view::npos) return false;
  *line = v->substr(0, nl);
  v->remove_prefix(nl + 1);
  return true;
}

template <class T>
bool Num(std::string_view* s, T* out) {
  while (!s->empty() && s->front() == ' ') s->remove_prefix(1);
  auto [p, ec] = std::from_chars(s->data(), s->data() + s->size(), *out);
  if (ec != std::errc() || p == s->data()) return false;
  s->remove_prefix(static_cast<size_t>(p - s->data()));
  return true;
}

}  // namespace

std::string Seq20(uint64_t seq) {
  char buf[24];
  snprintf(buf, sizeof buf, "%020llu", static_cast<unsigned long long>(seq));
  return buf;
}
std::string OutPrefix(std::string_view endpoint) { return "out/" + std::string(endpoint) + "/"; }
std::string OutKey(std::string_view endpoint, uint64_t seq) { return OutPrefix(endpoint) + Seq20(seq); }
std::string PartPrefix(std::string_view endpoint, uint64_t seq) {
  return "part/" + std::string(endpoint) + "/" + Seq20(seq) + "/";
}
std::string PartKey(std::string_view endpoint, uint64_t seq, int part) {
  char buf[8];
  snprintf(buf, sizeof buf, "%04d", part);
  return PartPrefix(endpoint, seq) + buf;
}
std::string DeadPrefix(std::string_view endpoint) { return "dead/" + std::string(endpoint) + "/"; }
std::string DeadKey(std::string_view endpoint, uint64_t seq) { return DeadPrefix(endpoint) + Seq20(seq); }

bool SeqOfKey(std::string_view key, uint64_t* seq) {
  const size_t slash = key.rfind('/');
  if (slash == std::string_view::npos || key.size() - slash - 1 != 20) return false;
  std::string_view digits = key.substr(slash + 1);
  auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), *seq);
  return ec == std::errc() && p == digits.data() + digits.size();
}

std::string EncodeRecord(const Record& r) {
  std::string out;
  out.reserve(128 + r.body.size());
  out.append("W1 ")
      .append(std::to_string(r.attempts))
      .append(" ")
      .append(std::to_string(r.next_ms))
      .append(" ")
      .append(std::to_string(r.created_ms))
      .append(" ")
      .append(std::to_string(r.parts))
      .append("\n");
  out.append(OneLine(r.device, 512)).append("\n");
  out.append(OneLine(r.topic, 256)).append("\n");
  out.append(OneLine(r.event_id, 128)).append("\n");
  out.append(OneLine(r.last_error, 256)).append("\n");
  out.append(r.body);
  return out;
}

bool DecodeRecord(std::string_view v, Record* r, bool header_only) {
  std::string_view line;
  if (!NextLine(&v, &line) || line.substr(0, 3) != "W1 ") return false;
  line.remove_prefix(3);
  if (!Num(&line, &r->attempts) || !Num(&line, &r->next_ms) || !Num(&line, &r->created_ms) ||
      !Num(&line, &r->parts))
    return false;
  std::string_view device, topic, id, err;
  if (!NextLine(&v, &device) || !NextLine(&v, &topic) || !NextLine(&v, &id) || !NextLine(&v, &err)) return false;
  r->device.assign(device);
  r->topic.assign(topic);
  r->event_id.assign(id);
  r->last_error.assign(err);
  if (header_only) r->body.clear();
  else r->body.assign(v);
  return true;
}

}  // namespace orchard_webhook
