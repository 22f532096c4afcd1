//! Semantic validation of profiles: every error names the field path and the bad value.
//!
//! [`validate`] checks a profile on its own (CPU roles, priorities, the CAN matrix, the
//! requirements); [`validate_against`] and [`validate_guest_against`] check it against a
//! machine, read through a [`SysRoot`]: the CPUs in `/sys/devices/system/cpu/online` (or
//! `present`), see <https://docs.kernel.org/admin-guide/cputopology.html>, and the
//! hugepage sizes in `/sys/kernel/mm/hugepages`.
//!
//! Errors read `path: value problem`, e.g.
//! `host.vcpus[1].priority: 0 is outside 1..=99 for policy fifo`, so a reader finds the
//! place and sees what was written there.

use std::collections::BTreeMap;

use rt_sys::{CpuSet, SysRoot};

use crate::rules::{
    cpus_are, fifo_priority, ifname, off_realtime, priority, q, vcpu_list, vm_locator,
    BesideMainLoop, Errors, Machine,
};
pub use crate::rules::{ValidationError, HUGEPAGE_SIZES_KIB, MAX_IFNAME, MAX_RT_PRIORITY};
use crate::{
    Can, DataIdMode, E2e, E2eProfile, FrameKind, Generator, Guest, Host, Message, Metric, Profile,
    Requirement, Signal, ValueType,
};

/// Highest nominal CAN bitrate (ISO 11898-1), bit/s.
pub const MAX_BITRATE: u32 = 1_000_000;
/// Highest CAN FD data-phase bitrate accepted, bit/s (common transceivers stop at 8 Mbit/s).
pub const MAX_DATA_BITRATE: u32 = 8_000_000;
/// Longest probe interval accepted, us (one second, as cyclictest's practical range).
pub const MAX_PROBE_INTERVAL_US: u32 = 1_000_000;
/// Shortest probe interval accepted, us: the one limit profile validation and the probe
/// (`rt-guest`'s `ProbeConfig::validate`) both apply. Below it a wakeup's own cost
/// (timer, context switch, the sample's bookkeeping) fills the period.
pub const MIN_PROBE_INTERVAL_US: u32 = 10;
/// Highest standard (11-bit) CAN identifier.
pub const MAX_STANDARD_ID: u32 = 0x7FF;
/// Highest extended (29-bit) CAN identifier.
pub const MAX_EXTENDED_ID: u32 = 0x1FFF_FFFF;
/// Payload lengths a CAN FD frame can carry (the DLC table of ISO 11898-1).
pub const FD_LENGTHS: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64];
/// Check a profile on its own (no machine facts). Returns every problem found.
pub fn validate(profile: &Profile) -> Result<(), Vec<ValidationError>> {
    let mut e = Errors::default();
    if profile.name.trim().is_empty() {
        e.push(
            "name",
            format!("{:?} is empty: give the profile a name", profile.name),
        );
    }
    if let Some(h) = &profile.host {
        host(h, &mut e);
    }
    if let Some(g) = &profile.guest {
        guest(g, &mut e);
    }
    if let Some(c) = &profile.can {
        can(c, &mut e);
    }
    requirements(profile, &mut e);
    e.finish()
}

/// Check the `host` section against the machine behind `root` (the KVM host): every CPU
/// it names must be online, hugepages of its size must be supported, its NUMA node must
/// exist. Call it after [`validate`]; a profile without `host` passes.
pub fn validate_against(profile: &Profile, root: &SysRoot) -> Result<(), Vec<ValidationError>> {
    let Some(h) = &profile.host else {
        return Ok(());
    };
    let mut e = Errors::default();
    let machine = match Machine::read(root) {
        Ok(m) => m,
        Err(msg) => {
            e.push("host", msg);
            return e.finish();
        }
    };
    machine.check_set(&mut e, "host.housekeeping_cpus", &h.housekeeping_cpus);
    machine.check_set(&mut e, "host.realtime_cpus", &h.realtime_cpus);
    if !machine.cpus.is_empty() && machine.cpus.is_subset(&h.realtime_cpus) {
        e.push(
            "host.realtime_cpus",
            format!(
                "{} covers every CPU of this machine ({}: {}): keep one for housekeeping",
                q(&h.realtime_cpus),
                machine.source,
                machine.cpus
            ),
        );
    }
    if let Some(s) = &h.emulator_cpus {
        machine.check_set(&mut e, "host.emulator_cpus", s);
    }
    if let Some(s) = &h.iothread_cpus {
        machine.check_set(&mut e, "host.iothread_cpus", s);
    }
    if let Some(s) = &h.irqs.steer_to {
        machine.check_set(&mut e, "host.irqs.steer_to", s);
    }
    for (i, v) in h.vcpus.iter().enumerate() {
        machine.check_set(
            &mut e,
            &format!("host.vcpus[{i}].cpu"),
            &CpuSet::from_cpus([v.cpu]),
        );
    }
    crate::vms::validate_against(h, &machine, &mut e);
    if let Some(hp) = &h.hugepages {
        let dir = rt_sys::hugepages::POOLS;
        let sub = rt_sys::hugepages::pool_dir(hp.size_kib);
        // A tree without the directory says nothing (a fake root, hugetlbfs not built).
        if root.exists(dir) && !root.exists(&sub) {
            e.push(
                "host.hugepages.size_kib",
                format!(
                    "{} KiB pages are not supported by this kernel (no {})",
                    hp.size_kib,
                    root.display(&sub)
                ),
            );
        }
        if let Some(node) = hp.node {
            let nodes = rt_sys::hugepages::NODES;
            let n = rt_sys::hugepages::node_dir(node);
            if root.exists(nodes) && !root.exists(&n) {
                e.push(
                    "host.hugepages.node",
                    format!(
                        "{node} is not a NUMA node of this machine (no {})",
                        root.display(&n)
                    ),
                );
            }
        }
    }
    e.finish()
}

/// Check the guest-side CPUs (`guest.probe.cpus`, `guest.realtime_cpus`, IRQ threads,
/// ECU sender CPUs) against the machine behind `root` (the guest). Call it after
/// [`validate`], inside the guest.
pub fn validate_guest_against(
    profile: &Profile,
    root: &SysRoot,
) -> Result<(), Vec<ValidationError>> {
    let ecu_cpus = profile
        .can
        .as_ref()
        .is_some_and(|c| c.ecus.iter().any(|x| x.cpu.is_some()));
    if profile.guest.is_none() && !ecu_cpus {
        return Ok(());
    }
    let mut e = Errors::default();
    let machine = match Machine::read(root) {
        Ok(m) => m,
        Err(msg) => {
            e.push("guest", msg);
            return e.finish();
        }
    };
    if let Some(g) = &profile.guest {
        machine.check_set(&mut e, "guest.probe.cpus", &g.probe.cpus);
        if let Some(s) = &g.realtime_cpus {
            machine.check_set(&mut e, "guest.realtime_cpus", s);
        }
        for (i, t) in g.irq_threads.iter().enumerate() {
            if let Some(s) = &t.cpus {
                machine.check_set(&mut e, &format!("guest.irq_threads[{i}].cpus"), s);
            }
        }
    }
    if let Some(c) = &profile.can {
        for (i, x) in c.ecus.iter().enumerate() {
            if let Some(cpu) = x.cpu {
                machine.check_set(
                    &mut e,
                    &format!("can.ecus[{i}].cpu"),
                    &CpuSet::from_cpus([cpu]),
                );
            }
        }
    }
    e.finish()
}

