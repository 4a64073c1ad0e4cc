package workflows

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
)

// poolMaintSteps records what the storage maintenance workflows did.
type poolMaintSteps struct {
	mu      sync.Mutex
	ends    []activities.PoolMaintenanceEndInput
	clears  []activities.PoolWorkClearInput
	stopped []VMOpInput
	started []VMOpInput
}

func runPoolMaint(t *testing.T, wf any, plan activities.PoolVMsPlan, failVM map[string]string) (*poolMaintSteps, *jobRecorder, error) {
	t.Helper()
	env, rec := newJobEnv(t)
	env.RegisterActivity(&activities.Storage{})
	for _, w := range []any{EnableStorageMaintenance, CancelStorageMaintenance, StopVM, StartVM} {
		env.RegisterWorkflow(w)
	}
	s := &poolMaintSteps{}
	env.OnActivity(storageAct.PoolMaintenanceBegin, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(storageAct.PoolMaintenanceCancel, mock.Anything, mock.Anything).Return(nil)
	planFn := func(_ context.Context, in activities.PoolVMsInput) (activities.PoolVMsPlan, error) {
		if in.PoolUUID != "p-1" || in.JobID == "" {
			t.Errorf("plan step got %+v", in)
		}
		return plan, nil
	}
	env.OnActivity(storageAct.PoolStopVMsBegin, mock.Anything, mock.Anything).Return(planFn)
	env.OnActivity(storageAct.PoolStartVMsBegin, mock.Anything, mock.Anything).Return(planFn)
	env.OnActivity(storageAct.PoolMaintenanceEnd, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.PoolMaintenanceEndInput) error {
		s.mu.Lock()
		s.ends = append(s.ends, in)
		s.mu.Unlock()
		return nil
	})
	env.OnActivity(storageAct.PoolWorkClear, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.PoolWorkClearInput) error {
		s.mu.Lock()
		s.clears = append(s.clears, in)
		s.mu.Unlock()
		return nil
	})
	child := func(into *[]VMOpInput) func(workflow.Context, VMOpInput) (JobOutcome, error) {
		return func(_ workflow.Context, in VMOpInput) (JobOutcome, error) {
			s.mu.Lock()
			*into = append(*into, in)
			s.mu.Unlock()
			if why, ok := failVM[in.VMUUID]; ok {
				return JobOutcome{}, cserr.Temporal(cserr.New(cserr.InternalError, "%s", why))
			}
			return vmOutcome(in.VMUUID), nil
		}
	}
	env.OnWorkflow(StopVM, mock.Anything, mock.Anything).Return(child(&s.stopped))
	env.OnWorkflow(StartVM, mock.Anything, mock.Anything).Return(child(&s.started))
	env.ExecuteWorkflow(wf, StoragePoolInput{PoolUUID: "p-1"})
	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	return s, rec, env.GetWorkflowError()
}

func poolJobs(names ...string) activities.PoolVMsPlan {
	var p activities.PoolVMsPlan
	for _, n := range names {
		p.Jobs = append(p.Jobs, activities.PoolVMJob{VMUUID: "vm-" + n, VMName: n, JobID: "job-" + n})
	}
	return p
}

func TestEnableStorageMaintenanceStopsVMs(t *testing.T) {
	s, rec, err := runPoolMaint(t, EnableStorageMaintenance, poolJobs("web1", "web2"), nil)
	if err != nil {
		t.Fatalf("workflow failed: %v", err)
	}
	if len(s.stopped) != 2 || s.stopped[0].Forced || s.stopped[1].Forced {
		t.Fatalf("stops %+v, want two graceful ones", s.stopped)
	}
	if len(s.ends) != 1 || s.ends[0].Failed || strings.Join(s.ends[0].StoppedVMs, ",") != "web1,web2" {
		t.Fatalf("ends %+v", s.ends)
	}
	if len(rec.complete) != 1 || rec.complete[0].Outcome.ResultUUID != "p-1" {
		t.Fatalf("job completion %+v", rec.complete)
	}
}

func TestEnableStorageMaintenanceRefusedStopsNothing(t *testing.T) {
	plan := activities.PoolVMsPlan{Refused: []activities.VMRefusal{{VMUUID: "vm-x", VMName: "x", Reason: "it is Starting (an operation on it is in progress)"}}}
	s, _, err := runPoolMaint(t, EnableStorageMaintenance, plan, nil)
	e := cserr.As(err)
	if e == nil || e.Code != cserr.ResourceInUse || !strings.Contains(e.Text, "x (it is Starting") {
		t.Fatalf("error %v", err)
	}
	if len(s.stopped) != 0 || len(s.ends) != 1 || !s.ends[0].UnableToStop {
		t.Fatalf("stopped %+v ends %+v", s.stopped, s.ends)
	}
}

func TestEnableStorageMaintenanceFailedStopNamed(t *testing.T) {
	s, _, err := runPoolMaint(t, EnableStorageMaintenance, poolJobs("web1", "web2"), map[string]string{"vm-web2": "the guest would not shut down"})
	e := cserr.As(err)
	if e == nil || e.Code != cserr.ResourceUnavailable || !strings.Contains(e.Text, "1 of 2") || !strings.Contains(e.Text, "web2 (the guest would not shut down)") {
		t.Fatalf("error %v", err)
	}
	if len(s.ends) != 1 || !s.ends[0].Failed || !s.ends[0].UnableToStop {
		t.Fatalf("ends %+v", s.ends)
	}
}

func TestCancelStorageMaintenanceStartsVMsAgain(t *testing.T) {
	s, rec, err := runPoolMaint(t, CancelStorageMaintenance, poolJobs("web1", "web2", "web3"), map[string]string{"vm-web3": "no room"})
	if err != nil {
		t.Fatalf("workflow failed: %v (a VM that cannot start does not fail the cancel)", err)
	}
	if len(s.started) != 3 || !s.started[0].Pins.ConsiderLastHost {
		t.Fatalf("starts %+v", s.started)
	}
	if len(s.clears) != 1 || strings.Join(s.clears[0].Started, ",") != "web1,web2" || len(s.clears[0].Failed) != 1 || s.clears[0].Failed[0].VMName != "web3" {
		t.Fatalf("clears %+v", s.clears)
	}
	if len(rec.complete) != 1 || rec.complete[0].ErrorCode != 0 {
		t.Fatalf("job completion %+v", rec.complete)
	}
}
