package vsphere_test

import (
	"context"
	"errors"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// vcsimSnapshots reads a VM's snapshot tree straight from the simulated
// vCenter (not through the driver): names parents first, the current one,
// and the VM's power state.
func vcsimSnapshots(t *testing.T, e *env, uuid string) (names []string, current string, power types.VirtualMachinePowerState) {
	t.Helper()
	ctx := context.Background()
	c, err := e.sim.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Logout(ctx) }()
	dc, err := object.NewSearchIndex(c.Client).FindByInventoryPath(ctx, "/DC0")
	if err != nil || dc == nil {
		t.Fatalf("find DC0: %v", err)
	}
	ref, err := object.NewSearchIndex(c.Client).FindByUuid(ctx, dc.(*object.Datacenter), uuid, true, types.NewBool(true))
	if err != nil || ref == nil {
		t.Fatalf("find VM %s: %v", uuid, err)
	}
	var vm mo.VirtualMachine
	if err := object.NewVirtualMachine(c.Client, ref.Reference()).Properties(ctx, ref.Reference(), []string{"snapshot", "runtime.powerState"}, &vm); err != nil {
		t.Fatal(err)
	}
	power = vm.Runtime.PowerState
	if vm.Snapshot == nil {
		return nil, "", power
	}
	var walk func([]types.VirtualMachineSnapshotTree)
	walk = func(l []types.VirtualMachineSnapshotTree) {
		for _, n := range l {
			names = append(names, n.Name)
			if vm.Snapshot.CurrentSnapshot != nil && *vm.Snapshot.CurrentSnapshot == n.Snapshot {
				current = n.Name
			}
			walk(n.ChildSnapshotList)
		}
	}
	walk(vm.Snapshot.RootSnapshotList)
	return names, current, power
}

