//! `ternctl explain ADDRESS`: what Tern would do with mail for ADDRESS and
//! why, each step naming the file and line responsible. It reads the same
//! control files with the same library code the programs use (tern-smtpd's
//! relay rule, tern-send's classification, tern-lspawn's owner lookup,
//! tern-local's `.qmail` search and parser, tern-remote's routes, TLS
//! policy and DKIM keys); it changes nothing and sends nothing. DNS is
//! asked only with `--resolve`.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tern_control::owner::{self, Instance, Source, SystemPasswd};
use tern_control::{Assign, Control, Home};
use tern_deliver::dotqmail::{self, Instruction};
use tern_spool::state::Channel;

use crate::Usage;

/// What `explain` was asked.
pub struct Query {
    /// The recipient address.
    pub address: String,
    /// An SMTP client's address: explain the RCPT decision for it.
    pub client: Option<IpAddr>,
    /// tern-listen rules (or a tcprules source) deciding RELAYCLIENT.
    pub rules: Option<PathBuf>,
    /// The client authenticated (SMTP AUTH).
    pub auth: bool,
    /// The From: address of the message (which DKIM keys sign it).
    pub from: Option<String>,
    /// Look the MX records up.
    pub resolve: bool,
}

/// The 1-based line of `file` (in `control/`) whose key (before the first
/// `:`, or the whole line for lists) is the first of `keys` present,
/// compared without case; keys are tried in order, as the lookups do.
fn line_of(path: &Path, keys: &[String], whole_line: bool) -> Option<(String, usize, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    for key in keys {
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let k = if whole_line {
                line
            } else {
                line.split(':').next().unwrap_or("")
            };
            if k.eq_ignore_ascii_case(key) {
                return Some((key.clone(), i + 1, line.to_string()));
            }
        }
    }
    None
}

/// `domain`, then each `.suffix` of it, longest first.
fn domain_keys(domain: &str) -> Vec<String> {
    let d = domain.to_ascii_lowercase();
    let mut keys = vec![d.clone()];
    for (i, b) in d.bytes().enumerate() {
        if b == b'.' {
            keys.push(d[i..].to_string());
        }
    }
    keys
}

fn cite(control: &Path, name: &str, hit: &Option<(String, usize, String)>) -> String {
    match hit {
        Some((_, line, text)) => format!("{}:{line}: {text}", control.join(name).display()),
        None => format!("{} (no line)", control.join(name).display()),
    }
}

