//! Semantic checks on a parsed repo. Every finding is collected, none stops the others,
//! and each points at the value it is about.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use semver::VersionReq;

use super::syntax::*;
use super::{
    API_VERSION, Container, Doc, Fleet, OptIn, Partner, Pos, Repo, Script, Source, Sp, Window,
};
use crate::container::container_name;
use crate::diag::{Diagnostic, Diagnostics};

struct Checker<'a> {
    path: &'a str,
    out: &'a mut Diagnostics,
}

impl Checker<'_> {
    fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.out.push(Diagnostic::error(self.path, pos, message));
    }

    fn warning(&mut self, pos: Pos, message: impl Into<String>) {
        self.out.push(Diagnostic::warning(self.path, pos, message));
    }

    /// Reports a format error from one of the `syntax` parsers at the value's position.
    fn format<T, V>(&mut self, value: &Sp<V>, result: Result<T, String>) -> Option<T> {
        result.map_err(|m| self.error(value.pos, m)).ok()
    }

    fn header(&mut self, api_version: &Sp<String>, kind: &Sp<String>, want: &str) {
        if api_version.value != API_VERSION {
            self.error(
                api_version.pos,
                format!(
                    "apiVersion must be `{API_VERSION}`, not `{}`",
                    api_version.value
                ),
            );
        }
        if kind.value != want {
            self.error(
                kind.pos,
                format!("kind must be `{want}` in this file, not `{}`", kind.value),
            );
        }
    }

    fn name(&mut self, name: &Sp<String>, stem: &str) {
        if !is_name(name) {
            self.error(
                name.pos,
                format!(
                    "invalid name `{}`: use 1-63 lowercase letters, digits and `-`, starting and ending with a letter or digit",
                    name.value
                ),
            );
        } else if name.value != stem {
            self.error(
                name.pos,
                format!(
                    "name `{}` does not match the file name `{stem}.yaml`",
                    name.value
                ),
            );
        }
    }

    fn timezone(&mut self, tz: &Sp<String>) {
        if jiff::tz::TimeZone::get(tz).is_err() {
            self.error(
                tz.pos,
                format!(
                    "unknown time zone `{}`: use an IANA name such as `Africa/Nairobi`",
                    tz.value
                ),
            );
        }
    }

    fn windows(&mut self, windows: &[Window]) {
        for w in windows {
            if w.days.is_empty() {
                self.error(w.days.pos, "a window needs at least one day");
            }
            let mut seen = BTreeSet::new();
            for d in w.days.iter() {
                if self.format(d, parse_weekday(d)).is_some() && !seen.insert(d.value.as_str()) {
                    self.error(d.pos, format!("day `{}` is listed twice", d.value));
                }
            }
            let start = self.format(&w.start, parse_clock(&w.start, false));
            let end = self.format(&w.end, parse_clock(&w.end, true));
            if start.is_some() && start == end {
                self.error(w.end.pos, "the window is empty: end equals start");
            }
        }
    }

    fn duration(&mut self, d: &Option<Sp<String>>) {
        if let Some(d) = d {
            self.format(d, parse_duration(d));
        }
    }

    fn env(&mut self, env: &BTreeMap<String, Sp<String>>) {
        for (key, value) in env {
            if is_secret_key(key) {
                self.error(
                    value.pos,
                    format!(
                        "`{key}` names a secret: secrets never live in the repo; put it in an env file on the host and list it in the partner's `env_files`"
                    ),
                );
            }
            let key_ok =
                !key.is_empty() && !key.contains('=') && !key.contains(char::is_whitespace);
            if !key_ok {
                self.error(
                    value.pos,
                    format!("invalid environment variable name `{key}`"),
                );
            }
        }
    }
}

