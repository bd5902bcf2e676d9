//! A system instance (root only): tern-start runs each program under its own
//! uid, and a message reaches a real user's Maildir owned by that user.
//!
//! The test creates the Tern users (`ternq`, `terns`, `ternr`, `ternl`, group
//! `tern`) and one mailbox user if they are missing, lays out the queue with
//! the ownership of a root install by hand, and removes what it created.

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use tern_tests::{Daemon, Instance, is_root, skip, wait_until};

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn uid_of(name: &str) -> Option<u32> {
    let out = Command::new("id").args(["-u", name]).output().ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|_| out.status.success())
}

/// Users and groups made by this test, removed on drop.
struct Made {
    users: Vec<String>,
    group: bool,
}

impl Drop for Made {
    fn drop(&mut self) {
        for u in &self.users {
            run("userdel", &[u]);
        }
        if self.group {
            run("groupdel", &["tern"]);
        }
    }
}

fn proc_uid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[test]
fn system_instance_runs_each_program_under_its_uid() {
    const T: &str = "system_instance_runs_each_program_under_its_uid";
    if !is_root() {
        skip(T, "needs root (creates users, switches uids)");
        return;
    }
    if !tern_tests::have_tool("useradd") || !tern_tests::have_tool("setpriv") {
        skip(T, "useradd or setpriv missing");
        return;
    }
    let mut made = Made {
        users: vec![],
        group: false,
    };
    if !run("getent", &["group", "tern"]) {
        assert!(run("groupadd", &["--system", "tern"]));
        made.group = true;
    }
    for u in ["ternq", "terns", "ternr", "ternl"] {
        if uid_of(u).is_none() {
            assert!(run(
                "useradd",
                &[
                    "--system",
                    "-g",
                    "tern",
                    "-M",
                    "-d",
                    "/nonexistent",
                    "-s",
                    "/usr/sbin/nologin",
                    u
                ]
            ));
            made.users.push(u.to_string());
        }
    }
    let inst = Instance::new("system");
    let home = inst.home().to_path_buf();
    let h = |p: &str| home.join(p).display().to_string();
    let mailbox_home = home.join("mail/alice");
    if uid_of("terntestalice").is_none() {
        assert!(run(
            "useradd",
            &[
                "-M",
                "-d",
                &mailbox_home.display().to_string(),
                "-s",
                "/usr/sbin/nologin",
                "terntestalice"
            ]
        ));
        made.users.push("terntestalice".into());
    }
    let alice = uid_of("terntestalice").unwrap();
    let gid_out = Command::new("id")
        .args(["-g", "terntestalice"])
        .output()
        .unwrap();
    let alice_gid: u32 = String::from_utf8_lossy(&gid_out.stdout)
        .trim()
        .parse()
        .unwrap();

    // A system instance: no single-user marker, the root install's owners.
    std::fs::remove_file(home.join("single-user")).unwrap();
    let mut assign = std::fs::read_to_string(home.join("users/assign")).unwrap();
    assign = assign.replacen(
        ".\n",
        &format!(
            "=alice:terntestalice:{alice}:{alice_gid}:{}:::\n.\n",
            mailbox_home.display()
        ),
        1,
    );
    std::fs::write(home.join("users/assign"), assign).unwrap();
    for d in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(mailbox_home.join("Maildir").join(d)).unwrap();
    }
    assert!(run(
        "chown",
        &["-R", "terntestalice:", &mailbox_home.display().to_string()]
    ));
    assert!(run("chown", &["-R", "ternq:tern", &h("queue")]));
    assert!(run("chown", &["-R", "terns:tern", &h("queue/state")]));
    assert!(run("chown", &["terns:tern", &h("queue/lock/trigger")]));

    // Inject as the queue owner (a root install makes tern-queue setuid ternq).
    let (code, err) = {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", "ternq", "--regid", "tern", "--clear-groups"])
            .arg(tern_tests::bin("tern-queue"))
            .env("TERN_HOME", &home);
        let r = tern_tests::inject_raw(
            c,
            b"Subject: to alice\n\nhello alice\n",
            &tern_tests::envelope("root@localhost", &["alice@localhost"]),
        );
        (r.code(), r.stderr)
    };
    assert_eq!(code, 0, "{err}");

    let daemon = Daemon::start(&inst);
    let maildir_new = mailbox_home.join("Maildir/new");
    let delivered = wait_until(30, || {
        std::fs::read_dir(&maildir_new)
            .map(|d| d.count())
            .unwrap_or(0)
            == 1
    });
    // Who runs as whom, from /proc.
    let uid = |comm: &str| inst.pids_of(comm).first().and_then(|&p| proc_uid(p));
    let (send, clean, lspawn) = (uid("tern-send"), uid("tern-clean"), uid("tern-lspawn"));
    let log = daemon.log();
    drop(daemon);
    assert!(delivered, "not delivered: {log}");
    assert_eq!(send, uid_of("terns"), "tern-send's uid");
    assert_eq!(clean, uid_of("ternq"), "tern-clean's uid");
    assert_eq!(lspawn, Some(0), "tern-lspawn stays root");
    let file = std::fs::read_dir(&maildir_new)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::metadata(&file).unwrap().uid(),
        alice,
        "the Maildir file belongs to the recipient"
    );
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("hello alice")
    );
    drop(made);
}
