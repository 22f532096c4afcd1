//! The profile schema: what a RON profile may say. Every struct denies unknown fields;
//! defaults are documented on each field and in `docs/profiles.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use rt_sys::sched::Policy;
use rt_sys::CpuSet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A whole profile: host tuning, guest measurement, CAN matrix and requirements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Profile name (shown in reports).
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Host tuning (rt-host). Absent: rt-host has nothing to do.
    #[serde(default)]
    pub host: Option<Host>,
    /// Guest-side settings (rt-guest).
    #[serde(default)]
    pub guest: Option<Guest>,
    /// CAN matrix (can-sim).
    #[serde(default)]
    pub can: Option<Can>,
    /// Timing requirements evaluated by `validation`.
    #[serde(default)]
    pub requirements: Vec<Requirement>,
}

/// Host tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// CPUs for the OS, IRQs, QEMU main loop and I/O (kernel list, e.g. `"0"`).
    pub housekeeping_cpus: CpuSet,
    /// CPUs reserved for real-time vCPUs (e.g. `"1-3"`).
    pub realtime_cpus: CpuSet,
    /// Kernel requirements and boot arguments.
    #[serde(default)]
    pub kernel: Kernel,
    /// KVM module parameters.
    #[serde(default)]
    pub kvm: Kvm,
    /// Idle-state (C-state) limits on the realtime CPUs.
    #[serde(default)]
    pub idle: Idle,
    /// Device IRQ steering.
    #[serde(default)]
    pub irqs: Irqs,
    /// Runtime isolation (cgroup cpuset partition, workqueues, kernel threads).
    #[serde(default)]
    pub isolation: Isolation,
    /// The realtime-virtual-host sysctls.
    #[serde(default)]
    pub sysctl: Sysctl,
    /// Hugepages for guest memory.
    #[serde(default)]
    pub hugepages: Option<Hugepages>,
    /// The VM to act on. Absent: only host-wide items are tuned.
    #[serde(default)]
    pub vm: Option<Vm>,
    /// vCPU placement and scheduling.
    #[serde(default)]
    pub vcpus: Vec<VcpuPin>,
    /// CPUs for QEMU's emulator threads (main loop, RCU, workers). Default: housekeeping.
    #[serde(default)]
    pub emulator_cpus: Option<CpuSet>,
    /// CPUs for QEMU I/O threads (`IO iothreadN`). Default: housekeeping.
    #[serde(default)]
    pub iothread_cpus: Option<CpuSet>,
    /// Several VMs, each with its own placement and definition (instead of `vm` and
    /// `vcpus`; `emulator_cpus` and `iothread_cpus` are then their defaults).
    #[serde(default)]
    pub vms: Vec<VmSpec>,
    /// FIFO priorities of the per-CPU kernel threads of the realtime CPUs (tuned's
    /// realtime-virtual-host ladder), each above every real-time vCPU. Absent: left alone
    /// (whether they can starve is still checked).
    #[serde(default)]
    pub kthread_priorities: Option<KthreadPriorities>,
    /// What to do with irqbalance, which would undo the IRQ steering (default Ban).
    #[serde(default)]
    pub irqbalance: Irqbalance,
    /// CPU frequency and power management of the realtime CPUs.
    #[serde(default)]
    pub power: Power,
}

/// FIFO priorities of the kernel threads that must run above the vCPUs on their CPU: a
/// busy FIFO vCPU above them would keep softirqs, timers and RCU callbacks of its CPU
/// from running. The defaults are tuned's realtime-virtual-host (ksoftirqd and ktimers
/// 2, rcuc and rcub 4, with vCPUs at FIFO 1) and KubeVirt's kvm-pit 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KthreadPriorities {
    /// `ksoftirqd/N` (softirqs of CPU N), default 2.
    pub ksoftirqd: u8,
    /// `ktimers/N` (timer softirqs on PREEMPT_RT), default 2.
    pub ktimers: u8,
    /// `rcuc/N` (RCU callbacks of CPU N with RCU boosting), default 4.
    pub rcuc: u8,
    /// `rcub/N` (RCU priority boosting), default 4.
    pub rcub: u8,
    /// `kvm-pit/PID` (the VM's in-kernel PIT timer thread), default 2.
    pub kvm_pit: u8,
}

