package api

import (
	"context"
	"math"
	"strconv"
	"strings"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

func init() {
	Register(
		&Command{
			Name: "listResourceLimits", Description: "Lists the resource limits of an account or a domain", Access: AccessAll,
			Params: append(OwnerListParams(),
				Param{Name: "id", Type: TLong, Description: "ignored (limits have no IDs of their own)"},
				Param{Name: "resourcetype", Type: TInteger, Description: resourceTypeHelp},
				Param{Name: "resourcetypename", Type: TString, Description: "the type by name: " + strings.Join(models.ResourceTypes, ", ")},
			),
			ResponseName: "resourcelimit", Response: resourceLimitFields, Handler: listResourceLimits,
		},
		&Command{
			Name: "updateResourceLimit", Description: "Updates a resource limit of an account or a domain", Access: AccessAdmins,
			Params: []Param{
				{Name: "resourcetype", Type: TInteger, Required: true, Description: resourceTypeHelp},
				{Name: "max", Type: TLong, Description: "the maximum (GiB for storage, MiB for memory); -1 (the default) is unlimited"},
				{Name: "account", Type: TString, Description: "the account to limit; with domainid"},
				{Name: "domainid", Type: TUUID, Description: "the domain to limit, or the domain of account"},
			},
			ResponseName: "resourcelimit", Response: resourceLimitFields, Handler: updateResourceLimit,
		},
		&Command{
			Name: "updateResourceCount", Description: "Recalculates the resource counts of an account or a domain (and its subtree) from the inventory", Access: AccessAdmins,
			Params: []Param{
				{Name: "domainid", Type: TUUID, Required: true, Description: "the domain to recalculate, or the domain of account"},
				{Name: "account", Type: TString, Description: "the account to recalculate"},
				{Name: "resourcetype", Type: TInteger, Description: resourceTypeHelp + "; every type when absent"},
			},
			ResponseName: "resourcecount", Response: resourceCountFields, Handler: updateResourceCount,
		},
	)
}

const resourceTypeHelp = "0 instance, 1 public IP, 2 volume, 3 snapshot, 4 template, 5 project, 6 network, 7 VPC, " +
	"8 CPU, 9 memory, 10 primary storage, 11 secondary storage"

var resourceLimitFields = []Field{
	{"account", "string", "the account of the limit"},
	{"domainid", "string", "the domain ID of the limit"},
	{"domain", "string", "the domain name of the limit"},
	{"resourcetype", "string", "the resource type number"},
	{"resourcetypename", "string", "the resource type name"},
	{"max", "long", "the maximum (GiB for storage, MiB for memory); -1 is unlimited"},
}

var resourceCountFields = []Field{
	{"account", "string", "the account of the count"},
	{"domainid", "string", "the domain ID of the count"},
	{"domain", "string", "the domain name of the count"},
	{"resourcetype", "string", "the resource type number"},
	{"resourcetypename", "string", "the resource type name"},
	{"resourcecount", "long", "the count (bytes for storage, MiB for memory)"},
}

// ResourceLimitView is a limit as the SDK's ResourceLimit decodes it.
type ResourceLimitView struct {
	Account          string `json:"account,omitempty"`
	DomainID         string `json:"domainid"`
	Domain           string `json:"domain"`
	DomainPath       string `json:"domainpath,omitempty"`
	ResourceType     string `json:"resourcetype"`
	ResourceTypeName string `json:"resourcetypename"`
	Max              int64  `json:"max"`
}

// ResourceCountView is a count as updateResourceCount lists it.
type ResourceCountView struct {
	Account          string `json:"account,omitempty"`
	DomainID         string `json:"domainid"`
	Domain           string `json:"domain"`
	DomainPath       string `json:"domainpath,omitempty"`
	ResourceType     string `json:"resourcetype"`
	ResourceTypeName string `json:"resourcetypename"`
	ResourceCount    int64  `json:"resourcecount"`
}

// limitOwner is the account or domain a limit command is about.
type limitOwner struct {
	account *owner // nil for a domain
	domain  models.Domain
}

func (l *limitOwner) names() (account, domainID, domain, path string) {
	if l.account != nil {
		return l.account.Account.Name, l.account.Domain.UUID, l.account.Domain.Name, l.account.domainPath()
	}
	return "", l.domain.UUID, l.domain.Name, DisplayPath(l.domain.Path)
}

// apiMax shows a stored limit in the API's unit (GiB for storage).
func apiMax(typ string, v int64) int64 {
	if v >= 0 && models.IsStorageResource(typ) {
		return int64(math.Ceil(float64(v) / float64(models.GiB)))
	}
	return v
}

// resourceTypeParam reads resourcetype (or resourcetypename when byName),
// 431 when out of range; "" when absent.
func (c *Call) resourceTypeParam(byName bool) (string, error) {
	if c.Has("resourcetype") {
		n := c.Int("resourcetype", -1)
		if n < 0 || n >= int64(len(models.ResourceTypes)) {
			return "", cserr.Param("Invalid resource type %d: %s", n, resourceTypeHelp)
		}
		return models.ResourceTypes[n], nil
	}
	if byName && c.Has("resourcetypename") {
		name := strings.ToLower(c.Str("resourcetypename"))
		if models.ResourceTypeNumber(name) < 0 {
			return "", cserr.Param("Invalid resource type name %s: one of %s", clip(name, 64), strings.Join(models.ResourceTypes, ", "))
		}
		return name, nil
	}
	return "", nil
}

// limitAccount finds account (named by account and domainid) for a limit
// command: 431 when missing.
func (c *Call) limitAccount(dom *models.Domain) (*owner, error) {
	var a models.Account
	if err := c.S.DB.NewSelect().Model(&a).Where("domain_id = ? AND name = ?", dom.ID, c.Str("account")).Limit(1).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, cserr.Param("Unable to find account %s in domain %s", clip(c.Str("account"), 64), dom.UUID)
		}
		return nil, err
	}
	owners, err := ownersOf(c.Ctx, c.S.DB, []models.Account{a})
	if err != nil {
		return nil, err
	}
	return owners[a.ID], nil
}

