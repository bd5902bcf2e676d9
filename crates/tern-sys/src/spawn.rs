//! Starting children with descriptors on fixed numbers.
#![allow(unsafe_code)]
// Safety argument for this module: the pre-exec hook runs in the child
// between fork and exec, where only async-signal-safe calls are allowed. It
// calls only fcntl(F_DUPFD), dup2 and close on plain integers prepared
// before the fork, allocates nothing, and touches no lock.

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
