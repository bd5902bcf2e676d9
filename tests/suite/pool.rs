//! tern-listen's worker pool (its default for tern-smtpd): reused workers,
//! per-connection variables that never leak into the next connection,
//! parked quiet clients (300 idle connections from 30 addresses do not lock
//! a new client out), a killed worker costing only its connection, the
//! listener's timeout for parked clients, and `-E` (one process per
//! connection, as before). Real TCP on 127.0.0.0/8 only.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;
use tern_tests::{Instance, bin, wait_until};

/// tern-listen on 127.0.0.1 with a rules file; killed when dropped.
struct Listen {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Listen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Listen {
    fn start(
        inst: &Instance,
        name: &str,
        opts: &[&str],
        rules: &str,
        env: &[(&str, &str)],
    ) -> Listen {
        let dir = inst.scratch();
        let log = dir.join(format!("{name}.log"));
        let rules_file = dir.join(format!("{name}.rules"));
        std::fs::write(&rules_file, rules).expect("rules");
        let mut cmd = inst.command("tern-listen");
        cmd.args(opts)
            .arg("-x")
            .arg(&rules_file)
            .args(["127.0.0.1", "0"])
            .arg(bin("tern-smtpd"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log")));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start tern-listen");
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
        Listen { child, port, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The pids named by tern-listen's `start` lines, in order.
    fn start_pids(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.starts_with("tern-listen: event=start "))
            .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("pid=")))
            .map(str::to_string)
            .collect()
    }

    /// Connects from `source` (an address of 127.0.0.0/8).
    fn connect(&self, source: &str) -> Client {
        let sock = socket2_connect(source, self.port);
        sock.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        Client {
            r: BufReader::new(sock.try_clone().expect("clone")),
            w: sock,
        }
    }
}

/// A TCP connection to 127.0.0.1:port from the local address `source`
/// (every 127.0.0.0/8 address is this host's own on Linux).
fn socket2_connect(source: &str, port: u16) -> TcpStream {
    // std cannot bind before connect; python can, and so can a raw
    // socket through rustix.
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    let from: SocketAddr = format!("{source}:0").parse().expect("source address");
    bind(&fd, &from).expect("bind the source address");
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    connect(&fd, &to).expect("connect");
    TcpStream::from(fd)
}

struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    /// One whole reply (every line up to the one with a space after the
    /// code); empty at end of input.
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    fn say(&mut self, line: &str) -> String {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("write");
        self.reply()
    }

    /// A whole transaction; the reply to the final dot.
    fn send_mail(&mut self, from: &str, to: &str, body: &str) -> String {
        let r = self.say(&format!("MAIL FROM:<{from}>"));
        assert!(r.starts_with("250"), "MAIL: {r}");
        let r = self.say(&format!("RCPT TO:<{to}>"));
        if !r.starts_with("250") {
            return r;
        }
        let r = self.say("DATA");
        assert!(r.starts_with("354"), "DATA: {r}");
        self.say(&format!("Subject: pool\r\n\r\n{body}\r\n."))
    }
}

fn me(inst: &Instance) -> String {
    std::fs::read_to_string(inst.home().join("control/me"))
        .expect("control/me")
        .trim()
        .to_string()
}

