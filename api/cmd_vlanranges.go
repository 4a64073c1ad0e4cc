package api

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/workflows"
)

// IP ranges: public ranges of Advanced zones and guest ranges of Basic
// zones' pods (createVlanIpRange, one ip_addresses row per address), and
// storage network ranges of pods (createStorageNetworkIpRange, one
// op_dc_storage_network_ip_address row per address).

func init() {
	Register(
		&Command{
			Name: "createVlanIpRange", Description: "Creates a public IP range (Advanced zone) or a pod's guest IP range (Basic zone)", Access: AccessRootAdmin,
			Params: []Param{
				{Name: "zoneid", Type: TUUID, Description: "the zone; taken from podid, networkid or physicalnetworkid when absent"},
				{Name: "podid", Type: TUUID, Description: "the pod of a guest range in a Basic zone"},
				{Name: "networkid", Type: TUUID, Description: "the shared guest network the range belongs to"},
				{Name: "physicalnetworkid", Type: TUUID, Description: "the physical network; by default the one carrying Public (or, in a Basic zone, Guest) traffic"},
				{Name: "vlan", Type: TString, Description: "the VLAN id of the range, or untagged (the default)"},
				{Name: "gateway", Type: TString, Description: "the gateway of the range (required)"},
				{Name: "netmask", Type: TString, Description: "the netmask of the range (required)"},
				{Name: "startip", Type: TString, Description: "the first address (required)"},
				{Name: "endip", Type: TString, Description: "the last address; startip alone by default"},
				{Name: "forvirtualnetwork", Type: TBoolean, Description: "true (default) for public addresses, false for guest addresses"},
				{Name: "forsystemvms", Type: TBoolean, Description: "reserve the public range for system VMs"},
				{Name: "account", Type: TString, Description: "dedicates the public range to this account (with domainid)"},
				{Name: "domainid", Type: TUUID, Description: "dedicates the public range to this domain, or names the account's domain"},
				{Name: "projectid", Type: TUUID, Description: "dedicates the range to a project (projects are not supported yet)"},
				{Name: "startipv6", Type: TString, Description: "IPv6 ranges are not supported yet"},
				{Name: "endipv6", Type: TString, Description: "IPv6 ranges are not supported yet"},
				{Name: "ip6gateway", Type: TString, Description: "IPv6 ranges are not supported yet"},
				{Name: "ip6cidr", Type: TString, Description: "IPv6 ranges are not supported yet"},
			},
			ResponseName: "vlan", Response: vlanRangeFields, Handler: createVlanIpRange,
		},
		&Command{
			Name: "deleteVlanIpRange", Description: "Deletes an IP range none of whose addresses is in use", Access: AccessRootAdmin,
			Params:       []Param{{Name: "id", Type: TUUID, Required: true, Description: "the ID of the range"}},
			ResponseName: "success", Response: successFields, Handler: deleteVlanIpRange,
		},
		&Command{
			Name: "listVlanIpRanges", Description: "Lists public and guest IP ranges", Access: AccessRootAdmin,
			Params: append(ListParams(),
				Param{Name: "id", Type: TUUID, Description: "the ID of the range"},
				Param{Name: "zoneid", Type: TUUID, Description: "ranges of this zone"},
				Param{Name: "podid", Type: TUUID, Description: "ranges of this pod"},
				Param{Name: "networkid", Type: TUUID, Description: "ranges of this network"},
				Param{Name: "physicalnetworkid", Type: TUUID, Description: "ranges of this physical network"},
				Param{Name: "vlan", Type: TString, Description: "ranges on this VLAN (an id or untagged)"},
				Param{Name: "forvirtualnetwork", Type: TBoolean, Description: "true for public ranges, false for guest ranges"},
				Param{Name: "account", Type: TString, Description: "ranges dedicated to this account (with domainid)"},
				Param{Name: "domainid", Type: TUUID, Description: "ranges dedicated to this domain"},
				Param{Name: "projectid", Type: TUUID, Description: "ranges of this project"},
			),
			ResponseName: "vlaniprange", Response: vlanRangeFields, Handler: listVlanIpRanges,
		},
		&Command{
			Name: "createStorageNetworkIpRange", Description: "Creates a storage network IP range in a pod", Access: AccessRootAdmin, Async: true,
			Params: []Param{
				{Name: "podid", Type: TUUID, Required: true, Description: "the pod of the range"},
				{Name: "gateway", Type: TString, Required: true, Description: "the gateway of the storage network"},
				{Name: "netmask", Type: TString, Required: true, Description: "its netmask"},
				{Name: "startip", Type: TString, Required: true, Description: "the first address"},
				{Name: "endip", Type: TString, Description: "the last address; startip alone by default"},
				{Name: "vlan", Type: TInteger, Description: "the VLAN id of the storage network (1-4094); untagged when absent"},
			},
			ResponseName: "storagenetworkiprange", Response: storageRangeFields, Handler: createStorageNetworkIpRange,
		},
		&Command{
			Name: "deleteStorageNetworkIpRange", Description: "Deletes a storage network IP range none of whose addresses is in use", Access: AccessRootAdmin, Async: true,
			Params:       []Param{{Name: "id", Type: TUUID, Required: true, Description: "the ID of the range"}},
			ResponseName: "success", Response: successFields, Handler: deleteStorageNetworkIpRange,
		},
		&Command{
			Name: "listStorageNetworkIpRange", Description: "Lists storage network IP ranges", Access: AccessRootAdmin,
			Params: append(ListParams(),
				Param{Name: "id", Type: TUUID, Description: "the ID of the range"},
				Param{Name: "podid", Type: TUUID, Description: "ranges of this pod"},
				Param{Name: "zoneid", Type: TUUID, Description: "ranges of this zone"},
			),
			ResponseName: "storagenetworkiprange", Response: storageRangeFields, Handler: listStorageNetworkIpRange,
		},
	)
	RegisterRenderer("StorageNetworkIpRange", func(ctx context.Context, s *Server, id string) (any, error) {
		var r models.StorageNetworkIPRange
		if err := s.DB.NewSelect().Model(&r).Where("uuid = ?", id).Limit(1).Scan(ctx); err != nil {
			return nil, models.NotFound(err, "storage network IP range "+id)
		}
		views, err := storageRangeViews(ctx, s.DB, []models.StorageNetworkIPRange{r})
		if err != nil {
			return nil, err
		}
		return views[0], nil
	})
}

