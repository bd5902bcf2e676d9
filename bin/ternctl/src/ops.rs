//! `ternctl delete`, `bounce`, `hold`, `release`: the postmaster's queue
//! operations. Through the running tern-send (its control socket) when it
//! runs; else under its lock, with the same code (`tern_manager::ops`).

use std::fmt::Write as _;
use std::io::{BufRead, Write as _};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rustix::fs::{FlockOperation, Mode, OFlags};
use tern_control::{Control, Home};
use tern_ipc::control::{ControlOp, ControlReply, ControlRequest, MAX_IDS, OpResult};
use tern_manager::ops::{self, LOCK, SOCKET};
use tern_spool::state::Journal;
use tern_spool::{Queue, QueuedMessage};

use crate::Usage;
use crate::show::{age, emit, printable};

/// Which messages: ids, or a selection.
#[derive(Debug, Default)]
pub struct Selection {
    /// Explicit message ids.
    pub ids: Vec<u64>,
    /// Envelope sender equal to this (case-insensitive).
    pub from: Option<String>,
    /// Some recipient equal to this (case-insensitive).
    pub to: Option<String>,
    /// Some recipient at this domain (case-insensitive).
    pub domain: Option<String>,
    /// Older than this many seconds.
    pub older_than: Option<i64>,
    /// Every message.
    pub all: bool,
}

/// `30s`, `10m`, `2h`, `3d`, `1w` (a bare number: seconds).
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a duration (30s, 10m, 2h, 3d, 1w)"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(format!("{s:?}: unknown unit (s, m, h, d, w)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?}: too long"))
}

fn domain_of(addr: &[u8]) -> &[u8] {
    match addr.iter().rposition(|&b| b == b'@') {
        Some(i) => &addr[i + 1..],
        None => b"",
    }
}

impl Selection {
    fn is_bulk(&self) -> bool {
        self.all
            || self.from.is_some()
            || self.to.is_some()
            || self.domain.is_some()
            || self.older_than.is_some()
    }

    fn matches(&self, m: &QueuedMessage, now: i64) -> bool {
        if self.all {
            return true;
        }
        let eq = |a: &[u8], b: &str| a.eq_ignore_ascii_case(b.as_bytes());
        self.from.as_deref().is_none_or(|f| eq(&m.sender, f))
            && self
                .to
                .as_deref()
                .is_none_or(|t| m.recipients.iter().any(|r| eq(&r.address, t)))
            && self.domain.as_deref().is_none_or(|d| {
                m.recipients
                    .iter()
                    .any(|r| eq(domain_of(&r.address), d.trim_start_matches('@')))
            })
            && self.older_than.is_none_or(|s| now - m.birth >= s)
    }
}

/// Runs `op` on the selection; prints what it did. `dry_run`: lists the
/// selection only; `yes`: no confirmation for a bulk selection. False
/// when a named id was not in the queue.
pub fn run(home: &Home, op: ControlOp, sel: &Selection, dry_run: bool, yes: bool) -> Result<bool> {
    if sel.ids.is_empty() && !sel.is_bulk() {
        return Err(Usage(format!(
            "{}: name message ids, or select with --all, --from, --to, --domain, --older-than",
            op.name()
        ))
        .into());
    }
    if !sel.ids.is_empty() && sel.is_bulk() {
        return Err(Usage("give message ids or a selection, not both".into()).into());
    }
    let qdir = home.queue_dir();
    let queue =
        Queue::open(&qdir).with_context(|| format!("cannot open the queue {}", qdir.display()))?;
    let ids: Vec<u64> = if sel.is_bulk() {
        let now = tern_date::now();
        let scan = queue.scan().context("cannot read the queue")?;
        let chosen: Vec<&QueuedMessage> = scan
            .messages
            .iter()
            .filter(|m| sel.matches(m, now))
            .collect();
        if dry_run {
            let mut out = String::new();
            for m in &chosen {
                let _ = writeln!(
                    out,
                    "{}  age {}  from <{}>  {} recipient(s)",
                    m.id,
                    age(now - m.birth),
                    printable(&m.sender),
                    m.recipients.len()
                );
            }
            let _ = writeln!(out, "would {}: {} message(s)", op.name(), chosen.len());
            emit(&out);
            return Ok(true);
        }
        if chosen.is_empty() {
            emit(&format!("{}: no message selected\n", op.name()));
            return Ok(true);
        }
        if !yes && !confirm(op, chosen.len())? {
            emit("nothing done\n");
            return Ok(true);
        }
        chosen.iter().map(|m| m.id).collect()
    } else {
        if dry_run {
            let mut out = String::new();
            for &id in &sel.ids {
                let state = match queue.open_message(id) {
                    Ok(_) => "in the queue",
                    Err(_) => "not in the queue",
                };
                let _ = writeln!(out, "{id}  {state}");
            }
            let _ = writeln!(out, "would {}: {} message(s)", op.name(), sel.ids.len());
            emit(&out);
            return Ok(true);
        }
        sel.ids.clone()
    };
    let results = apply(home, &queue, op, &ids)?;
    let mut counts = [0usize; 3];
    let mut missing = Vec::new();
    for (id, r) in ids.iter().zip(&results) {
        match r {
            OpResult::NotFound => {
                counts[0] += 1;
                missing.push(*id);
            }
            OpResult::Done => counts[1] += 1,
            OpResult::Unchanged => counts[2] += 1,
        }
    }
    let verb = match op {
        ControlOp::Delete => "deleted",
        ControlOp::Bounce => "bounced",
        ControlOp::Hold => "held",
        ControlOp::Release => "released",
    };
    let mut out = format!(
        "{verb}: {}; already so: {}; not in the queue: {}\n",
        counts[1], counts[2], counts[0]
    );
    for id in &missing {
        let _ = writeln!(out, "not in the queue: {id}");
    }
    emit(&out);
    Ok(missing.is_empty())
}

