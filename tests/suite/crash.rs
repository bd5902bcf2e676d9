//! Crash safety of the accept path: SIGKILL `tern-queue` at many points
//! while it writes; afterwards repair leaves only complete messages, every
//! acknowledged message is there, and `ternctl queue` agrees.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;
use tern_tests::{Instance, envelope, strip_received};

fn body(i: usize) -> Vec<u8> {
    let mut b = format!("Subject: crash {i}\n\n").into_bytes();
    // Large enough that killing during the copy is likely.
    for line in 0..4000 {
        b.extend_from_slice(
            format!("message {i} line {line} ..........................................\n")
                .as_bytes(),
        );
    }
    b.extend_from_slice(format!("end of message {i}\n").as_bytes());
    b
}

#[test]
fn sigkill_at_many_points_loses_nothing_acknowledged() {
    let inst = Instance::new("crash");
    let iterations = 150;
    let mut acked = Vec::new();
    let mut killed_at = [0usize; 5];
    for i in 0..iterations {
        let msg = body(i);
        let env = envelope("crash@test", &["test@localhost"]);
        let phase = i % 5;
        let (env_r, mut env_w) = std::io::pipe().unwrap();
        let mut cmd = inst.command("tern-queue");
        if i % 2 == 1 {
            cmd.env("TERN_QUEUE_NAMED_TMP", "1");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::from(env_r))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        drop(cmd);
        let mut stdin = child.stdin.take();
        let write_all = |stdin: &mut Option<std::process::ChildStdin>, bytes: &[u8]| {
            if let Some(s) = stdin.as_mut() {
                let _ = s.write_all(bytes);
            }
        };
        match phase {
            // Before it has read anything.
            0 => {}
            // In the middle of the message.
            1 => {
                write_all(&mut stdin, &msg[..msg.len() / 2]);
                std::thread::sleep(Duration::from_millis(5));
            }
            // Message read, waiting for the envelope.
            2 => {
                write_all(&mut stdin, &msg);
                stdin = None;
                std::thread::sleep(Duration::from_millis(10));
            }
            // In the middle of the envelope.
            3 => {
                write_all(&mut stdin, &msg);
                stdin = None;
                let _ = env_w.write_all(&env[..env.len() - 3]);
                std::thread::sleep(Duration::from_millis(10));
            }
            // Everything sent: race the commit (sometimes it wins).
            _ => {
                write_all(&mut stdin, &msg);
                stdin = None;
                let _ = env_w.write_all(&env);
                std::thread::sleep(Duration::from_micros((i as u64 * 397) % 4000));
            }
        }
        let _ = child.kill();
        let status = child.wait().unwrap();
        drop(stdin);
        drop(env_w);
        if status.code() == Some(0) {
            acked.push(i);
        } else {
            killed_at[phase] += 1;
        }
    }
    // Named temporary files of dead writers are removed once unlocked and
    // older than the grace period.
    std::thread::sleep(Duration::from_secs(
        tern_spool::repair::TMP_GRACE as u64 + 1,
    ));
    let out = inst.command("ternctl").arg("repair").output().unwrap();
    assert!(
        out.status.success(),
        "ternctl repair: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let tmp: Vec<_> = std::fs::read_dir(inst.home().join("queue/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "repair left partial files: {tmp:?}");

    let q = inst.queue();
    let scan = q.scan().unwrap();
    assert!(scan.damaged.is_empty(), "damaged files: {:?}", scan.damaged);
    let mut present = Vec::new();
    for m in &scan.messages {
        let stored = q.read_message(m.id).unwrap();
        let rest = strip_received(&stored).1;
        let subject =
            std::str::from_utf8(&rest[..rest.iter().position(|&b| b == b'\n').unwrap()]).unwrap();
        let i: usize = subject
            .trim_start_matches("Subject: crash ")
            .parse()
            .unwrap();
        assert!(
            rest == &body(i)[..],
            "message {i} is incomplete in the queue"
        );
        present.push(i);
    }
    for i in &acked {
        assert!(present.contains(i), "acknowledged message {i} was lost");
    }
    let extra: Vec<_> = present.iter().filter(|i| !acked.contains(i)).collect();
    eprintln!(
        "crash test: {iterations} runs, {} acknowledged, kills by phase {killed_at:?}, \
         {} committed but not acknowledged (allowed: the sender retries)",
        acked.len(),
        extra.len()
    );
    assert!(
        killed_at.iter().sum::<usize>() >= 100,
        "too few kills landed"
    );

    // ternctl queue agrees with the library and with what was acknowledged.
    let out = inst
        .command("ternctl")
        .args(["queue", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = v.as_array().expect("ternctl queue --json prints an array");
    assert_eq!(listed.len(), present.len());
    let out = inst
        .command("ternctl")
        .args(["queue", "--count"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&present.len().to_string()), "{text}");
}

/// Under a steady injection load, SIGKILL tern-send, tern-clean,
/// tern-lspawn or tern-local at pseudo-random moments (at least 20 kills),
/// restarting the manager whenever it stopped; afterwards every
/// acknowledged message is delivered. Duplicates (allowed: at least once)
/// are counted and printed.
#[test]
fn manager_side_kills_lose_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use tern_tests::{Daemon, wait_until};

    let inst = Instance::new("crash-send");
    let total = 400usize;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let injector = {
        let home = inst.home().to_path_buf();
        let acked = acked.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            for i in 0..total {
                let msg = format!("Subject: load {i}\n\nmessage number {i}\n");
                let mut cmd = std::process::Command::new(tern_tests::bin("tern-queue"));
                cmd.env("TERN_HOME", &home);
                let r = tern_tests::inject_raw(
                    cmd,
                    msg.as_bytes(),
                    &envelope("load@localhost", &["test@localhost"]),
                );
                if r.code() == 0 {
                    acked.lock().unwrap().push(i);
                }
                std::thread::sleep(Duration::from_millis(8));
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    let victims = ["tern-send", "tern-clean", "tern-lspawn", "tern-local"];
    let mut daemon = Daemon::start(&inst);
    let mut kills = [0usize; 4];
    let mut restarts = 0;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut attempts = 0;
    while (kills.iter().sum::<usize>() < 24 || !done.load(Ordering::SeqCst)) && attempts < 2000 {
        attempts += 1;
        std::thread::sleep(Duration::from_millis(20 + rnd() % 60));
        if daemon.try_wait().is_some() {
            // The group stopped after a kill: restart it (recovery runs).
            daemon = Daemon::start(&inst);
            restarts += 1;
            continue;
        }
        let which = (rnd() % 4) as usize;
        let pids = inst.pids_of(victims[which]);
        if let Some(&pid) = pids.first() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            kills[which] += 1;
        }
    }
    injector.join().unwrap();
    if daemon.try_wait().is_some() {
        daemon = Daemon::start(&inst);
        restarts += 1;
    }
    // Deliveries that failed because their tern-local was killed wait for
    // their retry time: ask for everything now until the queue is empty.
    let emptied = wait_until(120, || {
        let _ = inst.command("ternctl").arg("flush").output();
        if daemon.try_wait().is_some() {
            daemon = Daemon::start(&inst);
        }
        inst.queue().count().unwrap() == 0
    });
    let acked = acked.lock().unwrap().clone();
    let mut delivered = vec![0usize; total];
    for f in inst.maildir("test") {
        let text = String::from_utf8_lossy(&f).into_owned();
        let i: usize = text
            .split("message number ")
            .nth(1)
            .and_then(|s| s.trim().parse().ok())
            .expect("a load message");
        delivered[i] += 1;
    }
    let lost: Vec<_> = acked.iter().filter(|&&i| delivered[i] == 0).collect();
    let duplicates: usize = delivered.iter().map(|&n| n.saturating_sub(1)).sum();
    eprintln!(
        "manager crash test: {} acknowledged, kills send/clean/lspawn/local = {kills:?}, \
         {restarts} restarts, {duplicates} duplicate deliveries, {} lost",
        acked.len(),
        lost.len()
    );
    assert!(
        kills.iter().sum::<usize>() >= 20,
        "too few kills: {kills:?}"
    );
    assert!(
        lost.is_empty(),
        "acknowledged messages lost: {lost:?}\n{}",
        daemon.log()
    );
    assert!(
        emptied,
        "queue did not empty: {} left\n{}",
        inst.queue().count().unwrap(),
        daemon.log()
    );
}
