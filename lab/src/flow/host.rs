//! The host side of a flow: `rt-host setup`, `check` and `revert` for the profile's VM,
//! run where the host is. In the 2-CPU lab that is this machine ([`Local`]); in the host
//! lab it is the outer VM, through its agent ([`crate::hostlab::outer::OuterExec`]). Each
//! command's JSON is kept in the flow's output directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::qemu::tail;
use crate::summary::Step;

/// What a command printed and how it ended.
#[derive(Debug, Clone, Default)]
pub struct CmdOut {
    /// Exit code (None when killed by a signal).
    pub rc: Option<i32>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

impl CmdOut {
    /// stdout and stderr as text.
    pub fn text(&self) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        )
    }
}

/// Where host commands run.
pub trait Exec {
    /// Run `argv` (the program first) and wait at most `timeout`.
    fn exec(&mut self, argv: &[String], timeout: Duration) -> Result<CmdOut>;
    /// Step-name prefix: `host` or `outer host`.
    fn place(&self) -> &'static str;
}

/// This machine. Commands run in their own process group, so a Ctrl-C in the terminal
/// cannot cut an `rt-host revert` in half (the flow notices the signal itself).
#[derive(Debug, Default)]
pub struct Local;

impl Exec for Local {
    fn exec(&mut self, argv: &[String], _timeout: Duration) -> Result<CmdOut> {
        use std::os::unix::process::CommandExt;
        let (bin, args) = argv.split_first().context("Empty command")?;
        eprintln!("lab: host: {}", argv.join(" "));
        let out = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .process_group(0)
            .output()
            .with_context(|| format!("Running {bin}"))?;
        Ok(CmdOut {
            rc: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    fn place(&self) -> &'static str {
        "host"
    }
}

/// `rt-host` for one profile and VM, with its journal directory.
#[derive(Debug, Clone)]
pub struct RtHost {
    /// The binary, as the executor finds it.
    pub bin: String,
    /// Profile name or path, as the executor finds it.
    pub profile: String,
    /// Journal directory, as the executor finds it.
    pub journal: String,
    /// The VM's QEMU pid (`--vm-pid`), when known.
    pub vm_pid: Option<u32>,
    /// Where the JSON outputs are kept (`host-setup.json`, ...).
    pub out: PathBuf,
}

/// How long an rt-host command may take (under TCG the outer host is slow).
const RT_HOST_TIMEOUT: Duration = Duration::from_secs(600);

impl RtHost {
    fn argv(&self, verb: &str, with_profile: bool) -> Vec<String> {
        let mut a = vec![self.bin.clone(), verb.to_string()];
        if with_profile {
            a.push(self.profile.clone());
        }
        a.extend([
            "--json".into(),
            "--journal-dir".into(),
            self.journal.clone(),
        ]);
        if let (true, Some(pid)) = (with_profile, self.vm_pid) {
            a.extend(["--vm-pid".into(), pid.to_string()]);
        }
        a
    }

    /// Run `rt-host VERB`, keep its stdout in `OUT/FILE`, and record the step; exit codes
    /// in `ok_rcs` pass, any other fails with the command's output.
    fn run(
        &self,
        exec: &mut dyn Exec,
        verb: &str,
        with_profile: bool,
        file: &str,
        ok_rcs: &[i32],
        steps: &mut Vec<Step>,
    ) -> Result<()> {
        let t = Instant::now();
        let out = exec.exec(&self.argv(verb, with_profile), RT_HOST_TIMEOUT)?;
        let path = self.out.join(file);
        fs::write(&path, &out.stdout).with_context(|| format!("Writing {}", path.display()))?;
        let ok = out.rc.is_some_and(|rc| ok_rcs.contains(&rc));
        steps.push(Step {
            name: format!("{}: rt-host {verb}", exec.place()),
            rc: out.rc,
            secs: t.elapsed().as_secs_f64(),
            ok,
            note: tail(&out.text(), 15),
        });
        if !ok {
            let what = if with_profile {
                format!("rt-host {verb} {}", self.profile)
            } else {
                format!("rt-host {verb}")
            };
            bail!("{what} exited {:?}: {}", out.rc, tail(&out.text(), 15));
        }
        Ok(())
    }

    /// `rt-host setup`: exit 0 (verified) or 1 (something not met, recorded) pass; an
    /// error fails the flow.
    pub fn setup(&self, exec: &mut dyn Exec, steps: &mut Vec<Step>) -> Result<()> {
        self.run(exec, "setup", true, "host-setup.json", &[0, 1], steps)
    }

    /// `rt-host check` into `OUT/FILE`: exit 0 or 1 (something differs) is a result.
    pub fn check(&self, exec: &mut dyn Exec, file: &str, steps: &mut Vec<Step>) -> Result<()> {
        self.run(exec, "check", true, file, &[0, 1], steps)
    }

    /// `rt-host plan --json` into `OUT/FILE` (it names the VM found and its threads).
    pub fn plan(&self, exec: &mut dyn Exec, file: &str, steps: &mut Vec<Step>) -> Result<()> {
        self.run(exec, "plan", true, file, &[0], steps)
    }

    /// `rt-host revert`: anything but exit 0 fails.
    pub fn revert(&self, exec: &mut dyn Exec, steps: &mut Vec<Step>) -> Result<()> {
        self.run(exec, "revert", false, "host-revert.json", &[0], steps)
    }
}

/// Where built binaries are looked for: `RTVIRT_LAB_BIN_DIR`, next to this executable,
/// `$CARGO_TARGET_DIR/release`, `ROOT/target/release`, then `PATH`.
pub fn find_host_binary(root: &Path, name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("RTVIRT_LAB_BIN_DIR") {
        dirs.push(d.into());
    }
    if let Some(d) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(d.clone());
        // Test binaries live in target/release/deps.
        if let Some(p) = d.parent() {
            dirs.push(p.to_path_buf());
        }
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(d).join("release"));
    }
    dirs.push(root.join("target/release"));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .or_else(|| crate::initramfs::find_program(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the commands; answers with a fixed exit code.
    struct Fake {
        seen: Vec<Vec<String>>,
        rc: i32,
    }

    impl Exec for Fake {
        fn exec(&mut self, argv: &[String], _: Duration) -> Result<CmdOut> {
            self.seen.push(argv.to_vec());
            Ok(CmdOut {
                rc: Some(self.rc),
                stdout: b"{\"ok\": true}".to_vec(),
                stderr: b"rt-host: message\n".to_vec(),
            })
        }
        fn place(&self) -> &'static str {
            "outer host"
        }
    }

    fn rt_host(dir: &Path) -> RtHost {
        RtHost {
            bin: "/usr/bin/rt-host".into(),
            profile: "hil".into(),
            journal: "/run/rt-host-lab".into(),
            vm_pid: Some(321),
            out: dir.to_path_buf(),
        }
    }

    #[test]
    fn setup_check_revert_command_lines_and_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let r = rt_host(dir.path());
        let mut exec = Fake {
            seen: vec![],
            rc: 1,
        };
        let mut steps = Vec::new();
        r.setup(&mut exec, &mut steps).unwrap();
        r.check(&mut exec, "host-check.json", &mut steps).unwrap();
        assert_eq!(
            exec.seen[0].join(" "),
            "/usr/bin/rt-host setup hil --json --journal-dir /run/rt-host-lab --vm-pid 321"
        );
        assert_eq!(steps[0].name, "outer host: rt-host setup");
        assert!(steps[0].ok, "exit 1 of setup is a recorded result");
        assert_eq!(
            fs::read_to_string(dir.path().join("host-check.json")).unwrap(),
            "{\"ok\": true}"
        );
        // Revert takes no profile and fails on anything but 0.
        let e = r.revert(&mut exec, &mut steps).unwrap_err().to_string();
        assert_eq!(
            exec.seen[2].join(" "),
            "/usr/bin/rt-host revert --json --journal-dir /run/rt-host-lab"
        );
        assert!(e.contains("rt-host revert exited Some(1)"), "{e}");
        assert!(!steps[2].ok);
    }

    #[test]
    fn setup_error_fails_with_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let mut exec = Fake {
            seen: vec![],
            rc: 2,
        };
        let mut steps = Vec::new();
        let e = rt_host(dir.path())
            .setup(&mut exec, &mut steps)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rt-host setup hil exited Some(2)"), "{e}");
        assert!(e.contains("rt-host: message"), "{e}");
    }
}
