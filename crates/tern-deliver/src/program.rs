//! Program delivery: `|command` lines, run by `/bin/sh -c` in the home
//! directory, with a sealed copy of exactly the message on standard input
//! and qmail's environment (built by the caller, see [`crate::deliver`]).
//!
//! Standard output and standard error go to one pipe; the first
//! [`MAX_OUTPUT`] bytes are kept for the delivery report, the rest is read
//! and dropped. The exit status is classified by [`classify`].

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use crate::{Error, ErrorKind};

/// Bytes of a program's output kept for the report.
pub const MAX_OUTPUT: usize = 4000;

/// What a program's exit status means (qmail-command(8)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramStatus {
    /// Exit 0: delivered; go on with the next line.
    Success,
    /// Exit 99: delivered; ignore the following lines (forwards already
    /// collected are still sent).
    SuccessStop,
    /// Exit 100, 64, 65, 70, 76, 77, 78 or 112: permanent failure.
    Permanent,
    /// Any other exit code, or killed by a signal: temporary failure.
    Temporary,
}

/// Classifies an exit code.
pub fn classify_code(code: i32) -> ProgramStatus {
    match code {
        0 => ProgramStatus::Success,
        99 => ProgramStatus::SuccessStop,
        64 | 65 | 70 | 76 | 77 | 78 | 100 | 112 => ProgramStatus::Permanent,
        _ => ProgramStatus::Temporary,
    }
}

/// Classifies an exit status (killed by a signal: temporary).
pub fn classify(status: ExitStatus) -> ProgramStatus {
    match status.code() {
        Some(code) => classify_code(code),
        None => ProgramStatus::Temporary,
    }
}

/// A program that ran and succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramRun {
    /// It exited 99: skip the following lines.
    pub stop: bool,
    /// Its output (at most [`MAX_OUTPUT`] bytes).
    pub output: Vec<u8>,
}

/// Reads `r` to its end, keeping the first [`MAX_OUTPUT`] bytes.
fn read_bounded(mut r: impl Read) -> io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(kept),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let room = MAX_OUTPUT - kept.len();
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("program exited {code}"),
        (None, Some(sig)) => format!("program killed by signal {sig}"),
        (None, None) => "program ended abnormally".to_string(),
    }
}

/// Runs `command` with `/bin/sh -c` in `home`, with exactly the
/// environment `env` and `stdin` as standard input.
///
/// # Errors
/// [`ErrorKind::ProgramPermanent`] or [`ErrorKind::ProgramTemporary`] per
/// [`classify`], the text being the program's output (or its exit status
/// when it printed nothing); temporary when it cannot be started.
pub fn run(
    command: &[u8],
    home: &Path,
    env: &[(&str, Vec<u8>)],
    stdin: File,
) -> Result<ProgramRun, Error> {
    let start_err = |e: io::Error| {
        Error::new(
            ErrorKind::ProgramTemporary,
            format!("Unable to run program: {e}. (#4.3.0)"),
        )
    };
    let (out_r, out_w) = io::pipe().map_err(start_err)?;
    let out_w2 = out_w.try_clone().map_err(start_err)?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(OsStr::from_bytes(command))
        .current_dir(home)
        .env_clear()
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(out_w2));
    for (k, v) in env {
        cmd.env(k, OsStr::from_bytes(v));
    }
    let child = cmd.spawn();
    // The Command holds the pipe's write ends: drop it, or the read below
    // never sees end of file.
    drop(cmd);
    let mut child = child.map_err(start_err)?;
    let output = read_bounded(out_r);
    let status = child.wait().map_err(|e| {
        Error::new(
            ErrorKind::ProgramTemporary,
            format!("Unable to wait for program: {e}. (#4.3.0)"),
        )
    })?;
    let output = output.map_err(|e| {
        Error::new(
            ErrorKind::ProgramTemporary,
            format!("Unable to read program output: {e}. (#4.3.0)"),
        )
    })?;
    let text = || {
        let trimmed = String::from_utf8_lossy(output.trim_ascii()).into_owned();
        if trimmed.is_empty() {
            describe(status)
        } else {
            trimmed
        }
    };
    match classify(status) {
        ProgramStatus::Success => Ok(ProgramRun {
            stop: false,
            output,
        }),
        ProgramStatus::SuccessStop => Ok(ProgramRun { stop: true, output }),
        ProgramStatus::Permanent => Err(Error::new(ErrorKind::ProgramPermanent, text())),
        ProgramStatus::Temporary => Err(Error::new(ErrorKind::ProgramTemporary, text())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{message, scratch};

    #[test]
    fn exit_code_table() {
        use ProgramStatus::*;
        for code in [64, 65, 70, 76, 77, 78, 100, 112] {
            assert_eq!(classify_code(code), Permanent, "{code}");
        }
        for code in [1, 2, 63, 66, 75, 98, 101, 111, 113, 126, 127, 255, -1] {
            assert_eq!(classify_code(code), Temporary, "{code}");
        }
        assert_eq!(classify_code(0), Success);
        assert_eq!(classify_code(99), SuccessStop);
        assert_eq!(classify(ExitStatus::from_raw(9)), Temporary, "SIGKILL");
        assert_eq!(classify(ExitStatus::from_raw(100 << 8)), Permanent);
    }

    fn sh(cmd: &str) -> Result<ProgramRun, Error> {
        let home = scratch("program");
        let m = message(b"the message\n");
        run(
            cmd.as_bytes(),
            &home,
            &[("PATH", b"/usr/bin:/bin".to_vec())],
            m.sealed_copy().unwrap(),
        )
    }

    #[test]
    fn statuses_and_output() {
        let ok = sh("cat; echo err >&2").unwrap();
        assert_eq!(ok.output, b"the message\nerr\n");
        assert!(!ok.stop);
        assert!(sh("exit 99").unwrap().stop);
        let e = sh("echo 'no such list'; exit 100").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ProgramPermanent);
        assert!(!e.is_temporary());
        assert_eq!(e.to_string(), "no such list");
        let e = sh("exit 111").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ProgramTemporary);
        assert_eq!(e.to_string(), "program exited 111");
        let e = sh("kill -9 $$").unwrap_err();
        assert!(e.is_temporary());
        assert_eq!(e.to_string(), "program killed by signal 9");
        let big = sh("head -c 100000 /dev/zero | tr '\\0' x").unwrap();
        assert_eq!(big.output.len(), MAX_OUTPUT);
        // The input is a file holding exactly the message: read twice.
        let twice = sh("cat >/dev/null; cat /dev/stdin; cat /dev/stdin").unwrap();
        assert_eq!(twice.output, b"the message\nthe message\n");
    }
}
