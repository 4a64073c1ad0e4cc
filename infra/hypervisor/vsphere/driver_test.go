package vsphere_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/sim25"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere/vcsim"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// env is a simulated vCenter with the driver and pool driver on it, its
// cluster's hosts discovered and connected, a pool per datastore and a
// template imported on the first.
type env struct {
	sim   *vcsim.Sim
	drv   *vsphere.Driver
	pools *vsphere.Pool
	hosts []hypervisor.Host
	ds0   storage.Pool
	ds1   storage.Pool
	tpl   storage.Volume
}

func newEnv(t *testing.T) *env {
	t.Helper()
	sim, err := vcsim.Start(vcsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	e := &env{sim: sim, drv: vsphere.New(hypervisor.Config{}), pools: vsphere.NewPool(storage.Config{})}
	t.Cleanup(func() { e.drv.Close(); e.pools.Close() })
	ctx := context.Background()
	e.hosts, err = e.drv.DiscoverHosts(ctx, hypervisor.Cluster{ID: "c1", URL: sim.ClusterURL(), Username: sim.Username, Password: sim.Password})
	if err != nil {
		t.Fatal(err)
	}
	for i := range e.hosts {
		e.hosts[i].ID = "h" + string(rune('1'+i))
	}
	mk := func(ds string) storage.Pool {
		p := storage.Pool{ID: ds, Name: ds, Type: "VMFS", URL: sim.PoolURL(ds), Username: sim.Username, Password: sim.Password}
		if _, err := e.pools.CreatePool(ctx, p); err != nil {
			t.Fatalf("CreatePool %s: %v", ds, err)
		}
		return p
	}
	e.ds0, e.ds1 = mk("LocalDS_0"), mk("LocalDS_1")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tiny.ova"), vcsim.OVA("tiny", 16), 0o644); err != nil {
		t.Fatal(err)
	}
	src := storage.Location{Store: storage.ImageStore{URL: "file://" + dir}, Path: "tiny.ova"}
	e.tpl, err = e.pools.CopyTemplateToPool(ctx, storage.Template{ID: "tpl-1", Source: src, Format: "OVA"}, e.ds0, nil)
	if err != nil {
		t.Fatalf("CopyTemplateToPool: %v", err)
	}
	return e
}

func TestDiscoverAndConnect(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if len(e.hosts) != 3 {
		t.Fatalf("DiscoverHosts = %d hosts, want 3: %+v", len(e.hosts), e.hosts)
	}
	guids := map[string]bool{}
	for _, h := range e.hosts {
		if !strings.HasPrefix(h.URL, strings.Split(e.sim.ClusterURL(), "?")[0]+"/") || h.Username != e.sim.Username {
			t.Fatalf("host %+v", h)
		}
		info, err := e.drv.ConnectHost(ctx, h)
		if err != nil {
			t.Fatalf("ConnectHost %s: %v", h.URL, err)
		}
		if info.GUID == "" || guids[info.GUID] || info.CPUCores <= 0 || info.CPUMHz <= 0 || info.MemoryBytes <= 0 || info.Name == "" {
			t.Fatalf("ConnectHost %s = %+v", h.URL, info)
		}
		guids[info.GUID] = true
		if _, err := e.drv.CheckHost(ctx, h); err != nil {
			t.Fatalf("CheckHost: %v", err)
		}
		if err := e.pools.ConnectPool(ctx, e.ds0, h); err != nil {
			t.Fatalf("ConnectPool: %v", err)
		}
	}
	for name, tc := range map[string]struct {
		cl   hypervisor.Cluster
		kind error
	}{
		"wrong password": {hypervisor.Cluster{URL: e.sim.ClusterURL(), Username: e.sim.Username, Password: "nope"}, hypervisor.ErrInvalid},
		"no cluster":     {hypervisor.Cluster{URL: "https://" + e.sim.Host + "/DC0/nope?thumbprint=" + e.sim.Thumbprint(), Username: e.sim.Username, Password: e.sim.Password}, hypervisor.ErrNotFound},
		"no datacenter":  {hypervisor.Cluster{URL: "https://" + e.sim.Host + "/DC9/DC0_C0?thumbprint=" + e.sim.Thumbprint(), Username: e.sim.Username, Password: e.sim.Password}, hypervisor.ErrNotFound},
		"bad url":        {hypervisor.Cluster{URL: "https://" + e.sim.Host + "/DC0", Username: "u", Password: "p"}, hypervisor.ErrInvalid},
		"no vcenter":     {hypervisor.Cluster{URL: "https://127.0.0.1:1/DC0/DC0_C0", Username: "u", Password: "p"}, hypervisor.ErrUnreachable},
	} {
		d := vsphere.New(hypervisor.Config{})
		_, err := d.DiscoverHosts(ctx, tc.cl)
		d.Close()
		if !errors.Is(err, tc.kind) {
			t.Errorf("%s: DiscoverHosts = %v, want %v", name, err, tc.kind)
		}
	}
}

