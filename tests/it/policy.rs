//! The partner's host policy (`kind: HostPolicy`) against the real engine: each rule refuses
//! what it does not allow — in `validate --partner --policy` at the manifest's line, in
//! `plan` and in `apply` — naming the rule's line in the policy file; a refused container
//! is never created, as the engine shows, while the partner's other script converges; what
//! a rule allows runs; ceilings reach containers without limits.

use std::path::PathBuf;

use crate::common::*;

/// A partner running `svc` (the test service, on the host network) and a harmless `other`
/// (no network, user 1000), under a policy file of the given rules.
struct Policed {
    host: Host,
    policy: PathBuf,
    other: String,
}

const HEAD: &str = "apiVersion: berth/v1\nkind: HostPolicy\n";

fn policed(tag: &str, rules: &str) -> Policed {
    let host = Host::new(tag);
    host.write(&Setup {
        idle: false,
        ..Setup::default()
    });
    let other = host.add_script("other", "container:\n  network: none\n  user: \"1000\"\n");
    let policy = host.dir.path().join("policy.yaml");
    std::fs::write(&policy, format!("{HEAD}{rules}")).unwrap();
    Policed {
        host,
        policy,
        other,
    }
}

impl Policed {
    /// Rewrites a manifest of the repo: `scripts/svc.yaml` or the partner's file.
    fn edit(&self, file: &str, f: impl FnOnce(String) -> String) {
        let path = self.host.repo().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, f(text)).unwrap();
    }

    /// `svc`'s container block gains these lines (indented by two spaces).
    fn container(&self, lines: &str) {
        self.edit("scripts/svc.yaml", |t| {
            t.replacen("container:\n", &format!("container:\n{lines}"), 1)
        });
    }

    fn partner_file(&self) -> String {
        format!("partners/{}.yaml", self.host.partner)
    }

    fn run(&self, cmd: &str) -> Run {
        self.host
            .command(cmd)
            .arg("--policy")
            .arg(&self.policy)
            .env("BERTH_STABLE_SECS", "1")
            .run()
    }

    fn validate(&self) -> Run {
        Berth::new("validate")
            .arg(self.host.repo())
            .args(["--partner", &self.host.partner, "--policy"])
            .arg(&self.policy)
            .run()
    }

    /// `svc` is refused by `rule` (written at `rule_line` of the policy) for the value at
    /// `value_at` (`path:line:col`), everywhere a person would look; the engine never gets
    /// a `svc` container, and `other` runs.
    fn assert_refused(&self, rule: &str, rule_line: u32, value_at: &str) {
        let policy = self.policy.display();
        let rule_at = format!("(policy rule {rule} at {policy}:{rule_line}:");
        let v = self.validate();
        v.assert_exit(1);
        assert!(
            v.text().contains(&format!(
                "{value_at}: error: {}/svc would be refused: ",
                self.host.partner
            )) && v.text().contains(&rule_at),
            "validate names the value's and the rule's positions:\n{}",
            v.text()
        );
        let plan = self.run("plan");
        plan.assert_exit(1);
        assert!(
            plan.text().contains("refused(policy): ")
                && plan.text().contains(&format!(" at {value_at}: "))
                && plan.text().contains(&rule_at),
            "{}",
            plan.text()
        );
        let apply = self.run("apply");
        apply.assert_exit(1);
        assert!(
            apply.text().contains("REFUSED(policy): ") && apply.text().contains(&rule_at),
            "{}",
            apply.text()
        );
        assert_eq!(
            self.host.containers(),
            vec![self.other.clone()],
            "the refused container was never created; the other one was"
        );
        assert!(inspect(&self.other, "{{.State.Running}}") == "true");
    }

    /// What the policy allows converges, with nothing refused.
    fn assert_allowed(&self) {
        self.validate().assert_exit(0);
        let apply = self.run("apply");
        apply.assert_exit(0);
        assert!(self.host.running(), "{}", apply.text());
    }
}

#[test]
fn host_paths_are_judged_after_dot_dot_symlinks_and_trailing_slashes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let allowed = root.join("allowed");
    std::fs::create_dir_all(allowed.join("data")).unwrap();
    std::fs::create_dir_all(root.join("private")).unwrap();
    std::os::unix::fs::symlink(root.join("private"), allowed.join("link")).unwrap();
    let (a, r) = (allowed.display(), root.display());
    for trick in [
        format!("{a}/../private:/p:ro"),
        format!("{a}/link:/p:ro"),
        format!("{a}/link/:/p:ro"),
        format!("{r}/private/:/p:ro"),
    ] {
        let p = policed(
            "pol-paths",
            &format!("volumes: {{ host_paths: [\"{a}/**\"] }}\n"),
        );
        p.container(&format!("  volumes: [\"{trick}\"]\n"));
        p.assert_refused("volumes.host_paths", 3, "scripts/svc.yaml:10:13");
    }
    let p = policed(
        "pol-paths-ok",
        &format!("volumes: {{ host_paths: [\"{a}/**\"] }}\n"),
    );
    p.container(&format!("  volumes: [\"{a}/data:/data:ro\"]\n"));
    p.assert_allowed();
    assert_eq!(
        inspect(&p.host.name(), "{{json .HostConfig.Binds}}"),
        format!("[\"{a}/data:/data:ro\"]")
    );
}

