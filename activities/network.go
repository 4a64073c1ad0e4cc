package activities

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

// PhysNet holds the steps of the physical network jobs: physical networks
// with their guest VLAN ranges, traffic types, network service providers,
// and the storage network IP ranges of pods.
//
// Every step checks its rules and writes in one transaction that first
// locks the zone row, so that two jobs on the same zone cannot both pass a
// check that only one of them may pass (overlapping VLAN or IP ranges, a
// second physical network in a Basic zone). The API runs the same checks
// before starting the job, so that most refusals are answered at once; the
// job's check is the authoritative one.
type PhysNet struct{ Deps }

// Physical network states and broadcast domain ranges.
const (
	PhysNetEnabled  = "Enabled"
	PhysNetDisabled = "Disabled"

	BroadcastDomainPod  = "POD"
	BroadcastDomainZone = "ZONE"
)

// Service provider states.
const (
	ProviderEnabled  = "Enabled"
	ProviderDisabled = "Disabled"
	ProviderShutdown = "Shutdown"
)

// Guest VLAN limits: 802.1Q ids for VLAN isolation, 24-bit ids for the
// overlay methods (VXLAN...), and how many vnet rows one call may add.
const (
	MaxVLANID     = 4094
	MaxOverlayID  = 16777214
	MaxVnetsAdded = 65536
)

// DefaultProviders are the network service providers a new physical network
// gets, all Disabled until an administrator enables them, with the services
// each offers (as CloudStack adds them).
var DefaultProviders = []struct {
	Name     string
	Services []string
}{
	{"VirtualRouter", []string{"Dhcp", "Dns", "UserData", "SourceNat", "StaticNat", "PortForwarding", "Lb", "Firewall", "Vpn", "Gateway", "RemoteAccessVpn"}},
	{"VpcVirtualRouter", []string{"Dhcp", "Dns", "UserData", "SourceNat", "StaticNat", "PortForwarding", "Lb", "NetworkACL", "Vpn", "Gateway", "RemoteAccessVpn"}},
	{"InternalLbVm", []string{"Lb"}},
	{"ConfigDrive", []string{"UserData"}},
	// Only in Basic zones and zones with security groups.
	{"SecurityGroupProvider", []string{"SecurityGroup"}},
	// Only on physical networks isolated with GRE.
	{"Ovs", []string{"Connectivity", "Lb", "StaticNat", "PortForwarding", "SourceNat", "Gateway"}},
}

// ProviderServices is the services a default provider offers (nil for a
// provider that is not one of them).
func ProviderServices(name string) []string {
	for _, p := range DefaultProviders {
		if strings.EqualFold(p.Name, name) {
			return p.Services
		}
	}
	return nil
}

// ---- guest VLAN ranges ----

// VnetSpan is an inclusive range of guest VLAN (or VXLAN) ids.
type VnetSpan struct {
	Start int `json:"start"`
	End   int `json:"end"`
}

// Count is how many ids the span holds.
func (s VnetSpan) Count() int { return s.End - s.Start + 1 }

func (s VnetSpan) String() string {
	if s.Start == s.End {
		return strconv.Itoa(s.Start)
	}
	return fmt.Sprintf("%d-%d", s.Start, s.End)
}

// ParseVnetRanges parses guest VLAN ranges as CloudStack writes them
// ("100-199,300-310", single ids allowed), each id in 1..max, ranges not
// overlapping each other. The result is sorted by start.
func ParseVnetRanges(s string, max int) ([]VnetSpan, error) {
	var out []VnetSpan
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(strings.TrimSpace(lo))
		b, err2 := a, error(nil)
		if isRange {
			b, err2 = strconv.Atoi(strings.TrimSpace(hi))
		}
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%q is not a VLAN range (want start-end, e.g. 100-199)", part)
		}
		if a < 1 || b < 1 || a > max || b > max {
			return nil, fmt.Errorf("VLAN range %s is out of bounds: ids go from 1 to %d", part, max)
		}
		if a > b {
			return nil, fmt.Errorf("VLAN range %s starts after it ends", part)
		}
		out = append(out, VnetSpan{a, b})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no VLAN range in %q", s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	for i := 1; i < len(out); i++ {
		if out[i].Start <= out[i-1].End {
			return nil, fmt.Errorf("VLAN ranges %s and %s overlap", out[i-1], out[i])
		}
	}
	return out, nil
}

// FormatVnetRanges writes spans as CloudStack shows them ("100-199,300").
func FormatVnetRanges(spans []VnetSpan) string {
	parts := make([]string, len(spans))
	for i, s := range spans {
		parts[i] = s.String()
	}
	return strings.Join(parts, ",")
}

// VnetCount is how many ids the spans hold.
func VnetCount(spans []VnetSpan) int {
	n := 0
	for _, s := range spans {
		n += s.Count()
	}
	return n
}

// VnetMax is the largest id an isolation method allows.
func VnetMax(isolation string) int {
	if isolation == "" || strings.EqualFold(isolation, "VLAN") {
		return MaxVLANID
	}
	return MaxOverlayID
}

func vnetSet(spans []VnetSpan) map[int]bool {
	m := make(map[int]bool, VnetCount(spans))
	for _, s := range spans {
		for v := s.Start; v <= s.End; v++ {
			m[v] = true
		}
	}
	return m
}

