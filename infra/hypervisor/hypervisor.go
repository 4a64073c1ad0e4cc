// Package hypervisor is the driver layer between Nimbus activities and the
// hypervisors CloudStack manages: KVM, LXC and Xen Project (libvirt), VMware
// vSphere (vCenter), BareMetal (BMC + PXE), Hyper-V and XenServer (known but
// not built yet), and the in-process Simulator.
//
// Drivers know nothing of the inventory DB, Temporal or the API. Every call
// names the host it acts on with a Host value carrying the host's URL and
// credentials, so a driver needs no state from an earlier call in the same
// process (a worker that restarted, or another worker, can serve the next
// activity); drivers may cache connections keyed by Host.ID.
//
// Errors wrap one of ErrNotFound, ErrNotSupported, ErrUnreachable, ErrInvalid
// or ErrCapacity (see ErrorType) so activities can tell what to retry.
package hypervisor

import (
	"context"
	"fmt"
	"time"
)

// Driver manages the hosts and VMs of one hypervisor family. Methods are
// idempotent by identity: defining a VM that exists with the same UUID,
// starting a running VM, stopping a stopped one, destroying a missing one
// and attaching an attached disk all succeed. Implementations are safe for
// concurrent use. A driver embeds Unsupported so that what it cannot do
// fails with ErrNotSupported.
type Driver interface {
	// Type is the canonical hypervisor type the driver serves ("KVM",
	// "Simulator", ...; see Types).
	Type() string

	// ConnectHost connects to (or reconnects) a host and discovers it. It is
	// what addHost and reconnectHost call.
	ConnectHost(ctx context.Context, h Host) (HostInfo, error)
	// DiscoverHosts lists the hosts of a cluster managed elsewhere (a
	// vCenter cluster), so they are added without typing them in; each
	// returned Host is then passed to ConnectHost.
	DiscoverHosts(ctx context.Context, c Cluster) ([]Host, error)
	// CheckHost tells whether the host answers (nil error) and what it
	// runs; a host that does not answer fails with ErrUnreachable.
	CheckHost(ctx context.Context, h Host) (HostStats, error)
	// DisconnectHost releases what the driver holds for the host (cached
	// connections, event streams); the host's VMs are left as they are.
	DisconnectHost(ctx context.Context, h Host) error

	// DefineVM creates (or updates, when the UUID exists) a stopped VM.
	// A different VM already holding spec.Name on the host is ErrInvalid.
	DefineVM(ctx context.Context, h Host, spec VMSpec) (VMInfo, error)
	// StartVM powers a defined VM on.
	StartVM(ctx context.Context, h Host, vm VMRef) error
	// StopVM shuts a VM down: gracefully, then forced after opts.Timeout;
	// at once when opts.Force. The VM stays defined.
	StopVM(ctx context.Context, h Host, vm VMRef, opts StopOptions) error
	// RebootVM restarts a running VM; a stopped VM is ErrInvalid.
	RebootVM(ctx context.Context, h Host, vm VMRef) error
	// DestroyVM powers the VM off and undefines it. Its disks are left to
	// the storage driver. A missing VM is success.
	DestroyVM(ctx context.Context, h Host, vm VMRef) error
	// VMState reports one VM as the hypervisor sees it.
	VMState(ctx context.Context, h Host, vm VMRef) (VMInfo, error)
	// ListVMs reports every VM defined on the host, for reconciliation.
	ListVMs(ctx context.Context, h Host) ([]VMInfo, error)
	// MigrateVM moves a VM to another host of the same cluster: live
	// (running VM, opts.Live) or cold (stopped VM).
	MigrateVM(ctx context.Context, src Host, vm VMRef, dst Host, opts MigrateOptions) error
	// ChangeMedia puts the ISO cdrom names (cdrom.Pool and cdrom.Path, as
	// for a disk) into the VM's CD-ROM drive, or empties the drive when
	// cdrom.Path is "": live when the VM runs, and in its definition. The
	// medium there already is success.
	ChangeMedia(ctx context.Context, h Host, vm VMRef, cdrom Disk) error
	// AttachVolume attaches a disk (live when the VM runs).
	AttachVolume(ctx context.Context, h Host, vm VMRef, disk Disk) error
	// DetachVolume detaches the disk with disk.Path (or disk.DeviceID).
	DetachVolume(ctx context.Context, h Host, vm VMRef, disk Disk) error
	// ResizeVM changes vCPUs, speed and memory: while stopped, or live up
	// to the VM's MaxVCPUs/MaxMemoryBytes where the hypervisor can.
	ResizeVM(ctx context.Context, h Host, vm VMRef, r Resize) error
	// ConsoleEndpoint tells where the VM's console answers.
	ConsoleEndpoint(ctx context.Context, h Host, vm VMRef) (Console, error)
	// WatchVMs streams the host's VM state changes until ctx ends or the
	// connection drops, when the channel is closed. Events may be lost (see
	// VMEvent.Resync); consumers reconcile with ListVMs.
	WatchVMs(ctx context.Context, h Host) (<-chan VMEvent, error)
	// VMSnapshots takes, reverts to and deletes VM snapshots.
	VMSnapshots

	// Close releases the driver's connections and files.
	Close() error
}