/// Runs every semantic check; parse failures were reported by the loader already.
/// `broken_partners` says some partner file did not parse, so unused scripts are not reported.
pub fn check(
    repo: &Repo,
    broken_scripts: &BTreeSet<String>,
    broken_partners: bool,
    out: &mut Diagnostics,
) {
    if let Some(fleet) = &repo.fleet {
        check_fleet(fleet, out);
    }
    let fleet_registry = repo.fleet.as_ref().and_then(|f| f.doc.registry.as_ref());
    // Each script's range, parsed once for all the partners that narrow it.
    let mut ranges = BTreeMap::new();
    // And what it takes on its host, for the partners that run it next to others.
    let mut claims = HashMap::new();
    for (stem, doc) in &repo.scripts {
        if let Some(range) = check_script(stem, doc, fleet_registry, out) {
            ranges.insert(stem.as_str(), range);
        }
        claims.insert(stem.as_str(), Claims::of(doc));
    }
    let mut used = BTreeSet::new();
    let mut host = HostTable::default();
    for (stem, doc) in &repo.partners {
        check_partner(stem, doc, repo, &ranges, broken_scripts, out);
        host.check(stem, &doc.doc, &claims, out);
        used.extend(doc.doc.scripts.iter().map(|o| o.script.value.as_str()));
    }
    check_container_names(repo, out);
    for (stem, doc) in &repo.scripts {
        if !broken_partners && !used.contains(stem.as_str()) {
            out.push(Diagnostic::warning(
                &doc.path,
                doc.doc.name.pos,
                format!("no partner runs script `{stem}`"),
            ));
        }
    }
}

fn check_fleet(doc: &Doc<Fleet>, out: &mut Diagnostics) {
    let mut c = Checker {
        path: &doc.path,
        out,
    };
    let f = &doc.doc;
    c.header(&f.api_version, &f.kind, "Fleet");
    if let Some(r) = &f.registry {
        c.format(r, check_registry_host(r));
    }
    if let Some(tz) = &f.timezone {
        c.timezone(tz);
    }
    if let Some(w) = &f.windows {
        c.windows(w);
    }
}

/// Checks a script and gives its version range (`*` when it sets none), or `None` when the
/// range is invalid or nothing satisfies it (reported here already).
fn check_script(
    stem: &str,
    doc: &Doc<Script>,
    fleet_registry: Option<&Sp<String>>,
    out: &mut Diagnostics,
) -> Option<VersionReq> {
    let mut c = Checker {
        path: &doc.path,
        out,
    };
    let s = &doc.doc;
    c.header(&s.api_version, &s.kind, "Script");
    c.name(&s.name, stem);

    let image = &s.image;
    match (image.source.value, &image.registry) {
        (Source::Local, Some(r)) => {
            c.error(r.pos, "`local` images come from the engine's own store and take no registry");
        }
        (Source::Local, None) => {}
        (Source::Oci, Some(r)) => {
            c.format(r, check_registry_host(r));
        }
        (Source::Ecr, Some(r)) => {
            c.format(r, parse_ecr_host(r));
        }
        (Source::Oci, None) if fleet_registry.is_some() => {}
        (Source::Ecr, None) => match fleet_registry {
            Some(r) if parse_ecr_host(r).is_ok() => {}
            Some(r) => c.error(
                image.source.pos,
                format!(
                    "`ecr` needs an ECR registry; the fleet default `{}` is not one: set image.registry",
                    r.value
                ),
            ),
            None => c.error(
                image.source.pos,
                "`ecr` needs a registry (<account>.dkr.ecr.<region>.amazonaws.com): set image.registry or fleet.yaml's registry",
            ),
        },
        (Source::Oci, None) => c.error(
            image.source.pos,
            "`oci` needs a registry: set image.registry or fleet.yaml's registry",
        ),
    }
    c.format(&image.repository, check_repository(&image.repository));
    if image.insecure && image.source.value != Source::Oci {
        c.error(
            image.source.pos,
            "`insecure` applies only to `oci` registries",
        );
    }
    // An invalid or unsatisfiable range is reported here, once, and not again against
    // every partner that narrows it.
    let range = match &s.versions {
        Some(v) => {
            let parsed = VersionReq::parse(v)
                .map_err(|e| format!("invalid version range `{}`: {e}", v.value));
            c.format(v, parsed).filter(|req| {
                let satisfiable = super::range::can_intersect(req, req);
                if !satisfiable {
                    c.error(
                        v.pos,
                        format!("no version can satisfy the range `{}`", v.value),
                    );
                }
                satisfiable
            })
        }
        None => Some(VersionReq::STAR),
    };
    check_container(&mut c, s.container());
    if let Some(h) = &s.health {
        if let Some(u) = &h.http {
            c.format(u, check_http_url(u));
        }
        c.duration(&h.timeout);
    }
    range
}

