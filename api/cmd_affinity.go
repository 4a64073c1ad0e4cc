package api

import (
	"context"
	"strings"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/workflows"
)

func init() {
	Register(
		&Command{
			Name: "createAffinityGroup", Description: "Creates an affinity or anti-affinity group", Access: AccessAllWrite, Async: true,
			Params: append([]Param{
				{Name: "name", Type: TString, Required: true, Description: "the name of the group, unique within the account"},
				{Name: "type", Type: TString, Required: true, Description: "host anti-affinity or host affinity (listAffinityGroupTypes)"},
				{Name: "description", Type: TString, Length: 4096, Description: "the description of the group"},
			}, ownerParams("affinity group")...),
			ResponseName: "affinitygroup", Response: affinityGroupFields, Handler: createAffinityGroup,
		},
		&Command{
			Name: "deleteAffinityGroup", Description: "Deletes an affinity group that holds no VM", Access: AccessAllWrite, Async: true,
			Params: append([]Param{
				{Name: "id", Type: TUUID, Description: "the ID of the group; or give name"},
				{Name: "name", Type: TString, Description: "the name of the group; or give id"},
			}, ownerParams("affinity group")...),
			ResponseName: "success", Response: successFields, Handler: deleteAffinityGroup,
		},
		&Command{
			Name: "listAffinityGroups", Description: "Lists affinity groups", Access: AccessAll,
			Params: append(OwnerListParams(),
				Param{Name: "id", Type: TUUID, Description: "the ID of the group"},
				Param{Name: "name", Type: TString, Description: "the name of the group"},
				Param{Name: "type", Type: TString, Description: "groups of this type"},
				Param{Name: "virtualmachineid", Type: TUUID, Description: "the groups of this VM"},
			),
			ResponseName: "affinitygroup", Response: affinityGroupFields, Handler: listAffinityGroups,
		},
		&Command{
			Name: "listAffinityGroupTypes", Description: "Lists the affinity group types", Access: AccessAll,
			Params: ListParams(), ResponseName: "affinityGroupType",
			Response: []Field{{"type", "string", "the type of affinity group"}}, Handler: listAffinityGroupTypes,
		},
		&Command{
			Name: "updateVMAffinityGroup", Description: "Replaces the affinity groups of a stopped VM; they apply from its next start", Access: AccessAllWrite, Async: true,
			Params: []Param{
				{Name: "id", Type: TUUID, Required: true, Description: "the ID of the VM"},
				{Name: "affinitygroupids", Type: TList, Of: TUUID, Description: "the VM's groups by ID (none: no group); not with affinitygroupnames"},
				{Name: "affinitygroupnames", Type: TList, Of: TString, Description: "the VM's groups by name; not with affinitygroupids"},
			},
			ResponseName: "virtualmachine", Response: []Field{{"id", "string", "the ID of the VM"}, {"affinitygroup", "list", "the VM's affinity groups"}},
			Handler: updateVMAffinityGroup,
		},
	)
	RegisterRenderer("AffinityGroup", func(ctx context.Context, s *Server, id string) (any, error) {
		var g models.AffinityGroup
		if err := s.DB.NewSelect().Model(&g).Where("uuid = ?", id).Limit(1).Scan(ctx); err != nil {
			return nil, models.NotFound(err, "affinity group "+id)
		}
		views, err := affinityGroupViews(ctx, s.DB, []models.AffinityGroup{g})
		if err != nil {
			return nil, err
		}
		return views[0], nil
	})
	RegisterRenderer(workflows.AffinityVMRenderer, renderAffinityVM)
}

var affinityGroupFields = []Field{
	{"id", "string", "the ID of the group"},
	{"name", "string", "the name of the group"},
	{"type", "string", "host anti-affinity or host affinity"},
	{"description", "string", "the description"},
	{"account", "string", "the owner account"},
	{"domainid", "string", "the owner's domain ID"},
	{"domain", "string", "the owner's domain name"},
	{"virtualmachineIds", "list", "the IDs of the group's VMs"},
}

var affinityTypes = []string{models.AffinityHostAntiAffinity, models.AffinityHostAffinity}

