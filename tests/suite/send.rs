//! The queue manager end to end: sendmail → tern-queue → tern-send →
//! tern-lspawn → tern-local → Maildir; bounces; retries; expiry; the cron
//! runner.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use tern_tests::{Daemon, Instance, strip_delivery_headers, wait_until};

fn message(i: usize) -> Vec<u8> {
    format!(
        "From: sender@localhost\nTo: test@localhost\nDate: Fri, 27 Nov 2026 10:00:00 +0000\n\
         Message-ID: <m{i}@localhost>\nSubject: message {i}\n\nbody of message {i}\n\u{e9}8-bit \x01 line\n"
    )
    .into_bytes()
}

fn body_index(stored: &[u8]) -> Option<usize> {
    let s = String::from_utf8_lossy(stored);
    let at = s.find("Subject: message ")? + "Subject: message ".len();
    s[at..].split('\n').next()?.parse().ok()
}

fn script(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn has_ip_address(text: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .any(|w| w.split('.').count() == 4 && w.split('.').all(|p| !p.is_empty() && p.len() <= 3))
}

#[test]
fn thousand_messages_delivered_exactly_once_byte_exact() {
    let inst = Instance::new("send-1000");
    let daemon = Daemon::start(&inst);
    let n = 1000;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let home = inst.home().to_path_buf();
            std::thread::spawn(move || {
                for i in (t..n).step_by(8) {
                    let out = Command::new(tern_tests::bin("sendmail"))
                        .env("TERN_HOME", &home)
                        .args(["-i", "test@localhost"])
                        .stdin(std::process::Stdio::piped())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .and_then(|mut c| {
                            use std::io::Write;
                            c.stdin.take().unwrap().write_all(&message(i))?;
                            c.wait_with_output()
                        })
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        wait_until(180, || inst.maildir_count("test") >= n),
        "only {} of {n} delivered; queue: {:?}; unusual log lines:\n{}",
        inst.maildir_count("test"),
        inst.queue()
            .list()
            .map(|l| l.iter().map(|m| m.id).collect::<Vec<_>>()),
        daemon
            .log()
            .lines()
            .filter(|l| !l.contains("status=delivered")
                && !l.contains("event=delivery_start")
                && !l.contains("event=new ")
                && !l.contains("event=end "))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Give a duplicate the chance to show up.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let files = inst.maildir("test");
    assert_eq!(files.len(), n, "duplicates delivered");
    let mut seen = vec![false; n];
    for f in &files {
        let (added, rest) = strip_delivery_headers(f);
        assert_eq!(
            added.len(),
            3,
            "Return-Path, Delivered-To and Received expected on top"
        );
        assert!(added[0].starts_with(b"Return-Path: <"));
        assert!(added[1].starts_with(b"Delivered-To: test@localhost"));
        let i = body_index(rest).expect("a test message");
        assert_eq!(rest, &message(i)[..], "message {i} not byte-exact");
        assert!(!seen[i], "message {i} delivered twice");
        seen[i] = true;
    }
    assert!(
        wait_until(30, || inst.queue().count().unwrap() == 0),
        "queue not emptied"
    );
}

#[test]
fn unknown_user_bounces_to_the_sender_as_rfc3464() {
    let inst = Instance::new("send-bounce");
    let (code, err) = inst.sendmail(
        &["-f", "test@localhost", "nobody@localhost"],
        b"Subject: to nobody\n\nhello\n",
    );
    assert_eq!(code, 0, "{err}");
    let status = inst.command("tern-start").arg("--once").status().unwrap();
    assert!(status.success());
    let bounces = inst.maildir("test");
    assert_eq!(
        bounces.len(),
        1,
        "one bounce expected in the sender's mailbox"
    );
    let text = String::from_utf8_lossy(&bounces[0]).into_owned();
    assert!(text.contains("Return-Path: <>"), "{text}");
    assert!(
        text.contains("multipart/report; report-type=delivery-status"),
        "{text}"
    );
    assert!(
        text.contains("Final-Recipient: rfc822; nobody@localhost"),
        "{text}"
    );
    assert!(text.contains("Action: failed"), "{text}");
    assert!(text.contains("Status: 5.1.1"), "{text}");
    assert!(
        text.contains("Subject: to nobody"),
        "original headers returned: {text}"
    );
    assert!(text.contains("MAILER-DAEMON@"), "{text}");
    assert!(
        !has_ip_address(&text),
        "bounce discloses an IP address: {text}"
    );
    assert_eq!(inst.queue().count().unwrap(), 0);
}

#[test]
fn several_failed_recipients_share_one_bounce() {
    let inst = Instance::new("send-merge");
    let (code, err) = inst.sendmail(
        &[
            "-f",
            "test@localhost",
            "nobody1@localhost",
            "nobody2@localhost",
            "test@localhost",
        ],
        b"Subject: mixed\n\nhello\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        inst.command("tern-start")
            .arg("--once")
            .status()
            .unwrap()
            .success()
    );
    let files = inst.maildir("test");
    assert_eq!(files.len(), 2, "the message itself and one merged bounce");
    let bounce = files
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .find(|t| t.contains("delivery-status"))
        .expect("bounce");
    assert!(bounce.contains("nobody1@localhost") && bounce.contains("nobody2@localhost"));
}

#[test]
fn a_bounce_that_fails_goes_to_postmaster() {
    let inst = Instance::new("send-double");
    let (code, err) = inst.sendmail(
        &["-f", "ghost@localhost", "nobody@localhost"],
        b"Subject: from a ghost\n\nhello\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        inst.command("tern-start")
            .arg("--once")
            .status()
            .unwrap()
            .success()
    );
    let pm = inst.maildir("postmaster");
    assert_eq!(pm.len(), 1, "double bounce expected at postmaster");
    let text = String::from_utf8_lossy(&pm[0]);
    assert!(text.contains("ghost@localhost"), "{text}");
    assert!(!has_ip_address(&text));
    assert_eq!(
        inst.queue().count().unwrap(),
        0,
        "nothing left: the double bounce was delivered"
    );
}

#[test]
fn temporary_failure_is_retried_and_then_delivered() {
    let inst = Instance::new("send-retry");
    let home = inst.home().join("mail/test");
    let marker = inst.scratch().join("first-attempt-done");
    let delivered = inst.scratch().join("delivered");
    script(
        &inst.scratch().join("flaky.sh"),
        &format!(
            "#!/bin/sh\nif [ -e {m} ]; then cat > {d}; exit 0; fi\ntouch {m}\necho 'not yet (#4.3.0)'\nexit 111\n",
            m = marker.display(),
            d = delivered.display()
        ),
    );
    std::fs::write(
        home.join(".qmail-flaky"),
        format!("|{}\n", inst.scratch().join("flaky.sh").display()),
    )
    .unwrap();
    let mut daemon = Daemon::start(&inst);
    let (code, err) = inst.sendmail(&["test-flaky@localhost"], b"Subject: flaky\n\nretry me\n");
    assert_eq!(code, 0, "{err}");
    assert!(
        wait_until(30, || marker.exists()),
        "first attempt never ran"
    );
    assert!(
        wait_until(30, || daemon.log().contains("status=deferred")),
        "{}",
        daemon.log()
    );
    assert!(!delivered.exists());
    assert_eq!(
        inst.queue().count().unwrap(),
        1,
        "deferred message stays queued"
    );
    let out = inst.command("ternctl").arg("flush").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The file exists as soon as `cat` opens it: wait for the content.
    assert!(
        wait_until(30, || std::fs::read_to_string(&delivered)
            .is_ok_and(|t| t.contains("retry me"))),
        "{}",
        daemon.log()
    );
    assert!(wait_until(30, || inst.queue().count().unwrap() == 0));
    assert!(
        daemon.stop(30).is_some_and(|s| s.success()),
        "tern-start did not stop cleanly"
    );
}

#[test]
fn queuelifetime_expiry_bounces() {
    let inst = Instance::new("send-expire");
    std::fs::write(inst.home().join("control/queuelifetime"), "2\n").unwrap();
    let home = inst.home().join("mail/test");
    std::fs::write(
        home.join(".qmail-never"),
        "|echo 'still busy (#4.2.1)'; exit 111\n",
    )
    .unwrap();
    let mut daemon = Daemon::start(&inst);
    let (code, err) = inst.sendmail(
        &["-f", "test@localhost", "test-never@localhost"],
        b"Subject: never\n\nthis cannot be delivered\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        wait_until(30, || daemon.log().contains("status=deferred")),
        "{}",
        daemon.log()
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        inst.command("ternctl")
            .arg("flush")
            .status()
            .unwrap()
            .success()
    );
    assert!(
        wait_until(30, || daemon.log().contains("status=expired")),
        "{}",
        daemon.log()
    );
    assert!(
        wait_until(30, || inst.maildir_count("test") == 1),
        "no bounce: {}",
        daemon.log()
    );
    let text = String::from_utf8_lossy(&inst.maildir("test")[0]).into_owned();
    assert!(
        text.contains("test-never@localhost") && text.contains("queuelifetime"),
        "{text}"
    );
    assert!(daemon.stop(30).is_some());
}

#[test]
fn once_delivers_everything_due_and_leaves_nothing_running() {
    let inst = Instance::new("send-once");
    for i in 0..20 {
        let (code, err) = inst.sendmail(&["-i", "test@localhost"], &message(i));
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(inst.queue().count().unwrap(), 20);
    let out = inst.command("tern-start").arg("--once").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(inst.maildir_count("test"), 20);
    assert_eq!(inst.queue().count().unwrap(), 0);
    assert!(
        inst.pids_of("").is_empty(),
        "processes left running: {:?}",
        inst.pids_of("")
    );
    // And `sendmail -q` is the same runner.
    let (code, err) = inst.sendmail(&["-i", "test@localhost"], &message(99));
    assert_eq!(code, 0, "{err}");
    let out = inst.command("sendmail").arg("-q").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(inst.maildir_count("test"), 21);
    assert!(inst.pids_of("").is_empty());
}

/// After the administrator fixes what made a delivery fail, `sendmail -q`
/// tries it at once (as sendmail's and Postfix's do), while the cron
/// runner (`tern-start --once`) keeps the retry schedule.
#[test]
fn sendmail_q_retries_everything_now_and_cron_keeps_the_schedule() {
    let inst = Instance::new("send-q-now");
    // An explicit line: a missing Maildir defers (the default delivery
    // would make it).
    std::fs::write(inst.home().join("mail/test/.qmail"), "./Maildir/\n").unwrap();
    let maildir = inst.home().join("mail/test/Maildir");
    std::fs::rename(&maildir, inst.home().join("mail/test/Maildir.away")).unwrap();
    let (code, err) = inst.sendmail(&["-i", "test@localhost"], &message(1));
    assert_eq!(code, 0, "{err}");
    let out = inst.command("tern-start").arg("--once").output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert!(log.contains("status=deferred"), "{log}");
    assert_eq!(inst.queue().count().unwrap(), 1);
    // mailq says when it is tried next and why it failed.
    let q = inst.command("sendmail").arg("-bp").output().unwrap();
    let listing = String::from_utf8_lossy(&q.stdout).into_owned();
    assert!(q.status.success(), "{listing}");
    assert!(listing.contains("next in "), "{listing}");
    assert!(
        listing.contains("last error: ") && listing.contains("maildir"),
        "{listing}"
    );
    let q = inst
        .command("ternctl")
        .args(["queue", "--json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&q.stdout).unwrap();
    let r = &doc[0]["recipients"][0];
    assert!(
        r["next_attempt"].as_i64().unwrap() > r["last_attempt"].as_i64().unwrap(),
        "{doc}"
    );
    assert!(
        r["last_error"].as_str().unwrap().contains("maildir"),
        "{doc}"
    );
    // Fixed; the next retry is minutes away.
    std::fs::rename(inst.home().join("mail/test/Maildir.away"), &maildir).unwrap();
    let out = inst.command("tern-start").arg("--once").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        inst.maildir_count("test"),
        0,
        "the cron runner keeps the schedule: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = inst.command("sendmail").arg("-q").output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert_eq!(
        inst.maildir_count("test"),
        1,
        "sendmail -q tries now: {log}"
    );
    assert_eq!(inst.queue().count().unwrap(), 0);
    // --flush alone (without --once) is refused.
    let out = inst.command("tern-start").arg("--flush").output().unwrap();
    assert_eq!(out.status.code(), Some(111));
}

#[test]
fn once_with_a_running_manager_flushes_it() {
    let inst = Instance::new("send-once-busy");
    let daemon = Daemon::start(&inst);
    assert!(wait_until(30, || daemon.log().contains("event=status")));
    let out = inst.command("tern-start").arg("--once").output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("flush_running"), "{log}");
    assert!(
        !log.contains("event=alert"),
        "a second runner must start nothing: {log}"
    );
    assert!(
        wait_until(10, || daemon.log().contains("event=flush")),
        "{}",
        daemon.log()
    );
}

#[test]
fn once_does_not_hang_on_a_fifo_planted_as_the_pid_file() {
    // queue/state/ belongs to tern-send's uid, while tern-start --once runs
    // as root: what it finds there must not make it open anything but a
    // regular file (a FIFO would block it forever, a link could name a
    // device).
    let inst = Instance::new("send-once-fifo");
    let daemon = Daemon::start(&inst);
    assert!(wait_until(30, || daemon.log().contains("event=status")));
    let pid = inst.home().join("queue/state/pid");
    assert!(wait_until(10, || pid.exists()), "no pid file");
    std::fs::remove_file(&pid).unwrap();
    let st = Command::new("mkfifo").arg(&pid).status().unwrap();
    assert!(st.success());
    let mut child = inst
        .command("tern-start")
        .arg("--once")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let finished = wait_until(10, || child.try_wait().ok().flatten().is_some());
    if !finished {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(finished, "tern-start --once hangs on a FIFO: {log}");
    assert!(out.status.success(), "{log}");
    assert!(log.contains("flush_running"), "{log}");
    // Not signalled: the pid could not be read.
    assert!(!daemon.log().contains("event=flush"), "{}", daemon.log());
}

#[test]
fn remote_recipient_stays_queued_when_dns_fails_and_the_local_one_is_delivered() {
    // The harness points control/dnsservers at a closed loopback port, so
    // the remote lookup fails temporarily (and nothing leaves loopback).
    let inst = Instance::new("send-remote");
    let (code, err) = inst.sendmail(
        &["someone@example.org", "test@localhost"],
        b"Subject: r\n\nx\n",
    );
    assert_eq!(code, 0, "{err}");
    let out = inst.command("tern-start").arg("--once").output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("tern-send: event=delivery_end")
                && l.contains("rcpt=someone@example.org")
                && l.contains("status=deferred")),
        "{log}"
    );
    assert_eq!(inst.maildir_count("test"), 1);
    let list = inst.queue().list().unwrap();
    assert_eq!(list.len(), 1);
    let states: Vec<String> = list[0]
        .recipients
        .iter()
        .map(|r| r.state.to_string())
        .collect();
    assert_eq!(states, vec!["pending", "delivered"]);
    let out = inst.command("ternctl").arg("queue").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("delivered") && text.contains("someone@example.org"),
        "{text}"
    );
}

#[test]
fn program_exit_100_and_a_mail_loop_are_bounced() {
    let inst = Instance::new("send-loop");
    let home = inst.home().join("mail/test");
    std::fs::write(
        home.join(".qmail-reject"),
        "|echo 'no thanks (#5.7.1)'; exit 100\n",
    )
    .unwrap();
    let (code, err) = inst.sendmail(
        &["-f", "test@localhost", "test-reject@localhost"],
        b"Subject: rejected\n\nbody\n",
    );
    assert_eq!(code, 0, "{err}");
    // A message that already carries our Delivered-To line is looping.
    let (code, err) = inst.sendmail(
        &["-f", "test@localhost", "-i", "postmaster@localhost"],
        b"Delivered-To: postmaster@localhost\nSubject: looping\n\nbody\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        inst.command("tern-start")
            .arg("--once")
            .status()
            .unwrap()
            .success()
    );
    let bounces: Vec<String> = inst
        .maildir("test")
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    assert_eq!(bounces.len(), 2, "{bounces:?}");
    assert!(
        bounces
            .iter()
            .any(|b| b.contains("test-reject@localhost") && b.contains("no thanks"))
    );
    assert!(
        bounces
            .iter()
            .any(|b| b.contains("postmaster@localhost") && b.contains("looping"))
    );
    assert_eq!(
        inst.maildir_count("postmaster"),
        0,
        "the looping message was not delivered"
    );
}

#[test]
fn sigterm_stops_the_manager_cleanly() {
    let inst = Instance::new("send-term");
    let mut daemon = Daemon::start(&inst);
    assert!(wait_until(30, || daemon.log().contains("event=status")));
    let status = daemon.stop(30).expect("tern-start stopped");
    assert!(status.success(), "{}", daemon.log());
    assert!(daemon.log().contains("event=exiting"));
    assert!(
        wait_until(10, || inst.pids_of("").is_empty()),
        "{:?}",
        inst.pids_of("")
    );
}

/// SIGTERM while deliveries run: tern-start lets them finish (the
/// programs complete, their results are recorded, the messages are
/// removed), starts no new one, and leaves nothing running.
#[test]
fn sigterm_lets_running_deliveries_finish() {
    let inst = Instance::new("send-term-busy");
    let done = inst.scratch().join("done");
    std::fs::create_dir(&done).unwrap();
    let started = inst.scratch().join("started");
    std::fs::create_dir(&started).unwrap();
    std::fs::write(
        inst.home().join("mail/test/.qmail-slow-default"),
        format!(
            "|touch {s}/$DEFAULT; sleep 2; cat > {d}/$DEFAULT\n",
            s = started.display(),
            d = done.display()
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&inst);
    for i in 0..3 {
        let to = format!("test-slow-{i}@localhost");
        let (code, err) = inst.sendmail(
            &[&to],
            format!("Subject: slow {i}\n\nbody {i}\n").as_bytes(),
        );
        assert_eq!(code, 0, "{err}");
    }
    assert!(
        wait_until(30, || std::fs::read_dir(&started).unwrap().count() == 3),
        "{}",
        daemon.log()
    );
    let status = daemon.stop(60).expect("tern-start stopped");
    assert!(status.success(), "{}", daemon.log());
    let log = daemon.log();
    for i in 0..3 {
        let text = std::fs::read_to_string(done.join(i.to_string()))
            .unwrap_or_else(|e| panic!("delivery {i} cut short ({e}): {log}"));
        assert!(text.contains(&format!("body {i}")), "{text}");
    }
    assert_eq!(log.matches("status=delivered").count(), 6, "{log}");
    assert_eq!(inst.queue().count().unwrap(), 0, "{log}");
    assert!(inst.pids_of("").is_empty(), "{:?}", inst.pids_of(""));
}

#[test]
fn a_failed_double_bounce_is_dropped_and_logged() {
    let inst = Instance::new("send-triple");
    // postmaster refuses everything: the double bounce fails too.
    std::fs::write(
        inst.home().join("mail/postmaster/.qmail"),
        "|echo 'postmaster is closed (#5.2.1)'; exit 100\n",
    )
    .unwrap();
    let (code, err) = inst.sendmail(
        &["-f", "ghost@localhost", "nobody@localhost"],
        b"Subject: x\n\ny\n",
    );
    assert_eq!(code, 0, "{err}");
    let out = inst.command("tern-start").arg("--once").output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("event=double_bounce"), "{log}");
    assert!(log.contains("event=triple_bounce"), "{log}");
    assert_eq!(
        inst.queue().count().unwrap(),
        0,
        "nothing may stay queued: {log}"
    );
    assert_eq!(inst.maildir_count("postmaster"), 0);
}

#[test]
fn logger_receives_every_programs_log_lines() {
    let inst = Instance::new("send-logger");
    let (code, err) = inst.sendmail(&["test@localhost"], b"Subject: logged\n\nx\n");
    assert_eq!(code, 0, "{err}");
    let log = inst.scratch().join("log.txt");
    let out = inst
        .command("tern-start")
        .args(["--once", "--logger", "/bin/sh", "-c"])
        .arg(format!("cat > {}", log.display()))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "log lines went around the logger: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    for want in [
        "tern-start: event=started",
        "tern-send: event=new",
        "tern-lspawn: event=delivery_end",
        "tern-send: event=exiting",
    ] {
        assert!(
            text.contains(want),
            "{want} missing from the logger's input:\n{text}"
        );
    }
    assert_eq!(inst.maildir_count("test"), 1);
}

#[test]
fn descriptors_left_open_by_the_caller_do_not_reach_the_programs_started() {
    // Root starts tern-start from a shell or cron with whatever is open
    // there; none of it may reach the programs that run under lower uids
    // (here: the logger, and what it runs).
    let inst = Instance::new("send-fds");
    let (code, err) = inst.sendmail(&["test@localhost"], b"Subject: fds\n\nx\n");
    assert_eq!(code, 0, "{err}");
    let fds = inst.scratch().join("fds.txt");
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "exec 7</etc/passwd 8>>{scratch}/leak; exec \"$0\" \"$@\"",
            scratch = inst.scratch().display()
        ))
        .arg(tern_tests::bin("tern-start"))
        .args(["--once", "--logger", "/bin/sh", "-c"])
        .arg(format!(
            "ls /proc/self/fd > {}; cat > /dev/null",
            fds.display()
        ))
        .env("TERN_HOME", inst.home())
        .env_remove("QMAILQUEUE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = std::fs::read_to_string(&fds).unwrap();
    let open: Vec<&str> = listed.lines().collect();
    assert!(open.contains(&"0") && open.contains(&"1"), "{listed}");
    for leaked in ["7", "8"] {
        assert!(
            !open.contains(&leaked),
            "descriptor {leaked} of tern-start's caller reached the logger: {open:?}"
        );
    }
    assert_eq!(inst.maildir_count("test"), 1);
}

#[test]
fn a_message_in_cur_unknown_to_the_journal_is_adopted_and_delivered() {
    let inst = Instance::new("send-orphan");
    let (code, err) = inst.sendmail(&["test@localhost"], b"Subject: orphan\n\nadopt me\n");
    assert_eq!(code, 0, "{err}");
    // Stand in for a lost journal record: move the file to cur/ by hand.
    let q = inst.queue();
    let id = q.list().unwrap()[0].id;
    std::fs::rename(
        q.path(id, tern_spool::Stage::New),
        q.path(id, tern_spool::Stage::Active),
    )
    .unwrap();
    let out = inst.command("tern-start").arg("--once").output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("event=adopted"), "{log}");
    assert_eq!(inst.maildir_count("test"), 1);
    assert_eq!(q.count().unwrap(), 0);
}

