//! tern-smtpd over pipes: the real program with stdin/stdout pipes in a
//! throwaway instance (`ternctl init` writes rcpthosts = localhost + me).
//! No network. Exact reply codes; what was (not) queued is read from the
//! queue, and one test delivers with `tern-start --once`.

use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tern_tests::{Instance, strip_delivery_headers, strip_received};

/// What one tern-smtpd run produced.
struct Run {
    code: i32,
    out: String,
    log: String,
}

impl Run {
    /// The reply lines (CRLF removed), asserting every line ended in CRLF.
    fn lines(&self) -> Vec<&str> {
        assert!(
            self.out.is_empty() || self.out.ends_with("\r\n"),
            "{:?}",
            self.out
        );
        let body = self.out.strip_suffix("\r\n").unwrap_or("");
        if body.is_empty() {
            return vec![];
        }
        for l in body.split("\r\n") {
            assert!(
                !l.contains('\n') && !l.contains('\r'),
                "bare line end in {:?}",
                self.out
            );
        }
        body.split("\r\n").collect()
    }

    /// Each reply's code, with its enhanced code when it has one
    /// ("250 2.1.0", "354"); continuation lines of multi-line replies are
    /// skipped.
    fn codes(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.as_bytes().get(3) != Some(&b'-'))
            .map(|l| {
                let mut words = l.split(' ');
                let code = words.next().unwrap_or("").to_string();
                match words.next() {
                    Some(e)
                        if e.len() >= 5
                            && e.as_bytes()[1] == b'.'
                            && e.as_bytes()[0].is_ascii_digit() =>
                    {
                        format!("{code} {e}")
                    }
                    _ => code,
                }
            })
            .collect()
    }
}

fn smtpd_cmd(inst: &Instance, env: &[(&str, &str)]) -> std::process::Command {
    let mut c = inst.command("tern-smtpd");
    for v in [
        "TCPREMOTEIP",
        "TCPREMOTEHOST",
        "TCPREMOTEINFO",
        "TCPLOCALIP",
        "TCPLOCALHOST",
        "TCPLOCALPORT",
        "RELAYCLIENT",
        "DATABYTES",
        "PROTO",
        "TERN_TARPIT_MS",
    ] {
        c.env_remove(v);
    }
    c.env("TCPREMOTEIP", "127.0.0.1");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Runs tern-smtpd with `input` written in one go, then end of input.
fn smtpd(inst: &Instance, env: &[(&str, &str)], input: &[u8]) -> Run {
    run_smtpd(smtpd_cmd(inst, env), input)
}

/// Runs the prepared tern-smtpd command `cmd` with `input`, then end of
/// input.
fn run_smtpd(mut cmd: std::process::Command, input: &[u8]) -> Run {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tern-smtpd");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let w = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    let _ = w.join();
    Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        log: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn me(inst: &Instance) -> String {
    std::fs::read_to_string(inst.home().join("control/me"))
        .unwrap()
        .trim()
        .to_string()
}

fn control(inst: &Instance, name: &str, value: &str) {
    std::fs::write(inst.home().join("control").join(name), value).unwrap();
}

/// Messages in the queue: (sender, recipients, stored bytes with
/// tern-queue's Received line removed), in no reliable order (ids are
/// inode numbers; births have a one-second resolution).
fn queued(inst: &Instance) -> Vec<(String, Vec<String>, Vec<u8>)> {
    let q = inst.queue();
    let mut list = q.list().unwrap();
    list.sort_by_key(|m| (m.birth, m.id));
    list.into_iter()
        .map(|m| {
            let stored = q.read_message(m.id).unwrap();
            let (_, rest) = strip_received(&stored);
            (
                String::from_utf8_lossy(&m.sender).into_owned(),
                m.recipients
                    .iter()
                    .map(|r| String::from_utf8_lossy(&r.address).into_owned())
                    .collect(),
                rest.to_vec(),
            )
        })
        .collect()
}

/// Splits tern-smtpd's two-line Received header off a stored message.
fn our_received(stored: &[u8]) -> (String, &[u8]) {
    let first = stored.iter().position(|&b| b == b'\n').unwrap();
    let second = first
        + 1
        + stored[first + 1..]
            .iter()
            .position(|&b| b == b'\n')
            .unwrap();
    (
        String::from_utf8_lossy(&stored[..=second]).into_owned(),
        &stored[second + 1..],
    )
}

fn transaction(rcpt: &str, body: &[u8]) -> Vec<u8> {
    [
        b"MAIL FROM:<sender@example.org>\r\n".as_slice(),
        format!("RCPT TO:<{rcpt}>\r\n").as_bytes(),
        b"DATA\r\n",
        body,
    ]
    .concat()
}

#[test]
fn full_transaction_is_byte_exact_and_delivered() {
    let inst = Instance::new("smtp-full");
    let me = me(&inst);
    let input = b"EHLO client.example\r\nMAIL FROM:<sender@example.org> BODY=8BITMIME SIZE=100\r\nRCPT TO:<test@localhost>\r\nDATA\r\nSubject: hello\r\nFrom: sender@example.org\r\n\r\nline one\r\n\r\n..leading dot\r\nlast\r\n.\r\nQUIT\r\n";
    let r = smtpd(&inst, &[("TCPREMOTEHOST", "client.host")], input);
    assert_eq!(r.code, 0, "{}", r.log);
    let lines = r.lines();
    let want_head = [
        format!("220 {me} ESMTP"),
        format!("250-{me}"),
        "250-PIPELINING".into(),
        "250-8BITMIME".into(),
        "250-SIZE 52428800".into(),
        "250-ENHANCEDSTATUSCODES".into(),
        "250-SMTPUTF8".into(),
        "250-CHUNKING".into(),
        "250 HELP".into(),
        "250 2.1.0 ok".into(),
        "250 2.1.5 ok".into(),
        "354 go ahead, end with <CRLF>.<CRLF>".into(),
    ];
    assert_eq!(&lines[..want_head.len()], &want_head[..], "{}", r.out);
    let queued_line = lines[want_head.len()];
    let pid = queued_line
        .strip_prefix("250 2.0.0 ok ")
        .and_then(|s| s.split_once(" qp "))
        .map(|(_, pid)| pid.to_string())
        .unwrap_or_else(|| panic!("{queued_line}"));
    assert_eq!(
        lines[want_head.len() + 1],
        format!("221 2.0.0 {me} closing connection")
    );
    assert_eq!(lines.len(), want_head.len() + 2);
    assert!(r.log.contains("event=queued"), "{}", r.log);
    assert!(
        !r.log.contains("hello") && !r.log.contains("leading"),
        "content logged: {}",
        r.log
    );

    let q = queued(&inst);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].0, "sender@example.org");
    assert_eq!(q[0].1, ["test@localhost"]);

    // Deliver and read the mailbox.
    let out = inst.command("tern-start").arg("--once").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mail = inst.maildir("test");
    assert_eq!(mail.len(), 1);
    let (added, rest) = strip_delivery_headers(&mail[0]);
    assert_eq!(
        added.len(),
        3,
        "Return-Path, Delivered-To, tern-queue Received"
    );
    let (received, body) = our_received(rest);
    let prefix = format!(
        "Received: from client.example (client.host [127.0.0.1])\n  by {me} with ESMTP id {pid}; "
    );
    assert!(received.starts_with(&prefix), "{received:?} vs {prefix:?}");
    assert!(received.ends_with(" +0000\n"), "{received:?}");
    assert_eq!(
        body,
        b"Subject: hello\nFrom: sender@example.org\n\nline one\n\n.leading dot\nlast\n"
    );
}

