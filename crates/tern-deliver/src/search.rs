//! Which `.qmail` file handles an address (qmail's `qmesearch`).
//!
//! The extension is folded first ([`fold_ext`]: lower case, every `.`
//! becomes `:`), so `.qmail-a.b` can never be reached through a crafted
//! address. [`candidates`] lists, without I/O, the file names to try in
//! order; [`find`] tries them in a home directory.
//!
//! For dash `-` and extension `a-b-c` the order is `.qmail-a-b-c`, then
//! `.qmail-a-b-default` (`DEFAULT=c`), `.qmail-a-default` (`DEFAULT=b-c`),
//! `.qmail-default` (`DEFAULT=a-b-c`). With an empty dash (the user's own
//! address) only `.qmail<ext>` is tried. A candidate name holding a `/`,
//! or longer than a file name may be, cannot exist and is skipped.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::dotqmail::MAX_FILE;
use crate::{Error, ErrorKind};

/// Longest file name (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// One file name to try, and the `DEFAULT` value it implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The file name (in the home directory).
    pub name: Vec<u8>,
    /// For a `-default` file: the part of the extension it stands for
    /// (as a range into the extension, so the caller can take it from the
    /// unfolded extension).
    pub default: Option<std::ops::Range<usize>>,
}

/// The extension as used in file names: ASCII lower case, `.` → `:`.
pub fn fold_ext(ext: &[u8]) -> Vec<u8> {
    ext.iter()
        .map(|&b| {
            if b == b'.' {
                b':'
            } else {
                b.to_ascii_lowercase()
            }
        })
        .collect()
}

fn possible(name: &[u8]) -> bool {
    name.len() <= NAME_MAX && !name.contains(&b'/')
}

/// The file names to try for `dash` and the (already folded) extension,
/// in order. Names that cannot exist are left out.
pub fn candidates(dash: &[u8], folded_ext: &[u8]) -> Vec<Candidate> {
    let mut out = Vec::new();
    let exact = [b".qmail", dash, folded_ext].concat();
    if possible(&exact) {
        out.push(Candidate {
            name: exact,
            default: None,
        });
    }
    if dash.is_empty() {
        return out;
    }
    for i in (0..=folded_ext.len()).rev() {
        if i == 0 || folded_ext[i - 1] == b'-' {
            let name = [b".qmail", dash, &folded_ext[..i], b"default"].concat();
            if possible(&name) {
                out.push(Candidate {
                    name,
                    default: Some(i..folded_ext.len()),
                });
            }
        }
    }
    out
}

/// A `.qmail` file that was found and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its path.
    pub path: PathBuf,
    /// Its contents (at most [`MAX_FILE`] bytes).
    pub contents: Vec<u8>,
    /// The owner-execute bit is set: forwards only.
    pub forward_only: bool,
    /// For a `-default` file: the range of the extension it stands for.
    pub default: Option<std::ops::Range<usize>>,
}

/// Opens `name` in `home`: `Ok(None)` when it does not exist.
///
/// The file belongs to a user, so it may be anything: it is opened with
/// `O_NONBLOCK` (a FIFO would otherwise block `open` until a writer
/// comes, stalling tern-smtpd's RCPT check or tern-local for ever) and
/// must be a regular file; anything else is a temporary error. Reading a
/// regular file does not block, so the whole lookup is bounded.
fn open(home: &Path, name: &[u8]) -> Result<Option<(PathBuf, File)>, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = home.join(OsStr::from_bytes(name));
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(&path);
    match opened {
        Ok(f) => match f.metadata() {
            Ok(m) if m.file_type().is_file() => Ok(Some((path, f))),
            Ok(_) => Err(Error::new(
                ErrorKind::DotQmailUnreadable,
                format!("{} is not a regular file. (#4.2.1)", display_name(name)),
            )),
            Err(e) => Err(Error::new(
                ErrorKind::DotQmailUnreadable,
                format!("Unable to stat {}: {e}. (#4.2.1)", display_name(name)),
            )),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::new(
            ErrorKind::DotQmailUnreadable,
            format!("Unable to open {}: {e}. (#4.2.1)", display_name(name)),
        )),
    }
}

fn display_name(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// True when `name` exists in `home` (qmail's `qmeox`, for the `-owner`
/// files).
///
/// # Errors
/// Any failure other than "does not exist" (temporary).
pub fn exists(home: &Path, name: &[u8]) -> Result<bool, Error> {
    if !possible(name) {
        return Ok(false);
    }
    let path = home.join(OsStr::from_bytes(name));
    match std::fs::metadata(&path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::new(
            ErrorKind::DotQmailUnreadable,
            format!("Unable to stat {}: {e}. (#4.2.1)", display_name(name)),
        )),
    }
}

