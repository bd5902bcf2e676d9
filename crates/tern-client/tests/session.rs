//! The client against scripted fake servers on 127.0.0.1.

mod fake;

use std::net::TcpStream;

use fake::{Peer, WAIT, certs, client, connect, greet, server, tcp};
use tern_client::{
    Client, Envelope, Error, RcptResult, Stage, Status, TlsConfig, TlsInfo, Transaction, scan,
    tls::{roots_from_pem, server_name},
};
use tern_smtp::{DataDecoder, DataLimits, DataStatus};

fn rcpts(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|r| r.as_bytes().to_vec()).collect()
}

/// Sends `message` from `sender` to `to`; panics on NotStarted.
fn send(c: &mut Client<TcpStream>, sender: &str, to: &[&str], message: &[u8]) -> Vec<RcptResult> {
    match try_send(c, sender, to, message) {
        Transaction::Done(r) => r,
        Transaction::NotStarted(e) => panic!("not started: {e}"),
    }
}

fn try_send(c: &mut Client<TcpStream>, sender: &str, to: &[&str], message: &[u8]) -> Transaction {
    let to = rcpts(to);
    let s = scan(message).unwrap();
    c.send(
        &Envelope {
            sender: sender.as_bytes(),
            recipients: &to,
        },
        &message.to_vec(),
        &s,
    )
}

/// Sends the one-line message "x" from s@a.test to `to`; panics on
/// NotStarted.
fn send_x(c: &mut Client<TcpStream>, to: &[&str]) -> Vec<RcptResult> {
    send(c, "s@a.test", to, b"x\n")
}

/// As [`send_x`] to u@b.test, and the transaction may not start.
fn try_send_x(c: &mut Client<TcpStream>) -> Transaction {
    try_send(c, "s@a.test", &["u@b.test"], b"x\n")
}

/// Decodes wire data with tern-smtp's strict DATA reader.
fn decode(wire: &[u8]) -> Vec<u8> {
    let mut d = DataDecoder::new(DataLimits::default());
    let mut out = Vec::new();
    let (used, status) = d.feed(wire, &mut out);
    assert_eq!((used, status), (wire.len(), DataStatus::End));
    out
}

fn statuses(r: &[RcptResult]) -> Vec<Status> {
    r.iter().map(|x| x.status).collect()
}

/// Asserts that `e` is a refusal of the command at `stage`.
fn assert_rejected_at(e: &Error, stage: Stage) {
    assert!(
        matches!(e, Error::Rejected { stage: s, .. } if *s == stage),
        "expected a refusal at {stage:?}: {e:?}"
    );
}

/// Asserts that `e` is a refused server certificate.
fn assert_bad_certificate(e: &Error) {
    assert!(
        matches!(e, Error::Tls(rustls::Error::InvalidCertificate(_))),
        "{e:?}"
    );
}

/// STARTTLS with `config`, for server name `name`, then EHLO client.test.
fn starttls(c: &mut Client<TcpStream>, config: &TlsConfig, name: &str) -> Result<TlsInfo, Error> {
    c.starttls(config, server_name(name).unwrap(), "client.test")
}

/// [`starttls`] with the opportunistic configuration (any certificate).
fn opportunistic(c: &mut Client<TcpStream>, name: &str) -> Result<TlsInfo, Error> {
    starttls(c, &TlsConfig::opportunistic().unwrap(), name)
}

/// Without pipelining: reads the command starting with `prefix`, checks
/// that the client waits for its reply, and sends `reply`.
fn lockstep(p: &mut Peer, prefix: &str, reply: &str) {
    p.expect(prefix);
    assert!(
        p.quiet(),
        "the client sent more before the reply to {prefix}"
    );
    p.send(reply);
}

const MSG: &[u8] = b"Subject: hi\n\n.leading dot\nbare\rCR\nend";

