//! A `.env` parser that gives the results of python-dotenv's `dotenv_values(path)`.
//!
//! The Modal client's `Secret.from_dotenv` reads a file with python-dotenv
//! (1.2.x, default arguments, so `interpolate=True`) and sends
//! `{k: v or "" for k, v in dotenv_values(path).items()}`. Everything latchkey
//! does with a `.env` file has to agree with that, byte for byte, so this module
//! is a transcription of python-dotenv's `parser.py`, `variables.py` and
//! `resolve_variables` in `main.py`, not a fresh grammar. A differential test
//! (`tests/dotenv_corpus.rs`) runs a corpus of edge cases through both.
//!
//! What python-dotenv does, and so what [`parse`] does:
//!
//! - Newlines are read the way Python's `open()` reads text: `\r\n` and a lone
//!   `\r` both become `\n`, also inside quoted values. One leading UTF-8 BOM is
//!   dropped.
//! - `KEY=value`, optionally preceded by `export ` and whitespace around `=`.
//!   A key is any run of characters other than `=`, `#` and whitespace
//!   (`a.b`, `a-b`, `ключ` are all keys), or anything but `'` inside single
//!   quotes (`'my key'=1`). Keys are *not* checked against latchkey's key rule
//!   here; that is the caller's job.
//! - Unquoted values run to the end of the line; from the first whitespace
//!   that is followed by `#` on it is a comment; the rest is trimmed.
//!   `KEY=#x` is the value `#x`, `KEY= #x` is the empty value.
//! - `'single'` and `"double"` quoted values may span lines. In single quotes
//!   `\\` and `\'` are unescaped; in double quotes `\\ \' \" \a \b \f \n \r \t
//!   \v`. Any other backslash stays as it is. After the closing quote only
//!   whitespace and an optional `#` comment may follow.
//! - A line holding only a key (`KEY` or `KEY # comment`) gives the key with
//!   no value: `None`. Modal turns it into an empty string (see
//!   [`into_env_dict`]).
//! - Every value, quoted in either way or not, is then interpolated:
//!   `${NAME}` and `${NAME:-default}` are replaced by the value of `NAME`,
//!   looked up first among the keys already read from this file (with their
//!   interpolated values) and then in the outer environment. A key of this file
//!   that has no value (`None`) hides the outer variable and expands to `""`.
//!   `:-default` applies only when `NAME` is not defined at all (an empty value
//!   stays empty, unlike POSIX shells); there is no nesting (`${A:-${B}}` is
//!   `${A:-${B}` followed by a literal `}`) and `$NAME` without braces is left
//!   alone. A key referring to itself or to a later key sees the outer
//!   environment only.
//! - A key given twice keeps the position of its first appearance and the
//!   value of its last one.
//!
//! The one deliberate difference: where python-dotenv logs "could not parse
//! statement starting at line N" and skips that statement, [`parse`] fails with
//! [`DotenvError::Parse`], naming the line on which the statement's first
//! character stands (python-dotenv names the line where the whitespace before it
//! starts, which may be a blank line above). A secret silently missing a key is
//! worse than a refused file.
//!
//! A server must never consult its own environment: it uses
//! [`parse_isolated`]. A client that wants to behave exactly like Modal's uses
//! [`parse_with_process_env`].
//!
//! ```
//! use latchkey_core::dotenv::{parse, DotenvError};
//!
//! let outer = |name: &str| (name == "HOME").then(|| "/home/me".to_owned());
//! let entries = parse("export A=1\nB='${A}/x' # note\nC=${HOME}\nD\n", &outer).unwrap();
//! assert_eq!(
//!     entries,
//!     vec![
//!         ("A".to_owned(), Some("1".to_owned())),
//!         ("B".to_owned(), Some("1/x".to_owned())),
//!         ("C".to_owned(), Some("/home/me".to_owned())),
//!         ("D".to_owned(), None),
//!     ]
//! );
//!
//! let err = parse("A=1\nB=\"never closed\n", &outer).unwrap_err();
//! assert!(matches!(err, DotenvError::Parse { line: 2, .. }));
//! ```

use std::collections::HashMap;

/// The parsed contents of a `.env` file: keys in the order of their first
/// appearance, each with its interpolated value, or `None` for a key written
/// without `=`.
pub type Entries = Vec<(String, Option<String>)>;

/// Why a `.env` file was refused.
///
/// Neither `Display` nor `Debug` ever shows any text of the file: values are
/// secrets. Only the line number and the kind of mistake are kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DotenvError {
    /// A statement that python-dotenv would skip with a warning.
    #[error("invalid .env file: line {line}: {reason}")]
    Parse {
        /// 1-based line on which the statement starts (after newline
        /// normalisation: `\r\n`, `\r` and `\n` each end a line).
        line: usize,
        /// What is wrong with it.
        reason: ParseErrorReason,
    },
}

