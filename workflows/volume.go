package workflows

import (
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
)

// volAct names the volume activities.
var volAct *activities.Volumes

// Timeouts of storage driver calls: quick ones (create, resize, delete,
// attach) and copies (migration, backups, templates), which heartbeat.
const (
	storageCallTimeout = 10 * time.Minute
	storageCopyTimeout = 4 * time.Hour
)

// undoStack runs compensations in reverse order, on a disconnected
// context so that a cancelled job still undoes what it did.
type undoStack []func(ctx workflow.Context) error

func (u *undoStack) push(f func(ctx workflow.Context) error) { *u = append(*u, f) }

func (u undoStack) run(ctx workflow.Context, cause error) {
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	for i := len(u) - 1; i >= 0; i-- {
		if err := u[i](dctx); err != nil {
			workflow.GetLogger(ctx).Error("compensation failed", "step", i, "cause", cause, "err", err)
		}
	}
}

func reasonOf(err error) string { return cserr.As(err).Text }

// CreateVolumeInput is a createVolume job: the volume row exists
// (Allocated). A volume from a snapshot is created on a pool from the
// snapshot's backup; one with a VM is attached to it after.
type CreateVolumeInput struct {
	VolumeUUID     string
	SnapshotUUID   string
	HypervisorType string // of the snapshot's volume: the pools to consider
	PreferPoolID   int64  // the snapshot's volume's pool, when still there
	VMUUID         string
	DeviceID       int64
	Actor          activities.Actor
}

// CreateVolume is the createVolume job. A data disk without a VM stays
// Allocated until it is first attached (it then lands on a pool that VM
// reaches), as in CloudStack.
func CreateVolume(ctx workflow.Context, in CreateVolumeInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		out := JobOutcome{ResultKey: "volume", ResultType: "Volume", ResultUUID: in.VolumeUUID}
		if in.SnapshotUUID != "" {
			if err := createVolumeFromSnapshot(ctx, in); err != nil {
				return out, err
			}
		}
		ictx := withInventory(ctx)
		ref := activities.VolumeRefInput{VolumeUUID: in.VolumeUUID, Actor: in.Actor}
		if err := workflow.ExecuteActivity(ictx, volAct.VolumeCreated, ref).Get(ctx, nil); err != nil {
			return out, err
		}
		if in.VMUUID != "" {
			err := attachVolume(ctx, activities.VolumeAttachInput{VolumeUUID: in.VolumeUUID, VMUUID: in.VMUUID, DeviceID: in.DeviceID, Actor: in.Actor})
			return out, err
		}
		return out, nil
	})
}

// createVolumeFromSnapshot places the volume, creates it from the backup,
// and on failure deletes what it made and removes the volume (Error).
func createVolumeFromSnapshot(ctx workflow.Context, in CreateVolumeInput) (err error) {
	ictx, dctx := withInventory(ctx), withDriver(ctx, storageCopyTimeout)
	var undo undoStack
	defer func() {
		if err != nil {
			undo.run(ctx, err)
			dctx, _ := workflow.NewDisconnectedContext(ictx)
			fail := activities.VolumeFailInput{VolumeUUID: in.VolumeUUID, Reason: reasonOf(err), Actor: in.Actor}
			if ferr := workflow.ExecuteActivity(dctx, volAct.VolumeCreateFailed, fail).Get(dctx, nil); ferr != nil {
				workflow.GetLogger(ctx).Error("cannot mark the volume failed", "volume", in.VolumeUUID, "err", ferr)
			}
		}
	}()
	var place activities.VolumePlacement
	pin := activities.VolumePlaceInput{VolumeUUID: in.VolumeUUID, HypervisorType: in.HypervisorType, PreferPoolID: in.PreferPoolID}
	if err := workflow.ExecuteActivity(ictx, volAct.VolumePlace, pin).Get(ctx, &place); err != nil {
		return err
	}
	if err := workflow.ExecuteActivity(ictx, volAct.VolumeAllocate, activities.VolumeAllocateInput{VolumeUUID: in.VolumeUUID, PoolID: place.PoolID}).Get(ctx, nil); err != nil {
		return err
	}
	undo.push(func(ctx workflow.Context) error {
		return workflow.ExecuteActivity(withDriver(ctx, storageCallTimeout), volAct.VolumeUnallocate, activities.VolumeRefInput{VolumeUUID: in.VolumeUUID, Actor: in.Actor}).Get(ctx, nil)
	})
	return workflow.ExecuteActivity(dctx, volAct.VolumeCreateOnPool, activities.VolumeCreateInput{VolumeUUID: in.VolumeUUID, SnapshotUUID: in.SnapshotUUID}).Get(ctx, nil)
}

