//! `tern-control`: where a Tern instance lives and what its configuration says.
//!
//! * [`Home`] resolves the instance directory (`TERN_HOME`, honoured only
//!   when the program is not running with elevated privileges; otherwise the
//!   compiled-in [`DEFAULT_HOME`]) and names its subdirectories.
//! * [`Control`] reads `control/` files with qmail's semantics (first line
//!   for single values, blank lines and `#` comments skipped in lists,
//!   missing file = default), but strictly: a malformed file is an [`Error`]
//!   naming the file, the line and the problem, never a silent default.
//!   Each program reads only the settings it needs, through typed accessors
//!   such as [`Control::me`] or [`Control::databytes`].
//! * [`SETTINGS`] is the one table of every setting: name, kind, default,
//!   readers and a one-line description. `ternctl check` and
//!   docs/control.md follow it.
//! * The structured values: [`DomainList`] (`locals`, `rcpthosts`, ...),
//!   [`VirtualDomains`], [`SmtpRoutes`], [`LmtpRoutes`], [`BadMailFrom`]; the outbound
//!   line syntax of `dnsservers` ([`DnsServers`]) and `tlsdestinations`
//!   ([`TlsDestinations`], [`TlsPolicy`]), used by tern-route.
//! * [`Assign`] parses `users/assign` (qmail-users semantics) and looks
//!   local parts up.
//! * [`check`] explains a whole instance's configuration, file by file.
//!
//! Callers: every program. Trust level: control files are written by the
//! operator, but are parsed with the same bounds as untrusted input (file
//! size, line length, UTF-8). No printing; no caching (a new process reads
//! anew).
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod assign;
mod check;
mod control;
mod error;
mod home;
mod lists;
mod outbound;
pub mod owner;
mod read;
mod settings;
#[cfg(test)]
mod testutil;
pub mod uids;

pub use assign::{
    Assign, AssignEntry, Assignment, MAX_ASSIGN_FILE, MAX_MAILBOX_NAME, check_mailbox_name,
};
pub use check::{FileReport, Status, check};
pub use control::Control;
pub use error::{Error, ErrorKind};
pub use home::{DEFAULT_HOME, Home};
pub use lists::{
    BadMailFrom, DomainList, LmtpRoutes, LmtpServer, MAX_SOCKET_PATH, Relay, RelayHost, SmtpRoutes,
    VirtualDomains,
};
pub use outbound::{
    DNS_PORT, DnsServers, MAX_DNS_SERVERS, TlsDestinations, TlsPolicy, parse_dns_server,
};
pub use read::{MAX_FILE, MAX_LINE};
pub use settings::{
    DEFAULT_DATABYTES, DefaultValue, Kind, SETTINGS, Setting, Value, parse_value, setting,
};

/// Name of the empty file, directly in `TERN_HOME`, that marks a
/// single-user instance (made by `ternctl init`): every program runs as the
/// invoking user and no program switches uids. A system instance (root
/// install) has no such file.
pub const SINGLE_USER_MARKER: &str = "single-user";

impl Home {
    /// True when this home is a single-user instance
    /// ([`SINGLE_USER_MARKER`] exists).
    pub fn is_single_user(&self) -> bool {
        self.root().join(SINGLE_USER_MARKER).is_file()
    }
}
