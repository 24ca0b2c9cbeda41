#include "http/framing.h"

#include <strings.h>

#include <algorithm>
#include <cstring>

namespace orchard::http {
namespace {

constexpr size_t kMaxMethod = 20;
constexpr size_t kMaxFieldValue = 256;  // Content-Length, Transfer-Encoding, Connection
constexpr size_t kMaxChunkDigits = 15;  // 15 hex digits stay below 2^60

// RFC 9110 tchar: the characters of a method or a field name.
bool IsTchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

// A byte allowed in a field value: HTAB, visible ASCII, space, obs-text.
bool IsValueByte(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7F); }

int HexValue(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string_view TrimOws(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

void RequestFramer::Reset() {
  state_ = State::kMethod;
  error_status_ = 0;
  error_reason_ = "";
  method_len_ = 0;
  head_bytes_ = 0;
  raw_bytes_ = 0;
  target_.clear();
  bad_target_ = false;
  version_len_ = 0;
  http10_ = false;
  field_ = Field::kOther;
  name_len_ = 0;
  value_.clear();
  has_length_ = false;
  has_te_ = false;
  te_chunked_ = false;
  conn_close_ = false;
  conn_keep_alive_ = false;
  content_length_ = 0;
  remaining_ = 0;
  body_bytes_ = 0;
  chunk_size_ = 0;
  chunk_digits_ = 0;
}

bool RequestFramer::keep_alive() const {
  if (conn_close_) return false;
  return http10_ ? conn_keep_alive_ : true;
}

RequestFramer::Step RequestFramer::Fail(int status, const char* reason) {
  error_status_ = status;
  error_reason_ = reason;
  return {Outcome::kError, 0};
}

bool RequestFramer::EndOfField() {
  const std::string_view v = TrimOws(value_);
  switch (field_) {
    case Field::kOther:
      return true;
    case Field::kContentLength: {
      if (has_length_) {
        Fail(400, "duplicate Content-Length");
        return false;
      }
      has_length_ = true;
      if (v.empty() || v.size() > 18 ||
          !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        Fail(400, "invalid Content-Length");
        return false;
      }
      uint64_t n = 0;
      for (char c : v) n = n * 10 + static_cast<uint64_t>(c - '0');
      content_length_ = n;
      return true;
    }
    case Field::kTransferEncoding:
      if (has_te_) {
        Fail(400, "duplicate Transfer-Encoding");
        return false;
      }
      has_te_ = true;
      te_chunked_ = IEquals(v, "chunked");
      return true;
    case Field::kConnection: {
      std::string_view rest = v;
      while (!rest.empty()) {
        const size_t comma = rest.find(',');
        const std::string_view token = TrimOws(rest.substr(0, comma));
        if (IEquals(token, "close")) conn_close_ = true;
        else if (IEquals(token, "keep-alive")) conn_keep_alive_ = true;
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
      }
      return true;
    }
  }
  return true;
}

RequestFramer::Step RequestFramer::EndOfHeaders(size_t consumed) {
  if (has_te_) {
    if (has_length_) return Fail(400, "Content-Length with Transfer-Encoding");
    if (http10_) return Fail(400, "Transfer-Encoding in HTTP/1.0");
    if (!te_chunked_) return Fail(501, "unsupported Transfer-Encoding");
    state_ = State::kChunkSize;
    head_bytes_ = 0;  // now counts the trailer
    return {Outcome::kNeedMore, consumed};
  }
  if (has_length_) {
    if (content_length_ > limits_.max_body_bytes) return Fail(413, "body exceeds the configured limit");
    if (content_length_ > 0) {
      state_ = State::kFixedBody;
      remaining_ = content_length_;
      return {Outcome::kNeedMore, consumed};
    }
  }
  return {Outcome::kComplete, consumed};
}

RequestFramer::Step RequestFramer::Scan(const char* data, size_t size) {
  size_t i = 0;
  while (i < size) {
    // Body bytes are skipped in bulk, never looked at.
    if (state_ == State::kFixedBody || state_ == State::kChunkData) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, size - i));
      i += n;
      remaining_ -= n;
      raw_bytes_ += n;
      if (raw_bytes_ > limits_.max_raw_bytes) return Fail(413, "request exceeds the configured limit");
      if (remaining_ == 0) {
        if (state_ == State::kFixedBody) return {Outcome::kComplete, i};
        state_ = State::kChunkDataCr;
      }
      continue;
    }
    // A header value of no interest: scan to its end in a tight loop.
    if (state_ == State::kValue && field_ == Field::kOther) {
      size_t j = i;
      while (j < size && data[j] != '\r' && IsValueByte(static_cast<unsigned char>(data[j]))) ++j;
      head_bytes_ += j - i;
      raw_bytes_ += j - i;
      i = j;
      if (head_bytes_ > limits_.max_header_bytes) return Fail(431, "header block too large");
      if (i == size) break;
    }
    const auto c = static_cast<unsigned char>(data[i++]);
    ++raw_bytes_;
    if (raw_bytes_ > limits_.max_raw_bytes) return Fail(413, "request exceeds the configured limit");
    // Chunk-size lines only count towards max_raw_bytes.
    const bool head = state_ < State::kFixedBody || state_ >= State::kTrailerStart;
    if (head && ++head_bytes_ > limits_.max_header_bytes) return Fail(431, "header block too large");
    switch (state_) {
      case State::kMethod:
        if (c == ' ' && method_len_ > 0) state_ = State::kTarget;
        else if (!IsTchar(c) || ++method_len_ > kMaxMethod) return Fail(400, "malformed request line");
        break;
      case State::kTarget:
        // A control byte is refused at the end of the target, so that the log
        // shows the whole (escaped) target.
        if (c == ' ' || c == '\n') {
          if (bad_target_) return Fail(400, "control byte in request target");
          if (c == '\n' || target_.empty()) return Fail(400, "malformed request line");
          state_ = State::kVersion;
          break;
        }
        if (target_.size() < kTargetKeep) target_.push_back(static_cast<char>(c));
        if (c < 0x20 || c == 0x7F) bad_target_ = true;
        break;
      case State::kVersion:
        if (c == '\r') {
          const std::string_view v(version_, version_len_);
          if (v == "HTTP/1.1") http10_ = false;
          else if (v == "HTTP/1.0") http10_ = true;
          else if (v.size() == 8 && v.substr(0, 5) == "HTTP/" && v[6] == '.' && v[5] >= '0' &&
                   v[5] <= '9' && v[7] >= '0' && v[7] <= '9')
            return Fail(505, "HTTP version not supported");
          else return Fail(400, "malformed request line");
          state_ = State::kRequestLineLf;
        } else if (version_len_ < sizeof version_) {
          version_[version_len_++] = static_cast<char>(c);
        } else {
          return Fail(400, "malformed request line");
        }
        break;
      case State::kRequestLineLf:
        if (c != '\n') return Fail(400, "bare CR in request line");
        state_ = State::kLineStart;
        break;
      case State::kLineStart:
        if (c == '\r') {
          state_ = State::kHeadersLf;
        } else if (IsTchar(c)) {
          name_[0] = static_cast<char>(c);
          name_len_ = 1;
          state_ = State::kName;
        } else if (c == ' ' || c == '\t') {
          return Fail(400, "obsolete header line folding");
        } else {
          return Fail(400, "malformed header line");
        }
        break;
      case State::kName:
        if (c == ':') {
          const std::string_view name(name_, std::min(name_len_, sizeof name_));
          field_ = Field::kOther;
          if (name_len_ <= sizeof name_) {
            if (IEquals(name, "content-length")) field_ = Field::kContentLength;
            else if (IEquals(name, "transfer-encoding")) field_ = Field::kTransferEncoding;
            else if (IEquals(name, "connection")) field_ = Field::kConnection;
          }
          value_.clear();
          state_ = State::kValue;
        } else if (IsTchar(c)) {
          if (name_len_ < sizeof name_) name_[name_len_] = static_cast<char>(c);
          ++name_len_;
        } else {
          return Fail(400, "malformed header name");
        }
        break;
      case State::kValue:
        if (c == '\r') {
          state_ = State::kLineLf;
        } else if (!IsValueByte(c)) {
          return Fail(400, "control byte in header value");
        } else if (field_ != Field::kOther) {
          if (value_.size() >= kMaxFieldValue) return Fail(400, "header value too long");
          value_.push_back(static_cast<char>(c));
        }
        break;
      case State::kLineLf:
        if (c != '\n') return Fail(400, "bare CR in header line");
        if (!EndOfField()) return {Outcome::kError, 0};
        state_ = State::kLineStart;
        break;
      case State::kHeadersLf: {
        if (c != '\n') return Fail(400, "bare CR in header line");
        Step s = EndOfHeaders(i);
        if (s.outcome != Outcome::kNeedMore) return s;
        break;
      }
      case State::kChunkSize: {
        const int h = HexValue(c);
        if (h >= 0) {
          if (++chunk_digits_ > kMaxChunkDigits) return Fail(400, "chunk size too large");
          chunk_size_ = chunk_size_ * 16 + static_cast<uint64_t>(h);
        } else if (c == '\r' && chunk_digits_ > 0) {
          if (body_bytes_ + chunk_size_ > limits_.max_body_bytes)
            return Fail(413, "body exceeds the configured limit");
          state_ = State::kChunkSizeLf;
        } else if (c == ';' && chunk_digits_ > 0) {
          return Fail(400, "chunk extensions are not supported");
        } else {
          return Fail(400, "invalid chunk size");
        }
        break;
      }
      case State::kChunkSizeLf:
        if (c != '\n') return Fail(400, "invalid chunk size");
        if (chunk_size_ == 0) {
          state_ = State::kTrailerStart;
        } else {
          body_bytes_ += chunk_size_;
          remaining_ = chunk_size_;
          state_ = State::kChunkData;
        }
        chunk_size_ = 0;
        chunk_digits_ = 0;
        break;
      case State::kChunkDataCr:
        if (c != '\r') return Fail(400, "chunk longer than its size");
        state_ = State::kChunkDataLf;
        break;
      case State::kChunkDataLf:
        if (c != '\n') return Fail(400, "chunk longer than its size");
        state_ = State::kChunkSize;
        break;
      case State::kTrailerStart:
        if (c == '\r') state_ = State::kTrailerEndLf;
        else if (IsTchar(c)) state_ = State::kTrailer;
        else return Fail(400, "malformed trailer");
        break;
      case State::kTrailer:
        if (c == '\r') state_ = State::kTrailerLf;
        else if (!IsValueByte(c)) return Fail(400, "control byte in trailer");
        break;
      case State::kTrailerLf:
        if (c != '\n') return Fail(400, "bare CR in trailer");
        state_ = State::kTrailerStart;
        break;
      case State::kTrailerEndLf:
        if (c != '\n') return Fail(400, "bare CR in trailer");
        return {Outcome::kComplete, i};
      case State::kFixedBody:
      case State::kChunkData:
        break;  // handled above
    }
  }
  return {Outcome::kNeedMore, size};
}

}  // namespace orchard::http
