package sim

import (
	"context"
	"sync"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// VM snapshots of the simulator: a tree per VM kept in memory (not in the
// journal: a reopened simulator has forgotten them, which the reconciler
// does not look at). Reverting sets the VM's power state as a real
// hypervisor would: running for a snapshot with memory, stopped without.
// Each operation goes through the fault switches under its own name
// (CreateVMSnapshot, RevertVMSnapshot, DeleteVMSnapshot).

type simSnap struct {
	name, parent string
	memory       bool
}

type simSnapTree struct {
	snaps   []simSnap // in creation order: parents first
	current string
}

type vmSnapStore struct {
	mu    sync.Mutex
	trees map[string]*simSnapTree // by host id + "/" + VM UUID
}

func (s *vmSnapStore) tree(key string, create bool) *simSnapTree {
	if s.trees == nil {
		s.trees = map[string]*simSnapTree{}
	}
	t := s.trees[key]
	if t == nil && create {
		t = &simSnapTree{}
		s.trees[key] = t
	}
	return t
}

// drop forgets a VM's snapshots (the VM was undefined).
func (s *vmSnapStore) drop(hostID, vmUUID string) {
	s.mu.Lock()
	delete(s.trees, hostID+"/"+vmUUID)
	s.mu.Unlock()
}

func (t *simSnapTree) find(name string) int {
	for i := range t.snaps {
		if t.snaps[i].name == name {
			return i
		}
	}
	return -1
}

func (t *simSnapTree) info(i int) hypervisor.VMSnapshotInfo {
	s := t.snaps[i]
	return hypervisor.VMSnapshotInfo{Name: s.name, Parent: s.parent, Memory: s.memory, Current: s.name == t.current, Ref: s.name}
}

// CreateVMSnapshot records a snapshot of a VM on the host; one of that
// name already there is answered as it is.
func (d *Driver) CreateVMSnapshot(ctx context.Context, h hypervisor.Host, ref hypervisor.VMRef, spec hypervisor.VMSnapshotSpec) (hypervisor.VMSnapshotInfo, error) {
	const op = "CreateVMSnapshot"
	if spec.Name == "" {
		return hypervisor.VMSnapshotInfo{}, hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrInvalid, "no snapshot name")
	}
	if err := d.begin(ctx, op, h, ref.String()); err != nil {
		return hypervisor.VMSnapshotInfo{}, err
	}
	var out hypervisor.VMSnapshotInfo
	err := d.withHost(op, h, func(sh *host) error {
		v := sh.find(ref)
		if v == nil {
			return hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrNotFound, "no such vm on host %s", h.ID)
		}
		d.snaps.mu.Lock()
		defer d.snaps.mu.Unlock()
		t := d.snaps.tree(h.ID+"/"+string(v.head().uuid), true)
		if i := t.find(spec.Name); i >= 0 {
			out = t.info(i)
			return nil
		}
		if spec.Memory && v.State() != hypervisor.StateRunning {
			return hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrInvalid, "a snapshot with memory needs the vm running; it is %s", v.State())
		}
		t.snaps = append(t.snaps, simSnap{name: spec.Name, parent: t.current, memory: spec.Memory})
		t.current = spec.Name
		out = t.info(len(t.snaps) - 1)
		return nil
	})
	return out, err
}

// RevertVMSnapshot makes the snapshot current and sets the VM's power
// state from it.
func (d *Driver) RevertVMSnapshot(ctx context.Context, h hypervisor.Host, ref hypervisor.VMRef, spec hypervisor.VMSnapshotSpec) (hypervisor.State, error) {
	const op = "RevertVMSnapshot"
	name := spec.Name
	if err := d.begin(ctx, op, h, ref.String()); err != nil {
		return hypervisor.StateUnknown, err
	}
	var (
		next hypervisor.State
		seq  uint64
	)
	err := d.withHost(op, h, func(sh *host) error {
		v := sh.find(ref)
		if v == nil {
			return hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrNotFound, "no such vm on host %s", h.ID)
		}
		d.snaps.mu.Lock()
		t := d.snaps.tree(h.ID+"/"+string(v.head().uuid), false)
		i := -1
		if t != nil {
			i = t.find(name)
		}
		if i < 0 {
			d.snaps.mu.Unlock()
			return hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrNotFound, "vm has no snapshot %s", name)
		}
		t.current = name
		next = hypervisor.StateStopped
		if t.snaps[i].memory {
			next = hypervisor.StateRunning
		}
		d.snaps.mu.Unlock()
		if next == v.State() {
			return nil
		}
		if err := d.logApply(&record{T: recState, Host: h.ID, UUID: string(v.head().uuid), State: stateCode(next)}, &seq); err != nil {
			return err
		}
		sh.emit(v, "reverted")
		return nil
	})
	if err != nil {
		return hypervisor.StateUnknown, err
	}
	return next, d.commit(seq, false)
}

// DeleteVMSnapshot forgets a snapshot: its children hang from its parent,
// which becomes current when it was. A missing one is success.
func (d *Driver) DeleteVMSnapshot(ctx context.Context, h hypervisor.Host, ref hypervisor.VMRef, name string) error {
	const op = "DeleteVMSnapshot"
	if err := d.begin(ctx, op, h, ref.String()); err != nil {
		return err
	}
	return d.withHost(op, h, func(sh *host) error {
		v := sh.find(ref)
		if v == nil {
			return nil
		}
		d.snaps.mu.Lock()
		defer d.snaps.mu.Unlock()
		t := d.snaps.tree(h.ID+"/"+string(v.head().uuid), false)
		if t == nil {
			return nil
		}
		i := t.find(name)
		if i < 0 {
			return nil
		}
		gone := t.snaps[i]
		t.snaps = append(t.snaps[:i], t.snaps[i+1:]...)
		for j := range t.snaps {
			if t.snaps[j].parent == name {
				t.snaps[j].parent = gone.parent
			}
		}
		if t.current == name {
			t.current = gone.parent
		}
		return nil
	})
}

// ListVMSnapshots lists a VM's snapshots in creation order.
func (d *Driver) ListVMSnapshots(ctx context.Context, h hypervisor.Host, ref hypervisor.VMRef) ([]hypervisor.VMSnapshotInfo, error) {
	const op = "ListVMSnapshots"
	if err := d.begin(ctx, op, h, ref.String()); err != nil {
		return nil, err
	}
	var out []hypervisor.VMSnapshotInfo
	err := d.withHost(op, h, func(sh *host) error {
		v := sh.find(ref)
		if v == nil {
			return hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrNotFound, "no such vm on host %s", h.ID)
		}
		d.snaps.mu.Lock()
		defer d.snaps.mu.Unlock()
		if t := d.snaps.tree(h.ID+"/"+string(v.head().uuid), false); t != nil {
			for i := range t.snaps {
				out = append(out, t.info(i))
			}
		}
		return nil
	})
	return out, err
}
