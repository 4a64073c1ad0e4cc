package sim

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/sim/simkit"
)

func open(t *testing.T, dir string) *Driver {
	t.Helper()
	d, err := Open(dir)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func testHost(id string) hypervisor.Host {
	return hypervisor.Host{ID: id, URL: "sim://" + id + "?cpus=8&mhz=2000&memory=16384", ZoneID: "z1", PodID: "p1", ClusterID: "c1"}
}

func connect(t *testing.T, d *Driver, h hypervisor.Host) {
	t.Helper()
	if _, err := d.ConnectHost(context.Background(), h); err != nil {
		t.Fatalf("ConnectHost(%s): %v", h.ID, err)
	}
}

func testSpec(n int) hypervisor.VMSpec {
	return hypervisor.VMSpec{
		Name: fmt.Sprintf("i-2-%d-VM", n), UUID: fmt.Sprintf("00000000-0000-0000-0000-%012d", n),
		VCPUs: 2, MHz: 1000, MemoryBytes: 2 << 30, ConsolePassword: "pw",
		Disks: []hypervisor.Disk{{VolumeID: fmt.Sprintf("vol-%d", n), Pool: "pool-1", Path: fmt.Sprintf("vol-%d.qcow2", n), Format: "qcow2", Bus: "virtio", SizeBytes: 8 << 30}},
		NICs:  []hypervisor.NIC{{MAC: fmt.Sprintf("02:00:00:00:%02x:%02x", n/256%256, n%256), Label: "cloudbr0", VLAN: 100, IP: "10.1.1.5", Model: "virtio", Default: true}},
	}
}

func mustKind(t *testing.T, err, kind error) {
	t.Helper()
	if kind == nil {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if !errors.Is(err, kind) {
		t.Fatalf("error %v, want kind %v", err, kind)
	}
}

func TestParseHostURL(t *testing.T) {
	tests := map[string]struct {
		url     string
		cores   int
		sockets int
		mhz     int
		memory  int64
		live    bool
		ip      string
		bad     bool
	}{
		"defaults":           {url: "sim://host-1", cores: DefaultCores, sockets: DefaultSockets, mhz: DefaultMHz, memory: DefaultMemoryMB << 20, live: true},
		"sized":              {url: "sim://host-1?cpus=32&mhz=2400&memory=131072", cores: 32, sockets: 2, mhz: 2400, memory: 131072 << 20, live: true},
		"one core":           {url: "sim://h?cpus=1", cores: 1, sockets: 1, mhz: DefaultMHz, memory: DefaultMemoryMB << 20, live: true},
		"no live migration":  {url: "sim://h?live=false&sockets=4", cores: DefaultCores, sockets: 4, mhz: DefaultMHz, memory: DefaultMemoryMB << 20},
		"ip host":            {url: "sim://192.168.5.7", cores: DefaultCores, sockets: 2, mhz: DefaultMHz, memory: DefaultMemoryMB << 20, live: true, ip: "192.168.5.7"},
		"cloudstack style":   {url: "http://sim/c1/h1?memory=1024", cores: DefaultCores, sockets: 2, mhz: DefaultMHz, memory: 1 << 30, live: true},
		"typo":               {url: "sim://h?memroy=4", bad: true},
		"zero cpus":          {url: "sim://h?cpus=0", bad: true},
		"not a number":       {url: "sim://h?mhz=fast", bad: true},
		"wrong scheme":       {url: "qemu+tcp://h/system", bad: true},
		"no name":            {url: "sim://", bad: true},
		"more sockets":       {url: "sim://h?cpus=2&sockets=4", bad: true},
		"bad flag":           {url: "sim://h?live=maybe", bad: true},
		"cloudstack no name": {url: "http://sim/", bad: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			info, err := ParseHostURL(tc.url)
			if tc.bad {
				mustKind(t, err, hypervisor.ErrInvalid)
				return
			}
			mustKind(t, err, nil)
			if info.CPUCores != tc.cores || info.CPUSockets != tc.sockets || info.CPUMHz != tc.mhz || info.MemoryBytes != tc.memory {
				t.Errorf("got %d cores/%d sockets/%d MHz/%d bytes", info.CPUCores, info.CPUSockets, info.CPUMHz, info.MemoryBytes)
			}
			if info.Capabilities.LiveMigration != tc.live {
				t.Errorf("live migration %v", info.Capabilities.LiveMigration)
			}
			if tc.ip != "" && info.PrivateIP != tc.ip {
				t.Errorf("ip %s", info.PrivateIP)
			}
			if info.PrivateIP == "" || info.GUID == "" || info.HypervisorVersion == "" {
				t.Errorf("incomplete info %+v", info)
			}
		})
	}
}

func TestRegistered(t *testing.T) {
	drv, err := hypervisor.Open("simulator", hypervisor.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	if drv.Type() != "Simulator" {
		t.Errorf("type %s", drv.Type())
	}
	_, err = hypervisor.Open("Simulator", hypervisor.Config{Options: map[string]string{"sync": "sometimes"}})
	mustKind(t, err, hypervisor.ErrInvalid)
}

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	d := open(t, t.TempDir())
	h := testHost("h1")
	info, err := d.ConnectHost(ctx, h)
	mustKind(t, err, nil)
	if info.CPUCores != 8 || info.CPUMHz != 2000 || info.MemoryBytes != 16<<30 {
		t.Fatalf("discovered %+v", info)
	}
	spec := testSpec(1)
	ref := spec.Ref()
	vi, err := d.DefineVM(ctx, h, spec)
	mustKind(t, err, nil)
	if vi.State != hypervisor.StateStopped || vi.HostID != "h1" || len(vi.Disks) != 1 {
		t.Fatalf("defined %+v", vi)
	}
	mustKind(t, d.RebootVM(ctx, h, ref), hypervisor.ErrInvalid)
	_, err = d.ConsoleEndpoint(ctx, h, ref)
	mustKind(t, err, hypervisor.ErrInvalid)
	mustKind(t, d.StartVM(ctx, h, hypervisor.VMRef{Name: spec.Name}), nil) // by name
	mustKind(t, d.RebootVM(ctx, h, ref), nil)
	c, err := d.ConsoleEndpoint(ctx, h, ref)
	mustKind(t, err, nil)
	if c.Protocol != "vnc" || c.Port < 5900 || c.Password != "pw" || c.Host == "" {
		t.Errorf("console %+v", c)
	}
	st, err := d.CheckHost(ctx, h)
	mustKind(t, err, nil)
	if st.RunningVMs != 1 || st.UsedVCPUs != 2 || st.UsedMemoryBytes != 2<<30 || st.FreeMemoryBytes != 14<<30 {
		t.Errorf("stats %+v", st)
	}

	data := hypervisor.Disk{Path: "data-1", Pool: "pool-1", DeviceID: 1, Format: "qcow2"}
	mustKind(t, d.AttachVolume(ctx, h, ref, data), nil)
	mustKind(t, d.AttachVolume(ctx, h, ref, hypervisor.Disk{Path: "data-2", DeviceID: 1}), hypervisor.ErrInvalid)
	mustKind(t, d.DetachVolume(ctx, h, ref, hypervisor.Disk{DeviceID: 0}), hypervisor.ErrInvalid) // root of a running vm
	mustKind(t, d.ResizeVM(ctx, h, ref, hypervisor.Resize{VCPUs: 4}), hypervisor.ErrNotSupported) // max = current
	mustKind(t, d.ResizeVM(ctx, h, ref, hypervisor.Resize{VCPUs: 1}), hypervisor.ErrNotSupported) // down, live
	mustKind(t, d.StopVM(ctx, h, ref, hypervisor.StopOptions{Timeout: time.Second}), nil)
	mustKind(t, d.ResizeVM(ctx, h, ref, hypervisor.Resize{VCPUs: 4, MemoryBytes: 4 << 30}), nil)
	vi, err = d.VMState(ctx, h, ref)
	mustKind(t, err, nil)
	if vi.State != hypervisor.StateStopped || vi.VCPUs != 4 || vi.MemoryBytes != 4<<30 || len(vi.Disks) != 2 {
		t.Errorf("after resize %+v", vi)
	}
	mustKind(t, d.DetachVolume(ctx, h, ref, hypervisor.Disk{Path: "data-1"}), nil)

	// A second VM may not take the first one's name.
	other := testSpec(2)
	other.Name = spec.Name
	_, err = d.DefineVM(ctx, h, other)
	mustKind(t, err, hypervisor.ErrInvalid)
	_, err = d.DefineVM(ctx, h, testSpec(2))
	mustKind(t, err, nil)
	vms, err := d.ListVMs(ctx, h)
	mustKind(t, err, nil)
	if len(vms) != 2 || vms[0].Name != "i-2-1-VM" || len(vms[0].Disks) != 1 {
		t.Fatalf("list %+v", vms)
	}
	mustKind(t, d.DestroyVM(ctx, h, ref), nil)
	_, err = d.VMState(ctx, h, ref)
	mustKind(t, err, hypervisor.ErrNotFound)

	// Unknown host, bad specs.
	_, err = d.ListVMs(ctx, testHost("nowhere"))
	mustKind(t, err, hypervisor.ErrNotFound)
	_, err = d.DefineVM(ctx, h, hypervisor.VMSpec{Name: "x"})
	mustKind(t, err, hypervisor.ErrInvalid)
	_, err = d.ConnectHost(ctx, hypervisor.Host{ID: "h9", URL: "sim://h9?cpus=lots"})
	mustKind(t, err, hypervisor.ErrInvalid)
}

func TestIdempotent(t *testing.T) {
	ctx := context.Background()
	h, h2 := testHost("h1"), testHost("h2")
	spec := testSpec(1)
	ref := spec.Ref()
	tests := map[string]struct {
		setup func(d *Driver) // leaves the state the op meets
		op    func(d *Driver) error
		want  hypervisor.State // "" = VM absent afterwards
		on    hypervisor.Host
	}{
		"define twice": {
			setup: func(d *Driver) { d.DefineVM(ctx, h, spec) },
			op:    func(d *Driver) error { _, err := d.DefineVM(ctx, h, spec); return err },
			want:  hypervisor.StateStopped, on: h,
		},
		"redefine keeps running": {
			setup: func(d *Driver) { d.DefineVM(ctx, h, spec); d.StartVM(ctx, h, ref) },
			op:    func(d *Driver) error { _, err := d.DefineVM(ctx, h, spec); return err },
			want:  hypervisor.StateRunning, on: h,
		},
		"start running": {
			setup: func(d *Driver) { d.DefineVM(ctx, h, spec); d.StartVM(ctx, h, ref) },
			op:    func(d *Driver) error { return d.StartVM(ctx, h, ref) },
			want:  hypervisor.StateRunning, on: h,
		},
		"stop stopped": {
			setup: func(d *Driver) { d.DefineVM(ctx, h, spec) },
			op:    func(d *Driver) error { return d.StopVM(ctx, h, ref, hypervisor.StopOptions{Force: true}) },
			want:  hypervisor.StateStopped, on: h,
		},
		"destroy missing": {
			setup: func(d *Driver) {},
			op:    func(d *Driver) error { return d.DestroyVM(ctx, h, ref) },
			on:    h,
		},
		"destroy twice": {
			setup: func(d *Driver) { d.DefineVM(ctx, h, spec); d.DestroyVM(ctx, h, ref) },
			op:    func(d *Driver) error { return d.DestroyVM(ctx, h, ref) },
			on:    h,
		},
		"attach attached": {
			setup: func(d *Driver) { d.DefineVM(ctx, h, spec) },
			op:    func(d *Driver) error { return d.AttachVolume(ctx, h, ref, spec.Disks[0]) },
			want:  hypervisor.StateStopped, on: h,
		},
		"detach detached": {
			setup: func(d *Driver) { d.DefineVM(ctx, h, spec) },
			op:    func(d *Driver) error { return d.DetachVolume(ctx, h, ref, hypervisor.Disk{Path: "nope"}) },
			want:  hypervisor.StateStopped, on: h,
		},
		"migrate again": {
			setup: func(d *Driver) {
				d.DefineVM(ctx, h, spec)
				d.StartVM(ctx, h, ref)
				d.MigrateVM(ctx, h, ref, h2, hypervisor.MigrateOptions{Live: true})
			},
			op:   func(d *Driver) error { return d.MigrateVM(ctx, h, ref, h2, hypervisor.MigrateOptions{Live: true}) },
			want: hypervisor.StateRunning, on: h2,
		},
		"connect again": {
			setup: func(d *Driver) { d.DefineVM(ctx, h, spec) },
			op:    func(d *Driver) error { _, err := d.ConnectHost(ctx, h); return err },
			want:  hypervisor.StateStopped, on: h,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d := open(t, t.TempDir())
			connect(t, d, h)
			connect(t, d, h2)
			tc.setup(d)
			mustKind(t, tc.op(d), nil)
			vi, err := d.VMState(ctx, tc.on, ref)
			if tc.want == "" {
				mustKind(t, err, hypervisor.ErrNotFound)
				return
			}
			mustKind(t, err, nil)
			if vi.State != tc.want {
				t.Errorf("state %s, want %s", vi.State, tc.want)
			}
			if d.Stats().VMs != 1 {
				t.Errorf("stats %+v", d.Stats())
			}
		})
	}
}

