//! The crate's layering, checked: the top-level modules form a DAG, nothing imports the
//! command line, the engine speaks container specs only, the planner and the resolver do
//! no I/O, and the leaves import nothing of berth's. It reads the source as a newcomer
//! would, through the `crate::` paths of non-test code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Modules that talk to the outside world (engine, registries, git, files, HTTP).
const IO: &[&str] = &[
    "agent",
    "cli",
    "durable",
    "engine",
    "execute",
    "fleet",
    "http",
    "notify",
    "probe",
    "reconcile",
    "registry",
    "report",
    "source",
    "state",
];

/// The top-level modules each top-level module imports, from `crate::name` in the code
/// (not the comments) before its `#[cfg(test)]` items.
fn graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for entry in walk(src) {
        let rel = entry.strip_prefix(src).expect("under src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs").to_owned())
            .expect("a file name");
        if top == "main" || top == "lib" || top == "layering" {
            continue;
        }
        let text = std::fs::read_to_string(&entry).expect("source reads");
        // Doc links name modules without importing them.
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let deps = graph.entry(top.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(list) => list
                    .split('}')
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(|n| n.trim().split("::").next().unwrap_or_default())
                    .collect(),
                None => vec![
                    rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                        .next()
                        .unwrap_or_default(),
                ],
            };
            for name in names.into_iter().filter(|n| !n.is_empty() && *n != top) {
                deps.insert(name.to_owned());
            }
        }
    }
    graph
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src lists") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// A cycle through the graph, if there is one.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut c = path[at..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for d in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// Every broken rule, as a sentence.
fn broken(graph: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(c) = cycle(graph) {
        out.push(format!("import cycle: {}", c.join(" -> ")));
    }
    let forbid = |module: &str, banned: &[&str], why: &str, out: &mut Vec<String>| {
        for d in graph.get(module).into_iter().flatten() {
            if banned.contains(&d.as_str()) {
                out.push(format!("{module} imports {d}: {why}"));
            }
        }
    };
    for m in graph.keys().filter(|m| *m != "cli") {
        forbid(m, &["cli"], "nothing outside cli imports cli", &mut out);
    }
    forbid(
        "engine",
        &[
            "manifest",
            "plan",
            "resolve",
            "registry",
            "execute",
            "reconcile",
            "report",
        ],
        "the engine speaks container specs only",
        &mut out,
    );
    forbid("plan", IO, "the planner does no I/O", &mut out);
    forbid("resolve", IO, "resolution does no I/O of its own", &mut out);
    forbid("prune", IO, "the prune decision does no I/O", &mut out);
    forbid("rollout", IO, "the rollout decision does no I/O", &mut out);
    for leaf in ["clock", "diag", "durable", "exit", "http"] {
        if let Some(d) = graph.get(leaf).and_then(|d| d.iter().next()) {
            out.push(format!(
                "{leaf} imports {d}: leaves import nothing of berth's"
            ));
        }
    }
    out
}

#[test]
fn the_modules_keep_their_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    assert!(
        graph.contains_key("plan") && graph.contains_key("engine"),
        "{graph:?}"
    );
    assert!(
        graph["reconcile"].contains("plan") && graph["cli"].contains("reconcile"),
        "the scan sees the imports: {graph:?}"
    );
    let broken = broken(&graph);
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_check_finds_a_cycle_and_a_forbidden_import() {
    let g = |edges: &[(&str, &str)]| {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry((*a).to_owned())
                .or_default()
                .insert((*b).to_owned());
            g.entry((*b).to_owned()).or_default();
        }
        g
    };
    let cyclic = g(&[
        ("plan", "resolve"),
        ("resolve", "window"),
        ("window", "plan"),
    ]);
    assert_eq!(
        cycle(&cyclic),
        Some(vec![
            "plan".into(),
            "resolve".into(),
            "window".into(),
            "plan".into()
        ])
    );
    let bad = broken(&g(&[
        ("engine", "manifest"),
        ("probe", "cli"),
        ("plan", "engine"),
    ]));
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert!(broken(&g(&[("cli", "reconcile"), ("reconcile", "plan")])).is_empty());
}
