package activities

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"go.temporal.io/sdk/temporal"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/planner"
)

// Maintenance of hosts and pools moves or stops the VMs on them through the
// VM jobs themselves (MigrateVM, StopVM, StartVM run as child workflows):
// the steps here choose the VMs, move each into the job's transitional
// state with the same guarded update the API uses (so an operation on a VM
// stays alone), and write each job's async_jobs row, whose id is derived
// from the maintenance job's so that a retried step finds them again.

// ChildJobID is the job id of the VM job a maintenance job starts for a VM
// (kind "migrate", "stop", "start"): derived, so that a retried step and
// the workflow agree on it without storing it anywhere else.
func ChildJobID(parentJobID, kind, vmUUID string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("nimbus-job/"+parentJobID+"/"+kind+"/"+vmUUID)).String()
}

// insertChildJob writes the pending async_jobs row of a VM job started by a
// maintenance job (listAsyncJobs and queryAsyncJobResult show it, and the
// reconciler sees its VM has a job). An existing row is success.
func insertChildJob(ctx context.Context, tx bun.IDB, id, command, vmUUID string, actor Actor) (bool, error) {
	ok, err := tx.NewSelect().Model((*models.AsyncJob)(nil)).Where("uuid = ?", id).Exists(ctx)
	if err != nil || ok {
		return ok, err
	}
	job := &models.AsyncJob{UUID: id, Cmd: "org.apache.cloudstack.api.command." + command,
		UserID: actor.UserID, AccountID: actor.AccountID, DomainID: actor.DomainID,
		InstanceType: "VirtualMachine", InstanceUUID: vmUUID, Status: models.JobPending, Created: models.Now()}
	_, err = tx.NewInsert().Model(job).Exec(ctx)
	return false, err
}

// childJobExists tells whether the job row of a child job is there.
func childJobExists(ctx context.Context, db bun.IDB, id string) (bool, error) {
	return db.NewSelect().Model((*models.AsyncJob)(nil)).Where("uuid = ?", id).Exists(ctx)
}

// VMRefusal is a VM a maintenance step cannot move or stop, and why.
type VMRefusal struct {
	VMUUID string
	VMName string
	Reason string
}

// RefusalText names the refused VMs with their reasons, for a job's error.
func RefusalText(rs []VMRefusal) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.VMName + " (" + r.Reason + ")"
	}
	return strings.Join(parts, "; ")
}

// ---- host evacuation ----

// VMEvacuateInput names the host a prepareHostForMaintenance job empties
// and the job (whose id the migrations' job ids derive from).
type VMEvacuateInput struct {
	HostUUID string
	JobID    string
	Actor    Actor
}

// VMEvacuateMove is one live migration of the evacuation: the VM is
// Migrating with its target's capacity reserved, and JobID names its job.
type VMEvacuateMove struct {
	VMUUID         string
	VMName         string
	TargetHostUUID string
	TargetHostName string
	JobID          string
}

// VMEvacuatePlan is the evacuation: every move, or (when some VM cannot
// move) the refusals and no move at all.
type VMEvacuatePlan struct {
	Moves   []VMEvacuateMove
	Refused []VMRefusal
}

// errEvacuateRaced is a plan whose reservation found the inventory changed
// (capacity taken, a VM moved); planning again decides anew.
var errEvacuateRaced = errors.New("the inventory changed while planning the evacuation")

// VMEvacuateBegin plans the live migration of every VM on a host entering
// maintenance to other hosts of its cluster (the planner, with the VM's
// CPU, memory, host tags, affinity and anti-affinity groups; the VMs
// planned earlier in the same evacuation count), then, in one transaction,
// moves each VM Running > Migrating, reserves its target's capacity (as
// migrateVirtualMachine does) and writes its migration job's row. When a
// VM cannot move (no room, its groups, a cluster of one host, local
// disks, another operation on it), nothing is reserved or moved and every
// such VM is returned with the reason. Stopped VMs hold no host and stay
// as they are (their last host is kept). A retry after the transaction
// committed finds the moves by their job rows.
func (a *VMs) VMEvacuateBegin(ctx context.Context, in VMEvacuateInput) (VMEvacuatePlan, error) {
	var h models.Host
	if err := a.DB.NewSelect().Model(&h).Where("uuid = ?", in.HostUUID).Limit(1).Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return VMEvacuatePlan{}, fail(cserr.ParamError, "Unable to find host by id %s", in.HostUUID)
		}
		return VMEvacuatePlan{}, err
	}
	for attempt := 0; ; attempt++ {
		plan, vms, err := a.evacuatePlan(ctx, &h, in)
		if err != nil || len(plan.Refused) > 0 || len(vms) == 0 {
			return plan, err
		}
		err = a.evacuateReserve(ctx, &h, in, plan, vms)
		if errors.Is(err, errEvacuateRaced) && attempt < 4 {
			continue
		}
		if errors.Is(err, errEvacuateRaced) {
			return VMEvacuatePlan{}, fail(cserr.InsufficientCap, "Unable to evacuate host %s: %v (tried 5 times)", h.Name, err)
		}
		return plan, err
	}
}

