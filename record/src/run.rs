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
//! Every file is written to a temporary name, fsynced and renamed, then its sha256 is
//! entered in the manifest (itself written the same way). A run that is interrupted is
//! marked `partial` by its producer, never left half-written.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use rt_sys::kernel::KernelFacts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::hist::HistSummary;

/// Current manifest format version.
pub const FORMAT: u32 = 1;
/// Manifest file name.
pub const MANIFEST: &str = "manifest.json";
/// Probe record file name.
pub const PROBE: &str = "probe.json";
/// CAN record file name.
pub const CAN: &str = "can.json";
/// CAN candump log file name.
pub const CAN_LOG: &str = "can.log";

/// Errors reading or writing a run directory; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// I/O on a file.
    #[error("I/O error on {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// JSON that does not parse as the expected record.
    #[error("{path} is not a valid record")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A file whose content no longer matches the sha256 the manifest recorded.
    #[error(
        "{path} was changed after the run: sha256 {actual} differs from the manifest's {expected}"
    )]
    Tampered {
        /// The file.
        path: PathBuf,
        /// sha256 in the manifest.
        expected: String,
        /// sha256 now.
        actual: String,
    },
    /// A file the manifest lists is missing.
    #[error("{path} is listed in the manifest but missing")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// Not a run directory.
    #[error("{path} is not a run directory (no manifest.json)")]
    NotARun {
        /// The directory.
        path: PathBuf,
    },
}

/// One tool invocation that wrote into the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolRun {
    /// Tool name (`rt-guest probe`, `can-sim run`, ...).
    pub tool: String,
    /// Crate version.
    pub version: String,
    /// Git commit the tool was built from (`unknown` outside a checkout).
    pub git_sha: String,
    /// Command-line arguments.
    pub args: Vec<String>,
    /// Start, RFC 3339 UTC.
    pub start: String,
    /// End, RFC 3339 UTC (None while running).
    pub end: Option<String>,
    /// True when the run was interrupted (Ctrl-C, SIGTERM, error) and the data is partial.
    pub partial: bool,
    /// Why it is partial, if it is.
    #[serde(default)]
    pub partial_reason: Option<String>,
}

/// The profile the run used, verbatim, with its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileCopy {
    /// Profile name.
    pub name: String,
    /// Where it was loaded from.
    pub origin: String,
    /// sha256 of `text`.
    pub sha256: String,
    /// The RON text.
    pub text: String,
}

/// Where and on what the run happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Environment {
    /// Host name of the machine that produced the run.
    pub hostname: String,
    /// Kernel facts of the machine that measured (the guest for probe/can runs).
    pub kernel: Option<KernelFacts>,
    /// `rt-guest check --json` output at run time.
    #[serde(default)]
    pub guest_check: Option<serde_json::Value>,
    /// `rt-host check --json` output at run time (attached by the lab or the user).
    #[serde(default)]
    pub host_check: Option<serde_json::Value>,
    /// `rt-guest selftest` result.
    #[serde(default)]
    pub selftest: Option<serde_json::Value>,
    /// Free notes (e.g. "host under stress-ng").
    #[serde(default)]
    pub notes: Vec<String>,
}

/// A file of the run with its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// sha256, lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Tool that wrote it.
    pub written_by: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version ([`FORMAT`]).
    pub format: u32,
    /// Run id (directory name by default).
    pub run_id: String,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// Tool invocations, in order.
    pub tools: Vec<ToolRun>,
    /// The profile used.
    pub profile: Option<ProfileCopy>,
    /// Environment.
    pub environment: Environment,
    /// Files of the run (not the manifest itself) with their hashes.
    pub files: BTreeMap<String, FileEntry>,
    /// For merged records: the runs merged (run ids with their manifest sha256).
    #[serde(default)]
    pub sources: Vec<String>,
}

impl Manifest {
    /// True when any tool run is partial.
    pub fn partial(&self) -> bool {
        self.tools.iter().any(|t| t.partial)
    }
}

/// Now, RFC 3339 UTC with microseconds.
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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RecordError + '_ {
    move |source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `bytes` to `path` atomically (see [`rt_sys::safefile::write_atomic`]: random
/// temp name created exclusively in the same directory, fsync, rename, fsync the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RecordError> {
    rt_sys::safefile::write_atomic(path, bytes).map_err(|e| RecordError::Io {
        path: e.path,
        source: e.source,
    })
}

