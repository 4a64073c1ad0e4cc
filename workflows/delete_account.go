package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	ntemporal "github.com/nimbus-cloud/nimbus/infra/temporal"
)

// tenancyAct names the domain, account and user activities.
var tenancyAct *activities.Tenancy

// DeleteAccountInput is the account a deleteAccount job removes and who
// asked (for the events).
type DeleteAccountInput struct {
	AccountUUID string
	Actor       activities.Actor
}

// CleanupStep removes one kind of resource an account owns.
type CleanupStep struct {
	Kind     string
	Activity any // func(ctx, activities.AccountCleanupInput) (int64, error)
}

// AccountCleanupSteps remove everything an account owns, one activity per
// kind of resource, in order: what depends on others goes first. Later issues
// add their kinds here (VMs, volumes, snapshots, public IPs, networks...)
// before the users.
var AccountCleanupSteps = []CleanupStep{
	{Kind: "sessions", Activity: tenancyAct.AccountDeleteSessions},
	{Kind: "keys", Activity: tenancyAct.AccountDeleteKeys},
	{Kind: "virtual machines", Activity: vmAct.VMExpungeAccount},
	{Kind: "snapshot policies", Activity: snapAct.SnapshotPolicyAccountCleanup},
	{Kind: "snapshots", Activity: snapAct.SnapshotAccountCleanup},
	{Kind: "volumes", Activity: volAct.VolumeAccountCleanup},
	{Kind: "users", Activity: tenancyAct.AccountDeleteUsers},
}

// DeleteAccount removes an account and everything it owns. As a job (its ID
// is a job id) it keeps the job row current; deleteDomain also runs it as a
// child workflow for each account of the domains it removes.
//
// The account is disabled first; then each cleanup step runs; then the
// account is marked removed. When a step fails for good, the account stays
// disabled and is flagged iscleanuprequired (compensation), and deleting it
// again resumes: every step is idempotent.
func DeleteAccount(ctx workflow.Context, in DeleteAccountInput) (JobOutcome, error) {
	if !ntemporal.IsJobID(workflow.GetInfo(ctx).WorkflowExecution.ID) {
		out, err := deleteAccount(ctx, in)
		return out, cserr.Temporal(err) // keep the CloudStack code for the parent
	}
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		return deleteAccount(ctx, in)
	})
}

func deleteAccount(ctx workflow.Context, in DeleteAccountInput) (JobOutcome, error) {
	ictx := withInventory(ctx)
	var st activities.AccountDeleteState
	if err := workflow.ExecuteActivity(ictx, tenancyAct.AccountDeleteBegin, activities.AccountDeleteInput{AccountUUID: in.AccountUUID}).Get(ctx, &st); err != nil {
		return JobOutcome{}, err
	}
	if st.Removed {
		return JobOutcome{DisplayText: "account already deleted"}, nil
	}
	log := workflow.GetLogger(ctx)
	for _, step := range AccountCleanupSteps {
		var n int64
		err := workflow.ExecuteActivity(ictx, step.Activity, activities.AccountCleanupInput{AccountID: st.AccountID}).Get(ctx, &n)
		if err != nil {
			return JobOutcome{}, accountDeleteFailed(ctx, in, st, step.Kind, err)
		}
		log.Info("account cleanup step done", "account", in.AccountUUID, "kind", step.Kind, "removed", n)
	}
	finish := activities.AccountDeleteFinishInput{AccountID: st.AccountID, AccountUUID: in.AccountUUID, Name: st.Name, Actor: in.Actor}
	if err := workflow.ExecuteActivity(ictx, tenancyAct.AccountDeleteFinish, finish).Get(ctx, nil); err != nil {
		return JobOutcome{}, accountDeleteFailed(ctx, in, st, "account", err)
	}
	return JobOutcome{}, nil
}

// accountDeleteFailed runs the compensation and returns the step's error.
func accountDeleteFailed(ctx workflow.Context, in DeleteAccountInput, st activities.AccountDeleteState, kind string, err error) error {
	e := cserr.As(err)
	dctx, _ := workflow.NewDisconnectedContext(withInventory(ctx))
	failed := activities.AccountDeleteFailedInput{
		AccountID: st.AccountID, AccountUUID: in.AccountUUID, Actor: in.Actor,
		Reason: "removing its " + kind + ": " + e.Text,
	}
	if cerr := workflow.ExecuteActivity(dctx, tenancyAct.AccountDeleteFailed, failed).Get(dctx, nil); cerr != nil {
		workflow.GetLogger(ctx).Error("cannot flag account for cleanup", "account", in.AccountUUID, "err", cerr)
	}
	return cserr.New(e.Code, "Failed to delete account %s while removing its %s: %s", st.Name, kind, e.Text)
}
