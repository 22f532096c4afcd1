//! The run directory: what rt-guest, can-sim (and the lab, for the host side) write and
//! `validation` reads.
//!
//! ```text
//! run-<utc>/manifest.json   ToolRuns, profile copy + sha256, environment, files + sha256
//! run-<utc>/probe.json      ProbeRecord
//! run-<utc>/can.json        CanRecord
//! run-<utc>/can.log         candump log
//! ```
//!
//! Every file is written to a temporary name with a random suffix, fsynced and renamed
//! (`rt_sys::safefile`), then its sha256 is entered in the manifest (itself written the
//! same way). Names are plain relative names ([`crate::fsafe`]); a directory on the way
//! that is a symlink is refused, never followed, and a symlink planted at the file's own
//! name is replaced, not written through. Reading opens every file beneath the run
//! directory without following symlinks, checks its size on the open descriptor and hashes
//! it while streaming. A run that is interrupted is marked `partial` by its producer, and a
//! tool run that never recorded its end counts as partial too.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::RecordError;
use crate::fsafe::{self, MAX_FILE_BYTES, MAX_RECORD_BYTES};
use crate::manifest::{from_json, FileEntry, Manifest, ProfileCopy, ToolRun};

/// Manifest file name.
pub const MANIFEST: &str = "manifest.json";
/// Probe record file name.
pub const PROBE: &str = "probe.json";
/// CAN record file name.
pub const CAN: &str = "can.json";
/// CAN candump log file name.
pub const CAN_LOG: &str = "can.log";

/// Now, RFC 3339 UTC with nanoseconds.
pub fn now_utc() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.to_string())
}

/// A directory name for a new run: `run-YYYYmmddTHHMMSSZ`.
pub fn new_run_name() -> String {
    let now = time::OffsetDateTime::now_utc();
    let f = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    format!("run-{}", now.format(&f).unwrap_or_default())
}

/// sha256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Write `bytes` to `path` atomically (see [`rt_sys::safefile::write_atomic`]: random
/// temp name created exclusively in the same directory, fsync, rename, fsync the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RecordError> {
    rt_sys::safefile::write_atomic(path, bytes).map_err(from_write)
}

fn from_write(e: rt_sys::safefile::WriteError) -> RecordError {
    RecordError::Io {
        path: e.path,
        source: e.source,
    }
}

/// Create the directories `name` needs inside `run`, refusing any that is a symlink or
/// not a directory.
fn ensure_parents(run: &Path, name: &str) -> Result<(), RecordError> {
    let mut dir = run.to_path_buf();
    let comps: Vec<&str> = name.split('/').collect();
    for c in &comps[..comps.len() - 1] {
        dir.push(c);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(RecordError::BadEntry {
                    run: run.to_path_buf(),
                    name: name.to_string(),
                    why: format!("{} is a symlink or not a directory", dir.display()),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&dir).map_err(RecordError::io(&dir))?;
            }
            Err(e) => return Err(RecordError::io(&dir)(e)),
        }
    }
    Ok(())
}

/// A writer that hashes and counts what goes through it.
struct Hashing<'a> {
    inner: &'a mut dyn Write,
    sha: Sha256,
    n: u64,
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.sha.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// An open run directory.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    manifest: Manifest,
    /// sha256 of `manifest.json` as read by [`RunDir::open`] (empty for a new run).
    manifest_sha256: String,
    /// Index of this process's ToolRun in `manifest.tools`.
    tool_index: Option<usize>,
}

impl RunDir {
    /// Open an existing run directory (reads and checks the manifest, see
    /// [`Manifest::parse`]).
    pub fn open(path: impl Into<PathBuf>) -> Result<RunDir, RecordError> {
        let path = path.into();
        let (mut f, len) = match fsafe::open_beneath(&path, MANIFEST) {
            Ok(x) => x,
            Err(RecordError::Missing { .. }) => return Err(RecordError::NotARun { path }),
            Err(RecordError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(RecordError::NotARun { path })
            }
            Err(e) => return Err(e),
        };
        let mpath = path.join(MANIFEST);
        let bytes = fsafe::read_capped(&mut f, len, MAX_RECORD_BYTES, &mpath)?;
        let manifest = Manifest::parse(&bytes, &mpath)?;
        Ok(RunDir {
            path,
            manifest,
            manifest_sha256: sha256_hex(&bytes),
            tool_index: None,
        })
    }

