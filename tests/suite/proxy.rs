//! tern-listen's PROXY protocol (v1 and v2): Debian's HAProxy in TCP mode
//! on 127.0.0.1 in front of tern-listen (`send-proxy`, `send-proxy-v2`),
//! started here by hand with a private configuration (never as a system
//! service), and raw headers written by the test.
//!
//! The client connects to HAProxy from 127.0.0.5 (or .6), HAProxy to
//! tern-listen from 127.0.0.1, the only address whose rule trusts a
//! header (`PROXY=""`). Checked: the proxied address drives the rules
//! (relaying allowed for 127.0.0.5 only, a denied proxied address), the
//! per-address limit, TCPREMOTEIP/PORT and TCPLOCALIP/PORT (`-E`), the
//! Received line and tern-smtpd's log, in the pool and in `-E` mode;
//! malformed headers (garbage, truncated, oversize v2 length, too long
//! v1) are refused and logged; a header from an address whose rule lacks
//! PROXY is an SMTP command like any other; a silent balancer is closed
//! after the timeout while others are served, and its pending connections
//! count against its address's limit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tern_tests::{Instance, bin, skip, strip_received, wait_until};

/// Where Debian installs HAProxy (not on a non-root PATH).
const HAPROXY: &str = "/usr/sbin/haproxy";

/// tern-listen's timeout for a whole header (bin/tern-listen/src/proxy.rs).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

const RULES: &str = "# the balancer: its connections start with a PROXY header\n\
                     127.0.0.1:allow,PROXY=\"\"\n\
                     # proxied clients\n\
                     127.0.0.5:allow,RELAYCLIENT=\"\"\n\
                     192.0.2.9:deny\n\
                     # a PROXY variable on a client's rule chains nothing\n\
                     192.0.2.8:allow,PROXY=\"\"\n\
                     :allow\n";

/// tern-listen on 127.0.0.1 with [`RULES`]; killed when dropped.
struct Listen {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Listen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Listen {
    /// tern-smtpd in the pool, or `program` with `-E`.
    fn start(inst: &Instance, name: &str, opts: &[&str], program: &[&str]) -> Listen {
        let dir = inst.scratch();
        let log = dir.join(format!("{name}.log"));
        let rules_file = dir.join(format!("{name}.rules"));
        std::fs::write(&rules_file, RULES).expect("rules");
        let mut cmd = inst.command("tern-listen");
        cmd.args(opts)
            .arg("-x")
            .arg(&rules_file)
            .args(["127.0.0.1", "0"]);
        if program.is_empty() {
            cmd.arg(bin("tern-smtpd"));
        } else {
            cmd.args(program);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
            .spawn()
            .expect("start tern-listen");
        let mut port = 0;
        assert!(
            wait_until(10, || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("local_port="))
                    .map(|p| port = p.parse().expect("port"))
                    .is_some()
            }),
            "tern-listen did not start"
        );
        Listen { child, port, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// tern-listen's lines for `event`.
    fn events(&self, event: &str) -> Vec<String> {
        let want = format!("tern-listen: event={event} ");
        self.log()
            .lines()
            .filter(|l| l.starts_with(&want))
            .map(str::to_string)
            .collect()
    }

    /// The remote_ip of tern-smtpd's `connect` lines, in order.
    fn smtpd_clients(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.starts_with("tern-smtpd: event=connect "))
            .filter_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("remote_ip="))
            })
            .map(str::to_string)
            .collect()
    }
}

/// A free port on 127.0.0.1 (bound, read, released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Whether something listens on 127.0.0.1:port (read from the kernel's
/// table, so that no probe connection reaches the backend).
fn listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == want && f[3] == "0A"
        })
}

