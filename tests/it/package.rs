//! What `script/package` built, checked as a partner and a fleet team receive it: the static
//! binary run on this host, the .deb installed into a fresh Debian root, the image run on
//! `manifests/`. Every artefact must be from this commit (script/test runs script/package
//! first; run it by hand before running these tests alone).
//!
//! The fresh root is the host's Debian release, `debootstrap --variant=minbase` plus systemd
//! (for `systemd-analyze verify`) from the host's own apt mirror, imported into the engine
//! once per machine as `berth-test/debian-root:<codename>`; each test installs into a new
//! container of it, removed afterwards.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::common::{Run, docker, require_docker, root, run, unique_partner};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Everything the image holds: the binaries, the CA bundle and an empty /tmp for berth's
/// temporary files.
const IMAGE_FILES: [&str; 4] = [
    "etc/ssl/certs/ca-certificates.crt",
    "tmp/",
    "usr/bin/berth",
    "usr/bin/berth-agentd",
];

/// `berth <version> (<commit>)`: what every artefact of this commit says to `--version`.
fn expected_version() -> String {
    let head = run(Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root()));
    head.assert_exit(0);
    format!("berth {VERSION} ({})", head.stdout().trim())
}

/// A file in `dist/`, or a failure that says how to make it.
fn dist(name: &str) -> PathBuf {
    let path = root().join("dist").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run script/package (script/test does) before these tests",
        path.display()
    );
    path
}

/// `dist/berth-<version>-x86_64-linux`, checked to be from this commit.
fn static_binary() -> PathBuf {
    let path = dist(&format!("berth-{VERSION}-x86_64-linux"));
    let said = run(Command::new(&path).arg("--version"));
    assert_eq!(
        said.stdout().trim(),
        expected_version(),
        "{} is not from this commit: run script/package again",
        path.display()
    );
    path
}

fn deb() -> PathBuf {
    dist(&format!("berth_{VERSION}_amd64.deb"))
}

/// `berth:<version>` in the local engine, checked to be from this commit.
fn image() -> String {
    require_docker();
    let image = format!("berth:{VERSION}");
    let revision = run(Command::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"org.opencontainers.image.revision\"}}",
        &image,
    ]));
    let head = run(Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root()))
    .stdout()
    .trim()
    .to_owned();
    assert!(
        revision.code() == Some(0) && revision.stdout().trim() == head,
        "the image {image} is missing or not from this commit ({}): run script/package again",
        revision.text().trim()
    );
    image
}

#[test]
fn static_binary_is_static_and_checks_manifests() {
    let bin = static_binary();
    let agentd = dist(&format!("berth-agentd-{VERSION}-x86_64-linux"));
    for path in [&bin, &agentd] {
        let file = run(Command::new("file").arg("-L").arg(path));
        file.assert_exit(0);
        assert!(
            file.stdout().contains("statically linked")
                || file.stdout().contains("static-pie linked"),
            "{}",
            file.stdout()
        );
    }
    let ldd = run(Command::new("ldd").arg(&bin));
    assert!(
        ldd.text().contains("not a dynamic executable") || ldd.text().contains("statically linked"),
        "ldd finds libraries: {}",
        ldd.text()
    );

    let valid = run(Command::new(&bin)
        .args(["validate", "manifests"])
        .current_dir(root()));
    valid.assert_exit(0);
    assert_eq!(valid.stdout(), "manifests: valid (0 warning(s))\n");

    let invalid = run(Command::new(&bin)
        .args(["validate", "tests/fixtures/invalid/bad-port"])
        .current_dir(root()));
    invalid.assert_exit(1);
    assert!(
        invalid
            .stdout()
            .starts_with(&first_expected_error("bad-port")),
        "{}",
        invalid.text()
    );
}

/// The `path:line:col` a fixture's `expect.txt` names (see tests/it/validate.rs).
fn first_expected_error(case: &str) -> String {
    let expect = fs::read_to_string(
        root()
            .join("tests/fixtures/invalid")
            .join(case)
            .join("expect.txt"),
    )
    .unwrap();
    let (at, _) = expect.split_once(": ").unwrap();
    format!("{at}: error: ")
}

