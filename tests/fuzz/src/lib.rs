//! `tern-fuzz`: the bodies of Tern's fuzz targets.
//!
//! One public function per untrusted-input parser. Each takes arbitrary
//! bytes, calls every entry point of that parser, and asserts the
//! invariants that are cheap to check (round trips, agreement between the
//! in-memory and the streaming readers, bounds). None of them may panic
//! for any input: a panic is a bug in the parser (or a wrong invariant
//! here).
//!
//! Each function runs twice: once on the raw bytes, and once on the bytes
//! mapped onto a small alphabet of meaningful tokens ([`mapped`], the
//! smtp-proto trick), which reaches deep parser states (well-formed
//! records, nested comments, folded fields) far sooner than random bytes.
//!
//! The `fuzz_targets/*.rs` binaries call these functions under libFuzzer;
//! `tests/replay.rs` calls them on every seed in `seeds/<target>/` and on
//! pseudo-random inputs, on the stable toolchain. [`TARGETS`] lists them.
#![forbid(unsafe_code)]

mod client;

pub use client::{smtp_encode, smtp_reply};

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};

use tern_addr::{Charset, Domain, LocalPart, Mailbox};
use tern_msg::address::{self, Completion};
use tern_msg::header::{Header, Limits};
use tern_msg::inject::{self, Author, Controls, RecipientMode, Stamp};
use tern_spool::Envelope;
use tern_spool::layout::Layout;
use tern_spool::qfile;

/// The body of a fuzz target.
pub type Body = fn(&[u8]);

/// Every target: its name (the directory under `seeds/`, the binary under
/// `fuzz_targets/`) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("envelope", envelope),
    ("ipc", ipc),
    ("control_request", control_request),
    ("dkim", dkim),
    ("qfile_header", qfile_header),
    ("queue_format", queue_format),
    ("address", address),
    ("header", header),
    ("address_list", address_list),
    ("dot", dot),
    ("cmdline", cmdline),
    ("control", control),
    ("dotqmail", dotqmail),
    ("rules", rules),
    ("smtp_command", smtp_command),
    ("smtp_data", smtp_data),
    ("smtp_auth", smtp_auth),
    ("smtp_reply", smtp_reply),
    ("smtp_encode", smtp_encode),
    ("route", route),
    ("handoff", handoff),
    ("log_report", log_report),
    ("verify", verify),
    ("proxy", proxy),
];

/// Maps each input byte onto one token of `alphabet` (byte value modulo the
/// alphabet's length), concatenated.
pub fn mapped(data: &[u8], alphabet: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 2);
    for &b in data {
        out.extend_from_slice(alphabet[usize::from(b) % alphabet.len()]);
    }
    out
}

/// A `BufRead` over a slice that gives out 1 to 3 bytes at a time and
/// fails every other call with `Interrupted`, which readers must retry.
struct Choppy<'a> {
    data: &'a [u8],
    calls: usize,
}

impl Choppy<'_> {
    fn new(data: &[u8]) -> Choppy<'_> {
        Choppy { data, calls: 0 }
    }

    fn chunk(&self) -> usize {
        (self.calls % 3 + 1).min(self.data.len())
    }
}

impl Read for Choppy<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Choppy<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.calls += 1;
        if self.calls.is_multiple_of(2) {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        Ok(&self.data[..self.chunk()])
    }

    fn consume(&mut self, n: usize) {
        self.data = &self.data[n..];
    }
}

/// Bytes of `data` taken from a `BufReader<&[u8]>` so far (read from the
/// slice and not still sitting in the buffer).
fn taken(total: usize, reader: &BufReader<&[u8]>) -> usize {
    total - reader.get_ref().len() - reader.buffer().len()
}

// ---------------------------------------------------------------- envelope

const ENVELOPE_ALPHABET: &[&[u8]] = &[
    b"F",
    b"T",
    b"\0",
    b"\0",
    b"a",
    b"@",
    b"b.example",
    b"\xff",
    b"\n",
    b"F\0",
    b"Ta@b\0",
];

/// `tern_spool::Envelope`: [`Envelope::parse`], [`Envelope::read_from`] with
/// a 1-byte `BufReader` and with an interrupting reader, and
/// [`Envelope::encode`]. Checks: all readers agree (same envelope, or the
/// same error); a parsed envelope re-encodes to exactly the bytes it was
/// parsed from; nothing after the final `\0` is consumed; an envelope built
/// from arbitrary addresses survives encode → parse.
pub fn envelope(data: &[u8]) {
    envelope_bytes(data);
    envelope_bytes(&mapped(data, ENVELOPE_ALPHABET));
    envelope_built(data);
}

fn envelope_bytes(data: &[u8]) {
    let whole = Envelope::parse(data);
    let mut slow = BufReader::with_capacity(1, data);
    let streamed = Envelope::read_from(&mut slow);
    let mut choppy = Choppy::new(data);
    let chopped = Envelope::read_from(&mut choppy);
    match (&whole, &streamed, &chopped) {
        (Ok((env, used)), Ok(env2), Ok(env3)) => {
            assert_eq!(env, env2, "parse and 1-byte read_from disagree");
            assert_eq!(env, env3, "parse and interrupted read_from disagree");
            assert!(*used <= data.len());
            assert_eq!(env.encode(), &data[..*used], "encode is not the input");
            assert_eq!(taken(data.len(), &slow), *used, "read past the final NUL");
            assert_eq!(choppy.data.len(), data.len() - used);
            assert!(env.sender.len() <= tern_spool::MAX_ADDRESS);
            assert!(env.recipients.len() <= tern_spool::MAX_RECIPIENTS);
            assert!(
                env.recipients
                    .iter()
                    .all(|r| r.len() <= tern_spool::MAX_ADDRESS)
            );
        }
        (Err(a), Err(b), Err(c)) => {
            assert_eq!(a.to_string(), b.to_string(), "errors differ");
            assert_eq!(a.to_string(), c.to_string(), "errors differ");
        }
        _ => panic!("readers disagree: {whole:?} / {streamed:?} / {chopped:?}"),
    }
}

fn envelope_built(data: &[u8]) {
    let mut parts = data
        .split(|&b| b == b'\n')
        .map(|p| p.iter().map(|&b| if b == 0 { b'0' } else { b }).collect());
    let env = Envelope {
        sender: parts.next().unwrap_or_default(),
        recipients: parts.collect(),
    };
    let within = env.sender.len() <= tern_spool::MAX_ADDRESS
        && env.recipients.len() <= tern_spool::MAX_RECIPIENTS
        && env
            .recipients
            .iter()
            .all(|r| r.len() <= tern_spool::MAX_ADDRESS);
    let bytes = env.encode();
    match Envelope::parse(&bytes) {
        Ok((back, used)) => {
            assert!(within, "an envelope over the limits was accepted");
            assert_eq!(back, env);
            assert_eq!(used, bytes.len());
        }
        Err(e) => assert!(!within, "a valid envelope was refused: {e}"),
    }
}

// ------------------------------------------------------------ qfile header

const QFILE_ALPHABET: &[&[u8]] = &[
    b"V1\0",
    b"V",
    b"o",
    b"u",
    b"p",
    b"t",
    b"0",
    b"1",
    b"9",
    b"4096",
    b"\0",
    b"F",
    b"T",
    b"a@b",
    b"18446744073709551615",
    b"4294967296",
    b"o4096\0u0\0p1\0t2\0",
    b"-",
];

/// `tern_spool::qfile`: [`qfile::parse_header`], [`qfile::encode_header`]
/// and [`qfile::offset_for`]. Checks: a parsed header re-encodes (with
/// canonical numbers) into a header that parses to the same value; dropping
/// the last input byte gives the same header or "incomplete"; a header
/// written at `offset_for` fits its reservation and parses back.
pub fn qfile_header(data: &[u8]) {
    qfile_bytes(data);
    qfile_bytes(&mapped(data, QFILE_ALPHABET));
}

fn padded(mut header: Vec<u8>, offset: u64) -> Vec<u8> {
    let offset = usize::try_from(offset).expect("offset fits in memory");
    assert!(header.len() <= offset, "header longer than its offset");
    header.resize(offset, 0);
    header
}

fn qfile_bytes(data: &[u8]) {
    let parsed = qfile::parse_header(data);
    if let Some((_, head)) = data.split_last() {
        match (&parsed, qfile::parse_header(head)) {
            (Ok(h), Ok(h2)) => assert_eq!(*h, h2, "a shorter input parsed differently"),
            (Ok(_), Err(e)) => assert_eq!(e, "incomplete", "a prefix of a good header"),
            _ => {}
        }
    }
    let Ok(h) = parsed else {
        return;
    };
    assert!(h.offset <= qfile::MAX_HEADER);
    let again = padded(
        qfile::encode_header(&h.origin, &h.envelope, h.offset),
        h.offset,
    );
    assert_eq!(qfile::parse_header(&again), Ok(h.clone()));
    let offset = qfile::offset_for(&h.origin, &h.envelope);
    assert!(offset >= qfile::DEFAULT_RESERVE && offset.is_multiple_of(4096));
    assert!(offset <= qfile::MAX_HEADER);
    let fresh = padded(qfile::encode_header(&h.origin, &h.envelope, offset), offset);
    let back = qfile::parse_header(&fresh).expect("a header written by encode_header parses");
    assert_eq!(
        (back.origin, back.envelope, back.offset),
        (h.origin, h.envelope, offset)
    );
}

// ------------------------------------------------------------ queue format

const FORMAT_ALPHABET: &[&[u8]] = &[
    b"tern-queue-format 1\n",
    b"tern-queue-format 1",
    b"split ",
    b"0",
    b"1",
    b"23",
    b"9999",
    b"\n",
    b"\r\n",
    b" ",
    b"\xff",
];

/// `tern_spool::layout::Layout::parse` (the `queue/format` file). Checks:
/// a parsed layout has a split in 1..=MAX_SPLIT, renders to text that
/// parses back to itself, and hashes ids into its buckets.
pub fn queue_format(data: &[u8]) {
    queue_format_bytes(data);
    queue_format_bytes(&mapped(data, FORMAT_ALPHABET));
}

