package models

import (
	"time"

	"github.com/uptrace/bun"
)

// Primary storage scopes.
const (
	ScopeHost    = "HOST"
	ScopeCluster = "CLUSTER"
	ScopeZone    = "ZONE"
	ScopeRegion  = "REGION"
)

// Primary storage pool types (CloudStack's StoragePoolType names).
const (
	PoolNetworkFilesystem = "NetworkFilesystem"
	PoolFilesystem        = "Filesystem"
	PoolRBD               = "RBD"
	PoolIscsi             = "Iscsi"
	PoolSharedMountPoint  = "SharedMountPoint"
	PoolVMFS              = "VMFS"
	PoolPreSetup          = "PreSetup"
	PoolSMB               = "SMB"
	PoolCLVM              = "CLVM"
)

// Storage pool states (CloudStack's storage_pool.status).
const (
	PoolInitialized                  = "Initialized"
	PoolUp                           = "Up"
	PoolDown                         = "Down"
	PoolDisabled                     = "Disabled"
	PoolPrepareForMaintenance        = "PrepareForMaintenance"
	PoolErrorInMaintenance           = "ErrorInMaintenance"
	PoolCancelMaintenance            = "CancelMaintenance"
	PoolMaintenance                  = "Maintenance"
	PoolRemoved                      = "Removed"
	PoolErrorInPrepareForMaintenance = "ErrorInPrepareForMaintenance"
)

// StoragePool is primary storage: where VM disks live. Cluster-scoped pools
// have PodID and ClusterID; zone-wide pools leave them NULL; local storage
// is a HOST-scoped pool of one host. Allocated bytes are what volumes on it
// may grow to (thin provisioning), used bytes what the backend reports.
type StoragePool struct {
	bun.BaseModel   `bun:"table:storage_pools"`
	ID              int64     `bun:"id,pk,autoincrement"`
	UUID            string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name            string    `bun:"name,notnull"`
	PoolType        string    `bun:"pool_type,notnull"` // NetworkFilesystem, RBD, ...
	Scope           string    `bun:"scope,notnull"`     // CLUSTER, ZONE, HOST
	HypervisorType  string    `bun:"hypervisor,notnull"`
	HostAddress     string    `bun:"host_address"`
	Path            string    `bun:"path,type:text"`
	Port            int       `bun:"port,notnull"`
	URL             string    `bun:"url,type:text"`
	UserInfo        string    `bun:"user_info,type:text"` // e.g. RBD user:secret, encrypted by the caller
	StorageProvider string    `bun:"storage_provider_name"`
	Managed         bool      `bun:"managed,notnull"`
	CapacityBytes   int64     `bun:"capacity_bytes,notnull"`
	UsedBytes       int64     `bun:"used_bytes,notnull"`
	AllocatedBytes  int64     `bun:"allocated_bytes,notnull"`
	CapacityIOPS    int64     `bun:"capacity_iops,notnull"`
	State           string    `bun:"state,notnull"` // Up, Maintenance, ...
	ZoneID          int64     `bun:"zone_id,notnull"`
	PodID           int64     `bun:"pod_id,nullzero"`
	ClusterID       int64     `bun:"cluster_id,nullzero"`
	HostID          int64     `bun:"host_id,nullzero"` // the one host of a HOST-scoped (local) pool
	UpdateCount     int64     `bun:"update_count,notnull"`
	Created         time.Time `bun:"created,notnull"`
	Updated         time.Time `bun:"update_time,nullzero"`
	Removed         time.Time `bun:"removed,soft_delete,nullzero"`
}

// StoragePoolTag is one tag of a primary pool; disk offerings with tags only
// land on pools carrying them all.
type StoragePoolTag struct {
	bun.BaseModel `bun:"table:storage_pool_tags"`
	ID            int64  `bun:"id,pk,autoincrement"`
	PoolID        int64  `bun:"pool_id,notnull"`
	Tag           string `bun:"tag,notnull"`
	IsTagARule    bool   `bun:"is_tag_a_rule,notnull"`
}

// Image store providers and roles.
const (
	ImageProviderNFS   = "NFS"
	ImageProviderS3    = "S3"
	ImageProviderSwift = "Swift"

	ImageRoleImage      = "Image"
	ImageRoleImageCache = "ImageCache" // NFS staging in front of S3/Swift
)

// ImageStore is secondary storage: templates, ISOs and snapshots. ZoneID is
// NULL for a region-wide store (S3, Swift). Provider-specific settings
// (bucket, endpoint, keys) are ImageStoreDetail rows.
type ImageStore struct {
	bun.BaseModel `bun:"table:image_stores"`
	ID            int64     `bun:"id,pk,autoincrement"`
	UUID          string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name          string    `bun:"name,notnull"`
	Protocol      string    `bun:"protocol"` // nfs, http, https
	URL           string    `bun:"url,type:text"`
	ProviderName  string    `bun:"image_provider_name,notnull"` // NFS, S3, Swift
	Role          string    `bun:"role,notnull"`                // Image, ImageCache
	Scope         string    `bun:"scope,notnull"`               // ZONE, REGION
	ZoneID        int64     `bun:"zone_id,nullzero"`
	TotalSize     int64     `bun:"total_size,notnull"`
	UsedBytes     int64     `bun:"used_bytes,notnull"`
	ReadOnly      bool      `bun:"readonly,notnull"`
	Created       time.Time `bun:"created,notnull"`
	Removed       time.Time `bun:"removed,soft_delete,nullzero"`
}

