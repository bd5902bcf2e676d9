//! SMTP AUTH and submission in tern-smtpd over real TCP on 127.0.0.1,
//! under tern-listen (127.0.0.1 allowed, no RELAYCLIENT): logins made with
//! `ternctl passwd` and checked by tern-checkpassword through the
//! checkpassword interface; `swaks --tls --auth PLAIN|LOGIN` with good and
//! bad passwords (235, 535 after the delay); AUTH neither offered nor
//! accepted without TLS (538); relay refused before AUTH and allowed
//! after; three failures disconnect (421); the Received line says
//! ESMTPSA and holds no password, nor does the log; Python smtplib
//! `starttls(); login()`; submission mode (`SUBMISSION=1`): 530 before
//! AUTH, 553 for a sender not the user's, Date and Message-ID added when
//! missing and kept when present, a header over 1 MiB refused with 552
//! (DATA and BDAT).
//!
//! A missing tool (python3, swaks, openssl, Net::SSLeay) makes the tests
//! that need it print SKIP; `scripts/test` installs them.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tern_tests::{Front, Instance, PYTHON, bin, have_tool, make_cert, skip};

const PASSWORD: &str = "s3cret-Pa55";
/// The failed-AUTH delay the tests run with (TERN_AUTH_DELAY_MS).
const DELAY_MS: u64 = 400;

/// tern-smtpd under tern-listen on 127.0.0.1 (no RELAYCLIENT), with
/// `env` added (and the test's failed-AUTH delay).
fn start(inst: &Instance, env: &[(&str, &str)]) -> Front {
    let delay = DELAY_MS.to_string();
    let mut all: Vec<(&str, &str)> = vec![("TERN_AUTH_DELAY_MS", delay.as_str())];
    all.extend_from_slice(env);
    Front::listen(inst, "127.0.0.1:allow\n:deny\n", &all)
}

fn need(test: &str, tools: &[&str]) -> bool {
    for t in tools {
        let ok = match *t {
            "python3" => Path::new(PYTHON).is_file(),
            "ssleay" => Command::new("perl")
                .args(["-MNet::SSLeay", "-e", "1"])
                .status()
                .is_ok_and(|s| s.success()),
            _ => have_tool(t),
        };
        if !ok {
            skip(test, &format!("{t} not installed"));
            return false;
        }
    }
    true
}

