//! The session loop: lines in, replies out, messages into the queue.

use std::io::Write;
use std::time::Duration;

use tern_log::Event;
use tern_smtp::received::{ReceivedFields, received};
use tern_smtp::session::Step;
use tern_smtp::{
    Action, AuthVerdict, DataDecoder, DataError, DataStatus, LineEvent, LineSplitter, Reply,
    Session,
};
use tern_spool::{Envelope, QueueClient};

use crate::authcheck::{AuthCheck, Decision, Facts, Held};
use crate::chunks::{ChunkError, Stream, read_exact};
use crate::complete::{Completer, Completion};
use crate::conn::{Conn, ConnError, Quiet};
use crate::exit::Exit;
use crate::throttle::Throttle;
use crate::worker::Link;
use crate::{PROG, Peer, Setup};

/// What a message needs to know about the connection.
struct Ctx {
    me: String,
    peer: Peer,
    /// `TLS1.3 TLS_AES_256_GCM_SHA384` once TLS is up.
    tls: Option<String>,
    /// Submission mode: complete the header (Date, Message-ID).
    submission: bool,
    /// The connection's own variables (a worker's), for the programs it
    /// runs.
    env: Vec<(String, String)>,
    /// Inbound authentication checks, when on and the client is no relay
    /// client (authenticated sessions are skipped per message).
    authcheck: Option<AuthCheck>,
}

/// The checks for the current message: on, and the client neither a
/// relay client (it has none set) nor authenticated.
fn checking<'a>(s: &'a Ctx, session: &Session) -> Option<&'a AuthCheck> {
    s.authcheck
        .as_ref()
        .filter(|_| session.auth_user().is_none())
}

/// A BDAT message held for checking.
struct HeldMsg {
    decoder: DataDecoder,
    held: std::io::Result<Held>,
    write_error: Option<std::io::Error>,
    received: Vec<u8>,
    t: i64,
    qp: String,
}

/// Checks a held message and queues or refuses it; the reply.
#[allow(clippy::too_many_arguments)]
fn finish_held(
    s: &Ctx,
    session: &Session,
    ac: &AuthCheck,
    held: Held,
    received: &[u8],
    t: i64,
    qp: &str,
    client: &QueueClient,
    via: &str,
) -> Reply {
    let facts = Facts {
        me: &s.me,
        ip: &s.peer.remote_ip,
        helo: session.helo(),
        sender: session.sender(),
    };
    let bytes = held.bytes;
    let (ar, mut message) = match crate::authcheck::decide(ac, &facts, held) {
        Decision::Refuse(r) => return r,
        Decision::Queue { ar, message } => (ar, message),
    };
    let envelope = Envelope {
        sender: session.sender().to_vec(),
        recipients: session.recipients().to_vec(),
    };
    // RFC 8601 §5: the results go on top, above our Received line.
    let queued = client.submit(&envelope, |w| {
        w.write_all(&ar)?;
        w.write_all(received)?;
        message.write_to(w)
    });
    match queued {
        Ok(()) => {
            Event::new(PROG, "queued")
                .field("qp", qp)
                .field("from", &envelope.sender)
                .num("recipients", envelope.recipients.len())
                .num("bytes", bytes)
                .field("via", via)
                .emit();
            Session::queued_reply(u64::try_from(t).unwrap_or(0), qp)
        }
        Err(e) if e.is_temporary() => Reply::new(451, "4.3.0", e.to_string()),
        Err(e) => Reply::new(554, "5.3.0", e.to_string()),
    }
}

