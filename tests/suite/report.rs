//! `ternctl report` over the real programs' logs: mail sent through a test
//! instance (SMTP into tern-listen + tern-smtpd with and without STARTTLS,
//! a relay attempt refused at RCPT, sendmail to a local mailbox, to an
//! aiosmtpd peer through smtproutes over STARTTLS, and to a recipient the
//! peer refuses, which bounces), the queue run by `tern-start --once` with
//! daemontools' `multilog t` as its logger (TAI64N time stamps); the
//! report's numbers are checked against what was sent. The same log read
//! gzip-compressed and from stdin gives the same report.
//!
//! Needs python3-aiosmtpd under /usr/bin/python3, openssl, multilog
//! (Debian daemontools) and gzip; a missing one prints SKIP.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use tern_tests::{
    Front, Instance, PYTHON, Peer, PeerOptions, bin, have_tool, make_cert, python,
    self_signed_files, skip, wait_until,
};

fn tools(test: &str) -> bool {
    for t in ["openssl", "multilog", "gzip"] {
        if !have_tool(t) {
            skip(test, &format!("{t} not installed"));
            return false;
        }
    }
    if !Path::new(PYTHON).is_file() || python("import aiosmtpd", &[]).0 != 0 {
        skip(test, "aiosmtpd not importable by /usr/bin/python3");
        return false;
    }
    true
}

fn control(inst: &Instance, name: &str, text: &str) {
    std::fs::write(inst.home().join("control").join(name), format!("{text}\n"))
        .unwrap_or_else(|e| panic!("write control/{name}: {e}"));
}

/// `ternctl report --json ARGS` (stdin from `input`); the parsed document.
fn report(args: &[&Path], input: Option<&[u8]>) -> serde_json::Value {
    let mut child = Command::new(bin("ternctl"))
        .arg("report")
        .arg("--json")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ternctl report");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.unwrap_or_default().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for ternctl report");
    writer.join().expect("writer");
    assert!(
        out.status.success(),
        "ternctl report: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ternctl report --json prints JSON")
}

const SMTP: &str = r#"
import smtplib, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
port = int(sys.argv[1])
s = smtplib.SMTP("127.0.0.1", port, local_hostname="py.test", timeout=30)
s.sendmail("plain@client.test", ["test@localhost"], b"Subject: plain\r\n\r\nplain\r\n")
s.quit()
s = smtplib.SMTP("127.0.0.1", port, local_hostname="py.test", timeout=30)
s.starttls(context=ctx)
s.sendmail("tls@client.test", ["test@localhost"], b"Subject: tls\r\n\r\ntls\r\n")
s.quit()
s = smtplib.SMTP("127.0.0.1", port, local_hostname="py.test", timeout=30)
s.ehlo()
s.mail("relay@client.test")
print("relay", s.rcpt("victim@elsewhere.test")[0])
s.quit()
"#;

