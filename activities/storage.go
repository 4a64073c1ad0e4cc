package activities

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/uptrace/bun"
	"go.temporal.io/sdk/temporal"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/sim/simkit"
	"github.com/nimbus-cloud/nimbus/infra/storage"
	storagesim "github.com/nimbus-cloud/nimbus/infra/storage/sim"
	"github.com/nimbus-cloud/nimbus/models"
)

// Storage holds the steps of the primary and secondary storage jobs.
type Storage struct{ Deps }

// StorageDrivers opens storage drivers on first use and keeps them for the
// life of the worker, like HypervisorDrivers: pool drivers by hypervisor
// type, image store drivers by provider.
type StorageDrivers struct {
	dataDir string
	hv      *HypervisorDrivers
	mu      sync.Mutex
	pools   map[string]storage.PoolDriver
	stores  map[string]storage.ImageStoreDriver
}

// NewStorageDrivers keeps drivers' state under dataDir: the Simulator's
// primary storage in <dataDir>/simulator/storage, sharing the fault
// switches of hv's Simulator (so that configureSimulator drives both);
// other pool drivers' in <dataDir>/<type>-storage. NFS exports are looked
// for mounted at <dataDir>/mnt/<server>/<export>.
func NewStorageDrivers(dataDir string, hv *HypervisorDrivers) *StorageDrivers {
	return &StorageDrivers{dataDir: dataDir, hv: hv, pools: map[string]storage.PoolDriver{}, stores: map[string]storage.ImageStoreDriver{}}
}

func (d *StorageDrivers) mountRoot() string {
	if d.dataDir == "" {
		return ""
	}
	return filepath.Join(d.dataDir, "mnt")
}

// Pool returns the primary storage driver of a hypervisor type.
func (d *StorageDrivers) Pool(hypervisorType string) (storage.PoolDriver, error) {
	t, err := hypervisor.Canonical(hypervisorType)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if drv := d.pools[t]; drv != nil {
		return drv, nil
	}
	var drv storage.PoolDriver
	if t == hypervisor.TypeSimulator {
		o := storagesim.Options{MountRoot: d.mountRoot()}
		if d.hv != nil {
			hd, err := d.hv.Get(t)
			if err != nil {
				return nil, err
			}
			if f, ok := hd.(interface{ Faults() *simkit.Faults }); ok {
				o.Faults = f.Faults()
			}
		}
		dir := ""
		if d.dataDir != "" {
			dir = filepath.Join(d.dataDir, "simulator", "storage")
		}
		if drv, err = storagesim.OpenWith(dir, o); err != nil {
			return nil, err
		}
	} else {
		dir := ""
		if d.dataDir != "" {
			dir = filepath.Join(d.dataDir, strings.ToLower(t)+"-storage")
		}
		if drv, err = storage.OpenPool(t, storage.Config{DataDir: dir, Options: map[string]string{"mountroot": d.mountRoot()}}); err != nil {
			return nil, err
		}
	}
	d.pools[t] = drv
	return drv, nil
}

// ImageStore returns the driver of an image store provider.
func (d *StorageDrivers) ImageStore(provider string) (storage.ImageStoreDriver, error) {
	p, err := storage.CanonicalProvider(provider)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if drv := d.stores[p]; drv != nil {
		return drv, nil
	}
	drv, err := storage.OpenImageStore(p, storage.Config{DataDir: d.dataDir})
	if err != nil {
		return nil, err
	}
	d.stores[p] = drv
	return drv, nil
}

// Close closes every driver opened so far.
func (d *StorageDrivers) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for k, drv := range d.pools {
		errs = append(errs, drv.Close())
		delete(d.pools, k)
	}
	for k, drv := range d.stores {
		errs = append(errs, drv.Close())
		delete(d.stores, k)
	}
	return errors.Join(errs...)
}

// ---- primary storage ----

