package activities

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/models"
)

// Maintenance holds the steps of the scheduled maintenance workflows:
// expunging destroyed VMs, reconciling hosts against the inventory and
// capacity alerts. Every method starts with Maint.
type Maintenance struct{ Deps }

// ReconcileReasonPrefix starts the state reason of a host the reconciler
// put in Alert, so that it brings back Up only the hosts it took down.
const ReconcileReasonPrefix = "reconcile: "

// maintEvent writes an event whose UUID is derived from the activity run
// and key, so that a retried step does not write it twice while several
// events of one type in one step stay distinct.
func maintEvent(ctx context.Context, db bun.IDB, in EventInput, key string) error {
	in = activityEvent(ctx, in)
	if activity.IsActivity(ctx) {
		info := activity.GetInfo(ctx)
		k := info.WorkflowExecution.ID + "/" + info.WorkflowExecution.RunID + "/" + info.ActivityID + "/" + in.Type + "/" + key
		in.UUID = uuid.NewSHA1(uuid.NameSpaceURL, []byte(k)).String()
	}
	return WriteEvent(ctx, db, in)
}

func vmOwner(vm *models.VMInstance) Actor {
	return Actor{AccountID: vm.AccountID, DomainID: vm.DomainID}
}

// ---- expunge ----

// MaintExpungeDueInput bounds one expunge run.
type MaintExpungeDueInput struct {
	Limit int
}

// MaintExpungeDue lists the VMs destroyed longer than expunge.delay ago.
type MaintExpungeDue struct {
	VMUUIDs []string
	// More says more are due than Limit.
	More bool
}

// MaintExpungeList finds user VMs Destroyed longer than expunge.delay
// seconds ago, oldest first, at most Limit.
func (a *Maintenance) MaintExpungeList(ctx context.Context, in MaintExpungeDueInput) (MaintExpungeDue, error) {
	var out MaintExpungeDue
	delay, err := models.ConfigInt(ctx, a.DB, "expunge.delay")
	if err != nil {
		return out, err
	}
	if in.Limit <= 0 {
		in.Limit = 100
	}
	cutoff := models.Now().Add(-time.Duration(delay) * time.Second)
	var ids []string
	err = a.DB.NewSelect().Model((*models.VMInstance)(nil)).Column("uuid").
		Where("state = ? AND type = ?", models.VMDestroyed, models.VMTypeUser).
		Where("(update_time IS NULL OR update_time <= ?)", cutoff).
		Order("id").Limit(int64(in.Limit+1)).Scan(ctx, &ids)
	if err != nil {
		return out, err
	}
	if len(ids) > in.Limit {
		ids, out.More = ids[:in.Limit], true
	}
	out.VMUUIDs = ids
	return out, nil
}

// MaintExpungeBegin moves a Destroyed VM to Expunging with a guarded
// update; false when it is no longer Destroyed (recovered, or another run
// took it). A VM in Expunging already (this step retried) is true.
func (a *Maintenance) MaintExpungeBegin(ctx context.Context, in VMRefInput) (bool, error) {
	var ok bool
	err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		vm, err := vmByUUID(ctx, tx, in.VMUUID)
		if errors.Is(err, models.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if vm.State == models.VMExpunging {
			ok = true
			return nil
		}
		err = vmMove(ctx, tx, vm, models.VMExpunging, []string{models.VMDestroyed},
			map[string]any{"state_reason": "expunge.delay passed"})
		if errors.Is(err, models.ErrStateChanged) {
			return nil
		}
		ok = err == nil
		return err
	})
	return ok, err
}

// ---- reconcile ----

// MaintHostsInput pages the hosts to reconcile by id.
type MaintHostsInput struct {
	AfterID int64
	Limit   int
}

// MaintHost is a host to reconcile.
type MaintHost struct {
	ID    int64
	UUID  string
	Name  string
	State string
	// ByReconcile says the reconciler put it in Alert.
	ByReconcile bool
	// Hypervisor is its hypervisor type ("" in pages recorded before it
	// was added).
	Hypervisor string `json:",omitempty"`
	// ClusterUUID is its cluster's ("" in pages recorded before it was
	// added), whose VM watch the reconciler starts.
	ClusterUUID string `json:",omitempty"`
}

