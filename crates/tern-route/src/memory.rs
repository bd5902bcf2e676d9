//! [`HostMemory`]: what tern-remote workers remember about remote hosts
//! between connections (qmail's `tcpto` idea, plus failed TLS handshakes).
//!
//! One small file per address and fact in `queue/remote/`:
//! `c-<ip>` holds `<failures> <time of the last counted failure>` for a host
//! that could not be connected to, `t-<ip>` holds `<time>` of a failed
//! STARTTLS handshake. A file is replaced whole (written under a unique
//! temporary name, then renamed over), so readers never see half a file and
//! concurrent writers at worst lose one update. The memory is advisory: I/O
//! errors are ignored (a host is then simply not skipped), garbage files
//! count as absent, and the directory is kept to [`MAX_ENTRIES`] files.

use std::fs;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Back-off after the first connection failure, in seconds.
pub const CONNECT_BACKOFF_MIN: i64 = 120;
/// Longest back-off after repeated connection failures, in seconds (the
/// back-off doubles with each failure up to this).
pub const CONNECT_BACKOFF_MAX: i64 = 3600;
/// How long a failed STARTTLS handshake is remembered, in seconds.
pub const TLS_MEMORY: i64 = 6 * 3600;
/// Most files kept in the directory; beyond it, expired entries and then
/// the oldest ones are removed.
pub const MAX_ENTRIES: usize = 2000;

/// Largest entry file read (a valid one is under 40 bytes).
const MAX_FILE: u64 = 64;
/// Failure counts stop here (the back-off is at its maximum long before).
const MAX_COUNT: u32 = 32;
/// Temporary files older than this are debris of a crashed writer.
const STALE_TMP: i64 = 600;

const CONNECT: &str = "c-";
const TLS: &str = "t-";
const TMP: &str = ".tmp-";

/// The back-off after `count` counted failures: 2 minutes doubling, at most
/// an hour.
pub fn connect_backoff(count: u32) -> i64 {
    let shift = count.saturating_sub(1).min(16);
    (CONNECT_BACKOFF_MIN << shift).min(CONNECT_BACKOFF_MAX)
}

/// Memory of remote hosts shared by all tern-remote workers of an instance,
/// kept in a directory (`queue/remote/`). Cheap to open (nothing is read
/// until asked); safe with several processes using it at once.
#[derive(Debug)]
pub struct HostMemory {
    dir: PathBuf,
    seq: AtomicU64,
}

impl HostMemory {
    /// The memory kept in `dir` (normally `queue/remote/`, made by the queue
    /// layout). A missing or unwritable directory gives a memory that
    /// remembers nothing.
    pub fn open(dir: &Path) -> HostMemory {
        HostMemory {
            dir: dir.to_path_buf(),
            seq: AtomicU64::new(0),
        }
    }

    /// True when connecting to `addr` failed recently: its back-off (2
    /// minutes after one failure, doubling with each further failure, at
    /// most an hour) has not run out at `now` (Unix seconds). The caller
    /// passes over such an address as if the connection had failed.
    pub fn connect_failed_recently(&self, addr: IpAddr, now: i64) -> bool {
        self.connect_retry_at(addr)
            .is_some_and(|at| now < at && at - now <= CONNECT_BACKOFF_MAX)
    }

    /// When the back-off of `addr` runs out (Unix seconds), if a failure is
    /// remembered. Lets a caller that finds every address backed off try
    /// the one that comes back first.
    pub fn connect_retry_at(&self, addr: IpAddr) -> Option<i64> {
        let (count, last) = self.read_connect(addr)?;
        Some(last.saturating_add(connect_backoff(count)))
    }

    /// Records that connecting to `addr` failed at `now` (timed out or
    /// refused). A failure while the back-off of an earlier one is still
    /// running (another worker raced us) is not counted again.
    pub fn record_connect_failure(&self, addr: IpAddr, now: i64) {
        let (count, last) = match self.read_connect(addr) {
            Some((count, last))
                if now < last.saturating_add(connect_backoff(count)) && now >= last =>
            {
                return;
            }
            Some((count, _)) => ((count + 1).min(MAX_COUNT), now),
            None => (1, now),
        };
        self.write(&name(CONNECT, addr), &format!("{count} {last}\n"), now);
    }

    /// Forgets the connection failures of `addr` (a connection succeeded).
    /// One `unlink`; cheap enough to call after every connection.
    pub fn record_connect_success(&self, addr: IpAddr) {
        let _ = fs::remove_file(self.dir.join(name(CONNECT, addr)));
    }

