//! Snapshots of what berth prints, made stable: whatever differs from one run to the next
//! (partner names, ports, temp paths, ids, digests, timings, the current time) is replaced
//! by a placeholder, so a snapshot changes only when the output a user reads does.

/// The filters every snapshot is taken under.
pub fn filters() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    let tmp = std::env::temp_dir();
    let tmp = tmp.to_str().expect("utf-8 temp dir").trim_end_matches('/');
    s.add_filter(&format!(r"{}/[^\s/'`|]+", escape(tmp)), "[TMP]");
    // Partners are named `t<pid>-<n>-<tag>` (see `unique_partner`).
    s.add_filter(r"\bt\d+-\d+-", "t[RUN]-");
    s.add_filter(r"sha256:[0-9a-f]{64}", "sha256:[DIGEST]");
    s.add_filter(r"\b[0-9a-f]{64}\b", "[ID]");
    s.add_filter(r"\b[0-9a-f]{40}\b", "[COMMIT]");
    s.add_filter(r"\b[0-9a-f]{12}\b", "[SHORT]");
    s.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    s.add_filter(r"\b\d+ ms\b", "[N] ms");
    s.add_filter(r#""millis": \d+"#, r#""millis": [N]"#);
    s.add_filter(r"\b\d+\.\d\ds\b", "[SECS]s");
    // Instants berth takes from the clock carry sub-second digits; fixed `--now` ones don't.
    s.add_filter(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d)",
        "[NOW]",
    );
    // The end of the window an agent's pass ran in, which moves on with the clock.
    s.add_filter(
        r"open until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
        "open until [LATER]",
    );
    s
}

/// `insta::assert_snapshot!` under [`filters`].
macro_rules! assert_stable_snapshot {
    ($name:expr, $value:expr $(,)?) => {
        $crate::common::filters().bind(|| insta::assert_snapshot!($name, $value))
    };
}
pub(crate) use assert_stable_snapshot;

/// `text` as a regex that matches it literally.
fn escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Every kind of value that changes between runs, as berth prints them, comes out as its
/// placeholder; a fixed instant stays as it is.
#[test]
fn filters_replace_what_changes_between_runs() {
    let path = std::env::temp_dir().join(".tmpAbC123/repo/partners/p.yaml");
    let sample = format!(
        "partner {partner}\nfile {path}\nimage sha256:{digest}\ncontainer {id}\n\
         revision {commit}\ndigest {short} -> {short}\nhealth http://127.0.0.1:{port}/health\n\
         last pass (exit 0, 87 ms)\n\"millis\": 1534\ndone  12.07s\nat {now}\n\
         next window: open until 2026-12-10T00:00:00Z\nnext opens 2026-11-28T01:00:00Z\n",
        partner = super::unique_partner("filters"),
        path = path.display(),
        digest = "ab".repeat(32),
        id = "0123456789abcdef".repeat(4),
        commit = "fedcba9876".repeat(4),
        short = "0123456789ab",
        port = super::free_port(),
        now = jiff::Timestamp::now(),
    );
    let mut settings = filters();
    settings.set_snapshot_path("../snapshots");
    settings.bind(|| insta::assert_snapshot!("filters", sample));
}