func TestMigrate(t *testing.T) {
	ctx := context.Background()
	spec := testSpec(1)
	ref := spec.Ref()
	tests := map[string]struct {
		running bool
		live    bool
		dst     hypervisor.Host
		kind    error
	}{
		"live":                  {running: true, live: true, dst: testHost("h2")},
		"cold":                  {dst: testHost("h2")},
		"live of a stopped vm":  {live: true, dst: testHost("h2"), kind: hypervisor.ErrInvalid},
		"cold of a running vm":  {running: true, dst: testHost("h2"), kind: hypervisor.ErrInvalid},
		"to another cluster":    {running: true, live: true, dst: hypervisor.Host{ID: "h3", URL: "sim://h3", ClusterID: "c2"}, kind: hypervisor.ErrInvalid},
		"to a host without it":  {running: true, live: true, dst: hypervisor.Host{ID: "h4", URL: "sim://h4?live=false", ClusterID: "c1"}, kind: hypervisor.ErrNotSupported},
		"to an unknown host":    {running: true, live: true, dst: hypervisor.Host{ID: "h5"}, kind: hypervisor.ErrNotFound},
		"to the same host":      {running: true, live: true, dst: testHost("h1"), kind: hypervisor.ErrInvalid},
		"cold to other cluster": {dst: hypervisor.Host{ID: "h3", URL: "sim://h3", ClusterID: "c2"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d := open(t, "")
			src := testHost("h1")
			connect(t, d, src)
			if tc.dst.URL != "" && tc.dst.ID != "h1" {
				connect(t, d, tc.dst)
			}
			d.DefineVM(ctx, src, spec)
			if tc.running {
				d.StartVM(ctx, src, ref)
			}
			events, _ := d.WatchVMs(ctx, src)
			err := d.MigrateVM(ctx, src, ref, tc.dst, hypervisor.MigrateOptions{Live: tc.live})
			mustKind(t, err, tc.kind)
			on := tc.dst
			if tc.kind != nil {
				on = src
			}
			vi, err := d.VMState(ctx, on, ref)
			mustKind(t, err, nil)
			if vi.State != map[bool]hypervisor.State{true: hypervisor.StateRunning, false: hypervisor.StateStopped}[tc.running] {
				t.Errorf("state %s after migration", vi.State)
			}
			if tc.kind == nil {
				if ev := <-events; ev.Reason != "migrated" || ev.State != "" {
					t.Errorf("source event %+v", ev)
				}
				if _, err := d.VMState(ctx, src, ref); !errors.Is(err, hypervisor.ErrNotFound) {
					t.Errorf("vm still on the source: %v", err)
				}
			}
		})
	}
}

