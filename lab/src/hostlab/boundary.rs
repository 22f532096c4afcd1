//! CAN across the VM boundary: the restbus on the outer host, the ECU in the guest, and
//! the reverse. The guest's CAN bus is joined to the outer host's `vcan0` by QEMU's
//! `can-host-socketcan` (the profile's `can_buses[].host_interface`, rendered by `rt-host
//! vm`), so a frame `can-sim` sends on `vcan0` reaches the guest's controllers, and one
//! the guest sends reaches `vcan0`.
//!
//! Each direction is one split `can-sim run`: `--role sender` on one side, `--role
//! receiver` on the other, both with the same `--start-at` (on the sender's clock). The
//! two sides read two clocks, so the receiver measures the offset with `--clock-dir`
//! (record::clocksync's file exchange through the directory the outer host shares with
//! the guest, `rt-guest clock-echo` answering on the sender's side), before and after
//! the run; can.json records it as `time_base` (`file_exchange`, offset, uncertainty).
//!
//! Then the round trip, which needs no second clock: `can-sim run --role round-trip` on
//! one side sends the matrix and receives every frame back from `--role echo` on the
//! other (reply id = id XOR 0x400), and times each round trip on its own clock: can.json
//! records latency RTT/2 and the time base `round_trip_echo` (uncertainty half the
//! longest round trip, RTT min/median/p99/max).
//!
//! Pure scripts here (tested); [`super::HostLab::stage_boundary`] runs them.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::flow::guest::GuestPlan;
use crate::guest::{Agent, Output};
use crate::hostlab::image::{CAN_SIM, INNER_PTP_KVM, RT_GUEST};
use crate::hostlab::inner::{InnerWatch, CLOCK_DIR, CLOCK_TAG};
use crate::hostlab::HostLab;
use crate::initramfs::GUEST_SHARE;
use crate::qemu::tail;
use crate::scripts::GUEST_RUNS;
use crate::summary::Step;

/// The receiver's run of the restbus on the host, ECU in the guest (in the guest's runs).
pub const RUN_H2G: &str = "run-boundary-h2g";
/// The receiver's run of the ECU in the guest sending, the host receiving (in the outer
/// host's runs, moved beside the guest's on this machine).
pub const RUN_G2H: &str = "run-boundary-g2h";
/// Where the outer host writes its runs (in its share: `share/runs-outer` here).
pub const OUTER_RUNS: &str = "/lab/runs-outer";
/// Where the guest mounts the outer host's [`CLOCK_DIR`].
pub const GUEST_CLOCK: &str = "/run/rtvirt-clock";
/// Seconds from reading the sender's clock to the first release: the receiver starts
/// (through the agent) and measures the clock offset in that time (8 rounds of the
/// exchange took 5-15 s under nested TCG here; 20 rounds did not fit in 18 s).
pub const LEAD_S: u64 = 25;
/// How long each direction sends (shorter than the flow's CAN runs: the nested guest's
/// controller falls seconds behind the schedule, and the host waits it out).
pub const DURATION: &str = "5s";

/// The timeout of a short step (starting a background run, a script, waiting out a mount).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The guest->host receiver's `--drain-idle`: after its drain it listens on until no
/// frame came for this long (the nested guest's controller still emptying its queue).
const G2H_DRAIN_IDLE: &str = "2s";

/// The round trip measured on the outer host (frames host -> guest -> host; in the outer
/// host's runs).
pub const RUN_RT_H2G: &str = "run-roundtrip-h2g";
/// The round trip measured in the guest (guest -> host -> guest; in the guest's runs).
pub const RUN_RT_G2H: &str = "run-roundtrip-g2h";
/// Seconds from the round-trip side's start to its first release: the echo side (started
/// just before, in the background) opens its sockets in that time.
pub const RT_LEAD_S: u64 = 6;
/// How long the round-trip side listens for echoes after its last release (the guest's
/// controller falls seconds behind under nested TCG).
pub const RT_DRAIN: &str = "15s";
/// The echo side ends this long after the last frame it echoed (or after
/// [`ECHO_MAX`] + this in all).
pub const ECHO_IDLE: &str = "10s";
/// The echo side's longest run.
pub const ECHO_MAX: &str = "90s";

/// The step names of the `ptp_kvm` try (their notes say what happened).
pub const PTP_KVM_HOST_STEP: &str = "ptp_kvm: outer host clocksource, module for the guest";
/// The guest's step.
pub const PTP_KVM_GUEST_STEP: &str = "ptp_kvm: insmod in the guest";

/// Which side sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Restbus on the outer host (vcan0), ECU (receiver) in the guest.
    HostToGuest,
    /// The guest sends, the outer host receives on vcan0.
    GuestToHost,
}

