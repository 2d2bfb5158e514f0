//! Secrets sealed with Debian's `age` CLI and opened by berth on the host (design §12): an
//! env secret in the container's env, a secret file mounted read-only from a tmpfs, a
//! rotation that rolls the container and is named by `plan`, wrong and missing identities
//! that leave the script as it is, `validate`'s findings, the plaintext absent from every
//! output and every file berth writes, and engine errors redacted of env values.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::*;

const DB_V1: &str = "s3cret-db-password-v1";
const DB_V2: &str = "s3cret-db-password-v2";
const TLS_KEY: &str =
    "-----BEGIN PRIVATE KEY-----\nMIIEvQ-tls-key-bytes-0451\n-----END PRIVATE KEY-----\n";
const TLS_LINE: &str = "MIIEvQ-tls-key-bytes-0451";

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(at: PathBuf) -> Tmpfs {
        std::fs::create_dir_all(&at).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&at))
        .assert_exit(0);
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A host whose partner runs `svc` (which uses the secrets) and `plain` (which does not),
/// with an age identity of its own, a second one that is not the partner's, and a tmpfs.
struct Sealed {
    host: Host,
    plain_port: u16,
    key: PathBuf,
    wrong_key: PathBuf,
    recipient: String,
    tmpfs: Tmpfs,
}

impl Sealed {
    fn new(tag: &str) -> Sealed {
        let host = Host::new(tag);
        let keygen = |name: &str| {
            let path = host.dir.path().join(name);
            run(Command::new("age-keygen").arg("-o").arg(&path)).assert_exit(0);
            path
        };
        let key = keygen("age.key");
        let wrong_key = keygen("wrong.key");
        let recipient = run(Command::new("age-keygen").arg("-y").arg(&key))
            .assert_exit(0)
            .stdout()
            .trim()
            .to_owned();
        let tmpfs = Tmpfs::new(host.dir.path().join("tmpfs"));
        Sealed {
            plain_port: free_port(),
            host,
            key,
            wrong_key,
            recipient,
            tmpfs,
        }
    }

    fn secrets_dir(&self) -> PathBuf {
        self.tmpfs.0.join("secrets")
    }

    fn name(&self, script: &str) -> String {
        format!("berth-{}-{script}", self.host.partner)
    }

    /// Encrypts `plain` to the partner's recipient as `secrets/<partner>/<name>.age`, with
    /// the `age` CLI reading the plaintext from its stdin.
    fn seal(&self, name: &str, plain: &str) {
        let dir = self.host.repo().join("secrets").join(&self.host.partner);
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new("age")
            .args(["-r", &self.recipient, "-o"])
            .arg(dir.join(format!("{name}.age")))
            .stdin(Stdio::piped())
            .spawn()
            .expect("age runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(plain.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "age encrypts");
    }

    /// Writes the manifests: `svc` with the given opt-in lines, `plain` with `plain_opt`.
    fn write(&self, svc_opt: &str, plain_opt: &str) {
        let repo = self.host.repo();
        let script = |name: &str, port: u16| {
            format!(
                "apiVersion: berth/v1\nkind: Script\nname: {name}\nimage:\n  source: local\n  repository: {IMAGE_REPO}\n\
                 versions: \"^1\"\ncontainer:\n  env: {{ PORT: \"{port}\" }}\n  network: host\n  stop_timeout: 2s\n  user: \"65534:65534\"\n\
                 health:\n  http: http://127.0.0.1:{port}/health\n  timeout: 10s\n"
            )
        };
        std::fs::write(repo.join("scripts/svc.yaml"), script("svc", self.host.port)).unwrap();
        std::fs::write(
            repo.join("scripts/plain.yaml"),
            script("plain", self.plain_port),
        )
        .unwrap();
        std::fs::write(
            repo.join(format!("partners/{}.yaml", self.host.partner)),
            format!(
                "apiVersion: berth/v1\nkind: Partner\nname: {p}\ntimezone: UTC\nwindows:\n  - days: [mon, tue, wed, thu, fri, sat, sun]\n    start: \"00:00\"\n    end: \"24:00\"\n\
                 scripts:\n  - script: svc\n{svc_opt}  - script: plain\n{plain_opt}",
                p = self.host.partner
            ),
        )
        .unwrap();
    }

    fn commit(&self, message: &str) -> String {
        let repo = self.host.repo();
        if !repo.join(".git").exists() {
            git(&repo, &["init", "-q", "-b", "main"]);
        }
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "--allow-empty", "-m", message]);
        git(&repo, &["rev-parse", "HEAD"])
    }

    /// `berth <cmd>` for this host, with its secrets dir and, if given, an identity.
    fn berth(&self, cmd: &str, key: Option<&Path>, extra: &[&str]) -> Run {
        self.berth_in(&self.secrets_dir(), cmd, key, extra)
    }

    /// The same with another secrets dir.
    fn berth_in(&self, dir: &Path, cmd: &str, key: Option<&Path>, extra: &[&str]) -> Run {
        let mut b = self
            .host
            .command(cmd)
            .arg("--secrets-dir")
            .arg(dir)
            .args(extra);
        if let Some(key) = key {
            b = b.arg("--age-identity").arg(key);
        }
        b.run()
    }

    fn get(&self, script: &str, format: &str) -> String {
        inspect(&self.name(script), format)
    }
}