#[test]
fn pipelined_transaction_with_per_recipient_results() {
    let size = scan(MSG).unwrap().size;
    let (addr, h) = server(1, move |_, p: &mut Peer| {
        greet(p, &["PIPELINING", "SIZE 1000000", "8BITMIME"]);
        // Everything comes before any reply: that is pipelining.
        let lines = p.expect_all(&[
            "MAIL FROM:",
            "RCPT",
            "RCPT TO:<u2@b.test>",
            "RCPT TO:<u3@b.test>",
            "RCPT TO:<u4@b.test>",
            "DATA",
        ]);
        assert_eq!(lines[0], format!("MAIL FROM:<s@a.test> SIZE={size}"));
        assert_eq!(lines[1], "RCPT TO:<u1@b.test>");
        assert!(p.quiet());
        p.send("250 2.1.0 ok\n250 2.1.5 ok\n550-5.1.1 no such\n550 5.1.1 user here\n451 4.2.0 try later\n250 ok\n354 go");
        let wire = p.data_and_reply("250 2.0.0 queued as 42");
        assert_eq!(
            decode(&wire),
            b"Subject: hi\n\n.leading dot\nbare\nCR\nend\n"
        );
        p.quit();
    });
    let mut c = client(addr);
    assert!(c.capabilities().pipelining);
    let r = send(
        &mut c,
        "s@a.test",
        &["u1@b.test", "u2@b.test", "u3@b.test", "u4@b.test"],
        MSG,
    );
    assert_eq!(
        statuses(&r),
        [
            Status::Accepted,
            Status::Permanent,
            Status::Temporary,
            Status::Accepted
        ]
    );
    assert_eq!(
        r[0].text,
        "mx.test [127.0.0.1] said: 250 2.0.0 queued as 42"
    );
    assert_eq!(
        r[1].text,
        "mx.test [127.0.0.1] said: 550 5.1.1 no such / 5.1.1 user here"
    );
    assert_eq!(r[2].text, "mx.test [127.0.0.1] said: 451 4.2.0 try later");
    assert!(c.is_usable());
    c.quit();
    h.join().unwrap();
}

#[test]
fn one_command_at_a_time_without_pipelining() {
    let (addr, h) = server(1, |_, p: &mut Peer| {
        greet(p, &["SIZE", "8BITMIME"]);
        lockstep(p, "MAIL FROM:<> SIZE=", "250 ok");
        lockstep(p, "RCPT TO:<u1@b.test>", "250 ok");
        lockstep(p, "RCPT TO:<u2@b.test>", "550 no");
        lockstep(p, "DATA", "354 go");
        p.data_and_reply("250 ok");
        p.quit();
    });
    let mut c = client(addr);
    let r = send(&mut c, "", &["u1@b.test", "u2@b.test"], b"x\n");
    assert_eq!(statuses(&r), [Status::Accepted, Status::Permanent]);
    c.quit();
    h.join().unwrap();
}

#[test]
fn helo_fallback_and_no_extensions() {
    let (addr, h) = server(1, |_, p: &mut Peer| {
        p.send("220-mx.test\n220 old server");
        p.reply("EHLO client.test", "502 what?");
        p.reply("HELO client.test", "250 mx.test");
        // No SIZE=, no BODY=, even though the message has 8-bit bytes.
        assert_eq!(p.reply("MAIL", "250 ok"), "MAIL FROM:<s@a.test>");
        p.reply("RCPT TO:<u@b.test>", "250 ok");
        p.reply("DATA", "354 go");
        assert_eq!(p.data_and_reply("250 ok"), b"caf\xc3\xa9\r\n.\r\n");
        p.quit();
    });
    let mut c = connect(addr).unwrap();
    c.hello("client.test").unwrap();
    assert!(!c.is_esmtp());
    let r = send(&mut c, "s@a.test", &["u@b.test"], "caf\u{e9}\n".as_bytes());
    assert_eq!(statuses(&r), [Status::Accepted]);
    c.quit();
    h.join().unwrap();
}

#[test]
fn ehlo_and_helo_refused() {
    let (addr, h) = server(2, |i, p: &mut Peer| {
        p.send("220 mx.test");
        if i == 0 {
            p.reply("EHLO", "421 4.3.2 busy");
        } else {
            p.reply("EHLO", "500 no");
            p.reply("HELO", "550 go away");
        }
        p.until_eof();
    });
    let mut c = connect(addr).unwrap();
    let e = c.hello("client.test").unwrap_err();
    assert_rejected_at(&e, Stage::Ehlo);
    assert_eq!(e.to_string(), "said: 421 4.3.2 busy (in reply to EHLO)");
    assert!(!c.is_usable());
    drop(c);
    let mut c = connect(addr).unwrap();
    let e = c.hello("client.test").unwrap_err();
    assert_rejected_at(&e, Stage::Helo);
    drop(c);
    h.join().unwrap();
}

#[test]
fn greeting_problems() {
    let (addr, h) = server(3, |i, p: &mut Peer| {
        match i {
            0 => p.send("554 5.7.1 no mail from you"),
            1 => p.raw(b"hello there\r\n"),
            _ => {} // silent: the client times out
        }
        p.until_eof();
    });
    let e = connect(addr).unwrap_err();
    assert_rejected_at(&e, Stage::Greeting);
    assert_eq!(
        e.to_string(),
        "said: 554 5.7.1 no mail from you (in reply to the greeting)"
    );
    let e = connect(addr).unwrap_err();
    assert!(
        matches!(e, Error::Reply(tern_client::ReplyError::BadCode)),
        "{e:?}"
    );
    let s = tcp(addr);
    s.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    let e = Client::connect(s, "mx", Some(WAIT)).unwrap_err();
    assert!(matches!(e, Error::Timeout), "{e:?}");
    assert!(e.is_network());
    h.join().unwrap();
}

