// Package sim is a simulated BMC provider: every address
// sim://NAME?<parameters> is a machine that exists from its first call,
// powered off unless power=on, with the hardware its parameters describe
// (cpus, sockets, mhz, memory in MiB, macs separated by commas, disks in
// GiB separated by commas, vendor, model, serial). With password= (and
// user=) set, other credentials fail as a real BMC's would. Power and boot
// settings persist in the data directory; fault switches are shared with
// the other simulators; SetStuck makes power commands be accepted but never
// take effect.
package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nimbus-cloud/nimbus/infra/bmc"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/sim/simkit"
)

var _ bmc.Driver = (*Driver)(nil)

const driverName = "simulator"

// init registers the simulator; Config.DataDir is its own directory ("" =
// memory only). Built this way it has its own fault switches; OpenWith with
// Options.Faults shares the hypervisor simulator's.
func init() {
	bmc.Register(bmc.ProviderSimulator, func(cfg bmc.Config) (bmc.Driver, error) {
		return OpenWith(cfg.DataDir, Options{})
	})
}

// Options tunes OpenWith.
type Options struct {
	Sync   simkit.SyncMode
	Faults *simkit.Faults // shared with the other simulators; nil = own
	// OnPower is called (outside locks) when a machine's power changes, e.g.
	// to make the hypervisor simulator's host go down when fenced.
	OnPower func(b bmc.BMC, state bmc.PowerState)
}

// Driver is the BMC simulator.
type Driver struct {
	bmc.Unsupported
	o        Options
	faults   *simkit.Faults
	j        *simkit.Journal
	mu       sync.Mutex
	machines map[string]*machine // by address
	closed   atomic.Bool
}

// machine is the persisted state of one simulated machine.
type machine struct {
	Address    string         `json:"addr"`
	Power      bmc.PowerState `json:"power"`
	Boot       bmc.BootDevice `json:"boot,omitempty"` // next boot device; "" = disk
	Persistent bool           `json:"persistent,omitempty"`
	EFI        bool           `json:"efi,omitempty"`
	Stuck      bool           `json:"stuck,omitempty"`
	PowerOns   int            `json:"powerOns,omitempty"`
	BootedFrom bmc.BootDevice `json:"bootedFrom,omitempty"` // device of the last power-on
	Last       string         `json:"last,omitempty"`       // last command
}

// powerOn boots the machine from its boot device; a one-time setting is
// used up, as IPMI's is.
func (m *machine) powerOn() {
	m.Power = bmc.PowerOn
	m.PowerOns++
	m.BootedFrom = m.Boot
	if m.BootedFrom == "" {
		m.BootedFrom = bmc.BootDisk
	}
	if !m.Persistent {
		m.Boot = ""
	}
}

// Open opens (or creates) a BMC simulator in dataDir ("" = memory only).
func Open(dataDir string) (*Driver, error) { return OpenWith(dataDir, Options{}) }

// OpenWith opens a BMC simulator with options.
func OpenWith(dataDir string, o Options) (*Driver, error) {
	d := &Driver{Unsupported: bmc.Unsupported{DriverName: driverName}, o: o, faults: o.Faults, machines: map[string]*machine{}}
	if dataDir != "" {
		j, err := simkit.OpenJournal(dataDir, simkit.JournalOptions{Sync: o.Sync}, func(b []byte) error {
			var m machine
			if err := json.Unmarshal(b, &m); err != nil {
				return err
			}
			d.machines[m.Address] = &m
			return nil
		}, d.dump)
		if err != nil {
			return nil, err
		}
		d.j = j
	}
	if d.faults == nil {
		path := ""
		if dataDir != "" {
			path = filepath.Join(dataDir, "faults.json")
		}
		f, err := simkit.NewFaults(path)
		if err != nil {
			if d.j != nil {
				d.j.Close()
			}
			return nil, err
		}
		d.faults = f
	}
	return d, nil
}

// Provider is "simulator".
func (d *Driver) Provider() string { return bmc.ProviderSimulator }

// Faults returns the fault switches.
func (d *Driver) Faults() *simkit.Faults { return d.faults }

// Close flushes and releases the data directory.
func (d *Driver) Close() error {
	if !d.closed.CompareAndSwap(false, true) || d.j == nil {
		return nil
	}
	return d.j.Close()
}

func (d *Driver) crash() {
	if d.closed.CompareAndSwap(false, true) && d.j != nil {
		d.j.Abandon()
	}
}

func (d *Driver) dump(emit func([]byte) error) error {
	d.mu.Lock()
	var recs [][]byte
	for _, m := range d.machines {
		b, err := json.Marshal(m)
		if err != nil {
			d.mu.Unlock()
			return err
		}
		recs = append(recs, b)
	}
	d.mu.Unlock()
	for _, b := range recs {
		if err := emit(b); err != nil {
			return err
		}
	}
	return nil
}

