// Enrollment profiles: the .mobileconfig a device installs to join Orchard.
//
// BuildProfile turns ProfileSettings into the profile plist (Apple's
// TopLevel, com.apple.mdm, com.apple.security.scep / .pkcs12 / .root payload
// schemas); ProfileSigner wraps the serialized XML in a CMS SignedData with the
// content embedded, as devices expect of a verified profile; ParseMachineInfo
// reads the CMS-signed machine-info plist a device POSTs to the enrollment URL.
//
// Identifiers: every PayloadIdentifier is the configured base identifier plus
// the payload kind (".mdm", ".scep", ".pkcs12", ".anchor.<sha256 prefix>"), and
// every PayloadUUID is derived (StableUuid) from the base identifier, the kind
// and the settings that name what the payload points at (URLs, topic, CA
// fingerprint, anchor certificate), never from secrets or per-device values.
// Regenerating the profile with the same settings therefore yields the same
// identifiers and UUIDs, so a device replaces what it has instead of adding a
// duplicate.
//
// Thread-safety: BuildProfile and ParseMachineInfo are pure; a ProfileSigner is
// immutable after creation and Sign may be called from several threads.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "enroll/ca.h"
#include "enroll/challenges.h"
#include "enroll/issued.h"
#include "plist/plist.h"
#include "store/store.h"
#include "util/status.h"

namespace orchard::enroll {

// The identity payload the MDM payload's IdentityCertificateUUID names.
enum class IdentityKind {
  kScep,    // com.apple.security.scep: the device makes its own key and asks Orchard's SCEP server
  kPkcs12,  // com.apple.security.pkcs12: a key + certificate made by the server, in the profile
};
const char* IdentityKindName(IdentityKind kind);

// One [name, value] pair of an X.500 subject in SCEP's Subject array form
// (name: C, L, ST, O, OU, CN or a dotted OID).
struct SubjectPart {
  std::string name;
  std::string value;
};

struct ScepPayload {
  std::string url;   // the SCEP endpoint, e.g. https://mdm.example.com/scep
  std::string name;  // SCEP "Name" (CA identifier); empty: left out
  std::vector<SubjectPart> subject;  // each part becomes its own RDN
  std::string challenge;             // secret; empty: left out
  int key_size = 2048;               // 1024 | 2048 | 4096 (Apple's range)
  int key_usage = 5;                 // 1 signing | 4 encryption
  int retries = 3;
  int retry_delay_seconds = 10;
  std::string ca_cert_der;  // CAFingerprint = SHA-256 of it; empty: left out
};

struct Pkcs12Payload {
  std::string der;        // the PKCS#12 bundle (secret)
  std::string password;   // secret; empty: left out
  std::string file_name = "identity.p12";
};

struct AnchorCert {
  std::string der;        // a CA certificate the device should trust (DER)
  std::string file_name;  // optional PayloadCertificateFileName
};

struct ProfileSettings {
  // Base of every PayloadIdentifier (reverse DNS, e.g. com.example.mdm.orchard).
  std::string identifier;
  std::string display_name = "Orchard MDM enrollment";
  std::string organization;
  std::string description = "Enrolls this device in Orchard device management.";
  // Apple requires https:// for both; http:// is accepted for development and
  // tests (devices refuse it).
  std::string server_url;
  std::string checkin_url;  // empty: left out (devices then check in at server_url)
  std::string topic;        // the push certificate's topic, com.apple.mgmt.…
  IdentityKind identity = IdentityKind::kScep;
  ScepPayload scep;      // when identity is kScep
  Pkcs12Payload pkcs12;  // when identity is kPkcs12
  std::vector<AnchorCert> anchors;
  bool sign_message = true;
  int access_rights = 8191;
  bool check_out_when_removed = true;
  std::vector<std::string> server_capabilities = {"com.apple.mdm.per-user-connections",
                                                  "com.apple.mdm.bootstraptoken"};
};

// The profile as a plist (TopLevel dict). InvalidArgument naming the setting
// when one is missing or out of Apple's range (identifier, server_url, topic,
// scep.url, key size, PKCS#12 bytes, an empty anchor, access rights 0, ...).
Result<plist::Value> BuildProfile(const ProfileSettings& settings);

// ToXml of BuildProfile, checked with plist::CheckXmlStrings (a value a device
// could not parse is InvalidArgument, naming the key).
Result<std::string> BuildProfileXml(const ProfileSettings& settings);

// A UUID (upper case, version 5 layout) derived from SHA-256 of the parts:
// the same parts always give the same UUID.
std::string StableUuid(const std::vector<std::string_view>& parts);

// The PayloadIdentifier / PayloadUUID BuildProfile gives the identity payload
// (what the MDM payload's IdentityCertificateUUID is).
std::string IdentityPayloadUuid(const ProfileSettings& settings);

// CMS SignedData (DER, content embedded, SHA-256, signer certificate and chain
// included) over a profile, made with a configured signing certificate.
class ProfileSigner {
 public:
  // cert_pem: the signing certificate; key_pem: its private key (RSA or EC);
  // chain_pem: intermediate certificates to include (may be empty).
  // InvalidArgument when a PEM does not parse or the key does not match.
  static Result<std::unique_ptr<ProfileSigner>> FromPem(std::string_view cert_pem, std::string_view key_pem,
                                                        std::string_view chain_pem);
  ~ProfileSigner();
  ProfileSigner(const ProfileSigner&) = delete;
  ProfileSigner& operator=(const ProfileSigner&) = delete;

