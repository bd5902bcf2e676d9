//! `tern-lspawn` over pipes, with a fake `tern-local` (a shell script that
//! records its argv, environment and stdin, and ends as its recipient's
//! local part says), so these tests do not depend on the real tern-local.
//!
//! Local parts understood by the fake: `exitN` (prints a line, exits N),
//! `crash` (kills itself with SIGSEGV), `sleep` (a background `sleep 30`
//! whose pid it records, then waits), `slowN` (sleeps N seconds, exits 0),
//! `noisy` (80 KB of output, exits 111); anything else prints `did 0+0+0`
//! and exits 0. Records go to `<scratch>/record/<local>.{argv,env,stdin}`.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tern_ipc::{Deliver, Hello, Outcome, Report};
use tern_spool::Stage;
use tern_tests::{Instance, bin_dir, envelope};

const SENDER: &str = "sender@example.com";
const WAIT: Duration = Duration::from_secs(20);

const FAKE_LOCAL: &str = r#"#!/bin/sh
rec='@REC@'
printf '%s\0' "$@" > "$rec/$4.argv"
cat /proc/$$/environ > "$rec/$4.env"
cat > "$rec/$4.stdin"
case "$4" in
  exit*) echo "  told to exit ${4#exit}  "; exit "${4#exit}" ;;
  crash) kill -SEGV $$ ;;
  sleep) sleep 30 & echo $! > "$rec/sleep.pid"; wait; exit 0 ;;
  slow*) sleep "${4#slow}"; echo "slept ${4#slow}"; exit 0 ;;
  noisy) i=0; while [ $i -lt 2000 ]; do echo 0123456789012345678901234567890123456789; i=$((i+1)); done; exit 111 ;;
  *) echo "did 0+0+0"; exit 0 ;;
esac
"#;

/// An instance whose `bin/` is a real directory: symlinks to the built
/// programs, except `tern-local`, which is the fake.
struct Setup {
    inst: Instance,
    record: PathBuf,
    id: u64,
    offset: u64,
}

fn setup(name: &str) -> Setup {
    let inst = Instance::new(name);
    let home = inst.home().to_path_buf();
    let marker = home.join("single-user");
    if !marker.exists() {
        fs::write(&marker, b"").unwrap();
    }
    let bin = home.join("bin");
    fs::remove_file(&bin).expect("bin/ is a symlink after ternctl init");
    fs::create_dir(&bin).unwrap();
    for ent in fs::read_dir(bin_dir()).unwrap() {
        let ent = ent.unwrap();
        let meta = ent.metadata().unwrap();
        if meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
            && ent.file_name() != "tern-local"
        {
            std::os::unix::fs::symlink(ent.path(), bin.join(ent.file_name())).unwrap();
        }
    }
    let record = inst.scratch().join("record");
    fs::create_dir_all(&record).unwrap();
    let script = FAKE_LOCAL.replace("@REC@", record.to_str().unwrap());
    let fake = bin.join("tern-local");
    fs::write(&fake, script).unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();

    // One real message, moved to queue/cur as tern-clean would.
    let message = b"From: a@example.com\nSubject: lspawn\n\nbody \xe9 8-bit\nno final newline";
    let before: Vec<u64> = inst.queue().list().unwrap().iter().map(|m| m.id).collect();
    let r = inst.inject_raw(message, &envelope(SENDER, &["test@localhost"]));
    assert_eq!(r.code(), 0, "tern-queue: {}", r.stderr);
    let id = inst
        .queue()
        .list()
        .unwrap()
        .iter()
        .map(|m| m.id)
        .find(|id| !before.contains(id))
        .expect("the new message");
    let q = inst.queue();
    let cur = q.path(id, Stage::Active);
    fs::rename(q.path(id, Stage::New), &cur).unwrap();
    let offset = q.open_message(id).unwrap().header.offset;
    Setup {
        inst,
        record,
        id,
        offset,
    }
}