/// A CAN identifier in the usual hex form: `0x0C0`, `0x18FF5021`.
fn can_id(id: u32, extended: bool) -> String {
    if extended {
        format!("0x{id:08X}")
    } else {
        format!("0x{id:03X}")
    }
}

/// Highest energy-performance bias (`power/energy_perf_bias`).
pub const MAX_EPB: u8 = 15;

fn host(h: &Host, e: &mut Errors) {
    let hk = &h.housekeeping_cpus;
    let rt = &h.realtime_cpus;
    if hk.is_empty() {
        e.push(
            "host.housekeeping_cpus",
            "\"\" is empty: keep at least one CPU for the OS, device IRQs and QEMU's main \
             loop (FIFO vCPUs on every CPU starve them)",
        );
    }
    if rt.is_empty() {
        e.push(
            "host.realtime_cpus",
            "\"\" is empty: name the CPUs reserved for real-time vCPUs",
        );
    }
    let both = hk.intersection(rt);
    if !both.is_empty() {
        e.push(
            "host.realtime_cpus",
            format!(
                "{} also in housekeeping_cpus {}: a CPU is either housekeeping or realtime",
                cpus_are(&both),
                q(hk)
            ),
        );
    }

    kernel_args(h, e);

    if let Some(ns) = h.kvm.halt_poll_ns {
        if ns > u64::from(u32::MAX) {
            e.push(
                "host.kvm.halt_poll_ns",
                format!(
                    "{ns} is above {} (the kernel parameter is an unsigned int)",
                    u32::MAX
                ),
            );
        }
    }

    if let Some(s) = &h.irqs.steer_to {
        if h.irqs.skip {
            e.push(
                "host.irqs.skip",
                format!(
                    "true, but host.irqs.steer_to is {}: say one or the other",
                    q(s)
                ),
            );
        } else {
            off_realtime(e, "host.irqs.steer_to", s, rt, "device IRQs");
        }
    }
    if let Some(s) = &h.emulator_cpus {
        off_realtime(e, "host.emulator_cpus", s, rt, "QEMU's emulator threads");
    }
    if let Some(s) = &h.iothread_cpus {
        off_realtime(e, "host.iothread_cpus", s, rt, "QEMU's I/O threads");
    }

    sysctl_extra(h, e);

    hugepages(h, e);

    match &h.vm {
        None => {
            if !h.vcpus.is_empty() && h.vms.is_empty() {
                e.push(
                    "host.vcpus",
                    format!(
                        "{} placement(s) but host.vm is absent: say which QEMU process \
                         (qemu_name, libvirt, pid, pidfile or qmp)",
                        h.vcpus.len()
                    ),
                );
            }
        }
        Some(vm) => vm_locator(e, "host.vm", vm),
    }
    crate::vms::validate(h, e);
    vcpu_list(e, "host.vcpus", &h.vcpus, rt, &BesideMainLoop::default());
    kthread_ladder(h, e);
    helper_policies(h, e);
    power(h, e);
}

/// `host.kernel.extra_args`: one argument each, not one the flags generate.
fn kernel_args(h: &Host, e: &mut Errors) {
    for (i, arg) in h.kernel.extra_args.iter().enumerate() {
        let path = format!("host.kernel.extra_args[{i}]");
        if arg.trim().is_empty() || arg.chars().any(char::is_whitespace) {
            e.push(
                path,
                format!("{arg:?} is not one boot argument (empty or contains spaces)"),
            );
            continue;
        }
        let key = arg.split('=').next().unwrap_or(arg);
        let generated = match key {
            "isolcpus" => h.kernel.isolcpus,
            "nohz_full" => h.kernel.nohz_full,
            "rcu_nocbs" => h.kernel.rcu_nocbs,
            _ => false,
        };
        if generated {
            e.push(
                path,
                format!(
                    "{arg:?} repeats what host.kernel.{key} = true generates from \
                     realtime_cpus: set one of them"
                ),
            );
        }
    }
}

/// `host.sysctl.extra`: dotted names, values, and not RT throttling by hand.
fn sysctl_extra(h: &Host, e: &mut Errors) {
    for (key, value) in &h.sysctl.extra {
        let path = format!("host.sysctl.extra[{key:?}]");
        let valid_name = key.contains('.')
            && !key.starts_with('.')
            && !key.ends_with('.')
            && !key.contains("..")
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid_name {
            e.push(
                path,
                format!("{key:?} is not a dotted sysctl name (like \"vm.swappiness\")"),
            );
        } else if key == "kernel.sched_rt_runtime_us" {
            e.push(
                path,
                "sets RT throttling by hand: use host.sysctl.rt_runtime_unlimited, which is \
                 only honoured when housekeeping CPUs exist",
            );
        } else if value.trim().is_empty() {
            e.push(path, format!("{value:?} is empty"));
        }
    }
}

/// `host.hugepages`: a page size, a count, enough for the VMs on it.
fn hugepages(h: &Host, e: &mut Errors) {
    if let Some(hp) = &h.hugepages {
        if !HUGEPAGE_SIZES_KIB.contains(&hp.size_kib) {
            e.push(
                "host.hugepages.size_kib",
                format!(
                    "{} is not a hugepage size: use 2048 (2 MiB) or 1048576 (1 GiB)",
                    hp.size_kib
                ),
            );
        }
        if hp.count == 0 {
            e.push(
                "host.hugepages.count",
                "0 reserves nothing: give the number of pages, or drop host.hugepages",
            );
        } else if let Some((mem, what)) = crate::vms::hugepage_memory(h) {
            let have_kib = hp.count.saturating_mul(hp.size_kib);
            if HUGEPAGE_SIZES_KIB.contains(&hp.size_kib) && have_kib < mem.saturating_mul(1024) {
                e.push(
                    "host.hugepages.count",
                    format!(
                        "{} pages of {} KiB ({} MiB) cannot hold {what}",
                        hp.count,
                        hp.size_kib,
                        have_kib / 1024
                    ),
                );
            }
        }
    }
}

/// The kernel-thread ladder must stand above every real-time vCPU: a FIFO kernel thread
/// below a busy FIFO vCPU on its CPU never runs again (RT throttling stops both).
fn kthread_ladder(h: &Host, e: &mut Errors) {
    let Some(k) = &h.kthread_priorities else {
        return;
    };
    let top = crate::vms::host_vms(h)
        .into_iter()
        .flat_map(|v| {
            let path = v.vcpus_path.clone();
            v.vcpus
                .into_iter()
                .enumerate()
                .filter(|(_, p)| p.policy.is_realtime())
                .map(move |(i, p)| (p.priority, format!("{path}[{i}]"), p.cpu))
        })
        .max_by_key(|(prio, ..)| *prio);
    for (field, prio) in [
        ("ksoftirqd", k.ksoftirqd),
        ("ktimers", k.ktimers),
        ("rcuc", k.rcuc),
        ("rcub", k.rcub),
        ("kvm_pit", k.kvm_pit),
    ] {
        let path = format!("host.kthread_priorities.{field}");
        if prio == 0 || prio > MAX_RT_PRIORITY {
            fifo_priority(e, &path, prio);
        } else if let Some((vprio, vpath, cpu)) = top.as_ref().filter(|(v, ..)| prio <= *v) {
            e.push(
                path,
                format!(
                    "{prio} is not above the FIFO {vprio} of {vpath} (CPU {cpu}): the kernel \
                     thread would wait behind a busy vCPU for ever (RT throttling stops it \
                     too); give the vCPUs priority 1 as tuned and KubeVirt do, or raise the \
                     ladder"
                ),
            );
        }
    }
}

