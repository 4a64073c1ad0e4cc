package vcsim

import (
	"os"
	"path"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// relocateHandler is the model's Registry.Handler: it routes a
// RelocateVM_Task that carries disk locators to storageVMotion, so that
// the simulated vCenter moves disks between datastores as vCenter does
// (Storage vMotion). govmomi v0.52.0's VirtualMachine.RelocateVMTask
// ignores spec.disk (its TODO), which left Nimbus's live volume migration
// untestable. Every other call goes to the simulator unchanged.
func (s *Sim) relocateHandler(ctx *simulator.Context, m *simulator.Method) (mo.Reference, types.BaseMethodFault) {
	if m.Name != "RelocateVM_Task" || s.ignoreDiskLocators.Load() {
		return nil, nil
	}
	req, ok := m.Body.(*types.RelocateVM_Task)
	if !ok || len(req.Spec.Disk) == 0 {
		return nil, nil
	}
	vm, ok := ctx.Map.Get(m.This).(*simulator.VirtualMachine)
	if !ok {
		return nil, nil
	}
	// Service.call looks This up again in the caller's session, which
	// falls back to the inventory and would replace the object returned
	// here by the plain VirtualMachine: point This at a reference nothing
	// resolves, so the call goes to storageVMotion.
	m.This = types.ManagedObjectReference{Type: "NimbusStorageVMotion", Value: vm.Self.Value}
	return &storageVMotion{vm}, nil
}

// IgnoreDiskLocators turns the simulated Storage vMotion off (true) or on
// (false, the default). Off, a relocation's disk locators are ignored as
// by the bare simulator: the task succeeds with the disks where they were,
// the path a caller must detect as "vCenter did not move the disk".
func (s *Sim) IgnoreDiskLocators(ignore bool) { s.ignoreDiskLocators.Store(ignore) }

// storageVMotion is a VirtualMachine whose RelocateVMTask honours
// spec.disk; the simulator calls it by method name on the returned object.
type storageVMotion struct {
	*simulator.VirtualMachine
}

// RelocateVMTask moves each located disk's files to its datastore (same
// directory and name there), repoints the disk's backing at them and
// updates the VM's datastores, all in one relocateVm task; the rest of the
// spec (datastore, host, pool, folder, device changes), when there is
// any, is the simulator's own relocation: a second relocateVm task, waited
// on within this one.
func (vm *storageVMotion) RelocateVMTask(ctx *simulator.Context, req *types.RelocateVM_Task) soap.HasFault {
	task := simulator.CreateTask(vm, "relocateVm", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		if fault := vm.moveDisks(ctx, req.Spec.Disk); fault != nil {
			return nil, fault
		}
		rest := *req
		rest.Spec.Disk = nil
		s := rest.Spec
		if s.Datastore == nil && s.Pool == nil && s.Host == nil && s.Folder == nil && len(s.DeviceChange) == 0 {
			return nil, nil
		}
		ref := vm.VirtualMachine.RelocateVMTask(ctx, &rest).(*methods.RelocateVM_TaskBody).Res.Returnval
		t := ctx.Map.Get(ref).(*simulator.Task)
		t.Wait()
		var info types.TaskInfo
		ctx.WithLock(t, func() { info = t.Info })
		// The simulator's relocation sets the VM's datastores to
		// spec.datastore alone, forgetting the disks' new homes.
		vm.updateDatastores(ctx)
		if info.Error != nil {
			return nil, info.Error.Fault
		}
		return nil, nil
	})
	return &methods.RelocateVM_TaskBody{Res: &types.RelocateVM_TaskResponse{Returnval: task.Run(ctx)}}
}

