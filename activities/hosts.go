package activities

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/uptrace/bun"
	"go.temporal.io/sdk/temporal"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/sim/simkit"
	"github.com/nimbus-cloud/nimbus/models"
)

// Hosts holds the steps of the host jobs: addHost, reconnectHost and host
// maintenance. The driver is chosen by the host's hypervisor type.
type Hosts struct{ Deps }

// HypervisorDrivers opens hypervisor drivers on first use and keeps them for
// the life of the worker: a driver may hold connections or, for the
// simulator, the whole simulated cloud and the lock on its data directory.
// A driver that fails to open is not remembered, so a later call retries
// (a simulator directory still locked by a dying worker, say).
type HypervisorDrivers struct {
	dataDir string
	mu      sync.Mutex
	open    map[string]hypervisor.Driver
}

// NewHypervisorDrivers keeps each driver's state under dataDir: the
// simulator's in <dataDir>/simulator, others' in <dataDir>/<type>.
func NewHypervisorDrivers(dataDir string) *HypervisorDrivers {
	return &HypervisorDrivers{dataDir: dataDir, open: map[string]hypervisor.Driver{}}
}

// Get returns the driver of a hypervisor type, opening it the first time.
// A type without a driver fails with the registry's error naming it.
func (d *HypervisorDrivers) Get(typ string) (hypervisor.Driver, error) {
	t, err := hypervisor.Canonical(typ)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if drv := d.open[t]; drv != nil {
		return drv, nil
	}
	dir := ""
	if d.dataDir != "" {
		dir = filepath.Join(d.dataDir, strings.ToLower(t))
	}
	drv, err := hypervisor.Open(t, hypervisor.Config{DataDir: dir})
	if err != nil {
		return nil, err
	}
	d.open[t] = drv
	return drv, nil
}

// Close closes every driver opened so far.
func (d *HypervisorDrivers) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for t, drv := range d.open {
		errs = append(errs, drv.Close())
		delete(d.open, t)
	}
	return errors.Join(errs...)
}

// driverFailure maps a driver error for Temporal: not found, not supported,
// invalid and capacity are final (non-retryable, typed by kind); unreachable
// and unclassified failures are retried within the activity's bounded
// retry policy.
func driverFailure(err error) error {
	if err == nil {
		return nil
	}
	typ := hypervisor.ErrorType(err)
	if !hypervisor.Retryable(err) {
		if typ == "" {
			typ = "DriverError"
		}
		return temporal.NewNonRetryableApplicationError(err.Error(), typ, nil)
	}
	if typ == "" {
		typ = "DriverError"
	}
	return temporal.NewApplicationError(err.Error(), typ)
}

// callHeartbeating runs a driver call while heartbeating, so that a worker
// dying mid-call is noticed within the heartbeat timeout and the call is
// retried on another worker; the backend tasks the driver starts are saved
// in the heartbeat details and the retry reattaches to them (see
// trackDriverCall).
func callHeartbeating[T any](ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	return trackDriverCall(ctx, fn)
}

// hostFail is a non-retryable failure with a CloudStack code.
func hostFail(code int, format string, args ...any) error {
	return cserr.Temporal(cserr.New(code, format, args...))
}

// ---- capacity ----

// SyncHostCapacity writes the CPU (MHz) and memory (bytes) rows of a host
// in op_host_capacity from its row: totals from discovery, used from what
// the planner allocated, Enabled while the host's resource state is
// Enabled. Call it in the transaction that changes the host. It is a plain
// function, not an activity, so API handlers use it too.
func SyncHostCapacity(ctx context.Context, db bun.IDB, h *models.Host) error {
	state := models.AllocationEnabled
	if h.ResourceState != models.ResourceEnabled {
		state = models.AllocationDisabled
	}
	rows := []models.Capacity{
		{HostID: h.ID, ZoneID: h.ZoneID, PodID: h.PodID, ClusterID: h.ClusterID, CapacityType: models.CapacityCPU,
			UsedCapacity: h.CPUAllocated, TotalCapacity: int64(h.CPUs) * int64(h.Speed), CapacityState: state},
		{HostID: h.ID, ZoneID: h.ZoneID, PodID: h.PodID, ClusterID: h.ClusterID, CapacityType: models.CapacityMemory,
			UsedCapacity: h.MemAllocated, TotalCapacity: h.RAM, CapacityState: state},
	}
	return upsertCapacity(ctx, db, rows)
}

