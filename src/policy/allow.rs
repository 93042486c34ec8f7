//! An identity allow-list (`[client_auth.allow]`, a route's `allow`, the report-only
//! candidate's): compiled from the config's lists, and matched against a verified identity.
//!
//! A certificate is allowed when it matches at least one entry of any list; an empty
//! allow-list allows every certificate that verifies. Entries are parsed once, here, so a
//! malformed pin is a config error, never a silent non-match.

use std::collections::HashSet;

use base64::Engine as _;

use crate::config::AllowConfig;
use crate::identity::ClientIdentity;

/// A malformed allow-list entry: the key under the allow table (e.g.
/// `fingerprints_sha256[1]`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct AllowError {
    /// The entry, relative to its table.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// A compiled allow-list.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    /// The lists as written, for reports and for telling whether a reload changed them.
    source: AllowConfig,
    pub(crate) common_names: HashSet<String>,
    pub(crate) organizational_units: HashSet<String>,
    /// Lower-cased: DNS names compare case-insensitively.
    pub(crate) dns_names: HashSet<String>,
    pub(crate) uris_exact: HashSet<String>,
    /// Prefixes from entries ending in `/*`, each ending in `/`.
    pub(crate) uri_prefixes: Vec<String>,
    pub(crate) fingerprints: HashSet<[u8; 32]>,
    pub(crate) spkis: HashSet<[u8; 32]>,
}

impl PartialEq for AllowList {
    /// Two lists are the same when they were written the same (the compiled sets follow).
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for AllowList {}

impl AllowList {
    /// The lists as they were written.
    pub fn source(&self) -> &AllowConfig {
        &self.source
    }

    /// Parses the config lists.
    pub fn compile(c: &AllowConfig) -> Result<AllowList, AllowError> {
        // Security: an empty entry would match a certificate whose CN (or OU, SAN…) is the
        // empty string, which no operator means to allow; it is almost always a templating
        // slip such as `common_names = ["${CLIENT_CN}"]` with the variable unset. Refuse it.
        for (key, list) in [
            ("common_names", &c.common_names),
            ("organizational_units", &c.organizational_units),
            ("dns_names", &c.dns_names),
            ("uris", &c.uris),
            ("fingerprints_sha256", &c.fingerprints_sha256),
            ("spki_sha256", &c.spki_sha256),
        ] {
            if let Some(i) = list.iter().position(|e| e.trim().is_empty()) {
                return Err(AllowError {
                    key: format!("{key}[{i}]"),
                    message: "is empty; remove the entry (an empty allow-list allows every verified certificate)".to_owned(),
                });
            }
        }
        let mut list = AllowList {
            source: c.clone(),
            common_names: c.common_names.iter().cloned().collect(),
            organizational_units: c.organizational_units.iter().cloned().collect(),
            dns_names: c.dns_names.iter().map(|d| d.to_ascii_lowercase()).collect(),
            ..Default::default()
        };
        for (i, uri) in c.uris.iter().enumerate() {
            match uri.strip_suffix('*') {
                // Only one trailing `/*`: a `*` anywhere else would be matched literally, so an
                // entry like `spiffe://*/ns/*` would silently allow nothing (or the wrong thing).
                Some(prefix)
                    if prefix.ends_with('/') && prefix.len() > 1 && !prefix.contains('*') =>
                {
                    list.uri_prefixes.push(prefix.to_owned())
                }
                Some(_) => return Err(wildcard_error(i, uri)),
                None if uri.contains('*') => return Err(wildcard_error(i, uri)),
                None => {
                    list.uris_exact.insert(uri.clone());
                }
            }
        }
        for (i, fp) in c.fingerprints_sha256.iter().enumerate() {
            let hex: String = fp
                .chars()
                .filter(|c| *c != ':' && !c.is_whitespace())
                .collect();
            let bytes = decode_32_hex(&hex).ok_or_else(|| AllowError {
                key: format!("fingerprints_sha256[{i}]"),
                message: format!(
                    "{fp:?} is not a SHA-256 fingerprint: expected 64 hex digits (colons allowed), e.g. from `openssl x509 -noout -fingerprint -sha256 -in client.pem`"
                ),
            })?;
            list.fingerprints.insert(bytes);
        }
        for (i, pin) in c.spki_sha256.iter().enumerate() {
            let bytes = decode_spki_pin(pin).ok_or_else(|| AllowError {
                key: format!("spki_sha256[{i}]"),
                message: format!(
                    "{pin:?} is not a SHA-256 public-key pin: expected 64 hex digits or 44 base64 characters, e.g. from `openssl x509 -in client.pem -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`"
                ),
            })?;
            list.spkis.insert(bytes);
        }
        Ok(list)
    }

    /// True when no entry is configured.
    pub fn is_empty(&self) -> bool {
        self.common_names.is_empty()
            && self.organizational_units.is_empty()
            && self.dns_names.is_empty()
            && self.uris_exact.is_empty()
            && self.uri_prefixes.is_empty()
            && self.fingerprints.is_empty()
            && self.spkis.is_empty()
    }
}

fn wildcard_error(i: usize, uri: &str) -> AllowError {
    AllowError {
        key: format!("uris[{i}]"),
        message: format!("{uri:?}: a wildcard is only allowed as a trailing \"/*\""),
    }
}

fn decode_32_hex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn decode_spki_pin(pin: &str) -> Option<[u8; 32]> {
    // Accept curl's `--pinnedpubkey sha256//…` form too, as operators copy it from there.
    let pin = pin.trim();
    let pin = pin.strip_prefix("sha256//").unwrap_or(pin);
    // Hex, with or without colons (as `openssl dgst -c` prints it).
    let hex: String = pin.chars().filter(|c| *c != ':').collect();
    if hex.len() == 64 {
        if let Some(b) = decode_32_hex(&hex) {
            return Some(b);
        }
    }
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(pin).ok())
        .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
}

