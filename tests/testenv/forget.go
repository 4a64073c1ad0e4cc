package testenv

import (
	"context"
	"strings"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/nimbus-cloud/nimbus/activities"
)

// forgetTemporal removes what the stack left on the shared Temporal dev
// server: its schedules (the maintenance ones, named by its task queue, and
// its snapshot policies'), which would otherwise keep firing workflows at a
// task queue no worker polls any more, and its workflows still running
// (watches, jobs a test abandoned). Hundreds of stacks run against one dev
// server; without this it slows down run after run. Best effort.
func (s *Stack) forgetTemporal() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tc, err := client.Dial(client.Options{HostPort: s.Temporal, Namespace: "default"})
	if err != nil {
		return
	}
	defer tc.Close()
	ids := map[string]bool{}
	if s.DB != nil {
		var policies []string
		_ = s.DB.NewSelect().Table("snapshot_policies").Column("uuid").Scan(ctx, &policies)
		for _, p := range policies {
			ids[activities.SnapshotPolicyScheduleID(p)] = true
		}
	}
	if it, err := tc.ScheduleClient().List(ctx, client.ScheduleListOptions{PageSize: 1000}); err == nil {
		for it.HasNext() {
			e, err := it.Next()
			if err != nil {
				break
			}
			if strings.HasSuffix(e.ID, "-"+s.TaskQueue) {
				ids[e.ID] = true
			}
		}
	}
	for id := range ids {
		_ = tc.ScheduleClient().GetHandle(ctx, id).Delete(ctx)
	}
	var token []byte
	for {
		resp, err := tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: `TaskQueue="` + s.TaskQueue + `" AND ExecutionStatus="Running"`, NextPageToken: token})
		if err != nil {
			return
		}
		for _, e := range resp.Executions {
			_ = tc.TerminateWorkflow(ctx, e.Execution.WorkflowId, e.Execution.RunId, "the test stack stopped")
		}
		if token = resp.NextPageToken; len(token) == 0 {
			return
		}
	}
}
