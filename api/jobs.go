package api

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	ntemporal "github.com/nimbus-cloud/nimbus/infra/temporal"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/workflows"
)

// JobSpec describes the workflow an async command starts.
type JobSpec struct {
	Workflow any // the workflow function
	Input    any
	// InstanceType and InstanceUUID name the resource the job acts on
	// (jobinstancetype/jobinstanceid, and the search attributes).
	InstanceType string
	InstanceUUID string
	// ResponseID is the "id" answered beside "jobid" (the new resource).
	ResponseID string
	// Summary is a readable memo line shown in the Temporal UI.
	Summary string
}

// StartJob writes the async_jobs row and starts the workflow whose ID is the
// job id, and returns CloudStack's {id, jobid} answer. If the workflow cannot
// start, the row is marked failed so no job stays pending forever.
func (c *Call) StartJob(spec JobSpec) (*AsyncResponse, error) {
	job, _, err := c.startJob(spec)
	if err != nil {
		return nil, err
	}
	return &AsyncResponse{ID: spec.ResponseID, JobID: job.UUID, JobUI: ntemporal.UILink(c.S.Cfg.TemporalUIURL, c.S.Namespace, job.UUID)}, nil
}

// RunJobSync runs a workflow as a job and waits for it, for commands that
// CloudStack's API answers synchronously (addHost, createStoragePool...)
// but that Nimbus runs durably. The job is visible in listAsyncJobs and the
// Temporal UI like any other. If it outlasts timeout, the answer is a 530
// naming the job, which goes on and can be followed with
// queryAsyncJobResult.
func (c *Call) RunJobSync(spec JobSpec, timeout time.Duration) (JobOutcome, error) {
	job, run, err := c.startJob(spec)
	if err != nil {
		return JobOutcome{}, err
	}
	ctx, cancel := context.WithTimeout(c.Ctx, timeout)
	defer cancel()
	var out JobOutcome
	if err := run.Get(ctx, &out); err != nil {
		if ctx.Err() != nil {
			return out, cserr.Internal("%s is still running as job %s; follow it with queryAsyncJobResult", c.Cmd.Name, job.UUID)
		}
		return out, cserr.As(unwrapWorkflowError(err))
	}
	return out, nil
}

// JobOutcome is what a job workflow returns.
type JobOutcome = activities.JobOutcome

func (c *Call) startJob(spec JobSpec) (*models.AsyncJob, client.WorkflowRun, error) {
	s := c.S
	job := &models.AsyncJob{
		UUID: models.NewUUID(), Cmd: jobCmdName(c.Cmd.Name),
		InstanceType: spec.InstanceType, InstanceUUID: spec.InstanceUUID,
		Status: models.JobPending, Created: models.Now(),
	}
	if c.Caller != nil {
		job.UserID, job.AccountID, job.DomainID = c.Caller.User.ID, c.Caller.Account.ID, c.Caller.Domain.ID
	}
	if _, err := s.DB.NewInsert().Model(job).Exec(c.Ctx); err != nil {
		return nil, nil, err
	}
	opts := client.StartWorkflowOptions{
		ID:                       job.UUID,
		TaskQueue:                s.TaskQueue,
		WorkflowIDReusePolicy:    enums.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		Memo: map[string]any{
			"command": c.Cmd.Name, "summary": spec.Summary,
			"account": accountName(c.Caller), "resource": spec.InstanceType + " " + spec.InstanceUUID,
		},
		TypedSearchAttributes: searchAttrs(c, spec),
		// Where this process also runs a worker of the task queue (nimbus
		// dev, the benchmarks), the job's first workflow task comes back
		// in the start's answer instead of through matching: 15% less
		// Temporal server CPU per deployment in bench vsphere. A process
		// that dies holding it loses nothing: the task times out and goes
		// to another worker. Elsewhere (nimbus server) the SDK starts the
		// job as before.
		EnableEagerStart: true,
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Ctx), 15*time.Second)
	defer cancel()
	run, err := s.Temporal.ExecuteWorkflow(ctx, opts, spec.Workflow, spec.Input)
	if err != nil {
		b, _ := json.Marshal(map[string]any{"errorcode": cserr.InternalError, "errortext": "cannot start job: " + err.Error()})
		_, _ = s.DB.NewUpdate().Model(job).Set("status = ?", models.JobFailed).Set("result_code = ?", cserr.InternalError).
			Set("result = ?", string(b)).Set("completed = ?", models.Now()).WherePK().Exec(ctx)
		return nil, nil, cserr.Internal("cannot start job for %s: %v", c.Cmd.Name, err)
	}
	s.checked.started(job.UUID)
	s.Metrics.WorkflowStarts.WithLabelValues(funcName(spec.Workflow)).Inc()
	link := ntemporal.UILink(s.Cfg.TemporalUIURL, s.Namespace, job.UUID)
	if link != "" {
		s.Log.Info("job started", "command", c.Cmd.Name, "jobid", job.UUID, "ui", link)
	} else {
		s.Log.Info("job started", "command", c.Cmd.Name, "jobid", job.UUID)
	}
	return job, run, nil
}

