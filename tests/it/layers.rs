//! The crate's top-level modules form layers (CI check): each may use the modules below it in
//! the list in `src/lib.rs` ("Layers, top to bottom"), never one above, so no import cycle can
//! form and the documented map cannot drift from the code.
//!
//! Read from the source, with a small Rust lexer (comments, strings and char literals skipped):
//! every `crate::X` path (`use crate::X`, `crate::X::f()`, grouped `use crate::{X, Y::z}`) and
//! every `super::` chain that climbs to the crate root, in every file the module tree reaches from
//! `src/lib.rs`. Test code is left out: `#[cfg(test)]` modules (inline or in their own files) and
//! `#[cfg(test)]` items. A cycle is printed as one, with the file and line behind each arrow.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A token of Rust source, with what the check needs and nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

/// Tokens with their line numbers. Comments, string, byte-string, raw-string and char literals
/// produce nothing; lifetimes produce their name (harmless).
fn lex(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut out) = (0, 1, Vec::new());
    let at = |k: usize| c.get(k).copied().unwrap_or('\0');
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
        } else if let Some(end) = raw_string_end(&c, i) {
            line += c[i..end].iter().filter(|&&x| x == '\n').count();
            i = end;
        } else if ch == '"' || (ch == 'b' && at(i + 1) == '"') {
            i += if ch == 'b' { 2 } else { 1 };
            while i < c.len() && c[i] != '"' {
                let escape = c[i] == '\\';
                line += usize::from(c[i] == '\n' || (escape && at(i + 1) == '\n'));
                i += if escape { 2 } else { 1 };
            }
            i += 1;
        } else if ch == '\'' || (ch == 'b' && at(i + 1) == '\'') {
            let q = if ch == 'b' { i + 1 } else { i };
            if at(q + 1) == '\\' {
                i = q + 3; // past the backslash and the escaped character
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(q + 2) == '\'' {
                i = q + 3;
            } else {
                i = q + 1; // a lifetime: its name is lexed as an identifier
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(c[start..i].iter().collect()), line));
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
        } else if ch == ':' && at(i + 1) == ':' {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// The end of a raw (byte) string starting at `i` (`r"…"`, `r#"…"#`, `br"…"`), if one does.
fn raw_string_end(c: &[char], i: usize) -> Option<usize> {
    let mut k = i;
    if c.get(k) == Some(&'b') {
        k += 1;
    }
    if c.get(k) != Some(&'r') || (i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_')) {
        return None;
    }
    k += 1;
    let hashes = c[k..].iter().take_while(|&&x| x == '#').count();
    k += hashes;
    if c.get(k) != Some(&'"') {
        return None;
    }
    k += 1;
    while k < c.len() {
        if c[k] == '"' && c[k + 1..].iter().take(hashes).filter(|&&x| x == '#').count() == hashes && c.len() >= k + 1 + hashes {
            return Some(k + 1 + hashes);
        }
        k += 1;
    }
    Some(c.len())
}

/// A path into the crate found in one file.
#[derive(Debug, Clone)]
struct Ref {
    /// The top-level name the path starts with (`routing` in `crate::routing::decide`).
    name: String,
    line: usize,
    /// The path as written, shortened.
    text: String,
}

/// What one file says: its paths into the crate and the (non-test) modules it declares.
#[derive(Debug, Default)]
struct FileScan {
    refs: Vec<Ref>,
    children: Vec<String>,
}

fn is_ident(t: Option<&(Tok, usize)>, s: &str) -> bool {
    matches!(t, Some((Tok::Ident(x), _)) if x == s)
}

fn is_punct(t: Option<&(Tok, usize)>, ch: char) -> bool {
    matches!(t, Some((Tok::Punct(x), _)) if *x == ch)
}

/// Whether the attribute at `i` (`#[...]`) is `#[cfg(test)]` or `#[cfg(all(test, ...))]`.
fn is_cfg_test(t: &[(Tok, usize)], i: usize) -> bool {
    let g = |k: usize| t.get(i + k);
    is_punct(g(0), '#')
        && is_punct(g(1), '[')
        && is_ident(g(2), "cfg")
        && is_punct(g(3), '(')
        && ((is_ident(g(4), "test") && is_punct(g(5), ')')) || (is_ident(g(4), "all") && is_punct(g(5), '(') && is_ident(g(6), "test")))
}

/// The index after the bracketed or braced group opening at `i`.
fn skip_group(t: &[(Tok, usize)], i: usize) -> usize {
    let mut depth = 0usize;
    for (k, (tok, _)) in t.iter().enumerate().skip(i) {
        match tok {
            Tok::Punct('[' | '{' | '(') => depth += 1,
            Tok::Punct(']' | '}' | ')') => {
                depth -= 1;
                if depth == 0 {
                    return k + 1;
                }
            }
            _ => {}
        }
    }
    t.len()
}

/// The index after the item that starts at `i` (its attributes, then up to its `;` or through
/// its braced body).
fn skip_item(t: &[(Tok, usize)], mut i: usize) -> usize {
    while is_punct(t.get(i), '#') && is_punct(t.get(i + 1), '[') {
        i = skip_group(t, i + 1);
    }
    while i < t.len() {
        match t[i].0 {
            Tok::Punct(';') => return i + 1,
            Tok::Punct('{') => return skip_group(t, i),
            Tok::Punct('(' | '[') => i = skip_group(t, i),
            _ => i += 1,
        }
    }
    i
}

/// The first names of the path that starts at `i` (just after `crate::`): one, or one per item
/// of a group (`{a, b::c, d::{e}}` gives a, b, d). `self` and globs name nothing.
fn path_heads(t: &[(Tok, usize)], i: usize) -> Vec<String> {
    match t.get(i) {
        Some((Tok::Ident(name), _)) => vec![name.clone()],
        Some((Tok::Punct('{'), _)) => {
            let (mut heads, mut depth, mut expect) = (Vec::new(), 0usize, true);
            for (tok, _) in &t[i..] {
                match tok {
                    Tok::Punct('{') => depth += 1,
                    Tok::Punct('}') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Tok::Punct(',') if depth == 1 => expect = true,
                    Tok::Ident(name) if depth == 1 && expect => {
                        if name != "self" {
                            heads.push(name.clone());
                        }
                        expect = false;
                    }
                    _ => expect = false,
                }
            }
            heads
        }
        _ => Vec::new(),
    }
}

/// The path at `from` as written (to its end, or 80 characters).
fn path_text(t: &[(Tok, usize)], from: usize) -> String {
    let (mut s, mut depth) = (String::new(), 0usize);
    for (k, (tok, _)) in t.iter().enumerate().skip(from) {
        match tok {
            // A group follows `::`; a brace after a name is a struct literal or a block.
            Tok::Punct('{') if t[k - 1].0 != Tok::PathSep => break,
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => depth = depth.saturating_sub(1),
            Tok::Punct(',') if depth == 0 => break,
            _ => {}
        }
        match tok {
            Tok::Ident(x) => {
                if s.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                    s.push(' ');
                }
                s.push_str(x);
            }
            Tok::PathSep => s.push_str("::"),
            Tok::Punct(c @ ('{' | '}' | '*')) => s.push(*c),
            Tok::Punct(',') => s.push_str(", "),
            Tok::Punct(_) => break,
        }
        if s.len() > 80 {
            s.push('…');
            break;
        }
    }
    s
}

