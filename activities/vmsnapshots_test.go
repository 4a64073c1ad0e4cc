package activities_test

import (
	"testing"
	"time"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

func TestVMSnapshotRules(t *testing.T) {
	vm := func(state, hv string, host, last int64) *models.VMInstance {
		return &models.VMInstance{Name: "web", State: state, HypervisorType: hv, HostID: host, LastHostID: last}
	}
	create := map[string]struct {
		vm     *models.VMInstance
		memory bool
		code   int
	}{
		"running disk":             {vm(models.VMRunning, "KVM", 1, 0), false, 0},
		"running memory":           {vm(models.VMRunning, "VMware", 1, 0), true, 0},
		"stopped disk":             {vm(models.VMStopped, "KVM", 0, 1), false, 0},
		"stopped memory":           {vm(models.VMStopped, "KVM", 0, 1), true, cserr.ParamError},
		"stopped never ran":        {vm(models.VMStopped, "KVM", 0, 0), false, cserr.ParamError},
		"starting":                 {vm(models.VMStarting, "KVM", 1, 0), false, cserr.ParamError},
		"migrating":                {vm(models.VMMigrating, "KVM", 1, 0), false, cserr.ParamError},
		"destroyed":                {vm(models.VMDestroyed, "KVM", 0, 1), false, cserr.ParamError},
		"error":                    {vm(models.VMError, "KVM", 0, 0), false, cserr.ParamError},
		"baremetal":                {vm(models.VMRunning, models.HypervisorBareMetal, 1, 0), false, cserr.UnsupportedAction},
		"stopped memory vmware":    {vm(models.VMStopped, "VMware", 0, 1), true, cserr.ParamError},
		"running memory simulator": {vm(models.VMRunning, "Simulator", 1, 0), true, 0},
	}
	for name, tc := range create {
		if got := cserr.Code(activities.CheckVMSnapshotCreate(tc.vm, tc.memory)); got != tc.code {
			t.Errorf("create %s: code %d, want %d", name, got, tc.code)
		}
	}
	snap := func(state, typ string) *models.VMSnapshot {
		return &models.VMSnapshot{DisplayName: "s", State: state, Type: typ}
	}
	revert := map[string]struct {
		vm   *models.VMInstance
		s    *models.VMSnapshot
		code int
		ends string
	}{
		"running to disk":    {vm(models.VMRunning, "KVM", 1, 0), snap(models.VMSnapshotReady, models.VMSnapshotDisk), 0, models.VMStopped},
		"running to memory":  {vm(models.VMRunning, "KVM", 1, 0), snap(models.VMSnapshotReady, models.VMSnapshotDiskAndMemory), 0, models.VMRunning},
		"stopped to disk":    {vm(models.VMStopped, "KVM", 0, 1), snap(models.VMSnapshotReady, models.VMSnapshotDisk), 0, models.VMStopped},
		"stopped to memory":  {vm(models.VMStopped, "KVM", 0, 1), snap(models.VMSnapshotReady, models.VMSnapshotDiskAndMemory), 0, models.VMRunning}, // started first
		"snapshot not ready": {vm(models.VMRunning, "KVM", 1, 0), snap(models.VMSnapshotCreating, models.VMSnapshotDisk), cserr.ParamError, models.VMStopped},
		"snapshot in error":  {vm(models.VMRunning, "KVM", 1, 0), snap(models.VMSnapshotError, models.VMSnapshotDisk), cserr.ParamError, models.VMStopped},
		"vm in a transition": {vm(models.VMStopping, "KVM", 1, 0), snap(models.VMSnapshotReady, models.VMSnapshotDisk), cserr.ParamError, models.VMStopped},
	}
	for name, tc := range revert {
		if got := cserr.Code(activities.CheckVMSnapshotRevert(tc.vm, tc.s)); got != tc.code {
			t.Errorf("revert %s: code %d, want %d", name, got, tc.code)
		}
		if got := activities.VMSnapshotRevertState(tc.s); got != tc.ends {
			t.Errorf("revert %s: ends %s, want %s", name, got, tc.ends)
		}
	}
	for state, ok := range map[string]bool{models.VMSnapshotReady: true, models.VMSnapshotError: true, models.VMSnapshotExpunging: true,
		models.VMSnapshotAllocated: false, models.VMSnapshotCreating: false, models.VMSnapshotReverting: false} {
		if err := activities.CheckVMSnapshotDelete(snap(state, models.VMSnapshotDisk)); (err == nil) != ok {
			t.Errorf("delete of a %s snapshot: %v", state, err)
		}
	}
	if n := activities.VMSnapshotName("i-2-7-VM", time.Date(2026, 11, 27, 1, 2, 3, 0, time.UTC)); n != "i-2-7-VM_VS_20261127010203" {
		t.Errorf("VMSnapshotName = %s", n)
	}
}
