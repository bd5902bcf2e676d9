//! `tern-rules`: the access rules of `tern-listen`, parsed without I/O and
//! with bounds.
//!
//! A rules file is plain text, one rule per line. As with tcpserver's
//! compiled rules (tcprules), the **most specific** rule whose network
//! contains the client's address decides, wherever it stands in the file:
//! an exact address, then longer prefixes, then the default (an empty
//! network); among rules for the same network the first wins, as in
//! tcprules' cdb. So the same file means the same thing to tern-listen and
//! to tcpserver. Blank lines and lines whose first non-blank byte is `#`
//! are ignored. A rule is
//!
//! ```text
//! <network>:allow[,VAR="value"...]
//! <network>:deny
//! ```
//!
//! where `<network>` is an IPv4 or IPv6 address (`127.0.0.1`, `::1`), a
//! CIDR block (`10.0.0.0/8`, `2001:db8::/32`), a tcprules-style IPv4 prefix
//! ending in a dot (`127.`, `192.168.`), a tcprules range in the last
//! octet (`10.1.2.10-20`, `10.1-3.`: one rule per value), or nothing at
//! all, which matches every address. tcprules' `=host` rules are refused:
//! tern-listen never looks names up. `allow` may set environment variables for the program
//! (`127.0.0.1:allow,RELAYCLIENT=""`); values are double-quoted and may
//! not contain `"`. An address that no rule matches is allowed with no
//! variables, as tcpserver does.
//!
//! [`Rules::parse`] reads the whole file's bytes and returns the rules or
//! the first error, with its line number and a static hint (never the
//! rejected bytes). [`Rules::decide`] matches one client address;
//! IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`, what a dual-stack `::`
//! socket reports) match as the IPv4 address they carry.
//!
//! Bounds: [`MAX_FILE`] bytes per file, [`MAX_LINE`] bytes per line,
//! [`MAX_RULES`] rules, [`MAX_VARS`] variables per rule, [`MAX_NAME`] and
//! [`MAX_VALUE`] bytes per variable name and value.
//!
//! Caller: `bin/tern-listen` (untrusted input only in the sense that the
//! file is the administrator's; it is parsed as carefully as network input
//! and fuzzed, target `rules`).
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Most bytes in a rules file.
pub const MAX_FILE: usize = 1 << 20;
/// Most bytes in one line (without its LF).
pub const MAX_LINE: usize = 1000;
/// Most rules in a file (comments and blank lines not counted).
pub const MAX_RULES: usize = 10_000;
/// Most variables one `allow` rule may set.
pub const MAX_VARS: usize = 32;
/// Most bytes in a variable name.
pub const MAX_NAME: usize = 64;
/// Most bytes in a variable value.
pub const MAX_VALUE: usize = 512;

/// Variables the listener sets itself; a rule may not set them.
pub const RESERVED: &[&str] = &[
    "PROTO",
    "TCPREMOTEIP",
    "TCPREMOTEPORT",
    "TCPREMOTEHOST",
    "TCPREMOTEINFO",
    "TCPLOCALIP",
    "TCPLOCALPORT",
    "TCPLOCALHOST",
];

/// What was wrong with a rules file, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rules line {line}: {kind}")]
pub struct Error {
    /// The 1-based line number (0 for whole-file errors).
    pub line: usize,
    /// What was wrong.
    pub kind: ErrorKind,
}

impl Error {
    /// What was wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Always false: a bad rules file stays bad until someone edits it.
    pub fn is_temporary(&self) -> bool {
        false
    }
}

