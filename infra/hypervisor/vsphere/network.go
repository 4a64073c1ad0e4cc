package vsphere

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// Guest VLANs. A NIC without a VLAN joins the port group its traffic
// label names (networkBacking). A NIC with one (broadcast uri vlan://N)
// joins a port group that carries VLAN N, made on demand on the switch
// the label names, as CloudStack does on VMware:
//   - a distributed switch (the label names it, or one of its port
//     groups, or its type field says vmwaredvs): a distributed port group
//     with VLAN N (AddDVPortgroup_Task);
//   - a standard vSwitch (the label names it or one of its port groups):
//     a port group with VLAN N on that vSwitch of every host of the
//     cluster (HostNetworkSystem.AddPortGroup), so the VM can vMotion
//     within it.
//
// Either is named vlanPortGroupName(N, switch) and made once: one there
// already is used (with its VLAN checked).

// vlanPortGroupName names the port group of VLAN n on a switch.
func vlanPortGroupName(vlan int, sw string) string {
	return fmt.Sprintf("cloud.guest.%d-%s", vlan, sw)
}

// nicBacking is the backing of a NIC: its label's port group, or the
// VLAN's port group on the label's switch.
func (t *hostTarget) nicBacking(ctx context.Context, n hypervisor.NIC) (types.BaseVirtualDeviceBackingInfo, error) {
	if n.VLAN <= 0 {
		return t.networkBacking(ctx, n.Label)
	}
	if n.VLAN > 4094 {
		return nil, hypervisor.Errorf(driverName, "DefineVM", n.Label, hypervisor.ErrInvalid, "VLAN %d is out of 1-4094", n.VLAN)
	}
	label := n.Label
	if label == "" {
		label = DefaultNetworkLabel
	}
	// CloudStack's vmwarenetworklabel is "name[,vlan[,type]]".
	fields := strings.Split(label, ",")
	name := strings.TrimSpace(fields[0])
	typ := ""
	if len(fields) > 2 {
		typ = strings.ToLower(strings.TrimSpace(fields[2]))
	}
	key := fmt.Sprintf("vlan:%s/%s/%s/%d", t.loc.Datacenter, t.pool.Value, name, n.VLAN)
	if b := t.c.cache.net(key); b != nil {
		return b, nil
	}
	sw, err := t.switchOf(ctx, name, typ)
	if err != nil {
		return nil, err
	}
	var b types.BaseVirtualDeviceBackingInfo
	if sw.dvs != nil {
		b, err = t.dvsPortGroup(ctx, *sw.dvs, sw.name, n.VLAN)
	} else {
		b, err = t.standardPortGroup(ctx, sw.name, n.VLAN)
	}
	if err != nil {
		return nil, err
	}
	t.c.cache.putNet(key, b)
	return b, nil
}

// vswitch is the switch a label names: a distributed one (dvs set) or a
// standard vSwitch of the hosts.
type vswitch struct {
	name string
	dvs  *types.ManagedObjectReference
}

// switchOf finds the switch a label's name means: a distributed switch or
// one of its port groups, a standard port group (its vSwitch on this
// host) or a vSwitch of this host.
func (t *hostTarget) switchOf(ctx context.Context, name, typ string) (vswitch, error) {
	vc := t.c.client()
	pc := property.DefaultCollector(vc)
	ref, err := object.NewSearchIndex(vc).FindByInventoryPath(ctx, "/"+escapeName(t.loc.Datacenter)+"/network/"+escapeName(name))
	if err != nil {
		return vswitch{}, classify("find", name, err)
	}
	if ref != nil {
		r := ref.Reference()
		switch r.Type {
		case "VmwareDistributedVirtualSwitch", "DistributedVirtualSwitch":
			return vswitch{name: name, dvs: &r}, nil
		case "DistributedVirtualPortgroup":
			var pg mo.DistributedVirtualPortgroup
			if err := pc.RetrieveOne(ctx, r, []string{"config.distributedVirtualSwitch"}, &pg); err != nil {
				return vswitch{}, classify("find", name, err)
			}
			if pg.Config.DistributedVirtualSwitch == nil {
				return vswitch{}, hypervisor.Errorf(driverName, "DefineVM", name, hypervisor.ErrInvalid, "distributed port group %s has no switch", name)
			}
			var dvs mo.DistributedVirtualSwitch
			if err := pc.RetrieveOne(ctx, *pg.Config.DistributedVirtualSwitch, []string{"name"}, &dvs); err != nil {
				return vswitch{}, classify("find", name, err)
			}
			return vswitch{name: dvs.Name, dvs: pg.Config.DistributedVirtualSwitch}, nil
		}
	}
	if typ == "vmwaredvs" || typ == "nexusdvs" {
		return vswitch{}, hypervisor.Errorf(driverName, "DefineVM", name, hypervisor.ErrInvalid,
			"no distributed switch %q in datacenter %s (the traffic type's vmwarenetworklabel names it)", name, t.loc.Datacenter)
	}
	info, _, err := t.networkInfo(ctx, t.host)
	if err != nil {
		return vswitch{}, classify("find", name, err)
	}
	for _, pg := range info.Portgroup {
		if pg.Spec.Name == name {
			return vswitch{name: pg.Spec.VswitchName}, nil
		}
	}
	for _, vs := range info.Vswitch {
		if vs.Name == name {
			return vswitch{name: name}, nil
		}
	}
	return vswitch{}, hypervisor.Errorf(driverName, "DefineVM", name, hypervisor.ErrInvalid,
		"no port group, vSwitch or distributed switch %q on host %s in datacenter %s (the traffic type's vmwarenetworklabel names it)", name, t.loc.Host, t.loc.Datacenter)
}

