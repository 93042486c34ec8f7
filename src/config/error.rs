//! [`ConfigError`]: why a config file was refused, always naming the file, and the key when
//! there is one. Its own file so that every part of `config` can return it without importing
//! `config/mod.rs`, which imports them.

use std::path::PathBuf;

/// Errors raised while reading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read at all.
    // The field is not named `source`: thiserror would make it the error's source, and
    // anyhow's `{:#}` would then print the OS error twice on the one line the user sees.
    #[error("{path}: cannot read config file: {reason}; check the path given to --config")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why the read failed.
        reason: std::io::Error,
    },
    /// TOML syntax error, unknown key or wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, flattened to one line.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The dotted key, e.g. `upstream.url`.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
}
