//! Root's terminal is out of reach of every lower-uid process (root only;
//! CI runs as root; elsewhere the test says SKIP).
//!
//! A system instance is installed with a real recipient whose `~/.qmail`
//! runs `tests/suite/tty/probe.py`: it tries `open("/dev/tty")` and
//! `TIOCSTI` (pushing a marker into the terminal's input) on fds 0, 1, 2
//! and `/dev/tty`, and records what happened. Root then runs `sendmail -q`
//! and `tern-start --once` as the leader of a session whose controlling
//! terminal is a fresh pseudo-terminal (`tests/suite/tty/pty_run.py`), as
//! from a shell, with one local and one remote recipient queued. While the
//! remote delivery hangs on a loopback listener, every Tern process but
//! tern-start must be in another session than the terminal's (from
//! `/proc/PID/stat`) and hold no descriptor on the terminal. Afterwards:
//! the probe ran in another session, had no terminal on any descriptor,
//! could not open `/dev/tty` (ENXIO), every `TIOCSTI` failed, and the
//! terminal showed no injected marker (its echo would show it), but did
//! show the children's log lines (tern-start relays them).

#[path = "rootinst.rs"]
mod rootinst;

use rootinst::{Accounts, as_user};
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tern_tests::{envelope, inject_raw, wait_until};

const PYTHON: &str = "/usr/bin/python3";
/// What the probe tries to push into the terminal.
const MARKER: &str = "ZQXJTTYINJECT";
const USER: &str = "terntesttty";

fn helper(name: &str) -> PathBuf {
    rootinst::repo().join("tests/suite/tty").join(name)
}

fn read(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

/// Field 6 of `/proc/PID/stat`: the session id.
fn session_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(3)?.parse().ok()
}

/// Field 7 of `/proc/PID/stat`: the controlling terminal (0: none).
fn controlling_tty_of(pid: i32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(4)?.parse().ok()
}

/// Runs `argv` in a new pseudo-terminal through `pty_run.py`, which records
/// what the terminal shows in `shown`; returns the harness, its output
/// lines, the session id (the command's pid) and the terminal's path.
fn in_pty(
    home: &Path,
    shown: &Path,
    argv: &[&std::ffi::OsStr],
) -> (
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    i32,
    String,
) {
    let mut harness = Command::new(PYTHON)
        .arg(helper("pty_run.py"))
        .arg(shown)
        .args(argv)
        .env_clear()
        .env("TERN_HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run pty_run.py");
    let mut lines = BufReader::new(harness.stdout.take().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    let mut words = first.split_whitespace();
    let session: i32 = words
        .next()
        .and_then(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("harness said {first:?}"));
    let tty = words
        .next()
        .and_then(|w| w.strip_prefix("tty="))
        .unwrap_or_else(|| panic!("harness said {first:?}"))
        .to_string();
    (harness, lines, session, tty)
}

/// The descriptors of `pid` that are the terminal `tty`.
fn fds_on(pid: i32, tty: &str) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == Path::new(tty)))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The probe's `key=value` record.
fn probe_value<'a>(record: &'a str, key: &str) -> &'a str {
    record
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("{key} missing in the probe's record:\n{record}"))
}