fn check_container(c: &mut Checker, k: &Container) {
    if let Some(cmd) = &k.command
        && cmd.is_empty()
    {
        c.error(Pos::default(), "`command` must not be empty");
    }
    c.env(&k.env);
    for p in &k.ports {
        c.format(p, parse_port(p));
    }
    for v in &k.volumes {
        c.format(v, check_volume(v));
    }
    if let Some(n) = &k.network {
        let ok = !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            c.error(
                n.pos,
                format!(
                    "invalid network `{}`: use host, none, bridge or a network name",
                    n.value
                ),
            );
        }
    }
    c.duration(&k.stop_timeout);
    if let Some(m) = &k.memory {
        c.format(m, parse_memory(m));
    }
    // Below a hundredth the engine's count rounds to 0, which it reads as no limit at all.
    if let Some(cpus) = &k.cpus
        && !(cpus.value >= 0.01 && cpus.value <= 1024.0)
    {
        c.error(
            cpus.pos,
            format!(
                "invalid cpus `{}`: expected a number from 0.01 to 1024",
                cpus.value
            ),
        );
    }
    if let Some(u) = &k.user {
        c.format(u, check_user(u));
    }
    if let Some(p) = &k.privileged
        && p.value
    {
        c.error(p.pos, "privileged containers are not allowed in berth/v1");
    }
    for ns in [&k.pid, &k.ipc].into_iter().flatten() {
        c.error(
            ns.pos,
            "sharing the host's PID or IPC namespace is not allowed in berth/v1",
        );
    }
    if let Some(caps) = &k.cap_add
        && !caps.is_empty()
    {
        c.error(caps.pos, "adding capabilities is not allowed in berth/v1");
    }
}

fn check_partner(
    stem: &str,
    doc: &Doc<Partner>,
    repo: &Repo,
    ranges: &BTreeMap<&str, VersionReq>,
    broken_scripts: &BTreeSet<String>,
    out: &mut Diagnostics,
) {
    let mut c = Checker {
        path: &doc.path,
        out,
    };
    let p = &doc.doc;
    c.header(&p.api_version, &p.kind, "Partner");
    c.name(&p.name, stem);
    if let Some(tz) = &p.timezone {
        c.timezone(tz);
    }
    match &p.windows {
        Some(w) => c.windows(w),
        None if repo.fleet.as_ref().is_some_and(|f| f.doc.windows.is_some()) => {}
        None => c.warning(
            p.name.pos,
            "no update windows here or in fleet.yaml: berth will never update this host automatically",
        ),
    }
    for b in &p.blackouts {
        let from = c.format(&b.from, parse_date(&b.from));
        let to = c.format(&b.to, parse_date(&b.to));
        if let (Some(from), Some(to)) = (from, to)
            && to < from
        {
            c.error(
                b.to.pos,
                format!("blackout ends ({to}) before it starts ({from})"),
            );
        }
    }
    if let Some(idle) = &p.idle {
        c.format(&idle.url, check_http_url(&idle.url));
        c.format(&idle.pointer, check_json_pointer(&idle.pointer));
        c.duration(&idle.timeout);
    }
    let mut first_line: BTreeMap<&str, u32> = BTreeMap::new();
    for o in &p.scripts {
        if let Some(line) = first_line.get(o.script.as_str()) {
            c.error(
                o.script.pos,
                format!(
                    "script `{}` is opted into twice (first on line {line})",
                    o.script.value
                ),
            );
            continue;
        }
        first_line.insert(&o.script, o.script.pos.line);
        let script = repo.scripts.get(o.script.as_str());
        if script.is_none() && !broken_scripts.contains(o.script.as_str()) {
            c.error(
                o.script.pos,
                format!(
                    "unknown script `{}`: there is no scripts/{}.yaml",
                    o.script.value, o.script.value
                ),
            );
        }
        if let Some(v) = &o.versions {
            let parsed = VersionReq::parse(v)
                .map_err(|e| format!("invalid version range `{}`: {e}", v.value));
            // A script without a range of its own allows any release (`*`).
            if let (Some(req), Some(script)) = (c.format(v, parsed), script)
                && let Some(own_req) = ranges.get(o.script.as_str())
                && !super::range::can_intersect(&req, own_req)
            {
                let message = match &script.doc.versions {
                    Some(own) => format!(
                        "no version can satisfy both `{}` and script `{}`'s range `{}`",
                        v.value, o.script.value, own.value
                    ),
                    None => format!("no version can satisfy the range `{}`", v.value),
                };
                c.error(v.pos, message);
            }
        }
        if let Some(r) = &o.repository {
            c.format(r, check_repository(r));
        }
        c.env(&o.env);
        for f in &o.env_files {
            if !f.starts_with('/') {
                c.error(
                    f.pos,
                    format!(
                        "env file `{}` must be an absolute path on the host",
                        f.value
                    ),
                );
            }
        }
        let volumes = script.map_or(&[][..], |s| s.doc.container().volumes.as_slice());
        check_secrets(&mut c, &repo.root, stem, o, volumes);
    }
}