impl Setup {
    fn deliver(&self, slot: u32, rcpt: &str) -> Deliver {
        Deliver {
            slot,
            id: self.id,
            offset: self.offset,
            sender: SENDER.as_bytes().to_vec(),
            recipient: rcpt.as_bytes().to_vec(),
        }
    }

    fn argv(&self, local: &str) -> Vec<String> {
        let raw = fs::read(self.record.join(format!("{local}.argv"))).unwrap();
        let mut v: Vec<String> = raw
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        assert_eq!(v.pop().as_deref(), Some(""), "NUL-terminated args");
        v
    }

    fn assign_user(&self) -> String {
        let text = fs::read_to_string(self.inst.home().join("users/assign")).unwrap();
        let line = text.lines().find(|l| l.starts_with("=test:")).unwrap();
        line.split(':').nth(1).unwrap().to_string()
    }

    fn add_assign(&self, line: &str) {
        let p = self.inst.home().join("users/assign");
        let text = fs::read_to_string(&p).unwrap();
        let at = text.rfind("\n.\n").map(|i| i + 1).unwrap_or(0);
        fs::write(&p, format!("{}{line}\n{}", &text[..at], &text[at..])).unwrap();
    }

    fn spawn(&self) -> Lspawn {
        let log = self.inst.scratch().join("lspawn.log");
        let mut child = self
            .inst
            .command("tern-lspawn")
            // These tests check the interface of a tern-local per
            // delivery (argv, environment, fd 0) with a fake one; the
            // workers are tested in local_workers.rs.
            .env("TERN_LOCAL_WORKERS", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn tern-lspawn");
        let mut out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            while let Ok(f) = tern_ipc::read_frame(&mut out) {
                if tx.send(f).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let l = Lspawn {
            child,
            stdin,
            rx,
            log,
        };
        let hello = l.rx.recv_timeout(WAIT).expect("Hello frame");
        assert_eq!(
            Hello::decode(&hello).unwrap(),
            Hello {
                max_concurrency: 256
            }
        );
        l
    }
}

struct Lspawn {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: mpsc::Receiver<Vec<u8>>,
    log: PathBuf,
}

impl Lspawn {
    fn send(&mut self, d: &Deliver) {
        self.send_raw(&d.encode());
    }

    fn send_raw(&mut self, payload: &[u8]) {
        tern_ipc::write_frame(self.stdin.as_mut().unwrap(), payload).unwrap();
    }

    fn report(&self) -> Report {
        let f = self.rx.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!("no report; log:\n{}", self.log_text());
        });
        Report::decode(&f).unwrap()
    }

    fn reports(&self, n: usize) -> HashMap<u32, Report> {
        (0..n).map(|_| self.report()).map(|r| (r.slot, r)).collect()
    }

    fn close(&mut self) {
        self.stdin = None;
    }

