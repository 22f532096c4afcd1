//! `rt-host vm PROFILE [--vm NAME] --format libvirt|qemu|kubevirt [--explain]`: render
//! the VM definitions of a profile (see `rt_host::vmdef`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use rt_host::plan::Change;
use rt_host::vmdef::audit::{self, AuditOptions};
use rt_host::vmdef::{self, Accel, Def, Format, Variant};
use rt_sys::SysRoot;

/// Arguments of `rt-host vm`.
#[derive(Args, Debug, Clone)]
pub struct VmArgs {
    /// Profile file or bundled name (ecu, lab, canfd).
    pub profile: String,
    /// The VM to render (needed when the profile has several; KubeVirt renders all).
    #[arg(long, value_name = "NAME")]
    pub vm: Option<String>,
    /// What to render.
    #[arg(long, value_enum)]
    pub format: Format,
    /// The accelerator to render for: `tcg` substitutes the accelerator and the CPU model
    /// of the QEMU definition for a machine without usable KVM (each substitution named in
    /// the script, `--explain` and `--json`); everything else stays the profile's.
    #[arg(long, value_enum, default_value = "kvm")]
    pub accel: Accel,
    /// Print every choice with its reason and source instead of the definition.
    #[arg(long)]
    pub explain: bool,
    /// Print JSON: the text, the QEMU argv and every choice with its reason.
    #[arg(long)]
    pub json: bool,
    /// Write the definition to FILE (a symlink, device or `-` is written through).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Root of the /sys tree whose NUMA nodes fill in a missing host.vms[].numa_node.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

/// The VM audit options of `rt-host check`.
#[derive(Args, Debug, Clone, Default)]
pub struct AuditArgs {
    /// Audit this libvirt domain XML (`virsh dumpxml NAME > FILE`) against the profile's
    /// VM definition.
    #[arg(long, value_name = "FILE")]
    pub libvirt_xml: Option<PathBuf>,
    /// Audit the defined XML of this libvirt domain (`virsh dumpxml`); a QEMU that libvirt
    /// started is recognised without it.
    #[arg(long, value_name = "NAME")]
    pub libvirt_domain: Option<String>,
}

/// The VM audit items of `rt-host check`.
pub fn audit(profile: &str, host: &profiles::Host, root: &SysRoot, a: &AuditArgs) -> Vec<Change> {
    let opts = AuditOptions {
        libvirt_xml: a.libvirt_xml.clone(),
        libvirt_domain: a.libvirt_domain.clone(),
    };
    audit::items(profile, host, root, &opts)
}

/// Run `rt-host vm`.
pub fn run(a: &VmArgs) -> Result<u8> {
    let l =
        profiles::load(&a.profile).with_context(|| format!("Loading profile {:?}", a.profile))?;
    let name = l.profile.name.clone();
    let host = l
        .profile
        .host
        .ok_or(rt_host::TuneError::NoHost(name.clone()))?;
    let vms = profiles::host_vms(&host);
    let chosen = vmdef::select(&name, &vms, a.vm.as_deref(), a.format == Format::Kubevirt)?;
    let root = SysRoot::new(&a.root);
    let variant = Variant {
        accel: a.accel,
        ..Variant::default()
    };
    let mut rendered = Vec::new();
    for vm in chosen {
        let def = Def::new(&name, vm, &root);
        rendered.push(vmdef::render(&def, a.format, &variant).with_context(|| {
            format!(
                "Rendering VM {:?} of profile {name:?} for {:?}",
                vm.name, a.format
            )
        })?);
    }
    let out = if a.json {
        let v = if rendered.len() == 1 {
            serde_json::to_value(&rendered[0])?
        } else {
            serde_json::to_value(&rendered)?
        };
        serde_json::to_string_pretty(&v)? + "\n"
    } else if a.explain {
        rendered
            .iter()
            .map(vmdef::explain)
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        rendered
            .iter()
            .map(|r| r.text.as_str())
            .collect::<Vec<_>>()
            .join("---\n")
    };
    match &a.output {
        Some(p) => rt_sys::safefile::write_output(p, out.as_bytes())
            .with_context(|| format!("Writing {}", p.display()))?,
        None => rtvirt_cli::out!("{out}"),
    }
    Ok(0)
}
