//! Bounces: one RFC 3464 report per message for all its failed recipients,
//! queued through `tern-queue` like any other message.
//!
//! * original sender non-empty: the bounce goes to it, envelope sender `<>`;
//! * original sender empty (a bounce failed): a *double bounce* to
//!   `doublebounceto@doublebouncehost` (default `postmaster@me`), envelope
//!   sender `#@[]`;
//! * original sender `#@[]` (a double bounce failed): dropped and logged.

use crate::common::{PROG, open_message_file};
use std::collections::HashSet;
use std::io::{Seek, SeekFrom};
use std::path::Path;
use tern_control::Home;
use tern_log::Event;
use tern_msg::dsn::{Bounce, FailedRecipient};
use tern_spool::state::{MessageState, Status};
use tern_spool::{Envelope, QueueClient};

/// Body bytes of the original returned in a bounce.
pub const DEFAULT_MAX_BODY: u64 = tern_msg::dsn::DEFAULT_MAX_BODY;
/// The envelope sender of double bounces (qmail's convention).
pub const DOUBLE_BOUNCE_SENDER: &[u8] = b"#@[]";

/// Who bounces are from and where double bounces go.
#[derive(Debug, Clone)]
pub struct BounceConfig {
    /// `control/me`.
    pub me: String,
    /// `bouncefrom@bouncehost`.
    pub from: String,
    /// `doublebounceto@doublebouncehost`.
    pub double_to: String,
    /// Body bytes of the original returned.
    pub max_body: u64,
}

/// What [`send`] did.
pub struct Sent {
    /// True when a bounce message was queued (false: deliberately dropped).
    pub injected: bool,
}

/// The Message-ID (without brackets) of the bounce of message `id` for
/// its failed recipients, the first of which is recipient `first`. It
/// depends only on the message (its id, birth and tern-queue pid name it
/// for good) and `first`, never on the time or the manager's pid: after a
/// crash between queueing a bounce and recording it (`B`), the restarted
/// manager finds it in `queue/new/` by this id ([`queued_bounce_ids`]) and
/// does not queue it twice.
pub fn bounce_message_id(cfg: &BounceConfig, id: u64, msg: &MessageState, first: usize) -> String {
    format!(
        "{}.{id}.{}.{first}.bounce@{}",
        tern_date::compact(msg.birth),
        msg.qpid,
        cfg.me
    )
}

/// Message-IDs of the bounces waiting in `queue/new/` (messages from `<>`
/// or `#@[]`), read from the first 8 KiB of their header.
pub fn queued_bounce_ids(queue: &tern_spool::Queue) -> HashSet<Vec<u8>> {
    use std::io::Read;
    let mut out = HashSet::new();
    for b in 0..queue.layout().split {
        let dir = queue.dir().join("new").join(b.to_string());
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for ent in rd.flatten() {
            let Some(id) = ent.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            let Ok(open) = queue.open_message(id) else {
                continue;
            };
            let sender = &open.header.envelope.sender;
            if !(sender.is_empty() || sender == DOUBLE_BOUNCE_SENDER) {
                continue;
            }
            let mut f = &open.file;
            let mut head = Vec::new();
            if f.seek(SeekFrom::Start(open.header.offset)).is_err()
                || f.take(8192).read_to_end(&mut head).is_err()
            {
                continue;
            }
            for line in head.split(|&b| b == b'\n') {
                if line.is_empty() {
                    break;
                }
                if line.len() > 12
                    && line[..12].eq_ignore_ascii_case(b"message-id: ")
                    && let Some(v) = line[12..].strip_prefix(b"<")
                    && let Some(v) = v.strip_suffix(b">")
                {
                    out.insert(v.to_vec());
                }
            }
        }
    }
    out
}

