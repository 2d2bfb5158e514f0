//! How plans and apply reports read: text for a terminal, markdown for a pull request,
//! JSON for tools (stable: documented in the README).

use std::fmt::Write as _;

use clap::ValueEnum;

use crate::execute::{Outcome, StepReport};
use crate::plan::{Deferral, Gate, Plan, Step};
use crate::reconcile::Pruned;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum PlanFormat {
    Text,
    Json,
    Markdown,
}

/// `1.0.0 -> 1.1.0`, `1.0.0`, or `-`.
fn versions(step: &Step) -> String {
    match (step.observed(), step.desired()) {
        (Some(o), Some(d)) if o.version != d.version => format!("{} -> {}", o.version, d.version),
        (_, Some(d)) => d.version.clone(),
        (Some(o), None) => o.version.clone(),
        (None, None) => "-".into(),
    }
}

/// A swarm service's tasks as it runs now: `  2/3 tasks on node-a, node-b`; empty for a
/// container.
fn tasks(step: &Step) -> String {
    step.observed()
        .and_then(|o| o.tasks.as_ref())
        .map(|t| format!("  {t}"))
        .unwrap_or_default()
}

fn gate(step: &Step) -> String {
    match &step.gate {
        Gate::Allowed => "allowed".into(),
        Gate::Deferred(d @ Deferral::Refused { .. }) => {
            format!("refused(policy): {}", d.describe())
        }
        Gate::Deferred(d) => format!("deferred({}): {}", d.name(), d.describe()),
    }
}

pub fn plan(plan: &Plan, format: PlanFormat) -> String {
    let mut out = String::new();
    match format {
        PlanFormat::Text => {
            let _ = writeln!(
                out,
                "plan for {} at {} ({})",
                plan.partner, plan.revision, plan.now
            );
            for s in &plan.steps {
                let _ = writeln!(
                    out,
                    "  {:<8} {:<24} {:<20} {}  [{}]{}",
                    s.action().as_str(),
                    s.label(),
                    versions(s),
                    s.reason,
                    gate(s),
                    tasks(s)
                );
            }
            let changes = plan.changes().count();
            let allowed = plan.changes().filter(|s| s.gate == Gate::Allowed).count();
            let _ = writeln!(
                out,
                "{changes} change(s): {allowed} allowed, {} deferred",
                changes - allowed
            );
        }
        PlanFormat::Markdown => {
            let _ = writeln!(out, "### `{}` at `{}`\n", plan.partner, plan.revision);
            let _ = writeln!(out, "| step | script | version | reason | gate |");
            let _ = writeln!(out, "|---|---|---|---|---|");
            // Changes, and scripts left as they are for a reason someone must act on.
            let shown = plan.steps.iter().filter(|s| {
                s.is_change()
                    || matches!(
                        s.gate,
                        Gate::Deferred(Deferral::Refused { .. } | Deferral::Unresolved { .. })
                    )
            });
            let mut any = false;
            for s in shown {
                any = true;
                let _ = writeln!(
                    out,
                    "| {} | `{}` | {} | {} | {} |",
                    s.action().as_str(),
                    s.label(),
                    versions(s),
                    s.reason.replace('|', "\\|"),
                    gate(s).replace('|', "\\|")
                );
            }
            if !any {
                let _ = writeln!(out, "| keep | - | - | in sync | - |");
            }
        }
        PlanFormat::Json => {
            let steps: Vec<_> = plan
                .steps
                .iter()
                .map(|s| {
                    let mut step = serde_json::json!({
                        "script": s.script,
                        "action": s.action(),
                        "reason": s.reason,
                        "gate": s.gate,
                        "from": s.observed().map(|o| {
                            let mut from = serde_json::json!({"version": o.version, "digest": o.digest});
                            if let Some(t) = &o.tasks {
                                from["tasks"] = serde_json::json!(t);
                            }
                            from
                        }),
                        "to": s.desired().map(|d| serde_json::json!({"version": d.version, "digest": d.digest})),
                    });
                    if let Some(c) = &s.component {
                        step["component"] = c.as_str().into();
                    }
                    step
                })
                .collect();
            let doc = serde_json::json!({
                "partner": plan.partner,
                "revision": plan.revision,
                "now": plan.now.to_string(),
                "changes": plan.changes().count(),
                "steps": steps,
            });
            let _ = writeln!(out, "{doc:#}");
        }
    }
    out
}

pub fn apply(plan: &Plan, reports: &[StepReport], pruned: &[Pruned]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "apply for {} at {} ({})",
        plan.partner, plan.revision, plan.now
    );
    for (s, r) in plan.steps.iter().zip(reports) {
        let outcome = match &r.outcome {
            Outcome::Done => "done".to_owned(),
            Outcome::Unchanged => "in sync".to_owned(),
            Outcome::Deferred { reason, detail } => format!("deferred({reason}): {detail}"),
            Outcome::NotPulled { error } => format!("NOT PULLED: {error}"),
            Outcome::Refused { detail } => format!("REFUSED(policy): {detail}"),
            Outcome::RolledBack { error, .. } => format!("ROLLED BACK: {error}"),
            Outcome::Failed { error, .. } => format!("FAILED: {error}"),
        };
        let _ = writeln!(
            out,
            "  {:<8} {:<24} {:<20} {}  {:.2}s",
            s.action().as_str(),
            s.label(),
            versions(s),
            outcome,
            r.millis as f64 / 1000.0
        );
    }
    for p in pruned {
        let _ = match &p.error {
            None => writeln!(out, "  pruned {} ({})", p.reference, p.why),
            Some(e) => writeln!(out, "  NOT PRUNED {} ({}): {e}", p.reference, p.why),
        };
    }
    out
}
