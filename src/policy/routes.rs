//! Per-route policy (`[[routes]]`): the compilation of the config's entries into a
//! [`RouteTable`], and the lookup of the route a request falls under ([`RouteTable::lookup`]),
//! over the request-path normaliser of [`super::path`] ([`normalize_path`]).
//!
//! A route narrows the connection-level decision for some requests: its own identity
//! allow-list, its own upstream. So a request that escapes the route it belongs to is a policy
//! bypass, and everything here is built to make the escape impossible rather than unlikely:
//!
//! - Matching does not depend on the order of the entries. The most specific route wins: an
//!   exact host over a wildcard over no host; then a wildcard with more labels; then the
//!   longest path prefix (in segments); then a route that lists `methods` over one that does
//!   not. Two entries that would tie are a config error naming both.
//! - Paths are compared in a normal form ([`normalize_path`]): unreserved characters decoded,
//!   dot segments resolved, `//` collapsed, prefixes compared by whole segments, ignoring
//!   `;params` and ASCII case. Whatever another server could read as a different path
//!   (an encoded slash or backslash, an encoded `;`, a double encoding, a control character,
//!   `..;`, `//..`) is refused as [`Lookup::BadPath`], answered with 400.
//! - Upstreams disagree on whether `%2e` is a dot and on whether `..` is resolved at all
//!   (nginx, Go and Java resolve; Express and most WSGI stacks route on the path as sent). A
//!   path whose dot segments or encodings would put it under two different routes depending
//!   on that reading is refused too; see [`RouteTable::lookup`].
//!
//! The normal form is for matching only: the upstream still receives the path the client
//! sent, byte for byte, so that signatures over the path, and upstreams that give meaning
//! to `;params` or to encodings, keep working.
//!
//! It imports only `config` (the entries as written, and the error type) and its siblings.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;

use http::Method;

use super::allow::AllowList;
use super::path::{canonical_segments, names, normalize_path, resolve, segment_name, AMBIGUOUS};
use crate::config::{ConfigError, RawRoute, ViewerMode};

/// The `host` of a route, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// No `host` key: every host, and requests without one.
    Any,
    /// One DNS name or IP address: lower-case, without port or trailing dot; IPv6 in its
    /// canonical text without brackets.
    Exact(String),
    /// `*.example.com`, kept as the suffix `.example.com`. It matches every name that ends
    /// with the suffix, at any depth (`a.example.com`, `a.b.example.com`), but not
    /// `example.com` itself, as with certificate wildcards; an operator who wants the apex
    /// too writes a second route for it. Unlike a certificate wildcard, which covers one
    /// label, it covers any depth, because a route is a policy boundary: were
    /// `a.b.example.com` not covered by `*.example.com`, that name would fall through to a
    /// less specific, possibly wider, route.
    Wildcard(String),
}

impl HostPattern {
    fn matches(&self, host: Option<&RequestHost>) -> bool {
        match (self, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Exact(e), Some(h)) => *e == h.text,
            // Labels are never empty (normalize_host), so a match on ".example.com" always
            // has a label before it and the apex never matches.
            (HostPattern::Wildcard(suffix), Some(h)) => !h.ip && h.text.ends_with(suffix),
            _ => false,
        }
    }

    /// Exact over wildcard over none; among wildcards, more labels first.
    fn rank(&self) -> (u8, usize) {
        match self {
            HostPattern::Any => (0, 0),
            HostPattern::Wildcard(s) => (1, s.matches('.').count()),
            HostPattern::Exact(_) => (2, 0),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => f.write_str("any host"),
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*{s}"),
        }
    }
}

/// One compiled route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    index: usize,
    name: Option<String>,
    /// Shared, so that counting a request by route clones a pointer, not the string.
    label: Arc<str>,
    host: HostPattern,
    path_prefix: String,
    /// The prefix's segment names, lower-case: what request segments are compared with.
    segments: Vec<String>,
    /// Upper-case; empty: every method.
    methods: Vec<Method>,
    upstream: Option<String>,
    allow: Option<AllowList>,
    viewer: Option<ViewerMode>,
    viewer_allow: Option<AllowList>,
}

impl Route {
    /// The entry's position in the `[[routes]]` list.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The `name` key, when given.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The label for metrics and logs: the name, or the index as a string.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The label as a shared string, for per-request metric labels.
    pub fn shared_label(&self) -> &Arc<str> {
        &self.label
    }

    /// The host the route covers.
    pub fn host(&self) -> &HostPattern {
        &self.host
    }

    /// The path prefix in normal form, without a trailing `/` (`/` for the root); its
    /// segments compare case-insensitively.
    pub fn path_prefix(&self) -> &str {
        &self.path_prefix
    }

    /// The methods the route covers, upper-case; empty: every method.
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }

    /// The `[upstreams.NAME]` the route sends to; `None`: the default `[upstream]`.
    pub fn upstream(&self) -> Option<&str> {
        self.upstream.as_deref()
    }

    /// The route's own allow-list; `None`: every client that passed the connection-level
    /// policy.
    pub fn allow(&self) -> Option<&AllowList> {
        self.allow.as_ref()
    }

    /// What the route needs of a viewer certificate; `None`: `viewer.required` decides.
    pub fn viewer(&self) -> Option<ViewerMode> {
        self.viewer
    }

    /// The route's own viewer allow-list, on top of `[viewer.allow]`.
    pub fn viewer_allow(&self) -> Option<&AllowList> {
        self.viewer_allow.as_ref()
    }

    fn covers_method(&self, method: &Method) -> bool {
        // Case-insensitive although methods are case-sensitive (RFC 9110 §9.1): a route
        // listing GET must not be skipped by a request that says `get` to an upstream that
        // upper-cases methods (many frameworks do), and fall through to a wider route.
        self.methods.is_empty()
            || self
                .methods
                .iter()
                .any(|m| m.as_str().eq_ignore_ascii_case(method.as_str()))
    }

    fn covers_path<'p>(&self, mut names: impl Iterator<Item = &'p str>) -> bool {
        self.segments.iter().all(|want| {
            names
                .next()
                .is_some_and(|name| name.eq_ignore_ascii_case(want))
        })
    }
}

