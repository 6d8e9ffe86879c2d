//! The output of one stream (stdout or stderr) of a sandbox: a bounded ring
//! of its most recent bytes, addressed by byte offset from the start of the
//! stream.
//!
//! Readers (`SandboxStdioReadV2`) ask for the bytes from an offset; they get
//! what is still held from there on, with the offset it starts at. When a
//! reader falls more than the capacity behind, the oldest bytes are gone and
//! the answer starts later than asked: Modal's client expects exactly that
//! ("only the most recent portion of output is retained") and warns. A
//! reader that keeps up never loses a byte, and memory per stream never
//! exceeds the capacity.

use std::{collections::VecDeque, sync::Mutex};

use tokio::sync::watch;

/// A bounded, offset-addressed output stream. Writers append; readers read
/// from an offset and wait for more. Its `Debug` shows offsets, never the
/// bytes: a process may print its secrets.
pub struct OutputBuffer {
    capacity: usize,
    state: Mutex<State>,
    /// Bumped on every append and on close, to wake readers.
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for OutputBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f.debug_struct("OutputBuffer")
            .field("capacity", &self.capacity)
            .field("start", &state.start)
            .field("end", &state.end())
            .field("closed", &state.closed)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    /// The most recent bytes of the stream, at most `capacity`.
    data: VecDeque<u8>,
    /// Offset in the stream of `data[0]`: bytes before it were dropped.
    start: u64,
    /// No more bytes will come.
    closed: bool,
}

impl State {
    fn end(&self) -> u64 {
        self.start + self.data.len() as u64
    }
}

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Bytes starting at `offset` (later than asked if older bytes were dropped).
    Data { offset: u64, bytes: Vec<u8> },
    /// Nothing yet at the asked offset; more may come.
    Pending,
    /// The stream is closed and everything from the asked offset was read.
    End,
}

impl OutputBuffer {
    /// An empty stream that holds at most `capacity` bytes (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
            changed: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves consistent data (every
        // mutation is a few infallible steps), so poisoning is ignored.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends bytes, dropping the oldest ones beyond the capacity.
    pub(crate) fn push(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            // Only the last `capacity` bytes of this write can survive.
            let keep = &bytes[bytes.len().saturating_sub(self.capacity)..];
            let skipped = (bytes.len() - keep.len()) as u64;
            let overflow = (state.data.len() + keep.len()).saturating_sub(self.capacity);
            state.data.drain(..overflow);
            state.start += overflow as u64;
            if skipped > 0 {
                // The whole old window and the head of this write are gone.
                state.start += skipped;
            }
            // Grow by doubling, but never allocate beyond the capacity.
            let needed = state.data.len() + keep.len();
            if needed > state.data.capacity() {
                let target = (state.data.capacity() * 2).clamp(needed, self.capacity);
                let more = target - state.data.len();
                state.data.reserve_exact(more);
            }
            state.data.extend(keep);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Marks the end of the stream: readers get [`Chunk::End`] once they have
    /// read everything.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.changed.send_modify(|n| *n += 1);
    }

    /// Total bytes written so far (including dropped ones).
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.lock().end()
    }

    /// At most `max` bytes from `offset` on, without waiting.
    pub(crate) fn read(&self, offset: u64, max: usize) -> Chunk {
        let state = self.lock();
        let from = offset.max(state.start);
        if from >= state.end() {
            return if state.closed {
                Chunk::End
            } else {
                Chunk::Pending
            };
        }
        let skip = usize::try_from(from - state.start).unwrap_or(usize::MAX);
        let bytes: Vec<u8> = state
            .data
            .iter()
            .skip(skip)
            .take(max.max(1))
            .copied()
            .collect();
        Chunk::Data {
            offset: from,
            bytes,
        }
    }

