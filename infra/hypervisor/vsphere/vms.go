package vsphere

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// DefaultNetworkLabel is the port group a NIC joins when its traffic type
// has no vmwarenetworklabel: ESXi's default standard port group.
const DefaultNetworkLabel = "VM Network"

// vmProps are the properties VMInfo is made of.
var vmProps = []string{"name", "config.instanceUuid", "config.template", "config.hardware", "config.bootOptions", "runtime.powerState", "runtime.host"}

// findVM looks a VM up by its instance UUID (what Nimbus sets to the VM's
// UUID), or by name in the datacenter's VM folder when the reference has
// no UUID. It answers nil when there is none.
func (t *hostTarget) findVM(ctx context.Context, r hypervisor.VMRef) (*types.ManagedObjectReference, error) {
	si := object.NewSearchIndex(t.c.client())
	if r.UUID != "" {
		ref, err := si.FindByUuid(ctx, t.dc, r.UUID, true, types.NewBool(true))
		if err != nil {
			return nil, classify("find", r.String(), err)
		}
		if ref != nil {
			v := ref.Reference()
			return &v, nil
		}
		return nil, nil
	}
	return t.findVMByName(ctx, r.Name)
}

func (t *hostTarget) findVMByName(ctx context.Context, name string) (*types.ManagedObjectReference, error) {
	if name == "" {
		return nil, nil
	}
	ref, err := object.NewSearchIndex(t.c.client()).FindByInventoryPath(ctx, "/"+escapeName(t.loc.Datacenter)+"/vm/"+escapeName(name))
	if err != nil {
		return nil, classify("find", name, err)
	}
	if ref == nil || ref.Reference().Type != "VirtualMachine" {
		return nil, nil
	}
	v := ref.Reference()
	return &v, nil
}

// mustVM is findVM where a missing VM is ErrNotFound.
func (t *hostTarget) mustVM(ctx context.Context, op string, r hypervisor.VMRef) (types.ManagedObjectReference, error) {
	ref, err := t.findVM(ctx, r)
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	if ref == nil {
		return types.ManagedObjectReference{}, hypervisor.Errorf(driverName, op, r.String(), hypervisor.ErrNotFound, "no such VM in vCenter %s", t.c.ep.URL.Host)
	}
	return *ref, nil
}

// vm reads a VM's properties.
func (t *hostTarget) vm(ctx context.Context, ref types.ManagedObjectReference) (*mo.VirtualMachine, error) {
	var vm mo.VirtualMachine
	if err := property.DefaultCollector(t.c.client()).RetrieveOne(ctx, ref, vmProps, &vm); err != nil {
		return nil, classify("read", ref.Value, err)
	}
	return &vm, nil
}

// info turns a VM's properties into what Nimbus sees.
func (t *hostTarget) info(h hypervisor.Host, vm *mo.VirtualMachine) hypervisor.VMInfo {
	out := hypervisor.VMInfo{Name: vm.Name, State: stateOf(vm.Runtime.PowerState), Metadata: map[string]string{"vsphere.vm": vm.Self.Value}}
	if vm.Runtime.Host != nil {
		out.Metadata["vsphere.host"] = vm.Runtime.Host.Value
		if *vm.Runtime.Host == t.host {
			out.HostID = h.ID
		}
	}
	if vm.Config == nil {
		return out
	}
	out.UUID = vm.Config.InstanceUuid
	out.VCPUs = int(vm.Config.Hardware.NumCPU)
	out.MemoryBytes = int64(vm.Config.Hardware.MemoryMB) << 20
	devs := object.VirtualDeviceList(vm.Config.Hardware.Device)
	for _, d := range devs {
		switch x := d.(type) {
		case *types.VirtualDisk:
			disk := hypervisor.Disk{Format: "vmdk", Bus: "scsi", SizeBytes: x.CapacityInBytes}
			if b, ok := x.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
				disk.Path = b.GetVirtualDeviceFileBackingInfo().FileName
			}
			if x.UnitNumber != nil {
				disk.DeviceID = deviceIDOf(*x.UnitNumber)
			}
			out.Disks = append(out.Disks, disk)
		case *types.VirtualCdrom:
			// The drive counts when it holds an ISO.
			if b, ok := x.Backing.(*types.VirtualCdromIsoBackingInfo); ok {
				out.Disks = append(out.Disks, hypervisor.Disk{CDROM: true, ReadOnly: true, Bus: "ide", Path: b.FileName, Format: "iso"})
			}
		case types.BaseVirtualEthernetCard:
			card := x.GetVirtualEthernetCard()
			nic := hypervisor.NIC{MAC: card.MacAddress, Model: devs.Type(d)}
			switch b := card.Backing.(type) {
			case *types.VirtualEthernetCardNetworkBackingInfo:
				nic.Label = b.DeviceName
			case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
				nic.Label = t.c.cache.portgroupName(b.Port.PortgroupKey)
			}
			out.NICs = append(out.NICs, nic)
		}
	}
	return out
}

func stateOf(s types.VirtualMachinePowerState) hypervisor.State {
	switch s {
	case types.VirtualMachinePowerStatePoweredOn:
		return hypervisor.StateRunning
	case types.VirtualMachinePowerStatePoweredOff:
		return hypervisor.StateStopped
	case types.VirtualMachinePowerStateSuspended:
		return hypervisor.StatePaused
	}
	return hypervisor.StateUnknown
}

// unitOf maps a CloudStack device id to a SCSI unit number (unit 7 is the
// controller's own); deviceIDOf maps back.
func unitOf(deviceID int) int32 {
	if deviceID >= 7 {
		return int32(deviceID + 1)
	}
	return int32(deviceID)
}

