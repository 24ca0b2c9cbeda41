// A simulated device enrolling the way Apple devices do: fetch the enrollment
// profile (GET, or POST of CMS-signed machine info), check and read it (CMS
// signature, SCEP and MDM payloads), get an identity certificate by SCEP with
// the profile's URL, Challenge, Subject and Keysize (checking the CA against
// CAFingerprint), then talk MDM to the profile's ServerURL/CheckInURL with the
// profile's Topic. Written on OpenSSL and libcurl, independent of the server's
// code.
//
// Thread-safety: the functions are reentrant; nothing is shared.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "plist/plist.h"
#include "sim/simulator.h"
#include "support/test_pki.h"
#include "util/status.h"

namespace orchard::sim {

// ProfileFetch (what to fetch, how to trust it) is in sim/simulator.h.

// What a device takes from the enrollment profile.
struct EnrollmentProfile {
  bool signed_profile = false;
  std::string signer_subject;
  std::string server_url, checkin_url, topic, identity_uuid;
  bool sign_message = false;
  std::string identity_type;  // com.apple.security.scep | com.apple.security.pkcs12
  // SCEP payload.
  std::string scep_url, scep_challenge;
  std::string scep_subject;  // "CN=x,O=y" (from the Subject array)
  int key_size = 2048;
  std::string ca_fingerprint;  // SHA-256 of the CA certificate (raw), "" when absent
  // PKCS#12 payload.
  std::string pkcs12_der, pkcs12_password;
  plist::Value plist;  // the whole profile
};

// Checks and reads a served profile body (DER CMS SignedData or a bare XML
// plist). InvalidArgument naming what is wrong: signature, trust, no MDM
// payload, an IdentityCertificateUUID that names no payload, missing keys.
Result<EnrollmentProfile> ReadProfile(std::string_view body, const ProfileFetch& fetch);

// Fetches and reads the profile. With fetch.machine_info the body is the
// device's machine info signed by attestation (a stand-in for the device's
// Apple-issued identity); attestation may be null otherwise. An answer other
// than 200 is an error whose message starts with "HTTP <status>: " and quotes
// the server's reason.
Result<EnrollmentProfile> FetchProfile(const ProfileFetch& fetch, const DeviceState& device,
                                       const testing::Identity* attestation);

// Fetches the profile, obtains the identity (SCEP, or the PKCS#12 inside), and
// creates the Device configured from the profile (base_url, checkin and
// connect paths, topic; the rest of base's settings kept). Does not
// Authenticate. *profile (if not null) receives what the profile said.
Result<std::unique_ptr<Device>> EnrollViaProfile(const SimConfig& base, DeviceState state, const ProfileFetch& fetch,
                                                 const testing::Identity* attestation,
                                                 EnrollmentProfile* profile = nullptr);

}  // namespace orchard::sim
