//! The message being delivered, and the lines added to it.
//!
//! [`Message`] is read-only access to the bytes from a start offset to the
//! end of a file (`tern-local`'s fd 0 is the queue file, positioned after
//! the queue header). It reads with `pread`, so every delivery reads the
//! same bytes no matter what the others did with the file offset; a
//! descriptor that cannot seek is copied once into a memory file.
//!
//! The added lines ([`return_path_line`], [`delivered_to_line`],
//! [`from_line`]) never contain a control character other than their final
//! LF: the envelope bytes they quote are untrusted.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

/// The message bytes: `file` from `start` to `start + len`.
#[derive(Debug)]
pub struct Message {
    file: File,
    start: u64,
    len: u64,
}

/// A memory file (`memfd_create`) for a private, seekable copy.
pub(crate) fn memory_file(name: &str, sealable: bool) -> io::Result<File> {
    use rustix::fs::{MemfdFlags, memfd_create};
    let mut flags = MemfdFlags::CLOEXEC;
    if sealable {
        flags |= MemfdFlags::ALLOW_SEALING;
    }
    Ok(File::from(memfd_create(name, flags)?))
}

impl Message {
    /// The message in `file` from its current offset to its end. When
    /// `file` cannot seek (a pipe), it is read to its end into a memory
    /// file first.
    ///
    /// # Errors
    /// Reading or copying failed.
    pub fn from_current_offset(mut file: File) -> io::Result<Message> {
        match file.stream_position() {
            Ok(start) => {
                let end = file.metadata()?.len();
                Ok(Message {
                    file,
                    start,
                    len: end.saturating_sub(start),
                })
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::SPIPE.raw_os_error()) => {
                let mut copy = memory_file("tern-message", false)?;
                let len = io::copy(&mut file, &mut copy)?;
                Ok(Message {
                    file: copy,
                    start: 0,
                    len,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The whole of `file` (from offset 0) as the message.
    ///
    /// # Errors
    /// `fstat` failed.
    pub fn whole(file: File) -> io::Result<Message> {
        let len = file.metadata()?.len();
        Ok(Message {
            file,
            start: 0,
            len,
        })
    }

    /// The message size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty message.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A reader over the message from its first byte.
    pub fn reader(&self) -> MessageReader<'_> {
        MessageReader {
            file: &self.file,
            pos: self.start,
            end: self.start + self.len,
        }
    }

    /// Copies the message into `out`.
    ///
    /// # Errors
    /// Reading the message or writing `out` failed.
    pub fn copy_to(&self, out: &mut dyn Write) -> io::Result<u64> {
        io::copy(&mut self.reader(), out)
    }

    /// A sealed (read-only), rewound memory file holding exactly the
    /// message, for a program's standard input: the program can seek in
    /// it, but cannot see the queue file around the message or change the
    /// copy.
    ///
    /// # Errors
    /// Creating, filling or sealing the memory file failed.
    pub fn sealed_copy(&self) -> io::Result<File> {
        use rustix::fs::{SealFlags, fcntl_add_seals};
        let mut copy = memory_file("tern-program-input", true)?;
        self.copy_to(&mut copy)?;
        copy.flush()?;
        fcntl_add_seals(
            &copy,
            SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
        )?;
        copy.seek(SeekFrom::Start(0))?;
        Ok(copy)
    }
}

/// A positional reader over a [`Message`].
#[derive(Debug)]
pub struct MessageReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for MessageReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// `bytes` with every control character (CR and LF included) replaced by
/// `_`, so that it cannot break a header line.
fn sanitize(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .map(|&b| if b < 0x20 || b == 0x7f { b'_' } else { b })
        .collect()
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80 || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// True when `local` is a dot-atom (needs no quotes).
fn is_dot_atom(local: &[u8]) -> bool {
    !local.is_empty()
        && local
            .split(|&b| b == b'.')
            .all(|atom| !atom.is_empty() && atom.iter().all(|&b| is_atext(b)))
}

/// `Return-Path: <sender>` and LF; the local part is quoted when it is
/// not a dot-atom. The empty sender gives `Return-Path: <>`.
pub fn return_path_line(sender: &[u8]) -> Vec<u8> {
    let sender = sanitize(sender);
    let mut out = b"Return-Path: <".to_vec();
    if !sender.is_empty() {
        let (local, domain) = match memchr::memrchr(b'@', &sender) {
            Some(at) => (&sender[..at], Some(&sender[at + 1..])),
            None => (&sender[..], None),
        };
        if is_dot_atom(local) {
            out.extend_from_slice(local);
        } else {
            tern_addr::push_quoted(local, &mut out);
        }
        if let Some(d) = domain {
            out.push(b'@');
            out.extend_from_slice(d);
        }
    }
    out.extend_from_slice(b">\n");
    out
}

/// The recipient address `local@domain`.
pub fn recipient(local: &[u8], domain: &[u8]) -> Vec<u8> {
    [local, b"@", domain].concat()
}

/// `Delivered-To: local@domain` and LF (control characters become `_`).
pub fn delivered_to_line(local: &[u8], domain: &[u8]) -> Vec<u8> {
    let mut out = b"Delivered-To: ".to_vec();
    out.extend_from_slice(&sanitize(&recipient(local, domain)));
    out.push(b'\n');
    out
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `secs` in `ctime` form, in UTC: `Thu Nov 24 18:22:48 1986`.
pub fn ctime(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = tern_date::civil_from_days(days);
    format!(
        "{} {} {d:2} {:02}:{:02}:{:02} {y}",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// The mbox separator `From <sender> <ctime>` and LF: an empty sender is
/// `MAILER-DAEMON`; white space and control characters in the sender
/// become `-`.
pub fn from_line(sender: &[u8], secs: i64) -> Vec<u8> {
    let mut out = b"From ".to_vec();
    if sender.is_empty() {
        out.extend_from_slice(b"MAILER-DAEMON");
    } else {
        out.extend(
            sender
                .iter()
                .map(|&b| if b <= b' ' || b == 0x7f { b'-' } else { b }),
        );
    }
    out.push(b' ');
    out.extend_from_slice(ctime(secs).as_bytes());
    out.push(b'\n');
    out
}

/// Longest header line examined by [`has_delivered_to`]; longer lines are
/// skipped (they cannot be our line, which is bounded by the argument
/// limits).
const MAX_SCAN_LINE: usize = 4096;

/// True when the message header (up to the first empty line) has a
/// `Delivered-To:` line naming `address` (qmail's loop check). The field
/// name and the address are compared ignoring ASCII case, and white space
/// around the address and a CR before the LF are ignored: a loop that
/// went through a case change is still a loop.
///
/// # Errors
/// Reading the message failed.
pub fn has_delivered_to(message: &Message, address: &[u8]) -> io::Result<bool> {
    let want = sanitize(address);
    let mut reader = io::BufReader::with_capacity(16 * 1024, message.reader());
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let (complete, too_long) = read_line(&mut reader, &mut line)?;
        if !complete && line.is_empty() {
            return Ok(false);
        }
        let text = line.strip_suffix(b"\r").unwrap_or(&line);
        if text.is_empty() && !too_long {
            return Ok(false);
        }
        if !too_long && matches_delivered_to(text, &want) {
            return Ok(true);
        }
        if !complete {
            return Ok(false);
        }
    }
}

/// Reads one line (without its LF) into `line`, keeping at most
/// [`MAX_SCAN_LINE`] bytes. Returns (ended with LF, was cut).
fn read_line(reader: &mut impl io::BufRead, line: &mut Vec<u8>) -> io::Result<(bool, bool)> {
    let mut too_long = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok((false, too_long));
        }
        let (chunk, used, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = MAX_SCAN_LINE.saturating_sub(line.len());
        if chunk.len() > room {
            too_long = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if done {
            return Ok((true, too_long));
        }
    }
}

fn matches_delivered_to(line: &[u8], want: &[u8]) -> bool {
    const NAME: &[u8] = b"delivered-to:";
    if line.len() < NAME.len() || !line[..NAME.len()].eq_ignore_ascii_case(NAME) {
        return false;
    }
    // Both sides trimmed: an address with white space at its ends (from
    // an untrusted local part) must still match its own line.
    let value = line[NAME.len()..].trim_ascii();
    value.eq_ignore_ascii_case(want.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::message;

    #[test]
    fn loop_detection() {
        let addr = b"joe@example.org";
        let cases: &[(&[u8], bool)] = &[
            (b"", false),
            (b"Subject: x\n\nbody\n", false),
            (b"Delivered-To: joe@example.org\n\nbody\n", true),
            (b"Subject: x\nDelivered-To: joe@example.org\n\n", true),
            (b"delivered-to:   JOE@Example.org  \r\n\r\n", true),
            (b"Delivered-To: joe@example.org", true),
            (b"Delivered-To: joe@example.org.uk\n\n", false),
            (b"Delivered-To: xjoe@example.org\n\n", false),
            (b"X-Delivered-To: joe@example.org\n\n", false),
            // Only the header counts.
            (b"Subject: x\n\nDelivered-To: joe@example.org\n", false),
            (b"Subject: x\r\n\r\nDelivered-To: joe@example.org\n", false),
        ];
        for (text, want) in cases {
            let m = message(text);
            assert_eq!(
                has_delivered_to(&m, addr).unwrap(),
                *want,
                "{:?}",
                text.escape_ascii().to_string()
            );
        }
        // A long header line is skipped, not taken as the end of the header.
        let mut long = b"X-Long: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_SCAN_LINE * 3));
        long.extend_from_slice(b"\nDelivered-To: joe@example.org\n\n");
        assert!(has_delivered_to(&message(&long), addr).unwrap());
        // Our own line, with an LF in the address, still matches itself.
        let line = delivered_to_line(b"a\nb", b"x");
        assert_eq!(line, b"Delivered-To: a_b@x\n");
        assert!(has_delivered_to(&message(&line), b"a\nb@x").unwrap());
        // White space at the ends of the address (found by fuzzing).
        let line = delivered_to_line(b" ", b"x ");
        assert!(has_delivered_to(&message(&line), b" @x ").unwrap());
    }

    #[test]
    fn added_lines() {
        assert_eq!(return_path_line(b""), b"Return-Path: <>\n");
        assert_eq!(
            return_path_line(b"joe@example.org"),
            b"Return-Path: <joe@example.org>\n"
        );
        assert_eq!(
            return_path_line(b"john smith@example.org"),
            b"Return-Path: <\"john smith\"@example.org>\n"
        );
        assert_eq!(
            return_path_line(b"a\"b\\c@x"),
            b"Return-Path: <\"a\\\"b\\\\c\"@x>\n"
        );
        assert_eq!(return_path_line(b"a..b@x"), b"Return-Path: <\"a..b\"@x>\n");
        assert_eq!(
            return_path_line(b"evil\r\nBcc: x@y"),
            b"Return-Path: <\"evil__Bcc: x\"@y>\n"
        );
        assert_eq!(return_path_line(b"#@[]"), b"Return-Path: <#@[]>\n");
        assert_eq!(
            delivered_to_line(b"joe-list", b"example.org"),
            b"Delivered-To: joe-list@example.org\n"
        );
        assert_eq!(ctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(ctime(1_795_770_984), "Fri Nov 27 09:16:24 2026");
        assert_eq!(
            from_line(b"", 0),
            b"From MAILER-DAEMON Thu Jan  1 00:00:00 1970\n"
        );
        assert_eq!(
            from_line(b"a b\tc\nd@x", 0),
            b"From a-b-c-d@x Thu Jan  1 00:00:00 1970\n"
        );
    }

    #[test]
    fn message_window() {
        let mut f = memory_file("t", false).unwrap();
        f.write_all(b"HEADERhello\n").unwrap();
        f.seek(SeekFrom::Start(6)).unwrap();
        let m = Message::from_current_offset(f).unwrap();
        assert_eq!(m.len(), 6);
        let mut a = Vec::new();
        m.copy_to(&mut a).unwrap();
        let mut b = Vec::new();
        m.reader().read_to_end(&mut b).unwrap();
        assert_eq!(
            (a.as_slice(), b.as_slice()),
            (&b"hello\n"[..], &b"hello\n"[..])
        );
        let mut sealed = m.sealed_copy().unwrap();
        let mut c = Vec::new();
        sealed.read_to_end(&mut c).unwrap();
        assert_eq!(c, b"hello\n");
        assert!(sealed.write_all(b"x").is_err(), "the copy is sealed");
    }

    #[test]
    fn pipe_is_copied() {
        let (r, mut w) = io::pipe().unwrap();
        w.write_all(b"via a pipe\n").unwrap();
        drop(w);
        let m = Message::from_current_offset(File::from(std::os::fd::OwnedFd::from(r))).unwrap();
        let mut out = Vec::new();
        m.copy_to(&mut out).unwrap();
        assert_eq!(out, b"via a pipe\n");
    }
}