    /// True when a STARTTLS handshake with `addr` failed less than
    /// [`TLS_MEMORY`] seconds before `now`: connect in plain text at once
    /// (for opportunistic TLS only; a `verify` destination never falls back).
    pub fn tls_failed_recently(&self, addr: IpAddr, now: i64) -> bool {
        self.read_numbers(&name(TLS, addr))
            .and_then(|v| match v[..] {
                [t] => Some(t),
                _ => None,
            })
            .is_some_and(|t| now >= t && now - t < TLS_MEMORY)
    }

    /// Records that a STARTTLS handshake with `addr` failed at `now`.
    pub fn record_tls_failure(&self, addr: IpAddr, now: i64) {
        self.write(&name(TLS, addr), &format!("{now}\n"), now);
    }

    /// Forgets a remembered STARTTLS failure of `addr` (e.g. after the
    /// operator fixed the peer).
    pub fn forget_tls_failure(&self, addr: IpAddr) {
        let _ = fs::remove_file(self.dir.join(name(TLS, addr)));
    }

    /// Forgets everything remembered about `addrs` (connection back-offs
    /// and STARTTLS failures), or about every host when `addrs` is empty
    /// (qmail's `qmail-tcpok`). Returns how many entries were removed.
    ///
    /// # Errors
    /// The directory cannot be listed, or an entry cannot be removed.
    pub fn forget(&self, addrs: &[IpAddr]) -> std::io::Result<usize> {
        let wanted: Vec<String> = addrs
            .iter()
            .flat_map(|&a| [name(CONNECT, a), name(TLS, a)])
            .collect();
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Ok(file) = entry.file_name().into_string() else {
                continue;
            };
            let ours = file.starts_with(CONNECT) || file.starts_with(TLS);
            if ours && (wanted.is_empty() || wanted.contains(&file)) {
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(removed)
    }

    fn read_connect(&self, addr: IpAddr) -> Option<(u32, i64)> {
        match self.read_numbers(&name(CONNECT, addr))?[..] {
            [count, last] if (1..=i64::from(MAX_COUNT)).contains(&count) => {
                Some((count as u32, last))
            }
            _ => None,
        }
    }

    /// The file's decimal numbers (one line, separated by single spaces);
    /// `None` when missing, unreadable or malformed.
    fn read_numbers(&self, file: &str) -> Option<Vec<i64>> {
        let mut text = String::new();
        fs::File::open(self.dir.join(file))
            .ok()?
            .take(MAX_FILE + 1)
            .read_to_string(&mut text)
            .ok()?;
        let line = text.strip_suffix('\n')?;
        if text.len() as u64 > MAX_FILE || line.is_empty() {
            return None;
        }
        line.split(' ')
            .map(|n| {
                let digits = n.strip_prefix('-').unwrap_or(n);
                if digits.is_empty()
                    || digits.len() > 19
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return None;
                }
                n.parse().ok()
            })
            .collect()
    }

    /// Replaces `file` with `content` (temporary file, then rename), after
    /// making room when the directory is full. Errors are ignored.
    fn write(&self, file: &str, content: &str, now: i64) {
        let target = self.dir.join(file);
        if !target.exists() {
            self.make_room(now);
        }
        let tmp = self.dir.join(format!(
            "{TMP}{}-{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed),
            now
        ));
        let written = fs::File::create(&tmp).and_then(|mut f| f.write_all(content.as_bytes()));
        if written.is_err() || fs::rename(&tmp, &target).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    /// Keeps the directory under [`MAX_ENTRIES`] files: when it is full,
    /// removes expired entries and stale temporary files, then, if more
    /// than three quarters are left, the entries least recently written
    /// (so that a full scan happens once per many writes, not every time).
    fn make_room(&self, now: i64) {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        let names: Vec<String> = rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .take(4 * MAX_ENTRIES)
            .collect();
        if names.len() < MAX_ENTRIES {
            return;
        }
        let mut kept: Vec<(i64, String)> = Vec::new();
        for n in names {
            let expired = if let Some(rest) = n.strip_prefix(TMP) {
                // .tmp-<pid>-<seq>-<time>
                rest.rsplit('-')
                    .next()
                    .and_then(|t| t.parse::<i64>().ok())
                    .is_none_or(|t| now - t > STALE_TMP)
            } else if n.starts_with(CONNECT) {
                match self.read_numbers(&n).as_deref() {
                    Some(&[c, last]) if c >= 1 => {
                        let c = c.min(i64::from(MAX_COUNT)) as u32;
                        if now - last >= 2 * CONNECT_BACKOFF_MAX.max(connect_backoff(c)) {
                            true
                        } else {
                            kept.push((last, n));
                            continue;
                        }
                    }
                    _ => true,
                }
            } else if n.starts_with(TLS) {
                match self.read_numbers(&n).as_deref() {
                    Some(&[t]) if now - t < TLS_MEMORY => {
                        kept.push((t, n));
                        continue;
                    }
                    _ => true,
                }
            } else {
                false // not ours: leave it alone
            };
            if expired {
                let _ = fs::remove_file(self.dir.join(&n));
            }
        }
        // prune to three quarters, so that the next scan is far away
        if kept.len() > MAX_ENTRIES * 3 / 4 {
            kept.sort();
            let excess = kept.len() - MAX_ENTRIES * 3 / 4;
            for (_, n) in kept.iter().take(excess) {
                let _ = fs::remove_file(self.dir.join(n));
            }
        }
    }
}

/// The entry file name for `addr`: prefix and the address in its canonical
/// text form (IPv6 compressed, RFC 5952).
fn name(prefix: &str, addr: IpAddr) -> String {
    format!("{prefix}{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "tern-route-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));

