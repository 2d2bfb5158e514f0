//! The partner agent: `berth agent --config FILE [--once]`. It fetches the manifest repo,
//! converges the host inside its window, and keeps a status others can read.

pub mod child;
pub mod config;
pub mod daemon;
pub mod fetch;
pub mod pass;
pub mod send;
pub mod serve;
pub mod status;

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::clock::{Clock, SystemClock};
use crate::engine::DockerEngine;
use crate::exit::{Exit, chain};
use crate::probe::Http;
use crate::reconcile::{self, Effects, Target, Wake};
use crate::registry::Sources;
use crate::report::{self, Head, Record, WindowRecord};
use crate::secret::{Keyring, SecretsDir};
use crate::source::{self, HeldBack};
use crate::state::StateDir;
use crate::window::WindowState;
use config::AgentConfig;
use status::{LastPass, Status};

/// How one agent pass ended, and when it wants the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassEnd {
    pub exit: Exit,
    /// Earlier than the interval when a window opens or a busy service may be idle by then.
    pub wake: Option<Wake>,
}

/// SIGTERM or SIGINT (a terminal's Ctrl-C reaches the whole process group), the daemon's
/// and its pass child's one way to be asked to stop. The handlers are installed here, at
/// once, so a signal sent before the returned future is first polled still counts; `None`
/// (logged) when they cannot be.
fn stop_signal() -> Option<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return None;
    };
    Some(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// One pass of the agent: sync the source, validate, converge, record the status.
pub async fn run_once(
    config: &AgentConfig,
    engine: &DockerEngine,
    http: &Http,
    stopping: &AtomicBool,
) -> PassEnd {
    let started = Instant::now();
    let clock = SystemClock::real();
    let now = clock.now();
    tracing::info!(partner = %config.partner, "pass started");
    let state = match StateDir::open(&config.state_dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %chain(&e), "cannot start a pass");
            return PassEnd {
                exit: Exit::CannotRun,
                wake: None,
            };
        }
    };
    let mut status = Status::for_pass(&config.state_dir, &config.partner);
    let previous = report::read_local(&config.state_dir);
    let mut converged = None;
    let fx = Effects {
        engine,
        sources: &Sources::new(Some(engine)),
        probe: http,
        clock: &clock,
    };
    let end = pass_once(config, &fx, &state, &mut status, &mut converged, stopping).await;
    let code = end.exit;
    if code != Exit::Ok {
        status.counters.failures += 1;
    } else {
        status.last_success = Some(now.to_string());
    }
    status.last_pass = Some(LastPass {
        at: now.to_string(),
        exit: i32::from(code.code()),
        millis: started.elapsed().as_millis() as u64,
    });
    if let Err(e) = status.write(&config.state_dir) {
        tracing::error!(error = %e, "cannot write the status");
    }
    let mut head = Head {
        partner: config.partner.clone(),
        revision: status.revision.clone(),
        source: status.source.clone(),
        exit: code.code(),
        interval_secs: config.interval.as_secs(),
        at: clock.now(),
        window: previous
            .as_ref()
            .map(|p| p.window.clone())
            .unwrap_or_default(),
    };
    // A pass that made no plan (no manifests, an invalid policy) changed nothing: its
    // record carries the last one's scripts.
    let record = match converged {
        Some((report, window)) => {
            head.window = window;
            Record::build(head, &report.plan, &report.reports, previous.as_ref())
        }
        None => Record::carried(head, previous.as_ref()),
    };
    let written = report::write_local(&config.state_dir, &record);
    if let Err(e) = &written {
        tracing::error!(error = %e, "cannot write the status record");
    }
    // The report and the webhooks go out side by side, each within its own bound; neither
    // changes how the pass ended.
    let push = async {
        if written.is_ok() {
            send::after_pass(config, &record, stopping).await;
        }
    };
    let notify = crate::notify::after_pass(
        &config.notify,
        &config.state_dir,
        previous.as_ref(),
        &record,
        stopping,
    );
    tokio::join!(push, notify);
    end
}

