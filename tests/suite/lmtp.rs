//! LMTP delivery (RFC 2033) end to end: sendmail → tern-send →
//! tern-rspawn → tern-remote → a real third-party LMTP server, chosen by
//! `control/lmtproutes`:
//!
//! * aiosmtpd's `LMTP` class (Debian's python3-aiosmtpd under
//!   /usr/bin/python3, `tests/peers/lmtp_peer.py`) on 127.0.0.1 or a Unix
//!   socket, answering after the message once per recipient as the local
//!   part says (`temp…` 451 the first time, `perm…` 550, `norcpt…` 550 at
//!   RCPT, else 250);
//! * Dovecot's `lmtp` (Debian's dovecot-lmtpd), started by hand with a
//!   private configuration (base directory, state, Maildirs and log in a
//!   scratch directory; an LMTP Unix socket and a listener on 127.0.0.1;
//!   no other protocol), stopped by its pid. Root only: Dovecot's master
//!   must be able to become its users.
//!
//! Nothing resolves a name: LMTP routes are addresses and paths, and the
//! instance's DNS server is a closed loopback port (the harness's default).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use tern_tests::{
    Daemon, Instance, PYTHON, Peer, PeerOptions, have_tool, is_root, python, self_signed_files,
    skip, wait_until,
};

fn aiosmtpd(test: &str) -> bool {
    if !Path::new(PYTHON).is_file() || python("import aiosmtpd.lmtp", &[]).0 != 0 {
        skip(
            test,
            "aiosmtpd not importable by /usr/bin/python3 (Debian package python3-aiosmtpd)",
        );
        return false;
    }
    true
}

/// A fresh instance with short network timeouts.
fn instance(name: &str) -> Instance {
    let inst = Instance::new(name);
    control(&inst, "timeoutconnect", "10");
    control(&inst, "timeoutremote", "60");
    inst
}

fn control(inst: &Instance, name: &str, text: &str) {
    std::fs::write(inst.home().join("control").join(name), format!("{text}\n"))
        .unwrap_or_else(|e| panic!("write control/{name}: {e}"));
}

fn send(inst: &Instance, rcpts: &[&str], subject: &str) {
    let mut args = vec!["-f", "test@localhost"];
    args.extend_from_slice(rcpts);
    let msg = format!(
        "From: test@localhost\nTo: someone\nSubject: {subject}\nMessage-ID: <{subject}@localhost>\n\nbody of {subject}\n"
    );
    let (code, err) = inst.sendmail(&args, msg.as_bytes());
    assert_eq!(code, 0, "sendmail failed: {err}");
}

/// `tern-start --once` (with `--flush`: everything due now); asserts
/// success and returns its log.
fn once(inst: &Instance, flush: bool) -> String {
    let mut c = inst.command("tern-start");
    c.arg("--once");
    if flush {
        c.arg("--flush");
    }
    let out = c.output().expect("run tern-start --once");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "tern-start --once failed:\n{log}");
    log
}

fn queue_count(inst: &Instance) -> usize {
    inst.queue().count().expect("count the queue")
}

/// The bounces in the test mailbox, as text.
fn bounces(inst: &Instance) -> Vec<String> {
    inst.maildir("test")
        .into_iter()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .filter(|t| t.contains("report-type=delivery-status"))
        .collect()
}

/// A short directory for Unix sockets (`sun_path` holds 107 bytes; test
/// directories can be longer), removed when dropped.
struct SocketDir(PathBuf);

