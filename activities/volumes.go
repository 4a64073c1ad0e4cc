package activities

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
	ntemporal "github.com/nimbus-cloud/nimbus/infra/temporal"
	"github.com/nimbus-cloud/nimbus/models"
)

// Volumes holds the steps of the volume jobs: placing a data disk on
// primary storage, creating it there, attaching, detaching, resizing,
// migrating and deleting it.
//
// Pool allocation (models.ReservePool/ReleasePool on
// storage_pools.allocated_bytes, which
// listStoragePools and listCapacity show) moves in the same transaction as the
// volume's guarded state change, so that a retried step never counts twice:
// a volume with a pool counts its size on that pool while it is Creating,
// Ready, Resizing, Snapshotting or RevertSnapshotting; while Migrating it
// counts on both pools.
type Volumes struct{ Deps }

// VolumeRevertSnapshotting is CloudStack's volume state while a snapshot is
// being reverted onto it.
const VolumeRevertSnapshotting = "RevertSnapshotting"

// MaxDataVolumes is how many data disks a VM of a hypervisor type may have
// (device ids 1..n; 0 is the root disk): what the guest buses take.
var MaxDataVolumes = map[string]int{
	hypervisor.TypeKVM: 26, "VMware": 59, "XenServer": 13, "Hyperv": 13, hypervisor.TypeSimulator: 15,
}

// maxDataVolumes is MaxDataVolumes with a default of 13.
func maxDataVolumes(hv string) int {
	if n, ok := MaxDataVolumes[hv]; ok {
		return n
	}
	return 13
}

// volFail is a final failure with a CloudStack code.
func volFail(code int, format string, args ...any) error {
	return cserr.Temporal(cserr.New(code, format, args...))
}

// volDriverFailure maps a storage or hypervisor driver error so that the
// job shows a CloudStack code: invalid and not found are 431, no room 533,
// unsupported 432, all final; unreachable and unclassified failures are
// retried within the activity's bounded policy (and end as 530).
func volDriverFailure(err error) error {
	if err == nil {
		return nil
	}
	var app *temporal.ApplicationError
	if errors.As(err, &app) || cserr.Code(err) != 0 {
		return cserr.Temporal(err)
	}
	switch {
	case errors.Is(err, hypervisor.ErrInvalid), errors.Is(err, hypervisor.ErrNotFound):
		return volFail(cserr.ParamError, "%s", err.Error())
	case errors.Is(err, hypervisor.ErrCapacity):
		return volFail(cserr.InsufficientCap, "%s", err.Error())
	case errors.Is(err, hypervisor.ErrNotSupported):
		return volFail(cserr.UnsupportedAction, "%s", err.Error())
	}
	typ := hypervisor.ErrorType(err)
	if typ == "" {
		typ = "DriverError"
	}
	return temporal.NewApplicationError(err.Error(), typ)
}

// lockRow adds FOR UPDATE on MySQL/MariaDB; SQLite serializes write
// transactions, and rejects the clause.
func lockRow(db bun.IDB, q *bun.SelectQuery) *bun.SelectQuery {
	if db.Dialect().Name() == dialect.SQLite {
		return q
	}
	return q.For("UPDATE")
}

func noRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// loadVolume loads a volume by UUID, removed ones included when withRemoved.
func loadVolume(ctx context.Context, db bun.IDB, id string, withRemoved bool) (*models.Volume, error) {
	var v models.Volume
	q := db.NewSelect().Model(&v).Where("uuid = ?", id).Limit(1)
	if withRemoved {
		q = q.WhereAllWithDeleted()
	}
	if err := q.Scan(ctx); err != nil {
		if noRows(err) {
			return nil, volFail(cserr.ParamError, "Unable to find volume by id %s", id)
		}
		return nil, err
	}
	return &v, nil
}

func loadVM(ctx context.Context, db bun.IDB, id string) (*models.VMInstance, error) {
	var vm models.VMInstance
	if err := db.NewSelect().Model(&vm).Where("uuid = ?", id).Limit(1).Scan(ctx); err != nil {
		if noRows(err) {
			return nil, volFail(cserr.ParamError, "Unable to find virtual machine by id %s", id)
		}
		return nil, err
	}
	return &vm, nil
}

func loadPoolByID(ctx context.Context, db bun.IDB, id int64) (*models.StoragePool, error) {
	var p models.StoragePool
	if err := db.NewSelect().Model(&p).Where("id = ?", id).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		return nil, models.NotFound(err, fmt.Sprintf("storage pool %d", id))
	}
	return &p, nil
}

// ---- pool capacity ----

// poolAllocatable is how many bytes volumes may allocate on a pool: its
// capacity times storage.overprovisioning.factor (thin provisioning), the
// bound models.ReservePool enforces.
func poolAllocatable(ctx context.Context, db bun.IDB, p *models.StoragePool) (int64, float64) {
	factor, err := models.ConfigFloat(ctx, db, "storage.overprovisioning.factor")
	if err != nil || factor <= 0 {
		factor = 1
	}
	return int64(float64(p.CapacityBytes) * factor), factor
}

// reservePool adds bytes to a pool's allocation (models.ReservePool) in
// the caller's transaction, which records the volume's place; when they do
// not fit, or the pool is not Up, the error is a 533 naming the pool.
// Negative bytes release.
func reservePool(ctx context.Context, tx bun.IDB, poolID, bytes int64) error {
	if bytes <= 0 {
		return releasePool(ctx, tx, poolID, -bytes)
	}
	p, err := loadPoolByID(ctx, tx, poolID)
	if err != nil {
		return err
	}
	limit, factor := poolAllocatable(ctx, tx, p)
	err = models.ReservePool(ctx, tx, poolID, bytes, factor)
	if errors.Is(err, models.ErrNoCapacity) {
		if p.State != models.PoolUp {
			return volFail(cserr.InsufficientCap, "Storage pool %s is %s and takes no new volumes", p.Name, p.State)
		}
		return volFail(cserr.InsufficientCap, "Storage pool %s has no room for %d GiB more: %d of %d GiB allocatable are allocated",
			p.Name, ceilGiB(bytes), p.AllocatedBytes>>30, limit>>30)
	}
	return err
}

// releasePool takes bytes off a pool's allocation (models.ReleasePool).
func releasePool(ctx context.Context, tx bun.IDB, poolID, bytes int64) error {
	if bytes == 0 || poolID == 0 {
		return nil
	}
	return models.ReleasePool(ctx, tx, poolID, bytes)
}

// syncPoolRow brings the pool's op_host_capacity rows in line with its row.
func syncPoolRow(ctx context.Context, tx bun.IDB, poolID int64) error {
	p, err := loadPoolByID(ctx, tx, poolID)
	if err != nil || !p.Removed.IsZero() {
		return err
	}
	return SyncPoolCapacity(ctx, tx, p)
}

func ceilGiB(b int64) int64 { return (b + models.GiB - 1) / models.GiB }

// refreshPoolUsed records what the backend says the pool uses, after a
// driver call changed it. A failure only leaves the figure stale.
func refreshPoolUsed(ctx context.Context, db bun.IDB, drv storage.PoolDriver, desc storage.Pool, poolID int64) {
	st, err := drv.PoolCapacity(ctx, desc)
	if err != nil {
		return
	}
	if _, err := db.NewUpdate().Model((*models.StoragePool)(nil)).Set("used_bytes = ?", st.UsedBytes).
		Where("id = ?", poolID).Exec(ctx); err == nil {
		_ = syncPoolRow(ctx, db, poolID)
	}
}

// ---- driver targets ----

// poolTarget returns a pool's driver and descriptor.
func poolTarget(ctx context.Context, d Deps, p *models.StoragePool) (storage.PoolDriver, storage.Pool, error) {
	drv, err := d.Pools(p.HypervisorType)
	if err != nil {
		return nil, storage.Pool{}, volDriverFailure(err)
	}
	spec := PoolSpec{PoolUUID: p.UUID, Name: p.Name, PoolType: p.PoolType, URL: p.URL, UserInfoSealed: p.UserInfo, CapacityBytes: p.CapacityBytes}
	if spec.ZoneUUID, err = uuidOf(ctx, d.DB, "zones", p.ZoneID); err != nil {
		return nil, storage.Pool{}, err
	}
	if spec.PodUUID, err = uuidOf(ctx, d.DB, "pods", p.PodID); err != nil {
		return nil, storage.Pool{}, err
	}
	if spec.ClusterUUID, err = uuidOf(ctx, d.DB, "clusters", p.ClusterID); err != nil {
		return nil, storage.Pool{}, err
	}
	desc, err := (&Storage{Deps: d}).poolDescriptor(spec)
	if err != nil {
		return nil, desc, err
	}
	if desc.HostID, err = uuidOf(ctx, d.DB, "hosts", p.HostID); err != nil {
		return nil, desc, err
	}
	if err := setPoolVia(ctx, d, p, &desc); err != nil {
		return nil, desc, err
	}
	return drv, desc, nil
}

