package workflows

import (
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	ntemporal "github.com/nimbus-cloud/nimbus/infra/temporal"
)

// DeleteDomainInput is the domain a deleteDomain job removes.
type DeleteDomainInput struct {
	DomainUUID string
	// Cleanup deletes the accounts of the domain and its subdomains first;
	// without it the job refuses (536) while any account remains.
	Cleanup bool
	Actor   activities.Actor
}

// deleteDomainBatch bounds how many account deletions run at once.
const deleteDomainBatch = 16

// DeleteDomain removes a domain and its subdomains. It marks the subtree
// Inactive, deletes its accounts with DeleteAccount child workflows when
// cleanup is asked for, then removes the domains deepest first. When a step
// fails, the domains still there become Active again (compensation) and the
// job fails with the step's error.
func DeleteDomain(ctx workflow.Context, in DeleteDomainInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		ictx := withInventory(ctx)
		var plan activities.DomainDeletePlan
		err := workflow.ExecuteActivity(ictx, tenancyAct.DomainDeleteBegin,
			activities.DomainDeleteInput{DomainUUID: in.DomainUUID, Cleanup: in.Cleanup}).Get(ctx, &plan)
		if err != nil {
			return JobOutcome{}, err // refused: nothing changed
		}
		if plan.Removed {
			return JobOutcome{DisplayText: "domain already deleted"}, nil
		}
		if err := deleteDomainAccounts(ctx, in, plan.Accounts); err != nil {
			return JobOutcome{}, domainDeleteFailed(ctx, plan, err)
		}
		finish := activities.DomainDeleteFinishInput{DomainUUID: in.DomainUUID, Path: plan.Path, Actor: in.Actor}
		if err := workflow.ExecuteActivity(ictx, tenancyAct.DomainDeleteFinish, finish).Get(ctx, nil); err != nil {
			return JobOutcome{}, domainDeleteFailed(ctx, plan, err)
		}
		return JobOutcome{}, nil
	})
}

// deleteDomainAccounts runs DeleteAccount as a child workflow per account, a
// batch at a time, and returns the first failure.
func deleteDomainAccounts(ctx workflow.Context, in DeleteDomainInput, accounts []string) error {
	for start := 0; start < len(accounts); start += deleteDomainBatch {
		end := min(start+deleteDomainBatch, len(accounts))
		futures := make([]workflow.ChildWorkflowFuture, 0, end-start)
		for _, id := range accounts[start:end] {
			cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
				WorkflowID:            ntemporal.InternalID("deleteaccount", id),
				WorkflowIDReusePolicy: enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
				TypedSearchAttributes: temporal.NewSearchAttributes(
					ntemporal.SACommand.ValueSet("deleteAccount"),
					ntemporal.SAResourceType.ValueSet("Account"),
					ntemporal.SAResourceID.ValueSet(id),
				),
				Memo: map[string]any{
					"command": "deleteAccount", "resource": "Account " + id,
					"summary": "delete account " + id + " (cleanup of domain " + in.DomainUUID + ")",
				},
			})
			futures = append(futures, workflow.ExecuteChildWorkflow(cctx, DeleteAccount, DeleteAccountInput{AccountUUID: id, Actor: in.Actor}))
		}
		var first error
		for _, f := range futures {
			if err := f.Get(ctx, nil); err != nil && first == nil {
				first = err
			}
		}
		if first != nil {
			return first
		}
	}
	return nil
}

// domainDeleteFailed runs the compensation and returns the error to report.
func domainDeleteFailed(ctx workflow.Context, plan activities.DomainDeletePlan, err error) error {
	e := cserr.As(err)
	dctx, _ := workflow.NewDisconnectedContext(withInventory(ctx))
	if cerr := workflow.ExecuteActivity(dctx, tenancyAct.DomainDeleteAbort, activities.DomainDeleteAbortInput{Path: plan.Path}).Get(dctx, nil); cerr != nil {
		workflow.GetLogger(ctx).Error("cannot reactivate domains after a failed delete", "path", plan.Path, "err", cerr)
	}
	return cserr.New(e.Code, "Failed to delete domain %s: %s", plan.Name, e.Text)
}
