//! tern-local: the real program, run the way tern-lspawn runs it: fd 0 is
//! a queue-file-like file (4096 bytes of header, then the message)
//! positioned at the message, `-- user home local dash ext domain sender
//! defaultdelivery` as arguments, a fresh environment with `TERN_HOME`.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tern_tests::{Instance, bin, have_tool, skip, strip_received};

const MESSAGE: &[u8] = b"From: ann@example.com\nTo: test@example.org\nSubject: hello\n\nFrom the body\n>From quoted\n\xfe8-bit\r\nlast line";

/// Bytes before the message in the input file (as in a queue file).
const PADDING: usize = 4096;

/// One tern-local run.
struct Local<'a> {
    inst: &'a Instance,
    home: PathBuf,
    local: String,
    dash: &'static str,
    ext: String,
    sender: &'static str,
    env: Vec<(&'static str, String)>,
}

impl<'a> Local<'a> {
    /// The mailbox `test` of `inst`: its own address.
    fn test(inst: &'a Instance) -> Local<'a> {
        Local {
            inst,
            home: inst.home().join("mail/test"),
            local: "test".into(),
            dash: "",
            ext: String::new(),
            sender: "ann@example.com",
            env: Vec::new(),
        }
    }

    /// `test-<ext>`.
    fn ext(inst: &'a Instance, ext: &str) -> Local<'a> {
        Local {
            local: format!("test-{ext}"),
            dash: "-",
            ext: ext.into(),
            ..Local::test(inst)
        }
    }

    fn command(&self, input: File) -> Command {
        let mut c = Command::new(bin("tern-local"));
        c.env_clear()
            .env("TERN_HOME", self.inst.home())
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .arg("--")
            .arg("test")
            .arg(&self.home)
            .arg(&self.local)
            .arg(self.dash)
            .arg(&self.ext)
            .arg("example.org")
            .arg(self.sender)
            .arg("./Maildir/")
            .stdin(Stdio::from(input))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn spawn(&self, message: &[u8]) -> Child {
        let input = queue_file(self.inst.scratch(), message);
        self.command(input).spawn().expect("spawn tern-local")
    }

    fn run(&self, message: &[u8]) -> Output {
        self.spawn(message).wait_with_output().expect("wait")
    }
}

/// A file holding [`PADDING`] bytes and then `message`, open and
/// positioned at the message.
fn queue_file(dir: &Path, message: &[u8]) -> File {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("qfile-{n}"));
    let mut f = File::create(&path).unwrap();
    f.write_all(&[b'H'; PADDING]).unwrap();
    f.write_all(message).unwrap();
    drop(f);
    let mut f = File::open(&path).unwrap();
    f.seek(SeekFrom::Start(PADDING as u64)).unwrap();
    f
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
fn assert_exit(out: &Output, want: i32, text: &str) {
    assert_eq!(
        code(out),
        want,
        "stdout: {}\nstderr: {}",
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(out).contains(text),
        "expected {text:?} in the output: {}",
        stdout(out)
    );
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// Contents of the files in `maildir/new`, sorted by name.
fn maildir(maildir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(maildir.join("new"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn delivered(recipient: &str) -> Vec<u8> {
    [
        b"Return-Path: <ann@example.com>\nDelivered-To: ".as_slice(),
        recipient.as_bytes(),
        b"\n",
        MESSAGE,
    ]
    .concat()
}

#[test]
fn maildir_default_delivery() {
    let inst = Instance::new("local-maildir");
    let out = Local::test(&inst).run(MESSAGE);
    assert_exit(&out, 0, "did 1+0+0");
    let md = inst.home().join("mail/test/Maildir");
    assert_eq!(maildir(&md), vec![delivered("test@example.org")]);
    assert_eq!(std::fs::read_dir(md.join("tmp")).unwrap().count(), 0);
}

/// A user without a Maildir: the default delivery makes it (0700, the
/// user's) instead of deferring forever; an explicit `.qmail` line stays
/// strict (a missing Maildir there is a typo to be told about).
#[test]
fn missing_maildir_is_made_by_the_default_delivery_only() {
    let inst = Instance::new("local-nomaildir");
    let md = inst.home().join("mail/test/Maildir");
    std::fs::remove_dir_all(&md).unwrap();
    write(&inst.home().join("mail/test/.qmail"), "./Maildir/\n");
    let out = Local::test(&inst).run(MESSAGE);
    assert_exit(&out, 111, "maildir");
    assert!(!md.exists(), "an explicit line creates nothing");
    std::fs::remove_file(inst.home().join("mail/test/.qmail")).unwrap();
    let out = Local::test(&inst).run(MESSAGE);
    assert_exit(&out, 0, "did 1+0+0");
    assert_eq!(maildir(&md), vec![delivered("test@example.org")]);
    for d in ["", "tmp", "new", "cur"] {
        let m = std::fs::metadata(md.join(d)).unwrap();
        assert!(m.is_dir());
        assert_eq!(m.permissions().mode() & 0o777, 0o700, "{d}");
    }
}

#[test]
fn mbox_delivery() {
    let inst = Instance::new("local-mbox");
    let home = inst.home().join("mail/test");
    write(&home.join(".qmail"), "./mbox\n");
    assert_exit(&Local::test(&inst).run(MESSAGE), 0, "did 1+0+0");
    assert_exit(&Local::test(&inst).run(b"second\n"), 0, "did 1+0+0");
    let text = std::fs::read(home.join("mbox")).unwrap();
    let entries: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"From "))
        .collect();
    assert_eq!(entries.len(), 2, "two From lines: {}", text.escape_ascii());
    assert!(entries[0].starts_with(b"From ann@example.com "));
    let first_end = text.iter().position(|&b| b == b'\n').unwrap() + 1;
    let want = [
        &b"Return-Path: <ann@example.com>\nDelivered-To: test@example.org\n"[..],
        b"From: ann@example.com\nTo: test@example.org\nSubject: hello\n\n",
        b">From the body\n>>From quoted\n\xfe8-bit\r\nlast line\n\n",
        b"From ",
    ]
    .concat();
    assert_eq!(
        text[first_end..first_end + want.len()]
            .escape_ascii()
            .to_string(),
        want.escape_ascii().to_string()
    );
    assert!(text.ends_with(b"\nsecond\n\n"));
}

#[test]
fn mbox_dot_lock_holder_delays_then_fails_temporarily() {
    let inst = Instance::new("local-mbox-dotlock");
    let home = inst.home().join("mail/test");
    write(&home.join(".qmail"), "./mbox\n");
    let lock = home.join("mbox.lock");
    write(&lock, "");
    let mut run = Local::test(&inst);
    run.env.push(("TERN_LOCAL_LOCK_WAIT", "1".into()));
    let t = Instant::now();
    let out = run.run(MESSAGE);
    assert!(t.elapsed() >= Duration::from_secs(1));
    assert_exit(&out, 111, "locked");
    assert!(!home.join("mbox").exists() || std::fs::read(home.join("mbox")).unwrap().is_empty());
    // Released while tern-local waits: delivered.
    run.env = vec![("TERN_LOCAL_LOCK_WAIT", "20".into())];
    let child = run.spawn(MESSAGE);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::remove_file(&lock).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 0, "did 1+0+0");
}

#[test]
fn mbox_fcntl_lock_holder_delays_then_fails_temporarily() {
    if !have_tool("python3") {
        skip(
            "mbox_fcntl_lock_holder_delays_then_fails_temporarily",
            "python3 not found (it holds the fcntl lock)",
        );
        return;
    }
    let inst = Instance::new("local-mbox-fcntl");
    let home = inst.home().join("mail/test");
    write(&home.join(".qmail"), "./mbox\n");
    let mbox = home.join("mbox");
    write(&mbox, "");
    // A reader holding the fcntl lock for 3 seconds.
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg(
            "import fcntl,sys,time\nf=open(sys.argv[1],'r+')\nfcntl.lockf(f,fcntl.LOCK_EX)\n\
             print('locked',flush=True)\ntime.sleep(3)\n",
        )
        .arg(&mbox)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "locked\n");
    let mut run = Local::test(&inst);
    run.env.push(("TERN_LOCAL_LOCK_WAIT", "1".into()));
    let out = run.run(MESSAGE);
    assert_exit(&out, 111, "locked for 1 seconds");
    assert_eq!(std::fs::read(&mbox).unwrap(), b"", "nothing written");
    assert!(!home.join("mbox.lock").exists(), "dot-lock removed");
    // With a longer wait, delivery goes through once the reader is done.
    run.env = vec![("TERN_LOCAL_LOCK_WAIT", "20".into())];
    let out = run.run(MESSAGE);
    assert_exit(&out, 0, "did 1+0+0");
    holder.wait().unwrap();
    assert!(
        std::fs::read(&mbox)
            .unwrap()
            .starts_with(b"From ann@example.com ")
    );
}

#[test]
fn program_delivery() {
    let inst = Instance::new("local-program");
    let home = inst.home().join("mail/test");
    let mut script = String::from("{\n");
    for v in [
        "SENDER",
        "NEWSENDER",
        "RECIPIENT",
        "USER",
        "HOME",
        "HOST",
        "HOST2",
        "LOCAL",
        "EXT",
        "EXT2",
        "DEFAULT",
        "DTLINE",
        "RPLINE",
        "TERN_HOME",
    ] {
        script.push_str(&format!("printf '%s=[%s]\\n' {v} \"${v}\"\n"));
    }
    script.push_str("} > env.out\ncat > msg.out\necho program ran\n");
    write(&home.join("show-env"), &script);
    write(&home.join(".qmail-prog-default"), "|sh ./show-env\n");
    let out = Local::ext(&inst, "prog-x").run(MESSAGE);
    assert_exit(&out, 0, "program ran\ndid 0+0+1");
    let env = std::fs::read_to_string(home.join("env.out")).unwrap();
    for want in [
        "SENDER=[ann@example.com]".to_string(),
        "NEWSENDER=[ann@example.com]".to_string(),
        "RECIPIENT=[test-prog-x@example.org]".to_string(),
        "USER=[test]".to_string(),
        format!("HOME=[{}]", home.display()),
        "HOST=[example.org]".to_string(),
        "HOST2=[example]".to_string(),
        "LOCAL=[test-prog-x]".to_string(),
        "EXT=[prog-x]".to_string(),
        "EXT2=[x]".to_string(),
        "DEFAULT=[x]".to_string(),
        "DTLINE=[Delivered-To: test-prog-x@example.org\n]".to_string(),
        "RPLINE=[Return-Path: <ann@example.com>\n]".to_string(),
        format!("TERN_HOME=[{}]", inst.home().display()),
    ] {
        assert!(env.contains(&want), "{want:?} not in:\n{env}");
    }
    // The program reads exactly the message: no padding, no added lines.
    assert_eq!(std::fs::read(home.join("msg.out")).unwrap(), MESSAGE);

    let cases = [
        ("|echo no such user; exit 100\n", 100, "no such user"),
        ("|exit 111\n", 111, "program exited 111"),
        ("|exit 64\n", 100, "program exited 64"),
        ("|kill -9 $$\n", 111, "signal 9"),
        ("|exit 99\n./Maildir/\n", 99, "did 0+0+1"),
    ];
    for (qmail, want, text) in cases {
        write(&home.join(".qmail-prog-default"), qmail);
        let out = Local::ext(&inst, "prog-x").run(MESSAGE);
        assert_exit(&out, want, text);
    }
    assert!(
        maildir(&home.join("Maildir")).is_empty(),
        "the line after exit 99 was skipped"
    );
}

#[test]
fn forward_through_the_queue() {
    let inst = Instance::new("local-forward");
    let home = inst.home().join("mail/test");
    write(
        &home.join(".qmail-fw"),
        "&one@example.net\n./Maildir/\ntwo@example.net\n",
    );
    write(&home.join(".qmail-fw-owner"), "&boss@example.net\n");
    let out = Local::ext(&inst, "fw").run(MESSAGE);
    assert_exit(&out, 0, "did 1+2+0");
    let q = inst.queue();
    let list = q.list().unwrap();
    assert_eq!(list.len(), 1, "one forwarded copy");
    let m = &list[0];
    assert_eq!(m.sender, b"test-fw-owner@example.org");
    let rcpts: Vec<&[u8]> = m.recipients.iter().map(|r| r.address.as_slice()).collect();
    assert_eq!(rcpts, [&b"one@example.net"[..], b"two@example.net"]);
    let stored = q.read_message(m.id).unwrap();
    let (_, rest) = strip_received(&stored);
    assert_eq!(
        rest,
        [&b"Delivered-To: test-fw@example.org\n"[..], MESSAGE].concat()
    );
    assert_eq!(
        maildir(&home.join("Maildir")),
        vec![delivered("test-fw@example.org")]
    );
}

#[test]
fn extension_addresses_and_default() {
    let inst = Instance::new("local-ext");
    let home = inst.home().join("mail/test");
    // No file for an extension: permanent.
    let out = Local::ext(&inst, "nothing").run(MESSAGE);
    assert_exit(&out, 100, "Sorry, no mailbox here by that name. (#5.1.1)");
    write(&home.join(".qmail-list"), "./Maildir/\n");
    write(&home.join(".qmail-list-default"), "# dropped\n");
    write(&home.join(".qmail-default"), "./Maildir/\n");
    assert_exit(&Local::ext(&inst, "list").run(MESSAGE), 0, "did 1+0+0");
    assert_exit(
        &Local::ext(&inst, "List-Bounce").run(MESSAGE),
        0,
        "did 0+0+0",
    );
    assert_exit(
        &Local::ext(&inst, "Other-Thing").run(MESSAGE),
        0,
        "did 1+0+0",
    );
    assert_eq!(
        maildir(&home.join("Maildir"))
            .iter()
            .filter(|m| m.starts_with(b"Return-Path: <ann@example.com>\nDelivered-To: test-"))
            .count(),
        2
    );
}

#[test]
fn alias_user_layout() {
    let inst = Instance::with_mailboxes("local-alias", &["test"]);
    let alias = inst.home().join("alias");
    write(
        &alias.join(".qmail-postmaster"),
        "../mail/postmaster/Maildir/\n",
    );
    let run = Local {
        home: alias.clone(),
        local: "postmaster".into(),
        dash: "-",
        ext: "postmaster".into(),
        ..Local::test(&inst)
    };
    assert_exit(&run.run(MESSAGE), 0, "did 1+0+0");
    let pm = inst.home().join("mail/postmaster/Maildir");
    assert_eq!(maildir(&pm), vec![delivered("postmaster@example.org")]);
    // An address nobody handles.
    let nobody = Local {
        local: "nobody".into(),
        ext: "nobody".into(),
        ..run
    };
    assert_exit(&nobody.run(MESSAGE), 100, "no mailbox");
}

#[test]
fn loop_is_bounced() {
    let inst = Instance::new("local-loop");
    let looping = [
        &b"Received: from x\nDelivered-To: test@example.org\n"[..],
        MESSAGE,
    ]
    .concat();
    let out = Local::test(&inst).run(&looping);
    assert_exit(
        &out,
        100,
        "This message is looping: it already has my Delivered-To line. (#5.4.6)",
    );
    assert!(maildir(&inst.home().join("mail/test/Maildir")).is_empty());
}

#[test]
fn usage_and_bad_files_are_temporary() {
    let inst = Instance::new("local-usage");
    let out = Command::new(bin("tern-local"))
        .env_clear()
        .arg("--")
        .arg("only-one")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_exit(&out, 111, "usage");
    let home = inst.home().join("mail/test");
    write(&home.join(".qmail"), "\n./Maildir/\n");
    assert_exit(&Local::test(&inst).run(MESSAGE), 111, "first line is blank");
    write(&home.join(".qmail"), "./Maildir/\n");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_exit(
        &Local::test(&inst).run(MESSAGE),
        111,
        "home directory is writable",
    );
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(home.join(".qmail"), std::fs::Permissions::from_mode(0o744)).unwrap();
    assert_exit(&Local::test(&inst).run(MESSAGE), 111, "owner-execute");
    assert!(maildir(&home.join("Maildir")).is_empty());
}

/// A user's `.qmail-fifo` that is a FIFO (or an mbox that is one): tern-local
/// defers at once (111, "not a regular file"), it does not hang in open().
/// The channel timeout only turns the old hang into a failure.
#[test]
fn fifo_dot_qmail_or_mbox_defers_without_hanging() {
    let inst = Instance::new("local-fifo");
    let home = inst.home().join("mail/test");
    for f in [".qmail-fifo", "fifo-mbox"] {
        let st = Command::new("mkfifo")
            .args(["-m", "0644"])
            .arg(home.join(f))
            .status()
            .unwrap();
        assert!(st.success());
    }
    write(&home.join(".qmail-mbox"), "./fifo-mbox\n");
    for (ext, want) in [("fifo", "not a regular file"), ("mbox", "Unable to open")] {
        let mut child = Local::ext(&inst, ext).spawn(MESSAGE);
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut { stdout }, &mut s);
            let _ = tx.send(s);
        });
        let Ok(said) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tern-local hung on a FIFO ({ext})");
        };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(111), "{ext}: {said}");
        assert!(said.contains(want), "{ext}: {said}");
    }
    assert!(maildir(&home.join("Maildir")).is_empty());
}

