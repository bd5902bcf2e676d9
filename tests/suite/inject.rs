//! tern-inject and sendmail: the real programs, queueing into a real
//! instance (read back through `tern_spool::Queue`).

use std::io::Write;
use std::process::{Command, Output, Stdio};

use tern_tests::{Instance, strip_received};

/// An instance with fixed control values, so that expectations do not
/// depend on the machine's name.
fn instance(name: &str) -> Instance {
    let inst = Instance::new(name);
    let control = inst.home().join("control");
    std::fs::write(control.join("me"), "box.example\n").unwrap();
    std::fs::write(control.join("idhost"), "id.example\n").unwrap();
    inst
}

/// A command for `program` in `inst` with a clean, known environment.
fn command(inst: &Instance, program: &str) -> Command {
    let mut c = inst.command(program);
    c.env_clear()
        .env("TERN_HOME", inst.home())
        .env("USER", "tester")
        .env("PATH", "/usr/bin:/bin");
    c
}

/// Runs `cmd` with `input` on stdin.
fn run(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().unwrap();
    out
}

fn sendmail(inst: &Instance, args: &[&str], input: &[u8]) -> Output {
    let mut c = command(inst, "sendmail");
    c.args(args);
    run(c, input)
}

fn inject(inst: &Instance, args: &[&str], input: &[u8]) -> Output {
    let mut c = command(inst, "tern-inject");
    c.args(args);
    run(c, input)
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert_eq!(code(out), 0, "stderr: {}", stderr(out));
    assert!(out.stderr.is_empty(), "unexpected stderr: {}", stderr(out));
}

/// The only queued message: (sender, recipients, message without the
/// Received line tern-queue adds).
fn only_message(inst: &Instance) -> (String, Vec<String>, Vec<u8>) {
    let q = inst.queue();
    let list = q.list().unwrap();
    assert_eq!(list.len(), 1, "expected exactly one queued message");
    let m = &list[0];
    let stored = q.read_message(m.id).unwrap();
    let (_, rest) = strip_received(&stored);
    (
        String::from_utf8(m.sender.clone()).unwrap(),
        m.recipients
            .iter()
            .map(|r| String::from_utf8(r.address.clone()).unwrap())
            .collect(),
        rest.to_vec(),
    )
}

fn assert_nothing_queued(inst: &Instance) {
    assert_eq!(inst.queue().count().unwrap(), 0, "something was queued");
    let tmp = inst.home().join("queue/tmp");
    if tmp.is_dir() {
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
        assert!(left.is_empty(), "files left in queue/tmp: {left:?}");
    }
}

/// Splits a message into (header text, body bytes).
fn split(msg: &[u8]) -> (String, Vec<u8>) {
    let at = msg
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("message has a header");
    (
        String::from_utf8(msg[..at + 1].to_vec()).unwrap(),
        msg[at + 2..].to_vec(),
    )
}

fn header_line<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.lines().find(|l| {
        l.len() > name.len()
            && l[..name.len()].eq_ignore_ascii_case(name)
            && l.as_bytes()[name.len()] == b':'
    })
}

#[test]
fn sendmail_t_takes_bcc_into_the_envelope_and_removes_the_field() {
    let inst = instance("inject-bcc");
    let msg = b"From: Ann <ann@x.example>\nTo: Bob <bob@y.example>\nCc: carol\n\
                Bcc: dave@z.example,\n  erin@z.example\nSubject: hello\n\nbody\n";
    let out = sendmail(&inst, &["-t", "-i", "extra@w.example"], msg);
    assert_ok(&out);
    let (sender, rcpts, stored) = only_message(&inst);
    assert_eq!(sender, "tester@box.example");
    assert_eq!(
        rcpts,
        [
            "bob@y.example",
            "carol@box.example",
            "dave@z.example",
            "erin@z.example",
            "extra@w.example"
        ]
    );
    let (header, body) = split(&stored);
    assert!(header_line(&header, "Bcc").is_none(), "{header}");
    assert!(!header.contains("erin"), "{header}");
    assert!(header.contains(
        "From: Ann <ann@x.example>\nTo: Bob <bob@y.example>\nCc: carol@box.example\nSubject: hello\n"
    ));
    assert_eq!(body, b"body\n");
}