// MaintHostsPage is one page of hosts.
type MaintHostsPage struct {
	Hosts []MaintHost
	More  bool
}

// MaintReconcileHosts lists routing hosts that are Up, or in Alert because
// the reconciler found them silent, by id after AfterID.
func (a *Maintenance) MaintReconcileHosts(ctx context.Context, in MaintHostsInput) (MaintHostsPage, error) {
	if in.Limit <= 0 {
		in.Limit = 50
	}
	var hosts []models.Host
	err := a.DB.NewSelect().Model(&hosts).Column("id", "uuid", "name", "state", "state_reason", "hypervisor_type", "cluster_id").
		Where("type = ? AND id > ?", models.HostTypeRouting, in.AfterID).
		Where("(state = ? OR (state = ? AND state_reason LIKE ?))", models.HostUp, models.HostAlert, ReconcileReasonPrefix+"%").
		Order("id").Limit(int64(in.Limit + 1)).Scan(ctx)
	if err != nil {
		return MaintHostsPage{}, err
	}
	var out MaintHostsPage
	if len(hosts) > in.Limit {
		hosts, out.More = hosts[:in.Limit], true
	}
	clusters := map[int64]string{}
	for _, h := range hosts {
		cl, ok := clusters[h.ClusterID]
		if !ok {
			if cl, err = uuidOf(ctx, a.DB, "clusters", h.ClusterID); err != nil {
				return MaintHostsPage{}, err
			}
			clusters[h.ClusterID] = cl
		}
		out.Hosts = append(out.Hosts, MaintHost{ID: h.ID, UUID: h.UUID, Name: h.Name, State: h.State, Hypervisor: h.HypervisorType, ClusterUUID: cl,
			ByReconcile: h.State == models.HostAlert && strings.HasPrefix(h.StateReason, ReconcileReasonPrefix)})
	}
	return out, nil
}

// MaintVM is a VM as the reconciler compares it: from the inventory
// (State is the DB state, OnHost whether its host_id is the scanned host)
// or from the hypervisor (Power is the hypervisor's state, "" when absent).
type MaintVM struct {
	UUID         string
	InstanceName string
	Name         string
	// DB side; State "" means no row.
	State  string
	OnHost bool
	// Hypervisor side; "" means not defined on the host.
	Power string
}

// MaintHostScan is what one host's scan found.
type MaintHostScan struct {
	Host      MaintHost
	Reachable bool
	Reason    string
	// VMs joins the hypervisor's VMs and the inventory's VMs on the host
	// (or named by a hypervisor VM), sorted by instance name.
	VMs []MaintVM
}

