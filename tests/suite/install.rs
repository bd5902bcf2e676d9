//! `scripts/install` and `scripts/uninstall` (root only; CI runs as root;
//! elsewhere every test says SKIP).
//!
//! A full install into a scratch `TERN_HOME` with `--sendmail-links`: the
//! users and groups exist with no shell and no password, every path has
//! the type, owner, group and mode `conf/tern-files` gives, the sendmail
//! links point at Tern with what was there saved, the systemd units name
//! the home. A second install (upgrade) replaces the programs and keeps a
//! queued message and the control files. Uninstall removes programs,
//! links and units, restores what the links replaced, and keeps the queue;
//! `--purge` alone is refused; `--purge --yes-really` removes the home.
//! A send-only install puts the cron line in place and no SMTP unit.

#[path = "rootinst.rs"]
mod rootinst;

use rootinst::{Accounts, as_user, text};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use tern_tests::{envelope, inject_raw};

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn install_upgrade_uninstall() {
    const T: &str = "install_upgrade_uninstall";
    if !rootinst::can_run(T, &["getent"]) {
        return;
    }
    let _lock = rootinst::lock();
    let Some(root) = rootinst::scratch(T, "install") else {
        return;
    };
    let mut accounts = Accounts::snapshot();
    let home = root.join("home");
    let sys = root.join("sys");
    let (carl, _) = accounts.add_user("terntestcarl", &root.join("carl"));

    // What the sendmail links replace: a file, a relative link, nothing.
    std::fs::create_dir_all(sys.join("usr/sbin")).unwrap();
    std::fs::create_dir_all(sys.join("usr/lib")).unwrap();
    std::fs::create_dir_all(sys.join("etc/systemd/system")).unwrap();
    std::fs::write(sys.join("usr/sbin/sendmail"), "the old sendmail\n").unwrap();
    std::os::unix::fs::symlink("../sbin/sendmail", sys.join("usr/lib/sendmail")).unwrap();

    // Not as root: refused before anything happens.
    let out = as_user("terntestcarl", tern_tests::bin("ternctl"))
        .arg("--home")
        .arg(&home)
        .arg("install")
        .arg("--bin-dir")
        .arg(tern_tests::bin_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be run as root"));
    assert!(!home.exists());

    let out = rootinst::install(&home, &sys, &["--sendmail-links", "--me", "mx.example.org"]);
    assert!(out.status.success(), "scripts/install: {}", text(&out));

    // Users: no shell, no password.
    for u in rootinst::TERN_USERS {
        let pw = std::process::Command::new("getent")
            .args(["passwd", u])
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&pw.stdout).into_owned();
        let fields: Vec<&str> = line.trim_end().split(':').collect();
        assert_eq!(fields.len(), 7, "{u}: {line}");
        assert!(
            ["/usr/sbin/nologin", "/sbin/nologin", "/bin/false"].contains(&fields[6]),
            "{u} has a shell: {line}"
        );
        assert_ne!(fields[2], "0", "{u} is root");
        let sh = std::process::Command::new("getent")
            .args(["shadow", u])
            .output()
            .unwrap();
        let shadow = String::from_utf8_lossy(&sh.stdout).into_owned();
        let hash = shadow.split(':').nth(1).unwrap_or("");
        assert!(
            hash.starts_with('!') || hash.starts_with('*'),
            "{u} has a password: {shadow}"
        );
    }
    let uids: Vec<u32> = rootinst::TERN_USERS
        .iter()
        .map(|u| rootinst::ids(u).0)
        .collect();

    // The tree is the manifest.
    let bad = rootinst::tree_mismatches(&home, rootinst::immutable_supported(&out));
    assert!(
        bad.is_empty(),
        "installed tree differs from conf/tern-files:\n{}",
        bad.join("\n")
    );
    assert_eq!(read(&home.join("control/me")), "mx.example.org\n");
    assert_eq!(
        read(&home.join("control/rcpthosts")),
        "localhost\nmx.example.org\n"
    );

    // Links and units.
    let sendmail = home.join("bin/sendmail");
    for l in ["usr/sbin/sendmail", "usr/lib/sendmail", "usr/bin/mailq"] {
        assert_eq!(std::fs::read_link(sys.join(l)).unwrap(), sendmail, "{l}");
    }
    assert_eq!(
        read(&sys.join("usr/sbin/sendmail.tern-saved")),
        "the old sendmail\n"
    );
    assert_eq!(
        std::fs::read_link(sys.join("usr/lib/sendmail.tern-saved")).unwrap(),
        Path::new("../sbin/sendmail")
    );
    assert!(!sys.join("usr/bin/mailq.tern-saved").exists());
    let unit = read(&sys.join("etc/systemd/system/tern-smtpd@.service"));
    assert!(
        unit.contains(&format!("ExecStart={}/bin/tern-smtpd", home.display())),
        "{unit}"
    );
    assert!(!unit.contains("/var/tern"), "{unit}");
    assert!(sys.join("etc/systemd/system/tern.service").exists());
    // The queue gate the SMTP front queues through.
    let gate = read(&sys.join("etc/systemd/system/tern-queue@.service"));
    assert!(
        gate.contains(&format!(
            "ExecStart={}/bin/tern-queue --gate",
            home.display()
        )),
        "{gate}"
    );
    assert!(
        unit.contains("TERN_QUEUE_SOCKET=/run/tern/queue.sock"),
        "{unit}"
    );
    assert!(unit.contains("NoNewPrivileges=yes"), "{unit}");
    assert!(sys.join("etc/systemd/system/tern-queue.socket").exists());
    // The installed units name real programs, users and options.
    if tern_tests::have_tool("systemd-analyze") {
        let dir = sys.join("etc/systemd/system");
        let v = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(dir.join("tern.service"))
            .arg(dir.join("tern-smtpd.socket"))
            .arg(dir.join("tern-smtpd@.service"))
            .arg(dir.join("tern-queue.socket"))
            .arg(dir.join("tern-queue@.service"))
            .output()
            .unwrap();
        assert!(
            v.status.success() && v.stderr.is_empty(),
            "systemd-analyze verify: {}",
            text(&v)
        );
    } else {
        tern_tests::skip(T, "systemd-analyze not installed: units not verified");
    }
    assert!(
        !sys.join("etc/cron.d/tern").exists(),
        "a full install has no cron runner"
    );

    // A queued message (nothing runs, so it stays in queue/new).
    let r = inject_raw(
        as_user("terntestcarl", home.join("bin/tern-queue")),
        b"Subject: keep me\n\nmarker-upgrade\n",
        &envelope("carl@mx.example.org", &["someone@remote.invalid"]),
    );
    assert_eq!(r.code(), 0, "{}", r.stderr);
    let queued = rootinst::queue_file_with(&home, "marker-upgrade").expect("queued");
    let before = std::fs::metadata(&queued).unwrap();
    assert!(
        read(&queued).contains(&format!("invoked by uid {carl}")),
        "{}",
        read(&queued)
    );
    // The administrator's changes.
    std::fs::write(home.join("control/me"), "custom.example.org\n").unwrap();
    std::fs::write(home.join("control/databytes"), "12345\n").unwrap();
    let send_before = std::fs::metadata(home.join("bin/tern-send")).unwrap().ino();

    // --- upgrade: programs replaced, control files and queue kept.
    let out = rootinst::install(&home, &sys, &["--sendmail-links"]);
    assert!(out.status.success(), "second install: {}", text(&out));
    assert_eq!(read(&home.join("control/me")), "custom.example.org\n");
    assert_eq!(read(&home.join("control/databytes")), "12345\n");
    let after = std::fs::metadata(&queued).expect("the queued message survives an upgrade");
    assert_eq!((after.ino(), after.len()), (before.ino(), before.len()));
    assert!(read(&queued).contains("marker-upgrade"));
    assert_ne!(
        std::fs::metadata(home.join("bin/tern-send")).unwrap().ino(),
        send_before,
        "the upgrade replaces the programs (a new file, renamed into place)"
    );
    let again: Vec<u32> = rootinst::TERN_USERS
        .iter()
        .map(|u| rootinst::ids(u).0)
        .collect();
    assert_eq!(uids, again, "existing users are kept");
    let bad = rootinst::tree_mismatches(&home, rootinst::immutable_supported(&out));
    assert!(bad.is_empty(), "after the upgrade:\n{}", bad.join("\n"));
    assert_eq!(
        read(&sys.join("usr/sbin/sendmail.tern-saved")),
        "the old sendmail\n"
    );

    // --- uninstall: programs, links and units go; the queue stays.
    let out = rootinst::uninstall(&home, &sys, &[]);
    assert!(out.status.success(), "uninstall: {}", text(&out));
    assert!(!home.join("bin").exists(), "programs removed");
    assert_eq!(
        read(&sys.join("usr/sbin/sendmail")),
        "the old sendmail\n",
        "restored"
    );
    assert_eq!(
        std::fs::read_link(sys.join("usr/lib/sendmail")).unwrap(),
        Path::new("../sbin/sendmail")
    );
    assert!(std::fs::symlink_metadata(sys.join("usr/bin/mailq")).is_err());
    assert!(!sys.join("usr/sbin/sendmail.tern-saved").exists());
    assert!(!sys.join("etc/systemd/system/tern-smtpd@.service").exists());
    assert!(!sys.join("etc/systemd/system/tern-queue.socket").exists());
    assert!(!sys.join("etc/systemd/system/tern-queue@.service").exists());
    assert!(
        read(&queued).contains("marker-upgrade"),
        "uninstall keeps the queue"
    );
    assert_eq!(read(&home.join("control/me")), "custom.example.org\n");

    // --- --purge needs --yes-really.
    let out = rootinst::uninstall(&home, &sys, &["--purge"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes-really"));
    assert!(queued.exists(), "--purge alone removed the queue");
    let out = rootinst::uninstall(&home, &sys, &["--purge", "--yes-really"]);
    assert!(out.status.success(), "purge: {}", text(&out));
    assert!(!home.exists());

    drop(accounts);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn send_only_install_has_a_cron_runner_and_no_listener() {
    const T: &str = "send_only_install_has_a_cron_runner_and_no_listener";
    if !rootinst::can_run(T, &[]) {
        return;
    }
    let _lock = rootinst::lock();
    let Some(root) = rootinst::scratch(T, "sendonly") else {
        return;
    };
    let mut accounts = Accounts::snapshot();
    // The recipient is a user of the test's own: the `alias` user may
    // already exist with another home (any machine that had qmail), and
    // mail for postmaster follows that home.
    let bob_home = root.join("bob");
    accounts.add_user("terntestbob", &bob_home);
    assert!(
        rootinst::sh_as(
            "terntestbob",
            &format!(
                "mkdir -p -m 700 {0}/Maildir/new {0}/Maildir/cur {0}/Maildir/tmp",
                bob_home.display()
            )
        ),
        "Maildir for bob"
    );
    let home = root.join("home");
    let sys = root.join("sys");
    std::fs::create_dir_all(sys.join("etc/systemd/system")).unwrap();

    // A full install first; run again with --send-only, its SMTP units go
    // (a send-only host listens on nothing).
    let out = rootinst::install(&home, &sys, &[]);
    assert!(out.status.success(), "scripts/install: {}", text(&out));
    assert!(sys.join("etc/systemd/system/tern-smtpd.socket").exists());
    assert!(!sys.join("etc/cron.d/tern").exists());
    let out = rootinst::install(&home, &sys, &["--send-only"]);
    assert!(
        out.status.success(),
        "scripts/install --send-only: {}",
        text(&out)
    );
    let cron = read(&sys.join("etc/cron.d/tern"));
    let h = home.display();
    assert!(
        cron.lines().any(|l| l
            == format!(
                "*/5 * * * *  root  TERN_HOME={h} {h}/bin/tern-start --once --logger /usr/bin/logger -t tern"
            )),
        "{cron}"
    );
    let units: Vec<_> = std::fs::read_dir(sys.join("etc/systemd/system"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(units.is_empty(), "send-only installs no service: {units:?}");
    let bad = rootinst::tree_mismatches(&home, rootinst::immutable_supported(&out));
    assert!(bad.is_empty(), "{}", bad.join("\n"));

    // mailq by an ordinary user: refused, and told why and who may.
    let mailq = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(home.join("bin/ternctl"))
        .arg("queue")
        .env_clear()
        .env("TERN_HOME", &home)
        .output()
        .unwrap();
    assert!(!mailq.status.success(), "{}", text(&mailq));
    assert!(
        String::from_utf8_lossy(&mailq.stderr).contains("needs root"),
        "{}",
        text(&mailq)
    );

    // The cron job's command works: a local message is delivered by one
    // tern-start --once run (to a real user's Maildir).
    let r = inject_raw(
        std::process::Command::new(home.join("bin/tern-queue")),
        b"Subject: cron\n\nmarker-cron\n",
        &envelope("root@localhost", &["terntestbob@localhost"]),
    );
    assert_eq!(r.code(), 0, "{}", r.stderr);
    let once = std::process::Command::new(home.join("bin/tern-start"))
        .arg("--once")
        .env_clear()
        .env("TERN_HOME", &home)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(once.status.success(), "tern-start --once: {}", text(&once));
    let delivered = std::fs::read_dir(bob_home.join("Maildir/new"))
        .unwrap()
        .flatten()
        .any(|e| read(&e.path()).contains("marker-cron"));
    assert!(delivered, "{}", text(&once));

    let out = rootinst::uninstall(&home, &sys, &["--purge", "--yes-really"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !sys.join("etc/cron.d/tern").exists(),
        "uninstall removes the cron line"
    );
    drop(accounts);
    let _ = std::fs::remove_dir_all(&root);
}
