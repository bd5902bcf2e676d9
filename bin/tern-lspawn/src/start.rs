//! Starting one delivery: address split, owner lookup, queue file checks,
//! and the `tern-local` child.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{PipeReader, Seek as _, SeekFrom};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::fs::OFlags;
use tern_control::owner::{self, Instance, SystemPasswd};
use tern_control::{Assign, Control, Home};
use tern_ipc::local::Output;
use tern_ipc::{Deliver, Outcome};
use tern_spool::layout::Layout;
use tern_sys::privilege::Credentials;

/// The environment's `PATH` for tern-local.
const CHILD_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What every delivery needs to know about the instance.
pub(crate) struct Ctx {
    pub(crate) home: Home,
    pub(crate) layout: Layout,
    /// Owner of `queue/cur`: every queue file must have this owner.
    pub(crate) cur_owner: u32,
    pub(crate) instance: Instance,
    pub(crate) euid: u32,
    /// Tern's own users and the alias user (system instance only).
    pub(crate) users: Users,
    /// Deliveries go to reused workers (else a tern-local each).
    pub(crate) workers: bool,
}

/// Where a delivery runs.
pub(crate) enum Via {
    /// A tern-local of its own.
    Process {
        child: Child,
        /// The output pipe; `None` after end of file.
        out: Option<PipeReader>,
    },
    /// A delivery worker of the owner's uid (by pid).
    Worker(u32),
}

/// A delivery whose tern-local runs.
pub(crate) struct Running {
    pub(crate) slot: u32,
    pub(crate) id: u64,
    pub(crate) rcpt: Vec<u8>,
    pub(crate) uid: u32,
    pub(crate) via: Via,
    pub(crate) output: Output,
    pub(crate) started: Instant,
    pub(crate) deadline: Instant,
    pub(crate) timeout_secs: u64,
    /// The process group was killed for the timeout.
    pub(crate) timed_out: bool,
}

/// A delivery that ended before any child ran.
pub(crate) struct Refusal {
    pub(crate) outcome: Outcome,
    pub(crate) text: String,
    pub(crate) uid: Option<u32>,
    /// The reason in full, for the log only (the report text, which may
    /// end up in a bounce, stays generic).
    pub(crate) detail: Option<String>,
}

fn refuse(outcome: Outcome, text: impl Into<String>) -> Refusal {
    Refusal {
        outcome,
        text: text.into(),
        uid: None,
        detail: None,
    }
}

fn temporary(text: impl Into<String>) -> Refusal {
    refuse(Outcome::Deferred, text)
}

/// The accounts a system instance never delivers as, and the one it always
/// may (the rule is [`tern_control::uids`]).
pub(crate) type Users = tern_control::uids::DeliveryUsers;

/// Looks the reserved users and `alias` up in the passwd database;
/// `queue_gid` is the group of `queue/cur`.
pub(crate) fn lookup_users(queue_gid: u32) -> Users {
    Users::lookup(&SystemPasswd, Some(queue_gid))
}

/// What a bounce says when a delivery as the owner's uid is refused: the
/// mailbox is unavailable. The reason (uid numbers, control file names)
/// goes to the log only ([`Refusal::detail`]).
pub(crate) const UNAVAILABLE: &str = "Sorry, this mailbox is unavailable. (#5.2.1)";

/// Deferral text when the uid range is misconfigured (detail in the log).
pub(crate) const MISCONFIGURED: &str =
    "Mailbox temporarily unavailable: local configuration error. (#4.3.0)";

/// Whether a system instance may deliver as `uid`/`gid`
/// ([`tern_control::uids::delivery_allowed`]); the refusal's report text is
/// generic and its detail is for the log.
pub(crate) fn uid_allowed(
    uid: u32,
    gid: u32,
    range: (u64, u64),
    users: &Users,
) -> Result<(), Refusal> {
    tern_control::uids::delivery_allowed(uid, gid, range, users).map_err(|why| {
        let (outcome, text) = if why.is_permanent() {
            (Outcome::Failed, UNAVAILABLE)
        } else {
            (Outcome::Deferred, MISCONFIGURED)
        };
        Refusal {
            detail: Some(why.to_string()),
            ..refuse(outcome, text)
        }
    })
}

