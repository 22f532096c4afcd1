//! The QEMU command line of a VM: a bash script whose `args=( ... )` array carries a
//! comment with the reason for each argument, and the same arguments as a list
//! ([`Rendered::argv`], `rt-host vm --json`) for programs that start QEMU themselves.
//!
//! What QEMU has no option for (vCPU pinning and policy) is done after boot by
//! `rt-host setup`; the script starts QEMU under `taskset` on the emulator CPUs so no
//! thread of it ever runs on a realtime CPU before that. Options are QEMU 7.2's
//! (<https://www.qemu.org/docs/master/system/invocation.html>).
//!
//! A [`Variant`] renders the same definition for a machine that cannot run it as it is
//! (no usable KVM: `rt-host vm --accel tcg`, the 2-CPU lab; no hugepages or no memory
//! locking where QEMU starts): each argument it replaces or drops is one
//! [`Substitution`] with its reason, and everything else is the profile's.
//! [`apply`] turns the profile's argv into the variant's from the substitutions alone.

use profiles::{CanBus, CanController, VmView};
use rt_sys::sched::Policy;

use super::{Accel, Choice, Def, Format, Knob, Rendered, Substitution, Variant, VmDefError};

/// Program the script runs (override with `QEMU=...`).
pub const QEMU: &str = "qemu-system-x86_64";

/// Arguments that belong together, and the choices they carry (the last is the trailing
/// comment, earlier ones are comment lines above).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The arguments.
    pub args: Vec<String>,
    /// Why.
    pub choices: Vec<Choice>,
}

fn group(args: &[&str], choices: Vec<Choice>) -> Group {
    Group {
        args: args.iter().map(|a| a.to_string()).collect(),
        choices,
    }
}

/// The QEMU device name of a CAN controller and its bus property.
pub fn can_device(c: CanController) -> (&'static str, &'static str) {
    match c {
        CanController::KvaserPci => ("kvaser_pci", "canbus"),
        CanController::Pcm3680Pci => ("pcm3680_pci", "canbus0"),
        CanController::Mioe3680Pci => ("mioe3680_pci", "canbus0"),
        CanController::CtucanPci => ("ctucan_pci", "canbus0"),
    }
}

/// The QEMU arguments of one CAN bus: the bus object, its controllers, the host bridge.
pub fn can_args(b: &CanBus) -> Vec<Group> {
    let mut out = vec![Group {
        args: vec!["-object".into(), format!("can-bus,id={}", b.id)],
        choices: vec![Choice::with(
            Knob::CanBus,
            format!("can-bus {}", b.id),
            format!(
                "CAN bus {}: {} emulated controller(s) on one bus, frames between them without host sockets",
                b.id, b.controllers
            ),
        )],
    }];
    let (dev, prop) = can_device(b.controller);
    for k in 0..b.controllers {
        out.push(Group {
            args: vec!["-device".into(), format!("{dev},{prop}={}", b.id)],
            choices: vec![Choice::with(
                Knob::CanBus,
                format!("{dev} #{k} on {}", b.id),
                format!("controller {k} of bus {}: {}", b.id, Knob::CanBus.why()),
            )],
        });
    }
    if let Some(i) = &b.host_interface {
        out.push(Group {
            args: vec![
                "-object".into(),
                format!("can-host-socketcan,id={}-host,canbus={},if={i}", b.id, b.id),
            ],
            choices: vec![Choice::with(
                Knob::CanBus,
                format!("can-host-socketcan {i}"),
                format!("host SocketCAN interface {i} joined to bus {}: restbus on the host, ECUs in the guest", b.id),
            )],
        });
    }
    out
}

