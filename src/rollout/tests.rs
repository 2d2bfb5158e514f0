use super::*;
use crate::manifest::{Blackout, Sp, Window};

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const NOW: &str = "2026-03-10T12:00:00Z";

fn pin(v: &str) -> Pin {
    Pin {
        version: v.into(),
        digest: format!("sha256:{}", v.replace('.', "")),
    }
}

fn wave(name: &str, partners: &[&str], bake_h: u64) -> Wave {
    Wave {
        name: name.into(),
        partners: partners.iter().map(|p| (*p).to_owned()).collect(),
        bake: Duration::from_secs(bake_h * 3600),
    }
}

/// A fleet where every partner runs `counts`, but `skip` partners run nothing.
fn fleet(waves: Vec<Wave>, skip: &[&str], reports: Vec<(&str, Report)>) -> Fleet {
    let runs = waves
        .iter()
        .flat_map(|w| w.partners.iter())
        .map(|p| {
            let scripts = if skip.contains(&p.as_str()) {
                BTreeSet::new()
            } else {
                BTreeSet::from(["counts".to_owned()])
            };
            (p.clone(), scripts)
        })
        .collect();
    Fleet {
        waves: Waves { waves },
        runs,
        reports: Ok(reports
            .into_iter()
            .map(|(p, r)| (p.to_owned(), r))
            .collect()),
    }
}

fn seen_at(at_: &str, units: Vec<UnitReport>) -> Report {
    Report::Seen {
        at: at(at_),
        interval: Duration::from_secs(300),
        units,
    }
}

fn unit(status: Status, desired: &str, running: Option<&str>, since: &str) -> UnitReport {
    UnitReport {
        script: "counts".into(),
        component: None,
        desired: Some(pin(desired)),
        running: running.map(pin),
        status,
        since: at(since),
    }
}

/// A fresh record: in sync on `v` since `since`.
fn synced(v: &str, since: &str) -> Report {
    seen_at(
        "2026-03-10T11:00:00Z",
        vec![unit(Status::InSync, v, Some(v), since)],
    )
}

const COUNTS: Unit<'static> = Unit {
    script: "counts",
    component: None,
};

fn decide_for(f: &Fleet, partner: &str, running: Option<&str>) -> Decision {
    let candidates = [pin("1.1.0"), pin("1.0.0")];
    decide(
        f,
        partner,
        COUNTS,
        &candidates,
        running.map(pin).as_ref(),
        at(NOW),
    )
}

fn two_waves(reports: Vec<(&str, Report)>) -> Fleet {
    fleet(
        vec![
            wave("canary", &["lab"], 0),
            wave("rest", &["clinic", "north"], 24),
        ],
        &[],
        reports,
    )
}

#[test]
fn the_first_wave_and_a_partner_outside_any_wave_are_not_gated() {
    let f = two_waves(vec![]);
    assert_eq!(decide_for(&f, "lab", Some("1.0.0")), Decision::Allowed);
    assert_eq!(
        decide_for(&f, "elsewhere", Some("1.0.0")),
        Decision::Allowed
    );
}

#[test]
fn a_later_wave_takes_the_newest_once_it_has_baked_long_enough() {
    let baked = two_waves(vec![("lab", synced("1.1.0", "2026-03-09T11:00:00Z"))]);
    assert_eq!(
        decide_for(&baked, "clinic", Some("1.0.0")),
        Decision::Allowed
    );
    let baking = two_waves(vec![("lab", synced("1.1.0", "2026-03-10T01:00:00Z"))]);
    let Decision::Wait {
        wave,
        detail,
        until,
    } = decide_for(&baking, "clinic", Some("1.0.0"))
    else {
        panic!("waits while the canary bakes");
    };
    assert_eq!(wave, "rest");
    assert_eq!(until, Some(at("2026-03-11T01:00:00Z")), "the bake's end");
    assert_eq!(
        detail,
        "1.1.0 (110) waits for wave canary (bake 24h): baking: lab until 2026-03-11T01:00:00Z; keeps 1.0.0 (100)"
    );
}

