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