// setPoolVia sets the host a pool is reached through, for drivers that
// act through a hypervisor (libvirt): a local pool's own host, else the
// first Up host of the pool's scope. None is left nil.
func setPoolVia(ctx context.Context, d Deps, p *models.StoragePool, desc *storage.Pool) error {
	hosts, err := poolScopeHosts(ctx, d.DB, p.ZoneID, p.ClusterID, p.HypervisorType)
	if err != nil {
		return err
	}
	if p.HostID != 0 {
		hosts = nil
		var h models.Host
		if err := d.DB.NewSelect().Model(&h).Where("id = ?", p.HostID).Limit(1).Scan(ctx); err == nil {
			hosts = []models.Host{h}
		}
	}
	if len(hosts) > 0 {
		via, err := hostDescriptor(ctx, d, &hosts[0])
		if err != nil {
			return err
		}
		desc.Via = &via
	}
	return nil
}

// viaVolumeHost reaches the pool through the host running the volume's VM,
// when it runs: that host's hypervisor holds the disk open, and only it
// can copy or grow it live (libvirt pools).
func viaVolumeHost(ctx context.Context, d Deps, v *models.Volume, desc *storage.Pool) error {
	if v.InstanceID == 0 {
		return nil
	}
	var vm models.VMInstance
	if err := d.DB.NewSelect().Model(&vm).Column("host_id").Where("id = ?", v.InstanceID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	}
	if vm.HostID == 0 {
		return nil
	}
	var h models.Host
	if err := d.DB.NewSelect().Model(&h).Where("id = ? AND state = ?", vm.HostID, models.HostUp).Limit(1).Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	}
	via, err := hostDescriptor(ctx, d, &h)
	if err != nil {
		return err
	}
	desc.Via = &via
	return nil
}

// storeTarget returns an image store's driver and descriptor.
func storeTarget(ctx context.Context, d Deps, storeID int64) (storage.ImageStoreDriver, storage.ImageStore, *models.ImageStore, error) {
	st, desc, err := (&Templates{Deps: d}).storeOf(ctx, storeID)
	if err != nil {
		return nil, desc, nil, err
	}
	drv, err := d.ImageStores(st.ProviderName)
	if err != nil {
		return nil, desc, nil, volDriverFailure(err)
	}
	return drv, desc, st, nil
}

// vmHost returns the hypervisor driver and host a running VM runs on.
func vmHost(ctx context.Context, d Deps, vm *models.VMInstance) (hypervisor.Driver, hypervisor.Host, error) {
	hostUUID, err := uuidOf(ctx, d.DB, "hosts", vm.HostID)
	if err != nil {
		return nil, hypervisor.Host{}, err
	}
	h, target, err := (&Hosts{Deps: d}).hostTarget(ctx, hostUUID)
	if err != nil {
		return nil, target, err
	}
	drv, err := d.Hypervisors(h.HypervisorType)
	if err != nil {
		return nil, target, volDriverFailure(err)
	}
	return drv, target, nil
}

// diskOf is a volume as the hypervisor attaches it.
func diskOf(v *models.Volume, poolUUID string) hypervisor.Disk {
	return hypervisor.Disk{VolumeID: v.UUID, Pool: poolUUID, Path: v.Path, Format: strings.ToLower(v.Format),
		SizeBytes: v.Size, DeviceID: int(v.DeviceID)}
}

// ---- events and usage ----

// volumeEvent writes an event about a volume from an activity.
func volumeEvent(ctx context.Context, db bun.IDB, actor Actor, typ, level, uuid, desc string) error {
	return WriteEvent(ctx, db, storageEvent(ctx, EventInput{Actor: actor, Type: typ, Level: level,
		ResourceType: "Volume", ResourceUUID: uuid, Description: desc}))
}

// storageEvent is activityEvent naming the job only when the workflow is
// one: a snapshot policy's scheduled run has no job.
func storageEvent(ctx context.Context, in EventInput) EventInput {
	in = activityEvent(ctx, in)
	if !ntemporal.IsJobID(in.JobUUID) {
		in.JobUUID = ""
	}
	return in
}

// usageEvent records a billable change once per resource and type.
func usageEvent(ctx context.Context, db bun.IDB, e *models.UsageEvent) error {
	ok, err := db.NewSelect().Model((*models.UsageEvent)(nil)).
		Where("type = ? AND resource_id = ? AND resource_type = ?", e.Type, e.ResourceID, e.ResourceType).Exists(ctx)
	if err != nil || ok {
		return err
	}
	e.Created = models.Now()
	_, err = db.NewInsert().Model(e).Exec(ctx)
	return err
}

func volumeUsage(typ string, v *models.Volume) *models.UsageEvent {
	return &models.UsageEvent{Type: typ, AccountID: v.AccountID, DomainID: v.DomainID, ZoneID: v.ZoneID,
		ResourceID: v.ID, ResourceName: v.Name, ResourceType: "Volume", OfferingID: v.DiskOfferingID,
		TemplateID: v.TemplateID, Size: v.Size}
}

// ---- placement ----

// VolumePlaceInput asks for a pool for a volume that has none: one that the
// VM it is being attached to reaches (VMUUID), else one in the volume's zone
// for the hypervisor type (for a volume from a snapshot), preferring
// PreferPoolID.
type VolumePlaceInput struct {
	VolumeUUID     string
	VMUUID         string
	HypervisorType string
	PreferPoolID   int64
}

// VolumePlacement is the chosen pool.
type VolumePlacement struct {
	PoolID   int64
	PoolUUID string
	PoolName string
}

// vmReach tells where a VM's disks must be: its cluster, its host (for
// local pools) and its hypervisor type.
type vmReach struct {
	ZoneID, ClusterID, HostID int64
	Hypervisor                string
}

func reachOf(ctx context.Context, db bun.IDB, vm *models.VMInstance) (vmReach, error) {
	r := vmReach{ZoneID: vm.ZoneID, ClusterID: vm.ClusterID, HostID: vm.HostID, Hypervisor: vm.HypervisorType}
	if r.HostID == 0 {
		r.HostID = vm.LastHostID
	}
	if r.HostID != 0 {
		var h models.Host
		if err := db.NewSelect().Model(&h).Where("id = ?", r.HostID).WhereAllWithDeleted().Limit(1).Scan(ctx); err == nil {
			r.ClusterID = h.ClusterID
			if r.Hypervisor == "" {
				r.Hypervisor = h.HypervisorType
			}
		}
	}
	if r.ClusterID == 0 {
		// Where its root disk is.
		var p models.StoragePool
		err := db.NewSelect().Model(&p).Where("id = (SELECT v.pool_id FROM volumes AS v WHERE v.instance_id = ? AND v.volume_type = ? AND v.removed IS NULL LIMIT 1)", vm.ID, models.VolumeRoot).
			Limit(1).Scan(ctx)
		if err == nil {
			r.ClusterID = p.ClusterID
			if r.Hypervisor == "" {
				r.Hypervisor = p.HypervisorType
			}
		}
	}
	return r, nil
}

// reaches tells whether a VM with reach r can use pool p.
func (r vmReach) reaches(p *models.StoragePool) bool {
	switch p.Scope {
	case models.ScopeHost:
		return r.HostID != 0 && p.HostID == r.HostID
	case models.ScopeZone:
		return p.ZoneID == r.ZoneID && (r.Hypervisor == "" || strings.EqualFold(p.HypervisorType, r.Hypervisor))
	default:
		if r.ClusterID == 0 {
			return p.ZoneID == r.ZoneID && (r.Hypervisor == "" || strings.EqualFold(p.HypervisorType, r.Hypervisor))
		}
		return p.ClusterID == r.ClusterID
	}
}