impl Default for KthreadPriorities {
    fn default() -> Self {
        KthreadPriorities {
            ksoftirqd: 2,
            ktimers: 2,
            rcuc: 4,
            rcub: 4,
            kvm_pit: 2,
        }
    }
}

/// irqbalance moves device IRQs every few seconds and would undo `host.irqs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Irqbalance {
    /// Ban the realtime CPUs (`IRQBALANCE_BANNED_CPULIST` in its configuration, then
    /// restart it through its init system), as tuned's irqbalance plugin does.
    #[default]
    Ban,
    /// Stop (`SIGSTOP`) the running daemon until revert (`SIGCONT`).
    Stop,
    /// Leave irqbalance alone (only reported).
    Leave,
}

/// CPU frequency and power management (`cpufreq`, `power/energy_perf_bias`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Power {
    /// cpufreq governor of the realtime CPUs (default "performance"). Absent: left alone.
    pub governor: Option<String>,
    /// Energy-performance preference (`energy_performance_preference`, intel_pstate and
    /// amd-pstate in active mode; default "performance"). Absent: left alone.
    pub epp: Option<String>,
    /// Energy-performance bias 0..=15 (`power/energy_perf_bias`, 0 is performance;
    /// default 0). Absent: left alone.
    pub epb: Option<u8>,
    /// Turbo/boost on (true) or off (false) (`cpufreq/boost`, `intel_pstate/no_turbo`).
    /// Absent (default): left alone.
    pub boost: Option<bool>,
    /// Put `intel_pstate=disable` or `amd_pstate=disable` (by the CPU vendor) on the
    /// kernel command line, as tuned's realtime profile (default true).
    pub disable_pstate: bool,
}

impl Default for Power {
    fn default() -> Self {
        Power {
            governor: Some("performance".into()),
            epp: Some("performance".into()),
            epb: Some(0),
            boost: None,
            disable_pstate: true,
        }
    }
}

/// Kernel requirements and the boot arguments the profile needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kernel {
    /// Require a PREEMPT_RT kernel (default true).
    pub require_preempt_rt: bool,
    /// Put `isolcpus=managed_irq,domain,<realtime>` on the command line (default true).
    pub isolcpus: bool,
    /// Put `nohz_full=<realtime>` on the command line (default true).
    pub nohz_full: bool,
    /// Put `rcu_nocbs=<realtime>` on the command line (default true).
    pub rcu_nocbs: bool,
    /// Put `tsc=reliable` on the command line: no clocksource watchdog on the TSC
    /// (default true).
    pub tsc_reliable: bool,
    /// Put `rcupdate.rcu_normal_after_boot=1` on the command line: no expedited RCU grace
    /// periods (IPIs to every CPU) once booted (default true).
    pub rcu_normal_after_boot: bool,
    /// Put `rcu_nocb_poll` on the command line: the offloaded RCU threads poll instead of
    /// being woken by the realtime CPUs (default false: it costs housekeeping CPU time).
    pub rcu_nocb_poll: bool,
    /// Extra boot arguments (e.g. `"skew_tick=1"`).
    pub extra_args: Vec<String>,
}

impl Default for Kernel {
    fn default() -> Self {
        Kernel {
            require_preempt_rt: true,
            isolcpus: true,
            nohz_full: true,
            rcu_nocbs: true,
            tsc_reliable: true,
            rcu_normal_after_boot: true,
            rcu_nocb_poll: false,
            extra_args: Vec::new(),
        }
    }
}

/// KVM parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kvm {
    /// `/sys/module/kvm/parameters/halt_poll_ns` in ns. Absent: left alone.
    pub halt_poll_ns: Option<u64>,
    /// tuned's low-latency KVM module parameters: `kvm nx_huge_pages=off` (at runtime
    /// where the kernel allows it), `kvm kvmclock_periodic_sync=0`, `kvm_intel ple_gap=0`,
    /// `kvm_amd pause_filter_count=0`; the others need a module reload (`rt-host modprobe`
    /// prints the modprobe.d file). Default true.
    pub low_latency: bool,
}

