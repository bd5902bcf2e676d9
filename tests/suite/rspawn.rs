//! `tern-rspawn` over a Unix socketpair, as tern-send drives it, with a fake
//! `tern-remote` worker (a Python script in the instance's `bin/`), so these
//! tests do not depend on the real SMTP client.
//!
//! The fake reads `RemoteDeliver` frames and their descriptors on fd 0,
//! reads the message through the descriptor (at the request's offset), and
//! answers one `RcptReport` per recipient as the recipient's local part
//! says: `failN` → D, `deferN` → Z, `slowN` → sleeps N tenths of a second,
//! then K; `die` → exits 3 at once; `close` → closes its socket, exits 7
//! 0.3 s later; `hang` → closes its socket and sleeps a minute; `bogus` → a report for a recipient number beyond the
//! request; `twice` → two reports for that recipient; anything else → K.
//! A K text is `250 ok pid=<its pid> first=<first line of the message>`. It
//! appends `start <pid> <env names>`, `req <pid> <slot> <domain> <n>` and
//! `eof <pid>` lines to `<scratch>/record`.

use std::fs;
use std::io::Write as _;
use std::os::fd::AsFd as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tern_ipc::Outcome;
use tern_ipc::remote::{Frame, Inbox, RcptReport, RemoteDeliver};
use tern_tests::{Instance, PYTHON, bin_dir, wait_until};

const WAIT: Duration = Duration::from_secs(20);

const FAKE_REMOTE: &str = r#"#!@PYTHON@
import os, socket, struct, sys, time
rec = os.path.join(os.path.dirname(os.environ["TERN_HOME"]), "record")
def log(line):
    with open(rec, "a") as f:
        f.write(line + "\n")
s = socket.socket(fileno=0)
pid = os.getpid()
log("start %d %s" % (pid, ",".join(sorted(k for k in os.environ if k != "LC_CTYPE"))))
buf = b""
fds = []
def frame():
    global buf
    while True:
        if len(buf) >= 4:
            n = struct.unpack(">I", buf[:4])[0]
            if len(buf) >= 4 + n:
                p = buf[4:4 + n]
                buf = buf[4 + n:]
                return p
        data, got, _, _ = socket.recv_fds(s, 65536, 16)
        fds.extend(got)
        if not data:
            if buf:
                sys.exit(1)
            return None
        buf += data
def report(slot, rcpt, letter, text):
    p = bytes([1, ord("P")]) + struct.pack(">II", slot, rcpt) + letter.encode() \
        + struct.pack(">I", len(text)) + text.encode()
    os.write(1, struct.pack(">I", len(p)) + p)
while True:
    p = frame()
    if p is None:
        log("eof %d" % pid)
        sys.exit(0)
    assert p[0] == 1 and p[1:2] == b"M", p[:2]
    slot, qid, offset, size = struct.unpack(">IQQQ", p[2:30])
    at = 30
    def field():
        global at
        n = struct.unpack(">I", p[at:at + 4])[0]
        v = p[at + 4:at + 4 + n]
        at += 4 + n
        return v
    sender = field()
    domain = field().decode()
    n = struct.unpack(">I", p[at:at + 4])[0]
    at += 4
    rcpts = [field() for _ in range(n)]
    fd = fds.pop(0)
    msg = os.pread(fd, size, offset)
    os.close(fd)
    first = msg.split(b"\n")[0].decode()
    log("req %d %d %s %d" % (pid, slot, domain, n))
    for i, r in enumerate(rcpts):
        local = r.split(b"@")[0].decode()
        if local == "die":
            os._exit(3)
        if local == "close":
            s.close()
            os.close(1)
            time.sleep(0.3)
            os._exit(7)
        if local == "hang":
            s.close()
            os.close(1)
            time.sleep(60)
        if local == "bogus":
            report(slot, n, "K", "250 ok")
            continue
        if local.startswith("slow"):
            time.sleep(int(local[4:]) / 10)
        if local.startswith("fail"):
            report(slot, i, "D", "550 5.1.1 no such user")
        elif local.startswith("defer"):
            report(slot, i, "Z", "451 4.3.0 try later")
        else:
            report(slot, i, "K", "250 ok pid=%d first=%s" % (pid, first))
            if local == "twice":
                report(slot, i, "K", "250 ok again")
"#;

/// An instance whose `bin/` is a real directory: symlinks to the built
/// programs, and the fake `tern-remote`.
struct Setup {
    inst: Instance,
    /// A queue-like file: 10 bytes of header, then the message.
    message: PathBuf,
}

