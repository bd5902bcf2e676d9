//! tern-smtpd over real TCP on 127.0.0.1, started per connection by two
//! launchers, tern-listen and ucspi-tcp's `tcpserver` (rules compiled with
//! `tcprules`), driven by real third-party clients: Python's smtplib
//! (`/usr/bin/python3`) and `swaks`. Messages are delivered by the real
//! queue manager and compared byte for byte in the Maildir; RELAYCLIENT
//! from the launcher's rules allows relaying and its absence gives 553;
//! 50 parallel connections of 20 messages each are all accepted and each
//! delivered exactly once.
//!
//! A missing tool (python3, swaks, tcpserver) makes the tests that need it
//! print SKIP; `scripts/test` installs them.

use std::collections::HashMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tern_tests::{Daemon, Instance, bin, have_tool, skip, strip_delivery_headers, wait_until};

const PYTHON: &str = "/usr/bin/python3";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Launcher {
    Listen,
    Tcpserver,
}

/// tern-smtpd listening on 127.0.0.1 through a launcher; the launcher is
/// killed when dropped (sessions end on their own).
struct Front {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Drop for Front {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Front {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A free port on 127.0.0.1 (bound, read, released; the launcher binds it
/// right after, which is racy only against other programs doing the same).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Starts tern-smtpd for `inst` under `launcher`, with RELAYCLIENT="" for
/// 127.0.0.1 when `relay`. None (after a SKIP line) when the launcher is
/// not installed.
fn start(test: &str, inst: &Instance, launcher: Launcher, relay: bool) -> Option<Front> {
    let rule = if relay {
        "127.0.0.1:allow,RELAYCLIENT=\"\"\n"
    } else {
        "127.0.0.1:allow\n"
    };
    let dir = inst.scratch();
    let log = dir.join(format!("front-{launcher:?}-{relay}.log"));
    let logf = std::fs::File::create(&log).expect("front log");
    let smtpd = bin("tern-smtpd");
    match launcher {
        Launcher::Listen => {
            let rules = dir.join(format!("listen-{relay}.rules"));
            std::fs::write(&rules, format!("{rule}:deny\n")).expect("rules");
            let child = inst
                .command("tern-listen")
                .args(["-c", "60", "-C", "60", "-x"])
                .arg(&rules)
                .args(["127.0.0.1", "0"])
                .arg(&smtpd)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(logf))
                .spawn()
                .expect("start tern-listen");
            let mut port = 0;
            assert!(
                wait_until(10, || {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    text.split_whitespace()
                        .find_map(|w| w.strip_prefix("local_port="))
                        .map(|p| port = p.parse().expect("port"))
                        .is_some()
                }),
                "tern-listen did not start"
            );
            Some(Front {
                child: Some(child),
                port,
                log,
            })
        }
        Launcher::Tcpserver => {
            if !have_tool("tcpserver") || !have_tool("tcprules") {
                skip(
                    test,
                    "tcpserver/tcprules not installed (Debian package ucspi-tcp)",
                );
                return None;
            }
            let src = dir.join(format!("tcp-{relay}.rules"));
            let cdb = dir.join(format!("tcp-{relay}.cdb"));
            std::fs::write(&src, format!("{rule}:deny\n")).expect("rules");
            let st = Command::new("tcprules")
                .arg(&cdb)
                .arg(dir.join("tcp.tmp"))
                .stdin(std::fs::File::open(&src).expect("rules source"))
                .status()
                .expect("run tcprules");
            assert!(st.success(), "tcprules failed");
            let port = free_port();
            let child = Command::new("tcpserver")
                .env("TERN_HOME", inst.home())
                .env_remove("QMAILQUEUE")
                .args(["-H", "-R", "-l", "localhost", "-c", "60", "-x"])
                .arg(&cdb)
                .args(["127.0.0.1", &port.to_string()])
                .arg(&smtpd)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(logf))
                .spawn()
                .expect("start tcpserver");
            assert!(
                wait_until(10, || TcpStream::connect(("127.0.0.1", port)).is_ok()),
                "tcpserver did not start listening on {port}"
            );
            Some(Front {
                child: Some(child),
                port,
                log,
            })
        }
    }
}

/// Runs a Python script with arguments; returns (exit code, stdout, stderr).
fn python(script: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One transaction with smtplib: prints `mail CODE`, `rcpt ADDR CODE` for
/// each recipient and `data CODE` when a recipient was accepted.
const SMTPLIB_ONE: &str = r#"
import smtplib, sys
port, sender, rcpts, path = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(","), sys.argv[4]
msg = open(path, "rb").read()
host = sys.argv[5] if len(sys.argv) > 5 else "127.0.0.1"
s = smtplib.SMTP(host, port, local_hostname="client.test", timeout=60)
s.ehlo("client.test")
code, _ = s.mail(sender)
print("mail", code)
ok = 0
for r in rcpts:
    code, _ = s.rcpt(r)
    print("rcpt", r, code)
    ok += code == 250
if ok:
    try:
        code, _ = s.data(msg)
    except smtplib.SMTPDataError as e:
        code = e.smtp_code
    print("data", code)
s.quit()
"#;

/// 50 connections in threads, 20 messages each (one session per thread);
/// prints `accepted N` and each failure.
const SMTPLIB_PARALLEL: &str = r#"
import smtplib, sys, threading
port, conns, per = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
accepted, errors, lock = [0], [], threading.Lock()
def run(i):
    try:
        s = smtplib.SMTP("127.0.0.1", port, local_hostname="par.test", timeout=120)
        for j in range(per):
            msg = (f"From: par@localhost\r\nTo: test@localhost\r\nSubject: par-{i}-{j}\r\n\r\n"
                   f"connection {i} message {j}\r\n").encode()
            s.sendmail("par@localhost", ["test@localhost"], msg)
            with lock:
                accepted[0] += 1
        s.quit()
    except Exception as e:
        with lock:
            errors.append(f"connection {i}: {e!r}")
ts = [threading.Thread(target=run, args=(i,)) for i in range(conns)]
[t.start() for t in ts]
[t.join() for t in ts]
print("accepted", accepted[0])
for e in errors:
    print("error", e)
sys.exit(1 if errors else 0)
"#;

fn need(test: &str, tool: &str, path_ok: bool) -> bool {
    if !path_ok {
        skip(test, &format!("{tool} not installed"));
        return false;
    }
    true
}

fn have_python() -> bool {
    Path::new(PYTHON).is_file()
}

/// Splits tern-smtpd's `Received:` line (two physical lines: `Received:
/// from ...` and `  by ...`) off the front of a stored message.
fn strip_smtp_received(rest: &[u8]) -> (String, &[u8]) {
    assert!(
        rest.starts_with(b"Received: from "),
        "no tern-smtpd Received line: {:?}",
        String::from_utf8_lossy(&rest[..rest.len().min(200)])
    );
    let mut end = 0;
    loop {
        let nl = rest[end..]
            .iter()
            .position(|&b| b == b'\n')
            .expect("end of Received line")
            + end
            + 1;
        end = nl;
        if !rest[end..].starts_with(b" ") && !rest[end..].starts_with(b"\t") {
            break;
        }
    }
    (
        String::from_utf8_lossy(&rest[..end]).into_owned(),
        &rest[end..],
    )
}

/// Waits for `n` messages in the `test` Maildir and returns them without
/// the delivery lines and tern-queue's line.
fn delivered(inst: &Instance, n: usize) -> Vec<Vec<u8>> {
    let mut d = Daemon::start(inst);
    let ok = wait_until(120, || inst.maildir_count("test") >= n);
    d.stop(20);
    assert!(
        ok,
        "{} of {n} messages delivered\n{}",
        inst.maildir_count("test"),
        d.log()
    );
    let files = inst.maildir("test");
    assert_eq!(files.len(), n, "more messages than sent");
    files
        .iter()
        .map(|f| strip_delivery_headers(f).1.to_vec())
        .collect()
}

fn check_received(line: &str, proto: &str) {
    assert!(line.contains("[127.0.0.1]"), "{line}");
    assert!(line.contains(&format!(" with {proto} id ")), "{line}");
    assert!(line.contains("\n  by "), "{line}");
}

/// The test message, with LF line ends (the stored form) and with CRLF
/// (the wire form a client is given).
const MESSAGE: &str = "From: a@b\nTo: test@localhost\nSubject: net test\n\nline one\n.leading dot\n..two dots\n\u{e9}t\u{e9} 8bit\n\nlast\n";

fn swaks_byte_exact(test: &str, launcher: Launcher) {
    if !need(test, "swaks", have_tool("swaks")) {
        return;
    }
    let inst = Instance::new(&test.replace("::", "-"));
    let Some(front) = start(test, &inst, launcher, false) else {
        return;
    };
    let data = inst.scratch().join("message");
    std::fs::write(&data, MESSAGE).expect("message");
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", front.port)])
        .args(["--to", "test@localhost", "--from", "a@b"])
        .args(["--helo", "swaks.test", "--timeout", "60"])
        .arg("--data")
        .arg(format!("@{}", data.display()))
        .output()
        .expect("run swaks");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "swaks failed: {}\n{transcript}\n{}",
        out.status,
        front.log()
    );
    // swaks dot-stuffed the two lines starting with a dot.
    assert!(transcript.contains(" -> ..leading dot"), "{transcript}");
    assert!(transcript.contains("<-  250 2.0.0 "), "{transcript}");
    let msgs = delivered(&inst, 1);
    let (received, body) = strip_smtp_received(&msgs[0]);
    check_received(&received, "ESMTP");
    assert!(
        received.starts_with("Received: from swaks.test "),
        "{received}"
    );
    // swaks ends DATA with its own CRLF before the final dot, so the stored
    // message is the file plus one empty line.
    let want = format!("{MESSAGE}\n");
    assert_eq!(
        String::from_utf8_lossy(body),
        want,
        "stored message differs"
    );
    assert_eq!(body, want.as_bytes());
}

#[test]
fn swaks_message_is_delivered_byte_exact_under_tern_listen() {
    swaks_byte_exact("smtp_net::swaks_listen", Launcher::Listen);
}

#[test]
fn swaks_message_is_delivered_byte_exact_under_tcpserver() {
    swaks_byte_exact("smtp_net::swaks_tcpserver", Launcher::Tcpserver);
}

/// Runs SMTPLIB_ONE; returns its output lines.
fn smtplib_one(front: &Front, inst: &Instance, sender: &str, rcpts: &[&str], msg: &[u8]) -> String {
    let path = inst.scratch().join("smtplib-message");
    std::fs::write(&path, msg).expect("message");
    let (code, out, err) = python(
        SMTPLIB_ONE,
        &[
            &front.port.to_string(),
            sender,
            &rcpts.join(","),
            path.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(
        code,
        0,
        "smtplib client failed: {err}\n{out}\n{}",
        front.log()
    );
    out
}

fn smtplib_byte_exact(test: &str, launcher: Launcher) {
    if !need(test, PYTHON, have_python()) {
        return;
    }
    let inst = Instance::new(&test.replace("::", "-"));
    let Some(front) = start(test, &inst, launcher, false) else {
        return;
    };
    // smtplib sends bytes as they are (it dot-stuffs, but does not fix
    // line ends): give it the wire form.
    let wire = MESSAGE.replace('\n', "\r\n");
    let out = smtplib_one(&front, &inst, "a@b", &["test@localhost"], wire.as_bytes());
    assert_eq!(
        out,
        "mail 250\nrcpt test@localhost 250\ndata 250\n",
        "{}",
        front.log()
    );
    let msgs = delivered(&inst, 1);
    let (received, body) = strip_smtp_received(&msgs[0]);
    check_received(&received, "ESMTP");
    assert!(
        received.starts_with("Received: from client.test "),
        "{received}"
    );
    assert_eq!(String::from_utf8_lossy(body), MESSAGE);
    assert_eq!(body, MESSAGE.as_bytes());
}

#[test]
fn smtplib_message_is_delivered_byte_exact_under_tern_listen() {
    smtplib_byte_exact("smtp_net::smtplib_listen", Launcher::Listen);
}

#[test]
fn smtplib_message_is_delivered_byte_exact_under_tcpserver() {
    smtplib_byte_exact("smtp_net::smtplib_tcpserver", Launcher::Tcpserver);
}

fn relay(test: &str, launcher: Launcher) {
    if !need(test, PYTHON, have_python()) {
        return;
    }
    let msg = b"From: a@b\r\nTo: x@example.net\r\nSubject: relay\r\n\r\nrelayed\r\n";
    // Without RELAYCLIENT: a foreign domain is refused, a local one taken.
    let inst = Instance::new(&test.replace("::", "-"));
    let Some(front) = start(test, &inst, launcher, false) else {
        return;
    };
    let out = smtplib_one(
        &front,
        &inst,
        "a@b",
        &["someone@example.net", "test@localhost"],
        msg,
    );
    assert_eq!(
        out,
        "mail 250\nrcpt someone@example.net 553\nrcpt test@localhost 250\ndata 250\n",
        "{}",
        front.log()
    );
    let queued = inst.queue().list().expect("list queue");
    assert_eq!(queued.len(), 1);
    let rcpts: Vec<&[u8]> = queued[0]
        .recipients
        .iter()
        .map(|r| r.address.as_slice())
        .collect();
    assert_eq!(rcpts, [&b"test@localhost"[..]]);
    drop(front);

    // With RELAYCLIENT="" from the rules: any domain is taken.
    let inst = Instance::new(&test.replace("::", "-"));
    let Some(front) = start(test, &inst, launcher, true) else {
        return;
    };
    let out = smtplib_one(&front, &inst, "a@b", &["someone@example.net"], msg);
    assert_eq!(
        out,
        "mail 250\nrcpt someone@example.net 250\ndata 250\n",
        "{}",
        front.log()
    );
    let queued = inst.queue().list().expect("list queue");
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].recipients.len(), 1);
    assert_eq!(queued[0].recipients[0].address, b"someone@example.net");
    assert_eq!(queued[0].sender, b"a@b");
}

#[test]
fn relayclient_from_tern_listen_rules() {
    relay("smtp_net::relay_listen", Launcher::Listen);
}

#[test]
fn relayclient_from_tcpserver_rules() {
    relay("smtp_net::relay_tcpserver", Launcher::Tcpserver);
}

fn parallel(test: &str, launcher: Launcher) {
    if !need(test, PYTHON, have_python()) {
        return;
    }
    const CONNS: usize = 50;
    const PER: usize = 20;
    let inst = Instance::new(&test.replace("::", "-"));
    let Some(front) = start(test, &inst, launcher, false) else {
        return;
    };
    let (code, out, err) = python(
        SMTPLIB_PARALLEL,
        &[
            &front.port.to_string(),
            &CONNS.to_string(),
            &PER.to_string(),
        ],
    );
    assert_eq!(code, 0, "parallel client: {out}\n{err}\n{}", front.log());
    assert_eq!(
        out.lines().next(),
        Some(format!("accepted {}", CONNS * PER).as_str())
    );
    assert_eq!(inst.queue().count().expect("count"), CONNS * PER);
    let msgs = delivered(&inst, CONNS * PER);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in &msgs {
        let (_, body) = strip_smtp_received(m);
        let text = String::from_utf8_lossy(body);
        let subject = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .expect("subject")
            .to_string();
        let (i, j) = subject
            .strip_prefix("par-")
            .and_then(|s| s.split_once('-'))
            .expect("par-i-j");
        assert_eq!(
            text,
            format!(
                "From: par@localhost\nTo: test@localhost\nSubject: {subject}\n\nconnection {i} message {j}\n"
            )
        );
        *seen.entry(subject).or_default() += 1;
    }
    // Exactly once each.
    assert_eq!(seen.len(), CONNS * PER);
    assert!(seen.values().all(|&n| n == 1));
    if launcher == Launcher::Listen {
        // Every session ended cleanly and was reaped.
        assert!(wait_until(10, || front
            .log()
            .matches("tern-listen: event=end ")
            .count()
            == CONNS));
        assert_eq!(
            front.log().matches(" status=0 ").count(),
            CONNS,
            "{}",
            front.log()
        );
    }
}

#[test]
fn fifty_parallel_connections_under_tern_listen() {
    parallel("smtp_net::parallel_listen", Launcher::Listen);
}

#[test]
fn fifty_parallel_connections_under_tcpserver() {
    parallel("smtp_net::parallel_tcpserver", Launcher::Tcpserver);
}

#[test]
fn relay_denied_then_session_continues_with_swaks() {
    // swaks reports a refused RCPT with exit 24 (documented "RCPT TO
    // rejected"); the message is not queued.
    let test = "smtp_net::swaks_relay_denied";
    if !need(test, "swaks", have_tool("swaks")) {
        return;
    }
    let inst = Instance::new(&test.replace("::", "-"));
    let Some(front) = start(test, &inst, Launcher::Listen, false) else {
        return;
    };
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", front.port)])
        .args([
            "--to",
            "someone@example.net",
            "--from",
            "a@b",
            "--timeout",
            "30",
        ])
        .output()
        .expect("run swaks");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(24), "{transcript}");
    assert!(transcript.contains("<** 553 5.7.1"), "{transcript}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(inst.queue().count().expect("count"), 0);
}

#[test]
fn ipv6_loopback_under_tern_listen() {
    let test = "smtp_net::ipv6_listen";
    if !need(test, PYTHON, have_python()) {
        return;
    }
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        skip(test, "cannot bind ::1 (no IPv6 loopback)");
        return;
    }
    let inst = Instance::new("smtp_net-ipv6_listen");
    let rules = inst.scratch().join("rules6");
    std::fs::write(&rules, "::1:allow,RELAYCLIENT=\"\"\n:deny\n").expect("rules");
    let log = inst.scratch().join("listen6.log");
    let child = inst
        .command("tern-listen")
        .arg("-x")
        .arg(&rules)
        .args(["::1", "0"])
        .arg(bin("tern-smtpd"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
        .spawn()
        .expect("start tern-listen");
    let mut port = 0;
    assert!(wait_until(10, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .split_whitespace()
            .find_map(|w| w.strip_prefix("local_port="))
            .map(|p| port = p.parse().expect("port"))
            .is_some()
    }));
    let front = Front {
        child: Some(child),
        port,
        log,
    };
    let path = inst.scratch().join("m6");
    let wire = MESSAGE.replace('\n', "\r\n");
    std::fs::write(&path, &wire).expect("message");
    let (code, out, err) = python(
        SMTPLIB_ONE,
        &[
            &port.to_string(),
            "a@b",
            "test@localhost,someone@example.net",
            path.to_str().expect("utf-8 path"),
            "::1",
        ],
    );
    assert_eq!(code, 0, "{err}\n{}", front.log());
    // RELAYCLIENT from the ::1 rule: the foreign domain is accepted too.
    assert_eq!(
        out,
        "mail 250\nrcpt test@localhost 250\nrcpt someone@example.net 250\ndata 250\n",
        "{}",
        front.log()
    );
    let msgs = delivered(&inst, 1);
    let (received, body) = strip_smtp_received(&msgs[0]);
    assert!(received.contains("[::1]"), "{received}");
    assert_eq!(body, MESSAGE.as_bytes());
}

/// inetd / systemd `Accept=yes`: no TCP* environment, the connected socket
/// is fd 0 and fd 1; tern-smtpd learns the addresses from
/// getpeername/getsockname.
#[test]
fn socket_on_stdin_without_tcp_environment() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::fd::OwnedFd;
    let inst = Instance::new("smtp-inetd");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::net::TcpStream::connect(addr).unwrap();
    let (server, _) = listener.accept().unwrap();
    let fd_in: OwnedFd = server.try_clone().unwrap().into();
    let fd_out: OwnedFd = server.into();
    let mut child = inst
        .command("tern-smtpd")
        .env_remove("TCPREMOTEIP")
        .env_remove("TCPLOCALIP")
        .env_remove("TCPREMOTEHOST")
        .env_remove("RELAYCLIENT")
        .env_remove("PROTO")
        .stdin(std::process::Stdio::from(fd_in))
        .stdout(std::process::Stdio::from(fd_out))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut w = client;
    let mut line = String::new();
    let mut expect = |reader: &mut BufReader<std::net::TcpStream>, code: &str| {
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            assert!(line.starts_with(code), "expected {code}, got {line:?}");
            if line.as_bytes().get(3) == Some(&b' ') {
                break;
            }
        }
    };
    expect(&mut reader, "220");
    w.write_all(b"EHLO inetd.test\r\n").unwrap();
    expect(&mut reader, "250");
    w.write_all(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<test@localhost>\r\nDATA\r\n")
        .unwrap();
    expect(&mut reader, "250");
    expect(&mut reader, "250");
    expect(&mut reader, "354");
    w.write_all(b"Subject: via inetd\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        .unwrap();
    expect(&mut reader, "250");
    expect(&mut reader, "221");
    assert!(child.wait().unwrap().success());
    let list = inst.queue().list().unwrap();
    assert_eq!(list.len(), 1);
    let stored =
        String::from_utf8_lossy(&inst.queue().read_message(list[0].id).unwrap()).into_owned();
    assert!(
        stored.contains("[127.0.0.1]"),
        "peer address not learned from the socket: {stored}"
    );
    assert!(
        stored.contains("Subject: via inetd\nhello\n")
            || stored.contains("Subject: via inetd\n\nhello\n"),
        "{stored}"
    );
}

/// systemd's `ListenStream=25` is a dual-stack `[::]` socket: an IPv4
/// client's address comes from getpeername as `::ffff:a.b.c.d`. tern-smtpd
/// must record it as the IPv4 address it is (as tern-listen does).
#[test]
fn ipv4_mapped_peer_on_a_dual_stack_socket_is_plain_ipv4() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::fd::OwnedFd;
    let test = "smtp_net::ipv4_mapped";
    let Ok(listener) = std::net::TcpListener::bind("[::]:0") else {
        skip(test, "cannot bind [::] (no IPv6)");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let Ok(client) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        skip(test, "[::] is not dual-stack here (net.ipv6.bindv6only=1)");
        return;
    };
    let (server, peer) = listener.accept().unwrap();
    assert!(peer.ip().to_string().starts_with("::ffff:"), "{peer}");
    let inst = Instance::new("smtp-mapped");
    let fd_in: OwnedFd = server.try_clone().unwrap().into();
    let fd_out: OwnedFd = server.into();
    let mut child = inst
        .command("tern-smtpd")
        .env_remove("TCPREMOTEIP")
        .env_remove("TCPLOCALIP")
        .env_remove("TCPLOCALPORT")
        .env_remove("TCPREMOTEHOST")
        .env_remove("RELAYCLIENT")
        .env_remove("PROTO")
        .stdin(std::process::Stdio::from(fd_in))
        .stdout(std::process::Stdio::from(fd_out))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut w = client.try_clone().unwrap();
    // A recipient at the server's own address literal is local only when
    // the local address is known as 127.0.0.1.
    w.write_all(b"HELO v4.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<test@[127.0.0.1]>\r\nDATA\r\nSubject: mapped\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        .unwrap();
    let replies: Vec<String> = BufReader::new(client).lines().map(|l| l.unwrap()).collect();
    assert!(child.wait().unwrap().success());
    let codes: Vec<&str> = replies.iter().map(|l| &l[..3]).collect();
    assert_eq!(
        codes,
        ["220", "250", "250", "250", "354", "250", "221"],
        "{replies:?}"
    );
    let list = inst.queue().list().unwrap();
    assert_eq!(list.len(), 1);
    let stored =
        String::from_utf8_lossy(&inst.queue().read_message(list[0].id).unwrap()).into_owned();
    assert!(
        stored.contains("Received: from v4.test (unknown [127.0.0.1])"),
        "{stored}"
    );
    assert!(!stored.contains("ffff"), "{stored}");
}