// ClusterWatcher is a Driver that watches the VMs of several hosts (a
// cluster's) in one stream, which costs its manager (vCenter) one watch
// instead of one per host. Each event's HostID names the host the VM is on.
type ClusterWatcher interface {
	WatchClusterVMs(ctx context.Context, hosts []Host) (<-chan VMEvent, error)
}

// Host names a hypervisor host and how to reach it. ID is the stable key
// (the inventory UUID); the zone, pod and cluster keys scope it.
type Host struct {
	ID        string // inventory UUID of the host
	URL       string // e.g. qemu+tcp://10.0.0.5/system, sim://host-1?cpus=32
	Username  string // credentials, when the URL needs them
	Password  string // (never printed: see String)
	ZoneID    string // inventory UUIDs of the host's zone, pod and cluster,
	PodID     string // which also scope the simulator's fault switches
	ClusterID string
	Details   map[string]string // driver-specific settings (vSphere datacenter, guest CPU mode...)
}

// String names the host without its credentials.
func (h Host) String() string {
	if h.ID == "" {
		return h.URL
	}
	return h.ID
}

// Cluster names a cluster managed by its own manager (a vCenter cluster)
// for DiscoverHosts.
type Cluster struct {
	ID       string // inventory UUID of the cluster
	URL      string // e.g. https://vcenter.example.com/DC1/cluster1
	Username string
	Password string
	ZoneID   string
	PodID    string
	Details  map[string]string
}

// HostInfo is what discovery learns about a host.
type HostInfo struct {
	GUID              string // the hypervisor's own stable id of the host
	Name              string // host name as the hypervisor reports it
	PrivateIP         string // management address
	CPUSockets        int
	CPUCores          int // total physical cores
	CPUMHz            int // speed of one core
	CPUModel          string
	MemoryBytes       int64
	HypervisorVersion string
	Capabilities      Capabilities
	Details           map[string]string // anything else worth recording
}

// Capabilities says what a host can do beyond the basics.
type Capabilities struct {
	LiveMigration bool // MigrateVM with Live
	LocalStorage  bool // has local disks for a host-scoped pool
	VolumeHotplug bool // AttachVolume/DetachVolume on a running VM
	CPUHotplug    bool // ResizeVM of vCPUs while running
	MemoryHotplug bool // ResizeVM of memory while running
	HardwareAccel bool // KVM/VT-x available (false: emulation, e.g. TCG)
}

// HostStats is a live host's current load.
type HostStats struct {
	RunningVMs       int
	DefinedVMs       int
	UsedVCPUs        int   // sum over running VMs
	UsedMemoryBytes  int64 // sum over running VMs
	FreeMemoryBytes  int64 // as the host reports it, or capacity minus used
	CPUUtilization   float64
	CheckedAt        time.Time
	HypervisorUptime time.Duration
}

