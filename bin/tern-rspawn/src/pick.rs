//! Which worker gets a request: the scheduling rule, without any I/O.

use std::time::Instant;

/// What the rule needs to know of one running worker (one whose socket is
/// still open: closing and lost workers are not counted).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen<'a> {
    /// The domain the worker serves.
    pub(crate) domain: &'a [u8],
    /// When it became idle; `None` while it serves a request.
    pub(crate) idle_since: Option<Instant>,
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice {
    /// Hand it to this idle worker of the same domain (its connection may
    /// still be open).
    Reuse(usize),
    /// Start a new worker: fewer than the limit run.
    Start,
    /// Close this idle worker of another domain (the longest idle), then
    /// start a new one in its place.
    Evict(usize),
    /// Every worker is busy and the limit is reached.
    AllBusy,
}

/// Domains compare without regard to ASCII case (tern-send sends them in
/// lower case; this costs nothing and survives a sender that does not).
fn same_domain(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Picks the worker for a request to `domain` among `workers`, when at most
/// `max` may run:
///
/// 1. an idle worker of the same domain — the one idle for the shortest
///    time, whose connection is the likeliest to be still open (the others
///    then reach the idle limit and close);
/// 2. else a new worker, if fewer than `max` run;
/// 3. else the idle worker (necessarily of another domain) idle for the
///    longest time is evicted to make room;
/// 4. else every worker is busy.
pub(crate) fn choose(workers: &[Seen<'_>], domain: &[u8], max: usize) -> Choice {
    let reuse = workers
        .iter()
        .enumerate()
        .filter(|(_, w)| same_domain(w.domain, domain))
        .filter_map(|(i, w)| w.idle_since.map(|t| (i, t)))
        .max_by_key(|&(_, t)| t);
    if let Some((i, _)) = reuse {
        return Choice::Reuse(i);
    }
    if workers.len() < max {
        return Choice::Start;
    }
    let evict = workers
        .iter()
        .enumerate()
        .filter_map(|(i, w)| w.idle_since.map(|t| (i, t)))
        .min_by_key(|&(_, t)| t);
    match evict {
        Some((i, _)) => Choice::Evict(i),
        None => Choice::AllBusy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(base: Instant, secs: u64) -> Option<Instant> {
        Some(base + Duration::from_secs(secs))
    }

    /// (name, workers as (domain, idle since), request domain, limit, choice)
    type Case<'a> = (
        &'a str,
        Vec<(&'a [u8], Option<Instant>)>,
        &'a [u8],
        usize,
        Choice,
    );

    #[test]
    fn rule_table() {
        let t = Instant::now();
        let busy = None;
        let cases: Vec<Case<'_>> = vec![
            // Bad and edge cases first.
            (
                "no worker, limit 0",
                vec![],
                b"a.example",
                0,
                Choice::AllBusy,
            ),
            (
                "all busy at the limit",
                vec![(b"a.example", busy), (b"b.example", busy)],
                b"c.example",
                2,
                Choice::AllBusy,
            ),
            (
                "same domain but busy, at the limit",
                vec![(b"a.example", busy)],
                b"a.example",
                1,
                Choice::AllBusy,
            ),
            (
                "over the limit (limit lowered)",
                vec![
                    (b"a.example", busy),
                    (b"b.example", busy),
                    (b"c.example", busy),
                ],
                b"d.example",
                2,
                Choice::AllBusy,
            ),
            // Start.
            ("nothing runs", vec![], b"a.example", 3, Choice::Start),
            (
                "same domain busy, room left",
                vec![(b"a.example", busy)],
                b"a.example",
                2,
                Choice::Start,
            ),
            (
                "other domain idle, room left: start, do not evict",
                vec![(b"b.example", at(t, 0))],
                b"a.example",
                2,
                Choice::Start,
            ),
            // Reuse.
            (
                "same domain idle",
                vec![(b"b.example", busy), (b"a.example", at(t, 1))],
                b"a.example",
                2,
                Choice::Reuse(1),
            ),
            (
                "same domain idle, at the limit",
                vec![(b"a.example", at(t, 1))],
                b"a.example",
                1,
                Choice::Reuse(0),
            ),
            (
                "reuse before start",
                vec![(b"a.example", at(t, 1))],
                b"a.example",
                10,
                Choice::Reuse(0),
            ),
            (
                "case does not matter",
                vec![(b"A.Example", at(t, 1))],
                b"a.example",
                1,
                Choice::Reuse(0),
            ),
            (
                "the most recently idle of two",
                vec![
                    (b"a.example", at(t, 1)),
                    (b"a.example", at(t, 5)),
                    (b"a.example", at(t, 3)),
                ],
                b"a.example",
                3,
                Choice::Reuse(1),
            ),
            (
                "a suffix is another domain",
                vec![(b"x.a.example", at(t, 1))],
                b"a.example",
                1,
                Choice::Evict(0),
            ),
            // Evict.
            (
                "the longest idle of another domain",
                vec![
                    (b"b.example", at(t, 5)),
                    (b"c.example", at(t, 2)),
                    (b"d.example", busy),
                ],
                b"a.example",
                3,
                Choice::Evict(1),
            ),
            (
                "busy workers are never evicted",
                vec![(b"b.example", busy), (b"c.example", at(t, 9))],
                b"a.example",
                2,
                Choice::Evict(1),
            ),
        ];
        for (name, ws, domain, max, want) in cases {
            let seen: Vec<Seen<'_>> = ws
                .iter()
                .map(|&(domain, idle_since)| Seen { domain, idle_since })
                .collect();
            assert_eq!(choose(&seen, domain, max), want, "{name}");
        }
    }
}
