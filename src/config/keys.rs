//! Every key of the config file and what a reload does with it: `Live` keys take effect on
//! the next reload (SIGHUP, the file watcher, or a fetched CRL's rebuild), `Restart` keys keep
//! their running value and the reload warns that they changed. A test walks the whole schema
//! through the real deserializer and fails on a key that is in neither list, so a new key
//! cannot be added without deciding what a reload does with it.

/// What a reload does with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnReload {
    /// The new value is in force from the reload on.
    Live,
    /// The running value stays until a restart; the reload names the key in its warning.
    Restart,
}

/// Every key, dotted, with `<name>` for a user-chosen table name and `[]` for an array of
/// tables.
pub const KEYS: &[(&str, OnReload)] = &[
    ("listener.certificate", OnReload::Live),
    ("listener.private_key", OnReload::Live),
    ("listener.session_resumption", OnReload::Live),
    ("listener.handshake_timeout", OnReload::Live),
    ("listener.header_read_timeout", OnReload::Live),
    ("listener.idle_timeout", OnReload::Live),
    ("listener.shutdown_timeout", OnReload::Live),
    ("listener.max_header_bytes", OnReload::Live),
    ("listener.max_concurrent_streams", OnReload::Live),
    ("listener.max_request_body_bytes", OnReload::Live),
    ("listener.proxy_protocol", OnReload::Live),
    ("listener.require_sni_host_match", OnReload::Live),
    ("listener.allow_sources", OnReload::Live),
    ("listener.allow_sources_file", OnReload::Live),
    ("client_auth.truststore", OnReload::Live),
    ("client_auth.crls", OnReload::Live),
    ("client_auth.require_crl", OnReload::Live),
    ("client_auth.verified_chain_cache", OnReload::Live),
    ("client_auth.allow.common_names", OnReload::Live),
    ("client_auth.allow.organizational_units", OnReload::Live),
    ("client_auth.allow.dns_names", OnReload::Live),
    ("client_auth.allow.uris", OnReload::Live),
    ("client_auth.allow.fingerprints_sha256", OnReload::Live),
    ("client_auth.allow.spki_sha256", OnReload::Live),
    ("client_auth.crl_urls", OnReload::Live),
    ("client_auth.crl_refresh", OnReload::Live),
    ("client_auth.crl_fetch_timeout", OnReload::Live),
    ("client_auth.crl_max_bytes", OnReload::Live),
    ("client_auth.crl_cache_dir", OnReload::Live),
    ("client_auth.crl_ca", OnReload::Live),
    ("client_auth.crl_from_distribution_points", OnReload::Live),
    ("client_auth.advertise_ca_names", OnReload::Live),
    ("client_auth.ocsp", OnReload::Live),
    ("client_auth.ocsp_responder", OnReload::Live),
    ("client_auth.ocsp_timeout", OnReload::Live),
    ("client_auth.ocsp_soft_fail", OnReload::Live),
    ("client_auth.ocsp_refresh", OnReload::Live),
    ("client_auth.report_only.truststore", OnReload::Live),
    ("client_auth.report_only.crls", OnReload::Live),
    ("client_auth.report_only.allow.common_names", OnReload::Live),
    (
        "client_auth.report_only.allow.organizational_units",
        OnReload::Live,
    ),
    ("client_auth.report_only.allow.dns_names", OnReload::Live),
    ("client_auth.report_only.allow.uris", OnReload::Live),
    (
        "client_auth.report_only.allow.fingerprints_sha256",
        OnReload::Live,
    ),
    ("client_auth.report_only.allow.spki_sha256", OnReload::Live),
    ("upstream.url", OnReload::Live),
    ("upstream.connect_timeout", OnReload::Live),
    ("upstream.response_timeout", OnReload::Live),
    ("upstream.pool_idle_timeout", OnReload::Live),
    ("upstream.pool_max_idle", OnReload::Live),
    ("upstream.ca", OnReload::Live),
    ("upstream.client_certificate", OnReload::Live),
    ("upstream.client_key", OnReload::Live),
    ("upstream.server_name", OnReload::Live),
    ("upstreams.<name>.url", OnReload::Live),
    ("upstreams.<name>.connect_timeout", OnReload::Live),
    ("upstreams.<name>.response_timeout", OnReload::Live),
    ("upstreams.<name>.pool_idle_timeout", OnReload::Live),
    ("upstreams.<name>.pool_max_idle", OnReload::Live),
    ("upstreams.<name>.ca", OnReload::Live),
    ("upstreams.<name>.client_certificate", OnReload::Live),
    ("upstreams.<name>.client_key", OnReload::Live),
    ("upstreams.<name>.server_name", OnReload::Live),
    ("routes[].name", OnReload::Live),
    ("routes[].path_prefix", OnReload::Live),
    ("routes[].host", OnReload::Live),
    ("routes[].methods", OnReload::Live),
    ("routes[].upstream", OnReload::Live),
    ("routes[].allow.common_names", OnReload::Live),
    ("routes[].allow.organizational_units", OnReload::Live),
    ("routes[].allow.dns_names", OnReload::Live),
    ("routes[].allow.uris", OnReload::Live),
    ("routes[].allow.fingerprints_sha256", OnReload::Live),
    ("routes[].allow.spki_sha256", OnReload::Live),
    ("forward.client_cert_headers", OnReload::Live),
    ("forward.xfcc_include_cert", OnReload::Live),
    ("log.access_log", OnReload::Live),
    ("listener.address", OnReload::Restart),
    ("listener.max_connections", OnReload::Restart),
    ("admin.address", OnReload::Restart),
    ("log.level", OnReload::Restart),
    ("log.format", OnReload::Restart),
    ("reload.watch_interval", OnReload::Restart),
    ("runtime.worker_threads", OnReload::Restart),
];

