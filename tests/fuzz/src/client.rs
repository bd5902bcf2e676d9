//! The bodies of the tern-client targets: the reply parser (what a remote
//! server sends us) and the message encoder and address formatting (what
//! we send, from stored bytes).

use tern_client::address::{MAX_ADDRESS, format_path};
use tern_client::ehlo::Capabilities;
use tern_client::message::{Encoder, MAX_LINE as MAX_SENT_LINE, encode_all, scan};
use tern_client::reply::{MAX_LINE, MAX_LINES, MAX_TEXT, Reply, ReplyParser, parse_all, sanitise};

use crate::mapped;

const REPLY_ALPHABET: &[&[u8]] = &[
    b"250",
    b"-",
    b" ",
    b"\r\n",
    b"\n",
    b"550",
    b"354",
    b"PIPELINING",
    b"SIZE 100",
    b"SIZE",
    b"STARTTLS",
    b"8BITMIME",
    b"x",
    b"\r",
    b"2",
    b"\x00",
    b"\xc3\xa9",
    b"\xff",
];

/// `tern_client::reply`: [`ReplyParser`] fed whole, byte by byte and in
/// chunks taken from the data, [`Capabilities::parse`] and [`sanitise`].
/// Checks: every chunking gives the same replies and the same error; every
/// reply has a code 200..=599, 1 to [`MAX_LINES`] lines each shorter than
/// [`MAX_LINE`], and re-sent in wire form parses back to itself; texts are
/// at most [`MAX_TEXT`] bytes without control characters; a SIZE limit
/// read is never 0. Then the data as an LMTP server's replies after a
/// message to three recipients (see `lmtp_session`).
pub fn smtp_reply(data: &[u8]) {
    smtp_reply_bytes(data);
    smtp_reply_bytes(&mapped(data, REPLY_ALPHABET));
}

fn printable(text: &str) {
    assert!(text.len() <= MAX_TEXT, "text too long");
    assert!(
        !text.chars().any(char::is_control),
        "control character in text"
    );
}

fn wire(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, line) in reply.lines.iter().enumerate() {
        out.extend_from_slice(reply.code.to_string().as_bytes());
        out.push(if i + 1 == reply.lines.len() {
            b' '
        } else {
            b'-'
        });
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn chunked(
    data: &[u8],
    size: impl Fn(usize) -> usize,
) -> (Vec<Reply>, Option<tern_client::ReplyError>) {
    let mut p = ReplyParser::new();
    let mut replies = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let end = (at + size(i).max(1)).min(data.len());
        i += 1;
        let mut chunk = &data[at..end];
        at = end;
        loop {
            let (used, ev) = p.feed(chunk);
            assert!(used <= chunk.len());
            chunk = &chunk[used..];
            match ev {
                Some(Ok(r)) => replies.push(r),
                Some(Err(e)) => return (replies, Some(e)),
                None => {
                    assert!(chunk.is_empty(), "input left without a reply");
                    break;
                }
            }
        }
    }
    (replies, None)
}

fn smtp_reply_bytes(data: &[u8]) {
    let (replies, err, _partial) = parse_all(data);
    assert_eq!(
        chunked(data, |_| 1),
        (replies.clone(), err),
        "1-byte chunks differ"
    );
    let seed = data.first().copied().unwrap_or(0);
    assert_eq!(
        chunked(data, |i| 1 + usize::from(data[i % data.len()] ^ seed) % 23),
        (replies.clone(), err),
        "chunking changed the result"
    );
    for r in &replies {
        assert!((200..=599).contains(&r.code));
        assert!(!r.lines.is_empty() && r.lines.len() <= MAX_LINES);
        for l in &r.lines {
            assert!(l.len() < MAX_LINE);
            assert!(!l.contains(&b'\n'));
        }
        let again = parse_all(&wire(r));
        assert_eq!(
            again.0.as_slice(),
            std::slice::from_ref(r),
            "reply does not round-trip"
        );
        assert_eq!(again.1, None);
        printable(&r.text());
        let caps = Capabilities::parse(r);
        assert_ne!(caps.size_limit, Some(0));
        assert!(caps.size || caps.size_limit.is_none());
    }
    printable(&sanitise(data));
    lmtp_session(data);
}

