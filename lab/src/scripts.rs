//! The shell the lab runs in the guest: CAN interfaces up (iproute2), the rtvirt tools'
//! command lines, and a candump capture bracketed by marker frames.

use crate::initramfs::GUEST_SHARE;

/// The extended id of the marker frames that bracket a candump capture.
pub const MARKER_ID: &str = "1FFFFFF0";

/// Where the guest keeps its run directories until they are copied to the share.
pub const GUEST_RUNS: &str = "/tmp/runs";

/// The guest tools' command lines for one profile.
#[derive(Debug, Clone)]
pub struct GuestSteps<'a> {
    /// The profile as the guest finds it (a bundled name or a path in the image).
    pub profile: &'a str,
    /// `rt-guest probe --duration`.
    pub probe_duration: &'a str,
    /// `can-sim run --duration`.
    pub can_duration: &'a str,
}

impl GuestSteps<'_> {
    /// CAN interfaces `tx`, `rx` and `vcan0` up.
    pub fn interfaces(&self, tx: &str, rx: &str, bitrate: u32) -> String {
        interfaces_script(&[tx, rx, "vcan0"], bitrate)
    }

    /// `rt-guest check --json`, kept in the runs directory.
    pub fn check(&self) -> String {
        format!("mkdir -p {GUEST_RUNS} && rt-guest check --json > {GUEST_RUNS}/guest-check.json; rc=$?; cat {GUEST_RUNS}/guest-check.json; exit $rc")
    }

    /// `rt-guest probe` into `run`.
    pub fn probe(&self, run: &str) -> String {
        format!(
            "rt-guest probe --profile {} --duration {} --out {run}",
            self.profile, self.probe_duration
        )
    }

    /// can-sim from `tx` to `rx` with candump on `rx` as an independent receiver.
    pub fn can_run(&self, tx: &str, rx: &str, run: &str) -> String {
        let log = format!(
            "{GUEST_RUNS}/candump-{}.log",
            run.rsplit('/').next().unwrap_or("run")
        );
        let sim = format!(
            "can-sim run {} --tx {tx} --rx {rx} --duration {} --out {run}",
            self.profile, self.can_duration
        );
        capture_script(tx, rx, &log, &sim)
    }

    /// Copy `dmesg` and the runs to the share.
    pub fn copy_out(&self) -> String {
        format!(
            "dmesg > {GUEST_SHARE}/dmesg.txt; mkdir -p {GUEST_RUNS} {GUEST_SHARE}/runs && cp -r {GUEST_RUNS}/. {GUEST_SHARE}/runs/ && sync"
        )
    }
}

/// A guest script that runs `command` while `candump -L rx` logs into `log`. Marker frames
/// (extended id [`MARKER_ID`]) bracket the capture: the start marker is resent from `tx`
/// until candump logged it, so candump listens before `command` sends; the end marker is
/// awaited, so candump drained after it stopped. candump's socket gets a 4 MiB receive
/// buffer (`-r`, SO_RCVBUFFORCE as root): with the default one it dropped 1 of 2700 frames
/// once under nested TCG while can-sim's receiver got them all. Prints `candump_frames=N`
/// (markers excluded) and exits with `command`'s exit code.
pub fn capture_script(tx: &str, rx: &str, log: &str, command: &str) -> String {
    format!(
        r#"mkdir -p "$(dirname {log})"
log={log}
candump -L -r 4194304 {rx} > $log 2>/tmp/candump.err &
cd_pid=$!
i=0
until grep -q '{MARKER_ID}#5354415254' $log; do
    cansend {tx} {MARKER_ID}#5354415254 || true
    sleep 0.2; i=$((i + 1))
    [ $i -lt 100 ] || {{ echo "candump on {rx} never saw the start marker"; cat /tmp/candump.err; kill $cd_pid; exit 3; }}
done
{command}
rc=$?
i=0
cansend {tx} {MARKER_ID}#454E44
until grep -q '{MARKER_ID}#454E44' $log; do
    sleep 0.1; i=$((i + 1))
    [ $i -lt 200 ] || {{ echo "candump on {rx} never saw the end marker"; kill $cd_pid; exit 3; }}
done
kill $cd_pid
echo "candump_frames=$(grep ' {rx} ' $log | grep -vc '{MARKER_ID}#')"
exit $rc"#
    )
}

/// The shell lines that bring CAN interfaces up at `bitrate` (vcan ones are created).
pub fn interfaces_script(ifaces: &[&str], bitrate: u32) -> String {
    // busybox sh prefers its own `ip` applet, which knows no CAN: name iproute2's.
    let mut s = String::from("set -e\nIP=/usr/bin/ip\n");
    let mut seen: Vec<&str> = Vec::new();
    for &i in ifaces {
        if seen.contains(&i) {
            continue;
        }
        seen.push(i);
        if i.starts_with("vcan") {
            s.push_str(&format!(
                "$IP link show {i} >/dev/null 2>&1 || $IP link add {i} type vcan\n$IP link set {i} up\n"
            ));
        } else {
            s.push_str(&format!(
                "$IP link set {i} down\n$IP link set {i} type can bitrate {bitrate}\n$IP link set {i} up\n"
            ));
        }
    }
    s.push_str("$IP -details link show\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: GuestSteps<'static> = GuestSteps {
        profile: "lab",
        probe_duration: "15s",
        can_duration: "10s",
    };

    #[test]
    fn can_script_brackets_the_capture_with_markers() {
        let s = G.can_run("can0", "can1", "/tmp/runs/run-lab-can");
        let start = s.find("#5354415254").unwrap();
        let sim = s
            .find("can-sim run lab --tx can0 --rx can1 --duration 10s --out /tmp/runs/run-lab-can")
            .unwrap();
        let end = s.find("#454E44").unwrap();
        assert!(start < sim && sim < end, "{s}");
        assert!(s.contains("candump -L -r 4194304 can1"));
        assert!(s.contains("/tmp/runs/candump-run-lab-can.log"));
    }

    #[test]
    fn interfaces_script_sets_the_bitrate_once_per_interface() {
        let s = G.interfaces("can0", "can1", 500000);
        assert_eq!(s.matches("type can bitrate 500000").count(), 2);
        assert!(s.contains("$IP link add vcan0 type vcan"));
        assert_eq!(s.matches("link add vcan0").count(), 1);
        let v = G.interfaces("vcan0", "vcan0", 500000);
        assert!(!v.contains("bitrate"));
    }

    #[test]
    fn tool_command_lines() {
        assert_eq!(
            G.probe("/tmp/runs/r"),
            "rt-guest probe --profile lab --duration 15s --out /tmp/runs/r"
        );
        assert!(G
            .check()
            .contains("rt-guest check --json > /tmp/runs/guest-check.json"));
        assert!(G.copy_out().contains("cp -r /tmp/runs/. /lab/runs/"));
    }
}