/// Reads a message whole into memory file for checking, then checks and
/// queues or refuses it.
fn checked_message(
    s: &Ctx,
    session: &mut Session,
    conn: &mut Conn,
    client: &QueueClient,
    ac: &AuthCheck,
) -> Result<Step, Exit> {
    let (received, t, qp) = header(s, session);
    let mut decoder = DataDecoder::new(session.data_limits());
    let mut write_error = None;
    let mut held = match Held::new() {
        Ok(h) => Some(h),
        Err(e) => {
            write_error = Some(e);
            None
        }
    };
    let e = pump(
        conn,
        &mut decoder,
        held.as_mut().map(|h| h as &mut dyn Write),
        &mut write_error,
    );
    match e {
        DataEnd::End => {}
        DataEnd::Fatal => {
            let r = DataError::BareCrLf.reply();
            log_reply(b"DATA", &r);
            return Ok(session.end_data(r, true));
        }
        DataEnd::Lost => return Err(end(Exit::Lost, "end of input inside a message")),
        DataEnd::Timeout => return Err(timeout_exit(conn, &s.me)),
        DataEnd::Io(e) => return Err(end(Exit::Trouble, &format!("read error: {e}"))),
    }
    let reply = match (decoder.result(), write_error, held) {
        (Err(e), _, _) => e.reply(),
        (Ok(()), Some(e), _) => held_trouble(e),
        (Ok(()), None, None) => held_trouble(std::io::Error::other("no memory file")),
        (Ok(()), None, Some(h)) => {
            finish_held(s, session, ac, h, &received, t, &qp, client, "DATA")
        }
    };
    log_reply(b"DATA", &reply);
    Ok(session.end_data(reply, false))
}

fn held_trouble(e: std::io::Error) -> Reply {
    Event::new(PROG, "authcheck_trouble")
        .field(
            "reason",
            format!("cannot hold the message for checking: {e}"),
        )
        .emit();
    Reply::new(451, "4.3.0", "cannot hold the message for checking")
}

/// How serving a connection ended.
pub(crate) enum Outcome {
    /// The connection is over.
    Closed(Exit),
    /// A worker's client went quiet between commands: the connection goes
    /// back to the listener with this session state.
    Parked(tern_ipc::handoff::Park),
}

/// The queue for a connection: `QMAILQUEUE` (a rule may set it per client,
/// as with tcpserver), else the queue gate at `TERN_QUEUE_SOCKET`, else the
/// queue writer, else (when it cannot be reached) the instance's
/// tern-queue (`QueueClient::for_smtpd`).
pub(crate) fn queue_client(s: &Setup) -> QueueClient {
    let var = |name: &str| s.vars.get(name);
    QueueClient::for_smtpd(s.home.root(), &var)
}

/// The fields a submitted message gets when its header lacks them.
fn completion(s: &Ctx, t: i64) -> Option<Completion> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    s.submission.then(|| Completion {
        date: tern_date::rfc5322(t),
        message_id: format!(
            "<{}.{}.{}@{}>",
            tern_date::compact(t),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            s.me
        ),
    })
}

/// Largest decoded chunk handed to the queue at once.
const OUT_CHUNK: usize = 16 * 1024;

/// How reading a message ended.
enum DataEnd {
    /// CRLF . CRLF read; the decoder says whether the message is good.
    End,
    /// Bare CR or LF.
    Fatal,
    /// End of input inside the message.
    Lost,
    /// Deadline passed.
    Timeout,
    /// Read error.
    Io(std::io::Error),
}

fn end(exit: Exit, reason: &str) -> Exit {
    Event::new(PROG, "end")
        .field("exit", exit.name())
        .field("reason", reason)
        .emit();
    exit
}

/// How long the last reply (421) may take to write: a client that stopped
/// reading must not hold the process for another full timeout.
const LAST_WORDS: Duration = Duration::from_secs(5);

fn timeout_exit(conn: &mut Conn, me: &str) -> Exit {
    conn.set_timeout(LAST_WORDS);
    conn.send(&Reply::new(421, "4.4.2", format!("{me} timeout, closing connection")).to_bytes());
    let _ = conn.flush();
    end(Exit::Timeout, "timeout")
}