// VolumePlace chooses the pool a volume is created on: Up, reachable,
// with the disk offering's tags and local/shared kind, and room for the
// volume; the preferred pool first, then the one with most room left. When
// none fits, the 533 says why each pool was passed over.
func (a *Volumes) VolumePlace(ctx context.Context, in VolumePlaceInput) (VolumePlacement, error) {
	v, err := loadVolume(ctx, a.DB, in.VolumeUUID, false)
	if err != nil {
		return VolumePlacement{}, err
	}
	r := vmReach{ZoneID: v.ZoneID, Hypervisor: in.HypervisorType}
	if in.VMUUID != "" {
		vm, err := loadVM(ctx, a.DB, in.VMUUID)
		if err != nil {
			return VolumePlacement{}, err
		}
		if r, err = reachOf(ctx, a.DB, vm); err != nil {
			return VolumePlacement{}, err
		}
	}
	var off models.DiskOffering
	if v.DiskOfferingID != 0 {
		if err := a.DB.NewSelect().Model(&off).Where("id = ?", v.DiskOfferingID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
			return VolumePlacement{}, models.NotFound(err, "disk offering")
		}
	}
	var pools []models.StoragePool
	if err := a.DB.NewSelect().Model(&pools).Where("zone_id = ?", v.ZoneID).Order("id").Scan(ctx); err != nil {
		return VolumePlacement{}, err
	}
	tags := map[int64][]string{}
	var ptags []models.StoragePoolTag
	if err := a.DB.NewSelect().Model(&ptags).Scan(ctx); err != nil {
		return VolumePlacement{}, err
	}
	for _, t := range ptags {
		tags[t.PoolID] = append(tags[t.PoolID], t.Tag)
	}
	want := splitTags(off.Tags)
	type cand struct {
		p    *models.StoragePool
		room int64
	}
	var fits []cand
	why := map[string][]string{}
	for i := range pools {
		p := &pools[i]
		switch {
		case p.State != models.PoolUp:
			why["not Up"] = append(why["not Up"], p.Name)
			continue
		case !r.reaches(p):
			why["not reachable from the VM's cluster"] = append(why["not reachable from the VM's cluster"], p.Name)
			continue
		case off.UseLocalStorage != (p.Scope == models.ScopeHost):
			why["local/shared kind differs from the offering"] = append(why["local/shared kind differs from the offering"], p.Name)
			continue
		case !hasTags(tags[p.ID], want):
			why["lacks the offering's tags"] = append(why["lacks the offering's tags"], p.Name)
			continue
		}
		limit, _ := poolAllocatable(ctx, a.DB, p)
		room := limit - p.AllocatedBytes
		if room < v.Size {
			why["not enough room"] = append(why["not enough room"], p.Name)
			continue
		}
		fits = append(fits, cand{p, room})
	}
	if len(fits) == 0 {
		msg := fmt.Sprintf("No primary storage pool can hold volume %s (%d GiB)", v.Name, ceilGiB(v.Size))
		if len(pools) == 0 {
			msg += ": the zone has no primary storage"
		}
		reasons := make([]string, 0, len(why))
		for k, names := range why {
			reasons = append(reasons, k+": "+strings.Join(names, ", "))
		}
		sort.Strings(reasons)
		if len(reasons) > 0 {
			msg += ": " + strings.Join(reasons, "; ")
		}
		return VolumePlacement{}, volFail(cserr.InsufficientCap, "%s", msg)
	}
	sort.SliceStable(fits, func(i, j int) bool {
		pi, pj := fits[i].p.ID == in.PreferPoolID, fits[j].p.ID == in.PreferPoolID
		if pi != pj {
			return pi
		}
		return fits[i].room > fits[j].room
	})
	best := fits[0].p
	return VolumePlacement{PoolID: best.ID, PoolUUID: best.UUID, PoolName: best.Name}, nil
}

func splitTags(s string) []string {
	var out []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

func hasTags(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if strings.EqualFold(h, w) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// ---- create on a pool ----

// VolumeAllocateInput gives an Allocated volume its pool.
type VolumeAllocateInput struct {
	VolumeUUID string
	PoolID     int64
}

// VolumeAllocate moves an Allocated volume to Creating on the pool and
// reserves its size there, in one transaction; a volume already Creating
// on that pool is success (a retry).
func (a *Volumes) VolumeAllocate(ctx context.Context, in VolumeAllocateInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		v, err := loadVolume(ctx, tx, in.VolumeUUID, false)
		if err != nil {
			return err
		}
		if v.State == models.VolumeCreating && v.PoolID == in.PoolID {
			return nil
		}
		if v.State != models.VolumeAllocated || v.PoolID != 0 {
			return volFail(cserr.ParamError, "Volume %s is %s; only an Allocated volume gets a pool", v.Name, v.State)
		}
		p, err := loadPoolByID(ctx, tx, in.PoolID)
		if err != nil {
			return err
		}
		if err := models.Transition(ctx, tx, (*models.Volume)(nil), v.ID, models.VolumeCreating, []string{models.VolumeAllocated},
			map[string]any{"pool_id": p.ID, "pod_id": nullID(p.PodID), "updated": models.Now()}); err != nil {
			return err
		}
		return reservePool(ctx, tx, p.ID, v.Size)
	})
}

// VolumeCreateInput creates a Creating volume on its pool: blank, or from
// a snapshot's backup on secondary storage.
type VolumeCreateInput struct {
	VolumeUUID   string
	SnapshotUUID string
}

// VolumeCreateOnPool has the pool's driver create the volume (idempotent
// by its path, the volume's UUID) and marks it Ready with its path.
func (a *Volumes) VolumeCreateOnPool(ctx context.Context, in VolumeCreateInput) error {
	v, err := loadVolume(ctx, a.DB, in.VolumeUUID, false)
	if err != nil {
		return err
	}
	if v.State == models.VolumeReady {
		return nil
	}
	if v.State != models.VolumeCreating || v.PoolID == 0 {
		return volFail(cserr.ParamError, "Volume %s is %s, not being created", v.Name, v.State)
	}
	p, err := loadPoolByID(ctx, a.DB, v.PoolID)
	if err != nil {
		return err
	}
	drv, desc, err := poolTarget(ctx, a.Deps, p)
	if err != nil {
		return err
	}
	spec := storage.VolumeSpec{ID: v.UUID, SizeBytes: v.Size, Provisioning: v.ProvisioningType}
	var made storage.Volume
	if in.SnapshotUUID != "" {
		loc, err := snapshotBackupLocation(ctx, a.Deps, in.SnapshotUUID)
		if err != nil {
			return err
		}
		made, err = callHeartbeating(ctx, func(ctx context.Context) (storage.Volume, error) {
			return drv.CreateVolumeFromImage(ctx, loc, desc, spec, heartbeatProgress(ctx))
		})
		if err != nil {
			return volDriverFailure(err)
		}
	} else {
		made, err = callHeartbeating(ctx, func(ctx context.Context) (storage.Volume, error) { return drv.CreateVolume(ctx, desc, spec) })
		if err != nil {
			return volDriverFailure(err)
		}
	}
	err = a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		set := map[string]any{"path": made.Path, "format": strings.ToUpper(made.Format), "updated": models.Now()}
		if made.SizeBytes > v.Size {
			// A backup bigger than asked: the volume takes its size.
			if err := reservePool(ctx, tx, p.ID, made.SizeBytes-v.Size); err != nil {
				return err
			}
			set["size"] = made.SizeBytes
		}
		return models.Transition(ctx, tx, (*models.Volume)(nil), v.ID, models.VolumeReady, []string{models.VolumeCreating}, set)
	})
	if err != nil {
		return err
	}
	refreshPoolUsed(ctx, a.DB, drv, desc, p.ID)
	return nil
}

// heartbeatProgress heartbeats a copy's progress (bytes done).
func heartbeatProgress(ctx context.Context) storage.ProgressFunc {
	if !activity.IsActivity(ctx) {
		return nil
	}
	return func(p storage.Progress) {
		// Inside a tracked driver call the tracker heartbeats the bytes
		// with the tasks in flight; a bare count would replace them.
		if !trackerProgress(ctx, p.Done) {
			activity.RecordHeartbeat(ctx, p.Done)
		}
	}
}

