//! Remote delivery end to end: sendmail (or tern-queue) → tern-send →
//! tern-rspawn → tern-remote → a real third-party SMTP server on loopback
//! (aiosmtpd, `tests/peers/smtp_peer.py`, through the [`Peer`] fixture),
//! found through a real DNS server on loopback (dnsmasq, the [`Dnsmasq`]
//! fixture) or through `smtproutes`.
//!
//! MX records carry no port, so an MX host here is a peer on port 25 of its
//! own loopback address (127.x.y.z; all of 127/8 is loopback on Linux), one
//! per host and test ([`Peer::on_port25`]); those tests need root and print
//! SKIP otherwise. Tests that are not about MX routing reach the peer on a
//! free port through `smtproutes`. Every instance's `control/dnsservers`
//! names the test's dnsmasq, which answers `.test`/`.example` names from its
//! records and refuses everything else: no test resolves a real name.
//!
//! Retries: the remote schedule is long (first retry after 400 s), so a
//! test that needs a second attempt waits for tern-send's
//! `status=deferred` and then runs `ternctl flush` (SIGALRM: everything due
//! now). No assertion depends on timing; the waits are generous bounds.
//!
//! Needs dnsmasq, Debian's python3-aiosmtpd under /usr/bin/python3 and
//! openssl (`scripts/test` installs them); a missing one makes the tests
//! print SKIP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use tern_tests::{
    Daemon, DnsRecord, Dnsmasq, Instance, PYTHON, Peer, PeerMessage, PeerOptions, envelope,
    have_tool, is_root, python, self_signed_files, skip, wait_until,
};

/// The tools every test here needs; prints SKIP and returns false when one
/// is missing.
fn tools(test: &str) -> bool {
    if tern_tests::dnsmasq_program().is_none() {
        skip(test, "dnsmasq not installed (Debian package dnsmasq-base)");
        return false;
    }
    if !Path::new(PYTHON).is_file() || python("import aiosmtpd", &[]).0 != 0 {
        skip(
            test,
            "aiosmtpd not importable by /usr/bin/python3 (Debian package python3-aiosmtpd)",
        );
        return false;
    }
    true
}

/// As [`tools`], and root (an MX host is a peer on port 25).
fn tools_and_root(test: &str) -> bool {
    if !is_root() {
        skip(
            test,
            "needs root: MX hosts are SMTP peers on port 25 of loopback addresses",
        );
        return false;
    }
    tools(test)
}

/// A fresh instance with short network timeouts (a broken test fails in
/// seconds instead of hanging). Peers and dnsmasq live in its scratch
/// directory and are declared after it, so they stop before it is removed.
fn instance(name: &str) -> Instance {
    let inst = Instance::new(name);
    control(&inst, "timeoutconnect", "10");
    control(&inst, "timeoutremote", "60");
    // The peers live on loopback addresses (127.x.y.z, ::1), which remote
    // delivery refuses unless allowed; 127.0.0.1 and ::1 are this host's
    // own unless named one by one (the guard has tests of its own).
    control(&inst, "remoteprivate", "127.0.0.0/8\n127.0.0.1\n::1");
    inst
}

/// Starts dnsmasq with `records` and makes it `inst`'s only DNS server.
fn dns(inst: &Instance, records: &[DnsRecord]) -> Dnsmasq {
    let d = Dnsmasq::start(inst.scratch(), records);
    d.use_for(inst);
    d
}

fn control(inst: &Instance, name: &str, text: &str) {
    std::fs::write(inst.home().join("control").join(name), format!("{text}\n"))
        .unwrap_or_else(|e| panic!("write control/{name}: {e}"));
}

/// `sendmail -f test@localhost RCPTS...` with `msg`; asserts success.
fn send(inst: &Instance, rcpts: &[&str], msg: &[u8]) {
    let mut args = vec!["-f", "test@localhost"];
    args.extend_from_slice(rcpts);
    let (code, err) = inst.sendmail(&args, msg);
    assert_eq!(code, 0, "sendmail failed: {err}");
}

/// `tern-start --once`; asserts it succeeded and returns its log.
fn once(inst: &Instance) -> String {
    let out = inst
        .command("tern-start")
        .arg("--once")
        .output()
        .expect("run tern-start --once");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "tern-start --once failed:\n{log}");
    log
}

fn queue_count(inst: &Instance) -> usize {
    inst.queue().count().expect("count the queue")
}

fn lines_with<'a>(log: &'a str, what: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(what)).collect()
}

/// Everything a failing test should show: the daemon's log, the peer's
/// log, dnsmasq's queries.
fn context(log: &str, peers: &[&Peer], dns: &Dnsmasq) -> String {
    let mut s = format!("--- tern log:\n{log}\n");
    for (i, p) in peers.iter().enumerate() {
        s.push_str(&format!("--- peer {i} ({}):\n{}\n", p.addr(), p.log()));
    }
    s.push_str(&format!("--- dnsmasq:\n{}", dns.log()));
    s
}

fn msg(subject: &str) -> Vec<u8> {
    format!(
        "From: test@localhost\nTo: someone\nSubject: {subject}\nMessage-ID: <{subject}@localhost>\n\nbody of {subject}\n"
    )
    .into_bytes()
}

