//! The multi-component targets (design §10), measured as a partner runs berth: `berth agent
//! --once` following `main` of a git repo (over `file://`). One fleet of 10 scripts × 5
//! components (50 containers) and the equivalent docker-compose project of 50 services are
//! started once and shared by both targets: a no-op pass vs a no-op `docker-compose up -d`,
//! and an update of one component's env (engine writes through the counting proxy, which
//! containers changed, unavailability vs a raw `docker stop` + `docker start`, and what
//! compose recreates for the same change).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Poller, median, must, proxy, timed, verdict, wait_up};

const REPO: &str = super::REPO;
const PARTNER: &str = "bench-mc";
const PROJECT: &str = "berthbenchmc";
const SCRIPTS: usize = 10;
/// `api` depends on every worker (`started`), as an API on its workers would.
const COMPONENTS: [&str; 5] = ["api", "w1", "w2", "w3", "w4"];
/// Published ports: berth's components 19100.., compose's services 19200.., the raw pair 19300.
const BERTH_PORTS: u16 = 19100;
const COMPOSE_PORTS: u16 = 19200;
const RAW_PORT: u16 = 19300;
/// The component the update target changes: a worker that `api` depends on.
const CHANGED_SCRIPT: usize = 3;
const CHANGED: &str = "w1";

fn runs() -> usize {
    std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(5)
}

fn script_name(s: usize) -> String {
    format!("s{s:02}")
}

fn port(base: u16, s: usize, c: usize) -> u16 {
    base + (s * COMPONENTS.len() + c) as u16
}

/// The env of a component: the changed one carries the revision of the update.
fn env(s: usize, component: &str, rev: u32) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("LISTEN", "0.0.0.0:8080".to_owned()),
        ("COMPONENT", component.to_owned()),
    ];
    if s == CHANGED_SCRIPT && component == CHANGED {
        env.push(("REV", rev.to_string()));
    }
    env
}

/// The manifest repo: the partner opts into every script; each script has five components
/// on its own network, `api` with the script's named volume.
fn write_manifests(dir: &Path, rev: u32) {
    std::fs::create_dir_all(dir.join("partners")).unwrap();
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    let mut partner = format!(
        "apiVersion: berth/v1\nkind: Partner\nname: {PARTNER}\nwindows:\n  - days: [mon, tue, wed, thu, fri, sat, sun]\n    start: \"00:00\"\n    end: \"24:00\"\nscripts:\n"
    );
    for s in 0..SCRIPTS {
        let name = script_name(s);
        let _ = writeln!(partner, "  - script: {name}");
        let mut script = format!(
            "apiVersion: berth/v1\nkind: Script\nname: {name}\nimage: {{ source: local, repository: {REPO} }}\nversions: \"=1.0.0\"\nvolumes: {{ data: {{}} }}\ncomponents:\n"
        );
        for (c, component) in COMPONENTS.iter().enumerate() {
            let p = port(BERTH_PORTS, s, c);
            let env: Vec<String> = env(s, component, rev)
                .into_iter()
                .map(|(k, v)| format!("{k}: \"{v}\""))
                .collect();
            let _ = writeln!(
                script,
                "  {component}:\n    container:\n      env: {{ {} }}\n      ports: [\"127.0.0.1:{p}:8080\"]",
                env.join(", ")
            );
            if *component == "api" {
                let deps: Vec<String> = COMPONENTS[1..]
                    .iter()
                    .map(|d| format!("{d}: started"))
                    .collect();
                let _ = writeln!(
                    script,
                    "      volumes: [\"data:/data\"]\n    depends_on: {{ {} }}",
                    deps.join(", ")
                );
            }
            let _ = writeln!(
                script,
                "    health: {{ http: \"http://127.0.0.1:{p}/health\", timeout: 30s }}"
            );
        }
        std::fs::write(dir.join(format!("scripts/{name}.yaml")), script).unwrap();
    }
    std::fs::write(dir.join(format!("partners/{PARTNER}.yaml")), partner).unwrap();
}

