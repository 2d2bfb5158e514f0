//! `berth agent` and `berth status`.

use std::path::Path;

use super::{StatusFormat, exit, host};
use crate::agent::{self, config, status::Status};
use crate::runtime::DockerEngine;

pub fn run(config_path: &Path, once: bool) -> i32 {
    let config = match config::load(config_path) {
        Ok(c) => c,
        Err(diags) => {
            eprint!("{}", diags.render_text(Path::new("")));
            return exit::WRONG;
        }
    };
    host::runtime().block_on(async {
        let engine = match DockerEngine::connect().await {
            Ok(e) => e,
            Err(e) => return super::cannot_run(&e),
        };
        if once {
            agent::run_once(&config, &engine, &std::sync::atomic::AtomicBool::new(false)).await
        } else {
            agent::daemon::run(&config, engine).await
        }
    })
}

pub fn status(state_dir: &Path, format: StatusFormat) -> i32 {
    let status = match Status::read(state_dir) {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!(
                "berth: no status in {}: the agent has not run a pass yet",
                state_dir.display()
            );
            return exit::CANNOT_RUN;
        }
        Err(e) => return super::cannot_run(&e),
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
            for s in &status.scripts {
                outln!(
                    "  {:<24} {:<12} {:<12} {}",
                    s.script,
                    s.version.as_deref().unwrap_or("-"),
                    s.state,
                    s.detail
                );
            }
        }
    }
    exit::OK
}
