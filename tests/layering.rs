//! Both crates read bottom-up: every file imports only from lower layers, so nothing imports
//! in a cycle. Each crate is described by a [`Tree`] whose layer table is mirrored, in the same
//! order, by the Layout section of its `lib.rs`:
//! - [`ENGINE`], the Engine.IO crate (`transports/src`): each file is a module of its own, and
//!   a file imports only files of a lower layer, never one of its own layer.
//! - [`HALLEY`], the Socket.IO server (`src`): a top-level module and everything in its folder
//!   is one group (`socketio` is `socketio/*.rs`); the files of a group import one another
//!   freely, and a group imports only groups of a lower layer. The Engine.IO crate, re-exported
//!   as `crate::engine`, is the bottom layer.
//!
//! Imports are read from the source text: `use crate::…`, `use super::…` and `use self::…`
//! trees (groups included) and inline `crate::x::…` / `super::x::…` paths in code, with
//! comments and literals left out. Test modules count too: a file's tests may only reach what
//! the file itself may.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// One crate's sources and the stack they must form.
struct Tree {
    /// The crate's source folder, from the workspace root.
    dir: &'static str,
    /// The layers, bottom-up, each a description and its modules. A module is named by its
    /// file under `dir` (`transport` is `transport/mod.rs`, `lib` the crate root) or, when
    /// `grouped`, by its top-level module. A module may import only modules of the layers
    /// before its own.
    layers: &'static [(&'static str, &'static [&'static str])],
    /// Whether a top-level module and its folder are one group, free to import one another.
    grouped: bool,
    /// Names in the crate root that are other crates (`pub use halley_engine as engine;`):
    /// a path through one reaches that crate, a module of `layers` without a file here.
    external: &'static [&'static str],
    /// Files under `dir` that are crate roots of their own (`main.rs`, the binary): they reach
    /// the library by its name, never by `crate::`, so they are no part of the stack.
    binaries: &'static [&'static str],
}

const ENGINE: Tree = Tree {
    dir: "transports/src",
    layers: &[
        ("pure codecs and ids", &["packet", "sid", "headers"]),
        ("pure protocol state", &["session", "framing", "admission"]),
        ("origin policy", &["origin"]),
        (
            "settings, counters, HTTP pieces",
            &["config", "stats", "http"],
        ),
        ("HTTP/1 connection", &["h1"]),
        ("handshake", &["handshake"]),
        ("socket", &["socket"]),
        ("registry", &["registry"]),
        ("shared state and session lifecycle", &["lifecycle"]),
        (
            "transports",
            &["transport", "transport/polling", "transport/forward"],
        ),
        (
            "transports built on polling",
            &["transport/streaming", "transport/websocket"],
        ),
        ("dispatch", &["engine"]),
        ("crate root", &["lib"]),
    ],
    grouped: false,
    external: &[],
    binaries: &[],
};

const HALLEY: Tree = Tree {
    dir: "src",
    layers: &[
        ("the Engine.IO layer", &["engine"]),
        ("Socket.IO", &["socketio"]),
        ("bridges", &["bridge"]),
        ("self-contained pieces", &["client_js", "memory"]),
        ("metrics", &["metrics"]),
        ("HTTP server", &["server"]),
        ("admin listener", &["admin"]),
        ("admin UI", &["admin_ui"]),
        ("demo", &["demo"]),
        ("options", &["config"]),
        ("crate root", &["lib"]),
    ],
    grouped: true,
    external: &["engine"],
    binaries: &["main"],
};

#[test]
fn engine_modules_import_only_lower_layers() {
    check_layers(&ENGINE);
}

#[test]
fn halley_groups_import_only_lower_layers() {
    check_layers(&HALLEY);
}

#[test]
fn engine_modules_import_one_another_without_cycles() {
    check_no_cycle(&ENGINE);
}

#[test]
fn halley_groups_import_one_another_without_cycles() {
    check_no_cycle(&HALLEY);
}