impl Direction {
    /// The receiver's run directory name.
    pub fn run(self) -> &'static str {
        match self {
            Direction::HostToGuest => RUN_H2G,
            Direction::GuestToHost => RUN_G2H,
        }
    }

    /// `host->guest`, `guest->host`.
    pub fn label(self) -> &'static str {
        match self {
            Direction::HostToGuest => "host->guest",
            Direction::GuestToHost => "guest->host",
        }
    }

    /// The clock-exchange directory as (the outer host sees it, the guest sees it).
    pub fn clock_dir(self) -> (String, String) {
        let name = format!("clock-{}", &self.run()["run-boundary-".len()..]);
        (
            format!("{CLOCK_DIR}/{name}"),
            format!("{GUEST_CLOCK}/{name}"),
        )
    }
}

/// The two commands of a round trip in direction `d` (the first side of `d` measures):
/// (echo side, round-trip side); `tx`/`rx` are the guest's interfaces, the outer host uses
/// `vcan0` for both. `start` is a shell word.
pub fn round_trip_commands(
    d: Direction,
    profile: &str,
    tx: &str,
    rx: &str,
    start: &str,
) -> (String, String) {
    let (echo_bin, echo_if, echo_out, rt_bin, rt_if, out) = match d {
        Direction::HostToGuest => (
            "can-sim",
            (tx, rx),
            GUEST_RUNS,
            CAN_SIM,
            ("vcan0", "vcan0"),
            format!("{OUTER_RUNS}/{RUN_RT_H2G}"),
        ),
        Direction::GuestToHost => (
            CAN_SIM,
            ("vcan0", "vcan0"),
            OUTER_RUNS,
            "can-sim",
            (tx, rx),
            format!("{GUEST_RUNS}/{RUN_RT_G2H}"),
        ),
    };
    let run = &out[out.rfind('/').map_or(0, |i| i + 1)..];
    (
        echo_command(
            echo_bin,
            profile,
            echo_if,
            &format!("{echo_out}/{run}-echo"),
        ),
        round_trip_command(rt_bin, profile, rt_if, start, &out),
    )
}

/// `can-sim run --role echo` on `(tx, rx)`, for at most [`ECHO_MAX`], ending
/// [`ECHO_IDLE`] after the last frame, into `out`.
fn echo_command(can_sim: &str, profile: &str, (tx, rx): (&str, &str), out: &str) -> String {
    format!(
        "{can_sim} run {profile} --role echo --tx {tx} --rx {rx} --duration {ECHO_MAX} --drain {ECHO_IDLE} --out {out}"
    )
}

/// `can-sim run --role round-trip` on `(tx, rx)` from `start` (a shell word), for
/// [`DURATION`], listening [`RT_DRAIN`] after, into `out`.
fn round_trip_command(
    can_sim: &str,
    profile: &str,
    (tx, rx): (&str, &str),
    start: &str,
    out: &str,
) -> String {
    format!(
        "{can_sim} run {profile} --role round-trip --tx {tx} --rx {rx} --start-at {start} --duration {DURATION} --drain {RT_DRAIN} --out {out}"
    )
}

/// The round-trip side's start time: [`RT_LEAD_S`] from now, on its clock.
pub fn round_trip_start() -> String {
    format!("$(( $(date +%s) + {RT_LEAD_S} ))000000000")
}

/// One side's can-sim command line.
#[derive(Debug, Clone)]
pub struct Side<'a> {
    /// The `can-sim` binary.
    pub can_sim: &'a str,
    /// The profile (its path in the images).
    pub profile: &'a str,
    /// The interface.
    pub iface: &'a str,
    /// The run directory.
    pub out: String,
    /// The clock-exchange directory (receiver only).
    pub clock_dir: Option<String>,
    /// How long the receiver listens after the last release (`--drain`; None: can-sim's).
    pub drain: Option<String>,
    /// Then on while frames still come, until none for this long (`--drain-idle`).
    pub drain_idle: Option<&'static str>,
}

impl Side<'_> {
    /// `can-sim run` for this side; `start` is a shell word (`$T`).
    pub fn command(&self, start: &str, duration: &str) -> String {
        let (role, iface) = match &self.clock_dir {
            Some(_) => ("receiver", "--rx"),
            None => ("sender", "--tx"),
        };
        let mut s = format!(
            "{} run {} --role {role} {iface} {} --start-at {start} --duration {duration} --out {}",
            self.can_sim, self.profile, self.iface, self.out
        );
        if let Some(d) = &self.drain {
            s.push_str(&format!(" --drain {d}"));
        }
        if let Some(d) = self.drain_idle {
            s.push_str(&format!(" --drain-idle {d}"));
        }
        if let Some(d) = &self.clock_dir {
            s.push_str(&format!(" --clock-dir {d}"));
        }
        s
    }
}

