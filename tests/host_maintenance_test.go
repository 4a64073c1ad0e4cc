package tests

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/apache/cloudstack-go/v2/cloudstack"
)

// hmWhere maps each listed VM's name to the name of the host it runs on
// ("" when stopped), as an admin sees it.
func (c *vmtCloud) hmWhere(t *testing.T) map[string]string {
	t.Helper()
	r := vmtMust[*cloudstack.ListVirtualMachinesResponse](t, "listVirtualMachines")(c.cs.VirtualMachine.ListVirtualMachines(c.cs.VirtualMachine.NewListVirtualMachinesParams()))
	out := map[string]string{}
	for _, vm := range r.VirtualMachines {
		out[vm.Name] = vm.Hostname
		if vm.State != "Running" && vm.State != "Stopped" {
			t.Errorf("VM %s is %s, want Running or Stopped", vm.Name, vm.State)
		}
	}
	return out
}

// hmResourceState is a host's resource state as listHosts shows it.
func (c *vmtCloud) hmResourceState(t *testing.T, hostID string) string {
	t.Helper()
	p := c.cs.Host.NewListHostsParams()
	p.SetId(hostID)
	r := vmtMust[*cloudstack.ListHostsResponse](t, "listHosts")(c.cs.Host.ListHosts(p))
	if r.Count != 1 {
		t.Fatalf("listHosts id=%s: %d", hostID, r.Count)
	}
	return r.Hosts[0].Resourcestate
}

// hmAllocCheck checks each host's allocation equals the sum of the VMs
// the inventory has running there, and that no VM holds a reservation.
func (c *vmtCloud) hmAllocCheck(t *testing.T) {
	t.Helper()
	if n := nsCount(t, c.s.DB, "SELECT COUNT(*) FROM vm_instances WHERE removed IS NULL AND (reservation_id <> '' OR state IN ('Migrating', 'Starting', 'Stopping'))"); n != 0 {
		t.Errorf("%d VMs hold a reservation or are in a transitional state", n)
	}
	if n := nsCount(t, c.s.DB, `SELECT COUNT(*) FROM hosts h WHERE h.removed IS NULL AND h.cpu_allocated <>
		(SELECT COALESCE(SUM(v.cpu * v.speed), 0) FROM vm_instances v WHERE v.host_id = h.id AND v.removed IS NULL AND v.state NOT IN ('Stopped', 'Destroyed', 'Expunging', 'Error'))`); n != 0 {
		t.Errorf("%d hosts' allocated CPU differs from their VMs'", n)
	}
}

func (c *vmtCloud) hmDeployOn(t *testing.T, name, host string, set func(*cloudstack.DeployVirtualMachineParams)) *cloudstack.DeployVirtualMachineResponse {
	t.Helper()
	d, err := c.deploy(t, c.cs, name, func(p *cloudstack.DeployVirtualMachineParams) {
		p.SetHostid(c.hosts[host])
		if set != nil {
			set(p)
		}
	})
	if err != nil {
		t.Fatalf("deploy %s on %s: %v", name, host, err)
	}
	if d.Hostname != host || d.Hostid != c.hosts[host] {
		t.Fatalf("deploy %s with hostid %s landed on %s", name, host, d.Hostname)
	}
	return d
}

