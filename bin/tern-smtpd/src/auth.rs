//! SMTP AUTH through the checkpassword interface: the configured program
//! (`control/checkpassword`: an absolute path and its arguments) runs with
//! `/bin/true` appended as the program to run on success, and reads
//! `login\0password\0timestamp\0` from fd 3 (a pipe). Exit 0 accepts,
//! 111 (or death by a signal, or no exit within the deadline) is a
//! temporary failure, any other exit rejects. Its stdin and stdout are
//! /dev/null; its stderr is ours (the log).

use std::io::Write;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tern_smtp::AuthVerdict;
use tern_smtp::auth::Credentials;

/// The program checkpassword runs after a success.
const NEXT: &str = "/bin/true";

/// Checks `creds` with the checker `argv` (program first), waiting at most
/// `timeout`. Never logs the password.
pub(crate) fn check(
    argv: &[String],
    creds: &Credentials,
    timestamp: &str,
    timeout: Duration,
    env: &[(String, String)],
) -> Result<AuthVerdict, String> {
    let (program, args) = argv.split_first().ok_or("no checkpassword program")?;
    let (reader, mut writer) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let reader = OwnedFd::from(reader);
    let mut cmd = Command::new(program);
    cmd.args(args)
        .arg(NEXT)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .envs(env.iter().map(|(k, v)| (k, v)));
    tern_sys::spawn::place_fds(&mut cmd, &[(&reader, 3)]);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    drop(cmd);
    drop(reader);
    let mut data = Vec::with_capacity(creds.login.len() + creds.password.len() + 64);
    for part in [&creds.login[..], &creds.password, timestamp.as_bytes()] {
        data.extend_from_slice(part);
        data.push(0);
    }
    // At most ~600 bytes: fits the pipe buffer, never blocks. A checker
    // that exits without reading gives EPIPE, which is not our problem.
    let _ = writer.write_all(&data);
    data.fill(0);
    drop(writer);
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Ok(match status.code() {
                    Some(0) => AuthVerdict::Accepted,
                    Some(111) | None => AuthVerdict::TempFail,
                    Some(_) => AuthVerdict::Rejected,
                });
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} did not exit within {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials::new(b"joe".to_vec(), b"secret".to_vec()).unwrap()
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into(), "sh".into()]
    }

    #[test]
    fn bad_checkers() {
        let t = Duration::from_secs(5);
        assert!(check(&[], &creds(), "<1@x>", t, &[]).is_err());
        assert!(check(&["/nonexistent/checker".into()], &creds(), "<1@x>", t, &[]).is_err());
        assert_eq!(
            check(&sh("exit 1"), &creds(), "<1@x>", t, &[]),
            Ok(AuthVerdict::Rejected)
        );
        assert_eq!(
            check(&sh("exit 2"), &creds(), "<1@x>", t, &[]),
            Ok(AuthVerdict::Rejected)
        );
        assert_eq!(
            check(&sh("exit 111"), &creds(), "<1@x>", t, &[]),
            Ok(AuthVerdict::TempFail)
        );
        assert_eq!(
            check(&sh("kill -9 $$"), &creds(), "<1@x>", t, &[]),
            Ok(AuthVerdict::TempFail)
        );
        let slow = check(
            &sh("sleep 5"),
            &creds(),
            "<1@x>",
            Duration::from_millis(100),
            &[],
        );
        assert!(slow.is_err());
    }

    #[test]
    fn fd3_protocol_and_next_program() {
        // Accept only when fd 3 holds exactly joe\0secret\0<1@x>\0 and the
        // last argument is /bin/true.
        let script = r#"
            want=$(printf 'joe\0secret\0<1@x>\0' | od -An -c)
            got=$(od -An -c <&3)
            eval last=\${$#}
            [ "$got" = "$want" ] && [ "$last" = /bin/true ] && exec "$last"
            exit 1"#;
        let t = Duration::from_secs(5);
        assert_eq!(
            check(&sh(script), &creds(), "<1@x>", t, &[]),
            Ok(AuthVerdict::Accepted)
        );
        let other = Credentials::new(b"joe".to_vec(), b"wrong".to_vec()).unwrap();
        assert_eq!(
            check(&sh(script), &other, "<1@x>", t, &[]),
            Ok(AuthVerdict::Rejected)
        );
    }
}
