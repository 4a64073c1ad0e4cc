package models

import (
	"time"

	"github.com/uptrace/bun"
)

// VM snapshot states (CloudStack's VMSnapshot.State).
const (
	VMSnapshotAllocated = "Allocated"
	VMSnapshotCreating  = "Creating"
	VMSnapshotReady     = "Ready"
	VMSnapshotReverting = "Reverting"
	VMSnapshotExpunging = "Expunging"
	VMSnapshotError     = "Error"
)

// VM snapshot types.
const (
	VMSnapshotDisk          = "Disk"
	VMSnapshotDiskAndMemory = "DiskAndMemory"
)

// VMSnapshot is a snapshot of a whole VM (all its disks, and its memory
// for DiskAndMemory) that the hypervisor keeps with the VM. Each VM's
// snapshots form a tree (ParentID); Current marks the one the VM runs from.
// Name is the internal name (<instance name>_VS_<time>), DisplayName the
// user's; on the hypervisor the snapshot is named by its UUID.
type VMSnapshot struct {
	bun.BaseModel  `bun:"table:vm_snapshots"`
	ID             int64     `bun:"id,pk,autoincrement"`
	UUID           string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name           string    `bun:"name,notnull"`
	DisplayName    string    `bun:"display_name,notnull"`
	Description    string    `bun:"description,type:varchar(4096)"`
	VMID           int64     `bun:"vm_id,notnull"`
	Type           string    `bun:"snapshot_type,notnull"` // Disk, DiskAndMemory
	State          string    `bun:"state,notnull"`
	Current        bool      `bun:"current,notnull"`
	ParentID       int64     `bun:"parent_id,nullzero"`
	Quiesce        bool      `bun:"quiesce,notnull"`
	HypervisorType string    `bun:"hypervisor_type"`
	HostID         int64     `bun:"host_id,nullzero"` // where the VM was defined when it was taken
	Reason         string    `bun:"state_reason,type:varchar(1024)"`
	ZoneID         int64     `bun:"zone_id,notnull"`
	AccountID      int64     `bun:"account_id,notnull"`
	DomainID       int64     `bun:"domain_id,notnull"`
	Created        time.Time `bun:"created,notnull"`
	Updated        time.Time `bun:"updated,nullzero"`
	Removed        time.Time `bun:"removed,soft_delete,nullzero"`
}

// VMSnapshotLive are the states of a snapshot that still holds (or is
// making) data on the hypervisor; Expunging ones are on their way out.
var VMSnapshotLive = []string{VMSnapshotAllocated, VMSnapshotCreating, VMSnapshotReady, VMSnapshotReverting}

// VMSnapshotBusy are the states of a snapshot whose job runs: the VM takes
// no other job meanwhile.
var VMSnapshotBusy = []string{VMSnapshotAllocated, VMSnapshotCreating, VMSnapshotReverting, VMSnapshotExpunging}
