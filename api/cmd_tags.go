package api

import (
	"context"
	"database/sql"
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
			Name: "createTags", Description: "Creates resource tag(s)", Access: AccessAllWrite, Async: true,
			Params: []Param{
				{Name: "resourceids", Type: TList, Of: TString, Required: true, Description: "the IDs of the resources to tag"},
				{Name: "resourcetype", Type: TString, Required: true, Description: "the type of the resources: " + strings.Join(taggableNames(), ", ")},
				{Name: "tags", Type: TMap, Required: true, Description: "the tags: tags[0].key=k&tags[0].value=v"},
				{Name: "customer", Type: TString, Description: "the customer the tags belong to (informational)"},
			},
			ResponseName: "success", Response: successFields, Handler: createTags,
		},
		&Command{
			Name: "deleteTags", Description: "Deletes resource tag(s)", Access: AccessAllWrite, Async: true,
			Params: []Param{
				{Name: "resourceids", Type: TList, Of: TString, Required: true, Description: "the IDs of the resources whose tags to delete"},
				{Name: "resourcetype", Type: TString, Required: true, Description: "the type of the resources"},
				{Name: "tags", Type: TMap, Description: "the tags to delete by key (and value when given); all of the resources' tags when absent"},
			},
			ResponseName: "success", Response: successFields, Handler: deleteTags,
		},
		&Command{
			Name: "listTags", Description: "Lists resource tags", Access: AccessAll,
			Params: append(OwnerListParams(),
				Param{Name: "resourcetype", Type: TString, Description: "tags of resources of this type"},
				Param{Name: "resourceid", Type: TString, Description: "tags of this resource"},
				Param{Name: "key", Type: TString, Description: "tags with this key"},
				Param{Name: "value", Type: TString, Description: "tags with this value"},
				Param{Name: "customer", Type: TString, Description: "tags of this customer"},
			),
			ResponseName: "tag", Response: tagFields, Handler: listTags,
		},
	)
}

var tagFields = []Field{
	{"key", "string", "the tag key"},
	{"value", "string", "the tag value"},
	{"resourcetype", "string", "the type of the tagged resource"},
	{"resourceid", "string", "the ID of the tagged resource"},
	{"account", "string", "the account owning the resource"},
	{"domainid", "string", "the ID of the owner's domain"},
	{"domain", "string", "the name of the owner's domain"},
	{"customer", "string", "the customer of the tag"},
}

// taggable is a resource type tags may go on, and where its rows are.
type taggable struct {
	Name  string // as CloudStack spells it
	Table string
	Where string // extra condition on the row
	// Owned: the table has account_id and domain_id. Resources without an
	// owner belong to the system account (only root admins tag them).
	Owned   bool
	Removed bool // the table has a soft-delete column
}

var taggables = []taggable{
	{Name: "UserVm", Table: "vm_instances", Where: "type = 'User'", Owned: true, Removed: true},
	{Name: "Template", Table: "vm_templates", Where: "format <> 'ISO'", Owned: true, Removed: true},
	{Name: "ISO", Table: "vm_templates", Where: "format = 'ISO'", Owned: true, Removed: true},
	{Name: "Volume", Table: "volumes", Owned: true, Removed: true},
	{Name: "Snapshot", Table: "snapshots", Owned: true, Removed: true},
	{Name: "VMSnapshot", Table: "vm_snapshots", Owned: true, Removed: true},
	{Name: "Network", Table: "networks", Owned: true, Removed: true},
	{Name: "PublicIpAddress", Table: "ip_addresses", Owned: true},
	{Name: "FirewallRule", Table: "firewall_rules", Owned: true},
	{Name: "Zone", Table: "zones", Removed: true},
	{Name: "ServiceOffering", Table: "service_offerings", Removed: true},
	{Name: "DiskOffering", Table: "disk_offerings", Removed: true},
	{Name: "NetworkOffering", Table: "network_offerings", Removed: true},
	{Name: "Storage", Table: "storage_pools", Removed: true},
}

func taggableNames() []string {
	out := make([]string, 0, len(taggables))
	for _, t := range taggables {
		out = append(out, t.Name)
	}
	return out
}

// taggableType finds a resource type, case-insensitively as CloudStack does.
func taggableType(name string) (*taggable, error) {
	for i := range taggables {
		if strings.EqualFold(taggables[i].Name, name) {
			return &taggables[i], nil
		}
	}
	return nil, cserr.Param("Invalid resource type %s; tags go on %s", clip(name, 64), strings.Join(taggableNames(), ", "))
}

// taggedResource is one resolved resource with its owner.
type taggedResource struct {
	UUID  string
	ID    int64
	Owner *owner
}

