//! `tern-route`: where tern-remote connects, and what it remembers.
//!
//! * [`Router`] turns a recipient domain into the addresses to try, in
//!   order ([`Resolution`]). Before anything else, `control/lmtproutes`
//!   (smtproutes' syntax, servers `IP:port` or a Unix socket path) gives
//!   [`Resolution::Lmtp`]: no DNS, no MX, no fallback to SMTP. Then:
//!   1. `control/smtproutes` first (qmail's format): the exact domain, else
//!      the longest `.suffix` entry, else the `:relay` default (smarthost).
//!      An empty relay (`domain:`) means "MX as usual" for that domain. A
//!      relay given by IP is used as is; a relay given by name is looked up
//!      as AAAA and A, never MX. The port is the route's, 25 by default. A
//!      relay without address is a temporary failure (an operator's typo
//!      must not bounce mail).
//!   2. An address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) is that
//!      address, port 25.
//!   3. Otherwise DNS: MX records sorted by preference, equal preferences
//!      shuffled, at most [`MAX_MX_HOSTS`] hosts; every address of a host
//!      (AAAA, then A) before the next host, at most [`MAX_ADDRESSES`] in
//!      all. A null MX (RFC 7505, `0 .`) is a permanent failure at once; no
//!      MX at all means the domain's own addresses (implicit MX); NXDOMAIN,
//!      or no MX and no address, is permanent; SERVFAIL, timeouts, an
//!      unreachable server, or MX hosts none of which has an address yet
//!      are temporary. Addresses no SMTP server can have (unspecified,
//!      multicast, broadcast) are dropped from DNS answers.
//!
//!   DNS goes through `hickory-resolver` on a tokio current-thread runtime
//!   owned by the router and started on the first lookup that needs it.
//!   The servers are those of `control/dnsservers` (`IP` or `[IP]:port`),
//!   else the `nameserver` lines of `/etc/resolv.conf`; names are asked
//!   fully qualified (no search list), `/etc/hosts` is not read, UDP falls
//!   back to TCP for truncated answers, and each query and each whole
//!   resolution have bounded timeouts ([`QUERY_TIMEOUT`],
//!   [`QUERY_RETRIES`], [`RESOLVE_DEADLINE`]).
//! * [`TlsPolicies`] is `control/tlsdestinations`: `none`, `may` (the
//!   default: opportunistic STARTTLS, certificate not checked) or `verify`
//!   per domain, `.suffix` or default.
//! * [`HostMemory`] is shared by every tern-remote worker through small
//!   files in `queue/remote/`: addresses that could not be connected to are
//!   skipped for a while (2 minutes, doubling to an hour, forgotten on
//!   success; qmail's `tcpto` idea), and addresses whose STARTTLS handshake
//!   failed are remembered for 6 hours so that opportunistic TLS goes
//!   straight to plain text.
//!
//! Callers: tern-remote. Trust level: DNS answers are untrusted (bounded,
//! filtered); control files are the operator's. No printing, no logging:
//! reasons are returned as text for the caller's log and reports.
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod dns;
mod error;
pub mod guard;
mod memory;
mod order;
mod router;
mod servers;
mod tls;

pub use dns::{Limits, resolver_config};
pub use error::Error;
pub use guard::Guard;
pub use memory::{
    CONNECT_BACKOFF_MAX, CONNECT_BACKOFF_MIN, HostMemory, MAX_ENTRIES, TLS_MEMORY, connect_backoff,
};
pub use order::{MAX_ADDRESSES, MAX_MX_HOSTS};
pub use router::{
    QUERY_RETRIES, QUERY_TIMEOUT, RESOLVE_DEADLINE, Resolution, Router, SMTP_PORT, Target,
};
pub use servers::{
    MAX_RESOLV_CONF, MAX_RESOLV_NAMESERVERS, RESOLV_CONF, dns_servers, parse_dns_servers,
    parse_resolv_conf, read_resolv_conf,
};
pub use tls::{TlsPolicies, TlsPolicy};
