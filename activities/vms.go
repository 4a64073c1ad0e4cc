package activities

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/uptrace/bun"
	"go.temporal.io/sdk/temporal"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere"
	"github.com/nimbus-cloud/nimbus/infra/storage"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/planner"
)

// VMs holds the steps of the VM jobs. The inventory records every
// reservation a VM holds, and each is taken and given back in the same
// transaction as its record, so that every step and every undo is
// idempotent by the VM's identity:
//   - host CPU and memory: vm.host_id (models.ReserveHost/ReleaseHost);
//   - the target of a live migration: vm.reservation_id, the host's UUID;
//   - primary storage: volume.pool_id (models.ReservePool/ReleasePool);
//   - a guest address: nic.state Reserved (IPAM);
//   - the VM on its host: defined by its UUID, named by its internal name;
//   - a volume on its pool: its path, which is the volume's UUID.
//
// A VM's operations are serialized by its state: the API moves it into a
// transitional state (Starting, Stopping, Migrating, Expunging) with a
// guarded update before the job starts, and only the job moves it out.
type VMs struct{ Deps }

// VMRefInput names the VM a step acts on.
type VMRefInput struct {
	VMUUID string
	// Tasks are backend tasks a quick step left running (VMQuickResult),
	// which the step's regular activity reattaches to.
	Tasks map[string]string `json:",omitempty"`
}

// ErrTypeVMState is the error type of a step that finds the VM in another
// state than its job left it in (someone else moved it): not retried.
const ErrTypeVMState = "VMStateChanged"

func vmByUUID(ctx context.Context, db bun.IDB, id string) (*models.VMInstance, error) {
	var vm models.VMInstance
	if err := db.NewSelect().Model(&vm).Where("uuid = ?", id).Limit(1).Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("virtual machine %s: %w", id, models.ErrNotFound)
		}
		return nil, err
	}
	return &vm, nil
}

// mustVM loads a VM for a step that cannot go on without it.
func mustVM(ctx context.Context, db bun.IDB, id string) (*models.VMInstance, error) {
	vm, err := vmByUUID(ctx, db, id)
	if errors.Is(err, models.ErrNotFound) {
		return nil, fail(cserr.ParamError, "virtual machine %s was expunged meanwhile", id)
	}
	return vm, err
}

func vmStateFail(vm *models.VMInstance, want ...string) error {
	return temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("virtual machine %s is %s, not %s: it changed meanwhile", vm.Name, vm.State, strings.Join(want, " or ")),
		ErrTypeVMState, nil)
}

// vmMHz and vmMemBytes are what a VM reserves on its host.
func vmMHz(vm *models.VMInstance) int64      { return int64(vm.CPU) * int64(vm.Speed) }
func vmMemBytes(vm *models.VMInstance) int64 { return int64(vm.RAMSize) << 20 }

// vmConfigFloat reads a global setting as a positive number (cached by
// models.ConfigValue), def when unset or bad.
func vmConfigFloat(ctx context.Context, db bun.IDB, name string, def float64) float64 {
	f, err := models.ConfigFloat(ctx, db, name)
	if err != nil || f <= 0 {
		return def
	}
	return f
}

// PoolOverprovisioning is the factor primary storage allocation may exceed
// a pool's capacity by (storage.overprovisioning.factor).
func PoolOverprovisioning(ctx context.Context, db bun.IDB) float64 {
	return vmConfigFloat(ctx, db, "storage.overprovisioning.factor", 1)
}

// vmClusterRatios are a cluster's CPU and memory overcommit ratios (1 when
// unset).
func vmClusterRatios(ctx context.Context, db bun.IDB, clusterID int64) (cpu, mem float64, err error) {
	var c models.Cluster
	if clusterID == 0 {
		return 1, 1, nil
	}
	if err := db.NewSelect().Model(&c).Column("cpu_overcommit_ratio", "mem_overcommit_ratio").Where("id = ?", clusterID).
		WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		return 0, 0, err
	}
	cpu, mem = c.CPUOvercommitRatio, c.MemOvercommitRatio
	if cpu <= 0 {
		cpu = 1
	}
	if mem <= 0 {
		mem = 1
	}
	return cpu, mem, nil
}

// errVMHostGone is a host removed from the inventory: nothing of a VM can be
// left on it that Nimbus could reach.
var errVMHostGone = errors.New("host removed")

// vmHost loads a host and how its driver reaches it.
func (a *VMs) vmHost(ctx context.Context, hostID int64) (*models.Host, hypervisor.Host, hypervisor.Driver, error) {
	var h models.Host
	if err := a.DB.NewSelect().Model(&h).Column("uuid", "hypervisor_type", "removed").Where("id = ?", hostID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, hypervisor.Host{}, nil, errVMHostGone
		}
		return nil, hypervisor.Host{}, nil, err
	}
	if !h.Removed.IsZero() {
		return nil, hypervisor.Host{}, nil, errVMHostGone
	}
	row, target, err := (&Hosts{Deps: a.Deps}).hostTarget(ctx, h.UUID)
	if err != nil {
		return nil, target, nil, err
	}
	drv, err := a.Hypervisors(row.HypervisorType)
	if err != nil {
		return nil, target, nil, driverFailure(err)
	}
	return row, target, drv, nil
}

// vmPool loads a pool and how its driver reaches it.
func (a *VMs) vmPool(ctx context.Context, poolID int64) (*models.StoragePool, storage.Pool, storage.PoolDriver, error) {
	var p models.StoragePool
	if err := a.DB.NewSelect().Model(&p).Where("id = ?", poolID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		return nil, storage.Pool{}, nil, err
	}
	d := storage.Pool{ID: p.UUID, Name: p.Name, Type: p.PoolType, URL: p.URL, CapacityBytes: p.CapacityBytes}
	var err error
	if d.ZoneID, err = uuidOf(ctx, a.DB, "zones", p.ZoneID); err != nil {
		return nil, d, nil, err
	}
	if d.PodID, err = uuidOf(ctx, a.DB, "pods", p.PodID); err != nil {
		return nil, d, nil, err
	}
	if d.ClusterID, err = uuidOf(ctx, a.DB, "clusters", p.ClusterID); err != nil {
		return nil, d, nil, err
	}
	if d.HostID, err = uuidOf(ctx, a.DB, "hosts", p.HostID); err != nil {
		return nil, d, nil, err
	}
	if p.UserInfo != "" {
		if a.Secrets == nil {
			return nil, d, nil, errors.New("worker has no server key to decrypt pool credentials")
		}
		ui, err := a.Secrets.Decrypt(p.UserInfo)
		if err != nil {
			return nil, d, nil, temporal.NewNonRetryableApplicationError("cannot decrypt the pool's credentials: "+err.Error(), "Invalid", nil)
		}
		d.Username, d.Password, _ = strings.Cut(ui, ":")
	}
	if err := setPoolVia(ctx, a.Deps, &p, &d); err != nil {
		return nil, d, nil, err
	}
	drv, err := a.Pools(p.HypervisorType)
	if err != nil {
		return nil, d, nil, driverFailure(err)
	}
	return &p, d, drv, nil
}

// ---- resource counts ----

// VMCounts are the resource counts a VM holds while it is not destroyed
// (user_vm, cpu in cores, memory in MiB).
func VMCounts(vm *models.VMInstance) map[string]int64 {
	return map[string]int64{models.ResourceUserVM: 1, models.ResourceCPU: int64(vm.CPU), models.ResourceMemory: int64(vm.RAMSize)}
}

// VolumeCounts are the counts volumes hold while not destroyed.
func VolumeCounts(vols []models.Volume) map[string]int64 {
	var n, bytes int64
	for _, v := range vols {
		n++
		bytes += v.Size
	}
	return map[string]int64{models.ResourceVolume: n, models.ResourcePrimaryStorage: bytes}
}

// ReserveCounts takes resource counts of an account (and its domains) in
// tx, refusing with 532 past a limit.
func ReserveCounts(ctx context.Context, tx bun.IDB, accountID int64, deltas map[string]int64) error {
	return models.ReserveResources(ctx, tx, accountID, deltas)
}

// ReleaseCounts gives resource counts back in tx.
func ReleaseCounts(ctx context.Context, tx bun.IDB, accountID int64, deltas map[string]int64) error {
	return models.ReleaseResources(ctx, tx, accountID, deltas)
}

// vmHoldsCounts tells whether a VM in this state holds its VM counts
// (models.InventoryCounts leaves destroyed, expunging and failed VMs out).
func vmHoldsCounts(state string) bool {
	return state != models.VMDestroyed && state != models.VMExpunging && state != models.VMError
}

// vmLiveVolumes are the volumes of a VM that hold their counts.
func vmLiveVolumes(ctx context.Context, tx bun.IDB, vmID int64) ([]models.Volume, error) {
	var vols []models.Volume
	err := tx.NewSelect().Model(&vols).Where("instance_id = ?", vmID).
		Where("state NOT IN (?)", bun.In([]string{models.VolumeDestroy, models.VolumeExpunging, models.VolumeExpunged, models.VolumeError})).
		Order("device_id").Scan(ctx)
	return vols, err
}

// DestroyAccounting is what destroying a VM does in the inventory besides
// its state: its volumes go to Destroy, and the VM's and the volumes'
// resource counts are given back (a VM in Error gave its own back when it
// failed). prevState is the state the VM was destroyed from.
func DestroyAccounting(ctx context.Context, tx bun.IDB, vm *models.VMInstance, prevState string) error {
	vols, err := vmLiveVolumes(ctx, tx, vm.ID)
	if err != nil {
		return err
	}
	if len(vols) > 0 {
		if _, err := tx.NewUpdate().Model((*models.Volume)(nil)).Set("state = ?", models.VolumeDestroy).Set("updated = ?", models.Now()).
			Where("id IN (?)", bun.In(vmVolumeIDs(vols))).Exec(ctx); err != nil {
			return err
		}
		if err := ReleaseCounts(ctx, tx, vm.AccountID, VolumeCounts(vols)); err != nil {
			return err
		}
	}
	if vmHoldsCounts(prevState) {
		return ReleaseCounts(ctx, tx, vm.AccountID, VMCounts(vm))
	}
	return nil
}

