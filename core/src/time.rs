//! Time as a value: [`UnixMillis`], and RFC 3339 formatting/parsing without a clock.

use alloc::string::String;
use core::fmt::Write as _;
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, as the host read them from its clock.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// `self + secs` seconds, saturating.
    #[must_use]
    pub fn plus_secs(self, secs: u64) -> Self {
        UnixMillis(self.0.saturating_add(secs.saturating_mul(1000)))
    }

    /// `self + ms` milliseconds, saturating.
    #[must_use]
    pub fn plus_millis(self, ms: u64) -> Self {
        UnixMillis(self.0.saturating_add(ms))
    }

    /// Milliseconds from `self` until `later` (0 if `later` is not after `self`).
    #[must_use]
    pub fn millis_until(self, later: UnixMillis) -> u64 {
        later.0.saturating_sub(self.0)
    }

    /// Whole seconds from `self` until `later`, rounded up (0 if not after).
    #[must_use]
    pub fn secs_until_ceil(self, later: UnixMillis) -> u64 {
        self.millis_until(later).div_ceil(1000)
    }

    /// RFC 3339 in UTC with millisecond precision: `2026-11-22T10:33:00.000Z`.
    #[must_use]
    pub fn to_rfc3339(self) -> String {
        let secs = self.0 / 1000;
        let ms = self.0 % 1000;
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        let mut s = String::with_capacity(24);
        // Writing to a String cannot fail.
        let _ = write!(
            s,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        );
        s
    }

    /// The UTC calendar day as `YYYY-MM-DD`.
    #[must_use]
    pub fn utc_date(self) -> String {
        let (y, m, d) = civil_from_days(self.0 / 1000 / 86_400);
        let mut s = String::with_capacity(10);
        let _ = write!(s, "{y:04}-{m:02}-{d:02}");
        s
    }

    /// Parses an RFC 3339 timestamp (`Z` or `±hh:mm` offset, optional fraction, years 1970–9999).
    /// Returns `None` for anything else, including times before the epoch.
    #[must_use]
    #[allow(clippy::arithmetic_side_effects)] // indices ≤ input length, values bounded by the checks
    pub fn parse_rfc3339(s: &str) -> Option<UnixMillis> {
        let b = s.as_bytes();
        if b.len() < 20 || !b.is_ascii() {
            return None;
        }
        let num = |r: core::ops::Range<usize>| -> Option<u64> {
            let part = s.get(r)?;
            if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let sep = |i: usize, c: u8| b.get(i).copied() == Some(c);
        if !(sep(4, b'-') && sep(7, b'-') && sep(13, b':') && sep(16, b':')) {
            return None;
        }
        if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
            return None;
        }
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1970..=9999).contains(&y)
            || !(1..=12).contains(&mo)
            || d == 0
            || d > days_in_month(y, mo)
        {
            return None;
        }
        if h > 23 || mi > 59 || se > 60 {
            return None;
        }
        let mut i = 19;
        let mut ms = 0u64;
        if sep(i, b'.') {
            let start = i + 1;
            let mut end = start;
            while b.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
            if end == start {
                return None;
            }
            // Milliseconds from the first three fraction digits.
            let mut scale = 100;
            for &c in b.get(start..end.min(start + 3))? {
                ms += u64::from(c - b'0') * scale;
                scale /= 10;
            }
            i = end;
        }
        let offset_secs: i64 = match b.get(i)? {
            b'Z' | b'z' if i + 1 == b.len() => 0,
            sign @ (b'+' | b'-') if i + 6 == b.len() && sep(i + 3, b':') => {
                let oh = num(i + 1..i + 3)?;
                let om = num(i + 4..i + 6)?;
                if oh > 23 || om > 59 {
                    return None;
                }
                let o = i64::try_from(oh * 3600 + om * 60).ok()?;
                if *sign == b'+' {
                    o
                } else {
                    -o
                }
            }
            _ => return None,
        };
        let days = days_from_civil(y, mo, d);
        let local = days * 86_400 + h * 3600 + mi * 60 + se.min(59);
        let utc = i64::try_from(local).ok()? - offset_secs;
        let utc = u64::try_from(utc).ok()?;
        Some(UnixMillis(utc * 1000 + ms))
    }
}

fn is_leap(y: u64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 → (year, month, day). Howard Hinnant's algorithm, for days ≥ 0.
#[allow(clippy::arithmetic_side_effects)] // bounded: days < 2^64 / 86_400_000
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year ≥ 1970, month, day) → days since 1970-01-01.
#[allow(clippy::arithmetic_side_effects)] // year ≤ 9999 (checked by the caller)
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        for ms in [0u64, 1_700_000_000_123, 951_782_400_000, 4_102_444_799_999] {
            let s = UnixMillis(ms).to_rfc3339();
            assert_eq!(UnixMillis::parse_rfc3339(&s), Some(UnixMillis(ms)), "{s}");
        }
        assert_eq!(
            UnixMillis(1_700_000_000_123).to_rfc3339(),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(UnixMillis(951_782_400_000).utc_date(), "2000-02-29");
    }

    #[test]
    fn parses_offsets_and_rejects_garbage() {
        assert_eq!(
            UnixMillis::parse_rfc3339("2023-11-14T23:13:20+01:00"),
            Some(UnixMillis(1_700_000_000_000))
        );
        for bad in [
            "",
            "2023-11-14",
            "2023-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "1969-12-31T23:59:59Z",
            "2023-11-14T22:13:20Zjunk",
            "２０２３-11-14T22:13:20Z",
        ] {
            assert_eq!(UnixMillis::parse_rfc3339(bad), None, "{bad}");
        }
    }
}
