package activities

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/uptrace/bun"
	"go.temporal.io/sdk/activity"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/models"
)

// VMSnapshots holds the steps of the VM snapshot jobs (createVMSnapshot,
// revertToVMSnapshot, deleteVMSnapshot). A VM snapshot lives with the VM
// on the hypervisor, so a VM that has any stays defined on its host while
// Stopped (VMStopOnHost keeps it, VMPlace starts it there again) instead of
// being undefined as stopped VMs otherwise are; the first snapshot of a
// Stopped VM defines it again on its last host, and deleting the last one
// of a Stopped VM undefines it.
type VMSnapshots struct{ Deps }

// VMSnapshotInput names the VM snapshot a step acts on.
type VMSnapshotInput struct {
	SnapshotUUID string
	Actor        Actor
}

// CheckVMSnapshotCreate applies CloudStack's rules to a new VM snapshot of
// vm: the VM is Running or Stopped (no job of its own in flight), memory
// only for a Running VM, and a hypervisor that keeps VM snapshots.
func CheckVMSnapshotCreate(vm *models.VMInstance, memory bool) error {
	switch vm.State {
	case models.VMRunning, models.VMStopped:
	default:
		return cserr.Param("Virtual machine %s is %s: a VM snapshot needs it Running or Stopped", vm.Name, vm.State)
	}
	if memory && vm.State != models.VMRunning {
		return cserr.Param("Virtual machine %s is %s: a snapshot with memory (snapshotmemory=true) needs it Running", vm.Name, vm.State)
	}
	switch vm.HypervisorType {
	case models.HypervisorBareMetal:
		return cserr.New(cserr.UnsupportedAction, "VM snapshots are not supported on %s", vm.HypervisorType)
	}
	if vm.State == models.VMStopped && vm.HostID == 0 && vm.LastHostID == 0 {
		return cserr.Param("Virtual machine %s has never run on a host: start it once before taking a VM snapshot", vm.Name)
	}
	return nil
}

// CheckVMSnapshotRevert applies CloudStack's rules to reverting vm to s:
// the snapshot is Ready and the VM Running or Stopped. A snapshot with
// memory leaves it Running (a Stopped VM is started first).
func CheckVMSnapshotRevert(vm *models.VMInstance, s *models.VMSnapshot) error {
	if s.State != models.VMSnapshotReady {
		return cserr.Param("VM snapshot %s is %s: only a Ready VM snapshot can be reverted to", s.DisplayName, s.State)
	}
	switch vm.State {
	case models.VMRunning, models.VMStopped:
	default:
		return cserr.Param("Virtual machine %s is %s: reverting needs it Running or Stopped", vm.Name, vm.State)
	}
	return nil
}

// CheckVMSnapshotDelete tells whether s may be deleted: Ready, Error, or
// Expunging (a delete that failed part-way is resumed).
func CheckVMSnapshotDelete(s *models.VMSnapshot) error {
	switch s.State {
	case models.VMSnapshotReady, models.VMSnapshotError, models.VMSnapshotExpunging:
		return nil
	}
	return cserr.Param("VM snapshot %s is %s: it can be deleted when Ready or Error", s.DisplayName, s.State)
}

// VMSnapshotRevertState is the VM state a revert ends in.
func VMSnapshotRevertState(s *models.VMSnapshot) string {
	if s.Type == models.VMSnapshotDiskAndMemory {
		return models.VMRunning
	}
	return models.VMStopped
}

// VMSnapshotName is CloudStack's internal name of a VM snapshot.
func VMSnapshotName(instanceName string, t time.Time) string {
	return instanceName + "_VS_" + t.UTC().Format("20060102150405")
}

// VMHasSnapshots tells whether a VM has VM snapshots that are not on their
// way out: it keeps its definition on its host while Stopped, and its
// volumes are not changed under them.
func VMHasSnapshots(ctx context.Context, db bun.IDB, vmID int64) (bool, error) {
	return db.NewSelect().Model((*models.VMSnapshot)(nil)).
		Where("vm_id = ? AND state IN (?)", vmID, bun.In(models.VMSnapshotLive)).Exists(ctx)
}