#[test]
fn workers_are_reused_and_variables_stay_with_their_connection() {
    let inst = Instance::new("pool-vars");
    // One worker (-c 1): every connection below is served by the same
    // process, one after the other.
    let rules = "127.0.0.2:allow,RELAYCLIENT=\"\"\n127.0.0.3:allow,DATABYTES=\"100\"\n:allow\n";
    let l = Listen::start(&inst, "vars", &["-c", "1"], rules, &[]);
    let local = format!("test@{}", me(&inst));
    let long = "x".repeat(300);
    for round in 0..2 {
        let mut relay = l.connect("127.0.0.2");
        assert!(relay.reply().starts_with("220"));
        relay.say("HELO relay.example");
        let r = relay.send_mail("a@b.example", "far@elsewhere.example", &long);
        assert!(
            r.starts_with("250"),
            "round {round}: relay client refused: {r}"
        );
        relay.say("QUIT");

        let mut other = l.connect("127.0.0.3");
        assert!(other.reply().starts_with("220"));
        other.say("HELO other.example");
        let r = other.say("MAIL FROM:<a@b.example>");
        assert!(r.starts_with("250"), "{r}");
        let r = other.say("RCPT TO:<far@elsewhere.example>");
        assert!(
            r.starts_with("553"),
            "round {round}: the previous connection's RELAYCLIENT leaked: {r}"
        );
        let r = other.say("RSET");
        assert!(r.starts_with("250"));
        let r = other.send_mail("a@b.example", &local, &long);
        assert!(
            r.starts_with("552"),
            "round {round}: DATABYTES=100 not applied: {r}"
        );
        other.say("QUIT");
    }
    // A connection from an address with no variables: no DATABYTES left.
    let mut plain = l.connect("127.0.0.4");
    assert!(plain.reply().starts_with("220"));
    plain.say("HELO plain.example");
    let r = plain.send_mail("a@b.example", &local, &long);
    assert!(
        r.starts_with("250"),
        "the previous connection's DATABYTES leaked: {r}"
    );
    plain.say("QUIT");
    drop(plain);
    assert!(wait_until(10, || l.start_pids().len() == 5));
    let pids = l.start_pids();
    assert!(
        pids.iter().all(|p| *p == pids[0]),
        "not one reused worker: {pids:?}\n{}",
        l.log()
    );
    // Each connection logged with its own address.
    let connects: Vec<String> = l
        .log()
        .lines()
        .filter(|x| x.starts_with("tern-smtpd: event=connect"))
        .filter_map(|x| {
            x.split_whitespace()
                .find_map(|w| w.strip_prefix("remote_ip="))
        })
        .map(str::to_string)
        .collect();
    assert_eq!(
        connects,
        [
            "127.0.0.2",
            "127.0.0.3",
            "127.0.0.2",
            "127.0.0.3",
            "127.0.0.4"
        ]
    );
}

#[test]
fn quiet_clients_are_parked_and_never_lock_others_out() {
    let inst = Instance::new("pool-idle");
    // Four workers, ten connections per address: before the pool, the
    // fifth idle connection and everyone after it got no greeting until
    // an idle client timed out (1200 s).
    let l = Listen::start(
        &inst,
        "idle",
        &["-c", "4", "-C", "10", "-v"],
        ":allow\n",
        &[],
    );
    let mut idle = Vec::new();
    for a in 2..32 {
        for _ in 0..10 {
            idle.push(l.connect(&format!("127.0.0.{a}")));
        }
    }
    // Every idle client is greeted (each waits its turn for a worker).
    for (i, c) in idle.iter_mut().enumerate() {
        let g = c.reply();
        assert!(g.starts_with("220"), "idle client {i} not greeted: {g:?}");
    }
    // A new client is served at once, while all 300 stay connected.
    let mut c = l.connect("127.0.0.1");
    assert!(c.reply().starts_with("220"), "new client not greeted");
    c.say("HELO new.example");
    let r = c.send_mail("a@b.example", &format!("test@{}", me(&inst)), "hello");
    assert!(r.starts_with("250"), "new client's message: {r}");
    c.say("QUIT");
    // And a parked client takes up its session where it left it.
    let first = &mut idle[0];
    let r = first.say("HELO idle.example");
    assert!(r.starts_with("250"), "{r}");
    let r = first.send_mail("a@b.example", &format!("test@{}", me(&inst)), "late");
    assert!(r.starts_with("250"), "parked client's message: {r}");
    assert!(
        l.log().contains("event=park "),
        "nothing was parked:\n{}",
        l.log()
    );
}

