//! Differential test of `latchkey_core::dotenv` against python-dotenv.
//!
//! Every `*.env` file of `tests/dotenv/` goes through our parser and through
//! python-dotenv's `dotenv_values(path)` (one Python process for all files),
//! both with the same outer environment; keys, their order and their values
//! must be identical. The files listed in [`EXPECTED_ERRORS`] are where we
//! differ on purpose: python-dotenv warns and skips a statement, we refuse the
//! file naming that statement's line.
//!
//! The interpreter is `$LATCHKEY_TEST_PYTHON`, else `<repo>/.venv/bin/python`
//! (made by `scripts/test`). Without one the test fails: it never skips.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use latchkey_core::dotenv::{parse, DotenvError, ParseErrorReason};

/// The whole environment the Python process gets (plus whatever the
/// interpreter adds to its own `os.environ`, such as `LC_CTYPE` from locale
/// coercion; our parser is given exactly what Python reports).
const OUTER_ENV: &[(&str, &str)] = &[
    ("OUTER", "from-outer"),
    ("OUTER_EMPTY", ""),
    ("SHADOWED", "outer-value"),
];

/// Deliberate differences: python-dotenv logs "could not parse statement
/// starting at line N" and skips the statement; we fail with the line of the
/// statement's first character (python-dotenv's N can be a blank line above
/// it) and this reason.
const EXPECTED_ERRORS: &[(&str, usize, ParseErrorReason)] = &[
    ("err_after_multiline.env", 3, ParseErrorReason::TrailingText),
    (
        "err_backslash_eof.env",
        1,
        ParseErrorReason::UnterminatedDoubleQuote,
    ),
    (
        "err_backslash_escapes_closing_quote.env",
        1,
        ParseErrorReason::UnterminatedDoubleQuote,
    ),
    (
        "err_blank_lines_before.env",
        5,
        ParseErrorReason::MissingKey,
    ),
    ("err_bom_then_bad.env", 1, ParseErrorReason::MissingKey),
    ("err_crlf_bad_line.env", 3, ParseErrorReason::MissingKey),
    (
        "err_empty_quoted_key.env",
        1,
        ParseErrorReason::BadQuotedKey,
    ),
    ("err_equals_no_key.env", 2, ParseErrorReason::MissingKey),
    (
        "err_equals_no_key_first.env",
        1,
        ParseErrorReason::MissingKey,
    ),
    ("err_export_eof.env", 1, ParseErrorReason::MissingKey),
    ("err_export_equals.env", 1, ParseErrorReason::MissingKey),
    (
        "err_export_trailing_space.env",
        2,
        ParseErrorReason::MissingKey,
    ),
    ("err_first_of_several.env", 2, ParseErrorReason::MissingKey),
    ("err_key_space_value.env", 2, ParseErrorReason::TrailingText),
    ("err_key_then_text.env", 1, ParseErrorReason::TrailingText),
    (
        "err_quoted_key_then_text.env",
        1,
        ParseErrorReason::TrailingText,
    ),
    (
        "err_text_after_double.env",
        1,
        ParseErrorReason::TrailingText,
    ),
    (
        "err_text_after_single.env",
        1,
        ParseErrorReason::TrailingText,
    ),
    ("err_two_quoted.env", 1, ParseErrorReason::TrailingText),
    (
        "err_unterminated_double.env",
        2,
        ParseErrorReason::UnterminatedDoubleQuote,
    ),
    (
        "err_unterminated_quoted_key.env",
        2,
        ParseErrorReason::BadQuotedKey,
    ),
    (
        "err_unterminated_single.env",
        4,
        ParseErrorReason::UnterminatedSingleQuote,
    ),
];

const MIN_CORPUS_FILES: usize = 60;

/// Prints, for each file given as an argument, python-dotenv's result and
/// warnings. Every string is UTF-8 hex behind an `x` (so empty strings and
/// any character survive a line-based format); `-` is `None`.
const PYTHON_SCRIPT: &str = r#"
import logging, os, sys
try:
    from dotenv import dotenv_values
    from dotenv.version import __version__
