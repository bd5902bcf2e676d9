//! Dispatch: due recipients go to the spawners, within the concurrency
//! limits, local ones one by one, remote ones grouped by domain.

use crate::Manager;
use crate::common::*;
use crate::spawner::*;
use std::os::fd::OwnedFd;
use tern_ipc::remote::{MAX_DOMAIN, MAX_RCPTS, RemoteDeliver};
use tern_ipc::{Deliver, Outcome};
use tern_log::Event;
use tern_spool::Stage;
use tern_spool::state::{Channel, Status};

/// The destination domain of a (rewritten) remote address, lower case.
pub(crate) fn domain_of(address: &[u8]) -> Vec<u8> {
    match memchr::memrchr(b'@', address) {
        Some(at) => address[at + 1..].to_ascii_lowercase(),
        None => address.to_ascii_lowercase(),
    }
}

/// Why a recipient cannot go in a spawner request, as a permanent
/// failure text. The spawners take a frame that breaks a bound for a
/// broken tern-send and stop, which would stop every delivery, again after
/// each restart: an address longer than [`tern_ipc::MAX_ADDRESS`] (possible
/// after `virtualdomains` or `envnoathost` rewriting), a remote address
/// whose domain is empty or longer than [`MAX_DOMAIN`].
pub(crate) fn unsendable(channel: Channel, address: &[u8]) -> Option<&'static str> {
    if address.len() > tern_ipc::MAX_ADDRESS {
        return Some("Sorry, the address is longer than 1000 bytes after rewriting. (#5.1.3)");
    }
    if channel == Channel::Remote {
        let domain = domain_of(address);
        if domain.is_empty() || domain.len() > MAX_DOMAIN {
            return Some(
                "Sorry, the domain of the address is empty or longer than 255 bytes. (#5.1.2)",
            );
        }
    }
    None
}

/// Drops recipients from the end of a remote request (and their indices)
/// until its frame fits in [`tern_ipc::MAX_FRAME`]; the dropped ones go in
/// a later request. One recipient always fits (every field is bounded).
pub(crate) fn fit_frame(req: &mut RemoteDeliver, indices: &mut Vec<u32>) {
    while req.recipients.len() > 1 && req.encode().len() > tern_ipc::MAX_FRAME {
        req.recipients.pop();
        indices.pop();
    }
}

impl Manager {
    pub(crate) fn start_deliveries(&mut self, now: i64) {
        if self.stopping {
            return;
        }
        self.start_local(now);
        self.start_remote(now);
    }

    /// Checks a ready entry: `Some(true)` = deliverable now; `Some(false)`
    /// = not yet in `cur/` (tried again shortly); `None` = obsolete.
    pub(crate) fn deliverable(&self, id: u64, index: u32) -> Option<bool> {
        let msg = self.state.messages.get(&id)?;
        let r = msg.recipients.get(index as usize)?;
        // Held: dropped from the ready set; a release schedules it again.
        if msg.held || r.status != Status::Pending || self.inflight.contains(&(id, index)) {
            return None;
        }
        Some(!self.not_taken.contains(&id))
    }

    /// The next recipient of channel `ci` that is due and deliverable,
    /// taken out of the ready set; `None` when nothing (more) can start now
    /// (no free slot, nothing due).
    pub(crate) fn next_ready(&mut self, ci: usize, now: i64) -> Option<(i64, u64, u32)> {
        loop {
            if self.spawners[ci].as_ref()?.free.is_empty() {
                return None;
            }
            let &(due, id, index) = self.ready[ci].first()?;
            if due > now {
                return None;
            }
            self.ready[ci].pop_first();
            match self.deliverable(id, index) {
                None => {}
                // Not in cur/ yet: try again shortly.
                Some(false) => self.ready[ci].insert(now + 5, id, index),
                Some(true) => return Some((due, id, index)),
            }
        }
    }

    pub(crate) fn start_local(&mut self, now: i64) {
        let ci = ch_index(Channel::Local);
        while let Some((_, id, index)) = self.next_ready(ci, now) {
            if self.refuse_unsendable(id, index, now) {
                continue;
            }
            let msg = &self.state.messages[&id];
            let r = &msg.recipients[index as usize];
            let sp = self.spawners[ci].as_mut().expect("checked above");
            let slot_no = sp.free.pop().expect("checked non-empty");
            let dying = now - msg.birth > self.cfg.queuelifetime;
            sp.slots[slot_no as usize] = Some(Slot {
                id,
                indices: vec![index],
                reported: vec![false],
                domain: None,
                dying,
            });
            let req = Deliver {
                slot: slot_no,
                id,
                offset: msg.offset,
                // qmail's VERP: `prefix-@host-@[]` becomes
                // `prefix-local=domain@host` for this recipient.
                sender: tern_msg::verp::sender_for(&msg.sender, &r.address),
                recipient: r.address.clone(),
            };
            sp.queue_frame(&req.encode(), None);
            self.inflight.insert((id, index));
            Event::new(PROG, "delivery_start")
                .num("qid", id)
                .field("channel", "local")
                .field("rcpt", &r.address)
                .num("slot", slot_no)
                .emit();
        }
    }

