//! Dropping root for good, and proving it.
//!
//! [`drop_to`] is the one way a Tern program gives up root: supplementary
//! groups first (none are kept), then the gid (real, effective and saved),
//! then the uid (all three), optionally the `no_new_privs` flag; then it
//! verifies the result: `getresuid`/`getresgid` return the target in every
//! slot, no supplementary group is left, `setuid(0)` and `setgid(0)` fail,
//! and the permitted and effective capability sets are empty. A target of
//! uid 0 or gid 0 is refused: that would not be a drop.
//!
//! [`run_as`] arranges the same drop in a child between `fork` and `exec`
//! (a `pre_exec` hook), which is how `tern-start` starts its helpers and
//! `tern-lspawn` starts `tern-local`. Before the drop the child leaves its
//! parent's session (`setsid`, [`crate::spawn::leave_session`]): no code of
//! the lower uid ever runs with the caller's controlling terminal (root's,
//! when root starts Tern from a shell), so it cannot open `/dev/tty` or push
//! input into it (`TIOCSTI`). The hook allocates nothing and makes only
//! async-signal-safe system calls.
#![allow(unsafe_code)]
// Safety argument for this module: the `pre_exec` hook runs in the child
// between fork and exec; it calls only setsid, getsid, getpid, setgroups, setresgid, setresuid,
// prctl, getresuid, getresgid, getgroups (into a stack buffer), setuid,
// setgid and capget, all plain system calls on integers and stack memory,
// allocates nothing and takes no lock. `getgroups` and `capget` are given
// buffers of the size they are told.

use nix::errno::Errno;
use nix::unistd::{Gid, Uid};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The errno a child reports to its parent when the drop itself worked but
/// its verification failed (`ENOTRECOVERABLE`, "State not recoverable"):
/// `Command::spawn` then fails with this raw OS error.
pub const VERIFY_FAILED_ERRNO: i32 = libc::ENOTRECOVERABLE;

/// The uid and gid a process drops to. No supplementary groups are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    uid: u32,
    gid: u32,
    no_new_privs: bool,
}

/// Why a drop was refused, failed, or could not be verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropError {
    /// The target is uid 0 or gid 0: refused, that is no drop.
    RootTarget,
    /// `setgroups` failed (typically: not root).
    SetGroups(Errno),
    /// `setresgid` failed.
    SetGid(Errno),
    /// `setresuid` failed.
    SetUid(Errno),
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    NoNewPrivs(Errno),
    /// A query (`getresuid`, `getresgid`, `getgroups`, `capget`) failed.
    Query(Errno),
    /// After the switch, a real, effective or saved id is not the target.
    IdsDiffer,
    /// After the switch, supplementary groups are left.
    GroupsLeft,
    /// `setuid(0)` or `setgid(0)` succeeded after the drop.
    RootRegained,
    /// After the switch, a permitted or effective capability is left.
    CapabilitiesLeft,
}

impl DropError {
    /// The errno that stands for this error across a `pre_exec` hook: the
    /// failing call's own for a step, [`VERIFY_FAILED_ERRNO`] for a failed
    /// verification, `EPERM` for a root target.
    pub fn errno(self) -> i32 {
        match self {
            DropError::RootTarget => libc::EPERM,
            DropError::SetGroups(e)
            | DropError::SetGid(e)
            | DropError::SetUid(e)
            | DropError::NoNewPrivs(e)
            | DropError::Query(e) => e as i32,
            DropError::IdsDiffer
            | DropError::GroupsLeft
            | DropError::RootRegained
            | DropError::CapabilitiesLeft => VERIFY_FAILED_ERRNO,
        }
    }

    /// True when the drop itself may have worked but could not be verified
    /// (the process must end at once).
    pub fn is_verification(self) -> bool {
        self.errno() == VERIFY_FAILED_ERRNO
    }
}

