//! [`Generation`]: one complete, validated state built from one config: the config itself,
//! the TLS state and the upstream client, with the [`Frontend`] the data path uses.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::policy::{parse_sources_file, Policy, SourcePolicy, SourcesFileError};
use crate::proxy::connector::Material;
use crate::proxy::frontend::Frontend;
use crate::proxy::upstream::Upstream;
use crate::tls::load::{self, LoadError};
use crate::tls::state::BuildInputs;
use crate::tls::TlsState;
use crate::x509::Inventory;

/// Everything a reload replaces at once. Connections keep the frontend they started on.
#[derive(Debug)]
pub(crate) struct Generation {
    /// Counts reloads; 1 at start-up.
    pub(crate) id: u64,
    /// The config it was built from.
    pub(crate) config: Arc<Config>,
    /// Its allow-lists and routes, compiled.
    pub(crate) policy: Arc<Policy>,
    /// What the data path uses.
    pub(crate) frontend: Arc<Frontend>,
}

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

impl Generation {
    /// Loads every file the config names and builds the state. `previous` lends its upstream
    /// pool when the upstream settings and TLS files did not change, so a certificate reload
    /// does not drop warm connections.
    pub(crate) fn build(
        config: Config,
        id: u64,
        previous: Option<&Generation>,
        inputs: &BuildInputs,
    ) -> Result<Self, BuildError> {
        let policy = Arc::new(Policy::compile(&config)?);
        let tls = Arc::new(TlsState::build_with(&config, &policy, inputs)?);
        let previous = previous.map(|p| &p.frontend);
        let upstream = client_for(&config.upstream, previous.map(|f| &f.upstream))?;
        let mut upstreams = HashMap::new();
        for (name, cfg) in &config.upstreams {
            let before = previous.and_then(|f| f.upstreams.get(name));
            upstreams.insert(name.clone(), client_for(cfg, before)?);
        }
        let sources = source_policy(&config)?;
        let frontend = Arc::new(Frontend::new(
            id, &config, &policy, tls, upstream, upstreams, sources,
        ));
        Ok(Self {
            id,
            config: Arc::new(config),
            policy,
            frontend,
        })
    }

    /// What its TLS state trusts and serves.
    pub(crate) fn inventory(&self) -> &Inventory {
        &self.frontend.tls.inventory
    }
}
