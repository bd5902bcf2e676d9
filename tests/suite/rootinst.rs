//! Shared by the root-only suites `system` and `install` (included with
//! `#[path]`): the lock that serialises them, the accounts they create
//! and remove, running `scripts/install`, running commands as another
//! user, reading `/proc/PID/status`, and checking an installed tree
//! against `conf/tern-files`.
//!
//! Accounts: `scripts/install` creates the Tern users and groups when they
//! are missing. A test records which existed before it and removes, when
//! it ends (also on a panic), the ones it caused to exist, and the mailbox
//! users it made itself, so the machine is left as it was.

#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The users of a root install.
pub const TERN_USERS: [&str; 7] = [
    "ternd", "ternq", "terns", "ternr", "ternv", "ternl", "alias",
];
/// The groups of a root install.
pub const TERN_GROUPS: [&str; 6] = ["tern", "ternd", "ternr", "ternv", "ternl", "alias"];

/// The repository's root (the `tests` package lives in `tests/`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn ok(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Numeric id from `id -u NAME` / `id -g NAME`.
pub fn id(flag: &str, name: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, name]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// `(uid, gid)` of `name`; panics when it does not exist.
pub fn ids(name: &str) -> (u32, u32) {
    (
        id("-u", name).unwrap_or_else(|| panic!("no user {name}")),
        id("-g", name).unwrap_or_else(|| panic!("no user {name}")),
    )
}

/// The gid of group `name`.
pub fn group_id(name: &str) -> Option<u32> {
    let out = Command::new("getent").args(["group", name]).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.split(':').nth(2)?.trim().parse().ok()
}

/// Whether this machine can run the root-only suites; prints a SKIP line
/// when not.
pub fn can_run(test: &str, tools: &[&str]) -> bool {
    if !tern_tests::is_root() {
        tern_tests::skip(
            test,
            "needs root (creates users, installs a setuid program, switches uids)",
        );
        return false;
    }
    for t in [
        "useradd", "userdel", "groupadd", "groupdel", "setpriv", "findmnt",
    ]
    .iter()
    .chain(tools)
    {
        if !tern_tests::have_tool(t) {
            tern_tests::skip(test, &format!("{t} not installed"));
            return false;
        }
    }
    true
}

