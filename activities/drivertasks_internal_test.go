package activities

import (
	"context"
	"sync"
	"testing"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/testsuite"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// TestTrackDriverCall checks both halves of reattaching: the tasks an
// earlier attempt heartbeated reach the driver (Prior), and a task the
// driver starts is heartbeated with the ones still in flight.
func TestTrackDriverCall(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	env.SetHeartbeatDetails(DriverCallDetails{Tasks: map[string]string{"copy:[ds] nimbus/a.vmdk": "task-7"}})
	var mu sync.Mutex
	var beats []DriverCallDetails
	env.SetOnActivityHeartbeatListener(func(_ *activity.Info, details converter.EncodedValues) {
		var d DriverCallDetails
		if details.HasValues() && details.Get(&d) == nil {
			mu.Lock()
			beats = append(beats, d)
			mu.Unlock()
		}
	})
	call := func(ctx context.Context) (string, error) {
		return trackDriverCall(ctx, func(ctx context.Context) (string, error) {
			tasks := hypervisor.TasksFrom(ctx)
			prior := tasks.Prior("copy:[ds] nimbus/a.vmdk")
			tasks.Finished("copy:[ds] nimbus/a.vmdk") // reattached and done
			tasks.Started("define:vm-1", "task-8")
			return prior, nil
		})
	}
	env.RegisterActivity(call)
	v, err := env.ExecuteActivity(call)
	if err != nil {
		t.Fatal(err)
	}
	var prior string
	if err := v.Get(&prior); err != nil || prior != "task-7" {
		t.Fatalf("the driver saw prior task %q (%v), want task-7", prior, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(beats) == 0 {
		t.Fatal("no heartbeat when the driver started a task")
	}
	last := beats[len(beats)-1]
	if len(last.Tasks) != 1 || last.Tasks["define:vm-1"] != "task-8" {
		t.Fatalf("last heartbeat = %+v, want only the task in flight", last)
	}
}