fn subject(m: &PeerMessage) -> String {
    let text = String::from_utf8_lossy(&m.data);
    text.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

/// The one bounce in the test mailbox (the sender is test@localhost).
fn the_bounce(inst: &Instance, log: &str) -> String {
    let files = inst.maildir("test");
    assert_eq!(files.len(), 1, "exactly one bounce expected:\n{log}");
    let text = String::from_utf8_lossy(&files[0]).into_owned();
    assert!(
        text.contains("report-type=delivery-status"),
        "not a bounce: {text}"
    );
    text
}

/// As [`the_bounce`], and it reports `rcpt` as failed.
fn failed_bounce(inst: &Instance, log: &str, rcpt: &str) -> String {
    let bounce = the_bounce(inst, log);
    assert!(
        bounce.contains(&format!("Final-Recipient: rfc822; {rcpt}")),
        "{bounce}"
    );
    assert!(bounce.contains("Action: failed"), "{bounce}");
    bounce
}

/// Checks the tools for `test` (SKIP and None when one is missing), then
/// makes the instance `name`.
fn setup(test: &str, name: &str) -> Option<Instance> {
    tools(test).then(|| instance(name))
}

/// As [`setup`], and root (the test's MX hosts are peers on port 25).
fn setup_as_root(test: &str, name: &str) -> Option<Instance> {
    tools_and_root(test).then(|| instance(name))
}

/// A peer with `opts` on 127.0.0.1, a free port (reached through
/// `smtproutes`).
fn free_peer(inst: &Instance, opts: PeerOptions) -> Peer {
    Peer::on_free_port(inst.scratch(), &opts)
}

/// A plain peer on port 25 of a fresh loopback address: an MX host.
fn mx_peer(inst: &Instance) -> Peer {
    Peer::on_port25(inst.scratch(), &PeerOptions::default())
}

/// The records of `domain` with one MX host, `mx.DOMAIN`, at `addrs`.
fn one_mx(domain: &str, addrs: &[IpAddr]) -> [DnsRecord; 2] {
    let mx = format!("mx.{domain}");
    [DnsRecord::mx(domain, 10, &mx), DnsRecord::host(&mx, addrs)]
}

/// Routes each domain to its peer through `smtproutes`
/// (`domain:[127.0.0.1]:port`) and starts a dnsmasq with no records, so
/// that only the routes can deliver.
fn route(inst: &Instance, routes: &[(&str, &Peer)]) -> Dnsmasq {
    let dns = dns(inst, &[]);
    let lines: Vec<String> = routes
        .iter()
        .map(|(domain, peer)| format!("{domain}:[127.0.0.1]:{}", peer.port()))
        .collect();
    control(inst, "smtproutes", &lines.join("\n"));
    dns
}

/// The one message `peer` accepted; fails (showing `ctx`) unless there is
/// exactly one.
fn only_message(peer: &Peer, ctx: impl Fn() -> String) -> PeerMessage {
    let mut got = peer.messages();
    assert_eq!(
        got.len(),
        1,
        "exactly one message expected at {}: {}",
        peer.addr(),
        ctx()
    );
    got.remove(0)
}

/// Asserts that nothing is left in the queue.
fn assert_queue_empty(inst: &Instance, ctx: impl Fn() -> String) {
    assert_eq!(queue_count(inst), 0, "still queued: {}", ctx());
}

/// Checks the tools for `test` (SKIP and None when one is missing), then
/// makes the instance `name` with one peer (`opts`) on a free port, the
/// `smtproutes` relay for `domain`, and a dnsmasq with no records.
fn routed(
    test: &str,
    name: &str,
    domain: &str,
    opts: PeerOptions,
) -> Option<(Instance, Peer, Dnsmasq)> {
    let inst = setup(test, name)?;
    let peer = free_peer(&inst, opts);
    let dns = route(&inst, &[(domain, &peer)]);
    Some((inst, peer, dns))
}

/// Sends one message with `subject` to `rcpt` and runs the queue once;
/// asserts that `peer` got it, for `rcpt` alone, and that the queue is
/// empty. Returns the message and the log.
fn deliver_one(
    inst: &Instance,
    rcpt: &str,
    subject_: &str,
    peer: &Peer,
    dns: &Dnsmasq,
) -> (PeerMessage, String) {
    send(inst, &[rcpt], &msg(subject_));
    let log = once(inst);
    let ctx = || context(&log, &[peer], dns);
    let got = only_message(peer, ctx);
    assert_eq!(got.rcpt_tos, vec![rcpt], "{}", ctx());
    assert_eq!(subject(&got), subject_, "{}", ctx());
    assert_queue_empty(inst, ctx);
    (got, log)
}

#[test]
fn mx_with_the_lowest_preference_gets_the_mail() {
    let t = "remote::mx_with_the_lowest_preference_gets_the_mail";
    let Some(inst) = setup_as_root(t, "remote-mx-pref") else {
        return;
    };
    let best = mx_peer(&inst);
    let worse = mx_peer(&inst);
    // The worse MX is listed first, so the order must come from the
    // preferences, not from the answer's order.
    let dns = dns(
        &inst,
        &[
            DnsRecord::mx("pref.test", 20, "mx2.pref.test"),
            DnsRecord::mx("pref.test", 10, "mx1.pref.test"),
            DnsRecord::host("mx1.pref.test", &[best.ip()]),
            DnsRecord::host("mx2.pref.test", &[worse.ip()]),
        ],
    );
    for i in 0..3 {
        send(&inst, &["user@pref.test"], &msg(&format!("pref-{i}")));
    }
    let log = once(&inst);
    let ctx = || context(&log, &[&best, &worse], &dns);
    assert_eq!(best.message_count(), 3, "{}", ctx());
    assert_eq!(worse.message_count(), 0, "{}", ctx());
    assert_eq!(worse.connections(), 0, "{}", ctx());
    for m in best.messages() {
        assert_eq!(m.rcpt_tos, vec!["user@pref.test"]);
        assert_eq!(m.mail_from, "test@localhost");
    }
    assert_queue_empty(&inst, ctx);
}

#[test]
fn next_mx_when_the_first_refuses_connections() {
    let t = "remote::next_mx_when_the_first_refuses_connections";
    let Some(inst) = setup_as_root(t, "remote-mx-fallback") else {
        return;
    };
    // Nothing listens on port 25 of `dead`: connections are refused.
    let dead = tern_tests::fresh_loopback();
    let backup = mx_peer(&inst);
    let dns = dns(
        &inst,
        &[
            DnsRecord::mx("fallback.test", 10, "mx1.fallback.test"),
            DnsRecord::mx("fallback.test", 20, "mx2.fallback.test"),
            DnsRecord::host("mx1.fallback.test", &[dead.into()]),
            DnsRecord::host("mx2.fallback.test", &[backup.ip()]),
        ],
    );
    let (_, log) = deliver_one(&inst, "user@fallback.test", "fallback", &backup, &dns);
    // The refused MX was looked up and tried before the backup.
    assert!(
        dns.log().contains("mx1.fallback.test"),
        "the first MX was never looked up: {}",
        context(&log, &[&backup], &dns)
    );
}

#[test]
fn implicit_mx_uses_the_domains_address_record() {
    let t = "remote::implicit_mx_uses_the_domains_address_record";
    let Some(inst) = setup_as_root(t, "remote-implicit") else {
        return;
    };
    let peer = mx_peer(&inst);
    // No MX record at all: RFC 5321 5.1, the domain itself is the host.
    let dns = dns(&inst, &[DnsRecord::host("implicit.test", &[peer.ip()])]);
    deliver_one(&inst, "user@implicit.test", "implicit", &peer, &dns);
}

/// qmail's VERP through remote delivery: a sender `prefix-@host-@[]` and
/// two recipients at one domain make two SMTP transactions, each with its
/// own MAIL FROM `prefix-local=domain@host`.
#[test]
fn verp_sender_gives_each_remote_recipient_its_own_transaction() {
    let t = "remote::verp_sender_gives_each_remote_recipient_its_own_transaction";
    let Some(inst) = setup_as_root(t, "remote-verp") else {
        return;
    };
    let peer = mx_peer(&inst);
    let dns = dns(&inst, &one_mx("verp.test", &[peer.ip()]));
    let r = inst.inject_raw(
        b"Subject: list\n\nto two subscribers\n",
        &tern_tests::envelope(
            "ezlist-return-@lists.example-@[]",
            &["ann@verp.test", "bob@verp.test"],
        ),
    );
    assert_eq!(r.code(), 0, "{}", r.stderr);
    let log = once(&inst);
    assert_queue_empty(&inst, || context(&log, &[&peer], &dns));
    let mut got: Vec<(String, Vec<String>)> = peer
        .messages()
        .into_iter()
        .map(|m| (m.mail_from, m.rcpt_tos))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (
                "ezlist-return-ann=verp.test@lists.example".to_string(),
                vec!["ann@verp.test".to_string()]
            ),
            (
                "ezlist-return-bob=verp.test@lists.example".to_string(),
                vec!["bob@verp.test".to_string()]
            ),
        ]
    );
}

#[test]
fn null_mx_bounces_at_once_naming_the_reason() {
    let t = "remote::null_mx_bounces_at_once_naming_the_reason";
    let Some(inst) = setup(t, "remote-nullmx") else {
        return;
    };
    let dns = dns(
        &inst,
        &[
            DnsRecord::null_mx("nullmx.test"),
            // An address record too: a null MX must win over implicit MX.
            DnsRecord::host("nullmx.test", &[Ipv4Addr::LOCALHOST.into()]),
        ],
    );
    send(&inst, &["nobody@nullmx.test"], &msg("to a null mx"));
    // One queue run: a null MX is a permanent failure at the first attempt.
    let log = once(&inst);
    assert_queue_empty(&inst, || context(&log, &[], &dns));
    assert_eq!(
        lines_with(&log, "status=failed").len(),
        1,
        "one permanent failure expected:\n{log}"
    );
    let bounce = failed_bounce(&inst, &log, "nobody@nullmx.test");
    assert!(
        bounce.to_ascii_lowercase().contains("null mx"),
        "the bounce must name the reason (null MX): {bounce}"
    );
}

