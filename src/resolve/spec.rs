//! A partner's container spec for a script: the script's settings, the partner's env on
//! top, then the host's env files the floor and the policy allow; where each value was
//! written; and when the new container counts as healthy.

use std::collections::BTreeMap;
use std::time::Duration;

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{HealthCheck, ResolveError};
use crate::container::{
    Bind, ContainerSpec, EnvFile, FileKind, Network, SecretMount, Volume, host_bind,
};
use crate::diag::{Loc, Pos};
use crate::image::Source;
use crate::manifest::{Doc, OptIn, Part, Repo, Script, syntax};
use crate::policy::{Origin, Rules};
use crate::secret::{Keyring, Plaintext, Redact, Unsealed};

/// When a new container counts as healthy.
pub fn health(part: &Part<'_>) -> HealthCheck {
    HealthCheck {
        http: part
            .health
            .and_then(|h| h.http.as_ref())
            .map(|u| u.value.clone()),
        timeout: part
            .health
            .and_then(|h| h.timeout.as_ref())
            .and_then(|t| syntax::parse_duration(t).ok())
            .unwrap_or(Duration::from_secs(60)),
    }
}

/// How long a job may run before it counts as failed: its `timeout`, else 10 minutes.
pub fn job_timeout(part: &Part<'_>) -> Duration {
    part.timeout
        .and_then(|t| syntax::parse_duration(t).ok())
        .unwrap_or(Duration::from_secs(600))
}

/// The volume name of a `volumes` entry that mounts a named volume (`name:/path[:mode]`).
pub fn named_volume(entry: &str) -> Option<&str> {
    let source = entry.split(':').next()?;
    (!source.is_empty() && !source.starts_with('/') && entry.contains(':')).then_some(source)
}

/// Whether to open the partner's sealed secrets into the spec.
#[derive(Debug, Clone, Copy)]
pub enum Secrets<'a> {
    /// On the host: decrypted with its identities; their keyed hashes count, so a rotated
    /// secret rolls the container.
    Open {
        root: &'a Path,
        partner: &'a str,
        keys: Option<&'a Keyring>,
    },
    /// Away from the host (CI's `berth diff`): only their names count.
    NamesOnly,
}

impl Secrets<'_> {
    /// A secret's plaintext and keyed hash; `None` away from the host.
    fn unseal(&self, name: &str) -> Result<Option<(Plaintext, String)>, ResolveError> {
        let Secrets::Open {
            root,
            partner,
            keys,
        } = *self
        else {
            return Ok(None);
        };
        let plain = crate::secret::open(root, partner, name, keys)?;
        let hash = keys.map(|k| k.hash(name, &plain)).unwrap_or_default();
        Ok(Some((plain, hash)))
    }
}

/// Manifest env values at least this long are redacted from error text too. They are public
/// in the repo, but one this long may be a credential under a name that does not look like
/// a secret; shorter ones (`info`, `KE`, `1`) would only make messages unreadable.
const REDACT_MANIFEST_VALUES_FROM: usize = 8;

