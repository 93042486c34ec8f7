//! The reference documents generated from the code: `docs/configuration.md` from the config's
//! key table, `docs/troubleshooting.md` from the rejection reasons, and `docs/metrics.md` from
//! the metrics registry. A test (`tests/it/generated_docs.rs`) fails when a file in `docs/`
//! differs from what this module generates, and rewrites them when asked to:
//!
//! ```text
//! UPDATE_DOCS=1 cargo test --test it generated_docs
//! ```

/// One generated document.
#[derive(Debug, Clone)]
pub struct GeneratedDoc {
    /// Its path in the repository, e.g. `docs/configuration.md`.
    pub path: &'static str,
    /// Where it is generated from, for the test's message.
    pub source: &'static str,
    /// Its whole text.
    pub text: String,
}

/// Every generated document, as the code would write it now.
pub fn generated() -> Vec<GeneratedDoc> {
    vec![
        GeneratedDoc {
            path: "docs/configuration.md",
            source: "src/config/keys.rs (KEYS)",
            text: crate::config::keys::reference_markdown(),
        },
        GeneratedDoc {
            path: "docs/troubleshooting.md",
            source: "src/tls/reason.rs (the reasons! table) and src/viewer/reason.rs",
            text: crate::tls::reason::troubleshooting_markdown()
                + &crate::viewer::reason::troubleshooting_markdown(),
        },
        GeneratedDoc {
            path: "docs/metrics.md",
            source: "src/metrics.rs (Metrics::new)",
            text: crate::metrics::reference_markdown(),
        },
    ]
}
