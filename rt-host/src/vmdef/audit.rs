//! The VM audit of `rt-host check`: is each running VM defined the way the profile's
//! rendering says? One item per element, each with the fix.
//!
//! - The guest CPU, through QMP: `query-cpus-fast` gives vCPU 0's QOM path, `qom-get`
//!   reads its `tsc-deadline`, `invtsc`, `pmu` and `kvm-hint-dedicated` properties, and
//!   `query-cpu-model-expansion` of `host` tells whether this host could offer a missing
//!   one. QMP is the profile's socket, the `-qmp` of QEMU's command line, or for a
//!   libvirt-managed QEMU (whose monitor libvirtd holds) `virsh qemu-monitor-command`.
//! - Memory, from `/proc/PID/status` through [`rt_sys::procmem`]: locked (`VmLck`) and
//!   hugepage-backed (`HugetlbPages`). hugetlb mappings are never counted as locked, so
//!   locked plus hugetlb must cover the guest RAM.
//! - With `--libvirt-xml FILE`, or a libvirt domain (`--libvirt-domain`, or a QEMU that
//!   libvirt started), the defined XML: vcpupin, emulatorpin, iothreadpin, vcpusched,
//!   emulatorsched, hugepages, locked, nosharepages, numatune, host-passthrough with
//!   topology and features, pmu, hint-dedicated, no balloon, USB or graphics.
//!
//! Pinning and policies of the threads are the planner's own items, as before.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use profiles::{Host, VmView};
use rt_sys::qmp::{self, Qmp, Reply};
use rt_sys::sched::Policy;
use rt_sys::{procmem, task, CpuSet, SysRoot};
use serde_json::Value;

use super::{Def, Knob};
use crate::plan::{Change, Status, When};
use crate::vm;

/// Where the defined libvirt XML comes from, besides a libvirt-started QEMU.
#[derive(Debug, Clone, Default)]
pub struct AuditOptions {
    /// A domain XML file (`virsh dumpxml NAME > FILE`).
    pub libvirt_xml: Option<PathBuf>,
    /// A libvirt domain to read with `virsh dumpxml`.
    pub libvirt_domain: Option<String>,
}

/// The virsh connection the audit uses.
pub const LIBVIRT_URI: &str = "qemu:///system";

/// One audit item (report-only: the fix redefines or restarts the VM).
fn item(
    name: &str,
    target: String,
    current: impl Into<String>,
    desired: impl Into<String>,
    ok: bool,
    fix: impl Into<String>,
) -> Change {
    Change {
        item: name.into(),
        target,
        current: current.into(),
        desired: desired.into(),
        when: if ok { When::Now } else { When::NextBoot },
        status: if ok { Status::Ok } else { Status::Differs },
        note: None,
        fix: if ok { None } else { Some(fix.into()) },
        essential: false,
        action: None,
    }
}

fn not_applicable(name: &str, target: String, current: &str, why: impl Into<String>) -> Change {
    Change {
        item: name.into(),
        target,
        current: current.into(),
        desired: "(audited when it applies)".into(),
        when: When::Now,
        status: Status::NotApplicable,
        note: Some(why.into()),
        fix: None,
        essential: false,
        action: None,
    }
}

/// The audit items of every VM of `host` on the machine behind `root`.
pub fn items(profile: &str, host: &Host, root: &SysRoot, opts: &AuditOptions) -> Vec<Change> {
    let vms = profiles::host_vms(host);
    let mut out = Vec::new();
    for view in &vms {
        let def = Def::new(profile, view, root);
        out.extend(vm_items(&def, root, opts, vms.len()));
    }
    out
}

fn vm_items(def: &Def<'_>, root: &SysRoot, opts: &AuditOptions, n_vms: usize) -> Vec<Change> {
    let view = def.vm;
    let target = format!("VM {:?}", view.name);
    let found = match vm::find(root, &view.find, None) {
        Ok(Some(v)) => v,
        Ok(None) => {
            let how = vm::describe(&view.find);
            let mut out = vec![not_applicable(
                "vm-definition",
                target.clone(),
                "not running",
                format!("{how} is not running: nothing to audit"),
            )];
            if let Some(x) = libvirt_xml(def, opts, None, n_vms) {
                out.extend(x);
            }
            return out;
        }
        Err(e) => {
            return vec![not_applicable(
                "vm-definition",
                target,
                "(not found)",
                e.to_string(),
            )]
        }
    };
    let args = task::cmdline(root, found.pid).unwrap_or_default();
    let domain = opts
        .libvirt_domain
        .clone()
        .filter(|d| n_vms == 1 || *d == view.name)
        .or_else(|| libvirt_domain_of(&args));
    let mut out = cpu_items(def, monitor(view, &args, domain.as_deref()));
    out.extend(memory_items(def, root, found.pid));
    if let Some(x) = libvirt_xml(def, opts, domain.as_deref(), n_vms) {
        out.extend(x);
    }
    out
}

