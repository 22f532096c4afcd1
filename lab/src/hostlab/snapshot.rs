//! Snapshots of the outer host's kernel state at one moment (before setup, tuned, after
//! revert): every file rt-host reads or writes there ([`rt_sys::tuned`]: sysctls, THP,
//! KSM, KVM parameters, IRQ affinities, cpuidle, the workqueue mask, hugepages, every
//! thread's `stat`, `status` and `cgroup`, the cgroup v2 cpuset files) and the cgroup
//! directories.
//!
//! The outer host prints them all with one busybox `head` (one process instead of one
//! `cat` per file, which under nested TCG takes seconds each hundred); this machine
//! parses that text ([`parse`]) and writes it as a tree ([`Snapshot::write_tree`]) that a
//! [`rt_sys::SysRoot`] reads like the live system. So the same readers judge all three
//! moments: `rt-host status --root SNAPSHOT` for every journalled value, and
//! [`crate::sched::vcpu_samples_in`] for the vCPU threads.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rt_sys::tuned::{CGROUP_FILES, CGROUP_ROOT, GLOBS, TRIGGERS};

/// The first line of a snapshot.
pub const MAGIC: &str = "rtvirt-lab snapshot 1";

/// The outer host's shell that writes snapshot `name` to `SHARE/snap/NAME.txt` (atomically:
/// a temporary name, then `mv`).
pub fn script(share: &str, name: &str) -> String {
    let files = GLOBS.join(" ");
    let cg = CGROUP_FILES
        .iter()
        .map(|f| format!("$d/{f}"))
        .collect::<Vec<_>>()
        .join(" ");
    let skip = TRIGGERS.join("|");
    let cgroup_root = CGROUP_ROOT;
    format!(
        r#"mkdir -p {share}/snap
out={share}/snap/{name}.txt
dirs=$(find {cgroup_root} -maxdepth 3 -type d)
cgfiles=""
for d in $dirs; do cgfiles="$cgfiles {cg}"; done
{{
    echo "{MAGIC}"
    for d in $dirs; do echo "dir $d"; done
    list=""
    for f in {files} $cgfiles; do
        case "$f" in {skip}) continue ;; esac
        [ -f "$f" ] && list="$list $f"
    done
    head -n 100000 $list 2>/dev/null
}} > $out.tmp
mv $out.tmp $out"#
    )
}

/// A parsed snapshot: directories and file contents by absolute path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Directories that existed (the cgroup tree).
    pub dirs: Vec<String>,
    /// File contents by path.
    pub files: BTreeMap<String, String>,
}

/// Parse what [`script`] wrote: the magic line, `dir PATH` lines, then busybox `head`
/// output (`==> PATH <==` before each file; a blank line before every header but the
/// first; a file that could not be read has no header).
pub fn parse(text: &str) -> Result<Snapshot> {
    let mut lines = text.split_inclusive('\n');
    match lines.next() {
        Some(l) if l.trim_end() == MAGIC => {}
        other => bail!("Not a snapshot (first line {other:?}, expected {MAGIC:?})"),
    }
    let mut snap = Snapshot::default();
    let mut current: Option<(String, String)> = None;
    for line in lines {
        let bare = line.strip_suffix('\n').unwrap_or(line);
        if let Some(path) = bare
            .strip_prefix("==> ")
            .and_then(|r| r.strip_suffix(" <=="))
        {
            if let Some((p, mut body)) = current.take() {
                // The blank line before this header belongs to head, not to the file.
                if body.ends_with('\n') {
                    body.pop();
                }
                snap.files.insert(p, body);
            }
            current = Some((path.to_string(), String::new()));
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
        } else if let Some(d) = bare.strip_prefix("dir ") {
            snap.dirs.push(d.to_string());
        } else if !bare.is_empty() {
            bail!("Snapshot line {bare:?} before the first file");
        }
    }
    if let Some((p, body)) = current {
        snap.files.insert(p, body);
    }
    Ok(snap)
}