#[test]
fn deb_holds_the_static_binary_units_config_docs_and_completions() {
    let bin = static_binary();
    let deb = deb();
    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    listing.assert_exit(0);
    let paths: Vec<&str> = listing
        .stdout()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    let owners: Vec<&str> = listing
        .stdout()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert!(
        owners.iter().all(|o| *o == "root/root"),
        "{}",
        listing.stdout()
    );
    let mut expected: Vec<String> = [
        "./usr/bin/berth",
        "./usr/bin/berth-agentd",
        "./lib/systemd/system/berth-agent.service",
        "./lib/systemd/system/berth-agent-once.service",
        "./lib/systemd/system/berth-agent.timer",
        "./etc/berth/agent.yaml",
        "./etc/berth/policy.yaml",
        "./usr/share/bash-completion/completions/berth",
        "./usr/share/zsh/vendor-completions/_berth",
        "./usr/share/fish/vendor_completions.d/berth.fish",
        "./usr/share/doc/berth/changelog.gz",
        "./usr/share/doc/berth/copyright",
        "./usr/share/doc/berth/examples/crontab",
    ]
    .map(str::to_owned)
    .to_vec();
    for page in fs::read_dir(root().join("man")).unwrap() {
        let name = page.unwrap().file_name().into_string().unwrap();
        expected.push(format!("./usr/share/man/man1/{name}.gz"));
    }
    for path in &expected {
        assert!(
            paths.contains(&path.as_str()),
            "{path} is not in {}:\n{}",
            deb.display(),
            listing.stdout()
        );
    }

    let field = |name: &str| {
        run(Command::new("dpkg-deb").arg("--field").arg(&deb).arg(name))
            .stdout()
            .trim()
            .to_owned()
    };
    assert_eq!(field("Version"), VERSION);
    assert_eq!(field("Architecture"), "amd64");
    // A static binary needs no library: the only dependency is useradd's package.
    assert_eq!(field("Depends"), "passwd");
    let conffiles = run(Command::new("dpkg-deb")
        .arg("--info")
        .arg(&deb)
        .arg("conffiles"));
    assert_eq!(
        conffiles.stdout(),
        "/etc/berth/agent.yaml\n/etc/berth/policy.yaml\n"
    );

    // Debian's own checks, overrides (packaging/lintian-overrides) aside.
    let lintian = run(Command::new("lintian")
        .args(["--fail-on", "error,warning"])
        .arg(&deb));
    assert_eq!(
        lintian.code(),
        Some(0),
        "lintian finds problems (script/test installs it):\n{}",
        lintian.text()
    );

    // The packaged binaries are exactly the static ones.
    let agentd = dist(&format!("berth-agentd-{VERSION}-x86_64-linux"));
    for (inside, bin) in [
        ("./usr/bin/berth", &bin),
        ("./usr/bin/berth-agentd", &agentd),
    ] {
        let packaged = Command::new("sh")
            .arg("-c")
            .arg("dpkg-deb --fsys-tarfile \"$1\" | tar -xO \"$2\"")
            .arg("sh")
            .arg(&deb)
            .arg(inside)
            .output()
            .unwrap();
        assert!(packaged.status.success());
        assert!(
            packaged.stdout == fs::read(bin).unwrap(),
            "the .deb's {inside} is not {}: run script/package again",
            bin.display()
        );
    }
}

