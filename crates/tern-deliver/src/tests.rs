//! Whole deliveries through [`deliver`], in scratch home directories.

use super::*;
use crate::testutil::{message, scratch};
use std::collections::BTreeMap;

struct Fixture {
    home: PathBuf,
    /// Where the fake queue program leaves what it was given.
    qdir: PathBuf,
    settings: Settings,
}

const BODY: &[u8] = b"From: a@example.com\nSubject: hi\n\nFrom here\n\xffbytes\r\nend";

fn fixture(name: &str) -> Fixture {
    fixture_with_queue_exit(name, 0)
}

fn fixture_with_queue_exit(name: &str, code: i32) -> Fixture {
    let root = scratch(name);
    let home = root.join("home");
    let qdir = root.join("queue-out");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(&qdir).unwrap();
    for d in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(home.join("Maildir").join(d)).unwrap();
    }
    let script = root.join("fake-queue");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat > '{q}/msg' && cat <&1 > '{q}/env'\nexit {code}\n",
            q = qdir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let settings = Settings {
        lock_wait: Duration::from_millis(500),
        queue: QueueClient::with_program(script),
        host: "test.host".to_string(),
        path: b"/usr/bin:/bin".to_vec(),
        tern_home: Some(root.clone()),
    };
    Fixture {
        home,
        qdir,
        settings,
    }
}

impl Fixture {
    fn request(&self, local: &str, dash: &str, ext: &str) -> Request {
        Request {
            user: b"joe".to_vec(),
            home: self.home.clone(),
            local: local.as_bytes().to_vec(),
            dash: dash.as_bytes().to_vec(),
            ext: ext.as_bytes().to_vec(),
            domain: b"mail.example.org".to_vec(),
            sender: b"sender@example.com".to_vec(),
            default_delivery: b"./Maildir/\n".to_vec(),
        }
    }

    fn write(&self, name: &str, text: &str, mode: u32) {
        let p = self.home.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn run(&self, req: &Request, body: &[u8]) -> Result<Outcome, Error> {
        deliver(req, &message(body), &self.settings)
    }

    /// Files in Maildir/new, contents in name order.
    fn maildir(&self) -> Vec<Vec<u8>> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.home.join("Maildir/new"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        names.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }

    /// The forwarded message and envelope, if the fake queue ran.
    fn queued(&self) -> Option<(Vec<u8>, Envelope)> {
        let msg = std::fs::read(self.qdir.join("msg")).ok()?;
        let env = std::fs::read(self.qdir.join("env")).ok()?;
        let (env, _) = Envelope::parse(&env).expect("forward envelope parses");
        Some((msg, env))
    }
}

fn with_prefix(prefix: &str, body: &[u8]) -> Vec<u8> {
    [prefix.as_bytes(), body].concat()
}

#[test]
fn arguments() {
    let a = |v: &[&str]| -> Vec<OsString> { v.iter().map(OsString::from).collect() };
    let long = "x".repeat(MAX_ARG + 1);
    let bad: &[Vec<OsString>] = &[
        a(&[]),
        a(&["--"]),
        a(&["--", "u", "/h", "l", "-", "e", "d", "s"]),
        a(&["--", "u", "/h", "l", "-", "e", "d", "s", "dd", "extra"]),
        a(&["--", &long, "/h", "l", "-", "e", "d", "s", "dd"]),
        a(&["--", "u", "/h", "l", "-", "e", "d", &long, "dd"]),
        a(&[
            "--",
            "u",
            &"h".repeat(MAX_HOME + 1),
            "l",
            "-",
            "e",
            "d",
            "s",
            "dd",
        ]),
    ];
    for args in bad {
        let e = Request::from_args(args).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Usage, "{args:?}");
        assert!(e.is_temporary());
    }
    let r = Request::from_args(&a(&[
        "--",
        "joe",
        "/home/joe",
        "joe-list",
        "-",
        "list",
        "example.org",
        "",
        "./Maildir/",
    ]))
    .unwrap();
    assert_eq!(r.recipient(), b"joe-list@example.org");
    assert_eq!(r.sender, b"");
    assert_eq!(r.home, PathBuf::from("/home/joe"));
    let r2 = Request::from_args(&a(&[
        "joe",
        "/home/joe",
        "joe-list",
        "-",
        "list",
        "example.org",
        "",
        "./Maildir/",
    ]))
    .unwrap();
    assert_eq!(r, r2, "the -- is optional");
}

