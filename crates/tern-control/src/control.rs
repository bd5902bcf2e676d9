//! [`Control`]: typed access to the files in `control/`.

use std::path::{Path, PathBuf};

use tern_addr::Domain;

use crate::error::{Error, ErrorKind};
use crate::home::Home;
use crate::lists::{BadMailFrom, DomainList, LmtpRoutes, SmtpRoutes, VirtualDomains};
use crate::read::read_control;
use crate::settings::{DefaultValue, Kind, Setting, Value, parse_value, setting};

/// The `control/` directory of an instance. Nothing is read until an
/// accessor is called, and nothing is cached: each call reads its file, so
/// a program pays only for the settings it uses.
#[derive(Debug, Clone)]
pub struct Control {
    dir: PathBuf,
}

/// Generates typed accessors; each reads one setting of the table.
macro_rules! accessors {
    ($($(#[$doc:meta])* $name:ident -> $ty:ty = $conv:ident;)*) => {
        $(
            $(#[$doc])*
            ///
            /// # Errors
            /// The file is unreadable or malformed (or, where the default is
            /// `me`, `control/me` is missing or malformed).
            pub fn $name(&self) -> Result<$ty, Error> {
                let value = self.get(stringify!($name))?;
                Ok($conv(value, stringify!($name)))
            }
        )*
    };
}

fn mismatch(name: &str) -> ! {
    unreachable!("SETTINGS table: the kind of {name} does not match its accessor")
}

fn host(v: Value, name: &str) -> Domain {
    match v {
        Value::Domain(d) => d,
        _ => mismatch(name),
    }
}
fn text(v: Value, name: &str) -> String {
    match v {
        Value::Text(t) => t,
        _ => mismatch(name),
    }
}
fn number(v: Value, name: &str) -> u64 {
    match v {
        Value::Number(n) => n,
        _ => mismatch(name),
    }
}
fn domains(v: Value, name: &str) -> DomainList {
    match v {
        Value::Domains(l) => l,
        _ => mismatch(name),
    }
}
fn virtuals(v: Value, name: &str) -> VirtualDomains {
    match v {
        Value::VirtualDomains(x) => x,
        _ => mismatch(name),
    }
}
fn routes(v: Value, name: &str) -> SmtpRoutes {
    match v {
        Value::SmtpRoutes(x) => x,
        _ => mismatch(name),
    }
}
fn lroutes(v: Value, name: &str) -> LmtpRoutes {
    match v {
        Value::LmtpRoutes(x) => x,
        _ => mismatch(name),
    }
}
fn bmf(v: Value, name: &str) -> BadMailFrom {
    match v {
        Value::BadMailFrom(x) => x,
        _ => mismatch(name),
    }
}
fn lines(v: Value, name: &str) -> Vec<String> {
    match v {
        Value::Lines(x) => x,
        _ => mismatch(name),
    }
}

impl Control {
    /// The `control/` directory of `home`.
    pub fn new(home: &Home) -> Control {
        Control {
            dir: home.control_dir(),
        }
    }

    /// A `control/` directory given directly.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Control {
        Control { dir: dir.into() }
    }

    /// The directory read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads `setting`: its value and whether it came from the file
    /// (`true`) or is the default (`false`).
    ///
    /// # Errors
    /// The file is unreadable or malformed; `me` is missing and needed.
    pub fn load(&self, setting: &Setting) -> Result<(Value, bool), Error> {
        let path = self.dir.join(setting.name);
        if let Some(text) = read_control(&path)?
            && let Some(v) = parse_value(setting.kind, &text).map_err(|e| e.with_path(&path))?
        {
            return Ok((v, true));
        }
        let v = match (setting.default, setting.kind) {
            (DefaultValue::Required, _) => {
                return Err(Error::new(&path, None, ErrorKind::Missing));
            }
            (DefaultValue::Me, Kind::Host) => Value::Domain(self.me()?),
            (DefaultValue::Me, Kind::Text) => Value::Text(self.me()?.to_string()),
            (DefaultValue::Me, Kind::DomainList { .. }) => {
                Value::Domains(DomainList::from_domains([&self.me()?]))
            }
            (DefaultValue::Text(t), Kind::Text | Kind::LocalPart) => Value::Text(t.to_string()),
            (DefaultValue::Text(t), Kind::Lines) => Value::Lines(vec![t.to_string()]),
            (DefaultValue::Number(n), Kind::Number { .. }) => Value::Number(n),
            (DefaultValue::Empty, Kind::DomainList { .. }) => Value::Domains(DomainList::default()),
            (DefaultValue::Empty, Kind::VirtualDomains) => {
                Value::VirtualDomains(VirtualDomains::default())
            }
            (DefaultValue::Empty, Kind::SmtpRoutes) => Value::SmtpRoutes(SmtpRoutes::default()),
            (DefaultValue::Empty, Kind::LmtpRoutes) => Value::LmtpRoutes(LmtpRoutes::default()),
            (DefaultValue::Empty, Kind::BadMailFrom) => Value::BadMailFrom(BadMailFrom::default()),
            (DefaultValue::Empty, Kind::Lines | Kind::DnsServers | Kind::TlsDestinations) => {
                Value::Lines(Vec::new())
            }
            (DefaultValue::Empty, Kind::Pem) => Value::Pem { certificates: 0 },
            (DefaultValue::Empty, Kind::Logins) => Value::Logins(Vec::new()),
            _ => unreachable!(
                "SETTINGS table: the default of {} does not fit its kind",
                setting.name
            ),
        };
        Ok((v, false))
    }

    fn get(&self, name: &str) -> Result<Value, Error> {
        let s = setting(name).unwrap_or_else(|| mismatch(name));
        self.load(s).map(|(v, _)| v)
    }

    /// `me`: this host's name. Required: a missing `control/me` is an error.
    ///
    /// # Errors
    /// Missing, empty, unreadable or malformed.
    pub fn me(&self) -> Result<Domain, Error> {
        self.get("me").map(|v| host(v, "me"))
    }

    accessors! {
        /// `locals`: domains delivered locally (default: `me`).
        locals -> DomainList = domains;
        /// `rcpthosts`: domains accepted from non-relay clients (default: none).
        rcpthosts -> DomainList = domains;
        /// `morercpthosts`: more rcpthosts entries (default: none).
        morercpthosts -> DomainList = domains;
        /// `percenthack`: domains where `%` routing is honoured (default: none).
        percenthack -> DomainList = domains;
        /// `virtualdomains` (default: none).
        virtualdomains -> VirtualDomains = virtuals;
        /// `smtproutes` (default: none).
        smtproutes -> SmtpRoutes = routes;
        /// `lmtproutes` (default: none).
        lmtproutes -> LmtpRoutes = lroutes;
        /// `badmailfrom` (default: none).
        badmailfrom -> BadMailFrom = bmf;
        /// `databytes`: largest SMTP message in bytes, 0 = no limit (default
        /// 52428800, 50 MiB).
        databytes -> u64 = number;
        /// `concurrencylocal` (default 10).
        concurrencylocal -> u64 = number;
        /// `concurrencyremote` (default 20).
        concurrencyremote -> u64 = number;
        /// `concurrencydomain`: remote deliveries at once per domain (default 10).
        concurrencydomain -> u64 = number;
        /// `dnsservers`: resolver addresses, one per line (default: /etc/resolv.conf's).
        dnsservers -> Vec<String> = lines;
        /// `tlsdestinations`: outbound TLS policy lines (default: opportunistic everywhere).
        tlsdestinations -> Vec<String> = lines;
        /// `tlsca`: the CA bundle path for `verify` destinations.
        tlsca -> Vec<String> = lines;
        /// `metricsfile`: where tern-send writes its metrics, first line
        /// (default none: `queue/state/metrics.prom`).
        metricsfile -> Vec<String> = lines;
        /// `queuelifetime` in seconds (default 604800).
        queuelifetime -> u64 = number;
        /// `timeoutsmtpd` in seconds (default 1200).
        timeoutsmtpd -> u64 = number;
        /// `maxrcpt`: most recipients per SMTP message (default 100).
        maxrcpt -> u64 = number;
        /// `rcptcheck`: 1 = refuse unknown local recipients at RCPT (default 1).
        rcptcheck -> u64 = number;
        /// `authplainloopback`: 1 = offer AUTH without TLS to loopback clients (default 0).
        authplainloopback -> u64 = number;
        /// `authconcurrency`: password checks at once on the host (default 2).
        authconcurrency -> u64 = number;
        /// `authfailures`: failures from one address before AUTH is refused (default 5).
        authfailures -> u64 = number;
        /// `authwindow`: seconds failures are remembered (default 600).
        authwindow -> u64 = number;
        /// `submissionsenders`: 1 = a submission sender must be the user's (default 1).
        submissionsenders -> u64 = number;
        /// `checkpassword`: the AUTH checker and its arguments, first line
        /// (default none: no AUTH).
        checkpassword -> Vec<String> = lines;
        /// `authcheck`: `enforce` or `tag` (default none: no checking).
        authcheck -> Vec<String> = lines;
        /// `timeoutauthcheck`: seconds to wait for tern-verify (default 20).
        timeoutauthcheck -> u64 = number;
        /// `timeoutremote` in seconds (default 1200).
        timeoutremote -> u64 = number;
        /// `timeoutconnect` in seconds (default 60).
        timeoutconnect -> u64 = number;
        /// `timeoutlocal`: seconds one local delivery may run (default 86400).
        timeoutlocal -> u64 = number;
        /// `localuidmin`: smallest uid a local delivery may run as (default 1000).
        localuidmin -> u64 = number;
        /// `localuidmax`: largest uid a local delivery may run as (default 60000).
        localuidmax -> u64 = number;
        /// `bouncefrom`: user part of bounce senders (default `MAILER-DAEMON`).
        bouncefrom -> String = text;
        /// `doublebounceto`: user part of the double-bounce recipient (default `postmaster`).
        doublebounceto -> String = text;
        /// `smtpgreeting`: text after `220 ` (default: `me`).
        smtpgreeting -> String = text;
        /// `bouncehost` (default: `me`).
        bouncehost -> Domain = host;
        /// `doublebouncehost` (default: `me`).
        doublebouncehost -> Domain = host;
        /// `defaultdomain` (default: `me`).
        defaultdomain -> Domain = host;
        /// `defaulthost` (default: `me`).
        defaulthost -> Domain = host;
        /// `plusdomain` (default: `me`).
        plusdomain -> Domain = host;
        /// `idhost` (default: `me`).
        idhost -> Domain = host;
        /// `envnoathost` (default: `me`).
        envnoathost -> Domain = host;
        /// `helohost` (default: `me`).
        helohost -> Domain = host;
        /// `localiphost` (default: `me`).
        localiphost -> Domain = host;
        /// `defaultdelivery`: dot-qmail lines for users without a `.qmail`
        /// file (default `./Maildir/`).
        defaultdelivery -> Vec<String> = lines;
        /// `moreipme`: more addresses of this host (qmail's).
        moreipme -> Vec<String> = lines;
        /// `remoteprivate`: private networks remote delivery may use.
        remoteprivate -> Vec<String> = lines;
        /// `programpath`: `PATH` of `|program` deliveries (default
        /// `/usr/local/bin:/usr/bin:/bin`).
        programpath -> String = text;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SETTINGS;
    use crate::testutil::TempDir;

    #[test]
    fn malformed_files_are_errors_naming_file_and_line() {
        let t = TempDir::new();
        t.control("me", "mail.example.com\n");
        t.control("databytes", "12x\n");
        t.control("locals", "localhost\n\n# c\nbad host\n");
        t.control("timeoutconnect", "0\n");
        let c = Control::in_dir(t.path().join("control"));
        let e = c.databytes().unwrap_err();
        assert_eq!(e.path(), Some(t.path().join("control/databytes").as_path()));
        assert_eq!(e.line(), Some(1));
        assert!(
            e.to_string().ends_with(
                "control/databytes: line 1: not a number (expected decimal digits only)"
            ),
            "{e}"
        );
        let e = c.locals().unwrap_err();
        assert_eq!(e.line(), Some(4));
        assert!(
            e.to_string().contains("control/locals: line 4: bad domain"),
            "{e}"
        );
        assert!(matches!(
            c.timeoutconnect().unwrap_err().kind(),
            ErrorKind::OutOfRange { min: 1, .. }
        ));
    }

    #[test]
    fn missing_me_is_an_error_and_breaks_its_dependants() {
        let t = TempDir::new();
        let c = Control::in_dir(t.path().join("control"));
        assert!(matches!(c.me().unwrap_err().kind(), ErrorKind::Missing));
        assert!(matches!(
            c.defaulthost().unwrap_err().kind(),
            ErrorKind::Missing
        ));
        // settings that do not depend on me still have defaults
        assert_eq!(c.databytes().unwrap(), 52_428_800);
        assert!(c.rcpthosts().unwrap().is_empty());
        t.control("me", "\n");
        assert!(matches!(c.me().unwrap_err().kind(), ErrorKind::Missing));
    }

    #[test]
    fn defaults_and_fallbacks() {
        let t = TempDir::new();
        t.control("me", "Mail.Example.com \n");
        let c = Control::in_dir(t.path().join("control"));
        // every setting in the table loads its default (this also checks
        // that each default fits its kind)
        for s in SETTINGS {
            let (_, from_file) = c.load(s).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            assert_eq!(from_file, s.name == "me", "{}", s.name);
        }
        assert_eq!(c.me().unwrap().as_str(), "Mail.Example.com");
        assert_eq!(c.defaulthost().unwrap().as_str(), "Mail.Example.com");
        assert_eq!(c.helohost().unwrap().as_str(), "Mail.Example.com");
        assert_eq!(c.smtpgreeting().unwrap(), "Mail.Example.com");
        assert!(c.locals().unwrap().contains("mail.example.com"));
        assert!(!c.locals().unwrap().contains("localhost"));
        assert!(c.rcpthosts().unwrap().is_empty());
        assert_eq!(c.databytes().unwrap(), 52_428_800);
        assert_eq!(c.concurrencylocal().unwrap(), 10);
        assert_eq!(c.concurrencyremote().unwrap(), 20);
        assert_eq!(c.queuelifetime().unwrap(), 604_800);
        assert_eq!(c.timeoutsmtpd().unwrap(), 1200);
        assert_eq!(c.timeoutremote().unwrap(), 1200);
        assert_eq!(c.timeoutconnect().unwrap(), 60);
        assert_eq!(c.timeoutlocal().unwrap(), 86_400);
        assert_eq!(c.localuidmin().unwrap(), 1000);
        assert_eq!(c.localuidmax().unwrap(), 60_000);
        assert_eq!(c.bouncefrom().unwrap(), "MAILER-DAEMON");
        assert_eq!(c.doublebounceto().unwrap(), "postmaster");
        assert_eq!(c.defaultdelivery().unwrap(), vec!["./Maildir/".to_string()]);
        for d in [
            c.bouncehost(),
            c.doublebouncehost(),
            c.defaultdomain(),
            c.plusdomain(),
            c.idhost(),
            c.envnoathost(),
            c.localiphost(),
        ] {
            assert_eq!(d.unwrap().as_str(), "Mail.Example.com");
        }
        assert!(c.morercpthosts().unwrap().is_empty());
        assert!(c.percenthack().unwrap().is_empty());
        assert!(c.virtualdomains().unwrap().entries().is_empty());
        assert!(c.smtproutes().unwrap().entries().is_empty());
        assert!(c.badmailfrom().unwrap().entries().is_empty());
    }

    #[test]
    fn files_override_defaults() {
        let t = TempDir::new();
        t.control("me", "mail.example.com\n");
        t.control("defaulthost", "example.com\n");
        t.control("databytes", "10485760\n");
        t.control("locals", "localhost\nmail.example.com\n");
        t.control("rcpthosts", "example.com\n.example.com\n");
        t.control("smtpgreeting", "mail.example.com ready\n");
        t.control("defaultdelivery", "./Maildir/\n");
        t.control("badmailfrom", "@spam.example\n");
        let c = Control::in_dir(t.path().join("control"));
        assert_eq!(c.defaulthost().unwrap().as_str(), "example.com");
        assert_eq!(c.databytes().unwrap(), 10_485_760);
        assert!(c.locals().unwrap().contains("LOCALHOST"));
        assert!(c.rcpthosts().unwrap().contains("a.example.com"));
        assert_eq!(c.smtpgreeting().unwrap(), "mail.example.com ready");
        assert!(c.badmailfrom().unwrap().matches(b"x@spam.example"));
    }
}
