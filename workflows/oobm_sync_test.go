package workflows

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
)

// TestOOBMPowerSync: the sync pages through the hosts, reads each once
// with at most the pool size in flight, sums up what changed and failed,
// and continues as new after oobmSyncPages pages.
func TestOOBMPowerSync(t *testing.T) {
	tests := map[string]struct {
		hosts, pool int
		continued   bool
	}{
		"one short page":           {hosts: 3, pool: 50},
		"pages, a small pool":      {hosts: 250, pool: 7},
		"more than one run's hold": {hosts: oobmSyncPageSize*oobmSyncPages + 50, pool: 40, continued: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var ts testsuite.WorkflowTestSuite
			env := ts.NewTestWorkflowEnvironment()
			env.RegisterActivity(&activities.OOBM{})
			env.OnActivity(oobmAct.OOBMSyncHosts, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.OOBMSyncHostsInput) (activities.OOBMSyncPage, error) {
				out := activities.OOBMSyncPage{PoolSize: tc.pool}
				for id := in.AfterID + 1; id <= int64(tc.hosts) && len(out.Hosts) < in.Limit; id++ {
					out.Hosts = append(out.Hosts, activities.OOBMSyncHost{ID: id, UUID: "h"})
				}
				out.More = len(out.Hosts) > 0 && out.Hosts[len(out.Hosts)-1].ID < int64(tc.hosts)
				return out, nil
			})
			var mu sync.Mutex
			inflight, most := 0, 0
			seen := map[int64]int{}
			env.OnActivity(oobmAct.OOBMSyncPower, mock.Anything, mock.Anything).Return(func(_ context.Context, h activities.OOBMSyncHost) (activities.OOBMSyncResult, error) {
				mu.Lock()
				inflight++
				most = max(most, inflight)
				seen[h.ID]++
				mu.Unlock()
				time.Sleep(time.Millisecond)
				mu.Lock()
				inflight--
				mu.Unlock()
				switch h.ID % 10 {
				case 0:
					return activities.OOBMSyncResult{PowerState: "Unknown", Changed: true, Failure: "auth-error"}, nil
				case 1:
					return activities.OOBMSyncResult{PowerState: "On", Changed: true}, nil
				case 2:
					return activities.OOBMSyncResult{}, errors.New("inventory down")
				}
				return activities.OOBMSyncResult{PowerState: "Off"}, nil
			})
			env.ExecuteWorkflow(OOBMPowerSync, OOBMPowerSyncInput{})
			if !env.IsWorkflowCompleted() {
				t.Fatal("workflow did not complete")
			}
			read := tc.hosts
			err := env.GetWorkflowError()
			if tc.continued {
				var can *workflow.ContinueAsNewError
				if !errors.As(err, &can) {
					t.Fatalf("want continue-as-new, got %v", err)
				}
				read = oobmSyncPageSize * oobmSyncPages
			} else {
				if err != nil {
					t.Fatal(err)
				}
				var res OOBMPowerSyncResult
				if err := env.GetWorkflowResult(&res); err != nil {
					t.Fatal(err)
				}
				errs := 0
				for id := 1; id <= tc.hosts; id++ {
					if id%10 == 2 {
						errs++
					}
				}
				if res.Errors != errs || res.Hosts != tc.hosts-errs || res.Failed != tc.hosts/10 {
					t.Errorf("result %+v for %d hosts", res, tc.hosts)
				}
			}
			if len(seen) != read {
				t.Errorf("%d hosts read, want %d", len(seen), read)
			}
			for id, n := range seen {
				// A failing read is tried twice (MaximumAttempts 2).
				if want := map[bool]int{true: 2, false: 1}[id%10 == 2]; n != want {
					t.Errorf("host %d read %d times, want %d", id, n, want)
				}
			}
			if most > tc.pool {
				t.Errorf("%d reads at once, pool size %d", most, tc.pool)
			}
		})
	}
}