func deviceIDOf(unit int32) int {
	if unit > 7 {
		return int(unit - 1)
	}
	return int(unit)
}

// diskDevice is an existing vmdk attached to controller key at unit.
func diskDevice(path string, controller, key, unit int32) *types.VirtualDisk {
	return &types.VirtualDisk{
		VirtualDevice: types.VirtualDevice{
			Key: key, ControllerKey: controller, UnitNumber: types.NewInt32(unit),
			Backing: &types.VirtualDiskFlatVer2BackingInfo{
				DiskMode:                     string(types.VirtualDiskModePersistent),
				VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: path},
			},
		},
	}
}

// datastoreOf names the datastore of a "[ds] path" file.
func datastoreOf(path string) string {
	var p object.DatastorePath
	if !p.FromString(path) {
		return ""
	}
	return p.Datastore
}

// networkBacking returns the NIC backing of the port group a label names:
// a standard port group or a distributed one (remembered per session).
func (t *hostTarget) networkBacking(ctx context.Context, label string) (types.BaseVirtualDeviceBackingInfo, error) {
	if label == "" {
		label = DefaultNetworkLabel
	}
	// CloudStack's vmwarenetworklabel is "name[,vlan[,type]]": the port
	// group is the first field.
	name, _, _ := strings.Cut(label, ",")
	name = strings.TrimSpace(name)
	key := "net:" + t.loc.Datacenter + "/" + name
	if b := t.c.cache.net(key); b != nil {
		return b, nil
	}
	f := find.NewFinder(t.c.client(), false)
	f.SetDatacenter(t.dc)
	n, err := f.Network(ctx, name)
	if err != nil {
		var nf *find.NotFoundError
		if errors.As(err, &nf) {
			return nil, hypervisor.Errorf(driverName, "DefineVM", name, hypervisor.ErrInvalid,
				"no port group %q in datacenter %s (the traffic type's vmwarenetworklabel names it)", name, t.loc.Datacenter)
		}
		return nil, classify("find", name, err)
	}
	b, err := n.EthernetCardBackingInfo(ctx)
	if err != nil {
		return nil, classify("find", name, err)
	}
	if db, ok := b.(*types.VirtualEthernetCardDistributedVirtualPortBackingInfo); ok {
		t.c.cache.putPortgroup(db.Port.PortgroupKey, name)
	}
	t.c.cache.putNet(key, b)
	return b, nil
}

// guestID maps an OS type name to a vSphere guest id, roughly.
func guestID(osType string) string {
	s := strings.ToLower(osType)
	switch {
	case strings.Contains(s, "windows"):
		return string(types.VirtualMachineGuestOsIdentifierWindows9_64Guest)
	case strings.Contains(s, "ubuntu"):
		return string(types.VirtualMachineGuestOsIdentifierUbuntu64Guest)
	case strings.Contains(s, "debian"):
		return string(types.VirtualMachineGuestOsIdentifierDebian11_64Guest)
	case strings.Contains(s, "centos"), strings.Contains(s, "red hat"), strings.Contains(s, "rhel"), strings.Contains(s, "rocky"):
		return string(types.VirtualMachineGuestOsIdentifierRhel8_64Guest)
	case strings.Contains(s, "linux"):
		return string(types.VirtualMachineGuestOsIdentifierOtherLinux64Guest)
	}
	return string(types.VirtualMachineGuestOsIdentifierOtherGuest64)
}