impl Snapshot {
    /// Write the snapshot under `dir` as a tree (`dir/proc/...`, `dir/sys/...`).
    pub fn write_tree(&self, dir: &Path) -> Result<()> {
        for d in &self.dirs {
            let p = dir.join(d.trim_start_matches('/'));
            fs::create_dir_all(&p).with_context(|| format!("Creating {}", p.display()))?;
        }
        for (path, body) in &self.files {
            let p = dir.join(path.trim_start_matches('/'));
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("Creating {}", parent.display()))?;
            }
            fs::write(&p, body).with_context(|| format!("Writing {}", p.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // What busybox head printed on the outer host (shortened): a blank line before every
    // header but the first; THP's choice file; a file without a trailing newline.
    const TEXT: &str = "rtvirt-lab snapshot 1
dir /sys/fs/cgroup
dir /sys/fs/cgroup/rtvirt-rt
==> /proc/sys/kernel/sched_rt_runtime_us <==
950000

==> /sys/kernel/mm/transparent_hugepage/enabled <==
[always] madvise never

==> /proc/141/task/154/stat <==
154 (CPU 0/KVM) S 1 141 141 0 -1 4194368 0 0 0 0 0 0 0 0 20 0 4 0 1151 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 -1 1 0 0 0 0 0 0 0 0 0 0 0 0 0

==> /sys/fs/cgroup/rtvirt-rt/cgroup.threads <==

==> /tmp/noeol <==
abc";

    #[test]
    fn parses_head_output_into_files_and_dirs() {
        let s = parse(TEXT).unwrap();
        assert_eq!(s.dirs, ["/sys/fs/cgroup", "/sys/fs/cgroup/rtvirt-rt"]);
        assert_eq!(s.files["/proc/sys/kernel/sched_rt_runtime_us"], "950000\n");
        assert_eq!(
            s.files["/sys/kernel/mm/transparent_hugepage/enabled"],
            "[always] madvise never\n"
        );
        assert!(s.files["/proc/141/task/154/stat"].starts_with("154 (CPU 0/KVM) S"));
        assert_eq!(s.files["/sys/fs/cgroup/rtvirt-rt/cgroup.threads"], "");
        assert_eq!(s.files["/tmp/noeol"], "abc");
        assert_eq!(s.files.len(), 5);
    }

    #[test]
    fn the_tree_reads_like_the_live_system() {
        let s = parse(TEXT).unwrap();
        let dir = tempfile::tempdir().unwrap();
        s.write_tree(dir.path()).unwrap();
        let root = rt_sys::SysRoot::new(dir.path());
        assert_eq!(
            root.read_u64("proc/sys/kernel/sched_rt_runtime_us")
                .unwrap(),
            950000
        );
        assert!(root.exists("sys/fs/cgroup/rtvirt-rt"));
        let st = rt_sys::task::task_stat(&root, 141, 154).unwrap();
        assert_eq!((st.policy, st.rt_priority), (0, 0));
    }

    #[test]
    fn garbage_is_refused() {
        let e = parse("hello\n").unwrap_err().to_string();
        assert!(e.contains("Not a snapshot"), "{e}");
        let e = parse("rtvirt-lab snapshot 1\nstray\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"stray\" before the first file"), "{e}");
    }

    #[test]
    fn the_script_writes_atomically_into_the_share() {
        let s = script("/lab", "tuned");
        assert!(s.contains("out=/lab/snap/tuned.txt"));
        assert!(s.ends_with("mv $out.tmp $out"));
        assert!(s.contains("head -n 100000 $list"));
        assert!(s.contains("/proc/[0-9]*/task/[0-9]*/cgroup"));
        assert!(s.contains("$d/cpuset.cpus.partition"));
        assert!(
            s.contains("case \"$f\" in */stat_refresh|*/drop_caches|*/compact_memory) continue"),
            "{s}"
        );
    }
}