#[test]
fn several_transactions_rset_and_helo_protocol() {
    let inst = Instance::new("smtp-several");
    let input = [
        b"HELO c.example\r\n".as_slice(),
        &transaction("test@localhost", b"Subject: 1\r\n\r\none\r\n.\r\n"),
        b"MAIL FROM:<x@example.org>\r\nRCPT TO:<test@localhost>\r\nRSET\r\nDATA\r\n",
        &transaction("postmaster@localhost", b"Subject: 2\r\n\r\ntwo\r\n.\r\n"),
        b"QUIT\r\n",
    ]
    .concat();
    let r = smtpd(&inst, &[], &input);
    assert_eq!(r.code, 0, "{}", r.log);
    assert_eq!(
        r.codes(),
        [
            "220",
            "250",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "250 2.1.0",
            "250 2.1.5",
            "250 2.0.0",
            "503 5.5.1",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "221 2.0.0"
        ]
    );
    let mut q = queued(&inst);
    q.sort_by(|a, b| b.1.cmp(&a.1));
    assert_eq!(q.len(), 2);
    assert_eq!(q[0].1, ["test@localhost"]);
    assert_eq!(q[1].1, ["postmaster@localhost"]);
    assert_eq!(our_received(&q[1].2).1, b"Subject: 2\n\ntwo\n");
    let (received, body) = our_received(&q[0].2);
    assert!(
        received.contains("from c.example (unknown [127.0.0.1])"),
        "{received}"
    );
    assert!(received.contains(" with SMTP id "), "{received}");
    assert_eq!(body, b"Subject: 1\n\none\n");
}

/// Python's `send_message` repeats `BODY=8BITMIME` when its caller passes
/// it too: an identical repeat is accepted, a conflicting one refused.
#[test]
fn repeated_mail_parameters() {
    let inst = Instance::new("smtp-repeat-param");
    let r = smtpd(
        &inst,
        &[],
        b"EHLO c\r\nMAIL FROM:<a@example.org> BODY=8BITMIME BODY=8BITMIME\r\nRSET\r\nMAIL FROM:<a@example.org> BODY=7BIT BODY=8BITMIME\r\nQUIT\r\n",
    );
    assert_eq!(
        r.codes(),
        [
            "220",
            "250",
            "250 2.1.0",
            "250 2.0.0",
            "555 5.5.4",
            "221 2.0.0"
        ],
        "{}",
        r.out
    );
}

#[test]
fn bad_sequences_are_503() {
    let inst = Instance::new("smtp-503");
    let r = smtpd(
        &inst,
        &[],
        b"RCPT TO:<test@localhost>\r\nDATA\r\nMAIL FROM:<a@example.org>\r\nMAIL FROM:<a@example.org>\r\nDATA\r\nQUIT\r\n",
    );
    assert_eq!(
        r.codes(),
        [
            "220",
            "503 5.5.1",
            "503 5.5.1",
            "250 2.1.0",
            "503 5.5.1",
            "503 5.5.1",
            "221 2.0.0"
        ]
    );
    assert!(queued(&inst).is_empty());
}

#[test]
fn smuggling_variants_are_refused_and_close_the_connection() {
    let inst = Instance::new("smtp-smuggle");
    for v in [
        &b"\n.\n"[..],
        b"\r\n.\n",
        b"\n.\r\n",
        b"\r.\r\n",
        b"\r\n.\rX\r\n",
        b"\n",
        b"\r",
    ] {
        let body = [
            b"Subject: s\r\n\r\nbefore".as_slice(),
            v,
            b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<test@localhost>\r\nDATA\r\nevil\r\n.\r\n",
        ]
        .concat();
        let input = [transaction("test@localhost", &body), b"QUIT\r\n".to_vec()].concat();
        let r = smtpd(&inst, &[], &input);
        assert_eq!(r.code, 113, "variant {v:?}: {}", r.log);
        assert_eq!(
            r.lines().last().copied(),
            Some("554 5.6.0 bare CR or LF in message (SMTP smuggling protection)"),
            "variant {v:?}"
        );
        assert_eq!(
            r.codes().len(),
            5,
            "no reply after the refusal: {v:?} {:?}",
            r.out
        );
        assert!(queued(&inst).is_empty(), "variant {v:?} queued something");
    }
}