    #[test]
    fn forget_removes_one_host_or_all() {
        let t = TempDir::new("forget");
        let m = HostMemory::open(&t.0);
        let t0 = 1_800_000_000;
        m.record_connect_failure(A, t0);
        m.record_tls_failure(A, t0);
        m.record_connect_failure(B, t0);
        fs::write(t.0.join("unrelated"), "x").unwrap();
        assert_eq!(m.forget(&[A]).unwrap(), 2);
        assert!(!m.connect_failed_recently(A, t0) && !m.tls_failed_recently(A, t0));
        assert!(m.connect_failed_recently(B, t0), "B is still remembered");
        assert_eq!(m.forget(&[]).unwrap(), 1);
        assert!(!m.connect_failed_recently(B, t0));
        assert!(
            t.0.join("unrelated").exists(),
            "only host entries are removed"
        );
        assert_eq!(m.forget(&[]).unwrap(), 0);
    }

    #[test]
    fn backoff_doubles_to_an_hour() {
        let got: Vec<i64> = (1..=8).map(connect_backoff).collect();
        assert_eq!(got, [120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(connect_backoff(0), 120);
        assert_eq!(connect_backoff(u32::MAX), 3600);
    }

    #[test]
    fn connect_failures_back_off_and_are_forgotten_on_success() {
        let t = TempDir::new("connect");
        let m = HostMemory::open(&t.0);
        let t0 = 1_800_000_000;
        assert!(!m.connect_failed_recently(A, t0));
        m.record_connect_failure(A, t0);
        assert!(m.connect_failed_recently(A, t0));
        assert!(m.connect_failed_recently(A, t0 + 119));
        assert!(!m.connect_failed_recently(A, t0 + 120));
        assert!(!m.connect_failed_recently(B, t0), "other hosts unaffected");
        // a failure inside the window (a racing worker) is not counted
        m.record_connect_failure(A, t0 + 60);
        assert_eq!(m.connect_retry_at(A), Some(t0 + 120));
        // after the window: counted, back-off doubles
        m.record_connect_failure(A, t0 + 130);
        assert_eq!(m.connect_retry_at(A), Some(t0 + 130 + 240));
        let mut now = t0 + 130;
        for _ in 0..10 {
            now += 4000;
            m.record_connect_failure(A, now);
        }
        assert_eq!(m.connect_retry_at(A), Some(now + 3600));
        assert!(m.connect_failed_recently(A, now + 3599));
        assert!(!m.connect_failed_recently(A, now + 3600));
        m.record_connect_success(A);
        assert!(!m.connect_failed_recently(A, now));
        assert_eq!(m.connect_retry_at(A), None);
        m.record_connect_success(A); // nothing to forget: no error
        // IPv6 entries work the same
        m.record_connect_failure(B, t0);
        assert!(m.connect_failed_recently(B, t0 + 1));
        assert!(t.0.join("c-2001:db8::1").is_file());
    }

    #[test]
    fn a_clock_far_behind_the_entry_does_not_block_the_host() {
        let t = TempDir::new("clock");
        let m = HostMemory::open(&t.0);
        m.record_connect_failure(A, 2_000_000_000);
        assert!(!m.connect_failed_recently(A, 1_000_000_000));
        m.record_tls_failure(A, 2_000_000_000);
        assert!(!m.tls_failed_recently(A, 1_000_000_000));
    }

    #[test]
    fn tls_failures_are_remembered_for_six_hours() {
        let t = TempDir::new("tls");
        let m = HostMemory::open(&t.0);
        let t0 = 1_800_000_000;
        assert!(!m.tls_failed_recently(A, t0));
        m.record_tls_failure(A, t0);
        assert!(m.tls_failed_recently(A, t0));
        assert!(m.tls_failed_recently(A, t0 + TLS_MEMORY - 1));
        assert!(!m.tls_failed_recently(A, t0 + TLS_MEMORY));
        assert!(!m.tls_failed_recently(B, t0));
        // independent of the connect memory
        m.record_connect_success(A);
        assert!(m.tls_failed_recently(A, t0 + 1));
        assert!(!m.connect_failed_recently(A, t0 + 1));
        m.forget_tls_failure(A);
        assert!(!m.tls_failed_recently(A, t0 + 1));
    }

    #[test]
    fn garbage_files_count_as_absent() {
        let t = TempDir::new("garbage");
        let m = HostMemory::open(&t.0);
        let now = 1_800_000_000;
        let bad: &[&[u8]] = &[
            b"",
            b"\n",
            b"1 1800000000",    // no newline
            b"0 1800000000\n",  // count 0
            b"33 1800000000\n", // count beyond the cap
            b"1  1800000000\n", // two spaces
            b"1 18000000x0\n",
            b"1 +1800000000\n",
            b"1 99999999999999999999\n",
            b"1 1800000000 7\n",
            b"-1 1800000000\n",
            b"\xff\xfe\n",
        ];
        for content in bad {
            fs::write(t.0.join("c-192.0.2.1"), content).unwrap();
            assert!(!m.connect_failed_recently(A, now), "{content:?}");
            // a failure then replaces the garbage with a fresh entry
            m.record_connect_failure(A, now);
            assert_eq!(m.connect_retry_at(A), Some(now + 120), "{content:?}");
        }
        fs::write(t.0.join("c-192.0.2.1"), vec![b'1'; 100]).unwrap();
        assert!(!m.connect_failed_recently(A, now));
        for content in [&b"1800000000 1\n"[..], b"x\n", b"1800000000"] {
            fs::write(t.0.join("t-192.0.2.1"), content).unwrap();
            assert!(!m.tls_failed_recently(A, now), "{content:?}");
        }
        fs::create_dir(t.0.join("t-2001:db8::1")).unwrap();
        assert!(!m.tls_failed_recently(B, now));
    }

    #[test]
    fn a_missing_directory_remembers_nothing_and_does_not_fail() {
        let t = TempDir::new("missing");
        let m = HostMemory::open(&t.0.join("absent"));
        m.record_connect_failure(A, 1);
        m.record_tls_failure(A, 1);
        assert!(!m.connect_failed_recently(A, 2));
        assert!(!m.tls_failed_recently(A, 2));
        m.record_connect_success(A);
    }

    #[test]
    fn the_directory_stays_bounded() {
        let t = TempDir::new("bounded");
        let m = HostMemory::open(&t.0);
        let now = 1_800_000_000;
        // expired entries, stale temporary files and a foreign file
        for i in 0..MAX_ENTRIES {
            let ip = Ipv4Addr::from(0x0a00_0000 + i as u32);
            fs::write(t.0.join(format!("c-{ip}")), format!("1 {}\n", now - 10_000)).unwrap();
        }
        fs::write(t.0.join(".tmp-1-2-5"), "x").unwrap();
        fs::write(t.0.join("README"), "not ours").unwrap();
        m.record_connect_failure(A, now);
        let left: Vec<_> = fs::read_dir(&t.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}"); // the new entry and README
        assert!(m.connect_failed_recently(A, now));
        assert!(t.0.join("README").exists());

        // live entries: the least recently written go first
        for i in 0..MAX_ENTRIES + 10 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i as u32));
            m.record_tls_failure(ip, now + i as i64);
        }
        let count = fs::read_dir(&t.0).unwrap().count();
        assert!(count <= MAX_ENTRIES + 1, "{count}"); // + README
        let newest = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + (MAX_ENTRIES + 9) as u32));
        assert!(m.tls_failed_recently(newest, now + 10_000));
        assert!(!m.tls_failed_recently(IpAddr::V4(Ipv4Addr::from(0x0b00_0000)), now + 10_000));
    }

    #[test]
    fn concurrent_writers_leave_whole_files() {
        let t = TempDir::new("race");
        let dir = t.0.clone();
        let threads: Vec<_> = (0..8)
            .map(|k| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let m = HostMemory::open(&dir);
                    for i in 0..200 {
                        let now = 1_800_000_000 + i * 4000 + k;
                        m.record_connect_failure(A, now);
                        m.record_tls_failure(A, now);
                        if i % 7 == 0 {
                            m.record_connect_success(A);
                        }
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let m = HostMemory::open(&dir);
        // whatever won, the files parse
        if dir.join("c-192.0.2.1").exists() {
            assert!(m.connect_retry_at(A).is_some());
        }
        assert!(m.tls_failed_recently(A, 1_800_000_000 + 199 * 4000 + 8));
        let tmp = fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(TMP)
            })
            .count();
        assert_eq!(tmp, 0);
    }
}