// storedVnets parses a physical network's vnet column; a value written by
// an older tool that does not parse counts as no range.
func storedVnets(pn *models.PhysicalNetwork) []VnetSpan {
	if strings.TrimSpace(pn.Vnet) == "" {
		return nil
	}
	spans, err := ParseVnetRanges(pn.Vnet, MaxOverlayID)
	if err != nil {
		return nil
	}
	return spans
}

// vnetConflict refuses spans that overlap the guest VLAN ranges of another
// physical network of the zone.
func vnetConflict(ctx context.Context, db bun.IDB, zoneID, exceptID int64, spans []VnetSpan) error {
	var pns []models.PhysicalNetwork
	if err := db.NewSelect().Model(&pns).Where("zone_id = ? AND id <> ?", zoneID, exceptID).Scan(ctx); err != nil {
		return err
	}
	for i := range pns {
		for _, o := range storedVnets(&pns[i]) {
			for _, s := range spans {
				if s.Start <= o.End && o.Start <= s.End {
					return cserr.Param("The VLAN range %s overlaps the range %s of physical network %s in the same zone", s, o, pns[i].Name)
				}
			}
		}
	}
	return nil
}

// insertVnets writes one op_dc_vnet_alloc row per id, in batches.
func insertVnets(ctx context.Context, db bun.IDB, pn *models.PhysicalNetwork, ids []int) error {
	const batch = 1000
	for i := 0; i < len(ids); i += batch {
		j := min(i+batch, len(ids))
		rows := make([]models.GuestVnet, 0, j-i)
		for _, v := range ids[i:j] {
			rows = append(rows, models.GuestVnet{Vnet: strconv.Itoa(v), PhysicalNetworkID: pn.ID, ZoneID: pn.ZoneID})
		}
		if _, err := db.NewInsert().Model(&rows).Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

// removeVnets deletes the op_dc_vnet_alloc rows of ids, refusing (536) when
// any of them is taken by a guest network. The delete itself is guarded, so
// a vnet taken meanwhile is not removed either.
func removeVnets(ctx context.Context, db bun.IDB, pn *models.PhysicalNetwork, ids []int) error {
	const batch = 1000
	for i := 0; i < len(ids); i += batch {
		j := min(i+batch, len(ids))
		strs := make([]string, 0, j-i)
		for _, v := range ids[i:j] {
			strs = append(strs, strconv.Itoa(v))
		}
		var taken []string
		if err := db.NewSelect().Model((*models.GuestVnet)(nil)).Column("vnet").
			Where("physical_network_id = ? AND vnet IN (?)", pn.ID, bun.In(strs)).
			Where("(taken IS NOT NULL OR network_id IS NOT NULL)").Limit(10).Scan(ctx, &taken); err != nil {
			return err
		}
		if len(taken) > 0 {
			return cserr.InUse("Cannot remove the VLAN range: vnet(s) %s of physical network %s are allocated to guest networks", strings.Join(taken, ", "), pn.Name)
		}
		if _, err := db.NewDelete().Model((*models.GuestVnet)(nil)).
			Where("physical_network_id = ? AND vnet IN (?)", pn.ID, bun.In(strs)).
			Where("taken IS NULL AND network_id IS NULL").Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

// lockZone takes the zone row's write lock for the rest of the transaction
// (a no-op update: InnoDB locks the matched row; SQLite has one writer) and
// returns the zone. It must be the transaction's first statement, so that
// the transaction's reads (a snapshot taken at its first read on MariaDB)
// see every change committed before the lock.
func lockZone(ctx context.Context, db bun.IDB, zoneID int64) (*models.Zone, error) {
	if _, err := db.NewUpdate().Model((*models.Zone)(nil)).Set("sort_key = sort_key").Where("id = ?", zoneID).Exec(ctx); err != nil {
		return nil, err
	}
	var z models.Zone
	if err := db.NewSelect().Model(&z).Where("id = ?", zoneID).Limit(1).Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, cserr.Param("The zone was deleted")
		}
		return nil, err
	}
	return &z, nil
}

// zoneOf reads, before a transaction starts, the zone of the row whose
// column zone_id (or, via physical_networks, physical_network_id) it names;
// found is false when no live row has the UUID.
func zoneOf(ctx context.Context, db bun.IDB, model any, uuid string, viaPhysNet bool) (zoneID int64, found bool, err error) {
	q := db.NewSelect().Model(model).Where("?TableAlias.uuid = ?", uuid).Limit(1)
	if viaPhysNet {
		q = q.Join("JOIN physical_networks AS pn ON pn.id = ?TableAlias.physical_network_id").ColumnExpr("pn.zone_id")
	} else {
		q = q.Column("zone_id")
	}
	if err := q.Scan(ctx, &zoneID); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return 0, false, nil
		}
		return 0, false, err
	}
	return zoneID, true, nil
}

// ---- IP range conflicts ----

// IPSpan is an inclusive IPv4 range as numbers.
type IPSpan struct {
	Start uint32 `json:"start"`
	End   uint32 `json:"end"`
}

// ConflictScope says which existing ranges a new IPv4 range is checked
// against, and which of them is the one being changed.
type ConflictScope struct {
	// Reserved: the new range is a pod's system reserved range, unique
	// across the cloud, so every range in every zone counts. Otherwise pod
	// reserved ranges count in every zone and the other ranges in the zone.
	Reserved      bool
	SkipPodID     int64
	SkipVlanID    int64
	SkipStorageID int64
}