/// HAProxy in TCP mode on 127.0.0.1, forwarding to tern-listen with a
/// PROXY header; killed when dropped.
struct Haproxy {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Haproxy {
    /// `send` is `send-proxy` or `send-proxy-v2`. None (after a SKIP
    /// line) when HAProxy is not installed.
    fn start(dir: &Path, test: &str, backend: u16, send: &str) -> Option<Haproxy> {
        if !Path::new(HAPROXY).is_file() {
            skip(test, "haproxy not installed (Debian package haproxy)");
            return None;
        }
        let port = free_port();
        let cfg = dir.join(format!("haproxy-{send}.cfg"));
        // No user, chroot, stats socket or log: a private, foreground
        // instance with only this test's front and back.
        std::fs::write(
            &cfg,
            format!(
                "global\n\
                 \tmaxconn 64\n\
                 defaults\n\
                 \tmode tcp\n\
                 \ttimeout connect 5s\n\
                 \ttimeout client 30s\n\
                 \ttimeout server 30s\n\
                 frontend smtp\n\
                 \tbind 127.0.0.1:{port}\n\
                 \tdefault_backend tern\n\
                 backend tern\n\
                 \tserver listen 127.0.0.1:{backend} source 127.0.0.1 {send}\n"
            ),
        )
        .expect("haproxy config");
        let log = dir.join(format!("haproxy-{send}.log"));
        let out = std::fs::File::create(&log).expect("log");
        let err = out.try_clone().expect("log");
        let child = Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start haproxy");
        let mut h = Haproxy { child, port, log };
        assert!(
            wait_until(10, || listening(port)
                || h.child.try_wait().ok().flatten().is_some()),
            "haproxy did not start"
        );
        assert!(
            listening(port),
            "haproxy exited: {}",
            std::fs::read_to_string(&h.log).unwrap_or_default()
        );
        Some(h)
    }
}

/// A TCP connection to 127.0.0.1:port from the local address `source`.
fn connect_from(source: &str, port: u16) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    let from: SocketAddr = format!("{source}:0").parse().expect("source address");
    bind(&fd, &from).expect("bind the source address");
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    connect(&fd, &to).expect("connect");
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s
}

struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    fn new(sock: TcpStream) -> Client {
        Client {
            r: BufReader::new(sock.try_clone().expect("clone")),
            w: sock,
        }
    }

    /// One whole reply; empty at end of input.
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    fn say(&mut self, line: &str) -> String {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("write");
        self.reply()
    }

    /// The reply to RCPT for `to` in a fresh transaction (RSET after).
    fn rcpt(&mut self, to: &str) -> String {
        let r = self.say("MAIL FROM:<a@b.example>");
        assert!(r.starts_with("250"), "MAIL: {r}");
        let r = self.say(&format!("RCPT TO:<{to}>"));
        assert!(self.say("RSET").starts_with("250"));
        r
    }
}

fn me(inst: &Instance) -> String {
    std::fs::read_to_string(inst.home().join("control/me"))
        .expect("control/me")
        .trim()
        .to_string()
}

/// tern-smtpd's Received lines of the queued messages.
fn received_lines(inst: &Instance) -> Vec<String> {
    let q = inst.queue();
    q.list()
        .expect("queue list")
        .into_iter()
        .map(|m| {
            let stored = q.read_message(m.id).expect("read message");
            let (_, rest) = strip_received(&stored);
            let text = String::from_utf8_lossy(rest).into_owned();
            text.split("\nSubject:").next().unwrap_or("").to_string()
        })
        .collect()
}

