//! Whether two semver requirements can both be met by some version. A requirement is a
//! conjunction of comparators, and each comparator is an interval of versions, so the whole
//! requirement is one interval; two requirements meet when their intervals overlap.

use semver::{Comparator, Op, Prerelease, Version, VersionReq};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Bound {
    version: Version,
    inclusive: bool,
}

#[derive(Debug, Clone, Default)]
struct Interval {
    lower: Option<Bound>,
    upper: Option<Bound>,
}

fn v(major: u64, minor: u64, patch: u64, pre: &Prerelease) -> Version {
    Version {
        major,
        minor,
        patch,
        pre: pre.clone(),
        build: Default::default(),
    }
}

fn inc(b: Version) -> Bound {
    Bound {
        version: b,
        inclusive: true,
    }
}

fn exc(b: Version) -> Bound {
    Bound {
        version: b,
        inclusive: false,
    }
}

/// The interval one comparator admits, following the `semver` crate's (Cargo's) rules.
fn comparator_interval(c: &Comparator) -> Interval {
    let none = Prerelease::EMPTY;
    let (maj, min, pat, pre) = (c.major, c.minor, c.patch, &c.pre);
    let exact = |min: u64, pat: u64| v(maj, min, pat, pre);
    let (lower, upper) = match (c.op, min, pat) {
        (Op::Exact | Op::Wildcard, Some(mi), Some(pa)) => {
            (Some(inc(exact(mi, pa))), Some(inc(exact(mi, pa))))
        }
        (Op::Exact | Op::Wildcard | Op::Tilde, Some(mi), None) => (
            Some(inc(v(maj, mi, 0, &none))),
            Some(exc(v(maj, mi + 1, 0, &none))),
        ),
        (Op::Exact | Op::Wildcard | Op::Tilde | Op::Caret, None, _) => (
            Some(inc(v(maj, 0, 0, &none))),
            Some(exc(v(maj + 1, 0, 0, &none))),
        ),
        // Versions are discrete: above x.y.z, the least release is x.y.(z+1).
        (Op::Greater, Some(mi), Some(pa)) if pre.is_empty() => {
            (Some(inc(v(maj, mi, pa + 1, &none))), None)
        }
        (Op::Greater, Some(mi), Some(pa)) => (Some(exc(exact(mi, pa))), None),
        (Op::Greater, Some(mi), None) => (Some(inc(v(maj, mi + 1, 0, &none))), None),
        (Op::Greater, None, _) => (Some(inc(v(maj + 1, 0, 0, &none))), None),
        (Op::GreaterEq, mi, pa) => (
            Some(inc(v(maj, mi.unwrap_or(0), pa.unwrap_or(0), pre))),
            None,
        ),
        (Op::Less, mi, pa) => (
            None,
            Some(exc(v(maj, mi.unwrap_or(0), pa.unwrap_or(0), pre))),
        ),
        (Op::LessEq, Some(mi), Some(pa)) => (None, Some(inc(exact(mi, pa)))),
        (Op::LessEq, Some(mi), None) => (None, Some(exc(v(maj, mi + 1, 0, &none)))),
        (Op::LessEq, None, _) => (None, Some(exc(v(maj + 1, 0, 0, &none)))),
        (Op::Tilde, Some(mi), Some(pa)) => (
            Some(inc(exact(mi, pa))),
            Some(exc(v(maj, mi + 1, 0, &none))),
        ),
        (Op::Caret, Some(mi), pa) => {
            let lower = inc(v(maj, mi, pa.unwrap_or(0), pre));
            let upper = match (maj, mi, pa) {
                (0, 0, Some(pa)) => exc(v(0, 0, pa + 1, &none)),
                (0, mi, _) => exc(v(0, mi + 1, 0, &none)),
                (maj, _, _) => exc(v(maj + 1, 0, 0, &none)),
            };
            (Some(lower), Some(upper))
        }
        _ => (None, None),
    };
    Interval { lower, upper }
}