// AffinityGroupView is a group as the SDK's AffinityGroup decodes it.
type AffinityGroupView struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Type        string   `json:"type"`
	Description string   `json:"description,omitempty"`
	Account     string   `json:"account"`
	DomainID    string   `json:"domainid"`
	Domain      string   `json:"domain"`
	DomainPath  string   `json:"domainpath,omitempty"`
	VMIDs       []string `json:"virtualmachineIds,omitempty"`
}

func affinityGroupViews(ctx context.Context, db bun.IDB, groups []models.AffinityGroup) ([]AffinityGroupView, error) {
	out := make([]AffinityGroupView, 0, len(groups))
	if len(groups) == 0 {
		return out, nil
	}
	ids := make([]int64, 0, len(groups))
	acctIDs := make([]int64, 0, len(groups))
	for _, g := range groups {
		ids = append(ids, g.ID)
		acctIDs = append(acctIDs, g.AccountID)
	}
	owners, err := loadOwners(ctx, db, acctIDs)
	if err != nil {
		return nil, err
	}
	var members []struct {
		GroupID int64  `bun:"affinity_group_id"`
		UUID    string `bun:"uuid"`
	}
	if err := db.NewSelect().TableExpr("affinity_group_vm_map AS m").ColumnExpr("m.affinity_group_id, v.uuid").
		Join("JOIN vm_instances AS v ON v.id = m.instance_id").
		Where("m.affinity_group_id IN (?) AND v.removed IS NULL", bun.In(ids)).
		Order("m.id").Scan(ctx, &members); err != nil {
		return nil, err
	}
	vms := map[int64][]string{}
	for _, m := range members {
		vms[m.GroupID] = append(vms[m.GroupID], m.UUID)
	}
	for _, g := range groups {
		v := AffinityGroupView{ID: g.UUID, Name: g.Name, Type: g.Type, Description: g.Description, VMIDs: vms[g.ID]}
		if o := owners[g.AccountID]; o != nil {
			v.Account, v.DomainID, v.Domain, v.DomainPath = o.Account.Name, o.Domain.UUID, o.Domain.Name, o.domainPath()
		}
		out = append(out, v)
	}
	return out, nil
}

func createAffinityGroup(c *Call) (any, error) {
	o, err := c.actingOwner()
	if err != nil {
		return nil, err
	}
	name, err := checkName("name", c.Str("name"))
	if err != nil {
		return nil, err
	}
	typ := ""
	for _, t := range affinityTypes {
		if strings.EqualFold(strings.TrimSpace(c.Str("type")), t) {
			typ = t
		}
	}
	if typ == "" {
		return nil, cserr.Param("Unable to create affinity group, invalid affinity group type %s; valid types are: %s", clip(c.Str("type"), 64), strings.Join(affinityTypes, ", "))
	}
	if ok, err := c.S.DB.NewSelect().Model((*models.AffinityGroup)(nil)).Where("account_id = ? AND name = ?", o.Account.ID, name).Exists(c.Ctx); err != nil {
		return nil, err
	} else if ok {
		return nil, cserr.Param("Unable to create affinity group, a group with name %s already exists", clip(name, 64))
	}
	id := models.NewUUID()
	return c.StartJob(JobSpec{
		Workflow: workflows.CreateAffinityGroup,
		Input: workflows.CreateAffinityGroupInput{
			UUID: id, Name: name, Type: typ, Description: c.Str("description"),
			AccountID: o.Account.ID, DomainID: o.Account.DomainID, Actor: actorOf(c.Caller),
		},
		InstanceType: "AffinityGroup", InstanceUUID: id, ResponseID: id,
		Summary: "create affinity group " + name + " of account " + o.Account.Name,
	})
}