#[test]
fn size_limit_refuses_before_mail() {
    let (addr, h) = server(1, |_, p: &mut Peer| {
        greet(p, &["PIPELINING", "SIZE 100"]);
        p.quit();
    });
    let mut c = client(addr);
    let big = vec![b'x'; 200];
    let r = send(&mut c, "s@a.test", &["u@b.test", "v@b.test"], &big);
    assert_eq!(statuses(&r), [Status::Permanent, Status::Permanent]);
    assert_eq!(
        r[0].text,
        "message is 202 bytes, more than the 100 bytes mx.test [127.0.0.1] accepts (#5.3.4)"
    );
    c.quit();
    h.join().unwrap();
}

#[test]
fn smtputf8_needed_but_missing() {
    let (addr, h) = server(1, |_, p: &mut Peer| {
        greet(p, &["PIPELINING", "8BITMIME"]);
        // Only the ASCII recipient is tried, without SMTPUTF8.
        let t = p.accept_transaction();
        assert_eq!(t.mail, "MAIL FROM:<s@a.test>");
        assert_eq!(t.rcpt, "RCPT TO:<u@b.test>");
        // The UTF-8 sender: nothing is sent at all.
        p.quit();
    });
    let mut c = client(addr);
    let r = send_x(&mut c, &["j\u{f6}rg@b.test", "u@b.test"]);
    assert_eq!(statuses(&r), [Status::Permanent, Status::Accepted]);
    assert_eq!(
        r[0].text,
        "mx.test [127.0.0.1] does not support SMTPUTF8, which this UTF-8 address needs (#5.6.7)"
    );
    let r = send(
        &mut c,
        "j\u{f6}rg@a.test",
        &["u@b.test", "v@b.test"],
        b"x\n",
    );
    assert_eq!(statuses(&r), [Status::Permanent, Status::Permanent]);
    assert!(r[0].text.contains("UTF-8 sender address"), "{}", r[0].text);
    c.quit();
    h.join().unwrap();
}

#[test]
fn smtputf8_and_8bitmime_when_offered() {
    let (addr, h) = server(1, |_, p: &mut Peer| {
        greet(p, &["PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE"]);
        let t = p.accept_transaction();
        assert_eq!(t.mail, "MAIL FROM:<s@a.test> SIZE=7 BODY=8BITMIME SMTPUTF8");
        assert_eq!(t.rcpt, "RCPT TO:<j\u{f6}rg@b.test>");
        p.quit();
    });
    let mut c = client(addr);
    let r = send(
        &mut c,
        "s@a.test",
        &["j\u{f6}rg@b.test"],
        "caf\u{e9}\n".as_bytes(),
    );
    assert_eq!(statuses(&r), [Status::Accepted]);
    c.quit();
    h.join().unwrap();
}

#[test]
fn bad_addresses_are_never_sent() {
    let (addr, h) = server(1, |_, p: &mut Peer| {
        greet(p, &["PIPELINING"]);
        let t = p.accept_transaction();
        assert_eq!(t.mail, "MAIL FROM:<s@a.test>");
        assert_eq!(t.rcpt, "RCPT TO:<\"john doe\"@b.test>");
        p.quit();
    });
    let mut c = client(addr);
    let r = send_x(&mut c, &["a@b.test\r\nRSET", "", "john doe@b.test"]);
    assert_eq!(
        statuses(&r),
        [Status::Permanent, Status::Permanent, Status::Accepted]
    );
    assert_eq!(
        r[0].text,
        "recipient address refused: address contains a control character (#5.1.3)"
    );
    let r = send(&mut c, "s\n@a.test", &["u@b.test"], b"x\n");
    assert_eq!(statuses(&r), [Status::Permanent]);
    c.quit();
    h.join().unwrap();
}

/// The commands of one pipelined transaction for one recipient.
const MAIL_RCPT_DATA: &[&str] = &["MAIL", "RCPT", "DATA"];

