//! `berth windows`: the update windows coming up for each partner, read in the partner's zone
//! and in UTC, with the changes pending on this host for one partner; as text for a person
//! or as an RFC 5545 iCalendar the fleet team publishes to advertise downtime in advance.
//!
//! Text lists *stretches*: back-to-back window instances joined, blackout dates removed,
//! exactly the instants at which `berth plan` and the agent consider the window open. The
//! calendar lists *instances* (one per listed day of each window, cut by blackout dates),
//! so every event keeps a UID that does not depend on when the calendar was made.

use std::fmt::Write as _;
use std::path::PathBuf;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};

use super::host;
use crate::agenda::{self, Bucket, Pending, Period, View};
use crate::clock::SystemClock;
use crate::engine::DockerEngine;
use crate::exit::{Exit, chain};
use crate::manifest::{Doc, Partner};
use crate::plan::Overrides;
use crate::probe::Http;
use crate::reconcile::{self, Effects, Memory, Target};
use crate::registry::Sources;
use crate::window::{HORIZON_DAYS, Opening};

/// What `berth windows` was asked.
pub struct WindowsArgs {
    pub repo: PathBuf,
    pub partner: Option<String>,
    pub days: u32,
    pub ics: bool,
    pub now: Option<Timestamp>,
    pub state_dir: PathBuf,
    pub policy: Option<PathBuf>,
    pub age_identity: Option<PathBuf>,
}

/// `berth windows`.
pub fn windows(args: &WindowsArgs) -> Exit {
    let loaded = host::load(&args.repo).and_then(|r| {
        Ok((
            r,
            host::load_policy(args.policy.as_deref())?,
            host::load_keys(args.age_identity.as_deref())?,
        ))
    });
    let (repo, policy, keys) = match loaded {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let partners: Vec<&Doc<Partner>> = match &args.partner {
        Some(name) => match repo.partners.get(name) {
            Some(p) => vec![p],
            None => {
                eprintln!("berth: no partner `{name}` in the manifests");
                return Exit::CannotRun;
            }
        },
        None => repo.partners.values().collect(),
    };
    let now = args.now.unwrap_or_else(Timestamp::now);
    let until = now
        .checked_add(SignedDuration::from_hours(24 * i64::from(args.days)))
        .unwrap_or(Timestamp::MAX);
    let period = Period {
        now,
        until,
        days: args.days,
    };
    let views: Vec<View> = partners
        .iter()
        .map(|p| {
            let mut view = View::new(&repo, &p.doc, &period);
            if args.partner.is_some() {
                let target = Target {
                    repo: &repo,
                    partner: &p.doc.name,
                    revision: "worktree",
                    overrides: Overrides::default(),
                    state_dir: &args.state_dir,
                    config_dirs: vec![],
                    own_files: args
                        .policy
                        .iter()
                        .chain(&args.age_identity)
                        .cloned()
                        .collect(),
                    policy: policy.as_ref(),
                    keys: keys.as_ref(),
                    secrets_dir: None,
                    min_free: crate::plan::gate::DEFAULT_MIN_FREE,
                    engine: Default::default(),
                };
                view.pending = Some(pending(&target, now));
            }
            view
        })
        .collect();
    if args.ics {
        for v in &views {
            if let Some(Pending::Unknown(why)) = &v.pending {
                eprintln!("berth: {}: pending changes are not listed: {why}", v.name);
            }
        }
        out!("{}", ics(&views, &period));
    } else {
        out!("{}", text(&views, &period));
    }
    Exit::Ok
}

/// Plans the partner's host as `berth plan` does (nothing is changed).
fn pending(target: &Target<'_>, now: Timestamp) -> Pending {
    let mut notes = Vec::new();
    let memory = Memory::read(target.state_dir, target.partner).unwrap_or_else(|e| {
        notes.push(format!(
            "digests that failed health are not known here: {}",
            chain(&e)
        ));
        Memory::default()
    });
    host::runtime().block_on(async {
        let engine = match DockerEngine::connect().await {
            Ok(e) => e,
            Err(e) => {
                return Pending::Unknown(format!(
                    "they need this host's Docker engine, which did not answer ({})",
                    chain(&e)
                ));
            }
        };
        let fx = Effects {
            engine: &engine,
            sources: &Sources::new(Some(&engine)),
            probe: &Http::default(),
            clock: &SystemClock::starting_at(now),
        };
        match reconcile::plan(&fx, target, memory).await {
            Ok(plan) => agenda::classify(&plan, notes),
            Err(e) => Pending::Unknown(chain(&e)),
        }
    })
}

// ---------------------------------------------------------------------------------------
// Text

fn text(views: &[View], period: &Period) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "update windows for the {} day(s) from {} (local time, then UTC)",
        period.days,
        utc(period.now)
    );
    for v in views {
        out.push('\n');
        partner_text(&mut out, v, period);
    }
    out
}