// networkInfo reads a host's virtual switches and port groups from its
// network system.
func (t *hostTarget) networkInfo(ctx context.Context, host types.ManagedObjectReference) (*types.HostNetworkInfo, types.ManagedObjectReference, error) {
	pc := property.DefaultCollector(t.c.client())
	var hs mo.HostSystem
	if err := pc.RetrieveOne(ctx, host, []string{"configManager.networkSystem"}, &hs); err != nil {
		return nil, types.ManagedObjectReference{}, err
	}
	if hs.ConfigManager.NetworkSystem == nil {
		return nil, types.ManagedObjectReference{}, hypervisor.Errorf(driverName, "DefineVM", host.Value, hypervisor.ErrInvalid, "host has no network system")
	}
	ns := *hs.ConfigManager.NetworkSystem
	var n mo.HostNetworkSystem
	if err := pc.RetrieveOne(ctx, ns, []string{"networkInfo"}, &n); err != nil {
		return nil, ns, err
	}
	if n.NetworkInfo == nil {
		n.NetworkInfo = &types.HostNetworkInfo{}
	}
	return n.NetworkInfo, ns, nil
}

// standardPortGroup makes port group vlanPortGroupName(vlan, vs) with VLAN
// vlan on vSwitch vs of every host of this host's cluster, and returns
// its backing.
func (t *hostTarget) standardPortGroup(ctx context.Context, vs string, vlan int) (types.BaseVirtualDeviceBackingInfo, error) {
	name := vlanPortGroupName(vlan, vs)
	vc := t.c.client()
	pc := property.DefaultCollector(vc)
	var hs mo.HostSystem
	if err := pc.RetrieveOne(ctx, t.host, []string{"parent"}, &hs); err != nil {
		return nil, classify("DefineVM", name, err)
	}
	hosts := []types.ManagedObjectReference{t.host}
	if hs.Parent != nil {
		var cr mo.ComputeResource
		if err := pc.RetrieveOne(ctx, *hs.Parent, []string{"host"}, &cr); err != nil {
			return nil, classify("DefineVM", name, err)
		}
		hosts = cr.Host
	}
	for _, h := range hosts {
		info, ns, err := t.networkInfo(ctx, h)
		if err != nil {
			return nil, classify("DefineVM", name, err)
		}
		if done, err := hasPortGroup(info, name, vs, vlan); err != nil {
			return nil, err
		} else if done {
			continue
		}
		_, err = methods.AddPortGroup(ctx, vc, &types.AddPortGroup{This: ns, Portgrp: types.HostPortGroupSpec{
			Name: name, VlanId: int32(vlan), VswitchName: vs, Policy: types.HostNetworkPolicy{}}})
		// AlreadyExists: another call made it meanwhile. The simulator
		// keeps one network object per datacenter and answers
		// DuplicateName for the second host's port group of a name; a
		// vCenter joins them into one network.
		if err != nil && !fault.Is(err, &types.AlreadyExists{}) && !fault.Is(err, &types.DuplicateName{}) {
			return nil, classify("DefineVM", name, err)
		}
	}
	f := find.NewFinder(vc, false)
	f.SetDatacenter(t.dc)
	n, err := f.Network(ctx, name)
	if err != nil {
		return nil, classify("DefineVM", name, err)
	}
	b, err := n.EthernetCardBackingInfo(ctx)
	if err != nil {
		return nil, classify("DefineVM", name, err)
	}
	return b, nil
}

