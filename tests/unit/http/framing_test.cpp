// http::RequestFramer on its own: every case is scanned whole and split at
// every byte boundary, which must not change the verdict.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "http/framing.h"

using orchard::http::RequestFramer;
using namespace std::string_literals;
using namespace std::string_view_literals;
using Outcome = RequestFramer::Outcome;

namespace {

RequestFramer::Limits SmallLimits() {
  RequestFramer::Limits l;
  l.max_header_bytes = 1024;
  l.max_body_bytes = 100;
  l.max_raw_bytes = 100 + 1024 + 1024;
  return l;
}

struct Verdict {
  Outcome outcome = Outcome::kNeedMore;
  int status = 0;
  size_t end = 0;  // offset just after the first request (kComplete)
  bool keep_alive = false;
};

// Scans wire in pieces of the given sizes (the last piece takes the rest).
Verdict ScanInPieces(const std::string& wire, const std::vector<size_t>& cuts) {
  RequestFramer f(SmallLimits());
  Verdict v;
  size_t off = 0;
  size_t piece = 0;
  while (off < wire.size()) {
    size_t n = piece < cuts.size() ? std::min(cuts[piece], wire.size() - off) : wire.size() - off;
    ++piece;
    auto step = f.Scan(wire.data() + off, n);
    if (step.outcome == Outcome::kError) {
      v.outcome = Outcome::kError;
      v.status = f.error_status();
      return v;
    }
    off += step.consumed;
    if (step.outcome == Outcome::kComplete) {
      v.outcome = Outcome::kComplete;
      v.end = off;
      v.keep_alive = f.keep_alive();
      return v;
    }
  }
  return v;
}

// The verdict must be the same whole and split at every position.
Verdict Scan(const std::string& wire) {
  Verdict whole = ScanInPieces(wire, {});
  for (size_t cut = 1; cut < wire.size(); ++cut) {
    Verdict split = ScanInPieces(wire, {cut});
    INFO("split at " << cut);
    REQUIRE(static_cast<int>(split.outcome) == static_cast<int>(whole.outcome));
    REQUIRE(split.status == whole.status);
    REQUIRE(split.end == whole.end);
  }
  std::vector<size_t> ones(wire.size(), 1);
  Verdict bytewise = ScanInPieces(wire, ones);
  REQUIRE(static_cast<int>(bytewise.outcome) == static_cast<int>(whole.outcome));
  REQUIRE(bytewise.status == whole.status);
  REQUIRE(bytewise.end == whole.end);
  return whole;
}

int ErrorOf(const std::string& wire) {
  Verdict v = Scan(wire);
  return v.outcome == Outcome::kError ? v.status : 0;
}

}  // namespace

