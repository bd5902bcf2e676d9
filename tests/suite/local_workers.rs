//! tern-lspawn's delivery workers (`tern-local --worker`, one recipient uid
//! each, reused): a program delivered through a worker sees exactly what it
//! sees under a tern-local of its own (environment, directory, umask, open
//! descriptors), one worker serves many deliveries, and a delivery past
//! its deadline kills its worker (and what it runs) and is deferred while
//! the next delivery gets a new worker.

use std::path::Path;
use std::process::Output;
use tern_tests::Instance;

/// `tern-start --once` with `env` added; its output.
fn once(inst: &Instance, env: &[(&str, &str)]) -> Output {
    let mut c = inst.command("tern-start");
    c.arg("--once");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("tern-start --once");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn send(inst: &Instance, to: &str, subject: &str) {
    let (code, err) = inst.sendmail(&[to], format!("Subject: {subject}\n\nbody\n").as_bytes());
    assert_eq!(code, 0, "{err}");
}

fn dumps(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("dump dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("name"))
        .collect();
    names.sort_by_key(|n| n.parse::<u32>().unwrap_or(0));
    names
        .iter()
        .map(|n| std::fs::read_to_string(dir.join(n)).expect("dump"))
        .collect()
}

#[test]
fn a_program_sees_through_a_worker_what_it_sees_under_its_own_tern_local() {
    let inst = Instance::new("lworker-env");
    let dir = inst.scratch().join("dumps");
    std::fs::create_dir(&dir).expect("mkdir");
    // What a program can tell about its surroundings: the descriptors it
    // inherited (ls lists its own: 0, 1, 2 and the directory it reads),
    // environment, directory, umask.
    std::fs::write(
        inst.home().join("mail/test/.qmail-env"),
        format!(
            "|n=$(ls {d} | wc -l); ls /proc/self/fd > {d}/$n; {{ env | grep -v '^_=' | sort; pwd; umask; }} >> {d}/$n\n",
            d = dir.display()
        ),
    )
    .expect(".qmail-env");
    send(&inst, "test-env@localhost", "own");
    let first = once(&inst, &[("TERN_LOCAL_WORKERS", "0")]);
    let log = String::from_utf8_lossy(&first.stderr);
    assert!(log.contains("via=process"), "{log}");
    for i in 0..3 {
        send(&inst, "test-env@localhost", &format!("worker {i}"));
        let out = once(&inst, &[]);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(log.contains("via=worker"), "{log}");
    }
    let d = dumps(&dir);
    assert_eq!(d.len(), 4, "{d:?}");
    // The message-dependent lines differ (here only UFLINE, which carries
    // the delivery's time of day: two deliveries may fall in different
    // seconds); everything else is equal.
    let d: Vec<String> = d
        .iter()
        .map(|dump| {
            assert!(dump.contains("\nUFLINE=From "), "{dump}");
            dump.lines()
                .filter(|l| !l.starts_with("UFLINE="))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    for (i, w) in d.iter().enumerate().skip(1) {
        assert_eq!(
            w, &d[0],
            "delivery {i} through a worker saw something else than under its own tern-local"
        );
    }
}

#[test]
fn one_worker_serves_many_deliveries() {
    let inst = Instance::new("lworker-reuse");
    let daemon = tern_tests::Daemon::start(&inst);
    // One at a time: each delivery finds the last one's worker idle.
    for i in 0..5 {
        send(&inst, "test@localhost", &format!("reuse {i}"));
        assert!(
            tern_tests::wait_until(30, || inst.maildir_count("test") == i + 1),
            "{}",
            daemon.log()
        );
    }
    let log = daemon.log();
    assert_eq!(log.matches("via=worker").count(), 5, "{log}");
    assert_eq!(
        log.matches("event=worker_start").count(),
        1,
        "not one worker for five deliveries in a row: {log}"
    );
}

#[test]
fn a_delivery_past_its_deadline_kills_its_worker_and_is_deferred() {
    let inst = Instance::new("lworker-timeout");
    std::fs::write(inst.home().join("control/timeoutlocal"), "1\n").expect("timeoutlocal");
    let mark = inst.scratch().join("survivor");
    std::fs::write(
        inst.home().join("mail/test/.qmail-slow"),
        format!("|sleep 30; touch {}\n", mark.display()),
    )
    .expect(".qmail-slow");
    send(&inst, "test-slow@localhost", "slow");
    let out = once(&inst, &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("event=delivery_timeout"), "{log}");
    assert!(
        log.contains("status=deferred") && log.contains("timed out after 1 seconds"),
        "{log}"
    );
    // The next delivery for that uid gets a new worker and succeeds.
    send(&inst, "test@localhost", "after");
    let out = once(&inst, &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(inst.maildir_count("test"), 1, "{log}");
    // The killed worker's program went with it (its process group).
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!mark.exists(), "the timed-out program kept running");
    assert!(
        inst.pids_of("").is_empty(),
        "left running: {:?}",
        inst.pids_of("")
    );
}

#[test]
fn a_program_that_kills_its_worker_costs_only_its_own_delivery() {
    let inst = Instance::new("lworker-kill");
    // The recipient's own code turns on the worker that runs it.
    std::fs::write(
        inst.home().join("mail/test/.qmail-evil"),
        "|kill -9 $PPID; sleep 1\n",
    )
    .expect(".qmail-evil");
    send(&inst, "test-evil@localhost", "evil");
    send(&inst, "test@localhost", "good");
    let out = once(&inst, &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("rcpt=test-evil@localhost") && log.contains("tern-local crashed (signal 9)"),
        "{log}"
    );
    assert_eq!(inst.maildir_count("test"), 1, "{log}");
    // And the next run delivers as before.
    send(&inst, "test@localhost", "again");
    let out = once(&inst, &[]);
    assert_eq!(
        inst.maildir_count("test"),
        2,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