impl Default for Kvm {
    fn default() -> Self {
        Kvm {
            halt_poll_ns: None,
            low_latency: true,
        }
    }
}

/// Idle-state limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Idle {
    /// Disable cpuidle states whose exit latency exceeds this (us) on the realtime CPUs.
    /// `0` leaves only polling. Absent: left alone.
    pub max_exit_latency_us: Option<u32>,
}

/// IRQ steering.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Irqs {
    /// Move device IRQs and `default_smp_affinity` here. Default: the housekeeping CPUs.
    pub steer_to: Option<CpuSet>,
    /// Leave IRQ affinity alone (default false).
    pub skip: bool,
}

/// Runtime isolation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Isolation {
    /// Make a cgroup v2 cpuset partition "isolated" (v1 cpuset where v2 lacks it) for the
    /// realtime CPUs (default true).
    pub cpuset_partition: bool,
    /// Move the unbound workqueue cpumask to the housekeeping CPUs (default true).
    pub workqueues: bool,
    /// Move movable kernel threads to the housekeeping CPUs (default true).
    pub kthreads: bool,
}

impl Default for Isolation {
    fn default() -> Self {
        Isolation {
            cpuset_partition: true,
            workqueues: true,
            kthreads: true,
        }
    }
}

/// The realtime-virtual-host sysctls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sysctl {
    /// Apply tuned's realtime-virtual-host set: `kernel.timer_migration=0`,
    /// `kernel.numa_balancing=0`, `vm.stat_interval=10`, THP never, KSM off (default true).
    pub realtime_virtual_host: bool,
    /// Set `kernel.sched_rt_runtime_us=-1` (no RT throttling). Only honoured when
    /// housekeeping CPUs exist (default false).
    pub rt_runtime_unlimited: bool,
    /// More sysctls, by dotted name (`"vm.swappiness": "10"`).
    pub extra: BTreeMap<String, String>,
}

impl Default for Sysctl {
    fn default() -> Self {
        Sysctl {
            realtime_virtual_host: true,
            rt_runtime_unlimited: false,
            extra: BTreeMap::new(),
        }
    }
}

/// Hugepages reserved for guest memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hugepages {
    /// Page size in KiB: 2048 or 1048576.
    pub size_kib: u64,
    /// Number of pages to reserve.
    pub count: u64,
    /// NUMA node for the pages and the vCPUs (default: any).
    #[serde(default)]
    pub node: Option<u32>,
}

/// How to find the VM's QEMU process. Exactly one field must be set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Vm {
    /// QEMU `-name` (first field or `guest=`).
    pub qemu_name: Option<String>,
    /// A libvirt domain name: the process is found by libvirt's pid file
    /// (`/run/libvirt/qemu/NAME.pid`) or QEMU's `-name guest=NAME`.
    pub libvirt: Option<String>,
    /// Process id.
    pub pid: Option<u32>,
    /// File holding the process id (QEMU `-pidfile`).
    pub pidfile: Option<PathBuf>,
    /// QMP socket (`query-cpus-fast` gives vCPU thread ids).
    pub qmp: Option<PathBuf>,
    /// Guest memory in MiB (for the hugepage check).
    pub memory_mib: Option<u64>,
}

