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

// Recorded histories of the volume and snapshot workflows live in
// testdata/vol_*.json and testdata/snap_*.json, as the VM workflows' do
// (see deploy_vm_replay_test.go): replaying them catches a change that
// alters the commands a recorded run issued, which must then go behind
// workflow.GetVersion. NIMBUS_UPDATE_HISTORIES=1 writes the missing files;
// recorded files are never rewritten.

var volumeWorkflows = []any{CreateVolume, AttachVolume, DetachVolume, ResizeVolume, MigrateVolume, DeleteVolume,
	CreateSnapshot, DeleteSnapshot, RevertSnapshot, CreateTemplateFromVolume, SnapshotPolicyRun}

func volumeReplayer(t *testing.T) worker.WorkflowReplayer {
	t.Helper()
	r := worker.NewWorkflowReplayer()
	for _, wf := range volumeWorkflows {
		r.RegisterWorkflow(wf)
	}
	return r
}

func TestVolumeHistoriesReplay(t *testing.T) {
	var files []string
	for _, pat := range []string{"vol_*.json", "snap_*.json"} {
		f, err := filepath.Glob(filepath.Join("testdata", pat))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f...)
	}
	if len(files) == 0 {
		t.Fatal("no recorded volume workflow histories in testdata: run TestVolumeHistoriesRecordAndReplay with NIMBUS_UPDATE_HISTORIES=1")
	}
	sort.Strings(files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if err := volumeReplayer(t).ReplayWorkflowHistoryFromJSONFile(nil, f); err != nil {
				t.Fatalf("replay of %s: %v", f, err)
			}
		})
	}
}

// fakeVolumeActivities registers stand-ins for the activities the volume
// and snapshot workflows run, under their real names; failAt names one that
// fails for good.
func fakeVolumeActivities(w worker.Worker, failAt string) {
	results := map[string]any{
		"VolumeAttachBegin":     activities.VolumeAttachState{DeviceID: 1, NeedsPool: true},
		"VolumePlace":           activities.VolumePlacement{PoolID: 1, PoolUUID: "pool-1"},
		"VolumeResizeBegin":     activities.VolumeResizeState{OldSize: 1 << 30, OnPool: true},
		"VolumeMigrateBegin":    activities.VolumeMigrateState{SrcPoolID: 1, SrcPath: "vol-1", DstPoolID: 2},
		"VolumeMigrateCopy":     "vol-1",
		"VolumeDeleteBegin":     activities.VolumeDeleteState{PoolID: 1, Path: "vol-1"},
		"SnapshotRevertBegin":   activities.SnapshotRevertState{VolumeUUID: "vol-1", OldSize: 2 << 30, NewSize: 1 << 30},
		"SnapshotTemplateCopy":  int64(1 << 30),
		"SnapshotPolicyPrepare": activities.SnapshotPolicyRunState{SnapshotUUID: "snap-2"},
		"SnapshotPolicyPrune":   []string{"snap-1"},
	}
	names := []string{
		"JobStart", "JobComplete",
		"VolumeCreated", "VolumePlace", "VolumeAllocate", "VolumeCreateOnPool", "VolumeUnallocate", "VolumeCreateFailed",
		"VolumeAttachBegin", "VolumeHypervisorAttach", "VolumeHypervisorDetach", "VolumeAttachFinish", "VolumeAttachUndo",
		"VolumeDetachFinish", "VolumeResizeBegin", "VolumeResizeOnPool", "VolumeResizeFinish",
		"VolumeMigrateBegin", "VolumeMigrateCopy", "VolumeMigrateSwitch", "VolumeDeleteOnPool", "VolumeMigrateUndo",
		"VolumeDeleteBegin", "VolumeDeleteFinish",
		"SnapshotBegin", "SnapshotOnPrimary", "SnapshotBackup", "SnapshotFinish", "SnapshotUndo",
		"SnapshotDeleteBegin", "SnapshotDeleteData", "SnapshotDeleteFinish",
		"SnapshotRevertBegin", "SnapshotRevertOnPool", "SnapshotRevertFinish",
		"SnapshotTemplateCopy", "SnapshotTemplateFinish", "SnapshotPolicyPrepare", "SnapshotPolicyPrune",
	}
	for _, name := range names {
		w.RegisterActivityWithOptions(func(context.Context, any) (any, error) {
			if name == failAt {
				return nil, temporal.NewNonRetryableApplicationError("recorded failure of "+name, "Invalid", nil)
			}
			return results[name], nil
		}, activity.RegisterOptions{Name: name})
	}
}

