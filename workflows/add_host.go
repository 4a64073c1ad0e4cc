package workflows

import (
	"errors"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

var (
	hostAct *activities.Hosts
	simAct  *activities.Simulator
)

// withConnect sets options for a driver's ConnectHost: a host that does not
// answer within a minute is unreachable; three attempts, heartbeats every
// few seconds so that a worker dying mid-call is noticed quickly.
func withConnect(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		HeartbeatTimeout:    10 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        10 * time.Second,
			MaximumAttempts:        3,
			NonRetryableErrorTypes: nonRetryable,
		},
	})
}

// withHostInventory runs the host jobs' quick inventory steps as local
// activities: in the worker that runs the workflow, recorded in its history
// without a round trip through the task queue (bulk adds of thousands of
// hosts are bound by those round trips). The steps are idempotent, so a
// rerun after a worker dies is safe.
func withHostInventory(ctx workflow.Context) workflow.Context {
	return workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        200 * time.Millisecond,
			BackoffCoefficient:     2,
			MaximumInterval:        10 * time.Second,
			MaximumAttempts:        20,
			NonRetryableErrorTypes: nonRetryable,
		},
	})
}

// AddHostInput is an addHost job: the host row's UUID is chosen by the API
// (or is the UUID of an earlier failed add of the same URL it takes over).
type AddHostInput = activities.HostCreateInput

// AddHost adds a host: it writes the host row (Connecting), connects it
// through the hypervisor driver, records what the driver discovered with
// the host's capacity and brings it Up. When the driver fails the host is
// left in Alert with the reason, which the job returns; it holds no
// capacity. Every step is idempotent by the host's UUID, so a worker dying
// anywhere leaves no duplicate.
func AddHost(ctx workflow.Context, in AddHostInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		return (&addHost{in: in}).run(ctx)
	})
}

type addHost struct {
	in AddHostInput
}

func (w *addHost) run(ctx workflow.Context) (JobOutcome, error) {
	ictx := withHostInventory(ctx)
	var ref activities.HostRef
	if err := workflow.ExecuteLocalActivity(ictx, hostAct.HostCreate, w.in).Get(ctx, &ref); err != nil {
		return JobOutcome{}, err
	}
	var disc activities.HostDiscovery
	err := workflow.ExecuteActivity(withConnect(ctx), hostAct.HostConnect, activities.HostConnectInput{HostUUID: ref.HostUUID}).Get(ctx, &disc)
	if err != nil {
		code, reason := connectFailure(err)
		failed := activities.HostFailedInput{HostUUID: ref.HostUUID, State: models.HostAlert, Reason: reason, EventType: "HOST.ADD", Actor: w.in.Actor}
		if ferr := workflow.ExecuteLocalActivity(ictx, hostAct.HostMarkFailed, failed).Get(ctx, nil); ferr != nil {
			return JobOutcome{}, ferr
		}
		return JobOutcome{}, cserr.New(code, "Unable to add host %s: %s", w.in.URL, reason)
	}
	up := activities.HostConnectedInput{HostUUID: ref.HostUUID, Discovery: disc, Adding: true, EventType: "HOST.ADD", Actor: w.in.Actor}
	if err := workflow.ExecuteLocalActivity(ictx, hostAct.HostConnected, up).Get(ctx, nil); err != nil {
		return JobOutcome{}, err
	}
	if activities.WatchedHypervisors[w.in.Hypervisor] {
		// Version 2 watches the host's cluster, one watch for all its
		// hosts (the new host is picked up by a running one at its next
		// continue-as-new; starting one that runs does nothing).
		switch v := workflow.GetVersion(ctx, "add-host-watch-vms", workflow.DefaultVersion, 2); {
		case v >= 2 && w.in.ClusterUUID != "":
			startClusterWatch(ctx, w.in.ClusterUUID)
		case v >= 1:
			startWatch(ctx, ref.HostUUID)
		}
	}
	return JobOutcome{ResultKey: "host", ResultType: "Host", ResultUUID: ref.HostUUID}, nil
}

