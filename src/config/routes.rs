//! `[[routes]]` as the config file spells it. The entries are compiled, checked and matched
//! by `policy::routes`; here they are input only.

use serde::{Deserialize, Serialize};

use super::allow::AllowConfig;

/// One `[[routes]]` entry as the config file spells it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// The route's label in metrics and logs; absent: its index in the `[[routes]]` list.
    pub name: Option<String>,
    /// The path the route covers, by whole segments; absent: `/` (every path).
    pub path_prefix: Option<String>,
    /// `origin.example.com` (exact) or `*.example.com` (any name under it); absent: any
    /// host, and requests without one.
    pub host: Option<String>,
    /// The HTTP methods the route covers; absent: every method.
    pub methods: Option<Vec<String>>,
    /// The name of an `[upstreams.NAME]` table; absent: the default `[upstream]`.
    pub upstream: Option<String>,
    /// Who may use the route, on top of the connection-level policy (the same keys as
    /// `[client_auth.allow]`); absent: every client that connected.
    pub allow: Option<AllowConfig>,
    /// Whether the route needs a viewer certificate (`[viewer]`); absent: `viewer.required`.
    pub viewer: Option<ViewerMode>,
    /// Which viewers may use the route, on top of `[viewer.allow]` (the keys of
    /// `[client_auth.allow]`); absent: every viewer that verified.
    pub viewer_allow: Option<AllowConfig>,
}

/// `routes[].viewer`: whether a route needs a viewer certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewerMode {
    /// 403 without a verified viewer.
    Required,
    /// A viewer certificate, when sent, is verified (and refused if it fails); none passes.
    Optional,
    /// Viewer headers are removed unjudged; the request carries the edge's identity only.
    Ignored,
}
