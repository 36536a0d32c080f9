//! The source's shape: imports go one way. Modules that sit side by side never import each other
//! in both directions (directly or round a longer loop), `domain` imports nothing else of the
//! crate, and `store`, `dingtalk` and `policy_file` never import each other (only the scheduler and
//! the wiring combine them). `docs/` is where the reference lives: no comment cites a document
//! outside the repository.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` → `a::b`; `src/a/mod.rs` → `a`; `src/lib.rs` → `` (the crate).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src").with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts
        .last()
        .is_some_and(|l| l == "mod" || l == "lib" || l == "main")
    {
        parts.pop();
    }
    parts.join("::")
}

fn parent(m: &str) -> &str {
    m.rsplit_once("::").map_or("", |(p, _)| p)
}

/// Every module of the crate that `text` (the file of `module`) names, resolved to the longest
/// known module path.
fn imports(module: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let longest = |path: &str| {
        let segs: Vec<&str> = path.split("::").collect();
        (1..=segs.len())
            .rev()
            .map(|n| segs[..n].join("::"))
            .find(|p| known.contains(p))
    };
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (prefix, base) in [("crate::", String::new()), ("super::", parent(module).to_owned())] {
            let mut rest = code;
            while let Some(i) = rest.find(prefix) {
                let tail = &rest[i + prefix.len()..];
                let path: String = tail
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let full = if base.is_empty() {
                    path.trim_end_matches(':').to_owned()
                } else {
                    format!("{base}::{}", path.trim_end_matches(':'))
                };
                if let Some(m) = longest(&full)
                    && m != module
                {
                    out.insert(m);
                }
                rest = tail;
            }
        }
    }
    out
}

/// Cycles among the children of one parent: edges from a sibling to a sibling.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_owned());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        if let Some(c) = visit(n, edges, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeMap<String, String> = files
        .iter()
        .map(|f| (module_of(&src, f), std::fs::read_to_string(f).expect("read")))
        .collect();
    let known: BTreeSet<String> = modules.keys().filter(|m| !m.is_empty()).cloned().collect();
    modules
        .iter()
        .map(|(m, text)| (m.clone(), imports(m, text, &known)))
        .collect()
}

#[test]
fn sibling_modules_import_one_way() {
    let g = graph();
    // Per parent: sibling → sibling edges (an import of a descendant counts for its ancestor
    // among the siblings; a child naming its own parent is not a cycle).
    let mut by_parent: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (from, tos) in &g {
        for to in tos {
            let (mut a, mut b) = (from.as_str(), to.as_str());
            // Climb to the level where both have the same parent.
            let depth = |m: &str| if m.is_empty() { 0 } else { m.split("::").count() };
            while depth(a) > depth(b) {
                a = parent(a);
            }
            while depth(b) > depth(a) {
                b = parent(b);
            }
            while parent(a) != parent(b) {
                a = parent(a);
                b = parent(b);
            }
            if a != b && !a.is_empty() && !b.is_empty() {
                by_parent
                    .entry(parent(a).to_owned())
                    .or_default()
                    .entry(a.to_owned())
                    .or_default()
                    .insert(b.to_owned());
            }
        }
    }
    for (p, edges) in &by_parent {
        if let Some(c) = find_cycle(edges) {
            panic!("an import cycle under '{p}': {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_layers_stay_apart() {
    let g = graph();
    let under = |m: &str, top: &str| m == top || m.starts_with(&format!("{top}::"));
    for (from, tos) in &g {
        for to in tos {
            if under(from, "domain") {
                assert!(under(to, "domain"), "domain imports {to} (in {from})");
            }
            for (a, b) in [
                ("store", "dingtalk"),
                ("store", "policy_file"),
                ("dingtalk", "store"),
                ("dingtalk", "policy_file"),
                ("policy_file", "store"),
                ("policy_file", "dingtalk"),
            ] {
                assert!(!(under(from, a) && under(to, b)), "{from} imports {to}");
            }
            if under(from, "http") {
                assert!(
                    !under(to, "dingtalk") || to == "dingtalk::token",
                    "http reaches DingTalk through {to}: it reads the token's status only"
                );
            }
        }
    }
}

#[test]
fn comments_cite_the_repository_not_the_brief() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    // Not `migrations/`: sqlx checksums every applied migration, comments included, so the first
    // one keeps its words; docs/database.md is the reference for the schema.
    for dir in ["src", "tests", "bench/src", "scripts", ".ci"] {
        if root.join(dir).exists() {
            collect_all(&root.join(dir), &mut files);
        }
    }
    files.extend(["README.md", "config.yaml", "RELIABILITY.md", "BENCHMARKS.md"].map(|f| root.join(f)));
    if let Ok(docs) = std::fs::read_dir(root.join("docs")) {
        files.extend(docs.filter_map(|e| e.ok().map(|e| e.path())));
    }
    files.push(root.join("systemd/dingrec.service"));
    for dir in ["xtask/src", "debian"] {
        if root.join(dir).exists() {
            collect_all(&root.join(dir), &mut files);
        }
    }
    // Spelled in pieces, so that this file does not cite them itself.
    let needles = [
        ["SPEC", " §"],
        ["SPEC", ".md"],
        ["WIRE", ".md"],
        ["STYLE", ".md"],
        ["../", "shared"],
    ]
    .map(|p| p.concat());
    let mut cited = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            if needles.iter().any(|n| line.contains(n.as_str())) {
                cited.push(format!(
                    "{}:{}",
                    f.strip_prefix(root).unwrap_or(&f).display(),
                    i + 1
                ));
            }
        }
    }
    assert!(
        cited.is_empty(),
        "cites documents outside the repository: {cited:#?}"
    );
}

fn collect_all(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_all(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Every file or folder of the repository that README.md and docs/ name in backquotes
/// (`src/store/api.rs`, `migrations-postgres/`, `scripts/pg`) exists: a move or a rename shows
/// here, not in a newcomer's search.
#[test]
fn the_paths_the_docs_name_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![
        root.join("README.md"),
        root.join("RELIABILITY.md"),
        root.join("BENCHMARKS.md"),
    ];
    for e in std::fs::read_dir(root.join("docs")).expect("docs") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "md") {
            docs.push(p);
        }
    }
    let tops = [
        "src/",
        "tests/",
        "migrations/",
        "migrations-postgres/",
        "scripts/",
        "bench/",
        "debian/",
        "xtask/",
    ];
    let mut missing = Vec::new();
    let mut seen = 0;
    for doc in &docs {
        let text = std::fs::read_to_string(doc).expect("doc");
        for quoted in text.split('`').skip(1).step_by(2) {
            let path = quoted.split([' ', ':', '#']).next().unwrap_or("");
            // A path with a placeholder (`<timestamp>`, `*.sql`, `{...}`) is a pattern.
            if !tops.iter().any(|t| path.starts_with(t)) || path.contains(['<', '*', '{']) {
                continue;
            }
            seen += 1;
            if !root.join(path).exists() {
                missing.push(format!("{}: {path}", doc.display()));
            }
        }
    }
    assert!(seen > 10, "the docs name only {seen} paths: is the scan broken?");
    assert!(
        missing.is_empty(),
        "named in the docs but not in the repository:\n{}",
        missing.join("\n")
    );
}
