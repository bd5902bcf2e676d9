//! `tern-report`: a summary of Tern's `key=value` logs (docs/logging.md),
//! for `ternctl report`, in the manner of qmailanalog and pflogsumm.
//!
//! [`Report::feed_reader`] reads lines in bounded memory: a line is cut at
//! [`MAX_LINE`] bytes (the rest counted as too
//! long), top lists are Space-Saving counters of fixed size ([`topk`]),
//! delay percentiles a log-bucketed histogram ([`sketch`]), the per-hour
//! table at most [`MAX_HOURS`] hours. Nothing in the input can make it
//! panic; what is not a Tern event line is counted as unparsed.
//! [`Report::json`] and [`Report::text`] present the result.
#![forbid(unsafe_code)]

pub mod sketch;
pub mod time;
pub mod topk;

use std::collections::BTreeMap;
use std::io::BufRead;

use serde_json::{Value, json};
use tern_log::parse::{Line, MAX_LINE, parse_line};

use sketch::Delays;
use topk::TopK;

/// The most hours the per-hour table holds; older hours are dropped (and
/// counted) when a longer period is read.
pub const MAX_HOURS: usize = 24 * 400;

/// Keys each top list keeps (its counts are exact while fewer distinct
/// keys were seen).
pub const TOP_CAPACITY: usize = 2000;

/// The longest reason text kept as a key (bytes).
const REASON_LEN: usize = 120;

/// Counts for one hour.
#[derive(Debug, Default, Clone, Copy)]
struct Hour {
    received: u64,
    delivered: u64,
    deferred: u64,
    bounced: u64,
    rejected: u64,
}

/// Per channel (local, remote) recipient results.
#[derive(Debug, Default, Clone, Copy)]
struct Results {
    delivered: u64,
    deferred: u64,
    failed: u64,
    expired: u64,
}

/// The summary being built.
#[derive(Debug)]
pub struct Report {
    lines: u64,
    events: u64,
    unparsed: u64,
    too_long: u64,
    first: Option<i64>,
    last: Option<i64>,
    untimed: u64,

    received: u64,
    received_bytes: u64,
    received_rcpts: u64,
    smtp_connections: u64,
    smtp_queued: u64,
    smtp_tls: u64,
    smtp_tls_sessions: u64,
    rejected_perm: u64,
    rejected_temp: u64,
    queue_refused: u64,
    bounces: u64,
    double_bounces: u64,
    triple_bounces: u64,
    local: Results,
    remote: Results,
    out_tls: u64,
    out_plain: u64,
    delays: Delays,

    hours: BTreeMap<i64, Hour>,
    hours_dropped: u64,

    senders: TopK,
    recipients: TopK,
    domains: TopK,
    rejections: TopK,
    deferrals: TopK,
    bounce_reasons: TopK,
    problems: TopK,
    unparsed_kinds: BTreeMap<String, u64>,
}

impl Default for Report {
    fn default() -> Self {
        Report::new()
    }
}

fn domain_of(addr: &[u8]) -> Vec<u8> {
    match addr.iter().rposition(|&b| b == b'@') {
        Some(at) => addr[at + 1..].to_ascii_lowercase(),
        None => b"(none)".to_vec(),
    }
}

fn reason(text: &[u8]) -> &[u8] {
    &text[..text.len().min(REASON_LEN)]
}

fn show(bytes: &[u8]) -> String {
    tern_log::escape(bytes)
}

fn pct(part: u64, whole: u64) -> Value {
    if whole == 0 {
        Value::Null
    } else {
        json!((part as f64 * 1000.0 / whole as f64).round() / 10.0)
    }
}