const MESSAGE_OFFSET: u64 = 10;
const MESSAGE: &[u8] = b"Subject: rspawn test\n\nbody\n";

fn setup(name: &str, concurrency: Option<u32>, fake: bool) -> Setup {
    let inst = Instance::new(name);
    let home = inst.home().to_path_buf();
    let bin = home.join("bin");
    fs::remove_file(&bin).expect("bin/ is a symlink after ternctl init");
    fs::create_dir(&bin).unwrap();
    for ent in fs::read_dir(bin_dir()).unwrap() {
        let ent = ent.unwrap();
        let meta = ent.metadata().unwrap();
        if meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
            && ent.file_name() != "tern-remote"
        {
            std::os::unix::fs::symlink(ent.path(), bin.join(ent.file_name())).unwrap();
        }
    }
    if fake {
        let fake = bin.join("tern-remote");
        fs::write(&fake, FAKE_REMOTE.replace("@PYTHON@", PYTHON)).unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    }
    if let Some(n) = concurrency {
        fs::write(home.join("control/concurrencyremote"), format!("{n}\n")).unwrap();
    }
    let message = inst.scratch().join("message");
    let mut body = b"0123456789".to_vec();
    body.extend_from_slice(MESSAGE);
    fs::write(&message, body).unwrap();
    Setup { inst, message }
}

/// A running tern-rspawn and our end of its socket (tern-send's role).
struct Rspawn {
    child: Child,
    sock: UnixStream,
    inbox: Inbox,
    log: PathBuf,
}

impl Rspawn {
    fn start(s: &Setup) -> Rspawn {
        let (ours, theirs) = tern_ipc::remote::socket_pair().unwrap();
        let theirs_out = theirs.try_clone().unwrap();
        let log = s.inst.scratch().join("rspawn.log");
        let child = s
            .inst
            .command("tern-rspawn")
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::from(theirs_out))
            .stderr(Stdio::from(fs::File::create(&log).unwrap()))
            .spawn()
            .expect("start tern-rspawn");
        let sock = UnixStream::from(ours);
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Rspawn {
            child,
            sock,
            inbox: Inbox::default(),
            log,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The next frame; `None` when tern-rspawn closed the socket.
    fn frame(&mut self) -> Option<Frame> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(f) = self.inbox.next_frame().expect("well-formed frames") {
                return Some(f);
            }
            match self.inbox.fill(self.sock.as_fd()) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(tern_ipc::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("reading from tern-rspawn: {e}\nlog:\n{}", self.log()),
            }
            assert!(
                Instant::now() < deadline,
                "no frame from tern-rspawn within {WAIT:?}; log:\n{}",
                self.log()
            );
        }
    }

    fn hello(&mut self) -> u32 {
        match self.frame() {
            Some(Frame::Hello(h)) => h.max_concurrency,
            other => panic!("expected Hello, got {other:?}\nlog:\n{}", self.log()),
        }
    }

    /// Sends a request for `rcpts` (addresses) at `domain` in `slot`.
    fn send(&self, s: &Setup, slot: u32, domain: &str, rcpts: &[&str]) {
        let req = RemoteDeliver {
            slot,
            id: 1000 + u64::from(slot),
            offset: MESSAGE_OFFSET,
            size: MESSAGE.len() as u64,
            sender: b"sender@here.example".to_vec(),
            domain: domain.as_bytes().to_vec(),
            recipients: rcpts.iter().map(|r| r.as_bytes().to_vec()).collect(),
        };
        let f = fs::File::open(&s.message).unwrap();
        tern_ipc::remote::write_deliver(self.sock.as_fd(), &req, f.as_fd()).unwrap();
    }

    /// The next `n` reports (in arrival order).
    fn reports(&mut self, n: usize) -> Vec<RcptReport> {
        (0..n)
            .map(|_| match self.frame() {
                Some(Frame::Report(r)) => r,
                other => panic!("expected a report, got {other:?}\nlog:\n{}", self.log()),
            })
            .collect()
    }

    /// The reports of one request, in recipient order (checked: one each).
    fn request_reports(&mut self, slot: u32, n: usize) -> Vec<RcptReport> {
        let mut got = self.reports(n);
        assert!(
            got.iter().all(|r| r.slot == slot),
            "slots: {got:?}\nlog:\n{}",
            self.log()
        );
        got.sort_by_key(|r| r.rcpt);
        let rcpts: Vec<u32> = got.iter().map(|r| r.rcpt).collect();
        assert_eq!(rcpts, (0..n as u32).collect::<Vec<_>>(), "one report each");
        got
    }

    /// Closes our end (end of file for tern-rspawn) and waits for its exit.
    fn close_and_wait(mut self) -> (ExitStatus, String) {
        self.sock.shutdown(std::net::Shutdown::Both).unwrap();
        let status = wait_exit(&mut self.child);
        let log = self.log();
        (status, log)
    }
}

