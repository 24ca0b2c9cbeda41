// Status and Result<T>: the error currency at every module boundary.
// A Status is either Ok or carries a code and a human-readable message.
// There is no default constructor: success is always spelled Status::Ok().
// Thread-safety: value types, no shared state.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace orchard {

enum class Code {
  kOk = 0,
  kInvalidArgument,   // malformed input from a client or a caller
  kNotFound,
  kAlreadyExists,
  kPermissionDenied,  // authenticated but not allowed (e.g. certificate bound elsewhere)
  kUnauthenticated,   // identity missing or invalid
  kTooLarge,          // input over a configured limit
  kUnavailable,       // dependency not configured or temporarily down
  kIo,                // storage or network failure
  kResourceExhausted, // out of disk space (or another resource) for now: retry later
  kInternal,
  kFailedPrecondition,  // refused in the current state (e.g. a change needing force=true)
};

const char* CodeName(Code code);

class [[nodiscard]] Status {
 public:
  static Status Ok() { return Status(Code::kOk, {}); }
  static Status InvalidArgument(std::string m) { return Status(Code::kInvalidArgument, std::move(m)); }
  static Status NotFound(std::string m) { return Status(Code::kNotFound, std::move(m)); }
  static Status AlreadyExists(std::string m) { return Status(Code::kAlreadyExists, std::move(m)); }
  static Status PermissionDenied(std::string m) { return Status(Code::kPermissionDenied, std::move(m)); }
  static Status Unauthenticated(std::string m) { return Status(Code::kUnauthenticated, std::move(m)); }
  static Status TooLarge(std::string m) { return Status(Code::kTooLarge, std::move(m)); }
  static Status Unavailable(std::string m) { return Status(Code::kUnavailable, std::move(m)); }
  static Status Io(std::string m) { return Status(Code::kIo, std::move(m)); }
  static Status ResourceExhausted(std::string m) { return Status(Code::kResourceExhausted, std::move(m)); }
  static Status Internal(std::string m) { return Status(Code::kInternal, std::move(m)); }
  static Status FailedPrecondition(std::string m) { return Status(Code::kFailedPrecondition, std::move(m)); }

  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // "InvalidArgument: message"
  std::string ToString() const;

 private:
  Code code_;
  std::string message_;
};

// Result<T> holds a T or a non-Ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit on purpose
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: must not be Ok

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOkStatus = Status::Ok();
    return ok() ? kOkStatus : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  // By value: `for (auto& x : F().value())` must not dangle (a reference into
  // the temporary Result would).
  T value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &std::get<T>(v_); }
  const T* operator->() const { return &std::get<T>(v_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace orchard

#define ORCHARD_RETURN_IF_ERROR(expr)          \
  do {                                         \
    ::orchard::Status _st = (expr);            \
    if (!_st.ok()) return _st;                 \
  } while (0)