/// Where a request goes, by [`RouteTable::lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The most specific route that covers the request.
    Route(&'a Route),
    /// No route covers it: the default upstream under the connection-level policy.
    NoRoute,
    /// The path could be read as another path by the upstream (an encoded slash, a dot
    /// segment that changes the route depending on how it is read, …): answer 400. The text
    /// says why, for the log.
    BadPath(&'static str),
    /// The Host (or `:authority`) is malformed, so which host route applies is not certain:
    /// answer 400. Only when some route names a host.
    BadHost(&'static str),
}

/// The compiled `[[routes]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// In config order.
    routes: Vec<Route>,
    /// Indexes into `routes`, most specific first.
    order: Vec<usize>,
    /// Some route names a host: only then is the request's host examined.
    names_hosts: bool,
}

impl RouteTable {
    /// Checks the `[[routes]]` entries of the config file `source` and compiles them.
    /// `upstreams` are the names of the `[upstreams.NAME]` tables (not the default
    /// `[upstream]`). Errors are keyed like `routes[2].path_prefix`.
    pub fn compile<'a>(
        raw: Vec<RawRoute>,
        upstreams: impl IntoIterator<Item = &'a str>,
        viewer_configured: bool,
        source: &Path,
    ) -> Result<RouteTable, ConfigError> {
        let upstreams: BTreeSet<&str> = upstreams.into_iter().collect();
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: source.to_owned(),
            key,
            message,
        };
        let mut routes: Vec<Route> = Vec::with_capacity(raw.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        for (index, r) in raw.into_iter().enumerate() {
            let key = |k: &str| format!("routes[{index}].{k}");
            if let Some(name) = &r.name {
                check_name(name).map_err(|m| invalid(key("name"), m))?;
                if let Some(other) = names.insert(name.clone(), index) {
                    return Err(invalid(
                        key("name"),
                        format!("{name:?} is also the name of routes[{other}]; route names must be unique"),
                    ));
                }
            }
            let (path_prefix, segments) = compile_prefix(r.path_prefix.as_deref().unwrap_or("/"))
                .map_err(|m| invalid(key("path_prefix"), m))?;
            let host = match &r.host {
                None => HostPattern::Any,
                Some(h) => compile_host(h).map_err(|m| invalid(key("host"), m))?,
            };
            let methods = match &r.methods {
                None => Vec::new(),
                Some(list) => compile_methods(list).map_err(|(k, m)| invalid(key(&k), m))?,
            };
            if let Some(name) = &r.upstream {
                if !upstreams.contains(name.as_str()) {
                    return Err(invalid(key("upstream"), unknown_upstream(name, &upstreams)));
                }
            }
            let allow = match &r.allow {
                None => None,
                // Security: an empty table would read as "every verified certificate" (the
                // meaning of an empty [client_auth.allow]), while an operator who writes the
                // table almost always meant to restrict; a route that restricts nobody is
                // written by leaving `allow` out.
                Some(a) if a.is_empty() => {
                    return Err(invalid(
                        key("allow"),
                        "has no entries; list who may use this route, or remove the table to let every client that connected use it".to_owned(),
                    ))
                }
                Some(a) => Some(
                    AllowList::compile(a)
                        .map_err(|e| invalid(key(&format!("allow.{}", e.key)), e.message))?,
                ),
            };
            let (viewer, viewer_allow) =
                compile_viewer(&r, viewer_configured).map_err(|(k, m)| invalid(key(&k), m))?;
            let label: Arc<str> = r
                .name
                .as_deref()
                .map_or_else(|| index.to_string().into(), Arc::from);
            routes.push(Route {
                index,
                name: r.name,
                label,
                host,
                path_prefix,
                segments,
                methods,
                upstream: r.upstream,
                allow,
                viewer,
                viewer_allow,
            });
        }
        for (i, later) in routes.iter().enumerate() {
            if let Some(earlier) = routes[..i].iter().find(|e| ties(e, later)) {
                return Err(invalid(format!("routes[{i}]"), tie_message(earlier, later)));
            }
        }
        let mut order: Vec<usize> = (0..routes.len()).collect();
        order.sort_by_key(|&i| {
            let r = &routes[i];
            (
                Reverse(r.host.rank()),
                Reverse(r.segments.len()),
                Reverse(!r.methods.is_empty()),
                i,
            )
        });
        let names_hosts = routes.iter().any(|r| r.host != HostPattern::Any);
        Ok(RouteTable {
            routes,
            order,
            names_hosts,
        })
    }

    /// The routes in config order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when there is no `[[routes]]` entry: every request is [`Lookup::NoRoute`].
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route a request falls under. `host` is the request's host as sent (Host header or
    /// h2 `:authority`, port and all); `path` is the path as sent, without the query
    /// (`uri.path()`).
    ///
    /// The host is compared case-insensitively, without port or trailing dot. The path is
    /// matched in its normal form ([`normalize_path`]) and, when it is not already normal,
    /// also as the other ways an upstream may read it: with `%XX` of unreserved characters
    /// left undecoded, and with dot segments left unresolved. If two of these readings fall
    /// under different routes, the answer is [`Lookup::BadPath`]: whichever route were
    /// chosen, an upstream reading the path the other way would serve a resource of the
    /// other route under the wrong policy (`/admin/../partner` is `/partner` to nginx and
    /// under `/admin` to an Express router). A reading that falls under no route does not
    /// count against one that falls under a route: a route only narrows what the connection
    /// already allows.
    ///
    /// With no routes at all, or when no route covers the host, the path is not examined,
    /// so requests that no route could concern are served exactly as without routes.
    pub fn lookup(&self, host: Option<&str>, method: &Method, path: &str) -> Lookup<'_> {
        if self.routes.is_empty() {
            return Lookup::NoRoute;
        }
        // An empty Host is what HTTP/1.1 sends for a target without authority: no host.
        let host = match host.filter(|h| !h.is_empty()) {
            Some(h) if self.names_hosts => match normalize_host(h) {
                Ok(h) => Some(h),
                Err(e) => return Lookup::BadHost(e),
            },
            _ => None,
        };
        let host = host.as_ref();
        if !self.routes.iter().any(|r| r.host.matches(host)) {
            return Lookup::NoRoute;
        }
        let normal = match normalize_path(path) {
            Ok(n) => n,
            Err(e) => return Lookup::BadPath(e),
        };
        let mut chosen = self.decide(host, method, names(&normal));
        if matches!(normal, Cow::Owned(_)) {
            // Not already normal: the other readings may differ. (A path that is its own
            // normal form has no encoded unreserved character, no dot and no empty segment,
            // so every reading is the same.)
            let rest = path.strip_prefix('/').unwrap_or(path);
            for (decode, resolve_dots) in [(true, false), (false, true), (false, false)] {
                let Ok((segments, _)) =
                    canonical_segments(rest, decode).and_then(|s| resolve(s, resolve_dots))
                else {
                    // The normal reading refuses every path another reading would.
                    return Lookup::BadPath(AMBIGUOUS);
                };
                let other = self.decide(host, method, segments.iter().map(|s| segment_name(s)));
                match (chosen, other) {
                    (_, None) => {}
                    (None, Some(o)) => chosen = Some(o),
                    (Some(c), Some(o)) if c == o => {}
                    (Some(_), Some(_)) => return Lookup::BadPath(AMBIGUOUS),
                }
            }
        }
        match chosen {
            Some(i) => Lookup::Route(&self.routes[i]),
            None => Lookup::NoRoute,
        }
    }

    /// The index of the most specific route that covers the request, if any.
    fn decide<'p>(
        &self,
        host: Option<&RequestHost>,
        method: &Method,
        names: impl Iterator<Item = &'p str> + Clone,
    ) -> Option<usize> {
        self.order.iter().copied().find(|&i| {
            let r = &self.routes[i];
            r.host.matches(host) && r.covers_path(names.clone()) && r.covers_method(method)
        })
    }
}

