//! Integration-test harness for Tern.
//!
//! * [`Instance`]: a throwaway single-user instance (`ternctl init` in a
//!   fresh directory), removed on drop unless `TERN_KEEP_TEST_DIRS` is set;
//! * [`bin`]: where the built programs are (`TERN_BIN_DIR`, else the target
//!   directory next to the test executable; `scripts/test` builds them
//!   first);
//! * [`inject_raw`]: runs `tern-queue` with a message on fd 0 and an
//!   envelope on fd 1, as every caller does;
//! * [`skip`]: prints a clear `SKIP:` line for a test that cannot run here
//!   (not root, a tool missing).
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The directory holding the built programs.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TERN_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/<test-exe> -> target/<profile>
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a built program; panics with a clear message when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "program {} not found in {}: run `cargo build --workspace --bins` first (scripts/test does)",
        name,
        bin_dir().display()
    );
    p
}

/// True when running as root.
pub fn is_root() -> bool {
    tern_sys::effective_uid() == 0
}

/// Reports a test that cannot run here: a `SKIP:` line on stderr, and the
/// same line appended to `$TERN_SKIP_LOG` when set (cargo hides a passing
/// test's stderr; `scripts/test` prints that file at the end).
pub fn skip(test: &str, reason: &str) {
    let line = format!("SKIP: {test}: {reason}\n");
    eprint!("{line}");
    if let Some(path) = std::env::var_os("TERN_SKIP_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// True when `tool` is on PATH.
pub fn have_tool(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh, unique directory for a test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let base = std::env::var_os("TERN_TEST_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let d = base.join(format!("tern-test-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// A throwaway single-user instance.
pub struct Instance {
    root: PathBuf,
    home: PathBuf,
}

impl Instance {
    /// Creates an instance with the mailboxes `test` and `postmaster`.
    pub fn new(name: &str) -> Instance {
        Instance::with_mailboxes(name, &["test"])
    }

    /// Creates an instance with the given mailboxes (postmaster always).
    pub fn with_mailboxes(name: &str, mailboxes: &[&str]) -> Instance {
        let root = scratch_dir(name);
        let home = root.join("home");
        let mut cmd = Command::new(bin("ternctl"));
        cmd.arg("init").arg(&home).arg("--bin").arg(bin_dir());
        for m in mailboxes {
            cmd.arg("--mailbox").arg(m);
        }
        let out = cmd
            .env_remove("TERN_HOME")
            .output()
            .expect("run ternctl init");
        assert!(
            out.status.success(),
            "ternctl init failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // Never resolve real names from a test: the machine's resolver is
        // off loopback. Until a test points dnsservers at its own dnsmasq,
        // lookups go to a closed loopback port and fail temporarily.
        std::fs::write(home.join("control/dnsservers"), "[127.0.0.1]:9\n")
            .expect("write control/dnsservers");
        Instance { root, home }
    }

    /// The instance home (`TERN_HOME`).
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// A scratch directory beside the home, removed with the instance.
    pub fn scratch(&self) -> &Path {
        &self.root
    }

    /// A command for one of the instance's programs, with `TERN_HOME` set.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(bin(program));
        c.env("TERN_HOME", &self.home);
        c.env_remove("QMAILQUEUE");
        c
    }

    /// The instance's queue.
    pub fn queue(&self) -> tern_spool::Queue {
        tern_spool::Queue::open(&self.home.join("queue")).expect("open queue")
    }

    /// Runs `tern-queue` for this instance.
    pub fn inject_raw(&self, message: &[u8], envelope: &[u8]) -> Injected {
        inject_raw(self.command("tern-queue"), message, envelope)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if std::env::var_os("TERN_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// The outcome of one `tern-queue` run.
#[derive(Debug)]
pub struct Injected {
    /// Its exit status.
    pub status: ExitStatus,
    /// What it wrote on stderr.
    pub stderr: String,
}

impl Injected {
    /// The exit code (-1 when killed by a signal).
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
}

/// Runs a queue program with `message` on fd 0 and `envelope` on fd 1.
pub fn inject_raw(mut cmd: Command, message: &[u8], envelope: &[u8]) -> Injected {
    let (env_r, mut env_w) = std::io::pipe().expect("pipe");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::from(env_r))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn queue program");
    // The Command still holds the envelope pipe's read end: close it, or a
    // writer blocked on a full pipe would wait forever after the child exits.
    drop(cmd);
    let mut stdin = child.stdin.take().expect("stdin");
    let msg = message.to_vec();
    let envl = envelope.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&msg);
        drop(stdin);
        let _ = env_w.write_all(&envl);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    Injected {
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The envelope bytes for a sender and recipients.
pub fn envelope(sender: &str, recipients: &[&str]) -> Vec<u8> {
    tern_spool::Envelope {
        sender: sender.as_bytes().to_vec(),
        recipients: recipients.iter().map(|r| r.as_bytes().to_vec()).collect(),
    }
    .encode()
}

/// Splits a stored message into its `Received:` line (added by
/// `tern-queue`) and the rest, which must equal what was injected.
pub fn strip_received(stored: &[u8]) -> (&[u8], &[u8]) {
    assert!(
        stored.starts_with(b"Received: (tern-queue "),
        "stored message does not start with tern-queue's Received line"
    );
    let nl = stored
        .iter()
        .position(|&b| b == b'\n')
        .expect("received line end");
    (&stored[..=nl], &stored[nl + 1..])
}

/// Compiles `tests/fixtures/faultfs.c` into an `LD_PRELOAD` library that
/// makes chosen system calls fail (see the file), or None when no C
/// compiler is available.
pub fn faultfs_library() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/faultfs.c");
            let out = scratch_dir("faultfs").join("faultfs.so");
            let ok = Command::new("cc")
                .args(["-shared", "-fPIC", "-O1", "-o"])
                .arg(&out)
                .arg(&src)
                .arg("-ldl")
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            ok.then_some(out)
        })
        .clone()
}

/// A running `tern-start` (long-running mode) for an instance; stopped with
/// SIGTERM (then SIGKILL after 20 s) when dropped.
pub struct Daemon {
    child: Option<std::process::Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `tern-start` for `inst`, logging to a file in its scratch dir.
    pub fn start(inst: &Instance) -> Daemon {
        static N: AtomicUsize = AtomicUsize::new(0);
        let log = inst
            .scratch()
            .join(format!("daemon-{}.log", N.fetch_add(1, Ordering::Relaxed)));
        let f = std::fs::File::create(&log).expect("daemon log");
        let child = inst
            .command("tern-start")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(f))
            .spawn()
            .expect("start tern-start");
        Daemon {
            child: Some(child),
            log,
        }
    }

    /// The log written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The pid of `tern-start`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Whether `tern-start` has exited (and its status).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends SIGTERM and waits up to `secs` for the exit status.
    pub fn stop(&mut self, secs: u64) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop(20);
    }
}

/// Polls `cond` every 50 ms until it holds or `secs` pass; returns whether
/// it held.
pub fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl Instance {
    /// The messages delivered to mailbox `name` (files in `Maildir/new`),
    /// in no particular order.
    pub fn maildir(&self, name: &str) -> Vec<Vec<u8>> {
        let dir = self.home.join("mail").join(name).join("Maildir/new");
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if let Ok(b) = std::fs::read(e.path()) {
                    out.push(b);
                }
            }
        }
        out
    }

    /// Number of files in mailbox `name`'s `Maildir/new`.
    pub fn maildir_count(&self, name: &str) -> usize {
        std::fs::read_dir(self.home.join("mail").join(name).join("Maildir/new"))
            .map(|rd| rd.count())
            .unwrap_or(0)
    }

    /// Runs `sendmail ARGS` with `input` on stdin; returns (exit code, stderr).
    pub fn sendmail(&self, args: &[&str], input: &[u8]) -> (i32, String) {
        let mut child = self
            .command("sendmail")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sendmail");
        let mut stdin = child.stdin.take().expect("stdin");
        let _ = stdin.write_all(input);
        drop(stdin);
        let out = child.wait_with_output().expect("wait sendmail");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Pids of this instance's processes named `comm` (found through
    /// `TERN_HOME` in their environment).
    pub fn pids_of(&self, comm: &str) -> Vec<i32> {
        let want = format!("TERN_HOME={}", self.home.display());
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(c) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
                continue;
            };
            if !comm.is_empty() && c.trim() != comm {
                continue;
            }
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            if env.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
                out.push(pid);
            }
        }
        out
    }
}