/// The same 50 services for docker-compose: the image by id, the same env, ports on
/// 127.0.0.1, one network per script (the component reachable by its name), the volume,
/// `depends_on`, init, restart policy and stop timeout as berth sets them.
fn write_compose(dir: &Path, image_id: &str, rev: u32) {
    let mut out = String::from("version: \"2.4\"\nservices:\n");
    for s in 0..SCRIPTS {
        let name = script_name(s);
        for (c, component) in COMPONENTS.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {name}-{component}:\n    image: {image_id}\n    init: true\n    restart: unless-stopped\n    stop_grace_period: 10s\n    environment:"
            );
            for (k, v) in env(s, component, rev) {
                let _ = writeln!(out, "      {k}: \"{v}\"");
            }
            let _ = writeln!(
                out,
                "    ports: [\"127.0.0.1:{}:8080\"]\n    networks:\n      {name}:\n        aliases: [{component}]\n    labels:\n      berth.bench: mc",
                port(COMPOSE_PORTS, s, c)
            );
            if *component == "api" {
                let _ = writeln!(out, "    volumes: [\"{name}-data:/data\"]\n    depends_on:");
                for d in &COMPONENTS[1..] {
                    let _ = writeln!(out, "      {name}-{d}: {{ condition: service_started }}");
                }
            }
        }
    }
    out.push_str("networks:\n");
    for s in 0..SCRIPTS {
        let _ = writeln!(out, "  {}: {{}}", script_name(s));
    }
    out.push_str("volumes:\n");
    for s in 0..SCRIPTS {
        let _ = writeln!(out, "  {}-data: {{}}", script_name(s));
    }
    std::fs::write(dir.join("docker-compose.yml"), out).unwrap();
}

/// The shared fleet; dropping it removes everything the two targets created.
pub struct Fleet {
    repo: PathBuf,
    config: PathBuf,
    state: PathBuf,
    compose_dir: PathBuf,
    image_id: String,
}

impl Fleet {
    pub fn start(work: &Path, report: &mut String) -> Fleet {
        cleanup();
        let image_id = String::from_utf8(
            must(Command::new("docker").args([
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
                &format!("{REPO}:1.0.0"),
            ]))
            .stdout,
        )
        .unwrap()
        .trim()
        .to_owned();
        let repo = work.join("mc-git");
        write_manifests(&repo, 0);
        let fleet = Fleet {
            config: work.join("mc-agent.yaml"),
            state: work.join("mc-state"),
            compose_dir: work.join("mc-compose"),
            repo,
            image_id,
        };
        fleet.git(&["init", "-q", "-b", "main"]);
        fleet.git(&["add", "-A"]);
        fleet.git(&["commit", "-q", "-m", "manifests"]);
        std::fs::write(
            &fleet.config,
            format!(
                "partner: {PARTNER}\nrepo:\n  url: file://{}\n  branch: main\ninterval: 1h\nstate_dir: {}\n",
                fleet.repo.display(),
                fleet.state.display()
            ),
        )
        .unwrap();
        let first = timed(&mut fleet.pass());
        std::fs::create_dir_all(&fleet.compose_dir).unwrap();
        write_compose(&fleet.compose_dir, &fleet.image_id, 0);
        let first_compose = timed(&mut fleet.compose_up());
        let _ = writeln!(
            report,
            "components: first pass creating 10 scripts x 5 components: berth {first:.1}s (each waits for its health), docker-compose up -d {first_compose:.1}s (for information)"
        );
        fleet
    }

    fn git(&self, args: &[&str]) {
        must(
            Command::new("git")
                .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
                .args(args)
                .current_dir(&self.repo),
        );
    }

    /// One agent pass, as a partner's host runs it (fetch, validate, converge).
    fn pass(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.args(["agent", "--once", "--config"]).arg(&self.config);
        c
    }

    fn compose_up(&self) -> Command {
        let mut c = Command::new("docker-compose");
        c.current_dir(&self.compose_dir)
            .args(["-p", PROJECT, "up", "-d"]);
        c
    }

