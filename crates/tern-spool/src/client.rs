//! [`QueueClient`]: how injectors hand a message to `tern-queue` (or to the
//! program named by `$QMAILQUEUE`, as qmail's callers do for content
//! filters), or to the queue gate named by `$TERN_QUEUE_SOCKET`, and what
//! the answer means.

use crate::envelope::Envelope;
use crate::exit::describe;
use std::fmt;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The environment variable naming the queue gate's socket.
pub const SOCKET_VAR: &str = "TERN_QUEUE_SOCKET";

/// Runs the queue program, or talks to the queue gate or the queue
/// writer, for one message.
#[derive(Debug, Clone)]
pub struct QueueClient {
    program: PathBuf,
    gate: Option<PathBuf>,
    writer: Option<WriterLink>,
}

/// A connection to the queue writer (`tern-queue --serve`), kept open
/// across messages and shared by clones.
#[derive(Debug, Clone)]
struct WriterLink {
    socket: PathBuf,
    conn: std::sync::Arc<std::sync::Mutex<Option<std::os::unix::net::UnixStream>>>,
}

/// Message bytes as the writer's data frames.
struct DataFrames<'a> {
    sock: &'a std::os::unix::net::UnixStream,
    buf: Vec<u8>,
}

/// What [`DataFrames`] gathers before it sends a frame: small writes (the
/// header line by line) are joined; a write this large or larger goes out
/// as frames of its own, without a copy. Kept small: every reused SMTP
/// worker holds one.
const FRAME_GATHER: usize = 8 * 1024;

