package api

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/workflows"
)

// Physical networks, their traffic types and network service providers.
// The writes run as jobs (the SDK treats these commands as async); the
// handlers check parameters and rules first so that most refusals come back
// at once, and the job's activity checks again under the zone's lock.

func init() {
	labelParams := []Param{
		{Name: "kvmnetworklabel", Type: TString, Description: "the network name of this traffic on KVM hosts (a bridge)"},
		{Name: "vmwarenetworklabel", Type: TString, Description: "the network name of this traffic on VMware hosts (a vSwitch or port group)"},
		{Name: "xennetworklabel", Type: TString, Description: "the network name of this traffic on XenServer hosts"},
		{Name: "hypervnetworklabel", Type: TString, Description: "the network name of this traffic on Hyper-V hosts"},
		{Name: "ovm3networklabel", Type: TString, Description: "the network name of this traffic on OVM3 hosts (accepted, not used)"},
	}
	Register(
		&Command{
			Name: "createPhysicalNetwork", Description: "Creates a physical network in a zone", Access: AccessRootAdmin, Async: true,
			Params: []Param{
				{Name: "zoneid", Type: TUUID, Required: true, Description: "the zone of the physical network"},
				{Name: "name", Type: TString, Required: true, Description: "the name of the physical network"},
				{Name: "isolationmethods", Type: TList, Of: TString, Description: "the isolation method of guest networks: VLAN (default), VXLAN, GRE, L3, STT... (one)"},
				{Name: "vlan", Type: TString, Description: "the guest VLAN ranges, e.g. 100-199,300-310 (Advanced zones)"},
				{Name: "broadcastdomainrange", Type: TString, Description: "POD or ZONE; POD is the default in Basic zones, ZONE the only choice in Advanced zones"},
				{Name: "networkspeed", Type: TString, Description: "the speed of the physical network, e.g. 10G"},
				{Name: "tags", Type: TList, Of: TString, Description: "the tag of the physical network (one), matched by network offerings"},
				{Name: "domainid", Type: TUUID, Description: "dedicates the physical network to this domain"},
			},
			ResponseName: "physicalnetwork", Response: physNetFields, Handler: createPhysicalNetwork,
		},
		&Command{
			Name: "updatePhysicalNetwork", Description: "Updates a physical network", Access: AccessRootAdmin, Async: true,
			Params: []Param{
				{Name: "id", Type: TUUID, Required: true, Description: "the ID of the physical network"},
				{Name: "state", Type: TString, Description: "Enabled or Disabled"},
				{Name: "vlan", Type: TString, Description: "the new guest VLAN ranges, replacing the current ones; a range with allocated VLANs cannot go"},
				{Name: "networkspeed", Type: TString, Description: "the speed of the physical network"},
				{Name: "tags", Type: TList, Of: TString, Description: "the tag of the physical network (one)"},
			},
			ResponseName: "physicalnetwork", Response: physNetFields, Handler: updatePhysicalNetwork,
		},
		&Command{
			Name: "deletePhysicalNetwork", Description: "Deletes a physical network that no network or IP range uses", Access: AccessRootAdmin, Async: true,
			Params:       []Param{{Name: "id", Type: TUUID, Required: true, Description: "the ID of the physical network"}},
			ResponseName: "success", Response: successFields, Handler: deletePhysicalNetwork,
		},
		&Command{
			Name: "listPhysicalNetworks", Description: "Lists physical networks", Access: AccessRootAdmin,
			Params: append(ListParams(),
				Param{Name: "id", Type: TUUID, Description: "the ID of the physical network"},
				Param{Name: "name", Type: TString, Description: "the name of the physical network"},
				Param{Name: "zoneid", Type: TUUID, Description: "the zone of the physical networks"},
			),
			ResponseName: "physicalnetwork", Response: physNetFields, Handler: listPhysicalNetworks,
		},
		&Command{
			Name: "addTrafficType", Description: "Adds a traffic type to a physical network", Access: AccessRootAdmin, Async: true,
			Params: append([]Param{
				{Name: "physicalnetworkid", Type: TUUID, Required: true, Description: "the physical network"},
				{Name: "traffictype", Type: TString, Required: true, Description: "Guest, Management, Public or Storage"},
				{Name: "isolationmethod", Type: TString, Description: "the isolation method; must be the physical network's"},
				{Name: "vlan", Type: TString, Description: "the VLAN id of this traffic (Management, Storage, Public), or untagged"},
			}, labelParams...),
			ResponseName: "traffictype", Response: trafficTypeFields, Handler: addTrafficType,
		},
		&Command{
			Name: "updateTrafficType", Description: "Updates the host network labels of a traffic type", Access: AccessRootAdmin, Async: true,
			Params: append([]Param{
				{Name: "id", Type: TUUID, Required: true, Description: "the ID of the traffic type"},
			}, labelParams...),
			ResponseName: "traffictype", Response: trafficTypeFields, Handler: updateTrafficType,
		},
		&Command{
			Name: "deleteTrafficType", Description: "Removes a traffic type from its physical network", Access: AccessRootAdmin, Async: true,
			Params:       []Param{{Name: "id", Type: TUUID, Required: true, Description: "the ID of the traffic type"}},
			ResponseName: "success", Response: successFields, Handler: deleteTrafficType,
		},
		&Command{
			Name: "listTrafficTypes", Description: "Lists the traffic types of a physical network", Access: AccessRootAdmin,
			Params: append(ListParams(),
				Param{Name: "physicalnetworkid", Type: TUUID, Required: true, Description: "the physical network"},
			),
			ResponseName: "traffictype", Response: trafficTypeFields, Handler: listTrafficTypes,
		},
		&Command{
			Name: "listNetworkServiceProviders", Description: "Lists the network service providers of physical networks", Access: AccessRootAdmin,
			Params: append(ListParams(),
				Param{Name: "physicalnetworkid", Type: TUUID, Description: "the physical network"},
				Param{Name: "name", Type: TString, Description: "the provider name, e.g. VirtualRouter"},
				Param{Name: "state", Type: TString, Description: "Enabled, Disabled or Shutdown"},
			),
			ResponseName: "networkserviceprovider", Response: providerFields, Handler: listNetworkServiceProviders,
		},
		&Command{
			Name: "updateNetworkServiceProvider", Description: "Enables or disables a network service provider", Access: AccessRootAdmin, Async: true,
			Params: []Param{
				{Name: "id", Type: TUUID, Required: true, Description: "the ID of the provider"},
				{Name: "state", Type: TString, Description: "Enabled, Disabled or Shutdown"},
				{Name: "servicelist", Type: TList, Of: TString, Description: "the services the provider offers (among those it can)"},
			},
			ResponseName: "networkserviceprovider", Response: providerFields, Handler: updateNetworkServiceProvider,
		},
	)
	RegisterRenderer("PhysicalNetwork", func(ctx context.Context, s *Server, id string) (any, error) {
		var pn models.PhysicalNetwork
		if err := s.DB.NewSelect().Model(&pn).Where("uuid = ?", id).Limit(1).Scan(ctx); err != nil {
			return nil, models.NotFound(err, "physical network "+id)
		}
		views, err := physNetViews(ctx, s.DB, []models.PhysicalNetwork{pn})
		if err != nil {
			return nil, err
		}
		return views[0], nil
	})
	RegisterRenderer("TrafficType", func(ctx context.Context, s *Server, id string) (any, error) {
		var tt models.PhysicalNetworkTrafficType
		if err := s.DB.NewSelect().Model(&tt).Where("uuid = ?", id).Limit(1).Scan(ctx); err != nil {
			return nil, models.NotFound(err, "traffic type "+id)
		}
		views, err := trafficTypeViews(ctx, s.DB, []models.PhysicalNetworkTrafficType{tt})
		if err != nil {
			return nil, err
		}
		return views[0], nil
	})
	RegisterRenderer("NetworkServiceProvider", func(ctx context.Context, s *Server, id string) (any, error) {
		var p models.PhysicalNetworkServiceProvider
		if err := s.DB.NewSelect().Model(&p).Where("uuid = ?", id).Limit(1).Scan(ctx); err != nil {
			return nil, models.NotFound(err, "network service provider "+id)
		}
		views, err := providerViews(ctx, s.DB, []models.PhysicalNetworkServiceProvider{p})
		if err != nil {
			return nil, err
		}
		return views[0], nil
	})
}

