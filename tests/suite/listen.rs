//! tern-listen, the tcpserver-compatible listener, on loopback (127.0.0.1
//! and ::1) with small shell programs: the environment it sets, rules
//! (allow, deny, variables, SIGHUP reload), the -c and -C limits, reaping,
//! SIGTERM, and the usage / rules-file errors.

use std::io::Read;
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tern_tests::{bin, scratch_dir, skip, wait_until};

/// A running tern-listen; killed when dropped.
struct Listen {
    child: Option<Child>,
    log: PathBuf,
    port: u16,
}

impl Listen {
    fn start(dir: &Path, opts: &[&str], host: &str, program: &[&str]) -> Listen {
        Listen::start_env(dir, opts, host, program, &[])
    }

    fn start_env(
        dir: &Path,
        opts: &[&str],
        host: &str,
        program: &[&str],
        env: &[(&str, &str)],
    ) -> Listen {
        let log = dir.join(format!("listen-{}.log", opts.len() + program.len()));
        let log = unique(log);
        let f = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(bin("tern-listen"));
        cmd.args(opts)
            .arg(host)
            .arg("0")
            .args(program)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(f));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start tern-listen");
        let mut port = 0;
        assert!(
            wait_until(10, || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if let Some(p) = text
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("local_port="))
                {
                    port = p.parse().expect("port number");
                    true
                } else {
                    false
                }
            }),
            "tern-listen did not log its port: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Listen {
            child: Some(child),
            log,
            port,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
    }

    /// Count of `event=NAME` lines.
    fn events(&self, name: &str) -> usize {
        let want = format!("event={name} ");
        self.log().lines().filter(|l| l.contains(&want)).count()
    }
}