#[test]
fn bare_cr_or_lf_in_a_command_closes() {
    let inst = Instance::new("smtp-bare-cmd");
    for input in [
        &b"NOOP\nQUIT\r\n"[..],
        b"NOOP\rQUIT\r\n",
        b"HELO x\r\nMAIL FROM:<a@b.c>\n",
    ] {
        let r = smtpd(&inst, &[], input);
        assert_eq!(
            r.lines().last().copied(),
            Some("500 5.5.2 bare CR or LF not allowed")
        );
        assert_eq!(r.code, 113);
        assert!(!r.out.contains("221"));
    }
}

#[test]
fn dot_lines_are_unstuffed() {
    let inst = Instance::new("smtp-dots");
    let input = [
        transaction(
            "test@localhost",
            b"A: b\r\n\r\n..\r\n...\r\n....\r\n.x\r\n. \r\nend\r\n.\r\n",
        ),
        transaction("test@localhost", b".\r\n"),
        b"QUIT\r\n".to_vec(),
    ]
    .concat();
    let r = smtpd(&inst, &[], &input);
    assert_eq!(r.code, 0, "{}", r.log);
    let q = queued(&inst);
    assert_eq!(q.len(), 2);
    let mut bodies: Vec<&[u8]> = q.iter().map(|m| our_received(&m.2).1).collect();
    bodies.sort();
    assert_eq!(bodies[0], b"");
    assert_eq!(bodies[1], b"A: b\n\n.\n..\n...\nx\n \nend\n");
}

#[test]
fn pipelined_transactions_in_one_write() {
    let inst = Instance::new("smtp-pipe");
    let mut input = b"EHLO p.example\r\n".to_vec();
    for i in 0..3 {
        input.extend(transaction(
            "test@localhost",
            format!("Subject: {i}\r\n\r\nbody {i}\r\n.\r\n").as_bytes(),
        ));
    }
    input.extend_from_slice(b"QUIT\r\n");
    let r = smtpd(&inst, &[], &input);
    assert_eq!(r.code, 0, "{}", r.log);
    assert_eq!(
        r.codes()
            .iter()
            .filter(|c| c.starts_with("250 2.0.0"))
            .count(),
        3
    );
    let q = queued(&inst);
    assert_eq!(q.len(), 3);
    let mut bodies: Vec<_> = q.iter().map(|m| our_received(&m.2).1.to_vec()).collect();
    bodies.sort();
    assert_eq!(bodies[2], b"Subject: 2\n\nbody 2\n");
}

#[test]
fn long_command_lines_refused_long_text_lines_stored_as_received() {
    // Commands keep RFC 5321's 512-octet bound; message text lines of any
    // length are accepted and stored byte for byte (liberal in what we
    // accept, as Postfix), by DATA and by BDAT; only databytes bounds them.
    let inst = Instance::new("smtp-long");
    control(&inst, "databytes", "100000\n");
    let long = vec![b'x'; 10_000];
    let header = [&b"Subject: "[..], &vec![b'h'; 5000]].concat();
    let data_msg = [
        &header[..],
        b"\r\n\r\n",
        &long,
        b"\r\n..",
        &vec![b'd'; 3000],
        b"\r\nafter\r\n.\r\n",
    ]
    .concat();
    let bdat_msg = [&b"S: b\r\n\r\n"[..], &vec![b'b'; 7000], b"\r\n"].concat();
    let input = [
        b"NOOP ".as_slice(),
        &long,
        b"\r\nNOOP\r\n",
        &transaction("test@localhost", &data_msg),
        &transaction(
            "test@localhost",
            &[b"S: ok\r\n\r\n".as_slice(), &vec![b'y'; 998], b"\r\n.\r\n"].concat(),
        ),
        b"EHLO b.example\r\n",
        &bdat_start("test@localhost"),
        format!("BDAT {} LAST\r\n", bdat_msg.len()).as_bytes(),
        &bdat_msg,
        // Over databytes, however it is cut into lines: refused.
        &transaction(
            "test@localhost",
            &[&b"S: big\r\n\r\n"[..], &vec![b'z'; 100_001], b"\r\n.\r\n"].concat(),
        ),
        b"QUIT\r\n",
    ]
    .concat();
    let r = smtpd(&inst, &[], &input);
    assert_eq!(r.code, 0, "{}", r.log);
    let codes = r.codes();
    assert_eq!(
        codes[..11],
        [
            "220",
            "500 5.5.2",
            "250 2.0.0",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "250 2.0.0",
        ],
        "{}",
        r.out
    );
    assert_eq!(
        codes[codes.len() - 6..],
        [
            "250 2.0.0",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "552 5.3.4",
            "221 2.0.0"
        ],
        "{}",
        r.out
    );
    assert!(r.out.contains("500 5.5.2 line too long"));
    let mut bodies: Vec<Vec<u8>> = queued(&inst)
        .iter()
        .map(|m| our_received(&m.2).1.to_vec())
        .collect();
    bodies.sort();
    let want_data = [
        &header[..],
        b"\n\n",
        &long,
        b"\n.",
        &vec![b'd'; 3000],
        b"\nafter\n",
    ]
    .concat();
    let want_998 = [&b"S: ok\n\n"[..], &vec![b'y'; 998], b"\n"].concat();
    let want_bdat = [&b"S: b\n\n"[..], &vec![b'b'; 7000], b"\n"].concat();
    let mut want = vec![want_bdat, want_998, want_data];
    want.sort();
    assert!(
        bodies == want,
        "stored texts differ: {} messages",
        bodies.len()
    );
}

