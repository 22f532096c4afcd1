//! Guest-side check and tuning: PREEMPT_RT and CPU isolation (`/proc/cmdline`,
//! `/sys/devices/system/cpu/isolated`), guest halt polling
//! (`/sys/module/haltpoll/parameters/guest_halt_poll_ns`), cpuidle states
//! (`/sys/devices/system/cpu/cpuN/cpuidle/stateK`), the clocksource
//! (`/sys/devices/system/clocksource/clocksource0/current_clocksource`), steal time
//! (`/proc/stat`), and the priority and affinity of IRQ threads (`irq/NN-name`).
//!
//! `check` reads; `plan` turns the profile into a list of changes (pure, tested on fake
//! trees); `apply` journals each change before making it (`rt_sys::journal`, the same
//! journal and revert as rt-host). A change the kernel refuses is reported "not permitted
//! here" and dropped from the journal, never fatal.
//! See <https://docs.kernel.org/virt/guest-halt-polling.html>.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use profiles::Profile;
use rt_sys::journal::{Entry, Journal, JournalError, ProfileId, Target};
use rt_sys::sched::{Policy, SchedParams};
use rt_sys::{cpuidle, irqthread, kernel, threads, CpuSet, SysError, SysRoot};

/// The halt-polling knob.
pub const HALT_POLL: &str = rt_sys::kernel::GUEST_HALT_POLL_NS;
/// The current clocksource.
pub const CLOCKSOURCE: &str = rt_sys::kernel::CLOCKSOURCE;

/// The verdict on one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// As wanted.
    Ok,
    /// Works, but not ideal (or unknown without a profile).
    Warn,
    /// Not as the profile wants.
    Bad,
    /// The knob or thread does not exist here.
    NotPresent,
    /// The kernel refused to let us read it.
    NotPermitted,
    /// Informational only.
    Info,
}

/// One checked item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// What (e.g. `cpuidle.cpu1.state1`, `irq_thread.can1.priority`).
    pub name: String,
    /// The verdict.
    pub status: Status,
    /// The value found.
    pub current: String,
    /// The value wanted, if any.
    pub desired: Option<String>,
    /// Why, in words.
    pub detail: String,
}

impl Item {
    fn new(name: impl Into<String>, status: Status, current: impl Into<String>) -> Item {
        Item {
            name: name.into(),
            status,
            current: current.into(),
            desired: None,
            detail: String::new(),
        }
    }
    fn want(mut self, d: impl Into<String>) -> Item {
        self.desired = Some(d.into());
        self
    }
    fn because(mut self, d: impl Into<String>) -> Item {
        self.detail = d.into();
        self
    }
    fn from_err(name: impl Into<String>, e: &SysError) -> Item {
        let status = if e.is_not_permitted() {
            Status::NotPermitted
        } else if e.is_not_found() {
            Status::NotPresent
        } else {
            Status::Warn
        };
        Item::new(name, status, "").because(e.to_string())
    }
}

/// The result of `check`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The profile judged against, if any.
    pub profile: Option<String>,
    /// Every item.
    pub items: Vec<Item>,
}

impl Report {
    /// True when nothing is `Bad`.
    pub fn ok(&self) -> bool {
        !self.items.iter().any(|i| i.status == Status::Bad)
    }
}

/// The CPU list of an `isolcpus=` value, without its flags (`managed_irq,domain,1-3`
/// gives `1-3`).
pub fn isolcpus_list(value: &str) -> Result<CpuSet, rt_sys::cpulist::CpuListError> {
    let cpus: Vec<&str> = value
        .split(',')
        .filter(|t| !t.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
        .collect();
    CpuSet::parse(&cpus.join(","))
}

/// Per-CPU times from `/proc/stat` (`cpuN user nice system idle iowait irq softirq steal
/// ...`), in clock ticks: (cpu, total, steal). The aggregate `cpu` line is skipped.
pub fn parse_proc_stat(text: &str) -> Vec<(u32, u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let cpu: u32 = f.next()?.strip_prefix("cpu")?.parse().ok()?;
            let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
            // guest and guest_nice (fields 9, 10) are already counted in user and nice.
            let total: u64 = v.iter().take(8).sum();
            Some((cpu, total, v.get(7).copied().unwrap_or(0)))
        })
        .collect()
}

