//! `ternctl install` and `ternctl uninstall`: the root install of a system
//! instance (docs/install.md, docs/security.md).
//!
//! Install creates the Tern users and groups when they are missing, lays
//! out `TERN_HOME` as `conf/tern-files` says (owners and modes set through
//! descriptors opened without following symbolic links, so a queue user
//! cannot redirect root's `chown` with a planted link), copies the
//! programs (each replaced atomically: written beside, synced, renamed),
//! fills `control/` from the host name when it is empty, and optionally
//! links the system's `sendmail` to Tern's, installs the cron line of a
//! send-only host or the systemd units. Run again, it upgrades the programs
//! and leaves control files and the queue's contents alone.
//!
//! Uninstall removes the programs, links, cron line and unchanged units;
//! the queue, `control/` and the users stay unless `--purge --yes-really`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{ErrorKind, Write as _};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use tern_addr::{Charset, Domain};
use tern_control::Home;
use tern_spool::layout;

use crate::Usage;
use crate::manifest::{self, Entry, Kind};

/// The groups of a root install.
pub const GROUPS: [&str; 6] = ["tern", "ternd", "ternr", "ternv", "ternl", "alias"];

/// One Tern user: name, primary group, home (`None` = `TERN_HOME`, else a
/// directory under it), and its GECOS comment.
struct UserSpec {
    name: &'static str,
    group: &'static str,
    home: Option<&'static str>,
    comment: &'static str,
}

/// The users of a root install (design.md, "Processes and uids").
const USERS: [UserSpec; 7] = [
    UserSpec {
        name: "ternd",
        group: "ternd",
        home: None,
        comment: "Tern SMTP front",
    },
    UserSpec {
        name: "ternq",
        group: "tern",
        home: None,
        comment: "Tern queue",
    },
    UserSpec {
        name: "terns",
        group: "tern",
        home: None,
        comment: "Tern queue manager",
    },
    UserSpec {
        name: "ternr",
        group: "ternr",
        home: None,
        comment: "Tern remote delivery",
    },
    UserSpec {
        name: "ternv",
        group: "ternv",
        home: None,
        comment: "Tern mail authentication checker",
    },
    UserSpec {
        name: "ternl",
        group: "ternl",
        home: None,
        comment: "Tern logger",
    },
    UserSpec {
        name: "alias",
        group: "alias",
        home: Some("alias"),
        comment: "Tern alias user",
    },
];

/// The systemd units a full (not send-only) install puts in place: the
/// queue manager, the SMTP front, and the queue gate the SMTP front queues
/// through (it runs with no_new_privs, so it cannot use the setuid
/// tern-queue).
const UNITS: [(&str, &str); 5] = [
    ("tern.service", include_str!("../../../conf/tern.service")),
    (
        "tern-smtpd.socket",
        include_str!("../../../conf/tern-smtpd.socket"),
    ),
    (
        "tern-smtpd@.service",
        include_str!("../../../conf/tern-smtpd@.service"),
    ),
    (
        "tern-queue.socket",
        include_str!("../../../conf/tern-queue.socket"),
    ),
    (
        "tern-queue@.service",
        include_str!("../../../conf/tern-queue@.service"),
    ),
];

/// `conf/cron`: its first line that is not a comment is the system line.
const CRON: &str = include_str!("../../../conf/cron");

/// The file under `/etc/cron.d` (no dot: cron skips names with one).
const CRON_FILE: &str = "etc/cron.d/tern";

/// The links `--sendmail-links` makes, relative to the system root.
pub const SENDMAIL_LINKS: [&str; 3] = ["usr/sbin/sendmail", "usr/lib/sendmail", "usr/bin/mailq"];

/// Suffix of what `--sendmail-links` saved.
pub const SAVED_SUFFIX: &str = ".tern-saved";

/// `ternctl install`'s options.
pub struct Options {
    /// Where the built programs are.
    pub bin_dir: PathBuf,
    /// No SMTP service; the cron queue runner instead.
    pub send_only: bool,
    /// Link `/usr/sbin/sendmail`, `/usr/lib/sendmail`, `/usr/bin/mailq`.
    pub sendmail_links: bool,
    /// Prefix of the system paths outside `TERN_HOME` (`/`; tests and
    /// packaging give another).
    pub system_root: PathBuf,
    /// `control/me` for a new instance (default: the host name).
    pub me: Option<String>,
    /// Hashed subdirectories of a new queue.
    pub split: Option<u32>,
}

/// What was done, printed at the end.
struct Report(Vec<String>);

impl Report {
    fn say(&mut self, line: impl Into<String>) {
        self.0.push(line.into());
    }
}

fn must_be_root(what: &str) -> Result<()> {
    if tern_sys::effective_uid() != 0 {
        return Err(Usage(format!("{what} must be run as root")).into());
    }
    Ok(())
}

/// The first of the usual no-login shells that exists.
fn nologin() -> &'static str {
    ["/usr/sbin/nologin", "/sbin/nologin", "/bin/false"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("/bin/false")
}

