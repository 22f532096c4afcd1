//! `rt-host vm`: the rendered definitions of every bundled profile and of a two-VM
//! profile, checked against what reads them: libvirt's own schema (`virt-xml-validate`,
//! run by lab/test.sh), KubeVirt's VirtualMachineInstance field names and types, bash.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_norway::Value;

mod common;

use common::run;

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

/// Every (profile, VM) pair to render: the bundled profiles with a host VM, and the
/// two-VM fixture. Bundled profiles without one are named, so none is skipped silently.
fn targets() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut without = Vec::new();
    for (name, _) in profiles::BUNDLED {
        let p = profiles::load(name).unwrap().profile;
        let vms = p.host.as_ref().map(profiles::host_vms).unwrap_or_default();
        if vms.is_empty() {
            without.push(*name);
        }
        out.extend(vms.into_iter().map(|v| (name.to_string(), v.name)));
    }
    assert_eq!(without, ["canfd"], "bundled profiles without a VM");
    for vm in ["ecu0", "ecu1"] {
        out.push((fixture("two-vms.ron"), vm.to_string()));
    }
    out
}

fn render(profile: &str, vm: &str, format: &str) -> String {
    stdout(&run(&["vm", profile, "--vm", vm, "--format", format]))
}

#[test]
#[ignore = "needs virt-xml-validate (Debian libvirt-clients, libxml2-utils): run by lab/test.sh"]
fn libvirt_xml_of_every_profile_validates_with_libvirts_schema() {
    if !testkit::require_command("virt-xml-validate") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (profile, vm) in targets() {
        let xml = render(&profile, &vm, "libvirt");
        let f = dir.path().join(format!("{vm}.xml"));
        std::fs::write(&f, &xml).unwrap();
        let o = Command::new("virt-xml-validate")
            .arg(&f)
            .arg("domain")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{profile} {vm}: {}{}\n{xml}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // The schema is strict enough to notice a wrong element: a misspelt one fails.
    let bad = render("lab", "lab", "libvirt").replace("<memballoon", "<memoryballoon");
    let f = dir.path().join("bad.xml");
    std::fs::write(&f, bad).unwrap();
    let o = Command::new("virt-xml-validate")
        .arg(&f)
        .arg("domain")
        .output()
        .unwrap();
    assert!(!o.status.success(), "a misspelt element passed the schema");
}

#[test]
fn the_two_vm_fixture_renders_every_element() {
    let x = render(&fixture("two-vms.ron"), "ecu0", "libvirt");
    for want in [
        "<emulatorsched scheduler=\"fifo\" priority=\"1\"/>",
        "<memory mode=\"strict\" nodeset=\"0\"/>",
        "<qemu:arg value=\"can-host-socketcan,id=canbus0-host,canbus=canbus0,if=vcan0\"/>",
        "<kernel>/var/lib/rtvirt/vmlinuz</kernel>",
        "<cmdline>console=ttyS0 isolcpus=1</cmdline>",
        "<driver name=\"qemu\" type=\"qcow2\" cache=\"none\" io=\"native\" iothread=\"1\"/>",
        "<vcpupin vcpu=\"0\" cpuset=\"0\"/>",
        "<vcpupin vcpu=\"1\" cpuset=\"1\"/>",
    ] {
        assert!(x.contains(want), "missing {want} in\n{x}");
    }
    let q = render(&fixture("two-vms.ron"), "ecu1", "qemu");
    assert!(q.contains("-pidfile /run/rtvirt-ecu1.pid"), "{q}");
    assert!(
        q.contains("#   vCPU 0 -> CPU 0, other: rt-host setup"),
        "{q}"
    );
}

#[test]
fn the_bundled_profiles_render_their_can_buses_for_qemu_and_libvirt() {
    for (profile, vm) in [("lab", "lab"), ("ecu", "ecu0")] {
        let q = render(profile, vm, "qemu");
        assert!(q.contains("can-bus,id=canbus0"), "{profile}: {q}");
        assert_eq!(
            q.matches("kvaser_pci,canbus=canbus0").count(),
            2,
            "{profile}: a can0/can1 pair on one bus: {q}"
        );
        let x = render(profile, vm, "libvirt");
        assert_eq!(
            x.matches("<qemu:arg value=\"kvaser_pci,canbus=canbus0\"/>")
                .count(),
            2,
            "{profile}: {x}"
        );
    }
}

#[test]
fn several_vms_need_a_name_except_for_kubevirt() {
    let f = fixture("two-vms.ron");
    let o = run(&["vm", &f, "--format", "libvirt"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("has 2 VMs (ecu0, ecu1): choose one with --vm NAME"),
        "{e}"
    );
    let o = run(&["vm", &f, "--vm", "ecu7", "--format", "qemu"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("has no VM \"ecu7\" (VMs: ecu0, ecu1)"), "{e}");
    let y = stdout(&run(&["vm", &f, "--format", "kubevirt"]));
    let docs: Vec<Value> = y
        .split("\n---\n")
        .map(|d| serde_norway::from_str(d).unwrap())
        .collect();
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ecu0", "ecu1"]);
    let o = run(&["vm", "canfd", "--format", "qemu"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no `host` section"));
}

#[test]
fn json_gives_the_argv_and_explain_gives_every_reason() {
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&run(&["vm", "lab", "--format", "qemu", "--json"]))).unwrap();
    let argv: Vec<&str> = v["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let i = argv.iter().position(|a| *a == "-name").unwrap();
    assert_eq!(argv[i + 1], "guest=lab,debug-threads=on");
    assert!(v["text"].as_str().unwrap().starts_with("#!/bin/bash\n"));
    let choices = v["choices"].as_array().unwrap();
    assert!(choices
        .iter()
        .all(|c| !c["why"].as_str().unwrap().is_empty()
            && c["source"]["url"].as_str().unwrap().contains('/')));
    assert!(
        v.get("substitutions").is_none(),
        "KVM: the profile's definition"
    );
    let t: serde_json::Value = serde_json::from_str(&stdout(&run(&[
        "vm", "lab", "--format", "qemu", "--accel", "tcg", "--json",
    ])))
    .unwrap();
    let subs = t["substitutions"].as_array().unwrap();
    let pairs: Vec<(&str, &str, &str)> = subs
        .iter()
        .map(|x| {
            (
                x["option"].as_str().unwrap(),
                x["profile"].as_str().unwrap(),
                x["now"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(pairs[0], ("-machine", "q35,accel=kvm", "q35,accel=tcg"));
    assert_eq!(pairs[1].0, "-cpu");
    assert!(pairs[1].2.starts_with("max,migratable=off,"), "{pairs:?}");
    assert_eq!(pairs.len(), 2);
    let (kvm_argv, tcg_argv) = (v["argv"].as_array().unwrap(), t["argv"].as_array().unwrap());
    assert_eq!(kvm_argv.len(), tcg_argv.len());
    assert_eq!(
        kvm_argv
            .iter()
            .zip(tcg_argv)
            .filter(|(a, b)| a != b)
            .count(),
        2,
        "only the two substituted values differ"
    );
    assert!(t["text"]
        .as_str()
        .unwrap()
        .contains("# Substituted for --accel tcg"));
    let e = stdout(&run(&["vm", "ecu", "--format", "libvirt", "--explain"]));
    assert!(
        e.contains("<hint-dedicated state='on'/></kvm>\n    KVM_HINTS_REALTIME"),
        "{e}"
    );
    assert!(e.contains("source: libvirt: KVM Real Time Guest Config <https://libvirt.org/kbase/kvm-realtime.html>"), "{e}");
}

#[test]
fn output_file_is_written_and_kubevirt_refuses_a_non_kubernetes_name() {
    let dir = tempfile::tempdir().unwrap();
    let out: PathBuf = dir.path().join("lab.xml");
    let o = run(&[
        "vm",
        "lab",
        "--format",
        "libvirt",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success() && o.stdout.is_empty());
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .starts_with("<domain type=\"kvm\""));
    let prof = dir.path().join("upper.ron");
    std::fs::write(
        &prof,
        r#"Profile(name: "u", host: (housekeeping_cpus: "0", realtime_cpus: "1",
           vms: [(name: "ECU0", memory_mib: 64)]))"#,
    )
    .unwrap();
    let o = run(&["vm", prof.to_str().unwrap(), "--format", "kubevirt"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("host.vms[0].name: \"ECU0\" is not a Kubernetes object name"),
        "{e}"
    );
}

/// What the KubeVirt API (kubevirt.io/api core/v1 schema.go) says about the fields the
/// rendering may use: their names and JSON types. An object lists every field allowed.
#[derive(Debug)]
enum T {
    Str,
    Int,
    Bool,
    /// A resource.Quantity: a string like "512Mi" (or a bare number).
    Quantity,
    OneOf(&'static [&'static str]),
    Obj(&'static [(&'static str, T)]),
    /// A map with free keys (v1.ResourceList: cpu, memory).
    Map(&'static T),
    List(&'static T),
    /// A struct whose other fields this test does not use: the listed ones are checked,
    /// the rest must at least be KubeVirt field names.
    Partial(&'static [(&'static str, T)], &'static [&'static str]),
}

const CPU_FEATURE: T = T::Obj(&[
    ("name", T::Str),
    (
        "policy",
        T::OneOf(&["force", "require", "optional", "disable", "forbid"]),
    ),
]);
const CPU: T = T::Obj(&[
    ("cores", T::Int),
    ("sockets", T::Int),
    ("maxSockets", T::Int),
    ("threads", T::Int),
    ("model", T::Str),
    ("features", T::List(&CPU_FEATURE)),
    ("dedicatedCpuPlacement", T::Bool),
    ("numa", T::Obj(&[("guestMappingPassthrough", T::Obj(&[]))])),
    ("isolateEmulatorThread", T::Bool),
    ("realtime", T::Obj(&[("mask", T::Str)])),
]);
const MEMORY: T = T::Obj(&[
    (
        "hugepages",
        T::Obj(&[("pageSize", T::OneOf(&["2Mi", "1Gi"]))]),
    ),
    ("guest", T::Quantity),
    ("maxGuest", T::Quantity),
]);
const RESOURCES: T = T::Obj(&[
    ("requests", T::Map(&T::Quantity)),
    ("limits", T::Map(&T::Quantity)),
    ("overcommitGuestOverhead", T::Bool),
]);
const DEVICES: T = T::Partial(
    &[
        ("autoattachPodInterface", T::Bool),
        ("autoattachGraphicsDevice", T::Bool),
        ("autoattachSerialConsole", T::Bool),
        ("autoattachMemBalloon", T::Bool),
        ("autoattachInputDevice", T::Bool),
        ("autoattachVSOCK", T::Bool),
    ],
    &[
        "useVirtioTransitional",
        "disableHotplug",
        "disks",
        "watchdog",
        "interfaces",
        "inputs",
        "logSerialConsole",
        "rng",
        "blockMultiQueue",
        "networkInterfaceMultiqueue",
        "gpus",
        "downwardMetrics",
        "filesystems",
        "hostDevices",
        "clientPassthrough",
        "sound",
        "tpm",
    ],
);
const DOMAIN: T = T::Partial(
    &[
        ("resources", RESOURCES),
        ("cpu", CPU),
        ("memory", MEMORY),
        ("machine", T::Obj(&[("type", T::Str)])),
        ("devices", DEVICES),
        (
            "ioThreadsPolicy",
            T::OneOf(&["shared", "auto", "supplementalPool"]),
        ),
    ],
    &["firmware", "clock", "features", "chassis", "launchSecurity"],
);
const VMI: T = T::Obj(&[
    ("apiVersion", T::OneOf(&["kubevirt.io/v1"])),
    ("kind", T::OneOf(&["VirtualMachineInstance"])),
    (
        "metadata",
        T::Partial(&[("name", T::Str)], &["namespace", "labels", "annotations"]),
    ),
    (
        "spec",
        T::Partial(
            &[("domain", DOMAIN)],
            &["volumes", "networks", "nodeSelector"],
        ),
    ),
]);

fn check(v: &Value, t: &T, path: &str, errs: &mut Vec<String>) {
    let mut fail = |what: &str| errs.push(format!("{path}: {what}, found {v:?}"));
    match t {
        T::Str => {
            if !v.is_string() {
                fail("not a string")
            }
        }
        T::Int => {
            if !v.is_u64() {
                fail("not an integer")
            }
        }
        T::Bool => {
            if !v.is_bool() {
                fail("not a boolean")
            }
        }
        T::Quantity => {
            let ok = v.as_str().is_some_and(|s| {
                let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
                !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
            }) || v.is_u64();
            if !ok {
                fail("not a quantity")
            }
        }
        T::OneOf(vals) => {
            if !v.as_str().is_some_and(|s| vals.contains(&s)) {
                fail(&format!("not one of {vals:?}"))
            }
        }
        T::List(item) => match v.as_sequence() {
            Some(seq) => {
                for (i, x) in seq.iter().enumerate() {
                    check(x, item, &format!("{path}[{i}]"), errs);
                }
            }
            None => fail("not a list"),
        },
        T::Map(val) => match v.as_mapping() {
            Some(m) => {
                for (k, x) in m {
                    check(
                        x,
                        val,
                        &format!("{path}.{}", k.as_str().unwrap_or("?")),
                        errs,
                    );
                }
            }
            None => fail("not a map"),
        },
        T::Obj(fields) | T::Partial(fields, _) => {
            let others: &[&str] = match t {
                T::Partial(_, o) => o,
                _ => &[],
            };
            let Some(m) = v.as_mapping() else {
                return fail("not an object");
            };
            for (k, x) in m {
                let k = k.as_str().unwrap_or("?");
                let p = format!("{path}.{k}");
                match fields.iter().find(|(n, _)| *n == k) {
                    Some((_, ft)) => check(x, ft, &p, errs),
                    None if others.contains(&k) => {}
                    None => errs.push(format!("{p}: no such field in KubeVirt's API")),
                }
            }
        }
    }
}

#[test]
fn kubevirt_output_has_the_vmi_fields_with_kubevirts_types() {
    for (profile, vm) in targets() {
        let y = render(&profile, &vm, "kubevirt");
        let v: Value = serde_norway::from_str(&y).unwrap_or_else(|e| panic!("{vm}: {e}\n{y}"));
        let mut errs = Vec::new();
        check(&v, &VMI, "", &mut errs);
        assert!(errs.is_empty(), "{vm}:\n{}\n{y}", errs.join("\n"));
        let d = &v["spec"]["domain"];
        assert_eq!(d["cpu"]["dedicatedCpuPlacement"], Value::Bool(true), "{vm}");
        assert_eq!(d["cpu"]["isolateEmulatorThread"], Value::Bool(true), "{vm}");
        assert_eq!(
            d["devices"]["autoattachMemBalloon"],
            Value::Bool(false),
            "{vm}"
        );
        assert_eq!(
            d["devices"]["autoattachGraphicsDevice"],
            Value::Bool(false),
            "{vm}"
        );
        assert_eq!(d["ioThreadsPolicy"].as_str(), Some("auto"), "{vm}");
        assert_eq!(d["cpu"]["model"].as_str(), Some("host-passthrough"), "{vm}");
        let p = profiles::load(&profile).unwrap().profile;
        let view = profiles::host_vms(p.host.as_ref().unwrap())
            .into_iter()
            .find(|x| x.name == vm)
            .unwrap();
        let rt = view.realtime_vcpus();
        if rt.is_empty() {
            assert!(
                d["cpu"].get("realtime").is_none(),
                "{vm}: no real-time vCPU"
            );
        } else {
            assert_eq!(
                d["cpu"]["realtime"]["mask"].as_str(),
                Some(rt.to_string().as_str()),
                "{vm}"
            );
        }
        match view.hugepage_kib {
            Some(2048) => assert_eq!(d["memory"]["hugepages"]["pageSize"].as_str(), Some("2Mi")),
            Some(k) => panic!("{vm}: unexpected page size {k}"),
            None => assert!(d["memory"].get("hugepages").is_none(), "{vm}"),
        }
        let cores = d["cpu"]["cores"].as_u64().unwrap();
        assert_eq!(cores, u64::from(view.cpus), "{vm}");
    }
    // The check itself catches a misspelt field (autoattachGraphicsDevices is a common one).
    let y = render("ecu", "ecu0", "kubevirt")
        .replace("autoattachGraphicsDevice:", "autoattachGraphicsDevices:");
    let mut errs = Vec::new();
    check(&serde_norway::from_str(&y).unwrap(), &VMI, "", &mut errs);
    assert_eq!(
        errs,
        [".spec.domain.devices.autoattachGraphicsDevices: no such field in KubeVirt's API"]
    );
}

#[test]
fn every_qemu_script_is_valid_bash_and_lists_each_vcpu() {
    let dir = tempfile::tempdir().unwrap();
    for (profile, vm) in targets() {
        let s = render(&profile, &vm, "qemu");
        let f = dir.path().join(format!("{vm}.sh"));
        std::fs::write(&f, &s).unwrap();
        let o = Command::new("bash").arg("-n").arg(&f).output().unwrap();
        assert!(
            o.status.success(),
            "{vm}: {}\n{s}",
            String::from_utf8_lossy(&o.stderr)
        );
        let p = profiles::load(&profile).unwrap().profile;
        let view = profiles::host_vms(p.host.as_ref().unwrap())
            .into_iter()
            .find(|x| x.name == vm)
            .unwrap();
        for i in 0..view.cpus {
            assert!(
                s.contains(&format!("#   vCPU {i} ")),
                "{vm}: vCPU {i} missing\n{s}"
            );
        }
    }
}

/// The VM audit item of `rt-host check --json` (a record::CheckReport: items with name,
/// target, status, detail) whose target contains `t`.
fn vm_item(v: &serde_json::Value, t: &str) -> serde_json::Value {
    let items = v["items"].as_array().unwrap();
    items
        .iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with("vm"))
        .find(|c| c["target"].as_str().unwrap().contains(t))
        .cloned()
        .unwrap_or_else(|| panic!("no item {t}: {items:#?}"))
}

/// A fake machine tree with the lab's QEMU (pid 4000), for `rt-host check --root`.
fn fake_lab() -> (
    tempfile::TempDir,
    rt_host::fake::FakeMachine,
    String,
    String,
) {
    let dir = tempfile::tempdir().unwrap();
    let m = rt_host::fake::FakeMachine::new(&dir.path().join("root"));
    let root = dir.path().join("root").display().to_string();
    let journal = dir.path().join("journal").display().to_string();
    (dir, m, root, journal)
}

#[test]
fn check_audits_the_vms_memory_and_its_libvirt_xml_on_a_fake_tree() {
    let (dir, m, root, journal) = fake_lab();
    // QEMU locked 600 MiB, no hugepages: the lab VM (512 MiB) is locked.
    m.put(
        "proc/4000/status",
        "Name:\tqemu-system-x86\nTgid:\t4000\nVmLck:\t  614400 kB\nVmRSS:\t  620000 kB\nHugetlbPages:\t       0 kB\n",
    );
    let xml = render("lab", "lab", "libvirt").replace("<memballoon model=\"none\"/>", "");
    let f = dir.path().join("lab.xml");
    std::fs::write(&f, xml).unwrap();
    let o = run(&[
        "check",
        "lab",
        "--json",
        "--root",
        &root,
        "--journal-dir",
        &journal,
        "--libvirt-xml",
        f.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let find = |t: &str| vm_item(&v, t);
    let locked = find("locked memory");
    assert_eq!(locked["status"], "ok", "{locked}");
    assert_eq!(locked["current"], "VmLck 614400 kB, HugetlbPages 0 kB");
    let cpu = find("guest CPU");
    assert_eq!(cpu["status"], "not-applicable");
    assert!(
        cpu["detail"].as_str().unwrap().contains("no QMP socket"),
        "{cpu}"
    );
    let balloon = find("<memballoon>");
    assert_eq!(
        (balloon["status"].as_str(), balloon["current"].as_str()),
        (Some("differs"), Some("(absent: virtio)"))
    );
    assert!(balloon["detail"]
        .as_str()
        .unwrap()
        .contains("fix: virsh edit lab and set <memballoon model='none'/>"));
    assert_eq!(find("<emulatorpin>")["status"], "ok");
    // Text form names the item and its fix.
    let o = run(&[
        "check",
        "lab",
        "--root",
        &root,
        "--journal-dir",
        &journal,
        "--libvirt-xml",
        f.to_str().unwrap(),
    ]);
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(t.contains("<memballoon>"), "{t}");
}

/// QEMU started from `rt-host vm --format qemu` output, under TCG (the host's KVM cannot
/// run stock guests here): `-cpu host` becomes `-cpu max` and `accel=kvm` `accel=tcg`.
struct Qemu {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    profile: PathBuf,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_tcg_qemu(name: &str) -> Qemu {
    let dir = tempfile::tempdir().unwrap();
    let qmp = dir.path().join("qmp.sock");
    let profile = dir.path().join("audit.ron");
    std::fs::write(
        &profile,
        format!(
            r#"Profile(name: "audit", host: (housekeeping_cpus: "0", realtime_cpus: "1",
               kernel: (require_preempt_rt: false),
               vms: [(name: "{name}", memory_mib: 64, cpus: 2, find: (qmp: "{}"),
                      vcpus: [(vcpu: 1, cpu: 1)])]))"#,
            qmp.display()
        ),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout(&run(&[
        "vm",
        profile.to_str().unwrap(),
        "--format",
        "qemu",
        "--accel",
        "tcg",
        "--json",
    ])))
    .unwrap();
    // This machine's KVM cannot run it: the TCG variant (accelerator and CPU model
    // substituted by rt-host), with no serial console on this test's stdio.
    let argv: Vec<String> = v["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().replace("mon:stdio", "null"))
        .collect();
    let child = Command::new("qemu-system-x86_64")
        .args(&argv)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start qemu-system-x86_64");
    // Ready when QMP answers (QEMU preallocates and starts its main loop first).
    let t = std::time::Instant::now();
    let wait = std::time::Duration::from_secs(2);
    while rt_sys::qmp::Qmp::connect(&qmp, wait).is_err() {
        assert!(
            t.elapsed().as_secs() < 30,
            "QEMU's QMP never answered: {argv:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Qemu {
        child,
        _dir: dir,
        profile,
    }
}

#[test]
#[ignore = "starts QEMU (TCG) and needs root for -overcommit mem-lock: run by lab/test.sh"]
fn check_reads_the_guest_cpu_over_qmp_and_the_locked_memory_of_a_running_qemu() {
    if !testkit::require_root() || !testkit::require_command("qemu-system-x86_64") {
        return;
    }
    let _g = testkit::host_lock();
    let q = start_tcg_qemu("vmdef-audit");
    let dir = tempfile::tempdir().unwrap();
    let o = run(&[
        "check",
        q.profile.to_str().unwrap(),
        "--json",
        "--journal-dir",
        dir.path().to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    let find = |t: &str| vm_item(&v, t);
    // TCG offers neither the TSC-deadline timer nor the realtime hint: the audit sees the
    // running vCPU without them, although the command line asked for them.
    for prop in ["tsc-deadline", "invtsc", "kvm-hint-dedicated"] {
        let c = find(&format!("vCPU 0 {prop} "));
        assert_eq!(
            (c["status"].as_str(), c["current"].as_str()),
            (Some("differs"), Some("off")),
            "{c}"
        );
        let note = c["detail"].as_str().unwrap();
        assert!(note.contains("fix: libvirt <"), "{c}");
        assert!(
            note.contains("QEMU runs without KVM (query-kvm: not enabled)"),
            "{c}"
        );
    }
    assert_eq!(find("vCPU 0 pmu ")["status"], "ok");
    // -overcommit mem-lock=on locked all of QEMU's memory: at least the 64 MiB guest.
    let locked = find("locked memory");
    assert_eq!(locked["status"], "ok", "{locked}");
    assert_eq!(find("hugepage-backed")["status"], "not-applicable");
}

/// Two VMs on the fake 2-CPU tree: the lab's QEMU (pid 4000) and a second one, `ecu1`.
fn two_vm_profile(dir: &Path, ecu1_cpu: u32, ecu1_policy: &str) -> String {
    let p = dir.join("two.ron");
    let prio = if ecu1_policy == "Other" { 0 } else { 50 };
    std::fs::write(
        &p,
        format!(
            r#"Profile(name: "two", host: (
                housekeeping_cpus: "0", realtime_cpus: "1",
                kernel: (require_preempt_rt: false),
                isolation: (cpuset_partition: false, workqueues: true, kthreads: false),
                vms: [
                    (name: "lab", memory_mib: 256, cpus: 2, vcpus: [(vcpu: 1, cpu: 1)]),
                    (name: "ecu1", memory_mib: 256, cpus: 1,
                     vcpus: [(vcpu: 0, cpu: {ecu1_cpu}, policy: {ecu1_policy}, priority: {prio})]),
                ]))"#
        ),
    )
    .unwrap();
    p.display().to_string()
}

#[test]
fn two_vms_are_both_placed_by_plan_and_setup_and_revert_restores_them() {
    let (dir, m, root, journal) = fake_lab();
    m.put(
        "proc/4100/cmdline",
        "qemu-system-x86_64\0-name\0ecu1,debug-threads=on\0-accel\0tcg\0",
    );
    for (tid, name) in [
        (4100, "qemu-system-x86"),
        (4102, "CPU 0/TCG"),
        (4104, "IO iothread0"),
    ] {
        m.thread(4100, tid, name, 1, 0x40_0040, 0, 0, "0-1");
    }
    let prof = two_vm_profile(dir.path(), 0, "Other");
    let before = m.snapshot();
    let args = |cmd: &'static str| {
        vec![
            cmd,
            prof.as_str(),
            "--json",
            "--root",
            &root,
            "--journal-dir",
            &journal,
        ]
    };
    let o = run(&args("plan"));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    let change = |item: &str, tid: u32| -> serde_json::Value {
        v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["item"] == item
                    && c["target"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("(tid {tid})"))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no {item} of tid {tid}: {v:#}"))
    };
    // VM "lab": vCPU 1 to CPU 1 at FIFO 50; VM "ecu1": vCPU 0 to CPU 0, its I/O thread to 0.
    assert_eq!(change("vcpu-affinity", 4003)["desired"], "1");
    assert_eq!(change("vcpu-sched", 4003)["desired"], "fifo:50");
    assert_eq!(change("vcpu-affinity", 4102)["desired"], "0");
    assert_eq!(change("iothread", 4104)["desired"], "0");
    assert_eq!(change("emulator", 4100)["desired"], "0");
    let vms: Vec<&serde_json::Value> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["item"] == "vm")
        .collect();
    assert_eq!(vms.len(), 2, "one vm item per VM: {vms:#?}");
    let o = run(&args("setup"));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let tree = |rel: &str| std::fs::read_to_string(m.root.path(rel)).unwrap();
    assert!(tree("proc/4000/task/4003/status").contains("Cpus_allowed_list:\t1\n"));
    assert!(tree("proc/4100/task/4102/status").contains("Cpus_allowed_list:\t0\n"));
    let o = run(&["revert", "--root", &root, "--journal-dir", &journal]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        rt_host::fake::FakeMachine::diff(&before, &m.snapshot()),
        Vec::<String>::new()
    );

    // Both VMs with a FIFO vCPU on CPU 1: refused before anything is touched.
    let prof = two_vm_profile(dir.path(), 1, "Fifo");
    for cmd in ["plan", "setup"] {
        let o = run(&[cmd, &prof, "--root", &root, "--journal-dir", &journal]);
        assert_eq!(o.status.code(), Some(2), "{cmd}");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            e.contains("host.vms[1].vcpus[0].cpu: 1 already runs vCPU 1 of VM \"lab\" (host.vms[0].vcpus[0])"),
            "{cmd}: {e}"
        );
    }
    assert_eq!(
        rt_host::fake::FakeMachine::diff(&before, &m.snapshot()),
        Vec::<String>::new()
    );
}
