//! Record the git commit the toolkit is built from, for the evidence manifest.
//!
//! `git rev-parse HEAD` first; when git is missing or refuses (another user's checkout,
//! a sandbox without PATH), the commit is read from `.git/HEAD` and its ref file or
//! `packed-refs` directly, so the evidence does not lose its tool version.
use std::path::{Path, PathBuf};
use std::process::Command;

fn git_dir() -> Option<PathBuf> {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let mut dir = PathBuf::from(manifest);
    loop {
        let g = dir.join(".git");
        if g.is_dir() {
            return Some(g);
        }
        if !dir.pop() {
            return None;
        }
    }
}

fn sha_from_files(git: &Path) -> Option<(String, Option<PathBuf>)> {
    let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(r) = head.strip_prefix("ref: ") else {
        return Some((head.to_string(), None));
    };
    let ref_file = git.join(r);
    if let Ok(s) = std::fs::read_to_string(&ref_file) {
        return Some((s.trim().to_string(), Some(ref_file)));
    }
    let packed = std::fs::read_to_string(git.join("packed-refs")).ok()?;
    packed
        .lines()
        .find_map(|l| l.strip_suffix(r).map(|s| s.trim().to_string()))
        .map(|s| (s, None))
}

fn main() {
    let git = git_dir();
    let from_cmd = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let from_files = git.as_deref().and_then(sha_from_files);
    let sha = from_cmd
        .clone()
        .or_else(|| from_files.as_ref().map(|(s, _)| s.clone()))
        .filter(|s| s.len() >= 7 && s.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| "unknown".to_string());
    // Dirty only when git itself could tell.
    let dirty = from_cmd.is_some()
        && Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .output()
            .ok()
            .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    let sha = if dirty && sha != "unknown" {
        format!("{sha}-dirty")
    } else {
        sha
    };
    if sha == "unknown" {
        println!("cargo:warning=record: git commit unknown (no git and no readable .git): evidence will say `unknown`");
    }
    println!("cargo:rustc-env=RTVIRT_GIT_SHA={sha}");
    if let Some(g) = &git {
        println!("cargo:rerun-if-changed={}", g.join("HEAD").display());
        println!("cargo:rerun-if-changed={}", g.join("index").display());
        if let Some((_, Some(ref_file))) = &from_files {
            println!("cargo:rerun-if-changed={}", ref_file.display());
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
