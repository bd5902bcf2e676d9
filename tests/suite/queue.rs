//! tern-queue: byte-exact storage, every exit code, parallel injection.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tern_tests::{Instance, envelope, faultfs_library, inject_raw, is_root, skip, strip_received};

fn only_message(inst: &Instance) -> Vec<u8> {
    let list = inst.queue().list().unwrap();
    assert_eq!(list.len(), 1, "expected exactly one queued message");
    inst.queue().read_message(list[0].id).unwrap()
}

fn assert_queue_empty(inst: &Instance) {
    let q = inst.queue();
    assert_eq!(
        q.count().unwrap(),
        0,
        "a refused message left something in new/ or cur/"
    );
    let tmp: Vec<_> = std::fs::read_dir(inst.home().join("queue/tmp"))
        .unwrap()
        .collect();
    assert!(
        tmp.is_empty(),
        "a refused message left files in queue/tmp: {tmp:?}"
    );
}

#[test]
fn byte_exact_round_trip() {
    let mut long_line = b"X-Long: ".to_vec();
    long_line.extend(std::iter::repeat_n(b'a', 3 << 20));
    long_line.extend_from_slice(b"\n\nbody\n");
    let mut all_bytes: Vec<u8> = b"Subject: every byte\n\n".to_vec();
    all_bytes.extend((0..=255u8).cycle().take(70_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "eight-bit",
            "Subject: caf\u{e9}\n\n\u{fc}ber \u{2603}\n"
                .as_bytes()
                .to_vec(),
        ),
        ("nuls", b"Subject: nul\n\na\0b\0\0c\n".to_vec()),
        (
            "no-final-newline",
            b"Subject: x\n\nno newline at end".to_vec(),
        ),
        (
            "crlf-and-bare-cr",
            b"Subject: x\r\n\r\nline\r\nbare\rcr\n.\n..\n".to_vec(),
        ),
        ("very-long-line", long_line),
        ("all-bytes", all_bytes),
        ("empty", Vec::new()),
    ];
    for (name, msg) in cases {
        let inst = Instance::new("roundtrip");
        let r = inst.inject_raw(&msg, &envelope("a@example.com", &["test@localhost"]));
        assert_eq!(r.code(), 0, "{name}: {}", r.stderr);
        let stored = only_message(&inst);
        let (received, rest) = strip_received(&stored);
        assert!(
            rest == &msg[..],
            "{name}: stored message differs from what was injected"
        );
        let uid = tern_sys::real_uid();
        let received = String::from_utf8(received.to_vec()).unwrap();
        assert!(
            received.contains(&format!("invoked by uid {uid});")),
            "{received}"
        );
        assert!(received.ends_with("+0000\n"), "{received}");
        let m = &inst.queue().list().unwrap()[0];
        assert_eq!(m.sender, b"a@example.com");
        assert_eq!(m.recipients.len(), 1);
        assert_eq!(m.size as usize, stored.len());
    }
}

#[test]
fn envelope_kept_exactly() {
    let inst = Instance::new("envelope");
    let env = envelope("", &["a@b", "a@b", "j\u{f6}rg@\u{e9}xample.org", ""]);
    assert_eq!(inst.inject_raw(b"x\n", &env).code(), 0);
    let m = &inst.queue().list().unwrap()[0];
    assert_eq!(m.sender, b"");
    let rcpts: Vec<&[u8]> = m.recipients.iter().map(|r| r.address.as_slice()).collect();
    assert_eq!(
        rcpts,
        vec![
            &b"a@b"[..],
            b"a@b",
            "j\u{f6}rg@\u{e9}xample.org".as_bytes(),
            b""
        ]
    );
}

