//! Run records through everything that reads them: [`RunData::open`] (as `validation
//! verify` and `report export` do), the duplicate check, the profile copy, [`evaluate`],
//! every report format, and `validation merge`.
//!
//! An input is a *bundle*: one or more run directories as text. A line `=== NAME` starts
//! the file `NAME` of the current run (its content runs up to the newline before the next
//! `===` line, or before the end of the input); `=== @next` starts the next run (at most [`MAX_RUNS`]). `=== NAME -> TARGET`
//! makes `NAME` a symlink to `TARGET`, `=== NAME |fifo` a FIFO. Names that are not plain
//! relative names are not written (the manifest may still name anything). Unless its
//! header says `=== manifest.json raw`, the manifest is fixed up before it is written:
//! every entry it lists for a file of the bundle gets that file's sha256 and size, and
//! every profile copy (also in `sources/*.manifest.json`) the sha256 of its text, so
//! mutations reach the records and the evaluation instead of stopping at the hash check.
//! `fuzz/seeds/run_record/*.bundle` are real runs in this form (`fuzz/bundle.sh` makes one).
//!
//! Properties: an accepted manifest names only plain relative files and a profile copy
//! matching its hash, and its run id makes a plain file name; a run whose tool never ended is partial; a copy of an accepted run
//! under another run id is refused as the same run, by `report export` and by `merge`;
//! the JSON report is JSON and the HTML report holds no script; what `merge` writes reads
//! back, and is refused beside a run it holds.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};
use validation::evidence::{self, EvalOptions, EvidenceError, RunData};
use validation::report::{self, Format};

/// The most run directories one bundle makes.
pub const MAX_RUNS: usize = 3;

/// What a bundle section makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// A regular file with the section's content.
    File,
    /// A symlink to this target.
    Symlink(&'a str),
    /// A FIFO.
    Fifo,
}

/// One section of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section<'a> {
    /// Index of the run directory.
    pub run: usize,
    /// File name inside the run.
    pub name: &'a str,
    /// What it is.
    pub kind: Kind<'a>,
    /// `raw` was given: no fix-up.
    pub raw: bool,
    /// Content (files only).
    pub body: &'a [u8],
}

/// Split a bundle into its sections (see the module docs).
pub fn sections(data: &[u8]) -> Vec<Section<'_>> {
    let mut starts = Vec::new();
    if data.starts_with(b"=== ") {
        starts.push(0);
    }
    starts.extend(
        data.windows(5)
            .enumerate()
            .filter(|(_, w)| *w == b"\n=== ")
            .map(|(i, _)| i + 1),
    );
    // Every section ends with a newline that is not part of its content.
    let last = data.len() - usize::from(data.ends_with(b"\n"));
    let mut out = Vec::new();
    let mut run = 0;
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(last, |n| n - 1);
        let chunk = &data[s + 4..end.max(s + 4)];
        let (header, body) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], &chunk[i + 1..]),
            None => (chunk, &chunk[chunk.len()..]),
        };
        let Ok(header) = std::str::from_utf8(header) else {
            continue;
        };
        if header == "@next" {
            run += 1;
            continue;
        }
        if run >= MAX_RUNS {
            break;
        }
        let (name, kind, raw) = if let Some((n, t)) = header.split_once(" -> ") {
            (n, Kind::Symlink(t), false)
        } else if let Some(n) = header.strip_suffix(" |fifo") {
            (n, Kind::Fifo, false)
        } else if let Some(n) = header.strip_suffix(" raw") {
            (n, Kind::File, true)
        } else {
            (header, Kind::File, false)
        };
        out.push(Section {
            run,
            name,
            kind,
            raw,
            body,
        });
    }
    out
}