/// The kinds of rules-file errors; each Display is a static hint.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// The file is over [`MAX_FILE`] bytes.
    #[error("file over {MAX_FILE} bytes")]
    FileTooLarge,
    /// A line is over [`MAX_LINE`] bytes.
    #[error("line over {MAX_LINE} bytes")]
    LineTooLong,
    /// More than [`MAX_RULES`] rules.
    #[error("more than {MAX_RULES} rules")]
    TooManyRules,
    /// A line is not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// A NUL or other control byte (other than tab) in a line.
    #[error("control character in line")]
    ControlCharacter,
    /// No `:allow` or `:deny` after the network.
    #[error("expected <network>:allow[,VAR=\"value\"...] or <network>:deny")]
    MissingAction,
    /// Something after `deny`.
    #[error("nothing may follow deny")]
    TrailingAfterDeny,
    /// The network is not an address, CIDR block or dotted IPv4 prefix.
    #[error("not an IPv4/IPv6 address, CIDR block or dotted IPv4 prefix (names are not resolved)")]
    BadNetwork,
    /// A tcprules `=host` rule: tern-listen never resolves names.
    #[error(
        "=host rules need a DNS lookup of every client, which tern-listen never makes: use addresses"
    )]
    HostRule,
    /// A range `a-b` whose end is below its start, or over 255.
    #[error("range must be a-b with a <= b <= 255, in the last octet")]
    BadRange,
    /// The prefix length after `/` is not a number within range.
    #[error("prefix length must be 0-32 (IPv4) or 0-128 (IPv6)")]
    BadPrefix,
    /// The address has bits set beyond the prefix length (`10.1.2.3/8`).
    #[error("address has bits set beyond the prefix length")]
    HostBitsSet,
    /// A variable assignment is not `NAME="value"`.
    #[error("expected VAR=\"value\" after allow")]
    BadAssignment,
    /// A variable name is empty, too long, or not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("variable name must be [A-Za-z_][A-Za-z0-9_]*, at most {MAX_NAME} bytes")]
    BadName,
    /// A value with no closing quote.
    #[error("value has no closing double quote")]
    UnterminatedValue,
    /// A value over [`MAX_VALUE`] bytes.
    #[error("value over {MAX_VALUE} bytes")]
    ValueTooLong,
    /// More than [`MAX_VARS`] variables in one rule.
    #[error("more than {MAX_VARS} variables in one rule")]
    TooManyVariables,
    /// A variable set twice in one rule.
    #[error("variable set twice in one rule")]
    DuplicateVariable,
    /// A variable the listener sets itself (see [`RESERVED`]).
    #[error("variable is set by the listener itself (PROTO, TCP...)")]
    ReservedVariable,
}

/// A set of addresses a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Every address (an empty network field).
    Any,
    /// An IPv4 block: network address and prefix length (0-32).
    V4(Ipv4Addr, u8),
    /// An IPv6 block: network address and prefix length (0-128).
    V6(Ipv6Addr, u8),
}

impl Network {
    /// Parses the network field of a rule (see the crate docs).
    pub fn parse(s: &str) -> Result<Network, ErrorKind> {
        if s.is_empty() {
            return Ok(Network::Any);
        }
        if let Some(stem) = s.strip_suffix('.') {
            return dotted_prefix(stem);
        }
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        // std's parsers accept only literals: no names, no zone ids.
        let ip: IpAddr = addr.parse().map_err(|_| ErrorKind::BadNetwork)?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match prefix {
            None => max,
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ErrorKind::BadPrefix);
                }
                let n: u8 = p.parse().map_err(|_| ErrorKind::BadPrefix)?;
                if n > max {
                    return Err(ErrorKind::BadPrefix);
                }
                n
            }
        };
        match ip {
            IpAddr::V4(a) => {
                if u32::from(a) & !mask32(len) != 0 {
                    return Err(ErrorKind::HostBitsSet);
                }
                Ok(Network::V4(a, len))
            }
            IpAddr::V6(a) => {
                if u128::from(a) & !mask128(len) != 0 {
                    return Err(ErrorKind::HostBitsSet);
                }
                Ok(Network::V6(a, len))
            }
        }
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip.to_canonical()) {
            (Network::Any, _) => true,
            (Network::V4(net, len), IpAddr::V4(a)) => {
                u32::from(a) & mask32(*len) == u32::from(*net)
            }
            (Network::V6(net, len), IpAddr::V6(a)) => {
                u128::from(a) & mask128(*len) == u128::from(*net)
            }
            _ => false,
        }
    }
}

impl Network {
    /// How specific the network is: its prefix length (the empty network,
    /// matching everything, is the least specific).
    pub fn specificity(&self) -> u8 {
        match self {
            Network::Any => 0,
            Network::V4(_, len) | Network::V6(_, len) => *len,
        }
    }
}

