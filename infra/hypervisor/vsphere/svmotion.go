package vsphere

import (
	"context"
	"path"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// MigrateVolumeLive moves a running VM's disk to another datastore while
// the VM runs (Storage vMotion: RelocateVM_Task with a disk locator for
// that disk only; the VM's other disks and its home stay). vCenter moves
// the file, so no source copy stays behind, and it chooses the file's new
// name: the answer's path is the disk's backing read back after the move.
// A retry reattaches to the relocation an earlier attempt started; a disk
// already on the target (its file's base name there) is the finished move.
func (p *Pool) MigrateVolumeLive(ctx context.Context, src storage.Pool, file string, dst storage.Pool, spec storage.VolumeSpec, h hypervisor.Host, r hypervisor.VMRef, pr storage.ProgressFunc) (storage.Volume, error) {
	s, err := p.target(ctx, src)
	if err != nil {
		return storage.Volume{}, err
	}
	d, err := p.target(ctx, dst)
	if err != nil {
		return storage.Volume{}, err
	}
	if s.c != d.c {
		return storage.Volume{}, hypervisor.Errorf(driverName, "MigrateVolumeLive", file, hypervisor.ErrNotSupported, "pools %s and %s are on different vCenters", src.Name, dst.Name)
	}
	from := s.path(file)
	t, err := (&Driver{s: p.s}).host(ctx, h)
	if err != nil {
		return storage.Volume{}, err
	}
	if t.c != s.c {
		return storage.Volume{}, hypervisor.Errorf(driverName, "MigrateVolumeLive", file, hypervisor.ErrInvalid, "host %s is not managed by the vCenter of pool %s", h, src.Name)
	}
	key := "svmotion:" + from + ">" + d.ds.Value
	if _, err := t.c.reattach(ctx, key); err != nil {
		return storage.Volume{}, classify("MigrateVolumeLive", from, err)
	}
	ref, err := t.mustVM(ctx, "MigrateVolumeLive", r)
	if err != nil {
		return storage.Volume{}, err
	}
	disk, moved, err := t.findDisk(ctx, ref, from, d.dsName)
	if err != nil {
		return storage.Volume{}, err
	}
	if disk == nil {
		return storage.Volume{}, hypervisor.Errorf(driverName, "MigrateVolumeLive", from, hypervisor.ErrNotFound, "VM %s has no disk %s", r, from)
	}
	if moved {
		pr.Report(disk.CapacityInBytes, disk.CapacityInBytes)
		return d.volume(diskFile(disk), disk.CapacityInBytes, ""), nil
	}
	pr.Report(0, disk.CapacityInBytes)
	loc := types.VirtualMachineRelocateSpecDiskLocator{DiskId: disk.Key, Datastore: d.ds}
	_, err = t.c.runTask(ctx, key, func(ctx context.Context) (types.ManagedObjectReference, error) {
		res, err := methods.RelocateVM_Task(ctx, t.c.client(), &types.RelocateVM_Task{This: ref,
			Spec:     types.VirtualMachineRelocateSpec{Disk: []types.VirtualMachineRelocateSpecDiskLocator{loc}},
			Priority: types.VirtualMachineMovePriorityDefaultPriority})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	if err != nil {
		return storage.Volume{}, classify("MigrateVolumeLive", from, err)
	}
	// Read the disk back by its device key: where vCenter put it is the
	// volume's new path. A vCenter that ends the task with the disk where it
	// was did not move it, and saying so beats switching the inventory to
	// a file that is not there.
	after, _, err := t.findDisk(ctx, ref, from, d.dsName)
	if err != nil {
		return storage.Volume{}, err
	}
	if after == nil || datastoreOf(diskFile(after)) != d.dsName {
		at := from
		if after != nil {
			at = diskFile(after)
		}
		return storage.Volume{}, hypervisor.Errorf(driverName, "MigrateVolumeLive", from, hypervisor.ErrNotSupported,
			"vCenter ended the relocation of the disk to datastore %s but the VM's disk is still %s", d.dsName, at)
	}
	pr.Report(after.CapacityInBytes, after.CapacityInBytes)
	return d.volume(diskFile(after), after.CapacityInBytes, ""), nil
}

// findDisk finds a VM's disk that is (or was, before a Storage vMotion)
// the file from: the disk backed by from itself (moved=false), or one on
// datastore dsName whose file has from's base name (moved=true).
func (t *hostTarget) findDisk(ctx context.Context, ref types.ManagedObjectReference, from, dsName string) (*types.VirtualDisk, bool, error) {
	var vm mo.VirtualMachine
	if err := property.DefaultCollector(t.c.client()).RetrieveOne(ctx, ref, []string{"config.hardware.device"}, &vm); err != nil {
		return nil, false, classify("MigrateVolumeLive", ref.Value, err)
	}
	if vm.Config == nil {
		return nil, false, nil
	}
	var fp object.DatastorePath
	fp.FromString(from)
	var moved *types.VirtualDisk
	for _, dev := range object.VirtualDeviceList(vm.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil)) {
		x := dev.(*types.VirtualDisk)
		f := diskFile(x)
		if f == from {
			return x, false, nil
		}
		var p object.DatastorePath
		if p.FromString(f) && p.Datastore == dsName && path.Base(p.Path) == path.Base(fp.Path) {
			moved = x
		}
	}
	return moved, moved != nil, nil
}

// diskFile is the file backing a disk ("" when it has none).
func diskFile(x *types.VirtualDisk) string {
	if b, ok := x.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
		return b.GetVirtualDeviceFileBackingInfo().FileName
	}
	return ""
}
