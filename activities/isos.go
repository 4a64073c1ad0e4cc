package activities

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/uptrace/bun"
	"go.temporal.io/sdk/temporal"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/models"
)

// An ISO reaches a VM as templates do: copied once to the primary pool of
// the VM's root volume (a template_pool_refs row), then put in the VM's
// CD-ROM drive from there, so the host reads it from storage it mounts,
// never from secondary storage.

// vmRootPool is the pool of the VM's root volume, 0 when not placed.
func vmRootPool(ctx context.Context, db bun.IDB, vm *models.VMInstance) (int64, error) {
	var poolID int64
	err := db.NewSelect().Model((*models.Volume)(nil)).Column("pool_id").
		Where("instance_id = ? AND volume_type = ? AND pool_id IS NOT NULL", vm.ID, models.VolumeRoot).
		Where("state NOT IN (?)", bun.In([]string{models.VolumeDestroy, models.VolumeExpunging, models.VolumeExpunged})).
		Order("id").Limit(1).Scan(ctx, &poolID)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return poolID, err
}

// poolHasImage tells whether a template or ISO is copied to a pool.
func poolHasImage(ctx context.Context, db bun.IDB, poolID, templateID int64) (bool, error) {
	return db.NewSelect().Model((*models.TemplatePoolRef)(nil)).
		Where("pool_id = ? AND template_id = ? AND download_state = ? AND install_path <> ''", poolID, templateID, models.DownloadDownloaded).Exists(ctx)
}

// vmISODisk is the VM's CD-ROM drive holding its ISO's copy on the root
// volume's pool; its Path is "" while the ISO is not copied there.
func (a *VMs) vmISODisk(ctx context.Context, vm *models.VMInstance) (hypervisor.Disk, error) {
	cd := hypervisor.Disk{CDROM: true, ReadOnly: true, Format: "raw"}
	poolID, err := vmRootPool(ctx, a.DB, vm)
	if err != nil || poolID == 0 || vm.ISOID == 0 {
		return cd, err
	}
	var ref models.TemplatePoolRef
	err = a.DB.NewSelect().Model(&ref).Where("pool_id = ? AND template_id = ? AND download_state = ? AND install_path <> ''",
		poolID, vm.ISOID, models.DownloadDownloaded).Limit(1).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return cd, nil
	}
	if err != nil {
		return cd, err
	}
	if cd.Pool, err = uuidOf(ctx, a.DB, "storage_pools", poolID); err != nil {
		return cd, err
	}
	cd.Path = ref.InstallPath
	return cd, nil
}

// VMCopyISO makes sure the VM's ISO is on the pool of its root volume,
// copying it from secondary storage once. A VM without an ISO, or whose
// root volume has no pool yet, is success.
func (a *VMs) VMCopyISO(ctx context.Context, in VMRefInput) error {
	vm, err := mustVM(ctx, a.DB, in.VMUUID)
	if err != nil || vm.ISOID == 0 {
		return err
	}
	poolID, err := vmRootPool(ctx, a.DB, vm)
	if err != nil || poolID == 0 {
		return err
	}
	return a.copyImageToPool(ctx, vm, poolID, vm.ISOID)
}

// VMISOInput names a VM and an ISO (attachIso, detachIso).
type VMISOInput struct {
	VMUUID  string
	ISOUUID string // "" in detachIso: whichever is attached
	Actor   Actor
	Undo    bool // the undo of a failed attach: no event
}

// VMISOState is what VMISORecord found: whether the VM runs on a host
// (then its drive is changed live).
type VMISOState struct {
	Running bool
}

// vmISOBusy is a VM between states: the step is retried until it settles.
func vmISOBusy(vm *models.VMInstance) error {
	return temporal.NewApplicationError(fmt.Sprintf("virtual machine %s is %s; the ISO waits until it settles", vm.Name, vm.State), "VMBusy")
}

// VMISORecord records the ISO as attached to the VM (Running or Stopped,
// without another ISO), with an ISO.ATTACH event. The same ISO attached
// already is success (a retry).
func (a *VMs) VMISORecord(ctx context.Context, in VMISOInput) (VMISOState, error) {
	var out VMISOState
	err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		vm, err := mustVM(ctx, tx, in.VMUUID)
		if err != nil {
			return err
		}
		var iso models.Template
		if err := tx.NewSelect().Model(&iso).Where("uuid = ? AND format = ?", in.ISOUUID, models.FormatISO).Limit(1).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fail(cserr.ParamError, "Unable to find ISO %s", in.ISOUUID)
			}
			return err
		}
		out.Running = vm.State == models.VMRunning && vm.HostID != 0
		if vm.ISOID == iso.ID {
			return nil
		}
		if vm.ISOID != 0 {
			return fail(cserr.ParamError, "Virtual machine %s already has an ISO attached; detach it first", vm.Name)
		}
		res, err := tx.NewUpdate().Model((*models.VMInstance)(nil)).Set("iso_id = ?", iso.ID).
			Set("update_count = update_count + 1").Set("update_time = ?", models.Now()).
			Where("id = ? AND iso_id IS NULL AND state IN (?)", vm.ID, bun.In([]string{models.VMRunning, models.VMStopped})).Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return vmStateFail(vm, models.VMRunning, models.VMStopped)
		}
		return vmEvent(ctx, tx, in.Actor, vm, "ISO.ATTACH", "INFO", "ISO "+iso.Name+" attached to VM "+vm.Name)
	})
	return out, err
}