func TestFaults(t *testing.T) {
	hA := hypervisor.Host{ID: "ha", URL: "sim://ha", ZoneID: "z1", PodID: "p1", ClusterID: "c1"}
	hB := hypervisor.Host{ID: "hb", URL: "sim://hb", ZoneID: "z1", PodID: "p1", ClusterID: "c2"}
	hC := hypervisor.Host{ID: "hc", URL: "sim://hc", ZoneID: "z2", PodID: "p2", ClusterID: "c3"}
	spec := testSpec(1)
	tests := map[string]struct {
		rule     simkit.Rule
		calls    int            // StartVM calls on each host
		fails    map[string]int // failures per host
		kind     error
		deadline time.Duration
		minTime  time.Duration
	}{
		"fail next 2 everywhere": {rule: simkit.Rule{Op: "StartVM", Count: 2}, calls: 3, fails: map[string]int{"ha": 1, "hb": 1}},
		"fail next 2 on host":    {rule: simkit.Rule{Op: "startvm", Count: 2, Scope: simkit.Scope{Host: "hb"}}, calls: 3, fails: map[string]int{"hb": 2}},
		"always in cluster c1":   {rule: simkit.Rule{Op: "StartVM", Count: -1, Scope: simkit.Scope{Cluster: "c1"}}, calls: 2, fails: map[string]int{"ha": 2}},
		"always in pod p1":       {rule: simkit.Rule{Count: -1, Scope: simkit.Scope{Pod: "p1"}}, calls: 1, fails: map[string]int{"ha": 1, "hb": 1}},
		"always in zone z2":      {rule: simkit.Rule{Count: -1, Scope: simkit.Scope{Zone: "z2"}, Mode: simkit.ModeNotFound}, calls: 2, fails: map[string]int{"hc": 2}, kind: hypervisor.ErrNotFound},
		"other op untouched":     {rule: simkit.Rule{Op: "StopVM", Count: -1}, calls: 2, fails: map[string]int{}},
		"probability one":        {rule: simkit.Rule{Op: "StartVM", Probability: 1, Scope: simkit.Scope{Host: "ha"}}, calls: 3, fails: map[string]int{"ha": 3}},
		"unreachable":            {rule: simkit.Rule{Count: 1, Mode: simkit.ModeUnreachable, Scope: simkit.Scope{Host: "hc"}}, calls: 2, fails: map[string]int{"hc": 1}, kind: hypervisor.ErrUnreachable},
		"hang until deadline":    {rule: simkit.Rule{Count: -1, Mode: simkit.ModeHang, Scope: simkit.Scope{Host: "hb"}}, calls: 1, fails: map[string]int{"hb": 1}, kind: hypervisor.ErrUnreachable, deadline: 50 * time.Millisecond, minTime: 50 * time.Millisecond},
		"latency only":           {rule: simkit.Rule{Op: "StartVM", Latency: 20 * time.Millisecond, Scope: simkit.Scope{Host: "ha"}}, calls: 2, fails: map[string]int{}, minTime: 40 * time.Millisecond},
		"latency past deadline":  {rule: simkit.Rule{Op: "StartVM", Latency: time.Hour, Scope: simkit.Scope{Host: "ha"}}, calls: 1, fails: map[string]int{"ha": 1}, kind: hypervisor.ErrUnreachable, deadline: 20 * time.Millisecond},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d := open(t, t.TempDir())
			for _, h := range []hypervisor.Host{hA, hB, hC} {
				connect(t, d, h)
				if _, err := d.DefineVM(context.Background(), h, spec); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := d.Faults().Add(tc.rule); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			fails := map[string]int{}
			for i := 0; i < tc.calls; i++ {
				for _, h := range []hypervisor.Host{hA, hB, hC} {
					ctx := context.Background()
					if tc.deadline > 0 {
						var cancel context.CancelFunc
						ctx, cancel = context.WithTimeout(ctx, tc.deadline)
						defer cancel()
					}
					if err := d.StartVM(ctx, h, spec.Ref()); err != nil {
						fails[h.ID]++
						if tc.kind != nil && !errors.Is(err, tc.kind) {
							t.Errorf("%s: %v, want kind %v", h.ID, err, tc.kind)
						}
						if tc.kind == nil && !hypervisor.Retryable(err) {
							t.Errorf("%s: plain simulated failure not retryable: %v", h.ID, err)
						}
						if !strings.Contains(err.Error(), "Simulator StartVM") || !strings.Contains(err.Error(), "fault rule") {
							t.Errorf("error does not say what failed: %v", err)
						}
					}
				}
			}
			if fmt.Sprint(fails) != fmt.Sprint(tc.fails) {
				t.Errorf("failures %v, want %v", fails, tc.fails)
			}
			if el := time.Since(start); el < tc.minTime {
				t.Errorf("took %v, want at least %v", el, tc.minTime)
			}
			if tc.rule.Count > 0 && len(d.Faults().Rules()) != 0 {
				t.Errorf("exhausted rule left: %+v", d.Faults().Rules())
			}
		})
	}
}