#[test]
fn lock_wait_setting() {
    use std::ffi::OsStr;
    for bad in ["", "x", "-1", "1.5", "3601", "99999999999999999999999"] {
        assert_eq!(
            lock_wait_from(Some(OsStr::new(bad))),
            DEFAULT_LOCK_WAIT,
            "{bad}"
        );
    }
    assert_eq!(lock_wait_from(None), DEFAULT_LOCK_WAIT);
    assert_eq!(lock_wait_from(Some(OsStr::new("0"))), Duration::ZERO);
    assert_eq!(
        lock_wait_from(Some(OsStr::new("2"))),
        Duration::from_secs(2)
    );
    assert_eq!(lock_wait_from(Some(OsStr::new("3600"))), MAX_LOCK_WAIT);
}

#[test]
fn exit_codes() {
    let ok = Ok(Outcome::default());
    assert_eq!(exit_code(&ok), LocalExit::Delivered);
    let stop = Ok(Outcome {
        stopped: true,
        ..Outcome::default()
    });
    assert_eq!(exit_code(&stop), LocalExit::DeliveredStop);
    let perm = Err(Error::new(ErrorKind::Loop, "x"));
    assert_eq!(exit_code(&perm), LocalExit::Permanent);
    let temp = Err(Error::new(ErrorKind::Maildir, "x"));
    assert_eq!(exit_code(&temp), LocalExit::Temporary);
    assert_eq!(LocalExit::Temporary as u8, 111);
    assert_eq!(LocalExit::Permanent as u8, 100);
    assert_eq!(LocalExit::DeliveredStop as u8, 99);
}

#[test]
fn default_delivery_to_maildir() {
    let f = fixture("maildir-default");
    let out = f.run(&f.request("joe", "", ""), BODY).unwrap();
    assert_eq!(out.report(), "did 1+0+0");
    assert_eq!(
        f.maildir(),
        vec![with_prefix(
            "Return-Path: <sender@example.com>\nDelivered-To: joe@mail.example.org\n",
            BODY
        )]
    );
    // An empty .qmail file also means defaultdelivery.
    f.write(".qmail", "", 0o644);
    f.run(&f.request("joe", "", ""), BODY).unwrap();
    assert_eq!(f.maildir().len(), 2);
}

#[test]
fn bad_home_and_bad_files_are_temporary() {
    let f = fixture("bad-home");
    let req = f.request("joe", "", "");
    let perm = |m: u32| {
        std::fs::set_permissions(&f.home, std::fs::Permissions::from_mode(m)).unwrap();
    };
    perm(0o757);
    let e = f.run(&req, BODY).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::HomeWritable);
    assert!(e.is_temporary());
    perm(0o1755);
    assert_eq!(f.run(&req, BODY).unwrap_err().kind(), ErrorKind::HomeSticky);
    perm(0o755);
    let mut rel = req.clone();
    rel.home = PathBuf::from("relative/home");
    assert_eq!(
        f.run(&rel, BODY).unwrap_err().kind(),
        ErrorKind::HomeUnusable
    );
    let mut missing = req.clone();
    missing.home = f.home.join("nope");
    assert_eq!(
        f.run(&missing, BODY).unwrap_err().kind(),
        ErrorKind::HomeUnusable
    );
    f.write(".qmail", "./Maildir/\n", 0o646);
    assert_eq!(
        f.run(&req, BODY).unwrap_err().kind(),
        ErrorKind::DotQmailWritable
    );
    f.write(".qmail", "\n./Maildir/\n", 0o644);
    let e = f.run(&req, BODY).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DotQmailSyntax);
    assert!(e.to_string().contains("line 1: first line is blank"), "{e}");
    let mut bad_default = req.clone();
    bad_default.default_delivery = b"|".to_vec();
    std::fs::remove_file(f.home.join(".qmail")).unwrap();
    assert_eq!(
        f.run(&bad_default, BODY).unwrap_err().kind(),
        ErrorKind::DotQmailSyntax
    );
    // The Maildir named by a .qmail line is missing: temporary, never
    // lost (the default delivery would make it).
    std::fs::remove_dir_all(f.home.join("Maildir")).unwrap();
    f.write(".qmail", "./Maildir/\n", 0o644);
    let e = f.run(&req, BODY).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Maildir);
    assert!(e.is_temporary());
}