// upsertCapacity writes capacity rows keyed by (host_id, capacity_type).
func upsertCapacity(ctx context.Context, db bun.IDB, rows []models.Capacity) error {
	now := models.Now()
	for i := range rows {
		r := &rows[i]
		res, err := db.NewUpdate().Model((*models.Capacity)(nil)).
			Set("zone_id = ?", r.ZoneID).Set("pod_id = ?", nullID(r.PodID)).Set("cluster_id = ?", nullID(r.ClusterID)).
			Set("used_capacity = ?", r.UsedCapacity).Set("total_capacity = ?", r.TotalCapacity).
			Set("capacity_state = ?", r.CapacityState).Set("update_time = ?", now).
			Where("host_id = ? AND capacity_type = ?", r.HostID, r.CapacityType).Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			continue
		}
		// MySQL reports 0 rows affected when nothing changed: look before inserting.
		ok, err := db.NewSelect().Model((*models.Capacity)(nil)).
			Where("host_id = ? AND capacity_type = ?", r.HostID, r.CapacityType).Exists(ctx)
		if err != nil || ok {
			return err
		}
		r.Created, r.Updated = now, now
		if _, err := db.NewInsert().Model(r).Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

func nullID(id int64) any {
	if id == 0 {
		return nil
	}
	return id
}

// DeleteCapacity removes the capacity rows of a host or pool (host_id holds
// the pool id for storage types) of the given types.
func DeleteCapacity(ctx context.Context, db bun.IDB, id int64, types ...int) error {
	_, err := db.NewDelete().Model((*models.Capacity)(nil)).
		Where("host_id = ? AND capacity_type IN (?)", id, bun.In(types)).Exec(ctx)
	return err
}

// SetCapacityState enables or disables the capacity rows of a host or pool.
func SetCapacityState(ctx context.Context, db bun.IDB, id int64, enabled bool, types ...int) error {
	state := models.AllocationEnabled
	if !enabled {
		state = models.AllocationDisabled
	}
	_, err := db.NewUpdate().Model((*models.Capacity)(nil)).Set("capacity_state = ?", state).
		Set("update_time = ?", models.Now()).
		Where("host_id = ? AND capacity_type IN (?)", id, bun.In(types)).Exec(ctx)
	return err
}

// ---- addHost ----

// HostCreateInput is the host an addHost job adds.
type HostCreateInput struct {
	HostUUID    string
	ClusterUUID string
	Hypervisor  string
	URL         string
	Username    string
	// PasswordSealed is the password encrypted with the server key: the
	// plain password never enters the workflow history.
	PasswordSealed string
	HostTags       []string
	// ResourceState is Enabled or Disabled (allocationstate).
	ResourceState string
	// Details are driver settings the API took as parameters (a BareMetal
	// machine's cpunumber, cpuspeed, memory, hostmac).
	Details map[string]string
	Actor   Actor
}

// HostRef names a host a job works on.
type HostRef struct {
	HostID   int64
	HostUUID string
	Name     string
	URL      string
}

// HostCreate writes the host row in state Connecting, with its credentials
// and tags. It is idempotent by the host's UUID; a host row of the same URL
// in the cluster that is not Up (an earlier add that failed) is taken over
// by the API, which passes its UUID here; another live row of the same URL
// is refused.
func (a *Hosts) HostCreate(ctx context.Context, in HostCreateInput) (HostRef, error) {
	var ref HostRef
	err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var cl models.Cluster
		if err := tx.NewSelect().Model(&cl).Where("uuid = ?", in.ClusterUUID).Limit(1).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return hostFail(cserr.ParamError, "Unable to find cluster by id %s", in.ClusterUUID)
			}
			return err
		}
		if !strings.EqualFold(cl.HypervisorType, in.Hypervisor) {
			return hostFail(cserr.ParamError, "Cluster %s holds %s hosts; a %s host cannot join it", cl.Name, cl.HypervisorType, in.Hypervisor)
		}
		var h models.Host
		err := tx.NewSelect().Model(&h).Where("uuid = ?", in.HostUUID).Limit(1).Scan(ctx)
		switch {
		case err == nil:
			if h.State != models.HostUp && h.State != models.HostConnecting {
				if err := models.Transition(ctx, tx, (*models.Host)(nil), h.ID, models.HostConnecting, []string{h.State},
					map[string]any{"state_reason": ""}); err != nil {
					return err
				}
			}
		case errors.Is(err, sql.ErrNoRows):
			dup, err := tx.NewSelect().Model((*models.Host)(nil)).
				Where("cluster_id = ? AND url = ? AND uuid <> ?", cl.ID, in.URL, in.HostUUID).Exists(ctx)
			if err != nil {
				return err
			}
			if dup {
				return hostFail(cserr.ParamError, "A host with URL %s already exists in cluster %s", in.URL, cl.Name)
			}
			rs := in.ResourceState
			if rs == "" {
				rs = models.ResourceEnabled
			}
			h = models.Host{
				UUID: in.HostUUID, Name: hostNameOf(in.URL), Type: models.HostTypeRouting, State: models.HostConnecting,
				ResourceState: rs, HypervisorType: cl.HypervisorType, URL: in.URL,
				ZoneID: cl.ZoneID, PodID: cl.PodID, ClusterID: cl.ID, Created: models.Now(),
			}
			if _, err := tx.NewInsert().Model(&h).Exec(ctx); err != nil {
				return err
			}
		default:
			return err
		}
		kv := map[string]string{"username": in.Username, "password": in.PasswordSealed}
		for k, v := range in.Details {
			kv[k] = v
		}
		if err := setHostDetails(ctx, tx, h.ID, kv); err != nil {
			return err
		}
		if in.HostTags != nil {
			if err := SetHostTags(ctx, tx, h.ID, in.HostTags); err != nil {
				return err
			}
		}
		ref = HostRef{HostID: h.ID, HostUUID: h.UUID, Name: h.Name, URL: h.URL}
		return nil
	})
	return ref, err
}

