package workflows

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
)

// An OOBM job runs the one step of its operation and records the result
// the renderer shows; a refused power action ends the job with its code,
// tried once.
func TestOutOfBandManagementJobs(t *testing.T) {
	tests := map[string]struct {
		in       OutOfBandManagementInput
		step     any
		err      error
		wantCode int
		wantID   url.Values
	}{
		"power":          {in: OutOfBandManagementInput{Op: activities.OOBMOpPower, UUID: "h-1", Action: "ON", Timeout: 20 * time.Second}, step: oobmAct.OOBMPower, wantID: url.Values{"hostid": {"h-1"}, "action": {"ON"}}},
		"enable zone":    {in: OutOfBandManagementInput{Op: activities.OOBMOpEnable, Scope: "Zone", UUID: "z-1"}, step: oobmAct.OOBMSetEnabled, wantID: url.Values{"enabled": {"true"}}},
		"disable host":   {in: OutOfBandManagementInput{Op: activities.OOBMOpDisable, Scope: "Host", UUID: "h-1"}, step: oobmAct.OOBMSetEnabled, wantID: url.Values{"hostid": {"h-1"}, "enabled": {"false"}}},
		"password":       {in: OutOfBandManagementInput{Op: activities.OOBMOpPassword, UUID: "h-1", NewSealed: "x"}, step: oobmAct.OOBMChangePassword, wantID: url.Values{"hostid": {"h-1"}}},
		"refused":        {in: OutOfBandManagementInput{Op: activities.OOBMOpPower, UUID: "h-1", Action: "OFF"}, step: oobmAct.OOBMPower, err: refusal(cserr.InternalError, "Out-of-band management is disabled for the host's zone. Aborting Operation."), wantCode: cserr.InternalError},
		"wrong password": {in: OutOfBandManagementInput{Op: activities.OOBMOpPower, UUID: "h-1", Action: "STATUS"}, step: oobmAct.OOBMPower, err: refusal(cserr.InternalError, "failed due to authentication error"), wantCode: cserr.InternalError},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			env, rec := newJobEnv(t)
			env.RegisterActivity(&activities.OOBM{})
			env.RegisterWorkflow(OutOfBandManagement)
			env.OnActivity(oobmAct.OOBMPower, mock.Anything, mock.Anything).Return(func(context.Context, activities.OOBMInput) (activities.OOBMPowerResult, error) {
				return activities.OOBMPowerResult{PowerState: "On"}, tc.err
			})
			env.OnActivity(oobmAct.OOBMSetEnabled, mock.Anything, mock.Anything).Return(tc.err)
			env.OnActivity(oobmAct.OOBMChangePassword, mock.Anything, mock.Anything).Return(tc.err)
			env.ExecuteWorkflow(OutOfBandManagement, tc.in)
			if n := rec.ran(tc.step); n != 1 {
				t.Errorf("%s ran %d times, want once", activityName(tc.step), n)
			}
			got := rec.last()
			if tc.wantCode != 0 {
				if cserr.Code(env.GetWorkflowError()) != tc.wantCode || got.ErrorCode != tc.wantCode {
					t.Fatalf("job ended %+v, workflow error %v", got, env.GetWorkflowError())
				}
				return
			}
			if err := env.GetWorkflowError(); err != nil {
				t.Fatal(err)
			}
			if got.Outcome.ResultKey != "outofbandmanagement" || got.Outcome.ResultType != "OutOfBandManagement" || got.Outcome.ResultUUID != tc.wantID.Encode() {
				t.Errorf("outcome %+v, want id %s", got.Outcome, tc.wantID.Encode())
			}
		})
	}
}
