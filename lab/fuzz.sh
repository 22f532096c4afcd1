#!/usr/bin/env bash
# lab/fuzz.sh [TARGET...]: the fuzz step of lab/test.sh (docs/fuzzing.md). Builds the
# cargo-fuzz targets in fuzz/ with the nightly toolchain, or the stable one with
# RUSTC_BOOTSTRAP=1 where no nightly is installed (libFuzzer, AddressSanitizer, debug
# assertions and overflow checks on), replays every seed and every regression input
# (fuzz/regressions: the hostile inputs of issue 17), then fuzzes each target for
# RTVIRT_FUZZ_SECONDS (default 20) from its seeds. A crash, an abort, a hang (an input
# running over 10 s), or more than 2 GiB (one allocation or the resident set) fails the
# step; the input that did it is kept under fuzz/artifacts/TARGET/ and its path printed.
# Other targets still run; the step fails at the end.
# lab/fuzz.sh --check: only compile the fuzz workspace (lab/test.sh does it right after
# clippy, which does not see fuzz/, so a break there fails in minutes, not at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${RTVIRT_FUZZ_SECONDS:-20}"
all=(profile canlog dbc hist run_record kernel_text cyclictest journal)
targets=("${all[@]}")
[ "$#" = 0 ] || targets=("$@")
cargo_fuzz_version=0.13.2
limits=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048)
t0=$(date +%s)

# cargo-fuzz passes -Z flags (sanitizer, coverage): nightly, or stable told to accept them
# (its AddressSanitizer runtime ships with it; the machine may have only one toolchain).
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  tc=+nightly
else
  tc=+stable
  export RUSTC_BOOTSTRAP=1
  echo "lab/fuzz.sh: no nightly toolchain: stable with RUSTC_BOOTSTRAP=1"
fi
if [ "${1:-}" = --check ]; then
  echo "== cargo $tc check --manifest-path fuzz/Cargo.toml"
  exec cargo "$tc" check --quiet --manifest-path fuzz/Cargo.toml --all-targets
fi
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]; then
  echo "== cargo install cargo-fuzz $cargo_fuzz_version"
  cargo install --locked --quiet "cargo-fuzz@$cargo_fuzz_version"
fi

echo "== cargo $tc fuzz build (${targets[*]})"
cargo "$tc" fuzz build -O --debug-assertions
bin=fuzz/target/x86_64-unknown-linux-gnu/release
t_build=$(date +%s)

# Scratch space for the targets (run directories, journals) and the assembled seeds, on
# tmpfs when there is one; libFuzzer exits without running destructors, so it goes here.
shm=/dev/shm
[ -d "$shm" ] && [ -w "$shm" ] || shm="${TMPDIR:-/tmp}"
work="$(mktemp -d "$shm/rtvirt-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export TMPDIR="$work/tmp"
mkdir -p "$TMPDIR"

# Seeds: fuzz/seeds/TARGET, the fixtures the crates' own tests read, and the regressions.
seeds_of() {
  case "$1" in
    profile) ls profiles/*.ron profiles/tests/fixtures/*/*.ron ;;
    dbc) ls can-sim/tests/fixtures/*.dbc ;;
    cyclictest) ls rt-guest/tests/fixtures/*.txt ;;
    kernel_text) ls rt-sys/tests/fixtures/*.txt ;;
  esac
  find "fuzz/seeds/$1" "fuzz/regressions/$1" -type f ! -name README.md 2>/dev/null || true
}

failed=()
report() { # target, log, what
  local t="$1" log="$2"
  failed+=("$t")
  echo "!! $t: $3" >&2
  grep -E 'panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY|Test unit written|Base64' "$log" | head -20 >&2 || true
  for a in $(grep -o 'Test unit written to [^ ]*' "$log" | awk '{print $5}'); do
    echo "!! $t: crashing input kept in $a; reproduce: cargo $tc fuzz run $t $a" >&2
  done
}

for t in "${targets[@]}"; do
  mkdir -p "fuzz/artifacts/$t" "fuzz/corpus/$t" "$work/seeds/$t"
  seeds_of "$t" | while IFS= read -r f; do cp "$f" "$work/seeds/$t/$(echo "$f" | tr / _)"; done
  log="fuzz/artifacts/$t.log"
  n_seeds=$(ls "$work/seeds/$t" | wc -l)
  # Every seed and regression input once, each by name, so a failing one is the artifact.
  if ! "$bin/$t" "${limits[@]}" -artifact_prefix="fuzz/artifacts/$t/" "$work/seeds/$t"/* >"$log.replay" 2>&1; then
    report "$t" "$log.replay" "a seed or regression input fails (log $log.replay)"
    continue
  fi
  if ! "$bin/$t" "${limits[@]}" -max_total_time="$secs" -print_final_stats=1 \
      -artifact_prefix="fuzz/artifacts/$t/" "fuzz/corpus/$t" "$work/seeds/$t" >"$log" 2>&1; then
    report "$t" "$log" "fuzzing found a failure (log $log)"
    continue
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
  echo "ok $t: $n_seeds seeds replayed, $runs runs in ${secs}s ($rate exec/s, peak RSS ${rss} MB)"
done

t_end=$(date +%s)
echo "fuzz step: build $((t_build - t0)) s, fuzzing $((t_end - t_build)) s, total $((t_end - t0)) s"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "lab/fuzz.sh: failed: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