// VMSnapshotsBlockMigration tells whether a VM of this hypervisor cannot
// be migrated while it has VM snapshots: libvirt refuses to migrate a
// domain with (internal) snapshots; vMotion takes them along. The one rule
// of migrateVirtualMachine and prepareHostForMaintenance.
func VMSnapshotsBlockMigration(hypervisorType string) bool {
	return hypervisorType != models.HypervisorVMware
}

// VMSnapshotBusy tells whether a VM snapshot job of the VM runs (its
// snapshot Allocated, Creating, Reverting or Expunging).
func VMSnapshotBusy(ctx context.Context, db bun.IDB, vmID int64) (bool, error) {
	return db.NewSelect().Model((*models.VMSnapshot)(nil)).
		Where("vm_id = ? AND state IN (?)", vmID, bun.In(models.VMSnapshotBusy)).Exists(ctx)
}

func vmSnapByUUID(ctx context.Context, db bun.IDB, id string, withRemoved bool) (*models.VMSnapshot, error) {
	var s models.VMSnapshot
	q := db.NewSelect().Model(&s).Where("uuid = ?", id).Limit(1)
	if withRemoved {
		q = q.WhereAllWithDeleted()
	}
	if err := q.Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fail(cserr.ParamError, "VM snapshot %s was removed meanwhile", id)
		}
		return nil, err
	}
	return &s, nil
}

// vmSnapEvent records an event about a VM snapshot.
func vmSnapEvent(ctx context.Context, tx bun.IDB, actor Actor, s *models.VMSnapshot, typ, level, text string) error {
	return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{Actor: actor, Type: typ, Level: level,
		ResourceType: "VMSnapshot", ResourceUUID: s.UUID, Description: text}))
}

// snapTarget loads the snapshot's VM and the host the VM is defined on:
// its host while it runs, its last host while Stopped. host is zero when
// the VM is defined nowhere.
func (a *VMSnapshots) snapTarget(ctx context.Context, s *models.VMSnapshot) (*models.VMInstance, int64, error) {
	var vm models.VMInstance
	if err := a.DB.NewSelect().Model(&vm).Where("id = ?", s.VMID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		return nil, 0, err
	}
	host := vm.HostID
	if host == 0 {
		host = vm.LastHostID
	}
	return &vm, host, nil
}

func (a *VMSnapshots) driverOf(ctx context.Context, hostID int64) (hypervisor.Host, hypervisor.Driver, error) {
	_, h, drv, err := (&VMs{Deps: a.Deps}).vmHost(ctx, hostID)
	return h, drv, err
}

// VMSnapshotBeginResult says whether the snapshot is made already.
type VMSnapshotBeginResult struct {
	Done bool
}

// VMSnapshotBegin moves an Allocated snapshot to Creating after checking
// its VM again (it may have changed since the API looked). Ready already
// (a rerun) is Done.
func (a *VMSnapshots) VMSnapshotBegin(ctx context.Context, in VMSnapshotInput) (VMSnapshotBeginResult, error) {
	var out VMSnapshotBeginResult
	err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		s, err := vmSnapByUUID(ctx, tx, in.SnapshotUUID, false)
		if err != nil {
			return err
		}
		switch s.State {
		case models.VMSnapshotReady:
			out.Done = true
			return nil
		case models.VMSnapshotCreating:
			return nil
		case models.VMSnapshotAllocated:
		default:
			return fail(cserr.ParamError, "VM snapshot %s is %s", s.DisplayName, s.State)
		}
		vm, err := mustVM(ctx, tx, vmUUIDOf(ctx, tx, s.VMID))
		if err != nil {
			return err
		}
		if err := CheckVMSnapshotCreate(vm, s.Type == models.VMSnapshotDiskAndMemory); err != nil {
			return cserr.Temporal(err)
		}
		return models.Transition(ctx, tx, (*models.VMSnapshot)(nil), s.ID, models.VMSnapshotCreating,
			[]string{models.VMSnapshotAllocated}, map[string]any{"updated": models.Now()})
	})
	return out, err
}

