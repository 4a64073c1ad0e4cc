package vsphere_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// TestMigrateVolumeLive: on vcsim, whose RelocateVM_Task ignores disk
// locators, the relocation runs and the disk is read back unmoved, which
// is refused (ErrNotSupported, naming where the disk still is). A disk an
// earlier attempt already moved (here moved by hand: copied to the target
// datastore and the VM's disk pointed at the copy) is found there by its
// file name and answered without a second relocation.
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
	_, err = e.pools.MigrateVolumeLive(ctx, e.ds0, root.Path, e.ds1, storage.VolumeSpec{}, h, s.Ref(), nil)
	if !errors.Is(err, hypervisor.ErrNotSupported) || !strings.Contains(err.Error(), "still "+root.Path) {
		t.Fatalf("MigrateVolumeLive on vcsim = %v, want not supported: the disk is still %s", err, root.Path)
	}
	relocs, err := e.sim.Tasks(ctx, "VirtualMachine.relocateVm")
	if err != nil || len(relocs) != 1 {
		t.Fatalf("relocations = %+v, %v", relocs, err)
	}

	// The move done (by hand, as a vCenter would have).
	c, err := e.sim.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Logout(context.Background())
	dc, err := object.NewSearchIndex(c.Client).FindByInventoryPath(ctx, "/DC0")
	if err != nil {
		t.Fatal(err)
	}
	moved := "[LocalDS_1] nimbus/svm-root.vmdk"
	task, err := object.NewVirtualDiskManager(c.Client).CopyVirtualDisk(ctx, root.Path, dc.(*object.Datacenter), moved, dc.(*object.Datacenter), nil, false)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	ref, err := object.NewSearchIndex(c.Client).FindByInventoryPath(ctx, "/DC0/vm/"+s.Name)
	if err != nil || ref == nil {
		t.Fatalf("find VM: %v", err)
	}
	vm := object.NewVirtualMachine(c.Client, ref.Reference())
	devs, err := vm.Device(ctx)
	if err != nil {
		t.Fatal(err)
	}
	disk := devs.SelectByType((*types.VirtualDisk)(nil))[0].(*types.VirtualDisk)
	disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo).FileName = moved
	if err := vm.EditDevice(ctx, disk); err != nil {
		t.Fatal(err)
	}
	got, err := e.pools.MigrateVolumeLive(ctx, e.ds0, root.Path, e.ds1, storage.VolumeSpec{}, h, s.Ref(), nil)
	if err != nil || got.Path != moved || got.Pool != "LocalDS_1" {
		t.Fatalf("MigrateVolumeLive of a disk already moved = %+v, %v", got, err)
	}
	if relocs, _ := e.sim.Tasks(ctx, "VirtualMachine.relocateVm"); len(relocs) != 1 {
		t.Fatalf("a second relocation ran for a disk already moved: %d", len(relocs))
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
