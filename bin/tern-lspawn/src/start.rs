//! Starting one delivery: address split, owner lookup, queue file checks,
//! and the `tern-local` child.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{PipeReader, Seek as _, SeekFrom};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use tern_control::owner::{self, Instance, SystemPasswd};
use tern_control::{Assign, Control, Home};
use tern_ipc::local::Output;
use tern_ipc::{Deliver, Outcome};
use tern_spool::layout::Layout;

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
}

/// A delivery whose tern-local runs.
pub(crate) struct Running {
    pub(crate) slot: u32,
    pub(crate) id: u64,
    pub(crate) rcpt: Vec<u8>,
    pub(crate) uid: u32,
    pub(crate) child: Child,
    /// The output pipe; `None` after end of file.
    pub(crate) out: Option<PipeReader>,
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
}

fn refuse(outcome: Outcome, text: impl Into<String>) -> Refusal {
    Refusal {
        outcome,
        text: text.into(),
        uid: None,
    }
}

fn temporary(text: impl Into<String>) -> Refusal {
    refuse(Outcome::Deferred, text)
}

/// Opens `queue/cur/<bucket>/<id>` without following a symlink, checks it
/// is a regular file owned by the queue owner and at least `offset` bytes
/// long, and positions it at `offset`.
fn open_message(ctx: &Ctx, id: u64, offset: u64) -> Result<File, Refusal> {
    let path = ctx
        .home
        .queue_dir()
        .join(ctx.layout.cur_dir(id))
        .join(id.to_string());
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = match rustix::fs::open(&path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => {
            return Err(temporary(format!(
                "message {id} is not in queue/cur (#4.3.0)"
            )));
        }
        Err(Errno::LOOP) => {
            return Err(refuse(
                Outcome::Failed,
                "queue file is not a regular file (#5.3.5)",
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

/// Starts delivery `d`, or says at once how it ended.
pub(crate) fn start(ctx: &Ctx, d: &Deliver) -> Result<Running, Refusal> {
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
    match ctx.instance {
        Instance::System if owner.uid == 0 => {
            return Err(with_uid(temporary(
                "Not allowed to perform deliveries as root. (#4.3.0)",
            )));
        }
        Instance::SingleUser { .. } if owner.uid != ctx.euid => {
            return Err(with_uid(temporary(format!(
                "cannot deliver as uid {} in a single-user instance (#4.3.0)",
                owner.uid
            ))));
        }
        _ => {}
    }

    let control = Control::new(&ctx.home);
    let timeout_secs = control
        .timeoutlocal()
        .map_err(|e| with_uid(temporary(format!("{e} (#4.3.0)"))))?;
    let default_delivery = control
        .defaultdelivery()
        .map_err(|e| with_uid(temporary(format!("{e} (#4.3.0)"))))?
        .join("\n");

    let message = open_message(ctx, d.id, d.offset).map_err(with_uid)?;
    let (out_r, out_w) = std::io::pipe()
        .map_err(|e| with_uid(temporary(format!("cannot make a pipe: {e} (#4.3.0)"))))?;
    let out_w2 = out_w
        .try_clone()
        .map_err(|e| with_uid(temporary(format!("cannot make a pipe: {e} (#4.3.0)"))))?;
    let flags = rustix::fs::fcntl_getfl(&out_r)
        .and_then(|f| rustix::fs::fcntl_setfl(&out_r, f | OFlags::NONBLOCK))
        .map_err(|e| with_uid(temporary(format!("cannot set up a pipe: {e} (#4.3.0)"))));
    flags?;

    let mut cmd = Command::new(ctx.home.bin_dir().join("tern-local"));
    cmd.arg("--")
        .arg(&owner.user)
        .arg(&owner.home)
        .arg(OsStr::from_bytes(local))
        .arg(&owner.dash)
        .arg(OsStr::from_bytes(&owner.ext))
        .arg(OsStr::from_bytes(domain))
        .arg(OsStr::from_bytes(&d.sender))
        .arg(&default_delivery)
        .env_clear()
        .env("TERN_HOME", ctx.home.root())
        .env("PATH", CHILD_PATH)
        .stdin(Stdio::from(message))
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(out_w2))
        .process_group(0);
    if ctx.instance == Instance::System {
        // std sets the groups to none, then the gid, then the uid, in the
        // child before exec.
        cmd.uid(owner.uid).gid(owner.gid);
    }
    let spawned = cmd.spawn();
    // The Command holds our copies of the pipe's write end: close them, or
    // the pipe never reaches end of file.
    drop(cmd);
    let child =
        spawned.map_err(|e| with_uid(temporary(format!("cannot run tern-local: {e} (#4.3.0)"))))?;
    let started = Instant::now();
    Ok(Running {
        slot: d.slot,
        id: d.id,
        rcpt: d.recipient.clone(),
        uid: owner.uid,
        child,
        out: Some(out_r),
        output: Output::default(),
        started,
        deadline: started + Duration::from_secs(timeout_secs),
        timeout_secs,
        timed_out: false,
    })
}