#[test]
fn man_page_lists_the_exit_codes() {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/man/tern-local.8.md");
    let text = std::fs::read_to_string(&page).unwrap();
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("EXIT CODES"))
        .expect("an EXIT CODES section");
    let codes: Vec<u32> = section
        .lines()
        .filter_map(|l| l.trim().strip_prefix('|'))
        .filter_map(|row| row.split('|').next()?.trim().parse().ok())
        .collect();
    assert_eq!(codes, [0, 99, 100, 111]);
}

/// A qmail tool in a `.qmail` file (condredirect, forward, ezmlm): found on
/// `control/programpath`, it queues through `$QMAILQUEUE`, which is Tern's
/// tern-queue: the message lands in Tern's queue. And a `+list` line is a
/// flag, never a forward to `+list@...`.
#[test]
fn qmail_tools_find_their_path_and_queue_into_tern() {
    let inst = Instance::new("local-qmailtools");
    let home = inst.home().join("mail/test");
    // A stand-in for qmail's bin directory with a tool that queues the way
    // notqmail's forward(1) does: message on fd 0, envelope on fd 1, into
    // ${QMAILQUEUE:-/var/qmail/bin/qmail-queue}.
    let qbin = inst.scratch().join("qmail-bin");
    std::fs::create_dir_all(&qbin).unwrap();
    let tool = qbin.join("fake-forward");
    std::fs::write(
        &tool,
        "#!/bin/sh\n\
         printf 'F%s\\000T%s\\000\\000' \"$NEWSENDER\" \"$1\" > env.tmp\n\
         exec \"${QMAILQUEUE:-/var/qmail/bin/qmail-queue}\" 1<env.tmp\n",
    )
    .unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        inst.home().join("control/programpath"),
        format!("{}:/usr/local/bin:/usr/bin:/bin\n", qbin.display()),
    )
    .unwrap();
    write(
        &home.join(".qmail-list"),
        "+list\n|fake-forward elsewhere@example.net\n",
    );
    let out = Local::ext(&inst, "list").run(MESSAGE);
    // The program line after +list is refused: forwards only.
    assert_eq!(out.status.code(), Some(111), "{out:?}");
    write(
        &home.join(".qmail-list"),
        "|fake-forward elsewhere@example.net\n+list\n",
    );
    let out = Local::ext(&inst, "list").run(MESSAGE);
    assert_exit(&out, 0, "did 0+0+1");
    let q = inst.queue();
    let queued = q.list().expect("list queue");
    assert_eq!(queued.len(), 1, "one message queued by the tool, into Tern");
    let rcpts: Vec<&[u8]> = queued[0]
        .recipients
        .iter()
        .map(|r| r.address.as_slice())
        .collect();
    assert_eq!(
        rcpts,
        [b"elsewhere@example.net".as_slice()],
        "no +list@ forward"
    );
}