// configSpec is the whole definition of a new VM: shape, disks (existing
// vmdk files the storage driver made) and NICs on their port groups.
func (t *hostTarget) configSpec(ctx context.Context, spec hypervisor.VMSpec) (types.VirtualMachineConfigSpec, error) {
	ds := ""
	for _, d := range spec.Disks {
		if !d.CDROM {
			ds = datastoreOf(d.Path)
			break
		}
	}
	if ds == "" {
		return types.VirtualMachineConfigSpec{}, hypervisor.Errorf(driverName, "DefineVM", spec.Name, hypervisor.ErrInvalid,
			"a vSphere VM needs a root disk on a datastore ([datastore] path), not %v", spec.Disks)
	}
	cs := types.VirtualMachineConfigSpec{
		Name: spec.Name, InstanceUuid: spec.UUID, Uuid: spec.UUID, GuestId: guestID(spec.OSType),
		NumCPUs: int32(spec.VCPUs), MemoryMB: spec.MemoryBytes >> 20,
		Annotation:          "Nimbus VM " + spec.DisplayName,
		Files:               &types.VirtualMachineFileInfo{VmPathName: "[" + ds + "]"},
		CpuHotAddEnabled:    types.NewBool(true),
		MemoryHotAddEnabled: types.NewBool(true),
		ExtraConfig:         []types.BaseOptionValue{&types.OptionValue{Key: "nimbus.vm.uuid", Value: spec.UUID}},
	}
	if spec.MHz > 0 {
		// CPU shares follow the offering's speed, as CloudStack sets them.
		cs.CpuAllocation = &types.ResourceAllocationInfo{Shares: &types.SharesInfo{Level: types.SharesLevelCustom, Shares: int32(spec.MHz * spec.VCPUs)}}
	}
	const ctrlKey = -100
	ctrl := &types.ParaVirtualSCSIController{VirtualSCSIController: types.VirtualSCSIController{
		SharedBus: types.VirtualSCSISharingNoSharing, ScsiCtlrUnitNumber: 7,
		VirtualController: types.VirtualController{BusNumber: 0, VirtualDevice: types.VirtualDevice{Key: ctrlKey}},
	}}
	changes := []types.BaseVirtualDeviceConfigSpec{&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: ctrl}}
	key := int32(-101)
	for _, d := range spec.Disks {
		if d.CDROM {
			continue
		}
		if d.DeviceID < 0 || unitOf(d.DeviceID) > 15 {
			return cs, hypervisor.Errorf(driverName, "DefineVM", spec.Name, hypervisor.ErrInvalid, "disk device id %d does not fit a SCSI controller", d.DeviceID)
		}
		dev := diskDevice(d.Path, ctrlKey, key, unitOf(d.DeviceID))
		ctrl.Device = append(ctrl.Device, key)
		key--
		changes = append(changes, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: dev})
	}
	{
		// Every VM gets a drive (empty without an ISO), on the first IDE
		// controller, which every VM has (key 200): IDE devices cannot be
		// added to a running VM, and attachIso changes the medium live. With
		// an ISO to deploy from, the CD-ROM boots first (boot.go).
		cd, _ := spec.CDROM()
		ide := &types.VirtualIDEController{VirtualController: types.VirtualController{VirtualDevice: types.VirtualDevice{Key: 200}}}
		dev, err := object.VirtualDeviceList{}.CreateCdrom(ide)
		if err != nil {
			return cs, hypervisor.Errorf(driverName, "DefineVM", spec.Name, hypervisor.ErrInvalid, "%v", err)
		}
		dev.Key = key
		key--
		setMedia(dev, cd.Path)
		changes = append(changes, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: dev})
	}
	for _, n := range spec.NICs {
		b, err := t.nicBacking(ctx, n)
		if err != nil {
			return cs, err
		}
		model := "vmxnet3"
		if m := strings.ToLower(n.Model); m == "e1000" || m == "e1000e" {
			model = m
		}
		dev, err := object.VirtualDeviceList{}.CreateEthernetCard(model, b)
		if err != nil {
			return cs, hypervisor.Errorf(driverName, "DefineVM", spec.Name, hypervisor.ErrInvalid, "%v", err)
		}
		card := dev.(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
		card.Key = key
		key--
		if n.MAC != "" {
			card.MacAddress, card.AddressType = n.MAC, string(types.VirtualEthernetCardMacTypeManual)
		}
		changes = append(changes, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: dev})
	}
	cs.DeviceChange = changes
	return cs, nil
}