/// Each secret an opt-in names is a plain name with a well-formed age file in the
/// partner's own directory; each secret file's target is an absolute container path, once,
/// and not where the script mounts a volume (the engine would refuse the container).
fn check_secrets(
    c: &mut Checker,
    root: &std::path::Path,
    partner: &str,
    o: &OptIn,
    volumes: &[Sp<String>],
) {
    let names = o
        .env_secrets
        .iter()
        .chain(o.secret_files.iter().map(|f| &f.secret));
    for name in names {
        let checked = crate::secret::check_name(name)
            .and_then(|()| crate::secret::check_sealed(root, partner, name));
        c.format(name, checked);
    }
    let mut targets = HashMap::new();
    for f in &o.secret_files {
        let t = &f.target;
        let path = std::path::Path::new(t.as_str());
        if !t.starts_with('/') || t.trim_end_matches('/').is_empty() {
            c.error(
                t.pos,
                format!(
                    "secret file target `{}` must be an absolute path in the container, not `/`",
                    t.value
                ),
            );
        } else if path
            .components()
            .any(|p| p == std::path::Component::ParentDir)
        {
            c.error(
                t.pos,
                format!("secret file target `{}` must not contain `..`", t.value),
            );
        } else {
            let mounted = volumes.iter().find(|v| {
                v.split(':').nth(1).map(|p| p.trim_end_matches('/'))
                    == Some(t.trim_end_matches('/'))
            });
            if let Some(v) = mounted {
                c.error(
                    t.pos,
                    format!(
                        "secret file target `{}` is where script `{}` mounts `{}`",
                        t.value, o.script.value, v.value
                    ),
                );
                continue;
            }
            match targets.entry(t.trim_end_matches('/')) {
                Entry::Occupied(first) => c.error(
                    t.pos,
                    format!(
                        "secret file target `{}` is used twice (first on line {})",
                        t.value,
                        first.get()
                    ),
                ),
                Entry::Vacant(v) => {
                    v.insert(t.pos.line);
                }
            }
        }
    }
}

/// What a script's container takes on its host that a second container cannot take too.
struct Claims<'a> {
    path: &'a str,
    /// Host ports, each with the `ports` entry that publishes it.
    ports: Vec<(Published, &'a Sp<String>)>,
    /// The health URL of a container on the host network, where it answers for the host.
    host_health: Option<&'a Sp<String>>,
}

impl<'a> Claims<'a> {
    /// Entries that do not parse were reported by `check_container` and claim nothing. On the
    /// host network the engine discards published ports, so they claim nothing either.
    fn of(doc: &'a Doc<Script>) -> Self {
        let s = &doc.doc;
        let host_network = s
            .container()
            .network
            .as_ref()
            .is_some_and(|n| n.value == "host");
        let ports = if host_network {
            Vec::new()
        } else {
            s.container()
                .ports
                .iter()
                .filter_map(|p| Some((Published::parse(p)?, p)))
                .collect()
        };
        let host_health = s
            .health
            .as_ref()
            .and_then(|h| h.http.as_ref())
            .filter(|u| host_network && check_http_url(u).is_ok());
        Claims {
            path: &doc.path,
            ports,
            host_health,
        }
    }
}