/// A name the harness writes: one or two plain components of `[A-Za-z0-9._-]`.
fn writable(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    name.len() <= 100
        && parts.len() <= 2
        && parts.iter().all(|c| {
            !c.is_empty()
                && *c != "."
                && *c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The profile copy's sha256 set to that of its text.
fn fix_profile(m: &mut Value) {
    if let Some(p) = m.get_mut("profile").and_then(Value::as_object_mut) {
        if let Some(text) = p.get("text").and_then(Value::as_str) {
            let sha = sha256_hex(text.as_bytes());
            p.insert("sha256".into(), Value::String(sha));
        }
    }
}

/// `body` fixed up as the module docs say, or as it is when it is not a JSON object.
fn fixed(body: &[u8], files: Option<&[(&str, Vec<u8>)]>) -> Vec<u8> {
    let Ok(mut m) = serde_json::from_slice::<Value>(body) else {
        return body.to_vec();
    };
    if !m.is_object() {
        return body.to_vec();
    }
    fix_profile(&mut m);
    if let (Some(files), Some(entries)) = (files, m.get_mut("files").and_then(Value::as_object_mut))
    {
        for (name, content) in files {
            if let Some(e) = entries.get_mut(*name).and_then(Value::as_object_mut) {
                e.insert("sha256".into(), Value::String(sha256_hex(content)));
                e.insert("bytes".into(), Value::from(content.len() as u64));
            }
        }
    }
    let mut out = serde_json::to_vec_pretty(&m).expect("a JSON value serializes");
    out.push(b'\n');
    out
}

fn make_parent(dir: &Path, name: &str) {
    if let Some(parent) = Path::new(name).parent() {
        std::fs::create_dir_all(dir.join(parent)).expect("scratch run subdirectory");
    }
}

/// Write the bundle's runs under `base` (`r0`, `r1`, ...); the run directories made.
pub fn write_bundle(data: &[u8], base: &Path) -> Vec<PathBuf> {
    let all = sections(data);
    let runs = all.iter().map(|s| s.run + 1).max().unwrap_or(0);
    let mut dirs = Vec::new();
    for run in 0..runs {
        let dir = base.join(format!("r{run}"));
        std::fs::create_dir_all(&dir).expect("scratch run directory");
        let mine: Vec<&Section> = all
            .iter()
            .filter(|s| s.run == run && writable(s.name))
            .collect();
        // Files first (source manifests get their profile hash fixed), then the manifest.
        let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
        for s in mine.iter().filter(|s| s.name != record::MANIFEST) {
            make_parent(&dir, s.name);
            let path = dir.join(s.name);
            if path.symlink_metadata().is_ok() {
                continue;
            }
            match s.kind {
                Kind::Symlink(t) => std::os::unix::fs::symlink(t, &path).expect("scratch symlink"),
                Kind::Fifo => nix_mkfifo(&path),
                Kind::File => {
                    let body = if !s.raw && s.name.ends_with(".manifest.json") {
                        fixed(s.body, None)
                    } else {
                        s.body.to_vec()
                    };
                    std::fs::write(&path, &body).expect("scratch run file");
                    files.push((s.name, body));
                }
            }
        }
        if let Some(m) = mine.iter().find(|s| s.name == record::MANIFEST) {
            let path = dir.join(record::MANIFEST);
            match m.kind {
                Kind::Symlink(t) => std::os::unix::fs::symlink(t, &path).expect("scratch symlink"),
                Kind::Fifo => nix_mkfifo(&path),
                Kind::File if m.raw => std::fs::write(&path, m.body).expect("scratch manifest"),
                Kind::File => {
                    std::fs::write(&path, fixed(m.body, Some(&files))).expect("scratch manifest")
                }
            }
        }
        dirs.push(dir);
    }
    dirs
}

fn nix_mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).expect("scratch FIFO");
}

/// One input.
pub fn run(data: &[u8]) {
    let base = crate::scratch::fresh("runs");
    let dirs = write_bundle(data, &base);
    let mut runs = Vec::new();
    for d in &dirs {
        match RunData::open(d) {
            Ok(r) => {
                crate::note("RunData::open", format_args!("{} accepted", d.display()));
                accepted(&r);
                runs.push(r);
            }
            Err(e) => {
                crate::refused(&format!("RunData::open {}", d.display()), &e);
            }
        }
    }
    let Some(first) = runs.first() else {
        return;
    };
    same_run_under_another_id(first, &base);
    export(&runs);
    merged(&runs, &base);
}

/// What every accepted run satisfies.
fn accepted(r: &RunData) {
    for name in r.manifest.files.keys() {
        assert_eq!(
            record::fsafe::entry_name_problem(name),
            None,
            "accepted entry {name:?}"
        );
    }
    if let Some(p) = &r.manifest.profile {
        assert_eq!(p.sha256, sha256_hex(p.text.as_bytes()), "profile copy hash");
    }
    // `report export` names its default output after the run id.
    let file = validation::merge::safe_name(r.id());
    assert!(
        !file.is_empty() && !file.contains('/') && file != "." && file != "..",
        "run id {:?} becomes the file name {file:?}",
        r.id()
    );
    if r.manifest
        .tools
        .iter()
        .any(|t| t.end.is_none() || t.partial)
    {
        assert!(
            r.manifest.partial(),
            "a killed or interrupted tool run, yet not partial"
        );
    }
}

/// A copy of `r` whose manifest has another run id: the same run.
fn same_run_under_another_id(r: &RunData, base: &Path) {
    let copy = base.join("copy");
    for name in r.manifest.files.keys() {
        make_parent(&copy, name);
        std::fs::copy(r.path.join(name), copy.join(name)).expect("copy an accepted file");
    }
    let mut m = r.manifest.clone();
    m.run_id.push_str("-copy");
    let mut bytes = serde_json::to_vec_pretty(&m).expect("manifest serializes");
    bytes.push(b'\n');
    std::fs::write(copy.join(record::MANIFEST), bytes).expect("copy manifest");
    let c = RunData::open(&copy).unwrap_or_else(|e| {
        panic!(
            "a re-serialized accepted manifest is refused: {}",
            crate::chain(&e)
        )
    });
    match evidence::check_distinct(&[r.clone(), c]) {
        Err(EvidenceError::Duplicate { .. }) => {}
        other => panic!("a copy under another run id is not the same run: {other:?}"),
    }
    let twice = base.join("twice");
    match validation::merge::merge(&[&r.path, &copy], &twice, vec![]) {
        Err(EvidenceError::Duplicate { .. }) => {}
        other => panic!("merge of a run and its copy: {other:?}"),
    }
}

/// `validation report export` in every format.
fn export(runs: &[RunData]) {
    if let Err(e) = evidence::check_distinct(runs) {
        crate::refused("check_distinct", &e);
        return;
    }
    let (profile, pref) = match evidence::profile_of_runs(runs) {
        Ok(x) => x,
        Err(e) => {
            crate::refused("profile_of_runs", &e);
            return;
        }
    };
    let ev = match evidence::evaluate(&profile, pref, runs, &EvalOptions::default()) {
        Ok(ev) => ev,
        Err(e) => {
            crate::refused("evaluate", &e);
            return;
        }
    };
    crate::note("evaluate", format_args!("{:?}", ev.summary));
    let s = &ev.summary;
    assert_eq!(s.pass + s.fail + s.inconclusive, ev.results.len());
    for format in [Format::Html, Format::Md, Format::Json, Format::Junit] {
        let text = match report::render(&ev, format) {
            Ok(t) => t,
            Err(e) => {
                crate::refused(&format!("render {format:?}"), &e);
                continue;
            }
        };
        match format {
            Format::Json => {
                serde_json::from_str::<Value>(&text).expect("the JSON report is JSON");
            }
            Format::Html => assert!(
                !text.to_ascii_lowercase().contains("<script"),
                "the HTML report holds a script"
            ),
            _ => {}
        }
    }
}

/// `validation merge` of the runs: its output reads back and holds them.
fn merged(runs: &[RunData], base: &Path) {
    let out = base.join("merged");
    let inputs: Vec<&Path> = runs.iter().map(|r| r.path.as_path()).collect();
    match validation::merge::merge(&inputs, &out, vec!["fuzz".into()]) {
        Ok(s) => {
            crate::note("merge", format_args!("{} sources", s.sources.len()));
            let m = RunData::open(&out).unwrap_or_else(|e| {
                panic!("what merge wrote does not read back: {}", crate::chain(&e))
            });
            assert!(
                evidence::check_distinct(&[m, runs[0].clone()]).is_err(),
                "a merged run beside one of its sources is not refused"
            );
        }
        Err(e) => {
            crate::refused("merge", &e);
        }
    }
}