#[test]
fn sendmail_without_t_uses_only_the_arguments() {
    let inst = instance("inject-args");
    let msg = b"To: bob@y.example\nBcc: hidden@z.example\n\nbody\n";
    assert_ok(&sendmail(&inst, &["-oi", "--", "only@w.example"], msg));
    let (_, rcpts, stored) = only_message(&inst);
    assert_eq!(rcpts, ["only@w.example"]);
    assert!(!String::from_utf8_lossy(&stored).contains("hidden"));
}

#[test]
fn sendmail_f_and_big_f() {
    let inst = instance("inject-f");
    // -f sets the envelope sender and the author of an added From:, -F its name.
    let out = sendmail(
        &inst,
        &[
            "-i",
            "rcpt@y.example",
            "-f",
            "bounce@x.example",
            "-FJoe Q. Public",
        ],
        b"Subject: s\n\nb\n",
    );
    assert_ok(&out);
    let (sender, rcpts, stored) = only_message(&inst);
    assert_eq!(sender, "bounce@x.example");
    assert_eq!(rcpts, ["rcpt@y.example"]);
    let (header, _) = split(&stored);
    assert_eq!(
        header_line(&header, "From"),
        Some("From: \"Joe Q. Public\" <bounce@x.example>"),
        "{header}"
    );

    // -F alone: the login at defaulthost, with the name.
    let inst = instance("inject-F");
    let mut c = command(&inst, "sendmail");
    c.args(["-F", "Cron Daemon", "-i", "root"])
        .env("NAME", "ignored");
    assert_ok(&run(c, b"Subject: s\n\nb\n"));
    let (sender, rcpts, stored) = only_message(&inst);
    assert_eq!(sender, "tester@box.example");
    assert_eq!(rcpts, ["root@box.example"]);
    let (header, _) = split(&stored);
    assert_eq!(
        header_line(&header, "From"),
        Some("From: Cron Daemon <tester@box.example>")
    );

    // The null sender.
    let inst = instance("inject-null");
    assert_ok(&sendmail(&inst, &["-f", "<>", "-i", "a@y.example"], b"\n"));
    assert_eq!(only_message(&inst).0, "");
}

#[test]
fn header_defaults_added_when_absent_and_left_alone_when_present() {
    let inst = instance("inject-defaults");
    assert_ok(&inject(&inst, &["a@y.example"], b"Subject: s\n\nbody\n"));
    let (_, _, stored) = only_message(&inst);
    let (header, body) = split(&stored);
    let date = header_line(&header, "Date").expect("Date added");
    assert!(date.ends_with(" +0000"), "{date}");
    let id = header_line(&header, "Message-ID").expect("Message-ID added");
    assert!(
        id.starts_with("Message-ID: <") && id.ends_with("@id.example>"),
        "{id}"
    );
    assert_eq!(
        header_line(&header, "From"),
        Some("From: tester@box.example")
    );
    assert!(header.ends_with("Subject: s\n"));
    assert_eq!(body, b"body\n");

    // All present (odd spellings and case): byte for byte as given, but
    // for CRLF line ends, which become LF.
    let inst = instance("inject-present");
    let msg: &[u8] = b"DATE: Mon, 1 Jan 2024 00:00:00 +0100\r\n\
                       message-id:<given@x>\r\nFrom:  Someone  <s@x.example>\r\n\
                       Subject: =?utf-8?q?caf=C3=A9?=\r\n\tfolded\r\n\r\nbody\r\n";
    assert_ok(&inject(&inst, &["a@y.example"], msg));
    assert_eq!(only_message(&inst).2, lf(msg));

    // CRLF messages are stored with LF (added fields too).
    let inst = instance("inject-crlf");
    assert_ok(&inject(
        &inst,
        &["a@y.example"],
        b"Subject: s\r\n\r\nbody\r\n",
    ));
    let stored = only_message(&inst).2;
    let text = String::from_utf8(stored).unwrap();
    assert!(text.starts_with("Date: "));
    assert_eq!(text.matches('\r').count(), 0, "{text:?}");
}

