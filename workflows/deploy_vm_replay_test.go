package workflows

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"github.com/nimbus-cloud/nimbus/activities"
)

// Recorded histories of the VM workflows live in testdata/vm_*.json. The
// replay test runs the current workflow code against each: a change that
// alters the commands a recorded run issued (activity order, names, local
// vs regular) fails it, and must go behind workflow.GetVersion.
//
// TestVMHistoriesRecordAndReplay records fresh histories on the test
// Temporal server (with the activities faked by name) and replays them;
// with NIMBUS_UPDATE_HISTORIES=1 it writes those of its runs that testdata
// lacks. Recorded files are never rewritten: a change behind
// workflow.GetVersion adds runs under new names, and the old files keep
// proving that runs started before it still replay.

func vmReplayer(t *testing.T) worker.WorkflowReplayer {
	t.Helper()
	r := worker.NewWorkflowReplayer()
	for _, wf := range []any{DeployVM, StartVM, StopVM, RebootVM, DestroyVM, ExpungeVM, ScaleVM, MigrateVM} {
		r.RegisterWorkflow(wf)
	}
	return r
}

func TestVMHistoriesReplay(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "vm_*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no recorded VM workflow histories in testdata: run TestVMHistoriesRecordAndReplay with NIMBUS_UPDATE_HISTORIES=1")
	}
	sort.Strings(files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if err := vmReplayer(t).ReplayWorkflowHistoryFromJSONFile(nil, f); err != nil {
				t.Fatalf("replay of %s: %v", f, err)
			}
		})
	}
}

// fakeVMActivities registers stand-ins for every activity the VM
// workflows run, under the real names; failAt names one that fails for good.
func fakeVMActivities(w worker.Worker, failAt string, quick bool) {
	reg := func(name string, fn any) {
		w.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name})
	}
	refuse := func(name string) error {
		if name == failAt {
			return temporal.NewNonRetryableApplicationError("recorded failure of "+name, "Invalid", nil)
		}
		return nil
	}
	reg("JobStart", func(context.Context, activities.JobStartInput) error { return nil })
	reg("JobComplete", func(context.Context, activities.JobCompleteInput) error { return nil })
	reg("VMPlace", func(context.Context, activities.VMPlaceInput) (activities.VMPlacement, error) {
		return activities.VMPlacement{HostID: 1, HostUUID: "host-1", HostName: "h1", NicUUIDs: []string{"nic-1"}, VolumeUUID: []string{"vol-1"},
			QuickProvision: quick}, refuse("VMPlace")
	})
	reg("VMUnplace", func(context.Context, activities.VMRefInput) error { return nil })
	reg("IPAMAllocate", func(context.Context, activities.IPAMAllocateInput) (activities.IPAMAllocateResult, error) {
		return activities.IPAMAllocateResult{NicUUIDs: []string{"nic-1"}}, refuse("IPAMAllocate")
	})
	reg("IPAMRelease", func(context.Context, activities.IPAMReleaseInput) error { return nil })
	reg("VMCopyTemplate", func(context.Context, activities.VMRefInput) error { return refuse("VMCopyTemplate") })
	reg("VMCreateVolumes", func(context.Context, activities.VMVolumesInput) error { return refuse("VMCreateVolumes") })
	reg("VMDeleteVolumes", func(context.Context, activities.VMVolumesInput) error { return nil })
	reg("VMDefineStart", func(context.Context, activities.VMRefInput) error { return refuse("VMDefineStart") })
	reg("VMDestroyOnHost", func(context.Context, activities.VMRefInput) error { return nil })
	reg("VMMark", func(context.Context, activities.VMMarkInput) error { return nil })
	reg("VMStopOnHost", func(context.Context, activities.VMStopInput) error { return refuse("VMStopOnHost") })
	reg("VMStopped", func(context.Context, activities.VMStoppedInput) error { return nil })
	reg("VMExpunge", func(context.Context, activities.VMExpungeInput) error { return nil })
	reg("VMMigrateReserve", func(context.Context, activities.VMMigrateInput) error { return refuse("VMMigrateReserve") })
	reg("VMMigrateOnHost", func(context.Context, activities.VMMigrateInput) error { return refuse("VMMigrateOnHost") })
	reg("VMMigrateFinish", func(context.Context, activities.VMMigrateInput) error { return nil })
	reg("VMMigrateAbort", func(context.Context, activities.VMMigrateInput) error { return nil })
}

