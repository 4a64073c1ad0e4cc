package activities

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

// Affinity holds the steps of the affinity group jobs.
type Affinity struct{ Deps }

// AffinityGroupCreateInput is a createAffinityGroup job; the API checked the
// owner, the type and the name.
type AffinityGroupCreateInput struct {
	UUID        string
	Name        string
	Type        string
	Description string
	AccountID   int64
	DomainID    int64
	Actor       Actor
}

// AffinityGroupCreate inserts the group unless it is there already (a
// retried step); a group of the same name in the account is a 431.
func (a *Affinity) AffinityGroupCreate(ctx context.Context, in AffinityGroupCreateInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if ok, err := tx.NewSelect().Model((*models.AffinityGroup)(nil)).Where("uuid = ?", in.UUID).Exists(ctx); err != nil || ok {
			return err
		}
		if ok, err := tx.NewSelect().Model((*models.AffinityGroup)(nil)).
			Where("account_id = ? AND name = ?", in.AccountID, in.Name).Exists(ctx); err != nil {
			return err
		} else if ok {
			return fail(cserr.ParamError, "Unable to create affinity group, a group with name %s already exists", in.Name)
		}
		g := &models.AffinityGroup{
			UUID: in.UUID, Name: in.Name, Type: in.Type, Description: in.Description, ACLType: "Account",
			AccountID: in.AccountID, DomainID: in.DomainID, Created: models.Now(),
		}
		if _, err := tx.NewInsert().Model(g).Exec(ctx); err != nil {
			return err
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "AG.CREATE", ResourceType: "AffinityGroup", ResourceUUID: in.UUID,
			Description: "Created affinity group " + in.Name + " (" + in.Type + ")",
		}))
	})
}

// AffinityGroupDeleteInput is a deleteAffinityGroup job.
type AffinityGroupDeleteInput struct {
	GroupUUID string
	Actor     Actor
}

// liveGroupVMs counts the VMs of a group that still exist.
func liveGroupVMs(ctx context.Context, db bun.IDB, groupID int64) (int64, error) {
	return db.NewSelect().TableExpr("affinity_group_vm_map AS m").
		Join("JOIN vm_instances AS v ON v.id = m.instance_id").
		Where("m.affinity_group_id = ? AND v.removed IS NULL", groupID).
		Where("v.state NOT IN (?)", bun.In([]string{models.VMExpunging})).Count(ctx)
}

// AffinityGroupDelete removes a group that holds no VM (536 otherwise); a
// group already gone is success.
func (a *Affinity) AffinityGroupDelete(ctx context.Context, in AffinityGroupDeleteInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var g models.AffinityGroup
		err := tx.NewSelect().Model(&g).Where("uuid = ?", in.GroupUUID).Limit(1).Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		n, err := liveGroupVMs(ctx, tx, g.ID)
		if err != nil {
			return err
		}
		if n > 0 {
			return fail(cserr.ResourceInUse, "Affinity group %s holds %d VM(s); remove them from it first (updateVMAffinityGroup)", g.Name, n)
		}
		if _, err := tx.NewDelete().Model((*models.AffinityGroupVMMap)(nil)).Where("affinity_group_id = ?", g.ID).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model((*models.AffinityGroup)(nil)).Where("id = ?", g.ID).Exec(ctx); err != nil {
			return err
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "AG.DELETE", ResourceType: "AffinityGroup", ResourceUUID: g.UUID,
			Description: "Deleted affinity group " + g.Name,
		}))
	})
}

// AffinityGroupSetVMInput is an updateVMAffinityGroup job: the VM's new
// groups (none clears them).
type AffinityGroupSetVMInput struct {
	VMUUID   string
	GroupIDs []int64
	Actor    Actor
}

// AffinityGroupSetVM replaces a stopped VM's affinity groups. The VM's row
// is locked (MySQL) so that a start waits for the new groups; a VM that is
// no longer stopped is a 431.
func (a *Affinity) AffinityGroupSetVM(ctx context.Context, in AffinityGroupSetVMInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var vm models.VMInstance
		q := tx.NewSelect().Model(&vm).Where("uuid = ? AND type = ?", in.VMUUID, models.VMTypeUser).Limit(1)
		if tx.Dialect().Name() != dialect.SQLite {
			q = q.For("UPDATE")
		}
		err := q.Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) {
			return fail(cserr.ParamError, "Unable to find virtual machine by id %s", in.VMUUID)
		}
		if err != nil {
			return err
		}
		if vm.State != models.VMStopped {
			return fail(cserr.ParamError, "Virtual machine %s must be Stopped to change its affinity groups; it is %s", vm.Name, vm.State)
		}
		var groups []models.AffinityGroup
		if len(in.GroupIDs) > 0 {
			if err := tx.NewSelect().Model(&groups).Where("id IN (?)", bun.In(in.GroupIDs)).Order("id").Scan(ctx); err != nil {
				return err
			}
		}
		if len(groups) != len(in.GroupIDs) {
			return fail(cserr.ParamError, "An affinity group of virtual machine %s was deleted meanwhile", vm.Name)
		}
		var names []string
		for _, g := range groups {
			if g.AccountID != vm.AccountID {
				return fail(cserr.ParamError, "Affinity group %s does not belong to the account of virtual machine %s", g.Name, vm.Name)
			}
			names = append(names, g.Name)
		}
		if _, err := tx.NewDelete().Model((*models.AffinityGroupVMMap)(nil)).Where("instance_id = ?", vm.ID).Exec(ctx); err != nil {
			return err
		}
		for _, g := range groups {
			if _, err := tx.NewInsert().Model(&models.AffinityGroupVMMap{AffinityGroupID: g.ID, InstanceID: vm.ID}).Exec(ctx); err != nil {
				return err
			}
		}
		desc := "Virtual machine " + vm.Name + " is in no affinity group"
		if len(names) > 0 {
			desc = "Virtual machine " + vm.Name + " is in affinity groups " + strings.Join(names, ", ")
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "VM.AG.UPDATE", ResourceType: "VirtualMachine", ResourceUUID: vm.UUID, Description: desc,
		}))
	})
}