func TestHostDown(t *testing.T) {
	dir := t.TempDir()
	d := open(t, dir)
	h := testHost("h1")
	connect(t, d, h)
	ctx := context.Background()
	mustKind(t, d.SetHostDown("h1", false), nil)
	_, err := d.CheckHost(ctx, h)
	mustKind(t, err, hypervisor.ErrUnreachable)
	if !hypervisor.Retryable(err) {
		t.Error("unreachable is not retryable")
	}
	_, err = d.CheckHost(ctx, testHost("h2")) // other hosts answer (h2 unknown: not found)
	mustKind(t, err, hypervisor.ErrNotFound)
	mustKind(t, d.SetHostUp("h1"), nil)
	_, err = d.CheckHost(ctx, h)
	mustKind(t, err, nil)

	mustKind(t, d.SetHostDown("h1", true), nil)
	tctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = d.ListVMs(tctx, h)
	mustKind(t, err, hypervisor.ErrUnreachable)
	mustKind(t, err, context.DeadlineExceeded)
	if time.Since(start) < 30*time.Millisecond {
		t.Error("hang returned before the deadline")
	}
	// The switch survives a restart of the process.
	d.crash()
	d2 := open(t, dir)
	tctx, cancel2 := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel2()
	_, err = d2.CheckHost(tctx, h)
	mustKind(t, err, hypervisor.ErrUnreachable)
	mustKind(t, d2.SetHostUp("h1"), nil)
	_, err = d2.CheckHost(ctx, h)
	mustKind(t, err, nil)
}

