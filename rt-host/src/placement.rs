//! Several VMs in one plan: each VM of `host.vms` (or the single-VM form) as a host with
//! only that VM, so the planner's per-VM items (find the QEMU, emulator and I/O-thread
//! affinity, vCPU affinity and policy) run once per VM; and the refusal of two VMs whose
//! real-time vCPUs share a CPU.

use std::collections::BTreeMap;

use profiles::{Host, VmView};

use crate::error::TuneError;

/// Each VM of `host` as a single-VM host: its locator in `vm`, its placements in `vcpus`,
/// its emulator and I/O-thread CPUs; every host-wide field as in `host`.
pub fn per_vm_hosts(host: &Host) -> Vec<Host> {
    per_vm(host).into_iter().map(|(h, _)| h).collect()
}

/// [`per_vm_hosts`], each with the VM as the profile describes it (its policies for the
/// emulator and I/O threads, memory, NUMA node).
pub fn per_vm(host: &Host) -> Vec<(Host, VmView)> {
    profiles::host_vms(host)
        .into_iter()
        .map(|v| {
            let h = Host {
                vm: Some(profiles::Vm {
                    memory_mib: v.memory_mib,
                    ..v.find.clone()
                }),
                vcpus: v.vcpus.clone(),
                emulator_cpus: Some(v.emulator_cpus.clone()),
                iothread_cpus: Some(v.iothread_cpus.clone()),
                vms: Vec::new(),
                ..host.clone()
            };
            (h, v)
        })
        .collect()
}

/// Refuse VMs whose real-time vCPUs share a CPU, or sit beside another VM's vCPU.
pub fn check_shared(hosts: &[Host]) -> Result<(), TuneError> {
    let mut owner: BTreeMap<u32, (usize, u32, bool)> = BTreeMap::new();
    for (i, h) in hosts.iter().enumerate() {
        for v in &h.vcpus {
            let rt = v.policy.is_realtime();
            match owner.get(&v.cpu) {
                Some(&(j, other, other_rt)) if j != i && (rt || other_rt) => {
                    let name = |h: &Host| {
                        crate::vm::describe(h.vm.as_ref().unwrap_or(&profiles::Vm::default()))
                    };
                    return Err(TuneError::Unsafe(format!(
                        "CPU {} would run vCPU {other} of {} and vCPU {} of {}: one real-time vCPU per CPU",
                        v.cpu,
                        name(&hosts[j]),
                        v.vcpu,
                        name(h)
                    )));
                }
                Some(_) => {}
                None => {
                    owner.insert(v.cpu, (i, v.vcpu, rt));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> Host {
        let text = r#"Profile(name: "t", host: (housekeeping_cpus: "0", realtime_cpus: "1-2",
            emulator_cpus: "0",
            vms: [(name: "a", memory_mib: 64, vcpus: [(vcpu: 0, cpu: 1)]),
                  (name: "b", memory_mib: 64, iothread_cpus: "0", vcpus: [(vcpu: 0, cpu: 2)])]))"#;
        profiles::parse(text, "t").unwrap().host.unwrap()
    }

    #[test]
    fn each_vm_becomes_a_single_vm_host() {
        let h = two();
        let hs = per_vm_hosts(&h);
        assert_eq!(hs.len(), 2);
        assert_eq!(hs[1].vm.as_ref().unwrap().qemu_name.as_deref(), Some("b"));
        assert_eq!(hs[1].vm.as_ref().unwrap().memory_mib, Some(64));
        assert_eq!(hs[1].vcpus[0].cpu, 2);
        assert_eq!(hs[0].emulator_cpus.as_ref().unwrap().to_string(), "0");
        assert!(hs.iter().all(|x| x.vms.is_empty()));
        check_shared(&hs).unwrap();
        let lab = profiles::load("lab").unwrap().profile.host.unwrap();
        let one = per_vm_hosts(&lab);
        assert_eq!((one.len(), one[0].vcpus.len()), (1, 2), "vCPU 0 and 1");
    }

    #[test]
    fn shared_realtime_cpus_are_refused() {
        let mut hs = per_vm_hosts(&two());
        hs[1].vcpus[0].cpu = 1;
        let e = check_shared(&hs).unwrap_err().to_string();
        assert_eq!(
            e,
            "Refusing profile: CPU 1 would run vCPU 0 of QEMU -name a and vCPU 0 of QEMU -name b: one real-time vCPU per CPU"
        );
    }
}