#[test]
fn nul_in_command_and_in_data() {
    let inst = Instance::new("smtp-nul");
    let input = [
        b"NO\0OP\r\nNOOP\r\n".as_slice(),
        &transaction("test@localhost", b"S: n\r\n\r\na\0b\r\n.\r\n"),
        b"QUIT\r\n",
    ]
    .concat();
    let r = smtpd(&inst, &[], &input);
    assert_eq!(r.codes()[..3], ["220", "500 5.5.2", "250 2.0.0"]);
    assert_eq!(r.code, 0);
    let q = queued(&inst);
    assert_eq!(our_received(&q[0].2).1, b"S: n\n\na\0b\n");
}

#[test]
fn size_limits_refuse_and_queue_nothing() {
    let inst = Instance::new("smtp-size");
    control(&inst, "databytes", "50\n");
    let big = vec![b'z'; 60];
    let input = [
        b"EHLO s\r\nMAIL FROM:<a@example.org> SIZE=51\r\n".as_slice(),
        &transaction(
            "test@localhost",
            &[b"S: x\r\n\r\n".as_slice(), &big, b"\r\n.\r\n"].concat(),
        ),
        &transaction("test@localhost", b"S: x\r\n\r\nsmall\r\n.\r\n"),
        b"QUIT\r\n",
    ]
    .concat();
    let r = smtpd(&inst, &[], &input);
    assert!(r.out.contains("250-SIZE 50\r\n"), "{}", r.out);
    let codes = r.codes();
    assert_eq!(codes[2], "552 5.3.4");
    assert_eq!(codes[6], "552 5.3.4", "{codes:?}");
    assert_eq!(codes[10], "250 2.0.0", "{codes:?}");
    assert_eq!(queued(&inst).len(), 1);
    // DATABYTES overrides the control file.
    let r = smtpd(&inst, &[("DATABYTES", "10")], b"EHLO s\r\nQUIT\r\n");
    assert!(r.out.contains("250-SIZE 10\r\n"), "{}", r.out);
}

/// Paths that are not RFC 5321 Mailboxes are refused at MAIL and at RCPT,
/// over the wire, with enhanced codes; nothing is queued.
#[test]
fn bad_path_syntax_is_refused() {
    let inst = Instance::new("smtp-path-syntax");
    let input = b"EHLO s\r\n\
MAIL FROM:<a@b@example>\r\n\
MAIL FROM:<sp ace@example>\r\n\
MAIL FROM:<a@example.org>\r\n\
RCPT TO:<a b@c..d>\r\n\
RCPT TO:<test@@localhost>\r\n\
RCPT TO:<\"sp ace\"@example.org>\r\n\
QUIT\r\n";
    let r = smtpd(&inst, &[("RELAYCLIENT", "")], input);
    let codes = r.codes();
    assert_eq!(
        codes[2..],
        [
            "501 5.1.7",
            "501 5.1.7",
            "250 2.1.0",
            "501 5.1.3",
            "501 5.1.3",
            "250 2.1.5",
            "221 2.0.0"
        ],
        "{}",
        r.out
    );
}

/// Without control/databytes the limit is finite (50 MiB), advertised, and
/// enforced; an explicit 0 keeps qmail's "no limit".
#[test]
fn default_size_limit_is_finite() {
    let inst = Instance::new("smtp-size-default");
    let input = b"EHLO s\r\nMAIL FROM:<a@example.org> SIZE=52428801\r\nMAIL FROM:<a@example.org> SIZE=52428800\r\nQUIT\r\n";
    let r = smtpd(&inst, &[], input);
    assert!(r.out.contains("250-SIZE 52428800\r\n"), "{}", r.out);
    let codes = r.codes();
    assert_eq!(codes[2], "552 5.3.4", "{codes:?}");
    assert_eq!(codes[3], "250 2.1.0", "{codes:?}");
    control(&inst, "databytes", "0\n");
    let r = smtpd(&inst, &[], input);
    assert!(r.out.contains("250-SIZE\r\n"), "{}", r.out);
    assert_eq!(r.codes()[2], "250 2.1.0", "{:?}", r.codes());
}