// hasPortGroup tells whether a host has the port group on vSwitch vs with
// VLAN vlan; one of that name with another VLAN or switch is an error
// rather than a NIC on the wrong network.
func hasPortGroup(info *types.HostNetworkInfo, name, vs string, vlan int) (bool, error) {
	for _, pg := range info.Portgroup {
		if pg.Spec.Name != name {
			continue
		}
		if int(pg.Spec.VlanId) != vlan || pg.Spec.VswitchName != vs {
			return false, hypervisor.Errorf(driverName, "DefineVM", name, hypervisor.ErrInvalid,
				"port group %s is on vSwitch %s with VLAN %d, not on %s with VLAN %d", name, pg.Spec.VswitchName, pg.Spec.VlanId, vs, vlan)
		}
		return true, nil
	}
	return false, nil
}

// dvsPortGroup makes the distributed port group vlanPortGroupName(vlan,
// switch) with VLAN vlan on a distributed switch, and returns its backing.
func (t *hostTarget) dvsPortGroup(ctx context.Context, dvs types.ManagedObjectReference, sw string, vlan int) (types.BaseVirtualDeviceBackingInfo, error) {
	name := vlanPortGroupName(vlan, sw)
	vc := t.c.client()
	lookup := func() (*types.ManagedObjectReference, error) {
		ref, err := object.NewSearchIndex(vc).FindByInventoryPath(ctx, "/"+escapeName(t.loc.Datacenter)+"/network/"+escapeName(name))
		if err != nil || ref == nil {
			return nil, err
		}
		r := ref.Reference()
		return &r, nil
	}
	ref, err := lookup()
	if err != nil {
		return nil, classify("DefineVM", name, err)
	}
	if ref == nil {
		key := "dvpg:" + dvs.Value + "/" + name
		if info, err := t.c.reattach(ctx, key); err != nil || info == nil {
			if err != nil {
				return nil, classify("DefineVM", name, err)
			}
			_, err = t.c.runTask(ctx, key, func(ctx context.Context) (types.ManagedObjectReference, error) {
				res, err := methods.AddDVPortgroup_Task(ctx, vc, &types.AddDVPortgroup_Task{This: dvs, Spec: []types.DVPortgroupConfigSpec{{
					Name: name, Type: string(types.DistributedVirtualPortgroupPortgroupTypeEarlyBinding), NumPorts: 8, AutoExpand: types.NewBool(true),
					Description:       fmt.Sprintf("Nimbus guest VLAN %d", vlan),
					DefaultPortConfig: &types.VMwareDVSPortSetting{Vlan: &types.VmwareDistributedVirtualSwitchVlanIdSpec{VlanId: int32(vlan)}},
				}}})
				if err != nil {
					return types.ManagedObjectReference{}, err
				}
				return res.Returnval, nil
			})
			if err != nil && !fault.Is(err, &types.DuplicateName{}) {
				return nil, classify("DefineVM", name, err)
			}
		}
		if ref, err = lookup(); err != nil || ref == nil {
			if err == nil {
				err = errors.New("not found after it was made")
			}
			return nil, classify("DefineVM", name, err)
		}
	}
	if ref.Type != "DistributedVirtualPortgroup" {
		return nil, hypervisor.Errorf(driverName, "DefineVM", name, hypervisor.ErrInvalid, "%s is a %s, not a distributed port group", name, ref.Type)
	}
	var pg mo.DistributedVirtualPortgroup
	if err := property.DefaultCollector(vc).RetrieveOne(ctx, *ref, []string{"config"}, &pg); err != nil {
		return nil, classify("DefineVM", name, err)
	}
	if got := dvsVLAN(&pg); got != vlan || pg.Config.DistributedVirtualSwitch == nil || *pg.Config.DistributedVirtualSwitch != dvs {
		return nil, hypervisor.Errorf(driverName, "DefineVM", name, hypervisor.ErrInvalid, "distributed port group %s carries VLAN %d or is on another switch, not VLAN %d on %s", name, got, vlan, sw)
	}
	b, err := object.NewDistributedVirtualPortgroup(vc, *ref).EthernetCardBackingInfo(ctx)
	if err != nil {
		return nil, classify("DefineVM", name, err)
	}
	t.c.cache.putPortgroup(pg.Config.Key, name)
	return b, nil
}

// dvsVLAN is the VLAN id a distributed port group carries (0: none).
func dvsVLAN(pg *mo.DistributedVirtualPortgroup) int {
	s, ok := pg.Config.DefaultPortConfig.(*types.VMwareDVSPortSetting)
	if !ok || s.Vlan == nil {
		return 0
	}
	if v, ok := s.Vlan.(*types.VmwareDistributedVirtualSwitchVlanIdSpec); ok {
		return int(v.VlanId)
	}
	return 0
}