#[test]
fn extensions_and_default() {
    let f = fixture("ext");
    // No file for an extension: permanent.
    let e = f.run(&f.request("joe-x", "-", "x"), BODY).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoMailbox);
    assert!(!e.is_temporary());
    assert_eq!(
        e.to_string(),
        "Sorry, no mailbox here by that name. (#5.1.1)"
    );

    f.write(
        ".qmail-list-default",
        "|echo \"d=$DEFAULT e=$EXT e2=$EXT2 e3=$EXT3 e4=$EXT4\"\n",
        0o644,
    );
    f.write(".qmail-list", "./Maildir/\n", 0o644);
    f.write(".qmail-a:b", "./Maildir/\n", 0o644);
    let out = f.run(&f.request("joe-list", "-", "list"), BODY).unwrap();
    assert_eq!(out.report(), "did 1+0+0");
    let out = f
        .run(&f.request("joe-List-Bounce-X", "-", "List-Bounce-X"), BODY)
        .unwrap();
    assert_eq!(
        out.report(),
        "d=Bounce-X e=List-Bounce-X e2=Bounce-X e3=X e4=\ndid 0+0+1"
    );
    // Dots in the extension are `:` in file names.
    f.run(&f.request("joe-A.b", "-", "A.b"), BODY).unwrap();
    assert_eq!(f.maildir().len(), 2);
    // .qmail-default catches the rest.
    f.write(".qmail-default", "# thrown away\n", 0o644);
    let out = f.run(&f.request("joe-other", "-", "other"), BODY).unwrap();
    assert_eq!(out.report(), "did 0+0+0");
    assert_eq!(f.maildir().len(), 2);
}

#[test]
fn alias_layout() {
    // The alias user: dash `-`, ext = the whole local part.
    let f = fixture("alias");
    f.write(".qmail-postmaster", "./Maildir/\n", 0o644);
    f.run(&f.request("postmaster", "-", "postmaster"), BODY)
        .unwrap();
    f.run(&f.request("PostMaster", "-", "PostMaster"), BODY)
        .unwrap();
    assert_eq!(f.maildir().len(), 2);
    assert!(f.maildir()[0].starts_with(b"Return-Path: <sender@example.com>\nDelivered-To: "));
    let e = f
        .run(&f.request("nobody", "-", "nobody"), BODY)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoMailbox);
}

#[test]
fn mbox_line() {
    let f = fixture("mbox-line");
    f.write(".qmail", "./mbox\n", 0o644);
    let out = f.run(&f.request("joe", "", ""), BODY).unwrap();
    assert_eq!(out.report(), "did 1+0+0");
    let got = std::fs::read(f.home.join("mbox")).unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("From sender@example.com "), "{text}");
    let after_from = &got[got.iter().position(|&b| b == b'\n').unwrap() + 1..];
    let want = [
        &b"Return-Path: <sender@example.com>\nDelivered-To: joe@mail.example.org\n"[..],
        b"From: a@example.com\nSubject: hi\n\n>From here\n\xffbytes\r\nend\n\n",
    ]
    .concat();
    assert_eq!(after_from, want.as_slice());
}