fn conn_error(conn: &mut Conn, me: &str, e: ConnError) -> Exit {
    match e {
        ConnError::Timeout => timeout_exit(conn, me),
        ConnError::Io(e) => end(Exit::Trouble, &format!("connection error: {e}")),
        ConnError::Tls(e) => end(Exit::Tls, &format!("TLS error: {e}")),
    }
}

fn log_reply(verb: &[u8], reply: &Reply) {
    if reply.is_failure() {
        Event::new(PROG, "refused")
            .field("command", verb)
            .num("code", reply.code)
            .field("reply", reply.lines.first().map_or("", String::as_str))
            .emit();
    }
}

/// Sends a step's reply after its tarpit delay.
fn send_step(conn: &mut Conn, step: &Step) -> Result<(), ConnError> {
    if step.delay_ms > 0 {
        conn.flush()?;
        std::thread::sleep(Duration::from_millis(step.delay_ms));
    }
    if let Some(r) = step.action.reply() {
        conn.send(&r.to_bytes());
    }
    Ok(())
}

/// Reads message bytes through `decoder` until the end of data, writing
/// decoded text to `sink` while it accepts it.
fn pump(
    conn: &mut Conn,
    decoder: &mut DataDecoder,
    mut sink: Option<&mut dyn Write>,
    write_error: &mut Option<std::io::Error>,
) -> DataEnd {
    let mut out = Vec::with_capacity(OUT_CHUNK);
    loop {
        let pending = conn.pending();
        let take = pending.len().min(OUT_CHUNK);
        let (n, status) = decoder.feed(&pending[..take], &mut out);
        conn.consume(n);
        if !out.is_empty() {
            if let Some(w) = sink.as_mut()
                && let Err(e) = w.write_all(&out)
            {
                *write_error = Some(e);
                sink = None;
            }
            out.clear();
        }
        match status {
            DataStatus::End => return DataEnd::End,
            DataStatus::Fatal => return DataEnd::Fatal,
            DataStatus::NeedMore if !conn.pending().is_empty() => continue,
            DataStatus::NeedMore => match conn.fill() {
                Ok(0) => return DataEnd::Lost,
                Ok(_) => {}
                Err(ConnError::Timeout) => return DataEnd::Timeout,
                Err(ConnError::Io(e)) => return DataEnd::Io(e),
                Err(ConnError::Tls(e)) => return DataEnd::Io(std::io::Error::other(e)),
            },
        }
    }
}

fn now() -> i64 {
    tern_date::now()
}