var vlanRangeFields = []Field{
	{"id", "string", "the ID of the range"}, {"forvirtualnetwork", "boolean", "true for public addresses"},
	{"zoneid", "string", "the zone"}, {"podid", "string", "the pod (guest ranges of Basic zones)"}, {"podname", "string", "its name"},
	{"vlan", "string", "the VLAN (vlan://id or untagged)"}, {"gateway", "string", "the gateway"}, {"netmask", "string", "the netmask"},
	{"cidr", "string", "the subnet"}, {"startip", "string", "the first address"}, {"endip", "string", "the last address"},
	{"description", "string", "the range as start-end"}, {"networkid", "string", "the network"},
	{"physicalnetworkid", "string", "the physical network"}, {"forsystemvms", "boolean", "reserved for system VMs"},
	{"account", "string", "the account the range is dedicated to"}, {"domainid", "string", "the domain it is dedicated to"},
	{"domain", "string", "that domain's name"},
}

var storageRangeFields = []Field{
	{"id", "string", "the ID of the range"}, {"podid", "string", "the pod"}, {"zoneid", "string", "the zone"},
	{"gateway", "string", "the gateway"}, {"netmask", "string", "the netmask"}, {"startip", "string", "the first address"},
	{"endip", "string", "the last address"}, {"vlan", "integer", "the VLAN id (0 untagged)"}, {"networkid", "string", "the storage network"},
}

// VlanIPRangeView is an IP range as listVlanIpRanges shows it (the SDK's
// VlanIpRange).
type VlanIPRangeView struct {
	ID                string `json:"id"`
	ForVirtualNetwork bool   `json:"forvirtualnetwork"`
	ZoneID            string `json:"zoneid"`
	PodID             string `json:"podid,omitempty"`
	PodName           string `json:"podname,omitempty"`
	Vlan              string `json:"vlan"`
	Gateway           string `json:"gateway"`
	Netmask           string `json:"netmask"`
	CIDR              string `json:"cidr"`
	StartIP           string `json:"startip"`
	EndIP             string `json:"endip"`
	Description       string `json:"description"`
	NetworkID         string `json:"networkid,omitempty"`
	PhysicalNetworkID string `json:"physicalnetworkid,omitempty"`
	ForSystemVMs      bool   `json:"forsystemvms"`
	Account           string `json:"account,omitempty"`
	DomainID          string `json:"domainid,omitempty"`
	Domain            string `json:"domain,omitempty"`
}