#[test]
fn a_parked_session_keeps_its_transaction() {
    let inst = Instance::new("pool-resume");
    // Park after 50 ms of silence (a test aid of workers that are not
    // setuid).
    let l = Listen::start(
        &inst,
        "resume",
        &["-v"],
        ":allow\n",
        &[("TERN_PARK_MS", "50")],
    );
    let mut c = l.connect("127.0.0.1");
    assert!(c.reply().starts_with("220"));
    let pause = || std::thread::sleep(Duration::from_millis(300));
    pause();
    assert!(c.say("EHLO slow.example").starts_with("250"));
    pause();
    assert!(c.say("MAIL FROM:<a@b.example>").starts_with("250"));
    pause();
    let r = c.say(&format!("RCPT TO:<test@{}>", me(&inst)));
    assert!(r.starts_with("250"), "{r}");
    pause();
    // Recipients collected before the pauses are still there: DATA works.
    assert!(c.say("DATA").starts_with("354"));
    let r = c.say("Subject: slow\r\n\r\nbody\r\n.");
    assert!(r.starts_with("250"), "{r}");
    assert!(c.say("QUIT").starts_with("221"));
    let log = l.log();
    assert!(
        log.matches("tern-listen: event=park ").count() >= 3,
        "not parked at each pause:\n{log}"
    );
    assert!(log.contains("tern-listen: event=resume "), "{log}");
    assert!(
        log.contains("event=queued") && log.contains("recipients=1"),
        "{log}"
    );
}

#[test]
fn a_parked_client_that_stays_silent_is_closed_with_421() {
    let inst = Instance::new("pool-timeout");
    std::fs::write(inst.home().join("control/timeoutsmtpd"), "2\n").expect("timeoutsmtpd");
    let l = Listen::start(
        &inst,
        "timeout",
        &["-v"],
        ":allow\n",
        &[("TERN_PARK_MS", "50")],
    );
    let mut c = l.connect("127.0.0.1");
    assert!(c.reply().starts_with("220"));
    let r = c.reply();
    assert!(
        r.starts_with("421 4.4.2 ") && r.contains("timeout"),
        "no timeout reply: {r:?}\n{}",
        l.log()
    );
    assert_eq!(c.reply(), "", "connection not closed");
    assert!(l.log().contains("status=timeout"), "{}", l.log());
}

#[test]
fn a_killed_worker_costs_only_its_connection() {
    let inst = Instance::new("pool-kill");
    let l = Listen::start(&inst, "kill", &["-c", "2"], ":allow\n", &[]);
    let mut a = l.connect("127.0.0.1");
    assert!(a.reply().starts_with("220"));
    assert!(a.say("HELO a.example").starts_with("250"));
    let pid = l.start_pids().pop().expect("a start line");
    let st = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill");
    assert!(st.success());
    // That client sees its connection end.
    assert_eq!(a.reply(), "");
    // Everyone else is served as before, by another worker.
    let mut b = l.connect("127.0.0.1");
    assert!(b.reply().starts_with("220"));
    b.say("HELO b.example");
    let r = b.send_mail("a@b.example", &format!("test@{}", me(&inst)), "after");
    assert!(r.starts_with("250"), "{r}");
    b.say("QUIT");
    assert!(
        wait_until(10, || l
            .log()
            .contains("status=\"worker killed by SIGKILL\"")),
        "{}",
        l.log()
    );
}

#[test]
fn dash_e_starts_a_program_per_connection() {
    let inst = Instance::new("pool-e");
    let l = Listen::start(&inst, "e", &["-E"], ":allow\n", &[]);
    for _ in 0..2 {
        let mut c = l.connect("127.0.0.1");
        assert!(c.reply().starts_with("220"));
        assert!(c.say("QUIT").starts_with("221"));
        assert_eq!(c.reply(), "");
    }
    assert!(wait_until(10, || l.start_pids().len() == 2));
    let pids = l.start_pids();
    assert_ne!(pids[0], pids[1], "-E reused a process:\n{}", l.log());
}