/// Runs an account tool (`groupadd`, `useradd`), preferring /usr/sbin.
fn run_tool(tool: &str, args: &[&OsStr]) -> Result<()> {
    let path = ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(tool));
    let out = Command::new(&path)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", path.display()))?;
    if !out.status.success() {
        bail!(
            "{tool} {} failed ({}): {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The numeric ids of the names the manifest uses.
struct Ids {
    users: HashMap<String, u32>,
    groups: HashMap<String, u32>,
}

impl Ids {
    fn uid(&self, name: &str) -> Result<u32> {
        self.users
            .get(name)
            .copied()
            .ok_or_else(|| anyhow!("conf/tern-files names an unknown user {name}"))
    }

    fn gid(&self, name: &str) -> Result<u32> {
        self.groups
            .get(name)
            .copied()
            .ok_or_else(|| anyhow!("conf/tern-files names an unknown group {name}"))
    }
}

/// Creates the missing groups and users and checks the existing ones.
fn ensure_accounts(home: &Path, report: &mut Report) -> Result<Ids> {
    use nix::unistd::{Group, User};
    let mut groups = HashMap::from([("root".to_string(), 0u32)]);
    for g in GROUPS {
        let gid = match Group::from_name(g).with_context(|| format!("looking up group {g}"))? {
            Some(grp) => grp.gid.as_raw(),
            None => {
                run_tool("groupadd", &[OsStr::new("--system"), OsStr::new(g)])?;
                let grp = Group::from_name(g)?
                    .ok_or_else(|| anyhow!("group {g} missing after groupadd"))?;
                report.say(format!("created group {g} (gid {})", grp.gid));
                grp.gid.as_raw()
            }
        };
        if gid == 0 {
            bail!("group {g} has gid 0; refusing (docs/install.md)");
        }
        groups.insert(g.to_string(), gid);
    }
    let mut users = HashMap::from([("root".to_string(), 0u32)]);
    let shell = nologin();
    for u in &USERS {
        let dir = match u.home {
            None => home.to_path_buf(),
            Some(sub) => home.join(sub),
        };
        let user =
            match User::from_name(u.name).with_context(|| format!("looking up user {}", u.name))? {
                Some(user) => user,
                None => {
                    run_tool(
                        "useradd",
                        &[
                            OsStr::new("--system"),
                            OsStr::new("--gid"),
                            OsStr::new(u.group),
                            OsStr::new("--home-dir"),
                            dir.as_os_str(),
                            OsStr::new("--no-create-home"),
                            OsStr::new("--shell"),
                            OsStr::new(shell),
                            OsStr::new("--comment"),
                            OsStr::new(u.comment),
                            OsStr::new(u.name),
                        ],
                    )?;
                    let user = User::from_name(u.name)?
                        .ok_or_else(|| anyhow!("user {} missing after useradd", u.name))?;
                    report.say(format!(
                        "created user {} (uid {}, group {}, home {}, shell {shell}, no password)",
                        u.name,
                        user.uid,
                        u.group,
                        dir.display()
                    ));
                    user
                }
            };
        let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
        if uid == 0 || gid == 0 {
            bail!(
                "user {} has uid or gid 0; a Tern user must not be root (docs/install.md)",
                u.name
            );
        }
        if users.values().any(|&other| other == uid) {
            bail!("user {} shares uid {uid} with another Tern user", u.name);
        }
        let tern = groups["tern"];
        let want = groups[u.group];
        if u.group == "tern" && gid != tern {
            bail!(
                "user {} exists with primary group {gid}, but Tern needs the group tern \
                 (gid {tern}): usermod -g tern {}",
                u.name,
                u.name
            );
        }
        if u.group != "tern" && gid == tern {
            bail!(
                "user {} has the primary group tern, which would let it read the queue's \
                 messages; give it its own group: usermod -g {} {}",
                u.name,
                u.group,
                u.name
            );
        }
        if gid != want {
            report.say(format!(
                "note: user {} exists with primary group {gid}, not {} ({want}); kept",
                u.name, u.group
            ));
        }
        if user.dir != dir {
            report.say(format!(
                "note: user {}'s home is {}, not {}; kept{}",
                u.name,
                user.dir.display(),
                dir.display(),
                if u.name == "alias" {
                    " (mail for postmaster follows the alias user's home)"
                } else {
                    ""
                }
            ));
        }
        users.insert(u.name.to_string(), uid);
    }
    if let Some(grp) = Group::from_name("tern")? {
        for m in &grp.mem {
            if ["ternd", "ternr", "ternv", "ternl", "alias"].contains(&m.as_str()) {
                bail!(
                    "user {m} is a member of the group tern, which would let it read the queue's \
                     messages (a supervisor that sets supplementary groups gives it them): \
                     gpasswd -d {m} tern"
                );
            }
        }
    }
    Ok(Ids { users, groups })
}

/// `openat(dir, name, O_DIRECTORY | O_NOFOLLOW)`.
fn open_dir_at(dir: BorrowedFd<'_>, name: &str) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens the directory `rel` (`.` = `home`) under `home`, one component
/// at a time, never following a symbolic link.
fn open_rel_dir(home: &OwnedFd, rel: &str) -> Result<OwnedFd> {
    let mut fd = home.try_clone()?;
    if rel == "." {
        return Ok(fd);
    }
    for part in rel.split('/') {
        fd = open_dir_at(fd.as_fd(), part).map_err(|e| {
            anyhow!("cannot open {rel} (component {part}) without following links: {e}")
        })?;
    }
    Ok(fd)
}

fn set_owner_mode(fd: &OwnedFd, uid: u32, gid: u32, mode: u32, path: &str) -> Result<()> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .with_context(|| format!("chown {path}"))?;
    // After chown, which may clear set-id bits.
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).with_context(|| format!("chmod {path}"))?;
    Ok(())
}

/// The text of a configuration file the manifest names.
fn config_text(path: &str, me: &str) -> Result<String> {
    Ok(match path {
        "control/me" => format!("{me}\n"),
        "control/locals" | "control/rcpthosts" => crate::init::local_list(me),
        "control/defaultdelivery" => "./Maildir/\n".to_string(),
        p if p.starts_with("alias/.qmail-") => "./Maildir/\n".to_string(),
        p => bail!("conf/tern-files names a configuration file ternctl cannot write: {p}"),
    })
}

/// `control/me` for the install: `--me`, else the existing file's first
/// line, else the host name.
fn choose_me(home: &Path, given: Option<&str>, report: &mut Report) -> Result<String> {
    if let Some(me) = given {
        match Domain::parse(me.as_bytes(), Charset::Ascii) {
            Ok(d) if !d.is_literal() => return Ok(d.to_string()),
            _ => return Err(Usage(format!("--me {me}: not a host name")).into()),
        }
    }
    if let Ok(t) = fs::read_to_string(home.join("control/me"))
        && let Some(line) = t.lines().next()
        && !line.trim().is_empty()
    {
        return Ok(line.trim().to_string());
    }
    let (me, from_node) = crate::init::host_name();
    if !from_node {
        report.say("note: the host name is not a valid domain; control/me is localhost");
    }
    Ok(me)
}

/// Applies one manifest entry under `home`.
fn apply(
    home: &OwnedFd,
    e: &Entry,
    ids: &Ids,
    opts: &Options,
    me: &str,
    report: &mut Report,
) -> Result<()> {
    let (uid, gid) = (ids.uid(&e.owner)?, ids.gid(&e.group)?);
    if e.path == "." {
        return set_owner_mode(home, uid, gid, e.mode, ".");
    }
    let parent = open_rel_dir(home, e.parent().unwrap_or("."))?;
    let name = e.name();
    match &e.kind {
        Kind::Dir => {
            match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
                Ok(()) => report.say(format!("created {}/", e.path)),
                Err(Errno::EXIST) => {}
                Err(err) => return Err(anyhow!("mkdir {}: {err}", e.path)),
            }
            let fd = open_dir_at(parent.as_fd(), name)
                .map_err(|err| anyhow!("{} is not a directory (or is a link): {err}", e.path))?;
            set_owner_mode(&fd, uid, gid, e.mode, &e.path)
        }
        Kind::Program {
            optional,
            immutable,
        } => {
            let src = opts.bin_dir.join(name);
            if !src.is_file() {
                if *optional {
                    report.say(format!(
                        "skipped bin/{name} (not in {})",
                        opts.bin_dir.display()
                    ));
                    return Ok(());
                }
                bail!("{} is missing", src.display());
            }
            // An immutable file cannot be renamed over: clear the mark.
            set_immutable(&parent, name, false).with_context(|| format!("chattr -i {}", e.path))?;
            install_program(&parent, name, &src, uid, gid, e.mode)?;
            report.say(format!("installed {} (mode {:04o})", e.path, e.mode));
            if *immutable {
                match set_immutable(&parent, name, true) {
                    Ok(()) => {
                        // Between the chown to its owner and the mark, the
                        // owner could have opened the file and changed it
                        // (or linked it); marked, nobody can: check it now.
                        if let Err(err) = check_installed(&parent, name, &src, uid, e.mode) {
                            let _ = set_immutable(&parent, name, false);
                            let _ = rustix::fs::unlinkat(&parent, name, AtFlags::empty());
                            bail!("{} changed while it was installed, removed: {err}", e.path);
                        }
                        report.say(format!("made {} immutable", e.path))
                    }
                    Err(err) => report.say(format!(
                        "note: cannot make {} immutable on this file system ({err}); its owner could change it",
                        e.path
                    )),
                }
            }
            Ok(())
        }
        Kind::Link { target } => {
            match rustix::fs::readlinkat(&parent, name, Vec::new()) {
                Ok(t) if t.as_bytes() == target.as_bytes() => {}
                Ok(_) | Err(Errno::NOENT) | Err(Errno::INVAL) => {
                    let tmp = format!(".{name}.tern-new");
                    let _ = rustix::fs::unlinkat(&parent, tmp.as_str(), AtFlags::empty());
                    rustix::fs::symlinkat(target.as_str(), &parent, tmp.as_str())
                        .with_context(|| format!("symlink {}", e.path))?;
                    rustix::fs::renameat(&parent, tmp.as_str(), &parent, name)
                        .with_context(|| format!("rename to {}", e.path))?;
                    report.say(format!("linked {} -> {target}", e.path));
                }
                Err(err) => return Err(anyhow!("readlink {}: {err}", e.path)),
            }
            rustix::fs::chownat(
                &parent,
                name,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .with_context(|| format!("chown {}", e.path))?;
            Ok(())
        }
        Kind::Config => {
            match rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
                // Kept as the administrator left it, but only if it is
                // theirs: alias/ used to be the alias user's, which could
                // have replaced alias/.qmail-postmaster with its own file
                // (or link) to reroute postmaster's mail.
                Ok(st) if st.st_uid != uid => bail!(
                    "{} belongs to uid {}, not {}: someone else may have written it \
                     (alias/ was the alias user's before this version); check its contents, \
                     then chown {}:{} it (or remove it to get the default) and run the \
                     install again",
                    e.path,
                    st.st_uid,
                    e.owner,
                    e.owner,
                    e.group
                ),
                Ok(_) => return Ok(()),
                Err(Errno::NOENT) => {}
                Err(err) => return Err(anyhow!("stat {}: {err}", e.path)),
            }
            let text = config_text(&e.path, me)?;
            let fd = rustix::fs::openat(
                &parent,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .with_context(|| format!("create {}", e.path))?;
            let mut f = File::from(fd);
            f.write_all(text.as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("write {}", e.path))?;
            set_owner_mode(&OwnedFd::from(f), uid, gid, e.mode, &e.path)?;
            let _ = rustix::fs::fsync(&parent);
            report.say(format!(
                "created {}: {}",
                e.path,
                text.trim_end().replace('\n', ", ")
            ));
            Ok(())
        }
        Kind::SpoolFile | Kind::Fifo => {
            let fifo = e.kind == Kind::Fifo;
            // NONBLOCK: a FIFO opened for reading without a writer must not
            // block (the trigger; or one the queue's uid planted as
            // queue/format, refused below).
            let flags = OFlags::RDONLY
                | OFlags::NOFOLLOW
                | OFlags::NONBLOCK
                | OFlags::CLOEXEC
                | OFlags::NOCTTY;
            let fd = rustix::fs::openat(&parent, name, flags, Mode::empty())
                .with_context(|| format!("open {} (made by tern-spool)", e.path))?;
            let st = rustix::fs::fstat(&fd)?;
            let want = if fifo {
                FileType::Fifo
            } else {
                FileType::RegularFile
            };
            if FileType::from_raw_mode(st.st_mode) != want {
                bail!(
                    "{} is not a {}",
                    e.path,
                    if fifo { "FIFO" } else { "regular file" }
                );
            }
            // Its directory belongs to the queue's uid, which could have
            // put a hard link to any file of the file system here (even
            // with fs.protected_hardlinks=0): never hand such a file over.
            if st.st_nlink != 1 {
                bail!(
                    "{} has {} hard links: it may be another file linked in; refusing to change its owner (remove it and run the install again)",
                    e.path,
                    st.st_nlink
                );
            }
            set_owner_mode(&fd, uid, gid, e.mode, &e.path)
        }
    }
}

/// Sets or clears the immutable flag (`FS_IMMUTABLE_FL`, `chattr +i`) of
/// `dir/name`, opened without following a link. A missing file, or a
/// file system without the flag when clearing, is no error.
fn set_immutable(dir: &OwnedFd, name: &str, on: bool) -> rustix::io::Result<()> {
    use rustix::fs::IFlags;
    let fd = match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // Missing, or a symbolic link (which has no flags): nothing to clear.
        Err(Errno::NOENT | Errno::LOOP) if !on => return Ok(()),
        Err(e) => return Err(e),
    };
    let flags = match rustix::fs::ioctl_getflags(&fd) {
        Ok(f) => f,
        Err(Errno::NOTTY | Errno::OPNOTSUPP | Errno::INVAL) if !on => return Ok(()),
        Err(e) => return Err(e),
    };
    if flags.contains(IFlags::IMMUTABLE) == on {
        return Ok(());
    }
    let new = if on {
        flags | IFlags::IMMUTABLE
    } else {
        flags - IFlags::IMMUTABLE
    };
    rustix::fs::ioctl_setflags(&fd, new)
}

