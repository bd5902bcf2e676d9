//! Inbound authentication checks (`control/authcheck`): a message from a
//! client that is neither a relay client nor authenticated is held whole
//! (in a memory file, bounded by databytes) instead of being streamed to
//! the queue; at its end tern-verify is asked (tern_ipc::verify, over
//! `$TERN_HOME/verify/socket`, within `control/timeoutauthcheck`), and the
//! message is refused (`550 5.7.1`, DMARC reject, `enforce` only), refused
//! for now (`451 4.7.1`, a DNS error where the policy is reject, `enforce`
//! only) or queued with the checker's `Authentication-Results:` field on
//! top, after the fields that claimed our authserv-id were removed
//! (tern_msg::authres). When the checker cannot be reached, does not
//! answer in time or answers nonsense, the message is queued with
//! `Authentication-Results: <me>; none` and the reason is logged: a
//! broken checker never costs mail.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tern_control::{Control, Home};
use tern_ipc::verify::{MAX_MESSAGE, Request, Response, Verdict};
use tern_log::Event;
use tern_msg::header::{Header, HeaderError, Limits};
use tern_smtp::Reply;

use crate::PROG;

/// The instance's checking settings.
#[derive(Debug, Clone)]
pub(crate) struct AuthCheck {
    /// `enforce`: refuse DMARC rejects; `tag`: only add the results.
    pub(crate) enforce: bool,
    socket: PathBuf,
    timeout: Duration,
}

impl AuthCheck {
    /// `control/authcheck` (missing: `None`, no checking) and
    /// `control/timeoutauthcheck`. An unknown mode is `tag` (logged):
    /// a typo must not refuse mail.
    pub(crate) fn load(
        control: &Control,
        home: &Home,
    ) -> Result<Option<AuthCheck>, tern_control::Error> {
        if !control.dir().join("authcheck").exists() {
            return Ok(None);
        }
        let lines = control.authcheck()?;
        let mode = lines.first().map(|l| l.trim()).unwrap_or("");
        let enforce = match mode {
            "enforce" => true,
            "tag" => false,
            other => {
                Event::new(PROG, "warning")
                    .field(
                        "reason",
                        format!("control/authcheck: unknown mode {other:?}; using tag"),
                    )
                    .emit();
                false
            }
        };
        Ok(Some(AuthCheck {
            enforce,
            socket: home.root().join(tern_ipc::verify::SOCKET),
            timeout: Duration::from_secs(control.timeoutauthcheck()?),
        }))
    }
}

/// A message being held: a memory file (no directory needed, so it works
/// under every sandbox), written through a buffer.
pub(crate) struct Held {
    w: io::BufWriter<File>,
    pub(crate) bytes: u64,
}