// StorageRangeView is a storage network IP range (the SDK's
// StorageNetworkIpRange).
type StorageRangeView struct {
	ID        string `json:"id"`
	PodID     string `json:"podid"`
	ZoneID    string `json:"zoneid"`
	Gateway   string `json:"gateway"`
	Netmask   string `json:"netmask"`
	StartIP   string `json:"startip"`
	EndIP     string `json:"endip"`
	Vlan      int    `json:"vlan,omitempty"`
	NetworkID string `json:"networkid,omitempty"`
}

// uuidsOf maps ids of a table to UUIDs (removed rows too).
func uuidsOf(ctx context.Context, db bun.IDB, model any, ids []int64, softDelete bool) (map[int64]string, error) {
	out := map[int64]string{}
	var want []int64
	for _, id := range ids {
		if id != 0 {
			want = append(want, id)
		}
	}
	if len(want) == 0 {
		return out, nil
	}
	var rows []struct {
		ID   int64  `bun:"id"`
		UUID string `bun:"uuid"`
	}
	q := db.NewSelect().Model(model).Column("id", "uuid").Where("id IN (?)", bun.In(want))
	if softDelete {
		q = q.WhereAllWithDeleted()
	}
	if err := q.Scan(ctx, &rows); err != nil {
		return nil, err
	}
	for _, r := range rows {
		out[r.ID] = r.UUID
	}
	return out, nil
}

func vlanRangeViews(ctx context.Context, db bun.IDB, vlans []models.Vlan) ([]VlanIPRangeView, error) {
	var zoneIDs, podIDs, netIDs, pnIDs, acctIDs, domIDs []int64
	for _, v := range vlans {
		zoneIDs, podIDs, netIDs = append(zoneIDs, v.ZoneID), append(podIDs, v.PodID), append(netIDs, v.NetworkID)
		pnIDs, acctIDs, domIDs = append(pnIDs, v.PhysicalNetworkID), append(acctIDs, v.AccountID), append(domIDs, v.DomainID)
	}
	zones, err := zoneRefs(ctx, db, zoneIDs)
	if err != nil {
		return nil, err
	}
	nets, err := uuidsOf(ctx, db, (*models.Network)(nil), netIDs, true)
	if err != nil {
		return nil, err
	}
	pns, err := uuidsOf(ctx, db, (*models.PhysicalNetwork)(nil), pnIDs, true)
	if err != nil {
		return nil, err
	}
	pods := map[int64]models.Pod{}
	if len(podIDs) > 0 {
		var ps []models.Pod
		if err := db.NewSelect().Model(&ps).Column("id", "uuid", "name").Where("id IN (?)", bun.In(podIDs)).WhereAllWithDeleted().Scan(ctx); err != nil {
			return nil, err
		}
		for _, p := range ps {
			pods[p.ID] = p
		}
	}
	accts := map[int64]models.Account{}
	if len(acctIDs) > 0 {
		var as []models.Account
		if err := db.NewSelect().Model(&as).Column("id", "name", "domain_id").Where("id IN (?)", bun.In(acctIDs)).WhereAllWithDeleted().Scan(ctx); err != nil {
			return nil, err
		}
		for _, a := range as {
			accts[a.ID] = a
			domIDs = append(domIDs, a.DomainID)
		}
	}
	doms := map[int64]models.Domain{}
	if len(domIDs) > 0 {
		var ds []models.Domain
		if err := db.NewSelect().Model(&ds).Column("id", "uuid", "name").Where("id IN (?)", bun.In(domIDs)).WhereAllWithDeleted().Scan(ctx); err != nil {
			return nil, err
		}
		for _, d := range ds {
			doms[d.ID] = d
		}
	}
	out := make([]VlanIPRangeView, len(vlans))
	for i, v := range vlans {
		view := VlanIPRangeView{
			ID: v.UUID, ForVirtualNetwork: v.VlanType == models.VlanTypeVirtualNetwork, ZoneID: zones[v.ZoneID].UUID,
			Vlan: v.VlanTag, Gateway: v.Gateway, Netmask: v.Netmask, StartIP: v.StartIP, EndIP: v.EndIP,
			Description: v.StartIP + "-" + v.EndIP, NetworkID: nets[v.NetworkID], PhysicalNetworkID: pns[v.PhysicalNetworkID],
			ForSystemVMs: v.ForSystemVMs,
		}
		if gw, err := parseIPv4(v.Gateway); err == nil {
			if n, err := parseNetmask(v.Netmask); err == nil {
				view.CIDR = subnetOf(gw, n).CIDR()
			}
		}
		if p, ok := pods[v.PodID]; ok {
			view.PodID, view.PodName = p.UUID, p.Name
		}
		domID := v.DomainID
		if a, ok := accts[v.AccountID]; ok {
			view.Account, domID = a.Name, a.DomainID
		}
		if d, ok := doms[domID]; ok {
			view.DomainID, view.Domain = d.UUID, d.Name
		}
		out[i] = view
	}
	return out, nil
}

