package api

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/workflows"
)

// Guest networks. Shared networks of an advanced zone are made by root
// admins with their VLAN and IP range (createNetwork); a basic zone has one
// guest network, made on first use, whose addresses are its pods' guest
// ranges. Isolated networks (with virtual routers) come later: a network
// has a guest type, and createNetwork refuses the others clearly.

func init() {
	Register(
		&Command{
			Name: "createNetwork", Description: "Creates a guest network: a shared network with its VLAN and IP range", Access: AccessAllWrite,
			Params: []Param{
				{Name: "zoneid", Type: TUUID, Required: true, Description: "the zone"},
				{Name: "networkofferingid", Type: TUUID, Required: true, Description: "the network offering (DefaultSharedNetworkOffering)"},
				{Name: "name", Type: TString, Required: true, Description: "the name of the network"},
				{Name: "displaytext", Type: TString, Description: "the display text; the name when absent"},
				{Name: "vlan", Type: TString, Description: "the VLAN id (or untagged) of a shared network"},
				{Name: "gateway", Type: TString, Description: "the gateway of the network's subnet"},
				{Name: "netmask", Type: TString, Description: "the netmask of the network's subnet"},
				{Name: "startip", Type: TString, Description: "the first address of its IP range"},
				{Name: "endip", Type: TString, Description: "the last address of its IP range; startip when absent"},
				{Name: "physicalnetworkid", Type: TUUID, Description: "the physical network; the zone's guest one when absent"},
				{Name: "acltype", Type: TString, Description: "Domain (default for shared networks) or Account"},
				{Name: "account", Type: TString, Description: "the owner of an Account network (with domainid)"},
				{Name: "domainid", Type: TUUID, Description: "the domain of a Domain network, or the owner's domain"},
				{Name: "subdomainaccess", Type: TBoolean, Description: "whether subdomains use a Domain network (default true)"},
				{Name: "networkdomain", Type: TString, Description: "the network domain"},
				{Name: "dns1", Type: TString, Description: "first DNS"},
				{Name: "dns2", Type: TString, Description: "second DNS"},
				{Name: "displaynetwork", Type: TBoolean, Description: "whether end users see it"},
				{Name: "bypassvlanoverlapcheck", Type: TBoolean, Description: "allow a VLAN another network of the zone uses"},
				{Name: "projectid", Type: TUUID, Description: "projects are not supported"},
				{Name: "vpcid", Type: TUUID, Description: "VPCs are not supported"},
			},
			ResponseName: "network", Response: networkFields, Handler: createNetwork,
		},
		&Command{
			Name: "listNetworks", Description: "Lists the guest networks the caller may use or administer", Access: AccessAll,
			Params: append(OwnerListParams(),
				Param{Name: "id", Type: TUUID, Description: "the network"},
				Param{Name: "zoneid", Type: TUUID, Description: "the zone"},
				Param{Name: "type", Type: TString, Description: "Shared, Isolated or L2"},
				Param{Name: "traffictype", Type: TString, Description: "the traffic type"},
				Param{Name: "acltype", Type: TString, Description: "Domain or Account"},
				Param{Name: "physicalnetworkid", Type: TUUID, Description: "the physical network"},
				Param{Name: "networkofferingid", Type: TUUID, Description: "the network offering"},
				Param{Name: "vlan", Type: TString, Description: "the VLAN (admins)"},
				Param{Name: "issystem", Type: TBoolean, Description: "system networks (none are listed)"},
				Param{Name: "canusefordeploy", Type: TBoolean, Description: "networks VMs may be deployed in"},
				Param{Name: "specifyipranges", Type: TBoolean, Description: "networks with their own IP ranges"},
				Param{Name: "displaynetwork", Type: TBoolean, Description: "shown to end users or not"},
				Param{Name: "restartrequired", Type: TBoolean, Description: "ignored"},
				Param{Name: "supportedservices", Type: TList, Of: TString, Description: "ignored"},
				Param{Name: "forvpc", Type: TBoolean, Description: "ignored"},
				Param{Name: "vpcid", Type: TUUID, Description: "ignored"},
				Param{Name: "networkfilter", Type: TString, Description: "ignored"},
				Param{Name: "showicon", Type: TBoolean, Description: "ignored"},
				Param{Name: "projectid", Type: TUUID, Description: "projects are not supported"},
				Param{Name: "tags", Type: TMap, Description: "ignored"},
			),
			ResponseName: "network", Response: networkFields, Handler: listNetworks,
		},
		&Command{
			Name: "deleteNetwork", Description: "Deletes a guest network no VM uses", Access: AccessAllWrite, Async: true,
			Params: []Param{
				{Name: "id", Type: TUUID, Required: true, Description: "the network"},
				{Name: "forced", Type: TBoolean, Description: "ignored: a network in use is never deleted"},
			},
			ResponseName: "success", Response: successFields, Handler: deleteNetwork,
		},
		&Command{
			Name: "updateNetwork", Description: "Updates a guest network's name, display text and settings", Access: AccessAllWrite, Async: true,
			Params: []Param{
				{Name: "id", Type: TUUID, Required: true, Description: "the network"},
				{Name: "name", Type: TString, Description: "the new name"},
				{Name: "displaytext", Type: TString, Description: "the new display text"},
				{Name: "networkdomain", Type: TString, Description: "the new network domain"},
				{Name: "dns1", Type: TString, Description: "first DNS"},
				{Name: "dns2", Type: TString, Description: "second DNS"},
				{Name: "displaynetwork", Type: TBoolean, Description: "whether end users see it"},
				{Name: "networkofferingid", Type: TUUID, Description: "changing the offering is not supported"},
				{Name: "guestvmcidr", Type: TString, Description: "not supported"},
				{Name: "changecidr", Type: TBoolean, Description: "ignored"},
				{Name: "forced", Type: TBoolean, Description: "ignored"},
				{Name: "customid", Type: TString, Description: "ignored"},
			},
			ResponseName: "network", Response: networkFields, Handler: updateNetwork,
		},
	)
	RegisterRenderer("Network", func(ctx context.Context, s *Server, id string) (any, error) {
		var n models.Network
		if err := s.DB.NewSelect().Model(&n).Where("uuid = ?", id).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
			return nil, models.NotFound(err, "network "+id)
		}
		views, err := networkViews(ctx, s.DB, []models.Network{n}, true)
		if err != nil {
			return nil, err
		}
		return views[0], nil
	})
}

