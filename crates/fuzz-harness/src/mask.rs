//! The filter of `latchkey run --mask`: whatever the write boundaries, the
//! output is that of masking the whole stream at once, and no value of at
//! least `MASK_MIN_CHARS` characters survives in it.

#[allow(dead_code)]
#[path = "../../cli/src/mask.rs"]
mod filter;

use filter::{Masker, MASK_MIN_CHARS};

// Input: values separated by `\n` up to the first `\0`, then the stream;
// the first byte of the stream section chooses the read sizes.
/// Runs one input, panicking when an invariant does not hold.
pub fn check(data: &[u8]) {
    let Some(split) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (values, rest) = data.split_at(split);
    let Some((&sizes, stream)) = rest[1..].split_first() else {
        return;
    };
    let values: Vec<Vec<u8>> = values
        .split(|&b| b == b'\n')
        .filter(|v| String::from_utf8_lossy(v).chars().count() >= MASK_MIN_CHARS)
        .map(<[u8]>::to_vec)
        .take(16)
        .collect();
    if values.is_empty() {
        return;
    }
    let masker = Masker::new(&values);

    let mut whole = Vec::new();
    masker.feed(&mut stream.to_vec(), &mut whole, true);

    // Reads of 1 to 8 bytes, varying with the stream's own bytes.
    let mut pending = Vec::new();
    let mut out = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let n = (1 + usize::from(sizes.wrapping_add(stream[at]) % 8)).min(stream.len() - at);
        pending.extend_from_slice(&stream[at..at + n]);
        masker.feed(&mut pending, &mut out, false);
        at += n;
    }
    masker.feed(&mut pending, &mut out, true);
    assert_eq!(out, whole, "read boundaries changed the output");

    let mut pumped = Vec::new();
    masker.pump(stream, &mut pumped);
    assert_eq!(pumped, whole);

    for v in &values {
        // A value made of the mask's own `*` may reappear as a mask.
        if !v.contains(&b'*') {
            assert!(
                !whole.windows(v.len()).any(|w| w == v.as_slice()),
                "a value survived"
            );
        }
    }
}
