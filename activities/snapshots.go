package activities

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/storage"
	ntemporal "github.com/nimbus-cloud/nimbus/infra/temporal"
	"github.com/nimbus-cloud/nimbus/models"
)

// Snapshots holds the steps of the snapshot jobs: taking a volume snapshot
// on primary storage and backing it up to secondary storage, deleting and
// reverting snapshots, creating templates from volumes and snapshots, and
// the runs of snapshot policies.
type Snapshots struct{ Deps }

// SnapshotPolicyScheduleID is the Temporal Schedule of a snapshot policy.
func SnapshotPolicyScheduleID(policyUUID string) string {
	return ntemporal.InternalID("snappolicy", policyUUID)
}

// SnapshotName is CloudStack's default snapshot name:
// <vm>_<volume>_<yyyyMMddHHmmss>, "detached" for a volume without a VM.
func SnapshotName(vmName, volumeName string, t time.Time) string {
	if vmName == "" {
		vmName = "detached"
	}
	return vmName + "_" + volumeName + "_" + t.UTC().Format("20060102150405")
}

// SnapshotBackupPath is where a snapshot's backup lives on an image store:
// CloudStack's snapshots/<account>/<volume>/<snapshot uuid>.
func SnapshotBackupPath(s *models.Snapshot) string {
	return path.Join("snapshots", strconv.FormatInt(s.AccountID, 10), strconv.FormatInt(s.VolumeID, 10), s.UUID)
}

func loadSnapshot(ctx context.Context, db bun.IDB, id string, withRemoved bool) (*models.Snapshot, error) {
	var s models.Snapshot
	q := db.NewSelect().Model(&s).Where("uuid = ?", id).Limit(1)
	if withRemoved {
		q = q.WhereAllWithDeleted()
	}
	if err := q.Scan(ctx); err != nil {
		if noRows(err) {
			return nil, volFail(cserr.ParamError, "Unable to find snapshot by id %s", id)
		}
		return nil, err
	}
	return &s, nil
}

func loadVolumeByID(ctx context.Context, db bun.IDB, id int64) (*models.Volume, error) {
	var v models.Volume
	if err := db.NewSelect().Model(&v).Where("id = ?", id).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		return nil, models.NotFound(err, fmt.Sprintf("volume %d", id))
	}
	return &v, nil
}

// snapshotRef loads a snapshot's copy of a role ("" when it has none).
func snapshotRef(ctx context.Context, db bun.IDB, snapID int64, role string) (*models.SnapshotStoreRef, error) {
	var r models.SnapshotStoreRef
	err := db.NewSelect().Model(&r).Where("snapshot_id = ? AND store_role = ?", snapID, role).Order("id").Limit(1).Scan(ctx)
	if noRows(err) {
		return nil, nil
	}
	return &r, err
}

// snapshotBackupLocation is where a snapshot's backup is, for
// createVolume from a snapshot.
func snapshotBackupLocation(ctx context.Context, d Deps, snapUUID string) (storage.Location, error) {
	s, err := loadSnapshot(ctx, d.DB, snapUUID, false)
	if err != nil {
		return storage.Location{}, err
	}
	ref, err := snapshotRef(ctx, d.DB, s.ID, models.StoreRoleImage)
	if err != nil {
		return storage.Location{}, err
	}
	if ref == nil || ref.State != models.ObjectReady {
		return storage.Location{}, volFail(cserr.ParamError, "Snapshot %s has no backup on secondary storage", s.Name)
	}
	_, desc, _, err := storeTarget(ctx, d, ref.StoreID)
	if err != nil {
		return storage.Location{}, err
	}
	return storage.Location{Store: desc, Path: ref.InstallPath}, nil
}

func snapshotEvent(ctx context.Context, db bun.IDB, actor Actor, typ, level, uuid, desc string) error {
	return WriteEvent(ctx, db, storageEvent(ctx, EventInput{Actor: actor, Type: typ, Level: level,
		ResourceType: "Snapshot", ResourceUUID: uuid, Description: desc}))
}

func snapshotUsage(typ string, s *models.Snapshot) *models.UsageEvent {
	return &models.UsageEvent{Type: typ, AccountID: s.AccountID, DomainID: s.DomainID, ZoneID: s.ZoneID,
		ResourceID: s.ID, ResourceName: s.Name, ResourceType: "Snapshot", OfferingID: s.DiskOfferingID,
		Size: s.PhysicalSize, VirtualSize: s.Size}
}

// storeProgress heartbeats a copy's progress and keeps a store copy's
// download_pct current, writing at most once a second (and at the end).
type storeProgress struct {
	ctx    context.Context
	db     bun.IDB
	update func(pct int) *bun.UpdateQuery

	mu      sync.Mutex
	lastPct int
	lastAt  time.Time
}

func (p *storeProgress) report(pr storage.Progress) {
	if activity.IsActivity(p.ctx) {
		activity.RecordHeartbeat(p.ctx, pr.Done)
	}
	pct := pr.Percent()
	p.mu.Lock()
	if pct < 0 || pct == p.lastPct || (time.Since(p.lastAt) < time.Second && pct < 100) {
		p.mu.Unlock()
		return
	}
	p.lastPct, p.lastAt = pct, time.Now()
	p.mu.Unlock()
	_, _ = p.update(pct).Exec(p.ctx)
}

// ---- create ----

// SnapshotInput names a snapshot and who acts on it.
type SnapshotInput struct {
	SnapshotUUID string
	Actor        Actor
}

// SnapshotBeginResult says whether there is anything left to do.
type SnapshotBeginResult struct {
	Done bool // backed up already
}