/// Every argument group of the VM, in command-line order, for `variant`; what the variant
/// replaces or drops goes into `subs`.
pub fn groups(
    def: &Def<'_>,
    variant: &Variant,
    subs: &mut Vec<Substitution>,
) -> Result<Vec<Group>, VmDefError> {
    let vm = def.vm;
    let mem = def.memory_mib()?;
    let mut g = machine(vm, variant.accel, subs);
    g.extend(cpu(vm.cpus, variant.accel, subs));
    g.push(memory(def, mem, variant, subs));
    match &variant.no_mem_lock {
        None => g.push(group(
            &["-overcommit", "mem-lock=on"],
            vec![Choice::new(Knob::Locked, "-overcommit mem-lock=on")],
        )),
        Some(why) => subs.push(Substitution {
            option: "-overcommit".into(),
            profile: "mem-lock=on".into(),
            now: None,
            why: format!("{why}: guest memory is not locked (the host may swap or compact it)"),
        }),
    }
    for k in 1..=vm.iothreads {
        let o = format!("iothread,id=iothread{k}");
        g.push(group(
            &["-object", &o],
            vec![Choice::new(Knob::Iothreads, format!("-object {o}"))],
        ));
    }
    g.extend(no_defaults(vm));
    for b in &vm.can_buses {
        g.extend(can_args(b));
    }
    g.extend(boot(def));
    Ok(g)
}

/// The machine of the profile's definition.
const MACHINE_KVM: &str = "q35,accel=kvm";
/// The machine under TCG.
const MACHINE_TCG: &str = "q35,accel=tcg";
/// The CPU of the profile's definition: the host's, with the real-time flags.
const CPU_KVM: &str = "host,migratable=off,+tsc-deadline,+invtsc,pmu=off,kvm-hint-dedicated=on";
/// The CPU under TCG: only the model differs.
const CPU_TCG: &str = "max,migratable=off,+tsc-deadline,+invtsc,pmu=off,kvm-hint-dedicated=on";

/// The name with thread names, the machine without USB and shared pages.
fn machine(vm: &VmView, accel: Accel, subs: &mut Vec<Substitution>) -> Vec<Group> {
    let m = match accel {
        Accel::Kvm => MACHINE_KVM,
        Accel::Tcg => {
            subs.push(Substitution {
                option: "-machine".into(),
                profile: MACHINE_KVM.into(),
                now: Some(MACHINE_TCG.into()),
                why: "no usable KVM here: QEMU's binary translator runs the same q35 machine (not real-time: its timings are no evidence)".into(),
            });
            MACHINE_TCG
        }
    };
    vec![
        group(
            &["-name", &format!("guest={},debug-threads=on", vm.name)],
            vec![Choice::new(
                Knob::ThreadNames,
                format!("-name guest={},debug-threads=on", vm.name),
            )],
        ),
        group(
            &["-machine", m],
            vec![Choice::with(
                Knob::HostPassthrough,
                format!("-machine {m}"),
                match accel {
                    Accel::Kvm => "KVM on the q35 chipset: PCIe, no ISA devices beyond the basics",
                    Accel::Tcg => {
                        "substituted: TCG on the q35 chipset (no usable KVM here; not real-time)"
                    }
                },
            )],
        ),
        group(
            &["-machine", "usb=off"],
            vec![Choice::new(Knob::NoUsb, "-machine usb=off")],
        ),
        group(
            &["-machine", "mem-merge=off"],
            vec![Choice::new(Knob::NoSharePages, "-machine mem-merge=off")],
        ),
    ]
}

/// The host CPU passed through with the real-time flags, and its topology.
fn cpu(n: u32, accel: Accel, subs: &mut Vec<Substitution>) -> Vec<Group> {
    let mut g = Vec::new();
    let cpu = match accel {
        Accel::Kvm => CPU_KVM,
        Accel::Tcg => {
            subs.push(Substitution {
                option: "-cpu".into(),
                profile: CPU_KVM.into(),
                now: Some(CPU_TCG.into()),
                why: "TCG has no `host` CPU model (it needs KVM): `max` is every feature TCG emulates; the flags stay, and QEMU drops those TCG lacks (tsc-deadline, invtsc, kvm-hint-dedicated) with a warning, which rt-host check's vm-cpu item reports".into(),
            });
            CPU_TCG
        }
    };
    g.push(group(
        &["-cpu", cpu],
        vec![
            Choice::new(Knob::TscDeadline, "+tsc-deadline"),
            Choice::new(Knob::Invtsc, "+invtsc"),
            Choice::new(Knob::PmuOff, "pmu=off"),
            Choice::new(Knob::HintDedicated, "kvm-hint-dedicated=on"),
            Choice::new(Knob::HostPassthrough, format!("-cpu {cpu}")),
        ],
    ));
    let smp = format!("{n},sockets=1,dies=1,cores={n},threads=1");
    g.push(group(
        &["-smp", &smp],
        vec![Choice::new(Knob::Topology, format!("-smp {smp}"))],
    ));
    g
}

