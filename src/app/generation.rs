//! Building a [`Generation`] from one config: every file it names is read, the policy is
//! compiled, the TLS state and the upstream clients are made. Nothing is half-built: any
//! failure names the file (or the key) and leaves the generation in service untouched.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::policy::{parse_sources_file, Policy, SourcePolicy, SourcesFileError};
use crate::proxy::connector::Material;
pub(crate) use crate::proxy::generation::Generation;
use crate::proxy::upstream::Upstream;
use crate::tls::load::{self, LoadError};
use crate::tls::state::BuildInputs;
use crate::tls::TlsState;
use crate::viewer::ViewerTrust;

/// Why a generation could not be built: one line naming the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    /// A file named by the config.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// `listener.allow_sources_file` is not a list of networks.
    #[error(transparent)]
    Sources(#[from] SourcesFileError),
    /// An allow-list entry or a route does not compile.
    #[error(transparent)]
    Policy(#[from] crate::config::ConfigError),
}

/// The client of one upstream: `previous`'s, with its warm pool, when its settings and TLS files
/// did not change; otherwise a new one.
fn client_for(
    cfg: &crate::config::UpstreamConfig,
    previous: Option<&Arc<Upstream>>,
) -> Result<Arc<Upstream>, BuildError> {
    let material = Material::read(cfg)?;
    Ok(match previous {
        Some(p) if p.reusable_for(cfg, &material) => p.clone(),
        _ => Arc::new(Upstream::new(cfg, material)?),
    })
}

/// `listener.allow_sources`, with the networks of `allow_sources_file` read now (the file is
/// reloaded like every file).
fn source_policy(config: &Config) -> Result<SourcePolicy, BuildError> {
    let file = match &config.listener.allow_sources_file {
        Some(path) => {
            let bytes = load::read(path, "allow_sources_file")?;
            Some(parse_sources_file(&bytes, path)?)
        }
        None => None,
    };
    Ok(SourcePolicy::from_parts(config.allow_sources.clone(), file))
}

/// The token of `admin.bearer_token_file`: its first line, trimmed. An empty one is refused
/// (fail closed: it would let anyone in who sends an empty token).
fn admin_token(admin: &Option<crate::config::AdminConfig>) -> Result<Option<Box<str>>, BuildError> {
    let Some(path) = admin.as_ref().and_then(|a| a.bearer_token_file.as_ref()) else {
        return Ok(None);
    };
    let bytes = load::read(path, "admin.bearer_token_file")?;
    let text = String::from_utf8_lossy(&bytes);
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(LoadError::new(path, "admin.bearer_token_file is empty; write a long random token into it (e.g. openssl rand -hex 32)").into());
    }
    Ok(Some(token.into()))
}

/// Loads every file `config` names and builds generation `id`. `previous` lends its upstream
/// pools when the upstream settings and TLS files did not change, so a certificate reload
/// does not drop warm connections.
pub(crate) fn build(
    config: Config,
    id: u64,
    previous: Option<&Generation>,
    inputs: &BuildInputs,
) -> Result<Generation, BuildError> {
    let policy = Arc::new(Policy::compile(&config)?);
    let tls = Arc::new(TlsState::build_with(&config, &policy, inputs)?);
    let upstream = client_for(&config.upstream, previous.map(|g| &g.upstream))?;
    let mut upstreams = HashMap::new();
    for (name, cfg) in &config.upstreams {
        let before = previous.and_then(|g| g.upstreams.get(name));
        upstreams.insert(name.clone(), client_for(cfg, before)?);
    }
    let sources = source_policy(&config)?;
    let config_admin = config.admin.clone();
    let viewer = match (&config.viewer, &policy.viewer) {
        (Some(v), Some(p)) => Some(Arc::new(ViewerTrust::build(
            v,
            p.allow.clone(),
            &config.forward,
            &inputs.fetched,
            inputs.viewer_ocsp.as_ref(),
        )?)),
        _ => None,
    };
    Ok(Generation::new(
        id,
        Arc::new(config),
        policy,
        tls,
        upstream,
        upstreams,
        sources,
    )
    .with_viewer(viewer)
    .with_admin_token(admin_token(&config_admin)?))
}
