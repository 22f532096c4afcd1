//! Guest memory on the host: the hugepage pool (`/proc/meminfo`,
//! `/sys/kernel/mm/hugepages/hugepages-<size>kB/nr_hugepages`, per node under
//! `/sys/devices/system/node`) and NUMA placement of the vCPUs and their pages.

use profiles::Host;
use rt_sys::hugepages as rt_hugepages;
use rt_sys::CpuSet;

use super::{Action, Change, Status, When, B};
use crate::error::{sys, TuneError};

/// The hugepage pool the profile reserves, against the VM's memory.
pub(super) fn hugepages(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    let root = b.root();
    let info = rt_hugepages::meminfo(root).ok();
    let shown = info
        .map(|m| {
            format!(
                "HugePages_Total {} Free {} ({} kB pages)",
                m.total, m.free, m.size_kib
            )
        })
        .unwrap_or_else(|| "(no hugepage info)".into());
    match &host.hugepages {
        None => b.push(
            Change::report(
                "hugepages",
                root.display(rt_hugepages::MEMINFO),
                shown,
                "(none asked)",
                Status::NotApplicable,
            )
            .note("the profile reserves no hugepages (host.hugepages)"),
        ),
        Some(h) => {
            let rel = rt_hugepages::nr_path(h.size_kib, h.node);
            let want = h.count.to_string();
            // A pool too small for host.vm.memory_mib is refused by the profile rules.
            let mut notes = Vec::new();
            if h.size_kib >= 1_048_576 {
                notes.push("1 GB pages are very sensitive to fragmentation: try 2 MB pages first, or reserve 1 GB pages at boot (hugepagesz=1G hugepages=N)".into());
            }
            match root.read_trim(&rel) {
                Ok(cur) => {
                    let n: u64 = cur.parse().unwrap_or(0);
                    let free = root
                        .read_trim(rt_hugepages::free_path(h.size_kib, h.node))
                        .unwrap_or_default();
                    notes.push(format!("free now: {free}"));
                    let c = Change::report(
                        "hugepages",
                        root.display(&rel),
                        cur.clone(),
                        format!(">= {want}"),
                        Status::Ok,
                    )
                    .note(notes.join("; "));
                    b.push(if n >= h.count {
                        c
                    } else {
                        c.act(Action::Write {
                            path: rel,
                            value: want,
                            prior: cur,
                        })
                    });
                }
                Err(e) if e.is_not_found() => {
                    notes.push(format!(
                        "this kernel has no {} kB pages{}",
                        h.size_kib,
                        h.node.map(|n| format!(" on node {n}")).unwrap_or_default()
                    ));
                    b.push(
                        Change::report(
                            "hugepages",
                            root.display(&rel),
                            "(absent)",
                            want,
                            Status::NotApplicable,
                        )
                        .note(notes.join("; ")),
                    );
                }
                Err(e) => return Err(sys("Reading hugepages")(e)),
            }
        }
    }
    Ok(())
}

/// NUMA: the vCPUs (and their memory) on one node.
pub(super) fn numa(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    let root = b.root();
    let nodes = rt_hugepages::nodes(root).map_err(sys("Reading NUMA nodes"))?;
    let all = profiles::host_vms(host);
    let cpus = CpuSet::from_cpus(all.iter().flat_map(|v| v.vcpus.iter().map(|p| p.cpu)));
    if nodes.len() <= 1 || cpus.is_empty() {
        b.push(Change::report(
            "numa",
            root.display(rt_hugepages::NODES),
            format!("{} node(s)", nodes.len().max(1)),
            "vCPUs and memory on one node",
            Status::Ok,
        ));
    } else {
        let home = nodes
            .iter()
            .find(|(_, c)| cpus.is_subset(c))
            .map(|(n, _)| *n);
        let want_node = host.hugepages.as_ref().and_then(|h| h.node);
        let (cur, ok) = match (home, want_node) {
            (Some(n), Some(w)) => (format!("vCPUs on node {n}, hugepages on node {w}"), n == w),
            (Some(n), None) => (format!("vCPUs on node {n}"), true),
            (None, _) => (format!("vCPU CPUs {cpus} span nodes"), false),
        };
        let c = Change::report(
            "numa",
            root.display(rt_hugepages::NODES),
            cur,
            "vCPUs and memory on one node",
            if ok { Status::Ok } else { Status::Differs },
        );
        b.push(if ok {
            c
        } else {
            Change {
                when: When::NextBoot,
                ..c
            }
            .note("change host.vcpus / host.hugepages.node in the profile")
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{build, Ctx, Status};

    #[test]
    fn hugepages_are_raised_to_the_profile_and_1g_pages_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let m = crate::fake::FakeMachine::new(dir.path());
        let mut h = crate::fake::lab_host();
        h.hugepages = Some(profiles::Hugepages {
            size_kib: 2048,
            count: 256,
            node: None,
        });
        let p = build("lab", &h, &Ctx::new(&m.root)).unwrap();
        let c = p.changes.iter().find(|c| c.item == "hugepages").unwrap();
        assert_eq!(
            (c.status, c.current.as_str(), c.desired.as_str()),
            (Status::Differs, "0", ">= 256")
        );
        assert_eq!(c.note.as_deref(), Some("free now: 0"), "{c:?}");
        h.hugepages = Some(profiles::Hugepages {
            size_kib: 1_048_576,
            count: 1,
            node: None,
        });
        // The profile rules refuse a page size this kernel does not have.
        let e = build("lab", &h, &Ctx::new(&m.root))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("1048576 KiB pages are not supported by this kernel"),
            "{e}"
        );
        m.put(
            "sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
            "0\n",
        );
        let p = build("lab", &h, &Ctx::new(&m.root)).unwrap();
        let c = p.changes.iter().find(|c| c.item == "hugepages").unwrap();
        assert_eq!(c.status, Status::Differs);
        assert!(
            c.note.as_deref().unwrap().contains("try 2 MB pages first"),
            "{c:?}"
        );
        assert!(p
            .changes
            .iter()
            .any(|c| c.target.ends_with("hugepagesz") && c.status == Status::NeedsReboot));
    }
}
