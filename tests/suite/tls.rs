//! TLS in tern-smtpd over real TCP on 127.0.0.1, under tern-listen (and
//! tcpserver for swaks): STARTTLS with `swaks --tls`, Python's smtplib
//! `starttls()` and `openssl s_client -starttls smtp`; implicit TLS
//! (`SMTPS=1`) with `smtplib.SMTP_SSL`; the STARTTLS command injection
//! (CVE-2011-0411: plain text pipelined after STARTTLS is never executed);
//! no STARTTLS without a (usable) certificate; EHLO required again after
//! the handshake; a certificate replaced on disk is served by the next
//! connection. Certificates are self-signed, made with `openssl req`.
//!
//! A missing tool (python3, swaks, openssl, tcpserver) makes the tests
//! that need it print SKIP; `scripts/test` installs them.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tern_tests::{
    Daemon, Front, Instance, PYTHON, bin, have_tool, make_cert, python, skip,
    strip_delivery_headers, wait_until,
};

/// tern-smtpd under tern-listen (127.0.0.1 relays), with `env` added.
fn start(inst: &Instance, env: &[(&str, &str)]) -> Front {
    Front::listen(inst, "127.0.0.1:allow,RELAYCLIENT=\"\"\n:deny\n", env)
}

/// tern-smtpd under tcpserver (127.0.0.1 relays); None when not installed.
fn start_tcpserver(test: &str, inst: &Instance) -> Option<Front> {
    if !have_tool("tcpserver") || !have_tool("tcprules") {
        skip(test, "tcpserver/tcprules not installed (Debian ucspi-tcp)");
        return None;
    }
    let dir = inst.scratch();
    let cdb = dir.join("tcp.cdb");
    std::fs::write(
        dir.join("tcp.rules"),
        "127.0.0.1:allow,RELAYCLIENT=\"\"\n:deny\n",
    )
    .expect("rules");
    let st = Command::new("tcprules")
        .arg(&cdb)
        .arg(dir.join("tcp.tmp"))
        .stdin(std::fs::File::open(dir.join("tcp.rules")).expect("rules"))
        .status()
        .expect("run tcprules");
    assert!(st.success(), "tcprules failed");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let log = dir.join("tcpserver.log");
    let child = Command::new("tcpserver")
        .env("TERN_HOME", inst.home())
        .env_remove("QMAILQUEUE")
        .args(["-H", "-R", "-l", "localhost", "-c", "20", "-x"])
        .arg(&cdb)
        .args(["127.0.0.1", &port.to_string()])
        .arg(bin("tern-smtpd"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
        .spawn()
        .expect("start tcpserver");
    assert!(
        wait_until(10, || TcpStream::connect(("127.0.0.1", port)).is_ok()),
        "tcpserver did not listen on {port}"
    );
    Some(Front::from_child(child, port, log))
}

fn need(test: &str, tools: &[&str]) -> bool {
    for t in tools {
        let ok = if *t == "python3" {
            Path::new(PYTHON).is_file()
        } else {
            have_tool(t)
        };
        if !ok {
            skip(test, &format!("{t} not installed"));
            return false;
        }
    }
    true
}

/// A client context that accepts the self-signed certificate.
const CTX: &str = r#"
import smtplib, socket, ssl, sys, hashlib
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
port = int(sys.argv[1])
"#;

/// Waits for `n` messages in the `test` Maildir; returns them without the
/// delivery lines and tern-queue's line.
fn delivered(inst: &Instance, n: usize) -> Vec<String> {
    let mut d = Daemon::start(inst);
    let ok = wait_until(60, || inst.maildir_count("test") >= n);
    d.stop(20);
    assert!(ok, "not delivered\n{}", d.log());
    inst.maildir("test")
        .iter()
        .map(|f| String::from_utf8_lossy(strip_delivery_headers(f).1).into_owned())
        .collect()
}

/// The `with ...` of tern-smtpd's Received line must name ESMTPS, the TLS
/// version and the cipher suite.
fn check_esmtps(msg: &str) {
    let first = msg.lines().take(2).collect::<Vec<_>>().join("\n");
    assert!(first.starts_with("Received: from "), "{first}");
    let with = first
        .split(" with ")
        .nth(1)
        .unwrap_or_else(|| panic!("no with: {first}"));
    assert!(
        with.starts_with("ESMTPS (TLS1.3 TLS_") || with.starts_with("ESMTPS (TLS1.2 TLS_"),
        "{first}"
    );
    assert!(with.contains(") id "), "{first}");
}

fn swaks_tls(test: &str, tcpserver: bool) {
    if !need(test, &["swaks", "openssl"]) {
        return;
    }
    let ssleay = Command::new("perl")
        .args(["-MNet::SSLeay", "-e", "1"])
        .status();
    if !ssleay.is_ok_and(|s| s.success()) {
        skip(
            test,
            "perl Net::SSLeay missing (libnet-ssleay-perl): swaks --tls",
        );
        return;
    }
    let inst = Instance::new(&test.replace("::", "-"));
    make_cert(&inst, "mx.tls.test");
    let front = if tcpserver {
        match start_tcpserver(test, &inst) {
            Some(f) => f,
            None => return,
        }
    } else {
        start(&inst, &[])
    };
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", front.port)])
        .args(["--to", "test@localhost", "--from", "a@b", "--tls"])
        .args(["--helo", "swaks.test", "--timeout", "30"])
        .args(["--body", "over TLS"])
        .output()
        .expect("run swaks");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "swaks --tls failed: {}\n{transcript}{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        front.log()
    );
    assert!(
        transcript.contains("<-  220 2.0.0 ready to start TLS"),
        "{transcript}"
    );
    assert!(transcript.contains("=== TLS started"), "{transcript}");
    assert!(transcript.contains("<~  250 2.0.0 ok"), "{transcript}");
    let msgs = delivered(&inst, 1);
    check_esmtps(&msgs[0]);
    assert!(
        msgs[0].starts_with("Received: from swaks.test "),
        "{}",
        msgs[0]
    );
    assert!(msgs[0].contains("over TLS"), "{}", msgs[0]);
    assert!(
        front.log().contains("event=tls tls=\"TLS1."),
        "{}",
        front.log()
    );
}

#[test]
fn swaks_tls_delivers_under_tern_listen() {
    swaks_tls("tls::swaks_tls_delivers_under_tern_listen", false);
}

#[test]
fn swaks_tls_delivers_under_tcpserver() {
    swaks_tls("tls::swaks_tls_delivers_under_tcpserver", true);
}

#[test]
fn smtplib_starttls_delivers_and_ehlo_is_required_again() {
    let test = "tls::smtplib_starttls_delivers_and_ehlo_is_required_again";
    if !need(test, &["python3", "openssl"]) {
        return;
    }
    let inst = Instance::new("tls-smtplib");
    make_cert(&inst, "mx.tls.test");
    let front = start(&inst, &[]);
    let script = format!(
        "{CTX}{}",
        r#"
s = smtplib.SMTP("127.0.0.1", port, local_hostname="py.test", timeout=30)
s.ehlo()
print("plain starttls", s.has_extn("starttls"))
print("starttls", s.starttls(context=ctx)[0])
print("version", s.sock.version(), s.sock.cipher()[0])
# The handshake reset the session: MAIL before EHLO is a bad sequence.
print("mail-before-ehlo", s.docmd("MAIL FROM:<a@b>")[0])
s.ehlo()
print("tls starttls", s.has_extn("starttls"))
print("again", s.docmd("STARTTLS")[0])
# Larger than every buffer on the way (64 KiB input, TLS records).
big = b"".join(b"%07d " % i + b"x" * 70 + b"\r\n" for i in range(5000))
s.sendmail("a@b", ["test@localhost"], b"Subject: py\r\n\r\n" + big + b"smtplib over TLS\r\n")
print("sent")
s.quit()
"#
    );
    let (code, out) = python(&script, &[&front.port.to_string()]);
    assert_eq!(code, 0, "{out}\n{}", front.log());
    for want in [
        "plain starttls True\n",
        "starttls 220\n",
        "mail-before-ehlo 503\n",
        "tls starttls False\n",
        "again 503\n",
        "sent\n",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    assert!(out.contains("version TLSv1.3 TLS_AES_"), "{out}");
    let msgs = delivered(&inst, 1);
    check_esmtps(&msgs[0]);
    assert!(msgs[0].contains("(TLS1.3 TLS_AES_"), "{}", msgs[0]);
    assert!(msgs[0].ends_with("x\nsmtplib over TLS\n"), "{}", msgs[0]);
    assert!(msgs[0].contains("0004999 xxx"));
    // Received (2 lines), Subject, blank line, 5000 lines, the last line.
    assert_eq!(
        msgs[0].matches('\n').count(),
        2 + 2 + 5000 + 1,
        "lines lost"
    );
}

#[test]
fn tls_1_2_is_served_and_named() {
    let test = "tls::tls_1_2_is_served_and_named";
    if !need(test, &["python3", "openssl"]) {
        return;
    }
    let inst = Instance::new("tls-12");
    make_cert(&inst, "mx.tls.test");
    let front = start(&inst, &[]);
    let script = format!(
        "{CTX}{}",
        r#"
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
s = smtplib.SMTP("127.0.0.1", port, local_hostname="py12.test", timeout=30)
s.starttls(context=ctx)
print("version", s.sock.version())
s.quit()
"#
    );
    let (code, out) = python(&script, &[&front.port.to_string()]);
    assert_eq!(code, 0, "{out}\n{}", front.log());
    assert!(out.contains("version TLSv1.2\n"), "{out}");
    assert!(
        wait_until(5, || front
            .log()
            .contains("event=tls tls=\"TLS1.2 TLS_ECDHE_ECDSA_WITH_")),
        "{}",
        front.log()
    );
}

#[test]
fn openssl_s_client_starttls_smtp() {
    let test = "tls::openssl_s_client_starttls_smtp";
    if !need(test, &["openssl"]) {
        return;
    }
    let inst = Instance::new("tls-s-client");
    make_cert(&inst, "mx.tls.test");
    let front = start(&inst, &[]);
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-crlf",
            "-ign_eof",
            "-brief",
        ])
        .args(["-connect", &format!("127.0.0.1:{}", front.port)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl s_client");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"EHLO s-client.test\nNOOP\nQUIT\n")
        .expect("write");
    let out = child.wait_with_output().expect("s_client output");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stderr.contains("Protocol version: TLSv1.3"),
        "{stderr}\n{}",
        front.log()
    );
    assert!(
        stderr.contains("CN = mx.tls.test") || stderr.contains("CN=mx.tls.test"),
        "{stderr}"
    );
    // After the handshake: EHLO without STARTTLS, NOOP, QUIT.
    assert!(stdout.contains("250 HELP"), "{stdout}");
    assert!(!stdout.contains("STARTTLS"), "{stdout}");
    assert!(stdout.contains("250 2.0.0 ok"), "{stdout}");
    assert!(stdout.contains("221 2.0.0 "), "{stdout}");
}

#[test]
fn implicit_tls_with_smtp_ssl() {
    let test = "tls::implicit_tls_with_smtp_ssl";
    if !need(test, &["python3", "openssl"]) {
        return;
    }
    let inst = Instance::new("tls-implicit");
    make_cert(&inst, "mx.tls.test");
    let front = start(&inst, &[("SMTPS", "1")]);
    let script = format!(
        "{CTX}{}",
        r#"
s = smtplib.SMTP_SSL("127.0.0.1", port, local_hostname="ssl.test", timeout=30, context=ctx)
print("version", s.sock.version())
s.ehlo()
print("starttls", s.has_extn("starttls"))
s.sendmail("a@b", ["test@localhost"], b"Subject: ssl\r\n\r\nimplicit TLS\r\n")
print("sent")
s.quit()
"#
    );
    let (code, out) = python(&script, &[&front.port.to_string()]);
    assert_eq!(code, 0, "{out}\n{}", front.log());
    assert!(
        out.contains("version TLSv1.3\nstarttls False\nsent\n"),
        "{out}"
    );
    // A plain-text client gets no greeting it can read.
    let mut plain = TcpStream::connect(("127.0.0.1", front.port)).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    plain.write_all(b"EHLO plain.test\r\n").expect("write");
    let mut line = String::new();
    let _ = BufReader::new(&plain).read_line(&mut line);
    assert!(
        !line.starts_with("220") && !line.starts_with("250"),
        "{line:?}"
    );
    let msgs = delivered(&inst, 1);
    check_esmtps(&msgs[0]);
    assert!(
        msgs[0].starts_with("Received: from ssl.test "),
        "{}",
        msgs[0]
    );
}

#[test]
fn starttls_command_injection_is_discarded() {
    let test = "tls::starttls_command_injection_is_discarded";
    if !need(test, &["python3", "openssl"]) {
        return;
    }
    let inst = Instance::new("tls-injection");
    make_cert(&inst, "mx.tls.test");
    let front = start(&inst, &[]);
    let script = format!(
        "{CTX}{}",
        r#"
raw = socket.create_connection(("127.0.0.1", port), timeout=30)
f = raw.makefile("rb")
def reply(f):
    lines = []
    while True:
        l = f.readline().decode()
        lines.append(l.strip())
        if l[3:4] != "-":
            return lines
print("greeting", reply(f)[0][:3])
raw.sendall(b"EHLO inject.test\r\n")
print("ehlo", reply(f)[-1])
# STARTTLS and a pipelined MAIL in one packet (CVE-2011-0411).
raw.sendall(b"STARTTLS\r\nMAIL FROM:<x@y>\r\n")
print("starttls", reply(f)[0][:3])
t = ctx.wrap_socket(raw, server_hostname="mx.tls.test")
tf = t.makefile("rb")
t.sendall(b"EHLO inject.test\r\n")
# The first reply after the handshake must be the EHLO's: nothing
# answers the injected MAIL.
print("first", reply(tf)[0])
t.sendall(b"RCPT TO:<test@localhost>\r\n")
print("rcpt", reply(tf)[0])
t.sendall(b"QUIT\r\n")
print("quit", reply(tf)[0][:3])
"#
    );
    let (code, out) = python(&script, &[&front.port.to_string()]);
    assert_eq!(code, 0, "{out}\n{}", front.log());
    for want in [
        "greeting 220\n",
        "ehlo 250 HELP\n",
        "starttls 220\n",
        "first 250-",
        "rcpt 503 5.5.1 MAIL first\n",
        "quit 221\n",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    assert!(
        wait_until(5, || front.log().contains(" discarded=17")),
        "no discarded=17 in the log:\n{}",
        front.log()
    );
    assert!(!front.log().contains("command=MAIL"), "{}", front.log());
}

/// Reads one SMTP reply (all lines) from `r`.
fn reply(r: &mut impl BufRead) -> String {
    let mut all = String::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).expect("read reply");
        all.push_str(&l);
        if l.len() < 4 || l.as_bytes()[3] != b'-' {
            return all;
        }
    }
}

