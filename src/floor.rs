//! The floor: what no script may do to a partner's host, with or without a host policy.
//! A container that bind-mounts the host's root, the kernel's and devices' filesystems, the
//! container engine's socket or data (root on the host), `/etc` read-write, or berth's own
//! configuration and state (the git token, the SSH key) is refused. Pure: the paths are
//! resolved before they get here, so `..`, symlinks and a socket under another name are
//! judged by what they are.

/// A host path no container may see, and why, in a person's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarded {
    pub path: String,
    pub why: String,
}

/// The paths guarded on this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Floor {
    pub guarded: Vec<Guarded>,
}

/// The kernel's, the devices' and the boot loader's filesystems: guarded on every host.
pub const SYSTEM: [(&str, &str); 4] = [
    (
        "/proc",
        "the kernel's view of every process, the agent's environment included",
    ),
    ("/sys", "the kernel's settings"),
    ("/dev", "the host's devices"),
    ("/boot", "the host's kernel and boot loader"),
];

fn inside(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

impl Floor {
    /// Why a bind mount breaks the floor, if it does.
    pub fn refusal(&self, bind: &crate::container::Bind) -> Option<String> {
        let what = if bind.real == bind.source {
            format!("bind mount of {}", bind.source)
        } else {
            format!("bind mount of {} (which is {})", bind.source, bind.real)
        };
        if bind.real == "/" {
            return Some(format!("{what}: the host's root"));
        }
        // A guarded path is refused, and so is any directory above it or inside it.
        for g in &self.guarded {
            if inside(&bind.real, &g.path) || inside(&g.path, &bind.real) {
                return Some(format!("{what}: {} ({})", g.path, g.why));
            }
        }
        if !bind.read_only && (inside(&bind.real, "/etc") || inside("/etc", &bind.real)) {
            return Some(format!(
                "{what}: /etc read-write (the host's configuration; mount it `:ro`)"
            ));
        }
        if bind.socket {
            return Some(format!(
                "{what}: a socket (engines and agents listen on them; the container engine's is root on the host)"
            ));
        }
        None
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
        Floor { guarded }
    }

    fn bind(real: &str, read_only: bool) -> Bind {
        Bind {
            source: real.into(),
            real: real.into(),
            read_only,
            socket: false,
        }
    }

    #[test]
    fn guarded_paths_their_parents_and_their_insides_are_refused() {
        let f = floor();
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
    }

    #[test]
    fn a_socket_is_refused_whatever_its_name_and_the_resolved_path_is_named() {
        let f = floor();
        let sneaky = Bind {
            source: "/srv/app/engine".into(),
            real: "/srv/app/engine".into(),
            read_only: true,
            socket: true,
        };
        assert!(f.refusal(&sneaky).unwrap().contains("a socket"));
        let link = Bind {
            source: "/srv/gh/../../run/docker.sock".into(),
            real: "/run/docker.sock".into(),
            read_only: true,
            socket: false,
        };
        let why = f.refusal(&link).unwrap();
        assert!(why.contains("(which is /run/docker.sock)"), "{why}");
    }
}
