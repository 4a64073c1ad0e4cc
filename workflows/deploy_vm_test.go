package workflows

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

// vmSteps mocks the VM and IPAM activities and records every call, undos
// included, in order ("VMMark:Error" for a VMMark to Error). fail names the
// step that fails (its error), "" for none.
type vmSteps struct {
	mu    sync.Mutex
	calls []string
	marks []activities.VMMarkInput
	fail  string
	err   error
	// noCopy has VMPlace say the template is on the pool already.
	noCopy bool
	// bare has VMPlace place the VM on a BareMetal machine (no volumes).
	bare bool
}

func (s *vmSteps) rec(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, name)
	if name == s.fail {
		return s.err
	}
	return nil
}

func (s *vmSteps) seq() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

// after returns the calls after the first call of name.
func (s *vmSteps) after(name string) []string {
	seq := s.seq()
	for i, c := range seq {
		if c == name {
			return seq[i+1:]
		}
	}
	return nil
}

var (
	testNic = "9a1e0000-0000-4000-8000-000000000001"
	testVol = "9a1e0000-0000-4000-8000-000000000002"
)

func newVMEnv(t *testing.T, fail string, err error) (*testsuite.TestWorkflowEnvironment, *jobRecorder, *vmSteps) {
	t.Helper()
	env, rec := newJobEnv(t)
	env.RegisterActivity(&activities.VMs{})
	env.RegisterActivity(&activities.IPAM{})
	for _, wf := range []any{DeployVM, StartVM, StopVM, RebootVM, DestroyVM, ExpungeVM, MigrateVM, ScaleVM} {
		env.RegisterWorkflow(wf)
	}
	s := &vmSteps{fail: fail, err: err}
	env.OnActivity(vmAct.VMPlace, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.VMPlaceInput) (activities.VMPlacement, error) {
		if s.bare {
			return activities.VMPlacement{HostID: 7, HostUUID: "h-7", HostName: "h7", NicUUIDs: []string{testNic}, BareMetal: true}, s.rec("VMPlace")
		}
		return activities.VMPlacement{HostID: 7, HostUUID: "h-7", HostName: "h7", NicUUIDs: []string{testNic}, VolumeUUID: []string{testVol}, CopyTemplate: !s.noCopy}, s.rec("VMPlace")
	})
	env.OnActivity(vmAct.VMUnplace, mock.Anything, mock.Anything).Return(func(context.Context, activities.VMRefInput) error { return s.rec("VMUnplace") })
	env.OnActivity(ipamAct.IPAMAllocate, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.IPAMAllocateInput) (activities.IPAMAllocateResult, error) {
		name := "IPAMAllocate"
		if in.SkipPodRanges {
			name = "IPAMAllocate(skip pod ranges)"
		}
		return activities.IPAMAllocateResult{NicUUIDs: []string{testNic}}, s.rec(name)
	})
	env.OnActivity(ipamAct.IPAMRelease, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.IPAMReleaseInput) error {
		if len(in.NicUUIDs) > 0 && in.NicUUIDs[0] != testNic {
			t.Errorf("IPAMRelease of %v, want the placement's NICs", in.NicUUIDs)
		}
		return s.rec("IPAMRelease")
	})
	env.OnActivity(vmAct.VMCopyTemplate, mock.Anything, mock.Anything).Return(func(context.Context, activities.VMRefInput) error { return s.rec("VMCopyTemplate") })
	env.OnActivity(vmAct.VMCreateVolumes, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.VMVolumesInput) error {
		if len(in.VolumeUUIDs) != 1 || in.VolumeUUIDs[0] != testVol {
			t.Errorf("VMCreateVolumes of %v, want the placement's volumes", in.VolumeUUIDs)
		}
		return s.rec("VMCreateVolumes")
	})
	env.OnActivity(vmAct.VMDeleteVolumes, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.VMVolumesInput) error {
		if len(in.VolumeUUIDs) != 1 || in.VolumeUUIDs[0] != testVol {
			t.Errorf("VMDeleteVolumes of %v, want the volumes VMCreateVolumes was given", in.VolumeUUIDs)
		}
		return s.rec("VMDeleteVolumes")
	})
	env.OnActivity(vmAct.VMDefineStart, mock.Anything, mock.Anything).Return(func(context.Context, activities.VMRefInput) error { return s.rec("VMDefineStart") })
	env.OnActivity(vmAct.VMDestroyOnHost, mock.Anything, mock.Anything).Return(func(context.Context, activities.VMRefInput) error { return s.rec("VMDestroyOnHost") })
	env.OnActivity(vmAct.VMMark, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.VMMarkInput) error {
		s.mu.Lock()
		s.marks = append(s.marks, in)
		s.mu.Unlock()
		return s.rec("VMMark:" + in.To)
	})
	env.OnActivity(vmAct.VMStopOnHost, mock.Anything, mock.Anything).Return(func(context.Context, activities.VMStopInput) error { return s.rec("VMStopOnHost") })
	env.OnActivity(vmAct.VMStopped, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.VMStoppedInput) error {
		return s.rec("VMStopped:" + in.To)
	})
	env.OnActivity(vmAct.VMRebootOnHost, mock.Anything, mock.Anything).Return(func(context.Context, activities.VMRefInput) error { return s.rec("VMRebootOnHost") })
	env.OnActivity(vmAct.VMExpunge, mock.Anything, mock.Anything).Return(func(context.Context, activities.VMExpungeInput) error { return s.rec("VMExpunge") })
	for name, fn := range map[string]any{"VMMigrateReserve": vmAct.VMMigrateReserve, "VMMigrateOnHost": vmAct.VMMigrateOnHost,
		"VMMigrateFinish": vmAct.VMMigrateFinish, "VMMigrateAbort": vmAct.VMMigrateAbort} {
		name := name
		env.OnActivity(fn, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.VMMigrateInput) error {
			if name == "VMMigrateAbort" && in.Reason == "" {
				t.Errorf("VMMigrateAbort without a reason")
			}
			return s.rec(name)
		})
	}
	env.OnActivity(tenancyAct.EventRecord, mock.Anything, mock.Anything).Return(func(context.Context, activities.EventInput) error { return s.rec("EventRecord") })
	return env, rec, s
}