// VolumeUnallocate undoes VolumeAllocate and VolumeCreateOnPool: it deletes
// the volume from its pool (a missing one is success), releases its size
// and returns it to Allocated without a pool. A volume attached meanwhile
// (by a finished attach) is left as it is.
func (a *Volumes) VolumeUnallocate(ctx context.Context, in VolumeRefInput) error {
	v, err := loadVolume(ctx, a.DB, in.VolumeUUID, true)
	if err != nil {
		return err
	}
	if v.PoolID == 0 || !v.Attached.IsZero() {
		return nil
	}
	switch v.State {
	case models.VolumeCreating, models.VolumeReady, models.VolumeError:
	default:
		return nil
	}
	p, err := loadPoolByID(ctx, a.DB, v.PoolID)
	if err != nil {
		return err
	}
	drv, desc, err := poolTarget(ctx, a.Deps, p)
	if err != nil {
		return err
	}
	path := v.Path
	if path == "" {
		path = v.UUID
	}
	if _, err := callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) { return struct{}{}, drv.DeleteVolume(ctx, desc, path) }); err != nil {
		return volDriverFailure(err)
	}
	err = a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewUpdate().Model((*models.Volume)(nil)).
			Set("state = ?", models.VolumeAllocated).Set("pool_id = NULL").Set("pod_id = NULL").Set("path = ''").
			Set("updated = ?", models.Now()).
			Where("id = ? AND pool_id = ? AND state IN (?)", v.ID, p.ID, bun.In([]string{models.VolumeCreating, models.VolumeReady, models.VolumeError})).
			WhereAllWithDeleted().Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		return releasePool(ctx, tx, p.ID, v.Size)
	})
	if err != nil {
		return err
	}
	refreshPoolUsed(ctx, a.DB, drv, desc, p.ID)
	return nil
}

// VolumeRefInput names a volume and who acts on it.
type VolumeRefInput struct {
	VolumeUUID string
	Actor      Actor
}

// VolumeCreated records a new volume: the VOLUME.CREATE event and usage
// event (once).
func (a *Volumes) VolumeCreated(ctx context.Context, in VolumeRefInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		v, err := loadVolume(ctx, tx, in.VolumeUUID, false)
		if err != nil {
			return err
		}
		if err := usageEvent(ctx, tx, volumeUsage("VOLUME.CREATE", v)); err != nil {
			return err
		}
		return volumeEvent(ctx, tx, in.Actor, "VOLUME.CREATE", "", v.UUID,
			fmt.Sprintf("Created volume %s (%d GiB, %s)", v.Name, ceilGiB(v.Size), v.State))
	})
}

// VolumeFailInput ends a failed createVolume.
type VolumeFailInput struct {
	VolumeUUID string
	Reason     string
	Actor      Actor
}

// VolumeCreateFailed marks a volume that could not be created (from a
// snapshot) Error and removed, its pool allocation and the account's counts
// released (VolumeUnallocate ran first), and records why.
func (a *Volumes) VolumeCreateFailed(ctx context.Context, in VolumeFailInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		v, err := loadVolume(ctx, tx, in.VolumeUUID, true)
		if err != nil {
			return err
		}
		if !v.Removed.IsZero() {
			return nil
		}
		if _, err := tx.NewUpdate().Model((*models.Volume)(nil)).Set("state = ?", models.VolumeError).
			Set("removed = ?", models.Now()).Set("updated = ?", models.Now()).Where("id = ?", v.ID).Exec(ctx); err != nil {
			return err
		}
		if v.PoolID != 0 { // not unallocated: still counted on its pool
			if err := releasePool(ctx, tx, v.PoolID, v.Size); err != nil {
				return err
			}
		}
		if err := releaseVolumeCounts(ctx, tx, v); err != nil {
			return err
		}
		return volumeEvent(ctx, tx, in.Actor, "VOLUME.CREATE", "ERROR", v.UUID, "Failed to create volume "+v.Name+": "+in.Reason)
	})
}

// ---- attach ----

// VolumeAttachInput attaches a volume to a VM; DeviceID 0 picks the first
// free device id.
type VolumeAttachInput struct {
	VolumeUUID string
	VMUUID     string
	DeviceID   int64
	Actor      Actor
}

// VolumeAttachState is what VolumeAttachBegin found and reserved.
type VolumeAttachState struct {
	DeviceID  int64
	NeedsPool bool // the volume has no pool yet: place and create it first
	Already   bool // attached to this VM already
	VMName    string
}

// VolumeAttachBegin checks the attach (a data disk not attached, Allocated
// or Ready, of the VM's account and zone; the VM Running or Stopped; a free
// device id within the hypervisor's limit; a pool the VM reaches) and
// reserves the device id by pointing the volume at the VM, with the VM's
// row locked so concurrent attaches take different device ids.
func (a *Volumes) VolumeAttachBegin(ctx context.Context, in VolumeAttachInput) (VolumeAttachState, error) {
	var st VolumeAttachState
	err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var vm models.VMInstance
		if err := lockRow(tx, tx.NewSelect().Model(&vm).Where("uuid = ?", in.VMUUID)).Limit(1).Scan(ctx); err != nil {
			if noRows(err) {
				return volFail(cserr.ParamError, "Unable to find virtual machine by id %s", in.VMUUID)
			}
			return err
		}
		st.VMName = vm.Name
		v, err := loadVolume(ctx, tx, in.VolumeUUID, false)
		if err != nil {
			return err
		}
		if v.InstanceID == vm.ID {
			st.DeviceID, st.Already = v.DeviceID, !v.Attached.IsZero()
			st.NeedsPool = v.PoolID == 0
			return nil
		}
		if err := CheckAttach(ctx, tx, v, &vm); err != nil {
			return err
		}
		dev, err := pickDeviceID(ctx, tx, &vm, in.DeviceID)
		if err != nil {
			return err
		}
		res, err := tx.NewUpdate().Model((*models.Volume)(nil)).Set("instance_id = ?", vm.ID).Set("device_id = ?", dev).
			Set("updated = ?", models.Now()).
			Where("id = ? AND instance_id IS NULL AND state IN (?)", v.ID, bun.In([]string{models.VolumeAllocated, models.VolumeReady})).Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return volFail(cserr.ParamError, "Volume %s changed meanwhile; try again", v.Name)
		}
		st.DeviceID, st.NeedsPool = dev, v.PoolID == 0
		return nil
	})
	return st, err
}

// CheckAttach says whether a volume may be attached to a VM now; the API
// asks it before starting the job, the job again under lock.
func CheckAttach(ctx context.Context, db bun.IDB, v *models.Volume, vm *models.VMInstance) error {
	switch {
	case v.VolumeType != models.VolumeDataDisk:
		return volFail(cserr.ParamError, "Volume %s is a %s volume; only data disks are attached", v.Name, v.VolumeType)
	case v.InstanceID != 0:
		return volFail(cserr.ParamError, "Volume %s is already attached to a virtual machine; detach it first", v.Name)
	case v.State != models.VolumeAllocated && v.State != models.VolumeReady:
		return volFail(cserr.ParamError, "Volume %s is %s; only an Allocated or Ready volume is attached", v.Name, v.State)
	case vm.Type != models.VMTypeUser:
		return volFail(cserr.ParamError, "Virtual machine %s is a system VM", vm.Name)
	case vm.State != models.VMRunning && vm.State != models.VMStopped:
		return volFail(cserr.ParamError, "Virtual machine %s is %s; volumes are attached to Running or Stopped VMs", vm.Name, vm.State)
	case vm.AccountID != v.AccountID:
		return volFail(cserr.ParamError, "Volume %s and virtual machine %s belong to different accounts", v.Name, vm.Name)
	case vm.ZoneID != v.ZoneID:
		return volFail(cserr.ParamError, "Volume %s and virtual machine %s are in different zones", v.Name, vm.Name)
	}
	if v.PoolID != 0 {
		p, err := loadPoolByID(ctx, db, v.PoolID)
		if err != nil {
			return err
		}
		r, err := reachOf(ctx, db, vm)
		if err != nil {
			return err
		}
		if !r.reaches(p) {
			return volFail(cserr.ParamError, "Volume %s is on storage pool %s, which virtual machine %s does not reach; migrate the volume first", v.Name, p.Name, vm.Name)
		}
	}
	return nil
}

