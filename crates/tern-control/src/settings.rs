//! The one table of settings, their kinds, defaults and parsed values.

use tern_addr::{Charset, Domain, LocalPart};

use crate::error::{Error, ErrorKind};
use crate::lists::{BadMailFrom, DomainList, LmtpRoutes, SmtpRoutes, VirtualDomains};
use crate::outbound::{DnsServers, TlsDestinations};
use crate::read::{first_line, list_lines};

/// The format of a setting's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// First line: a host name or address literal (ASCII).
    Host,
    /// First line: printable text.
    Text,
    /// First line: a local part (ASCII).
    LocalPart,
    /// First line: a decimal number within bounds.
    Number {
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// One domain per line; `.suffix` lines too when `suffixes`.
    DomainList {
        /// Whether `.suffix` entries are allowed.
        suffixes: bool,
    },
    /// `virtualdomains` lines.
    VirtualDomains,
    /// `smtproutes` lines.
    SmtpRoutes,
    /// `lmtproutes` lines.
    LmtpRoutes,
    /// `badmailfrom` lines.
    BadMailFrom,
    /// Lines of text (`#` lines and blank lines skipped).
    Lines,
    /// `dnsservers` lines (`IP` or `[IP]:port`), checked; the value is
    /// [`Value::Lines`], parsed again by tern-route.
    DnsServers,
    /// `tlsdestinations` lines (`domain:none|may|verify`), checked; the
    /// value is [`Value::Lines`], parsed again by tern-route.
    TlsDestinations,
    /// A PEM certificate chain and private key; reports never show it.
    Pem,
    /// `login:hash` lines (`passwords`); reports never show the hashes.
    Logins,
}

impl Kind {
    /// True for kinds read as lists (every line), false for first-line kinds.
    pub fn is_list(self) -> bool {
        !matches!(
            self,
            Kind::Host | Kind::Text | Kind::LocalPart | Kind::Number { .. }
        )
    }

    /// A short description of the format, for documentation and reports.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Host => "host name (first line)",
            Kind::Text => "text (first line)",
            Kind::LocalPart => "local part (first line)",
            Kind::Number { .. } => "number (first line)",
            Kind::DomainList { suffixes: false } => "domains, one per line",
            Kind::DomainList { suffixes: true } => "domains or .suffixes, one per line",
            Kind::VirtualDomains => "[user@]domain:prepend, .suffix:prepend, :prepend lines",
            Kind::SmtpRoutes => "domain:relay[:port], .suffix:relay, :relay lines",
            Kind::LmtpRoutes => "domain:ip:port or domain:/socket, .suffix:server, :server lines",
            Kind::BadMailFrom => "user@domain or @domain lines",
            Kind::Lines => "lines",
            Kind::DnsServers => "IP or [IP]:port lines",
            Kind::TlsDestinations => "domain:none|may|verify, .suffix:policy, :policy lines",
            Kind::Pem => "PEM certificate chain and private key",
            Kind::Logins => "login:argon2id-hash lines",
        }
    }
}

/// What a setting is when its file is missing (or, for first-line kinds, empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// No default: the file must exist (only `me`).
    Required,
    /// The value of `me` (for lists: a list holding `me`).
    Me,
    /// This text.
    Text(&'static str),
    /// This number.
    Number(u64),
    /// An empty list.
    Empty,
}

/// One setting: a file in `control/`.
#[derive(Debug)]
pub struct Setting {
    /// File name in `control/`.
    pub name: &'static str,
    /// Format.
    pub kind: Kind,
    /// Value when the file is missing.
    pub default: DefaultValue,
    /// Programs that read it.
    pub readers: &'static str,
    /// One-line meaning.
    pub doc: &'static str,
}

const SECS_MAX: u64 = 86_400;

/// Default `databytes`: 50 MiB, what large providers accept. qmail's
/// default was 0 (no limit); an explicit `0` in `control/databytes` still
/// means that.
pub const DEFAULT_DATABYTES: u64 = 52_428_800;