    /// Commits the change of the changed component's env to revision `rev`, and writes the
    /// compose file's equivalent.
    fn change(&self, rev: u32) {
        write_manifests(&self.repo, rev);
        self.git(&["commit", "-q", "-am", &format!("{CHANGED} rev {rev}")]);
        write_compose(&self.compose_dir, &self.image_id, rev);
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        cleanup();
    }
}

/// Removes the containers, networks and volumes of both fleets and of the raw pair (berth
/// never deletes volumes, so the bench removes its own).
fn cleanup() {
    let quiet = |args: &[&str]| {
        let out = Command::new("docker")
            .args(args)
            .output()
            .expect("docker runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
    };
    for label in [
        format!("label=berth.partner={PARTNER}"),
        format!("label=com.docker.compose.project={PROJECT}"),
        "label=berth.bench=mc".to_owned(),
    ] {
        let ids = quiet(&["ps", "-aq", "--filter", &label]);
        if !ids.is_empty() {
            quiet(
                &[
                    &["rm", "-f"][..],
                    &ids.iter().map(String::as_str).collect::<Vec<_>>(),
                ]
                .concat(),
            );
        }
    }
    let prefix = format!("berth-{PARTNER}-");
    let ours = |name: &String| {
        name.starts_with(&prefix)
            || name.starts_with(&format!("{PROJECT}_"))
            || name == "berth-bench-mc-raw-net"
    };
    let networks: Vec<String> = quiet(&["network", "ls", "--format", "{{.Name}}"])
        .into_iter()
        .filter(ours)
        .collect();
    if !networks.is_empty() {
        quiet(
            &[
                &["network", "rm"][..],
                &networks.iter().map(String::as_str).collect::<Vec<_>>(),
            ]
            .concat(),
        );
    }
    let volumes: Vec<String> = quiet(&["volume", "ls", "--format", "{{.Name}}"])
        .into_iter()
        .filter(ours)
        .collect();
    if !volumes.is_empty() {
        quiet(
            &[
                &["volume", "rm"][..],
                &volumes.iter().map(String::as_str).collect::<Vec<_>>(),
            ]
            .concat(),
        );
    }
}

/// Name -> (id, StartedAt) of every container with a label.
fn snapshot(label: &str) -> BTreeMap<String, (String, String)> {
    let ids = String::from_utf8(
        must(Command::new("docker").args([
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label={label}"),
        ]))
        .stdout,
    )
    .unwrap();
    let ids: Vec<&str> = ids.lines().collect();
    if ids.is_empty() {
        return BTreeMap::new();
    }
    let out = must(
        Command::new("docker")
            .args([
                "inspect",
                "--format",
                "{{.Name}} {{.Id}} {{.State.StartedAt}}",
            ])
            .args(&ids),
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((
                f.next()?.trim_start_matches('/').to_owned(),
                (f.next()?.to_owned(), f.next()?.to_owned()),
            ))
        })
        .collect()
}

/// The names whose container is not the same one (another id) or was restarted.
fn changed(
    before: &BTreeMap<String, (String, String)>,
    after: &BTreeMap<String, (String, String)>,
) -> Vec<String> {
    let mut names: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|n| before.get(*n) != after.get(*n))
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}

