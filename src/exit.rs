//! How a run ends: the exit codes every command shares, and the one way an error is
//! rendered (with its whole cause chain). A leaf: every layer may report through it, and it
//! imports nothing of berth's.

/// The exit codes of every command. A run that did several things exits with the most
/// serious code any of them earned ([`Exit::worst`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Exit {
    /// Done; for `apply`, also when every pending step was deferred.
    Ok,
    /// Changes are pending (`plan --exit-code`, `diff --exit-code`).
    Pending,
    /// The thing checked is wrong: invalid manifests, a failed or rolled-back step, a stale
    /// lock, a refused commit.
    Wrong,
    /// The command could not run: usage, I/O, engine or registry unreachable.
    CannotRun,
}

impl Exit {
    /// The number the process exits with.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Wrong => 1,
            Exit::Pending => 2,
            Exit::CannotRun => 3,
        }
    }

    /// The outcome a process's exit code reports, as another berth process's answer
    /// carries it; a code no command gives counts as could not run.
    pub fn from_code(code: u8) -> Exit {
        match code {
            0 => Exit::Ok,
            1 => Exit::Wrong,
            2 => Exit::Pending,
            _ => Exit::CannotRun,
        }
    }

    /// The more serious of two outcomes: could not run, then wrong, then pending, then ok.
    pub fn worst(self, other: Exit) -> Exit {
        self.max(other)
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// `outer: cause: root cause`, the form every error takes when shown to a person.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_reads_back_as_its_outcome_and_an_unknown_one_could_not_run() {
        for e in [Exit::Ok, Exit::Pending, Exit::Wrong, Exit::CannotRun] {
            assert_eq!(Exit::from_code(e.code()), e);
        }
        assert_eq!(Exit::from_code(101), Exit::CannotRun);
    }

    #[test]
    fn the_worst_outcome_wins_in_any_order() {
        // From least to most serious.
        let all = [Exit::Ok, Exit::Pending, Exit::Wrong, Exit::CannotRun];
        for (i, a) in all.iter().enumerate() {
            for (j, b) in all.iter().enumerate() {
                assert_eq!(a.worst(*b), all[i.max(j)]);
            }
        }
    }

    #[test]
    fn chain_names_every_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("root"));
        assert_eq!(chain(&e), "outer: root");
    }
}
