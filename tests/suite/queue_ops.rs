//! The postmaster's queue operations (`ternctl show`, `delete`, `bounce`,
//! `hold`, `release`, bulk selection) and tern-send's metrics file, over
//! a real instance: with tern-send running (the control socket) and
//! without (ternctl under the manager's lock); and SIGKILL of tern-send
//! around each operation: it happened exactly once or not at all.

use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tern_tests::{Daemon, Instance, wait_until};

fn ternctl(inst: &Instance, args: &[&str]) -> Output {
    inst.command("ternctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ternctl")
}

fn ok(inst: &Instance, args: &[&str]) -> String {
    let out = ternctl(inst, args);
    assert!(
        out.status.success(),
        "ternctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `.qmail-never`: every delivery to test-never@localhost is deferred.
fn never(inst: &Instance) {
    std::fs::write(
        inst.home().join("mail/test/.qmail-never"),
        "|echo 'still busy (#4.2.1)'; exit 111\n",
    )
    .unwrap();
}

fn send(inst: &Instance, from: &str, to: &str, subject: &str) {
    let (code, err) = inst.sendmail(
        &["-f", from, to],
        format!("Subject: {subject}\n\nbody of {subject}\n").as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
}

fn listing(inst: &Instance) -> Vec<serde_json::Value> {
    let text = ok(inst, &["queue", "--json"]);
    serde_json::from_str::<serde_json::Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The ids of the queued messages.
fn ids(inst: &Instance) -> Vec<u64> {
    listing(inst)
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect()
}

/// The id of the queued message with `subject` (`show --json`).
fn id_of(inst: &Instance, subject: &str) -> u64 {
    let want = format!("Subject: {subject}\n");
    ids(inst)
        .into_iter()
        .find(|id| {
            let doc: serde_json::Value =
                serde_json::from_str(&ok(inst, &["show", "--json", &id.to_string()])).unwrap();
            doc["message"].as_str().is_some_and(|m| m.contains(&want))
        })
        .unwrap_or_else(|| panic!("no message with subject {subject}"))
}

fn message(inst: &Instance, id: u64) -> Option<serde_json::Value> {
    listing(inst)
        .into_iter()
        .find(|m| m["id"].as_u64() == Some(id))
}

fn mailbox_text(inst: &Instance, name: &str) -> Vec<String> {
    inst.maildir(name)
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect()
}

fn metrics_path(inst: &Instance) -> std::path::PathBuf {
    inst.home().join("queue/state/metrics.prom")
}

/// Parses the metrics file with prometheus_client's two parsers (the
/// Prometheus text format, and OpenMetrics, which also insists on `# EOF`)
/// and prints `name{labels} value` per sample.
fn parse_metrics(path: &std::path::Path) -> String {
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families as prom
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
text = open(sys.argv[1]).read()
list(prom(text))
for fam in om(text):
    for s in fam.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;
    let (code, out) = tern_tests::python(script, &[path.to_str().unwrap()]);
    assert_eq!(code, 0, "metrics do not parse:\n{out}");
    out
}

fn sample(parsed: &str, series: &str) -> f64 {
    parsed
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{parsed}"))
}

#[test]
fn operations_without_and_with_a_running_manager() {
    let inst = Instance::new("ops");
    never(&inst);
    // Queued while no manager runs: a held message, one to delete, one to
    // bounce, one left alone.
    send(&inst, "test@localhost", "test@localhost", "held");
    send(&inst, "test@localhost", "test-never@localhost", "doomed");
    send(&inst, "test@localhost", "test-never@localhost", "bounced");
    send(&inst, "other@localhost", "test-never@localhost", "kept");
    assert_eq!(ids(&inst).len(), 4);
    let (held, doomed, bounced, kept) = (
        id_of(&inst, "held"),
        id_of(&inst, "doomed"),
        id_of(&inst, "bounced"),
        id_of(&inst, "kept"),
    );

    // Without a manager: applied under its lock, logged by ternctl.
    let out = ternctl(&inst, &["hold", &held.to_string()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("event=operation op=hold"));
    assert!(ok(&inst, &["hold", &held.to_string()]).contains("already so: 1"));
    // Not in the queue: named, exit 1.
    let out = ternctl(&inst, &["release", "12345"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not in the queue: 12345"));
    // Ids and a selection together, or nothing at all: usage errors.
    assert_eq!(
        ternctl(&inst, &["delete", "1", "--all"]).status.code(),
        Some(1)
    );
    assert_eq!(ternctl(&inst, &["delete"]).status.code(), Some(1));
    let m = message(&inst, held).unwrap();
    assert_eq!(m["held"], true);
    let text = ok(&inst, &["queue"]);
    assert!(text.contains("  held\n"), "{text}");
    assert!(text.contains("held: not tried until released"), "{text}");

    // show: envelope, recipient, the header; --body adds the body.
    let shown = ok(&inst, &["show", &held.to_string()]);
    assert!(shown.contains("sender: <test@localhost>"), "{shown}");
    assert!(
        shown.contains("recipient: <test@localhost>  pending"),
        "{shown}"
    );
    assert!(shown.contains("held (not tried until released)"), "{shown}");
    assert!(shown.contains("Subject: held"), "{shown}");
    assert!(!shown.contains("body of held"), "{shown}");
    assert!(ok(&inst, &["show", "--body", &held.to_string()]).contains("body of held"));
    assert_eq!(
        ternctl(&inst, &["show", "999999999"]).status.code(),
        Some(1)
    );

    // The held message survives a start of the manager and is never tried;
    // the others are tried (and deferred).
    let mut daemon = Daemon::start(&inst);
    assert!(
        wait_until(60, || daemon.log().matches("status=deferred").count() >= 3),
        "{}",
        daemon.log()
    );
    let shown = ok(&inst, &["show", &doomed.to_string()]);
    assert!(shown.contains("last error: still busy"), "{shown}");
    assert!(shown.contains("next attempt: "), "{shown}");
    assert!(
        !daemon
            .log()
            .lines()
            .any(|l| l.contains("delivery_start") && l.contains(&format!("qid={held} "))),
        "a held message was tried:\n{}",
        daemon.log()
    );
    daemon.stop(30);
    let mut daemon = Daemon::start(&inst);
    assert!(wait_until(30, || inst
        .home()
        .join("queue/state/control")
        .exists()));
    assert_eq!(
        message(&inst, held).unwrap()["held"],
        true,
        "hold lost at restart"
    );

    // With the manager running: through its socket, logged by tern-send.
    ok(&inst, &["delete", &doomed.to_string()]);
    ok(&inst, &["bounce", &bounced.to_string()]);
    assert!(
        wait_until(60, || {
            let q = ids(&inst);
            !q.contains(&doomed) && !q.contains(&bounced)
        }),
        "{:?}\n{}",
        ids(&inst),
        daemon.log()
    );
    // The bounce reached its sender; the deleted message bounced nowhere.
    assert!(
        wait_until(60, || mailbox_text(&inst, "test")
            .iter()
            .any(|t| t.contains("Bounced by the postmaster"))),
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(
        log.contains("tern-send: event=operation op=delete"),
        "{log}"
    );
    assert!(
        !mailbox_text(&inst, "test")
            .iter()
            .any(|t| t.contains("Deleted by"))
    );
    assert!(
        !mailbox_text(&inst, "test")
            .iter()
            .any(|t| t.contains("body of doomed"))
    );

    // Release: delivered at once.
    ok(&inst, &["release", &held.to_string()]);
    assert!(
        wait_until(60, || mailbox_text(&inst, "test")
            .iter()
            .any(|t| t.contains("body of held"))),
        "{}",
        daemon.log()
    );

    // Metrics: parse with both parsers, and agree with the queue.
    assert!(wait_until(30, || {
        std::fs::read_to_string(metrics_path(&inst)).is_ok_and(|t| t.contains("op=\"release\"} 1"))
    }));
    let parsed = parse_metrics(&metrics_path(&inst));
    assert_eq!(sample(&parsed, "tern_operations_total{op=delete}"), 1.0);
    assert_eq!(sample(&parsed, "tern_operations_total{op=bounce}"), 1.0);
    assert!(
        sample(
            &parsed,
            "tern_deliveries_total{channel=local,result=delivered}"
        ) >= 1.0
    );
    assert!(sample(&parsed, "tern_concurrency_limit{channel=local}") >= 1.0);
    assert!(sample(&parsed, "tern_journal_bytes{}") > 0.0);
    assert!(sample(&parsed, "tern_queue_messages{state=active}") >= 1.0);
    let stats = ok(&inst, &["stats"]);
    assert!(stats.contains("op=release"), "{stats}");

    // Bulk: dry run touches nothing; refused without confirmation; --yes.
    let dry = ok(&inst, &["delete", "--from", "other@localhost", "--dry-run"]);
    assert!(
        dry.contains(&kept.to_string()) && dry.contains("would delete: 1"),
        "{dry}"
    );
    let mut c = inst
        .command("ternctl")
        .args(["delete", "--domain", "localhost", "--older-than", "0s"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(b"n\n").unwrap();
    }
    let out = c.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("delete 1 message(s)? [y/N]"));
    assert!(ids(&inst).contains(&kept));
    assert!(ok(&inst, &["delete", "--to", "test-never@localhost", "--yes"]).contains("deleted: 1"));
    assert!(wait_until(60, || ids(&inst).is_empty()), "{:?}", ids(&inst));
    // Written on exit too.
    daemon.stop(30);
    let parsed = parse_metrics(&metrics_path(&inst));
    assert_eq!(sample(&parsed, "tern_operations_total{op=delete}"), 2.0);
    assert_eq!(sample(&parsed, "tern_queue_messages{state=active}"), 0.0);
}

#[test]
fn metricsfile_elsewhere_and_a_refused_directory() {
    let inst = Instance::new("ops-metrics");
    let dir = inst.scratch().join("textfile");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("tern.prom");
    // A link planted under the file's name is replaced, not written through.
    let victim = inst.scratch().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    std::fs::write(
        inst.home().join("control/metricsfile"),
        format!("{}\n", path.display()),
    )
    .unwrap();
    let mut daemon = Daemon::start(&inst);
    assert!(wait_until(30, || std::fs::symlink_metadata(&path)
        .is_ok_and(|m| m.is_file())));
    parse_metrics(&path);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(ok(&inst, &["stats"]).contains("tern_journal_bytes"));
    daemon.stop(30);
    // A relative path is a configuration error.
    std::fs::write(inst.home().join("control/metricsfile"), "m.prom\n").unwrap();
    let mut daemon = Daemon::start(&inst);
    assert!(wait_until(30, || daemon.try_wait().is_some()));
    assert!(
        daemon.log().contains("not an absolute path"),
        "{}",
        daemon.log()
    );
}

/// The pid of the instance's tern-send once it serves its control socket.
fn manager_pid(inst: &Instance) -> i32 {
    let mut pid = 0;
    assert!(wait_until(60, || {
        pid = inst.pids_of("tern-send").first().copied().unwrap_or(0);
        pid != 0 && inst.home().join("queue/state/control").exists()
    }));
    pid
}

/// Bounces generated for the message with `subject`: distinct queue files
/// (told apart by tern-queue's Received line), so that a bounce delivered
/// twice (deliveries are at least once: a crash between a delivery and
/// its record repeats it) counts once, and a bounce queued twice counts
/// twice.
fn bounces_of(inst: &Instance, subject: &str) -> usize {
    let subject_line = format!("Subject: {subject}\n");
    mailbox_text(inst, "test")
        .iter()
        .filter(|t| t.contains("Bounced by the postmaster") && t.contains(&subject_line))
        .filter_map(|t| {
            t.lines()
                .find(|l| l.starts_with("Received: (tern-queue"))
                .map(str::to_string)
        })
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// SIGKILL tern-send right after a request was sent, at varying delays,
/// then restart: each operation happened exactly once or not at all, and
/// exactly once when ternctl was told it was done.
#[test]
fn sigkill_around_each_operation() {
    let inst = Instance::new("ops-crash");
    never(&inst);
    // A bystander that must survive every round untouched.
    send(
        &inst,
        "other@localhost",
        "test-never@localhost",
        "bystander",
    );
    let bystander = id_of(&inst, "bystander");
    let rounds = 12;
    for round in 0..rounds {
        let op = ["delete", "bounce", "hold"][round % 3];
        let subject = format!("crash-{round}");
        send(&inst, "test@localhost", "test-never@localhost", &subject);
        let mut daemon = Daemon::start(&inst);
        let pid = manager_pid(&inst);
        let id = id_of(&inst, &subject);
        let child = inst
            .command("ternctl")
            .args([op, &id.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros((round as u64 * 2713) % 30_000));
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        let out = child.wait_with_output().unwrap();
        let answered = out.status.success();
        assert!(wait_until(60, || daemon.try_wait().is_some()));
        drop(daemon);
        // Restart; the journal is replayed.
        let mut daemon = Daemon::start(&inst);
        manager_pid(&inst);
        let present = || ids(&inst).contains(&id);
        match op {
            "delete" => {
                if answered {
                    assert!(
                        wait_until(60, || !present()),
                        "round {round}: deleted message stays"
                    );
                }
                // Either way: never bounced, never delivered.
                assert_eq!(bounces_of(&inst, &subject), 0, "round {round}");
                if present() {
                    // Not done: the request can be repeated, once.
                    ok(&inst, &["delete", &id.to_string()]);
                    assert!(wait_until(60, || !present()), "round {round}");
                }
            }
            "bounce" => {
                if answered {
                    assert!(
                        wait_until(60, || bounces_of(&inst, &subject) == 1),
                        "round {round}: {} bounces; ternctl: {}\n{}",
                        bounces_of(&inst, &subject),
                        String::from_utf8_lossy(&out.stdout),
                        daemon.log()
                    );
                }
                if present() && !ternctl(&inst, &["show", &id.to_string()]).stdout.is_empty() {
                    let _ = ternctl(&inst, &["bounce", &id.to_string()]);
                }
                assert!(wait_until(60, || !present()), "round {round}");
                assert!(
                    wait_until(60, || bounces_of(&inst, &subject) >= 1),
                    "round {round}"
                );
                // Let a duplicate show up if there were one.
                std::thread::sleep(Duration::from_millis(300));
                assert_eq!(bounces_of(&inst, &subject), 1, "round {round}: bounces");
            }
            _ => {
                let held = message(&inst, id).is_some_and(|m| m["held"] == true);
                if answered {
                    assert!(held, "round {round}: hold lost");
                }
                ok(&inst, &["delete", &id.to_string()]);
                assert!(wait_until(60, || !present()), "round {round}");
            }
        }
        daemon.stop(30);
        let q = ids(&inst);
        assert_eq!(q, [bystander], "round {round}: the queue holds {q:?}");
        let m = message(&inst, bystander).unwrap();
        assert_eq!(m["held"], false, "round {round}");
        assert_eq!(m["deleted"], false, "round {round}");
        assert_eq!(m["recipients"][0]["state"], "pending", "round {round}");
    }
    // Never delivered by mistake (a bounce quotes the message).
    assert!(
        !mailbox_text(&inst, "test")
            .iter()
            .any(|t| t.contains("body of crash-") && !t.contains("Bounced by the postmaster"))
    );
}

/// Only root and the manager's uid may operate: another uid that reaches
/// the socket (its mode opened on purpose here) is refused by its
/// `SO_PEERCRED` uid, and nothing changes.
#[test]
fn another_uid_is_refused_on_the_control_socket() {
    if !tern_tests::is_root() {
        tern_tests::skip("another_uid_is_refused_on_the_control_socket", "needs root");
        return;
    }
    let inst = Instance::new("ops-uid");
    never(&inst);
    send(&inst, "test@localhost", "test-never@localhost", "target");
    let id = ids(&inst)[0];
    let daemon = Daemon::start(&inst);
    manager_pid(&inst);
    let sock = inst.home().join("queue/state/control");
    // Let uid 65534 reach the socket: only the peer check stands.
    use std::os::unix::fs::PermissionsExt;
    for dir in [
        inst.scratch().to_path_buf(),
        inst.home().to_path_buf(),
        inst.home().join("queue"),
        inst.home().join("queue/state"),
    ] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o011)).unwrap();
    }
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let script = r#"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
payload = bytes([1, ord("Q"), ord("d")]) + struct.pack(">IQ", 1, int(sys.argv[2]))
try:
    s.sendall(struct.pack(">I", len(payload)) + payload)
    s.settimeout(30)
    answer = s.recv(100)
except (BrokenPipeError, ConnectionResetError):
    answer = b""
print("answer bytes:", len(answer))
"#;
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            tern_tests::PYTHON,
            "-c",
            script,
        ])
        .arg(&sock)
        .arg(id.to_string())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("answer bytes: 0"), "{text}");
    assert!(
        wait_until(30, || daemon.log().contains("control request refused")),
        "{}",
        daemon.log()
    );
    assert!(
        !daemon.log().contains("event=operation"),
        "{}",
        daemon.log()
    );
    let m = message(&inst, id).unwrap();
    assert_eq!(m["deleted"], false);
}