/// Two routes tie when nothing in a request could tell them apart: the same host and prefix,
/// and both without methods or with a method in common. A route with methods and one without
/// on the same host and prefix do not tie: the one with methods is the more specific.
fn ties(a: &Route, b: &Route) -> bool {
    a.host == b.host
        && a.segments == b.segments
        && (a.methods.is_empty() == b.methods.is_empty())
        && (a.methods.is_empty() || a.methods.iter().any(|m| b.methods.contains(m)))
}

fn tie_message(a: &Route, b: &Route) -> String {
    let who = |r: &Route| match &r.name {
        Some(n) => format!("routes[{}] ({n:?})", r.index),
        None => format!("routes[{}]", r.index),
    };
    let methods = if a.methods.is_empty() {
        String::new()
    } else {
        let common: Vec<&str> = a
            .methods
            .iter()
            .filter(|m| b.methods.contains(m))
            .map(Method::as_str)
            .collect();
        format!(" for {}", common.join(", "))
    };
    format!(
        "{} and {} both match host {} path {}{methods}; matching does not depend on the order of the entries, so give one another host or path_prefix, give them methods that do not overlap, or merge them",
        who(a),
        who(b),
        a.host,
        a.path_prefix,
    )
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty; remove it to label the route by its index".to_owned());
    }
    // Names label metrics and log lines: keep them to characters that need no quoting.
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "{name:?} may only use letters, digits, '-', '_' and '.' (it labels metrics and log lines)"
        ));
    }
    // Unnamed routes are labelled by their index: a name that is a number would share a
    // label with another route.
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{name:?} is a number, and numbers label the unnamed routes; use a name with a letter"
        ));
    }
    Ok(())
}

/// The normal form of a `path_prefix` without trailing `/`, and its lower-case segments.
/// A route's `viewer` and `viewer_allow`, or the key at fault (under the route) and why.
fn compile_viewer(
    r: &RawRoute,
    viewer_configured: bool,
) -> Result<(Option<ViewerMode>, Option<AllowList>), (String, String)> {
    if !viewer_configured {
        if r.viewer.is_some() {
            return Err(("viewer".into(), "needs a [viewer] table: viewer certificates are judged only when [viewer] names their truststore and edges".into()));
        }
        if r.viewer_allow.is_some() {
            return Err(("viewer_allow".into(), "needs a [viewer] table: viewer certificates are judged only when [viewer] names their truststore and edges".into()));
        }
    }
    let allow = match &r.viewer_allow {
        None => None,
        Some(_) if r.viewer == Some(ViewerMode::Ignored) => {
            return Err((
                "viewer_allow".into(),
                "is set on a route whose viewer = \"ignored\"; remove one of them".into(),
            ))
        }
        // Security: as with `allow`, an empty table would let every viewer through while
        // the operator almost surely meant to restrict.
        Some(a) if a.is_empty() => {
            return Err((
                "viewer_allow".into(),
                "has no entries; list which viewers may use this route, or remove the table".into(),
            ))
        }
        Some(a) => Some(
            AllowList::compile(a).map_err(|e| (format!("viewer_allow.{}", e.key), e.message))?,
        ),
    };
    Ok((r.viewer, allow))
}

fn compile_prefix(p: &str) -> Result<(String, Vec<String>), String> {
    if !p.starts_with('/') {
        return Err(format!(
            "{p:?} must start with \"/\", e.g. \"/admin\" (\"/\" covers every path)"
        ));
    }
    if p.contains(['?', '#']) {
        return Err(format!(
            "{p:?} is a path only; remove the query or fragment"
        ));
    }
    if p.contains(';') {
        return Err(format!(
            "{p:?} contains \";\": parameters are ignored when matching (\"/admin\" already covers \"/admin;jsessionid=…\"); remove them"
        ));
    }
    let normal = normalize_path(p).map_err(|e| format!("{p:?} is refused: {e}"))?;
    let normal = match normal.strip_suffix('/') {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => normal.into_owned(),
    };
    // A prefix written with dot or empty segments (raw or encoded) is a slip, or a test of
    // the normaliser: say what it means rather than guess. Each of them removes a segment
    // from the normal form, so counting segments finds them all.
    let written = p.trim_end_matches('/').split('/').skip(1).count();
    if names(&normal).count() != written {
        return Err(format!(
            "{p:?} has empty or dot segments; write it as {normal:?}"
        ));
    }
    let segments = names(&normal).map(str::to_ascii_lowercase).collect();
    Ok((normal, segments))
}

fn compile_host(h: &str) -> Result<HostPattern, String> {
    if h.is_empty() {
        return Err("is empty; remove the key to match every host".to_owned());
    }
    let (wildcard, name) = match h.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, h),
    };
    if name.contains('*') {
        return Err(format!(
            "{h:?}: a wildcard is only allowed as a leading \"*.\", e.g. \"*.example.com\""
        ));
    }
    if has_port(name) {
        return Err(format!(
            "{h:?} has a port; ports are ignored when matching, so give the name alone"
        ));
    }
    // The config may write an IPv6 address without brackets; a Host header may not.
    let host = match name.parse::<Ipv6Addr>() {
        Ok(ip) => RequestHost {
            text: ip.to_string(),
            ip: true,
        },
        Err(_) => normalize_host(name).map_err(|e| format!("{h:?} is not a host name: {e}"))?,
    };
    if !wildcard {
        return Ok(HostPattern::Exact(host.text));
    }
    if host.ip {
        return Err(format!(
            "{h:?}: a wildcard covers DNS names, not addresses; give the address alone"
        ));
    }
    Ok(HostPattern::Wildcard(format!(".{}", host.text)))
}

fn has_port(h: &str) -> bool {
    match h.strip_prefix('[') {
        Some(rest) => rest
            .split_once(']')
            .is_some_and(|(_, after)| !after.is_empty()),
        None => h.contains(':') && h.parse::<Ipv6Addr>().is_err(),
    }
}

fn compile_methods(list: &[String]) -> Result<Vec<Method>, (String, String)> {
    if list.is_empty() {
        // A route that matches no method would never apply: a slip, not a policy.
        return Err((
            "methods".to_owned(),
            "is empty; list the methods the route covers, or remove the key to cover every method"
                .to_owned(),
        ));
    }
    let mut out: Vec<Method> = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let upper = m.to_ascii_uppercase();
        let method = Some(upper.as_bytes())
            .filter(|b| !b.is_empty() && b.iter().all(|&c| is_tchar(c)))
            .and_then(|b| Method::from_bytes(b).ok())
            .ok_or_else(|| {
                (
                    format!("methods[{i}]"),
                    format!("{m:?} is not an HTTP method name, e.g. \"GET\""),
                )
            })?;
        if !out.contains(&method) {
            out.push(method);
        }
    }
    Ok(out)
}

