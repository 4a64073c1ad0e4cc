package activities

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strings"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

// IPAM holds the steps that give guest NICs their addresses and take them
// back, and the guest network jobs. Addresses of a guest network are the
// ip_addresses rows of its ranges (vlans of type DirectAttached): those of
// the network (an advanced zone's shared network), or, in a basic zone,
// those of the pod the VM runs in. A NIC holds an address when it is in
// state Reserved; its ip4_address is that address. Allocation and release
// are guarded updates of one ip_addresses row in the same transaction as
// the NIC's, so an address is held by one NIC at most, and a step retried
// after it committed finds the NIC done.
type IPAM struct{ Deps }

// BasicGuestNetworkName is the name of a basic zone's one guest network.
const BasicGuestNetworkName = "defaultGuestNetwork"

// NewMAC returns a random locally administered unicast MAC in CloudStack's
// guest form, 02:00:xx:xx:xx:xx. nics.mac_address is unique, so a collision
// fails the insert rather than sharing an address.
func NewMAC() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}

// BasicGuestNetwork returns the guest network of a basic zone, creating it
// on first use (a zone-wide shared network of the ROOT domain with
// subdomain access, owned by the system account, whose addresses are the
// pods' guest ranges). The zone row is locked while looking, so two
// deployments never create two.
func BasicGuestNetwork(ctx context.Context, db *bun.DB, zone *models.Zone) (*models.Network, error) {
	var n models.Network
	find := func(db bun.IDB) (bool, error) {
		err := db.NewSelect().Model(&n).
			Where("zone_id = ? AND traffic_type = ? AND guest_type = ? AND name = ?", zone.ID, models.TrafficGuest, models.GuestTypeShared, BasicGuestNetworkName).
			Order("id").Limit(1).Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) {
			return false, nil
		}
		return err == nil, err
	}
	if ok, err := find(db); err != nil || ok {
		return &n, err
	}
	err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := lockZone(ctx, tx, zone.ID); err != nil {
			return err
		}
		if ok, err := find(tx); err != nil || ok {
			return err
		}
		var sys models.Account
		if err := tx.NewSelect().Model(&sys).Where("uuid = ?", models.SystemAccountUUID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
			return fmt.Errorf("system account: %w", err)
		}
		var off models.NetworkOffering
		if err := tx.NewSelect().Model(&off).Where("uuid = ?", models.NetworkOfferingDefaultSharedUUID).Limit(1).Scan(ctx); err != nil {
			return fmt.Errorf("default shared network offering: %w", err)
		}
		var pnID int64
		_ = tx.NewSelect().TableExpr("physical_networks AS pn").Column("pn.id").
			Join("JOIN physical_network_traffic_types AS tt ON tt.physical_network_id = pn.id").
			Where("pn.zone_id = ? AND pn.removed IS NULL AND tt.traffic_type = ?", zone.ID, models.TrafficGuest).
			Order("pn.id").Limit(1).Scan(ctx, &pnID)
		n = models.Network{
			UUID: models.NewUUID(), Name: BasicGuestNetworkName, DisplayText: BasicGuestNetworkName,
			TrafficType: models.TrafficGuest, GuestType: models.GuestTypeShared, BroadcastDomainType: "Native",
			BroadcastURI: "vlan://untagged", Vlan: models.VlanUntagged, DNS1: zone.DNS1, DNS2: zone.DNS2, Mode: models.NicModeDhcp,
			State: models.NetworkSetup, NetworkOfferingID: off.ID, PhysicalNetworkID: pnID, ZoneID: zone.ID,
			AccountID: sys.ID, DomainID: sys.DomainID, ACLType: models.ACLTypeDomain, SubdomainAccess: true,
			NetworkDomain: zone.NetworkDomain, SpecifyIPRanges: true, DisplayNetwork: true, Created: models.Now(),
		}
		_, err := tx.NewInsert().Model(&n).Exec(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &n, nil
}

// ipamRanges selects the ids of the address ranges a NIC of network n may
// take an address from: the network's own ranges, and in a basic zone the
// guest ranges of the VM's pod.
func ipamRanges(db bun.IDB, n *models.Network, basic bool, podID int64) *bun.SelectQuery {
	q := db.NewSelect().Model((*models.Vlan)(nil)).Column("id").
		Where("zone_id = ? AND vlan_type = ?", n.ZoneID, models.VlanTypeDirectAttached)
	if basic {
		return q.Where("(network_id = ? OR (network_id IS NULL AND pod_id = ?))", n.ID, podID)
	}
	return q.Where("network_id = ?", n.ID)
}

// IPAMAllocateInput names the VM whose NICs need addresses.
type IPAMAllocateInput struct {
	VMUUID string
	// SkipPodRanges leaves the NICs of basic zones without an address: it
	// comes from the pod the VM starts in (a VM deployed without starting).
	SkipPodRanges bool
}

