//! `tern-sys`: the only crate in Tern that may contain `unsafe`.
//!
//! It owns the few system calls that the safe layers (std, rustix, nix) do not
//! cover, or cover only through `unsafe` entry points:
//!
//! * [`secure::at_secure`]: `getauxval(AT_SECURE)`, which tells a setuid or
//!   setgid program that its environment must not be trusted (rustix keeps this
//!   private, so libc is used);
//! * [`signals`]: resetting the signal mask and dispositions a program depends
//!   on, and turning crash signals into a meaningful exit code;
//! * [`trigger`]: pulling the queue's wake-up FIFO without blocking;
//! * [`spawn`]: putting descriptors on fixed numbers in a child (pre-exec);
//! * [`privilege`]: dropping root (groups, gid, uid) and verifying that it
//!   cannot be regained, in the process or in a child before `exec`;
//! * [`secure::clear_env`]: emptying a setuid program's environment;
//! * [`terminal`]: a setuid program letting go of its caller's terminal
//!   (`TIOCNOTTY`);
//! * small safe wrappers over rustix for credentials and locks that several
//!   programs share.
//!
//! Trust level: called by every program, including the setuid `tern-queue`.
//! Every `unsafe` block carries a `SAFETY:` comment.
#![deny(unsafe_code)]

pub mod privilege;
pub mod secure;
pub mod signals;
pub mod spawn;
pub mod terminal;
pub mod trigger;

/// `getuid()`: the real user id of the calling process.
pub fn real_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// `getgid()`: the real group id of the calling process.
pub fn real_gid() -> u32 {
    rustix::process::getgid().as_raw()
}

/// `geteuid()`: the effective user id of the calling process.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// `umask(mask)`: sets the file mode creation mask, returns the old one.
pub fn set_umask(mask: u32) -> u32 {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask)).as_raw_mode()
}

/// The login name of `uid` from the passwd database (`getpwuid_r`), if any.
pub fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// The full name (first GECOS field) of `uid` from the passwd database.
pub fn user_gecos_name(uid: u32) -> Option<String> {
    let u = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()?;
    let gecos = u.gecos.to_string_lossy().into_owned();
    let first = gecos.split(',').next().unwrap_or("").trim().to_string();
    if first.is_empty() { None } else { Some(first) }
}

/// The host's node name (`uname(2)`), as `control/me` defaults to.
pub fn node_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// `syncfs(2)`: every dirty page and inode of the file system holding `fd`
/// on stable storage (write-back errors reported since Linux 5.8). Through
/// the C library, so that the tests' fault-injection library (an
/// `LD_PRELOAD` of `syncfs`) reaches it as it reaches `fsync`.
pub fn syncfs(fd: impl std::os::fd::AsFd) -> std::io::Result<()> {
    nix::unistd::syncfs(fd).map_err(std::io::Error::from)
}