#[test]
fn env_files_only_from_where_the_policy_says() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::create_dir_all(root.join("env")).unwrap();
    std::fs::write(root.join("env/app.env"), "APP_MODE=allowed\n").unwrap();
    std::fs::write(root.join("elsewhere.env"), "APP_MODE=elsewhere\n").unwrap();
    let rules = format!("env_files: [\"{}/env/**\"]\n", root.display());
    let p = policed("pol-env", &rules);
    let file = p.partner_file();
    let with = |path: PathBuf| {
        move |t: String| {
            t.replacen(
                "  - script: svc\n",
                &format!("  - script: svc\n    env_files: [\"{}\"]\n", path.display()),
                1,
            )
        }
    };
    p.edit(&file, with(root.join("elsewhere.env")));
    let line = std::fs::read_to_string(p.host.repo().join(&file))
        .unwrap()
        .lines()
        .position(|l| l.contains("env_files"))
        .unwrap()
        + 1;
    p.assert_refused("env_files", 3, &format!("{file}:{line}:17"));
    let p = policed("pol-env-ok", &rules);
    p.edit(&p.partner_file(), with(root.join("env/app.env")));
    p.assert_allowed();
    let env = inspect(&p.host.name(), "{{json .Config.Env}}");
    assert!(env.contains("\"APP_MODE=allowed\""), "{env}");
}

#[test]
fn the_host_network_only_when_listed() {
    let p = policed("pol-net", "networks: [bridge, none]\n");
    p.assert_refused("networks", 3, "scripts/svc.yaml:11:12");
    let p = policed("pol-net-ok", "networks: [host, none]\n");
    p.assert_allowed();
}

#[test]
fn ports_only_on_the_addresses_listed() {
    let port = free_port();
    let rules = "ports: { bind: [\"127.0.0.1\"] }\n";
    let p = policed("pol-ports", rules);
    p.container(&format!("  ports: [\"{port}:{port}\"]\n"));
    p.assert_refused("ports.bind", 3, "scripts/svc.yaml:10:11");
    let p = policed("pol-ports-ok", rules);
    p.container(&format!("  ports: [\"127.0.0.1:{port}:{port}\"]\n"));
    p.assert_allowed();
}

#[test]
fn a_registry_not_listed_is_never_contacted() {
    // Nothing listens there: contacting it would make the script unresolved (exit 3).
    let p = policed(
        "pol-registry",
        "images: { registries: [\"registry.example:5000\"] }\n",
    );
    p.edit("scripts/svc.yaml", |t| {
        t.replacen(
            "  source: local\n",
            "  source: oci\n  registry: 127.0.0.1:9\n",
            1,
        )
    });
    p.assert_refused("images.registries", 3, "scripts/svc.yaml:6:13");
}

#[test]
fn root_is_refused_when_the_policy_says_so() {
    let rules = "users: { root: false }\n";
    let p = policed("pol-root-unset", rules);
    p.assert_refused("users.root", 3, "scripts/svc.yaml:3:7");
    let p = policed("pol-root-0", rules);
    p.container("  user: \"0:0\"\n");
    p.assert_refused("users.root", 3, "scripts/svc.yaml:10:9");
    let p = policed("pol-root-ok", rules);
    p.container("  user: \"1000:1000\"\n");
    p.assert_allowed();
    assert_eq!(inspect(&p.host.name(), "{{.Config.User}}"), "1000:1000");
}

#[test]
fn containers_without_limits_get_the_ceilings_and_above_them_are_refused() {
    let rules = "limits: { memory: 256m, cpus: 0.5 }\n";
    let p = policed("pol-limits", rules);
    p.assert_allowed();
    assert_eq!(
        inspect(
            &p.host.name(),
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}"
        ),
        "268435456 500000000"
    );
    assert_eq!(
        inspect(&p.other, "{{.HostConfig.Memory}}"),
        "268435456",
        "every container gets the ceiling"
    );
    let p = policed("pol-limits-over", rules);
    p.container("  memory: 1g\n");
    p.assert_refused("limits.memory", 3, "scripts/svc.yaml:10:11");
}

