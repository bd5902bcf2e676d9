//! Who receives mail for a local part (qmail-lspawn's and qmail-getpw's
//! rules): `users/assign` first, then (system instance only) the passwd
//! database, then the alias user.
//!
//! The passwd rules: try the longest prefix of the local part that ends at
//! its end or just before a `-`, is shorter than [`MAX_PASSWD_NAME`] + 1
//! bytes and, lower-cased, names a passwd account with uid ≠ 0 whose home
//! directory exists and is owned by that uid. A whole-local-part match has
//! an empty dash and extension; a prefix match has dash `-` and the rest
//! (after the `-`) as extension. Tern looks up only names made of ASCII
//! letters, digits, `.`, `_` and `-` (a local part holding anything else
//! never names an account), so nothing odd reaches the name service.
//!
//! The alias user: in a system instance the passwd account `alias`; in a
//! single-user instance the invoking user with home `$TERN_HOME/alias`.
//! Dash `-`, extension = the whole local part.
//!
//! The passwd database is reached through the [`Passwd`] trait so that the
//! rules are tested without real accounts; [`SystemPasswd`] is the real one.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::assign::{Assign, Assignment};

/// Longest passwd account name tried (qmail-getpw: shorter than 32 bytes).
pub const MAX_PASSWD_NAME: usize = 31;

/// The passwd account that receives mail nobody else owns (system instance).
pub const ALIAS_USER: &str = "alias";

/// One passwd account, as far as delivery cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PwEntry {
    /// Account name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Numeric (primary) group id.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
}

/// Access to the passwd database and to home-directory ownership.
pub trait Passwd {
    /// The account called `name`; `Ok(None)` when there is none.
    ///
    /// # Errors
    /// The database could not be consulted (a temporary failure).
    fn user(&self, name: &str) -> io::Result<Option<PwEntry>>;

    /// The owner uid of `path`; `Ok(None)` when it does not exist.
    ///
    /// # Errors
    /// Any other failure to examine it.
    fn owner(&self, path: &Path) -> io::Result<Option<u32>>;
}

/// The real passwd database (`getpwnam_r`) and `stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemPasswd;

impl Passwd for SystemPasswd {
    fn user(&self, name: &str) -> io::Result<Option<PwEntry>> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(Some(PwEntry {
                name: u.name,
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
                home: u.dir,
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    fn owner(&self, path: &Path) -> io::Result<Option<u32>> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(m.uid())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// What kind of instance the lookup is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instance {
    /// A root install: passwd accounts are users; the alias user is the
    /// passwd account [`ALIAS_USER`].
    System,
    /// A single-user instance: no passwd lookups; the alias user is the
    /// invoking user with home `alias_home`.
    SingleUser {
        /// The invoking user's name.
        user: String,
        /// Its uid.
        uid: u32,
        /// Its gid.
        gid: u32,
        /// `$TERN_HOME/alias`.
        alias_home: PathBuf,
    },
}

/// Which rule found the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An entry of `users/assign`.
    Assign,
    /// A passwd account.
    Passwd,
    /// The alias user.
    Alias,
}

impl Source {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Assign => "assign",
            Source::Passwd => "passwd",
            Source::Alias => "alias",
        }
    }
}

/// A failed lookup. Every such failure is temporary: the delivery is tried
/// again later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OwnerError {
    /// The passwd database or a home directory could not be examined.
    #[error("temporary failure looking up the passwd database: {0} (#4.3.0)")]
    Passwd(#[source] io::Error),
    /// No alias user exists (system instance without an `alias` account).
    #[error("No alias user. (#4.3.0)")]
    NoAlias,
}

