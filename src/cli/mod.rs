//! The command line: it parses what the user typed, builds the real effects (the engine,
//! the registries, the clock), calls the domain modules and renders what they return.
//! Errors are rendered here, once, with their whole cause chain; nothing outside `cli`
//! imports it.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::exit::{Exit, chain};
use crate::manifest;

/// Writes to stdout, ignoring a closed pipe (`berth validate | head` must not panic).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `out!` with a newline.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod agent;
mod diff;
mod fleet;
mod host;
mod lock;
mod render;
mod volumes;
mod windows;

#[derive(Parser)]
#[command(
    name = "berth",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BERTH_COMMIT"), ")"),
    about = "Keeps container hosts in the state a git repo of YAML manifests declares"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a manifest repo; every finding names path:line:col.
    Validate {
        /// The manifest repo.
        #[arg(default_value = ".")]
        repo: PathBuf,
        #[arg(long, value_enum, default_value_t = ValidateFormat::Text)]
        format: ValidateFormat,
        /// Also check this partner's scripts against berth's floor (and `--policy`).
        #[arg(long)]
        partner: Option<String>,
        /// The partner's host policy to check its scripts against.
        #[arg(long, value_name = "FILE", requires = "partner")]
        policy: Option<PathBuf>,
        /// The engine the partner's host runs (`docker` or `swarm`): what it cannot run is
        /// refused here too.
        #[arg(
            long,
            value_name = "ENGINE",
            default_value = "docker",
            requires = "partner"
        )]
        engine: crate::container::EngineKind,
    },
    /// Show what `apply` would change on a partner's host, and why.
    Plan {
        #[command(flatten)]
        host: host::HostArgs,
        #[arg(long, value_enum, default_value_t = render::PlanFormat::Text)]
        format: render::PlanFormat,
        /// Exit 2 when changes are pending.
        #[arg(long)]
        exit_code: bool,
    },
    /// Converge a partner's host to its manifests, inside its window and when idle.
    Apply {
        #[command(flatten)]
        host: host::HostArgs,
        /// Defer a pull that would leave less than this free on the engine's data root
        /// (`512m`, `2g`; 0 turns the guard off).
        #[arg(long, value_name = "SIZE", default_value = "2g", value_parser = host::min_free)]
        min_free: u64,
    },
    /// What each partner's host will change between two revisions of the manifest repo.
    Diff {
        #[arg(default_value = ".")]
        repo: PathBuf,
        /// The revision changes are measured from (e.g. `origin/main`).
        #[arg(long)]
        base: String,
        /// The revision to compare; the working tree when omitted.
        #[arg(long)]
        head: Option<String>,
        #[arg(long, value_enum, default_value_t = diff::DiffFormat::Text)]
        format: diff::DiffFormat,
        /// Exit 2 when some partner's host would change.
        #[arg(long)]
        exit_code: bool,
    },
    /// Pin every partner's scripts to a version and digest in berth.lock.
    Lock {
        #[arg(default_value = ".")]
        repo: PathBuf,
        /// Change nothing; exit 1 when berth.lock is missing or stale, saying what changed.
        #[arg(long)]
        check: bool,
    },
    /// Upcoming update windows per partner (local time and UTC), with the changes pending on
    /// this host for `--partner`; `--ics` prints an iCalendar to publish.
    Windows {
        #[arg(default_value = ".")]
        repo: PathBuf,
        /// Only this partner, with the changes pending for it on this host's engine.
        #[arg(long)]
        partner: Option<String>,
        /// How many days ahead to list.
        #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u32).range(1..=400))]
        days: u32,
        /// Print an RFC 5545 iCalendar instead of text.
        #[arg(long)]
        ics: bool,
        /// List from this instant (RFC 3339) instead of now.
        #[arg(long)]
        now: Option<jiff::Timestamp>,
        /// Where failed digests are remembered (for the pending changes).
        #[arg(long, default_value = "/var/lib/berth")]
        state_dir: PathBuf,
        /// The partner's host policy, so changes it refuses are not listed as pending.
        #[arg(long, value_name = "FILE", requires = "partner")]
        policy: Option<PathBuf>,
        /// The age identity, so scripts that use secrets are planned (see `plan`).
        #[arg(long, value_name = "FILE", requires = "partner")]
        age_identity: Option<PathBuf>,
    },
    /// The partner agent: fetch the manifest repo and converge this host, once (for cron)
    /// or on an interval (as a daemon).
    Agent {
        #[arg(long)]
        config: PathBuf,
        /// One pass, then exit with its code.
        #[arg(long)]
        once: bool,
        /// `docker` or `swarm`, over agent.yaml's `engine:`.
        #[arg(long, value_name = "ENGINE")]
        engine: Option<crate::container::EngineKind>,
    },
    /// What the agent last did on this host, from its state dir.
    Status {
        #[arg(long, default_value = "/var/lib/berth")]
        state_dir: PathBuf,
        /// The agent of this namespace.
        #[arg(long, value_name = "NS", value_parser = namespace)]
        namespace: Option<String>,
        #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
        format: StatusFormat,
    },
    /// The named volumes berth created on this host, each with the script that declares it
    /// or `orphaned`; berth never deletes them.
    Volumes {
        /// Only this partner's volumes.
        #[arg(long)]
        partner: Option<String>,
        /// Where each partner's last pass recorded the volumes its scripts declare.
        #[arg(long, default_value = "/var/lib/berth")]
        state_dir: PathBuf,
        /// Only this namespace's volumes.
        #[arg(long, value_name = "NS", value_parser = namespace)]
        namespace: Option<String>,
        #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
        format: StatusFormat,
    },
    /// Every partner: what it should run and what its host last reported to the status
    /// repo, with stale records and bad signatures marked.
    Fleet {
        /// The status repo: a git URL or a path (bare or checked out), `#branch` appended
        /// for another branch than `main`.
        #[arg(long, value_name = "REPO")]
        status: String,
        /// The manifest repo: a directory, or a git repo or URL (`#branch` to pick one).
        #[arg(long, value_name = "REPO", default_value = ".")]
        manifests: String,
        #[arg(long, value_enum, default_value_t = fleet::FleetFormat::Text)]
        format: fleet::FleetFormat,
        /// Exit 2 when a partner is behind, stale or missing, 1 when one failed, rolled back,
        /// is held, or its record is unreadable or not signed by its key.
        #[arg(long)]
        exit_code: bool,
        /// Judge as if it were this instant (RFC 3339).
        #[arg(long)]
        now: Option<jiff::Timestamp>,
    },
    /// Print the JSON Schema of a manifest kind, for editors.
    Schema {
        #[arg(value_enum)]
        kind: SchemaKind,
    },
}