impl Write for DataFrames<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() && b.len() >= FRAME_GATHER {
            let n = b.len().min(crate::feed::MAX_DATA);
            let mut s = self.sock;
            crate::feed::write_data(&mut s, &b[..n])?;
            return Ok(n);
        }
        let room = FRAME_GATHER - self.buf.len();
        let n = room.min(b.len());
        self.buf.extend_from_slice(&b[..n]);
        if self.buf.len() == FRAME_GATHER {
            self.flush()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let mut s = self.sock;
            crate::feed::write_data(&mut s, &self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// True when a kept connection has been closed or answered out of turn
/// (the writer restarted): it must not carry a message.
fn stale(sock: &std::os::unix::net::UnixStream) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(sock, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    !matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(0))
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

    /// The queue program's exit code (or the gate's answer), when there was
    /// one (None: it could not be started or reached, was killed, went away
    /// before answering, or the caller aborted).
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

/// Writes the message (through `write_message`) and then, if that worked,
/// the envelope. Returns the writer's own failure, if any; a failed
/// envelope write is left to the queue program's answer (it sees a
/// truncated envelope).
fn stream(
    msg: &mut dyn Write,
    env: &mut dyn Write,
    envelope: &Envelope,
    write_message: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Option<std::io::Error> {
    let written = {
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, msg);
        write_message(&mut w).and_then(|_| w.flush())
    };
    match written {
        Ok(()) => {
            // A queue program that already exited (EPIPE) is reported by
            // its answer, not by the pipe error.
            let _ = env.write_all(&envelope.encode());
            None
        }
        Err(e) => Some(e),
    }
}

/// The outcome for an answer `code` (None: no answer) and the writer's
/// own failure.
fn outcome(
    code: Option<i32>,
    aborted: Option<std::io::Error>,
    no_answer: impl FnOnce() -> String,
) -> Result<(), SubmitError> {
    match (code, aborted) {
        // The writer's own failure, unless the queue program failed first
        // (then the pipe error is only its consequence).
        (Some(0) | None, Some(e)) => Err(SubmitError::temp(format!(
            "message not queued: {e} (#4.3.0)"
        ))),
        (Some(0), None) => Ok(()),
        (Some(code), _) => {
            let (text, temporary) = describe(code);
            Err(SubmitError {
                code: Some(code),
                text: text.to_string(),
                temporary,
            })
        }
        (None, None) => Err(SubmitError::temp(no_answer())),
    }
}

impl QueueClient {
    /// The client for an instance: `$QMAILQUEUE` when set and not empty
    /// (a content filter, as with qmail); else the queue gate at
    /// `$TERN_QUEUE_SOCKET` when that is set, not empty, and this process
    /// is not running with elevated privileges (`AT_SECURE`: the variable
    /// then comes from a less privileged caller and is ignored); else
    /// `<home>/bin/tern-queue`.
    pub fn for_home(home: &Path) -> QueueClient {
        let program = match std::env::var_os("QMAILQUEUE") {
            Some(p) if !p.is_empty() => return QueueClient::with_program(PathBuf::from(p)),
            _ => home.join("bin").join("tern-queue"),
        };
        match std::env::var_os(SOCKET_VAR) {
            Some(s) if !s.is_empty() && !tern_sys::secure::at_secure() => QueueClient {
                program,
                gate: Some(PathBuf::from(s)),
                writer: None,
            },
            _ => QueueClient::with_program(program),
        }
    }

    /// The client for tern-smtpd: a `QMAILQUEUE` program as
    /// [`Self::for_home`] (looked up with `var`, the connection's
    /// variables); else the queue writer at `<home>/writer/socket`, falling
    /// back for each message, when the writer cannot be reached, to the
    /// queue gate when `TERN_QUEUE_SOCKET` names one (the hardened units,
    /// where no setuid program can run) or to `<home>/bin/tern-queue`. The
    /// writer's connection is kept (and shared with clones) for later
    /// messages.
    pub fn for_smtpd(home: &Path, var: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> QueueClient {
        let program = match var("QMAILQUEUE") {
            Some(p) if !p.is_empty() => return QueueClient::with_program(PathBuf::from(p)),
            _ => home.join("bin").join("tern-queue"),
        };
        // The writer first; when it cannot be reached, the gate if one is
        // named (the hardened units, where the setuid tern-queue cannot
        // run), else the setuid tern-queue.
        let gate = match var(SOCKET_VAR) {
            Some(s) if !s.is_empty() && !tern_sys::secure::at_secure() => Some(PathBuf::from(s)),
            _ => None,
        };
        QueueClient {
            program,
            gate,
            writer: Some(WriterLink {
                socket: crate::feed::socket_path(home),
                conn: Default::default(),
            }),
        }
    }

    /// True when this client would use the queue writer (when reachable).
    pub fn uses_writer(&self) -> bool {
        self.writer.is_some()
    }

    /// A client running a given queue program.
    pub fn with_program(program: PathBuf) -> QueueClient {
        QueueClient {
            program,
            gate: None,
            writer: None,
        }
    }

    /// A client talking to the queue gate listening at `socket`
    /// (`tern-queue --gate` behind it; see [`crate::gate`]).
    pub fn with_gate(socket: PathBuf) -> QueueClient {
        QueueClient {
            program: PathBuf::new(),
            gate: Some(socket),
            writer: None,
        }
    }

    /// The program this client runs (not used when [`Self::gate`] is set).
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The queue gate's socket, when this client uses one.
    pub fn gate(&self) -> Option<&Path> {
        self.gate.as_deref()
    }

    /// Queues one message: starts the queue program with a pipe on fd 0 (the
    /// message, written by `write_message`) and a pipe on fd 1 (the
    /// envelope), then waits for its exit status. With a gate, the two
    /// pipes' read ends are sent to the gate instead and its one-byte
    /// answer stands for the exit status; a gate that cannot be reached or
    /// that goes away before answering is a temporary failure.
    ///
    /// If `write_message` fails, the envelope is never written, so the queue
    /// program sees a truncated envelope and queues nothing; the error is
    /// returned (temporary) with the writer's reason.
    pub fn submit(
        &self,
        envelope: &Envelope,
        write_message: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), SubmitError> {
        if let Some(link) = &self.writer {
            let Ok(mut conn) = link.conn.lock() else {
                return match &self.gate {
                    Some(socket) => self.submit_gate(socket, envelope, write_message),
                    None => self.submit_program(envelope, write_message),
                };
            };
            if conn.as_ref().is_some_and(stale) {
                *conn = None;
            }
            if conn.is_none() {
                *conn = std::os::unix::net::UnixStream::connect(&link.socket)
                    .and_then(|mut s| {
                        // A writer at its limit closes the connection
                        // instead of answering: this message then goes
                        // through tern-queue.
                        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
                        s.write_all(&crate::feed::HELLO)?;
                        let mut ready = [1u8; 1];
                        std::io::Read::read_exact(&mut s, &mut ready)?;
                        if ready[0] != crate::feed::READY {
                            return Err(std::io::Error::other("queue writer not ready"));
                        }
                        s.set_read_timeout(None)?;
                        Ok(s)
                    })
                    .ok();
            }
            if let Some(sock) = conn.as_ref() {
                let r = submit_writer(sock, &link.socket, envelope, write_message);
                if r.as_ref().is_err_and(|e| e.code.is_none()) {
                    // The connection is in an unknown state: not reused.
                    *conn = None;
                }
                return r;
            }
            // No writer: this message goes through the gate or tern-queue.
        }
        if let Some(socket) = &self.gate {
            return self.submit_gate(socket, envelope, write_message);
        }
        self.submit_program(envelope, write_message)
    }

    fn submit_program(
        &self,
        envelope: &Envelope,
        write_message: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), SubmitError> {
        let (env_read, mut env_write) = std::io::pipe()
            .map_err(|e| SubmitError::temp(format!("cannot make pipe: {e} (#4.3.0)")))?;
        let mut cmd = Command::new(&self.program);
        cmd.stdin(Stdio::piped()).stdout(Stdio::from(env_read));
        // Our stderr is a terminal (someone, maybe root, runs sendmail from
        // a shell): the queue program (setuid ternq) gets a pipe instead,
        // which a thread copies to our stderr, so its diagnostics still
        // show and no code of another uid holds the terminal.
        let relay = if tern_sys::spawn::is_terminal(2) {
            let (r, w) = std::io::pipe()
                .map_err(|e| SubmitError::temp(format!("cannot make pipe: {e} (#4.3.0)")))?;
            cmd.stderr(Stdio::from(w));
            Some(
                crate::relay::StderrRelay::start(r)
                    .map_err(|e| SubmitError::temp(format!("cannot relay stderr: {e} (#4.3.0)")))?,
            )
        } else {
            None
        };
        let spawned = cmd.spawn();
        // The Command holds our copy of the stderr pipe's write end.
        drop(cmd);
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                if let Some(relay) = relay {
                    relay.finish();
                }
                return Err(SubmitError {
                    code: Some(120),
                    text: format!("unable to run {}: {e} (#4.3.0)", self.program.display()),
                    temporary: true,
                });
            }
        };
        let mut msg = child.stdin.take().expect("stdin was piped");
        let aborted = stream(&mut msg, &mut env_write, envelope, write_message);
        drop(msg);
        drop(env_write);
        let status = child
            .wait()
            .map_err(|e| SubmitError::temp(format!("cannot wait for queue program: {e} (#4.3.0)")));
        if let Some(relay) = relay {
            relay.finish();
        }
        let status = status?;
        outcome(status.code(), aborted, || {
            format!(
                "queue program killed by signal {} (#4.3.0)",
                status.signal().unwrap_or(0)
            )
        })
    }

    fn submit_gate(
        &self,
        socket: &Path,
        envelope: &Envelope,
        write_message: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), SubmitError> {
        let sock = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
            SubmitError::temp(format!(
                "cannot reach the queue gate {}: {e} (#4.3.0)",
                socket.display()
            ))
        })?;
        let pipes = std::io::pipe().and_then(|m| Ok((m, std::io::pipe()?)));
        let ((msg_read, mut msg), (env_read, mut env_write)) =
            pipes.map_err(|e| SubmitError::temp(format!("cannot make pipe: {e} (#4.3.0)")))?;
        crate::gate::send_request(sock.as_fd(), msg_read.as_fd(), env_read.as_fd()).map_err(
            |e| {
                SubmitError::temp(format!(
                    "cannot hand the message to the queue gate {}: {e} (#4.3.0)",
                    socket.display()
                ))
            },
        )?;
        // Only the gate holds the read ends now: if it dies, the writes
        // below fail instead of blocking on a full pipe.
        drop(msg_read);
        drop(env_read);
        let aborted = stream(&mut msg, &mut env_write, envelope, write_message);
        drop(msg);
        drop(env_write);
        let answer = crate::gate::read_status(sock.as_fd()).map_err(|e| {
            SubmitError::temp(format!(
                "no answer from the queue gate {}: {e} (#4.3.0)",
                socket.display()
            ))
        })?;
        outcome(answer.map(i32::from), aborted, || {
            format!(
                "the queue gate {} went away before answering (#4.3.0)",
                socket.display()
            )
        })
    }
}

/// Sends one message over a writer connection and reads the answer.
fn submit_writer(
    sock: &std::os::unix::net::UnixStream,
    socket: &Path,
    envelope: &Envelope,
    write_message: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), SubmitError> {
    let gone = |e: std::io::Error| {
        SubmitError::temp(format!(
            "the queue writer {} went away before answering: {e} (#4.3.0)",
            socket.display()
        ))
    };
    let mut frames = DataFrames {
        sock,
        buf: Vec::with_capacity(FRAME_GATHER),
    };
    let written = write_message(&mut frames).and_then(|()| frames.flush());
    let mut s = sock;
    if let Err(e) = written {
        // Our own input failed: the writer drops the message. The
        // connection stays usable only if the abort frame got through.
        crate::feed::write_abort(&mut s).map_err(gone)?;
        return Err(SubmitError {
            code: None,
            text: format!("message not queued: {e} (#4.3.0)"),
            temporary: true,
        });
    }
    crate::feed::write_envelope(&mut s, &envelope.encode()).map_err(gone)?;
    let mut answer = [0u8; 1];
    std::io::Read::read_exact(&mut s, &mut answer).map_err(gone)?;
    outcome(Some(i32::from(answer[0])), None, String::new)
}