func storageRangeViews(ctx context.Context, db bun.IDB, rs []models.StorageNetworkIPRange) ([]StorageRangeView, error) {
	var zoneIDs, podIDs, netIDs []int64
	for _, r := range rs {
		zoneIDs, podIDs, netIDs = append(zoneIDs, r.ZoneID), append(podIDs, r.PodID), append(netIDs, r.NetworkID)
	}
	zones, err := zoneRefs(ctx, db, zoneIDs)
	if err != nil {
		return nil, err
	}
	pods, err := uuidsOf(ctx, db, (*models.Pod)(nil), podIDs, true)
	if err != nil {
		return nil, err
	}
	nets, err := uuidsOf(ctx, db, (*models.Network)(nil), netIDs, true)
	if err != nil {
		return nil, err
	}
	out := make([]StorageRangeView, len(rs))
	for i, r := range rs {
		vlan, _ := strconv.Atoi(r.Vlan)
		out[i] = StorageRangeView{
			ID: r.UUID, PodID: pods[r.PodID], ZoneID: zones[r.ZoneID].UUID, Gateway: r.Gateway, Netmask: r.Netmask,
			StartIP: r.StartIP, EndIP: r.EndIP, Vlan: vlan, NetworkID: nets[r.NetworkID],
		}
	}
	return out, nil
}

// vlanTagStored is how a range's VLAN is kept and shown: vlan://id or
// untagged.
func vlanTagStored(tag string) string {
	if tag == models.VlanUntagged {
		return tag
	}
	return "vlan://" + tag
}

// trafficPhysNet finds the zone's physical network carrying a traffic type,
// or, when none does and the zone has exactly one, that one.
func trafficPhysNet(ctx context.Context, db bun.IDB, zoneID int64, traffic string) (*models.PhysicalNetwork, error) {
	var pns []models.PhysicalNetwork
	if err := db.NewSelect().Model(&pns).
		Where("zone_id = ? AND id IN (SELECT physical_network_id FROM physical_network_traffic_types WHERE traffic_type = ?)", zoneID, traffic).
		Order("id ASC").Scan(ctx); err != nil {
		return nil, err
	}
	if len(pns) > 0 {
		return &pns[0], nil
	}
	if err := db.NewSelect().Model(&pns).Where("zone_id = ?", zoneID).Scan(ctx); err != nil {
		return nil, err
	}
	if len(pns) == 1 {
		return &pns[0], nil
	}
	return nil, cserr.Param("The zone has no physical network carrying %s traffic: create one and add the %s traffic type first", traffic, traffic)
}

func (c *Call) vlanRangeOwner(v *models.Vlan) error {
	if c.Has("projectid") {
		return cserr.Param("Unable to find project by id %s: projects are not supported yet", c.Str("projectid"))
	}
	if !c.Has("account") && !c.Has("domainid") {
		return nil
	}
	if v.VlanType != models.VlanTypeVirtualNetwork {
		return cserr.Param("Only public IP ranges can be dedicated to an account or domain")
	}
	dom := &c.Caller.Domain
	if c.Has("domainid") {
		d, err := c.domainByUUID(c.Str("domainid"))
		if err != nil {
			return err
		}
		dom = d
	}
	v.DomainID = dom.ID
	if c.Has("account") {
		var a models.Account
		if err := c.S.DB.NewSelect().Model(&a).Where("domain_id = ? AND name = ?", dom.ID, c.Str("account")).Limit(1).Scan(c.Ctx); err != nil {
			if errors.Is(models.NotFound(err, ""), models.ErrNotFound) {
				return cserr.Param("Unable to find account %s in domain %s", clip(c.Str("account"), 64), dom.Name)
			}
			return err
		}
		v.AccountID = a.ID
	}
	return nil
}

