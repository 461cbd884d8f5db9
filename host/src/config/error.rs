//! The one error of configuration: a file that does not parse, a key whose value is refused, an
//! environment variable that names no setting. Each section's `validate` (beside its connector)
//! returns it, naming the key.

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid {
        key: std::borrow::Cow<'static, str>,
        message: String,
    },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
}

/// Refuses the value of `key`.
pub fn invalid<T>(
    key: impl Into<std::borrow::Cow<'static, str>>,
    message: &str,
) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    })
}
