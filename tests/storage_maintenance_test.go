package tests

import (
	"fmt"
	"strings"
	"testing"

	"github.com/apache/cloudstack-go/v2/cloudstack"
)

// smStates maps each VM's name to its state.
func (c *vmtCloud) smStates(t *testing.T) map[string]string {
	t.Helper()
	r := vmtMust[*cloudstack.ListVirtualMachinesResponse](t, "listVirtualMachines")(c.cs.VirtualMachine.ListVirtualMachines(c.cs.VirtualMachine.NewListVirtualMachinesParams()))
	out := map[string]string{}
	for _, vm := range r.VirtualMachines {
		out[vm.Name] = vm.State
	}
	return out
}

func (c *vmtCloud) smPoolState(t *testing.T) string {
	t.Helper()
	p := c.cs.Pool.NewListStoragePoolsParams()
	p.SetId(c.poolID)
	r := vmtMust[*cloudstack.ListStoragePoolsResponse](t, "listStoragePools")(c.cs.Pool.ListStoragePools(p))
	if r.Count != 1 {
		t.Fatalf("listStoragePools id: %d", r.Count)
	}
	return r.StoragePools[0].State
}

func TestStoragePoolMaintenanceStopsAndRestartsVMs(t *testing.T) {
	c := vmtSetup(t)
	cs, db := c.cs, c.s.DB
	var ids = map[string]string{}
	for _, name := range []string{"web1", "web2", "off1"} {
		d, err := c.deploy(t, cs, name, nil)
		if err != nil {
			t.Fatalf("deploy %s: %v", name, err)
		}
		ids[name] = d.Id
	}
	vmtMust[*cloudstack.StopVirtualMachineResponse](t, "stop off1")(cs.VirtualMachine.StopVirtualMachine(cs.VirtualMachine.NewStopVirtualMachineParams(ids["off1"])))

	// ---- maintenance stops the running VMs using the pool, and says which ----
	em, err := cs.StoragePool.EnableStorageMaintenance(cs.StoragePool.NewEnableStorageMaintenanceParams(c.poolID))
	if err != nil || em.State != "Maintenance" {
		t.Fatalf("enableStorageMaintenance: %v %+v", err, em)
	}
	want := map[string]string{"web1": "Stopped", "web2": "Stopped", "off1": "Stopped"}
	if got := c.smStates(t); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the pool's maintenance the VMs are %v, want %v", got, want)
	}
	if n := nsCount(t, db, "SELECT COUNT(*) FROM events WHERE type = 'MAINT.PREPARE.PS' AND level = 'INFO' AND description LIKE ?", "%stopped the virtual machines using it: web1, web2"); n != 1 {
		t.Errorf("%d MAINT.PREPARE.PS events naming the stopped VMs, want 1", n)
	}
	jobs := vmtMust[*cloudstack.ListAsyncJobsResponse](t, "listAsyncJobs")(cs.Asyncjob.ListAsyncJobs(cs.Asyncjob.NewListAsyncJobsParams()))
	stops := 0
	for _, j := range jobs.AsyncJobs {
		if strings.HasSuffix(j.Cmd, "stopVirtualMachine") && (j.Jobinstanceid == ids["web1"] || j.Jobinstanceid == ids["web2"]) {
			stops++
			if j.Jobstatus != 1 {
				t.Errorf("stop job %+v", j)
			}
		}
	}
	if stops != 2 {
		t.Errorf("%d stopVirtualMachine jobs of the maintenance, want 2", stops)
	}
	if mhz, mem := c.used(t); mhz != 0 || mem != 0 {
		t.Errorf("capacity used with every VM stopped: %d MHz %d bytes", mhz, mem)
	}
	// Its VMs cannot start, and nothing new lands on it, until it is back.
	_, err = cs.VirtualMachine.StartVirtualMachine(cs.VirtualMachine.NewStartVirtualMachineParams(ids["off1"]))
	wantVMErr(t, "start a VM whose pool is in maintenance", err, 431, "vm-primary", "Maintenance", "cancel its maintenance first")
	_, err = c.deploy(t, cs, "new1", nil)
	wantVMErr(t, "deploy while the only pool is in maintenance", err, 533, "storage pools in maintenance or down")
	// The failed deploy left new1 in Error, as CloudStack does: it goes.
	dp := cs.VirtualMachine.NewDestroyVirtualMachineParams(c.vmID(t, "new1"))
	dp.SetExpunge(true)
	vmtMust[*cloudstack.DestroyVirtualMachineResponse](t, "destroy new1")(cs.VirtualMachine.DestroyVirtualMachine(dp))

	// ---- cancelling starts again the VMs the maintenance stopped, only those ----
	cm, err := cs.StoragePool.CancelStorageMaintenance(cs.StoragePool.NewCancelStorageMaintenanceParams(c.poolID))
	if err != nil || cm.State != "Up" {
		t.Fatalf("cancelStorageMaintenance: %v %+v", err, cm)
	}
	want = map[string]string{"web1": "Running", "web2": "Running", "off1": "Stopped"}
	if got := c.smStates(t); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after cancelling the VMs are %v, want %v", got, want)
	}
	if n := nsCount(t, db, "SELECT COUNT(*) FROM storage_pool_work"); n != 0 {
		t.Errorf("%d storage_pool_work rows left after cancelling", n)
	}
	if mhz, _ := c.used(t); mhz != 2*500 {
		t.Errorf("capacity used after the restarts: %d MHz, want %d", mhz, 2*500)
	}

	// ---- a VM that will not stop: ErrorInMaintenance naming it ----
	hostSim(t, c.s, "name", "StopVM", "count", "1", "mode", "invalid", "message", "the guest ignored the shutdown")
	_, err = cs.StoragePool.EnableStorageMaintenance(cs.StoragePool.NewEnableStorageMaintenanceParams(c.poolID))
	hostWantErr(t, "enableStorageMaintenance with a VM that will not stop", err, 534, "1 of 2", "the guest ignored the shutdown", "they run still")
	if st := c.smPoolState(t); st != "ErrorInMaintenance" {
		t.Fatalf("pool is %s, want ErrorInMaintenance", st)
	}
	states := c.smStates(t)
	running := ""
	for _, n := range []string{"web1", "web2"} {
		if states[n] == "Running" {
			running = n
		}
	}
	if running == "" || !strings.Contains(err.Error(), running+" (") || states["web1"] == states["web2"] {
		t.Fatalf("VMs %v; the error names: %v", states, err)
	}
	// Cancelling starts the VM that was stopped; the other ran all along.
	if cm, err := cs.StoragePool.CancelStorageMaintenance(cs.StoragePool.NewCancelStorageMaintenanceParams(c.poolID)); err != nil || cm.State != "Up" {
		t.Fatalf("cancelStorageMaintenance from ErrorInMaintenance: %v %+v", err, cm)
	}
	want = map[string]string{"web1": "Running", "web2": "Running", "off1": "Stopped"}
	if got := c.smStates(t); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after cancelling the failed maintenance the VMs are %v, want %v", got, want)
	}
	if n := nsCount(t, db, "SELECT COUNT(*) FROM events WHERE type = 'MAINT.CANCEL.PS' AND description LIKE 'Started again%'"); n != 2 {
		t.Errorf("%d events naming the VMs started again, want 2", n)
	}
	if _, err := cs.VirtualMachine.StartVirtualMachine(cs.VirtualMachine.NewStartVirtualMachineParams(ids["off1"])); err != nil {
		t.Fatalf("start off1 with its pool Up: %v", err)
	}
}