// MaintScanHost lists the host's VMs with its driver and joins them with
// the inventory. A host that does not answer is a result (Reachable
// false, with the reason), not an error: the workflow decides.
func (a *Maintenance) MaintScanHost(ctx context.Context, in MaintHost) (MaintHostScan, error) {
	out := MaintHostScan{Host: in}
	row, target, err := (&Hosts{Deps: a.Deps}).hostTarget(ctx, in.UUID)
	if err != nil {
		return out, err
	}
	drv, err := a.Hypervisors(row.HypervisorType)
	if err != nil {
		return out, driverFailure(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	hv, err := callHeartbeating(cctx, func(ctx context.Context) ([]hypervisor.VMInfo, error) { return drv.ListVMs(ctx, target) })
	if err != nil {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		out.Reason = err.Error()
		return out, nil
	}
	out.Reachable = true
	activity.RecordHeartbeat(ctx)
	byKey := map[string]*MaintVM{}
	var uuids []string
	for _, v := range hv {
		m := &MaintVM{UUID: v.UUID, InstanceName: v.Name, Power: string(v.State)}
		if m.Power == "" {
			m.Power = string(hypervisor.StateUnknown)
		}
		byKey[v.UUID+"|"+v.Name] = m
		if v.UUID != "" {
			uuids = append(uuids, v.UUID)
		}
	}
	var vms []models.VMInstance
	q := a.DB.NewSelect().Model(&vms).Column("uuid", "name", "instance_name", "state", "host_id")
	if len(uuids) > 0 {
		q = q.Where("host_id = ? OR uuid IN (?)", row.ID, bun.In(uuids))
	} else {
		q = q.Where("host_id = ?", row.ID)
	}
	if err := q.Scan(ctx); err != nil {
		return out, err
	}
	for _, vm := range vms {
		m := byKey[vm.UUID+"|"+vm.InstanceName]
		if m == nil {
			m = &MaintVM{UUID: vm.UUID, InstanceName: vm.InstanceName}
			byKey[vm.UUID+"|"+vm.InstanceName] = m
		}
		m.Name, m.State, m.OnHost = vm.Name, vm.State, vm.HostID == row.ID
	}
	for _, m := range byKey {
		out.VMs = append(out.VMs, *m)
	}
	sort.Slice(out.VMs, func(i, j int) bool {
		if out.VMs[i].InstanceName != out.VMs[j].InstanceName {
			return out.VMs[i].InstanceName < out.VMs[j].InstanceName
		}
		return out.VMs[i].UUID < out.VMs[j].UUID
	})
	return out, nil
}

// Reconcile actions the workflow decides and MaintApply carries out.
const (
	MaintMarkStopped = "mark-stopped" // DB Running here, not running on the host
	MaintMarkRunning = "mark-running" // DB Stopped, running on the host
	MaintOrphan      = "orphan"       // on the host, no row
	MaintDrift       = "drift"        // reported only (destroyed but running, running elsewhere too)
)

// MaintAction is one repair or report on a host.
type MaintAction struct {
	Kind string
	VM   MaintVM
	Note string
}

// MaintApplyInput is the actions on one host.
type MaintApplyInput struct {
	Host    MaintHost
	Actions []MaintAction
}

// MaintApplyResult counts what was done; Skipped are repairs whose VM
// changed meanwhile (its guard failed), left to the next run.
type MaintApplyResult struct {
	Repaired, Reported, Skipped int
}

// MaintApply carries out the reconciler's decisions on one host: guarded
// state repairs with a WARN event each, and WARN events for what it only
// reports (it destroys nothing).
func (a *Maintenance) MaintApply(ctx context.Context, in MaintApplyInput) (MaintApplyResult, error) {
	var res MaintApplyResult
	var h models.Host
	if err := a.DB.NewSelect().Model(&h).Where("uuid = ?", in.Host.UUID).Limit(1).Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return res, nil
		}
		return res, err
	}
	for _, act := range in.Actions {
		activity.RecordHeartbeat(ctx, act.VM.InstanceName)
		var done, reported bool
		var err error
		switch act.Kind {
		case MaintMarkStopped:
			done, err = a.markStopped(ctx, &h, act)
		case MaintMarkRunning:
			done, err = a.markRunning(ctx, &h, act)
		case MaintOrphan:
			err = maintEvent(ctx, a.DB, EventInput{Type: "VM.ORPHAN", Level: "WARN", ResourceType: "Host", ResourceUUID: h.UUID,
				Description: fmt.Sprintf("orphan VM %s on host %s: it has no row in the inventory (left as it is)", act.VM.InstanceName, h.Name)},
				act.VM.UUID+act.VM.InstanceName)
			reported = true
		case MaintDrift:
			err = maintEvent(ctx, a.DB, EventInput{Type: "VM.DRIFT", Level: "WARN", ResourceType: "VirtualMachine", ResourceUUID: act.VM.UUID,
				Description: fmt.Sprintf("VM %s (%s) is %s in the inventory but %s on host %s: %s", act.VM.Name, act.VM.InstanceName,
					act.VM.State, act.VM.Power, h.Name, act.Note)}, act.VM.UUID)
			reported = true
		default:
			return res, fmt.Errorf("unknown reconcile action %q", act.Kind)
		}
		if err != nil {
			return res, err
		}
		switch {
		case reported:
			res.Reported++
		case done:
			res.Repaired++
		default:
			res.Skipped++
		}
	}
	return res, nil
}