// resolveTaggable loads resources of a type by UUID with their owners and
// checks that the caller may change them: 431 for an unknown id, 531 for a
// resource the caller does not own or administer.
func (c *Call) resolveTaggable(t *taggable, ids []string) ([]taggedResource, error) {
	var system *owner
	out := make([]taggedResource, 0, len(ids))
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		var row struct {
			ID        int64         `bun:"id"`
			AccountID sql.NullInt64 `bun:"account_id"`
		}
		q := c.S.DB.NewSelect().TableExpr("? AS r", bun.Ident(t.Table)).Column("r.id").Where("r.uuid = ?", id).Limit(1)
		if t.Owned {
			q = q.Column("r.account_id")
		} else {
			q = q.ColumnExpr("NULL AS account_id")
		}
		if t.Removed {
			q = q.Where("r.removed IS NULL")
		}
		if t.Where != "" {
			q = q.Where(t.Where)
		}
		if err := q.Scan(c.Ctx, &row); err != nil {
			if isNoRows(err) {
				return nil, cserr.Param("Unable to find resource by id %s and type %s", clip(id, 64), t.Name)
			}
			return nil, err
		}
		var o *owner
		if row.AccountID.Valid && row.AccountID.Int64 != 0 {
			owners, err := loadOwners(c.Ctx, c.S.DB, []int64{row.AccountID.Int64})
			if err != nil {
				return nil, err
			}
			o = owners[row.AccountID.Int64]
		}
		if o == nil {
			if system == nil {
				var a models.Account
				if err := c.S.DB.NewSelect().Model(&a).Where("uuid = ?", models.SystemAccountUUID).Limit(1).Scan(c.Ctx); err != nil {
					return nil, err
				}
				owners, err := ownersOf(c.Ctx, c.S.DB, []models.Account{a})
				if err != nil {
					return nil, err
				}
				system = owners[a.ID]
			}
			o = system
		}
		if !c.Caller.IsRootAdmin() && !c.canActFor(o) {
			return nil, cserr.New(cserr.AccountError, "Account %s does not have permission to change the tags of %s %s", c.Caller.Account.Name, t.Name, clip(id, 64))
		}
		out = append(out, taggedResource{UUID: id, ID: row.ID, Owner: o})
	}
	return out, nil
}

func createTags(c *Call) (any, error) {
	t, err := taggableType(c.Str("resourcetype"))
	if err != nil {
		return nil, err
	}
	tags := c.Map("tags")
	if len(tags) == 0 {
		return nil, cserr.Param("Unable to execute API command createtags due to missing parameter tags")
	}
	kv := map[string]string{}
	var keys []string
	for _, m := range tags {
		k, v := strings.TrimSpace(m["key"]), m["value"]
		if k == "" || v == "" {
			return nil, cserr.Param("Each tag needs a key and a value (tags[n].key, tags[n].value)")
		}
		if len(k) > 255 || len(v) > 255 {
			return nil, cserr.Param("Tag keys and values are at most 255 characters")
		}
		if _, dup := kv[k]; dup {
			return nil, cserr.Param("Tag key %s is given twice", clip(k, 64))
		}
		kv[k] = v
		keys = append(keys, k)
	}
	ids := c.List("resourceids")
	if len(ids) == 0 {
		return nil, cserr.Param("Unable to execute API command createtags due to missing parameter resourceids")
	}
	res, err := c.resolveTaggable(t, ids)
	if err != nil {
		return nil, err
	}
	in := workflows.CreateTagsInput{Actor: actorOf(c.Caller)}
	uuids := make([]string, 0, len(res))
	for _, r := range res {
		uuids = append(uuids, r.UUID)
		for _, k := range keys {
			in.Tags = append(in.Tags, tagRow(t, r, k, kv[k], c.Str("customer")))
		}
	}
	var existing []models.ResourceTag
	if err := c.S.DB.NewSelect().Model(&existing).Where("resource_type = ? AND resource_uuid IN (?) AND tag_key IN (?)", t.Name, bun.In(uuids), bun.In(keys)).
		Limit(1).Scan(c.Ctx); err != nil {
		return nil, err
	}
	if len(existing) > 0 {
		return nil, cserr.Param("A tag with key %s already exists on %s %s", existing[0].Key, t.Name, existing[0].ResourceUUID)
	}
	return c.StartJob(JobSpec{Workflow: workflows.CreateTags, Input: in, Summary: "tag " + t.Name + " " + strings.Join(uuids, ",")})
}

func tagRow(t *taggable, r taggedResource, key, value, customer string) activities.TagRow {
	return activities.TagRow{
		Key: key, Value: value, Customer: customer, ResourceType: t.Name, ResourceUUID: r.UUID, ResourceID: r.ID,
		AccountID: r.Owner.Account.ID, DomainID: r.Owner.Account.DomainID,
	}
}

