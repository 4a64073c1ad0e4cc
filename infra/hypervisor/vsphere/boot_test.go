package vsphere_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// vcsimBoot reads a VM's boot order and devices from the simulator.
func vcsimBoot(t *testing.T, e *env, uuid string) ([]types.BaseVirtualMachineBootOptionsBootableDevice, object.VirtualDeviceList) {
	t.Helper()
	ctx := context.Background()
	c, err := e.sim.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Logout(ctx)
	dc, err := object.NewSearchIndex(c.Client).FindByInventoryPath(ctx, "/DC0")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := object.NewSearchIndex(c.Client).FindByUuid(ctx, dc.(*object.Datacenter), uuid, true, types.NewBool(true))
	if err != nil || ref == nil {
		t.Fatalf("find VM %s: %v", uuid, err)
	}
	var vm mo.VirtualMachine
	if err := property.DefaultCollector(c.Client).RetrieveOne(ctx, ref.Reference(), []string{"config"}, &vm); err != nil {
		t.Fatal(err)
	}
	var order []types.BaseVirtualMachineBootOptionsBootableDevice
	if vm.Config.BootOptions != nil {
		order = vm.Config.BootOptions.BootOrder
	}
	return order, object.VirtualDeviceList(vm.Config.Hardware.Device)
}

// TestBootOrder: a VM defined with an ISO in its drive boots from the
// CD-ROM first, then its root disk (by the key vCenter gave it); one
// without keeps vCenter's default; defined again while stopped without the
// ISO, it goes back to the disk first; defining again changes nothing.
func TestBootOrder(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	h := e.hosts[0]
	dir := t.TempDir()
	img := make([]byte, 64<<10)
	copy(img[0x8001:], "CD001")
	if err := os.WriteFile(filepath.Join(dir, "boot.iso"), img, 0o644); err != nil {
		t.Fatal(err)
	}
	iso, err := e.pools.CopyTemplateToPool(ctx, storage.Template{ID: "iso-1", Format: "ISO",
		Source: storage.Location{Store: storage.ImageStore{URL: "file://" + dir}, Path: "boot.iso"}}, e.ds0, nil)
	if err != nil {
		t.Fatalf("CopyTemplateToPool ISO: %v", err)
	}
	root, err := e.pools.CreateVolume(ctx, e.ds0, storage.VolumeSpec{ID: "blank-1", Path: "blank-1", SizeBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s := spec("i-2-30-VM", "5b9d0a53-6f1e-4c3e-9f4e-0a0000000030", hypervisor.Disk{Path: root.Path},
		hypervisor.Disk{CDROM: true, ReadOnly: true, Path: iso.Path, Format: "iso"})
	s.BootOrder = []hypervisor.BootDevice{hypervisor.BootCDROM, hypervisor.BootDisk}
	if _, err := e.drv.DefineVM(ctx, h, s); err != nil {
		t.Fatalf("DefineVM from an ISO: %v", err)
	}
	order, devs := vcsimBoot(t, e, s.UUID)
	disks := devs.SelectByType((*types.VirtualDisk)(nil))
	if len(order) != 2 || len(disks) != 1 {
		t.Fatalf("boot order %#v, disks %d", order, len(disks))
	}
	if _, ok := order[0].(*types.VirtualMachineBootOptionsBootableCdromDevice); !ok {
		t.Fatalf("boot order starts with %#v, want the CD-ROM", order[0])
	}
	if d, ok := order[1].(*types.VirtualMachineBootOptionsBootableDiskDevice); !ok || d.DeviceKey != disks[0].GetVirtualDevice().Key {
		t.Fatalf("boot order then %#v, want the disk of key %d", order[1], disks[0].GetVirtualDevice().Key)
	}
	// The order an ISO deploy gets without BootOrder given is the same.
	s2 := spec("i-2-31-VM", "5b9d0a53-6f1e-4c3e-9f4e-0a0000000031", hypervisor.Disk{Path: root.Path},
		hypervisor.Disk{CDROM: true, ReadOnly: true, Path: iso.Path, Format: "iso"})
	if _, err := e.drv.DefineVM(ctx, e.hosts[1], s2); err != nil {
		t.Fatalf("DefineVM from an ISO without a boot order: %v", err)
	}
	if o, _ := vcsimBoot(t, e, s2.UUID); len(o) != 2 {
		t.Fatalf("boot order %#v", o)
	} else if _, ok := o[0].(*types.VirtualMachineBootOptionsBootableCdromDevice); !ok {
		t.Fatalf("boot order %#v, want the CD-ROM first", o)
	}
	if err := e.drv.DestroyVM(ctx, e.hosts[1], s2.Ref()); err != nil {
		t.Fatal(err)
	}

	// Defined again as it is: no reconfigure.
	before, err := e.sim.Tasks(ctx, "VirtualMachine.reconfigure")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.drv.DefineVM(ctx, h, s); err != nil {
		t.Fatalf("DefineVM again: %v", err)
	}
	if after, _ := e.sim.Tasks(ctx, "VirtualMachine.reconfigure"); len(after) != len(before) {
		t.Fatalf("DefineVM again reconfigured the VM (%d tasks, were %d)", len(after), len(before))
	}
	// Stopped and defined again without its ISO: the disk first.
	plain := spec(s.Name, s.UUID, hypervisor.Disk{Path: root.Path})
	if _, err := e.drv.DefineVM(ctx, h, plain); err != nil {
		t.Fatalf("DefineVM without the ISO: %v", err)
	}
	order, _ = vcsimBoot(t, e, s.UUID)
	if len(order) == 0 {
		t.Fatal("no boot order after the ISO went")
	}
	if d, ok := order[0].(*types.VirtualMachineBootOptionsBootableDiskDevice); !ok || d.DeviceKey != disks[0].GetVirtualDevice().Key {
		t.Fatalf("boot order %#v after the ISO went, want the disk first", order)
	}
	if err := e.drv.DestroyVM(ctx, h, s.Ref()); err != nil {
		t.Fatal(err)
	}

	// From a template (no ISO): no CD-ROM first; vCenter's default order.
	t1 := spec("i-2-32-VM", "5b9d0a53-6f1e-4c3e-9f4e-0a0000000032", hypervisor.Disk{Path: root.Path})
	if _, err := e.drv.DefineVM(ctx, h, t1); err != nil {
		t.Fatalf("DefineVM: %v", err)
	}
	if o, _ := vcsimBoot(t, e, t1.UUID); len(o) != 0 {
		t.Fatalf("a VM without an ISO has boot order %#v", o)
	}
}