#[test]
fn a_quiet_tls_client_gets_a_short_limit_when_workers_run_short() {
    let test = "pool::a_quiet_tls_client_gets_a_short_limit_when_workers_run_short";
    if !tern_tests::have_tool("openssl") || !std::path::Path::new("/usr/bin/python3").is_file() {
        tern_tests::skip(test, "openssl or /usr/bin/python3 missing");
        return;
    }
    let inst = Instance::new("pool-tls");
    tern_tests::make_cert(&inst, "localhost");
    // Three workers; a TLS session cannot be parked, so two quiet TLS
    // clients hold two of them (the pool is not short yet). A third client
    // takes the last one: now the listener is short of workers and the
    // quiet TLS sessions get TERN_STRESS_MS (a test aid standing for 10 s)
    // instead of timeoutsmtpd (1200 s).
    let l = Listen::start(
        &inst,
        "tls",
        &["-c", "3"],
        ":allow\n",
        &[("TERN_STRESS_MS", "500")],
    );
    let script = r#"
import smtplib, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
s.ehlo("quiet.example")
s.starttls(context=ctx)
s.ehlo("quiet.example")
print("ready", flush=True)
sys.stdin.readline()
# Silent until the server gives up (or the client's 30 s).
try:
    code, text = s.getreply()
    print(code, text.decode())
except Exception as e:
    print("closed", e)
"#;
    let quiet: Vec<std::process::Child> = (0..2)
        .map(|_| {
            std::process::Command::new("/usr/bin/python3")
                .arg("-c")
                .arg(script)
                .arg(l.port.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3")
        })
        .collect();
    let quiet: Vec<_> = quiet
        .into_iter()
        .map(|mut c| {
            let mut out = BufReader::new(c.stdout.take().expect("stdout"));
            let mut line = String::new();
            out.read_line(&mut line).expect("read");
            assert_eq!(line, "ready\n", "TLS client not ready");
            (c, out)
        })
        .collect();
    // Both TLS sessions are up and quiet; the third client makes the
    // pool short of workers.
    let quiet: Vec<_> = quiet
        .into_iter()
        .map(|(mut c, out)| {
            c.stdin
                .take()
                .expect("stdin")
                .write_all(b"go\n")
                .expect("go");
            (c, out)
        })
        .collect();
    let mut c = l.connect("127.0.0.1");
    assert!(c.reply().starts_with("220"), "third client never greeted");
    c.say("HELO third.example");
    let r = c.send_mail("a@b.example", &format!("test@{}", me(&inst)), "third");
    assert!(r.starts_with("250"), "{r}");
    for (mut child, mut out) in quiet {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).expect("read");
        assert!(rest.starts_with("421 "), "quiet TLS client: {rest}");
        let _ = child.wait();
    }
}

/// Started by root with `-u`/`-g`, tern-listen binds, drops, and its pool's
/// workers run as that uid and gid, never root: real, effective, saved and
/// file-system ids alike, no supplementary group. Root only.
#[test]
fn workers_of_a_dropped_listener_never_run_as_root() {
    let test = "pool::workers_of_a_dropped_listener_never_run_as_root";
    if !tern_tests::is_root() {
        tern_tests::skip(test, "needs root (drops privileges)");
        return;
    }
    let inst = Instance::new("pool-drop");
    let l = Listen::start(
        &inst,
        "drop",
        &["-u", "65533", "-g", "65532"],
        ":allow\n",
        &[],
    );
    let mut c = l.connect("127.0.0.1");
    assert!(c.reply().starts_with("220"), "not greeted:\n{}", l.log());
    let pid = l.start_pids().pop().expect("a start line");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|x| x.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), "65533 65533 65533 65533", "{status}");
    assert_eq!(field("Gid:"), "65532 65532 65532 65532", "{status}");
    assert_eq!(field("Groups:"), "", "{status}");
    c.say("QUIT");
}

/// The message of client `t`, number `i`: big enough that kills land
/// inside DATA.
fn crash_body(t: usize, i: usize) -> String {
    let mut b = String::with_capacity(120_000);
    for line in 0..1500 {
        b.push_str(&format!(
            "client {t} message {i} line {line} .......................................\r\n"
        ));
    }
    b
}