#[test]
fn large_envelope_moves_message_offset() {
    // An envelope too large for the default 4 KiB header reservation.
    let inst = Instance::new("bigenv");
    let rcpts: Vec<String> = (0..3000).map(|i| format!("user{i}@example.com")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let msg = b"Subject: many\n\nbody\n".to_vec();
    let r = inst.inject_raw(&msg, &envelope("s@x", &refs));
    assert_eq!(r.code(), 0, "{}", r.stderr);
    let list = inst.queue().list().unwrap();
    assert_eq!(list[0].recipients.len(), 3000);
    assert_eq!(
        strip_received(&inst.queue().read_message(list[0].id).unwrap()).1,
        &msg[..]
    );
}

#[test]
fn named_tmp_fallback_commits_and_cleans() {
    let inst = Instance::new("namedtmp");
    let mut cmd = inst.command("tern-queue");
    cmd.env("TERN_QUEUE_NAMED_TMP", "1");
    let r = inject_raw(cmd, b"hello\n", &envelope("a@b", &["c@d"]));
    assert_eq!(r.code(), 0, "{}", r.stderr);
    assert_eq!(strip_received(&only_message(&inst)).1, b"hello\n");
    let tmp: Vec<_> = std::fs::read_dir(inst.home().join("queue/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty());
    // And a refused one leaves nothing behind.
    let mut cmd = inst.command("tern-queue");
    cmd.env("TERN_QUEUE_NAMED_TMP", "1");
    let r = inject_raw(cmd, b"hello\n", b"Fa@b\0Tc@d\0");
    assert_eq!(r.code(), 54);
    let tmp: Vec<_> = std::fs::read_dir(inst.home().join("queue/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty());
}

#[test]
fn exit_11_address_too_long() {
    let inst = Instance::new("e11");
    let long = "a".repeat(1001);
    let r = inst.inject_raw(b"x\n", &envelope(&long, &["c@d"]));
    assert_eq!(r.code(), 11, "{}", r.stderr);
    let r = inst.inject_raw(b"x\n", &envelope("a@b", &["c@d", &long]));
    assert_eq!(r.code(), 11, "{}", r.stderr);
    let exactly = "a".repeat(1000);
    assert_eq!(
        inst.inject_raw(b"x\n", &envelope(&exactly, &["c@d"]))
            .code(),
        0
    );
}

#[test]
fn exit_12_too_many_recipients() {
    let inst = Instance::new("e12");
    let rcpts = vec!["r@x"; tern_spool::MAX_RECIPIENTS + 1];
    let r = inst.inject_raw(b"x\n", &envelope("a@b", &rcpts));
    assert_eq!(r.code(), 12, "{}", r.stderr);
    assert_queue_empty(&inst);
    let rcpts = vec!["r@x"; tern_spool::MAX_RECIPIENTS];
    assert_eq!(inst.inject_raw(b"x\n", &envelope("a@b", &rcpts)).code(), 0);
}

#[test]
fn exit_13_envelope_too_large() {
    let inst = Instance::new("e13");
    let addr = "a".repeat(1000);
    let rcpts = vec![addr.as_str(); 5000];
    let r = inst.inject_raw(b"x\n", &envelope("a@b", &rcpts));
    assert_eq!(r.code(), 13, "{}", r.stderr);
    assert_queue_empty(&inst);
}

#[test]
fn exit_51_out_of_memory() {
    // A limit on address space that lets tern-queue start but not hold a
    // multi-megabyte envelope: the allocation fails and it must say 51, not
    // die of a signal, and queue nothing.
    let inst = Instance::new("e51");
    let addr = "b".repeat(1000);
    let rcpts = vec![addr.as_str(); 4000];
    let env = envelope("a@b", &rcpts);
    let mut saw_51 = false;
    for kib in [12_000u32, 16_000, 20_000, 24_000, 28_000, 32_000, 40_000] {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!("ulimit -v {kib} && exec \"$0\"",))
            .arg(tern_tests::bin("tern-queue"))
            .env("TERN_HOME", inst.home());
        let r = inject_raw(cmd, b"x\n", &env);
        match r.code() {
            51 => saw_51 = true,
            0 => {}
            c => panic!("ulimit -v {kib}: unexpected exit {c}: {}", r.stderr),
        }
    }
    assert!(saw_51, "no address-space limit produced exit 51");
    // Whatever was refused left nothing; whatever succeeded is complete.
    for m in inst.queue().list().unwrap() {
        assert_eq!(m.recipients.len(), 4000);
    }
}

#[test]
fn exit_52_timeout() {
    let inst = Instance::new("e52");
    let mut child = inst
        .command("tern-queue")
        .env("TERN_QUEUE_TIMEOUT", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Subject: stalled\n").unwrap();
    let start = Instant::now();
    let status = child.wait().unwrap();
    drop(stdin);
    assert_eq!(status.code(), Some(52));
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_queue_empty(&inst);
}

#[test]
fn exit_53_disk_full_on_tmpfs() {
    if !is_root() {
        skip(
            "exit_53_disk_full_on_tmpfs",
            "needs root to mount a small tmpfs",
        );
        return;
    }
    let inst = Instance::new("e53");
    let home = inst.scratch().join("fullhome");
    std::fs::create_dir_all(home.join("queue")).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(home.join("queue"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        skip(
            "exit_53_disk_full_on_tmpfs",
            "mount -t tmpfs failed (no privilege in this container?)",
        );
        return;
    }
    tern_spool::layout::create(&home.join("queue"), 23).unwrap();
    let mut cmd = Command::new(tern_tests::bin("tern-queue"));
    cmd.env("TERN_HOME", &home);
    let big = vec![b'z'; 1 << 20];
    let r = inject_raw(cmd, &big, &envelope("a@b", &["c@d"]));
    let q = tern_spool::Queue::open(&home.join("queue")).unwrap();
    let count = q.count().unwrap();
    // Then a message that fits still goes through: nothing was left behind.
    let mut cmd = Command::new(tern_tests::bin("tern-queue"));
    cmd.env("TERN_HOME", &home);
    let small = inject_raw(cmd, b"fits\n", &envelope("a@b", &["c@d"]));
    let after = q.count().unwrap();
    let _ = Command::new("umount").arg(home.join("queue")).status();
    assert_eq!(r.code(), 53, "{}", r.stderr);
    assert_eq!(count, 0);
    assert_eq!(small.code(), 0, "{}", small.stderr);
    assert_eq!(after, 1);
}

#[test]
fn exit_53_write_error_injected() {
    let Some(lib) = faultfs_library() else {
        skip(
            "exit_53_write_error_injected",
            "no C compiler for the fault library",
        );
        return;
    };
    let inst = Instance::new("e53f");
    let mut cmd = inst.command("tern-queue");
    cmd.env("LD_PRELOAD", &lib).env("TERN_FAULT", "enospc");
    let r = inject_raw(cmd, b"Subject: x\n\nbody\n", &envelope("a@b", &["c@d"]));
    assert_eq!(r.code(), 53, "{}", r.stderr);
    assert_queue_empty(&inst);
}

#[test]
fn exit_54_truncated_envelope_or_unreadable_message() {
    let inst = Instance::new("e54");
    for env in [
        &b""[..],
        b"F",
        b"Fa@b",
        b"Fa@b\0",
        b"Fa@b\0Tc@d",
        b"Fa@b\0Tc@d\0",
    ] {
        let r = inst.inject_raw(b"Subject: x\n\nbody\n", env);
        assert_eq!(r.code(), 54, "envelope {env:?}: {}", r.stderr);
    }
    // fd 0 that cannot be read: a directory.
    let dir = std::fs::File::open(inst.home()).unwrap();
    let (env_r, mut env_w) = std::io::pipe().unwrap();
    env_w.write_all(&envelope("a@b", &["c@d"])).unwrap();
    drop(env_w);
    let status = inst
        .command("tern-queue")
        .stdin(Stdio::from(dir))
        .stdout(Stdio::from(env_r))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(54));
    assert_queue_empty(&inst);
}

#[test]
fn exit_61_to_65_directories() {
    let inst = Instance::new("e6x");
    let msg = b"Subject: x\n\nbody\n";
    let env = envelope("a@b", &["c@d"]);

    let mut cmd = inst.command("tern-queue");
    cmd.env("TERN_HOME", inst.scratch().join("no-such-home"));
    assert_eq!(inject_raw(cmd, msg, &env).code(), 61);

    let bare = inst.scratch().join("bare-home");
    std::fs::create_dir_all(&bare).unwrap();
    let mut cmd = inst.command("tern-queue");
    cmd.env("TERN_HOME", &bare);
    assert_eq!(inject_raw(cmd, msg, &env).code(), 62, "home without queue/");

    let q = inst.home().join("queue");
    let format = std::fs::read(q.join("format")).unwrap();
    std::fs::write(q.join("format"), b"tern-queue-format 9\nsplit 23\n").unwrap();
    assert_eq!(
        inst.inject_raw(msg, &env).code(),
        62,
        "unknown queue format"
    );
    std::fs::write(q.join("format"), &format).unwrap();

    // Named files are made in tmp/; anonymous ones in new/'s buckets.
    std::fs::rename(q.join("tmp"), q.join("tmp.away")).unwrap();
    let mut cmd = inst.command("tern-queue");
    cmd.env("TERN_QUEUE_NAMED_TMP", "1");
    assert_eq!(inject_raw(cmd, msg, &env).code(), 63, "queue/tmp missing");
    std::fs::rename(q.join("tmp.away"), q.join("tmp")).unwrap();

    std::fs::rename(q.join("new"), q.join("new.away")).unwrap();
    std::fs::create_dir(q.join("new")).unwrap();
    assert_eq!(
        inst.inject_raw(msg, &env).code(),
        64,
        "queue/new/<split> missing"
    );
    std::fs::remove_dir(q.join("new")).unwrap();
    std::fs::rename(q.join("new.away"), q.join("new")).unwrap();
    assert_queue_empty(&inst);

    match faultfs_library() {
        Some(lib) => {
            let mut cmd = inst.command("tern-queue");
            cmd.env("LD_PRELOAD", &lib).env("TERN_FAULT", "dirsync");
            let r = inject_raw(cmd, msg, &env);
            assert_eq!(r.code(), 65, "{}", r.stderr);
            assert_queue_empty(&inst);
        }
        None => skip("exit_65", "no C compiler for the fault library"),
    }
    assert_eq!(inst.inject_raw(msg, &env).code(), 0, "queue works again");
}

#[test]
fn exit_81_internal_bug() {
    let inst = Instance::new("e81");
    // A crash signal is reported as 81, never as a bare signal.
    let mut child = inst
        .command("tern-queue")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill")
        .args(["-SEGV", &child.id().to_string()])
        .status();
    assert_eq!(child.wait().unwrap().code(), Some(81));
    // So is being called with arguments: internal interfaces take none.
    let out = inst.command("tern-queue").arg("-x").output().unwrap();
    assert_eq!(out.status.code(), Some(81));
    assert!(out.stdout.is_empty());
    let out = inst.command("tern-queue").arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
    assert_queue_empty(&inst);
}

#[test]
fn exit_91_envelope_format() {
    let inst = Instance::new("e91");
    for env in [
        &b"Xa@b\0\0"[..],
        b"Ta@b\0\0",
        b"Fa@b\0Fc@d\0\0",
        b"Fa@b\0Xc@d\0\0",
    ] {
        let r = inst.inject_raw(b"x\n", env);
        assert_eq!(r.code(), 91, "envelope {env:?}: {}", r.stderr);
    }
    assert_queue_empty(&inst);
}

#[test]
fn nothing_on_stdout_and_trigger_is_pulled() {
    let inst = Instance::new("trigger");
    // A reader on the FIFO sees one byte per committed message.
    let fifo = inst.home().join("queue/lock/trigger");
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::open(fifo).unwrap();
        let mut b = [0u8; 1];
        use std::io::Read;
        f.read(&mut b).unwrap()
    });
    std::thread::sleep(Duration::from_millis(200));
    let r = inst.inject_raw(b"x\n", &envelope("a@b", &["c@d"]));
    assert_eq!(r.code(), 0);
    assert_eq!(reader.join().unwrap(), 1);
    // And with no reader, injection still succeeds.
    assert_eq!(
        inst.inject_raw(b"x\n", &envelope("a@b", &["c@d"])).code(),
        0
    );
}

#[test]
fn parallel_8_by_500() {
    let inst = Instance::new("parallel");
    let per = 500;
    let home = inst.home().to_path_buf();
    let handles: Vec<_> = (0..8)
        .map(|p| {
            let home = home.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    let body = format!("Subject: m {p}-{i}\n\ninjector {p} message {i}\n");
                    let mut cmd = Command::new(tern_tests::bin("tern-queue"));
                    cmd.env("TERN_HOME", &home);
                    let r = inject_raw(cmd, body.as_bytes(), &envelope("s@x", &["test@localhost"]));
                    assert_eq!(r.code(), 0, "{}", r.stderr);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let q = inst.queue();
    let list = q.list().unwrap();
    assert_eq!(list.len(), 8 * per);
    let mut seen = std::collections::HashSet::new();
    for m in &list {
        let stored = q.read_message(m.id).unwrap();
        let body = String::from_utf8(strip_received(&stored).1.to_vec()).unwrap();
        assert!(
            body.starts_with("Subject: m ") && body.ends_with("\n"),
            "incomplete: {body:?}"
        );
        assert!(seen.insert(body), "duplicate message");
    }
    assert_eq!(seen.len(), 4000);
}

#[test]
fn setuid_tern_queue_ignores_the_environment() {
    if !is_root() {
        skip(
            "setuid_tern_queue_ignores_the_environment",
            "needs root to install a setuid copy",
        );
        return;
    }
    if std::path::Path::new("/var/tern").exists() {
        skip(
            "setuid_tern_queue_ignores_the_environment",
            "/var/tern exists here; the compiled-in home would be used for real",
        );
        return;
    }
    let inst = Instance::new("setuid");
    // A setuid copy owned by nobody: started by root its real and effective
    // uids differ, so the kernel sets AT_SECURE.
    let copy = inst.scratch().join("tern-queue-setuid");
    std::fs::copy(tern_tests::bin("tern-queue"), &copy).unwrap();
    let ok = Command::new("chown")
        .args(["nobody"])
        .arg(&copy)
        .status()
        .unwrap()
        .success()
        && Command::new("chmod")
            .args(["4755"])
            .arg(&copy)
            .status()
            .unwrap()
            .success();
    assert!(ok, "cannot make the setuid copy");
    let mut cmd = Command::new(&copy);
    cmd.env("TERN_HOME", inst.home())
        .env("TERN_QUEUE_TIMEOUT", "1")
        .current_dir(inst.scratch());
    // TERN_HOME must be ignored: the compiled-in /var/tern does not exist.
    let r = inject_raw(cmd, b"x\n", &envelope("a@b", &["c@d"]));
    assert_eq!(r.code(), 61, "{}", r.stderr);
    assert_queue_empty(&inst);
    // The same binary without the setuid bit honours TERN_HOME.
    Command::new("chmod")
        .args(["0755"])
        .arg(&copy)
        .status()
        .unwrap();
    let mut cmd = Command::new(&copy);
    cmd.env("TERN_HOME", inst.home());
    assert_eq!(
        inject_raw(cmd, b"x\n", &envelope("a@b", &["c@d"])).code(),
        0
    );
}

// ---------------------------------------------------------------------
// The queue gate: `tern-queue --gate` with a connected Unix socket on fd 0
// (what tern-queue.socket with Accept=yes gives it), and QueueClient with
// TERN_QUEUE_SOCKET. Single-user: the test plays systemd.
// ---------------------------------------------------------------------

mod gate {
    use super::*;
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::mpsc;

    /// Starts `tern-queue --gate` for `inst` with `conn` as fd 0.
    fn spawn_gate(inst: &Instance, conn: OwnedFd, env: &[(&str, &str)]) -> std::process::Child {
        let mut c = inst.command("tern-queue");
        c.arg("--gate")
            .stdin(Stdio::from(conn))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        c.spawn().expect("start tern-queue --gate")
    }

    /// A listener at `<scratch>/queue.sock` that serves `n` connections,
    /// one `tern-queue --gate` each (like `Accept=yes`). Each gate's pid is
    /// sent on the first channel when it starts; its exit code and stderr
    /// on the second when it ends.
    struct Server {
        path: std::path::PathBuf,
        pids: mpsc::Receiver<u32>,
        ends: mpsc::Receiver<(i32, String)>,
    }

    fn serve(inst: &Instance, n: usize) -> Server {
        let path = inst.scratch().join("queue.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind the gate socket");
        let (pid_tx, pids) = mpsc::channel();
        let (end_tx, ends) = mpsc::channel();
        let home = inst.home().to_path_buf();
        std::thread::spawn(move || {
            for _ in 0..n {
                let Ok((conn, _)) = listener.accept() else {
                    return;
                };
                let mut c = Command::new(tern_tests::bin("tern-queue"));
                c.arg("--gate")
                    .env("TERN_HOME", &home)
                    .env_remove("QMAILQUEUE")
                    .stdin(Stdio::from(OwnedFd::from(conn)))
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                let child = c.spawn().expect("start tern-queue --gate");
                drop(c);
                let _ = pid_tx.send(child.id());
                let out = child.wait_with_output().expect("wait for the gate");
                let _ = end_tx.send((
                    out.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                ));
            }
        });
        Server { path, pids, ends }
    }

    impl Server {
        fn end(&self) -> (i32, String) {
            self.ends
                .recv_timeout(Duration::from_secs(30))
                .expect("the gate ended")
        }
    }

    /// Sends `bytes` with `fds` attached, in one sendmsg.
    fn send_raw(sock: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut anc = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            assert!(anc.push(SendAncillaryMessage::ScmRights(fds)));
        }
        rustix::net::sendmsg(
            sock,
            &[std::io::IoSlice::new(bytes)],
            &mut anc,
            SendFlags::NOSIGNAL,
        )
        .expect("sendmsg");
    }

    fn read_byte(sock: &UnixStream) -> Option<u8> {
        tern_spool::gate::read_status(sock.as_fd()).expect("read the answer")
    }

    #[test]
    fn sendmail_through_the_gate_is_queued_with_the_peer_uid_and_delivered() {
        let inst = Instance::new("gate-sendmail");
        let server = serve(&inst, 1);
        let mut child = inst
            .command("sendmail")
            .args(["-f", "a@example.com", "test@localhost"])
            .env("TERN_QUEUE_SOCKET", &server.path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"Subject: through the gate\n\nbody\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let gate_pid = server.pids.recv_timeout(Duration::from_secs(5)).unwrap();
        let (code, log) = server.end();
        assert_eq!(code, 0, "{log}");
        // Received names the gate's pid and the caller's uid (the peer's,
        // from SO_PEERCRED).
        let stored = only_message(&inst);
        let (received, rest) = strip_received(&stored);
        let received = String::from_utf8_lossy(received);
        let uid = tern_sys::real_uid();
        assert!(
            received.contains(&format!("(tern-queue {gate_pid} invoked by uid {uid});")),
            "{received}"
        );
        assert!(
            rest.ends_with(b"Subject: through the gate\n\nbody\n"),
            "{}",
            String::from_utf8_lossy(rest)
        );
        let m = &inst.queue().list().unwrap()[0];
        assert_eq!(m.sender, b"a@example.com");
        // And it is delivered like any other message.
        let out = inst.command("tern-start").arg("--once").output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mail = inst.maildir("test");
        assert_eq!(mail.len(), 1);
        assert!(
            String::from_utf8_lossy(&mail[0])
                .contains(&format!("(tern-queue {gate_pid} invoked by uid {uid});")),
        );
    }

    #[test]
    fn tern_smtpd_queues_through_the_gate() {
        let inst = Instance::new("gate-smtpd");
        let server = serve(&inst, 1);
        let mut child = inst
            .command("tern-smtpd")
            .env("TCPREMOTEIP", "127.0.0.1")
            .env_remove("RELAYCLIENT")
            .env("TERN_QUEUE_SOCKET", &server.path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(
                b"HELO c.example\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<test@localhost>\r\n\
                  DATA\r\nSubject: smtp gate\r\n\r\nhi\r\n.\r\nQUIT\r\n",
            )
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains("250 2.0.0 ok"),
            "{said}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let gate_pid = server.pids.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(server.end().0, 0);
        let stored = only_message(&inst);
        let (received, _) = strip_received(&stored);
        assert!(
            String::from_utf8_lossy(received).contains(&format!("(tern-queue {gate_pid} invoked")),
            "{}",
            String::from_utf8_lossy(received)
        );
    }

    #[test]
    fn exit_codes_come_back_through_the_gate() {
        let inst = Instance::new("gate-codes");
        let server = serve(&inst, 3);
        let client = tern_spool::QueueClient::with_gate(server.path.clone());
        // A permanent refusal keeps its code and class.
        let long = format!("{}@example.com", "a".repeat(tern_spool::MAX_ADDRESS + 1));
        let env = tern_spool::Envelope {
            sender: long.into_bytes(),
            recipients: vec![b"test@localhost".to_vec()],
        };
        let e = client
            .submit(&env, |w| w.write_all(b"Subject: x\n\n"))
            .unwrap_err();
        assert_eq!(e.code(), Some(11), "{e}");
        assert!(!e.is_temporary());
        assert_eq!(server.end().0, 11);
        // The writer's own failure: the envelope is never sent, the gate
        // sees it truncated (54), nothing is queued, the writer's reason
        // is returned.
        let env = tern_spool::Envelope {
            sender: b"a@example.com".to_vec(),
            recipients: vec![b"test@localhost".to_vec()],
        };
        let e = client
            .submit(&env, |w| {
                w.write_all(b"Subject: x\n\n")?;
                Err(std::io::Error::other("client gave up"))
            })
            .unwrap_err();
        assert!(e.is_temporary());
        assert_eq!(e.code(), Some(54), "{e}");
        assert_eq!(server.end().0, 54);
        assert_queue_empty(&inst);
        // And a good one.
        client
            .submit(&env, |w| w.write_all(b"Subject: ok\n\n"))
            .unwrap();
        assert_eq!(server.end().0, 0);
        assert_eq!(inst.queue().count().unwrap(), 1);
    }

    #[test]
    fn bad_clients_get_54_and_queue_nothing() {
        let inst = Instance::new("gate-bad");
        let (p1, _w1) = std::io::pipe().unwrap();
        let (p2, _w2) = std::io::pipe().unwrap();
        let (p3, _w3) = std::io::pipe().unwrap();
        let three = [p1.as_fd(), p2.as_fd(), p3.as_fd()];
        let header = tern_spool::gate::HEADER;
        let cases: Vec<(&str, &[u8], &[BorrowedFd<'_>])> = vec![
            ("closes at once", b"", &[]),
            ("header, no descriptors", &header, &[]),
            ("header, one descriptor", &header, &three[..1]),
            ("header, three descriptors", &header, &three[..]),
            ("not the header", b"HELO", &three[..2]),
            ("half a header", &header[..2], &three[..2]),
        ];
        for (name, bytes, fds) in cases {
            let (client, conn) = UnixStream::pair().unwrap();
            let gate = spawn_gate(&inst, conn.into(), &[]);
            if !bytes.is_empty() {
                send_raw(&client, bytes, fds);
            }
            rustix::net::shutdown(&client, rustix::net::Shutdown::Write).unwrap();
            assert_eq!(read_byte(&client), Some(54), "{name}: the answer");
            let out = gate.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(54), "{name}");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("event=refused"),
                "{name}"
            );
            assert_queue_empty(&inst);
        }
    }

    #[test]
    fn fd_0_not_a_socket_is_54() {
        let inst = Instance::new("gate-nosock");
        let (r, _w) = std::io::pipe().unwrap();
        let out = spawn_gate(&inst, r.into(), &[]).wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(54));
        assert_queue_empty(&inst);
    }

    #[test]
    fn a_silent_client_times_out() {
        let inst = Instance::new("gate-silent");
        let (client, conn) = UnixStream::pair().unwrap();
        let start = Instant::now();
        let gate = spawn_gate(&inst, conn.into(), &[("TERN_QUEUE_TIMEOUT", "1")]);
        assert_eq!(read_byte(&client), Some(52));
        let out = gate.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(52));
        assert!(start.elapsed() < Duration::from_secs(30));
        assert_queue_empty(&inst);
    }

    #[test]
    fn a_gate_killed_mid_message_is_a_temporary_failure_and_queues_nothing() {
        let inst = Instance::new("gate-killed");
        let server = serve(&inst, 1);
        let client = tern_spool::QueueClient::with_gate(server.path.clone());
        let env = tern_spool::Envelope {
            sender: b"a@example.com".to_vec(),
            recipients: vec![b"test@localhost".to_vec()],
        };
        let e = client
            .submit(&env, |w| {
                w.write_all(b"Subject: half\n\n")?;
                w.flush()?;
                let pid = server.pids.recv_timeout(Duration::from_secs(5)).unwrap();
                let st = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status()
                    .unwrap();
                assert!(st.success());
                // Wait until it is gone, then keep writing.
                let _ = server.ends.recv_timeout(Duration::from_secs(10));
                w.write_all(&vec![b'x'; 256 * 1024])?;
                w.write_all(b"\nend\n")
            })
            .unwrap_err();
        assert!(e.is_temporary(), "{e}");
        assert_eq!(e.code(), None, "{e}");
        assert_queue_empty(&inst);
    }

    #[test]
    fn an_unreachable_gate_is_a_temporary_failure() {
        let inst = Instance::new("gate-none");
        let (code, err) = {
            let mut child = inst
                .command("sendmail")
                .args(["-f", "a@example.com", "test@localhost"])
                .env("TERN_QUEUE_SOCKET", inst.scratch().join("no-such.sock"))
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let _ = child.stdin.take().unwrap().write_all(b"Subject: x\n\n");
            let out = child.wait_with_output().unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        assert_ne!(code, Some(0), "{err}");
        assert!(err.contains("queue gate"), "{err}");
        assert_queue_empty(&inst);
        // An empty TERN_QUEUE_SOCKET means no gate: tern-queue is run.
        let mut child = inst
            .command("sendmail")
            .args(["-f", "a@example.com", "test@localhost"])
            .env("TERN_QUEUE_SOCKET", "")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(b"Subject: x\n\n");
        assert!(child.wait().unwrap().success());
        assert_eq!(inst.queue().count().unwrap(), 1);
    }

    #[test]
    fn gate_takes_no_other_argument() {
        let inst = Instance::new("gate-args");
        let out = inst
            .command("tern-queue")
            .args(["--gate", "extra"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(81));
        assert_queue_empty(&inst);
    }
}
