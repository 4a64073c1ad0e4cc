package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
)

var affinityAct *activities.Affinity

// CreateAffinityGroupInput is a createAffinityGroup job.
type CreateAffinityGroupInput = activities.AffinityGroupCreateInput

// CreateAffinityGroup creates an affinity group; the job's result is the
// group.
func CreateAffinityGroup(ctx workflow.Context, in CreateAffinityGroupInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		if err := workflow.ExecuteActivity(withInventory(ctx), affinityAct.AffinityGroupCreate, in).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return JobOutcome{ResultKey: "affinitygroup", ResultType: "AffinityGroup", ResultUUID: in.UUID}, nil
	})
}

// DeleteAffinityGroupInput is a deleteAffinityGroup job.
type DeleteAffinityGroupInput = activities.AffinityGroupDeleteInput

// DeleteAffinityGroup deletes an affinity group that holds no VM.
func DeleteAffinityGroup(ctx workflow.Context, in DeleteAffinityGroupInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		err := workflow.ExecuteActivity(withInventory(ctx), affinityAct.AffinityGroupDelete, in).Get(ctx, nil)
		return JobOutcome{}, err
	})
}

// UpdateVMAffinityGroupInput is an updateVMAffinityGroup job.
type UpdateVMAffinityGroupInput = activities.AffinityGroupSetVMInput

// AffinityVMRenderer names the renderer of updateVMAffinityGroup's result
// (the VM, as listVirtualMachines shows it once VMs have their renderer).
const AffinityVMRenderer = "AffinityGroupVM"

// UpdateVMAffinityGroup replaces a stopped VM's affinity groups; the job's
// result is the VM.
func UpdateVMAffinityGroup(ctx workflow.Context, in UpdateVMAffinityGroupInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		if err := workflow.ExecuteActivity(withInventory(ctx), affinityAct.AffinityGroupSetVM, in).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return JobOutcome{ResultKey: "virtualmachine", ResultType: AffinityVMRenderer, ResultUUID: in.VMUUID}, nil
	})
}