func ipv4Num(s string) (uint32, bool) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || !a.Is4() {
		return 0, false
	}
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]), true
}

func spanOf(start, end string) (IPSpan, bool) {
	s, ok1 := ipv4Num(start)
	e, ok2 := ipv4Num(end)
	if !ok1 {
		return IPSpan{}, false
	}
	if !ok2 {
		e = s
	}
	return IPSpan{s, e}, true
}

func (s IPSpan) overlaps(o IPSpan) bool { return s.Start <= o.End && o.Start <= s.End }

func zoneName(ctx context.Context, db bun.IDB, id int64) string {
	var name string
	if err := db.NewSelect().Model((*models.Zone)(nil)).Column("name").Where("id = ?", id).WhereAllWithDeleted().Limit(1).Scan(ctx, &name); err != nil {
		return strconv.FormatInt(id, 10)
	}
	return name
}

// NetworkIPConflict refuses (431) an IPv4 range that overlaps an existing
// one: any pod's system reserved range in the cloud, and the public/guest
// (vlans) and storage ranges of the zone (of every zone when the new range
// is itself a reserved range). It is a plain function, not an activity: the
// API's synchronous range commands call it in their transactions too.
func NetworkIPConflict(ctx context.Context, db bun.IDB, zoneID int64, span IPSpan, scope ConflictScope) error {
	show := func(a, b string) string {
		if b == "" {
			return a
		}
		return a + "-" + b
	}
	var pods []models.Pod
	if err := db.NewSelect().Model(&pods).Column("id", "name", "zone_id", "start_ip", "end_ip").
		Where("id <> ?", scope.SkipPodID).Where("start_ip IS NOT NULL AND start_ip <> ''").Scan(ctx); err != nil {
		return err
	}
	for _, p := range pods {
		if o, ok := spanOf(p.StartIP, p.EndIP); ok && o.overlaps(span) {
			return cserr.Param("The IP range overlaps the system reserved range %s of pod %s in zone %s; system reserved ranges are unique across the cloud",
				show(p.StartIP, p.EndIP), p.Name, zoneName(ctx, db, p.ZoneID))
		}
	}
	var vlans []models.Vlan
	q := db.NewSelect().Model(&vlans).Column("id", "zone_id", "vlan_tag", "vlan_type", "start_ip", "end_ip", "pod_id").
		Where("id <> ?", scope.SkipVlanID).Where("start_ip IS NOT NULL AND start_ip <> ''")
	if !scope.Reserved {
		q = q.Where("zone_id = ?", zoneID)
	}
	if err := q.Scan(ctx); err != nil {
		return err
	}
	for _, v := range vlans {
		if o, ok := spanOf(v.StartIP, v.EndIP); ok && o.overlaps(span) {
			kind := "public"
			if v.VlanType == models.VlanTypeDirectAttached {
				kind = "guest"
			}
			return cserr.Param("The IP range overlaps the %s IP range %s (vlan %s) in zone %s", kind, show(v.StartIP, v.EndIP), v.VlanTag, zoneName(ctx, db, v.ZoneID))
		}
	}
	var srs []models.StorageNetworkIPRange
	q = db.NewSelect().Model(&srs).Where("id <> ?", scope.SkipStorageID)
	if !scope.Reserved {
		q = q.Where("zone_id = ?", zoneID)
	}
	if err := q.Scan(ctx); err != nil {
		return err
	}
	for _, r := range srs {
		if o, ok := spanOf(r.StartIP, r.EndIP); ok && o.overlaps(span) {
			return cserr.Param("The IP range overlaps the storage network range %s in zone %s", show(r.StartIP, r.EndIP), zoneName(ctx, db, r.ZoneID))
		}
	}
	return nil
}

func ipString(ip uint32) string {
	return netip.AddrFrom4([4]byte{byte(ip >> 24), byte(ip >> 16), byte(ip >> 8), byte(ip)}).String()
}

// ---- physical networks ----

// PhysNetCreateInput is a createPhysicalNetwork job, checked and resolved by
// the API.
type PhysNetCreateInput struct {
	UUID                 string
	Name                 string
	ZoneID               int64
	DomainID             int64
	Isolation            string // one method: VLAN, VXLAN, GRE, L3...
	Vnets                []VnetSpan
	BroadcastDomainRange string
	Speed                string
	Tags                 string
	Actor                Actor
}

// PhysNetCreateCheck applies createPhysicalNetwork's rules to the inventory
// as it is: a Basic zone takes exactly one physical network; guest VLAN
// ranges do not overlap those of the zone's other physical networks.
func PhysNetCreateCheck(ctx context.Context, db bun.IDB, z *models.Zone, in PhysNetCreateInput) error {
	if z.NetworkType == models.NetworkTypeBasic {
		var existing []models.PhysicalNetwork
		if err := db.NewSelect().Model(&existing).Column("name", "uuid").Where("zone_id = ?", z.ID).Scan(ctx); err != nil {
			return err
		}
		for _, pn := range existing {
			if pn.UUID != in.UUID {
				return cserr.Param("Zone %s is a Basic zone and already has physical network %s: a Basic zone takes exactly one physical network", z.Name, pn.Name)
			}
		}
		if len(in.Vnets) > 0 {
			return cserr.Param("Zone %s is a Basic zone: its physical network takes no guest VLAN range", z.Name)
		}
	}
	if len(in.Vnets) > 0 {
		return vnetConflict(ctx, db, z.ID, 0, in.Vnets)
	}
	return nil
}