impl std::fmt::Display for DropError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropError::RootTarget => f.write_str("refusing to run as uid 0 or gid 0"),
            DropError::SetGroups(e) => write!(f, "setgroups: {e}"),
            DropError::SetGid(e) => write!(f, "setresgid: {e}"),
            DropError::SetUid(e) => write!(f, "setresuid: {e}"),
            DropError::NoNewPrivs(e) => write!(f, "prctl(PR_SET_NO_NEW_PRIVS): {e}"),
            DropError::Query(e) => write!(f, "cannot query credentials: {e}"),
            DropError::IdsDiffer => f.write_str("ids after the drop are not the target"),
            DropError::GroupsLeft => f.write_str("supplementary groups left after the drop"),
            DropError::RootRegained => f.write_str("root could be regained after the drop"),
            DropError::CapabilitiesLeft => f.write_str("capabilities left after the drop"),
        }
    }
}

impl std::error::Error for DropError {}

/// Why [`Credentials::for_user`] found no usable account.
#[derive(Debug)]
#[non_exhaustive]
pub enum UserError {
    /// No such account.
    Missing,
    /// The account has uid 0 or gid 0.
    Root,
    /// The passwd database could not be read.
    Lookup(Errno),
}

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserError::Missing => f.write_str("no such user"),
            UserError::Root => f.write_str("the user has uid 0 or gid 0"),
            UserError::Lookup(e) => write!(f, "cannot read the passwd database: {e}"),
        }
    }
}

impl std::error::Error for UserError {}

impl Credentials {
    /// Uid `uid`, gid `gid`, no supplementary groups.
    ///
    /// # Errors
    /// [`DropError::RootTarget`] for uid 0 or gid 0.
    pub fn new(uid: u32, gid: u32) -> Result<Credentials, DropError> {
        if uid == 0 || gid == 0 {
            return Err(DropError::RootTarget);
        }
        Ok(Credentials {
            uid,
            gid,
            no_new_privs: false,
        })
    }

    /// The passwd account `name`: its uid and primary gid.
    ///
    /// # Errors
    /// No such account, an account with uid or gid 0, or a failed lookup.
    pub fn for_user(name: &str) -> Result<Credentials, UserError> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => {
                Credentials::new(u.uid.as_raw(), u.gid.as_raw()).map_err(|_| UserError::Root)
            }
            Ok(None) => Err(UserError::Missing),
            Err(e) => Err(UserError::Lookup(e)),
        }
    }

    /// Also sets `no_new_privs`, so that nothing the process execs can
    /// gain privileges (setuid bits and file capabilities are ignored).
    /// Only for programs that never need to run the setuid `tern-queue`.
    pub fn with_no_new_privs(mut self) -> Credentials {
        self.no_new_privs = true;
        self
    }

    /// The target uid.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The target gid.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// Whether `no_new_privs` is set too.
    pub fn no_new_privs(&self) -> bool {
        self.no_new_privs
    }
}

/// `setgroups(0)`, `setresgid(g, g, g)`, `setresuid(u, u, u)`, optionally
/// `prctl(PR_SET_NO_NEW_PRIVS)`, then [`verify`]. Async-signal-safe: no
/// allocation, no lock.
///
/// # Errors
/// The failing step, or the failed check. After an error the process may
/// hold any mix of ids (even root again, for [`DropError::RootRegained`]):
/// it must not go on; a `pre_exec` hook fails the spawn, a program exits.
///
/// # References
/// setgroups(2), setresgid(2), setresuid(2), prctl(2) `PR_SET_NO_NEW_PRIVS`.
pub fn drop_to(c: &Credentials) -> Result<(), DropError> {
    if c.uid == 0 || c.gid == 0 {
        return Err(DropError::RootTarget);
    }
    nix::unistd::setgroups(&[]).map_err(DropError::SetGroups)?;
    let g = Gid::from_raw(c.gid);
    nix::unistd::setresgid(g, g, g).map_err(DropError::SetGid)?;
    let u = Uid::from_raw(c.uid);
    nix::unistd::setresuid(u, u, u).map_err(DropError::SetUid)?;
    if c.no_new_privs {
        nix::sys::prctl::set_no_new_privs().map_err(DropError::NoNewPrivs)?;
    }
    verify(c)
}

