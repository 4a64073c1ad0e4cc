package workflows

import (
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
)

// volumeEnv is a job environment with the volume and snapshot workflows.
func volumeEnv(t *testing.T) (*testsuite.TestWorkflowEnvironment, *jobRecorder) {
	t.Helper()
	env, rec := newJobEnv(t)
	for _, wf := range []any{CreateVolume, AttachVolume, DetachVolume, ResizeVolume, MigrateVolume, DeleteVolume,
		CreateSnapshot, DeleteSnapshot, RevertSnapshot, CreateTemplateFromVolume, SnapshotPolicyRun} {
		env.RegisterWorkflow(wf)
	}
	env.RegisterActivity(&activities.Volumes{})
	env.RegisterActivity(&activities.Snapshots{})
	return env, rec
}

// order is the start order of the given activities (others left out).
func (r *jobRecorder) order(fns ...any) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	want := map[string]bool{}
	for _, fn := range fns {
		want[activityName(fn)] = true
	}
	var out []string
	for _, s := range r.started {
		if want[s] {
			out = append(out, s)
		}
	}
	return out
}

func names(fns ...any) []string {
	out := make([]string, len(fns))
	for i, fn := range fns {
		out[i] = activityName(fn)
	}
	return out
}

// driverDown is a final driver failure.
func driverDown(msg string) error {
	return temporal.NewNonRetryableApplicationError(msg, "CS530", nil)
}

func TestSnapshotFailedBackupRemovesThePrimarySnapshot(t *testing.T) {
	env, rec := volumeEnv(t)
	in := activities.SnapshotInput{SnapshotUUID: "s-1", Actor: activities.Actor{AccountID: 2}}
	env.OnActivity(snapAct.SnapshotBegin, mock.Anything, in).Return(activities.SnapshotBeginResult{}, nil)
	env.OnActivity(snapAct.SnapshotOnPrimary, mock.Anything, in).Return(nil)
	env.OnActivity(snapAct.SnapshotBackup, mock.Anything, in).Return(driverDown("secondary storage is full"))
	var undo activities.SnapshotFailInput
	env.OnActivity(snapAct.SnapshotUndo, mock.Anything, mock.Anything).
		Return(func(_ context.Context, u activities.SnapshotFailInput) error { undo = u; return nil }).Once()
	env.ExecuteWorkflow(CreateSnapshot, in)

	if err := env.GetWorkflowError(); err == nil {
		t.Fatal("workflow succeeded, want the backup's failure")
	}
	if undo.SnapshotUUID != "s-1" || undo.Reason != "secondary storage is full" || undo.Actor.AccountID != 2 {
		t.Fatalf("SnapshotUndo got %+v", undo)
	}
	rec.notRun(t, snapAct.SnapshotFinish)
	if got := rec.last(); got.ErrorCode != cserr.InternalError || got.ErrorText != "secondary storage is full" {
		t.Fatalf("job completed with %+v", got)
	}
}

func TestSnapshotSucceedsThroughEveryState(t *testing.T) {
	env, rec := volumeEnv(t)
	in := activities.SnapshotInput{SnapshotUUID: "s-2"}
	env.OnActivity(snapAct.SnapshotBegin, mock.Anything, in).Return(activities.SnapshotBeginResult{}, nil)
	env.OnActivity(snapAct.SnapshotOnPrimary, mock.Anything, in).Return(nil)
	env.OnActivity(snapAct.SnapshotBackup, mock.Anything, in).Return(nil)
	env.OnActivity(snapAct.SnapshotFinish, mock.Anything, in).Return(nil)
	env.ExecuteWorkflow(CreateSnapshot, in)
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	want := names(snapAct.SnapshotBegin, snapAct.SnapshotOnPrimary, snapAct.SnapshotBackup, snapAct.SnapshotFinish)
	if got := rec.order(snapAct.SnapshotBegin, snapAct.SnapshotOnPrimary, snapAct.SnapshotBackup, snapAct.SnapshotFinish); !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	rec.notRun(t, snapAct.SnapshotUndo)
	if got := rec.last(); got.ErrorCode != 0 || got.Outcome.ResultType != "Snapshot" || got.Outcome.ResultUUID != "s-2" {
		t.Fatalf("job completed with %+v", got)
	}
}