func createVlanIpRange(c *Call) (any, error) {
	for _, p := range []string{"startipv6", "endipv6", "ip6gateway", "ip6cidr"} {
		if c.Has(p) {
			return nil, cserr.Param("parameter %s: IPv6 ranges are not supported yet", p)
		}
	}
	v := &models.Vlan{UUID: models.NewUUID(), Created: models.Now(), ForSystemVMs: c.Bool("forsystemvms", false)}
	var (
		zone    *models.Zone
		pod     *models.Pod
		network *models.Network
		physnet *models.PhysicalNetwork
		err     error
	)
	sameZone := func(id int64, what string) error {
		if zone == nil {
			zone, err = c.zoneByID(id)
			return err
		}
		if zone.ID != id {
			return cserr.Param("The %s is not in zone %s", what, zone.Name)
		}
		return nil
	}
	if c.Has("zoneid") {
		if zone, err = c.zoneByUUID(c.Str("zoneid")); err != nil {
			return nil, err
		}
	}
	if c.Has("podid") {
		if pod, err = c.podByUUID(c.Str("podid")); err != nil {
			return nil, err
		}
		if err := sameZone(pod.ZoneID, "pod "+pod.Name); err != nil {
			return nil, err
		}
	}
	if c.Has("networkid") {
		var n models.Network
		if err := c.S.DB.NewSelect().Model(&n).Where("uuid = ?", c.Str("networkid")).Limit(1).Scan(c.Ctx); err != nil {
			if errors.Is(models.NotFound(err, ""), models.ErrNotFound) {
				return nil, cserr.Param("Unable to find network by id %s", c.Str("networkid"))
			}
			return nil, err
		}
		network = &n
		if err := sameZone(n.ZoneID, "network "+n.Name); err != nil {
			return nil, err
		}
	}
	if c.Has("physicalnetworkid") {
		if physnet, err = c.physNetByUUID(c.Str("physicalnetworkid")); err != nil {
			return nil, err
		}
		if err := sameZone(physnet.ZoneID, "physical network "+physnet.Name); err != nil {
			return nil, err
		}
	}
	if zone == nil {
		return nil, cserr.Param("Unable to execute API command createvlaniprange: give zoneid (or podid, networkid or physicalnetworkid)")
	}
	forVirtual := c.Bool("forvirtualnetwork", true)
	switch {
	case network != nil:
		// A shared guest network's range (the VM side fills this in).
		v.VlanType, v.NetworkID = models.VlanTypeDirectAttached, network.ID
		if pod != nil {
			v.PodID = pod.ID
		}
		if physnet == nil && network.PhysicalNetworkID != 0 {
			v.PhysicalNetworkID = network.PhysicalNetworkID
		}
	case zone.NetworkType == models.NetworkTypeBasic:
		if forVirtual {
			return nil, cserr.Param("Zone %s is a Basic zone: its IP ranges are guest ranges of a pod (podid, forvirtualnetwork=false); public ranges need elastic IP, which is not supported", zone.Name)
		}
		if pod == nil {
			return nil, cserr.Param("A guest IP range in Basic zone %s belongs to a pod: give podid", zone.Name)
		}
		v.VlanType, v.PodID = models.VlanTypeDirectAttached, pod.ID
		if physnet == nil {
			if physnet, err = trafficPhysNet(c.Ctx, c.S.DB, zone.ID, models.TrafficGuest); err != nil {
				return nil, err
			}
		}
	default:
		if !forVirtual {
			return nil, cserr.Param("A guest IP range in Advanced zone %s belongs to a shared network: give networkid", zone.Name)
		}
		if pod != nil {
			return nil, cserr.Param("Public IP ranges are zone-wide: podid is only for guest ranges of Basic zones")
		}
		v.VlanType = models.VlanTypeVirtualNetwork
		if physnet == nil {
			if physnet, err = trafficPhysNet(c.Ctx, c.S.DB, zone.ID, models.TrafficPublic); err != nil {
				return nil, err
			}
		}
	}
	if physnet != nil {
		v.PhysicalNetworkID = physnet.ID
	}
	if v.ForSystemVMs && v.VlanType != models.VlanTypeVirtualNetwork {
		return nil, cserr.Param("forsystemvms is only for public IP ranges")
	}
	gateway, netmask := c.Str("gateway"), c.Str("netmask")
	if network != nil {
		if gateway == "" {
			gateway = network.Gateway
		}
		if netmask == "" {
			netmask = network.Netmask
		}
	}
	for _, p := range []struct{ name, v string }{{"gateway", gateway}, {"netmask", netmask}, {"startip", c.Str("startip")}} {
		if p.v == "" {
			return nil, cserr.Param("Unable to execute API command createvlaniprange due to missing parameter %s", p.name)
		}
	}
	plan, err := checkAddressPlan(gateway, netmask, c.Str("startip"), c.Str("endip"))
	if err != nil {
		return nil, cserr.Param("Invalid IP range: %v", err)
	}
	tag, err := vlanTagParam(c, "vlan")
	if err != nil {
		return nil, err
	}
	v.VlanTag = vlanTagStored(tag)
	v.Gateway, v.Netmask = ipv4String(plan.Gateway), netmaskString(plan.Subnet.Bits)
	v.StartIP, v.EndIP = ipv4String(plan.Range.Start), ipv4String(plan.Range.End)
	v.ZoneID = zone.ID
	if err := c.vlanRangeOwner(v); err != nil {
		return nil, err
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := activities.NetworkLockZone(ctx, tx, zone.ID); err != nil {
			return err
		}
		if err := checkVlanRange(ctx, tx, v, tag, plan); err != nil {
			return err
		}
		if _, err := tx.NewInsert().Model(v).Exec(ctx); err != nil {
			return err
		}
		return insertRangeIPs(ctx, tx, v, plan.Range)
	})
	if err != nil {
		return nil, err
	}
	kind := "public"
	if v.VlanType == models.VlanTypeDirectAttached {
		kind = "guest"
	}
	c.Event("VLAN.IP.RANGE.CREATE", "VlanIpRange", v.UUID, fmt.Sprintf("Created %s IP range %s (%s) in zone %s", kind, plan.Range, v.VlanTag, zone.Name))
	views, err := vlanRangeViews(c.Ctx, c.S.DB, []models.Vlan{*v})
	if err != nil {
		return nil, err
	}
	return Object{"vlan": views[0]}, nil
}

