//! Per-route policy and the source allow-list (issue 13), end to end: `[[routes]]` matched by
//! host, path prefix and method, each with its own allow-list and upstream, driven with curl
//! (which sends a path byte for byte with `--path-as-is`); and `listener.allow_sources`, which
//! closes a connection from elsewhere before any TLS byte. The matcher's own cases (every
//! normal-form rule) are unit tests in `src/config/routes.rs`.
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;

use crate::common::*;
use crate::rawtls::{good, RawTls};

/// The config with `listener_extra` keys and `tables` appended; returns its path.
fn write(pki: &Pki, up: &Upstream, listener_extra: &str, tables: &str) -> PathBuf {
    let path = pki.path("mtls-shield.toml");
    std::fs::write(&path, config_with(&up.url(), listener_extra, "", tables)).unwrap();
    path
}

/// `/admin` for the `ops` client only; everything else for every client that connected.
const ADMIN_FOR_OPS: &str = r#"
[[routes]]
name = "admin"
path_prefix = "/admin"
allow = { common_names = ["ops"] }
"#;

/// The PKI, plus `ops.pem`/`ops.key`: a client the `admin` route allows.
fn pki_with_ops() -> Pki {
    let pki = Pki::new();
    pki.root
        .issue(Leaf::client("ops"))
        .write(pki.dir.path(), "ops");
    pki
}

/// The status curl got for `path` (sent as is) as the client `who` (`client` or `ops`), with
/// extra curl arguments.
fn status_as(pki: &Pki, proxy: &Proxy, who: &str, path: &str, extra: &[&str]) -> u16 {
    let (cert, key) = (format!("{who}.pem"), format!("{who}.key"));
    let mut args = vec!["--path-as-is", "-o", "/dev/null", "-w", "%{http_code}"];
    args.extend_from_slice(extra);
    let (code, out, stderr) = curl_pki(pki, Some((&cert, &key)), &args, &url(proxy, path));
    assert_eq!(code, 0, "curl {path}: {stderr}");
    String::from_utf8(out).unwrap().parse().unwrap()
}

fn status(pki: &Pki, proxy: &Proxy, path: &str) -> u16 {
    status_as(pki, proxy, "client", path, &[])
}

fn denied(route: &str) -> String {
    format!("mtls_shield_requests_denied_total{{route=\"{route}\"}}")
}

#[test]
fn a_route_allow_list_answers_403_and_the_upstream_never_sees_the_request() {
    let pki = pki_with_ops();
    let up = Upstream::start();
    let proxy = Proxy::start(&write(&pki, &up, "", ADMIN_FOR_OPS));
    assert_eq!(proxy.metric(&denied("admin")), 0.0, "pre-registered at 0");
    assert_eq!(status(&pki, &proxy, "/admin/users"), 403);
    assert_eq!(up.hits(), 0);
    assert_eq!(proxy.metric(&denied("admin")), 1.0);
    let line = proxy.wait_log(&["route's allow-list refuses the client"]);
    assert!(line.contains("route=\"admin\""), "{line}");
    assert!(
        line.contains(&format!("fingerprint={}", pki.client.fingerprint())),
        "{line}"
    );
    let access = proxy.wait_log(&["mtls_shield::access", "status=403"]);
    assert!(access.contains("route=\"admin\""), "{access}");
}

#[test]
fn a_client_the_route_allows_is_forwarded() {
    let pki = pki_with_ops();
    let up = Upstream::start();
    let proxy = Proxy::start(&write(&pki, &up, "", ADMIN_FOR_OPS));
    // The test upstream answers 404 for paths it does not know: the request reached it.
    assert_eq!(status_as(&pki, &proxy, "ops", "/admin/users", &[]), 404);
    assert_eq!(up.hits(), 1);
}

#[test]
fn paths_outside_every_route_keep_the_connection_level_policy() {
    let pki = pki_with_ops();
    let up = Upstream::start();
    let proxy = Proxy::start(&write(&pki, &up, "", ADMIN_FOR_OPS));
    assert_eq!(status(&pki, &proxy, "/pets"), 200);
    // A prefix covers whole segments: /administrator is not under /admin.
    assert_eq!(status(&pki, &proxy, "/administrator"), 404);
    assert_eq!(status(&pki, &proxy, "/admin-tools"), 404);
    assert_eq!(up.hits(), 3);
    assert_eq!(proxy.metric(&denied("admin")), 0.0);
}

