//! Upstream forms: `https://` with its own CA, optional re-originated mTLS and
//! `server_name`, and `unix:/path.sock`; requests and the readiness probe work for each, and
//! every TLS failure fails closed with 502 (issue 5).

use std::path::Path;
use std::sync::Arc;

use crate::common::*;
use crate::rawtls::*;
use rustls::pki_types::PrivateKeyDer;

/// The upstream's own PKI, separate from the client-facing one: a CA, the app's server
/// certificate (for `app.internal`), and the proxy's client certificate for the app.
struct UpstreamPki {
    ca: Ca,
    app: Issued,
    proxy_client: Issued,
}

impl UpstreamPki {
    fn new(dir: &Path) -> UpstreamPki {
        let ca = Ca::root("Upstream CA");
        let app = ca.issue(Leaf::server().dns("app.internal"));
        let proxy_client = ca.issue(Leaf::client("mtls-shield-proxy"));
        std::fs::write(dir.join("upstream-ca.pem"), ca.pem()).unwrap();
        proxy_client.write(dir, "proxy-client");
        UpstreamPki {
            ca,
            app,
            proxy_client,
        }
    }

    /// The app's TLS config: its certificate, and (optionally) a required client
    /// certificate from the upstream CA.
    fn server_config(&self, require_client_cert: bool) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca.cert.der().clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(
            builder
                .with_single_cert(
                    vec![self.app.cert_der.clone()],
                    PrivateKeyDer::try_from(self.app.key_der.clone()).unwrap(),
                )
                .unwrap(),
        )
    }
}

fn tls_app(up: &UpstreamPki, require_client_cert: bool) -> App {
    App::start_on(
        Listen::Tls(up.server_config(require_client_cert)),
        |req| async move { full(200, format!("over tls: {}", req.uri().path())) },
    )
}

const MTLS_KEYS: &str = "ca = \"upstream-ca.pem\"\nclient_certificate = \"proxy-client.pem\"\nclient_key = \"proxy-client.key\"\nserver_name = \"app.internal\"";

fn https_url(app: &App) -> String {
    format!("https://{}", app.addr.unwrap())
}

#[test]
fn https_upstream_requiring_a_client_certificate_is_reached_over_mtls() {
    let pki = Pki::new();
    let up = UpstreamPki::new(pki.dir.path());
    let app = tls_app(&up, true);
    let proxy = start(&pki, &config(&https_url(&app), "", MTLS_KEYS, ""));
    let got = block_request(proxy.addr, &pki.root, &good(&pki), get("/pets")).unwrap();
    assert_eq!((got.status, got.text().as_str()), (200, "over tls: /pets"));
    assert_eq!(app.hits(), 1);
    assert_eq!(proxy.admin_get("/readyz"), (200, "ready\n".to_owned()));
    let _ = &up.proxy_client;
}

#[test]
fn https_upstream_without_client_auth_uses_only_the_configured_ca() {
    let pki = Pki::new();
    let up = UpstreamPki::new(pki.dir.path());
    let app = tls_app(&up, false);
    // No server_name: the URL's host (127.0.0.1) is verified, and the app certificate
    // carries that IP.
    let proxy = start(
        &pki,
        &config(&https_url(&app), "", "ca = \"upstream-ca.pem\"", ""),
    );
    let got = block_request(proxy.addr, &pki.root, &good(&pki), get("/x")).unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(proxy.admin_get("/readyz").0, 200);
}

#[test]
fn https_upstream_refusing_the_proxy_without_a_client_certificate_gives_502_and_not_ready() {
    let pki = Pki::new();
    let up = UpstreamPki::new(pki.dir.path());
    let app = tls_app(&up, true);
    let proxy = start(
        &pki,
        &config(
            &https_url(&app),
            "",
            "ca = \"upstream-ca.pem\"\nserver_name = \"app.internal\"",
            "",
        ),
    );
    let got = block_request(proxy.addr, &pki.root, &good(&pki), get("/x")).unwrap();
    assert_eq!(got.status, 502);
    assert_eq!(app.hits(), 0);
    assert_eq!(
        proxy.admin_get("/readyz"),
        (503, "upstream unreachable\n".to_owned())
    );
}

#[test]
fn https_upstream_with_a_certificate_from_another_ca_gives_502() {
    let pki = Pki::new();
    let up = UpstreamPki::new(pki.dir.path());
    let app = tls_app(&up, false);
    // Trust the client-facing root instead of the upstream CA.
    std::fs::write(pki.path("upstream-ca.pem"), pki.root.pem()).unwrap();
    let proxy = start(&pki, &config(&https_url(&app), "", MTLS_KEYS, ""));
    let got = block_request(proxy.addr, &pki.root, &good(&pki), get("/x")).unwrap();
    assert_eq!(got.status, 502);
    assert_eq!(got.text(), "502 Bad Gateway: upstream unavailable\n");
    assert_eq!(app.hits(), 0);
    assert_eq!(
        proxy.metric("mtls_shield_upstream_errors_total{kind=\"connect\"}"),
        1.0
    );
    assert_eq!(proxy.admin_get("/readyz").0, 503);
}