/// Steal in percent per CPU between two `/proc/stat` samples.
pub fn steal_percent(before: &str, after: &str) -> Vec<(u32, f64)> {
    let a = parse_proc_stat(before);
    parse_proc_stat(after)
        .into_iter()
        .filter_map(|(cpu, total, steal)| {
            let (_, t0, s0) = a.iter().find(|(c, _, _)| *c == cpu)?;
            let dt = total.checked_sub(*t0)?;
            let ds = steal.checked_sub(*s0)?;
            #[allow(clippy::cast_precision_loss)] // tick counts
            let pct = if dt == 0 {
                0.0
            } else {
                ds as f64 * 100.0 / dt as f64
            };
            Some((cpu, pct))
        })
        .collect()
}

/// The clocksource verdict: tsc is good, kvm-clock works, hpet and acpi_pm are slow.
pub fn clocksource_status(name: &str) -> (Status, &'static str) {
    match name {
        "tsc" => (Status::Ok, "TSC: cheapest reads"),
        "kvm-clock" => (
            Status::Warn,
            "kvm-clock works (pvclock); tsc is cheaper when the host TSC is stable",
        ),
        "hpet" | "acpi_pm" => (
            Status::Bad,
            "reads trap to the hypervisor: microseconds per clock_gettime",
        ),
        _ => (Status::Warn, "unusual clocksource"),
    }
}

/// The CPUs a profile treats as real-time in the guest: `guest.realtime_cpus`, else the
/// probe CPUs.
pub fn realtime_cpus(p: &Profile) -> Option<CpuSet> {
    let g = p.guest.as_ref()?;
    Some(
        g.realtime_cpus
            .clone()
            .unwrap_or_else(|| g.probe.cpus.clone()),
    )
}

/// Check the guest against `profile` (or only general items without one), sampling
/// steal time over `steal_window`.
pub fn check(root: &SysRoot, profile: Option<&Profile>, steal_window: Duration) -> Report {
    let mut c = Checking {
        root,
        profile,
        guest: profile.and_then(|p| p.guest.as_ref()),
        rt: profile.and_then(realtime_cpus),
        items: Vec::new(),
    };
    c.kernel();
    c.isolated();
    c.halt_poll();
    c.cpuidle();
    c.clocksource();
    c.steal(steal_window);
    c.irq_threads();
    Report {
        profile: profile.map(|p| p.name.clone()),
        items: c.items,
    }
}

/// What `check` looks at and what it found so far, one method per area.
struct Checking<'a> {
    root: &'a SysRoot,
    profile: Option<&'a Profile>,
    guest: Option<&'a profiles::Guest>,
    /// The realtime CPUs of the profile.
    rt: Option<CpuSet>,
    items: Vec<Item>,
}

