//! What the client commands print: tables for people, JSON for scripts,
//! colour only on a terminal and never with `NO_COLOR`, errors on stderr
//! with an exit code that tells a failure (1) from a misuse (2).

use std::{
    fmt,
    io::{IsTerminal, Write},
    process::ExitCode,
};

use anyhow::Result;
use latchkey::Timestamp;
use serde::Serialize;

/// A mistake in how the command was called (exit code 2, like clap's own
/// usage errors): something the user must change in the command line.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A [`UsageError`] as an `anyhow::Error`.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// Prints `err` on stderr (with its chain of causes) and picks the exit code.
pub(crate) fn fail(err: &anyhow::Error) -> ExitCode {
    let label = paint(Stream::Stderr, "1;31", "error:");
    eprintln!("latchkey: {label} {err:#}");
    if err.downcast_ref::<UsageError>().is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// Whether to colour what goes to `stream`: a terminal, `NO_COLOR` unset or
/// empty (<https://no-color.org>), and a terminal that knows colours.
pub(crate) fn color(stream: Stream) -> bool {
    let terminal = match stream {
        Stream::Stdout => std::io::stdout().is_terminal(),
        Stream::Stderr => std::io::stderr().is_terminal(),
    };
    terminal
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// `text` in the SGR style `sgr` (`1` bold, `2` dim, `31` red...) when
/// `stream` gets colour.
pub(crate) fn paint(stream: Stream, sgr: &str, text: &str) -> String {
    if color(stream) {
        format!("\x1b[{sgr}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// Writes `text` to stdout. A closed pipe (`latchkey secret list | head`)
/// ends the output quietly rather than with a panic.
pub(crate) fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Writes one line to stdout.
pub(crate) fn line(text: impl fmt::Display) -> Result<()> {
    print(&format!("{text}\n"))
}

/// A note for people on stderr (so that stdout stays for data).
pub(crate) fn note(text: impl fmt::Display) {
    eprintln!("{text}");
}

/// Writes `value` as pretty JSON on stdout.
pub(crate) fn json(value: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    print(&text)
}

/// An instant for people: `2025-01-01 12:00:00 UTC`.
pub(crate) fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC")
}

/// An optional instant for people; `empty` when absent.
pub(crate) fn time_or(t: Option<Timestamp>, empty: &str) -> String {
    t.map_or_else(|| empty.to_owned(), time)
}

/// A plain-text table: a header row, then one row per item, columns padded
/// to their widest cell.
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    /// The table as text; `empty` alone when it has no rows.
    pub(crate) fn render(&self, empty: &str) -> String {
        if self.rows.is_empty() {
            return format!("{empty}\n");
        }
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| r[i].chars().count())
                .chain([self.header[i].chars().count()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.header.len()).map(width).collect();
        let format_row = |cells: &mut dyn Iterator<Item = &str>| {
            let mut line = String::new();
            for (i, cell) in cells.enumerate() {
                if i + 1 == widths.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count();
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            line.trim_end().to_owned()
        };
        let header = format_row(&mut self.header.iter().copied());
        let mut out = paint(Stream::Stdout, "1", &header);
        out.push('\n');
        for row in &self.rows {
            out.push_str(&format_row(&mut row.iter().map(String::as_str)));
            out.push('\n');
        }
        out
    }

    pub(crate) fn print(&self, empty: &str) -> Result<()> {
        print(&self.render(empty))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_and_times_read_well() {
        let mut t = Table::new(&["Name", "Created at"]);
        t.row(vec!["a-long-name".into(), "x".into()]);
        t.row(vec!["b".into(), "y".into()]);
        assert_eq!(
            t.render("none"),
            "Name         Created at\na-long-name  x\nb            y\n"
        );
        assert_eq!(Table::new(&["Name"]).render("No secrets."), "No secrets.\n");
        let ts = Timestamp::from_micros(1_735_732_800_000_001);
        assert_eq!(time(ts), "2025-01-01 12:00:00 UTC");
        assert_eq!(time_or(None, "never"), "never");
    }
}