/// Reads and queues one message. Returns the step to take, or the exit.
fn message(
    s: &Ctx,
    session: &mut Session,
    conn: &mut Conn,
    client: &QueueClient,
) -> Result<Step, Exit> {
    if let Some(ac) = checking(s, session) {
        return checked_message(s, session, conn, client, ac);
    }
    let envelope = Envelope {
        sender: session.sender().to_vec(),
        recipients: session.recipients().to_vec(),
    };
    let (header, t, qp) = header(s, session);
    let mut decoder = DataDecoder::new(session.data_limits());
    let mut data_end = None;
    let mut write_error = None;
    let fields = completion(s, t);
    let mut header_too_big = false;
    let queued = client.submit(&envelope, |w| {
        let mut completer: Option<Completer> = None;
        let w: &mut dyn Write = match fields {
            Some(f) => completer.insert(Completer::new(w, f)),
            None => w,
        };
        let mut sink = Some(w);
        if let Err(e) = sink.as_mut().expect("set").write_all(&header) {
            write_error = Some(e);
            sink = None;
        }
        let e = pump(
            conn,
            &mut decoder,
            sink.map(|w| w as &mut dyn Write),
            &mut write_error,
        );
        let good = matches!(e, DataEnd::End) && decoder.result().is_ok();
        data_end = Some(e);
        if let Some(c) = completer.as_mut() {
            header_too_big = c.too_big;
            if good
                && write_error.is_none()
                && let Err(e) = c.finish()
            {
                write_error = Some(e);
            }
        }
        match (&write_error, good) {
            (None, true) => Ok(()),
            (Some(e), _) => Err(std::io::Error::new(e.kind(), e.to_string())),
            (None, false) => Err(std::io::Error::other("message refused")),
        }
    });
    // The queue program could not even start: read the message anyway.
    let data_end = match data_end {
        Some(e) => e,
        None => pump(conn, &mut decoder, None, &mut write_error),
    };
    match data_end {
        DataEnd::End => {}
        DataEnd::Fatal => {
            let r = DataError::BareCrLf.reply();
            log_reply(b"DATA", &r);
            return Ok(session.end_data(r, true));
        }
        DataEnd::Lost => return Err(end(Exit::Lost, "end of input inside a message")),
        DataEnd::Timeout => return Err(timeout_exit(conn, &s.me)),
        DataEnd::Io(e) => return Err(end(Exit::Trouble, &format!("read error: {e}"))),
    }
    let reply = match (decoder.result(), queued) {
        (Err(e), _) => e.reply(),
        (Ok(()), _) if header_too_big => crate::complete::too_big_reply(),
        (Ok(()), Ok(())) => {
            Event::new(PROG, "queued")
                .field("qp", qp.as_str())
                .field("from", &envelope.sender)
                .num("recipients", envelope.recipients.len())
                .num("bytes", decoder.bytes())
                .field("tls", if s.tls.is_some() { "yes" } else { "no" })
                .emit();
            Session::queued_reply(u64::try_from(t).unwrap_or(0), &qp)
        }
        (Ok(()), Err(e)) if e.is_temporary() => Reply::new(451, "4.3.0", e.to_string()),
        (Ok(()), Err(e)) => Reply::new(554, "5.3.0", e.to_string()),
    };
    log_reply(b"DATA", &reply);
    Ok(session.end_data(reply, false))
}

fn chunk_error(conn: &mut Conn, me: &str, e: ChunkError) -> Exit {
    match e {
        ChunkError::Lost => end(Exit::Lost, "end of input inside a BDAT chunk"),
        ChunkError::Conn(e) => conn_error(conn, me, e),
    }
}

/// A new transaction id: the pid for a process's first message (qmail's
/// `qp`), then `PID.N`, so that the many messages one process queues (a
/// long connection, a reused worker) can be told apart in the logs.
fn next_qp() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    match SEQ.fetch_add(1, Ordering::Relaxed) {
        0 => std::process::id().to_string(),
        n => format!("{}.{n}", std::process::id()),
    }
}

/// The Received line for the current transaction, with its id and time.
fn header(s: &Ctx, session: &Session) -> (Vec<u8>, i64, String) {
    let t = now();
    let qp = next_qp();
    let h = received(&ReceivedFields {
        helo: session.helo(),
        remote_host: &s.peer.remote_host,
        remote_ip: &s.peer.remote_ip,
        me: &s.me,
        protocol: session.protocol(),
        tls: s.tls.as_deref().unwrap_or(""),
        id: &qp,
        date: &tern_date::rfc5322(t),
    });
    (h, t, qp)
}