/// `bytes` with every CRLF turned into LF (what the injectors store).
fn lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(b);
    }
    out
}

#[test]
fn lone_dot_line_kept_with_i_and_ends_input_without() {
    let msg = b"Subject: dots\n\nline one\n.\nafter the dot\n..\n";
    for args in [&["-i"][..], &["-oi"], &["-o", "i"]] {
        let inst = instance("inject-dot-i");
        let mut a = args.to_vec();
        a.push("a@y.example");
        assert_ok(&sendmail(&inst, &a, msg));
        let (_, body) = split(&only_message(&inst).2);
        assert_eq!(body, b"line one\n.\nafter the dot\n..\n", "{args:?}");
    }
    let inst = instance("inject-dot");
    assert_ok(&sendmail(&inst, &["a@y.example"], msg));
    let (_, body) = split(&only_message(&inst).2);
    assert_eq!(body, b"line one\n");
    // CRLF dot line too; tern-inject never treats dots specially.
    let inst = instance("inject-dot-crlf");
    assert_ok(&sendmail(
        &inst,
        &["a@y.example"],
        b"S: x\r\n\r\nl\r\n.\r\nmore\r\n",
    ));
    assert!(only_message(&inst).2.ends_with(b"\n\nl\n"));
    let inst = instance("inject-dot-inject");
    assert_ok(&inject(&inst, &["a@y.example"], msg));
    assert!(only_message(&inst).2.ends_with(b"\n.\nafter the dot\n..\n"));
}

#[test]
fn bodies_pass_byte_exact_but_for_crlf() {
    let mut every_byte: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    every_byte.extend_from_slice(b"\nno final newline");
    let mut long_line = vec![b'x'; 2 << 20];
    long_line.push(b'\n');
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("8bit", "caf\u{e9} \u{2603} \u{fc}ber\n".as_bytes().to_vec()),
        ("nul", b"a\0b\0\0\n\0".to_vec()),
        ("no-final-newline", b"last line".to_vec()),
        ("bare-cr", b"a\rb\r\n\r".to_vec()),
        ("every-byte", every_byte),
        ("long-line", long_line),
        ("empty", Vec::new()),
    ];
    for (name, body) in bodies {
        let header: &[u8] = b"Date: d\nMessage-ID: <m@x>\nFrom: f@x.example\nSubject: b\n\n";
        let msg = [header, &body].concat();
        let inst = instance("inject-body");
        assert_ok(&inject(&inst, &["a@y.example"], &msg));
        assert!(
            only_message(&inst).2 == lf(&msg),
            "{name}: tern-inject changed the message"
        );
        let inst = instance("inject-body-sm");
        assert_ok(&sendmail(&inst, &["-i", "a@y.example"], &msg));
        assert!(
            only_message(&inst).2 == lf(&msg),
            "{name}: sendmail -i changed the message"
        );
    }
}

/// A queue replacement that reads nothing and exits with `code`.
fn failing_queue(inst: &Instance, code: i32) -> std::path::PathBuf {
    let p = inst.scratch().join(format!("qq-exit-{code}"));
    std::fs::write(&p, format!("#!/bin/sh\nexit {code}\n")).unwrap();
    let mut perm = std::fs::metadata(&p).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&p, perm).unwrap();
    p
}

#[test]
fn refused_messages_exit_with_the_class_and_one_line() {
    let big_body = vec![b'z'; 1 << 20];
    for (qcode, want) in [(53, 111), (11, 100), (31, 100), (81, 111)] {
        for program in ["tern-inject", "sendmail"] {
            let inst = instance("inject-refused");
            let qq = failing_queue(&inst, qcode);
            let mut c = command(&inst, program);
            c.env("QMAILQUEUE", &qq);
            if program == "sendmail" {
                c.arg("-i");
            }
            c.arg("a@y.example");
            let msg = [b"Subject: s\n\n".as_slice(), &big_body].concat();
            let out = run(c, &msg);
            assert_eq!(
                code(&out),
                want,
                "{program} qq exit {qcode}: {}",
                stderr(&out)
            );
            let err = stderr(&out);
            assert_eq!(err.lines().count(), 1, "{program}: {err}");
            assert!(err.starts_with(&format!("{program}: fatal: ")), "{err}");
            assert_nothing_queued(&inst);
        }
    }
}

