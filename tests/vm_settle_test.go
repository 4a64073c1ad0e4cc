package tests

import (
	"context"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"
	"go.temporal.io/sdk/client"

	"github.com/nimbus-cloud/nimbus/models"
)

// TestVMJobTerminatedSettles: an operator terminates a deploy in the
// Temporal UI while it waits on a slow host. queryAsyncJobResult reports
// the termination, and the VM does not stay in Starting: the repair path
// settles it from what the hypervisor says.
func TestVMJobTerminatedSettles(t *testing.T) {
	c := vmtSetup(t)
	s := c.s
	hostSim(t, s, "name", "StartVM", "count", "0", "latency", "8000")

	// A non-async SDK client returns the job id without waiting.
	cs := cloudstack.NewClient(s.APIURL, s.Admin.APIKey, s.Admin.SecretKey, false)
	p := cs.VirtualMachine.NewDeployVirtualMachineParams(models.ServiceOfferingSmallUUID, c.templateID, c.zoneID)
	p.SetName("terminated-vm")
	p.SetNetworkids([]string{c.networkID})
	dep, err := cs.VirtualMachine.DeployVirtualMachine(p)
	if err != nil || dep.JobID == "" {
		t.Fatalf("deploy: %v %+v", err, dep)
	}
	time.Sleep(2 * time.Second) // let it reach the slow StartVM

	tc, err := client.Dial(client.Options{HostPort: s.Temporal})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	ctx := context.Background()
	if err := tc.TerminateWorkflow(ctx, dep.JobID, "", "operator gave up"); err != nil {
		t.Fatalf("terminate: %v", err)
	}
	hostSim(t, s, "action", "clear")

	q, err := cs.Asyncjob.QueryAsyncJobResult(cs.Asyncjob.NewQueryAsyncJobResultParams(dep.JobID))
	if err != nil || q.Jobstatus != 2 {
		t.Fatalf("queryAsyncJobResult after terminate: %v %+v", err, q)
	}

	var state string
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		if vm := c.vm(t, s.Client, dep.Id); vm != nil {
			state = vm.State
			if state == "Running" || state == "Stopped" || state == "Error" {
				return
			}
		}
	}
	t.Fatalf("VM of the terminated job is still %q: nothing settled it", state)
}