// VMRef names a VM on a host: by UUID when set, otherwise by internal name.
type VMRef struct {
	Name string // internal name, e.g. i-2-13-VM
	UUID string
}

// String names the VM for errors.
func (r VMRef) String() string {
	if r.Name != "" {
		return r.Name
	}
	return r.UUID
}

// Ref returns the reference of the VM the spec describes.
func (s VMSpec) Ref() VMRef { return VMRef{Name: s.Name, UUID: s.UUID} }

// VMSpec is everything a hypervisor needs to define a VM.
type VMSpec struct {
	Name            string            `json:"name,omitempty"` // internal name (i-<account>-<id>-VM), unique per host
	UUID            string            `json:"uuid,omitempty"` // the VM's UUID (inventory UUID, libvirt/BIOS UUID)
	DisplayName     string            `json:"displayName,omitempty"`
	VCPUs           int               `json:"vcpus,omitempty"`
	MHz             int               `json:"mhz,omitempty"` // speed per vCPU, for CPU shares/limits
	MemoryBytes     int64             `json:"memoryBytes,omitempty"`
	MaxVCPUs        int               `json:"maxVcpus,omitempty"`       // ceiling for live scaling; 0 = VCPUs
	MaxMemoryBytes  int64             `json:"maxMemoryBytes,omitempty"` // ceiling for live scaling; 0 = MemoryBytes
	OSType          string            `json:"osType,omitempty"`
	Disks           []Disk            `json:"disks,omitempty"`
	NICs            []NIC             `json:"nics,omitempty"`
	BootOrder       []BootDevice      `json:"bootOrder,omitempty"` // empty = disk first (CD-ROM first when it holds an ISO)
	UserData        string            `json:"userData,omitempty"`  // base64, as the API received it
	ConsolePassword string            `json:"consolePassword,omitempty"`
	Metadata        map[string]string `json:"metadata,omitempty"` // recorded with the VM (e.g. account, template)
}

// CDROM returns the VM's CD-ROM drive (the first Disk with CDROM set),
// which holds an ISO when its Path is set.
func (s VMSpec) CDROM() (Disk, bool) {
	for _, d := range s.Disks {
		if d.CDROM {
			return d, true
		}
	}
	return Disk{}, false
}

// Disk is a volume as a VM sees it, or a CD-ROM drive (CDROM, ReadOnly)
// with the ISO at Path in Pool (a copy of the ISO on the VM's primary
// storage), empty when Path is "".
type Disk struct {
	VolumeID  string `json:"volumeId,omitempty"` // inventory UUID of the volume
	Pool      string `json:"pool,omitempty"`     // pool identity on the host (pool UUID/name, datastore)
	Path      string `json:"path,omitempty"`     // volume path in the pool; the disk's stable identity
	Format    string `json:"format,omitempty"`   // qcow2, raw, vmdk, vhd
	SizeBytes int64  `json:"sizeBytes,omitempty"`
	DeviceID  int    `json:"deviceId,omitempty"` // CloudStack device id: 0 = root
	Bus       string `json:"bus,omitempty"`      // virtio, scsi, ide, sata
	CDROM     bool   `json:"cdrom,omitempty"`
	ReadOnly  bool   `json:"readOnly,omitempty"`
}

// NIC is a network interface of a VM.
type NIC struct {
	MAC      string `json:"mac,omitempty"`
	Label    string `json:"label,omitempty"` // bridge or port-group the traffic label names
	VLAN     int    `json:"vlan,omitempty"`  // 0 = untagged
	IP       string `json:"ip,omitempty"`
	Netmask  string `json:"netmask,omitempty"`
	Gateway  string `json:"gateway,omitempty"`
	DeviceID int    `json:"deviceId,omitempty"`
	Model    string `json:"model,omitempty"` // virtio, e1000, vmxnet3
	Default  bool   `json:"default,omitempty"`
}

