//! [`check`]: the effective configuration of an instance, file by file.

use crate::assign::Assign;
use crate::control::Control;
use crate::error::{Error, ErrorKind};
use crate::home::Home;
use crate::settings::SETTINGS;

/// What `check` found for one file.
#[derive(Debug)]
pub enum Status {
    /// The file sets the value shown (one string per line of value).
    Set(Vec<String>),
    /// The file is missing (or has no value); the default shown applies.
    Default(Vec<String>),
    /// The value depends on another setting that is broken (`me`); that
    /// file's own report has the error.
    DependsOnBroken(&'static str),
    /// A file Tern does not read (a warning: it is ignored).
    Unknown,
    /// The file is unreadable or malformed.
    Error(Error),
}

/// The report for one file of the instance.
#[derive(Debug)]
pub struct FileReport {
    /// Path relative to the instance, e.g. `control/databytes`.
    pub name: String,
    /// Whether the file exists.
    pub present: bool,
    /// The outcome.
    pub status: Status,
    /// The setting's one-line meaning, for settings in the table.
    pub doc: Option<&'static str>,
    /// Warnings about a value that loads but will not work as meant
    /// (e.g. a `users/assign` entry whose uid local delivery refuses).
    pub warnings: Vec<String>,
}

impl FileReport {
    /// True when the file is unreadable or malformed.
    pub fn is_error(&self) -> bool {
        matches!(self.status, Status::Error(_))
    }

