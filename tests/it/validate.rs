//! `berth validate` and `berth schema` as a user runs them: the built binary, on real files.
//!
//! `tests/fixtures/invalid/<case>/` holds one manifest repo per defect, each otherwise a valid
//! minimal repo, and `expect.txt`: one line `path:line:col: substring`, the first error the
//! repo must produce (path relative to the fixture repo). A finding about the repo as a
//! whole names a directory and has no line: `partners/: substring`. A new case directory is
//! picked up without touching this file. Cases that cannot be committed (a file over 1 MiB,
//! an absolute symlink) are made at run time in temporary copies of `tests/fixtures/minimal`.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

use crate::common::{
    Berth, Host, IMAGE_REPO, Run, assert_stable_snapshot, remove_partner_containers, root, run,
};

/// Longest any single `berth validate` of a fixture may take, alias bomb included.
const FAST: Duration = Duration::from_secs(5);

/// Runs the built `berth <subcommand> args…` in `cwd`.
fn berth_in(cwd: &Path, args: &[&str]) -> Run {
    Berth::new(args[0]).args(&args[1..]).current_dir(cwd).run()
}

/// Runs the built `berth` from the crate root, so repo paths read as a user types them.
fn berth(args: &[&str]) -> Run {
    berth_in(&root(), args)
}

/// The `path:line:col: error: message` lines of text output (not the quoted source lines).
fn error_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| {
            l.split_once(": error: ")
                .is_some_and(|(loc, _)| !loc.is_empty() && !loc.contains(char::is_whitespace))
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A temporary copy of `tests/fixtures/minimal`, a valid one-partner, one-script repo.
fn minimal_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("tests/fixtures/minimal"), dir.path());
    dir
}

/// `location` and `substring` of an `expect.txt`, checked for shape.
fn read_expect(case: &Path) -> Result<(String, String), String> {
    let file = case.join("expect.txt");
    let text = fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let [line] = lines.as_slice() else {
        return Err(format!("{}: want exactly one line", file.display()));
    };
    let (location, substring) = line
        .split_once(": ")
        .ok_or_else(|| format!("{}: want `path:line:col: substring`", file.display()))?;
    let path = match location.split(':').collect::<Vec<_>>().as_slice() {
        [path, l, c] if l.parse::<u32>().is_ok_and(|n| n > 0) && c.parse::<u32>().is_ok() => *path,
        [dir] if dir.ends_with('/') => *dir,
        _ => return Err(format!("{}: bad location `{location}`", file.display())),
    };
    // A directory a repo-level finding names may be absent (git keeps no empty directory).
    if !path.ends_with('/') && fs::symlink_metadata(case.join(path)).is_err() {
        return Err(format!(
            "{}: `{path}` is not in the fixture",
            file.display()
        ));
    }
    if substring.trim().is_empty() {
        return Err(format!("{}: empty expected message", file.display()));
    }
    Ok((location.to_owned(), substring.to_owned()))
}

/// What is wrong with one fixture's run, if anything.
fn check_case(rel: &str, location: &str, substring: &str) -> Result<(), String> {
    let run = berth(&["validate", rel]);
    let shown = || format!("stdout:\n{}stderr:\n{}", run.stdout(), run.stderr());
    if run.code() != Some(1) {
        return Err(format!("exit code {:?}, want 1\n{}", run.code(), shown()));
    }
    if run.elapsed() > FAST {
        return Err(format!("took {:?}, want under {FAST:?}", run.elapsed()));
    }
    let errors = error_lines(run.stdout());
    let Some(first) = errors.first() else {
        return Err(format!("no error line\n{}", shown()));
    };
    let prefix = format!("{location}: error: ");
    if !first
        .strip_prefix(&prefix)
        .is_some_and(|m| m.contains(substring))
    {
        return Err(format!(
            "first error is\n  {first}\nwant `{prefix}` then a message containing `{substring}`\n{}",
            shown()
        ));
    }
    // One defect may legitimately be seen twice, never more.
    if errors.len() > 2 {
        return Err(format!(
            "{} errors for one defect\n{}",
            errors.len(),
            shown()
        ));
    }
    let summary = format!("{rel}: {} error(s)", errors.len());
    if !run.stdout().contains(&summary) {
        return Err(format!("no summary `{summary}`\n{}", shown()));
    }
    Ok(())
}

