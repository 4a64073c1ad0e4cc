package vsphere

import (
	"context"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// VM snapshots are vCenter's own snapshot tree of the VM, each snapshot
// named by the Nimbus snapshot's UUID (so a retried call finds what an
// earlier attempt made by name). Create, revert and remove are vCenter
// tasks whose references go to the call's Tasks record before they are
// waited on, and a retried attempt reattaches to them.

type snapNode struct {
	tree   types.VirtualMachineSnapshotTree
	parent string
}

// snapshots reads a VM's snapshot tree, parents before children, and its
// current snapshot.
func (t *hostTarget) snapshots(ctx context.Context, ref types.ManagedObjectReference) ([]snapNode, *types.ManagedObjectReference, error) {
	var vm mo.VirtualMachine
	if err := property.DefaultCollector(t.c.client()).RetrieveOne(ctx, ref, []string{"snapshot"}, &vm); err != nil {
		return nil, nil, err
	}
	if vm.Snapshot == nil {
		return nil, nil, nil
	}
	var out []snapNode
	var walk func(list []types.VirtualMachineSnapshotTree, parent string)
	walk = func(list []types.VirtualMachineSnapshotTree, parent string) {
		for _, n := range list {
			out = append(out, snapNode{tree: n, parent: parent})
			walk(n.ChildSnapshotList, n.Name)
		}
	}
	walk(vm.Snapshot.RootSnapshotList, "")
	return out, vm.Snapshot.CurrentSnapshot, nil
}

func (t *hostTarget) findSnapshot(ctx context.Context, ref types.ManagedObjectReference, name string) (*snapNode, *types.ManagedObjectReference, error) {
	nodes, cur, err := t.snapshots(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	for i := range nodes {
		if nodes[i].tree.Name == name {
			return &nodes[i], cur, nil
		}
	}
	return nil, cur, nil
}

func snapInfo(n *snapNode, cur *types.ManagedObjectReference) hypervisor.VMSnapshotInfo {
	return hypervisor.VMSnapshotInfo{Name: n.tree.Name, Parent: n.parent, Ref: n.tree.Snapshot.Value,
		// A snapshot with memory keeps the powered-on state it was taken in.
		Memory:  n.tree.State == types.VirtualMachinePowerStatePoweredOn,
		Current: cur != nil && *cur == n.tree.Snapshot}
}

// CreateVMSnapshot takes a snapshot of the VM (CreateSnapshot_Task with
// the memory and quiesce flags); one of that name already there is
// answered as it is.
func (d *Driver) CreateVMSnapshot(ctx context.Context, h hypervisor.Host, r hypervisor.VMRef, s hypervisor.VMSnapshotSpec) (hypervisor.VMSnapshotInfo, error) {
	const op = "CreateVMSnapshot"
	if s.Name == "" {
		return hypervisor.VMSnapshotInfo{}, hypervisor.Errorf(driverName, op, r.String(), hypervisor.ErrInvalid, "no snapshot name")
	}
	t, err := d.host(ctx, h)
	if err != nil {
		return hypervisor.VMSnapshotInfo{}, err
	}
	ref, err := t.mustVM(ctx, op, r)
	if err != nil {
		return hypervisor.VMSnapshotInfo{}, err
	}
	key := "vmsnapshot:" + s.Name
	if _, err := t.c.reattach(ctx, key); err != nil {
		return hypervisor.VMSnapshotInfo{}, classify(op, r.String(), err)
	}
	n, cur, err := t.findSnapshot(ctx, ref, s.Name)
	if err != nil {
		return hypervisor.VMSnapshotInfo{}, classify(op, r.String(), err)
	}
	if n != nil {
		return snapInfo(n, cur), nil
	}
	if s.Memory {
		st, err := t.powerState(ctx, ref)
		if err != nil {
			return hypervisor.VMSnapshotInfo{}, classify(op, r.String(), err)
		}
		if st != types.VirtualMachinePowerStatePoweredOn {
			return hypervisor.VMSnapshotInfo{}, hypervisor.Errorf(driverName, op, r.String(), hypervisor.ErrInvalid,
				"a snapshot with memory needs the VM powered on; it is %s", st)
		}
	}
	desc := s.Description
	if s.DisplayName != "" {
		desc = s.DisplayName + ": " + desc
	}
	_, err = t.c.runTask(ctx, key, func(ctx context.Context) (types.ManagedObjectReference, error) {
		res, err := methods.CreateSnapshot_Task(ctx, t.c.client(), &types.CreateSnapshot_Task{This: ref, Name: s.Name,
			Description: desc, Memory: s.Memory, Quiesce: s.Quiesce})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	if err != nil {
		return hypervisor.VMSnapshotInfo{}, classify(op, r.String(), err)
	}
	if n, cur, err = t.findSnapshot(ctx, ref, s.Name); err != nil {
		return hypervisor.VMSnapshotInfo{}, classify(op, r.String(), err)
	}
	if n == nil {
		return hypervisor.VMSnapshotInfo{}, hypervisor.Errorf(driverName, op, r.String(), nil, "snapshot %s not in the VM's tree after its task succeeded", s.Name)
	}
	out := snapInfo(n, cur)
	out.Memory = s.Memory
	return out, nil
}

// RevertVMSnapshot reverts the VM to the snapshot (RevertToSnapshot_Task),
// then makes sure of the power state the snapshot implies: on after a
// snapshot with memory, off after one without (vCenter leaves a reverted
// VM as the snapshot recorded it; the simulator does not change it).
func (d *Driver) RevertVMSnapshot(ctx context.Context, h hypervisor.Host, r hypervisor.VMRef, s hypervisor.VMSnapshotSpec) (hypervisor.State, error) {
	const op = "RevertVMSnapshot"
	t, err := d.host(ctx, h)
	if err != nil {
		return hypervisor.StateUnknown, err
	}
	ref, err := t.mustVM(ctx, op, r)
	if err != nil {
		return hypervisor.StateUnknown, err
	}
	key := "vmsnapshot-revert:" + s.Name
	done, err := t.c.reattach(ctx, key)
	if err != nil {
		return hypervisor.StateUnknown, classify(op, r.String(), err)
	}
	if done == nil {
		n, _, err := t.findSnapshot(ctx, ref, s.Name)
		if err != nil {
			return hypervisor.StateUnknown, classify(op, r.String(), err)
		}
		if n == nil {
			return hypervisor.StateUnknown, hypervisor.Errorf(driverName, op, r.String(), hypervisor.ErrNotFound, "the VM has no snapshot %s", s.Name)
		}
		snap := n.tree.Snapshot
		_, err = t.c.runTask(ctx, key, func(ctx context.Context) (types.ManagedObjectReference, error) {
			res, err := methods.RevertToSnapshot_Task(ctx, t.c.client(), &types.RevertToSnapshot_Task{This: snap, SuppressPowerOn: types.NewBool(!s.Memory)})
			if err != nil {
				return types.ManagedObjectReference{}, err
			}
			return res.Returnval, nil
		})
		if err != nil {
			return hypervisor.StateUnknown, classify(op, r.String(), err)
		}
	}
	if s.Memory {
		if err := d.StartVM(ctx, h, r); err != nil {
			return hypervisor.StateUnknown, err
		}
		return hypervisor.StateRunning, nil
	}
	if err := t.powerOff(ctx, ref); err != nil {
		return hypervisor.StateUnknown, classify(op, r.String(), err)
	}
	return hypervisor.StateStopped, nil
}

// DeleteVMSnapshot removes one snapshot (RemoveSnapshot_Task, its disks
// consolidated, its children kept); a missing VM or snapshot is success.
func (d *Driver) DeleteVMSnapshot(ctx context.Context, h hypervisor.Host, r hypervisor.VMRef, name string) error {
	const op = "DeleteVMSnapshot"
	t, err := d.host(ctx, h)
	if err != nil {
		return err
	}
	ref, err := t.findVM(ctx, r)
	if err != nil || ref == nil {
		return err
	}
	key := "vmsnapshot-remove:" + name
	if _, err := t.c.reattach(ctx, key); err != nil {
		return classify(op, r.String(), err)
	}
	n, _, err := t.findSnapshot(ctx, *ref, name)
	if err != nil || n == nil {
		return classify(op, r.String(), err)
	}
	snap := n.tree.Snapshot
	_, err = t.c.runTask(ctx, key, func(ctx context.Context) (types.ManagedObjectReference, error) {
		res, err := methods.RemoveSnapshot_Task(ctx, t.c.client(), &types.RemoveSnapshot_Task{This: snap, RemoveChildren: false, Consolidate: types.NewBool(true)})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	if err != nil && fault.Is(err, &types.ManagedObjectNotFound{}) {
		return nil // removed meanwhile
	}
	return classify(op, r.String(), err)
}

// ListVMSnapshots lists the VM's snapshot tree, parents first.
func (d *Driver) ListVMSnapshots(ctx context.Context, h hypervisor.Host, r hypervisor.VMRef) ([]hypervisor.VMSnapshotInfo, error) {
	const op = "ListVMSnapshots"
	t, err := d.host(ctx, h)
	if err != nil {
		return nil, err
	}
	ref, err := t.mustVM(ctx, op, r)
	if err != nil {
		return nil, err
	}
	nodes, cur, err := t.snapshots(ctx, ref)
	if err != nil {
		return nil, classify(op, r.String(), err)
	}
	out := make([]hypervisor.VMSnapshotInfo, 0, len(nodes))
	for i := range nodes {
		out = append(out, snapInfo(&nodes[i], cur))
	}
	return out, nil
}

// removeAllSnapshots consolidates a VM's snapshots into its disks before it
// is destroyed: its disks are detached and kept, and they must hold the
// VM's current data, not a base a delta disk hangs from.
func (t *hostTarget) removeAllSnapshots(ctx context.Context, ref types.ManagedObjectReference) error {
	nodes, _, err := t.snapshots(ctx, ref)
	if err != nil || len(nodes) == 0 {
		return err
	}
	_, err = t.c.runTask(ctx, "vmsnapshot-removeall:"+ref.Value, func(ctx context.Context) (types.ManagedObjectReference, error) {
		res, err := methods.RemoveAllSnapshots_Task(ctx, t.c.client(), &types.RemoveAllSnapshots_Task{This: ref, Consolidate: types.NewBool(true)})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	return err
}