/// Scans one file of module `module` (`["proxy", "handle"]` for `src/proxy/handle.rs`).
fn scan(src: &str, module: &[String]) -> FileScan {
    let t = lex(src);
    let mut out = FileScan::default();
    let (mut i, mut depth, mut inline): (usize, usize, Vec<(String, usize)>) = (0, 0, Vec::new());
    while i < t.len() {
        if is_cfg_test(&t, i) {
            i = skip_item(&t, i);
            continue;
        }
        match &t[i].0 {
            Tok::Ident(kw) if kw == "mod" => {
                if let Some((Tok::Ident(name), _)) = t.get(i + 1) {
                    if is_punct(t.get(i + 2), ';') {
                        out.children.push(name.clone());
                    } else if is_punct(t.get(i + 2), '{') {
                        inline.push((name.clone(), depth));
                    }
                }
            }
            Tok::Ident(kw) if kw == "crate" && t.get(i + 1).is_some_and(|x| x.0 == Tok::PathSep) && !matches!(i.checked_sub(1).and_then(|p| t.get(p)), Some((Tok::PathSep, _))) => {
                for name in path_heads(&t, i + 2) {
                    out.refs.push(Ref { name, line: t[i].1, text: path_text(&t, i) });
                }
            }
            Tok::Ident(kw) if kw == "super" && !matches!(i.checked_sub(1).and_then(|p| t.get(p)), Some((Tok::PathSep, _))) => {
                let mut k = i;
                let mut ups = 0;
                while is_ident(t.get(k), "super") && t.get(k + 1).is_some_and(|x| x.0 == Tok::PathSep) {
                    ups += 1;
                    k += 2;
                }
                // A chain that climbs to the crate root names a top-level module next.
                if ups > 0 && ups == module.len() + inline.len() {
                    for name in path_heads(&t, k) {
                        out.refs.push(Ref { name, line: t[i].1, text: path_text(&t, i) });
                    }
                }
                i = k.max(i + 1);
                continue;
            }
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// `pub use app::Gateway;` in the crate root: `Gateway` stands for `app`.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let t = lex(lib);
    let mut map = BTreeMap::new();
    for (i, (tok, _)) in t.iter().enumerate() {
        if *tok != Tok::Ident("use".into()) {
            continue;
        }
        let Some((Tok::Ident(module), _)) = t.get(i + 1) else { continue };
        let end = t[i..].iter().position(|x| x.0 == Tok::Punct(';')).map_or(t.len(), |p| i + p);
        if let Some((Tok::Ident(last), _)) = end.checked_sub(1).and_then(|e| t.get(e)) {
            map.insert(last.clone(), module.clone());
        }
    }
    map
}

/// Every arrow between top-level modules: from -> to -> where (file, line, path).
type Graph = BTreeMap<String, BTreeMap<String, Vec<(String, usize, String)>>>;

/// The crate's top-level modules (declared in `lib.rs`, test modules aside) and the arrows
/// between them, read from every file of the module tree.
fn read_crate(src: &Path) -> (Vec<String>, Graph) {
    let lib_text = std::fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let modules = scan(&lib_text, &[]).children;
    let reexports = root_reexports(&lib_text);
    let resolve = |name: &str| if modules.iter().any(|m| m == name) { Some(name.to_owned()) } else { reexports.get(name).filter(|m| modules.contains(m)).cloned() };
    let mut graph = Graph::new();
    let mut queue: Vec<(PathBuf, Vec<String>)> = modules.iter().map(|m| (module_file(src, m), vec![m.clone()])).collect();
    let mut seen = 0;
    while let Some((file, module)) = queue.pop() {
        seen += 1;
        assert!(seen < 10_000, "module tree too large or circular");
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let found = scan(&text, &module);
        let rel = file.strip_prefix(src.parent().unwrap_or(src)).unwrap_or(&file).display().to_string();
        for r in found.refs {
            let Some(to) = resolve(&r.name).filter(|to| *to != module[0]) else { continue };
            graph.entry(module[0].clone()).or_default().entry(to).or_default().push((rel.clone(), r.line, r.text));
        }
        let dir = if file.file_name().is_some_and(|n| n == "mod.rs") { file.parent().unwrap_or(src).to_path_buf() } else { file.with_extension("") };
        for child in found.children {
            let mut path = module.clone();
            path.push(child.clone());
            queue.push((module_file(&dir, &child), path));
        }
    }
    (modules, graph)
}

/// `dir/name.rs`, or `dir/name/mod.rs`.
fn module_file(dir: &Path, name: &str) -> PathBuf {
    let flat = dir.join(format!("{name}.rs"));
    if flat.exists() {
        flat
    } else {
        dir.join(name).join("mod.rs")
    }
}

/// The layer list of `src/lib.rs`: the first word of each line of the `text` block after the
/// line naming "Layers, top to bottom".
fn documented_layers(lib: &str) -> Vec<String> {
    let mut lines = lib.lines().map(|l| l.trim_start_matches("//!").trim());
    assert!(lines.any(|l| l.contains("Layers, top to bottom")), "src/lib.rs documents no \"Layers, top to bottom\"");
    let mut lines = lines.skip_while(|l| !l.starts_with("```"));
    assert!(lines.next().is_some(), "src/lib.rs: the layer list is not a ``` block");
    lines.take_while(|l| !l.starts_with("```")).filter_map(|l| l.split_whitespace().next().map(str::to_owned)).collect()
}

/// Every cycle of `graph`, one per strongly connected component of several modules (the knot
/// of modules that all reach each other): the modules of a shortest cycle in arrow order, the
/// first name the smallest, and the whole knot.
fn cycles(graph: &Graph) -> Vec<(Vec<String>, BTreeSet<String>)> {
    let nodes: BTreeSet<&String> = graph.keys().chain(graph.values().flat_map(BTreeMap::keys)).collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::from([from.clone()]);
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for next in graph.get(&n).into_iter().flat_map(BTreeMap::keys) {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> = nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut found = Vec::new();
    for n in &nodes {
        if done.contains(*n) {
            continue;
        }
        let component: BTreeSet<String> = reaches[n].iter().filter(|m| reaches[m].contains(*n)).cloned().collect();
        done.extend(component.iter().cloned());
        if component.len() > 1 {
            found.push((shortest_cycle(graph, n, &component), component));
        }
    }
    found
}

/// A shortest cycle through `start` inside `component` (breadth first).
fn shortest_cycle(graph: &Graph, start: &str, component: &BTreeSet<String>) -> Vec<String> {
    let mut parent: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.to_owned()]);
    while let Some(n) = queue.pop_front() {
        for next in graph.get(&n).into_iter().flat_map(BTreeMap::keys).filter(|m| component.contains(*m)) {
            if next == start {
                let mut path = vec![n.clone()];
                while let Some(p) = parent.get(path.last().expect("non-empty")) {
                    path.push(p.clone());
                }
                path.reverse();
                return path;
            }
            if !parent.contains_key(next) {
                parent.insert(next.clone(), n.clone());
                queue.push_back(next.clone());
            }
        }
    }
    vec![start.to_owned()]
}

/// One arrow with the first place that makes it.
fn arrow(graph: &Graph, from: &str, to: &str) -> String {
    let why = graph.get(from).and_then(|m| m.get(to)).and_then(|w| w.first());
    match why {
        Some((file, line, text)) => format!("  {from} -> {to}   ({file}:{line}: {text}{})", more(graph, from, to)),
        None => format!("  {from} -> {to}"),
    }
}

fn more(graph: &Graph, from: &str, to: &str) -> String {
    let n = graph.get(from).and_then(|m| m.get(to)).map_or(0, Vec::len);
    if n > 1 {
        format!("; {} more", n - 1)
    } else {
        String::new()
    }
}

/// Everything wrong with `graph` against `layers` (top to bottom) and the crate's `modules`.
fn problems(modules: &[String], layers: &[String], graph: &Graph) -> String {
    let mut report = String::new();
    for m in modules.iter().filter(|m| !layers.contains(m)) {
        let _ = writeln!(report, "module `{m}` is not in the layer list of src/lib.rs");
    }
    for l in layers.iter().filter(|l| !modules.contains(l)) {
        let _ = writeln!(report, "the layer list of src/lib.rs names `{l}`, which is no module");
    }
    for (cycle, knot) in cycles(graph) {
        let _ = writeln!(report, "import cycle: {} -> {}", cycle.join(" -> "), cycle[0]);
        if knot.len() > cycle.len() {
            let _ = writeln!(report, "  (one of the cycles among {})", knot.into_iter().collect::<Vec<_>>().join(", "));
        }
        for (k, from) in cycle.iter().enumerate() {
            let _ = writeln!(report, "{}", arrow(graph, from, &cycle[(k + 1) % cycle.len()]));
        }
    }
    let pos = |m: &str| layers.iter().position(|l| l == m);
    for (from, tos) in graph {
        for to in tos.keys() {
            if let (Some(a), Some(b)) = (pos(from), pos(to)) {
                if b < a {
                    let _ = writeln!(report, "`{from}` uses `{to}`, which is above it in the layer list:\n{}", arrow(graph, from, to));
                }
            }
        }
    }
    report
}

#[test]
fn the_crate_modules_form_layers_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let layers = documented_layers(&lib);
    let (modules, graph) = read_crate(&src);
    assert!(modules.len() >= 10 && graph.len() >= 10, "too little found: {modules:?} {graph:?}");
    let report = problems(&modules, &layers, &graph);
    assert!(report.is_empty(), "the modules of src/ do not form the layers of src/lib.rs:\n{report}");
}

