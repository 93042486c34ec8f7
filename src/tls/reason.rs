//! The one place where a refused handshake is classified into a stable reason code.
//! Logs, metrics and `mtls-shield verify` all use these codes, so operators can grep,
//! alert and troubleshoot on the same words everywhere.

use std::fmt;

/// Declares [`Reason`] from one table: each reason's code, its one-line explanation (the
/// variant's doc, `explain()`, `verify`'s output), what to check and how to confirm it. The
/// troubleshooting reference (`docs/troubleshooting.md`) is generated from the same table, so
/// the three can never disagree.
macro_rules! reasons {
    ($(
        $variant:ident = $code:literal {
            explain: $explain:literal,
            check: $check:literal,
            confirm: $confirm:literal $(,)?
        }
    )*) => {
        /// Why a handshake was refused. The string forms are a stable contract.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $(
                #[doc = $explain]
                $variant,
            )*
        }

        impl Reason {
            /// Every reason, in a stable order (for documentation and metrics
            /// pre-registration).
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),*];

            /// The stable code, e.g. `unknown_ca`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $code,)*
                }
            }

            /// The code of the same refusal of a viewer's certificate (`[viewer]`), e.g.
            /// `viewer_unknown_ca`.
            pub fn viewer_code(self) -> &'static str {
                match self {
                    $(Reason::$variant => concat!("viewer_", $code),)*
                }
            }

            /// What the refusal means for an operator, in one line. `verify` prints it, and
            /// it opens the reason's section of the troubleshooting reference.
            pub fn explain(self) -> &'static str {
                match self {
                    $(Reason::$variant => $explain,)*
                }
            }

            /// What to check, in Markdown (the troubleshooting reference).
            pub fn what_to_check(self) -> &'static str {
                match self {
                    $(Reason::$variant => $check,)*
                }
            }

            /// A command that confirms it, in Markdown (the troubleshooting reference).
            pub fn confirm_with(self) -> &'static str {
                match self {
                    $(Reason::$variant => $confirm,)*
                }
            }
        }
    };
}