#[test]
fn the_highest_baked_candidate_is_taken_when_the_newest_still_bakes() {
    // The canary ran 1.0.0 a long time, then moved to 1.1.0 an hour ago: the record
    // holds only its latest state, so 1.0.0 is no longer vouched for.
    let moved = two_waves(vec![("lab", synced("1.1.0", "2026-03-10T11:00:00Z"))]);
    assert!(matches!(
        decide_for(&moved, "clinic", None),
        Decision::Wait { detail, .. }
            if detail.ends_with("nothing has baked yet, so this partner gets nothing until it does")
    ));
    // Three waves: the middle one runs 1.0.0 long baked while 1.1.0 is new there.
    let three = fleet(
        vec![
            wave("canary", &["lab"], 0),
            wave("early", &["clinic"], 1),
            wave("rest", &["north"], 24),
        ],
        &[],
        vec![
            ("lab", synced("1.1.0", "2026-03-01T00:00:00Z")),
            ("clinic", synced("1.0.0", "2026-03-01T00:00:00Z")),
        ],
    );
    assert_eq!(
        decide_for(&three, "clinic", Some("1.0.0")),
        Decision::Allowed
    );
    let Decision::Baked { pin: got, waiting } = decide_for(&three, "north", None) else {
        panic!("a fresh partner gets the baked version");
    };
    assert_eq!(got, pin("1.0.0"));
    assert!(
        waiting.starts_with("1.1.0 (110) waits for wave early (bake 24h): not on it: clinic (in sync on 1.0.0 (100))"),
        "{waiting}"
    );
    // Running something newer than what has baked: kept, never downgraded.
    let Decision::Wait { detail, .. } = decide_for(&three, "north", Some("1.0.5")) else {
        panic!("keeps what runs");
    };
    assert!(
        detail.ends_with("keeps 1.0.5 (105), newer than 1.0.0 (100) that has baked"),
        "{detail}"
    );
}

#[test]
fn waves_where_nobody_runs_the_script_are_skipped() {
    let f = fleet(
        vec![
            wave("canary", &["lab"], 0),
            wave("early", &["clinic"], 1),
            wave("rest", &["north"], 1),
        ],
        &["clinic"],
        vec![("lab", synced("1.1.0", "2026-03-10T10:00:00Z"))],
    );
    assert_eq!(decide_for(&f, "north", Some("1.0.0")), Decision::Allowed);
    let nobody_before = fleet(
        vec![wave("canary", &["lab"], 0), wave("rest", &["north"], 1)],
        &["lab"],
        vec![],
    );
    assert_eq!(
        decide_for(&nobody_before, "north", Some("1.0.0")),
        Decision::Allowed
    );
}

#[test]
fn a_rolled_back_or_held_digest_halts_every_later_wave() {
    let rolled = seen_at(
        "2026-03-10T11:00:00Z",
        vec![unit(
            Status::RolledBack,
            "1.1.0",
            Some("1.0.0"),
            "2026-03-10T09:00:00Z",
        )],
    );
    let three = fleet(
        vec![
            wave("canary", &["lab"], 0),
            wave("early", &["clinic"], 0),
            wave("rest", &["north"], 0),
        ],
        &[],
        vec![
            ("lab", rolled),
            ("clinic", synced("1.0.0", "2026-03-01T00:00:00Z")),
        ],
    );
    for partner in ["clinic", "north"] {
        let Decision::Halted { detail, .. } = decide_for(&three, partner, Some("1.0.0")) else {
            panic!("{partner} is halted");
        };
        assert_eq!(
            detail,
            "1.1.0 (110) is halted: rolled back on lab (wave canary) since 2026-03-10T09:00:00Z; later waves never take it; keeps 1.0.0 (100)"
        );
    }
    // Held in the middle wave while the canary is fine: the last wave is halted too.
    let held = seen_at(
        "2026-03-10T11:00:00Z",
        vec![unit(
            Status::Held,
            "1.1.0",
            Some("1.0.0"),
            "2026-03-10T09:00:00Z",
        )],
    );
    let f = fleet(
        vec![
            wave("canary", &["lab"], 0),
            wave("early", &["clinic"], 0),
            wave("rest", &["north"], 0),
        ],
        &[],
        vec![
            ("lab", synced("1.1.0", "2026-03-01T00:00:00Z")),
            ("clinic", held),
        ],
    );
    assert!(matches!(
        decide_for(&f, "north", Some("1.0.0")),
        Decision::Halted { .. }
    ));
    // A fresh partner behind a halt takes the older baked version.
    assert_eq!(
        decide_for(&f, "north", None),
        Decision::Halted {
            wave: "rest".into(),
            detail: "1.1.0 (110) is halted: held on clinic (wave early) since 2026-03-10T09:00:00Z; later waves never take it; nothing has baked yet, so this partner gets nothing until it does".into()
        }
    );
}

