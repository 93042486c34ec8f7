//! The route matcher with its path normaliser on arbitrary paths, against a small fixed
//! `RouteTable`: no panic; the normal form is idempotent and really normal (no `//`, no dot
//! segment, no encoded unreserved character); a path the normaliser refuses is `BadPath`;
//! `NoRoute` never hides a route whose prefix covers the normal form segment-wise, and a path
//! whose normal form is under a route lands on that route or is refused (both checked
//! against an independent, naive matcher).
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use mtls_shield::config::RawRoute;
use mtls_shield::policy::{normalize_path, Lookup, RouteTable};

fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let route = |name: &str, prefix: &str, methods: &[&str]| RawRoute {
            name: Some(name.to_owned()),
            path_prefix: Some(prefix.to_owned()),
            methods: (!methods.is_empty())
                .then(|| methods.iter().map(|m| (*m).to_owned()).collect()),
            ..RawRoute::default()
        };
        // No route at "/": otherwise every path has a route and NoRoute proves nothing.
        let routes = vec![
            route("admin", "/admin", &[]),
            route("admin_api_write", "/admin/api", &["POST"]),
            route("partner", "/partner/v1", &[]),
            route("tilde", "/~user", &[]),
            route("cafe", "/caf%C3%A9/x", &[]),
        ];
        RouteTable::compile(routes, [], false, Path::new("/fuzz.toml")).expect("the fixed table compiles")
    })
}

/// The naive reading of "a prefix covers a path": whole segments, ignoring `;params` and
/// ASCII case.
fn covers(prefix: &str, normal: &str) -> bool {
    let want: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
    let got: Vec<&str> = normal
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.split(';').next().unwrap_or(s))
        .collect();
    want.len() <= got.len()
        && want
            .iter()
            .zip(&got)
            .all(|(w, g)| w.eq_ignore_ascii_case(g))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let table = table();
    let lookup = table.lookup(None, &Method::GET, path);
    assert!(!matches!(lookup, Lookup::BadHost(_)), "no host was given");
    let normal = match normalize_path(path) {
        Ok(n) => n,
        Err(why) => {
            assert!(
                matches!(lookup, Lookup::BadPath(_)),
                "{path:?} refused ({why}) but {lookup:?}"
            );
            return;
        }
    };
    assert!(normal.starts_with('/'), "{normal:?}");
    assert_eq!(
        normalize_path(&normal).as_deref(),
        Ok(&*normal),
        "not idempotent for {path:?}"
    );
    assert!(!normal.contains("//"), "{normal:?}");
    for segment in normal[1..].split('/') {
        let name = segment.split(';').next().unwrap_or(segment);
        assert!(name != "." && name != "..", "dot segment in {normal:?}");
    }
    let bytes = normal.as_bytes();
    for (i, _) in normal.match_indices('%') {
        let hex = normal
            .get(i + 1..i + 3)
            .expect("a complete percent-encoding");
        let byte = u8::from_str_radix(hex, 16).expect("hex digits");
        assert_eq!(
            hex,
            hex.to_ascii_uppercase(),
            "lower-case hex in {normal:?}"
        );
        assert!(
            !is_unreserved(byte),
            "encoded unreserved {:?} in {normal:?}",
            bytes[i]
        );
    }
    // The most specific route for GET that covers the normal form, by the naive matcher.
    let best = table
        .routes()
        .iter()
        .filter(|r| r.methods().is_empty() || r.methods().contains(&Method::GET))
        .filter(|r| covers(r.path_prefix(), &normal))
        .max_by_key(|r| r.path_prefix().split('/').filter(|s| !s.is_empty()).count());
    match (best, lookup) {
        (Some(b), Lookup::NoRoute) => {
            panic!(
                "{path:?} (normal {normal:?}) is NoRoute but route {} covers it",
                b.label()
            )
        }
        // A path under a route lands on that route, or is refused as ambiguous.
        (Some(b), Lookup::Route(r)) => assert_eq!(b.label(), r.label(), "{path:?}"),
        (None, Lookup::Route(r)) => {
            assert!(r.methods().is_empty() || r.methods().contains(&Method::GET));
        }
        _ => {}
    }
});
