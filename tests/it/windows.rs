//! `berth windows` with the real binary: upcoming windows in the partner's zone and in UTC
//! at fixed instants (crossing midnight, `24:00`, blackouts, DST), the iCalendar export
//! checked by structure, exit codes, and the changes pending on a host with an engine.
//! Also checks that `examples/agent/agent.yaml` is a valid agent config.

use std::collections::BTreeSet;
use std::path::Path;

use crate::common::{self, Berth, Host, Run, Setup, assert_stable_snapshot};

/// A throwaway manifest repo.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("partners")).unwrap();
        std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
        let repo = Repo { dir };
        repo.file(
            "scripts/case-counts.yaml",
            "apiVersion: berth/v1\nkind: Script\nname: case-counts\nimage:\n  source: local\n  repository: berth-test/none\nversions: \"^1.2.0\"\n",
        );
        repo
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, rel: &str, body: &str) {
        std::fs::write(self.path().join(rel), body).unwrap();
    }

    /// A partner opted into `case-counts`; `rest` is YAML after `name:` (timezone, windows…).
    fn partner(&self, name: &str, rest: &str) {
        self.file(
            &format!("partners/{name}.yaml"),
            &format!(
                "apiVersion: berth/v1\nkind: Partner\nname: {name}\n{rest}scripts:\n  - script: case-counts\n    versions: \"~1.4\"\n"
            ),
        );
    }

    /// `berth windows REPO args…` with no engine reachable, so nothing depends on the host.
    fn windows(&self, args: &[&str]) -> Run {
        Berth::new("windows")
            .arg(self.path())
            .args(args)
            .env("DOCKER_HOST", "unix:///nonexistent/berth-test-docker.sock")
            .run()
    }

    fn stdout(&self, args: &[&str]) -> String {
        let out = self.windows(args);
        out.assert_exit(0);
        out.stdout().to_owned()
    }
}

const NAIROBI: &str = "timezone: Africa/Nairobi\nwindows:\n  - days: [sat, sun]\n    start: \"01:00\"\n    end: \"05:00\"\n";

// ---------------------------------------------------------------------------------------
// A structural iCalendar reader, strict about what RFC 5545 requires.

#[derive(Debug, Clone)]
struct Event {
    props: Vec<(String, String)>,
}

impl Event {
    fn get(&self, name: &str) -> &str {
        let found: Vec<&str> = self
            .props
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(found.len(), 1, "exactly one {name} in {self:?}");
        found[0]
    }

    fn start(&self) -> String {
        self.get("DTSTART").to_owned()
    }

    fn end(&self) -> String {
        self.get("DTEND").to_owned()
    }

    /// DESCRIPTION with its TEXT escapes undone.
    fn description(&self) -> String {
        let mut out = String::new();
        let mut chars = self.get("DESCRIPTION").chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n' | 'N') => out.push('\n'),
                    Some(c @ ('\\' | ';' | ',')) => out.push(c),
                    other => panic!("invalid escape \\{other:?}"),
                }
            } else {
                assert!(c != ';' && c != ',', "unescaped {c:?} in DESCRIPTION");
                out.push(c);
            }
        }
        out
    }
}

/// `YYYYMMDDTHHMMSSZ`, checked, as a comparable string.
fn utc_time(v: &str) -> String {
    let b = v.as_bytes();
    assert!(
        b.len() == 16
            && b[8] == b'T'
            && b[15] == b'Z'
            && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit),
        "not a UTC date-time: {v}"
    );
    v.to_owned()
}