/// Checks that the process runs as `c` and cannot become root again:
/// real, effective and saved uid and gid are the target, no supplementary
/// group is set, `setuid(0)` and `setgid(0)` fail, and the permitted and
/// effective capability sets are empty. Async-signal-safe.
///
/// # Errors
/// The first check that fails.
///
/// # References
/// getresuid(2), getresgid(2), getgroups(2), capget(2).
pub fn verify(c: &Credentials) -> Result<(), DropError> {
    let r = nix::unistd::getresuid().map_err(DropError::Query)?;
    if [r.real, r.effective, r.saved]
        .iter()
        .any(|u| u.as_raw() != c.uid)
    {
        return Err(DropError::IdsDiffer);
    }
    let r = nix::unistd::getresgid().map_err(DropError::Query)?;
    if [r.real, r.effective, r.saved]
        .iter()
        .any(|g| g.as_raw() != c.gid)
    {
        return Err(DropError::IdsDiffer);
    }
    // SAFETY: getgroups with a size of 0 only returns the count and
    // writes nothing through the (null) pointer.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n < 0 {
        return Err(DropError::Query(Errno::last()));
    }
    if n != 0 {
        return Err(DropError::GroupsLeft);
    }
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok()
        || nix::unistd::setgid(Gid::from_raw(0)).is_ok()
    {
        return Err(DropError::RootRegained);
    }
    let (effective, permitted) = capabilities().map_err(DropError::Query)?;
    if effective != 0 || permitted != 0 {
        return Err(DropError::CapabilitiesLeft);
    }
    Ok(())
}

/// `capget` for this process: the effective and permitted sets (all 64
/// bits of version 3).
fn capabilities() -> Result<(u64, u64), Errno> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: version 3 of capget reads one header and writes exactly two
    // data structs, which both live on this stack frame with the kernel's
    // layout (three u32 each).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(Errno::last());
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
    ))
}

/// For a set-user-id program: makes the real and saved uid equal to the
/// effective one (`setresuid(e, e, e)`), so the process cannot return to
/// its caller's uid (root, when root runs it), then verifies that the
/// three are equal and that `setuid(caller)` fails. Returns the caller's
/// (former real) uid, which the program may still record. Gids are left
/// alone: an unprivileged process cannot drop its caller's groups.
///
/// # Errors
/// [`DropError::SetUid`] when the switch fails, [`DropError::IdsDiffer`]
/// or [`DropError::RootRegained`] when the check does (the process must
/// end at once).
///
/// # References
/// setresuid(2), getresuid(2).
pub fn shed_caller_uid() -> Result<u32, DropError> {
    let r = nix::unistd::getresuid().map_err(DropError::Query)?;
    let (caller, me) = (r.real, r.effective);
    nix::unistd::setresuid(me, me, me).map_err(DropError::SetUid)?;
    let r = nix::unistd::getresuid().map_err(DropError::Query)?;
    if r.real != me || r.saved != me || r.effective != me {
        return Err(DropError::IdsDiffer);
    }
    if caller != me && nix::unistd::setuid(caller).is_ok() {
        return Err(DropError::RootRegained);
    }
    Ok(caller.as_raw())
}

/// Makes `cmd`'s child leave its parent's session (`setsid`, while still
/// the parent's uid) and then [`drop_to`] `c`, after `fork` and before
/// `exec`. If either fails, or the drop cannot be verified, the child never
/// execs and `spawn` returns the error's [`DropError::errno`] as a raw OS
/// error ([`VERIFY_FAILED_ERRNO`] for a failed verification; `setsid`'s own
/// errno).
///
/// The new session has no controlling terminal, so the program (and all
/// it runs) cannot reach the caller's terminal through `/dev/tty` or
/// `TIOCSTI`; the caller must also give it no terminal on fds 0, 1 and 2.
/// The child is the leader of a new process group too: do not combine
/// with `CommandExt::process_group` (that makes `setsid` fail); `killpg`
/// on the child's pid reaches the group.
///
/// Replaces `CommandExt::uid`/`gid`: do not use those on the same command.
pub fn run_as(cmd: &mut Command, c: Credentials) {
    // SAFETY: the hook calls leave_session (setsid/getsid/getpid) and
    // drop_to, which make async-signal-safe system calls on a Copy value
    // captured before the fork and allocate nothing
    // (io::Error::from_raw_os_error does not allocate).
    unsafe {
        cmd.pre_exec(move || {
            crate::spawn::leave_session()?;
            drop_to(&c).map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
        });
    }
}