const BOTH: &str = "    env_secrets: [db.env]\n    secret_files: [{ secret: tls.key, target: /run/secrets/tls.key }]\n";

/// Every file under `dir`, read, with its path.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.extend(files_under(&path));
        } else if meta.is_file() {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

#[track_caller]
fn assert_absent(what: &str, text: &[u8], secrets: &[&str]) {
    for s in secrets {
        let found = text.windows(s.len()).any(|w| w == s.as_bytes());
        assert!(!found, "{what} shows the plaintext {s:?}");
    }
}

#[track_caller]
fn assert_state_dir_clean(host: &Host, secrets: &[&str]) {
    for (path, bytes) in files_under(&host.state_dir()) {
        assert_absent(&path.display().to_string(), &bytes, secrets);
    }
}

#[test]
fn apply_opens_secrets_into_env_and_a_read_only_file_and_a_rotation_rolls_the_container() {
    let s = Sealed::new("sealed");
    s.seal(
        "db.env",
        &format!("# rotated monthly\nDB_PASSWORD={DB_V1}\n"),
    );
    s.seal("tls.key", TLS_KEY);
    s.write("", "");
    let before = s.commit("no secrets yet");
    // Files under secrets/ that are not sealed are none of the loader's business.
    std::fs::write(
        s.host.repo().join("secrets").join("README"),
        [0xff, 0xfe, 0x00],
    )
    .unwrap();
    s.write(BOTH, "");
    s.commit("case counts get their secrets");
    let secrets = [DB_V1, TLS_LINE];

    let out = s.berth("apply", Some(&s.key), &[]);
    out.assert_exit(0);
    assert_absent("apply", out.text().as_bytes(), &secrets);
    let env = s.get("svc", "{{json .Config.Env}}");
    assert!(env.contains(&format!("DB_PASSWORD={DB_V1}")), "{env}");

    // The secret file: a read-only bind mount of a 0444 file in a 0700 directory on tmpfs.
    let mounts: serde_json::Value =
        serde_json::from_str(&s.get("svc", "{{json .Mounts}}")).unwrap();
    let mount = mounts
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == "/run/secrets/tls.key")
        .unwrap_or_else(|| panic!("no mount at the target: {mounts}"));
    assert_eq!(mount["Type"], "bind");
    assert_eq!(mount["RW"], false, "{mount}");
    let source = PathBuf::from(mount["Source"].as_str().unwrap());
    assert!(source.starts_with(s.secrets_dir()), "{}", source.display());
    assert_eq!(std::fs::read_to_string(&source).unwrap(), TLS_KEY);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&source), 0o444);
    assert_eq!(mode(source.parent().unwrap()), 0o700);
    assert_eq!(mode(&s.secrets_dir()), 0o700);
    let inside = run(Command::new("docker").args([
        "cp",
        &format!("{}:/run/secrets/tls.key", s.name("svc")),
        "-",
    ]))
    .assert_exit(0)
    .stdout()
    .to_owned();
    assert!(
        inside.contains(TLS_KEY),
        "the file reads inside the container"
    );
    assert!(
        s.host.served_version().is_some(),
        "the service runs as 65534"
    );
    // Only the env secret is in the container's config: the file's content is not.
    let config = docker(&["inspect", &s.name("svc")]);
    assert_absent("docker inspect", config.as_bytes(), &[TLS_LINE]);
    let hashes = s.get("svc", "{{index .Config.Labels \"berth.secrets\"}}");
    assert!(
        hashes.contains("db.env") && hashes.contains("tls.key"),
        "{hashes}"
    );

    let plan = s.berth("plan", Some(&s.key), &["--exit-code"]);
    plan.assert_exit(0);
    assert!(plan.text().contains("0 change(s)"), "{}", plan.text());
    // CI has no identity: the diff still reads, counting secrets by name.
    let diff = Berth::new("diff")
        .arg(s.host.repo())
        .args(["--base", &before, "--format", "json"])
        .run();
    diff.assert_exit(0);
    assert!(diff.stdout().contains("secret_files"), "{}", diff.text());
    assert_absent("diff", diff.text().as_bytes(), &secrets);

    // A rotation: the same name, a new value.
    let old_id = s.host.id();
    let old_start = s.get("svc", "{{.State.StartedAt}}");
    s.seal("db.env", &format!("DB_PASSWORD={DB_V2}\n"));
    s.commit("rotate the database password");
    let plan = s.berth("plan", Some(&s.key), &[]);
    plan.assert_exit(0);
    assert!(
        plan.text().contains("secret db.env changed"),
        "plan names the secret: {}",
        plan.text()
    );
    assert!(
        !plan.text().contains("container spec changed"),
        "{}",
        plan.text()
    );
    let json = s.berth("plan", Some(&s.key), &["--format", "json"]);
    let diff = Berth::new("diff")
        .arg(s.host.repo())
        .args(["--base", "HEAD~1"])
        .run();
    diff.assert_exit(0);
    let out = s.berth("apply", Some(&s.key), &[]);
    out.assert_exit(0);
    assert!(out.text().contains("replace  svc"), "{}", out.text());
    assert_ne!(s.host.id(), old_id, "rolled");
    assert_ne!(s.get("svc", "{{.State.StartedAt}}"), old_start);
    let env = s.get("svc", "{{json .Config.Env}}");
    assert!(env.contains(&format!("DB_PASSWORD={DB_V2}")), "{env}");
    let all = [DB_V1, DB_V2, TLS_LINE];
    for (what, run) in [
        ("plan", &plan),
        ("plan json", &json),
        ("diff", &diff),
        ("apply", &out),
    ] {
        assert_absent(what, run.text().as_bytes(), &all);
    }
    // The old container's files went with it.
    let dirs: Vec<_> = std::fs::read_dir(s.secrets_dir()).unwrap().collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");

    // After a reboot the tmpfs is empty: the stopped container gets its files back.
    docker(&["stop", "-t", "1", &s.name("svc")]);
    std::fs::remove_dir_all(s.secrets_dir()).unwrap();
    let out = s.berth("apply", Some(&s.key), &[]);
    out.assert_exit(0);
    assert!(out.text().contains("start"), "{}", out.text());
    assert!(s.host.running());
    assert!(s.host.served_version().is_some());
    let source = s.get("svc", "{{range .Mounts}}{{.Source}}{{end}}");
    assert_eq!(std::fs::read_to_string(&source).unwrap(), TLS_KEY);
    assert_state_dir_clean(&s.host, &all);

    // Opting out removes the container and its files.
    std::fs::write(
        s.host.repo().join(format!("partners/{}.yaml", s.host.partner)),
        format!(
            "apiVersion: berth/v1\nkind: Partner\nname: {}\ntimezone: UTC\nwindows:\n  - days: [mon, tue, wed, thu, fri, sat, sun]\n    start: \"00:00\"\n    end: \"24:00\"\nscripts: []\n",
            s.host.partner
        ),
    )
    .unwrap();
    s.berth("apply", Some(&s.key), &[]).assert_exit(0);
    assert!(s.host.containers().is_empty());
    assert_eq!(std::fs::read_dir(s.secrets_dir()).unwrap().count(), 0);
}

