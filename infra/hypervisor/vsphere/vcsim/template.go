package vcsim

import (
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"
)

// CreateTemplate makes a template VM the way an operator keeps a golden
// image in vCenter: a powered-off VM of one disk of diskMiB MiB on the
// datastore, in the folder (a path under DC0's VM folder, made when
// missing; "" for the folder itself), marked as a template. It answers
// the template's inventory path.
func (s *Sim) CreateTemplate(ctx context.Context, folder, name, datastore string, diskMiB int) (string, error) {
	c, err := s.Client(ctx)
	if err != nil {
		return "", err
	}
	defer func() { _ = c.Logout(context.Background()) }()
	f := find.NewFinder(c.Client, true)
	dc, err := f.Datacenter(ctx, "DC0")
	if err != nil {
		return "", err
	}
	f.SetDatacenter(dc)
	dir, err := f.Folder(ctx, "/DC0/vm")
	if err != nil {
		return "", err
	}
	at := "/DC0/vm"
	for _, part := range strings.Split(strings.Trim(folder, "/"), "/") {
		if part == "" {
			continue
		}
		at = path.Join(at, part)
		next, err := f.Folder(ctx, at)
		if err != nil {
			if next, err = dir.CreateFolder(ctx, part); err != nil {
				return "", fmt.Errorf("vcsim: folder %s: %w", at, err)
			}
		}
		dir = next
	}
	pool, err := f.ResourcePool(ctx, "/DC0/host/DC0_C0/Resources")
	if err != nil {
		return "", err
	}
	devices := object.VirtualDeviceList{}
	scsi, err := devices.CreateSCSIController("pvscsi")
	if err != nil {
		return "", err
	}
	devices = append(devices, scsi)
	disk := devices.CreateDisk(scsi.(types.BaseVirtualController), types.ManagedObjectReference{}, "["+datastore+"] "+name+"/"+name+".vmdk")
	disk.CapacityInKB = int64(diskMiB) << 10
	disk.CapacityInBytes = int64(diskMiB) << 20
	devices = append(devices, disk)
	changes, err := devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
	if err != nil {
		return "", err
	}
	for _, ch := range changes {
		if _, ok := ch.GetVirtualDeviceConfigSpec().Device.(*types.VirtualDisk); ok {
			ch.GetVirtualDeviceConfigSpec().FileOperation = types.VirtualDeviceConfigSpecFileOperationCreate
		}
	}
	spec := types.VirtualMachineConfigSpec{Name: name, GuestId: string(types.VirtualMachineGuestOsIdentifierOtherGuest64),
		NumCPUs: 1, MemoryMB: 256, Files: &types.VirtualMachineFileInfo{VmPathName: "[" + datastore + "]"}, DeviceChange: changes}
	task, err := dir.CreateVM(ctx, spec, pool, nil)
	if err != nil {
		return "", err
	}
	info, err := task.WaitForResult(ctx)
	if err != nil {
		return "", err
	}
	vm := object.NewVirtualMachine(c.Client, info.Result.(types.ManagedObjectReference))
	if err := vm.MarkAsTemplate(ctx); err != nil {
		return "", err
	}
	return path.Join("/DC0/vm", folder, name), nil
}
