package workflows

import (
	"context"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
)

// jobRecorder mocks RunJob's activities and keeps what JobComplete got.
type jobRecorder struct {
	mu       sync.Mutex
	complete []activities.JobCompleteInput
	started  []string // activity types, in start order
}

// ran counts the starts of an activity.
func (r *jobRecorder) ran(fn any) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	name, n := activityName(fn), 0
	for _, s := range r.started {
		if s == name {
			n++
		}
	}
	return n
}

// notRun fails the test for each of fns that ran.
func (r *jobRecorder) notRun(t *testing.T, fns ...any) {
	t.Helper()
	for _, fn := range fns {
		if n := r.ran(fn); n > 0 {
			t.Errorf("%s ran %d times, want none", activityName(fn), n)
		}
	}
}

func (r *jobRecorder) last() activities.JobCompleteInput {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.complete) == 0 {
		return activities.JobCompleteInput{}
	}
	return r.complete[len(r.complete)-1]
}

// newJobEnv is a test environment running a workflow as a job (a job-id
// workflow ID) with RunJob's activities mocked.
func newJobEnv(t *testing.T) (*testsuite.TestWorkflowEnvironment, *jobRecorder) {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterActivity(&activities.Jobs{})
	env.RegisterActivity(&activities.Tenancy{})
	env.RegisterWorkflow(DeleteAccount)
	env.RegisterWorkflow(DeleteDomain)
	env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: uuid.NewString()})
	rec := &jobRecorder{}
	env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, _ converter.EncodedValues) {
		rec.mu.Lock()
		rec.started = append(rec.started, info.ActivityType.Name)
		rec.mu.Unlock()
	})
	// RunJob's row updates are local activities.
	env.SetOnLocalActivityStartedListener(func(info *activity.Info, _ context.Context, _ []any) {
		rec.mu.Lock()
		rec.started = append(rec.started, info.ActivityType.Name)
		rec.mu.Unlock()
	})
	env.OnActivity(jobsAct.JobStart, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(jobsAct.JobComplete, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.JobCompleteInput) error {
		rec.mu.Lock()
		rec.complete = append(rec.complete, in)
		rec.mu.Unlock()
		return nil
	})
	return env, rec
}

func refusal(code int, text string) error {
	return temporal.NewNonRetryableApplicationError(text, "CS"+strconv.Itoa(code), nil)
}

// activityName is the name Temporal registers an activity method under.
func activityName(fn any) string {
	n := runtime.FuncForPC(reflect.ValueOf(fn).Pointer()).Name()
	n = strings.TrimSuffix(n, "-fm")
	return n[strings.LastIndexByte(n, '.')+1:]
}

func TestDeleteAccountRefusesSystemAccount(t *testing.T) {
	env, rec := newJobEnv(t)
	env.OnActivity(tenancyAct.AccountDeleteBegin, mock.Anything, mock.Anything).
		Return(activities.AccountDeleteState{}, refusal(cserr.AccountError, "Account admin is a system account; deleting it is not allowed"))
	env.ExecuteWorkflow(DeleteAccount, DeleteAccountInput{AccountUUID: "5e1a5d2c-0000-4000-8000-000000000004"})

	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	err := env.GetWorkflowError()
	if cserr.Code(err) != cserr.AccountError {
		t.Fatalf("workflow error = %v (code %d), want 531", err, cserr.Code(err))
	}
	if got := rec.last(); got.ErrorCode != cserr.AccountError || got.ErrorText == "" {
		t.Fatalf("job completed with %+v, want errorcode 531 and a text", got)
	}
	rec.notRun(t, tenancyAct.AccountDeleteSessions, tenancyAct.AccountDeleteKeys, tenancyAct.AccountDeleteUsers,
		tenancyAct.AccountDeleteFinish, tenancyAct.AccountDeleteFailed)
}

