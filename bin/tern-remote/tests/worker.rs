//! The tern-remote program, fed like tern-rspawn feeds it (requests with
//! message descriptors on a socketpair), delivering to scripted fake SMTP
//! servers on 127.0.0.1 that `control/smtproutes` routes to.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use tern_ipc::Outcome;
use tern_ipc::remote::{Frame, Inbox, RcptReport, RemoteDeliver, socket_pair, write_deliver};

const WAIT: Duration = Duration::from_secs(10);

/// A throwaway TERN_HOME with control files.
struct Home(PathBuf);

impl Home {
    fn new(tag: &str) -> Home {
        let dir =
            std::env::temp_dir().join(format!("tern-remote-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("control")).unwrap();
        std::fs::create_dir_all(dir.join("queue/remote")).unwrap();
        let h = Home(dir);
        h.control("me", "client.test");
        h.control("timeoutconnect", "5");
        h.control("timeoutremote", "10");
        // never asked: every route here is an IP relay
        h.control("dnsservers", "[127.0.0.1]:9");
        h
    }

    fn control(&self, name: &str, text: &str) {
        std::fs::write(self.0.join("control").join(name), format!("{text}\n")).unwrap();
    }

    fn route(&self, domain: &str, port: u16) {
        self.control("smtproutes", &format!("{domain}:[127.0.0.1]:{port}"));
    }

    fn memory(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.0.join("queue/remote"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running tern-remote and our end of its socket.
struct Worker {
    child: Child,
    sock: Option<OwnedFd>,
    inbox: Inbox,
}

impl Worker {
    fn start(home: &Home) -> Worker {
        let (ours, theirs) = socket_pair().unwrap();
        let theirs_out = theirs.try_clone().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tern-remote"))
            .env_clear()
            .env("TERN_HOME", &home.0)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::from(theirs_out))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Worker {
            child,
            sock: Some(ours),
            inbox: Inbox::default(),
        }
    }

    /// Sends one request for `to` with `message`; returns its reports.
    fn deliver(&mut self, slot: u32, to: &[&str], message: &[u8]) -> Vec<RcptReport> {
        // Unique per call: tests run in parallel in this process and reuse
        // slot numbers.
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "tern-remote-msg-{}-{slot}-{seq}",
            std::process::id()
        ));
        let mut f = std::fs::File::create(&path).unwrap();
        // the message starts at an offset, as in a queue file
        f.write_all(b"HEADER").unwrap();
        f.write_all(message).unwrap();
        drop(f);
        let f = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let req = RemoteDeliver {
            slot,
            id: 1000 + u64::from(slot),
            offset: 6,
            size: message.len() as u64,
            sender: b"s@client.test".to_vec(),
            domain: b"test.example".to_vec(),
            recipients: to.iter().map(|r| r.as_bytes().to_vec()).collect(),
        };
        let sock = self.sock.as_ref().unwrap();
        write_deliver(sock.as_fd(), &req, f.as_fd()).unwrap();
        let mut got = Vec::new();
        while got.len() < to.len() {
            match self.inbox.next_frame().unwrap() {
                Some(Frame::Report(r)) => {
                    assert_eq!(r.slot, slot);
                    assert_eq!(r.rcpt as usize, got.len(), "reports in order");
                    got.push(r);
                }
                Some(other) => panic!("unexpected frame {other:?}"),
                None => assert!(
                    self.inbox.fill(sock.as_fd()).unwrap(),
                    "worker closed its socket"
                ),
            }
        }
        got
    }

    /// Closes our end (end of input) and returns the exit code and log.
    fn finish(mut self) -> (i32, String) {
        self.sock = None;
        let status = self.child.wait().unwrap();
        let mut log = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        (status.code().unwrap_or(-1), log)
    }
}

/// The server side of one connection.
struct Peer(BufReader<TcpStream>);

impl Peer {
    fn send(&mut self, lines: &str) {
        let mut out = String::new();
        for l in lines.split('\n') {
            out.push_str(l);
            out.push_str("\r\n");
        }
        self.0.get_mut().write_all(out.as_bytes()).unwrap();
    }
    fn line(&mut self) -> Option<String> {
        let mut buf = String::new();
        if self.0.read_line(&mut buf).unwrap() == 0 {
            return None;
        }
        assert!(buf.ends_with("\r\n"), "{buf:?}");
        buf.truncate(buf.len() - 2);
        Some(buf)
    }
    fn expect(&mut self, prefix: &str) -> String {
        let l = self
            .line()
            .unwrap_or_else(|| panic!("EOF, expected {prefix}"));
        assert!(l.starts_with(prefix), "expected {prefix:?}, got {l:?}");
        l
    }
    fn data(&mut self) -> Vec<u8> {
        let mut wire = Vec::new();
        loop {
            let n = self.0.read_until(b'\n', &mut wire).unwrap();
            assert!(n > 0, "EOF in data");
            if wire.ends_with(b"\r\n.\r\n") || wire == b".\r\n" {
                return wire;
            }
        }
    }
    /// One whole transaction, PIPELINING, for `n` recipients all accepted.
    fn transaction(&mut self, n: usize) -> Vec<u8> {
        self.expect("MAIL FROM:<s@client.test>");
        for _ in 0..n {
            self.expect("RCPT TO:");
        }
        self.expect("DATA");
        let mut replies = vec!["250 ok"; n + 1];
        replies.push("354 go");
        self.send(&replies.join("\n"));
        let d = self.data();
        self.send("250 2.0.0 queued");
        d
    }
}

fn greet(p: &mut Peer, caps: &[&str]) {
    p.send("220 mx.test ESMTP");
    p.expect("EHLO client.test");
    let mut lines: Vec<String> = std::iter::once("mx.test")
        .chain(caps.iter().copied())
        .map(String::from)
        .collect();
    let last = lines.len() - 1;
    for (i, l) in lines.iter_mut().enumerate() {
        *l = format!("250{}{l}", if i == last { ' ' } else { '-' });
    }
    p.send(&lines.join("\n"));
}

fn server<F>(conns: usize, script: F) -> (SocketAddr, JoinHandle<()>)
where
    F: Fn(usize, &mut Peer) + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        for i in 0..conns {
            let (s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            script(i, &mut Peer(BufReader::new(s)));
        }
    });
    (addr, h)
}

