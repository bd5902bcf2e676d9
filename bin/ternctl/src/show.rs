//! `ternctl check`, `queue` and `repair`: reports on stdout.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::{Context, Result};
use serde_json::json;
use tern_control::{FileReport, Home, Status};
use tern_spool::Queue;

use crate::Exit;

/// Writes `text` to stdout in one go. A closed pipe (`ternctl queue | head`)
/// is not an error worth reporting.
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Untrusted bytes made safe for a terminal: lossy UTF-8, with control
/// characters and backslashes written as `\xHH`.
pub fn printable(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for c in String::from_utf8_lossy(bytes).chars() {
        if c.is_control() || c == '\\' {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(s, "\\x{b:02x}");
            }
        } else {
            s.push(c);
        }
    }
    s
}

/// `3m12s`-style age.
pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn report_lines(out: &mut String, r: &FileReport) {
    let block = |out: &mut String, tag: &str, lines: &[String]| match lines {
        [] => {
            let _ = writeln!(out, "{}: (none){tag}", r.name);
        }
        [one] => {
            let _ = writeln!(out, "{}: {one}{tag}", r.name);
        }
        many => {
            let _ = writeln!(out, "{}:{tag}", r.name);
            for l in many {
                let _ = writeln!(out, "    {l}");
            }
        }
    };
    match &r.status {
        Status::Set(lines) => block(out, "", lines),
        Status::Default(lines) => block(out, "  [default]", lines),
        Status::DependsOnBroken(other) => {
            let _ = writeln!(out, "{}: [default: {other}, which is broken]", r.name);
        }
        Status::Unknown => {
            let _ = writeln!(out, "{}: warning: not a Tern setting, ignored", r.name);
        }
        Status::Error(e) => {
            let _ = write!(out, "{}: error: ", r.name);
            if let Some(l) = e.line() {
                let _ = write!(out, "line {l}: ");
            }
            let _ = writeln!(out, "{}", e.kind());
        }
    }
    for w in &r.warnings {
        let _ = writeln!(out, "{}: warning: {w}", r.name);
    }
}

/// `ternctl check`: the report, then a summary; 1 when any file is broken.
pub fn check(home: &Home) -> Exit {
    let reports = tern_control::check(home);
    let mut out = format!("# instance {}\n", home.root().display());
    for r in &reports {
        report_lines(&mut out, r);
    }
    let (dkim, dkim_errors, dkim_warnings) = crate::dkim::check(home);
    out.push_str(&dkim);
    let errors = reports.iter().filter(|r| r.is_error()).count() + dkim_errors;
    let warnings: usize = reports
        .iter()
        .map(|r| usize::from(matches!(r.status, Status::Unknown)) + r.warnings.len())
        .sum::<usize>()
        + dkim_warnings;
    let _ = writeln!(out, "# {errors} error(s), {warnings} warning(s)");
    emit(&out);
    if errors > 0 { Exit::Failed } else { Exit::Ok }
}