impl Drop for Listen {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn unique(p: PathBuf) -> PathBuf {
    let mut n = 0;
    loop {
        let cand = p.with_extension(format!("{n}.log"));
        if !cand.exists() {
            return cand;
        }
        n += 1;
    }
}

fn connect(host: &str, port: u16) -> TcpStream {
    let s = TcpStream::connect((host, port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// Everything the program writes until it closes the connection.
fn read_all(host: &str, port: u16) -> String {
    let mut s = connect(host, port);
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read until close");
    out
}

/// The `NAME=value` lines of `env` output.
fn env_of(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
    env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

const ENV_PROGRAM: &[&str] = &["/bin/sh", "-c", "env; echo END"];

/// Whether ::1 can be bound here.
fn have_ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

fn check_environment(host: &str, want_ip: &str) {
    let dir = scratch_dir("listen-env");
    let l = Listen::start_env(
        &dir,
        &["-l", "mx.test"],
        host,
        ENV_PROGRAM,
        &[
            ("TCPREMOTEHOST", "forged.example"),
            ("TCPREMOTEINFO", "forged"),
            ("RELAYCLIENT", "leaked"),
            ("KEEP_ME", "yes"),
        ],
    );
    let mut s = connect(want_ip, l.port);
    let client_port = s.local_addr().expect("local addr").port();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert!(out.ends_with("END\n"), "{out}");
    let env = env_of(&out);
    assert_eq!(get(&env, "PROTO"), Some("TCP"));
    assert_eq!(get(&env, "TCPREMOTEIP"), Some(want_ip));
    assert_eq!(
        get(&env, "TCPREMOTEPORT"),
        Some(client_port.to_string().as_str())
    );
    assert_eq!(get(&env, "TCPLOCALIP"), Some(want_ip));
    assert_eq!(get(&env, "TCPLOCALPORT"), Some(l.port.to_string().as_str()));
    assert_eq!(get(&env, "TCPLOCALHOST"), Some("mx.test"));
    // No DNS, no ident, and never a relay grant from the listener's own
    // environment; the rest of the environment is passed on.
    assert_eq!(get(&env, "TCPREMOTEHOST"), None);
    assert_eq!(get(&env, "TCPREMOTEINFO"), None);
    assert_eq!(get(&env, "RELAYCLIENT"), None);
    assert_eq!(get(&env, "KEEP_ME"), Some("yes"));
    assert!(wait_until(10, || l.events("end") == 1), "{}", l.log());
    let log = l.log();
    assert!(
        log.contains(&format!("event=start remote_ip={want_ip} ")),
        "{log}"
    );
    assert!(log.contains(" status=0 "), "{log}");
}

#[test]
fn environment_ipv4() {
    check_environment("127.0.0.1", "127.0.0.1");
}

#[test]
fn environment_ipv6() {
    if !have_ipv6_loopback() {
        skip(
            "listen::environment_ipv6",
            "cannot bind ::1 (no IPv6 loopback)",
        );
        return;
    }
    check_environment("::1", "::1");
}

#[test]
fn without_l_no_tcplocalhost() {
    let dir = scratch_dir("listen-nol");
    let l = Listen::start(&dir, &[], "127.0.0.1", ENV_PROGRAM);
    let env = env_of(&read_all("127.0.0.1", l.port));
    assert_eq!(get(&env, "TCPLOCALHOST"), None);
    assert_eq!(get(&env, "PROTO"), Some("TCP"));
}

#[test]
fn rules_allow_deny_variables_and_reload() {
    let dir = scratch_dir("listen-rules");
    let rules = dir.join("rules");
    std::fs::write(
        &rules,
        "# test rules\n\
         ::1:allow,RELAYCLIENT=\"\",SIX=\"6\"\n\
         127.0.0.1:allow,RELAYCLIENT=\"\",NOTE=\"a b:c\"\n\
         :deny\n",
    )
    .expect("rules");
    let l = Listen::start(
        &dir,
        &["-v", "-x", rules.to_str().expect("utf-8")],
        "127.0.0.1",
        ENV_PROGRAM,
    );
    let env = env_of(&read_all("127.0.0.1", l.port));
    assert_eq!(get(&env, "RELAYCLIENT"), Some(""));
    assert_eq!(get(&env, "NOTE"), Some("a b:c"));
    assert_eq!(get(&env, "SIX"), None);
    assert!(l.log().contains("event=allow remote_ip=127.0.0.1 rule=3"));

    // Deny first: the client is closed at once, no program runs.
    std::fs::write(&rules, "127.0.0.0/8:deny\n:allow,RELAYCLIENT=\"\"\n").expect("rules");
    l.signal("-HUP");
    assert!(
        wait_until(10, || l.events("rules_reloaded") == 1),
        "{}",
        l.log()
    );
    let started = l.events("start");
    assert_eq!(read_all("127.0.0.1", l.port), "");
    assert!(wait_until(10, || l.events("deny") == 1), "{}", l.log());
    assert!(l.log().contains("event=deny remote_ip=127.0.0.1 "));
    assert_eq!(
        l.events("start"),
        started,
        "a denied client started a program"
    );

    // A bad file on reload keeps the previous rules.
    std::fs::write(&rules, "localhost:allow\n").expect("rules");
    l.signal("-HUP");
    assert!(
        wait_until(10, || l.log().contains("keeping the previous rules")),
        "{}",
        l.log()
    );
    assert_eq!(read_all("127.0.0.1", l.port), "");

    // Without a rule granting it, no RELAYCLIENT.
    std::fs::write(&rules, "127.0.0.1:allow\n").expect("rules");
    l.signal("-HUP");
    assert!(wait_until(10, || l.events("rules_reloaded") == 2));
    let env = env_of(&read_all("127.0.0.1", l.port));
    assert_eq!(get(&env, "PROTO"), Some("TCP"));
    assert_eq!(get(&env, "RELAYCLIENT"), None);
}

#[test]
fn rules_ipv6() {
    if !have_ipv6_loopback() {
        skip("listen::rules_ipv6", "cannot bind ::1 (no IPv6 loopback)");
        return;
    }
    let dir = scratch_dir("listen-rules6");
    let rules = dir.join("rules");
    std::fs::write(
        &rules,
        "::1/128:allow,RELAYCLIENT=\"\",SIX=\"6\"\n127.0.0.1:deny\n",
    )
    .expect("rules");
    let l = Listen::start(
        &dir,
        &["-x", rules.to_str().expect("utf-8")],
        "::1",
        ENV_PROGRAM,
    );
    let env = env_of(&read_all("::1", l.port));
    assert_eq!(get(&env, "TCPREMOTEIP"), Some("::1"));
    assert_eq!(get(&env, "SIX"), Some("6"));
    assert_eq!(get(&env, "RELAYCLIENT"), Some(""));
    std::fs::write(&rules, "::/0:deny\n").expect("rules");
    l.signal("-HUP");
    assert!(wait_until(10, || l.events("rules_reloaded") == 1));
    assert_eq!(read_all("::1", l.port), "");
    assert!(wait_until(10, || l.events("deny") == 1), "{}", l.log());
}

/// Reads one line ("hi\n") or returns None on EOF or timeout.
fn greeting(s: &mut TcpStream, within: Duration) -> Option<String> {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => None,
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

/// `echo hi`, then wait for the client to close.
const HOLD_PROGRAM: &[&str] = &["/bin/sh", "-c", "echo hi; read x; exit 3"];

#[test]
fn concurrency_limit_makes_clients_wait() {
    let dir = scratch_dir("listen-c");
    let l = Listen::start(&dir, &["-c", "2"], "127.0.0.1", HOLD_PROGRAM);
    let mut a = connect("127.0.0.1", l.port);
    let mut b = connect("127.0.0.1", l.port);
    assert_eq!(
        greeting(&mut a, Duration::from_secs(10)).as_deref(),
        Some("hi\n")
    );
    assert_eq!(
        greeting(&mut b, Duration::from_secs(10)).as_deref(),
        Some("hi\n")
    );
    // The third waits in the backlog: connected, but nothing runs for it.
    let mut c = connect("127.0.0.1", l.port);
    assert_eq!(greeting(&mut c, Duration::from_millis(700)), None);
    assert!(wait_until(10, || l
        .log()
        .contains("event=limit reason=concurrency active=2")));
    // One ends: the third is accepted.
    a.shutdown(Shutdown::Both).expect("shutdown");
    drop(a);
    assert_eq!(
        greeting(&mut c, Duration::from_secs(10)).as_deref(),
        Some("hi\n")
    );
    assert!(
        wait_until(10, || l.log().contains(" status=3 ")),
        "{}",
        l.log()
    );
    drop(b);
    drop(c);
    assert!(wait_until(10, || l.events("end") == 3), "{}", l.log());
}

#[test]
fn per_ip_limit_answers_421_and_closes_extra_connections() {
    let dir = scratch_dir("listen-C");
    let l = Listen::start(&dir, &["-C", "2", "-c", "10"], "127.0.0.1", HOLD_PROGRAM);
    let mut a = connect("127.0.0.1", l.port);
    let mut b = connect("127.0.0.1", l.port);
    assert_eq!(
        greeting(&mut a, Duration::from_secs(10)).as_deref(),
        Some("hi\n")
    );
    assert_eq!(
        greeting(&mut b, Duration::from_secs(10)).as_deref(),
        Some("hi\n")
    );
    let mut c = connect("127.0.0.1", l.port);
    let t = Instant::now();
    // Told why (421, as Postfix's anvil answers) and closed at once.
    let said = greeting(&mut c, Duration::from_secs(10));
    assert!(
        said.as_deref().is_some_and(|g| g.starts_with("421 4.7.0 ")),
        "{said:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(
        wait_until(10, || l
            .log()
            .contains("event=limit reason=per_ip remote_ip=127.0.0.1 active=2")),
        "{}",
        l.log()
    );
    assert_eq!(l.events("start"), 2);
    // Below the limit again, a new client runs.
    drop(a);
    assert!(wait_until(10, || l.events("end") == 1), "{}", l.log());
    let mut d = connect("127.0.0.1", l.port);
    assert_eq!(
        greeting(&mut d, Duration::from_secs(10)).as_deref(),
        Some("hi\n")
    );
}

/// Children of `pid` in state Z.
fn zombies_of(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces; parse after ')'.
        let Some(after) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut f = after.split_whitespace();
        let state = f.next().unwrap_or("");
        let ppid: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == pid && state == "Z" {
            out.push(stat);
        }
    }
    out
}

#[test]
fn children_are_reaped() {
    let dir = scratch_dir("listen-reap");
    let l = Listen::start(&dir, &[], "127.0.0.1", &["/bin/sh", "-c", "echo hi"]);
    for _ in 0..20 {
        assert_eq!(read_all("127.0.0.1", l.port), "hi\n");
    }
    assert!(wait_until(10, || l.events("end") == 20), "{}", l.log());
    // Every end was logged after its waitpid: nothing is left unreaped.
    assert!(wait_until(5, || zombies_of(l.pid()).is_empty()));
    assert_eq!(l.events("start"), 20);
}

#[test]
fn sigterm_stops_accepting_and_exits() {
    let dir = scratch_dir("listen-term");
    let mut l = Listen::start(&dir, &[], "127.0.0.1", &["/bin/sh", "-c", "echo hi"]);
    assert_eq!(read_all("127.0.0.1", l.port), "hi\n");
    l.signal("-TERM");
    let mut child = l.child.take().expect("running");
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{}", l.log());
    assert!(l.log().contains("event=stop "), "{}", l.log());
    assert!(
        TcpStream::connect(("127.0.0.1", l.port)).is_err(),
        "still accepting after SIGTERM"
    );
}

fn run_listen(args: &[&str]) -> (i32, String) {
    let out = Command::new(bin("tern-listen"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tern-listen");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn usage_and_rules_errors() {
    let dir = scratch_dir("listen-usage");
    let prog = ["/bin/true"];
    for (args, want) in [
        (vec![], "missing host"),
        (vec!["127.0.0.1"], "missing port"),
        (vec!["127.0.0.1", "25"], "missing program"),
        (
            vec!["localhost", "25", "/bin/true"],
            "names are not resolved",
        ),
        (vec!["127.0.0.1", "65536", "/bin/true"], "port must be"),
        (vec!["127.0.0.1", "-1", "/bin/true"], "port must be"),
        (
            vec!["-c", "0", "127.0.0.1", "0", "/bin/true"],
            "-c needs a number",
        ),
        (
            vec!["-C", "x", "127.0.0.1", "0", "/bin/true"],
            "-C needs a number",
        ),
        (
            vec!["-Z", "127.0.0.1", "0", "/bin/true"],
            "unknown option -Z",
        ),
        (vec!["-x"], "-x needs a rules file"),
    ] {
        let (code, err) = run_listen(&args);
        assert_eq!(code, 100, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let bad = dir.join("bad-rules");
    std::fs::write(&bad, "127.0.0.1:allow\n10.0.0.1/8:allow\n").expect("rules");
    let (code, err) = run_listen(&[
        "-x",
        bad.to_str().expect("utf-8"),
        "127.0.0.1",
        "0",
        prog[0],
    ]);
    assert_eq!(code, 100, "{err}");
    assert!(err.contains("rules line 2: address has bits set"), "{err}");
    let missing = dir.join("no-such-rules");
    let (code, err) = run_listen(&[
        "-x",
        missing.to_str().expect("utf-8"),
        "127.0.0.1",
        "0",
        prog[0],
    ]);
    assert_eq!(code, 111, "{err}");
    // A port in use is temporary trouble.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port().to_string();
    let (code, err) = run_listen(&["127.0.0.1", &port, prog[0]]);
    assert_eq!(code, 111, "{err}");
    assert!(err.contains("event=alert"), "{err}");
    let (code, _) = run_listen(&["--help"]);
    assert_eq!(code, 0);
}

#[test]
fn missing_program_is_logged_and_the_client_closed() {
    let dir = scratch_dir("listen-noprog");
    let l = Listen::start(&dir, &[], "127.0.0.1", &["/nonexistent/tern-program"]);
    assert_eq!(read_all("127.0.0.1", l.port), "");
    assert!(
        wait_until(10, || l.log().contains("cannot start program")),
        "{}",
        l.log()
    );
    // The listener goes on serving.
    assert_eq!(read_all("127.0.0.1", l.port), "");
    assert!(wait_until(10, || l.events("alert") == 2), "{}", l.log());
    assert_eq!(l.events("start"), 0);
}

#[test]
fn quiet_logs_no_connection_lines() {
    let dir = scratch_dir("listen-quiet");
    let l = Listen::start(&dir, &["-q"], "127.0.0.1", &["/bin/sh", "-c", "echo hi"]);
    assert_eq!(read_all("127.0.0.1", l.port), "hi\n");
    assert_eq!(read_all("127.0.0.1", l.port), "hi\n");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(l.events("start") + l.events("end"), 0, "{}", l.log());
    assert_eq!(l.events("listening"), 1);
}

/// `-u UID -g GID` (tcpserver's flags) and `-U` ($UID, $GID): after
/// binding, tern-listen becomes that uid and gid with no supplementary
/// group, so the programs it starts never run as root. Root only.
#[test]
fn drops_to_uid_and_gid_after_binding() {
    if !tern_tests::is_root() {
        tern_tests::skip(
            "drops_to_uid_and_gid_after_binding",
            "needs root (drops privileges)",
        );
        return;
    }
    let dir = scratch_dir("listen-drop");
    let ids = ["/bin/sh", "-c", "echo $(id -u) $(id -g) $(id -G)"];
    let l = Listen::start(&dir, &["-u", "65533", "-g", "65532"], "127.0.0.1", &ids);
    assert_eq!(read_all("127.0.0.1", l.port), "65533 65532 65532\n");
    let l = Listen::start_env(
        &dir,
        &["-U"],
        "127.0.0.1",
        &ids,
        &[("UID", "65531"), ("GID", "65530")],
    );
    assert_eq!(read_all("127.0.0.1", l.port), "65531 65530 65530\n");
    // Half a drop (a uid but root's gid) is refused, as is uid 0.
    for opts in [&["-u", "65533"][..], &["-u", "0", "-g", "0"][..]] {
        let out = Command::new(bin("tern-listen"))
            .args(opts)
            .args(["127.0.0.1", "0", "/bin/true"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(100), "{opts:?}");
    }
}

/// The same rules file means the same thing to tern-listen and to
/// tcpserver: for each address, `tern-listen -x FILE --check ADDRESS` and
/// ucspi-tcp's `tcprulescheck` on the `tcprules`-compiled file agree on
/// allow or deny and on the variables (most specific rule wins, first of
/// equals, ranges; the issue's `127.:allow,RELAYCLIENT=""` then
/// `127.0.0.5:deny` denies 127.0.0.5).
#[test]
fn rules_mean_what_tcprules_means() {
    if !tern_tests::have_tool("tcprules") || !tern_tests::have_tool("tcprulescheck") {
        tern_tests::skip("rules_mean_what_tcprules_means", "ucspi-tcp not installed");
        return;
    }
    let dir = scratch_dir("listen-tcprules");
    let rules = "127.:allow,RELAYCLIENT=\"\"\n127.0.0.5:deny\n10.1.2.10-12:deny\n\
                 10.:allow,X=\"1\"\n10.1.:deny\n192.168.1.:allow,A=\"a\",B=\"b\"\n\
                 192.168.1.7:allow\n127.:deny\n:allow,DEFAULT=\"yes\"\n";
    let text = dir.join("rules");
    std::fs::write(&text, rules).unwrap();
    let cdb = dir.join("rules.cdb");
    let st = Command::new("sh")
        .arg("-c")
        .arg("tcprules \"$1\" \"$1.tmp\" < \"$2\"")
        .arg("sh")
        .arg(&cdb)
        .arg(&text)
        .status()
        .unwrap();
    assert!(st.success(), "tcprules");
    let addrs = [
        "127.0.0.1",
        "127.0.0.5",
        "127.9.9.9",
        "10.1.2.9",
        "10.1.2.10",
        "10.1.2.12",
        "10.1.2.13",
        "10.1.3.1",
        "10.2.0.1",
        "192.168.1.7",
        "192.168.1.8",
        "192.168.2.1",
        "198.51.100.1",
    ];
    let out = Command::new(bin("tern-listen"))
        .arg("-x")
        .arg(&text)
        .arg("--check")
        .args(addrs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = String::from_utf8_lossy(&out.stdout).into_owned();
    for a in addrs {
        // tcprulescheck: "allow connection"/"deny connection" and
        // "set environment variable K=V" lines.
        let theirs = Command::new("tcprulescheck")
            .arg(&cdb)
            .env("TCPREMOTEIP", a)
            .output()
            .unwrap();
        let theirs = String::from_utf8_lossy(&theirs.stdout).into_owned();
        let mut want: Vec<String> = theirs
            .lines()
            .filter_map(|l| l.strip_prefix("set environment variable "))
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                format!("{k}=\"{v}\"")
            })
            .collect();
        want.sort();
        let verdict = if theirs.contains("deny connection") {
            "deny"
        } else {
            "allow"
        };
        let line = ours
            .lines()
            .find(|l| l.starts_with(&format!("{a}: ")))
            .unwrap_or_else(|| panic!("no verdict for {a}: {ours}"));
        let mut got: Vec<String> = line
            .split_whitespace()
            .filter(|w| w.contains('='))
            .map(str::to_string)
            .collect();
        got.sort();
        assert!(
            line.starts_with(&format!("{a}: {verdict}")),
            "{a}: tcprulescheck says {verdict}:\n{theirs}\ntern-listen: {line}"
        );
        assert_eq!(
            got, want,
            "{a}: variables differ:\n{theirs}\ntern-listen: {line}"
        );
    }
    // A rule that can never apply is flagged; =host rules are refused.
    assert!(ours.contains("NEVER APPLIES"), "{ours}");
    std::fs::write(&text, "=mail.example.org:allow\n").unwrap();
    let out = Command::new(bin("tern-listen"))
        .arg("-x")
        .arg(&text)
        .arg("--check")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("never makes"));
}