    /// Fails recipient `index` of `id` at once when it cannot be put in a
    /// request ([`unsendable`]). True when it was.
    pub(crate) fn refuse_unsendable(&mut self, id: u64, index: u32, now: i64) -> bool {
        let msg = &self.state.messages[&id];
        let r = &msg.recipients[index as usize];
        // A VERP sender grows by the recipient: past the spawners' bound
        // the request could not be sent (they would take tern-send for
        // broken), so that recipient fails here.
        let verp_too_long =
            tern_msg::verp::sender_for(&msg.sender, &r.address).len() > tern_ipc::MAX_ADDRESS;
        let Some(text) = unsendable(r.channel, &r.address).or(verp_too_long.then_some(
            "Sorry, the VERP sender expanded for this address is longer than 1000 bytes. (#5.1.7)",
        )) else {
            return false;
        };
        let res = Result1 {
            id,
            index,
            dying: false,
            outcome: Outcome::Failed,
            text: text.as_bytes().to_vec(),
        };
        self.apply_result(res, now);
        true
    }

    /// Starts remote deliveries: each takes every pending recipient of the
    /// message at the same domain (one SMTP transaction), within
    /// `concurrencyremote` in all and `concurrencydomain` per domain. A
    /// recipient whose domain is at its limit waits without holding up
    /// other domains.
    pub(crate) fn start_remote(&mut self, now: i64) {
        let ci = ch_index(Channel::Remote);
        let mut held: Vec<(i64, u64, u32)> = Vec::new();
        while let Some((due, id, index)) = self.next_ready(ci, now) {
            if self.refuse_unsendable(id, index, now) {
                continue;
            }
            let msg = &self.state.messages[&id];
            let domain = domain_of(&msg.recipients[index as usize].address);
            if self.domain_busy.get(&domain).copied().unwrap_or(0) >= self.cfg.per_domain {
                held.push((due, id, index));
                continue;
            }
            // The batch: this recipient and the message's other pending
            // remote recipients at the same domain; alone when the sender
            // is VERP (each recipient has its own envelope sender, so its
            // own transaction).
            let verp = tern_msg::verp::is_verp(&msg.sender);
            let mut indices = vec![index];
            for (j, r) in msg.recipients.iter().enumerate() {
                if verp {
                    break;
                }
                let j = j as u32;
                if indices.len() >= MAX_RCPTS {
                    break;
                }
                if j != index
                    && r.channel == Channel::Remote
                    && r.status == Status::Pending
                    && !self.inflight.contains(&(id, j))
                    && domain_of(&r.address) == domain
                {
                    indices.push(j);
                }
            }
            let path = self.queue.path(id, Stage::Active);
            let file = match open_message_file(&path) {
                Ok(f) => f,
                Err(e) => {
                    Event::new(PROG, "warning")
                        .num("qid", id)
                        .field(
                            "reason",
                            format!("cannot open {}: {e}; will retry", path.display()),
                        )
                        .emit();
                    held.push((now + 60, id, index));
                    continue;
                }
            };
            let (file, len) = file;
            let dying = now - msg.birth > self.cfg.queuelifetime;
            let mut req = RemoteDeliver {
                slot: 0,
                id,
                offset: msg.offset,
                size: len.saturating_sub(msg.offset),
                sender: tern_msg::verp::sender_for(
                    &msg.sender,
                    &msg.recipients[index as usize].address,
                ),
                domain: domain.clone(),
                recipients: indices
                    .iter()
                    .map(|&j| msg.recipients[j as usize].address.clone())
                    .collect(),
            };
            fit_frame(&mut req, &mut indices);
            for &j in &indices {
                self.ready[ci].remove(id, j);
                self.inflight.insert((id, j));
            }
            *self.domain_busy.entry(domain.clone()).or_insert(0) += 1;
            let sp = self.spawners[ci].as_mut().expect("checked above");
            let slot_no = sp.free.pop().expect("checked non-empty");
            let req = RemoteDeliver {
                slot: slot_no,
                ..req
            };
            sp.slots[slot_no as usize] = Some(Slot {
                id,
                reported: vec![false; indices.len()],
                indices,
                domain: Some(domain),
                dying,
            });
            sp.queue_frame(&req.encode(), Some(OwnedFd::from(file)));
            Event::new(PROG, "delivery_start")
                .num("qid", id)
                .field("channel", "remote")
                .field("domain", &req.domain)
                .num("rcpts", req.recipients.len())
                .num("slot", slot_no)
                .emit();
        }
        for (due, id, index) in held {
            self.ready[ci].insert(due, id, index);
        }
    }
}