/// The two sides of `d` (sender, receiver) for profile `profile`, the guest's `tx`/`rx`.
pub fn sides<'a>(d: Direction, profile: &'a str, tx: &'a str, rx: &'a str) -> (Side<'a>, Side<'a>) {
    let (outer_clock, guest_clock) = d.clock_dir();
    let run = d.run();
    match d {
        Direction::HostToGuest => (
            Side {
                can_sim: CAN_SIM,
                profile,
                iface: "vcan0",
                out: format!("{OUTER_RUNS}/{run}-tx"),
                clock_dir: None,
                drain: None,
                drain_idle: None,
            },
            Side {
                can_sim: "can-sim",
                profile,
                iface: rx,
                out: format!("{GUEST_RUNS}/{run}"),
                clock_dir: Some(guest_clock),
                drain: None,
                drain_idle: None,
            },
        ),
        Direction::GuestToHost => (
            Side {
                can_sim: "can-sim",
                profile,
                iface: tx,
                out: format!("{GUEST_RUNS}/{run}-tx"),
                clock_dir: None,
                drain: None,
                drain_idle: None,
            },
            Side {
                can_sim: CAN_SIM,
                profile,
                iface: "vcan0",
                out: format!("{OUTER_RUNS}/{run}"),
                clock_dir: Some(outer_clock),
                drain: None,
                drain_idle: None,
            },
        ),
    }
}

/// The sender's side, first: a fresh clock-exchange directory `dir` with `rt-guest
/// clock-echo` answering in it (in the background, until `stop`), the directory `runs`,
/// then the start time printed as `start_at=NS` ([`LEAD_S`] from now, on this side's
/// clock).
pub fn echo_and_start_script(rt_guest: &str, dir: &str, runs: &str) -> String {
    format!(
        "rm -rf {dir} && mkdir -p {dir} {runs} || exit 2\nsetsid {rt_guest} clock-echo {dir} --timeout 10m > {dir}.log 2>&1 < /dev/null &\necho start_at=$(( $(date +%s) + {LEAD_S} ))000000000"
    )
}

/// The guest's script that mounts the outer host's clock directory (once).
pub fn mount_clock_script() -> String {
    format!(
        // kernel-path-ok: shell that runs in the guest.
        "mkdir -p {GUEST_CLOCK} && {{ grep -q ' {GUEST_CLOCK} ' /proc/mounts || mount -t 9p -o trans=virtio,version=9p2000.L {CLOCK_TAG} {GUEST_CLOCK}; }}"
    )
}

/// The outer host's half of the `ptp_kvm` try: the guest kernel's module into the clock
/// directory (the guest sees it there), and the outer host's clocksource (KVM answers the
/// guest's `ptp_kvm` only on a `tsc` host clocksource).
pub fn ptp_kvm_host_script() -> String {
    format!(
        // kernel-path-ok: shell that runs in the outer host.
        "cp {INNER_PTP_KVM} {CLOCK_DIR}/ptp_kvm.ko\ncs=/sys/devices/system/clocksource/clocksource0\necho \"host clocksource: $(cat $cs/current_clocksource) (available: $(cat $cs/available_clocksource))\"\ndmesg | grep -i -m 4 'tsc' || true\nexit 0"
    )
}

/// The guest's half: load `ptp_kvm`, say what it made of it (the `insmod` error and the
/// kernel's lines, or the PTP clock it registered).
pub fn ptp_kvm_guest_script() -> String {
    format!(
        // kernel-path-ok: shell that runs in the guest.
        "insmod {GUEST_CLOCK}/ptp_kvm.ko 2>&1; echo \"insmod rc=$?\"\nls /dev/ptp* 2>&1\nfor c in /sys/class/ptp/*/clock_name; do [ -e \"$c\" ] && echo \"$c: $(cat $c)\"; done\ndmesg | grep -i -E 'ptp|kvm-clock|clocksource' | tail -n 6\nexit 0"
    )
}

/// The start time an [`echo_and_start_script`] printed.
pub fn parse_start(output: &str) -> Option<u64> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("start_at="))
        .and_then(|v| v.parse().ok())
}

/// Run `command` in the background (its output and exit code in `TAG.out`, `TAG.rc`).
pub fn background_script(command: &str, tag: &str) -> String {
    format!(
        "mkdir -p \"$(dirname {tag})\" && rm -f {tag}.out {tag}.rc\nsetsid sh -c '{command} > {tag}.out 2>&1; echo $? > {tag}.rc' < /dev/null > /dev/null 2>&1 &"
    )
}