impl Drop for Rspawn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "tern-rspawn did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(r: &RcptReport) -> String {
    String::from_utf8_lossy(&r.text).into_owned()
}

/// The worker pid named in a K text.
fn pid_of(r: &RcptReport) -> u32 {
    let t = text(r);
    let rest = t
        .split("pid=")
        .nth(1)
        .unwrap_or_else(|| panic!("no pid in {t:?}"));
    rest.split(' ').next().unwrap().parse().unwrap()
}

fn record(s: &Setup) -> String {
    fs::read_to_string(s.inst.scratch().join("record")).unwrap_or_default()
}

/// Live processes of this instance named tern-remote.
fn workers(s: &Setup) -> Vec<i32> {
    s.inst.pids_of("tern-remote")
}

#[test]
fn per_recipient_reports_and_reuse_of_an_idle_worker() {
    let s = setup("rspawn-reuse", None, true);
    let mut r = Rspawn::start(&s);
    assert_eq!(
        r.hello(),
        20,
        "Hello carries concurrencyremote (default 20)"
    );

    r.send(
        &s,
        4,
        "a.example",
        &["one@a.example", "fail1@a.example", "two@a.example"],
    );
    let got = r.request_reports(4, 3);
    let outcomes: Vec<Outcome> = got.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        vec![Outcome::Delivered, Outcome::Failed, Outcome::Delivered]
    );
    assert!(
        text(&got[0]).ends_with("first=Subject: rspawn test"),
        "the worker read the message through the descriptor, from the offset: {:?}",
        text(&got[0])
    );
    assert_eq!(text(&got[1]), "550 5.1.1 no such user");
    let pid = pid_of(&got[0]);

    // The same domain again, after the first request is finished: the same
    // worker process.
    r.send(&s, 9, "A.Example", &["three@a.example"]);
    let again = r.request_reports(9, 1);
    assert_eq!(again[0].outcome, Outcome::Delivered);
    assert_eq!(
        pid_of(&again[0]),
        pid,
        "an idle worker of the domain is reused"
    );
    let log = r.log();
    assert!(
        log.contains("event=request qid=1004 slot=4 domain=a.example rcpts=3"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "slot=4 domain=a.example rcpts=3 pid={pid} reused=no"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "slot=9 domain=A.Example rcpts=1 pid={pid} reused=yes"
        )),
        "{log}"
    );
    assert_eq!(log.matches("event=worker_start ").count(), 1, "{log}");

    // The worker gets a minimal environment.
    let rec = record(&s);
    assert!(
        rec.contains(&format!("start {pid} PATH,TERN_HOME\n")),
        "{rec}"
    );

    // Idle for longer than the idle limit (5 s): its socket is closed, it
    // sees end of file and exits, and is reaped.
    assert!(
        wait_until(15, || record(&s).contains(&format!("eof {pid}"))),
        "idle worker not closed: {}\n{}",
        record(&s),
        r.log()
    );
    assert!(
        wait_until(5, || {
            r.log().contains(&format!("event=worker_stop pid={pid} domain=a.example reason=idle status=\"exited with status 0\" requests=2"))
        }),
        "{}",
        r.log()
    );
    assert!(r.log().contains(&format!(
        "event=worker_close pid={pid} domain=a.example reason=idle"
    )));

    let (status, log) = r.close_and_wait();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("event=finished"), "{log}");
    assert!(workers(&s).is_empty(), "no worker left: {:?}", workers(&s));
}

#[test]
fn a_full_request_of_100_recipients() {
    let s = setup("rspawn-full", None, true);
    let mut r = Rspawn::start(&s);
    r.hello();
    let rcpts: Vec<String> = (0..tern_ipc::remote::MAX_RCPTS)
        .map(|i| {
            if i == 60 {
                "die@a.example".to_string()
            } else {
                format!("u{i}@a.example")
            }
        })
        .collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    r.send(&s, 7, "a.example", &refs);
    let got = r.request_reports(7, rcpts.len());
    assert!(got[..60].iter().all(|g| g.outcome == Outcome::Delivered));
    assert!(got[60..].iter().all(|g| g.outcome == Outcome::Deferred));
    let (status, log) = r.close_and_wait();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("unreported=40"), "{log}");
}