reasons! {
    NoCertificate = "no_certificate" {
        explain: "no client certificate was presented",
        check: "The client is configured with a certificate and key (CloudFront: origin mTLS is enabled on this origin and the certificate is in ACM in us-east-1). Clients pick a certificate by the CA names the shield advertises (the truststore's subjects): a client whose certificate's issuer is not among them may send none, and with `client_auth.advertise_ca_names = false` none are sent, so a client that chooses by CA name finds no match.",
        confirm: "`openssl s_client -connect HOST:8443 -servername HOST -cert client.pem -key client.key` (look for \"Acceptable client certificate CA names\")",
    }
    UnknownCa = "unknown_ca" {
        explain: "the chain does not lead to a certificate in client_auth.truststore, or breaks a CA's basicConstraints, pathLen or name constraints on the way (if the client sends intermediates, pass them with --chain)",
        check: "The issuing CA (or its root) is in the truststore; the client sends its intermediates; every CA certificate on the path has `keyUsage = keyCertSign, cRLSign` (the log's `detail=` names a CA without it). Self-signed client certificates land here too.",
        confirm: "`openssl verify -CAfile truststore.pem -untrusted intermediates.pem client.pem`; `mtls-shield verify --config FILE client.pem --chain intermediates.pem`",
    }
    Expired = "expired" {
        explain: "the certificate, or one in its chain, is past its notAfter at the checked time",
        check: "Renew it. `mtls_shield_certificate_expiry_timestamp_seconds` warns ahead for the server certificate and the anchors; an open connection is closed when its client certificate expires.",
        confirm: "`openssl x509 -in client.pem -noout -enddate`",
    }
    NotYetValid = "not_yet_valid" {
        explain: "the certificate, or one in its chain, is before its notBefore at the checked time",
        check: "The clock of this host (NTP) and of the issuing CA; a certificate issued seconds ago with notBefore = now.",
        confirm: "`openssl x509 -in client.pem -noout -startdate; date -u`",
    }
    Revoked = "revoked" {
        explain: "a CRL in client_auth.crls lists this certificate",
        check: "The log's `serial=` against the CRLs in force (files, fetched URLs and distribution points, every partition) or the OCSP answer; whether the right certificate was deployed.",
        confirm: "`openssl crl -in crl.pem -noout -text | grep -A1 'Serial Number: <serial>'`; `mtls-shield verify --config FILE client.pem`",
    }
    RevocationUnknown = "revocation_unknown" {
        explain: "no usable CRL for its issuer: the issuer's CRL is past its nextUpdate, or require_crl is on and client_auth.crls has none for it",
        check: "The CRL refresh job and `mtls_shield_crl_next_update_timestamp_seconds`; with `require_crl`, a CRL in force for the client's issuer and partition (the log's `detail=` names the distribution points); with `ocsp`, whether the responder answered (`mtls_shield_ocsp_requests_total`).",
        confirm: "`openssl crl -in crl.pem -noout -issuer -nextupdate`; `mtls-shield check --config FILE`",
    }
    BadPurpose = "bad_purpose" {
        explain: "it is not a client certificate: its extendedKeyUsage lacks clientAuth, its keyUsage lacks digitalSignature, or it is a CA certificate",
        check: "Issue it with `extendedKeyUsage = clientAuth`, `keyUsage = digitalSignature` and `basicConstraints = CA:FALSE`; check the client is not configured with the CA file by mistake.",
        confirm: "`openssl x509 -in client.pem -noout -ext extendedKeyUsage,keyUsage,basicConstraints` (want \"TLS Web Client Authentication\", \"Digital Signature\", \"CA:FALSE\")",
    }
    BadSignature = "bad_signature" {
        explain: "a signature in the chain, or the client's handshake signature, does not verify",
        check: "The issuer name matches a trusted CA but another key signed it (a re-keyed or impostor CA: after a CA re-key, trust both), or the certificate was altered; or the client's key is one the provider cannot verify with (RSA under 2048 bits, an unsupported curve: the `detail=` names the key). Client keys should be RSA-2048+ or ECDSA P-256/P-384.",
        confirm: "`openssl verify -CAfile truststore.pem client.pem` (\"certificate signature failure\"); `openssl x509 -in client.pem -noout -text | grep 'Public-Key'`",
    }
    BadEncoding = "bad_encoding" {
        explain: "the certificate could not be parsed, is X.509 v1, or has a critical extension this proxy does not understand",
        check: "Re-issue it as X.509 v3 (OpenSSL: sign with `-extfile` or `-copy_extensions`), without unknown critical extensions.",
        confirm: "`openssl x509 -in client.pem -noout -text | grep -E 'Version|critical'`",
    }
    NotAllowed = "not_allowed" {
        explain: "the chain verifies, but the certificate matches no entry of [client_auth.allow]",
        check: "The logged subject, SANs and fingerprint against the allow-list. After a renewal a `fingerprints_sha256` pin must be updated; an `spki_sha256` pin survives when the key is kept. Rotate pins with `[client_auth.report_only]`.",
        confirm: "`mtls-shield verify --config FILE client.pem`; `openssl x509 -in client.pem -noout -subject -ext subjectAltName -fingerprint -sha256`",
    }
    HandshakeTimeout = "handshake_timeout" {
        explain: "the client did not finish the TLS handshake within listener.handshake_timeout",
        check: "Port scanners and TCP health checks that send a few bytes and stall; a path MTU problem that drops large handshake packets; a very slow client.",
        confirm: "`openssl s_client -connect HOST:8443 -servername HOST -cert client.pem -key client.key -state` (where it stops)",
    }
    NotTls = "not_tls" {
        explain: "the client did not speak TLS (plain HTTP, a scanner, or a PROXY header where none is configured)",
        check: "The client uses `https://`; CloudFront's origin protocol policy is \"HTTPS only\"; health checks use HTTPS or the admin `/healthz`; behind a balancer that sends PROXY headers, `listener.proxy_protocol` is set.",
        confirm: "`curl -v http://HOST:8443/` reproduces it",
    }
    ProtocolVersion = "protocol_version" {
        explain: "the client offered only TLS versions below 1.2",
        check: "Upgrade the client or its TLS library: only TLS 1.2 and 1.3 are enabled.",
        confirm: "`openssl s_client -connect HOST:8443 -tls1_2 …` succeeds where `-tls1_1` fails",
    }
    SourceNotAllowed = "source_not_allowed" {
        explain: "the connection came from an address outside listener.allow_sources (and allow_sources_file); it was closed before any TLS",
        check: "The peer in the log (logged at most once a second) against the list; whether `ip-ranges.json` is stale (refresh it); behind an NLB, whether `proxy_protocol` is on, so that the client's address and not the balancer's is checked.",
        confirm: "`mtls-shield check --config FILE` (prefix count); `openssl s_client -connect HOST:8443` shows \"read 0 bytes\"",
    }
    Other = "other" {
        explain: "see the detail in the log line (client abort, no shared cipher, I/O error)",
        check: "The `detail=` field. \"received fatal alert: UnknownCA\" or \"BadCertificate\" means the **client** does not trust the shield's server certificate.",
        confirm: "`openssl s_client -connect HOST:8443 -servername HOST -CAfile server-ca.pem -cert client.pem -key client.key`",
    }
}

