package hypervisor

import "context"

// VMSnapshots is what a driver does with VM snapshots: point-in-time
// copies of all of a VM's disks, and of its memory when asked, kept by the
// hypervisor with the VM (vSphere's snapshot tree, libvirt's internal qcow2
// snapshots). A snapshot is named by VMSnapshotSpec.Name, which Nimbus sets
// to the inventory UUID, so every call is idempotent by that name: creating
// one that exists answers it, deleting a missing one succeeds.
type VMSnapshots interface {
	// CreateVMSnapshot takes a snapshot of a defined VM. Memory needs the
	// VM running; it becomes the VM's current snapshot.
	CreateVMSnapshot(ctx context.Context, h Host, vm VMRef, s VMSnapshotSpec) (VMSnapshotInfo, error)
	// RevertVMSnapshot returns the VM to the snapshot s.Name and answers
	// its power state after: Running for a snapshot with memory (s.Memory,
	// as the inventory recorded it), Stopped without.
	RevertVMSnapshot(ctx context.Context, h Host, vm VMRef, s VMSnapshotSpec) (State, error)
	// DeleteVMSnapshot removes one snapshot (its data merges into its
	// children or the VM's current disks); a missing one is success.
	DeleteVMSnapshot(ctx context.Context, h Host, vm VMRef, name string) error
	// ListVMSnapshots lists the VM's snapshots, parents before children.
	ListVMSnapshots(ctx context.Context, h Host, vm VMRef) ([]VMSnapshotInfo, error)
}

// VMSnapshotSpec asks for a VM snapshot.
type VMSnapshotSpec struct {
	Name        string // identity on the hypervisor (the inventory UUID)
	DisplayName string
	Description string
	Memory      bool // with the guest's memory (a running VM)
	Quiesce     bool // quiesce the guest's file systems (needs guest tools or agent)
}

// VMSnapshotInfo is a VM snapshot as the hypervisor sees it.
type VMSnapshotInfo struct {
	Name    string
	Parent  string // name of the parent snapshot, "" for a root
	Memory  bool
	Current bool   // the VM runs from this snapshot's state
	Ref     string // the hypervisor's own handle (vSphere managed object id)
}

// CreateVMSnapshot is not supported.
func (u Unsupported) CreateVMSnapshot(context.Context, Host, VMRef, VMSnapshotSpec) (VMSnapshotInfo, error) {
	return VMSnapshotInfo{}, u.unsupported("CreateVMSnapshot")
}

// RevertVMSnapshot is not supported.
func (u Unsupported) RevertVMSnapshot(context.Context, Host, VMRef, VMSnapshotSpec) (State, error) {
	return StateUnknown, u.unsupported("RevertVMSnapshot")
}

// DeleteVMSnapshot is not supported.
func (u Unsupported) DeleteVMSnapshot(context.Context, Host, VMRef, string) error {
	return u.unsupported("DeleteVMSnapshot")
}

// ListVMSnapshots is not supported.
func (u Unsupported) ListVMSnapshots(context.Context, Host, VMRef) ([]VMSnapshotInfo, error) {
	return nil, u.unsupported("ListVMSnapshots")
}