/// Expands a tcprules range in the last octet of the network field
/// (`1.2.3.4-7`, `1.2-5.`) into its networks; `None` when there is no `-`.
fn expand_range(field: &str) -> Option<Result<Vec<Network>, ErrorKind>> {
    let dash = field.find('-')?;
    // Only digits and dots around one dash: anything else (a name, a
    // CIDR length) is not a range and gets the network's own error.
    let digits_dots = |t: &str| t.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !digits_dots(&field[..dash]) || !digits_dots(&field[dash + 1..]) {
        return None;
    }
    let dotted = field.ends_with('.');
    let stem = field.strip_suffix('.').unwrap_or(field);
    let start = stem[..dash].rfind('.').map_or(0, |d| d + 1);
    if stem[dash + 1..].contains(['.', '-', '/', ':']) {
        return Some(Err(ErrorKind::BadRange));
    }
    let num = |t: &str| -> Option<u8> {
        if t.is_empty() || t.len() > 3 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (Some(lo), Some(hi)) = (num(&stem[start..dash]), num(&stem[dash + 1..])) else {
        return Some(Err(ErrorKind::BadRange));
    };
    if lo > hi {
        return Some(Err(ErrorKind::BadRange));
    }
    let head = &stem[..start];
    Some(
        (lo..=hi)
            .map(|n| {
                let one = format!("{head}{n}{}", if dotted { "." } else { "" });
                Network::parse(&one)
            })
            .collect(),
    )
}

impl std::fmt::Display for Network {
    /// The canonical form: empty for [`Network::Any`], else `address/len`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Network::Any => Ok(()),
            Network::V4(a, len) => write!(f, "{a}/{len}"),
            Network::V6(a, len) => write!(f, "{a}/{len}"),
        }
    }
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// `127.` → 127.0.0.0/8, `192.168.` → /16, `10.1.2.` → /24 (tcprules).
fn dotted_prefix(stem: &str) -> Result<Network, ErrorKind> {
    let mut octets = [0u8; 4];
    let mut n = 0;
    for part in stem.split('.') {
        if n == 3 || part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ErrorKind::BadNetwork);
        }
        octets[n] = part.parse().map_err(|_| ErrorKind::BadNetwork)?;
        n += 1;
    }
    // n is 1..=3 here: split always yields at least one part.
    let len = u8::try_from(n * 8).expect("at most 3 octets");
    Ok(Network::V4(Ipv4Addr::from(octets), len))
}

/// What a rule does with a matching client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start the program, with these extra environment variables.
    Allow(Vec<(String, String)>),
    /// Close the connection at once.
    Deny,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The 1-based line it came from.
    pub line: usize,
    /// Which addresses it applies to.
    pub network: Network,
    /// What it does.
    pub action: Action,
}

impl std::fmt::Display for Rule {
    /// The rule as a line of a rules file (canonical network form), which
    /// parses back to the same rule.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.action {
            Action::Deny => write!(f, "{}:deny", self.network),
            Action::Allow(vars) => {
                write!(f, "{}:allow", self.network)?;
                for (k, v) in vars {
                    write!(f, ",{k}=\"{v}\"")?;
                }
                Ok(())
            }
        }
    }
}

/// The outcome for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Allowed by the rule on `line` (0: no rule matched, allowed by
    /// default), with the variables to set.
    Allow {
        /// The rule's line, 0 for the default.
        line: usize,
        /// Variables to set for the program.
        vars: &'a [(String, String)],
    },
    /// Denied by the rule on `line`.
    Deny {
        /// The rule's line.
        line: usize,
    },
}

