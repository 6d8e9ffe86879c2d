//! The filter of `latchkey run --mask`: replaces secret values in a byte
//! stream with [`MASK`], also when a value is split across reads.
//!
//! It depends on nothing else of the CLI so that the fuzz target
//! (`fuzz/fuzz_targets/mask.rs`) can include this file as it is.

use std::io::{Read, Write};

/// What replaces a secret value in masked output.
pub(crate) const MASK: &[u8] = b"*****";

/// Values shorter than this (in characters) are not masked: masking `1` or
/// `no` would garble the output and hide nothing.
pub(crate) const MASK_MIN_CHARS: usize = 4;

/// A streaming filter that replaces secret values with [`MASK`], also when
/// a value is split across reads.
pub(crate) struct Masker {
    matcher: aho_corasick::AhoCorasick,
    patterns: Vec<Vec<u8>>,
    max_len: usize,
}

impl Masker {
    pub(crate) fn new(patterns: &[Vec<u8>]) -> Self {
        let matcher = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(patterns)
            .unwrap_or_else(|e| panic!("secret values form a valid automaton: {e}"));
        Self {
            matcher,
            patterns: patterns.to_vec(),
            max_len: patterns.iter().map(Vec::len).max().unwrap_or(0),
        }
    }

    /// Copies `input` to `output`, masked, until `input` ends. A failed
    /// write (the reader went away) still drains `input` so that the
    /// command is not blocked on a full pipe.
    pub(crate) fn pump(&self, mut input: impl Read, mut output: impl Write) {
        let mut pending = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::new();
        let mut write_ok = true;
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            pending.extend_from_slice(&buf[..n]);
            out.clear();
            self.feed(&mut pending, &mut out, false);
            if write_ok && !out.is_empty() {
                write_ok = output.write_all(&out).and_then(|()| output.flush()).is_ok();
            }
        }
        out.clear();
        self.feed(&mut pending, &mut out, true);
        if write_ok {
            let _ = output.write_all(&out).and_then(|()| output.flush());
        }
    }

    /// Moves the part of `pending` that can be decided to `out`, masked;
    /// keeps in `pending` the tail that may be the start of a value (all of
    /// it when `eof`, the caller's last call, is false and it may grow).
    pub(crate) fn feed(&self, pending: &mut Vec<u8>, out: &mut Vec<u8>, eof: bool) {
        let boundary = if eof {
            pending.len()
        } else {
            self.undecided_from(pending)
        };
        let mut pos = 0;
        for m in self.matcher.find_iter(pending.as_slice()) {
            if m.start() >= boundary {
                break;
            }
            out.extend_from_slice(&pending[pos..m.start()]);
            out.extend_from_slice(MASK);
            pos = m.end();
        }
        let keep_from = pos.max(boundary);
        out.extend_from_slice(&pending[pos..keep_from]);
        pending.drain(..keep_from);
    }

    /// The first position of the last `max_len - 1` bytes from which the
    /// rest of `data` is a proper prefix of a value: output from there on
    /// may still turn into a value and must wait for more. Everything before
    /// it is decided (a match starting there is complete).
    fn undecided_from(&self, data: &[u8]) -> usize {
        let start = data.len().saturating_sub(self.max_len.saturating_sub(1));
        (start..data.len())
            .find(|&p| {
                let tail = &data[p..];
                self.patterns
                    .iter()
                    .any(|pat| pat.len() > tail.len() && pat.starts_with(tail))
            })
            .unwrap_or(data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_chunks(patterns: &[&str], chunks: &[&str]) -> String {
        let patterns: Vec<Vec<u8>> = patterns.iter().map(|p| p.as_bytes().to_vec()).collect();
        let masker = Masker::new(&patterns);
        let mut pending = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            pending.extend_from_slice(chunk.as_bytes());
            masker.feed(&mut pending, &mut out, false);
        }
        masker.feed(&mut pending, &mut out, true);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_split_across_reads_are_masked() {
        let s = "token=hunter2!";
        for split in 0..s.len() {
            let (a, b) = s.split_at(split);
            assert_eq!(
                mask_chunks(&["hunter2"], &[a, b]),
                "token=*****!",
                "{split}"
            );
        }
        let bytes: Vec<String> = s.chars().map(String::from).collect();
        let chunks: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(mask_chunks(&["hunter2"], &chunks), "token=*****!");
    }

    #[test]
    fn longest_value_wins_and_partial_values_pass() {
        assert_eq!(
            mask_chunks(&["abcd", "abcdefgh"], &["xabcdefghx"]),
            "x*****x"
        );
        assert_eq!(
            mask_chunks(&["abcd", "abcdefgh"], &["xabcd", "efx"]),
            "x*****efx"
        );
        assert_eq!(
            mask_chunks(&["secret"], &["secre", "t", "secr"]),
            "*****secr"
        );
        assert_eq!(mask_chunks(&["aaaa"], &["aaaaaaaaa"]), "**********a");
    }

    #[test]
    fn undecided_output_is_only_a_possible_value_start() {
        let masker = Masker::new(&[b"hunter2".to_vec()]);
        let mut pending = b"Password: ".to_vec();
        let mut out = Vec::new();
        masker.feed(&mut pending, &mut out, false);
        assert_eq!(out, b"Password: ");
        let mut pending = b"x hun".to_vec();
        out.clear();
        masker.feed(&mut pending, &mut out, false);
        assert_eq!(
            (out.as_slice(), pending.as_slice()),
            (&b"x "[..], &b"hun"[..])
        );
    }
}
