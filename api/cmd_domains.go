package api

import (
	"context"
	"database/sql"
	"errors"
	"regexp"
	"strings"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/workflows"
)

func init() {
	Register(
		&Command{
			Name: "createDomain", Description: "Creates a domain", Access: AccessAdmins,
			Params: []Param{
				{Name: "name", Type: TString, Required: true, Description: "name of the domain"},
				{Name: "parentdomainid", Type: TUUID, Description: "the parent domain; the caller's domain when absent"},
				{Name: "networkdomain", Type: TString, Description: "network domain of the domain's networks"},
				{Name: "domainid", Type: TUUID, Description: "the UUID to give the new domain"},
			},
			ResponseName: "domain", Response: domainFields, Handler: createDomain,
		},
		&Command{
			Name: "listDomains", Description: "Lists domains and provides detailed information for listed domains", Access: AccessAll,
			Params: append(ListParams(),
				Param{Name: "id", Type: TUUID, Description: "list the domain with this id"},
				Param{Name: "name", Type: TString, Description: "list domains with this name"},
				Param{Name: "level", Type: TInteger, Description: "list domains at this level of the tree (ROOT is 0)"},
				Param{Name: "listall", Type: TBoolean, Description: "list the caller's whole subtree, not just its domain"},
				Param{Name: "details", Type: TList, Of: TString, Description: "details to show: all, resource, min"},
				Param{Name: "showicon", Type: TBoolean, Description: "show the domain's icon (none are stored)"},
			),
			ResponseName: "domain", Response: domainFields, Handler: listDomains,
		},
		&Command{
			Name: "listDomainChildren", Description: "Lists all children domains belonging to a specified domain", Access: AccessAdmins,
			Params: append(ListParams(),
				Param{Name: "id", Type: TUUID, Description: "the parent domain; the caller's domain when absent"},
				Param{Name: "name", Type: TString, Description: "list children with this name"},
				Param{Name: "isrecursive", Type: TBoolean, Description: "list all descendants, not only direct children"},
				Param{Name: "listall", Type: TBoolean, Description: "same as isrecursive"},
				Param{Name: "showicon", Type: TBoolean, Description: "show the domain's icon (none are stored)"},
			),
			ResponseName: "domain", Response: domainFields, Handler: listDomainChildren,
		},
		&Command{
			Name: "updateDomain", Description: "Updates a domain with a new name", Access: AccessAdmins,
			Params: []Param{
				{Name: "id", Type: TUUID, Required: true, Description: "the domain"},
				{Name: "name", Type: TString, Description: "new name of the domain"},
				{Name: "networkdomain", Type: TString, Description: "new network domain"},
			},
			ResponseName: "domain", Response: domainFields, Handler: updateDomain,
		},
		&Command{
			Name: "deleteDomain", Description: "Deletes a specified domain", Access: AccessAdmins, Async: true,
			Params: []Param{
				{Name: "id", Type: TUUID, Required: true, Description: "the domain"},
				{Name: "cleanup", Type: TBoolean, Description: "delete the accounts of the domain and its subdomains too; without it the job refuses while accounts remain"},
			},
			ResponseName: "success", Response: tenancySuccessFields, Handler: deleteDomain,
		},
	)
	RegisterRenderer("Domain", func(ctx context.Context, s *Server, uuid string) (any, error) {
		var d models.Domain
		if err := s.DB.NewSelect().Model(&d).Where("uuid = ?", uuid).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
			return nil, models.NotFound(err, "domain "+uuid)
		}
		views, err := domainViews(ctx, s.DB, []models.Domain{d})
		if err != nil {
			return nil, err
		}
		return views[0], nil
	})
}

var tenancySuccessFields = []Field{
	{"success", "boolean", "true if the operation succeeded"},
	{"displaytext", "string", "any text associated with the success or failure"},
}

