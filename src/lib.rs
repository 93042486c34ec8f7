//! mtls-shield: a reverse proxy that terminates mutual TLS in front of an HTTP app.
//!
//! rustls verifies every client certificate (chain, expiry, clientAuth EKU, CRLs and an
//! identity allow-list) during the handshake; a refused client gets no HTTP byte and the
//! upstream never hears of it. Accepted requests stream through hyper to the upstream with
//! the verified identity in headers the client cannot forge.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod identity;
pub mod metrics;
pub mod pki;
pub mod proxy;
pub mod tls;
pub mod verify;
pub mod x509;
