package workflows

import (
	"context"
	"os"
	"testing"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"github.com/nimbus-cloud/nimbus/activities"
)

// fakeTaskActivities is fakeVMActivities on a host whose provisioning
// steps are backend tasks (vSphere): VMPlace says TaskProvision, and the
// quick steps answer Pending (with a task) when named in pending, so the
// regular step runs after them.
func fakeTaskActivities(w worker.Worker, failAt, pending string) {
	fakeVMActivities(w, failAt, false)
	reg := func(name string, fn any) {
		w.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name, DisableAlreadyRegisteredCheck: true})
	}
	reg("VMPlace", func(context.Context, activities.VMPlaceInput) (activities.VMPlacement, error) {
		return activities.VMPlacement{HostID: 1, HostUUID: "host-1", HostName: "h1", NicUUIDs: []string{"nic-1"}, VolumeUUID: []string{"vol-1"},
			TaskProvision: true}, nil
	})
	quick := func(name string) (activities.VMQuickResult, error) {
		if name == failAt {
			return activities.VMQuickResult{}, temporal.NewNonRetryableApplicationError("recorded failure of "+name, "Invalid", nil)
		}
		if name == pending {
			return activities.VMQuickResult{Pending: true, Tasks: map[string]string{"key": "task-1"}}, nil
		}
		return activities.VMQuickResult{}, nil
	}
	reg("VMCreateVolumesQuick", func(context.Context, activities.VMVolumesInput) (activities.VMQuickResult, error) {
		return quick("VMCreateVolumesQuick")
	})
	reg("VMDefineStartQuick", func(context.Context, activities.VMRefInput) (activities.VMQuickResult, error) {
		return quick("VMDefineStartQuick")
	})
}

// TestVMTaskHistoriesRecordAndReplay records and replays deployments on
// task-provisioned hosts (vm-task-provision-local, version 1): the quick
// local steps, a task handed on to the regular step, and a failed quick
// step undone. See TestVMHistoriesRecordAndReplay.
func TestVMTaskHistoriesRecordAndReplay(t *testing.T) {
	addr := os.Getenv("NIMBUS_TEST_TEMPORAL")
	if addr == "" {
		t.Fatal("NIMBUS_TEST_TEMPORAL is not set: run the tests with `make test`, or source .test-services/env")
	}
	c, err := client.Dial(client.Options{HostPort: addr, Namespace: "default"})
	if err != nil {
		t.Fatalf("dial Temporal at %s: %v", addr, err)
	}
	defer c.Close()
	runs := map[string]struct {
		failAt, pending string
	}{
		"vm_deploy_v4_task_local.json":          {},
		"vm_deploy_v4_task_define_pending.json": {pending: "VMDefineStartQuick"},
		"vm_deploy_v4_task_volume_pending.json": {pending: "VMCreateVolumesQuick"},
		"vm_deploy_v4_task_define_fails.json":   {failAt: "VMDefineStartQuick"},
	}
	for file, r := range runs {
		t.Run(file, func(t *testing.T) {
			recordAndReplay(t, c, func(w worker.Worker) {
				for _, wf := range []any{DeployVM, StartVM, StopVM, RebootVM, DestroyVM, ExpungeVM, ScaleVM, MigrateVM} {
					w.RegisterWorkflow(wf)
				}
				fakeTaskActivities(w, r.failAt, r.pending)
			}, vmReplayer(t), file, DeployVM, DeployVMInput{VMUUID: "vm-1", StartVM: true}, r.failAt != "")
		})
	}
}
