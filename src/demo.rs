//! `mtls-shield demo`: a throwaway PKI, a built-in sample upstream (the PetStore sample and
//! a header echo), and the proxy in front of it, with two curl commands to paste.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

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
