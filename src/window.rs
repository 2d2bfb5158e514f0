//! Update windows: when a partner lets berth change its host. Windows are weekly and read
//! on the partner's wall clock in its IANA zone; blackouts are whole local dates.
//!
//! Daylight-saving changes are handled the way a person reading the manifest expects: a
//! window keeps its wall-clock times. A start or end that falls in a skipped hour moves to
//! the first instant after the gap (so a 02:30 start on a spring-forward night opens at
//! 03:30 summer time); in a repeated hour the earlier of the two instants is used.

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::manifest::{Blackout, Window, syntax};

/// One weekly window: the days it starts on and its local start and end in minutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weekly {
    pub days: Vec<Weekday>,
    pub start: u16,
    pub end: u16,
}

/// A partner's schedule, built from manifests that already validated.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub tz: TimeZone,
    pub windows: Vec<Weekly>,
    pub blackouts: Vec<(Date, Date)>,
}

/// Whether changes may run at an instant, and until or from when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowState {
    Open { closes: Timestamp },
    Closed { opens: Option<Timestamp> },
    Blackout { until: Date },
}

impl WindowState {
    pub fn is_open(&self) -> bool {
        matches!(self, WindowState::Open { .. })
    }
}

/// How far ahead `next open` is searched; past it a schedule counts as never opening.
const HORIZON_DAYS: i64 = 400;

impl Schedule {
    /// Builds a schedule from validated manifest values; invalid entries were refused by
    /// `berth validate` and are skipped here.
    pub fn from_manifest(tz: &str, windows: &[Window], blackouts: &[Blackout]) -> Schedule {
        let windows = windows
            .iter()
            .filter_map(|w| {
                Some(Weekly {
                    days: w
                        .days
                        .iter()
                        .filter_map(|d| syntax::parse_weekday(d).ok())
                        .collect(),
                    start: syntax::parse_clock(&w.start, false).ok()?,
                    end: syntax::parse_clock(&w.end, true).ok()?,
                })
            })
            .collect();
        let blackouts = blackouts
            .iter()
            .filter_map(|b| {
                Some((
                    syntax::parse_date(&b.from).ok()?,
                    syntax::parse_date(&b.to).ok()?,
                ))
            })
            .collect();
        Schedule {
            tz: TimeZone::get(tz).unwrap_or(TimeZone::UTC),
            windows,
            blackouts,
        }
    }

    /// A schedule whose window is always open, for `--ignore-window`.
    pub fn always() -> Schedule {
        Schedule {
            tz: TimeZone::UTC,
            windows: vec![Weekly {
                days: all_days(),
                start: 0,
                end: 1440,
            }],
            blackouts: Vec::new(),
        }
    }

    fn blackout_until(&self, date: Date) -> Option<Date> {
        self.blackouts
            .iter()
            .filter(|(from, to)| *from <= date && date <= *to)
            .map(|(_, to)| *to)
            .max()
    }

    /// The window instances that start on a local date, as instants.
    fn instances(&self, date: Date) -> impl Iterator<Item = (Timestamp, Timestamp)> + '_ {
        let weekday = date.weekday();
        self.windows
            .iter()
            .filter(move |w| w.days.contains(&weekday))
            .filter_map(move |w| {
                let start = self.at(date, w.start)?;
                let end_date = if w.end <= w.start {
                    date.tomorrow().ok()?
                } else {
                    date
                };
                let end = self.at(end_date, w.end)?;
                Some((start, end))
            })
    }

    /// The instant a local date and minute-of-day denote (`24:00` is next midnight).
    fn at(&self, date: Date, minute: u16) -> Option<Timestamp> {
        let (date, minute) = if minute >= 1440 {
            (date.tomorrow().ok()?, minute - 1440)
        } else {
            (date, minute)
        };
        let time = Time::new((minute / 60) as i8, (minute % 60) as i8, 0, 0).ok()?;
        let zoned = self
            .tz
            .to_ambiguous_zoned(date.to_datetime(time))
            .compatible()
            .ok()?;
        Some(zoned.timestamp())
    }

    /// The window state at `now`.
    pub fn state(&self, now: Timestamp) -> WindowState {
        let today = now.to_zoned(self.tz.clone()).date();
        if let Some(until) = self.blackout_until(today) {
            return WindowState::Blackout { until };
        }
        let open = (-1..=0)
            .filter_map(|d| today.checked_add(d.days()).ok())
            .flat_map(|d| self.instances(d))
            .filter(|(start, end)| *start <= now && now < *end)
            .map(|(_, end)| end)
            .max();
        if let Some(mut closes) = open {
            // Back-to-back windows (e.g. every day 00:00-24:00) are one open stretch.
            let ahead: Vec<(Timestamp, Timestamp)> = (0..=8)
                .filter_map(|d| today.checked_add(d.days()).ok())
                .filter(|d| self.blackout_until(*d).is_none())
                .flat_map(|d| self.instances(d).collect::<Vec<_>>())
                .collect();
            while let Some(end) = ahead
                .iter()
                .filter(|(s, e)| *s <= closes && closes < *e)
                .map(|(_, e)| *e)
                .max()
            {
                closes = end;
            }
            return WindowState::Open { closes };
        }
        WindowState::Closed {
            opens: self.next_open(now),
        }
    }

    /// The first instant after `now` at which a window opens outside any blackout.
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        let today = now.to_zoned(self.tz.clone()).date();
        (0..HORIZON_DAYS)
            .filter_map(|d| today.checked_add(d.days()).ok())
            .filter(|d| self.blackout_until(*d).is_none())
            .find_map(|d| self.instances(d).map(|(s, _)| s).filter(|s| *s > now).min())
    }
}

