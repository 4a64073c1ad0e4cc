package api

import (
	"context"
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
			Name: "createVMSnapshot", Description: "Creates a snapshot of a virtual machine: all its disks, and its memory when asked; the hypervisor keeps it with the VM",
			Access: AccessAllWrite, Async: true,
			Params: []Param{
				{Name: "virtualmachineid", Type: TUUID, Required: true, Description: "the virtual machine (Running or Stopped)"},
				{Name: "name", Type: TString, Length: 255, Description: "the snapshot's display name (default its internal name)"},
				{Name: "description", Type: TString, Length: 4096, Description: "its description"},
				{Name: "snapshotmemory", Type: TBoolean, Description: "include the VM's memory (type DiskAndMemory; the VM must be Running)"},
				{Name: "quiescevm", Type: TBoolean, Description: "quiesce the guest's file systems first (needs guest tools; VMware)"},
			},
			ResponseName: "vmsnapshot", Response: vmSnapshotFields, Handler: createVMSnapshot,
		},
		&Command{
			Name: "listVMSnapshot", Description: "Lists virtual machine snapshots", Access: AccessAll,
			Params: append(OwnerListParams(),
				Param{Name: "virtualmachineid", Type: TUUID, Description: "the snapshots of this virtual machine"},
				Param{Name: "vmsnapshotid", Type: TUUID, Description: "the snapshot"},
				Param{Name: "vmsnapshotids", Type: TList, Of: TUUID, Description: "several snapshots"},
				Param{Name: "name", Type: TString, Description: "snapshots of this name or display name"},
				Param{Name: "state", Type: TString, Description: "snapshots in this state (Allocated, Creating, Ready, Reverting, Expunging, Error)"},
				Param{Name: "tags", Type: TMap, Description: "snapshots with these tags: tags[0].key=&tags[0].value="},
				Param{Name: "projectid", Type: TUUID, Description: "projects are not supported"},
			),
			ResponseName: "vmSnapshot", Response: vmSnapshotFields, Handler: listVMSnapshot,
		},
		&Command{
			Name: "revertToVMSnapshot", Description: "Reverts a virtual machine to a VM snapshot: Running after a DiskAndMemory snapshot, Stopped after a Disk one",
			Access: AccessAllWrite, Async: true,
			Params:       []Param{{Name: "vmsnapshotid", Type: TUUID, Required: true, Description: "the VM snapshot"}},
			ResponseName: "virtualmachine", Response: vmFields, Handler: revertToVMSnapshot,
		},
		&Command{
			Name: "deleteVMSnapshot", Description: "Deletes a VM snapshot", Access: AccessAllWrite, Async: true,
			Params:       []Param{{Name: "vmsnapshotid", Type: TUUID, Required: true, Description: "the VM snapshot"}},
			ResponseName: "success", Response: successFields, Handler: deleteVMSnapshot,
		},
	)
	RegisterRenderer("VMSnapshot", func(ctx context.Context, s *Server, id string) (any, error) {
		var rows []vmSnapshotRow
		if err := s.vmSnapshotQuery().Where("vm_snapshot.uuid = ?", id).WhereAllWithDeleted().Scan(ctx, &rows); err != nil {
			return nil, err
		}
		if len(rows) == 0 {
			return nil, models.NotFound(errNoRow, "VM snapshot "+id)
		}
		views, err := s.vmSnapshotViews(ctx, rows)
		if err != nil {
			return nil, err
		}
		return views[0], nil
	})
}

