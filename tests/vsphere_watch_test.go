package tests

import (
	"context"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	ntemporal "github.com/nimbus-cloud/nimbus/infra/temporal"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// vsWatchesPerCluster checks in Temporal that the stack watches the VMs of
// its vSphere cluster of several hosts with exactly one running workflow
// (WatchClusterVMs, id by the cluster's UUID) and none per host.
func vsWatchesPerCluster(t *testing.T, s *testenv.Stack, clusterID string, hostIDs []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tc, err := client.Dial(client.Options{HostPort: s.Temporal, Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	list := func(typ string) []string {
		q := `TaskQueue="` + s.TaskQueue + `" AND ExecutionStatus="Running" AND WorkflowType="` + typ + `"`
		resp, err := tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: "default", Query: q})
		if err != nil {
			t.Fatalf("ListWorkflow %q: %v", q, err)
		}
		var ids []string
		for _, e := range resp.Executions {
			ids = append(ids, e.Execution.WorkflowId)
		}
		return ids
	}
	want := ntemporal.InternalID("watchvms", clusterID)
	// Visibility lags the workflows a little.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		cw, hw := list("WatchClusterVMs"), list("WatchHostVMs")
		if len(cw) == 1 && cw[0] == want && len(hw) == 0 {
			t.Logf("one VM watch workflow (%s) for the cluster's %d hosts", want, len(hostIDs))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("running watches: cluster %v, per host %v; want only [%s] for the %d hosts", cw, hw, want, len(hostIDs))
		}
	}
	for _, h := range hostIDs {
		d, err := tc.DescribeWorkflowExecution(ctx, ntemporal.InternalID("watchvms", h), "")
		if err == nil && d.WorkflowExecutionInfo.Status.String() == "Running" {
			t.Fatalf("the per-host watch of %s runs", h)
		}
	}
}