// PoolSpec is a primary storage pool a createStoragePool job adds; the API
// has checked the seed's rules (scope per hypervisor, RBD for KVM...).
type PoolSpec struct {
	PoolUUID       string
	Name           string
	PoolType       string // NetworkFilesystem, RBD, ...
	Scope          string // CLUSTER, ZONE
	HypervisorType string
	URL            string
	HostAddress    string
	Path           string
	Port           int
	// UserInfoSealed is the URL's user:secret (RBD), encrypted.
	UserInfoSealed string
	Provider       string
	Managed        bool
	CapacityBytes  int64 // declared; 0 = as the backend reports
	CapacityIOPS   int64
	ZoneUUID       string
	PodUUID        string
	ClusterUUID    string
	Tags           []string
	Details        map[string]string
	Actor          Actor
}

// PoolBackendResult is what the backend reported about a new pool.
type PoolBackendResult struct {
	CapacityBytes  int64
	UsedBytes      int64
	AllocatedBytes int64
	// HostsConnected and HostsFailed count the hosts of the pool's scope
	// the pool was connected to.
	HostsConnected int
	HostsFailed    int
	FirstFailure   string
}

// poolScopeHosts lists the Up hosts a pool of this spec serves: the
// cluster's, or for a zone-wide pool the zone's hosts of its hypervisor.
func poolScopeHosts(ctx context.Context, db bun.IDB, zoneID, clusterID int64, hv string) ([]models.Host, error) {
	var hosts []models.Host
	q := db.NewSelect().Model(&hosts).Where("state = ? AND type = ?", models.HostUp, models.HostTypeRouting).Order("id")
	if clusterID != 0 {
		q = q.Where("cluster_id = ?", clusterID)
	} else {
		q = q.Where("zone_id = ? AND hypervisor_type = ?", zoneID, hv)
	}
	return hosts, q.Scan(ctx)
}

func idOf(ctx context.Context, db bun.IDB, table, uuid string) (int64, error) {
	if uuid == "" {
		return 0, nil
	}
	var id int64
	err := db.NewSelect().TableExpr(table).Column("id").Where("uuid = ? AND removed IS NULL", uuid).Limit(1).Scan(ctx, &id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, hostFail(cserr.ParamError, "Unable to find %s by id %s", strings.TrimSuffix(table, "s"), uuid)
	}
	return id, err
}

// poolDescriptor is how the storage driver sees a pool.
func (a *Storage) poolDescriptor(spec PoolSpec) (storage.Pool, error) {
	p := storage.Pool{
		ID: spec.PoolUUID, Name: spec.Name, Type: spec.PoolType, URL: spec.URL, CapacityBytes: spec.CapacityBytes,
		ZoneID: spec.ZoneUUID, PodID: spec.PodUUID, ClusterID: spec.ClusterUUID, Details: spec.Details,
	}
	if spec.UserInfoSealed != "" {
		if a.Secrets == nil {
			return p, errors.New("worker has no server key to decrypt pool credentials")
		}
		ui, err := a.Secrets.Decrypt(spec.UserInfoSealed)
		if err != nil {
			return p, temporal.NewNonRetryableApplicationError("cannot decrypt the pool's credentials: "+err.Error(), "Invalid", nil)
		}
		p.Username, p.Password, _ = strings.Cut(ui, ":")
	}
	return p, nil
}

// hostDescriptor is how drivers reach a host, credentials and details
// included (libvirt pools are reached through the host's libvirtd).
func hostDescriptor(ctx context.Context, d Deps, h *models.Host) (hypervisor.Host, error) {
	_, t, err := (&Hosts{Deps: d}).hostTarget(ctx, h.UUID)
	return t, err
}