func searchAttrs(c *Call, spec JobSpec) temporal.SearchAttributes {
	kv := []temporal.SearchAttributeUpdate{ntemporal.SACommand.ValueSet(c.Cmd.Name)}
	if c.Caller != nil {
		kv = append(kv, ntemporal.SAAccount.ValueSet(c.Caller.Account.Name), ntemporal.SADomain.ValueSet(c.Caller.Domain.Path))
	}
	if spec.InstanceType != "" {
		kv = append(kv, ntemporal.SAResourceType.ValueSet(spec.InstanceType))
	}
	if spec.InstanceUUID != "" {
		kv = append(kv, ntemporal.SAResourceID.ValueSet(spec.InstanceUUID))
	}
	return temporal.NewSearchAttributes(kv...)
}

func accountName(c *Caller) string {
	if c == nil {
		return ""
	}
	return c.Account.Name
}

// jobCmdName is CloudStack's "cmd" of a job: the Java command class name.
func jobCmdName(name string) string {
	return "org.apache.cloudstack.api.command." + name
}

func funcName(fn any) string {
	if s, ok := fn.(string); ok {
		return s
	}
	n := runtime.FuncForPC(reflect.ValueOf(fn).Pointer()).Name()
	if i := strings.LastIndexByte(n, '.'); i >= 0 {
		n = n[i+1:]
	}
	return n
}

// JobResponse is one job as queryAsyncJobResult and listAsyncJobs show it.
type JobResponse struct {
	AccountID       string          `json:"accountid,omitempty"`
	Account         string          `json:"account,omitempty"`
	UserID          string          `json:"userid,omitempty"`
	Cmd             string          `json:"cmd"`
	Created         string          `json:"created"`
	Completed       string          `json:"completed,omitempty"`
	JobID           string          `json:"jobid"`
	JobStatus       int             `json:"jobstatus"`
	JobProcStatus   int             `json:"jobprocstatus"`
	JobResultCode   int             `json:"jobresultcode"`
	JobResultType   string          `json:"jobresulttype"`
	JobResult       json.RawMessage `json:"jobresult,omitempty"`
	JobInstanceType string          `json:"jobinstancetype,omitempty"`
	JobInstanceID   string          `json:"jobinstanceid,omitempty"`
}

// jobWithOwner is a job row with what its view shows of its owner.
type jobWithOwner struct {
	models.AsyncJob `bun:",extend"`
	jobOwnerRow
}

// LoadJob reads a job row with its owner's names (one query), repairing it
// from Temporal when the row says pending but the workflow has ended (a
// worker died before recording the end, or an operator terminated the job
// in the Temporal UI).
func (s *Server) LoadJob(ctx context.Context, jobID string) (*jobWithOwner, error) {
	var job jobWithOwner
	q := s.DB.NewSelect().Model(&job).ColumnExpr("async_job.*")
	if err := withJobOwners(q, "async_job").Where("async_job.uuid = ?", jobID).Limit(1).Scan(ctx); err != nil {
		return nil, models.NotFound(err, "job "+jobID)
	}
	if job.Status == models.JobPending && s.checked.due(job.UUID) {
		if err := s.repairJob(ctx, &job.AsyncJob); err != nil {
			s.Log.Warn("cannot check job against Temporal", "jobid", jobID, "err", err)
		}
	}
	if job.Status != models.JobPending {
		s.checked.forget(job.UUID)
	}
	return &job, nil
}

// jobRecheck is how often LoadJob asks Temporal about one pending job.
// Clients poll queryAsyncJobResult every few milliseconds to seconds; a
// DescribeWorkflowExecution on each poll cost the Temporal server more
// than running the job itself, for an anomaly (a job that ended without
// writing its row) that a second's delay does not hide.
const jobRecheck = time.Second

// jobChecks remembers when this server last checked (or started) each
// pending job's workflow.
type jobChecks struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// due tells whether a pending job should be checked now, and if so notes
// the check.
func (j *jobChecks) due(jobID string) bool {
	now := time.Now()
	j.mu.Lock()
	defer j.mu.Unlock()
	if t, ok := j.last[jobID]; ok && now.Sub(t) < jobRecheck {
		return false
	}
	j.noteLocked(jobID, now)
	return true
}

// started notes a workflow this server has just started: it is running.
func (j *jobChecks) started(jobID string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.noteLocked(jobID, time.Now())
}

func (j *jobChecks) noteLocked(jobID string, now time.Time) {
	if j.last == nil {
		j.last = map[string]time.Time{}
	}
	if len(j.last) >= 4096 { // jobs nobody polled to the end
		for id, t := range j.last {
			if now.Sub(t) >= jobRecheck {
				delete(j.last, id)
			}
		}
	}
	j.last[jobID] = now
}