fn outcomes(r: &[RcptReport]) -> Vec<Outcome> {
    r.iter().map(|x| x.outcome).collect()
}

fn text(r: &RcptReport) -> String {
    String::from_utf8(r.text.clone()).unwrap()
}

#[test]
fn requests_share_one_connection_and_quit_at_the_end() {
    let home = Home::new("reuse");
    let (addr, h) = server(1, |_, p| {
        greet(p, &["PIPELINING", "SIZE 100000", "8BITMIME"]);
        let d = p.transaction(1);
        assert_eq!(d, b"Subject: one\r\n\r\n..dot\r\nbare\r\nCR\r\n.\r\n");
        // second request: two recipients, one refused
        p.expect("MAIL");
        p.expect("RCPT TO:<a@test.example>");
        p.expect("RCPT TO:<b@test.example>");
        p.expect("DATA");
        p.send("250 ok\n250 ok\n550 5.1.1 no such user\n354 go");
        p.data();
        p.send("250 2.0.0 queued");
        assert_eq!(p.line().as_deref(), Some("QUIT"));
        p.send("221 bye");
    });
    home.route("test.example", addr.port());
    let mut w = Worker::start(&home);
    let r = w.deliver(1, &["u@test.example"], b"Subject: one\n\n.dot\nbare\rCR\n");
    assert_eq!(outcomes(&r), [Outcome::Delivered]);
    assert_eq!(text(&r[0]), "the relay said: 250 2.0.0 queued");
    let r = w.deliver(2, &["a@test.example", "b@test.example"], b"x\n");
    assert_eq!(outcomes(&r), [Outcome::Delivered, Outcome::Failed]);
    // the bounce text quotes the reply and hides the internal address
    assert_eq!(text(&r[1]), "the relay said: 550 5.1.1 no such user");
    let (code, log) = w.finish();
    h.join().unwrap();
    assert_eq!(code, 0, "{log}");
    assert_eq!(log.matches("event=connect ").count(), 1, "{log}");
    assert!(log.contains("event=quit"), "{log}");
    assert!(
        log.contains("event=rcpt qid=1002 rcpt=b@test.example result=failed"),
        "{log}"
    );
}