/// Opens `queue/cur/<bucket>/<id>` without following a symlink, checks it
/// is a regular file owned by the queue owner and at least `offset` bytes
/// long, and positions it at `offset`.
fn open_message(ctx: &Ctx, id: u64, offset: u64) -> Result<File, Refusal> {
    // Every component below queue/ is opened without following links
    // (queue/, cur/ and cur/N/ belong to the queue's uid, which could make
    // any of them a link to a root-only directory) and without blocking
    // (a FIFO planted in cur/ is refused as not a regular file).
    let rel = ctx.layout.cur_dir(id).join(id.to_string());
    let fd = match tern_spool::layout::open_below(
        &ctx.home.queue_dir(),
        &rel,
        tern_spool::layout::Last::File,
    ) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(temporary(format!(
                "message {id} is not in queue/cur (#4.3.0)"
            )));
        }
        Err(e) if tern_spool::layout::refusal(&e).is_some() => {
            // A link, a FIFO, or a file of another uid (a hard link) where
            // the message should be.
            return Err(refuse(
                Outcome::Failed,
                match tern_spool::layout::refusal(&e) {
                    Some(tern_spool::layout::Refused::Owner { .. }) => {
                        "queue file has wrong owner (#5.3.5)"
                    }
                    _ => "queue file is not a regular file (#5.3.5)",
                },
            ));
        }
        Err(e) => {
            return Err(temporary(format!(
                "cannot open the queue file: {e} (#4.3.0)"
            )));
        }
    };
    let mut file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| temporary(format!("cannot examine the queue file: {e} (#4.3.0)")))?;
    if !meta.file_type().is_file() {
        return Err(refuse(
            Outcome::Failed,
            "queue file is not a regular file (#5.3.5)",
        ));
    }
    if meta.uid() != ctx.cur_owner {
        return Err(refuse(
            Outcome::Failed,
            "queue file has wrong owner (#5.3.5)",
        ));
    }
    if offset > meta.len() {
        return Err(refuse(
            Outcome::Failed,
            "message offset lies beyond the end of the queue file (#5.3.5)",
        ));
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| temporary(format!("cannot seek in the queue file: {e} (#4.3.0)")))?;
    Ok(file)
}

/// A delivery checked and ready to run: the owner, the message, and
/// tern-local's arguments.
pub(crate) struct Prepared {
    pub(crate) slot: u32,
    pub(crate) id: u64,
    pub(crate) rcpt: Vec<u8>,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// tern-local's arguments after `--`.
    pub(crate) args: Vec<Vec<u8>>,
    /// The queue file, positioned at the message.
    pub(crate) message: File,
    pub(crate) timeout_secs: u64,
}

impl Prepared {
    /// A refusal for this delivery's owner.
    pub(crate) fn refusal(&self, r: Refusal) -> Refusal {
        Refusal {
            uid: Some(self.uid),
            ..r
        }
    }
}