/// No-op agent pass over 50 containers vs no-op `docker-compose up -d` of the same services.
pub fn noop(fleet: &Fleet, report: &mut String) {
    let runs = runs();
    let mut berth_times = Vec::new();
    let mut compose_times = Vec::new();
    for _ in 0..runs {
        berth_times.push(timed(&mut fleet.pass()));
        compose_times.push(timed(&mut fleet.compose_up()));
    }
    // For information: the same no-op pass as `berth apply` on the plain directory (the
    // git work tree), without the agent's fetch.
    let mut apply_times = Vec::new();
    for _ in 0..runs {
        apply_times.push(timed(
            Command::new(env!("CARGO_BIN_EXE_berth"))
                .arg("apply")
                .arg(&fleet.repo)
                .args(["--partner", PARTNER, "--state-dir"])
                .arg(&fleet.state),
        ));
    }
    let (b, c) = (median(berth_times), median(compose_times));
    let ratio = b / c;
    let a = median(apply_times);
    let _ = writeln!(
        report,
        "components: no-op pass, 10 scripts x 5 components (50 containers), agent --once following a git repo: berth {b:.3}s vs docker-compose up -d {c:.3}s (medians of {runs}): {:.1}% (target <= 5%) {}; `berth apply` on the plain directory {a:.3}s ({:.1}%, for information)",
        ratio * 100.0,
        verdict(ratio <= 0.05),
        a / c * 100.0
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy::Proxy::start(dir.path());
    must(fleet.pass().env("DOCKER_HOST", proxy.docker_host()));
    let writes: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("POST") || r.starts_with("DELETE") || r.starts_with("PUT"))
        .collect();
    let _ = writeln!(
        report,
        "components: engine calls in that no-op pass: {} container list, {} changes (target 0) {}",
        proxy.count("GET", "/containers/json"),
        writes.len(),
        verdict(writes.is_empty())
    );
    for w in writes {
        let _ = writeln!(report, "components:   unexpected write: {w}");
    }
}

/// What a write request does, from its request line: `create`, `start`, `stop`, ….
fn verb(line: &str) -> String {
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let path = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // /v1.xx/containers/{id}/start, /v1.xx/containers/create, DELETE /v1.xx/containers/{id}
    let parts: &[&str] = if parts.first().is_some_and(|p| p.starts_with('v')) {
        &parts[1..]
    } else {
        &parts
    };
    match (line.starts_with("DELETE"), parts) {
        (true, [kind, _]) => format!("remove {kind}"),
        (_, [kind, "create"]) => format!("create {kind}"),
        (_, [kind, _, action]) => format!("{action} {kind}"),
        _ => path.to_owned(),
    }
}