/// An MX that points back to this host (127.0.0.1, an interface address)
/// fails permanently at the first attempt with a bounce: no loop through
/// our own listener. A private MX is refused the same way unless
/// `remoteprivate` allows it (then it is used: every other test here).
#[test]
fn mx_to_this_host_or_a_private_network_bounces_at_once() {
    let t = "remote::mx_to_this_host_or_a_private_network_bounces_at_once";
    let Some(inst) = setup(t, "remote-ipme") else {
        return;
    };
    // The defaults: nothing private allowed, 127.0.0.1 is this host.
    std::fs::remove_file(inst.home().join("control/remoteprivate")).unwrap();
    let dns = dns(
        &inst,
        &[
            DnsRecord::mx("loop.test", 10, "mx.loop.test"),
            DnsRecord::host("mx.loop.test", &[Ipv4Addr::LOCALHOST.into()]),
            DnsRecord::mx("inside.test", 10, "mx.inside.test"),
            DnsRecord::host("mx.inside.test", &[Ipv4Addr::new(10, 1, 2, 3).into()]),
        ],
    );
    send(
        &inst,
        &["someone@loop.test", "someone@inside.test"],
        &msg("to ourselves"),
    );
    let log = once(&inst);
    assert_queue_empty(&inst, || context(&log, &[], &dns));
    assert_eq!(
        lines_with(&log, "status=failed").len(),
        2,
        "two permanent failures at the first attempt:\n{log}"
    );
    assert!(!log.contains("status=deferred"), "{log}");
    let bounce = failed_bounce(&inst, &log, "someone@loop.test");
    assert!(bounce.contains("points back to this host"), "{bounce}");
    assert!(bounce.contains("private"), "{bounce}");
    assert!(
        !bounce.contains("10.1.2.3"),
        "no internal address in the bounce: {bounce}"
    );
}

#[test]
fn smtproutes_relay_by_name_and_port() {
    let t = "remote::smtproutes_relay_by_name_and_port";
    let Some(inst) = setup(t, "remote-routes") else {
        return;
    };
    let peer = free_peer(&inst, PeerOptions::default());
    let other = free_peer(&inst, PeerOptions::default());
    // routed.test has no DNS records: only the route can deliver it. The
    // relay is a host name, resolved by its address record (never MX).
    let dns = dns(
        &inst,
        &[
            DnsRecord::host("relay.routes.test", &[Ipv4Addr::LOCALHOST.into()]),
            DnsRecord::mx("relay.routes.test", 10, "wrong.routes.test"),
        ],
    );
    control(
        &inst,
        "smtproutes",
        &format!(
            "routed.test:relay.routes.test:{}\n.sub.test:[127.0.0.1]:{}",
            peer.port(),
            other.port()
        ),
    );
    send(&inst, &["a@routed.test"], &msg("routed by name"));
    send(&inst, &["b@deep.sub.test"], &msg("routed by suffix"));
    let log = once(&inst);
    let ctx = || context(&log, &[&peer, &other], &dns);
    let got = only_message(&peer, ctx);
    assert_eq!(got.rcpt_tos, vec!["a@routed.test"]);
    assert_eq!(subject(&got), "routed by name");
    let got = only_message(&other, ctx);
    assert_eq!(got.rcpt_tos, vec!["b@deep.sub.test"]);
    assert_queue_empty(&inst, ctx);
}

#[test]
fn smarthost_takes_every_remote_domain() {
    let t = "remote::smarthost_takes_every_remote_domain";
    let Some(inst) = setup(t, "remote-smarthost") else {
        return;
    };
    let peer = free_peer(&inst, PeerOptions::default());
    // No records: any MX or address lookup for these domains fails.
    let dns = dns(&inst, &[]);
    control(
        &inst,
        "smtproutes",
        &format!(":[127.0.0.1]:{}", peer.port()),
    );
    send(&inst, &["x@anywhere.example"], &msg("smarthost one"));
    send(&inst, &["y@elsewhere.test"], &msg("smarthost two"));
    let log = once(&inst);
    let ctx = || context(&log, &[&peer], &dns);
    let mut got: Vec<(String, Vec<String>)> = peer
        .messages()
        .iter()
        .map(|m| (subject(m), m.rcpt_tos.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "smarthost one".to_string(),
                vec!["x@anywhere.example".to_string()]
            ),
            (
                "smarthost two".to_string(),
                vec!["y@elsewhere.test".to_string()]
            ),
        ],
        "{}",
        ctx()
    );
    assert_queue_empty(&inst, ctx);
}

/// [::1]:25 is the one IPv6 loopback port 25: the tests that listen there
/// or need it closed take turns.
static V6_PORT25: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn every_address_of_an_mx_host_is_tried() {
    let t = "remote::every_address_of_an_mx_host_is_tried";
    if !tools_and_root(t) {
        return;
    }
    let _v6 = V6_PORT25.lock().unwrap_or_else(|e| e.into_inner());
    if std::net::TcpStream::connect("[::1]:25").is_ok() {
        skip(t, "something listens on [::1]:25");
        return;
    }
    let inst = instance("remote-addresses");
    let peer = mx_peer(&inst);
    // One MX host with two addresses: AAAA ::1 (nothing listens on port
    // 25 there: refused), tried first (AAAA before A), then A, the peer.
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let dns = dns(&inst, &one_mx("addresses.test", &[v6, peer.ip()]));
    let (_, log) = deliver_one(&inst, "user@addresses.test", "second address", &peer, &dns);
    // Tried in order: ::1 first (refused), then the peer's address.
    let remote: Vec<&str> = lines_with(&log, "tern-remote: ");
    let refused = remote
        .iter()
        .position(|l| l.contains("ip=::1 ") && l.contains("refused"));
    let used = remote
        .iter()
        .position(|l| l.contains("event=connect ") && l.contains(&format!("ip={} ", peer.ip())));
    assert!(
        matches!((refused, used), (Some(r), Some(u)) if r < u),
        "the refused address must have been tried first: {}",
        context(&log, &[&peer], &dns)
    );
}

#[test]
fn ipv6_loopback_mx() {
    let t = "remote::ipv6_loopback_mx";
    if !tools_and_root(t) {
        return;
    }
    let _v6 = V6_PORT25.lock().unwrap_or_else(|e| e.into_inner());
    let inst = instance("remote-ipv6");
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let peer = match Peer::start(inst.scratch(), v6, 25, &PeerOptions::default()) {
        Ok(p) => p,
        Err(e) => {
            skip(t, &format!("cannot listen on [::1]:25: {e}"));
            return;
        }
    };
    // The MX host has only an AAAA record.
    let dns = dns(&inst, &one_mx("v6.test", &[v6]));
    deliver_one(&inst, "user@v6.test", "over ipv6", &peer, &dns);
}

/// Waits until tern-send has recorded `n` deferrals in the daemon's log.
fn wait_deferred(daemon: &Daemon, n: usize) -> bool {
    wait_until(60, || {
        lines_with(&daemon.log(), "status=deferred").len() >= n
    })
}

/// As [`wait_deferred`]; fails saying `why` when the deferrals do not come.
fn expect_deferred(daemon: &Daemon, n: usize, why: &str, peer: &Peer, dns: &Dnsmasq) {
    assert!(
        wait_deferred(daemon, n),
        "{why}: {}",
        context(&daemon.log(), &[peer], dns)
    );
}

/// Nothing has reached `peer` and the one message is still queued.
fn assert_deferred_not_delivered(inst: &Instance, peer: &Peer, ctx: impl Fn() -> String) {
    assert_eq!(peer.message_count(), 0, "{}", ctx());
    assert_eq!(
        queue_count(inst),
        1,
        "a deferred message stays queued: {}",
        ctx()
    );
}

