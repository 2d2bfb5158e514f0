//! `berth fleet --status REPO [--manifests REPO]`: every partner, what it should run and
//! what its host last reported, as a text table, JSON, a Markdown table (for a pull request
//! or a CI job summary) or the self-contained page CI publishes.

use std::fmt::Write as _;

use clap::ValueEnum;
use jiff::Timestamp;

use super::cannot_run;
use crate::exit::Exit;
use crate::fleet::{self, Fleet, FleetError, RepoRef, Row, Signature, render, status::short};

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum FleetFormat {
    Text,
    Json,
    Markdown,
    Html,
}

/// What `berth fleet` was asked.
pub struct FleetArgs {
    pub status: String,
    pub manifests: String,
    pub format: FleetFormat,
    pub exit_code: bool,
    pub now: Option<Timestamp>,
}

/// `berth fleet`.
pub fn fleet(args: &FleetArgs) -> Exit {
    let now = args.now.unwrap_or_else(Timestamp::now);
    let read = fleet::manifests(&RepoRef::parse(&args.manifests))
        .and_then(|m| fleet::read(&RepoRef::parse(&args.status), &m, now));
    let fleet = match read {
        Ok(f) => f,
        Err(FleetError::Invalid { root, diagnostics }) => {
            eprint!("{}", diagnostics.render_text(&root));
            eprintln!("berth: the manifests are invalid");
            return Exit::Wrong;
        }
        Err(e) => return cannot_run(&e),
    };
    out!(
        "{}",
        match args.format {
            FleetFormat::Text => text(&fleet),
            FleetFormat::Json => format!(
                "{:#}\n",
                serde_json::to_value(&fleet).expect("the fleet serializes")
            ),
            FleetFormat::Markdown => markdown(&fleet),
            FleetFormat::Html => fleet::html::page(&fleet),
        }
    );
    if args.exit_code {
        fleet.exit()
    } else {
        Exit::Ok
    }
}

/// `ok`, or the marks: `failed, behind`.
fn state(row: &Row) -> String {
    if row.verdict.marks.is_empty() {
        "ok".to_owned()
    } else {
        row.verdict
            .marks
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn revision(row: &Row) -> String {
    match &row.record {
        Some(r) => r.revision.as_deref().map_or("none", short).to_owned(),
        None if row.unreadable.is_some() => "unreadable".to_owned(),
        None => "no record".to_owned(),
    }
}

fn reported(row: &Row) -> String {
    match (&row.record, row.verdict.age_secs) {
        (Some(_), Some(age)) => render::age(age),
        _ => "-".to_owned(),
    }
}

fn signature(row: &Row) -> String {
    match &row.signature {
        Signature::Bad { detail, .. } => format!("bad signature: {detail}"),
        s => s.as_str().to_owned(),
    }
}

fn header(fleet: &Fleet) -> String {
    format!(
        "status repo {} ({} at {}), manifests at {}",
        fleet.status.location,
        fleet.status.branch,
        short(&fleet.status.commit),
        fleet.revision.as_deref().map_or("a plain directory", short)
    )
}

fn text(fleet: &Fleet) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "berth fleet at {}", render::utc(fleet.now));
    let _ = writeln!(out, "{}\n", header(fleet));
    let titles = [
        "PARTNER",
        "STATE",
        "REVISION",
        "REPORTED",
        "SIGNATURE",
        "NEXT WINDOW",
    ];
    let rows: Vec<[String; 6]> = fleet
        .partners
        .iter()
        .map(|r| {
            [
                r.partner.clone(),
                state(r),
                revision(r),
                reported(r),
                r.signature.as_str().to_owned(),
                render::next_window(r, fleet.now),
            ]
        })
        .collect();
    let mut widths = titles.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        l
    };
    let _ = writeln!(out, "{}", line(&titles));
    for (row, cells) in fleet.partners.iter().zip(&rows) {
        let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
        let _ = writeln!(out, "{}", line(&cells));
        for s in render::script_lines(row) {
            let _ = writeln!(out, "    {s}");
        }
        if let Signature::Bad { detail, .. } = &row.signature {
            let _ = writeln!(out, "    bad signature: {detail}");
        }
        for p in render::pending_lines(row) {
            let _ = writeln!(out, "    {p}");
        }
    }
    let rollout = render::rollout_lines(&fleet.rollout);
    if !rollout.is_empty() {
        let _ = writeln!(out, "\nrollout:");
        for l in rollout {
            let _ = writeln!(out, "  {l}");
        }
    }
    if !fleet.strays.is_empty() {
        let _ = writeln!(
            out,
            "\nrecords of partners the manifests do not have: {}",
            fleet.strays.join(", ")
        );
    }
    out
}

fn markdown(fleet: &Fleet) -> String {
    let cell = |lines: Vec<String>| {
        lines
            .iter()
            .map(|l| l.replace('|', "\\|"))
            .collect::<Vec<_>>()
            .join("<br>")
    };
    let mut out = String::new();
    let _ = writeln!(out, "### berth fleet\n");
    let _ = writeln!(out, "{}, {}\n", render::utc(fleet.now), header(fleet));
    let _ = writeln!(
        out,
        "| partner | state | revision | scripts | last report | signature | next window | pending or held |\n|---|---|---|---|---|---|---|---|"
    );
    for row in &fleet.partners {
        let _ = writeln!(
            out,
            "| `{}` | {} | `{}` | {} | {} | {} | {} | {} |",
            row.partner,
            state(row),
            revision(row),
            cell(render::script_lines(row)),
            reported(row),
            cell(vec![signature(row)]),
            render::next_window(row, fleet.now),
            cell(render::pending_lines(row)),
        );
    }
    let rollout = render::rollout_lines(&fleet.rollout);
    if !rollout.is_empty() {
        let _ = writeln!(out, "\n**Rollout**\n");
        for l in rollout {
            let _ = writeln!(out, "- {}", l.replace('|', "\\|"));
        }
    }
    if !fleet.strays.is_empty() {
        let _ = writeln!(
            out,
            "\nRecords of partners the manifests do not have: {}.",
            fleet.strays.join(", ")
        );
    }
    out
}