var physNetFields = []Field{
	{"id", "string", "the ID of the physical network"}, {"name", "string", "its name"},
	{"zoneid", "string", "the zone"}, {"zonename", "string", "the zone's name"},
	{"state", "string", "Enabled or Disabled"}, {"isolationmethods", "string", "the isolation method of guest networks"},
	{"vlan", "string", "the guest VLAN ranges"}, {"broadcastdomainrange", "string", "POD or ZONE"},
	{"networkspeed", "string", "the speed"}, {"tags", "string", "the tag"},
	{"domainid", "string", "the domain the physical network is dedicated to"},
}

var trafficTypeFields = []Field{
	{"id", "string", "the ID of the traffic type"}, {"traffictype", "string", "Guest, Management, Public or Storage"},
	{"name", "string", "the traffic type again (listTrafficTypes' name)"},
	{"physicalnetworkid", "string", "the physical network"},
	{"kvmnetworklabel", "string", "the KVM network label"}, {"vmwarenetworklabel", "string", "the VMware network label"},
	{"xennetworklabel", "string", "the XenServer network label"}, {"hypervnetworklabel", "string", "the Hyper-V network label"},
	{"isolationmethods", "string", "the physical network's isolation method"}, {"vlan", "string", "the VLAN of the traffic"},
}