#[test]
fn engine_layout_doc_lists_the_modules_bottom_up() {
    check_layout(&ENGINE);
}

#[test]
fn halley_layout_doc_lists_the_groups_bottom_up() {
    check_layout(&HALLEY);
}

fn check_layers(tree: &Tree) {
    let sources = tree.sources();
    let layer_of = tree.layer_of();
    let mut problems = Vec::new();
    for name in sources.keys() {
        let group = tree.group(name);
        if !layer_of.contains_key(group) {
            problems.push(format!(
                "`{group}` is in no layer: add it to the layers of {} and the Layout",
                tree.dir
            ));
        }
    }
    for name in layer_of.keys() {
        if !tree.external.contains(name) && !sources.keys().any(|s| tree.group(s) == *name) {
            problems.push(format!("the layers name `{name}`, which has no file"));
        }
    }
    for (from, imports) in tree.imports_of(&sources) {
        let Some(&from_layer) = layer_of.get(tree.group(&from)) else {
            continue;
        };
        for import in imports {
            let Some(to) = &import.module else {
                problems.push(format!(
                    "`{from}` line {}: `{}` goes through the crate root; import from the module",
                    import.line, import.path
                ));
                continue;
            };
            if tree.group(to) == tree.group(&from) {
                continue;
            }
            let Some(&to_layer) = layer_of.get(tree.group(to)) else {
                continue;
            };
            if to_layer >= from_layer {
                problems.push(format!(
                    "`{from}` ({}) imports `{to}` ({}) at line {}: `{}`",
                    tree.layers[from_layer].0, tree.layers[to_layer].0, import.line, import.path
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}:\n{}",
        tree.dir,
        problems.join("\n")
    );
}

fn check_no_cycle(tree: &Tree) {
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (from, imports) in tree.imports_of(&tree.sources()) {
        let from = tree.group(&from).to_owned();
        let to = graph.entry(from.clone()).or_default();
        to.extend(
            imports
                .into_iter()
                .filter_map(|i| i.module)
                .map(|m| tree.group(&m).to_owned())
                .filter(|m| *m != from),
        );
        to.sort();
        to.dedup();
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!("{}: import cycle: {}", tree.dir, cycle.join(" -> "));
    }
}

fn check_layout(tree: &Tree) {
    let lib = fs::read_to_string(tree.src_dir().join("lib.rs")).expect("lib.rs is readable");
    let listed = layout_modules(&lib);
    let layer_of = tree.layer_of();
    let mut problems = Vec::new();
    let mut last = 0;
    for name in &listed {
        match layer_of.get(name.as_str()) {
            None => problems.push(format!("the Layout lists `{name}`, which the layers lack")),
            Some(&layer) if layer < last => problems.push(format!(
                "the Layout lists `{name}` ({}) after a module of a higher layer",
                tree.layers[layer].0
            )),
            Some(&layer) => last = layer,
        }
    }
    for name in layer_of.keys().filter(|&&name| name != "lib") {
        let times = listed.iter().filter(|l| l == name).count();
        if times != 1 {
            problems.push(format!("the Layout lists `{name}` {times} times, not once"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}/lib.rs:\n{}",
        tree.dir,
        problems.join("\n")
    );
}

/// The extractor itself, on a file that imports in every way it must see.
#[test]
fn extractor_sees_groups_inline_paths_and_test_modules_but_not_comments() {
    let code = r##"
        //! Mentions crate::engine in a doc comment.
        use std::sync::Arc;
        use crate::{framing::{self, Framing}, packet};
        use crate::transport::{polling, websocket::Probe as P};
        pub(crate) use super::forward::Pool;
        fn f() {
            let s = "crate::engine::Engine"; // crate::config
            /* crate::registry */
            let c = '{';
            crate::stats::EngineStats::default();
            let _ = crate::Frame::message("x");
            let q = '\'';
            let r = r#"crate::sid"#;
        }
        #[cfg(test)]
        mod tests {
            use super::*;
            use crate::headers::Headers;
        }
    "##;
    let modules = modules(&[
        "lib",
        "transport",
        "transport/streaming",
        "transport/polling",
        "transport/websocket",
        "transport/forward",
        "framing",
        "packet",
        "sid",
        "stats",
        "headers",
        "engine",
        "config",
        "registry",
    ]);
    let found: Vec<(Option<String>, usize)> = imports("transport/streaming", code, &modules, &[])
        .into_iter()
        .map(|i| (i.module, i.line))
        .collect();
    let named = |m: &str, line| (Some(m.to_owned()), line);
    assert_eq!(
        found,
        [
            named("framing", 4),
            named("framing", 4),
            named("packet", 4),
            named("transport/polling", 5),
            named("transport/websocket", 5),
            named("transport/forward", 6),
            named("stats", 11),
            (None, 12),
            named("headers", 19),
        ]
    );
}

/// A re-exported crate is reached through the crate root, yet names its own layer.
#[test]
fn extractor_reads_a_re_exported_crate_as_that_crate() {
    let code = r"
        use crate::engine::{origin, Body};
        use crate::bridge::latency::now_ms;
        fn f() {
            crate::engine::full(crate::Halley::builder());
        }
    ";
    let modules = modules(&["lib", "socketio", "bridge", "bridge/latency", "demo"]);
    let found: Vec<(Option<String>, usize)> = imports("demo", code, &modules, &["engine"])
        .into_iter()
        .map(|i| (i.module, i.line))
        .collect();
    let named = |m: &str, line| (Some(m.to_owned()), line);
    assert_eq!(
        found,
        [
            named("engine", 2),
            named("engine", 2),
            named("bridge/latency", 3),
            named("engine", 5),
            (None, 5),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Reading the sources.

impl Tree {
    fn src_dir(&self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(self.dir)
    }

    /// Every `.rs` file under `dir` but the binaries, by module name.
    fn sources(&self) -> BTreeMap<String, String> {
        fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
            for entry in fs::read_dir(dir).expect("the source folder is readable") {
                let path = entry.expect("a directory entry").path();
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default();
                if path.is_dir() {
                    walk(&path, &format!("{prefix}{stem}/"), out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let name = match stem {
                        "mod" => prefix.trim_end_matches('/').to_owned(),
                        "lib" if prefix.is_empty() => "lib".to_owned(),
                        _ => format!("{prefix}{stem}"),
                    };
                    let text = fs::read_to_string(&path).expect("a source file is readable");
                    out.insert(name, text);
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.src_dir(), "", &mut out);
        out.retain(|name, _| !self.binaries.contains(&name.as_str()));
        out
    }

    /// The name a module has in the layers: its own, or its top-level module's when grouped.
    fn group<'a>(&self, module: &'a str) -> &'a str {
        match self.grouped {
            true => module.split('/').next().unwrap_or(module),
            false => module,
        }
    }

    fn layer_of(&self) -> BTreeMap<&'static str, usize> {
        let mut map = BTreeMap::new();
        for (layer, (_, names)) in self.layers.iter().enumerate() {
            for &name in *names {
                assert!(
                    map.insert(name, layer).is_none(),
                    "`{name}` is in two layers"
                );
            }
        }
        map
    }

    fn imports_of(&self, sources: &BTreeMap<String, String>) -> BTreeMap<String, Vec<Import>> {
        let names: Vec<&str> = sources.keys().map(String::as_str).collect();
        let modules = modules(&names);
        sources
            .iter()
            .map(|(name, code)| {
                let found = imports(name, code, &modules, self.external);
                (name.clone(), found)
            })
            .collect()
    }
}

/// Module paths (`["transport", "polling"]`) to module names (`transport/polling`).
fn modules(names: &[&str]) -> BTreeMap<Vec<String>, String> {
    names
        .iter()
        .map(|&name| {
            let path = match name {
                "lib" => Vec::new(),
                _ => name.split('/').map(str::to_owned).collect(),
            };
            (path, name.to_owned())
        })
        .collect()
}

/// One reference from a file to another module of the crate.
#[derive(Debug)]
struct Import {
    /// The file it reaches, or `None` when it names an item of the crate root (a re-export),
    /// which hides the layer it comes from.
    module: Option<String>,
    /// The path as written, resolved (`crate::…`).
    path: String,
    line: usize,
}

/// What file `name` imports from the other files (not from itself), and from the crates the
/// crate root re-exports under the names `external`.
fn imports(
    name: &str,
    code: &str,
    modules: &BTreeMap<Vec<String>, String>,
    external: &[&str],
) -> Vec<Import> {
    let file: Vec<String> = match name {
        "lib" => Vec::new(),
        _ => name.split('/').map(str::to_owned).collect(),
    };
    let tokens = tokenize(&strip(code));
    let mut out = Vec::new();
    // Inline modules (`mod tests { … }`) open at a brace depth: their `super` is the file.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        let (token, line) = (&tokens[i].0, tokens[i].1);
        match token.as_str() {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if inline.last().is_some_and(|&(_, d)| d == depth) {
                    inline.pop();
                }
            }
            "mod" if tokens.get(i + 2).is_some_and(|t| t.0 == "{") => {
                inline.push((tokens[i + 1].0.clone(), depth));
            }
            _ => {}
        }
        let here: Vec<String> = file
            .iter()
            .cloned()
            .chain(inline.iter().map(|(m, _)| m.clone()))
            .collect();
        if token == "use" {
            let mut paths = Vec::new();
            i = use_tree(&tokens, i + 1, Vec::new(), &mut paths);
            for path in paths {
                out.extend(resolve(&path, &here, name, modules, external, line));
            }
            continue;
        }
        if matches!(token.as_str(), "crate" | "super" | "self")
            && tokens.get(i + 1).is_some_and(|t| t.0 == "::")
            && (i == 0 || tokens[i - 1].0 != "::")
        {
            let mut path = vec![token.clone()];
            let mut j = i + 1;
            while tokens.get(j).is_some_and(|t| t.0 == "::")
                && tokens.get(j + 1).is_some_and(|t| is_ident(&t.0))
            {
                path.push(tokens[j + 1].0.clone());
                j += 2;
            }
            out.extend(resolve(&path, &here, name, modules, external, line));
            i = j;
            continue;
        }
        i += 1;
    }
    out
}

/// Reads a use tree from `tokens[i]` on, adding each full path to `out`; returns the index
/// after the tree (after its `;` at the top level).
fn use_tree(
    tokens: &[(String, usize)],
    mut i: usize,
    prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    let mut path = prefix;
    // After a group (`a::{b, c}`), the group's paths are the tree's, not `a` itself.
    let mut grouped = false;
    loop {
        let Some((token, _)) = tokens.get(i) else {
            return i;
        };
        match token.as_str() {
            "::" => i += 1,
            "{" => {
                grouped = true;
                i += 1;
                loop {
                    match tokens.get(i).map(|t| t.0.as_str()) {
                        Some("}") => {
                            i += 1;
                            break;
                        }
                        Some(",") => i += 1,
                        Some(_) => i = use_tree(tokens, i, path.clone(), out),
                        None => return i,
                    }
                }
            }
            "as" => i += 2,
            "*" => i += 1,
            "," | "}" | ";" => {
                if !grouped && !path.is_empty() {
                    out.push(path);
                }
                return if token == ";" { i + 1 } else { i };
            }
            ident => {
                path.push(ident.to_owned());
                i += 1;
            }
        }
    }
}

/// The module of the crate a path reaches from the module `here` of the file `own`, unless it
/// is outside the crate (`std::…`) or the file itself; a re-exported crate (`crate::engine`)
/// counts as a module named as in `external`.
fn resolve(
    path: &[String],
    here: &[String],
    own: &str,
    modules: &BTreeMap<Vec<String>, String>,
    external: &[&str],
    line: usize,
) -> Option<Import> {
    let first = path.first()?;
    let mut full: Vec<String> = match first.as_str() {
        "crate" => Vec::new(),
        "self" => here.to_vec(),
        "super" => {
            let mut base = here.to_vec();
            for _ in path.iter().take_while(|s| *s == "super") {
                base.pop();
            }
            base
        }
        // A child module, named without `self::`.
        _ if modules.contains_key(&[here, std::slice::from_ref(first)].concat()) => here.to_vec(),
        // Another crate (`std`, `hyper`), or an item in scope.
        _ => return None,
    };
    full.extend(
        path.iter()
            .skip_while(|s| matches!(s.as_str(), "crate" | "self" | "super"))
            .filter(|s| *s != "self")
            .cloned(),
    );
    if full.is_empty() {
        return None;
    }
    if external.contains(&full[0].as_str()) {
        return Some(Import {
            module: Some(full[0].clone()),
            path: format!("crate::{}", full.join("::")),
            line,
        });
    }
    let reached = (0..=full.len())
        .rev()
        .find(|&n| modules.contains_key(&full[..n]))?;
    let module = (reached > 0).then(|| modules[&full[..reached]].clone());
    if module.as_deref() == Some(own) {
        return None;
    }
    Some(Import {
        module,
        path: format!("crate::{}", full.join("::")),
        line,
    })
}

/// `code` with comments, string and character literals blanked out (line breaks kept).
fn strip(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut nesting = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    nesting += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    nesting -= 1;
                    i += 2;
                    if nesting == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('#' | '"')) && !prev_is_ident(&chars, i) {
            // A raw string: r"…", r#"…"#.
            let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            i += hashes + 2;
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat('#').take(hashes))
                .collect();
            while i < chars.len() && !chars[i..].starts_with(&close) {
                out.push(blank(chars[i]));
                i += 1;
            }
            i += close.len();
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&c) = chars.get(i) {
                    out.push(blank(c));
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{7f}'), or a lifetime ('a), left as is.
            let end = if next == Some('\\') {
                // The escaped character is at i + 2, whatever it is (`'\''`).
                chars[i + 3..]
                    .iter()
                    .position(|&c| c == '\'')
                    .map(|p| i + 3 + p)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => i = end + 1,
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

fn is_ident(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Identifiers, `::`, and every other character as a token of its own, with its line.
fn tokenize(code: &str) -> Vec<(String, usize)> {
    let mut tokens = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_alphanumeric() || c == '_' {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                tokens.push((chars[start..i].iter().collect(), n + 1));
            } else if c == ':' && chars.get(i + 1) == Some(&':') {
                tokens.push(("::".to_owned(), n + 1));
                i += 2;
            } else {
                if !c.is_whitespace() {
                    tokens.push((c.to_string(), n + 1));
                }
                i += 1;
            }
        }
    }
    tokens
}

/// A cycle of the import graph, as the modules along it, if there is one.
fn find_cycle(graph: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, Vec<String>>,
        done: &mut Vec<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.iter().any(|n| n == node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.push(node.to_owned());
        None
    }
    let mut done = Vec::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

/// The modules the `# Layout` section of `lib.rs` lists, in order: the first `name` (or
/// [`name`]) of each list item, `::` read as `/`.
fn layout_modules(lib: &str) -> Vec<String> {
    lib.lines()
        .map_while(|line| line.strip_prefix("//!"))
        .skip_while(|line| line.trim() != "# Layout")
        .skip(1)
        .take_while(|line| !line.trim_start().starts_with(['#', '`']))
        .filter_map(|line| {
            let item = line.trim_start().strip_prefix("- ")?;
            let name = item.trim_start_matches('[').strip_prefix('`')?;
            let name = &name[..name.find('`')?];
            Some(name.replace("::", "/"))
        })
        .collect()
}