// ImageStoreDetail is one key/value setting of an image store (S3 bucket,
// endpoint, access key, secret key encrypted by the caller...).
type ImageStoreDetail struct {
	bun.BaseModel `bun:"table:image_store_details"`
	ID            int64  `bun:"id,pk,autoincrement"`
	StoreID       int64  `bun:"store_id,notnull"`
	Name          string `bun:"name,notnull"`
	Value         string `bun:"value,type:text"`
	Display       bool   `bun:"display,notnull"`
}

// Volume types.
const (
	VolumeRoot     = "ROOT"
	VolumeDataDisk = "DATADISK"
)

// Volume states.
const (
	VolumeAllocated    = "Allocated"
	VolumeCreating     = "Creating"
	VolumeReady        = "Ready"
	VolumeMigrating    = "Migrating"
	VolumeResizing     = "Resizing"
	VolumeSnapshotting = "Snapshotting"
	VolumeUploaded     = "Uploaded"
	VolumeDestroy      = "Destroy"
	VolumeExpunging    = "Expunging"
	VolumeExpunged     = "Expunged"
	VolumeError        = "Error"
)

// Volume is a VM disk. A volume in Allocated has no PoolID yet; it gets one
// when the planner places it and the driver creates it. InstanceID is NULL
// for a detached data disk.
type Volume struct {
	bun.BaseModel    `bun:"table:volumes"`
	ID               int64     `bun:"id,pk,autoincrement"`
	UUID             string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name             string    `bun:"name,notnull"`
	VolumeType       string    `bun:"volume_type,notnull"` // ROOT, DATADISK
	State            string    `bun:"state,notnull"`
	Size             int64     `bun:"size,notnull"` // bytes
	Format           string    `bun:"format"`       // QCOW2, RAW, VHD, OVA
	Path             string    `bun:"path,type:text"`
	ChainInfo        string    `bun:"chain_info,type:text"`
	PoolID           int64     `bun:"pool_id,nullzero"`
	LastPoolID       int64     `bun:"last_pool_id,nullzero"`
	InstanceID       int64     `bun:"instance_id,nullzero"`
	DeviceID         int64     `bun:"device_id,nullzero"`
	DiskOfferingID   int64     `bun:"disk_offering_id,nullzero"`
	TemplateID       int64     `bun:"template_id,nullzero"`
	ZoneID           int64     `bun:"zone_id,notnull"`
	PodID            int64     `bun:"pod_id,nullzero"`
	AccountID        int64     `bun:"account_id,notnull"`
	DomainID         int64     `bun:"domain_id,notnull"`
	ProvisioningType string    `bun:"provisioning_type"` // thin, sparse, fat
	MinIOPS          int64     `bun:"min_iops,nullzero"`
	MaxIOPS          int64     `bun:"max_iops,nullzero"`
	DisplayVolume    bool      `bun:"display_volume,notnull"`
	UpdateCount      int64     `bun:"update_count,notnull"`
	Attached         time.Time `bun:"attached,nullzero"`
	Created          time.Time `bun:"created,notnull"`
	Updated          time.Time `bun:"updated,nullzero"`
	Removed          time.Time `bun:"removed,soft_delete,nullzero"`
}

// Snapshot types (CloudStack's snapshot type descriptions).
const (
	SnapshotManual  = "MANUAL"
	SnapshotHourly  = "HOURLY"
	SnapshotDaily   = "DAILY"
	SnapshotWeekly  = "WEEKLY"
	SnapshotMonthly = "MONTHLY"
)

// Snapshot states.
const (
	SnapshotAllocated        = "Allocated"
	SnapshotCreating         = "Creating"
	SnapshotCreatedOnPrimary = "CreatedOnPrimary"
	SnapshotBackingUp        = "BackingUp"
	SnapshotBackedUp         = "BackedUp"
	SnapshotCopying          = "Copying"
	SnapshotDestroying       = "Destroying"
	SnapshotDestroyed        = "Destroyed"
	SnapshotError            = "Error"
)

