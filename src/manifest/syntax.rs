//! Parsers for the small string formats inside manifests. Validation uses them to
//! report mistakes; the runtime uses the same functions to build the container, so what
//! validates is exactly what runs.

use std::time::Duration;

/// `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`: usable in container names and DNS labels.
pub fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && ok(&b[0])
        && ok(&b[b.len() - 1])
        && b.iter().all(|c| ok(c) || *c == b'-')
}

/// `1h30m`, `45s`, `500ms`: one or more number+unit pairs.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const UNITS: &[(&str, Duration)] = &[
        ("ms", Duration::from_millis(1)),
        ("s", Duration::from_secs(1)),
        ("m", Duration::from_secs(60)),
        ("h", Duration::from_secs(3600)),
    ];
    sum_of(s, UNITS).ok_or_else(|| {
        format!("invalid duration `{s}`: expected e.g. `30s`, `5m`, `1h30m`, `500ms`")
    })
}

/// A wave's bake time: whole seconds, minutes, hours or days, e.g. `48h`, `2d`, `1d12h`.
pub fn parse_bake(s: &str) -> Result<Duration, String> {
    const UNITS: &[(&str, Duration)] = &[
        ("s", Duration::from_secs(1)),
        ("m", Duration::from_secs(60)),
        ("h", Duration::from_secs(3600)),
        ("d", Duration::from_secs(86_400)),
    ];
    sum_of(s, UNITS)
        .ok_or_else(|| format!("invalid bake `{s}`: expected e.g. `30s`, `24h`, `2d`, `1d12h`"))
}

/// The sum of one or more number+unit pairs, the units tried in order (`ms` before `m`);
/// `None` when `s` is empty, a pair lacks its number or a known unit, or the sum overflows.
fn sum_of(s: &str, units: &[(&str, Duration)]) -> Option<Duration> {
    let mut rest = s;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n = u32::try_from(rest[..digits].parse::<u64>().ok()?).ok()?;
        rest = &rest[digits..];
        let (name, unit) = units.iter().find(|(name, _)| rest.starts_with(name))?;
        rest = &rest[name.len()..];
        total = total.checked_add(unit.checked_mul(n)?)?;
    }
    Some(total)
}

/// `512m`, `1g`, `1024k`, `1048576`, `2gb`: bytes, binary multiples. berth's one syntax
/// for sizes; `what` names the value in the error.
pub fn parse_size(s: &str, what: &str) -> Result<u64, String> {
    let bad = || format!("invalid {what} `{s}`: expected bytes or a number with k, m or g");
    let lower = s.to_ascii_lowercase();
    let t = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    if !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(mult).ok_or_else(bad)
}

/// A container's memory limit: a size ([`parse_size`]) Docker accepts.
pub fn parse_memory(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid memory `{s}`: expected bytes or a number with k, m or g");
    let bytes = i64::try_from(parse_size(s, "memory")?).map_err(|_| bad())?;
    // Docker refuses limits under 6 MiB; say so here rather than at apply time.
    if bytes < 6 << 20 {
        return Err(format!("memory `{s}` is below Docker's minimum of 6m"));
    }
    Ok(bytes)
}

/// `HH:MM` as minutes since midnight; `24:00` (1440) only where an end is meant.
pub fn parse_clock(s: &str, end: bool) -> Result<u16, String> {
    let bad = || {
        format!(
            "invalid time `{s}`: expected HH:MM from 00:00 to 23:59{}",
            if end { " or 24:00" } else { "" }
        )
    };
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    match (h, m) {
        (24, 0) if end => Ok(1440),
        (0..=23, 0..=59) => Ok(h * 60 + m),
        _ => Err(bad()),
    }
}

/// `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Result<jiff::civil::Date, String> {
    let bad = || format!("invalid date `{s}`: expected YYYY-MM-DD");
    if s.len() != 10 {
        return Err(bad());
    }
    s.parse::<jiff::civil::Date>().map_err(|_| bad())
}

pub fn parse_weekday(s: &str) -> Result<jiff::civil::Weekday, String> {
    use jiff::civil::Weekday::*;
    Ok(match s {
        "mon" => Monday,
        "tue" => Tuesday,
        "wed" => Wednesday,
        "thu" => Thursday,
        "fri" => Friday,
        "sat" => Saturday,
        "sun" => Sunday,
        _ => {
            return Err(format!(
                "invalid day `{s}`: expected one of mon, tue, wed, thu, fri, sat, sun"
            ));
        }
    })
}

pub use crate::container::{PortSpec, parse_port};