#[test]
fn a_secret_that_does_not_open_leaves_its_script_as_it_is() {
    let s = Sealed::new("unopened");
    s.seal("db.env", &format!("DB_PASSWORD={DB_V1}\n"));
    s.seal("tls.key", TLS_KEY);
    s.write(BOTH, "");
    s.commit("secrets");
    s.berth("apply", Some(&s.key), &[]).assert_exit(0);
    let id = s.host.id();
    let started = s.get("svc", "{{.State.StartedAt}}");

    s.seal("db.env", &format!("DB_PASSWORD={DB_V2}\n"));
    let disk = s.host.dir.path().join("on-disk");
    let runs = [
        (
            "a wrong identity",
            Some(s.wrong_key.as_path()),
            None,
            "secret db.env: cannot decrypt",
        ),
        ("no identity", None, None, "secret db.env: no age identity"),
        (
            "a secrets dir on disk",
            Some(s.key.as_path()),
            Some(&disk),
            "is not on tmpfs",
        ),
    ];
    for (i, (case, key, dir, why)) in runs.into_iter().enumerate() {
        // Something for the other script to converge to each time.
        s.write(BOTH, &format!("    env: {{ ROUND: \"{i}\" }}\n"));
        let out = s.berth_in(dir.unwrap_or(&s.secrets_dir()), "apply", key, &[]);
        out.assert_exit(3);
        assert!(out.text().contains(why), "{case}: {}", out.text());
        assert!(
            out.text().contains("deferred(unresolved)"),
            "{case}: {}",
            out.text()
        );
        assert_absent(case, out.text().as_bytes(), &[DB_V1, DB_V2, TLS_LINE]);
        assert_eq!(s.host.id(), id, "{case}: the container is untouched");
        assert_eq!(s.get("svc", "{{.State.StartedAt}}"), started, "{case}");
        let env = s.get("plain", "{{json .Config.Env}}");
        assert!(
            env.contains(&format!("ROUND={i}")),
            "{case}: the other converges: {env}"
        );
    }
    assert!(
        !disk.join(s.name("svc")).exists(),
        "nothing written off tmpfs"
    );
}

