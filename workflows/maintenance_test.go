package workflows

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/models"
)

// TestReconcileActions: the inventory's state x the hypervisor's -> what
// the reconciler does.
func TestReconcileActions(t *testing.T) {
	tests := map[string]struct {
		vm   activities.MaintVM
		want string // action kind, "" for none
	}{
		"running both":                      {activities.MaintVM{State: models.VMRunning, OnHost: true, Power: "Running"}, ""},
		"running in DB, stopped on host":    {activities.MaintVM{State: models.VMRunning, OnHost: true, Power: "Stopped"}, activities.MaintMarkStopped},
		"running in DB, missing on host":    {activities.MaintVM{State: models.VMRunning, OnHost: true}, activities.MaintMarkStopped},
		"running in DB, paused on host":     {activities.MaintVM{State: models.VMRunning, OnHost: true, Power: "Paused"}, activities.MaintMarkStopped},
		"stopped in DB, running on host":    {activities.MaintVM{State: models.VMStopped, Power: "Running"}, activities.MaintMarkRunning},
		"stopped both":                      {activities.MaintVM{State: models.VMStopped, Power: "Stopped"}, ""},
		"no row, running on host":           {activities.MaintVM{Power: "Running"}, activities.MaintOrphan},
		"no row, stopped on host":           {activities.MaintVM{Power: "Stopped"}, activities.MaintOrphan},
		"running on another host in DB":     {activities.MaintVM{State: models.VMRunning, OnHost: false, Power: "Running"}, activities.MaintDrift},
		"running elsewhere, defined here":   {activities.MaintVM{State: models.VMRunning, OnHost: false, Power: "Stopped"}, ""},
		"destroyed in DB, running on host":  {activities.MaintVM{State: models.VMDestroyed, Power: "Running"}, activities.MaintDrift},
		"error in DB, running on host":      {activities.MaintVM{State: models.VMError, Power: "Running"}, activities.MaintDrift},
		"starting (its job acts)":           {activities.MaintVM{State: models.VMStarting, OnHost: true}, ""},
		"stopping (its job acts)":           {activities.MaintVM{State: models.VMStopping, OnHost: true, Power: "Running"}, ""},
		"migrating (its job acts)":          {activities.MaintVM{State: models.VMMigrating, OnHost: true, Power: "Running"}, ""},
		"expunging (its job acts)":          {activities.MaintVM{State: models.VMExpunging, OnHost: true}, ""},
		"destroyed in DB, defined stopped":  {activities.MaintVM{State: models.VMDestroyed, Power: "Stopped"}, ""},
		"stopped in DB, running, not known": {activities.MaintVM{State: models.VMStopped, Power: "Running", OnHost: false}, activities.MaintMarkRunning},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tc.vm.UUID, tc.vm.InstanceName = "u", "i-2-3-VM"
			got := ReconcileActions([]activities.MaintVM{tc.vm})
			kind := ""
			if len(got) > 1 {
				t.Fatalf("want one action at most, got %+v", got)
			}
			if len(got) == 1 {
				kind = got[0].Kind
			}
			if kind != tc.want {
				t.Fatalf("action %q, want %q", kind, tc.want)
			}
		})
	}
}

// maintSteps mocks the maintenance activities of one reconcile run.
type maintSteps struct {
	mu          sync.Mutex
	states      []activities.MaintHostStateInput
	applied     []activities.MaintApplyInput
	settled     []string
	poolApplied []activities.MaintPoolApplyInput
	// pools are the pools' scans (none by default).
	pools []activities.MaintPoolScan
}