/// An open run directory.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    manifest: Manifest,
    /// Index of this process's ToolRun in `manifest.tools`.
    tool_index: Option<usize>,
}

impl RunDir {
    /// Open an existing run directory (reads the manifest).
    pub fn open(path: impl Into<PathBuf>) -> Result<RunDir, RecordError> {
        let path = path.into();
        let mpath = path.join(MANIFEST);
        if !mpath.exists() {
            return Err(RecordError::NotARun { path });
        }
        let text = fs::read(&mpath).map_err(io(&mpath))?;
        let manifest = serde_json::from_slice(&text).map_err(|source| RecordError::Json {
            path: mpath.clone(),
            source,
        })?;
        Ok(RunDir {
            path,
            manifest,
            tool_index: None,
        })
    }

    /// Open `path` if it is a run directory, or create it with a fresh manifest.
    pub fn open_or_create(path: impl Into<PathBuf>) -> Result<RunDir, RecordError> {
        let path = path.into();
        if path.join(MANIFEST).exists() {
            return RunDir::open(path);
        }
        fs::create_dir_all(&path).map_err(io(&path))?;
        let run_id = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let manifest = Manifest {
            format: FORMAT,
            run_id,
            created: now_utc(),
            tools: Vec::new(),
            profile: None,
            environment: Environment {
                hostname: rt_sys::SysRoot::live()
                    .read_trim("proc/sys/kernel/hostname")
                    .unwrap_or_default(),
                ..Environment::default()
            },
            files: BTreeMap::new(),
            sources: Vec::new(),
        };
        let rd = RunDir {
            path,
            manifest,
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

    /// Write a file of the run atomically and enter its sha256 in the manifest.
    pub fn write_file(&mut self, name: &str, bytes: &[u8]) -> Result<(), RecordError> {
        let p = self.path.join(name);
        write_atomic(&p, bytes)?;
        let writer = self
            .tool_index
            .map(|i| self.manifest.tools[i].tool.clone())
            .unwrap_or_else(|| "unknown".into());
        self.manifest.files.insert(
            name.to_string(),
            FileEntry {
                sha256: sha256_hex(bytes),
                bytes: bytes.len() as u64,
                written_by: writer,
            },
        );
        self.save()
    }

    /// Serialize `value` as pretty JSON into `name`.
    pub fn write_json<T: Serialize>(&mut self, name: &str, value: &T) -> Result<(), RecordError> {
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| RecordError::Json {
            path: self.path.join(name),
            source,
        })?;
        bytes.push(b'\n');
        self.write_file(name, &bytes)
    }

    /// Read and parse a JSON file of the run, checking its sha256 first.
    pub fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<T, RecordError> {
        let bytes = self.read_verified(name)?;
        serde_json::from_slice(&bytes).map_err(|source| RecordError::Json {
            path: self.path.join(name),
            source,
        })
    }

    /// Read a file of the run and check its sha256 against the manifest. Files the manifest
    /// does not list are read unchecked.
    pub fn read_verified(&self, name: &str) -> Result<Vec<u8>, RecordError> {
        let p = self.path.join(name);
        if !p.exists() {
            return Err(RecordError::Missing { path: p });
        }
        let bytes = fs::read(&p).map_err(io(&p))?;
        if let Some(entry) = self.manifest.files.get(name) {
            let actual = sha256_hex(&bytes);
            if actual != entry.sha256 {
                return Err(RecordError::Tampered {
                    path: p,
                    expected: entry.sha256.clone(),
                    actual,
                });
            }
        }
        Ok(bytes)
    }

    /// Check every file the manifest lists.
    pub fn verify(&self) -> Result<(), RecordError> {
        for name in self.manifest.files.keys() {
            self.read_verified(name)?;
        }
        Ok(())
    }

    /// Write the manifest (atomically).
    pub fn save(&self) -> Result<(), RecordError> {
        let p = self.path.join(MANIFEST);
        let mut bytes =
            serde_json::to_vec_pretty(&self.manifest).map_err(|source| RecordError::Json {
                path: p.clone(),
                source,
            })?;
        bytes.push(b'\n');
        write_atomic(&p, &bytes)
    }
}

/// Probe settings as run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSettings {
    /// Period in ns.
    pub interval_ns: u64,
    /// Policy name (`fifo`, `rr`, `other`).
    pub policy: String,
    /// Priority.
    pub priority: u32,
    /// Planned duration in seconds (None when bounded by loops).
    pub duration_s: Option<f64>,
    /// Planned loops (None when bounded by duration).
    pub loops: Option<u64>,
    /// mlockall was in force.
    pub mlock: bool,
    /// /dev/cpu_dma_latency was held at 0.
    pub dma_latency_held: bool,
    /// Clock used.
    pub clock: String,
}