// RecoverVM brings a Destroyed VM back to Stopped in tx: its volumes come
// back (Ready when they were created, else Allocated) and its counts are
// taken again, within the account's limits (532 past them).
func RecoverVM(ctx context.Context, tx bun.IDB, vm *models.VMInstance) error {
	if err := models.Transition(ctx, tx, (*models.VMInstance)(nil), vm.ID, models.VMStopped, []string{models.VMDestroyed},
		map[string]any{"update_count": vm.UpdateCount + 1, "update_time": models.Now(), "state_reason": ""}); err != nil {
		if errors.Is(err, models.ErrStateChanged) {
			return cserr.Param("Virtual machine %s is no longer Destroyed", vm.Name)
		}
		return err
	}
	var vols []models.Volume
	if err := tx.NewSelect().Model(&vols).Where("instance_id = ? AND state = ?", vm.ID, models.VolumeDestroy).Scan(ctx); err != nil {
		return err
	}
	for _, v := range vols {
		st := models.VolumeReady
		if v.Path == "" {
			st = models.VolumeAllocated
		}
		if _, err := tx.NewUpdate().Model((*models.Volume)(nil)).Set("state = ?", st).Set("updated = ?", models.Now()).
			Where("id = ?", v.ID).Exec(ctx); err != nil {
			return err
		}
	}
	counts := VMCounts(vm)
	for k, v := range VolumeCounts(vols) {
		counts[k] = v
	}
	return ReserveCounts(ctx, tx, vm.AccountID, counts)
}

func vmVolumeIDs(vols []models.Volume) []int64 {
	ids := make([]int64, len(vols))
	for i, v := range vols {
		ids[i] = v.ID
	}
	return ids
}

// ---- events ----

func vmEvent(ctx context.Context, tx bun.IDB, actor Actor, vm *models.VMInstance, typ, level, text string) error {
	return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{Actor: actor, Type: typ, Level: level,
		ResourceType: "VirtualMachine", ResourceUUID: vm.UUID, Description: text}))
}

func vmUsage(ctx context.Context, tx bun.IDB, vm *models.VMInstance, typ string) error {
	_, err := tx.NewInsert().Model(&models.UsageEvent{
		Type: typ, AccountID: vm.AccountID, DomainID: vm.DomainID, ZoneID: vm.ZoneID, ResourceID: vm.ID,
		ResourceName: vm.Name, ResourceType: vm.HypervisorType, OfferingID: vm.ServiceOfferingID,
		TemplateID: vm.TemplateID, Created: models.Now(),
	}).Exec(ctx)
	return err
}

// vmMove is a guarded state change of a VM that always changes the row
// (update_count), so that MySQL reports it even when the state stays.
func vmMove(ctx context.Context, tx bun.IDB, vm *models.VMInstance, to string, from []string, set map[string]any) error {
	q := tx.NewUpdate().Model((*models.VMInstance)(nil)).Set("state = ?", to).
		Set("update_count = update_count + 1").Set("update_time = ?", models.Now()).
		Where("id = ? AND state IN (?)", vm.ID, bun.In(from))
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		q = q.Set("? = ?", bun.Ident(k), set[k])
	}
	res, err := q.Exec(ctx)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return models.ErrStateChanged
	}
	vm.State = to
	vm.UpdateCount++
	return nil
}

// ---- placement ----

// VMPins are an admin's choice of where a VM goes (0: any), and whether
// to try its last host first.
type VMPins struct {
	PodID, ClusterID, HostID int64
	ConsiderLastHost         bool
}

// VMPlaceInput asks for a place for a VM in Starting.
type VMPlaceInput struct {
	VMUUID string
	Pins   VMPins
}

// VMPlacement is where a VM was placed, and what the rest of its start
// will act on: the NICs still without an address and the volumes still to
// create (the undo of those steps names them, so it is registered before
// they run).
type VMPlacement struct {
	HostID     int64
	HostUUID   string
	HostName   string
	NicUUIDs   []string
	VolumeUUID []string
	// CopyTemplate says the root volume's template is not on its pool yet
	// (VMCopyTemplate has work to do).
	CopyTemplate bool
	// CopyISO says the VM's ISO is not on its root volume's pool yet
	// (VMCopyISO has work to do).
	CopyISO bool
	// QuickProvision says the host's driver creates volumes from a template
	// copy (an overlay or clone) and defines and starts a VM in seconds, so
	// those steps may run as local activities (see QuickProvisionTypes).
	QuickProvision bool
	// TaskProvision says the host's driver runs those steps as backend
	// tasks that mostly end in seconds but may take minutes (vCenter
	// clones): the workflow runs them as local activities that wait a few
	// seconds (VMCreateVolumesQuick, VMDefineStartQuick) and hands a task
	// still running to the regular, heartbeating activity.
	TaskProvision bool `json:",omitempty"`
	// BareMetal says the host is a BareMetal machine: it is started (and
	// provisioned by PXE when new to the VM) by the BareMetal steps.
	BareMetal bool
}

// QuickProvisionTypes are the hypervisor types whose volume creation and
// define-and-start are quick: a qcow2 overlay or RBD clone, and a libvirt
// or simulated domain. Others (vSphere full clones...) run those steps as
// regular, heartbeating activities; so does LXC, whose root volumes are
// full copies of the template (see libvirtpool.CreateVolumeFromTemplate).
var QuickProvisionTypes = map[string]bool{models.HypervisorSimulator: true, models.HypervisorKVM: true}

// TaskProvisionTypes are the hypervisor types whose volume creation and
// define-and-start are backend tasks (see VMPlacement.TaskProvision).
var TaskProvisionTypes = map[string]bool{models.HypervisorVMware: true}

// vmPlaceRequest is a VM's planner request and the volumes to place.
type vmPlaceRequest struct {
	req  planner.Request
	vols []models.Volume // Allocated volumes without a pool, in req.Disks order
}

func vmTagList(s string) []string {
	var out []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// vmAffinity returns the hosts the VM's host anti-affinity groups exclude
// and its host affinity groups require (models.AffinityHosts over the
// groups the VM is in).
func vmAffinity(ctx context.Context, db bun.IDB, vm *models.VMInstance) (anti, aff map[int64]bool, err error) {
	var groups []int64
	if err := db.NewSelect().Model((*models.AffinityGroupVMMap)(nil)).Column("affinity_group_id").Where("instance_id = ?", vm.ID).
		Scan(ctx, &groups); err != nil {
		return nil, nil, err
	}
	if len(groups) == 0 {
		return nil, nil, nil
	}
	return models.AffinityHosts(ctx, db, vm.AccountID, groups, vm.ID)
}

func (a *VMs) buildPlaceRequest(ctx context.Context, vm *models.VMInstance, pins VMPins) (*vmPlaceRequest, error) {
	var so models.ServiceOffering
	if err := a.DB.NewSelect().Model(&so).Where("id = ?", vm.ServiceOfferingID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		return nil, err
	}
	pr := &vmPlaceRequest{req: planner.Request{
		VCPUs: vm.CPU, MHz: vm.Speed, MemoryBytes: vmMemBytes(vm), HostTags: vmTagList(so.HostTag),
		PodID: pins.PodID, ClusterID: pins.ClusterID, HostID: pins.HostID, Hypervisor: vm.HypervisorType,
	}}
	var vols []models.Volume
	if err := a.DB.NewSelect().Model(&vols).Where("instance_id = ?", vm.ID).
		Where("state NOT IN (?)", bun.In([]string{models.VolumeDestroy, models.VolumeExpunging, models.VolumeExpunged})).
		Order("device_id").Scan(ctx); err != nil {
		return nil, err
	}
	offerings := map[int64]models.DiskOffering{}
	for _, v := range vols {
		if v.DiskOfferingID != 0 {
			offerings[v.DiskOfferingID] = models.DiskOffering{}
		}
	}
	if len(offerings) > 0 {
		ids := make([]int64, 0, len(offerings))
		for id := range offerings {
			ids = append(ids, id)
		}
		var dos []models.DiskOffering
		if err := a.DB.NewSelect().Model(&dos).Where("id IN (?)", bun.In(ids)).WhereAllWithDeleted().Scan(ctx); err != nil {
			return nil, err
		}
		for _, d := range dos {
			offerings[d.ID] = d
		}
	}
	for _, v := range vols {
		if v.PoolID != 0 {
			// A disk that lives on a pool keeps the VM where the pool is.
			var p models.StoragePool
			if err := a.DB.NewSelect().Model(&p).Column("scope", "cluster_id", "host_id").Where("id = ?", v.PoolID).
				WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
				return nil, err
			}
			switch {
			case p.HostID != 0:
				if pr.req.HostID != 0 && pr.req.HostID != p.HostID {
					return nil, fail(cserr.ParamError, "Volume %s is on the local storage of another host than the one asked for", v.Name)
				}
				pr.req.HostID = p.HostID
			case p.ClusterID != 0:
				if pr.req.ClusterID != 0 && pr.req.ClusterID != p.ClusterID {
					return nil, fail(cserr.ParamError, "Volume %s is on primary storage of another cluster than the one asked for", v.Name)
				}
				pr.req.ClusterID = p.ClusterID
			}
			continue
		}
		if v.State != models.VolumeAllocated {
			continue
		}
		d := offerings[v.DiskOfferingID]
		local := d.UseLocalStorage
		if v.VolumeType == models.VolumeRoot {
			local = local || so.UseLocalStorage
		}
		pr.req.Disks = append(pr.req.Disks, planner.DiskRequest{SizeBytes: v.Size, Tags: vmTagList(d.Tags), Local: local})
		pr.vols = append(pr.vols, v)
	}
	anti, aff, err := vmAffinity(ctx, a.DB, vm)
	if err != nil {
		return nil, err
	}
	pr.req.AntiAffinity, pr.req.Affinity = anti, aff
	return pr, nil
}