var providerFields = []Field{
	{"id", "string", "the ID of the provider"}, {"name", "string", "the provider name"},
	{"physicalnetworkid", "string", "the physical network"}, {"destinationphysicalnetworkid", "string", "the destination physical network"},
	{"state", "string", "Enabled, Disabled or Shutdown"}, {"servicelist", "list", "the services the provider offers"},
	{"canenableindividualservice", "boolean", "whether services can be enabled one by one"},
}

// PhysicalNetworkView is a physical network as listPhysicalNetworks shows it
// (the SDK's PhysicalNetwork).
type PhysicalNetworkView struct {
	ID                   string `json:"id"`
	Name                 string `json:"name"`
	ZoneID               string `json:"zoneid"`
	ZoneName             string `json:"zonename"`
	State                string `json:"state"`
	IsolationMethods     string `json:"isolationmethods"`
	Vlan                 string `json:"vlan,omitempty"`
	BroadcastDomainRange string `json:"broadcastdomainrange"`
	NetworkSpeed         string `json:"networkspeed,omitempty"`
	Tags                 string `json:"tags,omitempty"`
	DomainID             string `json:"domainid,omitempty"`
}

// TrafficTypeView is a traffic type of a physical network. CloudStack
// answers listTrafficTypes with these fields while the SDK decodes a
// provider-shaped struct; name repeats the traffic type for the latter.
type TrafficTypeView struct {
	ID                 string `json:"id"`
	TrafficType        string `json:"traffictype"`
	Name               string `json:"name"`
	PhysicalNetworkID  string `json:"physicalnetworkid"`
	KVMNetworkLabel    string `json:"kvmnetworklabel,omitempty"`
	VMwareNetworkLabel string `json:"vmwarenetworklabel,omitempty"`
	XenNetworkLabel    string `json:"xennetworklabel,omitempty"`
	HyperVNetworkLabel string `json:"hypervnetworklabel,omitempty"`
	IsolationMethods   string `json:"isolationmethods,omitempty"`
	Vlan               string `json:"vlan,omitempty"`
}

// ProviderView is a network service provider (the SDK's
// NetworkServiceProvider).
type ProviderView struct {
	ID                           string   `json:"id"`
	Name                         string   `json:"name"`
	PhysicalNetworkID            string   `json:"physicalnetworkid"`
	DestinationPhysicalNetworkID string   `json:"destinationphysicalnetworkid,omitempty"`
	State                        string   `json:"state"`
	ServiceList                  []string `json:"servicelist"`
	CanEnableIndividualService   bool     `json:"canenableindividualservice"`
}

type zoneRef struct{ UUID, Name, NetworkType string }

// zoneRefs loads the UUID and name of zones by id (removed ones too).
func zoneRefs(ctx context.Context, db bun.IDB, ids []int64) (map[int64]zoneRef, error) {
	out := map[int64]zoneRef{}
	if len(ids) == 0 {
		return out, nil
	}
	var zones []models.Zone
	if err := db.NewSelect().Model(&zones).Column("id", "uuid", "name", "networktype").Where("id IN (?)", bun.In(ids)).
		WhereAllWithDeleted().Scan(ctx); err != nil {
		return nil, err
	}
	for _, z := range zones {
		out[z.ID] = zoneRef{z.UUID, z.Name, z.NetworkType}
	}
	return out, nil
}

