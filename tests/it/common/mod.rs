//! Shared integration-test harness: a PKI generated at test time (rcgen), a counting
//! upstream, the real `mtls-shield` binary on free loopback ports, and real clients (a
//! rustls + hyper client in Rust, plus helpers for curl and `openssl s_client`).
//!
//! Nothing here sleeps to pass: waits poll a condition until a deadline.
//!
//! By job: [`pki`], [`process`] (the binary), [`clients`], [`upstream`], [`crl_server`],
//! [`ocsp_responder`].
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Default deadline for waits.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `cond` until it is true or `deadline` passes; panics with `what` on timeout.
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for: {what}");
}

mod clients;
mod crl_server;
mod ocsp_responder;
mod pki;
mod process;
mod upstream;

pub use clients::*;
pub use crl_server::*;
pub use ocsp_responder::*;
pub use pki::*;
pub use process::*;
pub use upstream::*;
