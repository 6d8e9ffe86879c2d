//! Who may do what with sandboxes, and the variables a sandbox gets from its
//! secrets.
//!
//! The sandbox manager (`latchkey-sandbox`) runs the processes; these rules
//! sit here with the other permissions so that sandboxes follow the same
//! roles as secrets: starting code with secret values, stopping it and
//! attaching to its stdio is developer work (like writing a secret); seeing
//! a sandbox needs a token that may use its environment; values come through
//! [`Service::secret`], so that a token limited to some environments cannot
//! put another environment's values into a process.

use std::fmt;

use latchkey_core::{rules, EnvDict, Error};

use crate::{Caller, Role, Service};

/// Most variables a sandbox may start with.
pub const MAX_SANDBOX_VARIABLES: usize = 10_000;

/// What is done to sandboxes, for [`Caller::may_sandbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SandboxAction {
    /// Make an app to hold sandboxes (`AppGetOrCreate` of a new app).
    CreateApp,
    /// Start one (`SandboxCreateV2`).
    Create,
    /// Stop one (`SandboxTerminateV2`).
    Terminate,
    /// Reach its stdio through the command router.
    Attach,
}

impl Caller {
    /// Whether the caller's role allows `action`. Checked before any sandbox
    /// is looked up, so that a reader learns nothing of which exist.
    pub fn may_sandbox(&self, action: SandboxAction) -> Result<(), Error> {
        let what = match action {
            SandboxAction::CreateApp => "create sandbox apps",
            SandboxAction::Create => "create sandboxes",
            SandboxAction::Terminate => "terminate sandboxes",
            SandboxAction::Attach => "use sandboxes",
        };
        self.require(Role::Developer, what)
    }

    /// Whether the caller may see a sandbox (or app) of the environment
    /// `environment_name`.
    pub fn may_see_sandbox(&self, environment_name: &str) -> Result<(), Error> {
        self.check_environment(environment_name)
    }
}

/// One source of a sandbox's variables.
#[derive(Clone)]
pub enum SandboxSecret<'a> {
    /// A stored secret, by id.
    Stored(&'a str),
    /// Variables given with the request (`Secret.from_dict`, `env=`).
    Inline(EnvDict),
}

/// Names what a source is, never its values.
impl fmt::Debug for SandboxSecret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stored(id) => f.debug_tuple("Stored").field(id).finish(),
            Self::Inline(dict) => f.debug_tuple("Inline").field(&dict.keys()).finish(),
        }
    }
}

/// The variables a sandbox starts with. `Debug` shows names only.
#[derive(Default)]
pub struct SandboxSecrets {
    /// The merged variables.
    pub env: EnvDict,
    /// The ids of the named secrets among the sources, to record as used
    /// ([`Service::mark_used`]) once the process runs.
    pub named: Vec<String>,
}

impl fmt::Debug for SandboxSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxSecrets")
            .field("env", &self.env.keys())
            .field("named", &self.named)
            .finish()
    }
}

impl Service {
    /// The variables of `sources` in order, a later source overriding an
    /// earlier one key by key. Stored secrets are read as the caller (so its
    /// environment limits apply); inline ones are checked by the rules of
    /// any secret.
    pub async fn sandbox_secrets(
        &self,
        caller: &Caller,
        sources: impl IntoIterator<Item = SandboxSecret<'_>>,
    ) -> Result<SandboxSecrets, Error> {
        let mut out = SandboxSecrets::default();
        // Values read here go into a sandbox's environment: so the log says.
        let caller = &caller.with_origin(crate::Origin::new(
            latchkey_store::audit::Interface::Sandbox,
            caller.origin().client,
        ));
        for source in sources {
            let contents = match source {
                SandboxSecret::Stored(id) => {
                    let secret = self.secret(caller, id).await?;
                    if secret.summary.name().is_some() && !out.named.iter().any(|n| n == id) {
                        out.named.push(id.to_owned());
                    }
                    secret.contents.clone()
                }
                SandboxSecret::Inline(dict) => {
                    rules::check_env_dict(&dict)?;
                    dict
                }
            };
            out.env.extend(contents);
        }
        if out.env.len() > MAX_SANDBOX_VARIABLES {
            return Err(Error::invalid(format!(
                "A sandbox's secrets hold {} variables; at most {MAX_SANDBOX_VARIABLES}",
                out.env.len()
            )));
        }
        Ok(out)
    }
}
