package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
)

// DiscoverCluster adds the hosts of a cluster managed elsewhere (a vCenter
// cluster): its driver lists them, and each is added by the addHost steps
// (row, connect, capacity, Up) inside this one job, so a vSphere cluster's
// hosts are never typed in one by one. Hosts in the inventory already keep
// their rows (a rediscovery adds what is new). When the cluster's manager
// cannot be read, an addCluster (Adding) removes the cluster again and the
// job fails with the driver's reason; a host that fails to connect is left
// in Alert with its reason like any addHost, and the job fails only when
// no host came Up.
func DiscoverCluster(ctx workflow.Context, in activities.ClusterDiscoverInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		out := JobOutcome{ResultKey: "cluster", ResultType: "Cluster", ResultUUID: in.ClusterUUID}
		var found activities.ClusterDiscovery
		if err := workflow.ExecuteActivity(withConnect(ctx), hostAct.HostDiscover, in).Get(ctx, &found); err != nil {
			code, reason := connectFailure(err)
			if in.Adding {
				if rerr := workflow.ExecuteLocalActivity(withHostInventory(ctx), hostAct.ClusterRemoveEmpty, in).Get(ctx, nil); rerr != nil {
					return out, rerr
				}
			}
			return out, cserr.New(code, "Unable to discover the hosts of the cluster: %s", reason)
		}
		up := 0
		var first error
		for _, h := range found.Hosts {
			if _, err := (&addHost{in: h}).run(ctx); err != nil {
				if first == nil {
					first = err
				}
				continue
			}
			up++
		}
		if up == 0 && first != nil {
			return out, first
		}
		return out, nil
	})
}
