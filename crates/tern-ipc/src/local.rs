//! The `tern-lspawn` ↔ `tern-local` contract: what `tern-local`'s exit
//! status means for the [`Report`](crate::Report), and how its output
//! becomes the report text.
//!
//! | how `tern-local` ended | outcome | text |
//! |---|---|---|
//! | exit 0 or 99 | `K` | its output |
//! | exit 100 | `D` | its output |
//! | exit 111 | `Z` | its output |
//! | any other exit code N | `Z` | `tern-local exited N`, then its output |
//! | killed by signal N | `Z` | `tern-local crashed (signal N)`, then its output |
//! | killed after the per-delivery timeout of N seconds | `Z` | `delivery timed out after N seconds (#4.3.0)` |
//!
//! The output (stdout and stderr share one pipe) is bounded by
//! [`Output`]: the first [`MAX_TEXT`] bytes are kept, the rest is read and
//! dropped, and a kept text that was cut ends with [`CUT_NOTE`] (the whole
//! text still fits in [`MAX_TEXT`]). Leading and trailing white space is
//! trimmed. An empty output gets a fixed text saying so.

use crate::{MAX_TEXT, Outcome};

/// Appended to an output that was cut.
pub const CUT_NOTE: &[u8] = b" [output cut: too long]";

/// `tern-local`'s exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LocalExit {
    /// Delivered.
    Delivered = 0,
    /// Delivered, and the rest of the `.qmail` file was skipped on purpose.
    DeliveredStop = 99,
    /// Permanent failure: bounce.
    Permanent = 100,
    /// Temporary failure: retry later.
    Temporary = 111,
}

impl From<LocalExit> for std::process::ExitCode {
    fn from(e: LocalExit) -> std::process::ExitCode {
        std::process::ExitCode::from(e as u8)
    }
}

/// How a `tern-local` process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
    /// The spawner killed it after this many seconds.
    TimedOut(u64),
}

/// Collects a child's output up to [`MAX_TEXT`] bytes; anything beyond is
/// counted and dropped, so a chatty child costs no memory.
#[derive(Debug, Default)]
pub struct Output {
    kept: Vec<u8>,
    dropped: u64,
}

impl Output {
    /// Adds bytes read from the child.
    pub fn push(&mut self, bytes: &[u8]) {
        let room = MAX_TEXT - self.kept.len();
        let take = room.min(bytes.len());
        self.kept.extend_from_slice(&bytes[..take]);
        self.dropped += (bytes.len() - take) as u64;
    }

    /// Bytes read and dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The report text: trimmed, and when cut, shortened to end with
    /// [`CUT_NOTE`] within [`MAX_TEXT`] bytes.
    pub fn text(&self) -> Vec<u8> {
        if self.dropped == 0 {
            return self.kept.trim_ascii().to_vec();
        }
        let keep = MAX_TEXT - CUT_NOTE.len();
        let mut t = self.kept[..keep.min(self.kept.len())]
            .trim_ascii_start()
            .to_vec();
        t.extend_from_slice(CUT_NOTE);
        t
    }
}

fn join(head: &str, output: &[u8]) -> Vec<u8> {
    let mut t = head.as_bytes().to_vec();
    if !output.is_empty() {
        t.extend_from_slice(b": ");
        t.extend_from_slice(output);
    }
    t.truncate(MAX_TEXT);
    t
}