func listResourceLimits(c *Call) (any, error) {
	typ, err := c.resourceTypeParam(true)
	if err != nil {
		return nil, err
	}
	lo := limitOwner{account: &owner{Account: c.Caller.Account, Domain: c.Caller.Domain, Role: c.Caller.Role}}
	if c.Caller.IsAdmin() && (c.Has("domainid") || c.Has("account")) {
		dom := &c.Caller.Domain
		if c.Has("domainid") {
			if dom, err = c.DomainByUUID(c.Str("domainid")); err != nil {
				return nil, err
			}
		}
		if !c.CanAccessDomain(dom) {
			return nil, cserr.New(cserr.AccountError, "The caller does not have access to domain %s", dom.UUID)
		}
		if c.Has("account") {
			o, err := c.limitAccount(dom)
			if err != nil {
				return nil, err
			}
			if !c.CanSeeAccount(&o.Account, &o.Domain) {
				return nil, cserr.New(cserr.AccountError, "The caller does not have access to account %s", o.Account.Name)
			}
			lo.account = o
		} else {
			lo = limitOwner{domain: *dom}
		}
	}
	var limits map[string]int64
	if lo.account != nil {
		limits, err = models.AccountLimits(c.Ctx, c.S.DB, &lo.account.Account)
	} else {
		limits, err = models.DomainLimits(c.Ctx, c.S.DB, &lo.domain)
	}
	if err != nil {
		return nil, err
	}
	acct, domID, dom, path := lo.names()
	var views []ResourceLimitView
	for i, t := range models.ResourceTypes {
		if typ != "" && t != typ {
			continue
		}
		views = append(views, ResourceLimitView{Account: acct, DomainID: domID, Domain: dom, DomainPath: path,
			ResourceType: strconv.Itoa(i), ResourceTypeName: t, Max: apiMax(t, limits[t])})
	}
	limit, offset := c.Page()
	total := len(views)
	if offset >= len(views) {
		views = nil
	} else {
		views = views[offset:min(offset+limit, len(views))]
	}
	return List{Key: "resourcelimit", Count: total, Items: views}, nil
}