#[test]
fn mail_and_data_refusals() {
    let (addr, h) = server(1, |_, p: &mut Peer| {
        greet(p, &["PIPELINING"]);
        // 1: MAIL refused for good; the RCPT and DATA replies are read.
        p.pipelined(
            &["MAIL", "RCPT", "RCPT", "DATA"],
            "553 5.7.1 sender refused\n503 no MAIL\n503 no MAIL\n503 no MAIL",
        );
        // 2: MAIL refused for now; no RSET needed next.
        p.pipelined(MAIL_RCPT_DATA, "452 4.3.1 full\n503 no\n503 no");
        // 3: DATA refused.
        p.pipelined(MAIL_RCPT_DATA, "250 ok\n250 ok\n554 5.5.1 no data");
        // 4: after a transaction left open, RSET comes first.
        assert_eq!(p.line().unwrap(), "RSET");
        p.pipelined(MAIL_RCPT_DATA, "250 reset\n250 ok\n250 ok\n354 go");
        p.data_and_reply("452 4.2.2 mailbox full");
        // 5: the final reply closed the transaction: no RSET.
        p.pipelined(MAIL_RCPT_DATA, "250 ok\n250 ok\n354 go");
        p.data_and_reply("550 5.7.1 content refused");
        p.quit();
    });
    let mut c = client(addr);
    let r = send_x(&mut c, &["u@b.test", "v@b.test"]);
    assert_eq!(statuses(&r), [Status::Permanent, Status::Permanent]);
    assert_eq!(
        r[1].text,
        "mx.test [127.0.0.1] said: 553 5.7.1 sender refused (in reply to MAIL FROM)"
    );
    let r = send_x(&mut c, &["u@b.test"]);
    assert_eq!(statuses(&r), [Status::Temporary]);
    let r = send_x(&mut c, &["u@b.test"]);
    assert_eq!(statuses(&r), [Status::Permanent]);
    assert_eq!(
        r[0].text,
        "mx.test [127.0.0.1] said: 554 5.5.1 no data (in reply to DATA)"
    );
    let r = send_x(&mut c, &["u@b.test"]);
    assert_eq!(statuses(&r), [Status::Temporary]);
    assert_eq!(
        r[0].text,
        "mx.test [127.0.0.1] said: 452 4.2.2 mailbox full (in reply to the end of data)"
    );
    let r = send_x(&mut c, &["u@b.test"]);
    assert_eq!(statuses(&r), [Status::Permanent]);
    assert!(c.is_usable());
    c.quit();
    h.join().unwrap();
}

#[test]
fn no_recipient_accepted_then_rset() {
    let (addr, h) = server(1, |_, p: &mut Peer| {
        greet(p, &["PIPELINING"]);
        p.pipelined(MAIL_RCPT_DATA, "250 ok\n550 no\n554 no valid recipients");
        // No recipient was accepted, but MAIL was: the transaction is
        // open, so RSET comes next.
        assert_eq!(p.line().unwrap(), "RSET");
        // A broken server says 354 though no recipient was accepted:
        // the client sends an empty message to stay in step.
        p.pipelined(MAIL_RCPT_DATA, "250 ok\n250 ok\n550 no\n354 go");
        assert_eq!(p.data_and_reply("554 no recipients"), b".\r\n");
        assert_eq!(p.line().unwrap(), "RSET");
        p.pipelined(MAIL_RCPT_DATA, "250 ok\n250 ok\n250 ok\n354 go");
        p.data_and_reply("250 ok");
        p.quit();
    });
    let mut c = client(addr);
    for want in [Status::Permanent, Status::Permanent, Status::Accepted] {
        assert_eq!(statuses(&send_x(&mut c, &["u@b.test"])), [want]);
    }
    c.quit();
    h.join().unwrap();
}

#[test]
fn connection_dropped_mid_data_or_before_the_final_reply() {
    let (addr, h) = server(2, |i, p: &mut Peer| {
        greet(p, &["PIPELINING"]);
        p.pipelined(
            &["MAIL", "RCPT", "RCPT", "DATA"],
            "250 ok\n250 ok\n550 no\n354 go",
        );
        if i == 0 {
            p.data_bytes(10);
        } else {
            p.data();
        }
        p.close();
    });
    let big: Vec<u8> = b"line of text\n".repeat(400_000);
    let mut c = client(addr);
    let r = send(&mut c, "s@a.test", &["u@b.test", "v@b.test"], &big);
    assert_eq!(statuses(&r), [Status::Temporary, Status::Permanent]);
    assert!(
        r[0].text.contains("while the message was sent"),
        "{}",
        r[0].text
    );
    assert!(!c.is_usable());
    let mut c = client(addr);
    let r = send_x(&mut c, &["u@b.test", "v@b.test"]);
    assert_eq!(statuses(&r), [Status::Temporary, Status::Permanent]);
    assert_eq!(
        r[0].text,
        "mx.test [127.0.0.1] closed the connection after the message was sent: possible duplicate (#4.4.2)"
    );
    h.join().unwrap();
}

#[test]
fn a_server_that_reads_the_message_too_slowly_is_given_up() {
    // 32 MiB read at about 320 KB/s would take 100 s; with a minimum rate
    // of 32 MiB/s the whole write must be done within the reply time (2 s)
    // + 1 s, long before the socket buffers and the slow reader get through.
    let (addr, h) = server(1, |_, p: &mut Peer| {
        greet(p, &[]);
        p.reply("MAIL", "250 ok");
        p.reply("RCPT", "250 ok");
        p.reply("DATA", "354 go");
        p.read_slowly(32 * 1024, std::time::Duration::from_millis(100));
    });
    let big: Vec<u8> = b"line of text...\n".repeat(2 << 20);
    let mut c = Client::connect(
        tcp(addr),
        "mx.test [127.0.0.1]",
        Some(std::time::Duration::from_secs(2)),
    )
    .expect("greeting");
    c.hello("client.test").expect("EHLO");
    c.set_min_data_rate(32 << 20);
    let r = send(&mut c, "s@a.test", &["u@b.test"], &big);
    assert_eq!(statuses(&r), [Status::Temporary]);
    assert!(
        r[0].text.contains("while the message was sent"),
        "{}",
        r[0].text
    );
    assert!(!c.is_usable());
    drop(c);
    h.join().unwrap();
}

