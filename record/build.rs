//! Record the git commit the toolkit is built from, for the evidence manifest.
//!
//! `git rev-parse HEAD` first; when git is missing or refuses (another user's checkout,
//! a sandbox without PATH), the commit is read from `.git/HEAD` and its ref file or
//! `packed-refs` directly, so the evidence does not lose its tool version. A linked
//! worktree's `.git` is a file naming its git directory (refs live in the common one);
//! the build reruns when that HEAD, index or ref changes, so the sha is never stale.
use std::path::{Path, PathBuf};
use std::process::Command;

/// The git directory of the checkout (a linked worktree's `.git` is a file naming it) and
/// the common directory that holds refs and packed-refs (the same for a plain checkout).
fn git_dirs() -> Option<(PathBuf, PathBuf)> {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let mut dir = PathBuf::from(manifest);
    loop {
        let g = dir.join(".git");
        if g.is_dir() {
            return Some((g.clone(), g));
        }
        if let Some(linked) = std::fs::read_to_string(&g)
            .ok()
            .and_then(|t| t.trim().strip_prefix("gitdir: ").map(|p| dir.join(p)))
        {
            let common = std::fs::read_to_string(linked.join("commondir"))
                .map(|c| linked.join(c.trim()))
                .unwrap_or_else(|_| linked.clone());
            return Some((linked, common));
        }
        if !dir.pop() {
            return None;
        }
    }
}

fn sha_from_files(git: &Path, common: &Path) -> Option<(String, Option<PathBuf>)> {
    let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(r) = head.strip_prefix("ref: ") else {
        return Some((head.to_string(), None));
    };
    for ref_file in [git.join(r), common.join(r)] {
        if let Ok(s) = std::fs::read_to_string(&ref_file) {
            return Some((s.trim().to_string(), Some(ref_file)));
        }
    }
    let packed = std::fs::read_to_string(common.join("packed-refs")).ok()?;
    packed
        .lines()
        .find_map(|l| l.strip_suffix(r).map(|s| s.trim().to_string()))
        .map(|s| (s, None))
}

fn main() {
    let dirs = git_dirs();
    let from_cmd = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let from_files = dirs.as_ref().and_then(|(g, c)| sha_from_files(g, c));
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
    if let Some((g, c)) = &dirs {
        println!("cargo:rerun-if-changed={}", g.join("HEAD").display());
        println!("cargo:rerun-if-changed={}", g.join("index").display());
        println!("cargo:rerun-if-changed={}", c.join("packed-refs").display());
        if let Some((_, Some(ref_file))) = &from_files {
            println!("cargo:rerun-if-changed={}", ref_file.display());
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
