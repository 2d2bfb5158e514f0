//! Staged rollout (`rollout:` in fleet.yaml, docs/rollout.md) against the machine's engine,
//! a real manifest repo and a real bare status repo: the partners of the earlier waves
//! report through real agents (`agent --once` with `report:`), and a later wave's `plan`,
//! `apply` and agent read those records. Bakes are seconds long; `--now` shifts only the
//! later wave's clock where an hour-long bake must have passed.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;

const HEALTH: &str =
    "health: { exec: [\"/serve\", \"check\", \"http://127.0.0.1:8080/health\"], timeout: 10s }";

/// A federation on this one machine: one manifest repo, one bare status repo, and per
/// partner a state dir and an agent.yaml. Each partner's `svc` runs on the bridge network,
/// so the partners do not share a port. Removes their containers when dropped.
struct Federation {
    dir: tempfile::TempDir,
    /// Short name (`lab`) -> the run-unique partner name.
    names: Vec<(String, String)>,
}

impl Federation {
    fn new(partners: &[&str]) -> Federation {
        images();
        let f = Federation {
            dir: tempfile::tempdir().unwrap(),
            names: partners
                .iter()
                .map(|p| ((*p).to_owned(), unique_partner(p)))
                .collect(),
        };
        std::fs::create_dir_all(f.repo().join("partners")).unwrap();
        std::fs::create_dir_all(f.repo().join("scripts")).unwrap();
        std::fs::create_dir_all(f.status()).unwrap();
        git(&f.status(), &["init", "-q", "--bare", "-b", "main"]);
        for (_, name) in &f.names {
            std::fs::write(
                f.repo().join(format!("partners/{name}.yaml")),
                format!(
                    "apiVersion: berth/v1\nkind: Partner\nname: {name}\ntimezone: UTC\nwindows:\n  \
                     - days: [mon, tue, wed, thu, fri, sat, sun]\n    start: \"00:00\"\n    end: \"24:00\"\n\
                     scripts:\n  - script: svc\n"
                ),
            )
            .unwrap();
            std::fs::write(
                f.dir.path().join(format!("{name}.yaml")),
                format!(
                    "partner: {name}\nrepo:\n  url: file://{}\n  branch: main\ninterval: 1h\nstate_dir: {}\n\
                     report:\n  url: file://{}\n",
                    f.repo().display(),
                    f.state(name).display(),
                    f.status().display()
                ),
            )
            .unwrap();
        }
        f
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn status(&self) -> PathBuf {
        self.dir.path().join("status.git")
    }

    fn state(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("state-{name}"))
    }

    /// The run-unique name of partner `short`.
    fn name(&self, short: &str) -> &str {
        &self.names.iter().find(|(s, _)| s == short).unwrap().1
    }

