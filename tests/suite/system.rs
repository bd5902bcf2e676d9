//! The root install's privilege separation, proved from the running system
//! (root only; CI runs as root; elsewhere every test says SKIP).
//!
//! `scripts/install` lays out a system instance in a scratch `TERN_HOME`
//! with the real Tern users; `tern-start` runs it and `tcpserver` runs
//! `tern-smtpd` as `ternd`; `swaks` sends mail to a regular user created
//! for the test, which lands in that user's `~/Maildir`, owned by them.
//! Then, from `/proc/PID/status`: every program's uid and gid are the ones
//! docs/security.md lists, and none but `tern-start` and `tern-lspawn` has
//! uid 0 or any capability. As `ternd`: the queue cannot be written or
//! read, another user's Maildir cannot be read, `tern-queue` works. As
//! `terns`: a message file cannot be changed. As any user: the setuid
//! `tern-queue` ignores `TERN_HOME` and writes only the real queue, and a
//! hard link of it into a tree the user owns refuses to run. `tern-lspawn`
//! refuses a `users/assign` line mapping to uid 0 (a permanent failure,
//! logged) and one outside `localuidmin`..`localuidmax`.

#[path = "rootinst.rs"]
mod rootinst;

use rootinst::{Accounts, as_user, creds, ids, sh_as};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tern_tests::{envelope, inject_raw, wait_until};