var networkFields = []Field{
	{"id", "string", "the ID of the network"}, {"name", "string", "its name"}, {"displaytext", "string", "its display text"},
	{"type", "string", "Shared, Isolated or L2"}, {"traffictype", "string", "Guest"}, {"state", "string", "Allocated, Setup, Implemented..."},
	{"zoneid", "string", "the zone"}, {"zonename", "string", "its name"}, {"gateway", "string", "the gateway"},
	{"netmask", "string", "the netmask"}, {"cidr", "string", "the subnet"}, {"vlan", "string", "the VLAN (admins)"},
	{"broadcasturi", "string", "where it is on the wire (admins)"}, {"acltype", "string", "Domain or Account"},
	{"account", "string", "the owner of an Account network"}, {"domainid", "string", "its domain"}, {"domain", "string", "its domain's name"},
	{"networkofferingid", "string", "the offering"}, {"networkofferingname", "string", "its name"},
	{"physicalnetworkid", "string", "the physical network"}, {"service", "list", "the services it offers"},
	{"canusefordeploy", "boolean", "VMs may be deployed in it"}, {"subdomainaccess", "boolean", "subdomains use it"},
}

// NetworkServiceView is one service of a network and its provider.
type NetworkServiceView struct {
	Name       string               `json:"name"`
	Provider   []NetworkProviderRef `json:"provider"`
	Capability []any                `json:"capability"`
}

// NetworkProviderRef names a service's provider.
type NetworkProviderRef struct {
	Name string `json:"name"`
}

