//! `tern-smtpd`: Tern's SMTP server for one connection.
//!
//! It speaks SMTP on fd 0 (input) and fd 1 (output), which are a socket
//! (tcpserver, inetd, systemd `Accept=yes`, tern-listen) or pipes
//! (`sendmail -bs`, tests), and puts each accepted message into the queue
//! through `tern-queue` (or `$QMAILQUEUE`), streaming it while it is read.
//! Log lines (key=value) go to stderr; message content is never logged.
//!
//! The protocol itself (command parsing, DATA decoding, the session and
//! its tarpit) is the sans-I/O crate tern-smtp; this program adds the
//! file descriptors with deadlines, the control files, the environment,
//! the `Received:` line and the queue.
//!
//! Security posture: runs as the unprivileged SMTP user (or the instance
//! user); parses untrusted network input only through tern-smtp's bounded
//! parsers; never does DNS; holds at most one input buffer (16 KiB) and
//! one output chunk of a message in memory. `TERN_TARPIT_MS` is honoured
//! only when the process is not running with elevated privileges.
//!
//! Reads: `$TERN_HOME/control/{me,smtpgreeting,rcpthosts,morercpthosts,
//! databytes,timeoutsmtpd,badmailfrom,maxrcpt,rcptcheck,localiphost,locals,
//! virtualdomains,percenthack,envnoathost,servercert.pem,checkpassword,
//! authplainloopback,submissionsenders,authconcurrency,authfailures,
//! authwindow}`,
//! `$TERN_HOME/users/assign`,
//! and writes `$TERN_HOME/auth/` (the AUTH throttle, see [`throttle`]),
//! and `.qmail` files in local users' homes (rcptcheck). Runs:
//! `$TERN_HOME/bin/tern-queue` or `$QMAILQUEUE`, and the checkpassword
//! program for AUTH.
//!
//! TLS (rustls, TLS 1.2 and 1.3): STARTTLS is offered when
//! `control/servercert.pem` (chain and key) is readable; with `SMTPS` set
//! in the environment the handshake comes first, before the greeting
//! (implicit TLS, port 465). See [`tls`].
//!
//! SMTP AUTH (PLAIN, LOGIN) is offered over TLS when
//! `control/checkpassword` names a checkpassword program (see [`auth`]);
//! with `SUBMISSION` set, AUTH is required before MAIL, the sender must be
//! the user's and the header is completed (see [`complete`]).
//!
//! Exit codes: see [`exit::Exit`] and tern-smtpd(8).
#![forbid(unsafe_code)]

mod auth;
mod authcheck;
mod checks;
mod chunks;
mod complete;
mod conn;
mod exit;
mod serve;
mod throttle;
mod tls;
mod vars;
mod worker;

use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tern_control::{Assign, Control, Home};
use tern_log::Event;
use tern_sched::Rewriter;
use tern_smtp::{AuthOffer, Policy, Reply};

use crate::checks::{FileChecks, LocalCheck};
use crate::conn::Conn;
use crate::exit::Exit;
use crate::vars::Vars;

/// Program name for logs.
pub(crate) const PROG: &str = "tern-smtpd";

const USAGE: &str = "usage: tern-smtpd
Speaks SMTP on fd 0/1 for one connection and queues accepted messages.
Run by tcpserver, inetd, systemd (Accept=yes), tern-listen or sendmail -bs.
Environment: TERN_HOME, TCPREMOTEIP, TCPREMOTEHOST, TCPREMOTEINFO, TCPLOCALIP,
TCPLOCALHOST, TCPLOCALPORT, RELAYCLIENT, DATABYTES, QMAILQUEUE,
SMTPS (set and not empty: implicit TLS, the handshake before the greeting),
SUBMISSION (set and not empty: submission mode, AUTH required before MAIL).
SMTP AUTH is offered over TLS when control/checkpassword names a checker.
STARTTLS is offered when control/servercert.pem (chain and key) is readable.
See tern-smtpd(8).
";

/// The connection's endpoints, from the environment or the socket.
pub(crate) struct Peer {
    pub(crate) remote_ip: Vec<u8>,
    pub(crate) remote_host: Vec<u8>,
    pub(crate) remote_info: Vec<u8>,
    pub(crate) local_ip: Vec<u8>,
    pub(crate) local_port: Vec<u8>,
}

/// Everything the session loop needs.
pub(crate) struct Setup {
    pub(crate) home: Home,
    pub(crate) me: String,
    pub(crate) policy: Policy,
    pub(crate) checks: FileChecks,
    pub(crate) timeout: Duration,
    pub(crate) peer: Peer,
    /// The TLS configuration, when `control/servercert.pem` is usable.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// `SMTPS`: the handshake before the greeting.
    pub(crate) implicit_tls: bool,
    /// The checkpassword program and its arguments (empty: no AUTH).
    pub(crate) checkpassword: Vec<String>,
    /// The host-wide AUTH throttle (`TERN_HOME/auth/`).
    pub(crate) throttle: throttle::Throttle,
    /// The connection's variables.
    pub(crate) vars: Vars,
    /// Inbound authentication checks (`control/authcheck`).
    pub(crate) authcheck: Option<authcheck::AuthCheck>,
}