/// Each of these is `/admin` (or under it) to some server, so each must meet the admin
/// route's allow-list (403), or be refused as ambiguous (400): never reach the upstream.
#[test]
fn path_spellings_of_a_protected_prefix_never_reach_the_upstream() {
    let pki = pki_with_ops();
    let up = Upstream::start();
    let proxy = Proxy::start(&write(&pki, &up, "", ADMIN_FOR_OPS));
    for (path, want) in [
        ("/ADMIN", 403),              // ASCII case: many upstreams route case-insensitively
        ("/%61dmin", 403),            // an encoded unreserved character
        ("/%41DMIN/x", 403),          // both
        ("/x/../admin", 403),         // a dot segment that lands in the route
        ("/admin/./x", 403),          // a dot segment inside it
        ("//admin", 403),             // an empty segment
        ("/admin;jsessionid=1", 403), // a ;param (Tomcat, Spring strip it)
        ("/admin%2Fx", 400), // an encoded slash: one segment or two, depending on the server
        ("/admin%5cx", 400), // an encoded backslash
        ("/%2561dmin", 400), // a double encoding
        ("/admin/..;/x", 400), // Tomcat's `..;`
    ] {
        assert_eq!(status(&pki, &proxy, path), want, "{path}");
    }
    assert_eq!(up.hits(), 0, "no spelling reached the upstream");
}

#[test]
fn a_dot_segment_from_one_route_into_another_is_refused_as_ambiguous() {
    // nginx resolves /admin/../partner to /partner; an Express router sees a path under
    // /admin. The two readings fall under different routes, so neither is guessed.
    let pki = pki_with_ops();
    let up = Upstream::start();
    let tables = format!(
        "{ADMIN_FOR_OPS}\n[[routes]]\nname = \"partner\"\npath_prefix = \"/partner\"\nallow = {{ common_names = [\"my-client\"] }}\n"
    );
    let proxy = Proxy::start(&write(&pki, &up, "", &tables));
    assert_eq!(status(&pki, &proxy, "/admin/../partner"), 400);
    assert_eq!(
        status_as(&pki, &proxy, "ops", "/admin/../partner", &[]),
        400
    );
    assert_eq!(up.hits(), 0);
    let line = proxy.wait_log(&["request target refused; 400"]);
    assert!(line.contains("path=/admin/../partner"), "{line}");
}

#[test]
fn a_dot_segment_out_of_a_protected_prefix_meets_its_allow_list() {
    // /admin/../pets is /pets to a server that resolves dot segments, and under /admin to one
    // that does not: the admin route's allow-list applies, the narrower of the two policies.
    let pki = pki_with_ops();
    let up = Upstream::start();
    let proxy = Proxy::start(&write(&pki, &up, "", ADMIN_FOR_OPS));
    assert_eq!(status(&pki, &proxy, "/admin/../pets"), 403);
    assert_eq!(up.hits(), 0);
    // Forwarded as sent; the test upstream does not resolve dot segments, so 404.
    assert_eq!(status_as(&pki, &proxy, "ops", "/admin/../pets", &[]), 404);
    assert_eq!(up.hits(), 1);
}

#[test]
fn the_upstream_receives_the_path_as_the_client_sent_it() {
    let pki = pki_with_ops();
    let up = Upstream::start();
    let tables = format!("{ADMIN_FOR_OPS}\n[[routes]]\nname = \"pets\"\npath_prefix = \"/pets\"\n");
    let proxy = Proxy::start(&write(&pki, &up, "", &tables));
    // /pets;v=1 matches the pets route (params ignored for matching) but the upstream, which
    // serves /pets only, sees the `;v=1` and answers 404: nothing was rewritten.
    assert_eq!(status(&pki, &proxy, "/pets;v=1"), 404);
    assert_eq!(status(&pki, &proxy, "/pets"), 200);
    assert_eq!(up.hits(), 2);
}

#[test]
fn the_longest_prefix_wins_whatever_the_order() {
    let pki = pki_with_ops();
    let up = Upstream::start();
    // The narrower route comes first in the file, and is the open one.
    let tables = r#"
[[routes]]
name = "health"
path_prefix = "/admin/health"

[[routes]]
name = "admin"
path_prefix = "/admin"
allow = { common_names = ["ops"] }
"#;
    let proxy = Proxy::start(&write(&pki, &up, "", tables));
    assert_eq!(status(&pki, &proxy, "/admin/health"), 404, "forwarded");
    assert_eq!(status(&pki, &proxy, "/admin/health/deep"), 404, "forwarded");
    assert_eq!(status(&pki, &proxy, "/admin/healthz"), 403);
    assert_eq!(up.hits(), 2);
}