/// The container spec: the script's settings, the partner's env on top, the partner's env
/// secrets over both, and its secret files. The host's env files are named but not read:
/// [`read_env_files`] adds them once the floor and the policy allow each one; away from the
/// host (CI's `berth diff`) only their paths count.
///
/// A component also joins its script's network under its own name (unless it chose
/// `network:`), mounts the script's named volumes under their host-wide names, and carries
/// its `health.exec` as the engine's healthcheck.
pub fn container_spec(
    partner: &str,
    script: &Script,
    part: &Part<'_>,
    opt: &OptIn,
    secrets: Secrets<'_>,
) -> Result<ContainerSpec, ResolveError> {
    let c = part.container;
    let component = part.component;
    let mut env: BTreeMap<String, String> = c
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    env.extend(opt.env.iter().map(|(k, v)| (k.clone(), v.value.clone())));
    let mut redact = Redact::new(
        env.values()
            .filter(|v| v.len() >= REDACT_MANIFEST_VALUES_FROM)
            .cloned(),
    );
    let mut unsealed = Unsealed::default();
    let mut hashes = BTreeMap::new();
    for name in &opt.env_secrets {
        let Some((plain, hash)) = secrets.unseal(name)? else {
            hashes.insert(name.value.clone(), String::new());
            continue;
        };
        hashes.insert(name.value.clone(), hash);
        let text =
            std::str::from_utf8(plain.as_bytes()).map_err(|_| ResolveError::SecretRefused {
                name: name.value.clone(),
                why: "an env secret must be UTF-8 text".into(),
            })?;
        for (key, value) in parse_env_file(text) {
            env.remove(&key);
            let value = Zeroizing::new(value);
            redact.extend([value.to_string()]);
            unsealed.env.insert(key, value);
        }
    }
    for f in &opt.secret_files {
        let Some((plain, hash)) = secrets.unseal(&f.secret)? else {
            hashes.insert(f.secret.value.clone(), String::new());
            continue;
        };
        hashes.insert(f.secret.value.clone(), hash);
        let text = String::from_utf8_lossy(plain.as_bytes());
        redact.extend([text.to_string(), text.trim().to_owned()]);
        unsealed.files.insert(f.secret.value.clone(), plain);
    }
    unsealed.redact = redact;
    Ok(ContainerSpec {
        command: c.command.clone(),
        env,
        env_files: opt.env_files.iter().map(|f| f.value.clone()).collect(),
        ports: c.ports.iter().map(|p| p.value.clone()).collect(),
        volumes: c
            .volumes
            .iter()
            .map(|v| match named_volume(v) {
                Some(name) if component.is_some() && script.volumes.contains_key(name) => {
                    let full = Volume::new(partner, &script.name, name).name;
                    format!("{full}{}", &v[name.len()..])
                }
                _ => v.value.clone(),
            })
            .collect(),
        network: match (&c.network, component) {
            (Some(n), _) => Some(n.value.clone()),
            (None, Some(_)) => Some(Network::new(partner, &script.name).name),
            (None, None) => None,
        },
        network_alias: component.filter(|_| c.network.is_none()).map(str::to_owned),
        healthcheck: part
            .health
            .and_then(|h| h.exec.as_ref())
            .map(|e| e.value.clone()),
        job: part.job,
        replicas: part.replicas.map(|r| r.value),
        placement: part.placement.map(|p| p.value.clone()).unwrap_or_default(),
        stateful: part.stateful,
        init: c.init.unwrap_or(true),
        stop_timeout_secs: c
            .stop_timeout
            .as_ref()
            .and_then(|t| syntax::parse_duration(t).ok())
            .map_or(10, |d| d.as_secs()),
        memory: c.memory.as_ref().and_then(|m| syntax::parse_memory(m).ok()),
        nano_cpus: c.cpus.as_ref().map(|n| (n.value * 1e9) as i64),
        read_only: c.read_only,
        user: c.user.as_ref().map(|u| u.value.clone()),
        secrets: hashes,
        secret_files: opt
            .secret_files
            .iter()
            .map(|f| SecretMount {
                secret: f.secret.value.clone(),
                target: f.target.value.clone(),
            })
            .collect(),
        unsealed,
    })
}

/// Where each value of the spec is written: the script's file for what the script sets,
/// the partner's for its env files, the fleet's for a default registry.
pub fn origin(
    repo: &Repo,
    partner_path: &str,
    opt: &OptIn,
    script: &Doc<Script>,
    part: &Part<'_>,
) -> Origin {
    let at = |path: &str, pos: Pos| Loc {
        path: path.to_owned(),
        pos,
    };
    let s = &script.doc;
    let c = part.container;
    let here = |pos| at(&script.path, pos);
    let img = part.own_image.map_or(&s.image, |o| o.image);
    let image = match (&img.registry, repo.fleet.as_ref()) {
        (Some(r), _) => here(r.pos),
        (None, Some(fleet)) if img.source.value != Source::Local => fleet
            .doc
            .registry
            .as_ref()
            .map_or_else(|| here(img.source.pos), |r| at(&fleet.path, r.pos)),
        _ => here(img.source.pos),
    };
    Origin {
        script: here(s.name.pos),
        image,
        volumes: c.volumes.iter().map(|v| here(v.pos)).collect(),
        ports: c.ports.iter().map(|p| here(p.pos)).collect(),
        env_files: opt
            .env_files
            .iter()
            .map(|f| at(partner_path, f.pos))
            .collect(),
        network: c.network.as_ref().map(|n| here(n.pos)),
        user: c.user.as_ref().map(|u| here(u.pos)),
        memory: c.memory.as_ref().map(|m| here(m.pos)),
        cpus: c.cpus.as_ref().map(|n| here(n.pos)),
        replicas: part.replicas.map(|r| here(r.pos)),
        placement: part.placement.map(|p| here(p.pos)),
    }
}