var domainFields = []Field{
	{"id", "string", "the ID of the domain"},
	{"name", "string", "the name of the domain"},
	{"level", "integer", "the level of the domain (ROOT is 0)"},
	{"parentdomainid", "string", "the domain ID of the parent domain"},
	{"parentdomainname", "string", "the domain name of the parent domain"},
	{"haschild", "boolean", "whether the domain has one or more sub-domains"},
	{"path", "string", "the path of the domain"},
	{"networkdomain", "string", "the network domain"},
	{"state", "string", "the state of the domain"},
	{"created", "date", "the date when this domain was created"},
	{"vmlimit", "string", "the total number of virtual machines that can be deployed by this domain"},
	{"vmtotal", "long", "the total number of virtual machines deployed by this domain"},
}

// ResourceCounts are the resource limits and usage CloudStack shows on
// domains and accounts. Limits are strings ("Unlimited" or a number), totals
// numbers. They come from the limits repository (cmd_limits.go).
type ResourceCounts struct {
	CPUAvailable              string  `json:"cpuavailable"`
	CPULimit                  string  `json:"cpulimit"`
	CPUTotal                  int64   `json:"cputotal"`
	IPAvailable               string  `json:"ipavailable"`
	IPLimit                   string  `json:"iplimit"`
	IPTotal                   int64   `json:"iptotal"`
	MemoryAvailable           string  `json:"memoryavailable"`
	MemoryLimit               string  `json:"memorylimit"`
	MemoryTotal               int64   `json:"memorytotal"`
	NetworkAvailable          string  `json:"networkavailable"`
	NetworkLimit              string  `json:"networklimit"`
	NetworkTotal              int64   `json:"networktotal"`
	PrimaryStorageAvailable   string  `json:"primarystorageavailable"`
	PrimaryStorageLimit       string  `json:"primarystoragelimit"`
	PrimaryStorageTotal       int64   `json:"primarystoragetotal"`
	ProjectAvailable          string  `json:"projectavailable"`
	ProjectLimit              string  `json:"projectlimit"`
	ProjectTotal              int64   `json:"projecttotal"`
	SecondaryStorageAvailable string  `json:"secondarystorageavailable"`
	SecondaryStorageLimit     string  `json:"secondarystoragelimit"`
	SecondaryStorageTotal     float64 `json:"secondarystoragetotal"`
	SnapshotAvailable         string  `json:"snapshotavailable"`
	SnapshotLimit             string  `json:"snapshotlimit"`
	SnapshotTotal             int64   `json:"snapshottotal"`
	TemplateAvailable         string  `json:"templateavailable"`
	TemplateLimit             string  `json:"templatelimit"`
	TemplateTotal             int64   `json:"templatetotal"`
	VMAvailable               string  `json:"vmavailable"`
	VMLimit                   string  `json:"vmlimit"`
	VMTotal                   int64   `json:"vmtotal"`
	VolumeAvailable           string  `json:"volumeavailable"`
	VolumeLimit               string  `json:"volumelimit"`
	VolumeTotal               int64   `json:"volumetotal"`
	VPCAvailable              string  `json:"vpcavailable"`
	VPCLimit                  string  `json:"vpclimit"`
	VPCTotal                  int64   `json:"vpctotal"`
}

// DomainView is a domain as listDomains shows it (cloudstack-go Domain).
type DomainView struct {
	ID               string `json:"id"`
	Name             string `json:"name"`
	Level            int    `json:"level"`
	ParentDomainID   string `json:"parentdomainid,omitempty"`
	ParentDomainName string `json:"parentdomainname,omitempty"`
	HasChild         bool   `json:"haschild"`
	HasAnnotations   bool   `json:"hasannotations"`
	Path             string `json:"path"`
	NetworkDomain    string `json:"networkdomain,omitempty"`
	State            string `json:"state"`
	Created          string `json:"created"`
	ResourceCounts
}

// DisplayPath turns an inventory path ("/", "/a/b/") into CloudStack's
// domain path ("ROOT", "ROOT/a/b").
func DisplayPath(path string) string {
	return "ROOT" + strings.TrimSuffix(path, "/")
}

