#!/usr/bin/env bash
# fuzz/bundle.sh RUN_DIR... > NAME.bundle: run directories as one input of the
# run_record fuzz target (format: fuzz/src/run_record.rs). The manifest comes first, then
# every other regular file; logs (*.log) are cut to their first 20 lines, which the
# target's manifest fix-up allows (it rehashes every file of the bundle).
set -euo pipefail
n=0
for run in "$@"; do
  [ -f "$run/manifest.json" ] || { echo "bundle.sh: $run has no manifest.json" >&2; exit 2; }
  [ "$n" = 0 ] || printf '=== @next\n'
  n=$((n + 1))
  printf '=== manifest.json\n'
  cat "$run/manifest.json"
  printf '\n'
  (cd "$run" && find . -type f ! -name manifest.json | sed 's|^\./||' | LC_ALL=C sort) |
    while IFS= read -r f; do
      printf '=== %s\n' "$f"
      case "$f" in
        *.log) head -n 20 "$run/$f" ;;
        *) cat "$run/$f" ;;
      esac
      printf '\n'
    done
done
