//! `tern-spool`: the queue, end to end.
//!
//! This crate is the one owner of the queue contract (docs/queue.md is its
//! prose twin):
//!
//! * [`envelope`]: the envelope bytes a client writes on `tern-queue`'s fd 1
//!   (`F<sender>\0`, `T<recipient>\0`..., `\0`), with bounded streaming
//!   parsing and the limits that produce exit codes 11, 12 and 13;
//! * [`exit`]: the qmail-queue exit-code table ([`QueueExit`]) and the
//!   classification of any code a queue program may return;
//! * [`layout`]: the directories under `queue/`, the `format` file that fixes
//!   the split at install time, and how a message id maps to a path;
//! * [`qfile`]: the format of one queue file (header records, then the
//!   message);
//! * [`commit`]: the writer used by `tern-queue`, with every fsync of the
//!   commit protocol;
//! * [`scan`]: reading and listing committed messages ([`Queue`]);
//! * [`state`]: the queue manager's journal of per-recipient states;
//! * [`clean`]: the cleaner's batched moves and removals;
//! * [`repair`]: removing what a crashed writer left, never a committed
//!   message;
//! * [`client`]: [`QueueClient`], which runs `tern-queue` (or `$QMAILQUEUE`),
//!   or talks to the queue gate (`$TERN_QUEUE_SOCKET`), for injectors and
//!   maps its exit status;
//! * [`gate`]: the queue gate's wire protocol (a header and two pipe
//!   descriptors over a Unix socket, a one-byte answer).
//!
//! Trust level: linked into the setuid `tern-queue`; parses the envelope from
//! an untrusted caller (bounded, fuzzed) and queue files written by
//! `tern-queue` itself (still bounded: a damaged file is reported, never
//! trusted).
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod clean;
pub mod client;
pub mod commit;
pub mod envelope;
pub mod exit;
pub mod feed;
pub mod gate;
pub mod layout;
pub mod qfile;
mod relay;
pub mod repair;
pub mod scan;
pub mod state;

pub use client::{QueueClient, SubmitError};
pub use envelope::{Envelope, MAX_ADDRESS, MAX_ENVELOPE, MAX_RECIPIENTS};
pub use exit::QueueExit;
pub use repair::RepairReport;
pub use scan::{Queue, QueuedMessage, Recipient, RecipientState, Stage};

use std::path::PathBuf;

/// What went wrong while using the queue from a library caller (listing,
/// repair, layout creation). `tern-queue` maps its own failures to
/// [`QueueExit`] codes instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on a queue path failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `queue/format` is missing, unreadable or not a format this build knows.
    #[error("{path}: {hint}")]
    Format {
        /// The path concerned.
        path: PathBuf,
        /// What is wrong, in words.
        hint: &'static str,
    },
    /// A queue file does not parse.
    #[error("damaged queue file {path}: {hint}")]
    Damaged {
        /// The path concerned.
        path: PathBuf,
        /// What is wrong, in words.
        hint: &'static str,
    },
    /// No committed message has this id.
    #[error("no message {0} in the queue")]
    NotFound(u64),
}

impl Error {
    /// Every queue error is temporary: the queue is retried, never bounced.
    pub fn is_temporary(&self) -> bool {
        true
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
