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

// hostMaintEnv mocks the host maintenance steps: VMEvacuateBegin answers
// plan, MigrateVM (as a child job) fails for the VMs in failMigrate, and
// HostEvacuate counts left VMs.
type hostMaintEnv struct {
	mu       sync.Mutex
	ends     []activities.HostMaintenanceEndInput
	migrated []VMOpInput
	parallel int // most migrations running at once
	running  int
}

func runHostMaint(t *testing.T, plan activities.VMEvacuatePlan, planErr error, failMigrate map[string]string, left int64) (*hostMaintEnv, *jobRecorder, error) {
	t.Helper()
	env, rec := newJobEnv(t)
	env.RegisterActivity(&activities.Hosts{})
	env.RegisterActivity(&activities.VMs{})
	env.RegisterWorkflow(PrepareHostForMaintenance)
	env.RegisterWorkflow(MigrateVM)
	s := &hostMaintEnv{}
	env.OnActivity(hostAct.HostMaintenanceBegin, mock.Anything, mock.Anything).Return(activities.HostRef{HostID: 1, HostUUID: "h-1", Name: "h1"}, nil)
	env.OnActivity(vmAct.VMEvacuateBegin, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.VMEvacuateInput) (activities.VMEvacuatePlan, error) {
		if in.HostUUID != "h-1" || in.JobID == "" {
			t.Errorf("VMEvacuateBegin got %+v", in)
		}
		return plan, planErr
	})
	env.OnActivity(hostAct.HostEvacuate, mock.Anything, mock.Anything).Return(activities.HostEvacuateResult{Pending: left}, nil)
	env.OnActivity(hostAct.HostMaintenanceEnd, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.HostMaintenanceEndInput) error {
		s.mu.Lock()
		s.ends = append(s.ends, in)
		s.mu.Unlock()
		return nil
	})
	env.OnWorkflow(MigrateVM, mock.Anything, mock.Anything).Return(func(ctx workflow.Context, in VMOpInput) (JobOutcome, error) {
		s.mu.Lock()
		s.migrated = append(s.migrated, in)
		s.running++
		s.parallel = max(s.parallel, s.running)
		s.mu.Unlock()
		_ = workflow.Sleep(ctx, 1)
		s.mu.Lock()
		s.running--
		s.mu.Unlock()
		if why, ok := failMigrate[in.VMUUID]; ok {
			return JobOutcome{}, cserr.Temporal(cserr.New(cserr.InternalError, "Unable to migrate virtual machine: %s", why))
		}
		return vmOutcome(in.VMUUID), nil
	})
	env.ExecuteWorkflow(PrepareHostForMaintenance, HostMaintenanceInput{HostUUID: "h-1"})
	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	return s, rec, env.GetWorkflowError()
}

func moves(n int) []activities.VMEvacuateMove {
	var out []activities.VMEvacuateMove
	for i := 0; i < n; i++ {
		id := string(rune('a' + i))
		out = append(out, activities.VMEvacuateMove{VMUUID: "vm-" + id, VMName: "web-" + id, TargetHostUUID: "h-2", TargetHostName: "h2", JobID: "job-" + id})
	}
	return out
}

func TestPrepareHostForMaintenanceMigratesEveryVM(t *testing.T) {
	s, rec, err := runHostMaint(t, activities.VMEvacuatePlan{Moves: moves(6)}, nil, nil, 0)
	if err != nil {
		t.Fatalf("workflow failed: %v", err)
	}
	if len(s.migrated) != 6 {
		t.Fatalf("%d migrations, want 6", len(s.migrated))
	}
	for _, m := range s.migrated {
		if m.TargetHostUUID != "h-2" {
			t.Errorf("migration %+v has no target", m)
		}
	}
	if s.parallel > maxParallelVMJobs {
		t.Errorf("%d migrations at once, want at most %d", s.parallel, maxParallelVMJobs)
	}
	if len(s.ends) != 1 || s.ends[0].Failed {
		t.Fatalf("ends %+v, want one success", s.ends)
	}
	if rec.ran(hostAct.HostEvacuate) != 1 {
		t.Error("the final check did not run")
	}
	if len(rec.complete) != 1 || rec.complete[0].Outcome.ResultUUID != "h-1" {
		t.Fatalf("job completion %+v", rec.complete)
	}
}

func TestPrepareHostForMaintenanceRefusedMovesNothing(t *testing.T) {
	plan := activities.VMEvacuatePlan{Refused: []activities.VMRefusal{
		{VMUUID: "vm-a", VMName: "web-a", Reason: "no other host of cluster c1 can take it: not enough free memory: h2"},
		{VMUUID: "vm-b", VMName: "web-b", Reason: "it is Starting (an operation on it is in progress)"},
	}}
	s, rec, err := runHostMaint(t, plan, nil, nil, 0)
	if err == nil {
		t.Fatal("workflow succeeded")
	}
	e := cserr.As(err)
	if e.Code != cserr.InsufficientCap || !strings.Contains(e.Text, "web-a (no other host") || !strings.Contains(e.Text, "web-b (it is Starting") {
		t.Fatalf("error %d %q", e.Code, e.Text)
	}
	if len(s.migrated) != 0 {
		t.Fatalf("migrated %+v although the plan was refused", s.migrated)
	}
	if len(s.ends) != 1 || !s.ends[0].Failed || !s.ends[0].UnableToMigrate || !strings.Contains(s.ends[0].Reason, "web-a") {
		t.Fatalf("ends %+v", s.ends)
	}
	if len(rec.complete) != 1 || rec.complete[0].ErrorCode != cserr.InsufficientCap {
		t.Fatalf("job completion %+v", rec.complete)
	}
}

func TestPrepareHostForMaintenanceFailedMigrationNamed(t *testing.T) {
	s, _, err := runHostMaint(t, activities.VMEvacuatePlan{Moves: moves(3)}, nil, map[string]string{"vm-b": "the target refused"}, 1)
	if err == nil {
		t.Fatal("workflow succeeded")
	}
	e := cserr.As(err)
	if e.Code != cserr.ResourceUnavailable || !strings.Contains(e.Text, "1 of 3") || !strings.Contains(e.Text, "web-b (Unable to migrate virtual machine: the target refused)") {
		t.Fatalf("error %d %q", e.Code, e.Text)
	}
	if len(s.migrated) != 3 {
		t.Fatalf("%d migrations, want all 3 tried", len(s.migrated))
	}
	if len(s.ends) != 1 || !s.ends[0].UnableToMigrate {
		t.Fatalf("ends %+v", s.ends)
	}
}

func TestPrepareHostForMaintenanceNoVMs(t *testing.T) {
	s, rec, err := runHostMaint(t, activities.VMEvacuatePlan{}, nil, nil, 0)
	if err != nil || len(s.migrated) != 0 || len(s.ends) != 1 || s.ends[0].Failed {
		t.Fatalf("err %v migrated %+v ends %+v", err, s.migrated, s.ends)
	}
	if rec.ran(hostAct.HostEvacuate) != 1 {
		t.Error("the final check did not run")
	}
}

func TestPrepareHostForMaintenanceVMLeftBehind(t *testing.T) {
	s, _, err := runHostMaint(t, activities.VMEvacuatePlan{}, nil, nil, 2)
	if e := cserr.As(err); e == nil || !strings.Contains(e.Text, "2 virtual machine(s) still run") {
		t.Fatalf("error %v", err)
	}
	if len(s.ends) != 1 || !s.ends[0].UnableToMigrate {
		t.Fatalf("ends %+v", s.ends)
	}
}
