package vsphere

import (
	"context"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// WatchEnv is the off switch of WatchVMs ("false" turns VM watches off;
// they are on by default, and on anything strconv.ParseBool does not
// read as false).
const WatchEnv = "NIMBUS_VSPHERE_WATCH"

// WatchEnabled tells whether WatchVMs runs (WatchEnv is not false).
func WatchEnabled() bool {
	on, err := strconv.ParseBool(os.Getenv(WatchEnv))
	return on || err != nil
}

// watchWait bounds one WaitForUpdatesEx long poll. A watch ended on
// purpose cancels its poll in vCenter (CancelWaitForUpdates, then
// DestroyPropertyCollector), so this only bounds what a client that died
// leaves behind: vCenter (and govmomi's simulator, which serves an
// abandoned poll to its end and whose Close waits for it) holds a poll
// whose client is gone until its wait is over. It also bounds how long a
// dead session goes unnoticed (the relogin round tripper renews it).
var watchWait int32 = 15

// watchCleanup bounds the calls that end a watch in vCenter.
const watchCleanup = 5 * time.Second

// watchProps are the VM properties a watch follows.
var watchProps = []string{"name", "config.instanceUuid", "config.template", "runtime.powerState", "runtime.host"}

// watched is what a watch knows of one VM.
type watched struct {
	name, uuid string
	template   bool
	power      types.VirtualMachinePowerState
	host       types.ManagedObjectReference
}

// watchSet is a driver's running watches, so that Close ends each in
// vCenter (while its session is still logged in) before it logs out.
type watchSet struct {
	mu      sync.Mutex
	closed  bool
	next    int
	cancels map[int]context.CancelFunc
	wg      sync.WaitGroup
}

// add registers a watch's cancel function; false once the driver closed.
func (s *watchSet) add(cancel context.CancelFunc) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, false
	}
	if s.cancels == nil {
		s.cancels = map[int]context.CancelFunc{}
	}
	s.next++
	s.cancels[s.next] = cancel
	s.wg.Add(1)
	return s.next, true
}

func (s *watchSet) done(id int) {
	s.mu.Lock()
	delete(s.cancels, id)
	s.mu.Unlock()
	s.wg.Done()
}

// stop cancels every watch and waits (bounded) for them to end.
func (s *watchSet) stop() {
	s.mu.Lock()
	s.closed = true
	for _, cancel := range s.cancels {
		cancel()
	}
	s.mu.Unlock()
	ended := make(chan struct{})
	go func() { s.wg.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(2 * watchCleanup):
	}
}

// WatchVMs streams the power-state changes of the VMs on an ESXi host:
// a property collector of its own (so its filter is not shared) follows
// the properties in watchProps of the host's VMs (traversing
// HostSystem.vm) with WaitForUpdatesEx. A VM that arrives on the host (a
// new VM, or one moved here) is reported with its state, one that
// disappears (or, on vCenter, leaves for another host) as undefined. The
// first answer is the current state, which is not reported. The channel
// closes when ctx ends, the driver is closed or vCenter cannot be
// reached; the consumer reconciles with ListVMs then.
//
// The filter is rooted at the host, not at a container view of the VM
// folder: govmomi's simulator (v0.52.0) deadlocks a container-view filter
// against VM creation (a new VM's Registry.Put holds the VM's and the
// view's locks and waits for the filter's, in PropertyFilter.UpdateObject,
// while WaitForUpdatesEx holds the filter's in PropertyFilter.update and
// waits for the new VM's), and one rooted at a folder the same way
// through the folder's recentTask update by every CreateVM_Task; Nimbus
// runs no host task. The simulator also recollects every filter at every
// change anywhere, so a filter of the watched hosts' VMs only (rather than
// the datacenter's) keeps that cost down, as it keeps a real vCenter's
// down; WatchClusterVMs puts a cluster's hosts in one filter, which
// collects each VM once as before but costs one long poll, not one per
// host.
func (d *Driver) WatchVMs(ctx context.Context, h hypervisor.Host) (<-chan hypervisor.VMEvent, error) {
	return d.watchHosts(ctx, "WatchVMs", []hypervisor.Host{h})
}

// WatchClusterVMs is WatchVMs over several ESXi hosts of one vCenter (a
// cluster's) in one property collector, so that a cluster costs vCenter
// one long poll rather than one per host. Its filter has one ObjectSpec
// per host, each rooted at the host as WatchVMs' is (see there why not a
// container view or a folder), and each event names the host the VM runs
// on (through the host references). A VM that moves between two watched
// hosts is reported once, "migrated" on the host it arrived on. A host
// that cannot be found in vCenter is left out; the watch fails only when
// none can be.
func (d *Driver) WatchClusterVMs(ctx context.Context, hosts []hypervisor.Host) (<-chan hypervisor.VMEvent, error) {
	return d.watchHosts(ctx, "WatchClusterVMs", hosts)
}