fn queue_format_bytes(data: &[u8]) {
    let Ok(layout) = Layout::parse(data) else {
        return;
    };
    assert!((1..=tern_spool::layout::MAX_SPLIT).contains(&layout.split));
    assert_eq!(Layout::parse(layout.render().as_bytes()), Ok(layout));
    for id in [0, 1, u64::MAX, data.len() as u64, u64::from(layout.split)] {
        let bucket = layout.bucket(id);
        assert!(bucket < u64::from(layout.split));
        assert!(layout.new_dir(id).ends_with(bucket.to_string()));
        assert!(layout.cur_dir(id).ends_with(bucket.to_string()));
    }
}

// ----------------------------------------------------------------- address

const ADDRESS_ALPHABET: &[&[u8]] = &[
    b"a",
    b"Z",
    b"0",
    b"-",
    b".",
    b"@",
    b"[",
    b"]",
    b"IPv6:",
    b":",
    b"\"",
    b"\\",
    b" ",
    "\u{fc}".as_bytes(),
    b"\xff",
    b"1.2.3.4",
    b"::1",
    b"_",
    b"+",
    b"example.com",
];

/// `tern_addr`: [`Domain::parse`], [`LocalPart::parse`] and
/// [`Mailbox::parse`] with both charsets. Checks: what ASCII accepts, UTF-8
/// accepts identically; a parsed value prints to text that parses back to
/// an equal value; error offsets stay within the input.
pub fn address(data: &[u8]) {
    address_bytes(data);
    address_bytes(&mapped(data, ADDRESS_ALPHABET));
}

fn address_bytes(data: &[u8]) {
    let check_err = |e: &tern_addr::Error| {
        assert!(e.offset() <= data.len().max(tern_addr::MAX_MAILBOX));
        assert!(!e.hint().is_empty());
        assert!(!e.is_temporary());
    };
    for cs in [Charset::Ascii, Charset::Utf8] {
        match Domain::parse(data, cs) {
            Ok(d) => {
                assert_eq!(d.to_string(), d.as_str());
                assert_eq!(Domain::parse(d.as_str().as_bytes(), cs).as_ref(), Ok(&d));
                let lower = d.to_lowercase_key();
                assert_eq!(Domain::parse(lower.as_bytes(), cs).as_ref(), Ok(&d));
                assert!(d.is_within(&d));
                assert!(d.eq_ignore_case(&lower) || d.is_literal());
                assert!(cs == Charset::Utf8 || !d.needs_smtputf8());
                assert!(d.as_str().len() <= tern_addr::MAX_DOMAIN);
            }
            Err(e) => check_err(&e),
        }
        match LocalPart::parse(data, cs) {
            Ok(l) => {
                assert_eq!(
                    LocalPart::parse(l.to_string().as_bytes(), cs).as_ref(),
                    Ok(&l)
                );
                assert_eq!(l.is_quoted(), l.as_str().starts_with('"'));
                assert!(cs == Charset::Utf8 || !l.needs_smtputf8());
                assert!(l.as_str().len() <= tern_addr::MAX_LOCAL_PART);
            }
            Err(e) => check_err(&e),
        }
        match Mailbox::parse(data, cs) {
            Ok(m) => {
                assert_eq!(
                    Mailbox::parse(m.to_string().as_bytes(), cs).as_ref(),
                    Ok(&m)
                );
                assert!(cs == Charset::Utf8 || !m.needs_smtputf8());
            }
            Err(e) => check_err(&e),
        }
    }
    let both = |a: bool, u: bool, what: &str| assert!(!a || u, "{what}: ASCII ok, UTF-8 not");
    both(
        Domain::parse(data, Charset::Ascii).is_ok(),
        Domain::parse(data, Charset::Utf8).is_ok(),
        "domain",
    );
    both(
        LocalPart::parse(data, Charset::Ascii).is_ok(),
        LocalPart::parse(data, Charset::Utf8).is_ok(),
        "local part",
    );
    both(
        Mailbox::parse(data, Charset::Ascii).is_ok(),
        Mailbox::parse(data, Charset::Utf8).is_ok(),
        "mailbox",
    );
}

// ------------------------------------------------------------ address list

const LIST_ALPHABET: &[&[u8]] = &[
    b"a",
    b"b.c",
    b"@",
    b".",
    b",",
    b";",
    b":",
    b"<",
    b">",
    b"(",
    b")",
    b"\"",
    b"\\",
    b" ",
    b"\t",
    b"\r\n ",
    b"\n",
    b"[",
    b"]",
    b"1.2.3.4",
    b"+",
    b"x+",
    b"\0",
    b"\x80",
    b"undisclosed-recipients:",
    b"@relay,",
    b"Name ",
];

fn completions() -> [Completion; 2] {
    [
        Completion {
            defaulthost: b"host".to_vec(),
            defaultdomain: b"example.org".to_vec(),
            plusdomain: b"plus.example".to_vec(),
        },
        Completion {
            defaulthost: Vec::new(),
            defaultdomain: Vec::new(),
            plusdomain: Vec::new(),
        },
    ]
}

/// `tern_msg::address`: [`address::parse_list`] and [`address::parse_sender`]
/// with two completion settings, and the writers
/// [`address::format_mailbox`] / [`address::format_phrase`]. Checks: the
/// limits hold; error offsets stay within the input; a parsed mailbox
/// written with `format_mailbox` parses back to the same local part and
/// domain; the writers never emit a control character that could break a
/// header line.
pub fn address_list(data: &[u8]) {
    address_list_bytes(data);
    address_list_bytes(&mapped(data, LIST_ALPHABET));
}

fn no_line_breaks(out: &[u8], what: &str) {
    assert!(
        !out.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0),
        "{what} wrote a line break or NUL"
    );
}

fn address_list_bytes(data: &[u8]) {
    let [full, bare] = completions();
    for c in [&full, &bare] {
        match address::parse_list(data, c) {
            Ok(list) => {
                assert!(list.len() <= address::MAX_MAILBOXES);
                for m in &list {
                    assert!(m.envelope().len() <= address::MAX_ADDRESS);
                    let clean = |v: &[u8]| v.iter().all(|&b| b >= 0x20 && b != 0x7f);
                    // Completion can make a domain that is not one (`a@h.+`
                    // gives `h..plus.example`); the round trip is only
                    // promised for real domains.
                    let real = Domain::parse(&m.domain, Charset::Utf8).is_ok();
                    if !clean(&m.local) || !real || c != &full {
                        continue;
                    }
                    let text = address::format_mailbox(&m.local, &m.domain);
                    no_line_breaks(&text, "format_mailbox");
                    let back = address::parse_list(&text, c)
                        .unwrap_or_else(|e| panic!("format_mailbox output refused: {e:?}"));
                    assert_eq!(back, vec![m.clone()], "mailbox changed in a round trip");
                }
            }
            Err(e) => {
                assert!(e.offset <= data.len().max(address::MAX_LIST));
            }
        }
        match address::parse_sender(data, c) {
            Ok(s) => assert!(s.len() <= address::MAX_ADDRESS),
            Err(e) => assert!(e.offset <= data.len().max(address::MAX_LIST)),
        }
    }
    let (a, b) = data.split_at(data.len() / 2);
    no_line_breaks(&address::format_mailbox(a, b), "format_mailbox");
    let phrase = address::format_phrase(data);
    assert!(
        !phrase.iter().any(|&b| b < 0x20 || b == 0x7f),
        "format_phrase wrote a control character"
    );
}

// ------------------------------------------------------------------ header

const HEADER_ALPHABET: &[&[u8]] = &[
    b"To: ",
    b"Cc: ",
    b"Bcc: ",
    b"Resent-",
    b"From: ",
    b"Date: x",
    b"Message-ID: <a@b>",
    b"Return-Path: <>",
    b"Content-Length: 5",
    b"Subject: hi",
    b"a@b",
    b", ",
    b"\n",
    b"\r\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b"X",
    b"<",
    b">",
    b"(",
    b"\"",
    b"\0",
    b".",
    b"\xff",
    b"\n\n",
];

const SMALL_LIMITS: Limits = Limits {
    max_header: 2048,
    max_field: 256,
};

/// `tern_msg::header` and `tern_msg::inject`: [`Header::read`] (whole
/// slice, 1-byte `BufReader`, interrupting reader; default and small
/// limits), the field accessors, and [`inject::fix`] in every recipient
/// mode. Checks: the readers agree; header + separator + first body line
/// are exactly the bytes consumed; the fixed header parses again with the
/// added fields present and the removed ones gone, and its recipients are
/// unique and within the limit.
pub fn header(data: &[u8]) {
    header_bytes(data);
    header_bytes(&mapped(data, HEADER_ALPHABET));
}

fn header_bytes(data: &[u8]) {
    for limits in [Limits::default(), SMALL_LIMITS] {
        let mut rest = data;
        let whole = Header::read(&mut rest, &limits);
        let mut slow = BufReader::with_capacity(1, data);
        let streamed = Header::read(&mut slow, &limits);
        let mut choppy = Choppy::new(data);
        let chopped = Header::read(&mut choppy, &limits);
        let h = match (whole, streamed, chopped) {
            (Ok(a), Ok(b), Ok(c)) => {
                assert_eq!(a, b, "slice and 1-byte reader disagree");
                assert_eq!(a, c, "slice and interrupting reader disagree");
                assert_eq!(taken(data.len(), &slow), data.len() - rest.len());
                assert_eq!(choppy.data.len(), rest.len());
                a
            }
            (Err(a), Err(b), Err(c)) => {
                assert_eq!(a.to_string(), b.to_string());
                assert_eq!(a.to_string(), c.to_string());
                assert!(!a.is_temporary(), "a slice cannot fail to read");
                continue;
            }
            (a, b, c) => panic!("header readers disagree: {a:?} / {b:?} / {c:?}"),
        };
        let consumed = &data[..data.len() - rest.len()];
        assert_eq!([h.raw(), h.separator(), h.body_start()].concat(), consumed);
        assert!(h.raw().len() <= limits.max_header);
        let joined: Vec<u8> = h.fields().flat_map(|f| f.raw().to_vec()).collect();
        assert_eq!(joined, h.raw(), "fields do not cover the header");
        for f in h.fields() {
            assert!(!f.name().is_empty());
            assert!(f.is(&String::from_utf8_lossy(f.name())));
            if let Ok(v) = f.value_bounded(&limits) {
                assert!(v.len() <= limits.max_field);
                assert_eq!(v, f.value());
            }
        }
        let _ = h.line_end();
        inject_checks(&h, &limits, data);
    }
}