#[test]
fn the_reader_sees_every_form_of_a_crate_path_and_skips_test_code() {
    let src = r##"
        //! Doc: crate::doc_comment is no import.
        use crate::a::X;
        use crate::{b, self, c::d, e::{f, g}};
        use std::collections::HashMap;
        pub(crate) fn h() -> u8 { crate::h::f(); let _ = '{'; let _ = "crate::in_string"; 0 }
        fn w() { let _ = b'}'; let _ = '\''; let _ = "a \" crate::in_escaped \
            b"; let _ = r#"crate::raw"#; crate::w::x(); }
        fn z<'a>(s: &'a str, t: crate::z::T, u: u8) { super::super::i::J; super::not_root::K; }
        /* crate::block_comment */
        mod child;
        #[cfg(test)]
        mod tests2;
        #[cfg(test)]
        mod tests { use crate::t::T; #[test] fn q() { crate::t2::f() } }
        #[cfg(test)]
        #[allow(dead_code)]
        fn helper() { crate::u::v() }
        mod inline { fn f() { super::super::super::k::L; } }
        fn after() { crate::after::f() }
        mod tests3 { use crate::not_cfg_test::M; }
    "##;
    let found = scan(src, &["m".to_owned(), "n".to_owned()]);
    let names: BTreeSet<&str> = found.refs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["a", "b", "c", "e", "h", "w", "i", "k", "after", "not_cfg_test", "z"]));
    assert_eq!(found.children, ["child"]);
    let grouped = found.refs.iter().find(|r| r.name == "e").expect("e");
    assert_eq!((grouped.line, grouped.text.as_str()), (4, "crate::{b, self, c::d, e::{f, g}}"));
    assert_eq!(found.refs.iter().find(|r| r.name == "z").map(|r| r.text.as_str()), Some("crate::z::T"));
    let after = found.refs.iter().find(|r| r.name == "after").expect("after");
    assert_eq!(after.line, 20, "lines counted through strings and comments");
}