#[test]
fn a_connection_closed_while_idle_is_reopened_transparently() {
    let home = Home::new("reopen");
    let (addr, h) = server(2, |i, p| {
        greet(p, &["PIPELINING"]);
        if i == 0 {
            p.transaction(1);
            // the server's idle timeout
        } else {
            p.transaction(1);
            assert_eq!(p.line().as_deref(), Some("QUIT"));
        }
    });
    home.route("test.example", addr.port());
    let mut w = Worker::start(&home);
    assert_eq!(
        outcomes(&w.deliver(1, &["u@test.example"], b"x\n")),
        [Outcome::Delivered]
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        outcomes(&w.deliver(2, &["u@test.example"], b"y\n")),
        [Outcome::Delivered]
    );
    let (code, log) = w.finish();
    h.join().unwrap();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("event=reconnect"), "{log}");
    assert_eq!(log.matches("event=connect ").count(), 2, "{log}");
}

#[test]
fn failed_handshake_falls_back_to_plain_text_and_is_remembered() {
    let home = Home::new("tlsfail");
    let (addr, h) = server(3, |i, p| {
        greet(p, &["PIPELINING", "STARTTLS"]);
        if i == 0 {
            p.expect("STARTTLS");
            p.send("220 go ahead");
            // wait for the ClientHello, then answer garbage
            let mut first = [0u8; 1];
            p.0.read_exact(&mut first).unwrap();
            assert_eq!(first, [0x16]);
            p.0.get_mut().write_all(b"this is not TLS\r\n").unwrap();
            let mut sink = Vec::new();
            let _ = p.0.read_to_end(&mut sink);
        } else {
            // plain text at once: the retry, then the next worker, which
            // remembers the failure and does not try STARTTLS
            p.transaction(1);
            assert_eq!(p.line().as_deref(), Some("QUIT"));
        }
    });
    home.route("test.example", addr.port());
    let mut w = Worker::start(&home);
    assert_eq!(
        outcomes(&w.deliver(1, &["u@test.example"], b"x\n")),
        [Outcome::Delivered]
    );
    let (code, log) = w.finish();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("event=tls host=127.0.0.1 ip=127.0.0.1 fallback=plaintext"),
        "{log}"
    );
    assert_eq!(home.memory(), ["t-127.0.0.1"]);
    let mut w = Worker::start(&home);
    assert_eq!(
        outcomes(&w.deliver(1, &["u@test.example"], b"x\n")),
        [Outcome::Delivered]
    );
    let (code, log) = w.finish();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("reason=\"STARTTLS failed recently\""), "{log}");
    h.join().unwrap();
}