/// Serialises the root suites, across test binaries too: an exclusive
/// `flock` on a file in the temporary directory, held while alive.
pub struct RootLock(#[allow(dead_code)] File);

/// Takes the lock (waits for it).
pub fn lock() -> RootLock {
    let path = std::env::temp_dir().join("tern-root-tests.lock");
    let f = File::options()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open the root-test lock file");
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    RootLock(f)
}

/// The accounts a test caused to exist; removed on drop.
pub struct Accounts {
    users: Vec<String>,
    groups: Vec<String>,
}

impl Accounts {
    /// Records which Tern users and groups exist now: those that do not
    /// are removed on drop (the install will create them).
    pub fn snapshot() -> Accounts {
        Accounts {
            users: TERN_USERS
                .iter()
                .filter(|u| id("-u", u).is_none())
                .map(|u| u.to_string())
                .collect(),
            groups: TERN_GROUPS
                .iter()
                .filter(|g| group_id(g).is_none())
                .map(|g| g.to_string())
                .collect(),
        }
    }

    /// Creates a regular user `name` (uid from the normal range, its own
    /// group, no login shell) with a new home directory `home`; removed on
    /// drop. Returns `(uid, gid)`.
    pub fn add_user(&mut self, name: &str, home: &Path) -> (u32, u32) {
        if id("-u", name).is_some() {
            // Left by an earlier run that was killed.
            ok("userdel", &[name]);
            ok("groupdel", &[name]);
        }
        let status = Command::new("useradd")
            .args([
                "--create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg("--home-dir")
            .arg(home)
            .arg(name)
            .status()
            .expect("run useradd");
        assert!(status.success(), "useradd {name}");
        self.users.push(name.to_string());
        self.groups.push(name.to_string());
        ids(name)
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for u in self.users.iter().rev() {
            ok("userdel", &[u]);
        }
        // userdel already removed a user's own group when nothing else
        // used it; what is left goes now.
        for g in self.groups.iter().rev() {
            ok("groupdel", &[g]);
        }
    }
}

/// A root test's scratch directory, removed with everything below it when
/// dropped (unless `TERN_KEEP_TEST_DIRS` is set). The install marks the
/// setuid `tern-queue` immutable, which even root's unlink refuses, so
/// the marks are cleared first; without this every run left its trees.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("TERN_KEEP_TEST_DIRS").is_some() {
            return;
        }
        if std::fs::remove_dir_all(&self.0).is_err() {
            let _ = Command::new("chattr")
                .arg("-R")
                .arg("-f")
                .arg("-i")
                .arg(&self.0)
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A scratch directory that every user can traverse (the mailbox users'
/// homes and the instance live below it), on a file system that honours
/// set-user-id bits; `None` (after a SKIP line) on a `nosuid` mount.
pub fn scratch(test: &str, name: &str) -> Option<Scratch> {
    let dir = tern_tests::scratch_dir(name);
    let mut p = dir.clone();
    loop {
        if let Ok(m) = std::fs::metadata(&p)
            && m.permissions().mode() & 0o001 == 0
        {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                .expect("chmod scratch");
        }
        if !p.pop() || p.as_os_str().is_empty() || p == Path::new("/") {
            break;
        }
    }
    let out = Command::new("findmnt")
        .args(["-n", "-o", "OPTIONS", "-T"])
        .arg(&dir)
        .output()
        .expect("run findmnt");
    if String::from_utf8_lossy(&out.stdout)
        .split(',')
        .any(|o| o.trim() == "nosuid")
    {
        tern_tests::skip(
            test,
            &format!(
                "{} is on a nosuid mount: the setuid tern-queue cannot work there (set TERN_TEST_TMP)",
                dir.display()
            ),
        );
        return None;
    }
    Some(Scratch(dir))
}

/// Runs `scripts/install --home HOME --bin-dir <built programs>
/// --system-root SYSROOT ARGS...`.
pub fn install(home: &Path, sysroot: &Path, args: &[&str]) -> Output {
    Command::new(repo().join("scripts/install"))
        .arg("--home")
        .arg(home)
        .arg("--bin-dir")
        .arg(tern_tests::bin_dir())
        .arg("--system-root")
        .arg(sysroot)
        .args(args)
        .env_remove("TERN_HOME")
        .output()
        .expect("run scripts/install")
}

/// Runs `scripts/uninstall --home HOME --bin-dir <built programs>
/// --system-root SYSROOT ARGS...`.
pub fn uninstall(home: &Path, sysroot: &Path, args: &[&str]) -> Output {
    Command::new(repo().join("scripts/uninstall"))
        .arg("--home")
        .arg(home)
        .arg("--bin-dir")
        .arg(tern_tests::bin_dir())
        .arg("--system-root")
        .arg(sysroot)
        .args(args)
        .env_remove("TERN_HOME")
        .output()
        .expect("run scripts/uninstall")
}

/// The text of a finished command, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A command that runs `program` as `user` (its uid and primary gid, no
/// supplementary groups), through setpriv(1).
pub fn as_user(user: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let (uid, gid) = ids(user);
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(program);
    c
}

/// Runs `sh -c SCRIPT` as `user`; true when it succeeded.
pub fn sh_as(user: &str, script: &str) -> bool {
    as_user(user, "/bin/sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// What `/proc/PID/status` says about a process's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// Real, effective, saved, file-system uid.
    pub uid: [u32; 4],
    /// Real, effective, saved, file-system gid.
    pub gid: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Effective capabilities.
    pub cap_eff: u64,
    /// Permitted capabilities.
    pub cap_prm: u64,
    /// The `no_new_privs` flag.
    pub no_new_privs: bool,
}

/// Reads `/proc/PID/status`.
pub fn creds(pid: i32) -> Option<Creds> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
    };
    let four = |k: &str| -> Option<[u32; 4]> {
        let v: Vec<u32> = field(k)?
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        v.try_into().ok()
    };
    let hex = |k: &str| u64::from_str_radix(&field(k)?, 16).ok();
    Some(Creds {
        uid: four("Uid:")?,
        gid: four("Gid:")?,
        groups: field("Groups:")?
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect(),
        cap_eff: hex("CapEff:")?,
        cap_prm: hex("CapPrm:")?,
        no_new_privs: field("NoNewPrivs:")? == "1",
    })
}

/// `(pid, comm)` of every process whose program lies under `dir`
/// (`/proc/PID/exe`).
pub fn processes_under(dir: &Path) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe"))
            && exe.starts_with(dir)
        {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            out.push((pid, comm.trim_end().to_string()));
        }
    }
    out
}

/// `(pid, comm)` of the children of `parent`.
pub fn children_of(parent: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: the comm may hold spaces, so split
        // after its closing parenthesis.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(parent) {
            let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("");
            out.push((pid, comm.to_string()));
        }
    }
    out
}

/// One line of `conf/tern-files`.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// Path under the home (`.` = the home), `*` expanded.
    pub path: String,
    /// `d`, `x`, `l`, `c`, `f` or `p`.
    pub kind: char,
    /// Owner name.
    pub owner: String,
    /// Group name.
    pub group: String,
    /// Mode bits.
    pub mode: u32,
    /// The optional sixth column.
    pub arg: Option<String>,
}