/// A host port a container publishes; `ip` is `None` when the entry names no address.
#[derive(PartialEq)]
struct Published {
    ip: Option<IpAddr>,
    port: u16,
    protocol: &'static str,
}

impl Published {
    /// `None` for an entry without a host port (it publishes nothing) or that does not parse.
    fn parse(entry: &str) -> Option<Self> {
        let spec = parse_port(entry).ok()?;
        let ip = match spec.host_ip {
            Some(ip) => Some(ip.trim_matches(['[', ']']).parse().ok()?),
            None => None,
        };
        Some(Published {
            ip,
            port: spec.host_port?,
            protocol: spec.protocol,
        })
    }

    /// The address families it binds in, each with its one address, or `None` for every
    /// address of the family (`0.0.0.0`, `::`). No address at all is every address of both,
    /// as the engine publishes such a port.
    fn scopes(&self) -> [Option<(Family, Option<IpAddr>)>; 2] {
        let scope = |ip: IpAddr| (Family::of(ip), (!ip.is_unspecified()).then_some(ip));
        match self.ip {
            Some(ip) => [Some(scope(ip)), None],
            None => [Some((Family::V4, None)), Some((Family::V6, None))],
        }
    }
}

impl fmt::Display for Published {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let Published { port, protocol, .. } = self;
        match self.ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:{port}/{protocol}"),
            Some(ip) => write!(f, "{ip}:{port}/{protocol}"),
            None => write!(f, "{port}/{protocol} on every address"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// What a published port holds in a partner's table of taken host ports, for one port and
/// protocol. A binding to one address holds `One` and `Any` of its family and clashes with
/// `One` and `Every`; one to every address holds and clashes with `Every` and `Any`. So each
/// binding finds what it clashes with in two lookups, however many scripts publish the port.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Addr {
    One(IpAddr),
    Every(Family),
    Any(Family),
}

/// The script that took a host port first, and how it spelled it.
struct Taken<'a> {
    order: usize,
    script: &'a str,
    port: &'a Published,
}

/// Host ports and host-network health URLs two scripts of one partner both claim. Scripts
/// are taken in name order and each is reported against the first it clashes with, so
/// every partner that runs a pair blames the same line. The tables are kept from partner to
/// partner so that a fleet of them is checked without allocating for each.
#[derive(Default)]
struct HostTable<'a> {
    scripts: Vec<&'a str>,
    taken: HashMap<(u16, &'static str, Addr), Taken<'a>>,
    health: HashMap<&'a str, &'a str>,
}

impl<'a> HostTable<'a> {
    fn check(
        &mut self,
        partner: &str,
        doc: &'a Partner,
        claims: &'a HashMap<&str, Claims<'a>>,
        out: &mut Diagnostics,
    ) {
        self.scripts.clear();
        self.taken.clear();
        self.health.clear();
        self.scripts
            .extend(doc.scripts.iter().map(|o| o.script.as_str()));
        self.scripts.sort_unstable();
        self.scripts.dedup();
        for (order, &script) in self.scripts.iter().enumerate() {
            let Some(claim) = claims.get(script) else {
                continue;
            };
            for (port, entry) in &claim.ports {
                let first = port
                    .scopes()
                    .into_iter()
                    .flatten()
                    .flat_map(|(family, one)| match one {
                        Some(ip) => [Addr::One(ip), Addr::Every(family)],
                        None => [Addr::Every(family), Addr::Any(family)],
                    })
                    .filter_map(|addr| self.taken.get(&(port.port, port.protocol, addr)))
                    .min_by_key(|t| t.order);
                if let Some(first) = first {
                    let spelled = if first.port == port {
                        String::new()
                    } else {
                        format!(" (as {})", first.port)
                    };
                    out.push(Diagnostic::error(
                        claim.path,
                        entry.pos,
                        format!(
                            "host port {port} is also published by script `{}` for partner `{partner}`{spelled}: two containers cannot bind it",
                            first.script
                        ),
                    ));
                }
            }
            // Only now, so that a script's own entries are not held against each other.
            for (port, _) in &claim.ports {
                for (family, one) in port.scopes().into_iter().flatten() {
                    let holds = match one {
                        Some(ip) => [Addr::One(ip), Addr::Any(family)],
                        None => [Addr::Every(family), Addr::Any(family)],
                    };
                    for addr in holds {
                        self.taken
                            .entry((port.port, port.protocol, addr))
                            .or_insert(Taken {
                                order,
                                script,
                                port,
                            });
                    }
                }
            }
            if let Some(url) = claim.host_health {
                match self.health.entry(url.as_str()) {
                    Entry::Occupied(first) => out.push(Diagnostic::error(
                        claim.path,
                        url.pos,
                        format!(
                            "health URL `{}` is also the health check of script `{}` for partner `{partner}`, and both run on the host network: one container would answer the other's check",
                            url.value,
                            first.get()
                        ),
                    )),
                    Entry::Vacant(e) => {
                        e.insert(script);
                    }
                }
            }
        }
    }
}