/// Checks that `dir/NAME` is a regular file with one link, owner `uid`,
/// mode `mode`, and the same bytes as `src`.
fn check_installed(dir: &OwnedFd, name: &str, src: &Path, uid: u32, mode: u32) -> Result<()> {
    use std::io::Read as _;
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
        || st.st_nlink != 1
        || st.st_uid != uid
        || st.st_mode & 0o7777 != mode
    {
        bail!(
            "not a regular file with one link, owner {uid} and mode {mode:04o} \
             (links {}, owner {}, mode {:04o})",
            st.st_nlink,
            st.st_uid,
            st.st_mode & 0o7777
        );
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    File::from(fd).read_to_end(&mut a)?;
    File::open(src)?.read_to_end(&mut b)?;
    if a != b {
        bail!("its contents differ from {}", src.display());
    }
    Ok(())
}

/// Copies `src` to `dir/.NAME.tern-new`, syncs it, sets owner and mode,
/// and renames it over `dir/NAME`: a running program keeps its old file,
/// a new start gets the whole new one.
fn install_program(
    dir: &OwnedFd,
    name: &str,
    src: &Path,
    uid: u32,
    gid: u32,
    mode: u32,
) -> Result<()> {
    let tmp = format!(".{name}.tern-new");
    let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    let fd = rustix::fs::openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .with_context(|| format!("create bin/{tmp}"))?;
    let mut out = File::from(fd);
    let mut input = File::open(src).with_context(|| format!("open {}", src.display()))?;
    std::io::copy(&mut input, &mut out)
        .and_then(|_| out.sync_all())
        .with_context(|| format!("copy {} to bin/{tmp}", src.display()))?;
    let fd = OwnedFd::from(out);
    set_owner_mode(&fd, uid, gid, mode, &format!("bin/{tmp}"))?;
    rustix::fs::renameat(dir, tmp.as_str(), dir, name)
        .with_context(|| format!("rename bin/{tmp} to bin/{name}"))?;
    Ok(())
}

/// The cron line of a send-only host for `home`.
pub fn cron_text(home: &Path) -> String {
    let line = CRON
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .expect("conf/cron has a system line");
    format!(
        "# /etc/cron.d/tern: the queue runner of a send-only Tern host (ternctl install\n\
         # --send-only, from conf/cron; ternctl uninstall removes it).\n{}\n",
        line.replace("/var/tern", &home.display().to_string())
    )
}

/// The systemd units for `home`.
fn unit_texts(home: &Path) -> Vec<(&'static str, String)> {
    UNITS
        .iter()
        .map(|(name, text)| {
            (
                *name,
                text.replace("/var/tern", &home.display().to_string()),
            )
        })
        .collect()
}

/// Writes `path` with `text` (mode 0644, atomically) if it is missing; an
/// existing different file is kept and the new text written beside it as
/// `NAME.tern-new`. Returns what happened, for the report.
fn place_file(path: &Path, text: &str) -> Result<String> {
    match fs::read(path) {
        Ok(old) if old == text.as_bytes() => {
            return Ok(format!("kept {} (unchanged)", path.display()));
        }
        Ok(_) => {
            let mut new = path.as_os_str().to_owned();
            new.push(".tern-new");
            write_atomic(Path::new(&new), text)?;
            return Ok(format!(
                "kept {} (changed by hand); the new version is {}",
                path.display(),
                Path::new(&new).display()
            ));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("mkdir {}", parent.display()))?;
    }
    write_atomic(path, text)?;
    Ok(format!("installed {}", path.display()))
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".ternctl-tmp");
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc_nofollow())
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}