/// Parses and checks a calendar: CRLF everywhere, lines at most 75 octets, folding by a
/// leading space, BEGIN/END nesting, the calendar properties, and every VEVENT's required
/// properties with DTSTART before DTEND and unique UIDs.
fn parse_ics(raw: &str) -> Vec<Event> {
    assert!(raw.ends_with("\r\n"), "ends with CRLF");
    let body = &raw[..raw.len() - 2];
    let physical: Vec<&str> = body.split("\r\n").collect();
    for l in &physical {
        assert!(
            !l.contains('\n') && !l.contains('\r'),
            "bare LF or CR in {l:?}"
        );
        assert!(l.len() <= 75, "{} octets: {l:?}", l.len());
    }
    let mut lines: Vec<String> = Vec::new();
    for l in physical {
        if let Some(rest) = l.strip_prefix(' ').or_else(|| l.strip_prefix('\t')) {
            lines
                .last_mut()
                .expect("no fold on the first line")
                .push_str(rest);
        } else {
            lines.push(l.to_owned());
        }
    }
    let mut stack: Vec<String> = Vec::new();
    let mut calendar: Vec<(String, String)> = Vec::new();
    let mut events = Vec::new();
    let mut current: Option<Event> = None;
    for line in &lines {
        let (name, value) = line.split_once(':').expect("NAME:value");
        assert!(
            !name.is_empty()
                && name
                    .split(';')
                    .next()
                    .unwrap()
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-'),
            "property name {name:?}"
        );
        match name {
            "BEGIN" => {
                if value == "VEVENT" {
                    assert_eq!(stack, ["VCALENDAR"], "VEVENT inside VCALENDAR");
                    current = Some(Event { props: Vec::new() });
                } else {
                    assert!(stack.is_empty(), "one VCALENDAR");
                }
                stack.push(value.to_owned());
            }
            "END" => {
                assert_eq!(stack.pop().as_deref(), Some(value), "END matches BEGIN");
                if value == "VEVENT" {
                    events.push(current.take().unwrap());
                }
            }
            _ => match &mut current {
                Some(e) => e.props.push((name.to_owned(), value.to_owned())),
                None => calendar.push((name.to_owned(), value.to_owned())),
            },
        }
    }
    assert!(stack.is_empty(), "unclosed {stack:?}");
    assert_eq!(lines.first().map(String::as_str), Some("BEGIN:VCALENDAR"));
    assert_eq!(lines.last().map(String::as_str), Some("END:VCALENDAR"));
    let cal = |k: &str| {
        calendar
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(cal("VERSION"), Some("2.0"));
    assert_eq!(cal("CALSCALE"), Some("GREGORIAN"));
    assert!(cal("PRODID").is_some_and(|p| !p.is_empty()));
    let mut uids = BTreeSet::new();
    for e in &events {
        assert!(
            uids.insert(e.get("UID").to_owned()),
            "UID {} twice",
            e.get("UID")
        );
        utc_time(e.get("DTSTAMP"));
        assert!(
            utc_time(e.get("DTSTART")) < utc_time(e.get("DTEND")),
            "{e:?}"
        );
        assert!(e.get("SUMMARY").starts_with("berth update window: "));
        e.description();
    }
    events
}

fn ics(repo: &Repo, args: &[&str]) -> Vec<Event> {
    let mut all = vec!["--ics"];
    all.extend_from_slice(args);
    parse_ics(&repo.stdout(&all))
}

fn spans(events: &[Event]) -> Vec<(String, String)> {
    events.iter().map(|e| (e.start(), e.end())).collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------

#[test]
fn nairobi_weekend_nights_are_listed_in_local_time_and_utc() {
    let repo = Repo::new();
    repo.partner("nairobi-clinic", NAIROBI);
    let now = ["--now", "2026-11-20T12:00:00Z"];
    // Nairobi is UTC+3 all year: Sat/Sun 01:00-05:00 are Fri/Sat 22:00-02:00 UTC.
    let raw = repo.stdout(&["--ics", now[0], now[1]]);
    let events = parse_ics(&raw);
    assert_eq!(
        spans(&events),
        pairs(&[
            ("20261120T220000Z", "20261121T020000Z"),
            ("20261121T220000Z", "20261122T020000Z"),
            ("20261127T220000Z", "20261128T020000Z"),
            ("20261128T220000Z", "20261129T020000Z"),
        ])
    );
    assert_eq!(
        events[0].get("UID"),
        "nairobi-clinic-20261120T220000Z@berth"
    );
    assert_eq!(
        events[0].get("SUMMARY"),
        "berth update window: nairobi-clinic"
    );
    assert!(events[0].description().contains("case-counts ~1.4"));
    // parse_ics checked the CRLF line ends; the snapshot file keeps plain newlines.
    assert_stable_snapshot!("windows_ics", raw.replace("\r\n", "\n"));

    let out = repo.stdout(&now);
    assert!(out.contains("nairobi-clinic (Africa/Nairobi)"), "{out}");
    let first = out
        .lines()
        .find(|l| l.contains("Sat 2026-11-21 01:00 -> 05:00 EAT"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        first.contains("2026-11-20 22:00 -> 2026-11-21 02:00 UTC"),
        "{first}"
    );
    assert!(first.trim_start().starts_with("next"), "{first}");
    assert!(first.contains("(4h)"), "{first}");
    assert_eq!(out.matches(" EAT ").count(), 4, "{out}");
    assert_stable_snapshot!("windows_text", out);

    // --days bounds the listing.
    assert_eq!(ics(&repo, &[now[0], now[1], "--days", "2"]).len(), 2);

    // Inside a window: it is listed as open now, with its real start.
    let inside = repo.stdout(&["--now", "2026-11-21T00:30:00Z", "--days", "1"]);
    let line = inside
        .lines()
        .find(|l| l.contains("open now"))
        .unwrap_or_else(|| panic!("{inside}"));
    assert!(line.contains("Sat 2026-11-21 01:00 -> 05:00 EAT"), "{line}");
    assert_stable_snapshot!("windows_text_open_now", inside);
}

#[test]
fn a_window_crossing_midnight_belongs_to_its_start_day() {
    let repo = Repo::new();
    // India is UTC+5:30: Friday 22:00 to Saturday 02:00 is 16:30-20:30 UTC on Friday.
    repo.partner(
        "pune-lab",
        "timezone: Asia/Kolkata\nwindows:\n  - days: [fri]\n    start: \"22:00\"\n    end: \"02:00\"\n",
    );
    let now = ["--now", "2026-11-16T00:00:00Z", "--days", "7"];
    assert_eq!(
        spans(&ics(&repo, &now)),
        pairs(&[("20261120T163000Z", "20261120T203000Z")])
    );
    let out = repo.stdout(&now);
    assert!(
        out.contains("Fri 2026-11-20 22:00 -> Sat 2026-11-21 02:00 IST"),
        "{out}"
    );
    assert!(
        out.contains("2026-11-20 16:30 -> 2026-11-20 20:30 UTC"),
        "{out}"
    );
}

#[test]
fn end_of_day_is_written_24_00() {
    let repo = Repo::new();
    // New York is UTC-5 in November: Sunday 20:00-24:00 is Monday 01:00-05:00 UTC.
    repo.partner(
        "nyc-lab",
        "timezone: America/New_York\nwindows:\n  - days: [sun]\n    start: \"20:00\"\n    end: \"24:00\"\n",
    );
    let now = ["--now", "2026-11-16T12:00:00Z", "--days", "7"];
    assert_eq!(
        spans(&ics(&repo, &now)),
        pairs(&[("20261123T010000Z", "20261123T050000Z")])
    );
    let out = repo.stdout(&now);
    assert!(out.contains("Sun 2026-11-22 20:00 -> 24:00 EST"), "{out}");
    assert!(
        out.contains("2026-11-23 01:00 -> 2026-11-23 05:00 UTC"),
        "{out}"
    );
}

#[test]
fn a_blackout_removes_its_days() {
    let repo = Repo::new();
    repo.partner(
        "nairobi-clinic",
        &format!("{NAIROBI}blackouts:\n  - {{ from: 2026-11-28, to: 2026-11-29 }}\n"),
    );
    let now = ["--now", "2026-11-20T12:00:00Z"];
    assert_eq!(
        spans(&ics(&repo, &now)),
        pairs(&[
            ("20261120T220000Z", "20261121T020000Z"),
            ("20261121T220000Z", "20261122T020000Z"),
        ])
    );
    let out = repo.stdout(&now);
    assert!(
        out.contains("blackout Sat 2026-11-28 -> Sun 2026-11-29: no changes"),
        "{out}"
    );
    assert!(!out.contains("2026-11-28 01:00"), "{out}");

    // A blackout on the day a window crossing midnight ends keeps the part before it.
    let repo = Repo::new();
    repo.partner(
        "utc-lab",
        "windows:\n  - days: [fri]\n    start: \"22:00\"\n    end: \"02:00\"\nblackouts:\n  - { from: 2026-11-21, to: 2026-11-21 }\n",
    );
    assert_eq!(
        spans(&ics(
            &repo,
            &["--now", "2026-11-16T00:00:00Z", "--days", "7"]
        )),
        pairs(&[("20261120T220000Z", "20261121T000000Z")])
    );
}

#[test]
fn dst_changes_keep_wall_clock_times() {
    let repo = Repo::new();
    // Europe/Berlin: CET (UTC+1) to CEST (UTC+2) on 2026-03-29 at 02:00, back on 2026-10-25
    // at 03:00. Sunday 01:00-05:00 lasts 3 h in March and 5 h in October; a 02:30 start
    // falls in the skipped hour and moves forward with the clocks to 03:30 CEST.
    repo.partner(
        "berlin-lab",
        "timezone: Europe/Berlin\nwindows:\n  - days: [sun]\n    start: \"01:00\"\n    end: \"05:00\"\n  - days: [wed]\n    start: \"02:30\"\n    end: \"04:00\"\n",
    );
    let spring = ["--now", "2026-03-27T00:00:00Z", "--days", "4"];
    assert_eq!(
        spans(&ics(&repo, &spring)),
        pairs(&[("20260329T000000Z", "20260329T030000Z"),])
    );
    let out = repo.stdout(&spring);
    assert!(
        out.contains("Sun 2026-03-29 01:00 CET -> 05:00 CEST"),
        "{out}"
    );
    assert!(
        out.contains("2026-03-29 00:00 -> 2026-03-29 03:00 UTC  (3h)"),
        "{out}"
    );
    assert_stable_snapshot!("windows_text_dst_spring", out);

    let autumn = ["--now", "2026-10-23T00:00:00Z", "--days", "6"];
    assert_eq!(
        spans(&ics(&repo, &autumn)),
        pairs(&[
            ("20261024T230000Z", "20261025T040000Z"),
            ("20261028T013000Z", "20261028T030000Z"),
        ])
    );
    let out = repo.stdout(&autumn);
    assert!(
        out.contains("Sun 2026-10-25 01:00 CEST -> 05:00 CET"),
        "{out}"
    );
    assert!(out.contains("(5h)"), "{out}");

    let gap = Repo::new();
    gap.partner(
        "gap-lab",
        "timezone: Europe/Berlin\nwindows:\n  - days: [sun]\n    start: \"02:30\"\n    end: \"04:00\"\n",
    );
    assert_eq!(
        spans(&ics(&gap, &spring)),
        pairs(&[("20260329T013000Z", "20260329T020000Z")])
    );
}

#[test]
fn back_to_back_instances_are_one_stretch_in_text_and_separate_events() {
    let repo = Repo::new();
    repo.partner(
        "always-lab",
        "windows:\n  - days: [mon, tue, wed, thu, fri, sat, sun]\n    start: \"00:00\"\n    end: \"24:00\"\nblackouts:\n  - { from: 2026-11-25, to: 2026-11-25 }\n",
    );
    let now = ["--now", "2026-11-23T12:00:00Z", "--days", "3"];
    let out = repo.stdout(&now);
    let open: Vec<&str> = out.lines().filter(|l| l.contains(" -> ")).collect();
    assert_eq!(
        open.len(),
        2,
        "one stretch before and one after the blackout:\n{out}"
    );
    assert!(open[0].contains("open now"), "{out}");
    assert!(
        open[0].contains("2026-11-25 00:00 UTC "),
        "the stretch closes where the blackout begins:\n{out}"
    );
    assert!(open[1].contains("Thu 2026-11-26 00:00"), "{out}");
    assert!(out.contains("blackout Wed 2026-11-25: no changes"), "{out}");

    assert_eq!(
        spans(&ics(&repo, &now)),
        pairs(&[
            ("20261123T000000Z", "20261124T000000Z"),
            ("20261124T000000Z", "20261125T000000Z"),
            ("20261126T000000Z", "20261127T000000Z"),
        ])
    );
}

#[test]
fn partners_without_windows_are_never_updated_automatically_and_fleet_windows_apply() {
    let repo = Repo::new();
    repo.partner("quiet-lab", "windows: []\n");
    repo.partner("default-lab", "");
    repo.file(
        "fleet.yaml",
        "apiVersion: berth/v1\nkind: Fleet\ntimezone: Africa/Nairobi\nwindows:\n  - days: [sun]\n    start: \"01:00\"\n    end: \"05:00\"\n",
    );
    let now = ["--now", "2026-11-20T12:00:00Z", "--days", "7"];
    let out = repo.stdout(&now);
    let quiet = out.split("quiet-lab").nth(1).expect("quiet-lab listed");
    assert!(quiet.contains("never updated automatically"), "{out}");
    let default = out.split("default-lab").nth(1).expect("default-lab listed");
    assert!(default.contains("(Africa/Nairobi)"), "{out}");
    assert!(
        default.contains("Sun 2026-11-22 01:00 -> 05:00 EAT"),
        "fleet windows and zone:\n{out}"
    );
    let events = ics(&repo, &now);
    assert_eq!(events.len(), 1, "only default-lab has a window");
    assert_eq!(events[0].get("UID"), "default-lab-20261121T220000Z@berth");

    // --partner narrows the listing.
    let one = repo.stdout(&[now[0], now[1], "--partner", "quiet-lab"]);
    assert!(
        one.contains("quiet-lab") && !one.contains("default-lab"),
        "{one}"
    );
}

#[test]
fn ics_is_well_formed_and_stable() {
    let repo = Repo::new();
    repo.partner("nairobi-clinic", NAIROBI);
    // Many long script names force folded lines; a comma and a semicolon need escapes.
    let mut opt_ins = String::new();
    for i in 0..12 {
        let name = format!("analysis-script-number-{i:02}-with-a-rather-long-name");
        repo.file(
            &format!("scripts/{name}.yaml"),
            &format!(
                "apiVersion: berth/v1\nkind: Script\nname: {name}\nimage:\n  source: local\n  repository: berth-test/none\nversions: \">=1.0.0, <2.0.0\"\n"
            ),
        );
        opt_ins.push_str(&format!("  - script: {name}\n"));
    }
    repo.file(
        "partners/berlin-lab.yaml",
        &format!(
            "apiVersion: berth/v1\nkind: Partner\nname: berlin-lab\ntimezone: Europe/Berlin\nwindows:\n  - days: [mon, wed, fri]\n    start: \"22:00\"\n    end: \"02:00\"\n  - days: [sun]\n    start: \"00:00\"\n    end: \"24:00\"\nscripts:\n{opt_ins}"
        ),
    );
    let now = ["--now", "2026-10-20T09:15:00Z", "--days", "21"];
    let raw = repo.stdout(&[&["--ics"][..], &now[..]].concat());
    assert!(raw.contains("\r\n "), "long lines are folded");
    let events = parse_ics(&raw);
    // 6 nairobi weekend nights + berlin: 9 week-day nights and 3 Sundays.
    assert_eq!(
        events
            .iter()
            .filter(|e| e.get("UID").starts_with("nairobi-clinic-"))
            .count(),
        6
    );
    assert_eq!(events.len(), 6 + 9 + 3, "one VEVENT per instance");
    let berlin = events
        .iter()
        .find(|e| e.get("UID").starts_with("berlin-lab-"))
        .unwrap();
    let description = berlin.description();
    assert!(
        description.contains("analysis-script-number-11-with-a-rather-long-name >=1.0.0, <2.0.0"),
        "{description}"
    );
    assert!(berlin.get("DESCRIPTION").contains("\\,"), "commas escaped");

    // The same instant gives the same calendar, byte for byte.
    assert_eq!(raw, repo.stdout(&[&["--ics"][..], &now[..]].concat()));
    // A day later, the events both calendars cover keep their UIDs.
    let later = ics(&repo, &["--now", "2026-10-21T09:15:00Z", "--days", "21"]);
    let uids = |es: &[Event]| -> BTreeSet<(String, String, String)> {
        es.iter()
            .map(|e| (e.get("UID").to_owned(), e.start(), e.end()))
            .collect()
    };
    let (a, b) = (uids(&events), uids(&later));
    let common: Vec<_> = a.intersection(&b).collect();
    assert!(common.len() >= events.len() - 2, "{a:?}\n{b:?}");
    for (uid, start, _) in &a {
        if b.iter().any(|(u, _, _)| u == uid) {
            assert!(b.iter().any(|(u, s, _)| u == uid && s == start));
        }
    }
}

#[test]
fn invalid_manifests_exit_1_with_path_line_col() {
    let repo = Repo::new();
    repo.partner(
        "nairobi-clinic",
        "timezone: Africa/Nairobi\nwindows:\n  - days: [sat, funday]\n    start: \"01:00\"\n    end: \"05:00\"\n",
    );
    let out = repo.windows(&[]);
    out.assert_exit(1);
    assert!(
        out.text().contains("partners/nairobi-clinic.yaml:6:17:"),
        "{}",
        out.text()
    );
    let out = repo.windows(&["--ics"]);
    out.assert_exit(1);
    assert!(
        out.stdout().is_empty(),
        "no calendar from invalid manifests"
    );
}

#[test]
fn unknown_partner_exits_3() {
    let repo = Repo::new();
    repo.partner("nairobi-clinic", NAIROBI);
    let out = repo.windows(&["--partner", "nobody"]);
    out.assert_exit(3);
    assert!(out.text().contains("no partner `nobody`"), "{}", out.text());
    repo.windows(&["--days", "0"]).assert_exit(3);
}

#[test]
fn pending_changes_need_the_engine_but_windows_are_still_listed() {
    let repo = Repo::new();
    repo.partner("nairobi-clinic", NAIROBI);
    let out = repo.windows(&[
        "--partner",
        "nairobi-clinic",
        "--now",
        "2026-11-20T12:00:00Z",
    ]);
    out.assert_exit(0);
    let t = out.text();
    assert!(t.contains("Sat 2026-11-21 01:00 -> 05:00 EAT"), "{t}");
    assert!(t.contains("need this host's Docker engine"), "{t}");

    // The calendar stays clean; the note goes to stderr.
    let out = repo.windows(&[
        "--partner",
        "nairobi-clinic",
        "--now",
        "2026-11-20T12:00:00Z",
        "--ics",
    ]);
    out.assert_exit(0);
    assert_eq!(parse_ics(out.stdout()).len(), 4);
    assert!(out.stderr().contains("Docker engine"));
}

#[test]
fn pending_changes_are_listed_under_the_next_window() {
    let host = Host::new("windows");
    let saturday = "  - days: [sat]\n    start: \"01:00\"\n    end: \"05:00\"\n".to_owned();
    host.write(&Setup {
        versions: Some("=1.0.0".into()),
        windows: Some(saturday.clone()),
        ..Setup::default()
    });
    host.berth("apply", &["--ignore-window"]).assert_exit(0);
    host.write(&Setup {
        versions: Some("^1".into()),
        windows: Some(saturday),
        ..Setup::default()
    });
    // Friday noon: the replace waits for Saturday 01:00 UTC.
    let out = host.berth("windows", &["--now", "2026-11-20T12:00:00Z"]);
    out.assert_exit(0);
    let t = out.text();
    let lines: Vec<&str> = t.lines().collect();
    let next = lines
        .iter()
        .position(|l| l.trim_start().starts_with("next") && l.contains("Sat 2026-11-21 01:00"))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(
        lines[next + 1].contains("pending: replace svc: version 1.0.0 -> 1.1.0"),
        "{t}"
    );
    assert_eq!(
        t.matches("pending: ").count(),
        1,
        "only under the next window:\n{t}"
    );
    assert_stable_snapshot!("windows_text_pending", out.stdout());

    let out = host.berth("windows", &["--now", "2026-11-20T12:00:00Z", "--ics"]);
    out.assert_exit(0);
    let events = parse_ics(out.stdout());
    assert_eq!(events[0].start(), "20261121T010000Z");
    let d = events[0].description();
    assert!(
        d.contains("Pending changes:\n- replace svc: version 1.0.0 -> 1.1.0"),
        "{d}"
    );
    assert!(!events[1].description().contains("replace svc"));

    // In sync: said so.
    host.berth("apply", &["--ignore-window"]).assert_exit(0);
    let out = host.berth("windows", &["--now", "2026-11-20T12:00:00Z"]);
    assert!(
        out.text().contains("pending changes: none"),
        "{}",
        out.text()
    );
}

#[test]
fn example_agent_config_parses() {
    let path = common::root().join("examples/agent/agent.yaml");
    let config = berth::agent::config::load(&path).unwrap_or_else(|d| {
        panic!("{}", d.render_text(path.parent().unwrap()));
    });
    assert_eq!(config.partner, "nairobi-clinic");
    assert_eq!(
        config.repo.url,
        "https://git.example.org/fleet/manifests.git"
    );
    assert_eq!(
        config.repo.allowed_signers.as_deref(),
        Some(Path::new("/etc/berth/allowed_signers"))
    );
    assert_eq!(config.interval, std::time::Duration::from_secs(300));
    assert_eq!(config.state_dir, Path::new("/var/lib/berth"));
    assert_eq!(config.listen, Some("127.0.0.1:9464".parse().unwrap()));
}
