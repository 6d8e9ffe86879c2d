//! `latchkey completions`: shell completion scripts, from the command
//! definitions themselves (clap_complete).

use anyhow::Result;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Print a completion script for a shell.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey completions bash > ~/.local/share/bash-completion/completions/latchkey
  latchkey completions zsh > \"${fpath[1]}/_latchkey\"
  latchkey completions fish > ~/.config/fish/completions/latchkey.fish")]
pub(crate) struct CompletionsArgs {
    /// The shell.
    shell: Shell,
}

pub(crate) fn run(args: &CompletionsArgs) -> Result<()> {
    let mut command = crate::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "latchkey", &mut script);
    crate::output::print(&String::from_utf8(script)?)
}
