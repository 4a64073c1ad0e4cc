package workflows

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
)

// newBMEnv is newVMEnv with the VM placed on a BareMetal machine; the
// BareMetal steps are mocked too. provisioning is what BareMetalStart
// answers.
func newBMEnv(t *testing.T, fail string, err error, provisioning bool) (*testsuite.TestWorkflowEnvironment, *jobRecorder, *vmSteps, *[]activities.BareMetalReleaseInput) {
	t.Helper()
	env, rec, s := newVMEnv(t, fail, err)
	s.bare = true
	env.RegisterActivity(&activities.BareMetal{})
	var released []activities.BareMetalReleaseInput
	env.OnActivity(bmAct.BareMetalStart, mock.Anything, mock.Anything).Return(func(context.Context, activities.VMRefInput) (activities.BareMetalStartResult, error) {
		return activities.BareMetalStartResult{Provisioning: provisioning, HostUUID: "h-7", Timeout: 20 * time.Minute}, s.rec("BareMetalStart")
	})
	env.OnActivity(bmAct.BareMetalAwaitProvisioned, mock.Anything, mock.Anything).Return(func(context.Context, activities.BareMetalAwaitInput) error {
		return s.rec("BareMetalAwaitProvisioned")
	})
	env.OnActivity(bmAct.BareMetalRelease, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.BareMetalReleaseInput) error {
		released = append(released, in)
		return s.rec("BareMetalRelease")
	})
	return env, rec, s, &released
}

func TestDeployBareMetalProvisionsAndWaits(t *testing.T) {
	env, _, s, _ := newBMEnv(t, "", nil, true)
	env.ExecuteWorkflow(DeployVM, DeployVMInput{VMUUID: uuid.NewString(), StartVM: true})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatalf("deploy failed: %v", err)
	}
	wantSeq(t, "BareMetal deploy", s.seq(), "VMPlace", "IPAMAllocate", "BareMetalStart", "BareMetalAwaitProvisioned", "VMMark:Running")
}

func TestStartBareMetalProvisionedBootsWithoutWaiting(t *testing.T) {
	env, _, s, _ := newBMEnv(t, "", nil, false)
	env.ExecuteWorkflow(StartVM, VMOpInput{VMUUID: uuid.NewString()})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatalf("start failed: %v", err)
	}
	wantSeq(t, "BareMetal start", s.seq(), "VMPlace", "IPAMAllocate", "BareMetalStart", "VMMark:Running")
}

// A system that never calls back fails the deployment: the machine is
// powered off and given up, the VM ends in Error with the reason.
func TestDeployBareMetalWithoutCallbackIsUndone(t *testing.T) {
	reason := "host h7 did not report provisioned in time"
	env, rec, s, released := newBMEnv(t, "BareMetalAwaitProvisioned",
		temporal.NewNonRetryableApplicationError(reason, activities.ErrTypeProvision, nil), true)
	env.ExecuteWorkflow(DeployVM, DeployVMInput{VMUUID: uuid.NewString(), StartVM: true})
	werr := env.GetWorkflowError()
	if cserr.Code(werr) != cserr.InternalError || !strings.Contains(werr.Error(), reason) {
		t.Fatalf("workflow error %v", werr)
	}
	wantSeq(t, "undo", s.after("BareMetalAwaitProvisioned"), "BareMetalRelease", "IPAMRelease", "VMUnplace", "VMMark:Error")
	if len(*released) != 1 || !(*released)[0].Forget {
		t.Errorf("release %+v: a failed deployment gives the machine up", *released)
	}
	if got := rec.last(); got.ErrorCode != cserr.InternalError {
		t.Errorf("job ended %+v", got)
	}
}

// A start whose power-on fails powers the machine off but keeps it the
// VM's (what was installed on it stays), and the VM Stopped.
func TestStartBareMetalFailureKeepsTheMachine(t *testing.T) {
	env, _, s, released := newBMEnv(t, "BareMetalStart", driverRefusal("ipmi PowerOn: power on did not take effect within 30s"), false)
	env.ExecuteWorkflow(StartVM, VMOpInput{VMUUID: uuid.NewString()})
	if err := env.GetWorkflowError(); err == nil || !strings.Contains(err.Error(), "power on did not take effect") {
		t.Fatalf("workflow error %v", err)
	}
	wantSeq(t, "undo", s.after("BareMetalStart"), "BareMetalRelease", "IPAMRelease", "VMUnplace", "VMMark:Stopped")
	if len(*released) != 1 || (*released)[0].Forget {
		t.Errorf("release %+v: a failed start keeps the machine the VM's", *released)
	}
}
