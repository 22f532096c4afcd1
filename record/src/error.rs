//! Errors reading or writing a run directory. Each names the file (and, inside it, the
//! entry, thread or message) so a user knows what to look at.

use std::path::PathBuf;

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
    /// JSON that does not parse as the expected record (the cause names the field).
    #[error("{path} is not a valid record: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// serde's message, with the path to the offending field.
        message: String,
    },
    /// A manifest of a format version this reader does not know.
    #[error("{path} has run-record format {found}; this build reads format {supported} only (record the run again with this version's tools)")]
    UnsupportedFormat {
        /// The manifest.
        path: PathBuf,
        /// The version it declares (None: no `format` field).
        found: String,
        /// The version this build reads.
        supported: u32,
    },
    /// A record whose fields contradict each other or the rest of the run.
    #[error("{path}: {what}")]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// What disagrees, with the values.
        what: String,
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
    /// A file whose size differs from the manifest's (truncated or appended to).
    #[error("{path} was {how} after the run: {actual} bytes, the manifest recorded {expected}")]
    Size {
        /// The file.
        path: PathBuf,
        /// "truncated" or "extended".
        how: &'static str,
        /// Size now.
        actual: u64,
        /// Size in the manifest.
        expected: u64,
    },
    /// A file the manifest lists is missing.
    #[error("{path} is listed in the manifest but missing")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// A manifest entry that is not a plain relative name inside the run directory, or a
    /// file that is not a regular file (a symlink, a device, a FIFO, a directory).
    #[error("Manifest entry {name:?} of {run} is refused: {why}")]
    BadEntry {
        /// The run directory.
        run: PathBuf,
        /// The entry as the manifest names it.
        name: String,
        /// Why.
        why: String,
    },
    /// A file larger than this reader accepts.
    #[error("{path} is {bytes} bytes, above the limit of {limit} bytes for this kind of file")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A file the caller asked for that the manifest does not list.
    #[error("{path} is not listed in the manifest: it is not part of the run")]
    NotListed {
        /// The file.
        path: PathBuf,
    },
    /// Not a run directory.
    #[error("{path} is not a run directory (no manifest.json)")]
    NotARun {
        /// The directory.
        path: PathBuf,
    },
    /// A histogram in a record that does not decode or whose header we refuse.
    #[error("{path}: histogram of {what}")]
    Histogram {
        /// The record file.
        path: PathBuf,
        /// Which histogram (thread / message).
        what: String,
        /// The cause.
        #[source]
        source: crate::hist::HistError,
    },
}

impl RecordError {
    /// An [`RecordError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RecordError {
        let path = path.into();
        move |source| RecordError::Io { path, source }
    }

    /// An [`RecordError::Inconsistent`] for `path`.
    pub fn inconsistent(path: impl Into<PathBuf>, what: impl Into<String>) -> RecordError {
        RecordError::Inconsistent {
            path: path.into(),
            what: what.into(),
        }
    }
}