    /// True for files Tern ignores, or with [`FileReport::warnings`].
    pub fn is_warning(&self) -> bool {
        matches!(self.status, Status::Unknown) || !self.warnings.is_empty()
    }
}

/// Explains the configuration of `home`: one report per setting of
/// [`SETTINGS`] (in table order, with defaults for missing files), then one
/// per unknown file in `control/` (sorted), then `users/assign`.
pub fn check(home: &Home) -> Vec<FileReport> {
    let control = Control::new(home);
    let mut reports = Vec::new();
    let mut present: Vec<String> = Vec::new();
    match std::fs::read_dir(control.dir()) {
        Ok(rd) => {
            for entry in rd {
                match entry {
                    Ok(e) => present.push(e.file_name().to_string_lossy().into_owned()),
                    Err(e) => {
                        reports.push(FileReport {
                            name: "control/".into(),
                            present: true,
                            status: Status::Error(Error::new(
                                control.dir(),
                                None,
                                ErrorKind::Io(e),
                            )),
                            doc: None,
                            warnings: Vec::new(),
                        });
                        break;
                    }
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => reports.push(FileReport {
            name: "control/".into(),
            present: false,
            status: Status::Error(Error::new(control.dir(), None, ErrorKind::Io(e))),
            doc: None,
            warnings: Vec::new(),
        }),
    }
    present.sort();

    for s in SETTINGS {
        let own_path = control.dir().join(s.name);
        let status = match control.load(s) {
            Ok((v, true)) => Status::Set(v.display_lines()),
            Ok((v, false)) => Status::Default(v.display_lines()),
            Err(e) if e.path().is_some_and(|p| p != own_path) => Status::DependsOnBroken("me"),
            Err(e) => Status::Error(e),
        };
        reports.push(FileReport {
            name: format!("control/{}", s.name),
            present: present.iter().any(|n| n == s.name),
            status,
            doc: Some(s.doc),
            warnings: Vec::new(),
        });
    }
    for name in &present {
        // control/dkim/ is the DKIM key store, checked by ternctl itself.
        if !SETTINGS.iter().any(|s| s.name == name) && name != "dkim" {
            reports.push(FileReport {
                name: format!("control/{name}"),
                present: true,
                status: Status::Unknown,
                doc: None,
                warnings: Vec::new(),
            });
        }
    }
    let assign = home.assign_file();
    let mut warnings = Vec::new();
    let (present, status) = match Assign::load(&assign) {
        Ok(None) => (false, Status::Default(Vec::new())),
        Ok(Some(a)) => {
            if !home.is_single_user() {
                warnings = refused_assignments(home, &control, &a);
            }
            (
                true,
                Status::Set(a.entries().iter().map(|e| e.to_line()).collect()),
            )
        }
        Err(e) => (assign.exists(), Status::Error(e)),
    };
    reports.push(FileReport {
        name: "users/assign".into(),
        present,
        status,
        doc: Some("local parts assigned to users (qmail-users format)"),
        warnings,
    });
    reports
}

/// System instance: the `users/assign` entries whose uid/gid local delivery
/// refuses ([`crate::uids::delivery_allowed`]), one warning each. Nothing
/// when `localuidmin`/`localuidmax` do not load (their own reports say
/// why).
fn refused_assignments(home: &Home, control: &Control, a: &Assign) -> Vec<String> {
    use std::os::unix::fs::MetadataExt as _;
    let (Ok(min), Ok(max)) = (control.localuidmin(), control.localuidmax()) else {
        return Vec::new();
    };
    // lstat: ternctl check may run as root, and queue/cur is the queue
    // uid's to replace with a link.
    let queue_gid = std::fs::symlink_metadata(home.queue_dir().join("cur"))
        .ok()
        .map(|m| m.gid());
    let users = crate::uids::DeliveryUsers::lookup(&crate::owner::SystemPasswd, queue_gid);
    a.entries()
        .iter()
        .filter_map(|e| {
            crate::uids::delivery_allowed(e.uid, e.gid, (min, max), &users)
                .err()
                .map(|why| {
                    format!(
                        "{}{}: {why}; tern-smtpd refuses it at RCPT and tern-lspawn does not deliver to it",
                        if e.wildcard { '+' } else { '=' },
                        e.key
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn find<'a>(r: &'a [FileReport], name: &str) -> &'a FileReport {
        r.iter()
            .find(|x| x.name == name)
            .unwrap_or_else(|| panic!("{name} not reported"))
    }

    #[test]
    fn broken_instance() {
        let t = TempDir::new();
        t.control("databytes", "12x\n");
        t.control("me.orig", "x\n");
        std::fs::create_dir_all(t.path().join("users")).unwrap();
        std::fs::write(t.path().join("users/assign"), "=a:a:1:1:/a:::\n").unwrap();
        let r = check(&Home::new(t.path()));
        let me = find(&r, "control/me");
        assert!(me.is_error() && !me.present);
        let db = find(&r, "control/databytes");
        match &db.status {
            Status::Error(e) => {
                assert_eq!(e.line(), Some(1));
                assert!(
                    e.to_string()
                        .contains("control/databytes: line 1: not a number")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        // a default that needs the broken me points there instead of repeating the error
        assert!(matches!(
            find(&r, "control/defaulthost").status,
            Status::DependsOnBroken("me")
        ));
        assert!(find(&r, "control/me.orig").is_warning());
        assert!(find(&r, "users/assign").is_error());
        assert!(
            matches!(find(&r, "control/concurrencylocal").status, Status::Default(ref v) if v == &["10"])
        );
    }

    #[test]
    fn healthy_instance() {
        let t = TempDir::new();
        t.control("me", "mail.example.com\n");
        t.control("locals", "localhost\nmail.example.com\n");
        let r = check(&Home::new(t.path()));
        assert!(r.iter().all(|x| !x.is_error() && !x.is_warning()), "{r:?}");
        let locals = find(&r, "control/locals");
        assert!(locals.present);
        assert!(
            matches!(&locals.status, Status::Set(v) if v == &["localhost", "mail.example.com"])
        );
        assert!(
            matches!(&find(&r, "control/defaulthost").status, Status::Default(v) if v == &["mail.example.com"])
        );
        assert!(matches!(&find(&r, "users/assign").status, Status::Default(v) if v.is_empty()));
        assert_eq!(r.len(), SETTINGS.len() + 1);
    }
}