/// `--namespace`: a name, as agent.yaml's `namespace:` is.
fn namespace(s: &str) -> Result<String, String> {
    if crate::manifest::syntax::is_name(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "invalid namespace `{s}`: lowercase letters, digits and `-`"
        ))
    }
}

/// Acts in `namespace` from here on: its names, its labels, and its own state under the
/// state dir.
fn enter(namespace: Option<&str>, state_dir: &Path) -> PathBuf {
    crate::container::set_namespace(namespace);
    crate::state::namespaced(state_dir, namespace)
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum StatusFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ValidateFormat {
    Text,
    Json,
    Github,
}

/// The documents a JSON Schema is published for.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum SchemaKind {
    Partner,
    Script,
    Fleet,
}

/// The agent's fetch child (`berth agent-fetch`, see [`crate::agent::fetch`]): an interface
/// between the agent and itself, kept out of the help, the man pages and the completions.
#[derive(Parser)]
#[command(name = "berth agent-fetch")]
struct FetchCli {
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    now: jiff::Timestamp,
}

/// The daemon's pass child (`berth agent-pass`, see [`crate::agent::pass`]), kept out of
/// the help, the man pages and the completions like `agent-fetch`.
#[derive(Parser)]
#[command(name = "berth agent-pass")]
struct PassCli {
    #[arg(long)]
    config: PathBuf,
    /// The engine the daemon was told to drive, over agent.yaml's.
    #[arg(long)]
    engine: Option<crate::container::EngineKind>,
}

/// The agent's push child (`berth agent-report`, see [`crate::agent::send`]), kept out of
/// the help, the man pages and the completions like `agent-fetch`.
#[derive(Parser)]
#[command(name = "berth agent-report")]
struct ReportCli {
    #[arg(long)]
    config: PathBuf,
}

