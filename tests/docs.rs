//! The documentation's links hold: every relative link `[text](path#anchor)` in `README.md` and in
//! `docs/` (all Markdown files, recursively) names a file or folder that exists and, when it points
//! into a Markdown file, a heading of that file. Anchors are GitHub's: the heading lowercased, spaces
//! turned into `-`, every other character that is not a letter, digit, `-` or `_` dropped, and `-1`,
//! `-2`, ... added to repeats. Links to other sites (`://`, `mailto:`) are not followed; fenced code
//! blocks and code spans are not read for links. Every page in `docs/` must be linked from another.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            markdown_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

/// The lines outside fenced code blocks, numbered from 1.
fn prose(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut fenced = false;
    let lines = text.lines().enumerate().filter(move |(_, line)| {
        let fence = line.trim_start().starts_with("```");
        fenced ^= fence;
        !fenced && !fence
    });
    lines.map(|(i, line)| (i + 1, line))
}

fn slug(heading: &str) -> String {
    let keep = |c: &char| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_');
    let kept: String = heading.trim().to_lowercase().chars().filter(keep).collect();
    kept.replace(' ', "-")
}

/// The anchors of a Markdown file's headings, repeats numbered as GitHub does.
fn anchors(text: &str) -> BTreeSet<String> {
    let (mut seen, mut out) = (HashMap::new(), BTreeSet::new());
    for (_, line) in prose(text) {
        let level = line.len() - line.trim_start_matches('#').len();
        if (1..=6).contains(&level) && line[level..].starts_with(' ') {
            let base = slug(&line[level..]);
            let n: &mut usize = seen.entry(base.clone()).or_default();
            out.insert(if *n == 0 { base } else { format!("{base}-{n}") });
            *n += 1;
        }
    }
    out
}

/// The relative targets of the inline links of a line, code spans left out.
fn links(line: &str) -> Vec<String> {
    let text: String = line.split('`').step_by(2).collect();
    let mut out = Vec::new();
    for (i, _) in text.match_indices("](") {
        let target = text[i + 2..].split([')', ' ']).next().unwrap_or("");
        let external = target.contains("://") || target.starts_with("mailto:");
        if !target.is_empty() && !external {
            out.push(target.to_string());
        }
    }
    out
}

/// The file a link from `file` leads to, or why it leads nowhere.
fn follow(file: &Path, target: &str) -> Result<PathBuf, String> {
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let dest = match path {
        "" => file.to_path_buf(),
        path => file.parent().unwrap().join(path),
    };
    let Ok(dest) = dest.canonicalize() else {
        return Err(format!("no file {}", dest.display()));
    };
    if anchor.is_empty() || dest.extension().is_none_or(|e| e != "md") {
        return Ok(dest);
    }
    if !anchors(&fs::read_to_string(&dest).unwrap()).contains(anchor) {
        return Err(format!("no heading `#{anchor}` in {}", dest.display()));
    }
    Ok(dest)
}

#[test]
fn relative_links_in_the_docs_name_existing_files_and_headings() {
    let root = fs::canonicalize(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mut files = vec![root.join("README.md")];
    markdown_files(&root.join("docs"), &mut files);
    let (mut broken, mut checked, mut linked) = (Vec::new(), 0, Vec::new());
    for file in &files {
        let name = file.strip_prefix(&root).unwrap().display();
        for (n, line) in prose(&fs::read_to_string(file).unwrap()) {
            for target in links(line) {
                checked += 1;
                match follow(file, &target) {
                    Ok(dest) if dest != *file => linked.push(dest),
                    Ok(_) => {}
                    Err(why) => broken.push(format!("{name}:{n}: `{target}`: {why}")),
                }
            }
        }
    }
    let docs = root.join("docs");
    for page in files.iter().filter(|f| f.starts_with(&docs)) {
        if !linked.contains(page) {
            let name = page.strip_prefix(&root).unwrap().display();
            broken.push(format!("{name}: no other page links to it"));
        }
    }
    assert!(checked > 50, "{checked} links found: is the parser broken?");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_are_githubs() {
    let text = "# A\n## `POST /events`: (`path`)\n```sh\n# not a heading\n```\n## A\n";
    let want = ["a", "a-1", "post-events-path"].map(String::from);
    assert_eq!(anchors(text), BTreeSet::from(want));
}
