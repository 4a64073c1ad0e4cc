package sim

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/bmc"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/sim/simkit"
)

var ctx = context.Background()

func open(t *testing.T, dir string, o Options) *Driver {
	t.Helper()
	d, err := OpenWith(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func mustKind(t *testing.T, err, kind error) {
	t.Helper()
	if kind == nil && err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	if kind != nil && !errors.Is(err, kind) {
		t.Fatalf("error %v, want kind %v", err, kind)
	}
}

func TestPower(t *testing.T) {
	b := bmc.BMC{HostID: "h1", Address: "sim://bmc-1", Provider: "simulator"}
	type step struct {
		do   func(d *Driver, b bmc.BMC) error
		want bmc.PowerState
	}
	on := func(d *Driver, b bmc.BMC) error { return d.PowerOn(ctx, b) }
	off := func(d *Driver, b bmc.BMC) error { return d.PowerOff(ctx, b, false) }
	hardOff := func(d *Driver, b bmc.BMC) error { return d.PowerOff(ctx, b, true) }
	cycle := func(d *Driver, b bmc.BMC) error { return d.PowerCycle(ctx, b) }
	tests := map[string]struct {
		addr     string
		steps    []step
		powerOns int
	}{
		"on, on again":     {steps: []step{{on, bmc.PowerOn}, {on, bmc.PowerOn}}, powerOns: 1},
		"off when off":     {steps: []step{{off, bmc.PowerOff}}},
		"on then hard off": {steps: []step{{on, bmc.PowerOn}, {hardOff, bmc.PowerOff}}, powerOns: 1},
		"cycle when off":   {steps: []step{{cycle, bmc.PowerOn}}, powerOns: 1},
		"cycle when on":    {steps: []step{{on, bmc.PowerOn}, {cycle, bmc.PowerOn}}, powerOns: 2},
		"starts on":        {addr: "sim://bmc-2?power=on", steps: []step{{off, bmc.PowerOff}, {on, bmc.PowerOn}}, powerOns: 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d := open(t, "", Options{})
			bb := b
			if tc.addr != "" {
				bb.Address = tc.addr
			}
			for i, s := range tc.steps {
				mustKind(t, s.do(d, bb), nil)
				st, err := d.PowerStatus(ctx, bb)
				mustKind(t, err, nil)
				if st != s.want {
					t.Fatalf("step %d: power %s, want %s", i, st, s.want)
				}
			}
			if m := d.Machines()[bb.Address]; m.PowerOns != tc.powerOns {
				t.Errorf("%d power-ons, want %d", m.PowerOns, tc.powerOns)
			}
		})
	}
}

func TestBootDevice(t *testing.T) {
	d := open(t, "", Options{})
	b := bmc.BMC{Address: "sim://bmc-1"}
	mustKind(t, d.SetBootDevice(ctx, b, bmc.BootPXE, bmc.BootOptions{}), nil)
	mustKind(t, d.PowerOn(ctx, b), nil)
	m := d.Machines()[b.Address]
	if m.BootedFrom != bmc.BootPXE || m.Boot != "" {
		t.Fatalf("one-time PXE: %+v", m)
	}
	mustKind(t, d.PowerCycle(ctx, b), nil)
	if m := d.Machines()[b.Address]; m.BootedFrom != bmc.BootDisk {
		t.Fatalf("second boot: %+v", m)
	}
	mustKind(t, d.SetBootDevice(ctx, b, bmc.BootPXE, bmc.BootOptions{Persistent: true, EFI: true}), nil)
	d.PowerCycle(ctx, b)
	d.PowerCycle(ctx, b)
	if m := d.Machines()[b.Address]; m.BootedFrom != bmc.BootPXE || m.Boot != bmc.BootPXE {
		t.Fatalf("persistent PXE: %+v", m)
	}
	mustKind(t, d.SetBootDevice(ctx, b, "floppy", bmc.BootOptions{}), bmc.ErrInvalid)
}

func TestInventory(t *testing.T) {
	d := open(t, "", Options{})
	tests := map[string]struct {
		addr                string
		cores, sockets, mhz int
		memory              int64
		macs, disks         int
		bad                 bool
	}{
		"defaults": {addr: "sim://n1", cores: 16, sockets: 2, mhz: 2400, memory: 64 << 30, macs: 1, disks: 1},
		"sized": {addr: "sim://n2?cpus=12&sockets=1&mhz=3000&memory=8192&macs=02:00:00:00:00:01,02:00:00:00:00:02&disks=100,200",
			cores: 12, sockets: 1, mhz: 3000, memory: 8 << 30, macs: 2, disks: 2},
		"odd split":  {addr: "sim://n3?cpus=5&sockets=2", cores: 5, sockets: 2, mhz: 2400, memory: 64 << 30, macs: 1, disks: 1},
		"bad number": {addr: "sim://n4?cpus=many", bad: true},
		"bad disk":   {addr: "sim://n5?disks=1,x", bad: true},
		"typo":       {addr: "sim://n6?memroy=1", bad: true},
		"not sim":    {addr: "10.0.0.5:623", bad: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			inv, err := d.Inventory(ctx, bmc.BMC{Address: tc.addr})
			if tc.bad {
				mustKind(t, err, bmc.ErrInvalid)
				return
			}
			mustKind(t, err, nil)
			if inv.Cores() != tc.cores || len(inv.CPUs) != tc.sockets || inv.CPUs[0].MHz != tc.mhz || inv.MemoryBytes != tc.memory ||
				len(inv.NICs) != tc.macs || len(inv.Disks) != tc.disks || inv.Serial == "" {
				t.Errorf("inventory %+v", inv)
			}
		})
	}
}