/// Splits a delivered Maildir file into the lines Tern added on top
/// (`Return-Path:`, `Delivered-To:`, tern-queue's `Received:`) and the rest.
pub fn strip_delivery_headers(file: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut rest = file;
    let mut added = Vec::new();
    for prefix in [
        &b"Return-Path: "[..],
        b"Delivered-To: ",
        b"Received: (tern-queue ",
    ] {
        if rest.starts_with(prefix) {
            let nl = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |i| i + 1);
            added.push(&rest[..nl]);
            rest = &rest[nl..];
        }
    }
    (added, rest)
}

/// `tern-smtpd` behind `tern-listen` on 127.0.0.1 (a free port); killed when
/// dropped. Shared by the TLS and AUTH suites.
pub struct Front {
    child: Option<std::process::Child>,
    /// The port tern-listen bound.
    pub port: u16,
    log: PathBuf,
}

impl Drop for Front {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Front {
    /// Starts tern-listen for `inst` with the given rules file text and
    /// extra environment, and waits until it listens.
    pub fn listen(inst: &Instance, rules: &str, env: &[(&str, &str)]) -> Front {
        let dir = inst.scratch();
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let log = dir.join(format!("listen-{n}.log"));
        let rules_path = dir.join(format!("listen-{n}.rules"));
        std::fs::write(&rules_path, rules).expect("rules");
        let mut cmd = inst.command("tern-listen");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .args(["-c", "20", "-C", "20", "-x"])
            .arg(&rules_path)
            .args(["127.0.0.1", "0"])
            .arg(bin("tern-smtpd"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
            .spawn()
            .expect("start tern-listen");
        let mut port = 0;
        assert!(
            wait_until(10, || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("local_port="))
                    .map(|p| port = p.parse().expect("port"))
                    .is_some()
            }),
            "tern-listen did not start"
        );
        Front {
            child: Some(child),
            port,
            log,
        }
    }