// domainViews renders domains with their parents' names and child flags,
// with two queries for the whole page.
func domainViews(ctx context.Context, db bun.IDB, ds []models.Domain) ([]DomainView, error) {
	if len(ds) == 0 {
		return []DomainView{}, nil
	}
	parentIDs := make([]int64, 0, len(ds))
	ids := make([]int64, 0, len(ds))
	for _, d := range ds {
		ids = append(ids, d.ID)
		if d.ParentID != nil {
			parentIDs = append(parentIDs, *d.ParentID)
		}
	}
	parents := map[int64]models.Domain{}
	if len(parentIDs) > 0 {
		var ps []models.Domain
		if err := db.NewSelect().Model(&ps).Where("id IN (?)", bun.List(parentIDs)).WhereAllWithDeleted().Scan(ctx); err != nil {
			return nil, err
		}
		for _, p := range ps {
			parents[p.ID] = p
		}
	}
	var kids []struct {
		ParentID int64 `bun:"parent_id"`
	}
	if err := db.NewSelect().Model((*models.Domain)(nil)).Column("parent_id").
		Where("parent_id IN (?)", bun.List(ids)).Group("parent_id").Scan(ctx, &kids); err != nil {
		return nil, err
	}
	hasChild := map[int64]bool{}
	for _, k := range kids {
		hasChild[k.ParentID] = true
	}
	counts, err := domainsResourceCounts(ctx, db, ds)
	if err != nil {
		return nil, err
	}
	out := make([]DomainView, 0, len(ds))
	for _, d := range ds {
		v := DomainView{
			ID: d.UUID, Name: d.Name, Level: d.Level, HasChild: hasChild[d.ID], Path: DisplayPath(d.Path),
			NetworkDomain: d.NetworkDomain, State: d.State, Created: FormatTime(d.Created), ResourceCounts: counts[d.ID],
		}
		if !d.Removed.IsZero() {
			v.Path = d.Name // a removed domain's stored path is mangled
		}
		if d.ParentID != nil {
			if p, ok := parents[*d.ParentID]; ok {
				v.ParentDomainID, v.ParentDomainName = p.UUID, p.Name
			}
		}
		out = append(out, v)
	}
	return out, nil
}

var networkDomainRe = regexp.MustCompile(`^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$`)

func checkNetworkDomain(v string) error {
	if v != "" && !networkDomainRe.MatchString(v) {
		return cserr.Param("Invalid network domain %q: it must be a DNS domain name (letters, digits, hyphens, dots)", clip(v, 64))
	}
	return nil
}

// checkDomainName refuses names that cannot be a path element.
func checkDomainName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return "", cserr.Param("Domain name must not be empty")
	}
	if strings.ContainsAny(name, "/\\") || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 }) {
		return "", cserr.Param("Domain name %q must not contain '/', '\\' or control characters", clip(name, 64))
	}
	return name, nil
}

// siblingExists tells whether parent already has a (live) child named name.
func siblingExists(ctx context.Context, db bun.IDB, parentID int64, name string, except int64) (bool, error) {
	return db.NewSelect().Model((*models.Domain)(nil)).
		Where("parent_id = ? AND name = ? AND id <> ?", parentID, name, except).Exists(ctx)
}

func createDomain(c *Call) (any, error) {
	name, err := checkDomainName(c.Str("name"))
	if err != nil {
		return nil, err
	}
	if err := checkNetworkDomain(c.Str("networkdomain")); err != nil {
		return nil, err
	}
	parent := c.Caller.Domain
	if c.Has("parentdomainid") {
		p, err := c.DomainByUUID(c.Str("parentdomainid"))
		if err != nil {
			return nil, err
		}
		parent = *p
	}
	if !c.CanAccessDomain(&parent) {
		return nil, cserr.New(cserr.AccountError, "The caller does not have access to domain %s", parent.UUID)
	}
	if parent.State != "Active" {
		return nil, cserr.Param("The parent domain %s is not active (it is being deleted)", parent.UUID)
	}
	id := models.NewUUID()
	if c.Has("domainid") {
		id = strings.ToLower(c.Str("domainid"))
		if ok, err := c.S.DB.NewSelect().Model((*models.Domain)(nil)).Where("uuid = ?", id).WhereAllWithDeleted().Exists(c.Ctx); err != nil {
			return nil, err
		} else if ok {
			return nil, cserr.Param("A domain with id %s already exists", id)
		}
	}
	pid := parent.ID
	d := models.Domain{
		UUID: id, ParentID: &pid, Name: name, Path: parent.Path + name + "/", Level: parent.Level + 1,
		NetworkDomain: c.Str("networkdomain"), State: "Active", Created: models.Now(),
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		dup, err := siblingExists(ctx, tx, parent.ID, name, 0)
		if err != nil {
			return err
		}
		if dup {
			return cserr.Param("Domain with name %s already exists for the parent %s", clip(name, 64), parent.UUID)
		}
		if _, err := tx.NewInsert().Model(&d).Exec(ctx); err != nil {
			if isDuplicate(err) {
				return cserr.Param("Domain with name %s already exists for the parent %s", clip(name, 64), parent.UUID)
			}
			return err
		}
		return tenancyEvent(ctx, tx, c.Caller, "DOMAIN.CREATE", "Domain", d.UUID, "Domain "+DisplayPath(d.Path)+" created")
	})
	if err != nil {
		return nil, err
	}
	views, err := domainViews(c.Ctx, c.S.DB, []models.Domain{d})
	if err != nil {
		return nil, err
	}
	return Object{"domain": views[0]}, nil
}