// parse reads a simulated BMC address.
func parse(op, addr string) (url.Values, error) {
	u, err := url.Parse(addr)
	if err != nil || u.Scheme != "sim" || u.Hostname() == "" {
		return nil, hypervisor.Errorf(driverName, op, addr, bmc.ErrInvalid, "want sim://NAME?cpus=...&memory=MiB&macs=...")
	}
	q := u.Query()
	for k := range q {
		switch k {
		case "cpus", "sockets", "mhz", "memory", "macs", "disks", "vendor", "model", "serial", "power", "user", "password":
		default:
			return nil, hypervisor.Errorf(driverName, op, addr, bmc.ErrInvalid, "unknown parameter %q", k)
		}
	}
	return q, nil
}

// call runs one BMC command: fault switches, address and credentials,
// then fn with the machine locked.
func (d *Driver) call(ctx context.Context, op string, b bmc.BMC, fn func(m *machine, q url.Values) error) error {
	if d.closed.Load() {
		return hypervisor.Errorf(driverName, op, b.Address, nil, "simulator closed")
	}
	if err := ctx.Err(); err != nil {
		return hypervisor.Errorf(driverName, op, b.Address, nil, "%w", err)
	}
	q, err := parse(op, b.Address)
	if err != nil {
		return err
	}
	host := b.HostID
	if host == "" {
		host = b.Address
	}
	if err := d.faults.Check(ctx, driverName, op, b.Address, simkit.Scope{Zone: b.ZoneID, Pod: b.PodID, Cluster: b.ClusterID, Host: host}); err != nil {
		return err
	}
	if pw := q.Get("password"); pw != "" && (pw != b.Password || (q.Get("user") != "" && q.Get("user") != b.Username)) {
		return hypervisor.Errorf(driverName, op, b.Address, bmc.ErrInvalid, "authentication failed")
	}
	power, before, err := d.update(b.Address, q, func(m *machine) error { return fn(m, q) })
	if err != nil {
		return err
	}
	if before != power && d.o.OnPower != nil {
		d.o.OnPower(b, power)
	}
	return nil
}

// update changes a machine under the lock and journals the change; it
// returns the power state after and before.
func (d *Driver) update(addr string, q url.Values, fn func(m *machine) error) (after, before bmc.PowerState, err error) {
	d.mu.Lock()
	m := d.machines[addr]
	known := m != nil
	if m == nil {
		m = &machine{Address: addr, Power: bmc.PowerOff}
		if q.Get("power") == "on" {
			m.Power = bmc.PowerOn
		}
	}
	old := *m
	err = fn(m)
	var seq uint64
	if err == nil && (!known || *m != old) {
		if d.j != nil {
			rec, merr := json.Marshal(m)
			if merr == nil {
				seq, merr = d.j.Write(rec)
			}
			err = merr
		}
		if err == nil {
			d.machines[addr] = m
		}
	}
	if err != nil {
		*m = old
	}
	after = m.Power
	d.mu.Unlock()
	if err == nil && d.j != nil && seq != 0 {
		err = d.j.Commit(seq, false)
	}
	return after, old.Power, err
}

// PowerStatus reads the power state.
func (d *Driver) PowerStatus(ctx context.Context, b bmc.BMC) (bmc.PowerState, error) {
	var st bmc.PowerState
	err := d.call(ctx, "PowerStatus", b, func(m *machine, _ url.Values) error {
		st = m.Power
		return nil
	})
	return st, err
}

func (d *Driver) setPower(ctx context.Context, op string, b bmc.BMC, to func(cur bmc.PowerState) bmc.PowerState) error {
	return d.call(ctx, op, b, func(m *machine, _ url.Values) error {
		m.Last = op
		switch next := to(m.Power); {
		case m.Stuck || next == m.Power:
		case next == bmc.PowerOn:
			m.powerOn()
		default:
			m.Power = next
		}
		return nil
	})
}

// PowerOn powers the machine on (a no-op when it is on).
func (d *Driver) PowerOn(ctx context.Context, b bmc.BMC) error {
	return d.setPower(ctx, "PowerOn", b, func(bmc.PowerState) bmc.PowerState { return bmc.PowerOn })
}

// PowerOff powers the machine off (a no-op when it is off).
func (d *Driver) PowerOff(ctx context.Context, b bmc.BMC, force bool) error {
	return d.setPower(ctx, "PowerOff", b, func(bmc.PowerState) bmc.PowerState { return bmc.PowerOff })
}

// PowerCycle restarts the machine (powers it on when off).
func (d *Driver) PowerCycle(ctx context.Context, b bmc.BMC) error {
	return d.call(ctx, "PowerCycle", b, func(m *machine, _ url.Values) error {
		m.Last = "PowerCycle"
		if !m.Stuck {
			m.powerOn()
		}
		return nil
	})
}