func TestVolumeHistoriesRecordAndReplay(t *testing.T) {
	addr := os.Getenv("NIMBUS_TEST_TEMPORAL")
	if addr == "" {
		t.Fatal("NIMBUS_TEST_TEMPORAL is not set: run the tests with `make test`, or source .test-services/env")
	}
	c, err := client.Dial(client.Options{HostPort: addr, Namespace: "default"})
	if err != nil {
		t.Fatalf("dial Temporal at %s: %v", addr, err)
	}
	defer c.Close()
	attach := activities.VolumeAttachInput{VolumeUUID: "vol-1", VMUUID: "vm-1"}
	snap := activities.SnapshotInput{SnapshotUUID: "snap-1"}
	runs := []struct {
		file   string
		wf     any
		input  any
		failAt string
	}{
		{"vol_create.json", CreateVolume, CreateVolumeInput{VolumeUUID: "vol-1"}, ""},
		{"vol_create_from_snapshot.json", CreateVolume, CreateVolumeInput{VolumeUUID: "vol-1", SnapshotUUID: "snap-1"}, ""},
		{"vol_create_from_snapshot_fails.json", CreateVolume, CreateVolumeInput{VolumeUUID: "vol-1", SnapshotUUID: "snap-1"}, "VolumeCreateOnPool"},
		{"vol_attach.json", AttachVolume, attach, ""},
		{"vol_attach_fails.json", AttachVolume, attach, "VolumeHypervisorAttach"},
		{"vol_detach.json", DetachVolume, attach, ""},
		{"vol_resize_fails.json", ResizeVolume, activities.VolumeResizeInput{VolumeUUID: "vol-1", NewSize: 2 << 30}, "VolumeResizeOnPool"},
		{"vol_migrate.json", MigrateVolume, activities.VolumeMigrateInput{VolumeUUID: "vol-1", PoolUUID: "pool-2"}, ""},
		{"vol_migrate_fails.json", MigrateVolume, activities.VolumeMigrateInput{VolumeUUID: "vol-1", PoolUUID: "pool-2"}, "VolumeMigrateCopy"},
		{"vol_delete.json", DeleteVolume, activities.VolumeRefInput{VolumeUUID: "vol-1"}, ""},
		{"snap_create.json", CreateSnapshot, snap, ""},
		{"snap_backup_fails.json", CreateSnapshot, snap, "SnapshotBackup"},
		{"snap_delete.json", DeleteSnapshot, snap, ""},
		{"snap_revert.json", RevertSnapshot, snap, ""},
		{"snap_template.json", CreateTemplateFromVolume, activities.SnapshotTemplateInput{TemplateUUID: "tmpl-1", SnapshotUUID: "snap-1"}, ""},
		{"snap_policy_run.json", SnapshotPolicyRun, activities.SnapshotPolicyRunInput{PolicyUUID: "pol-1"}, ""},
		// job-row-local (version 1): RunJob's row updates as local activities.
		{"vol_create_v2_job_local.json", CreateVolume, CreateVolumeInput{VolumeUUID: "vol-1"}, ""},
		{"vol_attach_fails_v2_job_local.json", AttachVolume, attach, "VolumeHypervisorAttach"},
	}
	for _, r := range runs {
		t.Run(r.file, func(t *testing.T) {
			recordAndReplay(t, c, func(w worker.Worker) {
				for _, wf := range volumeWorkflows {
					w.RegisterWorkflow(wf)
				}
				fakeVolumeActivities(w, r.failAt)
			}, volumeReplayer(t), r.file, r.wf, r.input, r.failAt != "")
		})
	}
}