func updateResourceLimit(c *Call) (any, error) {
	typ, err := c.resourceTypeParam(false)
	if err != nil {
		return nil, err
	}
	max := c.Int("max", models.Unlimited)
	if max < models.Unlimited {
		return nil, cserr.Param("Please specify either '-1' for an infinite limit, or a limit that is at least '0'")
	}
	stored := max
	if max >= 0 && models.IsStorageResource(typ) {
		if max > math.MaxInt64/models.GiB {
			return nil, cserr.Param("max %d GiB is too large", max)
		}
		stored = max * models.GiB
	}
	caller := c.Caller
	var lo limitOwner
	switch {
	case c.Has("account"):
		if !c.Has("domainid") {
			return nil, cserr.Param("Account must be specified with domainId parameter")
		}
		dom, err := c.DomainByUUID(c.Str("domainid"))
		if err != nil {
			return nil, err
		}
		if !c.CanAccessDomain(dom) {
			return nil, cserr.New(cserr.AccountError, "The caller does not have access to domain %s", dom.UUID)
		}
		o, err := c.limitAccount(dom)
		if err != nil {
			return nil, err
		}
		if o.Account.UUID == models.SystemAccountUUID {
			return nil, cserr.Param("The limits of the system account cannot be changed")
		}
		if o.Account.Type == models.AccountTypeAdmin && max != models.Unlimited {
			return nil, cserr.Param("Only %d limit is supported for Root Admin accounts", models.Unlimited)
		}
		if o.Account.ID == caller.Account.ID && caller.IsDomainAdmin() {
			return nil, cserr.New(cserr.AccountError, "Unable to update resource limit for their own account %s, permission denied", o.Account.Name)
		}
		if !c.CanAdminAccount(&o.Account, &o.Domain) {
			return nil, cserr.New(cserr.AccountError, "The caller does not have permission to change the limits of account %s", o.Account.Name)
		}
		if err := models.SetResourceLimit(c.Ctx, c.S.DB, o.Account.ID, 0, typ, stored); err != nil {
			return nil, err
		}
		lo.account = o
	case c.Has("domainid"):
		dom, err := c.DomainByUUID(c.Str("domainid"))
		if err != nil {
			return nil, err
		}
		if !c.CanAccessDomain(dom) {
			return nil, cserr.New(cserr.AccountError, "The caller does not have access to domain %s", dom.UUID)
		}
		if dom.ParentID == nil {
			return nil, cserr.New(cserr.AccountError, "Cannot update resource limit for ROOT domain %s, permission denied", dom.UUID)
		}
		if caller.IsDomainAdmin() && dom.ID == caller.Domain.ID {
			return nil, cserr.New(cserr.AccountError, "Unable to update resource limit for domain %s, permission denied: a domain admin may not change its own domain's limits", dom.UUID)
		}
		var parent models.Domain
		if err := c.S.DB.NewSelect().Model(&parent).Where("id = ?", *dom.ParentID).Limit(1).Scan(c.Ctx); err != nil {
			return nil, err
		}
		pl, err := models.DomainLimits(c.Ctx, c.S.DB, &parent)
		if err != nil {
			return nil, err
		}
		if p := pl[typ]; p >= 0 && stored > p {
			return nil, cserr.Param("Domain %s has maximum allowed resource limit %d for %s, please specify a value less than or equal to %d",
				DisplayPath(parent.Path), apiMax(typ, p), typ, apiMax(typ, p))
		}
		if err := models.SetResourceLimit(c.Ctx, c.S.DB, 0, dom.ID, typ, stored); err != nil {
			return nil, err
		}
		lo.domain = *dom
	default:
		return nil, cserr.Param("AccountId or domainId have to be specified in order to update resource limit")
	}
	acct, domID, dom, path := lo.names()
	target := "domain " + path
	if acct != "" {
		target = "account " + acct + " in domain " + path
	}
	c.Event("RESOURCE.LIMIT.UPDATE", "ResourceLimit", domID, "Set the "+typ+" limit of "+target+" to "+strconv.FormatInt(max, 10))
	return Object{"resourcelimit": ResourceLimitView{Account: acct, DomainID: domID, Domain: dom, DomainPath: path,
		ResourceType: strconv.Itoa(models.ResourceTypeNumber(typ)), ResourceTypeName: typ, Max: max}}, nil
}

func updateResourceCount(c *Call) (any, error) {
	typ, err := c.resourceTypeParam(false)
	if err != nil {
		return nil, err
	}
	var types []string
	if typ != "" {
		types = []string{typ}
	}
	dom, err := c.DomainByUUID(c.Str("domainid"))
	if err != nil {
		return nil, err
	}
	if !c.CanAccessDomain(dom) {
		return nil, cserr.New(cserr.AccountError, "The caller does not have access to domain %s", dom.UUID)
	}
	lo := limitOwner{domain: *dom}
	var counts map[string]int64
	if c.Has("account") {
		o, err := c.limitAccount(dom)
		if err != nil {
			return nil, err
		}
		if !c.canActFor(o) {
			return nil, cserr.New(cserr.AccountError, "The caller does not have permission to recalculate the counts of account %s", o.Account.Name)
		}
		lo.account = o
		counts, err = models.RecalculateAccountCounts(c.Ctx, c.S.DB, o.Account.ID, types)
		if err != nil {
			return nil, err
		}
	} else if counts, err = models.RecalculateDomainCounts(c.Ctx, c.S.DB, dom.ID, types); err != nil {
		return nil, err
	}
	acct, domID, domName, path := lo.names()
	var views []ResourceCountView
	for i, t := range models.ResourceTypes {
		if v, ok := counts[t]; ok {
			views = append(views, ResourceCountView{Account: acct, DomainID: domID, Domain: domName, DomainPath: path,
				ResourceType: strconv.Itoa(i), ResourceTypeName: t, ResourceCount: v})
		}
	}
	target := "domain " + path
	if acct != "" {
		target = "account " + acct + " in domain " + path
	}
	c.Event("RESOURCE.COUNT.UPDATE", "Domain", domID, "Recalculated the resource counts of "+target)
	return List{Key: "resourcecount", Count: len(views), Items: views}, nil
}