#[test]
fn deb_installs_into_a_fresh_debian_root() {
    let deb = deb();
    static_binary();
    let host = Root::start(&debian_root(), &deb);
    let installed = "/var/lib/dpkg/info/berth.list";

    // First without a docker group, as on a host whose engine comes later.
    host.sh("dpkg -i /pkg/berth.deb").assert_exit(0);
    assert_eq!(
        host.sh("berth --version").stdout().trim(),
        expected_version()
    );
    assert_eq!(
        host.sh("/usr/bin/berth --version").stdout().trim(),
        expected_version()
    );
    // The daemon `berth agent` hands over to, static too: it runs, and says how it is started.
    let agentd = host.sh("/usr/bin/berth-agentd");
    agentd.assert_exit(3);
    assert!(
        agentd.stderr().contains("`berth agent` starts it"),
        "{}",
        agentd.text()
    );
    let user = host.sh("getent passwd berth");
    user.assert_exit(0);
    let fields: Vec<&str> = user.stdout().trim().split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "berth is not a system user: {}", user.stdout());
    assert_eq!(fields[5..], ["/var/lib/berth", "/usr/sbin/nologin"]);
    assert_eq!(host.sh("id -nG berth").stdout().trim(), "berth");
    assert_eq!(
        host.sh("stat -c '%U:%G %a' /var/lib/berth").stdout().trim(),
        "berth:berth 750"
    );
    assert!(host.sh(&format!("test -s {installed}")).code() == Some(0));

    // Not enabled: the example agent.yaml names no real partner.
    let wants = host.sh("ls /etc/systemd/system/*.wants 2>/dev/null | grep berth");
    assert_eq!(wants.stdout(), "", "a berth unit is enabled");

    // The units as installed: systemd checks every key and that the binary is there, and
    // says nothing when all is well.
    let verify = host.sh(
        "systemd-analyze verify /lib/systemd/system/berth-agent.service \
         /lib/systemd/system/berth-agent-once.service /lib/systemd/system/berth-agent.timer",
    );
    verify.assert_exit(0);
    assert_eq!(verify.text(), "", "systemd-analyze verify complains");
    // The check has teeth: the same unit pointing at a missing binary fails.
    let broken = host.sh(
        "sed 's|^ExecStart=/usr/bin/berth |ExecStart=/usr/bin/berth-missing |' \
           /lib/systemd/system/berth-agent.service >/etc/systemd/system/berth-broken.service \
         && systemd-analyze verify /etc/systemd/system/berth-broken.service",
    );
    broken.assert_exit(1);
    assert!(
        broken
            .text()
            .contains("/usr/bin/berth-missing is not executable"),
        "{}",
        broken.text()
    );
    host.sh("rm /etc/systemd/system/berth-broken.service")
        .assert_exit(0);

    // The shipped policy loads, and the shipped agent.yaml names it (commented out).
    let policy = host.sh("berth validate /m --partner manila-hub --policy /etc/berth/policy.yaml");
    policy.assert_exit(0);
    assert_eq!(policy.stdout(), "/m: valid (0 warning(s))\n");
    assert_eq!(
        host.sh("grep -c '^# policy: /etc/berth/policy.yaml$' /etc/berth/agent.yaml")
            .stdout()
            .trim(),
        "1"
    );
    assert_eq!(
        host.sh("zcat /usr/share/man/man1/berth-agent.1.gz")
            .stdout(),
        fs::read_to_string(root().join("man/berth-agent.1")).unwrap()
    );

    // The engine arrives; reconfiguring the package puts berth in its group (docs/operations.md).
    host.sh("groupadd --system docker && dpkg-reconfigure berth")
        .assert_exit(0);
    let groups = host.sh("id -nG berth").stdout().trim().to_owned();
    assert_eq!(groups, "berth docker");
    assert_eq!(
        host.sh("getent passwd berth")
            .stdout()
            .trim()
            .split(':')
            .nth(2),
        Some(uid.to_string().as_str()),
        "a reinstall made a new user"
    );

    // Purge: the package's files, conffiles and state go; the user stays (docs/operations.md).
    host.sh("touch /var/lib/berth/status.json && dpkg --purge berth")
        .assert_exit(0);
    for gone in [
        "/usr/bin/berth",
        "/usr/bin/berth-agentd",
        "/lib/systemd/system/berth-agent.service",
        "/etc/berth/agent.yaml",
        "/var/lib/berth",
        installed,
    ] {
        assert_eq!(
            host.sh(&format!("test -e {gone}")).code(),
            Some(1),
            "{gone} is left after purge"
        );
    }
    host.sh("getent passwd berth").assert_exit(0);
}

#[test]
fn image_validates_a_mounted_repo() {
    let image = image();
    let manifests = root().join("manifests");
    let valid = docker_run(&image, &manifests, &[], &["validate", "/m"]);
    valid.assert_exit(0);
    assert_eq!(valid.stdout(), "/m: valid (0 warning(s))\n");

    let fixture = root().join("tests/fixtures/invalid/bad-port");
    let invalid = docker_run(&image, &fixture, &[], &["validate", "/m"]);
    invalid.assert_exit(1);
    assert!(
        invalid
            .stdout()
            .starts_with(&first_expected_error("bad-port")),
        "{}",
        invalid.text()
    );
    // As examples/ci/github-actions.yml runs it: as the runner's user, in the checkout.
    let annotated = docker_run(
        &image,
        &fixture,
        &["--user", "65534:65534", "-w", "/m"],
        &["validate", "--format", "github"],
    );
    annotated.assert_exit(1);
    assert_eq!(
        annotated.stdout(),
        "::error file=scripts/counts.yaml,line=10,col=11::invalid port `127.0.0.1:9000:90000`: \
         ports are numbers from 1 to 65535\n"
    );

    // Names resolve in an image without NSS modules (glibc linked statically): a registry
    // at `localhost` is looked up in the engine's /etc/hosts and refuses the connection.
    let repo = tempfile::tempdir().unwrap();
    run(Command::new("cp")
        .arg("-r")
        .arg(root().join("tests/fixtures/minimal/."))
        .arg(repo.path()))
    .assert_exit(0);
    let script = repo.path().join("scripts/counts.yaml");
    let text = fs::read_to_string(&script).unwrap();
    fs::write(
        &script,
        text.replace("registry: 127.0.0.1:5000", "registry: localhost:1"),
    )
    .unwrap();
    let lookup = docker_run(&image, repo.path(), &[], &["lock", "/m", "--check"]);
    lookup.assert_exit(3);
    assert!(
        lookup.stderr().contains("localhost:1") && lookup.stderr().contains("Connection refused"),
        "{}",
        lookup.text()
    );

    // FROM scratch: one layer, holding the binary, the CA bundle and /tmp, nothing else.
    let layers = docker(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}}",
        &image,
    ]);
    assert_eq!(layers, "1");
    let saved = Command::new("sh")
        .arg("-c")
        .arg(
            "d=$(mktemp -d) && trap 'rm -rf \"$d\"' EXIT && docker save \"$1\" | tar -C \"$d\" -x \
             && for l in \"$d\"/*/layer.tar; do tar -tf \"$l\"; done",
        )
        .arg("sh")
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    let mut files: Vec<String> = String::from_utf8(saved.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.ends_with('/') || *l == "tmp/")
        .map(str::to_owned)
        .collect();
    files.sort();
    assert_eq!(files, IMAGE_FILES);
    assert_eq!(
        docker(&[
            "image",
            "inspect",
            "--format",
            "{{json .Config.Entrypoint}}",
            &image
        ]),
        r#"["/usr/bin/berth"]"#
    );
}