// NetworkView is a network as listNetworks shows it (the SDK's Network).
type NetworkView struct {
	ID                          string               `json:"id"`
	Name                        string               `json:"name"`
	DisplayText                 string               `json:"displaytext"`
	BroadcastDomainType         string               `json:"broadcastdomaintype"`
	BroadcastURI                string               `json:"broadcasturi,omitempty"`
	TrafficType                 string               `json:"traffictype"`
	Type                        string               `json:"type"`
	Gateway                     string               `json:"gateway,omitempty"`
	Netmask                     string               `json:"netmask,omitempty"`
	CIDR                        string               `json:"cidr,omitempty"`
	Vlan                        string               `json:"vlan,omitempty"`
	ZoneID                      string               `json:"zoneid"`
	ZoneName                    string               `json:"zonename"`
	NetworkOfferingID           string               `json:"networkofferingid"`
	NetworkOfferingName         string               `json:"networkofferingname"`
	NetworkOfferingDisplayText  string               `json:"networkofferingdisplaytext"`
	NetworkOfferingConserveMode bool                 `json:"networkofferingconservemode"`
	NetworkOfferingAvailability string               `json:"networkofferingavailability"`
	IsSystem                    bool                 `json:"issystem"`
	State                       string               `json:"state"`
	Related                     string               `json:"related"`
	DNS1                        string               `json:"dns1,omitempty"`
	DNS2                        string               `json:"dns2,omitempty"`
	ACLType                     string               `json:"acltype"`
	SubdomainAccess             bool                 `json:"subdomainaccess"`
	Account                     string               `json:"account,omitempty"`
	DomainID                    string               `json:"domainid"`
	Domain                      string               `json:"domain"`
	DomainPath                  string               `json:"domainpath"`
	Service                     []NetworkServiceView `json:"service"`
	NetworkDomain               string               `json:"networkdomain,omitempty"`
	PhysicalNetworkID           string               `json:"physicalnetworkid,omitempty"`
	RestartRequired             bool                 `json:"restartrequired"`
	SpecifyIPRanges             bool                 `json:"specifyipranges"`
	CanUseForDeploy             bool                 `json:"canusefordeploy"`
	IsPersistent                bool                 `json:"ispersistent"`
	IsDefault                   bool                 `json:"isdefault"`
	DisplayNetwork              bool                 `json:"displaynetwork"`
	Tags                        []any                `json:"tags"`
	Created                     string               `json:"created"`
	RedundantRouter             bool                 `json:"redundantrouter"`
	EgressDefaultPolicy         bool                 `json:"egressdefaultpolicy"`
	StrechedL2Subnet            bool                 `json:"strechedl2subnet"`
	SupportsVMAutoscaling       bool                 `json:"supportsvmautoscaling"`
	HasAnnotations              bool                 `json:"hasannotations"`
}

// networkViews renders networks with a fixed number of queries.
func networkViews(ctx context.Context, db bun.IDB, nets []models.Network, admin bool) ([]NetworkView, error) {
	out := make([]NetworkView, len(nets))
	if len(nets) == 0 {
		return out, nil
	}
	var zoneIDs, offIDs, pnIDs, acctIDs, domIDs []int64
	for _, n := range nets {
		zoneIDs, offIDs, pnIDs = append(zoneIDs, n.ZoneID), append(offIDs, n.NetworkOfferingID), append(pnIDs, n.PhysicalNetworkID)
		acctIDs, domIDs = append(acctIDs, n.AccountID), append(domIDs, n.DomainID)
	}
	zones, err := byIDs(ctx, db, zoneIDs, func(z *models.Zone) int64 { return z.ID }, true)
	if err != nil {
		return nil, err
	}
	offs, err := byIDs(ctx, db, offIDs, func(o *models.NetworkOffering) int64 { return o.ID }, true)
	if err != nil {
		return nil, err
	}
	pns, err := byIDs(ctx, db, pnIDs, func(p *models.PhysicalNetwork) int64 { return p.ID }, true)
	if err != nil {
		return nil, err
	}
	owners, err := loadOwners(ctx, db, vmUniq(acctIDs))
	if err != nil {
		return nil, err
	}
	doms, err := byIDs(ctx, db, domIDs, func(d *models.Domain) int64 { return d.ID }, true)
	if err != nil {
		return nil, err
	}
	var svcs []models.NetworkOfferingService
	if err := db.NewSelect().Model(&svcs).Where("network_offering_id IN (?)", bun.In(vmUniq(offIDs))).Order("id").Scan(ctx); err != nil {
		return nil, err
	}
	svcOf := map[int64][]NetworkServiceView{}
	for _, s := range svcs {
		svcOf[s.NetworkOfferingID] = append(svcOf[s.NetworkOfferingID], NetworkServiceView{Name: s.Service,
			Provider: []NetworkProviderRef{{Name: s.Provider}}, Capability: []any{}})
	}
	for i, n := range nets {
		v := NetworkView{
			ID: n.UUID, Name: n.Name, DisplayText: n.DisplayText, BroadcastDomainType: n.BroadcastDomainType, TrafficType: n.TrafficType,
			Type: n.GuestType, Gateway: n.Gateway, Netmask: n.Netmask, CIDR: n.CIDR, State: n.State, Related: n.UUID,
			DNS1: n.DNS1, DNS2: n.DNS2, ACLType: n.ACLType, SubdomainAccess: n.SubdomainAccess, NetworkDomain: n.NetworkDomain,
			RestartRequired: n.RestartRequired, SpecifyIPRanges: n.SpecifyIPRanges, DisplayNetwork: n.DisplayNetwork,
			CanUseForDeploy: n.State != models.NetworkDestroy && n.Removed.IsZero(), Tags: []any{}, Created: FormatTime(n.Created),
			Service: svcOf[n.NetworkOfferingID],
		}
		if v.Service == nil {
			v.Service = []NetworkServiceView{}
		}
		if admin {
			v.BroadcastURI, v.Vlan = n.BroadcastURI, n.Vlan
		}
		if z := zones[n.ZoneID]; z != nil {
			v.ZoneID, v.ZoneName = z.UUID, z.Name
		}
		if o := offs[n.NetworkOfferingID]; o != nil {
			v.NetworkOfferingID, v.NetworkOfferingName, v.NetworkOfferingDisplayText = o.UUID, o.Name, o.DisplayText
			v.NetworkOfferingConserveMode, v.NetworkOfferingAvailability, v.IsPersistent = o.ConserveMode, o.Availability, o.IsPersistent
			v.IsDefault, v.EgressDefaultPolicy = o.IsDefault, o.EgressDefaultAllow
		}
		if p := pns[n.PhysicalNetworkID]; p != nil {
			v.PhysicalNetworkID = p.UUID
		}
		if d := doms[n.DomainID]; d != nil {
			v.DomainID, v.Domain, v.DomainPath = d.UUID, d.Name, DisplayPath(d.Path)
		}
		if n.ACLType == models.ACLTypeAccount {
			if o := owners[n.AccountID]; o != nil {
				v.Account = o.Account.Name
			}
		}
		out[i] = v
	}
	return out, nil
}

