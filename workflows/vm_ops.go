package workflows

import (
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/models"
)

// The lifecycle jobs of a VM. The API moves the VM into a transitional
// state with a guarded update before it starts one (Starting for start and
// reboot, Stopping for stop and destroy, Migrating, Expunging), so a VM has
// at most one job at a time and a VM in the wrong state is refused at
// once; the job moves it out, whatever happens.

// VMOpInput is a lifecycle job on one VM.
type VMOpInput struct {
	VMUUID string
	// Forced stops without a graceful shutdown (stopVirtualMachine forced).
	Forced bool
	// Pins for startVirtualMachine (admins' hostid, podid, clusterid).
	Pins activities.VMPins
	// PrevState is the state the API moved the VM from (destroy goes back
	// to it when it fails).
	PrevState string
	// Expunge destroys and expunges at once (destroyVirtualMachine).
	Expunge bool
	// TargetHostUUID is where migrateVirtualMachine moves the VM.
	TargetHostUUID string
	// Description is the event text of a change made by the API (scale).
	Description string
	Actor       activities.Actor
}

// StartVM starts a Stopped VM: it is placed again (its last host first
// when it still has room, else wherever the planner finds it), then goes
// through the same steps as a deployment. A failure undoes what this start
// did and leaves the VM Stopped with the reason.
func StartVM(ctx workflow.Context, in VMOpInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		s := &startVM{vm: in.VMUUID, pins: in.Pins, actor: in.Actor}
		if err := s.run(ctx); err != nil {
			return JobOutcome{}, err
		}
		return vmOutcome(in.VMUUID), nil
	})
}

// StopVM stops a VM: it is shut down and undefined on its host, which it
// then no longer holds (its capacity is given back). When the host refuses,
// the VM stays Running with the reason; a forced stop marks it Stopped all
// the same, as CloudStack does (the reconciler reports it if it still
// runs there).
func StopVM(ctx workflow.Context, in VMOpInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		lctx := withLocalInventory(ctx)
		err := workflow.ExecuteActivity(withVMDriver(ctx, 10*time.Minute), vmAct.VMStopOnHost,
			activities.VMStopInput{VMUUID: in.VMUUID, Forced: in.Forced}).Get(ctx, nil)
		if err != nil {
			v := workflow.GetVersion(ctx, "vm-forced-stop-despite-host", workflow.DefaultVersion, 1)
			if v == workflow.DefaultVersion || !in.Forced {
				return JobOutcome{}, vmOpFailed(ctx, in, "stop", "VM.STOP", models.VMStopping, models.VMRunning, err)
			}
			_, reason := vmFailure(err)
			workflow.GetLogger(ctx).Warn("forced stop: the host could not be told; marking the VM Stopped", "vm", in.VMUUID, "reason", reason)
		}
		done := activities.VMStoppedInput{VMUUID: in.VMUUID, To: models.VMStopped, EventType: "VM.STOP", Actor: in.Actor}
		if err := workflow.ExecuteLocalActivity(lctx, vmAct.VMStopped, done).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return vmOutcome(in.VMUUID), nil
	})
}

// RebootVM reboots a Running VM on its host (in Starting meanwhile).
func RebootVM(ctx workflow.Context, in VMOpInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		err := workflow.ExecuteActivity(withVMDriver(ctx, 10*time.Minute), vmAct.VMRebootOnHost, activities.VMRefInput{VMUUID: in.VMUUID}).Get(ctx, nil)
		if err != nil {
			return JobOutcome{}, vmOpFailed(ctx, in, "reboot", "VM.REBOOT", models.VMStarting, models.VMRunning, err)
		}
		mark := activities.VMMarkInput{VMUUID: in.VMUUID, From: []string{models.VMStarting}, To: models.VMRunning, EventType: "VM.REBOOT", Actor: in.Actor}
		if err := workflow.ExecuteLocalActivity(withLocalInventory(ctx), vmAct.VMMark, mark).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return vmOutcome(in.VMUUID), nil
	})
}

// DestroyVM destroys a VM (in Stopping meanwhile): it is powered off and
// undefined where it runs and gives its host back; it keeps its volumes
// and addresses until expunged (destroyed volumes and the VM no longer
// count against the account). With Expunge it is expunged at once.
func DestroyVM(ctx workflow.Context, in VMOpInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		lctx := withLocalInventory(ctx)
		err := workflow.ExecuteActivity(withVMDriver(ctx, 10*time.Minute), vmAct.VMStopOnHost,
			activities.VMStopInput{VMUUID: in.VMUUID, Forced: true}).Get(ctx, nil)
		if err != nil {
			back := in.PrevState
			if back == "" {
				back = models.VMRunning
			}
			return JobOutcome{}, vmOpFailed(ctx, in, "destroy", "VM.DESTROY", models.VMStopping, back, err)
		}
		done := activities.VMStoppedInput{VMUUID: in.VMUUID, To: models.VMDestroyed, EventType: "VM.DESTROY",
			WasError: in.PrevState == models.VMError, Actor: in.Actor}
		if err := workflow.ExecuteLocalActivity(lctx, vmAct.VMStopped, done).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		if in.Expunge {
			mark := activities.VMMarkInput{VMUUID: in.VMUUID, From: []string{models.VMDestroyed}, To: models.VMExpunging}
			if err := workflow.ExecuteLocalActivity(lctx, vmAct.VMMark, mark).Get(ctx, nil); err != nil {
				return JobOutcome{}, err
			}
			if err := expungeVM(ctx, in); err != nil {
				return JobOutcome{}, err
			}
		}
		return vmOutcome(in.VMUUID), nil
	})
}

