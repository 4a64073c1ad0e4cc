package activities_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/sim"
	"github.com/nimbus-cloud/nimbus/infra/storage"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// vmFixture is a zone with a pod, a Simulator cluster of two connected
// hosts (4 x 2000 MHz, 8 GiB each) with their capacity rows, and a shared
// network with an IP range.
type vmFixture struct {
	db      *bun.DB
	deps    activities.Deps
	drv     *sim.Driver
	zone    models.Zone
	pod     models.Pod
	cluster models.Cluster
	hosts   []models.Host
	net     models.Network
	account models.Account
}

func newVMFixture(t *testing.T, dsn string, ips int) *vmFixture {
	t.Helper()
	ctx := context.Background()
	db := testenv.OpenDB(t, dsn)
	if _, err := models.Migrate(ctx, db); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	drv, err := sim.Open("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { drv.Close() })
	f := &vmFixture{db: db, drv: drv}
	f.deps = activities.Deps{DB: db,
		Hypervisors: func(string) (hypervisor.Driver, error) { return drv, nil },
		Pools:       func(string) (storage.PoolDriver, error) { return nil, errors.New("no pools in this test") },
	}
	now := models.Now()
	ins := func(row any) {
		t.Helper()
		if _, err := db.NewInsert().Model(row).Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	f.zone = models.Zone{UUID: models.NewUUID(), Name: "z", NetworkType: models.NetworkTypeAdvanced, AllocationState: models.AllocationEnabled, Created: now}
	ins(&f.zone)
	f.pod = models.Pod{UUID: models.NewUUID(), Name: "p", ZoneID: f.zone.ID, AllocationState: models.AllocationEnabled, Created: now}
	ins(&f.pod)
	f.cluster = models.Cluster{UUID: models.NewUUID(), Name: "c", ZoneID: f.zone.ID, PodID: f.pod.ID, HypervisorType: models.HypervisorSimulator,
		ClusterType: models.ClusterCloudManaged, AllocationState: models.AllocationEnabled, ManagedState: "Managed",
		CPUOvercommitRatio: 1, MemOvercommitRatio: 1, Created: now}
	ins(&f.cluster)
	for i := 1; i <= 2; i++ {
		h := models.Host{UUID: models.NewUUID(), Name: fmt.Sprintf("h%d", i), Type: models.HostTypeRouting, State: models.HostUp,
			ResourceState: models.ResourceEnabled, HypervisorType: models.HypervisorSimulator, URL: fmt.Sprintf("sim://h%d?cpus=4&mhz=2000&memory=8192", i),
			CPUs: 4, Speed: 2000, RAM: 8 << 30, ZoneID: f.zone.ID, PodID: f.pod.ID, ClusterID: f.cluster.ID, Created: now}
		ins(&h)
		for typ, total := range map[int]int64{models.CapacityCPU: 8000, models.CapacityMemory: 8 << 30} {
			ins(&models.Capacity{HostID: h.ID, ZoneID: f.zone.ID, PodID: f.pod.ID, ClusterID: f.cluster.ID, CapacityType: typ,
				TotalCapacity: total, CapacityState: models.AllocationEnabled, Created: now})
		}
		if _, err := drv.ConnectHost(ctx, hypervisor.Host{ID: h.UUID, URL: h.URL, ZoneID: f.zone.UUID, PodID: f.pod.UUID, ClusterID: f.cluster.UUID}); err != nil {
			t.Fatal(err)
		}
		f.hosts = append(f.hosts, h)
	}
	if err := db.NewSelect().Model(&f.account).Where("uuid = ?", models.AdminAccountUUID).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	f.net = models.Network{UUID: models.NewUUID(), Name: "shared", TrafficType: models.TrafficGuest, GuestType: models.GuestTypeShared,
		BroadcastDomainType: "Vlan", BroadcastURI: "vlan://100", State: models.NetworkSetup, NetworkOfferingID: 1, ZoneID: f.zone.ID,
		AccountID: f.account.ID, DomainID: f.account.DomainID, ACLType: models.ACLTypeDomain, Created: now}
	ins(&f.net)
	v := models.Vlan{UUID: models.NewUUID(), VlanTag: "100", VlanType: models.VlanTypeDirectAttached, Gateway: "10.9.0.1", Netmask: "255.255.255.0",
		StartIP: "10.9.0.10", EndIP: fmt.Sprintf("10.9.0.%d", 9+ips), ZoneID: f.zone.ID, NetworkID: f.net.ID, Created: now}
	ins(&v)
	rows := make([]models.IPAddress, ips)
	for i := range rows {
		rows[i] = models.IPAddress{UUID: models.NewUUID(), PublicIPAddress: fmt.Sprintf("10.9.0.%d", 10+i), VlanID: v.ID, ZoneID: f.zone.ID,
			State: models.IPFree, SourceNetworkID: f.net.ID}
	}
	ins(&rows)
	return f
}

// vm writes a user VM in state on host (0: none) with its host capacity
// reserved, and a NIC on the shared network; deployed records VM.CREATE.
func (f *vmFixture) vm(t *testing.T, name, state string, hostID int64, deployed bool) *models.VMInstance {
	t.Helper()
	ctx := context.Background()
	vm := &models.VMInstance{UUID: models.NewUUID(), Name: name, DisplayName: name, InstanceName: "i-pending-" + name, Type: models.VMTypeUser,
		State: state, ZoneID: f.zone.ID, ServiceOfferingID: 1, HypervisorType: models.HypervisorSimulator, CPU: 1, Speed: 1000, RAMSize: 1024,
		AccountID: f.account.ID, DomainID: f.account.DomainID, HostID: hostID, PodID: f.pod.ID, ClusterID: f.cluster.ID, Created: models.Now()}
	err := f.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewInsert().Model(vm).Exec(ctx); err != nil {
			return err
		}
		vm.InstanceName = models.InstanceName(vm.AccountID, vm.ID)
		if _, err := tx.NewUpdate().Model(vm).Column("instance_name").WherePK().Exec(ctx); err != nil {
			return err
		}
		nic := &models.Nic{UUID: models.NewUUID(), InstanceID: vm.ID, NetworkID: f.net.ID, MacAddress: activities.NewMAC(),
			DefaultNic: true, State: models.NicAllocated, Created: models.Now()}
		if _, err := tx.NewInsert().Model(nic).Exec(ctx); err != nil {
			return err
		}
		if err := activities.AllocateNicIP(ctx, tx, vm, nic); err != nil {
			return err
		}
		if deployed {
			if _, err := tx.NewInsert().Model(&models.UsageEvent{Type: "VM.CREATE", AccountID: vm.AccountID, DomainID: vm.DomainID,
				ZoneID: vm.ZoneID, ResourceID: vm.ID, Created: models.Now()}).Exec(ctx); err != nil {
				return err
			}
		}
		if hostID != 0 {
			return models.ReserveHost(ctx, tx, hostID, 1000, 1<<30, 1, 1)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

// onHost defines the VM on a host of the simulator, running or not.
func (f *vmFixture) onHost(t *testing.T, vm *models.VMInstance, h models.Host, running bool) {
	t.Helper()
	ctx := context.Background()
	target := hypervisor.Host{ID: h.UUID, URL: h.URL}
	spec := hypervisor.VMSpec{Name: vm.InstanceName, UUID: vm.UUID, VCPUs: 1, MHz: 1000, MemoryBytes: 1 << 30}
	if _, err := f.drv.DefineVM(ctx, target, spec); err != nil {
		t.Fatal(err)
	}
	if running {
		if err := f.drv.StartVM(ctx, target, spec.Ref()); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *vmFixture) reload(t *testing.T, vm *models.VMInstance) *models.VMInstance {
	t.Helper()
	var cur models.VMInstance
	if err := f.db.NewSelect().Model(&cur).Where("id = ?", vm.ID).WhereAllWithDeleted().Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &cur
}

func (f *vmFixture) allocated(t *testing.T, h models.Host) int64 {
	t.Helper()
	var c models.Capacity
	if err := f.db.NewSelect().Model(&c).Where("host_id = ? AND capacity_type = ?", h.ID, models.CapacityCPU).Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	var row models.Host
	if err := f.db.NewSelect().Model(&row).Where("id = ?", h.ID).Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	if row.CPUAllocated != c.UsedCapacity {
		t.Errorf("host %s: hosts.cpu_allocated %d and op_host_capacity %d disagree", h.Name, row.CPUAllocated, c.UsedCapacity)
	}
	return c.UsedCapacity
}

func (f *vmFixture) heldIPs(t *testing.T) int {
	t.Helper()
	n, err := f.db.NewSelect().Model((*models.IPAddress)(nil)).Where("state <> ?", models.IPFree).Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// SettleVM brings every transitional state out from what the hypervisor
// reports, giving back exactly what the VM no longer holds.
func TestSettleVM(t *testing.T) {
	ctx := context.Background()
	f := newVMFixture(t, testenv.SQLiteDSN(t), 20)
	h1, h2 := f.hosts[0], f.hosts[1]

	running := f.vm(t, "running", models.VMStarting, h1.ID, true)
	f.onHost(t, running, h1, true)
	neverDeployed := f.vm(t, "never", models.VMStarting, h1.ID, false)
	f.onHost(t, neverDeployed, h1, false) // defined, never started
	startDied := f.vm(t, "startdied", models.VMStarting, h1.ID, true)
	stopUndone := f.vm(t, "stopundone", models.VMStopping, h1.ID, true)
	f.onHost(t, stopUndone, h1, true)
	stopDone := f.vm(t, "stopdone", models.VMStopping, h1.ID, true)
	f.onHost(t, stopDone, h1, false)
	if got := f.allocated(t, h1); got != 5*1000 {
		t.Fatalf("h1 allocated %d before settling, want 5000", got)
	}
	if n := f.heldIPs(t); n != 5 {
		t.Fatalf("%d addresses held before settling", n)
	}

	for _, tc := range []struct {
		vm     *models.VMInstance
		want   string
		host   bool // still holds its host
		reason string
	}{
		{running, models.VMRunning, true, ""},
		{neverDeployed, models.VMError, false, "deployment was interrupted"},
		{startDied, models.VMStopped, false, "start was interrupted"},
		{stopUndone, models.VMRunning, true, "stop was interrupted"},
		{stopDone, models.VMStopped, false, ""},
	} {
		got, err := activities.SettleVM(ctx, f.deps, tc.vm.UUID)
		if err != nil {
			t.Fatalf("settle %s: %v", tc.vm.Name, err)
		}
		cur := f.reload(t, tc.vm)
		if got != tc.want || cur.State != tc.want || (cur.HostID != 0) != tc.host || !strings.Contains(cur.StateReason, tc.reason) {
			t.Errorf("settle %s: %s, row %s host %d reason %q; want %s, holding a host %v, reason %q",
				tc.vm.Name, got, cur.State, cur.HostID, cur.StateReason, tc.want, tc.host, tc.reason)
		}
		if !tc.host && cur.LastHostID != h1.ID {
			t.Errorf("settle %s: last host %d, want h1", tc.vm.Name, cur.LastHostID)
		}
	}
	if got := f.allocated(t, h1); got != 2*1000 {
		t.Errorf("h1 allocated %d after settling, want the two running VMs' 2000", got)
	}
	if n := f.heldIPs(t); n != 4 {
		t.Errorf("%d addresses held after settling, want 4 (the interrupted deployment's is freed)", n)
	}
	if _, err := f.drv.VMState(ctx, hypervisor.Host{ID: h1.UUID}, hypervisor.VMRef{UUID: neverDeployed.UUID}); !errors.Is(err, hypervisor.ErrNotFound) {
		t.Errorf("the interrupted deployment's VM is still on the host (%v)", err)
	}
	// Settling again changes nothing.
	if got, err := activities.SettleVM(ctx, f.deps, running.UUID); err != nil || got != models.VMRunning {
		t.Errorf("settling a Running VM: %s %v", got, err)
	}

	// Migrations: the move is recorded when the VM is on the target, undone
	// when it is still on the source; either way one host holds it.
	moved := f.vm(t, "moved", models.VMMigrating, h1.ID, true)
	stayed := f.vm(t, "stayed", models.VMMigrating, h1.ID, true)
	for _, vm := range []*models.VMInstance{moved, stayed} {
		if err := models.ReserveHost(ctx, f.db, h2.ID, 1000, 1<<30, 1, 1); err != nil {
			t.Fatal(err)
		}
		if _, err := f.db.NewUpdate().Model((*models.VMInstance)(nil)).Set("reservation_id = ?", h2.UUID).Where("id = ?", vm.ID).Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	f.onHost(t, moved, h2, true)
	f.onHost(t, stayed, h1, true)
	a1, a2 := f.allocated(t, h1), f.allocated(t, h2)
	for _, vm := range []*models.VMInstance{moved, stayed} {
		if got, err := activities.SettleVM(ctx, f.deps, vm.UUID); err != nil || got != models.VMRunning {
			t.Fatalf("settle %s: %s %v", vm.Name, got, err)
		}
	}
	if cur := f.reload(t, moved); cur.HostID != h2.ID || cur.ReservationID != "" || cur.State != models.VMRunning {
		t.Errorf("moved VM = host %d reservation %q state %s", cur.HostID, cur.ReservationID, cur.State)
	}
	if cur := f.reload(t, stayed); cur.HostID != h1.ID || cur.ReservationID != "" || cur.State != models.VMRunning {
		t.Errorf("stayed VM = host %d reservation %q state %s", cur.HostID, cur.ReservationID, cur.State)
	}
	if got := f.allocated(t, h1); got != a1-1000 {
		t.Errorf("h1 allocated %d after the migrations settled, want %d", got, a1-1000)
	}
	if got := f.allocated(t, h2); got != a2-1000 {
		t.Errorf("h2 allocated %d after the migrations settled, want %d", got, a2-1000)
	}

	// An interrupted expunge is finished.
	gone := f.vm(t, "gone", models.VMExpunging, h1.ID, true)
	f.onHost(t, gone, h1, true)
	before := f.allocated(t, h1)
	if _, err := activities.SettleVM(ctx, f.deps, gone.UUID); err != nil {
		t.Fatalf("settle expunging: %v", err)
	}
	if cur := f.reload(t, gone); cur.Removed.IsZero() {
		t.Errorf("the expunging VM was not removed")
	}
	if got := f.allocated(t, h1); got != before-1000 {
		t.Errorf("h1 allocated %d after expunge, want %d", got, before-1000)
	}
	if n := f.heldIPs(t); n != 6 {
		t.Errorf("%d addresses held after the expunge, want 6", n)
	}
}

// Every address goes to one NIC at most, whatever the concurrency: 30
// NICs race for 20 addresses on both dialects; 20 get one, 10 get a 533.
func TestAllocateNicIPConcurrent(t *testing.T) {
	for name, dsn := range testenv.Dialects(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			f := newVMFixture(t, dsn, 20)
			var vms []*models.VMInstance
			var nics []models.Nic
			for i := 0; i < 30; i++ {
				vm := &models.VMInstance{UUID: models.NewUUID(), Name: fmt.Sprintf("v%d", i), InstanceName: fmt.Sprintf("i-%d", i), Type: models.VMTypeUser,
					State: models.VMStarting, ZoneID: f.zone.ID, ServiceOfferingID: 1, CPU: 1, Speed: 1, RAMSize: 1,
					AccountID: f.account.ID, DomainID: f.account.DomainID, Created: models.Now()}
				if _, err := f.db.NewInsert().Model(vm).Exec(ctx); err != nil {
					t.Fatal(err)
				}
				nic := models.Nic{UUID: models.NewUUID(), InstanceID: vm.ID, NetworkID: f.net.ID, MacAddress: activities.NewMAC(),
					State: models.NicAllocated, Created: models.Now()}
				if _, err := f.db.NewInsert().Model(&nic).Exec(ctx); err != nil {
					t.Fatal(err)
				}
				vms, nics = append(vms, vm), append(nics, nic)
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			got, full := 0, 0
			for i := range nics {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					ipam := &activities.IPAM{Deps: f.deps}
					_, err := ipam.IPAMAllocate(ctx, activities.IPAMAllocateInput{VMUUID: vms[i].UUID})
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						got++
					case cserr.Code(err) == cserr.InsufficientCap:
						full++
					default:
						t.Errorf("allocate: %v", err)
					}
				}(i)
			}
			wg.Wait()
			if got != 20 || full != 10 {
				t.Fatalf("%d NICs got an address and %d were refused, want 20 and 10", got, full)
			}
			var ips []string
			if err := f.db.NewSelect().Model((*models.Nic)(nil)).Column("ip4_address").Where("state = ?", models.NicReserved).Scan(ctx, &ips); err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, ip := range ips {
				if seen[ip] {
					t.Errorf("address %s given twice", ip)
				}
				seen[ip] = true
			}
			if n := f.heldIPs(t); n != 20 || len(ips) != 20 {
				t.Errorf("%d addresses allocated and %d NICs holding one, want 20", n, len(ips))
			}
			// Releasing gives them back, once.
			for i := range nics {
				if err := f.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
					return activities.ReleaseVMIPs(ctx, tx, vms[i].ID, nil)
				}); err != nil {
					t.Fatal(err)
				}
			}
			if n := f.heldIPs(t); n != 0 {
				t.Errorf("%d addresses still allocated after releasing all", n)
			}
		})
	}
}