// PoolBackendCreate prepares the pool through its storage driver (acting
// through a host of its scope where the driver needs one), connects it to
// the hosts of its scope, and reads its capacity back. Drivers' CreatePool
// and ConnectPool are idempotent by the pool's UUID.
func (a *Storage) PoolBackendCreate(ctx context.Context, spec PoolSpec) (PoolBackendResult, error) {
	var res PoolBackendResult
	zoneID, err := idOf(ctx, a.DB, "zones", spec.ZoneUUID)
	if err != nil {
		return res, err
	}
	clusterID, err := idOf(ctx, a.DB, "clusters", spec.ClusterUUID)
	if err != nil {
		return res, err
	}
	hosts, err := poolScopeHosts(ctx, a.DB, zoneID, clusterID, spec.HypervisorType)
	if err != nil {
		return res, err
	}
	drv, err := a.Pools(spec.HypervisorType)
	if err != nil {
		return res, driverFailure(err)
	}
	p, err := a.poolDescriptor(spec)
	if err != nil {
		return res, err
	}
	targets := make([]hypervisor.Host, len(hosts))
	for i := range hosts {
		if targets[i], err = hostDescriptor(ctx, a.Deps, &hosts[i]); err != nil {
			return res, err
		}
	}
	if len(targets) > 0 {
		p.Via = &targets[0]
	}
	st, err := callHeartbeating(ctx, func(ctx context.Context) (storage.PoolStats, error) { return drv.CreatePool(ctx, p) })
	if err != nil {
		return res, driverFailure(err)
	}
	for _, h := range targets {
		err := func() error {
			_, err := callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) { return struct{}{}, drv.ConnectPool(ctx, p, h) })
			return err
		}()
		if err != nil {
			if errors.Is(err, hypervisor.ErrNotSupported) {
				break // the driver needs no per-host step
			}
			res.HostsFailed++
			if res.FirstFailure == "" {
				res.FirstFailure = err.Error()
			}
			continue
		}
		res.HostsConnected++
	}
	if res.HostsConnected == 0 && res.HostsFailed > 0 {
		return res, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("the pool could not be connected to any of the %d host(s) of its scope: %s", res.HostsFailed, res.FirstFailure), "Unreachable", nil)
	}
	res.CapacityBytes, res.UsedBytes, res.AllocatedBytes = st.CapacityBytes, st.UsedBytes, st.AllocatedBytes
	return res, nil
}

// PoolCreateInput records a pool its driver prepared.
type PoolCreateInput struct {
	Spec    PoolSpec
	Backend PoolBackendResult
}

// PoolCreate writes the pool row (Up), its tags and capacity rows in one
// transaction; a pool already there with its UUID is success.
func (a *Storage) PoolCreate(ctx context.Context, in PoolCreateInput) error {
	s := in.Spec
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if ok, err := tx.NewSelect().Model((*models.StoragePool)(nil)).Where("uuid = ?", s.PoolUUID).WhereAllWithDeleted().Exists(ctx); err != nil || ok {
			return err
		}
		zoneID, err := idOf(ctx, tx, "zones", s.ZoneUUID)
		if err != nil {
			return err
		}
		podID, err := idOf(ctx, tx, "pods", s.PodUUID)
		if err != nil {
			return err
		}
		clusterID, err := idOf(ctx, tx, "clusters", s.ClusterUUID)
		if err != nil {
			return err
		}
		q := tx.NewSelect().Model((*models.StoragePool)(nil)).Where("zone_id = ? AND name = ?", zoneID, s.Name)
		if n, err := q.Count(ctx); err != nil {
			return err
		} else if n > 0 {
			return hostFail(cserr.ParamError, "A storage pool named %q already exists in this zone", s.Name)
		}
		capacity := s.CapacityBytes
		if capacity == 0 {
			capacity = in.Backend.CapacityBytes
		}
		now := models.Now()
		p := &models.StoragePool{
			UUID: s.PoolUUID, Name: s.Name, PoolType: s.PoolType, Scope: s.Scope, HypervisorType: s.HypervisorType,
			HostAddress: s.HostAddress, Path: s.Path, Port: s.Port, URL: s.URL, UserInfo: s.UserInfoSealed,
			StorageProvider: s.Provider, Managed: s.Managed, CapacityBytes: capacity, UsedBytes: in.Backend.UsedBytes,
			AllocatedBytes: in.Backend.AllocatedBytes, CapacityIOPS: s.CapacityIOPS, State: models.PoolUp,
			ZoneID: zoneID, PodID: podID, ClusterID: clusterID, Created: now, Updated: now,
		}
		if _, err := tx.NewInsert().Model(p).Exec(ctx); err != nil {
			return err
		}
		if err := SetPoolTags(ctx, tx, p.ID, s.Tags); err != nil {
			return err
		}
		if err := SyncPoolCapacity(ctx, tx, p); err != nil {
			return err
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: s.Actor, Type: "STORAGE.POOL.CREATE", ResourceType: "StoragePool", ResourceUUID: p.UUID,
			Description: fmt.Sprintf("Primary storage %s (%s, %s scope) is Up: %d GiB", p.Name, p.PoolType, p.Scope, capacity>>30),
		}))
	})
}

