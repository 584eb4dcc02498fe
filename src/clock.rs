//! Wall-clock time and the UTC calendar, without a time zone database: the Unix time now (in
//! milliseconds, the store's timestamps, or seconds), a day index as a date and back, and
//! RFC 3339 timestamps.

/// The UTC date (year, month 1-12, day 1-31) of a day index since 1970-01-01, by Howard
/// Hinnant's civil-from-days algorithm (no time zone database needed).
pub fn civil_from_days(day: i64) -> (i64, u32, u32) {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The day index since 1970-01-01 of a UTC date (year, month 1-12, day 1-31): the inverse
/// of [`civil_from_days`] (Hinnant's days-from-civil). Does not check the date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A day number (days since the epoch) as `YYYY-MM-DD`.
pub fn day_name(day: i64) -> String {
    rfc3339(day * 86_400)[..10].to_string()
}

/// A Unix time as RFC 3339 in UTC (`2026-12-06T11:15:00Z`).
pub fn rfc3339(unix_secs: i64) -> String {
    let (y, m, d) = civil_from_days(unix_secs.div_euclid(86_400));
    let s = unix_secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// The Unix time now in milliseconds (0 if the clock is before 1970): every timestamp the
/// store writes.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The Unix time now, in whole seconds (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_783 + 28), (2024, 3, 29));
        assert_eq!(rfc3339(1_795_737_600 + 3_661), "2026-11-27T01:01:01Z");
        assert_eq!(day_name(20_784), "2026-11-27");
        // days_from_civil inverts civil_from_days, across leap days, centuries and 1970.
        for day in (-800_000..800_000)
            .step_by(997)
            .chain([0, 20_784, 11_016, 11_017])
        {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day, "{y}-{m}-{d}");
        }
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        assert_eq!(days_from_civil(2026, 12, 1), 20_788);
    }
}
