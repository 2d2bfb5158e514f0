//! `engine: swarm` on a single-node swarm: a private `dockerd` in its own network namespace
//! (never the machine's engine), given a veth address to advertise and made a manager
//! with `docker swarm init`. berth runs in that namespace with `--engine swarm`: a script
//! becomes a replicated service with berth's labels, an update is start-first and judged
//! by berth's health gate, a failed one is rolled back to the previous spec while the old
//! tasks serve on, a service scaled or removed by hand is put back, and berth killed at
//! each step of an update leaves the service serving and the next run finishes it. Also
//! what each engine refuses, at the manifest's lines.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::dockerd::PrivateEngine;
use crate::common::{Berth, Host, IMAGE_REPO, UNHEALTHY, run};

/// A private engine made a one-node swarm manager; leaves the swarm when dropped, so the
/// engine's own teardown finds no service to bring its containers back.
struct Swarm {
    engine: PrivateEngine,
}

impl Swarm {
    fn start(tag: &str) -> Swarm {
        let engine = PrivateEngine::start(tag);
        // PrivateEngine names its namespace after the tag and this process.
        let ns = format!("berth-{tag}-{}", std::process::id());
        let ip = |args: &[&str]| {
            run(Command::new("ip")
                .args(["netns", "exec", &ns, "ip"])
                .args(args))
            .assert_exit(0);
        };
        // Swarm needs an address other than loopback to advertise; no dummy module here,
        // so a veth pair inside the namespace.
        ip(&["link", "add", "sw0", "type", "veth", "peer", "name", "sw1"]);
        ip(&["addr", "add", "10.251.7.1/24", "dev", "sw0"]);
        ip(&["link", "set", "sw0", "up"]);
        ip(&["link", "set", "sw1", "up"]);
        engine
            .docker(&["swarm", "init", "--advertise-addr", "10.251.7.1"])
            .assert_exit(0);
        for v in ["1.0.0", "1.1.0", UNHEALTHY] {
            engine.load(&format!("{IMAGE_REPO}:{v}"));
        }
        Swarm { engine }
    }

    /// `berth <cmd> <repo> --partner P --state-dir D --engine swarm` in the namespace.
    fn command(&self, host: &Host, cmd: &str) -> Berth {
        self.engine
            .berth(cmd)
            .arg(host.repo())
            .args(["--partner", &host.partner, "--state-dir"])
            .arg(host.state_dir())
            .args(["--engine", "swarm"])
    }

    fn berth(&self, host: &Host, cmd: &str, extra: &[&str]) -> crate::common::Run {
        self.command(host, cmd).args(extra).run()
    }

    /// How many of the service's task containers the engine reports healthy.
    fn healthy_tasks(&self, service: &str) -> usize {
        self.docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={service}"),
            "--filter",
            "health=healthy",
        ])
        .lines()
        .count()
    }

    fn docker(&self, args: &[&str]) -> String {
        let out = self.engine.docker(args);
        out.assert_exit(0);
        out.stdout().trim().to_owned()
    }

    /// The berth.version of every running task container, sorted.
    fn task_versions(&self, service: &str) -> Vec<String> {
        let mut versions: Vec<String> = self
            .docker(&[
                "ps",
                "--filter",
                &format!("label=com.docker.swarm.service.name={service}"),
                "--format",
                "{{.Label \"berth.version\"}}",
            ])
            .lines()
            .map(str::to_owned)
            .collect();
        versions.sort();
        versions
    }

    /// Waits until the service's running tasks are `want`.
    fn wait_tasks(&self, service: &str, want: &[&str]) {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.task_versions(service);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < end,
                "tasks of {service}: {got:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let _ = self.engine.docker(&["swarm", "leave", "--force"]);
    }
}

fn script(host: &Host, replicas: u32) -> String {
    format!(
        "apiVersion: berth/v1\nkind: Script\nname: svc\nimage:\n  source: local\n  repository: {IMAGE_REPO}\n\
         versions: \"*\"\nreplicas: {replicas}\ncontainer:\n  env: {{ PORT: \"{port}\" }}\n  stop_timeout: 2s\n\
         health:\n  exec: [/serve, check]\n  timeout: 30s\n",
        port = host.port
    )
}

