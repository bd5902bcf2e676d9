//! `users/assign`: which user (uid, gid, home) receives mail for a local
//! part, with qmail-users semantics.
//!
//! ```text
//! =local:user:uid:gid:home:dash:ext:     exact: local part equal to local
//! +prefix:user:uid:gid:home:dash:pre:    wildcard: local part starting with prefix;
//!                                        ext = pre + the rest of the local part
//! .                                      the end (required)
//! ```
//!
//! Keys compare ignoring ASCII case. An exact entry beats any wildcard; a
//! longer wildcard prefix beats a shorter one. The final `.` line is
//! required so that a truncated file is never half-used; text after it is
//! an error (qmail would ignore it silently).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind};
use crate::read::{read_bounded, validate_text};

/// Largest `users/assign` accepted, in bytes (64 MiB: large sites list
/// every user).
pub const MAX_ASSIGN_FILE: u64 = 64 << 20;

/// Longest mailbox name [`check_mailbox_name`] accepts.
pub const MAX_MAILBOX_NAME: usize = 64;

/// Checks a mailbox name for a single-user instance (`ternctl init
/// --mailbox NAME`): 1 to 64 ASCII letters, digits, `.`, `-`, `_`, not
/// starting with `.` or `-` (it names a directory and a local part).
///
/// # Errors
/// A static hint saying what is wrong.
pub fn check_mailbox_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("mailbox name is empty");
    }
    if name.len() > MAX_MAILBOX_NAME {
        return Err("mailbox name longer than 64 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("mailbox name may hold only letters, digits, '.', '-' and '_'");
    }
    if name.starts_with(['.', '-']) {
        return Err("mailbox name must not start with '.' or '-'");
    }
    Ok(())
}

/// One line of `users/assign`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignEntry {
    /// `+` (wildcard) rather than `=` (exact).
    pub wildcard: bool,
    /// The local part (exact) or prefix (wildcard), as written.
    pub key: String,
    /// The user name passed to the delivery agent.
    pub user: String,
    /// Numeric user id.
    pub uid: u32,
    /// Numeric group id.
    pub gid: u32,
    /// Home directory (absolute).
    pub home: PathBuf,
    /// `-` or empty: joins the user's `.qmail` and the extension.
    pub dash: String,
    /// The extension (exact) or the extension prefix (wildcard).
    pub ext: String,
    /// 1-based line number in the file.
    pub line: usize,
}

impl AssignEntry {
    /// The entry as a `users/assign` line (without newline).
    pub fn to_line(&self) -> String {
        format!(
            "{}{}:{}:{}:{}:{}:{}:{}:",
            if self.wildcard { '+' } else { '=' },
            self.key,
            self.user,
            self.uid,
            self.gid,
            self.home.display(),
            self.dash,
            self.ext
        )
    }
}

/// The result of a lookup: what the delivery agent is run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// User name.
    pub user: String,
    /// Numeric user id.
    pub uid: u32,
    /// Numeric group id.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
    /// `-` or empty.
    pub dash: String,
    /// The extension: for a wildcard entry, its `pre` followed by the rest
    /// of the local part (original case).
    pub ext: Vec<u8>,
}

/// A parsed `users/assign`.
#[derive(Debug, Clone, Default)]
pub struct Assign {
    entries: Vec<AssignEntry>,
    exact: HashMap<Vec<u8>, usize>,
    wild: HashMap<Vec<u8>, usize>,
}

const FIELDS_HINT: &str =
    "expected =local:user:uid:gid:home:dash:ext: (seven fields, each followed by ':')";

fn parse_id(n: usize, s: &str) -> Result<u32, Error> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::at_line(
            n,
            ErrorKind::BadNumber("uid or gid is not a number"),
        ));
    }
    s.parse().map_err(|_| {
        Error::at_line(
            n,
            ErrorKind::OutOfRange {
                min: 0,
                max: u32::MAX as u64,
            },
        )
    })
}