/// The kind of statement python-dotenv cannot parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorReason {
    /// `=value`, `export =value`, or `export ` with nothing after it.
    #[error("missing key")]
    MissingKey,
    /// `'key` without a closing quote, or the empty key `''`.
    #[error("single-quoted key is empty or not closed")]
    BadQuotedKey,
    /// A `'` value with no closing `'` before the end of the file.
    #[error("single-quoted value is not closed")]
    UnterminatedSingleQuote,
    /// A `"` value with no closing `"` before the end of the file.
    #[error("double-quoted value is not closed")]
    UnterminatedDoubleQuote,
    /// Something other than whitespace or a `#` comment after a quoted value,
    /// or after a key with no `=` (`KEY other`).
    #[error("unexpected text after the value")]
    TrailingText,
}

/// Parses a `.env` file, interpolating `${NAME}` with this file's earlier keys
/// first and `outer` second.
///
/// `outer` plays the part of `os.environ` in python-dotenv; it is called only
/// for names that are not (yet) keys of this file.
///
/// # Errors
///
/// [`DotenvError::Parse`] for the first statement python-dotenv would skip.
pub fn parse(input: &str, outer: &dyn Fn(&str) -> Option<String>) -> Result<Entries, DotenvError> {
    let chars = read_text(input);
    let bindings = Parser::new(&chars).bindings()?;
    Ok(resolve(bindings, outer))
}

/// Parses a `.env` file with an empty outer environment: `${NAME}` sees only
/// this file's keys. This is the one to use on a server, which must never
/// expose its own environment.
///
/// # Errors
///
/// As [`parse`].
pub fn parse_isolated(input: &str) -> Result<Entries, DotenvError> {
    parse(input, &|_| None)
}

/// Parses a `.env` file with this process's environment as the outer one, as
/// Modal's client does. For client-side use only.
///
/// A variable whose value is not valid Unicode counts as unset (Python would
/// see it with surrogate escapes, which Modal cannot send anyway).
///
/// # Errors
///
/// As [`parse`].
pub fn parse_with_process_env(input: &str) -> Result<Entries, DotenvError> {
    parse(input, &|name| {
        // `std::env::var` is not meant for names that no environment can hold.
        if name.is_empty() || name.contains(['=', '\0']) {
            return None;
        }
        std::env::var(name).ok()
    })
}

/// What Modal's `Secret.from_dotenv` makes of parsed entries
/// (`{k: v or "" ...}`): a key without a value becomes an empty string; it is
/// *not* dropped, unlike a `None` given to `Secret.from_dict`.
pub fn into_env_dict(entries: Entries) -> Vec<(String, String)> {
    entries
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect()
}

/// Python's `open(path, encoding="utf-8")` with universal newlines, then
/// `Reader`'s `removeprefix("\ufeff")`.
fn read_text(input: &str) -> Vec<char> {
    let mut chars = Vec::with_capacity(input.len());
    let mut it = input.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\r' {
            if it.peek() == Some(&'\n') {
                it.next();
            }
            chars.push('\n');
        } else {
            chars.push(c);
        }
    }
    if chars.first() == Some(&'\u{feff}') {
        chars.remove(0);
    }
    chars
}

/// `\s` of Python's `re` on `str` (the same set as `str.isspace`): wider than
/// Rust's `char::is_whitespace` (it has U+001C..U+001F).
fn is_py_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n'
            | '\u{0b}'
            | '\u{0c}'
            | '\r'
            | '\u{1c}'..='\u{1f}'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// `[^\S\r\n]`: whitespace that does not end a line.
fn is_inline_space(c: char) -> bool {
    is_py_space(c) && c != '\n' && c != '\r'
}

fn is_line_end(c: char) -> bool {
    c == '\n' || c == '\r'
}

/// One statement before interpolation: python-dotenv's `Binding` with a key.
type Binding = (String, Option<String>);