// networkToChange loads a guest network the caller may change: root admins
// any, domain admins those of their subtree, users their own.
func (c *Call) networkToChange(id string) (*models.Network, error) {
	var n models.Network
	if err := c.S.DB.NewSelect().Model(&n).Where("uuid = ?", id).Limit(1).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, cserr.Param("Unable to find network by id %s", clip(id, 64))
		}
		return nil, err
	}
	if c.Caller.IsRootAdmin() {
		return &n, nil
	}
	if n.ACLType == models.ACLTypeAccount && n.AccountID == c.Caller.Account.ID {
		return &n, nil
	}
	if c.Caller.IsDomainAdmin() {
		var d models.Domain
		if err := c.S.DB.NewSelect().Model(&d).Column("path").Where("id = ?", n.DomainID).Limit(1).Scan(c.Ctx); err == nil && InSubtree(d.Path, c.Caller.Domain.Path) {
			return &n, nil
		}
	}
	return nil, cserr.New(cserr.AccountError, "The caller does not have permission to change network %s", n.Name)
}

func createNetwork(c *Call) (any, error) {
	if c.Has("projectid") || c.Has("vpcid") {
		return nil, cserr.New(cserr.UnsupportedAction, "projects and VPCs are not supported")
	}
	zone, err := c.zoneByUUID(c.Str("zoneid"))
	if err != nil {
		return nil, err
	}
	var off models.NetworkOffering
	if err := c.S.DB.NewSelect().Model(&off).Where("uuid = ?", c.Str("networkofferingid")).Limit(1).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, cserr.Param("Unable to find network offering by id %s", c.Str("networkofferingid"))
		}
		return nil, err
	}
	if off.TrafficType != models.TrafficGuest || off.SystemOnly {
		return nil, cserr.Param("Network offering %s is not for guest networks", off.Name)
	}
	if off.State != models.NetworkOfferingEnabled {
		return nil, cserr.Param("Network offering %s is disabled", off.Name)
	}
	if off.GuestType != models.GuestTypeShared {
		return nil, cserr.New(cserr.UnsupportedAction, "%s networks (offering %s) are not supported yet: create a Shared network", off.GuestType, off.Name)
	}
	if !c.Caller.IsRootAdmin() {
		return nil, cserr.New(cserr.AccountError, "Only root admins may create shared networks")
	}
	if zone.NetworkType == models.NetworkTypeBasic {
		return nil, cserr.Param("Zone %s is a Basic zone: it has one guest network, whose addresses are its pods' guest IP ranges", zone.Name)
	}
	name := strings.TrimSpace(c.Str("name"))
	if name == "" {
		return nil, cserr.Param("name must not be empty")
	}
	display := c.Str("displaytext")
	if display == "" {
		display = name
	}
	if err := checkIPs(c, "dns1", "dns2"); err != nil {
		return nil, err
	}
	// Owner: a Domain network belongs to a domain (its owner account is
	// the caller's); an Account network to an account.
	acl := models.ACLTypeDomain
	switch {
	case c.Str("acltype") == "" && c.Has("account"):
		acl = models.ACLTypeAccount
	case strings.EqualFold(c.Str("acltype"), models.ACLTypeAccount):
		acl = models.ACLTypeAccount
	case c.Str("acltype") == "" || strings.EqualFold(c.Str("acltype"), models.ACLTypeDomain):
	default:
		return nil, cserr.Param("acltype %q: want Domain or Account", clip(c.Str("acltype"), 32))
	}
	dom := &c.Caller.Domain
	if c.Has("domainid") {
		if dom, err = c.DomainByUUID(c.Str("domainid")); err != nil {
			return nil, err
		}
	}
	acct := c.Caller.Account
	if acl == models.ACLTypeAccount {
		if !c.Has("account") {
			return nil, cserr.Param("An Account network needs account (with domainid)")
		}
		if err := c.S.DB.NewSelect().Model(&acct).Where("domain_id = ? AND name = ?", dom.ID, c.Str("account")).Limit(1).Scan(c.Ctx); err != nil {
			if isNoRows(err) {
				return nil, cserr.Param("Unable to find account %s in domain %s", clip(c.Str("account"), 64), dom.UUID)
			}
			return nil, err
		}
	} else if c.Has("account") {
		return nil, cserr.Param("account is for Account networks; a Domain network belongs to domainid")
	}
	var pn *models.PhysicalNetwork
	if c.Has("physicalnetworkid") {
		if pn, err = c.physNetByUUID(c.Str("physicalnetworkid")); err != nil {
			return nil, err
		}
		if pn.ZoneID != zone.ID {
			return nil, cserr.Param("Physical network %s is not in zone %s", pn.Name, zone.Name)
		}
	} else if pn, err = trafficPhysNet(c.Ctx, c.S.DB, zone.ID, models.TrafficGuest); err != nil {
		return nil, err
	}
	if off.SpecifyVlan && !c.Has("vlan") {
		return nil, cserr.Param("Network offering %s needs vlan (a VLAN id, or untagged)", off.Name)
	}
	tag, err := vlanTagParam(c, "vlan")
	if err != nil {
		return nil, err
	}
	for _, p := range []string{"gateway", "netmask", "startip"} {
		if !c.Has(p) {
			return nil, cserr.Param("A shared network needs its IP range: missing parameter %s", p)
		}
	}
	plan, err := checkAddressPlan(c.Str("gateway"), c.Str("netmask"), c.Str("startip"), c.Str("endip"))
	if err != nil {
		return nil, cserr.Param("Invalid IP range: %v", err)
	}
	now := models.Now()
	uri := "vlan://" + tag
	n := &models.Network{
		UUID: models.NewUUID(), Name: name, DisplayText: display, TrafficType: models.TrafficGuest, GuestType: models.GuestTypeShared,
		BroadcastDomainType: "Vlan", BroadcastURI: uri, CIDR: plan.Subnet.CIDR(), Gateway: ipv4String(plan.Gateway),
		Netmask: netmaskString(plan.Subnet.Bits), Vlan: tag, DNS1: c.Str("dns1"), DNS2: c.Str("dns2"), Mode: models.NicModeDhcp,
		State: models.NetworkSetup, NetworkOfferingID: off.ID, PhysicalNetworkID: pn.ID, ZoneID: zone.ID, AccountID: acct.ID,
		DomainID: dom.ID, ACLType: acl, SubdomainAccess: acl == models.ACLTypeDomain && c.Bool("subdomainaccess", true),
		NetworkDomain: c.Str("networkdomain"), SpecifyIPRanges: true, DisplayNetwork: c.Bool("displaynetwork", true), Created: now,
	}
	if tag == models.VlanUntagged {
		n.BroadcastDomainType = "Native"
	}
	if acl == models.ACLTypeAccount {
		n.DomainID = acct.DomainID
	}
	v := &models.Vlan{
		UUID: models.NewUUID(), VlanTag: vlanTagStored(tag), VlanType: models.VlanTypeDirectAttached, Gateway: n.Gateway, Netmask: n.Netmask,
		StartIP: ipv4String(plan.Range.Start), EndIP: ipv4String(plan.Range.End), ZoneID: zone.ID, PhysicalNetworkID: pn.ID, Created: now,
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := activities.NetworkLockZone(ctx, tx, zone.ID); err != nil {
			return err
		}
		if !c.Bool("bypassvlanoverlapcheck", false) {
			var other models.Network
			err := tx.NewSelect().Model(&other).Column("name").Where("zone_id = ? AND broadcast_uri = ? AND traffic_type = ?", zone.ID, uri, models.TrafficGuest).
				Limit(1).Scan(ctx)
			if err == nil {
				return cserr.Param("Network %s of zone %s already uses VLAN %s", other.Name, zone.Name, tag)
			}
			if !isNoRows(err) {
				return err
			}
		}
		if _, err := tx.NewInsert().Model(n).Exec(ctx); err != nil {
			return err
		}
		v.NetworkID = n.ID
		if err := checkVlanRange(ctx, tx, v, tag, plan); err != nil {
			return err
		}
		if _, err := tx.NewInsert().Model(v).Exec(ctx); err != nil {
			return err
		}
		if err := insertRangeIPs(ctx, tx, v, plan.Range); err != nil {
			return err
		}
		return activities.WriteEvent(ctx, tx, activities.EventInput{Actor: actorOf(c.Caller), Type: "NETWORK.CREATE", ResourceType: "Network",
			ResourceUUID: n.UUID, Description: fmt.Sprintf("Created shared network %s on VLAN %s with IP range %s in zone %s", n.Name, tag, plan.Range, zone.Name)})
	})
	if err != nil {
		return nil, err
	}
	views, err := networkViews(c.Ctx, c.S.DB, []models.Network{*n}, true)
	if err != nil {
		return nil, err
	}
	return Object{"network": views[0]}, nil
}