/// Parses the arguments, runs the command and returns the process exit code.
pub fn main() -> Exit {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == crate::agent::send::COMMAND)
    {
        return match ReportCli::try_parse_from(std::env::args_os().skip(1)) {
            Ok(args) => {
                init_logging(tracing::Level::INFO);
                crate::agent::send::answer(&args.config)
            }
            Err(e) => {
                let _ = e.print();
                Exit::CannotRun
            }
        };
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == crate::agent::pass::COMMAND)
    {
        return match PassCli::try_parse_from(std::env::args_os().skip(1)) {
            Ok(args) => {
                init_logging(tracing::Level::INFO);
                agent::pass(&args.config, args.engine)
            }
            Err(e) => {
                let _ = e.print();
                Exit::CannotRun
            }
        };
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == crate::agent::fetch::COMMAND)
    {
        return match FetchCli::try_parse_from(std::env::args_os().skip(1)) {
            Ok(args) => {
                init_logging(tracing::Level::INFO);
                crate::agent::fetch::answer(&args.config, args.now)
            }
            Err(e) => {
                let _ = e.print();
                Exit::CannotRun
            }
        };
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::CannotRun
            } else {
                Exit::Ok
            };
        }
    };
    init_logging(match cli.command {
        Command::Agent { .. } | Command::Apply { .. } => tracing::Level::INFO,
        _ => tracing::Level::WARN,
    });
    match cli.command {
        Command::Validate {
            repo,
            format,
            partner,
            policy,
            engine,
        } => validate(&repo, format, partner.as_deref(), policy.as_deref(), engine),
        Command::Plan {
            mut host,
            format,
            exit_code,
        } => {
            host.state_dir = enter(host.namespace.as_deref(), &host.state_dir);
            host::plan(&host, format, exit_code)
        }
        Command::Apply { mut host, min_free } => {
            host.state_dir = enter(host.namespace.as_deref(), &host.state_dir);
            host::apply(&host, min_free)
        }
        Command::Lock { repo, check } => lock::lock(&repo, check),
        Command::Diff {
            repo,
            base,
            head,
            format,
            exit_code,
        } => diff::diff(&repo, &base, head.as_deref(), format, exit_code),
        Command::Windows {
            repo,
            partner,
            days,
            ics,
            now,
            state_dir,
            policy,
            age_identity,
        } => windows::windows(&windows::WindowsArgs {
            repo,
            partner,
            days,
            ics,
            now,
            state_dir,
            policy,
            age_identity,
        }),
        Command::Agent {
            config,
            once,
            engine,
        } => agent::run(&config, once, engine),
        Command::Status {
            state_dir,
            namespace,
            format,
        } => agent::status(&enter(namespace.as_deref(), &state_dir), format),
        Command::Volumes {
            partner,
            state_dir,
            namespace,
            format,
        } => volumes::volumes(
            partner.as_deref(),
            &enter(namespace.as_deref(), &state_dir),
            format,
        ),
        Command::Fleet {
            status,
            manifests,
            format,
            exit_code,
            now,
        } => fleet::fleet(&fleet::FleetArgs {
            status,
            manifests,
            format,
            exit_code,
            now,
        }),
        Command::Schema { kind } => {
            outln!("{}", schema_json(kind));
            Exit::Ok
        }
    }
}

/// `berth-agentd --config FILE [--engine ENGINE]`, as `berth agent` starts it (see
/// [`crate::agent::daemon::hand_over`]). Its one form is parsed by hand, which keeps clap
/// out of the daemon's binary.
pub fn agentd() -> Exit {
    let mut args = std::env::args_os().skip(1);
    let (flag, path) = (args.next(), args.next());
    let engine = match (args.next(), args.next(), args.next()) {
        (None, None, None) => Ok(None),
        (Some(f), Some(e), None) if f == "--engine" => e
            .to_str()
            .unwrap_or_default()
            .parse::<crate::container::EngineKind>()
            .map(Some),
        _ => Err(String::new()),
    };
    match (flag, path, engine) {
        (Some(flag), Some(path), Ok(engine)) if flag == "--config" => {
            init_logging(tracing::Level::INFO);
            agent::daemon(Path::new(&path), engine)
        }
        _ => {
            eprintln!(
                "usage: {} --config FILE [--engine docker|swarm] (`berth agent` starts it)",
                crate::agent::daemon::SUPERVISOR
            );
            Exit::CannotRun
        }
    }
}

/// Logs go to stderr: text on a terminal, JSON lines otherwise; `BERTH_LOG` sets the filter
/// (`info`, `warn,berth=debug`: a level, then `target=level` pairs). Commands that change a
/// host log each step and pull at `info` by default, the others only warnings.
fn init_logging(default: tracing::Level) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = std::env::var("BERTH_LOG")
        .ok()
        .and_then(|f| f.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| tracing_subscriber::filter::Targets::new().with_default(default));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    if std::io::stderr().is_terminal() {
        registry.with(fmt).init();
    } else {
        registry.with(fmt.json()).init();
    }
}

/// The pretty-printed JSON Schema of one kind; `schemas/` holds these, checked by a test.
pub fn schema_json(kind: SchemaKind) -> String {
    let schema = match kind {
        SchemaKind::Partner => schemars::schema_for!(manifest::Partner),
        SchemaKind::Script => schemars::schema_for!(manifest::Script),
        SchemaKind::Fleet => schemars::schema_for!(manifest::Fleet),
    };
    serde_json::to_string_pretty(&schema).expect("schemas serialize")
}