// physNetUUIDs maps physical network ids to UUIDs (removed ones too).
func physNetUUIDs(ctx context.Context, db bun.IDB, ids []int64) (map[int64]models.PhysicalNetwork, error) {
	out := map[int64]models.PhysicalNetwork{}
	if len(ids) == 0 {
		return out, nil
	}
	var pns []models.PhysicalNetwork
	if err := db.NewSelect().Model(&pns).Column("id", "uuid", "name", "isolation_methods", "zone_id").
		Where("id IN (?)", bun.In(ids)).WhereAllWithDeleted().Scan(ctx); err != nil {
		return nil, err
	}
	for _, pn := range pns {
		out[pn.ID] = pn
	}
	return out, nil
}

func physNetViews(ctx context.Context, db bun.IDB, pns []models.PhysicalNetwork) ([]PhysicalNetworkView, error) {
	zoneIDs := make([]int64, 0, len(pns))
	var domainIDs []int64
	for _, pn := range pns {
		zoneIDs = append(zoneIDs, pn.ZoneID)
		if pn.DomainID != 0 {
			domainIDs = append(domainIDs, pn.DomainID)
		}
	}
	zones, err := zoneRefs(ctx, db, zoneIDs)
	if err != nil {
		return nil, err
	}
	domains := map[int64]string{}
	if len(domainIDs) > 0 {
		var ds []models.Domain
		if err := db.NewSelect().Model(&ds).Column("id", "uuid").Where("id IN (?)", bun.In(domainIDs)).WhereAllWithDeleted().Scan(ctx); err != nil {
			return nil, err
		}
		for _, d := range ds {
			domains[d.ID] = d.UUID
		}
	}
	out := make([]PhysicalNetworkView, len(pns))
	for i, pn := range pns {
		z := zones[pn.ZoneID]
		out[i] = PhysicalNetworkView{
			ID: pn.UUID, Name: pn.Name, ZoneID: z.UUID, ZoneName: z.Name, State: pn.State,
			IsolationMethods: pn.IsolationMethods, Vlan: pn.Vnet, BroadcastDomainRange: pn.BroadcastDomainRange,
			NetworkSpeed: pn.Speed, Tags: pn.Tags, DomainID: domains[pn.DomainID],
		}
	}
	return out, nil
}

func trafficTypeViews(ctx context.Context, db bun.IDB, tts []models.PhysicalNetworkTrafficType) ([]TrafficTypeView, error) {
	ids := make([]int64, 0, len(tts))
	for _, t := range tts {
		ids = append(ids, t.PhysicalNetworkID)
	}
	pns, err := physNetUUIDs(ctx, db, ids)
	if err != nil {
		return nil, err
	}
	out := make([]TrafficTypeView, len(tts))
	for i, t := range tts {
		pn := pns[t.PhysicalNetworkID]
		out[i] = TrafficTypeView{
			ID: t.UUID, TrafficType: t.TrafficType, Name: t.TrafficType, PhysicalNetworkID: pn.UUID,
			KVMNetworkLabel: t.KVMNetworkLabel, VMwareNetworkLabel: t.VMwareNetworkLabel, XenNetworkLabel: t.XenNetworkLabel,
			HyperVNetworkLabel: t.HyperVNetworkLabel, IsolationMethods: pn.IsolationMethods, Vlan: t.Vlan,
		}
	}
	return out, nil
}