    fn wait(&mut self) -> ExitStatus {
        self.close();
        let end = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("tern-lspawn did not exit; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Lspawn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(r: &Report) -> String {
    String::from_utf8_lossy(&r.text).into_owned()
}

#[test]
fn exit_codes_map_to_outcomes() {
    let s = setup("lspawn-exit");
    let mut l = s.spawn();
    let cases: &[(&str, Outcome, &str)] = &[
        ("exit0", Outcome::Delivered, "told to exit 0"),
        ("exit99", Outcome::Delivered, "told to exit 99"),
        ("exit100", Outcome::Failed, "told to exit 100"),
        ("exit111", Outcome::Deferred, "told to exit 111"),
        (
            "exit7",
            Outcome::Deferred,
            "tern-local exited 7: told to exit 7",
        ),
        ("crash", Outcome::Deferred, "tern-local crashed (signal 11)"),
    ];
    for (slot, (local, _, _)) in cases.iter().enumerate() {
        l.send(&s.deliver(slot as u32, &format!("{local}@localhost")));
    }
    let got = l.reports(cases.len());
    for (slot, (local, outcome, want)) in cases.iter().enumerate() {
        let r = &got[&(slot as u32)];
        assert_eq!(r.outcome, *outcome, "{local}: {}", text(r));
        assert_eq!(text(r), *want, "{local}");
    }
    // A chatty tern-local: the text is bounded and says it was cut.
    l.send(&s.deliver(9, "noisy@localhost"));
    let r = l.report();
    assert_eq!(r.outcome, Outcome::Deferred);
    assert!(r.text.len() <= tern_ipc::MAX_TEXT);
    assert!(text(&r).ends_with("[output cut: too long]"), "{}", text(&r));
    assert!(l.wait().success());
    let log = l.log_text();
    assert!(log.contains("event=delivery_start"), "{log}");
    assert!(log.contains("event=delivery_end"), "{log}");
    assert!(log.contains("status=failed"), "{log}");
}

#[test]
fn argv_env_and_stdin_of_tern_local() {
    let s = setup("lspawn-argv");
    let home = s.inst.home().to_path_buf();
    // `ternctl init` maps `test-*` (wildcard `+test-:...:-::`) to the test
    // mailbox, so extension addresses need no extra users/assign line.
    assert!(
        std::fs::read_to_string(home.join("users/assign"))
            .unwrap()
            .contains("+test-:")
    );
    let mut l = s.spawn();
    l.send(&s.deliver(1, "test@localhost"));
    l.send(&s.deliver(2, "test-Foo@localhost"));
    l.send(&s.deliver(3, "nobody@localhost"));
    l.send(&s.deliver(4, "we@ird@LocalHost"));
    let mut bounce = s.deliver(5, "bounce@localhost");
    bounce.sender.clear();
    l.send(&bounce);
    let got = l.reports(5);
    for r in got.values() {
        assert_eq!(r.outcome, Outcome::Delivered, "{}", text(r));
        assert_eq!(text(r), "did 0+0+0");
    }
    let user = s.assign_user();
    let alias_user = tern_sys::user_name(tern_sys::effective_uid())
        .unwrap_or(tern_sys::effective_uid().to_string());
    let mailbox = home.join("mail/test").display().to_string();
    let alias = home.join("alias").display().to_string();
    let argv = |v: [&str; 8]| {
        let mut a = vec!["--".to_string()];
        a.extend(v.iter().map(|s| s.to_string()));
        a
    };
    assert_eq!(
        s.argv("test"),
        argv([
            &user,
            &mailbox,
            "test",
            "",
            "",
            "localhost",
            SENDER,
            "./Maildir/"
        ])
    );
    assert_eq!(
        s.argv("test-Foo"),
        argv([
            &user,
            &mailbox,
            "test-Foo",
            "-",
            "Foo",
            "localhost",
            SENDER,
            "./Maildir/"
        ])
    );
    assert_eq!(
        s.argv("nobody"),
        argv([
            &alias_user,
            &alias,
            "nobody",
            "-",
            "nobody",
            "localhost",
            SENDER,
            "./Maildir/"
        ])
    );
    assert_eq!(
        s.argv("we@ird"),
        argv([
            &alias_user,
            &alias,
            "we@ird",
            "-",
            "we@ird",
            "LocalHost",
            SENDER,
            "./Maildir/"
        ])
    );
    assert_eq!(
        s.argv("bounce"),
        argv([
            &alias_user,
            &alias,
            "bounce",
            "-",
            "bounce",
            "localhost",
            "",
            "./Maildir/"
        ])
    );
    // stdin: exactly the message, from its offset to the end
    let message = s.inst.queue().read_message(s.id).unwrap();
    for local in ["test", "test-Foo", "nobody"] {
        assert_eq!(
            fs::read(s.record.join(format!("{local}.stdin"))).unwrap(),
            message,
            "{local}"
        );
    }
    // env: TERN_HOME and PATH only
    let env = fs::read(s.record.join("test.env")).unwrap();
    let mut vars: Vec<String> = env
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    vars.sort();
    assert_eq!(
        vars,
        vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".to_string(),
            format!("TERN_HOME={}", home.display()),
        ]
    );
    assert!(l.wait().success());
}

#[test]
fn refusals_before_any_child_runs() {
    let s = setup("lspawn-refuse");
    let other_uid = tern_sys::effective_uid().wrapping_add(4242);
    s.add_assign(&format!(
        "=other:other:{other_uid}:{other_uid}:/nonexistent:::"
    ));
    let q = s.inst.queue();
    let layout = q.layout();
    // a symlink in queue/cur where a message should be
    let link_id = s.id + 1_000_003;
    let cur_dir = q.dir().join(layout.cur_dir(link_id));
    std::os::unix::fs::symlink(
        q.path(s.id, Stage::Active),
        cur_dir.join(link_id.to_string()),
    )
    .unwrap();
    // a FIFO there (opening it for reading would block for ever)
    let fifo_id = s.id + 3_000_003;
    rustix::fs::mknodat(
        rustix::fs::CWD,
        q.dir()
            .join(layout.cur_dir(fifo_id))
            .join(fifo_id.to_string()),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let mut l = s.spawn();
    l.send(&s.deliver(1, "nohost"));
    l.send(&s.deliver(2, "@localhost"));
    l.send(&s.deliver(3, "other@localhost"));
    let mut missing = s.deliver(4, "test@localhost");
    missing.id = s.id + 2_000_003;
    l.send(&missing);
    let mut link = s.deliver(5, "test@localhost");
    link.id = link_id;
    l.send(&link);
    let mut far = s.deliver(6, "test@localhost");
    far.offset = 1 << 40;
    l.send(&far);
    let mut fifo = s.deliver(7, "test@localhost");
    fifo.id = fifo_id;
    l.send(&fifo);
    let got = l.reports(7);
    let want: &[(u32, Outcome, &str)] = &[
        (
            1,
            Outcome::Failed,
            "Sorry, address must include host name. (#5.1.3)",
        ),
        (2, Outcome::Delivered, "trashed empty local part"),
        (
            3,
            Outcome::Deferred,
            // The detail (the uid) is in the log line, not the report.
            "Mailbox temporarily unavailable: local configuration error. (#4.3.0)",
        ),
        (4, Outcome::Deferred, "is not in queue/cur (#4.3.0)"),
        (
            5,
            Outcome::Failed,
            "queue file is not a regular file (#5.3.5)",
        ),
        (
            6,
            Outcome::Failed,
            "beyond the end of the queue file (#5.3.5)",
        ),
        (
            7,
            Outcome::Failed,
            "queue file is not a regular file (#5.3.5)",
        ),
    ];
    for (slot, outcome, end) in want {
        let r = &got[slot];
        assert_eq!(r.outcome, *outcome, "slot {slot}: {}", text(r));
        assert!(text(r).ends_with(end), "slot {slot}: {}", text(r));
    }
    assert!(
        fs::read_dir(&s.record).unwrap().next().is_none(),
        "no child ran"
    );
    assert!(l.wait().success());
}

/// The queue's uid can replace a split directory `cur/N` with a link to
/// a directory elsewhere holding a file under the message's name: root's
/// tern-lspawn must not open it through the link (it walked the path
/// with O_NOFOLLOW on the last component only).
#[test]
fn a_linked_split_directory_is_not_followed() {
    let s = setup("lspawn-linkdir");
    let q = s.inst.queue();
    let cur = q.dir().join(q.layout().cur_dir(s.id));
    let outside = s.inst.scratch().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::rename(q.path(s.id, Stage::Active), outside.join(s.id.to_string())).unwrap();
    fs::rename(&cur, s.inst.scratch().join("cur-real")).unwrap();
    std::os::unix::fs::symlink(&outside, &cur).unwrap();
    let mut l = s.spawn();
    l.send(&s.deliver(1, "test@localhost"));
    let r = l.report();
    assert_eq!(r.outcome, Outcome::Failed, "{}", text(&r));
    assert_eq!(text(&r), "queue file is not a regular file (#5.3.5)");
    assert!(
        fs::read_dir(&s.record).unwrap().next().is_none(),
        "tern-local ran on a file outside the queue"
    );
    assert!(l.wait().success());
}

#[test]
fn wrong_owner_is_refused() {
    if !tern_tests::is_root() {
        tern_tests::skip("wrong_owner_is_refused", "needs root to chown a queue file");
        return;
    }
    let s = setup("lspawn-owner");
    let q = s.inst.queue();
    let fake_id = s.id + 1_000_003;
    let fake = q
        .dir()
        .join(q.layout().cur_dir(fake_id))
        .join(fake_id.to_string());
    fs::copy(q.path(s.id, Stage::Active), &fake).unwrap();
    std::os::unix::fs::chown(&fake, Some(4242), None).unwrap();
    let mut l = s.spawn();
    let mut d = s.deliver(1, "test@localhost");
    d.id = fake_id;
    l.send(&d);
    let r = l.report();
    assert_eq!(r.outcome, Outcome::Failed);
    assert_eq!(text(&r), "queue file has wrong owner (#5.3.5)");
    assert!(l.wait().success());
}

#[test]
fn timeout_kills_the_process_group() {
    let s = setup("lspawn-timeout");
    fs::write(s.inst.home().join("control/timeoutlocal"), "1\n").unwrap();
    let mut l = s.spawn();
    let t0 = Instant::now();
    l.send(&s.deliver(1, "sleep@localhost"));
    let r = l.report();
    let took = t0.elapsed();
    assert_eq!(r.outcome, Outcome::Deferred);
    assert_eq!(text(&r), "delivery timed out after 1 seconds (#4.3.0)");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    // the background sleep (same process group) is gone too
    let pid = fs::read_to_string(s.record.join("sleep.pid")).unwrap();
    let stat = format!("/proc/{}/stat", pid.trim());
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::read_to_string(&stat) {
            Err(_) => break,
            Ok(st) if st.rsplit(')').next().unwrap().trim_start().starts_with('Z') => break,
            Ok(_) if Instant::now() > end => panic!("sleep {pid} survived the timeout"),
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    assert!(l.wait().success());
    assert!(l.log_text().contains("event=delivery_timeout"));
}

#[test]
fn concurrent_deliveries_report_in_completion_order() {
    let s = setup("lspawn-order");
    let mut l = s.spawn();
    let t0 = Instant::now();
    l.send(&s.deliver(1, "slow2@localhost"));
    l.send(&s.deliver(2, "slow1@localhost"));
    l.send(&s.deliver(3, "exit0@localhost"));
    let order: Vec<u32> = (0..3).map(|_| l.report().slot).collect();
    assert_eq!(order, vec![3, 2, 1]);
    assert!(
        t0.elapsed() < Duration::from_millis(2900),
        "{:?}",
        t0.elapsed()
    );
    assert!(l.wait().success());
}

#[test]
fn end_of_input_finishes_running_deliveries() {
    let s = setup("lspawn-eof");
    let mut l = s.spawn();
    l.send(&s.deliver(7, "slow1@localhost"));
    l.close();
    let r = l.report();
    assert_eq!((r.slot, r.outcome), (7, Outcome::Delivered));
    assert_eq!(text(&r), "slept 1");
    let status = l.wait();
    assert_eq!(status.code(), Some(0), "{}", l.log_text());
}

#[test]
fn malformed_requests_exit_111() {
    let s = setup("lspawn-bad");
    // (what is written after Hello, why)
    let oversized = ((tern_ipc::MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(b"short");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            frame(&Hello { max_concurrency: 1 }.encode()),
            "a Hello is no request",
        ),
        (frame(b"\x01Dxx"), "truncated Deliver payload"),
        (frame(b"\x09D"), "wrong version"),
        (oversized, "frame too large"),
        (truncated, "input ends inside a frame"),
    ];
    for (bytes, why) in cases {
        let mut l = s.spawn();
        l.stdin.as_mut().unwrap().write_all(&bytes).unwrap();
        let status = l.wait();
        assert_eq!(status.code(), Some(111), "{why}: {}", l.log_text());
        assert!(l.log_text().contains("event=protocol_error"), "{why}");
    }
    // a slot given twice while running
    let mut l = s.spawn();
    l.send(&s.deliver(1, "slow1@localhost"));
    l.send(&s.deliver(1, "exit0@localhost"));
    // the running delivery is still finished and reported
    let r = l.report();
    assert_eq!((r.slot, r.outcome), (1, Outcome::Delivered));
    assert_eq!(l.wait().code(), Some(111));
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    tern_ipc::write_frame(&mut v, payload).unwrap();
    v
}

#[test]
fn help_and_bad_arguments() {
    let s = setup("lspawn-help");
    let out = s
        .inst
        .command("tern-lspawn")
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: tern-lspawn"));
    assert!(out.stdout.is_empty(), "fd 1 is the protocol");
    let out = s.inst.command("tern-lspawn").arg("-x").output().unwrap();
    assert_eq!(out.status.code(), Some(100));
    // without the marker, a non-root tern-lspawn refuses to start
    if !tern_tests::is_root() {
        fs::remove_file(s.inst.home().join("single-user")).unwrap();
        let out = s
            .inst
            .command("tern-lspawn")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(111));
        assert!(String::from_utf8_lossy(&out.stderr).contains("needs tern-lspawn to run as root"));
    }
}

#[test]
fn system_instance_switches_uid_and_refuses_root() {
    if !tern_tests::is_root() {
        tern_tests::skip(
            "system_instance_switches_uid_and_refuses_root",
            "needs root to run a system instance",
        );
        return;
    }
    let s = setup("lspawn-system");
    // A system instance: no marker. The `test` mailbox belongs to root.
    fs::remove_file(s.inst.home().join("single-user")).unwrap();
    let mailbox = s.inst.scratch().join("u4242");
    fs::create_dir(&mailbox).unwrap();
    std::os::unix::fs::chown(&mailbox, Some(4242), Some(4243)).unwrap();
    s.add_assign(&format!("=u4242:u4242:4242:4243:{}:::", mailbox.display()));
    // Outside localuidmin..localuidmax (1000..60000 by default), and gid 0.
    s.add_assign(&format!("=u77:u77:77:77:{}:::", mailbox.display()));
    s.add_assign(&format!(
        "=u65534:u65534:65534:65534:{}:::",
        mailbox.display()
    ));
    s.add_assign(&format!("=g0:g0:4242:0:{}:::", mailbox.display()));
    fs::set_permissions(&s.record, fs::Permissions::from_mode(0o777)).unwrap();
    let mut l = s.spawn();
    // The report (which becomes the bounce) says only that the mailbox is
    // unavailable: no uid or gid number, no control file name (the detail
    // is in the log line).
    let unavailable = "Sorry, this mailbox is unavailable. (#5.2.1)";
    for (slot, rcpt, uid) in [
        (3, "u77@localhost", "77"),
        (4, "u65534@localhost", "65534"),
        (5, "g0@localhost", "gid 0"),
        (1, "test@localhost", "root"),
    ] {
        l.send(&s.deliver(slot, rcpt));
        let r = l.report();
        assert_eq!(r.outcome, Outcome::Failed, "{rcpt}: {}", text(&r));
        assert_eq!(text(&r), unavailable, "{rcpt}");
        assert!(!text(&r).contains(uid), "{rcpt}: {}", text(&r));
        assert!(!text(&r).contains("control"), "{rcpt}: {}", text(&r));
    }
    l.send(&s.deliver(2, "u4242@localhost"));
    let r = l.report();
    assert_eq!(r.outcome, Outcome::Delivered, "{}", text(&r));
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(s.record.join("u4242.argv")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4242, 4243), "ran as the owner");
    assert!(l.wait().success());
}
