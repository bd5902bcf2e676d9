//! [`TlsPolicies`]: the outbound TLS policy table (`control/tlsdestinations`).

use tern_control::TlsDestinations;
pub use tern_control::TlsPolicy;

use crate::error::Error;

/// The `control/tlsdestinations` table: which [`TlsPolicy`] applies to mail
/// for a domain. The line syntax is tern-control's ([`TlsDestinations`]),
/// so `ternctl check` and tern-remote agree on what a valid line is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsPolicies {
    table: TlsDestinations,
}

impl TlsPolicies {
    /// Parses the setting's lines (as `Control::tlsdestinations` returns
    /// them): `domain:none|may|verify`, `.suffix:policy` (every subdomain of
    /// `suffix`), `:policy` (the default for every other domain). Empty
    /// lines and `#` comments are skipped.
    ///
    /// # Errors
    /// [`Error::Entry`] naming the first bad line (counted from 1 among the
    /// lines given) and the problem; a key given twice is an error.
    pub fn parse(lines: &[String]) -> Result<TlsPolicies, Error> {
        let bad = |entry: usize, reason: String| Error::Entry {
            setting: "tlsdestinations",
            entry,
            reason,
        };
        if let Some(i) = lines.iter().position(|l| l.contains(['\n', '\r'])) {
            return Err(bad(i + 1, "line break inside the line".into()));
        }
        let table = TlsDestinations::parse(&lines.join("\n")).map_err(|e| {
            // one line per entry, so tern-control's line number is the entry
            bad(e.line().unwrap_or(0), e.kind().to_string())
        })?;
        Ok(TlsPolicies { table })
    }

    /// The policy for mail to `domain`: the exact entry, else the longest
    /// matching `.suffix` entry, else the `:policy` default, else
    /// [`TlsPolicy::May`]. ASCII case and a trailing dot are ignored.
    pub fn lookup(&self, domain: &str) -> TlsPolicy {
        self.table.lookup(domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn bad_entries_name_the_entry() {
        let cases: &[(&[&str], usize, &str)] = &[
            (&["example.com"], 1, "no ':'"),
            (
                &["a.example:may", "b.example:sometimes"],
                2,
                "policy is not",
            ),
            (&["a.example:may", "bad_host:none"], 2, "bad domain"),
            (&["a.example:may", "A.EXAMPLE:verify"], 2, "duplicate entry"),
            (&[":may", ":none"], 2, "duplicate entry"),
            (&["a.example:may", "b.example:none\nc:may"], 2, "line break"),
            (&["a.example:may\r"], 1, "line break"),
            (&["x:"], 1, "policy is not"),
        ];
        for (given, entry, reason) in cases {
            let given: Vec<String> = given.iter().map(|s| s.to_string()).collect();
            match TlsPolicies::parse(&given) {
                Err(Error::Entry {
                    setting: "tlsdestinations",
                    entry: e,
                    reason: r,
                }) => {
                    assert_eq!(e, *entry, "{given:?}");
                    assert!(r.starts_with(reason), "{given:?}: {r}");
                }
                other => panic!("{given:?}: {other:?}"),
            }
        }
        let e = TlsPolicies::parse(&lines("x.example:maybe")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tlsdestinations: entry 1: policy is not none, may or verify"
        );
    }

    #[test]
    fn lookup_order() {
        let t = TlsPolicies::parse(&lines(
            "bank.example:verify\n.example.org:none\n.b.example.org:verify\n:may",
        ))
        .unwrap();
        assert_eq!(t.lookup("Bank.Example"), TlsPolicy::Verify);
        assert_eq!(t.lookup("bank.example."), TlsPolicy::Verify);
        assert_eq!(t.lookup("sub.bank.example"), TlsPolicy::May);
        assert_eq!(t.lookup("x.example.org"), TlsPolicy::None);
        assert_eq!(t.lookup("y.b.example.org"), TlsPolicy::Verify);
        assert_eq!(t.lookup("example.org"), TlsPolicy::May);
        let strict = TlsPolicies::parse(&lines(":verify\nold.example:none")).unwrap();
        assert_eq!(strict.lookup("any.where"), TlsPolicy::Verify);
        assert_eq!(strict.lookup("old.example"), TlsPolicy::None);
        assert_eq!(
            TlsPolicies::parse(&[]).unwrap().lookup("x.y"),
            TlsPolicy::May
        );
        assert_eq!(TlsPolicies::default().lookup("x.y"), TlsPolicy::May);
    }
}