    /// Writes fleet.yaml with these waves (YAML lines under `waves:`, short partner names
    /// replaced by the real ones) and the script at `versions`, and commits.
    fn manifests(&self, waves: &str, versions: &str) {
        let mut waves = waves.to_owned();
        for (short, name) in &self.names {
            waves = waves.replace(&format!("<{short}>"), name);
        }
        std::fs::write(
            self.repo().join("fleet.yaml"),
            format!(
                "apiVersion: berth/v1\nkind: Fleet\nrollout:\n  status: {{ url: \"file://{}\" }}\n  waves:\n{waves}",
                self.status().display()
            ),
        )
        .unwrap();
        std::fs::write(
            self.repo().join("scripts/svc.yaml"),
            format!(
                "apiVersion: berth/v1\nkind: Script\nname: svc\nimage:\n  source: local\n  repository: {IMAGE_REPO}\n\
                 versions: \"{versions}\"\ncontainer:\n  stop_timeout: 2s\n{HEALTH}\n"
            ),
        )
        .unwrap();
        let repo = self.repo();
        if !repo.join(".git").exists() {
            git(&repo, &["init", "-q", "-b", "main"]);
        }
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "--allow-empty", "-m", versions]);
    }

    /// One real agent pass of partner `short`, which reports to the status repo.
    fn agent(&self, short: &str) -> Run {
        let run = Berth::new("agent")
            .args(["--once", "--config"])
            .arg(self.dir.path().join(format!("{}.yaml", self.name(short))))
            .run();
        assert!(run.code().is_some(), "{}", run.text());
        run
    }

    /// `berth <cmd>` for partner `short` on the manifest worktree, with `extra` arguments.
    fn berth(&self, cmd: &str, short: &str, extra: &[&str]) -> Run {
        let name = self.name(short);
        Berth::new(cmd)
            .arg(self.repo())
            .args(["--partner", name])
            .arg("--state-dir")
            .arg(self.state(name))
            .args(extra)
            .run()
    }

    /// The version label of partner `short`'s container, `None` when it has none.
    fn version(&self, short: &str) -> Option<String> {
        let name = format!("berth-{}-svc", self.name(short));
        docker(&["ps", "-a", "-q", "--filter", &format!("name=^{name}$")])
            .lines()
            .next()
            .map(|_| inspect(&name, "{{index .Config.Labels \"berth.version\"}}"))
    }

    /// Partner `short`'s record for `svc` in the status repo.
    fn record(&self, short: &str) -> serde_json::Value {
        let text = git(
            &self.status(),
            &["show", &format!("main:partners/{}.json", self.name(short))],
        );
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        doc["scripts"][0].clone()
    }

    /// Commits a record for partner `short` into the status repo as a host would push it.
    fn commit_record(&self, short: &str, record: &serde_json::Value) {
        let work = self.dir.path().join("status-work");
        if !work.exists() {
            git(
                self.dir.path(),
                &[
                    "clone",
                    "-q",
                    &self.status().display().to_string(),
                    "status-work",
                ],
            );
        }
        git(&work, &["pull", "-q", "origin", "main"]);
        let path = work.join(format!("partners/{}.json", self.name(short)));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(record).unwrap()).unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "record"]);
        git(&work, &["push", "-q", "origin", "main"]);
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        for (_, name) in &self.names {
            remove_partner_containers(name);
        }
    }
}

fn wait(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

fn assert_has(run: &Run, needle: &str) {
    assert!(
        run.stdout().contains(needle),
        "{needle:?} in:\n{}",
        run.text()
    );
}

#[test]
fn two_waves_the_later_one_waits_for_the_bake_then_follows() {
    let f = Federation::new(&["lab", "clinic"]);
    let waves = "    - { name: canary, partners: [<lab>] }\n    - { name: rest, bake: 6s }\n";
    f.manifests(waves, "<1.1.0");

    f.agent("lab").assert_exit(0);
    assert_eq!(f.version("lab").as_deref(), Some("1.0.0"));
    assert_eq!(f.record("lab")["state"], "in-sync");

    // A fresh partner of the later wave gets nothing while the canary bakes.
    let plan = f.berth("plan", "clinic", &[]);
    plan.assert_exit(0);
    assert_has(&plan, "deferred(wave)");
    assert_has(&plan, &format!("baking: {} until", f.name("lab")));
    assert_has(
        &plan,
        "nothing has baked yet, so this partner gets nothing until it does",
    );
    f.agent("clinic").assert_exit(0);
    assert_eq!(f.version("clinic"), None, "nothing runs before the bake");
    assert_eq!(f.record("clinic")["state"], "deferred(wave)");

    wait(6);
    f.agent("clinic").assert_exit(0);
    assert_eq!(f.version("clinic").as_deref(), Some("1.0.0"));
    assert_eq!(f.record("clinic")["state"], "in-sync");

    // A new version: the canary takes it at once, the later wave keeps 1.0.0 serving.
    f.manifests(waves, "^1");
    f.agent("lab").assert_exit(0);
    assert_eq!(f.version("lab").as_deref(), Some("1.1.0"));
    f.agent("clinic").assert_exit(0);
    assert_eq!(f.version("clinic").as_deref(), Some("1.0.0"));
    let record = f.record("clinic");
    assert_eq!(record["state"], "deferred(wave)", "{record:#}");
    assert_eq!(record["running"]["version"], "1.0.0");
    assert_eq!(record["desired"]["version"], "1.1.0");

    // The fleet view: 1.1.0 has reached the canary; the rest can take it once it has baked.
    let fleet = Berth::new("fleet")
        .arg("--status")
        .arg(f.status())
        .arg("--manifests")
        .arg(f.repo())
        .run();
    fleet.assert_exit(0);
    assert_has(&fleet, "\nrollout:\n  svc 1.1.0 (");
    assert_has(&fleet, "canary reached ");
    assert_has(&fleet, "rest from ");
    let page = Berth::new("fleet")
        .arg("--status")
        .arg(f.status())
        .arg("--manifests")
        .arg(f.repo())
        .args(["--format", "html"])
        .run();
    assert_has(&page, "<h2>Rollout</h2>\n<ul>\n<li>svc 1.1.0 (");
    let json = Berth::new("fleet")
        .arg("--status")
        .arg(f.status())
        .arg("--manifests")
        .arg(f.repo())
        .args(["--format", "json"])
        .run()
        .json();
    let newest = json["rollout"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["version"] == "1.1.0"))
        .unwrap_or_else(|| panic!("{json:#}"))
        .clone();
    assert_eq!(newest["waves"][0]["reached"], true, "{newest:#}");
    assert_eq!(newest["waves"][1]["reached"], false, "{newest:#}");
    let canary_at: jiff::Timestamp = newest["waves"][0]["at"].as_str().unwrap().parse().unwrap();
    let rest_at: jiff::Timestamp = newest["waves"][1]["at"].as_str().unwrap().parse().unwrap();
    assert!(
        rest_at.duration_since(canary_at) >= jiff::SignedDuration::from_secs(6),
        "not before the bake after the canary: {newest:#}"
    );

    wait(6);
    let apply = f.berth("apply", "clinic", &[]);
    apply.assert_exit(0);
    assert_eq!(f.version("clinic").as_deref(), Some("1.1.0"));
}

