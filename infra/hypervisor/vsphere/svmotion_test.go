package vsphere_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/vmware/govmomi/object"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// TestMigrateVolumeLive: our vcsim moves a disk on a relocation with a
// disk locator, as vCenter does: the disk's file leaves the source
// datastore and the answer is its new path, read back from the VM. A retry
// finds the disk already moved, by its file name on the target, and
// answers without a second relocation. With the disk locators ignored (the
// bare simulator), the relocation runs and the disk is read back unmoved,
// which is refused (ErrNotSupported, naming where the disk still is).
func TestMigrateVolumeLive(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	h := e.hosts[0]
	root, err := e.pools.CreateVolume(ctx, e.ds0, storage.VolumeSpec{ID: "svm-root", Path: "svm-root", SizeBytes: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s := spec("i-2-50-VM", "5b9d0a53-6f1e-4c3e-9f4e-0a0000000500", hypervisor.Disk{Path: root.Path})
	if _, err := e.drv.DefineVM(ctx, h, s); err != nil {
		t.Fatal(err)
	}
	if err := e.drv.StartVM(ctx, h, s.Ref()); err != nil {
		t.Fatal(err)
	}
	e.sim.IgnoreDiskLocators(true)
	_, err = e.pools.MigrateVolumeLive(ctx, e.ds0, root.Path, e.ds1, storage.VolumeSpec{}, h, s.Ref(), nil)
	if !errors.Is(err, hypervisor.ErrNotSupported) || !strings.Contains(err.Error(), "still "+root.Path) {
		t.Fatalf("MigrateVolumeLive with the disk locators ignored = %v, want not supported: the disk is still %s", err, root.Path)
	}
	relocs, err := e.sim.Tasks(ctx, "VirtualMachine.relocateVm")
	if err != nil || len(relocs) != 1 {
		t.Fatalf("relocations = %+v, %v", relocs, err)
	}
	if _, err := e.pools.VolumeInfo(ctx, e.ds0, root.Path); err != nil {
		t.Fatalf("the source %s after a relocation that did not move it: %v", root.Path, err)
	}

	e.sim.IgnoreDiskLocators(false)
	moved := "[LocalDS_1] nimbus/svm-root.vmdk"
	for i := range 2 { // the second call finds the disk moved
		got, err := e.pools.MigrateVolumeLive(ctx, e.ds0, root.Path, e.ds1, storage.VolumeSpec{}, h, s.Ref(), nil)
		if err != nil || got.Path != moved || got.Pool != "LocalDS_1" {
			t.Fatalf("MigrateVolumeLive #%d = %+v, %v; want %s", i+1, got, err, moved)
		}
		if relocs, _ := e.sim.Tasks(ctx, "VirtualMachine.relocateVm"); len(relocs) != 2 {
			t.Fatalf("after MigrateVolumeLive #%d: %d relocations, want 2", i+1, len(relocs))
		}
	}
	if _, err := e.pools.VolumeInfo(ctx, e.ds0, root.Path); !errors.Is(err, hypervisor.ErrNotFound) {
		t.Fatalf("the source %s after the move: %v, want not found", root.Path, err)
	}
	if st, err := e.drv.VMState(ctx, h, s.Ref()); err != nil || st.State != hypervisor.StateRunning || len(st.Disks) != 1 || st.Disks[0].Path != moved {
		t.Fatalf("VMState after the move = %+v, %v; want Running on %s", st, err, moved)
	}

	// A copy back on the source, so both paths exist for the check below.
	c, err := e.sim.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Logout(context.Background())
	dc, err := object.NewSearchIndex(c.Client).FindByInventoryPath(ctx, "/DC0")
	if err != nil {
		t.Fatal(err)
	}
	task, err := object.NewVirtualDiskManager(c.Client).CopyVirtualDisk(ctx, moved, dc.(*object.Datacenter), root.Path, dc.(*object.Datacenter), nil, false)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}

	// A pool names another datastore's path as its own file: migrateVolume's
	// undo deletes "the source's path on the target", never the source.
	if v, err := e.pools.VolumeInfo(ctx, e.ds1, root.Path); err != nil || v.Path != moved {
		t.Fatalf("VolumeInfo on LocalDS_1 of %s = %+v, %v; want %s", root.Path, v, err, moved)
	}
	if err := e.pools.DeleteVolume(ctx, e.ds1, root.Path); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pools.VolumeInfo(ctx, e.ds0, root.Path); err != nil {
		t.Fatalf("the source %s after deleting its copy on LocalDS_1: %v", root.Path, err)
	}
	if _, err := e.pools.VolumeInfo(ctx, e.ds1, moved); !errors.Is(err, hypervisor.ErrNotFound) {
		t.Fatalf("the copy %s after DeleteVolume: %v", moved, err)
	}
}
