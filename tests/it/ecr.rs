//! The `ecr` image source against `moto_server` (started by the harness on a free loopback
//! port, behind a per-test front that pages `DescribeImages` as ECR does and counts calls):
//! what `berth plan` resolves, what it says when the ECR API is down or hangs, and how pull
//! tokens are cached.
//!
//! No test pulls from ECR: an ECR registry host (`<account>.dkr.ecr.<region>.amazonaws.com`)
//! is not on loopback, and no test may send traffic outside 127.0.0.0/8. Pulls with
//! credentials are covered by the OCI registry tests (the `registry` module).

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth::registry::ecr::EcrRegistry;

use crate::common::moto::{self, Front, FrontConfig};
use crate::common::*;

/// A throwaway manifest repo: one partner opted into one ECR script. Removes the partner's
/// containers when dropped.
struct Fleet {
    dir: tempfile::TempDir,
    partner: String,
    registry: String,
    repository: String,
}

impl Fleet {
    fn new(tag: &str, region: &str) -> Fleet {
        require_docker();
        let partner = unique_partner(tag);
        let fleet = Fleet {
            dir: tempfile::tempdir().expect("temp dir"),
            repository: format!("berth-tests/{partner}"),
            registry: moto::registry(region),
            partner,
        };
        std::fs::create_dir_all(fleet.repo().join("partners")).unwrap();
        std::fs::create_dir_all(fleet.repo().join("scripts")).unwrap();
        fleet
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// Script range `script_versions`, partner range `partner_versions`.
    fn write(&self, script_versions: &str, partner_versions: &str, prerelease: bool) {
        let script = format!(
            "apiVersion: berth/v1\nkind: Script\nname: svc\nimage:\n  source: ecr\n  registry: {}\n  \
             repository: {}\nversions: \"{script_versions}\"\nprerelease: {prerelease}\n\
             container:\n  network: none\n",
            self.registry, self.repository
        );
        let partner = format!(
            "apiVersion: berth/v1\nkind: Partner\nname: {}\ntimezone: UTC\nwindows:\n  \
             - days: [mon, tue, wed, thu, fri, sat, sun]\n    start: \"00:00\"\n    end: \"24:00\"\n\
             scripts:\n  - script: svc\n    versions: \"{partner_versions}\"\n",
            self.partner
        );
        std::fs::write(self.repo().join("scripts/svc.yaml"), script).unwrap();
        std::fs::write(
            self.repo().join(format!("partners/{}.yaml", self.partner)),
            partner,
        )
        .unwrap();
    }

    /// `berth <cmd> REPO --partner P --state-dir S extra...`, with the AWS SDK pointed at
    /// `endpoint` and signing with the test keys; nothing from the user's AWS setup leaks in.
    fn command(&self, cmd: &str, extra: &[&str], endpoint: &str) -> Berth {
        // Empty AWS config files, so no profile of the machine's applies.
        let empty = self.dir.path().join("aws-empty");
        std::fs::write(&empty, "").unwrap();
        let mut c = Berth::new(cmd)
            .arg(self.repo())
            .args(["--partner", &self.partner])
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .args(extra);
        for k in [
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL_ECR",
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "BERTH_REGISTRY_TIMEOUT",
        ] {
            c = c.env_remove(k);
        }
        // The instance metadata service is not on loopback: never asked.
        c.env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY)
            .env("AWS_CONFIG_FILE", &empty)
            .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
            .env("AWS_EC2_METADATA_DISABLED", "true")
    }

    fn berth(&self, cmd: &str, extra: &[&str], endpoint: &str, env: &[(&str, &str)]) -> Run {
        self.command(cmd, extra, endpoint)
            .envs(env.iter().copied())
            .run()
    }

    fn containers(&self) -> Vec<String> {
        containers_with(&format!("berth.partner={}", self.partner))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        remove_partner_containers(&self.partner);
    }
}

