//! The outer host as this machine drives it: its VM, its agent, shell in it, host
//! commands run in it ([`OuterExec`], so the flow's `rt-host` stages work unchanged), and
//! snapshots of its kernel state.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::flow::host::{CmdOut, Exec};
use crate::guest::{Agent, GuestInfo, Output};
use crate::hostlab::snapshot;
use crate::initramfs::GUEST_SHARE;
use crate::qemu::{tail, Vm};

/// The outer host: its QEMU on this machine and the agent in it.
pub struct Outer {
    /// The outer VM.
    pub vm: Vm,
    /// Its agent.
    pub agent: Agent,
    /// The share on this machine (the outer host's `/lab`).
    pub share: PathBuf,
    /// What it reported at boot.
    pub info: GuestInfo,
    exec_n: u32,
}

impl Outer {
    /// The outer host `vm`, up, with its agent on `share`.
    pub fn new(vm: Vm, share: &Path, info: GuestInfo) -> Outer {
        Outer {
            vm,
            agent: Agent::new(share),
            share: share.to_path_buf(),
            info,
            exec_n: 0,
        }
    }

    /// Run `script` in the outer host.
    pub fn sh(&mut self, script: &str, timeout: Duration) -> Result<Output> {
        self.agent.run(&mut self.vm, script, timeout)
    }

    /// Run `script` and fail unless it exits 0.
    pub fn sh_ok(&mut self, script: &str, timeout: Duration) -> Result<Output> {
        self.agent.run_ok(&mut self.vm, script, timeout)
    }

    /// Take snapshot `name` of the outer host's kernel state and write it as a tree under
    /// `dir/NAME`; returns that directory.
    pub fn snapshot(&mut self, name: &str, dir: &Path) -> Result<PathBuf> {
        self.sh_ok(
            &snapshot::script(GUEST_SHARE, name),
            Duration::from_secs(300),
        )
        .with_context(|| format!("Taking snapshot {name} in the outer host"))?;
        let file = self.share.join("snap").join(format!("{name}.txt"));
        let text =
            fs::read_to_string(&file).with_context(|| format!("Reading {}", file.display()))?;
        let snap = snapshot::parse(&text).with_context(|| format!("Parsing {}", file.display()))?;
        let tree = dir.join(name);
        if tree.exists() {
            fs::remove_dir_all(&tree).with_context(|| format!("Removing {}", tree.display()))?;
        }
        snap.write_tree(&tree)?;
        fs::remove_file(&file).ok();
        Ok(tree)
    }

    /// Copy directory `from` of the outer host to `to` on this machine (through the share).
    pub fn fetch_dir(&mut self, from: &str, to: &Path) -> Result<()> {
        let name = to
            .file_name()
            .context("destination has no name")?
            .to_string_lossy()
            .into_owned();
        let via = format!("{GUEST_SHARE}/fetch/{name}");
        self.sh_ok(
            &format!("rm -rf {via} && mkdir -p {GUEST_SHARE}/fetch && cp -r {from} {via} && sync"),
            Duration::from_secs(60),
        )?;
        if to.exists() {
            fs::remove_dir_all(to).with_context(|| format!("Removing {}", to.display()))?;
        }
        let local = self.share.join("fetch").join(&name);
        fs::rename(&local, to)
            .with_context(|| format!("Moving {} to {}", local.display(), to.display()))
    }
}

/// Quote one word for sh.
pub fn sh_quote(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// Host commands run in the outer host: stdout and stderr go to files in the share, so
/// JSON on stdout stays apart from messages on stderr.
pub struct OuterExec<'a>(pub &'a mut Outer);

impl Exec for OuterExec<'_> {
    fn exec(&mut self, argv: &[String], timeout: Duration) -> Result<CmdOut> {
        let o = &mut *self.0;
        o.exec_n += 1;
        let n = o.exec_n;
        let words: Vec<String> = argv.iter().map(|w| sh_quote(w)).collect();
        eprintln!("lab: outer host: {}", words.join(" "));
        let dir = format!("{GUEST_SHARE}/exec");
        let script = format!(
            "mkdir -p {dir}\n{} > {dir}/{n}.stdout 2> {dir}/{n}.stderr",
            words.join(" ")
        );
        let out = o.sh(&script, timeout)?;
        let read = |ext: &str| fs::read(o.share.join("exec").join(format!("{n}.{ext}")));
        let (stdout, stderr) = match (read("stdout"), read("stderr")) {
            (Ok(a), Ok(b)) => (a, b),
            _ => bail!(
                "`{}` left no output in the outer host: {}",
                words.join(" "),
                tail(&out.output, 5)
            ),
        };
        Ok(CmdOut {
            rc: Some(out.rc),
            stdout,
            stderr,
        })
    }

    fn place(&self) -> &'static str {
        "outer host"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_only_when_needed() {
        assert_eq!(sh_quote("/usr/bin/rt-host"), "/usr/bin/rt-host");
        assert_eq!(sh_quote("--journal-dir=/run/x"), "--journal-dir=/run/x");
        assert_eq!(sh_quote("ecu0,debug-threads=on"), "ecu0,debug-threads=on");
        assert_eq!(
            sh_quote("console=ttyS0 panic=-1"),
            "'console=ttyS0 panic=-1'"
        );
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }
}