/// One accepted BDAT chunk: read it into the message (started on the first
/// chunk); after the last, queue the message or refuse it.
#[allow(clippy::too_many_arguments)]
fn chunk(
    s: &Ctx,
    session: &mut Session,
    conn: &mut Conn,
    client: &QueueClient,
    stream: &mut Option<Stream>,
    held: &mut Option<HeldMsg>,
    size: u64,
    last: bool,
) -> Result<Step, Exit> {
    if let Some(ac) = checking(s, session) {
        return held_chunk(s, session, conn, client, held, ac, size, last);
    }
    let st = stream.get_or_insert_with(|| {
        let envelope = Envelope {
            sender: session.sender().to_vec(),
            recipients: session.recipients().to_vec(),
        };
        let (h, t, qp) = header(s, session);
        let mut st = Stream::start(client, envelope, h, session.data_limits(), completion(s, t));
        st.qp = qp;
        st
    });
    let mut out = Vec::new();
    let read = read_exact(conn, size, |piece| {
        st.decoder.feed(piece, &mut out);
        st.send(std::mem::take(&mut out));
    });
    if let Err(e) = read {
        *stream = None;
        return Err(chunk_error(conn, &s.me, e));
    }
    if st.decoder.error() == Some(DataError::BareCrLf) {
        // The sizes are exact, so the session can go on.
        let r = DataError::BareCrLf.reply();
        log_reply(b"BDAT", &r);
        if let Some(st) = stream.take() {
            let _ = st.finish(false);
        }
        return Ok(session.end_data(r, false));
    }
    if !last {
        return Ok(session.chunk_received(size));
    }
    let status = st.decoder.finish(&mut out);
    st.send(out);
    let result = st.decoder.result();
    let bytes = st.decoder.bytes();
    let mut st = stream.take().expect("started above");
    let good = status == DataStatus::End && result.is_ok();
    let qp = std::mem::take(&mut st.qp);
    let queued = st.finish(good);
    let reply = match (result, queued) {
        (Err(e), _) => e.reply(),
        (Ok(()), Ok(())) => {
            Event::new(PROG, "queued")
                .field("qp", qp.as_str())
                .field("from", session.sender())
                .num("recipients", session.recipients().len())
                .num("bytes", bytes)
                .field("via", "BDAT")
                .field("tls", if s.tls.is_some() { "yes" } else { "no" })
                .emit();
            Session::queued_reply(u64::try_from(now()).unwrap_or(0), &qp)
        }
        (Ok(()), Err(f)) if f.header_too_big => crate::complete::too_big_reply(),
        (Ok(()), Err(f)) if f.temporary => Reply::new(451, "4.3.0", f.text),
        (Ok(()), Err(f)) => Reply::new(554, "5.3.0", f.text),
    };
    log_reply(b"BDAT", &reply);
    Ok(session.end_data(reply, false))
}

/// One BDAT chunk of a message held for checking.
#[allow(clippy::too_many_arguments)]
fn held_chunk(
    s: &Ctx,
    session: &mut Session,
    conn: &mut Conn,
    client: &QueueClient,
    held: &mut Option<HeldMsg>,
    ac: &AuthCheck,
    size: u64,
    last: bool,
) -> Result<Step, Exit> {
    let hm = held.get_or_insert_with(|| {
        let (received, t, qp) = header(s, session);
        HeldMsg {
            decoder: DataDecoder::new(session.data_limits()),
            held: Held::new(),
            write_error: None,
            received,
            t,
            qp,
        }
    });
    let mut out = Vec::new();
    let put = |hm: &mut HeldMsg, out: &mut Vec<u8>| {
        if let Ok(h) = hm.held.as_mut()
            && hm.write_error.is_none()
            && let Err(e) = h.write_all(out)
        {
            hm.write_error = Some(e);
        }
        out.clear();
    };
    let read = read_exact(conn, size, |piece| {
        hm.decoder.feed(piece, &mut out);
        put(hm, &mut out);
    });
    if let Err(e) = read {
        *held = None;
        return Err(chunk_error(conn, &s.me, e));
    }
    if hm.decoder.error() == Some(DataError::BareCrLf) {
        let r = DataError::BareCrLf.reply();
        log_reply(b"BDAT", &r);
        *held = None;
        return Ok(session.end_data(r, false));
    }
    if !last {
        return Ok(session.chunk_received(size));
    }
    let status = hm.decoder.finish(&mut out);
    put(hm, &mut out);
    let hm = held.take().expect("started above");
    let reply = match (
        status == DataStatus::End,
        hm.decoder.result(),
        hm.write_error,
        hm.held,
    ) {
        (_, Err(e), _, _) => e.reply(),
        (false, Ok(()), _, _) => DataError::BareCrLf.reply(),
        (true, Ok(()), Some(e), _) | (true, Ok(()), None, Err(e)) => held_trouble(e),
        (true, Ok(()), None, Ok(h)) => finish_held(
            s,
            session,
            ac,
            h,
            &hm.received,
            hm.t,
            &hm.qp,
            client,
            "BDAT",
        ),
    };
    log_reply(b"BDAT", &reply);
    Ok(session.end_data(reply, false))
}

