//! Times in front of log lines, as loggers write them.
//!
//! Tern's programs write no time themselves (qmail's way: the logger adds
//! it). Recognised, at the start of the prefix:
//!
//! * a TAI64N label, `@` and 24 hex digits (daemontools' `multilog t`,
//!   s6-log `t`): converted to UTC, with TAI64's fixed 10-second offset and
//!   no leap-second table;
//! * an ISO 8601 date and time, `YYYY-MM-DD` then `T`, a space or `_`, then
//!   `HH:MM:SS` (svlogd `-tt`, s6-log `T`, `journalctl -o short-iso`,
//!   moreutils `ts`): taken as written, any zone after it ignored.

/// Seconds since 1970-01-01 (UTC for TAI64N, as written for ISO 8601) of
/// the time at the start of `prefix`, if there is one.
pub fn prefix_time(prefix: &[u8]) -> Option<i64> {
    if let Some(hex) = prefix.strip_prefix(b"@") {
        return tai64n(hex);
    }
    iso(prefix)
}

fn tai64n(hex: &[u8]) -> Option<i64> {
    let label = hex.get(..24)?;
    if hex.get(24).is_some_and(|b| !b.is_ascii_whitespace()) {
        return None;
    }
    let text = std::str::from_utf8(label).ok()?;
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let secs = u64::from_str_radix(&text[..16], 16).ok()?;
    // libtai: label = 2^62 + 10 + Unix time.
    let unix = secs.checked_sub((1u64 << 62) + 10)?;
    i64::try_from(unix).ok()
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn iso(p: &[u8]) -> Option<i64> {
    let p = p.get(..19)?;
    if p[4] != b'-' || p[7] != b'-' || !matches!(p[10], b'T' | b' ' | b'_') {
        return None;
    }
    if p[13] != b':' || p[16] != b':' {
        return None;
    }
    let (y, m, d) = (digits(&p[..4])?, digits(&p[5..7])?, digits(&p[8..10])?);
    let (h, mi, s) = (
        digits(&p[11..13])?,
        digits(&p[14..16])?,
        digits(&p[17..19])?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + h * 3600 + mi * 60 + s)
}

/// Days since 1970-01-01 of a calendar date (Howard Hinnant's algorithm,
/// the inverse of `tern_date::civil_from_days`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD HH:00` of an hour's first second.
pub fn hour_label(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let (y, m, d) = tern_date::civil_from_days(days);
    let h = secs.rem_euclid(86_400) / 3600;
    format!("{y:04}-{m:02}-{d:02} {h:02}:00")
}

/// `YYYY-MM-DD HH:MM:SS` of a time.
pub fn hour_label_exact(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let (y, m, d) = tern_date::civil_from_days(days);
    let r = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        r / 3600,
        r % 3600 / 60,
        r % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tai64n_labels() {
        // 2^62 + 10 + 1767323045 (2026-01-02 03:04:05 UTC).
        let label = format!("@{:016x}{:08x}", (1u64 << 62) + 10 + 1_767_323_045, 7);
        assert_eq!(prefix_time(label.as_bytes()), Some(1_767_323_045));
        assert_eq!(hour_label(1_767_323_045), "2026-01-02 03:00");
        for bad in [
            &b"@"[..],
            b"@4000",
            b"@40000000xyz0000000000000",
            b"@000000000000000000000000",
            b"@400000006957355f00000000junk",
        ] {
            assert_eq!(prefix_time(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn iso_times() {
        for good in [
            &b"2026-01-02T03:04:05+0000 host tern-start[1]:"[..],
            b"2026-01-02 03:04:05.123456789",
            b"2026-01-02_03:04:05.12345",
            b"2026-01-02T03:04:05Z",
        ] {
            assert_eq!(prefix_time(good), Some(1_767_323_045), "{good:?}");
        }
        for bad in [
            &b"2026-13-02T03:04:05"[..],
            b"2026-01-02T24:04:05",
            b"2026-01-02X03:04:05",
            b"2026/01/02 03:04:05",
            b"2026-01-02",
            b"Jan  2 03:04:05 host",
            b"",
            b"-026-01-02T03:04:05",
        ] {
            assert_eq!(prefix_time(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for days in [-800_000, -1, 0, 59, 11_017, 20_000, 2_000_000] {
            let (y, m, d) = tern_date::civil_from_days(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days);
        }
    }
}