// hostNameOf is the name a host has until its driver reports one: the
// URL's host part.
func hostNameOf(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Hostname() != "" {
		return u.Hostname()
	}
	return raw
}

// setHostDetails writes key/value details of a host; an empty value
// removes the key.
func setHostDetails(ctx context.Context, db bun.IDB, hostID int64, kv map[string]string) error {
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, err := db.NewDelete().Model((*models.HostDetail)(nil)).Where("host_id = ? AND name = ?", hostID, k).Exec(ctx); err != nil {
			return err
		}
		if kv[k] == "" {
			continue
		}
		if _, err := db.NewInsert().Model(&models.HostDetail{HostID: hostID, Name: k, Value: kv[k]}).Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

// SetHostTags replaces the admin's (explicit) tags of a host; implicit tags
// from the driver stay.
func SetHostTags(ctx context.Context, db bun.IDB, hostID int64, tags []string) error {
	if _, err := db.NewDelete().Model((*models.HostTag)(nil)).Where("host_id = ? AND is_implicit = ?", hostID, false).Exec(ctx); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, t := range tags {
		t = strings.TrimSpace(t)
		if t == "" || seen[t] {
			continue
		}
		seen[t] = true
		if _, err := db.NewInsert().Model(&models.HostTag{HostID: hostID, Tag: t}).Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

// HostDiscovery is what the driver reported about a host.
type HostDiscovery struct {
	GUID              string
	Name              string
	PrivateIP         string
	CPUSockets        int
	CPUCores          int
	CPUMHz            int
	MemoryBytes       int64
	HypervisorVersion string
	Capabilities      string
	// Details are what else the driver reported (a BareMetal machine's
	// MAC, vendor...), recorded as host details.
	Details map[string]string
}

// HostConnectInput names the host to connect.
type HostConnectInput struct {
	HostUUID string
}

// HostConnect connects the host through its hypervisor driver and returns
// what the driver discovered. Drivers' ConnectHost is idempotent, so a
// retry after a worker died mid-call is safe.
func (a *Hosts) HostConnect(ctx context.Context, in HostConnectInput) (HostDiscovery, error) {
	h, target, err := a.hostTarget(ctx, in.HostUUID)
	if err != nil {
		return HostDiscovery{}, err
	}
	drv, err := a.Hypervisors(h.HypervisorType)
	if err != nil {
		return HostDiscovery{}, driverFailure(err)
	}
	info, err := callHeartbeating(ctx, func(ctx context.Context) (hypervisor.HostInfo, error) {
		return drv.ConnectHost(ctx, target)
	})
	if err != nil {
		return HostDiscovery{}, driverFailure(err)
	}
	if info.GUID == "" || info.CPUCores <= 0 || info.CPUMHz <= 0 || info.MemoryBytes <= 0 {
		return HostDiscovery{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s driver reported an incomplete host (guid %q, %d cores at %d MHz, %d bytes)",
				h.HypervisorType, info.GUID, info.CPUCores, info.CPUMHz, info.MemoryBytes), "Invalid", nil)
	}
	return HostDiscovery{
		GUID: info.GUID, Name: info.Name, PrivateIP: info.PrivateIP,
		CPUSockets: info.CPUSockets, CPUCores: info.CPUCores, CPUMHz: info.CPUMHz, MemoryBytes: info.MemoryBytes,
		HypervisorVersion: info.HypervisorVersion, Capabilities: capabilityList(info.Capabilities), Details: info.Details,
	}, nil
}

func capabilityList(c hypervisor.Capabilities) string {
	var out []string
	for _, f := range []struct {
		on   bool
		name string
	}{
		{c.HardwareAccel, "hvm"}, {c.LiveMigration, "live-migration"}, {c.LocalStorage, "local-storage"},
		{c.VolumeHotplug, "volume-hotplug"}, {c.CPUHotplug, "cpu-hotplug"}, {c.MemoryHotplug, "memory-hotplug"},
	} {
		if f.on {
			out = append(out, f.name)
		}
	}
	return strings.Join(out, ",")
}

// hostTarget loads a host and how its driver reaches it.
func (a *Hosts) hostTarget(ctx context.Context, hostUUID string) (*models.Host, hypervisor.Host, error) {
	var h models.Host
	if err := a.DB.NewSelect().Model(&h).Where("uuid = ?", hostUUID).Limit(1).Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, hypervisor.Host{}, hostFail(cserr.ParamError, "Unable to find host by id %s", hostUUID)
		}
		return nil, hypervisor.Host{}, err
	}
	t := hypervisor.Host{ID: h.UUID, URL: h.URL}
	var err error
	if t.ZoneID, err = uuidOf(ctx, a.DB, "zones", h.ZoneID); err != nil {
		return nil, t, err
	}
	if t.PodID, err = uuidOf(ctx, a.DB, "pods", h.PodID); err != nil {
		return nil, t, err
	}
	if t.ClusterID, err = uuidOf(ctx, a.DB, "clusters", h.ClusterID); err != nil {
		return nil, t, err
	}
	var details []models.HostDetail
	if err := a.DB.NewSelect().Model(&details).Where("host_id = ?", h.ID).Scan(ctx); err != nil {
		return nil, t, err
	}
	for _, d := range details {
		switch d.Name {
		case "username":
			t.Username = d.Value
		case "password":
			if a.Secrets == nil {
				return nil, t, errors.New("worker has no server key to decrypt host credentials")
			}
			pw, err := a.Secrets.Decrypt(d.Value)
			if err != nil {
				return nil, t, temporal.NewNonRetryableApplicationError("cannot decrypt the host's password: "+err.Error(), "Invalid", nil)
			}
			t.Password = pw
		default:
			if t.Details == nil {
				t.Details = map[string]string{}
			}
			t.Details[d.Name] = d.Value
		}
	}
	if h.HypervisorType == models.HypervisorBareMetal {
		if err := bareMetalOverlay(ctx, a.DB, &h, &t, a.Secrets); err != nil {
			return nil, t, err
		}
	}
	return &h, t, nil
}

