//! `rt-sys`: the one place where rtvirt touches the kernel.
//!
//! Every read or write of `/sys`, `/proc` and `/dev` goes through a [`SysRoot`], so that
//! the tuning logic can be tested on a fake tree in a temp dir. Pure parsers for kernel
//! text formats live beside the readers (parse apart from reading). This is the only
//! crate of the workspace allowed to use `unsafe`; each block carries a `// SAFETY:` line.
#![allow(unsafe_code)]

pub mod cgroup;
pub mod cpufreq;
pub mod cpuidle;
pub mod cpulist;
pub mod daemon;
pub mod error;
pub mod hugepages;
pub mod irq;
pub mod irqthread;
pub mod journal;
pub mod kernel;
pub mod kvm;
pub mod libvirt;
pub mod net;
pub mod procmem;
pub mod qmp;
pub mod root;
pub mod rt;
pub mod safefile;
pub mod sched;
pub mod sysctl;
pub mod task;
pub mod threads;
pub mod tracefs;
pub mod tuned;

pub use cpulist::CpuSet;
pub use error::SysError;
pub use root::SysRoot;
