package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
)

// JobOutcome is the result of every job workflow.
type JobOutcome = activities.JobOutcome

// RunJob runs body as the job whose id is this workflow's ID and keeps its
// async_jobs row current: pending at the start of each run, then the outcome
// (or the error's CloudStack code and text). The workflow fails when body
// fails, so the Temporal UI shows the failure and can retry or reset it.
//
// The row's two updates are local activities (version 1 of
// "job-row-local"): each was a round trip through the Temporal server,
// which is as much as a whole quick job's steps. Runs recorded before ran
// them as regular activities and still do on replay.
func RunJob(ctx workflow.Context, body func(workflow.Context) (JobOutcome, error)) (JobOutcome, error) {
	jobID := workflow.GetInfo(ctx).WorkflowExecution.ID
	local := workflow.GetVersion(ctx, "job-row-local", workflow.DefaultVersion, 1) == 1
	run := func(ctx workflow.Context, fn, in any) error {
		if local {
			return workflow.ExecuteLocalActivity(withLocalInventory(ctx), fn, in).Get(ctx, nil)
		}
		return workflow.ExecuteActivity(withInventory(ctx), fn, in).Get(ctx, nil)
	}
	if err := run(ctx, jobsAct.JobStart, activities.JobStartInput{JobID: jobID}); err != nil {
		return JobOutcome{}, err
	}
	out, err := body(ctx)
	done := activities.JobCompleteInput{JobID: jobID, Outcome: out}
	if err != nil {
		e := cserr.As(err)
		done = activities.JobCompleteInput{JobID: jobID, ErrorCode: e.Code, ErrorText: e.Text}
	}
	// A cancelled job still records its end.
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	if cerr := run(dctx, jobsAct.JobComplete, done); cerr != nil && err == nil {
		return out, cerr
	}
	if err != nil {
		return out, cserr.Temporal(err)
	}
	return out, nil
}