/// TCP* variables, else the socket on fd 0, else "unknown".
fn peer(vars: &Vars) -> Peer {
    let env_bytes = |name: &str| vars.bytes(name);
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    let sock = |local: bool| -> Option<std::net::SocketAddr> {
        let any = if local {
            rustix::net::getsockname(fd).ok()?
        } else {
            rustix::net::getpeername(fd).ok()??
        };
        let mut a = std::net::SocketAddr::try_from(any).ok()?;
        // A dual-stack [::] socket (systemd ListenStream=25) gives IPv4
        // clients as ::ffff:a.b.c.d: record them as the IPv4 they are.
        a.set_ip(a.ip().to_canonical());
        Some(a)
    };
    let remote_ip = env_bytes("TCPREMOTEIP")
        .or_else(|| sock(false).map(|a| a.ip().to_string().into_bytes()))
        .unwrap_or_else(|| b"unknown".to_vec());
    let (local_ip, local_port) = match (env_bytes("TCPLOCALIP"), env_bytes("TCPLOCALPORT")) {
        (Some(ip), port) => (ip, port.unwrap_or_default()),
        (None, port) => match sock(true) {
            Some(a) => (
                a.ip().to_string().into_bytes(),
                port.unwrap_or_else(|| a.port().to_string().into_bytes()),
            ),
            None => (b"unknown".to_vec(), port.unwrap_or_default()),
        },
    };
    Peer {
        remote_ip,
        remote_host: env_bytes("TCPREMOTEHOST").unwrap_or_default(),
        remote_info: env_bytes("TCPREMOTEINFO").unwrap_or_default(),
        local_ip,
        local_port,
    }
}

/// Refuses to start: the 421 reply (best effort) and the log line.
fn refuse_start(me: &str, event: &str, reason: &str) -> Exit {
    Event::new(PROG, event).field("reason", reason).emit();
    let mut conn = Conn::new(Duration::from_secs(30));
    let r = Reply::plain(421, vec![format!("{me} service unavailable (#4.3.0)")]);
    conn.send(&r.to_bytes());
    let _ = conn.flush();
    Exit::Trouble
}