#[test]
fn a_ca_bundle_fixed_while_the_worker_runs_is_read_again() {
    // The first request finds no bundle; the second, in the same worker,
    // must read the file the administrator has since put there (here a
    // file without certificates: a different error proves the new read).
    let home = Home::new("tlsca-reload");
    let bundle = home.0.join("bundle.pem");
    home.control("tlsdestinations", "test.example:verify");
    home.control("tlsca", &bundle.display().to_string());
    let (addr, h) = server(2, |_, p| {
        greet(p, &["STARTTLS"]);
        assert_eq!(p.line().as_deref(), Some("QUIT"));
        p.send("221 bye");
    });
    home.route("test.example", addr.port());
    let mut w = Worker::start(&home);
    let r = w.deliver(1, &["u@test.example"], b"x\n");
    assert_eq!(outcomes(&r), [Outcome::Deferred]);
    let first = text(&r[0]);
    assert!(first.contains("TLS policy verify: CA bundle"), "{first}");
    std::fs::write(&bundle, "not a certificate\n").unwrap();
    let r = w.deliver(2, &["u@test.example"], b"x\n");
    assert_eq!(outcomes(&r), [Outcome::Deferred]);
    let second = text(&r[0]);
    assert!(second.contains("TLS policy verify: CA bundle"), "{second}");
    assert_ne!(first, second, "the bundle was not read again");
    let (code, log) = w.finish();
    h.join().unwrap();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn verify_policy_without_starttls_is_temporary_and_sends_no_envelope() {
    let home = Home::new("verify");
    home.control("tlsdestinations", "test.example:verify");
    let (addr, h) = server(1, |_, p| {
        greet(p, &["PIPELINING"]);
        assert_eq!(p.line().as_deref(), Some("QUIT"));
        p.send("221 bye");
    });
    home.route("test.example", addr.port());
    let mut w = Worker::start(&home);
    let r = w.deliver(1, &["u@test.example", "v@test.example"], b"x\n");
    assert_eq!(outcomes(&r), [Outcome::Deferred, Outcome::Deferred]);
    assert_eq!(
        text(&r[0]),
        "no mail server for test.example could be used; last: the relay does not offer \
         STARTTLS, which the TLS policy (verify) requires (#4.7.5)"
    );
    let (code, log) = w.finish();
    h.join().unwrap();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn refused_connection_is_temporary_and_not_remembered() {
    let home = Home::new("refused");
    // a port nobody listens on
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    home.route("test.example", port);
    let mut w = Worker::start(&home);
    let r = w.deliver(1, &["u@test.example"], b"x\n");
    assert_eq!(outcomes(&r), [Outcome::Deferred]);
    assert!(
        text(&r[0]).starts_with(
            "no mail server for test.example could be used; last: cannot connect to the relay"
        ),
        "{}",
        text(&r[0])
    );
    assert!(!text(&r[0]).contains("127.0.0.1"));
    // A refusal is not a reason to skip the host next time.
    assert!(home.memory().is_empty(), "{:?}", home.memory());
    let r = w.deliver(2, &["u@test.example"], b"x\n");
    assert_eq!(outcomes(&r), [Outcome::Deferred]);
    let (code, log) = w.finish();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("event=all_backed_off"), "{log}");
    assert_eq!(log.matches("event=host_failed").count(), 2, "{log}");
}

#[test]
fn permanent_and_temporary_routing_results() {
    let home = Home::new("routing");
    // An address literal that can be no server: permanent, no connection.
    let mut w = Worker::start(&home);
    let sock = w.sock.as_ref().unwrap();
    let f = std::fs::File::open("/dev/null").unwrap();
    let req = RemoteDeliver {
        slot: 7,
        id: 1,
        offset: 0,
        size: 0,
        sender: vec![],
        domain: b"[0.0.0.0]".to_vec(),
        recipients: vec![b"u@[0.0.0.0]".to_vec()],
    };
    write_deliver(sock.as_fd(), &req, f.as_fd()).unwrap();
    let rep = loop {
        match w.inbox.next_frame().unwrap() {
            Some(Frame::Report(r)) => break r,
            Some(other) => panic!("{other:?}"),
            None => assert!(w.inbox.fill(sock.as_fd()).unwrap()),
        }
    };
    assert_eq!(rep.outcome, Outcome::Failed, "{}", text(&rep));
    // A name with no DNS server answering: temporary.
    let r = w.deliver(8, &["u@test.example"], b"x\n");
    assert_eq!(outcomes(&r), [Outcome::Deferred], "{}", text(&r[0]));
    let (code, log) = w.finish();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn protocol_errors_and_usage() {
    let home = Home::new("proto");
    let w = Worker::start(&home);
    let sock = w.sock.as_ref().unwrap();
    // a request without its descriptor
    let req = RemoteDeliver {
        slot: 1,
        id: 1,
        offset: 0,
        size: 1,
        sender: vec![],
        domain: b"test.example".to_vec(),
        recipients: vec![b"u@test.example".to_vec()],
    };
    tern_ipc::remote::write_plain(sock, &req.encode()).unwrap();
    let (code, log) = w.finish();
    assert_eq!(code, 111, "{log}");
    assert!(log.contains("event=protocol_error"), "{log}");

    let bin = env!("CARGO_BIN_EXE_tern-remote");
    let out = Command::new(bin).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("111"));
    let out = Command::new(bin).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(100));
    // no control/me: cannot start
    let empty = Home::new("nome");
    std::fs::remove_file(empty.0.join("control/me")).unwrap();
    let out = Command::new(bin)
        .env_clear()
        .env("TERN_HOME", &empty.0)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(111),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A host that accepts the connection but never sends its greeting is
/// remembered like one that cannot be connected to (qmail's tcpto idea: a
/// dead MX must not cost every delivery a whole timeoutremote); a later
/// greeting clears the memory.
#[test]
fn greeting_timeout_is_remembered_and_a_greeting_clears_it() {
    let home = Home::new("greeting-timeout");
    home.control("timeoutremote", "1");
    let (addr, h) = server(2, |i, p: &mut Peer| {
        if i == 0 {
            // silent until the client gives up
            assert_eq!(p.line(), None);
            return;
        }
        greet(p, &["PIPELINING"]);
        p.transaction(1);
        p.expect("QUIT");
        p.send("221 bye");
    });
    home.route("test.example", addr.port());
    let mut w = Worker::start(&home);
    let r = w.deliver(1, &["u@test.example"], b"x\n");
    assert_eq!(outcomes(&r), [Outcome::Deferred]);
    assert!(text(&r[0]).contains("timed out"), "{}", text(&r[0]));
    assert_eq!(home.memory(), ["c-127.0.0.1"]);
    // backed off; the only address is tried anyway, greets, and is forgotten
    let r = w.deliver(2, &["u@test.example"], b"x\n");
    assert_eq!(outcomes(&r), [Outcome::Delivered]);
    assert!(home.memory().is_empty(), "{:?}", home.memory());
    let (code, log) = w.finish();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("event=all_backed_off"), "{log}");
    h.join().unwrap();
}