/// Managed containers are named `berth-<partner>-<script>`, so partner `a` running `b-c` and
/// partner `a-b` running `c` would share a name. A host normally runs one partner, so this
/// breaks only a host that runs both: a warning, at the opt-in of the partner later in name
/// order.
/// Two names can only meet where one partner's name is another's followed by `-`, so only
/// those pairs of partners are compared.
fn check_container_names(repo: &Repo, out: &mut Diagnostics) {
    for (partner, doc) in &repo.partners {
        for (cut, _) in partner.match_indices('-') {
            let (shorter, rest) = (&partner[..cut], &partner[cut + 1..]);
            let Some(other) = repo.partners.get(shorter) else {
                continue;
            };
            // `other`'s script `<rest>-<s>` and this partner's script `<s>` share a name.
            let mut theirs: HashMap<&str, &str> = other
                .doc
                .scripts
                .iter()
                .filter_map(|o| {
                    let s = o.script.strip_prefix(rest)?.strip_prefix('-')?;
                    Some((s, o.script.as_str()))
                })
                .collect();
            for o in &doc.doc.scripts {
                // Removed, so a script opted into twice (reported already) warns once.
                if let Some(their_script) = theirs.remove(o.script.as_str()) {
                    out.push(Diagnostic::warning(
                        &doc.path,
                        o.script.pos,
                        format!(
                            "partner `{partner}` running script `{}` and partner `{shorter}` running script `{their_script}` both name their container `{}`: they cannot share a host",
                            o.script.value,
                            container_name(partner, &o.script)
                        ),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::diag::Severity;

    const PARTNER: &str = "apiVersion: berth/v1\nkind: Partner\nname: alpha\nwindows:\n  - days: [sun]\n    start: \"01:00\"\n    end: \"05:00\"\nscripts:\n  - script: counts\n";
    const SCRIPT: &str = "apiVersion: berth/v1\nkind: Script\nname: counts\nimage:\n  source: local\n  repository: gh/counts\n";

    /// Validates a repo of the given files; gives `path:line:col: severity: message` lines.
    fn findings(files: &[(&str, &str)]) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let (_, diags) = crate::manifest::validate(dir.path()).unwrap();
        diags
            .iter()
            .map(|d| {
                let sev = match d.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                format!("{}: {sev}: {}", d.location(), d.message)
            })
            .collect()
    }

    #[test]
    fn minimal_repo_is_clean() {
        let got = findings(&[
            ("partners/alpha.yaml", PARTNER),
            ("scripts/counts.yaml", SCRIPT),
        ]);
        assert_eq!(got, Vec::<String>::new());
    }

    #[test]
    fn partner_range_is_checked_against_any_release_when_the_script_sets_none() {
        let partner = format!("{PARTNER}    versions: \">=2, <1\"\n");
        let got = findings(&[
            ("partners/alpha.yaml", &partner),
            ("scripts/counts.yaml", SCRIPT),
        ]);
        assert_eq!(
            got,
            ["partners/alpha.yaml:10:15: error: no version can satisfy the range `>=2, <1`"]
        );
    }

    #[test]
    fn a_script_range_nothing_satisfies_is_an_error() {
        let script = format!("{SCRIPT}versions: \">1.2.3, <1.2.4\"\n");
        let partner = format!("{PARTNER}    versions: \"^1\"\n");
        let got = findings(&[
            ("partners/alpha.yaml", &partner),
            ("scripts/counts.yaml", &script),
        ]);
        // Reported once, on the script; the partner's narrowing is not blamed for it.
        assert_eq!(
            got,
            ["scripts/counts.yaml:7:11: error: no version can satisfy the range `>1.2.3, <1.2.4`"]
        );
    }

    #[test]
    fn intersecting_ranges_pass_and_disjoint_ones_fail() {
        let script = format!("{SCRIPT}versions: \"^1.2.0\"\n");
        let ok = format!("{PARTNER}    versions: \"~1.4\"\n");
        let bad = format!("{PARTNER}    versions: \"~2.0\"\n");
        let got = findings(&[
            ("partners/alpha.yaml", &ok),
            ("scripts/counts.yaml", &script),
        ]);
        assert_eq!(got, Vec::<String>::new());
        let got = findings(&[
            ("partners/alpha.yaml", &bad),
            ("scripts/counts.yaml", &script),
        ]);
        assert_eq!(
            got,
            [
                "partners/alpha.yaml:10:15: error: no version can satisfy both `~2.0` and script `counts`'s range `^1.2.0`"
            ]
        );
    }

    #[test]
    fn a_partner_that_does_not_parse_makes_no_script_look_unused() {
        let broken = PARTNER.replace("kind: Partner", "kind: Partner\ncolour: blue");
        let got = findings(&[
            ("partners/alpha.yaml", &broken),
            ("scripts/counts.yaml", SCRIPT),
        ]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("partners/alpha.yaml:3:1: error: unknown field `colour`"),
            "{got:?}"
        );
        // With every partner parsed, an unused script is still reported.
        let other = PARTNER.replace("script: counts", "script: tallies");
        let tallies = SCRIPT.replace("counts", "tallies");
        let got = findings(&[
            ("partners/alpha.yaml", &other),
            ("scripts/counts.yaml", SCRIPT),
            ("scripts/tallies.yaml", &tallies),
        ]);
        assert_eq!(
            got,
            ["scripts/counts.yaml:3:7: warning: no partner runs script `counts`"]
        );
    }

    #[test]
    fn a_container_name_is_compared_with_every_partner_whose_name_prefixes_it() {
        let partner = |name: &str, script: &str| {
            PARTNER
                .replace("name: alpha", &format!("name: {name}"))
                .replace("script: counts", &format!("script: {script}"))
        };
        let script = |name: &str| SCRIPT.replace("counts", name);
        // All three are `berth-x-y-z-s`; `x-y-zz` only starts like them.
        let got = findings(&[
            ("partners/x.yaml", &partner("x", "y-z-s")),
            ("partners/x-y.yaml", &partner("x-y", "z-s")),
            ("partners/x-y-z.yaml", &partner("x-y-z", "s")),
            ("partners/x-y-zz.yaml", &partner("x-y-zz", "s")),
            ("scripts/y-z-s.yaml", &script("y-z-s")),
            ("scripts/z-s.yaml", &script("z-s")),
            ("scripts/s.yaml", &script("s")),
        ]);
        let clash = |at: &str, p: &str, s: &str, q: &str, t: &str| {
            format!(
                "partners/{at}.yaml:9:13: warning: partner `{p}` running script `{s}` and partner `{q}` running script `{t}` both name their container `berth-x-y-z-s`: they cannot share a host"
            )
        };
        assert_eq!(
            got,
            [
                clash("x-y-z", "x-y-z", "s", "x-y", "z-s"),
                clash("x-y-z", "x-y-z", "s", "x", "y-z-s"),
                clash("x-y", "x-y", "z-s", "x", "y-z-s"),
            ]
        );
    }

    #[test]
    fn file_level_findings_name_line_and_column() {
        let got = findings(&[
            ("partners/alpha.yaml", PARTNER),
            ("partners/beta.yml", PARTNER),
            ("partners/README.md", "notes"),
            ("scripts/counts.yaml", SCRIPT),
        ]);
        assert_eq!(
            got,
            [
                "partners/README.md:1:1: warning: not a .yaml file: ignored",
                "partners/beta.yml:1:1: error: manifest files end in .yaml: rename this file",
            ]
        );
    }
}
