//! A private Docker engine for the tests that must break an engine: its own `dockerd`
//! with its own data root, exec root, socket and network namespace (entered with
//! `nsenter`, which keeps the host's cgroup mounts), so killing it never touches the
//! machine's engine. Its containers live in that namespace's loopback: berth runs there
//! too ([`PrivateEngine::berth`]), as it would on the partner's host. Its data root may be
//! a small tmpfs ([`PrivateEngine::with_data_root_of`]), for the disk guard, and a registry
//! may serve inside its namespace ([`PrivateEngine::serve_registry`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::command::{Berth, Run};
use super::run;

pub struct PrivateEngine {
    dir: tempfile::TempDir,
    ns: String,
    dockerd: std::sync::Mutex<Option<std::process::Child>>,
    hostname: Option<String>,
}

impl PrivateEngine {
    /// Starts the engine and waits until it answers.
    pub fn start(tag: &str) -> PrivateEngine {
        Self::start_with(tag, None, None)
    }

    /// Starts the engine under a host name of its own (in a UTS namespace of its own), as
    /// a swarm node reports it: the nodes of one machine would all share its name.
    pub fn named(tag: &str, hostname: &str) -> PrivateEngine {
        Self::start_with(tag, None, Some(hostname.to_owned()))
    }

    /// Starts the engine on a data root of its own: a tmpfs of `mib` MiB, mounted here and
    /// unmounted when dropped, so a test can fill it or measure it.
    pub fn with_data_root_of(tag: &str, mib: u32) -> PrivateEngine {
        Self::start_with(tag, Some(mib), None)
    }