// CheckDeviceID says whether a VM can take a data disk at device id want
// (0: at the first free one).
func CheckDeviceID(ctx context.Context, db bun.IDB, vm *models.VMInstance, want int64) error {
	_, err := pickDeviceID(ctx, db, vm, want)
	return err
}

// pickDeviceID checks a requested device id or picks the first free one.
func pickDeviceID(ctx context.Context, db bun.IDB, vm *models.VMInstance, want int64) (int64, error) {
	var used []int64
	if err := db.NewSelect().Model((*models.Volume)(nil)).Column("device_id").
		Where("instance_id = ? AND device_id IS NOT NULL", vm.ID).Scan(ctx, &used); err != nil {
		return 0, err
	}
	taken := map[int64]bool{}
	for _, d := range used {
		taken[d] = true
	}
	max := int64(maxDataVolumes(vm.HypervisorType))
	if want != 0 {
		if want < 1 || want > max {
			return 0, volFail(cserr.ParamError, "deviceid %d: data disks of a %s VM take device ids 1 to %d", want, vm.HypervisorType, max)
		}
		if taken[want] {
			return 0, volFail(cserr.ParamError, "deviceid %d is taken on virtual machine %s", want, vm.Name)
		}
		return want, nil
	}
	for d := int64(1); d <= max; d++ {
		if !taken[d] {
			return d, nil
		}
	}
	return 0, volFail(cserr.ParamError, "Virtual machine %s has the maximum of %d data disks for %s", vm.Name, max, vm.HypervisorType)
}

// VolumeHypervisorInput names a volume and the VM it is (being) attached to.
type VolumeHypervisorInput struct {
	VolumeUUID string
	VMUUID     string
}

// VolumeHypervisorAttach attaches the disk live when the VM runs (on the
// host it runs on); a stopped VM gets its disks when it starts; a VM
// starting, stopping or migrating fails the attempt, retried until it
// settles. Attaching an attached disk is success.
func (a *Volumes) VolumeHypervisorAttach(ctx context.Context, in VolumeHypervisorInput) error {
	return a.hypervisorDisk(ctx, in, true)
}

// VolumeHypervisorDetach detaches the disk from a running VM; a disk not
// attached there is success.
func (a *Volumes) VolumeHypervisorDetach(ctx context.Context, in VolumeHypervisorInput) error {
	return a.hypervisorDisk(ctx, in, false)
}

func (a *Volumes) hypervisorDisk(ctx context.Context, in VolumeHypervisorInput, attach bool) error {
	vm, err := loadVM(ctx, a.DB, in.VMUUID)
	if err != nil {
		return err
	}
	switch vm.State {
	case models.VMRunning:
	case models.VMStarting, models.VMStopping, models.VMMigrating:
		// Its next state decides: a start defines the VM with the volumes
		// Ready by then, which may not include this one. Retried.
		return temporal.NewApplicationError(fmt.Sprintf("virtual machine %s is %s; the disk waits until it settles", vm.Name, vm.State), "VMBusy")
	default:
		return nil // stopped: the disk is part of the VM's next start
	}
	if vm.HostID == 0 {
		return nil
	}
	v, err := loadVolume(ctx, a.DB, in.VolumeUUID, true)
	if err != nil {
		return err
	}
	if v.PoolID == 0 || v.Path == "" {
		return nil // never created: nothing to attach or detach
	}
	poolUUID, err := uuidOf(ctx, a.DB, "storage_pools", v.PoolID)
	if err != nil {
		return err
	}
	drv, h, err := vmHost(ctx, a.Deps, vm)
	if err != nil {
		return err
	}
	ref := hypervisor.VMRef{Name: vm.InstanceName, UUID: vm.UUID}
	disk := diskOf(v, poolUUID)
	_, err = callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) {
		if attach {
			return struct{}{}, drv.AttachVolume(ctx, h, ref, disk)
		}
		return struct{}{}, drv.DetachVolume(ctx, h, ref, disk)
	})
	return volDriverFailure(err)
}

// VolumeAttachFinish records the attach and its event.
func (a *Volumes) VolumeAttachFinish(ctx context.Context, in VolumeAttachInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		v, err := loadVolume(ctx, tx, in.VolumeUUID, false)
		if err != nil {
			return err
		}
		vm, err := loadVM(ctx, tx, in.VMUUID)
		if err != nil {
			return err
		}
		if v.InstanceID != vm.ID {
			return volFail(cserr.ParamError, "Volume %s is no longer attached to %s", v.Name, vm.Name)
		}
		if !v.Attached.IsZero() {
			return nil
		}
		if _, err := tx.NewUpdate().Model((*models.Volume)(nil)).Set("attached = ?", models.Now()).Set("updated = ?", models.Now()).
			Where("id = ?", v.ID).Exec(ctx); err != nil {
			return err
		}
		return volumeEvent(ctx, tx, in.Actor, "VOLUME.ATTACH", "", v.UUID,
			fmt.Sprintf("Attached volume %s to virtual machine %s as device %d", v.Name, vm.Name, v.DeviceID))
	})
}

// VolumeAttachUndo gives back the device id a failed attach reserved.
func (a *Volumes) VolumeAttachUndo(ctx context.Context, in VolumeAttachInput) error {
	vm, err := loadVM(ctx, a.DB, in.VMUUID)
	if err != nil {
		return err
	}
	_, err = a.DB.NewUpdate().Model((*models.Volume)(nil)).Set("instance_id = NULL").Set("device_id = NULL").
		Set("updated = ?", models.Now()).
		Where("uuid = ? AND instance_id = ? AND attached IS NULL", in.VolumeUUID, vm.ID).Exec(ctx)
	return err
}

// ---- detach ----

// VolumeDetachFinish records a detach and its event; a volume not attached
// to the VM is success.
func (a *Volumes) VolumeDetachFinish(ctx context.Context, in VolumeAttachInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		v, err := loadVolume(ctx, tx, in.VolumeUUID, false)
		if err != nil {
			return err
		}
		vm, err := loadVM(ctx, tx, in.VMUUID)
		if err != nil {
			return err
		}
		if v.InstanceID != vm.ID {
			return nil
		}
		if _, err := tx.NewUpdate().Model((*models.Volume)(nil)).Set("instance_id = NULL").Set("device_id = NULL").
			Set("attached = NULL").Set("updated = ?", models.Now()).Where("id = ? AND instance_id = ?", v.ID, vm.ID).Exec(ctx); err != nil {
			return err
		}
		return volumeEvent(ctx, tx, in.Actor, "VOLUME.DETACH", "", v.UUID,
			fmt.Sprintf("Detached volume %s from virtual machine %s", v.Name, vm.Name))
	})
}

// CheckDetach says whether a volume may be detached now.
func CheckDetach(v *models.Volume, vm *models.VMInstance) error {
	switch {
	case v.InstanceID == 0:
		return volFail(cserr.ParamError, "Volume %s is not attached to a virtual machine", v.Name)
	case v.VolumeType != models.VolumeDataDisk:
		return volFail(cserr.ParamError, "Volume %s is the root disk of %s; only data disks are detached", v.Name, vm.Name)
	case v.State != models.VolumeReady && v.State != models.VolumeAllocated:
		return volFail(cserr.ParamError, "Volume %s is %s; wait until it is Ready", v.Name, v.State)
	case vm.State != models.VMRunning && vm.State != models.VMStopped:
		return volFail(cserr.ParamError, "Virtual machine %s is %s; volumes are detached from Running or Stopped VMs", vm.Name, vm.State)
	}
	return nil
}

// ---- resize ----

// VolumeResizeInput resizes a volume to NewSize bytes (and a new disk
// offering, when DiskOfferingID is set).
type VolumeResizeInput struct {
	VolumeUUID     string
	NewSize        int64
	DiskOfferingID int64
	ShrinkOK       bool
	Actor          Actor
}

// VolumeResizeState is what VolumeResizeBegin found.
type VolumeResizeState struct {
	OldSize int64
	OnPool  bool // the volume is on a pool: the driver resizes it
}