/// `docs/troubleshooting.md`: one section per reason, from the table of [`Reason`].
pub fn troubleshooting_markdown() -> String {
    let mut out = String::from(TROUBLESHOOTING_INTRO);
    for &r in Reason::ALL {
        out.push_str(&format!(
            "\n## `{}`\n\n{}.\n\n**Check:** {}\n\n**Confirm:** {}\n",
            r.as_str(),
            capitalised(r.explain()),
            r.what_to_check(),
            r.confirm_with()
        ));
    }
    out
}

/// `s` with its first letter upper-case.
fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// What every refusal leaves behind, before the reasons.
const TROUBLESHOOTING_INTRO: &str = r#"# Troubleshooting refused handshakes

<!-- Generated from src/tls/reason.rs (the `reasons!` table). Do not edit: change the table,
     then run  UPDATE_DOCS=1 cargo test --test it generated_docs
-->

Every refused handshake is counted in `mtls_shield_handshakes_total{result="rejected",reason=…}`
and writes one connection-log line (target `mtls_shield::connection`, level WARN) with the
peer, the reason, the TLS version if one was negotiated, and, when a certificate was
presented, its subject, issuer, serial and SHA-256 fingerprint, and a `detail=` that says what
exactly failed:

```text
2026-11-24T03:39:53.739598Z  WARN mtls_shield::connection: handshake rejected peer=203.0.113.7:43452 reason="not_allowed" tls_version="TLSv1.3" subject="CN=other-client,O=Example" issuer="CN=Example Root CA,O=Example" serial="03E9" fingerprint=9c1e…4a7d detail="the chain verifies, but the certificate matches no allow-list entry"
```

The same codes are what `mtls-shield verify --config FILE client.pem [--chain intermediates.pem]`
prints, offline, for every certificate reason below; they label
`mtls_shield_connections_closed_total` when an open connection stops being trusted (a pin
removed, a CA gone, a CRL or OCSP answer that revokes it, an expiry), and those closings are
logged as `open connection no longer trusted; closing` with the same fields. Symptoms that are
not a refused handshake (403, 400 and 421 answers, `Too many open files`, a `/readyz` that
waits for a CRL) are in [operations.md](operations.md#when-something-is-wrong).
"#;

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_explanation() {
        let texts: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.explain()).collect();
        assert_eq!(texts.len(), Reason::ALL.len());
    }

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.as_str()));
            assert!(r
                .as_str()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }
}