func newReconcileEnv(t *testing.T, scans map[string]activities.MaintHostScan, stuck []string) (*testsuite.TestWorkflowEnvironment, *maintSteps) {
	t.Helper()
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestWorkflowEnvironment()
	env.RegisterActivity(&activities.Maintenance{})
	env.RegisterActivity(&activities.VMs{})
	s := &maintSteps{}
	var hosts []activities.MaintHost
	for _, id := range []string{"h1", "h2", "h3"} {
		if sc, ok := scans[id]; ok {
			hosts = append(hosts, sc.Host)
		}
	}
	env.OnActivity(maintAct.MaintReconcileHosts, mock.Anything, mock.Anything).Return(activities.MaintHostsPage{Hosts: hosts}, nil)
	env.OnActivity(maintAct.MaintScanHost, mock.Anything, mock.Anything).Return(func(_ context.Context, h activities.MaintHost) (activities.MaintHostScan, error) {
		sc, ok := scans[h.UUID]
		if !ok || sc.Reason == "scan fails" {
			return activities.MaintHostScan{}, errors.New("inventory unavailable")
		}
		return sc, nil
	})
	env.OnActivity(maintAct.MaintHostState, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.MaintHostStateInput) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.states = append(s.states, in)
		return nil
	})
	env.OnActivity(maintAct.MaintApply, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.MaintApplyInput) (activities.MaintApplyResult, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.applied = append(s.applied, in)
		return activities.MaintApplyResult{Repaired: len(in.Actions)}, nil
	})
	env.OnActivity(maintAct.MaintStuckVMs, mock.Anything, mock.Anything).Return(stuck, nil)
	env.OnActivity(maintAct.MaintReconcilePools, mock.Anything, mock.Anything).Return(func(context.Context, activities.MaintHostsInput) (activities.MaintPoolsPage, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		var page activities.MaintPoolsPage
		for _, p := range s.pools {
			page.Pools = append(page.Pools, p.Pool)
		}
		return page, nil
	})
	env.OnActivity(maintAct.MaintScanPool, mock.Anything, mock.Anything).Return(func(_ context.Context, p activities.MaintPool) (activities.MaintPoolScan, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, sc := range s.pools {
			if sc.Pool.UUID == p.UUID {
				return sc, nil
			}
		}
		return activities.MaintPoolScan{}, errors.New("no such pool")
	})
	env.OnActivity(maintAct.MaintPoolApply, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.MaintPoolApplyInput) (activities.MaintApplyResult, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.poolApplied = append(s.poolApplied, in)
		var r activities.MaintApplyResult
		for _, a := range in.Actions {
			if a.Kind == activities.MaintDiskDelete {
				r.Repaired++
			} else {
				r.Reported++
			}
		}
		return r, nil
	})
	env.OnActivity(vmAct.VMSettle, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.VMRefInput) (string, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.settled = append(s.settled, in.VMUUID)
		return models.VMStopped, nil
	})
	return env, s
}

// TestMaintReconcileDecisions: a silent host goes to Alert (not scanned
// further), an answering host is recorded and its drift applied, a host
// whose scan fails is left as it is, and VMs whose job ended are settled.
func TestMaintReconcileDecisions(t *testing.T) {
	h1 := activities.MaintHost{ID: 1, UUID: "h1", State: models.HostUp}
	h2 := activities.MaintHost{ID: 2, UUID: "h2", State: models.HostAlert, ByReconcile: true}
	h3 := activities.MaintHost{ID: 3, UUID: "h3", State: models.HostUp}
	scans := map[string]activities.MaintHostScan{
		"h1": {Host: h1, Reachable: false, Reason: "unreachable: host down"},
		"h2": {Host: h2, Reachable: true, VMs: []activities.MaintVM{
			{UUID: "v1", InstanceName: "i-1", State: models.VMRunning, OnHost: true, Power: "Stopped"},
			{UUID: "v2", InstanceName: "i-2", State: models.VMRunning, OnHost: true, Power: "Running"},
			{UUID: "", InstanceName: "stray", Power: "Running"},
		}},
		"h3": {Host: h3, Reason: "scan fails"},
	}
	env, s := newReconcileEnv(t, scans, []string{"v9"})
	env.ExecuteWorkflow(MaintReconcile, MaintReconcileInput{})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	var res MaintReconcileResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Hosts != 3 || !reflect.DeepEqual(res.Unreachable, []string{"h1"}) || res.Repaired != 2 || !reflect.DeepEqual(res.Settled, []string{"v9"}) {
		t.Fatalf("result %+v", res)
	}
	if len(s.states) != 2 || s.states[0].Host.UUID != "h1" || s.states[0].Reachable || s.states[0].Reason == "" ||
		s.states[1].Host.UUID != "h2" || !s.states[1].Reachable {
		t.Fatalf("host states %+v", s.states)
	}
	if len(s.applied) != 1 || s.applied[0].Host.UUID != "h2" {
		t.Fatalf("applied %+v", s.applied)
	}
	var kinds []string
	for _, a := range s.applied[0].Actions {
		kinds = append(kinds, a.Kind+":"+a.VM.InstanceName)
	}
	if want := []string{"mark-stopped:i-1", "orphan:stray"}; !reflect.DeepEqual(kinds, want) {
		t.Fatalf("actions %v, want %v", kinds, want)
	}
}

