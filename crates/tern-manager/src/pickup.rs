//! Pick-up and take-over: new messages found in `queue/new/` are read,
//! classified, recorded in the journal (the take-over), moved to `cur/` by
//! the cleaner, and scheduled.

use crate::Manager;
use crate::common::*;
use tern_ipc::CleanOp;
use tern_log::Event;
use tern_sched::next_attempt;
use tern_spool::state::{Record, Status};

impl Manager {
    pub(crate) fn schedule_message(&mut self, id: u64) {
        let Some(msg) = self.state.messages.get(&id) else {
            return;
        };
        for (i, r) in msg.recipients.iter().enumerate() {
            if r.status == Status::Pending {
                let due = next_attempt(msg.birth, r.last_attempt, r.channel);
                self.ready[ch_index(r.channel)].insert(due, id, i as u32);
            }
        }
        if msg.is_finished() {
            self.finished.insert(id);
        }
    }

    pub(crate) fn take_over(&mut self, ids: Vec<u64>) -> Result<(), Exit> {
        if ids.is_empty() {
            return Ok(());
        }
        if !self.cleaner_ok {
            self.not_taken.extend(ids);
            return Ok(());
        }
        let ops = ids.iter().map(|&id| CleanOp::Accept(id)).collect();
        let ok = match self.cleaner.run(ops) {
            Ok(ok) => ok,
            Err(e) => {
                self.not_taken.extend(ids);
                self.lose_cleaner(e);
                return Ok(());
            }
        };
        for (id, ok) in ids.into_iter().zip(ok) {
            if ok {
                self.not_taken.remove(&id);
            } else {
                self.not_taken.insert(id);
                Event::new(PROG, "warning")
                    .num("qid", id)
                    .field("reason", "cannot move message to cur/; will retry")
                    .emit();
            }
        }
        Ok(())
    }

    /// Picks up every committed message in `new/` not yet known.
    pub(crate) fn scan_new(&mut self) -> Result<(), Exit> {
        let mut batch = Vec::new();
        let split = self.queue.layout().split;
        for b in 0..split {
            let dir = self.queue.dir().join("new").join(b.to_string());
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) => {
                    Event::new(PROG, "warning")
                        .field("reason", format!("cannot read {}: {e}", dir.display()))
                        .emit();
                    continue;
                }
            };
            for ent in rd.flatten() {
                let Some(id) = ent.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
                    continue;
                };
                let stale = match self.state.messages.get(&id) {
                    None => None,
                    Some(known) => Some(match self.queue.open_message(id) {
                        Ok(open) => !known.is_same_file(&open.header),
                        Err(_) => false,
                    }),
                };
                match stale {
                    // Known, still in new/: its move to cur/ is (re)done.
                    Some(false) => {
                        self.not_taken.insert(id);
                        batch.push(id);
                    }
                    // The id now names a later message: the old one is gone.
                    Some(true) => {
                        self.forget(id);
                        if self.pick_up(id, false) {
                            batch.push(id);
                        }
                    }
                    None => {
                        if self.pick_up(id, false) {
                            batch.push(id);
                        }
                    }
                }
                if batch.len() >= PICKUP_BATCH {
                    self.journal.commit().map_err(fatal)?;
                    self.take_over(std::mem::take(&mut batch))?;
                }
            }
        }
        self.journal.commit().map_err(fatal)?;
        self.take_over(batch)
    }

    /// Drops a journal entry whose message is gone.
    pub(crate) fn forget(&mut self, id: u64) {
        let rec = Record::Removed { id };
        self.journal.append(&rec);
        self.state.apply(&rec);
        self.finished.remove(&id);
        self.not_taken.remove(&id);
    }

    /// Records one new message in the journal (not yet flushed). `taken`:
    /// the file is already in `cur/` (an orphan adopted at start).
    pub(crate) fn pick_up(&mut self, id: u64, taken: bool) -> bool {
        let (msg, open) = match crate::ops::take_over_state(&self.queue, &self.cfg.rewriter, id) {
            Ok(r) => r,
            Err(tern_spool::Error::NotFound(_)) => return false,
            Err(e) => {
                if self.damaged_logged.insert(id) {
                    Event::new(PROG, "warning")
                        .num("qid", id)
                        .field("reason", e.to_string())
                        .emit();
                }
                return false;
            }
        };
        Event::new(PROG, "new")
            .num("qid", id)
            .num("size", open.file_size - open.header.offset)
            .field("sender", &msg.sender)
            .num("rcpts", msg.recipients.len())
            .num("uid", open.header.origin.uid)
            .emit();
        let rec = Record::Accept { id, message: msg };
        self.journal.append(&rec);
        self.state.apply(&rec);
        if !taken {
            self.not_taken.insert(id);
        }
        self.schedule_message(id);
        true
    }
}
