package activities

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/models"
)

// WatchedHypervisors are the hypervisor types whose hosts' VM power
// changes are watched (the WatchClusterVMs workflow, one per cluster;
// WatchHostVMs, one per host, before it): vSphere, where VMs
// change behind Nimbus's back through vCenter. Other hosts rely on the
// reconcile schedule.
var WatchedHypervisors = map[string]bool{hypervisor.TypeVMware: true}

// MaintWatchInput names the host a watch follows.
type MaintWatchInput struct {
	HostUUID string
}

// MaintWatchResult says how one watch activity ended.
type MaintWatchResult struct {
	Stop     bool // the host is gone or its driver cannot watch: no more watching
	Events   int
	Repaired int
	Full     bool // the watch ran its full time (maintWatchFor): no failure to wait after
	// ClusterUUID, with Stop, is the host's cluster, whose VMs are watched
	// per cluster now (WatchClusterVMs): the per-host watch hands over.
	ClusterUUID string `json:",omitempty"`
	// HostsChanged: the cluster's Up hosts changed, the watch ended early
	// so that the next one covers them (no failure to wait after).
	HostsChanged bool `json:",omitempty"`
}

// MaintWatchClusterInput names the cluster a watch follows.
type MaintWatchClusterInput struct {
	ClusterUUID string
}

// maintWatchFor bounds one watch activity, so its workflow continues as
// new with a short history and notices a removed host.
var maintWatchFor = 10 * time.Minute

// MaintWatchHost follows the host's VM events (the driver's WatchVMs) for
// up to maintWatchFor, heartbeating, and repairs the power state of each
// VM an event names the way the reconciler does (markStopped,
// markRunning), after reading the VM's state back from the driver: a late
// event about a VM a job has changed since does no harm. Nothing is done
// for VMs in a transitional state or with a pending job (a job owns them).
func (a *Maintenance) MaintWatchHost(ctx context.Context, in MaintWatchInput) (MaintWatchResult, error) {
	var res MaintWatchResult
	var h models.Host
	if err := a.DB.NewSelect().Model(&h).Where("uuid = ?", in.HostUUID).Limit(1).Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			res.Stop = true
			return res, nil
		}
		return res, err
	}
	if !WatchedHypervisors[h.HypervisorType] {
		res.Stop = true
		return res, nil
	}
	// A host in a cluster is watched with its cluster (MaintWatchCluster),
	// whatever its state: a per-host watch still running from before ends
	// here and names the cluster, so that its workflow starts the
	// cluster's watch on its way out. Every per-host watch thus drains at
	// its next activity, with no window in which its host is unwatched.
	if h.ClusterID != 0 {
		cl, err := uuidOf(ctx, a.DB, "clusters", h.ClusterID)
		if err != nil {
			return res, err
		}
		if cl != "" {
			res.Stop, res.ClusterUUID = true, cl
			return res, nil
		}
	}
	if h.State != models.HostUp {
		return res, nil // the workflow waits and looks again
	}
	_, target, err := (&Hosts{Deps: a.Deps}).hostTarget(ctx, h.UUID)
	if err != nil {
		return res, err
	}
	drv, err := a.Hypervisors(h.HypervisorType)
	if err != nil {
		return res, driverFailure(err)
	}
	wctx, cancel := context.WithTimeout(ctx, maintWatchFor)
	defer cancel()
	events, err := drv.WatchVMs(wctx, target)
	if errors.Is(err, hypervisor.ErrNotSupported) {
		res.Stop = true
		return res, nil
	}
	if err != nil {
		return res, driverFailure(err)
	}
	return watchFollow(ctx, cancel, wctx, events, nil, func(ev hypervisor.VMEvent) (bool, error) {
		done, err := a.watchApply(ctx, &h, target, drv, ev)
		if done {
			activity.GetLogger(ctx).Info("VM power state repaired from a host event", "host", h.Name, "vm", ev.Name, "state", ev.State, "reason", ev.Reason)
		}
		return done, err
	})
}