// markStopped records that a VM the inventory has Running on the host is
// not running there: it is undefined there (a stopped VM holds no host),
// its host given back, Stopped with the reason.
func (a *Maintenance) markStopped(ctx context.Context, h *models.Host, act MaintAction) (bool, error) {
	vm, err := vmByUUID(ctx, a.DB, act.VM.UUID)
	if errors.Is(err, models.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if vm.State != models.VMRunning || vm.HostID != h.ID {
		return false, nil
	}
	if act.VM.Power != "" {
		if err := (&VMs{Deps: a.Deps}).destroyOn(ctx, vm, h.ID); err != nil {
			return false, err
		}
	}
	moved := false
	err = a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		cur, err := vmByUUID(ctx, tx, vm.UUID)
		if err != nil {
			return err
		}
		if cur.State != models.VMRunning || cur.HostID != h.ID {
			return nil
		}
		what := "not defined"
		if act.VM.Power != "" {
			what = act.VM.Power
		}
		reason := fmt.Sprintf("found %s on host %s by the reconciler", what, h.Name)
		if err := vmUnplace(ctx, tx, cur); err != nil {
			return err
		}
		set := map[string]any{"state_reason": reason, "power_state": "PowerOff", "power_state_update_time": models.Now()}
		if err := vmMove(ctx, tx, cur, models.VMStopped, []string{models.VMRunning}, set); err != nil {
			if errors.Is(err, models.ErrStateChanged) {
				return nil
			}
			return err
		}
		if err := vmUsage(ctx, tx, cur, "VM.STOP"); err != nil {
			return err
		}
		moved = true
		return maintEvent(ctx, tx, EventInput{Actor: vmOwner(cur), Type: "VM.STOP", Level: "WARN", ResourceType: "VirtualMachine",
			ResourceUUID: cur.UUID, Description: fmt.Sprintf("Virtual machine %s (%s) was Running in the inventory but %s: now Stopped",
				cur.Name, cur.InstanceName, reason)}, cur.UUID)
	})
	if errors.Is(err, models.ErrNotFound) {
		return false, nil
	}
	return moved, err
}

// markRunning records that a VM the inventory has Stopped runs on the
// host: its CPU and memory are reserved there and it is Running. Without
// room on the host it is only reported.
func (a *Maintenance) markRunning(ctx context.Context, h *models.Host, act MaintAction) (bool, error) {
	moved := false
	err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		cur, err := vmByUUID(ctx, tx, act.VM.UUID)
		if err != nil {
			return err
		}
		if cur.State != models.VMStopped || cur.HostID != 0 {
			return nil
		}
		cpuR, memR, err := vmClusterRatios(ctx, tx, h.ClusterID)
		if err != nil {
			return err
		}
		if err := models.ReserveHost(ctx, tx, h.ID, vmMHz(cur), vmMemBytes(cur), cpuR, memR); err != nil {
			if errors.Is(err, models.ErrNoCapacity) {
				return maintEvent(ctx, tx, EventInput{Actor: vmOwner(cur), Type: "VM.DRIFT", Level: "WARN", ResourceType: "VirtualMachine",
					ResourceUUID: cur.UUID, Description: fmt.Sprintf("Virtual machine %s (%s) is Stopped in the inventory but running on host %s, which has no room for it in the inventory",
						cur.Name, cur.InstanceName, h.Name)}, cur.UUID)
			}
			return err
		}
		reason := fmt.Sprintf("found running on host %s by the reconciler", h.Name)
		set := map[string]any{"host_id": h.ID, "pod_id": h.PodID, "cluster_id": h.ClusterID, "state_reason": reason,
			"power_state": "PowerOn", "power_state_update_time": models.Now()}
		if err := vmMove(ctx, tx, cur, models.VMRunning, []string{models.VMStopped}, set); err != nil {
			if errors.Is(err, models.ErrStateChanged) {
				return errStopApply
			}
			return err
		}
		if err := vmUsage(ctx, tx, cur, "VM.START"); err != nil {
			return err
		}
		moved = true
		return maintEvent(ctx, tx, EventInput{Actor: vmOwner(cur), Type: "VM.START", Level: "WARN", ResourceType: "VirtualMachine",
			ResourceUUID: cur.UUID, Description: fmt.Sprintf("Virtual machine %s (%s) was Stopped in the inventory but %s: now Running",
				cur.Name, cur.InstanceName, reason)}, cur.UUID)
	})
	if errors.Is(err, models.ErrNotFound) || errors.Is(err, errStopApply) {
		return false, nil
	}
	return moved, err
}