#[test]
fn report_counts_what_real_programs_logged() {
    let t = "report::report_counts_what_real_programs_logged";
    if !tools(t) {
        return;
    }
    let inst = Instance::new("report");
    control(&inst, "timeoutconnect", "10");
    control(&inst, "timeoutremote", "60");
    control(&inst, "remoteprivate", "127.0.0.0/8\n127.0.0.1\n::1");
    let (cert, key) = self_signed_files(inst.scratch(), "peer.remote.test");
    let peer = Peer::on_free_port(
        inst.scratch(),
        &PeerOptions {
            reject: vec!["gone@remote.test".into()],
            tls: Some((cert, key)),
            ..PeerOptions::default()
        },
    );
    control(
        &inst,
        "smtproutes",
        &format!("remote.test:[127.0.0.1]:{}", peer.port()),
    );

    // SMTP in: no RELAYCLIENT, so the relay attempt is refused at RCPT.
    make_cert(&inst, "mx.report.test");
    let front = Front::listen(&inst, "127.0.0.1:allow\n:deny\n", &[]);
    let (code, out) = python(SMTP, &[&front.port.to_string()]);
    assert_eq!(code, 0, "{out}\n{}", front.log());
    assert!(out.contains("relay 553"), "{out}");

    // sendmail: 3 local, 2 remote, 1 refused by the peer (bounced to
    // test@localhost, which is one more message and local delivery).
    let send = |rcpt: &str, subject: &str| {
        let msg = format!("From: test@localhost\nSubject: {subject}\n\nbody\n");
        let (code, err) = inst.sendmail(&["-f", "test@localhost", rcpt], msg.as_bytes());
        assert_eq!(code, 0, "sendmail: {err}");
    };
    for i in 0..3 {
        send("test@localhost", &format!("local {i}"));
    }
    for i in 0..2 {
        send("here@remote.test", &format!("remote {i}"));
    }
    send("gone@remote.test", "refused");

    let logdir = inst.scratch().join("multilog");
    let out = inst
        .command("tern-start")
        .arg("--once")
        .arg("--logger")
        .args(["multilog", "t"])
        .arg(&logdir)
        .output()
        .expect("run tern-start --once");
    let current = logdir.join("current");
    assert!(
        out.status.success(),
        "tern-start --once: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&current).unwrap_or_default()
    );
    assert!(wait_until(30, || inst.maildir_count("test") == 6));
    assert_eq!(peer.message_count(), 2, "{}", peer.log());
    drop(front);
    let front_log = inst.scratch().join("front.log");
    std::fs::write(
        &front_log,
        std::fs::read_to_string(
            std::fs::read_dir(inst.scratch())
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| {
                    p.file_name().is_some_and(|n| {
                        n.to_string_lossy().starts_with("listen-")
                            && p.extension().is_some_and(|x| x == "log")
                    })
                })
                .expect("the listener's log"),
        )
        .unwrap(),
    )
    .unwrap();
    let tern_log = std::fs::read_to_string(&current).unwrap();
    let ctx = || {
        format!(
            "--- multilog:\n{tern_log}\n--- front:\n{}",
            std::fs::read_to_string(&front_log).unwrap()
        )
    };

    let j = report(&[&current, &front_log], None);
    let n = |v: &serde_json::Value| {
        v.as_u64()
            .unwrap_or_else(|| panic!("not a number: {v}\n{j}"))
    };
    // 2 by SMTP, 6 by sendmail, 1 bounce.
    assert_eq!(n(&j["messages"]["received"]), 9, "{j}\n{}", ctx());
    assert_eq!(n(&j["messages"]["smtp"]["queued"]), 2, "{j}");
    assert_eq!(n(&j["messages"]["smtp"]["queued_tls"]), 1, "{j}");
    assert_eq!(n(&j["messages"]["smtp"]["connections"]), 3, "{j}");
    assert_eq!(n(&j["messages"]["rejected"]["permanent"]), 1, "{j}");
    assert_eq!(n(&j["messages"]["rejected"]["temporary"]), 0, "{j}");
    assert!(
        j["top"]["rejections"]["items"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("553 "),
        "{j}"
    );
    assert_eq!(n(&j["messages"]["bounces_sent"]), 1, "{j}");
    assert_eq!(n(&j["recipients"]["local"]["delivered"]), 6, "{j}");
    assert_eq!(n(&j["recipients"]["remote"]["delivered"]), 2, "{j}");
    assert_eq!(n(&j["recipients"]["deferred"]), 0, "{j}");
    assert_eq!(n(&j["recipients"]["bounced"]), 1, "{j}");
    assert!(
        j["top"]["bounces"]["items"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no such mailbox here"),
        "{j}"
    );
    assert_eq!(n(&j["delay_seconds"]["count"]), 8, "{j}");
    assert_eq!(n(&j["tls"]["outbound"]["tls"]), 2, "{j}");
    assert_eq!(n(&j["tls"]["outbound"]["plain"]), 0, "{j}");
    assert_eq!(n(&j["tls"]["inbound"]["tls"]), 1, "{j}");
    assert_eq!(n(&j["tls"]["inbound"]["plain"]), 1, "{j}");
    let top = |list: &str, field: &str| {
        let i = &j["top"][list]["items"][0];
        (i[field].as_str().unwrap_or("").to_string(), n(&i["count"]))
    };
    assert_eq!(
        top("recipients", "recipient"),
        ("test@localhost".into(), 6),
        "{j}"
    );
    assert_eq!(top("domains", "domain"), ("remote.test".into(), 2), "{j}");
    assert_eq!(
        top("senders", "sender"),
        ("test@localhost".into(), 6),
        "{j}"
    );
    // multilog stamped every line of the queue run; the listener's are
    // untimed.
    let hours = j["per_hour"].as_array().expect("per_hour");
    assert!(!hours.is_empty() && hours.len() <= 2, "{j}");
    let sum = |k: &str| hours.iter().map(|h| n(&h[k])).sum::<u64>();
    assert_eq!(sum("received"), 9, "{j}");
    assert_eq!(sum("delivered"), 8, "{j}");
    assert_eq!(sum("bounced"), 1, "{j}");
    let front_lines = std::fs::read_to_string(&front_log).unwrap().lines().count() as u64;
    assert_eq!(n(&j["lines"]["untimed"]), front_lines, "{j}");
    assert_eq!(n(&j["lines"]["unparsed"]), 0, "{j}\n{}", ctx());

    // The same log gzip-compressed, and from stdin, read the same.
    let status = Command::new("gzip")
        .arg("-k")
        .arg(&current)
        .status()
        .expect("gzip");
    assert!(status.success());
    let gz = logdir.join("current.gz");
    assert_eq!(report(&[&gz, &front_log], None), j);
    let mut both = std::fs::read(&current).unwrap();
    both.extend(std::fs::read(&front_log).unwrap());
    assert_eq!(report(&[], Some(&both)), j);

    // The text form says the same.
    let text = Command::new(bin("ternctl"))
        .arg("report")
        .arg(&current)
        .arg(&front_log)
        .output()
        .expect("ternctl report");
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("        9  received"), "{text}");
    assert!(
        text.contains("        8  delivered (local 6, remote 2)"),
        "{text}"
    );
    assert!(
        text.contains("outbound 2 of 2 remote deliveries (100.0%)"),
        "{text}"
    );
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tern_tests::scratch_dir("report-bad");
    let run = |args: &[&str], input: &[u8]| {
        let mut c = Command::new(bin("ternctl"))
            .arg("report")
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input).unwrap();
        let o = c.wait_with_output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, _, err) = run(&["missing.log"], b"");
    assert_eq!(code, 111, "{err}");
    assert!(err.contains("cannot open missing.log"), "{err}");
    // A truncated gzip stream: the magic, then nothing valid.
    let (code, _, err) = run(&[], b"\x1f\x8b\x08\x00\x00");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("stdin: bad gzip data"), "{err}");
    let (code, _, err) = run(&["--top", "999999"], b"");
    assert_eq!(code, 1, "{err}");
    // Binary garbage is counted, not fatal.
    let (code, out, err) = run(&["--json"], b"\x00\x01\x02\nfoo: event=\n\xff");
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["lines"]["unparsed"], 3, "{j}");
    let _ = std::fs::remove_dir_all(&dir);
}
