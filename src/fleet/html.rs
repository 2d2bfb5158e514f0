//! The fleet page: one self-contained HTML file (inline CSS, no script, no fetched
//! resource; its Content-Security-Policy blocks anything else) with the partners' table and
//! a timeline of each partner's windows and pending changes over the next [`super::DAYS`]
//! days, to publish from CI.

use std::fmt::Write as _;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::render::utc;
use super::{Fleet, Row, Signature, status::short};

/// Colours the page and its tests agree on.
pub const HEADER: &str = "#1f3a5f";
pub const WINDOW: &str = "#2e8b57";
pub const PENDING: &str = "#e67e22";
pub const NOW: &str = "#d00000";

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 8px; }
p.meta { color: #555; margin: 0 0 16px; }
table.fleet { border-collapse: collapse; width: 100%; }
table.fleet th { background: HEADER; color: #fff; text-align: left; padding: 8px; }
table.fleet td { border-bottom: 1px solid #ddd; padding: 6px 8px; vertical-align: top; overflow-wrap: anywhere; }
td.when { white-space: nowrap; }
small { color: #666; }
code { font: 12px ui-monospace, monospace; }
ul { margin: 0; padding-left: 16px; }
.mark { display: inline-block; white-space: nowrap; overflow-wrap: normal; padding: 1px 6px; border-radius: 3px; margin: 0 2px 2px 0; font-size: 12px; color: #fff; }
.m-ok { background: #2e7d32; } .m-failed, .m-held, .m-unreadable, .m-unverified, .m-bad { background: #b71c1c; }
.m-behind, .m-stale, .m-missing { background: #8d6e00; } .m-pending { background: #555; }
.timeline { position: relative; margin-left: 180px; }
.days { display: flex; border-bottom: 1px solid #999; }
.days div { flex: 1; font-size: 11px; color: #555; border-left: 1px solid #ddd; padding-left: 2px; }
.lane { position: relative; height: 28px; border-bottom: 1px solid #eee; }
.lane .name { position: absolute; left: -180px; width: 172px; top: 5px; overflow: hidden; white-space: nowrap; text-overflow: ellipsis; }
.bar { position: absolute; top: 6px; height: 16px; background: WINDOW; border-radius: 2px; min-width: 3px; }
.pend { position: absolute; top: 2px; width: 8px; height: 24px; margin-left: -4px; background: PENDING; }
.now { position: absolute; top: 0; bottom: 0; width: 2px; background: NOW; }
.legend span { display: inline-block; width: 12px; height: 12px; vertical-align: middle; margin: 0 4px 0 12px; }
"#;

/// The page.
pub fn page(fleet: &Fleet) -> String {
    let mut out = String::new();
    let style = STYLE
        .replace("HEADER", HEADER)
        .replace("WINDOW", WINDOW)
        .replace("PENDING", PENDING)
        .replace("NOW", NOW);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>berth fleet</title>\n<style>{style}</style>\n</head>\n<body>\n"
    );
    let _ = writeln!(out, "<h1>berth fleet</h1>");
    let _ = writeln!(
        out,
        "<p class=\"meta\">At {}. Status repo <code>{}</code> ({} at <code>{}</code>); manifests at {}.</p>",
        utc(fleet.now),
        esc(&fleet.status.location),
        esc(&fleet.status.branch),
        short(&fleet.status.commit),
        fleet
            .revision
            .as_deref()
            .map_or("a plain directory".to_owned(), |r| format!(
                "<code>{}</code>",
                short(r)
            ))
    );
    timeline(&mut out, fleet);
    let _ = writeln!(out, "<h2>Partners</h2>");
    table(&mut out, fleet);
    let rollout = super::render::rollout_lines(&fleet.rollout);
    if !rollout.is_empty() {
        let _ = writeln!(out, "<h2>Rollout</h2>\n<ul>");
        for l in rollout {
            let _ = writeln!(out, "<li>{}</li>", esc(&l));
        }
        let _ = writeln!(out, "</ul>");
    }
    if !fleet.strays.is_empty() {
        let _ = writeln!(
            out,
            "<p>Records of partners the manifests do not have: {}.</p>",
            esc(&fleet.strays.join(", "))
        );
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn table(out: &mut String, fleet: &Fleet) {
    out.push_str(
        "<table class=\"fleet\">\n<thead><tr><th>Partner</th><th>State</th><th>Revision</th>\
         <th>Scripts (should run / desired / running)</th><th>Last report</th><th>Signature</th>\
         <th>Next window</th><th>Pending or held</th></tr></thead>\n<tbody>\n",
    );
    for row in &fleet.partners {
        let _ = write!(out, "<tr><td>{}</td><td>", esc(&row.partner));
        if row.verdict.marks.is_empty() {
            out.push_str("<span class=\"mark m-ok\">ok</span>");
        }
        for m in &row.verdict.marks {
            let _ = write!(out, "<span class=\"mark m-{0}\">{0}</span>", m.as_str());
        }
        out.push_str("</td><td>");
        match &row.record {
            Some(r) => {
                let _ = write!(
                    out,
                    "<code>{}</code>",
                    r.revision.as_deref().map_or("none", short)
                );
            }
            None => out.push_str(&esc(row.unreadable.as_deref().unwrap_or("no record"))),
        }
        out.push_str("</td><td><ul>");
        for line in super::render::script_lines(row) {
            let _ = write!(out, "<li>{}</li>", esc(&line));
        }
        out.push_str("</ul></td><td class=\"when\">");
        if let Some(r) = &row.record {
            let _ = write!(
                out,
                "{}<br><small>{}</small>",
                esc(&super::render::age(row.verdict.age_secs.unwrap_or(0))),
                utc(r.at)
            );
        }
        out.push_str("</td><td>");
        let class = match row.signature {
            Signature::Signed { .. } => "m-ok",
            Signature::Unsigned | Signature::Bad { .. } => "m-bad",
            Signature::NoKey | Signature::NoRecord => "m-pending",
        };
        let _ = write!(
            out,
            "<span class=\"mark {class}\">{}</span>",
            row.signature.as_str()
        );
        if let Signature::Bad { detail, .. } = &row.signature {
            let _ = write!(out, "<br>{}", esc(detail));
        }
        let _ = write!(
            out,
            "</td><td class=\"when\">{}</td><td><ul>",
            next_window(row, fleet.now)
        );
        for line in super::render::pending_lines(row) {
            let _ = write!(out, "<li>{}</li>", esc(&line));
        }
        out.push_str("</ul></td></tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

fn timeline(out: &mut String, fleet: &Fleet) {
    let start = fleet
        .now
        .to_zoned(TimeZone::UTC)
        .start_of_day()
        .map_or(fleet.now, |z| z.timestamp());
    let days = i64::from(super::DAYS);
    let end = start
        .checked_add(SignedDuration::from_hours(24 * days))
        .unwrap_or(Timestamp::MAX);
    let pos = |t: Timestamp| -> f64 {
        let total = end.duration_since(start).as_secs_f64();
        (t.duration_since(start).as_secs_f64() / total * 100.0).clamp(0.0, 100.0)
    };
    let _ = writeln!(
        out,
        "<h2>Update windows, next {days} days (UTC)</h2>\n<p class=\"legend\">\
         <span style=\"background:{WINDOW}\"></span>window\
         <span style=\"background:{PENDING}\"></span>pending changes apply\
         <span style=\"background:{NOW}\"></span>now</p>\n<div class=\"timeline\">\n<div class=\"days\">"
    );
    for d in 0..days {
        let day = start
            .checked_add(SignedDuration::from_hours(24 * d))
            .unwrap_or(start)
            .to_zoned(TimeZone::UTC);
        let _ = write!(out, "<div>{}</div>", day.strftime("%a %d"));
    }
    out.push_str("</div>\n");
    for row in &fleet.partners {
        let _ = write!(
            out,
            "<div class=\"lane\"><span class=\"name\">{}</span>",
            esc(&row.partner)
        );
        for s in &row.windows.spans {
            let (left, right) = (pos(s.start), pos(s.end));
            let _ = write!(
                out,
                "<div class=\"bar\" style=\"left:{left:.3}%;width:{:.3}%\" title=\"{} – {}\"></div>",
                right - left,
                utc(s.start),
                utc(s.end)
            );
        }
        if !row.verdict.pending.is_empty()
            && let Some(at) = row.windows.applies_at.filter(|t| *t < end)
        {
            let _ = write!(
                out,
                "<div class=\"pend\" style=\"left:{:.3}%\" title=\"{}\"></div>",
                pos(at),
                esc(&row.verdict.pending.join("; "))
            );
        }
        let _ = writeln!(
            out,
            "<div class=\"now\" style=\"left:{:.3}%\"></div></div>",
            pos(fleet.now)
        );
    }
    out.push_str("</div>\n");
}

/// The next window in two lines: when, then how soon.
fn next_window(row: &Row, now: Timestamp) -> String {
    match (row.windows.open_until, row.windows.next_opens) {
        (Some(end), _) => format!("open until<br>{}", utc(end)),
        (None, Some(at)) => format!(
            "{}<br><small>in {}</small>",
            utc(at),
            super::render::duration(at.duration_since(now).as_secs())
        ),
        (None, None) => "none".to_owned(),
    }
}

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