/// `/host/path:/in/container[:ro|rw]` or `named-volume:/in/container[:ro|rw]`.
pub fn check_volume(s: &str) -> Result<(), String> {
    let bad = |why: &str| format!("invalid volume `{s}`: {why}");
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst) = match parts.as_slice() {
        [src, dst] => (*src, *dst),
        [src, dst, "ro" | "rw"] => (*src, *dst),
        [_, _, _] => return Err(bad("mode must be ro or rw")),
        _ => return Err(bad("expected source:/container/path[:ro|rw]")),
    };
    if !dst.starts_with('/') {
        return Err(bad("the container path must be absolute"));
    }
    let named = src
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if src.is_empty() || !(src.starts_with('/') || named) {
        return Err(bad(
            "the source must be an absolute host path or a volume name",
        ));
    }
    Ok(())
}

/// `uid[:gid]` or `name[:group]`.
pub fn check_user(s: &str) -> Result<(), String> {
    let part = |p: &str| {
        !p.is_empty()
            && (p.bytes().all(|c| c.is_ascii_digit())
                || p.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')))
    };
    let ok = match s.split_once(':') {
        Some((u, g)) => part(u) && part(g),
        None => part(s),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid user `{s}`: expected uid[:gid] or name[:group]"
        ))
    }
}

/// Env keys that name a secret; their values must come from `env_files`, never from git.
pub fn is_secret_key(key: &str) -> bool {
    const WORDS: [&str; 4] = ["PASSWORD", "SECRET", "TOKEN", "PRIVATE_KEY"];
    let k = key.as_bytes();
    // Case-insensitive `k == w || k.ends_with("_" + w)`, without allocating: this runs for
    // every env key of every opt-in.
    WORDS.iter().any(|w| {
        let w = w.as_bytes();
        let Some(start) = k.len().checked_sub(w.len()) else {
            return false;
        };
        k[start..].eq_ignore_ascii_case(w) && (start == 0 || k[start - 1] == b'_')
    })
}

/// `<12-digit account>.dkr.ecr.<region>.amazonaws.com`, giving the region.
pub fn parse_ecr_host(s: &str) -> Result<String, String> {
    let bad =
        || format!("invalid ECR registry `{s}`: expected <account>.dkr.ecr.<region>.amazonaws.com");
    let rest = s.strip_suffix(".amazonaws.com").ok_or_else(bad)?;
    let (account, rest) = rest.split_once(".dkr.ecr.").ok_or_else(bad)?;
    let region_ok = !rest.is_empty()
        && rest
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if account.len() != 12 || !account.bytes().all(|c| c.is_ascii_digit()) || !region_ok {
        return Err(bad());
    }
    Ok(rest.to_owned())
}

/// `host[:port]` without a scheme or path.
pub fn check_registry_host(s: &str) -> Result<(), String> {
    let bad = |why: &str| format!("invalid registry `{s}`: {why}");
    if s.contains("://") {
        return Err(bad("give host[:port] without a scheme"));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || s.starts_with('[') => (h, Some(p)),
        _ => (s, None),
    };
    if let Some(p) = port
        && p.parse::<u16>().is_err()
    {
        return Err(bad("the port must be a number"));
    }
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'[' | b']' | b':'));
    if host_ok {
        Ok(())
    } else {
        Err(bad("expected host[:port]"))
    }
}

/// A repository path as registries accept it: lowercase components joined by `/`.
pub fn check_repository(s: &str) -> Result<(), String> {
    let component = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
            })
    };
    if s.len() <= 255 && s.split('/').all(component) {
        Ok(())
    } else {
        Err(format!(
            "invalid repository `{s}`: expected lowercase path components such as `team/script`"
        ))
    }
}