/// `O_NOFOLLOW` as the raw flag `OpenOptionsExt::custom_flags` takes.
fn libc_nofollow() -> i32 {
    OFlags::NOFOLLOW.bits() as i32
}

/// `--sendmail-links`: each of [`SENDMAIL_LINKS`] becomes a link to
/// `home/bin/sendmail`; what was there is renamed to `NAME.tern-saved`.
fn sendmail_links(home: &Path, root: &Path, report: &mut Report) -> Result<()> {
    let target = home.join("bin/sendmail");
    for rel in SENDMAIL_LINKS {
        let path = root.join(rel);
        if fs::read_link(&path).is_ok_and(|t| t == target) {
            report.say(format!("kept {} -> {}", path.display(), target.display()));
            continue;
        }
        let mut saved = path.as_os_str().to_owned();
        saved.push(SAVED_SUFFIX);
        let saved = PathBuf::from(saved);
        if fs::symlink_metadata(&path).is_ok() {
            if fs::symlink_metadata(&saved).is_ok() {
                bail!(
                    "both {} and {} exist: move one away first",
                    path.display(),
                    saved.display()
                );
            }
            fs::rename(&path, &saved)
                .with_context(|| format!("rename {} to {}", path.display(), saved.display()))?;
            report.say(format!("saved {} as {}", path.display(), saved.display()));
        } else if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("mkdir {}", parent.display()))?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".ternctl-tmp");
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp)
            .with_context(|| format!("symlink {}", path.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("rename to {}", path.display()))?;
        report.say(format!("linked {} -> {}", path.display(), target.display()));
    }
    if home != Path::new(tern_control::DEFAULT_HOME) {
        report.say(format!(
            "note: these programs were built for {}; without TERN_HOME in the environment \
             /usr/sbin/sendmail uses that home, not {} (build with TERN_DEFAULT_HOME={}, \
             which scripts/install does when it builds)",
            tern_control::DEFAULT_HOME,
            home.display(),
            home.display()
        ));
    }
    Ok(())
}