/// One VM of `host.vms`: how rt-host finds it, where its threads run, and what
/// `rt-host vm` renders for libvirt, QEMU and KubeVirt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// VM name: the libvirt domain name, QEMU's `-name guest=`, KubeVirt's `metadata.name`.
    pub name: String,
    /// How rt-host finds the running VM (default: the QEMU process named `name`).
    #[serde(default)]
    pub find: Option<Vm>,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Number of vCPUs (default: the highest index in `vcpus` plus one).
    #[serde(default)]
    pub cpus: Option<u32>,
    /// vCPU placement and scheduling; vCPUs not listed stay on the emulator CPUs.
    #[serde(default)]
    pub vcpus: Vec<VcpuPin>,
    /// CPUs for this VM's emulator threads (default: `host.emulator_cpus`, else housekeeping).
    #[serde(default)]
    pub emulator_cpus: Option<CpuSet>,
    /// CPUs for this VM's I/O threads (default: `host.iothread_cpus`, else housekeeping).
    #[serde(default)]
    pub iothread_cpus: Option<CpuSet>,
    /// Number of QEMU I/O threads (default 1).
    #[serde(default = "one")]
    pub iothreads: u32,
    /// Scheduling policy of the emulator threads (default Other: no `<emulatorsched>`).
    #[serde(default = "other")]
    pub emulator_policy: Policy,
    /// Priority of the emulator threads, 1..=99 for Fifo/Rr (default 0).
    #[serde(default)]
    pub emulator_priority: u8,
    /// Scheduling policy of the I/O threads (default Other: no `<iothreadsched>`).
    #[serde(default = "other")]
    pub iothread_policy: Policy,
    /// Priority of the I/O threads, 1..=99 for Fifo/Rr (default 0).
    #[serde(default)]
    pub iothread_priority: u8,
    /// Hugepage size in KiB backing guest memory (default: `host.hugepages.size_kib`;
    /// absent there too: ordinary pages).
    #[serde(default)]
    pub hugepage_kib: Option<u64>,
    /// Host NUMA node the memory is bound to, strictly (default: `host.hugepages.node`).
    #[serde(default)]
    pub numa_node: Option<u32>,
    /// Emulated CAN buses and their controllers.
    #[serde(default)]
    pub can_buses: Vec<CanBus>,
    /// What the VM boots (default: nothing; add a disk or kernel to the rendered definition).
    #[serde(default)]
    pub boot: Option<VmBoot>,
}

/// An emulated CAN bus of a VM (QEMU `can-bus`), its controllers in the guest and an
/// optional bridge to a host SocketCAN interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanBus {
    /// QEMU object id of the bus (e.g. `"canbus0"`).
    pub id: String,
    /// Controller model (default KvaserPci).
    #[serde(default)]
    pub controller: CanController,
    /// Controllers on this bus (default 1); two give the guest a can0/can1 pair on one bus.
    #[serde(default = "one")]
    pub controllers: u32,
    /// Host SocketCAN interface joined to the bus (QEMU `can-host-socketcan`), e.g. `"vcan0"`.
    #[serde(default)]
    pub host_interface: Option<String>,
}

/// A CAN controller model QEMU emulates (all PCI; SJA1000-based except CtucanPci).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CanController {
    /// Kvaser PCIcan-S, one SJA1000 channel (`kvaser_pci`, Linux `kvaser_pci`).
    #[default]
    KvaserPci,
    /// Advantech PCM-3680, two SJA1000 channels (`pcm3680_pci`, Linux `plx_pci`).
    Pcm3680Pci,
    /// MIOe-3680, two SJA1000 channels (`mioe3680_pci`, Linux `plx_pci`).
    Mioe3680Pci,
    /// CTU CAN FD, two channels (`ctucan_pci`, Linux `ctucanfd_pci`).
    CtucanPci,
}

/// What a VM boots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmBoot {
    /// Kernel image on the host (direct kernel boot).
    pub kernel: Option<PathBuf>,
    /// Initramfs on the host (needs `kernel`).
    pub initrd: Option<PathBuf>,
    /// Kernel command line (needs `kernel`).
    pub cmdline: Option<String>,
    /// Disk image on the host (raw, or qcow2 by its `.qcow2` name), served by I/O thread 1.
    pub disk: Option<PathBuf>,
}

/// One vCPU's placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcpuPin {
    /// vCPU index (the `n` of `CPU n/KVM`).
    pub vcpu: u32,
    /// Host CPU to pin it to (must be a realtime CPU).
    pub cpu: u32,
    /// Scheduling policy (default Fifo).
    #[serde(default = "fifo")]
    pub policy: Policy,
    /// Priority 1..=99 for Fifo/Rr (default 50).
    #[serde(default = "prio50")]
    pub priority: u8,
}

