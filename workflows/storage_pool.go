package workflows

import (
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
// (its capacity stops counting), what uses it is stopped or moved, then
// Maintenance.
func EnableStorageMaintenance(ctx workflow.Context, in StoragePoolInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		ictx := withInventory(ctx)
		if err := workflow.ExecuteActivity(ictx, storageAct.PoolMaintenanceBegin, in).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		// Evacuation: a no-op until the VM and volume workflows (issue 5)
		// stop the VMs using the pool; the step is in the history already.
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

// CancelStorageMaintenance returns a pool from maintenance to Up.
func CancelStorageMaintenance(ctx workflow.Context, in StoragePoolInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		if err := workflow.ExecuteActivity(withInventory(ctx), storageAct.PoolMaintenanceCancel, in).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return JobOutcome{ResultKey: "storagepool", ResultType: "StoragePool", ResultUUID: in.PoolUUID}, nil
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