#[test]
fn a_dying_or_broken_worker_leaves_deferred_recipients() {
    let s = setup("rspawn-dying", None, true);
    let mut r = Rspawn::start(&s);
    r.hello();

    // Exits with status 3 after the first recipient.
    r.send(
        &s,
        0,
        "a.example",
        &["ok@a.example", "die@a.example", "more@a.example"],
    );
    let got = r.request_reports(0, 3);
    assert_eq!(got[0].outcome, Outcome::Delivered);
    let first_pid = pid_of(&got[0]);
    for g in &got[1..] {
        assert_eq!(g.outcome, Outcome::Deferred);
        assert_eq!(
            text(g),
            "tern-remote exited with status 3 before reporting this recipient (#4.3.0)"
        );
    }
    // The next request for the domain gets a new worker.
    r.send(&s, 1, "a.example", &["ok@a.example"]);
    let next = r.request_reports(1, 1);
    assert_eq!(next[0].outcome, Outcome::Delivered);
    assert_ne!(pid_of(&next[0]), first_pid);

    // Closes its socket mid-request, then exits 7.
    r.send(&s, 2, "b.example", &["defer1@b.example", "close@b.example"]);
    let got = r.request_reports(2, 2);
    assert_eq!(got[0].outcome, Outcome::Deferred);
    assert_eq!(text(&got[0]), "451 4.3.0 try later");
    assert_eq!(got[1].outcome, Outcome::Deferred);
    assert_eq!(
        text(&got[1]),
        "tern-remote exited with status 7 before reporting this recipient (#4.3.0)"
    );

    // A report for a recipient the request does not have: killed.
    r.send(
        &s,
        3,
        "c.example",
        &["ok@c.example", "bogus@c.example", "x@c.example"],
    );
    let got = r.request_reports(3, 3);
    assert_eq!(got[0].outcome, Outcome::Delivered);
    for g in &got[1..] {
        assert_eq!(g.outcome, Outcome::Deferred);
        assert_eq!(
            text(g),
            "tern-remote broke the protocol (report for a recipient number beyond the request) \
             before reporting this recipient (#4.3.0)"
        );
    }
    // Two reports for one recipient: the second is not forwarded.
    r.send(&s, 4, "d.example", &["twice@d.example", "y@d.example"]);
    let got = r.request_reports(4, 2);
    assert_eq!(got[0].outcome, Outcome::Delivered);
    assert!(
        text(&got[0]).starts_with("250 ok pid="),
        "{:?}",
        text(&got[0])
    );
    assert_eq!(got[1].outcome, Outcome::Deferred);
    assert!(text(&got[1]).contains("second report for one recipient"));

    let log = r.log();
    assert_eq!(log.matches("event=worker_lost").count(), 4, "{log}");
    let (status, log) = r.close_and_wait();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(workers(&s).is_empty(), "no worker left: {:?}", workers(&s));
    assert!(
        log.contains("reason=broken status=\"killed by signal 9\""),
        "{log}"
    );
}

#[test]
fn more_domains_than_workers_evicts_the_longest_idle() {
    let s = setup("rspawn-evict", Some(2), true);
    let mut r = Rspawn::start(&s);
    assert_eq!(r.hello(), 2);
    r.send(&s, 0, "a.example", &["x@a.example"]);
    let a = pid_of(&r.request_reports(0, 1)[0]);
    r.send(&s, 1, "b.example", &["x@b.example"]);
    let b = pid_of(&r.request_reports(1, 1)[0]);
    // Both idle; a third domain: a (idle longest) makes room.
    r.send(&s, 0, "c.example", &["x@c.example"]);
    let c = pid_of(&r.request_reports(0, 1)[0]);
    assert!(a != c && b != c);
    assert!(
        wait_until(5, || record(&s).contains(&format!("eof {a}"))),
        "{}",
        record(&s)
    );
    assert!(r.log().contains(&format!(
        "event=worker_close pid={a} domain=a.example reason=evicted for_domain=c.example"
    )));
    // b is still there and reused.
    r.send(&s, 1, "b.example", &["y@b.example"]);
    assert_eq!(pid_of(&r.request_reports(1, 1)[0]), b);
    assert!(!record(&s).contains(&format!("eof {b}")));
    let (status, log) = r.close_and_wait();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(workers(&s).is_empty());
}