/// A self-signed certificate in `control/servercert.pem`.
/// `ternctl passwd login` with `password` on stdin.
fn passwd(inst: &Instance, login: &str, password: &str) {
    let mut child = inst
        .command("ternctl")
        .args(["passwd", login])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ternctl passwd");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ternctl passwd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An instance with a certificate, login `joe` and tern-checkpassword.
fn setup(name: &str) -> Instance {
    let inst = Instance::new(name);
    make_cert(&inst, "mx.auth.test");
    passwd(&inst, "joe", PASSWORD);
    std::fs::write(
        inst.home().join("control/checkpassword"),
        format!("{}\n", bin("tern-checkpassword").display()),
    )
    .unwrap();
    inst
}

/// Every queued message, as text.
fn queued(inst: &Instance) -> Vec<String> {
    let q = inst.queue();
    q.list()
        .expect("list queue")
        .iter()
        .map(|m| String::from_utf8_lossy(&q.read_message(m.id).expect("read")).into_owned())
        .collect()
}

fn python(script: &str, port: u16) -> (i32, String) {
    tern_tests::python(&format!("{CTX}{script}"), &[&port.to_string(), PASSWORD])
}

const CTX: &str = r#"
import smtplib, ssl, sys, time, base64
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
port = int(sys.argv[1])
pw = sys.argv[2]
"#;

#[test]
fn ternctl_passwd_and_tern_checkpassword() {
    let inst = Instance::new("auth-checkpassword");
    passwd(&inst, "joe", "first");
    passwd(&inst, "ann@example.com", "annpw");
    passwd(&inst, "joe", PASSWORD);
    let file = inst.home().join("control/passwords");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.starts_with("joe:$argon2id$v=19$"), "{text}");
    assert!(!text.contains(PASSWORD) && !text.contains("annpw"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o640
    );
    // Bad logins and passwords are refused by ternctl.
    for (login, pw) in [("a:b", "x"), ("a b", "x"), ("joe", "")] {
        let mut c = inst
            .command("ternctl")
            .args(["passwd", login])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // ternctl may refuse the login before it reads the password and
        // be gone already: a broken pipe here is not a failure (the exit
        // code below is what is checked).
        let _ = c
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{pw}\n").as_bytes());
        assert_eq!(c.wait().unwrap().code(), Some(1), "{login:?} {pw:?}");
    }
    // tern-checkpassword: fd 3 from a pipe, the next program prints $AUTHUSER.
    let run = |input: &str| {
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"printf "$1" | "$2" /bin/sh -c 'echo "user=$AUTHUSER/$USER"' 3<&0 0</dev/null"#)
            .arg("sh")
            .arg(input)
            .arg(bin("tern-checkpassword"))
            .env("TERN_HOME", inst.home())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(&format!("joe\\0{PASSWORD}\\0<1@x>\\0"));
    assert_eq!((code, out.as_str()), (Some(0), "user=joe/joe\n"));
    assert_eq!(run("ann@example.com\\0annpw\\0ts\\0").0, Some(0));
    assert_eq!(run("joe\\0first\\0ts\\0"), (Some(1), String::new()));
    assert_eq!(run("nobody\\0x\\0ts\\0").0, Some(1));
    assert_eq!(run("joe\\0x").0, Some(2));
    let long = format!("joe\\0{}\\0ts\\0", "p".repeat(600));
    assert_eq!(run(&long).0, Some(2));
    // Unreadable file: temporary trouble.
    std::fs::remove_file(&file).unwrap();
    assert_eq!(run(&format!("joe\\0{PASSWORD}\\0ts\\0")).0, Some(111));
}

fn swaks(front: &Front, args: &[&str]) -> (bool, String, Duration) {
    let t = Instant::now();
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", front.port)])
        .args(["--to", "test@localhost", "--from", "joe@localhost", "--tls"])
        .args([
            "--helo",
            "swaks.test",
            "--timeout",
            "30",
            "--auth-user",
            "joe",
        ])
        .args(args)
        .output()
        .expect("run swaks");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        t.elapsed(),
    )
}

#[test]
fn swaks_auth_plain_and_login_over_tls() {
    let test = "auth::swaks_auth_plain_and_login_over_tls";
    if !need(test, &["swaks", "openssl", "ssleay"]) {
        return;
    }
    let inst = setup("auth-swaks");
    let front = start(&inst, &[]);
    for mech in ["PLAIN", "LOGIN"] {
        let (ok, t, _) = swaks(&front, &["--auth", mech, "--auth-password", PASSWORD]);
        assert!(ok, "{mech}: {t}\n{}", front.log());
        assert!(t.contains("<~  235 2.7.0"), "{t}");
        let (ok, t, took) = swaks(&front, &["--auth", mech, "--auth-password", "wrong"]);
        assert!(!ok, "{t}");
        assert!(t.contains("<~* 535 5.7.8"), "{t}");
        assert!(took >= Duration::from_millis(DELAY_MS), "{took:?}");
    }
    let msgs = queued(&inst);
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    for m in &msgs {
        assert!(m.contains(" with ESMTPSA (TLS1."), "{m}");
        assert!(!m.contains(PASSWORD), "{m}");
    }
    let log = front.log();
    assert_eq!(
        log.matches("event=auth user=joe result=ok").count(),
        2,
        "{log}"
    );
    assert_eq!(
        log.matches("event=auth user=joe result=fail").count(),
        2,
        "{log}"
    );
    assert!(!log.contains(PASSWORD) && !log.contains("wrong"), "{log}");
}

#[test]
fn smtplib_auth_relay_and_refusals() {
    let test = "auth::smtplib_auth_relay_and_refusals";
    if !need(test, &["python3", "openssl"]) {
        return;
    }
    let inst = setup("auth-smtplib");
    let front = start(&inst, &[]);
    let script = r#"
s = smtplib.SMTP("127.0.0.1", port, local_hostname="py.test", timeout=30)
s.ehlo()
print("plain auth", s.has_extn("auth"))
print("plain AUTH", s.docmd("AUTH PLAIN " + base64.b64encode(b"\0joe\0" + pw.encode()).decode())[0])
s.docmd("MAIL FROM:<joe@localhost>")
print("relay before", s.docmd("RCPT TO:<x@elsewhere.example>")[0])
s.docmd("RSET")
s.starttls(context=ctx)
s.ehlo()
print("tls auth", s.esmtp_features.get("auth").strip())
print("bad b64", s.docmd("AUTH PLAIN !!!!")[0])
print("cancel", s.docmd("AUTH LOGIN")[0], s.docmd("*")[0])
print("login", s.login("joe", pw)[0])
s.docmd("MAIL FROM:<joe@localhost>")
print("relay after", s.docmd("RCPT TO:<x@elsewhere.example>")[0])
print("local", s.docmd("RCPT TO:<test@localhost>")[0])
print("end", s.data(b"Subject: hi\r\n\r\nauthenticated\r\n")[0])
s.quit()
# Three failures close the connection.
s = smtplib.SMTP("127.0.0.1", port, local_hostname="py.test", timeout=30)
s.starttls(context=ctx)
s.ehlo()
codes = []
t = time.time()
for i in range(3):
    codes.append(s.docmd("AUTH PLAIN " + base64.b64encode(b"\0joe\0nope").decode())[0])
print("failures", codes, time.time() - t >= 3 * 0.4)
try:
    s.docmd("NOOP")
    print("after: open")
except smtplib.SMTPServerDisconnected:
    print("after: closed")
"#;
    let (code, out) = python(script, front.port);
    assert_eq!(code, 0, "{out}\n{}", front.log());
    for want in [
        "plain auth False",
        "plain AUTH 538",
        "relay before 553",
        "tls auth PLAIN LOGIN",
        "bad b64 501",
        "cancel 334 501",
        "login 235",
        "relay after 250",
        "local 250",
        "end 250",
        "failures [535, 535, 421] True",
        "after: closed",
    ] {
        assert!(
            out.contains(want),
            "{want:?} missing:\n{out}\n{}",
            front.log()
        );
    }
    let msgs = queued(&inst);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(msgs[0].contains("by "), "{}", msgs[0]);
    assert!(msgs[0].contains(" with ESMTPSA (TLS1."), "{}", msgs[0]);
    assert!(!msgs[0].contains(PASSWORD));
    assert!(!front.log().contains(PASSWORD));
}

#[test]
fn submission_requires_auth_own_sender_and_completes_header() {
    let test = "auth::submission_requires_auth_own_sender_and_completes_header";
    if !need(test, &["python3", "openssl"]) {
        return;
    }
    let inst = setup("auth-submission");
    let front = start(&inst, &[("SUBMISSION", "1")]);
    let script = r#"
s = smtplib.SMTP("127.0.0.1", port, local_hostname="py.test", timeout=30)
s.starttls(context=ctx)
s.ehlo()
print("unauth", s.docmd("MAIL FROM:<joe@localhost>")[0])
s.login("joe", pw)
print("other", s.docmd("MAIL FROM:<ann@localhost>")[0])
print("own", s.docmd("MAIL FROM:<joe@localhost>")[0])
s.docmd("RCPT TO:<test@localhost>")
print("bare", s.data(b"Subject: bare\r\n\r\nno date\r\n")[0])
s.docmd("MAIL FROM:<joe@localhost>")
s.docmd("RCPT TO:<test@localhost>")
print("full", s.data(b"Subject: full\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <keep@me>\r\n\r\nhas both\r\n")[0])
s.docmd("MAIL FROM:<joe@localhost>")
s.docmd("RCPT TO:<test@localhost>")
chunk1 = b"Subject: chunked\r\nX-A: 1\r\n"
chunk2 = b"\r\nby BDAT\r\n"
s.send(b"BDAT %d\r\n" % len(chunk1) + chunk1)
print("bdat1", s.getreply()[0])
s.send(b"BDAT %d LAST\r\n" % len(chunk2) + chunk2)
print("bdat2", s.getreply()[0])
big = b"Subject: big\r\n" + (b"X-Big: " + b"x" * 70 + b"\r\n") * 15000 + b"\r\nbody\r\n"
s.docmd("MAIL FROM:<joe@localhost>")
s.docmd("RCPT TO:<test@localhost>")
print("bigdata", s.data(big)[0])
s.docmd("MAIL FROM:<joe@localhost>")
s.docmd("RCPT TO:<test@localhost>")
s.send(b"BDAT %d LAST\r\n" % len(big) + big)
print("bigbdat", s.getreply()[0])
s.quit()
"#;
    let (code, out) = python(script, front.port);
    assert_eq!(code, 0, "{out}\n{}", front.log());
    for want in [
        "unauth 530",
        "other 553",
        "own 250",
        "bare 250",
        "full 250",
        "bdat1 250",
        "bdat2 250",
        // A header over 1 MiB: refused for good, by DATA and BDAT alike.
        "bigdata 552",
        "bigbdat 552",
    ] {
        assert!(
            out.contains(want),
            "{want:?} missing:\n{out}\n{}",
            front.log()
        );
    }
    let msgs = queued(&inst);
    assert_eq!(msgs.len(), 3);
    let chunked = msgs
        .iter()
        .find(|m| m.contains("Subject: chunked"))
        .unwrap();
    let (head, body) = chunked.split_once("\n\n").unwrap();
    assert!(
        head.contains("\nX-A: 1\nDate: ") && head.contains("\nMessage-ID: <"),
        "{chunked}"
    );
    assert_eq!(body, "by BDAT\n");
    let bare = msgs.iter().find(|m| m.contains("Subject: bare")).unwrap();
    let full = msgs.iter().find(|m| m.contains("Subject: full")).unwrap();
    let (head, body) = bare.split_once("\n\n").unwrap();
    assert!(
        head.contains("\nDate: ") && head.contains("\nMessage-ID: <"),
        "{bare}"
    );
    assert_eq!(body, "no date\n");
    assert!(
        full.ends_with(
            "Subject: full\nDate: Thu, 1 Jan 2026 00:00:00 +0000\nMessage-ID: <keep@me>\n\nhas both\n"
        ),
        "{full}"
    );
    assert_eq!(full.matches("Date:").count(), 1, "{full}");
}

#[test]
fn authplainloopback_offers_auth_without_tls() {
    let test = "auth::authplainloopback_offers_auth_without_tls";
    if !need(test, &["python3"]) {
        return;
    }
    let inst = Instance::new("auth-loopback");
    passwd(&inst, "joe", PASSWORD);
    let control = inst.home().join("control");
    std::fs::write(
        control.join("checkpassword"),
        format!("{}\n", bin("tern-checkpassword").display()),
    )
    .unwrap();
    std::fs::write(control.join("authplainloopback"), "1\n").unwrap();
    let front = start(&inst, &[]);
    let script = r#"
s = smtplib.SMTP("127.0.0.1", port, local_hostname="py.test", timeout=30)
s.ehlo()
print("auth", s.esmtp_features.get("auth", "").strip())
print("login", s.login("joe", pw)[0])
print("sent", s.sendmail("joe@localhost", ["test@localhost", "x@elsewhere.example"], b"Subject: s\r\n\r\nb\r\n"))
s.quit()
"#;
    let (code, out) = python(script, front.port);
    assert_eq!(code, 0, "{out}\n{}", front.log());
    for want in ["auth PLAIN LOGIN", "login 235", "sent {}"] {
        assert!(
            out.contains(want),
            "{want:?} missing:\n{out}\n{}",
            front.log()
        );
    }
    let msgs = queued(&inst);
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].contains(" with ESMTPA id "), "{}", msgs[0]);
}

