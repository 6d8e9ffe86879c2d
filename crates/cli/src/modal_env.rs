//! `latchkey modal-env`: the `MODAL_*` variables that point Modal's own
//! client and CLI at this server, from the current configuration.

use anyhow::Result;
use clap::{Args, ValueEnum};
use latchkey::Config;

use crate::output;

/// Print MODAL_SERVER_URL, MODAL_TOKEN_ID and MODAL_TOKEN_SECRET (and
/// MODAL_ENVIRONMENT) for the current configuration, as shell commands:
/// `eval "$(latchkey modal-env)"` makes `modal` and `import modal` use this
/// server. The output holds the token secret: don't paste it anywhere.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  eval \"$(latchkey modal-env)\" && modal secret list
  latchkey modal-env --shell fish | source
  LATCHKEY_PROFILE=prod latchkey modal-env --shell dotenv > .modal.env")]
pub(crate) struct ModalEnvArgs {
    /// The syntax of the output.
    #[arg(long, value_enum, default_value = "sh")]
    shell: Shell,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Shell {
    /// `export NAME=value` (bash, zsh, sh).
    Sh,
    /// `set -gx NAME value`.
    Fish,
    /// `NAME=value`, a .env file.
    Dotenv,
}

pub(crate) fn run(args: &ModalEnvArgs) -> Result<()> {
    let config = Config::from_env()?;
    let mut vars = vec![
        ("MODAL_SERVER_URL", config.server_url()),
        ("MODAL_TOKEN_ID", config.token_id()),
        ("MODAL_TOKEN_SECRET", config.token_secret()),
    ];
    if let Some(env) = config.environment() {
        vars.push(("MODAL_ENVIRONMENT", env));
    }
    let mut text = String::new();
    for (name, value) in vars {
        let value = quote(value);
        text.push_str(&match args.shell {
            Shell::Sh => format!("export {name}={value}\n"),
            Shell::Fish => format!("set -gx {name} {value}\n"),
            Shell::Dotenv => format!("{name}={value}\n"),
        });
    }
    if config.environment().is_none() {
        // A MODAL_ENVIRONMENT left from before would name another environment.
        text.push_str(match args.shell {
            Shell::Sh => "unset MODAL_ENVIRONMENT\n",
            Shell::Fish => "set -e MODAL_ENVIRONMENT\n",
            Shell::Dotenv => "",
        });
    }
    output::print(&text)
}

/// `value` as one shell word: bare when it is plain, else single-quoted.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@%+,=".contains(&b));
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoting() {
        assert_eq!(
            super::quote("http://127.0.0.1:7420"),
            "http://127.0.0.1:7420"
        );
        assert_eq!(super::quote("a b'c"), "'a b'\\''c'");
        assert_eq!(super::quote(""), "''");
    }
}