struct Parser<'a> {
    s: &'a [char],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(s: &'a [char]) -> Self {
        Self { s, pos: 0 }
    }

    fn peek(&self) -> Option<char> {
        self.s.get(self.pos).copied()
    }

    fn skip_while(&mut self, f: impl Fn(char) -> bool) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn text(&self, from: usize, to: usize) -> String {
        self.s[from..to].iter().collect()
    }

    fn starts_with(&self, word: &str) -> bool {
        word.chars()
            .enumerate()
            .all(|(i, w)| self.s.get(self.pos + i) == Some(&w))
    }

    /// `parse_stream`, stopping at the first statement it would skip.
    fn bindings(mut self) -> Result<Vec<Binding>, DotenvError> {
        let mut out = Vec::new();
        loop {
            self.skip_while(is_py_space);
            if self.peek().is_none() {
                return Ok(out);
            }
            let start = self.pos;
            match self.binding() {
                Ok(Some(b)) => out.push(b),
                Ok(None) => {}
                Err(reason) => {
                    let line = 1 + self.s[..start].iter().filter(|&&c| c == '\n').count();
                    return Err(DotenvError::Parse { line, reason });
                }
            }
        }
    }

    /// `parse_binding` after its leading whitespace; `None` for a comment.
    fn binding(&mut self) -> Result<Option<Binding>, ParseErrorReason> {
        // _export: `(?:export[^\S\r\n]+)?`
        if self.starts_with("export")
            && self
                .s
                .get(self.pos + 6)
                .is_some_and(|&c| is_inline_space(c))
        {
            self.pos += 6;
            self.skip_while(is_inline_space);
        }
        let key = self.key()?;
        self.skip_while(is_inline_space);
        let value = if self.peek() == Some('=') {
            self.pos += 1;
            let spaced = self.skip_while(is_inline_space) > 0;
            if spaced && self.peek() == Some('#') {
                Some(String::new())
            } else {
                Some(self.value()?)
            }
        } else {
            None
        };
        // _comment: `(?:[^\S\r\n]*#[^\r\n]*)?`
        let before = self.pos;
        self.skip_while(is_inline_space);
        if self.peek() == Some('#') {
            self.skip_while(|c| !is_line_end(c));
        } else {
            self.pos = before;
        }
        // _end_of_line: `[^\S\r\n]*(?:\r\n|\n|\r|$)`
        self.skip_while(is_inline_space);
        match self.peek() {
            None => {}
            Some('\n') => self.pos += 1,
            Some('\r') => {
                self.pos += 1;
                if self.peek() == Some('\n') {
                    self.pos += 1;
                }
            }
            Some(_) => return Err(ParseErrorReason::TrailingText),
        }
        Ok(key.map(|k| (k, value)))
    }

    /// `parse_key`.
    fn key(&mut self) -> Result<Option<String>, ParseErrorReason> {
        match self.peek() {
            Some('#') => Ok(None),
            Some('\'') => {
                // `'([^']+)'`
                let start = self.pos + 1;
                let Some(len) = self.s[start..].iter().position(|&c| c == '\'') else {
                    return Err(ParseErrorReason::BadQuotedKey);
                };
                if len == 0 {
                    return Err(ParseErrorReason::BadQuotedKey);
                }
                self.pos = start + len + 1;
                Ok(Some(self.text(start, start + len)))
            }
            _ => {
                // `([^=\#\s]+)`
                let start = self.pos;
                if self.skip_while(|c| c != '=' && c != '#' && !is_py_space(c)) == 0 {
                    return Err(ParseErrorReason::MissingKey);
                }
                Ok(Some(self.text(start, self.pos)))
            }
        }
    }

    /// `parse_value`.
    fn value(&mut self) -> Result<String, ParseErrorReason> {
        match self.peek() {
            Some('\'') => {
                let raw = self.quoted('\'', ParseErrorReason::UnterminatedSingleQuote)?;
                Ok(decode_escapes(raw, |c| {
                    matches!(c, '\\' | '\'').then_some(c)
                }))
            }
            Some('"') => {
                let raw = self.quoted('"', ParseErrorReason::UnterminatedDoubleQuote)?;
                Ok(decode_escapes(raw, |c| {
                    Some(match c {
                        '\\' | '\'' | '"' => c,
                        'a' => '\u{07}',
                        'b' => '\u{08}',
                        'f' => '\u{0c}',
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        'v' => '\u{0b}',
                        _ => return None,
                    })
                }))
            }
            None | Some('\n' | '\r') => Ok(String::new()),
            Some(_) => Ok(self.unquoted()),
        }
    }

    /// `'((?:\\.|[^'\\])*)'` (and the same with `"`), DOTALL: a backslash
    /// always takes the next character, newlines included.
    fn quoted(
        &mut self,
        quote: char,
        unterminated: ParseErrorReason,
    ) -> Result<&'a [char], ParseErrorReason> {
        let s: &'a [char] = self.s;
        let start = self.pos + 1;
        let mut i = start;
        loop {
            match s.get(i) {
                None => return Err(unterminated),
                Some('\\') if i + 1 < s.len() => i += 2,
                Some('\\') => return Err(unterminated),
                Some(&c) if c == quote => {
                    self.pos = i + 1;
                    return Ok(&s[start..i]);
                }
                Some(_) => i += 1,
            }
        }
    }

    /// `parse_unquoted_value`: `re.sub(r"\s+#.*", "", part).rstrip()`.
    fn unquoted(&mut self) -> String {
        let start = self.pos;
        self.skip_while(|c| !is_line_end(c));
        let part = &self.s[start..self.pos];
        let mut end = part.len();
        if let Some(hash) = (1..part.len()).find(|&i| part[i] == '#' && is_py_space(part[i - 1])) {
            end = hash;
            while end > 0 && is_py_space(part[end - 1]) {
                end -= 1;
            }
        }
        while end > 0 && is_py_space(part[end - 1]) {
            end -= 1;
        }
        part[..end].iter().collect()
    }
}