func TestVMHistoriesRecordAndReplay(t *testing.T) {
	addr := os.Getenv("NIMBUS_TEST_TEMPORAL")
	if addr == "" {
		t.Fatal("NIMBUS_TEST_TEMPORAL is not set: run the tests with `make test`, or source .test-services/env")
	}
	c, err := client.Dial(client.Options{HostPort: addr, Namespace: "default"})
	if err != nil {
		t.Fatalf("dial Temporal at %s: %v", addr, err)
	}
	defer c.Close()
	runs := []struct {
		file   string
		wf     any
		input  any
		failAt string
		quick  bool
	}{
		{"vm_deploy.json", DeployVM, DeployVMInput{VMUUID: "vm-1", StartVM: true}, "", false},
		{"vm_deploy_define_fails.json", DeployVM, DeployVMInput{VMUUID: "vm-1", StartVM: true}, "VMDefineStart", false},
		{"vm_deploy_stopped.json", DeployVM, DeployVMInput{VMUUID: "vm-1", StartVM: false}, "", false},
		{"vm_stop.json", StopVM, VMOpInput{VMUUID: "vm-1"}, "", false},
		{"vm_destroy_expunge.json", DestroyVM, VMOpInput{VMUUID: "vm-1", Expunge: true, PrevState: "Running"}, "", false},
		{"vm_migrate_fails.json", MigrateVM, VMOpInput{VMUUID: "vm-1", TargetHostUUID: "host-2"}, "VMMigrateOnHost", false},
		// vm-copy-template-when-needed (version 1): the copy is skipped
		// when the template is on the pool.
		{"vm_deploy_v1_template_on_pool.json", DeployVM, DeployVMInput{VMUUID: "vm-1", StartVM: true}, "", false},
		{"vm_deploy_v1_create_fails.json", DeployVM, DeployVMInput{VMUUID: "vm-1", StartVM: true}, "VMCreateVolumes", false},
		// vm-quick-provision-local (version 1): volumes and define-and-start
		// as local activities on quick hypervisors.
		{"vm_deploy_v2_quick.json", DeployVM, DeployVMInput{VMUUID: "vm-1", StartVM: true}, "", true},
		{"vm_deploy_v2_quick_define_fails.json", DeployVM, DeployVMInput{VMUUID: "vm-1", StartVM: true}, "VMDefineStart", true},
		{"vm_start_v2_quick.json", StartVM, VMOpInput{VMUUID: "vm-1"}, "", true},
		// job-row-local (version 1): RunJob's row updates as local
		// activities.
		{"vm_deploy_v3_job_local.json", DeployVM, DeployVMInput{VMUUID: "vm-1", StartVM: true}, "", true},
		{"vm_deploy_v3_job_local_define_fails.json", DeployVM, DeployVMInput{VMUUID: "vm-1", StartVM: true}, "VMDefineStart", true},
		{"vm_stop_v3_job_local.json", StopVM, VMOpInput{VMUUID: "vm-1"}, "", false},
	}
	for _, r := range runs {
		t.Run(r.file, func(t *testing.T) {
			recordAndReplay(t, c, func(w worker.Worker) {
				for _, wf := range []any{DeployVM, StartVM, StopVM, RebootVM, DestroyVM, ExpungeVM, ScaleVM, MigrateVM} {
					w.RegisterWorkflow(wf)
				}
				fakeVMActivities(w, r.failAt, r.quick)
			}, vmReplayer(t), r.file, r.wf, r.input, r.failAt != "")
		})
	}
}
