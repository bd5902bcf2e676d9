//! The postmaster's queue operations (`ternctl delete`, `bounce`, `hold`,
//! `release`): the one code path that turns a request into journal
//! records, used by the running manager (requests over its control socket,
//! executed at a safe point of its loop) and by `ternctl` itself when no
//! manager runs (under the manager's lock, `queue/state/lock`).
//!
//! Every operation is one journal record (`H`, `U`, `Y`), made durable by
//! one commit before anything acts on it or anyone is answered, and
//! idempotent: a crash before the commit leaves nothing, after it the
//! whole operation, and replaying or repeating it changes nothing more.
//! The manager applies the effects afterwards from the state alone (no
//! new delivery for a held message; removal, with the usual bounce for
//! `bounce` and none for `delete`, once nothing of it is in flight), so a
//! restart after a crash does the same.

use std::path::{Path, PathBuf};
use tern_ipc::control::{ControlOp, ControlRequest, OpResult};
use tern_log::Event;
use tern_sched::Rewriter;
use tern_spool::Queue;
use tern_spool::scan::OpenMessage;
use tern_spool::state::{Journal, MessageState, RecipientState, Record, State, Status};

/// The failure text of recipients a `delete` ended (never in a bounce).
pub const DELETE_TEXT: &[u8] = b"Deleted by the postmaster. (#5.0.0)";
/// The failure text of recipients a `bounce` ended (in the bounce).
pub const BOUNCE_TEXT: &[u8] = b"Bounced by the postmaster. (#5.0.0)";
/// The manager's control socket, below `queue/state/`.
pub const SOCKET: &str = "control";
/// The manager's lock file, below `queue/state/`: held by the running
/// manager, or by `ternctl` while it applies operations itself.
pub const LOCK: &str = "lock";

/// Message `id` as the manager takes it over (recipients classified by
/// `rewriter`: the contents of its `A` record), with the opened message.
pub fn take_over_state(
    queue: &Queue,
    rewriter: &Rewriter,
    id: u64,
) -> Result<(MessageState, OpenMessage), tern_spool::Error> {
    let open = queue.open_message(id)?;
    let env = &open.header.envelope;
    let recipients = env
        .recipients
        .iter()
        .map(|orig| {
            let (channel, address) = rewriter.classify(orig);
            RecipientState {
                channel,
                original: orig.clone(),
                address,
                status: Status::Pending,
                last_attempt: None,
                last_error: Vec::new(),
                attempts: 0,
            }
        })
        .collect::<Vec<_>>();
    let message = MessageState {
        birth: open.header.origin.time,
        qpid: open.header.origin.pid,
        offset: open.header.offset,
        sender: env.sender.clone(),
        recipients,
        bounced: false,
        held: false,
        deleted: false,
    };
    Ok((message, open))
}

/// The record that carries `op` out on `msg`; `None` when it is so already.
pub fn record_for(op: ControlOp, id: u64, msg: &MessageState) -> Option<Record> {
    let has_pending = msg.recipients.iter().any(|r| r.status == Status::Pending);
    match op {
        ControlOp::Hold => (!msg.held).then_some(Record::Hold { id, hold: true }),
        ControlOp::Release => msg.held.then_some(Record::Hold { id, hold: false }),
        ControlOp::Delete => (!msg.deleted).then(|| Record::End {
            id,
            bounce: false,
            text: DELETE_TEXT.to_vec(),
        }),
        ControlOp::Bounce => (has_pending && !msg.deleted).then(|| Record::End {
            id,
            bounce: true,
            text: BOUNCE_TEXT.to_vec(),
        }),
    }
}

/// What [`execute`] did.
#[derive(Debug, Default)]
pub struct Executed {
    /// One result per id of the request, in order.
    pub results: Vec<OpResult>,
    /// Messages it took over from `new/` first (their `A` record), so the
    /// operation had something to act on.
    pub picked_up: Vec<u64>,
    /// Messages whose state it changed.
    pub changed: Vec<u64>,
}