#[test]
fn program_environment() {
    let f = fixture("program-env");
    let out_file = f.home.join("env.out");
    let vars = [
        "SENDER",
        "NEWSENDER",
        "RECIPIENT",
        "USER",
        "HOME",
        "HOST",
        "HOST2",
        "HOST3",
        "HOST4",
        "LOCAL",
        "EXT",
        "EXT2",
        "EXT3",
        "EXT4",
        "DEFAULT",
        "DTLINE",
        "RPLINE",
        "UFLINE",
        "PATH",
        "TERN_HOME",
        "QMAILQUEUE",
    ];
    // The script is a file: as one .qmail line it would pass the line limit.
    let mut script = String::new();
    for v in vars {
        script.push_str(&format!("printf '%s=[%s]\\n' {v} \"${v}\" >> env.out; "));
    }
    script.push_str("env -0 | tr -d -c '\\000' | wc -c >> env.out; pwd >> env.out; cat > msg.out");
    f.write("env.sh", &format!("{script}\n"), 0o644);
    f.write(".qmail-tag-default", "|sh ./env.sh\n", 0o644);
    f.write(".qmail-tag-x-y-owner", "&owner@example.org\n", 0o644);
    let out = f
        .run(&f.request("joe-tag-x-y", "-", "tag-x-y"), BODY)
        .unwrap();
    assert_eq!(out.report(), "did 0+0+1");
    let text = String::from_utf8(std::fs::read(&out_file).unwrap()).unwrap();
    let got: BTreeMap<&str, &str> = text
        .split("]\n")
        .filter_map(|kv| kv.split_once("=["))
        .collect();
    let home = f.home.display().to_string();
    let tern_home = f.settings.tern_home.as_ref().unwrap().display().to_string();
    let qmailqueue = format!("{tern_home}/bin/tern-queue");
    let want: BTreeMap<&str, &str> = [
        ("SENDER", "sender@example.com"),
        ("NEWSENDER", "joe-tag-x-y-owner@mail.example.org"),
        ("RECIPIENT", "joe-tag-x-y@mail.example.org"),
        ("USER", "joe"),
        ("HOME", home.as_str()),
        ("HOST", "mail.example.org"),
        ("HOST2", "mail.example"),
        ("HOST3", "mail"),
        ("HOST4", "mail"),
        ("LOCAL", "joe-tag-x-y"),
        ("EXT", "tag-x-y"),
        ("EXT2", "x-y"),
        ("EXT3", "y"),
        ("EXT4", ""),
        ("DEFAULT", "x-y"),
        ("DTLINE", "Delivered-To: joe-tag-x-y@mail.example.org\n"),
        ("RPLINE", "Return-Path: <sender@example.com>\n"),
        ("PATH", "/usr/bin:/bin"),
        ("TERN_HOME", tern_home.as_str()),
        ("QMAILQUEUE", qmailqueue.as_str()),
    ]
    .into_iter()
    .collect();
    for (k, v) in &want {
        assert_eq!(got.get(k), Some(v), "{k} in {text}");
    }
    let ufline = got["UFLINE"];
    assert!(ufline.starts_with("From sender@example.com ") && ufline.ends_with('\n'));
    // Exactly our variables (sh adds PWD, SHLVL and `_`), in the home.
    let tail: Vec<&str> = text.rsplit("]\n").next().unwrap().lines().collect();
    let count: usize = tail[0].trim().parse().unwrap();
    assert!(
        (vars.len()..=vars.len() + 3).contains(&count),
        "{count} vars"
    );
    assert_eq!(tail[1], home);
    // The program's stdin is exactly the message: no added lines.
    assert_eq!(std::fs::read(f.home.join("msg.out")).unwrap(), BODY);
}

#[test]
fn plus_list_is_a_flag_never_an_address() {
    let f = fixture("plus-list");
    let req = f.request("joe", "", "");
    // +list and other + lines forward nothing; the forward goes out alone.
    f.write(
        ".qmail",
        "+list
+other
&one@example.net
",
        0o644,
    );
    assert_eq!(f.run(&req, BODY).unwrap().report(), "did 0+1+0");
    let (_, env) = f.queued().expect("the forward was queued");
    assert_eq!(
        env.recipients,
        vec![b"one@example.net".to_vec()],
        "no +list@ address"
    );
    // A local delivery before +list is fine; after it, refused (temporary,
    // nothing done), as qmail-local's forward-only flag.
    f.write(
        ".qmail",
        "./Maildir/
+list
",
        0o644,
    );
    assert_eq!(f.run(&req, BODY).unwrap().report(), "did 1+0+0");
    f.write(
        ".qmail",
        "+list
./Maildir/
",
        0o644,
    );
    let e = f.run(&req, BODY).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ForwardOnly);
    assert!(e.is_temporary());
}

#[test]
fn program_exit_codes() {
    let f = fixture("program-exit");
    let req = f.request("joe", "", "");
    f.write(".qmail", "|echo bounce me; exit 100\n./Maildir/\n", 0o644);
    let e = f.run(&req, BODY).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProgramPermanent);
    assert_eq!(e.to_string(), "bounce me");
    assert_eq!(exit_code(&Err(e)), LocalExit::Permanent);
    assert!(f.maildir().is_empty(), "processing stopped at the failure");

    f.write(".qmail", "|exit 111\n./Maildir/\n", 0o644);
    let e = f.run(&req, BODY).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProgramTemporary);
    assert_eq!(exit_code(&Err(e)), LocalExit::Temporary);

    f.write(
        ".qmail",
        "&fwd@example.net\n|exit 99\n./Maildir/\n&late@example.net\n",
        0o644,
    );
    let r = f.run(&req, BODY);
    assert_eq!(exit_code(&r), LocalExit::DeliveredStop);
    assert_eq!(r.unwrap().report(), "did 0+1+1");
    assert!(f.maildir().is_empty(), "lines after exit 99 are skipped");
    let (_, env) = f.queued().expect("forwards collected before 99 are sent");
    assert_eq!(env.recipients, vec![b"fwd@example.net".to_vec()]);

    f.write(".qmail", "./Maildir/\n|exit 0\n", 0o644);
    assert_eq!(f.run(&req, BODY).unwrap().report(), "did 1+0+1");
}

