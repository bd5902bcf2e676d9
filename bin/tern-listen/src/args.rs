//! Command-line parsing (tcpserver-style short options, by hand: the
//! program's own arguments follow the port and must not be parsed).

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;

/// Default for `-c`: most programs running at once.
pub const DEFAULT_CONCURRENCY: usize = 40;
/// Default for `-C`: most programs running at once for one client address.
pub const DEFAULT_PER_IP: usize = 20;
/// Largest value accepted for `-c` and `-C`.
pub const MAX_LIMIT: usize = 100_000;
/// Default for `-P`: most connections parked at once (pool mode).
pub const DEFAULT_PARKED: usize = 2000;
/// Longest `-l` name.
pub const MAX_LOCAL_NAME: usize = 255;

pub const USAGE: &str = "usage: tern-listen [-vqHRUE] [-c N] [-C N] [-P N] [-x rules] [-l name] [-u UID -g GID] host port program [arg...]\n\
    host: an IPv4 or IPv6 address, 0 (any IPv4) or :: (any); names are not resolved\n\
    For tern-smtpd (the default program of every Tern set-up) a pool of reused workers serves the\n\
    connections, and clients that go quiet between commands wait in the listener (parked).\n\
    -c N       at most N connections served at once (default 40); further clients wait\n\
    -C N       at most N connections at once per client address (default 20); more get 421 and are closed\n\
    -P N       pool: at most N parked (quiet) connections besides those served (default 2000)\n\
    -E         start the program for each connection, as tcpserver does, even for tern-smtpd\n\
    -x rules   access rules file (see tern-listen(8)); reread on SIGHUP; a rule's PROXY=\"\" makes\n\
               that address a load balancer whose PROXY protocol header (v1/v2) names the client\n\
    -l name    set TCPLOCALHOST=name\n\
    -u UID, -g GID  after binding, become UID and GID (numbers; no supplementary groups), as tcpserver\n\
    -U         take -u and -g from $UID and $GID\n\
    -x FILE --check [ADDRESS...]  print what each rule matches, flag rules that never apply,\n\
               and the decision for each ADDRESS; start nothing\n\
    -v         verbose: also log which rule matched\n\
    -q         quiet: log only errors\n\
    -H, -R     accepted for tcpserver compatibility (no DNS or ident lookups are ever made)\n";

/// How much to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Errors only.
    Quiet,
    /// One line per connection start, end, refusal.
    Normal,
    /// Plus the matching rule's line.
    Verbose,
}

/// The parsed command line.
#[derive(Debug)]
pub struct Args {
    pub concurrency: usize,
    pub per_ip: usize,
    pub rules: Option<PathBuf>,
    pub local_name: Option<String>,
    pub verbosity: Verbosity,
    /// `-u`/`-g` (or `-U`): the uid and gid to become after binding.
    pub drop_to: Option<(u32, u32)>,
    /// `-P`: most parked connections (pool mode).
    pub parked: usize,
    /// `-E`: one program per connection, never the pool.
    pub exec_each: bool,
    pub host: IpAddr,
    pub port: u16,
    pub program: OsString,
    pub program_args: Vec<OsString>,
}

/// What the command line asked for.
pub enum Parsed {
    Run(Box<Args>),
    Help,
    /// `-x FILE --check [ADDRESS...]`: explain the rules, decide for each
    /// address, start nothing.
    Check {
        rules: PathBuf,
        addresses: Vec<IpAddr>,
    },
}

fn limit(flag: char, v: Option<OsString>) -> Result<usize, String> {
    let v = v.ok_or_else(|| format!("-{flag} needs a number"))?;
    let s = v.to_str().unwrap_or("");
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("-{flag} needs a number from 1 to {MAX_LIMIT}")),
    }
}

/// Parses a host argument: an address literal, `0` or `::`, optionally in
/// brackets. Names are refused (no DNS).
pub fn host(s: &str) -> Result<IpAddr, String> {
    if s == "0" {
        return Ok(IpAddr::from([0, 0, 0, 0]));
    }
    let bare = s
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse().map_err(|_| {
        "host must be an IPv4 or IPv6 address, 0 or :: (names are not resolved)".to_string()
    })
}