/// Through HAProxy to the pool: the relay decision, the Received line and
/// tern-smtpd's log follow the proxied client, not the balancer.
fn through_haproxy(test: &str, send: &str, version: &str) {
    let inst = Instance::new(test);
    let l = Listen::start(&inst, "pool", &[], &[]);
    let Some(h) = Haproxy::start(inst.scratch(), test, l.port, send) else {
        return;
    };
    let local = format!("test@{}", me(&inst));

    // 127.0.0.5 may relay: its rule says so.
    let mut c = Client::new(connect_from("127.0.0.5", h.port));
    let g = c.reply();
    assert!(
        g.starts_with("220"),
        "no greeting through haproxy: {g:?}\n{}",
        l.log()
    );
    assert!(c.say("EHLO five.example").starts_with("250"));
    let r = c.rcpt("far@elsewhere.example");
    assert!(
        r.starts_with("250"),
        "127.0.0.5 may relay: {r}\n{}",
        l.log()
    );
    let r = c.say("MAIL FROM:<a@b.example>");
    assert!(r.starts_with("250"), "{r}");
    assert!(c.say(&format!("RCPT TO:<{local}>")).starts_with("250"));
    assert!(c.say("DATA").starts_with("354"));
    let r = c.say("Subject: proxied\r\n\r\nthrough haproxy\r\n.");
    assert!(r.starts_with("250"), "message not queued: {r}");
    assert!(c.say("QUIT").starts_with("221"));

    // 127.0.0.6 may not, though the balancer is the same.
    let mut c = Client::new(connect_from("127.0.0.6", h.port));
    assert!(c.reply().starts_with("220"));
    assert!(c.say("EHLO six.example").starts_with("250"));
    let r = c.rcpt("far@elsewhere.example");
    assert!(r.starts_with("553"), "127.0.0.6 relayed: {r}");
    assert!(c.say("QUIT").starts_with("221"));

    let received = received_lines(&inst);
    assert_eq!(received.len(), 1, "{received:?}");
    assert!(
        received[0].starts_with("Received: from five.example (")
            && received[0].contains("[127.0.0.5]"),
        "Received line does not name the proxied client: {received:?}"
    );
    assert!(!received[0].contains("127.0.0.1"), "{received:?}");
    assert!(wait_until(10, || l.smtpd_clients().len() == 2));
    assert_eq!(l.smtpd_clients(), ["127.0.0.5", "127.0.0.6"], "{}", l.log());
    let headers = l.events("proxy");
    assert_eq!(headers.len(), 2, "{}", l.log());
    for (line, ip) in headers.iter().zip(["127.0.0.5", "127.0.0.6"]) {
        assert!(
            line.contains(&format!(
                "version={version} command=proxy balancer_ip=127.0.0.1 "
            )) && line.contains(&format!(" remote_ip={ip} "))
                && line.ends_with(&format!(" local_port={}", h.port)),
            "{line}"
        );
    }
    let starts = l.events("start");
    assert!(
        starts.iter().all(|s| !s.contains("remote_ip=127.0.0.1 ")),
        "{starts:?}"
    );
    assert!(l.events("proxy_refused").is_empty(), "{}", l.log());
}

#[test]
fn haproxy_send_proxy_v1_in_front_of_the_pool() {
    through_haproxy("proxy-v1", "send-proxy", "1");
}

#[test]
fn haproxy_send_proxy_v2_in_front_of_the_pool() {
    through_haproxy("proxy-v2", "send-proxy-v2", "2");
}

/// `-E`: the program's environment carries the proxied addresses, both
/// ends, and never the rule's PROXY variable.
#[test]
fn haproxy_in_front_of_exec_mode_sets_the_proxied_environment() {
    let test = "haproxy_in_front_of_exec_mode_sets_the_proxied_environment";
    let inst = Instance::new("proxy-exec");
    let l = Listen::start(&inst, "exec", &["-E"], &["/bin/sh", "-c", "env; echo END"]);
    for send in ["send-proxy", "send-proxy-v2"] {
        let Some(h) = Haproxy::start(inst.scratch(), test, l.port, send) else {
            return;
        };
        let mut s = connect_from("127.0.0.5", h.port);
        let client_port = s.local_addr().expect("local").port();
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        assert!(out.ends_with("END\n"), "{send}: {out}\n{}", l.log());
        let env: Vec<(&str, &str)> = out.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        assert_eq!(get("TCPREMOTEIP"), Some("127.0.0.5"), "{send}");
        assert_eq!(
            get("TCPREMOTEPORT"),
            Some(client_port.to_string().as_str()),
            "{send}"
        );
        assert_eq!(get("TCPLOCALIP"), Some("127.0.0.1"), "{send}");
        // HAProxy's front port, not tern-listen's.
        assert_eq!(
            get("TCPLOCALPORT"),
            Some(h.port.to_string().as_str()),
            "{send}"
        );
        assert_eq!(get("RELAYCLIENT"), Some(""), "{send}: 127.0.0.5's rule");
        assert_eq!(get("PROXY"), None, "{send}");
    }
}