/// Kills and reaps a child when dropped.
struct Killed(Option<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `tern-start` run as root; SIGTERM and wait when dropped.
struct Start(Option<Child>);

impl Drop for Start {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            if !wait_until(30, || c.try_wait().ok().flatten().is_some()) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn read(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

#[test]
fn root_install_separates_privileges() {
    const T: &str = "root_install_separates_privileges";
    if !rootinst::can_run(T, &["tcpserver", "swaks"]) {
        return;
    }
    let _lock = rootinst::lock();
    let Some(root) = rootinst::scratch(T, "system") else {
        return;
    };
    let mut accounts = Accounts::snapshot();
    let home = root.join("home");
    let sysroot = root.join("sys");
    let bob_home = root.join("bob");
    let carl_home = root.join("carl");
    let (bob, bob_gid) = accounts.add_user("terntestbob", &bob_home);
    let (carl, _) = accounts.add_user("terntestcarl", &carl_home);
    assert!(
        sh_as(
            "terntestbob",
            &format!(
                "mkdir -p -m 700 {0}/Maildir/new {0}/Maildir/cur {0}/Maildir/tmp",
                bob_home.display()
            )
        ),
        "Maildir for bob"
    );

    let out = rootinst::install(&home, &sysroot, &[]);
    assert!(
        out.status.success(),
        "scripts/install: {}",
        rootinst::text(&out)
    );
    let bad = rootinst::tree_mismatches(&home, rootinst::immutable_supported(&out));
    assert!(
        bad.is_empty(),
        "installed tree differs from conf/tern-files:\n{}",
        bad.join("\n")
    );

    // Remote lookups go to a closed loopback port (nothing leaves this
    // host); uid 0 and uid 1 (daemon) get mailboxes by users/assign.
    std::fs::write(home.join("control/dnsservers"), "[127.0.0.1]:9\n").unwrap();
    // Inbound checks on (tagging only): tern-start runs tern-verify as ternv.
    std::fs::write(home.join("control/authcheck"), "tag\n").unwrap();
    std::fs::write(
        home.join("users/assign"),
        "=rootbox:root:0:0:/root:::\n=daemonbox:daemon:1:1:/usr/sbin:::\n.\n",
    )
    .unwrap();

    // tern-start as root, its log through a logger (cat, as ternl) into a
    // file; tern-smtpd under tcpserver as ternd.
    let log = root.join("tern.log");
    let start = Start(Some(
        Command::new(home.join("bin/tern-start"))
            .args(["--logger", "/bin/cat"])
            .env_clear()
            .env("TERN_HOME", &home)
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .expect("start tern-start"),
    ));
    let start_pid = start.0.as_ref().unwrap().id() as i32;
    let port = free_port();
    let (ternd, ternd_gid) = ids("ternd");
    let front_log = root.join("tcpserver.log");
    let _front = Killed(Some(
        Command::new("tcpserver")
            .args(["-H", "-R", "-l", "localhost"])
            .args(["-u", &ternd.to_string(), "-g", &ternd_gid.to_string()])
            .args(["127.0.0.1", &port.to_string()])
            .arg(home.join("bin/tern-smtpd"))
            .env_clear()
            .env("TERN_HOME", &home)
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&front_log).unwrap()))
            .spawn()
            .expect("start tcpserver"),
    ));
    assert!(
        wait_until(10, || TcpStream::connect(("127.0.0.1", port)).is_ok()),
        "tcpserver does not listen"
    );

    // --- swaks to a real user: the message is in their Maildir, theirs.
    let swaks = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}")])
        .args([
            "--to",
            "terntestbob@localhost",
            "--from",
            "sender@example.org",
        ])
        .args([
            "--header",
            "Subject: privsep",
            "--body",
            "hello bob over smtp",
        ])
        .output()
        .expect("run swaks");
    assert!(swaks.status.success(), "swaks: {}", rootinst::text(&swaks));
    let bob_new = bob_home.join("Maildir/new");
    assert!(
        wait_until(30, || !files_in(&bob_new).is_empty()),
        "not delivered to bob: {}\n{}",
        read(&log),
        read(&front_log)
    );
    let file = files_in(&bob_new).remove(0);
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (bob, bob_gid),
        "the Maildir file is bob's"
    );
    assert!(read(&file).contains("hello bob over smtp"));
    assert!(
        read(&file).contains(&format!("invoked by uid {ternd}")),
        "tern-queue was run by tern-smtpd as ternd: {}",
        read(&file)
    );
    // Through the queue writer (tern-queue --serve, as ternq, started by
    // tern-start): its pid names the message, and the uid is the SMTP
    // front's as the kernel gave it (SO_PEERCRED).
    let writer = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let exe = home.join("bin/tern-queue");
            cmd.starts_with(exe.as_os_str().as_encoded_bytes()) && cmd.ends_with(b"--serve\0")
        })
        .expect("the queue writer runs");
    assert!(
        read(&file).contains(&format!("(tern-queue {writer} invoked by uid {ternd});")),
        "not queued through the writer (pid {writer}): {}",
        read(&file)
    );

    // --- every running program's credentials, from /proc. An SMTP
    // session is held open (tern-smtpd runs) and a tern-queue waits for
    // its message (started by carl).
    let mut session = TcpStream::connect(("127.0.0.1", port)).unwrap();
    session
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = String::new();
    BufReader::new(&session).read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("220 "), "{greeting}");
    let mut waiting = Killed(Some(
        as_user("terntestcarl", home.join("bin/tern-queue"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let bin = home.join("bin");
    assert!(
        wait_until(10, || {
            let comms: Vec<String> = rootinst::processes_under(&bin)
                .into_iter()
                .map(|p| p.1)
                .collect();
            [
                "tern-start",
                "tern-lspawn",
                "tern-send",
                "tern-clean",
                "tern-rspawn",
                "tern-smtpd",
                "tern-queue",
                "tern-verify",
            ]
            .iter()
            .all(|c| comms.iter().any(|x| x == c))
        }),
        "not every program runs: {:?}",
        rootinst::processes_under(&bin)
    );
    let (terns, tern_gid) = (ids("terns").0, rootinst::group_id("tern").unwrap());
    let (ternq, _) = ids("ternq");
    let (ternr, ternr_gid) = ids("ternr");
    let (ternl, ternl_gid) = ids("ternl");
    let (ternv, ternv_gid) = ids("ternv");
    let mut seen = Vec::new();
    let mut procs = rootinst::processes_under(&bin);
    procs.extend(
        rootinst::children_of(start_pid)
            .into_iter()
            .filter(|(_, c)| c == "cat"),
    );
    for (pid, comm) in procs {
        let Some(c) = creds(pid) else { continue };
        seen.push(comm.clone());
        let all = |want: u32| [want; 4];
        match comm.as_str() {
            // The only programs that keep root.
            "tern-start" | "tern-lspawn" => {
                assert_eq!(c.uid, all(0), "{comm} runs as root");
                continue;
            }
            "tern-send" => {
                assert_eq!((c.uid, c.gid), (all(terns), all(tern_gid)), "{comm}");
                assert!(
                    !c.no_new_privs,
                    "tern-send must be able to run the setuid tern-queue"
                );
            }
            "tern-clean" => {
                assert_eq!((c.uid, c.gid), (all(ternq), all(tern_gid)), "{comm}");
                assert!(c.no_new_privs, "{comm}");
            }
            "tern-rspawn" | "tern-remote" => {
                assert_eq!((c.uid, c.gid), (all(ternr), all(ternr_gid)), "{comm}");
                assert!(c.no_new_privs, "{comm}");
            }
            "tern-verify" => {
                assert_eq!((c.uid, c.gid), (all(ternv), all(ternv_gid)), "{comm}");
                assert!(c.no_new_privs, "{comm}");
            }
            "cat" => {
                assert_eq!((c.uid, c.gid), (all(ternl), all(ternl_gid)), "the logger");
                assert!(c.no_new_privs, "the logger");
            }
            "tern-smtpd" => {
                assert_eq!((c.uid, c.gid), (all(ternd), all(ternd_gid)), "{comm}");
            }
            "tern-local" => {
                // A delivery worker (or a delivery) of tern-lspawn: one
                // recipient's uid throughout, never one of Tern's own.
                assert!(
                    c.uid.iter().all(|&u| u == c.uid[0])
                        && ![terns, ternq, ternr, ternd, ternl, ternv].contains(&c.uid[0]),
                    "{comm}: {c:?}"
                );
            }
            "tern-queue" => {
                // setuid ternq, and the caller's uid given up: it cannot
                // return to carl's uid (or root's, when root sends mail).
                assert_eq!(c.uid, all(ternq), "{comm} (started by uid {carl})");
            }
            other => panic!(
                "unexpected program {other} (pid {pid}) from {}",
                bin.display()
            ),
        }
        assert!(
            !c.uid.contains(&0) && !c.gid.contains(&0),
            "{comm} has id 0: {c:?}"
        );
        assert_eq!(
            (c.cap_eff, c.cap_prm),
            (0, 0),
            "{comm} holds capabilities: {c:?}"
        );
        if comm != "tern-smtpd" {
            // tcpserver's own drop keeps the primary gid as the one
            // supplementary group; Tern's drops keep none.
            assert!(
                c.groups.is_empty() || comm == "tern-queue",
                "{comm}: groups {:?}",
                c.groups
            );
        }
    }
    for want in [
        "tern-start",
        "tern-lspawn",
        "tern-send",
        "tern-clean",
        "tern-rspawn",
        "tern-smtpd",
        "tern-queue",
        "tern-verify",
        "cat",
    ] {
        assert!(seen.iter().any(|s| s == want), "{want} not seen: {seen:?}");
    }
    // The waiting tern-queue gets a message but no envelope: nothing is
    // queued (exit 54).
    {
        let mut c = waiting.0.take().unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(b"Subject: never\n\n")
            .unwrap();
        drop(c.stdout.take());
        assert_eq!(c.wait().unwrap().code(), Some(54));
    }
    session.write_all(b"QUIT\r\n").unwrap();
    drop(session);

    // --- as ternd: the queue is closed, bob's Maildir too; tern-queue works.
    let h = home.display();
    for (what, script) in [
        (
            "write into queue/new",
            format!("echo x > {h}/queue/new/0/planted"),
        ),
        (
            "write into queue/tmp",
            format!("echo x > {h}/queue/tmp/planted"),
        ),
        ("list queue/", format!("ls {h}/queue")),
        ("read queue/format", format!("cat {h}/queue/format")),
        ("list queue/new/0", format!("ls {h}/queue/new/0")),
        (
            "list bob's Maildir",
            format!("ls {}/Maildir/new", bob_home.display()),
        ),
        ("read bob's message", format!("cat {}", file.display())),
        ("write control/", format!("echo x > {h}/control/planted")),
    ] {
        assert!(!sh_as("ternd", &script), "ternd could {what}");
    }
    let r = inject_raw(
        as_user("ternd", home.join("bin/tern-queue")),
        b"Subject: from ternd\n\nmarker-ternd\n",
        &envelope("ternd@localhost", &["someone@remote.example.net"]),
    );
    assert_eq!(r.code(), 0, "tern-queue as ternd: {}", r.stderr);
    // tern-send takes it over (queue/cur/) and keeps it: the remote
    // domain cannot be resolved (a temporary failure).
    let mut queued = PathBuf::new();
    assert!(
        wait_until(30, || {
            rootinst::queue_file_with(&home, "marker-ternd")
                .filter(|p| p.to_string_lossy().contains("/queue/cur/"))
                .map(|p| queued = p)
                .is_some()
        }),
        "the message is not in queue/cur: {}",
        read(&log)
    );
    let m = std::fs::metadata(&queued).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (ternq, tern_gid, 0o640),
        "a message belongs to ternq, group tern, mode 0640"
    );

    // --- as terns: messages can be read, never changed or removed.
    let q = queued.display();
    assert!(
        sh_as("terns", &format!("cat {q} > /dev/null")),
        "terns reads messages"
    );
    for (what, script) in [
        ("append to a message", format!("echo x >> {q}")),
        ("truncate a message", format!(": > {q}")),
        ("remove a message", format!("rm {q}")),
        (
            "write into queue/new",
            format!("echo x > {h}/queue/new/0/planted"),
        ),
    ] {
        assert!(!sh_as("terns", &script), "terns could {what}");
    }
    // --- as ternq (which owns tern-queue, as set-user-id requires): the
    // program cannot be changed, so ternq cannot plant code that a later
    // caller (ternd, terns, root) would run. Not even root can link it.
    let tq = home.join("bin/tern-queue");
    if rootinst::immutable_supported(&out) {
        assert!(rootinst::is_immutable(&tq), "bin/tern-queue is immutable");
        for (what, script) in [
            ("chmod tern-queue", format!("chmod u+w {}", tq.display())),
            (
                "append to tern-queue",
                format!("echo x >> {}", tq.display()),
            ),
            ("rename tern-queue", format!("mv {0} {0}.old", tq.display())),
        ] {
            assert!(!sh_as("ternq", &script), "ternq could {what}");
        }
        assert!(
            std::fs::hard_link(&tq, root.join("tq-link")).is_err(),
            "root could hard-link it"
        );
    } else {
        tern_tests::skip(T, "the file system has no immutable flag: not checked");
    }

    // --- as ternr: not even reading.
    assert!(
        !sh_as("ternr", &format!("cat {q}")),
        "ternr could read a message"
    );
    assert!(
        sh_as("ternr", &format!("ls {h}/queue/remote")),
        "ternr reaches queue/remote"
    );

    // --- as ternv (the checker: network, no queue): not even reading.
    assert!(
        !sh_as("ternv", &format!("cat {q}")),
        "ternv could read a message"
    );
    assert!(
        !sh_as("ternv", &format!("ls {h}/queue/new/0")),
        "ternv lists the queue"
    );

    // --- DKIM keys: made by root, readable by ternr (which signs) alone.
    let made = Command::new(home.join("bin/ternctl"))
        .arg("--home")
        .arg(&home)
        .args(["dkim", "new", "example.com", "--selector", "sys"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", rootinst::text(&made));
    let key = home.join("control/dkim/example.com/sys.key");
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, ternr_gid, 0o640),
        "key owner and mode"
    );
    let kd = std::fs::metadata(key.parent().unwrap()).unwrap();
    assert_eq!(
        (kd.uid(), kd.gid(), kd.mode() & 0o7777),
        (0, ternr_gid, 0o750)
    );
    let k = key.display();
    assert!(
        sh_as("ternr", &format!("cat {k} > /dev/null")),
        "ternr reads the key"
    );
    for user in [
        "ternd",
        "terns",
        "ternq",
        "ternv",
        "ternl",
        "alias",
        "terntestbob",
    ] {
        assert!(
            !sh_as(user, &format!("cat {k}")),
            "{user} could read the DKIM key"
        );
    }
    assert!(queued.exists() && read(&queued).contains("marker-ternd"));

    // --- any user: TERN_HOME pointing elsewhere changes nothing for the
    // setuid tern-queue; the message reaches bob through the real queue.
    let fake = carl_home.join("fake");
    let init = as_user("terntestcarl", home.join("bin/ternctl"))
        .arg("init")
        .arg(&fake)
        .env("HOME", &carl_home)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "ternctl init as carl: {}",
        rootinst::text(&init)
    );
    let mut c = as_user("terntestcarl", home.join("bin/tern-queue"));
    c.env("TERN_HOME", &fake);
    let r = inject_raw(
        c,
        b"Subject: elsewhere?\n\nmarker-fake-home\n",
        &envelope("carl@localhost", &["terntestbob@localhost"]),
    );
    assert_eq!(r.code(), 0, "{}", r.stderr);
    assert!(
        rootinst::queue_files(&fake).is_empty(),
        "the caller's TERN_HOME was used"
    );
    assert!(
        wait_until(30, || files_in(&bob_new)
            .iter()
            .any(|f| read(f).contains("marker-fake-home"))),
        "the message did not go through the real queue to bob: {}",
        read(&log)
    );

    // --- a set-user-id copy of tern-queue in a tree carl owns (a hard
    // link made before the install marked it immutable): its queue/ is
    // carl's, not ternq's, and tern-queue refuses it.
    let evil = carl_home.join("evil");
    std::fs::create_dir_all(evil.join("bin")).unwrap();
    let st = Command::new("cp")
        .args(["-a"])
        .arg(fake.join("queue"))
        .arg(evil.join("queue"))
        .status()
        .unwrap();
    assert!(st.success());
    // Open to everyone, as an attacker would make it: only the owner
    // check stops ternq from writing there.
    let st = Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(evil.join("queue"))
        .status()
        .unwrap();
    assert!(st.success());
    // (The installed file is immutable, so not even root can hard-link it;
    // a copy made by root keeps the set-user-id bit and the owner ternq,
    // like a link made before the install marked it.)
    let st = Command::new("cp")
        .arg("-a")
        .arg(home.join("bin/tern-queue"))
        .arg(evil.join("bin/tern-queue"))
        .status()
        .unwrap();
    assert!(st.success());
    let m = std::fs::metadata(evil.join("bin/tern-queue")).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (ternq, 0o4711));
    let r = inject_raw(
        as_user("terntestcarl", evil.join("bin/tern-queue")),
        b"Subject: evil\n\nmarker-evil\n",
        &envelope("carl@localhost", &["terntestbob@localhost"]),
    );
    std::fs::remove_file(evil.join("bin/tern-queue")).unwrap();
    assert_eq!(
        r.code(),
        62,
        "a copied tern-queue must refuse a foreign queue: {}",
        r.stderr
    );
    assert!(r.stderr.contains("not to the queue user"), "{}", r.stderr);
    assert!(rootinst::queue_files(&evil).is_empty());
    assert!(rootinst::queue_file_with(&home, "marker-evil").is_none());

    // --- tern-lspawn: uid 0 and uids outside localuidmin..localuidmax are
    // permanent failures, logged.
    let r = inject_raw(
        as_user("terntestcarl", home.join("bin/tern-queue")),
        b"Subject: to root\n\nmarker-root\n",
        &envelope("", &["rootbox@localhost", "daemonbox@localhost"]),
    );
    assert_eq!(r.code(), 0, "{}", r.stderr);
    // The report (the bounce text) is generic; the detail is logged.
    let logged = |event: &str, rcpt: &str, text: &str| {
        read(&log).lines().any(|l| {
            l.starts_with(&format!("tern-lspawn: event={event} "))
                && l.contains(&format!("rcpt={rcpt}"))
                && l.contains(text)
        })
    };
    let refused = |rcpt: &str| {
        logged("delivery_end", rcpt, "status=failed")
            && logged(
                "delivery_end",
                rcpt,
                "Sorry, this mailbox is unavailable. (#5.2.1)",
            )
    };
    assert!(
        wait_until(30, || refused("rootbox@localhost")
            && refused("daemonbox@localhost")
            && logged("delivery_end", "rootbox@localhost", "uid=0")
            && logged(
                "delivery_refused",
                "rootbox@localhost",
                "not allowed to perform deliveries as root"
            )
            && logged(
                "delivery_refused",
                "daemonbox@localhost",
                "uid 1 is outside the uids allowed"
            )),
        "no permanent refusal logged: {}",
        read(&log)
    );
    assert!(
        wait_until(30, || rootinst::queue_file_with(&home, "marker-root")
            .is_none()),
        "a permanently failed message must leave the queue"
    );

    drop(_front);
    drop(start);
    let out = rootinst::uninstall(&home, &sysroot, &["--purge", "--yes-really"]);
    assert!(out.status.success(), "uninstall: {}", rootinst::text(&out));
    assert!(!home.exists());
    drop(accounts);
    let _ = std::fs::remove_dir_all(&root);
}