/// `ternctl flush` (SIGALRM) can reach tern-send as soon as its pid file
/// names it, while it is still replaying its journal: the signal must wait
/// for the event loop, not kill the manager (SIGALRM's default action).
#[test]
fn signals_right_at_start_do_not_kill_the_manager() {
    let inst = Instance::new("send-early-alarm");
    let pid_file = inst.home().join("queue/state/pid");
    let mut daemon = Daemon::start(&inst);
    // Signal every pid the file names, as fast as possible, for a while.
    let mut signalled = std::collections::HashSet::new();
    let until = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            for sig in [rustix::process::Signal::ALARM, rustix::process::Signal::HUP] {
                if let Some(p) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(p, sig);
                }
            }
            signalled.insert(pid);
        }
    }
    assert!(!signalled.is_empty(), "tern-send never wrote its pid file");
    assert!(
        daemon.try_wait().is_none(),
        "tern-start ended: {}",
        daemon.log()
    );
    assert!(
        !daemon.log().contains("tern-send ended"),
        "{}",
        daemon.log()
    );
    // and it still works
    let (code, err) = inst.sendmail(&["test@localhost"], b"Subject: after\n\nstill here\n");
    assert_eq!(code, 0, "{err}");
    assert!(
        wait_until(30, || inst.maildir_count("test") == 1),
        "{}",
        daemon.log()
    );
    assert!(
        daemon.stop(30).is_some_and(|s| s.success()),
        "{}",
        daemon.log()
    );
}