// checkVlanRange applies the rules of a new IP range that need the
// inventory: ranges on one VLAN of a zone share their gateway and netmask,
// a tagged VLAN is not one of the zone's guest VLANs, and the addresses
// overlap no other range.
func checkVlanRange(ctx context.Context, db bun.IDB, v *models.Vlan, tag string, plan addressPlan) error {
	var same []models.Vlan
	if err := db.NewSelect().Model(&same).Where("zone_id = ? AND vlan_tag = ? AND vlan_type = ?", v.ZoneID, v.VlanTag, v.VlanType).Scan(ctx); err != nil {
		return err
	}
	for _, o := range same {
		if v.VlanType == models.VlanTypeDirectAttached && (o.PodID != v.PodID || o.NetworkID != v.NetworkID) {
			continue
		}
		if o.Gateway != v.Gateway || o.Netmask != v.Netmask {
			return cserr.Param("The IP range %s-%s on %s already uses gateway %s and netmask %s; every range on one VLAN must share them",
				o.StartIP, o.EndIP, o.VlanTag, o.Gateway, o.Netmask)
		}
	}
	if tag != models.VlanUntagged {
		n, err := db.NewSelect().Model((*models.GuestVnet)(nil)).Where("zone_id = ? AND vnet = ?", v.ZoneID, tag).Count(ctx)
		if err != nil {
			return err
		}
		if n > 0 {
			return cserr.Param("VLAN %s is one of the zone's guest VLAN ranges (a physical network's vlan); pick a VLAN outside them", tag)
		}
	}
	return activities.NetworkIPConflict(ctx, db, v.ZoneID, activities.IPSpan{Start: plan.Range.Start, End: plan.Range.End}, activities.ConflictScope{})
}

// insertRangeIPs writes one Free ip_addresses row per address, in batches.
func insertRangeIPs(ctx context.Context, db bun.IDB, v *models.Vlan, r ipRange) error {
	const batch = 1000
	rows := make([]models.IPAddress, 0, batch)
	var err error
	r.Each(func(ip uint32) bool {
		rows = append(rows, models.IPAddress{
			UUID: models.NewUUID(), PublicIPAddress: ipv4String(ip), VlanID: v.ID, ZoneID: v.ZoneID,
			State: models.IPFree, SourceNetworkID: v.NetworkID, ForDisplay: true,
		})
		if len(rows) == batch || ip == r.End {
			if _, err = db.NewInsert().Model(&rows).Exec(ctx); err != nil {
				return false
			}
			rows = rows[:0]
		}
		return true
	})
	return err
}