fn fifo() -> Policy {
    Policy::Fifo
}
fn other() -> Policy {
    Policy::Other
}
fn one() -> u32 {
    1
}
fn prio50() -> u8 {
    50
}
fn prio95() -> u8 {
    95
}
fn prio80() -> u8 {
    80
}
fn yes() -> bool {
    true
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn one_i64() -> i64 {
    1
}
fn one_f64() -> f64 {
    1.0
}
fn one_u8() -> u8 {
    1
}

/// Guest-side settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Guest {
    /// Latency probe settings.
    pub probe: Probe,
    /// CPUs the guest should have isolated (checked by `rt-guest check`).
    pub realtime_cpus: Option<CpuSet>,
    /// Guest halt polling in ns (`/sys/module/haltpoll/parameters/guest_halt_poll_ns`).
    pub guest_halt_poll_ns: Option<u64>,
    /// Disable guest cpuidle states with exit latency above this (us).
    pub max_exit_latency_us: Option<u32>,
    /// Priority and affinity of IRQ threads.
    pub irq_threads: Vec<IrqThread>,
}

/// The latency probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Probe {
    /// CPUs to measure, one thread each (default `"1"`).
    pub cpus: CpuSet,
    /// Period in us (default 1000).
    pub interval_us: u32,
    /// Priority 1..=99 (default 95).
    pub priority: u8,
    /// Policy (default Fifo).
    pub policy: Policy,
    /// Run time (default 60 s), e.g. `"60s"`, `"10m"`.
    pub duration: HumanDuration,
    /// Stop and mark the ftrace trace when a sample exceeds this many us.
    pub breaktrace_us: Option<u32>,
    /// Hold `/dev/cpu_dma_latency` at 0 while measuring (default true).
    pub dma_latency: bool,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            cpus: CpuSet::from_cpus([1]),
            interval_us: 1000,
            priority: prio95(),
            policy: Policy::Fifo,
            duration: HumanDuration(Duration::from_secs(60)),
            breaktrace_us: None,
            dma_latency: true,
        }
    }
}

/// An IRQ thread setting in the guest (`irq/NN-name`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrqThread {
    /// Matches IRQ threads whose name ends with `-<name>` (e.g. `"can1"` for `irq/24-can1`).
    pub name: String,
    /// FIFO priority 1..=99.
    #[serde(default)]
    pub priority: Option<u8>,
    /// CPUs to pin the thread to.
    #[serde(default)]
    pub cpus: Option<CpuSet>,
}

/// A CAN bus and its ECUs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Can {
    /// Nominal (arbitration) bitrate in bit/s.
    pub bitrate: u32,
    /// CAN FD data-phase bitrate in bit/s. Required when any message is FD with BRS.
    #[serde(default)]
    pub data_bitrate: Option<u32>,
    /// Interface the ECUs send on.
    pub tx: String,
    /// Interface the receiver listens on (may equal `tx`: then own frames are looped back).
    pub rx: String,
    /// Pace transmissions at the bus rate, so buses without bit timing (vcan, QEMU) carry
    /// a real bus's load and queuing (default true).
    #[serde(default = "yes")]
    pub pace: bool,
    /// Error frames per second assumed by the response-time analysis (default 0).
    #[serde(default)]
    pub error_rate_per_s: f64,
    /// The ECUs.
    pub ecus: Vec<Ecu>,
}

/// One simulated ECU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ecu {
    /// ECU name.
    pub name: String,
    /// CPU its sender thread runs on (default: any non-probe CPU).
    #[serde(default)]
    pub cpu: Option<u32>,
    /// Sender thread FIFO priority (default 80).
    #[serde(default = "prio80")]
    pub priority: u8,
    /// Messages it sends.
    pub messages: Vec<Message>,
}

/// Frame format of a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrameKind {
    /// Classic CAN 2.0.
    #[default]
    Classic,
    /// CAN FD without bit-rate switch.
    Fd,
    /// CAN FD with bit-rate switch (data phase at `data_bitrate`).
    FdBrs,
}