/// A connection from the balancer's address, on which the test writes.
fn raw(l: &Listen, bytes: &[u8]) -> TcpStream {
    let mut s = connect_from("127.0.0.1", l.port);
    s.write_all(bytes).expect("write");
    s
}

/// Everything read until the connection closes.
fn read_to_close(mut s: TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(cmd);
    h.push(fam);
    h.extend_from_slice(&u16::try_from(body.len()).expect("short").to_be_bytes());
    h.extend_from_slice(body);
    h
}

fn v2_tcp4(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut b = src.to_vec();
    b.extend_from_slice(&[127, 0, 0, 1]);
    b.extend_from_slice(&sport.to_be_bytes());
    b.extend_from_slice(&25u16.to_be_bytes());
    v2(0x21, 0x11, &b)
}

/// Bad headers close the connection before any greeting, each with one
/// `proxy_refused` line; good raw ones (v1, v2, LOCAL) are served, and
/// the client's bytes right behind the header are its own.
fn raw_headers(mode: &[&str], name: &str) {
    let inst = Instance::new(name);
    let l = Listen::start(&inst, name, mode, &[]);
    let mut oversize = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec();
    oversize.extend_from_slice(&[0u8; 64]);
    let mut long_v1 = b"PROXY UNKNOWN ".to_vec();
    long_v1.resize(200, b'x');
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage",
            b"EHLO client.example\r\n".to_vec(),
            "not a PROXY",
        ),
        ("binary", vec![0x16, 3, 1, 0, 0xff, 0, 0], "not a PROXY"),
        (
            "bad v1",
            b"PROXY TCP4 999.0.0.1 127.0.0.1 1 25\r\n".to_vec(),
            "bad or missing address",
        ),
        ("long v1", long_v1, "over 107 bytes"),
        ("oversize v2", oversize, "over 4096 bytes"),
        (
            "udp v2",
            v2(0x21, 0x12, &[192, 0, 2, 7, 127, 0, 0, 1, 0, 1, 0, 25]),
            "datagram",
        ),
    ];
    for (what, bytes, _) in &bad {
        let out = read_to_close(raw(&l, bytes));
        assert!(
            out.is_empty(),
            "{what}: got {:?}",
            String::from_utf8_lossy(&out)
        );
    }
    // Truncated: the balancer closes halfway through.
    let s = raw(&l, b"PROXY TCP4 192.0.2.7 127.0.0.1 40");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert!(read_to_close(s).is_empty(), "truncated");
    let s = raw(&l, &v2_tcp4([192, 0, 2, 7], 1)[..20]);
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert!(read_to_close(s).is_empty(), "truncated v2");

    assert!(wait_until(10, || l.events("proxy_refused").len() == bad.len() + 2));
    let refused = l.events("proxy_refused");
    for ((what, _, reason), line) in bad.iter().zip(&refused) {
        assert!(
            line.contains("balancer_ip=127.0.0.1 ") && line.contains(reason),
            "{what}: {line}"
        );
    }
    assert!(
        refused[bad.len()].contains("closed before the header"),
        "{refused:?}"
    );
    assert!(refused[bad.len()].contains("bytes=33 "), "{refused:?}");
    assert!(refused[bad.len() + 1].contains("bytes=20 "), "{refused:?}");

    // Good: v1 with the client's EHLO in the same segment (the header is
    // consumed, not one byte more), v2, v2 LOCAL (the balancer's own
    // address), v1 UNKNOWN.
    let mut c = Client::new(raw(
        &l,
        b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\nEHLO early.example\r\n",
    ));
    assert!(c.reply().starts_with("220"), "{}", l.log());
    let r = c.reply();
    assert!(
        r.starts_with("250"),
        "the client's first bytes were lost: {r:?}"
    );
    assert!(c.say("QUIT").starts_with("221"));
    for (header, ip) in [
        (v2_tcp4([192, 0, 2, 10], 40001), "192.0.2.10"),
        (v2(0x20, 0x00, &[]), "127.0.0.1"),
        (b"PROXY UNKNOWN\r\n".to_vec(), "127.0.0.1"),
        // 192.0.2.8's rule has PROXY too: no second header is awaited.
        (v2_tcp4([192, 0, 2, 8], 40002), "192.0.2.8"),
    ] {
        let mut c = Client::new(raw(&l, &header));
        let g = c.reply();
        assert!(g.starts_with("220"), "{ip}: {g:?}\n{}", l.log());
        assert!(c.say("QUIT").starts_with("221"));
        let _ = ip;
    }
    assert!(
        wait_until(10, || l.smtpd_clients().len() == 5),
        "{}",
        l.log()
    );
    assert_eq!(
        l.smtpd_clients(),
        [
            "192.0.2.7",
            "192.0.2.10",
            "127.0.0.1",
            "127.0.0.1",
            "192.0.2.8"
        ]
    );
    let kinds: Vec<String> = l
        .events("proxy")
        .iter()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("command="))
        })
        .map(str::to_string)
        .collect();
    assert_eq!(kinds, ["proxy", "proxy", "local", "unknown", "proxy"]);

    // The proxied address's own rule decides: 192.0.2.9 is denied.
    let out = read_to_close(raw(&l, &v2_tcp4([192, 0, 2, 9], 40003)));
    assert!(out.is_empty(), "{:?}", String::from_utf8_lossy(&out));
    assert!(wait_until(10, || l
        .events("deny")
        .iter()
        .any(|d| d.contains("remote_ip=192.0.2.9 "))));
}

