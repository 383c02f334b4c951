//! The source layout's one rule, checked: dependencies between the top-level
//! modules of `src/` point one way, down the data path (see the crate docs'
//! "map"): each module may use only the modules [`ALLOWED`] lists for it. Doc
//! comments do not count: they may link anywhere. `super::` paths stay inside
//! a top-level module by construction, so only `crate::` paths are checked.
//!
//! `cargo test --test layout -- --nocapture` prints the module graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may use: the graph the crate docs draw, leaves
/// last. Everything not listed is forbidden (an upward or sideways import).
const ALLOWED: &[(&str, &[&str])] = &[
    ("testing", &["sink", "record", "error"]),
    // The fuzz targets' entry points (`--cfg fuzzing` only).
    ("fuzzing", &["record", "hooks", "sink"]),
    (
        "middleware",
        &[
            "writer", "captured", "sink", "codec", "record", "hooks", "marker", "error",
        ],
    ),
    // `writer`: the summary's `completeUntil` asks the layer's `UsageHandle`.
    (
        "endpoint",
        &[
            "writer", "sink", "record", "hooks", "marker", "error", "streak",
        ],
    ),
    // `metrics` (feature `metrics`): the names the writer and the spool report under.
    (
        "writer",
        &[
            "captured", "sink", "record", "hooks", "error", "streak", "metrics",
        ],
    ),
    ("captured", &["codec", "record", "hooks"]),
    // `sink::spool` (feature `spool`): segment files of records
    // (`record::binary`), one warning per failure streak.
    ("sink", &["codec", "record", "error", "streak", "metrics"]),
    ("codec", &["error"]),
    ("record", &["hooks", "codec"]),
    ("hooks", &[]),
    ("marker", &[]),
    ("error", &[]),
    ("streak", &[]),
    ("metrics", &[]),
];

/// Root re-exports, by the module that defines them.
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("SinkError", "error"),
    ("SinkErrorKind", "error"),
    ("IdentifyConsumer", "hooks"),
    ("RequestInfo", "hooks"),
    ("bearer_token", "hooks"),
    ("hash_token", "hooks"),
    ("default_route", "hooks"),
    ("CapturePolicy", "hooks"),
    ("CaptureRequest", "hooks"),
    ("Bodies", "hooks"),
    ("UsageRecord", "record"),
    ("TraceContext", "record"),
    ("RecordedRequest", "record"),
    ("CapturedBody", "record"),
    ("CaptureNotes", "record"),
    ("GrpcCall", "record"),
    ("GrpcDirection", "record"),
    ("GrpcMessage", "record"),
    ("Outcome", "record"),
    ("MAX_JSON_DEPTH", "record"),
    ("UsageSink", "sink"),
    ("UsageQuery", "sink"),
    ("UsagePage", "sink"),
    ("MemorySink", "sink"),
    ("SqliteSink", "sink"),
    ("PostgresSink", "sink"),
    ("UsageHandle", "writer"),
    ("RecorderStats", "writer"),
    ("WriterStats", "writer"),
    ("FlushOutcome", "writer"),
    ("UsageWorker", "writer"),
    ("UsageService", "endpoint"),
    ("UsageLayer", "middleware"),
    // The conformance kit's macros, exported at the root.
    ("__tower_usage_checks", "testing"),
    ("sink_conformance_tests", "testing"),
];

fn allowed(module: &str) -> &'static [&'static str] {
    ALLOWED
        .iter()
        .find(|(m, _)| *m == module)
        .unwrap_or_else(|| panic!("module `{module}` is not in tests/layout.rs"))
        .1
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (line comments and doc comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string literal (a URL) is rare in this crate's
            // code; cutting there only drops references, never adds them.
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first identifier of each item of a `use` tree (`a`, `b::c`, `{d, e}`),
/// nested groups included: `{record::{A, B}, writer::Queue}` gives `record`,
/// `writer`.
fn tree_heads(tree: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(group) = tree.strip_prefix('{') else {
        return vec![ident(tree)];
    };
    let mut heads = Vec::new();
    let (mut depth, mut item_start) = (0usize, 0usize);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                heads.push(ident(&group[item_start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                heads.push(ident(&group[item_start..i]));
                item_start = i + 1;
            }
            _ => {}
        }
    }
    heads
}

/// The top-level modules that `code` refers to through `crate::`.
fn references(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        for name in tree_heads(rest).into_iter().filter(|n| !n.is_empty()) {
            let module = ROOT_ITEMS
                .iter()
                .find(|(item, _)| *item == name)
                .map_or(name.clone(), |(_, m)| (*m).to_owned());
            found.insert(module);
        }
    }
    found
}

#[test]
fn dependencies_point_down_the_data_path() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" || top == "docs" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for used in references(&code(&text)) {
            if used == top {
                continue;
            }
            if !allowed(&top).contains(&used.as_str()) {
                wrong.push(format!("{} uses crate::{used}", relative.display()));
            }
            graph.entry(top.clone()).or_default().insert(used);
        }
    }
    for (module, uses) in &graph {
        let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
        println!("{module} -> {}", uses.join(", "));
    }
    assert!(
        wrong.is_empty(),
        "upward or sideways imports:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_imports_and_ignores_comments() {
    let text = "use crate::{UsageRecord, sink::{UsageQuery, Order}, writer::Queue};\n\
                /// [x](crate::middleware)\nlet x = crate::codec::headers::encode;";
    let found = references(&code(text));
    let found: Vec<&str> = found.iter().map(String::as_str).collect();
    assert_eq!(found, ["codec", "record", "sink", "writer"]);
}