/// `conf/tern-files` with `*` expanded to `0..split`.
pub fn manifest(split: u32) -> Vec<FileEntry> {
    let text = std::fs::read_to_string(repo().join("conf/tern-files")).expect("conf/tern-files");
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(f.len() == 5 || f.len() == 6, "conf/tern-files: {line}");
        let e = FileEntry {
            path: f[0].to_string(),
            kind: f[1].chars().next().expect("type"),
            owner: f[2].to_string(),
            group: f[3].to_string(),
            mode: u32::from_str_radix(f[4], 8).expect("octal mode"),
            arg: f.get(5).map(|s| s.to_string()),
        };
        if let Some(dir) = e.path.strip_suffix("/*") {
            for b in 0..split {
                out.push(FileEntry {
                    path: format!("{dir}/{b}"),
                    ..e.clone()
                });
            }
        } else {
            out.push(e);
        }
    }
    out
}

/// The split of the installed queue (`queue/format`).
pub fn split_of(home: &Path) -> u32 {
    let text = std::fs::read_to_string(home.join("queue/format")).expect("queue/format");
    text.lines()
        .find_map(|l| l.strip_prefix("split "))
        .and_then(|n| n.parse().ok())
        .expect("split line")
}

/// Whether the install's output says the file system cannot hold the
/// immutable flag (then it is not checked).
pub fn immutable_supported(install_output: &Output) -> bool {
    !String::from_utf8_lossy(&install_output.stdout).contains("immutable on this file system")
}

/// Whether `path` has the immutable flag (`lsattr`'s `i`).
pub fn is_immutable(path: &Path) -> bool {
    let f = std::fs::File::open(path).expect("open for the flags");
    rustix::fs::ioctl_getflags(&f)
        .map(|fl| fl.contains(rustix::fs::IFlags::IMMUTABLE))
        .unwrap_or(false)
}

/// Every difference between the tree under `home` and `conf/tern-files`
/// (owner, group, mode, type, the immutable flag when `immutable` says the
/// file system has it), one line each; empty when they agree. Optional
/// programs missing from the build may be missing.
pub fn tree_mismatches(home: &Path, immutable: bool) -> Vec<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut bad = Vec::new();
    for e in manifest(split_of(home)) {
        let p = if e.path == "." {
            home.to_path_buf()
        } else {
            home.join(&e.path)
        };
        let m = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(err) => {
                let optional = e.arg.as_deref() == Some("optional")
                    && !tern_tests::bin_dir()
                        .join(e.path.trim_start_matches("bin/"))
                        .exists();
                if !optional {
                    bad.push(format!("{}: {err}", e.path));
                }
                continue;
            }
        };
        let ft = m.file_type();
        let type_ok = match e.kind {
            'd' => ft.is_dir(),
            'x' | 'c' | 'f' => ft.is_file(),
            'l' => ft.is_symlink(),
            'p' => ft.is_fifo(),
            other => panic!("conf/tern-files: unknown type {other}"),
        };
        if !type_ok {
            bad.push(format!("{}: wrong type {ft:?} for {}", e.path, e.kind));
        }
        let want_uid = if e.owner == "root" {
            0
        } else {
            ids(&e.owner).0
        };
        let want_gid = if e.group == "root" {
            0
        } else {
            group_id(&e.group).expect("group")
        };
        if (m.uid(), m.gid()) != (want_uid, want_gid) {
            bad.push(format!(
                "{}: owner {}:{}, want {}:{} ({want_uid}:{want_gid})",
                e.path,
                m.uid(),
                m.gid(),
                e.owner,
                e.group
            ));
        }
        if e.arg.as_deref() == Some("immutable") && immutable && !is_immutable(&p) {
            bad.push(format!("{}: not immutable", e.path));
        }
        if e.kind == 'l' {
            let target = std::fs::read_link(&p).unwrap_or_default();
            if Some(target.to_string_lossy().as_ref()) != e.arg.as_deref() {
                bad.push(format!("{}: link to {}", e.path, target.display()));
            }
        } else if m.mode() & 0o7777 != e.mode {
            bad.push(format!(
                "{}: mode {:04o}, want {:04o}",
                e.path,
                m.mode() & 0o7777,
                e.mode
            ));
        }
    }
    bad
}

/// Paths of the queue files (`queue/new/*/*`, `queue/cur/*/*`).
pub fn queue_files(home: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for top in ["new", "cur"] {
        for b in std::fs::read_dir(home.join("queue").join(top))
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in std::fs::read_dir(b.path()).into_iter().flatten().flatten() {
                out.push(f.path());
            }
        }
    }
    out
}

/// The queue file whose content holds `marker`, if any.
pub fn queue_file_with(home: &Path, marker: &str) -> Option<PathBuf> {
    queue_files(home).into_iter().find(|p| {
        std::fs::read(p)
            .map(|b| String::from_utf8_lossy(&b).contains(marker))
            .unwrap_or(false)
    })
}
