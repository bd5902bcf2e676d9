//! Whether the process runs with elevated privileges (setuid/setgid).
#![allow(unsafe_code)]
// Safety argument for this module: `getauxval` only reads the auxiliary vector
// the kernel placed on the initial stack; it takes and returns plain integers.

/// `getauxval(AT_SECURE)`: true when the kernel marked this process as
/// running with privileges its caller does not have (setuid, setgid, or file
/// capabilities). Such a process must not trust its environment.
///
/// # References
/// getauxval(3), ld.so(8) "secure-execution mode".
pub fn at_secure() -> bool {
    // SAFETY: getauxval has no preconditions; it returns 0 for an unknown
    // type, which we read as "not secure" only after also comparing ids below.
    let v = unsafe { libc::getauxval(libc::AT_SECURE) };
    if v != 0 {
        return true;
    }
    // Belt and braces: a differing real and effective id is elevated too.
    rustix::process::getuid() != rustix::process::geteuid()
        || rustix::process::getgid() != rustix::process::getegid()
}

/// Why [`clear_env`] left the environment alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClearEnvError {
    /// `/proc/self/status` could not be read, so the thread count is
    /// unknown.
    ThreadsUnknown,
    /// More than one thread runs: another could be reading the environment.
    NotSingleThreaded,
}

impl std::fmt::Display for ClearEnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClearEnvError::ThreadsUnknown => "cannot count threads (/proc/self/status)",
            ClearEnvError::NotSingleThreaded => "more than one thread runs",
        })
    }
}

impl std::error::Error for ClearEnvError {}

/// The number of threads of this process (`Threads:` of
/// `/proc/self/status`).
fn thread_count() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// `clearenv()`: empties the environment, so that nothing later in the
/// process (the standard library's `RUST_*` variables included) can be
/// steered by the caller's variables. For a setuid program, first thing in
/// `main`. Refuses unless the process has exactly one thread, the condition
/// under which changing the environment is sound.
///
/// # Errors
/// More than one thread, or the thread count is unknown: the environment is
/// left as it is.
///
/// # References
/// clearenv(3), proc(5) `/proc/self/status`.
pub fn clear_env() -> Result<(), ClearEnvError> {
    match thread_count() {
        Some(1) => {}
        Some(_) => return Err(ClearEnvError::NotSingleThreaded),
        None => return Err(ClearEnvError::ThreadsUnknown),
    }
    // SAFETY: exactly one thread runs (checked just above; only this thread
    // could start another), so no other thread reads or writes the
    // environment while clearenv replaces it.
    let rc = unsafe { libc::clearenv() };
    debug_assert_eq!(rc, 0, "glibc's clearenv always returns 0");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_env_refuses_with_threads() {
        // The test harness runs tests on threads: more than one runs here.
        let _keep =
            std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        assert_eq!(clear_env(), Err(ClearEnvError::NotSingleThreaded));
        assert!(thread_count().unwrap() > 1);
    }
}
