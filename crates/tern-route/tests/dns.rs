//! tern-route's DNS side against a real DNS server: `dnsmasq` on 127.0.0.1
//! (a free port, UDP and TCP), serving only the records each test gives it.
//! Nothing here sends a packet off loopback. Without dnsmasq (Debian
//! package `dnsmasq` or `dnsmasq-base`) the tests print SKIP and pass.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tern_control::{Control, SmtpRoutes};
use tern_route::{MAX_ADDRESSES, MAX_MX_HOSTS, Resolution, Router};

/// A dnsmasq child, killed (by its PID) when dropped.
struct Dnsmasq {
    child: Child,
    port: u16,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The dnsmasq program: on PATH, else in /usr/sbin (not on a user's PATH
/// on Debian).
fn dnsmasq_program() -> Option<String> {
    ["dnsmasq", "/usr/sbin/dnsmasq"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(str::to_string)
}

fn have_dnsmasq() -> bool {
    let found = dnsmasq_program().is_some();
    if !found {
        eprintln!(
            "SKIP: dnsmasq is not installed (apt-get install dnsmasq-base); DNS tests not run"
        );
    }
    found
}

/// A port free for both UDP and TCP on 127.0.0.1 (at the time of asking).
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A minimal DNS query for `a.test` type A: true when anything answers.
fn answers(port: u16) -> bool {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(b"\x01a\x04test\x00\x00\x01\x00\x01");
    if sock.send_to(&q, ("127.0.0.1", port)).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(sock.recv(&mut buf), Ok(n) if n >= 12 && buf[..2] == [0x12, 0x34])
}

/// Starts dnsmasq with these record options (`--mx-host=...`,
/// `--host-record=...`, ...), authoritative for `.test` only (NXDOMAIN for
/// unknown names there, REFUSED for every other name: it has no upstream).
fn dnsmasq(records: &[String]) -> Dnsmasq {
    for _ in 0..10 {
        let port = free_port();
        let mut child = Command::new(dnsmasq_program().expect("dnsmasq"))
            .args([
                "--no-daemon",
                &format!("--port={port}"),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--pid-file",
                "--local=/test/",
            ])
            .args(records)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                break; // port taken meanwhile: try another
            }
            if answers(port) {
                return Dnsmasq { child, port };
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("dnsmasq did not start");
}

fn router(dns: &Dnsmasq, routes: &str) -> Router {
    Router::new(
        SmtpRoutes::parse(routes).unwrap(),
        vec![SocketAddr::from(([127, 0, 0, 1], dns.port))],
    )
    .with_timeouts(Duration::from_secs(2), 1, Duration::from_secs(10))
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The targets as "host addr" strings.
fn targets(r: Resolution) -> Vec<String> {
    match r {
        Resolution::Targets(t) => {
            assert!(!t.is_empty());
            t.into_iter()
                .map(|t| format!("{} {}", t.host, t.addr))
                .collect()
        }
        other => panic!("expected targets, got {other:?}"),
    }
}

fn temporary(r: Resolution) -> String {
    match r {
        Resolution::Temporary(why) => why,
        other => panic!("expected Temporary, got {other:?}"),
    }
}

fn no_domain(r: Resolution) -> String {
    match r {
        Resolution::NoDomain(why) => why,
        other => panic!("expected NoDomain, got {other:?}"),
    }
}

#[test]
fn mx_preference_order_every_address_of_a_host_first() {
    if !have_dnsmasq() {
        return;
    }
    let dns = dnsmasq(&args(&[
        "--mx-host=order.test,mx3.order.test,30",
        "--mx-host=order.test,mx1.order.test,10",
        "--mx-host=order.test,mx2.order.test,20",
        "--host-record=mx1.order.test,127.0.0.11,::1",
        "--host-record=mx2.order.test,127.0.0.12",
        "--host-record=mx3.order.test,127.0.0.13",
    ]));
    let r = router(&dns, "");
    let want = [
        "mx1.order.test [::1]:25",
        "mx1.order.test 127.0.0.11:25",
        "mx2.order.test 127.0.0.12:25",
        "mx3.order.test 127.0.0.13:25",
    ];
    assert_eq!(targets(r.resolve("order.test")), want);
    // case and a trailing dot do not matter
    assert_eq!(targets(r.resolve("ORDER.Test.")), want);
    // a port for test peers that cannot listen on 25
    let r = router(&dns, "").with_smtp_port(2525);
    assert_eq!(
        targets(r.resolve("order.test"))[3],
        "mx3.order.test 127.0.0.13:2525"
    );
}

#[test]
fn equal_preferences_are_shuffled() {
    if !have_dnsmasq() {
        return;
    }
    let dns = dnsmasq(&args(&[
        "--mx-host=eq.test,a.eq.test,10",
        "--mx-host=eq.test,b.eq.test,10",
        "--mx-host=eq.test,c.eq.test,10",
        "--mx-host=eq.test,z.eq.test,20",
        "--host-record=a.eq.test,127.0.0.21",
        "--host-record=b.eq.test,127.0.0.22",
        "--host-record=c.eq.test,127.0.0.23",
        "--host-record=z.eq.test,127.0.0.29",
    ]));
    let r = router(&dns, "");
    let mut first: HashMap<String, usize> = HashMap::new();
    let runs = 300;
    for _ in 0..runs {
        let t = targets(r.resolve("eq.test"));
        assert_eq!(t.len(), 4);
        assert_eq!(
            t[3], "z.eq.test 127.0.0.29:25",
            "the worse preference stays last"
        );
        *first.entry(t[0].clone()).or_default() += 1;
    }
    // expected 100 each; sd about 8; 40 is 5 sd
    assert_eq!(first.len(), 3, "{first:?}");
    for (host, n) in &first {
        assert!(
            (60..=140).contains(n),
            "{host} first {n} of {runs} times: {first:?}"
        );
    }
    // a fixed seed repeats its order
    let a = targets(router(&dns, "").with_seed(7).resolve("eq.test"));
    let b = targets(router(&dns, "").with_seed(7).resolve("eq.test"));
    assert_eq!(a, b);
}

#[test]
fn implicit_mx_null_mx_and_missing_domains() {
    if !have_dnsmasq() {
        return;
    }
    let dns = dnsmasq(&args(&[
        "--host-record=implicit.test,127.0.0.31,::1",
        "--mx-host=null.test,.,0",
        "--host-record=null.test,127.0.0.32",
        "--txt-record=txtonly.test,nothing here",
        "--mx-host=mixed.test,.,0",
        "--mx-host=mixed.test,mx.mixed.test,10",
        "--host-record=mx.mixed.test,127.0.0.33",
    ]));
    let r = router(&dns, "");
    assert_eq!(
        targets(r.resolve("implicit.test")),
        ["implicit.test [::1]:25", "implicit.test 127.0.0.31:25"]
    );
    assert_eq!(r.resolve("null.test"), Resolution::NullMx);
    // a null MX beside a real one (against RFC 7505): the real one is used
    assert_eq!(
        targets(r.resolve("mixed.test")),
        ["mx.mixed.test 127.0.0.33:25"]
    );
    let why = no_domain(r.resolve("nx.test"));
    assert_eq!(why, "domain nx.test does not exist");
    let why = no_domain(r.resolve("txtonly.test"));
    assert_eq!(why, "txtonly.test has no MX and no address record");
}

#[test]
fn mx_hosts_without_addresses_are_temporary() {
    if !have_dnsmasq() {
        return;
    }
    let dns = dnsmasq(&args(&[
        "--mx-host=dangling.test,gone.dangling.test,10",
        "--mx-host=refused.test,mx.elsewhere.example,10",
        "--mx-host=zero.test,zero.zero.test,10",
        "--host-record=zero.zero.test,0.0.0.0,::",
        "--mx-host=half.test,gone.half.test,10",
        "--mx-host=half.test,ok.half.test,20",
        "--host-record=ok.half.test,127.0.0.41",
        "--mx-host=filtered.test,f.filtered.test,10",
        "--host-record=f.filtered.test,0.0.0.0",
        "--host-record=f.filtered.test,127.0.0.42",
    ]));
    let r = router(&dns, "");
    let why = temporary(r.resolve("dangling.test"));
    assert_eq!(
        why,
        "none of the 1 MX hosts of dangling.test has an address yet (no address records)"
    );
    let why = temporary(r.resolve("refused.test"));
    assert!(why.contains("REFUSED"), "{why}");
    // unspecified addresses in an answer are dropped, never connected to
    let why = temporary(r.resolve("zero.test"));
    assert!(
        why.starts_with("none of the 1 MX hosts of zero.test"),
        "{why}"
    );
    // the best MX has no address, the next one does
    assert_eq!(
        targets(r.resolve("half.test")),
        ["ok.half.test 127.0.0.41:25"]
    );
    assert_eq!(
        targets(r.resolve("filtered.test")),
        ["f.filtered.test 127.0.0.42:25"]
    );
    // a domain outside what the server serves (it has no upstream): it
    // refuses, temporary
    let why = temporary(r.resolve("elsewhere.example"));
    assert_eq!(
        why,
        "MX lookup for elsewhere.example: DNS query refused (REFUSED)"
    );
}

#[test]
fn ipv6_only_mx_host() {
    if !have_dnsmasq() {
        return;
    }
    let dns = dnsmasq(&args(&[
        "--mx-host=v6.test,mx.v6.test,5",
        "--host-record=mx.v6.test,::1",
    ]));
    assert_eq!(
        targets(router(&dns, "").resolve("v6.test")),
        ["mx.v6.test [::1]:25"]
    );
}

#[test]
fn smtproutes_relays_by_name_ip_suffix_and_smarthost() {
    if !have_dnsmasq() {
        return;
    }
    let dns = dnsmasq(&args(&[
        // the routed domains have MX records that must NOT be used
        "--mx-host=routed.test,mx.routed.test,10",
        "--host-record=mx.routed.test,127.0.0.51",
        "--host-record=relay.test,127.0.0.52,::1",
        "--mx-host=relay.test,mx.routed.test,10",
        "--mx-host=direct.test,mx.routed.test,10",
    ]));
    let r = router(
        &dns,
        "routed.test:relay.test:2525\n\
         .sub.test:[127.0.0.53]:26\n\
         direct.test:\n\
         broken.test:nowhere.test\n\
         :relay.test\n",
    );
    assert_eq!(
        targets(r.resolve("routed.test")),
        ["relay.test [::1]:2525", "relay.test 127.0.0.52:2525"]
    );
    assert_eq!(
        targets(r.resolve("a.b.sub.test")),
        ["127.0.0.53 127.0.0.53:26"]
    );
    // empty relay: MX as usual
    assert_eq!(
        targets(r.resolve("direct.test")),
        ["mx.routed.test 127.0.0.51:25"]
    );
    // the smarthost takes every other domain, even unknown ones
    assert_eq!(
        targets(r.resolve("anything.invalid")),
        ["relay.test [::1]:25", "relay.test 127.0.0.52:25"]
    );
    // a relay without address: the operator's mistake, not the sender's
    let why = temporary(r.resolve("broken.test"));
    // (and its name stays out of the text, which may end up in a bounce)
    assert_eq!(why, "the relay has no address");
    assert!(r.is_routed("broken.test") && r.is_routed("anything.invalid"));
}

#[test]
fn answers_are_bounded_and_truncated_ones_retried_over_tcp() {
    if !have_dnsmasq() {
        return;
    }
    // 40 MX hosts with long names: the answer (about 2.5 KB) is larger than
    // the EDNS size hickory asks for (1232), so it comes truncated over UDP
    // and whole over TCP.
    let mut rr = Vec::new();
    for i in 0..40 {
        let host = format!("mx{i:02}-{}.big.test", "x".repeat(40));
        rr.push(format!("--mx-host=big.test,{host},{}", 100 + i));
        rr.push(format!("--host-record={host},127.0.1.{i}"));
    }
    // 10 hosts of 5 addresses each: 50 addresses, 32 kept
    for i in 0..10 {
        let host = format!("h{i}.many.test");
        rr.push(format!("--mx-host=many.test,{host},{i}"));
        for j in 0..5 {
            rr.push(format!("--host-record={host},127.0.2.{}", i * 5 + j));
        }
    }
    let dns = dnsmasq(&rr);
    let r = router(&dns, "");
    // (17 of the 40 records fit in the truncated UDP answer: 20 hosts
    // means the TCP retry happened)
    let t = targets(r.resolve("big.test"));
    assert_eq!(t.len(), MAX_MX_HOSTS, "{t:?}");
    for (i, line) in t.iter().enumerate() {
        assert!(line.starts_with(&format!("mx{i:02}-")), "{i}: {line}");
        assert!(line.ends_with(&format!(" 127.0.1.{i}:25")), "{i}: {line}");
    }
    let t = targets(r.resolve("many.test"));
    assert_eq!(t.len(), MAX_ADDRESSES);
    // hosts in preference order, each host's addresses together
    let hosts: Vec<&str> = t.iter().map(|l| l.split(' ').next().unwrap()).collect();
    let mut sorted = hosts.clone();
    sorted.sort();
    assert_eq!(hosts, sorted);
    assert_eq!(hosts.last(), Some(&"h6.many.test"));
}

#[test]
fn unreachable_dns_server_is_temporary_and_quick() {
    // nothing listens on this port (no dnsmasq needed)
    let port = free_port();
    let r = Router::new(
        SmtpRoutes::default(),
        vec![SocketAddr::from(([127, 0, 0, 1], port))],
    )
    .with_timeouts(Duration::from_millis(300), 2, Duration::from_secs(5));
    let start = Instant::now();
    let why = temporary(r.resolve("example.test"));
    let took = start.elapsed();
    assert!(why.starts_with("MX lookup for example.test: "), "{why}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    // routes by IP still work without any DNS
    let r = Router::new(
        SmtpRoutes::parse(":127.0.0.1:2525").unwrap(),
        vec![SocketAddr::from(([127, 0, 0, 1], port))],
    );
    assert_eq!(
        targets(r.resolve("example.test")),
        ["127.0.0.1 127.0.0.1:2525"]
    );
}

#[test]
fn the_total_deadline_bounds_a_resolve_with_default_timeouts() {
    let port = free_port();
    let r = Router::new(
        SmtpRoutes::default(),
        vec![SocketAddr::from(([127, 0, 0, 1], port))],
    )
    .with_timeouts(tern_route::QUERY_TIMEOUT, 1, Duration::from_millis(700));
    let start = Instant::now();
    let _ = temporary(r.resolve("example.test"));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn from_control_uses_dnsservers() {
    if !have_dnsmasq() {
        return;
    }
    let dns = dnsmasq(&args(&[
        "--mx-host=ctl.test,mx.ctl.test,10",
        "--host-record=mx.ctl.test,127.0.0.61",
    ]));
    let dir = std::env::temp_dir().join(format!("tern-route-dns-{}", std::process::id()));
    let control = dir.join("control");
    std::fs::create_dir_all(&control).unwrap();
    std::fs::write(
        control.join("dnsservers"),
        format!("[127.0.0.1]:{}\n", dns.port),
    )
    .unwrap();
    // A loopback MX learned from DNS is refused by default, for good.
    let r = Router::from_control(&Control::in_dir(&control)).unwrap();
    match r.resolve("ctl.test") {
        Resolution::NoDomain(why) => assert!(why.contains("private"), "{why}"),
        other => panic!("a private MX was used: {other:?}"),
    }
    std::fs::write(control.join("remoteprivate"), "127.0.0.0/8\n").unwrap();
    let r = Router::from_control(&Control::in_dir(&control)).unwrap();
    assert_eq!(
        targets(r.resolve("ctl.test")),
        ["mx.ctl.test 127.0.0.61:25"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// RFC 5321 5.1 / qmail's ipme: an MX that is this host (an interface
/// address, or `moreipme`) is dropped with every less preferred MX; none
/// left is a permanent failure, never a loop through ourselves.
#[test]
fn an_mx_that_is_this_host_is_dropped_with_the_less_preferred() {
    if !have_dnsmasq() {
        return;
    }
    let dns = dnsmasq(&args(&[
        "--mx-host=self.test,me.self.test,10",
        "--mx-host=self.test,other.self.test,20",
        "--mx-host=better.test,good.better.test,5",
        "--mx-host=better.test,me.better.test,10",
        "--mx-host=better.test,worse.better.test,20",
        "--mx-host=nat.test,front.nat.test,10",
        "--host-record=me.self.test,127.0.0.1",
        "--host-record=other.self.test,127.0.0.62",
        "--host-record=good.better.test,127.0.0.63",
        "--host-record=me.better.test,127.0.0.1",
        "--host-record=worse.better.test,127.0.0.64",
        "--host-record=front.nat.test,192.0.2.9",
        "--host-record=localhost.test,127.0.0.1",
    ]));
    let dir = std::env::temp_dir().join(format!("tern-route-ipme-{}", std::process::id()));
    let control = dir.join("control");
    std::fs::create_dir_all(&control).unwrap();
    std::fs::write(
        control.join("dnsservers"),
        format!("[127.0.0.1]:{}\n", dns.port),
    )
    .unwrap();
    std::fs::write(control.join("remoteprivate"), "127.0.0.0/8\n").unwrap();
    std::fs::write(control.join("moreipme"), "192.0.2.9\n").unwrap();
    let r = Router::from_control(&Control::in_dir(&control)).unwrap();
    for (domain, what) in [
        ("self.test", "points back to this host"),
        ("nat.test", "points back to this host"),
        ("localhost.test", "points back to this host"),
        ("[127.0.0.1]", "is this host"),
    ] {
        match r.resolve(domain) {
            Resolution::NoDomain(why) => assert!(why.contains(what), "{domain}: {why}"),
            other => panic!("{domain}: {other:?}"),
        }
    }
    assert_eq!(
        targets(r.resolve("better.test")),
        ["good.better.test 127.0.0.63:25"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn special_use_names_never_reach_the_server() {
    // hickory answers .invalid itself (RFC 6761): NXDOMAIN without a query
    let port = free_port();
    let r = Router::new(
        SmtpRoutes::default(),
        vec![SocketAddr::from(([127, 0, 0, 1], port))],
    )
    .with_timeouts(Duration::from_secs(2), 1, Duration::from_secs(5));
    assert_eq!(
        no_domain(r.resolve("nowhere.invalid")),
        "domain nowhere.invalid does not exist"
    );
}

/// A fake DNS server on 127.0.0.1 (UDP) answering every query with
/// `reply(query)`; stops when dropped.
struct FakeDns {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeDns {
    fn start(reply: fn(&[u8]) -> Vec<u8>) -> FakeDns {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&reply(&buf[..n]), from);
                }
            }
        });
        FakeDns {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The query's header and question, as a response with `rcode` and no
/// records.
fn empty_reply(query: &[u8], rcode: u8) -> Vec<u8> {
    let mut end = 12;
    while end < query.len() && query[end] != 0 {
        end += 1 + query[end] as usize;
    }
    let end = (end + 5).min(query.len());
    let mut r = query[..end].to_vec();
    r[2] = 0x81; // QR, RD
    r[3] = 0x80 | rcode; // RA, rcode
    r[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    r
}

#[test]
fn servfail_and_garbage_answers_are_temporary() {
    let servfail = FakeDns::start(|q| empty_reply(q, 2));
    let r = Router::new(
        SmtpRoutes::default(),
        vec![SocketAddr::from(([127, 0, 0, 1], servfail.port))],
    )
    .with_timeouts(Duration::from_millis(300), 1, Duration::from_secs(5));
    assert_eq!(
        temporary(r.resolve("example.test")),
        "MX lookup for example.test: DNS server failure (SERVFAIL)"
    );
    // a reply that is no DNS message at all (right ID, then junk), and one
    // that claims records it does not hold: never a route, never a panic
    let junk = FakeDns::start(|q| {
        let mut r = q.get(..2).unwrap_or(&[0, 0]).to_vec();
        r.extend_from_slice(&[0x81, 0x80, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0xc0, 0x0c]);
        r
    });
    let lying = FakeDns::start(|q| {
        let mut r = empty_reply(q, 0);
        r[7] = 5; // five answers promised, none there
        r
    });
    for port in [junk.port, lying.port] {
        let r = Router::new(
            SmtpRoutes::default(),
            vec![SocketAddr::from(([127, 0, 0, 1], port))],
        )
        .with_timeouts(Duration::from_millis(300), 1, Duration::from_secs(5));
        let start = Instant::now();
        let why = temporary(r.resolve("example.test"));
        assert!(why.starts_with("MX lookup for example.test: "), "{why}");
        assert!(start.elapsed() < Duration::from_secs(4));
    }
}

#[test]
fn internationalised_domains_and_cnamed_mx_hosts() {
    if !have_dnsmasq() {
        return;
    }
    let dns = dnsmasq(&args(&[
        // bücher.test in A-label form
        "--mx-host=xn--bcher-kva.test,mx.xn--bcher-kva.test,10",
        "--host-record=mx.xn--bcher-kva.test,127.0.0.71",
        "--host-record=xn--caf-dma.test,127.0.0.72",
        // an MX host that is an alias (RFC 5321 says it should not be)
        "--mx-host=cn.test,alias.cn.test,10",
        "--cname=alias.cn.test,real.cn.test",
        "--host-record=real.cn.test,127.0.0.73",
    ]));
    let r = router(&dns, "");
    assert_eq!(
        targets(r.resolve("bücher.test")),
        ["mx.xn--bcher-kva.test 127.0.0.71:25"]
    );
    assert_eq!(
        targets(r.resolve("xn--bcher-kva.test")),
        ["mx.xn--bcher-kva.test 127.0.0.71:25"]
    );
    // implicit MX: the host name is the A-label form
    assert_eq!(
        targets(r.resolve("café.test")),
        ["xn--caf-dma.test 127.0.0.72:25"]
    );
    assert_eq!(
        targets(r.resolve("cn.test")),
        ["alias.cn.test 127.0.0.73:25"]
    );
}