fn write(host: &Host, versions: &str, replicas: u32) {
    std::fs::write(
        host.repo().join(format!("partners/{}.yaml", host.partner)),
        format!(
            "apiVersion: berth/v1\nkind: Partner\nname: {}\ntimezone: UTC\nwindows:\n  - days: [mon, tue, wed, thu, fri, sat, sun]\n    start: \"00:00\"\n    end: \"24:00\"\n\
             scripts:\n  - script: svc\n    versions: \"{versions}\"\n",
            host.partner
        ),
    )
    .unwrap();
    std::fs::write(host.repo().join("scripts/svc.yaml"), script(host, replicas)).unwrap();
}

#[test]
fn a_service_is_created_updated_start_first_rolled_back_and_put_back_after_drift() {
    let host = Host::new("swarm");
    let swarm = Swarm::start("swarm");
    let service = host.name();

    write(&host, "=1.0.0", 2);
    swarm.berth(&host, "apply", &[]).assert_exit(0);
    swarm.wait_tasks(&service, &["1.0.0", "1.0.0"]);
    let labels = swarm.docker(&[
        "service",
        "inspect",
        &service,
        "--format",
        "{{index .Spec.Labels \"berth.partner\"}} {{index .Spec.Labels \"berth.version\"}} {{.Spec.Mode.Replicated.Replicas}} {{.Spec.UpdateConfig.Order}}",
    ]);
    assert_eq!(labels, format!("{} 1.0.0 2 start-first", host.partner));
    let status = swarm.berth(&host, "plan", &[]);
    status.assert_exit(0);
    assert!(
        status.stdout().contains("2/2 tasks"),
        "plan shows the tasks: {}",
        status.stdout()
    );

    // An update, start-first: two healthy tasks serve all along (a new task starts and is
    // healthy before an old one stops), and berth's gate waits for the new tasks' health.
    write(&host, "=1.1.0", 2);
    let mut apply = swarm.command(&host, "apply").spawn();
    let mut fewest = usize::MAX;
    let exit = loop {
        fewest = fewest.min(swarm.healthy_tasks(&service));
        if let Some(exit) = apply.try_wait().unwrap() {
            break exit;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    assert_eq!(fewest, 2, "fewer healthy tasks during the update");
    // The old tasks are being stopped by Swarm once the new ones serve.
    swarm.wait_tasks(&service, &["1.1.0", "1.1.0"]);

    // A version whose health fails: the update is rolled back, the old tasks serve on and
    // the digest is held.
    write(&host, UNHEALTHY, 2);
    let failed = swarm.berth(&host, "apply", &[]);
    failed.assert_exit(1);
    assert!(failed.text().contains("ROLLED BACK"), "{}", failed.text());
    swarm.wait_tasks(&service, &["1.1.0", "1.1.0"]);
    let version = swarm.docker(&[
        "service",
        "inspect",
        &service,
        "--format",
        "{{index .Spec.Labels \"berth.version\"}}",
    ]);
    assert_eq!(version, "1.1.0");

    // Drift: scaled down by hand, then removed by hand; each pass puts it back.
    write(&host, "=1.1.0", 2);
    swarm.docker(&["service", "scale", "--detach", &format!("{service}=1")]);
    swarm.wait_tasks(&service, &["1.1.0"]);
    swarm.berth(&host, "apply", &[]).assert_exit(0);
    swarm.wait_tasks(&service, &["1.1.0", "1.1.0"]);
    swarm.docker(&["service", "rm", &service]);
    swarm.berth(&host, "apply", &[]).assert_exit(0);
    swarm.wait_tasks(&service, &["1.1.0", "1.1.0"]);

    // Killed (abort, as kill -9) at each step of an update in turn, the target switching
    // between 1.0.0 and 1.1.0: one service stays, its tasks of either version serving; the
    // next run rolls the journal's update back or forward and carries the update out. A
    // run past the last step is not killed.
    let mut versions = ["1.0.0", "1.1.0"];
    let mut steps = 0;
    loop {
        versions.swap(0, 1);
        let [from, to] = versions;
        write(&host, &format!("={to}"), 2);
        let killed = swarm
            .command(&host, "apply")
            .env("BERTH_ABORT_AFTER", (steps + 1).to_string())
            .run();
        if killed.code() == Some(0) {
            assert!(
                killed.text().contains(&format!("{from} -> {to}")),
                "{}",
                killed.text()
            );
            swarm.wait_tasks(&service, &[to, to]);
            break;
        }
        steps += 1;
        assert_eq!(killed.code(), None, "aborted at {steps}: {}", killed.text());
        let services = swarm.docker(&[
            "service",
            "ls",
            "-q",
            "--filter",
            &format!("name={service}"),
        ]);
        assert_eq!(
            services.lines().count(),
            1,
            "one service after an abort at {steps}"
        );
        let serving = swarm.task_versions(&service);
        assert!(
            !serving.is_empty() && serving.iter().all(|v| v == from || v == to),
            "aborted at {steps}: tasks {serving:?}"
        );
        assert!(
            swarm.healthy_tasks(&service) >= 1,
            "aborted at {steps}: none healthy"
        );
        let recovered = swarm.berth(&host, "apply", &[]);
        recovered.assert_exit(0);
        swarm.wait_tasks(&service, &[to, to]);
    }
    assert_eq!(steps, 3, "an update in place passes three fault points");

    // Back to 1.1.0 with three replicas. The agent, with `engine: swarm` in
    // agent.yaml, does it; its status shows the tasks and their node.
    write(&host, "=1.1.0", 3);
    host.commit_all("three replicas");
    let config = host.agent_config(
        &format!("  url: {}\n", host.repo().display()),
        "engine: swarm\n",
    );
    let agent = |config: &std::path::Path| {
        swarm
            .engine
            .berth("agent")
            .args(["--once", "--config"])
            .arg(config)
            .run()
    };
    agent(&config).assert_exit(0);
    swarm.wait_tasks(&service, &["1.1.0", "1.1.0", "1.1.0"]);
    // `--engine swarm` over an agent.yaml without `engine:`; one engine's view of the same
    // host never takes the services' task containers for its own.
    let plain = host.agent_config(&format!("  url: {}\n", host.repo().display()), "");
    swarm
        .engine
        .berth("agent")
        .args(["--once", "--engine", "swarm", "--config"])
        .arg(&plain)
        .run()
        .assert_exit(0);
    let one_engine = swarm
        .engine
        .berth("plan")
        .arg(host.repo())
        .args(["--partner", &host.partner, "--state-dir"])
        .arg(host.state_dir())
        .run();
    one_engine.assert_exit(1);
    assert!(
        one_engine.stdout().contains("  create   svc ")
            && one_engine
                .stdout()
                .contains("replicas/placement need engine: swarm")
            && !one_engine.stdout().contains("remove"),
        "{}",
        one_engine.stdout()
    );
    let status = swarm
        .engine
        .berth("status")
        .arg("--state-dir")
        .arg(host.state_dir())
        .run();
    status.assert_exit(0);
    let host_name = swarm.docker(&["info", "--format", "{{.Name}}"]);
    assert!(
        status
            .stdout()
            .contains(&format!("(3/3 tasks on {host_name})")),
        "{}",
        status.stdout()
    );
}

#[test]
fn each_engine_refuses_what_it_cannot_run_at_the_manifests_lines() {
    let host = Host::new("swarm-refuse");
    write(&host, "^1", 2);
    let validate = |engine: &str| {
        crate::common::Berth::new("validate")
            .arg(host.repo())
            .args(["--partner", &host.partner, "--engine", engine])
            .run()
    };
    let one = validate("docker");
    one.assert_exit(1);
    assert!(
        one.text().contains("scripts/svc.yaml:8:11: error: ")
            && one
                .text()
                .contains("would be refused: replicas: replicas/placement need engine: swarm"),
        "{}",
        one.text()
    );
    validate("swarm").assert_exit(0);

    let none = script(&host, 2).replace(
        "  stop_timeout: 2s\n",
        "  stop_timeout: 2s\n  network: none\n",
    );
    std::fs::write(host.repo().join("scripts/svc.yaml"), none).unwrap();
    let swarm = validate("swarm");
    swarm.assert_exit(1);
    assert!(
        swarm.text().contains(
            "would be refused: network none: the engine API cannot attach a Swarm service to `none` (engine: swarm)"
        ),
        "{}",
        swarm.text()
    );
}

#[test]
fn a_stateful_component_stays_on_its_node_with_its_volume_across_an_update() {
    let host = Host::new("swarm-state");
    let swarm = Swarm::start("swarm-state");
    let partner = &host.partner;
    let write = |db: &str| {
        std::fs::write(
            host.repo().join(format!("partners/{partner}.yaml")),
            format!(
                "apiVersion: berth/v1\nkind: Partner\nname: {partner}\ntimezone: UTC\nwindows:\n  - days: [mon, tue, wed, thu, fri, sat, sun]\n    start: \"00:00\"\n    end: \"24:00\"\n\
                 scripts:\n  - script: app\n"
            ),
        )
        .unwrap();
        std::fs::write(
            host.repo().join("scripts/app.yaml"),
            format!(
                "apiVersion: berth/v1\nkind: Script\nname: app\nimage:\n  source: local\n  repository: {IMAGE_REPO}\nversions: \"=1.0.0\"\n\
                 volumes:\n  data: {{}}\ncomponents:\n  db:\n    image:\n      source: local\n      repository: {IMAGE_REPO}\n    versions: \"={db}\"\n    stateful: true\n\
                 \x20   container: {{ env: {{ PORT: \"7001\", STATE_FILE: /data/state }}, volumes: [\"data:/data\"], stop_timeout: 2s }}\n\
                 \x20   health: {{ exec: [/serve, check], timeout: 30s }}\n\
                 \x20 web:\n    replicas: 2\n    container: {{ env: {{ PORT: \"7002\" }}, stop_timeout: 2s }}\n\
                 \x20   health: {{ exec: [/serve, check], timeout: 30s }}\n    depends_on: {{ db: healthy }}\n"
            ),
        )
        .unwrap();
    };
    let db = format!("berth-{partner}-app-db");
    let web = format!("berth-{partner}-app-web");
    let volume = format!("berth-{partner}-app-data");

    write("1.0.0");
    swarm.berth(&host, "apply", &[]).assert_exit(0);
    swarm.wait_tasks(&db, &["1.0.0"]);
    swarm.wait_tasks(&web, &["1.0.0", "1.0.0"]);
    let node = swarm.docker(&["info", "--format", "{{.Swarm.NodeID}}"]);
    assert_eq!(
        swarm.docker(&[
            "service",
            "inspect",
            &db,
            "--format",
            "{{.Spec.TaskTemplate.Placement.Constraints}} {{.Spec.UpdateConfig.Order}}",
        ]),
        format!("[node.id=={node}] stop-first")
    );
    // The script's network is an attachable overlay with berth's labels.
    assert_eq!(
        swarm.docker(&[
            "network",
            "inspect",
            &format!("berth-{partner}-app"),
            "--format",
            "{{.Driver}} {{.Attachable}} {{index .Labels \"berth.partner\"}}",
        ]),
        format!("overlay true {partner}")
    );
    let mountpoint = swarm.docker(&["volume", "inspect", &volume, "--format", "{{.Mountpoint}}"]);
    std::fs::write(format!("{mountpoint}/marker"), "kept").unwrap();

    write("1.1.0");
    swarm.berth(&host, "apply", &[]).assert_exit(0);
    swarm.wait_tasks(&db, &["1.1.0"]);
    swarm.wait_tasks(&web, &["1.0.0", "1.0.0"]);
    assert_eq!(
        std::fs::read_to_string(format!("{mountpoint}/marker")).unwrap(),
        "kept",
        "the volume is the same, with its data"
    );
    let mounted = swarm.docker(&[
        "ps",
        "--no-trunc",
        "--filter",
        &format!("label=com.docker.swarm.service.name={db}"),
        "--format",
        "{{.Mounts}}",
    ]);
    assert_eq!(mounted, volume);
}
