//! Every committed fuzz input, run through its target's checks: the corpora
//! in `fuzz/corpus/<target>/` and the reproducers of fixed bugs in
//! `fuzz/artifacts-found/` (named `<what>-<target>`). Fuzzing itself
//! (`scripts/fuzz`) finds new inputs; this keeps the ones found passing.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
};

use latchkey_fuzz_harness::{Check, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `files` through `check`; the failures, by file, with their panic messages.
fn run(check: Check, files: &[PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for file in files {
        let input = std::fs::read(file).expect("a corpus file");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&input))) {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            failures.push(format!("{}: {message}", file.display()));
        }
    }
    failures
}

#[test]
fn every_corpus_input_passes_its_target() {
    let mut failures = Vec::new();
    for (target, check) in TARGETS {
        let files = files_in(&fuzz_dir().join("corpus").join(target));
        assert!(
            files.len() >= 10,
            "fuzz/corpus/{target} holds {} inputs; it should hold the committed corpus",
            files.len()
        );
        failures.extend(run(*check, &files));
    }
    assert!(
        failures.is_empty(),
        "{} inputs fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_reproducers_of_fixed_bugs_pass() {
    let files: Vec<PathBuf> = files_in(&fuzz_dir().join("artifacts-found"))
        .into_iter()
        .filter(|f| f.extension().is_none())
        .collect();
    assert!(
        !files.is_empty(),
        "fuzz/artifacts-found holds no reproducer"
    );
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy();
        let (_, check) = TARGETS
            .iter()
            .find(|(target, _)| name.ends_with(&format!("-{target}")))
            .unwrap_or_else(|| panic!("{name}: the name ends with no target's name"));
        failures.extend(run(*check, std::slice::from_ref(file)));
    }
    assert!(
        failures.is_empty(),
        "{} reproducers fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