#[test]
fn validate_checks_each_secret_at_its_name() {
    let s = Sealed::new("validate");
    s.seal("db.env", "A=1\n");
    std::fs::write(
        s.host
            .repo()
            .join(format!("secrets/{}/plain.env.age", s.host.partner)),
        "DB_PASSWORD=not-encrypted\n",
    )
    .unwrap();
    let opt = "    env_secrets: [db.env, missing.env, plain.env, ../other/x.env, a..b]\n    secret_files:\n      - { secret: db.env, target: /run/a }\n      - { secret: db.env, target: /run/a }\n      - { secret: db.env, target: / }\n      - { secret: db.env, target: /data/ }\n";
    s.write(opt, "");
    let svc = s.host.repo().join("scripts/svc.yaml");
    let script = std::fs::read_to_string(&svc).unwrap();
    std::fs::write(
        &svc,
        script.replacen(
            "container:\n",
            "container:\n  volumes: [\"cache:/data\"]\n",
            1,
        ),
    )
    .unwrap();
    let partner = format!("partners/{}.yaml", s.host.partner);
    let text = std::fs::read_to_string(s.host.repo().join(&partner)).unwrap();
    let at = |needle: &str, nth: usize| {
        let offset = text.match_indices(needle).nth(nth).unwrap().0;
        let line = text[..offset].matches('\n').count() + 1;
        let col = offset - text[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("{partner}:{line}:{col}")
    };
    let out = Berth::new("validate").arg(s.host.repo()).run();
    out.assert_exit(1);
    let text_out = out.text();
    for (needle, nth, message) in [
        ("missing.env", 0, "secret `missing.env` does not exist"),
        ("plain.env", 0, "is not an age file"),
        ("../other/x.env", 0, "a name, not a path"),
        ("a..b", 0, "`..` is not allowed"),
        ("/run/a", 1, "is used twice"),
        ("/ }", 0, "not `/`"),
        ("/data/", 0, "is where script `svc` mounts `cache:/data`"),
    ] {
        let line = format!("{}: error: ", at(needle, nth));
        assert!(
            text_out
                .lines()
                .any(|l| l.starts_with(&line) && l.contains(message)),
            "{line}{message} in:\n{text_out}"
        );
    }
    assert_absent("validate", text_out.as_bytes(), &["not-encrypted"]);
    assert_eq!(
        text_out.matches(": error: ").count(),
        7,
        "db.env is fine: {text_out}"
    );
}

#[test]
fn the_agent_opens_secrets_and_engine_errors_are_redacted() {
    let s = Sealed::new("agent");
    s.seal("db.env", &format!("DB_PASSWORD={DB_V1}\n"));
    s.seal("tls.key", TLS_KEY);
    // An env file with a line the engine refuses: its error quotes the value.
    const QUOTED: &str = "host-env-file-value-7731";
    // In a subdirectory: files directly beside agent.yaml are berth's own, never env files.
    let env_file = s.host.dir.path().join("env/plain.env");
    std::fs::create_dir_all(env_file.parent().unwrap()).unwrap();
    std::fs::write(&env_file, format!("={QUOTED}\n")).unwrap();
    s.write(BOTH, &format!("    env_files: [{}]\n", env_file.display()));
    s.commit("secrets and a broken env file");
    let config = s.host.agent_config(
        &format!(
            "  url: file://{}\n  branch: main\n",
            s.host.repo().display()
        ),
        &format!(
            "age_identity: {}\nsecrets_dir: {}\n",
            s.key.display(),
            s.secrets_dir().display()
        ),
    );
    let out = Berth::new("agent")
        .args(["--once", "--config"])
        .arg(&config)
        .run();
    out.assert_exit(1);
    let env = s.get("svc", "{{json .Config.Env}}");
    assert!(env.contains(&format!("DB_PASSWORD={DB_V1}")), "{env}");
    assert!(s.host.served_version().is_some());
    assert!(out.text().contains("[redacted]"), "{}", out.text());
    let status = Berth::new("status")
        .arg("--state-dir")
        .arg(s.host.state_dir())
        .run();
    let json = Berth::new("status")
        .arg("--state-dir")
        .arg(s.host.state_dir())
        .args(["--format", "json"])
        .run();
    assert!(
        json.stdout()
            .contains("invalid environment variable: =[redacted]"),
        "{}",
        json.text()
    );
    let all = [QUOTED, DB_V1, TLS_LINE];
    for (what, run) in [("agent", &out), ("status", &status), ("status json", &json)] {
        assert_absent(what, run.text().as_bytes(), &all);
    }
    assert_state_dir_clean(&s.host, &all);
    assert!(
        s.get("plain", "{{.Id}}").is_empty(),
        "the failed container was removed"
    );
}

#[test]
fn no_script_mounts_the_secrets_dir() {
    let s = Sealed::new("guarded");
    s.write("", "");
    let script = s.host.repo().join("scripts/plain.yaml");
    let text = std::fs::read_to_string(&script).unwrap();
    std::fs::write(
        &script,
        text.replace(
            "  network: host\n",
            &format!(
                "  network: host\n  volumes: [\"{}/x/../secrets:/stolen:ro\"]\n",
                s.tmpfs.0.display()
            ),
        ),
    )
    .unwrap();
    let out = s.berth("apply", Some(&s.key), &[]);
    out.assert_exit(1);
    assert!(out.text().contains("REFUSED(policy)"), "{}", out.text());
    assert!(s.get("plain", "{{.Id}}").is_empty(), "never created");
}
