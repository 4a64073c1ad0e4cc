package vsphere

import (
	"context"
	"strconv"
	"sync"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// maxHelpers is how many disk helper VMs a datastore gets at most. A
// linked clone holds its helper for two device changes, so one helper
// makes one clone at a time; concurrent deployments onto a datastore take
// more helpers, each created the first time it is needed (lowest slot
// first, so a datastore that never sees concurrent clones keeps one).
const maxHelpers = 8

// helperName is a datastore's disk helper VM of a slot (slot 0 keeps the
// name of the single helper of earlier versions).
func helperName(ds types.ManagedObjectReference, slot int) string {
	name := "nimbus-diskhelper-" + ds.Value
	if slot > 0 {
		name += "-h" + strconv.Itoa(slot)
	}
	return name
}

// isHelperName tells whether a VM name is one of a datastore's helpers.
func isHelperName(ds types.ManagedObjectReference, name string) bool {
	for i := range maxHelpers {
		if name == helperName(ds, i) {
			return true
		}
	}
	return false
}

// helperSlots hands out a datastore's helper slots, one user each.
type helperSlots struct {
	free chan struct{} // one token per slot not in use
	mu   sync.Mutex
	busy [maxHelpers]bool
}

// acquireHelper takes the lowest free helper slot of a datastore, waiting
// for one when all are in use; release gives it back.
func (p *Pool) acquireHelper(ctx context.Context, ds types.ManagedObjectReference) (slot int, release func(), err error) {
	v, ok := p.helpers.Load(ds.Value)
	if !ok {
		hs := &helperSlots{free: make(chan struct{}, maxHelpers)}
		for range maxHelpers {
			hs.free <- struct{}{}
		}
		v, _ = p.helpers.LoadOrStore(ds.Value, hs)
	}
	hs := v.(*helperSlots)
	select {
	case <-hs.free:
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
	hs.mu.Lock()
	for slot = 0; hs.busy[slot]; slot++ {
	}
	hs.busy[slot] = true
	hs.mu.Unlock()
	return slot, func() {
		hs.mu.Lock()
		hs.busy[slot] = false
		hs.mu.Unlock()
		hs.free <- struct{}{}
	}, nil
}

// unlinkElsewhere detaches file from the datastore's other helpers: an
// attempt that died between making a linked clone and detaching it may
// have used another slot than its retry. Helpers busy in this process are
// reconfigured all the same (vCenter runs one device change of a VM at a
// time; a refused one fails the attempt, which is retried).
func (p *Pool) unlinkElsewhere(ctx context.Context, t *dsTarget, mine int, file string) error {
	for slot := range maxHelpers {
		if slot == mine {
			continue
		}
		vmPath := "/" + escapeName(t.dcName) + "/vm/" + escapeName(helperName(t.ds, slot))
		ref, ok := t.c.cache.get("path:" + vmPath)
		if !ok {
			r, err := object.NewSearchIndex(t.c.client()).FindByInventoryPath(ctx, vmPath)
			if err != nil {
				return classify("CreateVolumeFromTemplate", file, err)
			}
			if r == nil {
				continue
			}
			ref = r.Reference()
		}
		var vm mo.VirtualMachine
		if err := property.DefaultCollector(t.c.client()).RetrieveOne(ctx, ref, []string{"config.hardware.device"}, &vm); err != nil {
			if fault.Is(err, &types.ManagedObjectNotFound{}) {
				continue
			}
			return classify("CreateVolumeFromTemplate", file, err)
		}
		if vm.Config == nil {
			continue
		}
		for _, d := range object.VirtualDeviceList(vm.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil)) {
			b, ok := d.GetVirtualDevice().Backing.(types.BaseVirtualDeviceFileBackingInfo)
			if !ok || b.GetVirtualDeviceFileBackingInfo().FileName != file {
				continue
			}
			_, err := t.c.runTask(ctx, "unlink:"+file, func(ctx context.Context) (types.ManagedObjectReference, error) {
				res, err := methods.ReconfigVM_Task(ctx, t.c.client(), &types.ReconfigVM_Task{This: ref,
					Spec: types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{
						&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationRemove, Device: d}}}})
				if err != nil {
					return types.ManagedObjectReference{}, err
				}
				return res.Returnval, nil
			})
			return classify("CreateVolumeFromTemplate", file, err)
		}
	}
	return nil
}
