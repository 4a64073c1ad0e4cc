package workflows

import (
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
	ntemporal "github.com/nimbus-cloud/nimbus/infra/temporal"
	"github.com/nimbus-cloud/nimbus/models"
)

// Scheduled maintenance: workflows started by the system schedules that
// every worker ensures at start (MaintenanceSchedules).

var maintAct *activities.Maintenance

// Batch sizes of one maintenance run; more continues as new.
const (
	expungeBatch   = 50
	reconcileBatch = 50
	// reconcilePages bounds the host pages of one run before it continues
	// as new (a bounded history).
	reconcilePages = 20
	// stuckMinAge leaves alone VMs that moved recently: their job may not
	// be recorded yet.
	stuckMinAge = 2 * time.Minute
)

// MaintenanceSchedules are the system schedules: expunge every
// expungeEvery, reconcile every reconcileEvery, capacity alerts every 5
// minutes.
func MaintenanceSchedules(expungeEvery, reconcileEvery time.Duration) []ntemporal.ScheduleSpec {
	return []ntemporal.ScheduleSpec{
		{Kind: "expunge", Interval: expungeEvery, Workflow: MaintExpunge, Args: []any{MaintExpungeInput{}},
			What: "expunges the VMs destroyed longer than expunge.delay ago (runs every expunge.interval seconds)"},
		{Kind: "reconcile", Interval: reconcileEvery, Workflow: MaintReconcile, Args: []any{MaintReconcileInput{}},
			What: "reconciles each Up host's VMs against the inventory: repairs power-state drift, reports orphan VMs, settles VMs whose job ended, puts silent hosts in Alert, reports orphan disks on primary storage (deleting them after storage.orphan.cleanup.delay when set) (every host.reconcile.interval seconds)"},
		{Kind: "capacity-alerts", Interval: 5 * time.Minute, Workflow: MaintCapacityAlerts, Args: []any{MaintCapacityInput{}},
			What: "raises and resolves capacity alerts (listAlerts) of clusters' CPU and memory and pools' storage against the notification thresholds"},
	}
}

// ---- expunge ----

// MaintExpungeInput is one run of the expunge schedule.
type MaintExpungeInput struct{}

// MaintExpungeResult is what a run expunged.
type MaintExpungeResult struct {
	Expunged []string
	Failed   []string
}

// MaintExpunge expunges the VMs destroyed longer than expunge.delay ago,
// a batch per run, each as a child workflow whose ID is the VM's
// (nimbus-expungevm-<uuid>), so two runs never expunge one VM at once; it
// continues as new while more are due.
func MaintExpunge(ctx workflow.Context, in MaintExpungeInput) (MaintExpungeResult, error) {
	var res MaintExpungeResult
	var due activities.MaintExpungeDue
	if err := workflow.ExecuteActivity(withInventory(ctx), maintAct.MaintExpungeList, activities.MaintExpungeDueInput{Limit: expungeBatch}).Get(ctx, &due); err != nil {
		return res, err
	}
	futs := make([]workflow.ChildWorkflowFuture, len(due.VMUUIDs))
	for i, id := range due.VMUUIDs {
		cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
			WorkflowID:            ntemporal.InternalID("expungevm", id),
			WorkflowIDReusePolicy: enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
			ParentClosePolicy:     enums.PARENT_CLOSE_POLICY_ABANDON,
		})
		futs[i] = workflow.ExecuteChildWorkflow(cctx, MaintExpungeVM, MaintExpungeVMInput{VMUUID: id})
	}
	for i, f := range futs {
		var done bool
		if err := f.Get(ctx, &done); err != nil {
			workflow.GetLogger(ctx).Error("cannot expunge a destroyed VM", "vm", due.VMUUIDs[i], "err", err)
			res.Failed = append(res.Failed, due.VMUUIDs[i])
			continue
		}
		if done {
			res.Expunged = append(res.Expunged, due.VMUUIDs[i])
		}
	}
	// Failures stay Destroyed (or Expunging, which the reconciler settles):
	// continuing only when some progress was made avoids a hot loop.
	if due.More && len(res.Expunged) > 0 {
		return res, workflow.NewContinueAsNewError(ctx, MaintExpunge, in)
	}
	return res, nil
}

// MaintExpungeVMInput names a destroyed VM to expunge.
type MaintExpungeVMInput struct {
	VMUUID string
}

// MaintExpungeVM moves one Destroyed VM to Expunging with a guarded update
// and expunges it with the VM jobs' expunge step; a VM no longer Destroyed
// (recovered meanwhile) is left alone and returns false.
func MaintExpungeVM(ctx workflow.Context, in MaintExpungeVMInput) (bool, error) {
	var ok bool
	if err := workflow.ExecuteActivity(withInventory(ctx), maintAct.MaintExpungeBegin, activities.VMRefInput{VMUUID: in.VMUUID}).Get(ctx, &ok); err != nil || !ok {
		return false, err
	}
	if err := expungeVM(ctx, VMOpInput{VMUUID: in.VMUUID}); err != nil {
		return false, err
	}
	return true, nil
}