fn partner_text(out: &mut String, v: &View, period: &Period) {
    let _ = writeln!(out, "{} ({})", v.name, v.tz_name);
    if !v.scripts.is_empty() {
        let _ = writeln!(out, "  scripts: {}", v.scripts.join(", "));
    }
    let tz = &v.schedule.tz;
    // Stretches and blackouts in the order they come.
    enum Row<'a> {
        Window(&'a Opening),
        Blackout(Date, Date),
    }
    let mut rows: Vec<(Timestamp, Row)> = v
        .stretches
        .iter()
        .map(|s| (s.start, Row::Window(s)))
        .chain(v.blackouts.iter().map(|(from, to)| {
            let at = from
                .to_zoned(tz.clone())
                .map_or(period.now, |z| z.timestamp());
            (at, Row::Blackout(*from, *to))
        }))
        .collect();
    rows.sort_by_key(|(at, _)| *at);
    let (now_items, next_items) = match &v.pending {
        Some(Pending::Known { changes, .. }) => (
            changes
                .iter()
                .filter(|(b, _)| *b == Bucket::Now)
                .map(|(_, c)| c.as_str())
                .collect(),
            changes
                .iter()
                .filter(|(b, _)| *b == Bucket::Next)
                .map(|(_, c)| c.as_str())
                .collect(),
        ),
        _ => (Vec::new(), Vec::new()),
    };
    let current = v.current(period.now).map(|s| s.start);
    let next = v.next(period.now).map(|s| s.start);
    let locals: Vec<String> = v.stretches.iter().map(|s| local_span(tz, s)).collect();
    let width = locals.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let mut index = 0;
    for (_, row) in &rows {
        match row {
            Row::Window(s) => {
                let tag = if Some(s.start) == current {
                    "open now"
                } else if Some(s.start) == next {
                    "next"
                } else {
                    ""
                };
                let local = &locals[index];
                index += 1;
                let _ = writeln!(
                    out,
                    "  {tag:<10}{local:<width$}   {}{}",
                    utc_span(s),
                    length(s)
                );
                let items: &[&str] = if Some(s.start) == current {
                    &now_items
                } else if Some(s.start) == next {
                    &next_items
                } else {
                    &[]
                };
                for item in items {
                    let _ = writeln!(out, "            pending: {item}");
                }
            }
            Row::Blackout(from, to) => {
                let days = if from == to {
                    day(*from)
                } else {
                    format!("{} -> {}", day(*from), day(*to))
                };
                let _ = writeln!(out, "  blackout {days}: no changes");
            }
        }
    }
    if !v.has_windows {
        let _ = writeln!(
            out,
            "  never updated automatically: no update windows (changes wait for `berth apply --ignore-window`)"
        );
    } else if v.stretches.is_empty() {
        let later = match v.opens_later {
            Some(t) => format!(
                "next opens {} ({})",
                zoned(tz, t).strftime("%a %Y-%m-%d %H:%M %Z"),
                utc(t)
            ),
            None => format!("none opens within {HORIZON_DAYS} days"),
        };
        let _ = writeln!(
            out,
            "  no window in the next {} day(s); {later}",
            period.days
        );
    }
    match &v.pending {
        None => {}
        Some(Pending::Unknown(why)) => {
            let _ = writeln!(out, "  pending changes: not listed: {why}");
        }
        Some(Pending::Known {
            changes,
            held,
            notes,
        }) => {
            if changes.is_empty() && held.is_empty() {
                let _ = writeln!(out, "  pending changes: none, the host is in sync");
            }
            let stranded: Vec<&str> = changes
                .iter()
                .filter(|(b, _)| v.anchor(*b, period.now).is_none())
                .map(|(_, c)| c.as_str())
                .collect();
            if !stranded.is_empty() {
                let _ = writeln!(out, "  pending, waiting for a window after this period:");
                for item in stranded {
                    let _ = writeln!(out, "    {item}");
                }
            }
            for item in held {
                let _ = writeln!(out, "  held: {item}");
            }
            for note in notes {
                let _ = writeln!(out, "  note: {note}");
            }
        }
    }
}