// PhysNetCreate writes the physical network, its default service providers
// (Disabled) and one op_dc_vnet_alloc row per guest VLAN id. A rerun finds
// the network by UUID and succeeds.
func (a *PhysNet) PhysNetCreate(ctx context.Context, in PhysNetCreateInput) error {
	err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		z, err := lockZone(ctx, tx, in.ZoneID)
		if err != nil {
			return err
		}
		if ok, err := tx.NewSelect().Model((*models.PhysicalNetwork)(nil)).Where("uuid = ?", in.UUID).WhereAllWithDeleted().Exists(ctx); err != nil || ok {
			return err
		}
		if err := PhysNetCreateCheck(ctx, tx, z, in); err != nil {
			return err
		}
		pn := &models.PhysicalNetwork{
			UUID: in.UUID, Name: in.Name, ZoneID: z.ID, DomainID: in.DomainID, Vnet: FormatVnetRanges(in.Vnets),
			Speed: in.Speed, IsolationMethods: in.Isolation, BroadcastDomainRange: in.BroadcastDomainRange,
			State: PhysNetDisabled, Tags: in.Tags, Created: models.Now(),
		}
		if _, err := tx.NewInsert().Model(pn).Exec(ctx); err != nil {
			return err
		}
		for _, p := range DefaultProviders {
			switch p.Name {
			case "SecurityGroupProvider":
				if z.NetworkType != models.NetworkTypeBasic && !z.IsSecurityGroupEnabled {
					continue
				}
			case "Ovs":
				if !strings.EqualFold(in.Isolation, "GRE") {
					continue
				}
			}
			row := &models.PhysicalNetworkServiceProvider{
				UUID: NetworkUUID(in.UUID, "provider/"+p.Name), PhysicalNetworkID: pn.ID, ProviderName: p.Name,
				State: ProviderDisabled, Services: strings.Join(p.Services, ","),
			}
			if _, err := tx.NewInsert().Model(row).Exec(ctx); err != nil {
				return err
			}
		}
		ids := make([]int, 0, VnetCount(in.Vnets))
		for _, s := range in.Vnets {
			for v := s.Start; v <= s.End; v++ {
				ids = append(ids, v)
			}
		}
		if err := insertVnets(ctx, tx, pn, ids); err != nil {
			return err
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "PHYSICAL.NETWORK.CREATE", ResourceType: "PhysicalNetwork", ResourceUUID: pn.UUID,
			Description: fmt.Sprintf("Physical network %s created in zone %s", pn.Name, z.Name),
		}))
	})
	return cserr.Temporal(err)
}

// NetworkUUID derives a stable UUID from a parent's UUID and a name, so
// that a rerun of a step writes the same rows.
func NetworkUUID(parent, name string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("nimbus:"+parent+"/"+name)).String()
}

// PhysNetUpdateInput is an updatePhysicalNetwork job; only the Set* parts
// change.
type PhysNetUpdateInput struct {
	UUID     string
	State    string // "" keeps it
	SetSpeed bool
	Speed    string
	SetTags  bool
	Tags     string
	SetVnets bool
	Vnets    []VnetSpan
	Actor    Actor
}

func loadPhysNet(ctx context.Context, db bun.IDB, id string) (*models.PhysicalNetwork, error) {
	var pn models.PhysicalNetwork
	if err := db.NewSelect().Model(&pn).Where("uuid = ?", id).Limit(1).Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, cserr.Param("Unable to find physical network by id %s", id)
		}
		return nil, err
	}
	return &pn, nil
}

// PhysNetUpdateCheck applies updatePhysicalNetwork's rules: new guest VLAN
// ranges must not overlap the zone's other physical networks, no range may
// go in a Basic zone, and a range being removed must have no vnet allocated
// (536).
func PhysNetUpdateCheck(ctx context.Context, db bun.IDB, z *models.Zone, pn *models.PhysicalNetwork, in PhysNetUpdateInput) error {
	if !in.SetVnets {
		return nil
	}
	if z.NetworkType == models.NetworkTypeBasic {
		return cserr.Param("Zone %s is a Basic zone: its physical network takes no guest VLAN range", z.Name)
	}
	if err := vnetConflict(ctx, db, z.ID, pn.ID, in.Vnets); err != nil {
		return err
	}
	removed := removedVnets(storedVnets(pn), in.Vnets)
	if len(removed) == 0 {
		return nil
	}
	for i := 0; i < len(removed); i += 1000 {
		j := min(i+1000, len(removed))
		strs := make([]string, 0, j-i)
		for _, v := range removed[i:j] {
			strs = append(strs, strconv.Itoa(v))
		}
		var taken []string
		if err := db.NewSelect().Model((*models.GuestVnet)(nil)).Column("vnet").
			Where("physical_network_id = ? AND vnet IN (?)", pn.ID, bun.In(strs)).
			Where("(taken IS NOT NULL OR network_id IS NOT NULL)").Limit(10).Scan(ctx, &taken); err != nil {
			return err
		}
		if len(taken) > 0 {
			return cserr.InUse("Cannot remove the VLAN range: vnet(s) %s of physical network %s are allocated to guest networks", strings.Join(taken, ", "), pn.Name)
		}
	}
	return nil
}