fn passwd_name_ok(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PASSWD_NAME
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The passwd rules alone: the account owning `local`, if any.
///
/// # Errors
/// The database or a home directory could not be examined.
pub fn getpw(local: &[u8], pw: &impl Passwd) -> Result<Option<Assignment>, OwnerError> {
    // Candidate prefix lengths, longest first: the whole part, then every
    // position of a '-'.
    let ends =
        std::iter::once(local.len()).chain((0..local.len()).rev().filter(|&i| local[i] == b'-'));
    for end in ends {
        let name = local[..end].to_ascii_lowercase();
        if !passwd_name_ok(&name) {
            continue;
        }
        let name = String::from_utf8(name).expect("checked ASCII");
        let Some(e) = pw.user(&name).map_err(OwnerError::Passwd)? else {
            continue;
        };
        if e.uid == 0 {
            continue;
        }
        match pw.owner(&e.home).map_err(OwnerError::Passwd)? {
            Some(owner) if owner == e.uid => {}
            _ => continue,
        }
        let (dash, ext) = if end == local.len() {
            (String::new(), Vec::new())
        } else {
            ("-".to_string(), local[end + 1..].to_vec())
        };
        return Ok(Some(Assignment {
            user: e.name,
            uid: e.uid,
            gid: e.gid,
            home: e.home,
            dash,
            ext,
        }));
    }
    Ok(None)
}

/// Who receives mail for `local` (the whole local part, non-empty): an
/// `assign` entry, else (system instance) a passwd account, else the alias
/// user.
///
/// # Errors
/// A passwd failure, or no alias user.
pub fn lookup(
    local: &[u8],
    assign: Option<&Assign>,
    instance: &Instance,
    pw: &impl Passwd,
) -> Result<(Assignment, Source), OwnerError> {
    if let Some(a) = assign.and_then(|a| a.lookup(local)) {
        return Ok((a, Source::Assign));
    }
    let alias = match instance {
        Instance::System => {
            if let Some(a) = getpw(local, pw)? {
                return Ok((a, Source::Passwd));
            }
            let e = pw
                .user(ALIAS_USER)
                .map_err(OwnerError::Passwd)?
                .ok_or(OwnerError::NoAlias)?;
            Assignment {
                user: e.name,
                uid: e.uid,
                gid: e.gid,
                home: e.home,
                dash: String::new(),
                ext: Vec::new(),
            }
        }
        Instance::SingleUser {
            user,
            uid,
            gid,
            alias_home,
        } => Assignment {
            user: user.clone(),
            uid: *uid,
            gid: *gid,
            home: alias_home.clone(),
            dash: String::new(),
            ext: Vec::new(),
        },
    };
    Ok((
        Assignment {
            dash: "-".to_string(),
            ext: local.to_vec(),
            ..alias
        },
        Source::Alias,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A fake passwd database: accounts and home owners.
    #[derive(Default)]
    struct Fake {
        users: HashMap<String, PwEntry>,
        owners: HashMap<PathBuf, u32>,
        broken: Option<&'static str>,
        asked: std::cell::RefCell<Vec<String>>,
    }

    impl Fake {
        fn add(&mut self, name: &str, uid: u32, home_owner: Option<u32>) {
            let home = PathBuf::from(format!("/home/{name}"));
            if let Some(o) = home_owner {
                self.owners.insert(home.clone(), o);
            }
            self.users.insert(
                name.to_string(),
                PwEntry {
                    name: name.to_string(),
                    uid,
                    gid: 100,
                    home,
                },
            );
        }
    }

    impl Passwd for Fake {
        fn user(&self, name: &str) -> io::Result<Option<PwEntry>> {
            self.asked.borrow_mut().push(name.to_string());
            if self.broken == Some(name) {
                return Err(io::Error::other("nss down"));
            }
            Ok(self.users.get(name).cloned())
        }
        fn owner(&self, path: &Path) -> io::Result<Option<u32>> {
            if path == Path::new("/home/eio") {
                return Err(io::Error::other("I/O error"));
            }
            Ok(self.owners.get(path).copied())
        }
    }

    fn db() -> Fake {
        let mut f = Fake::default();
        f.add("joe", 1001, Some(1001));
        f.add("joe-list", 1002, Some(1002));
        f.add("root", 0, Some(0));
        f.add("nohome", 1003, None);
        f.add("foreign", 1004, Some(1001));
        f.add("alias", 7790, Some(7790));
        f
    }

    fn single() -> Instance {
        Instance::SingleUser {
            user: "me".into(),
            uid: 500,
            gid: 50,
            alias_home: PathBuf::from("/i/alias"),
        }
    }

    #[test]
    fn passwd_refusals_fall_through_to_alias() {
        let f = db();
        // (local part, why it is no passwd user)
        let cases: &[(&[u8], &str)] = &[
            (b"root", "uid 0"),
            (b"root-x", "uid 0 via prefix"),
            (b"nohome", "home missing"),
            (b"foreign", "home owned by another uid"),
            (b"nobody", "no such account"),
            (b"jo", "no such account"),
            (b"joe+x", "'+' is no break character"),
            (b"j\xc3\xb6e", "non-ASCII"),
            (b"joe/..", "odd character in the name"),
            (b"-joe", "empty prefix"),
        ];
        for (local, why) in cases {
            assert_eq!(getpw(local, &f).unwrap(), None, "{why}");
            let (a, src) = lookup(local, None, &Instance::System, &f).unwrap();
            assert_eq!(src, Source::Alias, "{why}");
            assert_eq!(
                (a.user.as_str(), a.uid, a.dash.as_str()),
                ("alias", 7790, "-")
            );
            assert_eq!(a.ext, local.to_vec());
        }
    }

    #[test]
    fn passwd_failures_are_temporary() {
        let mut f = db();
        f.broken = Some("joe");
        assert!(matches!(getpw(b"joe-x", &f), Err(OwnerError::Passwd(_))));
        let mut f = db();
        f.add("eio", 1010, None);
        f.users.get_mut("eio").unwrap().home = PathBuf::from("/home/eio");
        assert!(matches!(getpw(b"eio", &f), Err(OwnerError::Passwd(_))));
        // no alias user in a system instance
        let mut f = db();
        f.users.remove("alias");
        let e = lookup(b"nobody", None, &Instance::System, &f).unwrap_err();
        assert!(matches!(e, OwnerError::NoAlias));
        assert_eq!(e.to_string(), "No alias user. (#4.3.0)");
    }

    #[test]
    fn name_length_bound() {
        let mut f = db();
        let long = "a".repeat(MAX_PASSWD_NAME + 1);
        f.add(&long, 2000, Some(2000));
        let max = "b".repeat(MAX_PASSWD_NAME);
        f.add(&max, 2001, Some(2001));
        assert_eq!(getpw(long.as_bytes(), &f).unwrap(), None);
        assert!(
            !f.asked.borrow().contains(&long),
            "a too-long name is never looked up"
        );
        assert_eq!(getpw(max.as_bytes(), &f).unwrap().unwrap().uid, 2001);
        let ext = format!("{max}-x");
        let a = getpw(ext.as_bytes(), &f).unwrap().unwrap();
        assert_eq!((a.uid, a.ext.as_slice()), (2001, &b"x"[..]));
    }

    #[test]
    fn passwd_matches() {
        let f = db();
        let a = getpw(b"JOE", &f).unwrap().unwrap();
        assert_eq!((a.user.as_str(), a.uid, a.gid), ("joe", 1001, 100));
        assert_eq!((a.dash.as_str(), a.ext.as_slice()), ("", &b""[..]));
        assert_eq!(a.home, Path::new("/home/joe"));
        // longest prefix first
        let a = getpw(b"joe-list-Foo", &f).unwrap().unwrap();
        assert_eq!((a.user.as_str(), a.dash.as_str()), ("joe-list", "-"));
        assert_eq!(a.ext, b"Foo");
        let a = getpw(b"Joe-Foo-bar", &f).unwrap().unwrap();
        assert_eq!(a.user, "joe");
        assert_eq!(a.ext, b"Foo-bar");
        // trailing dash: ext is empty but dash is '-'
        let a = getpw(b"joe-", &f).unwrap().unwrap();
        assert_eq!((a.dash.as_str(), a.ext.as_slice()), ("-", &b""[..]));
    }

    #[test]
    fn order_assign_passwd_alias() {
        let f = db();
        let assign =
            Assign::parse("=joe:other:3000:3000:/srv/joe:::\n+x-:xu:3001:3001:/srv/x:-:p-:\n.\n")
                .unwrap();
        // assign beats passwd
        let (a, src) = lookup(b"joe", Some(&assign), &Instance::System, &f).unwrap();
        assert_eq!((src, a.user.as_str()), (Source::Assign, "other"));
        let (a, src) = lookup(b"X-Y", Some(&assign), &Instance::System, &f).unwrap();
        assert_eq!((src, a.ext.as_slice()), (Source::Assign, &b"p-Y"[..]));
        // passwd when assign has nothing
        let (a, src) = lookup(b"joe-z", Some(&assign), &Instance::System, &f).unwrap();
        assert_eq!((src, a.user.as_str()), (Source::Passwd, "joe"));
        // a single-user instance never consults passwd
        let f = db();
        let (a, src) = lookup(b"joe-z", Some(&assign), &single(), &f).unwrap();
        assert_eq!(src, Source::Alias);
        assert_eq!(
            (a.user.as_str(), a.uid, a.gid, a.dash.as_str()),
            ("me", 500, 50, "-")
        );
        assert_eq!(a.home, Path::new("/i/alias"));
        assert_eq!(a.ext, b"joe-z");
        assert!(f.asked.borrow().is_empty());
        // assign still comes first in a single-user instance
        let (a, src) = lookup(b"joe", Some(&assign), &single(), &f).unwrap();
        assert_eq!((src, a.uid), (Source::Assign, 3000));
    }
}
