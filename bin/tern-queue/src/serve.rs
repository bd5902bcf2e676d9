//! `tern-queue --serve`: the long-running queue writer.
//!
//! It listens on `writer/socket` (a Unix stream socket, mode 0666: anyone
//! may queue mail, as anyone may run the setuid tern-queue) and serves
//! each connection in a thread of its own: many messages per connection
//! (tern-spool's `feed` protocol), each written into an unnamed file of
//! `queue/tmp` as it arrives, exactly as tern-queue writes one, with the
//! caller's uid from `SO_PEERCRED` in its Received line and header. A
//! finished message goes to the **committer**, one thread that makes
//! everything finished since its last round durable together
//! (`commit_batch`: two sync calls per round whatever its size) and only
//! then answers each client. While a round syncs, the next one gathers:
//! the more clients, the more messages share each flush.
//!
//! It ends when fd 0 (a pipe from tern-start) reaches end of file, after
//! the round in progress.

use std::io::{BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use tern_log::Event;
use tern_spool::QueueExit;
use tern_spool::commit::{self, Prepared, Writer};
use tern_spool::envelope::Envelope;
use tern_spool::feed::{self, FeedError, Frame};
use tern_spool::layout::Layout;
use tern_spool::qfile::Origin;

use crate::PROG;

/// Most connections served at once; more are closed at once (the client
/// then runs tern-queue itself).
const MAX_CLIENTS: usize = 512;
/// How long a connection may stay silent inside a message or between
/// messages.
const IDLE: Duration = Duration::from_secs(2 * 3600);
/// Stack of a connection thread.
const STACK: usize = 256 * 1024;

/// A finished message waiting for its round.
struct Pending {
    prepared: Prepared<'static>,
    answer: SyncSender<u8>,
}

/// What the connection threads hand the committer.
#[derive(Default)]
struct Rounds {
    pending: Mutex<Vec<Pending>>,
    ready: Condvar,
}

struct Shared {
    queue: &'static OwnedFd,
    layout: Layout,
    rounds: Rounds,
    clients: AtomicUsize,
    pid: u32,
    /// The next message serial (see [`serial`]).
    serial: std::sync::atomic::AtomicU32,
}

/// The queue file's tern-queue "pid" for a message of this writer: a
/// serial above every possible pid (bit 31 set; Linux pids stay below
/// 2^22), counted from a start point taken from the clock. The manager and
/// the cleaner tell a message from a later one that reuses its inode
/// number by this pid and the birth second: a single writer's own pid
/// would be the same for every message of a second, a serial is not.
fn serial(shared: &Shared) -> u32 {
    0x8000_0000 | (shared.serial.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff)
}

fn alert(reason: impl std::fmt::Display) -> u8 {
    Event::new(PROG, "alert")
        .field("reason", reason.to_string())
        .emit();
    QueueExit::QueueDirTrouble.code()
}

/// Runs the writer for the instance at `home`; the exit code.
pub(crate) fn run(home: &Path) -> u8 {
    let home_fd = match rustix::fs::open(
        home,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => return alert(format!("open {}: {e}", home.display())),
    };
    let queue = match commit::open_queue_dir(&home_fd) {
        Ok(q) => q,
        Err(e) => return alert(format!("open queue: {e}")),
    };
    let layout = match commit::read_layout(&queue) {
        Ok(l) => l,
        Err(e) => return alert(e),
    };
    let path = feed::socket_path(home);
    let listener = match bind(&path) {
        Ok(l) => l,
        Err(e) => return alert(format!("{}: {e}", path.display())),
    };
    let shared: &'static Shared = Box::leak(Box::new(Shared {
        queue: Box::leak(Box::new(queue)),
        layout,
        rounds: Rounds::default(),
        clients: AtomicUsize::new(0),
        pid: std::process::id(),
        serial: std::sync::atomic::AtomicU32::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u32)
                .unwrap_or(0),
        ),
    }));
    let committer = std::thread::Builder::new()
        .name("committer".into())
        .spawn(move || commit_rounds(shared));
    if let Err(e) = committer {
        return alert(format!("cannot start the committer: {e}"));
    }
    let acceptor = std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept(listener, shared));
    if let Err(e) = acceptor {
        return alert(format!("cannot start the acceptor: {e}"));
    }
    Event::new(PROG, "serving")
        .field("socket", path.display().to_string())
        .emit();
    // Until tern-start goes away (or closes our fd 0).
    let mut buf = [0u8; 64];
    loop {
        match rustix::io::read(rustix::stdio::stdin(), &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => break,
        }
    }
    // Stop taking connections, let the round in progress finish.
    let _ = std::fs::remove_file(&path);
    for _ in 0..100 {
        let idle = shared
            .rounds
            .pending
            .lock()
            .map(|p| p.is_empty())
            .unwrap_or(true);
        if idle {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Event::new(PROG, "stopped").emit();
    0
}

/// Binds `path`, replacing a stale socket (only a socket), mode 0666.
fn bind(path: &PathBuf) -> std::io::Result<UnixListener> {
    // writer/ (a system install makes it, ternq's, 0755); a single-user
    // instance's writer makes it the first time.
    if let Some(dir) = path.parent()
        && std::fs::symlink_metadata(dir).is_err()
    {
        use std::os::unix::fs::DirBuilderExt;
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

fn accept(listener: UnixListener, shared: &'static Shared) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        if shared.clients.load(Ordering::Relaxed) >= MAX_CLIENTS {
            Event::new(PROG, "limit").num("clients", MAX_CLIENTS).emit();
            continue;
        }
        shared.clients.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || {
                serve(conn, shared);
                shared.clients.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            shared.clients.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn refused(uid: u32, exit: QueueExit, reason: &dyn std::fmt::Display) -> u8 {
    Event::new(PROG, "refused")
        .num("code", exit.code())
        .num("uid", uid)
        .field("reason", reason.to_string())
        .emit();
    exit.code()
}

/// Serves one connection: messages until it ends.
fn serve(conn: UnixStream, shared: &'static Shared) {
    let Ok(uid) = tern_spool::gate::peer_uid(conn.as_fd()) else {
        return;
    };
    let _ = conn.set_read_timeout(Some(IDLE));
    let _ = conn.set_write_timeout(Some(IDLE));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut input = BufReader::with_capacity(16 * 1024, conn);
    if feed::read_hello(&mut input).is_err() || out.write_all(&[feed::READY]).is_err() {
        return;
    }
    let mut writer: Option<(Writer<'static>, Origin, Vec<u8>)> = None;
    loop {
        let frame = match feed::read_frame(&mut input) {
            Ok(f) => f,
            Err(FeedError::Closed) if writer.is_none() => return,
            Err(e) => {
                if writer.is_some() {
                    let code = refused(uid, QueueExit::ReadFailed, &e);
                    let _ = out.write_all(&[code]);
                }
                return;
            }
        };
        match frame {
            Frame::Abort => writer = None,
            Frame::Data(bytes) => {
                if writer.is_none() {
                    match start(shared, uid) {
                        Ok(w) => writer = Some(w),
                        Err(code) => {
                            // Nothing can be queued now: say so once the
                            // message is over.
                            match skip_message(&mut input) {
                                Some(true) => {
                                    let _ = out.write_all(&[code]);
                                    continue;
                                }
                                Some(false) => continue,
                                None => return,
                            }
                        }
                    }
                }
                let (w, _, received) = writer.as_mut().expect("started");
                if let Err(e) = w.append(received, &bytes) {
                    let code = refused(uid, e.exit, &e);
                    writer = None;
                    match skip_message(&mut input) {
                        Some(true) => {
                            let _ = out.write_all(&[code]);
                        }
                        Some(false) => {}
                        None => return,
                    }
                }
            }
            Frame::Envelope(bytes) => {
                let (w, origin, received) = match writer.take() {
                    Some(w) => w,
                    None => match start(shared, uid) {
                        Ok(w) => w,
                        Err(code) => {
                            let _ = out.write_all(&[code]);
                            continue;
                        }
                    },
                };
                let code = finish(shared, uid, w, &origin, &received, &bytes);
                if out.write_all(&[code]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads and drops the rest of a message that cannot be queued:
/// `Some(true)` when it ended with its envelope (an answer is due),
/// `Some(false)` when the client aborted it (none is), `None` when the
/// connection is no good any more.
fn skip_message(input: &mut impl std::io::Read) -> Option<bool> {
    loop {
        match feed::read_frame(input) {
            Ok(Frame::Data(_)) => {}
            Ok(Frame::Envelope(_)) => return Some(true),
            Ok(Frame::Abort) => return Some(false),
            Err(_) => return None,
        }
    }
}

/// A new queue file for a message from `uid`.
fn start(shared: &'static Shared, uid: u32) -> Result<(Writer<'static>, Origin, Vec<u8>), u8> {
    let w = Writer::create(shared.queue, shared.layout).map_err(|e| refused(uid, e.exit, &e))?;
    let origin = Origin {
        uid,
        pid: serial(shared),
        time: tern_date::now(),
    };
    // The Received line names the writer's real pid, as tern-queue's does.
    let received = commit::received_line(shared.pid, origin.uid, origin.time);
    Ok((w, origin, received))
}

/// Completes a message and waits for its round; the answer.
fn finish(
    shared: &'static Shared,
    uid: u32,
    mut w: Writer<'static>,
    origin: &Origin,
    received: &[u8],
    envelope: &[u8],
) -> u8 {
    let envelope = match Envelope::read_from(&mut &envelope[..]) {
        Ok(e) => e,
        Err(e) => return refused(uid, QueueExit::for_envelope(&e), &e),
    };
    // A message without data: the Received line alone.
    if let Err(e) = w.append(received, &[]) {
        return refused(uid, e.exit, &e);
    }
    let prepared = match w.prepare(origin, &envelope) {
        Ok(p) => p,
        Err(e) => return refused(uid, e.exit, &e),
    };
    let (tx, rx) = sync_channel(1);
    {
        let Ok(mut pending) = shared.rounds.pending.lock() else {
            return QueueExit::Bug.code();
        };
        pending.push(Pending {
            prepared,
            answer: tx,
        });
    }
    shared.rounds.ready.notify_one();
    rx.recv().unwrap_or(QueueExit::Bug.code())
}

/// The committer: a round is everything finished since the last one.
fn commit_rounds(shared: &'static Shared) {
    loop {
        let batch: Vec<Pending> = {
            let Ok(mut pending) = shared.rounds.pending.lock() else {
                return;
            };
            while pending.is_empty() {
                pending = match shared.rounds.ready.wait(pending) {
                    Ok(p) => p,
                    Err(_) => return,
                };
            }
            std::mem::take(&mut *pending)
        };
        let (prepared, answers): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.prepared, p.answer)).unzip();
        let results = commit::commit_batch(prepared);
        let mut queued = 0;
        for (r, answer) in results.into_iter().zip(answers) {
            let code = match r {
                Ok(_) => {
                    queued += 1;
                    QueueExit::Queued.code()
                }
                Err(e) => {
                    Event::new(PROG, "refused")
                        .num("code", e.exit.code())
                        .field("reason", e.to_string())
                        .emit();
                    e.exit.code()
                }
            };
            let _ = answer.send(code);
        }
        if queued > 0 {
            // Committed and durable. The wake-up is best effort.
            tern_sys::trigger::pull(shared.queue, Path::new(tern_spool::layout::TRIGGER));
        }
    }
}