func providerViews(ctx context.Context, db bun.IDB, ps []models.PhysicalNetworkServiceProvider) ([]ProviderView, error) {
	ids := make([]int64, 0, 2*len(ps))
	for _, p := range ps {
		ids = append(ids, p.PhysicalNetworkID)
		if p.DestinationPhysicalNetworkID != 0 {
			ids = append(ids, p.DestinationPhysicalNetworkID)
		}
	}
	pns, err := physNetUUIDs(ctx, db, ids)
	if err != nil {
		return nil, err
	}
	out := make([]ProviderView, len(ps))
	for i, p := range ps {
		services := []string{}
		for _, s := range strings.Split(p.Services, ",") {
			if s = strings.TrimSpace(s); s != "" {
				services = append(services, s)
			}
		}
		out[i] = ProviderView{
			ID: p.UUID, Name: p.ProviderName, PhysicalNetworkID: pns[p.PhysicalNetworkID].UUID,
			State: p.State, ServiceList: services,
		}
		if p.DestinationPhysicalNetworkID != 0 {
			out[i].DestinationPhysicalNetworkID = pns[p.DestinationPhysicalNetworkID].UUID
		}
	}
	return out, nil
}

// physNetByUUID loads a live physical network or answers 431.
func (c *Call) physNetByUUID(id string) (*models.PhysicalNetwork, error) {
	var pn models.PhysicalNetwork
	if err := c.S.DB.NewSelect().Model(&pn).Where("uuid = ?", id).Limit(1).Scan(c.Ctx); err != nil {
		if errors.Is(models.NotFound(err, ""), models.ErrNotFound) {
			return nil, cserr.Param("Unable to find physical network by id %s", clip(id, 64))
		}
		return nil, err
	}
	return &pn, nil
}

func netActor(c *Call) activities.Actor {
	if c.Caller == nil {
		return activities.Actor{}
	}
	return activities.Actor{UserID: c.Caller.User.ID, AccountID: c.Caller.Account.ID, DomainID: c.Caller.Domain.ID}
}

// isolationMethods are CloudStack's isolation methods of physical networks.
var isolationMethods = []string{"VLAN", "VXLAN", "GRE", "L3", "STT", "BCF_SEGMENT", "MIDO", "SSP", "VCS", "ODL", "L3VPN", "VSP", "TF", "NSX", "NETRIS"}

func pickName(v string, set []string) (string, bool) {
	for _, s := range set {
		if strings.EqualFold(strings.TrimSpace(v), s) {
			return s, true
		}
	}
	return "", false
}

// vnetParam parses a vlan parameter of guest VLAN ranges for a physical
// network isolated by isolation.
func vnetParam(c *Call, isolation string) ([]activities.VnetSpan, error) {
	spans, err := activities.ParseVnetRanges(c.Str("vlan"), activities.VnetMax(isolation))
	if err != nil {
		return nil, cserr.Param("parameter vlan: %v", err)
	}
	return spans, nil
}

// singleTag reads a tags list parameter; a physical network has one tag.
func singleTag(c *Call) (string, error) {
	tags := c.List("tags")
	if len(tags) > 1 {
		return "", cserr.Param("Only one tag can be specified for a physical network at this time, not %d", len(tags))
	}
	if len(tags) == 0 {
		return "", nil
	}
	return tags[0], nil
}

func createPhysicalNetwork(c *Call) (any, error) {
	z, err := c.zoneByUUID(c.Str("zoneid"))
	if err != nil {
		return nil, err
	}
	iso := "VLAN"
	if methods := c.List("isolationmethods"); len(methods) > 1 {
		return nil, cserr.Param("Only one isolation method can be specified for a physical network at this time, not %d", len(methods))
	} else if len(methods) == 1 {
		var ok bool
		if iso, ok = pickName(methods[0], isolationMethods); !ok {
			return nil, cserr.Param("Unknown isolation method %q: want one of %s", clip(methods[0], 32), strings.Join(isolationMethods, ", "))
		}
	}
	bdr := activities.BroadcastDomainZone
	if z.NetworkType == models.NetworkTypeBasic {
		bdr = activities.BroadcastDomainPod
	}
	if c.Has("broadcastdomainrange") {
		v, ok := pickName(c.Str("broadcastdomainrange"), []string{activities.BroadcastDomainPod, activities.BroadcastDomainZone})
		if !ok {
			return nil, cserr.Param("broadcastdomainrange %q: want POD or ZONE", clip(c.Str("broadcastdomainrange"), 32))
		}
		if v == activities.BroadcastDomainPod && z.NetworkType == models.NetworkTypeAdvanced {
			return nil, cserr.Param("broadcastdomainrange POD is only for Basic zones; zone %s is Advanced", z.Name)
		}
		bdr = v
	}
	in := activities.PhysNetCreateInput{
		UUID: models.NewUUID(), Name: c.Str("name"), ZoneID: z.ID, Isolation: iso, BroadcastDomainRange: bdr,
		Speed: c.Str("networkspeed"), Actor: netActor(c),
	}
	if in.Tags, err = singleTag(c); err != nil {
		return nil, err
	}
	if c.Has("vlan") {
		if in.Vnets, err = vnetParam(c, iso); err != nil {
			return nil, err
		}
		if n := activities.VnetCount(in.Vnets); n > activities.MaxVnetsAdded {
			return nil, cserr.Param("The VLAN ranges hold %d ids; at most %d may be added in one call", n, activities.MaxVnetsAdded)
		}
	}
	if c.Has("domainid") {
		d, err := c.domainByUUID(c.Str("domainid"))
		if err != nil {
			return nil, err
		}
		in.DomainID = d.ID
	}
	if err := activities.PhysNetCreateCheck(c.Ctx, c.S.DB, z, in); err != nil {
		return nil, err
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.CreatePhysicalNetwork, Input: in,
		InstanceType: "PhysicalNetwork", InstanceUUID: in.UUID, ResponseID: in.UUID,
		Summary: "create physical network " + in.Name + " in zone " + z.Name,
	})
}