// SetBootDevice records the next (or every) boot device.
func (d *Driver) SetBootDevice(ctx context.Context, b bmc.BMC, dev bmc.BootDevice, opts bmc.BootOptions) error {
	switch dev {
	case bmc.BootPXE, bmc.BootDisk, bmc.BootCDROM, bmc.BootBIOS:
	default:
		return hypervisor.Errorf(driverName, "SetBootDevice", b.Address, bmc.ErrInvalid, "no boot device %q", dev)
	}
	return d.call(ctx, "SetBootDevice", b, func(m *machine, _ url.Values) error {
		m.Boot, m.Persistent, m.EFI = dev, opts.Persistent, opts.EFI
		return nil
	})
}

// Inventory describes the machine from its address parameters (defaults:
// 2 sockets of 8 cores at 2400 MHz, 64 GiB, one NIC, one 480 GiB disk).
func (d *Driver) Inventory(ctx context.Context, b bmc.BMC) (bmc.Inventory, error) {
	var inv bmc.Inventory
	err := d.call(ctx, "Inventory", b, func(_ *machine, q url.Values) error {
		var err error
		inv, err = inventory(b.Address, q)
		return err
	})
	return inv, err
}

func inventory(addr string, q url.Values) (bmc.Inventory, error) {
	num := func(key string, def int) (int, error) {
		v := q.Get(key)
		if v == "" {
			return def, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return 0, hypervisor.Errorf(driverName, "Inventory", addr, bmc.ErrInvalid, "bad %s=%q", key, v)
		}
		return n, nil
	}
	cpus, err := num("cpus", 16)
	if err != nil {
		return bmc.Inventory{}, err
	}
	sockets, err := num("sockets", min(2, cpus))
	if err != nil {
		return bmc.Inventory{}, err
	}
	mhz, err := num("mhz", 2400)
	if err != nil {
		return bmc.Inventory{}, err
	}
	mem, err := num("memory", 65536)
	if err != nil {
		return bmc.Inventory{}, err
	}
	h := fnv.New32a()
	h.Write([]byte(addr))
	sum := h.Sum32()
	or := func(key, def string) string {
		if v := q.Get(key); v != "" {
			return v
		}
		return def
	}
	inv := bmc.Inventory{
		Vendor: or("vendor", "Nimbus"), Model: or("model", "Simulated Server"), Serial: or("serial", fmt.Sprintf("SIM%08X", sum)),
		BIOSVersion: "sim-1.0", BMCVersion: "sim-1.0", MemoryBytes: int64(mem) << 20,
	}
	for i := 0; i < sockets; i++ {
		cores := cpus / sockets
		if i < cpus%sockets {
			cores++
		}
		inv.CPUs = append(inv.CPUs, bmc.CPU{Model: "Simulated CPU", Cores: cores, Threads: 2 * cores, MHz: mhz})
	}
	macs := strings.Split(or("macs", fmt.Sprintf("02:5e:%02x:%02x:%02x:%02x", byte(sum>>24), byte(sum>>16), byte(sum>>8), byte(sum))), ",")
	for _, mac := range macs {
		inv.NICs = append(inv.NICs, bmc.NIC{MAC: strings.ToLower(strings.TrimSpace(mac)), SpeedMbps: 10000})
	}
	for _, g := range strings.Split(or("disks", "480"), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(g))
		if err != nil || n <= 0 {
			return bmc.Inventory{}, hypervisor.Errorf(driverName, "Inventory", addr, bmc.ErrInvalid, "bad disk size %q", g)
		}
		inv.Disks = append(inv.Disks, bmc.Disk{Model: "Simulated SSD", SizeBytes: int64(n) << 30})
	}
	return inv, nil
}

// SetStuck makes power commands to a machine be accepted without effect
// (a BMC that answers but a chassis that does not obey), or undoes it.
func (d *Driver) SetStuck(addr string, stuck bool) error {
	q, err := parse("SetStuck", addr)
	if err != nil {
		return err
	}
	_, _, err = d.update(addr, q, func(m *machine) error {
		m.Stuck = stuck
		return nil
	})
	return err
}

// Machine is the simulator's view of a machine, for tests.
type Machine struct {
	Power      bmc.PowerState
	Boot       bmc.BootDevice // next boot device; "" = disk
	Persistent bool
	Stuck      bool
	PowerOns   int
	BootedFrom bmc.BootDevice // device of the last power-on
	Last       string         // last command
}

// Machines reports every machine contacted so far, by address.
func (d *Driver) Machines() map[string]Machine {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]Machine, len(d.machines))
	for a, m := range d.machines {
		out[a] = Machine{Power: m.Power, Boot: m.Boot, Persistent: m.Persistent, Stuck: m.Stuck, PowerOns: m.PowerOns, BootedFrom: m.BootedFrom, Last: m.Last}
	}
	return out
}

// Addresses lists the machines contacted so far.
func (d *Driver) Addresses() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.machines))
	for a := range d.machines {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}
