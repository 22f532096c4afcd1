#!/usr/bin/env bash
# Installs what the rtvirt lab needs on a Debian 12 host, as root, idempotently:
# QEMU, busybox-static, can-utils, rt-tests, stress-ng, cpio, iproute2, libvirt (daemon,
# virsh, virt-xml-validate) with a qemu.conf for root, Debian's PREEMPT_RT kernel
# (linux-image-rt-amd64, the guest's) and Debian's standard kernel (linux-image-amd64,
# the host lab's outer host), unpacked into lab/cache/.
# Running it again does nothing that is already done.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${RTVIRT_LAB_CACHE:-$here/cache}"
packages=(qemu-system-x86 busybox-static can-utils rt-tests stress-ng cpio iproute2 kmod xz-utils gzip libc6-dev
          libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libxml2-utils)

log() { printf 'lab/setup: %s\n' "$*" >&2; }
die() { printf 'lab/setup: error: %s\n' "$*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages with apt-get)"
command -v apt-get >/dev/null || die "apt-get not found: the lab needs a Debian-like host"

updated=0
apt_update() {
    if [ "$updated" = 0 ]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        updated=1
    fi
}

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt_update
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    log "packages already installed: ${packages[*]}"
fi

# libvirt for rt-host's VM-definition tests (they start libvirtd and virtlogd themselves,
# no systemd here): its state directories, the users Debian's libvirt expects, and a
# qemu.conf that runs QEMU as root without a security driver (none is loaded here).
mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/qemu /run/libvirt
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
id libvirt-qemu >/dev/null 2>&1 || useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
qemu_conf=/etc/libvirt/qemu.conf
if ! grep -q '^security_driver = "none"' "$qemu_conf" 2>/dev/null; then
    log "writing $qemu_conf (user/group root, security_driver none)"
    mkdir -p /etc/libvirt
    [ -f "$qemu_conf" ] && cp "$qemu_conf" "$qemu_conf.rtvirt-orig"
    printf 'user = "root"\ngroup = "root"\nsecurity_driver = "none"\n' > "$qemu_conf"
fi

# Fetch and unpack a Debian kernel: metapackage $1 depends on the real, versioned image
# package matching the regex $2; it is unpacked into $cache/kernel/PKG_VERSION with its
# modules.dep made, and $cache/$3 points at it. Nothing is done when it is already there.
fetch_kernel() {
    local meta="$1" pattern="$2" link="$3" pkg version dest deb kver
    real_pkg() {
        apt-cache depends "$meta" 2>/dev/null \
            | sed -n "s/^ *Depends: \($pattern\)\$/\1/p" | head -n1
    }
    pkg="$(real_pkg || true)"
    if [ -z "$pkg" ]; then
        apt_update
        pkg="$(real_pkg || true)"
    fi
    [ -n "$pkg" ] || die "cannot resolve $meta to a $pattern package (apt-cache depends)"

    version="$(apt-cache policy "$pkg" | sed -n 's/^ *Candidate: //p')"
    [ -n "$version" ] && [ "$version" != "(none)" ] || die "no candidate version for $pkg"
    dest="$cache/kernel/${pkg}_${version}"

    mkdir -p "$cache/debs" "$cache/kernel"
    if [ -f "$dest/.complete" ]; then
        log "kernel $pkg $version already unpacked in $dest"
    else
        deb="$(ls "$cache/debs/${pkg}_"*"${version//:/%3a}"*_amd64.deb 2>/dev/null | head -n1 || true)"
        if [ -z "$deb" ]; then
            log "downloading $pkg=$version"
            if ! (cd "$cache/debs" && apt-get -o APT::Sandbox::User=root download -q "$pkg=$version"); then
                # Stale package lists point at files the mirror no longer has.
                apt_update
                version="$(apt-cache policy "$pkg" | sed -n 's/^ *Candidate: //p')"
                dest="$cache/kernel/${pkg}_${version}"
                (cd "$cache/debs" && apt-get -o APT::Sandbox::User=root download -q "$pkg=$version") || die "apt-get download $pkg=$version failed"
            fi
            deb="$(ls -t "$cache/debs/${pkg}_"*_amd64.deb | head -n1)"
        fi
        log "unpacking $deb into $dest"
        rm -rf "$dest.tmp"
        mkdir -p "$dest.tmp"
        dpkg-deb -x "$deb" "$dest.tmp"
        ls "$dest.tmp"/boot/vmlinuz-* >/dev/null 2>&1 || die "$deb has no /boot/vmlinuz-*"
        # The package leaves modules.dep to its postinst: make it here.
        kver="$(basename "$(ls -d "$dest.tmp"/lib/modules/* | head -n1)")"
        depmod -b "$dest.tmp" "$kver" || die "depmod -b $dest.tmp $kver failed"
        rm -rf "$dest"
        mv "$dest.tmp" "$dest"
        touch "$dest/.complete"
    fi

    # A stable name for the kernel: $cache/$link -> kernel/<pkg>_<version>.
    ln -sfn "kernel/${pkg}_${version}" "$cache/$link"
    log "$link: $(ls "$cache/$link"/boot/vmlinuz-* | head -n1)"
}

# The guest kernel (PREEMPT_RT) and the host lab's outer-host kernel: Debian's standard
# kernel, because KVM on PREEMPT_RT needs a constant TSC, which QEMU TCG cannot offer.
fetch_kernel linux-image-rt-amd64 'linux-image-[0-9][^ ]*-rt-amd64' rt-kernel
fetch_kernel linux-image-amd64 'linux-image-[0-9][^ ]*[0-9]-amd64' std-kernel

# The static guest binaries are built for the host's gnu target (crt-static).
if command -v rustup >/dev/null 2>&1; then
    rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-gnu \
        || rustup target add x86_64-unknown-linux-gnu
fi
log "ready"