// AttachVolume is the attachVolume job.
func AttachVolume(ctx workflow.Context, in activities.VolumeAttachInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		return JobOutcome{ResultKey: "volume", ResultType: "Volume", ResultUUID: in.VolumeUUID}, attachVolume(ctx, in)
	})
}

// attachVolume reserves a device id on the VM; places and creates the
// volume on a pool the VM reaches when it has none; attaches it live when
// the VM runs; and records it. A failure undoes each step in reverse:
// detach, delete from the pool (releasing the allocation, back to
// Allocated), give back the device id.
func attachVolume(ctx workflow.Context, in activities.VolumeAttachInput) (err error) {
	ictx, dctx := withInventory(ctx), withDriver(ctx, storageCallTimeout)
	var st activities.VolumeAttachState
	if err := workflow.ExecuteActivity(ictx, volAct.VolumeAttachBegin, in).Get(ctx, &st); err != nil {
		return err
	}
	if st.Already {
		return nil
	}
	var undo undoStack
	defer func() {
		if err != nil {
			undo.run(ctx, err)
		}
	}()
	undo.push(func(ctx workflow.Context) error {
		return workflow.ExecuteActivity(withInventory(ctx), volAct.VolumeAttachUndo, in).Get(ctx, nil)
	})
	if st.NeedsPool {
		var place activities.VolumePlacement
		if err := workflow.ExecuteActivity(ictx, volAct.VolumePlace, activities.VolumePlaceInput{VolumeUUID: in.VolumeUUID, VMUUID: in.VMUUID}).Get(ctx, &place); err != nil {
			return err
		}
		if err := workflow.ExecuteActivity(ictx, volAct.VolumeAllocate, activities.VolumeAllocateInput{VolumeUUID: in.VolumeUUID, PoolID: place.PoolID}).Get(ctx, nil); err != nil {
			return err
		}
		undo.push(func(ctx workflow.Context) error {
			return workflow.ExecuteActivity(withDriver(ctx, storageCallTimeout), volAct.VolumeUnallocate, activities.VolumeRefInput{VolumeUUID: in.VolumeUUID, Actor: in.Actor}).Get(ctx, nil)
		})
		if err := workflow.ExecuteActivity(dctx, volAct.VolumeCreateOnPool, activities.VolumeCreateInput{VolumeUUID: in.VolumeUUID}).Get(ctx, nil); err != nil {
			return err
		}
	}
	hin := activities.VolumeHypervisorInput{VolumeUUID: in.VolumeUUID, VMUUID: in.VMUUID}
	// Pushed before the call: an attempt that timed out may have attached.
	undo.push(func(ctx workflow.Context) error {
		return workflow.ExecuteActivity(withDriver(ctx, storageCallTimeout), volAct.VolumeHypervisorDetach, hin).Get(ctx, nil)
	})
	if err := workflow.ExecuteActivity(dctx, volAct.VolumeHypervisorAttach, hin).Get(ctx, nil); err != nil {
		return err
	}
	return workflow.ExecuteActivity(ictx, volAct.VolumeAttachFinish, in).Get(ctx, nil)
}

// DetachVolume is the detachVolume job: detached live from a running VM,
// then recorded. A failed detach changes nothing.
func DetachVolume(ctx workflow.Context, in activities.VolumeAttachInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		out := JobOutcome{ResultKey: "volume", ResultType: "Volume", ResultUUID: in.VolumeUUID}
		hin := activities.VolumeHypervisorInput{VolumeUUID: in.VolumeUUID, VMUUID: in.VMUUID}
		if err := workflow.ExecuteActivity(withDriver(ctx, storageCallTimeout), volAct.VolumeHypervisorDetach, hin).Get(ctx, nil); err != nil {
			return out, err
		}
		return out, workflow.ExecuteActivity(withInventory(ctx), volAct.VolumeDetachFinish, in).Get(ctx, nil)
	})
}

