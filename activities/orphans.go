package activities

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
	"go.temporal.io/sdk/activity"

	"github.com/nimbus-cloud/nimbus/infra/storage"
	"github.com/nimbus-cloud/nimbus/models"
)

// ---- orphan disks on primary storage (the reconciler) ----

// MaintPool is a primary pool to reconcile.
type MaintPool struct {
	ID   int64
	UUID string
	Name string
}

// MaintPoolsPage is one page of pools.
type MaintPoolsPage struct {
	Pools []MaintPool
	More  bool
}

// MaintReconcilePools lists the pools that are Up or Disabled (those in
// maintenance may not answer), by id after AfterID.
func (a *Maintenance) MaintReconcilePools(ctx context.Context, in MaintHostsInput) (MaintPoolsPage, error) {
	if in.Limit <= 0 {
		in.Limit = 50
	}
	var pools []models.StoragePool
	err := a.DB.NewSelect().Model(&pools).Column("id", "uuid", "name").
		Where("id > ? AND state IN (?)", in.AfterID, bun.In([]string{models.PoolUp, models.PoolDisabled})).
		Order("id").Limit(int64(in.Limit + 1)).Scan(ctx)
	if err != nil {
		return MaintPoolsPage{}, err
	}
	var out MaintPoolsPage
	if len(pools) > in.Limit {
		pools, out.More = pools[:in.Limit], true
	}
	for _, p := range pools {
		out.Pools = append(out.Pools, MaintPool{ID: p.ID, UUID: p.UUID, Name: p.Name})
	}
	return out, nil
}

// MaintDisk is a disk on a pool that nothing in the inventory claims.
type MaintDisk struct {
	Path      string
	SizeBytes int64
	Template  bool
	// Seen: an earlier scan found it orphaned already; AgeSeconds since
	// the first such scan; Reported: its event is written.
	Seen       bool
	AgeSeconds int64
	Reported   bool
}

// MaintPoolScan is what one pool's scan found.
type MaintPoolScan struct {
	Pool      MaintPool
	Reachable bool
	Reason    string
	Orphans   []MaintDisk
	// CleanupDelay is storage.orphan.cleanup.delay (0: report only).
	CleanupDelay int64
}

// poolDiskClaimed tells whether the inventory claims a disk on a pool: a
// volume (not removed) by path or UUID, on this pool, not placed yet or
// migrating (the copy on the target has the source's path), or a template
// copy of the pool by install path or template UUID.
func poolDiskClaimed(ctx context.Context, db bun.IDB, poolID int64, path string) (bool, error) {
	ok, err := db.NewSelect().Model((*models.Volume)(nil)).
		Where("(path = ? OR uuid = ?)", path, path).
		Where("(pool_id = ? OR pool_id IS NULL OR state = ?)", poolID, models.VolumeMigrating).Exists(ctx)
	if err != nil || ok {
		return ok, err
	}
	return db.NewSelect().Model((*models.TemplatePoolRef)(nil)).
		Where("pool_id = ?", poolID).
		Where("(install_path = ? OR template_id IN (SELECT id FROM vm_templates WHERE uuid = ?))", path, path).Exists(ctx)
}