impl AllowList {
    /// Whether a verified identity may connect: it matches at least one entry of any list,
    /// or the allow-list is empty.
    pub fn allows(&self, id: &ClientIdentity) -> bool {
        if self.is_empty() {
            return true;
        }
        self.fingerprints.contains(&id.fingerprint)
            || self.spkis.contains(&id.spki_sha256)
            || id
                .common_names
                .iter()
                .any(|cn| self.common_names.contains(cn))
            || id
                .organizational_units
                .iter()
                .any(|ou| self.organizational_units.contains(ou))
            || id
                .dns_names
                .iter()
                .any(|d| self.dns_names.contains(&d.to_ascii_lowercase()))
            || id.uris.iter().any(|u| {
                self.uris_exact.contains(u)
                    || self
                        .uri_prefixes
                        .iter()
                        .any(|p| u.len() > p.len() && u.starts_with(p.as_str()))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key an invalid allow-list is refused with.
    fn refused_key(f: impl FnOnce(&mut AllowConfig)) -> String {
        let mut c = AllowConfig::default();
        f(&mut c);
        AllowList::compile(&c).unwrap_err().key
    }

    #[test]
    fn malformed_entries_name_the_entry() {
        assert_eq!(
            refused_key(|c| c.fingerprints_sha256 = vec![hex::encode([1u8; 32]), "AB:CD".into()]),
            "fingerprints_sha256[1]"
        );
        assert_eq!(
            refused_key(|c| c.spki_sha256 = vec!["tooshort".into()]),
            "spki_sha256[0]"
        );
        assert_eq!(
            refused_key(|c| c.uris = vec!["spiffe://*.org/x".into()]),
            "uris[0]"
        );
        assert_eq!(
            refused_key(|c| {
                c.uris = vec!["spiffe://example.org/*".into(), "spiffe://*/ns/*".into()]
            }),
            "uris[1]"
        );
        assert_eq!(
            refused_key(|c| c.common_names = vec!["a".into(), " ".into()]),
            "common_names[1]"
        );
    }
}

#[cfg(test)]
mod allow_tests {
    //! Matching an identity against an allow-list.
    use super::*;

    fn id() -> ClientIdentity {
        ClientIdentity {
            subject: "CN=my-client".into(),
            issuer: "CN=ca".into(),
            serial_hex: "01".into(),
            common_names: vec!["my-client".into()],
            organizational_units: vec!["batch".into()],
            dns_names: vec!["API.example.com".into()],
            uris: vec!["spiffe://example.org/ns/a".into()],
            fingerprint: [7; 32],
            spki_sha256: [9; 32],
            not_before: 0,
            not_after: 0,
            leaf: Vec::new().into(),
            intermediates: vec![],
        }
    }

    fn allow(f: impl FnOnce(&mut AllowConfig)) -> AllowList {
        let mut c = AllowConfig::default();
        f(&mut c);
        AllowList::compile(&c).unwrap()
    }

    #[test]
    fn empty_allows_all() {
        assert!(allow(|_| {}).allows(&id()));
    }

    #[test]
    fn each_kind_matches_and_misses() {
        assert!(allow(|c| c.common_names = vec!["my-client".into()]).allows(&id()));
        assert!(!allow(|c| c.common_names = vec!["other".into()]).allows(&id()));
        assert!(allow(|c| c.organizational_units = vec!["batch".into()]).allows(&id()));
        assert!(allow(|c| c.dns_names = vec!["api.EXAMPLE.com".into()]).allows(&id()));
        assert!(allow(|c| c.uris = vec!["spiffe://example.org/*".into()]).allows(&id()));
        assert!(!allow(|c| c.uris = vec!["spiffe://other.org/*".into()]).allows(&id()));
        assert!(allow(|c| c.uris = vec!["spiffe://example.org/ns/a".into()]).allows(&id()));
        let fp = hex::encode_upper([7u8; 32]);
        let colons: Vec<_> = fp
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        assert!(allow(|c| c.fingerprints_sha256 = vec![colons.join(":")]).allows(&id()));
        let b64 = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        assert!(allow(|c| c.spki_sha256 = vec![b64.clone()]).allows(&id()));
        assert!(allow(|c| c.spki_sha256 = vec![format!("sha256//{b64}")]).allows(&id()));
        assert!(allow(|c| c.spki_sha256 = vec![hex::encode([9u8; 32])]).allows(&id()));
    }

    #[test]
    fn uri_prefix_stops_at_a_path_boundary() {
        let list = allow(|c| c.uris = vec!["spiffe://example.org/ns/*".into()]);
        let mut i = id();
        i.uris = vec!["spiffe://example.org/ns-evil/a".into()];
        assert!(!list.allows(&i));
        i.uris = vec!["spiffe://example.org/ns/".into()];
        assert!(!list.allows(&i), "the bare prefix is not a path under it");
    }

    #[test]
    fn spki_hex_with_colons_is_accepted() {
        let colons = hex::encode([9u8; 32])
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        assert!(allow(|c| c.spki_sha256 = vec![colons]).allows(&id()));
    }
}