/// Every setting Tern reads, in documentation order. qmail's names and
/// meanings are kept; `defaultdelivery` is Tern's own.
#[rustfmt::skip]
pub static SETTINGS: &[Setting] = &[
    Setting { name: "me", kind: Kind::Host, default: DefaultValue::Required, readers: "all",
        doc: "this host's fully qualified name; the default for most other host settings" },
    Setting { name: "locals", kind: Kind::DomainList { suffixes: false }, default: DefaultValue::Me, readers: "tern-send",
        doc: "domains whose mail is delivered locally" },
    Setting { name: "rcpthosts", kind: Kind::DomainList { suffixes: true }, default: DefaultValue::Empty, readers: "tern-smtpd",
        doc: "domains accepted from clients that may not relay; missing means none (never an open relay)" },
    Setting { name: "morercpthosts", kind: Kind::DomainList { suffixes: true }, default: DefaultValue::Empty, readers: "tern-smtpd",
        doc: "more rcpthosts entries (plain text; Tern does not read morercpthosts.cdb)" },
    Setting { name: "virtualdomains", kind: Kind::VirtualDomains, default: DefaultValue::Empty, readers: "tern-send",
        doc: "virtual users and domains: the local part gets prepend- in front" },
    Setting { name: "smtproutes", kind: Kind::SmtpRoutes, default: DefaultValue::Empty, readers: "tern-remote",
        doc: "artificial SMTP routes instead of MX lookups" },
    Setting { name: "lmtproutes", kind: Kind::LmtpRoutes, default: DefaultValue::Empty, readers: "tern-remote",
        doc: "domains delivered to an LMTP server (IP:port or a Unix socket) instead of by SMTP; consulted before smtproutes (Tern's own)" },
    Setting { name: "percenthack", kind: Kind::DomainList { suffixes: false }, default: DefaultValue::Empty, readers: "tern-send",
        doc: "domains where user%host@domain is rewritten to user@host" },
    Setting { name: "databytes", kind: Kind::Number { min: 0, max: u64::MAX }, default: DefaultValue::Number(DEFAULT_DATABYTES), readers: "tern-smtpd",
        doc: "largest message accepted over SMTP, in bytes (advertised as SIZE); 0 means no limit" },
    Setting { name: "concurrencylocal", kind: Kind::Number { min: 1, max: 1000 }, default: DefaultValue::Number(10), readers: "tern-send",
        doc: "most local deliveries at once" },
    Setting { name: "concurrencyremote", kind: Kind::Number { min: 1, max: 1000 }, default: DefaultValue::Number(20), readers: "tern-send, tern-rspawn",
        doc: "most remote deliveries at once" },
    Setting { name: "concurrencydomain", kind: Kind::Number { min: 1, max: 1000 }, default: DefaultValue::Number(10), readers: "tern-send",
        doc: "most remote deliveries at once to one destination domain (so one slow domain cannot take every remote slot)" },
    Setting { name: "queuelifetime", kind: Kind::Number { min: 0, max: 315_360_000 }, default: DefaultValue::Number(604_800), readers: "tern-send",
        doc: "seconds a message may stay in the queue before temporary failures become permanent" },
    Setting { name: "bouncefrom", kind: Kind::LocalPart, default: DefaultValue::Text("MAILER-DAEMON"), readers: "tern-send",
        doc: "user part of the From: address of bounces" },
    Setting { name: "bouncehost", kind: Kind::Host, default: DefaultValue::Me, readers: "tern-send",
        doc: "host part of the From: address of bounces" },
    Setting { name: "doublebounceto", kind: Kind::LocalPart, default: DefaultValue::Text("postmaster"), readers: "tern-send",
        doc: "user part of the address that receives double bounces" },
    Setting { name: "doublebouncehost", kind: Kind::Host, default: DefaultValue::Me, readers: "tern-send",
        doc: "host part of the address that receives double bounces" },
    Setting { name: "defaultdomain", kind: Kind::Host, default: DefaultValue::Me, readers: "tern-inject",
        doc: "appended to host names without a dot in header addresses" },
    Setting { name: "defaulthost", kind: Kind::Host, default: DefaultValue::Me, readers: "tern-inject",
        doc: "host for header addresses without @" },
    Setting { name: "plusdomain", kind: Kind::Host, default: DefaultValue::Me, readers: "tern-inject",
        doc: "appended to host names ending in + in header addresses" },
    Setting { name: "idhost", kind: Kind::Host, default: DefaultValue::Me, readers: "tern-inject",
        doc: "host part of generated Message-IDs" },
    Setting { name: "envnoathost", kind: Kind::Host, default: DefaultValue::Me, readers: "tern-send",
        doc: "domain added to envelope recipients without @" },
    Setting { name: "helohost", kind: Kind::Host, default: DefaultValue::Me, readers: "tern-remote",
        doc: "name sent in HELO/EHLO" },
    Setting { name: "localiphost", kind: Kind::Host, default: DefaultValue::Me, readers: "tern-smtpd",
        doc: "name that replaces this host's own [IP] literal in recipient addresses" },
    Setting { name: "smtpgreeting", kind: Kind::Text, default: DefaultValue::Me, readers: "tern-smtpd",
        doc: "text after 220 in the SMTP greeting" },
    Setting { name: "timeoutsmtpd", kind: Kind::Number { min: 1, max: SECS_MAX }, default: DefaultValue::Number(1200), readers: "tern-smtpd",
        doc: "seconds tern-smtpd waits for each read or write" },
    Setting { name: "timeoutremote", kind: Kind::Number { min: 1, max: SECS_MAX }, default: DefaultValue::Number(1200), readers: "tern-remote",
        doc: "seconds tern-remote waits for each reply" },
    Setting { name: "timeoutconnect", kind: Kind::Number { min: 1, max: SECS_MAX }, default: DefaultValue::Number(60), readers: "tern-remote",
        doc: "seconds tern-remote waits for a connection" },
    Setting { name: "dnsservers", kind: Kind::DnsServers, default: DefaultValue::Empty, readers: "tern-remote",
        doc: "DNS servers for MX and address lookups, one IP or [IP]:port per line; empty means those of /etc/resolv.conf" },
    Setting { name: "tlsdestinations", kind: Kind::TlsDestinations, default: DefaultValue::Empty, readers: "tern-remote",
        doc: "outbound TLS policy per domain: domain:none|may|verify (.suffix and empty domain allowed); default may (opportunistic)" },
    Setting { name: "tlsca", kind: Kind::Lines, default: DefaultValue::Text("/etc/ssl/certs/ca-certificates.crt"), readers: "tern-remote",
        doc: "CA bundle (PEM file path) trusted for tlsdestinations verify" },
    Setting { name: "moreipme", kind: Kind::Lines, default: DefaultValue::Empty, readers: "tern-remote",
        doc: "more addresses of this host (NAT, balancers) besides its interfaces; an MX there is this host" },
    Setting { name: "metricsfile", kind: Kind::Lines, default: DefaultValue::Empty, readers: "tern-send, ternctl",
        doc: "where tern-send writes its OpenMetrics file (absolute path; empty: queue/state/metrics.prom)" },
    Setting { name: "remoteprivate", kind: Kind::Lines, default: DefaultValue::Empty, readers: "tern-remote",
        doc: "private networks (address/length) remote delivery may connect to when DNS or an address literal names them" },
    Setting { name: "timeoutlocal", kind: Kind::Number { min: 1, max: 604_800 }, default: DefaultValue::Number(86_400), readers: "tern-lspawn",
        doc: "seconds one local delivery may run before tern-lspawn kills it (a temporary failure)" },
    Setting { name: "programpath", kind: Kind::Text, default: DefaultValue::Text("/usr/local/bin:/usr/bin:/bin"), readers: "tern-local",
        doc: "PATH of |program deliveries; a site that keeps qmail's tools adds qmail's bin directory (e.g. /var/qmail/bin)" },
    Setting { name: "localuidmin", kind: Kind::Number { min: 1, max: 4_294_967_294 }, default: DefaultValue::Number(1000), readers: "tern-lspawn, tern-smtpd, ternctl",
        doc: "smallest uid a local delivery may run as in a system instance (the alias user is always allowed; uid 0 never)" },
    Setting { name: "localuidmax", kind: Kind::Number { min: 1, max: 4_294_967_294 }, default: DefaultValue::Number(60_000), readers: "tern-lspawn, tern-smtpd, ternctl",
        doc: "largest uid a local delivery may run as in a system instance" },
    Setting { name: "badmailfrom", kind: Kind::BadMailFrom, default: DefaultValue::Empty, readers: "tern-smtpd",
        doc: "envelope senders refused (every RCPT gets 553)" },
    Setting { name: "maxrcpt", kind: Kind::Number { min: 1, max: 10_000 }, default: DefaultValue::Number(100), readers: "tern-smtpd",
        doc: "most recipients accepted per SMTP message; further RCPTs get 452 4.5.3" },
    Setting { name: "rcptcheck", kind: Kind::Number { min: 0, max: 1 }, default: DefaultValue::Number(1), readers: "tern-smtpd",
        doc: "1: refuse unknown local recipients at RCPT (550 5.1.1); 0: accept every local address" },
    Setting { name: "servercert.pem", kind: Kind::Pem, default: DefaultValue::Empty, readers: "tern-smtpd",
        doc: "TLS certificate chain and private key (PEM, one file); missing means no STARTTLS" },
    Setting { name: "checkpassword", kind: Kind::Lines, default: DefaultValue::Empty, readers: "tern-smtpd",
        doc: "checkpassword program (absolute path) and its arguments for SMTP AUTH; empty means no AUTH" },
    Setting { name: "authplainloopback", kind: Kind::Number { min: 0, max: 1 }, default: DefaultValue::Number(0), readers: "tern-smtpd",
        doc: "1: also offer SMTP AUTH without TLS to loopback clients; 0: AUTH only over TLS" },
    Setting { name: "authconcurrency", kind: Kind::Number { min: 1, max: 64 }, default: DefaultValue::Number(2), readers: "tern-smtpd",
        doc: "at most this many checkpassword programs (password verifications) run at once on the host; others wait, then get 454" },
    Setting { name: "authfailures", kind: Kind::Number { min: 1, max: 1000 }, default: DefaultValue::Number(5), readers: "tern-smtpd",
        doc: "after this many failed AUTH attempts from one client address (any connections) within authwindow, AUTH from it gets 454 without a check" },
    Setting { name: "authwindow", kind: Kind::Number { min: 1, max: 86_400 }, default: DefaultValue::Number(600), readers: "tern-smtpd",
        doc: "seconds a client address's AUTH failures are remembered (from the last one)" },
    Setting { name: "submissionsenders", kind: Kind::Number { min: 0, max: 1 }, default: DefaultValue::Number(1), readers: "tern-smtpd",
        doc: "1: in submission mode the envelope sender must belong to the authenticated user (553 5.7.1); 0: any sender" },
    Setting { name: "passwords", kind: Kind::Logins, default: DefaultValue::Empty, readers: "tern-checkpassword",
        doc: "SMTP AUTH logins and their argon2id hashes, written by ternctl passwd; never displayed" },
    Setting { name: "authcheck", kind: Kind::Lines, default: DefaultValue::Empty, readers: "tern-smtpd, tern-start, tern-verify",
        doc: "inbound SPF/DKIM/DMARC/ARC checking of mail from non-relay clients: enforce (DMARC p=reject refused with 550 5.7.1) or tag (results only); missing: no checking" },
    Setting { name: "timeoutauthcheck", kind: Kind::Number { min: 1, max: 600 }, default: DefaultValue::Number(20), readers: "tern-smtpd",
        doc: "seconds tern-smtpd waits for tern-verify's answer for one message; after it the message is accepted unchecked" },
    Setting { name: "defaultdelivery", kind: Kind::Lines, default: DefaultValue::Text("./Maildir/"), readers: "tern-lspawn",
        doc: "delivery instructions (dot-qmail lines) for users without a .qmail file" },
];

