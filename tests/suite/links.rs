//! Root never follows a link or opens a special file planted in a path a
//! lower uid owns (issue #11, item 2; root only: CI runs as root, elsewhere
//! every test says SKIP).
//!
//! `ternq` owns `queue/`, so it can replace `queue/tmp` or `queue/format`
//! with a symbolic link, a FIFO or a hard link to another file. The test
//! plants each (as root, standing in for ternq) in a real root install and
//! runs what root runs there: `ternctl repair` (which now works as
//! `ternq`), `ternctl queue` and `tern-start --once` (tern-lspawn reads
//! `queue/format`), and `ternctl install` (the upgrade chowns `format`).
//! Nothing outside the queue may be touched, nothing may hang (each
//! command runs under `timeout`), and the error names the path. And the
//! `alias` user cannot rewrite postmaster's `.qmail` files.

#[path = "rootinst.rs"]
mod rootinst;

use rootinst::Accounts;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

/// Runs a program of the instance as root under `timeout 20`; exit 124
/// means it hung.
fn run(home: &Path, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("20")
        .arg(home.join("bin").join(args[0]))
        .args(&args[1..])
        .env_clear()
        .env("TERN_HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run")
}

#[test]
fn root_never_follows_what_the_queue_user_planted() {
    const T: &str = "root_never_follows_what_the_queue_user_planted";
    if !rootinst::can_run(T, &["timeout", "mkfifo"]) {
        return;
    }
    let _lock = rootinst::lock();
    let Some(root) = rootinst::scratch(T, "links") else {
        return;
    };
    let accounts = Accounts::snapshot();
    let home = root.join("home");
    let sys = root.join("sys");
    let out = rootinst::install(&home, &sys, &[]);
    assert!(out.status.success(), "install: {}", rootinst::text(&out));
    let queue = home.join("queue");

    // A root-only directory with files: the victim of a linked queue/tmp.
    let victim = root.join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::set_permissions(&victim, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    for f in ["a", "b", "1234"] {
        std::fs::write(victim.join(f), "precious\n").unwrap();
    }
    std::fs::rename(queue.join("tmp"), queue.join("tmp.real")).unwrap();
    std::os::unix::fs::symlink(&victim, queue.join("tmp")).unwrap();
    let out = run(&home, &["ternctl", "repair"]);
    assert_ne!(out.status.code(), Some(124), "repair hung");
    assert!(!out.status.success(), "{}", rootinst::text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tmp"),
        "the error names queue/tmp: {}",
        rootinst::text(&out)
    );
    for f in ["a", "b", "1234"] {
        assert!(
            victim.join(f).exists(),
            "repair removed {f} outside the queue"
        );
    }
    std::fs::remove_file(queue.join("tmp")).unwrap();
    std::fs::rename(queue.join("tmp.real"), queue.join("tmp")).unwrap();
    let out = run(&home, &["ternctl", "repair"]);
    assert!(
        out.status.success(),
        "repair as ternq: {}",
        rootinst::text(&out)
    );

    // queue/state/pid (terns') as a FIFO: ternctl flush as root neither
    // hangs nor signals anything.
    let pid = queue.join("state/pid");
    let _ = std::fs::remove_file(&pid);
    assert!(Command::new("mkfifo").arg(&pid).status().unwrap().success());
    let out = run(&home, &["ternctl", "flush"]);
    assert_ne!(
        out.status.code(),
        Some(124),
        "flush hung on a FIFO pid file"
    );
    assert!(!out.status.success(), "{}", rootinst::text(&out));
    std::fs::remove_file(&pid).unwrap();

    // queue/format as a FIFO, then as a link to a file that parses.
    let format = queue.join("format");
    let saved = std::fs::read(&format).unwrap();
    let meta = std::fs::metadata(&format).unwrap();
    std::fs::remove_file(&format).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(&format)
            .status()
            .unwrap()
            .success()
    );
    let outside = root.join("outside-format");
    std::fs::write(&outside, &saved).unwrap();
    for planted in ["fifo", "link"] {
        if planted == "link" {
            std::fs::remove_file(&format).unwrap();
            std::os::unix::fs::symlink(&outside, &format).unwrap();
        }
        for args in [&["ternctl", "queue"][..], &["tern-start", "--once"][..]] {
            let out = run(&home, args);
            assert_ne!(
                out.status.code(),
                Some(124),
                "{args:?} hung on a {planted} format"
            );
            assert!(
                !out.status.success(),
                "{args:?} with a {planted}: {}",
                rootinst::text(&out)
            );
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("format"),
                "{args:?}: the error names queue/format: {}",
                rootinst::text(&out)
            );
        }
    }

    // A hard link to a root file planted as queue/format: the upgrade must
    // not chown it to ternq.
    std::fs::remove_file(&format).unwrap();
    let root_file = queue.join("..").join("root-owned-victim");
    std::fs::write(&root_file, &saved).unwrap();
    std::fs::hard_link(&root_file, &format).unwrap();
    let out = rootinst::install(&home, &sys, &[]);
    assert!(!out.status.success(), "install chowned a linked format");
    // Refused when the format is read (a file of another uid than queue/'s)
    // or, failing that, before the chown (more than one link).
    let said = rootinst::text(&out);
    assert!(
        said.contains("queue/format")
            && (said.contains("hard links") || said.contains("belongs to uid 0")),
        "{said}"
    );
    assert_eq!(
        std::fs::metadata(&root_file).unwrap().uid(),
        0,
        "victim handed over"
    );
    std::fs::remove_file(&format).unwrap();
    std::fs::remove_file(&root_file).unwrap();
    std::fs::write(&format, &saved).unwrap();
    std::os::unix::fs::chown(&format, Some(meta.uid()), Some(meta.gid())).unwrap();
    std::fs::set_permissions(&format, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let out = rootinst::install(&home, &sys, &[]);
    assert!(out.status.success(), "upgrade: {}", rootinst::text(&out));

    // alias/ is root's: the alias user cannot rewrite postmaster's file or
    // add one (its Maildir stays its own).
    assert_eq!(std::fs::metadata(home.join("alias")).unwrap().uid(), 0);
    let alias = home.join("alias");
    assert!(!rootinst::sh_as(
        "alias",
        &format!(
            "echo '&evil@example.net' > {}/.qmail-postmaster",
            alias.display()
        )
    ));
    assert!(!rootinst::sh_as(
        "alias",
        &format!("echo x > {}/.qmail-new", alias.display())
    ));
    assert!(rootinst::sh_as(
        "alias",
        &format!("touch {}/Maildir/tmp/probe", alias.display())
    ));
    drop(accounts);
}