// evacuatePlan decides the moves; vms are the VMs to reserve (none when a
// previous attempt reserved them already, or when some are refused).
func (a *VMs) evacuatePlan(ctx context.Context, h *models.Host, in VMEvacuateInput) (VMEvacuatePlan, map[string]*models.VMInstance, error) {
	var plan VMEvacuatePlan
	var vms []models.VMInstance
	err := a.DB.NewSelect().Model(&vms).ExcludeColumn("user_data").
		WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
			return q.Where("host_id = ? AND state NOT IN (?)", h.ID,
				bun.In([]string{models.VMStopped, models.VMDestroyed, models.VMExpunging, models.VMError})).
				WhereOr("reservation_id = ? AND state = ?", h.UUID, models.VMMigrating)
		}).Order("id").Scan(ctx)
	if err != nil {
		return plan, nil, err
	}
	var todo []*models.VMInstance
	for i := range vms {
		vm := &vms[i]
		jobID := ChildJobID(in.JobID, "migrate", vm.UUID)
		switch {
		case vm.HostID != h.ID:
			plan.Refused = append(plan.Refused, VMRefusal{vm.UUID, vm.Name, "it is migrating to this host"})
		case vm.State == models.VMMigrating && vm.ReservationID != "":
			ours, err := childJobExists(ctx, a.DB, jobID)
			if err != nil {
				return plan, nil, err
			}
			if !ours {
				plan.Refused = append(plan.Refused, VMRefusal{vm.UUID, vm.Name, "it is Migrating (an operation on it is in progress)"})
				continue
			}
			var t models.Host
			if err := a.DB.NewSelect().Model(&t).Column("uuid", "name").Where("uuid = ?", vm.ReservationID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
				return plan, nil, err
			}
			plan.Moves = append(plan.Moves, VMEvacuateMove{VMUUID: vm.UUID, VMName: vm.Name, TargetHostUUID: t.UUID, TargetHostName: t.Name, JobID: jobID})
		case vm.State != models.VMRunning:
			plan.Refused = append(plan.Refused, VMRefusal{vm.UUID, vm.Name, "it is " + vm.State + " (an operation on it is in progress)"})
		default:
			todo = append(todo, vm)
		}
	}
	if len(plan.Moves) > 0 {
		// An earlier attempt reserved its moves in one transaction: they
		// stand, and any other VM is left for the job's final check.
		return VMEvacuatePlan{Moves: plan.Moves}, nil, nil
	}
	if len(todo) == 0 {
		return plan, nil, nil
	}
	snap, err := a.planSnapshot(ctx, h.ZoneID, planner.Request{ClusterID: h.ClusterID}, true)
	if err != nil {
		return plan, nil, err
	}
	clusterName := fmt.Sprint(h.ClusterID)
	for _, c := range snap.Clusters {
		if c.ID == h.ClusterID {
			clusterName = c.Name
		}
	}
	others := snap.Hosts[:0]
	for _, x := range snap.Hosts {
		if x.ID != h.ID {
			others = append(others, x)
		}
	}
	snap.Hosts, snap.Pools = others, nil
	byID := map[int64]*planner.Host{}
	for i := range snap.Hosts {
		byID[snap.Hosts[i].ID] = &snap.Hosts[i]
	}
	offerings := map[int64]models.ServiceOffering{}
	planned := map[int64][]int64{} // anti-affinity group -> hosts planned in this evacuation
	reserve := map[string]*models.VMInstance{}
	for _, vm := range todo {
		refuse := func(reason string) { plan.Refused = append(plan.Refused, VMRefusal{vm.UUID, vm.Name, reason}) }
		if len(snap.Hosts) == 0 {
			refuse("cluster " + clusterName + " has no other host to take it")
			continue
		}
		local, err := a.DB.NewSelect().TableExpr("volumes AS v").Join("JOIN storage_pools AS p ON p.id = v.pool_id").
			Where("v.instance_id = ? AND p.scope = ? AND v.removed IS NULL", vm.ID, models.ScopeHost).
			Where("v.state NOT IN (?)", bun.In([]string{models.VolumeDestroy, models.VolumeExpunging, models.VolumeExpunged})).Exists(ctx)
		if err != nil {
			return plan, nil, err
		}
		if local {
			refuse("its disks are on the host's local storage, which live migration does not move")
			continue
		}
		so, ok := offerings[vm.ServiceOfferingID]
		if !ok {
			if err := a.DB.NewSelect().Model(&so).Column("id", "host_tag").Where("id = ?", vm.ServiceOfferingID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil && !errors.Is(err, sql.ErrNoRows) {
				return plan, nil, err
			}
			offerings[vm.ServiceOfferingID] = so
		}
		anti, aff, err := vmAffinity(ctx, a.DB, vm)
		if err != nil {
			return plan, nil, err
		}
		antiGroups, err := vmAntiAffinityGroups(ctx, a.DB, vm.ID)
		if err != nil {
			return plan, nil, err
		}
		for _, g := range antiGroups {
			for _, hid := range planned[g] {
				if anti == nil {
					anti = map[int64]bool{}
				}
				anti[hid] = true
			}
		}
		req := planner.Request{VCPUs: vm.CPU, MHz: vm.Speed, MemoryBytes: vmMemBytes(vm), HostTags: vmTagList(so.HostTag),
			ClusterID: h.ClusterID, Hypervisor: vm.HypervisorType, AntiAffinity: anti, Affinity: aff}
		placements, perr := planner.Plan(req, snap)
		if perr != nil {
			refuse(strings.Replace(perr.Error(), "no host can take the VM", "no other host of cluster "+clusterName+" can take it", 1))
			continue
		}
		p := placements[0]
		t := byID[p.HostID]
		t.UsedMHz += vmMHz(vm)
		t.UsedMemory += vmMemBytes(vm)
		for _, g := range antiGroups {
			planned[g] = append(planned[g], p.HostID)
		}
		plan.Moves = append(plan.Moves, VMEvacuateMove{VMUUID: vm.UUID, VMName: vm.Name, TargetHostName: t.Name,
			TargetHostUUID: fmt.Sprint(p.HostID), JobID: ChildJobID(in.JobID, "migrate", vm.UUID)})
		reserve[vm.UUID] = vm
	}
	if len(plan.Refused) > 0 {
		return VMEvacuatePlan{Refused: plan.Refused}, nil, nil
	}
	// The snapshot knows hosts by id: name the targets by UUID.
	ids := make([]int64, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var rows []models.Host
	if err := a.DB.NewSelect().Model(&rows).Column("id", "uuid").Where("id IN (?)", bun.In(ids)).Scan(ctx); err != nil {
		return plan, nil, err
	}
	uuids := map[string]string{}
	for _, r := range rows {
		uuids[fmt.Sprint(r.ID)] = r.UUID
	}
	for i := range plan.Moves {
		plan.Moves[i].TargetHostUUID = uuids[plan.Moves[i].TargetHostUUID]
	}
	return plan, reserve, nil
}

// vmAntiAffinityGroups lists the host anti-affinity groups a VM is in.
func vmAntiAffinityGroups(ctx context.Context, db bun.IDB, vmID int64) ([]int64, error) {
	var ids []int64
	err := db.NewSelect().TableExpr("affinity_group_vm_map AS m").ColumnExpr("m.affinity_group_id").
		Join("JOIN affinity_groups AS g ON g.id = m.affinity_group_id").
		Where("m.instance_id = ? AND g.type = ?", vmID, models.AffinityHostAntiAffinity).Order("m.affinity_group_id").Scan(ctx, &ids)
	return ids, err
}

// evacuateReserve carries out a plan in one transaction: any guard that
// fails (a VM moved, a target filled up) undoes it all (errEvacuateRaced).
func (a *VMs) evacuateReserve(ctx context.Context, h *models.Host, in VMEvacuateInput, plan VMEvacuatePlan, vms map[string]*models.VMInstance) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		for _, m := range plan.Moves {
			vm := vms[m.VMUUID]
			var t models.Host
			if err := tx.NewSelect().Model(&t).Column("id", "cluster_id").Where("uuid = ?", m.TargetHostUUID).Limit(1).Scan(ctx); err != nil {
				return err
			}
			cpuR, memR, err := vmClusterRatios(ctx, tx, t.ClusterID)
			if err != nil {
				return err
			}
			res, err := tx.NewUpdate().Model((*models.VMInstance)(nil)).Set("state = ?", models.VMMigrating).
				Set("reservation_id = ?", m.TargetHostUUID).Set("state_reason = ?", "host "+h.Name+" enters maintenance").
				Set("update_count = update_count + 1").Set("update_time = ?", models.Now()).
				Where("id = ? AND state = ? AND host_id = ?", vm.ID, models.VMRunning, h.ID).Exec(ctx)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return errEvacuateRaced
			}
			if err := models.ReserveHost(ctx, tx, t.ID, vmMHz(vm), vmMemBytes(vm), cpuR, memR); err != nil {
				if errors.Is(err, models.ErrNoCapacity) {
					return errEvacuateRaced
				}
				return err
			}
			if _, err := insertChildJob(ctx, tx, m.JobID, "migrateVirtualMachine", vm.UUID, in.Actor); err != nil {
				return err
			}
		}
		return nil
	})
}