// SetPoolTags replaces a pool's tags.
func SetPoolTags(ctx context.Context, db bun.IDB, poolID int64, tags []string) error {
	if _, err := db.NewDelete().Model((*models.StoragePoolTag)(nil)).Where("pool_id = ?", poolID).Exec(ctx); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, t := range tags {
		t = strings.TrimSpace(t)
		if t == "" || seen[t] {
			continue
		}
		seen[t] = true
		if _, err := db.NewInsert().Model(&models.StoragePoolTag{PoolID: poolID, Tag: t}).Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

// poolCapacityTypes are the capacity rows of a pool: local storage for a
// host's own pool, else storage and storage allocated.
func poolCapacityTypes(p *models.StoragePool) []int {
	if p.Scope == models.ScopeHost {
		return []int{models.CapacityLocalStorage}
	}
	return []int{models.CapacityStorage, models.CapacityStorageAllocated}
}

// SyncPoolCapacity writes a pool's rows in op_host_capacity (host_id holds
// the pool id for storage types, as in CloudStack) from its row; call it in
// the transaction that changes the pool. A plain function, not an activity.
func SyncPoolCapacity(ctx context.Context, db bun.IDB, p *models.StoragePool) error {
	state := models.AllocationEnabled
	switch p.State {
	case models.PoolUp, models.PoolInitialized:
	default:
		state = models.AllocationDisabled
	}
	var rows []models.Capacity
	for _, t := range poolCapacityTypes(p) {
		used := p.UsedBytes
		if t == models.CapacityStorageAllocated {
			used = p.AllocatedBytes
		}
		rows = append(rows, models.Capacity{HostID: p.ID, ZoneID: p.ZoneID, PodID: p.PodID, ClusterID: p.ClusterID,
			CapacityType: t, UsedCapacity: used, TotalCapacity: p.CapacityBytes, CapacityState: state})
	}
	return upsertCapacity(ctx, db, rows)
}

// PoolRefInput names a pool.
type PoolRefInput struct {
	PoolUUID string
	Actor    Actor
}

// loadPool loads a live pool by UUID (431 when gone).
func loadPool(ctx context.Context, db bun.IDB, id string) (*models.StoragePool, error) {
	var p models.StoragePool
	if err := db.NewSelect().Model(&p).Where("uuid = ?", id).Limit(1).Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, hostFail(cserr.ParamError, "Unable to find storage pool by id %s", id)
		}
		return nil, err
	}
	return &p, nil
}

// PoolMaintenanceBegin moves an Up (or Disabled) pool to
// PrepareForMaintenance and disables its capacity. A pool already preparing
// is success.
func (a *Storage) PoolMaintenanceBegin(ctx context.Context, in PoolRefInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		p, err := loadPool(ctx, tx, in.PoolUUID)
		if err != nil {
			return err
		}
		switch p.State {
		case models.PoolPrepareForMaintenance:
			return nil
		case models.PoolUp, models.PoolDisabled, models.PoolErrorInMaintenance, models.PoolErrorInPrepareForMaintenance:
		default:
			return hostFail(cserr.ParamError, "Storage pool %s is %s; only an Up or Disabled pool enters maintenance", p.Name, p.State)
		}
		if err := models.Transition(ctx, tx, (*models.StoragePool)(nil), p.ID, models.PoolPrepareForMaintenance, []string{p.State}, nil); err != nil {
			return err
		}
		p.State = models.PoolPrepareForMaintenance
		if err := SyncPoolCapacity(ctx, tx, p); err != nil {
			return err
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "MAINT.PREPARE.PS", State: "Started", ResourceType: "StoragePool", ResourceUUID: p.UUID,
			Description: "Preparing primary storage " + p.Name + " for maintenance",
		}))
	})
}