/// RFC 9110 §5.6.2 `tchar`, the characters of a method name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn unknown_upstream(name: &str, known: &BTreeSet<&str>) -> String {
    if known.is_empty() {
        format!(
            "{name:?} names no upstream: there is no [upstreams.NAME] table; add [upstreams.{name}], or remove the key to use [upstream]"
        )
    } else {
        let list: Vec<&str> = known.iter().copied().collect();
        format!(
            "{name:?} names no upstream; the [upstreams.NAME] tables are: {}; or remove the key to use [upstream]",
            list.join(", ")
        )
    }
}

/// A request's host, normalised.
#[derive(Debug)]
struct RequestHost {
    /// Lower-case, without port or trailing dot; IPv6 canonical, without brackets.
    text: String,
    /// An IP address (wildcards never match one).
    ip: bool,
}

const BAD_HOST: &str = "a malformed host";
const BAD_PORT: &str = "a malformed port";

/// The host of a Host header or `:authority`: case-insensitive (DNS names are), the port
/// ignored, a trailing dot ignored (`example.com.` is the same name, and a client must not
/// step around an exact-host route with it). Anything that is not a DNS name, an IPv4
/// address or a bracketed IPv6 address is refused: an upstream could read it as another
/// host.
fn normalize_host(h: &str) -> Result<RequestHost, &'static str> {
    if let Some(rest) = h.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or(BAD_HOST)?;
        let ip: Ipv6Addr = inside.parse().map_err(|_| BAD_HOST)?;
        if !after.is_empty() && !after.strip_prefix(':').is_some_and(is_port) {
            return Err(BAD_PORT);
        }
        return Ok(RequestHost {
            text: ip.to_string(),
            ip: true,
        });
    }
    // A bare IPv6 address is refused with the rest below: without brackets, its last group
    // could be read as a port.
    let name = match h.rsplit_once(':') {
        Some((_, port)) if !is_port(port) => return Err(BAD_PORT),
        Some((name, _)) => name,
        None => h,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Ok(RequestHost {
            text: ip.to_string(),
            ip: true,
        });
    }
    let valid = name.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !valid {
        return Err(BAD_HOST);
    }
    Ok(RequestHost {
        text: name.to_ascii_lowercase(),
        ip: false,
    })
}