fn inject_checks(h: &Header, limits: &Limits, data: &[u8]) {
    let controls = Controls::from_me(b"example.org");
    let author = Author {
        user: b"user".to_vec(),
        host: None,
        name: Some(b"A. U. Thor".to_vec()),
    };
    let stamp = Stamp {
        now: 1_795_000_000,
        pid: 4242,
        random: 0x0123_4567_89ab_cdef,
    };
    let arg_sets: [Vec<Vec<u8>>; 2] = [Vec::new(), vec![b"rcpt".to_vec(), data.to_vec()]];
    let resent = inject::is_resent(h);
    let prefix = if resent { "Resent-" } else { "" };
    for args in &arg_sets {
        for mode in [
            RecipientMode::Args,
            RecipientMode::Header,
            RecipientMode::ArgsElseHeader,
            RecipientMode::HeaderAndArgs,
        ] {
            let Ok(inj) = inject::fix(h, args, mode, &controls, &author, &stamp, limits) else {
                continue;
            };
            assert!(inj.recipients.len() <= inject::MAX_RECIPIENTS);
            let unique: HashSet<&Vec<u8>> = inj.recipients.iter().collect();
            assert_eq!(unique.len(), inj.recipients.len(), "duplicate recipients");
            let mut r = inj.header.as_slice();
            let h2 = Header::read(&mut r, &Limits::default()).expect("fixed header reads");
            for name in ["Date", "Message-ID", "From"] {
                assert!(
                    h2.has(&format!("{prefix}{name}")),
                    "no {prefix}{name} added"
                );
            }
            for name in ["Bcc", "Resent-Bcc", "Return-Path", "Content-Length"] {
                assert!(!h2.has(name), "{name} kept");
            }
            if !h.separator().is_empty() || !h.body_start().is_empty() {
                assert!(!h2.separator().is_empty(), "header and body not separated");
            }
        }
    }
    let _ = inject::header_recipients(h, &controls, limits);
}

// --------------------------------------------------------------------- dot

const DOT_ALPHABET: &[&[u8]] = &[b".", b"\n", b"\r", b"a", b"\r\n", b".\n", b"..", b"\0"];

/// `tern_msg::dot::DotTerminated` (sendmail's lone-dot end of input), read
/// in one go and through 1-byte reads of a 1-byte `BufReader`. Checks: both
/// give the same bytes, a prefix of the input; without a dot line the
/// whole input; with one, the input continues with that dot line.
pub fn dot(data: &[u8]) {
    dot_bytes(data);
    dot_bytes(&mapped(data, DOT_ALPHABET));
}

fn dot_bytes(data: &[u8]) {
    let mut fast = tern_msg::dot::DotTerminated::new(data);
    let mut out = Vec::new();
    fast.read_to_end(&mut out).expect("reading a slice");
    let mut slow = tern_msg::dot::DotTerminated::new(BufReader::with_capacity(1, data));
    let mut out2 = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match slow.read(&mut byte).expect("reading a slice") {
            0 => break,
            _ => out2.push(byte[0]),
        }
    }
    assert_eq!(out, out2, "fast and slow reads disagree");
    assert_eq!(fast.saw_dot(), slow.saw_dot());
    assert!(
        data.starts_with(&out),
        "output is not a prefix of the input"
    );
    if fast.saw_dot() {
        let tail = &data[out.len()..];
        assert!(
            out.is_empty() || out.ends_with(b"\n"),
            "dot not at a line start"
        );
        assert!(
            tail == b"." || tail.starts_with(b".\n") || tail.starts_with(b".\r\n"),
            "no dot line where the output stopped"
        );
    } else {
        assert_eq!(out, data, "input lost without a dot line");
    }
}

// ----------------------------------------------------------------- cmdline

const CMDLINE_ALPHABET: &[&[u8]] = &[
    b"\0",
    b"\0",
    b"-t",
    b"-i",
    b"-oi",
    b"-f",
    b"-F",
    b"-r",
    b"-bs",
    b"-bp",
    b"-bm",
    b"-b",
    b"-q",
    b"--",
    b"--help",
    b"--version",
    b"-h",
    b"-a",
    b"-A",
    b"-H",
    b"-n",
    b"-ti",
    b"-fuser",
    b"u@x",
    b"-",
    b"-o",
    b"-e",
    b"-x",
    b"-v",
    b"-N",
    b"x",
];

/// `tern_msg::cmdline`: the hand-written argument parsers of `tern-inject`
/// and `sendmail`, on arguments split at NUL bytes (the first one also
/// tried as sendmail's program name). Checks: no panic; the parsed
/// options only hold bytes that came from the arguments.
pub fn cmdline(data: &[u8]) {
    cmdline_bytes(data);
    cmdline_bytes(&mapped(data, CMDLINE_ALPHABET));
}

fn cmdline_bytes(data: &[u8]) {
    use tern_msg::cmdline::{InjectCommand, SendmailCommand, parse_inject, parse_sendmail};
    let args: Vec<Vec<u8>> = data.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
    let from_args = |v: &[u8]| {
        args.iter()
            .any(|a| a.windows(v.len().max(1)).any(|w| w == v))
    };
    if let Ok(InjectCommand::Run(o)) = parse_inject(&args) {
        assert!(o.recipients.iter().all(|r| args.contains(r)));
        assert!(
            o.sender
                .as_deref()
                .is_none_or(|s| s.is_empty() || from_args(s))
        );
    }
    for (name, rest) in [(b"sendmail".as_slice(), &args[..]), (&args[0], &args[1..])] {
        match parse_sendmail(name, rest) {
            Ok(SendmailCommand::Send(o)) => {
                assert!(o.recipients.iter().all(|r| rest.contains(r)));
                assert!(
                    o.sender
                        .as_deref()
                        .is_none_or(|s| s.is_empty() || from_args(s))
                );
            }
            Ok(
                SendmailCommand::ListQueue
                | SendmailCommand::Help
                | SendmailCommand::Version
                | SendmailCommand::RunQueue
                | SendmailCommand::Smtp,
            ) => {}
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

// ----------------------------------------------------------------- control

const CONTROL_ALPHABET: &[&[u8]] = &[
    b"\n",
    b"\r\n",
    b"#",
    b" ",
    b"\t",
    b":",
    b".",
    b"@",
    b"example.com",
    b"Sub.Example.COM",
    b"a",
    b"-",
    b"[192.0.2.1]",
    b"[2001:db8::1]",
    b"25",
    b"99999999999999999999",
    b"=",
    b"+",
    b"alice:1000:1000:/home/alice:-::",
    b"/",
    b"\0",
    b"\xff",
    b"\xc3\xbc",
    b".\n",
];

/// `tern_control`: every setting's parser ([`tern_control::parse_value`]
/// for each entry of [`tern_control::SETTINGS`]), the list parsers
/// ([`tern_control::DomainList`], [`tern_control::VirtualDomains`],
/// [`tern_control::SmtpRoutes`], [`tern_control::BadMailFrom`]) with
/// lookups, `users/assign` ([`tern_control::Assign`]), and the file readers
/// ([`tern_control::Control::load`], [`tern_control::Assign::load`]) on the
/// raw bytes written to a scratch file. Checks: a parsed list's entries,
/// written back one per line, parse to an equal list; listed domains are
/// found by lookups; an assign file rebuilt from its entries gives the same
/// entries; error line numbers stay within the text.
pub fn control(data: &[u8]) {
    control_bytes(data);
    control_bytes(&mapped(data, CONTROL_ALPHABET));
}

fn control_bytes(data: &[u8]) {
    use tern_control::{Assign, BadMailFrom, DomainList, SETTINGS, SmtpRoutes, VirtualDomains};
    control_files(data);
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    let lines = text.split('\n').count();
    let line_ok = |e: &tern_control::Error| {
        assert!(
            e.line().is_none_or(|n| (1..=lines).contains(&n)),
            "line {:?} of {lines}",
            e.line()
        );
        assert!(!e.to_string().is_empty());
    };
    for s in SETTINGS {
        match tern_control::parse_value(s.kind, text) {
            Ok(Some(v)) => {
                let _ = v.display_lines();
            }
            Ok(None) => {}
            Err(e) => line_ok(&e),
        }
    }
    let key = text.lines().next().unwrap_or("");
    for suffixes in [false, true] {
        match DomainList::parse(text, suffixes) {
            Ok(list) => {
                let again = DomainList::parse(&list.entries().join("\n"), suffixes);
                reparsed(again, &list, "domain list round trip");
                for e in list.entries() {
                    match e.strip_prefix('.') {
                        Some(rest) => assert!(list.contains(&format!("x.{rest}"))),
                        None => assert!(list.contains(&e.to_uppercase()) || !e.is_ascii()),
                    }
                }
                let _ = list.contains(key);
            }
            Err(e) => line_ok(&e),
        }
    }
    match VirtualDomains::parse(text) {
        Ok(vd) => {
            let again = VirtualDomains::parse(&vd.entries().join("\n"));
            reparsed(again, &vd, "virtualdomains round trip");
            let (local, domain) = key.rsplit_once('@').unwrap_or(("user", key));
            let _ = vd.lookup(local, domain);
        }
        Err(e) => line_ok(&e),
    }
    match SmtpRoutes::parse(text) {
        Ok(routes) => {
            let again = SmtpRoutes::parse(&routes.entries().join("\n"));
            reparsed(again, &routes, "smtproutes round trip");
            if let Some(relay) = routes.lookup(key) {
                assert!(!relay.to_string().is_empty());
            }
        }
        Err(e) => line_ok(&e),
    }
    match BadMailFrom::parse(text) {
        Ok(bmf) => {
            let again = BadMailFrom::parse(&bmf.entries().join("\n"));
            reparsed(again, &bmf, "badmailfrom round trip");
            let _ = bmf.matches(key.as_bytes());
        }
        Err(e) => line_ok(&e),
    }
    match Assign::parse(text) {
        Ok(a) => {
            let lines: Vec<String> = a.entries().iter().map(|e| e.to_line()).collect();
            let rebuilt = format!("{}\n.\n", lines.join("\n"));
            let b = Assign::parse(rebuilt.trim_start_matches('\n'))
                .unwrap_or_else(|e| panic!("assign entries do not parse back: {e}"));
            let back: Vec<String> = b.entries().iter().map(|e| e.to_line()).collect();
            assert_eq!(back, lines, "assign round trip");
            for e in a.entries() {
                let found = a.lookup(e.key.as_bytes());
                assert!(found.is_some() || e.wildcard, "exact entry not found");
                if !e.wildcard {
                    assert!(a.has_exact(&e.key));
                }
            }
            let _ = a.lookup(key.as_bytes());
        }
        Err(e) => line_ok(&e),
    }
}

/// Asserts that a list written back from its entries parsed to `orig`.
fn reparsed<T: PartialEq + std::fmt::Debug>(
    again: Result<T, tern_control::Error>,
    orig: &T,
    what: &str,
) {
    match again {
        Ok(v) => assert_eq!(&v, orig, "{what}: a different value"),
        Err(e) => panic!("{what}: the entries do not parse back: {e}"),
    }
}

/// A scratch directory for [`control_files`], one per process.
fn scratch_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tern-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        dir
    })
}