#[test]
fn a_cycle_is_found_and_printed_with_its_evidence() {
    let mut graph = Graph::new();
    for (from, to) in [("config", "calls"), ("calls", "store"), ("store", "config"), ("store", "phone"), ("http", "config")] {
        graph.entry(from.into()).or_default().entry(to.into()).or_default().push((format!("src/{from}.rs"), 7, format!("crate::{to}::X")));
    }
    let layers: Vec<String> = ["http", "calls", "store", "phone", "config"].map(String::from).to_vec();
    let found = cycles(&graph);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, ["calls", "store", "config"]);
    let report = problems(&layers, &layers, &graph);
    assert!(report.contains("import cycle: calls -> store -> config -> calls"), "{report}");
    assert!(report.contains("  config -> calls   (src/config.rs:7: crate::calls::X)"), "{report}");
    assert!(report.contains("`config` uses `calls`, which is above it"), "{report}");
    assert!(!report.contains("`store` uses `phone`"), "a downward arrow is fine: {report}");

    let acyclic: Graph = graph.into_iter().filter(|(from, _)| from != "config").collect();
    assert!(cycles(&acyclic).is_empty());
    assert!(problems(&layers, &layers, &acyclic).is_empty());
    let missing = problems(&layers, &layers[1..], &acyclic);
    assert!(missing.contains("module `http` is not in the layer list"), "{missing}");
}