/// Executes `req`: appends one record per message it changes (and an `A`
/// record first for a message still in `new/` that the journal does not
/// know), applies them to `state`, and commits the journal. Nothing is
/// answered or acted on before this returns Ok; on Err nothing of the
/// request is durable (the caller stops, as for any journal failure).
/// Each id's result is logged as `prog`'s `operation` event.
pub fn execute(
    journal: &mut Journal,
    state: &mut State,
    queue: &Queue,
    rewriter: &Rewriter,
    req: &ControlRequest,
    prog: &'static str,
) -> Result<Executed, tern_spool::Error> {
    let mut done = Executed::default();
    for &id in &req.ids {
        if !state.messages.contains_key(&id) {
            match take_over_state(queue, rewriter, id) {
                Ok((message, _)) => {
                    let rec = Record::Accept { id, message };
                    journal.append(&rec);
                    state.apply(&rec);
                    done.picked_up.push(id);
                }
                Err(_) => {
                    done.results.push(OpResult::NotFound);
                    continue;
                }
            }
        }
        let msg = &state.messages[&id];
        match record_for(req.op, id, msg) {
            Some(rec) => {
                journal.append(&rec);
                state.apply(&rec);
                done.changed.push(id);
                done.results.push(OpResult::Done);
            }
            None => done.results.push(OpResult::Unchanged),
        }
    }
    journal.commit()?;
    for (&id, r) in req.ids.iter().zip(&done.results) {
        Event::new(prog, "operation")
            .field("op", req.op.name())
            .num("qid", id)
            .field(
                "status",
                match r {
                    OpResult::NotFound => "not_found",
                    OpResult::Done => "done",
                    OpResult::Unchanged => "unchanged",
                },
            )
            .emit();
    }
    Ok(done)
}

/// The recipient classification tern-send uses, from `control/`
/// (`locals`, `virtualdomains`, `percenthack`, `envnoathost`).
pub fn rewriter(control: &tern_control::Control) -> Result<Rewriter, tern_control::Error> {
    Ok(Rewriter {
        locals: control.locals()?,
        virtualdomains: control.virtualdomains()?,
        percenthack: control.percenthack()?,
        envnoathost: control.envnoathost()?.to_string(),
    })
}

/// Paths of a queue's manager files.
pub fn state_path(queue_dir: &Path, name: &str) -> PathBuf {
    queue_dir.join(tern_spool::layout::STATE_DIR).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_spool::state::Channel;

    fn msg(statuses: &[Status]) -> MessageState {
        MessageState {
            birth: 1,
            qpid: 2,
            offset: 4096,
            sender: b"s@x".to_vec(),
            recipients: statuses
                .iter()
                .map(|s| RecipientState {
                    channel: Channel::Local,
                    original: b"r@x".to_vec(),
                    address: b"r@x".to_vec(),
                    status: s.clone(),
                    last_attempt: None,
                    last_error: Vec::new(),
                    attempts: 0,
                })
                .collect(),
            bounced: false,
            held: false,
            deleted: false,
        }
    }

    #[test]
    fn each_operation_is_one_record_or_none_when_already_so() {
        let mut m = msg(&[Status::Pending, Status::Delivered]);
        assert_eq!(
            record_for(ControlOp::Hold, 1, &m),
            Some(Record::Hold { id: 1, hold: true })
        );
        assert_eq!(record_for(ControlOp::Release, 1, &m), None);
        m.held = true;
        assert_eq!(record_for(ControlOp::Hold, 1, &m), None);
        assert!(matches!(
            record_for(ControlOp::Bounce, 1, &m),
            Some(Record::End { bounce: true, .. })
        ));
        let done = msg(&[Status::Delivered]);
        assert_eq!(record_for(ControlOp::Bounce, 1, &done), None);
        // A delete of a finished message still suppresses its bounce.
        assert!(matches!(
            record_for(ControlOp::Delete, 1, &done),
            Some(Record::End { bounce: false, .. })
        ));
        let mut st = State::default();
        st.apply(&Record::Accept {
            id: 1,
            message: msg(&[Status::Pending]),
        });
        st.apply(&record_for(ControlOp::Delete, 1, &st.messages[&1]).unwrap());
        let m = &st.messages[&1];
        assert!(m.deleted && m.bounced && m.is_finished());
        assert_eq!(record_for(ControlOp::Delete, 1, m), None);
        assert_eq!(record_for(ControlOp::Bounce, 1, m), None);
    }
}
