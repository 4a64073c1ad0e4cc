package workflows

import (
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/models"
)

// vmSnapAct names the VM snapshot activities.
var vmSnapAct *activities.VMSnapshots

// vmSnapshotTimeout bounds one hypervisor call on VM snapshots: a snapshot
// with memory writes the guest's RAM out, a delete merges disks.
const vmSnapshotTimeout = 30 * time.Minute

// CreateVMSnapshot is the createVMSnapshot job: the snapshot row exists
// (Allocated) and goes Creating > Ready, the VM's current snapshot. Any
// failure removes what the hypervisor made and leaves the snapshot Error
// and removed.
func CreateVMSnapshot(ctx workflow.Context, in activities.VMSnapshotInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		out := JobOutcome{ResultKey: "vmsnapshot", ResultType: "VMSnapshot", ResultUUID: in.SnapshotUUID}
		return out, takeVMSnapshot(ctx, in)
	})
}

func takeVMSnapshot(ctx workflow.Context, in activities.VMSnapshotInput) (err error) {
	ictx := withInventory(ctx)
	defer func() {
		if err != nil {
			dctx, _ := workflow.NewDisconnectedContext(withVMDriver(ctx, vmSnapshotTimeout))
			undo := activities.VMSnapshotFailInput{SnapshotUUID: in.SnapshotUUID, Reason: reasonOf(err), Actor: in.Actor}
			if uerr := workflow.ExecuteActivity(dctx, vmSnapAct.VMSnapshotUndo, undo).Get(dctx, nil); uerr != nil {
				workflow.GetLogger(ctx).Error("cannot undo a failed VM snapshot", "vmsnapshot", in.SnapshotUUID, "err", uerr)
			}
		}
	}()
	var begin activities.VMSnapshotBeginResult
	if err := workflow.ExecuteActivity(ictx, vmSnapAct.VMSnapshotBegin, in).Get(ctx, &begin); err != nil {
		return err
	}
	if begin.Done {
		return nil
	}
	if err := workflow.ExecuteActivity(withVMDriver(ctx, vmSnapshotTimeout), vmSnapAct.VMSnapshotTake, in).Get(ctx, nil); err != nil {
		return err
	}
	return workflow.ExecuteActivity(ictx, vmSnapAct.VMSnapshotFinish, in).Get(ctx, nil)
}

// RevertVMSnapshotInput is a revertToVMSnapshot job. The API moved the
// snapshot to Reverting and the VM from PrevState (Running or Stopped) to
// Transit: Starting when it ends Running (a snapshot with memory),
// Stopping when it ends Stopped.
type RevertVMSnapshotInput struct {
	SnapshotUUID string
	VMUUID       string
	PrevState    string
	Transit      string
	Actor        activities.Actor
}

// RevertVMSnapshot is the revertToVMSnapshot job: the hypervisor reverts
// the VM, which ends Running after a DiskAndMemory snapshot and Stopped
// after a Disk one (a Running VM gives its host's capacity back, as a
// stop does); the snapshot becomes current. A failure returns the VM to
// its state with the reason and the snapshot to Ready.
func RevertVMSnapshot(ctx workflow.Context, in RevertVMSnapshotInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		ictx, lctx := withInventory(ctx), withLocalInventory(ctx)
		snap := activities.VMSnapshotInput{SnapshotUUID: in.SnapshotUUID, Actor: in.Actor}
		fin := activities.VMSnapshotRevertFinishInput{SnapshotUUID: in.SnapshotUUID, Actor: in.Actor}
		// A Stopped VM reverted to a DiskAndMemory snapshot (refused before
		// this version, so no older history comes here) is started first.
		if in.PrevState == models.VMStopped && in.Transit == models.VMStarting &&
			workflow.GetVersion(ctx, "vmsnapshot-revert-memory-stopped", workflow.DefaultVersion, 1) == 1 {
			return revertStoppedToMemory(ctx, in, snap, fin)
		}
		var st string
		err := workflow.ExecuteActivity(withVMDriver(ctx, vmSnapshotTimeout), vmSnapAct.VMSnapshotRevertOnHost, snap).Get(ctx, &st)
		if err != nil {
			dctx, _ := workflow.NewDisconnectedContext(ictx)
			fin.Failed, fin.Reason = true, reasonOf(err)
			if ferr := workflow.ExecuteActivity(dctx, vmSnapAct.VMSnapshotRevertFinish, fin).Get(dctx, nil); ferr != nil {
				workflow.GetLogger(ctx).Error("cannot end a failed revert", "vmsnapshot", in.SnapshotUUID, "err", ferr)
			}
			op := VMOpInput{VMUUID: in.VMUUID, Actor: in.Actor}
			return JobOutcome{}, vmOpFailed(ctx, op, "revert", "VMSNAPSHOT.REVERTTO", in.Transit, in.PrevState, err)
		}
		switch {
		case st == string(models.VMRunning):
			mark := activities.VMMarkInput{VMUUID: in.VMUUID, From: []string{in.Transit}, To: models.VMRunning, Actor: in.Actor}
			err = workflow.ExecuteLocalActivity(lctx, vmAct.VMMark, mark).Get(ctx, nil)
		case in.PrevState == models.VMRunning && in.Transit == models.VMStopping:
			done := activities.VMStoppedInput{VMUUID: in.VMUUID, To: models.VMStopped, EventType: "VM.STOP", Actor: in.Actor}
			err = workflow.ExecuteLocalActivity(lctx, vmAct.VMStopped, done).Get(ctx, nil)
		default:
			mark := activities.VMMarkInput{VMUUID: in.VMUUID, From: []string{in.Transit}, To: models.VMStopped, Actor: in.Actor}
			err = workflow.ExecuteLocalActivity(lctx, vmAct.VMMark, mark).Get(ctx, nil)
		}
		if err != nil {
			return JobOutcome{}, err
		}
		if err := workflow.ExecuteActivity(ictx, vmSnapAct.VMSnapshotRevertFinish, fin).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return vmOutcome(in.VMUUID), nil
	})
}