#[test]
fn three_waves_a_fresh_partner_of_the_last_gets_the_baked_version_not_the_newest() {
    let f = Federation::new(&["lab", "clinic", "north"]);
    let waves = "    - { name: canary, partners: [<lab>] }\n    - { name: early, partners: [<clinic>], bake: 1h }\n    - { name: rest, bake: 4s }\n";
    f.manifests(waves, "<1.1.0");
    f.agent("lab").assert_exit(0);
    assert_eq!(f.version("lab").as_deref(), Some("1.0.0"));

    // The early wave's hour of bake, passed on its own clock only.
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2)).to_string();
    f.berth("apply", "clinic", &["--now", &later])
        .assert_exit(0);
    assert_eq!(f.version("clinic").as_deref(), Some("1.0.0"));

    f.manifests(waves, "^1");
    // The pull request's diff says which wave each partner takes the change in.
    let diff = Berth::new("diff")
        .arg(f.repo())
        .args(["--base", "HEAD~1", "--head", "HEAD"])
        .args(["--now", "2030-01-01T00:00:00Z"])
        .run();
    diff.assert_exit(0);
    assert_has(&diff, &format!("{} (wave canary, first):", f.name("lab")));
    // And when each wave can take the new digest at the earliest: the canary at once (its
    // window is always open), then each wave after the one before has baked it.
    assert_has(
        &diff,
        &format!("rollout (status repo file://{}):", f.status().display()),
    );
    assert_has(
        &diff,
        "canary from 2030-01-01 00:00 UTC at the earliest; early from 2030-01-01 01:00 UTC at the earliest; rest from 2030-01-01 01:00 UTC at the earliest",
    );
    let json = Berth::new("diff")
        .arg(f.repo())
        .args(["--base", "HEAD~1", "--head", "HEAD", "--format", "json"])
        .args(["--now", "2030-01-01T00:00:00Z"])
        .arg("--status")
        .arg(f.dir.path().join("nowhere"))
        .run();
    json.assert_exit(0);
    let doc: serde_json::Value = serde_json::from_str(json.stdout()).unwrap();
    let rollout = &doc["rollout"];
    assert!(
        rollout["unreadable"]
            .as_str()
            .is_some_and(|u| u.contains("nowhere")),
        "an unreadable status repo is said, not fatal: {rollout:#}"
    );
    assert_eq!(rollout["digests"][0]["version"], "1.1.0", "{rollout:#}");
    assert_eq!(
        rollout["digests"][0]["waves"][2]["wave"], "rest",
        "{rollout:#}"
    );
    assert_has(
        &diff,
        &format!(
            "{} (wave early, after canary has run it 1h):",
            f.name("clinic")
        ),
    );
    assert_has(
        &diff,
        &format!(
            "{} (wave rest, after early has run it 4s):",
            f.name("north")
        ),
    );
    f.agent("lab").assert_exit(0);
    assert_eq!(f.version("lab").as_deref(), Some("1.1.0"));
    // The early wave reports 1.0.0 serving while 1.1.0 bakes an hour on the canary.
    f.agent("clinic").assert_exit(0);
    assert_eq!(f.version("clinic").as_deref(), Some("1.0.0"));
    let record = f.record("clinic");
    assert_eq!(record["state"], "deferred(wave)", "{record:#}");

    // A partner of the last wave joins: 1.1.0 is not on the early wave, 1.0.0 bakes there.
    let plan = f.berth("plan", "north", &[]);
    plan.assert_exit(0);
    assert_has(&plan, "deferred(wave)");
    assert_has(&plan, "waits for wave early (bake 4s)");
    assert_has(
        &plan,
        &format!("pending: {} (deferred(wave))", f.name("clinic")),
    );
    wait(5);
    let plan = f.berth("plan", "north", &[]);
    assert_has(
        &plan,
        "declared at 1.0.0, no container; baked in the earlier wave; 1.1.0 (",
    );
    f.berth("apply", "north", &[]).assert_exit(0);
    assert_eq!(
        f.version("north").as_deref(),
        Some("1.0.0"),
        "the baked version, not the newest"
    );
}

