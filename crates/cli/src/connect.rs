//! The SDK client of the client commands, configured as the SDK is:
//! `LATCHKEY_*` variables, then the active profile, then a local server's
//! admin token (zero-config).

use anyhow::Result;
use latchkey::Client;

/// A client from the environment; `environment` (a command's `--env`)
/// overrides the configured default environment.
pub(crate) fn client(environment: Option<&str>) -> Result<Client> {
    let client = Client::from_env()?;
    crate::audit::watch_head(&client);
    Ok(match environment {
        Some(env) => client.with_environment(Some(env)),
        None => client,
    })
}

/// The environment a call will use, for messages: `--env`, else the
/// configured one, else the workspace default.
pub(crate) fn environment_label(client: &Client) -> String {
    match client.environment() {
        Some(env) => format!("environment '{env}'"),
        None => "the default environment".to_owned(),
    }
}