/// Up to five digits; an empty port is allowed by RFC 3986.
fn is_port(port: &str) -> bool {
    port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::super::path::*;
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Doc {
        routes: Vec<RawRoute>,
    }

    fn raw(toml_text: &str) -> Vec<RawRoute> {
        toml::from_str::<Doc>(toml_text).unwrap().routes
    }

    fn compile(toml_text: &str) -> Result<RouteTable, ConfigError> {
        RouteTable::compile(
            raw(toml_text),
            ["admin", "api"],
            true,
            Path::new("/etc/s.toml"),
        )
    }

    fn table(toml_text: &str) -> RouteTable {
        compile(toml_text).unwrap()
    }

    /// The key and message of a refused config.
    fn refused(toml_text: &str) -> (String, String) {
        match compile(toml_text).unwrap_err() {
            ConfigError::Invalid { key, message, .. } => (key, message),
            e => panic!("not Invalid: {e}"),
        }
    }

    /// The label of the route a request lands on, `-` for none, `400: …` for a refusal.
    fn hit(t: &RouteTable, host: Option<&str>, method: &str, path: &str) -> String {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        match t.lookup(host, &m, path) {
            Lookup::Route(r) => r.label().to_owned(),
            Lookup::NoRoute => "-".to_owned(),
            Lookup::BadPath(e) => format!("400 path: {e}"),
            Lookup::BadHost(e) => format!("400 host: {e}"),
        }
    }

    fn get(t: &RouteTable, path: &str) -> String {
        hit(t, None, "GET", path)
    }

    const ADMIN_AND_PARTNER: &str = r#"
        [[routes]]
        name = "admin"
        path_prefix = "/admin"
        [[routes]]
        name = "partner"
        path_prefix = "/partner"
    "#;

    const WITH_ROOT: &str = r#"
        [[routes]]
        name = "root"
        [[routes]]
        name = "admin"
        path_prefix = "/admin"
        [[routes]]
        name = "partner"
        path_prefix = "/partner"
    "#;

    // ---- the raw schema ----

    #[test]
    fn an_unknown_key_in_a_route_is_refused() {
        let e = toml::from_str::<Doc>("[[routes]]\npath_prefx = \"/a\"\n").unwrap_err();
        assert!(e.to_string().contains("path_prefx"), "{e}");
    }

    #[test]
    fn path_prefix_defaults_to_the_root() {
        let t = table("[[routes]]\nname = \"all\"\n");
        assert_eq!(t.routes()[0].path_prefix(), "/");
        assert_eq!(get(&t, "/anything/at/all"), "all");
    }

    #[test]
    fn the_label_is_the_name_or_the_index() {
        let t = table(
            "[[routes]]\npath_prefix = \"/a\"\n[[routes]]\nname = \"b\"\npath_prefix = \"/b\"\n",
        );
        assert_eq!(t.routes()[0].label(), "0");
        assert_eq!(t.routes()[0].name(), None);
        assert_eq!(t.routes()[1].label(), "b");
    }

    #[test]
    fn the_route_keeps_its_upstream_and_allow_list() {
        let t = table(
            "[[routes]]\npath_prefix = \"/a\"\nupstream = \"admin\"\n[routes.allow]\ncommon_names = [\"ops\"]\n",
        );
        let r = &t.routes()[0];
        assert_eq!(r.upstream(), Some("admin"));
        assert_eq!(
            r.allow().unwrap().source().common_names,
            vec!["ops".to_owned()]
        );
        let t = table("[[routes]]\npath_prefix = \"/a\"\n");
        assert_eq!(t.routes()[0].upstream(), None);
        assert!(t.routes()[0].allow().is_none());
    }

    // ---- config errors ----

    #[test]
    fn a_path_prefix_not_starting_with_a_slash_is_refused_and_named() {
        let (key, msg) = refused(
            "[[routes]]\npath_prefix = \"/a\"\n[[routes]]\npath_prefix = \"/b\"\n[[routes]]\npath_prefix = \"admin\"\n",
        );
        assert_eq!(key, "routes[2].path_prefix");
        assert!(msg.contains("must start with \"/\""), "{msg}");
    }

    #[test]
    fn a_path_prefix_with_dot_or_empty_segments_is_refused_with_its_normal_form() {
        for p in ["/a/../admin", "//admin", "/admin/./x"] {
            let (key, msg) = refused(&format!("[[routes]]\npath_prefix = \"{p}\"\n"));
            assert_eq!(key, "routes[0].path_prefix");
            assert!(msg.contains("write it as"), "{p}: {msg}");
        }
    }

    #[test]
    fn a_path_prefix_with_params_query_or_a_refused_encoding_is_refused() {
        for p in ["/admin;x", "/admin?x", "/a%2Fb", "/a%zz"] {
            let (key, _) = refused(&format!("[[routes]]\npath_prefix = \"{p}\"\n"));
            assert_eq!(key, "routes[0].path_prefix", "{p}");
        }
    }

    #[test]
    fn a_path_prefix_is_stored_in_normal_form_without_trailing_slash() {
        let t = table("[[routes]]\npath_prefix = \"/%61dmin/\"\n");
        assert_eq!(t.routes()[0].path_prefix(), "/admin");
    }

    #[test]
    fn an_unknown_upstream_is_refused_naming_the_upstreams_that_exist() {
        let (key, msg) = refused("[[routes]]\npath_prefix = \"/a\"\nupstream = \"admn\"\n");
        assert_eq!(key, "routes[0].upstream");
        assert!(
            msg.contains("\"admn\"") && msg.contains("admin, api"),
            "{msg}"
        );
        let e = RouteTable::compile(
            raw("[[routes]]\nupstream = \"admin\"\n"),
            [],
            false,
            Path::new("s.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("there is no [upstreams.NAME] table"), "{e}");
    }

    #[test]
    fn an_allow_list_error_is_keyed_under_its_route() {
        let (key, _) = refused(
            "[[routes]]\npath_prefix = \"/a\"\n[[routes]]\npath_prefix = \"/b\"\n[routes.allow]\nfingerprints_sha256 = [\"zz\"]\n",
        );
        assert_eq!(key, "routes[1].allow.fingerprints_sha256[0]");
    }

    #[test]
    fn an_empty_allow_table_is_refused_rather_than_read_as_allow_everyone() {
        let (key, msg) = refused("[[routes]]\npath_prefix = \"/a\"\n[routes.allow]\n");
        assert_eq!(key, "routes[0].allow");
        assert!(msg.contains("has no entries"), "{msg}");
    }

    #[test]
    fn a_duplicate_name_is_refused_naming_the_first() {
        let (key, msg) = refused(
            "[[routes]]\nname = \"x\"\npath_prefix = \"/a\"\n[[routes]]\nname = \"x\"\npath_prefix = \"/b\"\n",
        );
        assert_eq!(key, "routes[1].name");
        assert!(msg.contains("routes[0]"), "{msg}");
    }

    #[test]
    fn a_name_that_could_be_confused_with_an_index_or_a_log_field_is_refused() {
        for name in ["1", "", "a b", "a=b"] {
            let (key, _) = refused(&format!("[[routes]]\nname = \"{name}\"\n"));
            assert_eq!(key, "routes[0].name", "{name:?}");
        }
    }

    #[test]
    fn same_host_and_prefix_is_an_error_naming_both_entries() {
        let (key, msg) = refused(
            r#"
            [[routes]]
            path_prefix = "/x"
            [[routes]]
            name = "ops"
            host = "origin.example.com"
            path_prefix = "/admin"
            [[routes]]
            path_prefix = "/y"
            [[routes]]
            host = "ORIGIN.example.com."
            path_prefix = "/%61dmin/"
            "#,
        );
        assert_eq!(key, "routes[3]");
        assert!(
            msg.starts_with(
                "routes[1] (\"ops\") and routes[3] both match host origin.example.com path /admin;"
            ),
            "{msg}"
        );
    }

    #[test]
    fn same_prefix_in_another_case_is_the_same_prefix() {
        let (key, _) =
            refused("[[routes]]\npath_prefix = \"/admin\"\n[[routes]]\npath_prefix = \"/ADMIN\"\n");
        assert_eq!(key, "routes[1]");
    }

    #[test]
    fn overlapping_methods_on_the_same_prefix_are_an_error_naming_the_method() {
        let (key, msg) = refused(
            "[[routes]]\npath_prefix = \"/a\"\nmethods = [\"GET\", \"POST\"]\n[[routes]]\npath_prefix = \"/a\"\nmethods = [\"post\"]\n",
        );
        assert_eq!(key, "routes[1]");
        assert!(msg.contains("for POST"), "{msg}");
    }

    #[test]
    fn an_invalid_method_is_refused_and_named() {
        let (key, _) = refused("[[routes]]\nmethods = [\"GET\", \"GE T\"]\n");
        assert_eq!(key, "routes[0].methods[1]");
        let (key, _) = refused("[[routes]]\nmethods = [\"\"]\n");
        assert_eq!(key, "routes[0].methods[0]");
    }

    #[test]
    fn an_empty_methods_list_is_refused() {
        let (key, _) = refused("[[routes]]\nmethods = []\n");
        assert_eq!(key, "routes[0].methods");
    }

    #[test]
    fn methods_are_stored_upper_case() {
        let t = table("[[routes]]\nmethods = [\"get\", \"Purge\", \"GET\"]\n");
        let m: Vec<&str> = t.routes()[0].methods().iter().map(Method::as_str).collect();
        assert_eq!(m, ["GET", "PURGE"]);
    }

    #[test]
    fn a_config_host_with_a_port_or_a_misplaced_wildcard_is_refused() {
        for h in [
            "origin.example.com:8443",
            "[::1]:8443",
            "a.*.example.com",
            "*",
            "*.10.0.0.1",
            "bad host",
            "",
        ] {
            let (key, _) = refused(&format!("[[routes]]\nhost = \"{h}\"\n"));
            assert_eq!(key, "routes[0].host", "{h:?}");
        }
    }

    // ---- specificity and order ----

    const SPECIFICITY: &str = r#"
        [[routes]]
        name = "none"
        [[routes]]
        name = "none_admin"
        path_prefix = "/admin"
        [[routes]]
        name = "wild"
        host = "*.example.com"
        [[routes]]
        name = "wild_deeper"
        host = "*.eu.example.com"
        [[routes]]
        name = "exact"
        host = "origin.example.com"
        [[routes]]
        name = "exact_admin"
        host = "origin.example.com"
        path_prefix = "/admin"
        [[routes]]
        name = "exact_admin_api"
        host = "origin.example.com"
        path_prefix = "/admin/api"
    "#;

    #[test]
    fn an_exact_host_beats_a_wildcard_beats_no_host() {
        let t = table(SPECIFICITY);
        assert_eq!(hit(&t, Some("origin.example.com"), "GET", "/x"), "exact");
        assert_eq!(hit(&t, Some("other.example.com"), "GET", "/x"), "wild");
        assert_eq!(hit(&t, Some("elsewhere.org"), "GET", "/x"), "none");
        assert_eq!(hit(&t, None, "GET", "/x"), "none");
    }

    #[test]
    fn host_specificity_comes_before_path_length() {
        let t = table(SPECIFICITY);
        // `none_admin` has the longer prefix, but the wildcard host is more specific.
        assert_eq!(hit(&t, Some("a.example.com"), "GET", "/admin"), "wild");
        assert_eq!(
            hit(&t, Some("elsewhere.org"), "GET", "/admin"),
            "none_admin"
        );
    }

    #[test]
    fn a_wildcard_with_more_labels_beats_a_shorter_one() {
        let t = table(SPECIFICITY);
        assert_eq!(hit(&t, Some("a.eu.example.com"), "GET", "/"), "wild_deeper");
    }

    #[test]
    fn the_longest_path_prefix_wins() {
        let t = table(SPECIFICITY);
        let h = Some("origin.example.com");
        assert_eq!(hit(&t, h, "GET", "/admin/api/v1"), "exact_admin_api");
        assert_eq!(hit(&t, h, "GET", "/admin/other"), "exact_admin");
        assert_eq!(hit(&t, h, "GET", "/adm"), "exact");
    }

    #[test]
    fn matching_does_not_depend_on_the_order_of_the_entries() {
        let entries = raw(SPECIFICITY);
        let requests = [
            (Some("origin.example.com"), "/admin/api/x"),
            (Some("origin.example.com"), "/admin"),
            (Some("origin.example.com"), "/"),
            (Some("a.eu.example.com"), "/admin"),
            (Some("a.example.com"), "/admin"),
            (Some("example.com"), "/admin"),
            (None, "/admin/x"),
            (None, "/x"),
        ];
        let reference = table(SPECIFICITY);
        let want: Vec<String> = requests
            .iter()
            .map(|(h, p)| hit(&reference, *h, "GET", p))
            .collect();
        // Many permutations, deterministically: rotations and reversals of a fixed shuffle.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200 {
            let mut shuffled = entries.clone();
            for i in (1..shuffled.len()).rev() {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                shuffled.swap(i, (seed >> 33) as usize % (i + 1));
            }
            let t = RouteTable::compile(shuffled, ["admin"], false, Path::new("s.toml")).unwrap();
            let got: Vec<String> = requests
                .iter()
                .map(|(h, p)| hit(&t, *h, "GET", p))
                .collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_prefix_matches_whole_segments_only() {
        let t = table(ADMIN_AND_PARTNER);
        for p in ["/admin", "/admin/", "/admin/x", "/admin/x/y"] {
            assert_eq!(get(&t, p), "admin", "{p}");
        }
        for p in ["/administrator", "/admin-x", "/adm", "/", "/x/admin"] {
            assert_eq!(get(&t, p), "-", "{p}");
        }
    }

    #[test]
    fn the_root_prefix_matches_every_path() {
        let t = table("[[routes]]\nname = \"root\"\npath_prefix = \"/\"\n");
        for p in ["/", "", "/a", "/a/b/", "/;x"] {
            assert_eq!(get(&t, p), "root", "{p:?}");
        }
    }

    // ---- methods ----

    const METHODS: &str = r#"
        [[routes]]
        name = "root"
        [[routes]]
        name = "admin_read"
        path_prefix = "/admin"
        methods = ["GET", "HEAD"]
        [[routes]]
        name = "admin_write"
        path_prefix = "/admin"
        methods = ["POST"]
        [[routes]]
        name = "admin_other"
        path_prefix = "/admin"
        [[routes]]
        name = "report"
        path_prefix = "/admin/report"
        methods = ["PUT"]
    "#;

    #[test]
    fn a_method_not_listed_falls_through_to_the_next_most_specific_route() {
        let t = table(METHODS);
        assert_eq!(hit(&t, None, "PUT", "/admin/report"), "report");
        // The longest prefix lists only PUT: GET falls through to /admin.
        assert_eq!(hit(&t, None, "GET", "/admin/report"), "admin_read");
        assert_eq!(hit(&t, None, "POST", "/admin/report"), "admin_write");
    }

    #[test]
    fn a_route_with_methods_beats_one_without_on_the_same_prefix() {
        let t = table(METHODS);
        assert_eq!(hit(&t, None, "HEAD", "/admin"), "admin_read");
        // The catch-all on the same prefix takes every other method, so listing methods
        // never opens the prefix to the rest.
        assert_eq!(hit(&t, None, "DELETE", "/admin"), "admin_other");
        assert_eq!(hit(&t, None, "DELETE", "/x"), "root");
    }

    #[test]
    fn a_method_in_lower_case_matches_the_route_that_lists_it() {
        let t = table(METHODS);
        assert_eq!(hit(&t, None, "get", "/admin"), "admin_read");
        assert_eq!(hit(&t, None, "put", "/admin/report"), "report");
    }

    #[test]
    fn a_method_route_alone_lets_other_methods_through_to_no_route() {
        let t = table("[[routes]]\nname = \"w\"\npath_prefix = \"/a\"\nmethods = [\"POST\"]\n");
        assert_eq!(hit(&t, None, "POST", "/a"), "w");
        assert_eq!(hit(&t, None, "GET", "/a"), "-");
    }

    // ---- hosts ----

    const HOSTS: &str = r#"
        [[routes]]
        name = "origin"
        host = "origin.example.com"
        [[routes]]
        name = "wild"
        host = "*.example.com"
        [[routes]]
        name = "v6"
        host = "[2001:db8::1]"
        [[routes]]
        name = "v4"
        host = "203.0.113.7"
    "#;

    #[test]
    fn a_host_matches_whatever_its_port() {
        let t = table(HOSTS);
        for h in [
            "origin.example.com",
            "origin.example.com:8443",
            "origin.example.com:",
        ] {
            assert_eq!(hit(&t, Some(h), "GET", "/"), "origin", "{h}");
        }
        assert_eq!(hit(&t, Some("203.0.113.7:443"), "GET", "/"), "v4");
    }

    #[test]
    fn an_ipv6_host_matches_with_brackets_and_port_in_any_spelling() {
        let t = table(HOSTS);
        for h in [
            "[2001:db8::1]",
            "[2001:db8::1]:8443",
            "[2001:DB8:0::1]:8443",
        ] {
            assert_eq!(hit(&t, Some(h), "GET", "/"), "v6", "{h}");
        }
    }

    #[test]
    fn a_host_matches_with_a_trailing_dot() {
        let t = table(HOSTS);
        assert_eq!(hit(&t, Some("origin.example.com."), "GET", "/"), "origin");
        assert_eq!(
            hit(&t, Some("origin.example.com.:8443"), "GET", "/"),
            "origin"
        );
    }

    #[test]
    fn a_host_matches_in_any_case() {
        let t = table(HOSTS);
        assert_eq!(hit(&t, Some("ORIGIN.Example.COM"), "GET", "/"), "origin");
        assert_eq!(hit(&t, Some("A.EXAMPLE.COM"), "GET", "/"), "wild");
    }

    #[test]
    fn a_wildcard_matches_any_depth_but_not_the_apex() {
        let t = table(HOSTS);
        assert_eq!(hit(&t, Some("a.example.com"), "GET", "/"), "wild");
        assert_eq!(hit(&t, Some("a.b.c.example.com"), "GET", "/"), "wild");
        assert_eq!(hit(&t, Some("example.com"), "GET", "/"), "-");
        assert_eq!(hit(&t, Some("notexample.com"), "GET", "/"), "-");
    }

    #[test]
    fn a_malformed_host_is_bad_host_when_a_route_names_a_host() {
        let t = table(HOSTS);
        for h in [
            "origin.example.com:x",
            "a..example.com",
            "origin.example.com/x",
            "a b",
            "[::1",
            "[zz]",
            "x@origin.example.com",
        ] {
            assert!(hit(&t, Some(h), "GET", "/").starts_with("400 host"), "{h}");
        }
        // No route names a host: the host does not matter and is not examined.
        let t = table(ADMIN_AND_PARTNER);
        assert_eq!(hit(&t, Some("a b"), "GET", "/admin"), "admin");
    }

    #[test]
    fn a_request_without_host_matches_only_routes_without_host() {
        let t = table(HOSTS);
        assert_eq!(hit(&t, None, "GET", "/"), "-");
        assert_eq!(hit(&t, Some(""), "GET", "/"), "-");
    }

    // ---- paths: every trick must hit /admin or be refused ----

    const TRICKS: &[&str] = &[
        "/%61dmin",
        "/%61%64%6D%69%6E",
        "/x/../admin",
        "//admin",
        "///admin//x",
        "/admin/./x",
        "/./admin",
        "/admin;jsessionid=1",
        "/admin;jsessionid=1/x",
        "/ADMIN",
        "/AdMiN/x",
        "/%41DMIN",
        "/%2e%2e/admin",
        "/%2E/admin",
        "/../admin",
        "/admin/",
        "/admin/;jsessionid=1",
    ];

    #[test]
    fn every_path_trick_hits_the_admin_route() {
        let t = table(ADMIN_AND_PARTNER);
        for p in TRICKS {
            assert_eq!(get(&t, p), "admin", "{p}");
        }
    }

    #[test]
    fn beside_a_root_route_every_path_trick_hits_admin_or_is_bad_path() {
        let t = table(WITH_ROOT);
        for p in TRICKS {
            let got = get(&t, p);
            assert!(got == "admin" || got.starts_with("400 path"), "{p}: {got}");
        }
        // Those with nothing to read two ways still hit the route.
        for p in ["//admin", "/admin;jsessionid=1", "/ADMIN", "/admin/./x"] {
            assert_eq!(get(&t, p), "admin", "{p}");
        }
    }

    #[test]
    fn a_dot_segment_that_moves_the_path_to_another_route_under_another_reading_is_bad_path() {
        let t = table(ADMIN_AND_PARTNER);
        for p in [
            "/admin/../partner",
            "/admin/x/../../partner/y",
            "/partner/%2e%2e/admin",
            "/%70artner/../admin",
        ] {
            assert!(get(&t, p).starts_with("400 path"), "{p}");
        }
    }

    #[test]
    fn a_dot_segment_that_only_leaves_a_route_for_no_route_keeps_the_route() {
        // nginx reads /admin/../x as /x (no route); an Express router reads it under /admin.
        // The /admin route is the stricter of the two, so it applies.
        let t = table(ADMIN_AND_PARTNER);
        assert_eq!(get(&t, "/admin/../x"), "admin");
    }

    #[test]
    fn an_encoded_slash_or_backslash_is_bad_path() {
        let t = table(ADMIN_AND_PARTNER);
        for p in [
            "/admin%2Fx",
            "/x%2f..%2fadmin",
            "/admin%5Cx",
            "/x%5c..%5cadmin",
            "/x\\..\\admin",
        ] {
            assert!(get(&t, p).starts_with("400 path"), "{p}");
        }
    }

    #[test]
    fn an_invalid_percent_encoding_is_bad_path() {
        for p in ["/%zz", "/%4", "/admin%", "/%u0061dmin", "/%%61"] {
            assert_eq!(normalize_path(p), Err(BAD_PERCENT), "{p}");
        }
    }

    #[test]
    fn a_control_character_raw_or_encoded_is_bad_path() {
        for p in [
            "/admin\u{0}",
            "/admin%00",
            "/admin%0a",
            "/admin%0D%0A",
            "/a\tb",
            "/a%7f",
            "/a\u{7f}",
        ] {
            assert_eq!(normalize_path(p), Err(CONTROL), "{p:?}");
        }
    }

    #[test]
    fn an_encoded_semicolon_is_bad_path() {
        assert_eq!(normalize_path("/admin%3Bx"), Err(ENCODED_SEMICOLON));
        assert_eq!(normalize_path("/admin%3bx"), Err(ENCODED_SEMICOLON));
    }

    #[test]
    fn a_double_encoding_is_bad_path() {
        for p in ["/x%252F..%252Fadmin", "/%2561dmin", "/%25%32%46"] {
            assert_eq!(normalize_path(p), Err(DOUBLE_ENCODED), "{p}");
        }
        // A literal percent sign is fine.
        assert_eq!(normalize_path("/100%25.txt").unwrap(), "/100%25.txt");
    }

    #[test]
    fn a_dot_segment_with_parameters_is_bad_path() {
        for p in [
            "/x/..;/admin",
            "/x/..;a=b/admin",
            "/.;x/admin",
            "/%2e%2e;x/admin",
        ] {
            assert_eq!(normalize_path(p), Err(DOT_WITH_PARAMS), "{p}");
        }
    }

    #[test]
    fn parameters_on_an_empty_segment_before_the_last_are_bad_path() {
        assert_eq!(normalize_path("/;x/admin"), Err(EMPTY_WITH_PARAMS));
        assert_eq!(normalize_path("/admin/;x/"), Err(EMPTY_WITH_PARAMS));
        // Java URL rewriting of a folder URL: fine.
        assert_eq!(
            normalize_path("/admin/;jsessionid=1").unwrap(),
            "/admin/;jsessionid=1"
        );
    }

    #[test]
    fn a_dotdot_after_an_empty_segment_is_bad_path() {
        for p in ["/a//../admin", "//../admin", "/a/.//..", "/a//%2e%2e/admin"] {
            assert_eq!(normalize_path(p), Err(DOTDOT_AFTER_EMPTY), "{p}");
        }
    }

    #[test]
    fn a_path_not_starting_with_a_slash_is_bad_path() {
        assert_eq!(normalize_path("admin"), Err(NOT_ABSOLUTE));
        assert_eq!(normalize_path("*"), Err(NOT_ABSOLUTE));
    }

    #[test]
    fn a_bad_path_is_never_no_route() {
        let t = table(ADMIN_AND_PARTNER);
        for p in ["/admin%2F", "/x%00", "/%zz", "/x/..;/admin"] {
            assert!(get(&t, p).starts_with("400 path"), "{p}");
        }
    }

    #[test]
    fn without_routes_every_path_is_no_route_as_before() {
        let t = RouteTable::default();
        assert!(t.is_empty());
        assert_eq!(hit(&t, Some("a b"), "GET", "/admin%2Fx"), "-");
    }

    #[test]
    fn a_path_no_route_could_concern_is_not_examined() {
        let t = table("[[routes]]\nname = \"a\"\nhost = \"a.example.com\"\n");
        assert_eq!(hit(&t, Some("b.example.com"), "GET", "/%2F"), "-");
        assert!(hit(&t, Some("a.example.com"), "GET", "/%2F").starts_with("400 path"));
    }

    // ---- the normal form ----

    #[test]
    fn an_empty_path_is_the_root() {
        assert_eq!(normalize_path("").unwrap(), "/");
    }

    #[test]
    fn unreserved_and_sub_delimiter_encodings_are_decoded_and_other_hex_upper_cased() {
        assert_eq!(normalize_path("/%61%2D%2e%5F%7e").unwrap(), "/a-._~");
        assert_eq!(
            normalize_path("/%21%24%26%27%28%29%2A%2B%2C%3D%3A%40").unwrap(),
            "/!$&'()*+,=:@"
        );
        assert_eq!(
            normalize_path("/a%3fb%23c%20d%c3%a9").unwrap(),
            "/a%3Fb%23c%20d%C3%A9"
        );
    }

    #[test]
    fn a_raw_character_that_needs_encoding_equals_its_encoding() {
        assert_eq!(
            normalize_path("/café").unwrap(),
            normalize_path("/caf%c3%a9").unwrap()
        );
        assert_eq!(normalize_path("/a b\"").unwrap(), "/a%20b%22");
    }

    #[test]
    fn dot_segments_resolve_as_rfc_3986_says() {
        for (p, want) in [
            ("/a/b/c/./../../g", "/a/g"),
            ("/mid/content=5/../6", "/mid/6"),
            ("/../a", "/a"),
            ("/../../..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/.", "/a/"),
            ("/.", "/"),
            ("/a./..b/...", "/a./..b/..."),
        ] {
            assert_eq!(normalize_path(p).unwrap(), want, "{p}");
        }
    }

    #[test]
    fn runs_of_slashes_collapse_and_a_trailing_slash_stays() {
        assert_eq!(normalize_path("//a///b//").unwrap(), "/a/b/");
        assert_eq!(normalize_path("//").unwrap(), "/");
    }

    #[test]
    fn parameters_are_kept_in_the_normal_form_and_ignored_in_matching() {
        assert_eq!(normalize_path("/admin;a=%41/x").unwrap(), "/admin;a=A/x");
        let t = table(ADMIN_AND_PARTNER);
        assert_eq!(get(&t, "/x;admin"), "-");
        assert_eq!(get(&t, "/admin;x=1;y=2/z"), "admin");
    }

    #[test]
    fn case_is_kept_in_the_normal_form() {
        assert_eq!(normalize_path("/AdMin").unwrap(), "/AdMin");
    }

    #[test]
    fn a_path_already_normal_is_borrowed() {
        assert!(matches!(
            normalize_path("/api/v1/x;y"),
            Ok(Cow::Borrowed(_))
        ));
        assert!(matches!(normalize_path("/api/v1/"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize_path("/a%C3%A9"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize_path("/a%c3%a9"), Ok(Cow::Owned(_))));
    }

    /// The naive reading of "a prefix covers a normal path", to check the matcher against.
    fn naive_covers(prefix: &str, normal: &str) -> bool {
        let want: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
        let got: Vec<&str> = normal
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| s.split(';').next().unwrap())
            .collect();
        want.len() <= got.len()
            && want
                .iter()
                .zip(&got)
                .all(|(w, g)| w.eq_ignore_ascii_case(g))
    }

    #[test]
    fn generated_paths_keep_the_invariants_of_the_fuzz_target() {
        // The fuzz target's properties (fuzz/fuzz_targets/route_match.rs) on paths built from
        // the pieces that matter, so that they hold in every test run, not only under
        // libFuzzer.
        const PIECES: &[&str] = &[
            "/", "/", "/", "//", ".", "..", "%2e", "%2E", "%61", "%41", "admin", "ADMIN",
            "partner", "x", ";", ";j=1", "%2F", "%5c", "\\", "%", "%zz", "%25", "%00", "é",
            "%C3%a9", "~", "%7e", "?", " ", "%3b", "@", "%40", "api", "\t",
        ];
        let tables = [table(ADMIN_AND_PARTNER), table(WITH_ROOT)];
        let mut seed: u64 = 7;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        for _ in 0..50_000 {
            let mut path = String::new();
            for _ in 0..1 + next(10) {
                if next(5) == 0 {
                    // Any ASCII byte at all, controls included.
                    path.push(char::from(next(128) as u8));
                } else {
                    path.push_str(PIECES[next(PIECES.len())]);
                }
            }
            let normal = normalize_path(&path);
            for t in &tables {
                let found = t.lookup(None, &Method::GET, &path);
                let Ok(normal) = &normal else {
                    assert!(matches!(found, Lookup::BadPath(_)), "{path:?}: {found:?}");
                    continue;
                };
                assert_eq!(normalize_path(normal).as_deref(), Ok(&**normal), "{path:?}");
                assert!(
                    normal.starts_with('/') && !normal.contains("//"),
                    "{normal:?}"
                );
                assert!(names(normal).all(|n| n != "." && n != ".."), "{normal:?}");
                // The most specific route covering the normal form is the answer, or 400.
                let best = t
                    .routes()
                    .iter()
                    .filter(|r| naive_covers(r.path_prefix(), normal))
                    .max_by_key(|r| r.segments.len());
                match (best, found) {
                    (None, Lookup::NoRoute | Lookup::Route(_) | Lookup::BadPath(_)) => {}
                    (Some(b), Lookup::Route(r)) => assert_eq!(b.label(), r.label(), "{path:?}"),
                    (Some(_), Lookup::BadPath(_)) => {}
                    (b, f) => panic!("{path:?} (normal {normal:?}): {f:?}, expected {b:?}"),
                }
            }
        }
    }

    #[test]
    fn normalisation_is_idempotent() {
        let corpus = [
            "",
            "/",
            "//",
            "/a/b/../c",
            "/%61/./%2e%2e/b/",
            "/a;b/c;d",
            "/app/;j=1",
            "/café/x",
            "/%25zz",
            "/%25%41",
            "/a%20b",
            "/..",
            "/a/.",
            "/x/y/../../..",
            "/a:b@c",
            "/~%7E",
            "/%C3%a9/%e2%82%ac",
            "/a/%2E%2E%2E",
            "/ADMIN/",
            "/a//b/./c/",
        ];
        for p in corpus {
            let once = normalize_path(p).unwrap();
            let twice = normalize_path(&once).unwrap();
            assert_eq!(once, twice, "{p:?}");
            assert!(
                matches!(twice, Cow::Borrowed(_)),
                "{p:?} -> {once:?} is not its own normal form"
            );
        }
    }
}
