package workflows

import (
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
)

// AttachISO is the attachIso job: the ISO is recorded as the VM's; when
// the VM runs, the ISO is copied to its root volume's pool (once per
// pool) and put into its CD-ROM drive live; a stopped VM gets it at its
// next start. A failure ejects it again and forgets it.
func AttachISO(ctx workflow.Context, in activities.VMISOInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		return vmOutcome(in.VMUUID), attachISO(ctx, in)
	})
}

func attachISO(ctx workflow.Context, in activities.VMISOInput) (err error) {
	var st activities.VMISOState
	if err := workflow.ExecuteActivity(withInventory(ctx), vmAct.VMISORecord, in).Get(ctx, &st); err != nil {
		return err
	}
	if !st.Running {
		return nil
	}
	var undo undoStack
	defer func() {
		if err != nil {
			undo.run(ctx, err)
		}
	}()
	undo.push(func(ctx workflow.Context) error {
		undoIn := in
		undoIn.Undo = true
		return workflow.ExecuteActivity(withInventory(ctx), vmAct.VMISOForget, undoIn).Get(ctx, nil)
	})
	ref := activities.VMRefInput{VMUUID: in.VMUUID}
	if err := workflow.ExecuteActivity(withVMDriver(ctx, time.Hour), vmAct.VMCopyISO, ref).Get(ctx, nil); err != nil {
		return err
	}
	// Pushed before the call: an attempt that timed out may have inserted it.
	undo.push(func(ctx workflow.Context) error {
		return workflow.ExecuteActivity(withVMDriver(ctx, storageCallTimeout), vmAct.VMISOEject, ref).Get(ctx, nil)
	})
	return workflow.ExecuteActivity(withVMDriver(ctx, storageCallTimeout), vmAct.VMISOInsert, ref).Get(ctx, nil)
}

// DetachISO is the detachIso job: the CD-ROM drive of a running VM is
// emptied live, then the VM is recorded without its ISO. A failed eject
// changes nothing.
func DetachISO(ctx workflow.Context, in activities.VMISOInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		ref := activities.VMRefInput{VMUUID: in.VMUUID}
		if err := workflow.ExecuteActivity(withVMDriver(ctx, storageCallTimeout), vmAct.VMISOEject, ref).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return vmOutcome(in.VMUUID), workflow.ExecuteActivity(withInventory(ctx), vmAct.VMISOForget, in).Get(ctx, nil)
	})
}
