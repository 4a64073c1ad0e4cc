package workflows

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/google/uuid"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"github.com/nimbus-cloud/nimbus/activities"
)

// Recorded histories of the host and storage maintenance workflows and of
// the reconciler live in testdata/maint_*.json, as the VM workflows' do
// (see deploy_vm_replay_test.go). The _v0 files were recorded before the
// evacuation steps were filled in: they prove that maintenance jobs
// started by the earlier code still replay.

var maintWorkflows = []any{PrepareHostForMaintenance, CancelHostMaintenance, EnableStorageMaintenance, CancelStorageMaintenance,
	MaintReconcile, MigrateVM, StopVM, StartVM}

func maintReplayer(t *testing.T) worker.WorkflowReplayer {
	t.Helper()
	r := worker.NewWorkflowReplayer()
	for _, wf := range maintWorkflows {
		r.RegisterWorkflow(wf)
	}
	return r
}

func TestMaintHistoriesReplay(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "maint_*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no recorded maintenance workflow histories in testdata: run TestMaintHistoriesRecordAndReplay with NIMBUS_UPDATE_HISTORIES=1")
	}
	sort.Strings(files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if err := maintReplayer(t).ReplayWorkflowHistoryFromJSONFile(nil, f); err != nil {
				t.Fatalf("replay of %s: %v", f, err)
			}
		})
	}
}

// fakeMaintActivities registers stand-ins for the activities of the
// maintenance workflows under their real names; failAt names one that
// fails for good.
func fakeMaintActivities(w worker.Worker, failAt string) {
	reg := func(name string, fn any) {
		w.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name})
	}
	refuse := func(name string) error {
		if name == failAt {
			return temporal.NewNonRetryableApplicationError("recorded failure of "+name, "CS533", nil)
		}
		return nil
	}
	reg("HostMaintenanceBegin", func(context.Context, activities.HostMaintenanceInput) (activities.HostRef, error) {
		return activities.HostRef{HostID: 1, HostUUID: "host-1", Name: "h1"}, refuse("HostMaintenanceBegin")
	})
	reg("HostEvacuate", func(context.Context, activities.HostMaintenanceInput) (activities.HostEvacuateResult, error) {
		return activities.HostEvacuateResult{}, refuse("HostEvacuate")
	})
	reg("HostMaintenanceEnd", func(context.Context, activities.HostMaintenanceEndInput) error { return nil })
	reg("HostMaintenanceCancel", func(context.Context, activities.HostMaintenanceInput) error { return nil })
	reg("PoolMaintenanceBegin", func(context.Context, activities.PoolRefInput) error { return nil })
	reg("PoolEvacuate", func(context.Context, activities.PoolRefInput) (int64, error) { return 0, refuse("PoolEvacuate") })
	reg("PoolMaintenanceEnd", func(context.Context, activities.PoolMaintenanceEndInput) error { return nil })
	reg("PoolMaintenanceCancel", func(context.Context, activities.PoolRefInput) error { return nil })
	reg("MaintReconcileHosts", func(context.Context, activities.MaintHostsInput) (activities.MaintHostsPage, error) {
		return activities.MaintHostsPage{Hosts: []activities.MaintHost{{ID: 1, UUID: "host-1", Name: "h1", State: "Up"}}}, nil
	})
	reg("MaintScanHost", func(_ context.Context, h activities.MaintHost) (activities.MaintHostScan, error) {
		return activities.MaintHostScan{Host: h, Reachable: true, VMs: []activities.MaintVM{{UUID: "vm-9", InstanceName: "i-2-9-VM", Power: "Running"}}}, nil
	})
	reg("MaintHostState", func(context.Context, activities.MaintHostStateInput) error { return nil })
	reg("MaintApply", func(context.Context, activities.MaintApplyInput) (activities.MaintApplyResult, error) {
		return activities.MaintApplyResult{Reported: 1}, nil
	})
	reg("VMEvacuateBegin", func(context.Context, activities.VMEvacuateInput) (activities.VMEvacuatePlan, error) {
		if failAt == "VMEvacuateBegin" {
			return activities.VMEvacuatePlan{Refused: []activities.VMRefusal{{VMUUID: "vm-1", VMName: "web1", Reason: "recorded refusal"}}}, nil
		}
		// Fresh job ids: the child workflows' IDs on the shared server.
		return activities.VMEvacuatePlan{Moves: []activities.VMEvacuateMove{
			{VMUUID: "vm-1", VMName: "web1", TargetHostUUID: "host-2", TargetHostName: "h2", JobID: uuid.NewString()},
			{VMUUID: "vm-2", VMName: "web2", TargetHostUUID: "host-3", TargetHostName: "h3", JobID: uuid.NewString()},
		}}, nil
	})
	reg("PoolStopVMsBegin", func(context.Context, activities.PoolVMsInput) (activities.PoolVMsPlan, error) {
		if failAt == "PoolStopVMsBegin" {
			return activities.PoolVMsPlan{Refused: []activities.VMRefusal{{VMUUID: "vm-1", VMName: "web1", Reason: "recorded refusal"}}}, nil
		}
		return activities.PoolVMsPlan{Jobs: []activities.PoolVMJob{{VMUUID: "vm-1", VMName: "web1", JobID: uuid.NewString()}}}, nil
	})
	reg("PoolStartVMsBegin", func(context.Context, activities.PoolVMsInput) (activities.PoolVMsPlan, error) {
		return activities.PoolVMsPlan{Jobs: []activities.PoolVMJob{{VMUUID: "vm-1", VMName: "web1", JobID: uuid.NewString()}}}, nil
	})
	reg("PoolWorkClear", func(context.Context, activities.PoolWorkClearInput) error { return nil })
	reg("MaintReconcilePools", func(context.Context, activities.MaintHostsInput) (activities.MaintPoolsPage, error) {
		return activities.MaintPoolsPage{Pools: []activities.MaintPool{{ID: 1, UUID: "pool-1", Name: "p1"}}}, nil
	})
	reg("MaintScanPool", func(_ context.Context, p activities.MaintPool) (activities.MaintPoolScan, error) {
		return activities.MaintPoolScan{Pool: p, Reachable: true, CleanupDelay: 60,
			Orphans: []activities.MaintDisk{{Path: "disk-9", SizeBytes: 1 << 30, Seen: true, AgeSeconds: 120}}}, nil
	})
	reg("MaintPoolApply", func(context.Context, activities.MaintPoolApplyInput) (activities.MaintApplyResult, error) {
		return activities.MaintApplyResult{Reported: 1, Repaired: 1}, nil
	})
	reg("MaintStuckVMs", func(context.Context, activities.MaintStuckInput) ([]string, error) { return nil, nil })
	reg("VMSettle", func(context.Context, activities.VMRefInput) (string, error) { return "Running", nil })
}

