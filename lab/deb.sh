#!/usr/bin/env bash
# Build rtvirt_VERSION_amd64.deb (dpkg-deb, no cargo-deb needed): the four tools in
# /usr/bin, their man pages and bash completions (generated from the CLI definitions), the
# systemd units of `rt-host hold` and `rt-host watch`, the bundled profiles in
# /usr/share/rtvirt/profiles and the licences.
#   bash lab/deb.sh [OUT_DIR]      (default: target/deb)
# RTVIRT_DEB_PROFILE=dev packs the debug builds (the test does; a release is the default).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/deb}"
profile="${RTVIRT_DEB_PROFILE:-release}"
tools=(rt-host rt-guest can-sim validation)
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
arch="$(dpkg --print-architecture)"

pkgs=()
for t in "${tools[@]}"; do pkgs+=(-p "$t"); done
cargo build --locked -q --profile "$profile" "${pkgs[@]}"
bin_dir="target/$([ "$profile" = dev ] && echo debug || echo "$profile")"

mkdir -p "$out"
stage="$(mktemp -d "$out/.stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
root="$stage/rtvirt"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/man/man1" \
  "$root/usr/share/bash-completion/completions" "$root/usr/lib/systemd/system" \
  "$root/usr/share/rtvirt/profiles" "$root/usr/share/doc/rtvirt"
gen="$stage/gen"
for t in "${tools[@]}"; do
  install -m 0755 "$bin_dir/$t" "$root/usr/bin/$t"
  mkdir -p "$gen/$t"
  "$bin_dir/$t" generate man "$gen/$t" >/dev/null
  "$bin_dir/$t" generate completions "$gen/$t" >/dev/null
  for m in "$gen/$t"/*.1; do gzip -9n -c "$m" > "$root/usr/share/man/man1/$(basename "$m").gz"; done
  install -m 0644 "$gen/$t/$t.bash" "$root/usr/share/bash-completion/completions/$t"
done
# The unit rt-host itself writes, pointed at the installed binary and the bundled ecu profile.
"$bin_dir/rt-host" hold ecu --systemd-unit --json |
  python3 -c 'import json,sys; sys.stdout.write(json.load(sys.stdin)["unit"])' |
  sed "s|^ExecStart=[^ ]*|ExecStart=/usr/bin/rt-host|" \
  > "$root/usr/lib/systemd/system/rtvirt-dma-latency.service"
"$bin_dir/rt-host" watch ecu --systemd-unit | grep -v '^#' |
  sed "s|^ExecStart=[^ ]*|ExecStart=/usr/bin/rt-host|" \
  > "$root/usr/lib/systemd/system/rtvirt-watch.service"
install -m 0644 profiles/*.ron "$root/usr/share/rtvirt/profiles/"
{
  echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: rtvirt"
  echo
  echo "Files: *"
  echo "License: MIT or Apache-2.0"
  echo
  cat LICENSE-MIT
} > "$root/usr/share/doc/rtvirt/copyright"
install -m 0644 LICENSE-APACHE "$root/usr/share/doc/rtvirt/LICENSE-APACHE"
size="$(du -sk "$root" | cut -f1)"
cat > "$root/DEBIAN/control" <<CONTROL
Package: rtvirt
Version: $version
Architecture: $arch
Maintainer: rtvirt maintainers <maintainers@users.noreply.example>
Installed-Size: $size
Depends: libc6
Section: admin
Priority: optional
Description: real-time KVM guests: tune the host, probe latency, simulate CAN, report evidence
 rt-host tunes a KVM host for real-time guests and reverts it from a journal;
 rt-guest measures wakeup latency in the guest (a cyclictest drop-in); can-sim
 simulates CAN ECUs on SocketCAN; validation turns runs into ISO 26262 timing
 evidence (HTML, Markdown, JSON, JUnit).
CONTROL
deb="$out/rtvirt_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz -b "$root" "$deb" >/dev/null
echo "$deb"
