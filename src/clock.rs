//! The time, behind a trait so the gates can be asked again "now" during a pass and tests
//! can say what now is. `--now` shifts the clock rather than stopping it: a pass that starts
//! at the given instant still sees time pass while it works, in whole seconds, so a plan
//! made at once reads exactly the instant given.

use std::time::Instant;

use jiff::{SignedDuration, Timestamp};

pub trait Clock {
    fn now(&self) -> Timestamp;
}

/// The host's clock, optionally shifted so that it read `start` when it was made.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    shift: Option<(Timestamp, Instant)>,
}

impl SystemClock {
    pub fn real() -> Self {
        SystemClock { shift: None }
    }

    /// A clock that reads `start` now and runs on from there, a second at a time.
    pub fn starting_at(start: Timestamp) -> Self {
        SystemClock {
            shift: Some((start, Instant::now())),
        }
    }

    /// `starting_at` when an instant is given, else the real clock.
    pub fn from_option(start: Option<Timestamp>) -> Self {
        start.map_or_else(Self::real, Self::starting_at)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        match self.shift {
            None => Timestamp::now(),
            Some((start, at)) => {
                let elapsed = SignedDuration::from_secs(
                    i64::try_from(at.elapsed().as_secs()).unwrap_or(i64::MAX),
                );
                start.saturating_add(elapsed).unwrap_or(start)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_clock_starts_at_the_instant_and_runs_on() {
        let start: Timestamp = "2026-11-21T02:00:00Z".parse().unwrap();
        let clock = SystemClock::starting_at(start);
        assert_eq!(
            clock.now(),
            start,
            "a plan made at once reads the instant given"
        );
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let later = clock.now();
        assert!(later >= start + SignedDuration::from_secs(1), "{later}");
        assert_eq!(later.subsec_nanosecond(), 0, "whole seconds");
    }
}