/// The spec's env files as they are on this host, for the floor and the policy to judge
/// before any is read.
pub fn env_files(spec: &ContainerSpec) -> Vec<EnvFile> {
    spec.env_files
        .iter()
        .map(|path| {
            let real = resolve_host_path(path);
            let kind = match std::fs::metadata(&real) {
                Err(_) => FileKind::Missing,
                Ok(m) if m.is_file() => FileKind::Regular,
                Ok(m) => FileKind::Other(kind_of(&m)),
            };
            EnvFile {
                path: path.clone(),
                real: real.display().to_string(),
                kind,
            }
        })
        .collect()
}

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    let t = meta.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() || t.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

/// Adds the env files the rules allow to the spec's env, in order, so a rotated secret
/// rolls the container; refused ones are left unread, for the planner to refuse the step.
pub fn read_env_files(
    spec: &mut ContainerSpec,
    files: &[EnvFile],
    origin: &Origin,
    rules: &Rules,
) -> Result<(), ResolveError> {
    for (i, file) in files.iter().enumerate() {
        let at = origin.env_files.get(i).unwrap_or(&origin.script);
        if rules.env_file_refusal(file, at).is_none() {
            // Judged again as it is opened: the path may lead elsewhere by now.
            let judge = |real: &Path| {
                let now = EnvFile {
                    path: file.path.clone(),
                    real: real.display().to_string(),
                    kind: FileKind::Regular,
                };
                rules.env_file_refusal(&now, at).map(|r| r.why)
            };
            let read = parse_env_file(&read_env_file(&file.path, judge)?);
            spec.unsealed
                .redact
                .extend(read.iter().map(|(_, v)| v.clone()));
            spec.env.extend(read);
        }
    }
    Ok(())
}

/// The host paths a spec bind-mounts, resolved as the engine will find them: `..` first,
/// then symlinks as far as the path exists (the engine creates what does not), so the floor
/// judges what is mounted, not how it is spelled.
pub fn host_binds(spec: &ContainerSpec) -> Vec<Bind> {
    spec.volumes
        .iter()
        .enumerate()
        .filter_map(|(entry, v)| host_bind(v).map(|(source, read_only)| (entry, source, read_only)))
        .map(|(entry, source, read_only)| {
            let real = resolve_host_path(source);
            let socket = holds_socket(&real);
            Bind {
                entry,
                source: source.to_owned(),
                real: real.display().to_string(),
                read_only,
                socket,
            }
        })
        .collect()
}

/// How far [`holds_socket`] looks into a mounted directory: deep and wide enough for the
/// runtime directories daemons keep sockets in, bounded so a data directory of millions
/// of files does not stall the pass.
const SOCKET_SCAN_DEPTH: usize = 4;
const SOCKET_SCAN_ENTRIES: usize = 20_000;

/// Whether a path is a unix socket, or a directory holding one within
/// [`SOCKET_SCAN_DEPTH`] levels and [`SOCKET_SCAN_ENTRIES`] entries (symlinks not followed:
/// inside the container they lead elsewhere).
fn holds_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt as _;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if meta.file_type().is_socket() {
        return true;
    }
    let mut todo = vec![(path.to_path_buf(), 0)];
    let mut seen = 0;
    while let Some((dir, depth)) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > SOCKET_SCAN_ENTRIES {
                return false;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_socket() {
                return true;
            }
            if kind.is_dir() && depth + 1 < SOCKET_SCAN_DEPTH {
                todo.push((entry.path(), depth + 1));
            }
        }
    }
    false
}

