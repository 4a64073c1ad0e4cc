package libvirt

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// qemuIO runs a qemu-io command on an image (the domain must be off) and
// tells whether it succeeded.
func qemuIO(t *testing.T, img, cmd string) bool {
	t.Helper()
	out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", cmd, img).CombinedOutput()
	if err != nil {
		return false
	}
	return !strings.Contains(string(out), "Pattern verification failed") && !strings.Contains(string(out), "failed")
}

func virshOut(t *testing.T, uri string, args ...string) string {
	t.Helper()
	out, err := exec.Command("virsh", append([]string{"-c", uri}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("virsh %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestQEMUVMSnapshots takes internal snapshots of a real TCG guest on a
// qcow2 overlay root disk: with memory and disk-only while it runs, then
// checks that reverting brings the disk's data back (a pattern written
// after the snapshot is gone) and the guest's running state back (no new
// boot), that virsh lists them, and that deleting and destroying remove
// them from libvirt and from the qcow2 file.
func TestQEMUVMSnapshots(t *testing.T) {
	uri := testLibvirt(t)
	tpl := testTemplate(t)
	drv := newTestDriver(t, hypervisor.TypeKVM)
	d := retrying{t, drv}
	dir := sharedDir(t)
	consoleDir := filepath.Join(dir, "console")
	h := hypervisor.Host{ID: "h-snap", URL: uri, Details: map[string]string{DetailConsoleDir: consoleDir}}
	ctx := ctxFor(t, 10*time.Minute)
	if _, err := d.ConnectHost(ctx, h); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", tpl, root)
	os.Chmod(root, 0o666)
	name := uniqueName(t)
	spec := hypervisor.VMSpec{Name: name, UUID: uuid.NewString(), DisplayName: "snapshot test", VCPUs: 1, MHz: 500, MemoryBytes: 256 << 20,
		Disks: []hypervisor.Disk{{VolumeID: uuid.NewString(), Path: root, Format: "qcow2"}}, Metadata: map[string]string{"hostname": "snapguest"}}
	ref := spec.Ref()
	t.Cleanup(func() { drv.DestroyVM(context.Background(), h, ref) })
	if _, err := d.DefineVM(ctx, h, spec); err != nil {
		t.Fatal(err)
	}
	if err := d.StartVM(ctx, h, ref); err != nil {
		t.Fatal(err)
	}
	log := serialLog{t: t, path: ConsoleLogPath(consoleDir, name)}
	log.waitFor("NIMBUS-TEST-GUEST-BOOTED", 1, 3*time.Minute)

	m1, err := drv.CreateVMSnapshot(ctx, h, ref, hypervisor.VMSnapshotSpec{Name: "snap-mem", DisplayName: "mem", Memory: true})
	if err != nil || !m1.Memory || !m1.Current || m1.Parent != "" {
		t.Fatalf("CreateVMSnapshot with memory = %+v, %v", m1, err)
	}
	if again, err := drv.CreateVMSnapshot(ctx, h, ref, hypervisor.VMSnapshotSpec{Name: "snap-mem", Memory: true}); err != nil || again.Name != "snap-mem" {
		t.Fatalf("CreateVMSnapshot again = %+v, %v", again, err)
	}
	d1, err := drv.CreateVMSnapshot(ctx, h, ref, hypervisor.VMSnapshotSpec{Name: "snap-disk", DisplayName: "disk"})
	if err != nil || d1.Parent != "snap-mem" || !d1.Current {
		t.Fatalf("CreateVMSnapshot disk-only of a running VM = %+v, %v", d1, err)
	}
	if _, err := drv.CreateVMSnapshot(ctx, h, ref, hypervisor.VMSnapshotSpec{Name: "q", Quiesce: true}); !errors.Is(err, hypervisor.ErrNotSupported) {
		t.Fatalf("quiesced snapshot = %v, want not supported", err)
	}
	if out := virshOut(t, uri, "snapshot-list", name, "--name"); !strings.Contains(out, "snap-mem") || !strings.Contains(out, "snap-disk") {
		t.Fatalf("virsh snapshot-list = %q", out)
	}
	l, err := drv.ListVMSnapshots(ctx, h, ref)
	if err != nil || len(l) != 2 || l[0].Name != "snap-mem" || l[1].Parent != "snap-mem" || !l[1].Current {
		t.Fatalf("ListVMSnapshots = %+v, %v", l, err)
	}

	// Change the disk after the snapshots (the guest off, from the host).
	if err := d.StopVM(ctx, h, ref, hypervisor.StopOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	const at = "write -P 0xab 20M 64k"
	if !qemuIO(t, root, at) || !qemuIO(t, root, "read -P 0xab 20M 64k") {
		t.Fatal("cannot write the pattern to the stopped VM's disk")
	}
	// Revert as a Disk snapshot: stopped, the pattern gone.
	st, err := drv.RevertVMSnapshot(ctx, h, ref, hypervisor.VMSnapshotSpec{Name: "snap-disk"})
	if err != nil || st != hypervisor.StateStopped {
		t.Fatalf("RevertVMSnapshot disk = %s, %v", st, err)
	}
	if s := virshOut(t, uri, "domstate", name); !strings.Contains(s, "shut off") {
		t.Fatalf("domain after reverting to a Disk snapshot: %s", s)
	}
	if qemuIO(t, root, "read -P 0xab 20M 64k") {
		t.Fatal("the data written after the snapshot is still there after reverting to it")
	}
	// Revert to the memory snapshot: the guest runs on from that point,
	// without booting again.
	boots := strings.Count(log.read(), "NIMBUS-TEST-GUEST-BOOTED")
	st, err = drv.RevertVMSnapshot(ctx, h, ref, hypervisor.VMSnapshotSpec{Name: "snap-mem", Memory: true})
	if err != nil || st != hypervisor.StateRunning {
		t.Fatalf("RevertVMSnapshot memory = %s, %v", st, err)
	}
	if s := virshOut(t, uri, "domstate", name); !strings.Contains(s, "running") {
		t.Fatalf("domain after reverting to a memory snapshot: %s", s)
	}
	if cur := strings.TrimSpace(virshOut(t, uri, "snapshot-current", name, "--name")); cur != "snap-mem" {
		t.Fatalf("current snapshot %q, want snap-mem", cur)
	}
	time.Sleep(3 * time.Second)
	if n := strings.Count(log.read(), "NIMBUS-TEST-GUEST-BOOTED"); n != boots {
		t.Fatalf("the guest booted again after reverting to a memory snapshot (%d boots, was %d)", n, boots)
	}

	// Delete: gone from libvirt and from the qcow2 file; twice is fine.
	for range 2 {
		if err := drv.DeleteVMSnapshot(ctx, h, ref, "snap-disk"); err != nil {
			t.Fatal(err)
		}
	}
	if out := virshOut(t, uri, "snapshot-list", name, "--name"); strings.Contains(out, "snap-disk") || !strings.Contains(out, "snap-mem") {
		t.Fatalf("virsh snapshot-list after delete = %q", out)
	}
	if out, _ := exec.Command("qemu-img", "snapshot", "-l", "-U", root).CombinedOutput(); strings.Contains(string(out), "snap-disk") {
		t.Fatalf("qcow2 still holds the deleted snapshot: %s", out)
	}
	// Destroying the domain deletes the rest with it.
	if err := d.DestroyVM(ctx, h, ref); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command("qemu-img", "snapshot", "-l", root).CombinedOutput(); strings.Contains(string(out), "snap-mem") {
		t.Fatalf("qcow2 still holds snapshots after the domain was destroyed: %s", out)
	}
	if err := drv.DeleteVMSnapshot(ctx, h, ref, "snap-mem"); err != nil {
		t.Fatalf("DeleteVMSnapshot of a destroyed domain: %v", err)
	}

	// A raw disk cannot hold internal snapshots: refused, naming the disk.
	raw := filepath.Join(dir, "raw.img")
	qemuImg(t, "convert", "-O", "raw", tpl, raw)
	os.Chmod(raw, 0o666)
	rs := spec
	rs.Name, rs.UUID = uniqueName(t), uuid.NewString()
	rs.Disks = []hypervisor.Disk{{VolumeID: uuid.NewString(), Path: raw, Format: "raw"}}
	t.Cleanup(func() { drv.DestroyVM(context.Background(), h, rs.Ref()) })
	if _, err := d.DefineVM(ctx, h, rs); err != nil {
		t.Fatal(err)
	}
	_, err = drv.CreateVMSnapshot(ctx, h, rs.Ref(), hypervisor.VMSnapshotSpec{Name: "raw-snap"})
	if !errors.Is(err, hypervisor.ErrNotSupported) || !strings.Contains(err.Error(), "vda is raw") {
		t.Fatalf("snapshot of a raw-disk VM = %v, want not supported naming vda", err)
	}
}
