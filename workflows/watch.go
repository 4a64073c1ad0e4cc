package workflows

import (
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
	ntemporal "github.com/nimbus-cloud/nimbus/infra/temporal"
)

// watchRetryAfter is how long a watch waits after its activity failed (the
// vCenter unreachable) or found the host not Up, before it looks again.
const watchRetryAfter = 30 * time.Second

// WatchHostVMs (replaced by WatchClusterVMs; kept for the histories of
// running watches, which hand over to their cluster's) follows a host's VM
// power changes for as long as the host exists: one MaintWatchHost
// activity at a time (each up to ten minutes, heartbeating), then
// continue-as-new. A VM powered off or on behind
// Nimbus's back is repaired within seconds instead of at the next
// reconcile run. Its workflow id is one per host (watchID), so starting it
// again while it runs does nothing.
func WatchHostVMs(ctx workflow.Context, in activities.MaintWatchInput) error {
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 15 * time.Minute,
		HeartbeatTimeout:    30 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
	})
	var out activities.MaintWatchResult
	err := workflow.ExecuteActivity(actx, maintAct.MaintWatchHost, in).Get(ctx, &out)
	if err == nil && out.Stop {
		// The host's cluster is watched per cluster now: this watch
		// starts the cluster's (a no-op when it runs) and ends, so the
		// per-host watches drain without leaving their hosts unwatched.
		if out.ClusterUUID != "" && workflow.GetVersion(ctx, "watch-host-to-cluster", workflow.DefaultVersion, 1) >= 1 {
			startClusterWatch(ctx, out.ClusterUUID)
		}
		return nil
	}
	// A watch that ran its full time goes on at once, idle or not (it
	// waited before, leaving the host unwatched for watchRetryAfter every
	// time).
	full := err == nil && out.Full && workflow.GetVersion(ctx, "watch-full-no-wait", workflow.DefaultVersion, 1) >= 1
	if !full && (err != nil || out.Events == 0) {
		// A failed or idle watch (host not Up, vCenter unreachable) waits
		// before the next one.
		if err != nil {
			workflow.GetLogger(ctx).Warn("the VM watch of a host ended", "host", in.HostUUID, "err", err)
		}
		if serr := workflow.Sleep(ctx, watchRetryAfter); serr != nil {
			return serr
		}
	}
	return workflow.NewContinueAsNewError(ctx, WatchHostVMs, in)
}

// watchID is the workflow id of a host's VM watch.
func watchID(hostUUID string) string { return ntemporal.InternalID("watchvms", hostUUID) }

// startWatch starts a host's VM watch, abandoned to outlive the caller; one
// running already is left as it is.
func startWatch(ctx workflow.Context, hostUUID string) {
	cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:            watchID(hostUUID),
		WorkflowIDReusePolicy: enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		ParentClosePolicy:     enums.PARENT_CLOSE_POLICY_ABANDON,
	})
	f := workflow.ExecuteChildWorkflow(cctx, WatchHostVMs, activities.MaintWatchInput{HostUUID: hostUUID})
	if err := f.GetChildWorkflowExecution().Get(ctx, nil); err != nil && !temporal.IsWorkflowExecutionAlreadyStartedError(err) {
		workflow.GetLogger(ctx).Warn("cannot start the VM watch of a host", "host", hostUUID, "err", err)
	}
}

// WatchClusterVMs follows the VM power changes of all the Up hosts of a
// vSphere cluster for as long as the cluster has hosts: one
// MaintWatchCluster activity at a time (one long poll to vCenter for the
// whole cluster, up to ten minutes or until the cluster's Up hosts change,
// heartbeating), then continue-as-new, which picks up hosts added, removed
// or back Up. Tens of thousands of hosts under a few vCenters cost one
// watch per cluster rather than per host. Its workflow id is one per cluster (clusterWatchID), so starting it
// again while it runs does nothing.
func WatchClusterVMs(ctx workflow.Context, in activities.MaintWatchClusterInput) error {
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 15 * time.Minute,
		HeartbeatTimeout:    30 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
	})
	var out activities.MaintWatchResult
	err := workflow.ExecuteActivity(actx, maintAct.MaintWatchCluster, in).Get(ctx, &out)
	if err == nil && out.Stop {
		return nil
	}
	// A watch that ran its full time, or ended because the cluster's Up
	// hosts changed, goes on at once, idle or not; a failed or idle one
	// (no host Up, vCenter unreachable) waits first.
	if !(err == nil && (out.Full || out.HostsChanged)) && (err != nil || out.Events == 0) {
		if err != nil {
			workflow.GetLogger(ctx).Warn("the VM watch of a cluster ended", "cluster", in.ClusterUUID, "err", err)
		}
		if serr := workflow.Sleep(ctx, watchRetryAfter); serr != nil {
			return serr
		}
	}
	return workflow.NewContinueAsNewError(ctx, WatchClusterVMs, in)
}

// clusterWatchID is the workflow id of a cluster's VM watch (the per-host
// watches' naming rule, keyed by the cluster's UUID).
func clusterWatchID(clusterUUID string) string { return ntemporal.InternalID("watchvms", clusterUUID) }

// startClusterWatch starts a cluster's VM watch, abandoned to outlive the
// caller; one running already is left as it is.
func startClusterWatch(ctx workflow.Context, clusterUUID string) {
	cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:            clusterWatchID(clusterUUID),
		WorkflowIDReusePolicy: enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		ParentClosePolicy:     enums.PARENT_CLOSE_POLICY_ABANDON,
	})
	f := workflow.ExecuteChildWorkflow(cctx, WatchClusterVMs, activities.MaintWatchClusterInput{ClusterUUID: clusterUUID})
	if err := f.GetChildWorkflowExecution().Get(ctx, nil); err != nil && !temporal.IsWorkflowExecutionAlreadyStartedError(err) {
		workflow.GetLogger(ctx).Warn("cannot start the VM watch of a cluster", "cluster", clusterUUID, "err", err)
	}
}