// planSnapshot loads what the planner needs of a zone. Unless full, it
// loads only the hosts that are Up, enabled and have the room (the few
// with the most free memory): a placement's usual case at any scale. The
// full snapshot is for explaining why nothing fits.
func (a *VMs) planSnapshot(ctx context.Context, zoneID int64, req planner.Request, full bool) (planner.Snapshot, error) {
	var snap planner.Snapshot
	var pods []models.Pod
	if err := a.DB.NewSelect().Model(&pods).Column("id", "name", "allocation_state").Where("zone_id = ?", zoneID).Scan(ctx); err != nil {
		return snap, err
	}
	for _, p := range pods {
		snap.Pods = append(snap.Pods, planner.Pod{ID: p.ID, Name: p.Name, Enabled: p.AllocationState != models.AllocationDisabled})
	}
	cpuFrac := vmConfigFloat(ctx, a.DB, "cluster.cpu.allocated.capacity.disablethreshold", 1)
	memFrac := vmConfigFloat(ctx, a.DB, "cluster.memory.allocated.capacity.disablethreshold", 1)
	var clusters []models.Cluster
	if err := a.DB.NewSelect().Model(&clusters).Where("zone_id = ?", zoneID).Scan(ctx); err != nil {
		return snap, err
	}
	for _, c := range clusters {
		snap.Clusters = append(snap.Clusters, planner.Cluster{ID: c.ID, PodID: c.PodID, Name: c.Name,
			Enabled: c.AllocationState != models.AllocationDisabled, CPUOvercommit: c.CPUOvercommitRatio, MemOvercommit: c.MemOvercommitRatio,
			CPUDisableFrac: cpuFrac, MemDisableFrac: memFrac})
	}
	var hosts []models.Host
	query := func(dest any) *bun.SelectQuery {
		q := a.DB.NewSelect().Model(dest).
			Column("host.id", "host.name", "host.cluster_id", "host.pod_id", "host.hypervisor_type", "host.state", "host.resource_state",
				"host.cpus", "host.speed", "host.ram", "host.cpu_allocated", "host.mem_allocated").
			Where("host.zone_id = ? AND host.type = ?", zoneID, models.HostTypeRouting)
		if req.HostID != 0 {
			q = q.Where("host.id = ?", req.HostID)
		}
		if req.ClusterID != 0 {
			q = q.Where("host.cluster_id = ?", req.ClusterID)
		}
		if req.PodID != 0 {
			q = q.Where("host.pod_id = ?", req.PodID)
		}
		return q
	}
	if full {
		if err := query(&hosts).Scan(ctx); err != nil {
			return snap, err
		}
	} else {
		var err error
		if hosts, err = a.hostsWithMostRoom(ctx, zoneID, req, query); err != nil {
			return snap, err
		}
	}
	tags := map[int64][]string{}
	if len(hosts) > 0 {
		ids := make([]int64, len(hosts))
		for i, h := range hosts {
			ids[i] = h.ID
		}
		var rows []models.HostTag
		for start := 0; start < len(ids); start += 1000 {
			var part []models.HostTag
			if err := a.DB.NewSelect().Model(&part).Column("host_id", "tag").Where("host_id IN (?)", bun.In(ids[start:min(len(ids), start+1000)])).Scan(ctx); err != nil {
				return snap, err
			}
			rows = append(rows, part...)
		}
		for _, t := range rows {
			tags[t.HostID] = append(tags[t.HostID], t.Tag)
		}
	}
	for _, h := range hosts {
		usedMHz, usedMem := h.CPUAllocated, h.MemAllocated
		if h.HypervisorType == models.HypervisorBareMetal && (usedMHz > 0 || usedMem > 0) {
			// A BareMetal machine holds one VM: taken is full.
			usedMHz, usedMem = int64(h.CPUs)*int64(h.Speed), h.RAM
		}
		snap.Hosts = append(snap.Hosts, planner.Host{ID: h.ID, ClusterID: h.ClusterID, PodID: h.PodID, Name: h.Name,
			Hypervisor: h.HypervisorType, Up: h.State == models.HostUp, Enabled: h.ResourceState == models.ResourceEnabled,
			Tags: tags[h.ID], CPUs: h.CPUs, MHz: h.Speed, MemoryBytes: h.RAM, UsedMHz: usedMHz, UsedMemory: usedMem})
	}
	over := PoolOverprovisioning(ctx, a.DB)
	poolFrac := vmConfigFloat(ctx, a.DB, "pool.storage.allocated.capacity.disablethreshold", 1)
	var pools []models.StoragePool
	if err := a.DB.NewSelect().Model(&pools).Where("zone_id = ?", zoneID).Scan(ctx); err != nil {
		return snap, err
	}
	ptags := map[int64][]string{}
	if len(pools) > 0 {
		var rows []models.StoragePoolTag
		if err := a.DB.NewSelect().Model(&rows).Where("pool_id IN (?)", bun.In(vmPoolIDs(pools))).Scan(ctx); err != nil {
			return snap, err
		}
		for _, t := range rows {
			ptags[t.PoolID] = append(ptags[t.PoolID], t.Tag)
		}
	}
	for _, p := range pools {
		snap.Pools = append(snap.Pools, planner.Pool{ID: p.ID, Name: p.Name, ClusterID: p.ClusterID, HostID: p.HostID,
			Up: p.State == models.PoolUp, Tags: ptags[p.ID], Capacity: p.CapacityBytes, Allocated: p.AllocatedBytes,
			Overcommit: over, DisableFrac: poolFrac})
	}
	return snap, nil
}

// placeCandidates is how many hosts a placement considers: those with the
// most free memory.
const placeCandidates = 64

// hostsWithMostRoom returns the hosts (of query, Up and enabled, with the
// CPU and memory the request needs) that have the most free memory with
// their cluster's overcommit ratio, at most placeCandidates of them, ties
// broken by id: what "ORDER BY free memory DESC, id LIMIT 64" returns,
// without computing every host's free memory, which costs a scan of the
// zone's hosts per placement (tens of milliseconds at 10,000 hosts).
//
// The hosts are read in order of allocated memory (an index), a batch at a
// time. A host's free memory is at most the zone's largest memory times
// its largest ratio, minus what it has allocated; once that bound of the
// last host read is below the 64th best free memory found (or equal with a
// higher id), no later host can enter the 64, and the reading stops: after
// one batch when the hosts are alike.
func (a *VMs) hostsWithMostRoom(ctx context.Context, zoneID int64, req planner.Request, query func(dest any) *bun.SelectQuery) ([]models.Host, error) {
	var bound struct {
		MaxRAM   sql.NullInt64   `bun:"max_ram"`
		MaxRatio sql.NullFloat64 `bun:"max_ratio"`
	}
	if err := a.DB.NewSelect().
		ColumnExpr("(SELECT MAX(h.ram) FROM hosts AS h WHERE h.zone_id = ? AND h.type = ?) AS max_ram", zoneID, models.HostTypeRouting).
		ColumnExpr("(SELECT MAX(CASE WHEN c.mem_overcommit_ratio > 0 THEN c.mem_overcommit_ratio ELSE 1 END) FROM clusters AS c WHERE c.zone_id = ?) AS max_ratio", zoneID).
		Scan(ctx, &bound); err != nil {
		return nil, err
	}
	if !bound.MaxRAM.Valid {
		return nil, nil
	}
	maxMem := float64(bound.MaxRAM.Int64) * max(bound.MaxRatio.Float64, 1)
	ratio := func(col string) string {
		return "(CASE WHEN c." + col + " > 0 THEN c." + col + " ELSE 1 END)"
	}
	type cand struct {
		models.Host `bun:",extend"`
		Free        anyNumber `bun:"mem_free"`
	}
	better := func(free anyNumber, id int64, than *cand) bool {
		return free > than.Free || free == than.Free && id < than.ID
	}
	var best []cand
	var lastAlloc, lastID int64 = -1, 0
	for {
		var batch []cand
		q := query(&batch).ColumnExpr("host.ram * "+ratio("mem_overcommit_ratio")+" - host.mem_allocated AS mem_free").
			Join("JOIN clusters AS c ON c.id = host.cluster_id").
			Where("host.state = ? AND host.resource_state = ?", models.HostUp, models.ResourceEnabled).
			Where("host.cpus * host.speed * "+ratio("cpu_overcommit_ratio")+" - host.cpu_allocated >= ?", int64(req.VCPUs)*int64(req.MHz)).
			Where("host.ram * "+ratio("mem_overcommit_ratio")+" - host.mem_allocated >= ?", req.MemoryBytes).
			OrderExpr("host.mem_allocated, host.id").Limit(placeCandidates)
		if req.Hypervisor != "" {
			q = q.Where("host.hypervisor_type = ?", req.Hypervisor)
		}
		if lastID != 0 {
			q = q.Where("(host.mem_allocated > ? OR host.mem_allocated = ? AND host.id > ?)", lastAlloc, lastAlloc, lastID)
		}
		if err := q.Scan(ctx); err != nil {
			return nil, err
		}
		best = append(best, batch...)
		sort.Slice(best, func(i, j int) bool { return better(best[i].Free, best[i].ID, &best[j]) })
		if len(best) > placeCandidates {
			best = best[:placeCandidates]
		}
		if len(batch) < placeCandidates {
			break
		}
		last := &batch[len(batch)-1]
		lastAlloc, lastID = last.MemAllocated, last.ID
		if len(best) == placeCandidates && !better(anyNumber(maxMem-float64(lastAlloc)), lastID, &best[len(best)-1]) {
			break
		}
	}
	hosts := make([]models.Host, len(best))
	for i := range best {
		hosts[i] = best[i].Host
	}
	return hosts, nil
}

// anyNumber scans a number however the database computed it (SQLite
// yields an integer where a product has no REAL factor).
type anyNumber float64

func (n *anyNumber) Scan(src any) error {
	switch v := src.(type) {
	case int64:
		*n = anyNumber(v)
	case float64:
		*n = anyNumber(v)
	case []byte:
		f, err := strconv.ParseFloat(string(v), 64)
		*n = anyNumber(f)
		return err
	case string:
		f, err := strconv.ParseFloat(v, 64)
		*n = anyNumber(f)
		return err
	default:
		return fmt.Errorf("not a number: %T", src)
	}
	return nil
}

func vmPoolIDs(pools []models.StoragePool) []int64 {
	ids := make([]int64, len(pools))
	for i, p := range pools {
		ids[i] = p.ID
	}
	return ids
}

// errVMMoved is a VM that left Starting while being placed.
var errVMMoved = errors.New("vm moved")