#[test]
fn bad_input_is_refused_and_nothing_queued() {
    let inst = instance("inject-bad");
    // Header recipients with a syntax error.
    let out = sendmail(&inst, &["-t", "-i"], b"To: a@y.example b@y.example\n\nx\n");
    assert_eq!(code(&out), 100);
    assert_eq!(
        stderr(&out),
        "sendmail: fatal: bad address in To field: addresses not separated by a comma (at byte 13)\n"
    );
    // A header over 1 MiB.
    let mut huge = Vec::new();
    for i in 0..20_000 {
        huge.extend_from_slice(format!("X-Filler-{i}: {}\n", "f".repeat(60)).as_bytes());
    }
    huge.extend_from_slice(b"\nbody\n");
    let out = inject(&inst, &["a@y.example"], &huge);
    assert_eq!(code(&out), 100, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("header too large"),
        "{}",
        stderr(&out)
    );
    // No recipients at all.
    let out = sendmail(&inst, &["-t", "-i"], b"Subject: nobody\n\nx\n");
    assert_eq!(code(&out), 100);
    assert_eq!(stderr(&out), "sendmail: fatal: no recipients\n");
    let out = sendmail(&inst, &["-i"], b"Subject: nobody\n\nx\n");
    assert_eq!(code(&out), 100);
    // A bad -f.
    let out = inject(&inst, &["-f", "a@b, c@d", "x@y.example"], b"\n");
    assert_eq!(code(&out), 100);
    assert!(stderr(&out).starts_with("tern-inject: fatal: bad sender address"));
    assert_nothing_queued(&inst);
}

#[test]
fn sendmail_refuses_modes_it_does_not_have() {
    let inst = instance("inject-modes");
    let table: &[(&[&str], &str)] = &[
        (
            &["-bd"],
            "sendmail: fatal: unsupported mode -bd (only -bm, -bp and -bs exist)",
        ),
        (&["-bi"], "sendmail: fatal: unsupported mode -bi"),
        (&["-k", "a@b"], "sendmail: fatal: unknown option -k"),
    ];
    for (args, want) in table {
        let out = sendmail(&inst, args, b"");
        assert_eq!(code(&out), 100, "{args:?}");
        assert!(stderr(&out).starts_with(want), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1);
    }
    // Invoked as newaliases.
    let link = inst.scratch().join("newaliases");
    std::os::unix::fs::symlink(tern_tests::bin("sendmail"), &link).unwrap();
    let mut c = Command::new(&link);
    c.env("TERN_HOME", inst.home());
    let out = run(c, b"");
    assert_eq!(code(&out), 100);
    assert!(
        stderr(&out).contains("no alias database"),
        "{}",
        stderr(&out)
    );
    assert_nothing_queued(&inst);
}

#[test]
fn mailq_and_bp_run_ternctl_queue() {
    // A fake home whose bin/ternctl records its arguments.
    let inst = instance("inject-mailq");
    let fake = inst.scratch().join("fake");
    std::fs::create_dir_all(fake.join("bin")).unwrap();
    let record = inst.scratch().join("ternctl-args");
    let script = fake.join("bin/ternctl");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" > '{}'\nexit 7\n", record.display()),
    )
    .unwrap();
    let mut perm = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&script, perm).unwrap();
    let link = inst.scratch().join("mailq");
    std::os::unix::fs::symlink(tern_tests::bin("sendmail"), &link).unwrap();
    for cmd in [Command::new(&link), {
        let mut c = Command::new(tern_tests::bin("sendmail"));
        c.arg("-bp");
        c
    }] {
        let _ = std::fs::remove_file(&record);
        let mut cmd = cmd;
        cmd.env("TERN_HOME", &fake);
        let out = run(cmd, b"");
        // exec: the exit status is ternctl's own.
        assert_eq!(code(&out), 7, "{}", stderr(&out));
        assert_eq!(std::fs::read_to_string(&record).unwrap(), "queue\n");
    }
}