// SnapshotBegin starts taking an Allocated snapshot: the volume goes Ready
// > Snapshotting (so no resize, migration or other snapshot runs on it
// meanwhile) and the snapshot Allocated > Creating. A snapshot Creating or
// BackingUp is a retry.
func (a *Snapshots) SnapshotBegin(ctx context.Context, in SnapshotInput) (SnapshotBeginResult, error) {
	var res SnapshotBeginResult
	err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		s, err := loadSnapshot(ctx, tx, in.SnapshotUUID, false)
		if err != nil {
			return err
		}
		switch s.State {
		case models.SnapshotBackedUp:
			res.Done = true
			return nil
		case models.SnapshotCreating, models.SnapshotBackingUp:
			return nil
		case models.SnapshotAllocated:
		default:
			return volFail(cserr.ParamError, "Snapshot %s is %s", s.Name, s.State)
		}
		v, err := loadVolumeByID(ctx, tx, s.VolumeID)
		if err != nil {
			return err
		}
		if err := CheckSnapshot(v); err != nil {
			return err
		}
		if err := models.Transition(ctx, tx, (*models.Volume)(nil), v.ID, models.VolumeSnapshotting, []string{models.VolumeReady},
			map[string]any{"updated": models.Now()}); err != nil {
			return volFail(cserr.ParamError, "Volume %s is busy; try again when it is Ready", v.Name)
		}
		return models.Transition(ctx, tx, (*models.Snapshot)(nil), s.ID, models.SnapshotCreating, []string{models.SnapshotAllocated}, nil)
	})
	return res, err
}

// CheckSnapshot says whether a volume may be snapshotted now.
func CheckSnapshot(v *models.Volume) error {
	switch {
	case !v.Removed.IsZero():
		return volFail(cserr.ParamError, "Volume %s is deleted", v.Name)
	case v.State != models.VolumeReady || v.PoolID == 0:
		return volFail(cserr.ParamError, "Volume %s is %s; only a Ready volume on primary storage is snapshotted", v.Name, v.State)
	}
	return nil
}

// SnapshotOnPrimary has the pool's driver take the snapshot (idempotent by
// the snapshot's UUID), records its copy on the pool, and moves the
// snapshot Creating > BackingUp.
func (a *Snapshots) SnapshotOnPrimary(ctx context.Context, in SnapshotInput) error {
	s, err := loadSnapshot(ctx, a.DB, in.SnapshotUUID, false)
	if err != nil {
		return err
	}
	if s.State != models.SnapshotCreating {
		return nil
	}
	v, err := loadVolumeByID(ctx, a.DB, s.VolumeID)
	if err != nil {
		return err
	}
	p, err := loadPoolByID(ctx, a.DB, v.PoolID)
	if err != nil {
		return err
	}
	drv, desc, err := poolTarget(ctx, a.Deps, p)
	if err != nil {
		return err
	}
	if err := viaVolumeHost(ctx, a.Deps, v, &desc); err != nil {
		return err
	}
	made, err := callHeartbeating(ctx, func(ctx context.Context) (storage.Snapshot, error) {
		return drv.SnapshotVolume(ctx, desc, v.Path, storage.SnapshotSpec{ID: s.UUID, Name: s.Name})
	})
	if err != nil {
		return volDriverFailure(err)
	}
	err = a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		ref, err := snapshotRef(ctx, tx, s.ID, models.StoreRolePrimary)
		if err != nil {
			return err
		}
		if ref == nil {
			now := models.Now()
			ref = &models.SnapshotStoreRef{StoreID: p.ID, StoreRole: models.StoreRolePrimary, SnapshotID: s.ID, VolumeID: v.ID,
				ZoneID: v.ZoneID, State: models.ObjectReady, InstallPath: made.Path, DownloadPct: 100,
				Size: v.Size, PhysicalSize: made.SizeBytes, Created: now, LastUpdated: now}
			if _, err := tx.NewInsert().Model(ref).Exec(ctx); err != nil {
				return err
			}
		}
		return models.Transition(ctx, tx, (*models.Snapshot)(nil), s.ID, models.SnapshotBackingUp, []string{models.SnapshotCreating},
			map[string]any{"size": v.Size, "hypervisor_type": p.HypervisorType})
	})
	if err != nil {
		return err
	}
	refreshPoolUsed(ctx, a.DB, drv, desc, p.ID)
	return nil
}

// ZoneImageStore chooses the image store a zone's snapshot backups go to:
// a writable Image store of the zone, else a region-wide one; most free
// space first.
func ZoneImageStore(ctx context.Context, db bun.IDB, zoneID int64) (*models.ImageStore, error) {
	var stores []models.ImageStore
	err := db.NewSelect().Model(&stores).Where("role = ? AND readonly = ?", models.ImageRoleImage, false).
		Where("(zone_id = ? OR zone_id IS NULL)", zoneID).
		OrderExpr("CASE WHEN zone_id IS NULL THEN 1 ELSE 0 END, total_size - used_bytes DESC, id").Scan(ctx)
	if err != nil {
		return nil, err
	}
	if len(stores) == 0 {
		return nil, volFail(cserr.ParamError, "The zone has no image store (secondary storage) for snapshot backups: add one with addImageStore")
	}
	return &stores[0], nil
}

// HasImageStore tells whether a zone has secondary storage for backups.
func HasImageStore(ctx context.Context, db bun.IDB, zoneID int64) error {
	_, err := ZoneImageStore(ctx, db, zoneID)
	return err
}

