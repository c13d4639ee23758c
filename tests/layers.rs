//! The layers of `src/`, checked: every top-level module (a file or folder directly under `src/`) has a
//! layer in [`LAYERS`], a module imports (`crate::x`, in code, not comments) only modules of its own
//! layer or below, and the imports among the modules have no cycle. The layers are those of the design notes: util, model, pure core, ports,
//! services, adapters, composition root. A new module gets a row here; an import that breaks the
//! order is moved down, passed in as data, or inverted with a trait.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module and its layer, from the bottom: 0 util, 1 model, 2 pure core, 3 ports,
/// 4 services, 5 adapters, 6 composition root.
const LAYERS: &[(&str, u8)] = &[
    ("clock", 0),
    ("secret", 0),
    ("event", 1),
    ("severity", 1),
    ("geo", 1),
    ("config_raw", 1),
    ("traccar_config", 1),
    ("render", 2),
    ("notification", 2),
    ("retry", 2),
    ("noise", 2),
    ("incident", 2),
    ("rules", 2),
    ("directory", 2),
    ("plan", 2),
    ("settings", 2),
    ("channel_config", 2),
    ("store", 3),
    ("http_error", 3),
    ("metrics", 4),
    ("runtime", 4),
    ("deliver", 4),
    ("silence_cache", 4),
    ("pipeline", 4),
    ("explain", 4),
    ("incident_service", 4),
    ("channel", 5),
    ("source", 5),
    ("bot", 5),
    ("config", 6),
    ("reload", 6),
    ("api", 6),
    ("console", 6),
    ("backtest", 6),
    ("app", 6),
    ("setup", 6),
];

/// The top-level modules named after `crate::` in the code of `text` (comment lines left out),
/// grouped imports (`crate::{a::X, b}`, over several lines too) included.
fn imports(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + 7..];
        if let Some(group) = rest.strip_prefix('{') {
            // Items at the group's first level: after `{` and after each `,` at depth 0.
            let (mut depth, mut start) = (0, 0);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.insert(ident(&group[start..j]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(&group[start..j]));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.remove("");
    out
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
}

/// Module -> the modules it imports, for every file under `src/` but `lib.rs` and `main.rs`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let entry = g.entry(module.clone()).or_default();
        entry.extend(imports(&text).into_iter().filter(|m| *m != module));
    }
    g
}

#[test]
fn every_module_imports_only_its_own_layer_or_below_without_cycles() {
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let g = graph();
    let mut wrong = Vec::new();
    for (m, deps) in &g {
        let Some(&lm) = layer.get(m.as_str()) else {
            wrong.push(format!("{m}: no layer in tests/layers.rs LAYERS"));
            continue;
        };
        for d in deps {
            match layer.get(d.as_str()) {
                Some(&ld) if ld > lm => wrong.push(format!(
                    "{m} (layer {lm}) imports {d} (layer {ld}): upwards"
                )),
                None if g.contains_key(d) => wrong.push(format!("{d}: no layer")),
                _ => {}
            }
        }
    }
    // Same-layer imports must not go round: depth-first search for a back edge.
    fn visit<'a>(
        m: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
        found: &mut Vec<String>,
    ) {
        state.insert(m, 1);
        path.push(m);
        for d in g.get(m).into_iter().flatten() {
            match state.get(d.as_str()) {
                Some(1) => found.push(format!("cycle: {} -> {d}", path.join(" -> "))),
                Some(_) => {}
                None if g.contains_key(d) => visit(d, g, state, path, found),
                None => {}
            }
        }
        path.pop();
        state.insert(m, 2);
    }
    let mut state = BTreeMap::new();
    for m in g.keys() {
        if !state.contains_key(m.as_str()) {
            visit(m, &g, &mut state, &mut Vec::new(), &mut wrong);
        }
    }
    assert!(
        wrong.is_empty(),
        "layering broken:\n  {}",
        wrong.join("\n  ")
    );
    assert!(g.len() >= 20, "only {} modules found", g.len());
}

#[test]
fn imports_are_read_from_code_not_comments() {
    let text = "use crate::store::Store;\n//! see [`crate::app`]\nlet x = crate::clock::now_ms(); // crate::api\n\
                use crate::{\n    event::Event,\n    noise::{a, b},\n    render,\n};\n";
    let got: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(got, ["clock", "event", "noise", "render", "store"]);
}
