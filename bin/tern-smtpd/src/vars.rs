//! The connection's variables: what tcpserver, inetd or systemd put in the
//! environment of a one-connection tern-smtpd (`TCPREMOTEIP`,
//! `RELAYCLIENT`, a rule's `DATABYTES`...), or, for a reused worker under
//! tern-listen, what the listener sent with the connection. A worker's own
//! environment never holds per-connection names (tern-listen removes them
//! when it starts the worker), so one connection's variables cannot reach
//! the next.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

/// Variables for one connection: the listener's pairs first, then the
/// process environment.
#[derive(Debug, Default, Clone)]
pub(crate) struct Vars {
    conn: Vec<(String, String)>,
}

impl Vars {
    /// Only the process environment (one connection per process).
    pub(crate) fn process() -> Vars {
        Vars::default()
    }

    /// The pairs a listener sent with a connection.
    pub(crate) fn connection(pairs: Vec<(String, String)>) -> Vars {
        Vars { conn: pairs }
    }

    /// The value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<OsString> {
        match self.conn.iter().find(|(k, _)| k == name) {
            Some((_, v)) => Some(OsString::from(v)),
            None => std::env::var_os(name),
        }
    }

    /// The value of `name` as bytes.
    pub(crate) fn bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.get(name).map(|v| v.as_bytes().to_vec())
    }

    /// Set and not empty.
    pub(crate) fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| !v.is_empty())
    }

    /// A number, when set.
    pub(crate) fn number(&self, name: &str) -> Result<Option<u64>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(|| format!("{name} is not a number")),
        }
    }

    /// The listener's pairs, for the programs this connection runs (the
    /// checkpassword program sees them as it would under tcpserver).
    pub(crate) fn pairs(&self) -> &[(String, String)] {
        &self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_pairs_come_first_and_stay_with_their_connection() {
        let v = Vars::connection(vec![
            ("TCPREMOTEIP".into(), "192.0.2.7".into()),
            ("DATABYTES".into(), "1000".into()),
            ("SMTPS".into(), String::new()),
        ]);
        assert_eq!(v.bytes("TCPREMOTEIP").unwrap(), b"192.0.2.7");
        assert_eq!(v.number("DATABYTES"), Ok(Some(1000)));
        assert!(!v.flag("SMTPS"));
        let next = Vars::connection(vec![]);
        assert!(next.get("TCPREMOTEIP").is_none() || std::env::var_os("TCPREMOTEIP").is_some());
        let bad = Vars::connection(vec![("DATABYTES".into(), "x".into())]);
        assert!(bad.number("DATABYTES").is_err());
    }
}
