//! Multi-component scripts against the real engine: a real Redis server (Debian's
//! `redis-server` in a locally imported image) as a stateful component with an appendonly
//! volume, the example service as API and worker, and a migration job, on the script's own
//! network. What is asserted is what a partner would check: which container runs, its id
//! and start time, what the service answers, the data in the volume, the exit code.

use std::time::Duration;

use crate::common::{
    Host, IMAGE_REPO, REDIS_REPO, REDIS_VERSIONS, docker, free_port, http_get, http_put, inspect,
    redis_image, wait_for,
};

/// A host running the `app` script: `cache` (Redis at `redis`, stateful, its data in the
/// `cache` volume, healthy when `redis-cli ping` answers), `migrate` (a job writing the
/// version it ran from into Redis), `api` (published on 127.0.0.1 only, reaching Redis by
/// its component name) and `worker` (published nowhere).
struct App {
    host: Host,
    port: u16,
}

/// What may vary between the passes of a test.
/// Each `*_env` is extra `, KEY: "value"` pairs for that component's env.
#[derive(Clone)]
struct Knobs {
    redis: &'static str,
    api_env: String,
    worker_env: String,
    job_env: String,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            redis: "~7.0",
            api_env: String::new(),
            worker_env: String::new(),
            job_env: String::new(),
        }
    }
}

impl App {
    fn new(tag: &str) -> App {
        redis_image();
        let host = Host::new(tag);
        host.write(&crate::common::Setup {
            opted_in: false,
            ..Default::default()
        });
        let port = free_port();
        let app = App { host, port };
        let partner = app
            .host
            .repo()
            .join(format!("partners/{}.yaml", app.host.partner));
        let text = std::fs::read_to_string(&partner).unwrap();
        std::fs::write(
            &partner,
            text.replace("scripts: []\n", "scripts:\n  - script: app\n"),
        )
        .unwrap();
        app.write(&Knobs::default());
        app
    }

    fn write(&self, k: &Knobs) {
        let port = self.port;
        let script = format!(
            "apiVersion: berth/v1\nkind: Script\nname: app\n\
             image: {{ source: local, repository: {IMAGE_REPO} }}\nversions: \"^1\"\n\
             volumes:\n  cache: {{}}\n\
             components:\n\
             \x20 cache:\n\
             \x20   image: {{ source: local, repository: {REDIS_REPO} }}\n\
             \x20   versions: \"{redis}\"\n\
             \x20   stateful: true\n\
             \x20   container: {{ volumes: [\"cache:/data\"], stop_timeout: 5s }}\n\
             \x20   health: {{ exec: [\"/usr/bin/redis-cli\", \"ping\"], timeout: 20s }}\n\
             \x20 migrate:\n\
             \x20   job: true\n\
             \x20   timeout: 20s\n\
             \x20   container: {{ command: [\"/serve\", \"job\"], env: {{ REDIS: \"cache:6379\"{job} }} }}\n\
             \x20   depends_on: {{ cache: healthy }}\n\
             \x20 api:\n\
             \x20   container:\n\
             \x20     env: {{ LISTEN: \"0.0.0.0:8080\", REDIS: \"cache:6379\"{api} }}\n\
             \x20     ports: [\"127.0.0.1:{port}:8080\"]\n\
             \x20     stop_timeout: 5s\n\
             \x20   health: {{ http: \"http://127.0.0.1:{port}/health\", timeout: 10s }}\n\
             \x20   depends_on: {{ cache: healthy, migrate: completed }}\n\
             \x20 worker:\n\
             \x20   container: {{ env: {{ LISTEN: \"0.0.0.0:8080\", REDIS: \"cache:6379\"{worker} }}, stop_timeout: 5s }}\n\
             \x20   health: {{ exec: [\"/serve\", \"check\", \"http://127.0.0.1:8080/health\"], timeout: 10s }}\n\
             \x20   depends_on: {{ cache: healthy }}\n",
            redis = k.redis,
            job = k.job_env,
            api = k.api_env,
            worker = k.worker_env,
        );
        std::fs::write(self.host.repo().join("scripts/app.yaml"), script).unwrap();
    }