#[test]
fn stale_missing_and_pending_members_are_named() {
    let window = seen_at(
        "2026-03-10T11:00:00Z",
        vec![unit(
            Status::Deferred("window".into()),
            "1.1.0",
            Some("1.0.0"),
            "2026-03-10T09:00:00Z",
        )],
    );
    let f = fleet(
        vec![
            wave("canary", &["a", "b", "c", "d"], 0),
            wave("rest", &["north"], 1),
        ],
        &[],
        vec![
            ("a", synced("1.1.0", "2026-03-10T11:30:00Z")),
            ("b", window),
            (
                "c",
                seen_at(
                    "2026-03-09T11:00:00Z",
                    vec![unit(
                        Status::InSync,
                        "1.1.0",
                        Some("1.1.0"),
                        "2026-03-01T00:00:00Z",
                    )],
                ),
            ),
        ],
    );
    let Decision::Wait { detail, until, .. } = decide_for(&f, "north", Some("1.0.0")) else {
        panic!("waits");
    };
    assert_eq!(
        until, None,
        "no end in sight while members are stale or missing"
    );
    assert_eq!(
        detail,
        "1.1.0 (110) waits for wave canary (bake 1h): baking: a until 2026-03-10T12:30:00Z; pending: b (deferred(window)); stale: c (last report 2026-03-09T11:00:00Z); missing: d (no status record); keeps 1.0.0 (100)"
    );
}

#[test]
fn an_unreadable_status_repo_keeps_what_runs() {
    let mut f = two_waves(vec![]);
    f.reports = Err("cannot fetch".into());
    let Decision::Wait { detail, .. } = decide_for(&f, "clinic", Some("1.0.0")) else {
        panic!("waits");
    };
    assert_eq!(
        detail,
        "wave rest cannot see wave canary: the status repo cannot be read (cannot fetch); keeps what runs"
    );
    assert_eq!(decide_for(&f, "lab", Some("1.0.0")), Decision::Allowed);
}

#[test]
fn components_are_judged_by_their_own_entries() {
    let mut db = unit(
        Status::InSync,
        "1.1.0",
        Some("1.1.0"),
        "2026-03-01T00:00:00Z",
    );
    db.component = Some("db".into());
    let f = two_waves(vec![("lab", seen_at("2026-03-10T11:00:00Z", vec![db]))]);
    let candidates = [pin("1.1.0")];
    let db_unit = Unit {
        script: "counts",
        component: Some("db"),
    };
    let web_unit = Unit {
        script: "counts",
        component: Some("web"),
    };
    let now = at(NOW);
    assert_eq!(
        decide(&f, "clinic", db_unit, &candidates, None, now),
        Decision::Allowed
    );
    assert!(matches!(
        decide(&f, "clinic", web_unit, &candidates, None, now),
        Decision::Wait { detail, .. } if detail.contains("pending: lab (has not reported it yet)")
    ));
}