func spec(name, uuid string, disks ...hypervisor.Disk) hypervisor.VMSpec {
	return hypervisor.VMSpec{Name: name, UUID: uuid, DisplayName: name, VCPUs: 1, MHz: 1000, MemoryBytes: 256 << 20, OSType: "Other Linux (64-bit)",
		Disks: disks,
		NICs: []hypervisor.NIC{
			{MAC: "02:00:00:aa:00:01", Label: "VM Network", DeviceID: 0, Default: true},
			{MAC: "02:00:00:aa:00:02", Label: "DC0_DVPG0,200,vmwaredvs", DeviceID: 1},
		}}
}

func TestVMLifecycle(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	h1, h2 := e.hosts[0], e.hosts[1]

	// The template is imported once per datastore.
	again, err := e.pools.CopyTemplateToPool(ctx, storage.Template{ID: "tpl-1", Format: "OVA"}, e.ds0, nil)
	if err != nil || again.Path != e.tpl.Path || !again.Template {
		t.Fatalf("second CopyTemplateToPool = %+v, %v (first %+v)", again, err, e.tpl)
	}

	root, err := e.pools.CreateVolumeFromTemplate(ctx, e.ds0, e.tpl.Path, storage.VolumeSpec{ID: "root-1", Path: "root-1", SizeBytes: 64 << 20})
	if err != nil {
		t.Fatalf("CreateVolumeFromTemplate: %v", err)
	}
	if root.Path != "[LocalDS_0] nimbus/root-1.vmdk" || root.SizeBytes != 64<<20 {
		t.Fatalf("root volume = %+v", root)
	}
	if again, err := e.pools.CreateVolumeFromTemplate(ctx, e.ds0, e.tpl.Path, storage.VolumeSpec{ID: "root-1", Path: "root-1", SizeBytes: 64 << 20}); err != nil || again.Path != root.Path {
		t.Fatalf("CreateVolumeFromTemplate again = %+v, %v", again, err)
	}
	if root.BackingPath != "" {
		t.Fatalf("a volume bigger than its template is a full copy, not a linked clone: %+v", root)
	}
	linked, err := e.pools.CreateVolumeFromTemplate(ctx, e.ds0, e.tpl.Path, storage.VolumeSpec{ID: "root-9", Path: "root-9"})
	if err != nil || linked.BackingPath != e.tpl.Path || linked.Path != "[LocalDS_0] nimbus/root-9.vmdk" || linked.SizeBytes != 16<<20 {
		t.Fatalf("linked clone = %+v, %v", linked, err)
	}
	ls := spec("i-2-19-VM", "5b9d0a53-6f1e-4c3e-9f4e-0a0000000019", hypervisor.Disk{Path: linked.Path})
	if _, err := e.drv.DefineVM(ctx, e.hosts[2], ls); err != nil {
		t.Fatalf("DefineVM on a linked clone: %v", err)
	}
	if err := e.drv.StartVM(ctx, e.hosts[2], ls.Ref()); err != nil {
		t.Fatalf("StartVM on a linked clone: %v", err)
	}
	if err := e.drv.DestroyVM(ctx, e.hosts[2], ls.Ref()); err != nil {
		t.Fatalf("DestroyVM: %v", err)
	}
	if err := e.pools.DeleteVolume(ctx, e.ds0, linked.Path); err != nil {
		t.Fatalf("DeleteVolume of a linked clone: %v", err)
	}
	if v, err := e.pools.VolumeInfo(ctx, e.ds0, e.tpl.Path); err != nil || v.SizeBytes != 16<<20 {
		t.Fatalf("the template's disk after its linked clone went: %+v, %v", v, err)
	}
	data, err := e.pools.CreateVolume(ctx, e.ds0, storage.VolumeSpec{ID: "data-1", Path: "data-1", SizeBytes: 32 << 20})
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}

	s := spec("i-2-10-VM", "5b9d0a53-6f1e-4c3e-9f4e-0a0000000010", hypervisor.Disk{Path: root.Path, DeviceID: 0})
	info, err := e.drv.DefineVM(ctx, h1, s)
	if err != nil {
		t.Fatalf("DefineVM: %v", err)
	}
	if info.UUID != s.UUID || info.Name != s.Name || info.State != hypervisor.StateStopped || info.HostID != h1.ID ||
		info.VCPUs != 1 || info.MemoryBytes != 256<<20 || len(info.Disks) != 1 || info.Disks[0].Path != root.Path || len(info.NICs) != 2 ||
		info.NICs[0].MAC != "02:00:00:aa:00:01" || info.NICs[0].Label != "VM Network" || info.NICs[1].Label != "DC0_DVPG0" {
		t.Fatalf("DefineVM = %+v", info)
	}
	if _, err := e.drv.DefineVM(ctx, h1, s); err != nil {
		t.Fatalf("DefineVM again: %v", err)
	}
	other := s
	other.UUID = "5b9d0a53-6f1e-4c3e-9f4e-0a0000000099"
	if _, err := e.drv.DefineVM(ctx, h1, other); !errors.Is(err, hypervisor.ErrInvalid) {
		t.Fatalf("DefineVM of another VM with the name = %v, want invalid", err)
	}
	bad := spec("i-2-11-VM", "5b9d0a53-6f1e-4c3e-9f4e-0a0000000011", hypervisor.Disk{Path: "[LocalDS_0] nimbus/data-1.vmdk"})
	bad.NICs[0].Label = "no-such-portgroup"
	if _, err := e.drv.DefineVM(ctx, h1, bad); !errors.Is(err, hypervisor.ErrInvalid) || !strings.Contains(err.Error(), "no-such-portgroup") {
		t.Fatalf("DefineVM on a missing port group = %v", err)
	}

	ref := s.Ref()
	for range 2 {
		if err := e.drv.StartVM(ctx, h1, ref); err != nil {
			t.Fatalf("StartVM: %v", err)
		}
	}
	state := func(want hypervisor.State, host string) {
		t.Helper()
		got, err := e.drv.VMState(ctx, h1, ref)
		if err != nil || got.State != want || got.Metadata["vsphere.host"] == "" || (host != "" && got.HostID != host) {
			t.Fatalf("VMState = %+v, %v; want %s on %q", got, err, want, host)
		}
	}
	state(hypervisor.StateRunning, h1.ID)
	if err := e.drv.RebootVM(ctx, h1, ref); err != nil {
		t.Fatalf("RebootVM: %v", err)
	}
	state(hypervisor.StateRunning, h1.ID)
	if err := e.drv.AttachVolume(ctx, h1, ref, hypervisor.Disk{Path: data.Path, DeviceID: 1}); err != nil {
		t.Fatalf("AttachVolume: %v", err)
	}
	if err := e.drv.AttachVolume(ctx, h1, ref, hypervisor.Disk{Path: data.Path, DeviceID: 1}); err != nil {
		t.Fatalf("AttachVolume again: %v", err)
	}
	if got, _ := e.drv.VMState(ctx, h1, ref); len(got.Disks) != 2 || got.Disks[1].Path != data.Path || got.Disks[1].DeviceID != 1 {
		t.Fatalf("disks after attach: %+v", got.Disks)
	}
	if err := e.drv.ResizeVM(ctx, h1, ref, hypervisor.Resize{VCPUs: 2, MemoryBytes: 512 << 20}); err != nil {
		t.Fatalf("live ResizeVM up: %v", err)
	}
	if err := e.drv.ResizeVM(ctx, h1, ref, hypervisor.Resize{VCPUs: 1}); !errors.Is(err, hypervisor.ErrInvalid) {
		t.Fatalf("live ResizeVM down = %v, want invalid", err)
	}

	// vMotion to the second host.
	if err := e.drv.MigrateVM(ctx, h1, ref, h2, hypervisor.MigrateOptions{Live: true}); err != nil {
		t.Fatalf("MigrateVM: %v", err)
	}
	if err := e.drv.MigrateVM(ctx, h1, ref, h2, hypervisor.MigrateOptions{Live: true}); err != nil {
		t.Fatalf("MigrateVM again: %v", err)
	}
	if got, err := e.drv.VMState(ctx, h2, ref); err != nil || got.HostID != h2.ID {
		t.Fatalf("after MigrateVM: %+v, %v", got, err)
	}
	vms, err := e.drv.ListVMs(ctx, h2)
	if err != nil || !slices.ContainsFunc(vms, func(v hypervisor.VMInfo) bool { return v.UUID == s.UUID }) {
		t.Fatalf("ListVMs on the target = %+v, %v", vms, err)
	}

	if _, err := e.drv.ConsoleEndpoint(ctx, h2, ref); !errors.Is(err, hypervisor.ErrNotSupported) {
		t.Fatalf("ConsoleEndpoint on vcsim = %v, want not supported", err)
	}

	if err := e.drv.DetachVolume(ctx, h2, ref, hypervisor.Disk{Path: data.Path}); err != nil {
		t.Fatalf("DetachVolume: %v", err)
	}
	for range 2 {
		if err := e.drv.StopVM(ctx, h2, ref, hypervisor.StopOptions{Timeout: time.Second}); err != nil {
			t.Fatalf("StopVM: %v", err)
		}
	}
	state(hypervisor.StateStopped, "")
	if err := e.drv.RebootVM(ctx, h2, ref); !errors.Is(err, hypervisor.ErrInvalid) {
		t.Fatalf("RebootVM of a stopped VM = %v", err)
	}
	for range 2 {
		if err := e.drv.DestroyVM(ctx, h2, ref); err != nil {
			t.Fatalf("DestroyVM: %v", err)
		}
	}
	if _, err := e.drv.VMState(ctx, h2, ref); !errors.Is(err, hypervisor.ErrNotFound) {
		t.Fatalf("VMState after destroy = %v", err)
	}
	// The disks outlive the VM; they belong to the pool.
	if v, err := e.pools.VolumeInfo(ctx, e.ds0, root.Path); err != nil || v.SizeBytes != 64<<20 {
		t.Fatalf("root volume after destroy = %+v, %v", v, err)
	}
	// A stopped VM starts again around its disk, on any host.
	if _, err := e.drv.DefineVM(ctx, h2, s); err != nil {
		t.Fatalf("DefineVM after destroy: %v", err)
	}
	if err := e.drv.DestroyVM(ctx, h2, ref); err != nil {
		t.Fatalf("DestroyVM: %v", err)
	}

	// Cold Storage vMotion of the root disk to the other datastore.
	moved, err := e.pools.CopyVolume(ctx, e.ds0, root.Path, e.ds1, storage.VolumeSpec{Path: root.Path}, nil)
	if err != nil || moved.Path != "[LocalDS_1] nimbus/root-1.vmdk" || moved.SizeBytes != root.SizeBytes {
		t.Fatalf("CopyVolume = %+v, %v", moved, err)
	}
	if v, err := e.pools.ResizeVolume(ctx, e.ds1, moved.Path, 128<<20); err != nil || v.SizeBytes != 128<<20 {
		t.Fatalf("ResizeVolume = %+v, %v", v, err)
	}
	if _, err := e.pools.ResizeVolume(ctx, e.ds1, moved.Path, 1<<20); !errors.Is(err, hypervisor.ErrInvalid) {
		t.Fatalf("shrinking = %v", err)
	}
	list, err := e.pools.ListVolumes(ctx, e.ds0)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, v := range list {
		paths = append(paths, v.Path)
	}
	if !slices.Contains(paths, root.Path) || !slices.Contains(paths, data.Path) || !slices.Contains(paths, e.tpl.Path) {
		t.Fatalf("ListVolumes = %v", paths)
	}
	for _, p := range []struct {
		pool storage.Pool
		path string
	}{{e.ds0, root.Path}, {e.ds0, data.Path}, {e.ds1, moved.Path}} {
		for range 2 {
			if err := e.pools.DeleteVolume(ctx, p.pool, p.path); err != nil {
				t.Fatalf("DeleteVolume %s: %v", p.path, err)
			}
		}
		if _, err := e.pools.VolumeInfo(ctx, p.pool, p.path); !errors.Is(err, hypervisor.ErrNotFound) {
			t.Fatalf("VolumeInfo after delete = %v", err)
		}
	}
	if err := e.pools.DeletePool(ctx, e.ds0); err != nil {
		t.Fatalf("DeletePool: %v", err)
	}
	if names, err := e.sim.VMs(ctx); err != nil || len(names) != 0 {
		t.Fatalf("VMs left in vCenter: %v, %v", names, err)
	}
}