// Snapshot is a point-in-time copy of a volume; where its bits are (primary
// and/or secondary) is in SnapshotStoreRef rows.
type Snapshot struct {
	bun.BaseModel  `bun:"table:snapshots"`
	ID             int64     `bun:"id,pk,autoincrement"`
	UUID           string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name           string    `bun:"name,notnull"`
	VolumeID       int64     `bun:"volume_id,notnull"`
	SnapshotType   string    `bun:"snapshot_type,notnull"` // MANUAL, HOURLY, ...
	State          string    `bun:"state,notnull"`
	Size           int64     `bun:"size,notnull"`          // virtual size, bytes
	PhysicalSize   int64     `bun:"physical_size,notnull"` // bytes on the store
	HypervisorType string    `bun:"hypervisor_type"`
	PolicyID       int64     `bun:"policy_id,nullzero"` // the policy that took it
	DiskOfferingID int64     `bun:"disk_offering_id,nullzero"`
	ZoneID         int64     `bun:"zone_id,notnull"`
	AccountID      int64     `bun:"account_id,notnull"`
	DomainID       int64     `bun:"domain_id,notnull"`
	Created        time.Time `bun:"created,notnull"`
	Removed        time.Time `bun:"removed,soft_delete,nullzero"`
}

// Data store roles of a snapshot copy.
const (
	StoreRolePrimary = "Primary"
	StoreRoleImage   = "Image"
)

// SnapshotStoreRef is one copy of a snapshot: on a primary pool (StoreRole
// Primary, StoreID = pool id) or on an image store (Image, StoreID = store id).
type SnapshotStoreRef struct {
	bun.BaseModel    `bun:"table:snapshot_store_refs"`
	ID               int64     `bun:"id,pk,autoincrement"`
	StoreID          int64     `bun:"store_id,notnull"`
	StoreRole        string    `bun:"store_role,notnull"`
	SnapshotID       int64     `bun:"snapshot_id,notnull"`
	VolumeID         int64     `bun:"volume_id,notnull"`
	ParentSnapshotID int64     `bun:"parent_snapshot_id,nullzero"` // for incremental chains
	ZoneID           int64     `bun:"zone_id,nullzero"`
	State            string    `bun:"state,notnull"`
	InstallPath      string    `bun:"install_path,type:text"`
	DownloadPct      int       `bun:"download_pct,notnull"`
	ErrorStr         string    `bun:"error_str,type:text"`
	Size             int64     `bun:"size,notnull"`
	PhysicalSize     int64     `bun:"physical_size,notnull"`
	UpdateCount      int64     `bun:"update_count,notnull"`
	Created          time.Time `bun:"created,notnull"`
	LastUpdated      time.Time `bun:"last_updated,nullzero"`
}

// SnapshotPolicy takes recurring snapshots of a volume (a Temporal Schedule
// runs it); MaxSnaps of that interval are kept.
type SnapshotPolicy struct {
	bun.BaseModel `bun:"table:snapshot_policies"`
	ID            int64  `bun:"id,pk,autoincrement"`
	UUID          string `bun:"uuid,notnull,unique,type:varchar(40)"`
	VolumeID      int64  `bun:"volume_id,notnull"`
	// IntervalType is HOURLY, DAILY, WEEKLY or MONTHLY (CloudStack's column
	// "interval" is a reserved word in MySQL).
	IntervalType string    `bun:"interval_type,notnull"`
	Schedule     string    `bun:"schedule,notnull"` // "MM", "MM:HH", "MM:HH:DD" as CloudStack
	Timezone     string    `bun:"timezone,notnull"`
	MaxSnaps     int       `bun:"max_snaps,notnull"`
	Active       bool      `bun:"active,notnull"`
	Display      bool      `bun:"display,notnull"`
	AccountID    int64     `bun:"account_id,notnull"`
	DomainID     int64     `bun:"domain_id,notnull"`
	Created      time.Time `bun:"created,notnull"`
}

// StoragePoolWork records a VM that enabling maintenance on a primary pool
// stopped, so that cancelStorageMaintenance starts it again (CloudStack's
// storage_pool_work). Rows go when the maintenance is cancelled.
type StoragePoolWork struct {
	bun.BaseModel `bun:"table:storage_pool_work"`
	ID            int64     `bun:"id,pk,autoincrement"`
	PoolID        int64     `bun:"pool_id,notnull"`
	VMID          int64     `bun:"vm_id,notnull"`
	Created       time.Time `bun:"created,notnull"`
}

// PoolOrphan is a disk the reconciler found on a primary pool with no
// volume row and no template copy row: reported once, when a second scan
// still finds it so (a disk being created is not reported), and deleted
// after storage.orphan.cleanup.delay seconds when that setting is above 0.
// The row goes when the disk does (or when a row claims it again).
type PoolOrphan struct {
	bun.BaseModel `bun:"table:pool_orphans"`
	ID            int64     `bun:"id,pk,autoincrement"`
	PoolID        int64     `bun:"pool_id,notnull"`
	Path          string    `bun:"path,notnull,type:varchar(255)"`
	SizeBytes     int64     `bun:"size_bytes,notnull"`
	FirstSeen     time.Time `bun:"first_seen,notnull"`
	LastSeen      time.Time `bun:"last_seen,notnull"`
	Reported      bool      `bun:"reported,notnull"`
}
