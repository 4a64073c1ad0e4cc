package activities

import (
	"context"
	"database/sql"
	"errors"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/models"
)

// nicLabel is the host network (a bridge on KVM, a port group on vSphere)
// a NIC joins: the label its network's traffic type carries on its
// physical network for the hypervisor, as CloudStack's traffic labels do.
// "" when none is set (the Simulator needs none; the libvirt driver says
// which NIC lacks one).
func nicLabel(ctx context.Context, d Deps, networkID int64, hypervisorType string, cache map[int64]string) (string, error) {
	if l, ok := cache[networkID]; ok {
		return l, nil
	}
	var nw models.Network
	err := d.DB.NewSelect().Model(&nw).Column("physical_network_id", "traffic_type").Where("id = ?", networkID).WhereAllWithDeleted().Limit(1).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && nw.PhysicalNetworkID == 0) {
		cache[networkID] = ""
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var tt models.PhysicalNetworkTrafficType
	err = d.DB.NewSelect().Model(&tt).Where("physical_network_id = ? AND traffic_type = ?", nw.PhysicalNetworkID, nw.TrafficType).Limit(1).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		cache[networkID] = ""
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var l string
	switch t, _ := hypervisor.Canonical(hypervisorType); t {
	case hypervisor.TypeKVM, hypervisor.TypeLXC:
		l = tt.KVMNetworkLabel
	case hypervisor.TypeXenProject, hypervisor.TypeXenServer:
		l = tt.XenNetworkLabel
	case hypervisor.TypeVMware:
		l = tt.VMwareNetworkLabel
	case hypervisor.TypeHyperV:
		l = tt.HyperVNetworkLabel
	case hypervisor.TypeSimulator:
		l = tt.SimulatorNetworkLabel
	}
	cache[networkID] = l
	return l, nil
}