func TestSnapshotRefusedAtBeginStillUndoes(t *testing.T) {
	env, rec := volumeEnv(t)
	in := activities.SnapshotInput{SnapshotUUID: "s-3"}
	env.OnActivity(snapAct.SnapshotBegin, mock.Anything, in).Return(activities.SnapshotBeginResult{}, refusal(cserr.ParamError, "Volume v is Migrating"))
	env.OnActivity(snapAct.SnapshotUndo, mock.Anything, mock.Anything).Return(nil).Once()
	env.ExecuteWorkflow(CreateSnapshot, in)
	if cserr.Code(env.GetWorkflowError()) != cserr.ParamError {
		t.Fatalf("error %v, want 431", env.GetWorkflowError())
	}
	rec.notRun(t, snapAct.SnapshotOnPrimary, snapAct.SnapshotBackup, snapAct.SnapshotFinish)
	if rec.ran(snapAct.SnapshotUndo) != 1 {
		t.Fatal("the Allocated snapshot was not undone (its count stays reserved)")
	}
}

func TestVolumeAttachFailureAfterCreatingOnAPoolUndoesInReverse(t *testing.T) {
	env, rec := volumeEnv(t)
	in := activities.VolumeAttachInput{VolumeUUID: "v-1", VMUUID: "vm-1"}
	env.OnActivity(volAct.VolumeAttachBegin, mock.Anything, in).Return(activities.VolumeAttachState{DeviceID: 1, NeedsPool: true}, nil)
	env.OnActivity(volAct.VolumePlace, mock.Anything, activities.VolumePlaceInput{VolumeUUID: "v-1", VMUUID: "vm-1"}).
		Return(activities.VolumePlacement{PoolID: 7, PoolUUID: "p-7"}, nil)
	env.OnActivity(volAct.VolumeAllocate, mock.Anything, activities.VolumeAllocateInput{VolumeUUID: "v-1", PoolID: 7}).Return(nil)
	env.OnActivity(volAct.VolumeCreateOnPool, mock.Anything, activities.VolumeCreateInput{VolumeUUID: "v-1"}).Return(nil)
	env.OnActivity(volAct.VolumeHypervisorAttach, mock.Anything, mock.Anything).Return(driverDown("host lost the disk bus"))
	env.OnActivity(volAct.VolumeHypervisorDetach, mock.Anything, activities.VolumeHypervisorInput{VolumeUUID: "v-1", VMUUID: "vm-1"}).Return(nil).Once()
	env.OnActivity(volAct.VolumeUnallocate, mock.Anything, mock.Anything).Return(nil).Once()
	env.OnActivity(volAct.VolumeAttachUndo, mock.Anything, in).Return(nil).Once()
	env.ExecuteWorkflow(AttachVolume, in)

	if env.GetWorkflowError() == nil {
		t.Fatal("attach succeeded, want the hypervisor's failure")
	}
	want := names(volAct.VolumeAttachBegin, volAct.VolumePlace, volAct.VolumeAllocate, volAct.VolumeCreateOnPool,
		volAct.VolumeHypervisorAttach, volAct.VolumeHypervisorDetach, volAct.VolumeUnallocate, volAct.VolumeAttachUndo)
	got := rec.order(volAct.VolumeAttachBegin, volAct.VolumePlace, volAct.VolumeAllocate, volAct.VolumeCreateOnPool,
		volAct.VolumeHypervisorAttach, volAct.VolumeHypervisorDetach, volAct.VolumeUnallocate, volAct.VolumeAttachUndo)
	if !slices.Equal(got, want) {
		t.Fatalf("order\n got %v\nwant %v", got, want)
	}
	rec.notRun(t, volAct.VolumeAttachFinish)
}

