//! `summary.json`: what a flow did and saw, step by step, for people and for the tests.
//! Plain data, written by [`crate::flow`] and [`crate::hostlab`], read by the tests; the
//! host lab's outer host is described here too (`host-lab.json` carries it).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::guest::GuestInfo;
use crate::sched::VcpuSample;

/// One step of the flow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// What ran.
    pub name: String,
    /// Exit code (None when it could not run).
    pub rc: Option<i32>,
    /// Wall seconds.
    pub secs: f64,
    /// Whether the flow counts it as passed.
    pub ok: bool,
    /// Its output (tail) or why it could not run.
    pub note: String,
}

/// One CAN cross-check: can-sim's counts against candump in the guest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CanCheck {
    /// `can0->can1` or `vcan0`.
    pub link: String,
    /// Receiving interface.
    pub rx: String,
    /// Run directory (on the host).
    pub run: PathBuf,
    /// Frames candump logged on `rx` (markers excluded).
    pub candump_frames: Option<u64>,
    /// can-sim totals over all messages.
    pub sent: Option<u64>,
    /// Received.
    pub received: Option<u64>,
    /// Lost.
    pub lost: Option<u64>,
}

/// Probe results of one run, in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProbeStats {
    /// Run directory.
    pub run: PathBuf,
    /// `host untuned` or `host tuned`.
    pub condition: String,
    /// Wakeups measured (all threads).
    pub samples: u64,
    /// Missed periods (all threads).
    pub missed_periods: u64,
    /// Median of the first thread.
    pub p50_us: f64,
    /// 99th percentile of the first thread.
    pub p99_us: f64,
    /// Maximum over all threads.
    pub max_us: f64,
}

/// The outer host and the VMs in it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OuterHost {
    /// `uname -r`.
    pub kernel: String,
    /// `uname -v`.
    pub kernel_version: String,
    /// The kernel command line: `rt-host boot-args PROFILE` and the console.
    pub cmdline: String,
    /// What `rt-host boot-args` printed.
    pub boot_args: String,
    /// vCPUs.
    pub cpus: u32,
    /// The outer VM's accelerator on this machine and why.
    pub accel: String,
    /// Why.
    pub accel_reason: String,
    /// The KVM module loaded in the outer host (`kvm_amd` under TCG).
    pub kvm_module: String,
    /// The profile's VMs started in the outer host, in profile order: the first is the
    /// guest (booted, CAN, agent), the others are started paused.
    pub vms: Vec<InnerVmFacts>,
    /// The second VM's QEMU pid, which rt-host must not touch.
    pub other_pid: Option<u32>,
    /// IRQs the lab spread over every CPU before setup, as an IRQ balancer would, and the
    /// ones the kernel refused.
    pub irqs_spread: Vec<String>,
    /// How `rt-host plan` found the VM: by name, and with a profile naming its QMP socket
    /// (`FOUND_BY: vCPU 0 = TID (NAME), ...`).
    pub found_by: Vec<String>,
}

/// One of the profile's VMs in the outer host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InnerVmFacts {
    /// Its name in the profile (`host.vms[].name`, QEMU `-name guest=`).
    pub name: String,
    /// Its QEMU pid in the outer host.
    pub pid: u32,
    /// Its command line.
    pub argv: Vec<String>,
    /// True when started paused (`-S`): its vCPU threads exist, its guest never runs.
    pub paused: bool,
}

/// What `summary.json` says about the host lab.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostLabSummary {
    /// `host-lab.json`.
    pub record: PathBuf,
    /// Values journalled.
    pub values: usize,
    /// Of them restored exactly.
    pub restored: usize,
    /// What was not restored.
    pub not_restored: Vec<String>,
    /// Journalled threads that were not there at one end (started later, or exited).
    pub absent: Vec<String>,
    /// The outer host.
    pub outer: OuterHost,
}

/// What the flow and the host lab record for every run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Output directory.
    pub out: PathBuf,
    /// Profile used.
    pub profile: String,
    /// Accelerator of the VM the guest tools ran in (for the host lab: the inner VM's).
    pub accel: String,
    /// Why this accelerator.
    pub accel_reason: String,
    /// QEMU's pid (for the host lab: the outer VM's, on this machine).
    pub qemu_pid: Option<u32>,
    /// How the flow's VM was started from its profile's QEMU definition: what was
    /// substituted and why, what the lab added (None for the host lab's outer VM).
    #[serde(default)]
    pub vm_definition: Option<crate::qemu::Launch>,
    /// Kernel booted.
    pub kernel: PathBuf,
    /// Initramfs booted.
    pub initrd: PathBuf,
    /// What the guest reported at boot.
    pub guest: Option<GuestInfo>,
    /// vCPU threads before `rt-host setup`.
    pub vcpus_before: Vec<VcpuSample>,
    /// vCPU threads while tuned (right after setup).
    pub vcpus_tuned: Vec<VcpuSample>,
    /// vCPU threads while tuned, after the guest steps (before revert).
    pub vcpus_tuned_end: Vec<VcpuSample>,
    /// vCPU threads after `rt-host revert`.
    pub vcpus_after: Vec<VcpuSample>,
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Run directories brought out of the guest.
    pub runs: Vec<PathBuf>,
    /// CAN cross-checks.
    pub can: Vec<CanCheck>,
    /// Report files by format.
    pub reports: BTreeMap<String, PathBuf>,
    /// Exit code of `validation report export` (1: a requirement failed).
    pub report_rc: Option<i32>,
    /// Probe results per condition (`host untuned` with --baseline, `host tuned`).
    pub probe: Vec<ProbeStats>,
    /// Contract binaries that were missing.
    pub missing: Vec<String>,
    /// The host lab's outer host, when the flow ran there.
    pub host_lab: Option<HostLabSummary>,
    /// The error that ended the flow, if any.
    pub error: Option<String>,
    /// Errors during cleanup.
    pub cleanup_errors: Vec<String>,
    /// Wall seconds of the whole flow.
    pub secs: f64,
}

impl Summary {
    /// Whether the flow passed.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.cleanup_errors.is_empty() && self.missing.is_empty()
    }

    /// The step named `name`, if it ran.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }
}