// SnapshotBackup copies the snapshot to secondary storage while
// heartbeating, keeping the copy's download_pct current. A retry copies to
// the same path (the driver finds a complete copy there).
func (a *Snapshots) SnapshotBackup(ctx context.Context, in SnapshotInput) error {
	s, err := loadSnapshot(ctx, a.DB, in.SnapshotUUID, false)
	if err != nil {
		return err
	}
	if s.State != models.SnapshotBackingUp {
		return nil
	}
	ref, err := snapshotRef(ctx, a.DB, s.ID, models.StoreRoleImage)
	if err != nil {
		return err
	}
	if ref != nil && ref.State == models.ObjectReady {
		return nil
	}
	if ref == nil {
		st, err := ZoneImageStore(ctx, a.DB, s.ZoneID)
		if err != nil {
			return err
		}
		now := models.Now()
		ref = &models.SnapshotStoreRef{StoreID: st.ID, StoreRole: models.StoreRoleImage, SnapshotID: s.ID, VolumeID: s.VolumeID,
			ZoneID: st.ZoneID, State: models.ObjectCreating, InstallPath: SnapshotBackupPath(s), Size: s.Size, Created: now, LastUpdated: now}
		if _, err := a.DB.NewInsert().Model(ref).Exec(ctx); err != nil {
			return err
		}
	}
	v, err := loadVolumeByID(ctx, a.DB, s.VolumeID)
	if err != nil {
		return err
	}
	p, err := loadPoolByID(ctx, a.DB, v.PoolID)
	if err != nil {
		return err
	}
	drv, desc, err := poolTarget(ctx, a.Deps, p)
	if err != nil {
		return err
	}
	_, sdesc, _, err := storeTarget(ctx, a.Deps, ref.StoreID)
	if err != nil {
		return err
	}
	refID := ref.ID
	prog := &storeProgress{ctx: ctx, db: a.DB, lastPct: -1, update: func(pct int) *bun.UpdateQuery {
		return a.DB.NewUpdate().Model((*models.SnapshotStoreRef)(nil)).Set("download_pct = ?", pct).
			Set("last_updated = ?", models.Now()).Where("id = ?", refID)
	}}
	img, err := callHeartbeating(ctx, func(ctx context.Context) (storage.Image, error) {
		return drv.BackupSnapshot(ctx, desc, v.Path, s.UUID, storage.Location{Store: sdesc, Path: ref.InstallPath}, prog.report)
	})
	if err != nil {
		_, _ = a.DB.NewUpdate().Model((*models.SnapshotStoreRef)(nil)).Set("error_str = ?", clipText(err.Error(), 1000)).
			Where("id = ?", refID).Exec(ctx)
		return volDriverFailure(err)
	}
	_, err = a.DB.NewUpdate().Model((*models.SnapshotStoreRef)(nil)).Set("state = ?", models.ObjectReady).
		Set("download_pct = 100").Set("error_str = ''").Set("physical_size = ?", img.SizeBytes).Set("install_path = ?", img.Path).
		Set("last_updated = ?", models.Now()).Where("id = ?", refID).Exec(ctx)
	return err
}

// SnapshotFinish marks the snapshot BackedUp with the size of its backup,
// returns the volume to Ready, counts the backup against the account's
// secondary storage, and writes the usage event and event.
func (a *Snapshots) SnapshotFinish(ctx context.Context, in SnapshotInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		s, err := loadSnapshot(ctx, tx, in.SnapshotUUID, false)
		if err != nil {
			return err
		}
		if s.State == models.SnapshotBackedUp {
			return nil
		}
		ref, err := snapshotRef(ctx, tx, s.ID, models.StoreRoleImage)
		if err != nil {
			return err
		}
		if ref == nil || ref.State != models.ObjectReady {
			return volFail(cserr.InternalError, "Snapshot %s has no finished backup", s.Name)
		}
		if err := models.Transition(ctx, tx, (*models.Snapshot)(nil), s.ID, models.SnapshotBackedUp, []string{models.SnapshotBackingUp},
			map[string]any{"physical_size": ref.PhysicalSize}); err != nil {
			return err
		}
		s.PhysicalSize = ref.PhysicalSize
		if _, err := tx.NewUpdate().Model((*models.Volume)(nil)).Set("state = ?", models.VolumeReady).Set("updated = ?", models.Now()).
			Where("id = ? AND state = ?", s.VolumeID, models.VolumeSnapshotting).Exec(ctx); err != nil {
			return err
		}
		if err := models.ReserveResources(ctx, tx, s.AccountID, map[string]int64{models.ResourceSecondaryStorage: s.PhysicalSize}); err != nil {
			return err
		}
		if err := usageEvent(ctx, tx, snapshotUsage("SNAPSHOT.CREATE", s)); err != nil {
			return err
		}
		return snapshotEvent(ctx, tx, in.Actor, "SNAPSHOT.CREATE", "", s.UUID,
			fmt.Sprintf("Created snapshot %s and backed it up to secondary storage (%d bytes)", s.Name, s.PhysicalSize))
	})
}

// SnapshotFailInput ends a snapshot that could not be taken.
type SnapshotFailInput struct {
	SnapshotUUID string
	Reason       string
	Actor        Actor
}

// SnapshotUndo removes what a failed snapshot made: its backup on
// secondary storage, its snapshot on the pool (looked up by its UUID even
// when no copy was recorded, as the driver may have made it before the
// worker died), and their rows; the snapshot ends Error and removed, the
// account's snapshot count released, the volume Ready again.
func (a *Snapshots) SnapshotUndo(ctx context.Context, in SnapshotFailInput) error {
	s, err := loadSnapshot(ctx, a.DB, in.SnapshotUUID, true)
	if err != nil {
		return err
	}
	if !s.Removed.IsZero() {
		return nil
	}
	if err := a.deleteSnapshotData(ctx, s, true); err != nil {
		return err
	}
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewUpdate().Model((*models.Snapshot)(nil)).Set("state = ?", models.SnapshotError).Set("removed = ?", models.Now()).
			Where("id = ? AND state IN (?)", s.ID, bun.In([]string{models.SnapshotAllocated, models.SnapshotCreating, models.SnapshotBackingUp, models.SnapshotError})).Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		if _, err := tx.NewUpdate().Model((*models.Volume)(nil)).Set("state = ?", models.VolumeReady).Set("updated = ?", models.Now()).
			Where("id = ? AND state = ?", s.VolumeID, models.VolumeSnapshotting).Exec(ctx); err != nil {
			return err
		}
		if err := models.ReleaseResources(ctx, tx, s.AccountID, map[string]int64{models.ResourceSnapshot: 1}); err != nil {
			return err
		}
		return snapshotEvent(ctx, tx, in.Actor, "SNAPSHOT.CREATE", "ERROR", s.UUID, "Failed to create snapshot "+s.Name+": "+in.Reason)
	})
}

