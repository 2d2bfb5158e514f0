//! The shared test harness: the real Docker engine, test images built once, throwaway
//! manifest repos, a guard that removes every container a test's partner owns, the one way
//! tests run `berth`, and the filters that keep snapshots of its output stable.

mod command;
pub mod dockerd;
pub mod moto;
#[path = "../../../benches/support/proxy.rs"]
pub mod proxy;
pub mod registry;
pub mod slow;
mod snapshot;
pub mod sshd;
pub mod swarm;

pub use command::{BIN, Berth, Run, run};
pub(crate) use snapshot::{assert_stable_snapshot, filters};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The repository test images are built into.
pub const IMAGE_REPO: &str = "berth-test/partner-service";
/// A version whose `/health` answers 503.
pub const UNHEALTHY: &str = "9.0.0";

/// Fails loudly when there is no engine: a test suite that silently skipped would lie.
pub fn require_docker() {
    static CHECK: OnceLock<()> = OnceLock::new();
    CHECK.get_or_init(|| {
        let ok = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "no Docker engine: these tests need one (script/test starts dockerd when it can)"
        );
    });
}

/// Builds the test images once per test binary (the script skips unchanged images).
pub fn images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        require_docker();
        let out = Command::new(root().join("script/build-images"))
            .args([
                "--repo",
                IMAGE_REPO,
                "--health-fail",
                UNHEALTHY,
                "1.0.0",
                "1.1.0",
                "2.0.0",
            ])
            .output()
            .expect("script/build-images runs");
        assert!(
            out.status.success(),
            "building test images failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// The repository the Redis test images are built into (`script/build-redis-image`): the same
/// Debian Redis under two tags that differ only by `ENV REDIS_TEST_VERSION`, so a test can
/// update the cache component itself.
pub const REDIS_REPO: &str = "berth-test/redis";
/// The Redis test image tags, oldest first.
pub const REDIS_VERSIONS: [&str; 2] = ["7.0.0", "7.1.0"];

/// Builds the Redis test images once per test binary (the script skips unchanged images).
/// Fails loudly when Debian's `redis-server`/`redis-tools` are missing (script/test
/// installs them): a multi-component test must not be skipped for want of a cache.
pub fn redis_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        require_docker();
        let out = Command::new(root().join("script/build-redis-image"))
            .arg("--repo")
            .arg(REDIS_REPO)
            .args(REDIS_VERSIONS)
            .output()
            .expect("script/build-redis-image runs");
        assert!(
            out.status.success(),
            "building the Redis test images failed (script/test installs Debian's redis-server \
             and redis-tools, which they are made from):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A loopback port nobody listens on right now, and never handed out before in this run
/// (the kernel may offer a released port again while its first owner is still starting).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().expect("port registry");
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A partner name unique to this test run, so tests never see each other's containers.
pub fn unique_partner(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        tag
    )
}

pub fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args))
        .stdout()
        .trim()
        .to_owned()
}

/// `docker inspect -f FORMAT name`; empty when there is no such container.
pub fn inspect(name: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, name])
}

/// Names of all containers (running or not) carrying a label value.
pub fn containers_with(label: &str) -> Vec<String> {
    let mut names: Vec<String> = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={label}"),
        "--format",
        "{{.Names}}",
    ])
    .lines()
    .map(str::to_owned)
    .collect();
    names.sort();
    names
}

/// GET a loopback URL with a short timeout: (status, body), or None if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// PUT a body to a loopback URL: the status, or None if nothing answers.
pub fn http_put(port: u16, path: &str, body: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    raw.split(' ').nth(1)?.parse().ok()
}

