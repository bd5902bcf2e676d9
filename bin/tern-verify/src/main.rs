//! `tern-verify`: Tern's mail authentication checker.
//!
//! Started by tern-start (as `ternv` in a system instance) when
//! `control/authcheck` exists; listens on `$TERN_HOME/verify/socket` and
//! answers tern-smtpd's requests (protocol: `tern_ipc::verify`, one request
//! per connection) with a verdict and an `Authentication-Results:` field,
//! computed by `tern_authcheck` (SPF, DKIM, DMARC, ARC). It ends when its
//! fd 0 (a pipe from tern-start) reaches end of file.
//!
//! Security posture: it is the only program of the SMTP path that does
//! DNS. It reads `control/` (`me` is not needed: the authserv-id comes with
//! each request) and `/etc/resolv.conf`, never the queue or mailboxes, and
//! writes only its socket. Its socket is mode 0666 inside a directory of
//! its own, but every connection's peer uid (`SO_PEERCRED`) must be its
//! own, root's or `ternd`'s: nobody else can use it as a DNS oracle. Every
//! request is bounded (`tern_ipc::verify`), at most [`MAX_CLIENTS`] are
//! served at once, and a client must send its request within
//! [`READ_TIMEOUT`].
//!
//! Exit codes: 0 stopped (fd 0 closed), 111 could not start.
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout)]

use std::io::{BufReader, Write as _};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tern_authcheck::Checker;
use tern_control::{Control, Home};
use tern_ipc::verify::{Request, SOCKET};
use tern_log::Event;

const PROG: &str = "tern-verify";
/// Most requests served at once; more connections are closed at once
/// (tern-smtpd then accepts the message unchecked).
const MAX_CLIENTS: usize = 64;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Stack of a connection thread (mail-auth's futures live on it).
const STACK: usize = 2 * 1024 * 1024;

const USAGE: &str = "usage: tern-verify
Checks SPF, DKIM, DMARC and ARC for tern-smtpd, answering on
$TERN_HOME/verify/socket; started by tern-start when control/authcheck
exists. Runs until its fd 0 reaches end of file. See tern-verify(8).
";

fn fail(reason: impl std::fmt::Display) -> ExitCode {
    Event::new(PROG, "alert")
        .field("reason", reason.to_string())
        .emit();
    ExitCode::from(111)
}

fn main() -> ExitCode {
    tern_log::install_panic_hook(PROG, 111);
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("--help" | "-h") => {
            let _ = std::io::stdout().write_all(USAGE.as_bytes());
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            return fail(format!(
                "unknown argument {other:?}; see tern-verify --help"
            ));
        }
    }
    let home = match Home::from_env() {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    // DNS answers are never parsed as root in a system instance.
    if tern_sys::effective_uid() == 0 && !home.is_single_user() {
        return fail("running as root: tern-start runs tern-verify as ternv");
    }
    let control = Control::new(&home);
    let servers = match tern_route::dns_servers(&control) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let allowed = allowed_uids();
    let path = home.root().join(SOCKET);
    let listener = match bind(&path) {
        Ok(l) => l,
        Err(e) => return fail(format!("{}: {e}", path.display())),
    };
    let checker: &'static Checker = Box::leak(Box::new(Checker::new(servers)));
    let allowed: &'static [u32] = Box::leak(allowed.into_boxed_slice());
    let spawned = std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept(listener, checker, allowed));
    if let Err(e) = spawned {
        return fail(format!("cannot start the acceptor: {e}"));
    }
    Event::new(PROG, "serving")
        .field("socket", path.display().to_string())
        .emit();
    let mut buf = [0u8; 64];
    loop {
        match rustix::io::read(rustix::stdio::stdin(), &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => break,
        }
    }
    let _ = std::fs::remove_file(&path);
    Event::new(PROG, "stopped").emit();
    ExitCode::SUCCESS
}

/// The uids that may ask: ours, root's, and `ternd`'s when it exists.
fn allowed_uids() -> Vec<u32> {
    let mut v = vec![tern_sys::effective_uid(), 0];
    if let Ok(Some(u)) = nix::unistd::User::from_name("ternd") {
        v.push(u.uid.as_raw());
    }
    v
}

/// Makes the socket's directory (mode 0755, when missing) and binds the
/// socket, replacing a stale one (only a socket), mode 0666.
fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.is_dir()
    {
        std::fs::DirBuilder::new().mode(0o755).create(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket; refusing to replace it",
            ));
        }
        Err(_) => {}
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(l)
}

fn accept(listener: UnixListener, checker: &'static Checker, allowed: &'static [u32]) {
    static CLIENTS: AtomicUsize = AtomicUsize::new(0);
    for conn in listener.incoming() {
        let Ok(conn) = conn else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let uid = match rustix::net::sockopt::socket_peercred(&conn) {
            Ok(c) => c.uid.as_raw(),
            Err(e) => {
                Event::new(PROG, "refused")
                    .field("reason", format!("no peer credentials: {e}"))
                    .emit();
                continue;
            }
        };
        if !allowed.contains(&uid) {
            Event::new(PROG, "refused")
                .num("uid", uid)
                .field("reason", "uid may not ask")
                .emit();
            continue;
        }
        if CLIENTS.load(Ordering::Relaxed) >= MAX_CLIENTS {
            Event::new(PROG, "limit").num("clients", MAX_CLIENTS).emit();
            continue;
        }
        CLIENTS.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || {
                serve(conn, checker);
                CLIENTS.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            CLIENTS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Serves one request: read it, check, answer.
fn serve(conn: UnixStream, checker: &Checker) {
    let started = Instant::now();
    let _ = conn.set_read_timeout(Some(READ_TIMEOUT));
    let _ = conn.set_write_timeout(Some(READ_TIMEOUT));
    let mut r = BufReader::with_capacity(64 * 1024, &conn);
    let (req, message) = match Request::decode_all(&mut r) {
        Ok(x) => x,
        Err(e) => {
            Event::new(PROG, "bad_request")
                .field("reason", e.to_string())
                .emit();
            return;
        }
    };
    let resp = match checker.check(&req, &message) {
        Ok(r) => r,
        Err(e) => {
            Event::new(PROG, "trouble")
                .field("reason", e.to_string())
                .emit();
            return;
        }
    };
    let mut w = &conn;
    let written = resp.write_to(&mut w);
    let mut ev = Event::new(PROG, "checked")
        .field("remote_ip", req.ip.as_str())
        .field("sender", req.mail_from.as_str())
        .field("verdict", resp.verdict.name())
        .field("reason", resp.reason.as_str())
        .num("bytes", message.len())
        .num("ms", started.elapsed().as_millis() as u64);
    if let Err(e) = written {
        ev = ev.field("answer", e.to_string());
    }
    ev.emit();
}