var vmSnapshotFields = []Field{
	{"id", "string", "the ID of the VM snapshot"}, {"name", "string", "its internal name"},
	{"displayname", "string", "its display name"}, {"description", "string", "its description"},
	{"state", "string", "Allocated, Creating, Ready, Reverting, Expunging or Error"},
	{"type", "string", "Disk or DiskAndMemory"}, {"current", "boolean", "the VM runs from this snapshot's state"},
	{"parent", "string", "the ID of its parent snapshot"}, {"parentName", "string", "the parent's display name"},
	{"virtualmachineid", "string", "its VM"}, {"virtualmachinename", "string", "the VM's name"},
	{"hypervisor", "string", "the VM's hypervisor"}, {"zoneid", "string", "its zone"}, {"zonename", "string", "the zone's name"},
	{"created", "date", "when it was taken"}, {"account", "string", "the owner"}, {"domain", "string", "the owner's domain"},
	{"domainid", "string", "its ID"}, {"tags", "list", "its tags"},
}

// VMSnapshotView is a VM snapshot as listVMSnapshot shows it (the SDK's
// VMSnapshot).
type VMSnapshotView struct {
	ID                 string    `json:"id"`
	Name               string    `json:"name"`
	DisplayName        string    `json:"displayname"`
	Description        string    `json:"description"`
	State              string    `json:"state"`
	Type               string    `json:"type"`
	Current            bool      `json:"current"`
	Parent             string    `json:"parent,omitempty"`
	ParentName         string    `json:"parentName,omitempty"`
	VirtualMachineID   string    `json:"virtualmachineid"`
	VirtualMachineName string    `json:"virtualmachinename"`
	Hypervisor         string    `json:"hypervisor"`
	ZoneID             string    `json:"zoneid"`
	ZoneName           string    `json:"zonename"`
	Created            string    `json:"created"`
	Account            string    `json:"account"`
	Domain             string    `json:"domain"`
	DomainID           string    `json:"domainid"`
	Tags               []TagView `json:"tags"`
	HasAnnotations     bool      `json:"hasannotations"`
}

type vmSnapshotRow struct {
	models.VMSnapshot `bun:",extend"`
	VMUUID            string `bun:"vm_uuid"`
	VMName            string `bun:"vm_name"`
	ParentUUID        string `bun:"parent_uuid"`
	ParentName        string `bun:"parent_name"`
	ZoneUUID          string `bun:"zone_uuid"`
	ZoneName          string `bun:"zone_name"`
}

func (s *Server) vmSnapshotQuery() *bun.SelectQuery {
	return s.DB.NewSelect().Model((*vmSnapshotRow)(nil)).
		ColumnExpr("vm_snapshot.*").
		ColumnExpr("vm.uuid AS vm_uuid, vm.name AS vm_name").
		ColumnExpr("p.uuid AS parent_uuid, p.display_name AS parent_name").
		ColumnExpr("z.uuid AS zone_uuid, z.name AS zone_name").
		Join("LEFT JOIN vm_instances AS vm ON vm.id = vm_snapshot.vm_id").
		Join("LEFT JOIN vm_snapshots AS p ON p.id = vm_snapshot.parent_id").
		Join("LEFT JOIN zones AS z ON z.id = vm_snapshot.zone_id").
		Order("vm_snapshot.id ASC")
}

func (s *Server) vmSnapshotViews(ctx context.Context, rows []vmSnapshotRow) ([]VMSnapshotView, error) {
	out := make([]VMSnapshotView, len(rows))
	var acctIDs []int64
	var ids []string
	for _, r := range rows {
		acctIDs, ids = append(acctIDs, r.AccountID), append(ids, r.UUID)
	}
	owners, err := loadOwners(ctx, s.DB, acctIDs)
	if err != nil {
		return nil, err
	}
	tags, err := ResourceTagViews(ctx, s.DB, "VMSnapshot", ids)
	if err != nil {
		return nil, err
	}
	for i := range rows {
		r := &rows[i]
		v := VMSnapshotView{
			ID: r.UUID, Name: r.Name, DisplayName: r.DisplayName, Description: r.Description, State: r.State, Type: r.Type,
			Current: r.Current, Parent: r.ParentUUID, ParentName: r.ParentName, VirtualMachineID: r.VMUUID, VirtualMachineName: r.VMName,
			Hypervisor: r.HypervisorType, ZoneID: r.ZoneUUID, ZoneName: r.ZoneName, Created: FormatTime(r.Created), Tags: tags[r.UUID],
		}
		if v.Tags == nil {
			v.Tags = []TagView{}
		}
		if o, ok := owners[r.AccountID]; ok {
			v.Account, v.Domain, v.DomainID = o.Account.Name, o.Domain.Name, o.Domain.UUID
		}
		out[i] = v
	}
	return out, nil
}

