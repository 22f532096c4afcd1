#!/usr/bin/env bash
# Run a command holding the host lock that every host-tuning and lab test takes
# (testkit::host_lock, /tmp/rtvirt-host-tests.lock), e.g. a QEMU boot by hand or a whole
# `cargo test` run: the command's own tests then see RTVIRT_HOST_LOCK_HELD=1 and do not
# wait for the lock their parent holds.
set -euo pipefail
[ "$#" -gt 0 ] || { echo "usage: lab/host-lock.sh COMMAND [ARG...]" >&2; exit 2; }
export RTVIRT_HOST_LOCK_HELD=1
exec flock /tmp/rtvirt-host-tests.lock "$@"