#[test]
fn every_invalid_fixture_reports_its_defect_first() {
    let dir = root().join("tests/fixtures/invalid");
    let mut cases: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no fixture under {}", dir.display());

    let mut failures = Vec::new();
    for case in &cases {
        let rel = format!("tests/fixtures/invalid/{case}");
        let result = read_expect(&root().join(&rel))
            .and_then(|(location, substring)| check_case(&rel, &location, &substring));
        if let Err(why) = result {
            failures.push(format!("--- {case}: {why}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn alias_bomb_is_refused_fast() {
    let run = berth(&["validate", "tests/fixtures/invalid/alias-bomb"]);
    run.assert_exit(1);
    assert!(run.elapsed() < FAST, "took {:?}", run.elapsed());
    assert!(
        run.stdout().contains("alias replay limit exceeded"),
        "{}",
        run.stdout()
    );
}

#[test]
fn a_symlink_out_of_the_repo_is_refused_and_its_target_never_quoted() {
    let run = berth(&["validate", "tests/fixtures/invalid/symlink-out-of-repo"]);
    run.assert_exit(1);
    assert!(
        run.stdout()
            .contains("partners/beta.yaml:1:1: error: symlink leads out of the repo"),
        "{}",
        run.stdout()
    );
    assert!(
        !run.stdout().contains("OUTSIDE-THE-FIXTURE-REPO"),
        "quoted the file the symlink points at:\n{}",
        run.stdout()
    );
}

#[cfg(unix)]
#[test]
fn an_absolute_symlink_to_a_directory_out_of_the_repo_is_refused() {
    let repo = minimal_copy();
    let elsewhere = tempfile::tempdir().unwrap();
    let scripts = repo.path().join("scripts");
    fs::rename(&scripts, elsewhere.path().join("scripts")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path().join("scripts"), &scripts).unwrap();
    let run = berth(&["validate", repo.path().to_str().unwrap()]);
    run.assert_exit(1);
    let errors = error_lines(run.stdout());
    assert!(
        errors
            .iter()
            .any(|l| l.starts_with("scripts:1:1: error: symlink leads out of the repo")),
        "{}",
        run.stdout()
    );
    assert!(errors.len() <= 2, "{}", run.stdout());
}

#[test]
fn a_file_over_one_mib_is_refused_unread() {
    let repo = minimal_copy();
    let partner = repo.path().join("partners/alpha.yaml");
    let mut text = String::from("# FIRST-LINE-OF-A-HUGE-FILE\n");
    text.push_str(&fs::read_to_string(&partner).unwrap());
    while text.len() as u64 <= berth::manifest::MAX_FILE_BYTES {
        text.push_str("# padding, so the file is otherwise a valid partner\n");
    }
    fs::write(&partner, &text).unwrap();
    let run = berth(&["validate", repo.path().to_str().unwrap()]);
    run.assert_exit(1);
    assert!(run.elapsed() < FAST, "took {:?}", run.elapsed());
    let errors = error_lines(run.stdout());
    assert_eq!(errors.len(), 1, "{}", run.stdout());
    let want = format!(
        "partners/alpha.yaml:1:1: error: file is {} bytes; manifests are limited to 1 MiB",
        text.len()
    );
    assert!(errors[0].starts_with(&want), "{}", run.stdout());
    assert!(
        !run.stdout().contains("FIRST-LINE-OF-A-HUGE-FILE"),
        "{}",
        run.stdout()
    );
}

#[test]
fn the_example_manifests_are_valid() {
    let run = berth(&["validate", "manifests"]);
    run.assert_exit(0);
    assert!(error_lines(run.stdout()).is_empty(), "{}", run.stdout());
    assert!(
        run.stdout().contains("manifests: valid"),
        "{}",
        run.stdout()
    );
}

const THREE_DEFECTS: &str = "tests/fixtures/three-defects";

/// The three findings of `three-defects`, in the order they must be reported: by file, then
/// position, whatever order the checks found them in.
const THREE: [(&str, u32, u32, &str); 3] = [
    ("partners/alpha.yaml", 8, 23, "`API_TOKEN` names a secret"),
    (
        "partners/alpha.yaml",
        9,
        11,
        "unknown time zone `Mars/Olympus_Mons`",
    ),
    (
        "scripts/counts.yaml",
        10,
        11,
        "invalid memory `512 megabytes`",
    ),
];

#[test]
fn errors_are_all_collected_in_a_stable_sorted_order() {
    let first = berth(&["validate", THREE_DEFECTS]);
    first.assert_exit(1);
    let errors = error_lines(first.stdout());
    assert_eq!(errors.len(), 3, "{}", first.stdout());
    for (line, (path, l, c, message)) in errors.iter().zip(THREE) {
        let prefix = format!("{path}:{l}:{c}: error: ");
        assert!(
            line.strip_prefix(&prefix)
                .is_some_and(|m| m.contains(message)),
            "want `{prefix}…{message}…`, got `{line}`"
        );
    }
    assert!(first.stdout().contains("3 error(s), 0 warning(s)"));
    for format in ["text", "json", "github"] {
        let a = berth(&["validate", THREE_DEFECTS, "--format", format]);
        let b = berth(&["validate", THREE_DEFECTS, "--format", format]);
        assert_eq!(
            a.stdout(),
            b.stdout(),
            "{format} output differs between runs"
        );
        a.assert_exit(1);
        assert_stable_snapshot!(format!("validate_three_defects_{format}"), a.stdout());
    }
}

/// A multi-component script with three mistakes: a volume its script does not declare (so
/// the declared one goes unused, a warning), a dependency on a component that does not
/// exist, and `completed` asked of a component that is not a job.
#[test]
fn a_multi_component_scripts_mistakes_are_reported_at_their_lines() {
    let repo = "tests/fixtures/component-defects";
    let run = berth(&["validate", repo]);
    run.assert_exit(1);
    assert_eq!(
        error_lines(run.stdout()),
        [
            "scripts/linkage.yaml:16:28: error: component `db` mounts volume `pg-data`, which the script's `volumes:` does not declare",
            "scripts/linkage.yaml:20:39: error: component `api` depends on unknown component `cache`: the script declares no such component",
            "scripts/linkage.yaml:24:23: error: component `worker` waits for `db` to be `completed`, but `db` is not a job: use `started` or `healthy`",
        ],
        "{}",
        run.stdout()
    );
    assert!(
        run.stdout().contains(
            "scripts/linkage.yaml:10:11: warning: volume `pgdata` is declared but no component mounts it"
        ),
        "{}",
        run.stdout()
    );
    assert!(run.stdout().contains("3 error(s), 1 warning(s)"));
    assert_stable_snapshot!("validate_component_defects_text", run.stdout());
}

/// Parses `--format json` output and checks its documented shape, field by field.
fn json_report(stdout: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"));
    let top: BTreeSet<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        top,
        BTreeSet::from(["valid", "errors", "warnings", "diagnostics"])
    );
    assert!(v["valid"].is_boolean() && v["errors"].is_u64() && v["warnings"].is_u64());
    for d in v["diagnostics"].as_array().expect("diagnostics array") {
        let keys: BTreeSet<&str> = d.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["severity", "path", "line", "column", "message"])
        );
        assert!(
            matches!(d["severity"].as_str(), Some("error" | "warning")),
            "{d}"
        );
        assert!(d["path"].is_string() && d["message"].is_string(), "{d}");
        assert!(d["line"].is_u64() || d["line"].is_null(), "{d}");
        assert_eq!(d["line"].is_null(), d["column"].is_null(), "{d}");
    }
    let count = |sev: &str| {
        v["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["severity"] == sev)
            .count() as u64
    };
    assert_eq!(v["errors"], count("error"));
    assert_eq!(v["warnings"], count("warning"));
    assert_eq!(v["valid"], v["errors"] == 0);
    v
}

#[test]
fn json_format_has_the_documented_shape() {
    let run = berth(&["validate", THREE_DEFECTS, "--format", "json"]);
    run.assert_exit(1);
    let v = json_report(run.stdout());
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"], 3);
    let diags = v["diagnostics"].as_array().unwrap();
    assert_eq!(diags.len(), 3);
    for (d, (path, line, col, message)) in diags.iter().zip(THREE) {
        assert_eq!(d["severity"], "error");
        assert_eq!(d["path"], path);
        assert_eq!(
            (d["line"].as_u64(), d["column"].as_u64()),
            (Some(line.into()), Some(col.into()))
        );
        assert!(d["message"].as_str().unwrap().contains(message), "{d}");
    }

    let run = berth(&["validate", "manifests", "--format", "json"]);
    run.assert_exit(0);
    let v = json_report(run.stdout());
    assert_eq!(
        (v["valid"].clone(), v["errors"].clone()),
        (true.into(), 0.into())
    );

    // A finding about the repo as a whole has no position: null line and column.
    let run = berth(&[
        "validate",
        "tests/fixtures/invalid/no-partner",
        "--format",
        "json",
    ]);
    run.assert_exit(1);
    let v = json_report(run.stdout());
    let d = &v["diagnostics"][0];
    assert_eq!(
        (d["path"].as_str(), d["line"].is_null()),
        (Some("partners/"), true)
    );
}

#[test]
fn github_format_names_files_under_the_repo_argument() {
    let want = |prefix: &str| -> Vec<String> {
        THREE
            .iter()
            .map(|(path, l, c, _)| format!("::error file={prefix}{path},line={l},col={c}::"))
            .collect()
    };
    for (cwd, arg, prefix) in [
        (root(), THREE_DEFECTS, "tests/fixtures/three-defects/"),
        (
            root(),
            "tests/fixtures/three-defects/",
            "tests/fixtures/three-defects/",
        ),
        (root().join(THREE_DEFECTS), ".", ""),
    ] {
        let run = berth_in(&cwd, &["validate", arg, "--format", "github"]);
        run.assert_exit(1);
        let lines: Vec<&str> = run.stdout().lines().collect();
        assert_eq!(lines.len(), 3, "{arg}: {}", run.stdout());
        for (line, (want, (_, _, _, message))) in lines.iter().zip(want(prefix).iter().zip(THREE)) {
            assert!(
                line.strip_prefix(want.as_str())
                    .is_some_and(|m| m.contains(message)),
                "{arg}: want `{want}…{message}…`, got `{line}`"
            );
        }
    }
}

#[test]
fn warnings_alone_do_not_fail() {
    let repo = "tests/fixtures/unused-script";
    let run = berth(&["validate", repo]);
    run.assert_exit(0);
    assert!(
        run.stdout()
            .contains("scripts/tallies.yaml:3:7: warning: no partner runs script `tallies`"),
        "{}",
        run.stdout()
    );
    assert!(
        run.stdout().contains("valid (1 warning(s))"),
        "{}",
        run.stdout()
    );
    assert_stable_snapshot!("validate_warning_text", run.stdout());

    let run = berth(&["validate", repo, "--format", "json"]);
    run.assert_exit(0);
    let v = json_report(run.stdout());
    assert_eq!(
        (
            v["valid"].clone(),
            v["errors"].clone(),
            v["warnings"].clone()
        ),
        (true.into(), 0.into(), 1.into())
    );
    assert_stable_snapshot!("validate_warning_json", run.stdout());

    let run = berth(&["validate", repo, "--format", "github"]);
    run.assert_exit(0);
    assert_eq!(
        run.stdout(),
        "::warning file=tests/fixtures/unused-script/scripts/tallies.yaml,line=3,col=7::no partner runs script `tallies`\n"
    );
}

/// Every error of `tests/fixtures/collisions`: each script there says in a comment what it
/// clashes with, if anything, and four partners run different sets of them.
const COLLISIONS: [&str; 6] = [
    "scripts/cache.yaml:11:11: error: host port 0.0.0.0:9000/tcp is also published by script `api` for partner `north` (as 127.0.0.1:9000/tcp): two containers cannot bind it",
    "scripts/cache.yaml:11:11: error: host port 0.0.0.0:9000/tcp is also published by script `api` for partner `south` (as 127.0.0.1:9000/tcp): two containers cannot bind it",
    "scripts/cache.yaml:11:11: error: host port 0.0.0.0:9000/tcp is also published by script `board` for partner `west` (as 127.0.0.2:9000/tcp): two containers cannot bind it",
    "scripts/edge.yaml:11:11: error: host port [::]:9100/udp is also published by script `api` for partner `north` (as 9100/udp on every address): two containers cannot bind it",
    "scripts/gate.yaml:13:9: error: health URL `http://127.0.0.1:7000/health` is also the health check of script `feed` for partner `north`, and both run on the host network: one container would answer the other's check",
    "scripts/jobs.yaml:11:11: error: host port 127.0.0.1:9000/tcp is also published by script `api` for partner `south`: two containers cannot bind it",
];

#[test]
fn host_ports_and_health_urls_two_scripts_of_a_partner_claim_are_errors() {
    let run = berth(&["validate", "tests/fixtures/collisions"]);
    run.assert_exit(1);
    // Another address, another protocol or family, a port only inside the container, and
    // ports on the host network clash with nothing; a clash is reported once per partner,
    // at the script later in name order, whatever order the partner lists them in.
    assert_eq!(error_lines(run.stdout()), COLLISIONS, "{}", run.stdout());
    assert!(
        run.stdout()
            .contains("tests/fixtures/collisions: 6 error(s), 0 warning(s)"),
        "{}",
        run.stdout()
    );
}

#[test]
fn the_same_scripts_on_different_partners_do_not_clash() {
    let repo = tempfile::tempdir().unwrap();
    copy_dir(&root().join("tests/fixtures/collisions"), repo.path());
    // Each partner runs one script of every clashing pair; together they run all of them.
    let partners = repo.path().join("partners");
    for entry in fs::read_dir(&partners).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let scripts: [&[&str]; 3] = [
        &["api", "board", "dash", "feed", "hub"],
        &["cache", "edge", "gate", "hub"],
        &["jobs", "hub"],
    ];
    for (i, run) in scripts.iter().enumerate() {
        let name = format!("site-{i}");
        let text = fs::read_to_string(root().join("tests/fixtures/minimal/partners/alpha.yaml"))
            .unwrap()
            .replace("name: alpha", &format!("name: {name}"))
            .replace("  - script: counts\n", "");
        let opt_ins: String = run.iter().map(|s| format!("  - script: {s}\n")).collect();
        fs::write(partners.join(format!("{name}.yaml")), text + &opt_ins).unwrap();
    }
    let run = berth(&["validate", repo.path().to_str().unwrap()]);
    run.assert_exit(0);
    assert!(
        run.stdout().ends_with(": valid (0 warning(s))\n"),
        "{}",
        run.stdout()
    );
}

/// `ports` entries of two scripts of one partner, with `{p}` for a free host port, and
/// whether they clash.
const PORT_PAIRS: [(&str, &str, bool); 10] = [
    ("127.0.0.1:{p}:80", "127.0.0.1:{p}:80", true),
    ("127.0.0.1:{p}:80", "127.0.0.2:{p}:80", false),
    ("127.0.0.1:{p}:80", "0.0.0.0:{p}:80", true),
    ("127.0.0.1:{p}:80", "{p}:80", true),
    ("127.0.0.1:{p}:80", "[::1]:{p}:80", false),
    ("0.0.0.0:{p}:80", "[::]:{p}:80", false),
    ("[::1]:{p}:80", "[::]:{p}:80", true),
    ("{p}:80/udp", "{p}:80", false),
    ("{p}:80/udp", "[::]:{p}:80/udp", true),
    ("{p}:80", "80", false),
];

#[test]
fn validate_calls_a_host_port_clash_exactly_what_the_engine_refuses() {
    let host = Host::new("ports");
    let p = host.port.to_string();
    let image = format!("{IMAGE_REPO}:1.1.0");
    let label = format!("berth.partner={}", host.partner);
    let start = |spec: &str| {
        run(std::process::Command::new("docker")
            .args(["run", "-d", "--label", &label, "-p", spec, &image]))
    };
    for (i, (first, second, clash)) in PORT_PAIRS.iter().enumerate() {
        let (first, second) = (first.replace("{p}", &p), second.replace("{p}", &p));
        // Script `counts` publishes the first, `tallies` the second, and partner alpha runs both.
        let repo = host.dir.path().join(format!("repo-{i}"));
        copy_dir(&root().join("tests/fixtures/minimal"), &repo);
        let counts = fs::read_to_string(repo.join("scripts/counts.yaml")).unwrap();
        let with_port = |script: &str, spec: &str| {
            format!(
                "{}container:\n  ports: [\"{spec}\"]\n",
                counts.replace("counts", script)
            )
        };
        fs::write(
            repo.join("scripts/counts.yaml"),
            with_port("counts", &first),
        )
        .unwrap();
        fs::write(
            repo.join("scripts/tallies.yaml"),
            with_port("tallies", &second),
        )
        .unwrap();
        let partner = repo.join("partners/alpha.yaml");
        let opt_ins = fs::read_to_string(&partner).unwrap() + "  - script: tallies\n";
        fs::write(&partner, opt_ins).unwrap();
        let validated = berth(&["validate", repo.to_str().unwrap()]);
        let said = validated.code() == Some(1)
            && error_lines(validated.stdout()).iter().any(|l| {
                l.starts_with("scripts/tallies.yaml:10:11: error: host port ")
                    && l.contains("is also published by script `counts` for partner `alpha`")
            });

        let started = start(&first);
        assert_eq!(started.code(), Some(0), "{first}: {}", started.stderr());
        let refused = start(&second).code() != Some(0);
        remove_partner_containers(&host.partner);
        assert_eq!(
            (said, refused),
            (*clash, *clash),
            "{first} then {second}: (validate says they clash, the engine refuses the second)\n{}",
            validated.stdout()
        );
    }
}

#[test]
fn a_container_name_two_partners_would_share_is_a_warning() {
    // Partners `a` and `a-b` both run scripts `c` and `b-c`; only `a`'s `b-c` and `a-b`'s `c`
    // make the same name.
    let repo = "tests/fixtures/container-name-collision";
    let run = berth(&["validate", repo]);
    run.assert_exit(0);
    let warning = "partners/a-b.yaml:11:13: warning: partner `a-b` running script `c` and partner `a` running script `b-c` both name their container `berth-a-b-c`: they cannot share a host";
    let warnings: Vec<&str> = run
        .stdout()
        .lines()
        .filter(|l| l.contains(": warning: "))
        .collect();
    assert_eq!(warnings, [warning], "{}", run.stdout());
    assert!(
        run.stdout()
            .contains(&format!("{repo}: valid (1 warning(s))")),
        "{}",
        run.stdout()
    );

    let run = berth(&["validate", repo, "--format", "json"]);
    run.assert_exit(0);
    let v = json_report(run.stdout());
    let d = &v["diagnostics"][0];
    assert_eq!(
        (
            v["warnings"].as_u64(),
            d["path"].as_str(),
            d["line"].as_u64(),
            d["column"].as_u64()
        ),
        (Some(1), Some("partners/a-b.yaml"), Some(11), Some(13)),
        "{v}"
    );
}

#[test]
fn a_repo_that_cannot_be_read_cannot_run() {
    let missing = "tests/fixtures/no-such-repo";
    let run = berth(&["validate", missing]);
    run.assert_exit(3);
    assert!(run.stderr().contains(missing), "{}", run.stderr());

    let file = "tests/fixtures/outside.yaml";
    let run = berth(&["validate", file]);
    run.assert_exit(3);
    assert!(run.stderr().contains(file), "{}", run.stderr());
    assert!(run.stderr().contains("not a directory"), "{}", run.stderr());
}

#[test]
fn checked_in_schemas_are_what_berth_schema_prints() {
    for kind in ["partner", "script", "fleet"] {
        let run = berth(&["schema", kind]);
        run.assert_exit(0);
        let path = root().join(format!("schemas/{kind}.json"));
        let checked_in = fs::read_to_string(&path).unwrap_or_default();
        assert!(
            run.stdout() == checked_in,
            "schemas/{kind}.json is out of date with the model; regenerate it with\n  \
             cargo run -q -- schema {kind} > schemas/{kind}.json"
        );
        let _: serde_json::Value = serde_json::from_str(&checked_in).expect("schema is JSON");
    }
}

#[test]
fn example_manifests_point_editors_at_their_schema() {
    const MARK: &str = "# yaml-language-server: $schema=";
    let mut files = Vec::new();
    let mut dirs = vec![root().join("manifests")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    assert!(!files.is_empty(), "no YAML under manifests/");
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let target = first
            .strip_prefix(MARK)
            .unwrap_or_else(|| panic!("{}: first line must be `{MARK}…`", file.display()));
        let schema = file.parent().unwrap().join(target.trim());
        assert!(
            schema.is_file(),
            "{}: {} does not exist",
            file.display(),
            schema.display()
        );
        let kind = match file
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
        {
            "partners" => "partner",
            "scripts" => "script",
            _ => "fleet",
        };
        assert!(
            target.trim().ends_with(&format!("schemas/{kind}.json")),
            "{}: points at {target}, want the {kind} schema",
            file.display()
        );
    }
}

/// The example partner and script manifests, as (path relative to `manifests/`, text).
fn example_manifests() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for dir in ["partners", "scripts"] {
        let mut names: Vec<_> = fs::read_dir(root().join("manifests").join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        for name in names {
            let rel = format!("{dir}/{name}");
            let text = fs::read_to_string(root().join("manifests").join(&rel)).unwrap();
            out.push((rel, text));
        }
    }
    assert!(!out.is_empty());
    out
}

/// Bytes that matter to YAML, so that mutations change structure and not only text.
const YAML_BYTES: &[u8] = b":-&*[]{}\"'\n \t#|>!%@`,?";

/// One edit at a relative position: replace, insert or delete a byte.
#[derive(Debug, Clone)]
enum Edit {
    Replace(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![any::<u8>(), prop::sample::select(YAML_BYTES)];
    prop_oneof![
        (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Edit::Delete),
    ]
}

fn mutate(text: &str, edits: &[Edit], truncate: Option<prop::sample::Index>) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for e in edits {
        match e {
            Edit::Replace(i, b) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes[at] = *b;
            }
            Edit::Insert(i, b) => {
                let at = i.index(bytes.len() + 1);
                bytes.insert(at, *b);
            }
            Edit::Delete(i) if !bytes.is_empty() => {
                bytes.remove(i.index(bytes.len()));
            }
            _ => {}
        }
    }
    if let Some(t) = truncate {
        bytes.truncate(t.index(bytes.len() + 1));
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Parses `text` as both kinds; returning at all (Ok or Err) is the property.
fn parse_both(text: &str) {
    let _ = berth::manifest::parse::<berth::manifest::Partner>(text);
    let _ = berth::manifest::parse::<berth::manifest::Script>(text);
}

/// Validates `repo` and renders the findings every way; none of it may panic, and the repo
/// is always readable.
fn validate_and_render(repo: &Path) {
    let (_, diags) = berth::manifest::validate(repo).expect("the repo is readable");
    let _ = diags.render_text(repo);
    let _ = diags.render_json();
    let _ = diags.render_github("repo");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parsing_arbitrary_text_never_panics(text in any::<String>()) {
        parse_both(&text);
    }

    #[test]
    fn parsing_yaml_like_text_never_panics(text in "[a-zA-Z0-9:\\-&*\\[\\]{}\"' \n#|>!,.?/~]{0,300}") {
        parse_both(&text);
    }

    #[test]
    fn parsing_mutated_examples_never_panics(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 0..8),
        truncate in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let examples = example_manifests();
        let (rel, text) = &examples[which.index(examples.len())];
        let mutated = mutate(text, &edits, truncate);
        parse_both(&mutated);
        // And the whole example repo with that one file mutated, cross-file checks included.
        let repo = tempfile::tempdir().unwrap();
        copy_dir(&root().join("manifests"), repo.path());
        fs::write(repo.path().join(rel), &mutated).unwrap();
        validate_and_render(repo.path());
    }

    #[test]
    fn validating_a_repo_with_an_arbitrary_partner_file_never_panics(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..400),
            "[a-z0-9:\\-&*\\[\\]{}\"' \n#|>!,.]{0,300}".prop_map(String::into_bytes),
        ]
    ) {
        let repo = minimal_copy();
        fs::write(repo.path().join("partners/alpha.yaml"), &bytes).unwrap();
        validate_and_render(repo.path());
    }
}

#[test]
fn the_version_names_the_commit_berth_was_built_from() {
    let out = Berth::new("--version").run();
    out.assert_exit(0);
    let commit = if root().join(".git").exists() {
        crate::common::git(&root(), &["rev-parse", "--short=12", "HEAD"])
    } else {
        "unknown commit".to_owned()
    };
    assert_eq!(
        out.stdout(),
        format!("berth {} ({commit})\n", env!("CARGO_PKG_VERSION"))
    );
}