/// Notes each existing directory above the home that someone other than
/// root could use to replace the home: not owned by root, or writable by
/// group or others without the sticky bit.
fn check_ancestors(home: &Path, report: &mut Report) {
    use std::os::unix::fs::MetadataExt as _;
    let mut p = home.parent();
    while let Some(dir) = p {
        if let Ok(m) = fs::metadata(dir) {
            let loose = m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0;
            if m.uid() != 0 || loose {
                report.say(format!(
                    "note: {} is {}; whoever controls it can replace {}",
                    dir.display(),
                    if m.uid() != 0 {
                        format!("owned by uid {}", m.uid())
                    } else {
                        format!("writable by others (mode {:04o})", m.mode() & 0o7777)
                    },
                    home.display()
                ));
            }
        }
        p = dir.parent();
    }
}

/// `ternctl install`.
pub fn install(home: &Home, opts: &Options) -> Result<()> {
    must_be_root("ternctl install")?;
    let dir = home.root().to_path_buf();
    if !dir.is_absolute() {
        return Err(Usage(format!(
            "{}: the home must be an absolute path",
            dir.display()
        ))
        .into());
    }
    if dir.join(tern_control::SINGLE_USER_MARKER).exists() {
        return Err(Usage(format!(
            "{} is a single-user instance ({} exists); install a system instance elsewhere",
            dir.display(),
            tern_control::SINGLE_USER_MARKER
        ))
        .into());
    }
    let entries = manifest::entries();
    for e in &entries {
        if let Kind::Program {
            optional: false, ..
        } = e.kind
            && !opts.bin_dir.join(e.name()).is_file()
        {
            return Err(Usage(format!(
                "{} has no {}: build first (cargo build --release) or give --bin-dir",
                opts.bin_dir.display(),
                e.name()
            ))
            .into());
        }
    }
    if let Some(s) = opts.split
        && !(1..=layout::MAX_SPLIT).contains(&s)
    {
        return Err(Usage(format!(
            "--split {s}: must be between 1 and {}",
            layout::MAX_SPLIT
        ))
        .into());
    }
    let mut report = Report(Vec::new());
    check_ancestors(&dir, &mut report);
    let ids = ensure_accounts(&dir, &mut report)?;

    if !dir.exists() {
        fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        report.say(format!("created {}", dir.display()));
    }
    let home_fd = rustix::fs::open(
        &dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("open {} (a directory, not a link)", dir.display()))?;
    if rustix::fs::statat(&home_fd, "bin", AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
    {
        return Err(Usage(format!(
            "{}/bin is a symbolic link (a single-user instance?); not installing over it",
            dir.display()
        ))
        .into());
    }
    let me = choose_me(&dir, opts.me.as_deref(), &mut report)?;

    // The queue: tern-spool makes a new one (format file, split, FIFO);
    // an existing one is only read, never rebuilt.
    let qdir = home.queue_dir();
    let split = match layout::Layout::read(&qdir) {
        Ok(l) => {
            if let Some(s) = opts.split
                && s != l.split
            {
                return Err(Usage(format!(
                    "--split {s}: the existing queue has split {}, which cannot change",
                    l.split
                ))
                .into());
            }
            l.split
        }
        Err(tern_spool::Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
            let split = opts.split.unwrap_or(layout::DEFAULT_SPLIT);
            layout::create(&qdir, split)
                .with_context(|| format!("cannot create the queue in {}", qdir.display()))?;
            report.say(format!("created {}/ (split {split})", qdir.display()));
            split
        }
        Err(e) => return Err(e).context("cannot read the existing queue's format"),
    };

    let tree = manifest::expand(&entries, split);
    let bar = crate::progress::Progress::new(tree.len() as u64, "install");
    for (n, e) in tree.iter().enumerate() {
        bar.set(n as u64, e.path.clone());
        apply(&home_fd, e, &ids, opts, &me, &mut report)
            .with_context(|| format!("{}/{}", dir.display(), e.path))?;
    }
    drop(bar);
    let _ = rustix::fs::fsync(&home_fd);
    if let Ok(b) = open_rel_dir(&home_fd, "bin") {
        let _ = rustix::fs::fsync(&b);
    }

    if opts.sendmail_links {
        sendmail_links(&dir, &opts.system_root, &mut report)?;
    }
    if opts.send_only {
        let line = place_file(&opts.system_root.join(CRON_FILE), &cron_text(&dir))?;
        report.say(line);
        // An earlier full install's SMTP service goes: send-only means
        // nothing listens.
        let units = opts.system_root.join("etc/systemd/system");
        let present: Vec<_> = unit_texts(&dir)
            .into_iter()
            .filter(|(name, _)| fs::symlink_metadata(units.join(name)).is_ok())
            .collect();
        if !present.is_empty() {
            report.say(
                "an earlier install's units are removed: first run systemctl disable --now \
                 tern.service tern-smtpd.socket tern-queue.socket, then systemctl daemon-reload",
            );
        }
        for (name, text) in present {
            remove_if_ours(&units.join(name), &text, &mut report)?;
        }
        report.say("send-only: no SMTP service; cron runs tern-start --once every 5 minutes");
    } else {
        // An earlier send-only install's cron runner goes: the daemon runs
        // the queue now.
        remove_if_ours(
            &opts.system_root.join(CRON_FILE),
            &cron_text(&dir),
            &mut report,
        )?;
        let units = opts.system_root.join("etc/systemd/system");
        if units.is_dir() {
            for (name, text) in unit_texts(&dir) {
                let line = place_file(&units.join(name), &text)?;
                report.say(line);
            }
            report.say(
                "start with: systemctl daemon-reload && systemctl enable --now tern.service tern-queue.socket tern-smtpd.socket",
            );
        } else {
            report.say(format!(
                "no {}: run {}/bin/tern-start under your supervisor and tern-smtpd under tcpserver \
                 or inetd (docs/install.md, conf/)",
                units.display(),
                dir.display()
            ));
        }
    }
    report.say(format!("TERN_HOME={}", dir.display()));
    let mut out = report.0.join("\n");
    out.push('\n');
    crate::show::emit(&out);
    Ok(())
}

/// `ternctl uninstall`'s options.
pub struct UninstallOptions {
    /// Prefix of the system paths outside `TERN_HOME`.
    pub system_root: PathBuf,
    /// Remove `TERN_HOME` entirely (queue, control, users, alias).
    pub purge: bool,
    /// The second confirmation `--purge` needs.
    pub yes_really: bool,
}

/// Processes whose program lies under `bin` (`/proc/PID/exe`).
fn running_from(bin: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(exe) = fs::read_link(format!("/proc/{pid}/exe"))
            && exe.starts_with(bin)
        {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            out.push(format!("{pid} ({})", comm.trim_end()));
        }
    }
    out
}