#[test]
fn too_many_recipients_452() {
    let inst = Instance::new("smtp-maxrcpt");
    control(&inst, "maxrcpt", "2\n");
    let r = smtpd(
        &inst,
        &[],
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<test@localhost>\r\nRCPT TO:<postmaster@localhost>\r\nRCPT TO:<test@localhost>\r\nDATA\r\nS: x\r\n\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(
        r.codes()[1..6],
        ["250 2.1.0", "250 2.1.5", "250 2.1.5", "452 4.5.3", "354"]
    );
    assert_eq!(queued(&inst)[0].1.len(), 2);
}

#[test]
fn relay_denied_and_relayclient() {
    let inst = Instance::new("smtp-relay");
    let input = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<victim@elsewhere.example>\r\nRCPT TO:<test@LOCALHOST>\r\nQUIT\r\n";
    let r = smtpd(&inst, &[], input);
    assert_eq!(r.codes()[2..4], ["553 5.7.1", "250 2.1.5"]);
    assert!(r.log.contains("code=553"), "{}", r.log);

    let input = [
        transaction("friend@elsewhere.example", b"S: r\r\n\r\n.\r\n"),
        b"QUIT\r\n".to_vec(),
    ]
    .concat();
    let r = smtpd(&inst, &[("RELAYCLIENT", ".suffix")], &input);
    assert_eq!(r.code, 0, "{}", r.log);
    assert_eq!(queued(&inst)[0].1, ["friend@elsewhere.example.suffix"]);
}

#[test]
fn vrfy_expn_help() {
    let inst = Instance::new("smtp-vrfy");
    let r = smtpd(&inst, &[], b"VRFY test\r\nEXPN list\r\nHELP\r\nQUIT\r\n");
    assert_eq!(
        r.codes(),
        ["220", "252 2.1.5", "502 5.5.1", "214 2.0.0", "221 2.0.0"]
    );
}

#[test]
fn unknown_local_users_and_extensions() {
    let inst = Instance::new("smtp-unknown");
    let r = smtpd(
        &inst,
        &[],
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<nobody@localhost>\r\nRCPT TO:<test-ext@localhost>\r\nQUIT\r\n",
    );
    assert_eq!(r.codes()[2..4], ["550 5.1.1", "550 5.1.1"]);
    std::fs::write(inst.home().join("mail/test/.qmail-ext"), "./Maildir/\n").unwrap();
    let r = smtpd(
        &inst,
        &[],
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<test-ext@localhost>\r\nQUIT\r\n",
    );
    assert_eq!(r.codes()[2], "250 2.1.5");
    // rcptcheck = 0 accepts every local address.
    control(&inst, "rcptcheck", "0\n");
    let r = smtpd(
        &inst,
        &[],
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<nobody@localhost>\r\nQUIT\r\n",
    );
    assert_eq!(r.codes()[2], "250 2.1.5");
}

/// A system instance refuses at RCPT the recipients tern-lspawn would
/// refuse (uid outside localuidmin..localuidmax, uid 0): 550 5.1.1, not
/// accepted and bounced later. Root only (a system instance).
#[test]
fn recipients_local_delivery_refuses_are_refused_at_rcpt() {
    if !tern_tests::is_root() {
        tern_tests::skip(
            "recipients_local_delivery_refuses_are_refused_at_rcpt",
            "needs root to run a system instance",
        );
        return;
    }
    let inst = Instance::new("smtp-uidrange");
    std::fs::remove_file(inst.home().join("single-user")).unwrap();
    let dir = inst.scratch().join("u4242");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(4242), Some(4243)).unwrap();
    let assign = inst.home().join("users/assign");
    let text = std::fs::read_to_string(&assign).unwrap_or_default();
    let at = text.rfind("\n.\n").map(|i| i + 1).unwrap_or(0);
    let d = dir.display();
    let lines = format!(
        "=u4242:u4242:4242:4243:{d}:::\n=u77:u77:77:77:{d}:::\n=u65534:u65534:65534:65534:{d}:::\n=r0:root:0:0:{d}:::\n"
    );
    let new = if text.is_empty() {
        format!("{lines}.\n")
    } else {
        format!("{}{lines}{}", &text[..at], &text[at..])
    };
    std::fs::write(&assign, new).unwrap();
    // As a system instance's front runs: not root (it refuses to).
    let mut cmd = smtpd_cmd(&inst, &[]);
    std::os::unix::process::CommandExt::uid(&mut cmd, 65533);
    std::os::unix::process::CommandExt::gid(&mut cmd, 65533);
    let r = run_smtpd(
        cmd,
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<u77@localhost>\r\nRCPT TO:<u65534@localhost>\r\nRCPT TO:<r0@localhost>\r\nRCPT TO:<u4242@localhost>\r\nQUIT\r\n",
    );
    assert_eq!(
        r.codes()[2..6],
        ["550 5.1.1", "550 5.1.1", "550 5.1.1", "250 2.1.5"],
        "{}\n{}",
        r.out,
        r.log
    );
}

/// Network input is never parsed as root: tern-smtpd started as root for
/// a system instance refuses (421, exit 111); a single-user instance
/// started by root only warns. Root only.
#[test]
fn smtpd_refuses_root_in_a_system_instance() {
    if !tern_tests::is_root() {
        tern_tests::skip(
            "smtpd_refuses_root_in_a_system_instance",
            "needs root (tern-smtpd running as uid 0)",
        );
        return;
    }
    let inst = Instance::new("smtp-root");
    let r = smtpd(&inst, &[], b"QUIT\r\n");
    assert_eq!(r.code, 0, "{}", r.log);
    assert!(r.log.contains("event=warning"), "{}", r.log);
    std::fs::remove_file(inst.home().join("single-user")).unwrap();
    let r = smtpd(&inst, &[], b"QUIT\r\n");
    assert_eq!(r.code, 111, "{}", r.log);
    assert!(r.out.starts_with("421"), "{}", r.out);
    assert!(r.log.contains("running as root"), "{}", r.log);
}

