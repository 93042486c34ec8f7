//! Logs (issue 3): `[log] format = "json"` writes one JSON object per line; the access-log
//! line carries the client identity, method, path, status, bytes in and out, total and
//! upstream time; `RUST_LOG` overrides `log.level`; request bodies and private keys never
//! reach the logs, even at `trace`.
use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;

use crate::common::*;

fn write_config(pki: &Pki, up: &Upstream, format: &str, level: &str) -> std::path::PathBuf {
    let text = base_config(&up.url(), "")
        .replace("format = \"text\"", &format!("format = \"{format}\""))
        .replace("level = \"info\"", &format!("level = \"{level}\""));
    let p = pki.path("mtls-shield.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// SIGTERM, then every line the process wrote, once it has exited and stderr is drained.
/// Draining waits for every connection to close, so each request's access line is in.
fn stop_and_collect(proxy: &mut Proxy, last_line: &str) -> Vec<String> {
    proxy.signal("TERM");
    assert!(
        proxy.wait_exit(DEADLINE).is_some(),
        "proxy did not exit on SIGTERM"
    );
    wait_until("stderr drained", DEADLINE, || {
        proxy.logs().iter().any(|l| l.contains(last_line))
    });
    proxy.logs()
}

fn upload(body: Vec<u8>) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post("/upload")
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

#[test]
fn json_format_writes_one_object_per_line_with_access_and_connection_fields() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mut proxy = start_proxy_env(&write_config(&pki, &up, "json", "info"), &[]);
    let body = vec![b'x'; 12_345];
    let got = block_request(
        proxy.addr,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(&pki.client)),
        upload(body),
    )
    .unwrap();
    assert_eq!(got.status, 200);
    let answer = got.text();
    assert!(answer.starts_with("12345 "), "{answer}");
    let (code, _, _) = curl_pki(&pki, None, &[], &url(&proxy, "/pets"));
    assert_ne!(code, 0);

    let lines = stop_and_collect(&mut proxy, "all connections closed");
    let objects: Vec<serde_json::Map<String, Value>> = lines
        .iter()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(o)) => o,
            other => panic!("not one JSON object per line: {l:?} ({other:?})"),
        })
        .collect();
    for o in &objects {
        for k in ["timestamp", "level", "target", "message"] {
            assert!(o.contains_key(k), "{k} missing in {o:?}");
        }
    }
    let by_target = |t: &str| {
        objects
            .iter()
            .filter(|o| o["target"] == t)
            .collect::<Vec<_>>()
    };

    let access = by_target("mtls_shield::access");
    assert_eq!(access.len(), 1, "{access:?}");
    let a = access[0];
    assert_eq!(a["client_cn"], "my-client");
    assert_eq!(a["client_fingerprint"], pki.client.fingerprint().as_str());
    assert_eq!(a["method"], "POST");
    assert_eq!(a["path"], "/upload");
    assert_eq!(a["status"], 200);
    assert_eq!(a["bytes_in"], 12_345);
    assert_eq!(a["bytes_out"], answer.len() as u64);
    let total = a["total_ms"].as_f64().expect("total_ms is a number");
    let upstream = a["upstream_ms"].as_f64().expect("upstream_ms is a number");
    assert!(0.0 < upstream && upstream <= total, "{a:?}");
    assert!(
        a["peer"].as_str().unwrap().starts_with("127.0.0.1"),
        "{a:?}"
    );

    let refused = by_target("mtls_shield::connection");
    assert_eq!(refused.len(), 1, "{refused:?}");
    let r = refused[0];
    assert_eq!(r["message"], "handshake rejected");
    assert_eq!(r["level"], "WARN");
    assert_eq!(r["reason"], "no_certificate");
    assert_eq!(r["tls_version"], "TLSv1.3");
    assert_eq!(r["subject"], "-");
    assert!(
        r["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{r:?}"
    );
}

#[test]
fn text_access_line_has_identity_request_and_sizes_but_no_query() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&write_config(&pki, &up, "text", "info"));
    let got = get_as_client(&proxy, &pki, "/bytes/1000?token=query-secret");
    assert_eq!((got.status, got.body.len()), (200, 1000));
    let line = proxy.wait_log(&["mtls_shield::access"]);
    let f = |k: &str| field(&line, k).unwrap_or_else(|| panic!("no {k} in {line}"));
    assert_eq!(f("client_cn"), "my-client");
    assert_eq!(f("client_fingerprint"), pki.client.fingerprint());
    assert_eq!(f("method"), "GET");
    assert_eq!(f("path"), "/bytes/1000");
    assert_eq!(f("status"), "200");
    assert_eq!(f("bytes_in"), "0");
    assert_eq!(f("bytes_out"), "1000");
    assert!(f("total_ms").parse::<f64>().is_ok(), "{line}");
    assert!(f("upstream_ms").parse::<f64>().is_ok(), "{line}");
    assert!(
        !proxy.logs().iter().any(|l| l.contains("query-secret")),
        "query strings may carry secrets"
    );
}

