package activities

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// DriverCallDetails are the heartbeat details of an activity that calls a
// driver: the backend tasks in flight (what each makes -> the backend's
// reference, see hypervisor.Tasks) and the progress of the latest one.
// A retried attempt reads them back and hands the tasks to the driver,
// which reattaches to them instead of starting them again.
type DriverCallDetails struct {
	Tasks   map[string]string `json:"tasks,omitempty"`
	Key     string            `json:"key,omitempty"`     // the task Percent is about
	Percent int               `json:"percent,omitempty"` // its progress
	Done    int64             `json:"done,omitempty"`    // bytes copied, for copies that report them
}

// driverTracker keeps an attempt's details and heartbeats them.
type driverTracker struct {
	ctx   context.Context
	mu    sync.Mutex
	d     DriverCallDetails
	flush *time.Timer // sends the tasks in flight straight to the server
}

type trackerKey struct{}

// trackDriverCall runs a driver call with a hypervisor.Tasks record in its
// context, seeded from the previous attempt's heartbeat details. A task's
// reference is heartbeated the moment the driver starts it (see
// saveTasks for when it reaches the server). Between events the details are heartbeated every few
// seconds, so a dead worker is noticed within the heartbeat timeout.
func trackDriverCall[T any](ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	if q, _ := ctx.Value(quickKey{}).(*quickCall); q != nil {
		tasks := hypervisor.NewTasks(nil, nil, nil)
		tasks.SetPatience(time.Now().Add(quickPatience))
		out, err := fn(hypervisor.WithTasks(ctx, tasks))
		if errors.Is(err, hypervisor.ErrTaskPending) {
			q.stopped, q.pending = true, tasks.Refs()
		}
		return out, err
	}
	if !activity.IsActivity(ctx) || activity.GetInfo(ctx).IsLocalActivity {
		return fn(ctx)
	}
	tr := &driverTracker{ctx: ctx}
	if activity.HasHeartbeatDetails(ctx) {
		// Details of another shape (a progress count from older code) are
		// no tasks to reattach to.
		_ = activity.GetHeartbeatDetails(ctx, &tr.d)
	}
	if len(tr.d.Tasks) == 0 {
		// A first attempt handed tasks a quick step left running.
		tr.d.Tasks, _ = ctx.Value(priorKey{}).(map[string]string)
	}
	tasks := hypervisor.NewTasks(tr.d.Tasks, tr.saveTasks, tr.progress)
	every := 2 * time.Second
	if hb := activity.GetInfo(ctx).HeartbeatTimeout; hb > 0 && hb/3 < every {
		every = hb / 3
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				activity.RecordHeartbeat(ctx, tr.details())
			}
		}
	}()
	defer close(done)
	defer func() {
		tr.mu.Lock()
		if tr.flush != nil {
			tr.flush.Stop()
		}
		tr.mu.Unlock()
	}()
	cctx := context.WithValue(hypervisor.WithTasks(ctx, tasks), trackerKey{}, tr)
	return fn(cctx)
}

func (tr *driverTracker) details() DriverCallDetails {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	d := tr.d
	return d
}

// saveTasks records the tasks in flight and heartbeats them. The SDK's
// heartbeat goes out at once when it is the attempt's first, else batched
// (up to most of the heartbeat timeout later); a task still in flight
// after flushAfter is sent again straight to the Temporal server, so a
// long task's reference is durable within a second of its start while
// short tasks (power operations, most of a simulator's) cost no extra
// round trip to the server.
func (tr *driverTracker) saveTasks(refs map[string]string) {
	tr.mu.Lock()
	started := false
	for k, v := range refs {
		if tr.d.Tasks[k] != v {
			started = true
		}
	}
	tr.d.Tasks = refs
	d := tr.d
	if tr.flush != nil && (started || len(refs) == 0) {
		tr.flush.Stop()
		tr.flush = nil
	}
	if started {
		tr.flush = time.AfterFunc(flushAfter, tr.flushNow)
	}
	tr.mu.Unlock()
	// A task that ended needs no heartbeat of its own: the next one says
	// so (and the SDK's one heartbeat sent at once is kept for a start).
	if started {
		activity.RecordHeartbeat(tr.ctx, d)
	}
}

// flushAfter is how long a task runs before its reference is sent
// straight to the server.
const flushAfter = time.Second

func (tr *driverTracker) flushNow() {
	d := tr.details()
	if len(d.Tasks) == 0 || tr.ctx.Err() != nil {
		return
	}
	info := activity.GetInfo(tr.ctx)
	if c := activity.GetClient(tr.ctx); c != nil && len(info.TaskToken) > 0 {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(tr.ctx), 10*time.Second)
		defer cancel()
		_ = c.RecordActivityHeartbeat(sctx, info.TaskToken, d)
	}
}

func (tr *driverTracker) progress(key string, percent int) {
	tr.mu.Lock()
	tr.d.Key, tr.d.Percent = key, percent
	tr.mu.Unlock()
}

// trackerProgress records a copy's bytes in the call's details, when the
// call is tracked; it tells whether it was.
func trackerProgress(ctx context.Context, done int64) bool {
	tr, _ := ctx.Value(trackerKey{}).(*driverTracker)
	if tr == nil {
		return false
	}
	tr.mu.Lock()
	tr.d.Done = done
	tr.mu.Unlock()
	return true
}

// quickPatience is how long a quick step (a local activity) waits on a
// backend task before it hands the task to a regular activity.
const quickPatience = 5 * time.Second

type quickKey struct{}

type priorKey struct{}

// quickCall is a driver step run as a local activity: its backend tasks
// are recorded in memory only and waited for up to quickPatience; a task
// still running then is left running and its handle kept (Pending), for
// a heartbeating activity to reattach to. A local attempt that dies loses
// the handles; its retry finds what the tasks made by identity.
type quickCall struct {
	stopped bool              // the step stopped waiting (or did not start a long task)
	pending map[string]string // the tasks it left running
}

// quickStep runs step (an activity's body) as a quick step and says
// whether it left a task running; when it did, step's error (the pending
// task) is not the step's failure.
func quickStep(ctx context.Context, step func(context.Context) error) (VMQuickResult, error) {
	q := &quickCall{}
	err := step(context.WithValue(ctx, quickKey{}, q))
	if q.stopped {
		return VMQuickResult{Pending: true, Tasks: q.pending}, nil
	}
	return VMQuickResult{}, err
}

// withPriorTasks hands a regular activity's first attempt the tasks a
// quick step left running (later attempts have their own heartbeats).
func withPriorTasks(ctx context.Context, tasks map[string]string) context.Context {
	if len(tasks) == 0 {
		return ctx
	}
	return context.WithValue(ctx, priorKey{}, tasks)
}

// VMQuickResult is the outcome of a quick provisioning step (a local
// activity): done, or Pending with the backend tasks still running, which
// the workflow hands to the regular activity of the same step.
type VMQuickResult struct {
	Pending bool              `json:",omitempty"`
	Tasks   map[string]string `json:",omitempty"`
}
