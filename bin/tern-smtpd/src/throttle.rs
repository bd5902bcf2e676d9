//! AUTH throttling shared by every tern-smtpd on the host, through small
//! files in `TERN_HOME/auth/` (written by the SMTP uid, ternd; in a
//! single-user instance by the instance's user). No daemon: `flock`s.
//!
//! * Concurrency: a password check (the checkpassword program: argon2id,
//!   ~19 MiB and real CPU) runs only while its tern-smtpd holds an
//!   exclusive `flock` on one of `auth/slot.0` .. `auth/slot.N-1`
//!   (`control/authconcurrency`). A process that dies releases its slot
//!   with its file descriptors. When every slot stays taken for
//!   [`SLOT_WAIT`], the attempt gets 454 4.7.0 without a check.
//! * Failure memory: `auth/fail.000` .. `auth/fail.fff` (4096 buckets, a
//!   hash of the client address: the IPv4 address, or the IPv6 /64) each
//!   hold at most one record, `ADDRESS FAILURES LAST\n`, updated under
//!   `flock`. After `control/authfailures` failures from one address, each
//!   less than `control/authwindow` seconds after the one before, AUTH
//!   from it gets 454 4.7.0 without a check until the window has passed
//!   since the last failure. A success clears the address's record. An
//!   address whose bucket holds another address's record replaces it: a
//!   hash collision never refuses an innocent address. A file that does
//!   not parse is no record. The files are bounded in number and size.
//!
//! The client address is `TCPREMOTEIP` (from the launcher) or the
//! socket's peer: never anything the client says.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, OFlags, flock};

/// How long an attempt waits for a free verification slot.
pub(crate) const SLOT_WAIT: Duration = Duration::from_secs(10);
/// Pause between two rounds over the slots.
const SLOT_POLL: Duration = Duration::from_millis(20);
/// Number of failure-record buckets (files `fail.000` .. `fail.fff`).
pub(crate) const BUCKETS: u32 = 4096;
/// Longest record file read; anything longer is no record.
const RECORD_MAX: usize = 128;
/// Longest address key (an IPv6 /64 is at most 24 bytes).
const KEY_MAX: usize = 64;

/// The limits from control/.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Checks at once on the host.
    pub(crate) concurrency: u32,
    /// Failures before refusal.
    pub(crate) failures: u32,
    /// Seconds a failure is remembered.
    pub(crate) window: u64,
}

/// The throttle state directory and its limits.
pub(crate) struct Throttle {
    dir: PathBuf,
    limits: Limits,
}

/// A verification slot, held until dropped.
pub(crate) struct Slot {
    _file: File,
}

/// One failure record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) key: String,
    pub(crate) failures: u32,
    pub(crate) last: u64,
}

impl Record {
    /// Parses a record file's bytes; anything but one well-formed record
    /// (of any origin: corruption, truncation) is `None`.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Record> {
        if bytes.len() > RECORD_MAX {
            return None;
        }
        let text = std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?;
        let mut f = text.split(' ');
        let key = f.next()?;
        let failures = f.next()?;
        let last = f.next()?;
        if f.next().is_some()
            || key.is_empty()
            || key.len() > KEY_MAX
            || !key.bytes().all(|b| b.is_ascii_graphic())
            || !failures.bytes().all(|b| b.is_ascii_digit())
            || !last.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(Record {
            key: key.to_string(),
            failures: failures.parse().ok()?,
            last: last.parse().ok()?,
        })
    }

    fn to_bytes(&self) -> Vec<u8> {
        format!("{} {} {}\n", self.key, self.failures, self.last).into_bytes()
    }
}

/// The key of a client address: an IPv4 address (IPv4-mapped IPv6 too),
/// an IPv6 address's /64, or `unknown` for anything else.
pub(crate) fn key(remote_ip: &[u8]) -> String {
    let ip = std::str::from_utf8(remote_ip)
        .ok()
        .and_then(|s| s.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical());
    match ip {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let net = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(net))
        }
        None => "unknown".to_string(),
    }
}

/// The bucket of `key` (FNV-1a: stable across builds).
pub(crate) fn bucket(key: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % BUCKETS
}