/// A stream that reads a scripted server and swallows what is written.
struct Scripted {
    input: std::io::Cursor<Vec<u8>>,
}

impl std::io::Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl std::io::Write for Scripted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An LMTP session whose server accepts three recipients and then sends
/// `data` as its replies after the message. Checks: one result per
/// recipient; recipient k has the class of the k-th reply when replies 0
/// to k parsed and none of them was 421, and is temporary otherwise (a
/// missing reply is never a delivery); texts are printable and bounded.
fn lmtp_session(data: &[u8]) {
    use tern_client::{Client, Envelope, Protocol, Status, Transaction};
    let mut script = b"220 store\r\n250-store\r\n250 PIPELINING\r\n250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n".to_vec();
    script.extend_from_slice(data);
    let stream = Scripted {
        input: std::io::Cursor::new(script),
    };
    let mut c = Client::connect_with(stream, "the LMTP server", None, Protocol::Lmtp)
        .expect("scripted greeting");
    c.hello("client").expect("scripted LHLO");
    let rcpts = vec![b"a@x".to_vec(), b"b@x".to_vec(), b"c@x".to_vec()];
    let msg = b"x\n".to_vec();
    let sc = scan(&msg[..]).expect("scan");
    let env = Envelope {
        sender: b"s@x",
        recipients: &rcpts,
    };
    let Transaction::Done(results) = c.send(&env, &msg, &sc) else {
        panic!("the scripted transaction always starts");
    };
    assert_eq!(results.len(), 3);
    let (replies, _err, _partial) = parse_all(data);
    let mut answered = true;
    for (k, r) in results.iter().enumerate() {
        // A result quotes the reply's text (at most MAX_TEXT) in a sentence
        // of its own; tern-ipc carries up to 4000 bytes.
        assert!(r.text.len() <= MAX_TEXT + 300, "result text too long");
        assert!(
            !r.text.chars().any(char::is_control),
            "control character in result"
        );
        answered &= replies.get(k).is_some_and(|x| x.code != 421);
        let want = if !answered {
            Status::Temporary
        } else {
            match replies[k].code / 100 {
                2 => Status::Accepted,
                5 => Status::Permanent,
                _ => Status::Temporary,
            }
        };
        assert_eq!(r.status, want, "recipient {k}");
    }
    if !answered {
        assert!(!c.is_usable());
    }
}

const ENCODE_ALPHABET: &[&[u8]] = &[
    b"\r",
    b"\n",
    b".",
    b"a",
    b"\r\n",
    b"\xff",
    b"\r\n.\r\n",
    b"MAIL FROM:<x@y>",
    b"@",
    b"\"",
    b" ",
    b"\\",
    b"[",
    b"]",
];

/// A run long enough that a few of them make a line over 998 octets.
const RUN: &[u8] = &[b'x'; 333];

/// Pieces for long lines: runs, the spaces and tabs a break prefers, UTF-8
/// sequences a break must not cut, and what ends or stuffs a line.
const LONG_ALPHABET: &[&[u8]] = &[
    RUN,
    RUN,
    RUN,
    b" ",
    b"\t",
    b"\n",
    b"\r\n",
    b"\r",
    b".",
    b"\xc3\xa9",
    b"\xe2\x82\xac",
    b"\xf0\x9f\x98\x80",
    b"\xe2",
    b"\x80",
];

/// `tern_client::message` and `tern_client::address`: [`encode_all`], the
/// [`Encoder`] in chunks, [`scan`] and [`format_path`]. Checks: what is sent
/// decodes with tern-smtp's strict DATA reader (only CRLF `.` CRLF ends
/// data, a bare CR or LF is fatal) into exactly one message that ends at
/// the last byte sent and equals the stored bytes with every line end as
/// LF and the inserted line breaks (`\n `, only inside a line) taken
/// out; no line sent is over 998 octets before its CRLF; no bare CR or LF
/// is sent; chunking does not change the output (the breaks are
/// deterministic); the counting pass agrees with it, breaks included; a
/// formatted path is `<...>`, holds no control byte, and is valid UTF-8.
pub fn smtp_encode(data: &[u8]) {
    smtp_encode_bytes(data);
    smtp_encode_bytes(&mapped(data, ENCODE_ALPHABET));
    smtp_encode_bytes(&mapped(data, LONG_ALPHABET));
}