// uuidOf reads the uuid of a row by id ("" for id 0), removed rows included.
// The rows it reads (zones, pods, clusters, hosts, storage pools) are only
// ever soft-deleted and keep their uuid, so what was read outside a
// transaction is remembered: every VM step asks for the same few.
func uuidOf(ctx context.Context, db bun.IDB, table string, id int64) (string, error) {
	if id == 0 {
		return "", nil
	}
	base, committed := db.(*bun.DB)
	key := uuidKey{base, table, id}
	if committed {
		if u, ok := uuidCache.Load(key); ok {
			return u.(string), nil
		}
	}
	var u string
	err := db.NewSelect().TableExpr(table).Column("uuid").Where("id = ?", id).Limit(1).Scan(ctx, &u)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err == nil && committed && u != "" {
		uuidCache.Store(key, u)
	}
	return u, err
}

type uuidKey struct {
	db    *bun.DB
	table string
	id    int64
}

var uuidCache sync.Map // uuidKey -> string

// HostConnectedInput records a successful connection.
type HostConnectedInput struct {
	HostUUID  string
	Discovery HostDiscovery
	// Adding is true for addHost: a host that turns out to be a duplicate
	// of another (same GUID) is removed rather than left in Alert.
	Adding    bool
	EventType string // HOST.ADD, HOST.RECONNECT
	Actor     Actor
}