#[test]
fn tern_inject_recipient_modes_and_print() {
    let msg = b"To: to@y.example\nCc: cc@y.example\nBcc: bcc@y.example\n\nx\n";
    let table: &[(&[&str], &[&str])] = &[
        (&[], &["to@y.example", "cc@y.example", "bcc@y.example"]),
        (&["arg@y.example"], &["arg@y.example"]),
        (&["-A", "arg@y.example"], &["arg@y.example"]),
        (&["-a", "arg@y.example"], &["arg@y.example"]),
        (&["-h"], &["to@y.example", "cc@y.example", "bcc@y.example"]),
        (
            &["-H", "arg@y.example"],
            &[
                "to@y.example",
                "cc@y.example",
                "bcc@y.example",
                "arg@y.example",
            ],
        ),
    ];
    for (args, want) in table {
        let inst = instance("inject-modes");
        assert_ok(&inject(&inst, args, msg));
        assert_eq!(only_message(&inst).1, *want, "{args:?}");
    }
    // -a with no arguments: no recipients.
    let inst = instance("inject-a-none");
    let out = inject(&inst, &["-a"], msg);
    assert_eq!(code(&out), 100);
    // -n prints and queues nothing.
    let out = inject(
        &inst,
        &["-n"],
        b"Date: d\nMessage-ID: <m@x>\nFrom: f@x\nBcc: b@y\n\nbody\0\xff",
    );
    assert_ok(&out);
    assert_eq!(
        out.stdout,
        b"Date: d\nMessage-ID: <m@x>\nFrom: f@x\n\nbody\0\xff"
    );
    assert_nothing_queued(&inst);
}

#[test]
fn envelope_sender_from_the_environment() {
    // (environment, envelope sender, From field)
    type Case = (
        &'static [(&'static str, &'static str)],
        &'static str,
        &'static str,
    );
    let cases: &[Case] = &[
        (&[], "tester@box.example", "From: tester@box.example"),
        (
            &[
                ("QMAILUSER", "qu"),
                ("QMAILHOST", "web"),
                ("QMAILNAME", "Q User"),
            ],
            "qu@web.box.example",
            "From: Q User <qu@web.box.example>",
        ),
        (
            &[("QMAILSUSER", "bounces"), ("QMAILSHOST", "lists.example")],
            "bounces@lists.example",
            "From: tester@box.example",
        ),
    ];
    for (vars, sender, from) in cases {
        let inst = instance("inject-env");
        let mut c = command(&inst, "tern-inject");
        c.envs(vars.iter().copied()).arg("a@y.example");
        assert_ok(&run(c, b"Subject: s\n\n"));
        let (s, _, stored) = only_message(&inst);
        assert_eq!(s, *sender, "{vars:?}");
        let (header, _) = split(&stored);
        assert_eq!(header_line(&header, "From"), Some(*from), "{vars:?}");
    }
    // -f overrides all of it.
    let inst = instance("inject-env-f");
    let mut c = command(&inst, "tern-inject");
    c.env("QMAILSUSER", "x")
        .args(["-f", "owner", "a@y.example"]);
    assert_ok(&run(c, b"Subject: s\n\n"));
    assert_eq!(only_message(&inst).0, "owner@box.example");
}

#[test]
fn unreadable_input_is_temporary_and_queues_nothing() {
    for program in ["tern-inject", "sendmail"] {
        let inst = instance("inject-unreadable");
        // A directory on stdin: every read fails with EISDIR.
        let dir = std::fs::File::open(inst.scratch()).unwrap();
        let out = command(&inst, program)
            .arg("a@y.example")
            .stdin(Stdio::from(dir))
            .output()
            .unwrap();
        assert_eq!(code(&out), 111, "{program}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("{program}: fatal: cannot read the message")),
            "{err}"
        );
        assert_nothing_queued(&inst);
    }
}

