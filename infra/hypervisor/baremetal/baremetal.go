// Package baremetal is the hypervisor driver of BareMetal hosts: physical
// machines driven through their BMC (IPMI or Redfish, over bmclib), where
// a "VM" is the whole machine.
//
// A host's URL is its BMC's (ipmi://10.0.0.5, redfish://10.0.0.6,
// redfish+http://..., with ?insecure=true for a self-signed Redfish
// certificate and ?power_timeout=90s), with the BMC's username and
// password. ConnectHost reads the power state and what inventory the BMC
// offers (Redfish: CPUs, memory, NICs; IPMI: nothing), and takes the
// machine's shape from the host details cpunumber, cpuspeed (MHz) and
// memory (MiB) and its MAC from hostmac, as CloudStack's BareMetal addHost
// takes them (also accepted as URL query parameters, for clients that
// cannot send extra parameters), over the inventory.
//
// The driver keeps no state: which VM owns a machine is the host detail
// vm.uuid (and vm.name) that the provisioning activity records. DefineVM
// records nothing; StartVM powers on (booting what is on the disk);
// ProvisionVM powers off, sets the next boot to PXE and powers on, so that
// the machine boots what Nimbus's provisioning server hands out for its
// MAC; StopVM, RebootVM and DestroyVM power off, cycle and power off.
// Every power change is read back from the BMC.
package baremetal

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/bmc"
	_ "github.com/nimbus-cloud/nimbus/infra/bmc/bmclib" // the IPMI and Redfish BMC drivers
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

var _ hypervisor.Driver = (*Driver)(nil)

const driverName = hypervisor.TypeBareMetal

// Host detail keys the driver reads.
const (
	DetailCPUNumber = "cpunumber" // cores
	DetailCPUSpeed  = "cpuspeed"  // MHz per core
	DetailMemory    = "memory"    // MiB
	DetailMAC       = "hostmac"   // the MAC the machine PXE-boots from
	DetailVMUUID    = "vm.uuid"   // the VM that owns the machine
	DetailVMName    = "vm.name"
	// DetailDiscoveredMAC is the MAC ConnectHost reports in HostInfo.Details
	// (from hostmac, or the BMC's inventory), which the provisioning server
	// looks the machine up by.
	DetailDiscoveredMAC = "mac"
)

// DefaultStopTimeout is how long a graceful stop waits for the OS to power
// the machine off before forcing it.
const DefaultStopTimeout = 2 * time.Minute

func init() {
	hypervisor.Register(hypervisor.TypeBareMetal, func(cfg hypervisor.Config) (hypervisor.Driver, error) { return New(cfg) })
}

// Driver is the BareMetal driver.
type Driver struct {
	hypervisor.Unsupported
	opts map[string]string
	mu   sync.Mutex
	bmcs map[string]bmc.Driver
	open func(provider string, cfg bmc.Config) (bmc.Driver, error)
}

// New builds the driver; cfg.Options go to the BMC drivers (power_timeout,
// call_timeout, ipmitool...).
func New(cfg hypervisor.Config) (*Driver, error) {
	return &Driver{Unsupported: hypervisor.Unsupported{DriverName: driverName}, opts: cfg.Options,
		bmcs: map[string]bmc.Driver{}, open: bmc.Open}, nil
}

// Type is BareMetal.
func (d *Driver) Type() string { return hypervisor.TypeBareMetal }

// Close closes the BMC drivers.
func (d *Driver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for p, b := range d.bmcs {
		errs = append(errs, b.Close())
		delete(d.bmcs, p)
	}
	return errors.Join(errs...)
}

// BMCOf is how a host's BMC is reached: its URL, credentials and tuning.
func BMCOf(h hypervisor.Host) (bmc.BMC, error) {
	b, err := bmc.ParseURL(h.URL)
	if err != nil {
		return b, err
	}
	b.HostID, b.Username, b.Password, b.ZoneID, b.PodID, b.ClusterID = h.ID, h.Username, h.Password, h.ZoneID, h.PodID, h.ClusterID
	if v := h.Details["power_timeout"]; v != "" && b.Details["power_timeout"] == "" {
		b.Details["power_timeout"] = v
	}
	return b, nil
}