// HostConnected records what the driver discovered, writes the host's
// capacity rows and brings it Up, all in one transaction. A host already
// Up with the same GUID is success (a retry).
func (a *Hosts) HostConnected(ctx context.Context, in HostConnectedInput) error {
	d := in.Discovery
	// refused is a refusal that removed the host row being added: the
	// transaction commits the removal, then the refusal is returned.
	var refused error
	refuse := func(ctx context.Context, tx bun.Tx, h *models.Host, err error) error {
		if !in.Adding {
			return err
		}
		refused = err
		return removeHostRow(ctx, tx, h)
	}
	err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var h models.Host
		if err := tx.NewSelect().Model(&h).Where("uuid = ?", in.HostUUID).Limit(1).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return hostFail(cserr.ParamError, "host %s was removed while connecting", in.HostUUID)
			}
			return err
		}
		if h.State == models.HostUp && h.GUID == d.GUID {
			return nil
		}
		if h.State != models.HostConnecting {
			return hostFail(cserr.ParamError, "host %s is %s, not Connecting: it changed while connecting", h.Name, h.State)
		}
		if !in.Adding && h.GUID != "" && h.GUID != d.GUID {
			return hostFail(cserr.ParamError, "host %s now reports identity %s instead of %s: its URL reaches another machine", h.Name, d.GUID, h.GUID)
		}
		var other models.Host
		err := tx.NewSelect().Model(&other).Column("id", "uuid", "name").
			Where("guid = ? AND id <> ?", d.GUID, h.ID).Limit(1).Scan(ctx)
		if err == nil {
			return refuse(ctx, tx, &h, hostFail(cserr.ParamError, "The host at %s is already added as host %s (%s)", h.URL, other.Name, other.UUID))
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if d.PrivateIP != "" {
			var podIP models.PodIPAddress
			err := tx.NewSelect().Model(&podIP).Where("ip_address = ?", d.PrivateIP).Limit(1).Scan(ctx)
			if err == nil {
				var pod models.Pod
				_ = tx.NewSelect().Model(&pod).Column("name").Where("id = ?", podIP.PodID).WhereAllWithDeleted().Scan(ctx)
				return refuse(ctx, tx, &h, hostFail(cserr.ParamError, "The host's address %s is inside the system reserved range of pod %s; hosts may not use those addresses", d.PrivateIP, pod.Name))
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		name := h.Name
		if d.Name != "" {
			name = d.Name
		}
		set := map[string]any{
			"guid": d.GUID, "name": name, "private_ip_address": d.PrivateIP,
			"cpu_sockets": d.CPUSockets, "cpus": d.CPUCores, "speed": d.CPUMHz, "ram": d.MemoryBytes,
			"hypervisor_version": d.HypervisorVersion, "capabilities": d.Capabilities,
			"state_reason": "", "last_ping": models.Now(), "disconnected": nil, "update_count": h.UpdateCount + 1,
		}
		if err := models.Transition(ctx, tx, (*models.Host)(nil), h.ID, models.HostUp, []string{models.HostConnecting}, set); err != nil {
			return err
		}
		h.CPUSockets, h.CPUs, h.Speed, h.RAM = d.CPUSockets, d.CPUCores, d.CPUMHz, d.MemoryBytes
		if len(d.Details) > 0 {
			if err := setHostDetails(ctx, tx, h.ID, d.Details); err != nil {
				return err
			}
		}
		if err := SyncHostCapacity(ctx, tx, &h); err != nil {
			return err
		}
		if h.HypervisorType == models.HypervisorBareMetal {
			if err := bareMetalOOBM(ctx, tx, &h); err != nil {
				return err
			}
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: in.EventType, ResourceType: "Host", ResourceUUID: h.UUID,
			Description: fmt.Sprintf("Host %s (%s) is Up: %d cores at %d MHz, %d MiB", name, h.URL, d.CPUCores, d.CPUMHz, d.MemoryBytes>>20),
		}))
	})
	if err != nil {
		return err
	}
	return refused
}