/// Waits until a port answers, for up to `limit`.
pub fn wait_for(port: u16, path: &str, limit: Duration) -> Option<(u16, String)> {
    let end = Instant::now() + limit;
    loop {
        if let Some(a) = http_get(port, path) {
            return Some(a);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A manifest repo for one partner running the test service, in a temp dir, plus the
/// partner's state dir; removes the partner's containers when dropped.
pub struct Host {
    pub dir: tempfile::TempDir,
    pub partner: String,
    pub port: u16,
}

/// Knobs of the generated manifests.
#[derive(Clone)]
pub struct Setup {
    /// The partner's `versions:`; `^1` by default, which keeps clear of the unhealthy 9.0.0.
    pub versions: Option<String>,
    pub env: Vec<(String, String)>,
    /// Windows YAML block (already indented under `windows:`), or None for always open.
    pub windows: Option<String>,
    pub idle: bool,
    /// Whether the partner opts into the script at all.
    pub opted_in: bool,
    pub health_timeout: &'static str,
    /// The script's `image:` block (indented); the local test images by default.
    pub image: Option<String>,
    /// The script's `prerelease:`.
    pub prerelease: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            versions: Some("^1".into()),
            env: Vec::new(),
            windows: None,
            idle: true,
            opted_in: true,
            health_timeout: "10s",
            image: None,
            prerelease: false,
        }
    }
}

impl Host {
    pub fn new(tag: &str) -> Host {
        images();
        let host = Host {
            dir: tempfile::tempdir().expect("temp dir"),
            partner: unique_partner(tag),
            port: free_port(),
        };
        std::fs::create_dir_all(host.repo().join("partners")).unwrap();
        std::fs::create_dir_all(host.repo().join("scripts")).unwrap();
        host
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// Turns the manifest dir into a git repo on `main` with one more commit; returns it.
    pub fn commit_all(&self, message: &str) -> String {
        let repo = self.repo();
        if !repo.join(".git").exists() {
            git(&repo, &["init", "-q", "-b", "main"]);
        }
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "--allow-empty", "-m", message]);
        git(&repo, &["rev-parse", "HEAD"])
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The managed container's name.
    pub fn name(&self) -> String {
        format!("berth-{}-svc", self.partner)
    }

    /// Writes the partner and script manifests.
    pub fn write(&self, s: &Setup) {
        let windows = s.windows.clone().unwrap_or_else(|| {
            "  - days: [mon, tue, wed, thu, fri, sat, sun]\n    start: \"00:00\"\n    end: \"24:00\"\n".into()
        });
        let idle = if s.idle {
            format!(
                "idle:\n  url: http://127.0.0.1:{}/status\n  pointer: /state\n  equals: idle\n  timeout: 1s\n",
                self.port
            )
        } else {
            String::new()
        };
        let mut opt = String::from("  - script: svc\n");
        if let Some(v) = &s.versions {
            opt.push_str(&format!("    versions: \"{v}\"\n"));
        }
        if !s.env.is_empty() {
            opt.push_str("    env:\n");
            for (k, v) in &s.env {
                opt.push_str(&format!("      {k}: \"{v}\"\n"));
            }
        }
        let scripts = if s.opted_in {
            format!("scripts:\n{opt}")
        } else {
            "scripts: []\n".into()
        };
        let partner = format!(
            "apiVersion: berth/v1\nkind: Partner\nname: {p}\ntimezone: UTC\nwindows:\n{windows}{idle}{scripts}",
            p = self.partner
        );
        let image = s
            .image
            .clone()
            .unwrap_or_else(|| format!("  source: local\n  repository: {IMAGE_REPO}\n"));
        let script = format!(
            "apiVersion: berth/v1\nkind: Script\nname: svc\nimage:\n{image}\
             versions: \"*\"\nprerelease: {pre}\ncontainer:\n  env: {{ PORT: \"{port}\" }}\n  network: host\n  stop_timeout: 5s\n\
             health:\n  http: http://127.0.0.1:{port}/health\n  timeout: {timeout}\n",
            port = self.port,
            pre = s.prerelease,
            timeout = s.health_timeout
        );
        std::fs::write(
            self.repo().join(format!("partners/{}.yaml", self.partner)),
            partner,
        )
        .unwrap();
        std::fs::write(self.repo().join("scripts/svc.yaml"), script).unwrap();
    }

    /// Adds a script `name` running the test image at `^1`, with these lines after
    /// `versions:` (its `container:` block, say), and opts the partner into it; returns its
    /// container's name.
    pub fn add_script(&self, name: &str, body: &str) -> String {
        std::fs::write(
            self.repo().join(format!("scripts/{name}.yaml")),
            format!(
                "apiVersion: berth/v1\nkind: Script\nname: {name}\nimage:\n  source: local\n  repository: {IMAGE_REPO}\n\
                 versions: \"^1\"\n{body}"
            ),
        )
        .unwrap();
        let partner = self.repo().join(format!("partners/{}.yaml", self.partner));
        let text = std::fs::read_to_string(&partner).unwrap();
        std::fs::write(&partner, format!("{text}  - script: {name}\n")).unwrap();
        format!("berth-{}-{name}", self.partner)
    }

    /// Writes `agent.yaml` for this host's partner and state dir (interval 1h), with the
    /// given `repo:` lines and any other lines; returns its path.
    pub fn agent_config(&self, repo_lines: &str, extra: &str) -> PathBuf {
        let path = self.dir.path().join("agent.yaml");
        std::fs::write(
            &path,
            format!(
                "partner: {}\nrepo:\n{repo_lines}interval: 1h\nstate_dir: {}\n{extra}",
                self.partner,
                self.state_dir().display()
            ),
        )
        .unwrap();
        path
    }

    /// `berth <cmd> REPO --partner P --state-dir S`, to add to and run.
    pub fn command(&self, cmd: &str) -> Berth {
        Berth::new(cmd)
            .arg(self.repo())
            .args(["--partner", &self.partner])
            .arg("--state-dir")
            .arg(self.state_dir())
    }

    /// `berth <cmd> REPO --partner P --state-dir S extra...`
    pub fn berth(&self, cmd: &str, extra: &[&str]) -> Run {
        self.command(cmd).args(extra).run()
    }

    pub fn berth_env(&self, cmd: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
        self.command(cmd)
            .args(extra)
            .envs(env.iter().copied())
            .run()
    }

    /// All containers of this partner (managed or not), sorted by name.
    pub fn containers(&self) -> Vec<String> {
        containers_with(&format!("berth.partner={}", self.partner))
    }

    pub fn version_label(&self) -> String {
        inspect(&self.name(), "{{index .Config.Labels \"berth.version\"}}")
    }

    pub fn id(&self) -> String {
        inspect(&self.name(), "{{.Id}}")
    }

    pub fn running(&self) -> bool {
        inspect(&self.name(), "{{.State.Running}}") == "true"
    }

    /// The version the service itself answers on /version.
    pub fn served_version(&self) -> Option<String> {
        wait_for(self.port, "/version", Duration::from_secs(5)).map(|(_, b)| b)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        remove_partner_containers(&self.partner);
        remove_partner_networks_and_volumes(&self.partner);
    }
}

/// Removes the networks and named volumes berth made for a test partner (berth itself
/// never deletes a volume).
pub fn remove_partner_networks_and_volumes(partner: &str) {
    let filter = format!("label=berth.partner={partner}");
    for kind in ["network", "volume"] {
        let found = docker(&[kind, "ls", "-q", "--filter", &filter]);
        let found: Vec<&str> = found.lines().collect();
        if !found.is_empty() {
            let mut args = vec![kind, "rm"];
            args.extend(found);
            docker(&args);
        }
    }
}

/// Removes every container of a test partner, managed or not.
pub fn remove_partner_containers(partner: &str) {
    let ids = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=berth.partner={partner}"),
    ]);
    let ids: Vec<&str> = ids.lines().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        docker(&args);
    }
}

/// Runs git in `dir` as a fleet engineer would, isolated from the user's configuration;
/// returns its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = run(Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Fleet",
            "-c",
            "user.email=fleet@example.org",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1"));
    out.assert_exit(0);
    out.stdout().trim().to_owned()
}

pub fn image_id(tag: &str) -> String {
    docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}}",
        &format!("{IMAGE_REPO}:{tag}"),
    ])
}