#[test]
fn reused_connection_that_died_is_not_started() {
    let (addr, h) = server(2, |i, p: &mut Peer| {
        greet(p, &["PIPELINING"]);
        if i == 0 {
            p.accept_transaction();
            // idle timeout at the server
            p.close();
        } else {
            p.pipelined(MAIL_RCPT_DATA, "421 4.4.2 idle too long");
            p.until_eof();
        }
    });
    let mut c = client(addr);
    assert_eq!(statuses(&send_x(&mut c, &["u@b.test"])), [Status::Accepted]);
    match try_send_x(&mut c) {
        Transaction::NotStarted(e) => assert!(e.is_network(), "{e:?}"),
        Transaction::Done(r) => panic!("{r:?}"),
    }
    assert!(matches!(
        try_send_x(&mut c),
        Transaction::NotStarted(Error::Unusable)
    ));
    let mut c = client(addr);
    match try_send_x(&mut c) {
        Transaction::NotStarted(e) => {
            assert_eq!(
                e.to_string(),
                "said: 421 4.4.2 idle too long (in reply to MAIL FROM)"
            )
        }
        Transaction::Done(r) => panic!("{r:?}"),
    }
    assert!(!c.is_usable());
    drop(c);
    h.join().unwrap();
}

#[test]
fn a_421_at_rcpt_ends_the_session() {
    let (addr, h) = server(1, |_, p: &mut Peer| {
        greet(p, &[]);
        p.reply("MAIL", "250 ok");
        p.reply("RCPT TO:<u@b.test>", "250 ok");
        p.reply("RCPT TO:<v@b.test>", "421 4.3.0 shutting down");
        p.until_eof();
    });
    let mut c = client(addr);
    let r = send_x(&mut c, &["u@b.test", "v@b.test", "w@b.test"]);
    assert_eq!(statuses(&r), [Status::Temporary; 3]);
    assert!(!c.is_usable());
    drop(c);
    h.join().unwrap();
}

#[test]
fn malformed_reply_mid_transaction() {
    let (addr, h) = server(1, |_, p: &mut Peer| {
        greet(p, &["PIPELINING"]);
        p.pipelined(
            &["MAIL", "RCPT", "RCPT", "DATA"],
            "250 ok\n250 ok\n250-a\n550 b",
        );
        p.until_eof();
    });
    let mut c = client(addr);
    let r = send_x(&mut c, &["u@b.test", "v@b.test"]);
    assert_eq!(statuses(&r), [Status::Temporary, Status::Temporary]);
    assert_eq!(
        r[1].text,
        "mx.test [127.0.0.1] sent a malformed reply (reply lines with different codes)"
    );
    assert!(!c.is_usable());
    drop(c);
    h.join().unwrap();
}

// ------------------------------------------------------------------ TLS

#[test]
fn starttls_opportunistic_then_transaction() {
    let Some(certs) = certs("opp") else { return };
    let sc = certs.server_config();
    let (addr, h) = server(1, move |_, p: &mut Peer| {
        greet(p, &["PIPELINING", "STARTTLS"]);
        p.accept_starttls(sc.clone()).unwrap();
        p.reply(
            "EHLO client.test",
            "250-mx.test\n250-PIPELINING\n250 SIZE 1000",
        );
        let t = p.accept_transaction();
        assert!(
            t.mail.starts_with("MAIL FROM:<s@a.test> SIZE=3"),
            "{}",
            t.mail
        );
        assert_eq!(t.data, b"x\r\n.\r\n");
        p.quit();
    });
    let mut c = client(addr);
    assert!(c.capabilities().starttls);
    // The certificate names mx.test.example; opportunistic TLS does not care.
    let info = opportunistic(&mut c, "127.0.0.1").unwrap();
    assert_eq!(info.protocol, "TLS1.3");
    assert!(info.cipher.starts_with("TLS_"), "{}", info.cipher);
    assert!(!info.verified);
    assert!(!c.capabilities().starttls);
    assert_eq!(c.capabilities().size_limit, Some(1000));
    assert_eq!(statuses(&send_x(&mut c, &["u@b.test"])), [Status::Accepted]);
    c.quit();
    h.join().unwrap();
}