/// Runs tern-smtpd as `ternd` with `no_new_privs` (what the hardened
/// systemd units impose) on one SMTP session given as `input`; returns its
/// replies and log.
fn smtpd_no_new_privs(home: &Path, gate: Option<&Path>, input: &[u8]) -> (String, String) {
    let (ternd, ternd_gid) = ids("ternd");
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={ternd}"))
        .arg(format!("--regid={ternd_gid}"))
        .arg("--clear-groups")
        .arg("--no-new-privs")
        .arg("--")
        .arg(home.join("bin/tern-smtpd"))
        .env_clear()
        .env("TERN_HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .env("TCPREMOTEIP", "127.0.0.1");
    if let Some(g) = gate {
        c.env("TERN_QUEUE_SOCKET", g);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tern-smtpd");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The queue gate removes the conflict between the setuid tern-queue and a
/// hardened SMTP front: under `no_new_privs` the setuid path fails (451,
/// nothing queued), through the gate (run as ternq, no_new_privs too) the
/// message is queued as ternd's and delivered; a user outside the group
/// ternd cannot reach the gate.
#[test]
fn smtpd_with_no_new_privs_queues_through_the_gate() {
    const T: &str = "smtpd_with_no_new_privs_queues_through_the_gate";
    if !rootinst::can_run(T, &[]) {
        return;
    }
    let _lock = rootinst::lock();
    let Some(root) = rootinst::scratch(T, "gate") else {
        return;
    };
    let mut accounts = Accounts::snapshot();
    let home = root.join("home");
    let sysroot = root.join("sys");
    let bob_home = root.join("bob");
    let carl_home = root.join("carl");
    accounts.add_user("terntestbob", &bob_home);
    accounts.add_user("terntestcarl", &carl_home);
    assert!(sh_as(
        "terntestbob",
        &format!(
            "mkdir -p -m 700 {0}/Maildir/new {0}/Maildir/cur {0}/Maildir/tmp",
            bob_home.display()
        )
    ));
    let out = rootinst::install(&home, &sysroot, &[]);
    assert!(out.status.success(), "install: {}", rootinst::text(&out));
    let (ternd, _) = ids("ternd");
    let (ternq, _) = ids("ternq");
    let tern_gid = rootinst::group_id("tern").unwrap();
    let ternd_group = rootinst::group_id("ternd").unwrap();

    // The socket as tern-queue.socket makes it: root:ternd 0660. For each
    // connection, tern-queue --gate as ternq:tern with no_new_privs and the
    // connection on fd 0, as tern-queue@.service runs it.
    let sock_dir = root.join("run");
    std::fs::create_dir_all(&sock_dir).unwrap();
    let sock = sock_dir.join("queue.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::os::unix::fs::chown(&sock, Some(0), Some(ternd_group)).unwrap();
    std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o660)).unwrap();
    let (gate_tx, gate_rx) = std::sync::mpsc::channel();
    let gate_home = home.clone();
    std::thread::spawn(move || {
        let Ok((conn, _)) = listener.accept() else {
            return;
        };
        let out = Command::new("setpriv")
            .arg(format!("--reuid={ternq}"))
            .arg(format!("--regid={tern_gid}"))
            .arg("--clear-groups")
            .arg("--no-new-privs")
            .arg("--")
            .arg(gate_home.join("bin/tern-queue"))
            .arg("--gate")
            .env_clear()
            .env("TERN_HOME", &gate_home)
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(conn)))
            .stdout(Stdio::null())
            .output()
            .expect("run tern-queue --gate");
        let _ = gate_tx.send(out);
    });

    let session = |marker: &str| {
        format!(
            "HELO c.example\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<terntestbob@localhost>\r\n\
             DATA\r\nSubject: gate\r\n\r\n{marker}\r\n.\r\nQUIT\r\n"
        )
    };
    // --- without the gate, under no_new_privs, the setuid bit is ignored:
    // tern-queue runs as ternd and cannot use the queue. Nothing queued.
    let (said, log) = smtpd_no_new_privs(&home, None, session("marker-nogate").as_bytes());
    assert!(
        said.contains("\r\n451 ") && !said.contains("250 2.0.0 ok"),
        "{said}\n{log}"
    );
    assert!(rootinst::queue_file_with(&home, "marker-nogate").is_none());

    // --- with the gate: queued, the Received line names ternd (the peer's
    // uid from SO_PEERCRED, not the gate's ternq), delivered to bob.
    let (said, log) = smtpd_no_new_privs(&home, Some(&sock), session("marker-gate").as_bytes());
    assert!(said.contains("250 2.0.0 ok"), "{said}\n{log}");
    let gate = gate_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the gate ran");
    assert_eq!(gate.status.code(), Some(0), "{}", rootinst::text(&gate));
    let queued = rootinst::queue_file_with(&home, "marker-gate").expect("queued");
    let m = std::fs::metadata(&queued).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (ternq, tern_gid, 0o640),
        "a message from the gate is like any other"
    );
    assert!(
        read(&queued).contains(&format!("invoked by uid {ternd});")),
        "{}",
        read(&queued)
    );
    let once = Command::new(home.join("bin/tern-start"))
        .arg("--once")
        .env_clear()
        .env("TERN_HOME", &home)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(once.status.success(), "{}", rootinst::text(&once));
    let bob_new = bob_home.join("Maildir/new");
    assert!(
        wait_until(30, || files_in(&bob_new)
            .iter()
            .any(|f| read(f).contains("marker-gate"))),
        "not delivered to bob"
    );

    // --- a user outside the group ternd cannot reach the gate (the
    // socket's mode); sendmail with TERN_QUEUE_SOCKET fails temporarily.
    let mut c = as_user("terntestcarl", home.join("bin/sendmail"));
    c.args(["-f", "carl@localhost", "terntestbob@localhost"])
        .env("TERN_HOME", &home)
        .env("TERN_QUEUE_SOCKET", &sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: x\n\nmarker-carl\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(rootinst::queue_file_with(&home, "marker-carl").is_none());

    let out = rootinst::uninstall(&home, &sysroot, &["--purge", "--yes-really"]);
    assert!(out.status.success(), "uninstall: {}", rootinst::text(&out));
    drop(accounts);
    let _ = std::fs::remove_dir_all(&root);
}