// reserve takes one placement for the VM in one transaction: the host's
// CPU and memory, each new volume's pool, and the records of both.
func (a *VMs) reserve(ctx context.Context, vm *models.VMInstance, pr *vmPlaceRequest, p planner.Placement) error {
	cpuRatio, memRatio, err := vmClusterRatios(ctx, a.DB, p.ClusterID)
	if err != nil {
		return err
	}
	over := PoolOverprovisioning(ctx, a.DB)
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var hv string
		if err := tx.NewSelect().Model((*models.Host)(nil)).Column("hypervisor_type").Where("id = ?", p.HostID).Scan(ctx, &hv); err != nil {
			return err
		}
		// A VM booting an ISO takes the hypervisor of the host it lands on.
		res, err := tx.NewUpdate().Model((*models.VMInstance)(nil)).
			Set("host_id = ?", p.HostID).Set("pod_id = ?", p.PodID).Set("cluster_id = ?", p.ClusterID).
			Set("hypervisor_type = CASE WHEN hypervisor_type IS NULL OR hypervisor_type = '' THEN ? ELSE hypervisor_type END", hv).
			Set("update_count = update_count + 1").Set("update_time = ?", models.Now()).
			Where("id = ? AND state = ? AND host_id IS NULL", vm.ID, models.VMStarting).Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errVMMoved
		}
		if hv == models.HypervisorBareMetal {
			// A BareMetal VM is the whole machine: one at a time. The guarded
			// update serializes concurrent placements on the host's row.
			res, err := tx.NewUpdate().Model((*models.Host)(nil)).Set("update_count = update_count + 1").
				Where("id = ? AND cpu_allocated = 0 AND mem_allocated = 0", p.HostID).Exec(ctx)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return models.ErrNoCapacity
			}
		}
		if err := models.ReserveHost(ctx, tx, p.HostID, vmMHz(vm), vmMemBytes(vm), cpuRatio, memRatio); err != nil {
			return err
		}
		for i, v := range pr.vols {
			if err := models.ReservePool(ctx, tx, p.PoolIDs[i], v.Size, over); err != nil {
				return err
			}
			var podID any
			if p.PodID != 0 {
				podID = p.PodID
			}
			if _, err := tx.NewUpdate().Model((*models.Volume)(nil)).Set("pool_id = ?", p.PoolIDs[i]).Set("pod_id = ?", podID).
				Set("updated = ?", models.Now()).Where("id = ? AND pool_id IS NULL", v.ID).Exec(ctx); err != nil {
				return err
			}
		}
		return nil
	})
}

// VMPlace plans where a VM in Starting goes and reserves it: the planner
// orders the placements over a snapshot of the zone, and the first whose
// guarded reservation succeeds wins (others may have taken the rest
// meanwhile; then it plans again). The VM's last host comes first when
// asked and it fits. When nothing fits the error is a 533 with the
// planner's reasons. A VM placed already (a retry) keeps its place.
func (a *VMs) VMPlace(ctx context.Context, in VMPlaceInput) (VMPlacement, error) {
	vm, err := mustVM(ctx, a.DB, in.VMUUID)
	if err != nil {
		return VMPlacement{}, err
	}
	// Running on a host means this deploy already finished in a run whose
	// end Temporal never recorded (a worker died inside a batch of local
	// activities, which then run again on replay): keep it, never undo it.
	if vm.State != models.VMStarting && !(vm.State == models.VMRunning && vm.HostID != 0) {
		return VMPlacement{}, vmStateFail(vm, models.VMStarting)
	}
	if vm.HostID == 0 {
		// A VM with VM snapshots is still defined on its last host, with them.
		if in.Pins.HostID == 0 && vm.LastHostID != 0 {
			if has, err := VMHasSnapshots(ctx, a.DB, vm.ID); err != nil {
				return VMPlacement{}, err
			} else if has {
				in.Pins.HostID = vm.LastHostID
			}
		}
		pr, err := a.buildPlaceRequest(ctx, vm, in.Pins)
		if err != nil {
			return VMPlacement{}, err
		}
		if vm.HostID, err = a.place(ctx, vm, pr, in.Pins); err != nil {
			return VMPlacement{}, err
		}
	}
	out := VMPlacement{HostID: vm.HostID}
	var h models.Host
	if err := a.DB.NewSelect().Model(&h).Column("uuid", "name", "hypervisor_type").Where("id = ?", vm.HostID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		return out, err
	}
	out.HostUUID, out.HostName, out.QuickProvision = h.UUID, h.Name, QuickProvisionTypes[h.HypervisorType]
	out.TaskProvision = TaskProvisionTypes[h.HypervisorType]
	out.BareMetal = h.HypervisorType == models.HypervisorBareMetal
	if err := a.DB.NewSelect().Model((*models.Nic)(nil)).Column("uuid").Where("instance_id = ? AND state = ?", vm.ID, models.NicAllocated).
		Order("device_id").Scan(ctx, &out.NicUUIDs); err != nil {
		return out, err
	}
	if err := a.DB.NewSelect().Model((*models.Volume)(nil)).Column("uuid").Where("instance_id = ? AND state = ?", vm.ID, models.VolumeAllocated).
		Order("device_id").Scan(ctx, &out.VolumeUUID); err != nil {
		return out, err
	}
	if vm.TemplateID != 0 {
		var poolID int64
		err := a.DB.NewSelect().Model((*models.Volume)(nil)).Column("pool_id").
			Where("instance_id = ? AND volume_type = ? AND state = ? AND pool_id IS NOT NULL", vm.ID, models.VolumeRoot, models.VolumeAllocated).
			Limit(1).Scan(ctx, &poolID)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return out, err
		}
		if poolID != 0 {
			there, err := a.DB.NewSelect().Model((*models.TemplatePoolRef)(nil)).
				Where("pool_id = ? AND template_id = ? AND download_state = ? AND install_path <> ''", poolID, vm.TemplateID, models.DownloadDownloaded).Exists(ctx)
			if err != nil {
				return out, err
			}
			out.CopyTemplate = !there
		}
	}
	if vm.ISOID != 0 {
		poolID, err := vmRootPool(ctx, a.DB, vm)
		if err != nil {
			return out, err
		}
		if poolID != 0 {
			there, err := poolHasImage(ctx, a.DB, poolID, vm.ISOID)
			if err != nil {
				return out, err
			}
			out.CopyISO = !there
		}
	}
	return out, nil
}

// place reserves a host (and pools) for the VM and returns the host.
func (a *VMs) place(ctx context.Context, vm *models.VMInstance, pr *vmPlaceRequest, pins VMPins) (int64, error) {
	for attempt := 0; attempt < 3; attempt++ {
		snap, err := a.planSnapshot(ctx, vm.ZoneID, pr.req, false)
		if err != nil {
			return 0, err
		}
		placements, perr := planner.Plan(pr.req, snap)
		if perr != nil {
			if snap, err = a.planSnapshot(ctx, vm.ZoneID, pr.req, true); err != nil {
				return 0, err
			}
			if placements, perr = planner.Plan(pr.req, snap); perr != nil {
				return 0, cserr.Temporal(cserr.Capacity("Unable to create a deployment for virtual machine %s: %s", vm.Name, perr.Error()))
			}
		}
		if pins.ConsiderLastHost && vm.LastHostID != 0 {
			for i, p := range placements {
				if p.HostID == vm.LastHostID {
					placements = append([]planner.Placement{p}, append(placements[:i:i], placements[i+1:]...)...)
					break
				}
			}
		}
		for i, p := range placements {
			if i >= 16 {
				break
			}
			err := a.reserve(ctx, vm, pr, p)
			switch {
			case err == nil:
				return p.HostID, nil
			case errors.Is(err, errVMMoved):
				cur, lerr := mustVM(ctx, a.DB, vm.UUID)
				if lerr != nil {
					return 0, lerr
				}
				if (cur.State == models.VMStarting || cur.State == models.VMRunning) && cur.HostID != 0 {
					return cur.HostID, nil // placed by an earlier attempt of this step
				}
				return 0, vmStateFail(cur, models.VMStarting)
			case !errors.Is(err, models.ErrNoCapacity):
				return 0, err
			}
		}
	}
	return 0, cserr.Temporal(cserr.Capacity("Unable to create a deployment for virtual machine %s: the capacity it fits in was taken by concurrent deployments", vm.Name))
}

// VMUnplace gives back a VM's host reservation and the pool reservations
// of its volumes not created yet (the undo of VMPlace). Nothing reserved
// is success.
func (a *VMs) VMUnplace(ctx context.Context, in VMRefInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		vm, err := vmByUUID(ctx, tx, in.VMUUID)
		if errors.Is(err, models.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return vmUnplace(ctx, tx, vm)
	})
}

