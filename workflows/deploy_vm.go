package workflows

import (
	"errors"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

// Nil activity struct pointers of the VM jobs.
var (
	vmAct   *activities.VMs
	ipamAct *activities.IPAM
	bmAct   *activities.BareMetal
)

// withLocalInventory sets options for quick inventory steps run as local
// activities: they run in the workflow's worker, without a round trip
// through the Temporal server for each, which is most of a deployment's
// steps.
func withLocalInventory(ctx workflow.Context) workflow.Context {
	return workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        200 * time.Millisecond,
			BackoffCoefficient:     2,
			MaximumInterval:        10 * time.Second,
			MaximumAttempts:        20,
			NonRetryableErrorTypes: append([]string{activities.ErrTypeVMState}, nonRetryable...),
		},
	})
}

// withVMDriver sets options for hypervisor and storage calls of VM jobs.
func withVMDriver(ctx workflow.Context, timeout time.Duration) workflow.Context {
	ctx = withDriver(ctx, timeout)
	opts := workflow.GetActivityOptions(ctx)
	opts.RetryPolicy.NonRetryableErrorTypes = append([]string{activities.ErrTypeVMState}, nonRetryable...)
	return workflow.WithActivityOptions(ctx, opts)
}

// withLocalDriver sets options for quick driver steps run as local
// activities: bounded like withVMDriver, without heartbeats (a worker that
// dies mid-step has the step run again; the steps are idempotent).
func withLocalDriver(ctx workflow.Context, timeout time.Duration) workflow.Context {
	return workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: timeout,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        30 * time.Second,
			MaximumAttempts:        5,
			NonRetryableErrorTypes: append([]string{activities.ErrTypeVMState}, nonRetryable...),
		},
	})
}

// DeployVMInput is a deployVirtualMachine job: the API has written the VM
// row (Starting), its volumes (Allocated) and its NICs (with a MAC, and the
// address asked for, if any), and taken its resource counts.
type DeployVMInput struct {
	VMUUID  string
	StartVM bool
	Pins    activities.VMPins
	Actor   activities.Actor
}

// DeployVM deploys a VM: place it and reserve its capacity, give its NICs
// addresses, copy its template to the chosen pool when missing, create its
// volumes, define and start it on the host, and mark it Running. Each step
// registers its undo before it runs; a failure undoes in reverse order and
// leaves the VM in Error with the reason, which the job returns (533 with
// the planner's reasons when nothing fits). With startvm=false the VM only
// gets its addresses where they do not depend on a host, and ends Stopped.
func DeployVM(ctx workflow.Context, in DeployVMInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		w := &deployVM{in: in}
		return w.run(ctx)
	})
}

func vmOutcome(id string) JobOutcome {
	return JobOutcome{ResultKey: "virtualmachine", ResultType: "VirtualMachine", ResultUUID: id}
}

type deployVM struct {
	in DeployVMInput
}

func (w *deployVM) run(ctx workflow.Context) (JobOutcome, error) {
	lctx := withLocalInventory(ctx)
	if !w.in.StartVM {
		// Addresses of shared networks do not depend on where the VM runs;
		// a basic zone's come from the pod it starts in.
		var got activities.IPAMAllocateResult
		if err := workflow.ExecuteLocalActivity(lctx, ipamAct.IPAMAllocate, activities.IPAMAllocateInput{VMUUID: w.in.VMUUID, SkipPodRanges: true}).Get(ctx, &got); err != nil {
			return w.failed(ctx, err, func(dctx workflow.Context) {
				release := activities.IPAMReleaseInput{VMUUID: w.in.VMUUID}
				if err := workflow.ExecuteLocalActivity(withLocalInventory(dctx), ipamAct.IPAMRelease, release).Get(dctx, nil); err != nil {
					workflow.GetLogger(ctx).Error("undo failed", "step", "IPAMRelease", "vm", w.in.VMUUID, "err", err)
				}
			})
		}
		mark := activities.VMMarkInput{VMUUID: w.in.VMUUID, From: []string{models.VMStarting}, To: models.VMStopped,
			EventType: "VM.CREATE", Deployed: true, Actor: w.in.Actor}
		if err := workflow.ExecuteLocalActivity(lctx, vmAct.VMMark, mark).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return vmOutcome(w.in.VMUUID), nil
	}
	s := &startVM{vm: w.in.VMUUID, pins: w.in.Pins, actor: w.in.Actor, deploy: true}
	if err := s.run(ctx); err != nil {
		return JobOutcome{}, err
	}
	return vmOutcome(w.in.VMUUID), nil
}

