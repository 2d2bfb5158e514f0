//! Semantic checks on a parsed repo. Every finding is collected, none stops the others,
//! and each points at the value it is about.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use semver::VersionReq;

use super::syntax::*;
use super::{
    API_VERSION, Component, Condition, Container, Doc, Fleet, Health, Image, OptIn, Partner, Pos,
    Repo, Script, Source, Sp, Window,
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
        let claim = Claims::of(doc);
        claim.check_own(out);
        claims.insert(stem.as_str(), claim);
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
    check_image(&mut c, &s.image, fleet_registry);
    // An invalid or unsatisfiable range is reported here, once, and not again against
    // every partner that narrows it.
    let range = check_range(&mut c, s.versions.as_ref());
    for r in &s.requires {
        c.format(&r.url, check_http_url(&r.url));
        c.format(&r.pointer, check_json_pointer(&r.pointer));
        check_range(&mut c, Some(&r.versions));
        c.duration(&r.timeout);
    }
    match &s.components {
        Some(components) => check_components(&mut c, s, components, fleet_registry),
        None => {
            check_container(&mut c, s.container());
            check_scaling(&mut c, s.replicas.as_ref(), s.placement.as_ref());
            if let Some(h) = &s.health {
                check_health(&mut c, h);
            }
            if let Some((_, first)) = s.volumes.iter().next() {
                c.error(
                    first.pos,
                    "`volumes:` declares the named volumes of `components:`: a script with one container mounts its volumes in `container.volumes`",
                );
            }
        }
    }
    range
}

/// `replicas` and `placement` on their own: whether this engine takes them is the plan's
/// question (the host's engine is not the manifests').
fn check_scaling(c: &mut Checker, replicas: Option<&Sp<u32>>, placement: Option<&Sp<Vec<String>>>) {
    if let Some(r) = replicas
        && r.value == 0
    {
        c.error(
            r.pos,
            "`replicas` is at least 1: remove the script from the partner to stop it",
        );
    }
    if let Some(p) = placement {
        for constraint in p.iter() {
            if !["==", "!="].iter().any(|op| constraint.contains(op)) {
                c.error(
                    p.pos,
                    format!("invalid placement constraint `{constraint}`: write `node.<attribute> == <value>` or `!=`, e.g. `node.labels.gpu == true`"),
                );
            }
        }
    }
}

/// Where an image comes from: a registry that suits its source, and a repository.
fn check_image(c: &mut Checker, image: &Image, fleet_registry: Option<&Sp<String>>) {
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
}

/// A `versions` range, parsed: `*` when there is none, `None` when it is invalid or nothing
/// can satisfy it (reported).
fn check_range(c: &mut Checker, versions: Option<&Sp<String>>) -> Option<VersionReq> {
    match versions {
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
    }
}

fn check_health(c: &mut Checker, h: &Health) {
    if let Some(u) = &h.http {
        c.format(u, check_http_url(u));
    }
    if let Some(cmd) = &h.exec
        && cmd.is_empty()
    {
        c.error(cmd.pos, "`health.exec` must not be empty");
    }
    c.duration(&h.timeout);
}

/// The first position written inside a health check, for findings about all of it.
fn health_pos(h: &Health) -> Option<Pos> {
    [
        h.http.as_ref().map(|u| u.pos),
        h.exec.as_ref().map(|e| e.pos),
        h.timeout.as_ref().map(|t| t.pos),
    ]
    .into_iter()
    .flatten()
    .min()
}