// ResizeVolume is the resizeVolume job: growth reserved on the pool and in
// the account's count first, the driver resizes, then the new size is
// recorded; a failure gives the reservation back.
func ResizeVolume(ctx workflow.Context, in activities.VolumeResizeInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		out := JobOutcome{ResultKey: "volume", ResultType: "Volume", ResultUUID: in.VolumeUUID}
		ictx := withInventory(ctx)
		var st activities.VolumeResizeState
		if err := workflow.ExecuteActivity(ictx, volAct.VolumeResizeBegin, in).Get(ctx, &st); err != nil {
			return out, err
		}
		fin := activities.VolumeResizeFinishInput{VolumeResizeInput: in, OldSize: st.OldSize}
		if st.OnPool {
			if err := workflow.ExecuteActivity(withDriver(ctx, storageCallTimeout), volAct.VolumeResizeOnPool, in).Get(ctx, nil); err != nil {
				fin.Failed, fin.Reason = true, reasonOf(err)
				dctx, _ := workflow.NewDisconnectedContext(ictx)
				if uerr := workflow.ExecuteActivity(dctx, volAct.VolumeResizeFinish, fin).Get(dctx, nil); uerr != nil {
					workflow.GetLogger(ctx).Error("cannot undo a failed resize", "volume", in.VolumeUUID, "err", uerr)
				}
				return out, err
			}
		}
		return out, workflow.ExecuteActivity(ictx, volAct.VolumeResizeFinish, fin).Get(ctx, nil)
	})
}

// MigrateVolume is the migrateVolume job: the target's room reserved, the
// volume copied (heartbeating), the inventory switched to the copy, then
// the source copy deleted. A failure before the switch deletes the partial
// copy and returns the volume to its pool.
func MigrateVolume(ctx workflow.Context, in activities.VolumeMigrateInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (out JobOutcome, err error) {
		out = JobOutcome{ResultKey: "volume", ResultType: "Volume", ResultUUID: in.VolumeUUID}
		ictx := withInventory(ctx)
		var st activities.VolumeMigrateState
		if err := workflow.ExecuteActivity(ictx, volAct.VolumeMigrateBegin, in).Get(ctx, &st); err != nil {
			return out, err
		}
		var undo undoStack
		defer func() {
			if err != nil {
				undo.run(ctx, err)
			}
		}()
		undo.push(func(ctx workflow.Context) error {
			u := activities.VolumeMigrateUndoInput{VolumeUUID: in.VolumeUUID, State: st, Reason: reasonOf(err), Actor: in.Actor}
			return workflow.ExecuteActivity(withInventory(ctx), volAct.VolumeMigrateUndo, u).Get(ctx, nil)
		})
		undo.push(func(ctx workflow.Context) error {
			return workflow.ExecuteActivity(withDriver(ctx, storageCallTimeout), volAct.VolumeDeleteOnPool, activities.VolumeOnPoolInput{PoolID: st.DstPoolID, Path: st.SrcPath}).Get(ctx, nil)
		})
		var path string
		if err := workflow.ExecuteActivity(withDriver(ctx, storageCopyTimeout), volAct.VolumeMigrateCopy, st).Get(ctx, &path); err != nil {
			return out, err
		}
		sw := activities.VolumeMigrateSwitchInput{VolumeUUID: in.VolumeUUID, State: st, NewPath: path, Actor: in.Actor}
		if err := workflow.ExecuteActivity(ictx, volAct.VolumeMigrateSwitch, sw).Get(ctx, nil); err != nil {
			return out, err
		}
		undo = nil
		// The volume lives on the target now; a source copy that cannot be
		// deleted is logged, not a failed migration.
		src := activities.VolumeOnPoolInput{PoolID: st.SrcPoolID, Path: st.SrcPath}
		if derr := workflow.ExecuteActivity(withDriver(ctx, storageCallTimeout), volAct.VolumeDeleteOnPool, src).Get(ctx, nil); derr != nil {
			workflow.GetLogger(ctx).Error("cannot delete the source copy of a migrated volume", "volume", in.VolumeUUID, "err", derr)
		}
		return out, nil
	})
}

// DeleteVolume is the deleteVolume job (which the API runs synchronously):
// Destroy, deleted from its pool, then removed with its allocation. A
// failure on the pool leaves it Destroy; deleting it again resumes.
func DeleteVolume(ctx workflow.Context, in activities.VolumeRefInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		ictx := withInventory(ctx)
		var st activities.VolumeDeleteState
		if err := workflow.ExecuteActivity(ictx, volAct.VolumeDeleteBegin, in).Get(ctx, &st); err != nil {
			return JobOutcome{}, err
		}
		if st.Done {
			return JobOutcome{}, nil
		}
		if err := workflow.ExecuteActivity(withDriver(ctx, storageCallTimeout), volAct.VolumeDeleteOnPool, activities.VolumeOnPoolInput{PoolID: st.PoolID, Path: st.Path}).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return JobOutcome{}, workflow.ExecuteActivity(ictx, volAct.VolumeDeleteFinish, in).Get(ctx, nil)
	})
}