// failed is a deployment that failed before starting: undo, then Error.
func (w *deployVM) failed(ctx workflow.Context, err error, undo func(workflow.Context)) (JobOutcome, error) {
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	undo(dctx)
	code, reason := vmFailure(err)
	mark := activities.VMMarkInput{VMUUID: w.in.VMUUID, From: []string{models.VMStarting}, To: models.VMError, Reason: reason,
		EventType: "VM.CREATE", Actor: w.in.Actor}
	if merr := workflow.ExecuteLocalActivity(withLocalInventory(dctx), vmAct.VMMark, mark).Get(dctx, nil); merr != nil {
		workflow.GetLogger(ctx).Error("cannot mark the VM failed", "vm", w.in.VMUUID, "err", merr)
	}
	return JobOutcome{}, vmError(code, "deploy", reason)
}

// startVM is the start of a VM in Starting, shared by deployVirtualMachine
// and startVirtualMachine: the steps, each with its undo registered before
// it runs, and on failure the undo in reverse order and the VM moved to
// Error (a deployment) or back to Stopped (a start).
type startVM struct {
	vm     string
	pins   activities.VMPins
	actor  activities.Actor
	deploy bool
	undo   []undoStep
}

// undoStep is one registered compensation.
type undoStep struct {
	name string
	run  func(ctx workflow.Context) error
}

func (s *startVM) push(name string, run func(ctx workflow.Context) error) {
	s.undo = append(s.undo, undoStep{name: name, run: run})
}