  // DER CMS SignedData with content embedded. Internal on an OpenSSL failure.
  Result<std::string> Sign(std::string_view content) const;
  // Subject of the signing certificate (one line, for logs).
  const std::string& subject() const;

 private:
  struct Impl;
  explicit ProfileSigner(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// What a device says about itself when it asks for a profile (OTA profile
// service and Automated Device Enrollment: a CMS-signed plist).
struct MachineInfo {
  std::string udid;      // required
  std::string serial;    // SERIAL
  std::string product;   // PRODUCT, e.g. iPhone15,2
  std::string version;   // VERSION (build), e.g. 22B83
  std::string imei, meid, language;
  std::string challenge;        // CHALLENGE (OTA profile service), if any
  std::string signer_subject;   // the signing certificate's subject (one line)
  std::string signer_issuer;    // its issuer (one line)
};

// Reads a DER (or base64 of DER) CMS SignedData with the machine-info plist
// embedded. Checks that the signature is intact over the content with the
// signer certificate inside the message; does NOT verify that certificate's
// chain (Apple's device CAs are not available offline). InvalidArgument with
// the reason for anything else: not CMS, no content, no signer certificate, a
// signature that does not verify, a plist that does not parse, no UDID or a
// UDID that is not 1-64 characters of [A-Za-z0-9-].
Result<MachineInfo> ParseMachineInfo(std::string_view body, const plist::Limits& limits = {});

// Builds the CMS-signed machine-info body a device would POST (tests, the
// simulator): a plist {UDID, SERIAL, PRODUCT, VERSION, ...} signed with
// cert_pem/key_pem. Internal on an OpenSSL failure.
Result<std::string> SignMachineInfo(const MachineInfo& info, std::string_view cert_pem, std::string_view key_pem);

// ---- The enrollment endpoint: /mdm/enroll on the device listener.
//
//   GET  /mdm/enroll[?token=T][&challenge=C]
//   POST /mdm/enroll[?token=T]   body: CMS-signed machine info (application/pkcs7-signature)
//
// Guard: with a token configured, a request needs it (?token= or
// "Authorization: Bearer T", constant-time compare) or a valid SCEP challenge
// (?challenge=, or CHALLENGE inside the machine info); otherwise 403. Without a
// token anyone may fetch the profile (the SCEP challenge still guards issuance).
//
// Which SCEP Challenge the profile carries:
//   1. POST with machine info: a new one-time challenge bound to its UDID (the
//      certificate SCEP issues for it records that UDID);
//   2. GET ?challenge=C: C itself (checked, not consumed: SCEP consumes it);
//   3. the static challenge (enroll.scep_challenge) when configured;
//   4. otherwise a new one-time challenge for any device.
// With the PKCS#12 identity the server makes the key and certificate itself
// (recorded like SCEP issuance, with the UDID when known) and no challenge is used.
//
// Answers: 200 application/x-apple-aspen-config (CMS-signed when a signer is
// configured), 400 bad machine info, 403 guard, 405 method, 503 no push
// certificate (no topic) or the profile cannot be made (reason in the body).
struct EnrollOptions {
  // Everything but the per-request parts: topic, SCEP challenge and subject,
  // CAFingerprint (from the CA) and the PKCS#12 bundle are filled per request,
  // and so are server_url, checkin_url and scep.url when left empty (from the
  // request's base_url).
  ProfileSettings profile;
  std::string token;              // "" = no token guard (secret)
  std::string static_challenge;   // "" = none (secret)
  std::string subject_cn_prefix = "Orchard device";  // CN = prefix + " " + UDID (or a random id)
  int64_t challenge_ttl_seconds = 3600;              // one-time challenges made here
  int64_t pkcs12_validity_days = 365;
  size_t max_body_bytes = 64 * 1024;                 // machine info
};

struct EnrollDeps {
  const DeviceCa* ca;          // borrowed
  Challenges* challenges;      // borrowed
  IssuedCerts* issued;         // borrowed (PKCS#12 identities are recorded here)
  store::Store* store;         // borrowed
  const ProfileSigner* signer; // borrowed; null: profiles are served unsigned
  // The push topic profiles carry; nullopt when no push certificate is uploaded.
  std::function<Result<std::optional<std::string>>()> topic;
};

struct EnrollRequest {
  std::string method;         // GET | POST
  // scheme://host[:port] the device reached the server at; fills the URLs the
  // options leave empty (server_url: + "/mdm/connect", checkin_url: +
  // "/mdm/checkin", scep.url: + "/scep"). "" when the options name them all.
  std::string base_url;
  std::string token;          // from ?token= or the Authorization header ("" = none)
  std::string challenge;      // ?challenge= ("" = none)
  std::string content_type;
  std::string body;
};

// Why a request was refused or how it was served, for metrics and logs (never a secret).
enum class EnrollOutcome : int {
  kServed = 0,       // GET
  kServedDevice,     // POST with machine info: per-device challenge or identity
  kForbidden,        // 403: token / challenge
  kBadRequest,       // 400: machine info
  kMethod,           // 405
  kUnavailable,      // 503: no push certificate, or settings a device would refuse
  kInternal,         // 500: storage or OpenSSL
  kCount
};
const char* EnrollOutcomeName(EnrollOutcome o);

struct EnrollReply {
  int status = 200;
  std::string content_type;
  std::string body;
  EnrollOutcome outcome = EnrollOutcome::kInternal;
  std::string reason;  // for logs and the body of refusals; never a secret
  std::string udid;    // from the machine info, when any
  bool signed_profile = false;
};

class ProfileService {
 public:
  ProfileService(EnrollOptions options, const EnrollDeps& deps);
  // Thread-safe: one HTTP worker per call.
  EnrollReply Handle(const EnrollRequest& request, int64_t now_ms);
  // Makes the profile for a caller that is already trusted (orchardctl through
  // the admin API, renewal by InstallProfile): same as an authorized GET, or, with
  // udid, as a POST from that device. Returns the served bytes.
  EnrollReply Make(const std::string& base_url, const std::string& udid, int64_t now_ms);
  // The profile renewing udid's identity (ctx:renewal_profile, InstallProfile):
  // its one-time challenge (or PKCS#12 identity) is bound to udid and marked as
  // the renewal of the certificate renews_sha256, so the new certificate
  // replaces that one in place (protocol::IssuedInfo::renews_sha256).
  EnrollReply MakeRenewal(const std::string& base_url, const std::string& udid, const std::string& renews_sha256,
                          int64_t now_ms);

 private:
  EnrollReply Serve(const std::string& base_url, const std::string& udid, const std::string& presented_challenge,
                    int64_t now_ms, const std::string& renews_sha256);

  EnrollOptions options_;
  EnrollDeps deps_;
};

}  // namespace orchard::enroll
