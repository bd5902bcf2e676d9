//! Long lines between real programs (issue 12): Tern accepts lines of any
//! length and never sends one over 998 octets (it breaks them with CRLF
//! SPACE, see tern-remote(8) "Long lines").
//!
//! A message with 5000-octet lines (header and body; with spaces, without,
//! after a leading dot, in UTF-8) goes in with `sendmail`, out with
//! tern-remote through `smtproutes` (`far.test:[127.0.0.1]:PORT`, no DNS),
//! and must arrive whole at
//!
//! * a real third-party server, aiosmtpd (`tests/peers/smtp_peer.py`),
//!   which refuses lines over 1001 octets;
//! * a second Tern instance: tern-smtpd behind tern-listen, then its queue
//!   delivers to a Maildir.
//!
//! "Whole" means: what arrives is what was queued at the sender, but for
//! the inserted breaks (CRLF SPACE, `\n ` once stored), found by an exact
//! alignment, and their number is what tern-remote logged. The Tern→Tern
//! test needs nothing but the built programs; the aiosmtpd one prints SKIP
//! without Debian's python3-aiosmtpd.

use std::path::Path;
use tern_tests::{
    Front, Instance, PYTHON, Peer, PeerOptions, python, skip, strip_delivery_headers,
};

/// The recipient's domain, routed to the receiver by `smtproutes`.
const DOMAIN: &str = "far.test";

/// A 5000-octet text from `piece` repeated (cut at a character boundary).
fn run_of(piece: &str, len: usize) -> String {
    let mut s = String::new();
    while s.len() + piece.len() <= len {
        s.push_str(piece);
    }
    s
}

/// The test message as given to `sendmail`: long header fields (one with
/// spaces, one without: a folded field after the break), and long body
/// lines (HTML with spaces, no spaces, a leading dot, UTF-8 without
/// spaces).
fn message() -> Vec<u8> {
    let words: String = (0..700).map(|i| format!("token-{i:04} ")).collect();
    format!(
        "From: test@localhost\nTo: test@{DOMAIN}\nSubject: long lines\n\
         X-Long-Words: {}\nX-Long-Token: {}\n\n\
         <html><body>{}</body></html>\n{}\n.{}\n{}\nthe end\n",
        &words[..4990],
        run_of("QUJD", 5000),
        run_of("<p class=\"x\">some text here</p> ", 5000),
        run_of("x", 5000),
        run_of("y", 5000),
        run_of("é€😀", 5000),
    )
    .into_bytes()
}

/// A sending instance with the short network timeouts of the remote
/// suite. `control/dnsservers` stays a closed loopback port: nothing is
/// resolved.
fn sender(name: &str) -> Instance {
    let inst = Instance::new(name);
    let c = inst.home().join("control");
    std::fs::write(c.join("timeoutconnect"), "10\n").unwrap();
    std::fs::write(c.join("timeoutremote"), "60\n").unwrap();
    inst
}

/// Routes [`DOMAIN`] to 127.0.0.1:`port`.
fn route(inst: &Instance, port: u16) {
    let c = inst.home().join("control");
    std::fs::write(
        c.join("smtproutes"),
        format!("{DOMAIN}:[127.0.0.1]:{port}\n"),
    )
    .unwrap();
}

/// Queues [`message`] with `sendmail`; returns the stored message (with
/// tern-queue's `Received:` line, LF line ends), the form tern-remote
/// sends.
fn queue_it(inst: &Instance) -> Vec<u8> {
    let (code, err) = inst.sendmail(
        &["-f", "test@localhost", &format!("test@{DOMAIN}")],
        &message(),
    );
    assert_eq!(code, 0, "sendmail: {err}");
    let q = inst.queue();
    let list = q.list().unwrap();
    assert_eq!(list.len(), 1);
    let stored = q.read_message(list[0].id).unwrap();
    assert!(
        stored.split(|&b| b == b'\n').any(|l| l.len() >= 4990),
        "sendmail did not keep the long lines"
    );
    stored
}

/// `tern-start --once`; asserts success, returns the log.
fn once(inst: &Instance) -> String {
    let out = inst.command("tern-start").arg("--once").output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "tern-start --once failed:\n{log}");
    log
}

/// `received` with the inserted breaks (`nl` followed by a space) taken
/// out must be `sent`; returns how many were taken out. A break is always
/// inside a line (a text byte of `sent` follows), so where `received` has
/// the line end and `sent` a text byte, the line end and space are a
/// break: the alignment is exact.
fn unbreak(received: &[u8], sent: &[u8], nl: &[u8]) -> usize {
    let (mut i, mut j, mut breaks) = (0, 0, 0);
    while i < received.len() {
        if j < sent.len() && received[i] == sent[j] {
            i += 1;
            j += 1;
            continue;
        }
        let brk = [nl, b" "].concat();
        assert!(
            received[i..].starts_with(&brk) && j < sent.len() && !sent[j..].starts_with(nl),
            "content changed at {i}: got {:?}, sent {:?}",
            String::from_utf8_lossy(&received[i.saturating_sub(40)..(i + 40).min(received.len())]),
            String::from_utf8_lossy(&sent[j.saturating_sub(40)..(j + 40).min(sent.len())]),
        );
        i += brk.len();
        breaks += 1;
    }
    assert_eq!(j, sent.len(), "content lost after {j} bytes");
    breaks
}