/// qmail's VERP: a sender `prefix-@host-@[]` is expanded per recipient,
/// `prefix-local=domain@host`, so each delivery carries its own return
/// path (ezmlm and VERP lists depend on it); before, the literal
/// `"prefix-@host-"@[]` reached the mailbox.
#[test]
fn verp_sender_is_expanded_per_recipient() {
    let inst = Instance::with_mailboxes("send-verp", &["test", "alice"]);
    // As ezmlm queues: straight through the qmail-queue interface.
    let r = inst.inject_raw(
        b"Subject: verp\n\nto the list\n",
        &tern_tests::envelope(
            "list-owner-@lists.example-@[]",
            &["test@localhost", "alice@localhost", "test-nobody@localhost"],
        ),
    );
    assert_eq!(r.code(), 0, "{}", r.stderr);
    let out = inst.command("tern-start").arg("--once").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The bounce for the failed recipient goes to its own expanded address.
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        log.contains("rcpt=\"list-owner-test-nobody=localhost@lists.example\""),
        "{log}"
    );
    for (who, want) in [
        (
            "test",
            "Return-Path: <list-owner-test=localhost@lists.example>",
        ),
        (
            "alice",
            "Return-Path: <list-owner-alice=localhost@lists.example>",
        ),
    ] {
        let got = inst.maildir(who);
        assert_eq!(
            got.len(),
            1,
            "{who}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&got[0]).into_owned();
        assert!(text.starts_with(want), "{who}: {text}");
    }
}