func listNetworks(c *Call) (any, error) {
	if c.Has("projectid") || c.Bool("issystem", false) {
		return List{Key: "network"}, nil
	}
	scope, err := c.Visibility()
	if err != nil {
		return nil, err
	}
	var nets []models.Network
	q := c.S.DB.NewSelect().Model(&nets).Where("network.traffic_type = ?", models.TrafficGuest)
	// Account networks in the caller's scope, and the domain networks the
	// caller's account may use (its domain's, and its ancestors' with
	// subdomain access), plus with listall every domain network an admin
	// administers.
	path := c.Caller.Domain.Path
	usable := func(q *bun.SelectQuery) *bun.SelectQuery {
		return q.Where("network.acl_type = ?", models.ACLTypeDomain).
			WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
				return q.Where("network.domain_id = ?", c.Caller.Domain.ID).
					WhereOr("network.subdomain_access = ? AND network.domain_id IN (SELECT d_up.id FROM domains AS d_up WHERE SUBSTR(?, 1, LENGTH(d_up.path)) = d_up.path)", true, path)
			})
	}
	if !scope.All {
		q = q.WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
			q = q.WhereGroup(" OR ", func(q *bun.SelectQuery) *bun.SelectQuery {
				return scope.Modifier("network.account_id", "network.domain_id")(q.Where("network.acl_type = ?", models.ACLTypeAccount))
			})
			q = q.WhereGroup(" OR ", usable)
			if c.Caller.IsAdmin() && (c.Bool("listall", false) || c.Has("domainid")) && !scope.All && len(scope.AccountIDs) == 0 {
				q = q.WhereGroup(" OR ", func(q *bun.SelectQuery) *bun.SelectQuery {
					q = q.Where("network.acl_type = ?", models.ACLTypeDomain)
					if scope.Recursive {
						return q.Where("network.domain_id IN (?)", SubtreeIDs(q.DB(), scope.DomainPath))
					}
					return q.Where("network.domain_id = ?", scope.DomainID)
				})
			}
			return q
		})
	}
	byUUID := func(param, col, table string) {
		if c.Has(param) {
			q = q.Where("? IN (SELECT id FROM ? WHERE uuid = ?)", bun.Ident(col), bun.Ident(table), c.Str(param))
		}
	}
	byUUID("zoneid", "network.zone_id", "zones")
	byUUID("physicalnetworkid", "network.physical_network_id", "physical_networks")
	byUUID("networkofferingid", "network.network_offering_id", "network_offerings")
	if c.Has("type") {
		q = q.Where("LOWER(network.guest_type) = ?", strings.ToLower(c.Str("type")))
	}
	if c.Has("traffictype") && !strings.EqualFold(c.Str("traffictype"), models.TrafficGuest) {
		return List{Key: "network"}, nil
	}
	if c.Has("acltype") {
		q = q.Where("LOWER(network.acl_type) = ?", strings.ToLower(c.Str("acltype")))
	}
	if c.Has("vlan") && c.Caller.IsAdmin() {
		tag, err := vlanTagParam(c, "vlan")
		if err != nil {
			return nil, err
		}
		q = q.Where("network.broadcast_uri = ?", "vlan://"+tag)
	}
	if b := c.BoolPtr("specifyipranges"); b != nil {
		q = q.Where("network.specify_ip_ranges = ?", *b)
	}
	if b := c.BoolPtr("displaynetwork"); b != nil {
		q = q.Where("network.display_network = ?", *b)
	} else if !c.Caller.IsAdmin() {
		q = q.Where("network.display_network = ?", true)
	}
	if c.Bool("canusefordeploy", false) {
		q = q.Where("network.state <> ?", models.NetworkDestroy)
	}
	q = c.Filtered(q, Filter{ID: "network.uuid", Keyword: []string{"network.name", "network.display_text"}}).Order("network.id")
	if kw := c.Str("keyword"); kw != "" && utf8.RuneCountInString(kw) > 255 {
		return nil, cserr.Param("keyword is too long")
	}
	n, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	views, err := networkViews(c.Ctx, c.S.DB, nets, c.Caller.IsAdmin())
	if err != nil {
		return nil, err
	}
	return List{Key: "network", Count: n, Items: views}, nil
}