func (j *jobChecks) forget(jobID string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.last, jobID)
}

func (s *Server) repairJob(ctx context.Context, job *models.AsyncJob) error {
	desc, err := s.Temporal.DescribeWorkflowExecution(ctx, job.UUID, "")
	if err != nil {
		return err
	}
	info := desc.GetWorkflowExecutionInfo()
	var in activities.JobCompleteInput
	in.JobID = job.UUID
	switch info.GetStatus() {
	case enums.WORKFLOW_EXECUTION_STATUS_RUNNING, enums.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW:
		return nil
	case enums.WORKFLOW_EXECUTION_STATUS_COMPLETED:
		run := s.Temporal.GetWorkflow(ctx, job.UUID, "")
		if err := run.Get(ctx, &in.Outcome); err != nil {
			return err
		}
	case enums.WORKFLOW_EXECUTION_STATUS_TERMINATED:
		in.ErrorCode, in.ErrorText = cserr.InternalError, "job was terminated"+terminateReason(ctx, s, job.UUID)
	case enums.WORKFLOW_EXECUTION_STATUS_CANCELED:
		in.ErrorCode, in.ErrorText = cserr.InternalError, "job was cancelled"
	case enums.WORKFLOW_EXECUTION_STATUS_TIMED_OUT:
		in.ErrorCode, in.ErrorText = cserr.InternalError, "job timed out"
	default: // failed
		run := s.Temporal.GetWorkflow(ctx, job.UUID, "")
		werr := run.Get(ctx, nil)
		e := cserr.As(unwrapWorkflowError(werr))
		if werr == nil {
			e = cserr.Internal("job failed")
		}
		in.ErrorCode, in.ErrorText = e.Code, e.Text
	}
	status, code, result, err := activities.JobResult(ctx, s.Render, in)
	if err != nil {
		return err
	}
	// Guarded: only a row still pending is repaired.
	_, err = s.DB.NewUpdate().Model((*models.AsyncJob)(nil)).
		Set("status = ?", status).Set("result_code = ?", code).Set("result = ?", result).
		Set("completed = ?", models.Now()).
		Where("id = ? AND status = ?", job.ID, models.JobPending).Exec(ctx)
	if err != nil {
		return err
	}
	job.Status, job.ResultCode, job.Result, job.Completed = status, code, result, models.Now()
	if in.ErrorCode != 0 && job.InstanceType == "VirtualMachine" && job.InstanceUUID != "" {
		s.settleVM(ctx, job.InstanceUUID)
	}
	if in.ErrorCode != 0 && job.InstanceUUID != "" {
		if err := activities.VMSnapshotSettle(ctx, s.DB, job.InstanceType, job.InstanceUUID, in.ErrorText); err != nil {
			s.Log.Warn("cannot settle the VM snapshots of a job that ended", "job", job.UUID, "err", err)
		}
	}
	return nil
}

// settleVM starts the settle workflow for a VM whose job ended without
// finishing (terminated or cancelled in the Temporal UI, timed out, or
// failed before recording its end), so the VM does not stay in a
// transitional state: it runs on a worker, where the hypervisor drivers
// are, and one VM is settled once at a time (workflow ID by VM).
func (s *Server) settleVM(ctx context.Context, vmUUID string) {
	_, err := s.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       ntemporal.InternalID("settle", vmUUID),
		TaskQueue:                s.TaskQueue,
		WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowExecutionTimeout: 15 * time.Minute,
	}, workflows.SettleVMs, []workflows.SettleVMInput{{VMUUID: vmUUID}})
	if err != nil {
		s.Log.Warn("cannot start settling a VM whose job ended", "vm", vmUUID, "err", err)
	}
}

func unwrapWorkflowError(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if cserr.Code(e) != 0 {
			return e
		}
	}
	return err
}

func terminateReason(ctx context.Context, s *Server, id string) string {
	it := s.Temporal.GetWorkflowHistory(ctx, id, "", false, enums.HISTORY_EVENT_FILTER_TYPE_CLOSE_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			return ""
		}
		if a := ev.GetWorkflowExecutionTerminatedEventAttributes(); a != nil && a.GetReason() != "" {
			return ": " + a.GetReason()
		}
	}
	return ""
}

// JobView renders a job row for the API, without its owner's names
// (jobItems adds them for a page of jobs at once).
func JobView(job *models.AsyncJob) JobResponse {
	r := JobResponse{
		Cmd: job.Cmd, Created: FormatTime(job.Created), Completed: FormatTime(job.Completed),
		JobID: job.UUID, JobStatus: job.Status, JobProcStatus: job.ProcStatus, JobResultCode: job.ResultCode,
		JobResultType: "object", JobInstanceType: job.InstanceType, JobInstanceID: job.InstanceUUID,
	}
	if job.Result != "" && job.Status != models.JobPending {
		r.JobResult = json.RawMessage(job.Result)
	}
	return r
}