/// Runs the explanation; returns its text.
pub fn explain(home: &Home, q: &Query) -> Result<String> {
    let control = Control::new(home);
    let cdir = home.control_dir();
    let mut out = String::new();
    let mut step = 0;
    let mut say = |out: &mut String, text: String| {
        step += 1;
        let _ = writeln!(out, "{step}. {text}");
    };
    let address = q
        .address
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    if address.is_empty() || address.len() > 1000 || address.contains(['\n', '\r', '\0']) {
        return Err(Usage("ADDRESS: 1 to 1000 bytes, one line".into()).into());
    }
    let _ = writeln!(out, "# explain {address}");

    // --- SMTP: would tern-smtpd take this recipient from that client?
    if let Some(ip) = q.client {
        let relayclient = match &q.rules {
            Some(path) => {
                let data = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let rules = tern_rules::Rules::parse(&data)
                    .map_err(|e| Usage(format!("{}: {e}", path.display())))?;
                match rules.decide(ip) {
                    tern_rules::Decision::Deny { line } => {
                        say(
                            &mut out,
                            format!(
                                "client {ip}: refused at connection by {}:{line} (deny); nothing \
                                 else happens",
                                path.display()
                            ),
                        );
                        return Ok(out);
                    }
                    tern_rules::Decision::Allow { line, vars } => {
                        let rc = vars.iter().find(|(k, _)| k == "RELAYCLIENT");
                        let at = if line == 0 {
                            "no rule matched (allowed by default)".to_string()
                        } else {
                            format!("{}:{line}", path.display())
                        };
                        say(
                            &mut out,
                            format!(
                                "client {ip}: allowed by {at}{}",
                                if rc.is_some() {
                                    ", which sets RELAYCLIENT"
                                } else {
                                    ""
                                }
                            ),
                        );
                        rc.map(|(_, v)| v.clone())
                    }
                }
            }
            None => {
                say(
                    &mut out,
                    format!(
                        "client {ip}: whether it is a relay client (RELAYCLIENT) is up to the \
                         rules of tern-listen or tcpserver; give them with --rules FILE"
                    ),
                );
                None
            }
        };
        let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let keys = domain_keys(domain);
        let rcpt = control.rcpthosts().context("control/rcpthosts")?;
        let more = control.morercpthosts().context("control/morercpthosts")?;
        if relayclient.is_some() {
            say(
                &mut out,
                "RCPT accepted: a relay client may send to any address".to_string(),
            );
        } else if q.auth {
            say(
                &mut out,
                "RCPT accepted: an authenticated client may send to any address".to_string(),
            );
        } else if rcpt.contains(domain) {
            let hit = line_of(&cdir.join("rcpthosts"), &keys, true);
            say(
                &mut out,
                format!(
                    "RCPT accepted: {domain} is ours ({})",
                    cite(&cdir, "rcpthosts", &hit)
                ),
            );
        } else if more.contains(domain) {
            let hit = line_of(&cdir.join("morercpthosts"), &keys, true);
            say(
                &mut out,
                format!(
                    "RCPT accepted: {domain} is ours ({})",
                    cite(&cdir, "morercpthosts", &hit)
                ),
            );
        } else {
            say(
                &mut out,
                format!(
                    "RCPT refused with 553: {domain} is in neither control/rcpthosts nor \
                     control/morercpthosts, and the client is no relay client and did not \
                     authenticate (Tern is no open relay)"
                ),
            );
            return Ok(out);
        }
    }

    // --- tern-send: local or remote, and the address delivered to.
    let rewriter = tern_manager::ops::rewriter(&control).context("control files")?;
    let (channel, rewritten) = rewriter.classify(address.as_bytes());
    let rewritten = String::from_utf8_lossy(&rewritten).into_owned();
    let (local, domain) = rewritten.rsplit_once('@').unwrap_or((&rewritten, ""));
    if !address.contains('@') {
        say(
            &mut out,
            format!(
                "no domain: control/envnoathost ({}) makes it {rewritten}",
                rewriter.envnoathost
            ),
        );
    }
    let keys = domain_keys(domain);
    match channel {
        Channel::Local if rewriter.locals.contains(domain) => {
            let hit = line_of(&cdir.join("locals"), &keys, true);
            let why = if hit.is_some() {
                cite(&cdir, "locals", &hit)
            } else {
                "control/locals' default: control/me".to_string()
            };
            say(
                &mut out,
                format!("local: {domain} is a local domain ({why})"),
            );
        }
        Channel::Local => {
            let at = address.rfind('@').map_or(address.len(), |i| i);
            let mut vkeys = vec![address.to_ascii_lowercase()];
            vkeys.extend(domain_keys(&address[at + 1..]));
            vkeys.push(String::new());
            let hit = line_of(&cdir.join("virtualdomains"), &vkeys, false);
            say(
                &mut out,
                format!(
                    "local, as the virtual address {rewritten} ({})",
                    cite(&cdir, "virtualdomains", &hit)
                ),
            );
        }
        Channel::Remote => {
            say(
                &mut out,
                format!("remote: {domain} is not local (control/locals, control/virtualdomains)"),
            );
        }
    }

    match channel {
        Channel::Local => explain_local(home, &control, local, &mut out, &mut say)?,
        Channel::Remote => explain_remote(&control, &cdir, domain, q.resolve, &mut out, &mut say)?,
    }

    // --- DKIM: tern-remote signs by the message's From: domain.
    if channel == Channel::Remote {
        match &q.from {
            Some(from) => {
                let fd = from.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
                let (keys, _) = tern_dkim::Keys::load(&cdir);
                let signing = keys.for_domain(fd);
                if signing.is_empty() {
                    say(
                        &mut out,
                        format!(
                            "DKIM: no key in control/dkim for {fd} or a parent domain: sent \
                             unsigned"
                        ),
                    );
                } else {
                    for k in signing {
                        say(
                            &mut out,
                            format!(
                                "DKIM: signed d={} s={} ({}, {})",
                                k.domain,
                                k.selector,
                                k.algorithm,
                                k.path.display()
                            ),
                        );
                    }
                }
            }
            None => say(
                &mut out,
                "DKIM: signed if the message's From: domain has keys (give --from ADDRESS)"
                    .to_string(),
            ),
        }
    }
    Ok(out)
}