// TestMaintExpungeChildren: each due VM is expunged by its own child
// workflow; one recovered meanwhile (begin false) is not counted, and a
// failed one is reported without stopping the rest.
func TestMaintExpungeChildren(t *testing.T) {
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestWorkflowEnvironment()
	env.RegisterActivity(&activities.Maintenance{})
	env.RegisterActivity(&activities.VMs{})
	env.RegisterWorkflow(MaintExpungeVM)
	env.OnActivity(maintAct.MaintExpungeList, mock.Anything, mock.Anything).Return(activities.MaintExpungeDue{VMUUIDs: []string{"a", "b", "c"}}, nil)
	env.OnActivity(maintAct.MaintExpungeBegin, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.VMRefInput) (bool, error) {
		return in.VMUUID != "b", nil
	})
	var mu sync.Mutex
	var expunged []string
	env.OnActivity(vmAct.VMExpunge, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.VMExpungeInput) error {
		if in.VMUUID == "c" {
			return temporal.NewNonRetryableApplicationError("pool gone", "Invalid", nil)
		}
		mu.Lock()
		defer mu.Unlock()
		expunged = append(expunged, in.VMUUID)
		return nil
	})
	env.ExecuteWorkflow(MaintExpunge, MaintExpungeInput{})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	var res MaintExpungeResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res.Expunged, []string{"a"}) || !reflect.DeepEqual(res.Failed, []string{"c"}) || !reflect.DeepEqual(expunged, []string{"a"}) {
		t.Fatalf("result %+v, expunged %v", res, expunged)
	}
}

// TestDiskOrphanActions: an orphan disk is acted on from its second
// sighting: reported once, deleted only past a cleanup delay above 0.
func TestDiskOrphanActions(t *testing.T) {
	tests := map[string]struct {
		disk  activities.MaintDisk
		delay int64
		want  string
	}{
		"first sighting":                 {activities.MaintDisk{AgeSeconds: 0}, 0, ""},
		"first sighting, delay passed":   {activities.MaintDisk{AgeSeconds: 999}, 1, ""},
		"second sighting":                {activities.MaintDisk{Seen: true, AgeSeconds: 300}, 0, "report-disk"},
		"reported already":               {activities.MaintDisk{Seen: true, Reported: true, AgeSeconds: 600}, 0, ""},
		"delay not passed":               {activities.MaintDisk{Seen: true, Reported: true, AgeSeconds: 600}, 3600, ""},
		"delay passed":                   {activities.MaintDisk{Seen: true, Reported: true, AgeSeconds: 3600}, 3600, "delete-disk"},
		"delay passed, never reported":   {activities.MaintDisk{Seen: true, AgeSeconds: 7200}, 3600, "report-disk,delete-disk"},
		"report only (delay 0), forever": {activities.MaintDisk{Seen: true, Reported: true, AgeSeconds: 1 << 40}, 0, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tc.disk.Path = "d1"
			var kinds []string
			for _, a := range DiskOrphanActions(activities.MaintPoolScan{Orphans: []activities.MaintDisk{tc.disk}, CleanupDelay: tc.delay}) {
				kinds = append(kinds, a.Kind)
			}
			if got := strings.Join(kinds, ","); got != tc.want {
				t.Fatalf("actions %q, want %q", got, tc.want)
			}
		})
	}
}

// TestMaintReconcilePools: each reachable pool's decided actions are
// applied; an unreachable pool is listed, a pool whose scan fails skipped.
func TestMaintReconcilePools(t *testing.T) {
	env, s := newReconcileEnv(t, nil, nil)
	s.pools = []activities.MaintPoolScan{
		{Pool: activities.MaintPool{ID: 1, UUID: "p1"}, Reachable: true, Orphans: []activities.MaintDisk{
			{Path: "new", AgeSeconds: 0}, {Path: "old", Seen: true, AgeSeconds: 600}}},
		{Pool: activities.MaintPool{ID: 2, UUID: "p2"}, Reason: "unreachable"},
		{Pool: activities.MaintPool{ID: 3, UUID: "p3"}, Reachable: true, CleanupDelay: 60, Orphans: []activities.MaintDisk{
			{Path: "gone", Seen: true, Reported: true, AgeSeconds: 61}}},
	}
	env.ExecuteWorkflow(MaintReconcile, MaintReconcileInput{})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	var res MaintReconcileResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Pools != 3 || !reflect.DeepEqual(res.UnreachablePools, []string{"p2"}) || res.OrphanDisks != 1 || res.OrphanDisksGone != 1 {
		t.Fatalf("result %+v", res)
	}
	if len(s.poolApplied) != 2 || s.poolApplied[0].Pool.UUID != "p1" || len(s.poolApplied[0].Actions) != 1 ||
		s.poolApplied[0].Actions[0].Disk.Path != "old" || s.poolApplied[1].Actions[0].Kind != activities.MaintDiskDelete {
		t.Fatalf("applied %+v", s.poolApplied)
	}
}