// machine is one host's BMC and its driver.
func (d *Driver) machine(op string, h hypervisor.Host) (bmc.Driver, bmc.BMC, error) {
	b, err := BMCOf(h)
	if err != nil {
		return nil, b, d.fail(op, h, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	drv := d.bmcs[b.Provider]
	if drv == nil {
		if drv, err = d.open(b.Provider, bmc.Config{Options: d.opts}); err != nil {
			return nil, b, d.fail(op, h, err)
		}
		d.bmcs[b.Provider] = drv
	}
	return drv, b, nil
}

// fail wraps a BMC error for this driver, keeping its kind and words
// ("BareMetal StartVM h1: unreachable: ipmi PowerOn: power on did not...").
func (d *Driver) fail(op string, h hypervisor.Host, err error) error {
	msg := err.Error()
	var oe *hypervisor.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		msg = strings.TrimSpace(oe.Driver + " " + oe.Op + ": " + oe.Err.Error())
	}
	for _, k := range []error{hypervisor.ErrInvalid, hypervisor.ErrUnreachable, hypervisor.ErrNotSupported, hypervisor.ErrNotFound} {
		if errors.Is(err, k) {
			return &hypervisor.OpError{Driver: driverName, Op: op, Target: h.String(), Kind: k, Err: errors.New(strings.TrimPrefix(msg, k.Error()+": "))}
		}
	}
	return &hypervisor.OpError{Driver: driverName, Op: op, Target: h.String(), Err: errors.New(msg)}
}

// detail reads a host detail, or the same key from the URL's query.
func detail(h hypervisor.Host, b bmc.BMC, key string) string {
	if v := strings.TrimSpace(h.Details[key]); v != "" {
		return v
	}
	if key == DetailMAC {
		if v := b.Details["mac"]; v != "" {
			return v
		}
	}
	return strings.TrimSpace(b.Details[key])
}

// ConnectHost reads the machine's power and inventory through its BMC.
func (d *Driver) ConnectHost(ctx context.Context, h hypervisor.Host) (hypervisor.HostInfo, error) {
	drv, b, err := d.machine("ConnectHost", h)
	if err != nil {
		return hypervisor.HostInfo{}, err
	}
	power, err := drv.PowerStatus(ctx, b)
	if err != nil {
		return hypervisor.HostInfo{}, d.fail("ConnectHost", h, err)
	}
	inv, err := drv.Inventory(ctx, b)
	if err != nil && !errors.Is(err, bmc.ErrNotSupported) {
		return hypervisor.HostInfo{}, d.fail("ConnectHost", h, err)
	}
	info := hypervisor.HostInfo{
		HypervisorVersion: b.Provider,
		Capabilities:      hypervisor.Capabilities{HardwareAccel: true},
		Details:           map[string]string{"power": string(power), "bmc.provider": b.Provider},
	}
	if inv.BMCVersion != "" {
		info.HypervisorVersion += " " + inv.BMCVersion
	}
	for k, v := range map[string]string{"vendor": inv.Vendor, "model": inv.Model, "serial": inv.Serial, "bios": inv.BIOSVersion} {
		if v != "" {
			info.Details[k] = v
		}
	}
	// The shape: what the operator gave wins over what the BMC reports.
	info.CPUSockets = len(inv.CPUs)
	info.CPUCores = inv.Cores()
	if len(inv.CPUs) > 0 {
		info.CPUMHz = inv.CPUs[0].MHz
		info.CPUModel = inv.CPUs[0].Model
	}
	info.MemoryBytes = inv.MemoryBytes
	num := func(key string) (int64, error) {
		v := detail(h, b, key)
		if v == "" {
			return 0, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return 0, hypervisor.NewError(hypervisor.ErrInvalid, "host detail %s=%q is not a positive number", key, v)
		}
		return n, nil
	}
	cores, err := num(DetailCPUNumber)
	if err != nil {
		return hypervisor.HostInfo{}, d.fail("ConnectHost", h, err)
	}
	mhz, err := num(DetailCPUSpeed)
	if err != nil {
		return hypervisor.HostInfo{}, d.fail("ConnectHost", h, err)
	}
	mib, err := num(DetailMemory)
	if err != nil {
		return hypervisor.HostInfo{}, d.fail("ConnectHost", h, err)
	}
	if cores > 0 {
		info.CPUCores = int(cores)
	}
	if mhz > 0 {
		info.CPUMHz = int(mhz)
	}
	if mib > 0 {
		info.MemoryBytes = mib << 20
	}
	if info.CPUSockets == 0 && info.CPUCores > 0 {
		info.CPUSockets = 1
	}
	if info.CPUCores <= 0 || info.CPUMHz <= 0 || info.MemoryBytes <= 0 {
		return hypervisor.HostInfo{}, d.fail("ConnectHost", h, hypervisor.NewError(hypervisor.ErrInvalid,
			"the %s BMC at %s reports no CPU or memory inventory (%d cores at %d MHz, %d MiB): give cpunumber, cpuspeed (MHz) and memory (MiB)",
			b.Provider, hostOf(b.Address), info.CPUCores, info.CPUMHz, info.MemoryBytes>>20))
	}
	mac := detail(h, b, DetailMAC)
	if mac == "" && len(inv.NICs) > 0 {
		mac = inv.NICs[0].MAC
	}
	if mac == "" {
		return hypervisor.HostInfo{}, d.fail("ConnectHost", h, hypervisor.NewError(hypervisor.ErrInvalid,
			"the %s BMC at %s reports no NIC: give hostmac, the MAC the machine PXE-boots from", b.Provider, hostOf(b.Address)))
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return hypervisor.HostInfo{}, d.fail("ConnectHost", h, hypervisor.NewError(hypervisor.ErrInvalid, "hostmac %q is not a MAC address", mac))
	}
	info.Details[DetailDiscoveredMAC] = hw.String()
	// The machine's identity is its boot NIC: the same machine added again
	// through another BMC address is the same host.
	info.GUID = "baremetal-" + strings.ReplaceAll(hw.String(), ":", "")
	return info, nil
}

func hostOf(addr string) string {
	if _, rest, ok := strings.Cut(addr, "://"); ok {
		return rest
	}
	return addr
}

// CheckHost reads the machine's power: a BMC that answers is a host that
// answers, whatever the power.
func (d *Driver) CheckHost(ctx context.Context, h hypervisor.Host) (hypervisor.HostStats, error) {
	drv, b, err := d.machine("CheckHost", h)
	if err != nil {
		return hypervisor.HostStats{}, err
	}
	st, err := drv.PowerStatus(ctx, b)
	if err != nil {
		return hypervisor.HostStats{}, d.fail("CheckHost", h, err)
	}
	out := hypervisor.HostStats{CheckedAt: time.Now()}
	if h.Details[DetailVMUUID] != "" {
		out.DefinedVMs = 1
		if st == bmc.PowerOn {
			out.RunningVMs = 1
		}
	}
	return out, nil
}

// DisconnectHost holds nothing to release.
func (d *Driver) DisconnectHost(context.Context, hypervisor.Host) error { return nil }

// owner checks the machine is the VM's (or nobody's yet).
func (d *Driver) owner(op string, h hypervisor.Host, vm hypervisor.VMRef) error {
	if u := h.Details[DetailVMUUID]; u != "" && vm.UUID != "" && u != vm.UUID {
		return d.fail(op, h, hypervisor.NewError(hypervisor.ErrInvalid, "machine %s belongs to VM %s, not %s", h, u, vm))
	}
	return nil
}

// DefineVM checks the spec and that the machine is free for it; nothing
// is recorded on the BMC, so defining again is the same.
func (d *Driver) DefineVM(ctx context.Context, h hypervisor.Host, spec hypervisor.VMSpec) (hypervisor.VMInfo, error) {
	if err := spec.Validate(); err != nil {
		return hypervisor.VMInfo{}, d.fail("DefineVM", h, err)
	}
	if err := d.owner("DefineVM", h, spec.Ref()); err != nil {
		return hypervisor.VMInfo{}, err
	}
	return hypervisor.VMInfo{Name: spec.Name, UUID: spec.UUID, State: hypervisor.StateStopped, VCPUs: spec.VCPUs, MHz: spec.MHz,
		MemoryBytes: spec.MemoryBytes, NICs: spec.NICs, HostID: h.ID, Metadata: spec.Metadata}, nil
}

// StartVM powers the machine on from its usual boot device.
func (d *Driver) StartVM(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef) error {
	if err := d.owner("StartVM", h, vm); err != nil {
		return err
	}
	drv, b, err := d.machine("StartVM", h)
	if err != nil {
		return err
	}
	if err := drv.PowerOn(ctx, b); err != nil {
		return d.fail("StartVM", h, err)
	}
	return confirm(ctx, drv, b, bmc.PowerOn, func(err error) error { return d.fail("StartVM", h, err) })
}

// ProvisionVM (re)installs the machine: power off, next boot from the
// network (once), power on, each read back from the BMC. What it then
// boots is up to the provisioning server.
func (d *Driver) ProvisionVM(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef) error {
	if err := d.owner("ProvisionVM", h, vm); err != nil {
		return err
	}
	drv, b, err := d.machine("ProvisionVM", h)
	if err != nil {
		return err
	}
	failed := func(err error) error { return d.fail("ProvisionVM", h, err) }
	if err := drv.PowerOff(ctx, b, true); err != nil {
		return failed(err)
	}
	if err := confirm(ctx, drv, b, bmc.PowerOff, failed); err != nil {
		return err
	}
	if err := drv.SetBootDevice(ctx, b, bmc.BootPXE, bmc.BootOptions{Persistent: false}); err != nil {
		return failed(err)
	}
	if err := drv.PowerOn(ctx, b); err != nil {
		return failed(err)
	}
	return confirm(ctx, drv, b, bmc.PowerOn, failed)
}

// confirm reads the power back once more: BMC drivers that do not wait
// for the change themselves (the simulator) are caught here.
func confirm(ctx context.Context, drv bmc.Driver, b bmc.BMC, want bmc.PowerState, failed func(error) error) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := drv.PowerStatus(ctx, b)
		if err != nil {
			return failed(err)
		}
		if st == want {
			return nil
		}
		if time.Now().After(deadline) {
			return failed(hypervisor.NewError(hypervisor.ErrUnreachable, "the BMC accepted power %s but still reports %s", want, st))
		}
		select {
		case <-ctx.Done():
			return failed(ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// StopVM shuts the machine down through ACPI, forcing it off when it is
// still on after opts.Timeout (default DefaultStopTimeout), or at once.
func (d *Driver) StopVM(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef, opts hypervisor.StopOptions) error {
	if err := d.owner("StopVM", h, vm); err != nil {
		return err
	}
	drv, b, err := d.machine("StopVM", h)
	if err != nil {
		return err
	}
	if !opts.Force {
		timeout := opts.Timeout
		if timeout <= 0 {
			timeout = DefaultStopTimeout
		}
		gctx, cancel := context.WithTimeout(ctx, timeout)
		gb := b
		gb.Details = map[string]string{}
		for k, v := range b.Details {
			gb.Details[k] = v
		}
		gb.Details["power_timeout"] = timeout.String()
		err := drv.PowerOff(gctx, gb, false)
		cancel()
		if err == nil {
			return confirm(ctx, drv, b, bmc.PowerOff, func(err error) error { return d.fail("StopVM", h, err) })
		}
		if errors.Is(err, bmc.ErrInvalid) || ctx.Err() != nil {
			return d.fail("StopVM", h, err)
		}
		// Still on (or no ACPI support): force it, as a hypervisor would.
	}
	if err := drv.PowerOff(ctx, b, true); err != nil {
		return d.fail("StopVM", h, err)
	}
	return confirm(ctx, drv, b, bmc.PowerOff, func(err error) error { return d.fail("StopVM", h, err) })
}

// RebootVM power-cycles a running machine; one that is off is ErrInvalid.
func (d *Driver) RebootVM(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef) error {
	if err := d.owner("RebootVM", h, vm); err != nil {
		return err
	}
	drv, b, err := d.machine("RebootVM", h)
	if err != nil {
		return err
	}
	st, err := drv.PowerStatus(ctx, b)
	if err != nil {
		return d.fail("RebootVM", h, err)
	}
	if st != bmc.PowerOn {
		return d.fail("RebootVM", h, hypervisor.NewError(hypervisor.ErrInvalid, "machine %s is powered %s: only a running machine reboots", h, st))
	}
	if err := drv.PowerCycle(ctx, b); err != nil {
		return d.fail("RebootVM", h, err)
	}
	return confirm(ctx, drv, b, bmc.PowerOn, func(err error) error { return d.fail("RebootVM", h, err) })
}

// DestroyVM powers the machine off at once; the inventory releases it. A
// machine that belongs to another VM is left alone (success: this VM is
// not there).
func (d *Driver) DestroyVM(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef) error {
	if d.owner("DestroyVM", h, vm) != nil {
		return nil
	}
	drv, b, err := d.machine("DestroyVM", h)
	if err != nil {
		return err
	}
	if err := drv.PowerOff(ctx, b, true); err != nil {
		return d.fail("DestroyVM", h, err)
	}
	return confirm(ctx, drv, b, bmc.PowerOff, func(err error) error { return d.fail("DestroyVM", h, err) })
}

// VMState is the machine's power, for the VM that owns it.
func (d *Driver) VMState(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef) (hypervisor.VMInfo, error) {
	owner := h.Details[DetailVMUUID]
	if owner == "" || (vm.UUID != "" && owner != vm.UUID) || (vm.UUID == "" && vm.Name != h.Details[DetailVMName]) {
		return hypervisor.VMInfo{}, d.fail("VMState", h, hypervisor.NewError(hypervisor.ErrNotFound, "no VM %s on machine %s", vm, h))
	}
	drv, b, err := d.machine("VMState", h)
	if err != nil {
		return hypervisor.VMInfo{}, err
	}
	st, err := drv.PowerStatus(ctx, b)
	if err != nil {
		return hypervisor.VMInfo{}, d.fail("VMState", h, err)
	}
	return hypervisor.VMInfo{Name: h.Details[DetailVMName], UUID: owner, State: stateOf(st), HostID: h.ID}, nil
}

// ListVMs is the machine's VM, if one owns it.
func (d *Driver) ListVMs(ctx context.Context, h hypervisor.Host) ([]hypervisor.VMInfo, error) {
	drv, b, err := d.machine("ListVMs", h)
	if err != nil {
		return nil, err
	}
	st, err := drv.PowerStatus(ctx, b)
	if err != nil {
		return nil, d.fail("ListVMs", h, err)
	}
	owner := h.Details[DetailVMUUID]
	if owner == "" {
		return nil, nil
	}
	return []hypervisor.VMInfo{{Name: h.Details[DetailVMName], UUID: owner, State: stateOf(st), HostID: h.ID}}, nil
}

func stateOf(st bmc.PowerState) hypervisor.State {
	switch st {
	case bmc.PowerOn:
		return hypervisor.StateRunning
	case bmc.PowerOff:
		return hypervisor.StateStopped
	}
	return hypervisor.StateUnknown
}

// Fence powers the machine off at once and confirms it is off: host HA's
// guarantee that a host that stopped answering runs nothing any more.
func (d *Driver) Fence(ctx context.Context, h hypervisor.Host) error {
	drv, b, err := d.machine("Fence", h)
	if err != nil {
		return err
	}
	return FenceBMC(ctx, drv, b, func(err error) error { return d.fail("Fence", h, err) })
}

// FenceBMC powers a machine off at once through its BMC and reads the
// state back until it is off.
func FenceBMC(ctx context.Context, drv bmc.Driver, b bmc.BMC, failed func(error) error) error {
	if failed == nil {
		failed = func(err error) error { return err }
	}
	if err := drv.PowerOff(ctx, b, true); err != nil {
		return failed(err)
	}
	return confirm(ctx, drv, b, bmc.PowerOff, failed)
}