/// Real-time emulator or I/O threads share the housekeeping CPUs with the host: they are
/// only safe while RT throttling leaves the rest of the host some time.
fn helper_policies(h: &Host, e: &mut Errors) {
    if !h.sysctl.rt_runtime_unlimited {
        return;
    }
    for v in crate::vms::host_vms(h) {
        for (field, policy) in [
            ("emulator_policy", v.emulator_policy),
            ("iothread_policy", v.iothread_policy),
        ] {
            if policy.is_realtime() {
                e.push(
                    v.field(field),
                    format!(
                        "{policy} on the housekeeping CPUs together with \
                         host.sysctl.rt_runtime_unlimited: nothing would stop a busy \
                         emulator or I/O thread from starving the host; keep RT throttling"
                    ),
                );
            }
        }
    }
}

/// Words the cpufreq files take, and the energy-performance bias range.
fn power(h: &Host, e: &mut Errors) {
    let p = &h.power;
    for (field, v) in [("governor", &p.governor), ("epp", &p.epp)] {
        if let Some(v) = v {
            let word = !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !word {
                e.push(
                    format!("host.power.{field}"),
                    format!("{v:?} is not a cpufreq word (like \"performance\")"),
                );
            }
        }
    }
    if let Some(b) = p.epb.filter(|b| *b > MAX_EPB) {
        e.push(
            "host.power.epb",
            format!("{b} is outside 0..={MAX_EPB} (0 is performance, 15 power saving)"),
        );
    }
}

fn guest(g: &Guest, e: &mut Errors) {
    let p = &g.probe;
    if p.cpus.is_empty() {
        e.push(
            "guest.probe.cpus",
            "\"\" is empty: name the CPUs to measure",
        );
    }
    if !(MIN_PROBE_INTERVAL_US..=MAX_PROBE_INTERVAL_US).contains(&p.interval_us) {
        e.push(
            "guest.probe.interval_us",
            format!(
                "{} is outside {MIN_PROBE_INTERVAL_US}..={MAX_PROBE_INTERVAL_US} us",
                p.interval_us
            ),
        );
    }
    priority(
        e,
        "guest.probe.priority",
        p.policy,
        p.priority,
        " (priority defaults to 95: write priority: 0)",
    );
    let dur = p.duration.0;
    if dur.is_zero() {
        e.push(
            "guest.probe.duration",
            format!(
                "{:?} is zero: measure for some time, e.g. \"60s\"",
                fmt_duration(dur)
            ),
        );
    } else if p.interval_us > 0 && dur.as_micros() < u128::from(p.interval_us) {
        e.push(
            "guest.probe.duration",
            format!(
                "{:?} is shorter than one interval ({} us)",
                fmt_duration(dur),
                p.interval_us
            ),
        );
    }
    if p.breaktrace_us == Some(0) {
        e.push(
            "guest.probe.breaktrace_us",
            "0 would stop at the first sample: give a latency in us",
        );
    }
    if let Some(s) = &g.realtime_cpus {
        if s.is_empty() {
            e.push("guest.realtime_cpus", "\"\" is empty: omit it or name CPUs");
        }
    }
    if let Some(ns) = g.guest_halt_poll_ns {
        if ns > u64::from(u32::MAX) {
            e.push(
                "guest.guest_halt_poll_ns",
                format!(
                    "{ns} is above {} (the parameter is an unsigned int)",
                    u32::MAX
                ),
            );
        }
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, t) in g.irq_threads.iter().enumerate() {
        let path = format!("guest.irq_threads[{i}]");
        if t.name.trim().is_empty() {
            e.push(
                format!("{path}.name"),
                "\"\" is empty: name the IRQ (e.g. \"can1\")",
            );
        } else if let Some(j) = names.insert(t.name.as_str(), i) {
            names.insert(t.name.as_str(), j);
            e.push(
                format!("{path}.name"),
                format!("{:?} is already set by guest.irq_threads[{j}]", t.name),
            );
        }
        if let Some(prio) = t.priority {
            fifo_priority(e, &format!("{path}.priority"), prio);
        }
        if let Some(s) = &t.cpus {
            if s.is_empty() {
                e.push(
                    format!("{path}.cpus"),
                    "\"\" is empty: omit it or name CPUs",
                );
            }
        }
        if t.priority.is_none() && t.cpus.is_none() {
            e.push(path, format!("{:?} sets neither priority nor cpus", t.name));
        }
    }
}