/// Searches `home` for the file handling `dash` + `ext` (unfolded) and
/// reads it. `Ok(None)`: no file.
///
/// # Errors
/// Temporary: a file exists but cannot be read, is writable by others
/// (mode bit 002) or is larger than [`MAX_FILE`].
pub fn find(home: &Path, dash: &[u8], ext: &[u8]) -> Result<Option<Found>, Error> {
    for c in candidates(dash, &fold_ext(ext)) {
        let Some((path, file)) = open(home, &c.name)? else {
            continue;
        };
        let name = display_name(&c.name);
        let meta = file.metadata().map_err(|e| {
            Error::new(
                ErrorKind::DotQmailUnreadable,
                format!("Unable to stat {name}: {e}. (#4.2.1)"),
            )
        })?;
        let mode = meta.permissions().mode();
        if mode & 0o002 != 0 {
            return Err(Error::new(
                ErrorKind::DotQmailWritable,
                format!("Uh-oh: {name} is writable by others. (#4.7.0)"),
            ));
        }
        let mut contents = Vec::new();
        file.take(MAX_FILE as u64 + 1)
            .read_to_end(&mut contents)
            .map_err(|e| {
                Error::new(
                    ErrorKind::DotQmailUnreadable,
                    format!("Unable to read {name}: {e}. (#4.2.1)"),
                )
            })?;
        return Ok(Some(Found {
            path,
            contents,
            forward_only: mode & 0o100 != 0,
            default: c.default,
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::scratch;

    fn names(dash: &str, ext: &str) -> Vec<(String, Option<String>)> {
        let folded = fold_ext(ext.as_bytes());
        candidates(dash.as_bytes(), &folded)
            .into_iter()
            .map(|c| {
                (
                    String::from_utf8(c.name).unwrap(),
                    c.default.map(|r| ext[r].to_string()),
                )
            })
            .collect()
    }

    fn s(v: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.map(str::to_string)))
            .collect()
    }

    #[test]
    fn candidates_skip_impossible_names() {
        // A `/` can never be part of a file name: no traversal.
        assert_eq!(
            names("-", "../../etc/passwd"),
            s(&[(".qmail-default", Some("../../etc/passwd"))])
        );
        assert_eq!(names("-", "a/b-c"), s(&[(".qmail-default", Some("a/b-c"))]));
        let long = "x".repeat(300);
        assert_eq!(
            names("-", &long),
            s(&[(".qmail-default", Some(long.as_str()))])
        );
        // Dots are folded: `.qmail-a.b` is unreachable.
        assert_eq!(fold_ext(b"A.B-..C"), b"a:b-::c");
    }

    #[test]
    fn candidate_order() {
        assert_eq!(names("", ""), s(&[(".qmail", None)]));
        assert_eq!(names("", "ext"), s(&[(".qmailext", None)]));
        assert_eq!(
            names("-", ""),
            s(&[(".qmail-", None), (".qmail-default", Some(""))])
        );
        assert_eq!(
            names("-", "a-b-c"),
            s(&[
                (".qmail-a-b-c", None),
                (".qmail-a-b-default", Some("c")),
                (".qmail-a-default", Some("b-c")),
                (".qmail-default", Some("a-b-c")),
            ])
        );
        assert_eq!(
            names("-", "a-"),
            s(&[
                (".qmail-a-", None),
                (".qmail-a-default", Some("")),
                (".qmail-default", Some("a-")),
            ])
        );
        assert_eq!(
            names("-", "Post.Master"),
            s(&[
                (".qmail-post:master", None),
                (".qmail-default", Some("Post.Master")),
            ])
        );
    }

    /// A FIFO (or device) named like a `.qmail` file is a temporary
    /// error at once; `open` must not wait for a writer. The channel
    /// timeout only turns the old hang into a failure.
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let home = scratch("search-fifo");
        let fifo = home.join(".qmail-foo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = home.clone();
        std::thread::spawn(move || {
            let _ = tx.send(find(&h, b"-", b"foo").map(|_| ()).map_err(|e| e.kind()));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("find() blocked on a FIFO");
        assert_eq!(got, Err(ErrorKind::DotQmailUnreadable));
        let _ = std::fs::remove_dir_all(&home);
    }

    #[test]
    fn find_in_a_home() {
        let home = scratch("search");
        let write = |name: &str, text: &str, mode: u32| {
            let p = home.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        assert_eq!(find(&home, b"-", b"x").unwrap(), None);
        write(".qmail-list-default", "&a@b\n", 0o644);
        write(".qmail-default", "./Maildir/\n", 0o600);
        write(".qmail-list-owner", "&c@d\n", 0o744);
        let f = find(&home, b"-", b"List-Owner").unwrap().unwrap();
        assert_eq!(f.contents, b"&c@d\n");
        assert!(f.forward_only);
        assert_eq!(f.default, None);
        let f = find(&home, b"-", b"list-bounce-x").unwrap().unwrap();
        assert!(f.path.ends_with(".qmail-list-default"));
        assert_eq!(f.default, Some(5..13));
        assert!(!f.forward_only);
        let f = find(&home, b"-", b"other").unwrap().unwrap();
        assert!(f.path.ends_with(".qmail-default"));
        assert_eq!(f.default, Some(0..5));
        assert_eq!(find(&home, b"", b"").unwrap(), None);
        assert!(exists(&home, b".qmail-list-owner").unwrap());
        assert!(!exists(&home, b".qmail-nothing").unwrap());
        assert!(!exists(&home, b".qmail-a/b").unwrap());

        write(".qmail-open", "./Maildir/\n", 0o646);
        let e = find(&home, b"-", b"open").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DotQmailWritable);
        assert!(e.is_temporary());

        // A file too large is read only up to one byte over the limit.
        write(".qmail-big", &"#".repeat(MAX_FILE * 2), 0o644);
        let f = find(&home, b"-", b"big").unwrap().unwrap();
        assert_eq!(f.contents.len(), MAX_FILE + 1);
    }
}