impl Checking<'_> {
    /// A wanted value missed is bad against a profile, a warning without one.
    fn judged(&self, ok: bool) -> Status {
        match (ok, self.profile.is_some()) {
            (true, _) => Status::Ok,
            (false, true) => Status::Bad,
            (false, false) => Status::Warn,
        }
    }

    /// PREEMPT_RT and the isolation boot arguments.
    fn kernel(&mut self) {
        let f = match kernel::facts(self.root) {
            Ok(f) => f,
            Err(e) => return self.items.push(Item::from_err("kernel", &e)),
        };
        self.items.push(
            Item::new(
                "kernel.preempt_rt",
                self.judged(f.preempt_rt),
                f.preempt_rt.to_string(),
            )
            .want("true")
            .because(f.version.clone()),
        );
        for key in ["isolcpus", "nohz_full", "rcu_nocbs"] {
            let v = kernel::cmdline_value(&f.cmdline, key);
            let name = format!("cmdline.{key}");
            let found = v
                .map(|v| {
                    if key == "isolcpus" {
                        isolcpus_list(v)
                    } else {
                        CpuSet::parse(v)
                    }
                })
                .transpose();
            let item = match (found, &self.rt) {
                (Ok(cur), Some(want)) => {
                    let cur = cur.unwrap_or_default();
                    Item::new(&name, self.judged(want.is_subset(&cur)), cur.to_string())
                        .want(want.to_string())
                        .because("a boot argument: change it in the guest's kernel command line")
                }
                (Ok(cur), None) => Item::new(
                    &name,
                    Status::Info,
                    cur.map(|c| c.to_string()).unwrap_or_default(),
                ),
                (Err(e), _) => {
                    Item::new(&name, Status::Warn, v.unwrap_or("")).because(e.to_string())
                }
            };
            self.items.push(item);
        }
    }

    /// The CPUs the kernel isolated, for information.
    fn isolated(&mut self) {
        if let Ok(iso) = self.root.read_trim(rt_sys::cpulist::ISOLATED) {
            self.items
                .push(Item::new("cpus.isolated", Status::Info, iso));
        }
    }

    /// The guest's halt polling against the profile's `guest_halt_poll_ns`.
    fn halt_poll(&mut self) {
        let item = match self.root.read_u64(HALT_POLL) {
            Ok(cur) => {
                let want = self.guest.and_then(|g| g.guest_halt_poll_ns);
                let status = match want {
                    Some(w) => self.judged(w == cur),
                    None => Status::Info,
                };
                let item = Item::new("haltpoll.guest_halt_poll_ns", status, cur.to_string());
                match want {
                    Some(w) => item.want(w.to_string()),
                    None => item,
                }
            }
            Err(e) => Item::from_err("haltpoll.guest_halt_poll_ns", &e),
        };
        self.items.push(item);
    }

    /// Idle states of the real-time CPUs (all CPUs without a profile).
    fn cpuidle(&mut self) {
        let max_exit = self.guest.and_then(|g| g.max_exit_latency_us);
        let cpus = self
            .rt
            .clone()
            .unwrap_or_else(|| rt_sys::cpulist::online(self.root).unwrap_or_default());
        for cpu in cpus.iter() {
            if !self.root.exists(rt_sys::cpulist::cpu_dir(cpu)) {
                self.items.push(
                    Item::new(format!("cpuidle.cpu{cpu}"), Status::NotPresent, "")
                        .because(format!("CPU {cpu} does not exist here")),
                );
                continue;
            }
            let states = match cpuidle::states(self.root, cpu) {
                Ok(states) => states,
                Err(e) => {
                    self.items
                        .push(Item::from_err(format!("cpuidle.cpu{cpu}"), &e));
                    continue;
                }
            };
            for s in states {
                let name = format!("cpuidle.cpu{cpu}.state{}", s.index);
                let cur = if s.disabled { "disabled" } else { "enabled" };
                let item = match max_exit {
                    Some(max) if u64::from(max) < s.latency_us => {
                        Item::new(name, self.judged(s.disabled), cur).want("disabled")
                    }
                    Some(_) => Item::new(name, Status::Ok, cur),
                    None => Item::new(name, Status::Info, cur),
                };
                self.items
                    .push(item.because(format!("{} (exit latency {} us)", s.name, s.latency_us)));
            }
        }
    }

    fn clocksource(&mut self) {
        let item = match self.root.read_trim(CLOCKSOURCE) {
            Ok(cs) => {
                let (status, why) = clocksource_status(&cs);
                Item::new("clocksource", status, cs).because(why)
            }
            Err(e) => Item::from_err("clocksource", &e),
        };
        self.items.push(item);
    }

    /// Steal time of the real-time CPUs over `window`.
    fn steal(&mut self, window: Duration) {
        let before = match self.root.read(kernel::STAT) {
            Ok(b) => b,
            Err(e) => return self.items.push(Item::from_err("steal", &e)),
        };
        std::thread::sleep(window);
        let after = self.root.read(kernel::STAT).unwrap_or_default();
        for (cpu, pct) in steal_percent(&before, &after) {
            if self.rt.as_ref().is_some_and(|r| !r.contains(cpu)) {
                continue;
            }
            let status = if pct <= 1.0 { Status::Ok } else { Status::Warn };
            self.items.push(
                Item::new(format!("steal.cpu{cpu}"), status, format!("{pct:.2} %")).because(
                    format!(
                        "time the host ran something else, over {} ms",
                        window.as_millis()
                    ),
                ),
            );
        }
    }

    /// The profile's IRQ threads: present, their priority and affinity.
    fn irq_threads(&mut self) {
        let wanted = self
            .guest
            .map(|g| g.irq_threads.as_slice())
            .unwrap_or_default();
        for want in wanted {
            let found = match irqthread::find(self.root, &want.name) {
                Ok(f) => f,
                Err(e) => {
                    self.items
                        .push(Item::from_err(format!("irq_thread.{}", want.name), &e));
                    continue;
                }
            };
            if found.is_empty() {
                self.items.push(
                    Item::new(format!("irq_thread.{}", want.name), Status::NotPresent, "").because(
                        format!("no irq/NN-{} thread here (device absent?)", want.name),
                    ),
                );
            }
            let ops = threads::for_root(self.root);
            for t in found {
                if let Some(prio) = want.priority {
                    let name = format!("irq_thread.{}.priority", t.comm);
                    let item = match ops.get_sched(self.root, t.pid, t.pid) {
                        Ok(cur) => Item::new(
                            name,
                            self.judged(
                                cur.policy == Policy::Fifo && cur.priority == u32::from(prio),
                            ),
                            cur.to_string(),
                        )
                        .want(format!("fifo:{prio}")),
                        Err(e) => Item::from_err(name, &e),
                    };
                    self.items.push(item);
                }
                if let Some(cpus) = &want.cpus {
                    let name = format!("irq_thread.{}.affinity", t.comm);
                    let item = match ops.get_affinity(self.root, t.pid, t.pid) {
                        Ok(cur) => Item::new(name, self.judged(&cur == cpus), cur.to_string())
                            .want(cpus.to_string()),
                        Err(e) => Item::from_err(name, &e),
                    };
                    self.items.push(item);
                }
            }
        }
    }
}

