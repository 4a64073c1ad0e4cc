package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

var storageAct *activities.Storage

// withStorage sets options for storage driver calls that prepare, connect
// or delete a pool or store: a few minutes, heartbeating, three attempts.
func withStorage(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 5 * time.Minute,
		HeartbeatTimeout:    15 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        15 * time.Second,
			MaximumAttempts:        3,
			NonRetryableErrorTypes: nonRetryable,
		},
	})
}

// CreateStoragePoolInput is a createStoragePool job.
type CreateStoragePoolInput = activities.PoolSpec

// CreateStoragePool adds primary storage: its driver prepares the pool and
// connects it to the hosts of its scope, then the pool row (Up), its tags and
// its capacity are written in one transaction. A driver failure ends the job
// with the driver's reason and leaves no row.
func CreateStoragePool(ctx workflow.Context, in CreateStoragePoolInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		var be activities.PoolBackendResult
		if err := workflow.ExecuteActivity(withStorage(ctx), storageAct.PoolBackendCreate, in).Get(ctx, &be); err != nil {
			code, reason := connectFailure(err)
			return JobOutcome{}, cserr.New(code, "Unable to create primary storage %s: %s", in.Name, reason)
		}
		if err := workflow.ExecuteActivity(withInventory(ctx), storageAct.PoolCreate, activities.PoolCreateInput{Spec: in, Backend: be}).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return JobOutcome{ResultKey: "storagepool", ResultType: "StoragePool", ResultUUID: in.PoolUUID}, nil
	})
}

// StoragePoolInput names the pool of a storage maintenance or delete job.
type StoragePoolInput = activities.PoolRefInput

// EnableStorageMaintenance takes a pool out of service: PrepareForMaintenance
// (its capacity stops counting), the VMs using it are stopped (see
// stopPoolVMs), then Maintenance.
func EnableStorageMaintenance(ctx workflow.Context, in StoragePoolInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		ictx := withInventory(ctx)
		if err := workflow.ExecuteActivity(ictx, storageAct.PoolMaintenanceBegin, in).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		if workflow.GetVersion(ctx, "pool-maint-stop-vms", workflow.DefaultVersion, 1) >= 1 {
			return stopPoolVMs(ctx, in)
		}
		// Evacuation before pool-maint-stop-vms: a step that only counted
		// the volumes on the pool.
		var left int64
		if err := workflow.ExecuteActivity(withStorage(ctx), storageAct.PoolEvacuate, in).Get(ctx, &left); err != nil {
			e := cserr.As(err)
			end := activities.PoolMaintenanceEndInput{PoolUUID: in.PoolUUID, Failed: true, Reason: e.Text, Actor: in.Actor}
			if ferr := workflow.ExecuteActivity(ictx, storageAct.PoolMaintenanceEnd, end).Get(ctx, nil); ferr != nil {
				return JobOutcome{}, ferr
			}
			return JobOutcome{}, cserr.New(e.Code, "Unable to put the storage pool in maintenance: %s", e.Text)
		}
		end := activities.PoolMaintenanceEndInput{PoolUUID: in.PoolUUID, Actor: in.Actor}
		if err := workflow.ExecuteActivity(ictx, storageAct.PoolMaintenanceEnd, end).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return JobOutcome{ResultKey: "storagepool", ResultType: "StoragePool", ResultUUID: in.PoolUUID}, nil
	})
}

// stopPoolVMs is EnableStorageMaintenance's evacuation (version 1 of
// pool-maint-stop-vms), CloudStack's: every running VM with a volume on the
// pool is stopped, each by its own stopVirtualMachine job (StopVM as a
// child workflow), and recorded so that cancelling the maintenance starts
// it again. A VM busy with another operation refuses the step before any
// is stopped; a stop that fails leaves its VM Running. Either way the pool
// ends in ErrorInMaintenance and the job names the VMs and why.
func stopPoolVMs(ctx workflow.Context, in StoragePoolInput) (JobOutcome, error) {
	ictx := withInventory(ctx)
	failed := func(code int, reason string) (JobOutcome, error) {
		end := activities.PoolMaintenanceEndInput{PoolUUID: in.PoolUUID, Failed: true, UnableToStop: true, Reason: reason, Actor: in.Actor}
		if err := workflow.ExecuteActivity(ictx, storageAct.PoolMaintenanceEnd, end).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return JobOutcome{}, cserr.New(code, "Unable to put the storage pool in maintenance: %s", reason)
	}
	var plan activities.PoolVMsPlan
	pin := activities.PoolVMsInput{PoolUUID: in.PoolUUID, JobID: workflow.GetInfo(ctx).WorkflowExecution.ID, Actor: in.Actor}
	if err := workflow.ExecuteActivity(ictx, storageAct.PoolStopVMsBegin, pin).Get(ctx, &plan); err != nil {
		e := cserr.As(err)
		return failed(e.Code, e.Text)
	}
	if len(plan.Refused) > 0 {
		return failed(cserr.ResourceInUse, fmt.Sprintf("%d virtual machine(s) using it cannot be stopped now, so none was: %s",
			len(plan.Refused), activities.RefusalText(plan.Refused)))
	}
	jobs := make([]vmChildJob, len(plan.Jobs))
	for i, j := range plan.Jobs {
		jobs[i] = vmChildJob{JobID: j.JobID, VMUUID: j.VMUUID, VMName: j.VMName, Command: "stopVirtualMachine",
			Summary: "stop VM " + j.VMName + " (maintenance of its primary storage)", Workflow: StopVM,
			Input: VMOpInput{VMUUID: j.VMUUID, Actor: in.Actor}}
	}
	if bad := runVMJobs(ctx, jobs); len(bad) > 0 {
		return failed(cserr.ResourceUnavailable, fmt.Sprintf("%d of %d virtual machine(s) using it could not be stopped (they run still): %s",
			len(bad), len(jobs), activities.RefusalText(bad)))
	}
	end := activities.PoolMaintenanceEndInput{PoolUUID: in.PoolUUID, Actor: in.Actor}
	for _, j := range plan.Jobs {
		end.StoppedVMs = append(end.StoppedVMs, j.VMName)
	}
	if err := workflow.ExecuteActivity(ictx, storageAct.PoolMaintenanceEnd, end).Get(ctx, nil); err != nil {
		return JobOutcome{}, err
	}
	return JobOutcome{ResultKey: "storagepool", ResultType: "StoragePool", ResultUUID: in.PoolUUID}, nil
}