/// The only step of a one-script plan.
fn step(doc: &serde_json::Value) -> &serde_json::Value {
    let steps = doc["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1, "{doc:#}");
    &steps[0]
}

fn tags(t: &[&str]) -> Vec<String> {
    t.iter().map(|s| (*s).to_owned()).collect()
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    free_port()
}

#[test]
fn plan_picks_the_highest_tag_in_both_ranges_across_pages() {
    let region = "eu-west-1";
    let fleet = Fleet::new("ecr-pick", region);
    // 220 images outside every range first, so the ones that matter sit on later pages of
    // `DescribeImages` (100 images a page), and the winner on the last one.
    let mut images: Vec<Vec<String>> = (0..220).map(|n| vec![format!("0.0.{n}")]).collect();
    for t in [
        vec!["latest", "main"],
        vec!["1.4"],
        vec!["1.4.100.1"],
        vec!["release-1.4.50"],
        vec!["1.0.0"],
        vec!["1.2.0"],
        vec!["1.4.0"],
        vec!["1.4.9-rc.1"],
        vec!["1.6.0"],
        vec!["2.0.0"],
        vec!["v1.4.7"],
        vec!["1.4.7", "stable"],
    ] {
        images.push(tags(&t));
    }
    let front = Front::start(FrontConfig::default());
    let seeded = moto::seed(front.moto(), region, &fleet.repository, &images);
    let seeded_digest = |tag: &str| {
        seeded
            .iter()
            .find(|(t, _)| t == tag)
            .map(|(_, d)| d.clone())
            .unwrap()
    };
    let want = moto::digest_of(front.moto(), region, &fleet.repository, "1.4.7");
    assert_eq!(want, seeded_digest("1.4.7"));
    assert_eq!(want, seeded_digest("stable"), "two tags, one image");
    assert_ne!(
        want,
        seeded_digest("v1.4.7"),
        "the v-prefixed tag is another image"
    );
    assert_eq!(
        front.calls(),
        Vec::<String>::new(),
        "seeding went to moto directly"
    );

    fleet.write("^1", "~1.4", false);
    let out = fleet.berth("plan", &["--format", "json"], &front.url(), &[]);
    out.assert_exit(0);
    let doc = out.json();
    let s = step(&doc);
    assert_eq!(s["script"], "svc", "{doc:#}");
    assert_eq!(s["action"], "create", "{doc:#}");
    // Not 1.6.0 or 2.0.0 (outside a range), not 1.4.9-rc.1 (pre-release), not 1.4.100.1 or
    // release-1.4.50 (not semver), and 1.4.7 over v1.4.7.
    assert_eq!(s["to"]["version"], "1.4.7", "{doc:#}");
    assert_eq!(s["to"]["digest"], want.as_str(), "{doc:#}");
    // 232 images: three pages, one listing.
    assert_eq!(front.count("DescribeImages"), 3, "{:?}", front.calls());
    assert_eq!(
        front.count("GetAuthorizationToken"),
        0,
        "plan pulls nothing"
    );

    // The pre-release was listed too: allowed, it wins.
    fleet.write("^1", "~1.4", true);
    let out = fleet.berth("plan", &["--format", "json"], &front.url(), &[]);
    out.assert_exit(0);
    let doc = out.json();
    assert_eq!(step(&doc)["to"]["version"], "1.4.9-rc.1", "{doc:#}");
    assert_eq!(
        step(&doc)["to"]["digest"],
        seeded_digest("1.4.9-rc.1").as_str(),
        "{doc:#}"
    );
    assert_eq!(front.count("DescribeImages"), 6, "{:?}", front.calls());

    // The script's range alone: 1.6.0.
    fleet.write("^1", "*", false);
    let out = fleet.berth("plan", &["--format", "json"], &front.url(), &[]);
    out.assert_exit(0);
    assert_eq!(step(&out.json())["to"]["version"], "1.6.0");
    assert!(fleet.containers().is_empty(), "plan created something");
}

#[test]
fn ecr_down_leaves_the_script_unresolved_and_exits_3() {
    let fleet = Fleet::new("ecr-down", "eu-central-1");
    fleet.write("^1", "*", false);
    let endpoint = format!("http://127.0.0.1:{}", closed_port());

    let started = Instant::now();
    let out = fleet.berth("plan", &[], &endpoint, &[]);
    out.assert_exit(3);
    let said = out.text();
    assert!(said.contains("svc"), "{said}");
    assert!(said.contains("deferred(unresolved)"), "{said}");
    assert!(said.contains(&fleet.registry), "{said}");
    assert!(said.contains("cannot reach the ECR API"), "{said}");
    assert!(said.contains(&fleet.repository), "{said}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );

    let out = fleet.berth("apply", &[], &endpoint, &[]);
    out.assert_exit(3);
    assert!(out.text().contains("unresolved"), "{}", out.text());
    assert!(fleet.containers().is_empty(), "{:?}", fleet.containers());
}

#[test]
fn ecr_hanging_fails_within_the_registry_timeout() {
    let fleet = Fleet::new("ecr-hang", "eu-central-1");
    fleet.write("^1", "*", false);
    // Connections are accepted by the kernel and never answered.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", silent.local_addr().unwrap());

    let started = Instant::now();
    let out = fleet.berth("plan", &[], &endpoint, &[("BERTH_REGISTRY_TIMEOUT", "1")]);
    let took = started.elapsed();
    out.assert_exit(3);
    let said = out.text();
    assert!(said.contains("did not answer in time"), "{said}");
    assert!(said.contains(&fleet.registry), "{said}");
    // Two attempts of a second each, with a backoff between them; berth's own start aside.
    assert!(took < Duration::from_secs(15), "took {took:?}: {said}");
    drop(silent);
}

#[test]
fn missing_repository_is_named() {
    let fleet = Fleet::new("ecr-norepo", "ap-south-1");
    fleet.write("^1", "*", false);
    let front = Front::start(FrontConfig::default());
    let out = fleet.berth("plan", &[], &front.url(), &[]);
    out.assert_exit(3);
    let said = out.text();
    assert!(
        said.contains(&format!(
            "ECR registry {} has no repository {}",
            fleet.registry, fleet.repository
        )),
        "{said}"
    );
    assert_eq!(front.count("DescribeImages"), 1, "{:?}", front.calls());
}

#[test]
fn refusing_throttling_and_broken_ecr_answers_are_told_apart() {
    let fleet = Fleet::new("ecr-answers", "ap-south-1");
    fleet.write("^1", "*", false);
    for (answer, says, calls) in [
        (
            (
                400,
                r#"{"__type":"AccessDeniedException","message":"User: arn:aws:iam::123456789012:user/ci is not authorized to perform: ecr:DescribeImages"}"#,
            ),
            format!(
                "ECR refused to list the images of {} in {}",
                fleet.repository, fleet.registry
            ),
            1,
        ),
        // Throttling is retried, once.
        (
            (
                400,
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
            ),
            format!("ECR is throttling berth for {}", fleet.registry),
            2,
        ),
        (
            (200, "<html>surely not JSON"),
            format!(
                "ECR failed to list the images of {} for {}",
                fleet.repository, fleet.registry
            ),
            1,
        ),
    ] {
        let front = Front::start(FrontConfig {
            describe_images: Some(answer),
            ..FrontConfig::default()
        });
        let out = fleet.berth("plan", &[], &front.url(), &[]);
        out.assert_exit(3);
        let said = out.text();
        assert!(said.contains("deferred(unresolved)"), "{said}");
        assert!(said.contains(&says), "wanted {says:?} in:\n{said}");
        assert_eq!(front.count("DescribeImages"), calls, "{:?}", front.calls());
    }
}

#[test]
fn missing_aws_credentials_are_named_and_nothing_is_sent() {
    let fleet = Fleet::new("ecr-nocreds", "ap-south-1");
    fleet.write("^1", "*", false);
    let front = Front::start(FrontConfig::default());
    let out = fleet
        .command("plan", &[], &front.url())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .run();
    out.assert_exit(3);
    let said = out.text();
    assert!(
        said.contains(&format!(
            "no usable AWS credentials to list the images of {} in {}",
            fleet.repository, fleet.registry
        )),
        "{said}"
    );
    assert_eq!(front.calls(), Vec::<String>::new());
}

#[test]
fn pull_tokens_are_cached_until_they_near_expiry() {
    let registry = moto::registry("us-east-2");
    let rt = moto::runtime();

    // A 12-hour token, as ECR gives: asked once, then served from the cache until forgotten.
    let front = Front::start(FrontConfig {
        token_ttl: Some(Duration::from_secs(12 * 3600)),
        ..FrontConfig::default()
    });
    let ecr = EcrRegistry::with_endpoint(front.url(), Some(moto::credentials()));
    rt.block_on(async {
        let first = ecr.credentials(&registry).await.expect("credentials");
        assert_eq!(first.username, "AWS");
        assert!(!first.password.is_empty());
        assert_eq!(first.password, format!("{}-auth-token", moto::ACCOUNT));
        assert_eq!(first.server, registry);
        assert!(
            !format!("{first:?}").contains(&first.password),
            "Debug shows the token"
        );
        let second = ecr.credentials(&registry).await.expect("credentials");
        assert_eq!(second, first);
        assert_eq!(
            front.count("GetAuthorizationToken"),
            1,
            "{:?}",
            front.calls()
        );

        ecr.forget(&registry);
        ecr.credentials(&registry).await.expect("credentials");
        assert_eq!(
            front.count("GetAuthorizationToken"),
            2,
            "{:?}",
            front.calls()
        );
        ecr.credentials(&registry).await.expect("credentials");
        assert_eq!(
            front.count("GetAuthorizationToken"),
            2,
            "{:?}",
            front.calls()
        );
    });

    // A token with 10 minutes left is inside the refresh margin: never reused.
    let front = Front::start(FrontConfig {
        token_ttl: Some(Duration::from_secs(600)),
        ..FrontConfig::default()
    });
    let ecr = EcrRegistry::with_endpoint(front.url(), Some(moto::credentials()));
    rt.block_on(async {
        for _ in 0..2 {
            let c = ecr.credentials(&registry).await.expect("credentials");
            assert_eq!(c.username, "AWS");
        }
    });
    assert_eq!(
        front.count("GetAuthorizationToken"),
        2,
        "{:?}",
        front.calls()
    );
}

#[test]
fn credentials_for_an_unreachable_ecr_say_so() {
    let registry = moto::registry("us-west-2");
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let ecr = EcrRegistry::with_endpoint(endpoint, Some(moto::credentials()));
    let err = moto::runtime()
        .block_on(ecr.credentials(&registry))
        .expect_err("nothing listens");
    let said = berth::exit::chain(&err);
    assert!(
        said.starts_with(&format!(
            "cannot reach the ECR API for {registry} to get a pull token"
        )),
        "{said}"
    );
}