func deleteNetwork(c *Call) (any, error) {
	n, err := c.networkToChange(c.Str("id"))
	if err != nil {
		return nil, err
	}
	inUse, err := c.S.DB.NewSelect().Model((*models.Nic)(nil)).Where("network_id = ?", n.ID).Count(c.Ctx)
	if err != nil {
		return nil, err
	}
	if inUse > 0 {
		return nil, cserr.InUse("Network %s is in use by %d NIC(s) of virtual machines; expunge them first", n.Name, inUse)
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.DeleteNetwork, Input: workflows.DeleteNetworkInput{NetworkUUID: n.UUID, Actor: actorOf(c.Caller)},
		InstanceType: "Network", InstanceUUID: n.UUID, Summary: "delete network " + n.Name,
	})
}

func updateNetwork(c *Call) (any, error) {
	n, err := c.networkToChange(c.Str("id"))
	if err != nil {
		return nil, err
	}
	if c.Has("networkofferingid") {
		var off models.NetworkOffering
		if err := c.S.DB.NewSelect().Model(&off).Column("id").Where("uuid = ?", c.Str("networkofferingid")).Limit(1).Scan(c.Ctx); err != nil || off.ID != n.NetworkOfferingID {
			return nil, cserr.New(cserr.UnsupportedAction, "changing a network's offering is not supported")
		}
	}
	if c.Has("guestvmcidr") {
		return nil, cserr.New(cserr.UnsupportedAction, "guestvmcidr: changing a shared network's CIDR is not supported")
	}
	if err := checkIPs(c, "dns1", "dns2"); err != nil {
		return nil, err
	}
	in := workflows.UpdateNetworkInput{NetworkUUID: n.UUID, DisplayNetwork: c.BoolPtr("displaynetwork"), Actor: actorOf(c.Caller)}
	str := func(p string) *string {
		if !c.Has(p) {
			return nil
		}
		v := c.Str(p)
		return &v
	}
	in.Name, in.DisplayText, in.NetworkDomain, in.DNS1, in.DNS2 = str("name"), str("displaytext"), str("networkdomain"), str("dns1"), str("dns2")
	if in.Name != nil && strings.TrimSpace(*in.Name) == "" {
		return nil, cserr.Param("name must not be empty")
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.UpdateNetwork, Input: in, InstanceType: "Network", InstanceUUID: n.UUID, ResponseID: n.UUID,
		Summary: "update network " + n.Name,
	})
}