#[test]
fn a_route_with_methods_covers_only_those_methods() {
    let pki = pki_with_ops();
    let up = Upstream::start();
    let tables = r#"
[[routes]]
name = "pets-write"
path_prefix = "/pets"
methods = ["post", "DELETE"]
allow = { common_names = ["ops"] }
"#;
    let proxy = Proxy::start(&write(&pki, &up, "", tables));
    assert_eq!(status(&pki, &proxy, "/pets"), 200, "GET is not covered");
    assert_eq!(
        status_as(&pki, &proxy, "client", "/pets", &["-X", "POST"]),
        403
    );
    assert_eq!(
        status_as(&pki, &proxy, "client", "/pets", &["-X", "DELETE"]),
        403
    );
    assert_eq!(
        status_as(&pki, &proxy, "ops", "/pets", &["-X", "POST"]),
        200
    );
    assert_eq!(up.hits(), 2);
}

#[test]
fn host_routes_prefer_exact_over_wildcard_over_none() {
    let pki = pki_with_ops();
    let up = Upstream::start();
    // Exact host: open. Wildcard: ops only. No host: nobody but ops either, by another name.
    let tables = r#"
[[routes]]
name = "any-host"
path_prefix = "/pets"
allow = { common_names = ["ops"] }

[[routes]]
name = "wild"
host = "*.example.com"
path_prefix = "/pets"
allow = { common_names = ["ops"] }

[[routes]]
name = "exact"
host = "api.example.com"
path_prefix = "/pets"
"#;
    let proxy = Proxy::start(&write(&pki, &up, "", tables));
    let with_host = |host: &str| {
        let h = format!("Host: {host}");
        status_as(&pki, &proxy, "client", "/pets", &["-H", &h])
    };
    assert_eq!(with_host("api.example.com"), 200);
    assert_eq!(
        with_host("API.Example.COM:443"),
        200,
        "case and port ignored"
    );
    assert_eq!(with_host("api.example.com."), 200, "trailing dot ignored");
    assert_eq!(with_host("www.example.com"), 403);
    assert_eq!(
        with_host("a.b.example.com"),
        403,
        "a wildcard covers any depth"
    );
    assert_eq!(
        with_host("example.com"),
        403,
        "the apex falls to the no-host route"
    );
    assert_eq!(up.hits(), 3);
    assert_eq!(proxy.metric(&denied("wild")), 2.0);
    assert_eq!(proxy.metric(&denied("any-host")), 1.0);
}

#[test]
fn each_route_reaches_its_own_upstream() {
    let pki = pki_with_ops();
    let up = Upstream::start();
    let admin_up = Upstream::start();
    let tables = format!(
        r#"
[upstreams.admin]
url = "{}"

[[routes]]
name = "admin"
path_prefix = "/admin"
upstream = "admin"
allow = {{ common_names = ["ops"] }}
"#,
        admin_up.url()
    );
    let proxy = Proxy::start(&write(&pki, &up, "", &tables));
    assert_eq!(status_as(&pki, &proxy, "ops", "/admin/x", &[]), 404);
    assert_eq!((up.hits(), admin_up.hits()), (0, 1));
    assert_eq!(status(&pki, &proxy, "/pets"), 200);
    assert_eq!((up.hits(), admin_up.hits()), (1, 1));
    assert_eq!(status(&pki, &proxy, "/admin/x"), 403);
    assert_eq!((up.hits(), admin_up.hits()), (1, 1));
}

/// `mtls-shield check --config PATH`: (exit code, stdout).
fn check(config: &std::path::Path) -> (Option<i32>, String) {
    let out = shield_cmd(&[
        OsStr::new("check"),
        OsStr::new("--config"),
        config.as_os_str(),
    ]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn two_routes_that_tie_are_a_config_error_naming_both() {
    let pki = Pki::new();
    let up = Upstream::start();
    let tables = r#"
[[routes]]
name = "one"
path_prefix = "/api/"

[[routes]]
path_prefix = "/API"
allow = { common_names = ["ops"] }
"#;
    let config = write(&pki, &up, "", tables);
    let (code, stdout) = check(&config);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("routes[1]"), "{stdout}");
    assert!(stdout.contains("routes[0] (\"one\")"), "{stdout}");
    assert!(
        stdout.contains("matching does not depend on the order"),
        "{stdout}"
    );
    let err = Proxy::try_start(&config).err().expect("run refuses it too");
    assert!(err.contains("routes[0] (\"one\")"), "{err}");
}

#[test]
fn a_route_naming_an_unknown_upstream_is_a_config_error() {
    let pki = Pki::new();
    let up = Upstream::start();
    let tables = "[[routes]]\npath_prefix = \"/admin\"\nupstream = \"admn\"\n";
    let (code, stdout) = check(&write(&pki, &up, "", tables));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("routes[0].upstream"), "{stdout}");
}

