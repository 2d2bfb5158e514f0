//! `berth-agentd`: the agent daemon in a binary of its own, started by `berth agent` (see
//! `berth::agent::daemon`).

fn main() -> std::process::ExitCode {
    berth::cli::agentd().into()
}
