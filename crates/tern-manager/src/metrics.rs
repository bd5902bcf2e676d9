//! tern-send's metrics: an OpenMetrics text file (the format node_exporter's
//! textfile collector reads), rewritten every [`METRICS_SECS`] seconds and
//! on exit, atomically (a new file in the same directory, renamed over the
//! old one). No server: nothing listens in the manager.
//!
//! The file is written without ever following a link: the temporary file
//! is created with `O_EXCL | O_NOFOLLOW` below a directory descriptor and
//! renamed over the final name (a rename replaces a link planted there, it
//! does not write through it). The directory must belong to our uid or to
//! root and must not be writable by everyone unless it is sticky.

use crate::Manager;
use crate::common::ch_name;
use rustix::fs::{AtFlags, Mode, OFlags};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use tern_spool::state::Channel;

/// Seconds between two writes of the metrics file.
pub const METRICS_SECS: i64 = 5;
/// The default metrics file, below the queue directory.
pub const DEFAULT_FILE: &str = "state/metrics.prom";

/// Delivery results counted (`tern_deliveries_total{result=...}`).
pub(crate) const RESULTS: [&str; 4] = ["delivered", "deferred", "failed", "expired"];
/// Bounce kinds counted (`tern_bounces_total{kind=...}`).
pub(crate) const BOUNCES: [&str; 3] = ["bounce", "double_bounce", "discarded"];
/// Operations counted (`tern_operations_total{op=...}`).
pub(crate) const OPS: [&str; 4] = ["delete", "bounce", "hold", "release"];

/// Counters since the manager started, and where the file goes.
#[derive(Debug)]
pub struct Metrics {
    /// The metrics file.
    pub path: PathBuf,
    pub(crate) started: i64,
    pub(crate) last_write: i64,
    pub(crate) deliveries: BTreeMap<(&'static str, &'static str), u64>,
    pub(crate) bounces: BTreeMap<&'static str, u64>,
    pub(crate) operations: BTreeMap<&'static str, u64>,
    pub(crate) warned: bool,
}

impl Metrics {
    /// Counters at zero; the file is `path`.
    pub fn new(path: PathBuf) -> Metrics {
        let mut deliveries = BTreeMap::new();
        for ch in [Channel::Local, Channel::Remote] {
            for r in RESULTS {
                deliveries.insert((ch_name(ch), r), 0);
            }
        }
        Metrics {
            path,
            started: tern_date::now(),
            last_write: 0,
            deliveries,
            bounces: BOUNCES.iter().map(|&k| (k, 0)).collect(),
            operations: OPS.iter().map(|&k| (k, 0)).collect(),
            warned: false,
        }
    }

    pub(crate) fn delivery(&mut self, channel: Channel, result: &'static str) {
        *self
            .deliveries
            .entry((ch_name(channel), result))
            .or_insert(0) += 1;
    }

    pub(crate) fn bounce(&mut self, kind: &'static str) {
        *self.bounces.entry(kind).or_insert(0) += 1;
    }

    pub(crate) fn operation(&mut self, op: &'static str, n: u64) {
        *self.operations.entry(op).or_insert(0) += n;
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "# HELP {name} {help}");
}

impl Manager {
    /// The metrics text (OpenMetrics 1.0, ends with `# EOF`).
    pub(crate) fn render_metrics(&self, now: i64) -> String {
        let mut by_state: BTreeMap<&str, u64> = ["new", "active", "held", "finishing"]
            .iter()
            .map(|&s| (s, 0))
            .collect();
        let mut rcpts: BTreeMap<&str, u64> = ["pending", "delivered", "failed"]
            .iter()
            .map(|&s| (s, 0))
            .collect();
        let mut oldest = now;
        for (id, m) in &self.state.messages {
            let st = if m.is_finished() {
                "finishing"
            } else if m.held {
                "held"
            } else if self.not_taken.contains(id) {
                "new"
            } else {
                "active"
            };
            *by_state.entry(st).or_insert(0) += 1;
            for r in &m.recipients {
                let k = match r.status {
                    tern_spool::state::Status::Pending => "pending",
                    tern_spool::state::Status::Delivered => "delivered",
                    tern_spool::state::Status::Failed(_) => "failed",
                };
                *rcpts.entry(k).or_insert(0) += 1;
            }
            oldest = oldest.min(m.birth);
        }
        let mx = &self.metrics;
        let mut o = String::with_capacity(4096);
        family(
            &mut o,
            "tern_queue_messages",
            "gauge",
            "Messages the queue manager knows, by state (new: not yet moved to cur/; finishing: every recipient done, bounce and removal pending).",
        );
        for (s, n) in &by_state {
            let _ = writeln!(o, "tern_queue_messages{{state=\"{s}\"}} {n}");
        }
        family(
            &mut o,
            "tern_queue_recipients",
            "gauge",
            "Recipients of queued messages, by state.",
        );
        for (s, n) in &rcpts {
            let _ = writeln!(o, "tern_queue_recipients{{state=\"{s}\"}} {n}");
        }
        family(
            &mut o,
            "tern_queue_oldest_message_age_seconds",
            "gauge",
            "Age of the oldest queued message (0: the queue is empty).",
        );
        let _ = writeln!(
            o,
            "tern_queue_oldest_message_age_seconds {}",
            (now - oldest).max(0)
        );
        family(
            &mut o,
            "tern_deliveries",
            "counter",
            "Delivery attempts finished since tern-send started, by channel and result.",
        );
        for ((ch, r), n) in &mx.deliveries {
            let _ = writeln!(
                o,
                "tern_deliveries_total{{channel=\"{ch}\",result=\"{r}\"}} {n}"
            );
        }
        family(
            &mut o,
            "tern_bounces",
            "counter",
            "Bounces since tern-send started (discarded: a double bounce that failed).",
        );
        for (k, n) in &mx.bounces {
            let _ = writeln!(o, "tern_bounces_total{{kind=\"{k}\"}} {n}");
        }
        family(
            &mut o,
            "tern_operations",
            "counter",
            "Postmaster operations (ternctl) executed since tern-send started, by operation.",
        );
        for (k, n) in &mx.operations {
            let _ = writeln!(o, "tern_operations_total{{op=\"{k}\"}} {n}");
        }
        family(
            &mut o,
            "tern_concurrency_in_use",
            "gauge",
            "Deliveries running, by channel.",
        );
        let mut limits = String::new();
        for (ci, ch) in [Channel::Local, Channel::Remote].into_iter().enumerate() {
            let (used, limit) = self.spawners[ci]
                .as_ref()
                .map(|s| (s.slots.len() - s.free.len(), s.slots.len()))
                .unwrap_or((0, 0));
            let _ = writeln!(
                o,
                "tern_concurrency_in_use{{channel=\"{}\"}} {used}",
                ch_name(ch)
            );
            let _ = writeln!(
                limits,
                "tern_concurrency_limit{{channel=\"{}\"}} {limit}",
                ch_name(ch)
            );
        }
        family(
            &mut o,
            "tern_concurrency_limit",
            "gauge",
            "Most deliveries at once, by channel (0: no spawner for it).",
        );
        o.push_str(&limits);
        family(
            &mut o,
            "tern_journal_bytes",
            "gauge",
            "Size of the manager's journal (queue/state/journal).",
        );
        let _ = writeln!(o, "tern_journal_bytes {}", self.journal.len());
        family(
            &mut o,
            "tern_send_start_time_seconds",
            "gauge",
            "When this tern-send started (seconds since the epoch).",
        );
        let _ = writeln!(o, "tern_send_start_time_seconds {}", mx.started);
        o.push_str("# EOF\n");
        o
    }