/// A multi-component script (docs/manifests.md): each component is checked as a container, and
/// their dependencies, volumes and networks against each other.
fn check_components(
    c: &mut Checker,
    s: &Script,
    components: &Sp<BTreeMap<String, Sp<Component>>>,
    fleet_registry: Option<&Sp<String>>,
) {
    if s.container.is_some() {
        c.error(
            components.pos,
            "a script with `components:` takes no script-level `container:`: set `container:` on each component",
        );
    }
    if s.health.is_some() {
        c.error(
            components.pos,
            "a script with `components:` takes no script-level `health:`: set `health:` on each component",
        );
    }
    if components.is_empty() {
        c.error(components.pos, "`components:` needs at least one component");
    }
    for (key, pos) in [
        ("replicas", s.replicas.as_ref().map(|r| r.pos)),
        ("placement", s.placement.as_ref().map(|p| p.pos)),
    ] {
        if let Some(pos) = pos {
            c.error(
                pos,
                format!("a script with `components:` takes no script-level `{key}`: set it on each stateless component"),
            );
        }
    }
    let mut mounted = BTreeSet::new();
    for (name, comp) in components.iter() {
        if !is_name(name) {
            c.error(
                comp.pos,
                format!(
                    "invalid component name `{name}`: use 1-63 lowercase letters, digits and `-`, starting and ending with a letter or digit"
                ),
            );
        }
        match &comp.image {
            Some(image) => {
                check_image(c, image, fleet_registry);
                check_range(c, comp.versions.as_ref());
            }
            None => {
                if let Some(v) = &comp.versions {
                    c.error(
                        v.pos,
                        format!(
                            "component `{name}` sets `versions` but no `image`: without its own image it runs the script's, at the script's version"
                        ),
                    );
                }
            }
        }
        check_container(c, &comp.container);
        if let Some(n) = &comp.container.network
            && !matches!(n.as_str(), "host" | "none")
        {
            c.error(
                n.pos,
                format!(
                    "component `{name}` sets network `{}`: components join their script's network, and only `host` or `none` opts out",
                    n.value
                ),
            );
        }
        for v in &comp.container.volumes {
            let Some(source) = v.split(':').next() else {
                continue;
            };
            if source.starts_with('/') || check_volume(v).is_err() {
                continue;
            }
            mounted.insert(source);
            if !s.volumes.contains_key(source) {
                c.error(
                    v.pos,
                    format!(
                        "component `{name}` mounts volume `{source}`, which the script's `volumes:` does not declare"
                    ),
                );
            }
        }
        if let Some(h) = &comp.health {
            check_health(c, h);
            if comp.job {
                c.error(
                    health_pos(h).unwrap_or(comp.pos),
                    format!(
                        "component `{name}` is a job and takes no `health:`: it is done when it exits 0"
                    ),
                );
            }
        }
        if let Some(t) = &comp.timeout {
            if comp.job {
                c.duration(&comp.timeout);
            } else {
                c.error(
                    t.pos,
                    format!(
                        "component `{name}` sets `timeout` but is not a job: only `job: true` components have one"
                    ),
                );
            }
        }
        check_scaling(c, comp.replicas.as_ref(), comp.placement.as_ref());
        for (key, pos) in [
            ("replicas", comp.replicas.as_ref().map(|r| r.pos)),
            ("placement", comp.placement.as_ref().map(|p| p.pos)),
        ] {
            let kind = match (comp.stateful, comp.job) {
                (true, _) => "stateful: one task, pinned to the node that holds its volumes",
                (_, true) => "a job: it runs once",
                _ => continue,
            };
            if let Some(pos) = pos {
                c.error(
                    pos,
                    format!("component `{name}` sets `{key}` but is {kind}"),
                );
            }
        }
        if comp.job && comp.stateful {
            c.error(
                comp.pos,
                format!(
                    "component `{name}` is both `stateful` and a `job`: a job holds no data between runs"
                ),
            );
        }
        for (dep, cond) in &comp.depends_on {
            if dep == name {
                c.error(cond.pos, format!("component `{name}` depends on itself"));
                continue;
            }
            let Some(target) = components.get(dep) else {
                c.error(
                    cond.pos,
                    format!(
                        "component `{name}` depends on unknown component `{dep}`: the script declares no such component"
                    ),
                );
                continue;
            };
            if cond.value == Condition::Completed && !target.job {
                c.error(
                    cond.pos,
                    format!(
                        "component `{name}` waits for `{dep}` to be `completed`, but `{dep}` is not a job: use `started` or `healthy`"
                    ),
                );
            }
        }
    }
    check_cycle(c, components);
    for (volume, decl) in &s.volumes {
        if !mounted.contains(volume.as_str()) {
            c.warning(
                decl.pos,
                format!("volume `{volume}` is declared but no component mounts it"),
            );
        }
    }
}