#[test]
fn no_starttls_without_a_usable_certificate() {
    let inst = Instance::new("tls-none");
    let control = inst.home().join("control");
    // No file, then a file that is not a certificate: plain SMTP goes on.
    for garbage in [None, Some("not a certificate\n")] {
        if let Some(g) = garbage {
            std::fs::write(control.join("servercert.pem"), g).expect("write");
        }
        let front = start(&inst, &[]);
        let s = TcpStream::connect(("127.0.0.1", front.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let mut w = s;
        assert!(reply(&mut r).starts_with("220 "));
        w.write_all(b"EHLO plain.test\r\n").expect("write");
        let ehlo = reply(&mut r);
        assert!(
            ehlo.contains("250 HELP") && !ehlo.contains("STARTTLS"),
            "{ehlo}"
        );
        w.write_all(b"STARTTLS\r\n").expect("write");
        assert!(reply(&mut r).starts_with("502 5.5.1 "));
        w.write_all(b"MAIL FROM:<a@b>\r\nQUIT\r\n").expect("write");
        assert!(reply(&mut r).starts_with("250 2.1.0"));
        assert!(reply(&mut r).starts_with("221 "));
        if garbage.is_some() {
            assert!(
                wait_until(5, || front.log().contains("event=tls_unavailable")),
                "{}",
                front.log()
            );
        }
    }
    // Implicit TLS without a usable certificate refuses to start.
    let front = start(&inst, &[("SMTPS", "1")]);
    let s = TcpStream::connect(("127.0.0.1", front.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert!(reply(&mut BufReader::new(s)).starts_with("421 "));
}

#[test]
fn renewed_certificate_is_served_by_the_next_connection() {
    let test = "tls::renewed_certificate_is_served_by_the_next_connection";
    if !need(test, &["python3", "openssl"]) {
        return;
    }
    let inst = Instance::new("tls-renew");
    let cert = inst.home().join("control/servercert.pem");
    let script = format!(
        "{CTX}{}",
        r#"
s = smtplib.SMTP("127.0.0.1", port, local_hostname="renew.test", timeout=30)
s.starttls(context=ctx)
served = hashlib.sha256(s.sock.getpeercert(binary_form=True)).hexdigest()
pem = open(sys.argv[2]).read()
on_disk = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem[:pem.index("-----END CERTIFICATE-----") + 25])).hexdigest()
print(served, "same" if served == on_disk else "different")
s.quit()
"#
    );
    make_cert(&inst, "one.tls.test");
    // The same tern-listen (no restart) for both connections.
    let front = start(&inst, &[]);
    let port = front.port.to_string();
    let (code, first) = python(&script, &[&port, cert.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{first}\n{}", front.log());
    assert!(first.ends_with(" same\n"), "{first}");
    make_cert(&inst, "two.tls.test");
    let (code, second) = python(&script, &[&port, cert.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{second}\n{}", front.log());
    assert!(second.ends_with(" same\n"), "{second}");
    assert_ne!(first, second, "the old certificate was served");
}

#[test]
fn plain_text_instead_of_a_handshake_ends_the_connection() {
    let test = "tls::plain_text_instead_of_a_handshake_ends_the_connection";
    if !need(test, &["openssl"]) {
        return;
    }
    let inst = Instance::new("tls-garbage");
    make_cert(&inst, "mx.tls.test");
    let front = start(&inst, &[]);
    let s = TcpStream::connect(("127.0.0.1", front.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut w = s;
    assert!(reply(&mut r).starts_with("220 "));
    w.write_all(b"EHLO g.test\r\n").expect("write");
    assert!(reply(&mut r).contains("250-STARTTLS\r\n"));
    w.write_all(b"STARTTLS\r\n").expect("write");
    assert!(reply(&mut r).starts_with("220 2.0.0 "));
    w.write_all(b"MAIL FROM:<a@b>\r\n").expect("write");
    // A TLS alert, then the end: never an SMTP reply.
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut r, &mut rest);
    assert!(rest.first() == Some(&21), "not an alert: {rest:?}");
    assert!(
        wait_until(5, || front.log().contains("exit=tls")),
        "{}",
        front.log()
    );
    assert!(!front.log().contains("command=MAIL"), "{}", front.log());
}
