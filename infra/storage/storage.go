// Package storage is the driver layer for CloudStack's two kinds of
// storage: primary storage pools, where VM disks live (PoolDriver, one per
// hypervisor family, since pools are reached through the hypervisor: libvirt
// pools for KVM/LXC/Xen Project, datastores for vSphere, the simulator's
// pools for Simulator), and secondary storage, the image stores holding
// templates, ISOs and snapshot backups (ImageStoreDriver, one per provider:
// NFS, S3, Swift, SMB).
//
// Drivers know nothing of the inventory DB, Temporal or the API. Calls carry
// descriptors (Pool, ImageStore) with everything needed to reach the
// storage, so any worker can serve any call. Errors wrap the shared kinds
// of package hypervisor (ErrNotFound, ErrNotSupported, ErrUnreachable,
// ErrInvalid, ErrCapacity), re-exported here.
package storage

import (
	"context"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// Error kinds, shared with the hypervisor and BMC drivers.
var (
	ErrNotFound     = hypervisor.ErrNotFound
	ErrNotSupported = hypervisor.ErrNotSupported
	ErrUnreachable  = hypervisor.ErrUnreachable
	ErrInvalid      = hypervisor.ErrInvalid
	ErrCapacity     = hypervisor.ErrCapacity
)

// PoolDriver manages primary storage pools for one hypervisor family.
// Volumes and snapshots are named by their path in the pool, their stable
// identity; creating what exists with the same identity and deleting what
// is gone succeed. Implementations are safe for concurrent use and embed
// UnsupportedPool.
type PoolDriver interface {
	// Type is the canonical hypervisor type the driver serves.
	Type() string

	// CreatePool prepares a new pool (checks the backend answers, creates
	// its directory...) and reports its capacity.
	CreatePool(ctx context.Context, p Pool) (PoolStats, error)
	// ConnectPool makes the pool usable on a host (defines and starts a
	// libvirt pool, mounts NFS); every host of the pool's scope needs it.
	ConnectPool(ctx context.Context, p Pool, h hypervisor.Host) error
	// DisconnectPool undoes ConnectPool on a host.
	DisconnectPool(ctx context.Context, p Pool, h hypervisor.Host) error
	// DeletePool removes the pool; it must hold no volumes.
	DeletePool(ctx context.Context, p Pool) error
	// PoolCapacity reports the pool's capacity and use.
	PoolCapacity(ctx context.Context, p Pool) (PoolStats, error)

	// CreateVolume creates a blank volume.
	CreateVolume(ctx context.Context, p Pool, v VolumeSpec) (Volume, error)
	// CreateVolumeFromTemplate clones (or overlays) a template already in
	// the pool (see CopyTemplateToPool) into a new volume.
	CreateVolumeFromTemplate(ctx context.Context, p Pool, templatePath string, v VolumeSpec) (Volume, error)
	// ResizeVolume grows (or, where allowed, shrinks) a volume.
	ResizeVolume(ctx context.Context, p Pool, path string, sizeBytes int64) (Volume, error)
	// DeleteVolume deletes a volume and its snapshots on the pool.
	DeleteVolume(ctx context.Context, p Pool, path string) error
	// VolumeInfo reports one volume.
	VolumeInfo(ctx context.Context, p Pool, path string) (Volume, error)
	// ListVolumes reports every volume and template copy in the pool, for
	// reconciliation.
	ListVolumes(ctx context.Context, p Pool) ([]Volume, error)
	// CopyVolume copies a volume to another pool (migrateVolume of a
	// stopped VM's disk); the source stays.
	CopyVolume(ctx context.Context, src Pool, path string, dst Pool, v VolumeSpec, progress ProgressFunc) (Volume, error)
	// MigrateVolumeLive moves the disk at path of a running VM to pool dst
	// while the VM keeps using it: the hypervisor on host h, where vm runs,
	// mirrors the disk into the new volume and switches the VM to it (a
	// libvirt block copy and pivot). The source stays until the caller
	// deletes it; the copy has v's path (the source's when v.Path is
	// empty), so a retry finds it. Drivers whose hypervisor cannot do it
	// keep UnsupportedPool's (ErrNotSupported), and migrateVolume then
	// asks for the VM to be stopped.
	MigrateVolumeLive(ctx context.Context, src Pool, path string, dst Pool, v VolumeSpec, h hypervisor.Host, vm hypervisor.VMRef, progress ProgressFunc) (Volume, error)

	// CopyTemplateToPool copies a template from secondary storage into the
	// pool once; later calls find it there. The result is a volume of kind
	// template whose path CreateVolumeFromTemplate takes.
	CopyTemplateToPool(ctx context.Context, t Template, p Pool, progress ProgressFunc) (Volume, error)

	// SnapshotVolume takes a snapshot of a volume on the pool.
	SnapshotVolume(ctx context.Context, p Pool, path string, s SnapshotSpec) (Snapshot, error)
	// BackupSnapshot copies a snapshot to secondary storage.
	BackupSnapshot(ctx context.Context, p Pool, path, snapshotID string, dst Location, progress ProgressFunc) (Image, error)
	// RevertSnapshot puts a volume back to a snapshot on the pool.
	RevertSnapshot(ctx context.Context, p Pool, path, snapshotID string) error
	// DeleteSnapshot deletes a snapshot on the pool (not its backup).
	DeleteSnapshot(ctx context.Context, p Pool, path, snapshotID string) error
	// CreateVolumeFromImage creates a volume from a snapshot backup (or any
	// disk image) on secondary storage.
	CreateVolumeFromImage(ctx context.Context, src Location, p Pool, v VolumeSpec, progress ProgressFunc) (Volume, error)
	// ExportVolume copies a volume to secondary storage (createTemplate
	// from a volume).
	ExportVolume(ctx context.Context, p Pool, path string, dst Location, progress ProgressFunc) (Image, error)

	// Close releases connections and files.
	Close() error
}

// ImageStoreDriver manages secondary storage of one provider. Paths are
// relative to the store's root, e.g. template/tmpl/2/201/<uuid>.qcow2.
type ImageStoreDriver interface {
	// Provider is the canonical provider name (NFS, S3, ...).
	Provider() string
	// DownloadTemplate fetches an HTTP(S) URL into the store, verifying
	// its checksum, reporting progress, retrying transient failures a
	// bounded number of times (then ErrUnreachable). A failed download
	// leaves nothing at the path; an image already there with the right
	// checksum is success without downloading.
	DownloadTemplate(ctx context.Context, s ImageStore, req DownloadRequest, progress ProgressFunc) (Image, error)
	// Stat reports a stored image; ErrNotFound when absent.
	Stat(ctx context.Context, s ImageStore, path string) (Image, error)
	// Delete removes an image (a file or a directory of files); a missing
	// one is success.
	Delete(ctx context.Context, s ImageStore, path string) error
	// Capacity reports the store's size and use.
	Capacity(ctx context.Context, s ImageStore) (StoreStats, error)
	// Close releases connections.
	Close() error
}

// Pool describes a primary storage pool.
type Pool struct {
	ID            string // inventory UUID
	Name          string
	Type          string // CloudStack pool type: NetworkFilesystem, Filesystem, RBD, Iscsi, SharedMountPoint, VMFS, PreSetup, SMB, CLVM
	URL           string // nfs://server/export, rbd://mon/pool, file:///dir, iscsi://target/iqn/lun
	Username      string // e.g. the RBD user and its secret
	Password      string
	CapacityBytes int64  // declared by the admin; 0 = as the backend reports
	ZoneID        string // scope: zone-wide pools leave ClusterID empty,
	PodID         string // host-scoped (local) pools set HostID
	ClusterID     string
	HostID        string
	Details       map[string]string
	// Via is the host to act through for drivers that reach pools through a
	// hypervisor (libvirt); nil for drivers that reach the storage directly.
	Via *hypervisor.Host
}

// PoolStats is a pool's capacity and use, in bytes.
type PoolStats struct {
	CapacityBytes  int64
	UsedBytes      int64 // physically used
	AvailableBytes int64
	AllocatedBytes int64 // sum of volumes' virtual sizes (thin provisioning may exceed capacity)
}

// VolumeSpec describes a volume to create.
type VolumeSpec struct {
	ID           string // inventory UUID
	Path         string // path in the pool; "" = ID
	SizeBytes    int64  // virtual size; for a template clone, 0 = the template's size
	Format       string // qcow2, raw, vmdk, vhd; "" = the driver's default
	Provisioning string // thin, sparse, fat; "" = thin
}

// Volume is a volume (or a template copy) as the pool sees it.
type Volume struct {
	Path           string
	Pool           string // pool ID
	Format         string
	SizeBytes      int64  // virtual size
	AllocatedBytes int64  // physical size
	BackingPath    string // the template a clone or overlay depends on
	Template       bool   // a template copy, not a disk
}

// Template is a template or ISO on secondary storage, to copy to a pool.
type Template struct {
	ID        string // inventory UUID: names the copy in the pool
	Source    Location
	Format    string // qcow2, raw, vmdk, vhd, iso
	SizeBytes int64  // virtual size when known
	// URL is where the template comes from when that is not secondary
	// storage: a vsphere:// template or VM the pool's vCenter clones.
	URL string
}

// SnapshotSpec describes a snapshot to take.
type SnapshotSpec struct {
	ID   string // inventory UUID: the snapshot's identity on the pool
	Name string
}

// Snapshot is a volume snapshot on primary storage.
type Snapshot struct {
	ID         string
	VolumePath string
	Path       string // where the driver keeps it (file, internal name)
	SizeBytes  int64
	Created    time.Time
}

// Location is a place on secondary storage.
type Location struct {
	Store ImageStore
	Path  string // relative to the store's root
}

// ImageStore describes a secondary storage store.
type ImageStore struct {
	ID       string // inventory UUID
	Name     string
	Provider string            // NFS, S3, Swift, SMB
	URL      string            // nfs://server/export, file:///dir, https://s3.example.com
	Details  map[string]string // bucket, endpoint, access key, secret key...
}

// DownloadRequest says what to download where.
type DownloadRequest struct {
	URL      string // http:// or https://
	Path     string // destination, relative to the store's root
	Checksum string // CloudStack form ({SHA-256}hex, {MD5}hex...) or plain hex; "" = none
	MaxBytes int64  // refuse bigger images; 0 = no limit
	Format   string // the registered format (QCOW2, RAW...), checked by CheckImageFormat; "" = unchecked
}

// Image is a file on secondary storage.
type Image struct {
	Path             string
	SizeBytes        int64
	Checksum         string // {ALGO}hex of the stored bytes, when computed
	VirtualSizeBytes int64  // the disk size a guest sees, when read (a qcow2's header)
}

// StoreStats is an image store's size and use, in bytes.
type StoreStats struct {
	TotalBytes     int64
	UsedBytes      int64
	AvailableBytes int64
}

// Progress of a long copy. Total is -1 when unknown.
type Progress struct {
	Done  int64
	Total int64
}

// Percent is Done/Total in percent, or -1 when Total is unknown.
func (p Progress) Percent() int {
	if p.Total <= 0 {
		return -1
	}
	return int(min(100, p.Done*100/p.Total))
}

// ProgressFunc receives progress reports; drivers call it from the
// calling goroutine, at most every few hundred milliseconds and at the end.
// It may be nil.
type ProgressFunc func(Progress)

// Report calls f when it is not nil.
func (f ProgressFunc) Report(done, total int64) {
	if f != nil {
		f(Progress{Done: done, Total: total})
	}
}

// Config is what driver factories get.
type Config struct {
	DataDir string            // where the driver may keep state (the simulator's data)
	Options map[string]string // driver-specific settings
}
