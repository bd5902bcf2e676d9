//! `ternctl init`: create or complete a single-user instance.
//!
//! Safe to run again: existing control files, queue and users/assign
//! entries are kept; only what is missing is added.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tern_addr::{Charset, Domain};
use tern_control::{Assign, AssignEntry, Home, check_mailbox_name};
use tern_spool::layout;

use crate::Usage;

/// Collected "what I did" lines, printed at the end.
struct Done(Vec<String>);

impl Done {
    fn say(&mut self, line: String) {
        self.0.push(line);
    }
}

/// Makes `dir` with `mode` if missing. Returns true when it was created.
fn mkdir(dir: &Path, mode: u32) -> Result<bool> {
    match DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
}

/// Writes `path` with `text` unless it exists, atomically: a temporary
/// file is written and synced, then hard-linked into place (which fails,
/// rather than overwrites, if the file appeared meanwhile).
fn create_file(path: &Path, text: &str) -> Result<bool> {
    if fs::symlink_metadata(path).is_ok() {
        return Ok(false);
    }
    let tmp = tmp_name(path);
    write_synced(&tmp, text)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_parent(path);
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// Replaces `path` with `text` atomically (temporary file, sync, rename).
fn replace_file(path: &Path, text: &str) -> Result<()> {
    let tmp = tmp_name(path);
    write_synced(&tmp, text)?;
    fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    sync_parent(path);
    Ok(())
}

fn tmp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.ternctl.{}", std::process::id()))
}

fn write_synced(path: &Path, text: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent()
        && let Ok(d) = File::open(parent)
    {
        let _ = d.sync_all();
    }
}

/// This host's name for `control/me`: the node name when it is a valid
/// host name (with or without a dot), else `localhost`.
pub(crate) fn host_name() -> (String, bool) {
    let node = tern_sys::node_name();
    match Domain::parse(node.as_bytes(), Charset::Ascii) {
        Ok(d) if !d.is_literal() => (d.to_string(), true),
        _ => ("localhost".to_string(), false),
    }
}

/// A domain list of `localhost` and `me` (once if they are the same).
pub(crate) fn local_list(me: &str) -> String {
    if me.eq_ignore_ascii_case("localhost") {
        "localhost\n".to_string()
    } else {
        format!("localhost\n{me}\n")
    }
}

/// Creates a Maildir (`new`, `cur`, `tmp`, mode 0700) under `home`.
fn maildir(home: &Path, done: &mut Done) -> Result<()> {
    let md = home.join("Maildir");
    let mut created = false;
    for d in [
        home.to_path_buf(),
        md.clone(),
        md.join("new"),
        md.join("cur"),
        md.join("tmp"),
    ] {
        created |= mkdir(&d, 0o700)?;
    }
    if created {
        done.say(format!("created {}", md.display()));
    }
    Ok(())
}