// ---- primary storage maintenance ----

// PoolVMsInput names the pool of a storage maintenance job and the job.
type PoolVMsInput struct {
	PoolUUID string
	JobID    string
	Actor    Actor
}

// PoolVMJob is one VM job a storage maintenance job runs: the VM is in the
// job's transitional state already and JobID names its job.
type PoolVMJob struct {
	VMUUID string
	VMName string
	JobID  string
}

// PoolVMsPlan is what a storage maintenance step will do to the VMs.
type PoolVMsPlan struct {
	Jobs    []PoolVMJob
	Refused []VMRefusal
}

// poolVMs lists the VMs (not destroyed) with a live volume on the pool.
func poolVMs(ctx context.Context, db bun.IDB, poolID int64) ([]models.VMInstance, error) {
	var vms []models.VMInstance
	err := db.NewSelect().Model(&vms).Column("vm_instance.id", "vm_instance.uuid", "vm_instance.name", "vm_instance.state").
		Where("vm_instance.id IN (SELECT v.instance_id FROM volumes AS v WHERE v.pool_id = ? AND v.removed IS NULL AND v.state NOT IN (?))",
			poolID, bun.In([]string{models.VolumeDestroy, models.VolumeExpunging, models.VolumeExpunged})).
		Where("vm_instance.state NOT IN (?)", bun.In([]string{models.VMDestroyed, models.VMExpunging})).
		Order("vm_instance.id").Scan(ctx)
	return vms, err
}