#[test]
fn starttls_opportunistic_accepts_a_self_signed_certificate() {
    let Some(certs) = certs("selfsigned") else {
        return;
    };
    let sc = certs.self_signed_config();
    let (addr, h) = server(1, move |_, p: &mut Peer| {
        greet(p, &["STARTTLS"]);
        p.accept_starttls(sc.clone()).unwrap();
        p.reply("EHLO client.test", "250 mx.test");
        p.quit();
    });
    let mut c = client(addr);
    let info = opportunistic(&mut c, "mx.test").unwrap();
    assert!(!info.verified);
    assert_eq!(c.tls(), Some(&info));
    c.quit();
    h.join().unwrap();
}

#[test]
fn starttls_verify() {
    let Some(certs) = certs("verify") else { return };
    let sc = certs.server_config();
    let (addr, h) = server(3, move |i, p: &mut Peer| {
        greet(p, &["STARTTLS"]);
        let r = p.accept_starttls(sc.clone());
        if i == 0 {
            r.unwrap();
            p.reply("EHLO", "250 mx.test");
            p.quit();
        } else {
            // the client refuses the certificate
            assert!(r.is_err());
        }
    });
    let good = TlsConfig::verify(roots_from_pem(&certs.ca).unwrap()).unwrap();
    let mut c = client(addr);
    let info = starttls(&mut c, &good, "mx.test.example").unwrap();
    assert!(info.verified);
    c.quit();
    // wrong name
    let mut c = client(addr);
    let e = starttls(&mut c, &good, "other.example").unwrap_err();
    assert_bad_certificate(&e);
    assert!(!c.is_usable());
    drop(c);
    // unknown CA
    let other = TlsConfig::verify(roots_from_pem(&certs.other_ca).unwrap()).unwrap();
    let mut c = client(addr);
    let e = starttls(&mut c, &other, "mx.test.example").unwrap_err();
    assert_bad_certificate(&e);
    drop(c);
    h.join().unwrap();
}

#[test]
fn starttls_refused_handshake_failed_or_injected() {
    let (addr, h) = server(3, |i, p: &mut Peer| {
        greet(p, &["STARTTLS", "PIPELINING"]);
        p.expect("STARTTLS");
        match i {
            0 => {
                // refused: the session goes on in plain text
                p.send("454 4.7.0 TLS not available");
                p.accept_transaction();
                p.quit();
            }
            1 => {
                // a handshake that fails: garbage instead of a ServerHello
                p.send("220 go ahead");
                // the ClientHello's first byte (a handshake record), then
                // garbage instead of a ServerHello
                assert_eq!(p.data_bytes(1), [0x16]);
                p.raw(b"this is not TLS at all\r\n");
                p.until_eof();
            }
            _ => {
                // a reply injected after 220, before the handshake
                p.raw(b"220 go ahead\r\n250 injected\r\n");
                p.until_eof();
            }
        }
    });
    let mut c = client(addr);
    let e = opportunistic(&mut c, "mx.test").unwrap_err();
    assert_rejected_at(&e, Stage::StartTls);
    assert!(c.is_usable());
    assert_eq!(statuses(&send_x(&mut c, &["u@b.test"])), [Status::Accepted]);
    c.quit();
    let mut c = client(addr);
    let e = opportunistic(&mut c, "mx.test").unwrap_err();
    assert!(matches!(e, Error::Tls(_)), "{e:?}");
    assert!(!c.is_usable());
    drop(c);
    let mut c = client(addr);
    let e = opportunistic(&mut c, "mx.test").unwrap_err();
    assert!(matches!(e, Error::DataBeforeTls), "{e:?}");
    assert!(!c.is_usable());
    drop(c);
    h.join().unwrap();
}

/// RFC 5321 4.5.3.1.10: 452 is "too many recipients"; RFC 821 listed 552
/// for it, and a client SHOULD treat a 552 to RCPT as temporary. Both leave
/// the refused recipients deferred, not bounced; the others are delivered.
#[test]
fn too_many_recipients_452_or_552_at_rcpt_is_temporary() {
    // The server takes nothing: no progress, so no second transaction; the
    // refusals stay temporary (552 included) and the 550 permanent.
    let (addr, h) = server(1, |_, p: &mut Peer| {
        greet(p, &[]);
        p.reply("MAIL", "250 ok");
        p.reply("RCPT TO:<v@b.test>", "452 4.5.3 too many recipients");
        p.reply("RCPT TO:<w@b.test>", "552 5.5.3 too many recipients");
        p.reply("RCPT TO:<x@b.test>", "550 5.1.1 no such user");
        p.quit();
    });
    let mut c = client(addr);
    let r = send_x(&mut c, &["v@b.test", "w@b.test", "x@b.test"]);
    assert_eq!(
        statuses(&r),
        [Status::Temporary, Status::Temporary, Status::Permanent]
    );
    assert_eq!(
        r[1].text,
        "mx.test [127.0.0.1] said: 552 5.5.3 too many recipients"
    );
    c.quit();
    h.join().unwrap();
}