// connectFailure turns a failed driver activity into a CloudStack code and a
// reason: the driver's own words where it gave some.
func connectFailure(err error) (int, string) {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		if c := cserr.Code(app); c != 0 {
			return c, app.Message()
		}
		switch app.Type() {
		case "Invalid":
			return cserr.ParamError, app.Message()
		case "NotSupported":
			return cserr.UnsupportedAction, app.Message()
		case "NotFound":
			return cserr.ParamError, app.Message()
		}
		return cserr.ResourceUnavailable, app.Message()
	}
	var to *temporal.TimeoutError
	if errors.As(err, &to) {
		return cserr.ResourceUnavailable, "the host did not answer in time (" + to.TimeoutType().String() + " timeout)"
	}
	return cserr.InternalError, err.Error()
}

// ReconnectHostInput is a reconnectHost job.
type ReconnectHostInput struct {
	HostUUID string
	Actor    activities.Actor
}

// ReconnectHost connects a host again and refreshes what its driver
// reports (CPU, memory, version) and its capacity. A host that does not
// answer ends Disconnected, one whose driver fails otherwise Alert, with
// the reason; a host whose URL now reaches another machine (another GUID)
// is refused.
func ReconnectHost(ctx workflow.Context, in ReconnectHostInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		ictx := withHostInventory(ctx)
		var ref activities.HostRef
		if err := workflow.ExecuteLocalActivity(ictx, hostAct.HostReconnectBegin, activities.HostReconnectInput{HostUUID: in.HostUUID}).Get(ctx, &ref); err != nil {
			return JobOutcome{}, err
		}
		fail := func(state string, code int, reason string) (JobOutcome, error) {
			failed := activities.HostFailedInput{HostUUID: in.HostUUID, State: state, Reason: reason, EventType: "HOST.RECONNECT", Actor: in.Actor}
			if ferr := workflow.ExecuteLocalActivity(ictx, hostAct.HostMarkFailed, failed).Get(ctx, nil); ferr != nil {
				return JobOutcome{}, ferr
			}
			return JobOutcome{}, cserr.New(code, "Unable to reconnect host %s: %s", ref.Name, reason)
		}
		var disc activities.HostDiscovery
		err := workflow.ExecuteActivity(withConnect(ctx), hostAct.HostConnect, activities.HostConnectInput{HostUUID: in.HostUUID}).Get(ctx, &disc)
		if err != nil {
			code, reason := connectFailure(err)
			state := models.HostAlert
			if code == cserr.ResourceUnavailable {
				state = models.HostDisconnected
			}
			return fail(state, code, reason)
		}
		up := activities.HostConnectedInput{HostUUID: in.HostUUID, Discovery: disc, EventType: "HOST.RECONNECT", Actor: in.Actor}
		if err := workflow.ExecuteLocalActivity(ictx, hostAct.HostConnected, up).Get(ctx, nil); err != nil {
			e := cserr.As(err)
			if e.Code == cserr.ParamError {
				return fail(models.HostAlert, e.Code, e.Text)
			}
			return JobOutcome{}, err
		}
		return JobOutcome{ResultKey: "host", ResultType: "Host", ResultUUID: in.HostUUID}, nil
	})
}

// ConfigureSimulator changes the simulator's fault switches on the worker
// that runs the simulator. It is not a job: configureSimulator waits for it
// and answers with the rules now set.
func ConfigureSimulator(ctx workflow.Context, in activities.SimulatorConfigureInput) (activities.SimulatorConfigureResult, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: 500 * time.Millisecond, MaximumAttempts: 5,
			NonRetryableErrorTypes: nonRetryable,
		},
	})
	var out activities.SimulatorConfigureResult
	err := workflow.ExecuteActivity(ctx, simAct.SimulatorConfigure, in).Get(ctx, &out)
	return out, err
}