// revertStoppedToMemory reverts a Stopped VM to a DiskAndMemory snapshot,
// as CloudStack does, ending Running from the snapshot's memory: the VM is
// started through the start path (placed on the host that holds its
// snapshots, its capacity reserved, its NICs and volumes ready), then the
// running VM is reverted. A failed start leaves it Stopped with the reason;
// a failed revert leaves it Running as started; either way the snapshot is
// Ready again.
func revertStoppedToMemory(ctx workflow.Context, in RevertVMSnapshotInput, snap activities.VMSnapshotInput, fin activities.VMSnapshotRevertFinishInput) (JobOutcome, error) {
	ictx := withInventory(ctx)
	failed := func(err error) (JobOutcome, error) {
		dctx, _ := workflow.NewDisconnectedContext(ictx)
		fin.Failed, fin.Reason = true, reasonOf(err)
		if ferr := workflow.ExecuteActivity(dctx, vmSnapAct.VMSnapshotRevertFinish, fin).Get(dctx, nil); ferr != nil {
			workflow.GetLogger(ctx).Error("cannot end a failed revert", "vmsnapshot", in.SnapshotUUID, "err", ferr)
		}
		return JobOutcome{}, err
	}
	s := &startVM{vm: in.VMUUID, pins: activities.VMPins{ConsiderLastHost: true}, actor: in.Actor}
	if err := s.run(ctx); err != nil {
		return failed(err)
	}
	var st string
	if err := workflow.ExecuteActivity(withVMDriver(ctx, vmSnapshotTimeout), vmSnapAct.VMSnapshotRevertOnHost, snap).Get(ctx, &st); err != nil {
		code, reason := vmFailure(err)
		return failed(vmError(code, "revert", reason))
	}
	if err := workflow.ExecuteActivity(ictx, vmSnapAct.VMSnapshotRevertFinish, fin).Get(ctx, nil); err != nil {
		return JobOutcome{}, err
	}
	return vmOutcome(in.VMUUID), nil
}

// DeleteVMSnapshot is the deleteVMSnapshot job: the snapshot (Expunging)
// is deleted on the VM's host, then removed from the VM's tree. A failure
// leaves it Error with the reason (so its VM takes other jobs again);
// deleting it again retries.
func DeleteVMSnapshot(ctx workflow.Context, in activities.VMSnapshotInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		if err := workflow.ExecuteActivity(withVMDriver(ctx, vmSnapshotTimeout), vmSnapAct.VMSnapshotDeleteOnHost, in).Get(ctx, nil); err != nil {
			dctx, _ := workflow.NewDisconnectedContext(withInventory(ctx))
			f := activities.VMSnapshotFailInput{SnapshotUUID: in.SnapshotUUID, Reason: reasonOf(err), Actor: in.Actor}
			if ferr := workflow.ExecuteActivity(dctx, vmSnapAct.VMSnapshotDeleteFailed, f).Get(dctx, nil); ferr != nil {
				workflow.GetLogger(ctx).Error("cannot mark a failed VM snapshot delete", "vmsnapshot", in.SnapshotUUID, "err", ferr)
			}
			return JobOutcome{}, err
		}
		return JobOutcome{}, workflow.ExecuteActivity(withInventory(ctx), vmSnapAct.VMSnapshotDeleteFinish, in).Get(ctx, nil)
	})
}
