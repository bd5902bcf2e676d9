//! ternctl: init (idempotent, never loses anything), check, queue, repair,
//! exit codes. Every test runs the real binary.

use std::path::Path;
use std::process::{Command, Output};
use tern_tests::{Instance, bin, bin_dir, envelope, scratch_dir};

fn ternctl(home: &Path, args: &[&str]) -> Output {
    Command::new(bin("ternctl"))
        .env("TERN_HOME", home)
        .args(args)
        .output()
        .expect("run ternctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn init(dir: &Path, mailboxes: &[&str]) -> Output {
    let mut c = Command::new(bin("ternctl"));
    c.env_remove("TERN_HOME")
        .arg("init")
        .arg(dir)
        .arg("--bin")
        .arg(bin_dir());
    for m in mailboxes {
        c.arg("--mailbox").arg(m);
    }
    c.output().expect("run ternctl init")
}

fn is_maildir(home: &Path) -> bool {
    ["new", "cur", "tmp"]
        .iter()
        .all(|d| home.join("Maildir").join(d).is_dir())
}

#[test]
fn init_twice_is_safe_and_adds_a_mailbox() {
    let inst = Instance::with_mailboxes("ternctl-init", &["alice"]);
    let home = inst.home();
    let assign = std::fs::read_to_string(home.join("users/assign")).unwrap();
    assert!(
        assign.contains("=alice:") && assign.contains("=postmaster:"),
        "{assign}"
    );
    assert!(assign.ends_with(".\n"), "{assign}");
    assert!(is_maildir(&home.join("mail/alice")));
    assert!(is_maildir(&home.join("mail/postmaster")));
    assert!(home.join("alias").is_dir());
    assert_eq!(std::fs::read_link(home.join("bin")).unwrap(), bin_dir());

    // the operator changes things; a queued message is waiting
    std::fs::write(home.join("control/me"), "custom.example\n").unwrap();
    std::fs::write(home.join("control/databytes"), "1000\n").unwrap();
    let edited = assign.replace(".\n", "+ext-:someone:1:1:/elsewhere:-::\n.\n");
    std::fs::write(home.join("users/assign"), &edited).unwrap();
    let r = inst.inject_raw(
        b"Subject: keep me\n\nbody\n",
        &envelope("a@example.com", &["alice@localhost"]),
    );
    assert_eq!(r.code(), 0, "{}", r.stderr);

    let out = init(home, &["bob", "alice"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("added bob to"), "{said}");
    assert!(!said.contains("added alice"), "{said}");
    assert!(
        said.contains(&format!("TERN_HOME={}", home.display())),
        "{said}"
    );

    assert_eq!(
        std::fs::read_to_string(home.join("control/me")).unwrap(),
        "custom.example\n"
    );
    assert_eq!(
        std::fs::read_to_string(home.join("control/databytes")).unwrap(),
        "1000\n"
    );
    let after = std::fs::read_to_string(home.join("users/assign")).unwrap();
    assert!(
        after.starts_with(&edited[..edited.len() - 2]),
        "old entries changed:\n{after}"
    );
    assert!(after.contains("=bob:") && after.ends_with(".\n"), "{after}");
    assert_eq!(after.matches("=alice:").count(), 1, "{after}");
    assert!(is_maildir(&home.join("mail/bob")));
    assert_eq!(
        inst.queue().count().unwrap(),
        1,
        "the queued message was lost"
    );

    // a third run with nothing new changes nothing
    let out = init(home, &["bob"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("nothing to do"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(home.join("users/assign")).unwrap(),
        after
    );
}

#[test]
fn init_refuses_bad_mailbox_names_before_touching_anything() {
    let dir = scratch_dir("ternctl-badname").join("inst");
    for bad in ["../escape", ".hidden", "a:b", ""] {
        let out = init(&dir, &[bad]);
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("--mailbox"),
            "{}",
            text(&out.stderr)
        );
        assert!(!dir.exists(), "{bad:?}: init created something");
    }
    let split = |n: &str| {
        Command::new(bin("ternctl"))
            .arg("init")
            .arg(&dir)
            .args(["--bin", "/nonexistent", "--split", n])
            .output()
            .unwrap()
    };
    assert_eq!(split("0").status.code(), Some(1));
    assert!(!dir.exists(), "init created something for --split 0");
    assert_eq!(split("7").status.code(), Some(0));
    // the split of an existing queue cannot change
    let out = split("8");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("split 7"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("queue/format")).unwrap(),
        "tern-queue-format 1\nsplit 7\n"
    );
}

#[test]
fn init_keeps_an_existing_postmaster_mapping() {
    let dir = scratch_dir("ternctl-postmaster").join("inst");
    std::fs::create_dir_all(dir.join("users")).unwrap();
    std::fs::write(
        dir.join("users/assign"),
        "=postmaster:pm:5:5:/srv/pm:::\n.\n",
    )
    .unwrap();
    let out = init(&dir, &["carol"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let assign = std::fs::read_to_string(dir.join("users/assign")).unwrap();
    assert_eq!(assign.matches("=postmaster:").count(), 1, "{assign}");
    assert!(
        assign.starts_with("=postmaster:pm:5:5:/srv/pm:::\n=carol:"),
        "{assign}"
    );
    assert!(!dir.join("mail/postmaster").exists());

    // a truncated users/assign is never rewritten
    std::fs::write(dir.join("users/assign"), "=postmaster:pm:5:5:/srv/pm:::\n").unwrap();
    let out = init(&dir, &["dave"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("final '.'"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("users/assign")).unwrap(),
        "=postmaster:pm:5:5:/srv/pm:::\n"
    );
}

#[test]
fn check_on_a_fresh_instance_exits_0() {
    let inst = Instance::new("ternctl-check");
    let out = ternctl(inst.home(), &["check"]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    assert!(
        said.contains("control/databytes: 52428800  [default]"),
        "{said}"
    );
    assert!(said.contains("# 0 error(s), 0 warning(s)"), "{said}");
}

/// In a system instance, `ternctl check` warns about `users/assign`
/// entries whose uid local delivery refuses (outside localuidmin..max,
/// root); entries in range are not warned about.
#[test]
fn check_warns_about_assign_entries_outside_the_uid_range() {
    let inst = Instance::new("ternctl-check-uids");
    let home = inst.home();
    let _ = std::fs::remove_file(home.join("single-user"));
    let assign = home.join("users/assign");
    std::fs::write(
        &assign,
        "=u77:u77:77:77:/nonexistent:::\n=ok:ok:4242:4242:/nonexistent:::\n+r:root:0:0:/nonexistent:-::\n.\n",
    )
    .unwrap();
    let out = ternctl(home, &["check"]);
    let said = text(&out.stdout);
    assert!(
        said.contains("users/assign: warning: =u77: uid 77 is outside the uids allowed"),
        "{said}"
    );
    assert!(
        said.contains("users/assign: warning: +r: not allowed to perform deliveries as root"),
        "{said}"
    );
    assert!(!said.contains("warning: =ok"), "{said}");
    assert!(said.contains("# 0 error(s), 2 warning(s)"), "{said}");
}

#[test]
fn check_names_the_malformed_file_and_line() {
    let inst = Instance::new("ternctl-check-bad");
    std::fs::write(inst.home().join("control/databytes"), "12x\n").unwrap();
    std::fs::write(
        inst.home().join("control/locals"),
        "localhost\n# fine\nbad host\n",
    )
    .unwrap();
    std::fs::write(inst.home().join("control/rcpthost"), "typo.example\n").unwrap();
    let out = ternctl(inst.home(), &["check"]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("control/databytes: error: line 1: not a number"),
        "{said}"
    );
    assert!(
        said.contains("control/locals: error: line 3: bad domain"),
        "{said}"
    );
    assert!(
        said.contains("control/rcpthost: warning: not a Tern setting, ignored"),
        "{said}"
    );
    assert!(said.contains("# 2 error(s), 1 warning(s)"), "{said}");
}

#[test]
fn queue_listing() {
    let inst = Instance::new("ternctl-queue");
    let out = ternctl(inst.home(), &["queue", "--count"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "messages: 0\n");
    let out = ternctl(inst.home(), &["queue", "--count", "--json"]);
    assert_eq!(text(&out.stdout), "{\"messages\":0}\n");

    let r = inst.inject_raw(
        b"Subject: hi\n\nbody\n",
        &envelope("", &["test@localhost", "esc\x1b[31m@example.com"]),
    );
    assert_eq!(r.code(), 0, "{}", r.stderr);
    let out = ternctl(inst.home(), &["queue", "--count"]);
    assert_eq!(text(&out.stdout), "messages: 1\n");

    let out = ternctl(inst.home(), &["queue", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let list = doc.as_array().expect("an array");
    assert_eq!(list.len(), 1);
    let m = &list[0];
    assert_eq!(m["sender"], "");
    assert_eq!(m["stage"], "new");
    assert!(m["size"].as_u64().unwrap() > 0);
    assert!(m["age_seconds"].as_i64().unwrap() >= 0);
    assert_eq!(m["recipients"][0]["address"], "test@localhost");
    assert_eq!(m["recipients"][0]["state"], "pending");
    assert_eq!(m["recipients"][1]["address"], "esc\u{1b}[31m@example.com");

    let out = ternctl(inst.home(), &["queue"]);
    let said = text(&out.stdout);
    assert!(said.contains("from <>"), "{said}");
    assert!(said.contains("pending   <test@localhost>"), "{said}");
    // no raw escape sequence reaches the terminal
    assert!(
        !said.contains('\x1b') && said.contains("esc\\x1b[31m@example.com"),
        "{said}"
    );
    assert!(said.ends_with("messages: 1\n"), "{said}");
}

#[test]
fn repair_and_exit_codes() {
    let inst = Instance::new("ternctl-repair");
    let out = ternctl(inst.home(), &["repair"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("removed partial files: 0"));

    // usage error
    let out = ternctl(inst.home(), &["frobnicate"]);
    assert_eq!(out.status.code(), Some(1));
    // no queue where the home says: temporary trouble
    let missing = inst.scratch().join("no-such-home");
    let out = ternctl(&missing, &["queue"]);
    assert_eq!(out.status.code(), Some(111), "{}", text(&out.stderr));
    // --home wins over TERN_HOME
    let out = Command::new(bin("ternctl"))
        .env("TERN_HOME", &missing)
        .arg("--home")
        .arg(inst.home())
        .args(["queue", "--count"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // a relative TERN_HOME is refused
    let out = ternctl(Path::new("relative/home"), &["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("absolute"),
        "{}",
        text(&out.stderr)
    );
}

/// `ternctl forget` (qmail-tcpok): one host's remembered failures, or all.
#[test]
fn forget_clears_remembered_host_failures() {
    let inst = Instance::new("ternctl-forget");
    let dir = inst.home().join("queue/remote");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["c-192.0.2.1", "t-192.0.2.1", "c-2001:db8::1"] {
        std::fs::write(dir.join(f), "1 1800000000\n").unwrap();
    }
    let forget = |args: &[&str]| {
        inst.command("ternctl")
            .arg("forget")
            .args(args)
            .output()
            .unwrap()
    };
    let out = forget(&["192.0.2.1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("forgot 2"),
        "{}",
        text(&out.stdout)
    );
    assert!(!dir.join("c-192.0.2.1").exists() && !dir.join("t-192.0.2.1").exists());
    assert!(dir.join("c-2001:db8::1").exists());
    let out = forget(&["[2001:db8::2]"]);
    assert!(
        text(&out.stdout).contains("forgot 0"),
        "{}",
        text(&out.stdout)
    );
    let out = forget(&[]);
    assert!(
        text(&out.stdout).contains("forgot 1"),
        "{}",
        text(&out.stdout)
    );
    assert!(!dir.join("c-2001:db8::1").exists());
    let out = forget(&["mx.example.org"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not an IP address"));
}

/// On a terminal, `repair` draws a progress bar (indicatif) on stderr and
/// then prints the same report; off a terminal (every other test) nothing
/// but the report, and no terminal control sequence.
#[test]
fn repair_shows_progress_on_a_terminal_only() {
    let python = "/usr/bin/python3";
    if !Path::new(python).is_file() {
        tern_tests::skip(
            "ternctl::repair_shows_progress_on_a_terminal_only",
            "no /usr/bin/python3 (its pty module runs ternctl on a terminal)",
        );
        return;
    }
    let inst = Instance::new("ternctl-progress");
    let plain = ternctl(inst.home(), &["repair"]);
    let plain_err = String::from_utf8_lossy(&plain.stderr).into_owned();
    let plain_out = String::from_utf8_lossy(&plain.stdout).into_owned();
    assert!(!plain_err.contains('\u{1b}') && !plain_out.contains('\u{1b}'));
    // Under a pseudo-terminal: stdout and stderr both go to it.
    let script = r#"
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out = b''
while True:
    try:
        chunk = os.read(fd, 65536)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(bin("ternctl"))
        .arg("--home")
        .arg(inst.home())
        .arg("repair")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("queue repair ["),
        "no progress bar: {shown:?}"
    );
    assert!(
        shown.contains('\u{1b}'),
        "drawn and cleared with escapes: {shown:?}"
    );
    assert!(shown.contains("removed partial files: 0"), "{shown:?}");
}

/// `explain` names the file and line of each decision: the rules line and
/// rcpthosts line of the SMTP step, locals or virtualdomains, the
/// users/assign line and each `.qmail` line (with what it does), or the
/// smtproutes / lmtproutes line, the TLS policy's line and the DKIM key.
#[test]
fn explain_names_each_decision_with_its_file_and_line() {
    let inst = Instance::with_mailboxes("ternctl-explain", &["ann"]);
    let h = inst.home();
    let c = h.join("control");
    let append = |f: &str, text: &str| {
        let mut old = std::fs::read_to_string(c.join(f)).unwrap_or_default();
        old.push_str(text);
        std::fs::write(c.join(f), old).unwrap();
    };
    append("rcpthosts", "# ours\nexample.org\n");
    append(
        "smtproutes",
        "other.test:[192.0.2.1]:2525\nfar.test:[127.0.0.1]:2526\n",
    );
    append("lmtproutes", "store.test:/run/store/lmtp\n");
    append("tlsdestinations", ".test:verify\n");
    append("virtualdomains", "# virtual\n.virt.test:ann-v\n");
    std::fs::write(
        h.join("mail/ann/.qmail-list"),
        "# the list\n./Maildir/\n&bob@far.test\n|/bin/true\n",
    )
    .unwrap();
    std::fs::write(
        inst.scratch().join("rules"),
        "127.0.0.1:allow,RELAYCLIENT=\"\"\n10.9.9.9:deny\n:allow\n",
    )
    .unwrap();
    let rules = inst.scratch().join("rules");
    let run = |args: &[&str]| {
        let mut all = vec!["explain"];
        all.extend_from_slice(args);
        let out = ternctl(h, &all);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let r = rules.to_str().unwrap();
    let cpath = c.display().to_string();

    let t = run(&["ann-list@localhost", "--client", "10.1.2.3", "--rules", r]);
    assert!(t.contains(&format!("allowed by {r}:3")), "{t}");
    assert!(
        t.contains(&format!(
            "RCPT accepted: localhost is ours ({cpath}/rcpthosts:1: localhost)"
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "local: localhost is a local domain ({cpath}/locals:1"
        )),
        "{t}"
    );
    assert!(t.contains("users/assign:"), "{t}");
    assert!(t.contains(".qmail-list decides:"), "{t}");
    assert!(
        t.contains("   line 2: delivers to the Maildir ./Maildir/"),
        "{t}"
    );
    assert!(t.contains("   line 3: forwards to bob@far.test"), "{t}");
    assert!(t.contains("   line 4: runs the program `/bin/true`"), "{t}");

    let t = run(&["x@example.org", "--client", "10.1.2.3", "--rules", r]);
    let n = std::fs::read_to_string(c.join("rcpthosts"))
        .unwrap()
        .lines()
        .position(|l| l == "example.org")
        .unwrap()
        + 1;
    assert!(
        t.contains(&format!("({cpath}/rcpthosts:{n}: example.org)")),
        "{t}"
    );

    let t = run(&["x@far.test", "--client", "10.1.2.3", "--rules", r]);
    assert!(t.contains("RCPT refused with 553"), "{t}");
    assert!(!t.contains("SMTP to"), "stops at the refusal: {t}");

    let t = run(&["x@far.test", "--client", "10.9.9.9", "--rules", r]);
    assert!(
        t.contains(&format!("refused at connection by {r}:2 (deny)")),
        "{t}"
    );

    let t = run(&[
        "x@far.test",
        "--client",
        "127.0.0.1",
        "--rules",
        r,
        "--from",
        "me@example.org",
    ]);
    assert!(t.contains("which sets RELAYCLIENT"), "{t}");
    assert!(
        t.contains(&format!(
            "SMTP to the relay [127.0.0.1]:2526 ({cpath}/smtproutes:"
        )),
        "{t}"
    );
    assert!(t.contains("far.test:[127.0.0.1]:2526)"), "{t}");
    assert!(
        t.contains(&format!("TLS: verify ({cpath}/tlsdestinations:")),
        "{t}"
    );
    assert!(
        t.contains("DKIM: no key in control/dkim for example.org"),
        "{t}"
    );

    let t = run(&["x@store.test"]);
    assert!(t.contains("LMTP to the socket /run/store/lmtp"), "{t}");
    assert!(t.contains("lmtproutes:"), "{t}");

    let t = run(&["sales@a.virt.test"]);
    assert!(
        t.contains("local, as the virtual address ann-v-sales@a.virt.test"),
        "{t}"
    );
    assert!(t.contains("virtualdomains:"), "{t}");
    assert!(t.contains(".virt.test:ann-v"), "{t}");

    let t = run(&["nobody-here@localhost"]);
    assert!(t.contains("no mailbox here by that name"), "{t}");

    // Nothing to explain: a usage error.
    let out = ternctl(h, &["explain", "a\nb@c"]);
    assert_eq!(out.status.code(), Some(1));
}