/// A fake checkpassword for the throttle tests: it counts its runs and
/// the most that ran at once (a counter under `flock`, no timings), holds
/// each check a moment, and accepts only `joe` / `good`.
const FAKE_CHECKER: &str = r#"#!/bin/sh
d="$(dirname "$0")"
creds=$(tr '\0' ' ' <&3)
flock "$d/lock" sh -c '
  n=$(($(cat "$1/cur") + 1)); echo $n > "$1/cur"; echo run >> "$1/runs"
  [ $n -gt $(cat "$1/max") ] && echo $n > "$1/max"; exit 0' sh "$d"
sleep 0.2
flock "$d/lock" sh -c 'echo $(($(cat "$1/cur") - 1)) > "$1/cur"' sh "$d"
case "$creds" in "joe good "*) exit 0 ;; esac
exit 1
"#;

/// An instance whose checkpassword is [`FAKE_CHECKER`] (AUTH without TLS
/// for loopback clients), with `control/authfailures` = `failures`.
/// Returns it and the checker's counter directory.
fn fake_checker_instance(name: &str, failures: u32) -> (Instance, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let inst = Instance::new(name);
    let d = inst.scratch().join("checker");
    std::fs::create_dir_all(&d).unwrap();
    let prog = d.join("check");
    std::fs::write(&prog, FAKE_CHECKER).unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (f, v) in [("cur", "0\n"), ("max", "0\n"), ("runs", ""), ("lock", "")] {
        std::fs::write(d.join(f), v).unwrap();
    }
    let control = inst.home().join("control");
    std::fs::write(
        control.join("checkpassword"),
        format!("{}\n", prog.display()),
    )
    .unwrap();
    std::fs::write(control.join("authplainloopback"), "1\n").unwrap();
    std::fs::write(control.join("authconcurrency"), "2\n").unwrap();
    std::fs::write(control.join("authfailures"), format!("{failures}\n")).unwrap();
    (inst, d)
}

