//! The floor: what no script may do to a partner's host, with or without a host policy.
//! A container that bind-mounts the host's root, the kernel's and devices' filesystems, the
//! host's runtime directory (its daemons' sockets), the container engine's socket or data
//! (root on the host), a socket or a directory holding one, the system's programs and
//! configuration read-write, or berth's own configuration and state (the git token, the
//! SSH key) is refused. Pure: the paths are resolved before they get here, so `..`,
//! symlinks and a socket under another name are judged by what they are. Env files are
//! judged the same way before they are read.

/// A host path no container may see, and why, in a person's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarded {
    pub path: String,
    pub why: String,
}

/// The paths guarded on this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Floor {
    /// No container may mount these, what is inside them or what holds them.
    pub guarded: Vec<Guarded>,
    /// No env file is read from these or from inside them: berth's state and its own files
    /// (the git token, the SSH key, the policy), wherever they are.
    pub unreadable: Vec<Guarded>,
    /// berth's configuration directories: the files directly in them (`agent.yaml`, the
    /// agent's environment file with its tokens, keys) are never env files; env files live
    /// in a subdirectory such as `/etc/berth/env/`.
    pub config_dirs: Vec<Guarded>,
}

/// The kernel's, the devices' and the boot loader's filesystems, and the runtime directory
/// where the host's daemons keep their sockets: guarded on every host.
pub const SYSTEM: [(&str, &str); 5] = [
    (
        "/proc",
        "the kernel's view of every process, the agent's environment included",
    ),
    ("/sys", "the kernel's settings"),
    ("/dev", "the host's devices"),
    ("/boot", "the host's kernel and boot loader"),
    (
        "/run",
        "the host's runtime state: its daemons' sockets (systemd's and D-Bus's are root on the host)",
    ),
];

/// What a root process in a container could take the host with if it could write there:
/// its configuration, its programs and libraries, root's home, cron's spool. Read-only
/// mounts of them are fine.
const READ_ONLY: [&str; 11] = [
    "/etc",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/opt",
    "/root",
    "/var/spool",
];

/// Host directories whose files are the kernel's or the devices', never a partner's
/// settings: reading them would hand the agent's own environment or a device to a
/// container, or wait forever.
const NOT_ENV_FILES: [&str; 3] = ["/proc", "/sys", "/dev"];