func TestHostMaintenanceEvacuates(t *testing.T) {
	c := vmtSetup(t)
	cs, db := c.cs, c.s.DB
	vmh1, vmh2 := c.hosts["vmh1"], c.hosts["vmh2"]

	// Admin deploys pinned to hosts: web1, web2 and a stopped VM on vmh1,
	// web3 on vmh2.
	c.hmDeployOn(t, "web1", "vmh1", nil)
	c.hmDeployOn(t, "web2", "vmh1", nil)
	c.hmDeployOn(t, "web3", "vmh2", nil)
	st := c.hmDeployOn(t, "stopped1", "vmh1", nil)
	vmtMust[*cloudstack.StopVirtualMachineResponse](t, "stop stopped1")(cs.VirtualMachine.StopVirtualMachine(cs.VirtualMachine.NewStopVirtualMachineParams(st.Id)))
	lastHost := func() int64 {
		return int64(nsCount(t, db, "SELECT COALESCE(last_host_id, 0) FROM vm_instances WHERE uuid = ?", st.Id))
	}
	stoppedLast := lastHost()

	// ---- every running VM is live-migrated away; the host ends in Maintenance ----
	pm, err := cs.Host.PrepareHostForMaintenance(cs.Host.NewPrepareHostForMaintenanceParams(vmh1))
	if err != nil || pm.Resourcestate != "Maintenance" {
		t.Fatalf("prepareHostForMaintenance vmh1: %v %+v", err, pm)
	}
	want := map[string]string{"web1": "vmh2", "web2": "vmh2", "web3": "vmh2", "stopped1": ""}
	if got := c.hmWhere(t); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after maintenance of vmh1 the VMs are on %v, want %v", got, want)
	}
	if lastHost() != stoppedLast || stoppedLast == 0 {
		t.Errorf("the stopped VM's last host changed from %d to %d", stoppedLast, lastHost())
	}
	if mhz, mem := c.hostAlloc(t, "vmh1"); mhz != 0 || mem != 0 {
		t.Errorf("vmh1 in maintenance still has %d MHz %d bytes allocated", mhz, mem)
	}
	if mhz, _ := c.hostAlloc(t, "vmh2"); mhz != 3*500 {
		t.Errorf("vmh2 has %d MHz allocated, want %d", mhz, 3*500)
	}
	c.hmAllocCheck(t)
	// Each move was a migrateVirtualMachine job of its own, listed, done.
	jobs := vmtMust[*cloudstack.ListAsyncJobsResponse](t, "listAsyncJobs")(cs.Asyncjob.ListAsyncJobs(cs.Asyncjob.NewListAsyncJobsParams()))
	migrations := 0
	for _, j := range jobs.AsyncJobs {
		if strings.HasSuffix(j.Cmd, "migrateVirtualMachine") {
			migrations++
			if j.Jobstatus != 1 || j.Jobinstancetype != "VirtualMachine" {
				t.Errorf("migration job %+v", j)
			}
		}
	}
	if migrations != 2 {
		t.Errorf("%d migrateVirtualMachine jobs listed, want 2", migrations)
	}
	if n := nsCount(t, db, "SELECT COUNT(*) FROM events WHERE type = 'VM.MIGRATE' AND level = 'INFO'"); n != 2 {
		t.Errorf("%d VM.MIGRATE events, want 2", n)
	}
	// A host in maintenance takes nothing new, and the stopped VM starts elsewhere.
	sr := vmtMust[*cloudstack.StartVirtualMachineResponse](t, "start stopped1")(cs.VirtualMachine.StartVirtualMachine(cs.VirtualMachine.NewStartVirtualMachineParams(st.Id)))
	if sr.Hostname != "vmh2" {
		t.Errorf("stopped1 started on %s while vmh1 is in maintenance", sr.Hostname)
	}
	vmtMust[*cloudstack.StopVirtualMachineResponse](t, "stop stopped1")(cs.VirtualMachine.StopVirtualMachine(cs.VirtualMachine.NewStopVirtualMachineParams(st.Id)))
	cm, err := cs.Host.CancelHostMaintenance(cs.Host.NewCancelHostMaintenanceParams(vmh1))
	if err != nil || cm.Resourcestate != "Enabled" {
		t.Fatalf("cancelHostMaintenance vmh1: %v %+v", err, cm)
	}

	// ---- a migration the hypervisor refuses: that VM stays, the host is ErrorInMaintenance ----
	hostSim(t, c.s, "name", "MigrateVM", "count", "1", "mode", "invalid", "message", "the target host refused the memory copy")
	_, err = cs.Host.PrepareHostForMaintenance(cs.Host.NewPrepareHostForMaintenanceParams(vmh2))
	hostWantErr(t, "prepareHostForMaintenance with a failing migration", err, 534, "1 of 3", "the target host refused the memory copy", "they run there still")
	if rs := c.hmResourceState(t, vmh2); rs != "ErrorInMaintenance" {
		t.Fatalf("vmh2 is %s after a failed evacuation, want ErrorInMaintenance", rs)
	}
	where := c.hmWhere(t)
	onH2 := []string{}
	for name, h := range where {
		if h == "vmh2" {
			onH2 = append(onH2, name)
		}
	}
	if len(onH2) != 1 || !strings.Contains(err.Error(), onH2[0]+" (") {
		t.Fatalf("VMs left on vmh2 %v; the error names: %v", onH2, err)
	}
	c.hmAllocCheck(t)
	if mhz, _ := c.hostAlloc(t, "vmh2"); mhz != 500 {
		t.Errorf("vmh2 has %d MHz allocated, want 500 (the VM that stayed)", mhz)
	}
	// cancelHostMaintenance works from ErrorInMaintenance.
	if cm, err := cs.Host.CancelHostMaintenance(cs.Host.NewCancelHostMaintenanceParams(vmh2)); err != nil || cm.Resourcestate != "Enabled" {
		t.Fatalf("cancelHostMaintenance from ErrorInMaintenance: %v %+v", err, cm)
	}

	// ---- VMs that cannot move (anti-affinity, no room): nothing moves ----
	ag := cs.AffinityGroup.NewCreateAffinityGroupParams("spread", "host anti-affinity")
	grp := vmtMust[*cloudstack.CreateAffinityGroupResponse](t, "createAffinityGroup")(cs.AffinityGroup.CreateAffinityGroup(ag))
	c.hmDeployOn(t, "aa1", "vmh1", func(p *cloudstack.DeployVirtualMachineParams) { p.SetAffinitygroupids([]string{grp.Id}) })
	c.hmDeployOn(t, "aa2", "vmh2", func(p *cloudstack.DeployVirtualMachineParams) { p.SetAffinitygroupids([]string{grp.Id}) })
	// Fill vmh1's memory to the last MiB.
	_, usedMem := c.hostAlloc(t, "vmh1")
	so := cs.ServiceOffering.NewCreateServiceOfferingParams("fills a host", "filler")
	so.SetCpunumber(1)
	so.SetCpuspeed(500)
	so.SetMemory(int((int64(vmtHostMiB)<<20 - usedMem) >> 20))
	filler := vmtMust[*cloudstack.CreateServiceOfferingResponse](t, "createServiceOffering")(cs.ServiceOffering.CreateServiceOffering(so))
	big := c.hmDeployOn(t, "big1", "vmh1", func(p *cloudstack.DeployVirtualMachineParams) { p.SetServiceofferingid(filler.Id) })
	before := c.hmWhere(t)
	_, err = cs.Host.PrepareHostForMaintenance(cs.Host.NewPrepareHostForMaintenanceParams(vmh2))
	hostWantErr(t, "prepareHostForMaintenance with VMs that cannot move", err, 533, "cannot be migrated off it, so none was",
		"aa2 (no other host of cluster vm-c1 can take it: anti-affinity group already on host: vmh1)", "not enough free memory: vmh1")
	if rs := c.hmResourceState(t, vmh2); rs != "ErrorInMaintenance" {
		t.Fatalf("vmh2 is %s, want ErrorInMaintenance", rs)
	}
	if got := c.hmWhere(t); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatalf("VMs moved although the evacuation was refused: %v, before %v", got, before)
	}
	c.hmAllocCheck(t)
	if cm, err := cs.Host.CancelHostMaintenance(cs.Host.NewCancelHostMaintenanceParams(vmh2)); err != nil || cm.Resourcestate != "Enabled" {
		t.Fatalf("cancelHostMaintenance: %v %+v", err, cm)
	}

	// ---- once room is made, the same host evacuates ----
	for _, id := range []string{big.Id, c.vmID(t, "aa1")} {
		dp := cs.VirtualMachine.NewDestroyVirtualMachineParams(id)
		dp.SetExpunge(true)
		vmtMust[*cloudstack.DestroyVirtualMachineResponse](t, "destroy")(cs.VirtualMachine.DestroyVirtualMachine(dp))
	}
	if pm, err := cs.Host.PrepareHostForMaintenance(cs.Host.NewPrepareHostForMaintenanceParams(vmh2)); err != nil || pm.Resourcestate != "Maintenance" {
		t.Fatalf("prepareHostForMaintenance vmh2 with room: %v %+v", err, pm)
	}
	var names []string
	for name, h := range c.hmWhere(t) {
		if h != "" && h != "vmh1" {
			names = append(names, name+"@"+h)
		}
	}
	sort.Strings(names)
	if len(names) != 0 {
		t.Fatalf("VMs still off vmh1: %v", names)
	}
	c.hmAllocCheck(t)
	if cm, err := cs.Host.CancelHostMaintenance(cs.Host.NewCancelHostMaintenanceParams(vmh2)); err != nil || cm.Resourcestate != "Enabled" {
		t.Fatalf("cancelHostMaintenance: %v %+v", err, cm)
	}

	// ---- a cluster of one host has nowhere to move its VMs ----
	c2 := vmtMust[*cloudstack.AddClusterResponse](t, "addCluster")(cs.Cluster.AddCluster(cs.Cluster.NewAddClusterParams("vm-c2", "CloudManaged", "Simulator", c.podID, c.zoneID))).Id
	h3 := vmtMust[*cloudstack.AddHostResponse](t, "addHost vmh3")(hostAdd(cs, c.zoneID, c.podID, c2, fmt.Sprintf("sim://vmh3?cpus=4&mhz=2000&memory=%d", vmtHostMiB)))
	c.hosts["vmh3"] = h3.Id
	sp := cs.Pool.NewCreateStoragePoolParams("vm-primary-2", "nfs://10.0.0.9/export/vm-primary-2", c.zoneID)
	sp.SetPodid(c.podID)
	sp.SetClusterid(c2)
	sp.SetCapacitybytes(100 << 30)
	vmtMust[*cloudstack.CreateStoragePoolResponse](t, "createStoragePool")(cs.Pool.CreateStoragePool(sp))
	c.hmDeployOn(t, "solo", "vmh3", nil)
	_, err = cs.Host.PrepareHostForMaintenance(cs.Host.NewPrepareHostForMaintenanceParams(h3.Id))
	hostWantErr(t, "prepareHostForMaintenance of the only host of a cluster", err, 533, "solo (cluster vm-c2 has no other host to take it)")
	if rs := c.hmResourceState(t, h3.Id); rs != "ErrorInMaintenance" {
		t.Fatalf("vmh3 is %s, want ErrorInMaintenance", rs)
	}
	if w := c.hmWhere(t)["solo"]; w != "vmh3" {
		t.Fatalf("solo is on %q", w)
	}
	if cm, err := cs.Host.CancelHostMaintenance(cs.Host.NewCancelHostMaintenanceParams(h3.Id)); err != nil || cm.Resourcestate != "Enabled" {
		t.Fatalf("cancelHostMaintenance vmh3: %v %+v", err, cm)
	}
	if n := nsCount(t, db, "SELECT COUNT(*) FROM events WHERE type = 'MAINT.PREPARE' AND level = 'ERROR'"); n != 3 {
		t.Errorf("%d MAINT.PREPARE ERROR events, want 3", n)
	}
}

// vmID finds a VM's id by name.
func (c *vmtCloud) vmID(t *testing.T, name string) string {
	t.Helper()
	p := c.cs.VirtualMachine.NewListVirtualMachinesParams()
	p.SetName(name)
	r := vmtMust[*cloudstack.ListVirtualMachinesResponse](t, "listVirtualMachines name")(c.cs.VirtualMachine.ListVirtualMachines(p))
	for _, vm := range r.VirtualMachines {
		if vm.Name == name {
			return vm.Id
		}
	}
	t.Fatalf("no VM named %s", name)
	return ""
}