#[test]
fn forwards() {
    let f = fixture("forward");
    let req = f.request("joe-fw", "-", "fw");
    f.write(
        ".qmail-fw",
        "&one@example.net\n./Maildir/\ntwo@example.net\n",
        0o644,
    );
    let out = f.run(&req, BODY).unwrap();
    assert_eq!(out.report(), "did 1+2+0");
    let (msg, env) = f.queued().unwrap();
    assert_eq!(
        msg,
        with_prefix("Delivered-To: joe-fw@mail.example.org\n", BODY)
    );
    assert_eq!(env.sender, b"sender@example.com");
    assert_eq!(
        env.recipients,
        vec![b"one@example.net".to_vec(), b"two@example.net".to_vec()]
    );
    // -owner: the forward's sender is local-owner@domain.
    f.write(".qmail-fw-owner", "&boss@example.net\n", 0o644);
    f.run(&req, BODY).unwrap();
    assert_eq!(
        f.queued().unwrap().1.sender,
        b"joe-fw-owner@mail.example.org"
    );
    // -owner-default too: the VERP form.
    f.write(".qmail-fw-owner-default", "&boss@example.net\n", 0o644);
    f.run(&req, BODY).unwrap();
    assert_eq!(
        f.queued().unwrap().1.sender,
        b"joe-fw-owner-@mail.example.org-@[]"
    );
    // A bounce stays a bounce.
    let mut bounce = req.clone();
    bounce.sender = Vec::new();
    f.run(&bounce, BODY).unwrap();
    assert_eq!(f.queued().unwrap().1.sender, b"");
}

#[test]
fn forward_failures() {
    let f = fixture_with_queue_exit("forward-temp", 53);
    f.write(".qmail", "&one@example.net\n", 0o644);
    let e = f.run(&f.request("joe", "", ""), BODY).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ForwardTemporary);
    assert!(e.to_string().contains("disk full"), "{e}");
    let f = fixture_with_queue_exit("forward-perm", 31);
    f.write(".qmail", "&one@example.net\n", 0o644);
    let e = f.run(&f.request("joe", "", ""), BODY).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ForwardPermanent);
    assert_eq!(exit_code(&Err(e)), LocalExit::Permanent);
}

#[test]
fn owner_execute_bit_means_forwards_only() {
    let f = fixture("forward-only");
    let req = f.request("joe", "", "");
    f.write(".qmail", "&one@example.net\n./Maildir/\n", 0o744);
    let e = f.run(&req, BODY).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ForwardOnly);
    assert!(e.is_temporary());
    assert!(f.queued().is_none(), "nothing done before the refusal");
    assert!(f.maildir().is_empty());
    f.write(".qmail", "|true\n", 0o744);
    assert_eq!(
        f.run(&req, BODY).unwrap_err().kind(),
        ErrorKind::ForwardOnly
    );
    f.write(
        ".qmail",
        "# list\n&one@example.net\ntwo@example.net\n",
        0o744,
    );
    assert_eq!(f.run(&req, BODY).unwrap().report(), "did 0+2+0");
}

#[test]
fn loop_is_permanent_and_delivers_nothing() {
    let f = fixture("loop");
    let req = f.request("joe", "", "");
    let looped = [
        &b"Received: x\nDelivered-To: joe@mail.example.org\n"[..],
        BODY,
    ]
    .concat();
    let e = f.run(&req, &looped).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Loop);
    assert_eq!(
        e.to_string(),
        "This message is looping: it already has my Delivered-To line. (#5.4.6)"
    );
    assert_eq!(exit_code(&Err(e)), LocalExit::Permanent);
    assert!(f.maildir().is_empty());
    // Another address's line is no loop.
    let other = [&b"Delivered-To: ann@mail.example.org\n"[..], BODY].concat();
    f.run(&req, &other).unwrap();
    assert_eq!(f.maildir().len(), 1);
}

#[test]
fn failure_stops_processing() {
    let f = fixture("stop");
    f.write(
        ".qmail",
        "./Maildir/\n./NoSuchMaildir/\n&x@example.net\n",
        0o644,
    );
    let e = f.run(&f.request("joe", "", ""), BODY).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Maildir);
    assert!(
        f.queued().is_none(),
        "forwards are not sent after a failure"
    );
}