// VolumeResizeBegin checks the resize and moves a Ready volume to
// Resizing, reserving the growth on its pool and in the account's primary
// storage count; an Allocated volume (no pool yet) just takes the new size.
// A volume already Resizing is a retry.
func (a *Volumes) VolumeResizeBegin(ctx context.Context, in VolumeResizeInput) (VolumeResizeState, error) {
	var st VolumeResizeState
	err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		v, err := loadVolume(ctx, tx, in.VolumeUUID, false)
		if err != nil {
			return err
		}
		st.OldSize = v.Size
		if v.State == models.VolumeResizing {
			st.OnPool = true
			return nil
		}
		if err := CheckResize(v, in.NewSize, in.ShrinkOK); err != nil {
			return err
		}
		delta := in.NewSize - v.Size
		if v.State == models.VolumeAllocated {
			if err := moveVolumeCounts(ctx, tx, v.AccountID, 0, delta); err != nil {
				return err
			}
			q := tx.NewUpdate().Model((*models.Volume)(nil)).Set("size = ?", in.NewSize).Set("updated = ?", models.Now()).
				Where("id = ? AND state = ?", v.ID, models.VolumeAllocated)
			if in.DiskOfferingID != 0 {
				q = q.Set("disk_offering_id = ?", in.DiskOfferingID)
			}
			_, err := q.Exec(ctx)
			return err
		}
		if err := models.Transition(ctx, tx, (*models.Volume)(nil), v.ID, models.VolumeResizing, []string{models.VolumeReady},
			map[string]any{"updated": models.Now()}); err != nil {
			return volFail(cserr.ParamError, "Volume %s changed meanwhile; try again", v.Name)
		}
		st.OnPool = true
		if delta > 0 {
			if err := reservePool(ctx, tx, v.PoolID, delta); err != nil {
				return err
			}
			return moveVolumeCounts(ctx, tx, v.AccountID, 0, delta)
		}
		return nil
	})
	return st, err
}

// CheckResize says whether a volume may take a new size now.
func CheckResize(v *models.Volume, newSize int64, shrinkOK bool) error {
	switch {
	case v.State != models.VolumeReady && v.State != models.VolumeAllocated:
		return volFail(cserr.ParamError, "Volume %s is %s; only an Allocated or Ready volume is resized", v.Name, v.State)
	case newSize <= 0:
		return volFail(cserr.ParamError, "The new size must be positive")
	case newSize < v.Size && !shrinkOK:
		return volFail(cserr.ParamError, "Going from the existing size of %d GiB to %d GiB shrinks volume %s: pass shrinkok=true to allow it",
			ceilGiB(v.Size), ceilGiB(newSize), v.Name)
	}
	return nil
}

// VolumeResizeOnPool has the pool's driver resize the volume.
func (a *Volumes) VolumeResizeOnPool(ctx context.Context, in VolumeResizeInput) error {
	v, err := loadVolume(ctx, a.DB, in.VolumeUUID, false)
	if err != nil {
		return err
	}
	p, err := loadPoolByID(ctx, a.DB, v.PoolID)
	if err != nil {
		return err
	}
	drv, desc, err := poolTarget(ctx, a.Deps, p)
	if err != nil {
		return err
	}
	if err := viaVolumeHost(ctx, a.Deps, v, &desc); err != nil {
		return err
	}
	if _, err := callHeartbeating(ctx, func(ctx context.Context) (storage.Volume, error) {
		return drv.ResizeVolume(ctx, desc, v.Path, in.NewSize)
	}); err != nil {
		return volDriverFailure(err)
	}
	refreshPoolUsed(ctx, a.DB, drv, desc, p.ID)
	return nil
}

// VolumeResizeFinishInput ends a resize.
type VolumeResizeFinishInput struct {
	VolumeResizeInput
	OldSize int64
	Failed  bool
	Reason  string
}

// VolumeResizeFinish records the new size (releasing what a shrink freed)
// or, when the resize failed, returns the volume to Ready and releases what
// the growth reserved. An Allocated volume was resized in the begin step.
func (a *Volumes) VolumeResizeFinish(ctx context.Context, in VolumeResizeFinishInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		v, err := loadVolume(ctx, tx, in.VolumeUUID, false)
		if err != nil {
			return err
		}
		delta := in.NewSize - in.OldSize
		if v.State != models.VolumeResizing {
			if v.State == models.VolumeAllocated && !in.Failed {
				return volumeEvent(ctx, tx, in.Actor, "VOLUME.RESIZE", "", v.UUID,
					fmt.Sprintf("Resized volume %s from %d to %d GiB", v.Name, ceilGiB(in.OldSize), ceilGiB(in.NewSize)))
			}
			return nil // finished already
		}
		if in.Failed {
			if err := models.Transition(ctx, tx, (*models.Volume)(nil), v.ID, models.VolumeReady, []string{models.VolumeResizing},
				map[string]any{"updated": models.Now()}); err != nil {
				return err
			}
			if delta > 0 {
				if err := releasePool(ctx, tx, v.PoolID, delta); err != nil {
					return err
				}
				if err := moveVolumeCounts(ctx, tx, v.AccountID, 0, -delta); err != nil {
					return err
				}
			}
			return volumeEvent(ctx, tx, in.Actor, "VOLUME.RESIZE", "ERROR", v.UUID, "Failed to resize volume "+v.Name+": "+in.Reason)
		}
		set := map[string]any{"size": in.NewSize, "updated": models.Now()}
		if in.DiskOfferingID != 0 {
			set["disk_offering_id"] = in.DiskOfferingID
		}
		if err := models.Transition(ctx, tx, (*models.Volume)(nil), v.ID, models.VolumeReady, []string{models.VolumeResizing}, set); err != nil {
			return err
		}
		if delta < 0 {
			if err := releasePool(ctx, tx, v.PoolID, -delta); err != nil {
				return err
			}
			if err := moveVolumeCounts(ctx, tx, v.AccountID, 0, delta); err != nil {
				return err
			}
		}
		v.Size = in.NewSize
		// Guarded by the transition above: written once per resize.
		if _, err := tx.NewInsert().Model(&models.UsageEvent{Type: "VOLUME.RESIZE", AccountID: v.AccountID, DomainID: v.DomainID,
			ZoneID: v.ZoneID, ResourceID: v.ID, ResourceName: v.Name, ResourceType: "Volume", OfferingID: v.DiskOfferingID,
			Size: v.Size, Created: models.Now()}).Exec(ctx); err != nil {
			return err
		}
		return volumeEvent(ctx, tx, in.Actor, "VOLUME.RESIZE", "", v.UUID,
			fmt.Sprintf("Resized volume %s from %d to %d GiB", v.Name, ceilGiB(in.OldSize), ceilGiB(in.NewSize)))
	})
}

// ---- migrate ----

// VolumeMigrateInput moves a volume to another pool.
type VolumeMigrateInput struct {
	VolumeUUID string
	PoolUUID   string
	Live       bool
	Actor      Actor
}

// VolumeMigrateState is where the volume was.
type VolumeMigrateState struct {
	SrcPoolID int64
	SrcPath   string
	DstPoolID int64
	// Live: the volume is the disk of a running VM, moved while it runs
	// (the pool driver's MigrateVolumeLive through the VM's host).
	Live bool
}

// VolumeMigrateBegin checks the migration and moves the volume Ready >
// Migrating with its size reserved on the target pool; a volume already
// Migrating is a retry.
func (a *Volumes) VolumeMigrateBegin(ctx context.Context, in VolumeMigrateInput) (VolumeMigrateState, error) {
	var st VolumeMigrateState
	err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		v, err := loadVolume(ctx, tx, in.VolumeUUID, false)
		if err != nil {
			return err
		}
		var dst models.StoragePool
		if err := tx.NewSelect().Model(&dst).Where("uuid = ?", in.PoolUUID).Limit(1).Scan(ctx); err != nil {
			if noRows(err) {
				return volFail(cserr.ParamError, "Unable to find storage pool by id %s", in.PoolUUID)
			}
			return err
		}
		st = VolumeMigrateState{SrcPoolID: v.PoolID, SrcPath: v.Path, DstPoolID: dst.ID}
		if in.Live && v.InstanceID != 0 {
			var vm models.VMInstance
			if err := tx.NewSelect().Model(&vm).Column("state").Where("id = ?", v.InstanceID).Limit(1).Scan(ctx); err != nil {
				return models.NotFound(err, "virtual machine")
			}
			st.Live = vm.State == models.VMRunning
		}
		if v.State == models.VolumeMigrating {
			return nil
		}
		if err := CheckMigrate(ctx, tx, v, &dst, in.Live); err != nil {
			return err
		}
		if err := models.Transition(ctx, tx, (*models.Volume)(nil), v.ID, models.VolumeMigrating, []string{models.VolumeReady},
			map[string]any{"updated": models.Now()}); err != nil {
			return volFail(cserr.ParamError, "Volume %s changed meanwhile; try again", v.Name)
		}
		return reservePool(ctx, tx, dst.ID, v.Size)
	})
	return st, err
}