/// Only the devices listed here, no display; the console and QMP; the pidfile.
fn no_defaults(vm: &VmView) -> Vec<Group> {
    let mut g = Vec::new();
    g.push(group(
        &["-nodefaults", "-no-user-config"],
        vec![
            Choice::new(Knob::NoBalloon, "-nodefaults (no virtio-balloon)"),
            Choice::with(
                Knob::NoGraphics,
                "-nodefaults -no-user-config",
                "no default NIC, VGA, floppy, CD-ROM or config file: only the devices listed here",
            ),
        ],
    ));
    g.push(group(
        &["-display", "none"],
        vec![Choice::new(Knob::NoGraphics, "-display none")],
    ));
    g.push(group(
        &["-serial", "mon:stdio"],
        vec![Choice::new(Knob::SerialConsole, "-serial mon:stdio")],
    ));
    let qmp = vm
        .find
        .qmp
        .clone()
        .unwrap_or_else(|| format!("/run/rtvirt-{}.qmp", vm.name).into());
    let q = format!("unix:{},server=on,wait=off", qmp.display());
    g.push(group(
        &["-qmp", &q],
        vec![Choice::new(Knob::Qmp, format!("-qmp {q}"))],
    ));
    if let Some(p) = &vm.find.pidfile {
        let p = p.display().to_string();
        g.push(group(
            &["-pidfile", &p],
            vec![Choice::with(
                Knob::ThreadNames,
                format!("-pidfile {p}"),
                "the profile finds this VM by its pidfile",
            )],
        ));
    }
    g
}

fn memory(def: &Def<'_>, mem: u64, variant: &Variant, subs: &mut Vec<Substitution>) -> Group {
    let vm = def.vm;
    let node = def
        .node
        .map(|n| format!(",host-nodes={n},policy=bind"))
        .unwrap_or_default();
    let plain = format!("memory-backend-ram,id=ram0,size={mem}M,share=off,prealloc=on");
    let mut choices = Vec::new();
    let mut o = match (vm.hugepage_kib, &variant.no_hugepages) {
        (Some(kib), None) => {
            choices.push(Choice::with(
                Knob::Hugepages,
                format!("hugetlb=on,hugetlbsize={}", size_name(kib)),
                format!("{} (memfd: no hugetlbfs mount needed); prealloc=on faults every page in at start", Knob::Hugepages.why()),
            ));
            hugepage_backend(mem, kib)
        }
        (Some(kib), Some(why)) => {
            let why = format!(
                "{why}: guest RAM on 4 KiB pages instead (prealloc=on still faults it in at start)"
            );
            subs.push(Substitution {
                option: "-object".into(),
                profile: format!("{}{node}", hugepage_backend(mem, kib)),
                now: Some(format!("{plain}{node}")),
                why: why.clone(),
            });
            choices.push(Choice::with(
                Knob::Hugepages,
                "substituted: memory-backend-ram",
                why,
            ));
            plain
        }
        (None, _) => {
            choices.push(Choice::with(
                Knob::Hugepages,
                "memory-backend-ram (no hugepages)",
                format!("no hugepage size in the profile ({}): guest RAM on 4 KiB pages; prealloc=on still faults it in at start", vm.field("hugepage_kib")),
            ));
            plain
        }
    };
    o.push_str(&node);
    match def.node {
        Some(n) => {
            choices.push(Choice::with(
                Knob::NumaStrict,
                format!("host-nodes={n},policy=bind"),
                format!("{} ({})", Knob::NumaStrict.why(), def.node_why),
            ));
        }
        None => choices.push(Choice::with(
            Knob::NumaStrict,
            "(no host-nodes)",
            format!("memory not bound to a NUMA node: {}", def.node_why),
        )),
    }
    let last = Choice::with(
        Knob::Hugepages,
        format!("-m {mem}M -object {o}"),
        format!("{mem} MiB of guest RAM from this backend"),
    );
    choices.push(last);
    Group {
        args: vec![
            "-m".into(),
            format!("{mem}M"),
            "-object".into(),
            o,
            "-machine".into(),
            "memory-backend=ram0".into(),
        ],
        choices,
    }
}