func vmUnplace(ctx context.Context, tx bun.IDB, vm *models.VMInstance) error {
	if vm.HostID != 0 {
		if err := models.ReleaseHost(ctx, tx, vm.HostID, vmMHz(vm), vmMemBytes(vm)); err != nil {
			return err
		}
		if _, err := tx.NewUpdate().Model((*models.VMInstance)(nil)).Set("host_id = NULL").Set("last_host_id = ?", vm.HostID).
			Set("update_count = update_count + 1").Set("update_time = ?", models.Now()).Where("id = ?", vm.ID).Exec(ctx); err != nil {
			return err
		}
		vm.LastHostID, vm.HostID = vm.HostID, 0
	}
	var vols []models.Volume
	if err := tx.NewSelect().Model(&vols).Where("instance_id = ? AND state = ? AND pool_id IS NOT NULL", vm.ID, models.VolumeAllocated).Scan(ctx); err != nil {
		return err
	}
	for _, v := range vols {
		if err := models.ReleasePool(ctx, tx, v.PoolID, v.Size); err != nil {
			return err
		}
		if _, err := tx.NewUpdate().Model((*models.Volume)(nil)).Set("pool_id = NULL").Set("updated = ?", models.Now()).
			Where("id = ?", v.ID).Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

// ---- storage ----

// VMCopyTemplate makes sure the template of the VM's root volume is on the
// pool the volume was placed on, copying it from secondary storage once
// (heartbeating; the template_pool_refs row records it). A VM booting an
// ISO, a root volume created already, or a copy there already is success.
func (a *VMs) VMCopyTemplate(ctx context.Context, in VMRefInput) error {
	vm, err := mustVM(ctx, a.DB, in.VMUUID)
	if err != nil || vm.TemplateID == 0 {
		return err
	}
	var root models.Volume
	if err := a.DB.NewSelect().Model(&root).Where("instance_id = ? AND volume_type = ?", vm.ID, models.VolumeRoot).
		Order("id").Limit(1).Scan(ctx); err != nil {
		return err
	}
	if root.State != models.VolumeAllocated || root.PoolID == 0 {
		return nil
	}
	return a.copyImageToPool(ctx, vm, root.PoolID, vm.TemplateID)
}

// copyImageToPool copies a template or ISO from secondary storage of the
// VM's zone to a primary pool once (heartbeating; the template_pool_refs
// row records it, and concurrent copies agree through it).
func (a *VMs) copyImageToPool(ctx context.Context, vm *models.VMInstance, poolID, templateID int64) error {
	var ref models.TemplatePoolRef
	err := a.DB.NewSelect().Model(&ref).Where("pool_id = ? AND template_id = ?", poolID, templateID).Limit(1).Scan(ctx)
	switch {
	case err == nil && ref.DownloadState == models.DownloadDownloaded && ref.InstallPath != "":
		return nil
	case errors.Is(err, sql.ErrNoRows):
		ref = models.TemplatePoolRef{PoolID: poolID, TemplateID: templateID, DownloadState: models.DownloadNotDownloaded,
			State: models.ObjectAllocated, Created: models.Now(), LastUpdated: models.Now()}
		if _, err := a.DB.NewInsert().Model(&ref).Exec(ctx); err != nil {
			// Another deployment inserted it first: use that row.
			if serr := a.DB.NewSelect().Model(&ref).Where("pool_id = ? AND template_id = ?", poolID, templateID).Limit(1).Scan(ctx); serr != nil {
				return err
			}
		}
	case err != nil:
		return err
	}
	var t models.Template
	if err := a.DB.NewSelect().Model(&t).Where("id = ?", templateID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		return err
	}
	src, err := a.templateSource(ctx, &t, vm.ZoneID)
	if err != nil {
		return err
	}
	_, pd, drv, err := a.vmPool(ctx, poolID)
	if err != nil {
		return err
	}
	// Several deployments onto a new pool may copy at once; a copy that
	// one of them finished is never marked in progress (or failed) again,
	// since deployments that saw it there skip the copy and create their
	// volumes from it.
	notThere := "NOT (download_state = ? AND install_path <> '')"
	res, err := a.DB.NewUpdate().Model((*models.TemplatePoolRef)(nil)).Set("download_state = ?", models.DownloadInProgress).
		Set("state = ?", models.ObjectCreating).Set("last_updated = ?", models.Now()).Set("job_id = ?", vmJobID(ctx)).
		Where("id = ?", ref.ID).Where(notThere, models.DownloadDownloaded).Exec(ctx)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		// Copied meanwhile, or (MySQL counts changed rows) already marked
		// so by this job's earlier attempt in the same second.
		var cur models.TemplatePoolRef
		if err := a.DB.NewSelect().Model(&cur).Where("id = ?", ref.ID).Limit(1).Scan(ctx); err != nil {
			return err
		}
		if cur.DownloadState == models.DownloadDownloaded && cur.InstallPath != "" {
			return nil
		}
	}
	vol, err := callHeartbeating(ctx, func(ctx context.Context) (storage.Volume, error) {
		st := storage.Template{ID: t.UUID, Source: src, Format: strings.ToLower(t.Format), SizeBytes: t.Size}
		if vsphere.IsTemplateSource(t.URL) {
			st.URL = t.URL // nothing on secondary storage: the pool's vCenter clones it
		}
		return drv.CopyTemplateToPool(ctx, st, pd, heartbeatProgress(ctx))
	})
	if err != nil {
		_, _ = a.DB.NewUpdate().Model((*models.TemplatePoolRef)(nil)).Set("download_state = ?", models.DownloadError).
			Set("state = ?", models.ObjectFailed).Set("error_str = ?", vmClip(err.Error(), 1000)).Set("last_updated = ?", models.Now()).
			Where("id = ?", ref.ID).Where(notThere, models.DownloadDownloaded).Exec(context.WithoutCancel(ctx))
		return driverFailure(err)
	}
	_, err = a.DB.NewUpdate().Model((*models.TemplatePoolRef)(nil)).Set("download_state = ?", models.DownloadDownloaded).
		Set("state = ?", models.ObjectReady).Set("download_pct = 100").Set("install_path = ?", vol.Path).Set("local_path = ?", vol.Path).
		Set("template_size = ?", vol.SizeBytes).Set("error_str = ''").Set("last_updated = ?", models.Now()).
		Where("id = ?", ref.ID).Exec(ctx)
	return err
}

func vmJobID(ctx context.Context) string {
	if info := activityInfo(ctx); info != nil {
		return info.WorkflowExecution.ID
	}
	return ""
}

func vmClip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// templateSource finds a downloaded copy of a template on secondary storage
// of the zone (or region-wide).
func (a *VMs) templateSource(ctx context.Context, t *models.Template, zoneID int64) (storage.Location, error) {
	var ref models.TemplateStoreRef
	err := a.DB.NewSelect().Model(&ref).
		Join("JOIN image_stores AS st ON st.id = ?TableAlias.store_id").
		Where("?TableAlias.template_id = ? AND ?TableAlias.download_state = ? AND ?TableAlias.destroyed = ?", t.ID, models.DownloadDownloaded, false).
		Where("st.removed IS NULL AND (st.zone_id = ? OR st.zone_id IS NULL)", zoneID).
		OrderExpr("st.zone_id IS NULL").OrderExpr("?TableAlias.id").Limit(1).Scan(ctx)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return storage.Location{}, fail(cserr.ParamError, "Template %s is not downloaded to secondary storage of the zone", t.Name)
		}
		return storage.Location{}, err
	}
	var st models.ImageStore
	if err := a.DB.NewSelect().Model(&st).Where("id = ?", ref.StoreID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		return storage.Location{}, err
	}
	var details []models.ImageStoreDetail
	if err := a.DB.NewSelect().Model(&details).Where("store_id = ?", st.ID).Scan(ctx); err != nil {
		return storage.Location{}, err
	}
	d := storage.ImageStore{ID: st.UUID, Name: st.Name, Provider: st.ProviderName, URL: st.URL, Details: map[string]string{}}
	for _, kv := range details {
		d.Details[kv.Name] = kv.Value
	}
	return storage.Location{Store: d, Path: ref.InstallPath}, nil
}

// VMVolumesInput names volumes of a VM.
type VMVolumesInput struct {
	VMUUID      string
	VolumeUUIDs []string
	Tasks       map[string]string `json:",omitempty"` // as VMRefInput's
}

// VMCreateVolumes creates the VM's volumes that are placed but not
// created: the root volume from the template copy on its pool (or blank
// for an ISO), data volumes blank. A volume's path in its pool is its
// UUID, so a retried create finds it. Created volumes are Ready.
func (a *VMs) VMCreateVolumes(ctx context.Context, in VMVolumesInput) error {
	ctx = withPriorTasks(ctx, in.Tasks)
	vm, err := mustVM(ctx, a.DB, in.VMUUID)
	if err != nil || len(in.VolumeUUIDs) == 0 {
		return err
	}
	var vols []models.Volume
	if err := a.DB.NewSelect().Model(&vols).Where("instance_id = ? AND uuid IN (?)", vm.ID, bun.In(in.VolumeUUIDs)).
		Order("device_id").Scan(ctx); err != nil {
		return err
	}
	for _, v := range vols {
		if v.State != models.VolumeAllocated {
			continue
		}
		if v.PoolID == 0 {
			return fail(cserr.InternalError, "volume %s has no storage pool: the VM was not placed", v.Name)
		}
		_, pd, drv, err := a.vmPool(ctx, v.PoolID)
		if err != nil {
			return err
		}
		spec := storage.VolumeSpec{ID: v.UUID, Path: v.UUID, SizeBytes: v.Size, Format: strings.ToLower(v.Format), Provisioning: v.ProvisioningType}
		var created storage.Volume
		if v.VolumeType == models.VolumeRoot && vm.TemplateID != 0 && v.TemplateID != 0 {
			var ref models.TemplatePoolRef
			if err := a.DB.NewSelect().Model(&ref).Where("pool_id = ? AND template_id = ? AND download_state = ?", v.PoolID, v.TemplateID, models.DownloadDownloaded).
				Limit(1).Scan(ctx); err != nil {
				if errors.Is(err, sql.ErrNoRows) {
					return fail(cserr.InternalError, "template of volume %s is not on its pool", v.Name)
				}
				return err
			}
			created, err = callHeartbeating(ctx, func(ctx context.Context) (storage.Volume, error) {
				return drv.CreateVolumeFromTemplate(ctx, pd, ref.InstallPath, spec)
			})
		} else {
			created, err = callHeartbeating(ctx, func(ctx context.Context) (storage.Volume, error) {
				return drv.CreateVolume(ctx, pd, spec)
			})
		}
		if err != nil {
			return driverFailure(err)
		}
		format := strings.ToUpper(created.Format)
		if _, err := a.DB.NewUpdate().Model((*models.Volume)(nil)).Set("state = ?", models.VolumeReady).Set("path = ?", created.Path).
			Set("format = ?", format).Set("updated = ?", models.Now()).Set("update_count = update_count + 1").
			Where("id = ? AND state = ?", v.ID, models.VolumeAllocated).Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

// VMCreateVolumesQuick is VMCreateVolumes as a local activity that waits
// on the driver's backend tasks a few seconds only: Pending, with the
// tasks, when one still runs (the workflow then runs VMCreateVolumes with
// them). A retried attempt finds the disks an earlier one made by path.
func (a *VMs) VMCreateVolumesQuick(ctx context.Context, in VMVolumesInput) (VMQuickResult, error) {
	return quickStep(ctx, func(ctx context.Context) error { return a.VMCreateVolumes(ctx, in) })
}

// VMDefineStartQuick is VMDefineStart as a local activity, as
// VMCreateVolumesQuick is VMCreateVolumes; a retried attempt finds the VM
// by its UUID.
func (a *VMs) VMDefineStartQuick(ctx context.Context, in VMRefInput) (VMQuickResult, error) {
	return quickStep(ctx, func(ctx context.Context) error { return a.VMDefineStart(ctx, in) })
}

// VMDeleteVolumes deletes volumes from their pools and leaves them
// Allocated on their pool (the undo of VMCreateVolumes; VMUnplace gives the
// pool back). A volume not there is success.
func (a *VMs) VMDeleteVolumes(ctx context.Context, in VMVolumesInput) error {
	if len(in.VolumeUUIDs) == 0 {
		return nil
	}
	var vols []models.Volume
	if err := a.DB.NewSelect().Model(&vols).Where("uuid IN (?)", bun.In(in.VolumeUUIDs)).Scan(ctx); err != nil {
		return err
	}
	for _, v := range vols {
		if v.PoolID != 0 {
			if err := a.deleteOnPool(ctx, &v); err != nil {
				return err
			}
		}
		if _, err := a.DB.NewUpdate().Model((*models.Volume)(nil)).Set("state = ?", models.VolumeAllocated).Set("path = ''").
			Set("updated = ?", models.Now()).Where("id = ? AND state IN (?)", v.ID, bun.In([]string{models.VolumeReady, models.VolumeAllocated})).
			Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (a *VMs) deleteOnPool(ctx context.Context, v *models.Volume) error {
	p, pd, drv, err := a.vmPool(ctx, v.PoolID)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	}
	if !p.Removed.IsZero() {
		return nil // the pool went, and its volumes with it
	}
	path := v.Path
	if path == "" {
		path = v.UUID
	}
	_, err = callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, drv.DeleteVolume(ctx, pd, path)
	})
	if err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
		return driverFailure(err)
	}
	return nil
}

