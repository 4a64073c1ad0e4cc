package workflows

import (
	"time"

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
// disabled), its VMs are moved away, and it ends in Maintenance. When the
// VMs cannot all be moved it ends in ErrorInPrepareForMaintenance with the
// reason.
func PrepareHostForMaintenance(ctx workflow.Context, in HostMaintenanceInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		ictx := withInventory(ctx)
		if err := workflow.ExecuteActivity(ictx, hostAct.HostMaintenanceBegin, in).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		// Evacuation: a no-op step until the VM workflows (issue 5) make it
		// live-migrate the host's VMs; it is in the history already so that
		// filling it in changes no workflow shape.
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