/// An absolute path as the kernel would walk it: each symlink replaced by its target
/// (dangling ones too), `..` taken after that, parts that do not exist kept as written.
pub fn resolve_host_path(path: &str) -> PathBuf {
    use std::ffi::OsString;
    use std::path::Component;
    /// Past this many symlinks the path is a loop; the kernel gives up at 40 too.
    const MAX_LINKS: u32 = 40;
    fn parts(p: &Path) -> impl DoubleEndedIterator<Item = Option<OsString>> + '_ {
        p.components().filter_map(|c| match c {
            Component::Normal(n) => Some(Some(n.to_owned())),
            Component::ParentDir => Some(None),
            _ => None,
        })
    }
    let mut out = PathBuf::from("/");
    let mut todo: Vec<Option<OsString>> = parts(Path::new(path)).rev().collect();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        let Some(name) = part else {
            out.pop();
            continue;
        };
        let next = out.join(&name);
        let link = std::fs::symlink_metadata(&next)
            .is_ok_and(|m| m.file_type().is_symlink())
            .then(|| std::fs::read_link(&next).ok())
            .flatten();
        match link {
            Some(target) if links < MAX_LINKS => {
                links += 1;
                if target.is_absolute() {
                    out = PathBuf::from("/");
                }
                todo.extend(parts(&target).rev());
            }
            _ => out = next,
        }
    }
    out
}

/// The largest env file berth reads: far more than any list of secrets needs.
const MAX_ENV_FILE_BYTES: u64 = 1 << 20;