// ---- on the host ----

// vmSpec is what the hypervisor gets for a VM: its shape, its created
// volumes and its NICs.
func (a *VMs) vmSpec(ctx context.Context, vm *models.VMInstance) (hypervisor.VMSpec, error) {
	spec := hypervisor.VMSpec{Name: vm.InstanceName, UUID: vm.UUID, DisplayName: vm.DisplayName, VCPUs: vm.CPU, MHz: vm.Speed,
		MemoryBytes: vmMemBytes(vm), UserData: vm.UserData, ConsolePassword: vm.VNCPassword,
		Metadata: map[string]string{"account": strconv.FormatInt(vm.AccountID, 10)}}
	if keys, err := vmPublicKeys(ctx, a.DB, vm); err != nil {
		return spec, err
	} else if keys != "" {
		spec.Metadata["public-keys"] = keys
	}
	if vm.HostName != "" {
		spec.Metadata["hostname"] = vm.HostName // what the guest is told its name is
	}
	if vm.OSTypeID != 0 {
		var os models.OSType
		if err := a.DB.NewSelect().Model(&os).Column("display_name").Where("id = ?", vm.OSTypeID).WhereAllWithDeleted().Limit(1).Scan(ctx); err == nil {
			spec.OSType = os.DisplayName
		}
	}
	var vols []models.Volume
	if err := a.DB.NewSelect().Model(&vols).Where("instance_id = ? AND state = ?", vm.ID, models.VolumeReady).Order("device_id").Scan(ctx); err != nil {
		return spec, err
	}
	pools := map[int64]string{}
	for _, v := range vols {
		if _, ok := pools[v.PoolID]; !ok {
			u, err := uuidOf(ctx, a.DB, "storage_pools", v.PoolID)
			if err != nil {
				return spec, err
			}
			pools[v.PoolID] = u
		}
		spec.Disks = append(spec.Disks, hypervisor.Disk{VolumeID: v.UUID, Pool: pools[v.PoolID], Path: v.Path,
			Format: strings.ToLower(v.Format), SizeBytes: v.Size, DeviceID: int(v.DeviceID), Bus: "virtio"})
	}
	if vm.ISOID != 0 {
		cd, err := a.vmISODisk(ctx, vm)
		if err != nil {
			return spec, err
		}
		if cd.Path != "" {
			spec.Disks = append(spec.Disks, cd)
			spec.BootOrder = []hypervisor.BootDevice{hypervisor.BootCDROM, hypervisor.BootDisk}
		}
	}
	var nics []models.Nic
	if err := a.DB.NewSelect().Model(&nics).Where("instance_id = ?", vm.ID).Order("device_id").Scan(ctx); err != nil {
		return spec, err
	}
	labels := map[int64]string{}
	for _, n := range nics {
		vlan := 0
		if s, ok := strings.CutPrefix(n.BroadcastURI, "vlan://"); ok {
			vlan, _ = strconv.Atoi(s)
		}
		label, err := nicLabel(ctx, a.Deps, n.NetworkID, vm.HypervisorType, labels)
		if err != nil {
			return spec, err
		}
		spec.NICs = append(spec.NICs, hypervisor.NIC{MAC: n.MacAddress, Label: label, VLAN: vlan, IP: n.IP4Address, Netmask: n.Netmask,
			Gateway: n.Gateway, DeviceID: n.DeviceID, Model: "virtio", Default: n.DefaultNic})
	}
	return spec, nil
}

// vmPublicKeys are the public keys of the VM's SSH key pairs, one a line
// in the order the deploy named them: the metadata a guest's cloud-init
// reads as public-keys (CloudStack serves them from the virtual router or
// a config drive). A key pair deleted since is left out.
func vmPublicKeys(ctx context.Context, db bun.IDB, vm *models.VMInstance) (string, error) {
	names := vmTagList(vm.KeyPairs)
	if len(names) == 0 {
		return "", nil
	}
	var pairs []models.SSHKeyPair
	if err := db.NewSelect().Model(&pairs).Column("keypair_name", "public_key").
		Where("account_id = ? AND keypair_name IN (?)", vm.AccountID, bun.In(names)).Scan(ctx); err != nil {
		return "", err
	}
	byName := map[string]string{}
	for _, p := range pairs {
		byName[p.Name] = strings.TrimSpace(p.PublicKey)
	}
	var keys []string
	for _, n := range names {
		if k := byName[n]; k != "" {
			keys = append(keys, k)
		}
	}
	return strings.Join(keys, "\n"), nil
}

// VMDefineStart defines the VM on the host it was placed on and powers it
// on. Both are idempotent by the VM's UUID on the driver side.
func (a *VMs) VMDefineStart(ctx context.Context, in VMRefInput) error {
	ctx = withPriorTasks(ctx, in.Tasks)
	vm, err := mustVM(ctx, a.DB, in.VMUUID)
	if err != nil {
		return err
	}
	// Running: started by a run whose end was not recorded (see VMPlace);
	// define and start are idempotent on the driver.
	if (vm.State != models.VMStarting && vm.State != models.VMRunning) || vm.HostID == 0 {
		return vmStateFail(vm, models.VMStarting+" on a host")
	}
	spec, err := a.vmSpec(ctx, vm)
	if err != nil {
		return err
	}
	_, h, drv, err := a.vmHost(ctx, vm.HostID)
	if err != nil {
		return err
	}
	_, err = callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) {
		if _, err := drv.DefineVM(ctx, h, spec); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, drv.StartVM(ctx, h, spec.Ref())
	})
	return driverFailure(err)
}

// VMDestroyOnHost powers the VM off and undefines it on the host it holds
// (the undo of VMDefineStart). A VM not there is success.
func (a *VMs) VMDestroyOnHost(ctx context.Context, in VMRefInput) error {
	vm, err := vmByUUID(ctx, a.DB, in.VMUUID)
	if errors.Is(err, models.ErrNotFound) {
		return nil
	}
	if err != nil || vm.HostID == 0 {
		return err
	}
	return a.destroyOn(ctx, vm, vm.HostID)
}

func (a *VMs) destroyOn(ctx context.Context, vm *models.VMInstance, hostID int64) error {
	_, h, drv, err := a.vmHost(ctx, hostID)
	if errors.Is(err, errVMHostGone) {
		return nil
	}
	if err != nil {
		return err
	}
	// A VM with VM snapshots is only powered off: they live with its definition.
	keep, err := VMHasSnapshots(ctx, a.DB, vm.ID)
	if err != nil {
		return err
	}
	ref := hypervisor.VMRef{Name: vm.InstanceName, UUID: vm.UUID}
	_, err = callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) {
		if keep {
			return struct{}{}, drv.StopVM(ctx, h, ref, hypervisor.StopOptions{Force: true})
		}
		return struct{}{}, drv.DestroyVM(ctx, h, ref)
	})
	if err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
		return driverFailure(err)
	}
	return nil
}

// VMStopInput stops a VM on its host.
type VMStopInput struct {
	VMUUID string
	Forced bool
}

// VMStopOnHost shuts the VM down on its host and undefines it there (a
// stopped VM holds no host: its next start may go elsewhere). A VM not on
// any host, or not there, is success.
func (a *VMs) VMStopOnHost(ctx context.Context, in VMStopInput) error {
	vm, err := mustVM(ctx, a.DB, in.VMUUID)
	if err != nil || vm.HostID == 0 {
		return err
	}
	_, h, drv, err := a.vmHost(ctx, vm.HostID)
	if err != nil {
		return err
	}
	ref := hypervisor.VMRef{Name: vm.InstanceName, UUID: vm.UUID}
	// A VM with VM snapshots stays defined: they live with its definition.
	keep, err := vmKeepsDefinition(ctx, a.DB, vm)
	if err != nil {
		return err
	}
	_, err = callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) {
		if err := drv.StopVM(ctx, h, ref, hypervisor.StopOptions{Force: in.Forced}); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
			return struct{}{}, err
		}
		if keep {
			return struct{}{}, nil
		}
		if err := drv.DestroyVM(ctx, h, ref); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
			return struct{}{}, err
		}
		return struct{}{}, nil
	})
	return driverFailure(err)
}

// VMRebootOnHost reboots the VM on its host.
func (a *VMs) VMRebootOnHost(ctx context.Context, in VMRefInput) error {
	vm, err := mustVM(ctx, a.DB, in.VMUUID)
	if err != nil {
		return err
	}
	if vm.HostID == 0 {
		return vmStateFail(vm, "on a host")
	}
	_, h, drv, err := a.vmHost(ctx, vm.HostID)
	if err != nil {
		return err
	}
	_, err = callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, drv.RebootVM(ctx, h, hypervisor.VMRef{Name: vm.InstanceName, UUID: vm.UUID})
	})
	return driverFailure(err)
}

// ---- state changes ----

// VMMarkInput moves a VM between states at the end (or failure) of a job.
type VMMarkInput struct {
	VMUUID string
	From   []string
	To     string
	// Reason is kept as the VM's state_reason (empty clears it).
	Reason string
	// EventType, when set, records an event (ERROR level with a reason);
	// Usage records a usage event of that type.
	EventType string
	Usage     string
	// Deployed marks the end of a deployment: VM.CREATE usage.
	Deployed bool
	Actor    Actor
}