func (s *startVM) run(ctx workflow.Context) error {
	lctx := withLocalInventory(ctx)
	ref := activities.VMRefInput{VMUUID: s.vm}
	err := func() error {
		// Reserve: the planner's placements in order until one's guarded
		// reservation succeeds.
		s.push("VMUnplace", func(ctx workflow.Context) error {
			return workflow.ExecuteLocalActivity(withLocalInventory(ctx), vmAct.VMUnplace, ref).Get(ctx, nil)
		})
		var pl activities.VMPlacement
		if err := workflow.ExecuteLocalActivity(lctx, vmAct.VMPlace, activities.VMPlaceInput{VMUUID: s.vm, Pins: s.pins}).Get(ctx, &pl); err != nil {
			return err
		}
		// Volume creation and define-and-start run as local activities where
		// the host's driver does them in seconds: two fewer round trips
		// through the Temporal server per start.
		quick := workflow.GetVersion(ctx, "vm-quick-provision-local", workflow.DefaultVersion, 1) == 1 && pl.QuickProvision
		provision := func(timeout time.Duration, fn, in any) workflow.Future {
			if quick {
				return workflow.ExecuteLocalActivity(withLocalDriver(ctx, min(timeout, 5*time.Minute)), fn, in)
			}
			return workflow.ExecuteActivity(withVMDriver(ctx, timeout), fn, in)
		}
		// Where the steps are backend tasks (vCenter), a local activity
		// tries them first and waits a few seconds; a task still running
		// then goes to the regular activity, which reattaches to it. Asked
		// only of such hosts, so other histories stay as they were.
		bounded := !quick && pl.TaskProvision &&
			workflow.GetVersion(ctx, "vm-task-provision-local", workflow.DefaultVersion, 1) == 1
		boundedCtx := withLocalDriver(ctx, 2*time.Minute)
		if len(pl.NicUUIDs) > 0 {
			s.push("IPAMRelease", func(ctx workflow.Context) error {
				return workflow.ExecuteLocalActivity(withLocalInventory(ctx), ipamAct.IPAMRelease,
					activities.IPAMReleaseInput{VMUUID: s.vm, NicUUIDs: pl.NicUUIDs}).Get(ctx, nil)
			})
			if err := workflow.ExecuteLocalActivity(lctx, ipamAct.IPAMAllocate, activities.IPAMAllocateInput{VMUUID: s.vm}).Get(ctx, nil); err != nil {
				return err
			}
		}
		if len(pl.VolumeUUID) > 0 {
			// The template copy is a cache of the pool, kept for the next VM;
			// runs recorded before VMPlacement said whether it is needed
			// always ran the step.
			v := workflow.GetVersion(ctx, "vm-copy-template-when-needed", workflow.DefaultVersion, 1)
			if v == workflow.DefaultVersion || pl.CopyTemplate {
				if err := workflow.ExecuteActivity(withVMDriver(ctx, time.Hour), vmAct.VMCopyTemplate, ref).Get(ctx, nil); err != nil {
					return err
				}
			}
			vols := activities.VMVolumesInput{VMUUID: s.vm, VolumeUUIDs: pl.VolumeUUID}
			s.push("VMDeleteVolumes", func(ctx workflow.Context) error {
				return workflow.ExecuteActivity(withVMDriver(ctx, 10*time.Minute), vmAct.VMDeleteVolumes, vols).Get(ctx, nil)
			})
			if bounded {
				var q activities.VMQuickResult
				if err := workflow.ExecuteLocalActivity(boundedCtx, vmAct.VMCreateVolumesQuick, vols).Get(ctx, &q); err != nil {
					return err
				}
				if q.Pending {
					vols := vols
					vols.Tasks = q.Tasks
					if err := provision(30*time.Minute, vmAct.VMCreateVolumes, vols).Get(ctx, nil); err != nil {
						return err
					}
				}
			} else if err := provision(30*time.Minute, vmAct.VMCreateVolumes, vols).Get(ctx, nil); err != nil {
				return err
			}
		}
		// The ISO in the VM's CD-ROM drive is read from the root volume's
		// pool, copied there once like a template. Runs recorded before
		// VMPlacement said so never copied it.
		if pl.CopyISO && workflow.GetVersion(ctx, "vm-copy-iso", workflow.DefaultVersion, 1) == 1 {
			if err := workflow.ExecuteActivity(withVMDriver(ctx, time.Hour), vmAct.VMCopyISO, ref).Get(ctx, nil); err != nil {
				return err
			}
		}
		if pl.BareMetal && workflow.GetVersion(ctx, "vm-baremetal-start", workflow.DefaultVersion, 1) == 1 {
			if err := s.startBareMetal(ctx, ref); err != nil {
				return err
			}
		} else {
			s.push("VMDestroyOnHost", func(ctx workflow.Context) error {
				return workflow.ExecuteActivity(withVMDriver(ctx, 5*time.Minute), vmAct.VMDestroyOnHost, ref).Get(ctx, nil)
			})
			if bounded {
				var q activities.VMQuickResult
				if err := workflow.ExecuteLocalActivity(boundedCtx, vmAct.VMDefineStartQuick, ref).Get(ctx, &q); err != nil {
					return err
				}
				if q.Pending {
					if err := provision(10*time.Minute, vmAct.VMDefineStart, activities.VMRefInput{VMUUID: s.vm, Tasks: q.Tasks}).Get(ctx, nil); err != nil {
						return err
					}
				}
			} else if err := provision(10*time.Minute, vmAct.VMDefineStart, ref).Get(ctx, nil); err != nil {
				return err
			}
		}
		mark := activities.VMMarkInput{VMUUID: s.vm, From: []string{models.VMStarting}, To: models.VMRunning,
			EventType: "VM.START", Usage: "VM.START", Actor: s.actor}
		if s.deploy {
			mark.EventType, mark.Deployed = "VM.CREATE", true
		}
		return workflow.ExecuteLocalActivity(lctx, vmAct.VMMark, mark).Get(ctx, nil)
	}()
	if err == nil {
		return nil
	}
	s.compensate(ctx)
	code, reason := vmFailure(err)
	to, event, verb := models.VMStopped, "VM.START", "start"
	if s.deploy {
		to, event, verb = models.VMError, "VM.CREATE", "deploy"
	}
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	mark := activities.VMMarkInput{VMUUID: s.vm, From: []string{models.VMStarting}, To: to, Reason: reason, EventType: event, Actor: s.actor}
	if merr := workflow.ExecuteLocalActivity(withLocalInventory(dctx), vmAct.VMMark, mark).Get(dctx, nil); merr != nil {
		workflow.GetLogger(ctx).Error("cannot mark the VM failed", "vm", s.vm, "err", merr)
	}
	return vmError(code, verb, reason)
}