/// Queues the bounce for message `id` (its failed recipients); a bounce
/// whose Message-ID is in `queued` is already in the queue (queued before
/// a crash) and is not queued again.
pub fn send(
    home: &Home,
    cfg: &BounceConfig,
    id: u64,
    msg: &MessageState,
    path: &Path,
    queued: &HashSet<Vec<u8>>,
) -> Result<Sent, String> {
    let failed: Vec<FailedRecipient> = msg
        .recipients
        .iter()
        .filter_map(|r| match &r.status {
            Status::Failed(text) => Some(FailedRecipient {
                address: r.original.clone(),
                text: text.clone(),
            }),
            _ => None,
        })
        .collect();
    if msg.sender == DOUBLE_BOUNCE_SENDER {
        Event::new(PROG, "triple_bounce")
            .num("qid", id)
            .num("failed", failed.len())
            .field("reason", "a double bounce failed; discarded")
            .emit();
        return Ok(Sent { injected: false });
    }
    // A VERP sender (`prefix-@host-@[]`): each failed recipient's bounce
    // goes to its own expanded address (`prefix-local=domain@host`), as
    // qmail-send does, so the list manager learns which subscriber failed.
    if tern_msg::verp::is_verp(&msg.sender) && failed.len() > 1 {
        for (i, r) in msg.recipients.iter().enumerate() {
            if !matches!(r.status, Status::Failed(_)) {
                continue;
            }
            let mut one = msg.clone();
            for (j, o) in one.recipients.iter_mut().enumerate() {
                if j != i && matches!(o.status, Status::Failed(_)) {
                    o.status = Status::Delivered;
                }
            }
            send(home, cfg, id, &one, path, queued)?;
        }
        return Ok(Sent { injected: true });
    }
    let double = msg.sender.is_empty();
    let (to, env_sender): (Vec<u8>, &[u8]) = if double {
        (cfg.double_to.clone().into_bytes(), DOUBLE_BOUNCE_SENDER)
    } else if let Some(f) = failed.first() {
        (tern_msg::verp::sender_for(&msg.sender, &f.address), b"")
    } else {
        (msg.sender.clone(), b"")
    };
    let (mut original, _) =
        open_message_file(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    original
        .seek(SeekFrom::Start(msg.offset))
        .map_err(|e| format!("seek: {e}"))?;
    let now = tern_date::now();
    let first = msg
        .recipients
        .iter()
        .position(|r| matches!(r.status, Status::Failed(_)))
        .unwrap_or(0);
    let message_id = bounce_message_id(cfg, id, msg, first);
    if queued.contains(message_id.as_bytes()) {
        Event::new(PROG, "bounce_already_queued")
            .num("qid", id)
            .field("message_id", &message_id)
            .emit();
        return Ok(Sent { injected: false });
    }
    let bounce = Bounce {
        me: &cfg.me,
        from: &cfg.from,
        to: &to,
        original_sender: &msg.sender,
        arrival: msg.birth,
        now,
        message_id: &message_id,
        recipients: &failed,
        double,
        max_body: cfg.max_body,
    };
    let bytes = tern_msg::dsn::compose(&bounce, &mut original).map_err(|e| e.to_string())?;
    let envelope = Envelope {
        sender: env_sender.to_vec(),
        recipients: vec![to.clone()],
    };
    QueueClient::for_home(home.root())
        .submit(&envelope, |w| w.write_all(&bytes))
        .map_err(|e| e.to_string())?;
    Event::new(PROG, if double { "double_bounce" } else { "bounce" })
        .num("qid", id)
        .field("to", &to)
        .num("failed", failed.len())
        .emit();
    Ok(Sent { injected: true })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_spool::state::{Channel, RecipientState};

    #[test]
    fn a_fifo_in_place_of_the_queue_file_is_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("tern-send-bounce-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let cfg = BounceConfig {
            me: "me.example".into(),
            from: "MAILER-DAEMON@me.example".into(),
            double_to: "postmaster@me.example".into(),
            max_body: DEFAULT_MAX_BODY,
        };
        let msg = MessageState {
            birth: 0,
            qpid: 1,
            offset: 0,
            sender: b"a@b.example".to_vec(),
            recipients: vec![RecipientState {
                channel: Channel::Local,
                original: b"c@d.example".to_vec(),
                address: b"c@d.example".to_vec(),
                status: Status::Failed(b"no".to_vec()),
                last_attempt: None,
                last_error: Vec::new(),
                attempts: 0,
            }],
            bounced: false,
            held: false,
            deleted: false,
        };
        // A plain open(2) of the FIFO would wait for a writer for ever.
        let e = send(&Home::new(&dir), &cfg, 1, &msg, &fifo, &HashSet::new())
            .err()
            .expect("refused");
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