/// The file readers: the first byte picks a setting, the rest becomes its
/// file (the readers' size, NUL, line-length and UTF-8 checks run on raw
/// bytes); the whole input is also tried as `users/assign`.
fn control_files(data: &[u8]) {
    use tern_control::{Assign, Control, SETTINGS};
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let dir = scratch_dir();
    let setting = &SETTINGS[usize::from(pick) % SETTINGS.len()];
    let path = dir.join(setting.name);
    std::fs::write(&path, body).expect("write the scratch control file");
    let loaded = Control::in_dir(dir).load(setting);
    let assign_path = dir.join("assign");
    std::fs::write(&assign_path, data).expect("write the scratch assign file");
    let assign = Assign::load(&assign_path);
    std::fs::remove_file(&path).expect("remove the scratch control file");
    std::fs::remove_file(&assign_path).expect("remove the scratch assign file");
    if let Err(e) = loaded {
        assert!(!e.is_io(), "reading a scratch file failed: {e}");
    }
    if let Err(e) = assign {
        assert!(!e.is_io(), "reading a scratch file failed: {e}");
    }
}

// ---------------------------------------------------------------- dotqmail

const DOTQMAIL_ALPHABET: &[&[u8]] = &[
    b"\n",
    b"\r\n",
    b"#",
    b"|",
    b"&",
    b".",
    b"/",
    b"./Maildir/",
    b"./mbox",
    b"/var/mail/x",
    b"|exit 99",
    b" ",
    b"\t",
    b"\r",
    b"\0",
    b"\x7f",
    b"\xff",
    b"a@b.example",
    b"-",
    b"default",
    b"Delivered-To: ",
    b"joe",
    b"@",
];

/// `tern_deliver`: the dot-qmail parser ([`tern_deliver::dotqmail::parse`]),
/// the `.qmail` file-name search ([`tern_deliver::search::candidates`] with
/// [`tern_deliver::search::fold_ext`]), the added header lines and the
/// `Delivered-To` loop check on the input as a message. Checks: every
/// parsed instruction has the shape its kind promises (bounded, no NUL, no
/// control character where one could reach an envelope or a header); error
/// line numbers stay within the input; candidate names are file names
/// (no `/`, at most 255 bytes) and their `DEFAULT` ranges lie within the
/// extension; the added lines are one line each; a message with our own
/// `Delivered-To` line prepended is always seen as looping.
pub fn dotqmail(data: &[u8]) {
    dotqmail_bytes(data);
    dotqmail_bytes(&mapped(data, DOTQMAIL_ALPHABET));
}

fn dotqmail_bytes(data: &[u8]) {
    use tern_deliver::dotqmail::{self, Instruction, ParseErrorKind};
    use tern_deliver::{message, search};
    let lines = data.split(|&b| b == b'\n').count();
    match dotqmail::parse(data) {
        Ok(parsed) => {
            assert!(data.len() <= dotqmail::MAX_FILE);
            let mut last = 0;
            for l in &parsed {
                assert!(l.number > last && l.number <= dotqmail::MAX_LINES);
                last = l.number;
                let v = match &l.instruction {
                    Instruction::Program(v)
                    | Instruction::Maildir(v)
                    | Instruction::Mbox(v)
                    | Instruction::Forward(v) => v,
                    Instruction::ListFlag => continue,
                };
                assert!(!v.is_empty() && v.len() <= dotqmail::MAX_LINE);
                assert!(!v.contains(&0), "NUL in an instruction");
                assert!(!v.ends_with(b" ") && !v.ends_with(b"\t") && !v.ends_with(b"\r"));
                let control = v.iter().any(|&b| b < 0x20 || b == 0x7f);
                match &l.instruction {
                    Instruction::Program(_) => {}
                    Instruction::Maildir(p) => {
                        assert!(matches!(p[0], b'.' | b'/') && p.ends_with(b"/"));
                        assert!(!control);
                    }
                    Instruction::Mbox(p) => {
                        assert!(matches!(p[0], b'.' | b'/') && !p.ends_with(b"/"));
                        assert!(!control);
                    }
                    Instruction::ListFlag => {}
                    Instruction::Forward(a) => {
                        assert!(!control && a[0] != b' ');
                        assert!(a.len() <= tern_spool::MAX_ADDRESS);
                    }
                }
            }
        }
        Err(e) => {
            assert!(e.line <= lines, "error line {} of {lines}", e.line);
            assert!(!e.to_string().is_empty());
            if e.kind == ParseErrorKind::TooLarge {
                assert!(data.len() > dotqmail::MAX_FILE);
            }
        }
    }
    let (dash, ext) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i.min(1)], &data[i + 1..]),
        None => (&b"-"[..], data),
    };
    let folded = search::fold_ext(ext);
    assert_eq!(folded.len(), ext.len());
    assert!(!folded.contains(&b'.'));
    for c in search::candidates(dash, &folded) {
        assert!(c.name.starts_with(b".qmail") && c.name.len() <= 255);
        assert!(!c.name.contains(&b'/'));
        if let Some(r) = c.default {
            assert!(r.start <= r.end && r.end == ext.len());
            assert!(c.name.ends_with(b"default"));
        }
    }
    let one_line = |l: &[u8]| {
        assert!(l.ends_with(b"\n"));
        assert!(!l[..l.len() - 1].iter().any(|&b| b < 0x20 || b == 0x7f));
    };
    let secs = data
        .iter()
        .fold(0i64, |a, &b| a.wrapping_mul(31).wrapping_add(i64::from(b)));
    one_line(&message::return_path_line(data));
    one_line(&message::delivered_to_line(data, b"example.org"));
    one_line(&message::from_line(data, secs % 400_000_000_000));
    dotqmail_loop(data);
}

/// The loop check on `data` as a message, and with our line prepended.
fn dotqmail_loop(data: &[u8]) {
    use tern_deliver::{Message, message};
    let local = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let local = &local[..local.len().min(64)];
    let path = scratch_dir().join("dotqmail-message");
    let ours = message::delivered_to_line(local, b"example.org");
    let rcpt = message::recipient(local, b"example.org");
    for (text, must_loop) in [(data.to_vec(), false), ([&ours[..], data].concat(), true)] {
        std::fs::write(&path, &text).expect("write the scratch message");
        let file = std::fs::File::open(&path).expect("open the scratch message");
        let msg = Message::whole(file).expect("fstat the scratch message");
        assert_eq!(msg.len(), text.len() as u64);
        let looping = message::has_delivered_to(&msg, &rcpt).expect("read the scratch message");
        if must_loop {
            assert!(looping, "our own Delivered-To line was not seen");
        }
    }
    std::fs::remove_file(&path).expect("remove the scratch message");
}

/// Tokens of tern-listen rules files.
const RULES_ALPHABET: &[&[u8]] = &[
    b"127.0.0.1",
    b"::1",
    b"10.",
    b"/",
    b"8",
    b"128",
    b":",
    b"allow",
    b"deny",
    b",",
    b"RELAYCLIENT",
    b"=",
    b"\"",
    b"\n",
    b"#",
    b" ",
    b"ffff",
    b".",
];

/// `tern_rules`: [`tern_rules::Rules::parse`], `decide`, `Network::parse`
/// and `contains`, and the Display round trip of every parsed rule.
pub fn rules(data: &[u8]) {
    rules_bytes(data);
    rules_bytes(&mapped(data, RULES_ALPHABET));
}