/// A parsed rules file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Parses a whole rules file.
    pub fn parse(data: &[u8]) -> Result<Rules, Error> {
        let whole = |kind| Error { line: 0, kind };
        if data.len() > MAX_FILE {
            return Err(whole(ErrorKind::FileTooLarge));
        }
        let mut rules = Vec::new();
        for (i, raw) in data.split(|&b| b == b'\n').enumerate() {
            let line = i + 1;
            let at = |kind| Error { line, kind };
            if raw.len() > MAX_LINE {
                return Err(at(ErrorKind::LineTooLong));
            }
            let text = std::str::from_utf8(raw).map_err(|_| at(ErrorKind::NotUtf8))?;
            let text = text.strip_suffix('\r').unwrap_or(text);
            if text.chars().any(|c| c.is_control() && c != '\t') {
                return Err(at(ErrorKind::ControlCharacter));
            }
            let text = text.trim_matches([' ', '\t']);
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            if rules.len() == MAX_RULES {
                return Err(at(ErrorKind::TooManyRules));
            }
            let (networks, action) = parse_rule(text).map_err(at)?;
            if rules.len() + networks.len() > MAX_RULES {
                return Err(at(ErrorKind::TooManyRules));
            }
            for network in networks {
                rules.push(Rule {
                    line,
                    network,
                    action: action.clone(),
                });
            }
        }
        Ok(Rules { rules })
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The most specific rule that matches `ip` decides (the first of
    /// equally specific ones: tcprules' order); no match allows with no
    /// variables.
    pub fn decide(&self, ip: IpAddr) -> Decision<'_> {
        let mut best: Option<&Rule> = None;
        for r in &self.rules {
            if r.network.contains(ip)
                && best.is_none_or(|b| r.network.specificity() > b.network.specificity())
            {
                best = Some(r);
            }
        }
        match best {
            Some(r) => match &r.action {
                Action::Allow(vars) => Decision::Allow { line: r.line, vars },
                Action::Deny => Decision::Deny { line: r.line },
            },
            None => Decision::Allow { line: 0, vars: &[] },
        }
    }

    /// The rules that can never apply: an earlier rule has the same
    /// network (it always wins), as `(rule, line of the earlier one)`.
    pub fn shadowed(&self) -> Vec<(&Rule, usize)> {
        let mut out = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            if let Some(first) = self.rules[..i].iter().find(|e| e.network == r.network) {
                out.push((r, first.line));
            }
        }
        out
    }
}

/// Splits `<network>:allow...` / `<network>:deny`. The network may itself
/// contain colons (IPv6), but never the letters of `allow` or `deny` after
/// a colon, so the first `:allow` / `:deny` followed by the end or a comma
/// is the separator.
fn parse_rule(text: &str) -> Result<(Vec<Network>, Action), ErrorKind> {
    if text.starts_with('=') {
        return Err(ErrorKind::HostRule);
    }
    let mut search = 0;
    while let Some(off) = text[search..].find(':') {
        let colon = search + off;
        let rest = &text[colon + 1..];
        for (word, deny) in [("allow", false), ("deny", true)] {
            if let Some(after) = rest.strip_prefix(word)
                && (after.is_empty() || after.starts_with(','))
            {
                let field = text[..colon].trim_matches([' ', '\t']);
                let network = match expand_range(field) {
                    Some(nets) => nets?,
                    None => vec![Network::parse(field)?],
                };
                if deny {
                    if !after.is_empty() {
                        return Err(ErrorKind::TrailingAfterDeny);
                    }
                    return Ok((network, Action::Deny));
                }
                return Ok((network, Action::Allow(parse_vars(after)?)));
            }
        }
        search = colon + 1;
    }
    Err(ErrorKind::MissingAction)
}