/// Parses `argv[1..]`.
pub fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<Parsed, String> {
    let mut it = argv.into_iter().peekable();
    let mut concurrency = DEFAULT_CONCURRENCY;
    let mut per_ip = DEFAULT_PER_IP;
    let mut parked = DEFAULT_PARKED;
    let mut exec_each = false;
    let mut rules = None;
    let mut local_name = None;
    let mut verbosity = Verbosity::Normal;
    let mut uid: Option<u32> = None;
    let mut gid: Option<u32> = None;
    let id = |flag: char, v: Option<OsString>| -> Result<u32, String> {
        let v = v.ok_or_else(|| format!("-{flag} needs a number"))?;
        let s = v.to_str().unwrap_or("");
        match s.parse::<u32>() {
            Ok(n) if n > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(format!(
                "-{flag} needs a number from 1 to {} (never 0: that would not drop root)",
                u32::MAX
            )),
        }
    };
    while let Some(a) = it.peek() {
        let Some(s) = a.to_str() else { break };
        if s == "--" {
            it.next();
            break;
        }
        if s == "--help" || s == "-h" {
            return Ok(Parsed::Help);
        }
        if s == "--check" {
            it.next();
            let rules = rules.clone().ok_or("--check needs -x FILE before it")?;
            let addresses = it
                .map(|a| host(a.to_str().unwrap_or("")))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Parsed::Check { rules, addresses });
        }
        if !s.starts_with('-') || s == "-" {
            break;
        }
        let s = s.to_string();
        it.next();
        let flags = s[1..].char_indices();
        for (i, f) in flags {
            // A flag taking a value takes the rest of this word, or the
            // next word (-c40 and -c 40).
            let mut value = || -> Option<OsString> {
                let rest = &s[1 + i + f.len_utf8()..];
                if rest.is_empty() {
                    it.next()
                } else {
                    Some(OsString::from(rest))
                }
            };
            match f {
                'c' => {
                    concurrency = limit('c', value())?;
                    break;
                }
                'C' => {
                    per_ip = limit('C', value())?;
                    break;
                }
                'P' => {
                    parked = limit('P', value())?;
                    break;
                }
                'E' => exec_each = true,
                'x' => {
                    rules = Some(PathBuf::from(value().ok_or("-x needs a rules file name")?));
                    break;
                }
                'l' => {
                    let v = value().ok_or("-l needs a name")?;
                    let v = v.into_string().map_err(|_| "-l name must be UTF-8")?;
                    if v.is_empty()
                        || v.len() > MAX_LOCAL_NAME
                        || v.chars().any(|c| c.is_control() || c == ' ')
                    {
                        return Err(format!(
                            "-l name must be 1-{MAX_LOCAL_NAME} bytes without spaces or control characters"
                        ));
                    }
                    local_name = Some(v);
                    break;
                }
                'u' => {
                    uid = Some(id('u', value())?);
                    break;
                }
                'g' => {
                    gid = Some(id('g', value())?);
                    break;
                }
                'U' => {
                    uid = Some(id('u', std::env::var_os("UID"))?);
                    gid = Some(id('g', std::env::var_os("GID"))?);
                }
                'v' => verbosity = Verbosity::Verbose,
                'q' => verbosity = Verbosity::Quiet,
                'H' | 'R' => {}
                other => return Err(format!("unknown option -{other}")),
            }
        }
    }
    let drop_to = match (uid, gid) {
        (Some(u), Some(g)) => Some((u, g)),
        (None, None) => None,
        _ => return Err("-u and -g go together (or -U with $UID and $GID)".into()),
    };
    let host_arg = it.next().ok_or("missing host")?;
    let host = host(host_arg.to_str().unwrap_or(""))?;
    let port_arg = it.next().ok_or("missing port")?;
    let port_s = port_arg.to_str().unwrap_or("");
    if port_s.is_empty() || port_s.len() > 5 || !port_s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("port must be a number from 0 to 65535 (0: any free port)".into());
    }
    let port = port_s
        .parse::<u16>()
        .map_err(|_| "port must be a number from 0 to 65535 (0: any free port)")?;
    let program = it.next().ok_or("missing program")?;
    Ok(Parsed::Run(Box::new(Args {
        concurrency,
        per_ip,
        rules,
        local_name,
        verbosity,
        drop_to,
        parked,
        exec_each,
        host,
        port,
        program,
        program_args: it.collect(),
    })))
}
