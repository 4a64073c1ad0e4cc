package workflows

import (
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/testsuite"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
)

func isoEnv(t *testing.T) (*testsuite.TestWorkflowEnvironment, *jobRecorder) {
	t.Helper()
	env, rec := newJobEnv(t)
	env.RegisterWorkflow(AttachISO)
	env.RegisterWorkflow(DetachISO)
	env.RegisterActivity(&activities.VMs{})
	return env, rec
}

// TestAttachISOFailedInsertUndoes: the live media change fails for good,
// so the drive is emptied and the ISO forgotten (without an event), in
// reverse order.
func TestAttachISOFailedInsertUndoes(t *testing.T) {
	env, rec := isoEnv(t)
	in := activities.VMISOInput{VMUUID: "vm-1", ISOUUID: "iso-1", Actor: activities.Actor{AccountID: 2}}
	ref := activities.VMRefInput{VMUUID: "vm-1"}
	env.OnActivity(vmAct.VMISORecord, mock.Anything, in).Return(activities.VMISOState{Running: true}, nil)
	env.OnActivity(vmAct.VMCopyISO, mock.Anything, ref).Return(nil)
	env.OnActivity(vmAct.VMISOInsert, mock.Anything, ref).Return(driverDown("the host refused the medium"))
	env.OnActivity(vmAct.VMISOEject, mock.Anything, ref).Return(nil).Once()
	var forgot activities.VMISOInput
	env.OnActivity(vmAct.VMISOForget, mock.Anything, mock.Anything).
		Return(func(_ context.Context, f activities.VMISOInput) error { forgot = f; return nil }).Once()
	env.ExecuteWorkflow(AttachISO, in)

	if err := env.GetWorkflowError(); err == nil {
		t.Fatal("workflow succeeded, want the insert's failure")
	}
	want := names(vmAct.VMISORecord, vmAct.VMCopyISO, vmAct.VMISOInsert, vmAct.VMISOEject, vmAct.VMISOForget)
	if got := rec.order(vmAct.VMISORecord, vmAct.VMCopyISO, vmAct.VMISOInsert, vmAct.VMISOEject, vmAct.VMISOForget); !slices.Equal(got, want) {
		t.Fatalf("steps %v, want %v", got, want)
	}
	if !forgot.Undo || forgot.ISOUUID != "iso-1" {
		t.Fatalf("VMISOForget got %+v", forgot)
	}
	if got := rec.last(); got.ErrorCode != cserr.InternalError || got.ErrorText != "the host refused the medium" {
		t.Fatalf("job completed with %+v", got)
	}
}

// TestAttachISOStoppedVM only records the ISO: the next start copies it
// and defines the drive with it.
func TestAttachISOStoppedVM(t *testing.T) {
	env, rec := isoEnv(t)
	in := activities.VMISOInput{VMUUID: "vm-1", ISOUUID: "iso-1"}
	env.OnActivity(vmAct.VMISORecord, mock.Anything, in).Return(activities.VMISOState{}, nil)
	env.ExecuteWorkflow(AttachISO, in)
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	rec.notRun(t, vmAct.VMCopyISO)
	rec.notRun(t, vmAct.VMISOInsert)
	if got := rec.last(); got.ErrorCode != 0 || got.Outcome.ResultUUID != "vm-1" {
		t.Fatalf("job completed with %+v", got)
	}
}

// TestDetachISOFailedEjectKeepsIt: a drive that cannot be emptied leaves
// the ISO recorded.
func TestDetachISOFailedEjectKeepsIt(t *testing.T) {
	env, rec := isoEnv(t)
	in := activities.VMISOInput{VMUUID: "vm-1"}
	env.OnActivity(vmAct.VMISOEject, mock.Anything, activities.VMRefInput{VMUUID: "vm-1"}).Return(driverDown("guest locked the tray"))
	env.ExecuteWorkflow(DetachISO, in)
	if err := env.GetWorkflowError(); err == nil {
		t.Fatal("workflow succeeded, want the eject's failure")
	}
	rec.notRun(t, vmAct.VMISOForget)
}