/// Parses `,NAME="value",NAME="value"...` (possibly empty).
fn parse_vars(mut s: &str) -> Result<Vec<(String, String)>, ErrorKind> {
    let mut vars: Vec<(String, String)> = Vec::new();
    while let Some(rest) = s.strip_prefix(',') {
        let (name, rest) = rest.split_once('=').ok_or(ErrorKind::BadAssignment)?;
        let valid_name = !name.is_empty()
            && name.len() <= MAX_NAME
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            return Err(ErrorKind::BadName);
        }
        if RESERVED.contains(&name) {
            return Err(ErrorKind::ReservedVariable);
        }
        let rest = rest.strip_prefix('"').ok_or(ErrorKind::BadAssignment)?;
        let (value, rest) = rest.split_once('"').ok_or(ErrorKind::UnterminatedValue)?;
        if value.len() > MAX_VALUE {
            return Err(ErrorKind::ValueTooLong);
        }
        if vars.iter().any(|(n, _)| n == name) {
            return Err(ErrorKind::DuplicateVariable);
        }
        if vars.len() == MAX_VARS {
            return Err(ErrorKind::TooManyVariables);
        }
        vars.push((name.to_string(), value.to_string()));
        s = rest;
    }
    if !s.is_empty() {
        return Err(ErrorKind::BadAssignment);
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(data: &str) -> Error {
        Rules::parse(data.as_bytes()).expect_err(data)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn bad_lines() {
        let cases: &[(&str, ErrorKind)] = &[
            ("127.0.0.1", ErrorKind::MissingAction),
            ("127.0.0.1:", ErrorKind::MissingAction),
            ("127.0.0.1:permit", ErrorKind::MissingAction),
            ("127.0.0.1:allowed", ErrorKind::MissingAction),
            ("127.0.0.1:denyx", ErrorKind::MissingAction),
            ("127.0.0.1:Allow", ErrorKind::MissingAction),
            ("127.0.0.1:deny,X=\"1\"", ErrorKind::TrailingAfterDeny),
            ("localhost:allow", ErrorKind::BadNetwork),
            ("example.org:deny", ErrorKind::BadNetwork),
            ("127.0.0.256:allow", ErrorKind::BadNetwork),
            ("127.0.0:allow", ErrorKind::BadNetwork),
            ("1.2.3.4.:allow", ErrorKind::BadNetwork),
            ("256.:allow", ErrorKind::BadNetwork),
            ("..:allow", ErrorKind::BadNetwork),
            ("fe80::1%eth0:allow", ErrorKind::BadNetwork),
            ("[::1]:allow", ErrorKind::BadNetwork),
            ("::1/129:allow", ErrorKind::BadPrefix),
            ("10.0.0.0/33:allow", ErrorKind::BadPrefix),
            ("10.0.0.0/:allow", ErrorKind::BadPrefix),
            ("10.0.0.0/-1:allow", ErrorKind::BadPrefix),
            ("10.0.0.0/+8:allow", ErrorKind::BadPrefix),
            ("10.0.0.0/0008:allow", ErrorKind::BadPrefix),
            ("10.0.0.0/8/8:allow", ErrorKind::BadPrefix),
            ("10.1.2.3/8:allow", ErrorKind::HostBitsSet),
            ("2001:db8::1/32:allow", ErrorKind::HostBitsSet),
            (":allow,", ErrorKind::BadAssignment),
            (":allow,X", ErrorKind::BadAssignment),
            (":allow,X=1", ErrorKind::BadAssignment),
            (":allow,X='1'", ErrorKind::BadAssignment),
            (":allow,X=\"1\"junk", ErrorKind::BadAssignment),
            (":allow,X=\"1\" ,Y=\"2\"", ErrorKind::BadAssignment),
            (":allow,=\"1\"", ErrorKind::BadName),
            (":allow,1X=\"1\"", ErrorKind::BadName),
            (":allow,X-Y=\"1\"", ErrorKind::BadName),
            (":allow,X Y=\"1\"", ErrorKind::BadName),
            (":allow,X=\"1", ErrorKind::UnterminatedValue),
            (":allow,X=\"1\",X=\"2\"", ErrorKind::DuplicateVariable),
            (":allow,PROTO=\"UDP\"", ErrorKind::ReservedVariable),
            (
                ":allow,TCPREMOTEIP=\"1.2.3.4\"",
                ErrorKind::ReservedVariable,
            ),
            (":allow,X=\"a\0b\"", ErrorKind::ControlCharacter),
            ("127.0.0.1:allow\x1b", ErrorKind::ControlCharacter),
        ];
        for (line, want) in cases {
            let e = err(line);
            assert_eq!(&e.kind, want, "{line:?}");
            assert_eq!(e.line, 1, "{line:?}");
            assert!(!e.is_temporary());
        }
    }

    #[test]
    fn error_names_the_line_not_the_bytes() {
        let e = err("# comment\n\n127.0.0.1:allow\nsecret-name.example:deny\n");
        assert_eq!(e.line, 4);
        assert_eq!(e.kind, ErrorKind::BadNetwork);
        let shown = e.to_string();
        assert!(shown.starts_with("rules line 4: "), "{shown}");
        assert!(!shown.contains("secret-name"), "{shown}");
    }

    #[test]
    fn bounds() {
        assert_eq!(err(&"#".repeat(MAX_FILE + 1)).kind, ErrorKind::FileTooLarge);
        let long = format!(":allow,X=\"{}\"", "v".repeat(MAX_LINE));
        assert_eq!(err(&long).kind, ErrorKind::LineTooLong);
        // A line of exactly MAX_LINE bytes is fine.
        let exact = format!("#{}", "c".repeat(MAX_LINE - 1));
        assert!(Rules::parse(exact.as_bytes()).is_ok());
        let value = format!(":allow,X=\"{}\"", "v".repeat(MAX_VALUE + 1));
        assert_eq!(err(&value).kind, ErrorKind::ValueTooLong);
        let value = format!(":allow,X=\"{}\"", "v".repeat(MAX_VALUE));
        assert!(Rules::parse(value.as_bytes()).is_ok());
        let name = format!(":allow,{}=\"\"", "N".repeat(MAX_NAME + 1));
        assert_eq!(err(&name).kind, ErrorKind::BadName);
        let vars: String = (0..=MAX_VARS).map(|i| format!(",V{i}=\"\"")).collect();
        assert_eq!(
            err(&format!(":allow{vars}")).kind,
            ErrorKind::TooManyVariables
        );
        let vars: String = (0..MAX_VARS).map(|i| format!(",V{i}=\"\"")).collect();
        assert!(Rules::parse(format!(":allow{vars}").as_bytes()).is_ok());
        let many = ":deny\n".repeat(MAX_RULES + 1);
        let e = err(&many);
        assert_eq!((e.line, e.kind), (MAX_RULES + 1, ErrorKind::TooManyRules));
        let many = format!("{}# comments do not count\n", ":deny\n".repeat(MAX_RULES));
        assert!(Rules::parse(many.as_bytes()).is_ok());
        assert_eq!(
            Rules::parse(b"\xff:allow").unwrap_err().kind,
            ErrorKind::NotUtf8
        );
    }

    #[test]
    fn good_lines() {
        let r = Rules::parse(
            b"# tern-listen rules\n\
              127.0.0.1:allow,RELAYCLIENT=\"\"\r\n\
              \t10.0.0.0/8 : allow , \n\
              ::1/128:allow,RELAYCLIENT=\"\",NOTE=\"a b:c,d=e\"\n\
              2001:db8::/32:deny\n\
              192.168.:deny\n\
              ::ffff:0:0/96:allow\n\
              :deny\n",
        );
        // "10.0.0.0/8 : allow , " is not valid: a trailing comma.
        assert_eq!(r.unwrap_err().line, 3);
        let r = Rules::parse(
            b"# tern-listen rules\n\
              127.0.0.1:allow,RELAYCLIENT=\"\"\r\n\
              \t10.0.0.0/8 :allow  \n\
              ::1/128:allow,RELAYCLIENT=\"\",NOTE=\"a b:c,d=e\"\n\
              2001:db8::/32:deny\n\
              192.168.:deny\n\
              :allow\n\
              :deny\n",
        )
        .expect("valid rules");
        let rules = r.rules();
        assert_eq!(rules.len(), 7);
        assert_eq!(rules[0].line, 2);
        assert_eq!(
            rules[0].network,
            Network::V4(Ipv4Addr::new(127, 0, 0, 1), 32)
        );
        assert_eq!(
            rules[0].action,
            Action::Allow(vec![("RELAYCLIENT".into(), String::new())])
        );
        assert_eq!(rules[1].network, Network::V4(Ipv4Addr::new(10, 0, 0, 0), 8));
        assert_eq!(rules[1].action, Action::Allow(vec![]));
        assert_eq!(rules[2].network, Network::V6(Ipv6Addr::LOCALHOST, 128));
        assert_eq!(
            rules[2].action,
            Action::Allow(vec![
                ("RELAYCLIENT".into(), String::new()),
                ("NOTE".into(), "a b:c,d=e".into())
            ])
        );
        assert_eq!(rules[3].action, Action::Deny);
        assert_eq!(
            rules[4].network,
            Network::V4(Ipv4Addr::new(192, 168, 0, 0), 16)
        );
        assert_eq!(rules[5].network, Network::Any);
        let shown: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            shown,
            [
                "127.0.0.1/32:allow,RELAYCLIENT=\"\"",
                "10.0.0.0/8:allow",
                "::1/128:allow,RELAYCLIENT=\"\",NOTE=\"a b:c,d=e\"",
                "2001:db8::/32:deny",
                "192.168.0.0/16:deny",
                ":allow",
                ":deny",
            ]
        );
        let again = Rules::parse(shown.join("\n").as_bytes()).expect("round trip");
        for (a, b) in again.rules().iter().zip(rules) {
            assert_eq!((&a.network, &a.action), (&b.network, &b.action));
        }
    }

    #[test]
    fn most_specific_match_wins() {
        let r = Rules::parse(
            b"10.0.0.0/8:deny\n10.1.0.0/16:allow,X=\"1\"\n127.:allow,R=\"\"\n::1:deny\n127.0.0.5:deny\n127.:deny\n",
        )
        .expect("valid");
        // The longer prefix wins wherever it stands (tcprules' meaning).
        assert!(matches!(
            r.decide(ip("10.1.2.3")),
            Decision::Allow { line: 2, .. }
        ));
        assert_eq!(r.decide(ip("10.2.0.1")), Decision::Deny { line: 1 });
        // The issue's case: 127.:allow,RELAYCLIENT then 127.0.0.5:deny.
        assert_eq!(r.decide(ip("127.0.0.5")), Decision::Deny { line: 5 });
        // The same network twice: the first wins; the second is shadowed.
        let shadowed: Vec<usize> = r.shadowed().iter().map(|(r, _)| r.line).collect();
        assert_eq!(shadowed, [6]);
        assert!(matches!(
            r.decide(ip("127.0.0.6")),
            Decision::Allow { line: 3, vars } if vars.len() == 1 && vars[0].0 == "R"
        ));
        // IPv4-mapped IPv6 (a dual-stack socket) matches the IPv4 rules.
        assert!(matches!(
            r.decide(ip("::ffff:127.0.0.1")),
            Decision::Allow { line: 3, .. }
        ));
        assert_eq!(r.decide(ip("::1")), Decision::Deny { line: 4 });
        // No rule matched: allowed, no variables.
        assert_eq!(
            r.decide(ip("192.0.2.1")),
            Decision::Allow { line: 0, vars: &[] }
        );
        // Ranges (tcprules): one rule per value, in the last octet.
        let r = Rules::parse(b"10.1.2.10-12:deny\n10.4-5.:deny\n:allow\n").expect("range");
        for (a, deny) in [
            ("10.1.2.9", false),
            ("10.1.2.10", true),
            ("10.1.2.12", true),
            ("10.1.2.13", false),
            ("10.4.0.1", true),
            ("10.5.9.9", true),
            ("10.6.0.1", false),
        ] {
            assert_eq!(
                matches!(r.decide(ip(a)), Decision::Deny { .. }),
                deny,
                "{a}"
            );
        }
        for bad in ["10.1.2.12-10:deny", "10.1.2.1-256:deny", "10.1-2.3.4:deny"] {
            assert!(Rules::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(
            Rules::parse(b"=mail.example:allow").unwrap_err().kind,
            ErrorKind::HostRule
        );
        assert_eq!(
            Rules::default().decide(ip("::1")),
            Decision::Allow { line: 0, vars: &[] }
        );
    }

    #[test]
    fn network_matching() {
        let cases: &[(&str, &str, bool)] = &[
            ("", "192.0.2.1", true),
            ("", "2001:db8::1", true),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("127.0.0.1", "::1", false),
            ("127.0.0.1", "::ffff:127.0.0.1", true),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("10.0.0.0/8", "10.255.255.255", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("192.168.1.0/25", "192.168.1.127", true),
            ("192.168.1.0/25", "192.168.1.128", false),
            ("10.1.2.", "10.1.2.200", true),
            ("10.1.2.", "10.1.3.1", false),
            ("::1", "::1", true),
            ("::1/128", "::2", false),
            ("::/0", "2001:db8::1", true),
            ("::/0", "127.0.0.1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("fe80::/10", "febf::1", true),
            ("fe80::/10", "fec0::1", false),
        ];
        for (net, addr, want) in cases {
            let n = Network::parse(net).unwrap_or_else(|e| panic!("{net}: {e}"));
            assert_eq!(n.contains(ip(addr)), *want, "{net} contains {addr}");
        }
    }
}