/// The hugepage memory backend of `mem` MiB on pages of `kib`.
fn hugepage_backend(mem: u64, kib: u64) -> String {
    format!(
        "memory-backend-memfd,id=ram0,size={mem}M,hugetlb=on,hugetlbsize={},share=off,prealloc=on",
        size_name(kib)
    )
}

/// `2M`, `1G`.
fn size_name(kib: u64) -> String {
    if kib % (1024 * 1024) == 0 {
        format!("{}G", kib / (1024 * 1024))
    } else {
        format!("{}M", kib / 1024)
    }
}

fn boot(def: &Def<'_>) -> Vec<Group> {
    let Some(b) = &def.vm.boot else {
        return Vec::new();
    };
    let mut g = Vec::new();
    for (opt, v) in [("-kernel", &b.kernel), ("-initrd", &b.initrd)] {
        if let Some(p) = v {
            let p = p.display().to_string();
            g.push(group(
                &[opt, &p],
                vec![Choice::new(Knob::Boot, format!("{opt} {p}"))],
            ));
        }
    }
    if let Some(c) = &b.cmdline {
        g.push(group(
            &["-append", c],
            vec![Choice::new(Knob::Boot, format!("-append {c:?}"))],
        ));
    }
    if let Some(d) = &b.disk {
        let fmt = if d.extension().is_some_and(|e| e == "qcow2") {
            "qcow2"
        } else {
            "raw"
        };
        let drive = format!(
            "file={},if=none,id=disk0,format={fmt},cache=none,aio=native",
            d.display()
        );
        g.push(group(
            &["-drive", &drive],
            vec![Choice::with(
                Knob::Boot,
                format!("-drive {drive}"),
                "the disk, O_DIRECT with native AIO: no host page cache between guest and disk",
            )],
        ));
        let dev = "virtio-blk-pci,drive=disk0,iothread=iothread1";
        g.push(group(
            &["-device", dev],
            vec![Choice::new(Knob::Iothreads, format!("-device {dev}"))],
        ));
    }
    g
}

fn quote(s: &str) -> String {
    shlex::try_quote(s)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| format!("'{}'", s.replace('\'', "'\\''")))
}

/// What QEMU has no option for, as comment lines and choices: where each vCPU goes and
/// at which policy (`rt-host setup` applies them after boot).
fn after_boot(def: &Def<'_>) -> (Vec<String>, Vec<Choice>) {
    let vm = def.vm;
    let mut lines = Vec::new();
    let mut choices = Vec::new();
    for p in def.placements() {
        if p.placed {
            let pin = vm.pin(p.vcpu).map(|v| (v.policy, v.priority));
            let (pol, prio) = pin.unwrap_or((Policy::Other, 0));
            let sched = if pol.is_realtime() {
                format!("{pol} {prio}")
            } else {
                pol.to_string()
            };
            let r = format!("vCPU {} -> CPU {}, {sched}", p.vcpu, p.cpus);
            lines.push(format!("#   {r}: rt-host setup, once the guest has booted (a FIFO vCPU during boot can break the guest's timer calibration)"));
            choices.push(Choice::with(
                Knob::VcpuPin,
                format!("rt-host setup: {r}"),
                Knob::VcpuPin.why(),
            ));
            if pol.is_realtime() {
                choices.push(Choice::with(
                    Knob::VcpuSched,
                    format!("rt-host setup: vCPU {} {sched}", p.vcpu),
                    Knob::VcpuSched.why(),
                ));
            }
        } else {
            lines.push(format!("#   vCPU {} stays on CPUs {} with the emulator threads (not placed by the profile)", p.vcpu, p.cpus));
            choices.push(Choice::new(
                Knob::VcpuUnplaced,
                format!("vCPU {} on {}", p.vcpu, p.cpus),
            ));
        }
    }
    for (what, item, policy, priority, knob) in [
        (
            "QEMU's main loop",
            "emulator-sched",
            vm.emulator_policy,
            vm.emulator_priority,
            Knob::EmulatorSched,
        ),
        (
            "I/O threads",
            "iothread-sched",
            vm.iothread_policy,
            vm.iothread_priority,
            Knob::IothreadSched,
        ),
    ] {
        if policy != Policy::Other {
            let s = format!("{policy} {priority}");
            lines.push(format!(
                "#   {what} at {s}: applied by rt-host setup ({item})"
            ));
            choices.push(Choice::new(knob, format!("{what} {s} (rt-host setup)")));
        }
    }
    (lines, choices)
}