// IPAMAllocateResult lists the NICs this call gave an address to (those
// that had one already are not listed: their release is not this call's
// undo).
type IPAMAllocateResult struct {
	NicUUIDs []string
}

// IPAMAllocate gives every NIC of the VM without an address one from its
// network: the address it asked for (ipaddress, iptonetworklist) or a free
// one. A requested address that is taken or outside the network's ranges is
// a 431; a network without a free address a 533. Each NIC is its own
// transaction, so a retry after a crash resumes where it stopped.
func (a *IPAM) IPAMAllocate(ctx context.Context, in IPAMAllocateInput) (IPAMAllocateResult, error) {
	var res IPAMAllocateResult
	vm, err := vmByUUID(ctx, a.DB, in.VMUUID)
	if err != nil {
		return res, err
	}
	var nics []models.Nic
	if err := a.DB.NewSelect().Model(&nics).Where("instance_id = ? AND state = ?", vm.ID, models.NicAllocated).
		Order("device_id").Scan(ctx); err != nil {
		return res, err
	}
	basic := false
	if in.SkipPodRanges {
		var z models.Zone
		if err := a.DB.NewSelect().Model(&z).Column("networktype").Where("id = ?", vm.ZoneID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
			return res, err
		}
		basic = z.NetworkType == models.NetworkTypeBasic
	}
	for i := range nics {
		if basic {
			continue
		}
		err := ipamTx(ctx, a.DB, func(ctx context.Context, tx bun.Tx) error {
			return AllocateNicIP(ctx, tx, vm, &nics[i])
		})
		if err != nil {
			return res, cserr.Temporal(err)
		}
		res.NicUUIDs = append(res.NicUUIDs, nics[i].UUID)
	}
	return res, nil
}

// ipamTx runs fn in a transaction suited to guarded allocation: on MySQL in
// READ COMMITTED, so that each candidate query sees what others committed
// and a guarded update that finds its row taken keeps no lock on it (under
// REPEATABLE READ it would, and two allocations could wait on each other's
// taken rows); a deadlock or lock timeout all the same is retried.
func ipamTx(ctx context.Context, db *bun.DB, fn func(ctx context.Context, tx bun.Tx) error) error {
	var opts *sql.TxOptions
	if db.Dialect().Name() != dialect.SQLite {
		opts = &sql.TxOptions{Isolation: sql.LevelReadCommitted}
	}
	for attempt := 0; ; attempt++ {
		err := db.RunInTx(ctx, opts, fn)
		if err == nil || attempt >= 5 || !lockConflict(err) {
			return err
		}
	}
}

// lockConflict tells a MySQL deadlock (1213) or lock wait timeout (1205),
// after which the transaction is rolled back and may simply run again.
func lockConflict(err error) bool {
	s := err.Error()
	return strings.Contains(s, "Error 1213") || strings.Contains(s, "Error 1205")
}

