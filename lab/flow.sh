#!/usr/bin/env bash
# rtvirt's main command (README): the whole flow in the QEMU lab on the bundled `lab`
# profile. Installs what it needs (lab/setup.sh), builds the host tools, then runs
# `rtvirt-lab flow`, which boots the PREEMPT_RT guest, tunes this host with
# `rt-host setup lab`, runs rt-guest and can-sim in the guest, reverts the host and exports
# the evidence report. Arguments go to `rtvirt-lab flow` (e.g. --profile FILE,
# --kernel PATH --initrd PATH; see docs/lab.md). `--host-lab` runs it on a nested 4-CPU
# KVM host instead (profile hil): an outer QEMU VM tuned by rt-host, the guest under KVM
# in it, host-lab.json with every value rt-host touched.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "lab/flow.sh: run as root (it installs packages, tunes this host and boots QEMU)" >&2
  exit 2
fi

bash lab/setup.sh
target="${CARGO_TARGET_DIR:-$PWD/target}"
echo "lab/flow.sh: cargo build --release -p rt-host -p validation -p lab" >&2
cargo build --release -p rt-host -p validation -p lab
exec "$target/release/rtvirt-lab" flow "$@"