fn inside(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// Where Docker and containerd keep their sockets and data unless told otherwise.
pub const ENGINE_DEFAULTS: [(&str, &str); 5] = [
    ("/run/docker.sock", "the container engine's socket"),
    ("/var/run/docker.sock", "the container engine's socket"),
    ("/run/containerd", "containerd's socket and state"),
    ("/var/lib/docker", "the container engine's data"),
    ("/var/lib/containerd", "containerd's data"),
];

impl Floor {
    /// The floor as it stands on a host with the engines' and berth's default paths: what
    /// `berth validate --partner` judges manifests by away from the host.
    pub fn typical() -> Floor {
        let guard = |(path, why): &(&str, &str)| Guarded {
            path: (*path).into(),
            why: (*why).into(),
        };
        let (config, state) = (
            ("/etc/berth", "berth's own configuration"),
            ("/var/lib/berth", "berth's own state"),
        );
        Floor {
            guarded: SYSTEM
                .iter()
                .chain(&ENGINE_DEFAULTS)
                .chain(&[config, state])
                .map(guard)
                .collect(),
            unreadable: std::iter::once(&state)
                .chain(&ENGINE_DEFAULTS)
                .map(guard)
                .collect(),
            config_dirs: vec![guard(&config)],
        }
    }

    /// Why a bind mount breaks the floor, if it does.
    pub fn refusal(&self, bind: &crate::container::Bind) -> Option<String> {
        let what = if bind.real == bind.source {
            format!("it mounts {}", bind.real)
        } else {
            format!("it mounts {}, which is {}", bind.source, bind.real)
        };
        if bind.real == "/" {
            return Some(format!("{what}: the host's root"));
        }
        // A guarded path is refused, and so is any directory above or inside it; the most
        // telling one is named: the path itself, then the nearest that holds it.
        if let Some(g) = self.guarded.iter().find(|g| bind.real == g.path) {
            return Some(format!("{what}: {}", g.why));
        }
        if let Some(g) = self
            .guarded
            .iter()
            .filter(|g| inside(&bind.real, &g.path))
            .max_by_key(|g| g.path.len())
        {
            return Some(format!("{what}, inside {}: {}", g.path, g.why));
        }
        if let Some(g) = self.guarded.iter().find(|g| inside(&g.path, &bind.real)) {
            return Some(format!("{what}, which holds {}: {}", g.path, g.why));
        }
        if !bind.read_only
            && let Some(dir) = READ_ONLY
                .iter()
                .find(|d| inside(&bind.real, d) || inside(d, &bind.real))
        {
            return Some(format!(
                "{what} read-write: {dir} read-write would let the container change the host's own programs or configuration; mount it `:ro`"
            ));
        }
        if bind.socket {
            return Some(format!(
                "{what}: a socket, or a directory holding one (engines and agents listen on them; the container engine's is root on the host)"
            ));
        }
        None
    }

    /// Why reading an env file breaks the floor, if it does.
    pub fn env_file_refusal(&self, file: &crate::container::EnvFile) -> Option<String> {
        let what = if file.real == file.path {
            "it is".to_owned()
        } else {
            format!("it is {}:", file.real)
        };
        if let Some(dir) = NOT_ENV_FILES.iter().find(|d| inside(&file.real, d)) {
            return Some(format!("{what} under {dir}, which holds no env files"));
        }
        if let crate::container::FileKind::Other(kind) = file.kind {
            return Some(format!("{what} a {kind}, not a regular file"));
        }
        if let Some(g) = self.unreadable.iter().find(|g| inside(&file.real, &g.path)) {
            return Some(format!("{what} {}", g.why));
        }
        let dir = std::path::Path::new(&file.real).parent()?;
        self.config_dirs
            .iter()
            .find(|g| std::path::Path::new(&g.path) == dir)
            .map(|g| {
                format!(
                    "{what} directly in {}, {} (env files belong in a subdirectory, such as {}/env/)",
                    g.path, g.why, g.path
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::Bind;

    fn floor() -> Floor {
        let mut guarded: Vec<Guarded> = SYSTEM
            .iter()
            .map(|(p, why)| Guarded {
                path: (*p).into(),
                why: (*why).into(),
            })
            .collect();
        guarded.push(Guarded {
            path: "/run/docker.sock".into(),
            why: "the container engine's socket".into(),
        });
        guarded.push(Guarded {
            path: "/etc/berth".into(),
            why: "berth's configuration".into(),
        });
        Floor {
            guarded,
            unreadable: vec![
                Guarded {
                    path: "/srv/keys/token".into(),
                    why: "berth's git token".into(),
                },
                Guarded {
                    path: "/var/lib/berth".into(),
                    why: "berth's state".into(),
                },
            ],
            config_dirs: vec![Guarded {
                path: "/etc/berth".into(),
                why: "berth's configuration".into(),
            }],
        }
    }

    fn bind(real: &str, read_only: bool) -> Bind {
        Bind {
            entry: 0,
            source: real.into(),
            real: real.into(),
            read_only,
            socket: false,
        }
    }

    #[test]
    fn guarded_paths_their_parents_and_their_insides_are_refused() {
        let f = floor();
        assert_eq!(
            f.refusal(&bind("/etc", true)).unwrap(),
            "it mounts /etc, which holds /etc/berth: berth's configuration"
        );
        assert_eq!(
            f.refusal(&bind("/run/docker.sock", true)).unwrap(),
            "it mounts /run/docker.sock: the container engine's socket",
            "the path itself is named before the directory holding it"
        );
        assert!(
            f.refusal(&bind("/run/dbus", true))
                .unwrap()
                .starts_with("it mounts /run/dbus, inside /run: the host's runtime state")
        );
        assert_eq!(
            f.refusal(&bind("/proc/1/environ", true)).unwrap(),
            "it mounts /proc/1/environ, inside /proc: the kernel's view of every process, the agent's environment included"
        );
        for refused in [
            "/",
            "/proc",
            "/proc/1/environ",
            "/run",
            "/run/docker.sock",
            "/etc/berth",
            "/etc/berth/agent.env",
            "/dev/sda",
            "/boot",
        ] {
            assert!(f.refusal(&bind(refused, true)).is_some(), "{refused}");
        }
        for allowed in [
            "/srv/gh/data",
            "/etc/ssl/certs",
            "/running",
            "/etcetera",
            "/devices",
            "/usr/share/zoneinfo",
        ] {
            assert_eq!(f.refusal(&bind(allowed, true)), None, "{allowed}");
        }
    }

    #[test]
    fn etc_only_read_only() {
        let f = floor();
        assert_eq!(f.refusal(&bind("/etc/ssl/certs", true)), None);
        assert!(
            f.refusal(&bind("/etc/ssl/certs", false))
                .unwrap()
                .contains("/etc read-write")
        );
        assert!(f.refusal(&bind("/etc", false)).is_some());
        for system in [
            "/usr/local/bin",
            "/root/.ssh",
            "/var/spool/cron",
            "/opt",
            "/lib64",
        ] {
            assert!(
                f.refusal(&bind(system, false))
                    .unwrap()
                    .contains("read-write would let the container change the host's own programs"),
                "{system}"
            );
            assert_eq!(f.refusal(&bind(system, true)), None, "{system} read-only");
        }
        assert!(
            f.refusal(&bind("/var", false)).is_some(),
            "it holds /var/spool"
        );
    }

    #[test]
    fn a_socket_is_refused_whatever_its_name_and_the_resolved_path_is_named() {
        let f = floor();
        let sneaky = Bind {
            entry: 0,
            source: "/srv/app/engine".into(),
            real: "/srv/app/engine".into(),
            read_only: true,
            socket: true,
        };
        assert!(f.refusal(&sneaky).unwrap().contains("a socket"));
        let link = Bind {
            entry: 0,
            source: "/srv/gh/../../run/docker.sock".into(),
            real: "/run/docker.sock".into(),
            read_only: true,
            socket: false,
        };
        let why = f.refusal(&link).unwrap();
        assert_eq!(
            why,
            "it mounts /srv/gh/../../run/docker.sock, which is /run/docker.sock: the container engine's socket"
        );
    }

    #[test]
    fn env_files_never_come_from_the_kernel_devices_or_berths_credentials() {
        use crate::container::{EnvFile, FileKind};
        let f = floor();
        let file = |path: &str, real: &str, kind| EnvFile {
            path: path.into(),
            real: real.into(),
            kind,
        };
        let environ = file("/srv/env", "/proc/self/environ", FileKind::Regular);
        assert!(
            f.env_file_refusal(&environ)
                .unwrap()
                .contains("it is /proc/self/environ: under /proc")
        );
        let fifo = file("/srv/env", "/srv/env", FileKind::Other("FIFO"));
        assert!(f.env_file_refusal(&fifo).unwrap().contains("a FIFO"));
        let token = file("/srv/keys/token", "/srv/keys/token", FileKind::Regular);
        assert!(f.env_file_refusal(&token).unwrap().contains("git token"));
        let state = file(
            "/var/lib/berth/status.json",
            "/var/lib/berth/status.json",
            FileKind::Regular,
        );
        assert!(
            f.env_file_refusal(&state)
                .unwrap()
                .contains("berth's state")
        );
        let agent_env = file(
            "/etc/berth/agent.env",
            "/etc/berth/agent.env",
            FileKind::Regular,
        );
        assert_eq!(
            f.env_file_refusal(&agent_env).unwrap(),
            "it is directly in /etc/berth, berth's configuration (env files belong in a subdirectory, such as /etc/berth/env/)"
        );
        for fine in [
            "/etc/berth/env/app.env",
            "/srv/app.env",
            "/devices.env",
            "/srv/keys/token.env",
        ] {
            assert_eq!(
                f.env_file_refusal(&file(fine, fine, FileKind::Regular)),
                None
            );
        }
    }
}
