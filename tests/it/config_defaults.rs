//! Every default written in the key table (`config::keys::KEYS`, from which
//! docs/configuration.md is generated) is the value the config applies when the key is left
//! out. Here rather than in `config`, because a route's keys mean their compiled route
//! (`policy`, a layer above).

use mtls_shield::config::keys::KEYS;
use mtls_shield::config::Config;
use mtls_shield::policy::Policy;

/// A config with every optional table present once (an extra upstream, a route, the
/// report-only candidate, the admin listener, the viewer trust), each with only its required
/// keys.
const BASE: &str = r#"
    [listener]
    address = "127.0.0.1:8443"
    certificate = "s.pem"
    private_key = "s.key"
    [client_auth]
    truststore = "t.pem"
    [client_auth.report_only]
    [upstream]
    url = "http://127.0.0.1:8080"
    [upstreams.b]
    url = "http://127.0.0.1:8081"
    [[routes]]
    upstream = "b"
    [admin]
    address = "127.0.0.1:9901"
    [viewer]
    truststore = "v.pem"
    [viewer.edges]
    common_names = ["edge"]
"#;

/// `text` with `key` (dotted, as in [`KEYS`]) set to the TOML value `value`.
fn with_key(text: &str, key: &str, value: &str) -> String {
    let mut doc: toml::Table = toml::from_str(text).unwrap();
    let value: toml::Value =
        toml::from_str::<toml::Table>(&format!("v = {value}")).unwrap()["v"].clone();
    let parts: Vec<&str> = key.split('.').collect();
    let mut table = &mut doc;
    for part in &parts[..parts.len() - 1] {
        let next = match *part {
            "<name>" => "b",
            p => p,
        };
        table = match table
            .entry(next.trim_end_matches("[]"))
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(t) => t,
            toml::Value::Array(a) => a[0].as_table_mut().unwrap(),
            v => panic!("{key}: {part} is {v:?}"),
        };
    }
    table.insert(parts[parts.len() - 1].to_owned(), value);
    toml::to_string(&doc).unwrap()
}

fn load(text: &str) -> (Config, Policy) {
    let c = Config::from_toml(text, std::path::Path::new("/etc/s.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let p = Policy::compile(&c).unwrap();
    (c, p)
}

#[test]
fn every_default_in_the_table_is_the_default_the_config_applies() {
    let (base, base_policy) = load(BASE);
    let mut checked = 0;
    for key in KEYS {
        let Some(value) = key.default.toml() else {
            continue;
        };
        let (c, p) = load(&with_key(BASE, key.name, &value));
        // A route's keys are kept as written (an Option); what they mean is the compiled
        // route, so the policy is compared for them.
        if key.name.starts_with("routes[]") {
            assert_eq!(p, base_policy, "{} = {value} is not its default", key.name);
        } else {
            assert_eq!(c, base, "{} = {value} is not its default", key.name);
        }
        checked += 1;
    }
    assert!(checked > 30, "only {checked} defaults were checked");
}