fn flush(inst: &Instance) {
    let out = inst.command("ternctl").arg("flush").output().unwrap();
    assert!(
        out.status.success(),
        "ternctl flush: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ternctl flush`, then waits until `peer` has a message and the queue is
/// empty.
fn flush_until_delivered(inst: &Instance, daemon: &Daemon, peer: &Peer, dns: &Dnsmasq) {
    flush(inst);
    assert!(
        wait_until(60, || peer.message_count() >= 1 && queue_count(inst) == 0),
        "not delivered after the retry: {}",
        context(&daemon.log(), &[peer], dns)
    );
}

/// Stops `tern-start` and asserts that it exited successfully.
fn stop(mut daemon: Daemon) {
    assert!(
        daemon.stop(30).is_some_and(|s| s.success()),
        "tern-start did not stop cleanly:\n{}",
        daemon.log()
    );
}

#[test]
fn temporary_failure_is_retried_and_then_delivered() {
    let t = "remote::temporary_failure_is_retried_and_then_delivered";
    let opts = PeerOptions {
        tempfail: 1,
        ..PeerOptions::default()
    };
    let Some((inst, peer, dns)) = routed(t, "remote-4xx", "tempfail.test", opts) else {
        return;
    };
    let daemon = Daemon::start(&inst);
    send(&inst, &["user@tempfail.test"], &msg("try again"));
    expect_deferred(&daemon, 1, "no deferral", &peer, &dns);
    assert!(
        daemon.log().contains("451"),
        "the remote reply belongs in the log: {}",
        daemon.log()
    );
    assert_deferred_not_delivered(&inst, &peer, || daemon.log());
    flush_until_delivered(&inst, &daemon, &peer, &dns);
    let got = only_message(&peer, || daemon.log());
    assert_eq!(subject(&got), "try again");
    stop(daemon);
}

#[test]
fn permanent_failure_bounces_naming_the_recipient_and_the_reply() {
    let t = "remote::permanent_failure_bounces_naming_the_recipient_and_the_reply";
    let opts = PeerOptions {
        reject: vec!["gone@reject.test".to_string()],
        ..PeerOptions::default()
    };
    let Some((inst, peer, dns)) = routed(t, "remote-5xx", "reject.test", opts) else {
        return;
    };
    send(
        &inst,
        &["here@reject.test", "gone@reject.test"],
        &msg("half rejected"),
    );
    let log = once(&inst);
    let ctx = || context(&log, &[&peer], &dns);
    // The good recipient was delivered, in the same transaction.
    let got = only_message(&peer, ctx);
    assert_eq!(got.rcpt_tos, vec!["here@reject.test"], "{}", ctx());
    assert_queue_empty(&inst, ctx);
    let bounce = failed_bounce(&inst, &log, "gone@reject.test");
    assert!(
        !bounce.contains("Final-Recipient: rfc822; here@reject.test"),
        "the delivered recipient is not bounced: {bounce}"
    );
    // Long lines of the report are folded: compare with the folds undone.
    let unfolded = bounce.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        unfolded.contains("peer says: no such mailbox here"),
        "the bounce must quote the remote reply: {bounce}"
    );
    assert!(
        unfolded.contains(
            "Diagnostic-Code: smtp; 550 5.1.1 <gone@reject.test>: peer says: no such mailbox here"
        ),
        "the reply is an smtp diagnostic (RFC 3464): {bounce}"
    );
    // The remote reply's enhanced status code is the recipient's DSN status
    // (RFC 3464 2.3.4), not a generic 5.0.0.
    assert!(
        bounce.contains("Status: 5.1.1"),
        "the DSN status must be the remote's 5.1.1: {bounce}"
    );
    assert!(
        !bounce.contains("127.0.0.1"),
        "the bounce discloses an internal address: {bounce}"
    );
}

/// A smarthost named in smtproutes (an internal name) never appears in a
/// bounce: the report says "the relay", and there is no Remote-MTA.
#[test]
fn smarthost_name_never_appears_in_a_bounce() {
    let t = "remote::smarthost_name_never_appears_in_a_bounce";
    let Some(inst) = setup(t, "remote-smarthost-name") else {
        return;
    };
    let opts = PeerOptions {
        reject: vec!["gone@far.test".to_string()],
        ..PeerOptions::default()
    };
    let peer = free_peer(&inst, opts);
    let dns = dns(
        &inst,
        &[DnsRecord::host(
            "smarthost.internal.test",
            &[Ipv4Addr::LOCALHOST.into()],
        )],
    );
    control(
        &inst,
        "smtproutes",
        &format!(":smarthost.internal.test:{}", peer.port()),
    );
    send(&inst, &["gone@far.test"], &msg("to the smarthost"));
    let log = once(&inst);
    let _ctx = || context(&log, &[&peer], &dns);
    let bounce = failed_bounce(&inst, &log, "gone@far.test");
    let unfolded = bounce.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        !bounce.to_ascii_lowercase().contains("smarthost.internal"),
        "the bounce names the smarthost: {bounce}"
    );
    assert!(!bounce.contains("Remote-MTA"), "{bounce}");
    assert!(!bounce.contains("smtproutes"), "{bounce}");
    assert!(
        unfolded.contains("the relay said: 550 5.1.1"),
        "the bounce quotes the reply: {bounce}"
    );
}

/// A message large enough that tern-remote is still writing when the peer
/// drops the connection (lines of 76 characters, about 1 MiB).
fn big_message() -> Vec<u8> {
    let mut m = b"From: test@localhost\nSubject: big\n\n".to_vec();
    for i in 0..14_000 {
        m.extend_from_slice(format!("{i:08} {}\n", "y".repeat(67)).as_bytes());
    }
    m
}

#[test]
fn connection_dropped_in_data_is_retried_and_delivered_once() {
    let t = "remote::connection_dropped_in_data_is_retried_and_delivered_once";
    let opts = PeerOptions {
        drop_in_data: 1,
        ..PeerOptions::default()
    };
    let Some((inst, peer, dns)) = routed(t, "remote-drop", "drop.test", opts) else {
        return;
    };
    let daemon = Daemon::start(&inst);
    let body = big_message();
    send(&inst, &["user@drop.test"], &body);
    expect_deferred(
        &daemon,
        1,
        "a connection lost in DATA must be a temporary failure",
        &peer,
        &dns,
    );
    assert!(peer.log().contains("dropped in DATA"), "{}", peer.log());
    assert_deferred_not_delivered(&inst, &peer, || daemon.log());
    flush_until_delivered(&inst, &daemon, &peer, &dns);
    // Give a duplicate the chance to show up.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let got = only_message(&peer, || daemon.log());
    assert!(
        got.data.ends_with(&crlf(&body)),
        "content changed in transit"
    );
    stop(daemon);
}

/// Checks the tools, root and openssl for `test` (SKIP and None when one
/// is missing), then makes the instance `name` with a TLS peer on port 25
/// of a fresh loopback address, the MX of `domain`.
fn tls_setup(
    test: &str,
    name: &str,
    domain: &str,
    bad_starttls: bool,
) -> Option<(Instance, Peer, Dnsmasq)> {
    if !tools_and_root(test) || !need_openssl(test) {
        return None;
    }
    let inst = instance(name);
    let dir = inst.scratch();
    let (cert, key) = self_signed_files(dir, &format!("mx.{domain}"));
    let peer = Peer::on_port25(
        dir,
        &PeerOptions {
            tls: Some((cert, key)),
            bad_starttls,
            ..PeerOptions::default()
        },
    );
    let dns = dns(&inst, &one_mx(domain, &[peer.ip()]));
    Some((inst, peer, dns))
}

fn need_openssl(test: &str) -> bool {
    if !have_tool("openssl") {
        skip(test, "openssl not installed");
        return false;
    }
    true
}

#[test]
fn starttls_with_a_self_signed_peer_is_used_opportunistically() {
    let t = "remote::starttls_with_a_self_signed_peer_is_used_opportunistically";
    let Some((inst, peer, dns)) = tls_setup(t, "remote-tls", "tls.test", false) else {
        return;
    };
    let (got, log) = deliver_one(&inst, "user@tls.test", "over tls", &peer, &dns);
    let ctx = || context(&log, &[&peer], &dns);
    assert!(got.tls, "sent in plain text: {}", ctx());
    assert!(
        got.tls_version
            .as_deref()
            .is_some_and(|v| v == "TLSv1.3" || v == "TLSv1.2"),
        "{:?}",
        got.tls_version
    );
    // tern-remote logs that TLS was used, with the protocol version the
    // peer saw ("TLSv1.3" at the peer, "TLS1.3" in Tern's log).
    let version = got
        .tls_version
        .clone()
        .unwrap_or_default()
        .replace("TLSv", "TLS");
    assert!(
        lines_with(&log, "tern-remote")
            .iter()
            .any(|l| l.contains(&version)),
        "no log line of tern-remote names {version}: {}",
        ctx()
    );
}