fn daily(hour: &str) -> Schedule {
    let w = Window {
        days: Sp::unplaced(
            ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                .map(|d| Sp::unplaced(d.to_owned()))
                .to_vec(),
        ),
        start: Sp::unplaced(format!("{hour}:00")),
        end: Sp::unplaced(format!("{hour}:30")),
    };
    Schedule::from_manifest("UTC", &[w], &Vec::<Blackout>::new())
}

#[test]
fn the_estimate_chains_bakes_and_each_members_next_window() {
    let f = fleet(
        vec![
            wave("canary", &["lab"], 0),
            wave("early", &["clinic", "north"], 24),
            wave("rest", &["south"], 2),
        ],
        &[],
        vec![("lab", synced("1.1.0", "2026-03-10T02:00:00Z"))],
    );
    let schedules = BTreeMap::from([
        ("lab".to_owned(), daily("01")),
        ("clinic".to_owned(), daily("03")),
        ("north".to_owned(), daily("05")),
        ("south".to_owned(), daily("04")),
    ]);
    let got = estimate(&f, COUNTS, &pin("1.1.0").digest, &schedules, at(NOW));
    let show: Vec<String> = got
        .iter()
        .map(|r| format!("{} {} {:?}", r.wave, r.reached, r.at.map(|t| t.to_string())))
        .collect();
    // canary in sync since 02:00 on the 10th; early's gate opens 02:00 on the 11th, clinic
    // at 03:00, north at 05:00; rest's gate 07:00, south's window next at 04:00 on the 12th.
    assert_eq!(
        show,
        [
            "canary true Some(\"2026-03-10T02:00:00Z\")",
            "early false Some(\"2026-03-11T05:00:00Z\")",
            "rest false Some(\"2026-03-12T04:00:00Z\")",
        ]
    );
}

#[test]
fn the_estimate_says_never_behind_a_halt_or_a_member_without_windows() {
    let rolled = seen_at(
        "2026-03-10T11:00:00Z",
        vec![unit(
            Status::RolledBack,
            "1.1.0",
            Some("1.0.0"),
            "2026-03-10T09:00:00Z",
        )],
    );
    let f = two_waves(vec![("lab", rolled)]);
    let schedules = BTreeMap::from([
        ("lab".to_owned(), daily("01")),
        ("clinic".to_owned(), daily("03")),
        ("north".to_owned(), daily("03")),
    ]);
    let got = estimate(&f, COUNTS, &pin("1.1.0").digest, &schedules, at(NOW));
    assert!(got.iter().all(|r| r.at.is_none() && !r.reached), "{got:?}");
    assert_eq!(got[1].halted.as_deref(), Some("lab (wave canary)"));
    let no_windows = two_waves(vec![("lab", synced("1.1.0", "2026-03-01T00:00:00Z"))]);
    let only_clinic = BTreeMap::from([("clinic".to_owned(), daily("03"))]);
    let got = estimate(
        &no_windows,
        COUNTS,
        &pin("1.1.0").digest,
        &only_clinic,
        at(NOW),
    );
    assert_eq!(got[1].at, None, "north has no window: {got:?}");
}

#[test]
fn a_member_waiting_for_a_newer_digest_still_bakes_the_one_it_runs() {
    let waiting = seen_at(
        "2026-03-10T11:00:00Z",
        vec![unit(
            Status::Deferred("wave".into()),
            "1.1.0",
            Some("1.0.0"),
            "2026-03-09T00:00:00Z",
        )],
    );
    let f = fleet(
        vec![
            wave("canary", &["lab"], 0),
            wave("early", &["clinic"], 24),
            wave("rest", &["north"], 1),
        ],
        &[],
        vec![
            ("lab", synced("1.1.0", "2026-03-10T11:00:00Z")),
            ("clinic", waiting),
        ],
    );
    assert_eq!(
        f.running_versions(COUNTS),
        BTreeSet::from(["1.0.0".to_owned(), "1.1.0".to_owned()])
    );
    assert!(matches!(
        decide_for(&f, "north", None),
        Decision::Baked { pin: p, .. } if p == pin("1.0.0")
    ));
}