/// A VERP sender grows by each recipient: an expansion over the spawners'
/// 1000-byte bound fails that recipient (5.1.7) instead of a request the
/// spawner would refuse (it took tern-send for broken and stopped).
#[test]
fn verp_expansion_past_the_bound_fails_only_that_recipient() {
    let inst = Instance::with_mailboxes("send-verp-long", &["test"]);
    let sender = format!("p-@{}.example-@[]", "h".repeat(500));
    let long_rcpt = format!("test-{}@localhost", "x".repeat(480));
    let r = inst.inject_raw(
        b"Subject: long\n\nx\n",
        &tern_tests::envelope(&sender, &[&long_rcpt, "test@localhost"]),
    );
    assert_eq!(r.code(), 0, "{}", r.stderr);
    let out = inst.command("tern-start").arg("--once").output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert!(log.contains("longer than 1000 bytes. (#5.1.7)"), "{log}");
    assert_eq!(inst.maildir_count("test"), 1, "{log}");
}

/// A daemon that starts while someone holds the manager lock (ternctl's
/// offline operations do, for seconds) waits for it instead of exiting
/// and taking tern-start with it; once the lock is free it delivers.
#[test]
fn a_starting_daemon_waits_for_a_held_manager_lock() {
    let inst = Instance::new("send-lockwait");
    let lock = inst.home().join("queue/state/lock");
    // A holder we release by hand: flock(1) waits on its stdin.
    let mut holder = std::process::Command::new("flock")
        .arg("-x")
        .arg(&lock)
        .args(["-c", "read x"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("flock(1) from util-linux");
    let (code, err) = inst.sendmail(&["-i", "test@localhost"], &message(1));
    assert_eq!(code, 0, "{err}");
    let mut d = Daemon::start(&inst);
    assert!(
        wait_until(20, || d.log().contains("event=waiting_for_lock")),
        "{}",
        d.log()
    );
    assert_eq!(
        inst.maildir_count("test"),
        0,
        "delivered while the lock was held"
    );
    assert!(d.try_wait().is_none(), "tern-start exited: {}", d.log());
    drop(holder.stdin.take());
    let _ = holder.wait();
    assert!(
        wait_until(30, || inst.maildir_count("test") == 1),
        "not delivered once the lock was free: {}",
        d.log()
    );
    d.stop(10);
}
