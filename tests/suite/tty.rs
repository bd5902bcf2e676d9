//! Root's terminal is out of reach of every lower-uid process (issue #11,
//! item 1; root only: CI runs as root, elsewhere every test says SKIP).
//!
//! Root types `sendmail -q` (or `tern-start --once`) at a terminal. Before
//! the fix, tern-send, tern-remote and every recipient's `|program` ran in
//! root's session with root's terminal as controlling terminal (and as
//! stderr): a user's program could open `/dev/tty` and push keystrokes into
//! root's shell with `TIOCSTI`. Here a real user's `.qmail` program
//! (tests/peers/tty_probe.py) tries exactly that, while the command runs in
//! a pseudo-terminal made by tests/peers/in_pty.py: opening `/dev/tty`
//! must fail, no descriptor 0-2 may be a terminal, no `TIOCSTI` may
//! succeed, the program must be in another session, and nothing may arrive
//! in the terminal's input queue. The operator still sees the log lines.

#[path = "rootinst.rs"]
mod rootinst;

use rootinst::{Accounts, sh_as};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

fn queue_one(home: &Path, to: &str, subject: &str) {
    let mut c = Command::new(home.join("bin/sendmail"))
        .args(["-f", "root@localhost", to])
        .env_clear()
        .env("TERN_HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sendmail");
    use std::io::Write as _;
    c.stdin
        .take()
        .unwrap()
        .write_all(format!("Subject: {subject}\n\nprobe\n").as_bytes())
        .unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "sendmail: {}", rootinst::text(&out));
}

/// Runs `argv` in a new pseudo-terminal; (status, sid, output, typed).
fn in_pty(argv: &[&str], home: &Path) -> (i64, i64, String, String) {
    let out = Command::new("/usr/bin/python3")
        .arg(rootinst::repo().join("tests/peers/in_pty.py"))
        .args(argv)
        .env_clear()
        .env("TERN_HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .output()
        .expect("run in_pty.py");
    assert!(out.status.success(), "in_pty.py: {}", rootinst::text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("in_pty.py JSON");
    (
        v["status"].as_i64().unwrap(),
        v["sid"].as_i64().unwrap(),
        v["output"].as_str().unwrap().to_string(),
        v["typed"].as_str().unwrap().to_string(),
    )
}

fn probe_results(file: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut runs = Vec::new();
    let mut cur = HashMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            cur.insert(k.to_string(), v.to_string());
            if k == "sid" {
                runs.push(std::mem::take(&mut cur));
            }
        }
    }
    runs
}

fn check_probe(run: &HashMap<String, String>, pty_sid: i64, how: &str) {
    assert_ne!(
        run.get("tty_open").map(String::as_str),
        Some("ok"),
        "{how}: the user's program opened /dev/tty: {run:?}"
    );
    for n in 0..3 {
        assert_eq!(
            run.get(&format!("fd{n}_tty")).map(String::as_str),
            Some("0"),
            "{how}: fd {n} of the user's program is a terminal: {run:?}"
        );
    }
    for (k, v) in run {
        assert!(
            !(k.starts_with("sti_") && v == "ok"),
            "{how}: TIOCSTI worked ({k}): {run:?}"
        );
    }
    assert_ne!(
        run.get("sid").and_then(|s| s.parse::<i64>().ok()),
        Some(pty_sid),
        "{how}: the user's program is in the terminal's session: {run:?}"
    );
}

#[test]
fn queue_runs_started_at_roots_terminal_keep_it_from_users() {
    const T: &str = "queue_runs_started_at_roots_terminal_keep_it_from_users";
    if !rootinst::can_run(T, &[]) {
        return;
    }
    if !Path::new("/usr/bin/python3").exists() {
        tern_tests::skip(T, "/usr/bin/python3 not installed");
        return;
    }
    let _lock = rootinst::lock();
    let Some(root) = rootinst::scratch(T, "tty") else {
        return;
    };
    let mut accounts = Accounts::snapshot();
    let home = root.join("home");
    let sysroot = root.join("sys");
    let bob_home = root.join("bob");
    accounts.add_user("terntestbob", &bob_home);
    let results = bob_home.join("probe.out");
    let probe = bob_home.join("probe.py");
    std::fs::copy(rootinst::repo().join("tests/peers/tty_probe.py"), &probe).unwrap();
    assert!(
        sh_as(
            "terntestbob",
            &format!(
                "printf '|/usr/bin/python3 {} {}\\n' > {}/.qmail && touch {}",
                probe.display(),
                results.display(),
                bob_home.display(),
                results.display()
            )
        ),
        ".qmail for bob"
    );

    let out = rootinst::install(&home, &sysroot, &[]);
    assert!(
        out.status.success(),
        "scripts/install: {}",
        rootinst::text(&out)
    );
    // Nothing may leave this host.
    std::fs::write(home.join("control/dnsservers"), "[127.0.0.1]:9\n").unwrap();

    let runs: [(&str, Vec<String>); 2] = [
        (
            "sendmail -q",
            vec![home.join("bin/sendmail").display().to_string(), "-q".into()],
        ),
        (
            "tern-start --once",
            vec![
                home.join("bin/tern-start").display().to_string(),
                "--once".into(),
            ],
        ),
    ];
    for (i, (how, argv)) in runs.iter().enumerate() {
        queue_one(&home, "terntestbob@localhost", how);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let (status, sid, output, typed) = in_pty(&argv, &home);
        let probes = probe_results(&results);
        assert_eq!(
            probes.len(),
            i + 1,
            "{how}: the user's program did not run (status {status}); terminal output:\n{output}"
        );
        check_probe(&probes[i], sid, how);
        assert!(
            !typed.contains("TERNPWN") && !output.contains("TERNPWN"),
            "{how}: keystrokes reached root's terminal: typed {typed:?}, output {output:?}"
        );
        assert_eq!(status, 0, "{how}: exit status; output:\n{output}");
        // The log still reaches the operator, relayed by tern-start.
        assert!(
            output.contains("tern-send") && output.contains("event="),
            "{how}: the log lines did not reach the terminal:\n{output}"
        );
    }
    drop(accounts);
}
