//! Why a viewer's certificate was refused: the handshake's reasons with a `viewer_` prefix
//! (`viewer_unknown_ca`, `viewer_revoked`, …), and the one reason only a forwarded chain can
//! have. Metrics, the access log and `verify --viewer` use these codes.

use crate::tls::Reason;

/// A viewer refusal's reason. The string forms are a stable contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ViewerReason {
    /// The handshake's check refused the chain (or, for `viewer_no_certificate` and
    /// `viewer_bad_encoding`, the headers): the same reason, for the viewer.
    Chain(Reason),
    /// The headers carry more certificates than a viewer chain may have.
    ChainTooLong,
}

impl ViewerReason {
    /// `viewer_` and the handshake's code, or `viewer_chain_too_long`.
    pub fn as_str(self) -> &'static str {
        match self {
            ViewerReason::Chain(r) => r.viewer_code(),
            ViewerReason::ChainTooLong => "viewer_chain_too_long",
        }
    }

    /// What the refusal means, in one line.
    pub fn explain(self) -> &'static str {
        match self {
            ViewerReason::Chain(Reason::NoCertificate) => "the request carries no viewer certificate, on a route that requires one (or on a connection that is not one of viewer.edges)",
            ViewerReason::Chain(Reason::BadEncoding) => "a viewer header is not a certificate in a form the edge sends (RFC 9440 :BASE64: or URL-encoded PEM), appears twice, or contradicts another (PEM and Sha256 describe different certificates)",
            ViewerReason::Chain(Reason::NotAllowed) => "the viewer's chain verifies, but it matches neither [viewer.allow] nor the route's viewer_allow",
            ViewerReason::Chain(Reason::UnknownCa) => "the viewer's chain does not lead to a certificate in viewer.truststore (with the intermediates sent and viewer.intermediates), or breaks a CA's constraints on the way",
            ViewerReason::Chain(Reason::Revoked) => "a viewer CRL (viewer.crls, viewer.crl_urls) or an OCSP answer lists this certificate, or one of its CAs",
            ViewerReason::Chain(Reason::RevocationUnknown) => "no usable revocation answer for a certificate on the viewer's path: its CRL is past nextUpdate, require_crl is on and none covers it, or OCSP gave no answer",
            ViewerReason::Chain(Reason::BadSignature) => "a signature in the viewer's chain does not verify, or its key is one the crypto provider cannot use",
            ViewerReason::Chain(Reason::Other) => "see the detail in the log line",
            ViewerReason::Chain(r) => r.explain(),
            ViewerReason::ChainTooLong => "the viewer headers carry more than 4 certificates",
        }
    }

    /// Every reason, in a stable order (for documentation).
    pub fn all() -> impl Iterator<Item = ViewerReason> {
        Reason::ALL
            .iter()
            .copied()
            .filter(|r| applies_to_viewers(*r))
            .map(ViewerReason::Chain)
            .chain(std::iter::once(ViewerReason::ChainTooLong))
    }
}

impl std::fmt::Display for ViewerReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a handshake reason can be a viewer's: those about the certificate, not about the
/// connection.
fn applies_to_viewers(r: Reason) -> bool {
    !matches!(
        r,
        Reason::HandshakeTimeout
            | Reason::NotTls
            | Reason::ProtocolVersion
            | Reason::SourceNotAllowed
    )
}

/// The viewer section of `docs/troubleshooting.md`: every `viewer_*` code with its meaning.
pub fn troubleshooting_markdown() -> String {
    let mut out = String::from(VIEWER_INTRO);
    out.push_str("\n| code | meaning |\n|---|---|\n");
    for r in ViewerReason::all() {
        out.push_str(&format!("| `{}` | {} |\n", r.as_str(), r.explain()));
    }
    out
}

/// What a viewer refusal leaves behind, before the codes.
const VIEWER_INTRO: &str = r#"
## Refused viewer certificates

With `[viewer]`, every request from an edge (a connection matching `[viewer.edges]`) has its
viewer certificate judged. A refusal is a `403 Forbidden` that names no identity; the upstream
is not contacted, and the connection stays open for the edge's other viewers. It is counted in
`mtls_shield_viewer_requests_total{result="rejected",reason=…,route=…}`, logged at INFO
(target `mtls_shield::request`, `viewer certificate refused; 403`, with the reason, the
viewer's fingerprint and a `detail=`), and its access line carries `viewer_reason=`,
`viewer_subject=` and `viewer_fingerprint=`.

The codes are the handshake's, with a `viewer_` prefix, for the viewer's certificate and
`[viewer]`'s truststore, CRLs, OCSP and allow-lists; the sections above say what each means
and what to check. `mtls-shield verify --viewer --config FILE viewer.pem [--chain int.pem]
[--path /route]` (or `--header 'Name: value'` with the headers as the edge sent them) gives the
same verdict offline.
"#;