    /// Open `path` if it is a run directory, or create it with a fresh manifest.
    pub fn open_or_create(path: impl Into<PathBuf>) -> Result<RunDir, RecordError> {
        let path = path.into();
        if fs::symlink_metadata(path.join(MANIFEST)).is_ok() {
            return RunDir::open(path);
        }
        fs::create_dir_all(&path).map_err(RecordError::io(&path))?;
        let run_id = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hostname = rt_sys::kernel::hostname(&rt_sys::SysRoot::live()).unwrap_or_default();
        let rd = RunDir {
            path,
            manifest: Manifest::new(run_id, now_utc(), hostname),
            manifest_sha256: String::new(),
            tool_index: None,
        };
        rd.save()?;
        Ok(rd)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The manifest as last saved or modified.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// sha256 of `manifest.json` as [`RunDir::open`] read it.
    pub fn manifest_sha256(&self) -> &str {
        &self.manifest_sha256
    }

    /// Mutable manifest (call [`RunDir::save`] after changing it).
    pub fn manifest_mut(&mut self) -> &mut Manifest {
        &mut self.manifest
    }

    /// Record that `tool` (name, version, git sha) starts writing into this run with `args`.
    pub fn begin_tool(
        &mut self,
        tool: &str,
        version: &str,
        git_sha: &str,
        args: Vec<String>,
    ) -> Result<(), RecordError> {
        self.manifest.tools.push(ToolRun {
            tool: tool.to_string(),
            version: version.to_string(),
            git_sha: git_sha.to_string(),
            args,
            start: now_utc(),
            end: None,
            partial: false,
            partial_reason: None,
        });
        self.tool_index = Some(self.manifest.tools.len() - 1);
        self.save()
    }

    /// Record the end of this process's tool run; `partial` with a reason when interrupted.
    pub fn end_tool(&mut self, partial: Option<String>) -> Result<(), RecordError> {
        if let Some(i) = self.tool_index {
            let t = &mut self.manifest.tools[i];
            t.end = Some(now_utc());
            t.partial = partial.is_some();
            t.partial_reason = partial;
        }
        self.save()
    }

    /// Keep a verbatim copy of the profile (once per run; the first one wins).
    pub fn set_profile(&mut self, name: &str, origin: &str, text: &str) -> Result<(), RecordError> {
        if self.manifest.profile.is_none() {
            self.manifest.profile = Some(ProfileCopy {
                name: name.to_string(),
                origin: origin.to_string(),
                sha256: sha256_hex(text.as_bytes()),
                text: text.to_string(),
            });
        }
        self.save()
    }

    fn writer(&self) -> String {
        self.tool_index
            .map(|i| self.manifest.tools[i].tool.clone())
            .unwrap_or_else(|| "unknown".into())
    }

    /// Write a file of the run atomically and enter its sha256 in the manifest.
    pub fn write_file(&mut self, name: &str, bytes: &[u8]) -> Result<(), RecordError> {
        fsafe::check_entry_name(&self.path, name)?;
        ensure_parents(&self.path, name)?;
        write_atomic(&self.path.join(name), bytes)?;
        let entry = FileEntry {
            sha256: sha256_hex(bytes),
            bytes: bytes.len() as u64,
            written_by: self.writer(),
        };
        self.manifest.files.insert(name.to_string(), entry);
        self.save()
    }

    /// Copy `src_name` of the run `src` into this run as `name`, streamed (never whole in
    /// memory), checking the source's size and sha256 against its manifest on the way: a
    /// mismatch leaves nothing behind.
    pub fn copy_from(
        &mut self,
        name: &str,
        src: &RunDir,
        src_name: &str,
    ) -> Result<(), RecordError> {
        fsafe::check_entry_name(&self.path, name)?;
        let expected = src.entry(src_name)?.clone();
        let (file, spath) = src.open_sized(src_name, &expected)?;
        ensure_parents(&self.path, name)?;
        let mut sha = String::new();
        let mut n = 0;
        rt_sys::safefile::write_atomic_with(&self.path.join(name), 0o644, |w| {
            let mut hw = Hashing {
                inner: w,
                sha: Sha256::new(),
                n: 0,
            };
            io::copy(&mut file.take(expected.bytes.saturating_add(1)), &mut hw)?;
            sha = hex::encode(std::mem::take(&mut hw.sha).finalize());
            n = hw.n;
            if sha != expected.sha256 || n != expected.bytes {
                return Err(io::Error::other("changed while copied"));
            }
            Ok(())
        })
        .map_err(|e| {
            if sha.is_empty() || (sha == expected.sha256 && n == expected.bytes) {
                from_write(e)
            } else {
                RecordError::Tampered {
                    path: spath.clone(),
                    expected: expected.sha256.clone(),
                    actual: sha.clone(),
                }
            }
        })?;
        let entry = FileEntry {
            sha256: sha,
            bytes: n,
            written_by: self.writer(),
        };
        self.manifest.files.insert(name.to_string(), entry);
        self.save()
    }

    /// Serialize `value` as pretty JSON into `name`.
    pub fn write_json<T: Serialize>(&mut self, name: &str, value: &T) -> Result<(), RecordError> {
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| RecordError::Json {
            path: self.path.join(name),
            message: e.to_string(),
        })?;
        bytes.push(b'\n');
        self.write_file(name, &bytes)
    }