#[test]
fn recipients_over_the_servers_limit_go_in_the_next_transaction_at_once() {
    // A server that takes two recipients per transaction: five recipients
    // need three transactions on the one connection; the 550 stays
    // permanent and is not retried.
    let (addr, h) = server(1, |_, p: &mut Peer| {
        greet(p, &[]);
        p.reply("MAIL", "250 ok");
        p.reply("RCPT TO:<a@b.test>", "250 ok");
        p.reply("RCPT TO:<c@b.test>", "250 ok");
        p.reply("RCPT TO:<d@b.test>", "452 4.5.3 too many recipients");
        p.reply("RCPT TO:<x@b.test>", "550 5.1.1 no such user");
        p.reply("RCPT TO:<e@b.test>", "552 5.5.3 too many recipients");
        p.reply("DATA", "354 go");
        p.data_and_reply("250 queued 1");
        p.reply("MAIL", "250 ok");
        p.reply("RCPT TO:<d@b.test>", "250 ok");
        p.reply("RCPT TO:<e@b.test>", "452 4.5.3 still too many");
        p.reply("DATA", "354 go");
        p.data_and_reply("250 queued 2");
        p.reply("MAIL", "250 ok");
        p.reply("RCPT TO:<e@b.test>", "250 ok");
        p.reply("DATA", "354 go");
        p.data_and_reply("250 queued 3");
        p.quit();
    });
    let mut c = client(addr);
    let r = send_x(
        &mut c,
        &["a@b.test", "c@b.test", "d@b.test", "x@b.test", "e@b.test"],
    );
    assert_eq!(
        statuses(&r),
        [
            Status::Accepted,
            Status::Accepted,
            Status::Accepted,
            Status::Permanent,
            Status::Accepted
        ]
    );
    assert!(r[4].text.contains("250 queued 3"), "{}", r[4].text);
    assert!(r[2].text.contains("250 queued 2"), "{}", r[2].text);
    c.quit();
    h.join().unwrap();
}

/// A server that completes the TLS handshake and then refuses EHLO: the
/// session has no greeting on it, so it must be unusable (no MAIL FROM
/// without EHLO/HELO, which the server would answer 503, a permanent
/// failure for every recipient); the caller treats it as a failed TLS
/// attempt.
#[test]
fn ehlo_refused_after_starttls_ends_the_session() {
    let Some(certs) = certs("ehlo-after-tls") else {
        return;
    };
    let sc = certs.self_signed_config();
    let (addr, h) = server(1, move |_, p: &mut Peer| {
        greet(p, &["STARTTLS"]);
        p.accept_starttls(sc.clone()).unwrap();
        p.reply("EHLO client.test", "454 4.7.0 not now");
        p.until_eof();
    });
    let mut c = client(addr);
    let e = opportunistic(&mut c, "mx.test").unwrap_err();
    assert_rejected_at(&e, Stage::Ehlo);
    assert!(!c.is_usable());
    assert!(matches!(
        try_send_x(&mut c),
        Transaction::NotStarted(Error::Unusable)
    ));
    drop(c);
    h.join().unwrap();
}

/// A self-signed server certificate pinned in `control/tlsca`: rustls
/// refuses it as a CA used as an end entity; the error says what to do in
/// words an administrator can act on, not only rustls' name for it.
#[test]
fn pinned_self_signed_certificate_is_explained() {
    let Some(certs) = certs("pinned-self-signed") else {
        return;
    };
    let sc = certs.self_signed_config();
    let (addr, h) = server(1, move |_, p: &mut Peer| {
        greet(p, &["STARTTLS"]);
        let r = p.accept_starttls(sc.clone());
        assert!(r.is_err(), "the client refuses the certificate");
    });
    let pinned = TlsConfig::verify(roots_from_pem(&certs.ca).unwrap()).unwrap();
    let mut c = client(addr);
    let e = starttls(&mut c, &pinned, "mx.test.example").unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("tlsca must hold the CA that signed"),
        "{text}"
    );
    drop(c);
    h.join().unwrap();
}

/// An LMTP session to `addr`: greeting and LHLO client.test.
fn lmtp_client(addr: std::net::SocketAddr) -> Client<TcpStream> {
    let mut c = Client::connect_with(
        fake::tcp(addr),
        "the LMTP server",
        Some(WAIT),
        tern_client::Protocol::Lmtp,
    )
    .expect("greeting");
    c.hello("client.test").expect("LHLO");
    c
}

/// The server's greeting and its reply to LHLO with PIPELINING.
fn lmtp_greet(p: &mut Peer) {
    p.send("220 store.test LMTP");
    p.reply(
        "LHLO client.test",
        "250-store.test\n250-PIPELINING\n250 ENHANCEDSTATUSCODES",
    );
}