    fn name(&self, component: &str) -> String {
        format!("berth-{}-app-{component}", self.host.partner)
    }

    /// The component's container id and start time.
    fn started(&self, component: &str) -> String {
        inspect(&self.name(component), "{{.Id}} {{.State.StartedAt}}")
    }

    fn apply(&self, code: i32) -> String {
        let run = self.host.berth("apply", &["--ignore-idle"]);
        run.assert_exit(code);
        run.stdout().to_owned()
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        wait_for(self.port, path, Duration::from_secs(5))
    }
}

#[test]
fn components_run_on_the_scripts_network_and_reach_each_other_by_name() {
    let app = App::new("mc-net");
    let out = app.apply(0);
    for c in ["cache", "migrate", "api", "worker"] {
        assert!(out.contains(&format!("create   app/{c}")), "{out}");
        assert_eq!(
            inspect(&app.name(c), "{{index .Config.Labels \"berth.component\"}}"),
            c
        );
    }
    // The job ran from the new version, once Redis was healthy, and wrote into it by name.
    assert_eq!(inspect(&app.name("migrate"), "{{.State.ExitCode}}"), "0");
    assert_eq!(app.get("/kv/migrated"), Some((200, "1.1.0".into())));
    // The engine ran health.exec and says so; berth waited for that verdict.
    assert_eq!(
        inspect(&app.name("cache"), "{{.State.Health.Status}}"),
        "healthy"
    );
    assert_eq!(
        inspect(&app.name("worker"), "{{.State.Health.Status}}"),
        "healthy"
    );
    // The API reaches the worker by its component name on the script's network.
    assert_eq!(
        app.get("/peer/worker:8080/version"),
        Some((200, "1.1.0".into()))
    );
    let network = format!("berth-{}-app", app.host.partner);
    assert_eq!(
        docker(&[
            "network",
            "inspect",
            "-f",
            "{{.Driver}} {{index .Labels \"berth.managed\"}}",
            &network
        ]),
        "bridge true"
    );
    // The host reaches components only through ports published on 127.0.0.1.
    assert_eq!(
        docker(&["port", &app.name("api")]),
        format!("8080/tcp -> 127.0.0.1:{}", app.port)
    );
    assert_eq!(docker(&["port", &app.name("worker")]), "");
    let volume = format!("berth-{}-app-cache", app.host.partner);
    assert_eq!(
        docker(&[
            "volume",
            "inspect",
            "-f",
            "{{index .Labels \"berth.script\"}} {{index .Labels \"berth.volume\"}}",
            &volume
        ]),
        "app cache"
    );
    // A second pass changes nothing.
    let again = app.apply(0);
    assert!(!again.contains("done"), "{again}");
}

#[test]
fn data_survives_an_api_update_and_redis_updating_itself() {
    let app = App::new("mc-data");
    app.apply(0);
    assert_eq!(http_put(app.port, "/kv/sample", "patient-42"), Some(200));
    let (cache, worker) = (app.started("cache"), app.started("worker"));
    let api = app.started("api");

    // Only the API changes: Redis and the worker keep their container and start time.
    app.write(&Knobs {
        api_env: ", MODE: \"two\"".into(),
        ..Knobs::default()
    });
    let out = app.apply(0);
    assert!(out.contains("replace  app/api"), "{out}");
    assert_eq!(app.started("cache"), cache, "Redis was not restarted");
    assert_eq!(
        app.started("worker"),
        worker,
        "the worker was not restarted"
    );
    assert_ne!(app.started("api"), api);
    assert_eq!(app.get("/kv/sample"), Some((200, "patient-42".into())));

    // Redis itself moves to 7.1: replaced stop-first, its appendonly data kept.
    app.write(&Knobs {
        api_env: ", MODE: \"two\"".into(),
        redis: "~7.1",
        ..Knobs::default()
    });
    let out = app.apply(0);
    assert!(out.contains("replace  app/cache"), "{out}");
    assert_eq!(
        inspect(
            &app.name("cache"),
            "{{index .Config.Labels \"berth.version\"}}"
        ),
        REDIS_VERSIONS[1]
    );
    assert_eq!(app.get("/kv/sample"), Some((200, "patient-42".into())));
    let volume = format!("berth-{}-app-cache", app.host.partner);
    assert_eq!(
        inspect(
            &app.name("cache"),
            "{{range .Mounts}}{{.Name}}:{{.Destination}}{{end}}"
        ),
        format!("{volume}:/data"),
        "the new Redis mounts the same volume"
    );
}