// deleteSnapshotData deletes a snapshot's copies (backup first) and their
// rows; with probe, also a copy on the volume's pool that no row records.
func (a *Snapshots) deleteSnapshotData(ctx context.Context, s *models.Snapshot, probe bool) error {
	var refs []models.SnapshotStoreRef
	if err := a.DB.NewSelect().Model(&refs).Where("snapshot_id = ?", s.ID).Order("store_role DESC", "id").Scan(ctx); err != nil {
		return err
	}
	onPool := false
	for i := range refs {
		r := &refs[i]
		switch r.StoreRole {
		case models.StoreRoleImage:
			drv, desc, st, err := storeTarget(ctx, a.Deps, r.StoreID)
			if err != nil {
				return err
			}
			if st.Removed.IsZero() {
				if _, err := callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) {
					return struct{}{}, drv.Delete(ctx, desc, r.InstallPath)
				}); err != nil {
					return volDriverFailure(err)
				}
			}
		case models.StoreRolePrimary:
			onPool = true
			if err := a.deleteOnPool(ctx, s, r.StoreID); err != nil {
				return err
			}
		}
		if _, err := a.DB.NewDelete().Model((*models.SnapshotStoreRef)(nil)).Where("id = ?", r.ID).Exec(ctx); err != nil {
			return err
		}
	}
	if probe && !onPool {
		v, err := loadVolumeByID(ctx, a.DB, s.VolumeID)
		if err != nil {
			return err
		}
		if v.PoolID != 0 && v.Removed.IsZero() {
			return a.deleteOnPool(ctx, s, v.PoolID)
		}
	}
	return nil
}

// deleteOnPool deletes a snapshot from a pool (a pool or volume gone took
// it with them).
func (a *Snapshots) deleteOnPool(ctx context.Context, s *models.Snapshot, poolID int64) error {
	p, err := loadPoolByID(ctx, a.DB, poolID)
	if err != nil || !p.Removed.IsZero() {
		return err
	}
	v, err := loadVolumeByID(ctx, a.DB, s.VolumeID)
	if err != nil {
		return err
	}
	if !v.Removed.IsZero() || v.PoolID != poolID {
		return nil
	}
	drv, desc, err := poolTarget(ctx, a.Deps, p)
	if err != nil {
		return err
	}
	if _, err := callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, drv.DeleteSnapshot(ctx, desc, v.Path, s.UUID)
	}); err != nil {
		return volDriverFailure(err)
	}
	refreshPoolUsed(ctx, a.DB, drv, desc, p.ID)
	return nil
}

// ---- delete ----

// CheckDeleteSnapshot says whether a snapshot may be deleted now.
func CheckDeleteSnapshot(s *models.Snapshot) error {
	switch s.State {
	case models.SnapshotBackedUp, models.SnapshotError, models.SnapshotDestroying, models.SnapshotCreatedOnPrimary:
		return nil
	}
	return volFail(cserr.ParamError, "Snapshot %s is %s; wait until it is BackedUp", s.Name, s.State)
}

// SnapshotDeleteBegin moves the snapshot to Destroying; a snapshot
// Destroying already (an earlier delete that failed part-way) resumes.
func (a *Snapshots) SnapshotDeleteBegin(ctx context.Context, in SnapshotInput) (SnapshotBeginResult, error) {
	var res SnapshotBeginResult
	err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		s, err := loadSnapshot(ctx, tx, in.SnapshotUUID, true)
		if err != nil {
			return err
		}
		if !s.Removed.IsZero() {
			res.Done = true
			return nil
		}
		if s.State == models.SnapshotDestroying {
			return nil
		}
		if err := CheckDeleteSnapshot(s); err != nil {
			return err
		}
		return models.Transition(ctx, tx, (*models.Snapshot)(nil), s.ID, models.SnapshotDestroying, []string{s.State}, nil)
	})
	return res, err
}

// SnapshotDeleteData deletes the snapshot's backup and its copy on the
// pool, and their rows.
func (a *Snapshots) SnapshotDeleteData(ctx context.Context, in SnapshotInput) error {
	s, err := loadSnapshot(ctx, a.DB, in.SnapshotUUID, true)
	if err != nil {
		return err
	}
	return a.deleteSnapshotData(ctx, s, false)
}

// SnapshotDeleteFinish marks the snapshot Destroyed and removed, releases
// the account's counts, and writes the usage event and event.
func (a *Snapshots) SnapshotDeleteFinish(ctx context.Context, in SnapshotInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		s, err := loadSnapshot(ctx, tx, in.SnapshotUUID, true)
		if err != nil {
			return err
		}
		if !s.Removed.IsZero() {
			return nil
		}
		return removeSnapshot(ctx, tx, s, in.Actor)
	})
}

func removeSnapshot(ctx context.Context, tx bun.IDB, s *models.Snapshot, actor Actor) error {
	res, err := tx.NewUpdate().Model((*models.Snapshot)(nil)).Set("state = ?", models.SnapshotDestroyed).Set("removed = ?", models.Now()).
		Where("id = ? AND state = ?", s.ID, s.State).Exec(ctx)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("snapshot %s changed meanwhile", s.UUID)
	}
	release := map[string]int64{models.ResourceSnapshot: 1, models.ResourceSecondaryStorage: s.PhysicalSize}
	if s.State == models.SnapshotError {
		release = nil // counted nothing
	}
	if err := models.ReleaseResources(ctx, tx, s.AccountID, release); err != nil {
		return err
	}
	if err := usageEvent(ctx, tx, snapshotUsage("SNAPSHOT.DELETE", s)); err != nil {
		return err
	}
	return snapshotEvent(ctx, tx, actor, "SNAPSHOT.DELETE", "", s.UUID, "Deleted snapshot "+s.Name)
}

