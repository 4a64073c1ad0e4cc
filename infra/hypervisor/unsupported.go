package hypervisor

import "context"

// Unsupported is the base every driver embeds: each Driver method (but Type)
// fails with ErrNotSupported naming the operation and the driver, so a driver
// implements only what its hypervisor can do and methods added to Driver
// later do not break it.
type Unsupported struct {
	DriverName string // used in the errors, e.g. "VMware"
}

func (u Unsupported) unsupported(op string) error {
	return &OpError{Driver: u.DriverName, Op: op, Kind: ErrNotSupported}
}

// ConnectHost is not supported.
func (u Unsupported) ConnectHost(context.Context, Host) (HostInfo, error) {
	return HostInfo{}, u.unsupported("ConnectHost")
}

// DiscoverHosts is not supported.
func (u Unsupported) DiscoverHosts(context.Context, Cluster) ([]Host, error) {
	return nil, u.unsupported("DiscoverHosts")
}

// CheckHost is not supported.
func (u Unsupported) CheckHost(context.Context, Host) (HostStats, error) {
	return HostStats{}, u.unsupported("CheckHost")
}

// DisconnectHost is not supported.
func (u Unsupported) DisconnectHost(context.Context, Host) error {
	return u.unsupported("DisconnectHost")
}

// DefineVM is not supported.
func (u Unsupported) DefineVM(context.Context, Host, VMSpec) (VMInfo, error) {
	return VMInfo{}, u.unsupported("DefineVM")
}

// StartVM is not supported.
func (u Unsupported) StartVM(context.Context, Host, VMRef) error {
	return u.unsupported("StartVM")
}

// StopVM is not supported.
func (u Unsupported) StopVM(context.Context, Host, VMRef, StopOptions) error {
	return u.unsupported("StopVM")
}

// RebootVM is not supported.
func (u Unsupported) RebootVM(context.Context, Host, VMRef) error {
	return u.unsupported("RebootVM")
}

// DestroyVM is not supported.
func (u Unsupported) DestroyVM(context.Context, Host, VMRef) error {
	return u.unsupported("DestroyVM")
}

// VMState is not supported.
func (u Unsupported) VMState(context.Context, Host, VMRef) (VMInfo, error) {
	return VMInfo{}, u.unsupported("VMState")
}

// ListVMs is not supported.
func (u Unsupported) ListVMs(context.Context, Host) ([]VMInfo, error) {
	return nil, u.unsupported("ListVMs")
}

// MigrateVM is not supported.
func (u Unsupported) MigrateVM(context.Context, Host, VMRef, Host, MigrateOptions) error {
	return u.unsupported("MigrateVM")
}

// ChangeMedia is not supported.
func (u Unsupported) ChangeMedia(context.Context, Host, VMRef, Disk) error {
	return u.unsupported("ChangeMedia")
}

// AttachVolume is not supported.
func (u Unsupported) AttachVolume(context.Context, Host, VMRef, Disk) error {
	return u.unsupported("AttachVolume")
}

// DetachVolume is not supported.
func (u Unsupported) DetachVolume(context.Context, Host, VMRef, Disk) error {
	return u.unsupported("DetachVolume")
}

// ResizeVM is not supported.
func (u Unsupported) ResizeVM(context.Context, Host, VMRef, Resize) error {
	return u.unsupported("ResizeVM")
}

// ConsoleEndpoint is not supported.
func (u Unsupported) ConsoleEndpoint(context.Context, Host, VMRef) (Console, error) {
	return Console{}, u.unsupported("ConsoleEndpoint")
}

// WatchVMs is not supported.
func (u Unsupported) WatchVMs(context.Context, Host) (<-chan VMEvent, error) {
	return nil, u.unsupported("WatchVMs")
}

// Close has nothing to release.
func (u Unsupported) Close() error { return nil }
