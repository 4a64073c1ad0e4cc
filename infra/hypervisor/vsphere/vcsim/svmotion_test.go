package vcsim_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere/vcsim"
)

// TestStorageVMotion: a relocation with a disk locator moves that disk's
// files to the target datastore and repoints its backing, as vCenter does;
// the VM's other disk and its power state stay. A locator naming no disk
// fails the task with nothing moved; with IgnoreDiskLocators the task
// succeeds with the disk where it was (the bare simulator's behaviour).
func TestStorageVMotion(t *testing.T) {
	sim, err := vcsim.Start(vcsim.Options{Hosts: 1, VMs: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	ctx := context.Background()
	c, err := sim.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Logout(context.Background())
	f := find.NewFinder(c.Client)
	dc, err := f.Datacenter(ctx, "DC0")
	if err != nil {
		t.Fatal(err)
	}
	f.SetDatacenter(dc)
	vms, err := f.VirtualMachineList(ctx, "*")
	if err != nil || len(vms) != 1 {
		t.Fatalf("VMs = %v, %v", vms, err)
	}
	vm := vms[0]
	ds0, err := f.Datastore(ctx, "LocalDS_0")
	if err != nil {
		t.Fatal(err)
	}
	ds1, err := f.Datastore(ctx, "LocalDS_1")
	if err != nil {
		t.Fatal(err)
	}
	dir := func(ds *object.Datastore) string {
		var m mo.Datastore
		if err := ds.Properties(ctx, ds.Reference(), []string{"summary.url"}, &m); err != nil {
			t.Fatal(err)
		}
		return m.Summary.Url
	}
	dir0, dir1 := dir(ds0), dir(ds1)

	// A second disk, which must stay on LocalDS_0.
	devs, err := vm.Device(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := devs.FindDiskController("")
	if err != nil {
		t.Fatal(err)
	}
	// An empty path: the simulator creates the file, next to the first disk.
	extra := devs.CreateDisk(ctl, ds0.Reference(), "[LocalDS_0]")
	extra.CapacityInKB = 1024
	if err := vm.AddDevice(ctx, extra); err != nil {
		t.Fatal(err)
	}
	disks := func() []*types.VirtualDisk {
		devs, err := vm.Device(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []*types.VirtualDisk
		for _, d := range devs.SelectByType((*types.VirtualDisk)(nil)) {
			out = append(out, d.(*types.VirtualDisk))
		}
		return out
	}
	file := func(d *types.VirtualDisk) string {
		return d.Backing.(*types.VirtualDiskFlatVer2BackingInfo).FileName
	}
	before := disks()
	if len(before) != 2 {
		t.Fatalf("disks = %d, want 2", len(before))
	}
	root, other := before[0], file(before[1])
	var otherRel object.DatastorePath
	otherRel.FromString(other)
	var rel object.DatastorePath
	rel.FromString(file(root))
	relocate := func(spec types.VirtualMachineRelocateSpec) error {
		task, err := vm.Relocate(ctx, spec, types.VirtualMachineMovePriorityDefaultPriority)
		if err != nil {
			return err
		}
		return task.Wait(ctx)
	}
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }

	// A locator naming no disk of the VM: refused, nothing moved.
	err = relocate(types.VirtualMachineRelocateSpec{Disk: []types.VirtualMachineRelocateSpecDiskLocator{{DiskId: 9999, Datastore: ds1.Reference()}}})
	if !fault.Is(err, &types.InvalidArgument{}) {
		t.Fatalf("relocating disk 9999 = %v, want InvalidArgument", err)
	}
	if file(disks()[0]) != file(root) {
		t.Fatalf("the disk moved on a refused relocation: %s", file(disks()[0]))
	}

	// The bare simulator's path: the disk stays.
	sim.IgnoreDiskLocators(true)
	if err := relocate(types.VirtualMachineRelocateSpec{Disk: []types.VirtualMachineRelocateSpecDiskLocator{{DiskId: root.Key, Datastore: ds1.Reference()}}}); err != nil {
		t.Fatal(err)
	}
	if file(disks()[0]) != file(root) || !exists(filepath.Join(dir0, rel.Path)) {
		t.Fatalf("with IgnoreDiskLocators the disk is %s", file(disks()[0]))
	}
	sim.IgnoreDiskLocators(false)

	// The Storage vMotion.
	if err := relocate(types.VirtualMachineRelocateSpec{Disk: []types.VirtualMachineRelocateSpecDiskLocator{{DiskId: root.Key, Datastore: ds1.Reference()}}}); err != nil {
		t.Fatal(err)
	}
	after := disks()
	want := "[LocalDS_1] " + rel.Path
	b := after[0].Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	if after[0].Key != root.Key || b.FileName != want || b.Datastore == nil || *b.Datastore != ds1.Reference() {
		t.Fatalf("disk %d after the move: %s on %v, want %s", after[0].Key, b.FileName, b.Datastore, want)
	}
	if file(after[1]) != other {
		t.Fatalf("the other disk moved: %s", file(after[1]))
	}
	for _, f := range []string{rel.Path, filepath.Join(filepath.Dir(rel.Path), filepath.Base(rel.Path[:len(rel.Path)-5])+"-flat.vmdk")} {
		if exists(filepath.Join(dir0, f)) || !exists(filepath.Join(dir1, f)) {
			t.Fatalf("%s: on LocalDS_0 %v, on LocalDS_1 %v; want moved", f, exists(filepath.Join(dir0, f)), exists(filepath.Join(dir1, f)))
		}
	}
	if !exists(filepath.Join(dir0, otherRel.Path)) {
		t.Fatal("the other disk's file left LocalDS_0")
	}
	var m mo.VirtualMachine
	if err := vm.Properties(ctx, vm.Reference(), []string{"datastore", "runtime.powerState", "layout"}, &m); err != nil {
		t.Fatal(err)
	}
	if m.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		t.Fatalf("power state after the move = %s", m.Runtime.PowerState)
	}
	if len(m.Datastore) != 2 {
		t.Fatalf("VM datastores = %v, want LocalDS_0 (home, other disk) and LocalDS_1", m.Datastore)
	}
	if m.Layout == nil || len(m.Layout.Disk) != 2 || m.Layout.Disk[0].DiskFile[0] != want {
		t.Fatalf("layout = %+v", m.Layout)
	}

	// The same disk back, with a host change in the same relocation: both
	// happen, in one task.
	var host mo.VirtualMachine
	if err := vm.Properties(ctx, vm.Reference(), []string{"runtime.host"}, &host); err != nil {
		t.Fatal(err)
	}
	if err := relocate(types.VirtualMachineRelocateSpec{Host: host.Runtime.Host, Disk: []types.VirtualMachineRelocateSpecDiskLocator{{DiskId: root.Key, Datastore: ds0.Reference()}}}); err != nil {
		t.Fatal(err)
	}
	if file(disks()[0]) != file(root) || !exists(filepath.Join(dir0, rel.Path)) || exists(filepath.Join(dir1, rel.Path)) {
		t.Fatalf("moving back: disk %s", file(disks()[0]))
	}
	if err := vm.Properties(ctx, vm.Reference(), []string{"datastore"}, &m); err != nil || len(m.Datastore) != 1 || m.Datastore[0] != ds0.Reference() {
		t.Fatalf("VM datastores after moving back = %v, %v", m.Datastore, err)
	}
}