/// Wait up to `secs` for a [`background_script`] to end: print its output, exit with
/// its exit code (124 when it did not end).
pub fn wait_script(tag: &str, secs: u64) -> String {
    format!(
        "i=0\nwhile [ ! -s {tag}.rc ]; do\n    sleep 0.2; i=$((i + 1))\n    [ $i -lt {n} ] || {{ echo \"{tag} did not end in {secs} s\"; cat {tag}.out; exit 124; }}\ndone\ncat {tag}.out\nexit $(cat {tag}.rc)",
        n = secs * 5
    )
}

/// End the clock echo of `dir`.
pub fn stop_script(dir: &str) -> String {
    format!("touch {dir}/stop")
}

/// The round trip between the two inner VMs on one bus (VM A, the guest, sends and
/// measures; VM B, the profile's second VM, echoes; in the guest's runs).
pub const RUN_TWO_VMS: &str = "run-twovm";
/// Where VM B writes its echo run: its own share (on this machine `share/inner-NAME`).
pub const TWO_VMS_ECHO: &str = "run-twovm-echo";

/// How long VM B may take to boot once resumed (the guest took 73 s alone here).
pub const VM_B_BOOT_S: u64 = 240;

/// VM B's CAN interface (its one controller on the profile's bus).
pub const VM_B_IFACE: &str = "can0";

/// The two commands of the two-VM round trip: (VM B's echo, VM A's round trip); `tx`/`rx`
/// are VM A's interfaces. `start` is a shell word.
pub fn two_vm_commands(profile: &str, tx: &str, rx: &str, start: &str) -> (String, String) {
    (
        echo_command(
            "can-sim",
            profile,
            (VM_B_IFACE, VM_B_IFACE),
            &format!("{GUEST_SHARE}/{TWO_VMS_ECHO}"),
        ),
        round_trip_command(
            "can-sim",
            profile,
            (tx, rx),
            start,
            &format!("{GUEST_RUNS}/{RUN_TWO_VMS}"),
        ),
    )
}

/// A round trip's two sides: the echo's command (run in the background, its output in
/// `tag`) on `far`, the round-trip run's on `near`; `label` starts the steps' names.
struct Echoing {
    far: On,
    near: On,
    label: String,
    echo: String,
    measure: String,
    tag: String,
}

/// Where a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    Outer,
    Guest,
    /// The profile's second VM (VM B), once booted.
    Second,
}

impl HostLab {
    /// CAN across the VM boundary, host->guest then guest->host (skipped when an earlier
    /// guest step failed). A side's exit code outside 0 and 1 (1: frames lost or late) is
    /// a failure in `failures`; the flow goes on.
    pub fn stage_boundary(
        &mut self,
        plan: &GuestPlan<'_>,
        failures: &mut Vec<String>,
    ) -> Result<()> {
        if !failures.is_empty() {
            return Ok(());
        }
        let mount = mount_clock_script();
        let out = self.side(
            On::Guest,
            "boundary: mount the outer host's clock directory",
            &mount,
            STEP_TIMEOUT,
            failures,
        )?;
        if out.rc != 0 {
            return Ok(());
        }
        // Once: could ptp_kvm give the guest the host's clock? (Its outcome is in the
        // steps; it does not fail the flow.)
        let host = ptp_kvm_host_script();
        self.side(On::Outer, PTP_KVM_HOST_STEP, &host, STEP_TIMEOUT, failures)?;
        let guest = ptp_kvm_guest_script();
        self.side(
            On::Guest,
            PTP_KVM_GUEST_STEP,
            &guest,
            STEP_TIMEOUT,
            failures,
        )?;
        for d in [Direction::HostToGuest, Direction::GuestToHost] {
            crate::flow::check_interrupt()?;
            self.boundary_run(d, plan, failures)?;
        }
        for d in [Direction::HostToGuest, Direction::GuestToHost] {
            crate::flow::check_interrupt()?;
            self.round_trip(d, plan, failures)?;
        }
        crate::flow::check_interrupt()?;
        self.two_vms(plan, failures)
    }