async fn pass_once(
    config: &AgentConfig,
    fx: &Effects<'_, DockerEngine, Sources<'_, DockerEngine>, Http, SystemClock>,
    state: &StateDir,
    status: &mut Status,
    converged: &mut Option<(reconcile::PassReport, WindowRecord)>,
    stopping: &AtomicBool,
) -> PassEnd {
    let ended = |exit| PassEnd { exit, wake: None };
    let now = fx.clock.now();
    let checkout = match fetch::sync(config, now, stopping).await {
        Ok(c) => c,
        Err(e) => {
            let message = chain(&e);
            tracing::error!(error = %message, "cannot get the manifests");
            status.source = Some(message);
            return ended(e.exit());
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
            return ended(Exit::Wrong);
        }
        Err(e) => {
            tracing::error!(error = %chain(&e), "cannot read the manifests");
            return ended(Exit::CannotRun);
        }
    };
    if checkout.held_back.is_none()
        && checkout.revision != "worktree"
        && let Err(e) = source::accept(&config.state_dir, &checkout.revision)
    {
        tracing::error!(error = %chain(&e), "cannot record the accepted revision");
        return ended(Exit::CannotRun);
    }
    status.revision = Some(checkout.revision.clone());
    let policy = match config
        .policy
        .as_deref()
        .map(crate::policy::load)
        .transpose()
    {
        Ok(p) => {
            status.policy = None;
            p
        }
        Err(diags) => {
            let first = diags
                .iter()
                .next()
                .map(|d| format!("{}: {}", d.location(), d.message))
                .unwrap_or_default();
            let rendered = diags.render_text(std::path::Path::new(""));
            tracing::error!(diagnostics = %rendered, "the host policy is invalid; nothing was changed");
            status.policy = Some(format!("invalid, nothing was changed: {first}"));
            return ended(Exit::Wrong);
        }
    };
    // Read each pass, so a replaced identity file is used without a restart.
    let keys = match config
        .age_identity
        .as_deref()
        .map(Keyring::load)
        .transpose()
    {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %chain(&e), "cannot read the age identity");
            return ended(Exit::CannotRun);
        }
    };
    let secrets_dir = SecretsDir::open(&config.secrets_dir);
    let target = Target {
        repo: &repo,
        partner: &config.partner,
        revision: &checkout.revision,
        overrides: Default::default(),
        state_dir: &config.state_dir,
        config_dirs: vec![config.config_dir.clone()],
        own_files: config.own_files(),
        policy: policy.as_ref(),
        keys: keys.as_ref(),
        secrets_dir: Some(&secrets_dir),
        min_free: config.min_free,
        engine: config.engine,
    };
    let report = match reconcile::converge(fx, state, &target, stopping).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %chain(&e), "the pass could not run");
            return ended(Exit::CannotRun);
        }
    };
    status.record(&report.plan, &report.reports);
    let schedule = &report.plan.policy.schedule;
    let now = fx.clock.now();
    let window = match schedule.state(now) {
        WindowState::Open { closes } => WindowRecord {
            closes: Some(closes),
            opens: None,
        },
        _ => WindowRecord {
            closes: None,
            opens: schedule.next_open(now),
        },
    };
    status.next_window = match window {
        WindowRecord {
            closes: Some(closes),
            ..
        } => Some(format!("open until {closes}")),
        WindowRecord { opens, .. } => opens.map(|t| t.to_string()),
    };

    // Staying behind the head is itself an outcome, unless the pass has a worse one.
    let exit = match (&checkout.held_back, report.exit()) {
        (Some(HeldBack::Refused(_)), Exit::Ok) => Exit::Wrong,
        (Some(HeldBack::Unreachable(_)), Exit::Ok) => Exit::CannotRun,
        (_, code) => code,
    };
    let wake = report.next_wake(now);
    *converged = Some((report, window));
    PassEnd { exit, wake }
}