// errStopApply rolls back a repair whose guard failed.
var errStopApply = errors.New("changed meanwhile")

// MaintHostStateInput moves a host the reconciler scanned.
type MaintHostStateInput struct {
	Host      MaintHost
	Reachable bool
	Reason    string
}

// MaintHostState puts an Up host that did not answer in Alert with the
// reason (and an ERROR event), and a host the reconciler put in Alert
// back Up when it answers (INFO event); it records last_ping of hosts that
// answer. Guarded: a host another job moved meanwhile is left alone.
func (a *Maintenance) MaintHostState(ctx context.Context, in MaintHostStateInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var h models.Host
		if err := tx.NewSelect().Model(&h).Where("uuid = ?", in.Host.UUID).Limit(1).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			return err
		}
		if in.Reachable {
			if _, err := tx.NewUpdate().Model((*models.Host)(nil)).Set("last_ping = ?", models.Now()).Where("id = ?", h.ID).Exec(ctx); err != nil {
				return err
			}
			if h.State != models.HostAlert || !strings.HasPrefix(h.StateReason, ReconcileReasonPrefix) {
				return nil
			}
			err := models.Transition(ctx, tx, (*models.Host)(nil), h.ID, models.HostUp, []string{models.HostAlert}, map[string]any{"state_reason": ""})
			if errors.Is(err, models.ErrStateChanged) {
				return nil
			}
			if err != nil {
				return err
			}
			return maintEvent(ctx, tx, EventInput{Type: "HOST.UP", Level: "INFO", ResourceType: "Host", ResourceUUID: h.UUID,
				Description: fmt.Sprintf("Host %s answers again: Up", h.Name)}, h.UUID)
		}
		if h.State != models.HostUp {
			return nil
		}
		reason := ReconcileReasonPrefix + "the host does not answer: " + vmClip(in.Reason, 3000)
		err := models.Transition(ctx, tx, (*models.Host)(nil), h.ID, models.HostAlert, []string{models.HostUp},
			map[string]any{"state_reason": reason, "disconnected": models.Now()})
		if errors.Is(err, models.ErrStateChanged) {
			return nil
		}
		if err != nil {
			return err
		}
		return maintEvent(ctx, tx, EventInput{Type: "HOST.ALERT", Level: "ERROR", ResourceType: "Host", ResourceUUID: h.UUID,
			Description: fmt.Sprintf("Host %s is Alert: %s", h.Name, strings.TrimPrefix(reason, ReconcileReasonPrefix))}, h.UUID)
	})
}

// MaintStuckInput bounds the search for VMs whose job ended.
type MaintStuckInput struct {
	// MinAge skips VMs that moved more recently (their job may not have
	// been recorded yet).
	MinAge time.Duration
	Limit  int
}

// MaintStuckVMs lists VMs in a transitional state (Starting, Stopping,
// Migrating, Expunging) whose job no longer runs: no pending job names
// them, or the workflow of their pending job is closed or gone.
func (a *Maintenance) MaintStuckVMs(ctx context.Context, in MaintStuckInput) ([]string, error) {
	if in.Limit <= 0 {
		in.Limit = 100
	}
	var vms []models.VMInstance
	err := a.DB.NewSelect().Model(&vms).Column("id", "uuid").
		Where("state IN (?)", bun.In([]string{models.VMStarting, models.VMStopping, models.VMMigrating, models.VMExpunging})).
		Where("(update_time IS NULL OR update_time <= ?)", models.Now().Add(-in.MinAge)).
		Order("id").Limit(int64(in.Limit)).Scan(ctx)
	if err != nil || len(vms) == 0 {
		return nil, err
	}
	var out []string
	for _, vm := range vms {
		var jobs []models.AsyncJob
		if err := a.DB.NewSelect().Model(&jobs).Column("uuid").Where("instance_uuid = ? AND status = ?", vm.UUID, models.JobPending).Scan(ctx); err != nil {
			return nil, err
		}
		live := false
		for _, j := range jobs {
			running, err := a.workflowRunning(ctx, j.UUID)
			if err != nil {
				return nil, err
			}
			if running {
				live = true
				break
			}
		}
		if !live {
			out = append(out, vm.UUID)
		}
	}
	return out, nil
}