/// PHP's `mail()` writes CRLF header lines: the injectors store LF (as
/// Postfix's sendmail does), so readers see no stray `^M`; a lone CR in
/// the body stays.
#[test]
fn crlf_from_php_becomes_lf() {
    let inst = Instance::new("inject-crlf");
    let (code, err) = inst.sendmail(
        &["-t", "-i"],
        b"To: test@localhost\r\nSubject: php\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nline one\r\nkeep\rthis\r\n",
    );
    assert_eq!(code, 0, "{err}");
    let q = inst.queue();
    let m = q.list().unwrap();
    assert_eq!(m.len(), 1);
    let text = q.read_message(m[0].id).unwrap();
    assert!(
        !text.windows(2).any(|w| w == b"\r\n"),
        "{:?}",
        String::from_utf8_lossy(&text)
    );
    assert!(
        text.ends_with(b"line one\nkeep\rthis\n"),
        "{:?}",
        String::from_utf8_lossy(&text)
    );
    assert!(String::from_utf8_lossy(&text).contains("charset=UTF-8\n"));
}

/// fd 0 open for writing only (or closed): sendmail exits 111 with a
/// message and queues nothing (the standard library would read it as an
/// empty message).
#[test]
fn unreadable_stdin_queues_nothing() {
    let inst = Instance::new("inject-ebadf");
    let devnull = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    let out = inst
        .command("sendmail")
        .arg("test@localhost")
        .stdin(std::process::Stdio::from(devnull))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(111),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("standard input"));
    assert_eq!(inst.queue().count().unwrap(), 0);
}

/// Bare local parts in the address fields of injected mail get
/// `@defaulthost` (here `box.example`), everything else in those fields
/// stays as written; other fields are never touched.
#[test]
fn unqualified_header_addresses_get_the_default_host() {
    let msg: &[u8] = b"From: tester (The Tester)\nTo: test, bob@x\n\
        Cc: Joe Q. Public <joe>, \"Smith, Ann\" <ann@y.example>,\n  team: carol, dave;\n\
        Reply-To: list\nSubject: to test, bob\nX-Note: test\n\nbody mentions test\n";
    let want = "From: tester@box.example (The Tester)\nTo: test@box.example, bob@x\n\
        Cc: Joe Q. Public <joe@box.example>, \"Smith, Ann\" <ann@y.example>,\n  \
        team: carol@box.example, dave@box.example;\n\
        Reply-To: list@box.example\nSubject: to test, bob\nX-Note: test\n";
    for program in ["sendmail", "tern-inject"] {
        let inst = instance("inject-qualify");
        let args: &[&str] = if program == "sendmail" {
            &["-t", "-i"]
        } else {
            &["-h"]
        };
        let out = if program == "sendmail" {
            sendmail(&inst, args, msg)
        } else {
            inject(&inst, args, msg)
        };
        assert_ok(&out);
        let (_, rcpts, stored) = only_message(&inst);
        assert_eq!(
            rcpts,
            [
                "test@box.example",
                "bob@x.box.example",
                "joe@box.example",
                "ann@y.example",
                "carol@box.example",
                "dave@box.example"
            ],
            "{program}"
        );
        let (header, body) = split(&stored);
        assert!(header.ends_with(want), "{program}:\n{header}");
        assert_eq!(body, b"body mentions test\n");
    }
    // Resent- fields of a resent message, with defaulthost set.
    let inst = instance("inject-qualify-resent");
    std::fs::write(inst.home().join("control/defaulthost"), "mail.example\n").unwrap();
    let out = inject(
        &inst,
        &["-h"],
        b"Resent-From: me\nResent-To: you, them@z.example\nTo: untouched\n\nx\n",
    );
    assert_ok(&out);
    let (_, rcpts, stored) = only_message(&inst);
    assert_eq!(rcpts, ["you@mail.example", "them@z.example"]);
    let (header, _) = split(&stored);
    assert!(
        header.contains("Resent-From: me@mail.example\nResent-To: you@mail.example, them@z.example\nTo: untouched@mail.example\n"),
        "{header}"
    );
}
