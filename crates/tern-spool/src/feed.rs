//! The queue writer's wire protocol: how tern-smtpd hands messages to the
//! long-running writer (`tern-queue --serve`, uid ternq) over one Unix
//! stream connection that carries many messages, one after another.
//!
//! 1. The client sends [`HELLO`] once, after connecting; the writer
//!    answers [`READY`] (one byte) when it takes the connection. A writer
//!    at its connection limit closes it instead, before the client has
//!    sent anything of a message, so the client can still queue that
//!    message another way.
//! 2. Per message: any number of data frames, `D` + u32 big-endian length
//!    (1 to [`MAX_DATA`]) + that many bytes of the message (as tern-queue
//!    reads it on fd 0); then either an envelope frame, `E` + u32 length
//!    (at most [`crate::MAX_ENVELOPE`]) + the envelope (as tern-queue reads
//!    it on fd 1), after which the writer answers **one byte**, tern-queue's
//!    exit code ([`crate::QueueExit`]; 0 = queued, durable, file and name),
//!    or an abort frame `A` (the client's own input failed: the writer
//!    drops the message and answers nothing).
//! 3. The connection then carries the next message, or ends.
//!
//! The writer takes the caller's uid from the socket's peer credentials
//! (`SO_PEERCRED`), never from the bytes. Every length is bounded; a bad
//! hello, an unknown frame type, a length of 0 or over its bound, or a
//! connection that ends inside a frame is an error: the writer answers 54
//! (read error) where a message was started and closes the connection.

use std::io::{self, Read, Write};

/// The first four bytes a client sends.
pub const HELLO: [u8; 4] = *b"tqw1";
/// The writer's answer to the hello.
pub const READY: u8 = 0;
/// Largest data frame.
pub const MAX_DATA: usize = 64 * 1024;
/// The directory of the writer's socket, below `$TERN_HOME` (not in
/// `queue/`: the hardened SMTP units make `queue/` inaccessible and still
/// reach the writer).
pub const SOCKET_DIR: &str = "writer";
/// The socket's name in [`SOCKET_DIR`].
pub const SOCKET: &str = "socket";

/// `$TERN_HOME/writer/socket`.
pub fn socket_path(home: &std::path::Path) -> std::path::PathBuf {
    home.join(SOCKET_DIR).join(SOCKET)
}

/// One frame from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Message bytes.
    Data(Vec<u8>),
    /// The envelope: the message is complete.
    Envelope(Vec<u8>),
    /// Drop the message.
    Abort,
}

/// Why reading failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// The connection ended between frames (a normal end).
    #[error("connection closed")]
    Closed,
    /// The connection ended inside the hello or a frame.
    #[error("connection closed inside a frame")]
    Truncated,
    /// Not [`HELLO`].
    #[error("bad hello {0:02x?}")]
    BadHello([u8; 4]),
    /// An unknown frame type.
    #[error("unknown frame type {0:#04x}")]
    BadType(u8),
    /// A length of 0 or over the bound of its frame type.
    #[error("bad frame length {0}")]
    BadLength(u32),
    /// A read error (a timeout included).
    #[error("read: {0}")]
    Io(#[from] io::Error),
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` at end of input before the
/// first byte.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> Result<bool, FeedError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(FeedError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FeedError::Io(e)),
        }
    }
    Ok(true)
}

/// Reads the client's hello.
pub fn read_hello(r: &mut impl Read) -> Result<(), FeedError> {
    let mut h = [0u8; 4];
    if !fill(r, &mut h)? {
        return Err(FeedError::Closed);
    }
    if h != HELLO {
        return Err(FeedError::BadHello(h));
    }
    Ok(())
}

/// Reads the next frame.
pub fn read_frame(r: &mut impl Read) -> Result<Frame, FeedError> {
    let mut t = [0u8; 1];
    if !fill(r, &mut t)? {
        return Err(FeedError::Closed);
    }
    let max = match t[0] {
        b'A' => return Ok(Frame::Abort),
        b'D' => MAX_DATA,
        b'E' => crate::MAX_ENVELOPE,
        other => return Err(FeedError::BadType(other)),
    };
    let mut l = [0u8; 4];
    if !fill(r, &mut l)? {
        return Err(FeedError::Truncated);
    }
    let len = u32::from_be_bytes(l);
    if len == 0 || len as usize > max {
        return Err(FeedError::BadLength(len));
    }
    let mut bytes = vec![0u8; len as usize];
    if !fill(r, &mut bytes)? {
        return Err(FeedError::Truncated);
    }
    Ok(if t[0] == b'D' {
        Frame::Data(bytes)
    } else {
        Frame::Envelope(bytes)
    })
}

/// Writes message bytes as data frames (none for an empty slice).
pub fn write_data(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    for chunk in bytes.chunks(MAX_DATA) {
        w.write_all(b"D")?;
        w.write_all(&(chunk.len() as u32).to_be_bytes())?;
        w.write_all(chunk)?;
    }
    Ok(())
}

/// Writes the envelope frame (an empty envelope cannot be sent: it is
/// never valid).
pub fn write_envelope(w: &mut impl Write, envelope: &[u8]) -> io::Result<()> {
    if envelope.is_empty() || envelope.len() > crate::MAX_ENVELOPE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "envelope empty or too large",
        ));
    }
    w.write_all(b"E")?;
    w.write_all(&(envelope.len() as u32).to_be_bytes())?;
    w.write_all(envelope)
}

/// Writes the abort frame.
pub fn write_abort(w: &mut impl Write) -> io::Result<()> {
    w.write_all(b"A")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut b = HELLO.to_vec();
        write_data(&mut b, &vec![7u8; MAX_DATA + 10]).unwrap();
        write_envelope(&mut b, b"Fa@b\0Tc@d\0\0").unwrap();
        write_abort(&mut b).unwrap();
        let mut r = &b[..];
        read_hello(&mut r).unwrap();
        assert_eq!(read_frame(&mut r).unwrap(), Frame::Data(vec![7; MAX_DATA]));
        assert_eq!(read_frame(&mut r).unwrap(), Frame::Data(vec![7; 10]));
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Frame::Envelope(b"Fa@b\0Tc@d\0\0".to_vec())
        );
        assert_eq!(read_frame(&mut r).unwrap(), Frame::Abort);
        assert!(matches!(read_frame(&mut r), Err(FeedError::Closed)));
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(matches!(read_hello(&mut &b""[..]), Err(FeedError::Closed)));
        assert!(matches!(
            read_hello(&mut &b"tq"[..]),
            Err(FeedError::Truncated)
        ));
        assert!(matches!(
            read_hello(&mut &b"tqg1"[..]),
            Err(FeedError::BadHello(_))
        ));
        let bad: &[(&[u8], &str)] = &[
            (b"X", "type"),
            (b"D", "truncated"),
            (b"D\x00\x00", "truncated"),
            (b"D\x00\x00\x00\x00", "length"),
            (b"D\x00\x01\x00\x01", "length"),
            (b"D\x00\x00\x00\x02a", "truncated"),
            (b"E\x00\x40\x00\x01", "length"),
            (b"E\x00\x00\x00\x00", "length"),
        ];
        for (input, want) in bad {
            let e = read_frame(&mut &input[..]).expect_err("refused");
            let ok = match *want {
                "type" => matches!(e, FeedError::BadType(_)),
                "truncated" => matches!(e, FeedError::Truncated),
                _ => matches!(e, FeedError::BadLength(_)),
            };
            assert!(ok, "{input:?}: {e}");
        }
        assert!(write_envelope(&mut Vec::new(), b"").is_err());
    }
}
