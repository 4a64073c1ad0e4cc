package vsphere

import (
	"context"
	"os"
	"strconv"
	"time"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// WatchEnv turns WatchVMs on ("true"). It is off by default: govmomi's
// simulator (v0.52.0) can panic serving a watch's container view while
// VMs are being created concurrently ("does not have a Name"), and then
// hangs, which `nimbus bench vsphere` hits at 8 deployments in flight.
// A real vCenter has no such problem; turn it on there.
const WatchEnv = "NIMBUS_VSPHERE_WATCH"

func watchEnabled() bool {
	on, _ := strconv.ParseBool(os.Getenv(WatchEnv))
	return on
}

// watchWait bounds one WaitForUpdatesEx long poll, so a watch notices a
// dead session (and the relogin round tripper renews it) within it.
var watchWait int32 = 60

// watchProps are the VM properties a watch follows.
var watchProps = []string{"name", "config.instanceUuid", "config.template", "runtime.powerState", "runtime.host"}

// watched is what a watch knows of one VM.
type watched struct {
	name, uuid string
	template   bool
	power      types.VirtualMachinePowerState
	host       types.ManagedObjectReference
}

// WatchVMs streams the power-state changes of the VMs on an ESXi host:
// a property collector of its own (so its filter is not shared) follows
// the runtime.powerState and runtime.host of every VM of the host's
// datacenter (a container view of its VM folder) with
// WaitForUpdatesEx. A VM that arrives on the host (vMotion, a new VM) is
// reported with its state, one that disappears as undefined. The first
// answer is the current state, which is not reported. The channel closes
// when ctx ends or vCenter cannot be reached; the consumer reconciles
// with ListVMs then.
func (d *Driver) WatchVMs(ctx context.Context, h hypervisor.Host) (<-chan hypervisor.VMEvent, error) {
	if !watchEnabled() {
		return nil, hypervisor.Errorf(driverName, "WatchVMs", h.String(), hypervisor.ErrNotSupported,
			"VM watches are off (set %s=true to turn them on)", WatchEnv)
	}
	t, err := d.host(ctx, h)
	if err != nil {
		return nil, err
	}
	vc := t.c.client()
	pc, err := property.DefaultCollector(vc).Create(ctx)
	if err != nil {
		return nil, classify("WatchVMs", t.loc.Host, err)
	}
	cleanup := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = pc.Destroy(cctx)
	}
	// Rooted at the datacenter's VM folder rather than the cluster's
	// resource pool: govmomi's simulator adds a new VM to a container view
	// only when the view's root is a folder.
	folder, err := t.c.find(ctx, "/"+escapeName(t.loc.Datacenter)+"/vm", "VM folder")
	if err != nil {
		cleanup()
		return nil, err
	}
	v, err := view.NewManager(vc).CreateContainerView(ctx, folder, []string{"VirtualMachine"}, true)
	if err != nil {
		cleanup()
		return nil, classify("WatchVMs", t.loc.Host, err)
	}
	destroy := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = v.Destroy(cctx)
		cleanup()
	}
	_, err = pc.CreateFilter(ctx, types.CreateFilter{Spec: types.PropertyFilterSpec{
		ObjectSet: []types.ObjectSpec{{Obj: v.Reference(), Skip: types.NewBool(true), SelectSet: []types.BaseSelectionSpec{
			&types.TraversalSpec{Type: "ContainerView", Path: "view", Skip: types.NewBool(false)}}}},
		PropSet: []types.PropertySpec{{Type: "VirtualMachine", PathSet: watchProps}},
	}})
	if err != nil {
		destroy()
		return nil, classify("WatchVMs", t.loc.Host, err)
	}
	out := make(chan hypervisor.VMEvent, 64)
	go func() {
		defer close(out)
		defer destroy()
		vms := map[types.ManagedObjectReference]*watched{}
		version := ""
		for first := true; ; first = false {
			res, err := methods.WaitForUpdatesEx(ctx, vc, &types.WaitForUpdatesEx{This: pc.Reference(), Version: version,
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
					events = append(events, t.watchUpdate(h, vms, u)...)
				}
			}
			if first {
				continue // the state as it is, not a change
			}
			for _, e := range events {
				select {
				case out <- e:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// watchUpdate applies one object update to what the watch knows and
// answers the events it makes for the host.
func (t *hostTarget) watchUpdate(h hypervisor.Host, vms map[types.ManagedObjectReference]*watched, u types.ObjectUpdate) []hypervisor.VMEvent {
	w := vms[u.Obj]
	if u.Kind == types.ObjectUpdateKindLeave {
		delete(vms, u.Obj)
		if w == nil || w.template || w.host != t.host {
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
	if w.template || w.host != t.host {
		return nil
	}
	e := hypervisor.VMEvent{HostID: h.ID, Name: w.name, UUID: w.uuid, State: stateOf(w.power), Time: time.Now()}
	switch {
	// An enter of a VM already known is no news: the simulator sends one
	// for every VM of a container view whose view changed.
	case !known || before.host != t.host:
		e.Reason = "defined"
		if before.host.Value != "" && before.host != t.host {
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