impl SocketDir {
    fn new() -> SocketDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = PathBuf::from(format!(
            "/tmp/tl-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("socket dir");
        SocketDir(d)
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where an [`LmtpPeer`] listens.
enum Listen<'a> {
    Tcp,
    Unix(&'a Path),
}

/// One transaction an [`LmtpPeer`] saw to the end of data.
#[derive(Debug)]
struct LmtpMessage {
    conn: u64,
    rcpt_tos: Vec<String>,
    delivered: Vec<String>,
    tls: bool,
    data: Vec<u8>,
}

/// aiosmtpd's LMTP server running `tests/peers/lmtp_peer.py`; killed by
/// pid when dropped.
struct LmtpPeer {
    child: Option<Child>,
    dir: PathBuf,
    addr: Option<SocketAddr>,
    socket: Option<PathBuf>,
}

impl LmtpPeer {
    fn start(inst: &Instance, listen: Listen<'_>, extra: &[&str]) -> LmtpPeer {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = inst
            .scratch()
            .join(format!("lmtp-peer-{}", N.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&dir).expect("peer dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/lmtp_peer.py");
        let mut cmd = Command::new(PYTHON);
        cmd.arg(&script).arg("--dir").arg(&dir).args(extra);
        match listen {
            Listen::Tcp => cmd.args(["--host", "127.0.0.1", "--port", "0"]),
            Listen::Unix(p) => cmd.arg("--unix").arg(p),
        };
        let err = std::fs::File::create(dir.join("stderr")).expect("peer stderr");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start the LMTP peer");
        let ready = dir.join("ready");
        let up = wait_until(20, || {
            ready.exists() || matches!(child.try_wait(), Ok(Some(_)))
        });
        if !up || !ready.exists() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "LMTP peer did not start: {}",
                std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
            );
        }
        let text = std::fs::read_to_string(&ready).expect("ready file");
        let words: Vec<&str> = text.split_whitespace().collect();
        let (addr, socket) = match words.as_slice() {
            ["tcp", host, port] => (Some(format!("{host}:{port}").parse().unwrap()), None),
            ["unix", path] => (None, Some(PathBuf::from(path))),
            other => panic!("bad ready file {other:?}"),
        };
        LmtpPeer {
            child: Some(child),
            dir,
            addr,
            socket,
        }
    }

    /// The `lmtproutes` server text: `127.0.0.1:port` or the socket path.
    fn route(&self) -> String {
        match (&self.addr, &self.socket) {
            (Some(a), _) => a.to_string(),
            (None, Some(p)) => p.display().to_string(),
            _ => unreachable!("a peer listens somewhere"),
        }
    }

    fn connections(&self) -> usize {
        std::fs::read_to_string(self.dir.join("connections"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    fn messages(&self) -> Vec<LmtpMessage> {
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut out = Vec::new();
        for k in 1.. {
            let Ok(meta) = std::fs::read(self.dir.join(format!("msg-{k}.json"))) else {
                break;
            };
            let v: serde_json::Value = serde_json::from_slice(&meta).expect("peer json");
            out.push(LmtpMessage {
                conn: v["conn"].as_u64().unwrap_or(0),
                rcpt_tos: strings(&v["rcpt_tos"]),
                delivered: strings(&v["delivered"]),
                tls: v["tls"].as_bool().unwrap_or(false),
                data: std::fs::read(self.dir.join(format!("msg-{k}.eml"))).expect("peer eml"),
            });
        }
        out
    }

    fn log(&self) -> String {
        format!(
            "{}{}",
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default(),
            std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
        )
    }
}

impl Drop for LmtpPeer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn subject_of(data: &[u8]) -> String {
    String::from_utf8_lossy(data)
        .lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

/// One message to four recipients of one LMTP domain: after the message
/// the server answers 250 for one, 451 for one, 550 for one (the fourth
/// was refused at RCPT). Each result stands on its own: delivered once,
/// deferred and then delivered on the retry (and only that recipient sent
/// again), bounced (both failures in the one DSN, quoting the server).
#[test]
fn mixed_replies_after_data_deliver_defer_and_bounce_each_recipient() {
    let t = "lmtp::mixed_replies_after_data_deliver_defer_and_bounce_each_recipient";
    if !aiosmtpd(t) {
        return;
    }
    let inst = instance("lmtp-mixed");
    let peer = LmtpPeer::start(&inst, Listen::Tcp, &[]);
    control(&inst, "lmtproutes", &format!("lmtp.test:{}", peer.route()));
    // smtproutes for the same domain would go nowhere: LMTP comes first
    control(&inst, "smtproutes", "lmtp.test:[127.0.0.1]:1");
    let daemon = Daemon::start(&inst);
    send(
        &inst,
        &[
            "ok@lmtp.test",
            "temp@lmtp.test",
            "perm@lmtp.test",
            "norcpt@lmtp.test",
        ],
        "mixed",
    );
    let ctx = || format!("{}\n--- peer:\n{}", daemon.log(), peer.log());
    assert!(
        wait_until(60, || daemon.log().contains("status=deferred")),
        "no deferral: {}",
        ctx()
    );
    let first = peer.messages();
    assert_eq!(first.len(), 1, "{}", ctx());
    assert_eq!(
        first[0].rcpt_tos,
        ["ok@lmtp.test", "temp@lmtp.test", "perm@lmtp.test"],
        "{}",
        ctx()
    );
    assert_eq!(first[0].delivered, ["ok@lmtp.test"]);
    assert_eq!(subject_of(&first[0].data), "mixed");
    assert_eq!(queue_count(&inst), 1, "the deferred one stays: {}", ctx());
    assert!(bounces(&inst).is_empty(), "bounced before done: {}", ctx());

    let out = inst.command("ternctl").arg("flush").output().unwrap();
    assert!(out.status.success());
    assert!(
        wait_until(60, || queue_count(&inst) == 0 && !bounces(&inst).is_empty()),
        "not finished after the retry: {}",
        ctx()
    );
    let all = peer.messages();
    assert_eq!(all.len(), 2, "{}", ctx());
    assert_eq!(all[1].rcpt_tos, ["temp@lmtp.test"], "only the deferred one");
    assert_eq!(all[1].delivered, ["temp@lmtp.test"]);
    let b = bounces(&inst);
    assert_eq!(b.len(), 1, "one bounce: {b:?}");
    let bounce = &b[0];
    for failed in ["perm@lmtp.test", "norcpt@lmtp.test"] {
        assert!(
            bounce.contains(&format!("Final-Recipient: rfc822; {failed}")),
            "{bounce}"
        );
    }
    for fine in ["ok@lmtp.test", "temp@lmtp.test"] {
        assert!(
            !bounce.contains(&format!("Final-Recipient: rfc822; {fine}")),
            "{fine} was delivered: {bounce}"
        );
    }
    let unfolded = bounce.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        unfolded.contains("peer says: no such user"),
        "the LMTP server's reply after the message is quoted: {bounce}"
    );
    assert!(unfolded.contains("peer says: refused at RCPT"), "{bounce}");
    assert!(!bounce.contains("127.0.0.1"), "{bounce}");
    assert!(
        !daemon.log().contains("port=1 "),
        "smtproutes was used: {}",
        daemon.log()
    );
    let mut daemon = daemon;
    assert!(daemon.stop(30).is_some_and(|s| s.success()));
}

/// The server answers the first recipient and then the connection is
/// lost: that recipient is delivered (once), the unanswered one is
/// deferred, never taken as delivered, and goes alone on the retry.
#[test]
fn replies_cut_short_leave_the_unanswered_recipients_deferred() {
    let t = "lmtp::replies_cut_short_leave_the_unanswered_recipients_deferred";
    if !aiosmtpd(t) {
        return;
    }
    let inst = instance("lmtp-short");
    let peer = LmtpPeer::start(&inst, Listen::Tcp, &["--short", "1"]);
    control(&inst, "lmtproutes", &format!("lmtp.test:{}", peer.route()));
    send(&inst, &["a1@lmtp.test", "a2@lmtp.test"], "short");
    let log = once(&inst, false);
    let ctx = || format!("{log}\n--- peer:\n{}", peer.log());
    let first = peer.messages();
    assert_eq!(first.len(), 1, "{}", ctx());
    assert_eq!(first[0].rcpt_tos, ["a1@lmtp.test", "a2@lmtp.test"]);
    assert_eq!(first[0].delivered, ["a1@lmtp.test"]);
    assert_eq!(queue_count(&inst), 1, "{}", ctx());
    assert!(
        log.lines()
            .any(|l| l.contains("a2@lmtp.test") && l.contains("possible duplicate")),
        "{}",
        ctx()
    );
    let log = once(&inst, true);
    let all = peer.messages();
    assert_eq!(all.len(), 2, "{log}\n{}", peer.log());
    assert_eq!(all[1].rcpt_tos, ["a2@lmtp.test"]);
    assert_eq!(all[1].delivered, ["a2@lmtp.test"]);
    assert_eq!(queue_count(&inst), 0, "{log}");
    assert!(bounces(&inst).is_empty());
}

/// Routing: a `.suffix` line to a Unix socket, a default line to TCP, an
/// empty line (not LMTP) falling through to smtproutes; lmtproutes wins
/// over smtproutes lines for the same domains.
#[test]
fn unix_socket_suffix_default_and_precedence_over_smtproutes() {
    let t = "lmtp::unix_socket_suffix_default_and_precedence_over_smtproutes";
    if !aiosmtpd(t) {
        return;
    }
    let inst = instance("lmtp-routes");
    let sockets = SocketDir::new();
    let sock = sockets.0.join("lmtp");
    let unix = LmtpPeer::start(&inst, Listen::Unix(&sock), &[]);
    let tcp = LmtpPeer::start(&inst, Listen::Tcp, &[]);
    let smtp = Peer::on_free_port(inst.scratch(), &PeerOptions::default());
    control(
        &inst,
        "lmtproutes",
        &format!(".sock.test:{}\nsmtp.test:\n:{}", unix.route(), tcp.route()),
    );
    let p = smtp.port();
    control(
        &inst,
        "smtproutes",
        &format!(
            "a.sock.test:[127.0.0.1]:{p}\nother.test:[127.0.0.1]:{p}\nsmtp.test:[127.0.0.1]:{p}"
        ),
    );
    send(
        &inst,
        &["u@a.sock.test", "v@other.test", "w@smtp.test"],
        "routes",
    );
    let log = once(&inst, false);
    let ctx = || {
        format!(
            "{log}\n--- unix:\n{}\n--- tcp:\n{}\n--- smtp:\n{}",
            unix.log(),
            tcp.log(),
            smtp.log()
        )
    };
    assert_eq!(queue_count(&inst), 0, "{}", ctx());
    let u = unix.messages();
    assert_eq!(u.len(), 1, "{}", ctx());
    assert_eq!(u[0].delivered, ["u@a.sock.test"]);
    let v = tcp.messages();
    assert_eq!(v.len(), 1, "{}", ctx());
    assert_eq!(v[0].delivered, ["v@other.test"]);
    let w = smtp.messages();
    assert_eq!(w.len(), 1, "{}", ctx());
    assert_eq!(w[0].rcpt_tos, ["w@smtp.test"]);
    assert!(log.contains("socket="), "the socket is logged: {}", ctx());
}

/// Over TCP, STARTTLS when the server offers it; four messages for one
/// domain go over one connection (one worker at a time for the domain;
/// one reconnect allowed).
#[test]
fn starttls_over_tcp_and_one_connection_for_several_messages() {
    let t = "lmtp::starttls_over_tcp_and_one_connection_for_several_messages";
    if !aiosmtpd(t) {
        return;
    }
    if !have_tool("openssl") {
        skip(t, "openssl not installed");
        return;
    }
    let inst = instance("lmtp-reuse");
    let (cert, key) = self_signed_files(inst.scratch(), "store.test");
    let peer = LmtpPeer::start(
        &inst,
        Listen::Tcp,
        &[
            "--tls",
            cert.to_str().expect("UTF-8 path"),
            key.to_str().expect("UTF-8 path"),
        ],
    );
    control(&inst, "lmtproutes", &format!("lmtp.test:{}", peer.route()));
    control(&inst, "concurrencydomain", "1");
    for i in 0..4 {
        send(&inst, &[&format!("u{i}@lmtp.test")], &format!("reuse-{i}"));
    }
    let log = once(&inst, false);
    let ctx = || format!("{log}\n--- peer:\n{}", peer.log());
    assert_eq!(queue_count(&inst), 0, "{}", ctx());
    let got = peer.messages();
    assert_eq!(got.len(), 4, "{}", ctx());
    let mut subjects: Vec<String> = got.iter().map(|m| subject_of(&m.data)).collect();
    subjects.sort();
    assert_eq!(subjects, ["reuse-0", "reuse-1", "reuse-2", "reuse-3"]);
    assert!(got.iter().all(|m| m.tls), "plain text: {}", ctx());
    let conns = peer.connections();
    assert!((1..=2).contains(&conns), "{conns} connections: {}", ctx());
    assert!(
        got.iter()
            .any(|m| m.conn == got[0].conn && m.delivered.len() == 1)
    );
}

/// Dovecot's LMTP server, started by hand for the test; stopped by pid.
struct Dovecot {
    child: Option<Child>,
    dir: PathBuf,
}

impl Dovecot {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM: the master stops its services and removes its pid
            // file; its children exit when it does
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            if !wait_until(20, || matches!(c.try_wait(), Ok(Some(_)))) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; Dovecot binds it
/// next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Delivery into Dovecot's Maildirs through its `lmtp` service, over its
/// Unix socket and over TCP; an unknown user is refused (550 at RCPT) and
/// bounced, and only that one.
#[test]
fn dovecot_lmtp_over_socket_and_tcp_into_maildir() {
    let t = "lmtp::dovecot_lmtp_over_socket_and_tcp_into_maildir";
    if !is_root() {
        skip(t, "needs root: Dovecot's master becomes its mail user");
        return;
    }
    let Some(dovecot) = ["/usr/sbin/dovecot", "/usr/bin/dovecot"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
    else {
        skip(
            t,
            "dovecot not installed (Debian packages dovecot-core, dovecot-lmtpd)",
        );
        return;
    };
    if !Path::new("/usr/lib/dovecot/lmtp").is_file() {
        skip(
            t,
            "dovecot's lmtp not installed (Debian package dovecot-lmtpd)",
        );
        return;
    }
    // the mail user: the `dovecot` account the package creates (Dovecot
    // refuses uid 0 for mail)
    let Some((uid, gid)) = std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"dovecot") && f.len() > 3)
                .then(|| Some((f[2].parse::<u32>().ok()?, f[3].parse::<u32>().ok()?)))
                .flatten()
        })
    else {
        skip(t, "no dovecot account");
        return;
    };
    let inst = instance("lmtp-dovecot");
    // a short directory: Dovecot's sockets live in its base_dir
    let sockets = SocketDir::new();
    let d = sockets.0.clone();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    for sub in ["run", "state", "mail/alice"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::os::unix::fs::chown(d.join("mail/alice"), Some(uid), Some(gid)).unwrap();
    std::fs::write(
        d.join("users"),
        format!("alice::{uid}:{gid}::{}::\n", d.join("mail/alice").display()),
    )
    .unwrap();
    let port = free_port();
    let conf = format!(
        "base_dir = {d}/run\n\
         state_dir = {d}/state\n\
         log_path = {d}/dovecot.log\n\
         protocols = lmtp\n\
         listen = 127.0.0.1\n\
         ssl = no\n\
         default_internal_user = dovecot\n\
         default_login_user = dovenull\n\
         first_valid_uid = {uid}\n\
         postmaster_address = postmaster@store.test\n\
         auth_username_format = %Ln\n\
         mail_location = maildir:~/Maildir\n\
         passdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
         userdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
         service lmtp {{\n\
           unix_listener lmtp {{\n    mode = 0666\n  }}\n\
           inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
         }}\n",
        d = d.display()
    );
    std::fs::write(d.join("dovecot.conf"), conf).unwrap();
    let out = std::fs::File::create(d.join("stderr")).unwrap();
    let child = Command::new(dovecot)
        .arg("-F")
        .arg("-c")
        .arg(d.join("dovecot.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(out))
        .spawn()
        .expect("start dovecot");
    let mut dc = Dovecot {
        child: Some(child),
        dir: d.clone(),
    };
    let sock = d.join("run/lmtp");
    let up = wait_until(30, || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let exited = dc.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
    assert!(
        up,
        "dovecot did not start ({exited:?}): {}\n{}",
        dc.log(),
        std::fs::read_to_string(d.join("stderr")).unwrap_or_default()
    );
    control(
        &inst,
        "lmtproutes",
        &format!(
            "dove.test:{}\ndovetcp.test:127.0.0.1:{port}",
            sock.display()
        ),
    );
    send(
        &inst,
        &["alice@dove.test", "bob@dove.test", "alice@dovetcp.test"],
        "to-dovecot",
    );
    let log = once(&inst, false);
    let ctx = || format!("{log}\n--- dovecot:\n{}", dc.log());
    assert_eq!(queue_count(&inst), 0, "{}", ctx());
    let new = d.join("mail/alice/Maildir/new");
    let files: Vec<PathBuf> = std::fs::read_dir(&new)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(files.len(), 2, "one per route: {}", ctx());
    for f in &files {
        let text = std::fs::read(f).unwrap();
        assert_eq!(subject_of(&text), "to-dovecot");
        assert!(String::from_utf8_lossy(&text).contains("body of to-dovecot"));
    }
    let b = bounces(&inst);
    assert_eq!(b.len(), 1, "{}", ctx());
    assert!(
        b[0].contains("Final-Recipient: rfc822; bob@dove.test"),
        "{}",
        b[0]
    );
    assert!(
        !b[0].contains("Final-Recipient: rfc822; alice@"),
        "{}",
        b[0]
    );
    let unfolded = b[0].split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(unfolded.contains("User doesn't exist"), "{}", b[0]);
    assert!(
        log.contains("socket=") && log.contains(&format!("port={port}")),
        "{}",
        ctx()
    );
}
