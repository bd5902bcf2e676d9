//! [`Home`]: the instance directory and its layout.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind};

/// The compiled-in instance directory: `TERN_DEFAULT_HOME` at build time,
/// else `/var/tern`.
pub const DEFAULT_HOME: &str = match option_env!("TERN_DEFAULT_HOME") {
    Some(h) => h,
    None => "/var/tern",
};

/// A Tern instance directory (`TERN_HOME`) and the paths inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// An instance at `root` (taken as given; no check is made).
    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    /// The instance this process must use: `TERN_HOME` when it is set and
    /// the process is not running with elevated privileges
    /// (`tern_sys::secure::at_secure()` is false), else [`DEFAULT_HOME`].
    ///
    /// # Errors
    /// `TERN_HOME` is set (and honoured) but empty or not an absolute path.
    pub fn from_env() -> Result<Home, Error> {
        let secure = tern_sys::secure::at_secure();
        // Do not even look at the environment of a setuid/setgid process.
        let value = if secure {
            None
        } else {
            std::env::var_os("TERN_HOME")
        };
        Home::resolve(value, secure)
    }

    /// The rule behind [`Home::from_env`], with the environment value and
    /// the AT_SECURE flag given explicitly.
    ///
    /// # Errors
    /// See [`Home::from_env`].
    pub fn resolve(tern_home: Option<OsString>, secure: bool) -> Result<Home, Error> {
        match tern_home {
            Some(v) if !secure => {
                if v.is_empty() {
                    return Err(Error::without_path(ErrorKind::BadHome(
                        "TERN_HOME is set but empty",
                    )));
                }
                let p = PathBuf::from(v);
                if !p.is_absolute() {
                    return Err(Error::without_path(ErrorKind::BadHome(
                        "TERN_HOME must be an absolute path",
                    )));
                }
                Ok(Home::new(p))
            }
            _ => Ok(Home::new(DEFAULT_HOME)),
        }
    }

    /// The instance directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `control/`: one setting per file.
    pub fn control_dir(&self) -> PathBuf {
        self.root.join("control")
    }

    /// `users/`: holds `assign`.
    pub fn users_dir(&self) -> PathBuf {
        self.root.join("users")
    }

    /// `users/assign`: the local-part to user mapping.
    pub fn assign_file(&self) -> PathBuf {
        self.root.join("users").join("assign")
    }

    /// `queue/`: the mail queue (owned by tern-spool).
    pub fn queue_dir(&self) -> PathBuf {
        self.root.join("queue")
    }

    /// `bin/`: the programs (in a single-user instance, a symlink).
    pub fn bin_dir(&self) -> PathBuf {
        self.root.join("bin")
    }

    /// `alias/`: home of the alias user's dot-qmail files.
    pub fn alias_dir(&self) -> PathBuf {
        self.root.join("alias")
    }

    /// `auth/`: tern-smtpd's AUTH throttle state (slot locks, per-address
    /// failure records), written by uid ternd.
    pub fn auth_dir(&self) -> PathBuf {
        self.root.join("auth")
    }

    /// `mail/`: mailbox homes of a single-user instance.
    pub fn mail_dir(&self) -> PathBuf {
        self.root.join("mail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_rules() {
        // bad values first
        let e = Home::resolve(Some("".into()), false).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::BadHome(_)));
        let e = Home::resolve(Some("relative/dir".into()), false).unwrap_err();
        assert_eq!(e.to_string(), "TERN_HOME must be an absolute path");
        // a secure (setuid) process ignores the variable, even a bad one
        assert_eq!(
            Home::resolve(Some("relative".into()), true).unwrap().root(),
            Path::new(DEFAULT_HOME)
        );
        assert_eq!(
            Home::resolve(Some("/tmp/x".into()), true).unwrap().root(),
            Path::new(DEFAULT_HOME)
        );
        assert_eq!(
            Home::resolve(Some("/tmp/x".into()), false).unwrap().root(),
            Path::new("/tmp/x")
        );
        assert_eq!(
            Home::resolve(None, false).unwrap().root(),
            Path::new(DEFAULT_HOME)
        );
    }

    #[test]
    fn layout() {
        let h = Home::new("/srv/tern");
        assert_eq!(h.control_dir(), Path::new("/srv/tern/control"));
        assert_eq!(h.assign_file(), Path::new("/srv/tern/users/assign"));
        assert_eq!(h.queue_dir(), Path::new("/srv/tern/queue"));
        assert_eq!(h.bin_dir(), Path::new("/srv/tern/bin"));
        assert_eq!(h.alias_dir(), Path::new("/srv/tern/alias"));
        assert_eq!(h.users_dir(), Path::new("/srv/tern/users"));
        assert_eq!(h.mail_dir(), Path::new("/srv/tern/mail"));
    }
}