/// One message: periodic, or sporadic (event-driven) with a minimum inter-arrival time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Name (default `0x<id>`).
    #[serde(default)]
    pub name: Option<String>,
    /// CAN identifier.
    pub id: u32,
    /// 29-bit extended identifier (default false: 11-bit).
    #[serde(default)]
    pub extended: bool,
    /// Frame format (default Classic).
    #[serde(default)]
    pub kind: FrameKind,
    /// Payload bytes: 0..=8 for classic CAN; 0..=8, 12, 16, 20, 24, 32, 48 or 64 for FD.
    pub len: u8,
    /// Period in ms; for a sporadic message the minimum time between two releases.
    pub period_ms: f64,
    /// Event-driven (default false): released at most once per `period_ms` (the minimum
    /// inter-arrival time, e.g. a DBC's `GenMsgDelayTime`). The analysis takes `period_ms`
    /// as its T, as for any sporadic task; can-sim releases it at that worst-case rate.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sporadic: bool,
    /// Release offset in us (default 0).
    #[serde(default)]
    pub offset_us: u64,
    /// Release jitter in us (default 0): random delay added to each release.
    #[serde(default)]
    pub jitter_us: u64,
    /// Deadline in us from release to reception (default: the period).
    #[serde(default)]
    pub deadline_us: Option<u64>,
    /// Signals laid out in the payload as a DBC says (empty: can-sim's own test payload,
    /// sequence number and release time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signals: Vec<Signal>,
    /// AUTOSAR E2E protection of the payload (alive counter and CRC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e: Option<E2e>,
}

impl Message {
    /// Names of the message's multiplexer switch signals, in order.
    pub fn multiplexors(&self) -> Vec<&str> {
        self.signals
            .iter()
            .filter(|s| s.multiplexor)
            .map(|s| s.name.as_str())
            .collect()
    }
}

/// Byte order of a signal (DBC `@1` / `@0`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ByteOrder {
    /// Intel (`@1`): `start_bit` is the least significant bit, bits count up.
    #[default]
    LittleEndian,
    /// Motorola (`@0`): `start_bit` is the most significant bit in DBC numbering (bit 7 of
    /// byte 0 is 7, the next less significant bit after bit 0 of a byte is bit 7 of the
    /// next byte).
    BigEndian,
}

/// How a signal's raw bits are read (DBC `+`/`-` and `SIG_VALTYPE_`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValueType {
    /// Unsigned integer (`+`).
    #[default]
    Unsigned,
    /// Two's complement integer (`-`).
    Signed,
    /// IEEE 754 single (`SIG_VALTYPE_ 1`, 32 bits).
    Float32,
    /// IEEE 754 double (`SIG_VALTYPE_ 2`, 64 bits).
    Float64,
}

/// When a multiplexed signal is present: its switch has one of these values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MuxCondition {
    /// The switch signal (default: the message's only `multiplexor` signal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<String>,
    /// Raw switch values, as inclusive ranges (`[(3, 3), (5, 7)]`).
    pub values: Vec<(u64, u64)>,
}

/// The values a signal takes, frame after frame (physical values unless said).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Generator {
    /// Always this physical value.
    Constant(f64),
    /// A raw counter: `start`, then `+ step` per frame, wrapping over the raw range.
    Counter {
        /// First raw value (default 0).
        #[serde(default)]
        start: u64,
        /// Raw increment per frame (default 1).
        #[serde(default = "one_i64")]
        step: i64,
    },
    /// A sawtooth from `from` to `to` over `period_ms` (by the frame's nominal release
    /// time), then again.
    Ramp {
        /// Physical value at the start of each ramp.
        from: f64,
        /// Physical value approached at its end.
        to: f64,
        /// Length of one ramp, ms.
        period_ms: f64,
    },
    /// These physical values in turn, one per frame.
    Cycle(Vec<f64>),
    /// The values this signal had in a candump log (frames with the message's id, decoded
    /// with this layout), in turn, one per frame.
    Log(PathBuf),
}