/// The setting called `name`, if Tern has one.
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// A setting's effective value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// [`Kind::Host`].
    Domain(Domain),
    /// [`Kind::Text`] and [`Kind::LocalPart`].
    Text(String),
    /// [`Kind::Number`].
    Number(u64),
    /// [`Kind::DomainList`].
    Domains(DomainList),
    /// [`Kind::VirtualDomains`].
    VirtualDomains(VirtualDomains),
    /// [`Kind::SmtpRoutes`].
    SmtpRoutes(SmtpRoutes),
    /// [`Kind::LmtpRoutes`].
    LmtpRoutes(LmtpRoutes),
    /// [`Kind::BadMailFrom`].
    BadMailFrom(BadMailFrom),
    /// [`Kind::Lines`].
    Lines(Vec<String>),
    /// [`Kind::Pem`]: how many certificates; the key is not kept.
    Pem {
        /// `CERTIFICATE` sections.
        certificates: usize,
    },
    /// [`Kind::Logins`]: the logins; the hashes are not kept.
    Logins(Vec<String>),
}

impl Value {
    /// The value as lines of text, for reports (an empty list gives none).
    pub fn display_lines(&self) -> Vec<String> {
        match self {
            Value::Domain(d) => vec![d.to_string()],
            Value::Text(t) => vec![t.clone()],
            Value::Number(n) => vec![n.to_string()],
            Value::Domains(l) => l.entries().to_vec(),
            Value::VirtualDomains(v) => v.entries().to_vec(),
            Value::SmtpRoutes(r) => r.entries().to_vec(),
            Value::LmtpRoutes(r) => r.entries().to_vec(),
            Value::BadMailFrom(b) => b.entries().to_vec(),
            Value::Lines(l) => l.clone(),
            Value::Logins(l) if l.is_empty() => Vec::new(),
            Value::Logins(l) => vec![format!(
                "{} login(s): {} (hashes not shown)",
                l.len(),
                l.join(" ")
            )],
            Value::Pem { certificates: 0 } => Vec::new(),
            Value::Pem { certificates } => vec![format!(
                "{certificates} certificate(s) and a private key (not shown)"
            )],
        }
    }
}