fn fmt_duration(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn can(c: &Can, e: &mut Errors) {
    if c.bitrate == 0 || c.bitrate > MAX_BITRATE {
        e.push(
            "can.bitrate",
            format!("{} is outside 1..={MAX_BITRATE} bit/s", c.bitrate),
        );
    }
    let fd_msgs: Vec<(usize, usize, &Message)> = c
        .ecus
        .iter()
        .enumerate()
        .flat_map(|(i, x)| x.messages.iter().enumerate().map(move |(j, m)| (i, j, m)))
        .filter(|(_, _, m)| m.kind != FrameKind::Classic)
        .collect();
    match c.data_bitrate {
        Some(d) => {
            if d < c.bitrate {
                e.push(
                    "can.data_bitrate",
                    format!("{d} is below the nominal bitrate {}", c.bitrate),
                );
            } else if d > MAX_DATA_BITRATE {
                e.push(
                    "can.data_bitrate",
                    format!("{d} is above {MAX_DATA_BITRATE} bit/s"),
                );
            } else if fd_msgs.is_empty() {
                e.push(
                    "can.data_bitrate",
                    format!(
                        "{d} is set but no message is CAN FD: give messages kind: FdBrs, or \
                         drop data_bitrate"
                    ),
                );
            }
        }
        None => {
            if let Some((i, j, m)) = fd_msgs.iter().find(|(_, _, m)| m.kind == FrameKind::FdBrs) {
                e.push(
                    "can.data_bitrate",
                    format!(
                        "missing, but can.ecus[{i}].messages[{j}] ({}) is FdBrs: give the \
                         data-phase bitrate",
                        msg_name(m)
                    ),
                );
            }
        }
    }
    ifname(e, "can.tx", &c.tx);
    ifname(e, "can.rx", &c.rx);
    if !(c.error_rate_per_s >= 0.0 && c.error_rate_per_s.is_finite()) {
        e.push(
            "can.error_rate_per_s",
            format!("{} is not a rate (>= 0)", c.error_rate_per_s),
        );
    }
    if c.ecus.is_empty() {
        e.push(
            "can.ecus",
            "[] is empty: list at least one ECU with messages",
        );
    }

    can_ecus(c, e);
}

/// The ECUs and their messages: names and ids unique, each message checked.
fn can_ecus(c: &Can, e: &mut Errors) {
    let mut ecu_names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ids: BTreeMap<(u32, bool), (usize, usize)> = BTreeMap::new();
    let mut msg_names: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (i, x) in c.ecus.iter().enumerate() {
        let ep = format!("can.ecus[{i}]");
        if x.name.trim().is_empty() {
            e.push(format!("{ep}.name"), "\"\" is empty");
        } else if let Some(k) = ecu_names.insert(x.name.as_str(), i) {
            ecu_names.insert(x.name.as_str(), k);
            e.push(
                format!("{ep}.name"),
                format!("{:?} is already the name of can.ecus[{k}]", x.name),
            );
        }
        fifo_priority(e, &format!("{ep}.priority"), x.priority);
        if x.messages.is_empty() {
            e.push(
                format!("{ep}.messages"),
                format!("[] is empty: ECU {:?} sends nothing", x.name),
            );
        }
        for (j, m) in x.messages.iter().enumerate() {
            let mp = format!("{ep}.messages[{j}]");
            message(e, &mp, m);
            if let Some(&(a, b)) = ids.get(&(m.id, m.extended)) {
                e.push(
                    format!("{mp}.id"),
                    format!(
                        "{} is already sent by can.ecus[{a}].messages[{b}] ({}): one sender \
                         per id on a bus",
                        can_id(m.id, m.extended),
                        msg_name(&c.ecus[a].messages[b])
                    ),
                );
            } else {
                ids.insert((m.id, m.extended), (i, j));
            }
            if let Some(n) = &m.name {
                if n.trim().is_empty() {
                    e.push(
                        format!("{mp}.name"),
                        "\"\" is empty: omit it or name the message",
                    );
                } else if let Some(&(a, b)) = msg_names.get(n.as_str()) {
                    e.push(
                        format!("{mp}.name"),
                        format!("{n:?} is already the name of can.ecus[{a}].messages[{b}]"),
                    );
                } else {
                    msg_names.insert(n.as_str(), (i, j));
                }
            }
        }
    }
}

/// A message's name for error texts.
fn msg_name(m: &Message) -> String {
    m.name.clone().unwrap_or_else(|| can_id(m.id, m.extended))
}

fn message(e: &mut Errors, mp: &str, m: &Message) {
    let max = if m.extended {
        MAX_EXTENDED_ID
    } else {
        MAX_STANDARD_ID
    };
    if m.id > max {
        e.push(
            format!("{mp}.id"),
            format!(
                "0x{:X} is above 0x{max:X}, the highest {} id{}",
                m.id,
                if m.extended {
                    "extended (29-bit)"
                } else {
                    "standard (11-bit)"
                },
                if m.extended {
                    ""
                } else {
                    " (extended: true for 29-bit ids)"
                }
            ),
        );
    }
    match m.kind {
        FrameKind::Classic if m.len > 8 => e.push(
            format!("{mp}.len"),
            format!(
                "{} is above 8, the classic CAN maximum (kind: Fd or FdBrs for more)",
                m.len
            ),
        ),
        FrameKind::Fd | FrameKind::FdBrs if !FD_LENGTHS.contains(&m.len) => e.push(
            format!("{mp}.len"),
            format!(
                "{} is not a CAN FD length (0..=8, 12, 16, 20, 24, 32, 48, 64)",
                m.len
            ),
        ),
        _ => {}
    }
    let period_ok = m.period_ms > 0.0 && m.period_ms.is_finite();
    if !period_ok {
        e.push(
            format!("{mp}.period_ms"),
            format!("{} is not a positive number of ms", m.period_ms),
        );
    }
    if m.len <= 64 {
        signals(e, mp, m);
        if let Some(x) = &m.e2e {
            e2e(e, &format!("{mp}.e2e"), x, m);
        }
    }
    if m.deadline_us == Some(0) {
        e.push(
            format!("{mp}.deadline_us"),
            "0 cannot be met: give the deadline in us, or omit it (the period)",
        );
    }
    if period_ok {
        let period_us = m.period_ms * 1000.0;
        for (field, v) in [("offset_us", m.offset_us), ("jitter_us", m.jitter_us)] {
            // u64 -> f64 loses precision only above 2^53 us, far beyond any period.
            let vf = v as f64;
            if vf >= period_us {
                e.push(
                    format!("{mp}.{field}"),
                    format!(
                        "{v} is not below the period ({} ms = {period_us} us)",
                        m.period_ms
                    ),
                );
            }
        }
    }
}

/// Payload bits of a message.
fn payload_bits(m: &Message) -> u32 {
    u32::from(m.len) * 8
}

fn signal(e: &mut Errors, sp: &str, s: &Signal, m: &Message) {
    if s.name.trim().is_empty() {
        e.push(format!("{sp}.name"), "\"\" is empty: name the signal");
    }
    if !(1..=64).contains(&s.size) {
        e.push(
            format!("{sp}.size"),
            format!("{} is outside 1..=64 bits", s.size),
        );
        return;
    }
    let want = match s.value_type {
        ValueType::Float32 => Some(32),
        ValueType::Float64 => Some(64),
        _ => None,
    };
    if let Some(w) = want.filter(|w| *w != s.size) {
        e.push(
            format!("{sp}.size"),
            format!(
                "{} does not fit value_type {:?}: it takes {w} bits",
                s.size, s.value_type
            ),
        );
    }
    let bits = payload_bits(m);
    let high = s.bit_positions().into_iter().max().unwrap_or(0);
    if high >= bits {
        e.push(
            format!("{sp}.start_bit"),
            format!(
                "{} with {} bits {:?} reaches payload bit {high}, beyond the {} bytes of the \
                 message (len)",
                s.start_bit, s.size, s.byte_order, m.len
            ),
        );
    }
    if !(s.factor.is_finite() && s.factor != 0.0) {
        e.push(
            format!("{sp}.factor"),
            format!("{} is not a finite, non-zero number", s.factor),
        );
    }
    if !s.offset.is_finite() {
        e.push(
            format!("{sp}.offset"),
            format!("{} is not finite", s.offset),
        );
    }
    if let (Some(lo), Some(hi)) = (s.min, s.max) {
        if lo > hi {
            e.push(format!("{sp}.min"), format!("{lo} is above max {hi}"));
        }
    }
    match &s.value {
        Some(Generator::Ramp { period_ms, .. }) if !(*period_ms > 0.0 && period_ms.is_finite()) => {
            e.push(
                format!("{sp}.value"),
                format!("Ramp period_ms {period_ms} is not a positive number"),
            );
        }
        Some(Generator::Cycle(v)) if v.is_empty() => {
            e.push(
                format!("{sp}.value"),
                "Cycle([]) is empty: give at least one value",
            );
        }
        Some(Generator::Constant(v)) if !v.is_finite() => {
            e.push(
                format!("{sp}.value"),
                format!("Constant({v}) is not finite"),
            );
        }
        _ => {}
    }
}

fn signals(e: &mut Errors, mp: &str, m: &Message) {
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let switches = m.multiplexors();
    for (k, s) in m.signals.iter().enumerate() {
        let sp = format!("{mp}.signals[{k}]");
        signal(e, &sp, s, m);
        if let Some(j) = names.insert(s.name.as_str(), k) {
            e.push(
                format!("{sp}.name"),
                format!("{:?} is already the name of {mp}.signals[{j}]", s.name),
            );
        }
        let Some(mux) = &s.mux else { continue };
        match &mux.switch {
            Some(sw) if !switches.contains(&sw.as_str()) => e.push(
                format!("{sp}.mux.switch"),
                format!("{sw:?} is not a multiplexor signal of the message"),
            ),
            None if switches.len() != 1 => e.push(
                format!("{sp}.mux.switch"),
                format!(
                    "missing, and the message has {} multiplexor signals: name the switch",
                    switches.len()
                ),
            ),
            _ => {}
        }
        if mux.values.is_empty() || mux.values.iter().any(|(a, b)| a > b) {
            e.push(
                format!("{sp}.mux.values"),
                format!(
                    "{:?} is not a list of ranges (lo, hi) with lo <= hi",
                    mux.values
                ),
            );
        }
    }
}

/// Header bits of an E2E profile (CRC and counter) and the counter's largest value.
fn e2e_header(p: E2eProfile) -> (u32, u8) {
    match p {
        E2eProfile::P01 | E2eProfile::P11 => (16, 14),
        E2eProfile::P02 => (16, 15),
        E2eProfile::P05 => (24, 255),
    }
}

fn e2e(e: &mut Errors, ep: &str, x: &E2e, m: &Message) {
    let (header, max_counter) = e2e_header(x.profile);
    let off = u32::from(x.offset_bits);
    if off % 8 != 0 {
        e.push(
            format!("{ep}.offset_bits"),
            format!("{off} is not a whole byte (a multiple of 8)"),
        );
    } else if off + header > payload_bits(m) {
        e.push(
            format!("{ep}.offset_bits"),
            format!(
                "{off}: the {:?} header ({header} bits) does not fit the {} bytes of the message",
                x.profile, m.len
            ),
        );
    }
    match x.profile {
        E2eProfile::P02 => {
            if x.data_id_list.len() != 16 {
                e.push(
                    format!("{ep}.data_id_list"),
                    format!(
                        "has {} entries: Profile 2 needs 16 (one per counter value)",
                        x.data_id_list.len()
                    ),
                );
            }
            if off != 0 {
                e.push(
                    format!("{ep}.offset_bits"),
                    format!("{off}: Profile 2's header is fixed at 0"),
                );
            }
        }
        E2eProfile::P11 if matches!(x.data_id_mode, DataIdMode::Alt | DataIdMode::Low) => e.push(
            format!("{ep}.data_id_mode"),
            format!(
                "{:?} is not a Profile 11 mode (Both or Nibble)",
                x.data_id_mode
            ),
        ),
        E2eProfile::P05 if x.data_id_mode != DataIdMode::Both => e.push(
            format!("{ep}.data_id_mode"),
            format!(
                "{:?}: Profile 5 always takes both bytes of the data id",
                x.data_id_mode
            ),
        ),
        _ => {}
    }
    if x.profile != E2eProfile::P02 && !x.data_id_list.is_empty() {
        e.push(
            format!("{ep}.data_id_list"),
            "is only for Profile 2 (the others take data_id)",
        );
    }
    if x.data_id_mode == DataIdMode::Nibble && x.data_id > 0x0FFF {
        e.push(
            format!("{ep}.data_id"),
            format!(
                "0x{:X}: Nibble mode sends 12 bits of the data id (at most 0xFFF)",
                x.data_id
            ),
        );
    }
    if x.max_delta_counter == 0 || x.max_delta_counter > max_counter {
        e.push(
            format!("{ep}.max_delta_counter"),
            format!(
                "{} is outside 1..={max_counter} for {:?}",
                x.max_delta_counter, x.profile
            ),
        );
    }
    if let Some(t) = x.timeout_ms {
        if !(t > 0.0 && t.is_finite()) {
            e.push(
                format!("{ep}.timeout_ms"),
                format!("{t} is not a positive number of ms"),
            );
        }
    }
}

/// Metrics whose bound is a time (`bound_us`); the others take `bound`.
fn is_time_metric(m: &Metric) -> bool {
    matches!(
        m,
        Metric::ProbeLatency { .. }
            | Metric::OslatLatency { .. }
            | Metric::HwlatLatency
            | Metric::CanLatency { .. }
            | Metric::CanJitter { .. }
            | Metric::WcrtSlack { .. }
    )
}

fn metric_name(m: &Metric) -> &'static str {
    match m {
        Metric::ProbeLatency { .. } => "ProbeLatency",
        Metric::ProbeMissed => "ProbeMissed",
        Metric::OslatLatency { .. } => "OslatLatency",
        Metric::HwlatLatency => "HwlatLatency",
        Metric::CanLatency { .. } => "CanLatency",
        Metric::CanJitter { .. } => "CanJitter",
        Metric::CanDeadlineMisses { .. } => "CanDeadlineMisses",
        Metric::CanLoss { .. } => "CanLoss",
        Metric::BusLoad => "BusLoad",
        Metric::WcrtSlack { .. } => "WcrtSlack",
        Metric::E2eErrors { .. } => "E2eErrors",
        Metric::E2eTimeouts { .. } => "E2eTimeouts",
    }
}