/// `ternctl queue [--json] [--count]`; `dropped`: root became `terns`
/// for it.
pub fn queue(home: &Home, as_json: bool, count_only: bool, dropped: bool) -> Result<()> {
    let qdir = home.queue_dir();
    let queue = Queue::open(&qdir).with_context(|| {
        if !home.is_single_user() && !dropped && tern_sys::effective_uid() != 0 {
            // Envelopes say who writes to whom: a system instance's queue
            // is readable by root and the queue's group only.
            format!(
                "cannot open the queue {}: listing a system instance's queue needs root \
                 (sudo mailq) or membership of the group tern, because senders and \
                 recipients of everyone's mail are private",
                qdir.display()
            )
        } else {
            format!("cannot open the queue {}", qdir.display())
        }
    })?;
    if count_only {
        let n = queue.count().context("cannot read the queue")?;
        if as_json {
            emit(&format!("{}\n", json!({ "messages": n })));
        } else {
            emit(&format!("messages: {n}\n"));
        }
        return Ok(());
    }
    let scan = queue.scan().context("cannot read the queue")?;
    let mut messages = scan.messages;
    messages.sort_by_key(|m| (m.birth, m.id));
    let now = tern_date::now();
    for (path, hint) in &scan.damaged {
        eprintln!(
            "ternctl: warning: damaged queue file {}: {hint}",
            path.display()
        );
    }
    if as_json {
        let doc: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| {
                json!({
                    "id": m.id,
                    "birth": m.birth,
                    "age_seconds": (now - m.birth).max(0),
                    "size": m.size,
                    "uid": m.uid,
                    "sender": String::from_utf8_lossy(&m.sender),
                    "stage": m.stage.to_string(),
                    "held": m.held,
                    "deleted": m.deleted,
                    "recipients": m.recipients.iter().map(|r| json!({
                        "address": String::from_utf8_lossy(&r.address),
                        "state": r.state.to_string(),
                        "last_attempt": r.last_attempt,
                        "attempts": r.attempts,
                        "next_attempt": (!m.held).then(|| next_attempt(m, r)).flatten(),
                        "last_error": (!r.last_error.is_empty())
                            .then(|| String::from_utf8_lossy(&r.last_error)),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        emit(&format!("{}\n", serde_json::Value::Array(doc)));
        return Ok(());
    }
    let mut out = String::new();
    for m in &messages {
        let _ = writeln!(
            out,
            "{}  age {}  {} bytes  uid {}  from <{}>  {}{}",
            m.id,
            age(now - m.birth),
            m.size,
            m.uid,
            printable(&m.sender),
            m.stage,
            marks(m)
        );
        for r in &m.recipients {
            let _ = write!(
                out,
                "  {:<9} <{}>",
                r.state.to_string(),
                printable(&r.address)
            );
            if m.held && r.state == tern_spool::RecipientState::Pending {
                let _ = write!(out, "  held: not tried until released");
            } else if let Some(next) = next_attempt(m, r) {
                if let Some(t) = r.last_attempt {
                    let _ = write!(out, "  tried {}x, last {} ago", r.attempts, age(now - t));
                }
                if next > now {
                    let _ = write!(out, "  next in {}", age(next - now));
                } else {
                    let _ = write!(out, "  next now");
                }
            }
            out.push('\n');
            if r.state == tern_spool::RecipientState::Pending && !r.last_error.is_empty() {
                let _ = writeln!(out, "            last error: {}", printable(&r.last_error));
            }
        }
    }
    let _ = writeln!(out, "messages: {}", messages.len());
    emit(&out);
    Ok(())
}

/// `  held`, `  deleted`: what the postmaster did to a message.
fn marks(m: &tern_spool::QueuedMessage) -> &'static str {
    match (m.held, m.deleted) {
        (_, true) => "  deleted (removed without a bounce)",
        (true, false) => "  held",
        (false, false) => "",
    }
}

/// When a pending recipient is next tried (the manager's schedule, from
/// the message's birth and its last attempt); `None` when it is done or
/// the manager has not taken the message over yet (then: at once).
fn next_attempt(m: &tern_spool::QueuedMessage, r: &tern_spool::Recipient) -> Option<i64> {
    if r.state != tern_spool::RecipientState::Pending {
        return None;
    }
    let channel = r.channel?;
    Some(tern_sched::next_attempt(m.birth, r.last_attempt, channel))
}

/// `ternctl repair`.
pub fn repair(home: &Home) -> Result<()> {
    let qdir = home.queue_dir();
    let queue =
        Queue::open(&qdir).with_context(|| format!("cannot open the queue {}", qdir.display()))?;
    let bar =
        crate::progress::Progress::new(1 + 2 * u64::from(queue.layout().split), "queue repair");
    let r = queue
        .repair_with(&mut |done, _| bar.set(done, "directories checked"))
        .context("queue repair failed")?;
    drop(bar);
    let mut out = format!(
        "removed partial files: {}\nrenamed committed files: {}\ndamaged files (left alone): {}\n",
        r.removed_partial,
        r.renamed,
        r.damaged.len()
    );
    for p in &r.damaged {
        let _ = writeln!(out, "  {}", p.display());
    }
    emit(&out);
    Ok(())
}

/// One recipient as `show` prints it: address, state, last attempt, next
/// attempt, last error (or failure reason), channel.
type ShownRecipient = (
    Vec<u8>,
    String,
    Option<i64>,
    Option<i64>,
    Vec<u8>,
    Option<&'static str>,
    u32,
);

/// `ternctl show QID [--body]`: one message: envelope, each recipient's
/// state, last attempt, next attempt and last error, then its header (or
/// all of it with `body`).
pub fn show_message(home: &Home, id: u64, body: bool, as_json: bool) -> Result<()> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let qdir = home.queue_dir();
    let queue =
        Queue::open(&qdir).with_context(|| format!("cannot open the queue {}", qdir.display()))?;
    let open = match queue.open_message(id) {
        Ok(o) => o,
        Err(tern_spool::Error::NotFound(_)) => {
            return Err(crate::Usage(format!("message {id} is not in the queue")).into());
        }
        Err(e) => return Err(e).context(format!("cannot read message {id}")),
    };
    let state = tern_spool::state::read_state(&qdir).context("cannot read the journal")?;
    let known = state
        .messages
        .get(&id)
        .filter(|k| k.is_same_file(&open.header));
    let now = tern_date::now();
    let h = &open.header;
    // The message: its header only (up to the first empty line), or all of
    // it; bounded in both cases by what was stored.
    let mut text = Vec::new();
    let mut f = &open.file;
    f.seek(SeekFrom::Start(h.offset))
        .context("cannot read the message")?;
    if body {
        f.read_to_end(&mut text)
            .context("cannot read the message")?;
    } else {
        let mut r = std::io::BufReader::new(f.take(4 << 20));
        loop {
            let mut line = Vec::new();
            let n = std::io::BufRead::read_until(&mut r, b'\n', &mut line)
                .context("cannot read the message")?;
            if n == 0 || line == b"\n" || line == b"\r\n" {
                break;
            }
            text.extend_from_slice(&line);
        }
    }
    let rcpts: Vec<ShownRecipient> = match known {
        Some(k) => k
            .recipients
            .iter()
            .map(|r| {
                let (st, why) = match &r.status {
                    tern_spool::state::Status::Pending => ("pending".to_string(), Vec::new()),
                    tern_spool::state::Status::Delivered => ("delivered".to_string(), Vec::new()),
                    tern_spool::state::Status::Failed(t) => ("failed".to_string(), t.clone()),
                };
                let next = (r.status == tern_spool::state::Status::Pending && !k.held)
                    .then(|| tern_sched::next_attempt(k.birth, r.last_attempt, r.channel));
                let err = if why.is_empty() {
                    r.last_error.clone()
                } else {
                    why
                };
                let ch = match r.channel {
                    tern_spool::state::Channel::Local => "local",
                    tern_spool::state::Channel::Remote => "remote",
                };
                (
                    r.original.clone(),
                    st,
                    r.last_attempt,
                    next,
                    err,
                    Some(ch),
                    r.attempts,
                )
            })
            .collect(),
        None => h
            .envelope
            .recipients
            .iter()
            .map(|a| {
                (
                    a.clone(),
                    "pending".to_string(),
                    None,
                    Some(h.origin.time),
                    Vec::new(),
                    None,
                    0,
                )
            })
            .collect(),
    };
    let held = known.is_some_and(|k| k.held);
    let deleted = known.is_some_and(|k| k.deleted);
    if as_json {
        let doc = json!({
            "id": id,
            "birth": h.origin.time,
            "age_seconds": (now - h.origin.time).max(0),
            "size": open.file_size - h.offset,
            "uid": h.origin.uid,
            "sender": String::from_utf8_lossy(&h.envelope.sender),
            "stage": open.stage.to_string(),
            "held": held,
            "deleted": deleted,
            "recipients": rcpts.iter().map(|(a, st, last, next, err, ch, tries)| json!({
                "address": String::from_utf8_lossy(a),
                "state": st,
                "channel": ch,
                "attempts": tries,
                "last_attempt": last,
                "next_attempt": next,
                "last_error": (!err.is_empty()).then(|| String::from_utf8_lossy(err)),
            })).collect::<Vec<_>>(),
            "message": String::from_utf8_lossy(&text),
        });
        emit(&format!("{doc}\n"));
        return Ok(());
    }
    let mut out = String::new();
    let _ = writeln!(out, "id: {id}");
    let _ = writeln!(
        out,
        "arrived: {} ({} ago)",
        tern_date::rfc5322(h.origin.time),
        age(now - h.origin.time)
    );
    let _ = writeln!(out, "size: {} bytes", open.file_size - h.offset);
    let _ = writeln!(out, "injected by uid: {}", h.origin.uid);
    let _ = writeln!(out, "sender: <{}>", printable(&h.envelope.sender));
    let _ = writeln!(
        out,
        "stage: {}{}",
        open.stage,
        match (held, deleted) {
            (_, true) => ", deleted (removed without a bounce)",
            (true, false) => ", held (not tried until released)",
            _ => "",
        }
    );
    for (a, st, last, next, err, ch, tries) in &rcpts {
        let _ = write!(out, "recipient: <{}>  {st}", printable(a));
        if let Some(ch) = ch {
            let _ = write!(out, "  {ch}");
        }
        out.push('\n');
        if *tries > 0 {
            let _ = writeln!(out, "  deferred attempts: {tries}");
        }
        if let Some(t) = last {
            let _ = writeln!(
                out,
                "  last attempt: {} ({} ago)",
                tern_date::rfc5322(*t),
                age(now - t)
            );
        }
        if let Some(t) = next {
            if *t > now {
                let _ = writeln!(
                    out,
                    "  next attempt: {} (in {})",
                    tern_date::rfc5322(*t),
                    age(t - now)
                );
            } else {
                let _ = writeln!(out, "  next attempt: now");
            }
        }
        if !err.is_empty() {
            let label = if st == "failed" {
                "reason"
            } else {
                "last error"
            };
            let _ = writeln!(out, "  {label}: {}", printable(err));
        }
    }
    out.push('\n');
    // The message itself, made safe for a terminal line by line.
    for line in text.split_inclusive(|&b| b == b'\n') {
        let l = line.strip_suffix(b"\n").unwrap_or(line);
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        let _ = writeln!(out, "{}", printable_text(l));
    }
    emit(&out);
    Ok(())
}

/// Like [`printable`], but a tab stays a tab (message text).
fn printable_text(bytes: &[u8]) -> String {
    bytes
        .split(|&b| b == b'\t')
        .map(printable)
        .collect::<Vec<_>>()
        .join("\t")
}

/// `ternctl stats`: the metrics tern-send writes, for people.
pub fn stats(path: &std::path::Path) -> Result<()> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).with_context(|| {
        format!(
            "cannot read {} (tern-send writes it every 5 seconds while it runs)",
            path.display()
        )
    })?;
    let modified = file.metadata().and_then(|m| m.modified()).ok();
    let mut text = String::new();
    file.take(1 << 20)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = format!("# {}", path.display());
    if let Some(age_s) = modified
        .and_then(|m| std::time::SystemTime::now().duration_since(m).ok())
        .map(|d| d.as_secs() as i64)
    {
        let _ = write!(out, ", written {} ago", age(age_s));
        if age_s > 30 {
            out.push_str(" (stale: is tern-send running?)");
        }
    }
    out.push('\n');
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let help = rest.split_once(' ').map_or("", |(_, h)| h);
            let _ = writeln!(out, "\n{help}");
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}').replace('"', "")),
            None => (series, String::new()),
        };
        let label = if labels.is_empty() {
            name.to_string()
        } else {
            labels.replace(',', " ")
        };
        let _ = writeln!(out, "  {label:<40} {value}");
    }
    emit(&out);
    Ok(())
}
