package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
	ntemporal "github.com/nimbus-cloud/nimbus/infra/temporal"
)

// Bounds of one power-state sync run: pages of hosts, read with the pool
// size the page names; after oobmSyncPages pages the run continues as new
// so its history stays small however many hosts there are.
const (
	oobmSyncPageSize = 100
	oobmSyncPages    = 20
)

// OOBMSyncScheduleKind names the power-state sync schedule
// (ntemporal.ScheduleID(OOBMSyncScheduleKind, taskQueue)).
const OOBMSyncScheduleKind = "oobm-sync"

// OOBMSyncSchedule is the system schedule of the background power-state
// sync, every outofbandmanagement.sync.interval.
func OOBMSyncSchedule(every time.Duration) ntemporal.ScheduleSpec {
	return ntemporal.ScheduleSpec{Kind: OOBMSyncScheduleKind, Interval: every, Workflow: OOBMPowerSync, Args: []any{OOBMPowerSyncInput{}},
		What: "reads the power state of every host with out-of-band management enabled from its BMC (listHosts outofbandmanagement.powerstate); a BMC that refuses the credentials or does not answer shows Unknown and raises an alert (every outofbandmanagement.sync.interval ms)"}
}

// OOBMPowerSyncInput is one run of the sync; AfterID is where a run that
// continued as new goes on.
type OOBMPowerSyncInput struct {
	AfterID int64
	// Sums carried over from the runs this one continues.
	Hosts, Changed, Failed int
}

// OOBMPowerSyncResult sums up a run (with the runs it continued).
type OOBMPowerSyncResult struct {
	Hosts   int
	Changed int
	// Failed counts the hosts whose BMC could not be read (Unknown).
	Failed int
	// Errors counts reads that failed for Nimbus's own reasons (the
	// inventory); their hosts keep their state until the next run.
	Errors int
}

// OOBMPowerSync reads the power state of every host with out-of-band
// management enabled, a page of hosts at a time, at most the page's pool
// size (outofbandmanagement.sync.poolsize) at once; each read records the
// state when it changed and raises or resolves the host's alert
// (activities.OOBMSyncPower).
func OOBMPowerSync(ctx workflow.Context, in OOBMPowerSyncInput) (OOBMPowerSyncResult, error) {
	res := OOBMPowerSyncResult{Hosts: in.Hosts, Changed: in.Changed, Failed: in.Failed}
	ictx := withInventory(ctx)
	// One read is bounded by outofbandmanagement.action.timeout inside the
	// activity; a BMC that hangs past that is cut here and read next run.
	rctx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 3 * time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 2, NonRetryableErrorTypes: nonRetryable},
	})
	after := in.AfterID
	for page := 0; ; page++ {
		if page == oobmSyncPages {
			return res, workflow.NewContinueAsNewError(ctx, OOBMPowerSync, OOBMPowerSyncInput{AfterID: after, Hosts: res.Hosts, Changed: res.Changed, Failed: res.Failed})
		}
		var hp activities.OOBMSyncPage
		if err := workflow.ExecuteActivity(ictx, oobmAct.OOBMSyncHosts, activities.OOBMSyncHostsInput{AfterID: after, Limit: oobmSyncPageSize}).Get(ctx, &hp); err != nil {
			return res, err
		}
		syncHosts(ctx, rctx, hp.Hosts, max(1, hp.PoolSize), &res)
		if len(hp.Hosts) > 0 {
			after = hp.Hosts[len(hp.Hosts)-1].ID
		}
		if !hp.More {
			return res, nil
		}
	}
}

// syncHosts reads the hosts' power states, at most pool at once.
func syncHosts(ctx, rctx workflow.Context, hosts []activities.OOBMSyncHost, pool int, res *OOBMPowerSyncResult) {
	sel := workflow.NewSelector(ctx)
	inflight, next := 0, 0
	for next < len(hosts) || inflight > 0 {
		for inflight < pool && next < len(hosts) {
			h := hosts[next]
			next++
			inflight++
			sel.AddFuture(workflow.ExecuteActivity(rctx, oobmAct.OOBMSyncPower, h), func(f workflow.Future) {
				inflight--
				var r activities.OOBMSyncResult
				if err := f.Get(ctx, &r); err != nil {
					workflow.GetLogger(ctx).Error("cannot sync a host's out-of-band power state", "host", h.UUID, "err", err)
					res.Errors++
					return
				}
				if r.Skipped {
					return
				}
				res.Hosts++
				if r.Changed {
					res.Changed++
				}
				if r.Failure != "" {
					res.Failed++
				}
			})
		}
		sel.Select(ctx)
	}
}