#[test]
fn raw_headers_in_the_pool() {
    raw_headers(&[], "proxy-raw-pool");
}

#[test]
fn raw_headers_in_exec_mode() {
    // -E with tern-smtpd itself: a process per connection.
    raw_headers(&["-E"], "proxy-raw-exec");
}

/// `-C` counts the proxied address: a second connection for 192.0.2.7,
/// through the same balancer, gets 421 while the first is open.
#[test]
fn the_per_address_limit_counts_the_proxied_client() {
    let inst = Instance::new("proxy-per-ip");
    let l = Listen::start(&inst, "per-ip", &["-C", "1"], &[]);
    let mut first = Client::new(raw(&l, &v2_tcp4([192, 0, 2, 7], 1000)));
    assert!(first.reply().starts_with("220"));
    let mut second = Client::new(raw(&l, &v2_tcp4([192, 0, 2, 7], 1001)));
    let r = second.reply();
    assert!(r.starts_with("421"), "second from 192.0.2.7: {r:?}");
    // Another proxied client through the same balancer is served.
    let mut other = Client::new(raw(&l, &v2_tcp4([192, 0, 2, 10], 1002)));
    assert!(other.reply().starts_with("220"), "{}", l.log());
    assert!(first.say("QUIT").starts_with("221"));
    assert!(other.say("QUIT").starts_with("221"));
    assert!(
        l.events("limit")
            .iter()
            .any(|x| x.contains("reason=per_ip remote_ip=192.0.2.7 ")),
        "{}",
        l.log()
    );
}