/// A signal in a message's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signal {
    /// Name, unique in the message.
    pub name: String,
    /// Start bit (see [`ByteOrder`] for its meaning).
    pub start_bit: u16,
    /// Length in bits, 1..=64.
    pub size: u8,
    /// Byte order (default LittleEndian).
    #[serde(default)]
    pub byte_order: ByteOrder,
    /// Value type (default Unsigned).
    #[serde(default)]
    pub value_type: ValueType,
    /// Physical = raw * factor + offset (default 1).
    #[serde(default = "one_f64")]
    pub factor: f64,
    /// See `factor` (default 0).
    #[serde(default)]
    pub offset: f64,
    /// Physical minimum (generated values are clamped to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Physical maximum (generated values are clamped to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Unit, for reports.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
    /// This signal is a multiplexer switch (DBC `M`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub multiplexor: bool,
    /// Present only for some switch values (DBC `m3`, `SG_MUL_VAL_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mux: Option<MuxCondition>,
    /// The values it takes (default: a multiplexor steps through the values its
    /// multiplexed signals use; any other signal sends raw 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Generator>,
}

impl Signal {
    /// An unsigned little-endian signal with factor 1, offset 0 and no range,
    /// multiplexing or generator: the defaults a profile gets when it says no more.
    pub fn new(name: &str, start_bit: u16, size: u8) -> Signal {
        Signal {
            name: name.to_string(),
            start_bit,
            size,
            byte_order: ByteOrder::LittleEndian,
            value_type: ValueType::Unsigned,
            factor: 1.0,
            offset: 0.0,
            min: None,
            max: None,
            unit: String::new(),
            multiplexor: false,
            mux: None,
            value: None,
        }
    }

    /// The payload bit positions (byte * 8 + bit, bit 0 the least significant of its byte)
    /// holding the raw value, from its least significant bit up. The caller checks them
    /// against the payload length.
    pub fn bit_positions(&self) -> Vec<u32> {
        let size = u32::from(self.size);
        let start = u32::from(self.start_bit);
        match self.byte_order {
            ByteOrder::LittleEndian => (start..start + size).collect(),
            ByteOrder::BigEndian => {
                // From the MSB at `start` down (bit 0 of a byte continues at bit 7 of the
                // next), then reversed to LSB first.
                let mut out = Vec::with_capacity(usize::from(self.size));
                let mut p = start;
                for i in 0..size {
                    out.push(p);
                    if i + 1 < size {
                        p = if p % 8 == 0 { p + 15 } else { p - 1 };
                    }
                }
                out.reverse();
                out
            }
        }
    }
}

/// An AUTOSAR E2E profile used on CAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum E2eProfile {
    /// Profile 1: CRC-8 SAE J1850 over the data id and the data, 4-bit counter 0..14.
    P01,
    /// Profile 2: CRC-8H2F over the data and one of 16 data ids chosen by the 4-bit
    /// counter 0..15.
    P02,
    /// Profile 5: CRC-16 CCITT-FALSE over the data and the 16-bit data id, 8-bit counter.
    P05,
    /// Profile 11: Profile 1's CRC and counter in the fixed CAN layout (modes Both and
    /// Nibble).
    P11,
}

/// How Profiles 1 and 11 put the 16-bit data id into the CRC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataIdMode {
    /// Both bytes, low first.
    #[default]
    Both,
    /// The low byte for even counters, the high byte for odd ones (Profile 1 only).
    Alt,
    /// The low byte only (Profile 1 only).
    Low,
    /// The low byte in the CRC, the high byte's low nibble sent in the frame.
    Nibble,
}

/// E2E protection of one message: the sender writes counter and CRC into every frame, the
/// receiver checks every frame and counts the outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct E2e {
    /// The profile.
    pub profile: E2eProfile,
    /// The data id (Profiles 1, 5, 11).
    #[serde(default)]
    pub data_id: u16,
    /// Profile 2: the 16 data ids, indexed by the counter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_id_list: Vec<u8>,
    /// Profiles 1 and 11: how the data id enters the CRC (default Both).
    #[serde(default)]
    pub data_id_mode: DataIdMode,
    /// Bit offset of the E2E header in the payload, a multiple of 8 (default 0). Profiles
    /// 1/11: CRC byte, then counter in the low nibble of the next byte (data id nibble in
    /// its high nibble); Profile 5: CRC (2 bytes, little-endian), then the counter byte;
    /// Profile 2: fixed at 0.
    #[serde(default)]
    pub offset_bits: u16,
    /// Largest counter step still accepted as "some lost" (default 1).
    #[serde(default = "one_u8")]
    pub max_delta_counter: u8,
    /// No valid frame for this long is a timeout, ms (default: period + deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<f64>,
}