/// The outcome and report text for a `tern-local` that ended as `ending`
/// having written `output` (already bounded: [`Output::text`]).
pub fn report(ending: Ending, output: &[u8]) -> (Outcome, Vec<u8>) {
    let or = |fallback: &str| {
        if output.is_empty() {
            fallback.as_bytes().to_vec()
        } else {
            output.to_vec()
        }
    };
    match ending {
        Ending::Exited(0) | Ending::Exited(99) => (Outcome::Delivered, or("delivered")),
        Ending::Exited(100) => (
            Outcome::Failed,
            or("tern-local reported a permanent failure without a reason"),
        ),
        Ending::Exited(111) => (
            Outcome::Deferred,
            or("tern-local reported a temporary failure without a reason"),
        ),
        Ending::Exited(n) => (
            Outcome::Deferred,
            join(&format!("tern-local exited {n}"), output),
        ),
        Ending::Signaled(s) => (
            Outcome::Deferred,
            join(&format!("tern-local crashed (signal {s})"), output),
        ),
        Ending::TimedOut(secs) => (
            Outcome::Deferred,
            format!("delivery timed out after {secs} seconds (#4.3.0)").into_bytes(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_mapping() {
        let cases: &[(Ending, &[u8], Outcome, &str)] = &[
            (
                Ending::Signaled(11),
                b"",
                Outcome::Deferred,
                "tern-local crashed (signal 11)",
            ),
            (
                Ending::Signaled(9),
                b"half",
                Outcome::Deferred,
                "tern-local crashed (signal 9): half",
            ),
            (
                Ending::Exited(1),
                b"",
                Outcome::Deferred,
                "tern-local exited 1",
            ),
            (
                Ending::Exited(101),
                b"x",
                Outcome::Deferred,
                "tern-local exited 101: x",
            ),
            (
                Ending::Exited(-1),
                b"",
                Outcome::Deferred,
                "tern-local exited -1",
            ),
            (
                Ending::TimedOut(5),
                b"partial",
                Outcome::Deferred,
                "delivery timed out after 5 seconds (#4.3.0)",
            ),
            (
                Ending::Exited(100),
                b"no mailbox (#5.1.1)",
                Outcome::Failed,
                "no mailbox (#5.1.1)",
            ),
            (
                Ending::Exited(100),
                b"",
                Outcome::Failed,
                "tern-local reported a permanent failure without a reason",
            ),
            (
                Ending::Exited(111),
                b"disk full",
                Outcome::Deferred,
                "disk full",
            ),
            (
                Ending::Exited(111),
                b"",
                Outcome::Deferred,
                "tern-local reported a temporary failure without a reason",
            ),
            (
                Ending::Exited(0),
                b"did 1+0+0",
                Outcome::Delivered,
                "did 1+0+0",
            ),
            (Ending::Exited(99), b"", Outcome::Delivered, "delivered"),
        ];
        for (ending, out, outcome, text) in cases {
            let (o, t) = report(*ending, out);
            assert_eq!(o, *outcome, "{ending:?}");
            assert_eq!(String::from_utf8_lossy(&t), *text, "{ending:?}");
        }
        assert_eq!(LocalExit::Delivered as u8, 0);
        assert_eq!(LocalExit::DeliveredStop as u8, 99);
        assert_eq!(LocalExit::Permanent as u8, 100);
        assert_eq!(LocalExit::Temporary as u8, 111);
        // an abnormal ending with a huge output is still bounded
        let (_, t) = report(Ending::Exited(3), &vec![b'y'; MAX_TEXT]);
        assert_eq!(t.len(), MAX_TEXT);
    }

    #[test]
    fn output_is_bounded_and_trimmed() {
        let mut o = Output::default();
        o.push(b"  \n did 1+0+0 \n\n");
        assert_eq!(o.text(), b"did 1+0+0");
        assert_eq!(o.dropped(), 0);

        // exactly MAX_TEXT: nothing cut
        let mut o = Output::default();
        o.push(&vec![b'a'; MAX_TEXT]);
        assert_eq!(o.text().len(), MAX_TEXT);
        assert_eq!(o.dropped(), 0);

        // one byte over, fed in small pieces
        let mut o = Output::default();
        for _ in 0..=MAX_TEXT {
            o.push(b"b");
        }
        assert_eq!(o.dropped(), 1);
        let t = o.text();
        assert_eq!(t.len(), MAX_TEXT);
        assert!(t.ends_with(CUT_NOTE));

        // a megabyte: memory stays bounded
        let mut o = Output::default();
        for _ in 0..256 {
            o.push(&[b'c'; 4096]);
        }
        assert_eq!(o.dropped(), 256 * 4096 - MAX_TEXT as u64);
        assert!(o.text().len() <= MAX_TEXT);
        assert!(o.kept.capacity() < 2 * MAX_TEXT);
    }
}
