//! The trust page (`GET /` on the admin listener): the `/trust` document for a person, as one
//! server-rendered HTML page with no external asset and no build step. It works without
//! JavaScript; a short inline script only adds sorting by a click on a column head.
//!
//! Security: every value that comes from a certificate, a CRL, a peer or a config is escaped
//! ([`esc`]) before it is written, so a hostile subject cannot add markup or script. The page
//! sends no cookie and reads nothing from the request.

use std::fmt::Write as _;

use super::report::{
    CertReport, ClientReport, CrlReport, DomainReport, TrustReport, UrlReport, CRL_SOON_SECS,
    LATER_DAYS, SOON_DAYS,
};

/// HTML-escapes text for element content and quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}\
table{border-collapse:collapse;margin:.4em 0;font-size:.9em}\
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}\
th{background:#f2f2f2;cursor:pointer}td.mono{font-family:monospace;font-size:.85em}\
.ok{background:#e6f4ea}.warn{background:#fff4d6}.bad{background:#fde2e1}\
.badge{font-weight:bold;padding:0 .3em;border-radius:3px}\
ul.attention li{margin:.2em 0}";

/// Sorts a table by the clicked column (numbers numerically): the only script.
const SCRIPT: &str = "document.querySelectorAll('table.sortable th').forEach(function(th){\
th.addEventListener('click',function(){var t=th.closest('table'),i=Array.prototype.indexOf.call(th.parentNode.children,th),\
b=t.tBodies[0],r=Array.prototype.slice.call(b.rows),d=th.dataset.dir==='a'?-1:1;th.dataset.dir=d===1?'a':'d';\
r.sort(function(x,y){var p=x.cells[i].textContent,q=y.cells[i].textContent,m=parseFloat(p),n=parseFloat(q);\
return (isNaN(m)||isNaN(n)?p.localeCompare(q):m-n)*d;});r.forEach(function(e){b.appendChild(e);});});});";

/// The whole page.
pub(crate) fn render(r: &TrustReport) -> String {
    let mut o = String::with_capacity(16 * 1024);
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>mtls-shield trust</title><style>{STYLE}</style></head><body>\
         <h1>mtls-shield trust</h1>"
    );
    header(&mut o, r);
    attention(&mut o, r);
    expiring(&mut o, r);
    for d in &r.trust_domains {
        domain(&mut o, d);
    }
    clients(&mut o, &r.clients);
    refusals(&mut o, r);
    posture(&mut o, r);
    reloads(&mut o, r);
    let _ = write!(o, "<script>{SCRIPT}</script></body></html>");
    o
}

fn header(o: &mut String, r: &TrustReport) {
    let (class, words) = if r.ready {
        ("ok", "ready".to_owned())
    } else {
        (
            "bad",
            format!(
                "NOT READY: {}",
                esc(r.not_ready_reason.as_deref().unwrap_or("-"))
            ),
        )
    };
    let _ = write!(
        o,
        "<p id=\"health\" class=\"{class}\"><span class=\"badge\">{words}</span> \
         &middot; generation {} (loaded {} by {}) &middot; checked {}</p>",
        r.generation.id,
        esc(r.generation.loaded_at.as_deref().unwrap_or("-")),
        esc(r.generation.cause.as_deref().unwrap_or("-")),
        esc(&r.checked_at)
    );
}

fn attention(o: &mut String, r: &TrustReport) {
    o.push_str("<h2>Needs attention</h2>");
    if r.attention.is_empty() {
        o.push_str("<p id=\"attention\" class=\"ok\">Nothing needs attention.</p>");
        return;
    }
    o.push_str("<ul id=\"attention\" class=\"attention\">");
    for a in &r.attention {
        let _ = write!(o, "<li class=\"bad\">ATTENTION: {}</li>", esc(a));
    }
    o.push_str("</ul>");
}

/// A SHA-256 in hex, shown by its first 16 digits with the whole in the tooltip (and in the
/// text a browser copies or searches: the full value stays in the DOM).
fn short_hash(hex: &str) -> String {
    let hex = esc(hex);
    let head: String = hex.chars().take(16).collect();
    format!("<span title=\"{hex}\">{head}&hellip;</span>")
}

/// How close a notAfter is, in colour and in words.
fn expiry_cell(days_left: i64) -> (&'static str, String) {
    if days_left < 0 {
        ("bad", format!("EXPIRED {} days ago", -days_left))
    } else if days_left < SOON_DAYS {
        ("bad", format!("expires in {days_left} days"))
    } else if days_left < LATER_DAYS {
        ("warn", format!("expires in {days_left} days"))
    } else {
        ("ok", format!("{days_left} days left"))
    }
}

fn expiring(o: &mut String, r: &TrustReport) {
    let _ = write!(
        o,
        "<h2>Expiring within {LATER_DAYS} days</h2><table id=\"expiring\" class=\"sortable\">\
         <thead><tr><th>what</th><th>subject</th><th>notAfter</th><th>days left</th></tr></thead><tbody>"
    );
    let mut rows = 0;
    let mut row = |o: &mut String, what: &str, c: &CertReport| {
        if c.days_left < LATER_DAYS {
            let (class, words) = expiry_cell(c.days_left);
            let _ = write!(
                o,
                "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{words}</td></tr>",
                esc(what),
                esc(&c.subject),
                esc(&c.not_after)
            );
            rows += 1;
        }
    };
    for c in &r.server_certificates {
        row(o, "server certificate", c);
    }
    for d in &r.trust_domains {
        for a in &d.anchors {
            row(o, &format!("{} anchor", d.name), a);
        }
    }
    for c in r.clients.iter().filter(|c| c.accepted_now) {
        let as_cert = CertReport {
            subject: c.subject.clone(),
            sans: Vec::new(),
            spki_sha256: None,
            not_after: c.not_after.clone(),
            days_left: c.days_left,
        };
        row(o, &format!("{} seen", c.domain), &as_cert);
    }
    if rows == 0 {
        let _ = write!(
            o,
            "<tr class=\"ok\"><td colspan=\"4\">nothing expires within {LATER_DAYS} days</td></tr>"
        );
    }
    o.push_str("</tbody></table>");
}

fn domain(o: &mut String, d: &DomainReport) {
    let name = esc(d.name);
    let _ = write!(
        o,
        "<h2>Trust domain: {name}</h2><table id=\"anchors-{name}\" class=\"sortable\"><thead><tr>\
         <th>anchor</th><th>SPKI SHA-256</th><th>notAfter</th><th>days left</th></tr></thead><tbody>"
    );
    for a in &d.anchors {
        let (class, words) = expiry_cell(a.days_left);
        let _ = write!(
            o,
            "<tr class=\"{class}\"><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{words}</td></tr>",
            esc(&a.subject),
            a.spki_sha256.as_deref().map_or_else(|| "-".to_owned(), short_hash),
            esc(&a.not_after)
        );
    }
    o.push_str("</tbody></table>");
    crls(o, &name, &d.crls);
    urls(o, &name, &d.crl_urls);
    if let Some(oc) = &d.ocsp {
        let _ = write!(
            o,
            "<p>OCSP: {} answers cached, the oldest {} s old.</p>",
            oc.cache_entries, oc.oldest_answer_age_seconds
        );
    }
}

fn crls(o: &mut String, name: &str, list: &[CrlReport]) {
    if list.is_empty() {
        o.push_str("<p>No CRL.</p>");
        return;
    }
    let _ = write!(
        o,
        "<table id=\"crls-{name}\" class=\"sortable\"><thead><tr><th>CRL issuer</th><th>scope</th>\
         <th>source</th><th>number</th><th>thisUpdate</th><th>nextUpdate</th><th>entries</th>\
         <th>state</th></tr></thead><tbody>"
    );
    for c in list {
        let state = if c.in_use { "in use" } else { "superseded" };
        let (class, flag) = match c.next_update_in {
            Some(secs) if c.in_use && secs < 0 => ("bad", "PAST nextUpdate: "),
            Some(secs) if c.in_use && secs < CRL_SOON_SECS => ("warn", "due soon: "),
            _ => ("ok", ""),
        };
        let _ = write!(
            o,
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{state}</td></tr>",
            esc(&c.issuer),
            esc(c.scope.as_deref().unwrap_or("whole CRL")),
            esc(&c.source),
            esc(c.number.as_deref().unwrap_or("-")),
            esc(&c.this_update),
            format_args!("{flag}{}", esc(c.next_update.as_deref().unwrap_or("-"))),
            c.entries
        );
    }
    o.push_str("</tbody></table>");
}

fn urls(o: &mut String, name: &str, list: &[UrlReport]) {
    if list.is_empty() {
        return;
    }
    let _ = write!(
        o,
        "<table id=\"crl-urls-{name}\"><thead><tr><th>CRL URL</th><th>last attempt</th>\
         <th>last success</th><th>result</th><th>next fetch</th></tr></thead><tbody>"
    );
    for u in list {
        let failing = u
            .result
            .as_deref()
            .is_some_and(|r| r.starts_with("failure"));
        let (class, flag) = if failing {
            ("bad", "FAILING: ")
        } else {
            ("ok", "")
        };
        let _ = write!(
            o,
            "<tr class=\"{class}\"><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{flag}{}</td><td>{}</td></tr>",
            esc(&u.url),
            esc(u.last_attempt.as_deref().unwrap_or("-")),
            esc(u.last_success.as_deref().unwrap_or("never")),
            esc(u.result.as_deref().unwrap_or("-")),
            esc(u.next_fetch.as_deref().unwrap_or("-"))
        );
    }
    o.push_str("</tbody></table>");
}

fn clients(o: &mut String, list: &[ClientReport]) {
    let _ = write!(
        o,
        "<h2>Clients seen ({})</h2><table id=\"clients\" class=\"sortable\"><thead><tr>\
         <th>domain</th><th>subject</th><th>issuer</th><th>serial</th><th>SHA-256</th>\
         <th>days left</th><th>first seen</th><th>last seen</th><th>connections</th>\
         <th>requests</th><th>last refusal</th><th>accepted now</th></tr></thead><tbody>",
        list.len()
    );
    for c in list.iter().rev() {
        let (class, words) = expiry_cell(c.days_left);
        let class = if c.accepted_now { class } else { "bad" };
        let _ = write!(
            o,
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td>\
             <td class=\"mono\">{}</td><td>{words}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(c.domain),
            esc(&c.subject),
            esc(&c.issuer),
            esc(&c.serial),
            short_hash(&c.fingerprint_sha256),
            esc(&c.first_seen),
            esc(&c.last_seen),
            c.connections,
            c.requests,
            esc(c.last_refusal.unwrap_or("-")),
            if c.accepted_now { "yes" } else { "NO" }
        );
    }
    o.push_str("</tbody></table>");
}

fn refusals(o: &mut String, r: &TrustReport) {
    let _ = write!(
        o,
        "<h2>Last refusals ({})</h2><table id=\"refusals\" class=\"sortable\"><thead><tr>\
         <th>time</th><th>peer</th><th>reason</th><th>what it means</th><th>subject</th>\
         <th>issuer</th><th>SHA-256</th></tr></thead><tbody>",
        r.refusals.len()
    );
    for f in r.refusals.iter().rev() {
        let _ =
            write!(
            o,
            "<tr class=\"bad\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"mono\">{}</td></tr>",
            esc(&f.at),
            esc(&f.peer),
            esc(f.reason),
            esc(f.explain),
            esc(f.subject.as_deref().unwrap_or("-")),
            esc(f.issuer.as_deref().unwrap_or("-")),
            f.fingerprint_sha256.as_deref().map_or_else(|| "-".to_owned(), short_hash)
        );
    }
    o.push_str("</tbody></table>");
}

fn posture(o: &mut String, r: &TrustReport) {
    o.push_str(
        "<h2>TLS posture</h2><table id=\"tls\" class=\"sortable\"><thead><tr><th>version</th>\
         <th>suite</th><th>group</th><th>handshakes</th><th>share</th></tr></thead><tbody>",
    );
    for p in &r.tls {
        let pq = if p.group == "X25519MLKEM768" {
            " (hybrid post-quantum)"
        } else {
            ""
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}{pq}</td><td>{}</td><td>{:.1}%</td></tr>",
            esc(p.version),
            esc(p.suite),
            esc(p.group),
            p.count,
            p.share_pct
        );
    }
    o.push_str("</tbody></table>");
}

fn reloads(o: &mut String, r: &TrustReport) {
    o.push_str(
        "<h2>Reloads</h2><table id=\"reloads\"><thead><tr><th>time</th><th>cause</th>\
         <th>outcome</th><th>generation</th><th>error</th></tr></thead><tbody>",
    );
    for l in r.reloads.iter().rev() {
        let class = if l.error.is_none() { "ok" } else { "bad" };
        let _ = write!(
            o,
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&l.at),
            esc(&l.cause),
            l.outcome,
            l.generation
                .map_or_else(|| "-".to_owned(), |g| g.to_string()),
            esc(l.error.as_deref().unwrap_or("-"))
        );
    }
    o.push_str("</tbody></table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_a_field_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn expiry_is_said_in_words_as_well_as_colour() {
        assert_eq!(expiry_cell(-2), ("bad", "EXPIRED 2 days ago".to_owned()));
        assert_eq!(expiry_cell(3), ("bad", "expires in 3 days".to_owned()));
        assert_eq!(expiry_cell(20), ("warn", "expires in 20 days".to_owned()));
        assert_eq!(expiry_cell(90), ("ok", "90 days left".to_owned()));
    }
}