/// Reads one env file the rules allowed, judging the path it resolves to as it is opened
/// (`judge` says why it is refused, if it is) and opening exactly that path, and refusing
/// what is not a plain file of settings: FIFOs, sockets and devices (they would block the
/// pass), files over 1 MiB, and text with NUL bytes.
fn read_env_file(
    path: &str,
    judge: impl Fn(&Path) -> Option<String>,
) -> Result<String, ResolveError> {
    use std::io::Read as _;
    let io = |source| ResolveError::EnvFile {
        path: path.to_owned(),
        source,
    };
    let refused = |why: String| ResolveError::EnvFileRefused {
        path: path.to_owned(),
        why,
    };
    let real = std::fs::canonicalize(path).map_err(io)?;
    if let Some(why) = judge(&real) {
        return Err(refused(why));
    }
    let regular = |meta: &std::fs::Metadata| {
        if meta.is_file() {
            Ok(())
        } else {
            Err(refused("not a regular file".into()))
        }
    };
    regular(&std::fs::metadata(&real).map_err(io)?)?;
    // The judged path has no symlinks; opening it refusing any means nothing swapped one
    // in since, so the file read is the file judged.
    let fd = rustix::fs::openat2(
        rustix::fs::CWD,
        &real,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NONBLOCK,
        rustix::fs::Mode::empty(),
        rustix::fs::ResolveFlags::NO_SYMLINKS | rustix::fs::ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| io(e.into()))?;
    let file = std::fs::File::from(fd);
    regular(&file.metadata().map_err(io)?)?;
    let mut bytes = Vec::new();
    file.take(MAX_ENV_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_ENV_FILE_BYTES {
        return Err(refused("larger than 1 MiB".into()));
    }
    if bytes.contains(&0) {
        return Err(refused("contains a NUL byte".into()));
    }
    String::from_utf8(bytes).map_err(|_| refused("not UTF-8 text".into()))
}

/// `KEY=value` lines as `docker run --env-file` reads them; blank lines and `#` comments
/// are skipped, and so are bare `KEY` lines (berth does not pass its own environment on).
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files() {
        let parsed = parse_env_file("# c\n\nA=1\n  B = x=y\nBARE\n");
        assert_eq!(
            parsed,
            vec![("A".into(), "1".into()), ("B".into(), " x=y".into())]
        );
    }

    #[test]
    fn env_secrets_come_last_and_every_host_value_is_redacted() {
        use age::secrecy::ExposeSecret as _;
        use std::io::Write as _;
        let id = age::x25519::Identity::generate();
        let repo = tempfile::tempdir().unwrap();
        let seal = |name: &str, plain: &str| {
            let recipient = id.to_public();
            let enc =
                age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                    .unwrap();
            let path = repo.path().join(crate::secret::repo_path("p", name));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let mut w = enc
                .wrap_output(std::fs::File::create(path).unwrap())
                .unwrap();
            w.write_all(plain.as_bytes()).unwrap();
            w.finish().unwrap();
        };
        seal("db.env", "MODE=sealed\nDB_PASSWORD=pw1\n");
        seal("tls.key", "key-bytes\n");
        let env_file = repo.path().join("host.env");
        std::fs::write(&env_file, "HOST_TOKEN=t0k\n").unwrap();
        let key_file = repo.path().join("age.key");
        std::fs::write(&key_file, id.to_string().expose_secret()).unwrap();
        let keys = Keyring::load(&key_file).unwrap();
        let script: Script = crate::manifest::parse(
            "apiVersion: berth/v1\nkind: Script\nname: s\nimage: { source: local, repository: r }\n\
             container: { env: { MODE: plain, URL: https://example.org/x } }\n",
        )
        .unwrap();
        let opt: OptIn = crate::manifest::parse(&format!(
            "script: s\nenv_files: [{}]\nenv_secrets: [db.env]\n\
             secret_files: [{{ secret: tls.key, target: /run/k }}]\n",
            env_file.display()
        ))
        .unwrap();
        let open = Secrets::Open {
            root: repo.path(),
            partner: "p",
            keys: Some(&keys),
        };
        let mut spec = container_spec("p", &script, &script.parts()[0], &opt, open).unwrap();
        let files = super::env_files(&spec);
        read_env_files(&mut spec, &files, &Origin::default(), &Rules::default()).unwrap();
        assert_eq!(
            spec.engine_env(),
            [
                "DB_PASSWORD=pw1",
                "HOST_TOKEN=t0k",
                "MODE=sealed",
                "URL=https://example.org/x"
            ]
        );
        assert!(!spec.env.contains_key("MODE"), "the secret's value wins");
        assert_eq!(
            spec.unsealed.files["tls.key"].as_bytes(),
            b"key-bytes\n".as_slice()
        );
        assert_eq!(
            spec.unsealed
                .redact
                .apply("pw1 t0k key-bytes sealed plain https://example.org/x"),
            "[redacted] [redacted] [redacted] [redacted] plain [redacted]"
        );
        let shown = format!("{spec:?}");
        assert!(
            !shown.contains("pw1") && !shown.contains("key-bytes"),
            "{shown}"
        );
        let json = serde_json::to_string(&spec).unwrap();
        assert!(
            !json.contains("pw1") && !json.contains("key-bytes"),
            "{json}"
        );
        assert_eq!(spec.secrets.len(), 2);
        assert!(spec.secrets.values().all(|h| h.len() == 64));

        let names_only =
            container_spec("p", &script, &script.parts()[0], &opt, Secrets::NamesOnly).unwrap();
        assert_eq!(
            names_only.secrets,
            [
                ("db.env".into(), String::new()),
                ("tls.key".into(), String::new())
            ]
            .into()
        );
        let none = Secrets::Open {
            root: repo.path(),
            partner: "p",
            keys: None,
        };
        assert!(container_spec("p", &script, &script.parts()[0], &opt, none).is_err());
    }

    #[test]
    fn a_directory_holding_a_socket_counts_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        assert!(!holds_socket(dir.path()));
        let _listener = std::os::unix::net::UnixListener::bind(deep.join("engine")).unwrap();
        assert!(holds_socket(dir.path()));
        assert!(holds_socket(&deep.join("engine")));
        assert!(!holds_socket(&dir.path().join("missing")));
    }

    #[test]
    fn host_paths_resolve_dot_dot_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::os::unix::fs::symlink("/etc", real.join("cfg")).unwrap();
        let path = |p: &std::path::Path| p.display().to_string();
        assert_eq!(
            resolve_host_path(&path(&real.join("cfg/berth/x"))),
            PathBuf::from("/etc/berth/x")
        );
        assert_eq!(
            resolve_host_path(&path(&real.join("x/../cfg/ssl"))),
            PathBuf::from("/etc/ssl")
        );
        assert_eq!(
            resolve_host_path("/srv/../etc/./ssl/"),
            PathBuf::from("/etc/ssl")
        );
        std::os::unix::fs::symlink("/no/such/dir/berth", real.join("dangling")).unwrap();
        assert_eq!(
            resolve_host_path(&path(&real.join("dangling/../x"))),
            PathBuf::from("/no/such/dir/x"),
            "a dangling link is followed, then `..`"
        );
        assert_eq!(
            resolve_host_path("/no/such/place"),
            PathBuf::from("/no/such/place")
        );
    }
}
