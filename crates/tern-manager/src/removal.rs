//! Removal and bounces: a message whose recipients are all done gets its
//! bounce (if any recipient failed), then is removed by the cleaner and
//! forgotten.

use crate::Manager;
use crate::bounce;
use crate::common::*;
use tern_ipc::CleanOp;
use tern_log::Event;
use tern_spool::Stage;
use tern_spool::state::Record;

impl Manager {
    /// Bounces and removes finished messages. Every `K`/`D` record is made
    /// durable before any removal is asked for.
    pub(crate) fn finish(&mut self, now: i64) -> Result<bool, Exit> {
        if self.finished.is_empty() || now < self.finish_retry_at {
            return Ok(false);
        }
        self.journal.commit().map_err(fatal)?;
        let mut removable = Vec::new();
        let mut injected = false;
        let ids: Vec<u64> = self.finished.iter().copied().collect();
        for id in ids {
            let Some(msg) = self.state.messages.get(&id) else {
                self.finished.remove(&id);
                continue;
            };
            if !msg.is_finished()
                || msg
                    .recipients
                    .iter()
                    .enumerate()
                    .any(|(i, _)| self.inflight.contains(&(id, i as u32)))
            {
                self.finished.remove(&id);
                continue;
            }
            if msg.has_failures() && !msg.bounced {
                let path = if self.not_taken.contains(&id) {
                    self.queue.path(id, Stage::New)
                } else {
                    self.queue.path(id, Stage::Active)
                };
                let kind = if msg.sender == bounce::DOUBLE_BOUNCE_SENDER {
                    "discarded"
                } else if msg.sender.is_empty() {
                    "double_bounce"
                } else {
                    "bounce"
                };
                match bounce::send(
                    &self.home,
                    &self.cfg.bounce,
                    id,
                    msg,
                    &path,
                    &self.queued_bounces,
                ) {
                    Ok(outcome) => {
                        self.metrics.bounce(kind);
                        injected |= outcome.injected;
                        let rec = Record::Bounced { id };
                        self.journal.append(&rec);
                        self.state.apply(&rec);
                    }
                    Err(e) => {
                        Event::new(PROG, "warning")
                            .num("qid", id)
                            .field("reason", format!("cannot queue bounce: {e}; will retry"))
                            .emit();
                        self.finish_retry_at = now + 60;
                        continue;
                    }
                }
            }
            removable.push(id);
        }
        self.journal.commit().map_err(fatal)?;
        if !removable.is_empty() && self.cleaner_ok {
            removable.retain(|id| self.state.messages.contains_key(id));
            let ops = removable
                .iter()
                .map(|&id| {
                    let m = &self.state.messages[&id];
                    CleanOp::Remove {
                        id,
                        birth: m.birth,
                        qpid: m.qpid,
                    }
                })
                .collect();
            let ok = match self.cleaner.run(ops) {
                Ok(ok) => ok,
                Err(e) => {
                    self.lose_cleaner(e);
                    return Ok(injected);
                }
            };
            for (id, ok) in removable.into_iter().zip(ok) {
                if ok {
                    let rec = Record::Removed { id };
                    self.journal.append(&rec);
                    self.state.apply(&rec);
                    self.finished.remove(&id);
                    self.not_taken.remove(&id);
                    Event::new(PROG, "end").num("qid", id).emit();
                } else {
                    self.finish_retry_at = now + 60;
                }
            }
        }
        Ok(injected)
    }
}
