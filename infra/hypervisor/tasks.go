package hypervisor

import (
	"context"
	"errors"
	"maps"
	"sync"
	"time"
)

// ErrTaskPending is what a driver call answers when its Tasks record ran
// out of patience (see Tasks.SetPatience) while a backend task was still
// running: the task goes on, its handle stays in the record, and a later
// call given that handle reattaches to it.
var ErrTaskPending = errors.New("backend task still running")

// Tasks records the long backend tasks (vCenter tasks) a driver call starts:
// what each one makes (a key the driver chooses, e.g. "copy:[ds] a.vmdk")
// and the backend's handle of it (the task's managed object id).
//
// A caller that can keep state across retries (a Temporal activity, in its
// heartbeat details) passes a Tasks to the driver through the context with
// the handles an earlier attempt saved. The driver reports each task it
// starts before it waits on it (Started, which calls the caller's save
// synchronously), and on a retry first reattaches to the task it finds
// under the same key (Prior) instead of starting a second one. Storage
// drivers use the same record. A nil *Tasks does nothing, so drivers need
// not check for one.
type Tasks struct {
	mu       sync.Mutex
	refs     map[string]string
	save     func(map[string]string)
	progress func(key string, percent int)
	patience time.Time // zero: wait as long as the call's context allows
}

// NewTasks starts a record with the handles an earlier attempt saved
// (prior, may be nil); save is called with every handle in flight each time
// one starts or ends, progress with a task's percentage as it moves. Both
// may be nil.
func NewTasks(prior map[string]string, save func(map[string]string), progress func(key string, percent int)) *Tasks {
	t := &Tasks{refs: map[string]string{}, save: save, progress: progress}
	maps.Copy(t.refs, prior)
	return t
}

type tasksKey struct{}

// WithTasks returns a context carrying t to the driver.
func WithTasks(ctx context.Context, t *Tasks) context.Context {
	return context.WithValue(ctx, tasksKey{}, t)
}

// TasksFrom returns the record a context carries, or nil.
func TasksFrom(ctx context.Context) *Tasks {
	t, _ := ctx.Value(tasksKey{}).(*Tasks)
	return t
}

// Prior returns the handle of the task an earlier attempt started under
// key, or "".
func (t *Tasks) Prior(key string) string {
	if t == nil {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.refs[key]
}

// Started records the task making key and has the caller save it; the
// driver calls it before waiting on the task.
func (t *Tasks) Started(key, ref string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.refs[key] = ref
	snap := maps.Clone(t.refs)
	t.mu.Unlock()
	if t.save != nil {
		t.save(snap)
	}
}

// Finished forgets the task making key: it ended (the driver checked its
// result), so a retry finds what it made by identity instead.
func (t *Tasks) Finished(key string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	_, had := t.refs[key]
	delete(t.refs, key)
	snap := maps.Clone(t.refs)
	t.mu.Unlock()
	if had && t.save != nil {
		t.save(snap)
	}
}

// SetPatience has the driver stop waiting on a task still running at
// deadline and answer ErrTaskPending, the task's handle kept: a caller
// that wants a quick answer (a local activity) hands a longer task to a
// caller that can wait (a heartbeating activity).
func (t *Tasks) SetPatience(deadline time.Time) {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.patience = deadline
	t.mu.Unlock()
}

// Bounded tells whether the caller set a patience: a driver about to
// start a task it knows to be long (a full disk copy) answers
// ErrTaskPending at once instead, so that the task is started by a caller
// that keeps its handle durably.
func (t *Tasks) Bounded() bool {
	if t == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.patience.IsZero()
}

// OutOfPatience tells whether the patience set has run out; a driver
// waiting on a task asks it between polls.
func (t *Tasks) OutOfPatience() bool {
	if t == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.patience.IsZero() && !time.Now().Before(t.patience)
}

// Progress reports how far the task making key is, in percent.
func (t *Tasks) Progress(key string, percent int) {
	if t == nil || t.progress == nil {
		return
	}
	t.progress(key, percent)
}

// Refs returns the handles in flight.
func (t *Tasks) Refs() map[string]string {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.refs)
}