fn requirements(profile: &Profile, e: &mut Errors) {
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, r) in profile.requirements.iter().enumerate() {
        let rp = format!("requirements[{i}]");
        if r.id.trim().is_empty() {
            e.push(
                format!("{rp}.id"),
                "\"\" is empty: give the requirement an id",
            );
        } else if let Some(k) = ids.insert(r.id.as_str(), i) {
            ids.insert(r.id.as_str(), k);
            e.push(
                format!("{rp}.id"),
                format!("{:?} is already the id of requirements[{k}]", r.id),
            );
        }
        if r.text.trim().is_empty() {
            e.push(format!("{rp}.text"), "\"\" is empty: say what is required");
        }
        metric(profile, r, &rp, e);
        bound(r, &rp, e);
    }
}

fn metric(profile: &Profile, r: &Requirement, rp: &str, e: &mut Errors) {
    let name = metric_name(&r.metric);
    let (percentile, id) = match &r.metric {
        Metric::ProbeLatency { percentile, .. } | Metric::OslatLatency { percentile, .. } => {
            (Some(*percentile), None)
        }
        Metric::CanLatency { percentile, id } | Metric::CanJitter { percentile, id } => {
            (Some(*percentile), *id)
        }
        Metric::CanDeadlineMisses { id }
        | Metric::CanLoss { id }
        | Metric::WcrtSlack { id }
        | Metric::E2eErrors { id }
        | Metric::E2eTimeouts { id } => (None, *id),
        Metric::ProbeMissed | Metric::BusLoad | Metric::HwlatLatency => (None, None),
    };
    if let Some(p) = percentile {
        if !(p > 0.0 && p <= 100.0) {
            e.push(
                format!("{rp}.metric.percentile"),
                format!("{p} is outside (0, 100] (100 is the maximum)"),
            );
        }
    }
    if matches!(r.metric, Metric::OslatLatency { .. } | Metric::HwlatLatency) {
        // `rt-guest oslat -c` names its CPUs, `rt-host hwlat` runs where the tracer is:
        // nothing in the profile to check them against.
        return;
    }
    let probe = matches!(r.metric, Metric::ProbeLatency { .. } | Metric::ProbeMissed);
    if probe {
        match &profile.guest {
            None => e.push(
                format!("{rp}.metric"),
                format!("{name} needs a guest section (the probe), and the profile has none"),
            ),
            Some(g) => {
                if let Metric::ProbeLatency { cpu: Some(cpu), .. } = r.metric {
                    if !g.probe.cpus.contains(cpu) {
                        e.push(
                            format!("{rp}.metric.cpu"),
                            format!(
                                "{cpu} is not measured (guest.probe.cpus {})",
                                q(&g.probe.cpus)
                            ),
                        );
                    }
                }
            }
        }
        return;
    }
    match &profile.can {
        None => e.push(
            format!("{rp}.metric"),
            format!("{name} needs a can section, and the profile has none"),
        ),
        Some(c) => {
            let msgs = || c.ecus.iter().flat_map(|x| &x.messages);
            if let Some(id) = id {
                let known = msgs().any(|m| m.id == id);
                if !known {
                    e.push(
                        format!("{rp}.metric.id"),
                        format!("0x{id:03X} is not a message of the CAN matrix (can.ecus)"),
                    );
                }
            }
            if matches!(
                r.metric,
                Metric::E2eErrors { .. } | Metric::E2eTimeouts { .. }
            ) {
                let protected = |m: &&Message| m.e2e.is_some() && id.is_none_or(|i| m.id == i);
                if msgs().any(|m| id.is_none_or(|i| m.id == i)) && !msgs().any(|m| protected(&m)) {
                    e.push(
                        format!("{rp}.metric"),
                        match id {
                            Some(i) => format!("{name}: message 0x{i:03X} has no e2e protection"),
                            None => {
                                format!("{name}: no message of the CAN matrix has e2e protection")
                            }
                        },
                    );
                }
            }
        }
    }
}

