//! The root install's manifest, `conf/tern-files` (compiled in): every
//! path `ternctl install` lays out under `TERN_HOME`, with its type, owner,
//! group and mode. The root-only tests read the same file.

/// The manifest's text.
pub const TEXT: &str = include_str!("../../../conf/tern-files");

/// Longest path accepted in the manifest.
const MAX_PATH: usize = 255;

/// What an entry is, and how install treats it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `d`: a directory, created if missing; owner and mode always set.
    Dir,
    /// `x`: a program copied from `--bin-dir`, replaced on every install.
    Program {
        /// Skipped when `--bin-dir` lacks it.
        optional: bool,
        /// Marked immutable (`chattr +i`) once in place, so that not even
        /// its owner can change it, or link it elsewhere.
        immutable: bool,
    },
    /// `l`: a symbolic link to `target` (a name in the same directory).
    Link {
        /// What the link points to.
        target: String,
    },
    /// `c`: a configuration file, created if missing, never changed.
    Config,
    /// `f`: a regular file made by tern-spool; owner and mode set.
    SpoolFile,
    /// `p`: a FIFO made by tern-spool; owner and mode set.
    Fifo,
}

/// One line of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to `TERN_HOME`; `.` is the home itself; a last component
    /// `*` stands for each hashed queue subdirectory.
    pub path: String,
    /// The type.
    pub kind: Kind,
    /// Owner (a user name).
    pub owner: String,
    /// Group (a group name).
    pub group: String,
    /// Permission bits, set-id and sticky bits included.
    pub mode: u32,
}

impl Entry {
    /// The directory holding this entry (`.` for top-level entries), or
    /// `None` for `.` itself.
    pub fn parent(&self) -> Option<&str> {
        if self.path == "." {
            return None;
        }
        Some(self.path.rsplit_once('/').map(|(p, _)| p).unwrap_or("."))
    }

    /// The last component of the path.
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

fn check_path(path: &str) -> Result<(), &'static str> {
    if path == "." {
        return Ok(());
    }
    if path.is_empty() || path.len() > MAX_PATH {
        return Err("path is empty or too long");
    }
    let parts: Vec<&str> = path.split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || *p == "." || *p == ".." {
            return Err("path has an empty, . or .. component (or starts with /)");
        }
        if p.contains('*') && (*p != "*" || i + 1 != parts.len()) {
            return Err("* may only be the whole last component");
        }
        if !p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*' | b'@'))
        {
            return Err("path has a character other than letters, digits, . - _ @");
        }
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty()
        || name.len() > 32
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err("owner or group is not a plain lower-case name");
    }
    Ok(())
}

/// Parses manifest text.
///
/// # Errors
/// `line N: hint` for the first bad line: wrong number of fields, a bad
/// path, type, name or mode, an argument where none belongs, a duplicate,
/// or an entry before its parent.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut out: Vec<Entry> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |hint: &str| format!("line {n}: {hint}");
        let f: Vec<&str> = line.split_whitespace().collect();
        if !(5..=6).contains(&f.len()) {
            return Err(err("expected: path type owner group mode [argument]"));
        }
        check_path(f[0]).map_err(err)?;
        check_name(f[2]).map_err(err)?;
        check_name(f[3]).map_err(err)?;
        if !(3..=4).contains(&f[4].len()) {
            return Err(err("mode must be 3 or 4 octal digits"));
        }
        let mode = u32::from_str_radix(f[4], 8).map_err(|_| err("mode is not octal"))?;
        let arg = f.get(5).copied();
        let kind = match (f[1], arg) {
            ("d", None) => Kind::Dir,
            ("x", None) => Kind::Program {
                optional: false,
                immutable: false,
            },
            ("x", Some("optional")) => Kind::Program {
                optional: true,
                immutable: false,
            },
            ("x", Some("immutable")) => Kind::Program {
                optional: false,
                immutable: true,
            },
            ("l", Some(t)) => {
                check_path(t).map_err(err)?;
                if t.contains('/') || t.contains('*') {
                    return Err(err("a link target is a name in the same directory"));
                }
                Kind::Link {
                    target: t.to_string(),
                }
            }
            ("c", None) => Kind::Config,
            ("f", None) => Kind::SpoolFile,
            ("p", None) => Kind::Fifo,
            ("d" | "x" | "l" | "c" | "f" | "p", _) => {
                return Err(err("wrong argument for this type"));
            }
            _ => return Err(err("type must be one of d x l c f p")),
        };
        if kind != Kind::Dir && f[0].ends_with('*') {
            return Err(err("only directories may use *"));
        }
        let e = Entry {
            path: f[0].to_string(),
            kind,
            owner: f[2].to_string(),
            group: f[3].to_string(),
            mode,
        };
        if out.iter().any(|o| o.path == e.path) {
            return Err(err("duplicate path"));
        }
        if let Some(parent) = e.parent()
            && !out.iter().any(|o| o.path == parent && o.kind == Kind::Dir)
        {
            return Err(err("its parent directory must come first"));
        }
        out.push(e);
    }
    if out.first().map(|e| e.path.as_str()) != Some(".") {
        return Err("the first entry must be `.` (TERN_HOME)".to_string());
    }
    Ok(out)
}