func isDuplicate(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "duplicate") || strings.Contains(s, "unique constraint")
}

// listDomains follows CloudStack: the root admin sees every domain; others
// see their own domain, and domain admins with listall their subtree; with
// id, that domain if the caller may access it (531 otherwise).
func listDomains(c *Call) (any, error) {
	var ds []models.Domain
	q := c.S.DB.NewSelect().Model(&ds)
	switch {
	case c.Has("id"):
		d, err := c.DomainByUUID(c.Str("id"))
		if err != nil {
			return nil, err
		}
		if !c.CanAccessDomain(d) {
			return nil, cserr.New(cserr.AccountError, "The caller does not have access to domain %s", d.UUID)
		}
		q = q.Where("?TableAlias.id = ?", d.ID)
	case c.Caller.IsRootAdmin():
		// every domain
	case c.Caller.IsDomainAdmin() && c.Bool("listall", false):
		q = q.Where("?TableAlias.id IN (?)", SubtreeIDs(c.S.DB, c.Caller.Domain.Path))
	default:
		q = q.Where("?TableAlias.id = ?", c.Caller.Domain.ID)
	}
	if c.Has("level") {
		q = q.Where("?TableAlias.level = ?", c.Int("level", 0))
	}
	q = c.Filtered(q, Filter{Name: "domain.name", Keyword: []string{"domain.name"}}).Order("domain.path")
	n, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	views, err := domainViews(c.Ctx, c.S.DB, ds)
	if err != nil {
		return nil, err
	}
	return List{Key: "domain", Count: n, Items: views}, nil
}

func listDomainChildren(c *Call) (any, error) {
	parent := &c.Caller.Domain
	if c.Has("id") {
		d, err := c.DomainByUUID(c.Str("id"))
		if err != nil {
			return nil, err
		}
		if !c.CanAccessDomain(d) {
			return nil, cserr.New(cserr.AccountError, "The caller does not have access to domain %s", d.UUID)
		}
		parent = d
	}
	var ds []models.Domain
	q := c.S.DB.NewSelect().Model(&ds)
	if c.Bool("isrecursive", false) || c.Bool("listall", false) {
		q = q.Where("?TableAlias.id IN (?)", SubtreeIDs(c.S.DB, parent.Path)).Where("?TableAlias.id <> ?", parent.ID)
	} else {
		q = q.Where("?TableAlias.parent_id = ?", parent.ID)
	}
	q = c.Filtered(q, Filter{Name: "domain.name", Keyword: []string{"domain.name"}}).Order("domain.path")
	n, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	views, err := domainViews(c.Ctx, c.S.DB, ds)
	if err != nil {
		return nil, err
	}
	return List{Key: "domain", Count: n, Items: views}, nil
}

