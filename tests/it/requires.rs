//! `requires:` on a script, against a real loopback "central service" and the machine's
//! engine: a new version waits (`deferred(requires)`, exit 0, the old container serving)
//! until the service answers a version in range, and an unreachable, slow or malformed
//! answer is never taken for one. The executor asks again right before the cut-over.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;

/// What the central service answers.
#[derive(Clone)]
enum Says {
    Json(&'static str),
    /// Reads the request and never answers.
    Hang,
}

/// A loopback HTTP service whose answers a test sets: the next ones in order, the last
/// repeated.
struct Central {
    port: u16,
    answers: Arc<Mutex<Vec<Says>>>,
    requests: Arc<Mutex<usize>>,
}

impl Central {
    fn start(says: Says) -> Central {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answers = Arc::new(Mutex::new(vec![says]));
        let requests = Arc::new(Mutex::new(0));
        let (queue, counted) = (Arc::clone(&answers), Arc::clone(&requests));
        std::thread::spawn(move || {
            for mut c in listener.incoming().flatten() {
                let says = {
                    let mut q = queue.lock().unwrap();
                    if q.len() > 1 {
                        q.remove(0)
                    } else {
                        q[0].clone()
                    }
                };
                *counted.lock().unwrap() += 1;
                std::thread::spawn(move || {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = c.read(&mut [0u8; 4096]);
                    match says {
                        Says::Json(body) => {
                            let _ = write!(
                                c,
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                        }
                        Says::Hang => std::thread::sleep(Duration::from_secs(30)),
                    }
                });
            }
        });
        Central {
            port,
            answers,
            requests,
        }
    }

    /// From now on, these answers in turn, the last one repeated.
    fn say(&self, answers: &[Says]) {
        *self.answers.lock().unwrap() = answers.to_vec();
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api/version", self.port)
    }

    fn requests(&self) -> usize {
        *self.requests.lock().unwrap()
    }
}

/// The test service's script, requiring `central` at `>=2.0.0`.
fn require(host: &Host, central: &Central) {
    let path = host.repo().join("scripts/svc.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!(
            "{text}requires:\n  - url: {}\n    pointer: /version\n    versions: \">=2.0.0\"\n    timeout: 1s\n",
            central.url()
        ),
    )
    .unwrap();
}

fn not_in_range(central: &Central) -> String {
    format!(
        "{} answered 1.9.0 at /version, not in >=2.0.0",
        central.url()
    )
}

#[test]
fn a_new_version_waits_until_the_central_service_answers_a_version_in_range() {
    let central = Central::start(Says::Json(r#"{"version":"1.9.0"}"#));
    let host = Host::new("requires");
    host.write(&Setup {
        versions: Some("=1.0.0".into()),
        ..Setup::default()
    });
    host.berth("apply", &[]).assert_exit(0);
    let old = host.id();
    assert_eq!(central.requests(), 0, "no requires: nothing asked");

    host.write(&Setup::default());
    require(&host, &central);
    let plan = host.berth("plan", &[]);
    plan.assert_exit(0);
    for wanted in [
        "deferred(requires)".to_owned(),
        not_in_range(&central),
        "replace".to_owned(),
    ] {
        assert!(plan.text().contains(&wanted), "{wanted}: {}", plan.text());
    }
    assert_stable_snapshot!("plan_deferred_requires", plan.stdout());
    let apply = host.berth("apply", &[]);
    apply.assert_exit(0);
    assert!(
        apply.text().contains("deferred(requires)")
            && apply.text().contains(&not_in_range(&central)),
        "{}",
        apply.text()
    );
    assert_stable_snapshot!("apply_deferred_requires", apply.stdout());
    assert_eq!(host.id(), old, "the old container keeps serving");
    assert_eq!(host.served_version().as_deref(), Some("1.0.0"));

    // Unreachable in every way a service can be: each is named, none lets the version in.
    for (says, why) in [
        (Says::Json("<html>busy</html>"), "did not answer JSON"),
        (
            Says::Json(r#"{"build":"2.0.0"}"#),
            "has no value at /version",
        ),
        (
            Says::Json(r#"{"version":"latest"}"#),
            "answered `latest` at /version, not a semver",
        ),
        (Says::Hang, "did not answer within 1s"),
    ] {
        central.say(&[says]);
        let out = host.berth("apply", &[]);
        out.assert_exit(0);
        let expected = format!("{} {why}", central.url());
        assert!(
            out.text().contains("deferred(requires)") && out.text().contains(&expected),
            "{expected}: {}",
            out.text()
        );
        assert_eq!(host.id(), old, "{why}");
    }

    // The agent's status and record say why it waits.
    central.say(&[Says::Json(r#"{"version":"1.9.0"}"#)]);
    let config = host.agent_config(&format!("  url: {}\n", host.repo().display()), "");
    Berth::new("agent")
        .args(["--once", "--config"])
        .arg(&config)
        .run()
        .assert_exit(0);
    let status = Berth::new("status")
        .arg("--state-dir")
        .arg(host.state_dir())
        .args(["--format", "json"])
        .run();
    let status: serde_json::Value = serde_json::from_str(status.stdout()).unwrap();
    assert_eq!(status["counters"]["deferrals"]["requires"], 1, "{status:#}");
    assert_eq!(status["scripts"][0]["state"], "deferred", "{status:#}");
    let detail = status["scripts"][0]["detail"].as_str().unwrap();
    assert!(detail.contains(&not_in_range(&central)), "{detail}");
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(host.state_dir().join("record.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["scripts"][0]["state"], "deferred(requires)",
        "{record:#}"
    );
    assert_eq!(host.id(), old);

    central.say(&[Says::Json(r#"{"version":"2.0.0"}"#)]);
    let done = host.berth("apply", &[]);
    done.assert_exit(0);
    assert_eq!(host.version_label(), "1.1.0", "{}", done.text());
    assert_eq!(host.served_version().as_deref(), Some("1.1.0"));
}

#[test]
fn a_first_install_waits_too() {
    let central = Central::start(Says::Json(r#"{"version":"1.9.0"}"#));
    let host = Host::new("requires-first");
    host.write(&Setup::default());
    require(&host, &central);
    let out = host.berth("apply", &[]);
    out.assert_exit(0);
    assert!(
        out.text().contains("deferred(requires)") && out.text().contains(&not_in_range(&central)),
        "{}",
        out.text()
    );
    assert!(host.containers().is_empty(), "nothing was created");
    let json = host.berth("plan", &["--format", "json"]);
    json.assert_exit(0);
    let v: serde_json::Value = serde_json::from_str(json.stdout()).unwrap();
    let gate = &v["steps"][0]["gate"];
    assert_eq!(gate["state"], "deferred", "{v:#}");
    assert_eq!(gate["reason"], "requires", "{v:#}");
    assert_eq!(gate["url"], central.url().as_str(), "{v:#}");
    assert_eq!(gate["detail"], not_in_range(&central).as_str(), "{v:#}");

    central.say(&[Says::Json(r#"{"version":"2.1.0"}"#)]);
    host.berth("apply", &[]).assert_exit(0);
    assert!(host.running());
    assert_eq!(host.version_label(), "1.1.0");
}

#[test]
fn the_central_service_is_asked_again_right_before_the_cut_over() {
    let central = Central::start(Says::Json(r#"{"version":"2.0.0"}"#));
    let host = Host::new("requires-again");
    host.write(&Setup {
        versions: Some("=1.0.0".into()),
        ..Setup::default()
    });
    host.berth("apply", &[]).assert_exit(0);
    let old = host.id();
    host.write(&Setup::default());
    require(&host, &central);
    // In range when the plan asks, rolled back by the time the executor asks again.
    central.say(&[
        Says::Json(r#"{"version":"2.0.0"}"#),
        Says::Json(r#"{"version":"1.9.0"}"#),
    ]);
    let before = central.requests();
    let out = host.berth("apply", &[]);
    out.assert_exit(0);
    assert_eq!(central.requests() - before, 2, "{}", out.text());
    assert!(
        out.text().contains("deferred(requires)") && out.text().contains(&not_in_range(&central)),
        "{}",
        out.text()
    );
    assert_eq!(host.id(), old, "the old container keeps serving");
}