/// Checks delivery `d` (address, owner, uid policy, queue file), or says
/// at once how it ended.
pub(crate) fn prepare(ctx: &Ctx, d: &Deliver) -> Result<Prepared, Refusal> {
    let Some(at) = d.recipient.iter().rposition(|&b| b == b'@') else {
        return Err(refuse(
            Outcome::Failed,
            "Sorry, address must include host name. (#5.1.3)",
        ));
    };
    if d.recipient.contains(&0) || d.sender.contains(&0) {
        return Err(refuse(
            Outcome::Failed,
            "Sorry, address contains a NUL byte. (#5.1.3)",
        ));
    }
    let (local, domain) = (&d.recipient[..at], &d.recipient[at + 1..]);
    if local.is_empty() {
        return Err(refuse(Outcome::Delivered, "trashed empty local part"));
    }

    let assign =
        Assign::load(&ctx.home.assign_file()).map_err(|e| temporary(format!("{e} (#4.3.0)")))?;
    let (owner, _source) = owner::lookup(local, assign.as_ref(), &ctx.instance, &SystemPasswd)
        .map_err(|e| temporary(e.to_string()))?;
    let with_uid = |r: Refusal| Refusal {
        uid: Some(owner.uid),
        ..r
    };
    let control = Control::new(&ctx.home);
    match ctx.instance {
        Instance::System => {
            let range = control
                .localuidmin()
                .and_then(|min| Ok((min, control.localuidmax()?)))
                .map_err(|e| with_uid(temporary(format!("{e} (#4.3.0)"))))?;
            uid_allowed(owner.uid, owner.gid, range, &ctx.users).map_err(with_uid)?;
        }
        Instance::SingleUser { .. } if owner.uid != ctx.euid => {
            return Err(with_uid(Refusal {
                detail: Some(format!(
                    "cannot deliver as uid {} in a single-user instance",
                    owner.uid
                )),
                ..temporary(MISCONFIGURED)
            }));
        }
        _ => {}
    }

    let timeout_secs = control
        .timeoutlocal()
        .map_err(|e| with_uid(temporary(format!("{e} (#4.3.0)"))))?;
    let default_delivery = control
        .defaultdelivery()
        .map_err(|e| with_uid(temporary(format!("{e} (#4.3.0)"))))?
        .join("\n");

    let message = open_message(ctx, d.id, d.offset).map_err(with_uid)?;
    let args = vec![
        owner.user.as_bytes().to_vec(),
        owner.home.as_os_str().as_bytes().to_vec(),
        local.to_vec(),
        owner.dash.as_bytes().to_vec(),
        owner.ext.clone(),
        domain.to_vec(),
        d.sender.clone(),
        default_delivery.into_bytes(),
    ];
    Ok(Prepared {
        slot: d.slot,
        id: d.id,
        rcpt: d.recipient.clone(),
        uid: owner.uid,
        gid: owner.gid,
        args,
        message,
        timeout_secs,
    })
}

/// The environment, session and uid every tern-local gets (one-delivery
/// or worker): an empty environment but `TERN_HOME` and `PATH`; a new
/// session (a new process group, which a timeout kills) without a
/// controlling terminal, so nothing the recipient runs can reach the
/// terminal tern-start was started from (/dev/tty, TIOCSTI); in a system
/// instance, in the child before exec: no supplementary groups, then the
/// gid, then the uid, then a check that root cannot be regained.
pub(crate) fn local_command(ctx: &Ctx, uid: u32, gid: u32) -> Result<Command, Refusal> {
    let mut cmd = Command::new(ctx.home.bin_dir().join("tern-local"));
    cmd.env_clear()
        .env("TERN_HOME", ctx.home.root())
        .env("PATH", CHILD_PATH);
    if ctx.instance == Instance::System {
        let creds = Credentials::new(uid, gid)
            .map_err(|e| refuse(Outcome::Failed, format!("Sorry, {e}. (#5.7.1)")))?;
        tern_sys::privilege::run_as(&mut cmd, creds);
    } else {
        tern_sys::spawn::new_session(&mut cmd);
    }
    Ok(cmd)
}

