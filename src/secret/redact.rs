//! Redaction of error text. The engine quotes a container's env in some of its errors
//! (Docker's create errors do), and a probe may echo what it was sent; such text reaches
//! logs, `status.json` and `/status`, so every value that came from the host or from a
//! secret is replaced before it does.

use std::fmt;

use zeroize::Zeroizing;

/// What a redacted value reads as.
pub const REDACTED: &str = "[redacted]";

/// The values error text must not show, longest first so that a value containing another
/// is replaced whole.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redact(Vec<Zeroizing<String>>);

impl Redact {
    /// Empty values are dropped: there is nothing to hide in them.
    pub fn new(values: impl IntoIterator<Item = String>) -> Redact {
        let mut r = Redact::default();
        r.extend(values);
        r
    }

    pub fn extend(&mut self, values: impl IntoIterator<Item = String>) {
        self.0.extend(
            values
                .into_iter()
                .filter(|v| !v.is_empty())
                .map(Zeroizing::new),
        );
        self.0
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        self.0.dedup();
    }

    /// Both sets of values.
    pub fn union(&self, other: &Redact) -> Redact {
        let mut r = self.clone();
        r.extend(other.0.iter().map(|v| v.to_string()));
        r
    }

    /// `text` with every value replaced by [`REDACTED`].
    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for v in &self.0 {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), REDACTED);
            }
        }
        out
    }
}

impl fmt::Debug for Redact {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Redact({} values)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_replaced_longest_first() {
        let r = Redact::new(["abc".to_owned(), "abcdef".to_owned(), String::new()]);
        assert_eq!(
            r.apply("invalid environment variable: X=abcdef and abc, twice abc"),
            "invalid environment variable: X=[redacted] and [redacted], twice [redacted]"
        );
        assert_eq!(r.apply("nothing here"), "nothing here");
        assert_eq!(format!("{r:?}"), "Redact(2 values)");
        let both = r.union(&Redact::new(["zz".to_owned()]));
        assert_eq!(both.apply("zz abcdef"), "[redacted] [redacted]");
    }
}