// MaintWatchCluster is MaintWatchHost for all the Up hosts of a vSphere
// cluster at once, in one watch of the driver (WatchClusterVMs: one long
// poll to vCenter per cluster rather than per host). Each event is applied
// on the host it names. It runs up to maintWatchFor, so that its workflow
// continues as new and picks up hosts added, removed or back Up since. It
// stops when the cluster is gone or holds no watched host (not even one
// Down: a host added later starts the watch again, and so does the
// reconciler); hosts that are all down make it return at once, and the
// workflow looks again after a while.
func (a *Maintenance) MaintWatchCluster(ctx context.Context, in MaintWatchClusterInput) (MaintWatchResult, error) {
	var res MaintWatchResult
	var cl models.Cluster
	if err := a.DB.NewSelect().Model(&cl).Where("uuid = ?", in.ClusterUUID).Limit(1).Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			res.Stop = true
			return res, nil
		}
		return res, err
	}
	typ, up, err := a.watchClusterHosts(ctx, cl.ID)
	if err != nil {
		return res, err
	}
	if typ == "" {
		res.Stop = true
		return res, nil
	}
	if len(up) == 0 {
		return res, nil // the workflow waits and looks again
	}
	drv, err := a.Hypervisors(typ)
	if err != nil {
		return res, driverFailure(err)
	}
	cw, ok := drv.(hypervisor.ClusterWatcher)
	if !ok {
		res.Stop = true
		return res, nil
	}
	hosts := map[string]*models.Host{}
	targets := map[string]hypervisor.Host{}
	var list []hypervisor.Host
	for i := range up {
		_, t, err := (&Hosts{Deps: a.Deps}).hostTarget(ctx, up[i].UUID)
		if err != nil {
			return res, err
		}
		hosts[t.ID], targets[t.ID] = &up[i], t
		list = append(list, t)
	}
	wctx, cancel := context.WithTimeout(ctx, maintWatchFor)
	defer cancel()
	events, err := cw.WatchClusterVMs(wctx, list)
	if errors.Is(err, hypervisor.ErrNotSupported) {
		res.Stop = true
		return res, nil
	}
	if err != nil {
		return res, driverFailure(err)
	}
	// A host added to the cluster, back Up or gone ends this watch early
	// (its workflow starts the next one at once): the watch covers the
	// hosts Up when it began, and a new host's VMs would otherwise go
	// unwatched for up to maintWatchFor.
	changed := func() bool {
		_, now, err := a.watchClusterHosts(ctx, cl.ID)
		if err != nil || len(now) != len(up) {
			return err == nil
		}
		for i := range now {
			if now[i].ID != up[i].ID {
				return true
			}
		}
		return false
	}
	return watchFollow(ctx, cancel, wctx, events, changed, func(ev hypervisor.VMEvent) (bool, error) {
		h := hosts[ev.HostID]
		if h == nil {
			return false, nil // not a host of this watch
		}
		done, err := a.watchApply(ctx, h, targets[ev.HostID], drv, ev)
		if done {
			activity.GetLogger(ctx).Info("VM power state repaired from a cluster event", "cluster", cl.Name, "host", h.Name, "vm", ev.Name, "state", ev.State, "reason", ev.Reason)
		}
		return done, err
	})
}

// watchClusterHosts answers the hypervisor type of a cluster's watched
// hosts ("" when it has none) and those Up, by id.
func (a *Maintenance) watchClusterHosts(ctx context.Context, clusterID int64) (string, []models.Host, error) {
	var all []models.Host
	if err := a.DB.NewSelect().Model(&all).Where("cluster_id = ? AND type = ?", clusterID, models.HostTypeRouting).Order("id").Scan(ctx); err != nil {
		return "", nil, err
	}
	typ := ""
	var up []models.Host
	for _, h := range all {
		if !WatchedHypervisors[h.HypervisorType] || h.State == models.HostRemoved {
			continue
		}
		typ = h.HypervisorType
		if h.State == models.HostUp {
			up = append(up, h)
		}
	}
	return typ, up, nil
}

// watchHostsEvery is how often a cluster watch looks whether its cluster's
// Up hosts changed.
var watchHostsEvery = 30 * time.Second