#[test]
fn a_worker_that_closes_its_socket_but_does_not_exit_is_killed() {
    let s = setup("rspawn-hang", None, true);
    let mut r = Rspawn::start(&s);
    r.hello();
    r.send(
        &s,
        0,
        "a.example",
        &["ok@a.example", "hang@a.example", "z@a.example"],
    );
    let started = Instant::now();
    let got = r.request_reports(0, 3);
    assert_eq!(got[0].outcome, Outcome::Delivered);
    for g in &got[1..] {
        assert_eq!(g.outcome, Outcome::Deferred);
        assert_eq!(
            text(g),
            "tern-remote closed its socket before reporting this recipient and did not exit; \
             killed (#4.3.0)"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "killed only after the 5 s grace"
    );
    // The reports come before the reaped worker's end line: under load the
    // line may be written a moment later (wait for it, never for a time).
    let logged = |l: &str| {
        l.contains("event=worker_kill") && l.contains("reason=closed status=\"killed by signal 9\"")
    };
    assert!(
        tern_tests::wait_until(30, || logged(&r.log())),
        "{}",
        r.log()
    );
    let (status, log) = r.close_and_wait();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(workers(&s).is_empty(), "no worker left: {:?}", workers(&s));
}

#[test]
fn a_busy_worker_is_not_shared_by_its_domain() {
    let s = setup("rspawn-samedomain", None, true);
    let mut r = Rspawn::start(&s);
    r.hello();
    r.send(&s, 0, "a.example", &["slow5@a.example"]);
    r.send(&s, 1, "a.example", &["x@a.example"]);
    let mut got = r.reports(2);
    got.sort_by_key(|g| g.slot);
    assert!(got.iter().all(|g| g.outcome == Outcome::Delivered));
    assert_ne!(
        pid_of(&got[0]),
        pid_of(&got[1]),
        "a second worker for the domain"
    );
    // Both idle now: the next request goes to the one idle for the
    // shortest time (slot 0's worker finished last).
    r.send(&s, 2, "a.example", &["y@a.example"]);
    assert_eq!(pid_of(&r.request_reports(2, 1)[0]), pid_of(&got[0]));
    let (status, log) = r.close_and_wait();
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(log.matches("reused=no").count(), 2, "{log}");
    assert_eq!(log.matches("reused=yes").count(), 1, "{log}");
}

#[test]
fn every_worker_busy_defers_at_once() {
    let s = setup("rspawn-busy", Some(1), true);
    let mut r = Rspawn::start(&s);
    assert_eq!(r.hello(), 1);
    r.send(&s, 0, "a.example", &["slow20@a.example"]);
    // One worker, busy for 2 s: a second request (tern-send would not send
    // it) is deferred at once, the first one finishes.
    r.send(&s, 1, "b.example", &["x@b.example", "y@b.example"]);
    let got = r.request_reports(1, 2);
    for g in &got {
        assert_eq!(g.outcome, Outcome::Deferred);
        assert_eq!(
            text(g),
            "all 1 tern-remote workers are busy (concurrencyremote); try again later (#4.3.0)"
        );
    }
    let first = r.request_reports(0, 1);
    assert_eq!(first[0].outcome, Outcome::Delivered);
    assert!(
        r.log()
            .contains("event=all_busy qid=1001 slot=1 domain=b.example rcpts=2")
    );
    let (status, _) = r.close_and_wait();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn end_of_input_lets_busy_workers_finish() {
    let s = setup("rspawn-eof", None, true);
    let mut r = Rspawn::start(&s);
    r.hello();
    r.send(&s, 0, "a.example", &["slow10@a.example", "two@a.example"]);
    r.send(&s, 1, "b.example", &["x@b.example"]);
    let b = r.request_reports(1, 1);
    // b's worker is idle now, a's is busy for 1 s. End of input: the idle
    // one is closed, the busy one finishes and is reported.
    r.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let got = r.request_reports(0, 2);
    assert!(got.iter().all(|g| g.outcome == Outcome::Delivered));
    assert!(
        r.frame().is_none(),
        "tern-rspawn closes its end when it exits"
    );
    let status = wait_exit(&mut r.child);
    let log = r.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("event=stopping reason=\"end of input\""),
        "{log}"
    );
    let bpid = pid_of(&b[0]);
    assert!(
        log.contains(&format!(
            "event=worker_close pid={bpid} domain=b.example reason=stopping"
        )),
        "{log}"
    );
    assert_eq!(log.matches("event=worker_stop").count(), 2, "{log}");
    assert!(workers(&s).is_empty(), "no worker left: {:?}", workers(&s));
    let rec = record(&s);
    assert_eq!(
        rec.matches("eof ").count(),
        2,
        "both workers saw end of file: {rec}"
    );
}

#[test]
fn tern_send_gone_while_a_worker_is_busy() {
    let s = setup("rspawn-gone", None, true);
    let mut r = Rspawn::start(&s);
    r.hello();
    r.send(&s, 0, "a.example", &["slow10@a.example"]);
    assert!(wait_until(5, || record(&s).contains("req ")));
    // tern-send closes its end entirely: the worker finishes, its report
    // cannot be written and is dropped, and tern-rspawn stops cleanly.
    let (status, log) = r.close_and_wait();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("event=report_failed"), "{log}");
    assert!(log.contains("event=request_done"), "{log}");
    assert!(workers(&s).is_empty(), "no worker left: {:?}", workers(&s));
}