func TestEvents(t *testing.T) {
	d := open(t, "")
	h := testHost("h1")
	connect(t, d, h)
	ctx, cancel := context.WithCancel(context.Background())
	events, err := d.WatchVMs(ctx, h)
	mustKind(t, err, nil)
	spec := testSpec(1)
	d.DefineVM(ctx, h, spec)
	d.StartVM(ctx, h, spec.Ref())
	mustKind(t, d.SetVMState("h1", spec.UUID, hypervisor.StateStopped, "guest-shutdown"), nil)
	d.DestroyVM(ctx, h, spec.Ref())
	want := []string{"defined/Stopped", "started/Running", "guest-shutdown/Stopped", "undefined/"}
	for _, w := range want {
		ev := <-events
		if got := ev.Reason + "/" + string(ev.State); got != w || ev.UUID != spec.UUID || ev.HostID != "h1" || ev.Time.IsZero() {
			t.Errorf("event %+v, want %s", ev, w)
		}
	}
	// A consumer that falls behind loses events and is told to resync.
	d.DefineVM(ctx, h, spec)
	for i := 0; i < eventBuffer+10; i++ {
		d.StartVM(ctx, h, spec.Ref())
		d.StopVM(ctx, h, spec.Ref(), hypervisor.StopOptions{})
	}
	for i := 0; i < eventBuffer; i++ {
		<-events
	}
	d.StartVM(ctx, h, spec.Ref())
	if ev := <-events; !ev.Resync {
		t.Errorf("no resync after loss: %+v", ev)
	}
	cancel()
	for range events { // closed when ctx ends
	}
	// Disconnecting the host closes its streams too.
	events, _ = d.WatchVMs(context.Background(), h)
	mustKind(t, d.DisconnectHost(context.Background(), h), nil)
	if _, ok := <-events; ok {
		t.Error("stream open after disconnect")
	}
}

func TestDiscoverHosts(t *testing.T) {
	d := open(t, "")
	hosts, err := d.DiscoverHosts(context.Background(), hypervisor.Cluster{ID: "c1", ZoneID: "z1", URL: "sim://rack?hosts=3&cpus=4"})
	mustKind(t, err, nil)
	if len(hosts) != 3 || hosts[2].URL != "sim://rack-3?cpus=4" || hosts[0].ClusterID != "c1" || hosts[0].ZoneID != "z1" {
		t.Fatalf("hosts %+v", hosts)
	}
	_, err = d.DiscoverHosts(context.Background(), hypervisor.Cluster{ID: "c1", URL: "sim://rack"})
	mustKind(t, err, hypervisor.ErrInvalid)
}