type maintRun struct {
	file   string
	wf     any
	input  any
	failAt string
	fails  bool
}

// maintRuns are the runs recorded; later versions add theirs.
var maintRuns = []maintRun{
	{file: "maint_host_prepare_v0.json", wf: PrepareHostForMaintenance, input: HostMaintenanceInput{HostUUID: "host-1"}},
	{file: "maint_host_prepare_v0_fails.json", wf: PrepareHostForMaintenance, input: HostMaintenanceInput{HostUUID: "host-1"}, failAt: "HostEvacuate", fails: true},
	{file: "maint_host_cancel.json", wf: CancelHostMaintenance, input: HostMaintenanceInput{HostUUID: "host-1"}},
	{file: "maint_pool_enable_v0.json", wf: EnableStorageMaintenance, input: StoragePoolInput{PoolUUID: "pool-1"}},
	{file: "maint_pool_cancel_v0.json", wf: CancelStorageMaintenance, input: StoragePoolInput{PoolUUID: "pool-1"}},
	{file: "maint_reconcile_v0.json", wf: MaintReconcile, input: MaintReconcileInput{}},
	// host-maint-live-migrate (version 1): the VMs are live-migrated off
	// the host by MigrateVM child jobs.
	{file: "maint_host_prepare_v1.json", wf: PrepareHostForMaintenance, input: HostMaintenanceInput{HostUUID: "host-1"}},
	{file: "maint_host_prepare_v1_refused.json", wf: PrepareHostForMaintenance, input: HostMaintenanceInput{HostUUID: "host-1"}, failAt: "VMEvacuateBegin", fails: true},
	{file: "maint_host_prepare_v1_migrate_fails.json", wf: PrepareHostForMaintenance, input: HostMaintenanceInput{HostUUID: "host-1"}, failAt: "VMMigrateOnHost", fails: true},
	// pool-maint-stop-vms and pool-maint-restart-vms (version 1): the VMs
	// using the pool are stopped by StopVM child jobs, and started again
	// by StartVM child jobs when the maintenance is cancelled.
	{file: "maint_pool_enable_v1.json", wf: EnableStorageMaintenance, input: StoragePoolInput{PoolUUID: "pool-1"}},
	{file: "maint_pool_enable_v1_refused.json", wf: EnableStorageMaintenance, input: StoragePoolInput{PoolUUID: "pool-1"}, failAt: "PoolStopVMsBegin", fails: true},
	{file: "maint_pool_enable_v1_stop_fails.json", wf: EnableStorageMaintenance, input: StoragePoolInput{PoolUUID: "pool-1"}, failAt: "VMStopOnHost", fails: true},
	{file: "maint_pool_cancel_v1.json", wf: CancelStorageMaintenance, input: StoragePoolInput{PoolUUID: "pool-1"}},
	// reconcile-pool-orphans (version 1): pools are scanned for orphan disks.
	{file: "maint_reconcile_v1.json", wf: MaintReconcile, input: MaintReconcileInput{}},
}

func TestMaintHistoriesRecordAndReplay(t *testing.T) {
	addr := os.Getenv("NIMBUS_TEST_TEMPORAL")
	if addr == "" {
		t.Fatal("NIMBUS_TEST_TEMPORAL is not set: run the tests with `make test`, or source .test-services/env")
	}
	c, err := client.Dial(client.Options{HostPort: addr, Namespace: "default"})
	if err != nil {
		t.Fatalf("dial Temporal at %s: %v", addr, err)
	}
	defer c.Close()
	for _, r := range maintRuns {
		t.Run(r.file, func(t *testing.T) {
			recordAndReplay(t, c, func(w worker.Worker) {
				for _, wf := range maintWorkflows {
					w.RegisterWorkflow(wf)
				}
				fakeMaintActivities(w, r.failAt)
				fakeVMActivities(w, r.failAt, false)
			}, maintReplayer(t), r.file, r.wf, r.input, r.fails)
		})
	}
}