/// `entries` with every `*` entry replaced by one entry per hashed
/// subdirectory `0` .. `split - 1`.
pub fn expand(entries: &[Entry], split: u32) -> Vec<Entry> {
    let mut out = Vec::new();
    for e in entries {
        if let Some(dir) = e.path.strip_suffix("/*") {
            for b in 0..split {
                out.push(Entry {
                    path: format!("{dir}/{b}"),
                    ..e.clone()
                });
            }
        } else {
            out.push(e.clone());
        }
    }
    out
}

/// The manifest ternctl carries, parsed.
///
/// # Panics
/// If `conf/tern-files` is malformed (a unit test keeps it well-formed).
pub fn entries() -> Vec<Entry> {
    parse(TEXT).expect("conf/tern-files is well-formed (unit-tested)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines() {
        let head = ".  d root root 0755\n";
        let bad: &[(&str, &str)] = &[
            ("bin d root root", "expected: path type"),
            ("bin d root root 0755 x y", "expected: path type"),
            ("/bin d root root 0755", "empty, . or .."),
            ("a/../b d root root 0755", "empty, . or .."),
            ("bin d Root root 0755", "plain lower-case name"),
            ("bin d root root 755x", "not octal"),
            ("bin d root root 07555", "3 or 4 octal digits"),
            ("bin q root root 0755", "type must be one of"),
            ("bin d root root 0755 optional", "wrong argument"),
            ("bin x root root 0755 maybe", "wrong argument"),
            ("bin l root root 0777", "wrong argument"),
            ("bin l root root 0777 ../x", "empty, . or .."),
            ("a*b d root root 0755", "whole last component"),
            ("bin/x x root root 0755", "parent directory must come first"),
            ("bin x root root 0755\nbin x root root 0755", "duplicate"),
            ("bin/* x root root 0755", "only directories may use *"),
            ("bin/* d root root 0755", "parent directory must come first"),
            ("b$n d root root 0755", "character other than"),
        ];
        for (line, hint) in bad {
            let text = format!("{head}{line}\n");
            let e = parse(&text).unwrap_err();
            assert!(e.contains(hint), "{line}: {e}");
            assert!(e.starts_with("line "), "{e}");
        }
        assert!(parse("# nothing\n").unwrap_err().contains("first entry"));
        assert!(
            parse("bin d root root 0755\n")
                .unwrap_err()
                .contains("parent directory")
        );
    }

    #[test]
    fn the_shipped_manifest() {
        let e = entries();
        let q = e.iter().find(|e| e.path == "bin/tern-queue").unwrap();
        assert_eq!((q.owner.as_str(), q.mode), ("ternq", 0o4711));
        assert_eq!(
            q.kind,
            Kind::Program {
                optional: false,
                immutable: true
            }
        );
        // The only set-id program.
        let setid: Vec<_> = e
            .iter()
            .filter(|e| matches!(e.kind, Kind::Program { .. }) && e.mode & 0o6000 != 0)
            .collect();
        assert_eq!(setid.len(), 1);
        let x = expand(&e, 3);
        assert!(x.iter().any(|e| e.path == "queue/new/2"));
        assert!(!x.iter().any(|e| e.path.contains('*')));
        assert_eq!(
            x.iter().find(|e| e.path == "queue/cur/0").unwrap().parent(),
            Some("queue/cur")
        );
        assert_eq!(x[0].parent(), None);
        assert_eq!(
            e.iter().find(|e| e.path == "control").unwrap().parent(),
            Some(".")
        );
        // Every program of the workspace is in the manifest.
        let bin = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        for d in std::fs::read_dir(bin).unwrap() {
            let name = d.unwrap().file_name().into_string().unwrap();
            assert!(
                e.iter().any(|e| e.path == format!("bin/{name}")),
                "bin/{name} is not in conf/tern-files"
            );
        }
    }
}