fn setup(vars: Vars) -> Result<Setup, Exit> {
    let env_number = |name: &str| vars.number(name);
    let trouble =
        |me: &str, e: &dyn std::fmt::Display| refuse_start(me, "startup_failed", &e.to_string());
    let home = Home::from_env().map_err(|e| trouble("", &e))?;
    let control = Control::new(&home);
    let me = control.me().map_err(|e| trouble("", &e))?.to_string();
    // Network input is never parsed as root: a system instance's front
    // runs as ternd (tcpserver -u/-g, tern-listen -u/-g, systemd User=).
    if tern_sys::effective_uid() == 0 {
        if !home.is_single_user() {
            return Err(refuse_start(
                &me,
                "refused_to_start",
                "running as root: start tern-smtpd as ternd (tern-listen -u UID -g GID, \
                 tcpserver -u UID -g GID, or systemd User=ternd)",
            ));
        }
        Event::new(PROG, "warning")
            .field(
                "reason",
                "running as root in a single-user instance: network input is parsed as root",
            )
            .emit();
    }
    if !control.dir().join("rcpthosts").exists() {
        return Err(refuse_start(
            &me,
            "refused_to_start",
            "control/rcpthosts missing: refusing to run as an open relay",
        ));
    }
    let c = |e: tern_control::Error| trouble(&me, &e);
    let mut policy = Policy::new(&me);
    policy.greeting = control.smtpgreeting().map_err(c)?;
    policy.databytes = match env_number("DATABYTES").map_err(|e| trouble(&me, &e))? {
        Some(n) => n,
        None => control.databytes().map_err(c)?,
    };
    policy.relayclient = vars
        .get("RELAYCLIENT")
        .map(|v| v.to_string_lossy().into_owned());
    policy.max_recipients = usize::try_from(control.maxrcpt().map_err(c)?).unwrap_or(usize::MAX);
    if !tern_sys::secure::at_secure()
        && let Some(ms) = env_number("TERN_TARPIT_MS").map_err(|e| trouble(&me, &e))?
    {
        policy.tarpit_base_ms = ms;
    }
    let local = if control.rcptcheck().map_err(c)? == 1 {
        let rewriter = Rewriter {
            locals: control.locals().map_err(c)?,
            virtualdomains: control.virtualdomains().map_err(c)?,
            percenthack: control.percenthack().map_err(c)?,
            envnoathost: control.envnoathost().map_err(c)?.to_string(),
        };
        let assign = Assign::load(&home.assign_file()).map_err(c)?;
        let uid_range = (
            control.localuidmin().map_err(c)?,
            control.localuidmax().map_err(c)?,
        );
        Some(LocalCheck::new(rewriter, assign, &home, uid_range))
    } else {
        None
    };
    let checks = FileChecks {
        rcpthosts: control.rcpthosts().map_err(c)?,
        morercpthosts: control.morercpthosts().map_err(c)?,
        badmailfrom: control.badmailfrom().map_err(c)?,
        local,
    };
    let timeout = Duration::from_secs(control.timeoutsmtpd().map_err(c)?);
    let implicit_tls = vars.flag("SMTPS");
    let tls = match tls::load(control.dir()) {
        Ok(t) => t,
        Err(e) => {
            // A broken certificate must not stop plain SMTP: no STARTTLS.
            Event::new(PROG, "tls_unavailable")
                .field("reason", e.to_string().as_str())
                .emit();
            None
        }
    };
    if implicit_tls && tls.is_none() {
        return Err(refuse_start(
            &me,
            "refused_to_start",
            "SMTPS is set but control/servercert.pem is missing or unusable",
        ));
    }
    policy.starttls = tls.is_some() && !implicit_tls;
    let peer = peer(&vars);
    let checkpassword: Vec<String> = control
        .checkpassword()
        .map_err(c)?
        .first()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    policy.auth = match checkpassword.first() {
        None => AuthOffer::Never,
        Some(p) if !p.starts_with('/') => {
            Event::new(PROG, "auth_unavailable")
                .field(
                    "reason",
                    "control/checkpassword: the program must be an absolute path",
                )
                .emit();
            AuthOffer::Never
        }
        Some(_) => {
            let loopback = std::str::from_utf8(&peer.remote_ip)
                .ok()
                .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
                .is_some_and(|ip| ip.is_loopback());
            if loopback && control.authplainloopback().map_err(c)? == 1 {
                AuthOffer::Always
            } else {
                AuthOffer::TlsOnly
            }
        }
    };
    if !tern_sys::secure::at_secure()
        && let Some(ms) = env_number("TERN_AUTH_DELAY_MS").map_err(|e| trouble(&me, &e))?
    {
        policy.auth_delay_ms = ms;
    }
    policy.submission = vars.flag("SUBMISSION");
    if policy.submission && policy.auth == AuthOffer::Never {
        // Every MAIL will get 530: say why once per connection.
        Event::new(PROG, "auth_unavailable")
            .field(
                "reason",
                "SUBMISSION is set but control/checkpassword is not: nobody can send",
            )
            .emit();
    }
    policy.submission_senders = control.submissionsenders().map_err(c)? == 1;
    let limit = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    let throttle = throttle::Throttle::new(
        home.auth_dir(),
        throttle::Limits {
            concurrency: limit(control.authconcurrency().map_err(c)?),
            failures: limit(control.authfailures().map_err(c)?),
            window: control.authwindow().map_err(c)?,
        },
    );
    if let Ok(ip) = std::str::from_utf8(&peer.local_ip)
        && let Ok(ip) = ip.parse::<std::net::IpAddr>()
    {
        let literal = match ip {
            std::net::IpAddr::V4(v4) => format!("[{v4}]"),
            std::net::IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
        };
        policy.local_literal = Some((literal, control.localiphost().map_err(c)?.to_string()));
    }
    let authcheck = authcheck::AuthCheck::load(&control, &home).map_err(c)?;
    Ok(Setup {
        home,
        me,
        policy,
        checks,
        timeout,
        peer,
        tls,
        implicit_tls,
        checkpassword,
        throttle,
        vars,
        authcheck,
    })
}

fn main() -> ExitCode {
    tern_log::install_panic_hook(PROG, 111);
    if let Some(a) = std::env::args_os().nth(1) {
        if a == "--worker" && std::env::args_os().nth(2).is_none() {
            return worker::run();
        }
        if a == "--help" || a == "-h" {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        eprint!("{USAGE}");
        Event::new(PROG, "usage_error")
            .field("argument", a.as_bytes())
            .emit();
        return Exit::Usage.into();
    }
    match setup(Vars::process()) {
        Ok(s) => {
            let client = serve::queue_client(&s);
            match serve::run(s, &client, None) {
                serve::Outcome::Closed(e) => e.into(),
                // Only a worker parks.
                serve::Outcome::Parked(_) => Exit::Trouble.into(),
            }
        }
        Err(e) => e.into(),
    }
}
