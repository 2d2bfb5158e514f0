//! `berth fleet` with the real binary: a manifest repo and a status repo made with the git
//! CLI, records committed as partner hosts would (signed by git itself with SSH keys from
//! `ssh-keygen`, unsigned, signed with another partner's key), read from a worktree, a bare
//! repo, a `file://` URL and another branch; the page it writes opened in Debian's headless
//! Chromium, checked from its screenshot and its console.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{self, Berth, Run, git};

/// The instant every run judges at: a Thursday, 12:00 UTC.
const NOW: &str = "2026-12-03T12:00:00Z";
/// When the fresh records were written.
const FRESH: &str = "2026-12-03T10:00:00Z";

const SCRIPT: &str = "apiVersion: berth/v1\nkind: Script\nname: case-counts\nimage:\n  source: local\n  repository: berth-test/none\nversions: \"^1.2.0\"\n";
const WINDOWS: &str = "windows:\n  - days: [sat, sun]\n    start: \"01:00\"\n    end: \"05:00\"\n";

/// How a record's commit is made.
#[derive(Clone, Copy)]
enum Sign {
    /// Signed by git with this partner's host key.
    By(&'static str),
    Unsigned,
}

/// One partner of a fixture: whether the manifests have it and declare its key, and its
/// record.
struct P {
    name: &'static str,
    manifest: bool,
    key: bool,
    record: Option<(Rec, Sign)>,
}

/// A record's content, or raw bytes that are not a record.
enum Rec {
    Json {
        revision: Option<String>,
        at: &'static str,
        scripts: Vec<(&'static str, &'static str, &'static str)>,
    },
    Raw(&'static str),
}

/// A record at the manifests' revision (`None`) or another, at `at`, with
/// `(desired, running, state)` for `case-counts`.
fn rec(
    revision: Option<&str>,
    at: &'static str,
    script: (&'static str, &'static str, &'static str),
) -> Rec {
    Rec::Json {
        revision: revision.map(str::to_owned),
        at,
        scripts: vec![script],
    }
}

const IN_SYNC: (&str, &str, &str) = ("1.4.2", "1.4.2", "in-sync");

/// A manifest repo and a status repo in one temp dir.
struct Fixture {
    dir: tempfile::TempDir,
    revision: String,
}

impl Fixture {
    fn new(partners: &[P]) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let keys = root.join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let mut names: Vec<&str> = partners.iter().map(|p| p.name).collect();
        names.push("stranger");
        for name in names {
            let out = common::run(
                Command::new("ssh-keygen")
                    .args([
                        "-q",
                        "-t",
                        "ed25519",
                        "-N",
                        "",
                        "-C",
                        &format!("berth@{name}"),
                        "-f",
                    ])
                    .arg(keys.join(name)),
            );
            out.assert_exit(0);
        }
        // The manifests, committed.
        let m = root.join("manifests");
        std::fs::create_dir_all(m.join("partners")).unwrap();
        std::fs::create_dir_all(m.join("scripts")).unwrap();
        std::fs::write(m.join("scripts/case-counts.yaml"), SCRIPT).unwrap();
        for p in partners.iter().filter(|p| p.manifest) {
            let mut body = format!(
                "apiVersion: berth/v1\nkind: Partner\nname: {}\n{WINDOWS}scripts:\n  - script: case-counts\n    versions: \"~1.4\"\n",
                p.name
            );
            if p.key {
                let key = std::fs::read_to_string(keys.join(format!("{}.pub", p.name))).unwrap();
                body.push_str(&format!("report_key: {}", key.trim()));
                body.push('\n');
            }
            std::fs::write(m.join(format!("partners/{}.yaml", p.name)), body).unwrap();
        }
        git(&m, &["init", "-q", "-b", "main"]);
        git(&m, &["add", "-A"]);
        git(&m, &["commit", "-q", "-m", "manifests"]);
        let revision = git(&m, &["rev-parse", "HEAD"]);
        // The status repo: each record its own commit, as each host pushes it.
        let s = root.join("status");
        std::fs::create_dir_all(s.join("partners")).unwrap();
        git(&s, &["init", "-q", "-b", "main"]);
        git(&s, &["commit", "-q", "--allow-empty", "-m", "status repo"]);
        for p in partners {
            let Some((record, sign)) = &p.record else {
                continue;
            };
            let body = match record {
                Rec::Raw(text) => (*text).to_owned(),
                Rec::Json {
                    revision: r,
                    at,
                    scripts,
                } => record_json(p.name, r.as_deref().unwrap_or(&revision), at, scripts),
            };
            std::fs::write(s.join(format!("partners/{}.json", p.name)), body).unwrap();
            commit_record(&s, &keys, p.name, *sign);
        }
        git(root, &["clone", "-q", "--bare", "status", "status.git"]);
        Fixture { dir, revision }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn manifests(&self) -> PathBuf {
        self.root().join("manifests")
    }

    fn status(&self) -> PathBuf {
        self.root().join("status")
    }

    /// `berth fleet --status STATUS --manifests MANIFESTS --now NOW args…`.
    fn fleet(&self, status: &str, args: &[&str]) -> Run {
        Berth::new("fleet")
            .args(["--status", status, "--now", NOW])
            .arg("--manifests")
            .arg(self.manifests())
            .args(args)
            .run()
    }

    fn status_str(&self) -> String {
        self.status().to_str().unwrap().to_owned()
    }
}

/// Commits the status repo's worktree as `partner`'s host would.
fn commit_record(repo: &Path, keys: &Path, partner: &str, sign: Sign) {
    let message = format!("{partner}: report");
    let mut args: Vec<String> = Vec::new();
    if let Sign::By(signer) = sign {
        args.extend([
            "-c".into(),
            "gpg.format=ssh".into(),
            "-c".into(),
            format!("user.signingkey={}", keys.join(signer).display()),
        ]);
    }
    args.extend(["add".into(), "-A".into()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    git(repo, &a);
    let mut commit: Vec<&str> = a[..a.len() - 2].to_vec();
    commit.extend(["commit", "-q", "-m", &message]);
    if matches!(sign, Sign::By(_)) {
        commit.push("-S");
    }
    git(repo, &commit);
}

fn record_json(partner: &str, revision: &str, at: &str, scripts: &[(&str, &str, &str)]) -> String {
    let scripts: Vec<serde_json::Value> = scripts
        .iter()
        .map(|(desired, running, state)| {
            serde_json::json!({
                "script": "case-counts",
                "desired": { "version": desired, "digest": format!("sha256:{}", "d".repeat(64)) },
                "running": { "version": running, "digest": format!("sha256:{}", "b".repeat(64)) },
                "state": state,
                "detail": if state.starts_with("deferred") { "the window opens Sat 01:00" } else if *state == "rolled-back" { "health check failed: 503" } else { "" },
                "since": "2026-12-01T00:00:00Z",
            })
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "schema": 1,
        "partner": partner,
        "berth": "0.1.0 (test)",
        "revision": revision,
        "exit": 0,
        "interval_secs": 300,
        "at": at,
        "window": { "opens": "2026-12-05T01:00:00Z" },
        "scripts": scripts,
    }))
    .unwrap()
}

/// Every kind of partner the table marks.
fn every_kind() -> Vec<P> {
    vec![
        P {
            name: "alpha",
            manifest: true,
            key: true,
            record: Some((rec(None, FRESH, IN_SYNC), Sign::By("alpha"))),
        },
        P {
            name: "bravo",
            manifest: true,
            key: true,
            record: Some((rec(None, FRESH, IN_SYNC), Sign::Unsigned)),
        },
        P {
            name: "charlie",
            manifest: true,
            key: true,
            record: Some((rec(None, FRESH, IN_SYNC), Sign::By("alpha"))),
        },
        P {
            name: "delta",
            manifest: true,
            key: true,
            record: Some((
                rec(None, "2026-12-01T00:00:00Z", IN_SYNC),
                Sign::By("delta"),
            )),
        },
        P {
            name: "echo",
            manifest: true,
            key: true,
            record: Some((
                rec(
                    Some(&"0".repeat(40)),
                    FRESH,
                    ("1.4.3", "1.4.2", "deferred(window)"),
                ),
                Sign::By("echo"),
            )),
        },
        P {
            name: "foxtrot",
            manifest: true,
            key: true,
            record: Some((
                rec(None, FRESH, ("1.4.3", "1.4.2", "rolled-back")),
                Sign::By("foxtrot"),
            )),
        },
        P {
            name: "golf",
            manifest: true,
            key: false,
            record: None,
        },
        P {
            name: "hotel",
            manifest: true,
            key: true,
            record: Some((rec(None, FRESH, IN_SYNC), Sign::By("stranger"))),
        },
        P {
            name: "india",
            manifest: true,
            key: false,
            record: Some((Rec::Raw("{ \"partner\": \"india\""), Sign::Unsigned)),
        },
        P {
            name: "zulu",
            manifest: false,
            key: false,
            record: Some((rec(None, FRESH, IN_SYNC), Sign::Unsigned)),
        },
    ]
}

/// The snapshot filters, plus SSH key fingerprints (new keys every run).
fn snapshot(name: &str, text: &str) {
    let mut s = common::filters();
    s.add_filter(r"SHA256:[A-Za-z0-9+/]{43}", "SHA256:[FINGERPRINT]");
    s.add_filter(r"commit [0-9a-f]{7,12}\b", "commit [SHORT]");
    s.bind(|| insta::assert_snapshot!(name, text));
}

#[test]
fn the_table_marks_every_kind_of_partner_in_text_json_and_markdown() {
    let f = Fixture::new(&every_kind());
    let status = f.status_str();
    let text = f.fleet(&status, &[]);
    text.assert_exit(0);
    let out = text.stdout();
    let line = |p: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{p} ")))
            .unwrap_or_else(|| panic!("no row for {p}:\n{out}"))
            .to_owned()
    };
    assert!(
        line("alpha").contains(" ok ") && line("alpha").contains(" signed "),
        "{out}"
    );
    assert!(
        line("bravo").contains(" unverified ") && line("bravo").contains(" unsigned "),
        "{out}"
    );
    assert!(
        line("charlie").contains(" unverified ") && line("charlie").contains(" bad signature "),
        "{out}"
    );
    assert!(
        out.contains("bad signature: signed with partner `alpha`'s key"),
        "{out}"
    );
    assert!(line("delta").contains(" stale "), "{out}");
    assert!(line("echo").contains(" behind, pending "), "{out}");
    assert!(line("foxtrot").contains(" failed "), "{out}");
    assert!(
        line("golf").contains(" missing ") && line("golf").contains(" no record "),
        "{out}"
    );
    assert!(line("hotel").contains(" bad signature "), "{out}");
    assert!(
        line("india").contains(" unreadable ") && line("india").contains(" no key declared "),
        "{out}"
    );
    snapshot("fleet_text", out);

    let json = f.fleet(&status, &["--format", "json"]);
    json.assert_exit(0);
    let doc = json.json();
    assert_eq!(doc["revision"], f.revision.as_str());
    let rows: BTreeMap<String, &serde_json::Value> = doc["partners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["partner"].as_str().unwrap().to_owned(), r))
        .collect();
    assert_eq!(rows["alpha"]["signature"]["mark"], "signed");
    assert_eq!(rows["charlie"]["signature"]["signer"], "alpha");
    assert_eq!(
        rows["delta"]["verdict"]["marks"],
        serde_json::json!(["stale"])
    );
    assert_eq!(rows["golf"]["signature"]["mark"], "no-record");
    assert_eq!(doc["strays"], serde_json::json!(["zulu"]));
    snapshot("fleet_json", json.stdout());

    let md = f.fleet(&status, &["--format", "markdown"]);
    md.assert_exit(0);
    snapshot("fleet_markdown", md.stdout());

    // With --exit-code the worst partner decides: foxtrot rolled back.
    f.fleet(&status, &["--exit-code"]).assert_exit(1);
}

#[test]
fn exit_code_is_2_when_a_partner_is_behind_and_0_when_all_are_current() {
    let good = P {
        name: "alpha",
        manifest: true,
        key: true,
        record: Some((rec(None, FRESH, IN_SYNC), Sign::By("alpha"))),
    };
    let f = Fixture::new(&[good]);
    f.fleet(&f.status_str(), &["--exit-code"]).assert_exit(0);

    let f = Fixture::new(&[
        P {
            name: "alpha",
            manifest: true,
            key: true,
            record: Some((rec(None, FRESH, IN_SYNC), Sign::By("alpha"))),
        },
        P {
            name: "echo",
            manifest: true,
            key: true,
            record: Some((rec(Some(&"0".repeat(40)), FRESH, IN_SYNC), Sign::By("echo"))),
        },
    ]);
    let run = f.fleet(&f.status_str(), &["--exit-code"]);
    run.assert_exit(2);
    assert!(
        run.stdout()
            .contains("behind: at manifest revision 000000000000"),
        "{}",
        run.text()
    );
    // A stale record is not known to be current either.
    let stale = P {
        name: "delta",
        manifest: true,
        key: false,
        record: Some((rec(None, "2026-12-01T00:00:00Z", IN_SYNC), Sign::Unsigned)),
    };
    let f = Fixture::new(&[stale]);
    f.fleet(&f.status_str(), &["--exit-code"]).assert_exit(2);
    // Without --exit-code it only reports.
    f.fleet(&f.status_str(), &[]).assert_exit(0);
}

#[test]
fn the_status_repo_is_read_bare_checked_out_over_file_urls_and_on_another_branch() {
    let f = Fixture::new(&every_kind());
    let worktree = f.fleet(&f.status_str(), &["--format", "json"]);
    worktree.assert_exit(0);
    let bare_path = f.root().join("status.git");
    let bare = f.fleet(bare_path.to_str().unwrap(), &["--format", "json"]);
    bare.assert_exit(0);
    let url = format!("file://{}", bare_path.display());
    let fetched = f.fleet(&url, &["--format", "json"]);
    fetched.assert_exit(0);
    let partners = |r: &Run| r.json()["partners"].clone();
    assert_eq!(partners(&worktree), partners(&bare));
    assert_eq!(partners(&worktree), partners(&fetched));
    assert_eq!(fetched.json()["status"]["location"], url.as_str());

    // Only the branch tip counts, never the worktree's files.
    std::fs::remove_file(f.status().join("partners/alpha.json")).unwrap();
    let still = f.fleet(&f.status_str(), &["--format", "json"]);
    assert_eq!(partners(&worktree), partners(&still));

    // Another branch: golf reports there.
    let s = f.status();
    git(&s, &["checkout", "-q", "-b", "reports"]);
    git(&s, &["checkout", "-q", "--", "."]);
    std::fs::write(
        s.join("partners/golf.json"),
        record_json("golf", &f.revision, FRESH, &[IN_SYNC]),
    )
    .unwrap();
    git(&s, &["add", "-A"]);
    git(&s, &["commit", "-q", "-m", "golf: report"]);
    git(&s, &["push", "-q", bare_path.to_str().unwrap(), "reports"]);
    for location in [f.status_str(), format!("{url}#reports")] {
        let spec = if location.contains('#') {
            location
        } else {
            format!("{location}#reports")
        };
        let run = f.fleet(&spec, &[]);
        run.assert_exit(0);
        let golf = run
            .stdout()
            .lines()
            .find(|l| l.starts_with("golf "))
            .unwrap()
            .to_owned();
        assert!(
            golf.contains(" ok ") && golf.contains(" no key declared "),
            "{}",
            run.stdout()
        );
    }
    // main is unchanged: golf is still missing there.
    let main = f.fleet(&url, &[]);
    assert!(
        main.stdout()
            .lines()
            .any(|l| l.starts_with("golf ") && l.contains(" missing "))
    );

    // A branch that does not exist, and a repo that is not there, cannot run.
    let run = f.fleet(&format!("{url}#nope"), &[]);
    run.assert_exit(3);
    assert!(
        run.stderr().contains("branch `nope` not found"),
        "{}",
        run.stderr()
    );
    let run = f.fleet(&format!("{}#nope", bare_path.display()), &[]);
    run.assert_exit(3);
    assert!(
        run.stderr().contains("branch `nope` not found"),
        "{}",
        run.stderr()
    );
    let run = f.fleet(f.root().join("absent").to_str().unwrap(), &[]);
    run.assert_exit(3);
    assert!(
        run.stderr().contains("cannot open the git repo"),
        "{}",
        run.stderr()
    );
}

#[test]
fn the_manifests_are_read_from_a_git_url_or_a_plain_directory() {
    let f = Fixture::new(&every_kind());
    let status = f.status_str();
    let from_path = f.fleet(&status, &["--format", "json"]).json();
    let url = format!("file://{}#main", f.manifests().display());
    let run = Berth::new("fleet")
        .args(["--status", &status, "--now", NOW, "--format", "json"])
        .args(["--manifests", &url])
        .run();
    run.assert_exit(0);
    assert_eq!(run.json()["partners"], from_path["partners"]);
    assert_eq!(run.json()["revision"], f.revision.as_str());

    // A plain directory has no revision: echo is then only pending, not behind on it.
    let plain = f.root().join("plain");
    git(f.root(), &["clone", "-q", "manifests", "plain"]);
    std::fs::remove_dir_all(plain.join(".git")).unwrap();
    let run = Berth::new("fleet")
        .args(["--status", &status, "--now", NOW, "--format", "json"])
        .arg("--manifests")
        .arg(&plain)
        .run();
    run.assert_exit(0);
    let doc = run.json();
    assert_eq!(doc["revision"], serde_json::Value::Null);
    let echo = doc["partners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["partner"] == "echo")
        .unwrap();
    assert_eq!(
        echo["verdict"]["behind"],
        serde_json::json!(["case-counts 1.4.2 -> 1.4.3 waits"])
    );
}

#[test]
fn invalid_manifests_and_a_bad_report_key_exit_1_at_the_line() {
    let f = Fixture::new(&[P {
        name: "alpha",
        manifest: true,
        key: false,
        record: None,
    }]);
    let m = f.manifests();
    let path = m.join("partners/alpha.yaml");
    let mut body = std::fs::read_to_string(&path).unwrap();
    body.push_str("report_key: ssh-ed25519 nope\n");
    std::fs::write(&path, body).unwrap();
    git(&m, &["commit", "-q", "-am", "bad key"]);
    let run = f.fleet(&f.status_str(), &[]);
    run.assert_exit(1);
    assert!(
        run.stderr().contains(
            "partners/alpha.yaml:11:13: error: `report_key` is not an OpenSSH public key line"
        ),
        "{}",
        run.stderr()
    );
}

// ---------------------------------------------------------------------------------------
// The page, in a real browser.

/// Debian's Chromium, as script/test installs it.
const CHROMIUM: &str = "/usr/bin/chromium";

/// What headless Chromium made of a page: its screenshot and the console lines it logged.
struct Shot {
    width: usize,
    height: usize,
    rgb: Vec<[u8; 3]>,
    console: Vec<String>,
}

impl Shot {
    /// Opens `page` in headless Chromium, with every background service that would reach
    /// the network turned off; the page itself names no resource.
    fn take(page: &Path) -> Shot {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: install Debian's chromium package (script/test does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("shot.png");
        let out = common::run(
            Command::new("timeout")
                .arg("120")
                .arg(CHROMIUM)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-default-apps",
                    "--no-default-browser-check",
                    "--disable-domain-reliability",
                    "--enable-logging=stderr",
                    "--v=1",
                    "--window-size=1400,1000",
                ])
                .arg(format!(
                    "--user-data-dir={}",
                    dir.path().join("profile").display()
                ))
                .arg(format!("--screenshot={}", png.display()))
                .arg(format!("file://{}", page.display()))
                .env("HOME", dir.path()),
        );
        out.assert_exit(0);
        // Chromium logs what the page's console says as `…:INFO:CONSOLE:<line>] "…"`.
        let console = out
            .stderr()
            .lines()
            .filter(|l| l.contains(":CONSOLE"))
            .map(str::to_owned)
            .collect();
        let decoder = png::Decoder::new(std::fs::File::open(&png).expect("a screenshot"));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        let step = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => panic!("unexpected screenshot colour type {other:?}"),
        };
        let rgb = buf[..info.buffer_size()]
            .chunks(step)
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        Shot {
            width: info.width as usize,
            height: info.height as usize,
            rgb,
            console,
        }
    }

    /// The rows (y) at which `colour` (`#rrggbb`) is drawn, and how many pixels have it.
    fn rows_of(&self, colour: &str) -> (Vec<usize>, usize) {
        let hex = |i: usize| u8::from_str_radix(&colour[i..i + 2], 16).unwrap();
        let want = [hex(1), hex(3), hex(5)];
        let mut rows = Vec::new();
        let mut count = 0;
        for y in 0..self.height {
            let n = self.rgb[y * self.width..(y + 1) * self.width]
                .iter()
                .filter(|p| **p == want)
                .count();
            if n > 0 {
                rows.push(y);
                count += n;
            }
        }
        (rows, count)
    }
}

#[test]
fn the_page_draws_the_table_and_the_timeline_in_chromium_without_console_errors() {
    let f = Fixture::new(&every_kind());
    let run = f.fleet(&f.status_str(), &["--format", "html"]);
    run.assert_exit(0);
    let html = run.stdout();
    assert!(
        html.contains(
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        ),
        "{html}"
    );
    for external in ["http://", "https://", "src=", "<link", "<script", "url("] {
        assert!(
            !html.contains(external),
            "the page names `{external}`:\n{html}"
        );
    }
    let page = f.root().join("fleet.html");
    std::fs::write(&page, html).unwrap();
    let shot = Shot::take(&page);
    assert_eq!(shot.console, Vec::<String>::new(), "console messages");

    // The timeline (window bars, the change echo waits with, the now line), then below it
    // the table, from its header row on.
    let (header, header_px) = shot.rows_of("#1f3a5f");
    let (bars, bar_px) = shot.rows_of("#2e8b57");
    let (pending, pending_px) = shot.rows_of("#e67e22");
    let (now, now_px) = shot.rows_of("#d00000");
    assert!(
        header_px > 20_000,
        "the table's header is drawn ({header_px} px)"
    );
    // 9 partners × 4 windows over the 14 days, each a bar of some 12 × 16 px.
    assert!(bar_px > 9 * 4 * 100, "window bars are drawn ({bar_px} px)");
    assert!(
        pending_px > 100,
        "the pending marker is drawn ({pending_px} px)"
    );
    assert!(now_px > 9 * 20, "the now line is drawn ({now_px} px)");
    let top = header[0];
    let above = |rows: &[usize]| rows.iter().filter(|y| **y < top).count();
    assert!(
        above(&bars) > 9 * 14 && above(&pending) > 0 && above(&now) > 9 * 20,
        "the timeline is above the table (header from row {top}, bars in rows {:?}..{:?})",
        bars.first(),
        bars.last()
    );

    // The check can fail: a page with an external image and an inline script is reported.
    let bad = f.root().join("bad.html");
    std::fs::write(
        &bad,
        html.replace(
            "</body>",
            "<img src=\"http://127.0.0.1:9/logo.png\"><script>alert(1)</script></body>",
        ),
    )
    .unwrap();
    let shot = Shot::take(&bad);
    assert!(
        shot.console
            .iter()
            .any(|l| l.contains("Content Security Policy") && l.contains("127.0.0.1:9")),
        "{:?}",
        shot.console
    );
    assert!(
        shot.console.iter().any(|l| l.contains("inline script")),
        "{:?}",
        shot.console
    );
}

/// The shipped workflow parses as YAML, runs on a schedule and publishes the page.
#[test]
fn the_ci_example_publishes_the_page_on_a_schedule() {
    let path = common::root().join("examples/ci/fleet-page.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let parsed: Result<serde_json::Value, _> = berth::manifest::parse(&text);
    let parsed = parsed.unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    assert!(
        parsed["on"]["schedule"][0]["cron"].is_string(),
        "{parsed:#}"
    );
    for needle in [
        "berth fleet --status status --manifests manifests --format html > site/index.html",
        "--format markdown >> \"$GITHUB_STEP_SUMMARY\"",
        "actions/upload-pages-artifact",
        "actions/deploy-pages",
        "--exit-code",
    ] {
        assert!(text.contains(needle), "fleet-page.yml lacks `{needle}`");
    }
}