// vmSnapshotForUse loads a live VM snapshot the caller may act on.
func (c *Call) vmSnapshotForUse(id string) (*models.VMSnapshot, error) {
	var s models.VMSnapshot
	if err := c.S.DB.NewSelect().Model(&s).Where("uuid = ?", id).Limit(1).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, cserr.Param("Unable to find VM snapshot by id %s", clip(id, 64))
		}
		return nil, err
	}
	ok, err := c.ownsOrAdmins(s.AccountID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, cserr.Param("Unable to find VM snapshot by id %s", clip(id, 64))
	}
	return &s, nil
}

// noVMSnapshots refuses to change the volumes of a VM that has VM
// snapshots, as CloudStack does: the snapshots cover the VM's disks as
// they were.
func (c *Call) noVMSnapshots(vmID int64, what string) error {
	if vmID == 0 {
		return nil
	}
	has, err := activities.VMHasSnapshots(c.Ctx, c.S.DB, vmID)
	if err != nil {
		return err
	}
	if has {
		var name string
		_ = c.S.DB.NewSelect().Model((*models.VMInstance)(nil)).Column("name").Where("id = ?", vmID).Limit(1).Scan(c.Ctx, &name)
		return cserr.Param("Unable to %s: virtual machine %s has VM snapshots; delete them first", what, name)
	}
	return nil
}

// touchVM is a guarded no-op update of a VM in tx: it holds the VM's row
// (so a VM job cannot start meanwhile) and fails when the VM has left the
// given states or a VM snapshot job of it runs (other than exceptID's).
func touchVM(ctx context.Context, tx bun.IDB, vm *models.VMInstance, states []string, set map[string]any, exceptID int64) error {
	q := tx.NewUpdate().Model((*models.VMInstance)(nil)).Set("update_count = update_count + 1").Set("update_time = ?", models.Now()).
		Where("id = ? AND state IN (?)", vm.ID, bun.In(states)).
		Where("NOT EXISTS (SELECT 1 FROM vm_snapshots AS b WHERE b.vm_id = ? AND b.id <> ? AND b.state IN (?) AND b.removed IS NULL)",
			vm.ID, exceptID, bun.In(models.VMSnapshotBusy))
	for k, v := range set {
		q = q.Set("? = ?", bun.Ident(k), v)
	}
	res, err := q.Exec(ctx)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		cur := vm.State
		_ = tx.NewSelect().Model((*models.VMInstance)(nil)).Column("state").Where("id = ?", vm.ID).Scan(ctx, &cur)
		for _, s := range states {
			if s == cur {
				return cserr.Param("Virtual machine %s has a VM snapshot operation in progress; try again when it ends", vm.Name)
			}
		}
		return vmWrongState(vm, cur, states)
	}
	return nil
}

