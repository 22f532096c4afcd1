//! Semantic validation of profiles: every error names the field path and the bad value.

use rt_sys::SysRoot;

use crate::Profile;

/// One semantic problem in a profile.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    /// Field path, e.g. `host.vcpus[0].priority`.
    pub path: String,
    /// What is wrong, with the bad value.
    pub message: String,
}

/// Check a profile on its own (no machine facts).
pub fn validate(profile: &Profile) -> Result<(), Vec<ValidationError>> {
    let _ = profile;
    Ok(())
}

/// Check a profile against a machine: CPUs the host does not have, and so on.
pub fn validate_against(profile: &Profile, root: &SysRoot) -> Result<(), Vec<ValidationError>> {
    let _ = (profile, root);
    Ok(())
}
