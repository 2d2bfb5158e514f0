//! The command line: argument parsing, output formats and exit codes (design.md §7).
//! Errors are rendered here, once, with their whole cause chain.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::manifest;

/// Exit codes of design.md §7.
pub mod exit {
    pub const OK: i32 = 0;
    /// The thing checked is wrong.
    pub const WRONG: i32 = 1;
    /// Changes are pending.
    pub const PENDING: i32 = 2;
    /// The command could not run.
    pub const CANNOT_RUN: i32 = 3;
}

#[derive(Parser)]
#[command(
    name = "berth",
    version,
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
    },
    /// Print the JSON Schema of a manifest kind, for editors.
    Schema {
        #[arg(value_enum)]
        kind: SchemaKind,
    },
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

/// Parses the arguments, runs the command and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::CANNOT_RUN
            } else {
                exit::OK
            };
        }
    };
    match cli.command {
        Command::Validate { repo, format } => validate(&repo, format),
        Command::Schema { kind } => {
            println!("{}", schema_json(kind));
            exit::OK
        }
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

fn validate(repo: &Path, format: ValidateFormat) -> i32 {
    let diagnostics = match manifest::validate(repo) {
        Ok((_, d)) => d,
        Err(e) => return cannot_run(&e),
    };
    match format {
        ValidateFormat::Text => {
            print!("{}", diagnostics.render_text(repo));
            let (errors, warnings) = (
                diagnostics.count(crate::diag::Severity::Error),
                diagnostics.count(crate::diag::Severity::Warning),
            );
            if errors == 0 {
                println!("{}: valid ({warnings} warning(s))", repo.display());
            } else {
                println!(
                    "{}: {errors} error(s), {warnings} warning(s)",
                    repo.display()
                );
            }
        }
        ValidateFormat::Json => println!("{:#}", diagnostics.render_json()),
        ValidateFormat::Github => {
            let prefix = match repo.to_string_lossy().trim_start_matches("./") {
                "." | "" => String::new(),
                p => p.to_owned(),
            };
            print!("{}", diagnostics.render_github(&prefix));
        }
    }
    if diagnostics.has_errors() {
        exit::WRONG
    } else {
        exit::OK
    }
}

/// Prints an error with its cause chain and gives the "could not run" exit code.
fn cannot_run(e: &dyn std::error::Error) -> i32 {
    eprintln!("berth: {}", chain(e));
    exit::CANNOT_RUN
}

/// `outer: cause: root cause`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
