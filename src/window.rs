//! Update windows: when a partner lets berth change its host. Windows are weekly and read
//! on the partner's wall clock in its IANA zone; blackouts are whole local dates.
//!
//! Daylight-saving changes are handled the way a person reading the manifest expects: a
//! window keeps its wall-clock times. A start or end that falls in a skipped hour moves
//! forward by the length of the gap, as the clocks did (so a 02:30 start on a spring-forward
//! night opens at 03:30 summer time); in a repeated hour the earlier of the two instants is
//! used. A window spanning the change is therefore an hour shorter or longer in real time
//! (Europe/Berlin `01:00`-`05:00` lasts 3 h on 2026-03-29 and 5 h on 2026-10-25).
//!
//! A blackout removes whole local dates: the part of a window instance that falls on a
//! blackout date is closed, the rest of it (an instance crossing midnight into or out of a
//! blackout date) stays open. [`Schedule::state`], [`Schedule::next_open`],
//! [`Schedule::occurrences`] and [`Schedule::stretches`] all derive from the same open
//! pieces, so `berth plan`, the agent and `berth windows` always agree.

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
pub const HORIZON_DAYS: i64 = 400;

/// How many days beyond the instants asked about back-to-back windows are joined into one
/// stretch; a stretch open longer than that is reported as cut there.
pub const REACH_DAYS: i64 = 8;

