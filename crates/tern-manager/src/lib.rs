//! `tern-manager`: the queue manager's logic, one module per step, under
//! the thin `tern-send` program. Decisions come from `tern-sched`; durable
//! state is the journal (`tern_spool::state`); the spawners and the cleaner
//! are driven over `tern-ipc` frames.
//!
//! * `pickup`: new messages are read, recorded (the take-over) and moved;
//! * `dispatch`: due recipients go to the spawners;
//! * `results`: reports become journal records and retry times;
//! * `removal`: finished messages get their bounce and are removed;
//! * [`bounce`]: the bounce messages themselves;
//! * [`ops`]: the postmaster's queue operations (also run by `ternctl`);
//!   `control`: the socket they arrive on;
//! * [`metrics`]: the metrics file;
//! * `run`: the event loop; `spawner`, `ready`, `signals`, [`common`]: the
//!   parts they share.
//!
//! Imports go one way: the step modules use `Manager` (here) and the shared
//! modules; nothing here uses a step module, and the shared modules use
//! none of them.
#![forbid(unsafe_code)]

pub mod bounce;
pub mod common;
mod control;
mod dispatch;
pub mod metrics;
pub mod ops;
mod pickup;
mod ready;
mod removal;
mod results;
mod run;
mod signals;
mod spawner;
#[cfg(test)]
mod tests;

pub use common::{Exit, PROG, open_message_file};
pub use signals::{block_signals, open_trigger};
pub use spawner::{Cleaner, Spawner};

use bounce::BounceConfig;
use common::*;
use ready::Ready;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use tern_control::Home;
use tern_log::Event;
use tern_sched::Rewriter;
use tern_spool::state::{Journal, Record, State};
use tern_spool::{Queue, Stage};

/// Settings read at start (and `locals`/`virtualdomains` again on SIGHUP).
pub struct Config {
    /// Concurrency per channel: local, remote.
    pub concurrency: [usize; 2],
    /// Most remote deliveries at once to one domain (`concurrencydomain`).
    pub per_domain: usize,
    /// `queuelifetime` in seconds.
    pub queuelifetime: i64,
    /// Recipient classification.
    pub rewriter: Rewriter,
    /// Bounce addresses and limits.
    pub bounce: BounceConfig,
}

/// The queue manager.
pub struct Manager {
    pub(crate) home: Home,
    pub(crate) queue: Queue,
    pub(crate) journal: Journal,
    pub(crate) state: State,
    pub(crate) cfg: Config,
    pub(crate) spawners: [Option<Spawner>; 2],
    pub(crate) cleaner: Cleaner,
    pub(crate) ready: [Ready; 2],
    pub(crate) inflight: HashSet<(u64, u32)>,
    /// Remote deliveries running per destination domain.
    pub(crate) domain_busy: HashMap<Vec<u8>, usize>,
    pub(crate) not_taken: BTreeSet<u64>,
    pub(crate) finished: BTreeSet<u64>,
    pub(crate) finish_retry_at: i64,
    pub(crate) damaged_logged: HashSet<u64>,
    pub(crate) once: bool,
    /// `--flush`: every pending recipient is due at start, whatever its
    /// retry schedule (`sendmail -q`).
    pub(crate) flush_at_start: bool,
    pub(crate) stopping: bool,
    /// Set when a spawner or the cleaner was lost: the manager stops as for
    /// SIGTERM (collecting the reports of deliveries still running, so
    /// they are not repeated) and then exits with this reason.
    pub(crate) trouble: Option<String>,
    pub(crate) cleaner_ok: bool,
    /// Counters and the metrics file.
    pub(crate) metrics: metrics::Metrics,
    /// The control socket (`queue/state/control`) for `ternctl`'s queue
    /// operations; `None` when it could not be set up (logged).
    pub(crate) control: Option<std::os::unix::net::UnixListener>,
    /// Message-IDs of bounces found in `queue/new/` at start when some
    /// message's bounce was due but not recorded (a crash in between):
    /// those are not queued again.
    pub(crate) queued_bounces: HashSet<Vec<u8>>,
}

impl Manager {
    /// Sets up from the journal and reconciles it with the files.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        home: Home,
        queue: Queue,
        journal: Journal,
        state: State,
        cfg: Config,
        local: Option<Spawner>,
        remote: Option<Spawner>,
        cleaner: Cleaner,
        once: bool,
    ) -> Result<Manager, Exit> {
        let mut m = Manager {
            home,
            queue,
            journal,
            state,
            cfg,
            spawners: [local, remote],
            cleaner,
            ready: [Ready::default(), Ready::default()],
            inflight: HashSet::new(),
            domain_busy: HashMap::new(),
            not_taken: BTreeSet::new(),
            finished: BTreeSet::new(),
            finish_retry_at: 0,
            damaged_logged: HashSet::new(),
            once,
            flush_at_start: false,
            stopping: false,
            trouble: None,
            cleaner_ok: true,
            metrics: metrics::Metrics::new(PathBuf::new()),
            control: None,
            queued_bounces: HashSet::new(),
        };
        m.metrics.path = m.queue.dir().join(metrics::DEFAULT_FILE);
        let ids: Vec<u64> = m.state.messages.keys().copied().collect();
        for id in ids {
            let in_cur = m.queue.path(id, Stage::Active).exists();
            let in_new = !in_cur && m.queue.path(id, Stage::New).exists();
            let stale = match (in_cur || in_new).then(|| m.queue.open_message(id)) {
                // Removed before its X record was made durable.
                None | Some(Err(tern_spool::Error::NotFound(_))) => true,
                // The id now names a later message (inode numbers are
                // reused): the old one was removed before its X record
                // was durable. The new file is picked up by the scan.
                Some(Ok(open)) => !m.state.messages[&id].is_same_file(&open.header),
                Some(Err(e)) => {
                    Event::new(PROG, "warning")
                        .num("qid", id)
                        .field("reason", e.to_string())
                        .emit();
                    false
                }
            };
            if stale {
                let rec = Record::Removed { id };
                m.journal.append(&rec);
                m.state.apply(&rec);
                continue;
            }
            if in_new {
                m.not_taken.insert(id);
            }
            m.schedule_message(id);
        }
        // Orphans: committed messages in cur/ the journal does not know
        // (its record was lost, or an id was reused while a removal failed).
        // Adopted as new: at worst a repeated delivery, never a lost one.
        for b in 0..m.queue.layout().split {
            let dir = m.queue.dir().join("cur").join(b.to_string());
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for ent in rd.flatten() {
                let Some(id) = ent.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
                    continue;
                };
                if !m.state.messages.contains_key(&id) && m.pick_up(id, true) {
                    Event::new(PROG, "adopted").num("qid", id).emit();
                }
            }
        }
        // A bounce queued just before a crash, its `B` record lost: found
        // by its Message-ID so that it is not queued twice.
        if m.state
            .messages
            .values()
            .any(|msg| msg.is_finished() && msg.has_failures() && !msg.bounced)
        {
            m.queued_bounces = bounce::queued_bounce_ids(&m.queue);
        }
        m.journal.commit().map_err(fatal)?;
        let pending: Vec<u64> = m.not_taken.iter().copied().collect();
        m.take_over(pending)?;
        Ok(m)
    }
}