#[test]
fn verify_policy_refuses_a_self_signed_peer_and_never_sends_in_plain_text() {
    let t = "remote::verify_policy_refuses_a_self_signed_peer_and_never_sends_in_plain_text";
    let Some((inst, peer, dns)) = tls_setup(t, "remote-tls-verify", "verify.test", false) else {
        return;
    };
    control(&inst, "tlsdestinations", "verify.test:verify");
    let daemon = Daemon::start(&inst);
    send(&inst, &["user@verify.test"], &msg("verified only"));
    expect_deferred(
        &daemon,
        1,
        "a verify destination with an untrusted certificate is a temporary failure",
        &peer,
        &dns,
    );
    // A second attempt, after tern-remote has seen the TLS failure once:
    // still no plain-text fallback for a verify destination.
    flush(&inst);
    expect_deferred(&daemon, 2, "no second deferral", &peer, &dns);
    let log = daemon.log();
    let ctx = || context(&log, &[&peer], &dns);
    assert!(
        peer.log().contains("STARTTLS"),
        "the peer was never asked for STARTTLS: {}",
        ctx()
    );
    assert!(
        !peer.log().contains("MAIL FROM"),
        "the envelope went out without verified TLS: {}",
        ctx()
    );
    assert_eq!(lines_with(&log, "status=failed").len(), 0, "{}", ctx());
    assert_deferred_not_delivered(&inst, &peer, ctx);
    stop(daemon);
}

#[test]
fn failed_starttls_handshake_falls_back_to_plain_text() {
    let t = "remote::failed_starttls_handshake_falls_back_to_plain_text";
    let Some((inst, peer, dns)) = tls_setup(t, "remote-tls-bad", "badtls.test", true) else {
        return;
    };
    // One queue run: the retry in plain text belongs to the same attempt.
    let (got, log) = deliver_one(&inst, "user@badtls.test", "after the fallback", &peer, &dns);
    assert!(
        peer.log().contains("bad starttls"),
        "STARTTLS was not tried: {}",
        context(&log, &[&peer], &dns)
    );
    assert!(!got.tls);
}