func TestVMSnapshots(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	h := e.hosts[0]
	root, err := e.pools.CreateVolumeFromTemplate(ctx, e.ds0, e.tpl.Path, storage.VolumeSpec{ID: "root-s", Path: "root-s", SizeBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s := spec("i-2-30-VM", "5b9d0a53-6f1e-4c3e-9f4e-0a0000000030", hypervisor.Disk{Path: root.Path})
	if _, err := e.drv.DefineVM(ctx, h, s); err != nil {
		t.Fatal(err)
	}
	ref := s.Ref()
	// Memory needs the VM on.
	if _, err := e.drv.CreateVMSnapshot(ctx, h, ref, hypervisor.VMSnapshotSpec{Name: "snap-m0", Memory: true}); !errors.Is(err, hypervisor.ErrInvalid) {
		t.Fatalf("memory snapshot of a powered-off VM = %v, want invalid", err)
	}
	if err := e.drv.StartVM(ctx, h, ref); err != nil {
		t.Fatal(err)
	}

	// Without, then with memory: a chain, the last one current.
	s1, err := e.drv.CreateVMSnapshot(ctx, h, ref, hypervisor.VMSnapshotSpec{Name: "snap-1", DisplayName: "before", Description: "disks"})
	if err != nil || s1.Name != "snap-1" || s1.Parent != "" || !s1.Current || s1.Ref == "" {
		t.Fatalf("CreateVMSnapshot = %+v, %v", s1, err)
	}
	again, err := e.drv.CreateVMSnapshot(ctx, h, ref, hypervisor.VMSnapshotSpec{Name: "snap-1"})
	if err != nil || again.Ref != s1.Ref {
		t.Fatalf("CreateVMSnapshot again = %+v, %v (want the same snapshot %s)", again, err, s1.Ref)
	}
	s2, err := e.drv.CreateVMSnapshot(ctx, h, ref, hypervisor.VMSnapshotSpec{Name: "snap-2", Memory: true, Quiesce: true})
	if err != nil || s2.Parent != "snap-1" || !s2.Current || !s2.Memory {
		t.Fatalf("CreateVMSnapshot with memory = %+v, %v", s2, err)
	}
	if names, cur, _ := vcsimSnapshots(t, e, s.UUID); len(names) != 2 || names[0] != "snap-1" || names[1] != "snap-2" || cur != "snap-2" {
		t.Fatalf("vCenter's snapshot tree = %v (current %s)", names, cur)
	}
	l, err := e.drv.ListVMSnapshots(ctx, h, ref)
	if err != nil || len(l) != 2 || l[1].Parent != "snap-1" || !l[1].Current || l[0].Current {
		t.Fatalf("ListVMSnapshots = %+v, %v", l, err)
	}

	// Revert to the disk-only one: the VM is off after; to the one with
	// memory: on.
	st, err := e.drv.RevertVMSnapshot(ctx, h, ref, hypervisor.VMSnapshotSpec{Name: "snap-1"})
	if err != nil || st != hypervisor.StateStopped {
		t.Fatalf("RevertVMSnapshot disk = %s, %v", st, err)
	}
	if _, cur, power := vcsimSnapshots(t, e, s.UUID); cur != "snap-1" || power != types.VirtualMachinePowerStatePoweredOff {
		t.Fatalf("after reverting to snap-1: current %s, power %s", cur, power)
	}
	st, err = e.drv.RevertVMSnapshot(ctx, h, ref, hypervisor.VMSnapshotSpec{Name: "snap-2", Memory: true})
	if err != nil || st != hypervisor.StateRunning {
		t.Fatalf("RevertVMSnapshot memory = %s, %v", st, err)
	}
	if _, cur, power := vcsimSnapshots(t, e, s.UUID); cur != "snap-2" || power != types.VirtualMachinePowerStatePoweredOn {
		t.Fatalf("after reverting to snap-2: current %s, power %s", cur, power)
	}
	if _, err := e.drv.RevertVMSnapshot(ctx, h, ref, hypervisor.VMSnapshotSpec{Name: "nope"}); !errors.Is(err, hypervisor.ErrNotFound) {
		t.Fatalf("RevertVMSnapshot to a missing snapshot = %v, want not found", err)
	}

	// Delete: gone from vCenter's tree, its child kept; twice is fine.
	if err := e.drv.DeleteVMSnapshot(ctx, h, ref, "snap-1"); err != nil {
		t.Fatal(err)
	}
	if names, cur, _ := vcsimSnapshots(t, e, s.UUID); len(names) != 1 || names[0] != "snap-2" || cur != "snap-2" {
		t.Fatalf("tree after deleting snap-1 = %v (current %s)", names, cur)
	}
	if err := e.drv.DeleteVMSnapshot(ctx, h, ref, "snap-1"); err != nil {
		t.Fatalf("DeleteVMSnapshot again: %v", err)
	}
	if err := e.drv.DeleteVMSnapshot(ctx, h, ref, "snap-2"); err != nil {
		t.Fatal(err)
	}
	if names, _, _ := vcsimSnapshots(t, e, s.UUID); len(names) != 0 {
		t.Fatalf("tree after deleting both = %v", names)
	}

	// A retried create reattaches to the task the first attempt started
	// (saved before it waited) instead of taking a second snapshot.
	var saved map[string]string
	cctx, cancel := context.WithCancel(ctx)
	tasks := hypervisor.NewTasks(nil, func(m map[string]string) {
		if len(m) > 0 {
			saved = m
			cancel()
		}
	}, nil)
	_, err = e.drv.CreateVMSnapshot(hypervisor.WithTasks(cctx, tasks), h, ref, hypervisor.VMSnapshotSpec{Name: "snap-3"})
	cancel()
	if len(saved) != 1 {
		t.Fatalf("first attempt saved %v (err %v), want the create task", saved, err)
	}
	s3, err := e.drv.CreateVMSnapshot(hypervisor.WithTasks(ctx, hypervisor.NewTasks(saved, nil, nil)), h, ref, hypervisor.VMSnapshotSpec{Name: "snap-3"})
	if err != nil || s3.Name != "snap-3" {
		t.Fatalf("retried CreateVMSnapshot = %+v, %v", s3, err)
	}
	if names, _, _ := vcsimSnapshots(t, e, s.UUID); len(names) != 1 || names[0] != "snap-3" {
		t.Fatalf("tree after a retried create = %v, want one snap-3", names)
	}

	// Destroying the VM consolidates its snapshots first; its disk stays.
	if err := e.drv.DestroyVM(ctx, h, ref); err != nil {
		t.Fatalf("DestroyVM with a snapshot: %v", err)
	}
	if _, err := e.drv.VMState(ctx, h, ref); !errors.Is(err, hypervisor.ErrNotFound) {
		t.Fatalf("VM still there after DestroyVM: %v", err)
	}
	if _, err := e.pools.VolumeInfo(ctx, e.ds0, root.Path); err != nil {
		t.Fatalf("the root disk after DestroyVM: %v", err)
	}
	if err := e.drv.DeleteVMSnapshot(ctx, h, ref, "snap-3"); err != nil {
		t.Fatalf("DeleteVMSnapshot of a destroyed VM: %v", err)
	}
}
