package workflows

import (
	"context"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/mock"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
)

func TestDeleteDomainRefusesWhileAccountsRemain(t *testing.T) {
	env, rec := newJobEnv(t)
	env.OnActivity(tenancyAct.DomainDeleteBegin, mock.Anything, mock.Anything).
		Return(activities.DomainDeletePlan{}, refusal(cserr.ResourceInUse, "Domain d1 cannot be deleted: it or its subdomains still hold 2 account(s)"))
	env.ExecuteWorkflow(DeleteDomain, DeleteDomainInput{DomainUUID: uuid.NewString()})

	err := env.GetWorkflowError()
	if cserr.Code(err) != cserr.ResourceInUse {
		t.Fatalf("workflow error = %v, want code 536", err)
	}
	if got := rec.last(); got.ErrorCode != cserr.ResourceInUse || got.ErrorText == "" {
		t.Fatalf("job completed with %+v, want 536 with a text", got)
	}
	// A refusal changed nothing: no compensation, no child, no removal.
	rec.notRun(t, tenancyAct.DomainDeleteAbort, tenancyAct.DomainDeleteFinish, tenancyAct.AccountDeleteBegin)
}

func TestDeleteDomainWithCleanupDeletesAccountsThenDomains(t *testing.T) {
	env, rec := newJobEnv(t)
	accounts := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	path := "/d1/"
	env.OnActivity(tenancyAct.DomainDeleteBegin, mock.Anything, activities.DomainDeleteInput{DomainUUID: "dom", Cleanup: true}).
		Return(activities.DomainDeletePlan{DomainID: 5, Name: "d1", Path: path, Accounts: accounts}, nil)
	var mu sync.Mutex
	ids := map[string]int64{}
	for i, a := range accounts {
		ids[a] = int64(100 + i)
	}
	finished := map[int64]bool{}
	env.OnActivity(tenancyAct.AccountDeleteBegin, mock.Anything, mock.Anything).
		Return(func(_ context.Context, in activities.AccountDeleteInput) (activities.AccountDeleteState, error) {
			return activities.AccountDeleteState{AccountID: ids[in.AccountUUID], Name: in.AccountUUID}, nil
		})
	for _, step := range AccountCleanupSteps {
		env.OnActivity(step.Activity, mock.Anything, mock.Anything).Return(int64(1), nil)
	}
	env.OnActivity(tenancyAct.AccountDeleteFinish, mock.Anything, mock.Anything).
		Return(func(_ context.Context, in activities.AccountDeleteFinishInput) error {
			mu.Lock()
			finished[in.AccountID] = true
			mu.Unlock()
			return nil
		})
	var fin activities.DomainDeleteFinishInput
	env.OnActivity(tenancyAct.DomainDeleteFinish, mock.Anything, mock.Anything).
		Return(func(_ context.Context, in activities.DomainDeleteFinishInput) error {
			mu.Lock()
			defer mu.Unlock()
			if len(finished) != len(accounts) {
				t.Errorf("domains removed before every account was deleted (%d of %d)", len(finished), len(accounts))
			}
			fin = in
			return nil
		})
	env.ExecuteWorkflow(DeleteDomain, DeleteDomainInput{DomainUUID: "dom", Cleanup: true})

	if err := env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow failed: %v", err)
	}
	if len(finished) != len(accounts) {
		t.Fatalf("accounts deleted = %d, want %d", len(finished), len(accounts))
	}
	if fin.Path != path || fin.DomainUUID != "dom" {
		t.Fatalf("DomainDeleteFinish got %+v", fin)
	}
	rec.notRun(t, tenancyAct.DomainDeleteAbort, tenancyAct.AccountDeleteFailed)
	if got := rec.last(); got.ErrorCode != 0 {
		t.Fatalf("job completed with %+v, want success", got)
	}
	// Children are not jobs: only the parent's row is written.
	if n := rec.ran(jobsAct.JobComplete); n != 1 {
		t.Fatalf("JobComplete ran %d times, want 1 (the children are not jobs)", n)
	}
}