// PoolStopVMsBegin is the evacuation of a primary pool entering
// maintenance, as CloudStack does it: every running VM with a volume on
// the pool is stopped. In one transaction each such VM goes Running >
// Stopping (the API's guard), its stopVirtualMachine job row is written
// and the VM is recorded in storage_pool_work, so that cancelling the
// maintenance starts it again. A VM in the middle of another operation
// refuses the whole step (nothing is stopped). Stopped VMs stay as they
// are. A retry after the transaction committed finds the jobs by their
// rows.
func (a *Storage) PoolStopVMsBegin(ctx context.Context, in PoolVMsInput) (PoolVMsPlan, error) {
	var plan PoolVMsPlan
	p, err := loadPool(ctx, a.DB, in.PoolUUID)
	if err != nil {
		return plan, err
	}
	vms, err := poolVMs(ctx, a.DB, p.ID)
	if err != nil {
		return plan, err
	}
	var todo []models.VMInstance
	var ours []PoolVMJob
	for _, vm := range vms {
		job := PoolVMJob{VMUUID: vm.UUID, VMName: vm.Name, JobID: ChildJobID(in.JobID, "stop", vm.UUID)}
		switch vm.State {
		case models.VMRunning:
			todo = append(todo, vm)
		case models.VMStopped, models.VMError:
		case models.VMStopping:
			ok, err := childJobExists(ctx, a.DB, job.JobID)
			if err != nil {
				return plan, err
			}
			if ok {
				ours = append(ours, job)
				continue
			}
			fallthrough
		default:
			plan.Refused = append(plan.Refused, VMRefusal{vm.UUID, vm.Name, "it is " + vm.State + " (an operation on it is in progress)"})
		}
	}
	if len(ours) > 0 {
		return PoolVMsPlan{Jobs: ours}, nil
	}
	if len(plan.Refused) > 0 || len(todo) == 0 {
		return plan, nil
	}
	err = a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		for _, vm := range todo {
			job := PoolVMJob{VMUUID: vm.UUID, VMName: vm.Name, JobID: ChildJobID(in.JobID, "stop", vm.UUID)}
			res, err := tx.NewUpdate().Model((*models.VMInstance)(nil)).Set("state = ?", models.VMStopping).
				Set("state_reason = ?", "primary storage "+p.Name+" enters maintenance").
				Set("update_count = update_count + 1").Set("update_time = ?", models.Now()).
				Where("id = ? AND state = ?", vm.ID, models.VMRunning).Exec(ctx)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return temporal.NewApplicationError(fmt.Sprintf("virtual machine %s changed while its pool entered maintenance", vm.Name), "Retry")
			}
			if _, err := insertChildJob(ctx, tx, job.JobID, "stopVirtualMachine", vm.UUID, in.Actor); err != nil {
				return err
			}
			if err := addPoolWork(ctx, tx, p.ID, vm.ID); err != nil {
				return err
			}
			plan.Jobs = append(plan.Jobs, job)
		}
		return nil
	})
	if err != nil {
		return PoolVMsPlan{}, err
	}
	return plan, nil
}

