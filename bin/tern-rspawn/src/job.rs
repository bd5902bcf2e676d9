//! One request at a worker: which of its recipients have their report, and
//! the texts tern-rspawn writes for those that never get one.

use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitStatus;
use std::time::Instant;

use tern_ipc::Outcome;
use tern_ipc::remote::RcptReport;

/// The request a worker is serving.
#[derive(Debug)]
pub(crate) struct Job {
    /// tern-send's slot (every report carries it).
    pub(crate) slot: u32,
    /// The message id (for the log).
    pub(crate) id: u64,
    /// When it was handed over.
    pub(crate) started: Instant,
    /// Which recipients have their report.
    reported: Vec<bool>,
    /// How many do not yet.
    left: usize,
    /// Reports so far: delivered, deferred, failed.
    pub(crate) counts: [u32; 3],
}

/// What a worker's report means for its request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More recipients to come.
    Partial,
    /// That was the last one: the worker is idle.
    Complete,
}

impl Job {
    /// A request with `rcpts` recipients (1 to [`tern_ipc::remote::MAX_RCPTS`]).
    pub(crate) fn new(slot: u32, id: u64, rcpts: usize, now: Instant) -> Job {
        Job {
            slot,
            id,
            started: now,
            reported: vec![false; rcpts],
            left: rcpts,
            counts: [0; 3],
        }
    }

    /// Takes `r` into account. An error (a static hint) means the worker
    /// broke the protocol: a report for another slot, for a recipient the
    /// request does not have, or for one already reported.
    pub(crate) fn record(&mut self, r: &RcptReport) -> Result<Progress, &'static str> {
        if r.slot != self.slot {
            return Err("report for a slot the worker is not serving");
        }
        let Some(done) = self.reported.get_mut(r.rcpt as usize) else {
            return Err("report for a recipient number beyond the request");
        };
        if *done {
            return Err("second report for one recipient");
        }
        *done = true;
        self.left -= 1;
        self.counts[match r.outcome {
            Outcome::Delivered => 0,
            Outcome::Deferred => 1,
            Outcome::Failed => 2,
        }] += 1;
        Ok(if self.left == 0 {
            Progress::Complete
        } else {
            Progress::Partial
        })
    }

    /// Deferred reports, with `text`, for every recipient without a report
    /// (after which the job is complete).
    pub(crate) fn defer_rest(&mut self, text: &str) -> Vec<RcptReport> {
        let mut out = Vec::with_capacity(self.left);
        for (i, done) in self.reported.iter_mut().enumerate() {
            if !*done {
                *done = true;
                out.push(deferred(self.slot, i as u32, text));
            }
        }
        self.counts[1] += out.len() as u32;
        self.left = 0;
        out
    }

    /// How many recipients have no report yet.
    pub(crate) fn left(&self) -> usize {
        self.left
    }
}

/// One Deferred report.
pub(crate) fn deferred(slot: u32, rcpt: u32, text: &str) -> RcptReport {
    RcptReport {
        slot,
        rcpt,
        outcome: Outcome::Deferred,
        text: text.as_bytes().to_vec(),
    }
}

/// Deferred reports for all `rcpts` recipients of a request that no worker
/// took.
pub(crate) fn defer_all(slot: u32, rcpts: usize, text: &str) -> Vec<RcptReport> {
    (0..rcpts as u32).map(|i| deferred(slot, i, text)).collect()
}

/// How a worker ended, in words: `exited with status N`, `killed by signal S`.
pub(crate) fn ending(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => format!("ended ({status})"),
    }
}

/// The text for recipients left without a report by a worker that ended
/// while serving them.
pub(crate) fn lost_text(status: ExitStatus) -> String {
    format!(
        "tern-remote {} before reporting this recipient (#4.3.0)",
        ending(status)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(slot: u32, rcpt: u32, outcome: Outcome) -> RcptReport {
        RcptReport {
            slot,
            rcpt,
            outcome,
            text: b"250 ok".to_vec(),
        }
    }

    #[test]
    fn broken_reports() {
        let now = Instant::now();
        let cases: Vec<(RcptReport, &str)> = vec![
            (
                report(8, 0, Outcome::Delivered),
                "report for a slot the worker is not serving",
            ),
            (
                report(7, 3, Outcome::Delivered),
                "report for a recipient number beyond the request",
            ),
            (
                report(7, 99, Outcome::Failed),
                "report for a recipient number beyond the request",
            ),
        ];
        for (r, want) in cases {
            let mut j = Job::new(7, 1, 3, now);
            assert_eq!(j.record(&r), Err(want));
            assert_eq!(j.left(), 3, "{want}: nothing counted");
        }
        let mut j = Job::new(7, 1, 3, now);
        assert_eq!(
            j.record(&report(7, 1, Outcome::Deferred)),
            Ok(Progress::Partial)
        );
        assert_eq!(
            j.record(&report(7, 1, Outcome::Delivered)),
            Err("second report for one recipient")
        );
    }

    #[test]
    fn complete_in_any_order() {
        let mut j = Job::new(7, 1, 3, Instant::now());
        assert_eq!(
            j.record(&report(7, 2, Outcome::Failed)),
            Ok(Progress::Partial)
        );
        assert_eq!(
            j.record(&report(7, 0, Outcome::Delivered)),
            Ok(Progress::Partial)
        );
        assert_eq!(j.left(), 1);
        assert_eq!(
            j.record(&report(7, 1, Outcome::Delivered)),
            Ok(Progress::Complete)
        );
        assert_eq!(j.counts, [2, 0, 1]);
        assert!(j.defer_rest("x").is_empty());
    }

    #[test]
    fn rest_is_deferred_once() {
        let mut j = Job::new(4, 1, 4, Instant::now());
        j.record(&report(4, 1, Outcome::Delivered)).unwrap();
        let rest = j.defer_rest("gone");
        let rcpts: Vec<u32> = rest.iter().map(|r| r.rcpt).collect();
        assert_eq!(rcpts, vec![0, 2, 3]);
        assert!(
            rest.iter()
                .all(|r| r.slot == 4 && r.outcome == Outcome::Deferred && r.text == b"gone")
        );
        assert_eq!(j.left(), 0);
        assert_eq!(j.counts, [1, 3, 0]);
        assert!(j.defer_rest("again").is_empty());
        // and a late report for a deferred recipient is refused
        assert!(j.record(&report(4, 0, Outcome::Delivered)).is_err());
    }

    #[test]
    fn all_deferred() {
        let all = defer_all(9, 3, "busy");
        assert_eq!(all.len(), 3);
        assert_eq!(
            all.iter().map(|r| (r.slot, r.rcpt)).collect::<Vec<_>>(),
            vec![(9, 0), (9, 1), (9, 2)]
        );
    }

    #[test]
    fn ending_texts() {
        assert_eq!(
            lost_text(ExitStatus::from_raw(3 << 8)),
            "tern-remote exited with status 3 before reporting this recipient (#4.3.0)"
        );
        assert_eq!(
            lost_text(ExitStatus::from_raw(9)),
            "tern-remote killed by signal 9 before reporting this recipient (#4.3.0)"
        );
        assert_eq!(ending(ExitStatus::from_raw(0)), "exited with status 0");
    }
}
