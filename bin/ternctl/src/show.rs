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
fn printable(bytes: &[u8]) -> String {
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
fn age(secs: i64) -> String {
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
                    "recipients": m.recipients.iter().map(|r| json!({
                        "address": String::from_utf8_lossy(&r.address),
                        "state": r.state.to_string(),
                        "last_attempt": r.last_attempt,
                        "next_attempt": next_attempt(m, r),
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
            "{}  age {}  {} bytes  uid {}  from <{}>  {}",
            m.id,
            age(now - m.birth),
            m.size,
            m.uid,
            printable(&m.sender),
            m.stage
        );
        for r in &m.recipients {
            let _ = write!(
                out,
                "  {:<9} <{}>",
                r.state.to_string(),
                printable(&r.address)
            );
            if let Some(next) = next_attempt(m, r) {
                if let Some(t) = r.last_attempt {
                    let _ = write!(out, "  tried {} ago", age(now - t));
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
    let r = queue.repair().context("queue repair failed")?;
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