func vmUUIDOf(ctx context.Context, db bun.IDB, vmID int64) string {
	var id string
	_ = db.NewSelect().Model((*models.VMInstance)(nil)).Column("uuid").Where("id = ?", vmID).WhereAllWithDeleted().Limit(1).Scan(ctx, &id)
	return id
}

// VMSnapshotTake takes the snapshot on the host the VM is defined on. A
// Stopped VM without snapshots is defined nowhere: it is defined again on
// its last host first (it stays there while it has snapshots). The
// driver finds a snapshot an earlier attempt made by its name.
func (a *VMSnapshots) VMSnapshotTake(ctx context.Context, in VMSnapshotInput) error {
	s, err := vmSnapByUUID(ctx, a.DB, in.SnapshotUUID, false)
	if err != nil {
		return err
	}
	if s.State != models.VMSnapshotCreating {
		return fail(cserr.ParamError, "VM snapshot %s is %s, not Creating", s.DisplayName, s.State)
	}
	vm, hostID, err := a.snapTarget(ctx, s)
	if err != nil {
		return err
	}
	if hostID == 0 {
		return fail(cserr.ParamError, "virtual machine %s is on no host", vm.Name)
	}
	h, drv, err := a.driverOf(ctx, hostID)
	if errors.Is(err, errVMHostGone) {
		return fail(cserr.ParamError, "the last host of virtual machine %s was removed: start it elsewhere first", vm.Name)
	}
	if err != nil {
		return err
	}
	// Where it is taken is recorded before, so an undo knows where to look.
	if _, err := a.DB.NewUpdate().Model((*models.VMSnapshot)(nil)).Set("host_id = ?", hostID).Where("id = ?", s.ID).Exec(ctx); err != nil {
		return err
	}
	ref := hypervisor.VMRef{Name: vm.InstanceName, UUID: vm.UUID}
	var spec hypervisor.VMSpec
	if vm.HostID == 0 {
		if spec, err = (&VMs{Deps: a.Deps}).vmSpec(ctx, vm); err != nil {
			return err
		}
	}
	_, err = callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) {
		if vm.HostID == 0 {
			if _, err := drv.DefineVM(ctx, h, spec); err != nil {
				return struct{}{}, err
			}
		}
		_, err := drv.CreateVMSnapshot(ctx, h, ref, hypervisor.VMSnapshotSpec{Name: s.UUID, DisplayName: s.DisplayName,
			Description: s.Description, Memory: s.Type == models.VMSnapshotDiskAndMemory, Quiesce: s.Quiesce})
		return struct{}{}, err
	})
	return vmSnapDriverFailure(err)
}

// vmSnapDriverFailure maps a driver error; what the hypervisor cannot do
// reads as CloudStack's unsupported action (530 is kept for the rest).
func vmSnapDriverFailure(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, hypervisor.ErrNotSupported) {
		return fail(cserr.UnsupportedAction, "%s", err.Error())
	}
	if errors.Is(err, hypervisor.ErrInvalid) {
		return fail(cserr.ParamError, "%s", err.Error())
	}
	return driverFailure(err)
}

// VMSnapshotFinish marks a Creating snapshot Ready and the VM's current
// one, a child of the snapshot that was current.
func (a *VMSnapshots) VMSnapshotFinish(ctx context.Context, in VMSnapshotInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		s, err := vmSnapByUUID(ctx, tx, in.SnapshotUUID, false)
		if err != nil {
			return err
		}
		if s.State == models.VMSnapshotReady {
			return nil
		}
		var parent int64
		err = tx.NewSelect().Model((*models.VMSnapshot)(nil)).Column("id").
			Where("vm_id = ? AND current = ? AND id <> ?", s.VMID, true, s.ID).Limit(1).Scan(ctx, &parent)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if _, err := tx.NewUpdate().Model((*models.VMSnapshot)(nil)).Set("current = ?", false).
			Where("vm_id = ? AND id <> ?", s.VMID, s.ID).Exec(ctx); err != nil {
			return err
		}
		if err := models.Transition(ctx, tx, (*models.VMSnapshot)(nil), s.ID, models.VMSnapshotReady,
			[]string{models.VMSnapshotCreating}, map[string]any{"current": true, "parent_id": nullID(parent), "updated": models.Now(), "state_reason": ""}); err != nil {
			return fail(cserr.ParamError, "VM snapshot %s changed meanwhile", s.DisplayName)
		}
		return vmSnapEvent(ctx, tx, in.Actor, s, "VMSNAPSHOT.CREATE", "INFO", "Created VM snapshot "+s.DisplayName)
	})
}