/// A dependency cycle, reported once at the first dependency on it, naming its members.
/// A component depending on itself was reported already, and components that only wait
/// behind a cycle are not on it.
fn check_cycle(c: &mut Checker, components: &BTreeMap<String, Sp<Component>>) {
    let without_self: BTreeMap<String, Sp<Component>> = components
        .iter()
        .map(|(name, comp)| {
            let mut comp = comp.clone();
            comp.value.depends_on.remove(name);
            (name.clone(), comp)
        })
        .collect();
    let stuck: BTreeSet<&str> = super::cycle(&without_self).into_iter().collect();
    // On the cycle: a stuck component that reaches itself through stuck ones.
    let reaches_itself = |start: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start];
        while let Some(at) = todo.pop() {
            for dep in without_self[at].depends_on.keys() {
                if dep == start {
                    return true;
                }
                if stuck.contains(dep.as_str()) && seen.insert(dep.as_str()) {
                    todo.push(dep);
                }
            }
        }
        false
    };
    let members: Vec<&str> = stuck
        .iter()
        .copied()
        .filter(|m| reaches_itself(m))
        .collect();
    let Some(pos) = members
        .iter()
        .flat_map(|m| {
            components[*m]
                .depends_on
                .iter()
                .filter(|(d, _)| members.contains(&d.as_str()))
                .map(|(_, cond)| cond.pos)
        })
        .min()
    else {
        return;
    };
    let names: Vec<String> = members.iter().map(|m| format!("`{m}`")).collect();
    c.error(
        pos,
        format!(
            "components {} depend on each other in a cycle: none of them could start",
            names.join(", ")
        ),
    );
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
    if let Some(key) = &p.report_key {
        c.format(key, check_report_key(key));
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
        // Secret files go into every component: none may mount a volume on the target.
        let volumes: Vec<&Sp<String>> = script.map_or_else(Vec::new, |s| {
            s.doc
                .parts()
                .into_iter()
                .flat_map(|p| p.container.volumes.iter())
                .collect()
        });
        check_secrets(&mut c, &repo.root, stem, o, &volumes);
    }
}

/// A partner's `report_key`: one OpenSSH public key line (`ssh-ed25519 AAAA… comment`).
fn check_report_key(key: &str) -> Result<(), String> {
    ssh_key::PublicKey::from_openssh(key.trim())
        .map(drop)
        .map_err(|e| format!("`report_key` is not an OpenSSH public key line ({e})"))
}

/// Each secret an opt-in names is a plain name with a well-formed age file in the
/// partner's own directory; each secret file's target is an absolute container path, once,
/// and not where the script mounts a volume (the engine would refuse the container).
fn check_secrets(
    c: &mut Checker,
    root: &std::path::Path,
    partner: &str,
    o: &OptIn,
    volumes: &[&Sp<String>],
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

/// What a script's containers take on their host that a second container cannot take too.
struct Claims<'a> {
    path: &'a str,
    /// Host ports, each with the `ports` entry that publishes it and its component.
    ports: Vec<(Published, &'a Sp<String>, Option<&'a str>)>,
    /// The health URLs of containers on the host network, where they answer for the host.
    host_health: Vec<(&'a Sp<String>, Option<&'a str>)>,
}

impl<'a> Claims<'a> {
    /// Entries that do not parse were reported by `check_container` and claim nothing. On the
    /// host network the engine discards published ports, so they claim nothing either.
    fn of(doc: &'a Doc<Script>) -> Self {
        let mut ports = Vec::new();
        let mut host_health = Vec::new();
        for part in doc.doc.parts() {
            let host_network = part
                .container
                .network
                .as_ref()
                .is_some_and(|n| n.value == "host");
            if host_network {
                host_health.extend(
                    part.health
                        .and_then(|h| h.http.as_ref())
                        .filter(|u| check_http_url(u).is_ok())
                        .map(|u| (u, part.component)),
                );
            } else {
                ports.extend(
                    part.container
                        .ports
                        .iter()
                        .filter_map(|p| Some((Published::parse(p)?, p, part.component))),
                );
            }
        }
        Claims {
            path: &doc.path,
            ports,
            host_health,
        }
    }

