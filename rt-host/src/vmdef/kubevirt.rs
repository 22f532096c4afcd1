//! A KubeVirt `VirtualMachineInstance` (`kubevirt.io/v1`) for a VM, as YAML with a
//! comment giving the reason for each field.
//!
//! Field names and types are KubeVirt's (`kubevirt.io/api/core/v1`, `schema.go`):
//! `spec.domain.cpu.dedicatedCpuPlacement`, `isolateEmulatorThread`, `realtime.mask`,
//! `numa.guestMappingPassthrough`, `spec.domain.memory.hugepages.pageSize`,
//! `spec.domain.ioThreadsPolicy`, `spec.domain.devices.autoattachMemBalloon` and
//! `autoattachGraphicsDevice`. With dedicated CPUs the kubelet's CPU manager picks the
//! host CPUs, so the profile's CPU numbers do not carry over; what does is the shape:
//! dedicated pCPUs, an isolated emulator pCPU, FIFO on the masked vCPUs (KubeVirt uses
//! priority 1 and turns the PMU off), hugepage-backed memory without balloon or graphics.
//!
//! No maintained YAML serializer writes comments, so this emits YAML itself from a small
//! tree: scalars are booleans, integers or JSON-quoted strings (valid YAML 1.2), and the
//! tests parse the output back with a YAML parser.

use super::{Choice, Def, Format, Knob, Rendered, VmDefError, KUBEVIRT_DEDICATED, KUBEVIRT_RT};

/// A YAML value with optional comments on its entries.
#[derive(Debug, Clone, PartialEq)]
pub enum Y {
    /// A mapping, in order: key, value, comment.
    Map(Vec<(String, Y, Option<String>)>),
    /// A sequence of values.
    Seq(Vec<Y>),
    /// A string.
    Str(String),
    /// An unsigned integer.
    Int(u64),
    /// A boolean.
    Bool(bool),
}

fn s(v: impl Into<String>) -> Y {
    Y::Str(v.into())
}

/// Builds a mapping and records each commented field as a choice.
struct M<'c> {
    entries: Vec<(String, Y, Option<String>)>,
    choices: &'c mut Vec<Choice>,
    path: String,
}

impl<'c> M<'c> {
    fn new(choices: &'c mut Vec<Choice>, path: &str) -> M<'c> {
        M {
            entries: Vec::new(),
            choices,
            path: path.to_string(),
        }
    }
    fn put(&mut self, key: &str, v: Y) -> &mut Self {
        self.entries.push((key.into(), v, None));
        self
    }
    fn why(&mut self, key: &str, v: Y, knob: Knob, why: impl Into<String>) -> &mut Self {
        let why = why.into();
        let mut c = Choice::with(knob, format!("{}.{key}", self.path), why.clone());
        if matches!(
            knob,
            Knob::VcpuPin | Knob::EmulatorPin | Knob::Iothreads | Knob::IothreadPin
        ) {
            c.source = KUBEVIRT_DEDICATED;
        } else if knob == Knob::VcpuSched {
            c.source = KUBEVIRT_RT;
        }
        self.choices.push(c);
        self.entries.push((key.into(), v, Some(why)));
        self
    }
    fn done(&mut self) -> Y {
        Y::Map(std::mem::take(&mut self.entries))
    }
}

fn scalar(v: &Y) -> Option<String> {
    match v {
        Y::Str(t) => Some(serde_json::Value::String(t.clone()).to_string()),
        Y::Int(n) => Some(n.to_string()),
        Y::Bool(b) => Some(b.to_string()),
        Y::Map(m) if m.is_empty() => Some("{}".into()),
        Y::Seq(q) if q.is_empty() => Some("[]".into()),
        _ => None,
    }
}

fn comment(c: &Option<String>) -> String {
    c.as_ref().map(|c| format!("  # {c}")).unwrap_or_default()
}

/// Write `v` as YAML at `indent` spaces.
pub fn emit(v: &Y, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Y::Map(entries) => {
            for (k, val, c) in entries {
                match scalar(val) {
                    Some(sc) => out.push_str(&format!("{pad}{k}: {sc}{}\n", comment(c))),
                    None => {
                        out.push_str(&format!("{pad}{k}:{}\n", comment(c)));
                        emit(val, indent + 2, out);
                    }
                }
            }
        }
        Y::Seq(items) => {
            for item in items {
                match (scalar(item), item) {
                    (Some(sc), _) => out.push_str(&format!("{pad}- {sc}\n")),
                    (None, Y::Map(_)) => {
                        let mut inner = String::new();
                        emit(item, indent + 2, &mut inner);
                        // The first key goes on the dash's line.
                        let rest = inner.trim_start_matches(' ');
                        out.push_str(&format!("{pad}- {rest}"));
                    }
                    (None, _) => {
                        out.push_str(&format!("{pad}-\n"));
                        emit(item, indent + 2, out);
                    }
                }
            }
        }
        other => {
            if let Some(sc) = scalar(other) {
                out.push_str(&format!("{pad}{sc}\n"));
            }
        }
    }
}