    fn start_with(
        tag: &str,
        data_root_mib: Option<u32>,
        hostname: Option<String>,
    ) -> PrivateEngine {
        assert!(
            Path::new("/usr/sbin/dockerd").exists() && Path::new("/usr/sbin/ip").exists(),
            "a private engine needs dockerd and iproute2 (script/test installs them)"
        );
        let ns = format!("berth-{tag}-{}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &ns])).assert_exit(0);
        run(Command::new("ip").args(["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]))
            .assert_exit(0);
        let engine = PrivateEngine {
            dir: tempfile::tempdir().expect("temp dir"),
            ns,
            dockerd: std::sync::Mutex::new(None),
            hostname,
        };
        std::fs::write(engine.dir.path().join("daemon.json"), "{}").unwrap();
        if let Some(mib) = data_root_mib {
            std::fs::create_dir(engine.data_root()).unwrap();
            run(Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0711")])
                .arg("berth-test-data-root")
                .arg(engine.data_root()))
            .assert_exit(0);
        }
        engine.up();
        engine
    }

    /// Where the engine keeps images and containers.
    pub fn data_root(&self) -> PathBuf {
        self.path("data")
    }

    /// Bytes free on the data root, as an unprivileged writer may use them.
    pub fn free_bytes(&self) -> u64 {
        let stat = rustix::fs::statvfs(self.data_root()).expect("statvfs of the data root");
        stat.f_bavail * stat.f_frsize
    }

    /// GET `path` on port `port` of the namespace's loopback, from inside it: the status
    /// and body, or None when nothing answers.
    pub fn get(&self, port: u16, path: &str) -> Option<(u16, String)> {
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET {path} HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3 && timeout 5 cat <&3"
        );
        let out = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.ns))
            .args(["bash", "-c", &script])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    }

    /// Debian's `docker-registry` inside the namespace, serving what another registry
    /// stored in `storage` (pushed from the machine's engine, which cannot reach here).
    pub fn serve_registry(&self, storage: &Path) -> NsRegistry {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = super::free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            ),
        )
        .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.ns))
            .arg("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        let registry = NsRegistry {
            child,
            port,
            _dir: dir,
        };
        let end = Instant::now() + Duration::from_secs(15);
        while self.get(port, "/v2/").is_none_or(|(s, _)| s != 200) {
            assert!(
                Instant::now() < end,
                "docker-registry did not come up in the namespace on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The engine's network namespace, for a harness that wires links into it.
    pub fn netns(&self) -> &str {
        &self.ns
    }

    /// `unix://…`, for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.path("sock").display())
    }

    /// Starts `dockerd` (again, after [`Self::kill`]) on the same data root.
    pub fn up(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("log"))
            .unwrap();
        let mut command = Command::new("nsenter");
        command.arg(format!("--net=/var/run/netns/{}", self.ns));
        if let Some(name) = &self.hostname {
            // Each program execs the next, so the child is dockerd itself.
            command.args([
                "unshare",
                "--uts",
                "sh",
                "-c",
                "hostname \"$0\" && exec \"$@\"",
                name,
            ]);
        }
        let child = command
            .arg("dockerd")
            .arg("--config-file")
            .arg(self.path("daemon.json"))
            .arg("--data-root")
            .arg(self.path("data"))
            .arg("--exec-root")
            .arg(self.path("exec"))
            .arg("--pidfile")
            .arg(self.path("pid"))
            .arg("-H")
            .arg(self.host())
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--storage-driver=vfs",
            ])
            .arg(format!("--cgroup-parent={}", self.ns))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd starts");
        *self.dockerd.lock().unwrap() = Some(child);
        let end = Instant::now() + Duration::from_secs(30);
        while !self.answers() {
            assert!(
                Instant::now() < end,
                "the private dockerd did not come up: {}",
                std::fs::read_to_string(self.path("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn answers(&self) -> bool {
        self.docker(&["version", "--format", "{{.Server.Version}}"])
            .code()
            == Some(0)
    }

    /// `docker …` against this engine.
    pub fn docker(&self, args: &[&str]) -> Run {
        run(Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", self.host()))
    }

    /// Copies an image from the machine's engine into this one.
    pub fn load(&self, image: &str) {
        run(Command::new("sh").arg("-c").arg(format!(
            "docker save {image} | DOCKER_HOST={} docker load -q",
            self.host()
        )))
        .assert_exit(0);
    }

    /// The engine dies: `dockerd` and its containerd are killed at once (the containers'
    /// shims go on, as they do when a host's engine crashes).
    pub fn kill(&self) {
        let mut child = self.dockerd.lock().unwrap().take().expect("dockerd runs");
        let containerd = self.path("exec/containerd/containerd.pid");
        let containerd = std::fs::read_to_string(containerd).unwrap_or_default();
        child.kill().unwrap();
        child.wait().unwrap();
        let containerd = containerd.trim();
        if !containerd.is_empty() {
            let _ = Command::new("kill").args(["-KILL", containerd]).status();
            let end = Instant::now() + Duration::from_secs(10);
            while alive(containerd) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Killed, they leave pid files that would stop them from starting again.
        let _ = std::fs::remove_file(self.path("pid"));
        let _ = std::fs::remove_file(self.path("exec/containerd/containerd.pid"));
    }

    /// `berth <subcommand>` in the engine's network namespace, talking to this engine.
    pub fn berth(&self, subcommand: &str) -> Berth {
        Berth::in_netns(&self.ns, subcommand).env("DOCKER_HOST", self.host())
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        if self.dockerd.lock().unwrap().is_none() {
            self.up();
        }
        let ids = self.docker(&["ps", "-aq"]).stdout().to_owned();
        for id in ids.split_whitespace() {
            self.docker(&["rm", "-f", id]);
        }
        if let Some(mut child) = self.dockerd.lock().unwrap().take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        // dockerd leaves its namespace handle mounted in the exec root.
        let root = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&root))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").arg(m).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        remove_cgroups(&self.ns);
    }
}

/// Removes the (by now empty) cgroups `dockerd --cgroup-parent` made for the engine's
/// containers, under each cgroup v1 controller or the v2 root, deepest first.
fn remove_cgroups(parent: &str) {
    fn dirs_under(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs_under(&entry.path(), found);
            }
        }
        found.push(dir.to_path_buf());
    }
    let root = Path::new("/sys/fs/cgroup");
    let controllers = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    for top in std::iter::once(root.to_path_buf()).chain(controllers) {
        let ours = top.join(parent);
        if ours.is_dir() {
            let mut found = Vec::new();
            dirs_under(&ours, &mut found);
            for dir in found {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// Whether a process runs (a zombie does not).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

/// A registry serving inside a private engine's namespace; stopped when dropped.
pub struct NsRegistry {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl NsRegistry {
    /// `127.0.0.1:port`, as berth and the engine in the namespace reach it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for NsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