func addPoolWork(ctx context.Context, tx bun.IDB, poolID, vmID int64) error {
	ok, err := tx.NewSelect().Model((*models.StoragePoolWork)(nil)).Where("pool_id = ? AND vm_id = ?", poolID, vmID).Exists(ctx)
	if err != nil || ok {
		return err
	}
	_, err = tx.NewInsert().Model(&models.StoragePoolWork{PoolID: poolID, VMID: vmID, Created: models.Now()}).Exec(ctx)
	return err
}

// PoolStartVMsBegin starts again, after the pool left maintenance, the VMs
// its maintenance stopped (storage_pool_work) that are still Stopped:
// each goes Stopped > Starting with its startVirtualMachine job row. VMs
// started, destroyed or moved meanwhile are left as they are. The records
// stay until PoolWorkClear, so a retry finds the jobs.
func (a *Storage) PoolStartVMsBegin(ctx context.Context, in PoolVMsInput) (PoolVMsPlan, error) {
	var plan PoolVMsPlan
	p, err := loadPool(ctx, a.DB, in.PoolUUID)
	if err != nil {
		return plan, err
	}
	err = a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var vms []models.VMInstance
		if err := tx.NewSelect().Model(&vms).Column("id", "uuid", "name", "state").
			Where("id IN (SELECT vm_id FROM storage_pool_work WHERE pool_id = ?)", p.ID).Order("id").Scan(ctx); err != nil {
			return err
		}
		for _, vm := range vms {
			job := PoolVMJob{VMUUID: vm.UUID, VMName: vm.Name, JobID: ChildJobID(in.JobID, "start", vm.UUID)}
			switch vm.State {
			case models.VMStarting:
				ok, err := childJobExists(ctx, tx, job.JobID)
				if err != nil {
					return err
				}
				if ok {
					plan.Jobs = append(plan.Jobs, job)
				}
			case models.VMStopped:
				res, err := tx.NewUpdate().Model((*models.VMInstance)(nil)).Set("state = ?", models.VMStarting).
					Set("update_count = update_count + 1").Set("update_time = ?", models.Now()).
					Where("id = ? AND state = ?", vm.ID, models.VMStopped).Exec(ctx)
				if err != nil {
					return err
				}
				if n, _ := res.RowsAffected(); n == 0 {
					continue
				}
				if _, err := insertChildJob(ctx, tx, job.JobID, "startVirtualMachine", vm.UUID, in.Actor); err != nil {
					return err
				}
				plan.Jobs = append(plan.Jobs, job)
			}
		}
		return nil
	})
	return plan, err
}

// PoolWorkClearInput ends a cancelStorageMaintenance job's restarts.
type PoolWorkClearInput struct {
	PoolUUID string
	Started  []string
	Failed   []VMRefusal
	Actor    Actor
}

// PoolWorkClear forgets the VMs the pool's maintenance stopped and records
// which were started again and which could not be (an event each way).
func (a *Storage) PoolWorkClear(ctx context.Context, in PoolWorkClearInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		p, err := loadPool(ctx, tx, in.PoolUUID)
		if err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model((*models.StoragePoolWork)(nil)).Where("pool_id = ?", p.ID).Exec(ctx); err != nil {
			return err
		}
		if len(in.Started) > 0 {
			if err := maintEvent(ctx, tx, EventInput{Actor: in.Actor, Type: "MAINT.CANCEL.PS", ResourceType: "StoragePool", ResourceUUID: p.UUID,
				Description: "Started again the virtual machines the maintenance of primary storage " + p.Name + " stopped: " + strings.Join(in.Started, ", ")}, "started"); err != nil {
				return err
			}
		}
		if len(in.Failed) > 0 {
			return maintEvent(ctx, tx, EventInput{Actor: in.Actor, Type: "MAINT.CANCEL.PS", Level: "ERROR", ResourceType: "StoragePool", ResourceUUID: p.UUID,
				Description: "Could not start again the virtual machines the maintenance of primary storage " + p.Name + " stopped: " + RefusalText(in.Failed)}, "failed")
		}
		return nil
	})
}
