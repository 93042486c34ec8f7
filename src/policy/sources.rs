//! The source allow-list (`listener.allow_sources`, `listener.allow_sources_file`): which peer
//! addresses may open a connection at all. It is checked on the accepted socket (or on the
//! PROXY header's source), before any TLS work, so a peer outside it costs no crypto.
//!
//! This module owns parsing the file (AWS's
//! `ip-ranges.json`, or plain text with one CIDR a line, told apart by content), and
//! [`SourceSet`], the compiled set: prefixes merged into sorted, non-overlapping ranges,
//! searched by bisection, IPv4 and IPv6 apart, so a lookup in the ~150 CloudFront prefixes is
//! a handful of comparisons.
//!
//! What the keys mean ([`SourcePolicy`]):
//! - neither key: every source may connect, as without the feature;
//! - `allow_sources` and/or `allow_sources_file`: only the union of what they list;
//! - `allow_sources = []` without a file: a config error, not "refuse everyone". A list
//!   that refuses every connection is never what an operator means (it is typically a
//!   template whose variable was empty); one who wants the listener closed stops it.
//! - A file with no prefix at all is an error too, for the same reason: a truncated
//!   download must not close the listener to everyone, and on a reload the last good
//!   generation stays.
//!
//! It imports only `config` (the list as parsed, and the CIDR parser both share).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;

use crate::config::parse_cidr;

/// Who may connect, from the two config keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SourcePolicy {
    /// Neither `allow_sources` nor `allow_sources_file` is set: every source.
    #[default]
    AllowAll,
    /// Only these sources.
    Only(SourceSet),
}

impl SourcePolicy {
    /// The policy of the parsed keys: `list` from [`crate::config::parse_allow_sources`] (`None`: key
    /// absent), `file` from [`parse_sources_file`] (`None`: no file configured).
    pub fn from_parts(list: Option<Vec<IpNet>>, file: Option<Vec<IpNet>>) -> SourcePolicy {
        if list.is_none() && file.is_none() {
            return SourcePolicy::AllowAll;
        }
        SourcePolicy::Only(SourceSet::new(
            list.into_iter().flatten().chain(file.into_iter().flatten()),
        ))
    }

    /// Whether a peer at `ip` may connect.
    pub fn allows(&self, ip: IpAddr) -> bool {
        match self {
            SourcePolicy::AllowAll => true,
            SourcePolicy::Only(set) => set.contains(ip),
        }
    }

    /// The number of prefixes loaded (for `check`); `None` when every source is allowed.
    pub fn prefixes(&self) -> Option<usize> {
        match self {
            SourcePolicy::AllowAll => None,
            SourcePolicy::Only(set) => Some(set.len()),
        }
    }
}

/// A set of networks, compiled for fast membership tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceSet {
    /// Inclusive `(first, last)` address ranges: sorted, non-overlapping, non-adjacent.
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    /// Distinct prefixes given.
    prefixes: usize,
}

impl SourceSet {
    /// The set of every address in `networks`. Host bits are ignored (the parsers of this
    /// module refuse them); IPv4-mapped IPv6 networks (`::ffff:a.b.c.d/n`, n ≥ 96) count as
    /// the IPv4 networks they map.
    pub fn new(networks: impl IntoIterator<Item = IpNet>) -> SourceSet {
        let mut nets: Vec<IpNet> = networks.into_iter().map(|n| unmap(n).trunc()).collect();
        nets.sort();
        nets.dedup();
        let prefixes = nets.len();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in IpNet::aggregate(&nets) {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        SourceSet {
            v4: merge(v4),
            v6: merge(v6),
            prefixes,
        }
    }

    /// Whether `ip` is in the set. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
    /// dual-stack socket reports for an IPv4 peer) is looked up as the IPv4 address it is,
    /// so an IPv4 list works the same on a `[::]` listener.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => within(&self.v4, u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => within(&self.v4, u32::from(v4)),
                None => within(&self.v6, u128::from(a)),
            },
        }
    }

    /// The number of distinct prefixes loaded.
    pub fn len(&self) -> usize {
        self.prefixes
    }

    /// True when no prefix was given: no source is allowed.
    pub fn is_empty(&self) -> bool {
        self.prefixes == 0
    }

    /// The number of disjoint address ranges the prefixes merged into.
    pub fn ranges(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

/// Sorts ranges and merges those that overlap or touch.
fn merge<T: Copy + Ord + Successor>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match out.last_mut() {
            Some(prev) if first <= prev.1 || prev.1.successor() == Some(first) => {
                prev.1 = prev.1.max(last);
            }
            _ => out.push((first, last)),
        }
    }
    out
}