func TestFailures(t *testing.T) {
	tests := map[string]struct {
		setup    func(d *Driver)
		b        bmc.BMC
		deadline time.Duration
		kind     error
		wantOn   bool // power state read back after PowerOn (when it succeeded)
	}{
		"wrong password": {b: bmc.BMC{Address: "sim://n?user=admin&password=secret", Username: "admin", Password: "nope"}, kind: bmc.ErrInvalid},
		"wrong user":     {b: bmc.BMC{Address: "sim://n?user=admin&password=secret", Username: "root", Password: "secret"}, kind: bmc.ErrInvalid},
		"right password": {b: bmc.BMC{Address: "sim://n?user=admin&password=secret", Username: "admin", Password: "secret"}, wantOn: true},
		"not answering": {b: bmc.BMC{HostID: "h1", Address: "sim://n"}, kind: bmc.ErrUnreachable,
			setup: func(d *Driver) { d.Faults().HostDown("h1", false) }},
		"hangs": {b: bmc.BMC{HostID: "h1", Address: "sim://n"}, kind: bmc.ErrUnreachable, deadline: 20 * time.Millisecond,
			setup: func(d *Driver) { d.Faults().HostDown("h1", true) }},
		"fails once": {b: bmc.BMC{Address: "sim://n", ClusterID: "c1"}, kind: bmc.ErrUnreachable,
			setup: func(d *Driver) {
				d.Faults().Add(simkit.Rule{Op: "PowerOn", Count: 1, Mode: simkit.ModeUnreachable, Scope: simkit.Scope{Cluster: "c1"}})
			}},
		"power-on never takes effect": {b: bmc.BMC{Address: "sim://n"}, setup: func(d *Driver) { d.SetStuck("sim://n", true) }},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d := open(t, t.TempDir(), Options{})
			if tc.setup != nil {
				tc.setup(d)
			}
			c := ctx
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				c, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			err := d.PowerOn(c, tc.b)
			mustKind(t, err, tc.kind)
			if err != nil {
				return
			}
			st, err := d.PowerStatus(ctx, tc.b)
			mustKind(t, err, nil)
			if (st == bmc.PowerOn) != tc.wantOn {
				t.Errorf("power %s after PowerOn", st)
			}
		})
	}
}

func TestPersistenceAndHook(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var seen []string
	hook := func(b bmc.BMC, st bmc.PowerState) {
		mu.Lock()
		seen = append(seen, b.HostID+"="+string(st))
		mu.Unlock()
	}
	d, err := OpenWith(dir, Options{OnPower: hook})
	if err != nil {
		t.Fatal(err)
	}
	b := bmc.BMC{HostID: "h1", Address: "sim://n1"}
	d.SetBootDevice(ctx, b, bmc.BootPXE, bmc.BootOptions{Persistent: true})
	d.PowerOn(ctx, b)
	d.PowerOn(ctx, b) // no change, no hook
	d.PowerOff(ctx, b, true)
	d.SetStuck("sim://n2", true)
	want := d.Machines()
	d.crash()
	d2 := open(t, dir, Options{})
	got := d2.Machines()
	if len(got) != 2 || got["sim://n1"] != want["sim://n1"] || !got["sim://n2"].Stuck {
		t.Fatalf("after reopen %+v, want %+v", got, want)
	}
	if len(seen) != 2 || seen[0] != "h1=on" || seen[1] != "h1=off" {
		t.Errorf("hook saw %v", seen)
	}
	reg, err := bmc.Open("simulator", bmc.Config{DataDir: t.TempDir()})
	if err != nil || reg.Provider() != "simulator" {
		t.Fatalf("registry: %v", err)
	}
	reg.Close()
}
