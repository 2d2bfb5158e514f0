//! `berth plan` and `berth apply`: one pass over one partner's host, from a directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use jiff::Timestamp;

use super::{exit, render};
use crate::agent::pass::{self, Target};
use crate::apply::state::{self, StateDir};
use crate::manifest::{self, Repo};
use crate::plan::{self, Deferral, Overrides};
use crate::resolve::Sources;
use crate::runtime::DockerEngine;

/// What every host command needs to know.
#[derive(clap::Args)]
pub struct HostArgs {
    /// The manifest repo.
    #[arg(default_value = ".")]
    pub repo: PathBuf,
    #[arg(long)]
    pub partner: String,
    /// Act as if it were this instant (RFC 3339): windows are read at it.
    #[arg(long)]
    pub now: Option<Timestamp>,
    /// Where the journal and failed digests are kept.
    #[arg(long, default_value = "/var/lib/berth")]
    pub state_dir: PathBuf,
    /// Run steps even outside the update window or in a blackout.
    #[arg(long)]
    pub ignore_window: bool,
    /// Run steps even when the partner's service is not idle.
    #[arg(long)]
    pub ignore_idle: bool,
}

/// A validated repo, or the exit code after printing why not.
pub(super) fn load(repo_path: &Path) -> Result<Repo, i32> {
    match manifest::validate(repo_path) {
        Ok((repo, diags)) if !diags.has_errors() => Ok(repo),
        Ok((_, diags)) => {
            eprint!("{}", diags.render_text(repo_path));
            eprintln!("berth: the manifests are invalid; nothing was changed");
            Err(exit::WRONG)
        }
        Err(e) => Err(super::cannot_run(&e)),
    }
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds")
}

impl HostArgs {
    fn target<'a>(&'a self, repo: &'a Repo) -> Target<'a> {
        Target {
            repo,
            partner: &self.partner,
            revision: "worktree",
            now: self.now,
            overrides: Overrides {
                ignore_window: self.ignore_window,
                ignore_idle: self.ignore_idle,
            },
        }
    }
}

/// `berth plan`: what apply would do now; changes nothing.
pub fn plan(args: &HostArgs, format: render::PlanFormat, exit_code: bool) -> i32 {
    let repo = match load(&args.repo) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let held = match state::read_held(&args.state_dir) {
        Ok(h) => h,
        Err(e) => return super::cannot_run(&e),
    };
    runtime().block_on(async {
        let engine = match DockerEngine::connect().await {
            Ok(e) => e,
            Err(e) => return super::cannot_run(&e),
        };
        let sources = Sources::new(Some(&engine));
        let plan = match pass::plan(
            &engine,
            &sources,
            &crate::probe::Http::default(),
            &args.target(&repo),
            held,
        )
        .await
        {
            Ok(p) => p,
            Err(e) => return super::cannot_run(&e),
        };
        out!("{}", render::plan(&plan, format));
        if plan
            .steps
            .iter()
            .any(|s| matches!(&s.gate, plan::Gate::Deferred(Deferral::Unresolved { .. })))
        {
            exit::CANNOT_RUN
        } else if exit_code && plan.changes().next().is_some() {
            exit::PENDING
        } else {
            exit::OK
        }
    })
}

/// `berth apply`: recover, plan, carry the plan out.
pub fn apply(args: &HostArgs) -> i32 {
    let repo = match load(&args.repo) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let state = match StateDir::open(&args.state_dir) {
        Ok(s) => s,
        Err(e) => return super::cannot_run(&e),
    };
    runtime().block_on(async {
        let engine = match DockerEngine::connect().await {
            Ok(e) => e,
            Err(e) => return super::cannot_run(&e),
        };
        match pass::converge(
            &engine,
            &state,
            &args.target(&repo),
            &AtomicBool::new(false),
        )
        .await
        {
            Ok(report) => {
                for line in &report.recovered {
                    outln!("recovered {line}");
                }
                out!("{}", render::apply(&report.plan, &report.reports));
                report.exit_code()
            }
            Err(e) => super::cannot_run(&e),
        }
    })
}
