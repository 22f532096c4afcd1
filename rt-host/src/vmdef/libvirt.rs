//! libvirt domain XML for a VM: a complete `<domain type='kvm'>` that `virsh define`
//! takes and `virt-xml-validate FILE domain` accepts, with an XML comment giving the
//! reason before each real-time element. The elements follow the libvirt real-time guide
//! (<https://libvirt.org/kbase/kvm-realtime.html>) and the domain format reference
//! (<https://libvirt.org/formatdomain.html>); CAN controllers, which libvirt does not
//! model, are passed to QEMU through `<qemu:commandline>`.

use std::borrow::Cow;

use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;
use rt_sys::sched::Policy;

use super::{qemu, Choice, Def, Format, Knob, Rendered, VmDefError};

/// The namespace of `<qemu:commandline>`.
pub const QEMU_NS: &str = "http://libvirt.org/schemas/domain/qemu/1.0";

/// A writer that records the choice behind each comment.
struct X {
    w: Writer<Vec<u8>>,
    choices: Vec<Choice>,
}

type Attrs<'a> = &'a [(&'a str, Cow<'a, str>)];

fn start<'a>(name: &'a str, attrs: Attrs<'a>) -> BytesStart<'a> {
    let mut e = BytesStart::new(name);
    for (k, v) in attrs {
        e.push_attribute((*k, v.as_ref()));
    }
    e
}

impl X {
    fn why(&mut self, c: Choice) -> std::io::Result<()> {
        // "--" may not appear in an XML comment.
        let text = format!(" {} ", c.why.replace("--", "- -"));
        self.w
            .write_event(Event::Comment(BytesText::from_escaped(text)))?;
        self.choices.push(c);
        Ok(())
    }
    fn note(&mut self, text: &str) -> std::io::Result<()> {
        let text = format!(" {} ", text.replace("--", "- -"));
        self.w
            .write_event(Event::Comment(BytesText::from_escaped(text)))
    }
    fn open(&mut self, name: &str, attrs: Attrs<'_>) -> std::io::Result<()> {
        self.w.write_event(Event::Start(start(name, attrs)))
    }
    fn close(&mut self, name: &str) -> std::io::Result<()> {
        self.w.write_event(Event::End(BytesEnd::new(name)))
    }
    fn empty(&mut self, name: &str, attrs: Attrs<'_>) -> std::io::Result<()> {
        self.w.write_event(Event::Empty(start(name, attrs)))
    }
    fn text(&mut self, name: &str, attrs: Attrs<'_>, text: &str) -> std::io::Result<()> {
        self.open(name, attrs)?;
        self.w.write_event(Event::Text(BytesText::new(text)))?;
        self.close(name)
    }
}

fn c(s: impl Into<String>) -> Cow<'static, str> {
    Cow::Owned(s.into())
}

