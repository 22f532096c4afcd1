//! Every bundled profile loads and validates; names and paths both work.

#[test]
fn every_bundled_profile_loads_and_validates() {
    for (name, _) in profiles::BUNDLED {
        let l = profiles::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!l.profile.name.is_empty());
        let with_ext = format!("{name}.ron");
        assert_eq!(profiles::load(&with_ext).unwrap().profile, l.profile);
    }
}

#[test]
fn loads_by_path() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/ecu.ron");
    let l = profiles::load(path).unwrap();
    assert_eq!(l.profile.name, "ecu-asil-d");
    assert_eq!(l.sha256().len(), 64);
}

#[test]
fn syntax_error_has_line_column_and_path() {
    let text = "Profile(\n  name: \"x\",\n  host: Some((housekeeping_cpus: \"0\", realtime_cpus: \"1\", bogus: 1)),\n)";
    let e = profiles::parse(text, "t.ron").unwrap_err().to_string();
    assert!(e.starts_with("t.ron:3:"), "{e}");
    assert!(e.contains("bogus"), "{e}");
    assert!(e.contains("host"), "{e}");
}

/// A fake machine with CPUs 0 and 1 online, like this 2-core lab host.
fn two_cpu_machine() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cpu = dir.path().join("sys/devices/system/cpu");
    std::fs::create_dir_all(&cpu).unwrap();
    std::fs::write(cpu.join("online"), "0-1\n").unwrap();
    dir
}

#[test]
fn lab_fits_a_two_cpu_machine() {
    let machine = two_cpu_machine();
    let root = rt_sys::SysRoot::new(machine.path());
    let lab = profiles::load("lab").unwrap().profile;
    profiles::validate_against(&lab, &root).unwrap();
    profiles::validate_guest_against(&lab, &root).unwrap();
}

#[test]
fn ecu_does_not_fit_a_two_cpu_machine_and_says_which_cpus_are_missing() {
    let machine = two_cpu_machine();
    let root = rt_sys::SysRoot::new(machine.path());
    let ecu = profiles::load("ecu").unwrap().profile;
    let errs: Vec<String> = profiles::validate_against(&ecu, &root)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errs,
        [
            "host.realtime_cpus: CPUs 2-7 are not online on this machine (online: 0-1)",
            "host.vms[0].vcpus[0].cpu: CPU 2 is not online on this machine (online: 0-1)",
            "host.vms[0].vcpus[1].cpu: CPU 3 is not online on this machine (online: 0-1)",
            "host.vms[0].vcpus[2].cpu: CPU 4 is not online on this machine (online: 0-1)",
            "host.vms[0].vcpus[3].cpu: CPU 5 is not online on this machine (online: 0-1)",
        ]
    );
}

#[test]
fn bundled_names_do_not_shadow_a_missing_path() {
    let e = profiles::load("no/such/dir/ecu.ron")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("No profile \"no/such/dir/ecu.ron\""), "{e}");
    let e = profiles::load("nosuch").unwrap_err().to_string();
    assert!(e.contains("ecu, lab, canfd, hil"), "{e}");
}

#[test]
fn hil_fits_the_four_cpu_host_lab_and_not_this_two_cpu_machine() {
    let dir = tempfile::tempdir().unwrap();
    let cpu = dir.path().join("sys/devices/system/cpu");
    std::fs::create_dir_all(&cpu).unwrap();
    std::fs::write(cpu.join("online"), "0-3\n").unwrap();
    let root = rt_sys::SysRoot::new(dir.path());
    let hil = profiles::load("hil").unwrap().profile;
    profiles::validate_against(&hil, &root).unwrap();
    let host = hil.host.as_ref().unwrap();
    // Two ECU guests, their real-time vCPUs on CPUs 1-2 and 3.
    let vms = profiles::host_vms(host);
    let placed: Vec<(&str, Vec<u32>)> = vms
        .iter()
        .map(|v| (v.name.as_str(), v.vcpus.iter().map(|p| p.cpu).collect()))
        .collect();
    assert_eq!(placed, [("ecu0", vec![1, 2]), ("ecu1", vec![3])]);
    assert!(vms
        .iter()
        .flat_map(|v| &v.vcpus)
        .all(|p| p.policy.is_realtime() && p.priority == 50));
    assert!(host.isolation.cpuset_partition && host.isolation.kthreads);
    assert!(host.sysctl.realtime_virtual_host && !host.sysctl.rt_runtime_unlimited);
    // The hugepages cover both guests' memory, and the boot arguments reserve as many.
    let h = host.hugepages.as_ref().unwrap();
    let memory: u64 = vms.iter().map(|v| v.memory_mib.unwrap()).sum();
    assert_eq!(h.count * h.size_kib / 1024, memory);
    assert!(host
        .kernel
        .extra_args
        .contains(&format!("hugepages={}", h.count)));
    let machine = two_cpu_machine();
    let errs = profiles::validate_against(&hil, &rt_sys::SysRoot::new(machine.path())).unwrap_err();
    assert!(
        errs[0]
            .to_string()
            .starts_with("host.realtime_cpus: CPUs 2-3 are not online"),
        "{errs:?}"
    );
}
