package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
)

// snapAct names the snapshot activities.
var snapAct *activities.Snapshots

// CreateSnapshot is the createSnapshot job: the snapshot row exists
// (Allocated) and goes Creating > BackingUp > BackedUp.
func CreateSnapshot(ctx workflow.Context, in activities.SnapshotInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		out := JobOutcome{ResultKey: "snapshot", ResultType: "Snapshot", ResultUUID: in.SnapshotUUID}
		return out, takeSnapshot(ctx, in)
	})
}

// takeSnapshot snapshots the volume on its pool, backs the snapshot up to
// secondary storage (heartbeating its progress), and marks it BackedUp.
// Any failure removes what was made, backup and primary snapshot, and
// leaves the snapshot Error and removed: never half-made.
func takeSnapshot(ctx workflow.Context, in activities.SnapshotInput) (err error) {
	ictx := withInventory(ctx)
	defer func() {
		if err != nil {
			dctx, _ := workflow.NewDisconnectedContext(withDriver(ctx, storageCallTimeout))
			undo := activities.SnapshotFailInput{SnapshotUUID: in.SnapshotUUID, Reason: reasonOf(err), Actor: in.Actor}
			if uerr := workflow.ExecuteActivity(dctx, snapAct.SnapshotUndo, undo).Get(dctx, nil); uerr != nil {
				workflow.GetLogger(ctx).Error("cannot undo a failed snapshot", "snapshot", in.SnapshotUUID, "err", uerr)
			}
		}
	}()
	var begin activities.SnapshotBeginResult
	if err := workflow.ExecuteActivity(ictx, snapAct.SnapshotBegin, in).Get(ctx, &begin); err != nil {
		return err
	}
	if begin.Done {
		return nil
	}
	if err := workflow.ExecuteActivity(withDriver(ctx, storageCallTimeout), snapAct.SnapshotOnPrimary, in).Get(ctx, nil); err != nil {
		return err
	}
	if err := workflow.ExecuteActivity(withDriver(ctx, storageCopyTimeout), snapAct.SnapshotBackup, in).Get(ctx, nil); err != nil {
		return err
	}
	return workflow.ExecuteActivity(ictx, snapAct.SnapshotFinish, in).Get(ctx, nil)
}

// DeleteSnapshot is the deleteSnapshot job: Destroying, its backup and
// primary copy deleted, then Destroyed. A failure part-way leaves it
// Destroying; deleting it again resumes.
func DeleteSnapshot(ctx workflow.Context, in activities.SnapshotInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		return JobOutcome{}, deleteSnapshot(ctx, in)
	})
}

func deleteSnapshot(ctx workflow.Context, in activities.SnapshotInput) error {
	ictx := withInventory(ctx)
	var begin activities.SnapshotBeginResult
	if err := workflow.ExecuteActivity(ictx, snapAct.SnapshotDeleteBegin, in).Get(ctx, &begin); err != nil {
		return err
	}
	if begin.Done {
		return nil
	}
	if err := workflow.ExecuteActivity(withDriver(ctx, storageCallTimeout), snapAct.SnapshotDeleteData, in).Get(ctx, nil); err != nil {
		return err
	}
	return workflow.ExecuteActivity(ictx, snapAct.SnapshotDeleteFinish, in).Get(ctx, nil)
}

// RevertSnapshot is the revertSnapshot job: the volume (detached, or of a
// stopped VM) goes RevertSnapshotting, the driver reverts it, and it is
// Ready again with the snapshot's size; a failure returns it as it was.
func RevertSnapshot(ctx workflow.Context, in activities.SnapshotInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		out := JobOutcome{ResultKey: "snapshot", ResultType: "Snapshot", ResultUUID: in.SnapshotUUID}
		ictx := withInventory(ctx)
		var st activities.SnapshotRevertState
		if err := workflow.ExecuteActivity(ictx, snapAct.SnapshotRevertBegin, in).Get(ctx, &st); err != nil {
			return out, err
		}
		fin := activities.SnapshotRevertFinishInput{SnapshotUUID: in.SnapshotUUID, State: st, Actor: in.Actor}
		if err := workflow.ExecuteActivity(withDriver(ctx, storageCallTimeout), snapAct.SnapshotRevertOnPool, in).Get(ctx, nil); err != nil {
			fin.Failed, fin.Reason = true, reasonOf(err)
			dctx, _ := workflow.NewDisconnectedContext(ictx)
			if uerr := workflow.ExecuteActivity(dctx, snapAct.SnapshotRevertFinish, fin).Get(dctx, nil); uerr != nil {
				workflow.GetLogger(ctx).Error("cannot undo a failed revert", "snapshot", in.SnapshotUUID, "err", uerr)
			}
			return out, err
		}
		return out, workflow.ExecuteActivity(ictx, snapAct.SnapshotRevertFinish, fin).Get(ctx, nil)
	})
}

// CreateTemplateFromVolume is the createTemplate job: the template's rows
// exist (Inactive, its copy NOT_DOWNLOADED); the data is written to the
// image store from the volume or the snapshot, and the template activated.
// A failure deletes what was written and removes the template.
func CreateTemplateFromVolume(ctx workflow.Context, in activities.SnapshotTemplateInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		out := JobOutcome{ResultKey: "template", ResultType: "Template", ResultUUID: in.TemplateUUID}
		ictx := withInventory(ctx)
		var size int64
		err := workflow.ExecuteActivity(withDriver(ctx, storageCopyTimeout), snapAct.SnapshotTemplateCopy, in).Get(ctx, &size)
		if err == nil {
			err = workflow.ExecuteActivity(ictx, snapAct.SnapshotTemplateFinish, activities.SnapshotTemplateFinishInput{SnapshotTemplateInput: in, Size: size}).Get(ctx, nil)
		}
		if err != nil {
			dctx, _ := workflow.NewDisconnectedContext(withDriver(ctx, storageCallTimeout))
			fail := activities.SnapshotTemplateFinishInput{SnapshotTemplateInput: in, Failed: true, Reason: reasonOf(err)}
			if uerr := workflow.ExecuteActivity(dctx, snapAct.SnapshotTemplateFinish, fail).Get(dctx, nil); uerr != nil {
				workflow.GetLogger(ctx).Error("cannot undo a failed createTemplate", "template", in.TemplateUUID, "err", uerr)
			}
			return out, err
		}
		return out, nil
	})
}
