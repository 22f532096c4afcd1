//! rt-sys's parsers of kernel text, every one on every input (each is cheap, and kernel
//! files look alike): cpu lists and masks, `/proc/interrupts`, cpuidle `disable`,
//! `/dev/cpu_dma_latency`, task `stat`, `/proc/mounts` and `/proc/PID/cgroup`,
//! `/proc/PID/status` (memory, capabilities), libvirt pid files, `/proc/meminfo`, `/proc/cpuinfo`, `/proc/cmdline`, sysctl names and choice files, IRQ
//! thread and vCPU thread names, QEMU command lines, `/proc/self/maps`, QMP replies and
//! the journal's sched values, tracefs `available_tracers` and the timerlat and hwlat
//! trace lines. Properties: cpu lists and masks read back equal; a sysctl
//! name never becomes a path that climbs out of `/proc/sys`.

use rt_sys::CpuSet;
use rt_sys::{
    cgroup, cpuidle, hugepages, irq, irqthread, journal, kernel, libvirt, procmem, qmp, rt, sysctl,
    task, threads, tracefs,
};

/// One input.
pub fn run(data: &[u8]) {
    let _ = cpuidle::decode_dma_latency(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    cpu_lists(text);
    let _ = irq::parse_interrupts(text);
    let _ = cpuidle::state_index(text);
    let _ = cpuidle::parse_disable(text);
    let _ = task::parse_stat(text);
    let _ = task::vcpu_index(text);
    let args: Vec<String> = text.split('\0').map(str::to_string).collect();
    let _ = task::qemu_name_of(&args);
    let _ = cgroup::parse_mounts(text);
    let _ = cgroup::parse_proc_cgroup(text, true);
    let _ = cgroup::parse_proc_cgroup(text, false);
    let _ = cgroup::parse_proc_cgroup_of(text, Some("cpu"));
    let _ = procmem::parse_status(text);
    let _ = task::parse_cap_eff(text);
    let _ = libvirt::parse_pid(text);
    let _ = hugepages::parse_meminfo(text);
    let _ = kernel::is_preempt_rt(text, Some(text));
    let _ = kernel::cpuinfo_field(text, "flags");
    let _ = kernel::cmdline_value(text, "isolcpus");
    let _ = sysctl::selected(text);
    if let Ok(p) = sysctl::path_of(text) {
        assert!(
            !p.split('/').any(|c| c == ".."),
            "sysctl name {text:?} became {p:?}"
        );
    }
    let _ = irqthread::parse_name(text);
    let _ = irqthread::matches(text, "eth0");
    let _ = threads::status_field(text, "Cpus_allowed_list");
    let _ = rt::maps_of(text, "/usr/bin/rt-guest");
    if let Ok(qmp::Reply::Return(v)) = qmp::classify_reply(text) {
        let _ = qmp::parse_cpus_fast(&v);
        let _ = qmp::parse_cpu_paths(&v);
        let _ = qmp::parse_model_props(&v);
    }
    let _ = journal::parse_sched(text);
    let _ = tracefs::parse_tracers(text);
    for line in text.lines() {
        let _ = tracefs::parse_timerlat(line);
        let _ = tracefs::parse_hwlat(line);
    }
}

fn cpu_lists(text: &str) {
    if let Ok(set) = CpuSet::parse(text) {
        let list = set.to_string();
        assert_eq!(
            CpuSet::parse(&list).as_ref(),
            Ok(&set),
            "{text:?} -> {list:?}"
        );
        mask_reads_back(text, &set);
    }
    if let Ok(set) = CpuSet::from_mask(text) {
        mask_reads_back(text, &set);
    }
}

fn mask_reads_back(text: &str, set: &CpuSet) {
    let mask = set.to_mask();
    assert_eq!(
        CpuSet::from_mask(&mask).as_ref(),
        Ok(set),
        "{text:?} -> {mask:?}"
    );
}