/// How many times the fake checker ran.
fn checker_runs(d: &Path) -> usize {
    std::fs::read_to_string(d.join("runs"))
        .unwrap()
        .lines()
        .count()
}

/// tern-smtpd over pipes for a client at `ip`: EHLO, one AUTH PLAIN with
/// `password`, QUIT. Not yet waited for.
fn auth_session(inst: &Instance, ip: &str, password: &str) -> std::process::Child {
    let mut c = inst.command("tern-smtpd");
    for v in [
        "TCPREMOTEHOST",
        "TCPREMOTEINFO",
        "RELAYCLIENT",
        "SMTPS",
        "SUBMISSION",
    ] {
        c.env_remove(v);
    }
    let mut child = c
        .env("TCPREMOTEIP", ip)
        .env("TCPLOCALIP", "127.0.0.1")
        .env("TCPLOCALPORT", "25")
        .env("TERN_AUTH_DELAY_MS", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tern-smtpd");
    let b64 = match password {
        "good" => "AGpvZQBnb29k",
        "bad" => "AGpvZQBiYWQ=",
        other => panic!("no encoding for {other}"),
    };
    let input = format!("EHLO t.test\r\nAUTH PLAIN {b64}\r\nQUIT\r\n");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child
}

/// The AUTH reply code of a finished [`auth_session`], and its output
/// and log.
fn auth_code(child: std::process::Child) -> (String, String) {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    // Greeting, EHLO (multi-line), then the AUTH reply.
    let code = text
        .lines()
        .skip(1)
        .find(|l| !l.starts_with("250"))
        .map(|l| l[..3].to_string())
        .unwrap_or_default();
    (code, format!("{text}\n{log}"))
}

#[test]
fn parallel_bad_logins_run_at_most_authconcurrency_checks() {
    let (inst, d) = fake_checker_instance("auth-concurrency", 100);
    // 50 connections from 50 addresses (no failure memory in play).
    let children: Vec<_> = (1..=50)
        .map(|i| auth_session(&inst, &format!("127.0.1.{i}"), "bad"))
        .collect();
    let mut busy = 0;
    for child in children {
        let (code, out) = auth_code(child);
        match code.as_str() {
            "535" => {}
            // No slot freed up in time: refused without a check.
            "454" => busy += 1,
            _ => panic!("unexpected AUTH reply {code:?}:\n{out}"),
        }
    }
    let max: u32 = std::fs::read_to_string(d.join("max"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let runs = checker_runs(&d);
    assert!((1..=2).contains(&max), "{max} checks ran at once (limit 2)");
    assert_eq!(runs + busy, 50, "runs {runs}, busy {busy}");
    // A good login still works afterwards.
    let (code, out) = auth_code(auth_session(&inst, "127.0.1.1", "good"));
    assert_eq!(code, "235", "{out}");
}

#[test]
fn repeated_failures_from_one_address_get_454_without_a_check() {
    let (inst, d) = fake_checker_instance("auth-failmemory", 3);
    let ip = "127.0.2.1";
    for _ in 0..3 {
        let (code, out) = auth_code(auth_session(&inst, ip, "bad"));
        assert_eq!(code, "535", "{out}");
    }
    assert_eq!(checker_runs(&d), 3);
    // The fourth connection, and even the right password: 454, no check.
    for pw in ["bad", "good"] {
        let (code, out) = auth_code(auth_session(&inst, ip, pw));
        assert_eq!(code, "454", "{out}");
        assert!(
            out.contains("event=auth_throttled ip=127.0.2.1 failures=3"),
            "{out}"
        );
    }
    assert_eq!(checker_runs(&d), 3);
    // Another address is not affected.
    let (code, out) = auth_code(auth_session(&inst, "127.0.2.2", "good"));
    assert_eq!(code, "235", "{out}");
    assert_eq!(checker_runs(&d), 4);
    // Once the window has passed (the record's last failure moved back
    // past control/authwindow), the address may try again.
    let mut moved = 0;
    for e in std::fs::read_dir(inst.home().join("auth")).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        if let Some(rest) = text.strip_prefix("127.0.2.1 ") {
            let failures = rest.split(' ').next().unwrap();
            std::fs::write(&p, format!("127.0.2.1 {failures} 1000\n")).unwrap();
            moved += 1;
        }
    }
    assert_eq!(moved, 1, "one record for 127.0.2.1");
    let (code, out) = auth_code(auth_session(&inst, ip, "good"));
    assert_eq!(code, "235", "{out}");
    // A corrupt record is no record.
    for e in std::fs::read_dir(inst.home().join("auth")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("fail.")
        {
            std::fs::write(&p, b"\xff\x00 not a record").unwrap();
        }
    }
    let (code, out) = auth_code(auth_session(&inst, "127.0.2.2", "bad"));
    assert_eq!(code, "535", "{out}");
}