    /// Writes the metrics file when it is due (or `force`: at exit).
    pub(crate) fn write_metrics(&mut self, now: i64, force: bool) {
        if !force && now < self.metrics.last_write + METRICS_SECS {
            return;
        }
        self.metrics.last_write = now;
        let text = self.render_metrics(now);
        match write_atomically(&self.metrics.path, text.as_bytes()) {
            Ok(()) => self.metrics.warned = false,
            Err(e) if !self.metrics.warned => {
                self.metrics.warned = true;
                tern_log::Event::new(crate::PROG, "warning")
                    .field(
                        "reason",
                        format!("cannot write {}: {e}", self.metrics.path.display()),
                    )
                    .emit();
            }
            Err(_) => {}
        }
    }
}

/// Replaces `path` with a file holding `bytes`, atomically and without
/// following a link (module docs).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err("not a file path".into());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let dfd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open {}: {e}", dir.display()))?;
    let st = rustix::fs::fstat(&dfd).map_err(|e| e.to_string())?;
    let me = rustix::process::geteuid().as_raw();
    if st.st_uid != me && st.st_uid != 0 {
        return Err(format!(
            "{} belongs to uid {}, neither to this uid ({me}) nor to root",
            dir.display(),
            st.st_uid
        ));
    }
    if st.st_mode & 0o002 != 0 && st.st_mode & 0o1000 == 0 {
        return Err(format!(
            "{} is writable by everyone and not sticky",
            dir.display()
        ));
    }
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(".tmp");
    let create = || {
        rustix::fs::openat(
            &dfd,
            tmp.as_os_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
    };
    let fd = match create() {
        Ok(fd) => fd,
        Err(rustix::io::Errno::EXIST) => {
            // Left by a crash (or planted): the name is removed, never
            // opened.
            rustix::fs::unlinkat(&dfd, tmp.as_os_str(), AtFlags::empty())
                .map_err(|e| format!("remove stale {}: {e}", tmp.to_string_lossy()))?;
            create().map_err(|e| format!("create {}: {e}", tmp.to_string_lossy()))?
        }
        Err(e) => return Err(format!("create {}: {e}", tmp.to_string_lossy())),
    };
    let mut f = std::fs::File::from(fd);
    let done = f
        .write_all(bytes)
        .map_err(|e| format!("write: {e}"))
        .and_then(|()| {
            rustix::fs::renameat(&dfd, tmp.as_os_str(), &dfd, name)
                .map_err(|e| format!("rename: {e}"))
        });
    if done.is_err() {
        let _ = rustix::fs::unlinkat(&dfd, tmp.as_os_str(), AtFlags::empty());
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tern-metrics-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    #[test]
    fn planted_links_are_replaced_never_followed() {
        let d = dir("links");
        let victim = d.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let target = d.join("m.prom");
        std::os::unix::fs::symlink(&victim, d.join(".m.prom.tmp")).unwrap();
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        write_atomically(&target, b"a 1\n# EOF\n").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!std::fs::symlink_metadata(&target).unwrap().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"a 1\n# EOF\n");
        assert!(!d.join(".m.prom.tmp").exists());
        // Again over the file it wrote.
        write_atomically(&target, b"a 2\n# EOF\n").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"a 2\n# EOF\n");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_directory_everyone_may_write_is_refused_unless_sticky() {
        let d = dir("open");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = write_atomically(&d.join("m.prom"), b"x\n").unwrap_err();
        assert!(e.contains("writable by everyone"), "{e}");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        write_atomically(&d.join("m.prom"), b"x\n").unwrap();
        assert!(write_atomically(&d.join("missing/m.prom"), b"x\n").is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