fn explain_local(
    home: &Home,
    control: &Control,
    local: &str,
    out: &mut String,
    say: &mut dyn FnMut(&mut String, String),
) -> Result<()> {
    if local.is_empty() {
        say(
            out,
            "an empty local part: trashed (as qmail does)".to_string(),
        );
        return Ok(());
    }
    let assign = Assign::load(&home.assign_file()).context("users/assign")?;
    let instance = if home.is_single_user() {
        let uid = tern_sys::effective_uid();
        Instance::SingleUser {
            user: tern_sys::user_name(uid).unwrap_or_else(|| uid.to_string()),
            uid,
            gid: rustix::process::getegid().as_raw(),
            alias_home: home.alias_dir(),
        }
    } else {
        Instance::System
    };
    let (owner, source) =
        owner::lookup(local.as_bytes(), assign.as_ref(), &instance, &SystemPasswd)
            .map_err(|e| anyhow::anyhow!("owner lookup: {e}"))?;
    let whence = match source {
        Source::Assign => {
            let line = assign
                .as_ref()
                .and_then(|a| {
                    a.entries()
                        .iter()
                        .filter(|e| {
                            let key = e.key.to_ascii_lowercase();
                            let l = local.to_ascii_lowercase();
                            if e.wildcard {
                                l.starts_with(&key)
                            } else {
                                key == l
                            }
                        })
                        .max_by_key(|e| (!e.wildcard, e.key.len()))
                        .map(|e| e.line)
                })
                .map_or(String::new(), |l| format!(":{l}"));
            format!("{}{line}", home.assign_file().display())
        }
        Source::Passwd => "the passwd account of that name".to_string(),
        Source::Alias => "nobody else has it: the alias user".to_string(),
    };
    say(
        out,
        format!(
            "delivered as user {} (uid {}, gid {}, home {}) by {whence}",
            owner.user,
            owner.uid,
            owner.gid,
            owner.home.display()
        ),
    );
    if matches!(instance, Instance::System) {
        let range = (control.localuidmin()?, control.localuidmax()?);
        let queue_gid = std::fs::metadata(home.queue_dir().join("cur"))
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::gid(&m));
        let users = tern_control::uids::DeliveryUsers::lookup(&SystemPasswd, queue_gid);
        if let Err(why) = tern_control::uids::delivery_allowed(owner.uid, owner.gid, range, &users)
        {
            say(
                out,
                format!("refused: {why} (tern-smtpd refuses it at RCPT, tern-lspawn at delivery)"),
            );
            return Ok(());
        }
    }
    let found = if owner.dash.is_empty() {
        let p = owner.home.join(".qmail");
        std::fs::read(&p).ok().map(|c| (p, c))
    } else {
        tern_deliver::search::find(&owner.home, owner.dash.as_bytes(), &owner.ext)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .map(|f| (f.path, f.contents))
    };
    let Some((path, contents)) = found else {
        if owner.dash.is_empty() {
            let dd = control.defaultdelivery()?.join(" / ");
            say(
                out,
                format!(
                    "no {}: control/defaultdelivery applies: {dd}",
                    owner.home.join(".qmail").display()
                ),
            );
        } else {
            say(
                out,
                format!(
                    "no .qmail{}{} file (nor a -default one) in {}: refused, \"no mailbox here by \
                     that name\" (5.1.1)",
                    owner.dash,
                    String::from_utf8_lossy(&owner.ext),
                    owner.home.display()
                ),
            );
        }
        return Ok(());
    };
    say(out, format!("{} decides:", path.display()));
    match dotqmail::parse(&contents) {
        Ok(lines) if lines.is_empty() => {
            let dd = control.defaultdelivery()?.join(" / ");
            let _ = writeln!(
                out,
                "   (no instructions: control/defaultdelivery applies: {dd})"
            );
        }
        Ok(lines) => {
            for l in lines {
                let what = match &l.instruction {
                    Instruction::Program(c) => {
                        format!("runs the program `{}`", String::from_utf8_lossy(c))
                    }
                    Instruction::Maildir(p) => {
                        format!("delivers to the Maildir {}", String::from_utf8_lossy(p))
                    }
                    Instruction::Mbox(p) => {
                        format!("appends to the mbox {}", String::from_utf8_lossy(p))
                    }
                    Instruction::Forward(a) => format!(
                        "forwards to {} (a new message in the queue)",
                        String::from_utf8_lossy(a)
                    ),
                    Instruction::ListFlag => "+list: only forwards from here on".to_string(),
                };
                let _ = writeln!(out, "   line {}: {what}", l.number);
            }
        }
        Err(e) => {
            let _ = writeln!(out, "   the file is broken: {e} (delivery is deferred)");
        }
    }
    Ok(())
}