trait Successor: Sized {
    fn successor(self) -> Option<Self>;
}

impl Successor for u32 {
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl Successor for u128 {
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

/// Bisection: the last range starting at or before `x` must end at or after it.
fn within<T: Copy + Ord>(ranges: &[(T, T)], x: T) -> bool {
    let after = ranges.partition_point(|&(first, _)| first <= x);
    after
        .checked_sub(1)
        .and_then(|i| ranges.get(i))
        .is_some_and(|&(_, last)| last >= x)
}

/// `::ffff:a.b.c.d/n` (n ≥ 96) as `a.b.c.d/(n-96)`: peers in that range are looked up as
/// IPv4, so the entry must be IPv4 to ever match.
fn unmap(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net {
        if n.prefix_len() >= 96 {
            if let Some(v4) = n.addr().to_ipv4_mapped() {
                if let Ok(v4net) = Ipv4Net::new(v4, n.prefix_len() - 96) {
                    return IpNet::V4(v4net);
                }
            }
        }
    }
    net
}

/// Why an `allow_sources_file` was refused; the message names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourcesFileError {
    /// Not UTF-8.
    #[error("{}: not text; expected AWS's ip-ranges.json or one CIDR a line", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// A line of a text file is not a CIDR.
    #[error("{}: line {line}: {message}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A JSON file that is not usable AWS `ip-ranges.json`.
    #[error("{}: {message}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong: the parser's message, the entry at fault, or what is missing.
        message: String,
    },
    /// A text file with no CIDR in it.
    #[error("{}: lists no network (every line is blank or a comment); a source list that allows nobody is refused, so that a truncated download cannot close the listener", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// The service of `ip-ranges.json` whose prefixes CloudFront connects to origins from. The
/// `CLOUDFRONT` service lists the edge (viewer-facing) ranges too, which are not needed.
const ORIGIN_FACING: &str = "CLOUDFRONT_ORIGIN_FACING";

/// AWS's `ip-ranges.json`: only the fields used (AWS adds fields; unknown ones are fine).
#[derive(Deserialize)]
struct IpRanges {
    prefixes: Option<Vec<Entry>>,
    ipv6_prefixes: Option<Vec<Entry>>,
}

#[derive(Deserialize)]
struct Entry {
    ip_prefix: Option<String>,
    ipv6_prefix: Option<String>,
    service: Option<String>,
}

/// Parses the content of an `allow_sources_file` at `path`: AWS's `ip-ranges.json` when it is
/// a JSON object (its `CLOUDFRONT_ORIGIN_FACING` prefixes, IPv4 and IPv6), otherwise plain
/// text with one CIDR or address a line, `#` comments and blank lines allowed.
pub fn parse_sources_file(bytes: &[u8], path: &Path) -> Result<Vec<IpNet>, SourcesFileError> {
    let text = std::str::from_utf8(bytes).map_err(|_| SourcesFileError::NotText {
        path: path.to_owned(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with('{') {
        parse_ip_ranges(text, path)
    } else {
        parse_text(text, path)
    }
}

fn parse_text(text: &str, path: &Path) -> Result<Vec<IpNet>, SourcesFileError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        out.push(parse_cidr(entry).map_err(|message| SourcesFileError::Line {
            path: path.to_owned(),
            line: i + 1,
            message,
        })?);
    }
    if out.is_empty() {
        return Err(SourcesFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(out)
}

fn parse_ip_ranges(text: &str, path: &Path) -> Result<Vec<IpNet>, SourcesFileError> {
    let json = |message: String| SourcesFileError::Json {
        path: path.to_owned(),
        message,
    };
    let ranges: IpRanges = serde_json::from_str(text).map_err(|e| {
        json(format!(
            "is not AWS's ip-ranges.json ({e}); give that file, or plain text with one CIDR a line"
        ))
    })?;
    if ranges.prefixes.is_none() && ranges.ipv6_prefixes.is_none() {
        return Err(json(
            "is JSON but not AWS's ip-ranges.json: it has neither \"prefixes\" nor \"ipv6_prefixes\"".to_owned(),
        ));
    }
    let mut out = Vec::new();
    let mut others: std::collections::BTreeSet<&str> = Default::default();
    for (list, field, entries) in [
        ("prefixes", "ip_prefix", &ranges.prefixes),
        ("ipv6_prefixes", "ipv6_prefix", &ranges.ipv6_prefixes),
    ] {
        for (i, e) in entries.iter().flatten().enumerate() {
            let service = e.service.as_deref().unwrap_or("");
            if service != ORIGIN_FACING {
                others.insert(service);
                continue;
            }
            let prefix = if field == "ip_prefix" {
                &e.ip_prefix
            } else {
                &e.ipv6_prefix
            };
            let prefix = prefix
                .as_deref()
                .ok_or_else(|| json(format!("{list}[{i}] has no \"{field}\"")))?;
            let net = parse_cidr(prefix).map_err(|m| json(format!("{list}[{i}].{field}: {m}")))?;
            out.push(net);
        }
    }
    if out.is_empty() {
        // Security: fail closed at load rather than serve with an empty list, and say what the
        // file does hold, since the usual cause is a file filtered for the wrong service.
        let others: Vec<&str> = others.into_iter().collect();
        return Err(json(format!(
            "has no prefix whose service is {ORIGIN_FACING} (services found: {}); use AWS's full, current ip-ranges.json",
            if others.is_empty() {
                "none".to_owned()
            } else {
                others.join(", ")
            }
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_allow_sources, ConfigError};
    use ipnet::Ipv6Net;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(entries: &[&str]) -> SourceSet {
        SourceSet::new(entries.iter().map(|e| parse_cidr(e).unwrap()))
    }

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| (*e).to_owned()).collect()
    }

    fn invalid_key(e: ConfigError) -> (String, String) {
        match e {
            ConfigError::Invalid { key, message, .. } => (key, message),
            e => panic!("not Invalid: {e}"),
        }
    }

    const CONFIG: &str = "/etc/shield.toml";

    /// An excerpt of AWS's ip-ranges.json, with the services around the one that counts.
    const IP_RANGES: &str = r#"{
      "syncToken": "1718000000",
      "createDate": "2024-06-10-06-13-12",
      "prefixes": [
        {"ip_prefix": "3.2.34.0/26", "region": "af-south-1", "service": "AMAZON", "network_border_group": "af-south-1"},
        {"ip_prefix": "13.32.0.0/15", "region": "GLOBAL", "service": "CLOUDFRONT", "network_border_group": "GLOBAL"},
        {"ip_prefix": "3.172.0.0/18", "region": "GLOBAL", "service": "CLOUDFRONT_ORIGIN_FACING", "network_border_group": "GLOBAL"},
        {"ip_prefix": "13.113.196.64/26", "region": "ap-northeast-1", "service": "CLOUDFRONT_ORIGIN_FACING", "network_border_group": "ap-northeast-1"},
        {"ip_prefix": "52.94.76.0/22", "region": "us-west-2", "service": "EC2", "network_border_group": "us-west-2"}
      ],
      "ipv6_prefixes": [
        {"ipv6_prefix": "2600:1f14::/35", "region": "us-west-2", "service": "EC2", "network_border_group": "us-west-2"},
        {"ipv6_prefix": "2600:9000:2000::/36", "region": "GLOBAL", "service": "CLOUDFRONT", "network_border_group": "GLOBAL"},
        {"ipv6_prefix": "2600:9000:ddd::/48", "region": "GLOBAL", "service": "CLOUDFRONT_ORIGIN_FACING", "network_border_group": "GLOBAL"}
      ]
    }"#;

    // ---- the config list ----

    #[test]
    fn the_list_takes_v4_and_v6_cidrs_and_bare_addresses() {
        let nets = parse_allow_sources(
            Some(&list(&[
                "203.0.113.0/24",
                "2001:db8::/32",
                "198.51.100.7",
                "2001:db8:1::1",
            ])),
            false,
            Path::new(CONFIG),
        )
        .unwrap()
        .unwrap();
        let shown: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "203.0.113.0/24",
                "2001:db8::/32",
                "198.51.100.7/32",
                "2001:db8:1::1/128"
            ]
        );
    }

    #[test]
    fn a_bad_list_entry_is_named_by_its_index() {
        let e = parse_allow_sources(
            Some(&list(&[
                "203.0.113.0/24",
                "10.0.0.0/8",
                "::1",
                "300.1.2.3/8",
            ])),
            false,
            Path::new(CONFIG),
        )
        .unwrap_err();
        let shown = e.to_string();
        let (key, msg) = invalid_key(e);
        assert_eq!(key, "listener.allow_sources[3]");
        assert!(msg.contains("\"300.1.2.3/8\""), "{msg}");
        assert!(
            shown.starts_with("/etc/shield.toml: listener.allow_sources[3]"),
            "{shown}"
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "fe80::1%eth0",
            "example.com",
            "10.0.0.0/",
        ] {
            let e = parse_allow_sources(Some(&list(&[bad])), false, Path::new(CONFIG)).unwrap_err();
            assert_eq!(invalid_key(e).0, "listener.allow_sources[0]", "{bad:?}");
        }
    }

    #[test]
    fn a_cidr_with_host_bits_set_is_refused_with_both_readings() {
        let e = parse_allow_sources(Some(&list(&["203.0.113.7/16"])), false, Path::new(CONFIG))
            .unwrap_err();
        let (_, msg) = invalid_key(e);
        assert!(
            msg.contains("203.0.0.0/16") && msg.contains("203.0.113.7/32"),
            "{msg}"
        );
    }

    #[test]
    fn an_absent_list_allows_every_source() {
        let list = parse_allow_sources(None, false, Path::new(CONFIG)).unwrap();
        assert_eq!(list, None);
        let policy = SourcePolicy::from_parts(list, None);
        assert_eq!(policy, SourcePolicy::AllowAll);
        assert!(policy.allows(ip("192.0.2.1")) && policy.allows(ip("2001:db8::1")));
        assert_eq!(policy.prefixes(), None);
    }

    #[test]
    fn an_empty_list_without_a_file_is_refused() {
        let e = parse_allow_sources(Some(&[]), false, Path::new(CONFIG)).unwrap_err();
        let (key, msg) = invalid_key(e);
        assert_eq!(key, "listener.allow_sources");
        assert!(msg.contains("would refuse every connection"), "{msg}");
    }

    #[test]
    fn an_empty_list_with_a_file_leaves_the_file_alone_to_decide() {
        let list = parse_allow_sources(Some(&[]), true, Path::new(CONFIG)).unwrap();
        let file = parse_sources_file(b"203.0.113.0/24\n", Path::new("f.txt")).unwrap();
        let policy = SourcePolicy::from_parts(list, Some(file));
        assert!(policy.allows(ip("203.0.113.9")));
        assert!(!policy.allows(ip("198.51.100.1")));
        assert_eq!(policy.prefixes(), Some(1));
    }

    #[test]
    fn the_list_and_the_file_add_up() {
        let list = parse_allow_sources(Some(&list(&["198.51.100.0/24"])), true, Path::new(CONFIG))
            .unwrap();
        let file = parse_sources_file(b"203.0.113.0/24\n", Path::new("f.txt")).unwrap();
        let policy = SourcePolicy::from_parts(list, Some(file));
        assert!(policy.allows(ip("198.51.100.1")) && policy.allows(ip("203.0.113.1")));
        assert_eq!(policy.prefixes(), Some(2));
    }

    // ---- the file ----

    #[test]
    fn a_text_file_takes_comments_blank_lines_and_crlf() {
        let text = "# CloudFront, refreshed weekly\n\n203.0.113.0/24   # office\r\n  2001:db8::/32\n\t\n198.51.100.7\n";
        let nets = parse_sources_file(text.as_bytes(), Path::new("ranges.txt")).unwrap();
        assert_eq!(nets.len(), 3);
        let s = SourceSet::new(nets);
        assert!(s.contains(ip("203.0.113.200")) && s.contains(ip("2001:db8:ff::1")));
        assert!(s.contains(ip("198.51.100.7")) && !s.contains(ip("198.51.100.8")));
    }

    #[test]
    fn a_bad_line_is_named_with_the_file_and_its_number() {
        let text = "# header\n203.0.113.0/24\n\n203.0.113.0/33\n";
        let e = parse_sources_file(text.as_bytes(), Path::new("/etc/ranges.txt")).unwrap_err();
        assert!(matches!(e, SourcesFileError::Line { line: 4, .. }), "{e:?}");
        let shown = e.to_string();
        assert!(
            shown.starts_with("/etc/ranges.txt: line 4: \"203.0.113.0/33\""),
            "{shown}"
        );
    }

    #[test]
    fn a_text_file_with_no_network_is_refused() {
        let e = parse_sources_file(b"# nothing yet\n\n", Path::new("/etc/r.txt")).unwrap_err();
        assert_eq!(
            e,
            SourcesFileError::Empty {
                path: "/etc/r.txt".into()
            }
        );
        let e = parse_sources_file(b"", Path::new("/etc/r.txt")).unwrap_err();
        assert!(matches!(e, SourcesFileError::Empty { .. }));
    }

    #[test]
    fn a_file_that_is_not_utf8_is_refused() {
        let e = parse_sources_file(&[0xff, 0xfe, 0x00], Path::new("/etc/r.bin")).unwrap_err();
        assert!(e.to_string().starts_with("/etc/r.bin: not text"), "{e}");
    }

    #[test]
    fn ip_ranges_json_keeps_only_the_cloudfront_origin_facing_prefixes() {
        let nets = parse_sources_file(IP_RANGES.as_bytes(), Path::new("ip-ranges.json")).unwrap();
        let shown: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["3.172.0.0/18", "13.113.196.64/26", "2600:9000:ddd::/48"]
        );
        let s = SourceSet::new(nets);
        assert!(s.contains(ip("3.172.10.1")) && s.contains(ip("2600:9000:ddd::5")));
        // CLOUDFRONT (edge), AMAZON and EC2 ranges are not origin-facing.
        for other in [
            "13.32.0.1",
            "3.2.34.1",
            "52.94.76.1",
            "2600:9000:2000::1",
            "2600:1f14::1",
        ] {
            assert!(!s.contains(ip(other)), "{other}");
        }
    }

    #[test]
    fn ip_ranges_json_is_detected_after_a_bom_and_whitespace() {
        let text = format!("\u{feff}\n  {IP_RANGES}");
        assert_eq!(
            parse_sources_file(text.as_bytes(), Path::new("r.json"))
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn ip_ranges_json_without_origin_facing_prefixes_is_refused_naming_what_it_has() {
        let text = IP_RANGES.replace("CLOUDFRONT_ORIGIN_FACING", "S3");
        let e = parse_sources_file(text.as_bytes(), Path::new("/etc/ip-ranges.json")).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.starts_with(
                "/etc/ip-ranges.json: has no prefix whose service is CLOUDFRONT_ORIGIN_FACING"
            ) && shown.contains("AMAZON, CLOUDFRONT, EC2, S3"),
            "{shown}"
        );
    }

    #[test]
    fn json_that_is_not_ip_ranges_is_refused() {
        let e = parse_sources_file(br#"{"cidrs": ["203.0.113.0/24"]}"#, Path::new("r.json"))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("neither \"prefixes\" nor \"ipv6_prefixes\""),
            "{e}"
        );
        let e = parse_sources_file(br#"{"prefixes": [}"#, Path::new("r.json")).unwrap_err();
        assert!(e.to_string().contains("is not AWS's ip-ranges.json"), "{e}");
    }

    #[test]
    fn a_bad_origin_facing_prefix_in_json_is_named() {
        let text = IP_RANGES.replace("3.172.0.0/18", "3.172.0.0/99");
        let e = parse_sources_file(text.as_bytes(), Path::new("r.json")).unwrap_err();
        assert!(
            e.to_string().starts_with("r.json: prefixes[2].ip_prefix: "),
            "{e}"
        );
    }

    // ---- the set ----

    #[test]
    fn a_v4_range_contains_its_first_and_last_address_and_nothing_beside() {
        let s = set(&["203.0.113.0/24"]);
        assert!(s.contains(ip("203.0.113.0")) && s.contains(ip("203.0.113.255")));
        assert!(!s.contains(ip("203.0.112.255")) && !s.contains(ip("203.0.114.0")));
    }

    #[test]
    fn a_v6_range_contains_its_first_and_last_address_and_nothing_beside() {
        let s = set(&["2001:db8::/32"]);
        assert!(
            s.contains(ip("2001:db8::"))
                && s.contains(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"))
        );
        assert!(
            !s.contains(ip("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff"))
                && !s.contains(ip("2001:db9::"))
        );
    }

    #[test]
    fn the_extremes_of_the_address_spaces_work() {
        let s = set(&[
            "0.0.0.0/32",
            "255.255.255.255/32",
            "::/128",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
        ]);
        assert!(
            s.contains(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
                && s.contains(IpAddr::V4(Ipv4Addr::BROADCAST))
        );
        assert!(
            s.contains(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
                && s.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
        );
        assert!(!s.contains(ip("0.0.0.1")) && !s.contains(ip("::1")));
        let all = set(&["0.0.0.0/0", "::/0"]);
        assert!(all.contains(ip("8.8.8.8")) && all.contains(ip("2001:db8::1")));
    }

    #[test]
    fn v4_and_v6_are_separate() {
        let s = set(&["0.0.0.0/0"]);
        assert!(!s.contains(ip("2001:db8::1")));
        let s = set(&["::/0"]);
        // An IPv4 peer on a dual-stack socket is an IPv4 peer, not covered by ::/0.
        assert!(!s.contains(ip("192.0.2.1")) && !s.contains(ip("::ffff:192.0.2.1")));
    }

    #[test]
    fn an_ipv4_mapped_ipv6_peer_is_checked_as_ipv4() {
        let s = set(&["203.0.113.0/24"]);
        assert!(s.contains(ip("::ffff:203.0.113.9")));
        assert!(!s.contains(ip("::ffff:198.51.100.9")));
    }

    #[test]
    fn an_ipv4_mapped_ipv6_entry_counts_as_ipv4() {
        let s = set(&["::ffff:203.0.113.0/120"]);
        assert!(s.contains(ip("203.0.113.9")) && s.contains(ip("::ffff:203.0.113.9")));
        assert!(!s.contains(ip("203.0.114.1")));
    }

    #[test]
    fn overlapping_and_adjacent_prefixes_merge_into_few_ranges() {
        let s = set(&[
            "10.0.0.0/24",
            "10.0.1.0/24",   // adjacent: merges into 10.0.0.0/23
            "10.0.0.128/25", // inside
            "10.0.2.0/24",   // adjacent to the /23: one range 10.0.0.0-10.0.2.255
            "10.0.0.0/24",   // a duplicate
            "192.0.2.0/24",
            "2001:db8::/33",
            "2001:db8:8000::/33",
        ]);
        assert_eq!(s.len(), 7, "distinct prefixes");
        assert_eq!(s.ranges(), 3);
        for inside in [
            "10.0.0.0",
            "10.0.1.77",
            "10.0.2.255",
            "192.0.2.1",
            "2001:db8:ffff::1",
        ] {
            assert!(s.contains(ip(inside)), "{inside}");
        }
        for outside in ["10.0.3.0", "9.255.255.255", "192.0.3.0", "2001:db9::"] {
            assert!(!s.contains(ip(outside)), "{outside}");
        }
    }

    #[test]
    fn lookup_agrees_with_a_linear_scan_over_many_prefixes() {
        // ~150 prefixes, as CloudFront's list has, against the obvious implementation.
        let nets: Vec<IpNet> = (0u32..150)
            .map(|i| {
                let a = Ipv4Addr::from(0x0a00_0000 + i.wrapping_mul(0x0001_3700) % 0x00ff_0000);
                Ipv4Net::new(a, 16 + (i % 9) as u8).unwrap().trunc().into()
            })
            .chain((0u16..20).map(|i| {
                Ipv6Net::new(
                    Ipv6Addr::new(0x2600, 0x9000, i * 0x300, 0, 0, 0, 0, 0),
                    40 + i as u8,
                )
                .unwrap()
                .trunc()
                .into()
            }))
            .collect();
        let s = SourceSet::new(nets.clone());
        for probe in
            (0u32..20_000).map(|k| 0x0a00_0000u32.wrapping_add(k.wrapping_mul(0x0000_0d03)))
        {
            let a = IpAddr::V4(Ipv4Addr::from(probe));
            assert_eq!(s.contains(a), nets.iter().any(|n| n.contains(&a)), "{a}");
        }
        for k in 0u16..5000 {
            let a = IpAddr::V6(Ipv6Addr::new(
                0x2600,
                0x9000,
                k.wrapping_mul(13),
                k,
                0,
                0,
                0,
                1,
            ));
            assert_eq!(s.contains(a), nets.iter().any(|n| n.contains(&a)), "{a}");
        }
    }

    #[test]
    fn an_empty_set_allows_nobody() {
        let p = SourcePolicy::Only(SourceSet::new([]));
        assert!(!p.allows(ip("192.0.2.1")));
        assert_eq!(p.prefixes(), Some(0));
    }
}
