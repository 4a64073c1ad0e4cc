package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
)

// HostMaintenanceInput is a prepareHostForMaintenance or
// cancelHostMaintenance job.
type HostMaintenanceInput = activities.HostMaintenanceInput

// PrepareHostForMaintenance takes a host out of service: its resource state
// goes PrepareForMaintenance (the planner stops using it, its capacity is
// disabled), its running VMs are live-migrated to other hosts of its
// cluster (see evacuateHost), and it ends in Maintenance. When the VMs
// cannot all be moved it ends in ErrorInMaintenance, the job's error naming
// each VM left and why; cancelHostMaintenance (or preparing again) goes on
// from there.
func PrepareHostForMaintenance(ctx workflow.Context, in HostMaintenanceInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		ictx := withInventory(ctx)
		var ref activities.HostRef
		if err := workflow.ExecuteActivity(ictx, hostAct.HostMaintenanceBegin, in).Get(ctx, &ref); err != nil {
			return JobOutcome{}, err
		}
		if workflow.GetVersion(ctx, "host-maint-live-migrate", workflow.DefaultVersion, 1) >= 1 {
			return evacuateHost(ctx, in, ref)
		}
		// Before host-maint-live-migrate the evacuation step only counted
		// the host's VMs: jobs started then replay through here.
		evacuate := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: time.Hour,
			HeartbeatTimeout:    time.Minute,
			RetryPolicy: &temporal.RetryPolicy{
				InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 30 * time.Second,
				MaximumAttempts: 3, NonRetryableErrorTypes: nonRetryable,
			},
		})
		var ev activities.HostEvacuateResult
		err := workflow.ExecuteActivity(evacuate, hostAct.HostEvacuate, in).Get(ctx, &ev)
		if err != nil {
			e := cserr.As(err)
			end := activities.HostMaintenanceEndInput{HostUUID: in.HostUUID, Failed: true, Reason: e.Text, Actor: in.Actor}
			if ferr := workflow.ExecuteActivity(ictx, hostAct.HostMaintenanceEnd, end).Get(ctx, nil); ferr != nil {
				return JobOutcome{}, ferr
			}
			return JobOutcome{}, cserr.New(e.Code, "Unable to prepare the host for maintenance: %s", e.Text)
		}
		end := activities.HostMaintenanceEndInput{HostUUID: in.HostUUID, Actor: in.Actor}
		if err := workflow.ExecuteActivity(ictx, hostAct.HostMaintenanceEnd, end).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return JobOutcome{ResultKey: "host", ResultType: "Host", ResultUUID: in.HostUUID}, nil
	})
}

// CancelHostMaintenance returns a host from maintenance to Enabled; its
// capacity counts again.
func CancelHostMaintenance(ctx workflow.Context, in HostMaintenanceInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		if err := workflow.ExecuteActivity(withInventory(ctx), hostAct.HostMaintenanceCancel, in).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return JobOutcome{ResultKey: "host", ResultType: "Host", ResultUUID: in.HostUUID}, nil
	})
}

// maxParallelVMJobs bounds the VM jobs one maintenance job runs at once
// (a live migration moves a VM's memory over the network).
const maxParallelVMJobs = 4

// vmChildJob is one VM job a maintenance job runs as a child workflow.
type vmChildJob struct {
	JobID, VMUUID, VMName string
	Command, Summary      string // memo, as the API sets it on the jobs it starts
	Workflow              any
	Input                 VMOpInput
}

// runVMJobs runs VM jobs as child workflows whose IDs are their job ids
// (their rows written already), at most maxParallelVMJobs at once, and
// returns the VMs whose job failed, with the reason. Each job is a job of
// its own: it finishes (or undoes itself) whatever becomes of its parent.
func runVMJobs(ctx workflow.Context, jobs []vmChildJob) []activities.VMRefusal {
	var bad []activities.VMRefusal
	sel := workflow.NewSelector(ctx)
	next, running := 0, 0
	start := func() {
		j := jobs[next]
		next++
		running++
		cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
			WorkflowID:            j.JobID,
			WorkflowIDReusePolicy: enums.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
			ParentClosePolicy:     enums.PARENT_CLOSE_POLICY_ABANDON,
			Memo:                  map[string]any{"command": j.Command, "resource": "VirtualMachine " + j.VMUUID, "summary": j.Summary},
		})
		f := workflow.ExecuteChildWorkflow(cctx, j.Workflow, j.Input)
		sel.AddFuture(f, func(f workflow.Future) {
			running--
			if err := f.Get(ctx, nil); err != nil {
				_, reason := vmFailure(err)
				bad = append(bad, activities.VMRefusal{VMUUID: j.VMUUID, VMName: j.VMName, Reason: reason})
			}
		})
	}
	for next < len(jobs) && running < maxParallelVMJobs {
		start()
	}
	for running > 0 {
		sel.Select(ctx)
		for next < len(jobs) && running < maxParallelVMJobs {
			start()
		}
	}
	return bad
}