#[test]
fn check_lists_the_routes_and_the_source_prefixes() {
    let pki = Pki::new();
    let up = Upstream::start();
    std::fs::write(pki.path("sources.txt"), "10.0.0.0/8\n# office\n192.0.2.7\n").unwrap();
    let listener = "allow_sources = [\"127.0.0.0/8\"]\nallow_sources_file = \"sources.txt\"";
    let (code, stdout) = check(&write(&pki, &up, listener, ADMIN_FOR_OPS));
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("allow_sources: 3 prefixes"), "{stdout}");
    assert!(
        stdout.contains(
            "  - admin: host any host, path /admin, methods any, to upstream, own allow-list"
        ),
        "{stdout}"
    );
}

// ---- listener.allow_sources ----

const SOURCE_REFUSED: &str =
    r#"mtls_shield_handshakes_total{result="rejected",reason="source_not_allowed"}"#;

/// Connects over TCP, sends the start of a TLS ClientHello and reads until the server closes:
/// every byte it sent back.
fn raw_reply(proxy: &Proxy) -> Vec<u8> {
    let mut tcp = TcpStream::connect(proxy.addr).unwrap();
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    // A record header and a ClientHello header: enough for a server to start a handshake.
    let _ = tcp.write_all(&[
        0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c, 0x03, 0x03,
    ]);
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got);
    got
}

#[test]
fn a_source_outside_allow_sources_is_closed_before_any_tls_byte() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&write(&pki, &up, "allow_sources = [\"192.0.2.0/24\"]", ""));
    assert!(raw_reply(&proxy).is_empty(), "not even a TLS alert");
    // A real client gets no ServerHello either.
    let (_, stdout, _) = s_client(proxy.addr, &[], b"");
    assert!(stdout.contains("read 0 bytes"), "{stdout}");
    wait_until("both refusals counted", DEADLINE, || {
        proxy.metric(SOURCE_REFUSED) == 2.0
    });
    let line = proxy.wait_log(&["source not in listener.allow_sources"]);
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    assert_eq!(up.hits(), 0);
}

#[test]
fn a_source_inside_allow_sources_is_served() {
    let pki = Pki::new();
    let up = Upstream::start();
    let listener = "allow_sources = [\"192.0.2.0/24\", \"127.0.0.1/32\"]";
    let proxy = Proxy::start(&write(&pki, &up, listener, ""));
    assert_eq!(get_as_client(&proxy, &pki, "/pets").status, 200);
    assert_eq!(proxy.metric(SOURCE_REFUSED), 0.0);
}

/// A CloudFront-shaped `ip-ranges.json` with `origin_facing` as the origin-facing prefix and
/// `other` under another service.
fn ip_ranges(origin_facing: &str, other: &str) -> String {
    format!(
        r#"{{"syncToken":"1","createDate":"2026-12-01-00-00-00","prefixes":[
  {{"ip_prefix":"{origin_facing}","region":"GLOBAL","service":"CLOUDFRONT_ORIGIN_FACING","network_border_group":"GLOBAL"}},
  {{"ip_prefix":"{other}","region":"GLOBAL","service":"CLOUDFRONT","network_border_group":"GLOBAL"}},
  {{"ip_prefix":"{other}","region":"us-east-1","service":"AMAZON","network_border_group":"us-east-1"}}
],"ipv6_prefixes":[
  {{"ipv6_prefix":"2600:9000:1000::/40","region":"GLOBAL","service":"CLOUDFRONT_ORIGIN_FACING","network_border_group":"GLOBAL"}}
]}}"#
    )
}

#[test]
fn ip_ranges_json_allows_only_its_cloudfront_origin_facing_prefixes() {
    let pki = Pki::new();
    let up = Upstream::start();
    std::fs::write(
        pki.path("ip-ranges.json"),
        ip_ranges("127.0.0.0/8", "10.0.0.0/8"),
    )
    .unwrap();
    let listener = "allow_sources_file = \"ip-ranges.json\"";
    let proxy = Proxy::start(&write(&pki, &up, listener, ""));
    assert_eq!(get_as_client(&proxy, &pki, "/pets").status, 200);
    drop(proxy);

    // Loopback listed under other services only: not an origin-facing address.
    std::fs::write(
        pki.path("ip-ranges.json"),
        ip_ranges("198.51.100.0/24", "127.0.0.0/8"),
    )
    .unwrap();
    let proxy = Proxy::start(&write(&pki, &up, listener, ""));
    assert!(raw_reply(&proxy).is_empty());
    wait_until("the refusal counted", DEADLINE, || {
        proxy.metric(SOURCE_REFUSED) == 1.0
    });
}