// workflowRunning tells whether a job's workflow still runs.
func (a *Maintenance) workflowRunning(ctx context.Context, id string) (bool, error) {
	if !activity.IsActivity(ctx) {
		return true, nil
	}
	d, err := activity.GetClient(ctx).DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		var nf *serviceerror.NotFound
		if errors.As(err, &nf) {
			return false, nil
		}
		return false, err
	}
	return d.GetWorkflowExecutionInfo().GetStatus() == enums.WORKFLOW_EXECUTION_STATUS_RUNNING, nil
}

// ---- capacity alerts ----

// CloudStack's alert types of capacity (AlertManager).
const (
	AlertTypeMemory           = 0
	AlertTypeCPU              = 1
	AlertTypeStorageAllocated = 3
)

// MaintCapacityResult counts alerts raised and resolved.
type MaintCapacityResult struct {
	Raised, Resolved int
}

// capacityFigure is one allocation fraction that may alert.
type capacityFigure struct {
	key       string // alert name: <what>:<uuid>
	typ       int
	what      string
	zoneID    int64
	podID     int64
	clusterID int64
	used      float64
	total     float64
	threshold float64
}

// MaintCapacityAlerts computes each cluster's CPU and memory allocation
// (op_host_capacity, with the cluster's overcommit ratios) and each
// primary storage pool's allocation (with storage.overprovisioning.factor),
// and raises an alert (a row and a WARN event) when one goes above its
// notification threshold, and resolves it when it goes back below: once
// per change of state.
func (a *Maintenance) MaintCapacityAlerts(ctx context.Context) (MaintCapacityResult, error) {
	var res MaintCapacityResult
	cpuT, err := models.ConfigFloat(ctx, a.DB, "cluster.cpu.allocated.capacity.notificationthreshold")
	if err != nil {
		return res, err
	}
	memT, err := models.ConfigFloat(ctx, a.DB, "cluster.memory.allocated.capacity.notificationthreshold")
	if err != nil {
		return res, err
	}
	poolT, err := models.ConfigFloat(ctx, a.DB, "pool.storage.allocated.capacity.notificationthreshold")
	if err != nil {
		return res, err
	}
	var clusters []models.Cluster
	if err := a.DB.NewSelect().Model(&clusters).Column("id", "uuid", "name", "zone_id", "pod_id").Order("id").Scan(ctx); err != nil {
		return res, err
	}
	var figs []capacityFigure
	for _, c := range clusters {
		cpuR, memR, err := vmClusterRatios(ctx, a.DB, c.ID)
		if err != nil {
			return res, err
		}
		var rows []struct {
			Type  int   `bun:"capacity_type"`
			Used  int64 `bun:"used"`
			Total int64 `bun:"total"`
		}
		err = a.DB.NewSelect().TableExpr("op_host_capacity AS c").
			Join("JOIN hosts AS h ON h.id = c.host_id").
			ColumnExpr("c.capacity_type").ColumnExpr("SUM(c.used_capacity + c.reserved_capacity) AS used").
			ColumnExpr("SUM(c.total_capacity) AS total").
			Where("h.cluster_id = ? AND h.removed IS NULL AND c.capacity_type IN (?)", c.ID, bun.In([]int{models.CapacityCPU, models.CapacityMemory})).
			GroupExpr("c.capacity_type").Scan(ctx, &rows)
		if err != nil {
			return res, err
		}
		for _, r := range rows {
			f := capacityFigure{zoneID: c.ZoneID, podID: c.PodID, clusterID: c.ID, used: float64(r.Used)}
			if r.Type == models.CapacityCPU {
				f.key, f.typ, f.what, f.total, f.threshold = "cluster.cpu:"+c.UUID, AlertTypeCPU, "CPU of cluster "+c.Name, float64(r.Total)*ratioOr1(cpuR), cpuT
			} else {
				f.key, f.typ, f.what, f.total, f.threshold = "cluster.memory:"+c.UUID, AlertTypeMemory, "memory of cluster "+c.Name, float64(r.Total)*ratioOr1(memR), memT
			}
			figs = append(figs, f)
		}
	}
	var pools []models.StoragePool
	if err := a.DB.NewSelect().Model(&pools).Column("id", "uuid", "name", "zone_id", "pod_id", "cluster_id", "capacity_bytes", "allocated_bytes").
		Order("id").Scan(ctx); err != nil {
		return res, err
	}
	over := PoolOverprovisioning(ctx, a.DB)
	for _, p := range pools {
		figs = append(figs, capacityFigure{key: "pool.storage:" + p.UUID, typ: AlertTypeStorageAllocated, what: "allocated storage of primary storage " + p.Name,
			zoneID: p.ZoneID, podID: p.PodID, clusterID: p.ClusterID, used: float64(p.AllocatedBytes), total: float64(p.CapacityBytes) * ratioOr1(over), threshold: poolT})
	}
	for _, f := range figs {
		raised, resolved, err := a.capacityAlert(ctx, f)
		if err != nil {
			return res, err
		}
		if raised {
			res.Raised++
		}
		if resolved {
			res.Resolved++
		}
	}
	return res, nil
}