func TestDeleteDomainReactivatesDomainsWhenAnAccountFails(t *testing.T) {
	env, rec := newJobEnv(t)
	good, bad := uuid.NewString(), uuid.NewString()
	env.OnActivity(tenancyAct.DomainDeleteBegin, mock.Anything, mock.Anything).
		Return(activities.DomainDeletePlan{DomainID: 5, Name: "d1", Path: "/d1/", Accounts: []string{good, bad}}, nil)
	env.OnActivity(tenancyAct.AccountDeleteBegin, mock.Anything, mock.Anything).
		Return(func(_ context.Context, in activities.AccountDeleteInput) (activities.AccountDeleteState, error) {
			id := int64(1)
			if in.AccountUUID == bad {
				id = 2
			}
			return activities.AccountDeleteState{AccountID: id, Name: in.AccountUUID}, nil
		})
	env.OnActivity(tenancyAct.AccountDeleteSessions, mock.Anything, mock.Anything).Return(int64(0), nil)
	env.OnActivity(tenancyAct.AccountDeleteKeys, mock.Anything, mock.Anything).Return(int64(0), nil)
	for _, step := range AccountCleanupSteps {
		switch step.Kind {
		case "sessions", "keys", "users":
		default: // kinds later issues added: nothing to remove here
			env.OnActivity(step.Activity, mock.Anything, mock.Anything).Return(int64(0), nil)
		}
	}
	env.OnActivity(tenancyAct.AccountDeleteUsers, mock.Anything, activities.AccountCleanupInput{AccountID: 1}).Return(int64(1), nil)
	env.OnActivity(tenancyAct.AccountDeleteUsers, mock.Anything, activities.AccountCleanupInput{AccountID: 2}).
		Return(int64(0), refusal(cserr.ResourceInUse, "user store busy"))
	env.OnActivity(tenancyAct.AccountDeleteFinish, mock.Anything, mock.Anything).Return(nil)
	var flagged activities.AccountDeleteFailedInput
	env.OnActivity(tenancyAct.AccountDeleteFailed, mock.Anything, mock.Anything).
		Return(func(_ context.Context, in activities.AccountDeleteFailedInput) error { flagged = in; return nil })
	var abort activities.DomainDeleteAbortInput
	env.OnActivity(tenancyAct.DomainDeleteAbort, mock.Anything, mock.Anything).
		Return(func(_ context.Context, in activities.DomainDeleteAbortInput) error { abort = in; return nil })
	env.ExecuteWorkflow(DeleteDomain, DeleteDomainInput{DomainUUID: uuid.NewString(), Cleanup: true})

	err := env.GetWorkflowError()
	if cserr.Code(err) != cserr.ResourceInUse {
		t.Fatalf("workflow error = %v, want code 536 from the failed account", err)
	}
	if flagged.AccountUUID != bad {
		t.Fatalf("account flagged for cleanup = %+v, want %s", flagged, bad)
	}
	if abort.Path != "/d1/" {
		t.Fatalf("domains not reactivated: abort got %+v", abort)
	}
	rec.notRun(t, tenancyAct.DomainDeleteFinish)
	if got := rec.last(); got.ErrorCode != cserr.ResourceInUse || got.ErrorText == "" {
		t.Fatalf("job completed with %+v", got)
	}
}

func TestDeleteDomainFinishRefusalReactivates(t *testing.T) {
	env, rec := newJobEnv(t)
	env.OnActivity(tenancyAct.DomainDeleteBegin, mock.Anything, mock.Anything).
		Return(activities.DomainDeletePlan{DomainID: 5, Name: "d1", Path: "/d1/"}, nil)
	env.OnActivity(tenancyAct.DomainDeleteFinish, mock.Anything, mock.Anything).
		Return(refusal(cserr.ResourceInUse, "1 account(s) were created in it meanwhile"))
	env.OnActivity(tenancyAct.DomainDeleteAbort, mock.Anything, mock.Anything).Return(nil).Once()
	env.ExecuteWorkflow(DeleteDomain, DeleteDomainInput{DomainUUID: uuid.NewString()})

	if cserr.Code(env.GetWorkflowError()) != cserr.ResourceInUse {
		t.Fatalf("workflow error = %v, want 536", env.GetWorkflowError())
	}
	if rec.ran(tenancyAct.DomainDeleteAbort) != 1 {
		t.Fatal("domains were not reactivated")
	}
}