    /// Two inner VMs on one bus: resume the profile's second VM (VM B, paused until now,
    /// tuned as it was), wait for it to boot, bring its controller up, then the round
    /// trip from the guest (VM A) with VM B echoing. Both VMs' buses are joined through
    /// the outer host's `vcan0`.
    fn two_vms(&mut self, plan: &GuestPlan<'_>, failures: &mut Vec<String>) -> Result<()> {
        let Some(b) = self.paused.first().cloned() else {
            return Ok(());
        };
        let name = self
            .facts
            .vms
            .iter()
            .find(|v| v.pid == b.pid)
            .map_or_else(|| b.tag.clone(), |v| v.name.clone());
        let resume = crate::hostlab::inner::resume_script(&name);
        let r = self.side(
            On::Outer,
            &format!("two VMs: resume {name}"),
            &resume,
            STEP_TIMEOUT,
            failures,
        )?;
        if r.rc != 0 {
            return Ok(());
        }
        let share = crate::hostlab::inner::vm_share_on_host(&self.share(), &name);
        let agent = Agent::new(&share);
        let t = std::time::Instant::now();
        let booted = {
            let o = self.outer.as_mut().context("The outer host is gone")?;
            let mut w = InnerWatch {
                outer: &mut o.vm,
                inner: &b,
            };
            agent.wait_ready(&mut w, Duration::from_secs(VM_B_BOOT_S))
        };
        let secs = t.elapsed().as_secs_f64();
        let (ok, note) = match &booted {
            Ok(i) => (
                true,
                format!(
                    "{} {}; {} CPUs; net {}",
                    i.uname_r,
                    i.uname_v,
                    i.nproc,
                    i.net.join(" ")
                ),
            ),
            Err(e) => (false, format!("{e:#}")),
        };
        self.summary.steps.push(Step {
            name: format!("two VMs: boot {name} (kvm, while the guest runs)"),
            rc: Some(i32::from(!ok)),
            secs,
            ok,
            note: note.clone(),
        });
        if !ok {
            // Said in the step (the two-VM test fails on it); the flow's other results
            // stand.
            eprintln!("lab: two VMs: {name} did not boot: {note}");
            return Ok(());
        }
        self.second_agent = Some(agent);
        let up = crate::scripts::interfaces_script(&[VM_B_IFACE], plan.can.bitrate);
        let r = self.side(
            On::Second,
            &format!("two VMs: {name} {VM_B_IFACE} up"),
            &up,
            STEP_TIMEOUT,
            failures,
        )?;
        if r.rc != 0 {
            return Ok(());
        }
        let (echo, measure) = two_vm_commands(
            plan.g.profile,
            &plan.can.tx,
            &plan.can.rx,
            &round_trip_start(),
        );
        let tag = format!("{GUEST_SHARE}/{TWO_VMS_ECHO}-bg");
        let sides = Echoing {
            far: On::Second,
            near: On::Guest,
            label: format!("two VMs, {name} echoing"),
            echo,
            measure,
            tag,
        };
        self.echo_round_trip(&sides, failures)
    }

    /// One round trip: the echo in the background on the far side, the round-trip run on
    /// the near side, then the echo's end.
    fn round_trip(
        &mut self,
        d: Direction,
        plan: &GuestPlan<'_>,
        failures: &mut Vec<String>,
    ) -> Result<()> {
        let (echo, measure) = round_trip_commands(
            d,
            plan.g.profile,
            &plan.can.tx,
            &plan.can.rx,
            &round_trip_start(),
        );
        let (near, far, tag) = match d {
            Direction::HostToGuest => (
                On::Outer,
                On::Guest,
                format!("{GUEST_RUNS}/{RUN_RT_H2G}-echo-bg"),
            ),
            Direction::GuestToHost => (
                On::Guest,
                On::Outer,
                format!("{OUTER_RUNS}/{RUN_RT_G2H}-echo-bg"),
            ),
        };
        let sides = Echoing {
            far,
            near,
            label: format!("round trip {}", d.label()),
            echo,
            measure,
            tag,
        };
        self.echo_round_trip(&sides, failures)
    }

    /// The echo in the background on the far side, the round-trip run on the near side,
    /// then the echo's end.
    fn echo_round_trip(&mut self, e: &Echoing, failures: &mut Vec<String>) -> Result<()> {
        let name = |what: &str| format!("{}: {what}", e.label);
        let bg = background_script(&e.echo, &e.tag);
        self.side(
            e.far,
            &name("echo started (far side)"),
            &bg,
            STEP_TIMEOUT,
            failures,
        )?;
        let secs = |t: &str| humantime::parse_duration(t).map_or(60, |t| t.as_secs());
        let timeout = Duration::from_secs(RT_LEAD_S + secs(DURATION) + secs(RT_DRAIN) + 60);
        let what = name("can-sim round-trip (near side)");
        self.side(e.near, &what, &e.measure, timeout, failures)?;
        let echo_secs = secs(ECHO_MAX) + secs(ECHO_IDLE) + 30;
        self.side(
            e.far,
            &name("echo ended"),
            &wait_script(&e.tag, echo_secs),
            Duration::from_secs(echo_secs) + STEP_TIMEOUT,
            failures,
        )?;
        Ok(())
    }