// startBareMetal starts a VM on the BareMetal machine it was placed on:
// powered on when the machine holds what was provisioned for it, otherwise
// provisioned by PXE, and then the job waits (heartbeating, bounded by the
// configured timeout) for the booted system's callback, which the
// provisioning server records in the inventory. A failure powers the
// machine off; a failed deployment also gives the machine up.
func (s *startVM) startBareMetal(ctx workflow.Context, ref activities.VMRefInput) error {
	rel := activities.BareMetalReleaseInput{VMUUID: s.vm, Forget: s.deploy}
	s.push("BareMetalRelease", func(ctx workflow.Context) error {
		return workflow.ExecuteActivity(withVMDriver(ctx, 10*time.Minute), bmAct.BareMetalRelease, rel).Get(ctx, nil)
	})
	// A BMC that does not do what it is told rarely does on the fifth try:
	// fewer attempts than other driver steps, so a stuck machine fails the
	// job in a minute or two.
	sctx := withVMDriver(ctx, 15*time.Minute)
	opts := workflow.GetActivityOptions(sctx)
	opts.RetryPolicy.MaximumAttempts = 3
	sctx = workflow.WithActivityOptions(sctx, opts)
	var started activities.BareMetalStartResult
	if err := workflow.ExecuteActivity(sctx, bmAct.BareMetalStart, ref).Get(ctx, &started); err != nil {
		return err
	}
	if !started.Provisioning {
		return nil
	}
	wctx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: started.Timeout + 5*time.Minute,
		HeartbeatTimeout:    30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        30 * time.Second,
			MaximumAttempts:        10,
			NonRetryableErrorTypes: append([]string{activities.ErrTypeProvision, activities.ErrTypeVMState}, nonRetryable...),
		},
	})
	return workflow.ExecuteActivity(wctx, bmAct.BareMetalAwaitProvisioned, activities.BareMetalAwaitInput{VMUUID: s.vm}).Get(ctx, nil)
}

// vmError is a job's error: the reason, said as "Unable to ..." when the
// step did not say it so.
func vmError(code int, verb, reason string) error {
	if strings.HasPrefix(reason, "Unable to ") {
		return cserr.New(code, "%s", reason)
	}
	return cserr.New(code, "Unable to %s virtual machine: %s", verb, reason)
}

// compensate runs the registered undos in reverse order, on a context
// that survives the job's cancellation. An undo that fails for good is
// logged and the rest still run: the reconciler finds what it left.
func (s *startVM) compensate(ctx workflow.Context) {
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	for i := len(s.undo) - 1; i >= 0; i-- {
		if err := s.undo[i].run(dctx); err != nil {
			workflow.GetLogger(ctx).Error("undo failed", "step", s.undo[i].name, "vm", s.vm, "err", err)
		}
	}
	s.undo = nil
}

// vmFailure turns a failed step into a CloudStack code and a reason: the
// step's own words (the planner's, the driver's), and its code when it
// carried one; driver refusals are 530s, capacity 533.
func vmFailure(err error) (int, string) {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		if c := cserr.Code(app); c != 0 {
			return c, app.Message()
		}
		switch app.Type() {
		case "Capacity":
			return cserr.InsufficientCap, app.Message()
		case "NotSupported":
			return cserr.UnsupportedAction, app.Message()
		case activities.ErrTypeVMState:
			return cserr.ParamError, app.Message()
		}
		return cserr.InternalError, app.Message()
	}
	var to *temporal.TimeoutError
	if errors.As(err, &to) {
		return cserr.ResourceUnavailable, "a step did not finish in time (" + to.TimeoutType().String() + " timeout)"
	}
	var canceled *temporal.CanceledError
	if errors.As(err, &canceled) {
		return cserr.InternalError, "the job was cancelled"
	}
	return cserr.InternalError, err.Error()
}
