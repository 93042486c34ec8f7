//! `mtls-shield demo`: a throwaway PKI, a built-in sample upstream (the PetStore sample and
//! a header echo), and the proxy in front of it, with two curl commands to paste.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::config::Config;

/// The PetStore sample body served at `GET /pets`.
pub const PETS: &str = r#"[{"id":1,"type":"dog","price":249.99},{"id":2,"type":"cat","price":124.99},{"id":3,"type":"fish","price":0.99}]"#;

/// Starts the sample upstream on `listener`: `GET /pets` returns [`PETS`]; `/headers`
/// returns the request headers as JSON, so you can see what the proxy adds and strips.
pub async fn sample_upstream(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let svc = service_fn(sample_answer);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn sample_answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match req.uri().path() {
        "/pets" => (StatusCode::OK, PETS.to_owned()),
        "/headers" => {
            let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, v) in req.headers() {
                map.entry(k.as_str().to_owned())
                    .or_default()
                    .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
            }
            (
                StatusCode::OK,
                serde_json::to_string_pretty(&map).unwrap_or_default(),
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            r#"{"message":"try GET /pets or GET /headers"}"#.to_owned(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// The config text the demo runs with.
pub fn config_text(listen: SocketAddr, admin: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        r#"# Written by `mtls-shield demo`.
[listener]
address = "{listen}"
certificate = "server.pem"
private_key = "server.key"

[client_auth]
truststore = "truststore.pem"

[upstream]
url = "http://{upstream}"

[admin]
address = "{admin}"
"#
    )
}

/// The two commands printed for the user, one line each.
pub fn curl_commands(dir: &Path, listen: SocketAddr) -> (String, String) {
    let host = if listen.ip().is_loopback() || listen.ip().is_unspecified() {
        "localhost".to_owned()
    } else {
        listen.ip().to_string()
    };
    let url = format!("https://{host}:{}/pets", listen.port());
    let d = dir.display();
    (
        format!("curl --cacert {d}/ca.pem --cert {d}/client.pem --key {d}/client.key {url}"),
        format!("curl --cacert {d}/ca.pem {url}"),
    )
}

/// `mtls-shield demo`: writes a PKI and a config into `dir` (default: a folder under the temp
/// dir), starts the sample upstream and the proxy, prints the commands to try, and serves
/// until SIGTERM/SIGINT.
pub async fn run(
    listen: SocketAddr,
    admin: SocketAddr,
    dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let dir = dir.unwrap_or_else(|| std::env::temp_dir().join("mtls-shield-demo"));
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    crate::pki::DevPki::generate()?.write(&dir)?;
    let upstream = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the sample upstream")?;
    let upstream_addr = upstream.local_addr()?;
    tokio::spawn(sample_upstream(upstream));
    let config_path = dir.join("mtls-shield.toml");
    std::fs::write(&config_path, config_text(listen, admin, upstream_addr))
        .with_context(|| format!("{}: cannot write demo config", config_path.display()))?;
    let cfg = Config::load(&config_path)?;
    let running = crate::app::start(cfg, Some(config_path)).await?;
    let (good, bad) = curl_commands(&dir, running.address);
    println!(
        "mtls-shield demo: certificates and config in {}",
        dir.display()
    );
    println!();
    println!("With the client certificate (gets the pets):");
    println!("  {good}");
    println!("Without it (empty reply: the handshake is refused, no HTTP at all):");
    println!("  {bad}");
    println!();
    println!(
        "See what the upstream receives:  {}",
        good.replace("/pets", "/headers")
    );
    if let Some(admin) = running.admin {
        println!("Metrics:                         curl http://{admin}/metrics");
    }
    println!("Press Ctrl-C to stop.");
    running.wait().await?;
    Ok(ExitCode::SUCCESS)
}

/// `mtls-shield gen-certs`: writes a development PKI into `out`.
pub fn gen_certs(out: &Path, force: bool) -> anyhow::Result<ExitCode> {
    if !force && out.join("ca.key").exists() {
        anyhow::bail!(
            "{}: already holds ca.key; pass --force to overwrite, or choose another --out",
            out.display()
        );
    }
    let written = crate::pki::DevPki::generate()?.write(out)?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