// PoolEvacuate is the step that stops or moves what uses the pool before
// maintenance. It does nothing yet: the VM and volume workflows (issue 5)
// fill it in. It counts the volumes still on the pool.
func (a *Storage) PoolEvacuate(ctx context.Context, in PoolRefInput) (int64, error) {
	p, err := loadPool(ctx, a.DB, in.PoolUUID)
	if err != nil {
		return 0, err
	}
	return a.DB.NewSelect().Model((*models.Volume)(nil)).
		Where("pool_id = ? AND state NOT IN (?)", p.ID, bun.In([]string{models.VolumeDestroy, models.VolumeExpunged})).Count(ctx)
}

// PoolMaintenanceEndInput ends an enableStorageMaintenance job.
type PoolMaintenanceEndInput struct {
	PoolUUID string
	Failed   bool
	Reason   string
	// UnableToStop sends a failed pool to ErrorInMaintenance (CloudStack's
	// state for a pool whose VMs could not all be stopped).
	UnableToStop bool
	// StoppedVMs names the VMs the maintenance stopped, for the event.
	StoppedVMs []string
	Actor      Actor
}

// PoolMaintenanceEnd moves PrepareForMaintenance to Maintenance (or
// ErrorInPrepareForMaintenance / ErrorInMaintenance when evacuation
// failed). It forgets the VMs recorded as stopped by the maintenance that
// are not Stopped (their stop failed): cancelling starts only the others.
func (a *Storage) PoolMaintenanceEnd(ctx context.Context, in PoolMaintenanceEndInput) error {
	to, level, desc, more := models.PoolMaintenance, "INFO", "Primary storage %s is in maintenance", ""
	if len(in.StoppedVMs) > 0 {
		more = "; stopped the virtual machines using it: " + strings.Join(in.StoppedVMs, ", ")
	}
	if in.Failed {
		to, level, desc, more = models.PoolErrorInPrepareForMaintenance, "ERROR", "Primary storage %s could not enter maintenance: ", in.Reason
		if in.UnableToStop {
			to = models.PoolErrorInMaintenance
		}
	}
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		p, err := loadPool(ctx, tx, in.PoolUUID)
		if err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model((*models.StoragePoolWork)(nil)).Where("pool_id = ?", p.ID).
			Where("vm_id NOT IN (SELECT id FROM vm_instances WHERE state = ?)", models.VMStopped).Exec(ctx); err != nil {
			return err
		}
		if p.State != to {
			if err := models.Transition(ctx, tx, (*models.StoragePool)(nil), p.ID, to, []string{models.PoolPrepareForMaintenance}, nil); err != nil {
				return hostFail(cserr.ParamError, "storage pool %s left PrepareForMaintenance (now %s) while preparing", p.Name, p.State)
			}
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "MAINT.PREPARE.PS", Level: level, ResourceType: "StoragePool", ResourceUUID: p.UUID,
			Description: fmt.Sprintf(desc, p.Name) + more,
		}))
	})
}

// PoolMaintenanceCancel returns a pool from (preparing for) maintenance to
// Up and re-enables its capacity. An Up pool is success.
func (a *Storage) PoolMaintenanceCancel(ctx context.Context, in PoolRefInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		p, err := loadPool(ctx, tx, in.PoolUUID)
		if err != nil {
			return err
		}
		if p.State == models.PoolUp {
			return nil
		}
		from := []string{models.PoolMaintenance, models.PoolPrepareForMaintenance, models.PoolErrorInMaintenance,
			models.PoolErrorInPrepareForMaintenance, models.PoolCancelMaintenance}
		if err := models.Transition(ctx, tx, (*models.StoragePool)(nil), p.ID, models.PoolUp, from, nil); err != nil {
			return hostFail(cserr.ParamError, "Storage pool %s is %s, not in maintenance", p.Name, p.State)
		}
		p.State = models.PoolUp
		if err := SyncPoolCapacity(ctx, tx, p); err != nil {
			return err
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "MAINT.CANCEL.PS", ResourceType: "StoragePool", ResourceUUID: p.UUID,
			Description: "Primary storage " + p.Name + " left maintenance",
		}))
	})
}