/// ASIL (ISO 26262-9) or QM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Asil {
    /// Quality managed.
    QM,
    /// ASIL A.
    A,
    /// ASIL B.
    B,
    /// ASIL C.
    C,
    /// ASIL D.
    D,
}

impl fmt::Display for Asil {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Asil::QM => f.write_str("QM"),
            other => write!(f, "ASIL {other:?}"),
        }
    }
}

/// What a requirement measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Metric {
    /// Probe wakeup latency at a percentile (100.0 = max), per CPU (all CPUs when absent).
    ProbeLatency {
        /// Percentile, 0 < p <= 100.
        percentile: f64,
        /// Restrict to one guest CPU.
        #[serde(default)]
        cpu: Option<u32>,
    },
    /// Probe missed periods (count bound).
    ProbeMissed,
    /// Busy-loop gap (`rt-guest oslat`, `oslat.json`) at a percentile (100.0 = max), per
    /// CPU (all CPUs when absent).
    OslatLatency {
        /// Percentile, 0 < p <= 100.
        percentile: f64,
        /// Restrict to one guest CPU.
        #[serde(default)]
        cpu: Option<u32>,
    },
    /// Hardware/firmware latency on the host (`rt-host hwlat`, `hwlat.json`): the largest
    /// gap the hwlat detector saw (it reports only gaps above its threshold, so the
    /// threshold must not exceed the bound).
    HwlatLatency,
    /// CAN reception latency (release -> kernel RX timestamp) at a percentile, for one
    /// message id or all messages.
    CanLatency {
        /// Percentile, 0 < p <= 100.
        percentile: f64,
        /// Message id; all messages when absent.
        #[serde(default)]
        id: Option<u32>,
    },
    /// CAN inter-arrival jitter against the period at a percentile.
    CanJitter {
        /// Percentile.
        percentile: f64,
        /// Message id; all when absent.
        #[serde(default)]
        id: Option<u32>,
    },
    /// Deadline misses (count bound), for one message or all.
    CanDeadlineMisses {
        /// Message id; all when absent.
        #[serde(default)]
        id: Option<u32>,
    },
    /// Lost frames (count bound), for one message or all.
    CanLoss {
        /// Message id; all when absent.
        #[serde(default)]
        id: Option<u32>,
    },
    /// Bus load in percent (bound in percent).
    BusLoad,
    /// Analytic worst-case response time slack (deadline - WCRT) must be at least the bound (us).
    WcrtSlack {
        /// Message id; all when absent.
        #[serde(default)]
        id: Option<u32>,
    },
    /// E2E-protected frames whose check did not pass (CRC error, repeated, wrong
    /// sequence; count bound), for one protected message or all.
    E2eErrors {
        /// Message id; all protected messages when absent.
        #[serde(default)]
        id: Option<u32>,
    },
    /// E2E timeouts: times no valid frame of a protected message came within its E2E
    /// timeout (count bound), for one message or all.
    E2eTimeouts {
        /// Message id; all protected messages when absent.
        #[serde(default)]
        id: Option<u32>,
    },
}

/// A timing requirement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// Requirement id (e.g. `TSR-RT-001`), unique in the profile.
    pub id: String,
    /// ASIL.
    pub asil: Asil,
    /// Requirement text.
    pub text: String,
    /// What is measured.
    pub metric: Metric,
    /// Bound in us for time metrics (latency, jitter; a minimum for WcrtSlack).
    #[serde(default)]
    pub bound_us: Option<f64>,
    /// Bound for count and percent metrics (misses, loss, bus load).
    #[serde(default)]
    pub bound: Option<f64>,
}

/// A duration written as text in profiles (`"60s"`, `"10m"`, `"1h 30m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}