/// The keys that need a restart, in table order.
pub fn restart_only() -> impl Iterator<Item = &'static str> {
    KEYS.iter()
        .filter(|(_, r)| *r == OnReload::Restart)
        .map(|(k, _)| *k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, PartialEq)]
    enum Seg {
        Table,
        Array,
        Map,
    }

    /// The fields the deserializer expects at `path`, from its deny_unknown_fields error;
    /// `None` when `path` is not a table of that kind.
    fn fields_at(path: &[(String, Seg)]) -> Option<Vec<String>> {
        let mut doc = String::new();
        let mut dotted: Vec<String> = Vec::new();
        for (name, seg) in path {
            dotted.push(name.clone());
            match seg {
                Seg::Array => doc.push_str(&format!("[[{}]]\n", dotted.join("."))),
                Seg::Map => dotted.push("probe_name".to_owned()),
                Seg::Table => {}
            }
        }
        if !dotted.is_empty() && path.last().is_some_and(|(_, s)| *s != Seg::Array) {
            doc.push_str(&format!("[{}]\n", dotted.join(".")));
        }
        doc.push_str("zz_probe_key = 1\n");
        let err = match toml::from_str::<super::super::raw::RawConfig>(&doc) {
            Ok(_) => return None,
            Err(e) => e.to_string(),
        };
        if !err.contains("unknown field `zz_probe_key`") {
            return None;
        }
        let list = err
            .split("expected one of ")
            .nth(1)
            .or_else(|| err.split("expected ").nth(1))?;
        let list = list.lines().next()?;
        Some(
            list.split([',', ' '])
                .filter_map(|f| f.trim().strip_prefix('`'))
                .filter_map(|f| f.strip_suffix('`'))
                .map(str::to_owned)
                .collect(),
        )
    }

    fn walk(path: &mut Vec<(String, Seg)>, out: &mut Vec<String>) {
        let Some(fields) = fields_at(path) else {
            return;
        };
        for f in fields {
            let mut found = false;
            for seg in [Seg::Table, Seg::Array, Seg::Map] {
                path.push((f.clone(), seg));
                if fields_at(path).is_some() {
                    walk(path, out);
                    found = true;
                }
                path.pop();
                if found {
                    break;
                }
            }
            if !found {
                let mut name: Vec<String> = Vec::new();
                for (n, seg) in path.iter() {
                    name.push(match seg {
                        Seg::Table => n.clone(),
                        Seg::Array => format!("{n}[]"),
                        Seg::Map => format!("{n}.<name>"),
                    });
                }
                name.push(f);
                out.push(name.join("."));
            }
        }
    }

    fn schema() -> Vec<String> {
        let mut out = Vec::new();
        walk(&mut Vec::new(), &mut out);
        out
    }

    #[test]
    fn every_key_of_the_schema_is_either_reloadable_or_named_by_the_restart_warning() {
        let keys = schema();
        assert!(keys.len() > 40, "the walk found too little: {keys:?}");
        let listed: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
        let missing: Vec<&String> = keys
            .iter()
            .filter(|k| !listed.contains(&k.as_str()))
            .collect();
        let stale: Vec<&&str> = listed
            .iter()
            .filter(|k| !keys.iter().any(|s| s == *k))
            .collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "config keys with no reload decision: {missing:#?}\nlisted keys the schema no longer has: {stale:#?}\nschema: {keys:#?}"
        );
    }
}
