//! BDAT (RFC 3030): the message arrives in chunks of announced sizes, with
//! commands in between, so it cannot be read inside one call. A thread
//! runs `QueueClient::submit` and writes what it receives on a bounded
//! channel; the session loop sends decoded chunks, then `Commit` (queue
//! it) or `Abort` (the writer fails, so tern-queue queues nothing).

use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use tern_smtp::{DataDecoder, DataLimits};
use tern_spool::{Envelope, QueueClient};

use crate::complete::{Completer, Completion};
use crate::conn::{Conn, ConnError};

/// Decoded chunks in flight to the writer thread (backpressure: the
/// session reads no faster than tern-queue takes the message).
const IN_FLIGHT: usize = 4;

enum Msg {
    Data(Vec<u8>),
    Commit,
}

/// Why the queue did not take a message: temporary?, and the reason.
pub(crate) struct QueueFail {
    pub(crate) temporary: bool,
    pub(crate) text: String,
    /// Submission mode refused the message: its header was over
    /// [`crate::complete::MAX_HEADER`] (permanent, not the queue's fault).
    pub(crate) header_too_big: bool,
}

/// One message being received with BDAT.
pub(crate) struct Stream {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<Result<(), QueueFail>>>,
    /// The chunked decoder for this message.
    pub(crate) decoder: DataDecoder,
    /// The transaction's id (the Received line's, the reply's `qp`).
    pub(crate) qp: String,
}

/// Copies the message from `rx` to `w` until `Commit`.
fn copy(rx: Receiver<Msg>, w: &mut dyn Write) -> std::io::Result<()> {
    for m in rx {
        match m {
            Msg::Data(b) => w.write_all(&b)?,
            Msg::Commit => return Ok(()),
        }
    }
    Err(std::io::Error::other("message abandoned"))
}

/// Writes the message to `w`, completing its header when `fields`;
/// `too_big` tells whether that header was over the limit.
fn writer(
    rx: Receiver<Msg>,
    w: &mut dyn Write,
    fields: Option<Completion>,
    too_big: &mut bool,
) -> std::io::Result<()> {
    let Some(f) = fields else {
        return copy(rx, w);
    };
    let mut c = Completer::new(w, f);
    let r = copy(rx, &mut c).and_then(|()| c.finish());
    *too_big = c.too_big;
    r
}

impl Stream {
    /// Starts the queue program for `envelope`; `header` is written first.
    /// With `fields` (submission mode) the message header is completed.
    pub(crate) fn start(
        client: &QueueClient,
        envelope: Envelope,
        header: Vec<u8>,
        limits: DataLimits,
        fields: Option<Completion>,
    ) -> Stream {
        let (tx, rx) = sync_channel(IN_FLIGHT);
        let client = client.clone();
        let thread = std::thread::spawn(move || {
            let mut too_big = false;
            client
                .submit(&envelope, |w| writer(rx, w, fields, &mut too_big))
                .map_err(|e| QueueFail {
                    temporary: e.is_temporary(),
                    text: e.to_string(),
                    header_too_big: too_big,
                })
        });
        let mut s = Stream {
            tx: Some(tx),
            thread: Some(thread),
            decoder: DataDecoder::chunked(limits),
            qp: String::new(),
        };
        s.send(header);
        s
    }

    /// Hands decoded text to the queue program (dropped if it has failed;
    /// its failure is reported by [`Stream::finish`]).
    pub(crate) fn send(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        if let Some(tx) = &self.tx
            && tx.send(Msg::Data(bytes)).is_err()
        {
            self.tx = None;
        }
    }

    /// Ends the message: queued when `commit` (and nothing failed), else
    /// abandoned. Returns the queue's answer.
    pub(crate) fn finish(mut self, commit: bool) -> Result<(), QueueFail> {
        self.close(commit)
    }

    fn close(&mut self, commit: bool) -> Result<(), QueueFail> {
        if let Some(tx) = self.tx.take()
            && commit
        {
            let _ = tx.send(Msg::Commit);
        }
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| {
                Err(QueueFail {
                    temporary: true,
                    text: "queue writer thread failed (#4.3.0)".into(),
                    header_too_big: false,
                })
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.close(false);
    }
}

/// Why a chunk could not be read whole.
pub(crate) enum ChunkError {
    /// End of input.
    Lost,
    /// Read deadline or read error.
    Conn(ConnError),
}

/// Reads exactly `size` octets, handing each piece to `f`.
pub(crate) fn read_exact(
    conn: &mut Conn,
    mut size: u64,
    mut f: impl FnMut(&[u8]),
) -> Result<(), ChunkError> {
    while size > 0 {
        if conn.pending().is_empty() {
            match conn.fill() {
                Ok(0) => return Err(ChunkError::Lost),
                Ok(_) => {}
                Err(e) => return Err(ChunkError::Conn(e)),
            }
        }
        let p = conn.pending();
        let n = usize::try_from(size).unwrap_or(usize::MAX).min(p.len());
        f(&p[..n]);
        conn.consume(n);
        size -= n as u64;
    }
    Ok(())
}