// VMISOForget records the VM without an ISO (only when it holds
// in.ISOUUID, when given), with an ISO.DETACH event unless it undoes an
// attach. No ISO attached is success.
func (a *VMs) VMISOForget(ctx context.Context, in VMISOInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		vm, err := vmByUUID(ctx, tx, in.VMUUID)
		if errors.Is(err, models.ErrNotFound) {
			return nil
		}
		if err != nil || vm.ISOID == 0 {
			return err
		}
		var iso models.Template
		if err := tx.NewSelect().Model(&iso).Where("id = ?", vm.ISOID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
			return err
		}
		if in.ISOUUID != "" && iso.UUID != in.ISOUUID {
			return nil
		}
		if _, err := tx.NewUpdate().Model((*models.VMInstance)(nil)).Set("iso_id = NULL").
			Set("update_count = update_count + 1").Set("update_time = ?", models.Now()).
			Where("id = ? AND iso_id = ?", vm.ID, iso.ID).Exec(ctx); err != nil {
			return err
		}
		if in.Undo {
			return nil
		}
		return vmEvent(ctx, tx, in.Actor, vm, "ISO.DETACH", "INFO", "ISO "+iso.Name+" detached from VM "+vm.Name)
	})
}

// VMISOInsert puts the VM's recorded ISO (its copy on the root volume's
// pool, VMCopyISO) into its CD-ROM drive on the host it runs on. A VM that
// is stopped, or has no ISO, is success: its next start defines the drive
// with it.
func (a *VMs) VMISOInsert(ctx context.Context, in VMRefInput) error {
	return a.vmMedia(ctx, in, true)
}

// VMISOEject empties the CD-ROM drive of the VM on the host it runs on;
// a stopped VM is success.
func (a *VMs) VMISOEject(ctx context.Context, in VMRefInput) error {
	return a.vmMedia(ctx, in, false)
}

func (a *VMs) vmMedia(ctx context.Context, in VMRefInput, insert bool) error {
	vm, err := mustVM(ctx, a.DB, in.VMUUID)
	if err != nil {
		return err
	}
	switch vm.State {
	case models.VMRunning:
	case models.VMStarting, models.VMStopping, models.VMMigrating:
		return vmISOBusy(vm)
	default:
		return nil
	}
	if vm.HostID == 0 || (insert && vm.ISOID == 0) {
		return nil
	}
	cd := hypervisor.Disk{CDROM: true, ReadOnly: true}
	if insert {
		if cd, err = a.vmISODisk(ctx, vm); err != nil {
			return err
		}
		if cd.Path == "" {
			return fail(cserr.InternalError, "the ISO of virtual machine %s is not on its primary storage", vm.Name)
		}
	}
	_, h, drv, err := a.vmHost(ctx, vm.HostID)
	if err != nil {
		return err
	}
	_, err = callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, drv.ChangeMedia(ctx, h, hypervisor.VMRef{Name: vm.InstanceName, UUID: vm.UUID}, cd)
	})
	return driverFailure(err)
}

// VMISODeletePoolCopies deletes a deleted ISO's copies on the primary
// pools of the zones (or all), as deleteIso removes its files from
// secondary storage. A copy that the root volume of a VM still holding
// the ISO sits beside (deleteIso with forced=true) stays, as do copies on
// pools removed since (their volumes went with them). A copy gone already
// is success.
func (a *VMs) VMISODeletePoolCopies(ctx context.Context, in TemplateZonesInput) error {
	var refs []models.TemplatePoolRef
	q := a.DB.NewSelect().Model(&refs).Where("?TableAlias.template_id = ?", in.TemplateID)
	if len(in.ZoneIDs) > 0 {
		q = q.Join("JOIN storage_pools AS p ON p.id = ?TableAlias.pool_id").Where("p.zone_id IN (?)", bun.In(in.ZoneIDs))
	}
	if err := q.Scan(ctx); err != nil {
		return err
	}
	for _, ref := range refs {
		used, err := a.DB.NewSelect().Model((*models.Volume)(nil)).
			Join("JOIN vm_instances AS vm ON vm.id = ?TableAlias.instance_id").
			Where("vm.iso_id = ? AND vm.removed IS NULL AND ?TableAlias.pool_id = ? AND ?TableAlias.volume_type = ?", in.TemplateID, ref.PoolID, models.VolumeRoot).
			Where("?TableAlias.state NOT IN (?)", bun.In([]string{models.VolumeDestroy, models.VolumeExpunging, models.VolumeExpunged})).Exists(ctx)
		if err != nil {
			return err
		}
		if used {
			continue
		}
		if ref.InstallPath != "" {
			p, pd, drv, err := a.vmPool(ctx, ref.PoolID)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			if err == nil && p.Removed.IsZero() {
				_, err = callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) {
					return struct{}{}, drv.DeleteVolume(ctx, pd, ref.InstallPath)
				})
				if err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
					return driverFailure(err)
				}
			}
		}
		if _, err := a.DB.NewDelete().Model((*models.TemplatePoolRef)(nil)).Where("id = ?", ref.ID).Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}
