//! What the client commands read from the user: `KEY=VALUE` arguments (with
//! `KEY=-` read from `$EDITOR` or stdin, so values stay out of shell
//! history), confirmations, and token secrets typed without echo.
//!
//! No message here quotes a value: a mistyped argument is named by its
//! position, and only its key is shown.

use std::{
    io::{BufRead, IsTerminal, Read},
    process::Command,
};

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

use crate::output::usage;

/// Where one `KEY=...` argument's value comes from.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// Given on the command line.
    Given(String),
    /// `KEY=-`: from `$EDITOR` on a terminal, else stdin.
    Ask,
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the value itself.
        f.write_str(match self {
            Value::Given(_) => "Given(<redacted>)",
            Value::Ask => "Ask",
        })
    }
}

/// Splits `KEY=VALUE` arguments at their first `=`. The key is checked by
/// the server (which names a bad one); here only the shape is.
pub(crate) fn parse_assignments(args: &[String]) -> Result<Vec<(String, Value)>> {
    let mut out = Vec::with_capacity(args.len());
    for (i, arg) in args.iter().enumerate() {
        let n = i + 1;
        let Some((key, value)) = arg.split_once('=') else {
            // The argument may be a value typed without its key: don't echo it.
            return Err(usage(format!(
                "argument {n} of KEY=VALUE... has no '=': write KEY=VALUE, or KEY=- to type the value"
            )));
        };
        if key.is_empty() {
            return Err(usage(format!(
                "argument {n} of KEY=VALUE... has an empty key: write KEY=VALUE"
            )));
        }
        let value = if value == "-" {
            Value::Ask
        } else {
            Value::Given(value.to_owned())
        };
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

/// The values of `assignments`, asking for each `KEY=-`: in `$EDITOR` when
/// stdin is a terminal, else from stdin (so at most one `KEY=-` then).
pub(crate) fn resolve_values(assignments: Vec<(String, Value)>) -> Result<Vec<(String, String)>> {
    let asked = assignments.iter().filter(|(_, v)| *v == Value::Ask).count();
    let terminal = std::io::stdin().is_terminal();
    if asked > 1 && !terminal {
        return Err(usage(
            "only one KEY=- can read its value from stdin; give the others as KEY=VALUE",
        ));
    }
    let mut out = Vec::with_capacity(assignments.len());
    for (key, value) in assignments {
        let value = match value {
            Value::Given(v) => v,
            Value::Ask if terminal => read_from_editor(&key, &editor())?,
            Value::Ask => read_from_stdin(&key)?,
        };
        out.push((key, value));
    }
    Ok(out)
}

/// Stdin, less one trailing newline (`echo v | latchkey ... K=-` means `v`).
fn read_from_stdin(key: &str) -> Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read the value of {key} from stdin"))?;
    Ok(strip_newline(text))
}

fn strip_newline(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

/// `$VISUAL`, else `$EDITOR`, else `vi`.
fn editor() -> String {
    ["VISUAL", "EDITOR"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "vi".to_owned())
}

/// Opens `editor` (a shell word list, like `code --wait`) on an empty temp
/// file (mode 0600), reads what was saved, then wipes and removes the file.
pub(crate) fn read_from_editor(key: &str, editor: &str) -> Result<String> {
    let file = tempfile::Builder::new()
        .prefix("latchkey-value-")
        .suffix(".txt")
        .tempfile()
        .context("cannot create a temporary file for the value")?;
    // tempfile creates files 0600 on Unix; say so rather than rely on it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o600))?;
    }
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("latchkey-editor")
        .arg(file.path())
        .status()
        .with_context(|| format!("cannot start the editor '{editor}'"))?;
    let text = std::fs::read(file.path());
    // Overwrite before removing, so the value does not linger on disk.
    if let Ok(bytes) = &text {
        let _ = std::fs::write(file.path(), vec![0u8; bytes.len()]);
    }
    drop(file);
    if !status.success() {
        bail!("the editor '{editor}' failed ({status}); {key} was not set");
    }
    let text = String::from_utf8(text.context("cannot read back the edited value")?)
        .map_err(|_| anyhow::anyhow!("the value of {key} is not valid UTF-8"))?;
    Ok(strip_newline(text))
}

/// Asks before something irreversible: "{Action}? {warning} [y/N]". With
/// `yes`, no question. Without a terminal to ask on, a usage error that
/// names `--yes`: scripts must say what they mean.
pub(crate) fn confirm(action: &str, warning: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(usage(format!(
            "refusing to {action} without confirmation: stdin is not a terminal; pass --yes"
        )));
    }
    let mut question = action.to_owned();
    if let Some(first) = question.get(..1) {
        let upper = first.to_ascii_uppercase();
        question.replace_range(..1, &upper);
    }
    eprint!("{question}? {warning} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        bail!("Aborted: nothing was changed")
    }
}

/// Reads a line typed on the terminal after `prompt` (shown on stderr).
pub(crate) fn prompt_line(prompt: &str) -> Result<String> {
    eprint!("{prompt}");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

/// A secret: typed without echo on a terminal, else the first line of stdin.
pub(crate) fn read_secret(prompt: &str) -> Result<Zeroizing<String>> {
    let text = if std::io::stdin().is_terminal() {
        Zeroizing::new(rpassword::prompt_password(prompt).context("cannot read from the terminal")?)
    } else {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read from stdin")?;
        line
    };
    Ok(Zeroizing::new(text.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_split_at_the_first_equals_and_never_echo_values() {
        let args: Vec<String> = ["A=1", "B=x=y", "C=", "D=-"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let parsed = parse_assignments(&args).unwrap();
        assert_eq!(parsed[1].0, "B");
        assert!(parsed[1].1 == Value::Given("x=y".into()));
        assert!(parsed[2].1 == Value::Given(String::new()));
        assert!(parsed[3].1 == Value::Ask);
        let e = parse_assignments(&["A=1".into(), "hunter2".into()]).unwrap_err();
        assert!(e.downcast_ref::<crate::output::UsageError>().is_some());
        assert!(e.to_string().contains("argument 2"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(parse_assignments(&["=v".into()]).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn the_editor_sees_a_private_file_that_is_removed_after() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let script = dir.path().join("ed.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nstat -c %a \"$1\" > {log}\necho \"$1\" >> {log}\nprintf 's3cret\\n' > \"$1\"\n",
                log = log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let value = read_from_editor("K", &script.display().to_string()).unwrap();
        assert_eq!(value, "s3cret");
        let seen = std::fs::read_to_string(&log).unwrap();
        let mut lines = seen.lines();
        assert_eq!(lines.next(), Some("600"));
        let path = lines.next().unwrap();
        assert!(!std::path::Path::new(path).exists(), "{path} was removed");

        let e = read_from_editor("K", "false").unwrap_err();
        assert!(e.to_string().contains("K was not set"), "{e}");
    }
}
