#!/usr/bin/env bash
# Builds the LXC test template: a small raw ext4 image of a busybox root
# filesystem, made with mke2fs -d (no mounting). Its /sbin/init sets the
# host name Nimbus passes (NIMBUS_HOSTNAME in init's environment), writes
# "NIMBUS-TEST-GUEST-BOOTED hostname=<name> uuid=<container uuid>" to the
# console and to /run/nimbus-booted (tests read it with virsh
# lxc-enter-namespace), and exits on SIGTERM (a graceful stop).
#
#   scripts/build-test-lxc-template.sh [OUT_DIR]   # default .test-services/template
#
# Writes OUT_DIR/nimbus-test-lxc.raw and prints its path. Safe to run again.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/.test-services/template}
mkdir -p "$out"
out=$(cd "$out" && pwd)
img=$out/nimbus-test-lxc.raw
version=1
if [ -s "$img" ] && [ "$(cat "$out/nimbus-test-lxc.version" 2>/dev/null)" = "$version" ]; then echo "$img"; exit 0; fi

need=()
command -v mke2fs >/dev/null || need+=(e2fsprogs)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fs=$work/rootfs
mkdir -p "$fs"/bin "$fs"/sbin "$fs"/dev "$fs"/proc "$fs"/sys "$fs"/run "$fs"/tmp "$fs"/etc "$fs"/mnt
cp /bin/busybox "$fs"/bin/busybox
for l in sh echo cat sleep hostname ls ip; do ln -s busybox "$fs/bin/$l"; done
cat >"$fs"/sbin/init <<'INIT'
#!/bin/sh
trap 'echo NIMBUS-TEST-GUEST-STOPPING >/dev/console; exit 0' TERM
[ -n "$NIMBUS_HOSTNAME" ] && hostname "$NIMBUS_HOSTNAME"
msg="NIMBUS-TEST-GUEST-BOOTED hostname=$(hostname) uuid=$LIBVIRT_LXC_UUID"
echo "$msg" >/run/nimbus-booted
echo "$msg" >/dev/console
while :; do sleep 1; done
INIT
chmod 755 "$fs"/sbin/init
rm -f "$img"
mke2fs -q -t ext4 -d "$fs" -L nimbus-lxc "$img" 8M >/dev/null
echo "$version" >"$out/nimbus-test-lxc.version"
echo "$img"