fn parse_entry(n: usize, line: &str) -> Result<AssignEntry, Error> {
    let wildcard = line.starts_with('+');
    let fields: Vec<&str> = line[1..].split(':').collect();
    if fields.len() != 8 || !fields[7].is_empty() {
        return Err(Error::at_line(n, ErrorKind::Syntax(FIELDS_HINT)));
    }
    if line.chars().any(char::is_control) {
        return Err(Error::at_line(
            n,
            ErrorKind::Syntax("control character in entry"),
        ));
    }
    if fields[1].is_empty() {
        return Err(Error::at_line(n, ErrorKind::Syntax("empty user name")));
    }
    let home = PathBuf::from(fields[4]);
    if !home.is_absolute() {
        return Err(Error::at_line(
            n,
            ErrorKind::Syntax("home directory is not an absolute path"),
        ));
    }
    Ok(AssignEntry {
        wildcard,
        key: fields[0].to_string(),
        user: fields[1].to_string(),
        uid: parse_id(n, fields[2])?,
        gid: parse_id(n, fields[3])?,
        home,
        dash: fields[5].to_string(),
        ext: fields[6].to_string(),
        line: n,
    })
}

impl Assign {
    /// Parses the text of `users/assign`.
    ///
    /// # Errors
    /// A malformed line, a key given twice, no final `.` line, or text
    /// after it.
    pub fn parse(text: &str) -> Result<Assign, Error> {
        let mut a = Assign::default();
        let mut ended = false;
        let mut last = 0;
        for (i, raw) in text.split('\n').enumerate() {
            let n = i + 1;
            last = n;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.is_empty() {
                continue;
            }
            if ended {
                return Err(Error::at_line(
                    n,
                    ErrorKind::Syntax("text after the final '.' line"),
                ));
            }
            if line == "." {
                ended = true;
                continue;
            }
            if !line.starts_with(['=', '+']) {
                return Err(Error::at_line(
                    n,
                    ErrorKind::Syntax("line must start with '=' or '+', or be the final '.'"),
                ));
            }
            let entry = parse_entry(n, line)?;
            let key = entry.key.to_ascii_lowercase().into_bytes();
            let map = if entry.wildcard {
                &mut a.wild
            } else {
                &mut a.exact
            };
            if map.insert(key, a.entries.len()).is_some() {
                return Err(Error::at_line(
                    n,
                    ErrorKind::Syntax("duplicate entry (an earlier line has the same key)"),
                ));
            }
            a.entries.push(entry);
        }
        if !ended {
            return Err(Error::at_line(
                last,
                ErrorKind::Syntax("no final '.' line (truncated file?)"),
            ));
        }
        Ok(a)
    }

    /// Reads and parses `path`. `Ok(None)` when the file does not exist.
    ///
    /// # Errors
    /// Unreadable, too large, not UTF-8, or malformed (the error names the
    /// file and line).
    pub fn load(path: &Path) -> Result<Option<Assign>, Error> {
        let Some(bytes) = read_bounded(path, MAX_ASSIGN_FILE)? else {
            return Ok(None);
        };
        let text = validate_text(path, bytes)?;
        Assign::parse(&text)
            .map(Some)
            .map_err(|e| e.with_path(path))
    }

    /// Who receives mail for `local` (the whole local part), if anyone:
    /// an exact entry, else the longest matching wildcard prefix.
    pub fn lookup(&self, local: &[u8]) -> Option<Assignment> {
        let lower = local.to_ascii_lowercase();
        if let Some(&i) = self.exact.get(&lower) {
            let e = &self.entries[i];
            return Some(Assignment {
                user: e.user.clone(),
                uid: e.uid,
                gid: e.gid,
                home: e.home.clone(),
                dash: e.dash.clone(),
                ext: e.ext.clone().into_bytes(),
            });
        }
        (0..=lower.len()).rev().find_map(|len| {
            let &i = self.wild.get(&lower[..len])?;
            let e = &self.entries[i];
            let mut ext = e.ext.clone().into_bytes();
            ext.extend_from_slice(&local[len..]);
            Some(Assignment {
                user: e.user.clone(),
                uid: e.uid,
                gid: e.gid,
                home: e.home.clone(),
                dash: e.dash.clone(),
                ext,
            })
        })
    }

