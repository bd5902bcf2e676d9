//! ternctl — set up, check and inspect a Tern instance.
//!
//! NAME
//!   ternctl - the operator's tool for a Tern instance
//!
//! SYNOPSIS
//!   ternctl [--home DIR] init DIR [--mailbox NAME]... [--split N] [--bin DIR]
//!   ternctl [--home DIR] check
//!   ternctl [--home DIR] queue [--json] [--count]
//!   ternctl [--home DIR] show QID [--body] [--json]
//!   ternctl [--home DIR] delete|bounce|hold|release QID... | --all | --from ADDR
//!           | --to ADDR | --domain DOMAIN | --older-than DURATION [--yes] [--dry-run]
//!   ternctl [--home DIR] stats
//!   ternctl [--home DIR] repair
//!   ternctl [--home DIR] flush
//!   ternctl [--home DIR] forget [IP...]
//!   ternctl [--home DIR] passwd LOGIN
//!   ternctl report [--json] [--top N] [FILE...]
//!   ternctl [--home DIR] install --bin-dir DIR [--send-only] [--sendmail-links]
//!           [--system-root DIR] [--me HOST] [--split N]
//!   ternctl [--home DIR] uninstall [--system-root DIR] [--purge --yes-really]
//!
//! DESCRIPTION
//!   `init` creates (or completes) a single-user instance; `check` explains
//!   the effective configuration and rejects malformed files; `queue` lists
//!   the queue; `show` one message; `delete` removes messages without a
//!   bounce, `bounce` fails them now with the usual bounce, `hold` stops
//!   their deliveries until `release` (through the running tern-send's
//!   control socket, or under its lock when it does not run); `stats`
//!   prints tern-send's metrics; `repair` removes what a crashed writer left in the queue;
//!   `flush` asks the running manager to retry everything now; `forget`
//!   clears tern-remote's memory of unreachable hosts (qmail-tcpok);
//!   `passwd` reads a password from stdin and stores its argon2id hash for
//!   LOGIN in control/passwords (mode 0640), for tern-checkpassword.
//!   `report` summarises Tern's logs (FILEs, gzip or not, else stdin):
//!   messages received, delivered, deferred, bounced and rejected, per hour,
//!   top senders, recipients and domains, delays, TLS (docs/logging.md).
//!   `install` makes (or upgrades) a root install of a system instance as
//!   conf/tern-files says: users, groups, owners, modes, the setuid
//!   tern-queue (scripts/install runs it); `uninstall` removes the programs
//!   and links, and the queue only with `--purge --yes-really`.
//!   The instance is `--home`, else `TERN_HOME`, else the compiled-in home.
//!
//! SECURITY
//!   Runs as the invoking user, never setuid. Reads control files and the
//!   queue; writes only under the DIR given to `init` and (for `repair`) in
//!   the queue. `install` and `uninstall` need root: they create users and
//!   groups (useradd, groupadd), and set owners and modes through
//!   descriptors opened without following symbolic links; outside the home
//!   they touch only the sendmail links, /etc/cron.d/tern and the Tern
//!   systemd units. Addresses from the queue are untrusted: control characters
//!   are escaped before they reach the terminal.
//!
//! EXIT CODES
//!   0 success; 1 `check` found errors, or a usage error; 111 temporary
//!   trouble (cannot read the queue, cannot create a file, ...).
//!
//! FILES
//!   control/*, users/assign, queue/, alias/, mail/, bin/ under the instance.
//!
//! SEE ALSO
//!   docs/man/ternctl.8.md, docs/control.md, docs/queue.md
#![forbid(unsafe_code)]

mod dkim;
mod explain;
mod init;
mod install;
mod manifest;
mod ops;
mod progress;
mod report;
mod show;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tern_control::Home;
use tern_ipc::control::ControlOp;

/// ternctl's exit codes (see docs/man/ternctl.8.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// `check` found a malformed file, or the command line is wrong.
    Failed = 1,
    /// Temporary trouble: a file or the queue could not be read or written.
    Temporary = 111,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// A failure that is the caller's fault (bad argument), not the system's.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Maps an error to an exit code: usage errors and malformed configuration
