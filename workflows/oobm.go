package workflows

import (
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
)

var oobmAct *activities.OOBM

// OutOfBandManagementInput is one out-of-band management job: enable or
// disable it for a host, cluster or zone, a power action, or a password
// change.
type OutOfBandManagementInput = activities.OOBMInput

// OutOfBandManagement runs enableOutOfBandManagementFor{Host,Cluster,Zone},
// their disable counterparts, issueOutOfBandManagementPowerAction and
// changeOutOfBandManagementPassword. The result is the host's (or scope's)
// out-of-band management as CloudStack shows it.
func OutOfBandManagement(ctx workflow.Context, in OutOfBandManagementInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		out := JobOutcome{ResultKey: "outofbandmanagement", ResultType: "OutOfBandManagement"}
		switch in.Op {
		case activities.OOBMOpEnable, activities.OOBMOpDisable:
			if err := workflow.ExecuteActivity(withInventory(ctx), oobmAct.OOBMSetEnabled, in).Get(ctx, nil); err != nil {
				return JobOutcome{}, err
			}
			enabled := in.Op == activities.OOBMOpEnable
			host := ""
			if in.Scope == "Host" {
				host = in.UUID
			}
			out.ResultUUID = activities.OOBMResultID(host, "", &enabled)
		case activities.OOBMOpPower:
			// Each action waits for its read-back within the timeout; the
			// activity gets that and room for the BMC's session setup.
			timeout := in.Timeout
			if timeout <= 0 {
				timeout = 60 * time.Second
			}
			var res activities.OOBMPowerResult
			if err := workflow.ExecuteActivity(withDriver(ctx, 2*timeout+time.Minute), oobmAct.OOBMPower, in).Get(ctx, &res); err != nil {
				return JobOutcome{}, err
			}
			out.ResultUUID = activities.OOBMResultID(in.UUID, in.Action, nil)
		case activities.OOBMOpPassword:
			if err := workflow.ExecuteActivity(withDriver(ctx, 3*time.Minute), oobmAct.OOBMChangePassword, in).Get(ctx, nil); err != nil {
				return JobOutcome{}, err
			}
			out.ResultUUID = activities.OOBMResultID(in.UUID, "", nil)
		}
		return out, nil
	})
}