fn bound(r: &Requirement, rp: &str, e: &mut Errors) {
    let name = metric_name(&r.metric);
    let (want, field, other, unit) = if is_time_metric(&r.metric) {
        (r.bound_us, "bound_us", "bound", "microseconds")
    } else {
        (r.bound, "bound", "bound_us", "a count or percent")
    };
    let wrong = if is_time_metric(&r.metric) {
        r.bound
    } else {
        r.bound_us
    };
    if let Some(w) = wrong {
        e.push(
            format!("{rp}.{other}"),
            format!("{w} is the wrong kind of bound: {name} takes {field} ({unit})"),
        );
        return;
    }
    let Some(v) = want else {
        e.push(
            format!("{rp}.{field}"),
            format!("missing: {name} needs {field} ({unit})"),
        );
        return;
    };
    if !(v >= 0.0 && v.is_finite()) {
        e.push(
            format!("{rp}.{field}"),
            format!("{v} is not a bound (>= 0)"),
        );
        return;
    }
    match r.metric {
        Metric::BusLoad if v > 100.0 => e.push(
            format!("{rp}.{field}"),
            format!("{v} is above 100 (percent)"),
        ),
        Metric::ProbeMissed
        | Metric::CanDeadlineMisses { .. }
        | Metric::CanLoss { .. }
        | Metric::E2eErrors { .. }
        | Metric::E2eTimeouts { .. }
            if v.fract() != 0.0 =>
        {
            e.push(format!("{rp}.{field}"), format!("{v} is not a whole count"));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rt_sys::sched::Policy;

    fn bundled(name: &str) -> Profile {
        let text = crate::BUNDLED.iter().find(|(n, _)| *n == name).unwrap().1;
        crate::parse(text, name).unwrap()
    }

    fn one(p: &Profile) -> String {
        let errs = validate(p).expect_err("expected an error");
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs[0].to_string()
    }

    #[test]
    fn bundled_profiles_are_valid() {
        for (n, _) in crate::BUNDLED {
            validate(&bundled(n)).unwrap_or_else(|e| panic!("{n}: {e:?}"));
        }
    }

    /// A two-CPU host with one VM whose vCPU 1 runs FIFO `prio` on CPU 1, plus `extra`
    /// host fields.
    fn one_vm(prio: u8, vm_extra: &str, extra: &str) -> Profile {
        let text = format!(
            r#"Profile(name: "t", host: (housekeeping_cpus: "0", realtime_cpus: "1", {extra}
                vms: [(name: "v", memory_mib: 64, vcpus: [(vcpu: 1, cpu: 1, priority: {prio})] {vm_extra})]))"#
        );
        crate::parse(&text, "t").unwrap()
    }

    #[test]
    fn a_kthread_ladder_below_a_vcpu_is_refused() {
        validate(&one_vm(1, "", "kthread_priorities: (),")).unwrap();
        let errs = validate(&one_vm(4, "", "kthread_priorities: (rcuc: 5, rcub: 5),")).unwrap_err();
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs.len(),
            3,
            "ksoftirqd, ktimers and kvm_pit at 2: {msgs:?}"
        );
        assert!(
            msgs[0].starts_with(
                "host.kthread_priorities.ksoftirqd: 2 is not above the FIFO 4 of \
                 host.vms[0].vcpus[0] (CPU 1)"
            ),
            "{msgs:?}"
        );
        let e = one(&one_vm(1, "", "kthread_priorities: (ktimers: 0),"));
        assert_eq!(e, "host.kthread_priorities.ktimers: 0 is outside 1..=99");
    }

    #[test]
    fn a_realtime_vcpu_may_sit_below_a_realtime_main_loop_on_the_emulator_cpus() {
        let v0 = |emu: &str| {
            format!(
                ", vcpus: [(vcpu: 0, cpu: 0, priority: 1), (vcpu: 1, cpu: 1, priority: 1)]{emu}"
            )
        };
        let text = |emu: &str, extra: &str| {
            format!(
                r#"Profile(name: "t", host: (housekeeping_cpus: "0", realtime_cpus: "1", {extra}
                    vms: [(name: "v", memory_mib: 64 {})]))"#,
                v0(emu)
            )
        };
        let p = |emu: &str, extra: &str| crate::parse(&text(emu, extra), "t").unwrap();
        validate(&p(", emulator_policy: Fifo, emulator_priority: 2", "")).unwrap();
        for (emu, extra) in [
            ("", ""),
            (", emulator_policy: Fifo, emulator_priority: 1", ""),
            (
                ", emulator_policy: Fifo, emulator_priority: 2, emulator_cpus: \"0\"",
                "sysctl: (rt_runtime_unlimited: true),",
            ),
        ] {
            let errs = validate(&p(emu, extra)).unwrap_err();
            assert!(
                errs.iter().any(|e| e.to_string().starts_with(
                    "host.vms[0].vcpus[0].cpu: 0 is not a realtime CPU (realtime_cpus \"1\"): a fifo vCPU belongs on an isolated CPU, or on the VM's emulator CPUs below a real-time main loop"
                )),
                "{emu} {extra}: {errs:?}"
            );
        }
    }

    #[test]
    fn realtime_helpers_need_rt_throttling_and_power_words_are_checked() {
        let vm = ", emulator_policy: Fifo, emulator_priority: 1, iothread_policy: Rr, iothread_priority: 2";
        validate(&one_vm(1, vm, "")).unwrap();
        let errs = validate(&one_vm(1, vm, "sysctl: (rt_runtime_unlimited: true),")).unwrap_err();
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(
            msgs[0].starts_with("host.vms[0].emulator_policy: fifo on the housekeeping CPUs together with host.sysctl.rt_runtime_unlimited"),
            "{msgs:?}"
        );
        assert!(
            msgs[1].starts_with("host.vms[0].iothread_policy: rr"),
            "{msgs:?}"
        );
        let e = one(&one_vm(1, ", iothread_priority: 3", ""));
        assert_eq!(
            e,
            "host.vms[0].iothread_priority: 3 must be 0 for policy other"
        );
        let e = one(&one_vm(1, "", r#"power: (governor: "Perf ormance"),"#));
        assert!(
            e.starts_with("host.power.governor: \"Perf ormance\" is not a cpufreq word"),
            "{e}"
        );
        let e = one(&one_vm(1, "", "power: (epb: 16),"));
        assert_eq!(
            e,
            "host.power.epb: 16 is outside 0..=15 (0 is performance, 15 power saving)"
        );
    }

    #[test]
    fn a_probe_interval_below_the_probes_minimum_is_refused_naming_the_field() {
        let mut p = bundled("lab");
        p.guest.as_mut().unwrap().probe.interval_us = 5;
        assert_eq!(
            one(&p),
            "guest.probe.interval_us: 5 is outside 10..=1000000 us"
        );
        p.guest.as_mut().unwrap().probe.interval_us = MIN_PROBE_INTERVAL_US;
        validate(&p).unwrap();
    }

    #[test]
    fn rr_priority_100_and_other_with_priority() {
        let mut p = crate::test_profiles::single_vm();
        let h = p.host.as_mut().unwrap();
        h.vcpus[0].policy = Policy::Rr;
        h.vcpus[0].priority = 100;
        assert_eq!(
            one(&p),
            "host.vcpus[0].priority: 100 is outside 1..=99 for policy rr"
        );
        let h = p.host.as_mut().unwrap();
        h.vcpus[0].policy = Policy::Other;
        h.vcpus[0].priority = 50;
        assert!(one(&p).starts_with("host.vcpus[0].priority: 50 must be 0 for policy other"));
        p.host.as_mut().unwrap().vcpus[0].priority = 0;
        validate(&p).unwrap();
    }

    #[test]
    fn other_vcpus_may_share_a_housekeeping_cpu() {
        let mut p = crate::test_profiles::single_vm();
        let h = p.host.as_mut().unwrap();
        h.vcpus = vec![
            crate::VcpuPin {
                vcpu: 0,
                cpu: 0,
                policy: Policy::Other,
                priority: 0,
            },
            crate::VcpuPin {
                vcpu: 2,
                cpu: 0,
                policy: Policy::Other,
                priority: 0,
            },
            crate::VcpuPin {
                vcpu: 1,
                cpu: 1,
                policy: Policy::Fifo,
                priority: 50,
            },
        ];
        validate(&p).unwrap();
        p.host.as_mut().unwrap().vcpus[1].policy = Policy::Fifo;
        p.host.as_mut().unwrap().vcpus[1].priority = 10;
        // vCPU 2 at FIFO on CPU 0: not realtime, and shares with vCPU 0.
        let errs = validate(&p).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].starts_with("host.vcpus[1].cpu: 0 is not a realtime CPU"),
            "{text:?}"
        );
        assert!(
            text[1].starts_with("host.vcpus[1].cpu: 0 already runs vCPU 0"),
            "{text:?}"
        );
    }

    #[test]
    fn a_libvirt_domain_is_one_way_to_name_the_vm() {
        let mut p = crate::test_profiles::single_vm();
        let vm = p.host.as_mut().unwrap().vm.as_mut().unwrap();
        vm.qemu_name = None;
        vm.libvirt = Some("ecu0".into());
        validate(&p).unwrap();
        let vm = p.host.as_mut().unwrap().vm.as_mut().unwrap();
        vm.libvirt = Some("../../etc/x".into());
        assert_eq!(
            one(&p),
            "host.vm.libvirt: \"../../etc/x\" is not a libvirt domain name (empty, a '/' or a leading '.')"
        );
        let vm = p.host.as_mut().unwrap().vm.as_mut().unwrap();
        vm.libvirt = Some("ecu0".into());
        vm.qemu_name = Some("ecu0".into());
        assert_eq!(
            one(&p),
            "host.vm: qemu_name \"ecu0\" and libvirt \"ecu0\" are both set: choose one"
        );
    }

    #[test]
    fn nan_period_and_negative_bound() {
        let mut p = bundled("lab");
        p.can.as_mut().unwrap().ecus[0].messages[0].period_ms = f64::NAN;
        assert!(one(&p).starts_with("can.ecus[0].messages[0].period_ms: NaN is not"));
        let mut p = bundled("lab");
        p.requirements[0].bound_us = Some(-1.0);
        assert_eq!(
            one(&p),
            "requirements[0].bound_us: -1 is not a bound (>= 0)"
        );
    }

    #[test]
    fn oslat_latency_takes_a_percentile_and_microseconds() {
        let mut p = bundled("lab");
        p.requirements[0].metric = Metric::OslatLatency {
            percentile: 99.9,
            cpu: Some(1),
        };
        validate(&p).unwrap();
        p.requirements[0].metric = Metric::OslatLatency {
            percentile: 0.0,
            cpu: None,
        };
        assert!(one(&p).starts_with("requirements[0].metric.percentile: 0 is outside"));
        let mut p = bundled("lab");
        p.requirements[0].metric = Metric::OslatLatency {
            percentile: 100.0,
            cpu: None,
        };
        p.requirements[0].bound = p.requirements[0].bound_us.take();
        assert!(
            one(&p).contains("OslatLatency takes bound_us"),
            "{}",
            one(&p)
        );
        let ron = r#"Profile(name: "x", requirements: [(id: "R1", asil: D, text: "busy loop",
            metric: OslatLatency(percentile: 100.0), bound_us: Some(40))])"#;
        let p = crate::parse(ron, "x").unwrap();
        assert_eq!(
            p.requirements[0].metric,
            Metric::OslatLatency {
                percentile: 100.0,
                cpu: None
            }
        );
    }

    #[test]
    fn count_bounds_are_whole_and_load_is_a_percentage() {
        let mut p = bundled("lab");
        p.requirements[1].bound = Some(0.5);
        assert_eq!(one(&p), "requirements[1].bound: 0.5 is not a whole count");
        let mut p = bundled("lab");
        p.requirements[5].bound = Some(120.0);
        assert_eq!(one(&p), "requirements[5].bound: 120 is above 100 (percent)");
    }

    #[test]
    fn several_errors_are_all_reported() {
        let mut p = bundled("ecu");
        let h = p.host.as_mut().unwrap();
        h.housekeeping_cpus = CpuSet::new();
        h.vms[0].vcpus[0].priority = 0;
        p.can.as_mut().unwrap().bitrate = 0;
        let errs = validate(&p).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "host.housekeeping_cpus",
                "host.vms[0].vcpus[0].priority",
                "can.bitrate"
            ]
        );
    }

    #[test]
    fn machine_without_cpu_files_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let errs = validate_against(&bundled("lab"), &SysRoot::new(dir.path())).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .to_string()
                .starts_with("host: cannot tell which CPUs exist"),
            "{errs:?}"
        );
    }

    #[test]
    fn present_is_used_when_online_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = dir.path().join("sys/devices/system/cpu");
        std::fs::create_dir_all(&cpu).unwrap();
        std::fs::write(cpu.join("present"), "0\n").unwrap();
        let errs = validate_against(&bundled("lab"), &SysRoot::new(dir.path())).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            text[0],
            "host.realtime_cpus: CPU 1 is not present on this machine (present: 0)"
        );
    }

    #[test]
    fn hugepage_size_checked_when_the_kernel_lists_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        std::fs::create_dir_all(sys.join("devices/system/cpu")).unwrap();
        std::fs::write(sys.join("devices/system/cpu/online"), "0-7\n").unwrap();
        std::fs::create_dir_all(sys.join("kernel/mm/hugepages/hugepages-1048576kB")).unwrap();
        let root = SysRoot::new(dir.path());
        let errs = validate_against(&bundled("ecu"), &root).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0]
                .to_string()
                .starts_with("host.hugepages.size_kib: 2048 KiB pages are not supported"),
            "{errs:?}"
        );
        std::fs::create_dir_all(sys.join("kernel/mm/hugepages/hugepages-2048kB")).unwrap();
        validate_against(&bundled("ecu"), &root).unwrap();
    }

    #[test]
    fn realtime_on_every_cpu_of_the_machine_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = dir.path().join("sys/devices/system/cpu");
        std::fs::create_dir_all(&cpu).unwrap();
        std::fs::write(cpu.join("online"), "0-1\n").unwrap();
        let mut p = bundled("lab");
        let h = p.host.as_mut().unwrap();
        h.housekeeping_cpus = CpuSet::from_cpus([2]);
        h.realtime_cpus = CpuSet::from_cpus([0, 1]);
        h.emulator_cpus = None;
        h.iothread_cpus = None;
        h.irqs.steer_to = None;
        validate(&p).unwrap();
        let errs = validate_against(&p, &SysRoot::new(dir.path())).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "host.housekeeping_cpus: CPU 2 is not online on this machine (online: 0-1)",
                "host.realtime_cpus: \"0-1\" covers every CPU of this machine (online: 0-1): \
                 keep one for housekeeping",
            ]
        );
    }

    #[test]
    fn hugepage_node_must_exist_when_the_kernel_lists_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        std::fs::create_dir_all(sys.join("devices/system/cpu")).unwrap();
        std::fs::write(sys.join("devices/system/cpu/online"), "0-7\n").unwrap();
        std::fs::create_dir_all(sys.join("devices/system/node/node0")).unwrap();
        let mut p = bundled("ecu");
        p.host.as_mut().unwrap().hugepages.as_mut().unwrap().node = Some(1);
        let root = SysRoot::new(dir.path());
        let errs = validate_against(&p, &root).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0]
                .to_string()
                .starts_with("host.hugepages.node: 1 is not a NUMA node of this machine"),
            "{errs:?}"
        );
        p.host.as_mut().unwrap().hugepages.as_mut().unwrap().node = Some(0);
        validate_against(&p, &root).unwrap();
    }

    #[test]
    fn guest_cpus_against_the_guest() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = dir.path().join("sys/devices/system/cpu");
        std::fs::create_dir_all(&cpu).unwrap();
        std::fs::write(cpu.join("online"), "0-1\n").unwrap();
        let root = SysRoot::new(dir.path());
        validate_guest_against(&bundled("lab"), &root).unwrap();
        let errs = validate_guest_against(&bundled("ecu"), &root).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "guest.probe.cpus: CPUs 2-3 are not online on this machine (online: 0-1)",
                "guest.realtime_cpus: CPUs 2-3 are not online on this machine (online: 0-1)",
            ]
        );
    }

    fn sig(name: &str, start: u16, size: u8) -> Signal {
        Signal::new(name, start, size)
    }

    #[test]
    fn motorola_bit_positions() {
        let mut s = sig("m", 7, 16);
        s.byte_order = crate::ByteOrder::BigEndian;
        // MSB at byte 0 bit 7, down to byte 0 bit 0, on at byte 1 bit 7 .. bit 0 (the LSB).
        let want: Vec<u32> = (8..16).chain(0..8).collect();
        assert_eq!(s.bit_positions(), want);
        // 12 bits from bit 39 (byte 4 bit 7): byte 4 whole, then byte 5 bits 7..4.
        let mut s = sig("m", 39, 12);
        s.byte_order = crate::ByteOrder::BigEndian;
        assert_eq!(
            s.bit_positions(),
            vec![44, 45, 46, 47, 32, 33, 34, 35, 36, 37, 38, 39]
        );
        assert_eq!(sig("i", 3, 4).bit_positions(), vec![3, 4, 5, 6]);
    }

    #[test]
    fn signals_are_checked_against_the_payload() {
        let mut p = bundled("lab");
        let m = &mut p.can.as_mut().unwrap().ecus[0].messages[0]; // 8 bytes
        m.signals = vec![sig("a", 60, 8)];
        assert_eq!(
            one(&p),
            "can.ecus[0].messages[0].signals[0].start_bit: 60 with 8 bits LittleEndian reaches \
             payload bit 67, beyond the 8 bytes of the message (len)"
        );
        let m = &mut p.can.as_mut().unwrap().ecus[0].messages[0];
        m.signals = vec![sig("a", 0, 16), sig("a", 16, 8)];
        m.signals[0].value_type = ValueType::Float32;
        let errs = validate(&p).unwrap_err();
        let texts: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            vec![
                "can.ecus[0].messages[0].signals[0].size: 16 does not fit value_type Float32: it takes 32 bits",
                "can.ecus[0].messages[0].signals[1].name: \"a\" is already the name of can.ecus[0].messages[0].signals[0]",
            ]
        );
        let m = &mut p.can.as_mut().unwrap().ecus[0].messages[0];
        m.signals = vec![sig("sw", 0, 8), sig("v", 8, 8)];
        m.signals[1].mux = Some(crate::MuxCondition {
            switch: None,
            values: vec![(3, 3)],
        });
        assert_eq!(
            one(&p),
            "can.ecus[0].messages[0].signals[1].mux.switch: missing, and the message has 0 \
             multiplexor signals: name the switch"
        );
        p.can.as_mut().unwrap().ecus[0].messages[0].signals[0].multiplexor = true;
        validate(&p).unwrap();
    }

    fn e2e(profile: E2eProfile) -> E2e {
        E2e {
            profile,
            data_id: 0x123,
            data_id_list: Vec::new(),
            data_id_mode: DataIdMode::Both,
            offset_bits: 0,
            max_delta_counter: 1,
            timeout_ms: None,
        }
    }

    #[test]
    fn e2e_configurations_are_checked() {
        let mut p = bundled("lab");
        let set = |p: &mut Profile, x: E2e| {
            p.can.as_mut().unwrap().ecus[0].messages[0].e2e = Some(x);
        };
        set(&mut p, e2e(E2eProfile::P05));
        validate(&p).unwrap();
        set(
            &mut p,
            E2e {
                offset_bits: 48,
                ..e2e(E2eProfile::P05)
            },
        );
        assert_eq!(
            one(&p),
            "can.ecus[0].messages[0].e2e.offset_bits: 48: the P05 header (24 bits) does not \
             fit the 8 bytes of the message"
        );
        set(&mut p, e2e(E2eProfile::P02));
        assert_eq!(
            one(&p),
            "can.ecus[0].messages[0].e2e.data_id_list: has 0 entries: Profile 2 needs 16 (one \
             per counter value)"
        );
        set(
            &mut p,
            E2e {
                data_id_mode: DataIdMode::Alt,
                ..e2e(E2eProfile::P11)
            },
        );
        assert_eq!(
            one(&p),
            "can.ecus[0].messages[0].e2e.data_id_mode: Alt is not a Profile 11 mode (Both or Nibble)"
        );
        set(
            &mut p,
            E2e {
                max_delta_counter: 15,
                ..e2e(E2eProfile::P01)
            },
        );
        assert_eq!(
            one(&p),
            "can.ecus[0].messages[0].e2e.max_delta_counter: 15 is outside 1..=14 for P01"
        );
        set(
            &mut p,
            E2e {
                offset_bits: 4,
                ..e2e(E2eProfile::P01)
            },
        );
        assert!(one(&p).ends_with("offset_bits: 4 is not a whole byte (a multiple of 8)"));
    }

    #[test]
    fn e2e_metrics_need_a_protected_message() {
        let mut p = bundled("lab");
        p.requirements.push(Requirement {
            id: "E2E-1".into(),
            asil: crate::Asil::D,
            text: "No E2E errors".into(),
            metric: Metric::E2eErrors { id: Some(0x0C0) },
            bound_us: None,
            bound: Some(0.0),
        });
        assert_eq!(
            one(&p),
            format!(
                "requirements[{}].metric: E2eErrors: message 0x0C0 has no e2e protection",
                p.requirements.len() - 1
            )
        );
        p.can.as_mut().unwrap().ecus[0].messages[0].e2e = Some(e2e(E2eProfile::P11));
        validate(&p).unwrap();
        let last = p.requirements.len() - 1;
        p.requirements[last].bound = Some(0.5);
        assert!(one(&p).ends_with("bound: 0.5 is not a whole count"));
    }
}