func removedVnets(old, now []VnetSpan) []int {
	keep := vnetSet(now)
	var out []int
	for _, s := range old {
		for v := s.Start; v <= s.End; v++ {
			if !keep[v] {
				out = append(out, v)
			}
		}
	}
	return out
}

// PhysNetUpdate changes state, speed, tags and guest VLAN ranges: added ids
// get vnet rows, removed ones lose them (refused while allocated).
func (a *PhysNet) PhysNetUpdate(ctx context.Context, in PhysNetUpdateInput) error {
	zoneID, found, err := zoneOf(ctx, a.DB, (*models.PhysicalNetwork)(nil), in.UUID, false)
	if err != nil {
		return err
	}
	if !found {
		return cserr.Temporal(cserr.Param("Unable to find physical network by id %s", in.UUID))
	}
	err = a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		z, err := lockZone(ctx, tx, zoneID)
		if err != nil {
			return err
		}
		pn, err := loadPhysNet(ctx, tx, in.UUID)
		if err != nil {
			return err
		}
		if err := PhysNetUpdateCheck(ctx, tx, z, pn, in); err != nil {
			return err
		}
		q := tx.NewUpdate().Model(pn).WherePK()
		changed := false
		if in.State != "" {
			q, changed = q.Set("state = ?", in.State), true
		}
		if in.SetSpeed {
			q, changed = q.Set("speed = ?", in.Speed), true
		}
		if in.SetTags {
			q, changed = q.Set("tags = ?", in.Tags), true
		}
		if in.SetVnets {
			old := storedVnets(pn)
			if err := removeVnets(ctx, tx, pn, removedVnets(old, in.Vnets)); err != nil {
				return err
			}
			if err := insertVnets(ctx, tx, pn, removedVnets(in.Vnets, old)); err != nil {
				return err
			}
			q, changed = q.Set("vnet = ?", FormatVnetRanges(in.Vnets)), true
		}
		if changed {
			if _, err := q.Exec(ctx); err != nil {
				return err
			}
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "PHYSICAL.NETWORK.UPDATE", ResourceType: "PhysicalNetwork", ResourceUUID: pn.UUID,
			Description: "Physical network " + pn.Name + " updated",
		}))
	})
	return cserr.Temporal(err)
}

// PhysNetDeleteInput is a deletePhysicalNetwork job.
type PhysNetDeleteInput struct {
	UUID  string
	Actor Actor
}

// PhysNetDeleteCheck refuses (536) to delete a physical network that guest
// networks or IP ranges use, or whose guest VLANs are allocated.
func PhysNetDeleteCheck(ctx context.Context, db bun.IDB, pn *models.PhysicalNetwork) error {
	n, err := db.NewSelect().Model((*models.Network)(nil)).Where("physical_network_id = ?", pn.ID).Count(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		return cserr.InUse("The physical network %s is not deletable because %d network(s) use it", pn.Name, n)
	}
	if n, err = db.NewSelect().Model((*models.Vlan)(nil)).Where("physical_network_id = ?", pn.ID).Count(ctx); err != nil {
		return err
	}
	if n > 0 {
		return cserr.InUse("The physical network %s is not deletable because %d IP range(s) use it; delete them first", pn.Name, n)
	}
	if n, err = db.NewSelect().Model((*models.GuestVnet)(nil)).Where("physical_network_id = ?", pn.ID).
		Where("(taken IS NOT NULL OR network_id IS NOT NULL)").Count(ctx); err != nil {
		return err
	}
	if n > 0 {
		return cserr.InUse("The physical network %s is not deletable because %d of its guest VLANs are allocated", pn.Name, n)
	}
	return nil
}

// PhysNetDelete removes the physical network with its traffic types,
// providers and vnet rows. A rerun after success finds nothing and
// succeeds.
func (a *PhysNet) PhysNetDelete(ctx context.Context, in PhysNetDeleteInput) error {
	zoneID, found, err := zoneOf(ctx, a.DB, (*models.PhysicalNetwork)(nil), in.UUID, false)
	if err != nil {
		return err
	}
	if !found {
		if gone, err := a.DB.NewSelect().Model((*models.PhysicalNetwork)(nil)).Where("uuid = ?", in.UUID).WhereDeleted().Exists(ctx); err != nil || gone {
			return err // deleted already: a rerun
		}
		return cserr.Temporal(cserr.Param("Unable to find physical network by id %s", in.UUID))
	}
	err = a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := lockZone(ctx, tx, zoneID); err != nil {
			return err
		}
		pn, err := loadPhysNet(ctx, tx, in.UUID)
		if err != nil {
			return err
		}
		if err := PhysNetDeleteCheck(ctx, tx, pn); err != nil {
			return err
		}
		for _, m := range []any{(*models.PhysicalNetworkTrafficType)(nil), (*models.PhysicalNetworkServiceProvider)(nil), (*models.GuestVnet)(nil)} {
			if _, err := tx.NewDelete().Model(m).Where("physical_network_id = ?", pn.ID).Exec(ctx); err != nil {
				return err
			}
		}
		if _, err := tx.NewDelete().Model(pn).WherePK().Exec(ctx); err != nil {
			return err
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "PHYSICAL.NETWORK.DELETE", ResourceType: "PhysicalNetwork", ResourceUUID: pn.UUID,
			Description: "Physical network " + pn.Name + " deleted",
		}))
	})
	return cserr.Temporal(err)
}

