package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
)

// DisableAccountInput is a disableAccount job: lock=true locks the account
// (its users cannot log in), lock=false disables it.
type DisableAccountInput struct {
	AccountUUID string
	Lock        bool
	Actor       activities.Actor
}

// DisableAccount locks or disables an account. CloudStack also stops the
// account's VMs when disabling; that step joins here with VMs.
func DisableAccount(ctx workflow.Context, in DisableAccountInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		st := activities.AccountStateInput{AccountUUID: in.AccountUUID, State: "disabled", EventType: "ACCOUNT.DISABLE", Actor: in.Actor}
		if in.Lock {
			st.State = "locked"
		}
		if err := workflow.ExecuteActivity(withInventory(ctx), tenancyAct.AccountSetState, st).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return JobOutcome{ResultKey: "account", ResultType: "Account", ResultUUID: in.AccountUUID}, nil
	})
}

// DisableUserInput is a disableUser job.
type DisableUserInput struct {
	UserUUID string
	Actor    activities.Actor
}

// DisableUser disables a user: its keys and sessions stop working.
func DisableUser(ctx workflow.Context, in DisableUserInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		st := activities.UserStateInput{UserUUID: in.UserUUID, State: "disabled", EventType: "USER.DISABLE", Actor: in.Actor}
		if err := workflow.ExecuteActivity(withInventory(ctx), tenancyAct.UserSetState, st).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return JobOutcome{ResultKey: "user", ResultType: "User", ResultUUID: in.UserUUID}, nil
	})
}