    /// A front from a launcher started elsewhere (e.g. tcpserver).
    pub fn from_child(child: std::process::Child, port: u16, log: PathBuf) -> Front {
        Front {
            child: Some(child),
            port,
            log,
        }
    }

    /// The launcher's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Debian's Python, which has the ssl module the tests need.
pub const PYTHON: &str = "/usr/bin/python3";

/// Runs a Python script with arguments; returns (exit code, stdout+stderr).
pub fn python(script: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Writes a fresh self-signed certificate for `cn` (chain and key in one PEM
/// file) to the instance's `control/servercert.pem`, replacing the old one
/// with a rename as a renewal script would. Needs `openssl`.
pub fn make_cert(inst: &Instance, cn: &str) {
    let dir = inst.scratch();
    let (key, cert) = (dir.join(format!("{cn}.key")), dir.join(format!("{cn}.crt")));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={cn}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl req");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = [
        std::fs::read(&cert).expect("cert"),
        std::fs::read(&key).expect("key"),
    ]
    .concat();
    let control = inst.home().join("control");
    std::fs::write(control.join("servercert.pem.new"), pem).expect("write cert");
    std::fs::rename(
        control.join("servercert.pem.new"),
        control.join("servercert.pem"),
    )
    .expect("rename cert");
}

/// Writes a fresh self-signed certificate for `cn` into `dir` as two files,
/// `<cn>.crt` and `<cn>.key` (for a test SMTP peer); returns their paths.
/// Needs `openssl`.
pub fn self_signed_files(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key")));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={cn}")])
        .args(["-addext", &format!("subjectAltName=DNS:{cn}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl req");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// A DNS record served by [`Dnsmasq`]. Use names under `.test` or
/// `.example` only: dnsmasq answers those from its own records (NXDOMAIN for
/// other names there) and refuses every other name (it has no upstream).
#[derive(Debug, Clone)]
pub enum DnsRecord {
    /// `domain MX pref host`.
    Mx {
        /// The mail domain.
        domain: String,
        /// The exchanger's host name.
        host: String,
        /// The preference.
        pref: u16,
    },
    /// `domain MX 0 .` (RFC 7505: the domain accepts no mail).
    NullMx {
        /// The mail domain.
        domain: String,
    },
    /// A TXT record (one string, at most 255 bytes, no comma).
    Txt {
        /// The owner name.
        name: String,
        /// The text.
        text: String,
    },
    /// Queries for `domain` and its subdomains are forwarded to
    /// `127.0.0.1:port` (a closed port: every lookup there fails, a
    /// temporary DNS error for the asker).
    Forward {
        /// The domain.
        domain: String,
        /// The port.
        port: u16,
    },
    /// Address records (A and/or AAAA) for `name`, one per address.
    Host {
        /// The host name.
        name: String,
        /// Its addresses.
        addrs: Vec<std::net::IpAddr>,
    },
}

impl DnsRecord {
    /// `domain MX pref host`.
    pub fn mx(domain: &str, pref: u16, host: &str) -> DnsRecord {
        DnsRecord::Mx {
            domain: domain.to_string(),
            host: host.to_string(),
            pref,
        }
    }

    /// `domain MX 0 .`.
    pub fn null_mx(domain: &str) -> DnsRecord {
        DnsRecord::NullMx {
            domain: domain.to_string(),
        }
    }

    /// `name TXT "text"`.
    pub fn txt(name: &str, text: &str) -> DnsRecord {
        assert!(text.len() <= 255 && !text.contains(','), "{text}");
        DnsRecord::Txt {
            name: name.to_string(),
            text: text.to_string(),
        }
    }

    /// Queries under `domain` go to a closed loopback port.
    pub fn dead(domain: &str) -> DnsRecord {
        DnsRecord::Forward {
            domain: domain.to_string(),
            port: 9,
        }
    }

    /// Address records for `name`.
    pub fn host(name: &str, addrs: &[std::net::IpAddr]) -> DnsRecord {
        DnsRecord::Host {
            name: name.to_string(),
            addrs: addrs.to_vec(),
        }
    }

    fn args(&self) -> Vec<String> {
        match self {
            DnsRecord::Mx { domain, host, pref } => {
                vec![format!("--mx-host={domain},{host},{pref}")]
            }
            DnsRecord::NullMx { domain } => vec![format!("--mx-host={domain},.,0")],
            DnsRecord::Txt { name, text } => vec![format!("--txt-record={name},{text}")],
            DnsRecord::Forward { domain, port } => {
                vec![format!("--server=/{domain}/127.0.0.1#{port}")]
            }
            DnsRecord::Host { name, addrs } => addrs
                .iter()
                .map(|a| format!("--host-record={name},{a}"))
                .collect(),
        }
    }
}

/// A real DNS server for a test: `dnsmasq` on 127.0.0.1 (a free port, UDP
/// and TCP) serving the given records and nothing else (no upstream, no
/// `/etc/hosts`, `--local` for `.test` and `.example`); killed when
/// dropped. Needs `dnsmasq` (scripts/test installs it).
pub struct Dnsmasq {
    child: Option<std::process::Child>,
    port: u16,
    log: PathBuf,
}

impl Dnsmasq {
    /// Starts dnsmasq with `records` and waits until it answers; its log
    /// (every query) goes to a file in `dir`.
    pub fn start(dir: &Path, records: &[DnsRecord]) -> Dnsmasq {
        static N: AtomicUsize = AtomicUsize::new(0);
        let mut last = String::new();
        for _ in 0..10 {
            let port = free_udp_tcp_port();
            let log = dir.join(format!("dnsmasq-{}.log", N.fetch_add(1, Ordering::Relaxed)));
            let f = std::fs::File::create(&log).expect("dnsmasq log");
            let mut cmd = Command::new(
                dnsmasq_program().expect("dnsmasq not installed (Debian package dnsmasq-base)"),
            );
            cmd.args([
                "--no-daemon",
                &format!("--port={port}"),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--pid-file",
                "--log-queries=extra",
                "--log-facility=-",
                "--local=/test/",
                "--local=/example/",
            ]);
            for r in records {
                cmd.args(r.args());
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::from(f.try_clone().expect("dup log")))
                .stderr(Stdio::from(f))
                .spawn()
                .expect("start dnsmasq (Debian package dnsmasq)");
            let up = wait_until(10, || {
                matches!(child.try_wait(), Ok(Some(_))) || dns_answers(port)
            });
            if up && matches!(child.try_wait(), Ok(None)) {
                return Dnsmasq {
                    child: Some(child),
                    port,
                    log,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("dnsmasq did not start:\n{last}");
    }

    /// The port it serves on (127.0.0.1, UDP and TCP).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `control/dnsservers` line for this server.
    pub fn server(&self) -> String {
        format!("[127.0.0.1]:{}", self.port)
    }

    /// Points `inst`'s `control/dnsservers` at this server.
    pub fn use_for(&self, inst: &Instance) {
        std::fs::write(
            inst.home().join("control/dnsservers"),
            format!("{}\n", self.server()),
        )
        .expect("write control/dnsservers");
    }

    /// Its log so far (one line per query and answer).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The dnsmasq program: on PATH, else `/usr/sbin/dnsmasq` (not on a
/// normal user's PATH on Debian); None when not installed.
pub fn dnsmasq_program() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("dnsmasq"))
                .find(|p| p.is_file())
        })
        .or_else(|| Some(PathBuf::from("/usr/sbin/dnsmasq")).filter(|p| p.is_file()))
}

/// A port free for both UDP and TCP on 127.0.0.1 (at the time of asking).
fn free_udp_tcp_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("udp addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// True when a DNS server on 127.0.0.1:`port` answers a query (any answer).
fn dns_answers(port: u16) -> bool {
    let Ok(sock) = std::net::UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(std::time::Duration::from_millis(200)));
    // id 0x7e57, RD, one question: ready.test IN A.
    let mut q = vec![0x7e, 0x57, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["ready", "test"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    if sock.send_to(&q, ("127.0.0.1", port)).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(sock.recv_from(&mut buf), Ok((n, _)) if n >= 12 && buf[..2] == [0x7e, 0x57])
}

/// Behaviours of a [`Peer`] (see `tests/peers/smtp_peer.py`).
#[derive(Debug, Clone, Default)]
pub struct PeerOptions {
    /// The first N transactions get `451 4.3.0` at MAIL FROM.
    pub tempfail: u32,
    /// Recipients answered `550 5.1.1 <addr>: peer says: no such mailbox here`.
    pub reject: Vec<String>,
    /// The first N DATA commands: the connection is closed after 354 and
    /// the first data bytes, without a reply.
    pub drop_in_data: u32,
    /// Offer STARTTLS with this certificate and key file.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// With `tls`: answer STARTTLS with 220, then fail the handshake (a
    /// fatal handshake_failure alert) and close.
    pub bad_starttls: bool,
    /// Announce and enforce `SIZE` this many bytes (None: aiosmtpd's 32 MiB).
    pub size: Option<u64>,
    /// Do not offer SMTPUTF8.
    pub no_smtputf8: bool,
}

/// One message a [`Peer`] accepted.
#[derive(Debug, Clone)]
pub struct PeerMessage {
    /// The connection (1, 2, ... in the order they were accepted).
    pub conn: u64,
    /// The MAIL FROM address (empty for `<>`).
    pub mail_from: String,
    /// The MAIL FROM parameters (`SIZE=1234`, `BODY=8BITMIME`, ...).
    pub mail_options: Vec<String>,
    /// The accepted RCPT TO addresses, in order.
    pub rcpt_tos: Vec<String>,
    /// Whether the session was under STARTTLS.
    pub tls: bool,
    /// The TLS version when it was (`TLSv1.3`).
    pub tls_version: Option<String>,
    /// The content: CRLF line ends as received, leading dots unstuffed.
    pub data: Vec<u8>,
}

/// A real SMTP server for remote-delivery tests: aiosmtpd (Debian's
/// python3-aiosmtpd, under [`PYTHON`]) running `tests/peers/smtp_peer.py`
/// on one loopback address, recording connections and messages in its own
/// directory; stopped by pid (SIGKILL) when dropped.
pub struct Peer {
    child: Option<std::process::Child>,
    addr: std::net::SocketAddr,
    dir: PathBuf,
}

/// Next candidate for [`fresh_loopback`]: a per-process /16 of 127/8, so
/// leftovers of an earlier run are unlikely to be in the way.
static LOOPBACK_N: AtomicUsize = AtomicUsize::new(0);

/// A fresh IPv4 loopback address (127.x.y.z, all of 127/8 is loopback on
/// Linux) with nothing listening on port 25: for one MX host of one test.
pub fn fresh_loopback() -> std::net::Ipv4Addr {
    loop {
        let n = LOOPBACK_N.fetch_add(1, Ordering::Relaxed);
        let x = (std::process::id() % 200) as u8 + 20;
        let ip = std::net::Ipv4Addr::new(127, x, (n / 250) as u8, (n % 250) as u8 + 2);
        let free = std::net::TcpStream::connect_timeout(
            &(ip, 25).into(),
            std::time::Duration::from_millis(500),
        )
        .is_err();
        if free {
            return ip;
        }
    }
}

impl Peer {
    /// Starts a peer on `ip`:`port` (0: a free port). Err (with the
    /// script's message) when the address cannot be bound.
    pub fn start(
        dir: &Path,
        ip: std::net::IpAddr,
        port: u16,
        opts: &PeerOptions,
    ) -> Result<Peer, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = dir.join(format!("peer-{}", N.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&dir).expect("peer dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/smtp_peer.py");
        let mut cmd = Command::new(PYTHON);
        cmd.arg(&script)
            .args(["--host", &ip.to_string(), "--port", &port.to_string()])
            .arg("--dir")
            .arg(&dir);
        if opts.tempfail > 0 {
            cmd.args(["--tempfail", &opts.tempfail.to_string()]);
        }
        for r in &opts.reject {
            cmd.args(["--reject", r]);
        }
        if opts.drop_in_data > 0 {
            cmd.args(["--drop-in-data", &opts.drop_in_data.to_string()]);
        }
        if let Some((cert, key)) = &opts.tls {
            cmd.arg("--tls").arg(cert).arg(key);
        }
        if opts.bad_starttls {
            cmd.arg("--bad-starttls");
        }
        if let Some(size) = opts.size {
            cmd.args(["--size", &size.to_string()]);
        }
        if opts.no_smtputf8 {
            cmd.arg("--no-smtputf8");
        }
        let err = std::fs::File::create(dir.join("stderr")).expect("peer stderr");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start the SMTP peer (/usr/bin/python3)");
        let ready = dir.join("ready");
        let ok = wait_until(20, || {
            ready.exists() || matches!(child.try_wait(), Ok(Some(_)))
        });
        if !ok || !ready.exists() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::fs::read_to_string(dir.join("stderr")).unwrap_or_default());
        }
        let text = std::fs::read_to_string(&ready).expect("ready file");
        let port: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("port in the ready file");
        Ok(Peer {
            child: Some(child),
            addr: std::net::SocketAddr::new(ip, port),
            dir,
        })
    }

    /// A peer on 127.0.0.1, a free port.
    pub fn on_free_port(dir: &Path, opts: &PeerOptions) -> Peer {
        Peer::start(dir, std::net::Ipv4Addr::LOCALHOST.into(), 0, opts)
            .unwrap_or_else(|e| panic!("SMTP peer did not start: {e}"))
    }

    /// A peer on port 25 of a fresh loopback address (see
    /// [`fresh_loopback`]), as an MX host must be. Needs root.
    pub fn on_port25(dir: &Path, opts: &PeerOptions) -> Peer {
        let mut last = String::new();
        for _ in 0..20 {
            match Peer::start(dir, fresh_loopback().into(), 25, opts) {
                Ok(p) => return p,
                Err(e) => last = e,
            }
        }
        panic!("SMTP peer did not start on port 25: {last}");
    }

    /// Where it listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Its IP address.
    pub fn ip(&self) -> std::net::IpAddr {
        self.addr.ip()
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        std::fs::read_to_string(self.dir.join("connections"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    /// The number of messages accepted so far.
    pub fn message_count(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| {
                        let n = e.file_name();
                        let n = n.to_string_lossy();
                        n.starts_with("msg-") && n.ends_with(".json")
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// The messages accepted so far, in the order they were accepted.
    pub fn messages(&self) -> Vec<PeerMessage> {
        let mut out = Vec::new();
        for k in 1.. {
            let Ok(meta) = std::fs::read(self.dir.join(format!("msg-{k}.json"))) else {
                break;
            };
            let v: serde_json::Value = serde_json::from_slice(&meta).expect("peer json");
            let data = std::fs::read(self.dir.join(format!("msg-{k}.eml"))).expect("peer eml");
            out.push(PeerMessage {
                conn: v["conn"].as_u64().unwrap_or(0),
                mail_from: v["mail_from"].as_str().unwrap_or_default().to_string(),
                mail_options: v["mail_options"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|r| r.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                rcpt_tos: v["rcpt_tos"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|r| r.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                tls: v["tls"].as_bool().unwrap_or(false),
                tls_version: v["tls_version"].as_str().map(str::to_string),
                data,
            });
        }
        out
    }

    /// Its log: one line per command and per behaviour taken, then its
    /// stderr.
    pub fn log(&self) -> String {
        format!(
            "{}{}",
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default(),
            std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
        )
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