impl Held {
    pub(crate) fn new() -> io::Result<Held> {
        let fd = rustix::fs::memfd_create("tern-smtpd-held", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(io::Error::from)?;
        Ok(Held {
            w: io::BufWriter::with_capacity(16 * 1024, File::from(fd)),
            bytes: 0,
        })
    }

    fn into_file(self) -> io::Result<File> {
        let mut f = self.w.into_inner().map_err(|e| e.into_error())?;
        f.seek(SeekFrom::Start(0))?;
        Ok(f)
    }
}

impl Write for Held {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.w.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// The connection facts a check needs.
pub(crate) struct Facts<'a> {
    pub(crate) me: &'a str,
    pub(crate) ip: &'a [u8],
    pub(crate) helo: &'a [u8],
    pub(crate) sender: &'a [u8],
}

/// What to do with a held message.
pub(crate) enum Decision {
    /// Queue it with this header on top (the A-R field), then the
    /// Received line, then `message`.
    Queue { ar: Vec<u8>, message: Prepared },
    /// Refuse it with this reply.
    Refuse(Reply),
}

/// A held message ready to be queued: its header without our forged
/// Authentication-Results fields, then the rest from the file.
pub(crate) struct Prepared {
    head: Vec<u8>,
    file: File,
    body_offset: u64,
}

impl Prepared {
    /// Writes the message (after the caller's own lines).
    pub(crate) fn write_to(&mut self, w: &mut dyn Write) -> io::Result<()> {
        w.write_all(&self.head)?;
        self.file.seek(SeekFrom::Start(self.body_offset))?;
        io::copy(&mut self.file, w)?;
        Ok(())
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Checks a held message and decides.
pub(crate) fn decide(ac: &AuthCheck, facts: &Facts<'_>, held: Held) -> Decision {
    let temp = |what: &str, e: &dyn std::fmt::Display| {
        Decision::Refuse(Reply::new(451, "4.3.0", format!("{what}: {e}")))
    };
    let len = held.bytes;
    let mut file = match held.into_file() {
        Ok(f) => f,
        Err(e) => return temp("cannot hold the message", &e),
    };
    // The header, bounded as in submission mode; our forged results out.
    let (head, removed, body_offset) = {
        let mut r = BufReader::new(&mut file);
        match Header::read(&mut r, &Limits::default()) {
            Ok(h) => {
                let (mut kept, removed) = tern_msg::authres::without_ours(&h, facts.me);
                kept.extend_from_slice(h.separator());
                kept.extend_from_slice(h.body_start());
                let off = (h.raw().len() + h.separator().len() + h.body_start().len()) as u64;
                (kept, removed, off)
            }
            Err(HeaderError::TooLarge { .. }) => {
                return Decision::Refuse(crate::complete::too_big_reply());
            }
            Err(e) => return temp("cannot read the held message", &e),
        }
    };
    if removed > 0 {
        Event::new(PROG, "authres_removed")
            .num("fields", removed)
            .field("reason", "Authentication-Results claiming our authserv-id")
            .emit();
    }
    let answer = if len > MAX_MESSAGE {
        Err(format!("message over {MAX_MESSAGE} bytes: not checked"))
    } else {
        ask(ac, facts, &mut file, len)
    };
    let message = Prepared {
        head,
        file,
        body_offset,
    };
    let resp = match answer {
        Ok(r) => r,
        Err(reason) => {
            Event::new(PROG, "authcheck_unavailable")
                .field("remote_ip", facts.ip)
                .field("reason", reason)
                .emit();
            return Decision::Queue {
                ar: format!("Authentication-Results: {}; none\n", facts.me).into_bytes(),
                message,
            };
        }
    };
    Event::new(PROG, "authcheck")
        .field("remote_ip", facts.ip)
        .field("verdict", resp.verdict.name())
        .field("reason", resp.reason.as_str())
        .field("mode", if ac.enforce { "enforce" } else { "tag" })
        .emit();
    match resp.verdict {
        Verdict::Reject if ac.enforce => {
            Decision::Refuse(Reply::new(550, "5.7.1", resp.reason.clone()))
        }
        Verdict::TempErrorWouldReject if ac.enforce => {
            Decision::Refuse(Reply::new(451, "4.7.1", resp.reason.clone()))
        }
        _ => Decision::Queue {
            ar: resp.header.into_bytes(),
            message,
        },
    }
}

/// Asks tern-verify; the answer or why there is none.
fn ask(ac: &AuthCheck, facts: &Facts<'_>, file: &mut File, len: u64) -> Result<Response, String> {
    let end = Instant::now() + ac.timeout;
    let left = || {
        end.checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| "tern-verify did not answer in time".to_string())
    };
    let req = Request {
        ip: lossy(facts.ip),
        helo: lossy(facts.helo),
        mail_from: lossy(facts.sender),
        authserv_id: facts.me.to_string(),
        budget_ms: u32::try_from(ac.timeout.as_millis())
            .unwrap_or(u32::MAX)
            .min(tern_ipc::verify::MAX_BUDGET_MS),
    };
    let head = req.encode(len).map_err(|e| e.to_string())?;
    let mut conn = UnixStream::connect(&ac.socket)
        .map_err(|e| format!("cannot reach tern-verify at {}: {e}", ac.socket.display()))?;
    let io_err = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            "tern-verify did not answer in time".to_string()
        }
        _ => format!("tern-verify: {e}"),
    };
    conn.set_write_timeout(Some(left()?)).map_err(io_err)?;
    conn.write_all(&head).map_err(io_err)?;
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    while sent < len {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            return Err("held message shorter than written".into());
        }
        conn.set_write_timeout(Some(left()?)).map_err(io_err)?;
        conn.write_all(&buf[..n]).map_err(io_err)?;
        sent += n as u64;
    }
    conn.set_read_timeout(Some(left()?)).map_err(io_err)?;
    let mut r = BufReader::new(&conn);
    Response::decode(&mut r).map_err(|e| match e {
        tern_ipc::verify::VerifyError::Io(e) => io_err(e),
        e => e.to_string(),
    })
}
