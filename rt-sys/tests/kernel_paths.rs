//! No literal kernel path outside rt-sys (STYLE.md rule 2): every `/sys`, `/proc` and
//! `/dev` file is named in rt-sys, behind a `SysRoot`, so tests run on fake trees and a
//! reader has one place to look.
//!
//! This test reads the source of every other crate of the workspace and fails on a string
//! literal that holds `/sys/`, `/proc/` or `/dev/`, or starts with `sys/`, `proc/` or
//! `dev/` (a path relative to the root). Comments and tests are not checked: the unit
//! tests at the end of a file (`#[cfg(test)]`), files under `tests/`, and test-only
//! modules (a file starting with `#![cfg(...test...)]`). `/dev/null` is no kernel
//! interface; text that only runs elsewhere (a guest's init script) is marked with a
//! `// kernel-path-ok: why` comment on the line before it.

use std::path::{Path, PathBuf};

/// The string literals of Rust source `src` with their 1-based line, comments skipped.
fn literals(src: &str) -> Vec<(usize, String)> {
    let b = src.as_bytes();
    let (mut i, mut line, mut out) = (0usize, 1usize, Vec::new());
    while i < b.len() {
        match b[i] {
            b'\n' => line += 1,
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    line += usize::from(b[i] == b'\n');
                    i += 1;
                }
                i += 2;
                continue;
            }
            // A char literal such as '"' (not a lifetime: those have no closing quote).
            b'\''
                if b.get(i + 2) == Some(&b'\'')
                    || (b.get(i + 1) == Some(&b'\\') && b.get(i + 3) == Some(&b'\'')) =>
            {
                i += if b[i + 1] == b'\\' { 4 } else { 3 };
                continue;
            }
            b'r' if matches!(b.get(i + 1), Some(b'"' | b'#'))
                && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) =>
            {
                let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
                if b.get(i + 1 + hashes) == Some(&b'"') {
                    let start = i + 2 + hashes;
                    let close = format!("\"{}", "#".repeat(hashes));
                    let end = src[start..].find(&close).map_or(b.len(), |e| start + e);
                    out.push((line, src[start..end].to_string()));
                    line += src[start..end].matches('\n').count();
                    i = end + close.len();
                    continue;
                }
            }
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                let text = &src[start..j.min(b.len())];
                out.push((line, text.to_string()));
                line += text.matches('\n').count();
                i = j + 1;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

fn is_kernel_path(lit: &str) -> bool {
    let lit = lit.replace("/dev/null", "");
    ["/sys/", "/proc/", "/dev/"].iter().any(|p| lit.contains(p))
        || ["sys/", "proc/", "dev/"].iter().any(|p| lit.starts_with(p))
}

/// The part of `src` that is production code: up to the unit tests; nothing for a
/// test-only module.
fn production(src: &str) -> &str {
    let head = src.trim_start();
    if head.starts_with("#![cfg(") && head.lines().next().is_some_and(|l| l.contains("test")) {
        return "";
    }
    src.find("\n#[cfg(test)]").map_or(src, |i| &src[..i])
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_scanner_finds_paths_in_code_and_skips_comments_and_tests() {
    let src = "// \"/sys/in/a/comment\"\nfn f() { g(\"proc/sys/x\"); h(r#\"/dev/kvm\"#); k('\"'); }\n/* \"/sys/x\" */\nlet s = \"sys info\";\n#[cfg(test)]\nmod tests { \"/sys/ok\" }\n";
    let hits: Vec<(usize, String)> = literals(production(src))
        .into_iter()
        .filter(|(_, l)| is_kernel_path(l))
        .collect();
    assert_eq!(
        hits,
        [(2, "proc/sys/x".to_string()), (2, "/dev/kvm".to_string())]
    );
    assert_eq!(
        production("#![cfg(any(test, feature = \"testing\"))]\nfn x() {}"),
        ""
    );
}

#[test]
fn no_literal_kernel_path_outside_rt_sys() {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for e in std::fs::read_dir(ws).unwrap().flatten() {
        let src = e.path().join("src");
        if e.file_name() != "rt-sys" && src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    assert!(
        files.len() > 20,
        "found only {} source files under {}",
        files.len(),
        ws.display()
    );
    let mut found = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (line, lit) in literals(production(&text)) {
            let marked = line >= 2
                && lines[line - 2]
                    .trim_start()
                    .starts_with("// kernel-path-ok:");
            if is_kernel_path(&lit) && !marked {
                let rel = f.strip_prefix(ws).unwrap_or(f).display().to_string();
                found.push(format!("{rel}:{line}: {lit:?}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "kernel paths outside rt-sys (name them in rt-sys and use the constant or reader):\n{}",
        found.join("\n")
    );
}
