//! The DNS side: hickory-resolver on a tokio current-thread runtime owned by
//! the [`crate::Router`], with a configuration built here (never the
//! system's: no search list, no `/etc/hosts`, our own timeouts).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

use crate::order::Mx;

/// How a query came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer<T> {
    /// Records of the type asked for (possibly after following CNAMEs).
    Found(Vec<T>),
    /// The name exists but has no record of that type (NOERROR, no data).
    NoRecords,
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// No usable answer now: timeout, SERVFAIL, REFUSED, unreachable
    /// server, a malformed answer. The text says which, in our words.
    Temporary(String),
}

/// Timeouts of the DNS side.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// One query to one server.
    pub timeout: Duration,
    /// Retries after a query's first try failed (hickory's `attempts`).
    pub retries: usize,
}

/// The hickory configuration Tern resolves with, for any program that
/// does DNS (tern-remote's router, tern-verify): `servers` asked in order
/// over UDP, TCP when an answer is truncated; no search list (`ndots` 0),
/// no `/etc/hosts`, a small cache, one query at a time, EDNS0, and the
/// given per-query timeout and retries.
pub fn resolver_config(servers: &[SocketAddr], limits: Limits) -> (ResolverConfig, ResolverOpts) {
    let name_servers = servers
        .iter()
        .map(|s| {
            let mut ns = NameServerConfig::udp_and_tcp(s.ip());
            for c in &mut ns.connections {
                c.port = s.port();
            }
            ns
        })
        .collect();
    let config = ResolverConfig::from_parts(None, Vec::new(), name_servers);
    let mut opts = ResolverOpts::default();
    opts.timeout = limits.timeout;
    opts.attempts = limits.retries;
    opts.ndots = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.cache_size = 64;
    opts.num_concurrent_reqs = 1;
    opts.preserve_intermediates = false;
    opts.edns0 = true;
    (config, opts)
}

/// A resolver and the runtime that drives it.
pub(crate) struct Dns {
    rt: tokio::runtime::Runtime,
    resolver: TokioResolver,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dns { .. }")
    }
}

impl Dns {
    /// A resolver asking `servers` in order (UDP, TCP when an answer is
    /// truncated).
    pub fn new(servers: &[SocketAddr], limits: Limits) -> Result<Dns, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("cannot start the DNS runtime: {e}"))?;
        let (config, opts) = resolver_config(servers, limits);
        let resolver = {
            let _guard = rt.enter();
            Resolver::builder_with_config(config, TokioRuntimeProvider::default())
                .with_options(opts)
                .build()
                .map_err(|e| format!("cannot set up the DNS resolver: {e}"))?
        };
        Ok(Dns { rt, resolver })
    }

    /// Runs `f` on the runtime, giving up after `deadline` (`None`).
    pub fn run<F, T>(&self, deadline: Duration, f: impl FnOnce(TokioResolver) -> F) -> Option<T>
    where
        F: Future<Output = T>,
    {
        let fut = f(self.resolver.clone());
        self.rt
            .block_on(async { tokio::time::timeout(deadline, fut).await.ok() })
    }
}

/// The MX records of `name` (a fully qualified name).
pub(crate) async fn mx(resolver: &TokioResolver, name: &Name) -> Answer<Mx> {
    match resolver.lookup(name.clone(), RecordType::MX).await {
        Ok(lookup) => Answer::Found(
            lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some(Mx {
                        pref: mx.preference,
                        host: host_text(&mx.exchange),
                    }),
                    _ => None,
                })
                .collect(),
        ),
        Err(e) => classify(&e),
    }
}

/// The addresses of `name` of one family: `RecordType::AAAA` or `RecordType::A`.
pub(crate) async fn addresses(
    resolver: TokioResolver,
    name: Name,
    rtype: RecordType,
) -> Answer<IpAddr> {
    match resolver.lookup(name, rtype).await {
        Ok(lookup) => Answer::Found(
            lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) if rtype == RecordType::A => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) if rtype == RecordType::AAAA => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect(),
        ),
        Err(e) => classify(&e),
    }
}

/// An exchange or host name as text: ASCII (A-labels), lowercase, without
/// the trailing dot; the root is `"."`.
pub(crate) fn host_text(name: &Name) -> String {
    if name.is_root() {
        return ".".into();
    }
    let mut s = name.to_ascii().to_ascii_lowercase();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

fn classify<T>(e: &NetError) -> Answer<T> {
    if e.is_nx_domain() {
        return Answer::NxDomain;
    }
    if e.is_no_records_found() {
        return Answer::NoRecords;
    }
    Answer::Temporary(match e {
        NetError::Timeout => "DNS query timed out".into(),
        NetError::Dns(DnsError::ResponseCode(code)) => match code {
            ResponseCode::ServFail => "DNS server failure (SERVFAIL)".into(),
            ResponseCode::Refused => "DNS query refused (REFUSED)".into(),
            other => format!("DNS error ({})", other.to_str()),
        },
        NetError::Io(io) => format!("DNS server unreachable ({})", io.kind()),
        NetError::NoConnections => "no DNS server reachable".into(),
        NetError::Busy => "DNS resolver busy".into(),
        NetError::Truncated => "DNS answer truncated (and TCP failed)".into(),
        NetError::Proto(_) => "malformed DNS answer".into(),
        _ => "DNS lookup failed".into(),
    })
}