fn rules_bytes(data: &[u8]) {
    use std::net::IpAddr;
    use tern_rules::{Decision, Network, Rules};
    let probes: [IpAddr; 5] = [
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from([10, 1, 2, 3]),
        IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        IpAddr::from([0u16, 0, 0, 0, 0, 0xffff, 0x7f00, 1]),
        IpAddr::from([0x2001u16, 0xdb8, 0, 0, 0, 0, 0, 1]),
    ];
    let lines = data.split(|&b| b == b'\n').count();
    match Rules::parse(data) {
        Ok(rules) => {
            assert!(rules.rules().len() <= tern_rules::MAX_RULES);
            let text: Vec<String> = rules.rules().iter().map(|r| r.to_string()).collect();
            let again = Rules::parse(text.join("\n").as_bytes()).expect("a shown rule parses");
            assert_eq!(again.rules().len(), rules.rules().len());
            for (a, b) in again.rules().iter().zip(rules.rules()) {
                assert_eq!((&a.network, &a.action), (&b.network, &b.action));
            }
            for ip in probes {
                match rules.decide(ip) {
                    Decision::Allow { line, .. } | Decision::Deny { line } => {
                        assert!(line <= lines)
                    }
                }
            }
        }
        Err(e) => {
            assert!(e.line <= lines, "line {} of {lines}", e.line);
            assert!(!e.to_string().is_empty());
        }
    }
    let first = data.split(|&b| b == b'\n').next().unwrap_or_default();
    if let Ok(s) = std::str::from_utf8(first)
        && let Ok(net) = Network::parse(s)
    {
        assert_eq!(Network::parse(&net.to_string()), Ok(net));
        match net {
            Network::Any => assert!(probes.iter().all(|&ip| net.contains(ip))),
            Network::V4(a, _) => assert!(net.contains(IpAddr::V4(a))),
            Network::V6(a, _) => assert!(net.contains(IpAddr::V6(a))),
        }
        for ip in probes {
            let _ = net.contains(ip);
        }
    }
}

// ------------------------------------------------------------------- proxy

/// Tokens of PROXY protocol headers, both versions.
const PROXY_ALPHABET: &[&[u8]] = &[
    b"PROXY ",
    b"TCP4 ",
    b"TCP6 ",
    b"UNKNOWN",
    b"192.0.2.7 ",
    b"127.0.0.1 ",
    b"2001:db8::7 ",
    b"::ffff:1.2.3.4 ",
    b"40000 ",
    b"25",
    b"0",
    b" ",
    b"\r\n",
    b"\r",
    b"\n",
    b"\r\n\r\n\0\r\nQUIT\n",
    b"\x21\x11\x00\x0c",
    b"\x20\x00\x00\x00",
    b"\x21\x21\x00\x24",
    b"\x21\x31",
    b"\x21\x12",
    b"\x0f\xf0",
    b"\xc0\x00\x02\x07",
    b"\x7f\x00\x00\x01",
    b"\x04\x00\x02",
    b"\x00",
    b"\xff",
];

/// `tern_proxy`: [`tern_proxy::Reader::feed`] on the input arriving whole,
/// a byte at a time and in data-driven chunks: the same header or error
/// in every chunking; `More` takes every byte offered; a header takes
/// exactly its own bytes (never the client's after it) within the
/// version's bound; nothing is held past [`tern_proxy::MAX_V2`].
pub fn proxy(data: &[u8]) {
    proxy_bytes(data);
    proxy_bytes(&mapped(data, PROXY_ALPHABET));
}

type ProxyRun = (Result<Option<tern_proxy::Header>, tern_proxy::Error>, usize);

/// Feeds `data` as a socket would deliver it, `chunk(i)` more bytes
/// arriving before the i-th read: the outcome, and the bytes consumed.
fn proxy_run(data: &[u8], chunk: impl Fn(usize) -> usize) -> ProxyRun {
    use tern_proxy::{Reader, Step};
    let mut r = Reader::new();
    let (mut pos, mut arrived, mut i) = (0, 0, 0);
    loop {
        match r.feed(&data[pos..arrived]) {
            Err(e) => return (Err(e), pos),
            Ok(Step::Done { take, header }) => {
                assert!(take <= arrived - pos);
                return (Ok(Some(header)), pos + take);
            }
            Ok(Step::More { take }) => {
                assert_eq!(take, arrived - pos, "More takes every byte offered");
                pos += take;
            }
        }
        assert_eq!(r.len(), pos);
        assert!(pos < tern_proxy::MAX_V2);
        if arrived == data.len() {
            return (Ok(None), pos);
        }
        arrived = arrived.saturating_add(chunk(i)).min(data.len());
        i += 1;
    }
}

fn proxy_bytes(data: &[u8]) {
    use tern_proxy::{Addresses, Error, MAX_V1, MAX_V2};
    let whole = proxy_run(data, |_| usize::MAX);
    let salt = usize::from(data.last().copied().unwrap_or(0));
    for other in [
        proxy_run(data, |_| 1),
        proxy_run(data, |i| 1 + (salt ^ i.wrapping_mul(7)) % 19),
    ] {
        // An error may be seen sooner in smaller pieces; it is the same.
        match (&whole.0, &other.0) {
            (Err(a), Err(b)) => assert_eq!(a, b),
            _ => assert_eq!(whole, other),
        }
    }
    match whole {
        (Ok(Some(h)), taken) => {
            assert_eq!(h.len, taken);
            let bytes = &data[..taken];
            match h.version {
                1 => {
                    assert!(taken <= MAX_V1);
                    assert!(bytes.starts_with(b"PROXY ") && bytes.ends_with(b"\r\n"));
                    assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
                }
                2 => {
                    assert!((16..=MAX_V2).contains(&taken));
                    assert!(bytes.starts_with(b"\r\n\r\n\0\r\nQUIT\n"));
                    assert_eq!(
                        taken,
                        16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]))
                    );
                }
                v => panic!("version {v}"),
            }
            if let Addresses::Proxied {
                source,
                destination,
            } = h.addresses
            {
                assert_eq!(source.is_ipv4(), destination.is_ipv4());
            }
            assert!(!h.kind().is_empty());
        }
        (Ok(None), taken) => assert_eq!(taken, data.len()),
        (Err(e), _) => {
            let shown = e.to_string();
            assert!(!shown.is_empty() && shown.is_ascii() && !shown.contains('\n'));
            if let Error::TooLong { max, .. } = e {
                assert!(max == MAX_V1 || max == MAX_V2);
            }
        }
    }
}

// ------------------------------------------------------------ smtp_command

const SMTP_COMMAND_ALPHABET: &[&[u8]] = &[
    b"\r\n",
    b"\r\n",
    b"\r",
    b"\n",
    b"\0",
    b" ",
    b"MAIL FROM:<",
    b"RCPT TO:<",
    b">",
    b"<",
    b"@",
    b"a",
    b"example.com",
    b"localhost",
    b"DATA",
    b"EHLO x",
    b"HELO",
    b"RSET",
    b"QUIT",
    b"NOOP",
    b"VRFY",
    b"SIZE=",
    b"9",
    b"BODY=8BITMIME",
    b"SMTPUTF8",
    b"BDAT 3",
    b" LAST",
    b"\"",
    b"\\",
    b"\xc3\xa4",
    b"\xff",
    b":",
    b",",
    b"=",
    b"@r:",
];

/// Checks for the session: `example.com` may be relayed to; `a@...` is a
/// known user; `bad@...` a bad sender.
struct FuzzChecks;

impl tern_smtp::Checks for FuzzChecks {
    fn relay_allowed(&self, domain: &[u8]) -> bool {
        domain.eq_ignore_ascii_case(b"example.com")
    }
    fn bad_sender(&self, sender: &[u8]) -> bool {
        sender.starts_with(b"bad@")
    }
    fn recipient(&mut self, address: &[u8]) -> tern_smtp::RcptVerdict {
        if address.starts_with(b"a@") {
            tern_smtp::RcptVerdict::Accept
        } else if address.starts_with(b"\"") {
            tern_smtp::RcptVerdict::TempFail
        } else {
            tern_smtp::RcptVerdict::Unknown
        }
    }
}

/// The command side of `tern_smtp`: `LineSplitter` (whole input and
/// chunked by sizes taken from the data must give the same events), the
/// command parser and the `Session` on every event. Checks: lines are at
/// most 510 bytes and hold no CR or LF; every reply is well formed (CRLF
/// line ends only, a 3-digit code on each line); parsed paths respect
/// their bounds; a closed session reads nothing more.
pub fn smtp_command(data: &[u8]) {
    smtp_command_bytes(data);
    smtp_command_bytes(&mapped(data, SMTP_COMMAND_ALPHABET));
}

fn split_events(data: &[u8], chunk: impl Fn(usize) -> usize) -> Vec<tern_smtp::LineEvent> {
    let mut s = tern_smtp::LineSplitter::new();
    let mut events = Vec::new();
    let mut pos = 0;
    let mut call = 0;
    while pos < data.len() {
        let end = (pos + chunk(call)).min(data.len());
        call += 1;
        let mut part = &data[pos..end];
        pos = end;
        while !part.is_empty() {
            let (n, ev) = s.feed(part);
            assert!(n <= part.len());
            part = &part[n..];
            match ev {
                Some(e @ tern_smtp::LineEvent::Error(tern_smtp::LineError::BareCrLf)) => {
                    events.push(e);
                    return events;
                }
                Some(e) => events.push(e),
                None => assert!(part.is_empty(), "splitter stopped early"),
            }
        }
    }
    events
}

fn check_reply(r: &tern_smtp::Reply) {
    let bytes = r.to_bytes();
    assert!(bytes.ends_with(b"\r\n"));
    for line in bytes[..bytes.len() - 2].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(!line.contains(&b'\r') && !line.contains(&b'\n'));
        assert!(line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit));
        assert!(line[3] == b' ' || line[3] == b'-');
    }
}

