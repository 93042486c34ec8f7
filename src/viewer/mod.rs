//! Viewer certificates: the certificate an edge (CloudFront viewer mTLS, an ALB in mTLS
//! passthrough) forwards from each end user in request headers, verified on every request
//! with the handshake's own engine.
//!
//! - [`headers`]: reading the headers and decoding them into a chain, strictly;
//! - [`trust`]: a generation's viewer trust (anchors, CRLs, OCSP, `[viewer.allow]`) and the
//!   memo of viewers it verified;
//! - [`reason`]: the `viewer_*` reasons.
//!
//! It sits above `tls` (its verifier is [`crate::tls::verifier::ShieldVerifier`]) and below
//! `metrics` and `proxy`, which judges each request on an edge's connection.

pub mod headers;
pub mod reason;
pub mod trust;

pub use headers::{is_viewer_header, Chain, DecodeError, Presented};
pub use reason::ViewerReason;
pub use trust::{Viewer, ViewerRefusal, ViewerTrust};
