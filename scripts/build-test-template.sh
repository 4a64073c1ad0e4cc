#!/usr/bin/env bash
# Builds the bootable test template the KVM tests register: a small qcow2
# disk (FAT + syslinux) holding Debian's cloud kernel and a busybox
# initramfs, made without mounting anything or needing root beyond apt.
#
# The guest's init prints a fixed marker and the VM's host name (which the
# KVM driver passes as the SMBIOS system SKU) to the serial console, then
# reports the block devices it sees whenever they change (so a test can tell
# a hot-plugged data volume arrived), and powers off on an ACPI power-button
# press (so a graceful stop works). It says where it booted from
# (source=disk, or source=iso from the ISO below) and reports its CD-ROM
# drive's medium (its ISO 9660 volume id) whenever it changes, as
# NIMBUS-TEST-GUEST-CDROM lines, so a test can tell an ISO was inserted or
# ejected while the guest runs.
#
# The same kernel and initramfs also make a bootable ISO (isolinux), for
# the tests that deploy from an ISO and attach one (volume id NIMBUSISO).
#
# The same kernel and initramfs are left beside the image (vmlinuz,
# initrd.img) for the BareMetal tests, which PXE-boot them: when the kernel
# command line holds nimbus.callback=URL, init also brings up the first NIC
# with DHCP (virtio_net) and fetches URL, as an installer reports to Nimbus
# that the machine is provisioned (marker NIMBUS-TEST-GUEST-CALLBACK).
#
#   scripts/build-test-template.sh [OUT_DIR]   # default .test-services/template
#
# Writes OUT_DIR/nimbus-test.qcow2 (and .raw, .iso, vmlinuz, initrd.img) and
# prints the image's path. Safe to run again: files of the current version
# are kept (bump version when the guest changes, so machines rebuild).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/.test-services/template}
mkdir -p "$out"
out=$(cd "$out" && pwd)
img=$out/nimbus-test.qcow2
version=5 # 2: acpid has its /var/log, so the power button works; 3: kernel+initrd beside, PXE callback; 4: ISO, CD-ROM reports; 5: acpid runs before the marker
outputs=(nimbus-test.qcow2 nimbus-test.raw nimbus-test.iso vmlinuz initrd.img)
missing=
[ "$(cat "$out/nimbus-test.version" 2>/dev/null)" = "$version" ] || missing=1
for f in "${outputs[@]}"; do [ -s "$out/$f" ] || missing=1; done
if [ -z "$missing" ]; then echo "$img"; exit 0; fi

log() { echo "build-test-template: $*" >&2; }
need=()
for c in syslinux:syslinux mcopy:mtools mkfs.vfat:dosfstools qemu-img:qemu-utils cpio:cpio xorriso:xorriso; do
	command -v "${c%%:*}" >/dev/null || need+=("${c#*:}")
done
[ -x /bin/busybox ] && /bin/busybox --list | grep -qx insmod || need+=(busybox-static)
[ -f /usr/lib/syslinux/modules/bios/ldlinux.c32 ] || need+=(syslinux-common)
[ -f /usr/lib/ISOLINUX/isolinux.bin ] || need+=(isolinux)
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
# The NIC driver (in dependency order), loaded only to call back.
for m in failover net_failover virtio_net; do
	f=$(find k/lib/modules/"$kver" -name "$m.ko*" | head -1)
	[ -n "$f" ] || continue # built in
	case $f in
	*.xz) xz -dc "$f" >ir/lib/modules/"$m".ko ;;
	*.zst) zstd -qdc "$f" >ir/lib/modules/"$m".ko ;;
	*) cp "$f" ir/lib/modules/"$m".ko ;;
	esac
	echo "$m" >>ir/lib/modules/net-order
done
# The CD-ROM drive (IDE on the PC machine: the cloud kernel has no AHCI),
# loaded after the boot marker so booting is no slower.
for m in scsi_common scsi_mod libata ata_piix cdrom sr_mod; do
	f=$(find k/lib/modules/"$kver" -name "$m.ko*" | head -1)
	[ -n "$f" ] || continue # built in
	case $f in
	*.xz) xz -dc "$f" >ir/lib/modules/"$m".ko ;;
	*.zst) zstd -qdc "$f" >ir/lib/modules/"$m".ko ;;
	*) cp "$f" ir/lib/modules/"$m".ko ;;
	esac
	echo "$m" >>ir/lib/modules/cd-order
