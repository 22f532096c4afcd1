//! The host's view of the tuned probe (docs/host-trace.md): before the probe the guest
//! starts `rt-guest clock-echo` on the virtio-9p share, and this machine starts
//! `rt-host trace --clock-dir` on the same directory, which measures the guest's clock
//! offset, records the vCPU threads' scheduling through its own tracefs instance, and
//! measures the offset again at the end. The probe starts once the trace records; the
//! trace's run directory goes to the report with the guest's runs, so the report has its
//! "Host view". The trace runs only while the host is tuned (after `rt-host setup`, before
//! `rt-host revert`); on any failure, panic or interruption it is stopped with SIGINT (its
//! instance removed) before the host is reverted.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::flow::guest::{AroundProbe, GuestRun};
use crate::initramfs::GUEST_SHARE;
use crate::qemu::tail;
use crate::summary::Step;

/// The host trace's run directory (beside the guest's runs in `OUT/runs`).
pub const RUN_HOST: &str = "run-lab-host";
/// The clock exchange's directory in the share.
pub const CLOCK_DIR: &str = "clock";
/// Name of the flow step (`Summary::step`).
pub const STEP: &str = "host: rt-host trace";
/// The trace goes on this long after the probe's nominal end (the guest tool's start-up
/// and its writing of the record: a 15 s probe step took 15.6 s here).
const MARGIN: Duration = Duration::from_secs(3);
/// How long the trace may take to start recording (its first clock exchange waits up to
/// 60 s for the guest's side).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long it may take to stop after SIGINT (the end exchange waits up to 5 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// What to run: `rt-host trace` for one VM.
#[derive(Debug, Clone)]
pub struct TraceSpec {
    /// The `rt-host` binary.
    pub bin: PathBuf,
    /// Profile name or path.
    pub profile: String,
    /// The VM's QEMU pid.
    pub vm_pid: u32,
    /// CPUs with every switch recorded (the profile's realtime CPUs), else `auto`.
    pub cpus: Option<String>,
    /// The probe's duration: the trace records that plus a margin.
    pub probe: Duration,
    /// The share as this machine sees it.
    pub share: PathBuf,
    /// The run directory to write (`OUT/run-lab-host`).
    pub out: PathBuf,
    /// Its output (`OUT/host-trace.log`).
    pub log: PathBuf,
}

impl TraceSpec {
    /// The recording time.
    pub fn duration(&self) -> Duration {
        self.probe + MARGIN
    }

    /// The command line.
    pub fn argv(&self) -> Vec<String> {
        let mut a = vec![
            self.bin.to_string_lossy().into_owned(),
            "trace".into(),
            self.profile.clone(),
            "--vm-pid".into(),
            self.vm_pid.to_string(),
            "--duration".into(),
            format!("{}s", self.duration().as_secs()),
            "--clock-dir".into(),
            self.share.join(CLOCK_DIR).to_string_lossy().into_owned(),
            "--out".into(),
            self.out.to_string_lossy().into_owned(),
        ];
        if let Some(c) = &self.cpus {
            a.extend(["--cpus".into(), c.clone()]);
        }
        a
    }

    /// The guest's side, started in the background on the guest's CPU 0 (the housekeeping
    /// CPU: the probe measures CPU 1); it ends when the trace writes `stop`, or after a
    /// timeout well past the trace.
    pub fn echo_script(&self) -> String {
        let timeout = self.duration() + Duration::from_secs(180);
        format!(
            "dir={GUEST_SHARE}/{CLOCK_DIR}\nmkdir -p $dir && rm -f $dir/req $dir/resp $dir/stop\n\
             ts=; command -v taskset >/dev/null && ts='taskset -c 0'\n\
             $ts rt-guest clock-echo $dir --timeout {}s > /tmp/clock-echo.log 2>&1 &\n\
             echo clock-echo pid $!",
            timeout.as_secs()
        )
    }
}

/// A running `rt-host trace`; stopped (SIGINT, then SIGKILL) when dropped.
pub struct HostTrace {
    child: Option<Child>,
    started: Instant,
    log: PathBuf,
}

