//! The config loader on arbitrary text: `Config::from_toml`, then `Policy::compile` (the
//! allow-lists and routes), must return a config or an error that names the file, never panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mtls_shield::config::Config;
use mtls_shield::policy::Policy;

fuzz_target!(|text: &str| {
    let path = Path::new("/etc/mtls-shield/fuzz.toml");
    let loaded = Config::from_toml(text, path)
        .and_then(|c| Policy::compile(&c).map(|_| c));
    match loaded {
        Ok(c) => {
            // Whatever validated must be internally consistent.
            assert!(c.listener.limits.max_connections >= 1);
            assert!(c.listener.limits.max_header_bytes >= 1024);
            assert!(!c.forward.client_cert_headers.is_empty());
            assert!(c.listener.certificate.is_absolute());
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("/etc/mtls-shield/fuzz.toml"), "{msg}");
            assert!(!msg.contains('\n'), "error must be one line: {msg:?}");
        }
    }
});