done
# udhcpc's lease hook: address and default route on the interface.
cat >ir/etc/udhcpc.sh <<'DHCP'
#!/bin/busybox sh
case $1 in
bound|renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" dev "$interface"
	[ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
	;;
esac
exit 0
DHCP
chmod +x ir/etc/udhcpc.sh
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
source=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^nimbus.source=//p' | head -1)
# acpid first: the marker tells tests the guest is up, and a power-button
# press (a stop, a reboot) right after it must not be lost.
acpid -f -c /etc/acpi -a /etc/acpid.conf &
usleep 300000
echo "NIMBUS-TEST-GUEST-BOOTED hostname=${name:-unknown} uuid=${uuid:-unknown} source=${source:-unknown}"
# The CD-ROM drive's medium, by its ISO 9660 volume id (32 bytes at
# 0x8028); opening the drive makes the kernel look for a medium change.
(
	[ -f /lib/modules/cd-order ] && while read -r m; do insmod "/lib/modules/$m.ko" 2>/dev/null; done </lib/modules/cd-order
	last=
	while :; do
		cds=
		for d in /sys/block/sr*; do
			[ -e "$d" ] || continue
			n=${d##*/}
			label=$(dd if="/dev/$n" bs=1 skip=32808 count=32 2>/dev/null | tr -d '\000' | sed 's/ *$//')
			cds="$cds $n=${label:-empty}"
		done
		cds=${cds# }
		if [ "${cds:-none}" != "$last" ]; then echo "NIMBUS-TEST-GUEST-CDROM ${cds:-none}"; last=${cds:-none}; fi
		sleep 1
	done
) &
callback=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^nimbus.callback=//p' | head -1)
if [ -n "$callback" ]; then
	(
		[ -f /lib/modules/net-order ] && while read -r m; do insmod "/lib/modules/$m.ko" 2>/dev/null; done </lib/modules/net-order
		sleep 1
		nic=$(ls /sys/class/net | grep -v '^lo$' | head -1)
		ip link set lo up
		ip link set "$nic" up
		mac=$(cat "/sys/class/net/$nic/address")
		for try in 1 2 3 4 5 6 7 8 9 10; do
			udhcpc -i "$nic" -n -q -t 5 -s /etc/udhcpc.sh >/dev/null 2>&1 && break
			sleep 2
		done
		for try in 1 2 3 4 5 6 7 8 9 10; do
			if wget -q -O /dev/null "$callback"; then
				echo "NIMBUS-TEST-GUEST-CALLBACK ok mac=$mac"
				exit 0
			fi
			sleep 3
		done
		echo "NIMBUS-TEST-GUEST-CALLBACK failed mac=$mac url=$callback"
	) &
fi
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
  APPEND console=ttyS0 quiet panic=-1 nimbus.source=disk
CFG
truncate -s 32M disk.img
mkfs.vfat -n NIMBUS disk.img >/dev/null
syslinux --install disk.img
mcopy -i disk.img vmlinuz initrd.img syslinux.cfg ::/
qemu-img convert -O qcow2 disk.img nimbus-test.qcow2
mv disk.img nimbus-test.raw

# The bootable ISO: isolinux (El Torito, no emulation) with the same
# kernel and initramfs, telling the guest it booted from the ISO.
mkdir -p iso/isolinux
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 iso/isolinux/
cp vmlinuz initrd.img iso/
cat >iso/isolinux/isolinux.cfg <<'CFG'
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND console=ttyS0 quiet panic=-1 nimbus.source=iso
CFG
xorriso -as mkisofs -quiet -o nimbus-test.iso -V NIMBUSISO -b isolinux/isolinux.bin -c isolinux/boot.cat \
	-no-emul-boot -boot-load-size 4 -boot-info-table iso 2>/dev/null
# Each file is replaced by a rename: a test holding the old one open keeps
# reading what it had.
for f in "${outputs[@]}"; do
	cp "$f" "$out/$f.tmp"
	mv "$out/$f.tmp" "$out/$f"
done
echo "$version" >"$out/nimbus-test.version"
log "built $out ($(du -h "$img" | cut -f1) image, kernel $kver)"
echo "$img"
