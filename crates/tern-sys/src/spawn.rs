//! Starting children with descriptors on fixed numbers.
#![allow(unsafe_code)]
// Safety argument for this module: the pre-exec hook runs in the child
// between fork and exec, where only async-signal-safe calls are allowed. It
// calls only fcntl(F_DUPFD), dup2 and close on plain integers prepared
// before the fork (or setsid, getsid and getpid), allocates nothing, and
// touches no lock.
// `cloexec_inherited` runs in the parent and only sets close-on-exec flags.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Most descriptors [`place_fds`] moves for one child.
pub const MAX_PLACED: usize = 16;

/// Arranges for `cmd`'s child to have each `(fd, number)` of `fds` open as
/// descriptor `number` (without close-on-exec), whatever numbers the parent
/// had them under. The parent keeps ownership until `cmd` is spawned and
/// dropped. Numbers 0-2 are better given with `stdin`/`stdout`/`stderr`.
///
/// # Panics
/// More than [`MAX_PLACED`] descriptors (a caller bug).
///
/// # References
/// fcntl(2) `F_DUPFD`, dup2(2).
pub fn place_fds(cmd: &mut Command, fds: &[(&OwnedFd, i32)]) {
    assert!(fds.len() <= MAX_PLACED, "place_fds: too many descriptors");
    let mut plan = [(-1i32, -1i32); MAX_PLACED];
    for (slot, (fd, target)) in plan.iter_mut().zip(fds) {
        *slot = (fd.as_raw_fd(), *target);
    }
    let n = fds.len();
    // SAFETY: the closure only makes async-signal-safe system calls on
    // integers copied before the fork (see the module note).
    unsafe {
        cmd.pre_exec(move || {
            let mut tmp = [-1i32; MAX_PLACED];
            // First move every source above every target, so that a source
            // whose number is another's target is not overwritten.
            for i in 0..n {
                let t = libc::fcntl(plan[i].0, libc::F_DUPFD_CLOEXEC, 256);
                if t < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                tmp[i] = t;
            }
            for i in 0..n {
                if libc::dup2(tmp[i], plan[i].1) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(tmp[i]);
            }
            Ok(())
        });
    }
}

/// Makes the calling process the leader of a new session (`setsid`), with
/// no controlling terminal; a process that already leads its own session
/// is left as it is. For a `pre_exec` hook: async-signal-safe, allocates
/// nothing.
///
/// # Errors
/// `setsid` failed and the process does not lead a session (it leads a
/// process group: `CommandExt::process_group` was set on the command).
///
/// # References
/// setsid(2), getsid(2), credentials(7).
pub fn leave_session() -> std::io::Result<()> {
    // SAFETY: setsid, getsid and getpid are plain system calls without
    // pointers.
    unsafe {
        if libc::setsid() >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if libc::getsid(0) == libc::getpid() {
            return Ok(());
        }
        Err(e)
    }
}

/// Makes `cmd`'s child leave its parent's session ([`leave_session`])
/// between `fork` and `exec`: it and everything it starts have no
/// controlling terminal, so none of them can open `/dev/tty` or push input
/// into the caller's terminal (`TIOCSTI`). For children that do not change
/// uid (a single-user instance); [`crate::privilege::run_as`] does the same
/// before its drop. The caller must also give the child no terminal on fds
/// 0, 1 and 2. Do not combine with `CommandExt::process_group`.
pub fn new_session(cmd: &mut Command) {
    // SAFETY: the hook only calls leave_session (async-signal-safe, no
    // allocation).
    unsafe {
        cmd.pre_exec(leave_session);
    }
}

/// True when descriptor `fd` is a terminal (`isatty`).
pub fn is_terminal(fd: i32) -> bool {
    // SAFETY: isatty only queries the descriptor (an ioctl).
    unsafe { libc::isatty(fd) == 1 }
}

/// Marks every descriptor from 3 up close-on-exec, so that nothing this
/// process inherited reaches the programs it starts. A root program that
/// starts others under lower uids (`tern-start`, `tern-lspawn`) calls it
/// first: whatever its caller left open (a root shell's files, cron's or
/// a test harness's descriptors) must not be handed to `ternr`, `ternq`,
/// the logger or a mailbox owner. Descriptors given to a child on purpose
/// (`Stdio`, [`place_fds`]) are made after this and are unaffected.
///
/// # Errors
/// `close_range` failed for a reason other than being unknown (kernels
/// before 5.11 get the `/proc/self/fd` fallback), or `/proc/self/fd`
/// cannot be listed.
///
/// # References
/// close_range(2) `CLOSE_RANGE_CLOEXEC`, fcntl(2) `F_SETFD`, proc(5).
pub fn cloexec_inherited() -> std::io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on
    // descriptors; it closes nothing, so no owner is invalidated.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL)) {
        return Err(e);
    }
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|d| d.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter(|&n| n >= 3)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD only read and set a descriptor flag; a
        // number no longer open (the listing's own) just fails.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// Takes ownership of descriptor `number` inherited from the parent (as
/// placed by [`place_fds`]), after checking with `fcntl(F_GETFD)` that it is
/// open, and marks it close-on-exec so it does not leak further. `None` when
/// it is not open.
///
/// Call at most once per number: the returned `OwnedFd` closes it on drop.
///
/// # References
/// fcntl(2) `F_GETFD`, `F_SETFD`.
pub fn inherited_fd(number: i32) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_GETFD only queries the descriptor table.
    let flags = unsafe { libc::fcntl(number, libc::F_GETFD) };
    if number < 3 || flags < 0 {
        return None;
    }
    // SAFETY: as above; setting FD_CLOEXEC changes no ownership.
    unsafe { libc::fcntl(number, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
    // SAFETY: the descriptor is open (checked above) and, by this function's
    // contract, not owned by anything else in this process.
    Some(unsafe { OwnedFd::from_raw_fd(number) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherited_descriptors_become_close_on_exec() {
        // dup(2) makes a descriptor without close-on-exec, like one a
        // parent leaves open for its child.
        // SAFETY: dup of stdin's number; the result is closed below.
        let fd = unsafe { libc::dup(0) };
        assert!(fd >= 3, "dup: {}", std::io::Error::last_os_error());
        // SAFETY: F_GETFD only queries the descriptor.
        let before = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_eq!(before & libc::FD_CLOEXEC, 0);
        cloexec_inherited().unwrap();
        // SAFETY: as above.
        let after = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        // SAFETY: fd is ours (from dup) and closed once.
        unsafe { libc::close(fd) };
        assert_eq!(after & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }
}
