//! The phrases every format of `berth fleet` shares, so the text table, the Markdown table
//! and the page say the same thing in the same words.

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::Row;

/// `5m`, `3h 20m`, `2d 4h`: a duration as a person reads it at a glance.
pub fn duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h) {
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `3h 20m ago`.
pub fn age(secs: i64) -> String {
    format!("{} ago", duration(secs))
}

/// `2026-12-05 01:00 UTC`.
pub fn utc(t: Timestamp) -> String {
    t.to_zoned(TimeZone::UTC)
        .strftime("%Y-%m-%d %H:%M UTC")
        .to_string()
}

/// One line per opted-in script (and per record entry of a script no longer opted in):
/// `case-counts ~1.4 (locked 1.4.2): desired 1.4.2, running 1.4.1, deferred(window)`.
pub fn script_lines(row: &Row) -> Vec<String> {
    let mut lines = Vec::new();
    let entries = row.record.as_ref().map_or(&[][..], |r| &r.scripts[..]);
    for want in &row.expected.scripts {
        let mut head = format!("{} {}", want.script, want.versions);
        if let Some(l) = &want.locked {
            head.push_str(&format!(" (locked {l})"));
        }
        let mine: Vec<_> = entries.iter().filter(|e| e.script == want.script).collect();
        if mine.is_empty() {
            lines.push(match &row.record {
                Some(_) => format!("{head}: not reported"),
                None => head.clone(),
            });
        }
        for e in mine {
            lines.push(format!("{}: {}", with_component(&head, e), entry(e)));
        }
    }
    for e in entries
        .iter()
        .filter(|e| !row.expected.scripts.iter().any(|w| w.script == e.script))
    {
        lines.push(format!(
            "{} (not opted in): {}",
            with_component(&e.script, e),
            entry(e)
        ));
    }
    lines
}

fn with_component(head: &str, e: &crate::report::ScriptRecord) -> String {
    match &e.component {
        Some(c) => format!("{head} [{c}]"),
        None => head.to_owned(),
    }
}

fn entry(e: &crate::report::ScriptRecord) -> String {
    let v = |p: &Option<crate::report::Pin>| {
        p.as_ref().map_or("none", |p| p.version.as_str()).to_owned()
    };
    format!(
        "desired {}, running {}, {}",
        v(&e.desired),
        v(&e.running),
        e.state
    )
}

/// `open until 2026-12-05 05:00 UTC`, `2026-12-05 01:00 UTC (in 1d 3h)`, `none`.
pub fn next_window(row: &Row, now: Timestamp) -> String {
    match (row.windows.open_until, row.windows.next_opens) {
        (Some(end), _) => format!("open until {}", utc(end)),
        (None, Some(at)) => format!(
            "{} (in {})",
            utc(at),
            duration(at.duration_since(now).as_secs())
        ),
        (None, None) => "none".to_owned(),
    }
}

/// What waits, what is held and what failed, then why the host is behind.
pub fn pending_lines(row: &Row) -> Vec<String> {
    let v = &row.verdict;
    let mut lines: Vec<String> = Vec::new();
    lines.extend(v.failed.iter().map(|l| format!("failed: {l}")));
    lines.extend(v.held.iter().map(|l| format!("held: {l}")));
    lines.extend(v.pending.iter().map(|l| format!("pending: {l}")));
    lines.extend(v.behind.iter().map(|l| format!("behind: {l}")));
    if let Some(why) = &row.unreadable {
        lines.push(format!("unreadable: {why}"));
    }
    lines
}

/// One line per digest being rolled out: `svc 1.1.0 (31029de73e22): canary reached
/// 2026-12-04 01:00 UTC; rest from 2026-12-06 01:00 UTC at the earliest`.
pub fn rollout_lines(rollouts: &[super::Rollout]) -> Vec<String> {
    rollouts
        .iter()
        .map(|r| {
            let name = match &r.component {
                Some(c) => format!("{}/{c}", r.script),
                None => r.script.clone(),
            };
            let waves: Vec<String> = r
                .waves
                .iter()
                .map(|w| match (w.reached, w.at, &w.halted) {
                    (true, Some(at), _) => format!("{} reached {}", w.wave, utc(at)),
                    (true, None, _) => format!("{} reached", w.wave),
                    (false, _, Some(by)) => {
                        format!("{} halted (rolled back or held on {by})", w.wave)
                    }
                    (false, Some(at), None) => {
                        format!("{} from {} at the earliest", w.wave, utc(at))
                    }
                    (false, None, None) => format!("{} not foreseeable (no window ahead)", w.wave),
                })
                .collect();
            format!(
                "{name} {} ({}): {}",
                r.version,
                crate::image::short(&r.digest),
                waves.join("; ")
            )
        })
        .collect()
}