fn all_days() -> Vec<Weekday> {
    use Weekday::*;
    vec![
        Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::Weekday::*;

    fn schedule(tz: &str, windows: Vec<Weekly>, blackouts: Vec<(&str, &str)>) -> Schedule {
        Schedule {
            tz: TimeZone::get(tz).unwrap(),
            windows,
            blackouts: blackouts
                .into_iter()
                .map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap()))
                .collect(),
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn weekend_night() -> Weekly {
        Weekly {
            days: vec![Saturday, Sunday],
            start: 60,
            end: 300,
        }
    }

    #[test]
    fn open_inside_closed_outside_in_partner_zone() {
        // 2026-11-21 is a Saturday. Nairobi is UTC+3.
        let s = schedule("Africa/Nairobi", vec![weekend_night()], vec![]);
        assert_eq!(
            s.state(ts("2026-11-20T22:30:00Z")),
            WindowState::Open {
                closes: ts("2026-11-21T02:00:00Z")
            }
        );
        assert_eq!(
            s.state(ts("2026-11-21T02:00:00Z")),
            WindowState::Closed {
                opens: Some(ts("2026-11-21T22:00:00Z"))
            }
        );
        assert!(!s.state(ts("2026-11-20T21:59:59Z")).is_open());
    }

    #[test]
    fn crossing_midnight_belongs_to_the_start_day() {
        let w = Weekly {
            days: vec![Friday],
            start: 22 * 60,
            end: 2 * 60,
        };
        let s = schedule("UTC", vec![w], vec![]);
        assert!(
            s.state(ts("2026-11-20T23:00:00Z")).is_open(),
            "Friday 23:00"
        );
        assert!(
            s.state(ts("2026-11-21T01:59:00Z")).is_open(),
            "Saturday 01:59"
        );
        assert!(
            !s.state(ts("2026-11-21T02:00:00Z")).is_open(),
            "Saturday 02:00"
        );
        assert!(
            !s.state(ts("2026-11-21T23:00:00Z")).is_open(),
            "Saturday 23:00"
        );
        assert!(
            !s.state(ts("2026-11-20T01:00:00Z")).is_open(),
            "Friday 01:00"
        );
    }

    #[test]
    fn end_of_day() {
        let w = Weekly {
            days: vec![Sunday],
            start: 20 * 60,
            end: 1440,
        };
        let s = schedule("UTC", vec![w], vec![]);
        assert_eq!(
            s.state(ts("2026-11-22T23:59:00Z")),
            WindowState::Open {
                closes: ts("2026-11-23T00:00:00Z")
            }
        );
        assert!(!s.state(ts("2026-11-23T00:00:00Z")).is_open());
    }

    #[test]
    fn blackout_wins_and_next_open_skips_it() {
        let s = schedule(
            "UTC",
            vec![weekend_night()],
            vec![("2026-11-21", "2026-11-22")],
        );
        assert_eq!(
            s.state(ts("2026-11-21T02:00:00Z")),
            WindowState::Blackout {
                until: "2026-11-22".parse().unwrap()
            }
        );
        assert_eq!(
            s.next_open(ts("2026-11-20T12:00:00Z")),
            Some(ts("2026-11-28T01:00:00Z"))
        );
    }

    #[test]
    fn back_to_back_windows_are_one_stretch() {
        let s = schedule(
            "UTC",
            vec![Weekly {
                days: all_days(),
                start: 0,
                end: 1440,
            }],
            vec![("2026-11-24", "2026-11-24")],
        );
        assert_eq!(
            s.state(ts("2026-11-21T12:00:00Z")),
            WindowState::Open {
                closes: ts("2026-11-24T00:00:00Z")
            },
            "open until the blackout day"
        );
    }

    #[test]
    fn no_windows_never_opens() {
        let s = schedule("UTC", vec![], vec![]);
        assert_eq!(
            s.state(ts("2026-11-21T02:00:00Z")),
            WindowState::Closed { opens: None }
        );
    }

    #[test]
    fn dst_gap_moves_start_after_the_gap() {
        // Europe/Berlin springs forward on 2026-03-29 at 02:00 -> 03:00 (UTC+1 -> UTC+2).
        let w = Weekly {
            days: vec![Sunday],
            start: 2 * 60 + 30,
            end: 4 * 60,
        };
        let s = schedule("Europe/Berlin", vec![w], vec![]);
        // 02:30 does not exist; the window opens at 03:30 CEST = 01:30 UTC.
        assert!(!s.state(ts("2026-03-29T01:15:00Z")).is_open());
        assert!(s.state(ts("2026-03-29T01:30:00Z")).is_open());
        assert_eq!(
            s.state(ts("2026-03-29T01:45:00Z")),
            WindowState::Open {
                closes: ts("2026-03-29T02:00:00Z")
            }
        );
    }

    #[test]
    fn dst_fold_uses_the_earlier_instant() {
        // Europe/Berlin falls back on 2026-10-25 at 03:00 -> 02:00; 02:30 happens twice.
        let w = Weekly {
            days: vec![Sunday],
            start: 2 * 60 + 30,
            end: 3 * 60 + 30,
        };
        let s = schedule("Europe/Berlin", vec![w], vec![]);
        // First 02:30 is CEST (00:30 UTC); 03:30 CET is 02:30 UTC: the window lasts two hours.
        assert!(s.state(ts("2026-10-25T00:30:00Z")).is_open());
        assert!(s.state(ts("2026-10-25T02:29:00Z")).is_open());
        assert!(!s.state(ts("2026-10-25T02:30:00Z")).is_open());
    }
}