#[test]
fn a_rollback_in_the_canary_halts_the_later_wave_until_the_manifests_change() {
    let f = Federation::new(&["lab", "clinic"]);
    let waves = "    - { name: canary, partners: [<lab>] }\n    - { name: rest, bake: 1s }\n";
    f.manifests(waves, "^1");
    f.agent("lab").assert_exit(0);
    wait(2);
    f.agent("clinic").assert_exit(0);
    assert_eq!(f.version("clinic").as_deref(), Some("1.1.0"));

    // 9.0.0 fails its health check on the canary and is rolled back there.
    f.manifests(waves, "*");
    f.agent("lab").assert_exit(1);
    assert_eq!(f.version("lab").as_deref(), Some("1.1.0"));
    assert_eq!(f.record("lab")["state"], "rolled-back");

    wait(2);
    let plan = f.berth("plan", "clinic", &[]);
    plan.assert_exit(0);
    assert_has(&plan, "halted(wave)");
    assert_has(
        &plan,
        &format!("is halted: rolled back on {} (wave canary)", f.name("lab")),
    );
    f.agent("clinic").assert_exit(0);
    assert_eq!(
        f.version("clinic").as_deref(),
        Some("1.1.0"),
        "keeps serving"
    );
    assert_eq!(f.record("clinic")["state"], "halted(wave)");

    // The fleet team fixes the manifests: the canary moves on, and so does the halt.
    f.manifests(waves, ">=1.0.0, <9");
    f.agent("lab").assert_exit(0);
    assert_eq!(f.version("lab").as_deref(), Some("2.0.0"));
    wait(2);
    f.agent("clinic").assert_exit(0);
    assert_eq!(f.version("clinic").as_deref(), Some("2.0.0"));
}

#[test]
fn a_stale_or_missing_member_of_the_earlier_wave_blocks_and_is_named() {
    let f = Federation::new(&["lab", "old", "ghost", "clinic"]);
    let waves = "    - { name: canary, partners: [<lab>, <old>, <ghost>] }\n    - { name: rest }\n";
    f.manifests(waves, "<1.1.0");
    f.agent("lab").assert_exit(0);
    // `old` last reported three days ago: a real host gone quiet.
    let mut record: serde_json::Value = serde_json::from_str(&git(
        &f.status(),
        &["show", &format!("main:partners/{}.json", f.name("lab"))],
    ))
    .unwrap();
    record["partner"] = f.name("old").into();
    let three_days_ago =
        (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(72)).to_string();
    record["at"] = three_days_ago.clone().into();
    f.commit_record("old", &record);

    let plan = f.berth("plan", "clinic", &[]);
    plan.assert_exit(0);
    assert_has(&plan, "deferred(wave)");
    assert_has(
        &plan,
        &format!("stale: {} (last report {three_days_ago})", f.name("old")),
    );
    assert_has(
        &plan,
        &format!("missing: {} (no status record)", f.name("ghost")),
    );
    let json = f.berth("plan", "clinic", &["--format", "json"]);
    let doc = json.json();
    let gate = &doc["steps"][0]["gate"];
    assert_eq!(gate["reason"], "wave", "{doc:#}");
    assert_eq!(gate["wave"], "rest");

    // An unreadable status repo keeps what runs too, and says why.
    std::fs::rename(f.status(), f.dir.path().join("moved.git")).unwrap();
    let plan = f.berth("plan", "clinic", &[]);
    plan.assert_exit(0);
    assert_has(&plan, "the status repo cannot be read");
}