// VMMark moves the VM with a guarded update. Already in To (a retry) is
// success. Moving into Error from a state that holds counts gives them
// back; into Running it records the power state.
func (a *VMs) VMMark(ctx context.Context, in VMMarkInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		vm, err := mustVM(ctx, tx, in.VMUUID)
		if err != nil {
			return err
		}
		if vm.State == in.To {
			return nil
		}
		prev := vm.State
		set := map[string]any{"state_reason": in.Reason}
		if in.To == models.VMRunning {
			set["power_state"] = "PowerOn"
			set["power_state_update_time"] = models.Now()
		} else if in.To == models.VMStopped || in.To == models.VMError {
			set["power_state"] = "PowerOff"
			set["power_state_update_time"] = models.Now()
		}
		if err := vmMove(ctx, tx, vm, in.To, in.From, set); err != nil {
			if errors.Is(err, models.ErrStateChanged) {
				return vmStateFail(vm, in.From...)
			}
			return err
		}
		if in.To == models.VMError && vmHoldsCounts(prev) {
			if err := ReleaseCounts(ctx, tx, vm.AccountID, VMCounts(vm)); err != nil {
				return err
			}
		}
		if in.Deployed {
			if err := vmUsage(ctx, tx, vm, "VM.CREATE"); err != nil {
				return err
			}
		}
		if in.Usage != "" {
			if err := vmUsage(ctx, tx, vm, in.Usage); err != nil {
				return err
			}
		}
		if in.EventType != "" {
			level, text := "INFO", vmEventText(in.EventType, vm)
			if in.Reason != "" {
				level, text = "ERROR", text+" failed: "+in.Reason
			}
			return vmEvent(ctx, tx, in.Actor, vm, in.EventType, level, text)
		}
		return nil
	})
}

func vmEventText(typ string, vm *models.VMInstance) string {
	verb := map[string]string{
		"VM.CREATE": "Deployed", "VM.START": "Started", "VM.STOP": "Stopped", "VM.REBOOT": "Rebooted",
		"VM.DESTROY": "Destroyed", "VM.EXPUNGE": "Expunged", "VM.MIGRATE": "Migrated", "VM.UPGRADE": "Scaled",
	}[typ]
	if verb == "" {
		verb = typ
	}
	return verb + " virtual machine " + vm.Name + " (" + vm.InstanceName + ")"
}

// VMStoppedInput ends a stop (or destroy) whose host side is done.
type VMStoppedInput struct {
	VMUUID    string
	To        string // Stopped or Destroyed
	EventType string
	// WasError says a destroyed VM was in Error (its counts went already).
	WasError bool
	Actor    Actor
}

// VMStopped gives back the VM's host, keeps it as its last host and moves
// Stopping to To, in one transaction; destroying also destroys its volumes
// (in the inventory; expunge deletes them) and gives back its counts.
func (a *VMs) VMStopped(ctx context.Context, in VMStoppedInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		vm, err := mustVM(ctx, tx, in.VMUUID)
		if err != nil {
			return err
		}
		if vm.State == in.To {
			return nil
		}
		if vm.State != models.VMStopping {
			return vmStateFail(vm, models.VMStopping)
		}
		if err := vmUnplace(ctx, tx, vm); err != nil {
			return err
		}
		set := map[string]any{"state_reason": "", "power_state": "PowerOff", "power_state_update_time": models.Now()}
		if err := vmMove(ctx, tx, vm, in.To, []string{models.VMStopping}, set); err != nil {
			return vmStateFail(vm, models.VMStopping)
		}
		usage := "VM.STOP"
		if in.To == models.VMDestroyed {
			prev := models.VMStopped
			if in.WasError {
				prev = models.VMError
			}
			if err := DestroyAccounting(ctx, tx, vm, prev); err != nil {
				return err
			}
			// A destroyed BareMetal VM gives its machine up.
			if err := bmForget(ctx, tx, vm.UUID); err != nil {
				return err
			}
			// Its VM snapshots went from the host with it.
			if err := removeVMSnapshotsOf(ctx, tx, vm.ID); err != nil {
				return err
			}
			usage = "VM.DESTROY"
		}
		if err := vmUsage(ctx, tx, vm, usage); err != nil {
			return err
		}
		if in.EventType != "" {
			return vmEvent(ctx, tx, in.Actor, vm, in.EventType, "INFO", vmEventText(in.EventType, vm))
		}
		return nil
	})
}

// ---- migration ----

// VMMigrateInput moves a Migrating VM to a host of its cluster.
type VMMigrateInput struct {
	VMUUID         string
	TargetHostUUID string
	Reason         string // for VMMigrateAbort
	Actor          Actor
}

// VMMigrateReserve reserves the VM's CPU and memory on the target host
// before it moves (vm.reservation_id records it). No room is a 533.
func (a *VMs) VMMigrateReserve(ctx context.Context, in VMMigrateInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		vm, err := mustVM(ctx, tx, in.VMUUID)
		if err != nil {
			return err
		}
		if vm.State != models.VMMigrating {
			return vmStateFail(vm, models.VMMigrating)
		}
		if vm.ReservationID == in.TargetHostUUID {
			return nil
		}
		var h models.Host
		if err := tx.NewSelect().Model(&h).Where("uuid = ?", in.TargetHostUUID).Limit(1).Scan(ctx); err != nil {
			return fail(cserr.ParamError, "Unable to find host by id %s", in.TargetHostUUID)
		}
		cpuRatio, memRatio, err := vmClusterRatios(ctx, tx, h.ClusterID)
		if err != nil {
			return err
		}
		if err := models.ReserveHost(ctx, tx, h.ID, vmMHz(vm), vmMemBytes(vm), cpuRatio, memRatio); err != nil {
			if errors.Is(err, models.ErrNoCapacity) {
				return fail(cserr.InsufficientCap, "Host %s has no room for virtual machine %s (%d MHz, %d MiB)", h.Name, vm.Name, vmMHz(vm), vm.RAMSize)
			}
			return err
		}
		_, err = tx.NewUpdate().Model((*models.VMInstance)(nil)).Set("reservation_id = ?", h.UUID).Set("update_count = update_count + 1").
			Where("id = ? AND state = ?", vm.ID, models.VMMigrating).Exec(ctx)
		return err
	})
}

// VMMigrateOnHost migrates the VM live to the target through the driver.
// A VM already on the target is success.
func (a *VMs) VMMigrateOnHost(ctx context.Context, in VMMigrateInput) error {
	vm, err := mustVM(ctx, a.DB, in.VMUUID)
	if err != nil {
		return err
	}
	var dst models.Host
	if err := a.DB.NewSelect().Model(&dst).Column("id").Where("uuid = ?", in.TargetHostUUID).Limit(1).Scan(ctx); err != nil {
		return err
	}
	if vm.HostID == dst.ID {
		return nil
	}
	_, src, drv, err := a.vmHost(ctx, vm.HostID)
	if err != nil {
		return err
	}
	_, to, _, err := a.vmHost(ctx, dst.ID)
	if err != nil {
		return err
	}
	_, err = callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, drv.MigrateVM(ctx, src, hypervisor.VMRef{Name: vm.InstanceName, UUID: vm.UUID}, to, hypervisor.MigrateOptions{Live: true})
	})
	return driverFailure(err)
}

// VMMigrateFinish records the move: the target's reservation becomes the
// VM's host, the source's is given back, and the VM is Running again.
func (a *VMs) VMMigrateFinish(ctx context.Context, in VMMigrateInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		vm, err := mustVM(ctx, tx, in.VMUUID)
		if err != nil {
			return err
		}
		var h models.Host
		if err := tx.NewSelect().Model(&h).Where("uuid = ?", in.TargetHostUUID).Limit(1).Scan(ctx); err != nil {
			return err
		}
		if vm.HostID == h.ID && vm.ReservationID == "" {
			return nil
		}
		if vm.State != models.VMMigrating || vm.ReservationID != h.UUID {
			return vmStateFail(vm, models.VMMigrating)
		}
		src := vm.HostID
		if err := models.ReleaseHost(ctx, tx, src, vmMHz(vm), vmMemBytes(vm)); err != nil {
			return err
		}
		set := map[string]any{"host_id": h.ID, "last_host_id": src, "pod_id": h.PodID, "cluster_id": h.ClusterID, "reservation_id": "", "state_reason": ""}
		if err := vmMove(ctx, tx, vm, models.VMRunning, []string{models.VMMigrating}, set); err != nil {
			return vmStateFail(vm, models.VMMigrating)
		}
		return vmEvent(ctx, tx, in.Actor, vm, "VM.MIGRATE", "INFO", vmEventText("VM.MIGRATE", vm)+" to host "+h.Name)
	})
}

// VMMigrateAbort gives the target's reservation back and leaves the VM
// Running where it was, with the reason.
func (a *VMs) VMMigrateAbort(ctx context.Context, in VMMigrateInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		vm, err := mustVM(ctx, tx, in.VMUUID)
		if err != nil {
			return err
		}
		if err := vmReleaseTarget(ctx, tx, vm); err != nil {
			return err
		}
		if vm.State != models.VMMigrating {
			return nil
		}
		if err := vmMove(ctx, tx, vm, models.VMRunning, []string{models.VMMigrating}, map[string]any{"state_reason": in.Reason}); err != nil {
			return vmStateFail(vm, models.VMMigrating)
		}
		return vmEvent(ctx, tx, in.Actor, vm, "VM.MIGRATE", "ERROR", vmEventText("VM.MIGRATE", vm)+" failed: "+in.Reason)
	})
}

func vmReleaseTarget(ctx context.Context, tx bun.IDB, vm *models.VMInstance) error {
	if vm.ReservationID == "" {
		return nil
	}
	var h models.Host
	if err := tx.NewSelect().Model(&h).Column("id").Where("uuid = ?", vm.ReservationID).WhereAllWithDeleted().Limit(1).Scan(ctx); err == nil {
		if err := models.ReleaseHost(ctx, tx, h.ID, vmMHz(vm), vmMemBytes(vm)); err != nil {
			return err
		}
	}
	_, err := tx.NewUpdate().Model((*models.VMInstance)(nil)).Set("reservation_id = ''").Set("update_count = update_count + 1").
		Where("id = ?", vm.ID).Exec(ctx)
	vm.ReservationID = ""
	return err
}