fn validate(
    repo: &Path,
    format: ValidateFormat,
    partner: Option<&str>,
    policy: Option<&Path>,
    engine: crate::container::EngineKind,
) -> Exit {
    let diagnostics = match manifest::validate(repo) {
        Ok((loaded, mut d)) => {
            if let Some(partner) = partner {
                d.extend(partner_refusals(&loaded, partner, policy, engine));
            }
            d.finish()
        }
        Err(e) => return cannot_run(&e),
    };
    match format {
        ValidateFormat::Text => {
            out!("{}", diagnostics.render_text(repo));
            let (errors, warnings) = (
                diagnostics.count(crate::diag::Severity::Error),
                diagnostics.count(crate::diag::Severity::Warning),
            );
            if errors == 0 {
                outln!("{}: valid ({warnings} warning(s))", repo.display());
            } else {
                outln!(
                    "{}: {errors} error(s), {warnings} warning(s)",
                    repo.display()
                );
            }
        }
        ValidateFormat::Json => outln!("{:#}", diagnostics.render_json()),
        ValidateFormat::Github => {
            let prefix = match repo.to_string_lossy().trim_start_matches("./") {
                "." | "" => String::new(),
                p => p.to_owned(),
            };
            out!("{}", diagnostics.render_github(&prefix));
        }
    }
    if diagnostics.has_errors() {
        Exit::Wrong
    } else {
        Exit::Ok
    }
}

/// What berth's floor (as it stands on a host with Docker's defaults) and the partner's
/// policy refuse of its scripts, at the manifests' lines.
fn partner_refusals(
    repo: &manifest::Repo,
    partner: &str,
    policy: Option<&Path>,
    engine: crate::container::EngineKind,
) -> crate::diag::Diagnostics {
    use crate::diag::{Diagnostic, Diagnostics, Severity};
    let mut out = Diagnostics::default();
    let Some(doc) = repo.partners.get(partner) else {
        out.push(Diagnostic::at(
            Severity::Error,
            "partners",
            None,
            format!("no partner `{partner}` in the manifests"),
        ));
        return out;
    };
    let host = match policy.map(crate::policy::load).transpose() {
        Ok(h) => h,
        Err(diags) => return diags,
    };
    let rules = crate::policy::Rules {
        floor: crate::floor::Floor::typical(),
        host,
        engine,
    };
    for (script, r) in crate::resolve::refusals(repo, &doc.doc, &rules) {
        out.push(Diagnostic::error(
            r.value_at.path.clone(),
            r.value_at.pos,
            format!("{partner}/{script} would be refused: {}", r.message()),
        ));
    }
    out
}

/// Prints an error with its cause chain and gives the "could not run" exit code.
fn cannot_run(e: &dyn std::error::Error) -> Exit {
    eprintln!("berth: {}", chain(e));
    Exit::CannotRun
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::CommandFactory as _;

    use super::*;

    /// Every file in a directory, by name.
    fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name, std::fs::read(e.path()).unwrap_or_default())
            })
            .collect()
    }

    /// The man pages (`man/`) and shell completions (`completions/`) a package installs are
    /// generated from the command line's definitions, so they cannot drift from it:
    /// `BERTH_BLESS=1 cargo test --lib cli::tests` writes them afresh. The version in the
    /// pages is the crate's, without the commit, so a commit alone changes none of them.
    #[test]
    fn man_pages_and_completions_match_the_command_line() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let command = || Cli::command().version(env!("CARGO_PKG_VERSION"));
        let pages = tempfile::tempdir().unwrap();
        clap_mangen::generate_to(command(), pages.path()).unwrap();
        let completions = tempfile::tempdir().unwrap();
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            clap_complete::generate_to(shell, &mut command(), "berth", completions.path()).unwrap();
        }
        for (generated, kept) in [(pages.path(), "man"), (completions.path(), "completions")] {
            let (want, have) = (files(generated), files(&root.join(kept)));
            if std::env::var_os("BERTH_BLESS").is_some() {
                let _ = std::fs::remove_dir_all(root.join(kept));
                std::fs::create_dir_all(root.join(kept)).unwrap();
                for (name, bytes) in &want {
                    std::fs::write(root.join(kept).join(name), bytes).unwrap();
                }
                continue;
            }
            let stale: Vec<&String> = want
                .keys()
                .chain(have.keys())
                .filter(|n| want.get(*n) != have.get(*n))
                .collect();
            assert!(
                stale.is_empty(),
                "{kept}/ is out of date with the command line ({stale:?}); regenerate it with\n  \
                 BERTH_BLESS=1 cargo test --lib cli::tests"
            );
        }
        assert!(
            files(&root.join("man")).contains_key("berth-plan.1"),
            "a page per command"
        );
    }
}