// ---- traffic types ----

// TrafficLabelColumns maps addTrafficType's label parameters to columns.
var TrafficLabelColumns = map[string]string{
	"kvmnetworklabel":       "kvm_network_label",
	"vmwarenetworklabel":    "vmware_network_label",
	"xennetworklabel":       "xenserver_network_label",
	"hypervnetworklabel":    "hyperv_network_label",
	"simulatornetworklabel": "simulator_network_label",
}

// PhysNetTrafficAddInput is an addTrafficType job.
type PhysNetTrafficAddInput struct {
	UUID        string
	PhysNetUUID string
	TrafficType string
	Labels      map[string]string // column -> label
	Vlan        string
	Actor       Actor
	ZoneID      int64 // for the lock
}

// PhysNetTrafficAddCheck applies addTrafficType's rules: a traffic type
// appears at most once per physical network, and, Guest apart, on one
// physical network per zone.
func PhysNetTrafficAddCheck(ctx context.Context, db bun.IDB, pn *models.PhysicalNetwork, in PhysNetTrafficAddInput) error {
	var same []models.PhysicalNetworkTrafficType
	if err := db.NewSelect().Model(&same).
		Join("JOIN physical_networks AS pn ON pn.id = ?TableAlias.physical_network_id AND pn.removed IS NULL").
		Where("pn.zone_id = ? AND ?TableAlias.traffic_type = ?", pn.ZoneID, in.TrafficType).Scan(ctx); err != nil {
		return err
	}
	for _, t := range same {
		if t.UUID == in.UUID {
			continue
		}
		if t.PhysicalNetworkID == pn.ID {
			return cserr.Param("The physical network %s already carries %s traffic: a traffic type is added once per physical network", pn.Name, in.TrafficType)
		}
		if in.TrafficType != models.TrafficGuest {
			var other models.PhysicalNetwork
			_ = db.NewSelect().Model(&other).Column("name").Where("id = ?", t.PhysicalNetworkID).Scan(ctx)
			return cserr.Param("%s traffic is already carried by physical network %s of the same zone; only Guest traffic may be on several physical networks", in.TrafficType, other.Name)
		}
	}
	return nil
}

// PhysNetTrafficAdd adds a traffic type to a physical network.
func (a *PhysNet) PhysNetTrafficAdd(ctx context.Context, in PhysNetTrafficAddInput) error {
	err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := lockZone(ctx, tx, in.ZoneID); err != nil {
			return err
		}
		if ok, err := tx.NewSelect().Model((*models.PhysicalNetworkTrafficType)(nil)).Where("uuid = ?", in.UUID).Exists(ctx); err != nil || ok {
			return err
		}
		pn, err := loadPhysNet(ctx, tx, in.PhysNetUUID)
		if err != nil {
			return err
		}
		if err := PhysNetTrafficAddCheck(ctx, tx, pn, in); err != nil {
			return err
		}
		tt := &models.PhysicalNetworkTrafficType{UUID: in.UUID, PhysicalNetworkID: pn.ID, TrafficType: in.TrafficType, Vlan: in.Vlan}
		setTrafficLabels(tt, in.Labels)
		if _, err := tx.NewInsert().Model(tt).Exec(ctx); err != nil {
			return err
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "TRAFFIC.TYPE.CREATE", ResourceType: "TrafficType", ResourceUUID: tt.UUID,
			Description: fmt.Sprintf("%s traffic added to physical network %s", in.TrafficType, pn.Name),
		}))
	})
	return cserr.Temporal(err)
}

func setTrafficLabels(tt *models.PhysicalNetworkTrafficType, labels map[string]string) {
	for col, v := range labels {
		switch col {
		case "kvm_network_label":
			tt.KVMNetworkLabel = v
		case "vmware_network_label":
			tt.VMwareNetworkLabel = v
		case "xenserver_network_label":
			tt.XenNetworkLabel = v
		case "hyperv_network_label":
			tt.HyperVNetworkLabel = v
		case "simulator_network_label":
			tt.SimulatorNetworkLabel = v
		}
	}
}

// PhysNetTrafficUpdateInput is an updateTrafficType job.
type PhysNetTrafficUpdateInput struct {
	UUID   string
	Labels map[string]string // column -> new label
	Actor  Actor
}

// PhysNetTrafficUpdate changes the host network labels of a traffic type.
func (a *PhysNet) PhysNetTrafficUpdate(ctx context.Context, in PhysNetTrafficUpdateInput) error {
	err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var tt models.PhysicalNetworkTrafficType
		if err := tx.NewSelect().Model(&tt).Where("uuid = ?", in.UUID).Limit(1).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return cserr.Param("Unable to find traffic type by id %s", in.UUID)
			}
			return err
		}
		setTrafficLabels(&tt, in.Labels)
		if _, err := tx.NewUpdate().Model(&tt).WherePK().Exec(ctx); err != nil {
			return err
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "TRAFFIC.TYPE.UPDATE", ResourceType: "TrafficType", ResourceUUID: tt.UUID,
			Description: tt.TrafficType + " traffic labels updated",
		}))
	})
	return cserr.Temporal(err)
}