/// Render the bash script and the argv of the profile's definition.
pub fn render(def: &Def<'_>) -> Result<Rendered, VmDefError> {
    render_variant(def, &Variant::default())
}

/// The profile's argv with `subs` applied: each substitution's option and profile value
/// (the first such pair not yet substituted) replaced by its value, or dropped. Applied to
/// [`render`]'s argv, the substitutions of [`render_variant`] give that variant's argv.
pub fn apply(argv: &[String], subs: &[Substitution]) -> Vec<String> {
    let mut out: Vec<Option<String>> = argv.iter().cloned().map(Some).collect();
    let mut done = vec![false; argv.len()];
    for s in subs {
        let at = (0..argv.len().saturating_sub(1))
            .find(|&i| !done[i] && argv[i] == s.option && argv[i + 1] == s.profile);
        if let Some(i) = at {
            done[i] = true;
            match &s.now {
                Some(n) => out[i + 1] = Some(n.clone()),
                None => (out[i], out[i + 1]) = (None, None),
            }
        }
    }
    out.into_iter().flatten().collect()
}

/// Render the bash script and the argv for `variant` (the profile's definition, with
/// each substitution of the variant named in the header and in the JSON).
pub fn render_variant(def: &Def<'_>, variant: &Variant) -> Result<Rendered, VmDefError> {
    let vm = def.vm;
    let mut subs = Vec::new();
    let groups = groups(def, variant, &mut subs)?;
    let (lines, mut choices) = after_boot(def);
    let mut t = String::new();
    t.push_str("#!/bin/bash\n");
    t.push_str(&format!(
        "# rt-host vm --format qemu: VM {:?} of profile {:?}. Each argument carries its reason\n\
         # (docs/vm-definition.md).\n",
        vm.name, def.profile
    ));
    if !subs.is_empty() {
        t.push_str(&format!(
            "# Substituted for --accel {} (not the profile's definition, not real-time evidence):\n",
            match variant.accel {
                Accel::Kvm => "kvm",
                Accel::Tcg => "tcg",
            }
        ));
        for s in &subs {
            t.push_str(&format!("#   {s}\n"));
        }
    }
    t.push_str("# QEMU has no option for vCPU placement or policy:\n");
    for l in &lines {
        t.push_str(l);
        t.push('\n');
    }
    t.push_str("# Extra arguments given to this script go to QEMU; QEMU=... picks the binary.\n");
    t.push_str("set -euo pipefail\nargs=(\n");
    for gr in &groups {
        let (last, before) = gr
            .choices
            .split_last()
            .map_or((None, &[][..]), |(l, b)| (Some(l), b));
        for c in before {
            t.push_str(&format!("  # {}: {}\n", c.rendered, c.why));
        }
        let args: Vec<String> = gr.args.iter().map(|a| quote(a)).collect();
        t.push_str(&format!("  {}", args.join(" ")));
        if let Some(c) = last {
            t.push_str(&format!("  # {}", c.why));
        }
        t.push('\n');
        choices.extend(gr.choices.iter().cloned());
    }
    t.push_str(")\n");
    let emu = vm.emulator_cpus.to_string();
    let pin = Choice::with(
        Knob::EmulatorPin,
        format!("taskset -c {emu}"),
        format!(
            "{}; QEMU starts there, so vCPUs too run there until rt-host setup places them",
            Knob::EmulatorPin.why()
        ),
    );
    t.push_str(&format!("# {}\n", pin.why));
    t.push_str(&format!(
        "exec taskset -c {emu} \"${{QEMU:-{QEMU}}}\" \"${{args[@]}}\" \"$@\"\n"
    ));
    choices.push(pin);
    Ok(Rendered {
        vm: vm.name.clone(),
        format: Format::Qemu,
        text: t,
        argv: Some(groups.into_iter().flat_map(|g| g.args).collect()),
        choices,
        substitutions: subs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rt_sys::SysRoot;

    fn ecu() -> (profiles::Profile, Vec<profiles::VmView>) {
        let p = profiles::load("ecu").unwrap().profile;
        let v = profiles::host_vms(p.host.as_ref().unwrap());
        (p, v)
    }

    #[test]
    fn argv_has_every_real_time_option() {
        let (p, vms) = ecu();
        let d = Def::new(&p.name, &vms[0], &SysRoot::new("/nonexistent"));
        let r = render(&d).unwrap();
        let a = r.argv.as_ref().unwrap().join(" ");
        for want in [
            "-name guest=ecu0,debug-threads=on",
            "-cpu host,migratable=off,+tsc-deadline,+invtsc,pmu=off,kvm-hint-dedicated=on",
            "-smp 4,sockets=1,dies=1,cores=4,threads=1",
            "-m 4096M -object memory-backend-memfd,id=ram0,size=4096M,hugetlb=on,hugetlbsize=2M,share=off,prealloc=on -machine memory-backend=ram0",
            "-overcommit mem-lock=on",
            "-machine mem-merge=off",
            "-machine usb=off",
            "-object iothread,id=iothread1",
            "-nodefaults -no-user-config -display none",
        ] {
            assert!(a.contains(want), "missing {want:?} in {a}");
        }
        assert!(!a.contains("host-nodes"), "no node known: {a}");
        assert!(
            r.text
                .contains("exec taskset -c 0-1 \"${QEMU:-qemu-system-x86_64}\""),
            "{}",
            r.text
        );
        assert!(
            r.text
                .contains("#   vCPU 3 -> CPU 5, fifo 1: rt-host setup"),
            "{}",
            r.text
        );
        // Every line of the array carries a comment.
        let body: Vec<&str> = r
            .text
            .lines()
            .skip_while(|l| *l != "args=(")
            .skip(1)
            .take_while(|l| *l != ")")
            .collect();
        assert!(body.len() > 10);
        assert!(body.iter().all(|l| l.contains("  # ")), "{body:#?}");
    }

    #[test]
    fn can_buses_boot_and_node_render() {
        let (p, vms) = ecu();
        let mut v = vms[0].clone();
        v.numa_node = Some(0);
        v.can_buses = vec![CanBus {
            id: "canbus0".into(),
            controller: CanController::CtucanPci,
            controllers: 2,
            host_interface: Some("vcan0".into()),
        }];
        v.boot = Some(profiles::VmBoot {
            kernel: Some("/boot/vmlinuz".into()),
            cmdline: Some("console=ttyS0 isolcpus=1-3".into()),
            disk: Some("/var/lib/ecu0.qcow2".into()),
            ..Default::default()
        });
        let d = Def::new(&p.name, &v, &SysRoot::new("/nonexistent"));
        let r = render(&d).unwrap();
        let a = r.argv.unwrap();
        let s = a.join(" ");
        assert!(s.contains(",host-nodes=0,policy=bind"), "{s}");
        assert!(s.contains("-object can-bus,id=canbus0 -device ctucan_pci,canbus0=canbus0 -device ctucan_pci,canbus0=canbus0 -object can-host-socketcan,id=canbus0-host,canbus=canbus0,if=vcan0"), "{s}");
        assert!(s.contains("format=qcow2,cache=none,aio=native -device virtio-blk-pci,drive=disk0,iothread=iothread1"), "{s}");
        let i = a.iter().position(|x| x == "-append").unwrap();
        assert_eq!(
            a[i + 1],
            "console=ttyS0 isolcpus=1-3",
            "one argument, spaces kept"
        );
        assert!(
            r.text.contains("-append 'console=ttyS0 isolcpus=1-3'"),
            "{}",
            r.text
        );
    }

    #[test]
    fn the_script_is_valid_bash() {
        let (p, vms) = ecu();
        let d = Def::new(&p.name, &vms[0], &SysRoot::new("/nonexistent"));
        let r = render(&d).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ecu0.sh");
        std::fs::write(&f, &r.text).unwrap();
        let o = std::process::Command::new("bash")
            .arg("-n")
            .arg(&f)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    fn lab_def_argv(variant: &Variant) -> (Vec<String>, Rendered) {
        let p = crate::fake::lab_profile();
        let vms = profiles::host_vms(p.host.as_ref().unwrap());
        let mut v = vms[0].clone();
        v.numa_node = Some(0);
        let d = Def::new(&p.name, &v, &SysRoot::new("/nonexistent"));
        let base = render(&d).unwrap().argv.unwrap();
        (base, render_variant(&d, variant).unwrap())
    }

    #[test]
    fn the_default_variant_substitutes_nothing() {
        let (base, r) = lab_def_argv(&Variant::default());
        assert!(r.substitutions.is_empty());
        assert_eq!(r.argv.unwrap(), base);
        assert!(!r.text.contains("Substituted"), "{}", r.text);
    }

    #[test]
    fn tcg_substitutes_the_accelerator_and_the_cpu_model_only() {
        let v = Variant {
            accel: Accel::Tcg,
            ..Variant::default()
        };
        let (base, r) = lab_def_argv(&v);
        let argv = r.argv.clone().unwrap();
        let opts: Vec<&str> = r.substitutions.iter().map(|s| s.option.as_str()).collect();
        assert_eq!(opts, ["-machine", "-cpu"]);
        assert_eq!(r.substitutions[0].now.as_deref(), Some("q35,accel=tcg"));
        assert_eq!(
            r.substitutions[1].now.as_deref(),
            Some("max,migratable=off,+tsc-deadline,+invtsc,pmu=off,kvm-hint-dedicated=on")
        );
        assert!(r.substitutions.iter().all(|s| !s.why.is_empty()));
        // The rest of the argv is the profile's, argument for argument.
        assert_eq!(argv.len(), base.len());
        let differ: Vec<usize> = (0..argv.len()).filter(|&i| argv[i] != base[i]).collect();
        assert_eq!(differ.len(), 2, "{argv:?}");
        assert_eq!(apply(&base, &r.substitutions), argv);
        assert!(argv.windows(2).any(|w| w == ["-overcommit", "mem-lock=on"]));
        assert!(
            r.text
                .contains("#   -machine q35,accel=kvm -> q35,accel=tcg: no usable KVM here"),
            "{}",
            r.text
        );
    }

    #[test]
    fn hugepages_and_locking_are_substituted_only_where_their_cause_holds() {
        let (p, vms) = ecu();
        let d = Def::new(&p.name, &vms[0], &SysRoot::new("/nonexistent"));
        let base = render(&d).unwrap().argv.unwrap();
        let v = Variant {
            accel: Accel::Kvm,
            no_hugepages: Some("0 free 2048 kB hugepages, 2048 needed".into()),
            no_mem_lock: Some("no CAP_IPC_LOCK".into()),
        };
        let r = render_variant(&d, &v).unwrap();
        let argv = r.argv.clone().unwrap();
        let s = argv.join(" ");
        assert!(s.contains("-object memory-backend-ram,id=ram0,size=4096M,share=off,prealloc=on -machine memory-backend=ram0"), "{s}");
        assert!(!s.contains("hugetlb") && !s.contains("mem-lock"), "{s}");
        assert_eq!(r.substitutions.len(), 2, "{:?}", r.substitutions);
        assert!(r.substitutions[0]
            .why
            .starts_with("0 free 2048 kB hugepages"));
        assert_eq!(r.substitutions[1].now, None);
        assert_eq!(apply(&base, &r.substitutions), argv);
        assert_eq!(
            base.len(),
            argv.len() + 2,
            "only -overcommit mem-lock=on dropped"
        );
        // The lab profile has no hugepages: nothing to substitute for them.
        let (lab_base, r) = lab_def_argv(&Variant {
            no_hugepages: Some("none free".into()),
            ..Variant::default()
        });
        assert!(r.substitutions.is_empty());
        assert_eq!(r.argv.unwrap(), lab_base);
    }

    #[test]
    fn other_formats_refuse_a_variant() {
        let (p, vms) = ecu();
        let d = Def::new(&p.name, &vms[0], &SysRoot::new("/nonexistent"));
        let v = Variant {
            accel: Accel::Tcg,
            ..Variant::default()
        };
        let e = super::super::render(&d, Format::Libvirt, &v).unwrap_err();
        assert_eq!(
            e.to_string(),
            "A substituted definition (--accel tcg) renders only for --format qemu, not libvirt"
        );
    }
}