fn explain_remote(
    control: &Control,
    cdir: &Path,
    domain: &str,
    resolve: bool,
    out: &mut String,
    say: &mut dyn FnMut(&mut String, String),
) -> Result<()> {
    let mut keys = domain_keys(domain);
    keys.push(String::new());
    let lmtp = control.lmtproutes().context("control/lmtproutes")?;
    if let Some(server) = lmtp.lookup(domain) {
        let hit = line_of(&cdir.join("lmtproutes"), &keys, false);
        say(
            out,
            format!(
                "LMTP to {} ({}); never by SMTP or MX",
                match server {
                    tern_control::LmtpServer::Tcp(a) => a.to_string(),
                    tern_control::LmtpServer::Unix(p) => format!("the socket {}", p.display()),
                },
                cite(cdir, "lmtproutes", &hit)
            ),
        );
        return Ok(());
    }
    let routes = control.smtproutes().context("control/smtproutes")?;
    match routes.lookup(domain) {
        Some(relay) => {
            let hit = line_of(&cdir.join("smtproutes"), &keys, false);
            say(
                out,
                format!(
                    "SMTP to the relay {}:{} ({})",
                    match &relay.host {
                        tern_control::RelayHost::Name(d) => d.to_string(),
                        tern_control::RelayHost::Ip(ip) => format!("[{ip}]"),
                    },
                    relay.port,
                    cite(cdir, "smtproutes", &hit)
                ),
            );
        }
        None if resolve => {
            let router = tern_route::Router::from_control(control).context("routes")?;
            match router.resolve(domain) {
                tern_route::Resolution::Targets(t) => {
                    say(
                        out,
                        format!("MX lookup of {domain}: {} address(es), in order:", t.len()),
                    );
                    for target in t {
                        let _ = writeln!(out, "   {} {}", target.host, target.addr);
                    }
                }
                other => say(out, format!("MX lookup of {domain}: {other:?}")),
            }
        }
        None => say(
            out,
            format!(
                "SMTP to the MX hosts of {domain} (no control/smtproutes line; --resolve looks \
                 them up)"
            ),
        ),
    }
    let lines = control
        .tlsdestinations()
        .context("control/tlsdestinations")?;
    let tls = tern_route::TlsPolicies::parse(&lines).context("control/tlsdestinations")?;
    let policy = tls.lookup(domain);
    let hit = line_of(&cdir.join("tlsdestinations"), &keys, false);
    let why = if hit.is_some() {
        cite(cdir, "tlsdestinations", &hit)
    } else {
        "the default".to_string()
    };
    say(out, format!("TLS: {} ({why})", policy.as_str()));
    Ok(())
}
