//! Which uids a system instance delivers as: the one rule that tern-lspawn
//! enforces before it starts tern-local and that tern-smtpd's RCPT check
//! applies so that such a recipient is refused at RCPT, not accepted and
//! bounced later, and that `ternctl check` applies to `users/assign`.
//!
//! Never uid 0 or gid 0, never the queue's group, never one of Tern's own
//! users, always the alias user, otherwise only within
//! `localuidmin..=localuidmax`.

use std::fmt;

use crate::owner::{ALIAS_USER, Passwd};

/// Tern's own users: a delivery as one of them could write the queue, or
/// act as the SMTP front or the remote client.
pub const RESERVED_USERS: [&str; 6] = ["ternd", "ternq", "terns", "ternr", "ternv", "ternl"];

/// The accounts a system instance never delivers as, and the one it always
/// may (looked up once at start).
#[derive(Debug, Default, Clone)]
pub struct DeliveryUsers {
    /// Tern's own users ([`RESERVED_USERS`]) that exist, with their uids.
    pub reserved: Vec<(&'static str, u32)>,
    /// The uid of the `alias` user, when it exists.
    pub alias: Option<u32>,
    /// The queue's group (`tern`, the group of `queue/cur`), which may
    /// read every queued message; no delivery runs with it.
    pub queue_gid: Option<u32>,
}

impl DeliveryUsers {
    /// Looks the reserved users and `alias` up in `passwd`; `queue_gid`
    /// is the group of `queue/cur` when known. Accounts that cannot be
    /// looked up count as absent.
    pub fn lookup(passwd: &dyn Passwd, queue_gid: Option<u32>) -> DeliveryUsers {
        let uid_of = |name: &str| passwd.user(name).ok().flatten().map(|e| e.uid);
        DeliveryUsers {
            reserved: RESERVED_USERS
                .iter()
                .filter_map(|&n| uid_of(n).map(|u| (n, u)))
                .collect(),
            alias: uid_of(ALIAS_USER),
            queue_gid,
        }
    }
}

/// Why a delivery as some uid/gid is refused. The `Display` text is the
/// detail for the log and for the administrator (`ternctl check`); it names
/// uids and control files, so it never goes into a bounce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UidRefusal {
    /// uid 0.
    Root,
    /// gid 0.
    GidZero,
    /// The queue's group.
    QueueGroup(u32),
    /// One of Tern's own users (name, uid).
    Reserved(&'static str, u32),
    /// Outside `localuidmin..=localuidmax`.
    OutOfRange {
        /// The uid.
        uid: u32,
        /// `localuidmin`.
        min: u64,
        /// `localuidmax`.
        max: u64,
    },
    /// `localuidmin` is above `localuidmax` (a configuration error:
    /// temporary).
    BadRange {
        /// `localuidmin`.
        min: u64,
        /// `localuidmax`.
        max: u64,
    },
}

impl UidRefusal {
    /// True for every refusal but a broken configuration.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, UidRefusal::BadRange { .. })
    }
}

impl fmt::Display for UidRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UidRefusal::Root => write!(f, "not allowed to perform deliveries as root"),
            UidRefusal::GidZero => write!(f, "not allowed to perform deliveries with gid 0"),
            UidRefusal::QueueGroup(gid) => write!(
                f,
                "gid {gid} is the queue's group, which may read every queued message; no deliveries with it"
            ),
            UidRefusal::Reserved(name, uid) => write!(
                f,
                "uid {uid} is Tern's own user {name}; no deliveries as Tern's users"
            ),
            UidRefusal::OutOfRange { uid, min, max } => write!(
                f,
                "uid {uid} is outside the uids allowed for deliveries ({min} to {max}, control/localuidmin and localuidmax)"
            ),
            UidRefusal::BadRange { min, max } => write!(
                f,
                "control/localuidmin ({min}) is above control/localuidmax ({max})"
            ),
        }
    }
}

/// Whether a system instance may deliver as `uid`/`gid`, with
/// `range` = (`localuidmin`, `localuidmax`).
///
/// # Errors
/// The reason it may not.
pub fn delivery_allowed(
    uid: u32,
    gid: u32,
    range: (u64, u64),
    users: &DeliveryUsers,
) -> Result<(), UidRefusal> {
    if uid == 0 {
        return Err(UidRefusal::Root);
    }
    if gid == 0 {
        return Err(UidRefusal::GidZero);
    }
    if users.queue_gid == Some(gid) {
        return Err(UidRefusal::QueueGroup(gid));
    }
    if let Some(&(name, u)) = users.reserved.iter().find(|(_, u)| *u == uid) {
        return Err(UidRefusal::Reserved(name, u));
    }
    if users.alias == Some(uid) {
        return Ok(());
    }
    let (min, max) = range;
    if min > max {
        return Err(UidRefusal::BadRange { min, max });
    }
    if u64::from(uid) < min || u64::from(uid) > max {
        return Err(UidRefusal::OutOfRange { uid, min, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        let users = DeliveryUsers {
            reserved: vec![("ternq", 998), ("terns", 997)],
            alias: Some(996),
            queue_gid: Some(995),
        };
        let range = (1000, 60_000);
        let out = |min, max, uid| UidRefusal::OutOfRange { uid, min, max };
        let refused: &[(u32, u32, (u64, u64), UidRefusal)] = &[
            (0, 0, range, UidRefusal::Root),
            (0, 1000, range, UidRefusal::Root),
            (1000, 0, range, UidRefusal::GidZero),
            (998, 998, range, UidRefusal::Reserved("ternq", 998)),
            (997, 997, (1, 60_000), UidRefusal::Reserved("terns", 997)),
            (999, 999, range, out(1000, 60_000, 999)),
            (1, 1, range, out(1000, 60_000, 1)),
            (60_001, 60_001, range, out(1000, 60_000, 60_001)),
            (65_534, 65_534, range, out(1000, 60_000, 65_534)),
            (
                1000,
                1000,
                (2000, 1000),
                UidRefusal::BadRange {
                    min: 2000,
                    max: 1000,
                },
            ),
            (1000, 995, range, UidRefusal::QueueGroup(995)),
            (996, 995, range, UidRefusal::QueueGroup(995)),
        ];
        for (uid, gid, range, want) in refused {
            let got = delivery_allowed(*uid, *gid, *range, &users).expect_err("refused");
            assert_eq!(&got, want, "{uid}");
            assert_eq!(
                got.is_permanent(),
                !matches!(want, UidRefusal::BadRange { .. })
            );
        }
        for (uid, range) in [
            (1000, range),
            (60_000, range),
            (4242, range),
            (996, range),
            (996, (2000, 1000)),
            (500, (1, 60_000)),
        ] {
            assert!(delivery_allowed(uid, uid, range, &users).is_ok(), "{uid}");
        }
    }
}