// CheckMigrate says whether a volume may move to pool dst now. The disk
// of a running VM moves only with live (livemigrate=true), to a pool its
// host reaches; whether the pool driver can do it shows when the job runs
// (VolumeMigrateCopy: a driver that cannot fails the job, the volume back
// where it was).
func CheckMigrate(ctx context.Context, db bun.IDB, v *models.Volume, dst *models.StoragePool, live bool) error {
	switch {
	case v.State != models.VolumeReady || v.PoolID == 0:
		return volFail(cserr.ParamError, "Volume %s is %s; only a Ready volume on a pool is migrated", v.Name, v.State)
	case dst.ID == v.PoolID:
		return volFail(cserr.ParamError, "Volume %s is on storage pool %s already", v.Name, dst.Name)
	case dst.State != models.PoolUp:
		return volFail(cserr.ParamError, "Storage pool %s is %s; volumes migrate to Up pools", dst.Name, dst.State)
	case dst.ZoneID != v.ZoneID:
		return volFail(cserr.ParamError, "Storage pool %s is in another zone than volume %s", dst.Name, v.Name)
	}
	src, err := loadPoolByID(ctx, db, v.PoolID)
	if err != nil {
		return err
	}
	if !strings.EqualFold(src.HypervisorType, dst.HypervisorType) {
		return volFail(cserr.ParamError, "Storage pool %s is for %s, volume %s is on %s storage", dst.Name, dst.HypervisorType, v.Name, src.HypervisorType)
	}
	if v.InstanceID != 0 {
		var vm models.VMInstance
		if err := db.NewSelect().Model(&vm).Where("id = ?", v.InstanceID).Limit(1).Scan(ctx); err != nil {
			return models.NotFound(err, "virtual machine")
		}
		switch vm.State {
		case models.VMStopped:
		case models.VMRunning:
			if !live {
				return volFail(cserr.ParamError, "Virtual machine %s is running: stop it, or pass livemigrate=true", vm.Name)
			}
		default:
			return volFail(cserr.ParamError, "Virtual machine %s is %s; its volumes migrate while it is Stopped", vm.Name, vm.State)
		}
		r, err := reachOf(ctx, db, &vm)
		if err != nil {
			return err
		}
		if !r.reaches(dst) {
			return volFail(cserr.ParamError, "Virtual machine %s does not reach storage pool %s", vm.Name, dst.Name)
		}
	}
	return nil
}

// VolumeMigrateCopy copies the volume to the target pool while
// heartbeating its progress; the copy has the same path, so a retry finds
// it there.
func (a *Volumes) VolumeMigrateCopy(ctx context.Context, in VolumeMigrateState) (string, error) {
	src, err := loadPoolByID(ctx, a.DB, in.SrcPoolID)
	if err != nil {
		return "", err
	}
	dst, err := loadPoolByID(ctx, a.DB, in.DstPoolID)
	if err != nil {
		return "", err
	}
	drv, sdesc, err := poolTarget(ctx, a.Deps, src)
	if err != nil {
		return "", err
	}
	_, ddesc, err := poolTarget(ctx, a.Deps, dst)
	if err != nil {
		return "", err
	}
	copyFn := func(ctx context.Context) (storage.Volume, error) {
		return drv.CopyVolume(ctx, sdesc, in.SrcPath, ddesc, storage.VolumeSpec{Path: in.SrcPath}, heartbeatProgress(ctx))
	}
	if in.Live {
		h, ref, err := a.liveDiskHost(ctx, in)
		if err != nil {
			return "", err
		}
		copyFn = func(ctx context.Context) (storage.Volume, error) {
			return drv.MigrateVolumeLive(ctx, sdesc, in.SrcPath, ddesc, storage.VolumeSpec{Path: in.SrcPath}, h, ref, heartbeatProgress(ctx))
		}
	}
	made, err := callHeartbeating(ctx, copyFn)
	if in.Live && errors.Is(err, storage.ErrNotSupported) {
		return "", volFail(cserr.UnsupportedAction, "Live migration of volumes is not supported by the %s storage driver; stop the virtual machine and migrate the volume then (%v)", src.HypervisorType, err)
	}
	if err != nil {
		return "", volDriverFailure(err)
	}
	refreshPoolUsed(ctx, a.DB, drv, ddesc, dst.ID)
	return made.Path, nil
}

// liveDiskHost finds the running VM whose disk a live migration moves,
// and its host.
func (a *Volumes) liveDiskHost(ctx context.Context, in VolumeMigrateState) (hypervisor.Host, hypervisor.VMRef, error) {
	var vm models.VMInstance
	err := a.DB.NewSelect().Model(&vm).Column("uuid", "name", "instance_name", "state", "host_id").
		Where("id = (SELECT instance_id FROM volumes WHERE pool_id = ? AND path = ? AND removed IS NULL LIMIT 1)", in.SrcPoolID, in.SrcPath).
		Limit(1).Scan(ctx)
	if err != nil {
		return hypervisor.Host{}, hypervisor.VMRef{}, models.NotFound(err, "virtual machine of the volume")
	}
	if vm.State != models.VMRunning || vm.HostID == 0 {
		return hypervisor.Host{}, hypervisor.VMRef{}, volFail(cserr.ParamError, "Virtual machine %s is %s: its volume was to move while it runs", vm.Name, vm.State)
	}
	var h models.Host
	if err := a.DB.NewSelect().Model(&h).Where("id = ?", vm.HostID).Limit(1).Scan(ctx); err != nil {
		return hypervisor.Host{}, hypervisor.VMRef{}, models.NotFound(err, "host")
	}
	desc, err := hostDescriptor(ctx, a.Deps, &h)
	if err != nil {
		return hypervisor.Host{}, hypervisor.VMRef{}, err
	}
	return desc, hypervisor.VMRef{Name: vm.InstanceName, UUID: vm.UUID}, nil
}

// VolumeMigrateSwitchInput switches a volume to its copy.
type VolumeMigrateSwitchInput struct {
	VolumeUUID string
	State      VolumeMigrateState
	NewPath    string
	Actor      Actor
}

// VolumeMigrateSwitch points the volume at its copy on the target pool
// (Migrating > Ready), releases its size on the source and forgets its
// snapshots' copies there (the source copy goes with them).
func (a *Volumes) VolumeMigrateSwitch(ctx context.Context, in VolumeMigrateSwitchInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		v, err := loadVolume(ctx, tx, in.VolumeUUID, false)
		if err != nil {
			return err
		}
		if v.State != models.VolumeMigrating {
			return nil
		}
		dst, err := loadPoolByID(ctx, tx, in.State.DstPoolID)
		if err != nil {
			return err
		}
		if err := models.Transition(ctx, tx, (*models.Volume)(nil), v.ID, models.VolumeReady, []string{models.VolumeMigrating},
			map[string]any{"pool_id": dst.ID, "last_pool_id": in.State.SrcPoolID, "pod_id": nullID(dst.PodID), "path": in.NewPath, "updated": models.Now()}); err != nil {
			return err
		}
		if err := releasePool(ctx, tx, in.State.SrcPoolID, v.Size); err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model((*models.SnapshotStoreRef)(nil)).
			Where("volume_id = ? AND store_role = ? AND store_id = ?", v.ID, models.StoreRolePrimary, in.State.SrcPoolID).Exec(ctx); err != nil {
			return err
		}
		src, err := loadPoolByID(ctx, tx, in.State.SrcPoolID)
		if err != nil {
			return err
		}
		return volumeEvent(ctx, tx, in.Actor, "VOLUME.MIGRATE", "", v.UUID,
			fmt.Sprintf("Migrated volume %s from storage pool %s to %s", v.Name, src.Name, dst.Name))
	})
}

// VolumeOnPoolInput names a volume's copy on a pool.
type VolumeOnPoolInput struct {
	PoolID int64
	Path   string
}