#[test]
fn a_failing_job_holds_the_update_and_leaves_the_api_untouched() {
    let app = App::new("mc-job");
    app.apply(0);
    let api = app.started("api");
    app.write(&Knobs {
        job_env: ", JOB_EXIT: \"4\"".into(),
        api_env: ", MODE: \"two\"".into(),
        ..Knobs::default()
    });
    let out = app.apply(1);
    assert!(
        out.contains("ROLLED BACK: the job exited with code 4"),
        "{out}"
    );
    assert!(
        out.contains("ROLLED BACK: app/migrate: the job exited with code 4"),
        "{out}"
    );
    assert_eq!(app.started("api"), api, "the API was never stopped");
    assert_eq!(app.get("/version"), Some((200, "1.1.0".into())));
    // Held: the next pass reports it and exits 0, without running the job again.
    let again = app.apply(0);
    assert!(again.contains("deferred(failed-health)"), "{again}");
    assert_eq!(app.started("api"), api);
}

#[test]
fn an_unhealthy_api_rolls_back_every_changed_component_and_the_old_one_answers() {
    let app = App::new("mc-health");
    app.apply(0);
    let (api, worker) = (app.started("api"), app.started("worker"));
    app.write(&Knobs {
        api_env: ", HEALTH: \"fail\"".into(),
        worker_env: ", MODE: \"two\"".into(),
        ..Knobs::default()
    });
    let out = app.apply(1);
    assert!(out.contains("ROLLED BACK: health check failed"), "{out}");
    // The worker, changed first and healthy, went back too: the same container again.
    let id = |s: &str| s.split(' ').next().unwrap().to_owned();
    assert_eq!(id(&app.started("worker")), id(&worker));
    assert_eq!(id(&app.started("api")), id(&api));
    assert_eq!(app.get("/health"), Some((200, "ok".into())));
    let env = inspect(&app.name("worker"), "{{range .Config.Env}}{{.}} {{end}}");
    assert!(
        !env.contains("MODE"),
        "the worker runs its old settings: {env}"
    );
}

#[test]
fn killed_at_every_point_of_an_update_the_next_run_ends_all_new_with_the_data_intact() {
    let app = App::new("mc-kill");
    app.apply(0);
    assert_eq!(http_put(app.port, "/kv/sample", "kept"), Some(200));
    let cache = app.started("cache");
    let mut point = 1;
    let mut version = 0;
    loop {
        version += 1;
        let env = format!(", MODE: \"v{version}\"");
        app.write(&Knobs {
            api_env: env.clone(),
            worker_env: env,
            ..Knobs::default()
        });
        let crashed = app.host.berth_env(
            "apply",
            &["--ignore-idle"],
            &[("BERTH_ABORT_AFTER", &point.to_string())],
        );
        if crashed.code() == Some(0) {
            break;
        }
        assert!(point < 40, "still crashing at point {point}");
        app.apply(0);
        for c in ["api", "worker"] {
            let env = inspect(&app.name(c), "{{range .Config.Env}}{{.}} {{end}}");
            assert!(
                env.contains(&format!("MODE=v{version}")),
                "after a kill at point {point}, {c} is not new: {env}"
            );
            assert_eq!(inspect(&app.name(c), "{{.State.Running}}"), "true");
        }
        let names = app.host.containers();
        assert_eq!(names.len(), 4, "after a kill at point {point}: {names:?}");
        assert_eq!(app.get("/kv/sample"), Some((200, "kept".into())));
        point += 1;
    }
    assert!(point > 10, "the update passed only {point} points");
    assert_eq!(app.started("cache"), cache, "Redis was never touched");
    assert!(http_get(app.port, "/health").is_some());
}
