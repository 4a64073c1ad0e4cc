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
func RunJob(ctx workflow.Context, body func(workflow.Context) (JobOutcome, error)) (JobOutcome, error) {
	jobID := workflow.GetInfo(ctx).WorkflowExecution.ID
	ictx := withInventory(ctx)
	if err := workflow.ExecuteActivity(ictx, jobsAct.JobStart, activities.JobStartInput{JobID: jobID}).Get(ctx, nil); err != nil {
		return JobOutcome{}, err
	}
	out, err := body(ctx)
	done := activities.JobCompleteInput{JobID: jobID, Outcome: out}
	if err != nil {
		e := cserr.As(err)
		done = activities.JobCompleteInput{JobID: jobID, ErrorCode: e.Code, ErrorText: e.Text}
	}
	// A cancelled job still records its end.
	dctx, _ := workflow.NewDisconnectedContext(ictx)
	if cerr := workflow.ExecuteActivity(dctx, jobsAct.JobComplete, done).Get(dctx, nil); cerr != nil && err == nil {
		return out, cerr
	}
	if err != nil {
		return out, cserr.Temporal(err)
	}
	return out, nil
}