func (c *Call) zoneByID(id int64) (*models.Zone, error) {
	var z models.Zone
	if err := c.S.DB.NewSelect().Model(&z).Where("id = ?", id).Limit(1).Scan(c.Ctx); err != nil {
		if errors.Is(models.NotFound(err, ""), models.ErrNotFound) {
			return nil, cserr.Param("Unable to find zone %d", id)
		}
		return nil, err
	}
	return &z, nil
}

func deleteVlanIpRange(c *Call) (any, error) {
	var v models.Vlan
	if err := c.S.DB.NewSelect().Model(&v).Where("uuid = ?", c.Str("id")).Limit(1).Scan(c.Ctx); err != nil {
		if errors.Is(models.NotFound(err, ""), models.ErrNotFound) {
			return nil, cserr.Param("Unable to find IP range by id %s", c.Str("id"))
		}
		return nil, err
	}
	err := c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := activities.NetworkLockZone(ctx, tx, v.ZoneID); err != nil {
			return err
		}
		// Guarded: only free addresses go, so an address allocated meanwhile
		// stays and stops the deletion (the transaction rolls back).
		if _, err := tx.NewDelete().Model((*models.IPAddress)(nil)).
			Where("vlan_id = ? AND state = ?", v.ID, models.IPFree).Exec(ctx); err != nil {
			return err
		}
		var used []models.IPAddress
		n, err := tx.NewSelect().Model(&used).Column("public_ip_address", "state").Where("vlan_id = ?", v.ID).
			Order("id ASC").Limit(5).ScanAndCount(ctx)
		if err != nil {
			return err
		}
		if n > 0 {
			ex := make([]string, len(used))
			for i, u := range used {
				ex[i] = u.PublicIPAddress + " (" + u.State + ")"
			}
			return cserr.InUse("The IP range %s-%s is not deletable because %d of its addresses are in use: %s", v.StartIP, v.EndIP, n, strings.Join(ex, ", "))
		}
		_, err = tx.NewDelete().Model(&v).WherePK().Exec(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.Event("VLAN.IP.RANGE.DELETE", "VlanIpRange", v.UUID, fmt.Sprintf("Deleted IP range %s-%s (%s)", v.StartIP, v.EndIP, v.VlanTag))
	return Success{Success: true}, nil
}

func listVlanIpRanges(c *Call) (any, error) {
	var vlans []models.Vlan
	q := c.S.DB.NewSelect().Model(&vlans).Order("id ASC")
	q = c.Filtered(q, Filter{ID: "uuid", Keyword: []string{"start_ip", "end_ip", "vlan_tag", "vlan_gateway"}})
	if c.Has("projectid") {
		return List{Key: "vlaniprange"}, nil // no projects yet: nothing is theirs
	}
	if c.Has("zoneid") {
		z, err := c.zoneByUUID(c.Str("zoneid"))
		if err != nil {
			return nil, err
		}
		q = q.Where("zone_id = ?", z.ID)
	}
	if c.Has("podid") {
		p, err := c.podByUUID(c.Str("podid"))
		if err != nil {
			return nil, err
		}
		q = q.Where("pod_id = ?", p.ID)
	}
	if c.Has("physicalnetworkid") {
		pn, err := c.physNetByUUID(c.Str("physicalnetworkid"))
		if err != nil {
			return nil, err
		}
		q = q.Where("physical_network_id = ?", pn.ID)
	}
	if c.Has("networkid") {
		q = q.Where("network_id IN (SELECT id FROM networks WHERE uuid = ?)", c.Str("networkid"))
	}
	if c.Has("vlan") {
		tag, err := vlanTagParam(c, "vlan")
		if err != nil {
			return nil, err
		}
		q = q.Where("vlan_tag = ?", vlanTagStored(tag))
	}
	if b := c.BoolPtr("forvirtualnetwork"); b != nil {
		typ := models.VlanTypeDirectAttached
		if *b {
			typ = models.VlanTypeVirtualNetwork
		}
		q = q.Where("vlan_type = ?", typ)
	}
	if c.Has("domainid") || c.Has("account") {
		dom := &c.Caller.Domain
		if c.Has("domainid") {
			d, err := c.domainByUUID(c.Str("domainid"))
			if err != nil {
				return nil, err
			}
			dom = d
		}
		if c.Has("account") {
			q = q.Where("account_id IN (SELECT id FROM accounts WHERE domain_id = ? AND name = ?)", dom.ID, c.Str("account"))
		} else {
			q = q.Where("domain_id = ?", dom.ID)
		}
	}
	total, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	views, err := vlanRangeViews(c.Ctx, c.S.DB, vlans)
	if err != nil {
		return nil, err
	}
	return List{Key: "vlaniprange", Count: total, Items: views}, nil
}

func createStorageNetworkIpRange(c *Call) (any, error) {
	pod, err := c.podByUUID(c.Str("podid"))
	if err != nil {
		return nil, err
	}
	plan, err := checkAddressPlan(c.Str("gateway"), c.Str("netmask"), c.Str("startip"), c.Str("endip"))
	if err != nil {
		return nil, cserr.Param("Invalid storage network IP range: %v", err)
	}
	in := activities.NetworkStorageRangeCreateInput{
		UUID: models.NewUUID(), PodID: pod.ID, ZoneID: pod.ZoneID,
		Gateway: ipv4String(plan.Gateway), Netmask: netmaskString(plan.Subnet.Bits),
		Span: activities.IPSpan{Start: plan.Range.Start, End: plan.Range.End}, Actor: netActor(c),
	}
	if c.Has("vlan") {
		n := c.Int("vlan", 0)
		if n < 1 || n > activities.MaxVLANID {
			return nil, cserr.Param("parameter vlan: %d is not a VLAN id (1-%d)", n, activities.MaxVLANID)
		}
		in.Vlan = strconv.FormatInt(n, 10)
	}
	if err := activities.NetworkStorageRangeCreateCheck(c.Ctx, c.S.DB, in); err != nil {
		return nil, err
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.CreateStorageNetworkIPRange, Input: in,
		InstanceType: "StorageNetworkIpRange", InstanceUUID: in.UUID, ResponseID: in.UUID,
		Summary: fmt.Sprintf("create storage network IP range %s in pod %s", plan.Range, pod.Name),
	})
}