/// Mode bits of `path` (not following a link).
fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Sets owner and group of `path` to `user`'s.
fn chown_to(path: &Path, user: &str) {
    let (uid, gid) = rootinst::ids(user);
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

#[test]
fn root_never_writes_through_reads_or_signals_what_the_queue_users_planted() {
    const T: &str = "root_never_writes_through_reads_or_signals_what_the_queue_users_planted";
    if !rootinst::can_run(T, &["timeout", "mkfifo"]) {
        return;
    }
    let _lock = rootinst::lock();
    let Some(root) = rootinst::scratch(T, "links2") else {
        return;
    };
    let accounts = Accounts::snapshot();
    let home = root.join("home");
    let sys = root.join("sys");
    let out = rootinst::install(&home, &sys, &[]);
    assert!(out.status.success(), "install: {}", rootinst::text(&out));
    let queue = home.join("queue");
    let format = queue.join("format");
    let saved = std::fs::read(&format).unwrap();

    // 1. ternq removes queue/format and plants queue/format.tmp as a link
    // to a root file: the upgrade completes the queue without writing
    // through the link (it wrote the format text into the file and made it
    // 0644).
    let victim = root.join("victim-file");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(&format).unwrap();
    std::os::unix::fs::symlink(&victim, queue.join("format.tmp")).unwrap();
    chown_to(&queue.join("format.tmp"), "ternq");
    let out = rootinst::install(&home, &sys, &[]);
    assert!(out.status.success(), "upgrade: {}", rootinst::text(&out));
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious\n",
        "written through format.tmp"
    );
    assert_eq!(mode(&victim), 0o600, "victim's mode changed");
    assert_eq!(std::fs::read(&format).unwrap(), saved);

    // 2. A FIFO or a link as queue/format: the upgrade neither hangs nor
    // follows it, and names it.
    std::fs::remove_file(&format).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(&format)
            .status()
            .unwrap()
            .success()
    );
    chown_to(&format, "ternq");
    let out = Command::new("timeout")
        .arg("60")
        .arg(rootinst::repo().join("scripts/install"))
        .arg("--home")
        .arg(&home)
        .arg("--bin-dir")
        .arg(tern_tests::bin_dir())
        .arg("--system-root")
        .arg(&sys)
        .env_remove("TERN_HOME")
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(124),
        "install hung on a FIFO format"
    );
    assert!(!out.status.success(), "{}", rootinst::text(&out));
    assert!(
        rootinst::text(&out).contains("format"),
        "{}",
        rootinst::text(&out)
    );
    std::fs::remove_file(&format).unwrap();
    std::os::unix::fs::symlink(&victim, &format).unwrap();
    chown_to(&format, "ternq");
    let out = rootinst::install(&home, &sys, &[]);
    assert!(!out.status.success(), "{}", rootinst::text(&out));
    assert!(
        rootinst::text(&out).contains("format is a symbolic link"),
        "{}",
        rootinst::text(&out)
    );
    assert_eq!(std::fs::metadata(&victim).unwrap().uid(), 0);
    std::fs::remove_file(&format).unwrap();
    std::fs::write(&format, &saved).unwrap();
    chown_to(&format, "ternq");
    std::fs::set_permissions(&format, std::fs::Permissions::from_mode(0o640)).unwrap();

    // 3. terns makes its journal a FIFO: root's mailq (ternctl queue, as
    // terns now) neither hangs nor reads it, and names it.
    let journal = queue.join("state/journal");
    let _ = std::fs::remove_file(&journal);
    assert!(
        Command::new("mkfifo")
            .arg(&journal)
            .status()
            .unwrap()
            .success()
    );
    chown_to(&journal, "terns");
    let out = run(&home, &["ternctl", "queue"]);
    assert_ne!(out.status.code(), Some(124), "mailq hung on a FIFO journal");
    assert!(!out.status.success(), "{}", rootinst::text(&out));
    assert!(
        rootinst::text(&out).contains("journal"),
        "{}",
        rootinst::text(&out)
    );
    std::fs::remove_file(&journal).unwrap();
    let out = run(&home, &["ternctl", "queue"]);
    assert!(out.status.success(), "mailq: {}", rootinst::text(&out));

    // 4. ternq puts a link in place of queue/state, to a root-only
    // directory whose "lock" is held: tern-start --once (root) must not
    // open it (it took that lock for a running manager's and stopped).
    let outside = root.join("victim-dir");
    std::fs::create_dir(&outside).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
    let held = std::fs::File::create(outside.join("lock")).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
    std::fs::write(outside.join("pid"), "1\n").unwrap();
    let state = queue.join("state");
    std::fs::rename(&state, queue.join("state.real")).unwrap();
    std::os::unix::fs::symlink(&outside, &state).unwrap();
    chown_to(&state, "ternq");
    let out = run(&home, &["tern-start", "--once"]);
    assert_ne!(out.status.code(), Some(124), "tern-start --once hung");
    let said = rootinst::text(&out);
    assert!(
        !said.contains("flush_running"),
        "tern-start followed queue/state to a lock outside: {said}"
    );
    assert!(
        said.contains("state_file_refused") && said.contains("state"),
        "{said}"
    );
    drop(held);
    std::fs::remove_file(&state).unwrap();
    std::fs::rename(queue.join("state.real"), &state).unwrap();

    // 5. The pid file names a process called tern-send that is not the
    // manager (here root's): ternctl flush, as terns now, cannot signal it.
    let fake = root.join("tern-send");
    std::fs::copy("/bin/sleep", &fake).unwrap();
    let mut stranger = Command::new(&fake).arg("300").spawn().unwrap();
    let pid = state.join("pid");
    std::fs::write(&pid, format!("{}\n", stranger.id())).unwrap();
    chown_to(&pid, "terns");
    let out = run(&home, &["ternctl", "flush"]);
    let alive = stranger.try_wait().unwrap().is_none();
    let _ = stranger.kill();
    let _ = stranger.wait();
    assert!(
        alive,
        "ternctl flush signalled a root process: {}",
        rootinst::text(&out)
    );
    assert!(!out.status.success(), "{}", rootinst::text(&out));
    std::fs::remove_file(&pid).unwrap();

    // 6. An install from before alias/ was root's: alias/ was alias:alias,
    // and the alias user replaced .qmail-postmaster with its own. The
    // upgrade makes alias/ root's and refuses to keep that file, by name.
    let alias = home.join("alias");
    chown_to(&alias, "alias");
    assert!(rootinst::sh_as(
        "alias",
        &format!(
            "cd {} && echo '&evil@example.net' > .qmail-postmaster.new && mv -f .qmail-postmaster.new .qmail-postmaster",
            alias.display()
        )
    ));
    let out = rootinst::install(&home, &sys, &[]);
    assert!(
        !out.status.success(),
        "kept alias's .qmail-postmaster: {}",
        rootinst::text(&out)
    );
    assert!(
        rootinst::text(&out).contains("alias/.qmail-postmaster belongs to uid"),
        "{}",
        rootinst::text(&out)
    );
    assert_eq!(
        std::fs::metadata(&alias).unwrap().uid(),
        0,
        "alias/ still alias's"
    );
    std::fs::remove_file(alias.join(".qmail-postmaster")).unwrap();
    let out = rootinst::install(&home, &sys, &[]);
    assert!(out.status.success(), "upgrade: {}", rootinst::text(&out));
    assert_eq!(
        std::fs::read_to_string(alias.join(".qmail-postmaster")).unwrap(),
        "./Maildir/\n"
    );
    drop(accounts);
}