/// A DNS-1123 subdomain, as Kubernetes object names must be.
fn dns_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A Kubernetes quantity for `kib` KiB pages: `2Mi`, `1Gi`.
fn page_quantity(kib: u64) -> String {
    if kib % (1024 * 1024) == 0 {
        format!("{}Gi", kib / (1024 * 1024))
    } else {
        format!("{}Mi", kib / 1024)
    }
}

fn cpu(def: &Def<'_>, choices: &mut Vec<Choice>) -> Y {
    let vm = def.vm;
    let mut m = M::new(choices, "spec.domain.cpu");
    m.why(
        "model",
        s("host-passthrough"),
        Knob::HostPassthrough,
        Knob::HostPassthrough.why(),
    );
    m.put("sockets", Y::Int(1))
        .put("cores", Y::Int(u64::from(vm.cpus)));
    m.why("threads", Y::Int(1), Knob::Topology, Knob::Topology.why());
    m.why(
        "dedicatedCpuPlacement",
        Y::Bool(true),
        Knob::VcpuPin,
        format!(
            "each vCPU on its own pCPU, chosen by the kubelet's static CPU manager (the profile's \
             CPUs {} are this host's numbering); KubeVirt also sets kvm hint-dedicated for dedicated CPUs",
            def.vcpu_host_cpus()
        ),
    );
    m.why(
        "isolateEmulatorThread",
        Y::Bool(true),
        Knob::EmulatorPin,
        "one more dedicated pCPU for QEMU's emulator thread: never beside a real-time vCPU",
    );
    if vm.hugepage_kib.is_some() {
        let mut n = M::new(m.choices, "spec.domain.cpu.numa");
        n.put("guestMappingPassthrough", Y::Map(Vec::new()));
        let numa = n.done();
        m.why("numa", numa, Knob::NumaStrict, "guest NUMA cells follow the pinned pCPUs' host nodes: memory never crosses a node (needs hugepages)");
    }
    let rt = vm.realtime_vcpus();
    if !rt.is_empty() {
        let mut r = M::new(m.choices, "spec.domain.cpu.realtime");
        r.put("mask", s(rt.to_string()));
        let realtime = r.done();
        let prios: Vec<String> = vm
            .vcpus
            .iter()
            .filter(|v| v.policy.is_realtime())
            .map(|v| format!("{} {}", v.policy, v.priority))
            .collect();
        m.why(
            "realtime",
            realtime,
            Knob::VcpuSched,
            format!(
                "vCPUs {rt} real-time: KubeVirt gives them SCHED_FIFO priority 1 (the profile's {} \
                 has no KubeVirt field) and turns the PMU off",
                prios.join(", ")
            ),
        );
    }
    let feature = |name: &str| {
        Y::Map(vec![
            ("name".into(), s(name), None),
            ("policy".into(), s("require"), None),
        ])
    };
    m.why(
        "features",
        Y::Seq(vec![feature("tsc-deadline"), feature("invtsc")]),
        Knob::TscDeadline,
        "tsc-deadline: the lowest-latency guest timer; invtsc: a constant-rate TSC clocksource",
    );
    m.choices.push(Choice::new(
        Knob::Invtsc,
        "spec.domain.cpu.features[invtsc]",
    ));
    m.done()
}

fn memory(def: &Def<'_>, mem: u64, choices: &mut Vec<Choice>) -> Y {
    let mut m = M::new(choices, "spec.domain.memory");
    m.put("guest", s(format!("{mem}Mi")));
    if let Some(kib) = def.vm.hugepage_kib {
        let mut h = M::new(m.choices, "spec.domain.memory.hugepages");
        h.put("pageSize", s(page_quantity(kib)));
        let hp = h.done();
        m.why(
            "hugepages",
            hp,
            Knob::Hugepages,
            format!(
                "{}; KubeVirt also locks them and disables page sharing for realtime VMIs",
                Knob::Hugepages.why()
            ),
        );
    }
    m.done()
}