// removeHostRow removes a host and what hangs off it: details, tags and
// capacity rows. Its GUID is cleared so that the machine may be added again.
func removeHostRow(ctx context.Context, db bun.IDB, h *models.Host) error {
	if _, err := db.NewUpdate().Model((*models.Host)(nil)).
		Set("state = ?", models.HostRemoved).Set("guid = NULL").Set("removed = ?", models.Now()).
		Where("id = ?", h.ID).Exec(ctx); err != nil {
		return err
	}
	if _, err := db.NewDelete().Model((*models.HostTag)(nil)).Where("host_id = ?", h.ID).Exec(ctx); err != nil {
		return err
	}
	if _, err := db.NewDelete().Model((*models.HostDetail)(nil)).Where("host_id = ?", h.ID).Exec(ctx); err != nil {
		return err
	}
	if _, err := db.NewDelete().Model((*models.OutOfBandManagement)(nil)).Where("host_id = ?", h.ID).Exec(ctx); err != nil {
		return err
	}
	return DeleteCapacity(ctx, db, h.ID, models.CapacityCPU, models.CapacityMemory, models.CapacityCPUCore, models.CapacityGPU)
}

// RemoveHost is removeHostRow for API handlers (deleteHost).
func RemoveHost(ctx context.Context, db bun.IDB, h *models.Host) error {
	return removeHostRow(ctx, db, h)
}

// HostFailedInput records a failed connection.
type HostFailedInput struct {
	HostUUID  string
	State     string // Alert or Disconnected
	Reason    string
	EventType string
	Actor     Actor
}

// HostMarkFailed moves a Connecting host to Alert (or Disconnected) with the
// reason, and records an ERROR event. A host already in that state with
// that reason is success.
func (a *Hosts) HostMarkFailed(ctx context.Context, in HostFailedInput) error {
	if in.State == "" {
		in.State = models.HostAlert
	}
	reason := in.Reason
	if len(reason) > 4000 {
		reason = reason[:4000]
	}
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var h models.Host
		if err := tx.NewSelect().Model(&h).Where("uuid = ?", in.HostUUID).Limit(1).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return nil // removed meanwhile: nothing to mark
			}
			return err
		}
		if h.State != in.State || h.StateReason != reason {
			if err := models.Transition(ctx, tx, (*models.Host)(nil), h.ID, in.State, []string{h.State},
				map[string]any{"state_reason": reason, "disconnected": models.Now()}); err != nil {
				return err
			}
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: in.EventType, Level: "ERROR", ResourceType: "Host", ResourceUUID: h.UUID,
			Description: fmt.Sprintf("Host %s (%s) is %s: %s", h.Name, h.URL, in.State, reason),
		}))
	})
}

// ---- reconnectHost ----

// HostReconnectInput names the host to reconnect.
type HostReconnectInput struct {
	HostUUID string
}

// HostReconnectBegin moves the host to Connecting. Hosts in maintenance are
// reconnected too (their resource state stays).
func (a *Hosts) HostReconnectBegin(ctx context.Context, in HostReconnectInput) (HostRef, error) {
	var h models.Host
	if err := a.DB.NewSelect().Model(&h).Where("uuid = ?", in.HostUUID).Limit(1).Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return HostRef{}, hostFail(cserr.ParamError, "Unable to find host by id %s", in.HostUUID)
		}
		return HostRef{}, err
	}
	ref := HostRef{HostID: h.ID, HostUUID: h.UUID, Name: h.Name, URL: h.URL}
	if h.State == models.HostConnecting {
		return ref, nil
	}
	// The GUID stays: HostConnected checks that the host still reports it.
	err := models.Transition(ctx, a.DB, (*models.Host)(nil), h.ID, models.HostConnecting, []string{h.State}, nil)
	return ref, err
}

// ---- maintenance ----

// HostMaintenanceInput names the host of a maintenance job.
type HostMaintenanceInput struct {
	HostUUID string
	Actor    Actor
}