func TestVolumeAttachFailingPlacementGivesBackTheDeviceOnly(t *testing.T) {
	env, rec := volumeEnv(t)
	in := activities.VolumeAttachInput{VolumeUUID: "v-2", VMUUID: "vm-1"}
	env.OnActivity(volAct.VolumeAttachBegin, mock.Anything, in).Return(activities.VolumeAttachState{DeviceID: 2, NeedsPool: true}, nil)
	env.OnActivity(volAct.VolumePlace, mock.Anything, mock.Anything).
		Return(activities.VolumePlacement{}, refusal(cserr.InsufficientCap, "No primary storage pool can hold volume v-2"))
	env.OnActivity(volAct.VolumeAttachUndo, mock.Anything, in).Return(nil).Once()
	env.ExecuteWorkflow(AttachVolume, in)
	if cserr.Code(env.GetWorkflowError()) != cserr.InsufficientCap {
		t.Fatalf("error %v, want 533", env.GetWorkflowError())
	}
	rec.notRun(t, volAct.VolumeAllocate, volAct.VolumeUnallocate, volAct.VolumeHypervisorAttach, volAct.VolumeHypervisorDetach, volAct.VolumeAttachFinish)
	if rec.ran(volAct.VolumeAttachUndo) != 1 {
		t.Fatal("device id not given back")
	}
}

