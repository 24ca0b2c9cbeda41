// The durable outbox in the plugin's key-value namespace.
//
//   out/<endpoint>/<20-digit event seq>       one pending delivery (Record)
//   part/<endpoint>/<20-digit seq>/<4 digits> body parts of a record larger than one value
//   dead/<endpoint>/<20-digit seq>            a dead letter (JSON summary)
//   meta/instance                             random id behind derived event ids
//
// Keys sort in stream order per endpoint. A record is written by on_event
// (committed with the checkpoint); the sender rewrites it after a failed
// attempt and removes it once delivered or dead. Pure functions: thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace orchard_webhook {

constexpr size_t kPartBytes = 60000;  // body bytes per value (values are limited to 64 KiB)

std::string Seq20(uint64_t seq);
std::string OutPrefix(std::string_view endpoint);
std::string OutKey(std::string_view endpoint, uint64_t seq);
std::string PartPrefix(std::string_view endpoint, uint64_t seq);
std::string PartKey(std::string_view endpoint, uint64_t seq, int part);
std::string DeadPrefix(std::string_view endpoint);
std::string DeadKey(std::string_view endpoint, uint64_t seq);

// The seq at the end of an out/ or dead/ key; false if malformed.
bool SeqOfKey(std::string_view key, uint64_t* seq);

struct Record {
  int attempts = 0;        // failed attempts so far
  int64_t next_ms = 0;     // not before (Unix ms); 0 = now
  int64_t created_ms = 0;  // the event's time (max age counts from here)
  int parts = 0;           // 0: body inline; else body in that many part keys
  std::string device;      // ordering group
  std::string topic;
  std::string event_id;
  std::string last_error;  // of the last failed attempt ("" if none)
  std::string body;        // inline body (parts == 0)
};

// "W1 attempts next_ms created_ms parts\n device\n topic\n event_id\n last_error\n body".
std::string EncodeRecord(const Record& r);
// Decodes the header; the body too unless header_only. False if malformed.
bool DecodeRecord(std::string_view value, Record* r, bool header_only);

}  // namespace orchard_webhook