// affinityGroupRef finds the group a command names by id, or by name in the
// acting account, and checks that the caller may change it.
func (c *Call) affinityGroupRef() (*models.AffinityGroup, error) {
	var g models.AffinityGroup
	switch {
	case c.Has("id"):
		if err := c.S.DB.NewSelect().Model(&g).Where("uuid = ?", c.Str("id")).Limit(1).Scan(c.Ctx); err != nil {
			if isNoRows(err) {
				return nil, cserr.Param("Unable to find affinity group by id %s", c.Str("id"))
			}
			return nil, err
		}
		owners, err := loadOwners(c.Ctx, c.S.DB, []int64{g.AccountID})
		if err != nil {
			return nil, err
		}
		if o := owners[g.AccountID]; o == nil || !c.canActFor(o) {
			return nil, cserr.New(cserr.AccountError, "The caller does not have permission to change affinity group %s", g.UUID)
		}
	case c.Has("name"):
		o, err := c.actingOwner()
		if err != nil {
			return nil, err
		}
		if err := c.S.DB.NewSelect().Model(&g).Where("account_id = ? AND name = ?", o.Account.ID, c.Str("name")).Limit(1).Scan(c.Ctx); err != nil {
			if isNoRows(err) {
				return nil, cserr.Param("Unable to find affinity group by name %s in account %s", clip(c.Str("name"), 64), o.Account.Name)
			}
			return nil, err
		}
	default:
		return nil, cserr.Param("Either the name or the id of the affinity group is required")
	}
	return &g, nil
}

func deleteAffinityGroup(c *Call) (any, error) {
	g, err := c.affinityGroupRef()
	if err != nil {
		return nil, err
	}
	n, err := c.S.DB.NewSelect().TableExpr("affinity_group_vm_map AS m").
		Join("JOIN vm_instances AS v ON v.id = m.instance_id").
		Where("m.affinity_group_id = ? AND v.removed IS NULL", g.ID).
		Where("v.state <> ?", models.VMExpunging).Count(c.Ctx)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		return nil, cserr.InUse("Affinity group %s holds %d VM(s); remove them from it first (updateVMAffinityGroup)", g.Name, n)
	}
	return c.StartJob(JobSpec{
		Workflow:     workflows.DeleteAffinityGroup,
		Input:        workflows.DeleteAffinityGroupInput{GroupUUID: g.UUID, Actor: actorOf(c.Caller)},
		InstanceType: "AffinityGroup", InstanceUUID: g.UUID,
		Summary: "delete affinity group " + g.Name,
	})
}

func listAffinityGroups(c *Call) (any, error) {
	scope, err := c.Visibility()
	if err != nil {
		return nil, err
	}
	var groups []models.AffinityGroup
	q := c.S.DB.NewSelect().Model(&groups).Apply(scope.Modifier("affinity_group.account_id", "affinity_group.domain_id"))
	if c.Has("type") {
		q = q.Where("LOWER(affinity_group.type) = ?", strings.ToLower(c.Str("type")))
	}
	if c.Has("virtualmachineid") {
		q = q.Where("affinity_group.id IN (?)", c.S.DB.NewSelect().TableExpr("affinity_group_vm_map AS m").Column("m.affinity_group_id").
			Join("JOIN vm_instances AS v ON v.id = m.instance_id").Where("v.uuid = ?", c.Str("virtualmachineid")))
	}
	q = c.Filtered(q, Filter{ID: "affinity_group.uuid", Name: "affinity_group.name", Keyword: []string{"affinity_group.name", "affinity_group.description"}}).
		Order("affinity_group.id")
	n, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	views, err := affinityGroupViews(c.Ctx, c.S.DB, groups)
	if err != nil {
		return nil, err
	}
	return List{Key: "affinitygroup", Count: n, Items: views}, nil
}

// AffinityGroupTypeView is one entry of listAffinityGroupTypes.
type AffinityGroupTypeView struct {
	Type string `json:"type"`
}

func listAffinityGroupTypes(c *Call) (any, error) {
	var out []AffinityGroupTypeView
	kw := strings.ToLower(c.Str("keyword"))
	for _, t := range affinityTypes {
		if kw == "" || strings.Contains(t, kw) {
			out = append(out, AffinityGroupTypeView{Type: t})
		}
	}
	// CloudStack names the entries affinityGroupType.
	return List{Key: "affinityGroupType", Count: len(out), Items: out}, nil
}

