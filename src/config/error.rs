//! [`ConfigError`]: every way loading a configuration can fail.
//!
//! Each message names the dotted configuration key (e.g. `http.addr`) or the
//! environment variable involved, and the problem. Secret values are never
//! echoed.

use std::path::PathBuf;

/// Why a configuration could not be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The text is not YAML (the message carries line and column).
    #[error("configuration is not valid YAML: {message}")]
    Yaml { message: String },

    /// A key stevedore (and distribution) does not know: probably a typo.
    #[error("unknown configuration key \"{key}\"{}", did_you_mean(.suggestion))]
    UnknownKey {
        key: String,
        suggestion: Option<String>,
    },

    /// A key distribution knows but stevedore does not implement (yet).
    #[error("configuration key \"{key}\" is not supported by stevedore yet{}", hint_suffix(.hint))]
    Unsupported { key: String, hint: String },

    /// A value of the wrong type or form.
    #[error("invalid value {value} for configuration key \"{key}\": {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },

    /// A key that must be present (given its section) is absent or empty.
    #[error("missing required configuration key \"{key}\": {reason}")]
    Missing { key: String, reason: String },

    /// A value that is well-formed but not acceptable.
    #[error("configuration key \"{key}\": {reason}")]
    Invalid { key: String, reason: String },

    /// Two keys that cannot be used together.
    #[error("configuration keys \"{first}\" and \"{second}\" conflict: {reason}")]
    Conflict {
        first: String,
        second: String,
        reason: String,
    },

    /// A `REGISTRY_*` environment variable that maps to no configuration key.
    #[error(
        "unknown environment variable {var}: \"{key}\" is not a configuration key{}",
        did_you_mean_env(.suggestion)
    )]
    UnknownEnv {
        var: String,
        key: String,
        suggestion: Option<String>,
    },

    /// A `REGISTRY_*_FILE` variable whose file cannot be read.
    #[error("cannot read the file named by {var} ({}): {source}", .path.display())]
    SecretFile {
        var: String,
        path: PathBuf,
        source: std::io::Error,
    },

    /// An error in a value that came from an environment variable.
    #[error("{source} (set by environment variable {var})")]
    FromEnv {
        var: String,
        source: Box<ConfigError>,
    },
}

impl ConfigError {
    /// The dotted configuration key the error is about, if it is about one.
    /// For [`ConfigError::Conflict`] this is the first of the two keys.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. }
            | ConfigError::Unsupported { key, .. }
            | ConfigError::InvalidValue { key, .. }
            | ConfigError::Missing { key, .. }
            | ConfigError::Invalid { key, .. }
            | ConfigError::UnknownEnv { key, .. } => Some(key),
            ConfigError::Conflict { first, .. } => Some(first),
            ConfigError::FromEnv { source, .. } => source.key(),
            ConfigError::Read { .. }
            | ConfigError::Yaml { .. }
            | ConfigError::SecretFile { .. } => None,
        }
    }

    pub(super) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub(super) fn value(
        key: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError::InvalidValue {
            key: key.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    pub(super) fn missing(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Missing {
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub(super) fn conflict(
        first: impl Into<String>,
        second: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError::Conflict {
            first: first.into(),
            second: second.into(),
            reason: reason.into(),
        }
    }
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean \"{s}\"?)"),
        None => String::new(),
    }
}

fn did_you_mean_env(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}

fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!(" ({hint})")
    }
}