/// `ternctl init DIR [--mailbox NAME]... [--split N] [--bin DIR]`.
pub fn init(
    dir: &Path,
    mailboxes: &[String],
    split: Option<u32>,
    bin: Option<&Path>,
) -> Result<()> {
    // Check every argument before touching anything.
    for m in mailboxes {
        check_mailbox_name(m).map_err(|hint| Usage(format!("--mailbox: {hint}")))?;
    }
    if let Some(s) = split
        && !(1..=layout::MAX_SPLIT).contains(&s)
    {
        let hint = format!("--split {s}: must be between 1 and {}", layout::MAX_SPLIT);
        return Err(Usage(hint).into());
    }
    let dir = std::path::absolute(dir).map_err(|e| Usage(format!("{}: {e}", dir.display())))?;
    let bin_target = match bin {
        Some(b) => {
            std::path::absolute(b).map_err(|e| Usage(format!("--bin {}: {e}", b.display())))?
        }
        None => {
            let exe = std::env::current_exe()
                .and_then(|p| p.canonicalize())
                .context("cannot find the running ternctl")?;
            exe.parent()
                .map(Path::to_path_buf)
                .context("ternctl has no parent directory")?
        }
    };
    let home = Home::new(&dir);
    let mut done = Done(Vec::new());

    if !dir.exists() {
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        done.say(format!("created {}", dir.display()));
        // queue/ and mail/ then land in different allocation groups
        // (layout::spread_subdirs says why that matters).
        if let Ok(d) = fs::File::open(&dir) {
            layout::spread_subdirs(&d);
        }
    }

    // queue/: keep an existing queue's split unless one is asked for.
    let qdir = home.queue_dir();
    let existed = qdir.join(layout::FORMAT_FILE).exists();
    let recorded = if existed {
        Some(layout::Layout::read(&qdir)?.split)
    } else {
        None
    };
    let split = match (split, recorded) {
        (Some(s), Some(r)) if s != r => {
            return Err(Usage(format!(
                "--split {s}: the existing queue in {} has split {r}, which cannot change",
                qdir.display()
            ))
            .into());
        }
        (Some(s), _) => s,
        (None, Some(r)) => r,
        (None, None) => layout::DEFAULT_SPLIT,
    };
    layout::create(&qdir, split)
        .with_context(|| format!("cannot create the queue in {}", qdir.display()))?;
    if !existed {
        done.say(format!("created {} (split {split})", qdir.display()));
    }

    // control/
    let cdir = home.control_dir();
    if mkdir(&cdir, 0o755)? {
        done.say(format!("created {}", cdir.display()));
    }
    let (me, from_node) = match fs::read_to_string(cdir.join("me")) {
        Ok(t) => (t.lines().next().unwrap_or("").trim_end().to_string(), true),
        Err(_) => host_name(),
    };
    if !from_node {
        done.say("note: the host name is not a valid domain; using localhost".to_string());
    }
    for (name, text) in [
        ("me", format!("{me}\n")),
        ("locals", local_list(&me)),
        ("rcpthosts", local_list(&me)),
        ("defaultdelivery", "./Maildir/\n".to_string()),
    ] {
        let path = cdir.join(name);
        if create_file(&path, &text)? {
            let shown = text.trim_end().replace('\n', ", ");
            done.say(format!("created {}: {shown}", path.display()));
        }
    }

    // users/assign
    let udir = home.users_dir();
    if mkdir(&udir, 0o755)? {
        done.say(format!("created {}", udir.display()));
    }
    let assign_path = home.assign_file();
    let old_text = match fs::read_to_string(&assign_path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", assign_path.display())),
    };
    let assign = if old_text.is_empty() {
        Assign::default()
    } else {
        Assign::parse(&old_text).map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "{} is malformed; not changed",
                assign_path.display()
            ))
        })?
    };
    let uid = tern_sys::real_uid();
    let gid = tern_sys::real_gid();
    let login = tern_sys::user_name(uid).unwrap_or_else(|| uid.to_string());
    let mut wanted: Vec<&str> = Vec::new();
    for m in mailboxes.iter().map(String::as_str).chain(["postmaster"]) {
        if !wanted.iter().any(|w| w.eq_ignore_ascii_case(m)) {
            wanted.push(m);
        }
    }
    let mut new_entries = Vec::new();
    for m in &wanted {
        let mapped = if *m == "postmaster" {
            assign.lookup(b"postmaster").is_some()
        } else {
            assign.has_exact(m)
        };
        if !mapped {
            new_entries.push(AssignEntry {
                wildcard: false,
                key: (*m).to_string(),
                user: login.clone(),
                uid,
                gid,
                home: home.mail_dir().join(m),
                dash: String::new(),
                ext: String::new(),
                line: 0,
            });
            // NAME-ext@ addresses (extensions) belong to the same mailbox:
            // its home's .qmail-ext / .qmail-default files decide.
            let prefix = format!("{m}-");
            if !assign
                .entries()
                .iter()
                .any(|e| e.wildcard && e.key.eq_ignore_ascii_case(&prefix))
            {
                new_entries.push(AssignEntry {
                    wildcard: true,
                    key: prefix,
                    user: login.clone(),
                    uid,
                    gid,
                    home: home.mail_dir().join(m),
                    dash: "-".to_string(),
                    ext: String::new(),
                    line: 0,
                });
            }
        }
    }
    if !new_entries.is_empty() || old_text.is_empty() {
        let text = Assign::add_entries(&old_text, &new_entries)?;
        replace_file(&assign_path, &text)?;
        for e in &new_entries {
            done.say(format!("added {} to {}", e.key, assign_path.display()));
        }
    }

    // Maildirs for the mailboxes that live inside this instance.
    let assign = Assign::parse(&fs::read_to_string(&assign_path)?)?;
    if mkdir(&home.mail_dir(), 0o755)? {
        done.say(format!("created {}", home.mail_dir().display()));
    }
    for m in &wanted {
        if let Some(a) = assign.lookup(m.as_bytes())
            && a.home.starts_with(home.mail_dir())
        {
            maildir(&a.home, &mut done)?;
        }
    }

    // alias/
    let adir = home.alias_dir();
    if mkdir(&adir, 0o755)? {
        done.say(format!("created {}", adir.display()));
    }

    // bin -> the programs
    let bdir = home.bin_dir();
    match fs::symlink_metadata(&bdir) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            std::os::unix::fs::symlink(&bin_target, &bdir)
                .with_context(|| format!("cannot create {}", bdir.display()))?;
            done.say(format!(
                "created {} -> {}",
                bdir.display(),
                bin_target.display()
            ));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot examine {}", bdir.display())),
    }

    // The marker that makes every program run as the invoking user, with no
    // uid switches (docs/architecture.md, "single-user instance").
    let marker = dir.join(tern_control::SINGLE_USER_MARKER);
    if !marker.exists() {
        fs::write(&marker, b"").with_context(|| format!("cannot create {}", marker.display()))?;
        done.say(format!(
            "created {} (single-user instance)",
            marker.display()
        ));
    }

    if done.0.is_empty() {
        done.say(format!("{} is complete; nothing to do", dir.display()));
    }
    done.say(format!("TERN_HOME={}", dir.display()));
    let mut out = done.0.join("\n");
    out.push('\n');
    crate::show::emit(&out);
    Ok(())
}