    fn boundary_run(
        &mut self,
        d: Direction,
        plan: &GuestPlan<'_>,
        failures: &mut Vec<String>,
    ) -> Result<()> {
        let dur = DURATION;
        let (sender, mut receiver) = sides(d, plan.g.profile, &plan.can.tx, &plan.can.rx);
        let run_s = humantime::parse_duration(dur).map_or(30, |t| t.as_secs());
        if d == Direction::GuestToHost {
            // The nested guest's controller sends slower than the schedule releases
            // (seconds behind after 10 s here): the host listens until it is through.
            receiver.drain = Some(format!("{}s", 3 * run_s + 5));
            // A loaded host can put it further behind (a 1087-frame TX queue, 24.9 s once):
            // while its frames still come, the host keeps listening (up to twice as long).
            receiver.drain_idle = Some(G2H_DRAIN_IDLE);
        }
        let (outer_clock, guest_clock) = d.clock_dir();
        let (on_sender, on_receiver, echo, clock, runs) = match d {
            Direction::HostToGuest => (On::Outer, On::Guest, RT_GUEST, outer_clock, OUTER_RUNS),
            Direction::GuestToHost => (On::Guest, On::Outer, "rt-guest", guest_clock, GUEST_RUNS),
        };
        let timeout = Duration::from_secs(LEAD_S + 3 * run_s + 120);
        let name = |what: &str| format!("boundary {}: {what}", d.label());
        let start = self.side(
            on_sender,
            &name("clock echo, start time (sender side)"),
            &echo_and_start_script(echo, &clock, runs),
            STEP_TIMEOUT,
            failures,
        )?;
        let Some(t) = parse_start(&start.output) else {
            failures.push(format!(
                "boundary {}: no start time: {}",
                d.label(),
                tail(&start.output, 5)
            ));
            return Ok(());
        };
        let t = t.to_string();
        let tag = format!("{}-bg", receiver.out);
        let bg = background_script(&receiver.command(&t, dur), &tag);
        self.side(
            on_receiver,
            &name("receiver started"),
            &bg,
            STEP_TIMEOUT,
            failures,
        )?;
        self.side(
            on_sender,
            &name(&format!("can-sim sender on {}", sender.iface)),
            &sender.command(&t, dur),
            timeout,
            failures,
        )?;
        self.side(
            on_receiver,
            &name(&format!("can-sim receiver on {}", receiver.iface)),
            &wait_script(&tag, timeout.as_secs()),
            timeout + STEP_TIMEOUT,
            failures,
        )?;
        self.side(
            on_sender,
            &name("clock echo stopped"),
            &stop_script(&clock),
            STEP_TIMEOUT,
            failures,
        )?;
        Ok(())
    }

    /// Run `script` on one side as a step; exit codes 0 and 1 are fine (can-sim: 1 when
    /// frames were lost or late, which the run records).
    fn side(
        &mut self,
        on: On,
        name: &str,
        script: &str,
        timeout: Duration,
        failures: &mut Vec<String>,
    ) -> Result<Output> {
        eprintln!("lab: {name}");
        let o = self.outer.as_mut().context("The outer host is gone")?;
        let out = match on {
            On::Outer => o.sh(script, timeout)?,
            On::Guest | On::Second => {
                let (vm, agent) = if on == On::Guest {
                    (self.inner.as_ref(), self.inner_agent.as_mut())
                } else {
                    (self.paused.first(), self.second_agent.as_mut())
                };
                let vm = vm.context("The VM is not running")?;
                let agent = agent.context("No agent in the VM")?;
                let mut w = InnerWatch {
                    outer: &mut o.vm,
                    inner: vm,
                };
                agent.run(&mut w, script, timeout)?
            }
        };
        let ok = [0, 1].contains(&out.rc);
        if !ok {
            eprintln!("lab: {name} exited {}:\n{}", out.rc, tail(&out.output, 15));
            failures.push(format!(
                "`{name}` exited {}: {}",
                out.rc,
                tail(&out.output, 8)
            ));
        }
        self.summary.steps.push(Step {
            name: name.to_string(),
            rc: Some(out.rc),
            secs: out.secs,
            ok,
            note: tail(&out.output, 15),
        });
        Ok(out)
    }
}

