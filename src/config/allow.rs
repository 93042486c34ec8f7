//! `[client_auth.allow]` (and every other allow table) as the config file spells it. The lists
//! are compiled and matched by `policy::allow`; here they are input only.

use serde::Deserialize;

/// The lists as written in the config: a certificate is allowed if it matches one entry of
/// any list.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AllowConfig {
    /// Subject commonName values.
    #[serde(default)]
    pub common_names: Vec<String>,
    /// Subject organizationalUnitName values.
    #[serde(default)]
    pub organizational_units: Vec<String>,
    /// SAN dNSName values, compared case-insensitively.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// SAN URI values; a trailing `/*` matches one path prefix.
    #[serde(default)]
    pub uris: Vec<String>,
    /// SHA-256 of the leaf certificate DER, hex; colons and case are ignored.
    #[serde(default)]
    pub fingerprints_sha256: Vec<String>,
    /// SHA-256 of the leaf's SubjectPublicKeyInfo DER, base64 or hex.
    #[serde(default)]
    pub spki_sha256: Vec<String>,
}

impl AllowConfig {
    /// True when no list has an entry: every verified certificate is allowed.
    pub fn is_empty(&self) -> bool {
        self.common_names.is_empty()
            && self.organizational_units.is_empty()
            && self.dns_names.is_empty()
            && self.uris.is_empty()
            && self.fingerprints_sha256.is_empty()
            && self.spki_sha256.is_empty()
    }
}