func driverRefusal(text string) error {
	return temporal.NewNonRetryableApplicationError(text, "Invalid", nil)
}

func wantSeq(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("%s:\n got  %v\n want %v", what, got, want)
	}
}

var deploySteps = []string{"VMPlace", "IPAMAllocate", "VMCopyTemplate", "VMCreateVolumes", "VMDefineStart", "VMMark:Running"}

func TestDeployVMRunsEveryStep(t *testing.T) {
	env, rec, s := newVMEnv(t, "", nil)
	env.ExecuteWorkflow(DeployVM, DeployVMInput{VMUUID: uuid.NewString(), StartVM: true})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatalf("deploy failed: %v", err)
	}
	wantSeq(t, "deploy steps", s.seq(), deploySteps...)
	got := rec.last()
	if got.ErrorCode != 0 || got.Outcome.ResultType != "VirtualMachine" || got.Outcome.ResultKey != "virtualmachine" {
		t.Fatalf("job completed with %+v", got)
	}
	if m := s.marks[0]; !m.Deployed || m.EventType != "VM.CREATE" || m.From[0] != models.VMStarting {
		t.Errorf("the final mark %+v should record the deployment", m)
	}
}

// Every step's failure undoes the steps before it, in reverse order, and
// leaves the VM in Error with the step's reason, which the job returns.
func TestDeployVMCompensation(t *testing.T) {
	undos := map[string][]string{
		"VMPlace":         {"VMUnplace"},
		"IPAMAllocate":    {"IPAMRelease", "VMUnplace"},
		"VMCopyTemplate":  {"IPAMRelease", "VMUnplace"},
		"VMCreateVolumes": {"VMDeleteVolumes", "IPAMRelease", "VMUnplace"},
		"VMDefineStart":   {"VMDestroyOnHost", "VMDeleteVolumes", "IPAMRelease", "VMUnplace"},
		"VMMark:Running":  {"VMDestroyOnHost", "VMDeleteVolumes", "IPAMRelease", "VMUnplace"},
	}
	for _, step := range deploySteps {
		t.Run(step, func(t *testing.T) {
			reason := "simulated failure of " + step
			err := driverRefusal(reason)
			code := cserr.InternalError
			switch step {
			case "VMPlace":
				err, code = cserr.Temporal(cserr.Capacity("Unable to create a deployment for virtual machine vm1: no host can take the VM: not enough free memory: h1")), cserr.InsufficientCap
				reason = "not enough free memory: h1"
			case "IPAMAllocate":
				err, code = cserr.Temporal(cserr.Capacity("Insufficient address capacity: network n1 has no free IP address")), cserr.InsufficientCap
				reason = "no free IP address"
			}
			env, rec, s := newVMEnv(t, step, err)
			env.ExecuteWorkflow(DeployVM, DeployVMInput{VMUUID: uuid.NewString(), StartVM: true})
			werr := env.GetWorkflowError()
			if cserr.Code(werr) != code {
				t.Fatalf("workflow error %v (code %d), want code %d", werr, cserr.Code(werr), code)
			}
			want := append(append([]string{}, undos[step]...), "VMMark:Error")
			wantSeq(t, "after "+step+" failed", s.after(step), want...)
			for _, later := range deploySteps[indexOf(deploySteps, step)+1:] {
				for _, c := range s.seq() {
					if c == later {
						t.Errorf("%s ran after %s failed", later, step)
					}
				}
			}
			last := s.marks[len(s.marks)-1]
			if last.To != models.VMError || !strings.Contains(last.Reason, reason) || last.From[0] != models.VMStarting {
				t.Errorf("VM marked %+v, want Error from Starting with the reason", last)
			}
			if got := rec.last(); got.ErrorCode != code || !strings.Contains(got.ErrorText, reason) || !strings.HasPrefix(got.ErrorText, "Unable to") {
				t.Errorf("job completed with %+v, want code %d and the reason", got, code)
			}
		})
	}
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

// An undo that fails does not stop the others.
func TestDeployVMUndoFailureRunsTheRest(t *testing.T) {
	env, _, s := newVMEnv(t, "VMDefineStart", driverRefusal("define refused"))
	// VMDeleteVolumes fails too: its error is logged and the rest go on.
	env.OnActivity(vmAct.VMDeleteVolumes, mock.Anything, mock.Anything).Return(func(context.Context, activities.VMVolumesInput) error {
		s.rec("VMDeleteVolumes")
		return driverRefusal("pool gone")
	})
	env.ExecuteWorkflow(DeployVM, DeployVMInput{VMUUID: uuid.NewString(), StartVM: true})
	if env.GetWorkflowError() == nil {
		t.Fatal("deploy succeeded")
	}
	wantSeq(t, "undo", s.after("VMDefineStart"), "VMDestroyOnHost", "VMDeleteVolumes", "IPAMRelease", "VMUnplace", "VMMark:Error")
}

func TestDeployVMWithoutStart(t *testing.T) {
	env, rec, s := newVMEnv(t, "", nil)
	env.ExecuteWorkflow(DeployVM, DeployVMInput{VMUUID: uuid.NewString(), StartVM: false})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	wantSeq(t, "startvm=false", s.seq(), "IPAMAllocate(skip pod ranges)", "VMMark:Stopped")
	if m := s.marks[0]; !m.Deployed || m.From[0] != models.VMStarting {
		t.Errorf("mark %+v", m)
	}
	if rec.last().ErrorCode != 0 {
		t.Errorf("job %+v", rec.last())
	}

	env, _, s = newVMEnv(t, "IPAMAllocate(skip pod ranges)", cserr.Temporal(cserr.Param("The requested IP address 10.0.0.9 is not available")))
	env.ExecuteWorkflow(DeployVM, DeployVMInput{VMUUID: uuid.NewString(), StartVM: false})
	if cserr.Code(env.GetWorkflowError()) != cserr.ParamError {
		t.Fatalf("error %v, want 431", env.GetWorkflowError())
	}
	wantSeq(t, "startvm=false failing", s.seq(), "IPAMAllocate(skip pod ranges)", "IPAMRelease", "VMMark:Error")
}

// A failed start undoes what it did and leaves the VM Stopped, not Error.
func TestStartVMFailureLeavesStopped(t *testing.T) {
	env, rec, s := newVMEnv(t, "VMDefineStart", driverRefusal("host refused"))
	env.ExecuteWorkflow(StartVM, VMOpInput{VMUUID: uuid.NewString(), Pins: activities.VMPins{ConsiderLastHost: true}})
	if env.GetWorkflowError() == nil {
		t.Fatal("start succeeded")
	}
	wantSeq(t, "start undo", s.after("VMDefineStart"), "VMDestroyOnHost", "VMDeleteVolumes", "IPAMRelease", "VMUnplace", "VMMark:Stopped")
	if m := s.marks[len(s.marks)-1]; m.EventType != "VM.START" || m.Reason == "" {
		t.Errorf("mark %+v", m)
	}
	if got := rec.last(); !strings.Contains(got.ErrorText, "Unable to start virtual machine: host refused") {
		t.Errorf("job %+v", got)
	}
}

// The lifecycle jobs move the VM out of the transitional state the API put
// it in: forward on success, back with the reason on failure.
func TestVMLifecycleStateRules(t *testing.T) {
	cases := map[string]struct {
		wf       any
		in       VMOpInput
		fail     string
		want     []string
		wantCode int
		from, to string // the last VMMark's guard and target, when one
	}{
		"stop":                   {wf: StopVM, want: []string{"VMStopOnHost", "VMStopped:Stopped"}},
		"stop refused":           {wf: StopVM, fail: "VMStopOnHost", want: []string{"VMStopOnHost", "VMMark:Running"}, wantCode: cserr.InternalError, from: models.VMStopping, to: models.VMRunning},
		"forced stop refused":    {wf: StopVM, in: VMOpInput{Forced: true}, fail: "VMStopOnHost", want: []string{"VMStopOnHost", "VMStopped:Stopped"}},
		"reboot":                 {wf: RebootVM, want: []string{"VMRebootOnHost", "VMMark:Running"}, from: models.VMStarting, to: models.VMRunning},
		"reboot refused":         {wf: RebootVM, fail: "VMRebootOnHost", want: []string{"VMRebootOnHost", "VMMark:Running"}, wantCode: cserr.InternalError, from: models.VMStarting, to: models.VMRunning},
		"destroy":                {wf: DestroyVM, in: VMOpInput{PrevState: models.VMRunning}, want: []string{"VMStopOnHost", "VMStopped:Destroyed"}},
		"destroy and expunge":    {wf: DestroyVM, in: VMOpInput{Expunge: true}, want: []string{"VMStopOnHost", "VMStopped:Destroyed", "VMMark:Expunging", "VMExpunge"}, from: models.VMDestroyed, to: models.VMExpunging},
		"destroy refused":        {wf: DestroyVM, in: VMOpInput{PrevState: models.VMStopped}, fail: "VMStopOnHost", want: []string{"VMStopOnHost", "VMMark:Stopped"}, wantCode: cserr.InternalError, from: models.VMStopping, to: models.VMStopped},
		"expunge":                {wf: ExpungeVM, want: []string{"VMExpunge"}},
		"migrate":                {wf: MigrateVM, in: VMOpInput{TargetHostUUID: "h2"}, want: []string{"VMMigrateReserve", "VMMigrateOnHost", "VMMigrateFinish"}},
		"migrate refused":        {wf: MigrateVM, in: VMOpInput{TargetHostUUID: "h2"}, fail: "VMMigrateOnHost", want: []string{"VMMigrateReserve", "VMMigrateOnHost", "VMMigrateAbort"}, wantCode: cserr.InternalError},
		"migrate without room":   {wf: MigrateVM, in: VMOpInput{TargetHostUUID: "h2"}, fail: "VMMigrateReserve", want: []string{"VMMigrateReserve", "VMMigrateAbort"}, wantCode: cserr.InsufficientCap},
		"scale records a change": {wf: ScaleVM, in: VMOpInput{Description: "scaled"}, want: []string{"EventRecord"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var err error
			if tc.fail != "" {
				err = driverRefusal("refused by " + tc.fail)
				if tc.wantCode == cserr.InsufficientCap {
					err = cserr.Temporal(cserr.Capacity("Host h2 has no room"))
				}
			}
			env, rec, s := newVMEnv(t, tc.fail, err)
			tc.in.VMUUID = uuid.NewString()
			env.ExecuteWorkflow(tc.wf, tc.in)
			werr := env.GetWorkflowError()
			if got := cserr.Code(werr); got != tc.wantCode {
				t.Fatalf("workflow error %v (code %d), want code %d", werr, got, tc.wantCode)
			}
			wantSeq(t, name, s.seq(), tc.want...)
			if tc.to != "" {
				m := s.marks[len(s.marks)-1]
				if m.To != tc.to || len(m.From) != 1 || m.From[0] != tc.from {
					t.Errorf("last mark %+v, want %s -> %s", m, tc.from, tc.to)
				}
				if tc.fail != "" && !strings.Contains(m.Reason, "refused by") {
					t.Errorf("mark %+v lacks the reason", m)
				}
			}
			if got := rec.last(); got.ErrorCode != tc.wantCode {
				t.Errorf("job completed with %+v", got)
			}
			if tc.fail == "" && name != "expunge" && rec.last().Outcome.ResultType != "VirtualMachine" {
				t.Errorf("job outcome %+v, want the VM", rec.last().Outcome)
			}
		})
	}
}

func TestVMFailureCodes(t *testing.T) {
	for name, tc := range map[string]struct {
		err  error
		code int
	}{
		"cs code":       {cserr.Temporal(cserr.Capacity("full")), cserr.InsufficientCap},
		"driver cap":    {temporal.NewNonRetryableApplicationError("pool full", "Capacity", nil), cserr.InsufficientCap},
		"unsupported":   {temporal.NewNonRetryableApplicationError("no", "NotSupported", nil), cserr.UnsupportedAction},
		"state changed": {temporal.NewNonRetryableApplicationError("moved", activities.ErrTypeVMState, nil), cserr.ParamError},
		"plain":         {fmt.Errorf("boom"), cserr.InternalError},
	} {
		if code, _ := vmFailure(tc.err); code != tc.code {
			t.Errorf("%s: code %d, want %d", name, code, tc.code)
		}
	}
}

func TestSettleVMsSettlesEach(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterActivity(&activities.VMs{})
	env.RegisterWorkflow(SettleVMs)
	var got []string
	env.OnActivity(vmAct.VMSettle, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.VMRefInput) (string, error) {
		got = append(got, in.VMUUID)
		return models.VMStopped, nil
	})
	env.ExecuteWorkflow(SettleVMs, []SettleVMInput{{VMUUID: "a"}, {VMUUID: "b"}})
	var out []string
	if err := env.GetWorkflowResult(&out); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "a,b" || strings.Join(out, ",") != "Stopped,Stopped" {
		t.Fatalf("settled %v -> %v", got, out)
	}
}

// A template already on the pool skips the copy step.
func TestDeployVMSkipsTheCopyWhenTheTemplateIsThere(t *testing.T) {
	env, _, s := newVMEnv(t, "", nil)
	s.noCopy = true
	env.ExecuteWorkflow(DeployVM, DeployVMInput{VMUUID: uuid.NewString(), StartVM: true})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	wantSeq(t, "deploy with the template on the pool", s.seq(), "VMPlace", "IPAMAllocate", "VMCreateVolumes", "VMDefineStart", "VMMark:Running")
}