/// Runs a prepared delivery in a tern-local of its own.
pub(crate) fn spawn(ctx: &Ctx, p: Prepared) -> Result<Running, Refusal> {
    let (out_r, out_w) = std::io::pipe()
        .map_err(|e| p.refusal(temporary(format!("cannot make a pipe: {e} (#4.3.0)"))))?;
    let out_w2 = out_w
        .try_clone()
        .map_err(|e| p.refusal(temporary(format!("cannot make a pipe: {e} (#4.3.0)"))))?;
    let flags = rustix::fs::fcntl_getfl(&out_r)
        .and_then(|f| rustix::fs::fcntl_setfl(&out_r, f | OFlags::NONBLOCK))
        .map_err(|e| p.refusal(temporary(format!("cannot set up a pipe: {e} (#4.3.0)"))));
    flags?;
    let mut cmd = local_command(ctx, p.uid, p.gid).map_err(|r| p.refusal(r))?;
    cmd.arg("--");
    for a in &p.args {
        cmd.arg(OsStr::from_bytes(a));
    }
    // fds 0, 1 and 2 are the message file and the output pipe, never a
    // terminal.
    let message = p
        .message
        .try_clone()
        .map_err(|e| p.refusal(temporary(format!("cannot pass the message: {e} (#4.3.0)"))))?;
    cmd.stdin(Stdio::from(message))
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(out_w2));
    let spawned = cmd.spawn();
    // The Command holds our copies of the pipe's write end: close them, or
    // the pipe never reaches end of file.
    drop(cmd);
    let child = spawned.map_err(|e| Refusal {
        uid: Some(p.uid),
        ..temporary(format!(
            "cannot run tern-local: {} (#4.3.0)",
            tern_sys::privilege::spawn_error_text(&e)
        ))
    })?;
    Ok(Running::begin(
        &p,
        Via::Process {
            child,
            out: Some(out_r),
        },
    ))
}

impl Running {
    /// A delivery of `p` that starts now, running `via`.
    pub(crate) fn begin(p: &Prepared, via: Via) -> Running {
        let started = Instant::now();
        Running {
            slot: p.slot,
            id: p.id,
            rcpt: p.rcpt.clone(),
            uid: p.uid,
            via,
            output: Output::default(),
            started,
            deadline: started + Duration::from_secs(p.timeout_secs),
            timeout_secs: p.timeout_secs,
            timed_out: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_policy() {
        let users = Users {
            reserved: vec![("ternq", 998), ("terns", 997)],
            alias: Some(996),
            queue_gid: Some(995),
        };
        let range = (1000, 60_000);
        // Refusals first: (uid, gid, range, outcome, text fragment).
        type Case = (u32, u32, (u64, u64), Outcome, &'static str);
        let refused: &[Case] = &[
            (0, 0, range, Outcome::Failed, "as root"),
            (0, 1000, range, Outcome::Failed, "as root"),
            (1000, 0, range, Outcome::Failed, "gid 0"),
            (998, 998, range, Outcome::Failed, "Tern's own user ternq"),
            (
                997,
                997,
                (1, 60_000),
                Outcome::Failed,
                "Tern's own user terns",
            ),
            (999, 999, range, Outcome::Failed, "outside the uids allowed"),
            (1, 1, range, Outcome::Failed, "outside the uids allowed"),
            (
                60_001,
                60_001,
                range,
                Outcome::Failed,
                "outside the uids allowed",
            ),
            (
                65_534,
                65_534,
                range,
                Outcome::Failed,
                "outside the uids allowed",
            ),
            (1000, 1000, (2000, 1000), Outcome::Deferred, "is above"),
            // A user in range whose primary group is the queue's (tern).
            (1000, 995, range, Outcome::Failed, "the queue's group"),
            (996, 995, range, Outcome::Failed, "the queue's group"),
        ];
        for &(uid, gid, range, outcome, text) in refused {
            let r = uid_allowed(uid, gid, range, &users).expect_err("refused");
            assert_eq!(r.outcome, outcome, "{uid}: {}", r.text);
            // The detail (for the log) says why ...
            let detail = r.detail.as_deref().unwrap_or_default();
            assert!(detail.contains(text), "{uid}: {detail}");
            // ... the report text (for the bounce) is generic: no uid, gid
            // or control file.
            let generic = if outcome == Outcome::Failed {
                UNAVAILABLE
            } else {
                MISCONFIGURED
            };
            assert_eq!(r.text, generic, "{uid}");
            let code = if outcome == Outcome::Failed {
                "(#5.2.1)"
            } else {
                "(#4.3.0)"
            };
            assert!(r.text.ends_with(code), "{}", r.text);
        }
        for (uid, range) in [
            (1000, range),
            (60_000, range),
            (4242, range),
            (996, range),
            (996, (2000, 1000)),
            (500, (1, 60_000)),
        ] {
            assert!(uid_allowed(uid, uid, range, &users).is_ok(), "{uid}");
        }
    }
}