fn confirm(op: ControlOp, n: usize) -> Result<bool> {
    eprint!("{} {n} message(s)? [y/N] ", op.name());
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .take(64)
        .read_line(&mut line)
        .context("reading the confirmation")?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES"))
}

use std::io::Read as _;

/// Applies `op` to `ids`: through the running manager, or here under its
/// lock when none runs.
fn apply(home: &Home, queue: &Queue, op: ControlOp, ids: &[u64]) -> Result<Vec<OpResult>> {
    let qdir = home.queue_dir();
    let lock_path = ops::state_path(&qdir, LOCK);
    // queue/state/ is the manager's: no link is followed, no FIFO waited on.
    let lock = rustix::fs::open(
        &lock_path,
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .with_context(|| format!("cannot open {}", lock_path.display()))?;
    let st = rustix::fs::fstat(&lock)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        bail!("{} is not a regular file", lock_path.display());
    }
    match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => offline(home, queue, op, ids),
        Err(rustix::io::Errno::WOULDBLOCK) => {
            drop(lock);
            through_manager(&qdir, op, ids)
        }
        Err(e) => Err(anyhow!("cannot lock {}: {e}", lock_path.display())),
    }
}

/// No manager runs and we hold its lock: the same records, written here.
fn offline(home: &Home, queue: &Queue, op: ControlOp, ids: &[u64]) -> Result<Vec<OpResult>> {
    let rewriter = ops::rewriter(&Control::new(home))?;
    let (mut journal, mut state, _) =
        Journal::open(queue.dir()).context("cannot open the manager's journal")?;
    let mut results = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_IDS) {
        let req = ControlRequest {
            op,
            ids: chunk.to_vec(),
        };
        let done = ops::execute(&mut journal, &mut state, queue, &rewriter, &req, "ternctl")
            .context("cannot write the manager's journal")?;
        results.extend(done.results);
    }
    Ok(results)
}

fn through_manager(qdir: &std::path::Path, op: ControlOp, ids: &[u64]) -> Result<Vec<OpResult>> {
    let path = ops::state_path(qdir, SOCKET);
    let mut results = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_IDS) {
        let mut s = UnixStream::connect(&path).with_context(|| {
            format!(
                "tern-send is running but its control socket {} cannot be reached",
                path.display()
            )
        })?;
        // A busy manager answers between two rounds of its loop.
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let req = ControlRequest {
            op,
            ids: chunk.to_vec(),
        };
        tern_ipc::write_frame(&mut s, &req.encode())
            .map_err(|e| anyhow!("sending the request to tern-send: {e}"))?;
        let reply = tern_ipc::read_frame(&mut s)
            .and_then(|p| ControlReply::decode(&p))
            .map_err(|e| anyhow!("no answer from tern-send (nothing is known to be done): {e}"))?;
        if reply.results.len() != chunk.len() {
            bail!(
                "tern-send answered {} results for {} ids",
                reply.results.len(),
                chunk.len()
            );
        }
        results.extend(reply.results);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("3d"), Ok(259_200));
        assert_eq!(parse_duration("1w"), Ok(604_800));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999w").is_err());
    }
}