/// The domain name of a QEMU that libvirt started (its files live in
/// `/var/lib/libvirt/qemu/domain-N-NAME/`): its `-name guest=`.
pub fn libvirt_domain_of(args: &[String]) -> Option<String> {
    let managed = args
        .iter()
        .any(|a| a.contains("/var/lib/libvirt/qemu/domain-"));
    managed.then(|| task::qemu_name_of(args)).flatten()
}

/// The QMP socket on a QEMU command line: `-qmp unix:PATH,...`, or a `-chardev socket`
/// with a `path=` that a `-mon ...,mode=control` uses.
pub fn qmp_socket_of(args: &[String]) -> Option<PathBuf> {
    let value = |opt: &str| -> Vec<&str> {
        args.windows(2)
            .filter(|w| w[0] == opt)
            .map(|w| w[1].as_str())
            .collect()
    };
    if let Some(p) = value("-qmp")
        .into_iter()
        .find_map(|v| v.strip_prefix("unix:"))
    {
        return Some(PathBuf::from(p.split(',').next().unwrap_or(p)));
    }
    let prop = |v: &str, k: &str| {
        v.split(',')
            .find_map(|kv| kv.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .map(str::to_string)
    };
    let control: Vec<String> = value("-mon")
        .into_iter()
        .filter(|m| m.split(',').any(|kv| kv == "mode=control"))
        .filter_map(|m| prop(m, "chardev"))
        .collect();
    value("-chardev")
        .into_iter()
        .find_map(|c| {
            let id = prop(c, "id")?;
            (c.starts_with("socket") && control.contains(&id)).then(|| prop(c, "path"))?
        })
        .map(PathBuf::from)
}

/// A way to send QMP commands to a VM.
enum Monitor {
    Socket(Qmp, String),
    Virsh(String),
    None(String),
}

fn monitor(view: &VmView, args: &[String], domain: Option<&str>) -> Monitor {
    let sock = view.find.qmp.clone().or_else(|| qmp_socket_of(args));
    if let Some(s) = sock {
        return match Qmp::connect(&s, Duration::from_secs(5)) {
            Ok(q) => Monitor::Socket(q, format!("QMP {}", s.display())),
            Err(e) => Monitor::None(format!("cannot talk QMP on {}: {e}", s.display())),
        };
    }
    match domain {
        Some(d) => Monitor::Virsh(d.to_string()),
        None => Monitor::None(format!(
            "no QMP socket: start QEMU with -qmp unix:PATH,server=on,wait=off or set {}",
            view.field("find")
        )),
    }
}

impl Monitor {
    fn how(&self) -> String {
        match self {
            Monitor::Socket(_, how) => how.clone(),
            Monitor::Virsh(d) => format!("virsh qemu-monitor-command {d}"),
            Monitor::None(why) => why.clone(),
        }
    }

    fn execute(&mut self, cmd: &str, args: Option<Value>) -> Result<Value, String> {
        match self {
            Monitor::Socket(q, _) => q.execute_with(cmd, args).map_err(|e| e.to_string()),
            Monitor::Virsh(d) => {
                let mut msg = serde_json::json!({ "execute": cmd });
                if let Some(a) = args {
                    msg["arguments"] = a;
                }
                let out = virsh(&["qemu-monitor-command", d, &msg.to_string()])?;
                match qmp::classify_reply(out.trim())? {
                    Reply::Return(v) => Ok(v),
                    Reply::Error(e) => Err(format!("{cmd}: {e}")),
                    other => Err(format!("{cmd}: unexpected reply {other:?}")),
                }
            }
            Monitor::None(why) => Err(why.clone()),
        }
    }
}

/// Run `virsh -c qemu:///system ARGS`: its stdout, or its error message.
pub fn virsh(args: &[&str]) -> Result<String, String> {
    let o = Command::new("virsh")
        .arg("-c")
        .arg(LIBVIRT_URI)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run virsh: {e}"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!(
            "virsh {}: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// The guest CPU properties the profile's definition sets, what they should be, and the
/// fix for each format.
const CPU_PROPS: [(&str, bool, Knob, &str); 4] = [
    ("tsc-deadline", true, Knob::TscDeadline, "libvirt <feature policy='require' name='tsc-deadline'/>, QEMU -cpu host,+tsc-deadline"),
    ("invtsc", true, Knob::Invtsc, "libvirt <feature policy='require' name='invtsc'/> with migratable='off', QEMU -cpu host,migratable=off,+invtsc"),
    ("pmu", false, Knob::PmuOff, "libvirt <pmu state='off'/>, QEMU -cpu ...,pmu=off, KubeVirt realtime"),
    ("kvm-hint-dedicated", true, Knob::HintDedicated, "libvirt <kvm><hint-dedicated state='on'/></kvm>, QEMU -cpu ...,kvm-hint-dedicated=on, KubeVirt dedicatedCpuPlacement"),
];

fn cpu_items(def: &Def<'_>, mut mon: Monitor) -> Vec<Change> {
    let name = &def.vm.name;
    let how = mon.how();
    let path = match mon
        .execute("query-cpus-fast", None)
        .and_then(|v| qmp::parse_cpu_paths(&v))
        .and_then(|p| p.into_iter().next().ok_or_else(|| "no vCPUs".to_string()))
    {
        Ok((_, p)) => p,
        Err(e) => {
            return vec![not_applicable(
                "vm-cpu",
                format!("VM {name:?} guest CPU"),
                "(unreadable)",
                format!("{e}: the guest CPU's features cannot be audited"),
            )];
        }
    };
    let mut host_offers: Option<Result<std::collections::BTreeMap<String, bool>, String>> = None;
    let mut kvm_on: Option<Option<bool>> = None;
    let mut out = Vec::new();
    for (prop, want, knob, fix) in CPU_PROPS {
        let target = format!("VM {name:?} vCPU 0 {prop} (qom-get {path}, via {how})");
        let got = mon
            .execute(
                "qom-get",
                Some(serde_json::json!({"path": path, "property": prop})),
            )
            .and_then(|v| {
                v.as_bool()
                    .ok_or_else(|| format!("{prop} is {v}, not a boolean"))
            });
        let onoff = |b: bool| if b { "on" } else { "off" };
        match got {
            Ok(b) if b == want => out.push(item("vm-cpu", target, onoff(b), onoff(want), true, "")),
            Ok(b) => {
                let offers = host_offers.get_or_insert_with(|| {
                    mon.execute(
                        "query-cpu-model-expansion",
                        Some(serde_json::json!({"type": "full", "model": {"name": "host"}})),
                    )
                    .and_then(|v| qmp::parse_model_props(&v))
                });
                let kvm = *kvm_on.get_or_insert_with(|| {
                    mon.execute("query-kvm", None)
                        .ok()
                        .and_then(|v| v.get("enabled").and_then(Value::as_bool))
                });
                let host = match (kvm, offers.as_ref().map(|m| m.get(prop).copied())) {
                    (Some(false), _) => "QEMU runs without KVM (query-kvm: not enabled): TCG does not offer it, run the VM on KVM".to_string(),
                    (_, Ok(Some(true))) if want => "this host offers it (query-cpu-model-expansion host)".to_string(),
                    (_, Ok(Some(false))) if want => "this host's KVM does not offer it (query-cpu-model-expansion host): the VM cannot have it here".to_string(),
                    (_, Ok(None)) if want => "the host model's expansion does not list it".to_string(),
                    (_, Ok(_)) => "the host can turn it off".to_string(),
                    (_, Err(e)) => format!("whether this host offers it is unknown ({e})"),
                };
                out.push(item(
                    "vm-cpu",
                    target,
                    onoff(b),
                    onoff(want),
                    false,
                    format!("{}; {host}; fix: {fix}", knob.why()),
                ));
            }
            Err(e) => out.push(not_applicable("vm-cpu", target, "(unreadable)", e)),
        }
    }
    out
}

fn memory_items(def: &Def<'_>, root: &SysRoot, pid: u32) -> Vec<Change> {
    let name = &def.vm.name;
    let status = root.display(procmem::status_path(pid));
    let Some(mem) = def.vm.memory_mib else {
        return vec![not_applicable(
            "vm-memory",
            format!("VM {name:?} memory"),
            "(unknown size)",
            format!(
                "{} is not set: locked and hugepage memory cannot be compared",
                def.vm.field("memory_mib")
            ),
        )];
    };
    let mem_kib = mem.saturating_mul(1024);
    let m = match procmem::read(root, pid) {
        Ok(m) => m,
        Err(e) => {
            return vec![not_applicable(
                "vm-memory",
                format!("VM {name:?} memory ({status})"),
                "(unreadable)",
                e.to_string(),
            )]
        }
    };
    let mut out = Vec::new();
    let huge = m.hugetlb_kib.unwrap_or(0);
    match m.locked_kib {
        Some(l) => out.push(item(
            "vm-memory",
            format!("VM {name:?} locked memory (VmLck + HugetlbPages, {status})"),
            format!("VmLck {l} kB, HugetlbPages {huge} kB"),
            format!(">= {mem_kib} kB (guest RAM)"),
            l > 0 && l.saturating_add(huge) >= mem_kib,
            format!(
                "{}; fix: libvirt <memoryBacking><locked/>, QEMU -overcommit mem-lock=on",
                Knob::Locked.why()
            ),
        )),
        None => out.push(not_applicable(
            "vm-memory",
            format!("VM {name:?} locked memory ({status})"),
            "(no VmLck line)",
            "this kernel does not report locked memory",
        )),
    }
    match def.vm.hugepage_kib {
        Some(kib) => out.push(item(
            "vm-memory",
            format!("VM {name:?} hugepage-backed memory (HugetlbPages, {status})"),
            format!("{huge} kB"),
            format!(">= {mem_kib} kB on {kib} kB pages"),
            huge >= mem_kib,
            format!("{}; fix: libvirt <memoryBacking><hugepages><page size='{kib}' unit='KiB'/>, QEMU -object memory-backend-memfd,hugetlb=on,hugetlbsize=...; reserve the pages first (rt-host setup, host.hugepages)", Knob::Hugepages.why()),
        )),
        None => out.push(not_applicable("vm-memory", format!("VM {name:?} hugepage-backed memory"), &format!("{huge} kB"), format!("the profile asks for no hugepages ({})", def.vm.field("hugepage_kib")))),
    }
    out.extend(numa_items(def, root, pid, mem_kib));
    out
}

/// Where the VM's pages are (`/proc/PID/numa_maps`): on the hugepage size the profile
/// asks for, and on the NUMA node of its vCPUs (at most a tenth of guest RAM elsewhere).
fn numa_items(def: &Def<'_>, root: &SysRoot, pid: u32, mem_kib: u64) -> Vec<Change> {
    let name = &def.vm.name;
    let at = root.display(procmem::numa_maps_path(pid));
    let maps = match procmem::numa_maps(root, pid) {
        Ok(m) => m,
        Err(e) => {
            return vec![not_applicable(
                "vm-memory",
                format!("VM {name:?} memory placement ({at})"),
                "(unreadable)",
                e.to_string(),
            )]
        }
    };
    let mib = |k: u64| format!("{} MiB", k / 1024);
    let mut out = Vec::new();
    if let Some(kib) = def.vm.hugepage_kib {
        let on = maps.huge_kib.get(&kib).copied().unwrap_or(0);
        let shown: Vec<String> = maps
            .huge_kib
            .iter()
            .map(|(size, k)| format!("{} on {size} kB pages", mib(*k)))
            .collect();
        out.push(item(
            "vm-memory",
            format!("VM {name:?} hugetlb mappings ({at})"),
            listed(&shown, "no hugetlb mapping"),
            format!("{} on {kib} kB pages", mib(mem_kib)),
            on >= mem_kib,
            format!(
                "{}; fix: back guest RAM with {kib} kB pages (libvirt <hugepages><page \
                 size='{kib}' unit='KiB'/>, QEMU memory-backend-memfd hugetlbsize)",
                Knob::Hugepages.why()
            ),
        ));
    }
    let Some(node) = def.node else {
        out.push(not_applicable(
            "vm-memory",
            format!("VM {name:?} NUMA placement of memory ({at})"),
            &listed(&per_node(&maps), "(nothing resident)"),
            def.node_why.clone(),
        ));
        return out;
    };
    let off: u64 = maps
        .node_kib
        .iter()
        .filter(|(n, _)| **n != node)
        .map(|(_, k)| k)
        .sum();
    out.push(item(
        "vm-memory",
        format!("VM {name:?} NUMA placement of memory ({at})"),
        listed(&per_node(&maps), "(nothing resident)"),
        format!("on node {node}, at most {} elsewhere", mib(mem_kib / 10)),
        off <= mem_kib / 10,
        format!(
            "{}; fix: bind the memory (libvirt <numatune><memory mode='strict' \
             nodeset='{node}'/>, QEMU memory-backend host-nodes={node},policy=bind) and \
             reserve the hugepages on node {node}",
            Knob::NumaStrict.why()
        ),
    ));
    out
}

fn per_node(m: &procmem::NumaMaps) -> Vec<String> {
    m.node_kib
        .iter()
        .map(|(n, k)| format!("N{n} {} MiB", k / 1024))
        .collect()
}

fn libvirt_xml(
    def: &Def<'_>,
    opts: &AuditOptions,
    domain: Option<&str>,
    n_vms: usize,
) -> Option<Vec<Change>> {
    let name = &def.vm.name;
    let target = format!("VM {name:?} libvirt XML");
    let (text, from) = if let Some(f) = &opts.libvirt_xml {
        match std::fs::read_to_string(f) {
            Ok(t) => (t, f.display().to_string()),
            Err(e) => {
                return Some(vec![not_applicable(
                    "vm-libvirt",
                    target,
                    "(unreadable)",
                    format!("cannot read {}: {e}", f.display()),
                )])
            }
        }
    } else {
        let d = domain.or(opts.libvirt_domain.as_deref().filter(|_| n_vms == 1))?;
        match virsh(&["dumpxml", d]) {
            Ok(t) => (t, format!("virsh dumpxml {d}")),
            Err(e) => {
                return Some(vec![not_applicable(
                    "vm-libvirt",
                    target,
                    "(unreadable)",
                    e,
                )])
            }
        }
    };
    Some(match xml_items(def, &text, &from) {
        Ok(v) => v,
        Err(e) => vec![not_applicable("vm-libvirt", target, "(not a domain)", e)],
    })
}

/// The audit of a domain XML `text` (read from `from`) against the VM's definition.
pub fn xml_items(def: &Def<'_>, text: &str, from: &str) -> Result<Vec<Change>, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("{from}: {e}"))?;
    let dom = doc.root_element();
    if dom.tag_name().name() != "domain" {
        return Err(format!(
            "{from}: the root element is <{}>, not <domain>",
            dom.tag_name().name()
        ));
    }
    let dname = child(dom, "name").and_then(|n| n.text()).unwrap_or("");
    if dname != def.vm.name {
        return Err(format!(
            "{from} defines domain {dname:?}, not VM {:?}",
            def.vm.name
        ));
    }
    let mut x = XmlAudit {
        def,
        from,
        out: Vec::new(),
    };
    x.cputune(child(dom, "cputune"));
    x.memory(dom);
    x.cpu(dom);
    x.devices(dom);
    Ok(x.out)
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn children<'a, 'i>(
    n: Option<roxmltree::Node<'a, 'i>>,
    name: &'a str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    n.into_iter()
        .flat_map(|n| n.children())
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn cpus_eq(attr: Option<&str>, want: &CpuSet) -> bool {
    attr.and_then(|a| CpuSet::parse(a).ok())
        .is_some_and(|s| s == *want)
}

/// Page size in KiB from libvirt's `size` and `unit` (default KiB).
fn page_kib(size: &str, unit: Option<&str>) -> Option<u64> {
    let n: u64 = size.parse().ok()?;
    let mult = match unit.unwrap_or("KiB") {
        "b" | "bytes" => return Some(n / 1024),
        "KiB" | "K" | "k" => 1,
        "MiB" | "M" | "m" => 1024,
        "GiB" | "G" | "g" => 1024 * 1024,
        _ => return None,
    };
    Some(n * mult)
}

/// `a, b`, or `empty` for none.
/// `scheduler priority` of a `<vcpusched>`-style element, `(absent)` without one.
fn sched_of_element(n: Option<roxmltree::Node<'_, '_>>) -> String {
    n.map_or("(absent)".to_string(), |n| {
        format!(
            "{} {}",
            n.attribute("scheduler").unwrap_or("?"),
            n.attribute("priority").unwrap_or("")
        )
        .trim()
        .to_string()
    })
}

fn listed<S: AsRef<str>>(items: &[S], empty: &str) -> String {
    if items.is_empty() {
        empty.to_string()
    } else {
        items
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

struct XmlAudit<'d, 'p> {
    def: &'d Def<'p>,
    from: &'d str,
    out: Vec<Change>,
}

impl XmlAudit<'_, '_> {
    fn check(&mut self, element: &str, current: String, desired: &str, ok: bool, knob: Knob) {
        let fix = format!(
            "{}; fix: virsh edit {} and set {desired} (rt-host vm --format libvirt renders it); takes effect at the next start",
            knob.why(),
            self.def.vm.name
        );
        self.out.push(item(
            "vm-libvirt",
            format!("VM {:?} {element} ({})", self.def.vm.name, self.from),
            current,
            desired,
            ok,
            fix,
        ));
    }

    fn cputune(&mut self, ct: Option<roxmltree::Node<'_, '_>>) {
        let vm = self.def.vm;
        for p in self.def.placements() {
            let pin = children(ct, "vcpupin")
                .find(|n| n.attribute("vcpu") == Some(p.vcpu.to_string().as_str()));
            let cur = pin
                .and_then(|n| n.attribute("cpuset"))
                .map_or("(absent)".to_string(), str::to_string);
            let knob = if p.placed {
                Knob::VcpuPin
            } else {
                Knob::VcpuUnplaced
            };
            let want = format!("<vcpupin vcpu='{}' cpuset='{}'/>", p.vcpu, p.cpus);
            let ok = cpus_eq(pin.and_then(|n| n.attribute("cpuset")), &p.cpus);
            self.check(
                &format!("<vcpupin vcpu='{}'>", p.vcpu),
                cur,
                &want,
                ok,
                knob,
            );
        }
        let emu = children(ct, "emulatorpin")
            .next()
            .and_then(|n| n.attribute("cpuset"));
        let want = format!("<emulatorpin cpuset='{}'/>", vm.emulator_cpus);
        self.check(
            "<emulatorpin>",
            emu.unwrap_or("(absent)").into(),
            &want,
            cpus_eq(emu, &vm.emulator_cpus),
            Knob::EmulatorPin,
        );
        for k in 1..=vm.iothreads {
            let n = children(ct, "iothreadpin")
                .find(|n| n.attribute("iothread") == Some(k.to_string().as_str()));
            let cur = n.and_then(|n| n.attribute("cpuset"));
            let want = format!(
                "<iothreadpin iothread='{k}' cpuset='{}'/>",
                vm.iothread_cpus
            );
            self.check(
                &format!("<iothreadpin iothread='{k}'>"),
                cur.unwrap_or("(absent)").into(),
                &want,
                cpus_eq(cur, &vm.iothread_cpus),
                Knob::IothreadPin,
            );
        }
        for g in self.def.sched_groups() {
            for v in g.vcpus.iter() {
                let s = children(ct, "vcpusched").find(|n| {
                    n.attribute("vcpus")
                        .is_none_or(|a| CpuSet::parse(a).is_ok_and(|c| c.contains(v)))
                });
                let cur = sched_of_element(s);
                let want_s = if g.policy.is_realtime() {
                    format!("{} {}", g.policy, g.priority)
                } else {
                    g.policy.to_string()
                };
                let want = format!(
                    "<vcpusched vcpus='{v}' scheduler='{}' priority='{}'/>",
                    g.policy, g.priority
                );
                self.check(
                    &format!("<vcpusched> of vCPU {v}"),
                    cur.clone(),
                    &want,
                    cur == want_s,
                    Knob::VcpuSched,
                );
            }
        }
        for (element, policy, priority, knob) in [
            (
                "emulatorsched",
                vm.emulator_policy,
                vm.emulator_priority,
                Knob::EmulatorSched,
            ),
            (
                "iothreadsched",
                vm.iothread_policy,
                vm.iothread_priority,
                Knob::IothreadSched,
            ),
        ] {
            if policy == Policy::Other {
                continue;
            }
            let cur = sched_of_element(children(ct, element).next());
            let want = format!("<{element} scheduler='{policy}' priority='{priority}'/>");
            let ok = cur == format!("{policy} {priority}");
            self.check(&format!("<{element}>"), cur, &want, ok, knob);
        }
    }

    fn memory(&mut self, dom: roxmltree::Node<'_, '_>) {
        let mb = child(dom, "memoryBacking");
        if let Some(kib) = self.def.vm.hugepage_kib {
            let page = mb.and_then(|m| child(m, "hugepages")).map(|h| {
                children(Some(h), "page").next().map_or(Some(2048), |p| {
                    page_kib(p.attribute("size").unwrap_or(""), p.attribute("unit"))
                })
            });
            let cur = match page {
                None => "(absent)".to_string(),
                Some(Some(k)) => format!("{k} KiB pages"),
                Some(None) => "(unreadable page size)".to_string(),
            };
            self.check(
                "<memoryBacking><hugepages>",
                cur,
                &format!("<hugepages><page size='{kib}' unit='KiB'/></hugepages>"),
                page == Some(Some(kib)),
                Knob::Hugepages,
            );
        }
        for (el, knob) in [
            ("locked", Knob::Locked),
            ("nosharepages", Knob::NoSharePages),
        ] {
            let has = mb.and_then(|m| child(m, el)).is_some();
            self.check(
                &format!("<memoryBacking><{el}/>"),
                if has { "present" } else { "(absent)" }.into(),
                &format!("<{el}/>"),
                has,
                knob,
            );
        }
        if let Some(node) = self.def.node {
            let m = child(dom, "numatune").and_then(|n| child(n, "memory"));
            let cur = m.map_or("(absent)".to_string(), |m| {
                format!(
                    "{} {}",
                    m.attribute("mode").unwrap_or("strict"),
                    m.attribute("nodeset").unwrap_or("?")
                )
            });
            let ok = m.is_some_and(|m| {
                m.attribute("mode").unwrap_or("strict") == "strict"
                    && cpus_eq(m.attribute("nodeset"), &CpuSet::from_cpus([node]))
            });
            self.check(
                "<numatune><memory>",
                cur,
                &format!("<memory mode='strict' nodeset='{node}'/>"),
                ok,
                Knob::NumaStrict,
            );
        }
    }

    fn cpu(&mut self, dom: roxmltree::Node<'_, '_>) {
        let cpu = child(dom, "cpu");
        let mode = cpu.map_or("(absent)", |c| c.attribute("mode").unwrap_or("custom"));
        self.check(
            "<cpu mode>",
            mode.into(),
            "<cpu mode='host-passthrough' migratable='off'>",
            mode == "host-passthrough",
            Knob::HostPassthrough,
        );
        let n = self.def.vm.cpus.to_string();
        let topo = cpu.and_then(|c| child(c, "topology"));
        let cur = topo.map_or("(absent)".to_string(), |t| {
            format!(
                "sockets {} cores {} threads {}",
                t.attribute("sockets").unwrap_or("?"),
                t.attribute("cores").unwrap_or("?"),
                t.attribute("threads").unwrap_or("?")
            )
        });
        self.check(
            "<cpu><topology>",
            cur.clone(),
            &format!("<topology sockets='1' dies='1' cores='{n}' threads='1'/>"),
            cur == format!("sockets 1 cores {n} threads 1"),
            Knob::Topology,
        );
        for (name, knob) in [
            ("tsc-deadline", Knob::TscDeadline),
            ("invtsc", Knob::Invtsc),
        ] {
            let f = children(cpu, "feature").find(|f| f.attribute("name") == Some(name));
            let pol = f.map(|f| f.attribute("policy").unwrap_or("require"));
            self.check(
                &format!("<cpu><feature name='{name}'>"),
                pol.unwrap_or("(absent)").into(),
                &format!("<feature policy='require' name='{name}'/>"),
                pol == Some("require"),
                knob,
            );
        }
        let feats = child(dom, "features");
        let pmu = feats
            .and_then(|f| child(f, "pmu"))
            .map(|p| p.attribute("state").unwrap_or("on"));
        self.check(
            "<features><pmu>",
            pmu.unwrap_or("(absent: on)").into(),
            "<pmu state='off'/>",
            pmu == Some("off"),
            Knob::PmuOff,
        );
        let hint = feats
            .and_then(|f| child(f, "kvm"))
            .and_then(|k| child(k, "hint-dedicated"))
            .map(|h| h.attribute("state").unwrap_or("?"));
        self.check(
            "<features><kvm><hint-dedicated>",
            hint.unwrap_or("(absent)").into(),
            "<kvm><hint-dedicated state='on'/></kvm>",
            hint == Some("on"),
            Knob::HintDedicated,
        );
    }

    fn devices(&mut self, dom: roxmltree::Node<'_, '_>) {
        let dev = child(dom, "devices");
        let balloon = children(dev, "memballoon")
            .next()
            .map(|b| b.attribute("model").unwrap_or("?"));
        // libvirt adds a virtio balloon when the element is missing.
        self.check(
            "<memballoon>",
            balloon.unwrap_or("(absent: virtio)").into(),
            "<memballoon model='none'/>",
            balloon == Some("none"),
            Knob::NoBalloon,
        );
        let usb: Vec<&str> = children(dev, "controller")
            .filter(|c| c.attribute("type") == Some("usb"))
            .map(|c| c.attribute("model").unwrap_or("(default)"))
            .collect();
        self.check(
            "<controller type='usb'>",
            listed(&usb, "(absent: default)"),
            "<controller type='usb' model='none'/>",
            usb == ["none"],
            Knob::NoUsb,
        );
        let gfx: Vec<String> = children(dev, "graphics")
            .map(|g| format!("graphics {}", g.attribute("type").unwrap_or("?")))
            .chain(children(dev, "video").filter_map(|v| {
                child(v, "model")
                    .and_then(|m| m.attribute("type"))
                    .filter(|t| *t != "none")
                    .map(|t| format!("video {t}"))
            }))
            .collect();
        self.check(
            "<graphics>/<video>",
            listed(&gfx, "none"),
            "no <graphics>, no <video>",
            gfx.is_empty(),
            Knob::NoGraphics,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    // The command line libvirt 9.0 gave a TCG domain on this machine (trimmed).
    const LIBVIRT_QEMU: &str = "/usr/bin/qemu-system-x86_64 -name guest=vmdeftest,debug-threads=on -S -object {\"qom-type\":\"secret\",\"id\":\"masterKey0\",\"format\":\"raw\",\"file\":\"/var/lib/libvirt/qemu/domain-6-vmdeftest/master-key.aes\"} -machine pc-q35-7.2,usb=off,mem-merge=off -chardev socket,id=charmonitor,fd=28,server=on,wait=off -mon chardev=charmonitor,id=monitor,mode=control";

    #[test]
    fn finds_qmp_sockets_and_libvirt_domains_on_command_lines() {
        let a = args("qemu-system-x86_64 -name lab -qmp unix:/run/lab.qmp,server=on,wait=off");
        assert_eq!(qmp_socket_of(&a), Some(PathBuf::from("/run/lab.qmp")));
        let a = args("qemu -chardev socket,id=m0,path=/tmp/q.sock,server=on,wait=off -mon chardev=m0,mode=control");
        assert_eq!(qmp_socket_of(&a), Some(PathBuf::from("/tmp/q.sock")));
        let a = args("qemu -chardev socket,id=s0,path=/tmp/serial.sock,server=on -mon chardev=m0,mode=readline");
        assert_eq!(qmp_socket_of(&a), None, "not a control monitor");
        let l = args(LIBVIRT_QEMU);
        assert_eq!(qmp_socket_of(&l), None, "libvirt passes an fd");
        assert_eq!(libvirt_domain_of(&l).as_deref(), Some("vmdeftest"));
        assert_eq!(
            libvirt_domain_of(&args("qemu-system-x86_64 -name lab")),
            None
        );
    }

    fn lab_def_items(xml: &str) -> Vec<Change> {
        let p = crate::fake::lab_profile();
        let vms = profiles::host_vms(p.host.as_ref().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let m = crate::fake::FakeMachine::new(dir.path());
        let d = Def::new(&p.name, &vms[0], &m.root);
        xml_items(&d, xml, "t.xml").unwrap()
    }

    #[test]
    fn the_rendered_xml_passes_its_own_audit_and_each_missing_element_is_an_item() {
        let p = crate::fake::lab_profile();
        let vms = profiles::host_vms(p.host.as_ref().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let m = crate::fake::FakeMachine::new(dir.path());
        let d = Def::new(&p.name, &vms[0], &m.root);
        let xml = super::super::libvirt::render(&d).unwrap().text;
        let items = xml_items(&d, &xml, "t.xml").unwrap();
        let bad: Vec<&Change> = items.iter().filter(|c| c.status != Status::Ok).collect();
        assert!(bad.is_empty(), "{bad:#?}");
        assert_eq!(items.len(), 17, "one item per element: {items:#?}");
        // The TCG variant of the test: no host-passthrough, no locked, no vcpusched.
        let tcg = xml
            .replace("<locked/>", "")
            .replace(
                "<vcpusched vcpus=\"1\" scheduler=\"fifo\" priority=\"50\"/>",
                "",
            )
            .replace("<memballoon model=\"none\"/>", "");
        let tcg = tcg.replace(
            &tcg[tcg.find("<cpu ").unwrap()..tcg.find("</cpu>").unwrap() + 6],
            "",
        );
        let items = lab_def_items(&tcg);
        let bad: Vec<(String, String)> = items
            .iter()
            .filter(|c| c.status == Status::Differs)
            .map(|c| (c.target.clone(), c.current.clone()))
            .collect();
        let t = |s: &str| format!("VM \"lab\" {s} (t.xml)");
        assert_eq!(
            bad,
            [
                (t("<vcpusched> of vCPU 1"), "(absent)".into()),
                (t("<memoryBacking><locked/>"), "(absent)".into()),
                (t("<cpu mode>"), "(absent)".into()),
                (t("<cpu><topology>"), "(absent)".into()),
                (t("<cpu><feature name='tsc-deadline'>"), "(absent)".into()),
                (t("<cpu><feature name='invtsc'>"), "(absent)".into()),
                (t("<memballoon>"), "(absent: virtio)".into()),
            ]
        );
        let fix = items
            .iter()
            .find(|c| c.target.contains("<memballoon>"))
            .unwrap();
        assert!(
            fix.fix
                .as_deref()
                .unwrap()
                .contains("virsh edit lab and set <memballoon model='none'/>"),
            "{fix:?}"
        );
        assert_eq!(fix.when, When::NextBoot);
    }

    #[test]
    fn wrong_values_and_foreign_domains_are_named() {
        let p = crate::fake::lab_profile();
        let vms = profiles::host_vms(p.host.as_ref().unwrap());
        let d = Def::new(&p.name, &vms[0], &SysRoot::new("/nonexistent"));
        let xml = "<domain type='kvm'><name>lab</name><cputune><vcpupin vcpu='1' cpuset='0-1'/>\
                   <vcpusched vcpus='0-1' scheduler='rr' priority='10'/></cputune>\
                   <memoryBacking><hugepages><page size='1' unit='G'/></hugepages></memoryBacking>\
                   <devices><graphics type='vnc'/><video><model type='cirrus'/></video></devices></domain>";
        let items = xml_items(&d, xml, "x").unwrap();
        let cur = |t: &str| {
            items
                .iter()
                .find(|c| c.target.contains(t))
                .map(|c| (c.status, c.current.clone()))
                .unwrap()
        };
        assert_eq!(cur("<vcpupin vcpu='1'>"), (Status::Differs, "0-1".into()));
        assert_eq!(
            cur("<vcpusched> of vCPU 1"),
            (Status::Differs, "rr 10".into())
        );
        assert_eq!(
            cur("<graphics>/<video>"),
            (Status::Differs, "graphics vnc, video cirrus".into())
        );
        assert_eq!(page_kib("1", Some("G")), Some(1_048_576));
        let e = xml_items(&d, "<domain><name>other</name></domain>", "x").unwrap_err();
        assert_eq!(e, "x defines domain \"other\", not VM \"lab\"");
        assert!(xml_items(&d, "<domain", "x")
            .unwrap_err()
            .starts_with("x: "));
    }

    #[test]
    fn memory_on_the_wrong_numa_node_or_page_size_is_an_item_with_its_fix() {
        let dir = tempfile::tempdir().unwrap();
        let m = crate::fake::FakeMachine::new(dir.path());
        // Two nodes: CPU 0 on node 0, CPU 1 (the real-time vCPU's) on node 1.
        m.put("sys/devices/system/node/node0/cpulist", "0\n");
        m.put("sys/devices/system/node/node1/cpulist", "1\n");
        let p = crate::fake::lab_profile();
        let mut v = profiles::host_vms(p.host.as_ref().unwrap())[0].clone();
        v.hugepage_kib = Some(2048);
        let numa = |maps: &str| {
            m.put("proc/4000/numa_maps", maps);
            m.put(
                "proc/4000/status",
                "Name:\tqemu\nVmLck:\t0 kB\nHugetlbPages:\t524288 kB\n",
            );
            let d = Def::new(&p.name, &v, &m.root);
            memory_items(&d, &m.root, 4000)
                .into_iter()
                .filter(|c| c.target.contains("numa_maps"))
                .map(|c| (c.target, c.current, c.status, c.fix))
                .collect::<Vec<_>>()
        };
        // 512 MiB of 2 MiB pages on node 0: the right page size, the wrong node.
        let got = numa("7f00 default file=/memfd:ram huge N0=256 kernelpagesize_kB=2048\n7f80 default anon=100 N1=100 kernelpagesize_kB=4\n");
        assert_eq!(got.len(), 2, "{got:#?}");
        assert_eq!(
            (got[0].1.as_str(), got[0].2),
            ("512 MiB on 2048 kB pages", Status::Ok)
        );
        assert_eq!(
            (got[1].1.as_str(), got[1].2),
            ("N0 512 MiB, N1 0 MiB", Status::Differs)
        );
        assert!(
            got[1].3.as_deref().unwrap().contains("nodeset='1'"),
            "{got:#?}"
        );
        // On node 1, but on 4 kB pages.
        let got = numa("7f80 default anon=131072 N1=131072 kernelpagesize_kB=4\n");
        assert_eq!(
            (got[0].1.as_str(), got[0].2),
            ("no hugetlb mapping", Status::Differs)
        );
        assert_eq!(got[1].2, Status::Ok, "{got:#?}");
    }
}
