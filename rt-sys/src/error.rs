//! Errors of the kernel-interface layer: each names the path or thread it concerns.

use std::io;
use std::path::PathBuf;

/// An error touching a kernel interface. Every variant carries the place that failed.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// The kernel refused the operation (EPERM/EACCES, or EIO from an IRQ that cannot move).
    /// On virtual machines this is common for `halt_poll_ns` and `/proc/irq/*/smp_affinity`.
    #[error("Not permitted here: {what} ({errno})")]
    NotPermitted {
        /// Path or thread description.
        what: String,
        /// The errno text, e.g. "EPERM".
        errno: &'static str,
    },
    /// The file or thread does not exist (a missing sysfs knob, a vanished thread).
    #[error("Not found: {what}")]
    NotFound {
        /// Path or thread description.
        what: String,
    },
    /// Another I/O error on a path.
    #[error("I/O error on {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A kernel file had content we could not parse.
    #[error("Cannot parse {what}: {detail}")]
    Parse {
        /// The path or format.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// A path that rtvirt refuses to touch: it leaves the root, goes through a symbolic
    /// link, or is not a kernel interface a journal may name.
    #[error("Refusing {what}: {why}")]
    Unsafe {
        /// The path (as on the live system) or the journal target.
        what: String,
        /// Why it is refused.
        why: String,
    },
    /// A syscall on a thread failed for another reason.
    #[error("{call} on {what} failed")]
    Syscall {
        /// The syscall name.
        call: &'static str,
        /// The thread or object.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl SysError {
    /// Classify an I/O error on `what` (a path or thread), mapping EPERM/EACCES/EIO to
    /// [`SysError::NotPermitted`] and ENOENT/ESRCH to [`SysError::NotFound`].
    pub fn from_io(what: impl Into<String>, path: Option<PathBuf>, err: io::Error) -> Self {
        let what = what.into();
        match err.raw_os_error() {
            Some(libc::EPERM) => SysError::NotPermitted {
                what,
                errno: "EPERM",
            },
            Some(libc::EACCES) => SysError::NotPermitted {
                what,
                errno: "EACCES",
            },
            Some(libc::EIO) => SysError::NotPermitted { what, errno: "EIO" },
            Some(libc::EROFS) => SysError::NotPermitted {
                what,
                errno: "EROFS",
            },
            Some(libc::ENOENT) | Some(libc::ESRCH) => SysError::NotFound { what },
            _ => match path {
                Some(path) => SysError::Io { path, source: err },
                None => SysError::Io {
                    path: PathBuf::from(what),
                    source: err,
                },
            },
        }
    }

    /// True when the kernel refused (EPERM, EACCES, EIO, EROFS): report "not permitted here".
    pub fn is_not_permitted(&self) -> bool {
        matches!(self, SysError::NotPermitted { .. })
    }

    /// True when the file or thread does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, SysError::NotFound { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eperm_is_not_permitted_and_names_the_path() {
        let e = SysError::from_io(
            "/sys/module/kvm/parameters/halt_poll_ns",
            None,
            io::Error::from_raw_os_error(libc::EPERM),
        );
        assert!(e.is_not_permitted());
        assert_eq!(
            e.to_string(),
            "Not permitted here: /sys/module/kvm/parameters/halt_poll_ns (EPERM)"
        );
    }

    #[test]
    fn enoent_is_not_found() {
        let e = SysError::from_io("tid 42", None, io::Error::from_raw_os_error(libc::ESRCH));
        assert!(e.is_not_found());
    }
}
