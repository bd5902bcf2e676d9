//! The lookups behind [`tern_smtp::Checks`]: rcpthosts, badmailfrom and
//! whether a local recipient exists.

use std::os::unix::fs::MetadataExt as _;

use tern_control::owner::{self, Instance, SystemPasswd};
use tern_control::uids::{self, DeliveryUsers};
use tern_control::{Assign, BadMailFrom, DomainList, Home};
use tern_sched::Rewriter;
use tern_smtp::{Checks, RcptVerdict};
use tern_spool::state::Channel;

/// What a connection checks against; loaded once at start.
pub(crate) struct FileChecks {
    pub(crate) rcpthosts: DomainList,
    pub(crate) morercpthosts: DomainList,
    pub(crate) badmailfrom: BadMailFrom,
    /// `None` when `rcptcheck` is 0.
    pub(crate) local: Option<LocalCheck>,
}

/// What the local-recipient check needs.
pub(crate) struct LocalCheck {
    pub(crate) rewriter: Rewriter,
    pub(crate) assign: Option<Assign>,
    pub(crate) instance: Instance,
    /// System instance: the accounts tern-lspawn never delivers as, and
    /// `localuidmin`..`localuidmax`, so that a recipient local delivery
    /// would refuse is refused here, at RCPT ([`uids::delivery_allowed`],
    /// the rule tern-lspawn applies).
    users: DeliveryUsers,
    uid_range: (u64, u64),
}

impl LocalCheck {
    pub(crate) fn new(
        rewriter: Rewriter,
        assign: Option<Assign>,
        home: &Home,
        uid_range: (u64, u64),
    ) -> LocalCheck {
        let instance = if home.is_single_user() {
            let uid = tern_sys::effective_uid();
            Instance::SingleUser {
                user: tern_sys::user_name(uid).unwrap_or_else(|| uid.to_string()),
                uid,
                gid: rustix::process::getegid().as_raw(),
                alias_home: home.alias_dir(),
            }
        } else {
            Instance::System
        };
        // The queue's group, when ternd may see it (tern-lspawn checks it
        // in any case).
        let queue_gid = std::fs::metadata(home.queue_dir().join("cur"))
            .ok()
            .map(|m| m.gid());
        let users = match instance {
            Instance::System => DeliveryUsers::lookup(&SystemPasswd, queue_gid),
            Instance::SingleUser { .. } => DeliveryUsers::default(),
        };
        LocalCheck {
            rewriter,
            assign,
            instance,
            users,
            uid_range,
        }
    }

    fn check(&self, address: &[u8]) -> RcptVerdict {
        let (channel, addr) = self.rewriter.classify(address);
        if channel != Channel::Local {
            return RcptVerdict::Accept;
        }
        let at = addr.iter().rposition(|&b| b == b'@').unwrap_or(addr.len());
        let local = &addr[..at];
        if local.is_empty() {
            return RcptVerdict::Unknown;
        }
        let owner = match owner::lookup(local, self.assign.as_ref(), &self.instance, &SystemPasswd)
        {
            Ok((owner, _)) => owner,
            Err(_) => return RcptVerdict::TempFail,
        };
        if matches!(self.instance, Instance::System) {
            match uids::delivery_allowed(owner.uid, owner.gid, self.uid_range, &self.users) {
                Ok(()) => {}
                // Local delivery would refuse it for good: no mailbox here.
                Err(why) if why.is_permanent() => return RcptVerdict::Unknown,
                Err(_) => return RcptVerdict::TempFail,
            }
        }
        if owner.dash.is_empty() {
            // The owner's own address.
            return RcptVerdict::Accept;
        }
        match tern_deliver::search::find(&owner.home, owner.dash.as_bytes(), &owner.ext) {
            Ok(Some(_)) => RcptVerdict::Accept,
            Ok(None) => RcptVerdict::Unknown,
            // Unreadable (permissions): cannot check here; tern-local will.
            Err(e) if e.kind() == tern_deliver::ErrorKind::DotQmailUnreadable => {
                RcptVerdict::Accept
            }
            Err(_) => RcptVerdict::TempFail,
        }
    }
}

impl Checks for FileChecks {
    fn relay_allowed(&self, domain: &[u8]) -> bool {
        let d = String::from_utf8_lossy(domain);
        self.rcpthosts.contains(&d) || self.morercpthosts.contains(&d)
    }

    fn bad_sender(&self, sender: &[u8]) -> bool {
        self.badmailfrom.matches(sender)
    }

    fn recipient(&mut self, address: &[u8]) -> RcptVerdict {
        match &self.local {
            Some(l) => l.check(address),
            None => RcptVerdict::Accept,
        }
    }
}
