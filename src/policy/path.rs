//! The request-path normaliser that route matching runs on ([`normalize_path`]).
//!
//! Security-critical: a request that reaches a path under a route's prefix by a spelling the
//! normaliser reads differently from the upstream escapes that route's policy. So the normal
//! form is built to be the one every mainstream upstream would agree on, and whatever another
//! server could read as a different path is refused (the reasons below, each answered 400).
//! [`super::routes`] compares route prefixes in this form; the tests there pin each trick.
//!
//! It is pure: it imports nothing of the crate.

use std::borrow::Cow;

// The reasons a path is refused, for the 400 log line.
pub(crate) const NOT_ABSOLUTE: &str = "the path does not start with \"/\"";
pub(crate) const BAD_PERCENT: &str = "invalid percent-encoding";
pub(crate) const ENCODED_SLASH: &str = "an encoded slash or backslash";
pub(crate) const ENCODED_SEMICOLON: &str = "an encoded \";\"";
pub(crate) const BACKSLASH: &str = "a backslash";
pub(crate) const CONTROL: &str = "a control character";
pub(crate) const DOUBLE_ENCODED: &str = "a double percent-encoding";
pub(crate) const DOT_WITH_PARAMS: &str = "a dot segment with parameters";
pub(crate) const EMPTY_WITH_PARAMS: &str = "parameters on an empty segment";
pub(crate) const DOTDOT_AFTER_EMPTY: &str = "a \"..\" after an empty segment";
pub(crate) const AMBIGUOUS: &str =
    "dot segments or percent-encodings that put the path under different routes depending on how they are read";

/// The normal form of a request path, which route matching runs on.
///
/// - Percent-encodings of unreserved characters (`ALPHA DIGIT - . _ ~`, RFC 3986 §2.3) are
///   decoded, and so are those of the sub-delimiters other than `;` and of `:` and `@`
///   (`! $ & ' ( ) * + , = : @`), which mean the same encoded or not to every upstream that
///   routes on the decoded path; other encodings keep their byte with upper-case hex, and a
///   character that may not appear raw in a path (a space, a non-ASCII character…) is
///   encoded the same way. So `/%61dmin`, `/caf%c3%a9` and `/café` become `/admin`,
///   `/caf%C3%A9` and `/caf%C3%A9`.
/// - Dot segments are resolved after decoding (RFC 3986 §5.2.4; a `..` above the root stays
///   at the root) and runs of `/` collapse; a trailing `/` is kept.
/// - `;params` (Java servers strip them from each segment before mapping) are kept in the
///   normal form; matching ignores them.
/// - Case is kept; matching ignores ASCII case, because many upstreams map paths
///   case-insensitively (IIS, macOS file systems, some frameworks by default) and a route
///   must never be bypassed by writing `/ADMIN`. A case-sensitive upstream that serves
///   `/ADMIN` as a different resource gets it under the `/admin` route's policy: stricter,
///   never wider.
/// - An empty path is `/`.
///
/// Refused, with the reason: a path that does not start with `/`; an encoded slash or
/// backslash (`%2F`, `%5C`: many upstreams decode them into separators, and a segment-wise
/// match before that decoding would be wrong); a raw backslash (a separator on Windows
/// servers); an invalid percent-encoding (`%zz`, `%4`); a control character, raw or
/// encoded (`%00` truncates paths in C-based servers); an encoded `;` (a server that
/// decodes before stripping parameters would cut the segment there); a double encoding
/// (`%252F`, which a server that decodes twice turns into `/`); a dot segment with
/// parameters (`..;/`, which Tomcat resolves as `..`); parameters on an empty segment
/// before the last (`/;x/admin`, which Java servers read as `//admin`); and a `..` right
/// after an empty segment (`/a//../b` is `/b` to a server that collapses slashes first
/// and `/a/b` to one that does not). Spring Security's StrictHttpFirewall refuses most
/// of these for the same reasons; no browser or mainstream client sends them.
///
/// Only the path is given: no query. Returns the input itself when it is already normal.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, &'static str> {
    if path.is_empty() {
        return Ok(Cow::Borrowed("/"));
    }
    if is_plainly_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let rest = path.strip_prefix('/').ok_or(NOT_ABSOLUTE)?;
    let (segments, trailing) = resolve(canonical_segments(rest, true)?, true)?;
    let mut out = String::with_capacity(path.len());
    out.push('/');
    out.push_str(&segments.join("/"));
    if trailing && !segments.is_empty() {
        out.push('/');
    }
    if has_double_encoding(&out) {
        return Err(DOUBLE_ENCODED);
    }
    Ok(if out == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(out)
    })
}