func updatePhysicalNetwork(c *Call) (any, error) {
	pn, err := c.physNetByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	var z models.Zone
	if err := c.S.DB.NewSelect().Model(&z).Where("id = ?", pn.ZoneID).Limit(1).Scan(c.Ctx); err != nil {
		return nil, err
	}
	in := activities.PhysNetUpdateInput{UUID: pn.UUID, Actor: netActor(c)}
	if c.Has("state") {
		v, ok := pickName(c.Str("state"), []string{activities.PhysNetEnabled, activities.PhysNetDisabled})
		if !ok {
			return nil, cserr.Param("state %q: want Enabled or Disabled", clip(c.Str("state"), 32))
		}
		in.State = v
	}
	if c.Has("networkspeed") {
		in.SetSpeed, in.Speed = true, c.Str("networkspeed")
	}
	if c.Has("tags") {
		in.SetTags = true
		if in.Tags, err = singleTag(c); err != nil {
			return nil, err
		}
	}
	if c.Has("vlan") {
		in.SetVnets = true
		if in.Vnets, err = vnetParam(c, pn.IsolationMethods); err != nil {
			return nil, err
		}
		old := map[int]bool{}
		if spans, err := activities.ParseVnetRanges(pn.Vnet, activities.MaxOverlayID); err == nil {
			for _, s := range spans {
				for v := s.Start; v <= s.End; v++ {
					old[v] = true
				}
			}
		}
		added := 0
		for _, s := range in.Vnets {
			for v := s.Start; v <= s.End; v++ {
				if !old[v] {
					added++
				}
			}
		}
		if added > activities.MaxVnetsAdded {
			return nil, cserr.Param("The new VLAN ranges add %d ids; at most %d may be added in one call", added, activities.MaxVnetsAdded)
		}
	}
	if err := activities.PhysNetUpdateCheck(c.Ctx, c.S.DB, &z, pn, in); err != nil {
		return nil, err
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.UpdatePhysicalNetwork, Input: in,
		InstanceType: "PhysicalNetwork", InstanceUUID: pn.UUID, ResponseID: pn.UUID,
		Summary: "update physical network " + pn.Name,
	})
}

func deletePhysicalNetwork(c *Call) (any, error) {
	pn, err := c.physNetByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	if err := activities.PhysNetDeleteCheck(c.Ctx, c.S.DB, pn); err != nil {
		return nil, err
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.DeletePhysicalNetwork, Input: activities.PhysNetDeleteInput{UUID: pn.UUID, Actor: netActor(c)},
		InstanceType: "PhysicalNetwork", InstanceUUID: pn.UUID,
		Summary: "delete physical network " + pn.Name,
	})
}