// ExpungeVM removes a destroyed VM for good (in Expunging meanwhile): its
// volumes are deleted, its addresses freed, its NICs and row removed. It is
// idempotent, so a failed expunge is finished by expunging again.
func ExpungeVM(ctx workflow.Context, in VMOpInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		if err := expungeVM(ctx, in); err != nil {
			return JobOutcome{}, err
		}
		return JobOutcome{}, nil
	})
}

func expungeVM(ctx workflow.Context, in VMOpInput) error {
	return workflow.ExecuteActivity(withVMDriver(ctx, 30*time.Minute), vmAct.VMExpunge,
		activities.VMExpungeInput{VMUUID: in.VMUUID, Actor: in.Actor}).Get(ctx, nil)
}

// ScaleVM records a stopped VM's change of service offering, which the API
// made with a guarded update (the VM must be Stopped; the new size is
// placed at its next start).
func ScaleVM(ctx workflow.Context, in VMOpInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		ev := activities.EventInput{Actor: in.Actor, Type: "VM.UPGRADE", ResourceType: "VirtualMachine", ResourceUUID: in.VMUUID,
			Description: in.Description}
		if err := workflow.ExecuteActivity(withInventory(ctx), tenancyAct.EventRecord, ev).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return vmOutcome(in.VMUUID), nil
	})
}

// MigrateVM moves a Running VM live to another host of its cluster (in
// Migrating meanwhile): the target's capacity is reserved first, the
// driver migrates, then the source's is given back. On failure the target's
// reservation is given back and the VM stays Running where it was.
func MigrateVM(ctx workflow.Context, in VMOpInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		lctx := withLocalInventory(ctx)
		mig := activities.VMMigrateInput{VMUUID: in.VMUUID, TargetHostUUID: in.TargetHostUUID, Actor: in.Actor}
		err := workflow.ExecuteLocalActivity(lctx, vmAct.VMMigrateReserve, mig).Get(ctx, nil)
		if err == nil {
			err = workflow.ExecuteActivity(withVMDriver(ctx, time.Hour), vmAct.VMMigrateOnHost, mig).Get(ctx, nil)
		}
		if err != nil {
			code, reason := vmFailure(err)
			dctx, _ := workflow.NewDisconnectedContext(ctx)
			mig.Reason = reason
			if aerr := workflow.ExecuteLocalActivity(withLocalInventory(dctx), vmAct.VMMigrateAbort, mig).Get(dctx, nil); aerr != nil {
				workflow.GetLogger(ctx).Error("cannot abort the migration", "vm", in.VMUUID, "err", aerr)
			}
			return JobOutcome{}, vmError(code, "migrate", reason)
		}
		if err := workflow.ExecuteLocalActivity(lctx, vmAct.VMMigrateFinish, mig).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return vmOutcome(in.VMUUID), nil
	})
}

// SettleVMInput names a VM to settle.
type SettleVMInput = activities.VMRefInput

// SettleVMs settles VMs left in a transitional state by jobs that no longer
// run (see activities.SettleVM): the job repair path (a VirtualMachine job
// found terminated, cancelled or timed out) and the scheduled reconciler
// start it on the worker's task queue, where the hypervisor drivers are,
// with an internal workflow ID (ntemporal.InternalID("settle", vm uuid)) so
// that one VM is settled once at a time. It returns each VM's final state.
func SettleVMs(ctx workflow.Context, in []SettleVMInput) ([]string, error) {
	out := make([]string, len(in))
	for i, vm := range in {
		err := workflow.ExecuteActivity(withVMDriver(ctx, 10*time.Minute), vmAct.VMSettle, vm).Get(ctx, &out[i])
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// vmOpFailed moves the VM back from its transitional state with the reason
// and returns the job's error.
func vmOpFailed(ctx workflow.Context, in VMOpInput, verb, event, from, back string, err error) error {
	code, reason := vmFailure(err)
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	mark := activities.VMMarkInput{VMUUID: in.VMUUID, From: []string{from}, To: back, Reason: reason, EventType: event, Actor: in.Actor}
	if merr := workflow.ExecuteLocalActivity(withLocalInventory(dctx), vmAct.VMMark, mark).Get(dctx, nil); merr != nil {
		workflow.GetLogger(ctx).Error("cannot move the VM back", "vm", in.VMUUID, "to", back, "err", merr)
	}
	return vmError(code, verb, reason)
}

// ---- guest networks ----

// DeleteNetworkInput is a deleteNetwork job.
type DeleteNetworkInput = activities.NetworkGuestInput

// DeleteNetwork removes a guest network that no NIC uses (536 otherwise),
// with its IP ranges and addresses.
func DeleteNetwork(ctx workflow.Context, in DeleteNetworkInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		if err := workflow.ExecuteLocalActivity(withLocalInventory(ctx), ipamAct.NetworkGuestDelete, in).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return JobOutcome{}, nil
	})
}

// UpdateNetworkInput is an updateNetwork job.
type UpdateNetworkInput = activities.NetworkGuestUpdateInput

// UpdateNetwork changes a guest network's names and settings.
func UpdateNetwork(ctx workflow.Context, in UpdateNetworkInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		if err := workflow.ExecuteLocalActivity(withLocalInventory(ctx), ipamAct.NetworkGuestUpdate, in).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return JobOutcome{ResultKey: "network", ResultType: "Network", ResultUUID: in.NetworkUUID}, nil
	})
}
