//! `tern-checkpassword`: a checkpassword-compatible program that checks
//! logins against `$TERN_HOME/control/passwords` (argon2id hashes, written
//! by `ternctl passwd`), for sites without another password backend.
//!
//! Interface (checkpassword): `tern-checkpassword prog [args...]`. It reads
//! `login\0password\0timestamp\0` from fd 3 (at most 512 bytes), and when
//! the password is right it runs `prog args...` with `USER` and
//! `AUTHUSER` set to the login (tern-smtpd gives `/bin/true`).
//!
//! Security posture: the input comes from a network client through
//! tern-smtpd: bounded, parsed strictly. The password is never logged.
//! Unknown logins cost the same argon2 work as wrong passwords; argon2
//! compares in constant time.
//!
//! Reads: `$TERN_HOME/control/passwords`. Exit codes: see [`Exit`] and
//! tern-checkpassword(8).
#![forbid(unsafe_code)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use tern_checkpassword::{FILE_NAME, Passwords, verify};
use tern_log::Event;

const PROG: &str = "tern-checkpassword";

/// Most bytes read from fd 3.
const MAX_INPUT: usize = 512;

/// Exit codes (the checkpassword convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Exit {
    /// 1: wrong password or unknown login.
    Rejected = 1,
    /// 2: misuse: no program to run, fd 3 missing, or its data malformed
    /// or over 512 bytes.
    Usage = 2,
    /// 111: temporary trouble: the passwords file is missing, unreadable
    /// or malformed, a stored hash is broken, or the program cannot be
    /// run.
    Trouble = 111,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

fn fail(exit: Exit, reason: &str) -> ExitCode {
    Event::new(PROG, "trouble")
        .field("exit", format!("{exit:?}").as_str())
        .field("reason", reason)
        .emit();
    exit.into()
}

/// Splits `login\0password\0timestamp\0`.
fn parse(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut parts = input.splitn(4, |&b| b == 0);
    let login = parts.next()?;
    let password = parts.next()?;
    let _timestamp = parts.next()?;
    // What follows the third NUL is ignored (checkpassword allows more
    // fields); without a third NUL there is no fourth part.
    parts.next()?;
    (!login.is_empty()).then_some((login, password))
}

fn main() -> ExitCode {
    tern_log::install_panic_hook(PROG, 111);
    let next: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if next.is_empty() {
        eprintln!(
            "usage: tern-checkpassword prog [args...]  (login\\0password\\0timestamp\\0 on fd 3)"
        );
        return fail(Exit::Usage, "no program to run");
    }
    let Some(fd3) = tern_sys::spawn::inherited_fd(3) else {
        return fail(Exit::Usage, "fd 3 is not open");
    };
    let mut input = Vec::with_capacity(MAX_INPUT + 1);
    if let Err(e) = std::fs::File::from(fd3)
        .take(MAX_INPUT as u64 + 1)
        .read_to_end(&mut input)
    {
        return fail(Exit::Usage, &format!("reading fd 3: {e}"));
    }
    if input.len() > MAX_INPUT {
        input.fill(0);
        return fail(Exit::Usage, "more than 512 bytes on fd 3");
    }
    let Some((login, password)) = parse(&input) else {
        input.fill(0);
        return fail(Exit::Usage, "fd 3 is not login\\0password\\0timestamp\\0");
    };
    let home = match tern_control::Home::from_env() {
        Ok(h) => h,
        Err(e) => return fail(Exit::Trouble, &e.to_string()),
    };
    let path = home.control_dir().join(FILE_NAME);
    let passwords = match Passwords::load(&path) {
        Ok(p) => p,
        Err(e) => return fail(Exit::Trouble, &e.to_string()),
    };
    let ok = match verify(&passwords, login, password) {
        Ok(ok) => ok,
        Err(e) => return fail(Exit::Trouble, &e.to_string()),
    };
    let login = login.to_vec();
    input.fill(0);
    Event::new(PROG, "check")
        .field("user", &login)
        .field("result", if ok { "ok" } else { "fail" })
        .emit();
    if !ok {
        return Exit::Rejected.into();
    }
    let login = <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(login);
    let err = std::process::Command::new(&next[0])
        .args(&next[1..])
        .env("USER", &login)
        .env("AUTHUSER", &login)
        .exec();
    fail(
        Exit::Trouble,
        &format!("cannot run the next program: {err}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_fd3_data() {
        for bad in [
            &b""[..],
            b"joe",
            b"joe\0pw",
            b"joe\0pw\0",
            b"joe\0pw\0ts",
            b"\0pw\0ts\0",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(parse(b"joe\0pw\0<1@x>\0"), Some((&b"joe"[..], &b"pw"[..])));
        assert_eq!(parse(b"joe\0\0\0"), Some((&b"joe"[..], &b""[..])));
    }
}
