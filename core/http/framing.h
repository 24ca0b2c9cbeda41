// Incremental HTTP/1.x request framing check (RFC 9112), run on the raw bytes
// of a connection before Pistache parses them. It decides where each request
// ends and refuses anything whose framing is ambiguous, so that a request can
// never be read two ways (request smuggling) and Pistache's lenient parser
// only ever sees one well-framed request at a time:
//   - request line: METHOD SP target SP HTTP/1.0|HTTP/1.1 CRLF; no control
//     byte or DEL in the target (refused once the target ends, so that logs
//     show all of it); another HTTP version: 505;
//   - header lines end in CRLF (a bare CR or LF, obs-fold, a space before
//     the colon, a control byte other than HTAB in a value: 400);
//   - Content-Length: digits only, at most once (negative, signed, hex, a
//     list or a second Content-Length header: 400); above the body limit: 413
//     as soon as the header block is complete;
//   - Transfer-Encoding: only "chunked", at most once, not with
//     Content-Length (400), not in HTTP/1.0 (400); anything else: 501;
//     chunk sizes are hex digits only (no sign, no 0x, no extension; more than
//     15 digits: 400) and the decoded body obeys the body limit (413);
//   - the header block (and a chunked trailer) is bounded (431).
// After an error the connection must be answered and closed: the rest of its
// bytes cannot be trusted to start a new request.
// Reads nothing twice and copies nothing but the first bytes of the target
// (for logs). Not thread-safe: one instance per connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace orchard::http {

class RequestFramer {
 public:
  struct Limits {
    size_t max_header_bytes = 64 * 1024;  // request line + headers (and a chunked trailer)
    size_t max_body_bytes = 8 * 1024 * 1024;  // decoded body
    size_t max_raw_bytes = SIZE_MAX;  // whole request on the wire (chunk framing included)
  };
  enum class Outcome { kNeedMore, kComplete, kError };
  struct Step {
    Outcome outcome;
    size_t consumed;  // bytes of data that belong to the current request
  };

  explicit RequestFramer(const Limits& limits) : limits_(limits) {}

  // Scans the next bytes of the connection. kNeedMore: all of data belongs to
  // the current request. kComplete: the request ends after `consumed` bytes;
  // call Reset() before scanning the rest. kError: answer error_status() and
  // close; do not call Scan again before Reset().
  Step Scan(const char* data, size_t size);
  // Prepares for the next request on the connection.
  void Reset();

  int error_status() const { return error_status_; }
  const char* error_reason() const { return error_reason_; }
  // Valid once the header block is complete: HTTP/1.1 unless "Connection:
  // close"; HTTP/1.0 only with "Connection: keep-alive".
  bool keep_alive() const;
  bool http10() const { return http10_; }
  // True once any byte of a request has been seen.
  bool started() const { return state_ != State::kMethod || method_len_ != 0; }
  // The request target as received so far (at most kTargetKeep bytes), for logs.
  std::string_view target() const { return target_; }
  static constexpr size_t kTargetKeep = 256;

 private:
  // Order matters: header states, then kFixedBody and the chunk states, then
  // the trailer states.
  enum class State : uint8_t {
    kMethod, kTarget, kVersion, kRequestLineLf,
    kLineStart, kName, kValue, kLineLf, kHeadersLf,
    kFixedBody,
    kChunkSize, kChunkSizeLf, kChunkData, kChunkDataCr, kChunkDataLf,
    kTrailerStart, kTrailer, kTrailerLf, kTrailerEndLf,
  };
  enum class Field : uint8_t { kOther, kContentLength, kTransferEncoding, kConnection };

  // Records the error; returns the kError step.
  Step Fail(int status, const char* reason);
  // A complete header line: checks and records the fields framing depends
  // on. False (after Fail) if the line is refused.
  bool EndOfField();
  // The header block is complete: chooses how the body is framed.
  Step EndOfHeaders(size_t consumed);

  Limits limits_;
  State state_ = State::kMethod;
  int error_status_ = 0;
  const char* error_reason_ = "";
  size_t method_len_ = 0;
  size_t head_bytes_ = 0;  // request line + headers so far (then trailer bytes)
  size_t raw_bytes_ = 0;   // the whole request so far
  std::string target_;
  bool bad_target_ = false;
  char version_[8] = {};
  size_t version_len_ = 0;
  bool http10_ = false;
  // The header being read.
  Field field_ = Field::kOther;
  char name_[18] = {};
  size_t name_len_ = 0;
  std::string value_;  // value of an interesting header only (bounded)
  // What the headers said.
  bool has_length_ = false;
  bool has_te_ = false;
  bool te_chunked_ = false;
  bool conn_close_ = false;
  bool conn_keep_alive_ = false;
  uint64_t content_length_ = 0;
  // Body progress.
  uint64_t remaining_ = 0;  // fixed body or current chunk
  uint64_t body_bytes_ = 0;
  uint64_t chunk_size_ = 0;
  size_t chunk_digits_ = 0;
};

}  // namespace orchard::http
