//! A Kafka cluster's secrets: only from the environment, or from the file a variable names
//! (`<VARIABLE>_FILE`, a Kubernetes or Docker secret) — never from the TOML — and printed as
//! `<redacted>` wherever a [`Secrets`] is.

use crate::config::error::ConfigError;

/// The environment variables that carry a cluster's secrets: `STOCKPIPE_KAFKA_<NAME>` for the
/// input's, `STOCKPIPE_KAFKA_OUTPUT_<NAME>` for the output's; each also as `<…>_FILE`, naming a
/// file that holds it.
pub fn secret_env(output: bool) -> [String; 3] {
    let prefix = if output {
        "STOCKPIPE_KAFKA_OUTPUT_"
    } else {
        "STOCKPIPE_KAFKA_"
    };
    ["SASL_PASSWORD", "SSL_KEY_PASSWORD", "OAUTH_CLIENT_SECRET"].map(|n| format!("{prefix}{n}"))
}

/// Every variable [`secret_env`] names, with its `_FILE` form: not settings.
pub fn secret_env_names() -> Vec<String> {
    [false, true]
        .into_iter()
        .flat_map(secret_env)
        .flat_map(|name| [format!("{name}_FILE"), name])
        .collect()
}

/// A cluster's secrets, read from the environment. Printed as `<redacted>`.
#[derive(Clone, Default, PartialEq)]
pub(super) struct Secrets {
    pub(super) sasl_password: Option<String>,
    pub(super) ssl_key_password: Option<String>,
    pub(super) oauth_client_secret: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("Secrets")
            .field("sasl_password", &shown(&self.sasl_password))
            .field("ssl_key_password", &shown(&self.ssl_key_password))
            .field("oauth_client_secret", &shown(&self.oauth_client_secret))
            .finish()
    }
}

impl Secrets {
    pub(super) fn from_env(
        output: bool,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let [sasl, key, oauth] = secret_env(output);
        Ok(Self {
            sasl_password: secret(&sasl, env)?,
            ssl_key_password: secret(&key, env)?,
            oauth_client_secret: secret(&oauth, env)?,
        })
    }
}

/// The secret `name`, or the contents of the file `<name>_FILE` names (one trailing newline
/// dropped); both set is an error, as is a file that cannot be read.
fn secret(
    name: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    let file_var = format!("{name}_FILE");
    match (env(name), env(&file_var)) {
        (Some(_), Some(_)) => Err(ConfigError::Env {
            name: file_var,
            message: format!("set only one of {name} and {name}_FILE"),
        }),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Env {
                name: file_var,
                message: format!("reading {path}: {e}"),
            })?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            Ok(Some(text.strip_suffix('\r').unwrap_or(text).to_string()))
        }
        (None, None) => Ok(None),
    }
}