fn smtp_command_bytes(data: &[u8]) {
    use tern_smtp::command::{self, Command, MAX_PATH};
    use tern_smtp::{Action, LineEvent, Policy, Session};
    let whole = split_events(data, |_| usize::MAX);
    let chunked = split_events(data, |i| 1 + usize::from(data[i % data.len()] % 13));
    assert_eq!(whole, chunked, "chunking changed the lines");
    let mut policy = Policy::new("mx.example");
    policy.databytes = u64::from(data.first().copied().unwrap_or(0)) * 10;
    policy.max_recipients = 3;
    policy.relayclient = data.len().is_multiple_of(3).then(|| ".r".to_string());
    let mut session = Session::new(policy);
    let mut checks = FuzzChecks;
    check_reply(&session.greeting());
    for ev in whole {
        if let LineEvent::Line(l) = &ev {
            assert!(l.len() <= 510 && !l.contains(&b'\r') && !l.contains(&b'\n'));
            match command::parse(l) {
                Ok(Command::Mail(p, _)) => {
                    assert!(p.0.len() <= MAX_PATH && !p.0.iter().any(|&b| b < 0x20));
                }
                Ok(Command::Rcpt(p)) => {
                    assert!(
                        p.0.len() <= MAX_PATH
                            && !p.is_null()
                            && (p.domain().is_some() || p.is_postmaster())
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    let (code, _) = e.reply_code();
                    assert!((500..600).contains(&code));
                }
            }
        }
        let step = session.handle(ev, &mut checks);
        if let Some(r) = step.action.reply() {
            check_reply(r);
        }
        assert!(step.delay_ms <= 8 * session.policy().tarpit_base_ms);
        match step.action {
            Action::Close(_) => return,
            Action::StartData(_) => {
                assert!(!session.recipients().is_empty());
                let r = tern_smtp::Session::queued_reply(1, "2");
                if let Action::Close(_) = session.end_data(r, false).action {
                    return;
                }
                assert!(session.recipients().is_empty());
            }
            Action::Chunk { last, size } => {
                assert!(session.chunking() && !session.recipients().is_empty());
                let step = if last {
                    session.end_data(tern_smtp::Session::queued_reply(1, "2"), false)
                } else {
                    session.chunk_received(size)
                };
                check_reply(step.action.reply().expect("a reply"));
                if let Action::Close(_) = step.action {
                    return;
                }
                assert_eq!(session.chunking(), !last);
            }
            Action::StartTls(_) => {
                session.tls_started();
                assert!(session.is_tls() && session.recipients().is_empty());
            }
            Action::Auth(c) => {
                assert!(!c.login.is_empty() && !c.login.contains(&0) && !c.password.contains(&0));
                let step = session.auth_result(&c.login, tern_smtp::AuthVerdict::Rejected);
                check_reply(step.action.reply().expect("a reply"));
                if let Action::Close(_) = step.action {
                    return;
                }
            }
            Action::Discard { .. } | Action::Reply(_) => {}
        }
        assert!(session.recipients().len() <= 3);
    }
}

// --------------------------------------------------------------- smtp_auth

/// Fuzz target `smtp_auth`: the strict base64 decoder (whatever it
/// accepts re-encodes to the same text, except the lone `=`; encoding then
/// decoding gives the input back), the PLAIN parser's bounds, and a
/// session offering AUTH driven by the input as lines (every credential
/// handed out respects the bounds; every reply is well formed; accepted
/// and rejected verdicts alternate).
pub fn smtp_auth(data: &[u8]) {
    use tern_smtp::auth::{self, MAX_LOGIN, MAX_PASSWORD};
    use tern_smtp::{Action, AuthOffer, AuthVerdict, Policy, Session};
    if let Ok(d) = auth::decode_base64(data)
        && data != b"="
    {
        assert_eq!(auth::encode_base64(&d).as_bytes(), data);
    }
    let enc = auth::encode_base64(data);
    assert_eq!(auth::decode_base64(enc.as_bytes()).as_deref(), Ok(data));
    if let Ok(c) = auth::parse_plain(data) {
        assert!(!c.login.is_empty() && c.login.len() <= MAX_LOGIN);
        assert!(c.password.len() <= MAX_PASSWORD && !c.password.contains(&0));
    }
    let mut p = Policy::new("mx");
    p.auth = AuthOffer::Always;
    p.submission = data.first().is_some_and(|b| b & 1 == 1);
    let mut session = Session::new(p);
    let mut checks = NoChecks;
    let mut accept = false;
    for ev in split_events(data, |_| 7) {
        let step = session.handle(ev, &mut checks);
        let step = match step.action {
            Action::Auth(c) => {
                assert!(!c.login.is_empty() && c.login.len() <= MAX_LOGIN);
                assert!(c.password.len() <= MAX_PASSWORD);
                accept = !accept;
                let v = if accept {
                    AuthVerdict::Accepted
                } else {
                    AuthVerdict::Rejected
                };
                let st = session.auth_result(&c.login, v);
                if accept {
                    assert_eq!(session.auth_user(), Some(&c.login[..]));
                }
                st
            }
            Action::StartData(_) => {
                session.end_data(tern_smtp::Session::queued_reply(1, "2"), false)
            }
            _ => step,
        };
        if let Some(r) = step.action.reply() {
            check_reply(r);
        }
        if let Action::Close(_) = step.action {
            return;
        }
    }
}

/// Checks that accept everything (the relay rules are not under test).
struct NoChecks;

impl tern_smtp::Checks for NoChecks {
    fn relay_allowed(&self, _: &[u8]) -> bool {
        false
    }
    fn bad_sender(&self, _: &[u8]) -> bool {
        false
    }
    fn recipient(&mut self, _: &[u8]) -> tern_smtp::RcptVerdict {
        tern_smtp::RcptVerdict::Accept
    }
}

// --------------------------------------------------------------- smtp_data

const SMTP_DATA_ALPHABET: &[&[u8]] = &[
    b"\r\n",
    b"\r\n",
    b"\r\n",
    b".",
    b".",
    b"\r",
    b"\n",
    b"a",
    b"xyz",
    b"\0",
    b"\r\n.\r\n",
    b"Received: x\r\n",
    b"Delivered-To: y\r\n",
    b"\r\n\r\n",
    b"..",
];

/// Reference decoder for `smtp_data`, written as plainly as possible:
/// (status, bytes used, output) without any limits.
fn data_reference(input: &[u8]) -> (tern_smtp::DataStatus, usize, Vec<u8>) {
    use tern_smtp::DataStatus;
    let mut out = Vec::new();
    let mut p = 0;
    loop {
        let Some(off) = input[p..].iter().position(|&b| b == b'\r' || b == b'\n') else {
            return (DataStatus::NeedMore, input.len(), out);
        };
        let at = p + off;
        if input[at] == b'\n' {
            return (DataStatus::Fatal, at, out);
        }
        match input.get(at + 1) {
            None => return (DataStatus::NeedMore, input.len(), out),
            Some(b'\n') => {}
            Some(_) => return (DataStatus::Fatal, at + 1, out),
        }
        let line = &input[p..at];
        if line == b"." {
            return (DataStatus::End, at + 2, out);
        }
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        out.push(b'\n');
        p = at + 2;
    }
}

/// Runs the decoder over `input` cut at the given chunk sizes. Checks on
/// the way: no output after an error; nothing after End or Fatal is
/// consumed. Returns (status, bytes used, output, error).
fn data_run(
    input: &[u8],
    limits: tern_smtp::DataLimits,
    chunk: impl Fn(usize) -> usize,
) -> (
    tern_smtp::DataStatus,
    usize,
    Vec<u8>,
    Option<tern_smtp::DataError>,
) {
    use tern_smtp::{DataDecoder, DataStatus};
    let mut d = DataDecoder::new(limits);
    let mut out = Vec::new();
    let mut pos = 0;
    let mut call = 0;
    let mut status = DataStatus::NeedMore;
    while pos < input.len() {
        let end = (pos + chunk(call)).min(input.len());
        call += 1;
        let before_err = d.error();
        let before_len = out.len();
        let (n, s) = d.feed(&input[pos..end], &mut out);
        assert!(n <= end - pos);
        if before_err.is_some() {
            assert_eq!(out.len(), before_len, "output after an error");
        }
        pos += n;
        status = s;
        match s {
            DataStatus::NeedMore => assert_eq!(pos, end, "NeedMore without using all input"),
            DataStatus::End | DataStatus::Fatal => {
                let again = d.feed(&input[pos..], &mut out);
                assert_eq!(again, (0, s), "input used after the end");
                break;
            }
        }
    }
    if status == DataStatus::Fatal {
        assert_eq!(d.error(), Some(tern_smtp::DataError::BareCrLf));
    }
    if status == DataStatus::End {
        assert_ne!(
            d.error(),
            Some(tern_smtp::DataError::BareCrLf),
            "refused message ended"
        );
    }
    if let Some(max) = limits.max_bytes {
        assert!(out.len() as u64 <= max);
    }
    assert_eq!(d.bytes(), out.len() as u64);
    (status, pos, out, d.error())
}

/// `tern_smtp::DataDecoder`, fed in several chunkings (whole, 1 byte,
/// sizes taken from the data). Checks: every chunking gives the same
/// result; no output after an error; a message with a bare CR or LF never
/// yields an end of data (SMTP smuggling); without limits the status and
/// bytes used equal a plain reference decoder's, and so does the output
/// at the end of data (before it, the decoder may have streamed part of
/// a line the reference has not output yet); an ended
/// message was ended by CRLF `.` CRLF; with limits, the output is a prefix
/// of the unlimited output and respects `max_bytes`; the default limits
/// (no line length limit) change nothing unless the message loops. The
/// BDAT (chunked)
/// decoder is checked on the same input against its own reference.
pub fn smtp_data(data: &[u8]) {
    smtp_data_bytes(data);
    smtp_data_bytes(&mapped(data, SMTP_DATA_ALPHABET));
}

fn smtp_data_bytes(data: &[u8]) {
    use tern_smtp::{DataLimits, DataStatus};
    let free = DataLimits {
        max_bytes: None,
        max_hops: usize::MAX,
    };
    let whole = data_run(data, free, |_| usize::MAX);
    let (ref_status, ref_used, ref_out) = data_reference(data);
    assert_eq!(
        (whole.0, whole.1),
        (ref_status, ref_used),
        "differs from the reference"
    );
    // The decoder streams partial lines; the reference outputs whole
    // lines only. At the end of data they must agree exactly.
    if whole.0 == DataStatus::End {
        assert_eq!(whole.2, ref_out, "output differs from the reference");
    } else {
        assert!(
            whole.2.starts_with(&ref_out),
            "output differs from the reference"
        );
    }
    assert_eq!(whole.3.is_some(), whole.0 == DataStatus::Fatal);
    if whole.0 == DataStatus::End {
        let used = &data[..whole.1];
        assert!(used == b".\r\n" || used.ends_with(b"\r\n.\r\n"));
    }
    assert_eq!(whole, data_run(data, free, |_| 1), "1-byte chunks differ");

    let seed = data.first().copied().unwrap_or(0);
    let limited = DataLimits {
        max_bytes: (seed & 1 == 1).then_some(u64::from(seed) * 3),
        max_hops: 1 + usize::from(seed % 5),
    };
    let a = data_run(data, limited, |_| usize::MAX);
    let b = data_run(data, limited, |i| {
        1 + usize::from(data[i % data.len()] % 17)
    });
    assert_eq!(a, b, "chunking changed the limited result");
    assert_eq!(
        (a.0, a.1),
        (whole.0, whole.1),
        "limits changed where data ends"
    );
    assert!(whole.2.starts_with(&a.2), "limited output is not a prefix");
    let full = data_run(data, DataLimits::default(), |i| 1 + i % 5);
    assert_eq!((full.0, full.1), (whole.0, whole.1));
    // No line length limit: the default limits refuse only a looping
    // message (besides a bare CR or LF, as without limits).
    if full.3 != Some(tern_smtp::DataError::Looping) {
        assert_eq!(full, whole, "the default limits refused a message");
    }
    smtp_chunked(data);
}

/// The BDAT decoder: the same input cut two ways gives the same result;
/// a bare CR or LF anywhere (or a final lone CR) refuses the message;
/// otherwise the output is the input with CRLF → LF and a final LF added
/// when the last line has none.
fn smtp_chunked(data: &[u8]) {
    use tern_smtp::{DataDecoder, DataLimits, DataStatus};
    let run = |cut: usize| {
        let mut d = DataDecoder::chunked(DataLimits {
            max_bytes: None,
            max_hops: usize::MAX,
        });
        let mut out = Vec::new();
        let mut fatal = false;
        for piece in data.chunks(cut.max(1)) {
            let before = out.len();
            let (n, s) = d.feed(piece, &mut out);
            if fatal {
                assert_eq!((n, out.len()), (0, before), "input used after a refusal");
            }
            assert_ne!(s, DataStatus::End, "a chunked decoder never ends by itself");
            fatal |= s == DataStatus::Fatal;
        }
        let s = d.finish(&mut out);
        assert_eq!(s == DataStatus::Fatal, fatal || s == DataStatus::Fatal);
        (
            s,
            if s == DataStatus::End {
                out
            } else {
                Vec::new()
            },
        )
    };
    let a = run(data.len());
    let b = run(1 + usize::from(data.first().copied().unwrap_or(0) % 7));
    assert_eq!(a, b, "chunking changed the BDAT result");
    let mut bare = false;
    for (i, &c) in data.iter().enumerate() {
        if c == b'\n' && (i == 0 || data[i - 1] != b'\r') {
            bare = true;
        }
        if c == b'\r' && data.get(i + 1) != Some(&b'\n') {
            bare = true;
        }
    }
    if bare {
        assert_eq!(a.0, DataStatus::Fatal);
    } else {
        let mut want: Vec<u8> = Vec::new();
        let mut i = 0;
        while i < data.len() {
            if data[i] == b'\r' {
                want.push(b'\n');
                i += 2;
            } else {
                want.push(data[i]);
                i += 1;
            }
        }
        if !want.is_empty() && !want.ends_with(b"\n") {
            want.push(b'\n');
        }
        assert_eq!(a, (DataStatus::End, want), "BDAT output");
    }
}

/// `ipc`: every frame decoder of `tern_ipc` (the protocols between
/// tern-send, the spawners, tern-remote and tern-clean). A payload that
/// decodes re-encodes to the same bytes; the frame splitter never yields a
/// frame over the bound, whatever the chunking.
pub fn ipc(data: &[u8]) {
    use tern_ipc::remote::{RcptReport, RemoteDeliver};
    use tern_ipc::{CleanReply, CleanRequest, Deliver, FrameBuffer, Hello, Report};
    macro_rules! round_trip {
        ($t:ty, $p:expr) => {
            if let Ok(v) = <$t>::decode($p) {
                assert_eq!(v.encode(), *$p, stringify!($t));
            }
        };
    }
    // Every type letter in turn, so each decoder sees the body.
    for letter in [b'H', b'D', b'R', b'C', b'c', b'M', b'P'] {
        let mut p = vec![tern_ipc::VERSION, letter];
        p.extend_from_slice(data);
        round_trip!(Hello, &p);
        round_trip!(Deliver, &p);
        round_trip!(Report, &p);
        round_trip!(CleanRequest, &p);
        round_trip!(CleanReply, &p);
        round_trip!(RemoteDeliver, &p);
        round_trip!(RcptReport, &p);
    }
    for chunk in [1usize, 3, 64] {
        let mut fb = FrameBuffer::default();
        for part in data.chunks(chunk) {
            fb.extend(part);
            while let Ok(Some(f)) = fb.next_frame() {
                assert!(f.len() <= tern_ipc::MAX_FRAME);
            }
        }
    }
}

// ------------------------------------------------------------------- route

const ROUTE_ALPHABET: &[&[u8]] = &[
    b"\n",
    b"\r",
    b":",
    b".",
    b"[",
    b"]",
    b"#",
    b" ",
    b"\t",
    b"127.0.0.1",
    b"::1",
    b"IPv6:",
    b"2001:db8::1",
    b"0.0.0.0",
    b"example.com",
    b".example.com",
    b"may",
    b"verify",
    b"none",
    b"nameserver ",
    b"53",
    b"65536",
    b"0",
    b"%eth0",
    b"-",
    b"1800000000",
    b"\xff",
    b"\xc3\xbc",
];

/// `tern_route`: the resolv.conf parser
/// ([`tern_route::parse_resolv_conf`]), the `dnsservers` and
/// `tlsdestinations` line parsers ([`tern_route::parse_dns_servers`],
/// [`tern_route::TlsPolicies`], [`tern_control::LmtpRoutes`]),
/// [`tern_route::Router::resolve`] on each
/// line as a recipient domain (with the first line's smtproutes, if it
/// parses, and no DNS server, so nothing is ever sent), and
/// [`tern_route::HostMemory`] reading the input as its entry files.
/// Checks: 1 to 3 resolv.conf servers, port 53, none unspecified or
/// multicast; at most 8 dnsservers, no duplicates; bad-entry numbers within
/// the lines given; a route's targets are 1 to 32 addresses with a host
/// name and a non-zero port; a name that reaches DNS is temporary (there
/// is no server); a garbage entry file never blocks a host, and a failure
/// recorded over it always does.
pub fn route(data: &[u8]) {
    route_bytes(data);
    route_bytes(&mapped(data, ROUTE_ALPHABET));
}

fn route_bytes(data: &[u8]) {
    use tern_route::{Error, MAX_ADDRESSES, Resolution, Router, TlsPolicies};
    let text = String::from_utf8_lossy(data);
    let servers = tern_route::parse_resolv_conf(&text);
    assert!((1..=3).contains(&servers.len()), "{servers:?}");
    for s in &servers {
        assert_eq!(s.port(), 53);
        assert!(!s.ip().is_unspecified() && !s.ip().is_multicast());
    }
    let lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let entry_ok = |e: Error| match e {
        Error::Entry { entry, reason, .. } => {
            assert!((1..=lines.len()).contains(&entry), "entry {entry}");
            assert!(!reason.is_empty());
        }
        other => panic!("unexpected error {other}"),
    };
    match tern_route::parse_dns_servers(&lines) {
        Ok(list) => {
            assert!(list.len() <= tern_control::MAX_DNS_SERVERS);
            let unique: HashSet<_> = list.iter().collect();
            assert_eq!(unique.len(), list.len());
        }
        Err(e) => entry_ok(e),
    }
    match TlsPolicies::parse(&lines) {
        Ok(p) => {
            for l in &lines {
                let _ = p.lookup(l.split(':').next().unwrap_or(""));
            }
        }
        Err(e) => entry_ok(e),
    }
    let routes = tern_control::SmtpRoutes::parse(&lines[0]).unwrap_or_default();
    let lmtp = match tern_control::LmtpRoutes::parse(&text) {
        Ok(l) => {
            for e in l.entries() {
                // every server a line names is an address with a port
                // other than 0 and 25, or an absolute bounded socket path
                if let Some(server) = e.split_once(':').and_then(|(k, _)| l.lookup(k)) {
                    match server {
                        tern_control::LmtpServer::Tcp(a) => {
                            assert!(a.port() != 0 && a.port() != 25);
                        }
                        tern_control::LmtpServer::Unix(p) => {
                            assert!(p.is_absolute());
                            assert!(p.as_os_str().len() <= tern_control::MAX_SOCKET_PATH);
                        }
                    }
                }
            }
            l
        }
        Err(e) => {
            assert!(e.line().is_some_and(|n| n >= 1 && n <= lines.len()));
            tern_control::LmtpRoutes::default()
        }
    };
    let router = Router::new(routes, Vec::new()).with_lmtp_routes(lmtp);
    for l in lines.iter().take(8) {
        match router.resolve(l) {
            Resolution::Targets(t) => {
                assert!((1..=MAX_ADDRESSES).contains(&t.len()));
                for target in t {
                    assert!(!target.host.is_empty());
                    assert_ne!(target.addr.port(), 0);
                }
            }
            Resolution::NullMx => panic!("a null MX without DNS"),
            Resolution::Lmtp(_) => {}
            Resolution::NoDomain(why) | Resolution::Temporary(why) => assert!(!why.is_empty()),
        }
    }
    host_memory_files(data);
}

/// The entry files of [`tern_route::HostMemory`] holding the input.
fn host_memory_files(data: &[u8]) {
    let dir = scratch_dir().join("remote");
    std::fs::create_dir_all(&dir).expect("create the scratch remote directory");
    let memory = tern_route::HostMemory::open(&dir);
    let ip = std::net::IpAddr::from([192, 0, 2, 1]);
    let now = 1_800_000_000;
    for name in ["c-192.0.2.1", "t-192.0.2.1"] {
        std::fs::write(dir.join(name), data).expect("write a scratch entry");
    }
    let _ = memory.connect_failed_recently(ip, now);
    let _ = memory.connect_retry_at(ip);
    let _ = memory.tls_failed_recently(ip, now);
    // whatever was there, a failure recorded now counts
    memory.record_connect_failure(ip, now);
    memory.record_tls_failure(ip, now);
    let connect = memory.connect_failed_recently(ip, now);
    let tls = memory.tls_failed_recently(ip, now);
    assert!(connect, "a connect failure recorded now does not count");
    assert!(tls, "a TLS failure recorded now is not remembered");
    memory.record_connect_success(ip);
    memory.forget_tls_failure(ip);
    assert_eq!(memory.connect_retry_at(ip), None);
    assert!(!memory.tls_failed_recently(ip, now));
}

/// The packets and streams between Tern's long-lived processes that grew
/// with the reused workers: tern-listen ↔ SMTP workers (`handoff`:
/// assignments, reports, and the saved session a parked connection
/// carries, `Session::resume`), tern-lspawn ↔ delivery workers
/// (`lworker`), and tern-smtpd → the queue writer (`feed` frames). Every
/// decoder must refuse or round-trip; none may panic.
pub fn handoff(data: &[u8]) {
    use tern_ipc::handoff::{Assign, Report};
    use tern_ipc::lworker::{Finished, Job};
    if let Ok(a) = Assign::decode(data) {
        assert_eq!(a.encode().expect("re-encode"), data);
    }
    if let Ok(r) = Report::decode(data) {
        assert_eq!(r.encode().expect("re-encode"), data);
    }
    if let Ok(j) = Job::decode(data) {
        assert_eq!(j.encode().expect("re-encode"), data);
    }
    if let Ok(f) = Finished::decode(data) {
        assert_eq!(f.encode(), data);
    }
    let policy = tern_smtp::Policy::new("mx.example");
    if let Ok(s) = tern_smtp::Session::resume(policy, data) {
        // A resumed session saves to the same bytes.
        assert_eq!(s.park().as_deref(), Some(data));
    }
    // The writer's stream: hello, then frames until an error.
    let mut r = data;
    if tern_spool::feed::read_hello(&mut r).is_ok() {
        let mut frames = 0;
        while let Ok(f) = tern_spool::feed::read_frame(&mut r) {
            frames += 1;
            if let tern_spool::feed::Frame::Data(d) = f {
                assert!(!d.is_empty() && d.len() <= tern_spool::feed::MAX_DATA);
            }
            assert!(frames <= data.len());
        }
    }
}

/// Tokens of Tern log lines.
const LOG_ALPHABET: &[&[u8]] = &[
    b"tern-send: event=",
    b"tern-smtpd: event=",
    b"tern-remote: event=",
    b"new",
    b"delivery_end",
    b"queued",
    b"refused",
    b"rcpt",
    b" status=delivered",
    b" status=failed",
    b" channel=remote",
    b" rcpt=a@b.test",
    b" delay=",
    b" tls=yes",
    b" code=553",
    b" sender=\"\"",
    b"\\x4",
    b"\\x41",
    b"9",
    b"=",
    b" ",
    b"\"",
    b"\n",
    b"@4000000069573",
    b"2026-01-02T03:04:05 ",
    b"[12]",
];

/// `tern_log::parse::parse_line` (what parses re-escapes to a line that
/// parses to the same fields) and `tern_report::Report` fed the input as a
/// log, in one piece and through a 3-byte reader (same report), then its
/// text and JSON forms.
pub fn log_report(data: &[u8]) {
    log_report_bytes(data);
    log_report_bytes(&mapped(data, LOG_ALPHABET));
}

fn log_report_bytes(data: &[u8]) {
    use tern_log::parse::{MAX_FIELDS, MAX_LINE, parse_line};
    for raw in data.split(|&b| b == b'\n') {
        if let Ok(line) = parse_line(raw) {
            assert!(raw.len() <= MAX_LINE + 1);
            assert!(line.fields.len() <= MAX_FIELDS);
            let mut e = tern_log::Event::new(line.program, line.event);
            for (k, v) in &line.fields {
                e = e.field(k, v);
            }
            let again = parse_line(e.as_str().as_bytes()).expect("a written line parses");
            assert_eq!((again.program, again.event), (line.program, line.event));
            assert_eq!(again.fields, line.fields);
        }
    }
    let mut whole = tern_report::Report::new();
    whole
        .feed_reader(data)
        .expect("reading a slice cannot fail");
    let mut chopped = tern_report::Report::new();
    chopped
        .feed_reader(std::io::BufReader::with_capacity(3, data))
        .expect("reading a slice cannot fail");
    let j = whole.json(5);
    assert_eq!(j, chopped.json(5));
    let lines = data.split(|&b| b == b'\n').count() as u64;
    assert!(j["lines"]["read"].as_u64().unwrap() <= lines);
    let _ = whole.text(5);
}

/// `control_request`: the postmaster's requests to a running tern-send
/// (`tern_ipc::control`), and the journal replay that records them
/// (`tern_spool::state::replay`): every decoded request re-encodes to the
/// same bytes, and replay never reads past its input.
pub fn control_request(data: &[u8]) {
    use tern_ipc::control::{ControlReply, ControlRequest};
    for letter in [b'Q', b'q'] {
        let mut p = vec![tern_ipc::VERSION, letter];
        p.extend_from_slice(data);
        if let Ok(r) = ControlRequest::decode(&p) {
            assert_eq!(r.encode(), p, "ControlRequest");
            assert!(r.ids.len() <= tern_ipc::control::MAX_IDS);
        }
        if let Ok(r) = ControlReply::decode(&p) {
            assert_eq!(r.encode(), p, "ControlReply");
        }
    }
    let (state, valid) = tern_spool::state::replay(data);
    assert!(valid <= data.len());
    let mut again = Vec::new();
    for rec in state.snapshot() {
        again.extend_from_slice(&rec.encode());
    }
    assert_eq!(tern_spool::state::replay(&again).0, state, "snapshot");
}

/// `verify`: tern-smtpd ↔ tern-verify (`tern_ipc::verify`): request and
/// answer decoders (decode then encode is the identity, the message never
/// longer than announced), and `tern_msg::authres` on the input as a
/// header (authserv-id parsing, removal of our own fields).
pub fn verify(data: &[u8]) {
    verify_once(data);
    let m = mapped(data, VERIFY_TOKENS);
    verify_once(&m);
}

const VERIFY_TOKENS: &[&[u8]] = &[
    b"Authentication-Results:",
    b" mx.example.net",
    b";",
    b"(",
    b")",
    b"\"",
    b"\\",
    b"\n",
    b"\n ",
    b"X: y\n",
    b"TVERIFY\x01",
    b"\x00",
    b"\x05",
];

fn verify_once(data: &[u8]) {
    use tern_ipc::verify::{Request, Response};
    if let Ok((req, len)) = Request::decode(&mut &data[..]) {
        assert!(len <= tern_ipc::verify::MAX_MESSAGE);
        let head = req.encode(len).expect("re-encode");
        assert_eq!(head[..], data[..head.len()]);
    }
    if let Ok((req, msg)) = Request::decode_all(&mut &data[..]) {
        let mut again = req.encode(msg.len() as u64).expect("re-encode");
        again.extend_from_slice(&msg);
        assert_eq!(again[..], data[..again.len()]);
    }
    if let Ok(resp) = Response::decode(&mut &data[..]) {
        let again = resp.encode().expect("re-encode");
        assert_eq!(again[..], data[..again.len()]);
        assert_eq!(
            resp.header.matches('\n').count(),
            resp.header.lines().count()
        );
    }
    let _ = tern_msg::authres::authserv_id(data);
    let limits = tern_msg::header::Limits::default();
    if let Ok(h) = tern_msg::header::Header::read(&mut &data[..], &limits) {
        let (kept, removed) = tern_msg::authres::without_ours(&h, "mx.example.net");
        assert!(kept.len() <= h.raw().len());
        assert!(removed <= h.fields().count());
        // What is left claims nothing of ours.
        if let Ok(k) = tern_msg::header::Header::read(&mut &kept[..], &limits) {
            assert_eq!(tern_msg::authres::without_ours(&k, "mx.example.net").1, 0);
        }
    }
}

/// `dkim`: tern-dkim on an untrusted message. The From: domain is found or
/// not without a panic (and when found it is a valid domain name); the
/// message as tern-remote sends it (tern-client's `received_form`, with a
/// `From:` of the key's domain put first) is signed by mail-auth's
/// canonicalisation and an Ed25519 key, or refused cleanly; a signature is
/// folded into LF-ended lines shorter than 998 octets with no CR.
pub fn dkim(data: &[u8]) {
    use std::sync::OnceLock;
    static KEYS: OnceLock<tern_dkim::Keys> = OnceLock::new();
    if let Some(d) = tern_dkim::from_domain(data) {
        assert!(tern_dkim::valid_domain(&d), "{d}");
    }
    let keys = KEYS.get_or_init(|| {
        let (pem, _) = tern_dkim::generate(tern_dkim::Algorithm::Ed25519).expect("a key");
        tern_dkim::Keys::from_pem("example.com", "fuzz", pem.as_bytes()).expect("the key")
    });
    let message = [&b"From: f@example.com\n"[..], data].concat();
    let Ok(Some(held)) = tern_client::message::received_form(&message[..], 1 << 20) else {
        return;
    };
    if let Ok(Some(signed)) = keys.sign(&held) {
        assert!(!signed.header.contains(&b'\r'));
        assert!(signed.header.ends_with(b"\n"));
        assert!(signed.header.split(|&b| b == b'\n').all(|l| l.len() < 998));
        assert!(signed.header.starts_with(b"DKIM-Signature:"));
    }
}
