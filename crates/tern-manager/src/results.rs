//! Results and retries: spawner reports become journal records and new
//! due times; a lost spawner or cleaner stops the manager.

use crate::Manager;
use crate::common::*;
use crate::spawner::*;
use tern_ipc::Outcome;
use tern_log::Event;
use tern_sched::{next_attempt, scrub_text};
use tern_spool::state::{MessageState, Record};

impl Manager {
    pub(crate) fn apply_result(&mut self, res: Result1, now: i64) {
        let Result1 {
            id,
            index,
            dying,
            outcome,
            text,
        } = res;
        self.inflight.remove(&(id, index));
        let Some(msg) = self.state.messages.get(&id) else {
            return;
        };
        let Some(r) = msg.recipients.get(index as usize) else {
            return;
        };
        let (channel, birth, rcpt) = (r.channel, msg.birth, r.address.clone());
        let text = scrub_text(&text, MAX_REPORT);
        let (rec, status) = match outcome {
            Outcome::Delivered => (Record::Delivered { id, index }, "delivered"),
            Outcome::Failed => (
                Record::Failed {
                    id,
                    index,
                    text: text.clone().into_bytes(),
                },
                "failed",
            ),
            Outcome::Deferred if dying => (
                Record::Failed {
                    id,
                    index,
                    text: format!(
                        "Giving up: the message has been in the queue longer than queuelifetime ({} seconds). Last temporary error: {text}",
                        self.cfg.queuelifetime
                    )
                    .into_bytes(),
                },
                "expired",
            ),
            Outcome::Deferred => (
                Record::Deferred {
                    id,
                    index,
                    time: now,
                    text: text.clone().into_bytes(),
                },
                "deferred",
            ),
        };
        if let Record::Deferred { .. } = rec {
            let due = next_attempt(birth, Some(now), channel);
            self.ready[ch_index(channel)].insert(due, id, index);
        }
        self.metrics.delivery(channel, status);
        Event::new(PROG, "delivery_end")
            .num("qid", id)
            .field("channel", ch_name(channel))
            .field("rcpt", &rcpt)
            .field("status", status)
            .num("delay", now.saturating_sub(birth).max(0))
            .field("text", &text)
            .emit();
        self.journal.append(&rec);
        self.state.apply(&rec);
        if self
            .state
            .messages
            .get(&id)
            .is_some_and(MessageState::is_finished)
        {
            self.finished.insert(id);
        }
    }

    /// A spawner is gone: its running deliveries' results are lost (they
    /// will be repeated after the restart); stop like SIGTERM.
    pub(crate) fn lose_spawner(&mut self, ci: usize, reason: String) {
        if let Some(sp) = self.spawners[ci].take() {
            for slot in sp.slots.into_iter().flatten() {
                for index in slot.indices {
                    self.inflight.remove(&(slot.id, index));
                }
                if let Some(d) = slot.domain {
                    self.domain_busy.remove(&d);
                }
            }
        }
        Event::new(PROG, "alert")
            .field(
                "reason",
                format!("{reason}; stopping after running deliveries"),
            )
            .emit();
        self.trouble.get_or_insert(reason);
        self.stopping = true;
    }

    /// The cleaner is gone: nothing more is moved or removed; stop like
    /// SIGTERM.
    pub(crate) fn lose_cleaner(&mut self, reason: String) {
        Event::new(PROG, "alert")
            .field(
                "reason",
                format!("{reason}; stopping after running deliveries"),
            )
            .emit();
        self.cleaner_ok = false;
        self.trouble.get_or_insert(reason);
        self.stopping = true;
    }

    pub(crate) fn flush_all(&mut self, now: i64) {
        for ci in 0..2 {
            for (_, id, index) in self.ready[ci].take_all() {
                self.ready[ci].insert(now, id, index);
            }
        }
        self.finish_retry_at = 0;
    }
}
