// Package bmc is the driver layer for baseboard management controllers:
// power status and control, the next boot device (PXE for provisioning,
// disk after), and hardware inventory. BareMetal hosts use it to deploy,
// and host HA uses it to fence a host that stopped answering.
//
// Providers: "ipmi" and "redfish" (package bmc/bmclib, over bmclib's
// ipmitool and gofish providers) and "simulator". Drivers know nothing of
// the inventory DB, Temporal or the API; errors wrap the kinds of package
// hypervisor.
package bmc

import (
	"context"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// Error kinds, shared with the hypervisor and storage drivers.
var (
	ErrNotFound     = hypervisor.ErrNotFound
	ErrNotSupported = hypervisor.ErrNotSupported
	ErrUnreachable  = hypervisor.ErrUnreachable
	ErrInvalid      = hypervisor.ErrInvalid
)

// Driver talks to the BMCs of one provider. Power calls are idempotent
// (powering on a machine that is on succeeds). The bmclib driver returns
// once the BMC reports the new state (or fails after its power timeout);
// the simulator returns once the command was accepted, so callers that
// must know read the state back with PowerStatus rather than assume it
// changed. Implementations embed Unsupported.
type Driver interface {
	// Provider is the canonical provider name ("ipmi", "redfish", "simulator").
	Provider() string
	// PowerStatus reads the machine's power state.
	PowerStatus(ctx context.Context, b BMC) (PowerState, error)
	// PowerOn powers the machine on.
	PowerOn(ctx context.Context, b BMC) error
	// PowerOff powers the machine off: gracefully (ACPI), or at once when
	// force is set (fencing).
	PowerOff(ctx context.Context, b BMC, force bool) error
	// PowerCycle powers the machine off and on again (on when it was off).
	PowerCycle(ctx context.Context, b BMC) error
	// SetBootDevice sets the device of the next boot (or every boot).
	SetBootDevice(ctx context.Context, b BMC, dev BootDevice, opts BootOptions) error
	// Inventory reads the machine's hardware.
	Inventory(ctx context.Context, b BMC) (Inventory, error)
	// ChangePassword sets a new password for the BMC's user (b.Username)
	// on the BMC itself.
	ChangePassword(ctx context.Context, b BMC, password string) error
	// Close releases sessions.
	Close() error
}

// BMC names a controller and how to reach it.
type BMC struct {
	HostID    string // inventory UUID of the host it drives (scopes fault switches)
	Address   string // host[:port], or a URL (https://10.0.0.5, sim://bmc-1?...)
	Username  string
	Password  string // (never printed: see String)
	Provider  string // ipmi, redfish, simulator
	Insecure  bool   // accept a self-signed TLS certificate (Redfish)
	ZoneID    string
	PodID     string
	ClusterID string
	Details   map[string]string
}

// String names the BMC without its credentials.
func (b BMC) String() string { return b.Address }

// PowerState is a machine's power as its BMC reports it.
type PowerState string

// Power states.
const (
	PowerOn      PowerState = "on"
	PowerOff     PowerState = "off"
	PowerUnknown PowerState = "unknown"
)

// BootDevice is a device to boot from.
type BootDevice string

// Boot devices.
const (
	BootPXE   BootDevice = "pxe"
	BootDisk  BootDevice = "disk"
	BootCDROM BootDevice = "cdrom"
	BootBIOS  BootDevice = "bios" // firmware setup
)

// BootOptions tunes SetBootDevice.
type BootOptions struct {
	Persistent bool // every boot, not just the next
	EFI        bool // UEFI rather than legacy BIOS boot
}

// Inventory is a machine's hardware.
type Inventory struct {
	Vendor      string
	Model       string
	Serial      string
	BIOSVersion string
	BMCVersion  string
	CPUs        []CPU
	MemoryBytes int64
	NICs        []NIC
	Disks       []Disk
}

// CPU is one processor package.
type CPU struct {
	Model   string
	Cores   int
	Threads int
	MHz     int
}

// NIC is one network port.
type NIC struct {
	MAC       string
	SpeedMbps int
}

// Disk is one drive.
type Disk struct {
	Model     string
	SizeBytes int64
}

// Cores counts the cores of every CPU.
func (inv Inventory) Cores() int {
	n := 0
	for _, c := range inv.CPUs {
		n += c.Cores
	}
	return n
}

// Config is what driver factories get.
type Config struct {
	DataDir string            // where the driver may keep state (the simulator's data)
	Options map[string]string // driver-specific settings
}

// Factory builds a driver.
type Factory func(Config) (Driver, error)
