//! [`QueueClient`]: how injectors hand a message to `tern-queue` (or to the
//! program named by `$QMAILQUEUE`, as qmail's callers do for content
//! filters), and what its exit status means.

use crate::envelope::Envelope;
use crate::exit::describe;
use std::fmt;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs the queue program for one message.
#[derive(Debug, Clone)]
pub struct QueueClient {
    program: PathBuf,
}

/// Why a message was not queued.
#[derive(Debug)]
pub struct SubmitError {
    code: Option<i32>,
    text: String,
    temporary: bool,
}

impl SubmitError {
    /// True when retrying later may succeed.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// The queue program's exit code, when it exited (None: it could not be
    /// started, was killed, or the caller aborted).
    pub fn code(&self) -> Option<i32> {
        self.code
    }

    fn temp(text: String) -> Self {
        SubmitError {
            code: None,
            text,
            temporary: true,
        }
    }
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for SubmitError {}

impl QueueClient {
    /// The client for an instance: `$QMAILQUEUE` when set and not empty,
    /// else `<home>/bin/tern-queue`.
    pub fn for_home(home: &Path) -> QueueClient {
        match std::env::var_os("QMAILQUEUE") {
            Some(p) if !p.is_empty() => QueueClient::with_program(PathBuf::from(p)),
            _ => QueueClient::with_program(home.join("bin").join("tern-queue")),
        }
    }

    /// A client running a given queue program.
    pub fn with_program(program: PathBuf) -> QueueClient {
        QueueClient { program }
    }

    /// The program this client runs.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Queues one message: starts the queue program with a pipe on fd 0 (the
    /// message, written by `write_message`) and a pipe on fd 1 (the
    /// envelope), then waits for its exit status.
    ///
    /// If `write_message` fails, the envelope is never written, so the queue
    /// program sees a truncated envelope and queues nothing; the error is
    /// returned (temporary) with the writer's reason.
    pub fn submit(
        &self,
        envelope: &Envelope,
        write_message: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), SubmitError> {
        let (env_read, mut env_write) = std::io::pipe()
            .map_err(|e| SubmitError::temp(format!("cannot make pipe: {e} (#4.3.0)")))?;
        let mut child = Command::new(&self.program)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(env_read))
            .spawn()
            .map_err(|e| SubmitError {
                code: Some(120),
                text: format!("unable to run {}: {e} (#4.3.0)", self.program.display()),
                temporary: true,
            })?;
        let mut msg = child.stdin.take().expect("stdin was piped");
        let written = {
            let mut w = std::io::BufWriter::with_capacity(64 * 1024, &mut msg);
            write_message(&mut w).and_then(|_| w.flush())
        };
        drop(msg);
        let aborted = match written {
            Ok(()) => {
                // A queue program that already exited (EPIPE) is reported by
                // its exit status below, not by the pipe error.
                let _ = env_write.write_all(&envelope.encode());
                None
            }
            Err(e) => Some(e),
        };
        drop(env_write);
        let status = child.wait().map_err(|e| {
            SubmitError::temp(format!("cannot wait for queue program: {e} (#4.3.0)"))
        })?;
        match status.code() {
            // The writer's own failure, unless the queue program failed
            // first (then the pipe error is only its consequence).
            Some(0) | None if aborted.is_some() => Err(SubmitError::temp(format!(
                "message not queued: {} (#4.3.0)",
                aborted.expect("checked above")
            ))),
            Some(0) => Ok(()),
            Some(code) => {
                let (text, temporary) = describe(code);
                Err(SubmitError {
                    code: Some(code),
                    text: text.to_string(),
                    temporary,
                })
            }
            None => Err(SubmitError::temp(format!(
                "queue program killed by signal {} (#4.3.0)",
                status.signal().unwrap_or(0)
            ))),
        }
    }
}
