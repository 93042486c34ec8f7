//! The integration tests, gathered into one test binary (one module per area, the test
//! names unchanged), so the shared harness is compiled and linked once instead of once per
//! area.
//!
//! Every test starts the real `mtls-shield` binary (or the real server) on 127.0.0.1 with
//! free ports and a PKI generated at test time, and talks to it with real clients: rustls and
//! hyper in Rust, curl and `openssl s_client` from the machine.

// A test's unwrap is its assertion; the harness's `pub` items are shared between modules of
// this crate only.
#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

mod common;
mod rawtls;

mod allow_list;
mod config_defaults;
mod core_accept;
mod core_chain_crl;
mod core_config_errors;
mod core_demo;
mod core_forwarding;
mod core_openssl;
mod core_reject;
mod core_resumption;
mod crl_fetch;
mod crl_partitions;
mod crl_reload;
mod generated_docs;
mod identity_headers;
mod layering;
mod limits_body;
mod limits_flood;
mod limits_h2;
mod limits_timeouts;
mod live_trust;
mod logging;
mod ocsp;
mod ops_check;
mod ops_reload;
mod ops_shutdown;
mod ops_verify;
mod policy;
mod protocols_http;
mod protocols_websocket;
mod proxy_protocol;
mod reasons_metrics;
mod routes;
mod smuggling;
mod tls_posture;
mod trust_gaps;
mod trust_page;
mod upstream_forms;
mod upstream_reuse;
mod verified_cache;
mod viewer;