// DefineVM creates the VM around the disks the storage driver made
// (CreateVM_Task on the host, in its cluster's root resource pool, the VM's
// files on the root disk's datastore), with its CPU, memory and NICs on the
// port groups the traffic labels name. A VM of the same UUID is reshaped
// if it is stopped and differs; a creation an earlier attempt started is
// waited for, not started again.
func (d *Driver) DefineVM(ctx context.Context, h hypervisor.Host, spec hypervisor.VMSpec) (hypervisor.VMInfo, error) {
	if err := spec.Validate(); err != nil {
		return hypervisor.VMInfo{}, err
	}
	t, err := d.host(ctx, h)
	if err != nil {
		return hypervisor.VMInfo{}, err
	}
	key := "define:" + spec.UUID
	if _, err := t.c.reattach(ctx, key); err != nil {
		return hypervisor.VMInfo{}, classify("DefineVM", spec.Name, err)
	}
	ref, err := t.findVM(ctx, spec.Ref())
	if err != nil {
		return hypervisor.VMInfo{}, err
	}
	if ref != nil {
		t.c.cache.put("vm:"+spec.UUID, *ref)
		return t.reshape(ctx, h, *ref, spec)
	}
	if other, err := t.findVMByName(ctx, spec.Name); err != nil {
		return hypervisor.VMInfo{}, err
	} else if other != nil {
		return hypervisor.VMInfo{}, hypervisor.Errorf(driverName, "DefineVM", spec.Name, hypervisor.ErrInvalid,
			"another VM (%s) already holds the name %s in vCenter", other.Value, spec.Name)
	}
	cs, err := t.configSpec(ctx, spec)
	if err != nil {
		return hypervisor.VMInfo{}, err
	}
	folder, err := t.vmFolder(ctx)
	if err != nil {
		return hypervisor.VMInfo{}, classify("DefineVM", spec.Name, err)
	}
	host := t.host
	info, err := t.c.runTask(ctx, key, func(ctx context.Context) (types.ManagedObjectReference, error) {
		res, err := methods.CreateVM_Task(ctx, t.c.client(), &types.CreateVM_Task{This: folder, Config: cs, Pool: t.pool, Host: &host})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	if err != nil && fault.Is(err, &types.DuplicateName{}) {
		// The name was taken meanwhile: by this VM when an attempt whose
		// task reference was lost (a worker that died) created it.
		if ref, ferr := t.findVM(ctx, spec.Ref()); ferr == nil && ref != nil {
			t.c.cache.put("vm:"+spec.UUID, *ref)
			return t.reshape(ctx, h, *ref, spec)
		}
	}
	if err != nil {
		return hypervisor.VMInfo{}, classify("DefineVM", spec.Name, err)
	}
	vmRef, ok := info.Result.(types.ManagedObjectReference)
	if !ok {
		return hypervisor.VMInfo{}, hypervisor.Errorf(driverName, "DefineVM", spec.Name, nil, "CreateVM_Task answered %T", info.Result)
	}
	t.c.cache.put("vm:"+spec.UUID, vmRef)
	vm, err := t.vm(ctx, vmRef)
	if err != nil {
		return hypervisor.VMInfo{}, err
	}
	// The boot order names devices by the keys vCenter gave them, so it
	// is set once the VM exists (see boot.go).
	if err := t.setBootOrder(ctx, vmRef, vm, spec); err != nil {
		return hypervisor.VMInfo{}, err
	}
	return t.info(h, vm), nil
}

// vmFolder is the datacenter's VM folder, remembered per session.
func (t *hostTarget) vmFolder(ctx context.Context) (types.ManagedObjectReference, error) {
	key := "vmfolder:" + t.dc.Reference().Value
	if r, ok := t.c.cache.get(key); ok {
		return r, nil
	}
	var dc mo.Datacenter
	if err := property.DefaultCollector(t.c.client()).RetrieveOne(ctx, t.dc.Reference(), []string{"vmFolder"}, &dc); err != nil {
		return types.ManagedObjectReference{}, err
	}
	t.c.cache.put(key, dc.VmFolder)
	return dc.VmFolder, nil
}

// reshape brings an existing VM to the spec's CPU and memory while it is
// stopped (a running VM keeps its shape: ResizeVM changes it live).
func (t *hostTarget) reshape(ctx context.Context, h hypervisor.Host, ref types.ManagedObjectReference, spec hypervisor.VMSpec) (hypervisor.VMInfo, error) {
	vm, err := t.vm(ctx, ref)
	if err != nil {
		return hypervisor.VMInfo{}, err
	}
	if vm.Config != nil && vm.Config.Template {
		return hypervisor.VMInfo{}, hypervisor.Errorf(driverName, "DefineVM", spec.Name, hypervisor.ErrInvalid, "%s is a template", ref.Value)
	}
	if vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOff {
		// A retry of a DefineVM that created the VM, or a stopped VM
		// defined again: its boot order follows the spec (see boot.go).
		if err := t.setBootOrder(ctx, ref, vm, spec); err != nil {
			return hypervisor.VMInfo{}, err
		}
	}
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff || vm.Config == nil ||
		(int(vm.Config.Hardware.NumCPU) == spec.VCPUs && int64(vm.Config.Hardware.MemoryMB) == spec.MemoryBytes>>20) {
		return t.info(h, vm), nil
	}
	cs := types.VirtualMachineConfigSpec{NumCPUs: int32(spec.VCPUs), MemoryMB: spec.MemoryBytes >> 20}
	if err := t.reconfigure(ctx, "reshape:"+spec.UUID, ref, cs); err != nil {
		return hypervisor.VMInfo{}, classify("DefineVM", spec.Name, err)
	}
	if vm, err = t.vm(ctx, ref); err != nil {
		return hypervisor.VMInfo{}, err
	}
	return t.info(h, vm), nil
}

// reconfigure runs ReconfigVM_Task as a tracked task.
func (t *hostTarget) reconfigure(ctx context.Context, key string, ref types.ManagedObjectReference, cs types.VirtualMachineConfigSpec) error {
	if _, err := t.c.reattach(ctx, key); err != nil {
		return err
	}
	_, err := t.c.runTask(ctx, key, func(ctx context.Context) (types.ManagedObjectReference, error) {
		res, err := methods.ReconfigVM_Task(ctx, t.c.client(), &types.ReconfigVM_Task{This: ref, Spec: cs})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	return err
}

// simpleTask runs a VM task without reattaching: power operations, whose
// result a retry reads back from the VM's state instead.
func (t *hostTarget) simpleTask(ctx context.Context, key string, start func(ctx context.Context) (types.ManagedObjectReference, error)) error {
	_, err := t.c.runTask(ctx, key, start)
	return err
}

// powerState reads a VM's power state.
func (t *hostTarget) powerState(ctx context.Context, ref types.ManagedObjectReference) (types.VirtualMachinePowerState, error) {
	var vm mo.VirtualMachine
	if err := property.DefaultCollector(t.c.client()).RetrieveOne(ctx, ref, []string{"runtime.powerState"}, &vm); err != nil {
		return "", err
	}
	return vm.Runtime.PowerState, nil
}

// StartVM powers a VM on; a running VM is success.
func (d *Driver) StartVM(ctx context.Context, h hypervisor.Host, r hypervisor.VMRef) error {
	t, err := d.host(ctx, h)
	if err != nil {
		return err
	}
	if ref, ok := t.c.cache.get("vm:" + r.UUID); ok && r.UUID != "" {
		// Defined through this session a moment ago (a deployment's define
		// and start): power it on without looking it up and reading its
		// state again. A VM gone since (its id is never reused) takes the
		// long way.
		if err := t.powerOn(ctx, ref); err == nil || !fault.Is(err, &types.ManagedObjectNotFound{}) {
			return classify("StartVM", r.String(), err)
		}
		t.c.cache.forget("vm:" + r.UUID)
	}
	ref, err := t.mustVM(ctx, "StartVM", r)
	if err != nil {
		return err
	}
	return classify("StartVM", r.String(), t.powerOn(ctx, ref))
}

// powerOn powers a VM on; a running VM is success.
func (t *hostTarget) powerOn(ctx context.Context, ref types.ManagedObjectReference) error {
	if _, err := t.c.reattach(ctx, "poweron:"+ref.Value); err != nil {
		return err
	}
	// No read of the power state first: powering on a running VM fails
	// with InvalidPowerState, read back below.
	host := t.host
	err := t.simpleTask(ctx, "poweron:"+ref.Value, func(ctx context.Context) (types.ManagedObjectReference, error) {
		res, err := methods.PowerOnVM_Task(ctx, t.c.client(), &types.PowerOnVM_Task{This: ref, Host: &host})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	if err != nil && fault.Is(err, &types.InvalidPowerState{}) {
		if st, serr := t.powerState(ctx, ref); serr == nil && st == types.VirtualMachinePowerStatePoweredOn {
			return nil // running already
		}
	}
	return err
}

// powerOff powers a VM off at once; an off VM is success.
func (t *hostTarget) powerOff(ctx context.Context, ref types.ManagedObjectReference) error {
	if _, err := t.c.reattach(ctx, "poweroff:"+ref.Value); err != nil {
		return err
	}
	st, err := t.powerState(ctx, ref)
	if err != nil || st == types.VirtualMachinePowerStatePoweredOff {
		return err
	}
	err = t.simpleTask(ctx, "poweroff:"+ref.Value, func(ctx context.Context) (types.ManagedObjectReference, error) {
		res, err := methods.PowerOffVM_Task(ctx, t.c.client(), &types.PowerOffVM_Task{This: ref})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	if err != nil && fault.Is(err, &types.InvalidPowerState{}) {
		if st, serr := t.powerState(ctx, ref); serr == nil && st == types.VirtualMachinePowerStatePoweredOff {
			return nil
		}
	}
	return err
}

// toolsMissing tells whether a guest operation failed for want of VMware
// Tools in the guest.
func toolsMissing(err error) bool {
	return fault.Is(err, &types.ToolsUnavailable{}) || fault.Is(err, &types.ToolsUnavailableFault{}) ||
		fault.Is(err, &types.NotSupported{}) || fault.Is(err, &types.InvalidState{})
}

// StopVM shuts the guest down through VMware Tools and waits up to the
// timeout (default 2 minutes) before powering it off; without Tools, or
// with Force, it powers off at once. An off VM is success.
func (d *Driver) StopVM(ctx context.Context, h hypervisor.Host, r hypervisor.VMRef, opts hypervisor.StopOptions) error {
	t, err := d.host(ctx, h)
	if err != nil {
		return err
	}
	ref, err := t.mustVM(ctx, "StopVM", r)
	if err != nil {
		return err
	}
	st, err := t.powerState(ctx, ref)
	if err != nil {
		return classify("StopVM", r.String(), err)
	}
	if st == types.VirtualMachinePowerStatePoweredOff {
		return nil
	}
	if !opts.Force && st == types.VirtualMachinePowerStatePoweredOn {
		_, err := methods.ShutdownGuest(ctx, t.c.client(), &types.ShutdownGuest{This: ref})
		switch {
		case err == nil:
			timeout := opts.Timeout
			if timeout <= 0 {
				timeout = 2 * time.Minute
			}
			deadline := time.Now().Add(timeout)
			for time.Now().Before(deadline) {
				if st, err := t.powerState(ctx, ref); err == nil && st == types.VirtualMachinePowerStatePoweredOff {
					return nil
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(time.Second):
				}
			}
		case toolsMissing(err):
		default:
			return classify("StopVM", r.String(), err)
		}
	}
	return classify("StopVM", r.String(), t.powerOff(ctx, ref))
}

// RebootVM restarts the guest through VMware Tools, or resets the VM when
// it has none. A VM that is not running is ErrInvalid.
func (d *Driver) RebootVM(ctx context.Context, h hypervisor.Host, r hypervisor.VMRef) error {
	t, err := d.host(ctx, h)
	if err != nil {
		return err
	}
	ref, err := t.mustVM(ctx, "RebootVM", r)
	if err != nil {
		return err
	}
	st, err := t.powerState(ctx, ref)
	if err != nil {
		return classify("RebootVM", r.String(), err)
	}
	if st != types.VirtualMachinePowerStatePoweredOn {
		return hypervisor.Errorf(driverName, "RebootVM", r.String(), hypervisor.ErrInvalid, "the VM is %s", st)
	}
	if _, err := methods.RebootGuest(ctx, t.c.client(), &types.RebootGuest{This: ref}); err == nil {
		return nil
	} else if !toolsMissing(err) {
		return classify("RebootVM", r.String(), err)
	}
	err = t.simpleTask(ctx, "reset:"+ref.Value, func(ctx context.Context) (types.ManagedObjectReference, error) {
		res, err := methods.ResetVM_Task(ctx, t.c.client(), &types.ResetVM_Task{This: ref})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	return classify("RebootVM", r.String(), err)
}

// DestroyVM powers the VM off, detaches its disks (they belong to the
// storage driver: vCenter would delete attached ones with the VM) and
// destroys it with its own files (vmx, logs). A missing VM is success.
func (d *Driver) DestroyVM(ctx context.Context, h hypervisor.Host, r hypervisor.VMRef) error {
	t, err := d.host(ctx, h)
	if err != nil {
		return err
	}
	key := "destroy:" + r.UUID + r.Name
	t.c.cache.forget("vm:" + r.UUID)
	if _, err := t.c.reattach(ctx, key); err != nil {
		return classify("DestroyVM", r.String(), err)
	}
	ref, err := t.findVM(ctx, r)
	if err != nil || ref == nil {
		return err
	}
	if err := t.powerOff(ctx, *ref); err != nil {
		return classify("DestroyVM", r.String(), err)
	}
	if err := t.removeAllSnapshots(ctx, *ref); err != nil {
		return classify("DestroyVM", r.String(), err)
	}
	vm, err := t.vm(ctx, *ref)
	if err != nil {
		return err
	}
	if vm.Config != nil && vm.Config.Template {
		return hypervisor.Errorf(driverName, "DestroyVM", r.String(), hypervisor.ErrInvalid, "%s is a template", ref.Value)
	}
	var detach []types.BaseVirtualDeviceConfigSpec
	if vm.Config != nil {
		for _, dev := range object.VirtualDeviceList(vm.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil)) {
			detach = append(detach, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationRemove, Device: dev})
		}
	}
	if len(detach) > 0 {
		if err := t.reconfigure(ctx, "detach-all:"+ref.Value, *ref, types.VirtualMachineConfigSpec{DeviceChange: detach}); err != nil {
			return classify("DestroyVM", r.String(), err)
		}
	}
	err = t.simpleTask(ctx, key, func(ctx context.Context) (types.ManagedObjectReference, error) {
		res, err := methods.Destroy_Task(ctx, t.c.client(), &types.Destroy_Task{This: *ref})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	if err != nil && fault.Is(err, &types.ManagedObjectNotFound{}) {
		return nil
	}
	return classify("DestroyVM", r.String(), err)
}

// VMState reports a VM as vCenter sees it (HostID is h's when it runs on
// h; Metadata["vsphere.host"] names the host it is on otherwise).
func (d *Driver) VMState(ctx context.Context, h hypervisor.Host, r hypervisor.VMRef) (hypervisor.VMInfo, error) {
	t, err := d.host(ctx, h)
	if err != nil {
		return hypervisor.VMInfo{}, err
	}
	ref, err := t.mustVM(ctx, "VMState", r)
	if err != nil {
		return hypervisor.VMInfo{}, err
	}
	vm, err := t.vm(ctx, ref)
	if err != nil {
		return hypervisor.VMInfo{}, err
	}
	return t.info(h, vm), nil
}

// hostVMs reads the VMs vCenter runs on the host (templates excluded):
// those of the host's cluster (a container view of its root resource pool)
// whose runtime.host is the host. The host's own vm list would be one call
// less, but govmomi's simulator does not keep it across vMotion.
func (t *hostTarget) hostVMs(ctx context.Context, props []string) ([]mo.VirtualMachine, error) {
	vc := t.c.client()
	v, err := view.NewManager(vc).CreateContainerView(ctx, t.pool, []string{"VirtualMachine"}, true)
	if err != nil {
		return nil, err
	}
	defer func() { _ = v.Destroy(context.WithoutCancel(ctx)) }()
	var all []mo.VirtualMachine
	if err := v.Retrieve(ctx, []string{"VirtualMachine"}, append(props, "runtime.host", "config.template"), &all); err != nil {
		return nil, err
	}
	out := all[:0]
	for _, vm := range all {
		if vm.Runtime.Host != nil && *vm.Runtime.Host == t.host && (vm.Config == nil || !vm.Config.Template) {
			out = append(out, vm)
		}
	}
	return out, nil
}

// ListVMs reports the VMs on the ESXi host (templates excluded).
func (d *Driver) ListVMs(ctx context.Context, h hypervisor.Host) ([]hypervisor.VMInfo, error) {
	t, err := d.host(ctx, h)
	if err != nil {
		return nil, err
	}
	vms, err := t.hostVMs(ctx, vmProps)
	if err != nil {
		return nil, classify("ListVMs", t.loc.Host, err)
	}
	out := make([]hypervisor.VMInfo, 0, len(vms))
	for i := range vms {
		out = append(out, t.info(h, &vms[i]))
	}
	return out, nil
}

// MigrateVM moves a VM to another ESXi host (vMotion: RelocateVM_Task to
// the host and its cluster's root resource pool); its disks stay on their
// datastores. A VM already on the target is success.
func (d *Driver) MigrateVM(ctx context.Context, src hypervisor.Host, r hypervisor.VMRef, dst hypervisor.Host, opts hypervisor.MigrateOptions) error {
	t, err := d.host(ctx, src)
	if err != nil {
		return err
	}
	to, err := d.host(ctx, dst)
	if err != nil {
		return err
	}
	if to.c != t.c {
		return hypervisor.Errorf(driverName, "MigrateVM", r.String(), hypervisor.ErrInvalid, "hosts %s and %s are managed by different vCenters", src, dst)
	}
	key := "migrate:" + r.UUID + ">" + to.host.Value
	if _, err := t.c.reattach(ctx, key); err != nil {
		return classify("MigrateVM", r.String(), err)
	}
	ref, err := t.mustVM(ctx, "MigrateVM", r)
	if err != nil {
		return err
	}
	vm, err := t.vm(ctx, ref)
	if err != nil {
		return err
	}
	if vm.Runtime.Host != nil && *vm.Runtime.Host == to.host {
		return nil
	}
	if opts.Live && vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		return hypervisor.Errorf(driverName, "MigrateVM", r.String(), hypervisor.ErrInvalid, "a live migration needs a running VM; it is %s", vm.Runtime.PowerState)
	}
	host, pool := to.host, to.pool
	_, err = t.c.runTask(ctx, key, func(ctx context.Context) (types.ManagedObjectReference, error) {
		res, err := methods.RelocateVM_Task(ctx, t.c.client(), &types.RelocateVM_Task{This: ref,
			Spec: types.VirtualMachineRelocateSpec{Host: &host, Pool: &pool}, Priority: types.VirtualMachineMovePriorityDefaultPriority})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	return classify("MigrateVM", r.String(), err)
}

// AttachVolume attaches an existing vmdk (live when the VM runs); a disk
// already attached is success.
func (d *Driver) AttachVolume(ctx context.Context, h hypervisor.Host, r hypervisor.VMRef, disk hypervisor.Disk) error {
	t, err := d.host(ctx, h)
	if err != nil {
		return err
	}
	if disk.CDROM {
		return hypervisor.Errorf(driverName, "AttachVolume", r.String(), hypervisor.ErrInvalid, "an ISO goes into the CD-ROM drive (ChangeMedia), not in a disk slot")
	}
	ref, err := t.mustVM(ctx, "AttachVolume", r)
	if err != nil {
		return err
	}
	vm, err := t.vm(ctx, ref)
	if err != nil {
		return err
	}
	devs := object.VirtualDeviceList(vm.Config.Hardware.Device)
	var ctrl types.BaseVirtualController
	used := map[int32]bool{}
	for _, dev := range devs {
		if x, ok := dev.(*types.VirtualDisk); ok {
			if b, ok := x.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok && b.GetVirtualDeviceFileBackingInfo().FileName == disk.Path {
				return nil
			}
		}
		if c, ok := dev.(types.BaseVirtualSCSIController); ok && ctrl == nil {
			ctrl = c.(types.BaseVirtualController)
		}
	}
	if ctrl == nil {
		return hypervisor.Errorf(driverName, "AttachVolume", r.String(), hypervisor.ErrInvalid, "the VM has no SCSI controller")
	}
	ck := ctrl.GetVirtualController().Key
	for _, dev := range devs {
		if v := dev.GetVirtualDevice(); v.ControllerKey == ck && v.UnitNumber != nil {
			used[*v.UnitNumber] = true
		}
	}
	unit := unitOf(disk.DeviceID)
	if disk.DeviceID <= 0 || used[unit] || unit > 15 {
		unit = -1
		for u := int32(1); u <= 15; u++ {
			if u != 7 && !used[u] {
				unit = u
				break
			}
		}
		if unit < 0 {
			return hypervisor.Errorf(driverName, "AttachVolume", r.String(), hypervisor.ErrCapacity, "the VM's SCSI controller is full")
		}
	}
	cs := types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{&types.VirtualDeviceConfigSpec{
		Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: diskDevice(disk.Path, ck, -1, unit),
	}}}
	return classify("AttachVolume", r.String(), t.reconfigure(ctx, "attach:"+ref.Value+":"+disk.Path, ref, cs))
}

// setMedia backs a CD-ROM drive with an ISO file on a datastore ([ds]
// path), connected at power-on, or empties it ("").
func setMedia(dev *types.VirtualCdrom, iso string) {
	if iso == "" {
		dev.Backing = &types.VirtualCdromRemotePassthroughBackingInfo{VirtualDeviceRemoteDeviceBackingInfo: types.VirtualDeviceRemoteDeviceBackingInfo{}}
		dev.Connectable = &types.VirtualDeviceConnectInfo{AllowGuestControl: true}
		return
	}
	dev.Backing = &types.VirtualCdromIsoBackingInfo{VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: iso}}
	dev.Connectable = &types.VirtualDeviceConnectInfo{AllowGuestControl: true, StartConnected: true, Connected: true}
}

// ChangeMedia backs the VM's CD-ROM drive with the ISO file cdrom.Path
// ([datastore] path) or empties it (cdrom.Path ""), live when the VM runs
// (ReconfigVM edit of the drive). A VM without a drive gets one while it
// is powered off. The medium there already is success.
func (d *Driver) ChangeMedia(ctx context.Context, h hypervisor.Host, r hypervisor.VMRef, cdrom hypervisor.Disk) error {
	t, err := d.host(ctx, h)
	if err != nil {
		return err
	}
	ref, err := t.mustVM(ctx, "ChangeMedia", r)
	if err != nil {
		return err
	}
	vm, err := t.vm(ctx, ref)
	if err != nil {
		return err
	}
	devs := object.VirtualDeviceList(vm.Config.Hardware.Device)
	op := types.VirtualDeviceConfigSpecOperationEdit
	var dev *types.VirtualCdrom
	if cds := devs.SelectByType((*types.VirtualCdrom)(nil)); len(cds) > 0 {
		dev = cds[0].(*types.VirtualCdrom)
		cur := ""
		if b, ok := dev.Backing.(*types.VirtualCdromIsoBackingInfo); ok {
			cur = b.FileName
		}
		if cur == cdrom.Path {
			return nil
		}
	} else {
		if cdrom.Path == "" {
			return nil
		}
		if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
			return hypervisor.Errorf(driverName, "ChangeMedia", r.String(), hypervisor.ErrInvalid, "the running VM has no CD-ROM drive; stop it first")
		}
		ide, err := devs.FindIDEController("")
		if err != nil {
			return hypervisor.Errorf(driverName, "ChangeMedia", r.String(), hypervisor.ErrInvalid, "%v", err)
		}
		if dev, err = devs.CreateCdrom(ide); err != nil {
			return hypervisor.Errorf(driverName, "ChangeMedia", r.String(), hypervisor.ErrInvalid, "%v", err)
		}
		op = types.VirtualDeviceConfigSpecOperationAdd
	}
	setMedia(dev, cdrom.Path)
	cs := types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{&types.VirtualDeviceConfigSpec{Operation: op, Device: dev}}}
	return classify("ChangeMedia", r.String(), t.reconfigure(ctx, "media:"+ref.Value+":"+cdrom.Path, ref, cs))
}

// DetachVolume detaches a disk by path (or device id) without deleting
// it; a disk not attached is success.
func (d *Driver) DetachVolume(ctx context.Context, h hypervisor.Host, r hypervisor.VMRef, disk hypervisor.Disk) error {
	t, err := d.host(ctx, h)
	if err != nil {
		return err
	}
	ref, err := t.mustVM(ctx, "DetachVolume", r)
	if err != nil {
		return err
	}
	vm, err := t.vm(ctx, ref)
	if err != nil {
		return err
	}
	for _, dev := range object.VirtualDeviceList(vm.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil)) {
		x := dev.(*types.VirtualDisk)
		path := ""
		if b, ok := x.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
			path = b.GetVirtualDeviceFileBackingInfo().FileName
		}
		match := disk.Path != "" && path == disk.Path
		if disk.Path == "" && x.UnitNumber != nil && deviceIDOf(*x.UnitNumber) == disk.DeviceID && disk.DeviceID != 0 {
			match = true
		}
		if !match {
			continue
		}
		cs := types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{&types.VirtualDeviceConfigSpec{
			Operation: types.VirtualDeviceConfigSpecOperationRemove, Device: dev,
		}}}
		return classify("DetachVolume", r.String(), t.reconfigure(ctx, "detach:"+ref.Value+":"+path, ref, cs))
	}
	return nil
}

// ResizeVM changes vCPUs and memory (live: Nimbus creates VMs with CPU and
// memory hot add enabled, and vSphere only grows a running VM).
func (d *Driver) ResizeVM(ctx context.Context, h hypervisor.Host, r hypervisor.VMRef, rs hypervisor.Resize) error {
	t, err := d.host(ctx, h)
	if err != nil {
		return err
	}
	ref, err := t.mustVM(ctx, "ResizeVM", r)
	if err != nil {
		return err
	}
	vm, err := t.vm(ctx, ref)
	if err != nil {
		return err
	}
	running := vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn
	cs := types.VirtualMachineConfigSpec{}
	if rs.VCPUs > 0 && rs.VCPUs != int(vm.Config.Hardware.NumCPU) {
		if running && rs.VCPUs < int(vm.Config.Hardware.NumCPU) {
			return hypervisor.Errorf(driverName, "ResizeVM", r.String(), hypervisor.ErrInvalid, "vSphere removes no vCPUs from a running VM")
		}
		cs.NumCPUs = int32(rs.VCPUs)
	}
	if mb := rs.MemoryBytes >> 20; mb > 0 && mb != int64(vm.Config.Hardware.MemoryMB) {
		if running && mb < int64(vm.Config.Hardware.MemoryMB) {
			return hypervisor.Errorf(driverName, "ResizeVM", r.String(), hypervisor.ErrInvalid, "vSphere removes no memory from a running VM")
		}
		cs.MemoryMB = mb
	}
	if rs.MHz > 0 {
		n := rs.VCPUs
		if n == 0 {
			n = int(vm.Config.Hardware.NumCPU)
		}
		cs.CpuAllocation = &types.ResourceAllocationInfo{Shares: &types.SharesInfo{Level: types.SharesLevelCustom, Shares: int32(rs.MHz * n)}}
	}
	if cs.NumCPUs == 0 && cs.MemoryMB == 0 && cs.CpuAllocation == nil {
		return nil
	}
	return classify("ResizeVM", r.String(), t.reconfigure(ctx, fmt.Sprintf("resize:%s:%d:%d", ref.Value, cs.NumCPUs, cs.MemoryMB), ref, cs))
}

// ConsoleEndpoint asks vCenter for a WebMKS ticket (the HTML5 console).
// govmomi's vCenter simulator does not implement AcquireTicket, which
// answers ErrNotSupported.
func (d *Driver) ConsoleEndpoint(ctx context.Context, h hypervisor.Host, r hypervisor.VMRef) (hypervisor.Console, error) {
	t, err := d.host(ctx, h)
	if err != nil {
		return hypervisor.Console{}, err
	}
	ref, err := t.mustVM(ctx, "ConsoleEndpoint", r)
	if err != nil {
		return hypervisor.Console{}, err
	}
	res, err := methods.AcquireTicket(ctx, t.c.client(), &types.AcquireTicket{This: ref, TicketType: string(types.VirtualMachineTicketTypeWebmks)})
	if err != nil {
		if soapNotImplemented(err) {
			return hypervisor.Console{}, hypervisor.Errorf(driverName, "ConsoleEndpoint", r.String(), hypervisor.ErrNotSupported,
				"vCenter %s does not hand out WebMKS tickets (AcquireTicket is not implemented)", t.c.ep.URL.Host)
		}
		return hypervisor.Console{}, classify("ConsoleEndpoint", r.String(), err)
	}
	tk := res.Returnval
	host := tk.Host
	if host == "" {
		host = t.c.ep.URL.Hostname()
	}
	port := int(tk.Port)
	if port == 0 {
		port = 443
	}
	u := url.URL{Scheme: "wss", Host: fmt.Sprintf("%s:%d", host, port), Path: "/ticket/" + tk.Ticket}
	return hypervisor.Console{Protocol: "webmks", Host: host, Port: port, Password: tk.Ticket, URL: u.String()}, nil
}

// soapNotImplemented tells whether vCenter answered that it has no such
// method (the simulator's answer to methods it lacks).
func soapNotImplemented(err error) bool {
	if fault.Is(err, &types.NotImplemented{}) || fault.Is(err, &types.MethodNotFound{}) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "not implemented") || strings.Contains(s, "NotImplemented") || strings.Contains(s, "MethodNotFound")
}
