//! The one error type of tern-route (configuration problems only: a lookup
//! that fails is a [`crate::Resolution`], never an [`Error`]).

use std::path::PathBuf;

/// A configuration error: the settings tern-route reads are unreadable or
/// malformed. Every such error is temporary for mail (defer, never bounce)
/// until the operator fixes the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A control file is unreadable or malformed (tern-control names the
    /// file and the line).
    #[error(transparent)]
    Control(#[from] tern_control::Error),
    /// An entry of a setting given as lines (e.g. [`crate::TlsPolicies::parse`])
    /// is malformed. `entry` counts the lines given, from 1.
    #[error("{setting}: entry {entry}: {reason}")]
    Entry {
        /// The setting (`tlsdestinations`, `dnsservers`).
        setting: &'static str,
        /// 1-based position among the lines given.
        entry: usize,
        /// What is wrong.
        reason: String,
    },
    /// A line of `moreipme` or `remoteprivate` is not an address.
    #[error(transparent)]
    Guard(#[from] crate::guard::GuardError),
    /// `/etc/resolv.conf` (or the file given instead) exists but cannot be
    /// read, or is larger than [`crate::MAX_RESOLV_CONF`] bytes.
    #[error("{}: {source}", path.display())]
    ResolvConf {
        /// The file.
        path: PathBuf,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
}
