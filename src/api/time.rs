//! UTC timestamps in the service's format: ISO-8601 with seven fractional
//! digits and `Z` (`2023-08-08T01:34:32.1341831Z`).
//!
//! Written by hand (days-from-civil arithmetic) because it is the only date
//! handling the tool needs; a calendar crate would cost more build time than
//! these lines.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Formats `t` as `YYYY-MM-DDTHH:MM:SS.fffffffZ` (100 ns ticks, like .NET).
///
/// Digits are placed by hand: every request and every simulated action
/// stamps a time, and `format!` with padding cost twenty times as much.
pub fn format_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let ticks = d.subsec_nanos() / 100;
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let (hh, mm, ss) = (rem / 3600, (rem / 60) % 60, rem % 60);
    if y > 9999 {
        // Past the format's four-digit years: no service time is; kept exact.
        return format!("{y:04}-{m:02}-{day:02}T{hh:02}:{mm:02}:{ss:02}.{ticks:07}Z");
    }
    let mut out = *b"0000-00-00T00:00:00.0000000Z";
    digits(&mut out[0..4], y as u64);
    digits(&mut out[5..7], u64::from(m));
    digits(&mut out[8..10], u64::from(day));
    digits(&mut out[11..13], hh);
    digits(&mut out[14..16], mm);
    digits(&mut out[17..19], ss);
    digits(&mut out[20..27], u64::from(ticks));
    out.iter().map(|&b| char::from(b)).collect()
}

/// Writes the last `dst.len()` decimal digits of `n` into `dst`.
fn digits(dst: &mut [u8], mut n: u64) {
    for b in dst.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Parses an ISO-8601 UTC timestamp: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00)?`.
/// Returns `None` for anything else.
pub fn parse_utc(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00")).unwrap_or(s);
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) { t.parse().ok() } else { None }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut nanos = 0u32;
    if b.len() > 19 {
        if b[19] != b'.' {
            return None;
        }
        let frac = &s[20..];
        if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        nanos = frac.parse::<u32>().ok()? * 10u32.pow(9 - frac.len() as u32);
    }
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    if days < 0 {
        return None;
    }
    let secs = days as u64 * 86_400 + h * 3600 + mi * 60 + se;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Howard Hinnant's `days_from_civil`: days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_service_format() {
        let s = "2023-08-08T01:34:32.1341831Z";
        let t = parse_utc(s).unwrap();
        assert_eq!(format_utc(t), s);
        assert_eq!(format_utc(UNIX_EPOCH), "1970-01-01T00:00:00.0000000Z");
        let leap = parse_utc("2024-02-29T23:59:59Z").unwrap();
        assert_eq!(format_utc(leap), "2024-02-29T23:59:59.0000000Z");
        assert_eq!(parse_utc("2019-01-02T14:39:38.22Z"), parse_utc("2019-01-02T14:39:38.2200000Z"));
    }

    #[test]
    fn refuses_garbage() {
        for bad in
            ["", "yesterday", "2023-13-01T00:00:00Z", "2023-08-08T01:34", "2023-08-08T01:34:32.Z"]
        {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn matches_the_padded_format_everywhere() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let t =
                UNIX_EPOCH + Duration::new(rng.u64(0..253_402_300_800), rng.u32(0..1_000_000_000));
            let d = t.duration_since(UNIX_EPOCH).unwrap();
            let (y, m, day) = civil_from_days((d.as_secs() / 86_400) as i64);
            let rem = d.as_secs() % 86_400;
            let expected = format!(
                "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:07}Z",
                rem / 3600,
                (rem / 60) % 60,
                rem % 60,
                d.subsec_nanos() / 100
            );
            assert_eq!(format_utc(t), expected);
        }
        let far = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert_eq!(format_utc(far), "10000-01-01T00:00:00.0000000Z");
    }

    #[test]
    fn many_days_round_trip() {
        for day in (0..80_000).step_by(37) {
            let t = UNIX_EPOCH + Duration::from_secs(day * 86_400 + 12_345);
            assert_eq!(parse_utc(&format_utc(t)), Some(t));
        }
    }
}