#[test]
fn a_broken_policy_changes_nothing_and_says_where() {
    let p = policed("pol-broken", "volume: { host_paths: [] }\n");
    for cmd in ["plan", "apply"] {
        let out = p.run(cmd);
        out.assert_exit(1);
        assert!(
            out.stderr()
                .contains(&format!("{}:3:1: error: ", p.policy.display()))
                && out
                    .stderr()
                    .contains("the host policy is invalid; nothing was changed"),
            "{}",
            out.text()
        );
    }
    let v = p.validate();
    v.assert_exit(1);
    assert!(
        v.text()
            .contains(&format!("{}:3:1: error: ", p.policy.display())),
        "{}",
        v.text()
    );
    assert!(p.host.containers().is_empty(), "nothing was created");
}

#[test]
fn the_agent_reads_its_policy_and_reports_refusals() {
    let p = policed("pol-agent", "networks: [bridge, none]\n");
    let config = p.host.agent_config(
        &format!("  url: {}\n", p.host.repo().display()),
        &format!("policy: {}\n", p.policy.display()),
    );
    Berth::new("agent")
        .args(["--once", "--config"])
        .arg(&config)
        .env("BERTH_STABLE_SECS", "1")
        .run()
        .assert_exit(1);
    assert_eq!(p.host.containers(), vec![p.other.clone()]);
    let status = Berth::new("status")
        .args(["--format", "json", "--state-dir"])
        .arg(p.host.state_dir())
        .run();
    let json: serde_json::Value = serde_json::from_str(status.stdout()).unwrap();
    let svc = json["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["script"] == "svc")
        .unwrap();
    assert_eq!(svc["state"], "refused", "{json:#}");
    assert!(
        svc["detail"]
            .as_str()
            .unwrap()
            .contains("network host at scripts/svc.yaml:11:12: networks allows only bridge, none"),
        "{json:#}"
    );
}

#[test]
fn the_agents_own_environment_and_state_are_never_env_files() {
    let p = policed("pol-own-env", "");
    // Beside agent.yaml, as the example unit's EnvironmentFile= is.
    let agent_env = p.host.dir.path().join("agent.env");
    std::fs::write(&agent_env, "BERTH_GIT_TOKEN=ghp_not_for_containers\n").unwrap();
    let state_file = p.host.state_dir().join("status.json");
    for (file, why) in [
        (agent_env.clone(), "directly in"),
        (state_file, "berth's own state"),
    ] {
        let partner = p.partner_file();
        p.edit(&partner, |t| {
            let t = match t.find("    env_files:") {
                Some(at) => {
                    let end = at + t[at..].find('\n').unwrap() + 1;
                    format!("{}{}", &t[..at], &t[end..])
                }
                None => t,
            };
            t.replacen(
                "  - script: svc\n",
                &format!("  - script: svc\n    env_files: [\"{}\"]\n", file.display()),
                1,
            )
        });
        let config = p
            .host
            .agent_config(&format!("  url: {}\n", p.host.repo().display()), "");
        let out = Berth::new("agent")
            .args(["--once", "--config"])
            .arg(&config)
            .env("BERTH_STABLE_SECS", "1")
            .run();
        out.assert_exit(1);
        assert!(
            out.text().contains(why),
            "{}: {}",
            file.display(),
            out.text()
        );
        assert_eq!(
            p.host.containers(),
            vec![p.other.clone()],
            "{}",
            file.display()
        );
        let status = std::fs::read_to_string(p.host.state_dir().join("status.json")).unwrap();
        assert!(!status.contains("ghp_not_for_containers"), "{status}");
    }
}

#[test]
fn a_policy_tightened_under_a_running_container_refuses_its_replace_and_leaves_it_serving() {
    let p = policed("pol-tightened", "networks: [host, none]\n");
    p.assert_allowed();
    let (id, started) = (p.host.id(), inspect(&p.host.name(), "{{.State.StartedAt}}"));
    std::fs::write(&p.policy, format!("{HEAD}networks: [bridge, none]\n")).unwrap();
    // Unchanged, it is reported but kept; changed, its replace is refused.
    let kept = p.run("apply");
    kept.assert_exit(1);
    assert!(
        kept.text().contains("REFUSED(policy): network host"),
        "{}",
        kept.text()
    );
    p.edit("scripts/svc.yaml", |t| {
        t.replacen("stop_timeout: 5s", "stop_timeout: 6s", 1)
    });
    let plan = p.run("plan");
    plan.assert_exit(1);
    assert!(
        plan.text().contains("replace") && plan.text().contains("refused(policy): network host"),
        "{}",
        plan.text()
    );
    p.run("apply").assert_exit(1);
    assert_eq!(p.host.id(), id, "the old container is untouched");
    assert_eq!(inspect(&p.host.name(), "{{.State.StartedAt}}"), started);
    assert!(p.host.served_version().is_some(), "and still serves");
}