func listPhysicalNetworks(c *Call) (any, error) {
	var pns []models.PhysicalNetwork
	q := c.S.DB.NewSelect().Model(&pns).Order("id ASC")
	q = c.Filtered(q, Filter{ID: "uuid", Name: "name", Keyword: []string{"name"}})
	if c.Has("zoneid") {
		z, err := c.zoneByUUID(c.Str("zoneid"))
		if err != nil {
			return nil, err
		}
		q = q.Where("zone_id = ?", z.ID)
	}
	total, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	views, err := physNetViews(c.Ctx, c.S.DB, pns)
	if err != nil {
		return nil, err
	}
	return List{Key: "physicalnetwork", Count: total, Items: views}, nil
}

// trafficTypes are the traffic types a physical network may carry.
var trafficTypes = []string{models.TrafficGuest, models.TrafficManagement, models.TrafficPublic, models.TrafficStorage}

// trafficLabels reads the label parameters given into column -> value.
func trafficLabels(c *Call) map[string]string {
	labels := map[string]string{}
	for _, p := range []string{"kvmnetworklabel", "vmwarenetworklabel", "xennetworklabel", "hypervnetworklabel"} {
		if c.Has(p) {
			labels[activities.TrafficLabelColumns[p]] = c.Str(p)
		}
	}
	return labels
}

// vlanTagParam reads a VLAN tag parameter: untagged, an id in 1..4094, or
// vlan://id. It returns "untagged" or the id as a decimal string.
func vlanTagParam(c *Call, name string) (string, error) {
	v := strings.TrimSpace(c.Str(name))
	if v == "" || strings.EqualFold(v, models.VlanUntagged) || strings.EqualFold(v, "vlan://untagged") {
		return models.VlanUntagged, nil
	}
	id := strings.TrimPrefix(strings.ToLower(v), "vlan://")
	n, err := strconv.Atoi(id)
	if err != nil || n < 1 || n > activities.MaxVLANID {
		return "", cserr.Param("parameter %s: %q is not a VLAN id (1-%d) or untagged", name, clip(v, 32), activities.MaxVLANID)
	}
	return strconv.Itoa(n), nil
}

func addTrafficType(c *Call) (any, error) {
	pn, err := c.physNetByUUID(c.Str("physicalnetworkid"))
	if err != nil {
		return nil, err
	}
	tt, ok := pickName(c.Str("traffictype"), trafficTypes)
	if !ok {
		return nil, cserr.Param("traffictype %q: want one of %s", clip(c.Str("traffictype"), 32), strings.Join(trafficTypes, ", "))
	}
	if c.Has("isolationmethod") && !strings.EqualFold(c.Str("isolationmethod"), pn.IsolationMethods) {
		return nil, cserr.Param("isolationmethod %q is not the isolation method of physical network %s (%s)", clip(c.Str("isolationmethod"), 32), pn.Name, pn.IsolationMethods)
	}
	in := activities.PhysNetTrafficAddInput{
		UUID: models.NewUUID(), PhysNetUUID: pn.UUID, TrafficType: tt, Labels: trafficLabels(c),
		Actor: netActor(c), ZoneID: pn.ZoneID,
	}
	if c.Has("vlan") {
		if in.Vlan, err = vlanTagParam(c, "vlan"); err != nil {
			return nil, err
		}
	}
	if err := activities.PhysNetTrafficAddCheck(c.Ctx, c.S.DB, pn, in); err != nil {
		return nil, err
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.AddTrafficType, Input: in,
		InstanceType: "TrafficType", InstanceUUID: in.UUID, ResponseID: in.UUID,
		Summary: "add " + tt + " traffic to physical network " + pn.Name,
	})
}

func (c *Call) trafficTypeByUUID(id string) (*models.PhysicalNetworkTrafficType, error) {
	var tt models.PhysicalNetworkTrafficType
	if err := c.S.DB.NewSelect().Model(&tt).Where("uuid = ?", id).Limit(1).Scan(c.Ctx); err != nil {
		if errors.Is(models.NotFound(err, ""), models.ErrNotFound) {
			return nil, cserr.Param("Unable to find traffic type by id %s", clip(id, 64))
		}
		return nil, err
	}
	return &tt, nil
}

func updateTrafficType(c *Call) (any, error) {
	tt, err := c.trafficTypeByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.UpdateTrafficType, Input: activities.PhysNetTrafficUpdateInput{UUID: tt.UUID, Labels: trafficLabels(c), Actor: netActor(c)},
		InstanceType: "TrafficType", InstanceUUID: tt.UUID, ResponseID: tt.UUID,
		Summary: "update " + tt.TrafficType + " traffic labels",
	})
}