#[test]
fn sigterm_stops_after_busy_workers() {
    let s = setup("rspawn-term", None, true);
    let mut r = Rspawn::start(&s);
    r.hello();
    r.send(&s, 0, "a.example", &["slow15@a.example"]);
    assert!(wait_until(5, || record(&s).contains("req ")));
    let st = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(r.child.id().to_string())
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        wait_until(5, || r.log().contains("reason=SIGTERM")),
        "{}",
        r.log()
    );
    r.send(&s, 1, "b.example", &["x@b.example"]);
    let mut got = r.reports(2);
    got.sort_by_key(|g| g.slot);
    assert_eq!(
        got[0].outcome,
        Outcome::Delivered,
        "the busy worker finished"
    );
    assert_eq!(got[1].outcome, Outcome::Deferred);
    assert_eq!(text(&got[1]), "tern-rspawn is stopping (#4.3.0)");
    let status = wait_exit(&mut r.child);
    assert_eq!(status.code(), Some(0), "{}", r.log());
    assert!(workers(&s).is_empty());
}

#[test]
fn missing_tern_remote_defers_and_goes_on() {
    let s = setup("rspawn-missing", None, false);
    let mut r = Rspawn::start(&s);
    r.hello();
    for slot in 0..2 {
        r.send(&s, slot, "a.example", &["x@a.example", "y@a.example"]);
        for g in r.request_reports(slot, 2) {
            assert_eq!(g.outcome, Outcome::Deferred);
            assert!(
                text(&g).starts_with("cannot start tern-remote: ")
                    && text(&g).ends_with("(#4.3.0)"),
                "{:?}",
                text(&g)
            );
        }
    }
    let (status, log) = r.close_and_wait();
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(log.matches("event=worker_start_failed").count(), 2, "{log}");
}

#[test]
fn a_malformed_frame_from_tern_send_exits_111() {
    let s = setup("rspawn-bad", None, true);
    let mut r = Rspawn::start(&s);
    r.hello();
    // A frame with a wrong protocol version.
    (&r.sock).write_all(&[0, 0, 0, 2, 9, b'M']).unwrap();
    let status = wait_exit(&mut r.child);
    let log = r.log();
    assert_eq!(status.code(), Some(111), "{log}");
    assert!(log.contains("event=protocol_error"), "{log}");
}

#[test]
fn a_request_without_descriptor_is_a_protocol_error() {
    let s = setup("rspawn-nofd", None, true);
    let mut r = Rspawn::start(&s);
    r.hello();
    let req = RemoteDeliver {
        slot: 0,
        id: 1,
        offset: 0,
        size: 1,
        sender: vec![],
        domain: b"a.example".to_vec(),
        recipients: vec![b"x@a.example".to_vec()],
    };
    tern_ipc::remote::write_plain(&r.sock, &req.encode()).unwrap();
    let status = wait_exit(&mut r.child);
    let log = r.log();
    assert_eq!(status.code(), Some(111), "{log}");
    assert!(
        log.contains("request without a message descriptor"),
        "{log}"
    );
}

#[test]
fn help_and_usage() {
    let s = setup("rspawn-help", None, false);
    let out = s
        .inst
        .command("tern-rspawn")
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("concurrencyremote"));
    let out = s
        .inst
        .command("tern-rspawn")
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(100));
    // Not started by tern-start: fd 0 is no socket.
    let out = s
        .inst
        .command("tern-rspawn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(111));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fd 0 is not a socket"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
