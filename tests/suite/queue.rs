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

    std::fs::rename(q.join("tmp"), q.join("tmp.away")).unwrap();
    assert_eq!(inst.inject_raw(msg, &env).code(), 63, "queue/tmp missing");
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