/// Runs the TLS handshake (after the `220` to STARTTLS, or before the
/// greeting) and resets the session.
fn handshake(
    s: &mut Ctx,
    conn: &mut Conn,
    session: &mut Session,
    config: &std::sync::Arc<rustls::ServerConfig>,
) -> Result<(), Exit> {
    let discarded = match conn.start_tls(config.clone()) {
        Ok(n) => n,
        Err(ConnError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(end(Exit::Lost, "end of input during the TLS handshake"));
        }
        // No 421: plain text in the middle of a handshake helps nobody.
        Err(ConnError::Timeout) => {
            return Err(end(Exit::Timeout, "timeout during the TLS handshake"));
        }
        Err(e) => return Err(conn_error(conn, &s.me, e)),
    };
    session.tls_started();
    let desc = conn.tls().map(crate::tls::describe).unwrap_or_default();
    let mut ev = Event::new(PROG, "tls").field("tls", desc.as_str());
    if discarded > 0 {
        // The client pipelined plain text after STARTTLS (CVE-2011-0411):
        // it was thrown away, never read as commands.
        ev = ev.num("discarded", discarded);
    }
    ev.emit();
    s.tls = Some(desc);
    Ok(())
}

/// Runs the checkpassword program for `c` and ends the AUTH exchange:
/// refused (454) without a check when the client's address has failed too
/// often lately, or when no verification slot frees up in time (see
/// [`crate::throttle`]).
fn authenticate(
    s: &Ctx,
    session: &mut Session,
    c: &tern_smtp::auth::Credentials,
    checkpassword: &[String],
    throttle: &Throttle,
    timeout: Duration,
) -> Step {
    let key = crate::throttle::key(&s.peer.remote_ip);
    let unavailable = |e: std::io::Error| {
        // The state directory is unusable: check without the throttle
        // rather than refuse every login (logged each time).
        Event::new(PROG, "auth_throttle_unavailable")
            .field("reason", e.to_string().as_str())
            .emit();
    };
    let clock = || u64::try_from(now()).unwrap_or(0);
    // Asked before waiting for a slot (a refused address takes none) and
    // again once one is held: failures recorded meanwhile by this
    // address's other connections count.
    let refused = || match throttle.refused(&key, clock()) {
        Ok(Some(failures)) => {
            Event::new(PROG, "auth_throttled")
                .field("ip", key.as_str())
                .num("failures", u64::from(failures))
                .emit();
            true
        }
        Ok(None) => false,
        Err(e) => {
            unavailable(e);
            false
        }
    };
    if refused() {
        return session.auth_result(&c.login, AuthVerdict::TempFail);
    }
    let slot = match throttle.slot(crate::throttle::SLOT_WAIT) {
        Ok(Some(slot)) => Some(slot),
        Ok(None) => {
            Event::new(PROG, "auth_busy")
                .field("ip", key.as_str())
                .emit();
            return session.auth_result(&c.login, AuthVerdict::TempFail);
        }
        Err(e) => {
            unavailable(e);
            None
        }
    };
    if slot.is_some() && refused() {
        return session.auth_result(&c.login, AuthVerdict::TempFail);
    }
    let timestamp = format!("<{}.{}@{}>", std::process::id(), now(), s.me);
    let verdict = match crate::auth::check(checkpassword, c, &timestamp, timeout, &s.env) {
        Ok(v) => v,
        Err(reason) => {
            Event::new(PROG, "auth_trouble")
                .field("reason", reason.as_str())
                .emit();
            AuthVerdict::TempFail
        }
    };
    drop(slot);
    let result = match verdict {
        AuthVerdict::Accepted => "ok",
        AuthVerdict::Rejected => "fail",
        AuthVerdict::TempFail => "temp",
    };
    let mut ev = Event::new(PROG, "auth")
        .field("user", &c.login)
        .field("result", result);
    if verdict != AuthVerdict::TempFail {
        match throttle.record(&key, verdict == AuthVerdict::Accepted, clock()) {
            Ok(n) if n > 0 => ev = ev.num("failures", u64::from(n)),
            Ok(_) => {}
            Err(e) => unavailable(e),
        }
    }
    ev.emit();
    session.auth_result(&c.login, verdict)
}

