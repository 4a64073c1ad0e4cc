package workflows

import (
	"context"
	"testing"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/testsuite"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

func vmSnapEnv(t *testing.T) (*testsuite.TestWorkflowEnvironment, *jobRecorder) {
	t.Helper()
	env, rec := newJobEnv(t)
	for _, wf := range []any{CreateVMSnapshot, RevertVMSnapshot, DeleteVMSnapshot} {
		env.RegisterWorkflow(wf)
	}
	env.RegisterActivity(&activities.VMs{})
	env.RegisterActivity(&activities.VMSnapshots{})
	return env, rec
}

func TestVMSnapshotFailedTakeIsUndone(t *testing.T) {
	env, rec := vmSnapEnv(t)
	in := activities.VMSnapshotInput{SnapshotUUID: "vs-1"}
	env.OnActivity(vmSnapAct.VMSnapshotBegin, mock.Anything, in).Return(activities.VMSnapshotBeginResult{}, nil)
	env.OnActivity(vmSnapAct.VMSnapshotTake, mock.Anything, in).Return(driverDown("datastore full"))
	var undo activities.VMSnapshotFailInput
	env.OnActivity(vmSnapAct.VMSnapshotUndo, mock.Anything, mock.Anything).
		Return(func(_ context.Context, u activities.VMSnapshotFailInput) error { undo = u; return nil }).Once()
	env.ExecuteWorkflow(CreateVMSnapshot, in)
	if env.GetWorkflowError() == nil {
		t.Fatal("workflow succeeded, want the driver's failure")
	}
	if undo.SnapshotUUID != "vs-1" || undo.Reason != "datastore full" {
		t.Fatalf("VMSnapshotUndo got %+v", undo)
	}
	rec.notRun(t, vmSnapAct.VMSnapshotFinish)
	if got := rec.last(); got.ErrorCode != cserr.InternalError || got.ErrorText != "datastore full" {
		t.Fatalf("job completed with %+v", got)
	}
}

func TestVMSnapshotRevert(t *testing.T) {
	for name, tc := range map[string]struct {
		prev, transit, hostState string
		driverErr                error
		wantMark                 *activities.VMMarkInput
		wantStopped              bool
	}{
		"disk snapshot of a running VM: Stopped, host given back": {prev: models.VMRunning, transit: models.VMStopping, hostState: "Stopped", wantStopped: true},
		"memory snapshot: Running": {prev: models.VMRunning, transit: models.VMStarting, hostState: "Running",
			wantMark: &activities.VMMarkInput{VMUUID: "vm-1", From: []string{models.VMStarting}, To: models.VMRunning}},
		"disk snapshot of a stopped VM: Stopped": {prev: models.VMStopped, transit: models.VMStopping, hostState: "Stopped",
			wantMark: &activities.VMMarkInput{VMUUID: "vm-1", From: []string{models.VMStopping}, To: models.VMStopped}},
		"the hypervisor fails: the VM back as it was": {prev: models.VMRunning, transit: models.VMStarting, driverErr: driverDown("snapshot is locked"),
			wantMark: &activities.VMMarkInput{VMUUID: "vm-1", From: []string{models.VMStarting}, To: models.VMRunning, Reason: "snapshot is locked", EventType: "VMSNAPSHOT.REVERTTO"}},
	} {
		t.Run(name, func(t *testing.T) {
			env, rec := vmSnapEnv(t)
			in := RevertVMSnapshotInput{SnapshotUUID: "vs-1", VMUUID: "vm-1", PrevState: tc.prev, Transit: tc.transit}
			snap := activities.VMSnapshotInput{SnapshotUUID: "vs-1"}
			env.OnActivity(vmSnapAct.VMSnapshotRevertOnHost, mock.Anything, snap).Return(tc.hostState, tc.driverErr)
			var mark *activities.VMMarkInput
			env.OnActivity(vmAct.VMMark, mock.Anything, mock.Anything).Return(func(_ context.Context, m activities.VMMarkInput) error { mark = &m; return nil })
			stopped := false
			env.OnActivity(vmAct.VMStopped, mock.Anything, mock.Anything).Return(func(_ context.Context, s activities.VMStoppedInput) error {
				stopped = s.VMUUID == "vm-1" && s.To == models.VMStopped
				return nil
			})
			var fin activities.VMSnapshotRevertFinishInput
			env.OnActivity(vmSnapAct.VMSnapshotRevertFinish, mock.Anything, mock.Anything).
				Return(func(_ context.Context, f activities.VMSnapshotRevertFinishInput) error { fin = f; return nil }).Once()
			env.ExecuteWorkflow(RevertVMSnapshot, in)
			if (env.GetWorkflowError() != nil) != (tc.driverErr != nil) {
				t.Fatalf("workflow error %v", env.GetWorkflowError())
			}
			if fin.SnapshotUUID != "vs-1" || fin.Failed != (tc.driverErr != nil) {
				t.Fatalf("VMSnapshotRevertFinish got %+v", fin)
			}
			if stopped != tc.wantStopped {
				t.Fatalf("VMStopped ran: %v, want %v", stopped, tc.wantStopped)
			}
			if (mark == nil) != (tc.wantMark == nil) || (mark != nil && (mark.To != tc.wantMark.To || mark.From[0] != tc.wantMark.From[0] ||
				mark.Reason != tc.wantMark.Reason || mark.EventType != tc.wantMark.EventType)) {
				t.Fatalf("VMMark got %+v, want %+v", mark, tc.wantMark)
			}
			if tc.driverErr == nil {
				if got := rec.last(); got.ErrorCode != 0 || got.Outcome.ResultUUID != "vm-1" || got.Outcome.ResultType != "VirtualMachine" {
					t.Fatalf("job completed with %+v", got)
				}
			}
		})
	}
}

func TestVMSnapshotFailedDeleteIsError(t *testing.T) {
	env, rec := vmSnapEnv(t)
	in := activities.VMSnapshotInput{SnapshotUUID: "vs-1"}
	env.OnActivity(vmSnapAct.VMSnapshotDeleteOnHost, mock.Anything, in).Return(driverDown("host gone"))
	var failed activities.VMSnapshotFailInput
	env.OnActivity(vmSnapAct.VMSnapshotDeleteFailed, mock.Anything, mock.Anything).
		Return(func(_ context.Context, f activities.VMSnapshotFailInput) error { failed = f; return nil }).Once()
	env.ExecuteWorkflow(DeleteVMSnapshot, in)
	if env.GetWorkflowError() == nil || failed.SnapshotUUID != "vs-1" || failed.Reason != "host gone" {
		t.Fatalf("workflow error %v, VMSnapshotDeleteFailed got %+v", env.GetWorkflowError(), failed)
	}
	rec.notRun(t, vmSnapAct.VMSnapshotDeleteFinish)
}
