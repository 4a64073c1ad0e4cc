#!/usr/bin/env bash
# Builds the bootable test template the KVM tests register: a small qcow2
# disk (FAT + syslinux) holding Debian's cloud kernel and a busybox
# initramfs, made without mounting anything or needing root beyond apt.
#
# The guest's init prints a fixed marker and the VM's host name (which the
# KVM driver passes as the SMBIOS system SKU) to the serial console, then
# reports the block devices it sees whenever they change (so a test can tell
# a hot-plugged data volume arrived), and powers off on an ACPI power-button
# press (so a graceful stop works).
#
#   scripts/build-test-template.sh [OUT_DIR]   # default .test-services/template
#
# Writes OUT_DIR/nimbus-test.qcow2 (and .raw) and prints its path. Safe to
# run again: an existing image of the current version is kept (bump
# version when the guest changes, so machines rebuild it).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/.test-services/template}
mkdir -p "$out"
img=$out/nimbus-test.qcow2
version=2 # 2: acpid has its /var/log, so the power button works
if [ -s "$img" ] && [ -s "$out/nimbus-test.raw" ] && [ "$(cat "$out/nimbus-test.version" 2>/dev/null)" = "$version" ]; then
	echo "$img"
	exit 0
fi

log() { echo "build-test-template: $*" >&2; }
need=()
for c in syslinux:syslinux mcopy:mtools mkfs.vfat:dosfstools qemu-img:qemu-utils cpio:cpio; do
	command -v "${c%%:*}" >/dev/null || need+=("${c#*:}")
done
[ -x /bin/busybox ] && /bin/busybox --list | grep -qx insmod || need+=(busybox-static)
[ -f /usr/lib/syslinux/modules/bios/ldlinux.c32 ] || need+=(syslinux-common)
if [ ${#need[@]} -gt 0 ]; then
	log "installing ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# Debian's cloud kernel: small, virtio drivers as modules.
kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
[ -n "$kpkg" ] || { log "no cloud kernel package found (apt-get update?)"; exit 1; }
log "fetching $kpkg"
apt-get download "$kpkg" >/dev/null 2>&1 || { DEBIAN_FRONTEND=noninteractive apt-get update -qq; apt-get download "$kpkg" >/dev/null; }
dpkg -x ./*.deb k
kver=${kpkg#linux-image-}
cp k/boot/vmlinuz-"$kver" vmlinuz

# initramfs: busybox, the virtio modules in load order, and init.
# acpid exits at once without its log directory.
mkdir -p ir/bin ir/dev ir/proc ir/sys ir/lib/modules ir/etc ir/var/log ir/var/run
cp /bin/busybox ir/bin/busybox
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk button evdev; do
	f=$(find k/lib/modules/"$kver" -name "$m.ko*" | head -1)
	[ -n "$f" ] || continue # built in
	case $f in
	*.xz) xz -dc "$f" >ir/lib/modules/"$m".ko ;;
	*.zst) zstd -qdc "$f" >ir/lib/modules/"$m".ko ;;
	*) cp "$f" ir/lib/modules/"$m".ko ;;
	esac
	echo "$m" >>ir/lib/modules/order
done
# busybox acpid: the built-in map turns the power button into PWRF; the
# action file runs <conf dir>/power/off for it.
echo "PWRF power/off" >ir/etc/acpid.conf
mkdir -p ir/etc/acpi/power
printf '#!/bin/busybox sh\necho NIMBUS-GUEST-POWEROFF >/dev/console\n/bin/busybox poweroff -f\n' >ir/etc/acpi/power/off
chmod +x ir/etc/acpi/power/off
cat >ir/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev 2>/dev/null
while read -r m; do insmod "/lib/modules/$m.ko" 2>/dev/null; done </lib/modules/order
name=$(cat /sys/class/dmi/id/product_sku 2>/dev/null)
uuid=$(cat /sys/class/dmi/id/product_uuid 2>/dev/null)
echo "NIMBUS-TEST-GUEST-BOOTED hostname=${name:-unknown} uuid=${uuid:-unknown}"
acpid -f -c /etc/acpi -a /etc/acpid.conf &
last=
while :; do
	disks=$(ls /sys/block | grep '^vd' | tr '\n' ' ')
	if [ "$disks" != "$last" ]; then echo "NIMBUS-TEST-GUEST-DISKS ${disks}"; last=$disks; fi
	sleep 1
done
INIT
chmod +x ir/init
(cd ir && find . | cpio -o -H newc --quiet | gzip -9) >initrd.img

cat >syslinux.cfg <<'CFG'
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND console=ttyS0 quiet panic=-1
CFG
truncate -s 32M disk.img
mkfs.vfat -n NIMBUS disk.img >/dev/null
syslinux --install disk.img
mcopy -i disk.img vmlinuz initrd.img syslinux.cfg ::/
qemu-img convert -O qcow2 disk.img "$img.tmp"
mv disk.img "$out/nimbus-test.raw"
mv "$img.tmp" "$img"
echo "$version" >"$out/nimbus-test.version"
log "built $img ($(du -h "$img" | cut -f1)) with kernel $kver"
echo "$img"