// moveDisks checks every locator before it moves anything, so a bad one
// (no such disk, a datastore the host does not mount, a missing source or
// an existing target file) fails the task with nothing changed.
func (vm *storageVMotion) moveDisks(ctx *simulator.Context, locs []types.VirtualMachineRelocateSpecDiskLocator) types.BaseMethodFault {
	host := ctx.Map.Get(*vm.Runtime.Host).(*simulator.HostSystem)
	devices := object.VirtualDeviceList(vm.Config.Hardware.Device)
	type move struct {
		disk     *types.VirtualDisk
		b        *types.VirtualDeviceFileBackingInfo
		from, to *simulator.Datastore
		rel      string // the file's path within its datastore
	}
	var moves []move
	seen := map[int32]bool{}
	for _, l := range locs {
		disk, ok := devices.FindByKey(l.DiskId).(*types.VirtualDisk)
		if !ok || seen[l.DiskId] {
			return &types.InvalidArgument{InvalidProperty: "spec.disk.diskId"}
		}
		seen[l.DiskId] = true
		fb, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo)
		if !ok {
			return &types.InvalidArgument{InvalidProperty: "spec.disk.diskId"}
		}
		b := fb.GetVirtualDeviceFileBackingInfo()
		var p object.DatastorePath
		p.FromString(b.FileName)
		from, _ := ctx.Map.FindByName(p.Datastore, host.Datastore).(*simulator.Datastore)
		to, _ := ctx.Map.Get(l.Datastore).(*simulator.Datastore)
		if from == nil || p.Path == "" {
			return &types.FileNotFound{FileFault: types.FileFault{File: b.FileName}}
		}
		if to == nil || simulator.FindReference(host.Datastore, l.Datastore) == nil {
			return &types.InvalidArgument{InvalidProperty: "spec.disk.datastore"}
		}
		if from.Self == to.Self {
			continue
		}
		if _, err := os.Stat(path.Join(from.Summary.Url, p.Path)); err != nil {
			return &types.FileNotFound{FileFault: types.FileFault{File: b.FileName}}
		}
		if _, err := os.Stat(path.Join(to.Summary.Url, p.Path)); err == nil {
			return &types.FileAlreadyExists{FileFault: types.FileFault{File: (&object.DatastorePath{Datastore: to.Name, Path: p.Path}).String()}}
		}
		moves = append(moves, move{disk, b, from, to, p.Path})
	}
	for _, m := range moves {
		if err := os.MkdirAll(path.Join(m.to.Summary.Url, path.Dir(m.rel)), 0o755); err != nil {
			return &types.CannotCreateFile{FileFault: types.FileFault{File: m.rel}}
		}
		// The descriptor and its extents, as the simulator writes them
		// (VirtualDiskBackingFileName's -flat) or a client may (-delta).
		base := strings.TrimSuffix(m.rel, ".vmdk")
		for _, f := range []string{base + "-flat.vmdk", base + "-delta.vmdk", m.rel} {
			src, dst := path.Join(m.from.Summary.Url, f), path.Join(m.to.Summary.Url, f)
			if _, err := os.Stat(src); err != nil {
				continue
			}
			if err := os.Rename(src, dst); err != nil {
				return &types.CannotAccessFile{FileFault: types.FileFault{File: f}}
			}
		}
		m.b.FileName = (&object.DatastorePath{Datastore: m.to.Name, Path: m.rel}).String()
		m.b.Datastore = &m.to.Self
		size := m.disk.CapacityInBytes
		if size == 0 {
			size = m.disk.CapacityInKB * 1024
		}
		for _, d := range []struct {
			ds    *simulator.Datastore
			delta int64
		}{{m.from, size}, {m.to, -size}} {
			ctx.WithLock(d.ds, func() {
				d.ds.Summary.FreeSpace += d.delta
				d.ds.Info.GetDatastoreInfo().FreeSpace = d.ds.Summary.FreeSpace
			})
		}
	}
	if len(moves) == 0 {
		return nil
	}
	ctx.Update(vm.VirtualMachine, []types.PropertyChange{{Name: "config.hardware.device", Val: []types.BaseVirtualDevice(devices)}})
	// Rebuilds layout, layoutEx and storage from the disks' new files; its
	// only faults are of that bookkeeping, not of the move, which is done.
	_ = vm.RefreshStorageInfo(ctx, &types.RefreshStorageInfo{This: vm.Self})
	vm.updateDatastores(ctx)
	return nil
}

// updateDatastores sets the VM's datastores to those holding its home or
// a file of one of its disks, and each datastore's VM list to match.
func (vm *storageVMotion) updateDatastores(ctx *simulator.Context) {
	host := ctx.Map.Get(*vm.Runtime.Host).(*simulator.HostSystem)
	names := []string{vm.Config.Files.VmPathName}
	for _, dev := range object.VirtualDeviceList(vm.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil)) {
		for b := dev.GetVirtualDevice().Backing; b != nil; {
			fb, ok := b.(types.BaseVirtualDeviceFileBackingInfo)
			if !ok {
				break
			}
			names = append(names, fb.GetVirtualDeviceFileBackingInfo().FileName)
			flat, ok := b.(*types.VirtualDiskFlatVer2BackingInfo)
			if !ok || flat.Parent == nil {
				break
			}
			b = flat.Parent
		}
	}
	var used []types.ManagedObjectReference
	for _, n := range names {
		var p object.DatastorePath
		p.FromString(n)
		if ds, ok := ctx.Map.FindByName(p.Datastore, host.Datastore).(*simulator.Datastore); ok && simulator.FindReference(used, ds.Self) == nil {
			used = append(used, ds.Self)
		}
	}
	for _, ref := range host.Datastore {
		ds := ctx.Map.Get(ref).(*simulator.Datastore)
		if simulator.FindReference(used, ref) != nil {
			ctx.Map.AddReference(ctx, ds, &ds.Vm, vm.Self)
		} else if simulator.FindReference(vm.Datastore, ref) != nil {
			ctx.Map.RemoveReference(ctx, ds, &ds.Vm, vm.Self)
		}
	}
	ctx.Update(vm.VirtualMachine, []types.PropertyChange{{Name: "datastore", Val: used}})
}