fn zoned(tz: &TimeZone, t: Timestamp) -> Zoned {
    t.to_zoned(tz.clone())
}

fn day(d: Date) -> String {
    d.strftime("%a %Y-%m-%d").to_string()
}

/// `Sat 2026-11-21 01:00 -> 05:00 EAT`, `Sun 2026-03-29 01:00 CET -> 05:00 CEST`,
/// `Fri 2026-11-20 22:00 -> Sat 2026-11-21 02:00 UTC`, `Sun 2026-11-22 20:00 -> 24:00 UTC`.
fn local_span(tz: &TimeZone, s: &Opening) -> String {
    let (start, end) = (zoned(tz, s.start), zoned(tz, s.end));
    let (sa, ea) = (
        start.strftime("%Z").to_string(),
        end.strftime("%Z").to_string(),
    );
    let mut from = start.strftime("%a %Y-%m-%d %H:%M").to_string();
    if s.open_before {
        from = format!("{from} or earlier");
    }
    let midnight = end.time() == jiff::civil::Time::midnight();
    let to = if end.date() == start.date() {
        end.strftime("%H:%M").to_string()
    } else if midnight && start.date().tomorrow().ok() == Some(end.date()) && !s.open_after {
        "24:00".to_owned()
    } else {
        end.strftime("%a %Y-%m-%d %H:%M").to_string()
    };
    let to = if s.open_after {
        format!("{to} or later")
    } else {
        to
    };
    if sa == ea {
        format!("{from} -> {to} {sa}")
    } else {
        format!("{from} {sa} -> {to} {ea}")
    }
}