/// With `log.level` silencing the access log, RUST_LOG=info brings it back: the environment
/// wins over the file.
#[test]
fn rust_log_overrides_log_level() {
    let pki = Pki::new();
    let up = Upstream::start();
    let cfg = write_config(&pki, &up, "text", "info,mtls_shield::access=off");
    let proxy = start_proxy_env(&cfg, &[("RUST_LOG", "info")]);
    let got = get_as_client(&proxy, &pki, "/pets");
    assert_eq!(got.status, 200);
    proxy.wait_log(&["mtls_shield::access", "path=/pets"]);
}

/// The same config without RUST_LOG: `log.level` applies and no access line is written.
#[test]
fn log_level_applies_without_rust_log() {
    let pki = Pki::new();
    let up = Upstream::start();
    let cfg = write_config(&pki, &up, "text", "info,mtls_shield::access=off");
    let mut proxy = start_proxy_env(&cfg, &[]);
    let got = get_as_client(&proxy, &pki, "/pets");
    assert_eq!(got.status, 200);
    let lines = stop_and_collect(&mut proxy, "all connections closed");
    assert!(
        !lines.iter().any(|l| l.contains("mtls_shield::access")),
        "{lines:#?}"
    );
}

/// The base64 lines of a PEM private key (every line between the armour).
fn key_material(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect()
}

/// The 32-byte private scalar inside a PKCS#8 P-256 key (ECPrivateKey: version 1, then the
/// OCTET STRING of the key), the one part of the DER that is secret.
fn private_scalar(pkcs8: &[u8]) -> &[u8] {
    let at = pkcs8
        .windows(5)
        .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
        .expect("a PKCS#8 EC private key");
    &pkcs8[at + 5..at + 37]
}

/// At the most verbose level (every crate at `trace`, rustls and hyper included), uploads
/// over HTTP/1.1 and h2, a refused handshake and a reload leave no request body and no byte
/// of either private key in the logs.
#[test]
fn request_bodies_and_private_keys_never_reach_the_logs() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mut proxy = start_proxy_env(
        &write_config(&pki, &up, "text", "info"),
        &[("RUST_LOG", "trace")],
    );
    let marker = "BODY-MARKER-7f3a9c";
    let body = marker.repeat(2000).into_bytes();
    for h2 in [false, true] {
        let mut opts = ClientOpts::with(ClientCert::leaf(&pki.client));
        opts.h2 = h2;
        let got = block_request(proxy.addr, &pki.root, &opts, upload(body.clone())).unwrap();
        assert_eq!(got.status, 200);
    }
    let (code, _, _) = curl_pki(&pki, None, &[], &url(&proxy, "/pets"));
    assert_ne!(code, 0);
    proxy.signal("HUP");
    proxy.wait_log(&["reload complete"]);
    let lines = stop_and_collect(&mut proxy, "all connections closed");
    assert!(
        lines.iter().any(|l| l.contains("TRACE")),
        "trace logging was not on"
    );
    assert!(lines.iter().any(|l| l.contains("mtls_shield::access")));
    let text = lines.join("\n");
    assert!(
        !text.contains("BODY-MARKER"),
        "a request body reached the logs"
    );
    for (name, pem) in [
        ("server", &pki.server.key_pem),
        ("client", &pki.client.key_pem),
    ] {
        for line in key_material(pem) {
            assert!(
                !text.contains(&line),
                "the {name} private key reached the logs"
            );
        }
        let der = if name == "server" {
            &pki.server.key_der
        } else {
            &pki.client.key_der
        };
        let scalar = private_scalar(der);
        for form in [
            hex::encode(scalar),
            hex::encode_upper(scalar),
            format!("{:?}", &scalar[..8])
                .trim_end_matches(']')
                .to_owned(),
        ] {
            assert!(
                !text.contains(&form),
                "the {name} private key reached the logs"
            );
        }
    }
}

#[test]
fn a_stuck_stderr_drops_access_lines_and_counts_them_without_stalling_requests() {
    // stderr is a pipe that nobody reads once the shield has said where it listens: a
    // stalled log collector. Requests must keep being answered; the lines past the bound
    // are dropped whole and counted.
    use std::io::BufRead;
    let pki = Pki::new();
    let up = Upstream::start();
    let config = write_config(&pki, &up, "text", "info");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mtls-shield"))
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (mut addr, mut admin) = (None, None);
    let mut line = String::new();
    while addr.is_none() || admin.is_none() {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "stderr closed");
        match listening_address(line.trim_end()) {
            Some((true, a)) => admin = Some(a),
            Some((false, a)) => addr = Some(a),
            None => {}
        }
    }
    let (addr, admin) = (addr.unwrap(), admin.unwrap());
    // From here on `stderr` is held open and never read. Each access line carries the
    // 3,000-byte path, so 2,000 requests make about 6 MiB of lines: more than the pipe
    // (64 KiB) and the shield's bound (4 MiB) together.
    let path = format!("/{}", "p".repeat(3000));
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let mut c = KeepAlive::open(addr, &pki.root, &pki.client);
                for i in 0..500 {
                    if let Err(e) = c.get(&path) {
                        panic!("request {i} failed while stderr was stuck: {e}");
                    }
                }
            });
        }
    });
    let dropped = |name: &str| {
        let (_, body) = http_get_plain(admin, "/metrics");
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let access = dropped("mtls_shield_access_log_dropped_total");
    assert!(
        access >= 300.0,
        "only {access} access lines counted as dropped"
    );
    let _ = child.kill();
    let _ = child.wait();
    drop(stderr);
}