func deleteTags(c *Call) (any, error) {
	t, err := taggableType(c.Str("resourcetype"))
	if err != nil {
		return nil, err
	}
	ids := c.List("resourceids")
	if len(ids) == 0 {
		return nil, cserr.Param("Unable to execute API command deletetags due to missing parameter resourceids")
	}
	res, err := c.resolveTaggable(t, ids)
	if err != nil {
		return nil, err
	}
	uuids := make([]string, 0, len(res))
	for _, r := range res {
		uuids = append(uuids, r.UUID)
	}
	q := c.S.DB.NewSelect().Model((*models.ResourceTag)(nil)).Column("id").
		Where("resource_type = ? AND resource_uuid IN (?)", t.Name, bun.In(uuids))
	if tags := c.Map("tags"); len(tags) > 0 {
		q = q.WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
			for _, m := range tags {
				k, v := strings.TrimSpace(m["key"]), m["value"]
				q = q.WhereGroup(" OR ", func(q *bun.SelectQuery) *bun.SelectQuery {
					q = q.Where("tag_key = ?", k)
					if v != "" {
						q = q.Where("tag_value = ?", v)
					}
					return q
				})
			}
			return q
		})
	}
	var tagIDs []int64
	if err := q.Order("id").Scan(c.Ctx, &tagIDs); err != nil {
		return nil, err
	}
	if len(tagIDs) == 0 {
		return nil, cserr.Param("Unable to find any tags which conform to specified delete parameters")
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.DeleteTags,
		Input:    workflows.DeleteTagsInput{TagIDs: tagIDs, ResourceType: t.Name, ResourceIDs: uuids, Actor: actorOf(c.Caller)},
		Summary:  "delete tags of " + t.Name + " " + strings.Join(uuids, ","),
	})
}

// TagView is a tag as the SDK's Tag decodes it; VM, volume and other
// views list their tags with it.
type TagView struct {
	Key          string `json:"key"`
	Value        string `json:"value"`
	ResourceType string `json:"resourcetype"`
	ResourceID   string `json:"resourceid"`
	Account      string `json:"account,omitempty"`
	DomainID     string `json:"domainid,omitempty"`
	Domain       string `json:"domain,omitempty"`
	DomainPath   string `json:"domainpath,omitempty"`
	Customer     string `json:"customer,omitempty"`
}

func tagViews(ctx context.Context, db bun.IDB, tags []models.ResourceTag) ([]TagView, error) {
	ids := make([]int64, 0, len(tags))
	for _, t := range tags {
		ids = append(ids, t.AccountID)
	}
	owners, err := loadOwners(ctx, db, ids)
	if err != nil {
		return nil, err
	}
	out := make([]TagView, 0, len(tags))
	for _, t := range tags {
		v := TagView{Key: t.Key, Value: t.Value, ResourceType: t.ResourceType, ResourceID: t.ResourceUUID, Customer: t.Customer}
		if o := owners[t.AccountID]; o != nil {
			v.Account, v.DomainID, v.Domain, v.DomainPath = o.Account.Name, o.Domain.UUID, o.Domain.Name, o.domainPath()
		}
		out = append(out, v)
	}
	return out, nil
}

// ResourceTagViews returns the tags of resources of a type (CloudStack's
// name: UserVm, Volume...) by resource UUID, for views that show "tags";
// resources without tags have none in the map.
func ResourceTagViews(ctx context.Context, db bun.IDB, resourceType string, uuids []string) (map[string][]TagView, error) {
	out := map[string][]TagView{}
	if len(uuids) == 0 {
		return out, nil
	}
	var tags []models.ResourceTag
	if err := db.NewSelect().Model(&tags).Where("resource_type = ? AND resource_uuid IN (?)", resourceType, bun.In(uuids)).
		Order("id").Scan(ctx); err != nil {
		return nil, err
	}
	views, err := tagViews(ctx, db, tags)
	if err != nil {
		return nil, err
	}
	for _, v := range views {
		out[v.ResourceID] = append(out[v.ResourceID], v)
	}
	return out, nil
}

func listTags(c *Call) (any, error) {
	scope, err := c.Visibility()
	if err != nil {
		return nil, err
	}
	var tags []models.ResourceTag
	q := c.S.DB.NewSelect().Model(&tags).Apply(scope.Modifier("resource_tag.account_id", "resource_tag.domain_id"))
	if c.Has("resourcetype") {
		t, err := taggableType(c.Str("resourcetype"))
		if err != nil {
			return nil, err
		}
		q = q.Where("resource_tag.resource_type = ?", t.Name)
	}
	for param, col := range map[string]string{"resourceid": "resource_uuid", "key": "tag_key", "value": "tag_value", "customer": "customer"} {
		if c.Has(param) {
			q = q.Where("? = ?", bun.Ident("resource_tag."+col), c.Str(param))
		}
	}
	q = c.Filtered(q, Filter{Keyword: []string{"resource_tag.tag_key", "resource_tag.tag_value"}}).Order("resource_tag.id")
	n, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	views, err := tagViews(c.Ctx, c.S.DB, tags)
	if err != nil {
		return nil, err
	}
	return List{Key: "tag", Count: n, Items: views}, nil
}