func createVMSnapshot(c *Call) (any, error) {
	vm, _, err := c.vmToChange(c.Str("virtualmachineid"))
	if err != nil {
		return nil, err
	}
	memory, quiesce := c.Bool("snapshotmemory", false), c.Bool("quiescevm", false)
	if err := activities.CheckVMSnapshotCreate(vm, memory); err != nil {
		return nil, err
	}
	if quiesce && vm.HypervisorType != models.HypervisorVMware {
		return nil, cserr.New(cserr.UnsupportedAction, "quiescevm: quiescing the guest is supported on VMware only (libvirt's internal snapshots cannot quiesce)")
	}
	var n int64
	if n, err = c.S.DB.NewSelect().Model((*models.VMSnapshot)(nil)).Where("vm_id = ?", vm.ID).Count(c.Ctx); err != nil {
		return nil, err
	}
	most, err := models.ConfigInt(c.Ctx, c.S.DB, "vmsnapshot.max")
	if err != nil {
		return nil, err
	}
	if n >= most {
		return nil, cserr.Param("Creating vm snapshot failed due to a VM can just have : %d VM snapshots. Please delete old ones (virtual machine %s has %d; vmsnapshot.max)", most, vm.Name, n)
	}
	now := models.Now()
	s := &models.VMSnapshot{UUID: models.NewUUID(), Name: activities.VMSnapshotName(vm.InstanceName, now),
		DisplayName: strings.TrimSpace(c.Str("name")), Description: c.Str("description"), VMID: vm.ID,
		Type: models.VMSnapshotDisk, State: models.VMSnapshotAllocated, Quiesce: quiesce, HypervisorType: vm.HypervisorType,
		ZoneID: vm.ZoneID, AccountID: vm.AccountID, DomainID: vm.DomainID, Created: now}
	if memory {
		s.Type = models.VMSnapshotDiskAndMemory
	}
	if s.DisplayName == "" {
		s.DisplayName = s.Name
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := touchVM(ctx, tx, vm, []string{models.VMRunning, models.VMStopped}, nil, 0); err != nil {
			return err
		}
		_, err := tx.NewInsert().Model(s).Exec(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	in := activities.VMSnapshotInput{SnapshotUUID: s.UUID, Actor: actorOf(c.Caller)}
	resp, err := c.StartJob(JobSpec{Workflow: workflows.CreateVMSnapshot, Input: in, InstanceType: "VMSnapshot", InstanceUUID: s.UUID,
		ResponseID: s.UUID, Summary: "snapshot VM " + vm.Name})
	if err != nil {
		_, _ = c.S.DB.NewDelete().Model(s).WherePK().ForceDelete().Exec(context.WithoutCancel(c.Ctx))
		return nil, err
	}
	return resp, nil
}

func listVMSnapshot(c *Call) (any, error) {
	scope, err := c.Visibility()
	if err != nil {
		return nil, err
	}
	q := c.S.vmSnapshotQuery().Apply(scope.Modifier("vm_snapshot.account_id", "vm_snapshot.domain_id"))
	q = c.Filtered(q, Filter{Keyword: []string{"vm_snapshot.display_name", "vm_snapshot.name", "vm_snapshot.description"}})
	if c.Has("vmsnapshotid") {
		q = q.Where("vm_snapshot.uuid = ?", c.Str("vmsnapshotid"))
	}
	if ids := c.List("vmsnapshotids"); len(ids) > 0 {
		q = q.Where("vm_snapshot.uuid IN (?)", bun.In(ids))
	}
	if c.Has("name") {
		q = q.Where("(vm_snapshot.display_name = ? OR vm_snapshot.name = ?)", c.Str("name"), c.Str("name"))
	}
	if c.Has("virtualmachineid") {
		q = q.Where("vm.uuid = ?", c.Str("virtualmachineid"))
	}
	if c.Has("state") {
		q = q.Where("LOWER(vm_snapshot.state) = ?", strings.ToLower(c.Str("state")))
	}
	for _, t := range c.Map("tags") {
		q = q.Where("vm_snapshot.uuid IN (SELECT resource_uuid FROM resource_tags WHERE resource_type = ? AND tag_key = ? AND tag_value = ?)", "VMSnapshot", t["key"], t["value"])
	}
	var rows []vmSnapshotRow
	total, err := c.ScanPage(q, &rows)
	if err != nil {
		return nil, err
	}
	views, err := c.S.vmSnapshotViews(c.Ctx, rows)
	if err != nil {
		return nil, err
	}
	return List{Key: "vmSnapshot", Count: total, Items: views}, nil
}

func revertToVMSnapshot(c *Call) (any, error) {
	s, err := c.vmSnapshotForUse(c.Str("vmsnapshotid"))
	if err != nil {
		return nil, err
	}
	var vm models.VMInstance
	if err := c.S.DB.NewSelect().Model(&vm).Where("id = ?", s.VMID).Limit(1).Scan(c.Ctx); err != nil {
		return nil, models.NotFound(err, "virtual machine")
	}
	if err := activities.CheckVMSnapshotRevert(&vm, s); err != nil {
		return nil, err
	}
	if vm.State == models.VMStopped && s.Type == models.VMSnapshotDiskAndMemory {
		// It is started first (on the host that holds its snapshots).
		if err := c.vmPoolsUsable(&vm); err != nil {
			return nil, err
		}
	}
	// The VM goes through the transitional state of where it ends: no other
	// job of it starts meanwhile.
	transit := models.VMStopping
	if activities.VMSnapshotRevertState(s) == models.VMRunning {
		transit = models.VMStarting
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := touchVM(ctx, tx, &vm, []string{vm.State}, map[string]any{"state": transit}, 0); err != nil {
			return err
		}
		if err := models.Transition(ctx, tx, (*models.VMSnapshot)(nil), s.ID, models.VMSnapshotReverting, []string{models.VMSnapshotReady}, nil); err != nil {
			return cserr.Param("VM snapshot %s changed meanwhile", s.DisplayName)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	in := workflows.RevertVMSnapshotInput{SnapshotUUID: s.UUID, VMUUID: vm.UUID, PrevState: vm.State, Transit: transit, Actor: actorOf(c.Caller)}
	resp, err := c.StartJob(JobSpec{Workflow: workflows.RevertVMSnapshot, Input: in, InstanceType: "VirtualMachine", InstanceUUID: vm.UUID,
		ResponseID: vm.UUID, Summary: "revert VM " + vm.Name + " to snapshot " + s.DisplayName})
	if err != nil {
		_ = c.S.DB.RunInTx(context.WithoutCancel(c.Ctx), nil, func(ctx context.Context, tx bun.Tx) error {
			if _, err := tx.NewUpdate().Model((*models.VMInstance)(nil)).Set("state = ?", vm.State).Set("update_count = update_count + 1").
				Where("id = ? AND state = ?", vm.ID, transit).Exec(ctx); err != nil {
				return err
			}
			return models.Transition(ctx, tx, (*models.VMSnapshot)(nil), s.ID, models.VMSnapshotReady, []string{models.VMSnapshotReverting}, nil)
		})
		return nil, err
	}
	return resp, nil
}

func deleteVMSnapshot(c *Call) (any, error) {
	s, err := c.vmSnapshotForUse(c.Str("vmsnapshotid"))
	if err != nil {
		return nil, err
	}
	if err := activities.CheckVMSnapshotDelete(s); err != nil {
		return nil, err
	}
	var vm models.VMInstance
	if err := c.S.DB.NewSelect().Model(&vm).Where("id = ?", s.VMID).Limit(1).Scan(c.Ctx); err != nil {
		return nil, models.NotFound(err, "virtual machine")
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := touchVM(ctx, tx, &vm, []string{models.VMRunning, models.VMStopped}, nil, s.ID); err != nil {
			return err
		}
		from := []string{models.VMSnapshotReady, models.VMSnapshotError, models.VMSnapshotExpunging}
		if err := models.Transition(ctx, tx, (*models.VMSnapshot)(nil), s.ID, models.VMSnapshotExpunging, from, nil); err != nil {
			return cserr.Param("VM snapshot %s changed meanwhile", s.DisplayName)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	in := activities.VMSnapshotInput{SnapshotUUID: s.UUID, Actor: actorOf(c.Caller)}
	return c.StartJob(JobSpec{Workflow: workflows.DeleteVMSnapshot, Input: in, InstanceType: "VMSnapshot", InstanceUUID: s.UUID,
		Summary: "delete VM snapshot " + s.DisplayName})
}
