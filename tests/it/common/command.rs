//! The one way tests run the built `berth` (and the tools around it): a builder for the
//! command line, and what came of it with assertions that show the whole output on failure.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The built `berth` binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_berth");

/// `berth <subcommand> …`, built up and then run or spawned.
pub struct Berth {
    cmd: Command,
}

impl Berth {
    pub fn new(subcommand: &str) -> Berth {
        let mut cmd = Command::new(BIN);
        cmd.arg(subcommand);
        Berth { cmd }
    }

    /// `berth <subcommand>` inside a network namespace of the test's own (see
    /// `common::dockerd`), through `nsenter` so the host's mounts stay as they are.
    pub fn in_netns(ns: &str, subcommand: &str) -> Berth {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{ns}"))
            .arg(BIN)
            .arg(subcommand);
        Berth { cmd }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Berth {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Berth
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Berth {
        self.cmd.env(key, value);
        self
    }

    pub fn envs<I, K, V>(mut self, vars: I) -> Berth
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.cmd.envs(vars);
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Berth {
        self.cmd.env_remove(key);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Berth {
        self.cmd.current_dir(dir);
        self
    }

    /// Runs to the end, capturing stdout and stderr.
    pub fn run(mut self) -> Run {
        run(&mut self.cmd)
    }

    /// Runs to the end (killed after `limit`) while sampling its resident memory: the run
    /// and the highest `VmHWM` seen, in KiB.
    pub fn run_watching_memory(mut self, limit: Duration) -> (Run, u64) {
        use std::io::Read as _;
        let shown = format!("{:?}", self.cmd);
        let started = Instant::now();
        let mut child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("berth starts");
        let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        };
        let out = drain(Box::new(child.stdout.take().unwrap()));
        let err = drain(Box::new(child.stderr.take().unwrap()));
        let status_path = format!("/proc/{}/status", child.id());
        let mut peak = 0u64;
        let status = loop {
            if let Ok(text) = std::fs::read_to_string(&status_path)
                && let Some(kb) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb);
            }
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let run = Run {
            status,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
            elapsed: started.elapsed(),
            shown,
        };
        (run, peak)
    }

    /// The command as built, for a caller that wires its output itself.
    pub fn command(self) -> Command {
        self.cmd
    }

    /// Starts it in the background with its output discarded (a daemon, or a run to kill).
    pub fn spawn(mut self) -> Child {
        self.cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("berth starts")
    }
}

/// Runs any command to the end; panics only if it cannot start.
pub fn run(cmd: &mut Command) -> Run {
    let shown = format!("{cmd:?}");
    let started = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{shown} does not start: {e}"));
    let elapsed = started.elapsed();
    let utf8 = |bytes: Vec<u8>, stream: &str| {
        String::from_utf8(bytes).unwrap_or_else(|e| panic!("{shown}: {stream} is not UTF-8: {e}"))
    };
    Run {
        status: out.status,
        stdout: utf8(out.stdout, "stdout"),
        stderr: utf8(out.stderr, "stderr"),
        elapsed,
        shown,
    }
}

/// A finished command: how it exited, what it printed, how long it took.
pub struct Run {
    shown: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    /// The exit code; None when a signal ended it.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout(&self) -> &str {
        &self.stdout
    }

    pub fn stderr(&self) -> &str {
        &self.stderr
    }

    /// stdout and stderr together, for assertions and failure messages.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Asserts the exit code, showing the command and its output when it differs.
    #[track_caller]
    pub fn assert_exit(&self, code: i32) -> &Run {
        assert_eq!(
            self.code(),
            Some(code),
            "unexpected exit of {}; output:\n{}",
            self.shown,
            self.text()
        );
        self
    }

    /// stdout as JSON, failing with the whole output when it is not.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "{} printed no JSON ({e}); output:\n{}",
                self.shown,
                self.text()
            )
        })
    }
}