#[test]
fn a_sources_file_change_applies_on_reload_and_a_broken_one_keeps_the_last_good_list() {
    let pki = Pki::new();
    let up = Upstream::start();
    std::fs::write(pki.path("sources.txt"), "# the load balancers\n127.0.0.1\n").unwrap();
    let proxy = Proxy::start(&write(
        &pki,
        &up,
        "allow_sources_file = \"sources.txt\"",
        "",
    ));
    assert_eq!(get_as_client(&proxy, &pki, "/pets").status, 200);

    std::fs::write(pki.path("sources.txt"), "not-a-network\n").unwrap();
    proxy.signal("HUP");
    wait_until("the failed reload", DEADLINE, || {
        proxy.metric("mtls_shield_reloads_total{result=\"failure\"}") >= 1.0
    });
    let line = proxy.wait_log(&["sources.txt: line 1"]);
    assert!(
        line.contains("\"not-a-network\" is not an IP address or CIDR"),
        "{line}"
    );
    assert_eq!(
        get_as_client(&proxy, &pki, "/pets").status,
        200,
        "last good list"
    );

    std::fs::write(pki.path("sources.txt"), "192.0.2.0/24\n").unwrap();
    proxy.signal("HUP");
    wait_until("the reload", DEADLINE, || {
        proxy.metric("mtls_shield_reloads_total{result=\"success\"}") >= 1.0
    });
    assert!(raw_reply(&proxy).is_empty(), "loopback is no longer listed");
}

#[test]
fn an_empty_allow_sources_is_a_config_error() {
    let pki = Pki::new();
    let up = Upstream::start();
    let (code, stdout) = check(&write(&pki, &up, "allow_sources = []", ""));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("listener.allow_sources"), "{stdout}");
    assert!(stdout.contains("would refuse every connection"), "{stdout}");
}

#[test]
fn a_cidr_with_host_bits_set_is_a_config_error_naming_the_entry() {
    let pki = Pki::new();
    let up = Upstream::start();
    let listener = "allow_sources = [\"127.0.0.0/8\", \"203.0.113.7/16\"]";
    let (code, stdout) = check(&write(&pki, &up, listener, ""));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("listener.allow_sources[1]"), "{stdout}");
    assert!(stdout.contains("203.0.0.0/16"), "{stdout}");
}

/// Connects, writes a PROXY v1 header naming `source`, then the start of a ClientHello; every
/// byte the server sent back before closing.
fn proxied_reply(proxy: &Proxy, source: &str) -> Vec<u8> {
    let mut tcp = TcpStream::connect(proxy.addr).unwrap();
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    let header = format!("PROXY TCP4 {source} 127.0.0.1 51234 443\r\n");
    tcp.write_all(header.as_bytes()).unwrap();
    let _ = tcp.write_all(&[
        0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c, 0x03, 0x03,
    ]);
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got);
    got
}

#[test]
fn behind_proxy_protocol_the_header_source_is_the_one_checked() {
    // The TCP peer (loopback, the balancer) is not listed; the client the header names is.
    let pki = Pki::new();
    let up = Upstream::start();
    let listener = "proxy_protocol = \"v1\"\nallow_sources = [\"203.0.113.0/24\"]";
    let proxy = Proxy::start(&write(&pki, &up, listener, ""));
    assert!(
        proxied_reply(&proxy, "198.51.100.9").is_empty(),
        "not listed: closed"
    );
    wait_until("the refusal counted", DEADLINE, || {
        proxy.metric(SOURCE_REFUSED) == 1.0
    });
    let line = proxy.wait_log(&["source not in listener.allow_sources"]);
    assert!(line.contains("peer=198.51.100.9:51234"), "{line}");
    // A listed source is served.
    let mut tcp = TcpStream::connect(proxy.addr).unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.5 127.0.0.1 51234 443\r\n")
        .unwrap();
    let mut tls = RawTls::over(tcp, &pki.root, &good(&pki)).unwrap();
    tls.send(b"GET /pets HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(tls.read_response(false).unwrap().status, 200);
    assert_eq!(proxy.metric(SOURCE_REFUSED), 1.0);
}