// PoolBackendDelete removes the pool through its driver: disconnects it from
// the hosts of its scope and deletes it. A pool the backend no longer knows
// is success.
func (a *Storage) PoolBackendDelete(ctx context.Context, in PoolRefInput) error {
	p, err := loadPool(ctx, a.DB, in.PoolUUID)
	if err != nil {
		return err
	}
	drv, err := a.Pools(p.HypervisorType)
	if err != nil {
		return driverFailure(err)
	}
	spec := PoolSpec{PoolUUID: p.UUID, Name: p.Name, PoolType: p.PoolType, URL: p.URL, UserInfoSealed: p.UserInfo, CapacityBytes: p.CapacityBytes}
	if spec.ZoneUUID, err = uuidOf(ctx, a.DB, "zones", p.ZoneID); err != nil {
		return err
	}
	if spec.PodUUID, err = uuidOf(ctx, a.DB, "pods", p.PodID); err != nil {
		return err
	}
	if spec.ClusterUUID, err = uuidOf(ctx, a.DB, "clusters", p.ClusterID); err != nil {
		return err
	}
	desc, err := a.poolDescriptor(spec)
	if err != nil {
		return err
	}
	hosts, err := poolScopeHosts(ctx, a.DB, p.ZoneID, p.ClusterID, p.HypervisorType)
	if err != nil {
		return err
	}
	for i := range hosts {
		h, err := hostDescriptor(ctx, a.Deps, &hosts[i])
		if err != nil {
			return err
		}
		if desc.Via == nil {
			desc.Via = &h
		}
		_, err = callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) { return struct{}{}, drv.DisconnectPool(ctx, desc, h) })
		if errors.Is(err, hypervisor.ErrNotSupported) {
			break
		}
		// A host that does not answer keeps a stale mount; it is not a
		// reason to keep the pool.
	}
	_, err = callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) { return struct{}{}, drv.DeletePool(ctx, desc) })
	if err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
		return driverFailure(err)
	}
	return nil
}

// PoolRemove removes a pool from the inventory with its tags, capacity rows
// and template copies, refusing (536) while volumes use it.
func (a *Storage) PoolRemove(ctx context.Context, in PoolRefInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		p, err := loadPool(ctx, tx, in.PoolUUID)
		if err != nil {
			if cserr.Code(err) == cserr.ParamError {
				return nil // removed already: a retry
			}
			return err
		}
		return RemovePool(ctx, tx, p, in.Actor)
	})
}

// RemovePool is PoolRemove's transaction body, for API handlers.
func RemovePool(ctx context.Context, tx bun.IDB, p *models.StoragePool, actor Actor) error {
	n, err := tx.NewSelect().Model((*models.Volume)(nil)).
		Where("pool_id = ? AND state NOT IN (?)", p.ID, bun.In([]string{models.VolumeDestroy, models.VolumeExpunged})).Count(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		return hostFail(cserr.ResourceInUse, "Storage pool %s holds %d volume(s); delete or migrate them first", p.Name, n)
	}
	if _, err := tx.NewUpdate().Model((*models.StoragePool)(nil)).Set("state = ?", models.PoolRemoved).
		Set("removed = ?", models.Now()).Where("id = ?", p.ID).Exec(ctx); err != nil {
		return err
	}
	if _, err := tx.NewDelete().Model((*models.StoragePoolTag)(nil)).Where("pool_id = ?", p.ID).Exec(ctx); err != nil {
		return err
	}
	if _, err := tx.NewDelete().Model((*models.TemplatePoolRef)(nil)).Where("pool_id = ?", p.ID).Exec(ctx); err != nil {
		return err
	}
	for _, m := range []any{(*models.StoragePoolWork)(nil), (*models.PoolOrphan)(nil)} {
		if _, err := tx.NewDelete().Model(m).Where("pool_id = ?", p.ID).Exec(ctx); err != nil {
			return err
		}
	}
	if err := DeleteCapacity(ctx, tx, p.ID, poolCapacityTypes(p)...); err != nil {
		return err
	}
	return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
		Actor: actor, Type: "STORAGE.POOL.DELETE", ResourceType: "StoragePool", ResourceUUID: p.UUID,
		Description: "Primary storage " + p.Name + " deleted",
	}))
}

// ---- secondary storage ----