/// One change `tune` makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The check item it fixes.
    pub item: String,
    /// What is changed (journal target).
    pub target: Target,
    /// Value now.
    pub current: String,
    /// Value to write.
    pub desired: String,
}

/// What `tune` would change to make `check` pass, from the current state under `root`.
/// Boot arguments and the kernel itself cannot change at run time and are not planned.
pub fn plan(root: &SysRoot, profile: &Profile) -> Vec<Change> {
    let mut out = Vec::new();
    let Some(guest) = profile.guest.as_ref() else {
        return out;
    };
    if let (Some(want), Ok(cur)) = (guest.guest_halt_poll_ns, root.read_trim(HALT_POLL)) {
        if cur != want.to_string() {
            out.push(Change {
                item: "haltpoll.guest_halt_poll_ns".into(),
                target: Target::File {
                    path: HALT_POLL.into(),
                },
                current: cur,
                desired: want.to_string(),
            });
        }
    }
    if let (Some(max), Some(cpus)) = (guest.max_exit_latency_us, realtime_cpus(profile)) {
        for cpu in cpus.iter() {
            for s in cpuidle::states(root, cpu).unwrap_or_default() {
                if s.latency_us > u64::from(max) && !s.disabled {
                    out.push(Change {
                        item: format!("cpuidle.cpu{cpu}.state{}", s.index),
                        target: Target::File {
                            path: s.disable_path(),
                        },
                        current: "0".into(),
                        desired: "1".into(),
                    });
                }
            }
        }
    }
    let ops = threads::for_root(root);
    for want in &guest.irq_threads {
        for t in irqthread::find(root, &want.name).unwrap_or_default() {
            if let Some(prio) = want.priority {
                let desired = SchedParams {
                    policy: Policy::Fifo,
                    priority: u32::from(prio),
                };
                if let Ok(cur) = ops.get_sched(root, t.pid, t.pid) {
                    if cur != desired {
                        out.push(Change {
                            item: format!("irq_thread.{}.priority", t.comm),
                            target: Target::ThreadSched {
                                pid: t.pid,
                                tid: t.pid,
                                start_time: t.start_time,
                                name: t.comm.clone(),
                            },
                            current: cur.to_string(),
                            desired: desired.to_string(),
                        });
                    }
                }
            }
            if let Some(cpus) = &want.cpus {
                if let Ok(cur) = ops.get_affinity(root, t.pid, t.pid) {
                    if &cur != cpus {
                        out.push(Change {
                            item: format!("irq_thread.{}.affinity", t.comm),
                            target: Target::ThreadAffinity {
                                pid: t.pid,
                                tid: t.pid,
                                start_time: t.start_time,
                                name: t.comm.clone(),
                            },
                            current: cur.to_string(),
                            desired: cpus.to_string(),
                        });
                    }
                }
            }
        }
    }
    out
}

