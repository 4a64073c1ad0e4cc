package activities

import (
	"context"
	"encoding/json"
	"fmt"

	"go.temporal.io/sdk/activity"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

// Context is context.Context; named here so Deps reads plainly.
type Context = context.Context

// Jobs keeps the async_jobs row of a job workflow current.
type Jobs struct{ Deps }

// JobStartInput marks a job as running in this workflow run.
type JobStartInput struct {
	JobID string
}

// JobStart sets the job pending with the current run id. A run started by a
// reset or retry in the Temporal UI passes here again, so the row follows the
// newest run.
func (a *Jobs) JobStart(ctx context.Context, in JobStartInput) error {
	runID := activity.GetInfo(ctx).WorkflowExecution.RunID
	_, err := a.DB.NewUpdate().Model((*models.AsyncJob)(nil)).
		Set("status = ?", models.JobPending).
		Set("run_id = ?", runID).
		Set("result = ''").
		Set("result_code = 0").
		Set("completed = NULL").
		Where("uuid = ?", in.JobID).Exec(ctx)
	return err
}

// JobOutcome is what a job workflow returns on success: which entity the
// result shows (rendered as its list command shows it), or a plain success.
type JobOutcome struct {
	ResultKey   string `json:"resultKey,omitempty"`  // JSON key in jobresult, e.g. "zone"
	ResultType  string `json:"resultType,omitempty"` // renderer name, e.g. "Zone"
	ResultUUID  string `json:"resultUUID,omitempty"`
	DisplayText string `json:"displayText,omitempty"`
}

// JobCompleteInput is the end of a job: an outcome or an error.
type JobCompleteInput struct {
	JobID     string
	Outcome   JobOutcome
	ErrorCode int
	ErrorText string
}

// JobComplete writes the final status and jobresult JSON.
func (a *Jobs) JobComplete(ctx context.Context, in JobCompleteInput) error {
	runID := activity.GetInfo(ctx).WorkflowExecution.RunID
	status, code, result, err := JobResult(ctx, a.Render, in)
	if err != nil {
		return err
	}
	_, err = a.DB.NewUpdate().Model((*models.AsyncJob)(nil)).
		Set("status = ?", status).
		Set("result_code = ?", code).
		Set("result = ?", result).
		Set("proc_status = 0").
		Set("run_id = ?", runID).
		Set("completed = ?", models.Now()).
		Where("uuid = ?", in.JobID).Exec(ctx)
	return err
}

// JobResult computes the row's status, result code and jobresult JSON; the
// API uses it too when it repairs a row from Temporal's record. (A plain
// function: every exported method of an activity struct is an activity.)
func JobResult(ctx context.Context, render func(Context, string, string) (any, error), in JobCompleteInput) (status, code int, result string, err error) {
	if in.ErrorCode != 0 || in.ErrorText != "" {
		if in.ErrorCode == 0 {
			in.ErrorCode = cserr.InternalError
		}
		b, _ := json.Marshal(map[string]any{"errorcode": in.ErrorCode, "errortext": in.ErrorText})
		return models.JobFailed, in.ErrorCode, string(b), nil
	}
	var body map[string]any
	switch {
	case in.Outcome.ResultType != "" && in.Outcome.ResultUUID != "":
		obj, err := render(ctx, in.Outcome.ResultType, in.Outcome.ResultUUID)
		if err != nil {
			return 0, 0, "", fmt.Errorf("render %s %s: %w", in.Outcome.ResultType, in.Outcome.ResultUUID, err)
		}
		key := in.Outcome.ResultKey
		if key == "" {
			key = "object"
		}
		body = map[string]any{key: obj}
	default:
		body = map[string]any{"success": true}
		if in.Outcome.DisplayText != "" {
			body["displaytext"] = in.Outcome.DisplayText
		}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return 0, 0, "", err
	}
	return models.JobSucceeded, 0, string(b), nil
}