/// Updating one component of five: engine writes, which containers changed, unavailability
/// vs raw stop + start, and what compose recreates for the same change.
pub fn update(fleet: &Fleet, report: &mut String) {
    let runs = runs();
    let s = CHANGED_SCRIPT;
    let c = COMPONENTS.iter().position(|n| *n == CHANGED).unwrap();
    let name = format!("berth-{PARTNER}-{}-{CHANGED}", script_name(s));
    let berth_port = port(BERTH_PORTS, s, c);
    let label = format!("berth.partner={PARTNER}");

    // The first update through the counting proxy: what berth writes, and to which container.
    let before = snapshot(&label);
    fleet.change(1);
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy::Proxy::start(dir.path());
    must(fleet.pass().env("DOCKER_HOST", proxy.docker_host()));
    wait_up(berth_port);
    let after = snapshot(&label);
    let (old_id, new_id) = (
        before.get(&name).map(|v| v.0.clone()).unwrap_or_default(),
        after.get(&name).map(|v| v.0.clone()).unwrap_or_default(),
    );
    let writes: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("POST") || r.starts_with("DELETE") || r.starts_with("PUT"))
        .collect();
    let short = |id: &str| id.get(..12).unwrap_or(id).to_owned();
    let on_component = |w: &String| {
        (!old_id.is_empty() && w.contains(&short(&old_id)))
            || (!new_id.is_empty() && w.contains(&short(&new_id)))
            || w.contains(&format!("name={name}"))
    };
    let stray: Vec<&String> = writes.iter().filter(|w| !on_component(w)).collect();
    let changed_names = changed(&before, &after);
    let ok = stray.is_empty()
        && changed_names == [name.clone()]
        && !old_id.is_empty()
        && !new_id.is_empty()
        && old_id != new_id
        && before.len() == after.len();
    let verbs: Vec<String> = writes.iter().map(|w| verb(w)).collect();
    let _ = writeln!(
        report,
        "components: update of one component ({name}, env changed): {} engine writes [{}], all on its old container {} or its new one {}; containers changed: {} of {} [{}] (target: only that component) {}",
        writes.len(),
        verbs.join(", "),
        short(&old_id),
        short(&new_id),
        changed_names.len(),
        before.len(),
        changed_names.join(", "),
        verdict(ok)
    );
    for w in stray {
        let _ = writeln!(report, "components:   write on another container: {w}");
    }

    // Unavailability of that component, side by side with a raw stop + start of an
    // equivalent pre-created container (same image, env, init, published port, a network).
    let mut berth_gaps = Vec::new();
    let mut raw_gaps = Vec::new();
    let mut passes = Vec::new();
    must(Command::new("docker").args([
        "network",
        "create",
        "--label",
        "berth.bench=mc",
        "berth-bench-mc-raw-net",
    ]));
    for round in 0..runs {
        fleet.change(2 + round as u32);
        let poller = Poller::start(berth_port);
        passes.push(timed(&mut fleet.pass()));
        wait_up(berth_port);
        berth_gaps.push(poller.finish().as_secs_f64());

        let old = format!("berth-bench-mc-raw-old-{round}");
        let new = format!("berth-bench-mc-raw-new-{round}");
        let publish = format!("127.0.0.1:{RAW_PORT}:8080");
        for (n, run) in [(&old, true), (&new, false)] {
            let verb = if run {
                ["run", "-d"].as_slice()
            } else {
                ["create"].as_slice()
            };
            must(Command::new("docker").args(verb).args([
                "--name",
                n,
                "--init",
                "--restart",
                "unless-stopped",
                "--network",
                "berth-bench-mc-raw-net",
                "-p",
                &publish,
                "-e",
                "LISTEN=0.0.0.0:8080",
                "-e",
                &format!("REV={round}"),
                "--label",
                "berth.bench=mc",
                &fleet.image_id,
            ]));
        }
        wait_up(RAW_PORT);
        let poller = Poller::start(RAW_PORT);
        must(Command::new("docker").args(["stop", &old]));
        must(Command::new("docker").args(["start", &new]));
        wait_up(RAW_PORT);
        raw_gaps.push(poller.finish().as_secs_f64());
        must(Command::new("docker").args(["rm", "-f", &old, &new]));
    }
    let (b, r) = (median(berth_gaps), median(raw_gaps));
    let _ = writeln!(
        report,
        "components: unavailability of the updated component: berth {:.0}ms vs docker stop + docker start {:.0}ms (medians of {runs}; the whole pass {:.2}s): {:.2}x (target <= 1.25x) {}",
        b * 1000.0,
        r * 1000.0,
        median(passes),
        b / r,
        verdict(b / r <= 1.25)
    );

    // The same change (the compose file has followed every revision above; this is one
    // more) with docker-compose: which services' containers it replaced or restarted; then
    // one more with `--always-recreate-deps`, compose's option for recreating dependents.
    let compose_label = format!("com.docker.compose.project={PROJECT}");
    let dependent = format!("{}-api", script_name(s));
    let mut line = format!(
        "components: docker-compose after the same change ({}-{CHANGED}'s env; {dependent} depends_on it):",
        script_name(s)
    );
    for (i, extra) in [&[][..], &["--always-recreate-deps"][..]]
        .iter()
        .enumerate()
    {
        let before = snapshot(&compose_label);
        fleet.change(2 + (runs + i) as u32);
        let t = timed(fleet.compose_up().args(*extra));
        let after = snapshot(&compose_label);
        let recreated: Vec<String> = changed(&before, &after)
            .into_iter()
            .map(|n| {
                n.trim_start_matches(&format!("{PROJECT}_"))
                    .trim_end_matches("_1")
                    .to_owned()
            })
            .collect();
        let _ = write!(
            line,
            "{} `up -d{}` took {t:.2}s and recreated {} of {} services [{}], {}",
            if i == 0 { "" } else { ";" },
            extra.iter().map(|e| format!(" {e}")).collect::<String>(),
            recreated.len(),
            after.len(),
            recreated.join(", "),
            if recreated.contains(&dependent) {
                "its dependent too"
            } else {
                "not its dependent"
            }
        );
    }
    let _ = writeln!(line, " (berth replaced only {name})");
    report.push_str(&line);
    // Catch berth up with the last revision too, so both fleets end at the same manifests.
    must(&mut fleet.pass());
}