/// The fast path: only characters that are their own normal form, no empty and no dot
/// segment. Most request paths are like this.
fn is_plainly_normal(path: &str) -> bool {
    path.starts_with('/')
        && path.bytes().all(|b| b == b'/' || is_plain(b))
        && !path.contains("//")
        && !path.split('/').any(|s| s == "." || s == "..")
}

/// Unreserved characters (RFC 3986 §2.3).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The characters a segment carries raw in normal form, and that are decoded when encoded:
/// unreserved, sub-delims without `;`, `:` and `@` (RFC 3986 `pchar`). `;` is the parameter
/// delimiter and stays structural.
fn is_plain(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
        )
}

fn hex_value(b: &u8) -> Option<u8> {
    char::from(*b).to_digit(16).map(|d| d as u8)
}

fn push_encoded(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

/// The segments of a path after its leading `/`, each in canonical characters: `decode`
/// says whether encoded plain characters are decoded (the normal reading) or kept as
/// encodings (the reading of an upstream that routes on the raw path). Every refusal that
/// does not depend on segment structure happens here.
pub(super) fn canonical_segments(rest: &str, decode: bool) -> Result<Vec<String>, &'static str> {
    let mut segments = Vec::new();
    for raw in rest.split('/') {
        let bytes = raw.as_bytes();
        let mut out = String::with_capacity(raw.len());
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'%' {
                let v = match (
                    bytes.get(i + 1).and_then(hex_value),
                    bytes.get(i + 2).and_then(hex_value),
                ) {
                    (Some(hi), Some(lo)) => (hi << 4) | lo,
                    _ => return Err(BAD_PERCENT),
                };
                i += 3;
                match v {
                    b'/' | b'\\' => return Err(ENCODED_SLASH),
                    b';' => return Err(ENCODED_SEMICOLON),
                    v if v < 0x20 || v == 0x7f => return Err(CONTROL),
                    v if decode && is_plain(v) => out.push(char::from(v)),
                    v => push_encoded(&mut out, v),
                }
            } else {
                i += 1;
                match b {
                    b'\\' => return Err(BACKSLASH),
                    b if b < 0x20 || b == 0x7f => return Err(CONTROL),
                    b';' => out.push(';'),
                    b if is_plain(b) => out.push(char::from(b)),
                    // Raw bytes that may not appear in a path (a space, `"`, a byte of a
                    // non-ASCII character…) take their encoded form, so that the raw and the
                    // encoded spelling compare equal.
                    b => push_encoded(&mut out, b),
                }
            }
        }
        segments.push(out);
    }
    Ok(segments)
}

/// A segment's name: the part before its `;params`.
pub(super) fn segment_name(segment: &str) -> &str {
    segment.split(';').next().unwrap_or(segment)
}

/// The segment names of a normal path, for matching; a trailing `/` adds none.
pub(super) fn names(normal: &str) -> impl Iterator<Item = &str> + Clone {
    normal
        .strip_prefix('/')
        .unwrap_or(normal)
        .split('/')
        .filter(|s| !s.is_empty())
        .map(segment_name)
}

/// Collapses empty segments and, with `resolve_dots`, resolves `.` and `..`; returns the
/// segments and whether the path ends with `/`.
pub(super) fn resolve(
    segments: Vec<String>,
    resolve_dots: bool,
) -> Result<(Vec<String>, bool), &'static str> {
    let n = segments.len();
    let mut out: Vec<String> = Vec::with_capacity(n);
    let mut trailing = false;
    let mut previous_empty = false;
    for (i, s) in segments.into_iter().enumerate() {
        let last = i + 1 == n;
        let (name, params) = match s.split_once(';') {
            Some((name, _)) => (name, true),
            None => (s.as_str(), false),
        };
        if params && (name == "." || name == "..") {
            return Err(DOT_WITH_PARAMS);
        }
        // `/app/;jsessionid=…` (the last segment) is what Java URL rewriting produces for a
        // folder; in the middle such a segment only serves to confuse.
        if params && name.is_empty() && !last {
            return Err(EMPTY_WITH_PARAMS);
        }
        let after_empty = previous_empty;
        previous_empty = s.is_empty();
        if s.is_empty() || (resolve_dots && name == ".") {
            trailing = last;
            continue;
        }
        if resolve_dots && name == ".." {
            if after_empty {
                return Err(DOTDOT_AFTER_EMPTY);
            }
            out.pop();
            trailing = last;
            continue;
        }
        out.push(s);
        trailing = false;
    }
    Ok((out, trailing))
}

/// `%25` followed by two hex digits: what a second decoding would turn into another byte.
fn has_double_encoding(normal: &str) -> bool {
    let bytes = normal.as_bytes();
    normal.match_indices("%25").any(|(i, _)| {
        bytes.get(i + 3).and_then(hex_value).is_some()
            && bytes.get(i + 4).and_then(hex_value).is_some()
    })
}