/// Opens (creating, mode 0600) a state file, never through a symlink.
fn open(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

impl Throttle {
    /// The throttle in `dir` (created, mode 0700, when missing and
    /// possible: a single-user instance).
    pub(crate) fn new(dir: PathBuf, limits: Limits) -> Throttle {
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        Throttle { dir, limits }
    }

    fn bucket_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("fail.{:03x}", bucket(key)))
    }

    /// Runs `f` on the record of `key`'s bucket under an exclusive lock;
    /// writes back what `f` returns (`None`: empty file).
    fn update<T>(
        &self,
        key: &str,
        f: impl FnOnce(Option<Record>) -> (Option<Record>, T),
    ) -> std::io::Result<T> {
        let mut file = open(&self.bucket_path(key))?;
        flock(&file, FlockOperation::LockExclusive)?;
        let mut buf = Vec::with_capacity(RECORD_MAX + 1);
        (&mut file)
            .take(RECORD_MAX as u64 + 1)
            .read_to_end(&mut buf)?;
        let old = Record::parse(&buf);
        let before = old.clone();
        let (new, out) = f(old);
        if new != before {
            file.set_len(0)?;
            file.rewind()?;
            if let Some(r) = new {
                file.write_all(&r.to_bytes())?;
            }
        }
        Ok(out)
    }

    /// `Some(failures)` when `key` is refused at `now` (too many recent
    /// failures), else `None`.
    pub(crate) fn refused(&self, key: &str, now: u64) -> std::io::Result<Option<u32>> {
        let limits = self.limits;
        self.update(key, |r| match r {
            Some(r) if r.key == key && active(&r, now, limits.window) => {
                let refuse = r.failures >= limits.failures;
                let n = r.failures;
                (Some(r), refuse.then_some(n))
            }
            other => (other, None),
        })
    }

    /// Records a failure (`ok` false) or a success (clears) of `key` at
    /// `now`; returns the failures now remembered.
    pub(crate) fn record(&self, key: &str, ok: bool, now: u64) -> std::io::Result<u32> {
        let window = self.limits.window;
        self.update(key, |r| {
            let mine = r.as_ref().filter(|r| r.key == key);
            if ok {
                return match mine {
                    Some(_) => (None, 0),
                    None => (r, 0),
                };
            }
            let failures = match mine {
                Some(r) if active(r, now, window) => r.failures.saturating_add(1),
                _ => 1,
            };
            let new = Record {
                key: key.to_string(),
                failures,
                last: now,
            };
            (Some(new), failures)
        })
    }

    /// Takes a free verification slot, waiting at most `wait`; `None`
    /// when every slot stayed taken.
    pub(crate) fn slot(&self, wait: Duration) -> std::io::Result<Option<Slot>> {
        let files = (0..self.limits.concurrency.max(1))
            .map(|i| open(&self.dir.join(format!("slot.{i}"))))
            .collect::<std::io::Result<Vec<File>>>()?;
        let deadline = Instant::now() + wait;
        loop {
            for f in &files {
                if flock(f, FlockOperation::NonBlockingLockExclusive).is_ok() {
                    let file = f.try_clone()?;
                    return Ok(Some(Slot { _file: file }));
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(SLOT_POLL);
        }
    }
}

/// Whether `r`'s last failure is within `window` seconds of `now` (a
/// time in the future beyond the window is no record).
fn active(r: &Record, now: u64, window: u64) -> bool {
    if r.last > now {
        return r.last - now < window;
    }
    now - r.last < window
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            concurrency: 2,
            failures: 3,
            window: 600,
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tern-throttle-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn parse_tolerates_any_bytes() {
        let ok = Record::parse(b"10.0.0.1 3 1700000000\n").unwrap();
        assert_eq!(ok.key, "10.0.0.1");
        assert_eq!((ok.failures, ok.last), (3, 1_700_000_000));
        for bad in [
            &b""[..],
            b"\n",
            b"10.0.0.1 3 1700000000",
            b"10.0.0.1 3\n",
            b"10.0.0.1 3 17 x\n",
            b"10.0.0.1 -3 17\n",
            b"10.0.0.1 +3 17\n",
            b"10.0.0.1  3 17\n",
            b" 3 17\n",
            b"10.0.0.1 99999999999 17\n",
            b"10.0.0.1 3 999999999999999999999999\n",
            b"10.0\x000.1 3 17\n",
            b"\xff\xfe 3 17\n",
            b"a\tb 3 17\n",
        ] {
            assert_eq!(Record::parse(bad), None, "{bad:?}");
        }
        let long = format!("{} 1 1\n", "a".repeat(KEY_MAX + 1));
        assert_eq!(Record::parse(long.as_bytes()), None);
        assert_eq!(Record::parse(&[b'1'; RECORD_MAX + 1]), None);
        // Every prefix of a good record, and random bytes: no panic.
        let good = b"2001:db8::/64 7 1700000000\n";
        for i in 0..good.len() {
            assert_eq!(Record::parse(&good[..i]), None);
        }
        let mut x: u32 = 1;
        for _ in 0..2000 {
            let len = (x % 140) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = Record::parse(&bytes);
        }
    }

    #[test]
    fn keys_and_buckets() {
        assert_eq!(key(b"192.0.2.7"), "192.0.2.7");
        assert_eq!(key(b"::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key(b"2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(key(b"2001:db8:1:2::9"), key(b"2001:db8:1:2:ffff::1"));
        assert_eq!(key(b"junk"), "unknown");
        assert_eq!(key(b"\xff"), "unknown");
        assert!(bucket("192.0.2.7") < BUCKETS);
        assert_eq!(bucket("192.0.2.7"), bucket("192.0.2.7"));
    }

    #[test]
    fn failures_refuse_then_expire_or_clear() {
        let dir = tmp("fail");
        let t = Throttle::new(dir.clone(), limits());
        let k = "192.0.2.7";
        assert_eq!(t.refused(k, 1000).unwrap(), None);
        for n in 1..=3 {
            assert_eq!(t.record(k, false, 1000 + u64::from(n)).unwrap(), n);
        }
        assert_eq!(t.refused(k, 1010).unwrap(), Some(3));
        assert_eq!(t.refused("192.0.2.8", 1010).unwrap(), None);
        // The window runs from the last failure.
        assert_eq!(t.refused(k, 1003 + 599).unwrap(), Some(3));
        assert_eq!(t.refused(k, 1003 + 600).unwrap(), None);
        assert_eq!(t.record(k, false, 1003 + 600).unwrap(), 1);
        // A success clears.
        t.record(k, false, 1700).unwrap();
        t.record(k, false, 1701).unwrap();
        assert_eq!(t.refused(k, 1702).unwrap(), Some(3));
        t.record(k, true, 1702).unwrap();
        assert_eq!(t.refused(k, 1702).unwrap(), None);
        // A corrupt file is no record, and is replaced.
        let path = t.bucket_path(k);
        std::fs::write(&path, b"\xff garbage").unwrap();
        assert_eq!(t.refused(k, 1800).unwrap(), None);
        assert_eq!(t.record(k, false, 1800).unwrap(), 1);
        assert_eq!(std::fs::read(&path).unwrap(), b"192.0.2.7 1 1800\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn collision_never_refuses_another_address() {
        let dir = tmp("collide");
        let t = Throttle::new(dir.clone(), limits());
        let a = "192.0.2.7";
        // Another key in a's bucket.
        let b = (0u32..)
            .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
            .find(|k| k != a && bucket(k) == bucket(a))
            .unwrap();
        for n in 0..3 {
            t.record(a, false, 100 + n).unwrap();
        }
        assert_eq!(t.refused(&b, 110).unwrap(), None);
        assert_eq!(t.record(&b, true, 110).unwrap(), 0);
        assert_eq!(t.refused(a, 110).unwrap(), Some(3));
        // b's failure takes the bucket over.
        assert_eq!(t.record(&b, false, 111).unwrap(), 1);
        assert_eq!(t.refused(a, 112).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn slots_bound_holders() {
        let dir = tmp("slots");
        let t = Throttle::new(dir.clone(), limits());
        let one = t.slot(Duration::ZERO).unwrap().expect("first slot");
        let two = t.slot(Duration::ZERO).unwrap().expect("second slot");
        assert!(t.slot(Duration::from_millis(50)).unwrap().is_none());
        drop(one);
        let three = t.slot(Duration::ZERO).unwrap();
        assert!(three.is_some());
        drop((two, three));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