/// Render the domain XML.
pub fn render(def: &Def<'_>) -> Result<Rendered, VmDefError> {
    let vm = def.vm;
    let mem = def.memory_mib()?;
    let mut x = X {
        w: Writer::new_with_indent(Vec::new(), b' ', 2),
        choices: Vec::new(),
    };
    let mut attrs: Vec<(&str, Cow<'_, str>)> = vec![("type", c("kvm"))];
    if !vm.can_buses.is_empty() {
        attrs.push(("xmlns:qemu", c(QEMU_NS)));
    }
    x.open("domain", &attrs)?;
    x.note(&format!(
        "rendered by rt-host vm (format libvirt): VM \"{}\" of profile \"{}\". Each \
         real-time element follows its reason (docs/vm-definition.md).",
        vm.name, def.profile
    ))?;
    x.text("name", &[], &vm.name)?;
    x.text("memory", &[("unit", c("MiB"))], &mem.to_string())?;
    x.text("currentMemory", &[("unit", c("MiB"))], &mem.to_string())?;
    memory_backing(&mut x, def)?;
    x.text("vcpu", &[("placement", c("static"))], &vm.cpus.to_string())?;
    if vm.iothreads > 0 {
        x.why(Choice::new(
            Knob::Iothreads,
            format!("<iothreads>{}</iothreads>", vm.iothreads),
        ))?;
        x.text("iothreads", &[], &vm.iothreads.to_string())?;
    }
    cputune(&mut x, def)?;
    numatune(&mut x, def)?;
    os(&mut x, def)?;
    features(&mut x)?;
    cpu(&mut x, def)?;
    x.text("on_poweroff", &[], "destroy")?;
    x.text("on_reboot", &[], "restart")?;
    x.text("on_crash", &[], "destroy")?;
    devices(&mut x, def)?;
    if !vm.can_buses.is_empty() {
        x.note("CAN: libvirt has no CAN device model, so the controllers go to QEMU as arguments")?;
        x.open("qemu:commandline", &[])?;
        for b in &vm.can_buses {
            for g in qemu::can_args(b) {
                for ch in &g.choices {
                    x.why(ch.clone())?;
                }
                for a in &g.args {
                    x.empty("qemu:arg", &[("value", c(a.as_str()))])?;
                }
            }
        }
        x.close("qemu:commandline")?;
    }
    x.close("domain")?;
    let mut text = String::from_utf8(x.w.into_inner())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    text.push('\n');
    Ok(Rendered {
        vm: vm.name.clone(),
        format: Format::Libvirt,
        text,
        argv: None,
        substitutions: Vec::new(),
        choices: x.choices,
    })
}

fn memory_backing(x: &mut X, def: &Def<'_>) -> std::io::Result<()> {
    let vm = def.vm;
    x.open("memoryBacking", &[])?;
    match vm.hugepage_kib {
        Some(kib) => {
            let r = format!("<hugepages><page size='{kib}' unit='KiB'/></hugepages>");
            x.why(Choice::new(Knob::Hugepages, r))?;
            x.open("hugepages", &[])?;
            x.empty("page", &[("size", c(kib.to_string())), ("unit", c("KiB"))])?;
            x.close("hugepages")?;
        }
        None => x.note(&format!(
            "no <hugepages>: the profile gives no page size ({}), so guest RAM is on 4 KiB pages",
            vm.field("hugepage_kib")
        ))?,
    }
    x.why(Choice::new(Knob::NoSharePages, "<nosharepages/>"))?;
    x.empty("nosharepages", &[])?;
    x.why(Choice::new(Knob::Locked, "<locked/>"))?;
    x.empty("locked", &[])?;
    x.close("memoryBacking")
}

fn sched_attrs(policy: Policy, priority: u8) -> Vec<(&'static str, Cow<'static, str>)> {
    let mut a = vec![("scheduler", c(policy.to_string()))];
    if policy.is_realtime() {
        a.push(("priority", c(priority.to_string())));
    }
    a
}

fn cputune(x: &mut X, def: &Def<'_>) -> std::io::Result<()> {
    let vm = def.vm;
    x.open("cputune", &[])?;
    for p in def.placements() {
        let r = format!("<vcpupin vcpu='{}' cpuset='{}'/>", p.vcpu, p.cpus);
        if p.placed {
            x.why(Choice::with(
                Knob::VcpuPin,
                r,
                format!("vCPU {} on CPU {}: {}", p.vcpu, p.cpus, Knob::VcpuPin.why()),
            ))?;
        } else {
            x.why(Choice::with(
                Knob::VcpuUnplaced,
                r,
                format!(
                    "vCPU {} on CPUs {}: {}",
                    p.vcpu,
                    p.cpus,
                    Knob::VcpuUnplaced.why()
                ),
            ))?;
        }
        x.empty(
            "vcpupin",
            &[
                ("vcpu", c(p.vcpu.to_string())),
                ("cpuset", c(p.cpus.to_string())),
            ],
        )?;
    }
    let emu = vm.emulator_cpus.to_string();
    x.why(Choice::new(
        Knob::EmulatorPin,
        format!("<emulatorpin cpuset='{emu}'/>"),
    ))?;
    x.empty("emulatorpin", &[("cpuset", c(emu))])?;
    let io = vm.iothread_cpus.to_string();
    for k in 1..=vm.iothreads {
        x.why(Choice::new(
            Knob::IothreadPin,
            format!("<iothreadpin iothread='{k}' cpuset='{io}'/>"),
        ))?;
        x.empty(
            "iothreadpin",
            &[("iothread", c(k.to_string())), ("cpuset", c(io.clone()))],
        )?;
    }
    for g in def.sched_groups() {
        let mut a = vec![("vcpus", c(g.vcpus.to_string()))];
        a.extend(sched_attrs(g.policy, g.priority));
        let r = format!(
            "<vcpusched vcpus='{}' scheduler='{}'{}/>",
            g.vcpus,
            g.policy,
            if g.policy.is_realtime() {
                format!(" priority='{}'", g.priority)
            } else {
                String::new()
            }
        );
        x.why(Choice::new(Knob::VcpuSched, r))?;
        x.empty("vcpusched", &a)?;
    }
    if vm.emulator_policy == Policy::Other {
        x.note(&format!(
            "no <emulatorsched>: the emulator threads stay SCHED_OTHER on CPUs {} (libvirt's \
             emulatorsched has no \"other\"; set {} for a real-time main loop)",
            vm.emulator_cpus,
            vm.field("emulator_policy")
        ))?;
    } else {
        let a = sched_attrs(vm.emulator_policy, vm.emulator_priority);
        let r = format!(
            "<emulatorsched scheduler='{}' priority='{}'/>",
            vm.emulator_policy, vm.emulator_priority
        );
        x.why(Choice::new(Knob::EmulatorSched, r))?;
        x.empty("emulatorsched", &a)?;
    }
    if vm.iothread_policy != Policy::Other && vm.iothreads > 0 {
        let ids = rt_sys::CpuSet::from_cpus(1..=vm.iothreads).to_string();
        let mut a = vec![("iothreads", c(ids.clone()))];
        a.extend(sched_attrs(vm.iothread_policy, vm.iothread_priority));
        let r = format!(
            "<iothreadsched iothreads='{ids}' scheduler='{}' priority='{}'/>",
            vm.iothread_policy, vm.iothread_priority
        );
        x.why(Choice::new(Knob::IothreadSched, r))?;
        x.empty("iothreadsched", &a)?;
    }
    x.close("cputune")
}

fn numatune(x: &mut X, def: &Def<'_>) -> std::io::Result<()> {
    match def.node {
        Some(n) => {
            x.why(Choice::with(
                Knob::NumaStrict,
                format!("<numatune><memory mode='strict' nodeset='{n}'/></numatune>"),
                format!("{} ({})", Knob::NumaStrict.why(), def.node_why),
            ))?;
            x.open("numatune", &[])?;
            x.empty(
                "memory",
                &[("mode", c("strict")), ("nodeset", c(n.to_string()))],
            )?;
            x.close("numatune")
        }
        None => x.note(&format!(
            "no <numatune>: {}; add <numatune><memory mode='strict' nodeset='N'/></numatune> \
             for the node of the vCPUs",
            def.node_why
        )),
    }
}

fn os(x: &mut X, def: &Def<'_>) -> std::io::Result<()> {
    x.open("os", &[])?;
    x.text(
        "type",
        &[("arch", c("x86_64")), ("machine", c("q35"))],
        "hvm",
    )?;
    if let Some(b) = &def.vm.boot {
        for (name, v) in [("kernel", &b.kernel), ("initrd", &b.initrd)] {
            if let Some(p) = v {
                x.text(name, &[], &p.display().to_string())?;
            }
        }
        if let Some(cmd) = &b.cmdline {
            x.text("cmdline", &[], cmd)?;
        }
    }
    x.close("os")
}

fn features(x: &mut X) -> std::io::Result<()> {
    x.open("features", &[])?;
    x.empty("acpi", &[])?;
    x.empty("apic", &[])?;
    x.why(Choice::new(Knob::PmuOff, "<pmu state='off'/>"))?;
    x.empty("pmu", &[("state", c("off"))])?;
    x.open("kvm", &[])?;
    x.why(Choice::new(
        Knob::HintDedicated,
        "<kvm><hint-dedicated state='on'/></kvm>",
    ))?;
    x.empty("hint-dedicated", &[("state", c("on"))])?;
    x.close("kvm")?;
    x.close("features")
}

fn cpu(x: &mut X, def: &Def<'_>) -> std::io::Result<()> {
    let n = def.vm.cpus;
    x.why(Choice::new(
        Knob::HostPassthrough,
        "<cpu mode='host-passthrough' check='none' migratable='off'>",
    ))?;
    x.open(
        "cpu",
        &[
            ("mode", c("host-passthrough")),
            ("check", c("none")),
            ("migratable", c("off")),
        ],
    )?;
    x.why(Choice::new(
        Knob::Topology,
        format!("<topology sockets='1' dies='1' cores='{n}' threads='1'/>"),
    ))?;
    x.empty(
        "topology",
        &[
            ("sockets", c("1")),
            ("dies", c("1")),
            ("cores", c(n.to_string())),
            ("threads", c("1")),
        ],
    )?;
    for (knob, name) in [
        (Knob::TscDeadline, "tsc-deadline"),
        (Knob::Invtsc, "invtsc"),
    ] {
        x.why(Choice::new(
            knob,
            format!("<feature policy='require' name='{name}'/>"),
        ))?;
        x.empty("feature", &[("policy", c("require")), ("name", c(name))])?;
    }
    x.close("cpu")
}

fn devices(x: &mut X, def: &Def<'_>) -> std::io::Result<()> {
    x.open("devices", &[])?;
    if let Some(d) = def.vm.boot.as_ref().and_then(|b| b.disk.as_ref()) {
        let fmt = if d.extension().is_some_and(|e| e == "qcow2") {
            "qcow2"
        } else {
            "raw"
        };
        x.why(Choice::with(
            Knob::Iothreads,
            "<driver ... iothread='1' cache='none' io='native'/>",
            "the disk in I/O thread 1, O_DIRECT with native AIO: no host page cache and no main-loop work per request",
        ))?;
        x.open("disk", &[("type", c("file")), ("device", c("disk"))])?;
        x.empty(
            "driver",
            &[
                ("name", c("qemu")),
                ("type", c(fmt)),
                ("cache", c("none")),
                ("io", c("native")),
                ("iothread", c("1")),
            ],
        )?;
        x.empty("source", &[("file", c(d.display().to_string()))])?;
        x.empty("target", &[("dev", c("vda")), ("bus", c("virtio"))])?;
        x.close("disk")?;
    }
    x.why(Choice::new(
        Knob::NoUsb,
        "<controller type='usb' model='none'/>",
    ))?;
    x.empty("controller", &[("type", c("usb")), ("model", c("none"))])?;
    x.why(Choice::new(Knob::NoBalloon, "<memballoon model='none'/>"))?;
    x.empty("memballoon", &[("model", c("none"))])?;
    x.why(Choice::with(
        Knob::NoGraphics,
        "(no <graphics>, no <video>)",
        format!("no <graphics> and no <video>: {}", Knob::NoGraphics.why()),
    ))?;
    x.why(Choice::new(
        Knob::SerialConsole,
        "<serial type='pty'/> <console type='pty'/>",
    ))?;
    x.open("serial", &[("type", c("pty"))])?;
    x.empty("target", &[("port", c("0"))])?;
    x.close("serial")?;
    x.open("console", &[("type", c("pty"))])?;
    x.empty("target", &[("type", c("serial")), ("port", c("0"))])?;
    x.close("console")?;
    x.close("devices")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rt_sys::SysRoot;

    fn render_bundled(name: &str) -> Rendered {
        let p = profiles::load(name).unwrap().profile;
        let vms = profiles::host_vms(p.host.as_ref().unwrap());
        let d = Def::new(&p.name, &vms[0], &SysRoot::new("/nonexistent"));
        render(&d).unwrap()
    }

    #[test]
    fn ecu_domain_has_every_real_time_element() {
        let r = render_bundled("ecu");
        let t = &r.text;
        for want in [
            "<domain type=\"kvm\" xmlns:qemu=",
            "<vcpu placement=\"static\">4</vcpu>",
            "<vcpupin vcpu=\"0\" cpuset=\"2\"/>",
            "<vcpupin vcpu=\"3\" cpuset=\"5\"/>",
            "<emulatorpin cpuset=\"0-1\"/>",
            "<iothreadpin iothread=\"1\" cpuset=\"0-1\"/>",
            "<vcpusched vcpus=\"0-3\" scheduler=\"fifo\" priority=\"1\"/>",
            "<page size=\"2048\" unit=\"KiB\"/>",
            "<locked/>",
            "<nosharepages/>",
            "<cpu mode=\"host-passthrough\" check=\"none\" migratable=\"off\">",
            "<topology sockets=\"1\" dies=\"1\" cores=\"4\" threads=\"1\"/>",
            "<feature policy=\"require\" name=\"tsc-deadline\"/>",
            "<feature policy=\"require\" name=\"invtsc\"/>",
            "<pmu state=\"off\"/>",
            "<hint-dedicated state=\"on\"/>",
            "<memballoon model=\"none\"/>",
            "<controller type=\"usb\" model=\"none\"/>",
        ] {
            assert!(t.contains(want), "missing {want} in\n{t}");
        }
        let elements: Vec<&str> = t
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("<!--"))
            .collect();
        assert!(
            !elements
                .iter()
                .any(|l| l.starts_with("<graphics") || l.starts_with("<video")),
            "{t}"
        );
        assert!(t.contains("no <numatune>"), "no node known here: {t}");
        assert!(t.contains("no <emulatorsched>"), "{t}");
        // Each element above has its reason just before it.
        let before_locked = t
            .lines()
            .take_while(|l| !l.contains("<locked/>"))
            .last()
            .unwrap();
        assert!(before_locked.contains("swaps"), "{before_locked}");
        assert!(r
            .choices
            .iter()
            .any(|c| c.knob == Knob::HintDedicated && c.why.contains("cpuidle-haltpoll")));
    }

    #[test]
    fn can_buses_go_through_qemu_commandline_and_emulatorsched_iothreadsched_render() {
        let p = crate::fake::lab_profile();
        let mut v = profiles::host_vms(p.host.as_ref().unwrap())[0].clone();
        v.can_buses = vec![profiles::CanBus {
            id: "canbus0".into(),
            controller: profiles::CanController::KvaserPci,
            controllers: 2,
            host_interface: None,
        }];
        v.emulator_policy = Policy::Fifo;
        v.emulator_priority = 1;
        v.iothread_policy = Policy::Rr;
        v.iothread_priority = 2;
        v.numa_node = Some(0);
        let d = Def::new(&p.name, &v, &SysRoot::new("/nonexistent"));
        let t = render(&d).unwrap().text;
        assert!(t.contains(&format!("xmlns:qemu=\"{QEMU_NS}\"")), "{t}");
        let args: Vec<&str> = t
            .lines()
            .filter_map(|l| l.trim().strip_prefix("<qemu:arg value=\""))
            .map(|l| l.trim_end_matches("\"/>"))
            .collect();
        assert_eq!(
            args,
            [
                "-object",
                "can-bus,id=canbus0",
                "-device",
                "kvaser_pci,canbus=canbus0",
                "-device",
                "kvaser_pci,canbus=canbus0"
            ]
        );
        assert!(
            t.contains("<emulatorsched scheduler=\"fifo\" priority=\"1\"/>"),
            "{t}"
        );
        assert!(
            t.contains("<iothreadsched iothreads=\"1\" scheduler=\"rr\" priority=\"2\"/>"),
            "{t}"
        );
        assert!(t.contains("<memory mode=\"strict\" nodeset=\"0\"/>"), "{t}");
        assert!(
            t.contains("<vcpupin vcpu=\"0\" cpuset=\"0\"/>"),
            "unplaced vCPU 0 on the emulator CPU: {t}"
        );
    }

    #[test]
    fn a_can_bus_joined_to_a_host_interface_renders_the_bridge_and_why() {
        let p = crate::fake::lab_profile();
        let mut v = profiles::host_vms(p.host.as_ref().unwrap())[0].clone();
        v.can_buses = vec![profiles::CanBus {
            id: "canbus0".into(),
            controller: profiles::CanController::KvaserPci,
            controllers: 1,
            host_interface: Some("vcan0".into()),
        }];
        let d = Def::new(&p.name, &v, &SysRoot::new("/nonexistent"));
        let r = render(&d).unwrap();
        let args: Vec<&str> = r
            .text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("<qemu:arg value=\""))
            .map(|l| l.trim_end_matches("\"/>"))
            .collect();
        assert_eq!(
            args[args.len() - 2..],
            [
                "-object",
                "can-host-socketcan,id=canbus0-host,canbus=canbus0,if=vcan0"
            ]
        );
        assert!(
            r.choices
                .iter()
                .any(|c| c.knob == Knob::CanBus && c.why.contains("host SocketCAN interface vcan0")),
            "{:?}",
            r.choices
        );
    }

    #[test]
    fn comments_never_hold_a_double_dash() {
        let r = render_bundled("ecu");
        for l in r
            .text
            .lines()
            .filter(|l| l.trim_start().starts_with("<!--"))
        {
            let inner = l.trim().trim_start_matches("<!--").trim_end_matches("-->");
            assert!(!inner.contains("--"), "{l}");
        }
    }
}