// watchFollow applies a watch's events (apply says whether it repaired a
// VM) until the watch ends (its full time, wctx, or the driver's), the
// activity ends, its worker stops or changed (if not nil, asked every
// watchHostsEvery) says its hosts changed, heartbeating.
func watchFollow(ctx context.Context, cancel context.CancelFunc, wctx context.Context, events <-chan hypervisor.VMEvent,
	changed func() bool, apply func(hypervisor.VMEvent) (bool, error)) (MaintWatchResult, error) {
	var res MaintWatchResult
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	var check <-chan time.Time
	if changed != nil {
		t := time.NewTicker(watchHostsEvery)
		defer t.Stop()
		check = t.C
	}
	for {
		select {
		case <-check:
			if changed() {
				cancel()
				watchDrain(events, watchEndWait)
				res.HostsChanged = true
				return res, nil
			}
		case <-activity.GetWorkerStopChannel(ctx):
			// The worker is stopping: end the watch in vCenter (its long
			// poll cancelled, its collector destroyed) before the process
			// goes, then return; the workflow starts the next watch on a
			// worker that runs.
			cancel()
			watchDrain(events, watchEndWait)
			return res, nil
		case ev, ok := <-events:
			if !ok {
				if err := ctx.Err(); err != nil {
					return res, err
				}
				res.Full = errors.Is(wctx.Err(), context.DeadlineExceeded)
				return res, nil
			}
			res.Events++
			done, err := apply(ev)
			if err != nil {
				return res, err
			}
			if done {
				res.Repaired++
			}
		case <-tick.C:
			activity.RecordHeartbeat(ctx, res.Events)
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
}

// watchEndWait bounds how long a stopping watch activity waits for the
// driver to end its watch.
const watchEndWait = 10 * time.Second

// watchDrain reads events until the channel closes (the watch ended) or wait
// passes.
func watchDrain(events <-chan hypervisor.VMEvent, wait time.Duration) {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case _, ok := <-events:
			if !ok {
				return
			}
		case <-t.C:
			return
		}
	}
}

// watchApply repairs the VM one event names, if its inventory state
// disagrees with what the driver reports now.
func (a *Maintenance) watchApply(ctx context.Context, h *models.Host, target hypervisor.Host, drv hypervisor.Driver, ev hypervisor.VMEvent) (bool, error) {
	if ev.UUID == "" {
		return false, nil
	}
	vm, err := vmByUUID(ctx, a.DB, ev.UUID)
	if errors.Is(err, models.ErrNotFound) {
		return false, nil // an orphan: the reconciler reports it
	}
	if err != nil {
		return false, err
	}
	if vm.State != models.VMRunning && vm.State != models.VMStopped {
		return false, nil
	}
	// An event that agrees with the inventory (a job's own power-on seen
	// after the job marked the VM Running) needs no vCenter call.
	if (vm.State == models.VMRunning) == (ev.State == hypervisor.StateRunning) {
		return false, nil
	}
	// A job on the VM (one that keeps it Running while it powers it off and
	// on, say) owns its power state until it ends.
	if n, err := a.DB.NewSelect().Model((*models.AsyncJob)(nil)).Where("instance_uuid = ? AND status = ?", vm.UUID, models.JobPending).Count(ctx); err != nil || n > 0 {
		return false, err
	}
	power, here := "", false
	info, err := drv.VMState(ctx, target, hypervisor.VMRef{Name: vm.InstanceName, UUID: vm.UUID})
	switch {
	case errors.Is(err, hypervisor.ErrNotFound):
	case err != nil:
		return false, nil // the reconciler looks again
	default:
		power, here = string(info.State), info.HostID == target.ID
	}
	mv := MaintVM{UUID: vm.UUID, InstanceName: vm.InstanceName, Name: vm.Name, State: vm.State, OnHost: vm.HostID == h.ID, Power: power}
	switch {
	case vm.State == models.VMRunning && mv.OnHost && power != string(hypervisor.StateRunning):
		if !here {
			mv.Power = "" // not defined on this host: nothing to undefine here
		}
		return a.markStopped(ctx, h, MaintAction{Kind: MaintMarkStopped, VM: mv})
	case vm.State == models.VMStopped && power == string(hypervisor.StateRunning) && here:
		return a.markRunning(ctx, h, MaintAction{Kind: MaintMarkRunning, VM: mv})
	}
	return false, nil
}