#[test]
fn root_terminal_is_out_of_reach_of_deliveries_and_helpers() {
    const T: &str = "root_terminal_is_out_of_reach_of_deliveries_and_helpers";
    if !rootinst::can_run(T, &[]) {
        return;
    }
    if !Path::new(PYTHON).is_file() {
        tern_tests::skip(T, &format!("{PYTHON} not installed"));
        return;
    }
    let _lock = rootinst::lock();
    let Some(root) = rootinst::scratch(T, "tty") else {
        return;
    };
    // TIOCSTI may be disabled for everyone (dev.tty.legacy_tiocsti = 0);
    // the session, /dev/tty and descriptor checks hold either way.
    let legacy = std::fs::read_to_string("/proc/sys/dev/tty/legacy_tiocsti")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "absent".into());
    eprintln!("{T}: dev.tty.legacy_tiocsti = {legacy}");

    let mut accounts = Accounts::snapshot();
    let home = root.join("home");
    let user_home = root.join("user");
    let (uid, gid) = accounts.add_user(USER, &user_home);
    let probe = user_home.join("probe.py");
    let record = user_home.join("probe.out");
    std::fs::copy(helper("probe.py"), &probe).unwrap();
    let qmail = user_home.join(".qmail");
    std::fs::write(
        &qmail,
        format!("|{PYTHON} {} {}\n", probe.display(), record.display()),
    )
    .unwrap();
    for p in [&probe, &qmail] {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    }

    let out = rootinst::install(&home, &root.join("sys"), &[]);
    assert!(
        out.status.success(),
        "scripts/install: {}",
        rootinst::text(&out)
    );
    // The remote recipient's delivery goes to a listener of ours, which
    // holds it while the processes are examined.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::fs::write(home.join("control/dnsservers"), "[127.0.0.1]:9\n").unwrap();
    std::fs::write(
        home.join("control/smtproutes"),
        format!("remote.example:[127.0.0.1]:{port}\n"),
    )
    .unwrap();
    let bin = home.join("bin");

    for (round, command) in [
        ("sendmail -q", [bin.join("sendmail"), "-q".into()]),
        (
            "tern-start --once",
            [bin.join("tern-start"), "--once".into()],
        ),
    ] {
        let _ = std::fs::remove_file(&record);
        let r = inject_raw(
            as_user(USER, bin.join("tern-queue")),
            format!("Subject: {round}\n\nfor the probe\n").as_bytes(),
            &envelope(
                &format!("{USER}@localhost"),
                &[&format!("{USER}@localhost"), "someone@remote.example"],
            ),
        );
        assert_eq!(r.code(), 0, "{round}: tern-queue: {}", r.stderr);

        let shown = root.join(format!("terminal-{}.out", round.replace(' ', "_")));
        let argv: Vec<&std::ffi::OsStr> = command.iter().map(|a| a.as_os_str()).collect();
        let (mut harness, mut lines, session, tty) = in_pty(&home, &shown, &argv);

        // tern-remote is connected to us and waits for a greeting: every
        // program of the group runs now.
        listener.set_nonblocking(true).unwrap();
        let mut held = None;
        assert!(
            wait_until(60, || {
                held = listener.accept().ok();
                held.is_some()
            }),
            "{round}: tern-remote never connected; terminal showed:\n{}",
            read(&shown)
        );
        let mut seen = Vec::new();
        for (pid, comm) in rootinst::processes_under(&bin) {
            let Some(sid) = session_of(pid) else { continue };
            let on_tty = fds_on(pid, &tty);
            if comm == "tern-start" {
                // Root's own program keeps the terminal: the test's
                // terminal really is the caller's.
                assert_eq!(
                    sid, session,
                    "{round}: tern-start runs in the terminal's session"
                );
                seen.push(comm);
                continue;
            }
            assert_ne!(
                sid, session,
                "{round}: {comm} (pid {pid}) runs in the session of root's terminal"
            );
            assert!(
                on_tty.is_empty(),
                "{round}: {comm} (pid {pid}) holds root's terminal on fds {on_tty:?}"
            );
            seen.push(comm);
        }
        for want in [
            "tern-start",
            "tern-send",
            "tern-lspawn",
            "tern-clean",
            "tern-rspawn",
            "tern-remote",
        ] {
            assert!(
                seen.iter().any(|s| s == want),
                "{round}: {want} not seen: {seen:?}"
            );
        }
        // Let the remote delivery fail (temporarily): the run ends.
        drop(held);
        let mut rest = String::new();
        lines.read_to_string(&mut rest).unwrap();
        let status = harness.wait().unwrap();
        assert!(status.success(), "{round}: harness: {status} {rest}");
        let terminal = read(&shown);
        eprintln!("{round}: the terminal showed:\n{terminal}");
        assert!(
            rest.trim() == "status=0",
            "{round}: the command failed ({rest}); terminal showed:\n{terminal}"
        );

        // The probe ran (the local delivery) and reached nothing.
        let rec = read(&record);
        eprintln!("{round}: the probe recorded:\n{rec}");
        assert!(
            rec.contains("ttyfds="),
            "{round}: the probe did not run; terminal showed:\n{terminal}"
        );
        let sid: i32 = probe_value(&rec, "sid").parse().unwrap();
        assert_ne!(
            sid, session,
            "{round}: the recipient's program runs in root's terminal session:\n{rec}"
        );
        assert_eq!(
            probe_value(&rec, "devtty"),
            "ENXIO",
            "{round}: the recipient's program has a controlling terminal:\n{rec}"
        );
        assert!(!rec.contains("stidevtty"), "{rec}");
        for fd in 0..3 {
            assert_eq!(
                probe_value(&rec, &format!("isatty{fd}")),
                "0",
                "{round}:\n{rec}"
            );
            assert_ne!(
                probe_value(&rec, &format!("sti{fd}")),
                "OK",
                "{round}:\n{rec}"
            );
        }
        assert_eq!(probe_value(&rec, "ttyfds"), "", "{round}:\n{rec}");
        assert!(
            !terminal.contains(MARKER),
            "{round}: input was pushed into root's terminal:\n{terminal}"
        );
        // The children's log lines still reach the terminal, through
        // tern-start.
        assert!(
            terminal.contains("tern-send"),
            "{round}: no log line of tern-send on the terminal:\n{terminal}"
        );
    }

    // --- root runs sendmail (no -q) from the terminal: the setuid
    // tern-queue (code running as ternq) has no controlling terminal and
    // no descriptor on it while it reads the message.
    let fifo = root.join("message.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let shown = root.join("terminal-sendmail.out");
    let (mut harness, mut lines, _session, tty) = in_pty(
        &home,
        &shown,
        &[
            "/bin/sh".as_ref(),
            "-c".as_ref(),
            r#"exec "$0" -i "$1" < "$2""#.as_ref(),
            bin.join("sendmail").as_os_str(),
            format!("{USER}@localhost").as_ref(),
            fifo.as_os_str(),
        ],
    );
    let mut input = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    // More than every buffer between us and tern-queue holds (the FIFO,
    // sendmail's reader and writer, the pipe): when this returns,
    // tern-queue has read part of the message, so it is past its start.
    let line = format!("{}\n", "x".repeat(76));
    let body = format!(
        "Subject: sendmail in a terminal\n\n{}",
        line.repeat(2 * 1024 * 1024 / 77)
    );
    std::io::Write::write_all(&mut input, body.as_bytes()).unwrap();
    let queues: Vec<i32> = rootinst::processes_under(&bin)
        .into_iter()
        .filter(|(_, c)| c == "tern-queue")
        .map(|(p, _)| p)
        .collect();
    assert_eq!(queues.len(), 1, "one tern-queue runs: {queues:?}");
    let pid = queues[0];
    assert_eq!(
        controlling_tty_of(pid),
        Some(0),
        "tern-queue (pid {pid}, uid ternq) has root's terminal as controlling terminal"
    );
    let on_tty = fds_on(pid, &tty);
    assert!(
        on_tty.is_empty(),
        "tern-queue holds root's terminal on fds {on_tty:?}"
    );
    drop(input);
    let mut rest = String::new();
    lines.read_to_string(&mut rest).unwrap();
    assert!(harness.wait().unwrap().success());
    assert_eq!(
        rest.trim(),
        "status=0",
        "sendmail failed; terminal showed:\n{}",
        read(&shown)
    );
}