/// The pids of `parent`'s children.
fn children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) {
        for t in tasks.flatten() {
            let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Under load from eight clients, SIGKILL pool workers again and again,
/// then the listener itself (and start another): every message that got
/// its 250 is in the queue, whole. Messages cut off by a kill were never
/// acknowledged (their clients would retry).
#[test]
fn killing_workers_and_the_listener_under_load_loses_nothing_acknowledged() {
    use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
    use std::sync::{Arc, Mutex};
    let inst = Instance::new("pool-crash");
    let to = format!("test@{}", me(&inst));
    let mut l = Listen::start(&inst, "crash1", &["-c", "8"], ":allow\n", &[]);
    let port = Arc::new(AtomicU16::new(l.port));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(usize, usize)>::new()));
    let clients: Vec<_> = (0..8)
        .map(|t| {
            let (port, stop, acked, to) = (port.clone(), stop.clone(), acked.clone(), to.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let Ok(sock) = TcpStream::connect(("127.0.0.1", port.load(Ordering::Relaxed)))
                    else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let _ = sock.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut c = Client {
                        r: BufReader::new(sock.try_clone().expect("clone")),
                        w: sock,
                    };
                    let attempt = (|| -> Option<String> {
                        if !c.reply().starts_with("220") {
                            return None;
                        }
                        c.w.write_all(b"HELO crash.example\r\n").ok()?;
                        c.reply();
                        c.w.write_all(
                            format!("MAIL FROM:<a@b.example>\r\nRCPT TO:<{to}>\r\nDATA\r\n")
                                .as_bytes(),
                        )
                        .ok()?;
                        for _ in 0..3 {
                            if !c.reply().starts_with(['2', '3']) {
                                return None;
                            }
                        }
                        c.w.write_all(
                            format!("Subject: crash {t} {i}\r\n\r\n{}.\r\n", crash_body(t, i))
                                .as_bytes(),
                        )
                        .ok()?;
                        Some(c.reply())
                    })();
                    if attempt.is_some_and(|r| r.starts_with("250")) {
                        acked.lock().expect("lock").push((t, i));
                    }
                    let _ = c.w.write_all(b"QUIT\r\n");
                }
            })
        })
        .collect();
    let mut kills = 0;
    let mut rounds = 0;
    let mut restarted = false;
    while kills < 20 && rounds < 2000 {
        rounds += 1;
        std::thread::sleep(Duration::from_millis(30));
        if let Some(w) = children(l.child.id()).first() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &w.to_string()])
                .status();
            kills += 1;
        }
        if kills == 10 && !restarted {
            // The listener itself: its workers finish their clients and
            // exit; another listener takes over.
            let _ = l.child.kill();
            let _ = l.child.wait();
            l = Listen::start(&inst, "crash2", &["-c", "8"], ":allow\n", &[]);
            port.store(l.port, Ordering::Relaxed);
            restarted = true;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
    drop(l);
    let acked = acked.lock().expect("lock").clone();
    assert!(kills >= 20, "only {kills} kills");
    assert!(
        acked.len() >= 10,
        "too few messages acknowledged: {}",
        acked.len()
    );
    // Every acknowledged message is in the queue, whole.
    let q = inst.queue();
    let scan = q.scan().expect("scan");
    assert!(scan.damaged.is_empty(), "damaged: {:?}", scan.damaged);
    let mut present = std::collections::HashSet::new();
    for m in &scan.messages {
        let stored = q.read_message(m.id).expect("read");
        let text = String::from_utf8_lossy(tern_tests::strip_received(&stored).1).to_string();
        let first = text
            .lines()
            .find(|l| l.starts_with("Subject: crash "))
            .expect("subject");
        let mut it = first["Subject: crash ".len()..].split(' ');
        let t: usize = it.next().and_then(|x| x.parse().ok()).expect("t");
        let i: usize = it.next().and_then(|x| x.parse().ok()).expect("i");
        let body = text
            .split_once("\n\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        assert_eq!(
            body,
            crash_body(t, i).replace("\r\n", "\n"),
            "message {t} {i} is not whole"
        );
        present.insert((t, i));
    }
    for a in &acked {
        assert!(present.contains(a), "acknowledged message {a:?} was lost");
    }
    eprintln!(
        "pool crash test: {kills} worker kills, 1 listener kill, {} acknowledged, {} queued",
        acked.len(),
        present.len()
    );
}