// PhysNetTrafficDeleteInput is a deleteTrafficType job.
type PhysNetTrafficDeleteInput struct {
	UUID  string
	Actor Actor
}

// PhysNetTrafficDeleteCheck refuses (536) to remove a traffic type that is
// in use: Guest with guest networks on the physical network, Public with
// public IP ranges on it, Storage with storage ranges in its zone.
func PhysNetTrafficDeleteCheck(ctx context.Context, db bun.IDB, tt *models.PhysicalNetworkTrafficType) error {
	var pn models.PhysicalNetwork
	if err := db.NewSelect().Model(&pn).Where("id = ?", tt.PhysicalNetworkID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		return err
	}
	var n int64
	var err error
	var what string
	switch tt.TrafficType {
	case models.TrafficGuest:
		n, err = db.NewSelect().Model((*models.Network)(nil)).Where("physical_network_id = ? AND traffic_type = ?", pn.ID, models.TrafficGuest).Count(ctx)
		what = "guest network(s)"
	case models.TrafficPublic:
		n, err = db.NewSelect().Model((*models.Vlan)(nil)).Where("physical_network_id = ? AND vlan_type = ?", pn.ID, models.VlanTypeVirtualNetwork).Count(ctx)
		what = "public IP range(s)"
	case models.TrafficStorage:
		n, err = db.NewSelect().Model((*models.StorageNetworkIPRange)(nil)).Where("zone_id = ?", pn.ZoneID).Count(ctx)
		what = "storage network IP range(s)"
	}
	if err != nil {
		return err
	}
	if n > 0 {
		return cserr.InUse("The %s traffic type of physical network %s is not deletable because %d %s use it", tt.TrafficType, pn.Name, n, what)
	}
	return nil
}

// PhysNetTrafficDelete removes a traffic type from its physical network.
func (a *PhysNet) PhysNetTrafficDelete(ctx context.Context, in PhysNetTrafficDeleteInput) error {
	zoneID, found, err := zoneOf(ctx, a.DB, (*models.PhysicalNetworkTrafficType)(nil), in.UUID, true)
	if err != nil || !found {
		return err // not found: deleted already (a rerun)
	}
	err = a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := lockZone(ctx, tx, zoneID); err != nil {
			return err
		}
		var tt models.PhysicalNetworkTrafficType
		if err := tx.NewSelect().Model(&tt).Where("uuid = ?", in.UUID).Limit(1).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return nil // deleted meanwhile
			}
			return err
		}
		if err := PhysNetTrafficDeleteCheck(ctx, tx, &tt); err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model(&tt).WherePK().Exec(ctx); err != nil {
			return err
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "TRAFFIC.TYPE.DELETE", ResourceType: "TrafficType", ResourceUUID: tt.UUID,
			Description: tt.TrafficType + " traffic removed from its physical network",
		}))
	})
	return cserr.Temporal(err)
}

// ---- service providers ----

// PhysNetProviderUpdateInput is an updateNetworkServiceProvider job.
type PhysNetProviderUpdateInput struct {
	UUID        string
	State       string // "" keeps it
	SetServices bool
	Services    []string
	Actor       Actor
}

// PhysNetProviderUpdate enables or disables a service provider, or changes
// the services it offers.
func (a *PhysNet) PhysNetProviderUpdate(ctx context.Context, in PhysNetProviderUpdateInput) error {
	err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var p models.PhysicalNetworkServiceProvider
		if err := tx.NewSelect().Model(&p).Where("uuid = ?", in.UUID).Limit(1).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return cserr.Param("Unable to find network service provider by id %s", in.UUID)
			}
			return err
		}
		q := tx.NewUpdate().Model(&p).WherePK()
		if in.State != "" {
			q = q.Set("state = ?", in.State)
		}
		if in.SetServices {
			q = q.Set("services = ?", strings.Join(in.Services, ","))
		}
		if in.State != "" || in.SetServices {
			if _, err := q.Exec(ctx); err != nil {
				return err
			}
		}
		desc := "Network service provider " + p.ProviderName + " updated"
		if in.State != "" {
			desc = "Network service provider " + p.ProviderName + " " + strings.ToLower(in.State)
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "SERVICE.PROVIDER.UPDATE", ResourceType: "NetworkServiceProvider", ResourceUUID: p.UUID,
			Description: desc,
		}))
	})
	return cserr.Temporal(err)
}

// ---- storage network IP ranges ----

// NetworkStorageRangeCreateInput is a createStorageNetworkIpRange job, the
// addresses already checked against the gateway and netmask by the API.
type NetworkStorageRangeCreateInput struct {
	UUID    string
	PodID   int64
	ZoneID  int64
	Gateway string
	Netmask string
	Span    IPSpan
	Vlan    string
	Actor   Actor
}

// NetworkStorageRangeCreateCheck applies createStorageNetworkIpRange's
// rules: the zone has a physical network carrying Storage traffic, and the
// range overlaps no other range (NetworkIPConflict).
func NetworkStorageRangeCreateCheck(ctx context.Context, db bun.IDB, in NetworkStorageRangeCreateInput) error {
	n, err := db.NewSelect().Model((*models.PhysicalNetworkTrafficType)(nil)).
		Join("JOIN physical_networks AS pn ON pn.id = ?TableAlias.physical_network_id AND pn.removed IS NULL").
		Where("pn.zone_id = ? AND ?TableAlias.traffic_type = ?", in.ZoneID, models.TrafficStorage).Count(ctx)
	if err != nil {
		return err
	}
	if n == 0 {
		return cserr.Param("The zone has no physical network carrying Storage traffic: add the Storage traffic type (addTrafficType) before a storage network IP range")
	}
	return NetworkIPConflict(ctx, db, in.ZoneID, in.Span, ConflictScope{})
}