// MaintScanPool lists the pool's disks with its driver and finds those no
// volume or template copy row claims; it records them in pool_orphans
// (first seen now when new) and forgets the rows of disks claimed or gone
// since. A pool that does not answer is a result (Reachable false), not an
// error.
func (a *Maintenance) MaintScanPool(ctx context.Context, in MaintPool) (MaintPoolScan, error) {
	out := MaintPoolScan{Pool: in}
	p, err := loadPoolByID(ctx, a.DB, in.ID)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) || errors.Is(err, models.ErrNotFound) {
			return out, nil
		}
		return out, err
	}
	drv, desc, err := poolTarget(ctx, a.Deps, p)
	if err != nil {
		out.Reason = err.Error()
		return out, nil
	}
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	disks, err := callHeartbeating(cctx, func(ctx context.Context) ([]storage.Volume, error) { return drv.ListVolumes(ctx, desc) })
	if err != nil {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		out.Reason = err.Error()
		return out, nil
	}
	out.Reachable = true
	if out.CleanupDelay, err = models.ConfigInt(ctx, a.DB, "storage.orphan.cleanup.delay"); err != nil {
		return out, err
	}
	var known []models.PoolOrphan
	if err := a.DB.NewSelect().Model(&known).Where("pool_id = ?", p.ID).Scan(ctx); err != nil {
		return out, err
	}
	byPath := map[string]models.PoolOrphan{}
	for _, k := range known {
		byPath[k.Path] = k
	}
	now := models.Now()
	// A template copy other disks are overlays of is in use, rows or not.
	backs := map[string]bool{}
	for _, d := range disks {
		if d.BackingPath != "" {
			backs[d.BackingPath] = true
		}
	}
	orphan := map[string]bool{}
	for i, d := range disks {
		if i%100 == 0 {
			activity.RecordHeartbeat(ctx, i)
		}
		if backs[d.Path] {
			continue
		}
		claimed, err := poolDiskClaimed(ctx, a.DB, p.ID, d.Path)
		if err != nil {
			return out, err
		}
		if claimed || len(d.Path) > 255 {
			continue
		}
		orphan[d.Path] = true
		m := MaintDisk{Path: d.Path, SizeBytes: d.SizeBytes, Template: d.Template}
		if k, ok := byPath[d.Path]; ok {
			m.Seen, m.Reported, m.AgeSeconds = true, k.Reported, int64(now.Sub(k.FirstSeen)/time.Second)
			if _, err := a.DB.NewUpdate().Model((*models.PoolOrphan)(nil)).Set("last_seen = ?", now).Set("size_bytes = ?", d.SizeBytes).
				Where("id = ?", k.ID).Exec(ctx); err != nil {
				return out, err
			}
		} else if _, err := a.DB.NewInsert().Model(&models.PoolOrphan{PoolID: p.ID, Path: d.Path, SizeBytes: d.SizeBytes, FirstSeen: now, LastSeen: now}).
			Exec(ctx); err != nil {
			return out, err
		}
		out.Orphans = append(out.Orphans, m)
	}
	for _, k := range known {
		if !orphan[k.Path] {
			if _, err := a.DB.NewDelete().Model((*models.PoolOrphan)(nil)).Where("id = ?", k.ID).Exec(ctx); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

// Orphan disk actions the workflow decides and MaintPoolApply carries out.
const (
	MaintDiskReport = "report-disk" // a WARN event, once
	MaintDiskDelete = "delete-disk" // deleted from the pool, past the cleanup delay
)

// MaintDiskAction is one report or delete on a pool.
type MaintDiskAction struct {
	Kind string
	Disk MaintDisk
}

// MaintPoolApplyInput is the actions on one pool.
type MaintPoolApplyInput struct {
	Pool    MaintPool
	Actions []MaintDiskAction
}

// MaintPoolApply reports orphan disks (a STORAGE.ORPHAN WARN event each,
// once) and deletes those past the cleanup delay through the pool's
// driver, checking first that nothing claimed them meanwhile.
func (a *Maintenance) MaintPoolApply(ctx context.Context, in MaintPoolApplyInput) (MaintApplyResult, error) {
	var res MaintApplyResult
	p, err := loadPoolByID(ctx, a.DB, in.Pool.ID)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) || errors.Is(err, models.ErrNotFound) {
			return res, nil
		}
		return res, err
	}
	for _, act := range in.Actions {
		activity.RecordHeartbeat(ctx, act.Disk.Path)
		d := act.Disk
		what := "disk"
		if d.Template {
			what = "template copy"
		}
		switch act.Kind {
		case MaintDiskReport:
			err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				if _, err := tx.NewUpdate().Model((*models.PoolOrphan)(nil)).Set("reported = ?", true).
					Where("pool_id = ? AND path = ?", p.ID, d.Path).Exec(ctx); err != nil {
					return err
				}
				return maintEvent(ctx, tx, EventInput{Type: "STORAGE.ORPHAN", Level: "WARN", ResourceType: "StoragePool", ResourceUUID: p.UUID,
					Description: fmt.Sprintf("orphan %s %s (%d bytes) on primary storage %s: no volume or template copy in the inventory uses it (%s)",
						what, d.Path, d.SizeBytes, p.Name, orphanFate(in.Actions, d.Path))}, "report/"+d.Path)
			})
			if err != nil {
				return res, err
			}
			res.Reported++
		case MaintDiskDelete:
			claimed, err := poolDiskClaimed(ctx, a.DB, p.ID, d.Path)
			if err != nil {
				return res, err
			}
			if claimed {
				res.Skipped++
				continue
			}
			drv, desc, err := poolTarget(ctx, a.Deps, p)
			if err != nil {
				return res, err
			}
			if err := drv.DeleteVolume(ctx, desc, d.Path); err != nil {
				// One disk the pool will not delete must not fail every
				// run: it stays reported, and the next run tries again.
				activity.GetLogger(ctx).Warn("cannot delete an orphan disk", "pool", p.UUID, "path", d.Path, "err", err)
				res.Skipped++
				continue
			}
			refreshPoolUsed(ctx, a.DB, drv, desc, p.ID)
			err = a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				if _, err := tx.NewDelete().Model((*models.PoolOrphan)(nil)).Where("pool_id = ? AND path = ?", p.ID, d.Path).Exec(ctx); err != nil {
					return err
				}
				return maintEvent(ctx, tx, EventInput{Type: "STORAGE.ORPHAN.DELETE", Level: "WARN", ResourceType: "StoragePool", ResourceUUID: p.UUID,
					Description: fmt.Sprintf("deleted orphan %s %s (%d bytes) from primary storage %s: orphaned for %d s, past storage.orphan.cleanup.delay",
						what, d.Path, d.SizeBytes, p.Name, d.AgeSeconds)}, "delete/"+d.Path)
			})
			if err != nil {
				return res, err
			}
			res.Repaired++
		default:
			return res, fmt.Errorf("unknown orphan disk action %q", act.Kind)
		}
	}
	return res, nil
}

// orphanFate says in a report what becomes of the disk.
func orphanFate(acts []MaintDiskAction, path string) string {
	for _, a := range acts {
		if a.Kind == MaintDiskDelete && a.Disk.Path == path {
			return "deleted now: it is past storage.orphan.cleanup.delay"
		}
	}
	return "left as it is; storage.orphan.cleanup.delay says whether and when such disks are deleted"
}