/// A balancer that sends nothing: its connections wait at most the
/// timeout, count against its address's `-C`, and hold up no one else.
fn silent_balancer(mode: &[&str], name: &str) {
    let inst = Instance::new(name);
    let mut opts = mode.to_vec();
    opts.extend(["-C", "2", "-c", "4"]);
    let l = Listen::start(&inst, name, &opts, &[]);
    let started = Instant::now();
    let silent: Vec<TcpStream> = (0..2).map(|_| raw(&l, b"")).collect();
    // A third from the balancer's address is over its -C 2 at once.
    let mut third = Client::new(raw(&l, b""));
    let r = third.reply();
    assert!(
        r.starts_with("421"),
        "third pending connection: {r:?}\n{}",
        l.log()
    );
    // Meanwhile a direct client is served.
    let mut c = Client::new(connect_from("127.0.0.6", l.port));
    assert!(c.reply().starts_with("220"), "{}", l.log());
    assert!(c.say("QUIT").starts_with("221"));
    // The silent ones are closed at the deadline, without a greeting.
    for s in silent {
        s.set_read_timeout(Some(HEADER_TIMEOUT * 3))
            .expect("timeout");
        let out = read_to_close(s);
        assert!(out.is_empty(), "{:?}", String::from_utf8_lossy(&out));
    }
    let waited = started.elapsed();
    assert!(
        waited >= HEADER_TIMEOUT - Duration::from_millis(500) && waited < HEADER_TIMEOUT * 2,
        "closed after {waited:?}"
    );
    assert!(wait_until(10, || l.events("proxy_refused").len() == 2));
    assert!(
        l.events("proxy_refused")
            .iter()
            .all(|x| x.contains("reason=\"no whole header in time\"") && x.contains("bytes=0 ")),
        "{}",
        l.log()
    );
    // And the balancer's address is free again.
    let mut c = Client::new(raw(&l, &v2_tcp4([192, 0, 2, 7], 1000)));
    assert!(c.reply().starts_with("220"), "{}", l.log());
    assert!(c.say("QUIT").starts_with("221"));
}

#[test]
fn a_silent_balancer_times_out_in_the_pool() {
    silent_balancer(&[], "proxy-silent-pool");
}

#[test]
fn a_silent_balancer_times_out_in_exec_mode() {
    silent_balancer(&["-E"], "proxy-silent-exec");
}

/// From an address whose rule lacks PROXY a header is not read by
/// tern-listen: it reaches tern-smtpd, which refuses it (554) and closes
/// the connection, logging why; the claim is never believed.
#[test]
fn a_header_from_an_untrusted_address_closes_the_connection() {
    let inst = Instance::new("proxy-untrusted");
    let l = Listen::start(&inst, "untrusted", &[], &[]);
    let mut c = Client::new(connect_from("127.0.0.6", l.port));
    assert!(c.reply().starts_with("220"));
    let r = c.say("PROXY TCP4 127.0.0.5 127.0.0.1 40000 25");
    assert!(r.starts_with("554 5.7.0"), "{r:?}");
    let mut rest = String::new();
    let _ = c.r.read_to_string(&mut rest);
    assert!(rest.is_empty(), "closed after the refusal: {rest:?}");
    assert!(
        wait_until(10, || l
            .log()
            .contains("PROXY protocol header from an address not trusted")),
        "logged: {}",
        l.log()
    );
    // The same client without the header is the connection's own address.
    let mut c = Client::new(connect_from("127.0.0.6", l.port));
    assert!(c.reply().starts_with("220"));
    assert!(c.say("EHLO six.example").starts_with("250"));
    let r = c.rcpt("far@elsewhere.example");
    assert!(r.starts_with("553"), "relaying from 127.0.0.6: {r}");
    assert!(c.say("QUIT").starts_with("221"));
    // Version 2's signature is made to end a session that reads it as
    // text: empty lines, a NUL, then a bare LF, which tern-smtpd refuses
    // by closing.
    let mut c = Client::new(connect_from("127.0.0.6", l.port));
    assert!(c.reply().starts_with("220"));
    c.w.write_all(&v2_tcp4([127, 0, 0, 5], 40000))
        .expect("write");
    let mut rest = String::new();
    let _ = c.r.read_to_string(&mut rest);
    assert!(
        rest.starts_with("500 5.5.2") && rest.ends_with("500 5.5.2 bare CR or LF not allowed\r\n"),
        "{rest:?}"
    );
    assert!(wait_until(10, || l.smtpd_clients().len() == 3));
    assert_eq!(l.smtpd_clients(), ["127.0.0.6", "127.0.0.6", "127.0.0.6"]);
    assert!(l.events("proxy").is_empty() && l.events("proxy_refused").is_empty());
}