/// The comment lines above the VMI: what the node needs, what KubeVirt cannot say.
fn header(def: &Def<'_>, choices: &mut Vec<Choice>) -> String {
    let vm = def.vm;
    let mut text = format!(
        "# rt-host vm --format kubevirt: VM {:?} of profile {:?}; each field's reason is its comment\n\
         # (docs/vm-definition.md). The node needs the kubelet's static CPU manager policy, hugepages\n\
         # reserved at boot and a PREEMPT_RT kernel; the profile's host CPU numbers do not carry over.\n",
        vm.name, def.profile
    );
    if !vm.can_buses.is_empty() {
        text.push_str("# CAN: KubeVirt has no CAN device; QEMU's controllers (");
        let ids: Vec<&str> = vm.can_buses.iter().map(|b| b.id.as_str()).collect();
        text.push_str(&ids.join(", "));
        text.push_str(") need a hook sidecar that adds them to the domain, as <qemu:commandline> does for libvirt.\n");
        choices.push(Choice::with(
            Knob::CanBus,
            "(no KubeVirt field)",
            "KubeVirt has no CAN device: a hook sidecar must add the controllers",
        ));
    }
    if vm.boot.is_some() {
        text.push_str("# boot: add spec.volumes and spec.domain.devices.disks (a host path has no KubeVirt equivalent).\n");
    }
    text
}

/// Render the VirtualMachineInstance.
pub fn render(def: &Def<'_>) -> Result<Rendered, VmDefError> {
    let vm = def.vm;
    let mem = def.memory_mib()?;
    if !dns_name(&vm.name) {
        return Err(VmDefError::Field {
            path: vm.field("name"),
            message: format!(
                "{:?} is not a Kubernetes object name (lower-case a-z, 0-9, '-' and '.')",
                vm.name
            ),
        });
    }
    let mut choices = Vec::new();
    let cpu = cpu(def, &mut choices);
    let memory = memory(def, mem, &mut choices);
    let mut res = M::new(&mut choices, "spec.domain.resources");
    let quantity = || Y::Map(vec![("memory".into(), s(format!("{mem}Mi")), None)]);
    res.put("requests", quantity());
    res.why(
        "limits",
        quantity(),
        Knob::VcpuPin,
        "limits equal to requests: the Guaranteed QoS class the CPU manager needs for dedicated CPUs",
    );
    let resources = res.done();
    let mut dev = M::new(&mut choices, "spec.domain.devices");
    dev.why(
        "autoattachMemBalloon",
        Y::Bool(false),
        Knob::NoBalloon,
        Knob::NoBalloon.why(),
    );
    dev.why(
        "autoattachGraphicsDevice",
        Y::Bool(false),
        Knob::NoGraphics,
        Knob::NoGraphics.why(),
    );
    dev.why(
        "autoattachSerialConsole",
        Y::Bool(true),
        Knob::SerialConsole,
        Knob::SerialConsole.why(),
    );
    let devices = dev.done();
    let mut dom = M::new(&mut choices, "spec.domain");
    dom.put("cpu", cpu)
        .put("memory", memory)
        .put("resources", resources);
    dom.why(
        "ioThreadsPolicy",
        s("auto"),
        Knob::IothreadPin,
        "I/O threads placed with the isolated emulator thread on its pCPU (policy auto), off the vCPUs' pCPUs",
    );
    dom.put("machine", Y::Map(vec![("type".into(), s("q35"), None)]));
    dom.put("devices", devices);
    let domain = dom.done();
    let root = Y::Map(vec![
        ("apiVersion".into(), s("kubevirt.io/v1"), None),
        ("kind".into(), s("VirtualMachineInstance"), None),
        (
            "metadata".into(),
            Y::Map(vec![("name".into(), s(vm.name.clone()), None)]),
            None,
        ),
        (
            "spec".into(),
            Y::Map(vec![("domain".into(), domain, None)]),
            None,
        ),
    ]);
    let mut text = header(def, &mut choices);
    emit(&root, 0, &mut text);
    Ok(Rendered {
        vm: vm.name.clone(),
        format: Format::Kubevirt,
        text,
        argv: None,
        substitutions: Vec::new(),
        choices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emitter_writes_nested_maps_sequences_and_comments() {
        let v = Y::Map(vec![
            ("a".into(), Y::Int(1), Some("one".into())),
            (
                "b".into(),
                Y::Seq(vec![
                    Y::Map(vec![
                        ("n".into(), s("x"), None),
                        ("p".into(), Y::Bool(true), None),
                    ]),
                    s("1"),
                ]),
                None,
            ),
            ("c".into(), Y::Map(vec![]), None),
        ]);
        let mut out = String::new();
        emit(&v, 0, &mut out);
        assert_eq!(
            out,
            "a: 1  # one\nb:\n  - n: \"x\"\n    p: true\n  - \"1\"\nc: {}\n"
        );
    }

    #[test]
    fn names_must_be_kubernetes_names() {
        assert!(dns_name("ecu0") && dns_name("ecu-0.a"));
        assert!(!dns_name("ECU0") && !dns_name("ecu_0") && !dns_name("-a") && !dns_name(""));
        assert_eq!(
            (page_quantity(2048), page_quantity(1_048_576)),
            ("2Mi".into(), "1Gi".into())
        );
    }
}