// ---- revert ----

// SnapshotRevertState is what SnapshotRevertBegin found.
type SnapshotRevertState struct {
	VolumeUUID string
	OldSize    int64
	NewSize    int64
}

// CheckRevert says whether a snapshot may be reverted onto its volume now:
// BackedUp with its copy on the volume's pool, the volume Ready and
// detached or its VM Stopped.
func CheckRevert(ctx context.Context, db bun.IDB, s *models.Snapshot, v *models.Volume) error {
	switch {
	case s.State != models.SnapshotBackedUp:
		return volFail(cserr.ParamError, "Snapshot %s is %s; only a BackedUp snapshot is reverted", s.Name, s.State)
	case !v.Removed.IsZero():
		return volFail(cserr.ParamError, "The volume of snapshot %s is deleted", s.Name)
	case v.State != models.VolumeReady:
		return volFail(cserr.ParamError, "Volume %s is %s; revert needs it Ready", v.Name, v.State)
	}
	ref, err := snapshotRef(ctx, db, s.ID, models.StoreRolePrimary)
	if err != nil {
		return err
	}
	if ref == nil || ref.StoreID != v.PoolID {
		return volFail(cserr.ParamError, "Snapshot %s has no copy on the primary storage of volume %s (it was migrated since); create a volume from it instead", s.Name, v.Name)
	}
	if v.InstanceID != 0 {
		var vm models.VMInstance
		if err := db.NewSelect().Model(&vm).Where("id = ?", v.InstanceID).Limit(1).Scan(ctx); err != nil {
			return models.NotFound(err, "virtual machine")
		}
		if vm.State != models.VMStopped {
			return volFail(cserr.ParamError, "Virtual machine %s is %s; stop it before reverting its volume to a snapshot", vm.Name, vm.State)
		}
	}
	return nil
}

// SnapshotRevertBegin checks the revert and moves the volume Ready >
// RevertSnapshotting, reserving what it grows back by; a volume already
// RevertSnapshotting is a retry.
func (a *Snapshots) SnapshotRevertBegin(ctx context.Context, in SnapshotInput) (SnapshotRevertState, error) {
	var st SnapshotRevertState
	err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		s, err := loadSnapshot(ctx, tx, in.SnapshotUUID, false)
		if err != nil {
			return err
		}
		v, err := loadVolumeByID(ctx, tx, s.VolumeID)
		if err != nil {
			return err
		}
		st = SnapshotRevertState{VolumeUUID: v.UUID, OldSize: v.Size, NewSize: s.Size}
		if v.State == VolumeRevertSnapshotting {
			return nil
		}
		if err := CheckRevert(ctx, tx, s, v); err != nil {
			return err
		}
		if err := models.Transition(ctx, tx, (*models.Volume)(nil), v.ID, VolumeRevertSnapshotting, []string{models.VolumeReady},
			map[string]any{"updated": models.Now()}); err != nil {
			return volFail(cserr.ParamError, "Volume %s changed meanwhile; try again", v.Name)
		}
		if d := st.NewSize - st.OldSize; d > 0 {
			if err := reservePool(ctx, tx, v.PoolID, d); err != nil {
				return err
			}
			return moveVolumeCounts(ctx, tx, v.AccountID, 0, d)
		}
		return nil
	})
	return st, err
}

// SnapshotRevertOnPool has the pool's driver revert the volume.
func (a *Snapshots) SnapshotRevertOnPool(ctx context.Context, in SnapshotInput) error {
	s, err := loadSnapshot(ctx, a.DB, in.SnapshotUUID, false)
	if err != nil {
		return err
	}
	v, err := loadVolumeByID(ctx, a.DB, s.VolumeID)
	if err != nil {
		return err
	}
	p, err := loadPoolByID(ctx, a.DB, v.PoolID)
	if err != nil {
		return err
	}
	drv, desc, err := poolTarget(ctx, a.Deps, p)
	if err != nil {
		return err
	}
	if _, err := callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, drv.RevertSnapshot(ctx, desc, v.Path, s.UUID)
	}); err != nil {
		return volDriverFailure(err)
	}
	refreshPoolUsed(ctx, a.DB, drv, desc, p.ID)
	return nil
}

// SnapshotRevertFinishInput ends a revert.
type SnapshotRevertFinishInput struct {
	SnapshotUUID string
	State        SnapshotRevertState
	Failed       bool
	Reason       string
	Actor        Actor
}

// SnapshotRevertFinish returns the volume to Ready: with the snapshot's
// size (releasing what it shrank by), or as it was when the revert failed
// (releasing what its growth reserved).
func (a *Snapshots) SnapshotRevertFinish(ctx context.Context, in SnapshotRevertFinishInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		v, err := loadVolume(ctx, tx, in.State.VolumeUUID, false)
		if err != nil {
			return err
		}
		if v.State != VolumeRevertSnapshotting {
			return nil
		}
		s, err := loadSnapshot(ctx, tx, in.SnapshotUUID, true)
		if err != nil {
			return err
		}
		d := in.State.NewSize - in.State.OldSize
		if in.Failed {
			if err := models.Transition(ctx, tx, (*models.Volume)(nil), v.ID, models.VolumeReady, []string{VolumeRevertSnapshotting},
				map[string]any{"updated": models.Now()}); err != nil {
				return err
			}
			if d > 0 {
				if err := releasePool(ctx, tx, v.PoolID, d); err != nil {
					return err
				}
				if err := moveVolumeCounts(ctx, tx, v.AccountID, 0, -d); err != nil {
					return err
				}
			}
			return snapshotEvent(ctx, tx, in.Actor, "SNAPSHOT.REVERT", "ERROR", s.UUID,
				fmt.Sprintf("Failed to revert volume %s to snapshot %s: %s", v.Name, s.Name, in.Reason))
		}
		if err := models.Transition(ctx, tx, (*models.Volume)(nil), v.ID, models.VolumeReady, []string{VolumeRevertSnapshotting},
			map[string]any{"size": in.State.NewSize, "updated": models.Now()}); err != nil {
			return err
		}
		if d < 0 {
			if err := releasePool(ctx, tx, v.PoolID, -d); err != nil {
				return err
			}
			if err := moveVolumeCounts(ctx, tx, v.AccountID, 0, d); err != nil {
				return err
			}
		}
		return snapshotEvent(ctx, tx, in.Actor, "SNAPSHOT.REVERT", "", s.UUID,
			fmt.Sprintf("Reverted volume %s to snapshot %s", v.Name, s.Name))
	})
}