func deleteTrafficType(c *Call) (any, error) {
	tt, err := c.trafficTypeByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	if err := activities.PhysNetTrafficDeleteCheck(c.Ctx, c.S.DB, tt); err != nil {
		return nil, err
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.DeleteTrafficType, Input: activities.PhysNetTrafficDeleteInput{UUID: tt.UUID, Actor: netActor(c)},
		InstanceType: "TrafficType", InstanceUUID: tt.UUID,
		Summary: "remove " + tt.TrafficType + " traffic from its physical network",
	})
}

func listTrafficTypes(c *Call) (any, error) {
	pn, err := c.physNetByUUID(c.Str("physicalnetworkid"))
	if err != nil {
		return nil, err
	}
	var tts []models.PhysicalNetworkTrafficType
	q := c.S.DB.NewSelect().Model(&tts).Where("physical_network_id = ?", pn.ID).Order("id ASC")
	q = c.Filtered(q, Filter{Keyword: []string{"traffic_type"}})
	total, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	views, err := trafficTypeViews(c.Ctx, c.S.DB, tts)
	if err != nil {
		return nil, err
	}
	return List{Key: "traffictype", Count: total, Items: views}, nil
}

var providerStates = []string{activities.ProviderEnabled, activities.ProviderDisabled, activities.ProviderShutdown}

func listNetworkServiceProviders(c *Call) (any, error) {
	var ps []models.PhysicalNetworkServiceProvider
	q := c.S.DB.NewSelect().Model(&ps).Order("id ASC")
	q = c.Filtered(q, Filter{Name: "provider_name", Keyword: []string{"provider_name"}})
	if c.Has("physicalnetworkid") {
		pn, err := c.physNetByUUID(c.Str("physicalnetworkid"))
		if err != nil {
			return nil, err
		}
		q = q.Where("physical_network_id = ?", pn.ID)
	} else {
		// Providers of removed physical networks are gone with them; the
		// join keeps stray rows out all the same.
		q = q.Where("physical_network_id IN (SELECT id FROM physical_networks WHERE removed IS NULL)")
	}
	if c.Has("state") {
		st, ok := pickName(c.Str("state"), providerStates)
		if !ok {
			return nil, cserr.Param("state %q: want Enabled, Disabled or Shutdown", clip(c.Str("state"), 32))
		}
		q = q.Where("state = ?", st)
	}
	total, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	views, err := providerViews(c.Ctx, c.S.DB, ps)
	if err != nil {
		return nil, err
	}
	return List{Key: "networkserviceprovider", Count: total, Items: views}, nil
}

func updateNetworkServiceProvider(c *Call) (any, error) {
	var p models.PhysicalNetworkServiceProvider
	if err := c.S.DB.NewSelect().Model(&p).Where("uuid = ?", c.Str("id")).Limit(1).Scan(c.Ctx); err != nil {
		if errors.Is(models.NotFound(err, ""), models.ErrNotFound) {
			return nil, cserr.Param("Unable to find network service provider by id %s", c.Str("id"))
		}
		return nil, err
	}
	in := activities.PhysNetProviderUpdateInput{UUID: p.UUID, Actor: netActor(c)}
	if c.Has("state") {
		st, ok := pickName(c.Str("state"), providerStates)
		if !ok {
			return nil, cserr.Param("state %q: want Enabled, Disabled or Shutdown", clip(c.Str("state"), 32))
		}
		in.State = st
	}
	if c.Has("servicelist") {
		can := activities.ProviderServices(p.ProviderName)
		for _, s := range c.List("servicelist") {
			if can == nil {
				in.Services = append(in.Services, s)
				continue
			}
			v, ok := pickName(s, can)
			if !ok {
				return nil, cserr.Param("Provider %s does not offer service %q; it offers %s", p.ProviderName, clip(s, 32), strings.Join(can, ", "))
			}
			in.Services = append(in.Services, v)
		}
		in.SetServices = true
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.UpdateNetworkServiceProvider, Input: in,
		InstanceType: "NetworkServiceProvider", InstanceUUID: p.UUID, ResponseID: p.UUID,
		Summary: "update network service provider " + p.ProviderName,
	})
}