/// A readable reason for a failed `spawn` of a command prepared with
/// [`run_as`]: the verification failure gets words of its own.
pub fn spawn_error_text(e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(VERIFY_FAILED_ERRNO) {
        "the privilege drop could not be verified (root could be regained, or ids or capabilities were left)".to_string()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[test]
    fn root_targets_are_refused() {
        for (uid, gid) in [(0, 0), (0, 100), (100, 0)] {
            assert_eq!(Credentials::new(uid, gid), Err(DropError::RootTarget));
        }
        let c = Credentials::new(100, 200).unwrap();
        assert_eq!((c.uid(), c.gid(), c.no_new_privs()), (100, 200, false));
        assert!(c.with_no_new_privs().no_new_privs());
    }

    #[test]
    fn errors_map_to_errnos() {
        assert_eq!(DropError::RootTarget.errno(), libc::EPERM);
        assert_eq!(DropError::SetUid(Errno::EAGAIN).errno(), libc::EAGAIN);
        for e in [
            DropError::IdsDiffer,
            DropError::GroupsLeft,
            DropError::RootRegained,
            DropError::CapabilitiesLeft,
        ] {
            assert!(e.is_verification(), "{e}");
            assert_eq!(e.errno(), VERIFY_FAILED_ERRNO);
        }
        assert!(!DropError::SetGroups(Errno::EPERM).is_verification());
        let text = spawn_error_text(&std::io::Error::from_raw_os_error(VERIFY_FAILED_ERRNO));
        assert!(text.contains("could not be verified"), "{text}");
    }

    #[test]
    fn missing_user() {
        assert!(matches!(
            Credentials::for_user("tern-no-such-user-xyz"),
            Err(UserError::Missing)
        ));
        assert!(matches!(
            Credentials::for_user("root"),
            Err(UserError::Root)
        ));
    }

    #[test]
    fn shedding_the_caller_uid_without_setuid_changes_nothing() {
        // Not setuid: real = effective already, so the caller is us.
        let me = rustix::process::getuid().as_raw();
        assert_eq!(shed_caller_uid(), Ok(me));
        assert_eq!(rustix::process::getuid().as_raw(), me);
    }

    #[test]
    fn the_running_process_is_not_the_target() {
        // Whoever runs the tests, it is not uid 54321 with gid 54321.
        let c = Credentials::new(54_321, 54_321).unwrap();
        assert_eq!(verify(&c), Err(DropError::IdsDiffer));
    }

    /// `(Uid line, Gid line, Groups line, CapEff, CapPrm, NoNewPrivs)` of a
    /// child that ran `cat /proc/self/status` as `c`.
    fn status_as(c: Credentials) -> std::io::Result<String> {
        let mut cmd = Command::new("/bin/cat");
        cmd.arg("/proc/self/status")
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        run_as(&mut cmd, c);
        let out = cmd.output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn field<'a>(status: &'a str, key: &str) -> &'a str {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{key} missing in {status}"))
    }

    #[test]
    fn a_child_runs_as_the_target_and_without_capabilities() {
        let c = Credentials::new(54_321, 54_322).unwrap();
        if rustix::process::geteuid().as_raw() != 0 {
            // Not root: the first step fails and the child never execs.
            let e = status_as(c).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
            return;
        }
        let s = status_as(c).unwrap();
        assert_eq!(field(&s, "Uid:"), "54321\t54321\t54321\t54321");
        assert_eq!(field(&s, "Gid:"), "54322\t54322\t54322\t54322");
        assert_eq!(field(&s, "Groups:"), "");
        assert_eq!(field(&s, "CapEff:"), "0000000000000000");
        assert_eq!(field(&s, "CapPrm:"), "0000000000000000");
        assert_eq!(field(&s, "NoNewPrivs:"), "0");
        let s = status_as(c.with_no_new_privs()).unwrap();
        assert_eq!(field(&s, "NoNewPrivs:"), "1");
        assert_eq!(field(&s, "Uid:"), "54321\t54321\t54321\t54321");
    }
}