/// What the peer must receive for stored bytes `stored` (the rule of
/// tern-client's encoder, after the peer has removed the dot-stuffing): a
/// stored CRLF is one line end; every other CR and every other LF is a line
/// end; line ends are CRLF; a last line without one gets one.
fn crlf(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.len() + stored.len() / 16);
    let mut i = 0;
    while i < stored.len() {
        match stored[i] {
            b'\r' if stored.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[test]
fn bare_cr_bare_lf_and_leading_dots_arrive_as_one_message_unchanged() {
    let t = "remote::bare_cr_bare_lf_and_leading_dots_arrive_as_one_message_unchanged";
    let opts = PeerOptions::default();
    let Some((inst, peer, dns)) = routed(t, "remote-bytes", "bytes.test", opts) else {
        return;
    };
    // Stored through tern-queue as is (sendmail would not change these
    // bytes either, but this is the stored form exactly). Every sequence
    // here would end DATA early, or split the message, at a next hop that
    // took a bare CR or LF as a line end, if sent unchanged.
    let message: &[u8] = b"From: test@localhost\nSubject: odd bytes\n\n\
.leading dot\n\
..two leading dots\n\
.\n\
bare CR then a dot line\r.\rafter it\n\
a stored CRLF\r\n.\r\n\
bare LF\n.\n\
CR at the end of a line\r\n\
\r\r\n\
.. last line, no line end";
    let got = inst.inject_raw(message, &envelope("test@localhost", &["user@bytes.test"]));
    assert_eq!(got.code(), 0, "{}", got.stderr);
    let log = once(&inst);
    let ctx = || context(&log, &[&peer], &dns);
    let data = only_message(&peer, ctx).data;
    // On top: tern-queue's Received line (one line), then the message.
    assert!(
        data.starts_with(b"Received: (tern-queue "),
        "{}",
        String::from_utf8_lossy(&data)
    );
    let nl = data.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    assert_eq!(
        String::from_utf8_lossy(&data[nl..]),
        String::from_utf8_lossy(&crlf(message)),
        "content changed in transit"
    );
    assert_queue_empty(&inst, ctx);
}

#[test]
fn hundred_messages_batched_per_domain_over_reused_connections() {
    let t = "remote::hundred_messages_batched_per_domain_over_reused_connections";
    let Some(inst) = setup(t, "remote-batch") else {
        return;
    };
    let one = free_peer(&inst, PeerOptions::default());
    let two = free_peer(&inst, PeerOptions::default());
    let dns = route(&inst, &[("one.test", &one), ("two.test", &two)]);
    // 2 per domain, 4 in all: no worker ever has to be closed to make room
    // for another domain's.
    let per_domain = 2;
    control(&inst, "concurrencydomain", &per_domain.to_string());
    control(&inst, "concurrencyremote", &(2 * per_domain).to_string());
    let n = 100;
    for i in 0..n {
        send(
            &inst,
            &["a1@one.test", "b@two.test", "a2@one.test"],
            &msg(&format!("batch-{i}")),
        );
    }
    assert_eq!(queue_count(&inst), n);
    // Everything is due at once and tern-start waits for all of it.
    let log = once(&inst);
    let ctx = || context(&log, &[&one, &two], &dns);
    assert_queue_empty(&inst, ctx);
    for (peer, want) in [
        (&one, vec!["a1@one.test", "a2@one.test"]),
        (&two, vec!["b@two.test"]),
    ] {
        let got = peer.messages();
        assert_eq!(
            got.len(),
            n,
            "one transaction per message and domain: {}",
            ctx()
        );
        let mut seen = vec![false; n];
        for m in &got {
            let mut rcpts = m.rcpt_tos.clone();
            rcpts.sort();
            assert_eq!(rcpts, want, "recipients of one domain travel together");
            let i: usize = subject(m)
                .strip_prefix("batch-")
                .and_then(|s| s.parse().ok())
                .expect("a batch message");
            assert!(!seen[i], "batch-{i} delivered twice to {:?}", want);
            seen[i] = true;
        }
        // At most `per_domain` connections are open to a domain at once and
        // each is kept for the next message; allow every slot one
        // reconnect. Without reuse this would be 100.
        let conns = peer.connections();
        assert!(
            conns >= 1 && conns <= 2 * per_domain,
            "{conns} connections for {n} messages to {want:?}: {}",
            ctx()
        );
    }
}

#[test]
fn send_only_host_sendmail_then_once_delivers_off_the_host() {
    let t = "remote::send_only_host_sendmail_then_once_delivers_off_the_host";
    let Some(inst) = setup_as_root(t, "remote-sendonly") else {
        return;
    };
    let peer = mx_peer(&inst);
    let dns = dns(&inst, &one_mx("dest.example", &[peer.ip()]));
    // No tern-start, no listener: sendmail only queues.
    let (code, err) = inst.sendmail(
        &["-i", "friend@dest.example"],
        b"To: friend@dest.example\nSubject: from a send-only host\n\nhello\n",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(queue_count(&inst), 1);
    assert_eq!(peer.connections(), 0);
    assert!(inst.pids_of("").is_empty(), "{:?}", inst.pids_of(""));
    // What cron runs.
    let log = once(&inst);
    let ctx = || context(&log, &[&peer], &dns);
    let got = only_message(&peer, ctx);
    assert_eq!(got.rcpt_tos, vec!["friend@dest.example"]);
    assert_eq!(subject(&got), "from a send-only host");
    assert_queue_empty(&inst, ctx);
    assert!(
        inst.pids_of("").is_empty(),
        "processes left running: {:?}",
        inst.pids_of("")
    );
    // The sender's address was completed by sendmail's header fix-ups and
    // the envelope sender is the invoking user's.
    assert!(
        !got.mail_from.is_empty(),
        "envelope sender missing: {got:?}"
    );
}

/// One DNS query over UDP to 127.0.0.1:`port`: (rcode, answer count,
/// the whole response).
fn dns_query(port: u16, name: &str, qtype: u16) -> (u8, u16, Vec<u8>) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    sock.send_to(&q, ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = sock.recv_from(&mut buf).expect("a DNS answer");
    let r = buf[..n].to_vec();
    assert_eq!(r[..2], [0x12, 0x34]);
    (r[3] & 0x0f, u16::from_be_bytes([r[6], r[7]]), r)
}

/// The fixtures themselves, without Tern: dnsmasq serves exactly the
/// records given (MX, null MX, A, AAAA), NXDOMAIN for other test names and
/// REFUSED for real names; the peer records what it accepts and applies
/// its behaviours. A Tern test failing because of a broken fixture would
/// blame the wrong program.
#[test]
fn harness_dnsmasq_and_peer_behave_as_documented() {
    let t = "remote::harness_dnsmasq_and_peer_behave_as_documented";
    let Some(inst) = setup(t, "remote-harness") else {
        return;
    };
    let peer = free_peer(
        &inst,
        PeerOptions {
            tempfail: 1,
            reject: vec!["no@peer.test".to_string()],
            ..PeerOptions::default()
        },
    );
    let dns = dns(
        &inst,
        &[
            DnsRecord::mx("h.test", 20, "mx2.h.test"),
            DnsRecord::mx("h.test", 10, "mx1.h.test"),
            DnsRecord::null_mx("null.test"),
            DnsRecord::host("mx1.h.test", &[Ipv4Addr::new(127, 0, 0, 9).into()]),
            DnsRecord::host("mx2.h.test", &[IpAddr::V6(Ipv6Addr::LOCALHOST)]),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(inst.home().join("control/dnsservers")).unwrap(),
        format!("[127.0.0.1]:{}\n", dns.port())
    );
    const A: u16 = 1;
    const MX: u16 = 15;
    const AAAA: u16 = 28;
    let (rcode, n, _) = dns_query(dns.port(), "h.test", MX);
    assert_eq!((rcode, n), (0, 2));
    let (rcode, n, r) = dns_query(dns.port(), "mx1.h.test", A);
    assert_eq!((rcode, n), (0, 1));
    assert!(r.ends_with(&[127, 0, 0, 9]));
    let (rcode, n, _) = dns_query(dns.port(), "mx1.h.test", AAAA);
    assert_eq!((rcode, n), (0, 0), "no AAAA: an empty answer, not an error");
    let (rcode, n, r) = dns_query(dns.port(), "mx2.h.test", AAAA);
    assert_eq!((rcode, n), (0, 1));
    assert!(r.ends_with(&Ipv6Addr::LOCALHOST.octets()));
    // Null MX: preference 0, the root name (RDATA 00 00 00).
    let (rcode, n, r) = dns_query(dns.port(), "null.test", MX);
    assert_eq!((rcode, n), (0, 1));
    assert!(r.ends_with(&[0, 3, 0, 0, 0]), "{r:?}");
    let (rcode, _, _) = dns_query(dns.port(), "nothing.test", MX);
    assert_eq!(rcode, 3, "NXDOMAIN for unknown test names");
    let (rcode, _, _) = dns_query(dns.port(), "debian.org", MX);
    assert_eq!(rcode, 5, "real names are refused, never resolved");
    assert!(dns.log().contains("query[MX] h.test"), "{}", dns.log());

    let script = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]))
try:
    s.sendmail("a@x.test", ["ok@peer.test"], b"Subject: one\r\n\r\n.x\r\n")
    print("accepted")
except smtplib.SMTPSenderRefused as e:
    print("refused", e.smtp_code)
r = s.sendmail("a@x.test", ["ok@peer.test", "no@peer.test"], b"Subject: two\r\n\r\n..y\r\n")
print("rejected", sorted(r))
s.quit()
"#;
    let (code, out) = python(script, &[&peer.port().to_string()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("refused 451"), "{out}");
    assert!(out.contains("rejected ['no@peer.test']"), "{out}");
    let got = peer.messages();
    assert_eq!(got.len(), 1, "{}", peer.log());
    assert_eq!(got[0].rcpt_tos, vec!["ok@peer.test"]);
    assert_eq!(got[0].mail_from, "a@x.test");
    assert!(!got[0].tls);
    // smtplib dot-stuffs ("...y" on the wire); the peer removes one dot.
    assert_eq!(got[0].data, b"Subject: two\r\n\r\n..y\r\n");
    assert_eq!(peer.connections(), 1);
}

/// The peer's failure behaviours, without Tern: STARTTLS with the
/// self-signed certificate works and is recorded; the broken STARTTLS
/// fails the handshake with an alert; the drop in DATA closes the
/// connection with nothing recorded, once.
#[test]
fn harness_peer_tls_and_drop_behaviours() {
    let t = "remote::harness_peer_tls_and_drop_behaviours";
    if !tools(t) || !need_openssl(t) {
        return;
    }
    let inst = instance("remote-harness-tls");
    let tls = Some(self_signed_files(inst.scratch(), "peer.test"));
    let good = free_peer(
        &inst,
        PeerOptions {
            tls: tls.clone(),
            drop_in_data: 1,
            ..PeerOptions::default()
        },
    );
    let bad = free_peer(
        &inst,
        PeerOptions {
            tls,
            bad_starttls: true,
            ..PeerOptions::default()
        },
    );
    let script = r#"
import smtplib, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
def send(port, tls):
    s = smtplib.SMTP("127.0.0.1", port)
    try:
        if tls:
            s.starttls(context=ctx)
        s.sendmail("a@x.test", ["ok@peer.test"], b"Subject: s\r\n\r\n" + (b"z" * 70 + b"\r\n") * 20000)
        print("sent", port, tls)
    except (smtplib.SMTPServerDisconnected, ConnectionError) as e:
        print("dropped", port, tls)
    except ssl.SSLError as e:
        print("tls failed", port, e.reason)
good, bad = int(sys.argv[1]), int(sys.argv[2])
send(good, True)
send(good, True)
send(bad, True)
send(bad, False)
"#;
    let (code, out) = python(script, &[&good.port().to_string(), &bad.port().to_string()]);
    assert_eq!(code, 0, "{out}");
    let want = format!(
        "dropped {g} True\nsent {g} True\ntls failed {b} SSLV3_ALERT_HANDSHAKE_FAILURE\nsent {b} False\n",
        g = good.port(),
        b = bad.port()
    );
    assert_eq!(out, want, "{}\n{}", good.log(), bad.log());
    let got = good.messages();
    assert_eq!(got.len(), 1);
    assert!(got[0].tls);
    assert_eq!(got[0].conn, 2);
    assert_eq!(good.connections(), 2);
    let got = bad.messages();
    assert_eq!(got.len(), 1);
    assert!(!got[0].tls);
    assert!(bad.log().contains("bad starttls"));
}

#[test]
fn mail_from_announces_size_and_8bitmime_when_the_message_needs_it() {
    let t = "remote::mail_from_announces_size_and_8bitmime_when_the_message_needs_it";
    let opts = PeerOptions::default();
    let Some((inst, peer, dns)) = routed(t, "remote-params", "params.test", opts) else {
        return;
    };
    send(
        &inst,
        &["user@params.test"],
        b"Subject: seven\n\nplain ASCII\n.dot\n",
    );
    send(
        &inst,
        &["user@params.test"],
        "Subject: eight\n\ncaf\u{e9} cr\u{e8}me\n".as_bytes(),
    );
    let log = once(&inst);
    let ctx = || context(&log, &[&peer], &dns);
    let got = peer.messages();
    assert_eq!(got.len(), 2, "{}", ctx());
    for m in &got {
        // RFC 1870: the size with CRLF line ends, without the stuffed dots
        // and the final "." line, which is what the peer ends up with.
        let size = format!("SIZE={}", m.data.len());
        assert!(
            m.mail_options.contains(&size),
            "{:?} lacks {size}: {}",
            m.mail_options,
            ctx()
        );
        let eight = m.data.iter().any(|&b| b >= 0x80);
        assert_eq!(
            m.mail_options.iter().any(|o| o == "BODY=8BITMIME"),
            eight,
            "BODY=8BITMIME exactly for the 8-bit message: {:?} ({})",
            m.mail_options,
            subject(m)
        );
    }
}

#[test]
fn message_over_the_peers_size_limit_bounces() {
    let t = "remote::message_over_the_peers_size_limit_bounces";
    let opts = PeerOptions {
        size: Some(5000),
        ..PeerOptions::default()
    };
    let Some((inst, peer, dns)) = routed(t, "remote-size", "size.test", opts) else {
        return;
    };
    let mut big = b"Subject: too big\n\n".to_vec();
    for i in 0..400 {
        big.extend_from_slice(format!("{i:04} {}\n", "s".repeat(60)).as_bytes());
    }
    send(&inst, &["user@size.test"], &big);
    let log = once(&inst);
    let ctx = || context(&log, &[&peer], &dns);
    assert_eq!(peer.message_count(), 0, "{}", ctx());
    assert_eq!(
        queue_count(&inst),
        0,
        "a size refusal is permanent: {}",
        ctx()
    );
    failed_bounce(&inst, &log, "user@size.test");
    assert!(
        !peer.log().contains("DATA"),
        "the message must not be sent when SIZE says it is too big: {}",
        ctx()
    );
}

#[test]
fn utf8_address_needs_smtputf8_at_the_peer() {
    let t = "remote::utf8_address_needs_smtputf8_at_the_peer";
    let Some(inst) = setup(t, "remote-utf8") else {
        return;
    };
    let new = free_peer(&inst, PeerOptions::default());
    let old = free_peer(
        &inst,
        PeerOptions {
            no_smtputf8: true,
            ..PeerOptions::default()
        },
    );
    let dns = route(&inst, &[("new.test", &new), ("old.test", &old)]);
    send(
        &inst,
        &["j\u{fc}rgen@new.test", "j\u{fc}rgen@old.test"],
        b"Subject: utf8 address\n\nhello\n",
    );
    let log = once(&inst);
    let ctx = || context(&log, &[&new, &old], &dns);
    let got = only_message(&new, ctx);
    assert_eq!(got.rcpt_tos, vec!["j\u{fc}rgen@new.test"]);
    assert!(
        got.mail_options.iter().any(|o| o == "SMTPUTF8"),
        "{:?}",
        got.mail_options
    );
    assert_eq!(old.message_count(), 0, "{}", ctx());
    assert_queue_empty(&inst, ctx);
    let bounce = the_bounce(&inst, &log);
    assert!(bounce.contains("old.test"), "{bounce}");
    assert!(
        !bounce.contains("Final-Recipient: rfc822; j\u{fc}rgen@new.test")
            && !bounce.contains("Final-Recipient: utf-8; j\u{fc}rgen@new.test"),
        "{bounce}"
    );
    assert!(
        bounce.contains("SMTPUTF8"),
        "the bounce must say why: {bounce}"
    );
}

/// Remote deliveries under SIGKILL: 300 messages, each to two recipients
/// at one domain routed by `smtproutes` to a recording peer (and every
/// third also to a local mailbox), injected in 30 bursts of 10 while
/// `tern-start` runs; after each burst, at a pseudo-random moment (fixed
/// seed) in the deliveries it started, one SIGKILL: a tern-remote worker
/// half of the time, else tern-rspawn or tern-send, after which the group
/// stops and is restarted, as a supervisor would. Afterwards (`ternctl
/// flush` until the queue is empty, the last group never killed) every
/// remote recipient of every message reached the peer at least once and
/// complete, every local one is in the Maildir, nothing bounced, no worker
/// lingers, no zombie is left under the instance's processes, and SIGTERM
/// stops everything cleanly. Duplicates are allowed (a kill between the
/// peer's 250 and the journal record repeats a delivery) and printed;
/// losses are not.
#[test]
fn remote_side_kills_lose_nothing() {
    let t = "remote::remote_side_kills_lose_nothing";
    if !tools(t) {
        return;
    }
    // A mailbox of its own for the sender: a bounce would land there.
    let inst = Instance::with_mailboxes("remote-crash", &["test", "sender"]);
    control(&inst, "timeoutconnect", "10");
    control(&inst, "timeoutremote", "60");
    // Several workers for the one domain, so kills land on busy ones.
    control(&inst, "concurrencydomain", "4");
    control(&inst, "concurrencyremote", "4");
    let peer = free_peer(&inst, PeerOptions::default());
    let dns = route(&inst, &[(CRASH_DOMAIN, &peer)]);
    let remote_rcpts = CRASH_RCPTS.map(|r| format!("{r}@{CRASH_DOMAIN}"));
    let total = 300usize;

    let victims = ["tern-remote", "tern-rspawn", "tern-send"];
    let mut kills = [0usize; 3];
    let mut missed = 0usize;
    let mut restarts = 0usize;
    let mut seen_workers = std::collections::BTreeSet::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut daemon = Daemon::start(&inst);
    let rounds = 30;
    let burst = total / rounds;
    for round in 0..rounds {
        // A burst of messages at once, so that every worker gets busy...
        std::thread::scope(|s| {
            for i in round * burst..(round + 1) * burst {
                let (inst, remote_rcpts) = (&inst, &remote_rcpts);
                s.spawn(move || {
                    let mut rcpts: Vec<&str> = remote_rcpts.iter().map(String::as_str).collect();
                    if i % 3 == 0 {
                        rcpts.push("test@localhost");
                    }
                    let got = inst.inject_raw(&crash_msg(i), &envelope(CRASH_SENDER, &rcpts));
                    assert_eq!(got.code(), 0, "message {i} not queued: {}", got.stderr);
                });
            }
        });
        // ...then one SIGKILL somewhere in the deliveries that follow:
        // a worker half of the time, tern-rspawn or tern-send otherwise.
        std::thread::sleep(std::time::Duration::from_millis(rnd() % 80));
        let which = match rnd() % 4 {
            0 | 1 => 0,
            2 => 1,
            _ => 2,
        };
        let mut pids = Vec::new();
        for _ in 0..20 {
            pids = inst.pids_of(victims[which]);
            if !pids.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        seen_workers.extend(inst.pids_of("tern-remote"));
        let Some(&pid) = pids.get((rnd() % pids.len().max(1) as u64) as usize) else {
            missed += 1;
            continue;
        };
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !killed {
            missed += 1;
            continue;
        }
        kills[which] += 1;
        if which != 0 {
            // Without tern-send, or with a helper dead, the group stops
            // (tern-send notices the dead helper): restart it (recovery
            // runs), as a supervisor would.
            let stopped = wait_until(90, || daemon.try_wait().is_some());
            assert!(
                stopped,
                "tern-start still runs 90 s after its {} was killed\n{}",
                victims[which],
                daemon_logs(&inst)
            );
            restart(&inst, &mut daemon);
            restarts += 1;
        }
    }

    // Deliveries deferred by a kill wait for their retry time (400 s):
    // ask for everything now until the queue is empty. Nothing is killed
    // any more, so this group must keep running.
    let mut ended = None;
    let emptied = wait_until(180, || {
        ended = daemon.try_wait();
        if ended.is_some() {
            return true;
        }
        let _ = inst.command("ternctl").arg("flush").output();
        std::thread::sleep(std::time::Duration::from_millis(450));
        queue_count(&inst) == 0
    });
    let ctx = || context(&daemon_logs(&inst), &[&peer], &dns);
    assert!(
        ended.is_none(),
        "tern-start ended with nothing killed: {ended:?}\n{}",
        ctx()
    );
    assert!(
        emptied,
        "queue did not empty: {} left\n{}",
        queue_count(&inst),
        ctx()
    );

    let mut got = vec![[0usize; CRASH_RCPTS.len()]; total];
    for m in peer.messages() {
        let i = crash_index(&m.data).unwrap_or_else(|| {
            panic!(
                "a message the test did not send: {}",
                String::from_utf8_lossy(&m.data)
            )
        });
        assert!(i < total, "message {i} out of range");
        let text = String::from_utf8_lossy(&m.data);
        assert!(
            text.contains(&format!("\r\n\r\nbody of rcrash-{i}\r\n"))
                && text.ends_with(&format!("\r\nend of rcrash-{i}\r\n")),
            "message {i} arrived incomplete: {text}"
        );
        assert_eq!(m.mail_from, CRASH_SENDER, "message {i}");
        assert!(!m.rcpt_tos.is_empty(), "message {i} with no recipient");
        for r in &m.rcpt_tos {
            let k = remote_rcpts
                .iter()
                .position(|x| x == r)
                .unwrap_or_else(|| panic!("message {i} to a recipient never asked for: {r}"));
            got[i][k] += 1;
        }
    }
    let mut local = vec![0usize; total];
    for f in inst.maildir("test") {
        let i = crash_index(&f).expect("a test message in the local Maildir");
        local[i] += 1;
    }
    let remote_lost: Vec<(usize, &str)> = (0..total)
        .flat_map(|i| (0..CRASH_RCPTS.len()).map(move |k| (i, k)))
        .filter(|&(i, k)| got[i][k] == 0)
        .map(|(i, k)| (i, remote_rcpts[k].as_str()))
        .collect();
    let local_lost: Vec<usize> = (0..total)
        .filter(|&i| i % 3 == 0 && local[i] == 0)
        .collect();
    let stray: Vec<usize> = (0..total).filter(|&i| i % 3 != 0 && local[i] > 0).collect();
    let remote_dups: usize = got.iter().flatten().map(|&n| n.saturating_sub(1)).sum();
    let local_dups: usize = local.iter().map(|&n| n.saturating_sub(1)).sum();
    // Kills of a worker in the middle of a request (the others hit idle
    // workers): tern-rspawn deferred what they left unreported.
    let logs = daemon_logs(&inst);
    let busy_worker_kills = logs
        .lines()
        .filter(|l| l.contains("event=worker_lost") && l.contains("killed by signal 9"))
        .count();
    eprintln!(
        "remote crash test: {total} messages ({} remote recipients, {} local), \
         kills remote/rspawn/send = {kills:?} ({busy_worker_kills} workers killed \
         while busy, {missed} rounds without a victim), {restarts} restarts, \
         {} peer transactions over {} connections, {remote_dups} duplicate remote \
         deliveries, {local_dups} duplicate local deliveries, {} remote and {} local lost",
        total * CRASH_RCPTS.len(),
        local.len().div_ceil(3),
        peer.message_count(),
        peer.connections(),
        remote_lost.len(),
        local_lost.len()
    );
    assert!(
        kills.iter().sum::<usize>() >= 20,
        "too few kills landed: {kills:?}"
    );
    assert!(
        remote_lost.is_empty(),
        "remote recipients never delivered: {remote_lost:?}\n{}",
        ctx()
    );
    assert!(
        local_lost.is_empty(),
        "local recipients never delivered: {local_lost:?}\n{}",
        ctx()
    );
    assert!(stray.is_empty(), "local copies nobody asked for: {stray:?}");
    assert_eq!(
        inst.maildir_count("sender"),
        0,
        "something bounced: {}",
        ctx()
    );

    // Idle workers are closed after 5 s; none may linger, and nothing the
    // instance's processes started may stay unreaped.
    let no_workers = wait_until(30, || inst.pids_of("tern-remote").is_empty());
    assert!(
        no_workers,
        "tern-remote still running: {:?}\n{}",
        inst.pids_of("tern-remote"),
        ctx()
    );
    let mut zombies = Vec::new();
    let reaped = wait_until(10, || {
        let mut parents = inst.pids_of("");
        parents.push(daemon.pid() as i32);
        zombies = zombies_under(&parents);
        zombies.is_empty()
    });
    assert!(reaped, "zombies left: {zombies:?}\n{}", ctx());
    let status = daemon.stop(60);
    assert!(
        status.is_some_and(|s| s.success()),
        "tern-start did not stop cleanly on SIGTERM: {status:?}\n{}",
        ctx()
    );
    let gone = wait_until(30, || {
        inst.pids_of("tern-remote").is_empty() && inst.pids_of("tern-rspawn").is_empty()
    });
    assert!(
        gone,
        "left running: tern-remote {:?}, tern-rspawn {:?}",
        inst.pids_of("tern-remote"),
        inst.pids_of("tern-rspawn")
    );
    assert!(
        inst.pids_of("").is_empty(),
        "left running: {:?}",
        inst.pids_of("")
    );
    // Workers orphaned by a killed tern-rspawn finish and exit on their
    // own; on a system whose init does not reap (a container's pid 1) they
    // stay as zombies of pid 1. Not Tern's to reap: counted only.
    let orphans = seen_workers
        .iter()
        .filter(|&&pid| {
            proc_stat(pid).is_some_and(|(comm, state, ppid)| {
                comm == "tern-remote" && state == 'Z' && ppid == 1
            })
        })
        .count();
    eprintln!(
        "remote crash test: {} workers seen, {orphans} left as unreaped zombies of pid 1 \
         (orphaned by a killed tern-rspawn)",
        seen_workers.len()
    );
}

const CRASH_DOMAIN: &str = "crash.test";
const CRASH_RCPTS: [&str; 2] = ["one", "two"];
const CRASH_SENDER: &str = "sender@localhost";

/// Message `i` of [`remote_side_kills_lose_nothing`]: its number in the
/// Subject, the Message-ID and the first and last body lines; 30 to 120 KB
/// of body between them, so that a worker spends a while in DATA and kills
/// often land in the middle of a transaction.
fn crash_msg(i: usize) -> Vec<u8> {
    let mut m = format!(
        "From: {CRASH_SENDER}\nTo: someone\nSubject: rcrash-{i}\n\
         Message-ID: <rcrash-{i}@localhost>\n\nbody of rcrash-{i}\n"
    );
    for line in 0..(i % 4 + 1) * 400 {
        m.push_str(&format!("rcrash-{i} line {line:04} {}\n", "x".repeat(54)));
    }
    m.push_str(&format!("end of rcrash-{i}\n"));
    m.into_bytes()
}

/// The number in a message's `Message-ID: <rcrash-N@localhost>`.
fn crash_index(data: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(data);
    let rest = text.split("\nMessage-ID: <rcrash-").nth(1)?;
    rest.split('@').next()?.parse().ok()
}

/// Replaces a stopped `tern-start` with a new one. The old one was reaped
/// by `try_wait`: it is forgotten rather than dropped, so that its drop
/// never signals a pid that may belong to someone else by now.
fn restart(inst: &Instance, daemon: &mut Daemon) {
    let old = std::mem::replace(daemon, Daemon::start(inst));
    std::mem::forget(old);
}

/// Every daemon log of `inst` (one file per `tern-start` run), in order.
fn daemon_logs(inst: &Instance) -> String {
    let mut files: Vec<(usize, std::path::PathBuf)> = std::fs::read_dir(inst.scratch())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name
                .strip_prefix("daemon-")?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|(n, p)| {
            format!(
                "--- tern-start run {n}:\n{}",
                std::fs::read_to_string(p).unwrap_or_default()
            )
        })
        .collect()
}

/// `(comm, state, ppid)` of `pid` from `/proc/PID/stat`.
fn proc_stat(pid: i32) -> Option<(String, char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// Zombie processes whose parent is one of `parents`: `(pid, comm, ppid)`.
fn zombies_under(parents: &[i32]) -> Vec<(i32, String, i32)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let (comm, state, ppid) = proc_stat(pid)?;
            (state == 'Z' && parents.contains(&ppid)).then_some((pid, comm, ppid))
        })
        .collect()
}
