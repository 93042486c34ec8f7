//! Policy: what the checked config means for a connection and a request, compiled once per
//! generation and matched on the data path.
//!
//! `config` is input only: it reads and checks the file, and holds the lists as written.
//! This layer compiles them into what is matched, and owns the matching:
//! - [`allow`]: an identity allow-list, compiled and matched against a verified identity;
//! - [`routes`]: `[[routes]]` compiled into a [`RouteTable`], and the lookup of a request's
//!   route;
//! - [`path`]: the request-path normaliser routes match on (security-critical, on its own);
//! - [`sources`]: the source allow-list and the `ip-ranges.json` parser.
//!
//! It sits above `config` and `identity` and below `tls` (the verifier matches the
//! allow-list inside the handshake). Model: linkerd2-proxy's `server-policy` types, apart
//! from its inbound stack.

pub mod allow;
pub mod path;
pub mod routes;
pub mod sources;

pub use allow::{AllowError, AllowList};
pub use path::normalize_path;
pub use routes::{HostPattern, Lookup, Route, RouteTable};
pub use sources::{parse_sources_file, SourcePolicy, SourceSet, SourcesFileError};

use crate::config::{AllowConfig, Config, ConfigError, ViewerMode};

/// The compiled policy of one config: built by [`Policy::compile`], before anything else of a
/// generation, so a malformed entry refuses the whole config (at start, by `check`, or by a
/// reload, which then keeps the last good generation).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// `[client_auth.allow]`: who may connect.
    pub allow: AllowList,
    /// `[client_auth.report_only.allow]`, when the candidate has its own.
    pub report_only_allow: Option<AllowList>,
    /// `[[routes]]`.
    pub routes: RouteTable,
    /// `[viewer]`'s edges and allow-list, when viewer certificates are judged.
    pub viewer: Option<ViewerPolicy>,
}

/// Who may carry viewer certificates, and which viewers may pass.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewerPolicy {
    /// `[viewer.edges]`: the connections whose viewer headers count.
    pub edges: AllowList,
    /// `[viewer.allow]`: which verified viewers may pass.
    pub allow: AllowList,
    /// `viewer.required`: the mode of a request no route covers, and of routes that do not
    /// say.
    pub required: bool,
}

impl ViewerPolicy {
    /// What a request on `route` (`None`: no route covers it) needs of its viewer.
    pub fn mode_for(&self, route: Option<&Route>) -> ViewerMode {
        match route.and_then(Route::viewer) {
            Some(mode) => mode,
            None if self.required => ViewerMode::Required,
            None => ViewerMode::Optional,
        }
    }
}

impl Policy {
    /// Compiles the allow-lists and routes of `config`. An error names the config file and
    /// the dotted key of the entry, like every config error.
    pub fn compile(config: &Config) -> Result<Policy, ConfigError> {
        let allow = compile_allow(config, "client_auth.allow", &config.client_auth.allow)?;
        let report_only_allow = match config
            .client_auth
            .report_only
            .as_ref()
            .and_then(|r| r.allow.as_ref())
        {
            Some(a) => Some(compile_allow(config, "client_auth.report_only.allow", a)?),
            None => None,
        };
        let routes = RouteTable::compile(
            config.routes.clone(),
            config.upstreams.keys().map(String::as_str),
            config.viewer.is_some(),
            &config.source,
        )?;
        let viewer = match &config.viewer {
            Some(v) => Some(ViewerPolicy {
                edges: compile_allow(config, "viewer.edges", &v.edges)?,
                allow: compile_allow(config, "viewer.allow", &v.allow)?,
                required: v.required,
            }),
            None => None,
        };
        Ok(Policy {
            allow,
            report_only_allow,
            routes,
            viewer,
        })
    }
}

/// The allow table at `table`, compiled; a malformed entry is keyed under it.
fn compile_allow(
    config: &Config,
    table: &str,
    lists: &AllowConfig,
) -> Result<AllowList, ConfigError> {
    AllowList::compile(lists).map_err(|e| ConfigError::Invalid {
        path: config.source.clone(),
        key: format!("{table}.{}", e.key),
        message: e.message,
    })
}