except ImportError as e:
    sys.exit("python-dotenv is not importable by %s: %s" % (sys.executable, e))

def hx(s):
    return "x" + s.encode("utf-8").hex()

warnings = []
class Collect(logging.Handler):
    def emit(self, record):
        warnings.append(record.args[0])
log = logging.getLogger("dotenv.main")
log.propagate = False
log.addHandler(Collect())

out = ["VERSION " + __version__]
for k, v in sorted(os.environ.items()):
    out.append("ENV %s %s" % (hx(k), hx(v)))
for i, path in enumerate(sys.argv[1:]):
    warnings.clear()
    values = dotenv_values(path)
    out.append("FILE %d" % i)
    out.extend("WARN %d" % w for w in warnings)
    for k, v in values.items():
        out.append("KV %s %s" % (hx(k), "-" if v is None else hx(v)))
    out.append("END")
sys.stdout.write("\n".join(out) + "\n")
"#;

type Entries = Vec<(String, Option<String>)>;

#[derive(Default)]
struct PythonResult {
    warnings: Vec<usize>,
    entries: Entries,
}

struct PythonRun {
    version: String,
    environ: HashMap<String, String>,
    files: Vec<PythonResult>,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("dotenv")
}

fn corpus_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("read tests/dotenv")
        .map(|e| e.expect("read tests/dotenv entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "env"))
        .collect();
    files.sort();
    files
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("LATCHKEY_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if venv.exists() {
        return venv;
    }
    panic!(
        "the dotenv differential test needs a Python with python-dotenv: run `scripts/test` \
         (it creates .venv with python-dotenv), or set LATCHKEY_TEST_PYTHON to an interpreter \
         that can `import dotenv` (e.g. `python3 -m venv .venv && .venv/bin/pip install \
         python-dotenv==1.2.4`)"
    );
}

fn unhex(s: &str) -> String {
    let hex = s
        .strip_prefix('x')
        .unwrap_or_else(|| panic!("bad hex field {s:?}"));
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    String::from_utf8(bytes).unwrap()
}

fn run_python(files: &[PathBuf]) -> PythonRun {
    let python = python();
    let output = Command::new(&python)
        .arg("-c")
        .arg(PYTHON_SCRIPT)
        .args(files)
        .env_clear()
        .envs(OUTER_ENV.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (see scripts/test)", python.display()));
    assert!(
        output.status.success(),
        "{} failed ({}): {}\nrun scripts/test to create .venv with python-dotenv, or set LATCHKEY_TEST_PYTHON",
        python.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut run = PythonRun {
        version: String::new(),
        environ: HashMap::new(),
        files: Vec::new(),
    };
    let mut current: Option<PythonResult> = None;
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["VERSION", v] => run.version = (*v).to_owned(),
            ["ENV", k, v] => {
                run.environ.insert(unhex(k), unhex(v));
            }
            ["FILE", i] => {
                assert_eq!(i.parse::<usize>().unwrap(), run.files.len());
                current = Some(PythonResult::default());
            }
            ["WARN", n] => current.as_mut().unwrap().warnings.push(n.parse().unwrap()),
            ["KV", k, v] => {
                let v = if *v == "-" { None } else { Some(unhex(v)) };
                current.as_mut().unwrap().entries.push((unhex(k), v));
            }
            ["END"] => run.files.push(current.take().unwrap()),
            _ => panic!("unexpected line from python: {line:?}"),
        }
    }
    assert_eq!(
        run.files.len(),
        files.len(),
        "python did not report every file"
    );
    run
}

/// python's `str.isspace`.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Lines as python-dotenv counts them (after universal newlines and BOM).
fn py_lines(text: &str) -> Vec<String> {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    text.split('\n').map(str::to_owned).collect()
}

fn show(entries: &Entries) -> String {
    let shown: Vec<String> = entries
        .iter()
        .map(|(k, v)| {
            let v = match v {
                None => "None".to_owned(),
                Some(v) if v.chars().count() > 120 => {
                    format!(
                        "{:?}... ({} chars)",
                        v.chars().take(120).collect::<String>(),
                        v.chars().count()
                    )
                }
                Some(v) => format!("{v:?}"),
            };
            format!("  {k:?} = {v}")
        })
        .collect();
    shown.join("\n")
}

#[test]
fn corpus_matches_python_dotenv() {
    let files = corpus_files();
    assert!(
        files.len() >= MIN_CORPUS_FILES,
        "only {} corpus files",
        files.len()
    );
    let py = run_python(&files);
    for (k, v) in OUTER_ENV {
        assert_eq!(
            py.environ.get(*k).map(String::as_str),
            Some(*v),
            "python's os.environ lacks {k}"
        );
    }
    let outer = |name: &str| py.environ.get(name).cloned();
    let expected: HashMap<&str, (usize, ParseErrorReason)> = EXPECTED_ERRORS
        .iter()
        .map(|&(f, l, r)| (f, (l, r)))
        .collect();

    let mut failures = Vec::new();
    let mut same = 0;
    let mut differ = 0;
    for (path, theirs) in files.iter().zip(&py.files) {
        let name = file_name(path);
        let text = std::fs::read_to_string(path).unwrap();
        let ours = parse(&text, &outer);
        match (expected.get(name.as_str()), ours) {
            (None, Ok(ours)) => {
                if !theirs.warnings.is_empty() {
                    failures.push(format!(
                        "{name}: python-dotenv warned about line(s) {:?} but we parsed it",
                        theirs.warnings
                    ));
                } else if ours != theirs.entries {
                    failures.push(format!(
                        "{name}: results differ\n ours:\n{}\n python-dotenv:\n{}",
                        show(&ours),
                        show(&theirs.entries)
                    ));
                } else {
                    same += 1;
                }
            }
            (None, Err(e)) => failures.push(format!(
                "{name}: we fail with `{e}` but python-dotenv parsed it (warnings {:?}):\n{}",
                theirs.warnings,
                show(&theirs.entries)
            )),
            (Some(&(line, reason)), ours) => {
                let want = DotenvError::Parse { line, reason };
                match ours {
                    Err(e) if e == want => {}
                    other => {
                        failures.push(format!("{name}: expected Err({want:?}), got {other:?}"))
                    }
                }
                // python-dotenv must have skipped that very statement: its line
                // is ours or the first of the blank lines just above it.
                match theirs.warnings.first() {
                    None => failures.push(format!(
                        "{name}: listed as a deliberate difference but python-dotenv parsed it without a warning"
                    )),
                    Some(&py_line) => {
                        let lines = py_lines(&text);
                        let blank_between = py_line <= line
                            && lines[py_line - 1..line - 1].iter().all(|l| l.chars().all(is_py_space));
                        if !blank_between {
                            failures.push(format!(
                                "{name}: python-dotenv's first warning is for line {py_line}, we say line {line}"
                            ));
                        }
                    }
                }
                differ += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus files disagree with python-dotenv {} ({})\n\n{}",
        failures.len(),
        files.len(),
        py.version,
        python().display(),
        failures.join("\n\n")
    );
    eprintln!(
        "dotenv corpus: {} files, {same} identical to python-dotenv {}, {differ} expected differences",
        files.len(),
        py.version
    );
}

/// The table and the corpus agree: every entry names a file, and every
/// `err_*` file (the naming convention for deliberate differences) is listed.
#[test]
fn expected_error_table_matches_corpus() {
    let names: Vec<String> = corpus_files().iter().map(|p| file_name(p)).collect();
    for (f, _, _) in EXPECTED_ERRORS {
        assert!(
            names.iter().any(|n| n == f),
            "{f} is listed but not in tests/dotenv"
        );
    }
    for n in names.iter().filter(|n| n.starts_with("err_")) {
        assert!(
            EXPECTED_ERRORS.iter().any(|(f, _, _)| f == n),
            "{n} is not listed in EXPECTED_ERRORS"
        );
    }
    assert!(
        names.len() >= MIN_CORPUS_FILES,
        "only {} corpus files",
        names.len()
    );
}