/// `2026-11-20 22:00 UTC`.
fn utc(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

/// `2026-11-20 22:00 -> 2026-11-21 02:00 UTC`.
fn utc_span(s: &Opening) -> String {
    let or = |flag: bool, word: &str| {
        if flag {
            format!(" or {word}")
        } else {
            String::new()
        }
    };
    format!(
        "{}{} -> {}{} UTC",
        s.start.strftime("%Y-%m-%d %H:%M"),
        or(s.open_before, "earlier"),
        s.end.strftime("%Y-%m-%d %H:%M"),
        or(s.open_after, "later"),
    )
}

/// `  (4h)`, `  (2d 3h30m)`; nothing for a stretch whose ends are not known.
fn length(s: &Opening) -> String {
    if s.open_before || s.open_after {
        return String::new();
    }
    let minutes = s.end.duration_since(s.start).as_secs() / 60;
    let (d, h, m) = (minutes / 1440, minutes % 1440 / 60, minutes % 60);
    let mut out = String::from("  (");
    if d > 0 {
        let _ = write!(out, "{d}d ");
    }
    let _ = write!(out, "{h}h");
    if m > 0 {
        let _ = write!(out, "{m:02}m");
    }
    out.push(')');
    out
}

// ---------------------------------------------------------------------------------------
// iCalendar (RFC 5545)

/// `20261120T220000Z`.
fn ics_time(t: Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// TEXT escaping (RFC 5545 §3.3.11).
fn ics_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// One content line, folded at 75 octets without splitting a character (§3.1), with CRLF.
fn ics_line(out: &mut String, line: &str) {
    let mut width = 0;
    for c in line.chars() {
        let n = c.len_utf8();
        if width + n > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += n;
    }
    out.push_str("\r\n");
}

fn ics(views: &[View], period: &Period) -> String {
    let mut out = String::new();
    let mut line = |s: &str| ics_line(&mut out, s);
    line("BEGIN:VCALENDAR");
    line("VERSION:2.0");
    line(&format!(
        "PRODID:-//berth//berth windows {}//EN",
        env!("CARGO_PKG_VERSION")
    ));
    line("CALSCALE:GREGORIAN");
    line("METHOD:PUBLISH");
    line("X-WR-CALNAME:berth update windows");
    let stamp = ics_time(period.now);
    for v in views {
        let now_at = v.anchor(Bucket::Now, period.now);
        let next_at = v.anchor(Bucket::Next, period.now);
        // The first event that holds one of those instants carries what is held too.
        let mut first_anchored = true;
        for o in &v.occurrences {
            let holds = |at: Option<Timestamp>| at.is_some_and(|t| o.start <= t && t < o.end);
            let mut description = format!(
                "berth may update the containers of partner {} in this window: {} ({}).",
                v.name,
                local_span(&v.schedule.tz, o),
                v.tz_name
            );
            if v.scripts.is_empty() {
                description.push_str("\nScripts: none.");
            } else {
                let _ = write!(description, "\nScripts: {}.", v.scripts.join(", "));
            }
            if let Some(Pending::Known { changes, held, .. }) = &v.pending
                && (holds(now_at) || holds(next_at))
            {
                let mut items: Vec<&str> = Vec::new();
                if holds(now_at) {
                    items.extend(bucket(changes, Bucket::Now));
                }
                if holds(next_at) {
                    items.extend(bucket(changes, Bucket::Next));
                }
                let held: &[String] = if first_anchored { held } else { &[] };
                if items.is_empty() && held.is_empty() && first_anchored && changes.is_empty() {
                    description.push_str("\nPending changes: none, the host is in sync.");
                }
                if !items.is_empty() {
                    description.push_str("\nPending changes:");
                    for item in items {
                        let _ = write!(description, "\n- {item}");
                    }
                }
                if !held.is_empty() {
                    description.push_str("\nHeld (no window applies these on its own):");
                    for item in held {
                        let _ = write!(description, "\n- {item}");
                    }
                }
                first_anchored = false;
            }
            line("BEGIN:VEVENT");
            line(&format!("UID:{}-{}@berth", v.name, ics_time(o.start)));
            line(&format!("DTSTAMP:{stamp}"));
            line(&format!("DTSTART:{}", ics_time(o.start)));
            line(&format!("DTEND:{}", ics_time(o.end)));
            line(&format!(
                "SUMMARY:{}",
                ics_escape(&format!("berth update window: {}", v.name))
            ));
            line(&format!("DESCRIPTION:{}", ics_escape(&description)));
            line("TRANSP:TRANSPARENT");
            line("END:VEVENT");
        }
    }
    line("END:VCALENDAR");
    out
}

fn bucket(changes: &[(Bucket, String)], which: Bucket) -> Vec<&str> {
    changes
        .iter()
        .filter(|(b, _)| *b == which)
        .map(|(_, c)| c.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_at_75_octets_without_splitting_characters() {
        let mut out = String::new();
        let long = format!("DESCRIPTION:{}", "é".repeat(60));
        ics_line(&mut out, &long);
        for l in out.split_terminator("\r\n") {
            assert!(l.len() <= 75, "{} octets: {l}", l.len());
        }
        let unfolded = out.trim_end_matches("\r\n").replace("\r\n ", "");
        assert_eq!(unfolded, long);
    }

    #[test]
    fn escapes_text() {
        assert_eq!(ics_escape("a,b;c\\d\ne"), "a\\,b\\;c\\\\d\\ne");
    }
}