// VMSnapshotFailInput ends a failed createVMSnapshot.
type VMSnapshotFailInput struct {
	SnapshotUUID string
	Reason       string
	Actor        Actor
}

// VMSnapshotUndo removes what a failed create made on the host (and the
// definition of a Stopped VM left without snapshots), then marks the
// snapshot Error and removes it: a failed snapshot leaves nothing behind.
func (a *VMSnapshots) VMSnapshotUndo(ctx context.Context, in VMSnapshotFailInput) error {
	s, err := vmSnapByUUID(ctx, a.DB, in.SnapshotUUID, true)
	if err != nil || !s.Removed.IsZero() {
		return err
	}
	if s.HostID != 0 {
		if err := a.deleteOnHost(ctx, s); err != nil {
			return err
		}
	}
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		now := models.Now()
		if _, err := tx.NewUpdate().Model((*models.VMSnapshot)(nil)).Set("state = ?", models.VMSnapshotError).
			Set("state_reason = ?", clipReason(in.Reason)).Set("current = ?", false).Set("updated = ?", now).Set("removed = ?", now).
			Where("id = ?", s.ID).WhereAllWithDeleted().Exec(ctx); err != nil {
			return err
		}
		return vmSnapEvent(ctx, tx, in.Actor, s, "VMSNAPSHOT.CREATE", "ERROR", "Creating VM snapshot "+s.DisplayName+" failed: "+in.Reason)
	})
}

func clipReason(s string) string {
	if len(s) > 1000 {
		return s[:1000]
	}
	return s
}

// deleteOnHost deletes s on the host its VM is defined on; a VM or
// snapshot no longer there is success. A Stopped VM left without
// snapshots is undefined there, as stopped VMs are.
func (a *VMSnapshots) deleteOnHost(ctx context.Context, s *models.VMSnapshot) error {
	vm, hostID, err := a.snapTarget(ctx, s)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	}
	if hostID == 0 || !vm.Removed.IsZero() {
		return nil
	}
	h, drv, err := a.driverOf(ctx, hostID)
	if errors.Is(err, errVMHostGone) {
		return nil
	}
	if err != nil {
		return err
	}
	others, err := a.DB.NewSelect().Model((*models.VMSnapshot)(nil)).
		Where("vm_id = ? AND id <> ? AND state IN (?)", vm.ID, s.ID, bun.In(models.VMSnapshotLive)).Exists(ctx)
	if err != nil {
		return err
	}
	undefine := !others && vm.HostID == 0 && vm.State == models.VMStopped
	ref := hypervisor.VMRef{Name: vm.InstanceName, UUID: vm.UUID}
	_, err = callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) {
		if err := drv.DeleteVMSnapshot(ctx, h, ref, s.UUID); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
			return struct{}{}, err
		}
		if undefine {
			if err := drv.DestroyVM(ctx, h, ref); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
				return struct{}{}, err
			}
		}
		return struct{}{}, nil
	})
	return vmSnapDriverFailure(err)
}