func (d *Driver) watchHosts(ctx context.Context, op string, hosts []hypervisor.Host) (<-chan hypervisor.VMEvent, error) {
	if len(hosts) == 0 {
		return nil, hypervisor.Errorf(driverName, op, "", hypervisor.ErrInvalid, "no host to watch")
	}
	if !WatchEnabled() {
		return nil, hypervisor.Errorf(driverName, op, hosts[0].String(), hypervisor.ErrNotSupported,
			"VM watches are off (%s=false)", WatchEnv)
	}
	var c *conn
	var firstErr error
	byRef := map[types.ManagedObjectReference]hypervisor.Host{}
	var specs []types.ObjectSpec
	for _, h := range hosts {
		t, err := d.host(ctx, h)
		if err == nil && c != nil && t.c != c {
			err = hypervisor.Errorf(driverName, op, h.String(), hypervisor.ErrInvalid, "%s is not in the vCenter of %s", h, hosts[0])
		}
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		c = t.c
		if _, dup := byRef[t.host]; dup {
			continue
		}
		byRef[t.host] = h
		specs = append(specs, types.ObjectSpec{Obj: t.host, Skip: types.NewBool(true), SelectSet: []types.BaseSelectionSpec{
			&types.TraversalSpec{Type: "HostSystem", Path: "vm", Skip: types.NewBool(false)}}})
	}
	if c == nil {
		return nil, firstErr
	}
	where := hosts[0].String()
	vc := c.client()
	pc, err := property.DefaultCollector(vc).Create(ctx)
	if err != nil {
		return nil, classify(op, where, err)
	}
	// end cancels a poll in flight and destroys the collector (and its
	// filter) in vCenter, with a context of its own: the watch's has ended.
	end := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), watchCleanup)
		defer cancel()
		_, _ = methods.CancelWaitForUpdates(cctx, vc, &types.CancelWaitForUpdates{This: pc.Reference()})
		_ = pc.Destroy(cctx)
	}
	_, err = pc.CreateFilter(ctx, types.CreateFilter{Spec: types.PropertyFilterSpec{
		ObjectSet: specs,
		PropSet:   []types.PropertySpec{{Type: "VirtualMachine", PathSet: watchProps}},
	}})
	if err != nil {
		end()
		return nil, classify(op, where, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	id, ok := d.watches.add(cancel)
	if !ok {
		cancel()
		end()
		return nil, hypervisor.Errorf(driverName, op, where, hypervisor.ErrUnreachable, "the driver is closed")
	}
	out := make(chan hypervisor.VMEvent, 64)
	go func() {
		defer d.watches.done(id)
		defer close(out)
		defer end()
		defer cancel()
		vms := map[types.ManagedObjectReference]*watched{}
		version := ""
		// The first answer, and the pages that follow it while vCenter
		// truncates (over 100 objects), are the state as it is.
		for initial := true; ; {
			res, err := methods.WaitForUpdatesEx(wctx, vc, &types.WaitForUpdatesEx{This: pc.Reference(), Version: version,
				Options: &types.WaitOptions{MaxWaitSeconds: &watchWait}})
			if err != nil {
				return
			}
			set := res.Returnval
			if set == nil {
				continue // no change within watchWait
			}
			version = set.Version
			var events []hypervisor.VMEvent
			for _, fs := range set.FilterSet {
				for _, u := range fs.ObjectSet {
					events = append(events, watchUpdate(byRef, vms, u)...)
				}
			}
			if initial {
				initial = set.Truncated != nil && *set.Truncated
				continue // the state as it is, not a change
			}
			for _, e := range events {
				select {
				case out <- e:
				case <-wctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// watchUpdate applies one object update to what the watch knows and
// answers the events it makes for the watched hosts (hosts, by reference).
func watchUpdate(hosts map[types.ManagedObjectReference]hypervisor.Host, vms map[types.ManagedObjectReference]*watched, u types.ObjectUpdate) []hypervisor.VMEvent {
	w := vms[u.Obj]
	if u.Kind == types.ObjectUpdateKindLeave {
		delete(vms, u.Obj)
		if w == nil || w.template {
			return nil
		}
		h, ok := hosts[w.host]
		if !ok {
			return nil
		}
		return []hypervisor.VMEvent{{HostID: h.ID, Name: w.name, UUID: w.uuid, Reason: "undefined", Time: time.Now()}}
	}
	known := w != nil
	if !known {
		w = &watched{}
		vms[u.Obj] = w
	}
	before := *w
	for _, c := range u.ChangeSet {
		switch c.Name {
		case "name":
			w.name, _ = c.Val.(string)
		case "config.instanceUuid":
			w.uuid, _ = c.Val.(string)
		case "config.template":
			w.template, _ = c.Val.(bool)
		case "runtime.powerState":
			w.power, _ = c.Val.(types.VirtualMachinePowerState)
		case "runtime.host":
			w.host, _ = c.Val.(types.ManagedObjectReference)
		}
	}
	h, ok := hosts[w.host]
	if w.template || !ok {
		return nil
	}
	e := hypervisor.VMEvent{HostID: h.ID, Name: w.name, UUID: w.uuid, State: stateOf(w.power), Time: time.Now()}
	switch {
	// An enter of a VM already known is no news (the simulator sends
	// one again when a filter's traversal root changed).
	case !known || before.host != w.host:
		e.Reason = "defined"
		if before.host.Value != "" && before.host != w.host {
			e.Reason = "migrated"
		}
	case before.power != w.power:
		switch w.power {
		case types.VirtualMachinePowerStatePoweredOn:
			e.Reason = "started"
			if before.power == types.VirtualMachinePowerStateSuspended {
				e.Reason = "resumed"
			}
		case types.VirtualMachinePowerStatePoweredOff:
			e.Reason = "stopped"
		case types.VirtualMachinePowerStateSuspended:
			e.Reason = "paused"
		}
	default:
		return nil
	}
	return []hypervisor.VMEvent{e}
}

var _ hypervisor.ClusterWatcher = (*Driver)(nil)