func deleteStorageNetworkIpRange(c *Call) (any, error) {
	var r models.StorageNetworkIPRange
	if err := c.S.DB.NewSelect().Model(&r).Where("uuid = ?", c.Str("id")).Limit(1).Scan(c.Ctx); err != nil {
		if errors.Is(models.NotFound(err, ""), models.ErrNotFound) {
			return nil, cserr.Param("Unable to find storage network IP range by id %s", c.Str("id"))
		}
		return nil, err
	}
	n, err := activities.NetworkStorageRangeInUse(c.Ctx, c.S.DB, r.ID)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		return nil, cserr.InUse("The storage network IP range %s-%s is not deletable because %d of its addresses are in use", r.StartIP, r.EndIP, n)
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.DeleteStorageNetworkIPRange, Input: activities.NetworkStorageRangeDeleteInput{UUID: r.UUID, Actor: netActor(c)},
		InstanceType: "StorageNetworkIpRange", InstanceUUID: r.UUID,
		Summary: fmt.Sprintf("delete storage network IP range %s-%s", r.StartIP, r.EndIP),
	})
}

func listStorageNetworkIpRange(c *Call) (any, error) {
	var rs []models.StorageNetworkIPRange
	q := c.S.DB.NewSelect().Model(&rs).Order("id ASC")
	q = c.Filtered(q, Filter{ID: "uuid", Keyword: []string{"start_ip", "end_ip", "gateway"}})
	if c.Has("zoneid") {
		z, err := c.zoneByUUID(c.Str("zoneid"))
		if err != nil {
			return nil, err
		}
		q = q.Where("zone_id = ?", z.ID)
	}
	if c.Has("podid") {
		p, err := c.podByUUID(c.Str("podid"))
		if err != nil {
			return nil, err
		}
		q = q.Where("pod_id = ?", p.ID)
	}
	total, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	views, err := storageRangeViews(c.Ctx, c.S.DB, rs)
	if err != nil {
		return nil, err
	}
	return List{Key: "storagenetworkiprange", Count: total, Items: views}, nil
}
