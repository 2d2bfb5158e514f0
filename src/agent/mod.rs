//! The partner agent: `berth agent --config FILE [--once]`. It fetches the manifest repo,
//! converges the host inside its window, and keeps a status others can read.

pub mod config;
pub mod daemon;
pub mod pass;
pub mod serve;
pub mod status;

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use jiff::Timestamp;

use crate::apply::state::StateDir;
use crate::cli::exit;
use crate::runtime::DockerEngine;
use crate::source::{self, HeldBack};
use crate::window::{Schedule, WindowState};
use config::AgentConfig;
use pass::Target;
use status::{LastPass, Status};

/// One pass of the agent: sync the source, validate, converge, record the status.
/// Returns the exit code of design.md §7.
pub async fn run_once(config: &AgentConfig, engine: &DockerEngine, stopping: &AtomicBool) -> i32 {
    let started = Instant::now();
    let now = Timestamp::now();
    tracing::info!(partner = %config.partner, "pass started");
    let state = match StateDir::open(&config.state_dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %crate::cli::chain(&e), "cannot start a pass");
            return exit::CANNOT_RUN;
        }
    };
    let mut status = Status::read(&config.state_dir)
        .ok()
        .flatten()
        .unwrap_or_default();
    status.partner = config.partner.clone();
    status.counters.passes += 1;
    let code = pass_once(config, engine, &state, &mut status, now, stopping).await;
    if code != exit::OK {
        status.counters.failures += 1;
    } else {
        status.last_success = Some(now.to_string());
    }
    status.last_pass = Some(LastPass {
        at: now.to_string(),
        exit: code,
        millis: started.elapsed().as_millis() as u64,
    });
    if let Err(e) = status.write(&config.state_dir) {
        tracing::error!(error = %e, "cannot write the status");
    }
    code
}

async fn pass_once(
    config: &AgentConfig,
    engine: &DockerEngine,
    state: &StateDir,
    status: &mut Status,
    now: Timestamp,
    stopping: &AtomicBool,
) -> i32 {
    let synced = source::sync_off_thread(&config.repo, &config.state_dir, now, stopping).await;
    let checkout = match synced {
        Ok(c) => c,
        Err(e) => {
            let message = crate::cli::chain(&e);
            tracing::error!(error = %message, "cannot get the manifests");
            status.source = Some(message);
            return match e {
                source::SourceError::Verify(_)
                | source::SourceError::RefusedWithNothingToStayAt(_) => exit::WRONG,
                _ => exit::CANNOT_RUN,
            };
        }
    };
    status.source = checkout.held_back.as_ref().map(|h| match h {
        HeldBack::Unreachable(t) => {
            format!("remote unreachable, staying at {}: {t}", checkout.revision)
        }
        HeldBack::Refused(t) => format!("head refused, staying at {}: {t}", checkout.revision),
    });
    if let Some(note) = &status.source {
        tracing::warn!(note = %note, "not at the manifest repo's head");
    }
    let repo = match crate::manifest::validate(&checkout.root) {
        Ok((repo, diags)) if !diags.has_errors() => repo,
        Ok((_, diags)) => {
            let rendered = diags.render_text(&checkout.root);
            tracing::error!(revision = %checkout.revision, diagnostics = %rendered, "the manifests are invalid; nothing was changed");
            return exit::WRONG;
        }
        Err(e) => {
            tracing::error!(error = %crate::cli::chain(&e), "cannot read the manifests");
            return exit::CANNOT_RUN;
        }
    };
    if checkout.held_back.is_none()
        && checkout.revision != "worktree"
        && let Err(e) = source::accept(&config.state_dir, &checkout.revision)
    {
        tracing::error!(error = %crate::cli::chain(&e), "cannot record the accepted revision");
        return exit::CANNOT_RUN;
    }
    status.revision = Some(checkout.revision.clone());
    let target = Target {
        repo: &repo,
        partner: &config.partner,
        revision: &checkout.revision,
        now: Some(now),
        overrides: Default::default(),
    };
    let report = match pass::converge(engine, state, &target, stopping).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %crate::cli::chain(&e), "the pass could not run");
            return exit::CANNOT_RUN;
        }
    };
    status.record(&report.plan, &report.reports);
    if let Some(p) = repo.partners.get(&config.partner) {
        let schedule = Schedule::from_manifest(
            repo.timezone(&p.doc),
            repo.windows(&p.doc),
            &p.doc.blackouts,
        );
        status.next_window = match schedule.state(now) {
            WindowState::Open { closes } => Some(format!("open until {closes}")),
            _ => schedule.next_open(now).map(|t| t.to_string()),
        };
    }
    let code = report.exit_code();
    match &checkout.held_back {
        Some(HeldBack::Refused(_)) if code == exit::OK => exit::WRONG,
        Some(HeldBack::Unreachable(_)) if code == exit::OK => exit::CANNOT_RUN,
        _ => code,
    }
}