#[test]
fn https_upstream_whose_certificate_does_not_name_server_name_gives_502() {
    let pki = Pki::new();
    let up = UpstreamPki::new(pki.dir.path());
    let app = tls_app(&up, true);
    let keys = MTLS_KEYS.replace("app.internal", "other.internal");
    let proxy = start(&pki, &config(&https_url(&app), "", &keys, ""));
    let got = block_request(proxy.addr, &pki.root, &good(&pki), get("/x")).unwrap();
    assert_eq!(got.status, 502);
    assert_eq!(app.hits(), 0);
}

#[test]
fn unix_socket_upstream_serves_requests_and_readiness() {
    let pki = Pki::new();
    let sock = pki.path("app.sock");
    let app = App::start_on(Listen::Unix(sock.clone()), |req| async move {
        let host = req
            .headers()
            .get("host")
            .map(|h| h.to_str().unwrap().to_owned());
        full(
            200,
            format!("over unix: {} host={host:?}", req.uri().path()),
        )
    });
    let proxy = start(
        &pki,
        &config(&format!("unix:{}", sock.display()), "", "", ""),
    );
    let got = block_request(proxy.addr, &pki.root, &good(&pki), get("/pets")).unwrap();
    assert_eq!(
        got.text(),
        "over unix: /pets host=Some(\"localhost\")",
        "the client's Host header is forwarded"
    );
    assert_eq!(app.hits(), 1);
    assert_eq!(proxy.admin_get("/readyz"), (200, "ready\n".to_owned()));
}

#[test]
fn missing_unix_socket_gives_502_and_not_ready() {
    let pki = Pki::new();
    let sock = pki.path("nobody-listens.sock");
    let proxy = start(
        &pki,
        &config(&format!("unix:{}", sock.display()), "", "", ""),
    );
    let got = block_request(proxy.addr, &pki.root, &good(&pki), get("/pets")).unwrap();
    assert_eq!(got.status, 502);
    assert_eq!(
        proxy.admin_get("/readyz"),
        (503, "upstream unreachable\n".to_owned())
    );
}

fn config_error(upstream_url: &str, upstream_extra: &str) -> String {
    let text = config(upstream_url, "", upstream_extra, "");
    mtls_shield::config::Config::from_toml(&text, Path::new("/etc/shield/shield.toml"))
        .unwrap_err()
        .to_string()
}

#[test]
fn https_upstream_without_a_ca_is_a_config_error() {
    let e = config_error("https://app:8443", "");
    assert!(e.contains("upstream.ca: is required"), "{e}");
}

#[test]
fn upstream_tls_keys_on_plain_http_are_a_config_error() {
    let e = config_error("http://app:8080", "ca = \"ca.pem\"");
    assert!(
        e.contains("upstream.ca: only applies to an https://"),
        "{e}"
    );
}

#[test]
fn client_certificate_without_key_is_a_config_error() {
    let e = config_error(
        "https://app:8443",
        "ca = \"ca.pem\"\nclient_certificate = \"c.pem\"",
    );
    assert!(e.contains("upstream.client_key"), "{e}");
}

#[test]
fn relative_unix_socket_path_is_a_config_error() {
    let e = config_error("unix:app.sock", "");
    assert!(
        e.contains("upstream.url") && e.contains("must be absolute"),
        "{e}"
    );
}

#[test]
fn upstream_tls_paths_resolve_against_the_config_folder() {
    let text = config("https://app:8443", "", MTLS_KEYS, "");
    let c = mtls_shield::config::Config::from_toml(&text, Path::new("/etc/shield/shield.toml"))
        .unwrap();
    assert_eq!(
        c.upstream.tls.as_ref().map(|t| t.ca.as_path()),
        Some(Path::new("/etc/shield/upstream-ca.pem"))
    );
    assert!(c
        .watched_files()
        .contains(&"/etc/shield/proxy-client.key".into()));
}

#[test]
fn unreadable_upstream_ca_stops_start_up_naming_the_file() {
    let pki = Pki::new();
    let p = pki.path("mtls-shield.toml");
    std::fs::write(
        &p,
        config("https://127.0.0.1:1", "", "ca = \"missing-ca.pem\"", ""),
    )
    .unwrap();
    let logs = Proxy::try_start(&p).err().expect("start-up must fail");
    assert!(logs.contains("missing-ca.pem"), "{logs}");
}