TEST_CASE("framer finds the end of well-framed requests", "[http][framing]") {
  const std::string next = "GET /next HTTP/1.1\r\n\r\n";
  struct Case {
    const char* name;
    std::string request;
  };
  const std::vector<Case> cases = {
      {"no body", "GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n"},
      {"content-length", "PUT /mdm HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"},
      {"content-length lower case, OWS", "PUT /mdm HTTP/1.1\r\ncontent-length:\t 5 \r\n\r\nhello"},
      {"content-length zero", "POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n"},
      {"chunked", "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n"},
      {"chunked with trailer", "POST /x HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n1\r\na\r\n0\r\nX-T: 1\r\n\r\n"},
      {"body limit exactly", "PUT /x HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + std::string(100, 'b')},
      {"obs-text in a value", "GET / HTTP/1.1\r\nUser-Agent: caf\xc3\xa9 \xff\r\n\r\n"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    Verdict v = Scan(c.request + next);
    REQUIRE(v.outcome == Outcome::kComplete);
    CHECK(v.end == c.request.size());  // the next request starts right after
  }
}

TEST_CASE("framer keep-alive follows the version and the Connection header", "[http][framing]") {
  CHECK(Scan("GET / HTTP/1.1\r\n\r\n").keep_alive);
  CHECK_FALSE(Scan("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
  CHECK_FALSE(Scan("GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n").keep_alive);
  CHECK_FALSE(Scan("GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n").keep_alive);
  CHECK(Scan("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n").keep_alive);
  CHECK_FALSE(Scan("GET / HTTP/1.0\r\n\r\n").keep_alive);
  CHECK(Scan("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
  CHECK_FALSE(Scan("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
}

TEST_CASE("framer refuses ambiguous or malformed framing", "[http][framing]") {
  struct Case {
    const char* name;
    std::string wire;
    int status;
  };
  const std::vector<Case> cases = {
      {"negative content-length", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
      {"signed content-length", "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello", 400},
      {"hex content-length", "POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\nhello", 400},
      {"content-length list", "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello", 400},
      {"content-length with inner space", "POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n", 400},
      {"empty content-length", "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", 400},
      {"content-length overflow", "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400},
      {"conflicting content-length", "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 0\r\n\r\nhello", 400},
      {"repeated content-length", "POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello", 400},
      {"content-length and chunked", "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
      {"chunked and content-length", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400},
      {"duplicate transfer-encoding", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"chunked in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
      {"unsupported transfer-encoding", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
      {"chunk size hex overflow", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n", 400},
      {"chunk size 2^64+1", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\na\r\n0\r\n\r\n", 400},
      {"chunk size beyond the body limit", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n", 413},
      {"chunks adding up beyond the body limit",
       "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n32\r\n" + std::string(50, 'x') + "\r\n33\r\n", 413},
      {"negative chunk size", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nabc\r\n", 400},
      {"0x chunk size", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n", 400},
      {"chunk extension", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n", 400},
      {"empty chunk size", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", 400},
      {"chunk longer than its size", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", 400},
      {"content-length beyond the body limit", "PUT / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413},
      {"bare LF ends a header", "GET / HTTP/1.1\nHost: x\r\n\r\n", 400},
      {"bare LF inside headers", "GET / HTTP/1.1\r\nHost: x\nContent-Length: 5\r\n\r\n", 400},
      {"bare CR", "GET / HTTP/1.1\r\nHost: x\rContent-Length: 5\r\n\r\n", 400},
      {"obs-fold", "GET / HTTP/1.1\r\nX-A: 1\r\n Content-Length: 5\r\n\r\n", 400},
      {"space before colon", "GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\nhello", 400},
      {"NUL in a header value", "GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n"s, 400},
      {"escape in a header value", "GET / HTTP/1.1\r\nX-A: \x1b[31m\r\n\r\n", 400},
      {"control byte in target", "GET /a\x1b[31m HTTP/1.1\r\n\r\n", 400},
      {"NUL in target", "GET /a\0 HTTP/1.1\r\n\r\n"s, 400},
      {"leading empty line", "\r\nGET / HTTP/1.1\r\n\r\n", 400},
      {"unknown version", "GET / HTTP/2.0\r\n\r\n", 505},
      {"garbage version", "GET / HTTX/1.1\r\n\r\n", 400},
      {"missing version", "GET /\r\n\r\n", 400},
      {"empty target", "GET  HTTP/1.1\r\n\r\n", 400},
      {"header block too large", "GET / HTTP/1.1\r\nX-A: " + std::string(2000, 'a') + "\r\n\r\n", 431},
      {"trailer too large",
       "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-A: " + std::string(2000, 'a') + "\r\n\r\n", 431},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    CHECK(ErrorOf(c.wire) == c.status);
  }
}

TEST_CASE("framer keeps the request target for logs, control bytes included", "[http][framing]") {
  RequestFramer f(SmallLimits());
  const std::string wire = "GET /p\x1b[31m\0\xff HTTP/1.1\r\n\r\n"s;
  auto step = f.Scan(wire.data(), wire.size());
  REQUIRE(step.outcome == Outcome::kError);
  CHECK(f.error_status() == 400);
  CHECK(f.target() == "/p\x1b[31m\0\xff"sv);
}

TEST_CASE("framer scans pipelined requests one after the other", "[http][framing]") {
  const std::string a = "PUT /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
  const std::string b = "POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n";
  const std::string c = "GET /c HTTP/1.1\r\nConnection: close\r\n\r\n";
  const std::string wire = a + b + c;
  RequestFramer f(SmallLimits());
  std::vector<std::string> seen;
  size_t off = 0;
  while (off < wire.size()) {
    auto step = f.Scan(wire.data() + off, wire.size() - off);
    REQUIRE(step.outcome == Outcome::kComplete);
    seen.push_back(std::string(f.target()));
    off += step.consumed;
    f.Reset();
  }
  CHECK(seen == std::vector<std::string>{"/a", "/b", "/c"});
}