// ---- templates from volumes and snapshots ----

// SnapshotTemplateInput makes a template (already a row, with its zone
// and store copy rows) from a volume or a snapshot.
type SnapshotTemplateInput struct {
	TemplateUUID string
	VolumeUUID   string // one of these
	SnapshotUUID string
	Actor        Actor
}

func templateRef(ctx context.Context, db bun.IDB, t *models.Template) (*models.TemplateStoreRef, error) {
	var ref models.TemplateStoreRef
	if err := db.NewSelect().Model(&ref).Where("template_id = ? AND destroyed = ?", t.ID, false).Order("id").Limit(1).Scan(ctx); err != nil {
		return nil, models.NotFound(err, "template copy")
	}
	return &ref, nil
}

func loadTemplate(ctx context.Context, db bun.IDB, id string) (*models.Template, error) {
	var t models.Template
	if err := db.NewSelect().Model(&t).Where("uuid = ?", id).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		return nil, models.NotFound(err, "template "+id)
	}
	return &t, nil
}

// SnapshotTemplateCopy writes the template's image to its image store
// from the volume (ExportVolume) or from the snapshot's copy on primary
// storage (BackupSnapshot to the template's path), while heartbeating and
// keeping the copy's download progress current. It returns the virtual size.
func (a *Snapshots) SnapshotTemplateCopy(ctx context.Context, in SnapshotTemplateInput) (int64, error) {
	t, err := loadTemplate(ctx, a.DB, in.TemplateUUID)
	if err != nil {
		return 0, err
	}
	ref, err := templateRef(ctx, a.DB, t)
	if err != nil {
		return 0, err
	}
	var v *models.Volume
	var s *models.Snapshot
	virtual := int64(0)
	if in.SnapshotUUID != "" {
		if s, err = loadSnapshot(ctx, a.DB, in.SnapshotUUID, false); err != nil {
			return 0, err
		}
		pr, err := snapshotRef(ctx, a.DB, s.ID, models.StoreRolePrimary)
		if err != nil {
			return 0, err
		}
		if v, err = loadVolumeByID(ctx, a.DB, s.VolumeID); err != nil {
			return 0, err
		}
		if pr == nil || pr.StoreID != v.PoolID || !v.Removed.IsZero() {
			return 0, volFail(cserr.ParamError, "Snapshot %s has no copy on primary storage to make a template from", s.Name)
		}
		virtual = s.Size
	} else {
		if v, err = loadVolume(ctx, a.DB, in.VolumeUUID, false); err != nil {
			return 0, err
		}
		virtual = v.Size
	}
	if ref.DownloadState == models.DownloadDownloaded {
		return virtual, nil
	}
	p, err := loadPoolByID(ctx, a.DB, v.PoolID)
	if err != nil {
		return 0, err
	}
	drv, desc, err := poolTarget(ctx, a.Deps, p)
	if err != nil {
		return 0, err
	}
	_, sdesc, _, err := storeTarget(ctx, a.Deps, ref.StoreID)
	if err != nil {
		return 0, err
	}
	install := TemplateInstallPath(t)
	jobID := ""
	if info := activityInfo(ctx); info != nil {
		jobID = info.WorkflowExecution.ID
	}
	if _, err := a.DB.NewUpdate().Model((*models.TemplateStoreRef)(nil)).Set("download_state = ?", models.DownloadInProgress).
		Set("state = ?", models.ObjectCreating).Set("install_path = ?", install).Set("job_id = ?", jobID).
		Set("last_updated = ?", models.Now()).Where("id = ?", ref.ID).Exec(ctx); err != nil {
		return 0, err
	}
	prog := &storeProgress{ctx: ctx, db: a.DB, lastPct: -1, update: func(pct int) *bun.UpdateQuery {
		return a.DB.NewUpdate().Model((*models.TemplateStoreRef)(nil)).Set("download_pct = ?", pct).
			Set("last_updated = ?", models.Now()).Where("id = ?", ref.ID)
	}}
	loc := storage.Location{Store: sdesc, Path: install}
	img, err := callHeartbeating(ctx, func(ctx context.Context) (storage.Image, error) {
		if s != nil {
			return drv.BackupSnapshot(ctx, desc, v.Path, s.UUID, loc, prog.report)
		}
		return drv.ExportVolume(ctx, desc, v.Path, loc, prog.report)
	})
	if err != nil {
		return 0, volDriverFailure(err)
	}
	_, err = a.DB.NewUpdate().Model((*models.TemplateStoreRef)(nil)).Set("download_state = ?", models.DownloadDownloaded).
		Set("state = ?", models.ObjectReady).Set("download_pct = 100").Set("error_str = ''").
		Set("size = ?", virtual).Set("physical_size = ?", img.SizeBytes).Set("install_path = ?", img.Path).
		Set("last_updated = ?", models.Now()).Where("id = ?", ref.ID).Exec(ctx)
	return virtual, err
}