/// `docker run --rm -v <repo>:/m:ro <options> <image> <args>`, as a manifest repo's CI runs it.
fn docker_run(image: &str, repo: &Path, options: &[&str], args: &[&str]) -> Run {
    run(Command::new("docker")
        .args(["run", "--rm", "-v"])
        .arg(format!("{}:/m:ro", repo.display()))
        .args(options)
        .arg(image)
        .args(args))
}

/// The fresh-root image for this host's Debian release, made on first use (about a minute).
fn debian_root() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            require_docker();
            let release = fs::read_to_string("/etc/os-release").unwrap();
            let codename = release
                .lines()
                .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
                .expect("/etc/os-release names VERSION_CODENAME: these tests need a Debian host");
            let image = format!("berth-test/debian-root:{codename}");
            if run(Command::new("docker").args(["image", "inspect", &image])).code() == Some(0) {
                return image;
            }
            let targets = run(Command::new("apt-get").args([
                "indextargets",
                "--format",
                "$(REPO_URI) $(RELEASE)",
                "Identifier: Packages",
            ]));
            targets.assert_exit(0);
            let mirror = targets
                .stdout()
                .lines()
                .find_map(|l| l.strip_suffix(&format!(" {codename}")))
                .unwrap_or_else(|| {
                    panic!(
                        "no apt source for {codename} on this host:\n{}",
                        targets.stdout()
                    )
                })
                .to_owned();
            assert!(
                Path::new("/usr/sbin/debootstrap").exists(),
                "debootstrap is missing: script/test installs it (apt-get install debootstrap)"
            );
            let dir = tempfile::tempdir().unwrap();
            let boot = run(Command::new("debootstrap")
                .args(["--variant=minbase", "--include=systemd", codename])
                .arg(dir.path())
                .arg(&mirror));
            boot.assert_exit(0);
            let mut tar = Command::new("tar")
                .arg("-C")
                .arg(dir.path())
                .args(["-c", "."])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let import = run(Command::new("docker")
                .args(["import", "-", &image])
                .stdin(tar.stdout.take().unwrap()));
            assert!(tar.wait().unwrap().success());
            import.assert_exit(0);
            image
        })
        .clone()
}

/// A new container of the fresh root, with the .deb at /pkg/berth.deb and `manifests/` at
/// /m; removed when dropped.
struct Root {
    name: String,
}

impl Root {
    fn start(image: &str, deb: &Path) -> Root {
        let name = format!("berth-test-{}", unique_partner("deb"));
        let started = run(Command::new("docker")
            .args(["run", "-d", "--name", &name, "-v"])
            .arg(format!("{}:/pkg/berth.deb:ro", deb.display()))
            .arg("-v")
            .arg(format!("{}:/m:ro", root().join("manifests").display()))
            .args([image, "sleep", "infinity"]));
        let root = Root { name };
        started.assert_exit(0);
        root
    }

    /// A shell command inside the root, as root.
    fn sh(&self, script: &str) -> Run {
        run(Command::new("docker").args(["exec", &self.name, "sh", "-c", script]))
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
    }
}