/// A local user's `~/.qmail-foo` that is a FIFO: RCPT TO:<test-foo@…> is
/// answered (tern-smtpd's check opens it O_NONBLOCK and sees it is not a
/// regular file), and another connection, started while the first is
/// open, is served. Before, the first hung in open() for ever, past
/// timeoutsmtpd. The channel timeouts only turn a hang into a failure.
#[test]
fn fifo_dot_qmail_does_not_stall_rcpt() {
    let inst = Instance::new("smtp-fifo");
    control(&inst, "timeoutsmtpd", "5\n");
    let st = std::process::Command::new("mkfifo")
        .args(["-m", "0644"])
        .arg(inst.home().join("mail/test/.qmail-foo"))
        .status()
        .unwrap();
    assert!(st.success());
    let spawn = |input: &'static [u8]| {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut child = smtpd_cmd(&inst, &[])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let _ = stdin.write_all(input);
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
            let _ = tx.send(s);
            drop(stdin);
        });
        (child, rx)
    };
    // Both connections run at once; each closes its input once it has
    // read all the replies.
    let (mut first, first_rx) =
        spawn(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<test-foo@localhost>\r\nQUIT\r\n");
    let (mut second, second_rx) =
        spawn(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<test@localhost>\r\nQUIT\r\n");
    let wait = |rx: std::sync::mpsc::Receiver<String>, child: &mut std::process::Child| match rx
        .recv_timeout(Duration::from_secs(60))
    {
        Ok(s) => {
            let _ = child.wait();
            s
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tern-smtpd stalled on a FIFO .qmail file");
        }
    };
    let second_out = wait(second_rx, &mut second);
    let first_out = wait(first_rx, &mut first);
    assert!(second_out.contains("250 2.1.5"), "{second_out}");
    let rcpt_reply = first_out.lines().nth(2).unwrap_or_default();
    assert!(
        rcpt_reply.starts_with("250 ") || rcpt_reply.starts_with("451 "),
        "{first_out}"
    );
    assert!(first_out.contains("221 2.0.0"), "{first_out}");
}

#[test]
fn tarpit_slows_replies_then_closes() {
    let inst = Instance::new("smtp-tarpit");
    let mut input = b"MAIL FROM:<a@example.org>\r\n".to_vec();
    for i in 0..12 {
        input.extend(format!("RCPT TO:<nobody{i}@localhost>\r\n").as_bytes());
    }
    let start = Instant::now();
    let r = smtpd(&inst, &[("TERN_TARPIT_MS", "50")], &input);
    let took = start.elapsed();
    let codes = r.codes();
    assert_eq!(codes.len(), 1 + 1 + 10, "{codes:?}");
    assert!(codes[2..11].iter().all(|c| c == "550 5.1.1"), "{codes:?}");
    assert_eq!(codes[11], "421 4.7.0");
    assert_eq!(r.code, 113);
    // Delays: 50, 100, 200, 400, 400, 400, 400 ms.
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn missing_rcpthosts_refuses_to_start() {
    let inst = Instance::new("smtp-norcpthosts");
    std::fs::remove_file(inst.home().join("control/rcpthosts")).unwrap();
    let r = smtpd(&inst, &[], b"QUIT\r\n");
    assert_eq!(r.code, 111);
    assert_eq!(
        r.lines(),
        [format!("421 {} service unavailable (#4.3.0)", me(&inst))]
    );
    assert!(r.log.contains("event=refused_to_start"), "{}", r.log);
    assert!(
        r.log
            .contains("control/rcpthosts missing: refusing to run as an open relay"),
        "{}",
        r.log
    );
}

fn spawn_interactive(inst: &Instance, env: &[(&str, &str)]) -> Child {
    smtpd_cmd(inst, env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn timeout_gives_421_and_exits() {
    let inst = Instance::new("smtp-timeout");
    control(&inst, "timeoutsmtpd", "1\n");
    let mut child = spawn_interactive(&inst, &[]);
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            b"EHLO t\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<test@localhost>\r\nDATA\r\npart",
        )
        .unwrap();
    let start = Instant::now();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(status.code(), Some(112));
    assert!(out.ends_with(" timeout, closing connection\r\n"), "{out}");
    assert!(out.contains("\r\n421 4.4.2 "), "{out}");
    assert!(queued(&inst).is_empty());
}

#[test]
fn end_of_input_mid_message_queues_nothing() {
    let inst = Instance::new("smtp-eof");
    let r = smtpd(
        &inst,
        &[],
        &transaction("test@localhost", b"S: x\r\n\r\nunfinished\r\n"),
    );
    assert_eq!(r.code, 114, "{}", r.log);
    assert!(queued(&inst).is_empty());
    let r = smtpd(&inst, &[], b"NOOP\r\n");
    assert_eq!(r.code, 0);
    let r = smtpd(&inst, &[], b"NOOP\r\nNO");
    assert_eq!(r.code, 114);
}

#[test]
fn smtputf8_rules() {
    let inst = Instance::new("smtp-utf8");
    let input = [
        "MAIL FROM:<jöe@example.org>\r\n".as_bytes(),
        b"MAIL FROM:<a@example.org>\r\n",
        "RCPT TO:<jöe@exämple.org>\r\n".as_bytes(),
        b"RSET\r\n",
        "MAIL FROM:<jöe@example.org> SMTPUTF8\r\n".as_bytes(),
        "RCPT TO:<jöe@exämple.org>\r\n".as_bytes(),
        b"DATA\r\nS: u\r\n\r\n\xc3\xa9\r\n.\r\nQUIT\r\n",
    ]
    .concat();
    let r = smtpd(&inst, &[("RELAYCLIENT", "")], &input);
    assert_eq!(
        r.codes()[1..9],
        [
            "553 5.6.7",
            "250 2.1.0",
            "553 5.6.7",
            "250 2.0.0",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "250 2.0.0"
        ]
    );
    let q = queued(&inst);
    assert_eq!(q[0].0, "jöe@example.org");
    assert_eq!(q[0].1, ["jöe@exämple.org"]);
}

#[test]
fn hop_count_loop_is_refused() {
    let inst = Instance::new("smtp-hops");
    let hops = |n: usize| {
        let mut m = Vec::new();
        for i in 0..n {
            if i % 2 == 0 {
                m.extend_from_slice(b"Received: from x\r\n");
            } else {
                m.extend_from_slice(b"Delivered-To: y@localhost\r\n");
            }
        }
        m.extend_from_slice(b"\r\nbody\r\n.\r\n");
        m
    };
    let input = [
        transaction("test@localhost", &hops(100)),
        transaction("test@localhost", &hops(99)),
        b"QUIT\r\n".to_vec(),
    ]
    .concat();
    let r = smtpd(&inst, &[], &input);
    let codes = r.codes();
    assert_eq!(codes[4], "554 5.4.6", "{codes:?}");
    assert_eq!(codes[8], "250 2.0.0", "{codes:?}");
    assert_eq!(queued(&inst).len(), 1);
}

#[test]
fn sendmail_bs_is_a_relay_client_on_loopback() {
    let inst = Instance::new("smtp-bs");
    let mut child = inst
        .command("sendmail")
        .arg("-bs")
        .env_remove("PROTO")
        .env_remove("RELAYCLIENT")
        .env_remove("TCPREMOTEIP")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = [
        b"HELO me\r\n".as_slice(),
        &transaction("someone@far.example", b"S: bs\r\n\r\nhi\r\n.\r\n"),
        b"QUIT\r\n",
    ]
    .concat();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("220 "), "{text}");
    assert!(text.contains("\r\n250 2.0.0 ok "), "{text}");
    let q = queued(&inst);
    assert_eq!(q[0].1, ["someone@far.example"]);
    let (received, _) = our_received(&q[0].2);
    assert!(
        received.starts_with("Received: from me (unknown [127.0.0.1])"),
        "{received}"
    );
}

#[test]
fn queue_failures_are_451_or_554_per_the_queue_exit_code() {
    use std::os::unix::fs::PermissionsExt;
    let inst = Instance::new("smtp-qfail");
    for (code, want) in [
        ("53", "451 4.3.0 qq write error or disk full (#4.3.0)"),
        (
            "31",
            "554 5.3.0 mail server permanently rejected message (#5.3.0)",
        ),
    ] {
        let script = inst.scratch().join(format!("qq-{code}"));
        std::fs::write(&script, format!("#!/bin/sh\ncat >/dev/null\nexit {code}\n")).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let input = [
            transaction("test@localhost", b"S: q\r\n\r\nbody\r\n.\r\n"),
            b"NOOP\r\nQUIT\r\n".to_vec(),
        ]
        .concat();
        let r = smtpd(&inst, &[("QMAILQUEUE", script.to_str().unwrap())], &input);
        let lines = r.lines();
        assert_eq!(lines[4], want, "{}", r.out);
        assert_eq!(
            r.codes()[5..],
            ["250 2.0.0", "221 2.0.0"],
            "the session goes on"
        );
        assert_eq!(r.code, 0);
    }
    assert!(queued(&inst).is_empty());
}

#[test]
fn badmailfrom_refuses_every_recipient() {
    let inst = Instance::new("smtp-badmailfrom");
    control(&inst, "badmailfrom", "spam@bad.example\n@worse.example\n");
    let r = smtpd(
        &inst,
        &[],
        b"MAIL FROM:<spam@bad.example>\r\nRCPT TO:<test@localhost>\r\nRSET\r\nMAIL FROM:<x@WORSE.example>\r\nRCPT TO:<test@localhost>\r\nRSET\r\nMAIL FROM:<ok@bad.example>\r\nRCPT TO:<test@localhost>\r\nQUIT\r\n",
    );
    assert_eq!(
        r.codes()[1..9],
        [
            "250 2.1.0",
            "553 5.7.1",
            "250 2.0.0",
            "250 2.1.0",
            "553 5.7.1",
            "250 2.0.0",
            "250 2.1.0",
            "250 2.1.5"
        ]
    );
}

#[test]
fn own_address_literal_is_localiphost() {
    let inst = Instance::new("smtp-literal");
    let me = me(&inst);
    let input = [
        transaction("test@[127.0.0.1]", b"S: l\r\n\r\n.\r\n"),
        b"QUIT\r\n".to_vec(),
    ]
    .concat();
    let r = smtpd(&inst, &[("TCPLOCALIP", "127.0.0.1")], &input);
    assert_eq!(r.code, 0, "{} {}", r.out, r.log);
    assert_eq!(queued(&inst)[0].1, [format!("test@{me}")]);
}

fn bdat_start(rcpt: &str) -> Vec<u8> {
    format!("MAIL FROM:<sender@example.org>\r\nRCPT TO:<{rcpt}>\r\n").into_bytes()
}

#[test]
fn bdat_chunks_are_queued_with_crlf_split_across_chunks() {
    let inst = Instance::new("smtp-bdat");
    let input = [
        b"EHLO b.example\r\n".as_slice(),
        &bdat_start("test@localhost"),
        b"BDAT 11\r\nSubject: x\r",
        b"BDAT 11 LAST\r\n\n\r\n.body\r\n.",
        b"QUIT\r\n",
    ]
    .concat();
    let r = smtpd(&inst, &[], &input);
    assert_eq!(r.code, 0, "{}", r.log);
    assert_eq!(
        r.codes()[2..],
        [
            "250 2.1.0",
            "250 2.1.5",
            "250 2.0.0",
            "250 2.0.0",
            "221 2.0.0"
        ]
    );
    assert!(
        r.out.contains("250 2.0.0 11 octets received\r\n"),
        "{}",
        r.out
    );
    assert!(r.out.contains("250 2.0.0 ok "), "{}", r.out);
    let q = queued(&inst);
    assert_eq!(q.len(), 1);
    let (received, body) = our_received(&q[0].2);
    assert!(
        received.contains("from b.example (unknown [127.0.0.1])"),
        "{received}"
    );
    assert_eq!(
        body, b"Subject: x\n\n.body\n.\n",
        "no dot handling; a final LF is added"
    );
}

#[test]
fn bdat_refusals_discard_exactly_the_chunk() {
    let inst = Instance::new("smtp-bdat-refuse");
    // Before MAIL: the 6 octets "QUIT\r\n" are data, not a command.
    let r = smtpd(&inst, &[], b"BDAT 6\r\nQUIT\r\nNOOP\r\nQUIT\r\n");
    assert_eq!(r.codes(), ["220", "503 5.5.1", "250 2.0.0", "221 2.0.0"]);
    // Bare LF in a chunk: refused, nothing queued, the session goes on.
    let input = [
        bdat_start("test@localhost"),
        b"BDAT 6\r\nS: x\n\nBDAT 2 LAST\r\nb\n".to_vec(),
        b"DATA\r\n".to_vec(),
        transaction("test@localhost", b"S: y\r\n\r\n.\r\n"),
        b"QUIT\r\n".to_vec(),
    ]
    .concat();
    let r = smtpd(&inst, &[], &input);
    assert_eq!(
        r.codes()[1..],
        [
            "250 2.1.0",
            "250 2.1.5",
            "554 5.6.0",
            "503 5.5.1",
            "503 5.5.1",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "221 2.0.0"
        ]
    );
    assert_eq!(r.code, 0);
    let q = queued(&inst);
    assert_eq!(q.len(), 1);
    assert_eq!(our_received(&q[0].2).1, b"S: y\n\n");
}

#[test]
fn bdat_rset_size_eof_and_bad_syntax() {
    let inst = Instance::new("smtp-bdat-misc");
    // RSET abandons the message; DATA is refused inside a BDAT transaction.
    let input = [
        bdat_start("test@localhost"),
        b"BDAT 6\r\nS: x\r\nDATA\r\nRSET\r\nBDAT 1 LAST\r\nxQUIT\r\n".to_vec(),
    ]
    .concat();
    let r = smtpd(&inst, &[], &input);
    assert_eq!(
        r.codes()[1..],
        [
            "250 2.1.0",
            "250 2.1.5",
            "250 2.0.0",
            "503 5.5.1",
            "250 2.0.0",
            "503 5.5.1",
            "221 2.0.0"
        ]
    );
    // databytes.
    let input = [
        bdat_start("test@localhost"),
        b"BDAT 20 LAST\r\n012345678901234567\r\nQUIT\r\n".to_vec(),
    ]
    .concat();
    let r = smtpd(&inst, &[("DATABYTES", "10")], &input);
    assert_eq!(r.codes()[3..], ["552 5.3.4", "221 2.0.0"]);
    // End of input inside a chunk.
    let input = [
        bdat_start("test@localhost"),
        b"BDAT 100\r\nS: x\r\n".to_vec(),
    ]
    .concat();
    let r = smtpd(&inst, &[], &input);
    assert_eq!(r.code, 114, "{}", r.log);
    // A BDAT whose size cannot be read closes the connection.
    let r = smtpd(&inst, &[], b"BDAT ten\r\nQUIT\r\n");
    assert_eq!(r.codes(), ["220", "501 5.5.4"]);
    assert_eq!(r.code, 113);
    assert!(queued(&inst).is_empty());
}

#[test]
fn bare_postmaster_is_accepted_and_delivered() {
    // RFC 5321 4.5.1: RCPT TO:<Postmaster> without a domain MUST be
    // accepted; it needs no rcpthosts entry and reaches the postmaster.
    let inst = Instance::new("smtp-postmaster");
    let input = [
        transaction("Postmaster", b"Subject: pm\r\n\r\nhello\r\n.\r\n"),
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<postmasterx>\r\nRCPT TO:<postmaster@elsewhere.example>\r\nQUIT\r\n".to_vec(),
    ]
    .concat();
    let r = smtpd(&inst, &[], &input);
    assert_eq!(r.code, 0, "{}", r.log);
    assert_eq!(
        r.codes(),
        [
            "220",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "250 2.1.0",
            "501 5.1.3",
            "553 5.7.1",
            "221 2.0.0"
        ]
    );
    let q = queued(&inst);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].1, ["Postmaster"]);
    let out = inst.command("tern-start").arg("--once").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mail = inst.maildir("postmaster");
    assert_eq!(mail.len(), 1);
    let (_, rest) = strip_delivery_headers(&mail[0]);
    assert_eq!(our_received(rest).1, b"Subject: pm\n\nhello\n");
}