    /// True when an exact (`=`) entry exists for `local` (any case).
    pub fn has_exact(&self, local: &str) -> bool {
        self.exact
            .contains_key(local.to_ascii_lowercase().as_bytes())
    }

    /// All entries in file order.
    pub fn entries(&self) -> &[AssignEntry] {
        &self.entries
    }

    /// Returns `text` (a valid `users/assign`) with `new` entries inserted
    /// just before the final `.` line; every other byte is kept. An empty
    /// `text` gives a new file. The result is parsed again before it is
    /// returned, so a duplicate key is refused.
    ///
    /// # Errors
    /// `text` is malformed, or the result would be (duplicate key, bad field).
    pub fn add_entries(text: &str, new: &[AssignEntry]) -> Result<String, Error> {
        let mut added = String::new();
        for e in new {
            added.push_str(&e.to_line());
            added.push('\n');
        }
        let out = if text.is_empty() {
            format!("{added}.\n")
        } else {
            Assign::parse(text)?;
            // The final '.' line is the last non-empty line (parse checked).
            let mut pos = 0;
            let mut dot_at = None;
            for line in text.split_inclusive('\n') {
                let l = line.trim_end_matches(['\n', '\r']);
                if l == "." {
                    dot_at = Some(pos);
                }
                pos += line.len();
            }
            let at = dot_at.expect("a parsed users/assign has a final '.' line");
            format!("{}{added}{}", &text[..at], &text[at..])
        };
        Assign::parse(&out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn bad_files() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "no final '.' line"),
            ("=joe:joe:1:1:/home/joe:::\n", 2, "no final '.' line"),
            (
                "=joe:joe:1:1:/home/joe:::\n.\n=ann:ann:2:2:/home/ann:::\n",
                3,
                "text after the final",
            ),
            ("joe:joe:1:1:/home/joe:::\n.\n", 1, "line must start with"),
            ("=joe:joe:1:1:/home/joe::\n.\n", 1, "expected =local"),
            ("=joe:joe:1:1:/home/joe:::x\n.\n", 1, "expected =local"),
            ("=joe:joe:1:1:/home/joe::::\n.\n", 1, "expected =local"),
            ("=joe::1:1:/home/joe:::\n.\n", 1, "empty user name"),
            (
                "=joe:joe:x:1:/home/joe:::\n.\n",
                1,
                "uid or gid is not a number",
            ),
            (
                "=joe:joe:1:-1:/home/joe:::\n.\n",
                1,
                "uid or gid is not a number",
            ),
            (
                "=joe:joe:4294967296:1:/home/joe:::\n.\n",
                1,
                "number out of range",
            ),
            (
                "=joe:joe:1:1:home/joe:::\n.\n",
                1,
                "home directory is not an absolute",
            ),
            ("=joe:joe:1:1:/home/j\toe:::\n.\n", 1, "control character"),
            (
                "=joe:joe:1:1:/a:::\n=JOE:joe:1:1:/b:::\n.\n",
                2,
                "duplicate entry",
            ),
            (
                "+joe-:joe:1:1:/a:-::\n+joe-:joe:1:1:/b:-::\n.\n",
                2,
                "duplicate entry",
            ),
        ];
        for (text, line, msg) in cases {
            let e = Assign::parse(text).expect_err("should be rejected");
            assert_eq!(e.line(), Some(*line), "{text:?}");
            assert!(e.kind().to_string().starts_with(msg), "{text:?}: {e}");
        }
    }

    #[test]
    fn mailbox_names() {
        let long = "a".repeat(65);
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-x",
            "a b",
            "a/b",
            "a:b",
            "\u{e9}",
            long.as_str(),
        ] {
            assert!(check_mailbox_name(bad).is_err(), "{bad:?}");
        }
        let max = "a".repeat(64);
        for good in ["postmaster", "John.Doe", "a-b_c.d", "x1", max.as_str()] {
            assert!(check_mailbox_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn lookup_rules() {
        let a = Assign::parse(
            "=joe:joe:1001:100:/home/joe:::\n\
             =joe-list:list:1002:100:/home/list:-:joe:\n\
             +joe-:joe:1001:100:/home/joe:-::\n\
             +joe-lists-:list:1002:100:/home/list:-:x-:\n\
             +:alias:7790:2108:/var/tern/alias:-::\n\
             \n.\n",
        )
        .unwrap();
        assert_eq!(a.entries().len(), 5);
        let l = |s: &str| a.lookup(s.as_bytes()).expect("assigned");
        // exact, case-insensitive
        let j = l("JOE");
        assert_eq!(
            (j.user.as_str(), j.uid, j.gid, j.dash.as_str()),
            ("joe", 1001, 100, "")
        );
        assert_eq!(j.ext, b"");
        // exact beats wildcard
        assert_eq!(l("joe-list").user, "list");
        assert_eq!(l("joe-list").ext, b"joe");
        // wildcard: ext = pre + rest (original case)
        let w = l("joe-Foo");
        assert_eq!((w.user.as_str(), w.dash.as_str()), ("joe", "-"));
        assert_eq!(w.ext, b"Foo");
        // longer prefix beats shorter
        let w = l("joe-lists-Bar");
        assert_eq!(w.user, "list");
        assert_eq!(w.ext, b"x-Bar");
        // empty prefix catches everything else
        let c = l("nobody");
        assert_eq!(c.user, "alias");
        assert_eq!(c.ext, b"nobody");
        assert!(a.has_exact("Joe"));
        assert!(!a.has_exact("joe-"));

        let narrow = Assign::parse("=joe:joe:1:1:/h:::\n.\n").unwrap();
        assert_eq!(narrow.lookup(b"ann"), None);
        assert_eq!(narrow.lookup(b"joe-x"), None);
    }

    #[test]
    fn adding_entries_keeps_everything() {
        let e = |k: &str| AssignEntry {
            wildcard: false,
            key: k.into(),
            user: "me".into(),
            uid: 1000,
            gid: 1000,
            home: PathBuf::from(format!("/i/mail/{k}")),
            dash: String::new(),
            ext: String::new(),
            line: 0,
        };
        let fresh = Assign::add_entries("", &[e("postmaster")]).unwrap();
        assert_eq!(fresh, "=postmaster:me:1000:1000:/i/mail/postmaster:::\n.\n");
        let more = Assign::add_entries(&fresh, &[e("alice")]).unwrap();
        assert_eq!(
            more,
            "=postmaster:me:1000:1000:/i/mail/postmaster:::\n=alice:me:1000:1000:/i/mail/alice:::\n.\n"
        );
        let odd = "=x:me:1:1:/x:::\n\n.\n\n";
        assert_eq!(
            Assign::add_entries(odd, &[e("y")]).unwrap(),
            "=x:me:1:1:/x:::\n\n=y:me:1000:1000:/i/mail/y:::\n.\n\n"
        );
        assert!(Assign::add_entries(&more, &[e("ALICE")]).is_err());
        assert!(Assign::add_entries("=x:me:1:1:/x:::\n", &[e("y")]).is_err());
    }

    #[test]
    fn load_from_disk() {
        let t = TempDir::new();
        let p = t.path().join("assign");
        assert!(Assign::load(&p).unwrap().is_none());
        std::fs::write(&p, "=a:a:1:1:/a:::\n").unwrap();
        let e = Assign::load(&p).unwrap_err();
        assert_eq!(e.path(), Some(p.as_path()));
        std::fs::write(&p, "=a:a:1:1:/a:::\n.\n").unwrap();
        assert!(Assign::load(&p).unwrap().unwrap().lookup(b"A").is_some());
    }
}