/// `decoded` with the inserted breaks taken out must be `original`;
/// returns how many. A break is always inside a line (a text byte follows
/// it in the original), so where `decoded` has `\n` and `original` a text
/// byte, that `\n ` is a break: the alignment is exact.
fn unbreak(decoded: &[u8], original: &[u8]) -> u64 {
    let (mut i, mut j, mut breaks) = (0, 0, 0);
    while i < decoded.len() {
        if j < original.len() && decoded[i] == original[j] {
            i += 1;
            j += 1;
            continue;
        }
        assert_eq!(decoded.get(i..i + 2), Some(&b"\n "[..]), "content changed");
        assert!(
            j < original.len() && original[j] != b'\n',
            "break at a line end"
        );
        i += 2;
        breaks += 1;
    }
    assert_eq!(j, original.len(), "content lost");
    breaks
}

/// Every stored line end (CRLF, bare CR, bare LF) as LF, and a final LF.
fn normalised(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 1);
    let mut i = 0;
    while i < message.len() {
        match message[i] {
            b'\r' if message.get(i + 1) == Some(&b'\n') => {
                out.push(b'\n');
                i += 1;
            }
            b'\r' | b'\n' => out.push(b'\n'),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && out.last() != Some(&b'\n') {
        out.push(b'\n');
    }
    out
}

fn smtp_encode_bytes(data: &[u8]) {
    use tern_smtp::{DataDecoder, DataLimits, DataStatus};
    let sent = encode_all(data);
    let mut d = DataDecoder::new(DataLimits {
        max_bytes: None,
        max_hops: usize::MAX,
    });
    let mut out = Vec::new();
    let (used, status) = d.feed(&sent, &mut out);
    assert_eq!(status, DataStatus::End, "data did not end");
    assert_eq!(used, sent.len(), "data ended early");
    let breaks = unbreak(&out, &normalised(data));
    for line in sent.split(|&b| b == b'\n') {
        assert!(line.len() <= MAX_SENT_LINE + 1, "line over 998 octets sent");
    }
    for (i, &b) in sent.iter().enumerate() {
        if b == b'\r' {
            assert_eq!(sent.get(i + 1), Some(&b'\n'), "bare CR sent");
        } else if b == b'\n' {
            assert!(i > 0 && sent[i - 1] == b'\r', "bare LF sent");
        }
    }
    let s = scan(data).expect("reading a slice");
    assert_eq!(s.wire, sent.len() as u64);
    assert_eq!(s.breaks, breaks);
    let n = normalised(data);
    assert_eq!(
        s.size,
        (n.len() + n.iter().filter(|&&b| b == b'\n').count()) as u64 + 3 * breaks
    );
    assert_eq!(s.eight_bit, data.iter().any(|&b| b >= 0x80));
    let step = 1 + usize::from(data.first().copied().unwrap_or(0) % 7);
    let mut enc = Encoder::new();
    let mut chunks = Vec::new();
    for c in data.chunks(step) {
        enc.encode(c, &mut chunks);
    }
    enc.finish(&mut chunks);
    assert_eq!(chunks, sent, "chunking changed the output");

    if let Ok(p) = format_path(data) {
        assert!(data.len() <= MAX_ADDRESS);
        assert!(p.starts_with(b"<") && p.ends_with(b">"));
        assert!(
            !p.iter().any(|&b| b < 32 || b == 127),
            "control byte in a path"
        );
        assert!(std::str::from_utf8(&p).is_ok());
        assert!(p.len() <= 2 * data.len() + 4);
        if data.is_empty() {
            assert_eq!(p, b"<>");
        }
    }
}