#[test]
fn dot_stuffed_lines_of_1000_bytes_and_more_are_accepted() {
    // RFC 5321 4.5.3.1.6: 1000 bytes with CRLF, "not counting the leading
    // dot duplicated for transparency"; longer ones are accepted too (as
    // Postfix) and stored without the stuffed dot.
    let inst = Instance::new("smtp-dotline");
    let text = [&b"."[..], &vec![b'a'; 997]].concat();
    let over = [&b"."[..], &vec![b'b'; 998]].concat();
    let input = [
        transaction(
            "test@localhost",
            &[b"S: d\r\n\r\n.".as_slice(), &text, b"\r\n.\r\n"].concat(),
        ),
        transaction(
            "test@localhost",
            &[b"S: e\r\n\r\n.".as_slice(), &over, b"\r\n.\r\n"].concat(),
        ),
        b"QUIT\r\n".to_vec(),
    ]
    .concat();
    let r = smtpd(&inst, &[], &input);
    assert_eq!(r.code, 0, "{}", r.log);
    let codes = r.codes();
    assert_eq!(codes[4], "250 2.0.0", "{codes:?}");
    assert_eq!(codes[8], "250 2.0.0", "{codes:?}");
    let mut bodies: Vec<Vec<u8>> = queued(&inst)
        .iter()
        .map(|m| our_received(&m.2).1.to_vec())
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        [
            [&b"S: d\n\n"[..], &text, b"\n"].concat(),
            [&b"S: e\n\n"[..], &over, b"\n"].concat()
        ]
    );
}

#[test]
fn a_client_that_never_reads_replies_is_timed_out() {
    // Pipelined commands from a client that reads no reply: the replies
    // fill the pipe, and the blocked write must still end at the deadline
    // (timeoutsmtpd, then at most 5 s for the 421), not hold the process
    // forever.
    let inst = Instance::new("smtp-noread");
    control(&inst, "timeoutsmtpd", "1\n");
    let mut child = spawn_interactive(&inst, &[]);
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap(); // kept open, never read
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        let chunk = b"HELP\r\n".repeat(10_000);
        // Ends when tern-smtpd exits (broken pipe).
        while stdin.write_all(&chunk).is_ok() {}
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tern-smtpd still running after 30 s with a client that does not read");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = start.elapsed();
    drop(stdout);
    writer.join().unwrap();
    assert_eq!(status.code(), Some(112), "exit for a timeout");
    assert!(took < Duration::from_secs(15), "{took:?}");
}