/// The outer host's runs (`share/runs-outer` here) moved into `runs_dir` beside the
/// guest's; returns the receivers' and round-trip sides' run directories that have a
/// manifest, in direction order (the ones the report takes).
pub fn bring_out(share: &Path, runs_dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let outer = share.join(
        OUTER_RUNS
            .trim_start_matches(GUEST_SHARE)
            .trim_start_matches('/'),
    );
    if let Ok(entries) = fs::read_dir(&outer) {
        for e in entries.flatten() {
            crate::flow::collect::bring_in(&e.path(), runs_dir)?;
        }
    }
    // The second VM's echo run, in its own share.
    if let Ok(entries) = fs::read_dir(share) {
        for e in entries.flatten() {
            let d = e.path().join(TWO_VMS_ECHO);
            if e.file_name().to_string_lossy().starts_with("inner-") && d.is_dir() {
                crate::flow::collect::bring_in(&d, runs_dir)?;
            }
        }
    }
    Ok([RUN_H2G, RUN_G2H, RUN_RT_H2G, RUN_RT_G2H, RUN_TWO_VMS]
        .iter()
        .map(|r| runs_dir.join(r))
        .filter(|d| d.join("manifest.json").is_file())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_direction_has_a_sender_and_a_receiver_measuring_the_clock() {
        let (s, r) = sides(
            Direction::HostToGuest,
            "/etc/rtvirt/profiles/hil.ron",
            "can0",
            "can1",
        );
        assert_eq!(
            s.command("$T", "10s"),
            "/usr/bin/can-sim run /etc/rtvirt/profiles/hil.ron --role sender --tx vcan0 --start-at $T --duration 10s --out /lab/runs-outer/run-boundary-h2g-tx"
        );
        assert_eq!(
            r.command("$T", "10s"),
            "can-sim run /etc/rtvirt/profiles/hil.ron --role receiver --rx can1 --start-at $T --duration 10s --out /tmp/runs/run-boundary-h2g --clock-dir /run/rtvirt-clock/clock-h2g"
        );
        let (s, r) = sides(Direction::GuestToHost, "p.ron", "can0", "can1");
        assert!(s.command("1", "5s").contains("--role sender --tx can0"));
        let mut r2 = r.clone();
        r2.drain = Some("22s".into());
        r2.drain_idle = Some(G2H_DRAIN_IDLE);
        assert!(r2.command("1", "10s").contains(
            "--duration 10s --out /lab/runs-outer/run-boundary-g2h --drain 22s --drain-idle 2s --clock-dir"
        ));
        assert!(s.out.starts_with("/tmp/runs/"), "{}", s.out);
        let rc = r.command("1", "5s");
        assert!(
            rc.starts_with("/usr/bin/can-sim run p.ron --role receiver --rx vcan0")
                && rc.ends_with(
                    "--out /lab/runs-outer/run-boundary-g2h --clock-dir /run/rtvirt-clock/clock-g2h"
                ),
            "{rc}"
        );
        // One directory, seen from both sides.
        assert_eq!(
            Direction::HostToGuest.clock_dir(),
            (
                "/run/rtvirt-clock/clock-h2g".into(),
                "/run/rtvirt-clock/clock-h2g".into()
            )
        );
    }

    #[test]
    fn the_sender_side_starts_the_echo_and_names_the_start() {
        let s = echo_and_start_script(RT_GUEST, "/lab/inner/clock-h2g", OUTER_RUNS);
        assert!(
            s.starts_with(
                "rm -rf /lab/inner/clock-h2g && mkdir -p /lab/inner/clock-h2g /lab/runs-outer"
            ),
            "{s}"
        );
        assert!(
            s.contains("setsid /usr/bin/rt-guest clock-echo /lab/inner/clock-h2g --timeout 10m")
        );
        assert!(
            s.ends_with("echo start_at=$(( $(date +%s) + 25 ))000000000"),
            "{s}"
        );
        assert!(echo_and_start_script("rt-guest", "/lab/c", GUEST_RUNS)
            .contains("mkdir -p /lab/c /tmp/runs"));
        assert_eq!(
            parse_start("x\nstart_at=1764600000000000000\n"),
            Some(1_764_600_000_000_000_000)
        );
        assert_eq!(parse_start("start_at=\n"), None);
        assert_eq!(parse_start(""), None);
    }

    #[test]
    fn background_runs_report_their_exit_code() {
        let b = background_script("can-sim run x", "/tmp/runs/bg");
        assert!(
            b.contains(
                "setsid sh -c 'can-sim run x > /tmp/runs/bg.out 2>&1; echo $? > /tmp/runs/bg.rc'"
            ),
            "{b}"
        );
        let w = wait_script("/tmp/runs/bg", 30);
        assert!(
            w.contains("[ $i -lt 150 ]") && w.ends_with("exit $(cat /tmp/runs/bg.rc)"),
            "{w}"
        );
        assert_eq!(stop_script("/lab/clock-g2h"), "touch /lab/clock-g2h/stop");
        let m = mount_clock_script();
        assert!(
            m.ends_with(
                "mount -t 9p -o trans=virtio,version=9p2000.L rtvirtclock /run/rtvirt-clock; }"
            ),
            "{m}"
        );
    }

    #[test]
    fn a_round_trip_is_an_echo_on_the_far_side_and_a_round_trip_on_the_near_one() {
        let (echo, rt) = round_trip_commands(
            Direction::HostToGuest,
            "/etc/rtvirt/profiles/hil.ron",
            "can0",
            "can1",
            "$T",
        );
        assert_eq!(
            echo,
            "can-sim run /etc/rtvirt/profiles/hil.ron --role echo --tx can0 --rx can1 --duration 90s --drain 10s --out /tmp/runs/run-roundtrip-h2g-echo"
        );
        assert_eq!(
            rt,
            "/usr/bin/can-sim run /etc/rtvirt/profiles/hil.ron --role round-trip --tx vcan0 --rx vcan0 --start-at $T --duration 5s --drain 15s --out /lab/runs-outer/run-roundtrip-h2g"
        );
        let (echo, rt) = round_trip_commands(Direction::GuestToHost, "p.ron", "can0", "can1", "1");
        assert!(
            echo.starts_with("/usr/bin/can-sim run p.ron --role echo --tx vcan0 --rx vcan0")
                && echo.ends_with("--out /lab/runs-outer/run-roundtrip-g2h-echo"),
            "{echo}"
        );
        assert!(
            rt.starts_with("can-sim run p.ron --role round-trip --tx can0 --rx can1 --start-at 1")
                && rt.ends_with("--out /tmp/runs/run-roundtrip-g2h"),
            "{rt}"
        );
        assert_eq!(round_trip_start(), "$(( $(date +%s) + 6 ))000000000");
    }

    #[test]
    fn ptp_kvm_is_tried_with_the_guest_kernels_module() {
        let h = ptp_kvm_host_script();
        assert!(
            h.starts_with("cp /inner/ptp_kvm.ko /run/rtvirt-clock/ptp_kvm.ko\n"),
            "{h}"
        );
        assert!(
            h.contains("current_clocksource") && h.ends_with("exit 0"),
            "{h}"
        );
        let g = ptp_kvm_guest_script();
        assert!(
            g.starts_with("insmod /run/rtvirt-clock/ptp_kvm.ko 2>&1; echo \"insmod rc=$?\""),
            "{g}"
        );
        assert!(
            g.contains("/sys/class/ptp/*/clock_name") && g.ends_with("exit 0"),
            "{g}"
        );
    }

    #[test]
    fn two_vms_on_one_bus_are_a_round_trip_from_the_guest_to_the_second_vm() {
        let (echo, rt) = two_vm_commands("/etc/rtvirt/profiles/hil.ron", "can0", "can1", "$T");
        assert_eq!(
            echo,
            "can-sim run /etc/rtvirt/profiles/hil.ron --role echo --tx can0 --rx can0 --duration 90s --drain 10s --out /lab/run-twovm-echo"
        );
        assert_eq!(
            rt,
            "can-sim run /etc/rtvirt/profiles/hil.ron --role round-trip --tx can0 --rx can1 --start-at $T --duration 5s --drain 15s --out /tmp/runs/run-twovm"
        );
    }

    #[test]
    fn the_second_vms_echo_run_is_brought_in_with_the_outer_hosts() {
        let t = tempfile::tempdir().unwrap();
        let share = t.path().join("share");
        let runs = t.path().join("runs");
        for d in [
            "runs-outer/run-roundtrip-h2g",
            "inner-ecu1/run-twovm-echo",
            "inner/run-twovm-echo",
        ] {
            fs::create_dir_all(share.join(d)).unwrap();
            fs::write(share.join(d).join("manifest.json"), "{}").unwrap();
        }
        fs::create_dir_all(runs.join("run-twovm")).unwrap();
        fs::write(runs.join("run-twovm/manifest.json"), "{}").unwrap();
        let got = bring_out(&share, &runs).unwrap();
        assert_eq!(got, [runs.join(RUN_RT_H2G), runs.join(RUN_TWO_VMS)]);
        assert!(runs.join(TWO_VMS_ECHO).join("manifest.json").is_file());
        // Only the further VMs' shares (inner-NAME), not the guest's own.
        assert!(share.join("inner/run-twovm-echo").is_dir());
    }
}