func updateDomain(c *Call) (any, error) {
	d, err := c.DomainByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	if !c.CanAccessDomain(d) {
		return nil, cserr.New(cserr.AccountError, "The caller does not have access to domain %s", d.UUID)
	}
	if err := checkNetworkDomain(c.Str("networkdomain")); err != nil {
		return nil, err
	}
	var newName string
	if c.Has("name") {
		if newName, err = checkDomainName(c.Str("name")); err != nil {
			return nil, err
		}
		if d.ParentID == nil && newName != d.Name {
			return nil, cserr.Param("The ROOT domain cannot be renamed")
		}
		if d.ID == c.Caller.Domain.ID && !c.Caller.IsRootAdmin() && newName != d.Name {
			return nil, cserr.New(cserr.AccountError, "A domain admin cannot rename its own domain")
		}
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if c.Has("networkdomain") {
			if _, err := tx.NewUpdate().Model(d).Set("network_domain = ?", c.Str("networkdomain")).WherePK().Exec(ctx); err != nil {
				return err
			}
			d.NetworkDomain = c.Str("networkdomain")
		}
		if newName != "" && newName != d.Name {
			if dup, err := siblingExists(ctx, tx, *d.ParentID, newName, d.ID); err != nil {
				return err
			} else if dup {
				return cserr.Param("Domain with name %s already exists for the parent", clip(newName, 64))
			}
			oldPath := d.Path
			newPath := strings.TrimSuffix(oldPath, d.Name+"/") + newName + "/"
			var sub []models.Domain
			if err := tx.NewSelect().Model(&sub).Where("?TableAlias.id IN (?)", SubtreeIDs(tx, oldPath)).Scan(ctx); err != nil {
				return err
			}
			for _, s := range sub {
				set := tx.NewUpdate().Model(&s).Set("path = ?", newPath+strings.TrimPrefix(s.Path, oldPath))
				if s.ID == d.ID {
					set = set.Set("name = ?", newName)
				}
				if _, err := set.WherePK().Exec(ctx); err != nil {
					return err
				}
			}
			d.Name, d.Path = newName, newPath
		}
		return tenancyEvent(ctx, tx, c.Caller, "DOMAIN.UPDATE", "Domain", d.UUID, "Domain "+DisplayPath(d.Path)+" updated")
	})
	if err != nil {
		return nil, err
	}
	c.S.InvalidateKeys() // cached callers carry their domain's path
	views, err := domainViews(c.Ctx, c.S.DB, []models.Domain{*d})
	if err != nil {
		return nil, err
	}
	return Object{"domain": views[0]}, nil
}

func deleteDomain(c *Call) (any, error) {
	d, err := c.DomainByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	if d.ParentID == nil {
		return nil, cserr.Param("The ROOT domain cannot be deleted")
	}
	if !c.CanAccessDomain(d) {
		return nil, cserr.New(cserr.AccountError, "The caller does not have access to domain %s", d.UUID)
	}
	if InSubtree(c.Caller.Domain.Path, d.Path) {
		return nil, cserr.Param("A domain cannot be deleted by an account inside it")
	}
	if !c.Caller.IsRootAdmin() && c.Bool("cleanup", false) {
		// A domain admin does not administer root-admin accounts (see
		// CanAdminAccount), so it may not have them deleted either.
		admins, err := c.S.DB.NewSelect().Model((*models.Account)(nil)).
			Where("type = ?", models.AccountTypeAdmin).Where("domain_id IN (?)", SubtreeIDs(c.S.DB, d.Path)).Exists(c.Ctx)
		if err != nil {
			return nil, err
		}
		if admins {
			return nil, cserr.New(cserr.AccountError, "Domain %s holds root admin accounts; only a root admin may delete it", d.UUID)
		}
	}
	resp, err := c.StartJob(JobSpec{
		Workflow: workflows.DeleteDomain,
		Input: workflows.DeleteDomainInput{
			DomainUUID: d.UUID, Cleanup: c.Bool("cleanup", false), Actor: actorOf(c.Caller),
		},
		InstanceType: "Domain", InstanceUUID: d.UUID,
		Summary: "delete domain " + DisplayPath(d.Path),
	})
	if err != nil {
		return nil, err
	}
	c.S.InvalidateKeys()
	return resp, nil
}

// actorOf is who acts in a job, for the events it records.
func actorOf(c *Caller) activities.Actor {
	return activities.Actor{UserID: c.User.ID, AccountID: c.Account.ID, DomainID: c.Domain.ID}
}

// isNoRows tells whether err means no row.
func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
