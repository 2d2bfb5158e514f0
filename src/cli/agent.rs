//! `berth agent` and `berth status`.

use std::path::Path;

use super::{StatusFormat, cannot_run, host};
use crate::agent::{self, config, status::Status};
use crate::container::EngineKind;
use crate::engine::DockerEngine;
use crate::exit::Exit;
use crate::probe::Http;

/// agent.yaml, or its findings rendered and exit 1; `engine` (`--engine`) over its
/// `engine:`. Every engine query and name from here on is in its namespace.
fn load(config_path: &Path, engine: Option<EngineKind>) -> Result<config::AgentConfig, Exit> {
    let mut config = config::load(config_path).map_err(|diags| {
        eprint!("{}", diags.render_text(Path::new("")));
        Exit::Wrong
    })?;
    crate::container::set_namespace(config.namespace.as_deref());
    if let Some(engine) = engine {
        config.engine = engine;
    }
    Ok(config)
}

pub fn run(config_path: &Path, once: bool, engine: Option<EngineKind>) -> Exit {
    let config = match load(config_path, engine) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    if !once {
        let e = agent::daemon::hand_over(config_path, engine);
        tracing::warn!(
            error = %e,
            "cannot start {}: the daemon runs in this process",
            agent::daemon::SUPERVISOR
        );
    }
    host::runtime().block_on(async {
        let engine = match DockerEngine::connect_as(config.engine).await {
            Ok(e) => e,
            Err(e) => return cannot_run(&e),
        };
        if once {
            let stopping = std::sync::atomic::AtomicBool::new(false);
            agent::run_once(&config, &engine, &Http::default(), &stopping)
                .await
                .exit
        } else {
            agent::daemon::run(&config, engine).await
        }
    })
}

/// The daemon in its own binary, as `berth agent` hands it over (see
/// [`agent::daemon::SUPERVISOR`]).
pub fn daemon(config_path: &Path, engine: Option<EngineKind>) -> Exit {
    let config = match load(config_path, engine) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    host::runtime().block_on(async {
        match DockerEngine::connect_as(config.engine).await {
            Ok(engine) => agent::daemon::run(&config, engine).await,
            Err(e) => cannot_run(&e),
        }
    })
}

/// The daemon's pass child (`berth agent-pass`, see [`crate::agent::pass`]): one pass as
/// `--once` runs it, answered on stdout.
pub fn pass(config_path: &Path, engine: Option<EngineKind>) -> Exit {
    let config = match load(config_path, engine) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    host::runtime().block_on(async {
        let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        agent::pass::prepare(std::sync::Arc::clone(&stopping));
        let engine = match DockerEngine::connect_as(config.engine).await {
            Ok(e) => e,
            Err(e) => return cannot_run(&e),
        };
        let end = agent::run_once(&config, &engine, &Http::default(), &stopping).await;
        agent::pass::answer(&end)
    })
}

pub fn status(state_dir: &Path, format: StatusFormat) -> Exit {
    let status = match Status::read(state_dir) {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!(
                "berth: no status in {}: the agent has not run a pass yet",
                state_dir.display()
            );
            return Exit::CannotRun;
        }
        Err(e) => return cannot_run(&e),
    };
    match format {
        StatusFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&status).expect("status serializes")
        ),
        StatusFormat::Text => {
            outln!("partner:      {}", status.partner);
            outln!(
                "revision:     {}",
                status.revision.as_deref().unwrap_or("-")
            );
            if let Some(p) = &status.policy {
                outln!("policy:       {p}");
            }
            if let Some(s) = &status.source {
                outln!("source:       {s}");
            }
            if let Some(p) = &status.last_pass {
                outln!("last pass:    {} (exit {}, {} ms)", p.at, p.exit, p.millis);
            }
            outln!(
                "last success: {}",
                status.last_success.as_deref().unwrap_or("never")
            );
            outln!(
                "next window:  {}",
                status.next_window.as_deref().unwrap_or("none")
            );
            outln!("pending:      {}", status.pending);
            if let Some(r) = &status.report {
                outln!(
                    "reported:     {}",
                    r.last_success.as_deref().unwrap_or("never")
                );
                if let Some(e) = &r.last_error {
                    outln!("report error: {e}");
                }
            }
            for s in &status.scripts {
                outln!(
                    "  {:<24} {:<12} {:<12} {}{}",
                    s.component
                        .as_ref()
                        .map_or_else(|| s.script.clone(), |c| format!("{}/{c}", s.script)),
                    s.version.as_deref().unwrap_or("-"),
                    s.state,
                    s.detail,
                    s.tasks
                        .as_ref()
                        .map(|t| format!("  ({t})"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Exit::Ok
}