// userVMByUUID loads a user VM (not expunged) and checks the caller may
// change it.
func (c *Call) userVMByUUID(id string) (*models.VMInstance, *owner, error) {
	var vm models.VMInstance
	if err := c.S.DB.NewSelect().Model(&vm).Where("uuid = ? AND type = ?", id, models.VMTypeUser).Limit(1).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, nil, cserr.Param("Unable to find virtual machine by id %s", clip(id, 64))
		}
		return nil, nil, err
	}
	owners, err := loadOwners(c.Ctx, c.S.DB, []int64{vm.AccountID})
	if err != nil {
		return nil, nil, err
	}
	o := owners[vm.AccountID]
	if o == nil || !c.canActFor(o) {
		return nil, nil, cserr.New(cserr.AccountError, "The caller does not have permission to change virtual machine %s", vm.UUID)
	}
	return &vm, o, nil
}

func updateVMAffinityGroup(c *Call) (any, error) {
	if c.Has("affinitygroupids") && c.Has("affinitygroupnames") {
		return nil, cserr.Param("Give affinitygroupids or affinitygroupnames, not both")
	}
	vm, o, err := c.userVMByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	if vm.State != models.VMStopped {
		return nil, cserr.Param("Virtual machine %s must be Stopped to change its affinity groups; it is %s", vm.Name, vm.State)
	}
	var groups []models.AffinityGroup
	q := c.S.DB.NewSelect().Model(&groups).Order("id")
	want := 0
	switch {
	case c.Has("affinitygroupids"):
		ids := uniqueList(c.List("affinitygroupids"))
		want, q = len(ids), q.Where("uuid IN (?)", bun.In(ids))
	case c.Has("affinitygroupnames"):
		names := uniqueList(c.List("affinitygroupnames"))
		want, q = len(names), q.Where("account_id = ? AND name IN (?)", vm.AccountID, bun.In(names))
	}
	if want > 0 {
		if err := q.Scan(c.Ctx); err != nil {
			return nil, err
		}
		if len(groups) != want {
			return nil, cserr.Param("Unable to find all the affinity groups given in account %s", o.Account.Name)
		}
	}
	ids := make([]int64, 0, len(groups))
	for _, g := range groups {
		if g.AccountID != vm.AccountID {
			return nil, cserr.Param("Affinity group %s does not belong to the account of virtual machine %s", g.Name, vm.Name)
		}
		ids = append(ids, g.ID)
	}
	return c.StartJob(JobSpec{
		Workflow:     workflows.UpdateVMAffinityGroup,
		Input:        workflows.UpdateVMAffinityGroupInput{VMUUID: vm.UUID, GroupIDs: ids, Actor: actorOf(c.Caller)},
		InstanceType: "VirtualMachine", InstanceUUID: vm.UUID, ResponseID: vm.UUID,
		Summary: "set affinity groups of VM " + vm.Name,
	})
}

func uniqueList(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// renderAffinityVM renders updateVMAffinityGroup's result: the VM as its
// own renderer shows it once VMs register one ("VirtualMachine"), else the
// VM's identity and its affinity groups.
func renderAffinityVM(ctx context.Context, s *Server, id string) (any, error) {
	renderMu.RLock()
	vmRenderer := renderers["VirtualMachine"]
	renderMu.RUnlock()
	if vmRenderer != nil {
		return vmRenderer(ctx, s, id)
	}
	var vm models.VMInstance
	if err := s.DB.NewSelect().Model(&vm).Where("uuid = ?", id).Limit(1).Scan(ctx); err != nil {
		return nil, models.NotFound(err, "virtual machine "+id)
	}
	var groups []models.AffinityGroup
	if err := s.DB.NewSelect().Model(&groups).
		Where("id IN (?)", s.DB.NewSelect().Model((*models.AffinityGroupVMMap)(nil)).Column("affinity_group_id").Where("instance_id = ?", vm.ID)).
		Order("id").Scan(ctx); err != nil {
		return nil, err
	}
	views, err := affinityGroupViews(ctx, s.DB, groups)
	if err != nil {
		return nil, err
	}
	v := map[string]any{
		"id": vm.UUID, "name": vm.Name, "displayname": vm.DisplayName, "state": vm.State,
		"affinitygroup": views,
	}
	owners, err := loadOwners(ctx, s.DB, []int64{vm.AccountID})
	if err != nil {
		return nil, err
	}
	if o := owners[vm.AccountID]; o != nil {
		v["account"], v["domainid"], v["domain"] = o.Account.Name, o.Domain.UUID, o.Domain.Name
	}
	return v, nil
}