// SnapshotTemplateFinishInput ends a createTemplate.
type SnapshotTemplateFinishInput struct {
	SnapshotTemplateInput
	Size   int64
	Failed bool
	Reason string
}

// SnapshotTemplateFinish activates the template with its size and counts
// it against the account's secondary storage; when the copy failed it
// deletes what was written and removes the template's rows, giving back the
// template count.
func (a *Snapshots) SnapshotTemplateFinish(ctx context.Context, in SnapshotTemplateFinishInput) error {
	t, err := loadTemplate(ctx, a.DB, in.TemplateUUID)
	if err != nil {
		return err
	}
	if in.Failed {
		if !t.Removed.IsZero() {
			return nil
		}
		var refs []models.TemplateStoreRef
		if err := a.DB.NewSelect().Model(&refs).Where("template_id = ?", t.ID).Scan(ctx); err != nil {
			return err
		}
		for _, r := range refs {
			drv, desc, _, err := storeTarget(ctx, a.Deps, r.StoreID)
			if err != nil {
				return err
			}
			if err := drv.Delete(ctx, desc, TemplateInstallPath(t)); err != nil {
				return volDriverFailure(err)
			}
		}
		return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			if _, err := tx.NewDelete().Model((*models.TemplateStoreRef)(nil)).Where("template_id = ?", t.ID).Exec(ctx); err != nil {
				return err
			}
			if _, err := tx.NewDelete().Model((*models.TemplateZoneRef)(nil)).Where("template_id = ?", t.ID).Exec(ctx); err != nil {
				return err
			}
			res, err := tx.NewUpdate().Model((*models.Template)(nil)).Set("removed = ?", models.Now()).Set("state = ?", models.TemplateInactive).
				Where("id = ?", t.ID).Exec(ctx)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return nil
			}
			if err := models.ReleaseResources(ctx, tx, t.AccountID, map[string]int64{models.ResourceTemplate: 1}); err != nil {
				return err
			}
			return WriteEvent(ctx, tx, storageEvent(ctx, EventInput{Actor: in.Actor, Type: "TEMPLATE.CREATE", Level: "ERROR",
				ResourceType: "Template", ResourceUUID: t.UUID, Description: "Failed to create template " + t.Name + ": " + in.Reason}))
		})
	}
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewUpdate().Model((*models.Template)(nil)).Set("state = ?", models.TemplateActive).Set("size = ?", in.Size).
			Where("id = ? AND state = ?", t.ID, models.TemplateInactive).Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		if err := models.ReserveResources(ctx, tx, t.AccountID, map[string]int64{models.ResourceSecondaryStorage: in.Size}); err != nil {
			return err
		}
		if err := usageEvent(ctx, tx, &models.UsageEvent{Type: "TEMPLATE.CREATE", AccountID: t.AccountID, DomainID: t.DomainID,
			ResourceID: t.ID, ResourceName: t.Name, ResourceType: "Template", TemplateID: t.ID, Size: in.Size, VirtualSize: in.Size}); err != nil {
			return err
		}
		from := "volume " + in.VolumeUUID
		if in.SnapshotUUID != "" {
			from = "snapshot " + in.SnapshotUUID
		}
		return WriteEvent(ctx, tx, storageEvent(ctx, EventInput{Actor: in.Actor, Type: "TEMPLATE.CREATE",
			ResourceType: "Template", ResourceUUID: t.UUID, Description: "Created template " + t.Name + " from " + from}))
	})
}

// ---- snapshot policies ----

// SnapshotPolicyRunInput is what a policy's schedule starts.
type SnapshotPolicyRunInput struct {
	PolicyUUID string
}

// SnapshotPolicyRunState is one run's snapshot, or why the run is skipped.
type SnapshotPolicyRunState struct {
	Skip         string // why nothing is taken
	SnapshotUUID string
	Actor        Actor
}

// deleteOwnSchedule removes a policy's schedule from a run of it, when the
// policy is gone (its volume or account was deleted).
func deleteOwnSchedule(ctx context.Context, policyUUID string) {
	if !activity.IsActivity(ctx) {
		return
	}
	c := activity.GetClient(ctx)
	if c == nil {
		return
	}
	err := c.ScheduleClient().GetHandle(ctx, SnapshotPolicyScheduleID(policyUUID)).Delete(ctx)
	var nf *serviceerror.NotFound
	if err != nil && !errors.As(err, &nf) {
		activity.GetLogger(ctx).Warn("cannot delete the schedule of a removed snapshot policy", "policy", policyUUID, "err", err)
	}
}