fn parse_number(text: &str, min: u64, max: u64) -> Result<u64, Error> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::at_line(
            1,
            ErrorKind::BadNumber("not a number (expected decimal digits only)"),
        ));
    }
    let n: u64 = text
        .parse()
        .map_err(|_| Error::at_line(1, ErrorKind::BadNumber("number too large")))?;
    if n < min || n > max {
        return Err(Error::at_line(1, ErrorKind::OutOfRange { min, max }));
    }
    Ok(n)
}

/// Parses a file's text as `kind`. `Ok(None)` means "not set" (a first-line
/// kind whose first line is empty, or a `Lines` file without lines): the
/// default applies. A list file without entries is an empty list, not
/// "not set".
///
/// # Errors
/// The malformed line (the file path is added by the caller).
pub fn parse_value(kind: Kind, text: &str) -> Result<Option<Value>, Error> {
    if !kind.is_list() {
        let Some(line) = first_line(text) else {
            return Ok(None);
        };
        let v = match kind {
            Kind::Host => Value::Domain(Domain::parse(line.as_bytes(), Charset::Ascii).map_err(
                |source| {
                    Error::at_line(
                        1,
                        ErrorKind::BadAddress {
                            what: "host name",
                            source,
                        },
                    )
                },
            )?),
            Kind::LocalPart => {
                LocalPart::parse(line.as_bytes(), Charset::Ascii).map_err(|source| {
                    Error::at_line(
                        1,
                        ErrorKind::BadAddress {
                            what: "local part",
                            source,
                        },
                    )
                })?;
                Value::Text(line.to_string())
            }
            Kind::Number { min, max } => Value::Number(parse_number(line, min, max)?),
            _ => {
                if line.chars().any(|c| c.is_control() && c != '\t') {
                    return Err(Error::at_line(
                        1,
                        ErrorKind::Syntax("control character in text"),
                    ));
                }
                Value::Text(line.to_string())
            }
        };
        return Ok(Some(v));
    }
    Ok(Some(match kind {
        Kind::DomainList { suffixes } => Value::Domains(DomainList::parse(text, suffixes)?),
        Kind::VirtualDomains => Value::VirtualDomains(VirtualDomains::parse(text)?),
        Kind::SmtpRoutes => Value::SmtpRoutes(SmtpRoutes::parse(text)?),
        Kind::LmtpRoutes => Value::LmtpRoutes(LmtpRoutes::parse(text)?),
        Kind::BadMailFrom => Value::BadMailFrom(BadMailFrom::parse(text)?),
        Kind::DnsServers | Kind::TlsDestinations => {
            // checked here, kept as lines (tern-route parses them again);
            // like Lines, a file without entries means the default
            let entries = if kind == Kind::DnsServers {
                DnsServers::parse(text)?.entries().to_vec()
            } else {
                TlsDestinations::parse(text)?.entries().to_vec()
            };
            if entries.is_empty() {
                return Ok(None);
            }
            Value::Lines(entries)
        }
        Kind::Pem => {
            let begins = || {
                text.lines()
                    .filter_map(|l| l.trim_end().strip_prefix("-----BEGIN "))
            };
            if text.trim().is_empty() {
                return Ok(None);
            }
            let certificates = begins().filter(|l| *l == "CERTIFICATE-----").count();
            if certificates == 0 {
                return Err(Error::at_line(
                    1,
                    ErrorKind::Syntax("no CERTIFICATE section"),
                ));
            }
            if !begins().any(|l| l.ends_with("PRIVATE KEY-----")) {
                return Err(Error::at_line(
                    1,
                    ErrorKind::Syntax("no PRIVATE KEY section"),
                ));
            }
            Value::Pem { certificates }
        }
        Kind::Logins => {
            let mut logins = Vec::new();
            for (n, line) in list_lines(text) {
                let Some((login, hash)) = line.split_once(':') else {
                    return Err(Error::at_line(n, ErrorKind::Syntax("no ':' (login:hash)")));
                };
                if login.is_empty() || login.contains(char::is_whitespace) {
                    return Err(Error::at_line(n, ErrorKind::Syntax("bad login")));
                }
                if !hash.starts_with("$argon2id$") {
                    return Err(Error::at_line(
                        n,
                        ErrorKind::Syntax("the hash is not an argon2id PHC string"),
                    ));
                }
                logins.push(login.to_string());
            }
            Value::Logins(logins)
        }
        _ => {
            let lines: Vec<String> = list_lines(text).map(|(_, l)| l.to_string()).collect();
            if lines.is_empty() {
                return Ok(None);
            }
            Value::Lines(lines)
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values() {
        let num = Kind::Number { min: 1, max: 1000 };
        let cases: &[(Kind, &str, &str)] = &[
            (num, "12x\n", "not a number (expected decimal digits only)"),
            (num, "-1\n", "not a number (expected decimal digits only)"),
            (num, " 12\n", "not a number (expected decimal digits only)"),
            (num, "+12\n", "not a number (expected decimal digits only)"),
            (num, "1.5\n", "not a number (expected decimal digits only)"),
            (num, "99999999999999999999999\n", "number too large"),
            (num, "0\n", "number out of range (allowed: 1 to 1000)"),
            (num, "1001\n", "number out of range (allowed: 1 to 1000)"),
            (
                Kind::Host,
                "bad_host\n",
                "bad host name: character not allowed in a domain (at byte 3)",
            ),
            (
                Kind::Host,
                "h\u{f6}st\n",
                "bad host name: non-ASCII character not allowed here (at byte 1)",
            ),
            (
                Kind::LocalPart,
                "a b\n",
                "bad local part: character not allowed in a local part (at byte 1)",
            ),
            (Kind::Text, "hello\u{1b}[31m\n", "control character in text"),
        ];
        for (kind, text, msg) in cases {
            let e = parse_value(*kind, text).expect_err("should be rejected");
            assert_eq!(e.line(), Some(1));
            assert_eq!(e.kind().to_string(), *msg, "{text:?}");
        }
    }

    #[test]
    fn good_values() {
        let num = Kind::Number { min: 1, max: 1000 };
        assert_eq!(
            parse_value(num, "1000 \r\nignored").unwrap(),
            Some(Value::Number(1000))
        );
        assert_eq!(parse_value(num, "\n5\n").unwrap(), None);
        assert_eq!(parse_value(num, "").unwrap(), None);
        assert_eq!(
            parse_value(Kind::Text, "mail.example.com ESMTP\tready").unwrap(),
            Some(Value::Text("mail.example.com ESMTP\tready".into()))
        );
        assert_eq!(
            parse_value(Kind::Lines, "# c\n./Maildir/\n|prog arg\n").unwrap(),
            Some(Value::Lines(vec!["./Maildir/".into(), "|prog arg".into()]))
        );
        assert_eq!(
            parse_value(Kind::Lines, "# only a comment\n").unwrap(),
            None
        );
        let pem = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n\
                   -----BEGIN EC PRIVATE KEY-----\nsecret\n-----END EC PRIVATE KEY-----\n";
        let v = parse_value(Kind::Pem, pem).unwrap().unwrap();
        assert_eq!(v, Value::Pem { certificates: 2 });
        assert!(!v.display_lines().concat().contains("secret"));
        assert_eq!(parse_value(Kind::Pem, "\n").unwrap(), None);
        for bad in [
            "joe\n",
            ":$argon2id$x\n",
            "jo e:$argon2id$x\n",
            "joe:plain\n",
        ] {
            assert!(parse_value(Kind::Logins, bad).is_err(), "{bad}");
        }
        let v = parse_value(Kind::Logins, "# c\njoe:$argon2id$v=19$secrethash\n")
            .unwrap()
            .unwrap();
        assert_eq!(v, Value::Logins(vec!["joe".into()]));
        assert!(!v.display_lines().concat().contains("secrethash"));
        for bad in [
            "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n",
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
            "junk\n",
        ] {
            assert!(parse_value(Kind::Pem, bad).is_err(), "{bad}");
        }
        // a list file without entries is an empty list, not "unset"
        match parse_value(Kind::DomainList { suffixes: false }, "# none\n").unwrap() {
            Some(Value::Domains(l)) => assert!(l.is_empty()),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// docs/control.md must document every setting with its default.
    #[test]
    fn docs_cover_every_setting() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/control.md");
        let doc = std::fs::read_to_string(path).expect("docs/control.md exists");
        for s in SETTINGS {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", s.name)))
                .unwrap_or_else(|| panic!("docs/control.md has no table row for {}", s.name));
            let default = match s.default {
                DefaultValue::Required => "none (required)".to_string(),
                DefaultValue::Me => "*me*".to_string(),
                DefaultValue::Text(t) => format!("`{t}`"),
                DefaultValue::Number(n) => format!("`{n}`"),
                DefaultValue::Empty => "empty".to_string(),
            };
            assert!(
                row.contains(&format!("| {default} |")),
                "docs/control.md: default of {} should read {default}",
                s.name
            );
            assert!(
                row.contains(s.readers),
                "docs/control.md: readers of {}",
                s.name
            );
            if let Kind::Number { min, max } = s.kind {
                let range = if max == u64::MAX {
                    format!("{min} to 2^64-1")
                } else {
                    format!("{min} to {max}")
                };
                assert!(row.contains(&range), "docs/control.md: range of {}", s.name);
            }
        }
    }

    #[test]
    fn table_is_consistent() {
        let mut names: Vec<_> = SETTINGS.iter().map(|s| s.name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate setting names");
        for s in SETTINGS {
            assert!(!s.doc.is_empty() && !s.readers.is_empty(), "{}", s.name);
            match (s.kind, s.default) {
                (Kind::Number { min, max }, DefaultValue::Number(d)) => {
                    assert!(min <= d && d <= max, "{}: default out of range", s.name)
                }
                (Kind::Number { .. }, _) => panic!("{}: number without numeric default", s.name),
                (_, DefaultValue::Number(_)) => panic!("{}: numeric default on non-number", s.name),
                (k, DefaultValue::Empty) => assert!(k.is_list(), "{}", s.name),
                _ => {}
            }
        }
        for name in [
            "me",
            "locals",
            "rcpthosts",
            "morercpthosts",
            "virtualdomains",
            "smtproutes",
            "lmtproutes",
            "databytes",
            "concurrencylocal",
            "concurrencyremote",
            "concurrencydomain",
            "queuelifetime",
            "bouncefrom",
            "bouncehost",
            "doublebounceto",
            "doublebouncehost",
            "defaultdomain",
            "defaulthost",
            "plusdomain",
            "idhost",
            "envnoathost",
            "helohost",
            "localiphost",
            "smtpgreeting",
            "timeoutsmtpd",
            "timeoutremote",
            "timeoutconnect",
            "dnsservers",
            "tlsdestinations",
            "tlsca",
            "timeoutlocal",
            "localuidmin",
            "localuidmax",
            "badmailfrom",
            "percenthack",
            "defaultdelivery",
        ] {
            assert!(setting(name).is_some(), "{name} missing from SETTINGS");
        }
        assert!(setting("qmqpservers").is_none());
    }
}