// VMSnapshotRevertOnHost reverts the VM to the snapshot on its host and
// answers the VM's power state after (Running or Stopped).
func (a *VMSnapshots) VMSnapshotRevertOnHost(ctx context.Context, in VMSnapshotInput) (string, error) {
	s, err := vmSnapByUUID(ctx, a.DB, in.SnapshotUUID, false)
	if err != nil {
		return "", err
	}
	if s.State != models.VMSnapshotReverting {
		return "", fail(cserr.ParamError, "VM snapshot %s is %s, not Reverting", s.DisplayName, s.State)
	}
	vm, hostID, err := a.snapTarget(ctx, s)
	if err != nil {
		return "", err
	}
	if hostID == 0 {
		return "", fail(cserr.ParamError, "virtual machine %s is on no host", vm.Name)
	}
	h, drv, err := a.driverOf(ctx, hostID)
	if errors.Is(err, errVMHostGone) {
		return "", fail(cserr.ParamError, "the host of virtual machine %s was removed with its VM snapshots", vm.Name)
	}
	if err != nil {
		return "", err
	}
	st, err := callHeartbeating(ctx, func(ctx context.Context) (hypervisor.State, error) {
		return drv.RevertVMSnapshot(ctx, h, hypervisor.VMRef{Name: vm.InstanceName, UUID: vm.UUID},
			hypervisor.VMSnapshotSpec{Name: s.UUID, DisplayName: s.DisplayName, Memory: s.Type == models.VMSnapshotDiskAndMemory})
	})
	if err != nil {
		return "", vmSnapDriverFailure(err)
	}
	return string(st), nil
}

// VMSnapshotRevertFinishInput ends a revert.
type VMSnapshotRevertFinishInput struct {
	SnapshotUUID string
	Failed       bool
	Reason       string
	Actor        Actor
}

// VMSnapshotRevertFinish makes the snapshot Ready again; a successful
// revert makes it the VM's current snapshot.
func (a *VMSnapshots) VMSnapshotRevertFinish(ctx context.Context, in VMSnapshotRevertFinishInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		s, err := vmSnapByUUID(ctx, tx, in.SnapshotUUID, false)
		if err != nil {
			return err
		}
		if s.State != models.VMSnapshotReverting {
			return nil
		}
		set := map[string]any{"updated": models.Now(), "state_reason": clipReason(in.Reason)}
		if !in.Failed {
			if _, err := tx.NewUpdate().Model((*models.VMSnapshot)(nil)).Set("current = ?", false).
				Where("vm_id = ? AND id <> ?", s.VMID, s.ID).Exec(ctx); err != nil {
				return err
			}
			set["current"] = true
		}
		if err := models.Transition(ctx, tx, (*models.VMSnapshot)(nil), s.ID, models.VMSnapshotReady,
			[]string{models.VMSnapshotReverting}, set); err != nil {
			return err
		}
		level, text := "INFO", "Reverted to VM snapshot "+s.DisplayName
		if in.Failed {
			level, text = "ERROR", text+" failed: "+in.Reason
		}
		return vmSnapEvent(ctx, tx, in.Actor, s, "VMSNAPSHOT.REVERTTO", level, text)
	})
}

// VMSnapshotDeleteOnHost deletes an Expunging snapshot on the VM's host.
func (a *VMSnapshots) VMSnapshotDeleteOnHost(ctx context.Context, in VMSnapshotInput) error {
	s, err := vmSnapByUUID(ctx, a.DB, in.SnapshotUUID, true)
	if err != nil || !s.Removed.IsZero() {
		return err
	}
	if s.State != models.VMSnapshotExpunging {
		return fail(cserr.ParamError, "VM snapshot %s is %s, not Expunging", s.DisplayName, s.State)
	}
	return a.deleteOnHost(ctx, s)
}

// VMSnapshotDeleteFailed moves an Expunging snapshot whose delete failed
// to Error with the reason.
func (a *VMSnapshots) VMSnapshotDeleteFailed(ctx context.Context, in VMSnapshotFailInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		s, err := vmSnapByUUID(ctx, tx, in.SnapshotUUID, true)
		if err != nil || !s.Removed.IsZero() || s.State != models.VMSnapshotExpunging {
			return err
		}
		if err := models.Transition(ctx, tx, (*models.VMSnapshot)(nil), s.ID, models.VMSnapshotError, []string{models.VMSnapshotExpunging},
			map[string]any{"state_reason": clipReason(in.Reason), "updated": models.Now()}); err != nil {
			return err
		}
		return vmSnapEvent(ctx, tx, in.Actor, s, "VMSNAPSHOT.DELETE", "ERROR", "Deleting VM snapshot "+s.DisplayName+" failed: "+in.Reason)
	})
}