// VolumeDeleteOnPool deletes a volume (with its snapshots there) from a
// pool through its driver; a missing one is success.
func (a *Volumes) VolumeDeleteOnPool(ctx context.Context, in VolumeOnPoolInput) error {
	if in.PoolID == 0 || in.Path == "" {
		return nil
	}
	p, err := loadPoolByID(ctx, a.DB, in.PoolID)
	if err != nil {
		return err
	}
	drv, desc, err := poolTarget(ctx, a.Deps, p)
	if err != nil {
		return err
	}
	if _, err := callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) { return struct{}{}, drv.DeleteVolume(ctx, desc, in.Path) }); err != nil {
		return volDriverFailure(err)
	}
	refreshPoolUsed(ctx, a.DB, drv, desc, p.ID)
	return nil
}

// VolumeMigrateUndoInput ends a failed migration.
type VolumeMigrateUndoInput struct {
	VolumeUUID string
	State      VolumeMigrateState
	Reason     string
	Actor      Actor
}

// VolumeMigrateUndo returns a Migrating volume to Ready on its source pool
// and releases what the target had reserved.
func (a *Volumes) VolumeMigrateUndo(ctx context.Context, in VolumeMigrateUndoInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		v, err := loadVolume(ctx, tx, in.VolumeUUID, false)
		if err != nil {
			return err
		}
		if v.State != models.VolumeMigrating {
			return nil
		}
		if err := models.Transition(ctx, tx, (*models.Volume)(nil), v.ID, models.VolumeReady, []string{models.VolumeMigrating},
			map[string]any{"updated": models.Now()}); err != nil {
			return err
		}
		if err := releasePool(ctx, tx, in.State.DstPoolID, v.Size); err != nil {
			return err
		}
		return volumeEvent(ctx, tx, in.Actor, "VOLUME.MIGRATE", "ERROR", v.UUID, "Failed to migrate volume "+v.Name+": "+in.Reason)
	})
}

// ---- delete ----

// VolumeDeleteState is what VolumeDeleteBegin left to do.
type VolumeDeleteState struct {
	PoolID int64
	Path   string
	Done   bool // nothing on a pool: deleted already
}

// VolumeDeleteBegin checks the delete (a detached data disk, not busy) and
// moves the volume to Destroy; a volume without a pool is removed at once.
func (a *Volumes) VolumeDeleteBegin(ctx context.Context, in VolumeRefInput) (VolumeDeleteState, error) {
	var st VolumeDeleteState
	err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		v, err := loadVolume(ctx, tx, in.VolumeUUID, true)
		if err != nil {
			return err
		}
		if !v.Removed.IsZero() {
			st.Done = true
			return nil
		}
		st.PoolID, st.Path = v.PoolID, v.Path
		if st.Path == "" {
			st.Path = v.UUID
		}
		if v.State == models.VolumeDestroy {
			return nil
		}
		if err := CheckDelete(v); err != nil {
			return err
		}
		if v.PoolID == 0 {
			st.Done = true
			return removeVolume(ctx, tx, v, in.Actor)
		}
		return models.Transition(ctx, tx, (*models.Volume)(nil), v.ID, models.VolumeDestroy, []string{v.State},
			map[string]any{"updated": models.Now()})
	})
	return st, err
}

// CheckDelete says whether a volume may be deleted now.
func CheckDelete(v *models.Volume) error {
	switch {
	case v.InstanceID != 0:
		return volFail(cserr.ParamError, "Please specify a volume that is not attached to any VM: volume %s is attached", v.Name)
	case v.VolumeType == models.VolumeRoot:
		return volFail(cserr.ParamError, "Volume %s is a root disk; it goes with its virtual machine", v.Name)
	}
	switch v.State {
	case models.VolumeAllocated, models.VolumeReady, models.VolumeError, models.VolumeUploaded:
		return nil
	}
	return volFail(cserr.ParamError, "Volume %s is %s; wait until it is Ready", v.Name, v.State)
}

// VolumeDeleteFinish removes a Destroy volume from the inventory once its
// pool no longer holds it: its pool allocation and the account's counts are
// released, the usage event and event written, its snapshot policies
// removed (their schedules stop on their next run).
func (a *Volumes) VolumeDeleteFinish(ctx context.Context, in VolumeRefInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		v, err := loadVolume(ctx, tx, in.VolumeUUID, true)
		if err != nil {
			return err
		}
		if !v.Removed.IsZero() || v.State != models.VolumeDestroy {
			return nil
		}
		if err := releasePool(ctx, tx, v.PoolID, v.Size); err != nil {
			return err
		}
		return removeVolume(ctx, tx, v, in.Actor)
	})
}

// removeVolume marks a volume Expunged and removed, releases the account's
// counts and writes the usage event and event.
func removeVolume(ctx context.Context, tx bun.IDB, v *models.Volume, actor Actor) error {
	if _, err := tx.NewUpdate().Model((*models.Volume)(nil)).Set("state = ?", models.VolumeExpunged).
		Set("removed = ?", models.Now()).Set("updated = ?", models.Now()).Where("id = ?", v.ID).Exec(ctx); err != nil {
		return err
	}
	if err := releaseVolumeCounts(ctx, tx, v); err != nil {
		return err
	}
	if _, err := tx.NewDelete().Model((*models.SnapshotPolicy)(nil)).Where("volume_id = ?", v.ID).Exec(ctx); err != nil {
		return err
	}
	if err := usageEvent(ctx, tx, volumeUsage("VOLUME.DELETE", v)); err != nil {
		return err
	}
	return volumeEvent(ctx, tx, actor, "VOLUME.DELETE", "", v.UUID, "Deleted volume "+v.Name)
}

// ---- resource counts ----

// moveVolumeCounts moves an account's volume and primary storage counts
// (positive reserves against its limits, negative releases).
func moveVolumeCounts(ctx context.Context, tx bun.IDB, accountID, volumes, bytes int64) error {
	if volumes == 0 && bytes == 0 {
		return nil
	}
	deltas := map[string]int64{models.ResourceVolume: volumes, models.ResourcePrimaryStorage: bytes}
	if volumes < 0 || bytes < 0 {
		return models.ReleaseResources(ctx, tx, accountID, map[string]int64{models.ResourceVolume: -volumes, models.ResourcePrimaryStorage: -bytes})
	}
	return models.ReserveResources(ctx, tx, accountID, deltas)
}

// releaseVolumeCounts releases what a volume counted for its account.
func releaseVolumeCounts(ctx context.Context, tx bun.IDB, v *models.Volume) error {
	return moveVolumeCounts(ctx, tx, v.AccountID, -1, -v.Size)
}

// ---- account cleanup ----

// VolumeAccountCleanup removes every volume of a deleted account (its VMs
// went first): data disks still marked attached are detached in the
// inventory, each volume is deleted from its pool and removed with its
// allocation, counts and usage event. It returns how many it removed.
func (a *Volumes) VolumeAccountCleanup(ctx context.Context, in AccountCleanupInput) (int64, error) {
	var vols []models.Volume
	if err := a.DB.NewSelect().Model(&vols).Where("account_id = ?", in.AccountID).Order("id").Scan(ctx); err != nil {
		return 0, err
	}
	var n int64
	for i := range vols {
		v := &vols[i]
		if v.PoolID != 0 {
			path := v.Path
			if path == "" {
				path = v.UUID
			}
			if err := a.VolumeDeleteOnPool(ctx, VolumeOnPoolInput{PoolID: v.PoolID, Path: path}); err != nil {
				return n, err
			}
		}
		err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			res, err := tx.NewUpdate().Model((*models.Volume)(nil)).Set("instance_id = NULL").Set("device_id = NULL").
				Set("state = ?", models.VolumeDestroy).Where("id = ? AND state = ?", v.ID, v.State).Exec(ctx)
			if err != nil {
				return err
			}
			if k, _ := res.RowsAffected(); k == 0 {
				return fmt.Errorf("volume %s changed while its account was deleted", v.UUID)
			}
			if v.PoolID != 0 && v.State != models.VolumeAllocated && v.State != models.VolumeError {
				if err := releasePool(ctx, tx, v.PoolID, v.Size); err != nil {
					return err
				}
			}
			return removeVolume(ctx, tx, v, Actor{AccountID: v.AccountID, DomainID: v.DomainID})
		})
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
