//! Errors of host tuning: each names the item, file or thread that failed.

use rt_sys::journal::JournalError;
use rt_sys::qmp::QmpError;
use rt_sys::SysError;

/// Why planning, applying or reverting could not go on.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// A kernel interface failed while doing `doing`.
    #[error("{doing}")]
    Sys {
        /// What we were doing (names the item).
        doing: String,
        /// The cause, with the path or thread.
        #[source]
        source: SysError,
    },
    /// QMP failed.
    #[error("Finding vCPU threads over QMP")]
    Qmp(#[from] QmpError),
    /// The journal failed.
    #[error("Tuning journal")]
    Journal(#[from] JournalError),
    /// The profile asks for something unsafe or impossible on this machine.
    #[error("Refusing profile: {0}")]
    Unsafe(String),
    /// The VM could not be identified.
    #[error("Finding the VM: {0}")]
    Vm(String),
    /// Setup failed half-way and reverted.
    #[error(transparent)]
    Aborted(#[from] Aborted),
    /// The profile has no host section.
    #[error("Profile {0:?} has no `host` section: nothing for rt-host to do")]
    NoHost(String),
}

/// Attach what we were doing to a [`SysError`].
pub fn sys(doing: impl Into<String>) -> impl FnOnce(SysError) -> TuneError {
    let doing = doing.into();
    move |source| TuneError::Sys { doing, source }
}

/// Setup hit an unexpected error and undid what it had done.
#[derive(Debug, thiserror::Error)]
#[error("Setup stopped at {change}; reverted {reverted} change(s) of this run, {failed} could not be restored")]
pub struct Aborted {
    /// The change that failed.
    pub change: String,
    /// Changes restored.
    pub reverted: usize,
    /// Changes that could not be restored (still in the journal).
    pub failed: usize,
    /// The cause.
    #[source]
    pub source: rt_sys::SysError,
}
