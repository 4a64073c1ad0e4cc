package workflows

import (
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/models"
)

// TestMaintReconcileStartsWatches: the reconciler starts the VM watch of
// each reachable vSphere host (WatchHostVMs, abandoned, one per host), not
// of other hosts nor of unreachable ones.
func TestMaintReconcileStartsWatches(t *testing.T) {
	h1 := activities.MaintHost{ID: 1, UUID: "h1", State: models.HostUp, Hypervisor: hypervisor.TypeVMware}
	h2 := activities.MaintHost{ID: 2, UUID: "h2", State: models.HostUp, Hypervisor: hypervisor.TypeKVM}
	h3 := activities.MaintHost{ID: 3, UUID: "h3", State: models.HostUp, Hypervisor: hypervisor.TypeVMware}
	scans := map[string]activities.MaintHostScan{
		"h1": {Host: h1, Reachable: true},
		"h2": {Host: h2, Reachable: true},
		"h3": {Host: h3, Reachable: false, Reason: "unreachable"},
	}
	env, _ := newReconcileEnv(t, scans, nil)
	var mu sync.Mutex
	var watched []string
	env.RegisterWorkflow(WatchHostVMs)
	env.OnWorkflow(WatchHostVMs, mock.Anything, mock.Anything).Return(nil)
	env.SetOnChildWorkflowStartedListener(func(info *workflow.Info, _ workflow.Context, args converter.EncodedValues) {
		var in activities.MaintWatchInput
		if err := args.Get(&in); err != nil {
			t.Error(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if info.WorkflowExecution.ID != watchID(in.HostUUID) {
			t.Errorf("watch of %s has workflow id %s", in.HostUUID, info.WorkflowExecution.ID)
		}
		watched = append(watched, in.HostUUID)
	})
	env.ExecuteWorkflow(MaintReconcile, MaintReconcileInput{})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if len(watched) != 1 || watched[0] != "h1" {
		t.Fatalf("watches started for %v, want [h1]", watched)
	}
}

// TestWatchHostVMsContinues: a watch that ran its full time continues as
// new at once, idle or not; one that failed or found nothing to watch
// waits watchRetryAfter first.
func TestWatchHostVMsContinues(t *testing.T) {
	for _, c := range []struct {
		name string
		out  activities.MaintWatchResult
		wait bool
	}{
		{"full and idle", activities.MaintWatchResult{Full: true}, false},
		{"full with events", activities.MaintWatchResult{Full: true, Events: 3}, false},
		{"host not up", activities.MaintWatchResult{}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var ts testsuite.WorkflowTestSuite
			env := ts.NewTestWorkflowEnvironment()
			env.RegisterActivity(&activities.Maintenance{})
			env.OnActivity(maintAct.MaintWatchHost, mock.Anything, mock.Anything).Return(c.out, nil)
			start := env.Now()
			env.ExecuteWorkflow(WatchHostVMs, activities.MaintWatchInput{HostUUID: "h1"})
			var can *workflow.ContinueAsNewError
			if err := env.GetWorkflowError(); !errors.As(err, &can) {
				t.Fatalf("workflow ended with %v, want continue-as-new", err)
			}
			if waited := env.Now().Sub(start) >= watchRetryAfter; waited != c.wait {
				t.Fatalf("waited %s before continuing as new, want a wait: %v", env.Now().Sub(start), c.wait)
			}
		})
	}
}

// TestMaintReconcileStartsClusterWatches: the reconciler starts one VM
// watch per cluster of reachable vSphere hosts (WatchClusterVMs, id by
// cluster), however many of its hosts it scans.
func TestMaintReconcileStartsClusterWatches(t *testing.T) {
	h1 := activities.MaintHost{ID: 1, UUID: "h1", State: models.HostUp, Hypervisor: hypervisor.TypeVMware, ClusterUUID: "c1"}
	h2 := activities.MaintHost{ID: 2, UUID: "h2", State: models.HostUp, Hypervisor: hypervisor.TypeVMware, ClusterUUID: "c1"}
	h3 := activities.MaintHost{ID: 3, UUID: "h3", State: models.HostUp, Hypervisor: hypervisor.TypeVMware, ClusterUUID: "c2"}
	scans := map[string]activities.MaintHostScan{
		"h1": {Host: h1, Reachable: true},
		"h2": {Host: h2, Reachable: true},
		"h3": {Host: h3, Reachable: true},
	}
	env, _ := newReconcileEnv(t, scans, nil)
	var mu sync.Mutex
	var watched []string
	env.RegisterWorkflow(WatchClusterVMs)
	env.OnWorkflow(WatchClusterVMs, mock.Anything, mock.Anything).Return(nil)
	env.SetOnChildWorkflowStartedListener(func(info *workflow.Info, _ workflow.Context, args converter.EncodedValues) {
		var in activities.MaintWatchClusterInput
		if err := args.Get(&in); err != nil {
			t.Error(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if info.WorkflowType.Name != "WatchClusterVMs" || info.WorkflowExecution.ID != clusterWatchID(in.ClusterUUID) {
			t.Errorf("watch of %s is %s with workflow id %s", in.ClusterUUID, info.WorkflowType.Name, info.WorkflowExecution.ID)
		}
		watched = append(watched, in.ClusterUUID)
	})
	env.ExecuteWorkflow(MaintReconcile, MaintReconcileInput{})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if len(watched) != 2 || watched[0] != "c1" || watched[1] != "c2" {
		t.Fatalf("watches started for %v, want [c1 c2]", watched)
	}
}

// TestWatchClusterVMsContinues: a cluster watch that ran its full time
// continues as new at once; one that found no host Up waits
// watchRetryAfter first; one whose cluster is gone ends.
func TestWatchClusterVMsContinues(t *testing.T) {
	for _, c := range []struct {
		name      string
		out       activities.MaintWatchResult
		end, wait bool
	}{
		{"full and idle", activities.MaintWatchResult{Full: true}, false, false},
		{"full with events", activities.MaintWatchResult{Full: true, Events: 3}, false, false},
		{"hosts changed", activities.MaintWatchResult{HostsChanged: true}, false, false},
		{"no host up", activities.MaintWatchResult{}, false, true},
		{"cluster gone", activities.MaintWatchResult{Stop: true}, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var ts testsuite.WorkflowTestSuite
			env := ts.NewTestWorkflowEnvironment()
			env.RegisterActivity(&activities.Maintenance{})
			env.OnActivity(maintAct.MaintWatchCluster, mock.Anything, activities.MaintWatchClusterInput{ClusterUUID: "c1"}).Return(c.out, nil)
			start := env.Now()
			env.ExecuteWorkflow(WatchClusterVMs, activities.MaintWatchClusterInput{ClusterUUID: "c1"})
			err := env.GetWorkflowError()
			if c.end {
				if err != nil {
					t.Fatalf("workflow ended with %v, want nil", err)
				}
				return
			}
			var can *workflow.ContinueAsNewError
			if !errors.As(err, &can) {
				t.Fatalf("workflow ended with %v, want continue-as-new", err)
			}
			if waited := env.Now().Sub(start) >= watchRetryAfter; waited != c.wait {
				t.Fatalf("waited %s before continuing as new, want a wait: %v", env.Now().Sub(start), c.wait)
			}
		})
	}
}

// TestWatchHostVMsHandsOver: a per-host watch still running from before
// whose activity names the host's cluster starts the cluster's watch and
// ends.
func TestWatchHostVMsHandsOver(t *testing.T) {
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestWorkflowEnvironment()
	env.RegisterActivity(&activities.Maintenance{})
	env.RegisterWorkflow(WatchClusterVMs)
	env.OnActivity(maintAct.MaintWatchHost, mock.Anything, mock.Anything).Return(activities.MaintWatchResult{Stop: true, ClusterUUID: "c1"}, nil)
	env.OnWorkflow(WatchClusterVMs, mock.Anything, mock.Anything).Return(nil)
	var started []string
	env.SetOnChildWorkflowStartedListener(func(info *workflow.Info, _ workflow.Context, _ converter.EncodedValues) {
		started = append(started, info.WorkflowExecution.ID)
	})
	env.ExecuteWorkflow(WatchHostVMs, activities.MaintWatchInput{HostUUID: "h1"})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if len(started) != 1 || started[0] != clusterWatchID("c1") {
		t.Fatalf("children started %v, want [%s]", started, clusterWatchID("c1"))
	}
}
