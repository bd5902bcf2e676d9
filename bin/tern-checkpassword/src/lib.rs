//! `control/passwords`: the login file of `tern-checkpassword`, read by it
//! and written by `ternctl passwd`.
//!
//! Format: one `login:hash` per line, where `hash` is an argon2id PHC
//! string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`); lines starting
//! with `#` and blank lines are ignored. A login is 1 to [`MAX_LOGIN`]
//! bytes without `:`, blanks or control characters. The file is at most
//! [`MAX_FILE`] bytes.
//!
//! Trust level: the file is written by the operator (ternctl); the login
//! and password checked against it come from the network, bounded by the
//! caller.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Longest login.
pub const MAX_LOGIN: usize = 255;

/// Longest password `ternctl passwd` takes.
pub const MAX_PASSWORD: usize = 255;

/// Largest passwords file read.
pub const MAX_FILE: u64 = 4 * 1024 * 1024;

/// Name of the file in `control/`.
pub const FILE_NAME: &str = "passwords";

/// What went wrong with the passwords file or a hash.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE`].
    #[error("{0}: file too large")]
    TooLarge(String),
    /// A line that is not `login:hash`.
    #[error("{path} line {line}: {what}")]
    BadLine {
        /// The file.
        path: String,
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// A login that cannot be stored.
    #[error("bad login: 1 to 255 bytes, no ':', blanks or control characters")]
    BadLogin,
    /// A password that cannot be stored (empty, too long, NUL or newline).
    #[error("bad password: 1 to 255 bytes, no NUL or line break")]
    BadPassword,
    /// The stored hash is not a PHC string argon2 understands.
    #[error("bad hash for this login: {0}")]
    BadHash(String),
    /// Hashing failed, or no random salt could be read.
    #[error("cannot hash: {0}")]
    Hash(String),
}

/// True for a login that can be stored.
pub fn valid_login(login: &[u8]) -> bool {
    !login.is_empty()
        && login.len() <= MAX_LOGIN
        && login.iter().all(|&b| b > b' ' && b != b':' && b != 0x7f)
}

/// The parsed file: `(login, hash)` in file order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Passwords {
    entries: Vec<(String, String)>,
}

impl Passwords {
    /// Parses the file's text (`path` for messages).
    ///
    /// # Errors
    /// [`Error::BadLine`] for a line that is not `login:hash`.
    pub fn parse(text: &str, path: &str) -> Result<Passwords, Error> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let bad = |what| Error::BadLine {
                path: path.to_string(),
                line: i + 1,
                what,
            };
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (login, hash) = line.split_once(':').ok_or_else(|| bad("no ':'"))?;
            if !valid_login(login.as_bytes()) {
                return Err(bad("bad login"));
            }
            if !hash.starts_with('$') || hash.contains(char::is_whitespace) {
                return Err(bad("the hash is not a PHC string"));
            }
            entries.push((login.to_string(), hash.to_string()));
        }
        Ok(Passwords { entries })
    }

    /// Reads and parses `path`.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::TooLarge`], [`Error::BadLine`].
    pub fn load(path: &Path) -> Result<Passwords, Error> {
        let p = path.display().to_string();
        let io = |source| Error::Io {
            path: p.clone(),
            source,
        };
        let f = std::fs::File::open(path).map_err(io)?;
        let mut text = String::new();
        f.take(MAX_FILE + 1).read_to_string(&mut text).map_err(io)?;
        if text.len() as u64 > MAX_FILE {
            return Err(Error::TooLarge(p));
        }
        Passwords::parse(&text, &p)
    }

    /// The hash stored for `login`.
    pub fn hash(&self, login: &[u8]) -> Option<&str> {
        self.entries
            .iter()
            .find(|(l, _)| l.as_bytes() == login)
            .map(|(_, h)| h.as_str())
    }

    /// Number of logins.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no login.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A hash that matches no password, verified for unknown logins so that
/// they take as long as known ones.
const DUMMY: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$dGVybmR1bW15c2FsdA$n+xGTmO/8TWJnC2mN6cxeIWxqWkUZ+dP8Jf0gpNOiik";

/// Checks `password` for `login`: `Ok(true)` when it matches. An unknown
/// login costs the same work as a wrong password (a dummy hash is
/// verified). argon2's verification compares in constant time.
///
/// # Errors
/// [`Error::BadHash`] when the stored hash cannot be parsed.
pub fn verify(passwords: &Passwords, login: &[u8], password: &[u8]) -> Result<bool, Error> {
    let (hash, known) = match passwords.hash(login) {
        Some(h) => (h, true),
        None => (DUMMY, false),
    };
    let parsed = PasswordHash::new(hash).map_err(|e| Error::BadHash(e.to_string()))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(Error::BadHash("not an argon2id hash".into()));
    }
    match Argon2::default().verify_password(password, &parsed) {
        Ok(()) => Ok(known),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(Error::BadHash(e.to_string())),
    }
}