/// Serves one connection (for a worker, until it ends or parks).
pub(crate) fn run(s: Setup, client: &QueueClient, worker: Option<Link<'_>>) -> Outcome {
    let mut parked = None;
    let exit = serve(s, client, worker, &mut parked);
    match parked {
        Some(p) => Outcome::Parked(p),
        None => Outcome::Closed(exit),
    }
}

/// Serves the connection; a worker's parked connection leaves its state in
/// `parked` (the exit code is then meaningless).
fn serve(
    s: Setup,
    client: &QueueClient,
    mut worker: Option<Link<'_>>,
    parked: &mut Option<tern_ipc::handoff::Park>,
) -> Exit {
    let Setup {
        home,
        me,
        policy,
        mut checks,
        timeout,
        peer,
        tls,
        implicit_tls,
        checkpassword,
        throttle,
        vars,
        authcheck,
    } = s;
    let mut conn = Conn::new(timeout);
    let relay = if policy.relayclient.is_some() {
        "yes"
    } else {
        "no"
    };
    let submission = policy.submission;
    let resumed = worker.as_mut().and_then(|w| w.resume.take());
    let resuming = resumed.is_some();
    let mut session = match resumed {
        None => Session::new(policy),
        Some(saved) => match Session::resume(policy, &saved) {
            Ok(session) => session,
            Err(e) => return end(Exit::Trouble, &e.to_string()),
        },
    };
    let mut s = Ctx {
        me,
        peer,
        tls: None,
        submission,
        env: vars.pairs().to_vec(),
        authcheck: authcheck.filter(|_| relay == "no"),
    };
    let _ = home;
    // A resumed connection was greeted (and logged) by the worker that
    // parked it; it never uses TLS (a TLS session is not parked).
    if !resuming {
        Event::new(PROG, "connect")
            .field("remote_ip", &s.peer.remote_ip)
            .field("remote_host", &s.peer.remote_host)
            .field("remote_info", &s.peer.remote_info)
            .field("local_ip", &s.peer.local_ip)
            .field("local_port", &s.peer.local_port)
            .field("relayclient", relay)
            .emit();
        if implicit_tls
            && let Some(config) = &tls
            && let Err(e) = handshake(&mut s, &mut conn, &mut session, config)
        {
            return e;
        }
        conn.send(&session.greeting().to_bytes());
    }
    let mut splitter = LineSplitter::new();
    let mut stream: Option<Stream> = None;
    let mut held: Option<HeldMsg> = None;
    loop {
        let (n, event) = splitter.feed(conn.pending());
        conn.consume(n);
        let Some(event) = event else {
            if let Some(w) = worker.as_mut()
                && stream.is_none()
                && held.is_none()
                && !splitter.is_mid_line()
                && !session.auth_pending()
            {
                if conn.tls().is_none() && session.can_park() && w.listening() {
                    let quiet = match conn.quiet(w.delay(), w.ctl) {
                        Ok(Quiet::Input) => false,
                        Ok(Quiet::Silent) => true,
                        Ok(Quiet::Other) => w.order(),
                        Err(e) => return conn_error(&mut conn, &s.me, e),
                    };
                    if quiet && let Some(p) = w.park(&session, &s.me, timeout) {
                        *parked = Some(p);
                        return Exit::Done;
                    }
                } else if conn.tls().is_some() && w.listening() {
                    // A TLS session keeps its worker; when the listener is
                    // short of workers its silence gets a shorter limit.
                    let mut limit = timeout;
                    loop {
                        match conn.quiet(limit, w.ctl) {
                            Ok(Quiet::Input) => break,
                            Ok(Quiet::Silent) => return timeout_exit(&mut conn, &s.me),
                            Ok(Quiet::Other) if w.order() => {
                                limit = limit.min(w.stress_timeout());
                            }
                            Ok(Quiet::Other) => break,
                            Err(e) => return conn_error(&mut conn, &s.me, e),
                        }
                    }
                }
            }
            match conn.fill() {
                Ok(0) if splitter.is_mid_line() => {
                    return end(Exit::Lost, "end of input inside a command");
                }
                Ok(0) => return end(Exit::Done, "end of input"),
                Ok(_) => continue,
                Err(e) => return conn_error(&mut conn, &s.me, e),
            }
        };
        let verb: Vec<u8> = match &event {
            // A credential: never logged.
            _ if session.auth_pending() => b"(auth)".to_vec(),
            LineEvent::Line(l) => l
                .iter()
                .take_while(|&&b| b != b' ')
                .take(16)
                .copied()
                .collect(),
            LineEvent::Error(_) => b"(bad line)".to_vec(),
        };
        let mut step = session.handle(event, &mut checks);
        if let Some(r) = step.action.reply() {
            log_reply(&verb, r);
        }
        match step.action {
            Action::StartData(_) => {
                if let Err(e) = send_step(&mut conn, &step) {
                    return conn_error(&mut conn, &s.me, e);
                }
                step = match message(&s, &mut session, &mut conn, client) {
                    Ok(step) => step,
                    Err(exit) => return exit,
                };
            }
            Action::Chunk { size, last } => {
                step = match chunk(
                    &s,
                    &mut session,
                    &mut conn,
                    client,
                    &mut stream,
                    &mut held,
                    size,
                    last,
                ) {
                    Ok(step) => step,
                    Err(exit) => return exit,
                };
            }
            Action::Auth(ref c) => {
                step = authenticate(&s, &mut session, c, &checkpassword, &throttle, timeout);
                if let Some(r) = step.action.reply() {
                    log_reply(b"AUTH", r);
                }
            }
            Action::Discard { size, .. } => {
                if let Err(e) = read_exact(&mut conn, size, |_| {}) {
                    return chunk_error(&mut conn, &s.me, e);
                }
            }
            _ => {}
        }
        if held.is_some() && !session.chunking() {
            held = None;
        }
        if stream.is_some() && !session.chunking() {
            // RSET, HELO, EHLO or an error ended the BDAT transaction.
            if let Some(st) = stream.take() {
                let _ = st.finish(false);
            }
        }
        if let Err(e) = send_step(&mut conn, &step) {
            return conn_error(&mut conn, &s.me, e);
        }
        if let (Action::StartTls(_), Some(config)) = (&step.action, &tls) {
            if let Err(e) = handshake(&mut s, &mut conn, &mut session, config) {
                return e;
            }
            // Nothing said in plain text counts: a fresh line splitter.
            splitter = LineSplitter::new();
            continue;
        }
        if let Action::Close(r) = &step.action {
            let _ = conn.flush();
            conn.close_notify();
            return if r.code == 221 {
                end(Exit::Done, "quit")
            } else {
                end(Exit::Refused, r.lines.first().map_or("", String::as_str))
            };
        }
    }
}
