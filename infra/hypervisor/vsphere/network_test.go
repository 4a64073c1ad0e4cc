package vsphere_test

import (
	"context"
	"errors"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// TestNICVLANs defines VMs whose NICs carry VLANs: on a label naming a
// standard port group the NIC lands on a port group with that VLAN made
// on the vSwitch of every host of the cluster; on a label naming a
// distributed port group, on a distributed port group with that VLAN on
// its switch. A second VM reuses both.
func TestNICVLANs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c, err := e.sim.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Logout(ctx)
	pc := property.DefaultCollector(c.Client)

	for i, h := range e.hosts[:2] {
		root, err := e.pools.CreateVolume(ctx, e.ds0, storage.VolumeSpec{ID: "vlan-root", Path: "vlan-root-" + string(rune('a'+i)), SizeBytes: 16 << 20})
		if err != nil {
			t.Fatal(err)
		}
		s := spec("i-2-3"+string(rune('0'+i))+"-VM", "5b9d0a53-6f1e-4c3e-9f4e-0a00000003"+string(rune('0'+i))+"0", hypervisor.Disk{Path: root.Path})
		s.NICs[0].VLAN = 300 // "VM Network": a standard port group of vSwitch0
		s.NICs[1].VLAN = 400 // "DC0_DVPG0": a port group of distributed switch DVS0
		s.NICs[1].Label = "DC0_DVPG0"
		info, err := e.drv.DefineVM(ctx, h, s)
		if err != nil {
			t.Fatalf("DefineVM with VLAN NICs on %s: %v", h.URL, err)
		}
		if len(info.NICs) != 2 || info.NICs[0].Label != "cloud.guest.300-vSwitch0" || info.NICs[1].Label != "cloud.guest.400-DVS0" {
			t.Fatalf("NICs = %+v", info.NICs)
		}
	}

	// The standard port group with VLAN 300 on vSwitch0. The driver adds
	// it on every host of the cluster; the simulator keeps one network
	// object per datacenter and refuses (DuplicateName) the same name on a
	// second host's vSwitch, where a vCenter joins them into one network,
	// so here only the first host shows it.
	var hosts []mo.HostSystem
	var refs []types.ManagedObjectReference
	for _, o := range e.sim.Model.Map().All("HostSystem") {
		refs = append(refs, o.Reference())
	}
	if err := pc.Retrieve(ctx, refs, []string{"name", "configManager.networkSystem"}, &hosts); err != nil {
		t.Fatal(err)
	}
	with := 0
	for _, h := range hosts {
		var ns mo.HostNetworkSystem
		if err := pc.RetrieveOne(ctx, *h.ConfigManager.NetworkSystem, []string{"networkInfo"}, &ns); err != nil {
			t.Fatal(err)
		}
		for _, pg := range ns.NetworkInfo.Portgroup {
			if pg.Spec.Name == "cloud.guest.300-vSwitch0" {
				with++
				if pg.Spec.VlanId != 300 || pg.Spec.VswitchName != "vSwitch0" {
					t.Fatalf("host %s port group = %+v", h.Name, pg.Spec)
				}
			}
		}
	}
	if with == 0 {
		t.Fatalf("no host has port group cloud.guest.300-vSwitch0")
	}
	nets, err := object.NewSearchIndex(c.Client).FindChild(ctx, object.NewFolder(c.Client, e.sim.Model.Map().Any("Datacenter").(*simulator.Datacenter).NetworkFolder), "cloud.guest.300-vSwitch0")
	if err != nil || nets == nil {
		t.Fatalf("no network cloud.guest.300-vSwitch0 in the datacenter: %v", err)
	}

	// The VM's NICs: backed by those port groups; the distributed one
	// carries VLAN 400.
	ref, err := object.NewSearchIndex(c.Client).FindByInventoryPath(ctx, "/DC0/vm/i-2-30-VM")
	if err != nil || ref == nil {
		t.Fatalf("find VM: %v", err)
	}
	var vm mo.VirtualMachine
	if err := pc.RetrieveOne(ctx, ref.Reference(), []string{"config.hardware.device"}, &vm); err != nil {
		t.Fatal(err)
	}
	nics := object.VirtualDeviceList(vm.Config.Hardware.Device).SelectByType((*types.VirtualEthernetCard)(nil))
	if b, ok := nics[0].GetVirtualDevice().Backing.(*types.VirtualEthernetCardNetworkBackingInfo); !ok || b.DeviceName != "cloud.guest.300-vSwitch0" {
		t.Fatalf("first NIC backing = %#v", nics[0].GetVirtualDevice().Backing)
	}
	db, ok := nics[1].GetVirtualDevice().Backing.(*types.VirtualEthernetCardDistributedVirtualPortBackingInfo)
	if !ok {
		t.Fatalf("second NIC backing = %#v", nics[1].GetVirtualDevice().Backing)
	}
	var pg mo.DistributedVirtualPortgroup
	if err := pc.RetrieveOne(ctx, types.ManagedObjectReference{Type: "DistributedVirtualPortgroup", Value: db.Port.PortgroupKey}, []string{"name", "config"}, &pg); err != nil {
		t.Fatal(err)
	}
	vlan, _ := pg.Config.DefaultPortConfig.(*types.VMwareDVSPortSetting).Vlan.(*types.VmwareDistributedVirtualSwitchVlanIdSpec)
	if pg.Name != "cloud.guest.400-DVS0" || vlan == nil || vlan.VlanId != 400 {
		t.Fatalf("distributed port group %s, VLAN %+v", pg.Name, vlan)
	}

	// A VLAN out of range, or a label naming no switch, is refused.
	bad := spec("i-2-39-VM", "5b9d0a53-6f1e-4c3e-9f4e-0a0000000390", hypervisor.Disk{Path: "[LocalDS_0] nimbus/vlan-root-a.vmdk"})
	bad.NICs[0].VLAN = 5000
	if _, err := e.drv.DefineVM(ctx, e.hosts[0], bad); !errors.Is(err, hypervisor.ErrInvalid) {
		t.Fatalf("DefineVM with VLAN 5000 = %v, want invalid", err)
	}
	bad.NICs[0].VLAN, bad.NICs[0].Label = 10, "no-such-switch"
	if _, err := e.drv.DefineVM(ctx, e.hosts[0], bad); !errors.Is(err, hypervisor.ErrInvalid) {
		t.Fatalf("DefineVM on a label naming nothing = %v, want invalid", err)
	}
}
