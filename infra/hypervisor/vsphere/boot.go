package vsphere

import (
	"context"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// Boot order, as the libvirt driver sets it (bootOrder in domainxml.go):
// the spec's BootOrder when it gives one; otherwise the CD-ROM first when
// it holds an ISO (a VM deployed from an ISO installs from it onto its
// blank disk), the disk first else. The order goes into the VM's
// config.bootOptions by a reconfigure once the VM exists, naming its
// devices by the keys vCenter gave them. A VM with neither an ISO nor an
// order asked for keeps vCenter's default (no order set: the firmware's,
// which tries the disk before the CD-ROM), costing no reconfigure per
// deploy, unless it still has a CD-ROM first from an earlier ISO: it goes
// back to the disk first.

// bootOrder is the order a VM's devices boot in for spec; nil leaves the
// VM's order as it is (see above).
func bootOrder(spec hypervisor.VMSpec, devs object.VirtualDeviceList) []types.BaseVirtualMachineBootOptionsBootableDevice {
	want := spec.BootOrder
	if len(want) == 0 {
		cd, ok := spec.CDROM()
		if !ok || cd.Path == "" {
			return nil
		}
		want = []hypervisor.BootDevice{hypervisor.BootCDROM, hypervisor.BootDisk}
	}
	var out []types.BaseVirtualMachineBootOptionsBootableDevice
	seen := map[hypervisor.BootDevice]bool{}
	for _, b := range want {
		if seen[b] {
			continue
		}
		seen[b] = true
		if dev := bootDevice(b, spec, devs); dev != nil {
			out = append(out, dev)
		}
	}
	return out
}

// diskFirst is the order that puts a VM's root disk back first (the
// CD-ROM after it, as the firmware's default has it).
func diskFirst(spec hypervisor.VMSpec, devs object.VirtualDeviceList) []types.BaseVirtualMachineBootOptionsBootableDevice {
	var out []types.BaseVirtualMachineBootOptionsBootableDevice
	for _, b := range []hypervisor.BootDevice{hypervisor.BootDisk, hypervisor.BootCDROM} {
		if dev := bootDevice(b, spec, devs); dev != nil {
			out = append(out, dev)
		}
	}
	return out
}

// bootDevice names one boot device of the VM; nil when it has none.
func bootDevice(b hypervisor.BootDevice, spec hypervisor.VMSpec, devs object.VirtualDeviceList) types.BaseVirtualMachineBootOptionsBootableDevice {
	switch b {
	case hypervisor.BootCDROM:
		if len(devs.SelectByType((*types.VirtualCdrom)(nil))) > 0 {
			return &types.VirtualMachineBootOptionsBootableCdromDevice{}
		}
	case hypervisor.BootDisk:
		if key, ok := rootDiskKey(spec, devs); ok {
			return &types.VirtualMachineBootOptionsBootableDiskDevice{DeviceKey: key}
		}
	case hypervisor.BootNetwork:
		for _, d := range devs {
			if _, ok := d.(types.BaseVirtualEthernetCard); ok {
				return &types.VirtualMachineBootOptionsBootableEthernetDevice{DeviceKey: d.GetVirtualDevice().Key}
			}
		}
	}
	return nil
}

// rootDiskKey is the device key of the VM's root disk: the spec's disk of
// the lowest device id, found by its file, else the VM's first disk.
func rootDiskKey(spec hypervisor.VMSpec, devs object.VirtualDeviceList) (int32, bool) {
	root := ""
	low := -1
	for _, d := range spec.Disks {
		if !d.CDROM && (low < 0 || d.DeviceID < low) {
			root, low = d.Path, d.DeviceID
		}
	}
	disks := devs.SelectByType((*types.VirtualDisk)(nil))
	for _, d := range disks {
		if root != "" && diskFile(d.(*types.VirtualDisk)) == root {
			return d.GetVirtualDevice().Key, true
		}
	}
	if len(disks) > 0 {
		return disks[0].GetVirtualDevice().Key, true
	}
	return 0, false
}

// bootKey spells a boot order, to compare orders and key their tasks.
func bootKey(order []types.BaseVirtualMachineBootOptionsBootableDevice) string {
	var b strings.Builder
	for _, d := range order {
		switch x := d.(type) {
		case *types.VirtualMachineBootOptionsBootableCdromDevice:
			b.WriteString("cdrom,")
		case *types.VirtualMachineBootOptionsBootableDiskDevice:
			b.WriteString("disk" + strconv.Itoa(int(x.DeviceKey)) + ",")
		case *types.VirtualMachineBootOptionsBootableEthernetDevice:
			b.WriteString("net" + strconv.Itoa(int(x.DeviceKey)) + ",")
		default:
			b.WriteString("other,")
		}
	}
	return b.String()
}

// cdromFirst tells whether a boot order starts with the CD-ROM.
func cdromFirst(order []types.BaseVirtualMachineBootOptionsBootableDevice) bool {
	if len(order) == 0 {
		return false
	}
	_, ok := order[0].(*types.VirtualMachineBootOptionsBootableCdromDevice)
	return ok
}

// setBootOrder brings a powered-off VM's boot order to what spec asks
// (see above); one already so is left alone.
func (t *hostTarget) setBootOrder(ctx context.Context, ref types.ManagedObjectReference, vm *mo.VirtualMachine, spec hypervisor.VMSpec) error {
	if vm.Config == nil {
		return nil
	}
	devs := object.VirtualDeviceList(vm.Config.Hardware.Device)
	var cur []types.BaseVirtualMachineBootOptionsBootableDevice
	if vm.Config.BootOptions != nil {
		cur = vm.Config.BootOptions.BootOrder
	}
	want := bootOrder(spec, devs)
	if want == nil {
		if !cdromFirst(cur) {
			return nil
		}
		want = diskFirst(spec, devs)
	}
	if len(want) == 0 || bootKey(want) == bootKey(cur) {
		return nil
	}
	cs := types.VirtualMachineConfigSpec{BootOptions: &types.VirtualMachineBootOptions{BootOrder: want}}
	return classify("DefineVM", spec.Name, t.reconfigure(ctx, "boot:"+ref.Value+":"+bootKey(want), ref, cs))
}