// resourceCountsOf renders limits and counts (in the repository's units) as
// the limit/total/available fields of accounts and domains.
func resourceCountsOf(limits, counts map[string]int64) ResourceCounts {
	const unlimited = "Unlimited"
	total := func(t string) int64 {
		if models.IsStorageResource(t) {
			return counts[t] / models.GiB
		}
		return counts[t]
	}
	lim := func(t string) string {
		if limits[t] < 0 {
			return unlimited
		}
		return strconv.FormatInt(apiMax(t, limits[t]), 10)
	}
	avail := func(t string) string {
		if limits[t] < 0 {
			return unlimited
		}
		if models.IsStorageResource(t) {
			return strconv.FormatInt((limits[t]-counts[t])/models.GiB, 10)
		}
		return strconv.FormatInt(limits[t]-counts[t], 10)
	}
	return ResourceCounts{
		CPUAvailable: avail(models.ResourceCPU), CPULimit: lim(models.ResourceCPU), CPUTotal: total(models.ResourceCPU),
		IPAvailable: avail(models.ResourcePublicIP), IPLimit: lim(models.ResourcePublicIP), IPTotal: total(models.ResourcePublicIP),
		MemoryAvailable: avail(models.ResourceMemory), MemoryLimit: lim(models.ResourceMemory), MemoryTotal: total(models.ResourceMemory),
		NetworkAvailable: avail(models.ResourceNetwork), NetworkLimit: lim(models.ResourceNetwork), NetworkTotal: total(models.ResourceNetwork),
		PrimaryStorageAvailable: avail(models.ResourcePrimaryStorage), PrimaryStorageLimit: lim(models.ResourcePrimaryStorage),
		PrimaryStorageTotal: total(models.ResourcePrimaryStorage),
		ProjectAvailable:    avail(models.ResourceProject), ProjectLimit: lim(models.ResourceProject), ProjectTotal: total(models.ResourceProject),
		SecondaryStorageAvailable: avail(models.ResourceSecondaryStorage), SecondaryStorageLimit: lim(models.ResourceSecondaryStorage),
		SecondaryStorageTotal: float64(counts[models.ResourceSecondaryStorage]) / float64(models.GiB),
		SnapshotAvailable:     avail(models.ResourceSnapshot), SnapshotLimit: lim(models.ResourceSnapshot), SnapshotTotal: total(models.ResourceSnapshot),
		TemplateAvailable: avail(models.ResourceTemplate), TemplateLimit: lim(models.ResourceTemplate), TemplateTotal: total(models.ResourceTemplate),
		VMAvailable: avail(models.ResourceUserVM), VMLimit: lim(models.ResourceUserVM), VMTotal: total(models.ResourceUserVM),
		VolumeAvailable: avail(models.ResourceVolume), VolumeLimit: lim(models.ResourceVolume), VolumeTotal: total(models.ResourceVolume),
		VPCAvailable: avail(models.ResourceVPC), VPCLimit: lim(models.ResourceVPC), VPCTotal: total(models.ResourceVPC),
	}
}

// accountsResourceCounts gives listAccounts its limit and total fields.
func accountsResourceCounts(ctx context.Context, db bun.IDB, accts []models.Account) (map[int64]ResourceCounts, error) {
	limits, err := models.AccountsLimits(ctx, db, accts)
	if err != nil {
		return nil, err
	}
	ids := make([]int64, 0, len(accts))
	for _, a := range accts {
		ids = append(ids, a.ID)
	}
	counts, err := models.AccountsCounts(ctx, db, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[int64]ResourceCounts, len(accts))
	for _, a := range accts {
		out[a.ID] = resourceCountsOf(limits[a.ID], counts[a.ID])
	}
	return out, nil
}

// domainsResourceCounts gives listDomains its limit and total fields.
func domainsResourceCounts(ctx context.Context, db bun.IDB, doms []models.Domain) (map[int64]ResourceCounts, error) {
	limits, err := models.DomainsLimits(ctx, db, doms)
	if err != nil {
		return nil, err
	}
	counts, err := models.DomainsCounts(ctx, db, doms)
	if err != nil {
		return nil, err
	}
	out := make(map[int64]ResourceCounts, len(doms))
	for _, d := range doms {
		out[d.ID] = resourceCountsOf(limits[d.ID], counts[d.ID])
	}
	return out, nil
}
