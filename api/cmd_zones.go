package api

import (
	"context"
	"errors"
	"net/netip"
	"strings"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

func init() {
	zoneParams := []Param{
		{Name: "dns1", Type: TString, Description: "the first DNS server of guests"},
		{Name: "dns2", Type: TString, Description: "the second DNS server of guests"},
		{Name: "ip6dns1", Type: TString, Description: "the first IPv6 DNS server of guests"},
		{Name: "ip6dns2", Type: TString, Description: "the second IPv6 DNS server of guests"},
		{Name: "internaldns1", Type: TString, Description: "the first DNS server for system VMs and hosts"},
		{Name: "internaldns2", Type: TString, Description: "the second DNS server for system VMs and hosts"},
		{Name: "guestcidraddress", Type: TString, Description: "the guest CIDR of isolated networks in an advanced zone"},
		{Name: "domain", Type: TString, Description: "the network domain name of guests"},
		{Name: "localstorageenabled", Type: TBoolean, Description: "whether VMs may use local storage of hosts"},
		{Name: "allocationstate", Type: TString, Description: "Enabled or Disabled"},
	}
	Register(
		&Command{
			Name: "createZone", Description: "Creates a zone (a datacenter)", Access: AccessRootAdmin,
			Params: append([]Param{
				{Name: "name", Type: TString, Required: true, Description: "the name of the zone"},
				{Name: "networktype", Type: TString, Required: true, Description: "Basic or Advanced"},
				{Name: "domainid", Type: TUUID, Description: "makes the zone private to this domain and its subdomains"},
				{Name: "securitygroupenabled", Type: TBoolean, Description: "whether the zone uses security groups"},
				{Name: "isedge", Type: TBoolean, Description: "edge zones are not supported"},
			}, zoneParams...),
			ResponseName: "zone", Response: zoneFields, Handler: createZone,
		},
		&Command{
			Name: "updateZone", Description: "Updates a zone", Access: AccessRootAdmin,
			Params: append([]Param{
				{Name: "id", Type: TUUID, Required: true, Description: "the ID of the zone"},
				{Name: "name", Type: TString, Description: "the new name"},
				{Name: "ispublic", Type: TBoolean, Description: "true makes a private zone public"},
				{Name: "sortkey", Type: TInteger, Description: "order in lists"},
			}, zoneParams...),
			ResponseName: "zone", Response: zoneFields, Handler: updateZone,
		},
		&Command{
			Name: "listZones", Description: "Lists the zones the caller may use", Access: AccessAll,
			Params: append(ListParams(),
				Param{Name: "id", Type: TUUID, Description: "the ID of the zone"},
				Param{Name: "ids", Type: TList, Of: TUUID, Description: "IDs of zones"},
				Param{Name: "name", Type: TString, Description: "the name of the zone"},
				Param{Name: "available", Type: TBoolean, Description: "only zones the caller may deploy in"},
				Param{Name: "domainid", Type: TUUID, Description: "zones of this domain"},
				Param{Name: "networktype", Type: TString, Description: "Basic or Advanced"},
				Param{Name: "showcapacities", Type: TBoolean, Description: "include capacities"},
			),
			ResponseName: "zone", Response: zoneFields, Handler: listZones,
		},
		&Command{
			Name: "deleteZone", Description: "Deletes a zone that holds no pods", Access: AccessRootAdmin,
			Params:       []Param{{Name: "id", Type: TUUID, Required: true, Description: "the ID of the zone"}},
			ResponseName: "success", Response: successFields, Handler: deleteZone,
		},
	)
	RegisterRenderer("Zone", func(ctx context.Context, s *Server, id string) (any, error) {
		var z models.Zone
		if err := s.DB.NewSelect().Model(&z).Where("uuid = ?", id).Scan(ctx); err != nil {
			return nil, models.NotFound(err, "zone "+id)
		}
		return s.zoneView(ctx, &z, true), nil
	})
}

var successFields = []Field{{"success", "boolean", "true when the operation succeeded"}, {"displaytext", "string", "any text about the outcome"}}

var zoneFields = []Field{
	{"id", "string", "the ID of the zone"}, {"name", "string", "the name"},
	{"networktype", "string", "Basic or Advanced"}, {"allocationstate", "string", "Enabled or Disabled"},
	{"dns1", "string", "first DNS"}, {"dns2", "string", "second DNS"},
	{"internaldns1", "string", "first internal DNS"}, {"internaldns2", "string", "second internal DNS"},
	{"guestcidraddress", "string", "guest CIDR"}, {"domain", "string", "network domain"},
	{"domainid", "string", "the domain a private zone is dedicated to"}, {"domainname", "string", "its name"},
	{"localstorageenabled", "boolean", "local storage offerings allowed"},
	{"securitygroupsenabled", "boolean", "security groups used"},
	{"zonetoken", "string", "the zone token"}, {"type", "string", "Core"},
}

// ZoneView is a zone as listZones shows it (the SDK's Zone).
type ZoneView struct {
	ID                    string `json:"id"`
	Name                  string `json:"name"`
	Description           string `json:"description,omitempty"`
	NetworkType           string `json:"networktype"`
	AllocationState       string `json:"allocationstate"`
	DNS1                  string `json:"dns1,omitempty"`
	DNS2                  string `json:"dns2,omitempty"`
	IP6DNS1               string `json:"ip6dns1,omitempty"`
	IP6DNS2               string `json:"ip6dns2,omitempty"`
	InternalDNS1          string `json:"internaldns1,omitempty"`
	InternalDNS2          string `json:"internaldns2,omitempty"`
	GuestCIDRAddress      string `json:"guestcidraddress,omitempty"`
	Domain                string `json:"domain,omitempty"`
	DomainID              string `json:"domainid,omitempty"`
	DomainName            string `json:"domainname,omitempty"`
	LocalStorageEnabled   bool   `json:"localstorageenabled"`
	SecurityGroupsEnabled bool   `json:"securitygroupsenabled"`
	ZoneToken             string `json:"zonetoken,omitempty"`
	Type                  string `json:"type"`
	DHCPProvider          string `json:"dhcpprovider"`
	HasAnnotations        bool   `json:"hasannotations"`
}

func (s *Server) zoneView(ctx context.Context, z *models.Zone, admin bool) ZoneView {
	v := ZoneView{
		ID: z.UUID, Name: z.Name, Description: z.Description, NetworkType: z.NetworkType,
		AllocationState: z.AllocationState, DNS1: z.DNS1, DNS2: z.DNS2, IP6DNS1: z.IP6DNS1, IP6DNS2: z.IP6DNS2,
		GuestCIDRAddress: z.GuestNetworkCIDR, Domain: z.NetworkDomain,
		LocalStorageEnabled: z.IsLocalStorageEnabled, SecurityGroupsEnabled: z.IsSecurityGroupEnabled,
		Type: "Core", DHCPProvider: "VirtualRouter",
	}
	if admin {
		v.InternalDNS1, v.InternalDNS2, v.ZoneToken = z.InternalDNS1, z.InternalDNS2, z.ZoneToken
	}
	if z.DomainID != 0 {
		var d models.Domain
		if err := s.DB.NewSelect().Model(&d).Column("uuid", "name").Where("id = ?", z.DomainID).WhereAllWithDeleted().Scan(ctx); err == nil {
			v.DomainID, v.DomainName = d.UUID, d.Name
		}
	}
	return v
}

func checkIPs(c *Call, names ...string) error {
	for _, n := range names {
		if v := c.Str(n); v != "" {
			if _, err := netip.ParseAddr(v); err != nil {
				return cserr.Param("parameter %s: %q is not an IP address", n, clip(v, 64))
			}
		}
	}
	return nil
}

func checkCIDR(c *Call, name string) error {
	if v := c.Str(name); v != "" {
		if _, err := netip.ParsePrefix(v); err != nil {
			return cserr.Param("parameter %s: %q is not a CIDR (a.b.c.d/n)", name, clip(v, 64))
		}
	}
	return nil
}

func allocationState(c *Call) (string, error) {
	switch v := c.Str("allocationstate"); {
	case v == "":
		return "", nil
	case strings.EqualFold(v, models.AllocationEnabled):
		return models.AllocationEnabled, nil
	case strings.EqualFold(v, models.AllocationDisabled):
		return models.AllocationDisabled, nil
	default:
		return "", cserr.Param("allocationstate %q: want Enabled or Disabled", clip(v, 32))
	}
}

// domainByUUID loads a live domain or answers 431.
func (c *Call) domainByUUID(id string) (*models.Domain, error) {
	var d models.Domain
	if err := c.S.DB.NewSelect().Model(&d).Where("uuid = ?", id).Scan(c.Ctx); err != nil {
		if errors.Is(models.NotFound(err, ""), models.ErrNotFound) {
			return nil, cserr.Param("Unable to find domain by id %s", id)
		}
		return nil, err
	}
	return &d, nil
}

func createZone(c *Call) (any, error) {
	nt := c.Str("networktype")
	switch {
	case strings.EqualFold(nt, models.NetworkTypeBasic):
		nt = models.NetworkTypeBasic
	case strings.EqualFold(nt, models.NetworkTypeAdvanced):
		nt = models.NetworkTypeAdvanced
	default:
		return nil, cserr.Param("networktype %q: want Basic or Advanced", clip(nt, 32))
	}
	if c.Bool("isedge", false) {
		return nil, cserr.New(cserr.UnsupportedAction, "edge zones are not supported")
	}
	if err := checkIPs(c, "dns1", "dns2", "internaldns1", "internaldns2", "ip6dns1", "ip6dns2"); err != nil {
		return nil, err
	}
	if err := checkCIDR(c, "guestcidraddress"); err != nil {
		return nil, err
	}
	alloc, err := allocationState(c)
	if err != nil {
		return nil, err
	}
	if alloc == "" {
		// New zones start disabled, as in CloudStack: enable once set up.
		alloc = models.AllocationDisabled
	}
	z := &models.Zone{
		UUID: models.NewUUID(), Name: c.Str("name"), NetworkType: nt,
		DNS1: c.Str("dns1"), DNS2: c.Str("dns2"), IP6DNS1: c.Str("ip6dns1"), IP6DNS2: c.Str("ip6dns2"),
		InternalDNS1: c.Str("internaldns1"), InternalDNS2: c.Str("internaldns2"),
		GuestNetworkCIDR: c.Str("guestcidraddress"), NetworkDomain: c.Str("domain"),
		AllocationState: alloc, IsLocalStorageEnabled: c.Bool("localstorageenabled", false),
		IsSecurityGroupEnabled: c.Bool("securitygroupenabled", false),
		ZoneToken:              models.NewUUID(), Created: models.Now(),
	}
	if z.InternalDNS1 == "" {
		return nil, cserr.Param("Unable to execute API command createzone due to missing parameter internaldns1")
	}
	if nt == models.NetworkTypeAdvanced && z.GuestNetworkCIDR == "" {
		z.GuestNetworkCIDR = "10.1.1.0/24"
	}
	if c.Has("domainid") {
		d, err := c.domainByUUID(c.Str("domainid"))
		if err != nil {
			return nil, err
		}
		z.DomainID = d.ID
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		n, err := tx.NewSelect().Model((*models.Zone)(nil)).Where("name = ?", z.Name).Count(ctx)
		if err != nil {
			return err
		}
		if n > 0 {
			return cserr.Param("a zone named %q already exists", z.Name)
		}
		_, err = tx.NewInsert().Model(z).Exec(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.Event("ZONE.CREATE", "Zone", z.UUID, "created zone "+z.Name)
	return Object{"zone": c.S.zoneView(c.Ctx, z, true)}, nil
}

func (c *Call) zoneByUUID(id string) (*models.Zone, error) {
	var z models.Zone
	if err := c.S.DB.NewSelect().Model(&z).Where("uuid = ?", id).Scan(c.Ctx); err != nil {
		if errors.Is(models.NotFound(err, ""), models.ErrNotFound) {
			return nil, cserr.Param("Unable to find zone by id %s", id)
		}
		return nil, err
	}
	return &z, nil
}

func updateZone(c *Call) (any, error) {
	z, err := c.zoneByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	if err := checkIPs(c, "dns1", "dns2", "internaldns1", "internaldns2", "ip6dns1", "ip6dns2"); err != nil {
		return nil, err
	}
	if err := checkCIDR(c, "guestcidraddress"); err != nil {
		return nil, err
	}
	alloc, err := allocationState(c)
	if err != nil {
		return nil, err
	}
	q := c.S.DB.NewUpdate().Model(z).WherePK()
	set := func(param, col string) {
		if c.Has(param) {
			q = q.Set("? = ?", bun.Ident(col), c.Str(param))
		}
	}
	set("name", "name")
	set("dns1", "dns1")
	set("dns2", "dns2")
	set("ip6dns1", "ip6_dns1")
	set("ip6dns2", "ip6_dns2")
	set("internaldns1", "internal_dns1")
	set("internaldns2", "internal_dns2")
	set("guestcidraddress", "guest_network_cidr")
	set("domain", "network_domain")
	if alloc != "" {
		q = q.Set("allocation_state = ?", alloc)
	}
	if b := c.BoolPtr("localstorageenabled"); b != nil {
		q = q.Set("is_local_storage_enabled = ?", *b)
	}
	if c.Bool("ispublic", false) {
		q = q.Set("domain_id = NULL")
	}
	if c.Has("sortkey") {
		q = q.Set("sort_key = ?", c.Int("sortkey", 0))
	}
	if c.Has("name") {
		n, err := c.S.DB.NewSelect().Model((*models.Zone)(nil)).Where("name = ? AND id <> ?", c.Str("name"), z.ID).Count(c.Ctx)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			return nil, cserr.Param("a zone named %q already exists", c.Str("name"))
		}
	}
	if _, err := q.Exec(c.Ctx); err != nil {
		return nil, err
	}
	z, err = c.zoneByUUID(z.UUID)
	if err != nil {
		return nil, err
	}
	c.Event("ZONE.EDIT", "Zone", z.UUID, "updated zone "+z.Name)
	return Object{"zone": c.S.zoneView(c.Ctx, z, true)}, nil
}

func listZones(c *Call) (any, error) {
	var zones []models.Zone
	q := c.S.DB.NewSelect().Model(&zones).Order("sort_key ASC", "id ASC")
	if c.Has("id") {
		q = q.Where("uuid = ?", c.Str("id"))
	}
	if ids := c.List("ids"); len(ids) > 0 {
		q = q.Where("uuid IN (?)", bun.In(ids))
	}
	if c.Has("name") {
		q = q.Where("name = ?", c.Str("name"))
	}
	if c.Has("keyword") {
		q = q.Where("name LIKE ?", likePattern(c.Str("keyword")))
	}
	if c.Has("networktype") {
		q = q.Where("networktype = ?", c.Str("networktype"))
	}
	admin := c.Caller.IsRootAdmin()
	if c.Has("domainid") {
		d, err := c.domainByUUID(c.Str("domainid"))
		if err != nil {
			return nil, err
		}
		q = q.Where("domain_id = ?", d.ID)
	}
	if !admin {
		// Public zones, and zones private to the caller's domain or one of
		// its ancestors (a private zone serves its domain's subtree).
		q = q.WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
			return q.Where("domain_id IS NULL").
				WhereOr("domain_id IN (SELECT id FROM domains WHERE ? LIKE CONCAT(path, '%'))", c.Caller.Domain.Path)
		})
	}
	if c.Bool("available", false) || !admin {
		if !admin {
			q = q.Where("allocation_state = ?", models.AllocationEnabled)
		}
	}
	limit, offset := c.Page()
	total, err := q.Limit(int64(limit)).Offset(int64(offset)).ScanAndCount(c.Ctx)
	if err != nil {
		return nil, err
	}
	views := make([]ZoneView, len(zones))
	for i := range zones {
		views[i] = c.S.zoneView(c.Ctx, &zones[i], admin)
	}
	return List{Key: "zone", Count: int(total), Items: views}, nil
}

func deleteZone(c *Call) (any, error) {
	z, err := c.zoneByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		// What must go first, in the order an operator tears a zone down.
		for _, dep := range []struct {
			model any
			what  string
		}{
			{(*models.Pod)(nil), "pod(s)"},
			{(*models.StoragePool)(nil), "primary storage pool(s)"},
			{(*models.ImageStore)(nil), "image store(s)"},
			{(*models.Vlan)(nil), "IP range(s)"},
			{(*models.PhysicalNetwork)(nil), "physical network(s)"},
		} {
			n, err := tx.NewSelect().Model(dep.model).Where("zone_id = ?", z.ID).Count(ctx)
			if err != nil {
				return err
			}
			if n > 0 {
				return cserr.InUse("The zone %s is not deletable because it has %d %s", z.Name, n, dep.what)
			}
		}
		_, err = tx.NewDelete().Model(z).WherePK().Exec(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.Event("ZONE.DELETE", "Zone", z.UUID, "deleted zone "+z.Name)
	return Success{Success: true}, nil
}

// likePattern makes a LIKE pattern that matches the keyword literally
// anywhere (its own % and _ escaped).
func likePattern(k string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(k) + "%"
}
