package storage

import (
	"context"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// UnsupportedPool is the base every PoolDriver embeds: each method (but
// Type) fails with ErrNotSupported naming the operation and the driver.
type UnsupportedPool struct {
	DriverName string
}

func (u UnsupportedPool) unsupported(op string) error {
	return &hypervisor.OpError{Driver: u.DriverName, Op: op, Kind: ErrNotSupported}
}

// CreatePool is not supported.
func (u UnsupportedPool) CreatePool(context.Context, Pool) (PoolStats, error) {
	return PoolStats{}, u.unsupported("CreatePool")
}

// ConnectPool is not supported.
func (u UnsupportedPool) ConnectPool(context.Context, Pool, hypervisor.Host) error {
	return u.unsupported("ConnectPool")
}

// DisconnectPool is not supported.
func (u UnsupportedPool) DisconnectPool(context.Context, Pool, hypervisor.Host) error {
	return u.unsupported("DisconnectPool")
}

// DeletePool is not supported.
func (u UnsupportedPool) DeletePool(context.Context, Pool) error { return u.unsupported("DeletePool") }

// PoolCapacity is not supported.
func (u UnsupportedPool) PoolCapacity(context.Context, Pool) (PoolStats, error) {
	return PoolStats{}, u.unsupported("PoolCapacity")
}

// CreateVolume is not supported.
func (u UnsupportedPool) CreateVolume(context.Context, Pool, VolumeSpec) (Volume, error) {
	return Volume{}, u.unsupported("CreateVolume")
}

// CreateVolumeFromTemplate is not supported.
func (u UnsupportedPool) CreateVolumeFromTemplate(context.Context, Pool, string, VolumeSpec) (Volume, error) {
	return Volume{}, u.unsupported("CreateVolumeFromTemplate")
}

// ResizeVolume is not supported.
func (u UnsupportedPool) ResizeVolume(context.Context, Pool, string, int64) (Volume, error) {
	return Volume{}, u.unsupported("ResizeVolume")
}

// DeleteVolume is not supported.
func (u UnsupportedPool) DeleteVolume(context.Context, Pool, string) error {
	return u.unsupported("DeleteVolume")
}

// VolumeInfo is not supported.
func (u UnsupportedPool) VolumeInfo(context.Context, Pool, string) (Volume, error) {
	return Volume{}, u.unsupported("VolumeInfo")
}

// ListVolumes is not supported.
func (u UnsupportedPool) ListVolumes(context.Context, Pool) ([]Volume, error) {
	return nil, u.unsupported("ListVolumes")
}

// CopyVolume is not supported.
func (u UnsupportedPool) CopyVolume(context.Context, Pool, string, Pool, VolumeSpec, ProgressFunc) (Volume, error) {
	return Volume{}, u.unsupported("CopyVolume")
}

// MigrateVolumeLive is not supported.
func (u UnsupportedPool) MigrateVolumeLive(context.Context, Pool, string, Pool, VolumeSpec, hypervisor.Host, hypervisor.VMRef, ProgressFunc) (Volume, error) {
	return Volume{}, u.unsupported("MigrateVolumeLive")
}

// CopyTemplateToPool is not supported.
func (u UnsupportedPool) CopyTemplateToPool(context.Context, Template, Pool, ProgressFunc) (Volume, error) {
	return Volume{}, u.unsupported("CopyTemplateToPool")
}

// SnapshotVolume is not supported.
func (u UnsupportedPool) SnapshotVolume(context.Context, Pool, string, SnapshotSpec) (Snapshot, error) {
	return Snapshot{}, u.unsupported("SnapshotVolume")
}

// BackupSnapshot is not supported.
func (u UnsupportedPool) BackupSnapshot(context.Context, Pool, string, string, Location, ProgressFunc) (Image, error) {
	return Image{}, u.unsupported("BackupSnapshot")
}

// RevertSnapshot is not supported.
func (u UnsupportedPool) RevertSnapshot(context.Context, Pool, string, string) error {
	return u.unsupported("RevertSnapshot")
}

// DeleteSnapshot is not supported.
func (u UnsupportedPool) DeleteSnapshot(context.Context, Pool, string, string) error {
	return u.unsupported("DeleteSnapshot")
}

// CreateVolumeFromImage is not supported.
func (u UnsupportedPool) CreateVolumeFromImage(context.Context, Location, Pool, VolumeSpec, ProgressFunc) (Volume, error) {
	return Volume{}, u.unsupported("CreateVolumeFromImage")
}

// ExportVolume is not supported.
func (u UnsupportedPool) ExportVolume(context.Context, Pool, string, Location, ProgressFunc) (Image, error) {
	return Image{}, u.unsupported("ExportVolume")
}

// Close has nothing to release.
func (u UnsupportedPool) Close() error { return nil }

// UnsupportedImageStore is the base every ImageStoreDriver embeds.
type UnsupportedImageStore struct {
	DriverName string
}

func (u UnsupportedImageStore) unsupported(op string) error {
	return &hypervisor.OpError{Driver: u.DriverName, Op: op, Kind: ErrNotSupported}
}

// DownloadTemplate is not supported.
func (u UnsupportedImageStore) DownloadTemplate(context.Context, ImageStore, DownloadRequest, ProgressFunc) (Image, error) {
	return Image{}, u.unsupported("DownloadTemplate")
}

// Stat is not supported.
func (u UnsupportedImageStore) Stat(context.Context, ImageStore, string) (Image, error) {
	return Image{}, u.unsupported("Stat")
}

// Delete is not supported.
func (u UnsupportedImageStore) Delete(context.Context, ImageStore, string) error {
	return u.unsupported("Delete")
}

// Capacity is not supported.
func (u UnsupportedImageStore) Capacity(context.Context, ImageStore) (StoreStats, error) {
	return StoreStats{}, u.unsupported("Capacity")
}

// Close has nothing to release.
func (u UnsupportedImageStore) Close() error { return nil }