/// `decode_escapes`: a backslash followed by a character that `decode` maps
/// becomes that mapping; every other character, lone backslashes included,
/// stays.
fn decode_escapes(raw: &[char], decode: impl Fn(char) -> Option<char>) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == '\\' {
            if let Some(d) = raw.get(i + 1).and_then(|&c| decode(c)) {
                out.push(d);
                i += 2;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

/// `resolve_variables(values, override=True)`.
fn resolve(bindings: Vec<Binding>, outer: &dyn Fn(&str) -> Option<String>) -> Entries {
    let mut out: Entries = Vec::with_capacity(bindings.len());
    let mut index: HashMap<String, usize> = HashMap::new();
    for (key, value) in bindings {
        let value = value.map(|v| {
            interpolate(&v, &|name: &str| match index.get(name) {
                Some(&i) => Some(out[i].1.clone().unwrap_or_default()),
                None => outer(name),
            })
        });
        match index.get(&key) {
            Some(&i) => out[i].1 = value,
            None => {
                index.insert(key.clone(), out.len());
                out.push((key, value));
            }
        }
    }
    out
}

/// Expands every match of python-dotenv's
/// `\$\{(?P<name>[^\}:]*)(?::-(?P<default>[^\}]*))?\}` in `value`.
/// `lookup` gives `Some` for a defined name (a file key without value gives
/// `Some("")`).
fn interpolate(value: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    // All delimiters are ASCII, so byte offsets are char boundaries.
    let b = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    let mut cursor = 0;
    let mut p = 0;
    while p + 1 < b.len() {
        if b[p] == b'$' && b[p + 1] == b'{' {
            if let Some((name, default, end)) = match_variable(b, p) {
                out.push_str(&value[cursor..p]);
                let name = &value[name.0..name.1];
                match lookup(name) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(default.map_or("", |d| &value[d.0..d.1])),
                }
                cursor = end;
                p = end;
                continue;
            }
        }
        p += 1;
    }
    out.push_str(&value[cursor..]);
    out
}

type Span = (usize, usize);

/// The variable starting with `${` at `p`: name span, default span, end.
fn match_variable(b: &[u8], p: usize) -> Option<(Span, Option<Span>, usize)> {
    let name_start = p + 2;
    let mut i = name_start;
    while i < b.len() && b[i] != b'}' && b[i] != b':' {
        i += 1;
    }
    match b.get(i) {
        Some(b'}') => Some(((name_start, i), None, i + 1)),
        Some(b':') if b.get(i + 1) == Some(&b'-') => {
            let default_start = i + 2;
            let close = default_start + b[default_start..].iter().position(|&c| c == b'}')?;
            Some(((name_start, i), Some((default_start, close)), close + 1))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_line(input: &str) -> (usize, ParseErrorReason) {
        match parse_isolated(input) {
            Err(DotenvError::Parse { line, reason }) => (line, reason),
            Ok(v) => panic!("parsed, expected an error: {v:?}"),
        }
    }

    fn ok(input: &str) -> Vec<(String, Option<String>)> {
        parse_isolated(input).unwrap()
    }

    fn kv(pairs: &[(&str, Option<&str>)]) -> Entries {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn error_on_first_line() {
        assert_eq!(err_line("=value\n"), (1, ParseErrorReason::MissingKey));
    }

    #[test]
    fn error_line_counts_earlier_statements() {
        assert_eq!(
            err_line("A=1\nB=2\nC=\"x\" y\nD=4\n"),
            (3, ParseErrorReason::TrailingText)
        );
    }

    #[test]
    fn error_line_skips_blank_and_comment_lines() {
        assert_eq!(
            err_line("# c\n\n   \nA=1\n\n\n  'unclosed=1\n"),
            (7, ParseErrorReason::BadQuotedKey)
        );
    }

    #[test]
    fn error_line_after_multiline_value() {
        assert_eq!(
            err_line("A=\"x\ny\nz\"\nB='a\nb\n"),
            (4, ParseErrorReason::UnterminatedSingleQuote)
        );
    }

    #[test]
    fn error_line_is_where_the_statement_starts() {
        assert_eq!(
            err_line("A=1\nB=\"x\n\ny\n"),
            (2, ParseErrorReason::UnterminatedDoubleQuote)
        );
        assert_eq!(
            err_line("A=\"x\ny\" junk\n"),
            (1, ParseErrorReason::TrailingText)
        );
    }

    #[test]
    fn error_line_with_crlf_and_lone_cr() {
        assert_eq!(
            err_line("A=1\r\nB=2\r\n\r\n=3\r\n"),
            (4, ParseErrorReason::MissingKey)
        );
        assert_eq!(
            err_line("A=1\rB=2\r=3\r"),
            (3, ParseErrorReason::MissingKey)
        );
    }

    #[test]
    fn error_line_with_bom() {
        assert_eq!(err_line("\u{feff}=1\n"), (1, ParseErrorReason::MissingKey));
    }

    #[test]
    fn error_reasons() {
        assert_eq!(err_line("export \n"), (1, ParseErrorReason::MissingKey));
        assert_eq!(err_line("export =1"), (1, ParseErrorReason::MissingKey));
        assert_eq!(err_line("''=1"), (1, ParseErrorReason::BadQuotedKey));
        assert_eq!(
            err_line("A=\"x\\\""),
            (1, ParseErrorReason::UnterminatedDoubleQuote)
        );
        assert_eq!(err_line("A B\n"), (1, ParseErrorReason::TrailingText));
        assert_eq!(err_line("A='x'y\n"), (1, ParseErrorReason::TrailingText));
    }

    #[test]
    fn errors_never_show_values() {
        let secret = "hunter2-very-secret";
        for input in [
            format!("A=\"{secret}"),
            format!("A='{secret}"),
            format!("A=\"{secret}\" {secret}"),
            format!("={secret}"),
            format!("'{secret}"),
            format!("{secret} {secret}"),
        ] {
            let err = parse_isolated(&input).unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
        }
    }

    #[test]
    fn display_names_line_and_reason() {
        let err = parse_isolated("A=1\n=2\n").unwrap_err();
        assert_eq!(err.to_string(), "invalid .env file: line 2: missing key");
    }

    #[test]
    fn duplicates_keep_first_position_and_last_value() {
        assert_eq!(
            ok("A=1\nB=2\nA=3\n"),
            kv(&[("A", Some("3")), ("B", Some("2"))])
        );
    }

    #[test]
    fn interpolation_precedence() {
        let outer = |n: &str| match n {
            "X" => Some("outer-x".to_owned()),
            "Y" => Some("outer-y".to_owned()),
            "E" => Some(String::new()),
            _ => None,
        };
        let got = parse(
            "A=${X}\nX=file-x\nB=${X}|${Y}|${E:-d}|${U:-d}|${U}\nY\nC=${Y:-d}\nS=${S:-self}\n",
            &outer,
        )
        .unwrap();
        assert_eq!(
            got,
            kv(&[
                ("A", Some("outer-x")),
                ("X", Some("file-x")),
                ("B", Some("file-x|outer-y||d|")),
                ("Y", None),
                ("C", Some("")),
                ("S", Some("self")),
            ])
        );
    }

    #[test]
    fn isolated_sees_no_process_env() {
        // PATH is set in any test process; the isolated parser must not see it.
        assert_eq!(ok("P=${PATH:-none}"), kv(&[("P", Some("none"))]));
    }

    #[test]
    fn variable_forms() {
        assert_eq!(
            ok("A=a\nB=$A ${A:x} ${A:-${A}} ${} ${:-e} ${A\n"),
            kv(&[("A", Some("a")), ("B", Some("$A ${A:x} a}  e ${A"))])
        );
        assert_eq!(
            ok("A=a\nB=${A:-${A}}\n"),
            kv(&[("A", Some("a")), ("B", Some("a}"))])
        );
    }

    #[test]
    fn modal_env_dict_keeps_valueless_keys() {
        assert_eq!(
            into_env_dict(ok("A\nB=1\n")),
            vec![
                ("A".to_owned(), String::new()),
                ("B".to_owned(), "1".to_owned())
            ]
        );
    }
}