// ImageStoreSpec is an image store an addImageStore or
// createSecondaryStagingStore job adds.
type ImageStoreSpec struct {
	StoreUUID string
	Name      string
	Provider  string // NFS, S3, Swift
	Role      string // Image, ImageCache
	Scope     string // ZONE, REGION
	Protocol  string
	URL       string
	ZoneUUID  string
	// Details are the provider's settings; those named in Secret are
	// encrypted with the server key.
	Details map[string]string
	Secret  []string
	Actor   Actor
}

func (a *Storage) storeDescriptor(spec ImageStoreSpec) (storage.ImageStore, error) {
	d := storage.ImageStore{ID: spec.StoreUUID, Name: spec.Name, Provider: spec.Provider, URL: spec.URL, Details: map[string]string{}}
	for k, v := range spec.Details {
		d.Details[k] = v
	}
	for _, k := range spec.Secret {
		if d.Details[k] == "" {
			continue
		}
		if a.Secrets == nil {
			return d, errors.New("worker has no server key to decrypt image store credentials")
		}
		v, err := a.Secrets.Decrypt(d.Details[k])
		if err != nil {
			return d, temporal.NewNonRetryableApplicationError("cannot decrypt the image store's "+k+": "+err.Error(), "Invalid", nil)
		}
		d.Details[k] = v
	}
	return d, nil
}

// ImageStoreCapacity checks the store answers through its driver and reads
// its size and use.
func (a *Storage) ImageStoreCapacity(ctx context.Context, spec ImageStoreSpec) (storage.StoreStats, error) {
	drv, err := a.ImageStores(spec.Provider)
	if err != nil {
		return storage.StoreStats{}, driverFailure(err)
	}
	d, err := a.storeDescriptor(spec)
	if err != nil {
		return storage.StoreStats{}, err
	}
	st, err := callHeartbeating(ctx, func(ctx context.Context) (storage.StoreStats, error) { return drv.Capacity(ctx, d) })
	if err != nil {
		return st, driverFailure(err)
	}
	return st, nil
}

// ImageStoreCreateInput records a store its driver answered for.
type ImageStoreCreateInput struct {
	Spec  ImageStoreSpec
	Stats storage.StoreStats
}

// ImageStoreCreate writes the store row and its details in one
// transaction; a store already there with its UUID is success.
func (a *Storage) ImageStoreCreate(ctx context.Context, in ImageStoreCreateInput) error {
	s := in.Spec
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if ok, err := tx.NewSelect().Model((*models.ImageStore)(nil)).Where("uuid = ?", s.StoreUUID).WhereAllWithDeleted().Exists(ctx); err != nil || ok {
			return err
		}
		zoneID, err := idOf(ctx, tx, "zones", s.ZoneUUID)
		if err != nil {
			return err
		}
		if n, err := tx.NewSelect().Model((*models.ImageStore)(nil)).Where("name = ?", s.Name).Count(ctx); err != nil {
			return err
		} else if n > 0 {
			return hostFail(cserr.ParamError, "An image store named %q already exists", s.Name)
		}
		st := &models.ImageStore{
			UUID: s.StoreUUID, Name: s.Name, Protocol: s.Protocol, URL: s.URL, ProviderName: s.Provider, Role: s.Role,
			Scope: s.Scope, ZoneID: zoneID, TotalSize: in.Stats.TotalBytes, UsedBytes: in.Stats.UsedBytes, Created: models.Now(),
		}
		if _, err := tx.NewInsert().Model(st).Exec(ctx); err != nil {
			return err
		}
		secret := map[string]bool{}
		for _, k := range s.Secret {
			secret[k] = true
		}
		for _, k := range sortedDetailKeys(s.Details) {
			d := &models.ImageStoreDetail{StoreID: st.ID, Name: k, Value: s.Details[k], Display: !secret[k]}
			if _, err := tx.NewInsert().Model(d).Exec(ctx); err != nil {
				return err
			}
		}
		typ := "IMAGE.STORE.ADD"
		if s.Role == models.ImageRoleImageCache {
			typ = "STAGING.STORE.ADD"
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: s.Actor, Type: typ, ResourceType: "ImageStore", ResourceUUID: st.UUID,
			Description: fmt.Sprintf("%s store %s (%s) added: %d GiB", s.Provider, s.Name, s.URL, in.Stats.TotalBytes>>30),
		}))
	})
}

func sortedDetailKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