/// Every line of `text` (ending with `nl`) is at most 998 octets and
/// valid UTF-8 (the breaks never cut a character).
fn lines_fit(text: &[u8], nl: &[u8]) {
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest
            .windows(nl.len())
            .position(|w| w == nl)
            .expect("a last line without a line end");
        let line = &rest[..end];
        assert!(line.len() <= 998, "a line of {} octets arrived", line.len());
        assert!(std::str::from_utf8(line).is_ok(), "a character was cut");
        rest = &rest[end + nl.len()..];
    }
}

/// tern-remote logged the breaks of the message.
fn logged(log: &str, breaks: usize) {
    assert!(
        log.lines().any(|l| l.contains("event=long_lines")
            && l.split_whitespace()
                .any(|w| w == format!("breaks={breaks}"))),
        "no long_lines event with breaks={breaks}:\n{log}"
    );
}

#[test]
fn tern_to_aiosmtpd_long_lines_arrive_broken_with_crlf_space() {
    let t = "long_lines::tern_to_aiosmtpd_long_lines_arrive_broken_with_crlf_space";
    if !Path::new(PYTHON).is_file() || python("import aiosmtpd", &[]).0 != 0 {
        skip(
            t,
            "aiosmtpd not importable by /usr/bin/python3 (Debian package python3-aiosmtpd)",
        );
        return;
    }
    let inst = sender("lines-aio");
    let peer = Peer::on_free_port(inst.scratch(), &PeerOptions::default());
    route(&inst, peer.port());
    let stored = queue_it(&inst);
    let log = once(&inst);
    let got = peer.messages();
    assert_eq!(
        got.len(),
        1,
        "aiosmtpd did not take the message:\n{log}\n--- peer:\n{}",
        peer.log()
    );
    assert_eq!(inst.queue().count().unwrap(), 0, "still queued:\n{log}");
    let data = &got[0].data;
    let sent: Vec<u8> = stored
        .split_inclusive(|&b| b == b'\n')
        .flat_map(|l| [&l[..l.len() - 1], b"\r\n"].concat())
        .collect();
    let breaks = unbreak(data, &sent, b"\r\n");
    assert!(breaks >= 30, "only {breaks} breaks");
    lines_fit(data, b"\r\n");
    logged(&log, breaks);
    // SIZE= counted the inserted breaks exactly (aiosmtpd's content is the
    // message as sent, dots unstuffed, without the final dot line).
    assert!(
        got[0]
            .mail_options
            .contains(&format!("SIZE={}", data.len())),
        "{:?} for {} octets",
        got[0].mail_options,
        data.len()
    );
}

#[test]
fn tern_to_tern_long_lines_arrive_broken_with_crlf_space() {
    // The receiver: a second instance for DOMAIN, tern-smtpd behind
    // tern-listen on 127.0.0.1 (a free port).
    let far = Instance::new("lines-tern-far");
    let c = far.home().join("control");
    for f in ["locals", "rcpthosts"] {
        std::fs::write(c.join(f), format!("localhost\n{DOMAIN}\n")).unwrap();
    }
    let front = Front::listen(&far, "127.0.0.1:allow\n:deny\n", &[]);
    let inst = sender("lines-tern");
    route(&inst, front.port);
    let stored = queue_it(&inst);
    let log = once(&inst);
    assert_eq!(
        inst.queue().count().unwrap(),
        0,
        "not delivered:\n{log}\n--- receiver:\n{}",
        front.log()
    );
    let far_log = once(&far);
    let files = far.maildir("test");
    assert_eq!(files.len(), 1, "not in the Maildir:\n{far_log}");
    // Delivery lines, then the receiver's Received (two lines), then
    // what the sender queued, with the breaks as stored: LF SPACE.
    let (_, rest) = strip_delivery_headers(&files[0]);
    assert!(
        rest.starts_with(b"Received: from "),
        "{}",
        String::from_utf8_lossy(&rest[..200])
    );
    let second = rest.iter().position(|&b| b == b'\n').unwrap() + 1;
    let third = second + rest[second..].iter().position(|&b| b == b'\n').unwrap() + 1;
    assert!(
        rest[second..].starts_with(b"  by "),
        "{}",
        String::from_utf8_lossy(&rest[..third])
    );
    let delivered = &rest[third..];
    let breaks = unbreak(delivered, &stored, b"\n");
    assert!(breaks >= 30, "only {breaks} breaks");
    lines_fit(delivered, b"\n");
    logged(&log, breaks);
    drop(front);
}
