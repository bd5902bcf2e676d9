//! The queue writer, `tern-queue --serve`, driven over its socket the way
//! tern-smtpd drives it (tern-spool's `feed` protocol): many clients and
//! many messages per connection, each answered only when durable and
//! found whole in the queue with the caller's uid; bad frames answered 54
//! with nothing queued; an abort drops one message and the connection goes
//! on; SIGKILL of the writer under load loses no answered message; and
//! tern-smtpd uses the writer when it runs (the Received line names the
//! writer) and tern-queue itself when it does not.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tern_spool::feed;
use tern_tests::{Instance, envelope, strip_received, wait_until};

/// A running writer; killed when dropped.
struct Writer {
    child: Child,
    socket: PathBuf,
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Writer {
    fn start(inst: &Instance) -> Writer {
        Writer::start_with(inst, &[])
    }

    fn start_with(inst: &Instance, env: &[(&str, &std::ffi::OsStr)]) -> Writer {
        let socket = feed::socket_path(inst.home());
        let _ = std::fs::remove_file(&socket);
        let mut cmd = inst.command("tern-queue");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tern-queue --serve");
        assert!(
            wait_until(10, || UnixStream::connect(&socket).is_ok()),
            "the writer did not listen"
        );
        Writer { child, socket }
    }

    fn connect(&self) -> UnixStream {
        let mut s = UnixStream::connect(&self.socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        s.write_all(&feed::HELLO).expect("hello");
        let mut ready = [9u8; 1];
        s.read_exact(&mut ready).expect("ready");
        assert_eq!(ready[0], feed::READY);
        s
    }
}

fn body(t: usize, i: usize) -> Vec<u8> {
    let mut b = format!("Subject: writer {t} {i}\n\n").into_bytes();
    for line in 0..300 {
        b.extend_from_slice(format!("client {t} message {i} line {line} ..........\n").as_bytes());
    }
    b
}

/// Sends one message; the answer byte (None: the connection failed).
fn send(s: &mut UnixStream, msg: &[u8], env: &[u8]) -> Option<u8> {
    feed::write_data(s, msg).ok()?;
    feed::write_envelope(s, env).ok()?;
    let mut a = [0u8; 1];
    s.read_exact(&mut a).ok()?;
    Some(a[0])
}

/// One queued message: (subject, body, Received line, uid, sender).
type Queued = (String, Vec<u8>, String, u32, Vec<u8>);

/// Every message in the queue.
fn queued(inst: &Instance) -> Vec<Queued> {
    let q = inst.queue();
    let scan = q.scan().expect("scan");
    assert!(scan.damaged.is_empty(), "damaged: {:?}", scan.damaged);
    scan.messages
        .iter()
        .map(|m| {
            let stored = q.read_message(m.id).expect("read");
            let (received, rest) = strip_received(&stored);
            let subject = String::from_utf8_lossy(rest)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            (
                subject,
                rest.to_vec(),
                String::from_utf8_lossy(received).to_string(),
                m.uid,
                m.sender.clone(),
            )
        })
        .collect()
}

#[test]
fn many_clients_and_many_messages_per_connection() {
    let inst = Instance::new("writer-many");
    let w = Writer::start(&inst);
    let me = rustix::process::getuid().as_raw();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let mut s = w.connect();
            std::thread::spawn(move || {
                for i in 0..10 {
                    let env = envelope(&format!("s{t}@example.com"), &["test@localhost"]);
                    assert_eq!(send(&mut s, &body(t, i), &env), Some(0), "{t}/{i}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client");
    }
    let q = queued(&inst);
    assert_eq!(q.len(), 80);
    // Each message has its own (birth, pid) identity, which the manager
    // and the cleaner use to tell it from a later message that reuses its
    // inode number: the writer's pid alone would repeat within a second.
    let queue = inst.queue();
    let mut ids = std::collections::HashSet::new();
    for m in queue.scan().expect("scan").messages {
        let h = queue.open_message(m.id).expect("open").header;
        assert!(h.origin.pid >= 0x8000_0000, "{}", h.origin.pid);
        assert!(
            ids.insert((h.origin.time, h.origin.pid)),
            "repeated identity"
        );
    }
    for (subject, rest, received, uid, sender) in &q {
        let mut it = subject.trim_start_matches("Subject: writer ").split(' ');
        let t: usize = it.next().and_then(|x| x.parse().ok()).expect("t");
        let i: usize = it.next().and_then(|x| x.parse().ok()).expect("i");
        assert_eq!(rest, &body(t, i), "{subject}");
        assert_eq!(*uid, me);
        assert_eq!(sender, format!("s{t}@example.com").as_bytes());
        assert!(
            received.starts_with(&format!(
                "Received: (tern-queue {} invoked by uid {me});",
                w.child.id()
            )),
            "{received}"
        );
    }
}

#[test]
fn bad_frames_are_answered_54_and_nothing_is_queued() {
    let inst = Instance::new("writer-bad");
    let w = Writer::start(&inst);
    let env = envelope("a@example.com", &["test@localhost"]);
    // Inside a message: an unknown frame, a zero length, a bad envelope.
    for tail in [&b"X"[..], b"D\x00\x00\x00\x00", b"E\x00\x00\x00\x03bad"] {
        let mut s = w.connect();
        feed::write_data(&mut s, b"Subject: bad\n\nx\n").expect("data");
        s.write_all(tail).expect("tail");
        let mut a = [0u8; 1];
        s.read_exact(&mut a).expect("an answer");
        if tail.starts_with(b"E") {
            // A well-framed but bad envelope: the envelope's code, and the
            // connection goes on.
            assert_eq!(a[0], 91, "{tail:?}");
        } else {
            // A broken frame: 54, and the connection is closed.
            assert_eq!(a[0], 54, "{tail:?}");
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            assert!(rest.is_empty(), "{rest:?}");
        }
    }
    // A bad hello: closed without a word.
    let mut s = UnixStream::connect(&w.socket).expect("connect");
    s.write_all(b"tqg1").expect("hello");
    let _ = feed::write_data(&mut s, b"x"); // may find it closed already
    let _ = feed::write_envelope(&mut s, &env);
    let mut a = Vec::new();
    let _ = s.read_to_end(&mut a);
    assert!(a.is_empty(), "{a:?}");
    assert!(queued(&inst).is_empty());
}

#[test]
fn an_abort_drops_one_message_and_the_connection_goes_on() {
    let inst = Instance::new("writer-abort");
    let w = Writer::start(&inst);
    let mut s = w.connect();
    feed::write_data(&mut s, b"Subject: dropped\n\nnever\n").expect("data");
    feed::write_abort(&mut s).expect("abort");
    let env = envelope("a@example.com", &["test@localhost"]);
    assert_eq!(send(&mut s, b"Subject: kept\n\nyes\n", &env), Some(0));
    let q = queued(&inst);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].1, b"Subject: kept\n\nyes\n");
}

#[test]
fn sigkill_of_the_writer_under_load_loses_nothing_answered() {
    let inst = Instance::new("writer-kill");
    let mut w = Writer::start(&inst);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let socket = w.socket.clone();
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let (acked, stop, socket) = (acked.clone(), stop.clone(), socket.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(mut s) = UnixStream::connect(&socket) else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let mut ready = [9u8; 1];
                    if s.write_all(&feed::HELLO).is_err() || s.read_exact(&mut ready).is_err() {
                        continue;
                    }
                    loop {
                        i += 1;
                        let env = envelope("k@example.com", &["test@localhost"]);
                        match send(&mut s, &body(t, i), &env) {
                            Some(0) => acked.lock().expect("lock").push((t, i)),
                            Some(_) => {}
                            None => break,
                        }
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    // Kill it three times under load, starting another each time.
    for _ in 0..3 {
        let before = acked.lock().expect("lock").len();
        assert!(
            wait_until(30, || acked.lock().expect("lock").len() > before + 20),
            "no progress"
        );
        let _ = w.child.kill();
        let _ = w.child.wait();
        w = Writer::start(&inst);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().expect("client");
    }
    drop(w);
    let present: std::collections::HashSet<String> = queued(&inst)
        .into_iter()
        .map(|(subject, rest, ..)| {
            let mut it = subject.trim_start_matches("Subject: writer ").split(' ');
            let t: usize = it.next().and_then(|x| x.parse().ok()).expect("t");
            let i: usize = it.next().and_then(|x| x.parse().ok()).expect("i");
            assert_eq!(rest, body(t, i), "{subject} is not whole");
            subject
        })
        .collect();
    let acked = acked.lock().expect("lock").clone();
    for (t, i) in &acked {
        assert!(
            present.contains(&format!("Subject: writer {t} {i}")),
            "answered message {t} {i} was lost"
        );
    }
    // Nothing half-written is left in tmp/ (unnamed files vanish).
    let tmp = std::fs::read_dir(inst.home().join("queue/tmp"))
        .expect("tmp")
        .count();
    assert_eq!(tmp, 0);
    eprintln!(
        "writer kill test: {} answered, {} queued",
        acked.len(),
        present.len()
    );
}

#[test]
fn tern_smtpd_uses_the_writer_when_it_runs_and_tern_queue_when_not() {
    let inst = Instance::new("writer-smtpd");
    let session_with = |n: usize, gate: Option<&str>, ok: usize| {
        let mut input = b"HELO x\r\n".to_vec();
        for i in 0..n {
            input.extend_from_slice(
                format!("MAIL FROM:<a@example.com>\r\nRCPT TO:<test@localhost>\r\nDATA\r\nSubject: s{i}\r\n\r\nhi\r\n.\r\n").as_bytes(),
            );
        }
        input.extend_from_slice(b"QUIT\r\n");
        let mut cmd = inst.command("tern-smtpd");
        if let Some(g) = gate {
            cmd.env("TERN_QUEUE_SOCKET", g);
        }
        let mut c = cmd
            .env("TCPREMOTEIP", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("tern-smtpd");
        c.stdin
            .take()
            .expect("stdin")
            .write_all(&input)
            .expect("write");
        let out = c.wait_with_output().expect("wait");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(text.matches("250 2.0.0 ok").count(), ok, "{text}");
        text
    };
    let session = |n: usize| session_with(n, None, n);
    let pids = |inst: &Instance| -> Vec<String> {
        let mut v: Vec<String> = queued(inst)
            .into_iter()
            .map(|(_, _, received, ..)| {
                received
                    .trim_start_matches("Received: (tern-queue ")
                    .split(' ')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        v.sort();
        v
    };
    // No writer: a tern-queue per message.
    session(3);
    let p = pids(&inst);
    assert_eq!(p.len(), 3);
    assert!(p[0] != p[1] && p[1] != p[2], "{p:?}");
    // A writer: every message names it.
    let w = Writer::start(&inst);
    session(3);
    let writer = w.child.id().to_string();
    let p = pids(&inst);
    assert_eq!(p.iter().filter(|x| **x == writer).count(), 3, "{p:?}");
    // A gate named too (the hardened systemd units): the writer still
    // comes first; the gate (here: nothing listens) only when the writer
    // cannot be reached.
    let gate = inst.scratch().join("no-gate.sock");
    let gate = gate.to_str().unwrap();
    session_with(2, Some(gate), 2);
    let p = pids(&inst);
    assert_eq!(p.iter().filter(|x| **x == writer).count(), 5, "{p:?}");
    drop(w);
    let text = session_with(1, Some(gate), 0);
    assert!(
        text.contains("451"),
        "no writer, no gate: temporary: {text}"
    );
    assert_eq!(pids(&inst).len(), 8, "nothing more queued");
}

/// Sends `n` messages from as many clients at once (so that rounds hold
/// several); their answers.
fn burst(w: &Writer, n: usize) -> Vec<Option<u8>> {
    let socks: Vec<UnixStream> = (0..n).map(|_| w.connect()).collect();
    let threads: Vec<_> = socks
        .into_iter()
        .enumerate()
        .map(|(t, mut s)| {
            std::thread::spawn(move || {
                let env = envelope("f@example.com", &["test@localhost"]);
                send(&mut s, &body(t, 0), &env)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("client"))
        .collect()
}

#[test]
fn a_failing_syncfs_falls_back_and_a_failing_name_flush_queues_nothing() {
    let test = "writer::a_failing_syncfs_falls_back_and_a_failing_name_flush_queues_nothing";
    let Some(lib) = tern_tests::faultfs_library() else {
        tern_tests::skip(test, "no C compiler for the fault library");
        return;
    };
    // syncfs fails: each file and directory is synced on its own instead,
    // and every message is queued.
    let inst = Instance::new("writer-syncfs");
    let w = Writer::start_with(
        &inst,
        &[
            ("LD_PRELOAD", lib.as_os_str()),
            ("TERN_FAULT", std::ffi::OsStr::new("syncfs")),
        ],
    );
    let answers = burst(&w, 12);
    assert!(answers.iter().all(|a| *a == Some(0)), "{answers:?}");
    assert_eq!(queued(&inst).len(), 12);
    drop(w);
    // No flush works at all: nobody is told "queued", and the names are
    // taken back (65), so nothing is queued either.
    let inst = Instance::new("writer-allsync");
    let w = Writer::start_with(
        &inst,
        &[
            ("LD_PRELOAD", lib.as_os_str()),
            ("TERN_FAULT", std::ffi::OsStr::new("allsync")),
        ],
    );
    let answers = burst(&w, 12);
    assert!(answers.iter().all(|a| *a == Some(65)), "{answers:?}");
    assert!(queued(&inst).is_empty());
}

#[test]
fn tern_start_runs_the_writer_and_restarts_it() {
    let inst = Instance::new("writer-start");
    let daemon = tern_tests::Daemon::start(&inst);
    let socket = feed::socket_path(inst.home());
    let writers = || inst.pids_of("tern-queue");
    assert!(
        wait_until(20, || writers().len() == 1
            && UnixStream::connect(&socket).is_ok()),
        "no writer: {}",
        daemon.log()
    );
    let first = writers()[0];
    let st = std::process::Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    // Another one, within a few seconds, and it takes messages.
    assert!(
        wait_until(20, || {
            let w = writers();
            w.len() == 1 && w[0] != first && UnixStream::connect(&socket).is_ok()
        }),
        "the writer was not restarted: {}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("event=alert program=tern-queue"),
        "{}",
        daemon.log()
    );
    let w = Writer {
        child: std::process::Command::new("true").spawn().expect("true"),
        socket,
    };
    let mut s = w.connect();
    let env = envelope("r@example.com", &["test@localhost"]);
    assert_eq!(send(&mut s, b"Subject: after\n\nrestart\n", &env), Some(0));
}