/// (that needs a person) are 1; everything else is temporary (111).
fn exit_code(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if cause.downcast_ref::<Usage>().is_some() {
            return Exit::Failed;
        }
        if let Some(e) = cause.downcast_ref::<tern_control::Error>() {
            return if e.is_io() {
                Exit::Temporary
            } else {
                Exit::Failed
            };
        }
    }
    Exit::Temporary
}

#[derive(Parser, Debug)]
#[command(
    name = "ternctl",
    version,
    about = "Set up, check and inspect a Tern instance"
)]
struct Cli {
    /// The instance directory (default: $TERN_HOME, else the compiled-in home).
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create or complete a single-user instance in DIR.
    Init {
        /// Directory of the instance (created if missing).
        dir: PathBuf,
        /// A mailbox to create (repeatable); postmaster is always created.
        #[arg(long = "mailbox", value_name = "NAME")]
        mailboxes: Vec<String>,
        /// Hashed subdirectories of a new queue (default 23).
        #[arg(long, value_name = "N")]
        split: Option<u32>,
        /// Directory of the Tern programs that bin/ links to
        /// (default: the directory holding this ternctl).
        #[arg(long, value_name = "DIR")]
        bin: Option<PathBuf>,
    },
    /// Explain the effective configuration; exit 1 if any file is malformed.
    Check,
    /// Say what Tern would do with mail for ADDRESS, and why (file and
    /// line of each decision).
    Explain {
        /// The recipient address.
        address: String,
        /// Explain the RCPT decision for an SMTP client at this address.
        #[arg(long, value_name = "IP")]
        client: Option<std::net::IpAddr>,
        /// The tern-listen rules that decide RELAYCLIENT for --client.
        #[arg(long, value_name = "FILE")]
        rules: Option<PathBuf>,
        /// The client authenticated (SMTP AUTH): it may relay.
        #[arg(long)]
        auth: bool,
        /// The message's From: address (which DKIM keys would sign).
        #[arg(long, value_name = "ADDRESS")]
        from: Option<String>,
        /// Look the MX records up (DNS through control/dnsservers).
        #[arg(long)]
        resolve: bool,
    },
    /// DKIM signing keys: make one, list them with their DNS records.
    Dkim {
        #[command(subcommand)]
        action: DkimAction,
    },
    /// List the queued messages, oldest first.
    Queue {
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
        /// Print only the number of messages.
        #[arg(long)]
        count: bool,
    },
    /// Show one message: envelope, each recipient's state, last and next
    /// attempt, last error, and its header (all of it with --body).
    Show {
        /// The message id (as `ternctl queue` lists it).
        id: u64,
        /// The whole message, not only its header.
        #[arg(long)]
        body: bool,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove messages from the queue without a bounce.
    Delete(OpArgs),
    /// Fail every pending recipient of messages now, with the usual bounce.
    Bounce(OpArgs),
    /// Hold messages: no delivery is tried until they are released.
    Hold(OpArgs),
    /// Release held messages.
    Release(OpArgs),
    /// Print tern-send's metrics (its metrics file) for people.
    Stats,
    /// Remove what crashed writers left in the queue.
    Repair,
    /// Ask the running queue manager to retry every queued message now.
    Flush,
    /// Forget what tern-remote remembers about remote hosts (connection
    /// back-offs, failed STARTTLS handshakes): every host, or the given
    /// addresses (qmail's qmail-tcpok).
    Forget {
        /// IP addresses (none: every host).
        #[arg(value_name = "IP")]
        addresses: Vec<String>,
    },
    /// Set LOGIN's password in control/passwords (read from stdin, first
    /// line) for tern-checkpassword.
    Passwd {
        /// The login (1 to 255 bytes, no ':', blanks or control characters).
        login: String,
    },
    /// Summarise Tern's logs: received, delivered, deferred, bounced,
    /// rejected, per hour, top senders/recipients/domains, delays, TLS.
    Report {
        /// Log files (gzip-compressed or not); none or `-`: stdin.
        #[arg(value_name = "FILE")]
        files: Vec<PathBuf>,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
        /// Items in each top list.
        #[arg(long, value_name = "N", default_value_t = 10)]
        top: usize,
    },
    /// Install or upgrade a system instance (root): users, groups, owners
    /// and modes of conf/tern-files, the programs, control/ (scripts/install).
    Install {
        /// Directory of the built programs to install.
        #[arg(long, value_name = "DIR")]
        bin_dir: PathBuf,
        /// No SMTP service: install the cron queue runner instead.
        #[arg(long)]
        send_only: bool,
        /// Link /usr/sbin/sendmail, /usr/lib/sendmail and /usr/bin/mailq to
        /// Tern's sendmail, saving what was there as NAME.tern-saved.
        #[arg(long)]
        sendmail_links: bool,
        /// Prefix of the system paths outside the home (sendmail links,
        /// /etc/cron.d, /etc/systemd/system).
        #[arg(long, value_name = "DIR", default_value = "/")]
        system_root: PathBuf,
        /// control/me of a new instance (default: the host name).
        #[arg(long, value_name = "HOST")]
        me: Option<String>,
        /// Hashed subdirectories of a new queue (default 23).
        #[arg(long, value_name = "N")]
        split: Option<u32>,
    },
    /// Remove an installed system instance's programs and links (root); the
    /// queue and control files stay unless --purge --yes-really.
    Uninstall {
        /// Prefix of the system paths outside the home.
        #[arg(long, value_name = "DIR", default_value = "/")]
        system_root: PathBuf,
        /// Also remove the home: queue, control files, alias/ (needs
        /// --yes-really too).
        #[arg(long)]
        purge: bool,
        /// Confirms --purge.
        #[arg(long)]
        yes_really: bool,
    },
}

#[derive(Subcommand, Debug)]
enum DkimAction {
    /// Make a new key for DOMAIN and print the TXT record to publish.
    New {
        /// The signing domain (mail whose From: is it or a subdomain).
        domain: String,
        /// The selector (default: ALGORITHM-YYYYMM).
        #[arg(long, value_name = "NAME")]
        selector: Option<String>,
        /// The key type.
        #[arg(long, value_enum, default_value = "rsa")]
        algorithm: dkim::AlgorithmArg,
    },
    /// List the keys and the TXT record each needs.
    Show,
}

/// Which messages a queue operation touches.
#[derive(clap::Args, Debug)]
struct OpArgs {
    /// Message ids (as `ternctl queue` lists them).
    #[arg(value_name = "QID")]
    ids: Vec<u64>,
    /// Every message whose envelope sender is ADDR.
    #[arg(long, value_name = "ADDR")]
    from: Option<String>,
    /// Every message with a recipient ADDR.
    #[arg(long, value_name = "ADDR")]
    to: Option<String>,
    /// Every message with a recipient at DOMAIN.
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
    /// Every message older than DURATION (30s, 10m, 2h, 3d, 1w).
    #[arg(long, value_name = "DURATION", value_parser = ops::parse_duration)]
    older_than: Option<i64>,
    /// Every message in the queue.
    #[arg(long)]
    all: bool,
    /// No confirmation for a selection.
    #[arg(long, short = 'y')]
    yes: bool,
    /// List what would be touched; change nothing.
    #[arg(long)]
    dry_run: bool,
}

fn queue_op(
    cli_home: Option<PathBuf>,
    op: tern_ipc::control::ControlOp,
    a: OpArgs,
) -> anyhow::Result<Exit> {
    // The journal, the lock and the control socket are terns': root works
    // on them as terns (nothing planted below queue/ is touched as root).
    let home = home(cli_home)?;
    become_owner(&home, "terns")?;
    let sel = ops::Selection {
        ids: a.ids,
        from: a.from,
        to: a.to,
        domain: a.domain,
        older_than: a.older_than,
        all: a.all,
    };
    Ok(if ops::run(&home, op, &sel, a.dry_run, a.yes)? {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

fn home(cli_home: Option<PathBuf>) -> anyhow::Result<Home> {
    match cli_home {
        Some(dir) => {
            let dir = std::path::absolute(&dir)
                .map_err(|e| Usage(format!("--home {}: {e}", dir.display())))?;
            Ok(Home::new(dir))
        }
        None => Home::from_env().map_err(|e| Usage(e.to_string()).into()),
    }
}

fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Init {
            dir,
            mailboxes,
            split,
            bin,
        } => {
            init::init(&dir, &mailboxes, split, bin.as_deref())?;
            Ok(Exit::Ok)
        }
        Command::Check => Ok(show::check(&home(cli.home)?)),
        Command::Explain {
            address,
            client,
            rules,
            auth,
            from,
            resolve,
        } => {
            let home = home(cli.home)?;
            let q = explain::Query {
                address,
                client,
                rules,
                auth,
                from,
                resolve,
            };
            show::emit(&explain::explain(&home, &q)?);
            Ok(Exit::Ok)
        }
        Command::Dkim { action } => {
            let home = home(cli.home)?;
            match action {
                DkimAction::New {
                    domain,
                    selector,
                    algorithm,
                } => dkim::new_key(&home, &domain, selector.as_deref(), algorithm)?,
                DkimAction::Show => dkim::show(&home)?,
            }
            Ok(Exit::Ok)
        }
        Command::Queue { json, count } => {
            // terns reads every message (group tern) and the journal: root
            // lists as terns, so nothing planted below queue/ is read as
            // root.
            let home = home(cli.home)?;
            let dropped = become_owner(&home, "terns")?;
            show::queue(&home, json, count, dropped)?;
            Ok(Exit::Ok)
        }
        Command::Show { id, body, json } => {
            let home = home(cli.home)?;
            become_owner(&home, "terns")?;
            show::show_message(&home, id, body, json)?;
            Ok(Exit::Ok)
        }
        Command::Delete(a) => queue_op(cli.home, ControlOp::Delete, a),
        Command::Bounce(a) => queue_op(cli.home, ControlOp::Bounce, a),
        Command::Hold(a) => queue_op(cli.home, ControlOp::Hold, a),
        Command::Release(a) => queue_op(cli.home, ControlOp::Release, a),
        Command::Stats => {
            let home = home(cli.home)?;
            let path = match tern_control::Control::new(&home).metricsfile()?.first() {
                Some(p) => PathBuf::from(p),
                None => home.queue_dir().join(tern_manager::metrics::DEFAULT_FILE),
            };
            become_owner(&home, "terns")?;
            show::stats(&path)?;
            Ok(Exit::Ok)
        }
        Command::Repair => {
            let home = home(cli.home)?;
            become_owner(&home, "ternq")?;
            show::repair(&home)?;
            Ok(Exit::Ok)
        }
        Command::Flush => {
            // The pid file and the manager are terns': root reads the one
            // and signals the other as terns (it can signal nothing else).
            let home = home(cli.home)?;
            become_owner(&home, "terns")?;
            flush(&home)?;
            Ok(Exit::Ok)
        }
        Command::Forget { addresses } => {
            forget(&home(cli.home)?, &addresses)?;
            Ok(Exit::Ok)
        }
        Command::Passwd { login } => {
            passwd(&home(cli.home)?, &login)?;
            Ok(Exit::Ok)
        }
        Command::Report { files, json, top } => {
            report::report(&files, json, top)?;
            Ok(Exit::Ok)
        }
        Command::Install {
            bin_dir,
            send_only,
            sendmail_links,
            system_root,
            me,
            split,
        } => {
            let bin_dir = std::path::absolute(&bin_dir)
                .map_err(|e| Usage(format!("--bin-dir {}: {e}", bin_dir.display())))?;
            let opts = install::Options {
                bin_dir,
                send_only,
                sendmail_links,
                system_root,
                me,
                split,
            };
            install::install(&home(cli.home)?, &opts)?;
            Ok(Exit::Ok)
        }
        Command::Uninstall {
            system_root,
            purge,
            yes_really,
        } => {
            let opts = install::UninstallOptions {
                system_root,
                purge,
                yes_really,
            };
            install::uninstall(&home(cli.home)?, &opts)?;
            Ok(Exit::Ok)
        }
    }
}

/// `ternctl passwd LOGIN`: the first line of stdin (without its line end)
/// is the password; its argon2id hash replaces or joins LOGIN's line in
/// control/passwords.
fn passwd(home: &Home, login: &str) -> anyhow::Result<()> {
    use std::io::Read;
    if !tern_checkpassword::valid_login(login.as_bytes()) {
        return Err(Usage(tern_checkpassword::Error::BadLogin.to_string()).into());
    }
    let mut input = Vec::new();
    std::io::stdin()
        .take(tern_checkpassword::MAX_PASSWORD as u64 + 3)
        .read_to_end(&mut input)?;
    let line_end = input
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(input.len());
    let mut password = &input[..line_end];
    if let [rest @ .., b'\r'] = password {
        password = rest;
    }
    let hash = tern_checkpassword::hash(password).map_err(|e| Usage(e.to_string()))?;
    input.fill(0);
    let path = home.control_dir().join(tern_checkpassword::FILE_NAME);
    tern_checkpassword::set(&path, login, &hash).map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::show::emit(&format!("password set for {login} in {}\n", path.display()));
    Ok(())
}

/// `ternctl flush`: SIGALRM to the running tern-send, found through its pid
/// file and checked by name (a stale pid file must not signal a stranger).
fn flush(home: &Home) -> anyhow::Result<()> {
    let pid_path = home
        .queue_dir()
        .join(tern_spool::layout::STATE_DIR)
        .join("pid");
    // queue/state/ belongs to terns: never follow a link or block on a
    // FIFO planted there (ternctl may run as root).
    let text = tern_spool::layout::open_below(
        &home.queue_dir(),
        std::path::Path::new(tern_spool::layout::STATE_DIR).join("pid").as_path(),
        tern_spool::layout::Last::File,
    )
    .and_then(|fd| {
        use std::io::Read as _;
        let mut t = String::new();
        std::fs::File::from(fd).take(32).read_to_string(&mut t)?;
        Ok(t)
    })
    .map_err(|e| {
        anyhow::anyhow!(
            "no running queue manager ({}: {e}); start one with tern-start, or run sendmail -q (tern-start --once --flush) to try everything now",
            pid_path.display()
        )
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{}: not a pid", pid_path.display()))?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "tern-send" {
        anyhow::bail!(
            "no running queue manager (stale pid file {})",
            pid_path.display()
        );
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGALRM,
    )
    .map_err(|e| anyhow::anyhow!("cannot signal tern-send (pid {pid}): {e}"))?;
    crate::show::emit(&format!(
        "asked tern-send (pid {pid}) to retry everything now\n"
    ));
    Ok(())
}

/// Root working on a system instance's queue becomes the uid that owns
/// the part it touches (`ternq` for messages, `terns` for the journal and
/// the manager, `ternr` for host memory) before it touches anything:
/// everything below `queue/` can be replaced by those uids (a link to a
/// root-only directory, a FIFO), and as that uid nothing planted there
/// can reach beyond what it owns or reads already. In a single-user
/// instance, or when not root, nothing changes. True when it dropped.
fn become_owner(home: &Home, user: &str) -> anyhow::Result<bool> {
    if home.is_single_user() || tern_sys::effective_uid() != 0 {
        return Ok(false);
    }
    let c = tern_sys::privilege::Credentials::for_user(user)
        .map_err(|e| anyhow::anyhow!("user {user}: {e}"))?;
    tern_sys::privilege::drop_to(&c).map_err(|e| anyhow::anyhow!("cannot become {user}: {e}"))?;
    Ok(true)
}

/// `ternctl forget [IP...]`: removes tern-remote's memory of hosts. In a
/// system instance `queue/remote/` belongs to `ternr` (and `queue/` to
/// `ternq`, which could put a link there): root does this as `ternr`, never
/// as itself.
fn forget(home: &Home, addresses: &[String]) -> anyhow::Result<()> {
    let addrs = addresses
        .iter()
        .map(|a| {
            a.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .map_err(|_| Usage(format!("{a:?} is not an IP address")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    become_owner(home, "ternr")?;
    let dir = home.queue_dir().join("remote");
    let n = tern_route::HostMemory::open(&dir)
        .forget(&addrs)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    crate::show::emit(&format!(
        "forgot {n} remembered failure{} ({})\n",
        if n == 1 { "" } else { "s" },
        if addrs.is_empty() {
            "every host".to_string()
        } else {
            addresses.join(" ")
        }
    ));
    Ok(())
}

fn main() -> ExitCode {
    tern_log::install_panic_hook("ternctl", Exit::Temporary as i32);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Failed
            } else {
                Exit::Ok
            }
            .into();
        }
    };
    match run(cli) {
        Ok(code) => code.into(),
        Err(err) => {
            // ternctl is an operator's tool: its messages are for people.
            // Causes already quoted by the message before them are skipped.
            let mut msg = String::new();
            for cause in err.chain() {
                let text = cause.to_string();
                if !msg.contains(&text) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&text);
                }
            }
            eprintln!("ternctl: {msg}");
            exit_code(&err).into()
        }
    }
}
