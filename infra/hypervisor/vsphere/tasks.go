package vsphere

import (
	"context"
	"errors"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// taskPoll is the schedule of task polls: quick at first (most tasks on a
// vCenter simulator, and power operations on a real one, end in well under
// a second), then every pollMax.
var taskPoll = []time.Duration{0, 10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond}

const pollMax = 2 * time.Second

// isTaskError tells whether err is a task's own failure.
func isTaskError(err error) bool {
	_, ok := err.(task.Error)
	return ok
}

// waitTask waits for a task to end by polling its info: one
// RetrieveProperties per poll, safe from any number of goroutines (unlike
// a shared property collector filter) and cheap for the short tasks most
// are. Progress goes to the call's Tasks record under key.
func (c *conn) waitTask(ctx context.Context, ref types.ManagedObjectReference, key string) (*types.TaskInfo, error) {
	tasks := hypervisor.TasksFrom(ctx)
	pc := property.DefaultCollector(c.client())
	last := -1
	for i := 0; ; i++ {
		d := pollMax
		if i < len(taskPoll) {
			d = taskPoll[i]
		}
		if d > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(d):
			}
		}
		var t mo.Task
		if err := pc.RetrieveOne(ctx, ref, []string{"info"}, &t); err != nil {
			return nil, err
		}
		info := t.Info
		switch info.State {
		case types.TaskInfoStateSuccess:
			tasks.Progress(key, 100)
			return &info, nil
		case types.TaskInfoStateError:
			if info.Error == nil {
				info.Error = &types.LocalizedMethodFault{Fault: &types.SystemError{}, LocalizedMessage: "task failed"}
			}
			return &info, task.Error{LocalizedMethodFault: info.Error, Description: info.Description}
		}
		if p := int(info.Progress); p != last {
			last = p
			tasks.Progress(key, p)
		}
		if tasks.OutOfPatience() {
			return &info, hypervisor.ErrTaskPending
		}
	}
}

// runTask runs a long vCenter task that makes key, saving its reference
// (the Tasks record of the call: an activity's heartbeat details) before
// waiting on it. Callers first reattach (reattach) and look the result up
// by identity, then call runTask to start it.
func (c *conn) runTask(ctx context.Context, key string, start func(ctx context.Context) (types.ManagedObjectReference, error)) (*types.TaskInfo, error) {
	ref, err := start(ctx)
	if err != nil {
		return nil, err
	}
	tasks := hypervisor.TasksFrom(ctx)
	tasks.Started(key, ref.Value)
	info, err := c.waitTask(ctx, ref, key)
	if ctx.Err() == nil && !errors.Is(err, hypervisor.ErrTaskPending) {
		// Ended (either way): a retry finds its result by identity. A
		// cancelled or impatient wait keeps the reference, so the next
		// attempt reattaches.
		tasks.Finished(key)
	}
	return info, err
}

// reattach waits on the task an earlier attempt of the call started under
// key, if any. It answers the task's info when that task succeeded; nil
// (and no error) when there was none, vCenter forgot it, or it failed, so
// the caller looks the result up and starts again.
func (c *conn) reattach(ctx context.Context, key string) (*types.TaskInfo, error) {
	tasks := hypervisor.TasksFrom(ctx)
	prior := tasks.Prior(key)
	if prior == "" {
		return nil, nil
	}
	info, err := c.waitTask(ctx, objRef("Task", prior), key)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if errors.Is(err, hypervisor.ErrTaskPending) {
		return nil, err
	}
	tasks.Finished(key)
	if err != nil {
		if fault.Is(err, &types.ManagedObjectNotFound{}) || isTaskError(err) {
			return nil, nil
		}
		return nil, err
	}
	return info, nil
}

// cancelTask asks vCenter to cancel a task (best effort).
func (c *conn) cancelTask(ctx context.Context, ref types.ManagedObjectReference) {
	_, _ = methods.CancelTask(ctx, c.client(), &types.CancelTask{This: ref})
}
