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
use std::os::unix::fs::MetadataExt;
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
    assert!(
        rootinst::text(&out).contains("hard links"),
        "{}",
        rootinst::text(&out)
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