/// An `http` or `https` URL with a host.
pub fn check_http_url(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| format!("invalid URL `{s}`: the scheme must be http or https"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains(char::is_whitespace) {
        return Err(format!("invalid URL `{s}`: no host"));
    }
    Ok(())
}

/// An RFC 6901 JSON pointer: empty, or `/`-prefixed with `~` only in `~0` and `~1`.
pub fn check_json_pointer(s: &str) -> Result<(), String> {
    let bad = |why: &str| format!("invalid JSON pointer `{s}`: {why}");
    if !s.is_empty() && !s.starts_with('/') {
        return Err(bad("it must be empty or start with `/`"));
    }
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(bad("`~` must be followed by 0 or 1"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "case-counts", "x1", &"a".repeat(63)] {
            assert!(is_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_name(bad), "{bad}");
        }
    }

    #[test]
    fn bakes_take_days_too() {
        assert_eq!(parse_bake("2d"), Ok(Duration::from_secs(2 * 86_400)));
        assert_eq!(parse_bake("1d12h"), Ok(Duration::from_secs(129_600)));
        assert_eq!(parse_bake("30s"), Ok(Duration::from_secs(30)));
        for bad in [
            "",
            "2",
            "d",
            "2w",
            "250ms",
            "2 d",
            "-1d",
            "99999999999999999999d",
        ] {
            assert!(parse_bake(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "2", "s", "2 s", "2d", "-1s", "99999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory() {
        assert_eq!(parse_memory("512m"), Ok(512 << 20));
        assert_eq!(parse_memory("1G"), Ok(1 << 30));
        assert_eq!(parse_memory("8192kb"), Ok(8 << 20));
        for bad in ["", "m", "1x", "1k", "-5g", "99999999999g"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2g", "min_free"), Ok(2 << 30));
        assert_eq!(parse_size("0", "min_free"), Ok(0));
        assert_eq!(parse_size("1k", "min_free"), Ok(1024));
        assert_eq!(
            parse_size("2 GiB", "min_free"),
            Err("invalid min_free `2 GiB`: expected bytes or a number with k, m or g".into())
        );
        for bad in ["", "g", "-1g", "+1g", "1.5g", "99999999999999999g"] {
            assert!(parse_size(bad, "min_free").is_err(), "{bad}");
        }
    }

    #[test]
    fn clock() {
        assert_eq!(parse_clock("01:00", false), Ok(60));
        assert_eq!(parse_clock("24:00", true), Ok(1440));
        assert!(parse_clock("24:00", false).is_err());
        for bad in ["1:00", "25:00", "12:60", "12-00", "ab:cd", "24:01"] {
            assert!(parse_clock(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports() {
        let p = parse_port("127.0.0.1:9000:9000").unwrap();
        assert_eq!(p.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(
            (p.host_port, p.container_port, p.protocol),
            (Some(9000), 9000, "tcp")
        );
        assert_eq!(parse_port("53/udp").unwrap().protocol, "udp");
        assert_eq!(parse_port("8080:80").unwrap().host_port, Some(8080));
        for bad in ["", "0", "70000", "a:b", "1:2/sctp", "x.y:1:2", "1:2:3:4"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes_users_secrets() {
        assert!(check_volume("/srv/data:/data:ro").is_ok());
        assert!(check_volume("cache:/cache").is_ok());
        for bad in ["/a", "/a:b", "/a:/b:rx", "rel/path:/b", ":/b"] {
            assert!(check_volume(bad).is_err(), "{bad}");
        }
        assert!(check_user("1000:1000").is_ok() && check_user("app").is_ok());
        assert!(check_user("").is_err() && check_user("a:").is_err() && check_user("a b").is_err());
        for k in [
            "PASSWORD",
            "DB_PASSWORD",
            "api_token",
            "SSH_PRIVATE_KEY",
            "SECRET",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        assert!(is_secret_key("db_Password") && is_secret_key("é_TOKEN"));
        for k in [
            "TOKENIZER",
            "PASSWORDLESS",
            "REGION",
            "SECRETARY",
            "TOKEN_",
            "MYTOKEN",
            "KEY",
            "",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn registries() {
        assert_eq!(
            parse_ecr_host("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
            Ok("eu-west-1".to_owned())
        );
        for bad in [
            "ecr.aws",
            "12345.dkr.ecr.eu-west-1.amazonaws.com",
            "123456789012.dkr.ecr..amazonaws.com",
        ] {
            assert!(parse_ecr_host(bad).is_err(), "{bad}");
        }
        assert!(check_registry_host("127.0.0.1:5000").is_ok());
        assert!(check_registry_host("ghcr.io").is_ok());
        assert!(check_registry_host("https://ghcr.io").is_err());
        assert!(check_registry_host("host:port").is_err());
        assert!(check_repository("gh/case-counts").is_ok());
        assert!(check_repository("Gh/x").is_err() && check_repository("a//b").is_err());
        assert!(check_http_url("http://127.0.0.1:8080/status").is_ok());
        assert!(check_http_url("ftp://x").is_err() && check_http_url("http:///x").is_err());
        assert!(check_json_pointer("/state").is_ok() && check_json_pointer("").is_ok());
        assert!(check_json_pointer("state").is_err() && check_json_pointer("/a~2").is_err());
    }
}
