//! A request's viewer certificate on the data path: read before the identity headers are
//! stripped, judged once the route is known, and turned into the upstream's identity headers.
//!
//! Security decisions, each pinned by a test in `tests/it/viewer.rs`:
//! - viewer headers count only on a connection whose own verified identity matches
//!   `[viewer.edges]`; on any other connection they are removed unjudged (and counted), so a
//!   client that may connect cannot claim to be a viewer;
//! - the judgement uses the generation in service, not the one the connection started on, so
//!   a reload, a fetched CRL or a changed OCSP answer applies to the next request;
//! - a refusal is a 403 that names no identity, before the upstream is contacted; the
//!   connection stays open for the other viewers on it;
//! - the raw viewer headers never reach the upstream: the identity headers describe the
//!   verified viewer (XFCC: the viewer's element, then the edge's, as Envoy's
//!   `APPEND_FORWARD`), or the edge alone when there is no verified viewer.

use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue};
use http::request::Parts;

use super::context::ConnContext;
use super::generation::Generation;
use crate::config::ViewerMode;
use crate::identity::names::XFCC;
use crate::ledger::Refused;
use crate::policy::{Lookup, Route};
use crate::proxy::record::ViewerNote;
use crate::viewer::{is_viewer_header, Presented, Viewer, ViewerRefusal};

/// The ledger's name for the viewer trust domain.
pub(crate) const VIEWER: &str = "viewer";

/// A request's viewer headers, as read before the identity headers are stripped.
// It lives on the stack for one request; boxing `Presented` would cost an allocation on every
// request from an edge.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ViewerInput {
    /// `[viewer]` is not set in the generation in service.
    Off,
    /// The connection is one of `[viewer.edges]`: its headers, and the generation that
    /// judges them.
    Edge(Arc<Generation>, Presented),
    /// The connection is not an edge: its viewer headers (if any) are removed unjudged.
    NotEdge(Arc<Generation>),
}

/// Reads the request's viewer headers, when its connection may carry them.
pub(crate) fn read(ctx: &ConnContext, headers: &HeaderMap) -> ViewerInput {
    // Without `[viewer]` this is one atomic load and a branch: no header is looked at (the
    // identity-header stripping removes viewer headers anyway).
    let in_service = ctx.trust.in_service();
    let (Some(policy), Some(trust)) = (&in_service.policy.viewer, &in_service.viewer) else {
        return ViewerInput::Off;
    };
    if policy.edges.allows(&ctx.identity) {
        let presented = trust.read(headers);
        return ViewerInput::Edge(arc_swap::Guard::into_inner(in_service), presented);
    }
    if headers.keys().any(is_viewer_header) {
        ctx.metrics.viewer_headers_removed();
    }
    ViewerInput::NotEdge(arc_swap::Guard::into_inner(in_service))
}

/// The verdict on a request's viewer: the verified viewer, `None` when the request passes
/// without one, or the refusal (already counted and logged). `route` is the route the
/// connection's generation chose.
pub(crate) async fn judge(
    ctx: &ConnContext,
    input: ViewerInput,
    route: Option<&Route>,
    parts: &Parts,
) -> Result<Option<Arc<Viewer>>, ViewerRefusal> {
    let (generation, presented) = match input {
        ViewerInput::Off => return Ok(None),
        ViewerInput::Edge(g, p) => (g, p),
        ViewerInput::NotEdge(g) => (g, Presented::default()),
    };
    let (Some(policy), Some(trust)) = (&generation.policy.viewer, &generation.viewer) else {
        return Ok(None);
    };
    let route = route_in(&generation, ctx, route, parts);
    let label = route.map(Route::shared_label);
    if policy.mode_for(route) == ViewerMode::Ignored {
        return Ok(None);
    }
    let now = super::trust::unix_now();
    let verdict = trust
        .judge_request(policy, route, &presented, now, || {
            ctx.metrics.viewer_verification()
        })
        .await;
    let refusal = match verdict {
        Ok(viewer) => {
            ctx.metrics.viewer_request(None, label);
            if let Some(v) = &viewer {
                let seen = v
                    .seen
                    .get_or_init(|| ctx.ledger.seen(v.identity(), VIEWER, now));
                if let Some(seen) = seen {
                    seen.request(now);
                }
            }
            return Ok(viewer);
        }
        Err(refusal) => refusal,
    };
    ctx.ledger.refused(
        Refused {
            at: now,
            peer: ctx.peer,
            reason: refusal.reason.as_str(),
            identity: refusal.identity.clone(),
        },
        VIEWER,
    );
    ctx.metrics
        .viewer_request(Some(refusal.reason.as_str()), label);
    let fingerprint = refusal.identity.as_ref().map(|i| i.fingerprint_hex());
    tracing::info!(
        target: crate::logs::target::REQUEST,
        peer = %ctx.peer,
        route = label.map_or("-", |l| &**l),
        reason = refusal.reason.as_str(),
        viewer_fingerprint = fingerprint.as_deref().unwrap_or("-"),
        detail = %refusal.detail,
        "viewer certificate refused; 403"
    );
    Err(refusal)
}

/// The route of the request in the judging generation: the connection's own lookup when the
/// generations agree, a fresh one when a reload came in between (the route's viewer rules
/// are trust, and trust is always the current generation's).
fn route_in<'g>(
    generation: &'g Generation,
    ctx: &'g ConnContext,
    route: Option<&'g Route>,
    parts: &Parts,
) -> Option<&'g Route> {
    if generation.id == ctx.generation.id {
        return route;
    }
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok());
    match generation
        .policy
        .routes
        .lookup(host, &parts.method, parts.uri.path())
    {
        Lookup::Route(r) => Some(r),
        _ => None,
    }
}

/// The access-log note of a verified viewer.
pub(crate) fn accepted_note(viewer: &Viewer) -> ViewerNote {
    ViewerNote {
        reason: None,
        identity: Some(viewer.identity().clone()),
    }
}

/// The access-log note of a refused one.
pub(crate) fn refused_note(refusal: ViewerRefusal) -> ViewerNote {
    ViewerNote {
        reason: Some(refusal.reason.as_str()),
        identity: refusal.identity,
    }
}

/// Replaces the edge's identity headers with the viewer's. XFCC keeps both: the viewer's
/// element first, then the edge's.
pub(crate) fn set_identity(headers: &mut HeaderMap, ctx: &ConnContext, viewer: &Viewer) {
    for (name, _) in &ctx.identity_headers {
        headers.remove(name);
    }
    for (name, value) in &viewer.headers {
        if *name == XFCC {
            let edge = ctx.identity_headers.iter().find(|(n, _)| *n == XFCC);
            if let Some((_, edge)) = edge {
                let mut both = Vec::with_capacity(value.len() + 1 + edge.len());
                both.extend_from_slice(value.as_bytes());
                both.push(b',');
                both.extend_from_slice(edge.as_bytes());
                // Two valid header values joined by a comma are a valid header value.
                if let Ok(v) = HeaderValue::from_bytes(&both) {
                    headers.insert(XFCC, v);
                    continue;
                }
            }
        }
        headers.insert(name.clone(), value.clone());
    }
}