func ratioOr1(r float64) float64 {
	if r <= 0 {
		return 1
	}
	return r
}

// capacityAlert raises or resolves the alert of one figure.
func (a *Maintenance) capacityAlert(ctx context.Context, f capacityFigure) (raised, resolved bool, err error) {
	frac := 0.0
	if f.total > 0 {
		frac = f.used / f.total
	}
	above := f.total > 0 && frac > f.threshold
	err = a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var open models.Alert
		err := tx.NewSelect().Model(&open).Where("name = ? AND resolved IS NULL AND archived = ?", f.key, false).Order("id").Limit(1).Scan(ctx)
		has := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		now := models.Now()
		switch {
		case above && !has:
			subject := fmt.Sprintf("System Alert: Low Available %s: %.0f%% allocated, above the notification threshold of %.0f%%",
				f.what, frac*100, f.threshold*100)
			if _, err := tx.NewInsert().Model(&models.Alert{UUID: models.NewUUID(), Type: f.typ, Name: f.key, Subject: subject,
				ZoneID: f.zoneID, PodID: f.podID, ClusterID: f.clusterID, SentCount: 1, Created: now, LastSent: now}).Exec(ctx); err != nil {
				return err
			}
			raised = true
			return maintEvent(ctx, tx, EventInput{Type: "ALERT.CAPACITY", Level: "WARN", Description: subject}, f.key)
		case !above && has:
			if _, err := tx.NewUpdate().Model((*models.Alert)(nil)).Set("resolved = ?", now).Where("id = ?", open.ID).Exec(ctx); err != nil {
				return err
			}
			resolved = true
			return maintEvent(ctx, tx, EventInput{Type: "ALERT.CAPACITY", Level: "INFO",
				Description: fmt.Sprintf("Resolved: %s is %.0f%% allocated, below the notification threshold of %.0f%%", f.what, frac*100, f.threshold*100)}, f.key)
		}
		return nil
	})
	return raised, resolved, err
}

// simSetVMState powers a VM on or off on its host through the simulator
// driver, without the inventory knowing (configureSimulator setvmstate):
// drift for the reconciler to find.
func (a *Simulator) simSetVMState(ctx context.Context, drv hypervisor.Driver, vmUUID, state string) error {
	vm, err := vmByUUID(ctx, a.DB, vmUUID)
	if err != nil {
		return err
	}
	hostID := vm.HostID
	if hostID == 0 {
		hostID = vm.LastHostID
	}
	if hostID == 0 {
		return fmt.Errorf("virtual machine %s has never been on a host: %w", vm.Name, hypervisor.ErrInvalid)
	}
	_, h, _, err := (&VMs{Deps: a.Deps}).vmHost(ctx, hostID)
	if err != nil {
		return err
	}
	ref := hypervisor.VMRef{Name: vm.InstanceName, UUID: vm.UUID}
	if state == string(hypervisor.StateRunning) {
		return drv.StartVM(ctx, h, ref)
	}
	return drv.StopVM(ctx, h, ref, hypervisor.StopOptions{Force: true})
}