/// An argon2id hash (argon2 crate defaults: m=19456 KiB, t=2, p=1) of
/// `password` with a random 16-byte salt from /dev/urandom.
///
/// # Errors
/// [`Error::BadPassword`], [`Error::Hash`].
pub fn hash(password: &[u8]) -> Result<String, Error> {
    if password.is_empty()
        || password.len() > MAX_PASSWORD
        || password.iter().any(|&b| matches!(b, 0 | b'\n' | b'\r'))
    {
        return Err(Error::BadPassword);
    }
    let mut raw = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(|e| Error::Hash(format!("/dev/urandom: {e}")))?;
    let salt = SaltString::encode_b64(&raw).map_err(|e| Error::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Hash(e.to_string()))
}

/// Sets `login`'s hash in the file at `path` (created if missing): the
/// login's line is replaced, or a line is appended; every other line is
/// kept. The new file is written beside it with mode 0640, synced and
/// renamed over the old one.
///
/// # Errors
/// [`Error::BadLogin`], [`Error::Io`], [`Error::TooLarge`], [`Error::BadLine`].
pub fn set(path: &Path, login: &str, hash: &str) -> Result<(), Error> {
    if !valid_login(login.as_bytes()) {
        return Err(Error::BadLogin);
    }
    let p = path.display().to_string();
    let io = |source| Error::Io {
        path: p.clone(),
        source,
    };
    let old = match std::fs::File::open(path) {
        Ok(f) => {
            let mut text = String::new();
            f.take(MAX_FILE + 1).read_to_string(&mut text).map_err(io)?;
            if text.len() as u64 > MAX_FILE {
                return Err(Error::TooLarge(p));
            }
            text
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(e)),
    };
    // Refuse to rewrite a file that does not parse: fix it first.
    Passwords::parse(&old, &p)?;
    let mut out = String::with_capacity(old.len() + hash.len() + login.len() + 2);
    let mut replaced = false;
    for line in old.lines() {
        if !line.starts_with('#') && line.split_once(':').is_some_and(|(l, _)| l == login) {
            if !replaced {
                out.push_str(&format!("{login}:{hash}\n"));
                replaced = true;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !replaced {
        out.push_str(&format!("{login}:{hash}\n"));
    }
    let tmp = path.with_file_name(format!("{FILE_NAME}.tmp{}", std::process::id()));
    let tmp_s = tmp.display().to_string();
    let tio = |source| Error::Io {
        path: tmp_s.clone(),
        source,
    };
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&tmp)?;
        f.write_all(out.as_bytes())?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(tio(e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })?;
    // The new name must survive a crash too: sync the directory.
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files() {
        for (text, line) in [
            ("joe\n", 1),
            ("# c\n\njoe $argon2id$x\n", 3),
            (":$argon2id$x\n", 1),
            ("jo e:$argon2id$x\n", 1),
            ("joe:plaintext\n", 1),
            ("joe:$argon2id$ x\n", 1),
        ] {
            match Passwords::parse(text, "p") {
                Err(Error::BadLine { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_logins_and_passwords() {
        for l in [&b""[..], b"a:b", b"a b", b"a\tb", b"a\x01", &[b'a'; 256]] {
            assert!(!valid_login(l), "{l:?}");
        }
        assert!(valid_login(b"joe@example.com"));
        for p in [&b""[..], b"a\nb", b"a\0b", b"a\r", &[b'p'; 256]] {
            assert!(matches!(hash(p), Err(Error::BadPassword)), "{p:?}");
        }
        let dir = std::env::temp_dir().join(format!("tern-cp-badlogin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(
            set(&dir.join(FILE_NAME), "a:b", "$argon2id$x"),
            Err(Error::BadLogin)
        ));
        std::fs::write(dir.join(FILE_NAME), "broken line\n").unwrap();
        assert!(matches!(
            set(&dir.join(FILE_NAME), "joe", "$argon2id$x"),
            Err(Error::BadLine { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn set_hash_verify() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tern-cp-set-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        std::fs::write(&path, "# logins\nann:$argon2id$v=19$old\n").unwrap();
        let h = hash(b"secret").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"));
        set(&path, "joe", &h).unwrap();
        set(&path, "ann", &hash(b"annpw").unwrap()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# logins\nann:$argon2id$v=19$m="),
            "{text}"
        );
        assert_eq!(text.lines().count(), 3);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let pw = Passwords::load(&path).unwrap();
        assert_eq!(pw.len(), 2);
        assert!(verify(&pw, b"joe", b"secret").unwrap());
        assert!(!verify(&pw, b"joe", b"Secret").unwrap());
        assert!(!verify(&pw, b"joe", b"").unwrap());
        assert!(!verify(&pw, b"nobody", b"secret").unwrap());
        assert!(verify(&pw, b"ann", b"annpw").unwrap());
        assert!(!verify(&pw, b"ann", b"secret").unwrap());
        let broken = Passwords::parse("joe:$nonsense\n", "p").unwrap();
        assert!(matches!(
            verify(&broken, b"joe", b"x"),
            Err(Error::BadHash(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