impl Report {
    /// An empty report.
    pub fn new() -> Report {
        let top = || TopK::new(TOP_CAPACITY);
        Report {
            lines: 0,
            events: 0,
            unparsed: 0,
            too_long: 0,
            first: None,
            last: None,
            untimed: 0,
            received: 0,
            received_bytes: 0,
            received_rcpts: 0,
            smtp_connections: 0,
            smtp_queued: 0,
            smtp_tls: 0,
            smtp_tls_sessions: 0,
            rejected_perm: 0,
            rejected_temp: 0,
            queue_refused: 0,
            bounces: 0,
            double_bounces: 0,
            triple_bounces: 0,
            local: Results::default(),
            remote: Results::default(),
            out_tls: 0,
            out_plain: 0,
            delays: Delays::default(),
            hours: BTreeMap::new(),
            hours_dropped: 0,
            senders: top(),
            recipients: top(),
            domains: top(),
            rejections: top(),
            deferrals: top(),
            bounce_reasons: top(),
            problems: top(),
            unparsed_kinds: BTreeMap::new(),
        }
    }

    /// Reads every line of `input`. Lines longer than
    /// [`MAX_LINE`] are skipped and counted, and
    /// never held whole in memory.
    pub fn feed_reader(&mut self, mut input: impl BufRead) -> std::io::Result<()> {
        let mut line = Vec::with_capacity(512);
        let mut overflow = false;
        loop {
            let buf = match input.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                if overflow {
                    self.long_line();
                } else if !line.is_empty() {
                    self.feed(&line);
                }
                return Ok(());
            }
            let (chunk, end) = match buf.iter().position(|&b| b == b'\n') {
                Some(p) => (&buf[..p], Some(p + 1)),
                None => (buf, None),
            };
            if !overflow {
                if line.len() + chunk.len() > MAX_LINE + 1 {
                    overflow = true;
                    line.clear();
                } else {
                    line.extend_from_slice(chunk);
                }
            }
            let used = end.unwrap_or(buf.len());
            input.consume(used);
            if end.is_some() {
                if overflow {
                    self.long_line();
                } else {
                    self.feed(&line);
                }
                line.clear();
                overflow = false;
            }
        }
    }

    fn long_line(&mut self) {
        self.lines += 1;
        self.too_long += 1;
        self.unparsed += 1;
        *self
            .unparsed_kinds
            .entry("line too long".into())
            .or_default() += 1;
    }

    /// Counts one line (without its line end).
    pub fn feed(&mut self, raw: &[u8]) {
        self.lines += 1;
        let line = match parse_line(raw) {
            Ok(l) => l,
            Err(e) => {
                if raw.trim_ascii().is_empty() {
                    return;
                }
                self.unparsed += 1;
                if e == tern_log::parse::ParseError::TooLong {
                    self.too_long += 1;
                }
                *self.unparsed_kinds.entry(e.to_string()).or_default() += 1;
                return;
            }
        };
        self.events += 1;
        let hour = match time::prefix_time(line.prefix) {
            Some(t) => {
                self.first = Some(self.first.map_or(t, |f| f.min(t)));
                self.last = Some(self.last.map_or(t, |l| l.max(t)));
                Some(t.div_euclid(3600) * 3600)
            }
            None => {
                self.untimed += 1;
                None
            }
        };
        self.event(&line, hour);
    }

    fn hour(&mut self, hour: Option<i64>) -> Option<&mut Hour> {
        let h = hour?;
        if !self.hours.contains_key(&h) && self.hours.len() >= MAX_HOURS {
            let oldest = *self.hours.keys().next()?;
            if h < oldest {
                self.hours_dropped += 1;
                return None;
            }
            self.hours.remove(&oldest);
            self.hours_dropped += 1;
        }
        Some(self.hours.entry(h).or_default())
    }

    fn event(&mut self, l: &Line<'_>, hour: Option<i64>) {
        if matches!(
            l.event,
            "alert"
                | "panic"
                | "fatal"
                | "warning"
                | "startup_failed"
                | "protocol_error"
                | "worker_lost"
                | "worker_failed"
                | "report_failed"
                | "refused_to_start"
        ) {
            self.problems
                .add(format!("{} {}", l.program, l.event).as_bytes());
        }
        match (l.program, l.event) {
            ("tern-send", "new") => {
                self.received += 1;
                self.received_bytes += l.number("size").unwrap_or(0);
                self.received_rcpts += l.number("rcpts").unwrap_or(0);
                if let Some(sender) = l.get("sender") {
                    self.senders
                        .add(if sender.is_empty() { b"<>" } else { sender });
                }
                if let Some(h) = self.hour(hour) {
                    h.received += 1;
                }
            }
            ("tern-send", "delivery_end") => self.delivery_end(l, hour),
            ("tern-send", "bounce") => self.bounces += 1,
            ("tern-send", "double_bounce") => self.double_bounces += 1,
            ("tern-send", "triple_bounce") => self.triple_bounces += 1,
            ("tern-smtpd", "connect") => self.smtp_connections += 1,
            ("tern-smtpd", "tls") => self.smtp_tls_sessions += 1,
            ("tern-smtpd", "queued") => {
                self.smtp_queued += 1;
                if l.text("tls") == Some("yes") {
                    self.smtp_tls += 1;
                }
            }
            ("tern-smtpd", "refused") => {
                let code = l.number("code").unwrap_or(0);
                if code >= 500 {
                    self.rejected_perm += 1;
                } else {
                    self.rejected_temp += 1;
                }
                let mut key = format!("{code} ").into_bytes();
                key.extend_from_slice(reason(l.get("reply").unwrap_or_default()));
                self.rejections.add(&key);
                if let Some(h) = self.hour(hour) {
                    h.rejected += 1;
                }
            }
            ("tern-queue", "refused") => self.queue_refused += 1,
            ("tern-remote", "rcpt") if l.text("result") == Some("delivered") => {
                match l.text("tls") {
                    Some("yes") => self.out_tls += 1,
                    Some(_) => self.out_plain += 1,
                    None => {}
                }
            }
            _ => {}
        }
    }

    fn delivery_end(&mut self, l: &Line<'_>, hour: Option<i64>) {
        let remote = l.text("channel") == Some("remote");
        let rcpt = l.get("rcpt").unwrap_or_default();
        let text = reason(l.get("text").unwrap_or_default());
        let status = l.text("status").unwrap_or("");
        let r = if remote {
            &mut self.remote
        } else {
            &mut self.local
        };
        match status {
            "delivered" => {
                r.delivered += 1;
                if !rcpt.is_empty() {
                    self.recipients.add(rcpt);
                }
                if remote && !rcpt.is_empty() {
                    self.domains.add(&domain_of(rcpt));
                }
                if let Some(d) = l.number("delay") {
                    self.delays.add(d);
                }
                if let Some(h) = self.hour(hour) {
                    h.delivered += 1;
                }
            }
            "deferred" => {
                r.deferred += 1;
                self.deferrals.add(text);
                if let Some(h) = self.hour(hour) {
                    h.deferred += 1;
                }
            }
            "failed" | "expired" => {
                if status == "failed" {
                    r.failed += 1;
                } else {
                    r.expired += 1;
                }
                self.bounce_reasons.add(text);
                if let Some(h) = self.hour(hour) {
                    h.bounced += 1;
                }
            }
            _ => {}
        }
    }

    fn top_json(t: &TopK, n: usize, name: &str) -> Value {
        let items: Vec<Value> = t
            .top(n)
            .into_iter()
            .map(|(k, c, e)| {
                let mut v = json!({ name: String::from_utf8_lossy(k), "count": c });
                if e > 0 {
                    v["overcount_at_most"] = json!(e);
                }
                v
            })
            .collect();
        json!({ "exact": t.exact(), "items": items })
    }

    /// The report as one JSON document; top lists hold at most `top` items.
    pub fn json(&self, top: usize) -> Value {
        let delivered = self.local.delivered + self.remote.delivered;
        let res = |r: &Results| {
            json!({ "delivered": r.delivered, "deferred": r.deferred,
                    "bounced": r.failed + r.expired, "expired": r.expired })
        };
        let hours: Vec<Value> = self
            .hours
            .iter()
            .map(|(h, c)| {
                json!({ "hour": time::hour_label(*h), "received": c.received,
                        "delivered": c.delivered, "deferred": c.deferred,
                        "bounced": c.bounced, "rejected": c.rejected })
            })
            .collect();
        let d = &self.delays;
        let out_total = self.out_tls + self.out_plain;
        json!({
            "lines": { "read": self.lines, "events": self.events,
                       "unparsed": self.unparsed, "too_long": self.too_long,
                       "untimed": self.untimed,
                       "unparsed_kinds": self.unparsed_kinds },
            "period": { "first": self.first.map(time::hour_label_exact),
                        "last": self.last.map(time::hour_label_exact) },
            "messages": {
                "received": self.received, "bytes": self.received_bytes,
                "recipients": self.received_rcpts,
                "smtp": { "connections": self.smtp_connections,
                          "queued": self.smtp_queued,
                          "tls_sessions": self.smtp_tls_sessions,
                          "queued_tls": self.smtp_tls,
                          "tls_percent": pct(self.smtp_tls, self.smtp_queued) },
                "rejected": { "permanent": self.rejected_perm,
                              "temporary": self.rejected_temp },
                "queue_refused": self.queue_refused,
                "bounces_sent": self.bounces, "double_bounces": self.double_bounces,
                "double_bounces_discarded": self.triple_bounces,
            },
            "recipients": {
                "delivered": delivered,
                "deferred": self.local.deferred + self.remote.deferred,
                "bounced": self.local.failed + self.local.expired
                    + self.remote.failed + self.remote.expired,
                "local": res(&self.local), "remote": res(&self.remote),
            },
            "delay_seconds": {
                "count": d.count(), "mean": (d.mean() * 10.0).round() / 10.0,
                "p50": d.percentile(50.0), "p90": d.percentile(90.0),
                "p95": d.percentile(95.0), "p99": d.percentile(99.0),
                "max": (d.count() > 0).then(|| d.max()),
            },
            "tls": {
                "outbound": { "tls": self.out_tls, "plain": self.out_plain,
                              "percent": pct(self.out_tls, out_total) },
                "inbound": { "tls": self.smtp_tls,
                             "plain": self.smtp_queued - self.smtp_tls,
                             "percent": pct(self.smtp_tls, self.smtp_queued) },
            },
            "per_hour": hours,
            "hours_dropped": self.hours_dropped,
            "top": {
                "senders": Self::top_json(&self.senders, top, "sender"),
                "recipients": Self::top_json(&self.recipients, top, "recipient"),
                "domains": Self::top_json(&self.domains, top, "domain"),
                "rejections": Self::top_json(&self.rejections, top, "reason"),
                "deferrals": Self::top_json(&self.deferrals, top, "reason"),
                "bounces": Self::top_json(&self.bounce_reasons, top, "reason"),
                "problems": Self::top_json(&self.problems, top, "event"),
            },
        })
    }

    /// The report as text for a terminal or mail; top lists hold at most
    /// `top` items. Values from the log are escaped (tern_log::escape).
    pub fn text(&self, top: usize) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let delivered = self.local.delivered + self.remote.delivered;
        let deferred = self.local.deferred + self.remote.deferred;
        let expired = self.local.expired + self.remote.expired;
        let bounced = self.local.failed + self.remote.failed + expired;
        let p = |part: u64, whole: u64| match pct(part, whole) {
            Value::Null => "-".to_string(),
            v => format!("{v}%"),
        };
        let _ = writeln!(o, "Tern log report");
        let _ = writeln!(
            o,
            "  lines {}  events {}  unparsed {} (too long {})",
            self.lines, self.events, self.unparsed, self.too_long
        );
        match (self.first, self.last) {
            (Some(f), Some(l)) => {
                let _ = writeln!(
                    o,
                    "  period {} .. {}",
                    time::hour_label_exact(f),
                    time::hour_label_exact(l)
                );
            }
            _ => {
                let _ = writeln!(o, "  period unknown (no logger time stamps)");
            }
        }
        let _ = writeln!(o, "\nMessages");
        let _ = writeln!(
            o,
            "  {:>9}  received ({} bytes, {} recipients)",
            self.received, self.received_bytes, self.received_rcpts
        );
        let _ = writeln!(
            o,
            "  {:>9}  received by SMTP ({} connections, TLS {})",
            self.smtp_queued,
            self.smtp_connections,
            p(self.smtp_tls, self.smtp_queued)
        );
        let _ = writeln!(
            o,
            "  {:>9}  rejected by SMTP (permanent {}, temporary {})",
            self.rejected_perm + self.rejected_temp,
            self.rejected_perm,
            self.rejected_temp
        );
        let _ = writeln!(o, "  {:>9}  refused by tern-queue", self.queue_refused);
        let _ = writeln!(
            o,
            "  {:>9}  bounces sent (double {}, discarded {})",
            self.bounces, self.double_bounces, self.triple_bounces
        );
        let _ = writeln!(o, "\nRecipients");
        let _ = writeln!(
            o,
            "  {delivered:>9}  delivered (local {}, remote {})",
            self.local.delivered, self.remote.delivered
        );
        let _ = writeln!(
            o,
            "  {deferred:>9}  deferred (local {}, remote {})",
            self.local.deferred, self.remote.deferred
        );
        let _ = writeln!(
            o,
            "  {bounced:>9}  bounced (local {}, remote {}, expired {expired})",
            self.local.failed + self.local.expired,
            self.remote.failed + self.remote.expired
        );
        let d = &self.delays;
        let _ = writeln!(o, "\nDelivery delay (seconds, {} delivered)", d.count());
        if d.count() > 0 {
            let q = |x| d.percentile(x).unwrap_or(0);
            let _ = writeln!(
                o,
                "  mean {:.1}  p50 {}  p90 {}  p95 {}  p99 {}  max {}",
                d.mean(),
                q(50.0),
                q(90.0),
                q(95.0),
                q(99.0),
                d.max()
            );
        }
        let _ = writeln!(o, "\nTLS");
        let _ = writeln!(
            o,
            "  outbound {} of {} remote deliveries ({})",
            self.out_tls,
            self.out_tls + self.out_plain,
            p(self.out_tls, self.out_tls + self.out_plain)
        );
        let _ = writeln!(
            o,
            "  inbound  {} of {} messages received by SMTP ({})",
            self.smtp_tls,
            self.smtp_queued,
            p(self.smtp_tls, self.smtp_queued)
        );
        if !self.hours.is_empty() {
            let _ = writeln!(
                o,
                "\nPer hour           received delivered deferred  bounced rejected"
            );
            for (h, c) in &self.hours {
                let _ = writeln!(
                    o,
                    "  {} {:>8} {:>9} {:>8} {:>8} {:>8}",
                    time::hour_label(*h),
                    c.received,
                    c.delivered,
                    c.deferred,
                    c.bounced,
                    c.rejected
                );
            }
            if self.hours_dropped > 0 {
                let _ = writeln!(o, "  ({} older hours not shown)", self.hours_dropped);
            }
        }
        for (title, t) in [
            ("Top senders", &self.senders),
            ("Top recipients (delivered)", &self.recipients),
            (
                "Top destination domains (delivered remotely)",
                &self.domains,
            ),
            ("SMTP rejections (code, reply)", &self.rejections),
            ("Deferral reasons", &self.deferrals),
            ("Bounce reasons", &self.bounce_reasons),
            ("Problems (program, event)", &self.problems),
        ] {
            if t.is_empty() {
                continue;
            }
            let approx = if t.exact() { "" } else { " (approximate)" };
            let _ = writeln!(o, "\n{title}{approx}");
            for (k, c, _) in t.top(top) {
                let _ = writeln!(o, "  {c:>9}  {}", show(k));
            }
        }
        if !self.unparsed_kinds.is_empty() {
            let _ = writeln!(o, "\nUnparsed lines");
            for (k, c) in &self.unparsed_kinds {
                let _ = writeln!(o, "  {c:>9}  {k}");
            }
        }
        o
    }
}

#[cfg(test)]
mod tests;