// SnapshotPolicyPrepare starts one run of a policy: it allocates the
// run's snapshot (named and typed after the policy, its UUID derived from
// the run so a retried step finds it) and counts it against the account's
// limit. A policy whose volume is gone is removed with its schedule; a
// volume not Ready, or an account at its snapshot limit, skips the run
// with a warning event.
func (a *Snapshots) SnapshotPolicyPrepare(ctx context.Context, in SnapshotPolicyRunInput) (SnapshotPolicyRunState, error) {
	var st SnapshotPolicyRunState
	var pol models.SnapshotPolicy
	if err := a.DB.NewSelect().Model(&pol).Where("uuid = ?", in.PolicyUUID).Limit(1).Scan(ctx); err != nil {
		if noRows(err) {
			deleteOwnSchedule(ctx, in.PolicyUUID)
			st.Skip = "the policy was deleted"
			return st, nil
		}
		return st, err
	}
	st.Actor = Actor{AccountID: pol.AccountID, DomainID: pol.DomainID}
	v, err := loadVolumeByID(ctx, a.DB, pol.VolumeID)
	if err != nil {
		return st, err
	}
	if !v.Removed.IsZero() {
		if _, err := a.DB.NewDelete().Model((*models.SnapshotPolicy)(nil)).Where("id = ?", pol.ID).Exec(ctx); err != nil {
			return st, err
		}
		deleteOwnSchedule(ctx, in.PolicyUUID)
		st.Skip = "the volume was deleted"
		return st, nil
	}
	info := activityInfo(ctx)
	key := in.PolicyUUID + "/" + time.Now().UTC().Format(time.RFC3339)
	if info != nil {
		key = info.WorkflowExecution.ID + "/" + info.WorkflowExecution.RunID
	}
	st.SnapshotUUID = uuid.NewSHA1(uuid.NameSpaceURL, []byte("nimbus-snapshot/"+key)).String()
	if _, err := loadSnapshot(ctx, a.DB, st.SnapshotUUID, true); err == nil {
		return st, nil // allocated by an earlier attempt
	}
	if err := CheckSnapshot(v); err != nil {
		st.Skip = cserr.As(err).Text
	} else if err := HasImageStore(ctx, a.DB, v.ZoneID); err != nil {
		st.Skip = cserr.As(err).Text
	}
	if st.Skip != "" {
		err := snapshotEvent(ctx, a.DB, st.Actor, "SNAPSHOT.CREATE", "WARN", "", fmt.Sprintf("Snapshot policy %s (%s) skipped a run: %s", pol.UUID, pol.IntervalType, st.Skip))
		st.SnapshotUUID = ""
		return st, err
	}
	vmName := ""
	if v.InstanceID != 0 {
		var vm models.VMInstance
		if err := a.DB.NewSelect().Model(&vm).Column("name").Where("id = ?", v.InstanceID).WhereAllWithDeleted().Limit(1).Scan(ctx); err == nil {
			vmName = vm.Name
		}
	}
	err = a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := models.ReserveResources(ctx, tx, pol.AccountID, map[string]int64{models.ResourceSnapshot: 1}); err != nil {
			return err
		}
		s := &models.Snapshot{UUID: st.SnapshotUUID, Name: SnapshotName(vmName, v.Name, time.Now()), VolumeID: v.ID,
			SnapshotType: pol.IntervalType, State: models.SnapshotAllocated, Size: v.Size, PolicyID: pol.ID,
			DiskOfferingID: v.DiskOfferingID, ZoneID: v.ZoneID, AccountID: v.AccountID, DomainID: v.DomainID, Created: models.Now()}
		_, err := tx.NewInsert().Model(s).Exec(ctx)
		return err
	})
	if cserr.Code(err) == cserr.AccountResourceLim {
		st.Skip, st.SnapshotUUID = cserr.As(err).Text, ""
		return st, snapshotEvent(ctx, a.DB, st.Actor, "SNAPSHOT.CREATE", "WARN", "", fmt.Sprintf("Snapshot policy %s (%s) skipped a run: %s", pol.UUID, pol.IntervalType, st.Skip))
	}
	return st, err
}

// SnapshotPolicyPrune lists the policy's backed-up snapshots beyond its
// maxsnaps, oldest last kept: the ones to delete, oldest first.
func (a *Snapshots) SnapshotPolicyPrune(ctx context.Context, in SnapshotPolicyRunInput) ([]string, error) {
	var pol models.SnapshotPolicy
	if err := a.DB.NewSelect().Model(&pol).Where("uuid = ?", in.PolicyUUID).Limit(1).Scan(ctx); err != nil {
		if noRows(err) {
			return nil, nil
		}
		return nil, err
	}
	var ids []string
	if err := a.DB.NewSelect().Model((*models.Snapshot)(nil)).Column("uuid").
		Where("policy_id = ? AND state = ?", pol.ID, models.SnapshotBackedUp).Order("created DESC", "id DESC").Scan(ctx, &ids); err != nil {
		return nil, err
	}
	if len(ids) <= pol.MaxSnaps {
		return nil, nil
	}
	old := ids[pol.MaxSnaps:]
	for i, j := 0, len(old)-1; i < j; i, j = i+1, j-1 {
		old[i], old[j] = old[j], old[i]
	}
	return old, nil
}

// ---- account cleanup ----

// SnapshotAccountCleanup deletes every snapshot of a deleted account from
// secondary and primary storage and removes it with its counts and usage
// event; it returns how many it removed.
func (a *Snapshots) SnapshotAccountCleanup(ctx context.Context, in AccountCleanupInput) (int64, error) {
	var snaps []models.Snapshot
	if err := a.DB.NewSelect().Model(&snaps).Where("account_id = ?", in.AccountID).Order("id").Scan(ctx); err != nil {
		return 0, err
	}
	var n int64
	for i := range snaps {
		s := &snaps[i]
		if err := a.deleteSnapshotData(ctx, s, false); err != nil {
			return n, err
		}
		err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			if s.State != models.SnapshotBackedUp {
				// A run that died with its account: it counted the snapshot only.
				s.PhysicalSize = 0
			}
			return removeSnapshot(ctx, tx, s, Actor{AccountID: s.AccountID, DomainID: s.DomainID})
		})
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// SnapshotPolicyAccountCleanup deletes the snapshot policies of a deleted
// account with their schedules; it returns how many it removed.
func (a *Snapshots) SnapshotPolicyAccountCleanup(ctx context.Context, in AccountCleanupInput) (int64, error) {
	var pols []models.SnapshotPolicy
	if err := a.DB.NewSelect().Model(&pols).Where("account_id = ?", in.AccountID).Order("id").Scan(ctx); err != nil {
		return 0, err
	}
	for _, p := range pols {
		deleteOwnSchedule(ctx, p.UUID)
		if _, err := a.DB.NewDelete().Model((*models.SnapshotPolicy)(nil)).Where("id = ?", p.ID).Exec(ctx); err != nil {
			return 0, err
		}
	}
	return int64(len(pols)), nil
}