func TestVolumeAttachToAStoppedVMWithAPlacedVolume(t *testing.T) {
	env, rec := volumeEnv(t)
	in := activities.VolumeAttachInput{VolumeUUID: "v-3", VMUUID: "vm-2"}
	env.OnActivity(volAct.VolumeAttachBegin, mock.Anything, in).Return(activities.VolumeAttachState{DeviceID: 1}, nil)
	env.OnActivity(volAct.VolumeHypervisorAttach, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(volAct.VolumeAttachFinish, mock.Anything, in).Return(nil).Once()
	env.ExecuteWorkflow(AttachVolume, in)
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	rec.notRun(t, volAct.VolumePlace, volAct.VolumeAllocate, volAct.VolumeCreateOnPool, volAct.VolumeAttachUndo, volAct.VolumeHypervisorDetach)
}

func TestVolumeCreateFromSnapshotFailureRemovesWhatItMade(t *testing.T) {
	env, rec := volumeEnv(t)
	in := CreateVolumeInput{VolumeUUID: "v-4", SnapshotUUID: "s-4", HypervisorType: "Simulator", PreferPoolID: 3}
	env.OnActivity(volAct.VolumePlace, mock.Anything, activities.VolumePlaceInput{VolumeUUID: "v-4", HypervisorType: "Simulator", PreferPoolID: 3}).
		Return(activities.VolumePlacement{PoolID: 3}, nil)
	env.OnActivity(volAct.VolumeAllocate, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(volAct.VolumeCreateOnPool, mock.Anything, activities.VolumeCreateInput{VolumeUUID: "v-4", SnapshotUUID: "s-4"}).
		Return(driverDown("backup unreadable"))
	env.OnActivity(volAct.VolumeUnallocate, mock.Anything, mock.Anything).Return(nil).Once()
	var failed activities.VolumeFailInput
	env.OnActivity(volAct.VolumeCreateFailed, mock.Anything, mock.Anything).
		Return(func(_ context.Context, f activities.VolumeFailInput) error { failed = f; return nil }).Once()
	env.ExecuteWorkflow(CreateVolume, in)
	if env.GetWorkflowError() == nil {
		t.Fatal("createVolume succeeded")
	}
	if failed.VolumeUUID != "v-4" || failed.Reason != "backup unreadable" {
		t.Fatalf("VolumeCreateFailed got %+v", failed)
	}
	want := names(volAct.VolumeCreateOnPool, volAct.VolumeUnallocate, volAct.VolumeCreateFailed)
	if got := rec.order(volAct.VolumeCreateOnPool, volAct.VolumeUnallocate, volAct.VolumeCreateFailed); !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	rec.notRun(t, volAct.VolumeCreated)
}

func TestVolumeCreateWithoutSnapshotStaysAllocated(t *testing.T) {
	env, rec := volumeEnv(t)
	in := CreateVolumeInput{VolumeUUID: "v-5"}
	env.OnActivity(volAct.VolumeCreated, mock.Anything, activities.VolumeRefInput{VolumeUUID: "v-5"}).Return(nil).Once()
	env.ExecuteWorkflow(CreateVolume, in)
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	rec.notRun(t, volAct.VolumePlace, volAct.VolumeAllocate, volAct.VolumeCreateOnPool, volAct.VolumeAttachBegin)
	if got := rec.last(); got.Outcome.ResultKey != "volume" || got.Outcome.ResultUUID != "v-5" {
		t.Fatalf("job completed with %+v", got)
	}
}

func TestVolumeMigrateCopyFailureDeletesThePartialCopyAndReturnsTheVolume(t *testing.T) {
	env, rec := volumeEnv(t)
	in := activities.VolumeMigrateInput{VolumeUUID: "v-6", PoolUUID: "p-9"}
	st := activities.VolumeMigrateState{SrcPoolID: 1, SrcPath: "v-6", DstPoolID: 9}
	env.OnActivity(volAct.VolumeMigrateBegin, mock.Anything, in).Return(st, nil)
	env.OnActivity(volAct.VolumeMigrateCopy, mock.Anything, st).Return("", driverDown("target pool went away"))
	env.OnActivity(volAct.VolumeDeleteOnPool, mock.Anything, activities.VolumeOnPoolInput{PoolID: 9, Path: "v-6"}).Return(nil).Once()
	var undo activities.VolumeMigrateUndoInput
	env.OnActivity(volAct.VolumeMigrateUndo, mock.Anything, mock.Anything).
		Return(func(_ context.Context, u activities.VolumeMigrateUndoInput) error { undo = u; return nil }).Once()
	env.ExecuteWorkflow(MigrateVolume, in)
	if env.GetWorkflowError() == nil {
		t.Fatal("migration succeeded")
	}
	if undo.State != st || undo.Reason != "target pool went away" {
		t.Fatalf("VolumeMigrateUndo got %+v", undo)
	}
	want := names(volAct.VolumeMigrateCopy, volAct.VolumeDeleteOnPool, volAct.VolumeMigrateUndo)
	if got := rec.order(volAct.VolumeMigrateCopy, volAct.VolumeDeleteOnPool, volAct.VolumeMigrateUndo); !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	rec.notRun(t, volAct.VolumeMigrateSwitch)
}

func TestVolumeMigrateDeletesTheSourceAfterTheSwitch(t *testing.T) {
	env, rec := volumeEnv(t)
	in := activities.VolumeMigrateInput{VolumeUUID: "v-7", PoolUUID: "p-9"}
	st := activities.VolumeMigrateState{SrcPoolID: 1, SrcPath: "v-7", DstPoolID: 9}
	env.OnActivity(volAct.VolumeMigrateBegin, mock.Anything, in).Return(st, nil)
	env.OnActivity(volAct.VolumeMigrateCopy, mock.Anything, st).Return("v-7", nil)
	env.OnActivity(volAct.VolumeMigrateSwitch, mock.Anything, mock.Anything).Return(nil).Once()
	env.OnActivity(volAct.VolumeDeleteOnPool, mock.Anything, activities.VolumeOnPoolInput{PoolID: 1, Path: "v-7"}).Return(nil).Once()
	env.ExecuteWorkflow(MigrateVolume, in)
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	rec.notRun(t, volAct.VolumeMigrateUndo)
}

func TestVolumeResizeDriverFailureGivesTheGrowthBack(t *testing.T) {
	env, rec := volumeEnv(t)
	in := activities.VolumeResizeInput{VolumeUUID: "v-8", NewSize: 20 << 30}
	env.OnActivity(volAct.VolumeResizeBegin, mock.Anything, in).Return(activities.VolumeResizeState{OldSize: 10 << 30, OnPool: true}, nil)
	env.OnActivity(volAct.VolumeResizeOnPool, mock.Anything, in).Return(refusal(cserr.InsufficientCap, "pool full"))
	var fin activities.VolumeResizeFinishInput
	env.OnActivity(volAct.VolumeResizeFinish, mock.Anything, mock.Anything).
		Return(func(_ context.Context, f activities.VolumeResizeFinishInput) error { fin = f; return nil }).Once()
	env.ExecuteWorkflow(ResizeVolume, in)
	if cserr.Code(env.GetWorkflowError()) != cserr.InsufficientCap {
		t.Fatalf("error %v, want 533", env.GetWorkflowError())
	}
	if !fin.Failed || fin.OldSize != 10<<30 || fin.NewSize != 20<<30 {
		t.Fatalf("VolumeResizeFinish got %+v", fin)
	}
	if rec.ran(volAct.VolumeResizeFinish) != 1 {
		t.Fatal("finish not run once")
	}
}

func TestSnapshotRevertFailureReturnsTheVolume(t *testing.T) {
	env, _ := volumeEnv(t)
	in := activities.SnapshotInput{SnapshotUUID: "s-5"}
	st := activities.SnapshotRevertState{VolumeUUID: "v-9", OldSize: 5, NewSize: 3}
	env.OnActivity(snapAct.SnapshotRevertBegin, mock.Anything, in).Return(st, nil)
	env.OnActivity(snapAct.SnapshotRevertOnPool, mock.Anything, in).Return(driverDown("snapshot chain broken"))
	var fin activities.SnapshotRevertFinishInput
	env.OnActivity(snapAct.SnapshotRevertFinish, mock.Anything, mock.Anything).
		Return(func(_ context.Context, f activities.SnapshotRevertFinishInput) error { fin = f; return nil }).Once()
	env.ExecuteWorkflow(RevertSnapshot, in)
	if env.GetWorkflowError() == nil {
		t.Fatal("revert succeeded")
	}
	if !fin.Failed || fin.State != st {
		t.Fatalf("SnapshotRevertFinish got %+v", fin)
	}
}

func TestSnapshotTemplateCopyFailureRemovesTheTemplate(t *testing.T) {
	env, rec := volumeEnv(t)
	in := activities.SnapshotTemplateInput{TemplateUUID: "t-1", SnapshotUUID: "s-6"}
	env.OnActivity(snapAct.SnapshotTemplateCopy, mock.Anything, in).Return(int64(0), driverDown("store unreachable"))
	var fin activities.SnapshotTemplateFinishInput
	env.OnActivity(snapAct.SnapshotTemplateFinish, mock.Anything, mock.Anything).
		Return(func(_ context.Context, f activities.SnapshotTemplateFinishInput) error { fin = f; return nil }).Once()
	env.ExecuteWorkflow(CreateTemplateFromVolume, in)
	if env.GetWorkflowError() == nil {
		t.Fatal("createTemplate succeeded")
	}
	if !fin.Failed || fin.TemplateUUID != "t-1" || fin.Reason != "store unreachable" {
		t.Fatalf("finish got %+v", fin)
	}
	if rec.ran(snapAct.SnapshotTemplateFinish) != 1 {
		t.Fatal("finish ran more than once")
	}
}

func TestSnapshotPolicyRunTakesASnapshotThenDeletesTheOldest(t *testing.T) {
	env, rec := volumeEnv(t)
	in := activities.SnapshotPolicyRunInput{PolicyUUID: "pol-1"}
	actor := activities.Actor{AccountID: 5, DomainID: 2}
	env.OnActivity(snapAct.SnapshotPolicyPrepare, mock.Anything, in).Return(activities.SnapshotPolicyRunState{SnapshotUUID: "new", Actor: actor}, nil)
	snap := activities.SnapshotInput{SnapshotUUID: "new", Actor: actor}
	env.OnActivity(snapAct.SnapshotBegin, mock.Anything, snap).Return(activities.SnapshotBeginResult{}, nil)
	env.OnActivity(snapAct.SnapshotOnPrimary, mock.Anything, snap).Return(nil)
	env.OnActivity(snapAct.SnapshotBackup, mock.Anything, snap).Return(nil)
	env.OnActivity(snapAct.SnapshotFinish, mock.Anything, snap).Return(nil)
	env.OnActivity(snapAct.SnapshotPolicyPrune, mock.Anything, in).Return([]string{"old1", "old2"}, nil)
	var deleted []string
	env.OnActivity(snapAct.SnapshotDeleteBegin, mock.Anything, mock.Anything).
		Return(func(_ context.Context, s activities.SnapshotInput) (activities.SnapshotBeginResult, error) {
			deleted = append(deleted, s.SnapshotUUID)
			return activities.SnapshotBeginResult{}, nil
		})
	env.OnActivity(snapAct.SnapshotDeleteData, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(snapAct.SnapshotDeleteFinish, mock.Anything, mock.Anything).Return(nil)
	env.ExecuteWorkflow(SnapshotPolicyRun, in)
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	var res SnapshotPolicyRunResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.SnapshotUUID != "new" || !slices.Equal(res.Deleted, []string{"old1", "old2"}) || !slices.Equal(deleted, []string{"old1", "old2"}) {
		t.Fatalf("result %+v, deleted %v", res, deleted)
	}
	// A policy run is no job: no async_jobs row is touched.
	rec.notRun(t, jobsAct.JobStart, jobsAct.JobComplete, snapAct.SnapshotUndo)
}

func TestSnapshotPolicyRunSkipsWhenTheVolumeIsBusy(t *testing.T) {
	env, rec := volumeEnv(t)
	in := activities.SnapshotPolicyRunInput{PolicyUUID: "pol-2"}
	env.OnActivity(snapAct.SnapshotPolicyPrepare, mock.Anything, in).Return(activities.SnapshotPolicyRunState{Skip: "Volume v is Migrating"}, nil)
	env.ExecuteWorkflow(SnapshotPolicyRun, in)
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	var res SnapshotPolicyRunResult
	_ = env.GetWorkflowResult(&res)
	if res.Skipped == "" {
		t.Fatalf("result %+v, want skipped", res)
	}
	rec.notRun(t, snapAct.SnapshotBegin, snapAct.SnapshotPolicyPrune)
}

func TestSnapshotCalendar(t *testing.T) {
	type want struct {
		minute, hour, dow, dom int // -1: not set (every)
	}
	tests := map[string]struct {
		interval, schedule string
		want               *want // nil: refused
	}{
		"hourly":             {"HOURLY", "15", &want{15, -1, -1, -1}},
		"daily":              {"daily", "30:02", &want{30, 2, -1, -1}},
		"weekly sunday":      {"WEEKLY", "00:04:1", &want{0, 4, 0, -1}},
		"weekly saturday":    {"WEEKLY", "05:23:7", &want{5, 23, 6, -1}},
		"monthly":            {"MONTHLY", "10:01:28", &want{10, 1, -1, 28}},
		"hourly with hour":   {"HOURLY", "15:02", nil},
		"daily bad hour":     {"DAILY", "00:24", nil},
		"bad minute":         {"HOURLY", "60", nil},
		"weekly day 0":       {"WEEKLY", "00:04:0", nil},
		"monthly day 29":     {"MONTHLY", "00:04:29", nil},
		"unknown interval":   {"YEARLY", "00:00:01", nil},
		"not a number":       {"DAILY", "aa:bb", nil},
		"monthly missing dd": {"MONTHLY", "00:04", nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cal, err := SnapshotCalendar(tc.interval, tc.schedule)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("accepted: %+v", cal)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cal.Minute[0].Start != tc.want.minute {
				t.Errorf("minute %+v", cal.Minute)
			}
			if tc.want.hour < 0 {
				if cal.Hour[0].Start != 0 || cal.Hour[0].End != 23 {
					t.Errorf("hour %+v, want every hour", cal.Hour)
				}
			} else if cal.Hour[0].Start != tc.want.hour || cal.Hour[0].End != 0 {
				t.Errorf("hour %+v", cal.Hour)
			}
			if (tc.want.dow < 0) != (len(cal.DayOfWeek) == 0) || (tc.want.dow >= 0 && cal.DayOfWeek[0].Start != tc.want.dow) {
				t.Errorf("day of week %+v", cal.DayOfWeek)
			}
			if (tc.want.dom < 0) != (len(cal.DayOfMonth) == 0) || (tc.want.dom >= 0 && cal.DayOfMonth[0].Start != tc.want.dom) {
				t.Errorf("day of month %+v", cal.DayOfMonth)
			}
		})
	}
}

func TestSnapshotPolicyScheduleRule(t *testing.T) {
	opts, err := SnapshotPolicySchedule(SnapshotPolicySpec{PolicyUUID: "0b6c2f7e-0000-4000-8000-000000000001", VolumeUUID: "v",
		IntervalType: "DAILY", Schedule: "30:02", Timezone: "Europe/Paris", MaxSnaps: 3}, "q")
	if err != nil {
		t.Fatal(err)
	}
	if opts.ID != "nimbus-snappolicy-0b6c2f7e-0000-4000-8000-000000000001" || opts.Spec.TimeZoneName != "Europe/Paris" {
		t.Fatalf("schedule %+v", opts)
	}
	if SnapshotIntervalNumber("weekly") != 2 || SnapshotIntervalNumber("x") != -1 {
		t.Fatal("interval numbers")
	}
}
