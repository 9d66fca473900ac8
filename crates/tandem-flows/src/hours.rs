//! Opening hours: a weekly schedule in the business's time zone, with closed dates.

use std::collections::BTreeSet;

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use tandem_domain::Timestamp;

use crate::diagnostic::{Loc, Report};
use crate::raw::RawHours;

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

/// When the business is open.
#[derive(Debug, Clone, Default)]
pub struct Hours {
    /// Open intervals per weekday (Monday first), in minutes since midnight, `[start, end)`.
    weekly: [Vec<(u16, u16)>; 7],
    /// Dates closed all day.
    closed: BTreeSet<Date>,
}

fn minutes(hhmm: &str) -> Option<u16> {
    let (h, m) = hhmm.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

impl Hours {
    /// Reads a schedule, recording problems in `report`.
    pub(crate) fn parse(raw: &RawHours, file: &str, report: &mut Report) -> Self {
        let mut hours = Self::default();
        for (day, intervals) in &raw.weekly {
            let Some(index) = DAYS.iter().position(|(name, _)| name == day) else {
                let at = intervals.first().map_or_else(
                    || Loc {
                        file: file.to_owned(),
                        ..Loc::default()
                    },
                    |i| Loc::of(file, &i.referenced),
                );
                report.error(
                    &at,
                    format!("unknown day `{day}`"),
                    Some("days are mon, tue, wed, thu, fri, sat, sun"),
                );
                continue;
            };
            for interval in intervals {
                let at = Loc::of(file, &interval.referenced);
                let parsed = interval
                    .value
                    .split_once('-')
                    .and_then(|(a, b)| Some((minutes(a)?, minutes(b)?)))
                    .filter(|(a, b)| a < b);
                match parsed {
                    Some(span) => hours.weekly[index].push(span),
                    None => report.error(
                        &at,
                        format!("`{}` is not an opening interval", interval.value),
                        Some(
                            "write HH:MM-HH:MM with the start before the end, such as 09:00-18:00",
                        ),
                    ),
                }
            }
        }
        for date in &raw.closed {
            match date.value.parse::<Date>() {
                Ok(d) => {
                    hours.closed.insert(d);
                }
                Err(_) => report.error(
                    &Loc::of(file, &date.referenced),
                    format!("`{}` is not a date", date.value),
                    Some("write closed dates as YYYY-MM-DD"),
                ),
            }
        }
        hours
    }

    /// Builds a schedule from plain values (`mon = ["09:00-18:00"]`, closed dates as
    /// `YYYY-MM-DD`), as written in a configuration file.
    ///
    /// # Errors
    /// Returns every problem, one per line.
    pub fn from_spec(
        weekly: &std::collections::BTreeMap<String, Vec<String>>,
        closed: &[String],
    ) -> Result<Self, String> {
        let mut hours = Self::default();
        let mut problems = Vec::new();
        for (day, spans) in weekly {
            let Some(index) = DAYS.iter().position(|(name, _)| name == day) else {
                problems.push(format!(
                    "unknown day `{day}` (days are mon, tue, wed, thu, fri, sat, sun)"
                ));
                continue;
            };
            for span in spans {
                match span
                    .split_once('-')
                    .and_then(|(a, b)| Some((minutes(a)?, minutes(b)?)))
                    .filter(|(a, b)| a < b)
                {
                    Some(interval) => hours.weekly[index].push(interval),
                    None => problems.push(format!(
                        "`{span}` is not an opening interval (write HH:MM-HH:MM, such as 09:00-18:00)"
                    )),
                }
            }
        }
        for date in closed {
            match date.parse::<Date>() {
                Ok(d) => {
                    hours.closed.insert(d);
                }
                Err(_) => problems.push(format!("`{date}` is not a date (write YYYY-MM-DD)")),
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(hours)
    }

    fn day_index(weekday: Weekday) -> usize {
        usize::from(weekday.to_monday_zero_offset().unsigned_abs())
    }

    /// Returns true when the business is open at `at`.
    pub fn is_open(&self, at: Timestamp, tz: &TimeZone) -> bool {
        let Some(zoned) = zoned(at, tz) else {
            return false;
        };
        if self.closed.contains(&zoned.date()) {
            return false;
        }
        let minute = u16::try_from(zoned.hour()).unwrap_or(0) * 60
            + u16::try_from(zoned.minute()).unwrap_or(0);
        self.weekly[Self::day_index(zoned.weekday())]
            .iter()
            .any(|&(start, end)| start <= minute && minute < end)
    }

    /// Returns the next time the business opens after `at` (within two weeks), in its time
    /// zone, or `None` when the schedule has no opening in that time.
    pub fn next_opening(&self, at: Timestamp, tz: &TimeZone) -> Option<jiff::Zoned> {
        let now = zoned(at, tz)?;
        let now_minute = u16::try_from(now.hour()).ok()? * 60 + u16::try_from(now.minute()).ok()?;
        for offset in 0..15 {
            let date = now
                .date()
                .checked_add(jiff::Span::new().days(offset))
                .ok()?;
            if self.closed.contains(&date) {
                continue;
            }
            let mut starts: Vec<u16> = self.weekly[Self::day_index(date.weekday())]
                .iter()
                .map(|&(start, _)| start)
                .filter(|&start| offset > 0 || start > now_minute)
                .collect();
            starts.sort_unstable();
            if let Some(start) = starts.first() {
                let time = jiff::civil::Time::new(
                    i8::try_from(start / 60).ok()?,
                    i8::try_from(start % 60).ok()?,
                    0,
                    0,
                )
                .ok()?;
                return date.to_datetime(time).to_zoned(tz.clone()).ok();
            }
        }
        None
    }
}

/// Converts a timestamp to the business's local time.
pub fn zoned(at: Timestamp, tz: &TimeZone) -> Option<jiff::Zoned> {
    let millis = i64::try_from(at.as_millis()).ok()?;
    Some(
        jiff::Timestamp::from_millisecond(millis)
            .ok()?
            .to_zoned(tz.clone()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(yaml: &str) -> Hours {
        let raw: RawHours = serde_saphyr::from_str(yaml).unwrap();
        let mut report = Report::default();
        let hours = Hours::parse(&raw, "bot.yaml", &mut report);
        assert!(!report.has_errors(), "{:?}", report.items);
        hours
    }

    fn at(text: &str, tz: &TimeZone) -> Timestamp {
        let dt: jiff::civil::DateTime = text.parse().unwrap();
        let ms = dt
            .to_zoned(tz.clone())
            .unwrap()
            .timestamp()
            .as_millisecond();
        Timestamp(u64::try_from(ms).unwrap())
    }

    #[test]
    fn open_and_next_opening_follow_the_local_schedule_and_closed_dates() {
        let tz = TimeZone::get("Europe/Lisbon").unwrap();
        let h = hours(
            "weekly:\n  mon: ['09:00-13:00', '14:00-18:00']\n  sat: ['10:00-12:00']\nclosed: ['2026-11-30']\n",
        );
        // 2026-11-23 is a Monday.
        assert!(h.is_open(at("2026-11-23T09:00", &tz), &tz));
        assert!(!h.is_open(at("2026-11-23T13:30", &tz), &tz));
        assert!(
            !h.is_open(at("2026-11-24T10:00", &tz), &tz),
            "tuesday is closed"
        );
        let next = h.next_opening(at("2026-11-23T13:30", &tz), &tz).unwrap();
        assert_eq!(next.datetime().to_string(), "2026-11-23T14:00:00");
        let next = h.next_opening(at("2026-11-23T19:00", &tz), &tz).unwrap();
        assert_eq!(next.datetime().to_string(), "2026-11-28T10:00:00");
        // The Monday after is a closed date: the next opening is the Saturday after it.
        let next = h.next_opening(at("2026-11-28T12:30", &tz), &tz).unwrap();
        assert_eq!(next.datetime().to_string(), "2026-12-05T10:00:00");
    }

    #[test]
    fn bad_days_and_intervals_are_reported_with_their_position() {
        let raw: RawHours =
            serde_saphyr::from_str("weekly:\n  mon: ['18:00-09:00']\n  funday: ['09:00-10:00']\n")
                .unwrap();
        let mut report = Report::default();
        let _ = Hours::parse(&raw, "bot.yaml", &mut report);
        let messages: Vec<_> = report.items.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("bot.yaml:2:") && m.contains("18:00-09:00"))
        );
        assert!(messages.iter().any(|m| m.contains("unknown day `funday`")));
    }
}
