//! ISO 8601 durations as Canopy's monitoring `interval` accepts them (the pattern in the
//! OpenAPI document): `P[nY][nM][nD|nW][T[nH][nM][n[.n]S]]`, at least one part.

use chrono::{DateTime, Duration, Months, Utc};

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct IsoDuration {
    pub negative: bool,
    pub years: u32,
    pub months: u32,
    pub weeks: u32,
    pub days: u32,
    pub hours: u32,
    pub minutes: u32,
    pub seconds: f64,
}

impl IsoDuration {
    pub fn parse(s: &str) -> Option<Self> {
        let mut d = IsoDuration::default();
        let rest = match s.strip_prefix('-') {
            Some(r) => {
                d.negative = true;
                r
            }
            None => s,
        };
        let rest = rest.strip_prefix('P')?;
        let (date, time) = match rest.split_once('T') {
            Some((a, b)) => (a, Some(b)),
            None => (rest, None),
        };
        if date.is_empty() && time.is_none_or(str::is_empty) {
            return None;
        }
        // Date designators must appear in the order Y, M, then one of D or W.
        let mut rank = 0;
        for (value, unit) in parts(date)? {
            let n: u32 = value.parse().ok()?;
            let r = match unit {
                'Y' => 1,
                'M' => 2,
                'D' | 'W' => 3,
                _ => return None,
            };
            if r <= rank {
                return None;
            }
            rank = r;
            match unit {
                'Y' => d.years = n,
                'M' => d.months = n,
                'D' => d.days = n,
                _ => d.weeks = n,
            }
        }
        if let Some(time) = time {
            if time.is_empty() {
                return None;
            }
            let mut rank = 0;
            for (value, unit) in parts(time)? {
                let r = match unit {
                    'H' => 1,
                    'M' => 2,
                    'S' => 3,
                    _ => return None,
                };
                if r <= rank {
                    return None;
                }
                rank = r;
                match unit {
                    'S' => d.seconds = value.parse().ok()?,
                    'H' => d.hours = value.parse().ok()?,
                    _ => d.minutes = value.parse().ok()?,
                }
            }
        }
        Some(d)
    }

    /// `t + self`, with calendar months and years.
    pub fn add_to(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let months = Months::new(self.years.checked_mul(12)?.checked_add(self.months)?);
        let fixed = Duration::days(i64::from(self.weeks) * 7 + i64::from(self.days))
            + Duration::hours(i64::from(self.hours))
            + Duration::minutes(i64::from(self.minutes))
            + Duration::milliseconds((self.seconds * 1000.0) as i64);
        if self.negative {
            t.checked_sub_months(months).map(|t| t - fixed)
        } else {
            t.checked_add_months(months).map(|t| t + fixed)
        }
    }

    /// Whether the interval is at least `days` long wherever it starts (a month counts as its
    /// shortest, 28 days, except that `P1M` must pass Canopy's 30-day floor, so months count 30).
    pub fn at_least_days(&self, days: i64) -> bool {
        if self.negative {
            return false;
        }
        let total_secs = (i64::from(self.years) * 365
            + i64::from(self.months) * 30
            + i64::from(self.weeks) * 7
            + i64::from(self.days))
            * 86_400
            + i64::from(self.hours) * 3_600
            + i64::from(self.minutes) * 60
            + self.seconds as i64;
        total_secs >= days * 86_400
    }
}

/// Splits `12Y3M` into `[("12", 'Y'), ("3", 'M')]`; `None` on a dangling number or empty part.
fn parts(s: &str) -> Option<Vec<(&str, char)>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c.is_ascii_digit() || c == '.' {
            continue;
        }
        if i == start {
            return None;
        }
        out.push((&s[start..i], c));
        start = i + c.len_utf8();
    }
    (start == s.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_floor() {
        for ok in ["P1M", "P30D", "P1Y", "P5W", "P1Y2M3D", "P29DT24H", "PT720H"] {
            let d = IsoDuration::parse(ok).unwrap_or_else(|| panic!("{ok}"));
            assert!(d.at_least_days(30), "{ok}");
        }
        for short in ["P29D", "P4W", "PT1H"] {
            assert!(
                !IsoDuration::parse(short).unwrap().at_least_days(30),
                "{short}"
            );
        }
        for bad in [
            "", "P", "PT", "1M", "P1", "PM", "P1D1M", "P1X", "monthly", "P1.5M",
        ] {
            assert!(IsoDuration::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn adds_calendar_months() {
        let t = DateTime::parse_from_rfc3339("2024-01-31T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let d = IsoDuration::parse("P1M").unwrap();
        assert_eq!(
            d.add_to(t).unwrap().to_rfc3339(),
            "2024-02-29T00:00:00+00:00"
        );
    }
}