// ---- expunge ----

// VMExpungeInput expunges a VM.
type VMExpungeInput struct {
	VMUUID string
	Actor  Actor
}

// VMExpunge removes a VM in Expunging for good: off its host, its volumes
// deleted from their pools and their storage given back, its addresses
// freed, its NICs, affinity memberships and tags removed, the VM row
// removed. Every part is idempotent; a VM expunged already is success.
func (a *VMs) VMExpunge(ctx context.Context, in VMExpungeInput) error {
	var vm models.VMInstance
	if err := a.DB.NewSelect().Model(&vm).Where("uuid = ?", in.VMUUID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	}
	if !vm.Removed.IsZero() {
		return nil
	}
	if vm.State != models.VMExpunging {
		return vmStateFail(&vm, models.VMExpunging)
	}
	return a.expunge(ctx, &vm, in.Actor)
}

func (a *VMs) expunge(ctx context.Context, vm *models.VMInstance, actor Actor) error {
	if vm.HostID != 0 {
		if err := a.destroyOn(ctx, vm, vm.HostID); err != nil {
			return err
		}
	}
	var vols []models.Volume
	if err := a.DB.NewSelect().Model(&vols).Where("instance_id = ?", vm.ID).Scan(ctx); err != nil {
		return err
	}
	for i := range vols {
		v := &vols[i]
		if v.PoolID != 0 {
			if err := a.deleteOnPool(ctx, v); err != nil {
				return err
			}
		}
		err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			var cur models.Volume
			if err := tx.NewSelect().Model(&cur).Where("id = ?", v.ID).Limit(1).Scan(ctx); err != nil {
				if errors.Is(err, sql.ErrNoRows) {
					return nil
				}
				return err
			}
			if cur.PoolID != 0 {
				if err := models.ReleasePool(ctx, tx, cur.PoolID, cur.Size); err != nil {
					return err
				}
			}
			if cur.State != models.VolumeDestroy {
				if err := ReleaseCounts(ctx, tx, vm.AccountID, VolumeCounts([]models.Volume{cur})); err != nil {
					return err
				}
			}
			if _, err := tx.NewUpdate().Model((*models.Volume)(nil)).Set("state = ?", models.VolumeExpunged).Set("pool_id = NULL").
				Set("last_pool_id = ?", nullID(cur.PoolID)).Set("updated = ?", models.Now()).Where("id = ?", cur.ID).Exec(ctx); err != nil {
				return err
			}
			_, err := tx.NewDelete().Model(&cur).WherePK().Exec(ctx)
			return err
		})
		if err != nil {
			return err
		}
	}
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var cur models.VMInstance
		if err := tx.NewSelect().Model(&cur).Where("id = ?", vm.ID).Limit(1).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			return err
		}
		if cur.HostID != 0 {
			if err := models.ReleaseHost(ctx, tx, cur.HostID, vmMHz(&cur), vmMemBytes(&cur)); err != nil {
				return err
			}
		}
		if err := vmReleaseTarget(ctx, tx, &cur); err != nil {
			return err
		}
		if err := ReleaseVMIPs(ctx, tx, cur.ID, nil); err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model((*models.Nic)(nil)).Where("instance_id = ?", cur.ID).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model((*models.AffinityGroupVMMap)(nil)).Where("instance_id = ?", cur.ID).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model((*models.ResourceTag)(nil)).Where("resource_type = ? AND resource_uuid = ?", "UserVm", cur.UUID).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewUpdate().Model((*models.VMInstance)(nil)).Set("host_id = NULL").Set("update_count = update_count + 1").
			Set("update_time = ?", models.Now()).Where("id = ?", cur.ID).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model(&cur).WherePK().Exec(ctx); err != nil {
			return err
		}
		return vmEvent(ctx, tx, actor, &cur, "VM.EXPUNGE", "INFO", vmEventText("VM.EXPUNGE", &cur))
	})
}

// VMExpungeAccount expunges every VM of an account (deleteAccount's
// cleanup step): each is stopped and undefined where it runs, destroyed
// (its counts given back) and expunged. Any job still running on one finds
// it gone and its own undo a no-op. It returns how many it removed.
func (a *VMs) VMExpungeAccount(ctx context.Context, in AccountCleanupInput) (int64, error) {
	var vms []models.VMInstance
	if err := a.DB.NewSelect().Model(&vms).Where("account_id = ? AND type = ?", in.AccountID, models.VMTypeUser).Order("id").Scan(ctx); err != nil {
		return 0, err
	}
	var n int64
	for i := range vms {
		vm := &vms[i]
		if vm.State != models.VMExpunging {
			err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				cur, err := vmByUUID(ctx, tx, vm.UUID)
				if err != nil {
					return err
				}
				prev := cur.State
				if err := vmMove(ctx, tx, cur, models.VMExpunging, []string{prev}, map[string]any{"state_reason": "account deleted"}); err != nil {
					return err
				}
				if prev != models.VMDestroyed {
					if err := DestroyAccounting(ctx, tx, cur, prev); err != nil {
						return err
					}
				}
				*vm = *cur
				return nil
			})
			if errors.Is(err, models.ErrNotFound) {
				continue
			}
			if err != nil {
				return n, err
			}
		}
		if err := a.expunge(ctx, vm, Actor{}); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// ---- settling a VM whose job died ----

// VMSettle settles a VM left in a transitional state by a job that no
// longer runs (killed worker, terminated workflow); see SettleVM.
func (a *VMs) VMSettle(ctx context.Context, in VMRefInput) (string, error) {
	return SettleVM(ctx, a.Deps, in.VMUUID)
}

// SettleVM brings a VM whose job is no longer running out of Starting,
// Stopping, Migrating or Expunging, from what its hypervisor reports:
//   - Starting: running on its host -> Running; else it is taken off the
//     host and its host given back: Stopped, or Error with everything the
//     deployment made undone when it never finished deploying;
//   - Stopping: still running -> Running; else Stopped;
//   - Migrating: on the target -> the move is recorded; else Running where
//     it was, the target's reservation given back;
//   - Expunging: the expunge is finished.
//
// The caller must know the VM's job has ended (the scheduled reconciler,
// or the job repair path when queryAsyncJobResult finds the workflow
// terminated): settling a VM under a live job would race it. It returns
// the state the VM ends in.
func SettleVM(ctx context.Context, d Deps, vmUUID string) (string, error) {
	a := &VMs{Deps: d}
	vm, err := vmByUUID(ctx, a.DB, vmUUID)
	if err != nil {
		return "", err
	}
	running := func(hostID int64) (bool, error) {
		if hostID == 0 {
			return false, nil
		}
		_, h, drv, err := a.vmHost(ctx, hostID)
		if err != nil {
			return false, err
		}
		info, err := drv.VMState(ctx, h, hypervisor.VMRef{Name: vm.InstanceName, UUID: vm.UUID})
		if errors.Is(err, hypervisor.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return info.State == hypervisor.StateRunning, nil
	}
	mark := func(to string, from []string, reason string) (string, error) {
		return to, a.VMMark(ctx, VMMarkInput{VMUUID: vm.UUID, From: from, To: to, Reason: reason})
	}
	switch vm.State {
	case models.VMStarting:
		on, err := running(vm.HostID)
		if err != nil {
			return vm.State, err
		}
		if on {
			return mark(models.VMRunning, []string{models.VMStarting}, "")
		}
		deployed, err := a.DB.NewSelect().Model((*models.UsageEvent)(nil)).Where("resource_id = ? AND type = ?", vm.ID, "VM.CREATE").Exists(ctx)
		if err != nil {
			return vm.State, err
		}
		if vm.HostID != 0 {
			if err := a.destroyOn(ctx, vm, vm.HostID); err != nil {
				return vm.State, err
			}
		}
		if !deployed {
			var vols []string
			if err := a.DB.NewSelect().Model((*models.Volume)(nil)).Column("uuid").Where("instance_id = ?", vm.ID).Scan(ctx, &vols); err != nil {
				return vm.State, err
			}
			if err := a.VMDeleteVolumes(ctx, VMVolumesInput{VMUUID: vm.UUID, VolumeUUIDs: vols}); err != nil {
				return vm.State, err
			}
			if err := (&IPAM{Deps: d}).IPAMRelease(ctx, IPAMReleaseInput{VMUUID: vm.UUID}); err != nil {
				return vm.State, err
			}
		}
		if err := a.VMUnplace(ctx, VMRefInput{VMUUID: vm.UUID}); err != nil {
			return vm.State, err
		}
		if !deployed {
			return mark(models.VMError, []string{models.VMStarting}, "the deployment was interrupted (its job ended) and was undone")
		}
		return mark(models.VMStopped, []string{models.VMStarting}, "the start was interrupted (its job ended)")
	case models.VMStopping:
		on, err := running(vm.HostID)
		if err != nil {
			return vm.State, err
		}
		if on {
			return mark(models.VMRunning, []string{models.VMStopping}, "the stop was interrupted (its job ended)")
		}
		if vm.HostID != 0 {
			if err := a.destroyOn(ctx, vm, vm.HostID); err != nil {
				return vm.State, err
			}
		}
		return models.VMStopped, a.VMStopped(ctx, VMStoppedInput{VMUUID: vm.UUID, To: models.VMStopped})
	case models.VMMigrating:
		if vm.ReservationID != "" {
			var t models.Host
			if err := a.DB.NewSelect().Model(&t).Column("id").Where("uuid = ?", vm.ReservationID).WhereAllWithDeleted().Limit(1).Scan(ctx); err == nil {
				on, err := running(t.ID)
				if err != nil {
					return vm.State, err
				}
				if on {
					in := VMMigrateInput{VMUUID: vm.UUID, TargetHostUUID: vm.ReservationID}
					return models.VMRunning, a.VMMigrateFinish(ctx, in)
				}
			}
		}
		return models.VMRunning, a.VMMigrateAbort(ctx, VMMigrateInput{VMUUID: vm.UUID, Reason: "the migration was interrupted (its job ended)"})
	case models.VMExpunging:
		return models.VMExpunging, a.expunge(ctx, vm, Actor{})
	}
	return vm.State, nil
}
