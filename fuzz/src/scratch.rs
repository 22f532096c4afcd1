//! A scratch directory per fuzzing process (under `TMPDIR`: `lab/fuzz.sh` points it at
//! tmpfs where there is one): the targets that read files (run directories, journals)
//! write each input there first.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

/// The process's scratch directory, created on first use. libFuzzer exits without
/// running destructors, so `lab/fuzz.sh` runs the targets in a `TMPDIR` of its own and
/// removes it.
pub fn base() -> &'static Path {
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("rtvirt-fuzz-")
            .tempdir()
            .expect("scratch directory")
    })
    .path()
}

/// A fresh, empty directory `name` under [`base`].
pub fn fresh(name: &str) -> PathBuf {
    let p = base().join(name);
    match std::fs::remove_dir_all(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("cannot clear {}: {e}", p.display()),
    }
    std::fs::create_dir_all(&p).expect("scratch subdirectory");
    p
}