fn tighter_lower(a: Option<Bound>, b: Option<Bound>) -> Option<Bound> {
    match (a, b) {
        (Some(a), Some(b)) => Some(match a.version.cmp(&b.version) {
            std::cmp::Ordering::Greater => a,
            std::cmp::Ordering::Less => b,
            std::cmp::Ordering::Equal => inc_if_both(a, b),
        }),
        (a, b) => a.or(b),
    }
}

fn tighter_upper(a: Option<Bound>, b: Option<Bound>) -> Option<Bound> {
    match (a, b) {
        (Some(a), Some(b)) => Some(match a.version.cmp(&b.version) {
            std::cmp::Ordering::Less => a,
            std::cmp::Ordering::Greater => b,
            std::cmp::Ordering::Equal => inc_if_both(a, b),
        }),
        (a, b) => a.or(b),
    }
}

fn inc_if_both(a: Bound, b: Bound) -> Bound {
    Bound {
        inclusive: a.inclusive && b.inclusive,
        version: a.version,
    }
}

fn interval(req: &VersionReq) -> Interval {
    req.comparators
        .iter()
        .map(comparator_interval)
        .fold(Interval::default(), |acc, i| Interval {
            lower: tighter_lower(acc.lower, i.lower),
            upper: tighter_upper(acc.upper, i.upper),
        })
}

/// True when some version satisfies both requirements (pre-release subtleties aside).
pub fn can_intersect(a: &VersionReq, b: &VersionReq) -> bool {
    let (a, b) = (interval(a), interval(b));
    let floor = inc(Version::new(0, 0, 0));
    let lower = tighter_lower(Some(floor), tighter_lower(a.lower, b.lower)).expect("floor");
    match tighter_upper(a.upper, b.upper) {
        Some(u) => match lower.version.cmp(&u.version) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Equal => lower.inclusive && u.inclusive,
            std::cmp::Ordering::Greater => false,
        },
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meet(a: &str, b: &str) -> bool {
        can_intersect(&a.parse().unwrap(), &b.parse().unwrap())
    }

    #[test]
    fn table() {
        let cases = [
            ("^1.2.0", "~1.4", true),
            ("^1.2.0", "^2", false),
            ("^1.2.0", "<1.2.0", false),
            ("^1.2.0", "<=1.2.0", true),
            ("^0.2.3", "0.3", false),
            ("^0.0.3", "=0.0.3", true),
            ("^0.0.3", ">0.0.3", false),
            ("*", "=5.0.0", true),
            (">=1, <2", "1.9.*", true),
            (">=1, <2", ">=2", false),
            (">1.4", "=1.4", false),
            (">1.4", "1.4", true),
            ("<0", "*", false),
            (">1.4", "1.5", true),
            ("~1.4.2", "<1.4.2", false),
            ("=1.2.3", "=1.2.4", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(meet(a, b), want, "{a} ∩ {b}");
            assert_eq!(meet(b, a), want, "{b} ∩ {a}");
        }
    }

    fn arb_req() -> impl Strategy<Value = String> {
        let op = prop::sample::select(vec!["", "=", ">", ">=", "<", "<=", "~", "^"]);
        (
            op,
            0u64..3,
            prop::option::of(0u64..3),
            prop::option::of(0u64..3),
        )
            .prop_map(|(op, ma, mi, pa)| match (mi, pa) {
                (Some(mi), Some(pa)) => format!("{op}{ma}.{mi}.{pa}"),
                (Some(mi), None) => format!("{op}{ma}.{mi}"),
                _ => format!("{op}{ma}"),
            })
    }

    proptest! {
        /// Whenever a concrete version satisfies both, the check must say they meet; and when
        /// it says they meet, one of the small versions near the bounds must satisfy both.
        #[test]
        fn agrees_with_matching(a in arb_req(), b in arb_req()) {
            let (ra, rb): (VersionReq, VersionReq) = (a.parse().unwrap(), b.parse().unwrap());
            let mut witness = false;
            for ma in 0..5 { for mi in 0..5 { for pa in 0..5 {
                let ver = Version::new(ma, mi, pa);
                witness |= ra.matches(&ver) && rb.matches(&ver);
            }}}
            prop_assert_eq!(can_intersect(&ra, &rb), witness, "{} ∩ {}", a, b);
        }
    }
}