func TestDeleteAccountRunsEveryCleanupStepThenFinishes(t *testing.T) {
	env, rec := newJobEnv(t)
	st := activities.AccountDeleteState{AccountID: 42, Name: "acme", DomainID: 3}
	env.OnActivity(tenancyAct.AccountDeleteBegin, mock.Anything, mock.Anything).Return(st, nil)
	var mu sync.Mutex
	var order []string
	for _, step := range AccountCleanupSteps {
		kind := step.Kind
		env.OnActivity(step.Activity, mock.Anything, activities.AccountCleanupInput{AccountID: 42}).
			Return(func(context.Context, activities.AccountCleanupInput) (int64, error) {
				mu.Lock()
				order = append(order, kind)
				mu.Unlock()
				return 1, nil
			})
	}
	env.OnActivity(tenancyAct.AccountDeleteFinish, mock.Anything, mock.Anything).Return(nil).Once()
	env.ExecuteWorkflow(DeleteAccount, DeleteAccountInput{AccountUUID: uuid.NewString()})

	if err := env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow failed: %v", err)
	}
	if len(order) != len(AccountCleanupSteps) {
		t.Fatalf("cleanup steps run = %v, want all of %d", order, len(AccountCleanupSteps))
	}
	for i, step := range AccountCleanupSteps {
		if order[i] != step.Kind {
			t.Fatalf("cleanup order = %v", order)
		}
	}
	if got := rec.last(); got.ErrorCode != 0 || got.ErrorText != "" {
		t.Fatalf("job completed with %+v, want success", got)
	}
	rec.notRun(t, tenancyAct.AccountDeleteFailed)
	if rec.ran(tenancyAct.AccountDeleteFinish) != 1 {
		t.Fatalf("AccountDeleteFinish ran %d times, want 1", rec.ran(tenancyAct.AccountDeleteFinish))
	}
}

func TestDeleteAccountStepFailureFlagsAccountForCleanup(t *testing.T) {
	env, rec := newJobEnv(t)
	st := activities.AccountDeleteState{AccountID: 7, Name: "acme", DomainID: 3}
	id := uuid.NewString()
	env.OnActivity(tenancyAct.AccountDeleteBegin, mock.Anything, mock.Anything).Return(st, nil)
	env.OnActivity(tenancyAct.AccountDeleteSessions, mock.Anything, mock.Anything).Return(int64(0), nil)
	env.OnActivity(tenancyAct.AccountDeleteKeys, mock.Anything, mock.Anything).
		Return(int64(0), refusal(cserr.ResourceInUse, "key store unavailable"))
	var failed activities.AccountDeleteFailedInput
	env.OnActivity(tenancyAct.AccountDeleteFailed, mock.Anything, mock.Anything).
		Return(func(_ context.Context, in activities.AccountDeleteFailedInput) error { failed = in; return nil }).Once()
	env.ExecuteWorkflow(DeleteAccount, DeleteAccountInput{AccountUUID: id})

	err := env.GetWorkflowError()
	if cserr.Code(err) != cserr.ResourceInUse {
		t.Fatalf("workflow error = %v, want code 536", err)
	}
	if failed.AccountID != 7 || failed.AccountUUID != id || failed.Reason == "" {
		t.Fatalf("compensation got %+v", failed)
	}
	rec.notRun(t, tenancyAct.AccountDeleteUsers, tenancyAct.AccountDeleteFinish)
	if got := rec.last(); got.ErrorCode != cserr.ResourceInUse {
		t.Fatalf("job completed with %+v, want errorcode 536", got)
	}
}

func TestDeleteAccountAlreadyRemovedIsANoOp(t *testing.T) {
	env, rec := newJobEnv(t)
	env.OnActivity(tenancyAct.AccountDeleteBegin, mock.Anything, mock.Anything).
		Return(activities.AccountDeleteState{AccountID: 9, Removed: true}, nil)
	env.ExecuteWorkflow(DeleteAccount, DeleteAccountInput{AccountUUID: uuid.NewString()})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow failed: %v", err)
	}
	if got := rec.last(); got.ErrorCode != 0 {
		t.Fatalf("job completed with %+v", got)
	}
	rec.notRun(t, tenancyAct.AccountDeleteSessions, tenancyAct.AccountDeleteKeys, tenancyAct.AccountDeleteUsers, tenancyAct.AccountDeleteFinish)
}
