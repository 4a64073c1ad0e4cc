package api

import (
	"context"
	"errors"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

// Pods: a rack with its management subnet (gateway + netmask) and its
// system reserved range (startip-endip), the addresses system VMs take.
// Each reserved address is an op_dc_ip_address_alloc row, unique across the
// cloud. The commands are synchronous, as in CloudStack.

func init() {
	Register(
		&Command{
			Name: "createPod", Description: "Creates a pod with its management subnet and system reserved range", Access: AccessRootAdmin,
			Params: []Param{
				{Name: "zoneid", Type: TUUID, Required: true, Description: "the zone of the pod"},
				{Name: "name", Type: TString, Required: true, Description: "the name of the pod"},
				{Name: "gateway", Type: TString, Description: "the gateway of the pod's management subnet (required)"},
				{Name: "netmask", Type: TString, Description: "the netmask of the pod's management subnet (required)"},
				{Name: "startip", Type: TString, Description: "the first address of the system reserved range (required)"},
				{Name: "endip", Type: TString, Description: "the last address of the system reserved range; the subnet's last host address by default"},
				{Name: "allocationstate", Type: TString, Description: "Enabled (default) or Disabled"},
			},
			ResponseName: "pod", Response: podFields, Handler: createPod,
		},
		&Command{
			Name: "updatePod", Description: "Updates a pod", Access: AccessRootAdmin,
			Params: []Param{
				{Name: "id", Type: TUUID, Required: true, Description: "the ID of the pod"},
				{Name: "name", Type: TString, Description: "the new name"},
				{Name: "gateway", Type: TString, Description: "the new gateway"},
				{Name: "netmask", Type: TString, Description: "the new netmask"},
				{Name: "startip", Type: TString, Description: "the new start of the system reserved range"},
				{Name: "endip", Type: TString, Description: "the new end of the system reserved range"},
				{Name: "allocationstate", Type: TString, Description: "Enabled or Disabled"},
			},
			ResponseName: "pod", Response: podFields, Handler: updatePod,
		},
		&Command{
			Name: "deletePod", Description: "Deletes a pod that holds no cluster, host or IP range", Access: AccessRootAdmin,
			Params:       []Param{{Name: "id", Type: TUUID, Required: true, Description: "the ID of the pod"}},
			ResponseName: "success", Response: successFields, Handler: deletePod,
		},
		&Command{
			Name: "listPods", Description: "Lists pods", Access: AccessRootAdmin,
			Params: append(ListParams(),
				Param{Name: "id", Type: TUUID, Description: "the ID of the pod"},
				Param{Name: "name", Type: TString, Description: "the name of the pod"},
				Param{Name: "zoneid", Type: TUUID, Description: "the zone of the pods"},
				Param{Name: "allocationstate", Type: TString, Description: "Enabled or Disabled"},
				Param{Name: "showcapacities", Type: TBoolean, Description: "accepted; capacities are shown by listCapacity"},
			),
			ResponseName: "pod", Response: podFields, Handler: listPods,
		},
	)
}

var podFields = []Field{
	{"id", "string", "the ID of the pod"}, {"name", "string", "its name"},
	{"zoneid", "string", "the zone"}, {"zonename", "string", "the zone's name"},
	{"gateway", "string", "the gateway of the management subnet"}, {"netmask", "string", "its netmask"},
	{"startip", "list", "the starts of the system reserved ranges"}, {"endip", "list", "their ends"},
	{"forsystemvms", "list", "whether each range is for system VMs"}, {"vlanid", "list", "the VLAN of each range"},
	{"ipranges", "list", "the system reserved ranges (gateway, cidr, startip, endip, forsystemvms, vlanid)"},
	{"allocationstate", "string", "Enabled or Disabled"}, {"hasannotations", "boolean", "whether the pod has annotations"},
}

// PodView is a pod as listPods shows it (the SDK's Pod).
type PodView struct {
	ID              string        `json:"id"`
	Name            string        `json:"name"`
	ZoneID          string        `json:"zoneid"`
	ZoneName        string        `json:"zonename"`
	Gateway         string        `json:"gateway"`
	Netmask         string        `json:"netmask"`
	StartIP         []string      `json:"startip"`
	EndIP           []string      `json:"endip"`
	ForSystemVMs    []string      `json:"forsystemvms"`
	VlanID          []string      `json:"vlanid"`
	IPRanges        []PodIPRanges `json:"ipranges"`
	AllocationState string        `json:"allocationstate"`
	HasAnnotations  bool          `json:"hasannotations"`
}

// PodIPRanges is one management range of a pod (the SDK's PodIpranges).
type PodIPRanges struct {
	Gateway      string `json:"gateway"`
	CIDR         string `json:"cidr"`
	StartIP      string `json:"startip"`
	EndIP        string `json:"endip"`
	ForSystemVMs string `json:"forsystemvms"`
	VlanID       string `json:"vlanid"`
}

func podViews(ctx context.Context, db bun.IDB, pods []models.Pod) ([]PodView, error) {
	ids := make([]int64, 0, len(pods))
	for _, p := range pods {
		ids = append(ids, p.ZoneID)
	}
	zones, err := zoneRefs(ctx, db, ids)
	if err != nil {
		return nil, err
	}
	out := make([]PodView, len(pods))
	for i, p := range pods {
		z := zones[p.ZoneID]
		v := PodView{
			ID: p.UUID, Name: p.Name, ZoneID: z.UUID, ZoneName: z.Name, Gateway: p.Gateway, AllocationState: p.AllocationState,
			StartIP: []string{}, EndIP: []string{}, ForSystemVMs: []string{}, VlanID: []string{}, IPRanges: []PodIPRanges{},
		}
		if p.CIDRSize > 0 {
			v.Netmask = netmaskString(p.CIDRSize)
		}
		if p.StartIP != "" {
			v.StartIP, v.EndIP, v.ForSystemVMs, v.VlanID = []string{p.StartIP}, []string{p.EndIP}, []string{"0"}, []string{""}
			v.IPRanges = []PodIPRanges{{
				Gateway: p.Gateway, CIDR: fmt.Sprintf("%s/%d", p.CIDRAddress, p.CIDRSize),
				StartIP: p.StartIP, EndIP: p.EndIP, ForSystemVMs: "0",
			}}
		}
		out[i] = v
	}
	return out, nil
}

func (c *Call) podByUUID(id string) (*models.Pod, error) {
	var p models.Pod
	if err := c.S.DB.NewSelect().Model(&p).Where("uuid = ?", id).Limit(1).Scan(c.Ctx); err != nil {
		if errors.Is(models.NotFound(err, ""), models.ErrNotFound) {
			return nil, cserr.Param("Unable to find pod by id %s", clip(id, 64))
		}
		return nil, err
	}
	return &p, nil
}

func (c *Call) podView(p *models.Pod) (PodView, error) {
	views, err := podViews(c.Ctx, c.S.DB, []models.Pod{*p})
	if err != nil {
		return PodView{}, err
	}
	return views[0], nil
}

// podPlan validates a pod's gateway, netmask and reserved range; an empty
// endip runs to the subnet's last host address.
func podPlan(gateway, netmask, start, end string) (addressPlan, error) {
	for _, p := range []struct{ name, v string }{{"gateway", gateway}, {"netmask", netmask}, {"startip", start}} {
		if p.v == "" {
			return addressPlan{}, cserr.Param("Unable to create the pod: parameter %s is required (the pod's management subnet and system reserved range)", p.name)
		}
	}
	if end == "" {
		gw, err1 := parseIPv4(gateway)
		n, err2 := parseNetmask(netmask)
		if err1 == nil && err2 == nil {
			end = ipv4String(subnetOf(gw, n).Hosts().End)
		}
	}
	plan, err := checkAddressPlan(gateway, netmask, start, end)
	if err != nil {
		return plan, cserr.Param("Invalid system reserved range of the pod: %v", err)
	}
	return plan, nil
}

// checkPodPlan applies the pod rules that depend on the inventory: the
// pod's subnet overlaps no other pod's in the zone, and its reserved range
// overlaps no other range (reserved ranges are unique across the cloud).
func checkPodPlan(ctx context.Context, db bun.IDB, zoneID, podID int64, plan addressPlan) error {
	var others []models.Pod
	if err := db.NewSelect().Model(&others).Where("zone_id = ? AND id <> ?", zoneID, podID).Scan(ctx); err != nil {
		return err
	}
	for _, o := range others {
		net, err := parseIPv4(o.CIDRAddress)
		if err != nil || o.CIDRSize == 0 {
			continue
		}
		os := subnetOf(net, o.CIDRSize)
		if os.Overlaps(plan.Subnet) {
			return cserr.Param("The subnet %s of the pod conflicts with the subnet %s of pod %s in the same zone; give a different CIDR", plan.Subnet.CIDR(), os.CIDR(), o.Name)
		}
	}
	return activities.NetworkIPConflict(ctx, db, zoneID, activities.IPSpan{Start: plan.Range.Start, End: plan.Range.End},
		activities.ConflictScope{Reserved: true, SkipPodID: podID})
}

// insertPodIPs writes one op_dc_ip_address_alloc row per address, in
// batches.
func insertPodIPs(ctx context.Context, db bun.IDB, p *models.Pod, ips []uint32) error {
	const batch = 1000
	for i := 0; i < len(ips); i += batch {
		j := min(i+batch, len(ips))
		rows := make([]models.PodIPAddress, 0, j-i)
		for _, ip := range ips[i:j] {
			rows = append(rows, models.PodIPAddress{IPAddress: ipv4String(ip), ZoneID: p.ZoneID, PodID: p.ID})
		}
		if _, err := db.NewInsert().Model(&rows).Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

func rangeIPs(r ipRange, skip func(uint32) bool) []uint32 {
	out := make([]uint32, 0, r.Size())
	r.Each(func(ip uint32) bool {
		if skip == nil || !skip(ip) {
			out = append(out, ip)
		}
		return true
	})
	return out
}

func podNameTaken(ctx context.Context, db bun.IDB, zoneID, except int64, name string) error {
	n, err := db.NewSelect().Model((*models.Pod)(nil)).Where("zone_id = ? AND name = ? AND id <> ?", zoneID, name, except).Count(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		return cserr.Param("A pod named %q already exists in the zone", name)
	}
	return nil
}

func createPod(c *Call) (any, error) {
	z, err := c.zoneByUUID(c.Str("zoneid"))
	if err != nil {
		return nil, err
	}
	alloc, err := allocationState(c)
	if err != nil {
		return nil, err
	}
	if alloc == "" {
		alloc = models.AllocationEnabled
	}
	plan, err := podPlan(c.Str("gateway"), c.Str("netmask"), c.Str("startip"), c.Str("endip"))
	if err != nil {
		return nil, err
	}
	p := &models.Pod{
		UUID: models.NewUUID(), Name: c.Str("name"), ZoneID: z.ID, Gateway: ipv4String(plan.Gateway),
		CIDRAddress: ipv4String(plan.Subnet.Net), CIDRSize: plan.Subnet.Bits,
		StartIP: ipv4String(plan.Range.Start), EndIP: ipv4String(plan.Range.End),
		AllocationState: alloc, Created: models.Now(),
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := activities.NetworkLockZone(ctx, tx, z.ID); err != nil {
			return err
		}
		if err := podNameTaken(ctx, tx, z.ID, 0, p.Name); err != nil {
			return err
		}
		if err := checkPodPlan(ctx, tx, z.ID, 0, plan); err != nil {
			return err
		}
		if _, err := tx.NewInsert().Model(p).Exec(ctx); err != nil {
			return err
		}
		return insertPodIPs(ctx, tx, p, rangeIPs(plan.Range, nil))
	})
	if err != nil {
		return nil, err
	}
	c.Event("POD.CREATE", "Pod", p.UUID, fmt.Sprintf("Pod %s created in zone %s with system reserved range %s", p.Name, z.Name, plan.Range))
	v, err := c.podView(p)
	if err != nil {
		return nil, err
	}
	return Object{"pod": v}, nil
}

func updatePod(c *Call) (any, error) {
	p, err := c.podByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	alloc, err := allocationState(c)
	if err != nil {
		return nil, err
	}
	addressing := c.Has("gateway") || c.Has("netmask") || c.Has("startip") || c.Has("endip")
	var plan addressPlan
	if addressing {
		pick := func(param, cur string) string {
			if c.Has(param) {
				return c.Str(param)
			}
			return cur
		}
		netmask := ""
		if p.CIDRSize > 0 {
			netmask = netmaskString(p.CIDRSize)
		}
		end := pick("endip", p.EndIP)
		if c.Has("startip") && !c.Has("endip") && p.EndIP == "" {
			end = ""
		}
		if plan, err = podPlan(pick("gateway", p.Gateway), pick("netmask", netmask), pick("startip", p.StartIP), end); err != nil {
			return nil, err
		}
	}
	var oldRange ipRange
	if p.StartIP != "" {
		if oldRange, err = parseIPRange(p.StartIP, p.EndIP); err != nil {
			return nil, err
		}
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := activities.NetworkLockZone(ctx, tx, p.ZoneID); err != nil {
			return err
		}
		q := tx.NewUpdate().Model(p).WherePK()
		changed := false
		if c.Has("name") && c.Str("name") != p.Name {
			if err := podNameTaken(ctx, tx, p.ZoneID, p.ID, c.Str("name")); err != nil {
				return err
			}
			q, changed = q.Set("name = ?", c.Str("name")), true
		}
		if alloc != "" {
			q, changed = q.Set("allocation_state = ?", alloc), true
		}
		if addressing {
			if err := checkPodPlan(ctx, tx, p.ZoneID, p.ID, plan); err != nil {
				return err
			}
			// Addresses leaving the range go (none may be taken); new ones come.
			var rows []models.PodIPAddress
			if err := tx.NewSelect().Model(&rows).Where("pod_id = ?", p.ID).Scan(ctx); err != nil {
				return err
			}
			have := make(map[uint32]bool, len(rows))
			var drop []int64
			for _, r := range rows {
				ip, err := parseIPv4(r.IPAddress)
				if err == nil && plan.Range.Contains(ip) {
					have[ip] = true
					continue
				}
				if r.NicID != 0 || !r.Taken.IsZero() {
					return cserr.InUse("The system reserved range of pod %s cannot shrink past %s: the address is in use", p.Name, r.IPAddress)
				}
				drop = append(drop, r.ID)
			}
			for i := 0; i < len(drop); i += 1000 {
				j := min(i+1000, len(drop))
				res, err := tx.NewDelete().Model((*models.PodIPAddress)(nil)).
					Where("id IN (?) AND nic_id IS NULL AND taken IS NULL", bun.In(drop[i:j])).Exec(ctx)
				if err != nil {
					return err
				}
				if n, _ := res.RowsAffected(); n != int64(j-i) {
					return cserr.InUse("The system reserved range of pod %s cannot shrink: addresses were taken meanwhile", p.Name)
				}
			}
			if err := insertPodIPs(ctx, tx, p, rangeIPs(plan.Range, func(ip uint32) bool { return have[ip] })); err != nil {
				return err
			}
			q = q.Set("gateway = ?", ipv4String(plan.Gateway)).Set("cidr_address = ?", ipv4String(plan.Subnet.Net)).
				Set("cidr_size = ?", plan.Subnet.Bits).Set("start_ip = ?", ipv4String(plan.Range.Start)).
				Set("end_ip = ?", ipv4String(plan.Range.End))
			changed = true
		}
		if changed {
			if _, err := q.Exec(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	desc := "Pod " + p.Name + " updated"
	if addressing && plan.Range != oldRange {
		desc += fmt.Sprintf("; system reserved range %s (was %s)", plan.Range, oldRange)
	}
	c.Event("POD.EDIT", "Pod", p.UUID, desc)
	if p, err = c.podByUUID(p.UUID); err != nil {
		return nil, err
	}
	v, err := c.podView(p)
	if err != nil {
		return nil, err
	}
	return Object{"pod": v}, nil
}

func deletePod(c *Call) (any, error) {
	p, err := c.podByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := activities.NetworkLockZone(ctx, tx, p.ZoneID); err != nil {
			return err
		}
		for _, chk := range []struct {
			model any
			what  string
		}{
			{(*models.Cluster)(nil), "cluster(s)"},
			{(*models.Host)(nil), "host(s)"},
			{(*models.Vlan)(nil), "guest IP range(s)"},
			{(*models.StorageNetworkIPRange)(nil), "storage network IP range(s)"},
		} {
			n, err := tx.NewSelect().Model(chk.model).Where("pod_id = ?", p.ID).Count(ctx)
			if err != nil {
				return err
			}
			if n > 0 {
				return cserr.InUse("The pod %s is not deletable because it has %d %s; remove them first", p.Name, n, chk.what)
			}
		}
		// Release the reserved addresses; a taken one (guarded) stops it.
		if _, err := tx.NewDelete().Model((*models.PodIPAddress)(nil)).
			Where("pod_id = ? AND nic_id IS NULL AND taken IS NULL", p.ID).Exec(ctx); err != nil {
			return err
		}
		n, err := tx.NewSelect().Model((*models.PodIPAddress)(nil)).Where("pod_id = ?", p.ID).Count(ctx)
		if err != nil {
			return err
		}
		if n > 0 {
			return cserr.InUse("The pod %s is not deletable because %d of its system reserved addresses are in use", p.Name, n)
		}
		_, err = tx.NewDelete().Model(p).WherePK().Exec(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.Event("POD.DELETE", "Pod", p.UUID, "Pod "+p.Name+" deleted")
	return Success{Success: true}, nil
}

func listPods(c *Call) (any, error) {
	var pods []models.Pod
	q := c.S.DB.NewSelect().Model(&pods).Order("id ASC")
	q = c.Filtered(q, Filter{ID: "uuid", Name: "name", Keyword: []string{"name"}})
	if c.Has("zoneid") {
		z, err := c.zoneByUUID(c.Str("zoneid"))
		if err != nil {
			return nil, err
		}
		q = q.Where("zone_id = ?", z.ID)
	}
	if c.Has("allocationstate") {
		alloc, err := allocationState(c)
		if err != nil {
			return nil, err
		}
		q = q.Where("allocation_state = ?", alloc)
	}
	total, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	views, err := podViews(c.Ctx, c.S.DB, pods)
	if err != nil {
		return nil, err
	}
	return List{Key: "pod", Count: total, Items: views}, nil
}