/// A fake DNS server on 127.0.0.1 (UDP): SERVFAIL for every query until
/// `ok` is set, then `127.0.0.1` for A queries and no records for others
/// (TTL 0, so nothing is cached).
fn fake_dns(ok: std::sync::Arc<std::sync::atomic::AtomicBool>) -> SocketAddr {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                return;
            };
            let q = &buf[..n];
            // the question: labels up to the root, then type and class
            let mut end = 12;
            while end < q.len() && q[end] != 0 {
                end += 1 + q[end] as usize;
            }
            end += 5;
            if end > q.len() {
                continue;
            }
            let qtype = u16::from_be_bytes([q[end - 4], q[end - 3]]);
            let good = ok.load(std::sync::atomic::Ordering::SeqCst);
            let answer = good && qtype == 1;
            let mut r = Vec::new();
            r.extend_from_slice(&q[..2]);
            r.extend_from_slice(if good { &[0x81, 0x80] } else { &[0x81, 0x82] });
            r.extend_from_slice(&[0, 1, 0, u8::from(answer), 0, 0, 0, 0]);
            r.extend_from_slice(&q[12..end]);
            if answer {
                r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 127, 0, 0, 1]);
            }
            let _ = sock.send_to(&r, from);
        }
    });
    addr
}

/// A temporary routing failure is not kept for the worker's life: the next
/// request looks the domain up again (a worker kept busy by a steady stream
/// of requests would otherwise defer them all until it went idle).
#[test]
fn temporary_routing_failure_is_looked_up_again_on_the_next_request() {
    let home = Home::new("dns-again");
    let ok = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dns = fake_dns(ok.clone());
    home.control("dnsservers", &format!("[127.0.0.1]:{}", dns.port()));
    let (addr, h) = server(1, |_, p: &mut Peer| {
        greet(p, &["PIPELINING"]);
        p.transaction(1);
        p.expect("QUIT");
        p.send("221 bye");
    });
    home.control(
        "smtproutes",
        &format!("test.example:relay.test:{}", addr.port()),
    );
    let mut w = Worker::start(&home);
    let r = w.deliver(1, &["u@test.example"], b"x\n");
    assert_eq!(outcomes(&r), [Outcome::Deferred]);
    // The relay is not named in the text (it may end up in a bounce).
    assert!(
        text(&r[0]).contains("the relay's address lookup failed"),
        "{}",
        text(&r[0])
    );
    assert!(!text(&r[0]).contains("relay.test"), "{}", text(&r[0]));
    ok.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = w.deliver(2, &["u@test.example"], b"x\n");
    assert_eq!(outcomes(&r), [Outcome::Delivered], "{}", text(&r[0]));
    let (code, log) = w.finish();
    assert_eq!(code, 0, "{log}");
    h.join().unwrap();
}