// HostMaintenanceBegin moves the host's resource state to
// PrepareForMaintenance and disables its capacity, so the planner puts
// nothing new on it. A host already preparing is success.
func (a *Hosts) HostMaintenanceBegin(ctx context.Context, in HostMaintenanceInput) (HostRef, error) {
	var ref HostRef
	err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var h models.Host
		if err := tx.NewSelect().Model(&h).Where("uuid = ?", in.HostUUID).Limit(1).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return hostFail(cserr.ParamError, "Unable to find host by id %s", in.HostUUID)
			}
			return err
		}
		ref = HostRef{HostID: h.ID, HostUUID: h.UUID, Name: h.Name, URL: h.URL}
		switch h.ResourceState {
		case models.ResourcePrepareForMaintenance:
			return nil
		case models.ResourceMaintenance:
			return hostFail(cserr.ParamError, "Host %s is already in Maintenance", h.Name)
		}
		res, err := tx.NewUpdate().Model((*models.Host)(nil)).Set("resource_state = ?", models.ResourcePrepareForMaintenance).
			Where("id = ? AND resource_state = ?", h.ID, h.ResourceState).Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return models.ErrStateChanged
		}
		if err := SetCapacityState(ctx, tx, h.ID, false, models.CapacityCPU, models.CapacityMemory); err != nil {
			return err
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "MAINT.PREPARE", State: "Started", ResourceType: "Host", ResourceUUID: h.UUID,
			Description: "Preparing host " + h.Name + " for maintenance",
		}))
	})
	return ref, err
}

// HostEvacuateResult tells what the evacuation step did.
type HostEvacuateResult struct {
	Moved   int64
	Pending int64 // VMs still on the host
}

// HostEvacuate counts the VMs still holding the host. Maintenance jobs
// started before the evacuation was built ran it as their (empty)
// evacuation step; the evacuation now ends with it as a check that the
// host was emptied (VMEvacuateBegin and the migrations do the moving).
func (a *Hosts) HostEvacuate(ctx context.Context, in HostMaintenanceInput) (HostEvacuateResult, error) {
	var h models.Host
	if err := a.DB.NewSelect().Model(&h).Column("id").Where("uuid = ?", in.HostUUID).Limit(1).Scan(ctx); err != nil {
		return HostEvacuateResult{}, err
	}
	n, err := a.DB.NewSelect().Model((*models.VMInstance)(nil)).
		Where("host_id = ? AND state NOT IN (?)", h.ID, bun.In([]string{models.VMStopped, models.VMDestroyed, models.VMExpunging, models.VMError})).
		Count(ctx)
	return HostEvacuateResult{Pending: n}, err
}

// HostMaintenanceEndInput ends a prepareHostForMaintenance job.
type HostMaintenanceEndInput struct {
	HostUUID string
	// Failed leaves the host in ErrorInPrepareForMaintenance with Reason,
	// or in ErrorInMaintenance when UnableToMigrate (CloudStack's state
	// for a host whose VMs could not all be migrated away).
	Failed          bool
	UnableToMigrate bool
	Reason          string
	Actor           Actor
}

// HostMaintenanceEnd moves PrepareForMaintenance to Maintenance (or, when
// evacuation failed, to ErrorInPrepareForMaintenance or ErrorInMaintenance).
func (a *Hosts) HostMaintenanceEnd(ctx context.Context, in HostMaintenanceEndInput) error {
	to, level, desc := models.ResourceMaintenance, "INFO", "Host %s is in maintenance"
	if in.Failed {
		to, level, desc = models.ResourceErrorInPrepareForMaint, "ERROR", "Host %s could not enter maintenance: "+in.Reason
		if in.UnableToMigrate {
			to = models.ResourceErrorInMaintenance
		}
	}
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var h models.Host
		if err := tx.NewSelect().Model(&h).Where("uuid = ?", in.HostUUID).Limit(1).Scan(ctx); err != nil {
			return err
		}
		if h.ResourceState != to {
			res, err := tx.NewUpdate().Model((*models.Host)(nil)).Set("resource_state = ?", to).
				Where("id = ? AND resource_state = ?", h.ID, models.ResourcePrepareForMaintenance).Exec(ctx)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return hostFail(cserr.ParamError, "host %s left PrepareForMaintenance (now %s) while preparing", h.Name, h.ResourceState)
			}
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "MAINT.PREPARE", Level: level, ResourceType: "Host", ResourceUUID: h.UUID,
			Description: fmt.Sprintf(desc, h.Name),
		}))
	})
}

