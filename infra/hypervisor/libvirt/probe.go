package libvirt

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/google/uuid"

	"github.com/nimbus-cloud/nimbus/infra/libvirtconn"
)

// probeImage is probe.S assembled (as --32; ld -Ttext=0x7c00
// --oformat=binary): a boot sector that switches to protected mode, takes
// 50 timer interrupts and powers the machine off through ACPI.
//
//go:embed probe.bin
var probeImage []byte

// Where the probe's disk lives on the host: a transient dir pool, built on
// first use and dropped when it holds no probe volume.
const (
	probePool    = "nimbus-kvm-probe"
	probePoolDir = "/var/lib/libvirt/nimbus-kvm-probe"
)

// probeKVM runs the probe guest once under KVM. The guest powers itself
// off (and, being transient, disappears) when KVM runs it correctly; a
// guest that pauses (KVM internal error), crashes or is still running
// after timeout means KVM does not work here. Failing to set the probe up
// is an error, not a verdict.
func probeKVM(ctx context.Context, l *golibvirt.Libvirt, timeout time.Duration) (bool, string, error) {
	pool, err := probeStoragePool(l)
	if err != nil {
		return false, "", err
	}
	id := uuid.NewString()
	volName := "probe-" + id[:8] + ".img"
	vol, err := l.StorageVolCreateXML(pool, fmt.Sprintf(
		"<volume><name>%s</name><capacity unit='bytes'>1048576</capacity><target><format type='raw'/></target></volume>", volName), 0)
	if err != nil {
		return false, "", fmt.Errorf("probe volume: %w", err)
	}
	defer func() {
		_ = l.StorageVolDelete(vol, 0)
		if n, err := l.StoragePoolNumOfVolumes(pool); err == nil && n == 0 {
			_ = l.StoragePoolDestroy(pool)
		}
	}()
	if err := l.StorageVolUpload(vol, bytes.NewReader(probeImage), 0, uint64(len(probeImage)), 0); err != nil {
		return false, "", fmt.Errorf("probe volume upload: %w", err)
	}
	x := fmt.Sprintf(`<domain type='kvm'>
  <name>nimbus-kvm-probe-%s</name>
  <uuid>%s</uuid>
  <memory unit='MiB'>16</memory>
  <vcpu>1</vcpu>
  <os><type>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <disk type='volume' device='disk'><driver name='qemu' type='raw'/><source pool='%s' volume='%s'/><target dev='hda' bus='ide'/></disk>
    <memballoon model='none'/>
  </devices>
</domain>`, id[:8], id, probePool, volName)
	start := time.Now()
	dom, err := l.DomainCreateXML(x, 0)
	if err != nil {
		// QEMU refusing to start under KVM (no /dev/kvm access, say) is a
		// verdict too.
		return false, fmt.Sprintf("kvm probe guest did not start (%v): tcg", err), nil
	}
	defer func() { _ = l.DomainDestroyFlags(dom, golibvirt.DomainDestroyDefault) }()
	deadline := time.Now().Add(timeout)
	for {
		state, reason, err := l.DomainGetState(dom, 0)
		if golibvirt.IsNotFound(err) {
			return true, fmt.Sprintf("kvm probe guest ran to completion in %v: kvm works", time.Since(start).Round(time.Millisecond)), nil
		}
		if err != nil {
			return false, "", fmt.Errorf("probe guest state: %w", err)
		}
		switch golibvirt.DomainState(state) {
		case golibvirt.DomainPaused, golibvirt.DomainCrashed:
			return false, fmt.Sprintf("kvm probe guest stopped (state %d, reason %d) after %v: kvm fails, tcg",
				state, reason, time.Since(start).Round(time.Millisecond)), nil
		}
		if time.Now().After(deadline) {
			return false, fmt.Sprintf("kvm probe guest did not finish in %v: kvm fails, tcg", timeout), nil
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return false, "", err
		}
	}
}

// probeStoragePool finds or builds the probe's transient pool.
func probeStoragePool(l *golibvirt.Libvirt) (golibvirt.StoragePool, error) {
	for range 3 {
		pool, err := l.StoragePoolLookupByName(probePool)
		if err == nil {
			return pool, nil
		}
		if libvirtconn.Code(err) != int(golibvirt.ErrNoStoragePool) {
			return pool, fmt.Errorf("probe pool: %w", err)
		}
		pool, err = l.StoragePoolCreateXML(fmt.Sprintf(
			"<pool type='dir'><name>%s</name><target><path>%s</path></target></pool>", probePool, probePoolDir),
			golibvirt.StoragePoolCreateWithBuild)
		if err == nil {
			return pool, nil
		}
		// Another probe created it meanwhile: look it up again.
		time.Sleep(100 * time.Millisecond)
	}
	return golibvirt.StoragePool{}, fmt.Errorf("probe pool %s: cannot create it", probePool)
}
