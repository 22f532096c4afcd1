//! Booting a lab VM with the accelerator chosen once ([`crate::accel::choose`]) and
//! waiting for the guest agent's `ready`. When KVM was chosen by detection (not forced)
//! and fails anyway (QEMU dies, the kernel never starts, the guest never comes up), the VM
//! is booted again under TCG and the reason says what KVM did.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::accel::{self, explain_qemu_failure, Accel, Choice, Purpose};
use crate::flow::check_interrupt;
use crate::guest::{Agent, GuestInfo};
use crate::qemu::{Vm, VmConfig};

/// Start the VM under `choice`; a detected KVM that cannot start the kernel within
/// `kvm_probe` falls back to TCG. Returns the VM and why it runs with its accelerator.
pub fn boot(config: &VmConfig, choice: &Choice, kvm_probe: Duration) -> Result<(Vm, String)> {
    if choice.accel == Accel::Tcg || choice.forced {
        let mut vm = Vm::start(config, choice.accel)?;
        widen_vcpus(&mut vm)?;
        return Ok((vm, choice.reason.clone()));
    }
    let mut vm = Vm::start(config, Accel::Kvm)?;
    let deadline = Instant::now() + kvm_probe;
    let mut why = None;
    while Instant::now() < deadline && why.is_none() {
        check_interrupt()?;
        if vm.console().contains("Linux version") {
            widen_vcpus(&mut vm)?;
            return Ok((
                vm,
                format!(
                    "{}; it booted the kernel within {}s",
                    choice.reason,
                    kvm_probe.as_secs()
                ),
            ));
        }
        if !vm.alive() {
            let log = fs::read_to_string(&vm.config.qemu_log).unwrap_or_default();
            why = Some(format!(
                "TCG: KVM failed, QEMU exited at once: {}",
                explain_qemu_failure(&log)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let why = why.unwrap_or_else(|| {
        format!(
            "TCG: KVM did not start the kernel in {}s (console ends: {:?})",
            kvm_probe.as_secs(),
            vm.console_tail(1)
        )
    });
    vm.stop();
    eprintln!("lab: {why}");
    let mut vm = Vm::start(config, Accel::Tcg)?;
    widen_vcpus(&mut vm)?;
    Ok((vm, why))
}

/// Boot (see [`boot`]) and wait until the guest reports `ready`. When KVM was chosen by
/// detection and started the kernel but the guest does not come up in `boot_timeout`,
/// that VM is stopped (its console kept as `console-kvm.log`) and the guest booted again
/// under TCG. On an error the VM is stopped (dropped).
pub fn boot_until_ready(
    config: &VmConfig,
    choice: &Choice,
    kvm_probe: Duration,
    boot_timeout: Duration,
) -> Result<(Vm, String, GuestInfo)> {
    let (mut vm, reason) = boot(config, choice, kvm_probe)?;
    let agent = Agent::new(&config.share);
    match agent.wait_ready(&mut vm, boot_timeout) {
        Ok(info) => Ok((vm, reason, info)),
        Err(e) if !choice.forced && vm.accel == Accel::Kvm && !crate::interrupted() => {
            let why = format!("{e:#}");
            let why = why.lines().next().unwrap_or("").to_string();
            eprintln!("lab: the guest did not come up under KVM ({why}); booting it under TCG");
            vm.stop();
            drop(vm);
            let _ = fs::rename(
                &config.console,
                config.console.with_file_name("console-kvm.log"),
            );
            let _ = fs::remove_file(config.share.join("ready"));
            let mut vm = Vm::start(config, Accel::Tcg)?;
            widen_vcpus(&mut vm)?;
            let info = agent.wait_ready(&mut vm, boot_timeout)?;
            Ok((
                vm,
                format!("TCG: KVM started the kernel but the guest did not come up ({why})"),
                info,
            ))
        }
        Err(e) => Err(e),
    }
}

/// The accelerator for `purpose`, chosen once from `RTVIRT_LAB_ACCEL` and this machine's
/// KVM (see [`crate::accel`]), then [`boot_until_ready`]; `OUT/qemu.pid` names the QEMU
/// (and goes into `temp`). Returns the VM, why it runs with its accelerator, what the
/// guest reported, and the seconds it took.
pub fn boot_chosen(
    config: &VmConfig,
    purpose: Purpose,
    kvm_probe: Duration,
    boot_timeout: Duration,
    temp: &mut Vec<PathBuf>,
) -> Result<(Vm, String, GuestInfo, f64)> {
    let choice = accel::choose(
        Accel::from_env()?,
        &rt_sys::kvm::facts(&rt_sys::SysRoot::live()),
        purpose,
    );
    eprintln!("lab: accelerator of {}: {}", config.name, choice.reason);
    let t = Instant::now();
    let (vm, reason, info) = boot_until_ready(config, &choice, kvm_probe, boot_timeout)?;
    let pid_file = config.qmp.with_file_name("qemu.pid");
    fs::write(&pid_file, format!("{}\n", vm.pid))
        .with_context(|| format!("Writing {}", pid_file.display()))?;
    temp.push(pid_file);
    Ok((vm, reason, info, t.elapsed().as_secs_f64()))
}

/// After QEMU started: let the vCPU threads use every CPU we may use (the main loop and
/// I/O threads stay on the housekeeping CPU they inherited).
fn widen_vcpus(vm: &mut Vm) -> Result<()> {
    let all = rt_sys::sched::get_affinity(0).context("Reading our own CPU affinity")?;
    for c in vm.vcpu_threads()? {
        rt_sys::sched::set_affinity(c.thread_id, &all).with_context(|| {
            format!(
                "Setting the affinity of vCPU {} (thread {})",
                c.cpu_index, c.thread_id
            )
        })?;
    }
    Ok(())
}