// ---- reconcile ----

// MaintReconcileInput is one run of the reconcile schedule; AfterID is
// where a run that continued as new goes on.
type MaintReconcileInput struct {
	AfterID int64
}

// MaintReconcileResult sums up a run.
type MaintReconcileResult struct {
	Hosts       int
	Unreachable []string
	Repaired    int
	Reported    int
	Settled     []string
	// Pools scanned for orphan disks, the orphans reported and deleted.
	Pools            int
	UnreachablePools []string
	OrphanDisks      int
	OrphanDisksGone  int
}

// MaintReconcile compares each Up host's VMs (and those of hosts it put in
// Alert) with the inventory, a page of hosts at a time, one scan activity
// per host in parallel: VMs whose power state drifted are repaired with a
// guarded transition and a WARN event, VMs with no row and other drift are
// reported as events, a silent host goes to Alert with the reason and back
// Up when it answers. Then VMs in a transitional state whose job no longer
// runs are settled (SettleVM), and the primary pools are scanned for
// orphan disks (reconcilePools).
func MaintReconcile(ctx workflow.Context, in MaintReconcileInput) (MaintReconcileResult, error) {
	var res MaintReconcileResult
	ictx := withInventory(ctx)
	sctx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 3 * time.Minute,
		HeartbeatTimeout:    30 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 3, NonRetryableErrorTypes: nonRetryable},
	})
	after := in.AfterID
	clusterWatched := map[string]bool{} // the cluster watches started by this run
	for page := 0; ; page++ {
		if page == reconcilePages {
			return res, workflow.NewContinueAsNewError(ctx, MaintReconcile, MaintReconcileInput{AfterID: after})
		}
		var hp activities.MaintHostsPage
		if err := workflow.ExecuteActivity(ictx, maintAct.MaintReconcileHosts, activities.MaintHostsInput{AfterID: after, Limit: reconcileBatch}).Get(ctx, &hp); err != nil {
			return res, err
		}
		futs := make([]workflow.Future, len(hp.Hosts))
		for i, h := range hp.Hosts {
			futs[i] = workflow.ExecuteActivity(sctx, maintAct.MaintScanHost, h)
		}
		for i, f := range futs {
			h := hp.Hosts[i]
			after = h.ID
			res.Hosts++
			var scan activities.MaintHostScan
			if err := f.Get(ctx, &scan); err != nil {
				// The scan itself failed (inventory, driver missing): the
				// host's state is left as it is.
				workflow.GetLogger(ctx).Error("cannot scan a host", "host", h.UUID, "err", err)
				continue
			}
			st := activities.MaintHostStateInput{Host: h, Reachable: scan.Reachable, Reason: scan.Reason}
			if err := workflow.ExecuteActivity(ictx, maintAct.MaintHostState, st).Get(ctx, nil); err != nil {
				return res, err
			}
			if !scan.Reachable {
				res.Unreachable = append(res.Unreachable, h.UUID)
				continue
			}
			// A watched host's VM watch (see WatchHostVMs) is started again
			// when it is not running: hosts added before watches existed,
			// or a watch someone terminated.
			// Version 2 starts the watch of the host's cluster (WatchClusterVMs),
			// once per cluster per run.
			if activities.WatchedHypervisors[h.Hypervisor] {
				switch v := workflow.GetVersion(ctx, "reconcile-watch-vms", workflow.DefaultVersion, 2); {
				case v >= 2 && h.ClusterUUID != "":
					if !clusterWatched[h.ClusterUUID] {
						clusterWatched[h.ClusterUUID] = true
						startClusterWatch(ctx, h.ClusterUUID)
					}
				case v >= 1:
					startWatch(ctx, h.UUID)
				}
			}
			acts := ReconcileActions(scan.VMs)
			if len(acts) == 0 {
				continue
			}
			var ar activities.MaintApplyResult
			if err := workflow.ExecuteActivity(sctx, maintAct.MaintApply, activities.MaintApplyInput{Host: h, Actions: acts}).Get(ctx, &ar); err != nil {
				return res, err
			}
			res.Repaired += ar.Repaired
			res.Reported += ar.Reported
		}
		if !hp.More {
			break
		}
	}
	var stuck []string
	if err := workflow.ExecuteActivity(ictx, maintAct.MaintStuckVMs, activities.MaintStuckInput{MinAge: stuckMinAge, Limit: 100}).Get(ctx, &stuck); err != nil {
		return res, err
	}
	for _, id := range stuck {
		var to string
		if err := workflow.ExecuteActivity(withVMDriver(ctx, 30*time.Minute), vmAct.VMSettle, activities.VMRefInput{VMUUID: id}).Get(ctx, &to); err != nil {
			workflow.GetLogger(ctx).Error("cannot settle a VM whose job ended", "vm", id, "err", err)
			continue
		}
		res.Settled = append(res.Settled, id)
	}
	if workflow.GetVersion(ctx, "reconcile-pool-orphans", workflow.DefaultVersion, 1) >= 1 {
		if err := reconcilePools(ctx, sctx, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

// reconcilePools (version 1 of reconcile-pool-orphans) scans each Up or
// Disabled primary pool for disks no volume or template copy claims (the
// leftovers of a failed cleanup, or of storage changed behind Nimbus's
// back), a page of pools at a time, and applies DiskOrphanActions.
func reconcilePools(ctx, sctx workflow.Context, res *MaintReconcileResult) error {
	ictx := withInventory(ctx)
	var after int64
	for {
		var pp activities.MaintPoolsPage
		if err := workflow.ExecuteActivity(ictx, maintAct.MaintReconcilePools, activities.MaintHostsInput{AfterID: after, Limit: reconcileBatch}).Get(ctx, &pp); err != nil {
			return err
		}
		futs := make([]workflow.Future, len(pp.Pools))
		for i, p := range pp.Pools {
			futs[i] = workflow.ExecuteActivity(sctx, maintAct.MaintScanPool, p)
		}
		for i, f := range futs {
			p := pp.Pools[i]
			after = p.ID
			res.Pools++
			var scan activities.MaintPoolScan
			if err := f.Get(ctx, &scan); err != nil {
				workflow.GetLogger(ctx).Error("cannot scan a storage pool", "pool", p.UUID, "err", err)
				continue
			}
			if !scan.Reachable {
				res.UnreachablePools = append(res.UnreachablePools, p.UUID)
				continue
			}
			acts := DiskOrphanActions(scan)
			if len(acts) == 0 {
				continue
			}
			var ar activities.MaintApplyResult
			if err := workflow.ExecuteActivity(sctx, maintAct.MaintPoolApply, activities.MaintPoolApplyInput{Pool: p, Actions: acts}).Get(ctx, &ar); err != nil {
				return err
			}
			res.OrphanDisks += ar.Reported
			res.OrphanDisksGone += ar.Repaired
		}
		if !pp.More {
			return nil
		}
	}
}

// DiskOrphanActions decides what to do with the orphan disks one pool's
// scan found. A disk is acted on only once a second scan finds it
// orphaned still (a disk whose row is being written is not an orphan):
// it is reported once, and deleted when storage.orphan.cleanup.delay is
// above 0 and it has been orphaned that long. The default (0) only
// reports.
func DiskOrphanActions(scan activities.MaintPoolScan) []activities.MaintDiskAction {
	var out []activities.MaintDiskAction
	for _, d := range scan.Orphans {
		if !d.Seen {
			continue
		}
		if !d.Reported {
			out = append(out, activities.MaintDiskAction{Kind: activities.MaintDiskReport, Disk: d})
		}
		if scan.CleanupDelay > 0 && d.AgeSeconds >= scan.CleanupDelay {
			out = append(out, activities.MaintDiskAction{Kind: activities.MaintDiskDelete, Disk: d})
		}
	}
	return out
}

// ReconcileActions decides, from one host's joined view, what to repair
// and what to report:
//   - Running in the inventory on this host, not running there: Stopped;
//   - Stopped in the inventory, running on this host: Running;
//   - on the host with no row: an orphan, reported (never destroyed);
//   - running on the host while Destroyed, Error, or Running on another
//     host in the inventory: drift, reported;
//   - transitional states are their job's (or SettleVM's): left alone.
func ReconcileActions(vms []activities.MaintVM) []activities.MaintAction {
	var out []activities.MaintAction
	for _, v := range vms {
		running := v.Power == "Running"
		switch {
		case v.State == "" && v.Power != "":
			out = append(out, activities.MaintAction{Kind: activities.MaintOrphan, VM: v})
		case v.State == models.VMRunning && v.OnHost && !running:
			out = append(out, activities.MaintAction{Kind: activities.MaintMarkStopped, VM: v})
		case v.State == models.VMStopped && running:
			out = append(out, activities.MaintAction{Kind: activities.MaintMarkRunning, VM: v})
		case v.State == models.VMRunning && !v.OnHost && running:
			out = append(out, activities.MaintAction{Kind: activities.MaintDrift, VM: v, Note: "it runs on another host in the inventory"})
		case (v.State == models.VMDestroyed || v.State == models.VMError) && running:
			out = append(out, activities.MaintAction{Kind: activities.MaintDrift, VM: v, Note: "left running (the expunge or the reconciler's operator decides)"})
		}
	}
	return out
}

// ---- capacity alerts ----

// MaintCapacityInput is one run of the capacity alerts schedule.
type MaintCapacityInput struct{}

// MaintCapacityAlerts raises and resolves the capacity alerts.
func MaintCapacityAlerts(ctx workflow.Context, _ MaintCapacityInput) (activities.MaintCapacityResult, error) {
	var res activities.MaintCapacityResult
	err := workflow.ExecuteActivity(withInventory(ctx), maintAct.MaintCapacityAlerts).Get(ctx, &res)
	return res, err
}