impl HostTrace {
    /// Start it, in its own process group (a Ctrl-C in the terminal reaches the flow,
    /// which stops the trace itself), its output into `spec.log`.
    pub fn start(spec: &TraceSpec) -> Result<HostTrace> {
        use std::os::unix::process::CommandExt;
        let argv = spec.argv();
        eprintln!("lab: host: {}", argv.join(" "));
        let log =
            File::create(&spec.log).with_context(|| format!("Creating {}", spec.log.display()))?;
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("Running {}", spec.bin.display()))?;
        Ok(HostTrace {
            child: Some(child),
            started: Instant::now(),
            log: spec.log.clone(),
        })
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until its tracefs instance records (`tracing_on` 1), i.e. the first clock
    /// exchange is done; an error when it exits first, the flow is interrupted or
    /// `timeout` passes.
    pub fn wait_recording(&mut self, timeout: Duration) -> Result<()> {
        let pid = self.pid().context("rt-host trace is not running")?;
        let on = format!(
            "instances/{}{pid}/tracing_on",
            rt_sys::tracefs::sched::INSTANCE_PREFIX
        );
        let deadline = Instant::now() + timeout;
        loop {
            crate::flow::check_interrupt()?;
            let fs = rt_sys::tracefs::Tracefs::find(&rt_sys::SysRoot::live());
            if fs.is_ok_and(|f| f.read(&on).is_ok_and(|t| t.trim() == "1")) {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                self.child = None;
                bail!(
                    "rt-host trace ended ({status}) before it recorded: {}",
                    tail(&self.output(), 10)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "rt-host trace did not start recording in {} s: {}",
                    timeout.as_secs(),
                    tail(&self.output(), 10)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait for it to end by itself (at most `timeout`, then SIGINT); the step it makes.
    /// It passes when it exited 0 and wrote `host-trace.json` into `out`.
    pub fn finish(mut self, timeout: Duration, out: &Path) -> Step {
        let deadline = Instant::now() + timeout;
        let mut rc = None;
        let mut stopped = false;
        while let Some(c) = self.child.as_mut() {
            if let Ok(Some(s)) = c.try_wait() {
                rc = s.code();
                self.child = None;
            } else if Instant::now() > deadline || crate::interrupted() {
                stopped = true;
                rc = self.stop();
            } else {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let written = out.join(record::HOST_TRACE).is_file();
        let mut note = tail(&self.output(), 12);
        if stopped {
            note = format!("stopped with SIGINT after {} s\n{note}", timeout.as_secs());
        }
        Step {
            name: STEP.into(),
            rc,
            secs: self.started.elapsed().as_secs_f64(),
            ok: rc == Some(0) && written && !stopped,
            note,
        }
    }

    /// SIGINT (it removes its instance and writes a partial record), SIGKILL when it does
    /// not end in time (then its instance is removed here); its exit code.
    fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).ok()?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        if let Ok(fs) = rt_sys::tracefs::Tracefs::find(&rt_sys::SysRoot::live()) {
            rt_sys::tracefs::sched::remove_stale(&fs);
        }
        None
    }
}

impl Drop for HostTrace {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The trace around the probe, as a [`GuestRun`] hook. A trace that cannot start or
/// fails is a failure of the flow (the report is still exported, without a host view).
pub struct TraceAround {
    spec: TraceSpec,
    running: Option<HostTrace>,
    /// The run directory, once the trace wrote it.
    pub run: Option<PathBuf>,
}

impl TraceAround {
    /// For `spec`.
    pub fn new(spec: TraceSpec) -> Self {
        TraceAround {
            spec,
            running: None,
            run: None,
        }
    }

    fn fail(gr: &mut GuestRun<'_>, step: Step) {
        gr.failures.push(format!(
            "host `rt-host trace` {}: {}",
            step.rc
                .map_or("did not finish".into(), |c| format!("exited {c}")),
            tail(&step.note, 6)
        ));
        gr.steps.push(step);
    }

    fn start(&mut self) -> Result<()> {
        fs::create_dir_all(self.spec.share.join(CLOCK_DIR))?;
        let mut t = HostTrace::start(&self.spec)?;
        t.wait_recording(START_TIMEOUT)?;
        self.running = Some(t);
        Ok(())
    }
}

impl AroundProbe for TraceAround {
    fn before(&mut self, gr: &mut GuestRun<'_>) -> Result<()> {
        let failed = gr.failures.len();
        gr.step(
            "rt-guest clock-echo (background)",
            &self.spec.echo_script(),
            Duration::from_secs(60),
            &[0],
        )?;
        if gr.failures.len() > failed {
            // Nothing would answer the clock exchange: no trace (the flow fails).
            return Ok(());
        }
        let t = Instant::now();
        if let Err(e) = self.start() {
            // The trace was stopped (dropped) already.
            self.running = None;
            let log = fs::read_to_string(&self.spec.log).unwrap_or_default();
            let note = match crate::interrupted() {
                true => format!(
                    "stopped with SIGINT while it started ({e:#})\n{}",
                    tail(&log, 10)
                ),
                false => format!("{e:#}"),
            };
            let step = Step {
                name: STEP.into(),
                rc: None,
                secs: t.elapsed().as_secs_f64(),
                ok: false,
                note,
            };
            Self::fail(gr, step);
            crate::flow::check_interrupt()?;
        }
        Ok(())
    }

    fn after(&mut self, gr: &mut GuestRun<'_>) -> Result<()> {
        let Some(t) = self.running.take() else {
            return Ok(());
        };
        let left = self.spec.duration().saturating_sub(t.started.elapsed());
        let step = t.finish(left + STOP_TIMEOUT, &self.spec.out);
        if step.ok {
            self.run = Some(self.spec.out.clone());
            gr.steps.push(step);
        } else {
            Self::fail(gr, step);
        }
        crate::flow::check_interrupt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TraceSpec {
        TraceSpec {
            bin: "/t/rt-host".into(),
            profile: "lab".into(),
            vm_pid: 42,
            cpus: Some("1".into()),
            probe: Duration::from_secs(15),
            share: "/o/share".into(),
            out: "/o/run-lab-host".into(),
            log: "/o/host-trace.log".into(),
        }
    }

    #[test]
    fn the_trace_covers_the_probe_on_the_share_the_guest_echoes_on() {
        let s = spec();
        assert_eq!(
            s.argv().join(" "),
            "/t/rt-host trace lab --vm-pid 42 --duration 18s --clock-dir /o/share/clock --out /o/run-lab-host --cpus 1"
        );
        let e = s.echo_script();
        assert!(e.contains("dir=/lab/clock\n"), "{e}");
        assert!(e.contains("rm -f $dir/req $dir/resp $dir/stop"), "{e}");
        assert!(
            e.contains("$ts rt-guest clock-echo $dir --timeout 198s > /tmp/clock-echo.log 2>&1 &"),
            "{e}"
        );
        let auto = TraceSpec { cpus: None, ..s };
        assert!(!auto.argv().contains(&"--cpus".to_string()));
    }

    #[test]
    fn a_trace_that_ends_before_recording_fails_with_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let s = TraceSpec {
            bin: "/bin/sh".into(),
            log: dir.path().join("log"),
            ..spec()
        };
        // `sh trace ...` fails at once: no script named `trace`.
        let mut t = HostTrace::start(&s).unwrap();
        let e = t
            .wait_recording(Duration::from_secs(10))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("rt-host trace ended (exit status: "), "{e}");
        assert!(e.contains("trace"), "{e}");
        let step = t.finish(Duration::from_secs(1), dir.path());
        assert!(!step.ok);
        assert_eq!(step.name, STEP);
    }

    #[test]
    fn a_trace_that_runs_too_long_is_stopped_with_sigint() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-rt-host");
        // Exits 0 on SIGINT, as rt-host trace does (with a partial record).
        fs::write(
            &script,
            "#!/bin/sh\ntrap 'echo interrupted; exit 0' INT\nwhile :; do sleep 0.05; done\n",
        )
        .unwrap();
        let mut perm = fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        fs::set_permissions(&script, perm).unwrap();
        let s = TraceSpec {
            bin: script,
            log: dir.path().join("log"),
            ..spec()
        };
        let t = HostTrace::start(&s).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let step = t.finish(Duration::from_millis(300), dir.path());
        assert_eq!(step.rc, Some(0));
        assert!(!step.ok, "a trace cut short does not pass");
        assert!(
            step.note.starts_with("stopped with SIGINT"),
            "{}",
            step.note
        );
        assert!(step.note.contains("interrupted"), "{}", step.note);
    }
}