/// Removes `path` if it holds exactly `text`; says what happened.
fn remove_if_ours(path: &Path, text: &str, report: &mut Report) -> Result<()> {
    match fs::read(path) {
        Ok(old) if old == text.as_bytes() => {
            fs::remove_file(path).with_context(|| format!("remove {}", path.display()))?;
            report.say(format!("removed {}", path.display()));
        }
        Ok(_) => report.say(format!(
            "kept {} (changed by hand; remove it yourself)",
            path.display()
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    }
    let mut new = path.as_os_str().to_owned();
    new.push(".tern-new");
    if fs::remove_file(&new).is_ok() {
        report.say(format!("removed {}", Path::new(&new).display()));
    }
    Ok(())
}

/// Number of entries in `queue/new/*/` and `queue/cur/*/`, counted
/// without following a link the queue's uid put there (root runs this).
fn queued(qdir: &Path) -> usize {
    let count = |rel: &Path| -> Vec<std::ffi::OsString> {
        let Ok(fd) = layout::open_below(qdir, rel, layout::Last::Dir) else {
            return Vec::new();
        };
        rustix::fs::Dir::read_from(&fd)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                use std::os::unix::ffi::OsStrExt as _;
                std::ffi::OsStr::from_bytes(e.file_name().to_bytes()).to_owned()
            })
            .filter(|n| n != "." && n != "..")
            .collect()
    };
    let mut n = 0;
    for top in [layout::NEW_DIR, layout::CUR_DIR] {
        for b in count(Path::new(top)) {
            n += count(&Path::new(top).join(b)).len();
        }
    }
    n
}

