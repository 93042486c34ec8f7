//! `mtls-shield status`: the trust page in a terminal. It asks a running shield's admin
//! listener for `/trust` and prints short, greppable lines (what expires, CRL freshness, the
//! clients seen, the last refusals), then `ATTENTION:` lines and an exit status a cron job or
//! a CI step can act on: 0 nothing needs attention, 2 something does, 1 the shield could not be
//! asked.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::Value;

/// Exit status when something needs attention.
pub(crate) const ATTENTION: u8 = 2;

/// How long the admin listener has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `status`.
pub(crate) fn run(
    admin: SocketAddr,
    token_file: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let token = match token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("--token-file {}", p.display()))?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned(),
        ),
        None => std::env::var("MTLS_SHIELD_ADMIN_TOKEN").ok(),
    };
    let body = fetch(admin, token.as_deref())?;
    let doc: Value = serde_json::from_str(&body)
        .with_context(|| format!("http://{admin}/trust did not answer with the trust document"))?;
    if json {
        println!("{body}");
    } else {
        print!("{}", summary(&doc));
    }
    let attention = doc["attention"].as_array().map_or(0, Vec::len);
    Ok(if attention == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(ATTENTION)
    })
}

/// `GET /trust` over plain HTTP/1.1: the body, or why not.
fn fetch(admin: SocketAddr, token: Option<&str>) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&admin, TIMEOUT).with_context(|| {
        format!(
            "cannot reach the admin listener at {admin} (is [admin] set and the shield running?)"
        )
    })?;
    s.set_read_timeout(Some(TIMEOUT))?;
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET /trust HTTP/1.1\r\nHost: {admin}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("the admin listener's answer has no header end")?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    match status {
        "200" => Ok(body.to_owned()),
        "401" => bail!("the admin listener wants a bearer token: --token-file FILE (or MTLS_SHIELD_ADMIN_TOKEN)"),
        other => bail!("http://{admin}/trust answered {other}: {}", body.trim()),
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// The document as short lines, one fact each.
pub(crate) fn summary(doc: &Value) -> String {
    let mut o = String::new();
    let g = &doc["generation"];
    let ready = if doc["ready"].as_bool() == Some(true) {
        "ready".to_owned()
    } else {
        format!("NOT READY ({})", s(&doc["not_ready_reason"]))
    };
    o += &format!(
        "generation {} loaded {} by {}; {ready}\n",
        g["id"],
        s(&g["loaded_at"]),
        s(&g["cause"])
    );
    for c in doc["server_certificates"].as_array().into_iter().flatten() {
        o += &format!(
            "server certificate {} expires {} ({} days)\n",
            s(&c["subject"]),
            s(&c["not_after"]),
            c["days_left"]
        );
    }
    for d in doc["trust_domains"].as_array().into_iter().flatten() {
        domain(&mut o, d);
    }
    clients(&mut o, doc);
    for r in doc["refusals"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .take(10)
    {
        o += &format!(
            "refusal {} {} {} {}\n",
            s(&r["at"]),
            s(&r["peer"]),
            s(&r["reason"]),
            s(&r["subject"])
        );
    }
    for a in doc["attention"].as_array().into_iter().flatten() {
        o += &format!("ATTENTION: {}\n", s(a));
    }
    o
}

fn domain(o: &mut String, d: &Value) {
    let name = s(&d["name"]);
    for a in d["anchors"].as_array().into_iter().flatten() {
        *o += &format!(
            "anchor {name} {} expires {} ({} days)\n",
            s(&a["subject"]),
            s(&a["not_after"]),
            a["days_left"]
        );
    }
    for c in d["crls"].as_array().into_iter().flatten() {
        *o += &format!(
            "crl {name} {} number {} next update {} ({} entries{})\n",
            s(&c["issuer"]),
            s(&c["number"]),
            s(&c["next_update"]),
            c["entries"],
            if c["in_use"].as_bool() == Some(true) {
                ""
            } else {
                ", superseded"
            }
        );
    }
    for u in d["crl_urls"].as_array().into_iter().flatten() {
        *o += &format!(
            "crl-url {name} {} last success {} result {}\n",
            s(&u["url"]),
            s(&u["last_success"]),
            s(&u["result"])
        );
    }
}

fn clients(o: &mut String, doc: &Value) {
    let list: Vec<&Value> = doc["clients"].as_array().into_iter().flatten().collect();
    let soon = list
        .iter()
        .filter(|c| c["days_left"].as_i64().is_some_and(|d| d < 30))
        .count();
    *o += &format!(
        "clients seen: {} ({soon} expire within 30 days)\n",
        list.len()
    );
    for c in list
        .iter()
        .filter(|c| c["days_left"].as_i64().is_some_and(|d| d < 30))
    {
        *o += &format!(
            "client {} {} expires {} ({} days){}\n",
            s(&c["domain"]),
            s(&c["subject"]),
            s(&c["not_after"]),
            c["days_left"],
            if c["accepted_now"].as_bool() == Some(true) {
                ""
            } else {
                ", no longer accepted"
            }
        );
    }
}