/// One measurement thread's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeThread {
    /// CPU measured.
    pub cpu: u32,
    /// Thread id.
    pub tid: u32,
    /// Policy actually in force (read back).
    pub policy: String,
    /// Priority actually in force.
    pub priority: u32,
    /// Wakeups measured.
    pub samples: u64,
    /// Periods that passed without a wakeup (the thread woke more than a period late):
    /// counted, never skipped silently.
    pub missed_periods: u64,
    /// Values that were negative (woke before the programmed time) or above the histogram
    /// range: counted, never wrapped.
    pub out_of_range: u64,
    /// Loop cycle at which the max occurred.
    pub max_at_cycle: u64,
    /// Wall time (RFC 3339) at which the max occurred.
    pub max_at: Option<String>,
    /// Latency distribution (wakeup - programmed time), ns.
    pub latency: HistSummary,
}

/// `probe.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// Settings.
    pub settings: ProbeSettings,
    /// Per-thread results.
    pub threads: Vec<ProbeThread>,
    /// Measured wall time in seconds.
    pub elapsed_s: f64,
    /// True when interrupted.
    pub partial: bool,
}

/// One message's reception results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanMessageRecord {
    /// Sending ECU.
    pub ecu: String,
    /// Message name.
    pub name: String,
    /// CAN id.
    pub id: u32,
    /// Extended id.
    pub extended: bool,
    /// `classic`, `fd`, `fd_brs`.
    pub kind: String,
    /// Payload length.
    pub len: u8,
    /// Period in us.
    pub period_us: u64,
    /// Deadline in us.
    pub deadline_us: u64,
    /// Frames sent (accepted by the kernel).
    pub sent: u64,
    /// Distinct frames received.
    pub received: u64,
    /// Sent but never received (sent - received, after the drain time).
    pub lost: u64,
    /// Frames received more than once.
    pub duplicates: u64,
    /// Frames received with a lower sequence number than one already seen.
    pub reordered: u64,
    /// Receptions later than the deadline.
    pub deadline_misses: u64,
    /// Release -> kernel RX timestamp, ns.
    pub latency: HistSummary,
    /// |inter-arrival - period|, ns.
    pub jitter: HistSummary,
    /// Worst frame time on the bus (us).
    pub frame_time_us: f64,
    /// Analytic worst-case response time (us), if schedulable.
    pub wcrt_us: Option<f64>,
}

/// `can.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanRecord {
    /// Sending interface.
    pub tx: String,
    /// Receiving interface.
    pub rx: String,
    /// Nominal bitrate.
    pub bitrate: u32,
    /// FD data bitrate.
    pub data_bitrate: Option<u32>,
    /// Paced at the bus rate.
    pub paced: bool,
    /// Measured wall time in seconds.
    pub elapsed_s: f64,
    /// Analytic bus load in percent (worst-case stuffing).
    pub bus_load_analytic_pct: f64,
    /// Measured bus load in percent (received frames' bits / time).
    pub bus_load_measured_pct: f64,
    /// Transmit attempts that met a full queue (ENOBUFS), retried.
    pub tx_enobufs: u64,
    /// Error frames / controller state changes seen.
    pub bus_errors: Vec<String>,
    /// Where the kernel RX timestamps came from (`kernel` / `user`).
    pub timestamp_source: String,
    /// Per-message results.
    pub messages: Vec<CanMessageRecord>,
    /// True when interrupted.
    pub partial: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

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

        std::fs::write(run.join("can.log"), b"(0.000000) can0 124#00\n").unwrap();
        let err = RunDir::open(&run).unwrap().verify().unwrap_err();
        assert!(matches!(err, RecordError::Tampered { .. }));
        assert!(err.to_string().contains("can.log"), "{err}");
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
        assert!(e.to_string().contains("not a run directory"));
    }
}