// TestTaskReattach kills a call while its vCenter task runs (the way a
// worker dies mid-activity) and runs it again with what the first attempt
// saved: the retry waits on the same task instead of starting another.
func TestTaskReattach(t *testing.T) {
	e := newEnv(t)
	simulator.TaskDelay.MethodDelay = map[string]int{"CopyVirtualDisk": 1500, "CreateVm": 1500, "ReconfigVm": 1500, "LockHandoff": 0}
	t.Cleanup(func() { simulator.TaskDelay.MethodDelay = nil })

	// attempt runs call as one activity attempt would, with the task
	// references an earlier attempt saved; dieOnStart cancels it the moment
	// it starts a task, the way a worker dies. It answers what it saved and
	// the keys of the tasks it started.
	attempt := func(call func(ctx context.Context) error, prior map[string]string, dieOnStart bool) (saved map[string]string, started []string, err error) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var mu sync.Mutex
		tasks := hypervisor.NewTasks(prior, func(m map[string]string) {
			mu.Lock()
			defer mu.Unlock()
			for k, v := range m {
				if prior[k] != v && !slices.Contains(started, k) {
					started = append(started, k)
				}
			}
			saved = m
			if dieOnStart && len(m) > 0 {
				cancel()
			}
		}, nil)
		err = call(hypervisor.WithTasks(ctx, tasks))
		mu.Lock()
		defer mu.Unlock()
		return saved, started, err
	}
	// retried runs call until it succeeds, dying on every task's start the
	// first times, and checks that no attempt started a task an earlier one
	// had saved.
	retried := func(what string, call func(ctx context.Context) error) {
		t.Helper()
		var prior map[string]string
		for i := range 10 {
			saved, started, err := attempt(call, prior, i < 2)
			for _, k := range started {
				if prior[k] != "" {
					t.Fatalf("%s, attempt %d: started %s again instead of reattaching to %s", what, i+1, k, prior[k])
				}
			}
			if err == nil {
				return
			}
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("%s, attempt %d: %v", what, i+1, err)
			}
			if len(saved) == 0 {
				t.Fatalf("%s, attempt %d: died with nothing saved", what, i+1)
			}
			prior = saved
		}
		t.Fatalf("%s: no attempt finished", what)
	}

	// A full copy (the volume is bigger than the template).
	retried("full clone", func(ctx context.Context) error {
		_, err := e.pools.CreateVolumeFromTemplate(ctx, e.ds0, e.tpl.Path, storage.VolumeSpec{ID: "root-2", SizeBytes: 32 << 20})
		return err
	})
	// A linked clone: the helper VM made, the child disk attached, detached.
	retried("linked clone", func(ctx context.Context) error {
		v, err := e.pools.CreateVolumeFromTemplate(ctx, e.ds0, e.tpl.Path, storage.VolumeSpec{ID: "root-3", SizeBytes: 16 << 20})
		if err == nil && v.BackingPath != e.tpl.Path {
			t.Errorf("root-3 = %+v, want a linked clone of %s", v, e.tpl.Path)
		}
		return err
	})
	s := spec("i-2-12-VM", "5b9d0a53-6f1e-4c3e-9f4e-0a0000000012", hypervisor.Disk{Path: "[LocalDS_0] nimbus/root-2.vmdk"})
	retried("define", func(ctx context.Context) error {
		_, err := e.drv.DefineVM(ctx, e.hosts[0], s)
		return err
	})
	names, err := e.sim.VMs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, name := range names {
		count[name]++
		if strings.HasPrefix(name, "nimbus-diskhelper-") {
			count["helpers"]++
		}
	}
	if count[s.Name] != 1 || count["helpers"] != 1 {
		t.Fatalf("VMs after retried calls: %v", names)
	}
	copies, err := e.sim.Tasks(context.Background(), "VirtualDiskManager.copyVirtualDisk")
	if err != nil || len(copies) != 1 {
		t.Fatalf("%d disk copies for one full clone (%v)", len(copies), err)
	}
}

// TestSessionRenewed lets vCenter forget the session and checks the next
// call logs in again on its own.
func TestSessionRenewed(t *testing.T) {
	sim, err := vcsim.Start(vcsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	ctx := context.Background()
	c, err := sim.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Sessions logged in from now on expire after 300ms idle.
	sim25.SetSessionTimeout(ctx, c.Client, 300*time.Millisecond)
	drv := vsphere.New(hypervisor.Config{Options: map[string]string{"keepalive": "1h"}})
	t.Cleanup(func() { drv.Close() })
	hosts, err := drv.DiscoverHosts(ctx, hypervisor.Cluster{URL: sim.ClusterURL(), Username: sim.Username, Password: sim.Password})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := drv.CheckHost(ctx, hosts[0]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	calls := vsphere.SOAPCalls()
	if _, err := drv.CheckHost(ctx, hosts[0]); err != nil {
		t.Fatalf("CheckHost after the session expired: %v", err)
	}
	if vsphere.SOAPCalls()-calls < 3 { // the refused call, Login, the call again
		t.Fatalf("expected a login in between: %d calls", vsphere.SOAPCalls()-calls)
	}
}