/// What happened to one change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// The change.
    pub change: Change,
    /// `applied`, `not permitted here`, `not present`, or the error.
    pub outcome: String,
    /// True when it took effect.
    pub ok: bool,
}

/// Apply `changes` with the journal: each entry is written before its change, which
/// [`rt_sys::journal::set`] makes (the one implementation rt-host uses too: a thread whose
/// tid was reused since `plan` is reported not present and left alone); a refused change
/// is dropped from the journal and reported, the others go on.
pub fn apply(
    root: &SysRoot,
    journal: &mut Journal,
    profile: &ProfileId,
    changes: Vec<Change>,
) -> Result<Vec<Applied>, JournalError> {
    journal.begin(root, profile.clone(), record::now_utc())?;
    let mut out = Vec::new();
    for c in changes {
        let fresh = !journal.has(&c.target);
        journal.record(Entry {
            target: c.target.clone(),
            prior: c.current.clone(),
            applied: c.desired.clone(),
        })?;
        let ops = threads::for_root(root);
        let (outcome, ok) = match rt_sys::journal::set(root, ops, &c.target, &c.desired) {
            Ok(()) => ("applied".to_string(), true),
            Err(e) => {
                if fresh {
                    journal.forget(&c.target)?;
                }
                let what = if e.is_not_permitted() {
                    format!("not permitted here: {e}")
                } else if e.is_not_found() {
                    format!("not present: {e}")
                } else {
                    format!("failed: {e}")
                };
                (what, false)
            }
        };
        out.push(Applied {
            change: c,
            outcome,
            ok,
        });
    }
    journal.data_mut().complete = true;
    journal.save()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rt_sys::journal::RevertOutcome;

    // /proc/stat of this machine, twice, 1 s apart (steal is column 8).
    const STAT0: &str = "cpu  21257 0 8477 121186 714 0 117 28 0 0\n\
cpu0 9743 0 4552 61472 81 0 12 14 0 0\n\
cpu1 11514 0 3925 59713 633 0 104 14 0 0\nintr 1 2 3\n";
    const STAT1: &str = "cpu  21357 0 8497 121286 714 0 117 38 0 0\n\
cpu0 9793 0 4562 61522 81 0 12 14 0 0\n\
cpu1 11564 0 3935 59763 633 0 104 24 0 0\nintr 1 2 3\n";

    #[test]
    fn proc_stat_and_steal() {
        let p = parse_proc_stat(STAT0);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1], (1, 11514 + 3925 + 59713 + 633 + 104 + 14, 14));
        let s = steal_percent(STAT0, STAT1);
        assert_eq!(s[0], (0, 0.0));
        assert!((s[1].1 - 10.0 * 100.0 / 120.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn isolcpus_flags_are_dropped() {
        assert_eq!(
            isolcpus_list("managed_irq,domain,1-3").unwrap().to_string(),
            "1-3"
        );
        assert_eq!(isolcpus_list("1,3").unwrap().to_string(), "1,3");
        let e = format!("{:#}", (isolcpus_list("domain,1-x")).unwrap_err());
        assert!(e.contains("\"x\" is not a CPU number"), "{e}");
    }

    #[test]
    fn clocksources() {
        assert_eq!(clocksource_status("tsc").0, Status::Ok);
        assert_eq!(clocksource_status("kvm-clock").0, Status::Warn);
        assert_eq!(clocksource_status("hpet").0, Status::Bad);
        assert_eq!(clocksource_status("acpi_pm").0, Status::Bad);
    }

    fn w(root: &SysRoot, p: &str, v: &str) {
        let p = root.path(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, v).unwrap();
    }

    /// A fake guest like the lab's: cpu1 with POLL and a 1 us state, halt polling 200000,
    /// an `irq/11-can1` thread at FIFO 50 on both CPUs.
    fn fake_guest(dir: &std::path::Path) -> SysRoot {
        let root = SysRoot::new(dir);
        w(&root, "proc/sys/kernel/osrelease", "6.1.0-56-rt-amd64\n");
        w(
            &root,
            "proc/sys/kernel/version",
            "#1 SMP PREEMPT_RT Debian 6.1.192-2\n",
        );
        w(
            &root,
            "proc/cmdline",
            "console=ttyS0 isolcpus=managed_irq,domain,1 nohz_full=1\n",
        );
        w(&root, "sys/devices/system/cpu/online", "0-1\n");
        w(&root, HALT_POLL, "200000\n");
        w(&root, CLOCKSOURCE, "tsc\n");
        w(&root, "proc/stat", STAT0);
        for (k, name, lat) in [(0, "POLL", "0"), (1, "haltpoll idle", "1")] {
            let base = format!("sys/devices/system/cpu/cpu1/cpuidle/state{k}");
            w(&root, &format!("{base}/name"), &format!("{name}\n"));
            w(&root, &format!("{base}/latency"), &format!("{lat}\n"));
            w(&root, &format!("{base}/disable"), "0\n");
        }
        w(
            &root,
            "proc/61/task/61/stat",
            "61 (irq/11-can1) S 2 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 -51 0 1 0 377 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 17 1 50 1 0 0 0 0 0 0 0 0 0 0 0\n",
        );
        w(
            &root,
            "proc/61/task/61/status",
            "Name:\tirq/11-can1\nTgid:\t61\nCpus_allowed_list:\t0-1\n",
        );
        root
    }

    fn profile() -> Profile {
        let mut p = profiles::load("lab").unwrap().profile;
        let g = p.guest.as_mut().unwrap();
        g.guest_halt_poll_ns = Some(0);
        g.max_exit_latency_us = Some(0);
        p
    }

    #[test]
    fn check_on_a_fake_guest() {
        let dir = tempfile::tempdir().unwrap();
        let root = fake_guest(dir.path());
        let r = check(&root, Some(&profile()), Duration::from_millis(1));
        let get = |n: &str| {
            r.items
                .iter()
                .find(|i| i.name == n)
                .unwrap_or_else(|| panic!("{n}: {r:#?}"))
        };
        assert_eq!(get("kernel.preempt_rt").status, Status::Ok);
        assert_eq!(get("cmdline.isolcpus").status, Status::Ok);
        assert_eq!(get("cmdline.rcu_nocbs").status, Status::Bad);
        assert_eq!(get("haltpoll.guest_halt_poll_ns").status, Status::Bad);
        assert_eq!(get("cpuidle.cpu1.state0").status, Status::Ok);
        assert_eq!(get("cpuidle.cpu1.state1").status, Status::Bad);
        assert_eq!(get("clocksource").status, Status::Ok);
        assert_eq!(get("irq_thread.irq/11-can1.priority").status, Status::Bad);
        assert_eq!(get("irq_thread.irq/11-can1.affinity").status, Status::Bad);
        assert_eq!(get("irq_thread.can0").status, Status::NotPresent);
        assert!(!r.ok());
    }

    #[test]
    fn plan_apply_and_revert_on_a_fake_guest() {
        let dir = tempfile::tempdir().unwrap();
        let root = fake_guest(&dir.path().join("root"));
        let p = profile();
        let changes = plan(&root, &p);
        let items: Vec<&str> = changes.iter().map(|c| c.item.as_str()).collect();
        assert_eq!(
            items,
            [
                "haltpoll.guest_halt_poll_ns",
                "cpuidle.cpu1.state1",
                "irq_thread.irq/11-can1.priority",
                "irq_thread.irq/11-can1.affinity"
            ]
        );
        let mut j = Journal::open_locked(&dir.path().join("journal")).unwrap();
        let id = ProfileId {
            name: "lab".into(),
            sha256: "00".repeat(32),
        };
        let applied = apply(&root, &mut j, &id, changes).unwrap();
        assert!(applied.iter().all(|a| a.ok), "{applied:#?}");
        assert!(plan(&root, &p).is_empty(), "tuned: nothing left to do");
        let r = check(&root, Some(&p), Duration::from_millis(1));
        assert_eq!(
            r.items
                .iter()
                .find(|i| i.name == "irq_thread.irq/11-can1.priority")
                .unwrap()
                .status,
            Status::Ok
        );
        let back = j
            .revert_with(&root, threads::for_root(&root), &Default::default())
            .unwrap()
            .entries;
        assert!(
            back.iter().all(|b| b.outcome == RevertOutcome::Restored),
            "{back:#?}"
        );
        assert_eq!(root.read_trim(HALT_POLL).unwrap(), "200000");
        assert_eq!(plan(&root, &p).len(), 4, "reverted exactly");
    }

    #[test]
    fn apply_never_changes_a_thread_whose_tid_was_reused_since_plan() {
        let dir = tempfile::tempdir().unwrap();
        let root = fake_guest(&dir.path().join("root"));
        let p = profile();
        let changes: Vec<Change> = plan(&root, &p)
            .into_iter()
            .filter(|c| c.item.starts_with("irq_thread"))
            .collect();
        assert_eq!(changes.len(), 2, "{changes:#?}");
        // irq/11-can1 exits and its tid goes to a newer thread (start time 377 -> 9000).
        let st = root.path("proc/61/task/61/stat");
        let text = std::fs::read_to_string(&st)
            .unwrap()
            .replace(" 377 ", " 9000 ");
        std::fs::write(&st, text).unwrap();
        let ops = threads::for_root(&root);
        let before = (
            ops.get_sched(&root, 61, 61).unwrap(),
            ops.get_affinity(&root, 61, 61).unwrap(),
        );
        let mut j = Journal::open_locked(&dir.path().join("journal")).unwrap();
        let id = ProfileId {
            name: "lab".into(),
            sha256: "00".repeat(32),
        };
        let applied = apply(&root, &mut j, &id, changes).unwrap();
        assert!(
            applied.iter().all(|a| !a.ok
                && a.outcome.starts_with("not present")
                && a.outcome.contains("tid reused")),
            "{applied:#?}"
        );
        let after = (
            ops.get_sched(&root, 61, 61).unwrap(),
            ops.get_affinity(&root, 61, 61).unwrap(),
        );
        assert_eq!(before, after, "the newer thread is untouched");
        assert!(j.data().entries.is_empty(), "nothing left to revert");
    }
}