/// `ternctl uninstall`.
pub fn uninstall(home: &Home, opts: &UninstallOptions) -> Result<()> {
    must_be_root("ternctl uninstall")?;
    if opts.purge && !opts.yes_really {
        return Err(Usage(format!(
            "--purge removes {} with its queue and control files; say --purge --yes-really",
            home.root().display()
        ))
        .into());
    }
    let dir = home.root().to_path_buf();
    let bin = home.bin_dir();
    let running = running_from(&bin);
    if !running.is_empty() {
        bail!(
            "Tern is running from {}: {}; stop it first (systemctl stop tern.service tern-smtpd.socket tern-queue.socket)",
            bin.display(),
            running.join(", ")
        );
    }
    let mut report = Report(Vec::new());

    let target = bin.join("sendmail");
    for rel in SENDMAIL_LINKS {
        let path = opts.system_root.join(rel);
        if fs::read_link(&path).is_ok_and(|t| t == target) {
            fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
            report.say(format!("removed {}", path.display()));
            let mut saved = path.as_os_str().to_owned();
            saved.push(SAVED_SUFFIX);
            let saved = PathBuf::from(saved);
            if fs::symlink_metadata(&saved).is_ok() {
                fs::rename(&saved, &path)
                    .with_context(|| format!("restore {}", saved.display()))?;
                report.say(format!(
                    "restored {} from {}",
                    path.display(),
                    saved.display()
                ));
            }
        }
    }
    remove_if_ours(
        &opts.system_root.join(CRON_FILE),
        &cron_text(&dir),
        &mut report,
    )?;
    let units = opts.system_root.join("etc/systemd/system");
    for (name, text) in unit_texts(&dir) {
        remove_if_ours(&units.join(name), &text, &mut report)?;
    }

    if bin.is_dir() && !fs::symlink_metadata(&bin)?.file_type().is_symlink() {
        for e in manifest::entries() {
            if !matches!(e.kind, Kind::Program { .. } | Kind::Link { .. }) {
                continue;
            }
            let name = e.name();
            let path = bin.join(name);
            if matches!(e.kind, Kind::Program { .. })
                && let Ok(dir) = rustix::fs::open(
                    &bin,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            {
                set_immutable(&dir, name, false)
                    .with_context(|| format!("chattr -i {}", path.display()))?;
            }
            if fs::symlink_metadata(&path).is_ok() {
                fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
                report.say(format!("removed {}", path.display()));
            }
            let _ = fs::remove_file(bin.join(format!(".{name}.tern-new")));
        }
        match fs::remove_dir(&bin) {
            Ok(()) => report.say(format!("removed {}/", bin.display())),
            Err(_) => report.say(format!("kept {}/ (not empty)", bin.display())),
        }
    }

    if opts.purge {
        if dir.exists() {
            // std's remove_dir_all never follows a symbolic link.
            fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
            report.say(format!(
                "removed {} (queue, control files, alias/)",
                dir.display()
            ));
        }
    } else if dir.exists() {
        report.say(format!(
            "kept {}/queue ({} messages), control/, users/, alias/; remove them with \
             ternctl uninstall --purge --yes-really",
            dir.display(),
            queued(&home.queue_dir())
        ));
    }
    report.say(format!(
        "the users ({}) and groups ({}) stay: userdel/groupdel them if nothing else uses them",
        USERS.map(|u| u.name).join(" "),
        GROUPS.join(" ")
    ));
    let mut out = report.0.join("\n");
    out.push('\n');
    crate::show::emit(&out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_texts() {
        assert_eq!(
            config_text("control/me", "mx.example").unwrap(),
            "mx.example\n"
        );
        assert_eq!(
            config_text("control/rcpthosts", "mx.example").unwrap(),
            "localhost\nmx.example\n"
        );
        assert_eq!(
            config_text("alias/.qmail-postmaster", "x").unwrap(),
            "./Maildir/\n"
        );
        assert!(config_text("control/other", "x").is_err());
        // Every configuration file of the manifest has a text.
        for e in manifest::entries() {
            if e.kind == Kind::Config {
                config_text(&e.path, "mx.example").unwrap();
            }
        }
    }

    #[test]
    fn cron_and_units_follow_the_home() {
        let t = cron_text(Path::new("/srv/mail"));
        let line = t.lines().find(|l| !l.starts_with('#')).unwrap();
        assert!(
            line.starts_with(
                "*/5 * * * *  root  TERN_HOME=/srv/mail /srv/mail/bin/tern-start --once"
            ),
            "{line}"
        );
        assert!(!t.contains("/var/tern"));
        for (name, text) in unit_texts(Path::new("/srv/mail")) {
            assert!(!text.contains("/var/tern"), "{name}");
            if name.ends_with(".service") {
                assert!(text.contains("/srv/mail/bin/"), "{name}");
            }
        }
    }

    #[test]
    fn an_installed_program_is_checked_after_it_is_marked() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("ternctl-check-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let src = dir.join("src");
        fs::write(&src, b"program bytes").unwrap();
        fs::write(dir.join("prog"), b"program bytes").unwrap();
        fs::set_permissions(dir.join("prog"), fs::Permissions::from_mode(0o711)).unwrap();
        let fd = rustix::fs::open(&dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let me = tern_sys::effective_uid();
        check_installed(&fd, "prog", &src, me, 0o711).unwrap();
        // Wrong mode, wrong owner.
        assert!(check_installed(&fd, "prog", &src, me, 0o4711).is_err());
        assert!(check_installed(&fd, "prog", &src, me + 1, 0o711).is_err());
        // A second link (made in the window) is refused.
        fs::hard_link(dir.join("prog"), dir.join("link")).unwrap();
        assert!(check_installed(&fd, "prog", &src, me, 0o711).is_err());
        fs::remove_file(dir.join("link")).unwrap();
        // Changed bytes.
        fs::write(dir.join("prog"), b"planted code!").unwrap();
        assert!(check_installed(&fd, "prog", &src, me, 0o711).is_err());
        // A symbolic link is not followed.
        fs::remove_file(dir.join("prog")).unwrap();
        std::os::unix::fs::symlink(&src, dir.join("prog")).unwrap();
        assert!(check_installed(&fd, "prog", &src, me, 0o711).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_manifest_name_is_an_account_install_makes() {
        for e in manifest::entries() {
            assert!(
                e.owner == "root" || USERS.iter().any(|u| u.name == e.owner),
                "{}",
                e.owner
            );
            assert!(
                e.group == "root" || GROUPS.contains(&e.group.as_str()),
                "{}",
                e.group
            );
        }
    }
}