// HostMaintenanceCancel returns a host from (preparing for) maintenance to
// Enabled and re-enables its capacity. An Enabled host is success.
func (a *Hosts) HostMaintenanceCancel(ctx context.Context, in HostMaintenanceInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var h models.Host
		if err := tx.NewSelect().Model(&h).Where("uuid = ?", in.HostUUID).Limit(1).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return hostFail(cserr.ParamError, "Unable to find host by id %s", in.HostUUID)
			}
			return err
		}
		if h.ResourceState == models.ResourceEnabled {
			return nil
		}
		from := []string{models.ResourceMaintenance, models.ResourcePrepareForMaintenance,
			models.ResourceErrorInMaintenance, models.ResourceErrorInPrepareForMaint}
		res, err := tx.NewUpdate().Model((*models.Host)(nil)).Set("resource_state = ?", models.ResourceEnabled).
			Where("id = ? AND resource_state IN (?)", h.ID, bun.In(from)).Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return hostFail(cserr.ParamError, "Host %s is %s, not in maintenance", h.Name, h.ResourceState)
		}
		if err := SetCapacityState(ctx, tx, h.ID, true, models.CapacityCPU, models.CapacityMemory); err != nil {
			return err
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "MAINT.CANCEL", ResourceType: "Host", ResourceUUID: h.UUID,
			Description: "Host " + h.Name + " left maintenance",
		}))
	})
}

// ---- simulator ----

// Simulator changes the simulator's fault switches (configureSimulator).
// The simulator lives in the worker that opened its data directory, so the
// API reaches it through a workflow whose activity runs here.
type Simulator struct{ Deps }

// Simulator fault actions.
const (
	SimAdd      = "add"        // add Rule
	SimRemove   = "remove"     // remove rule RuleID
	SimClear    = "clear"      // remove every rule
	SimHostDown = "hostdown"   // HostUUID stops answering (Hang: calls block)
	SimHostUp   = "hostup"     // undo hostdown
	SimList     = "list"       // list the rules
	SimVMState  = "setvmstate" // power VMUUID on or off behind Nimbus's back (VMState Running or Stopped)
)

// SimulatorConfigureInput is one change of the fault switches.
type SimulatorConfigureInput struct {
	Action   string
	Rule     simkit.Rule
	RuleID   int64
	HostUUID string
	Hang     bool
	VMUUID   string
	VMState  string
}

// SimulatorConfigureResult is the rule added (if any) and every rule now set.
type SimulatorConfigureResult struct {
	RuleID int64
	Rules  []simkit.Rule
}

// SimulatorConfigure applies a change to the simulator's fault switches
// (kept in the simulator's data directory, so they survive a restart).
func (a *Simulator) SimulatorConfigure(ctx context.Context, in SimulatorConfigureInput) (SimulatorConfigureResult, error) {
	drv, err := a.Hypervisors(hypervisor.TypeSimulator)
	if err != nil {
		return SimulatorConfigureResult{}, driverFailure(err)
	}
	fd, ok := drv.(interface{ Faults() *simkit.Faults })
	if !ok {
		return SimulatorConfigureResult{}, hostFail(cserr.UnsupportedAction, "the Simulator driver has no fault switches")
	}
	f := fd.Faults()
	var res SimulatorConfigureResult
	switch in.Action {
	case SimAdd:
		res.RuleID, err = f.Add(in.Rule)
	case SimRemove:
		err = f.Remove(in.RuleID)
	case SimClear:
		err = f.Clear(simkit.Scope{}, true)
	case SimHostDown:
		res.RuleID, err = f.HostDown(in.HostUUID, in.Hang)
	case SimHostUp:
		err = f.HostUp(in.HostUUID)
	case SimList:
	case SimVMState:
		err = a.simSetVMState(ctx, drv, in.VMUUID, in.VMState)
	default:
		return res, hostFail(cserr.ParamError, "unknown simulator action %q", in.Action)
	}
	if err != nil {
		if errors.Is(err, hypervisor.ErrInvalid) {
			return res, hostFail(cserr.ParamError, "%s", err.Error())
		}
		return res, err
	}
	res.Rules = f.Rules()
	return res, nil
}