// BootDevice is one entry of a VM's boot order.
type BootDevice string

// Boot devices.
const (
	BootDisk    BootDevice = "disk"
	BootCDROM   BootDevice = "cdrom"
	BootNetwork BootDevice = "network"
)

// State is a VM's power state as the hypervisor reports it.
type State string

// VM states.
const (
	StateRunning State = "Running"
	StateStopped State = "Stopped" // defined, powered off
	StatePaused  State = "Paused"
	StateUnknown State = "Unknown"
)

// VMInfo is a VM as the hypervisor sees it.
type VMInfo struct {
	Name        string
	UUID        string
	State       State
	VCPUs       int
	MHz         int
	MemoryBytes int64
	Disks       []Disk
	NICs        []NIC
	HostID      string
	Metadata    map[string]string
}

// StopOptions tunes StopVM.
type StopOptions struct {
	Force   bool          // power off at once, no graceful shutdown
	Timeout time.Duration // graceful shutdown budget before forcing; 0 = driver default
}

// MigrateOptions tunes MigrateVM.
type MigrateOptions struct {
	Live    bool          // keep the VM running (requires Capabilities.LiveMigration)
	Timeout time.Duration // 0 = driver default
}

// Resize is a new CPU/memory shape for ResizeVM; zero fields stay as they are.
type Resize struct {
	VCPUs       int
	MHz         int
	MemoryBytes int64
}

// Console tells a console proxy where a VM's console answers.
type Console struct {
	Protocol string // vnc, spice, webmks, serial
	Host     string
	Port     int
	Password string
	URL      string // ticketed URL where the protocol needs one (vSphere)
}

// VMEvent is a change of a VM's state on a host.
type VMEvent struct {
	HostID string
	Name   string
	UUID   string
	State  State  // new state; "" when the VM was undefined
	Reason string // e.g. started, stopped, guest-shutdown, crashed, migrated, undefined
	Time   time.Time
	Resync bool // events were dropped before this one: reconcile with ListVMs
}

// Config is what a driver factory gets.
type Config struct {
	DataDir string            // where the driver may keep state (the simulator's data)
	Options map[string]string // driver-specific settings
}

// Factory builds a driver.
type Factory func(Config) (Driver, error)

// Validate checks what every driver needs in a VM spec.
func (s VMSpec) Validate() error {
	switch {
	case s.Name == "":
		return fmt.Errorf("vm spec: no name: %w", ErrInvalid)
	case s.UUID == "":
		return fmt.Errorf("vm spec %s: no uuid: %w", s.Name, ErrInvalid)
	case s.VCPUs <= 0:
		return fmt.Errorf("vm spec %s: %d vcpus: %w", s.Name, s.VCPUs, ErrInvalid)
	case s.MemoryBytes <= 0:
		return fmt.Errorf("vm spec %s: %d bytes of memory: %w", s.Name, s.MemoryBytes, ErrInvalid)
	case s.MaxVCPUs != 0 && s.MaxVCPUs < s.VCPUs:
		return fmt.Errorf("vm spec %s: max vcpus %d below %d: %w", s.Name, s.MaxVCPUs, s.VCPUs, ErrInvalid)
	case s.MaxMemoryBytes != 0 && s.MaxMemoryBytes < s.MemoryBytes:
		return fmt.Errorf("vm spec %s: max memory below memory: %w", s.Name, ErrInvalid)
	}
	seen := make(map[string]bool, len(s.Disks))
	for _, d := range s.Disks {
		if d.Path == "" && !d.CDROM {
			return fmt.Errorf("vm spec %s: disk %d has no path: %w", s.Name, d.DeviceID, ErrInvalid)
		}
		if d.Path != "" && seen[d.Path] {
			return fmt.Errorf("vm spec %s: disk %s twice: %w", s.Name, d.Path, ErrInvalid)
		}
		seen[d.Path] = true
	}
	return nil
}
