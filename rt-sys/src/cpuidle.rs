//! CPU idle states (C-states) per CPU: `/sys/devices/system/cpu/cpuN/cpuidle/stateK/{name,latency,disable}`,
//! and the PM QoS latency request `/dev/cpu_dma_latency`.
//!
//! `latency` is the exit latency in microseconds; writing `1` to `disable` keeps the
//! governor from choosing that state on that CPU. A process holding `/dev/cpu_dma_latency`
//! open with a 32-bit value limits every CPU's idle states until it closes the file
//! (holding is [`crate::rt::DmaLatency`]; reading the current limit is here).
//! See <https://docs.kernel.org/admin-guide/pm/cpuidle.html> and
//! <https://docs.kernel.org/power/pm_qos_interface.html>.

use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::{SysError, SysRoot};

/// One idle state of one CPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleState {
    /// The CPU.
    pub cpu: u32,
    /// K of `stateK`.
    pub index: u32,
    /// `name` (e.g. `POLL`, `C1`, `haltpoll idle`).
    pub name: String,
    /// Exit latency in us (`latency`).
    pub latency_us: u64,
    /// True when `disable` reads 1.
    pub disabled: bool,
}

impl IdleState {
    /// The `disable` file of this state, relative to the root.
    pub fn disable_path(&self) -> String {
        disable_path(self.cpu, self.index)
    }
}

/// The `disable` file of state `index` on `cpu`, relative to the root.
pub fn disable_path(cpu: u32, index: u32) -> String {
    format!("{}/state{index}/disable", dir(cpu))
}

/// The cpuidle directory of `cpu` (relative to the root).
pub fn dir(cpu: u32) -> String {
    format!("{}/cpuidle", crate::cpulist::cpu_dir(cpu))
}

/// The index K of a `stateK` directory name.
pub fn state_index(dir_name: &str) -> Option<u32> {
    dir_name.strip_prefix("state")?.parse().ok()
}

/// Parse the `disable` file text (`0` or `1`).
pub fn parse_disable(text: &str) -> Result<bool, SysError> {
    match text.trim() {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(SysError::Parse {
            what: "cpuidle disable".into(),
            detail: format!("expected 0 or 1, found {other:?}"),
        }),
    }
}

/// The idle states of `cpu`, by index. A CPU without a `cpuidle` directory (no cpuidle
/// driver) has none.
pub fn states(root: &SysRoot, cpu: u32) -> Result<Vec<IdleState>, SysError> {
    let dir = dir(cpu);
    if !root.exists(&dir) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for name in root.list(&dir)? {
        let Some(index) = state_index(&name) else {
            continue;
        };
        let base = format!("{dir}/{name}");
        out.push(IdleState {
            cpu,
            index,
            name: root.read_trim(format!("{base}/name"))?,
            latency_us: root.read_u64(format!("{base}/latency"))?,
            disabled: parse_disable(&root.read(format!("{base}/disable"))?)?,
        });
    }
    out.sort_by_key(|s| s.index);
    Ok(out)
}

/// The relative path of the PM QoS CPU latency device.
pub const DMA_LATENCY: &str = "dev/cpu_dma_latency";

/// Encode a latency limit as the device expects it: a native-endian 32-bit integer (us).
pub fn encode_dma_latency(us: u32) -> Result<[u8; 4], SysError> {
    let v = i32::try_from(us).map_err(|_| SysError::Parse {
        what: DMA_LATENCY.into(),
        detail: format!("latency {us} us out of range"),
    })?;
    Ok(v.to_ne_bytes())
}

/// Decode what reading `/dev/cpu_dma_latency` gives: the current effective limit (us).
pub fn decode_dma_latency(bytes: &[u8]) -> Result<i32, SysError> {
    let arr: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| SysError::Parse {
            what: DMA_LATENCY.into(),
            detail: format!("expected 4 bytes, got {}", bytes.len()),
        })?;
    Ok(i32::from_ne_bytes(arr))
}

/// The current system-wide CPU latency limit in us (`/dev/cpu_dma_latency`).
pub fn dma_latency(root: &SysRoot) -> Result<i32, SysError> {
    let p = root.path(DMA_LATENCY);
    let mut f = std::fs::File::open(&p)
        .map_err(|e| SysError::from_io(root.display(DMA_LATENCY), Some(p.clone()), e))?;
    let mut buf = [0u8; 4];
    f.read_exact(&mut buf)
        .map_err(|e| SysError::from_io(root.display(DMA_LATENCY), Some(p), e))?;
    decode_dma_latency(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(root: &SysRoot, p: &str, v: &str) {
        let p = root.path(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, v).unwrap();
    }

    #[test]
    fn states_from_fake_tree_like_this_machine() {
        // This machine: cpu1 has state0 "POLL" (0 us) and state1 "haltpoll idle" (1 us).
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        let base = "sys/devices/system/cpu/cpu1/cpuidle";
        for (k, name, lat) in [(0, "POLL", "0"), (1, "haltpoll idle", "1")] {
            w(
                &root,
                &format!("{base}/state{k}/name"),
                &format!("{name}\n"),
            );
            w(
                &root,
                &format!("{base}/state{k}/latency"),
                &format!("{lat}\n"),
            );
            w(&root, &format!("{base}/state{k}/disable"), "0\n");
        }
        w(&root, &format!("{base}/current_driver"), "haltpoll\n");
        let s = states(&root, 1).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].name, "haltpoll idle");
        assert_eq!(s[1].latency_us, 1);
        assert!(!s[1].disabled);
        assert_eq!(
            s[1].disable_path(),
            "sys/devices/system/cpu/cpu1/cpuidle/state1/disable"
        );
        assert!(states(&root, 7).unwrap().is_empty());
        let e = (parse_disable("2")).unwrap_err().to_string();
        assert!(e.contains("expected 0 or 1, found \"2\""), "{e}");
    }

    #[test]
    fn dma_latency_encoding() {
        let b = encode_dma_latency(0).unwrap();
        assert_eq!(decode_dma_latency(&b).unwrap(), 0);
        assert_eq!(
            decode_dma_latency(&encode_dma_latency(2_000_000_000).unwrap()).unwrap(),
            2_000_000_000
        );
        let e = (encode_dma_latency(u32::MAX)).unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
        let e = (decode_dma_latency(&[1, 2])).unwrap_err().to_string();
        assert!(e.contains("expected 4 bytes, got 2"), "{e}");
    }
}