// CancelStorageMaintenance returns a pool from maintenance to Up, then
// (version 1 of pool-maint-restart-vms) starts again the VMs its
// maintenance stopped, each by its own startVirtualMachine job, as
// CloudStack does. The pool is Up whatever the starts do: a VM that cannot
// start stays Stopped with its job's reason, and an ERROR event names it.
func CancelStorageMaintenance(ctx workflow.Context, in StoragePoolInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		ictx := withInventory(ctx)
		if err := workflow.ExecuteActivity(ictx, storageAct.PoolMaintenanceCancel, in).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		out := JobOutcome{ResultKey: "storagepool", ResultType: "StoragePool", ResultUUID: in.PoolUUID}
		if workflow.GetVersion(ctx, "pool-maint-restart-vms", workflow.DefaultVersion, 1) == workflow.DefaultVersion {
			return out, nil
		}
		var plan activities.PoolVMsPlan
		pin := activities.PoolVMsInput{PoolUUID: in.PoolUUID, JobID: workflow.GetInfo(ctx).WorkflowExecution.ID, Actor: in.Actor}
		if err := workflow.ExecuteActivity(ictx, storageAct.PoolStartVMsBegin, pin).Get(ctx, &plan); err != nil {
			return JobOutcome{}, err
		}
		jobs := make([]vmChildJob, len(plan.Jobs))
		for i, j := range plan.Jobs {
			jobs[i] = vmChildJob{JobID: j.JobID, VMUUID: j.VMUUID, VMName: j.VMName, Command: "startVirtualMachine",
				Summary: "start VM " + j.VMName + " (end of the maintenance of its primary storage)", Workflow: StartVM,
				Input: VMOpInput{VMUUID: j.VMUUID, Pins: activities.VMPins{ConsiderLastHost: true}, Actor: in.Actor}}
		}
		bad := runVMJobs(ctx, jobs)
		clear := activities.PoolWorkClearInput{PoolUUID: in.PoolUUID, Failed: bad, Actor: in.Actor}
		failed := map[string]bool{}
		for _, b := range bad {
			failed[b.VMUUID] = true
		}
		for _, j := range plan.Jobs {
			if !failed[j.VMUUID] {
				clear.Started = append(clear.Started, j.VMName)
			}
		}
		if err := workflow.ExecuteActivity(ictx, storageAct.PoolWorkClear, clear).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return out, nil
	})
}

// DeleteStoragePool removes a pool that no volume uses: the driver
// disconnects and deletes it, then the row, its tags, template copies and
// capacity go in one transaction.
func DeleteStoragePool(ctx workflow.Context, in StoragePoolInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		if err := workflow.ExecuteActivity(withStorage(ctx), storageAct.PoolBackendDelete, in).Get(ctx, nil); err != nil {
			code, reason := connectFailure(err)
			return JobOutcome{}, cserr.New(code, "Unable to delete the storage pool: %s", reason)
		}
		if err := workflow.ExecuteActivity(withInventory(ctx), storageAct.PoolRemove, in).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return JobOutcome{DisplayText: "storage pool deleted"}, nil
	})
}

// AddImageStoreInput is an addImageStore or createSecondaryStagingStore job.
type AddImageStoreInput = activities.ImageStoreSpec

// AddImageStore adds secondary storage (or an NFS staging store): its
// driver must answer and report its size, then the row and its details are
// written. A driver failure leaves no row.
func AddImageStore(ctx workflow.Context, in AddImageStoreInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		var st storage.StoreStats
		if err := workflow.ExecuteActivity(withStorage(ctx), storageAct.ImageStoreCapacity, in).Get(ctx, &st); err != nil {
			code, reason := connectFailure(err)
			return JobOutcome{}, cserr.New(code, "Unable to add image store %s: %s", in.Name, reason)
		}
		if err := workflow.ExecuteActivity(withInventory(ctx), storageAct.ImageStoreCreate, activities.ImageStoreCreateInput{Spec: in, Stats: st}).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return JobOutcome{ResultKey: "imagestore", ResultType: "ImageStore", ResultUUID: in.StoreUUID}, nil
	})
}