#[test]
fn lmtp_one_reply_per_accepted_recipient_then_reuse() {
    let (addr, h) = server(1, |_, p: &mut Peer| {
        lmtp_greet(p);
        p.pipelined(
            &["MAIL", "RCPT", "RCPT", "RCPT", "RCPT", "DATA"],
            "250 ok\n250 ok\n550 5.1.1 unknown at RCPT\n250 ok\n250 ok\n354 go",
        );
        p.data();
        // one reply for each of the three accepted, in RCPT order
        p.send(
            "250 2.0.0 <u1> saved\n451-4.2.0 mailbox\n451 4.2.0 busy\n552 5.2.2 <u4> over quota",
        );
        // the connection is reused: a second message, one recipient
        p.pipelined(&["MAIL", "RCPT", "DATA"], "250 ok\n250 ok\n354 go");
        p.data();
        p.send("250 2.0.0 saved");
        p.quit();
    });
    let mut c = lmtp_client(addr);
    assert!(c.capabilities().pipelining);
    let r = send(
        &mut c,
        "s@a.test",
        &["u1@b.test", "u2@b.test", "u3@b.test", "u4@b.test"],
        MSG,
    );
    assert_eq!(
        statuses(&r),
        [
            Status::Accepted,
            Status::Permanent,
            Status::Temporary,
            Status::Permanent
        ]
    );
    assert_eq!(r[0].text, "the LMTP server said: 250 2.0.0 <u1> saved");
    assert_eq!(r[1].text, "the LMTP server said: 550 5.1.1 unknown at RCPT");
    assert_eq!(
        r[2].text,
        "the LMTP server said: 451 4.2.0 mailbox / 4.2.0 busy (in reply to the end of data)"
    );
    assert_eq!(
        r[3].text,
        "the LMTP server said: 552 5.2.2 <u4> over quota (in reply to the end of data)"
    );
    assert!(c.is_usable());
    assert_eq!(statuses(&send_x(&mut c, &["v@b.test"])), [Status::Accepted]);
    c.quit();
    h.join().unwrap();
}

#[test]
fn lmtp_missing_replies_leave_the_rest_temporary() {
    // 0: the connection closes after the first reply; 1: a 421 as the
    // second reply; 2: a malformed second reply; 3: no reply at all
    let (addr, h) = server(4, |i, p: &mut Peer| {
        lmtp_greet(p);
        p.pipelined(
            &["MAIL", "RCPT", "RCPT", "RCPT", "DATA"],
            "250 ok\n250 ok\n250 ok\n250 ok\n354 go",
        );
        p.data();
        match i {
            0 => p.send("250 2.0.0 one"),
            1 => p.send("250 2.0.0 one\n421 4.3.0 going away\n250 2.0.0 three"),
            2 => p.send("250 2.0.0 one\n25x broken"),
            _ => {}
        }
        p.close();
    });
    for i in 0..4 {
        let mut c = lmtp_client(addr);
        let r = send_x(&mut c, &["u1@b.test", "u2@b.test", "u3@b.test"]);
        let first = if i == 3 {
            Status::Temporary
        } else {
            Status::Accepted
        };
        assert_eq!(
            statuses(&r),
            [first, Status::Temporary, Status::Temporary],
            "case {i}"
        );
        assert!(
            r[2].text.contains("possible duplicate (#4.4.2)"),
            "case {i}: {}",
            r[2].text
        );
        assert!(!c.is_usable(), "case {i}");
    }
    h.join().unwrap();
}

#[test]
fn lmtp_more_replies_than_recipients_end_the_session() {
    let (addr, h) = server(1, |_, p: &mut Peer| {
        lmtp_greet(p);
        p.pipelined(&["MAIL", "RCPT", "DATA"], "250 ok\n250 ok\n354 go");
        p.data();
        p.send("250 2.0.0 one\n250 2.0.0 extra");
        p.until_eof();
    });
    let mut c = lmtp_client(addr);
    assert_eq!(statuses(&send_x(&mut c, &["u@b.test"])), [Status::Accepted]);
    assert!(!c.is_usable());
    drop(c);
    h.join().unwrap();
}

#[test]
fn lmtp_lhlo_refused_has_no_helo_fallback() {
    let (addr, h) = server(1, |_, p: &mut Peer| {
        p.send("220 store.test LMTP");
        p.reply("LHLO client.test", "500 5.5.1 what");
        p.until_eof();
    });
    let mut c = Client::connect_with(
        fake::tcp(addr),
        "the LMTP server",
        Some(WAIT),
        tern_client::Protocol::Lmtp,
    )
    .unwrap();
    let e = c.hello("client.test").unwrap_err();
    assert_rejected_at(&e, Stage::Lhlo);
    drop(c);
    h.join().unwrap();
}