// evacuateHost is PrepareHostForMaintenance's evacuation (version 1 of
// host-maint-live-migrate): VMEvacuateBegin plans every running VM's
// target in the cluster and reserves it all at once, or refuses when some
// VM cannot move, moving none; each move then runs as the VM's own
// migrateVirtualMachine job (MigrateVM as a child workflow whose ID is its
// job id), a few at a time (runVMJobs). A migration that fails leaves its VM Running
// where it was (MigrateVM's own undo); the VMs moved stay moved. Then the
// host must hold no running VM.
func evacuateHost(ctx workflow.Context, in HostMaintenanceInput, ref activities.HostRef) (JobOutcome, error) {
	ictx := withInventory(ctx)
	failed := func(code int, reason string) (JobOutcome, error) {
		end := activities.HostMaintenanceEndInput{HostUUID: in.HostUUID, Failed: true, UnableToMigrate: true, Reason: reason, Actor: in.Actor}
		if err := workflow.ExecuteActivity(ictx, hostAct.HostMaintenanceEnd, end).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return JobOutcome{}, cserr.New(code, "Unable to prepare host %s for maintenance: %s", ref.Name, reason)
	}
	jobID := workflow.GetInfo(ctx).WorkflowExecution.ID
	var plan activities.VMEvacuatePlan
	pctx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 2 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 30 * time.Second,
			MaximumAttempts: 5, NonRetryableErrorTypes: nonRetryable,
		},
	})
	err := workflow.ExecuteActivity(pctx, vmAct.VMEvacuateBegin, activities.VMEvacuateInput{HostUUID: in.HostUUID, JobID: jobID, Actor: in.Actor}).Get(ctx, &plan)
	if err != nil {
		e := cserr.As(err)
		return failed(e.Code, e.Text)
	}
	if len(plan.Refused) > 0 {
		return failed(cserr.InsufficientCap, fmt.Sprintf("%d virtual machine(s) cannot be migrated off it, so none was: %s",
			len(plan.Refused), activities.RefusalText(plan.Refused)))
	}
	jobs := make([]vmChildJob, len(plan.Moves))
	for i, m := range plan.Moves {
		jobs[i] = vmChildJob{JobID: m.JobID, VMUUID: m.VMUUID, VMName: m.VMName, Command: "migrateVirtualMachine",
			Summary:  "migrate VM " + m.VMName + " to host " + m.TargetHostName + " (maintenance of host " + ref.Name + ")",
			Workflow: MigrateVM, Input: VMOpInput{VMUUID: m.VMUUID, TargetHostUUID: m.TargetHostUUID, Actor: in.Actor}}
	}
	bad := runVMJobs(ctx, jobs)
	if len(bad) > 0 {
		return failed(cserr.ResourceUnavailable, fmt.Sprintf("%d of %d virtual machine(s) could not be migrated off it (they run there still): %s",
			len(bad), len(plan.Moves), activities.RefusalText(bad)))
	}
	var left activities.HostEvacuateResult
	if err := workflow.ExecuteActivity(ictx, hostAct.HostEvacuate, in).Get(ctx, &left); err != nil {
		return JobOutcome{}, err
	}
	if left.Pending > 0 {
		return failed(cserr.ResourceUnavailable, fmt.Sprintf("%d virtual machine(s) still run on it", left.Pending))
	}
	end := activities.HostMaintenanceEndInput{HostUUID: in.HostUUID, Actor: in.Actor}
	if err := workflow.ExecuteActivity(ictx, hostAct.HostMaintenanceEnd, end).Get(ctx, nil); err != nil {
		return JobOutcome{}, err
	}
	return JobOutcome{ResultKey: "host", ResultType: "Host", ResultUUID: in.HostUUID}, nil
}