    /// Two components of one script that claim the same host port or host-network health
    /// URL: an error on every host, so reported once, against the first component in
    /// dependency order. A component's own entries are not held against each other.
    fn check_own(&self, out: &mut Diagnostics) {
        let mut taken: HashMap<(u16, &'static str, Addr), (Option<&str>, &Published)> =
            HashMap::new();
        let mut start = 0;
        while start < self.ports.len() {
            let component = self.ports[start].2;
            let end = start
                + self.ports[start..]
                    .iter()
                    .take_while(|(_, _, c)| *c == component)
                    .count();
            let own = &self.ports[start..end];
            for (port, entry, _) in own {
                let first = clashes(port).find_map(|key| taken.get(&key));
                if let Some(&(Some(first), spelled)) = first {
                    out.push(Diagnostic::error(
                        self.path,
                        entry.pos,
                        format!(
                            "host port {port} is also published by component `{first}` of this script{}: two containers cannot bind it",
                            spelled_as(spelled, port)
                        ),
                    ));
                }
            }
            for (port, _, component) in own {
                for key in holds(port) {
                    taken.entry(key).or_insert((*component, port));
                }
            }
            start = end;
        }
        let mut health: HashMap<&str, &str> = HashMap::new();
        for (url, component) in &self.host_health {
            let Some(component) = component else {
                continue;
            };
            match health.entry(url.as_str()) {
                Entry::Occupied(first) => out.push(Diagnostic::error(
                    self.path,
                    url.pos,
                    format!(
                        "health URL `{}` is also the health check of component `{}` of this script, and both run on the host network: one container would answer the other's check",
                        url.value,
                        first.get()
                    ),
                )),
                Entry::Vacant(e) => {
                    e.insert(component);
                }
            }
        }
    }
}

/// The table keys a binding clashes with: see [`Addr`].
fn clashes(port: &Published) -> impl Iterator<Item = (u16, &'static str, Addr)> + '_ {
    port.scopes()
        .into_iter()
        .flatten()
        .flat_map(|(family, one)| match one {
            Some(ip) => [Addr::One(ip), Addr::Every(family)],
            None => [Addr::Every(family), Addr::Any(family)],
        })
        .map(|addr| (port.port, port.protocol, addr))
}

/// The table keys a binding holds: see [`Addr`].
fn holds(port: &Published) -> impl Iterator<Item = (u16, &'static str, Addr)> + '_ {
    port.scopes()
        .into_iter()
        .flatten()
        .flat_map(|(family, one)| match one {
            Some(ip) => [Addr::One(ip), Addr::Any(family)],
            None => [Addr::Every(family), Addr::Any(family)],
        })
        .map(|addr| (port.port, port.protocol, addr))
}

/// ` (as <first spelling>)` when the first binding was written differently.
fn spelled_as(first: &Published, port: &Published) -> String {
    if first == port {
        String::new()
    } else {
        format!(" (as {first})")
    }
}

/// `script `s`` or `component `c` of script `s``.
fn owner(script: &str, component: Option<&str>) -> String {
    match component {
        Some(c) => format!("component `{c}` of script `{script}`"),
        None => format!("script `{script}`"),
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

/// The script (and component) that took a host port first, and how it spelled it.
struct Taken<'a> {
    order: usize,
    script: &'a str,
    component: Option<&'a str>,
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
    health: HashMap<&'a str, (&'a str, Option<&'a str>)>,
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
            for (port, entry, _) in &claim.ports {
                let first = clashes(port)
                    .filter_map(|key| self.taken.get(&key))
                    .min_by_key(|t| t.order);
                if let Some(first) = first {
                    out.push(Diagnostic::error(
                        claim.path,
                        entry.pos,
                        format!(
                            "host port {port} is also published by {} for partner `{partner}`{}: two containers cannot bind it",
                            owner(first.script, first.component),
                            spelled_as(first.port, port)
                        ),
                    ));
                }
            }
            // Only now, so that a script's own entries are not held against each other
            // (its components' clashes are reported once, by `Claims::check_own`).
            for (port, _, component) in &claim.ports {
                for key in holds(port) {
                    self.taken.entry(key).or_insert(Taken {
                        order,
                        script,
                        component: *component,
                        port,
                    });
                }
            }
            for (url, _) in &claim.host_health {
                if let Some(&(first, component)) = self.health.get(url.as_str())
                    && first != script
                {
                    out.push(Diagnostic::error(
                        claim.path,
                        url.pos,
                        format!(
                            "health URL `{}` is also the health check of {} for partner `{partner}`, and both run on the host network: one container would answer the other's check",
                            url.value,
                            owner(first, component)
                        ),
                    ));
                }
            }
            for (url, component) in &claim.host_health {
                self.health
                    .entry(url.as_str())
                    .or_insert((script, *component));
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
    fn report_key_must_be_an_openssh_public_key_line() {
        let good = format!(
            "{PARTNER}report_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl host\n"
        );
        let got = findings(&[
            ("partners/alpha.yaml", &good),
            ("scripts/counts.yaml", SCRIPT),
        ]);
        assert_eq!(got, Vec::<String>::new());
        let bad = format!("{PARTNER}report_key: ssh-ed25519 not-base64\n");
        let got = findings(&[
            ("partners/alpha.yaml", &bad),
            ("scripts/counts.yaml", SCRIPT),
        ]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(
                "partners/alpha.yaml:10:13: error: `report_key` is not an OpenSSH public key line"
            ),
            "{got:?}"
        );
    }

    #[test]
    fn requires_entries_are_checked_where_they_are_written() {
        let good = format!(
            "{SCRIPT}requires:\n  - url: https://central.example/api/version\n    pointer: /version\n    versions: \">=2.0.0\"\n    timeout: 3s\n"
        );
        let got = findings(&[
            ("partners/alpha.yaml", PARTNER),
            ("scripts/counts.yaml", &good),
        ]);
        assert_eq!(got, Vec::<String>::new());
        let bad = format!(
            "{SCRIPT}requires:\n  - url: ftp://central\n    pointer: version\n    versions: \">=two\"\n    timeout: soon\n"
        );
        let got = findings(&[
            ("partners/alpha.yaml", PARTNER),
            ("scripts/counts.yaml", &bad),
        ]);
        let at: Vec<&str> = got
            .iter()
            .map(|l| l.split(": error").next().unwrap())
            .collect();
        assert_eq!(
            at,
            [
                "scripts/counts.yaml:8:10",
                "scripts/counts.yaml:9:14",
                "scripts/counts.yaml:10:15",
                "scripts/counts.yaml:11:14",
            ],
            "{got:?}"
        );
        assert!(got[1].contains("invalid JSON pointer `version`"), "{got:?}");
        assert!(got[2].contains("invalid version range `>=two`"), "{got:?}");
        let missing = format!("{SCRIPT}requires:\n  - url: https://central/v\n");
        let got = findings(&[
            ("partners/alpha.yaml", PARTNER),
            ("scripts/counts.yaml", &missing),
        ]);
        assert!(
            got.len() == 1 && got[0].starts_with("scripts/counts.yaml:8:"),
            "{got:?}"
        );
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

    /// A valid multi-component script `counts`: a database with its own image and volume,
    /// a migration job and an API. Tests edit it line by line.
    const MULTI: &str = "\
apiVersion: berth/v1
kind: Script
name: counts
image: { source: local, repository: gh/counts }
versions: \"^2.0.0\"
volumes:
  pgdata: {}
components:
  db:
    image: { source: local, repository: gh/postgres }
    versions: \"~15.4\"
    stateful: true
    container: { volumes: [\"pgdata:/var/lib/postgresql/data\"] }
    health: { exec: [pg_isready, -q] }
  migrate:
    job: true
    timeout: 10m
    depends_on: { db: healthy }
  api:
    container: { ports: [\"127.0.0.1:8851:8851\"] }
    depends_on: { db: healthy, migrate: completed }
    health: { http: http://127.0.0.1:8851/health }
";

    /// Findings for `MULTI` with `from` replaced by `to` (which must occur).
    fn multi(edits: &[(&str, &str)]) -> Vec<String> {
        let mut script = MULTI.to_owned();
        for (from, to) in edits {
            assert!(script.contains(from), "{from}");
            script = script.replacen(from, to, 1);
        }
        findings(&[
            ("partners/alpha.yaml", PARTNER),
            ("scripts/counts.yaml", &script),
        ])
    }

    #[test]
    fn a_multi_component_script_is_clean() {
        assert_eq!(multi(&[]), Vec::<String>::new());
    }

    #[test]
    fn script_level_container_and_health_are_refused_beside_components() {
        let got = multi(&[(
            "components:\n",
            "container: { command: [/serve] }\nhealth: { http: http://127.0.0.1:1/ }\ncomponents:\n",
        )]);
        assert_eq!(
            got,
            [
                "scripts/counts.yaml:11:3: error: a script with `components:` takes no script-level `container:`: set `container:` on each component",
                "scripts/counts.yaml:11:3: error: a script with `components:` takes no script-level `health:`: set `health:` on each component",
            ]
        );
    }

    #[test]
    fn component_names_follow_script_names() {
        let got = multi(&[("  api:\n", "  Api_1:\n")]);
        assert_eq!(
            got,
            [
                "scripts/counts.yaml:20:5: error: invalid component name `Api_1`: use 1-63 lowercase letters, digits and `-`, starting and ending with a letter or digit"
            ]
        );
    }

    #[test]
    fn a_components_image_and_range_are_checked_like_the_scripts() {
        let got = multi(&[
            (
                "source: local, repository: gh/postgres",
                "source: oci, repository: gh/postgres",
            ),
            ("\"~15.4\"", "\">16, <15\""),
        ]);
        assert_eq!(
            got,
            [
                "scripts/counts.yaml:10:22: error: `oci` needs a registry: set image.registry or fleet.yaml's registry",
                "scripts/counts.yaml:11:15: error: no version can satisfy the range `>16, <15`",
            ]
        );
        let got = multi(&[("    job: true\n", "    job: true\n    versions: \"^1\"\n")]);
        assert_eq!(
            got,
            [
                "scripts/counts.yaml:17:15: error: component `migrate` sets `versions` but no `image`: without its own image it runs the script's, at the script's version"
            ]
        );
    }

    #[test]
    fn component_containers_and_health_are_checked() {
        let got = multi(&[
            ("[pg_isready, -q]", "[]"),
            ("ports: [", "memory: lots, ports: ["),
        ]);
        assert_eq!(
            got,
            [
                "scripts/counts.yaml:14:21: error: `health.exec` must not be empty",
                "scripts/counts.yaml:20:26: error: invalid memory `lots`: expected bytes or a number with k, m or g",
            ]
        );
    }

    #[test]
    fn depends_on_names_known_components_and_fits_their_kind() {
        let got = multi(&[
            (
                "depends_on: { db: healthy }",
                "depends_on: { db: healthy, cache: started, migrate: started }",
            ),
            (
                "db: healthy, migrate: completed",
                "db: completed, migrate: completed",
            ),
        ]);
        assert_eq!(
            got,
            [
                "scripts/counts.yaml:18:39: error: component `migrate` depends on unknown component `cache`: the script declares no such component",
                "scripts/counts.yaml:18:57: error: component `migrate` depends on itself",
                "scripts/counts.yaml:21:23: error: component `api` waits for `db` to be `completed`, but `db` is not a job: use `started` or `healthy`",
            ]
        );
    }

    #[test]
    fn a_dependency_cycle_names_its_members_and_not_those_behind_it() {
        // db -> api -> migrate -> db; nothing else waits behind it here, so add one.
        let got = multi(&[
            (
                "    stateful: true\n",
                "    stateful: true\n    depends_on: { api: started }\n",
            ),
            (
                "components:\n",
                "components:\n  late:\n    depends_on: { api: started }\n",
            ),
        ]);
        assert_eq!(
            got,
            [
                "scripts/counts.yaml:15:24: error: components `api`, `db`, `migrate` depend on each other in a cycle: none of them could start"
            ]
        );
    }

    #[test]
    fn replicas_and_placement_are_for_stateless_parts_only() {
        let got = multi(&[
            (
                "    stateful: true\n",
                "    stateful: true\n    replicas: 2\n",
            ),
            (
                "    job: true\n",
                "    job: true\n    placement: [node.role == worker]\n",
            ),
            (
                "  api:\n",
                "  api:\n    replicas: 0\n    placement: [node.role]\n",
            ),
            ("components:\n", "replicas: 2\ncomponents:\n"),
        ]);
        assert_eq!(
            got,
            [
                "scripts/counts.yaml:8:11: error: a script with `components:` takes no script-level `replicas`: set it on each stateless component",
                "scripts/counts.yaml:14:15: error: component `db` sets `replicas` but is stateful: one task, pinned to the node that holds its volumes",
                "scripts/counts.yaml:19:16: error: component `migrate` sets `placement` but is a job: it runs once",
                "scripts/counts.yaml:23:15: error: `replicas` is at least 1: remove the script from the partner to stop it",
                "scripts/counts.yaml:24:16: error: invalid placement constraint `node.role`: write `node.<attribute> == <value>` or `!=`, e.g. `node.labels.gpu == true`",
            ]
        );
        let single = findings(&[
            ("partners/alpha.yaml", PARTNER),
            (
                "scripts/counts.yaml",
                &format!("{SCRIPT}replicas: 3\nplacement: [\"node.labels.gpu == true\"]\n"),
            ),
        ]);
        assert_eq!(single, Vec::<String>::new());
    }

    #[test]
    fn job_only_settings_are_refused_elsewhere() {
        let got = multi(&[
            (
                "    stateful: true\n",
                "    stateful: true\n    timeout: 5m\n",
            ),
            (
                "    job: true\n",
                "    job: true\n    stateful: true\n    health: { exec: [true] }\n",
            ),
        ]);
        assert_eq!(
            got,
            [
                "scripts/counts.yaml:13:14: error: component `db` sets `timeout` but is not a job: only `job: true` components have one",
                "scripts/counts.yaml:17:5: error: component `migrate` is both `stateful` and a `job`: a job holds no data between runs",
                "scripts/counts.yaml:19:21: error: component `migrate` is a job and takes no `health:`: it is done when it exits 0",
            ]
        );
    }

    #[test]
    fn a_component_network_may_only_opt_out() {
        let got = multi(&[("ports: [", "network: bridge, ports: [")]);
        assert_eq!(
            got,
            [
                "scripts/counts.yaml:20:27: error: component `api` sets network `bridge`: components join their script's network, and only `host` or `none` opts out"
            ]
        );
        assert_eq!(
            multi(&[("ports: [", "network: none, ports: [")]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn named_volumes_are_declared_and_declared_ones_used() {
        let got = multi(&[
            ("  pgdata: {}\n", "  pgdata: {}\n  spare: {}\n"),
            (
                "ports: [",
                "volumes: [\"cache:/cache\", \"/srv/data:/data:ro\"], ports: [",
            ),
        ]);
        assert_eq!(
            got,
            [
                "scripts/counts.yaml:8:10: warning: volume `spare` is declared but no component mounts it",
                "scripts/counts.yaml:21:28: error: component `api` mounts volume `cache`, which the script's `volumes:` does not declare",
            ]
        );
        let got = findings(&[
            ("partners/alpha.yaml", PARTNER),
            (
                "scripts/counts.yaml",
                &format!("{SCRIPT}volumes:\n  data: {{}}\n"),
            ),
        ]);
        assert_eq!(
            got,
            [
                "scripts/counts.yaml:8:9: error: `volumes:` declares the named volumes of `components:`: a script with one container mounts its volumes in `container.volumes`"
            ]
        );
    }

    #[test]
    fn components_publishing_one_host_port_clash_within_and_across_scripts() {
        let got = multi(&[(
            "    container: { volumes: [\"pgdata:/var/lib/postgresql/data\"] }\n",
            "    container: { volumes: [\"pgdata:/var/lib/postgresql/data\"], ports: [\"8851:8851\"] }\n",
        )]);
        assert_eq!(
            got,
            [
                "scripts/counts.yaml:20:26: error: host port 127.0.0.1:8851/tcp is also published by component `db` of this script (as 8851/tcp on every address): two containers cannot bind it"
            ]
        );
        let partner = format!("{PARTNER}  - script: board\n");
        let board = format!(
            "{}container:\n  ports: [\"127.0.0.1:8851:8851\"]\n",
            SCRIPT.replace("counts", "board")
        );
        let got = findings(&[
            ("partners/alpha.yaml", &partner),
            ("scripts/board.yaml", &board),
            ("scripts/counts.yaml", MULTI),
        ]);
        assert_eq!(
            got,
            [
                "scripts/counts.yaml:20:26: error: host port 127.0.0.1:8851/tcp is also published by script `board` for partner `alpha`: two containers cannot bind it"
            ]
        );
        // A script later in name order is blamed, and told which component holds the port.
        let zed = board.replace("board", "zed");
        let got = findings(&[
            ("partners/alpha.yaml", &partner.replace("board", "zed")),
            ("scripts/counts.yaml", MULTI),
            ("scripts/zed.yaml", &zed),
        ]);
        assert_eq!(
            got,
            [
                "scripts/zed.yaml:8:11: error: host port 127.0.0.1:8851/tcp is also published by component `api` of script `counts` for partner `alpha`: two containers cannot bind it"
            ]
        );
    }

    #[test]
    fn a_lock_pins_a_component_with_its_own_image_by_script_and_component() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let lock = format!(
            "version: 1\npartners:\n  alpha:\n    counts: {{ version: 2.0.0, digest: \"{digest}\", image: gh/counts }}\n    counts/db: {{ version: 15.4.1, digest: \"{digest}\", image: gh/postgres }}\n"
        );
        let got = findings(&[
            ("partners/alpha.yaml", PARTNER),
            ("scripts/counts.yaml", MULTI),
            ("berth.lock", &lock),
        ]);
        assert_eq!(got, Vec::<String>::new());
    }
}