// AllocateNicIP gives one NIC an address in tx: the one already in its
// ip4_address (asked for at deploy) or a free one. A NIC that holds one
// (Reserved) is left as it is. Candidates are chosen first and then taken
// by id with a guarded update, so each statement locks one address row.
func AllocateNicIP(ctx context.Context, tx bun.IDB, vm *models.VMInstance, nic *models.Nic) error {
	var cur models.Nic
	if err := tx.NewSelect().Model(&cur).Where("id = ?", nic.ID).Limit(1).Scan(ctx); err != nil {
		return err
	}
	if cur.State == models.NicReserved {
		*nic = cur
		return nil
	}
	var n models.Network
	if err := tx.NewSelect().Model(&n).Where("id = ?", cur.NetworkID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		return err
	}
	var z models.Zone
	if err := tx.NewSelect().Model(&z).Column("id", "networktype").Where("id = ?", n.ZoneID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		return err
	}
	basic := z.NetworkType == models.NetworkTypeBasic
	if basic && vm.PodID == 0 {
		return cserr.Internal("virtual machine %s has no pod yet: a basic zone's address comes from its pod", vm.Name)
	}
	ranges := ipamRanges(tx, &n, basic, vm.PodID)
	now := models.Now()
	take := func(id int64) (bool, error) {
		res, err := tx.NewUpdate().Model((*models.IPAddress)(nil)).
			Set("state = ?", models.IPAllocated).Set("network_id = ?", n.ID).Set("allocated = ?", now).
			Where("id = ? AND state = ?", id, models.IPFree).Exec(ctx)
		if err != nil {
			return false, err
		}
		k, err := res.RowsAffected()
		return k == 1, err
	}
	var got models.IPAddress
	if want := cur.IP4Address; want != "" {
		unavailable := cserr.Param("The requested IP address %s is not available in network %s: it is taken or outside the network's IP ranges", want, n.Name)
		err := tx.NewSelect().Model(&got).Where("zone_id = ? AND public_ip_address = ? AND state = ?", n.ZoneID, want, models.IPFree).
			Where("vlan_id IN (?)", ranges).Limit(1).Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) {
			return unavailable
		}
		if err != nil {
			return err
		}
		ok, err := take(got.ID)
		if err != nil {
			return err
		}
		if !ok {
			return unavailable
		}
	} else {
		// Candidates come from a snapshot that may be stale (MariaDB's
		// consistent read); the guarded update decides. Taking them in a
		// random order keeps concurrent deployments off each other's rows.
		tried := []int64{0}
		for found := false; !found; {
			var ids []int64
			if err := tx.NewSelect().Model((*models.IPAddress)(nil)).Column("id").
				Where("state = ? AND vlan_id IN (?)", models.IPFree, ranges).
				Where("id NOT IN (?)", bun.In(tried)).Order("id").Limit(16).Scan(ctx, &ids); err != nil {
				return err
			}
			if len(ids) == 0 {
				return cserr.Capacity("Insufficient address capacity: network %s has no free IP address", n.Name)
			}
			mrand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
			for _, id := range ids {
				tried = append(tried, id)
				ok, err := take(id)
				if err != nil {
					return err
				}
				if ok {
					if err := tx.NewSelect().Model(&got).Where("id = ?", id).Scan(ctx); err != nil {
						return err
					}
					found = true
					break
				}
			}
		}
	}
	var v models.Vlan
	if err := tx.NewSelect().Model(&v).Where("id = ?", got.VlanID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		return err
	}
	nic.IP4Address, nic.Gateway, nic.Netmask, nic.State = got.PublicIPAddress, v.Gateway, v.Netmask, models.NicReserved
	nic.BroadcastURI, nic.IsolationURI = n.BroadcastURI, n.BroadcastURI
	_, err := tx.NewUpdate().Model(nic).Column("ip4_address", "gateway", "netmask", "state", "broadcast_uri", "isolation_uri").
		Set("update_time = ?", now).WherePK().Exec(ctx)
	return err
}

// IPAMReleaseInput names the NICs whose addresses go back: NicUUIDs, or
// every NIC of the VM when empty.
type IPAMReleaseInput struct {
	VMUUID   string
	NicUUIDs []string
}

// IPAMRelease frees the addresses of NICs (the undo of IPAMAllocate, and
// part of expunge). A NIC without one is success.
func (a *IPAM) IPAMRelease(ctx context.Context, in IPAMReleaseInput) error {
	vm, err := vmByUUID(ctx, a.DB, in.VMUUID)
	if err != nil {
		if errors.Is(err, models.ErrNotFound) {
			return nil
		}
		return err
	}
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		return ReleaseVMIPs(ctx, tx, vm.ID, in.NicUUIDs)
	})
}

// ReleaseVMIPs frees the addresses the VM's NICs hold (only the NICs
// nicUUIDs, when given) and leaves the NICs without one (Allocated).
func ReleaseVMIPs(ctx context.Context, tx bun.IDB, vmID int64, nicUUIDs []string) error {
	var nics []models.Nic
	q := tx.NewSelect().Model(&nics).Where("instance_id = ? AND state = ?", vmID, models.NicReserved).WhereAllWithDeleted()
	if len(nicUUIDs) > 0 {
		q = q.Where("uuid IN (?)", bun.In(nicUUIDs))
	}
	if err := q.Scan(ctx); err != nil {
		return err
	}
	for i := range nics {
		if err := ReleaseNicIP(ctx, tx, &nics[i]); err != nil {
			return err
		}
	}
	return nil
}

// ReleaseNicIP frees one NIC's address. Addresses are unique in a zone
// (IP ranges never overlap), so the zone and the address name the row.
func ReleaseNicIP(ctx context.Context, tx bun.IDB, nic *models.Nic) error {
	if nic.State != models.NicReserved {
		return nil
	}
	if nic.IP4Address != "" {
		var zoneID int64
		if err := tx.NewSelect().Model((*models.Network)(nil)).Column("zone_id").Where("id = ?", nic.NetworkID).
			WhereAllWithDeleted().Limit(1).Scan(ctx, &zoneID); err != nil {
			return err
		}
		var ids []int64
		if err := tx.NewSelect().Model((*models.IPAddress)(nil)).Column("id").
			Where("zone_id = ? AND public_ip_address = ? AND state = ?", zoneID, nic.IP4Address, models.IPAllocated).
			Where("vlan_id IN (?)", tx.NewSelect().Model((*models.Vlan)(nil)).Column("id").
				Where("zone_id = ? AND vlan_type = ?", zoneID, models.VlanTypeDirectAttached).WhereAllWithDeleted()).
			Scan(ctx, &ids); err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := tx.NewUpdate().Model((*models.IPAddress)(nil)).
				Set("state = ?", models.IPFree).Set("network_id = NULL").Set("allocated = NULL").
				Where("id = ? AND state = ?", id, models.IPAllocated).Exec(ctx); err != nil {
				return err
			}
		}
	}
	nic.State, nic.IP4Address, nic.Gateway, nic.Netmask = models.NicAllocated, "", "", ""
	_, err := tx.NewUpdate().Model(nic).Column("state", "ip4_address", "gateway", "netmask").
		Set("update_time = ?", models.Now()).WherePK().WhereAllWithDeleted().Exec(ctx)
	return err
}