/// A span of time during which changes may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opening {
    pub start: Timestamp,
    pub end: Timestamp,
    /// [`Schedule::stretches`] only: the stretch was already open where the search began
    /// ([`REACH_DAYS`] before the period), so it may have opened before `start`.
    pub open_before: bool,
    /// [`Schedule::stretches`] only: the stretch is still open where the search ended
    /// ([`REACH_DAYS`] after the period), so it may close after `end`.
    pub open_after: bool,
}

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

    /// The start of a local date: its first instant (after a gap at midnight).
    fn start_of(&self, date: Date) -> Option<Timestamp> {
        self.at(date, 0)
    }

    /// The open pieces of the instances that start on a local date: each instance minus
    /// the blackout dates it touches (at most two pieces each), sorted by start. Pieces of
    /// different instances are not joined.
    fn pieces(&self, date: Date) -> Vec<(Timestamp, Timestamp)> {
        let mut out = Vec::new();
        for (start, end) in self.instances(date) {
            let mut mine: Vec<(Timestamp, Timestamp)> = Vec::new();
            let mut cursor = start;
            while cursor < end {
                let day = cursor.to_zoned(self.tz.clone()).date();
                let next = day
                    .tomorrow()
                    .ok()
                    .and_then(|d| self.start_of(d))
                    .map_or(end, |n| n.min(end));
                if next <= cursor {
                    break;
                }
                if self.blackout_until(day).is_none() {
                    match mine.last_mut() {
                        Some((_, e)) if *e == cursor => *e = next,
                        _ => mine.push((cursor, next)),
                    }
                }
                cursor = next;
            }
            out.extend(mine);
        }
        out.sort();
        out
    }

    /// Pieces of the instances starting on local dates `first..=last`, sorted by start and
    /// joined where they overlap (and, with `touching`, where one ends as the next begins).
    fn merged(&self, first: Date, last: Date, touching: bool) -> Vec<(Timestamp, Timestamp)> {
        let mut pieces = Vec::new();
        let mut day = first;
        while day <= last {
            pieces.extend(self.pieces(day));
            match day.tomorrow() {
                Ok(d) => day = d,
                Err(_) => break,
            }
        }
        pieces.sort();
        let mut out: Vec<(Timestamp, Timestamp)> = Vec::new();
        for (s, e) in pieces {
            match out.last_mut() {
                Some((_, end)) if s < *end || (touching && s == *end) => *end = (*end).max(e),
                _ => out.push((s, e)),
            }
        }
        out
    }

    fn local_date(&self, t: Timestamp) -> Date {
        t.to_zoned(self.tz.clone()).date()
    }

    /// The window instances that overlap `[from, until)`, outside blackout dates, in order:
    /// one per listed day of each window (instances that overlap each other are joined, so
    /// no two start together). An instance open at `from` keeps its real start. Instances
    /// that only touch stay separate: see [`Schedule::stretches`] for the joined view.
    pub fn occurrences(&self, from: Timestamp, until: Timestamp) -> Vec<Opening> {
        let first = self
            .local_date(from)
            .checked_sub(2.days())
            .unwrap_or(Date::MIN);
        let last = self
            .local_date(until)
            .checked_add(1.days())
            .unwrap_or(Date::MAX);
        self.merged(first, last, false)
            .into_iter()
            .filter(|(s, e)| *e > from && *s < until)
            .map(|(start, end)| Opening {
                start,
                end,
                open_before: false,
                open_after: false,
            })
            .collect()
    }

    /// The stretches during which changes may run that overlap `[from, until)`, in order:
    /// instances outside blackout dates, with back-to-back and overlapping ones joined (a
    /// window every day `00:00`-`24:00` is one stretch). Exactly the instants at which
    /// [`Schedule::state`] is open. Joining looks [`REACH_DAYS`] beyond both ends; the
    /// `open_before`/`open_after` flags say when a stretch goes on past that.
    pub fn stretches(&self, from: Timestamp, until: Timestamp) -> Vec<Opening> {
        let first = self
            .local_date(from)
            .checked_sub(REACH_DAYS.days())
            .unwrap_or(Date::MIN);
        let last = self
            .local_date(until)
            .checked_add(REACH_DAYS.days())
            .unwrap_or(Date::MAX);
        let lo = first.tomorrow().ok().and_then(|d| self.start_of(d));
        let hi = last.tomorrow().ok().and_then(|d| self.start_of(d));
        self.merged(first, last, true)
            .into_iter()
            .filter(|(s, e)| *e > from && *s < until)
            .map(|(start, end)| Opening {
                start,
                end,
                open_before: lo.is_some_and(|lo| start < lo),
                open_after: hi.is_some_and(|hi| end >= hi),
            })
            .collect()
    }

    /// The window state at `now`.
    pub fn state(&self, now: Timestamp) -> WindowState {
        let today = self.local_date(now);
        if let Some(until) = self.blackout_until(today) {
            return WindowState::Blackout { until };
        }
        // Back-to-back windows (e.g. every day 00:00-24:00) are one open stretch, joined up
        // to REACH_DAYS ahead; a stretch ends where a blackout date begins.
        let first = today.yesterday().unwrap_or(today);
        let last = today.checked_add(REACH_DAYS.days()).unwrap_or(today);
        let open = self
            .merged(first, last, true)
            .into_iter()
            .find(|(start, end)| *start <= now && now < *end);
        match open {
            Some((_, closes)) => WindowState::Open { closes },
            None => WindowState::Closed {
                opens: self.next_open(now),
            },
        }
    }

    /// The first instant after `now` at which a window opens outside any blackout (the
    /// rest of an instance that began on a blackout date opens when that date ends).
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        let today = self.local_date(now);
        (0..HORIZON_DAYS)
            .filter_map(|d| today.checked_add(d.days()).ok())
            .find_map(|d| {
                self.pieces(d)
                    .into_iter()
                    .map(|(s, _)| s)
                    .filter(|s| *s > now)
                    .min()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_days() -> Vec<Weekday> {
        use Weekday::*;
        vec![
            Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday,
        ]
    }
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

    fn opening(start: &str, end: &str) -> Opening {
        Opening {
            start: ts(start),
            end: ts(end),
            open_before: false,
            open_after: false,
        }
    }

    fn spans(openings: &[Opening]) -> Vec<(String, String)> {
        openings
            .iter()
            .map(|o| (o.start.to_string(), o.end.to_string()))
            .collect()
    }

    #[test]
    fn occurrences_in_the_partner_zone() {
        // Saturdays and Sundays 01:00-05:00 in Nairobi (UTC+3) are 22:00-02:00 UTC.
        let s = schedule("Africa/Nairobi", vec![weekend_night()], vec![]);
        let from = ts("2026-11-20T12:00:00Z");
        let until = ts("2026-12-04T12:00:00Z");
        assert_eq!(
            s.occurrences(from, until),
            vec![
                opening("2026-11-20T22:00:00Z", "2026-11-21T02:00:00Z"),
                opening("2026-11-21T22:00:00Z", "2026-11-22T02:00:00Z"),
                opening("2026-11-27T22:00:00Z", "2026-11-28T02:00:00Z"),
                opening("2026-11-28T22:00:00Z", "2026-11-29T02:00:00Z"),
            ]
        );
        assert_eq!(s.stretches(from, until), s.occurrences(from, until));
    }

    #[test]
    fn an_open_instance_keeps_its_real_start() {
        let s = schedule("Africa/Nairobi", vec![weekend_night()], vec![]);
        let now = ts("2026-11-21T00:00:00Z");
        let first = s.occurrences(now, ts("2026-11-22T00:00:00Z"))[0];
        assert_eq!(
            first,
            opening("2026-11-20T22:00:00Z", "2026-11-21T02:00:00Z")
        );
        assert_eq!(s.stretches(now, ts("2026-11-22T00:00:00Z"))[0], first);
    }

    #[test]
    fn back_to_back_instances_are_one_stretch_but_separate_occurrences() {
        let daily = Weekly {
            days: all_days(),
            start: 0,
            end: 1440,
        };
        let s = schedule("UTC", vec![daily], vec![("2026-11-24", "2026-11-24")]);
        let from = ts("2026-11-21T12:00:00Z");
        let until = ts("2026-11-23T12:00:00Z");
        assert_eq!(
            spans(&s.occurrences(from, until)),
            spans(&[
                opening("2026-11-21T00:00:00Z", "2026-11-22T00:00:00Z"),
                opening("2026-11-22T00:00:00Z", "2026-11-23T00:00:00Z"),
                opening("2026-11-23T00:00:00Z", "2026-11-24T00:00:00Z"),
            ])
        );
        let stretches = s.stretches(from, until);
        assert_eq!(stretches.len(), 1);
        assert_eq!(
            stretches[0].end,
            ts("2026-11-24T00:00:00Z"),
            "cut by the blackout"
        );
        assert!(
            stretches[0].open_before,
            "open every day before the search began"
        );
        assert!(!stretches[0].open_after);

        let always = schedule(
            "UTC",
            vec![Weekly {
                days: all_days(),
                start: 0,
                end: 1440,
            }],
            vec![],
        );
        let all = always.stretches(from, until);
        assert_eq!(all.len(), 1);
        assert!(all[0].open_before && all[0].open_after);
    }

    #[test]
    fn overlapping_windows_are_one_occurrence() {
        let s = schedule(
            "UTC",
            vec![
                weekend_night(),
                Weekly {
                    days: vec![Saturday],
                    start: 3 * 60,
                    end: 6 * 60,
                },
            ],
            vec![],
        );
        let o = s.occurrences(ts("2026-11-21T00:00:00Z"), ts("2026-11-21T12:00:00Z"));
        assert_eq!(
            o,
            vec![opening("2026-11-21T01:00:00Z", "2026-11-21T06:00:00Z")]
        );
    }

    #[test]
    fn crossing_midnight_and_end_of_day_occurrences() {
        let s = schedule(
            "UTC",
            vec![
                Weekly {
                    days: vec![Friday],
                    start: 22 * 60,
                    end: 2 * 60,
                },
                Weekly {
                    days: vec![Sunday],
                    start: 20 * 60,
                    end: 1440,
                },
            ],
            vec![],
        );
        assert_eq!(
            s.occurrences(ts("2026-11-20T00:00:00Z"), ts("2026-11-27T00:00:00Z")),
            vec![
                opening("2026-11-20T22:00:00Z", "2026-11-21T02:00:00Z"),
                opening("2026-11-22T20:00:00Z", "2026-11-23T00:00:00Z"),
            ]
        );
    }

    #[test]
    fn a_blackout_date_cuts_an_instance_crossing_midnight() {
        let friday_night = Weekly {
            days: vec![Friday],
            start: 22 * 60,
            end: 2 * 60,
        };
        let period = (ts("2026-11-16T00:00:00Z"), ts("2026-11-23T00:00:00Z"));

        // Blackout on the Saturday: the Friday part stays open and closes at midnight.
        let s = schedule(
            "UTC",
            vec![friday_night.clone()],
            vec![("2026-11-21", "2026-11-21")],
        );
        assert_eq!(
            s.occurrences(period.0, period.1),
            vec![opening("2026-11-20T22:00:00Z", "2026-11-21T00:00:00Z")]
        );
        assert_eq!(
            s.state(ts("2026-11-20T23:00:00Z")),
            WindowState::Open {
                closes: ts("2026-11-21T00:00:00Z")
            },
            "closes where the blackout date begins"
        );

        // Blackout on the Friday: the Saturday part opens when the blackout ends.
        let s = schedule(
            "UTC",
            vec![friday_night],
            vec![("2026-11-20", "2026-11-20")],
        );
        assert_eq!(
            s.occurrences(period.0, period.1),
            vec![opening("2026-11-21T00:00:00Z", "2026-11-21T02:00:00Z")]
        );
        assert_eq!(
            s.next_open(ts("2026-11-20T12:00:00Z")),
            Some(ts("2026-11-21T00:00:00Z"))
        );
        assert!(s.state(ts("2026-11-21T01:00:00Z")).is_open());
    }

    #[test]
    fn blackout_removes_its_days() {
        let s = schedule(
            "Africa/Nairobi",
            vec![weekend_night()],
            vec![("2026-11-28", "2026-11-29")],
        );
        assert_eq!(
            spans(&s.occurrences(ts("2026-11-20T12:00:00Z"), ts("2026-12-04T12:00:00Z"))),
            spans(&[
                opening("2026-11-20T22:00:00Z", "2026-11-21T02:00:00Z"),
                opening("2026-11-21T22:00:00Z", "2026-11-22T02:00:00Z"),
            ])
        );
    }

    #[test]
    fn dst_changes_shorten_and_lengthen_instances() {
        let sunday_night = Weekly {
            days: vec![Sunday],
            start: 60,
            end: 5 * 60,
        };
        let s = schedule("Europe/Berlin", vec![sunday_night], vec![]);
        // Spring forward: 01:00 CET = 00:00 UTC, 05:00 CEST = 03:00 UTC (3 h).
        assert_eq!(
            s.occurrences(ts("2026-03-28T00:00:00Z"), ts("2026-03-30T00:00:00Z")),
            vec![opening("2026-03-29T00:00:00Z", "2026-03-29T03:00:00Z")]
        );
        // Fall back: 01:00 CEST = 23:00 UTC the day before, 05:00 CET = 04:00 UTC (5 h).
        assert_eq!(
            s.occurrences(ts("2026-10-24T00:00:00Z"), ts("2026-10-26T00:00:00Z")),
            vec![opening("2026-10-24T23:00:00Z", "2026-10-25T04:00:00Z")]
        );
        // A start in the skipped hour moves forward with the clocks: 02:30 -> 03:30 CEST.
        let gap = schedule(
            "Europe/Berlin",
            vec![Weekly {
                days: vec![Sunday],
                start: 2 * 60 + 30,
                end: 4 * 60,
            }],
            vec![],
        );
        assert_eq!(
            gap.occurrences(ts("2026-03-28T00:00:00Z"), ts("2026-03-30T00:00:00Z")),
            vec![opening("2026-03-29T01:30:00Z", "2026-03-29T02:00:00Z")]
        );
    }

    /// The rule `state` implemented before the open pieces existed, as an oracle: open when
    /// the local date is no blackout and an instance of yesterday or today holds the instant.
    fn naive_open(s: &Schedule, t: Timestamp) -> bool {
        let today = t.to_zoned(s.tz.clone()).date();
        s.blackout_until(today).is_none()
            && [today.yesterday().unwrap(), today]
                .into_iter()
                .flat_map(|d| s.instances(d).collect::<Vec<_>>())
                .any(|(a, b)| a <= t && t < b)
    }

    #[test]
    fn state_next_open_occurrences_and_stretches_agree() {
        let schedules = [
            schedule(
                "Africa/Nairobi",
                vec![weekend_night()],
                vec![("2026-03-28", "2026-03-28")],
            ),
            schedule(
                "Europe/Berlin",
                vec![
                    Weekly {
                        days: vec![Sunday],
                        start: 60,
                        end: 5 * 60,
                    },
                    Weekly {
                        days: vec![Saturday, Sunday],
                        start: 2 * 60 + 30,
                        end: 3 * 60 + 30,
                    },
                    Weekly {
                        days: vec![Monday, Wednesday, Friday],
                        start: 22 * 60,
                        end: 2 * 60,
                    },
                    Weekly {
                        days: vec![Tuesday, Thursday],
                        start: 20 * 60,
                        end: 1440,
                    },
                ],
                vec![("2026-03-27", "2026-03-27"), ("2026-10-31", "2026-11-01")],
            ),
            schedule(
                "America/Santiago",
                vec![Weekly {
                    days: all_days(),
                    start: 0,
                    end: 1440,
                }],
                vec![("2026-04-08", "2026-04-08")],
            ),
        ];
        let periods = [
            ("2026-03-21T00:00:00Z", "2026-04-12T00:00:00Z"),
            ("2026-10-20T00:00:00Z", "2026-11-04T00:00:00Z"),
        ];
        for s in &schedules {
            for (from, until) in periods {
                let (from, until) = (ts(from), ts(until));
                let stretches = s.stretches(from, until);
                let occurrences = s.occurrences(from, until);
                let mut t = from;
                while t < until {
                    let open = naive_open(s, t);
                    let holding = stretches.iter().find(|o| o.start <= t && t < o.end);
                    assert_eq!(open, holding.is_some(), "{:?} at {t}", s.tz.iana_name());
                    assert_eq!(
                        open,
                        occurrences.iter().any(|o| o.start <= t && t < o.end),
                        "occurrences at {t}"
                    );
                    match s.state(t) {
                        WindowState::Open { closes } => {
                            let h = holding.expect("open");
                            // `state` joins up to REACH_DAYS after today; past that
                            // both only say "open for at least a week".
                            let week = t + jiff::SignedDuration::from_hours(7 * 24);
                            if h.end <= week {
                                assert_eq!(closes, h.end, "closes at {t}");
                            } else {
                                assert!(closes > week, "closes at {t}");
                            }
                        }
                        state if !open => {
                            let next = stretches.iter().find(|o| o.start > t).map(|o| o.start);
                            if let Some(next) = next {
                                assert_eq!(s.next_open(t), Some(next), "next open after {t}");
                                if let WindowState::Closed { opens } = state {
                                    assert_eq!(opens, Some(next), "opens after {t}");
                                }
                            }
                        }
                        other => panic!("state {other:?} but open={open} at {t}"),
                    }
                    t += 10.minutes();
                }
            }
        }
    }
}