    fn entry(&self, name: &str) -> Result<&FileEntry, RecordError> {
        self.manifest
            .files
            .get(name)
            .ok_or_else(|| RecordError::NotListed {
                path: self.path.join(name),
            })
    }

    /// Open a listed file beneath the run and check its size on the open descriptor.
    fn open_sized(
        &self,
        name: &str,
        entry: &FileEntry,
    ) -> Result<(fs::File, PathBuf), RecordError> {
        let (file, len) = fsafe::open_beneath(&self.path, name)?;
        let p = self.path.join(name);
        if len > MAX_FILE_BYTES {
            return Err(RecordError::TooLarge {
                path: p,
                bytes: len,
                limit: MAX_FILE_BYTES,
            });
        }
        if len != entry.bytes {
            return Err(RecordError::Size {
                how: if len < entry.bytes {
                    "truncated"
                } else {
                    "extended"
                },
                path: p,
                actual: len,
                expected: entry.bytes,
            });
        }
        Ok((file, p))
    }

    /// Read and parse a JSON file of the run (listed, size and sha256 checked first).
    pub fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<T, RecordError> {
        let bytes = self.read_verified(name)?;
        from_json(&bytes, &self.path.join(name))
    }

    /// Read a listed file of the run (at most [`MAX_RECORD_BYTES`]) and check its size and
    /// sha256 against the manifest.
    pub fn read_verified(&self, name: &str) -> Result<Vec<u8>, RecordError> {
        let entry = self.entry(name)?;
        let (mut file, p) = self.open_sized(name, entry)?;
        let bytes = fsafe::read_capped(&mut file, entry.bytes, MAX_RECORD_BYTES, &p)?;
        let actual = sha256_hex(&bytes);
        if actual != entry.sha256 || bytes.len() as u64 != entry.bytes {
            return Err(RecordError::Tampered {
                path: p,
                expected: entry.sha256.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Check every file the manifest lists: a regular file beneath the run, the size
    /// recorded, the sha256 recorded (streamed, so a large log costs no memory).
    pub fn verify(&self) -> Result<(), RecordError> {
        for (name, entry) in &self.manifest.files {
            let (file, p) = self.open_sized(name, entry)?;
            let (actual, n) = fsafe::hash_stream(file, entry.bytes, &p)?;
            if actual != entry.sha256 || n != entry.bytes {
                return Err(RecordError::Tampered {
                    path: p,
                    expected: entry.sha256.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }

    /// Write the manifest (atomically), with its derived accelerator brought up to date.
    pub fn save(&self) -> Result<(), RecordError> {
        let mut m = self.manifest.clone();
        m.environment.accelerator = m.environment.derived_accelerator();
        let p = self.path.join(MANIFEST);
        let mut bytes = serde_json::to_vec_pretty(&m).map_err(|e| RecordError::Json {
            path: p.clone(),
            message: e.to_string(),
        })?;
        bytes.push(b'\n');
        write_atomic(&p, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn write_read_verify_and_catch_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run-1");
        let mut rd = RunDir::open_or_create(&run).unwrap();
        rd.begin_tool("rt-guest probe", "0.1.0", "abc", vec!["probe".into()])
            .unwrap();
        rd.set_profile("lab", "bundled", "Profile(name: \"lab\")")
            .unwrap();
        rd.write_file("can.log", b"(0.000000) can0 123#00\n")
            .unwrap();
        rd.end_tool(Some("SIGINT".into())).unwrap();

        let back = RunDir::open(&run).unwrap();
        assert!(back.manifest().partial());
        assert_eq!(
            back.manifest().files["can.log"].written_by,
            "rt-guest probe"
        );
        back.verify().unwrap();
        let sha = sha256_hex(&fs::read(run.join(MANIFEST)).unwrap());
        assert_eq!(back.manifest_sha256(), sha);

        fs::write(run.join("can.log"), b"(0.000000) can0 124#00\n").unwrap();
        let err = RunDir::open(&run).unwrap().verify().unwrap_err();
        assert!(matches!(err, RecordError::Tampered { .. }));
        assert!(err.to_string().contains("can.log"), "{err}");
        fs::write(run.join("can.log"), b"short").unwrap();
        let err = RunDir::open(&run).unwrap().verify().unwrap_err();
        assert!(err.to_string().contains("can.log was truncated"), "{err}");
    }

    #[test]
    fn second_tool_appends_to_the_same_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = RunDir::open_or_create(dir.path()).unwrap();
        a.begin_tool("rt-guest probe", "0.1.0", "x", vec![])
            .unwrap();
        a.write_file("probe.json", b"{}").unwrap();
        a.end_tool(None).unwrap();
        let mut b = RunDir::open_or_create(dir.path()).unwrap();
        b.begin_tool("can-sim run", "0.1.0", "x", vec![]).unwrap();
        b.write_file("can.json", b"{}").unwrap();
        b.end_tool(None).unwrap();
        let m = RunDir::open(dir.path()).unwrap().manifest().clone();
        assert_eq!(m.tools.len(), 2);
        assert_eq!(m.files.len(), 2);
        assert!(!m.partial());
    }

    #[test]
    fn missing_manifest_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = RunDir::open(dir.path()).unwrap_err();
        assert!(matches!(e, RecordError::NotARun { .. }), "{e}");
        assert!(e.to_string().contains("not a run directory"));
    }

    #[test]
    fn a_planted_symlink_directory_is_refused_when_writing() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let run = dir.path().join("run");
        let mut rd = RunDir::open_or_create(&run).unwrap();
        symlink(&outside, run.join("sources")).unwrap();
        let e = rd
            .write_file("sources/00.manifest.json", b"{}")
            .unwrap_err();
        assert!(matches!(e, RecordError::BadEntry { .. }), "{e}");
        assert!(e.to_string().contains("is a symlink"), "{e}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        // A symlink at the file's own name is replaced, the target untouched.
        fs::write(outside.join("victim"), b"precious").unwrap();
        symlink(outside.join("victim"), run.join("probe.json")).unwrap();
        rd.write_file("probe.json", b"{}").unwrap();
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"precious");
        let e = rd.write_file("../escape", b"x").unwrap_err();
        assert!(e.to_string().contains("leaves the run directory"), "{e}");
    }

    #[test]
    fn a_symlinked_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        RunDir::open_or_create(&a).unwrap();
        let b = dir.path().join("b");
        fs::create_dir(&b).unwrap();
        symlink(a.join(MANIFEST), b.join(MANIFEST)).unwrap();
        let e = RunDir::open(&b).unwrap_err();
        assert!(matches!(e, RecordError::BadEntry { .. }), "{e}");
    }

    #[test]
    fn copies_stream_and_check_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = RunDir::open_or_create(dir.path().join("a")).unwrap();
        a.write_file(CAN_LOG, b"(0.1) can1 0C0#00\n").unwrap();
        let a = RunDir::open(dir.path().join("a")).unwrap();
        let mut b = RunDir::open_or_create(dir.path().join("b")).unwrap();
        b.copy_from("sources/00-a.can.log", &a, CAN_LOG).unwrap();
        assert_eq!(
            b.manifest().files["sources/00-a.can.log"].sha256,
            a.manifest().files[CAN_LOG].sha256
        );
        RunDir::open(dir.path().join("b"))
            .unwrap()
            .verify()
            .unwrap();
        fs::write(dir.path().join("a").join(CAN_LOG), b"(0.1) can1 0C1#00\n").unwrap();
        let e = b
            .copy_from("sources/01-a.can.log", &a, CAN_LOG)
            .unwrap_err();
        assert!(matches!(e, RecordError::Tampered { .. }), "{e}");
        assert!(!dir.path().join("b/sources/01-a.can.log").exists());
        // Unlisted files are not part of the run.
        let e = a.read_verified("other.json").unwrap_err();
        assert!(matches!(e, RecordError::NotListed { .. }), "{e}");
    }
}