// VMSnapshotDeleteFinish removes an Expunging snapshot from the tree: its
// children hang from its parent, which becomes current when it was.
func (a *VMSnapshots) VMSnapshotDeleteFinish(ctx context.Context, in VMSnapshotInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		s, err := vmSnapByUUID(ctx, tx, in.SnapshotUUID, true)
		if err != nil || !s.Removed.IsZero() {
			return err
		}
		if err := removeVMSnapshot(ctx, tx, s); err != nil {
			return err
		}
		return vmSnapEvent(ctx, tx, in.Actor, s, "VMSNAPSHOT.DELETE", "INFO", "Deleted VM snapshot "+s.DisplayName)
	})
}

func removeVMSnapshot(ctx context.Context, tx bun.IDB, s *models.VMSnapshot) error {
	if _, err := tx.NewUpdate().Model((*models.VMSnapshot)(nil)).Set("parent_id = ?", nullID(s.ParentID)).
		Where("parent_id = ?", s.ID).Exec(ctx); err != nil {
		return err
	}
	if s.Current && s.ParentID != 0 {
		if _, err := tx.NewUpdate().Model((*models.VMSnapshot)(nil)).Set("current = ?", true).Where("id = ?", s.ParentID).Exec(ctx); err != nil {
			return err
		}
	}
	now := models.Now()
	_, err := tx.NewUpdate().Model((*models.VMSnapshot)(nil)).Set("state = ?", models.VMSnapshotExpunging).Set("current = ?", false).
		Set("updated = ?", now).Set("removed = ?", now).Where("id = ?", s.ID).WhereAllWithDeleted().Exec(ctx)
	return err
}

// removeVMSnapshotsOf removes every VM snapshot of a destroyed VM in tx (its
// definition, and the snapshots with it, went from the host).
func removeVMSnapshotsOf(ctx context.Context, tx bun.IDB, vmID int64) error {
	now := models.Now()
	_, err := tx.NewUpdate().Model((*models.VMSnapshot)(nil)).Set("state = ?", models.VMSnapshotExpunging).Set("current = ?", false).
		Set("updated = ?", now).Set("removed = ?", now).Where("vm_id = ?", vmID).Exec(ctx)
	return err
}

// vmKeepsDefinition tells whether stopping vm leaves it defined on its
// host: it has VM snapshots, which live with the definition, and the job
// is not a destroy (which deletes them with the VM).
func vmKeepsDefinition(ctx context.Context, db bun.IDB, vm *models.VMInstance) (bool, error) {
	if activity.IsActivity(ctx) && activity.GetInfo(ctx).WorkflowType != nil && activity.GetInfo(ctx).WorkflowType.Name == "DestroyVM" {
		return false, nil
	}
	return VMHasSnapshots(ctx, db, vm.ID)
}

// VMSnapshotSettle releases what a VM snapshot job that ended without
// finishing (terminated, cancelled or timed out in Temporal) left busy, so
// its VM takes jobs again: a snapshot it was creating or deleting goes to
// Error with the reason (deleting it again cleans the hypervisor up), one
// a revert of the VM held goes back to Ready (the VM itself is settled by
// its own path). instanceType and uuid are the job's instance.
func VMSnapshotSettle(ctx context.Context, db bun.IDB, instanceType, uuid, reason string) error {
	now := models.Now()
	switch instanceType {
	case "VMSnapshot":
		_, err := db.NewUpdate().Model((*models.VMSnapshot)(nil)).Set("state = ?", models.VMSnapshotError).
			Set("state_reason = ?", clipReason(reason)).Set("updated = ?", now).
			Where("uuid = ? AND state IN (?)", uuid, bun.In([]string{models.VMSnapshotAllocated, models.VMSnapshotCreating, models.VMSnapshotExpunging})).Exec(ctx)
		return err
	case "VirtualMachine":
		_, err := db.NewUpdate().Model((*models.VMSnapshot)(nil)).Set("state = ?", models.VMSnapshotReady).
			Set("state_reason = ?", clipReason(reason)).Set("updated = ?", now).
			Where("state = ? AND vm_id IN (SELECT id FROM vm_instances WHERE uuid = ?)", models.VMSnapshotReverting, uuid).Exec(ctx)
		return err
	}
	return nil
}
