//! Choosing a version from a repository's tags: semver over the tags, a leading `v`
//! accepted, pre-releases only when allowed, build metadata not ordering.

use semver::{Version, VersionReq};

use crate::image::TagRef;

/// A tag read as semver: a leading `v` is accepted; other non-semver tags are ignored.
pub fn tag_version(tag: &str) -> Option<Version> {
    Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

/// Whether a version is admitted by a requirement, pre-releases only when allowed. With
/// pre-releases allowed, a pre-release counts by its release numbers (`1.5.0-rc.1`
/// satisfies `^1.2`), which is what "allow pre-release tags" means to a person.
fn admits(req: &VersionReq, v: &Version, prerelease: bool) -> bool {
    if v.pre.is_empty() {
        req.matches(v)
    } else if prerelease {
        let release = Version::new(v.major, v.minor, v.patch);
        req.matches(v) || req.matches(&release)
    } else {
        false
    }
}

/// The highest tag every requirement admits. Build metadata does not order: among tags of
/// equal precedence the unprefixed one wins, then the lexically smallest.
pub fn pick<'a>(tags: &'a [TagRef], reqs: &[&VersionReq], prerelease: bool) -> Option<&'a TagRef> {
    tags.iter()
        .filter_map(|t| tag_version(&t.tag).map(|v| (v, t)))
        .filter(|(v, _)| reqs.iter().all(|r| admits(r, v, prerelease)))
        .max_by(|(va, ta), (vb, tb)| {
            va.cmp_precedence(vb)
                .then_with(|| tb.tag.starts_with('v').cmp(&ta.tag.starts_with('v')))
                .then_with(|| tb.tag.cmp(&ta.tag))
        })
        .map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(names: &[&str]) -> Vec<TagRef> {
        names
            .iter()
            .map(|t| TagRef {
                tag: (*t).into(),
                digest: Some(format!("sha256:{t}")),
            })
            .collect()
    }

    fn chosen(names: &[&str], reqs: &[&str], pre: bool) -> Option<String> {
        let t = tags(names);
        let reqs: Vec<VersionReq> = reqs.iter().map(|r| r.parse().unwrap()).collect();
        let refs: Vec<&VersionReq> = reqs.iter().collect();
        pick(&t, &refs, pre).map(|t| t.tag.clone())
    }

    #[test]
    fn highest_in_both_ranges() {
        let all = [
            "1.2.0", "1.4.1", "1.4.3", "1.5.0", "2.0.0", "latest", "main",
        ];
        assert_eq!(chosen(&all, &["^1.2.0"], false).as_deref(), Some("1.5.0"));
        assert_eq!(
            chosen(&all, &["^1.2.0", "~1.4"], false).as_deref(),
            Some("1.4.3")
        );
        assert_eq!(chosen(&all, &["^3"], false), None);
        assert_eq!(chosen(&["latest"], &[], false), None);
    }

    #[test]
    fn prereleases_only_when_allowed() {
        let all = ["1.4.0", "1.5.0-rc.1"];
        assert_eq!(chosen(&all, &["^1.2"], false).as_deref(), Some("1.4.0"));
        assert_eq!(chosen(&all, &["^1.2"], true).as_deref(), Some("1.5.0-rc.1"));
    }

    #[test]
    fn v_prefix_counts_and_unprefixed_wins_a_tie() {
        assert_eq!(
            chosen(&["v1.3.0", "1.2.0"], &["^1"], false).as_deref(),
            Some("v1.3.0")
        );
        assert_eq!(
            chosen(&["v1.3.0", "1.3.0"], &["^1"], false).as_deref(),
            Some("1.3.0")
        );
        assert_eq!(
            chosen(&["1.3.0", "v1.3.0"], &["^1"], false).as_deref(),
            Some("1.3.0")
        );
    }

    #[test]
    fn build_metadata_does_not_order() {
        assert_eq!(
            chosen(&["1.3.0+b", "1.3.0+a"], &["^1"], false).as_deref(),
            Some("1.3.0+a")
        );
        assert_eq!(
            chosen(&["1.3.0+a", "1.3.0+b"], &["^1"], false).as_deref(),
            Some("1.3.0+a")
        );
    }

    fn arb_tag() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u64..3, 0u64..3, 0u64..3, any::<bool>(), prop::option::of(0u8..2), prop::option::of(0u8..2))
                .prop_map(|(ma, mi, pa, v, pre, build)| {
                    let mut t = format!("{}{ma}.{mi}.{pa}", if v { "v" } else { "" });
                    if let Some(p) = pre {
                        t.push_str(&format!("-rc.{p}"));
                    }
                    if let Some(b) = build {
                        t.push_str(&format!("+b{b}"));
                    }
                    t
                }),
            1 => prop::sample::select(vec!["latest".to_owned(), "main".to_owned(), "1.2".to_owned(), "vv1.0.0".to_owned()]),
        ]
    }

    proptest::proptest! {
        /// The pick satisfies every requirement, nothing admitted ranks above it, and the
        /// order tags are listed in does not matter.
        #[test]
        fn pick_is_the_highest_admitted_and_order_independent(
            names in proptest::collection::vec(arb_tag(), 0..12),
            req in proptest::sample::select(vec!["*", "^1", "~1.1", ">=0.2, <2", "=1.1.1", "^0.1", "<1"]),
            pre in proptest::bool::ANY,
            seed in proptest::num::u64::ANY,
        ) {
            let req: VersionReq = req.parse().unwrap();
            let t = tags(&names.iter().map(String::as_str).collect::<Vec<_>>());
            let got = pick(&t, &[&req], pre).cloned();
            if let Some(g) = &got {
                let v = tag_version(&g.tag).expect("the pick is semver");
                proptest::prop_assert!(admits(&req, &v, pre));
                for other in &t {
                    if let Some(ov) = tag_version(&other.tag).filter(|ov| admits(&req, ov, pre)) {
                        proptest::prop_assert!(ov.cmp_precedence(&v) != std::cmp::Ordering::Greater);
                    }
                }
            } else {
                proptest::prop_assert!(t.iter().all(|x| tag_version(&x.tag).is_none_or(|v| !admits(&req, &v, pre))));
            }
            let mut shuffled = t.clone();
            let mut state = seed;
            for i in (1..shuffled.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                shuffled.swap(i, (state >> 33) as usize % (i + 1));
            }
            proptest::prop_assert_eq!(pick(&shuffled, &[&req], pre).map(|x| x.tag.clone()), got.map(|x| x.tag));
        }
    }
}