// ---- guest networks ----

// NetworkGuestInput names a guest network a job acts on.
type NetworkGuestInput struct {
	NetworkUUID string
	Actor       Actor
}

// NetworkGuestDelete removes a shared guest network: its free addresses,
// its ranges, then the network (soft-deleted, state Destroy). A NIC still
// on it, or an address still allocated, refuses with 536 and changes
// nothing. A network already removed is success.
func (a *IPAM) NetworkGuestDelete(ctx context.Context, in NetworkGuestInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var n models.Network
		if err := tx.NewSelect().Model(&n).Where("uuid = ?", in.NetworkUUID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fail(cserr.ParamError, "Unable to find network by id %s", in.NetworkUUID)
			}
			return err
		}
		if !n.Removed.IsZero() {
			return nil
		}
		if _, err := lockZone(ctx, tx, n.ZoneID); err != nil {
			return err
		}
		nics, err := tx.NewSelect().Model((*models.Nic)(nil)).Where("network_id = ?", n.ID).Count(ctx)
		if err != nil {
			return err
		}
		if nics > 0 {
			return fail(cserr.ResourceInUse, "Network %s is in use by %d NIC(s) of virtual machines; expunge them first", n.Name, nics)
		}
		ranges := tx.NewSelect().Model((*models.Vlan)(nil)).Column("id").Where("network_id = ?", n.ID)
		used, err := tx.NewSelect().Model((*models.IPAddress)(nil)).Where("vlan_id IN (?) AND state <> ?", ranges, models.IPFree).Count(ctx)
		if err != nil {
			return err
		}
		if used > 0 {
			return fail(cserr.ResourceInUse, "Network %s still has %d allocated IP address(es)", n.Name, used)
		}
		if _, err := tx.NewDelete().Model((*models.IPAddress)(nil)).Where("vlan_id IN (?)", ranges).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model((*models.Vlan)(nil)).Where("network_id = ?", n.ID).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewUpdate().Model((*models.Network)(nil)).Set("state = ?", models.NetworkDestroy).Where("id = ?", n.ID).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model(&n).WherePK().Exec(ctx); err != nil {
			return err
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{Actor: in.Actor, Type: "NETWORK.DELETE", ResourceType: "Network",
			ResourceUUID: n.UUID, Description: "Deleted network " + n.Name}))
	})
}

// NetworkGuestUpdateInput is what updateNetwork changes (nil: unchanged).
type NetworkGuestUpdateInput struct {
	NetworkUUID    string
	Name           *string
	DisplayText    *string
	NetworkDomain  *string
	DNS1, DNS2     *string
	DisplayNetwork *bool
	Actor          Actor
}

// NetworkGuestUpdate changes a guest network's names and settings; the
// same values again are success.
func (a *IPAM) NetworkGuestUpdate(ctx context.Context, in NetworkGuestUpdateInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var n models.Network
		if err := tx.NewSelect().Model(&n).Where("uuid = ?", in.NetworkUUID).Limit(1).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fail(cserr.ParamError, "Unable to find network by id %s", in.NetworkUUID)
			}
			return err
		}
		q := tx.NewUpdate().Model((*models.Network)(nil)).Where("id = ?", n.ID)
		var changed []string
		set := func(col string, v *string) {
			if v != nil {
				q = q.Set("? = ?", bun.Ident(col), *v)
				changed = append(changed, col)
			}
		}
		set("name", in.Name)
		set("display_text", in.DisplayText)
		set("network_domain", in.NetworkDomain)
		set("dns1", in.DNS1)
		set("dns2", in.DNS2)
		if in.DisplayNetwork != nil {
			q = q.Set("display_network = ?", *in.DisplayNetwork)
			changed = append(changed, "display_network")
		}
		if len(changed) == 0 {
			return nil
		}
		if _, err := q.Exec(ctx); err != nil {
			return err
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{Actor: in.Actor, Type: "NETWORK.UPDATE", ResourceType: "Network",
			ResourceUUID: n.UUID, Description: "Updated network " + n.Name + ": " + strings.Join(changed, ", ")}))
	})
}