// NetworkStorageRangeCreate writes the range and one row per address.
func (a *PhysNet) NetworkStorageRangeCreate(ctx context.Context, in NetworkStorageRangeCreateInput) error {
	err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := lockZone(ctx, tx, in.ZoneID); err != nil {
			return err
		}
		if ok, err := tx.NewSelect().Model((*models.StorageNetworkIPRange)(nil)).Where("uuid = ?", in.UUID).Exists(ctx); err != nil || ok {
			return err
		}
		if ok, err := tx.NewSelect().Model((*models.Pod)(nil)).Where("id = ?", in.PodID).Exists(ctx); err != nil {
			return err
		} else if !ok {
			return cserr.Param("The pod of the storage network IP range was deleted")
		}
		if err := NetworkStorageRangeCreateCheck(ctx, tx, in); err != nil {
			return err
		}
		r := &models.StorageNetworkIPRange{
			UUID: in.UUID, StartIP: ipString(in.Span.Start), EndIP: ipString(in.Span.End), Gateway: in.Gateway, Netmask: in.Netmask,
			Vlan: in.Vlan, ZoneID: in.ZoneID, PodID: in.PodID, Created: models.Now(),
		}
		if _, err := tx.NewInsert().Model(r).Exec(ctx); err != nil {
			return err
		}
		const batch = 1000
		rows := make([]models.StorageNetworkIPAddress, 0, batch)
		for ip := uint64(in.Span.Start); ip <= uint64(in.Span.End); ip++ {
			rows = append(rows, models.StorageNetworkIPAddress{RangeID: r.ID, IPAddress: ipString(uint32(ip))})
			if len(rows) == batch || ip == uint64(in.Span.End) {
				if _, err := tx.NewInsert().Model(&rows).Exec(ctx); err != nil {
					return err
				}
				rows = rows[:0]
			}
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "STORAGE.IP.RANGE.CREATE", ResourceType: "StorageNetworkIpRange", ResourceUUID: r.UUID,
			Description: fmt.Sprintf("Storage network IP range %s-%s created", r.StartIP, r.EndIP),
		}))
	})
	return cserr.Temporal(err)
}

// NetworkStorageRangeDeleteInput is a deleteStorageNetworkIpRange job.
type NetworkStorageRangeDeleteInput struct {
	UUID  string
	Actor Actor
}

// NetworkStorageRangeInUse counts the taken addresses of a storage range.
func NetworkStorageRangeInUse(ctx context.Context, db bun.IDB, rangeID int64) (int64, error) {
	return db.NewSelect().Model((*models.StorageNetworkIPAddress)(nil)).
		Where("range_id = ? AND (taken IS NOT NULL OR nic_id IS NOT NULL)", rangeID).Count(ctx)
}

// NetworkStorageRangeDelete removes a storage range and its address rows,
// refusing (536) while a system VM holds one of them.
func (a *PhysNet) NetworkStorageRangeDelete(ctx context.Context, in NetworkStorageRangeDeleteInput) error {
	zoneID, found, err := zoneOf(ctx, a.DB, (*models.StorageNetworkIPRange)(nil), in.UUID, false)
	if err != nil || !found {
		return err // not found: deleted already (a rerun)
	}
	err = a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := lockZone(ctx, tx, zoneID); err != nil {
			return err
		}
		var r models.StorageNetworkIPRange
		if err := tx.NewSelect().Model(&r).Where("uuid = ?", in.UUID).Limit(1).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return nil // deleted meanwhile
			}
			return err
		}
		// Guarded: only free addresses go; any left means one is in use.
		if _, err := tx.NewDelete().Model((*models.StorageNetworkIPAddress)(nil)).
			Where("range_id = ? AND taken IS NULL AND nic_id IS NULL", r.ID).Exec(ctx); err != nil {
			return err
		}
		n, err := NetworkStorageRangeInUse(ctx, tx, r.ID)
		if err != nil {
			return err
		}
		if n > 0 {
			return cserr.InUse("The storage network IP range %s-%s is not deletable because %d of its addresses are in use", r.StartIP, r.EndIP, n)
		}
		if _, err := tx.NewDelete().Model(&r).WherePK().Exec(ctx); err != nil {
			return err
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "STORAGE.IP.RANGE.DELETE", ResourceType: "StorageNetworkIpRange", ResourceUUID: r.UUID,
			Description: fmt.Sprintf("Storage network IP range %s-%s deleted", r.StartIP, r.EndIP),
		}))
	})
	return cserr.Temporal(err)
}

// NetworkLockZone locks a zone row for the rest of a transaction, as the
// jobs here do; the API's synchronous pod and IP range commands call it
// first in their transactions.
func NetworkLockZone(ctx context.Context, db bun.IDB, zoneID int64) (*models.Zone, error) {
	return lockZone(ctx, db, zoneID)
}