    /// At most `max` bytes from `offset` on, waiting until there are some;
    /// `None` at the end of the stream.
    pub async fn next(&self, offset: u64, max: usize) -> Option<(u64, Vec<u8>)> {
        let mut changed = self.changed.subscribe();
        loop {
            // Mark the current version seen before looking, so that a write
            // between the look and the wait still wakes us.
            changed.borrow_and_update();
            match self.read(offset, max) {
                Chunk::Data { offset, bytes } => return Some((offset, bytes)),
                Chunk::End => return None,
                Chunk::Pending => {
                    if changed.changed().await.is_err() {
                        return None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    #[test]
    fn debug_shows_offsets_never_output() {
        let buffer = OutputBuffer::new(64);
        buffer.push(b"API_KEY=sk-live-123456");
        let shown = format!("{buffer:?}");
        assert!(!shown.contains("sk-live"), "{shown}");
        assert!(shown.contains("end: 22"), "{shown}");
    }

    fn data(offset: u64, bytes: &[u8]) -> Chunk {
        Chunk::Data {
            offset,
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn reads_from_any_offset() {
        let buf = OutputBuffer::new(100);
        assert_eq!(buf.read(0, 10), Chunk::Pending);
        buf.push(b"hello ");
        buf.push(b"world");
        assert_eq!(buf.read(0, 100), data(0, b"hello world"));
        assert_eq!(buf.read(6, 100), data(6, b"world"));
        assert_eq!(buf.read(0, 4), data(0, b"hell"));
        assert_eq!(buf.read(11, 100), Chunk::Pending);
        buf.close();
        assert_eq!(buf.read(11, 100), Chunk::End);
        assert_eq!(buf.read(3, 100), data(3, b"lo world"));
    }

    #[test]
    fn keeps_only_the_most_recent_bytes() {
        let buf = OutputBuffer::new(8);
        buf.push(b"0123456");
        buf.push(b"789");
        assert_eq!(buf.len(), 10);
        // Asked from 0, answered from 2: bytes 0 and 1 were dropped.
        assert_eq!(buf.read(0, 100), data(2, b"23456789"));
        // One write larger than the capacity keeps its tail.
        buf.push(b"abcdefghijkl");
        assert_eq!(buf.len(), 22);
        assert_eq!(buf.read(0, 100), data(14, b"efghijkl"));
        assert_eq!(buf.read(20, 100), data(20, b"kl"));
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        let buf = OutputBuffer::new(1024);
        for i in 0..10_000u32 {
            buf.push(&i.to_le_bytes());
        }
        assert_eq!(buf.len(), 40_000);
        assert!(buf.lock().data.len() <= 1024);
        let allocated = buf.lock().data.capacity();
        assert!(allocated <= 1024, "{allocated}");
        let odd = OutputBuffer::new(3 * 1000 + 7);
        for _ in 0..100 {
            odd.push(&[7u8; 250]);
        }
        assert!(odd.lock().data.capacity() <= 3_007);
        match buf.read(0, usize::MAX) {
            Chunk::Data { offset, bytes } => {
                assert_eq!(offset, 40_000 - 1024);
                assert_eq!(bytes.len(), 1024);
                assert_eq!(&bytes[1020..], &9_999u32.to_le_bytes());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn writes_after_close_are_ignored() {
        let buf = OutputBuffer::new(10);
        buf.push(b"a");
        buf.close();
        buf.push(b"b");
        assert_eq!(buf.read(0, 10), data(0, b"a"));
        assert_eq!(buf.read(1, 10), Chunk::End);
    }

    #[tokio::test]
    async fn a_reader_waits_for_data_and_sees_the_end() {
        let buf = Arc::new(OutputBuffer::new(1 << 20));
        let reader = {
            let buf = Arc::clone(&buf);
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut offset = 0;
                while let Some((at, bytes)) = buf.next(offset, 3).await {
                    assert_eq!(at, offset, "a reader that keeps up loses nothing");
                    offset = at + bytes.len() as u64;
                    got.extend(bytes);
                }
                got
            })
        };
        for part in [&b"one "[..], b"two ", b"three"] {
            tokio::time::sleep(Duration::from_millis(5)).await;
            buf.push(part);
        }
        buf.close();
        let got = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"one two three");
    }
}
