package tests

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere/vcsim"
	"github.com/nimbus-cloud/nimbus/models"
)

// vmsCreate takes a VM snapshot through the API.
func vmsCreate(cs *cloudstack.CloudStackClient, vmID, name string, memory bool, set func(*cloudstack.CreateVMSnapshotParams)) (*cloudstack.CreateVMSnapshotResponse, error) {
	p := cs.Snapshot.NewCreateVMSnapshotParams(vmID)
	p.SetName(name)
	p.SetSnapshotmemory(memory)
	if set != nil {
		set(p)
	}
	return cs.Snapshot.CreateVMSnapshot(p)
}

// vmsList lists VM snapshots with filters.
func vmsList(t *testing.T, cs *cloudstack.CloudStackClient, set func(*cloudstack.ListVMSnapshotParams)) []*cloudstack.VMSnapshot {
	t.Helper()
	p := cs.Snapshot.NewListVMSnapshotParams()
	if set != nil {
		set(p)
	}
	r, err := cs.Snapshot.ListVMSnapshot(p)
	if err != nil {
		t.Fatalf("listVMSnapshot: %v", err)
	}
	if r.Count != len(r.VMSnapshot) {
		t.Fatalf("listVMSnapshot count %d for %d items", r.Count, len(r.VMSnapshot))
	}
	return r.VMSnapshot
}

func vmsOne(t *testing.T, cs *cloudstack.CloudStackClient, id string) *cloudstack.VMSnapshot {
	t.Helper()
	l := vmsList(t, cs, func(p *cloudstack.ListVMSnapshotParams) { p.SetVmsnapshotid(id) })
	if len(l) != 1 {
		t.Fatalf("listVMSnapshot vmsnapshotid=%s: %d", id, len(l))
	}
	return l[0]
}

// TestVMSnapshotsSimulator drives VM snapshots on the simulator through
// the API: create (disk, disk and memory, of a stopped VM), list filters,
// the snapshot tree, revert (Running or Stopped after), delete, the rules
// CloudStack applies, a failing hypervisor, and destroy taking them along.
func TestVMSnapshotsSimulator(t *testing.T) {
	c := vmtSetup(t)
	cs, db := c.cs, c.s.DB
	d := vmtMust[*cloudstack.DeployVirtualMachineResponse](t, "deploy")(c.deploy(t, cs, "snappy", nil))
	host := d.Hostname
	newVol := func(name string) string {
		cp := cs.Volume.NewCreateVolumeParams()
		cp.SetName(name)
		cp.SetZoneid(c.zoneID)
		cp.SetDiskofferingid(models.DiskOfferingSmallUUID)
		return vmtMust[*cloudstack.CreateVolumeResponse](t, "createVolume "+name)(cs.Volume.CreateVolume(cp)).Id
	}
	data1 := newVol("data1")
	vmtMust[*cloudstack.AttachVolumeResponse](t, "attachVolume")(cs.Volume.AttachVolume(cs.Volume.NewAttachVolumeParams(data1, d.Id)))

	// ---- create ----
	s1, err := vmsCreate(cs, d.Id, "before-upgrade", false, func(p *cloudstack.CreateVMSnapshotParams) { p.SetDescription("disks only") })
	if err != nil {
		t.Fatalf("createVMSnapshot: %v", err)
	}
	if s1.Id == "" || s1.State != "Ready" || s1.Type != "Disk" || !s1.Current || s1.Parent != "" || s1.Displayname != "before-upgrade" ||
		s1.Description != "disks only" || s1.Virtualmachineid != d.Id || s1.Virtualmachinename != "snappy" || s1.Hypervisor != "Simulator" ||
		s1.Zoneid != c.zoneID || s1.Zonename != "vm-zone" || s1.Account != "admin" || s1.Domainid == "" || s1.Created == "" ||
		s1.Name == "" || s1.Name == s1.Displayname {
		t.Fatalf("createVMSnapshot answered %+v", s1)
	}
	s2, err := vmsCreate(cs, d.Id, "with-memory", true, nil)
	if err != nil {
		t.Fatalf("createVMSnapshot snapshotmemory: %v", err)
	}
	if s2.State != "Ready" || s2.Type != "DiskAndMemory" || !s2.Current || s2.Parent != s1.Id || s2.ParentName != "before-upgrade" {
		t.Fatalf("second snapshot = %+v", s2)
	}
	if x := vmsOne(t, cs, s1.Id); x.Current {
		t.Errorf("the first snapshot is still current after the second: %+v", x)
	}
	if n := nsCount(t, db, "SELECT COUNT(*) FROM events WHERE type = 'VMSNAPSHOT.CREATE' AND resource_uuid IN (?, ?)", s1.Id, s2.Id); n != 2 {
		t.Errorf("%d VMSNAPSHOT.CREATE events, want 2", n)
	}

	// ---- list filters ----
	if l := vmsList(t, cs, func(p *cloudstack.ListVMSnapshotParams) { p.SetVirtualmachineid(d.Id) }); len(l) != 2 || l[0].Id != s1.Id || l[1].Id != s2.Id {
		t.Errorf("listVMSnapshot virtualmachineid: %+v", l)
	}
	if l := vmsList(t, cs, func(p *cloudstack.ListVMSnapshotParams) { p.SetName("with-memory") }); len(l) != 1 || l[0].Id != s2.Id {
		t.Errorf("listVMSnapshot name: %+v", l)
	}
	if l := vmsList(t, cs, func(p *cloudstack.ListVMSnapshotParams) { p.SetKeyword("DISKS ONLY") }); len(l) != 1 || l[0].Id != s1.Id {
		t.Errorf("listVMSnapshot keyword: %+v", l)
	}
	if l := vmsList(t, cs, func(p *cloudstack.ListVMSnapshotParams) { p.SetState("Ready") }); len(l) != 2 {
		t.Errorf("listVMSnapshot state=Ready: %d", len(l))
	}
	if l := vmsList(t, cs, func(p *cloudstack.ListVMSnapshotParams) { p.SetState("Error") }); len(l) != 0 {
		t.Errorf("listVMSnapshot state=Error: %d", len(l))
	}
	if l := vmsList(t, cs, func(p *cloudstack.ListVMSnapshotParams) { p.SetVmsnapshotids([]string{s1.Id, s2.Id}) }); len(l) != 2 {
		t.Errorf("listVMSnapshot vmsnapshotids: %d", len(l))
	}
	if _, err := cs.Resourcetags.CreateTags(cs.Resourcetags.NewCreateTagsParams([]string{s1.Id}, "VMSnapshot", map[string]string{"stage": "pre"})); err != nil {
		t.Fatalf("createTags on a VM snapshot: %v", err)
	}
	l := vmsList(t, cs, func(p *cloudstack.ListVMSnapshotParams) { p.SetTags(map[string]string{"stage": "pre"}) })
	if len(l) != 1 || l[0].Id != s1.Id || len(l[0].Tags) != 1 || l[0].Tags[0].Key != "stage" || l[0].Tags[0].Value != "pre" {
		t.Errorf("listVMSnapshot tags: %+v", l)
	}
	// Another account sees none of them and cannot snapshot the VM.
	u := catCreateUser(t, c.s, "vsuser")
	if l := vmsList(t, u.Client, func(p *cloudstack.ListVMSnapshotParams) { p.SetListall(true) }); len(l) != 0 {
		t.Errorf("another account lists %d VM snapshots", len(l))
	}
	_, err = vmsCreate(u.Client, d.Id, "theirs", false, nil)
	wantVMErr(t, "createVMSnapshot of another account's VM", err, 531, "permission")
	_, err = u.Client.Snapshot.DeleteVMSnapshot(u.Client.Snapshot.NewDeleteVMSnapshotParams(s1.Id))
	wantVMErr(t, "deleteVMSnapshot of another account's snapshot", err, 431, "Unable to find VM snapshot")

	// ---- rules ----
	_, err = vmsCreate(cs, d.Id, "quiet", false, func(p *cloudstack.CreateVMSnapshotParams) { p.SetQuiescevm(true) })
	wantVMErr(t, "quiescevm on the simulator", err, 432, "quiesc")
	_, err = vmsCreate(cs, "6b1e5a55-0000-4000-8000-000000000000", "nope", false, nil)
	wantVMErr(t, "createVMSnapshot of no VM", err, 431, "Unable to find virtual machine")
	_, err = cs.Snapshot.RevertToVMSnapshot(cs.Snapshot.NewRevertToVMSnapshotParams("6b1e5a55-0000-4000-8000-000000000000"))
	wantVMErr(t, "revert to no snapshot", err, 431, "Unable to find VM snapshot")
	var rootID string
	rootSize := int64(0)
	lv := cs.Volume.NewListVolumesParams()
	lv.SetVirtualmachineid(d.Id)
	for _, v := range vmtMust[*cloudstack.ListVolumesResponse](t, "listVolumes")(cs.Volume.ListVolumes(lv)).Volumes {
		if v.Type == "ROOT" {
			rootID, rootSize = v.Id, v.Size
		}
	}
	rp := cs.Volume.NewResizeVolumeParams(rootID)
	rp.SetSize(rootSize>>30 + 1)
	_, err = cs.Volume.ResizeVolume(rp)
	wantVMErr(t, "resize the root volume of a VM with VM snapshots", err, 431, "VM snapshots")
	_, err = cs.VirtualMachine.MigrateVirtualMachine(cs.VirtualMachine.NewMigrateVirtualMachineParams(d.Id))
	wantVMErr(t, "migrate a VM with VM snapshots", err, 431, "VM snapshots")
	// Host maintenance would have to migrate it: refused at once, naming
	// the VM, no job started, the host still Enabled.
	jobsBefore := nsCount(t, db, "SELECT COUNT(*) FROM async_jobs")
	_, err = cs.Host.PrepareHostForMaintenance(cs.Host.NewPrepareHostForMaintenanceParams(c.hosts[host]))
	wantVMErr(t, "maintenance of the host of a VM with VM snapshots", err, 431, "snappy", "VM snapshots", "Simulator cannot migrate")
	if rs := c.hmResourceState(t, c.hosts[host]); rs != "Enabled" {
		t.Errorf("host %s is %s after a refused prepareHostForMaintenance", host, rs)
	}
	if n := nsCount(t, db, "SELECT COUNT(*) FROM async_jobs"); n != jobsBefore {
		t.Errorf("a refused prepareHostForMaintenance started %d jobs", n-jobsBefore)
	}
	_, err = cs.Volume.DetachVolume(func() *cloudstack.DetachVolumeParams {
		p := cs.Volume.NewDetachVolumeParams()
		p.SetId(data1)
		return p
	}())
	wantVMErr(t, "detach a volume of a VM with VM snapshots", err, 431, "VM snapshots")
	_, err = cs.Volume.AttachVolume(cs.Volume.NewAttachVolumeParams(newVol("data2"), d.Id))
	wantVMErr(t, "attach a volume to a VM with VM snapshots", err, 431, "VM snapshots")

	// The hypervisor refuses: the job fails with its reason and leaves
	// no snapshot behind.
	hostSim(t, c.s, "name", "CreateVMSnapshot", "clusterid", c.clusterID, "count", "1", "mode", "invalid", "message", "disk busy")
	_, err = vmsCreate(cs, d.Id, "doomed", false, nil)
	wantVMErr(t, "createVMSnapshot with the hypervisor failing", err, 431, "disk busy")
	if l := vmsList(t, cs, func(p *cloudstack.ListVMSnapshotParams) { p.SetVirtualmachineid(d.Id) }); len(l) != 2 {
		t.Errorf("%d VM snapshots listed after a failed create, want 2", len(l))
	}
	if n := nsCount(t, db, "SELECT COUNT(*) FROM vm_snapshots WHERE display_name = 'doomed' AND state = 'Error' AND removed IS NOT NULL AND state_reason LIKE '%disk busy%'"); n != 1 {
		t.Errorf("the failed snapshot is not Error and removed with the reason")
	}
	if x := vmsOne(t, cs, s2.Id); !x.Current {
		t.Errorf("a failed create moved current away from %s", s2.Id)
	}

	// ---- revert ----
	// To a Disk snapshot: the VM ends Stopped (and gives its host back).
	usedMHz, _ := c.used(t)
	rv, err := cs.Snapshot.RevertToVMSnapshot(cs.Snapshot.NewRevertToVMSnapshotParams(s1.Id))
	if err != nil {
		t.Fatalf("revertToVMSnapshot disk: %v", err)
	}
	if rv.Id != d.Id || rv.State != "Stopped" {
		t.Fatalf("revert to a Disk snapshot answered the VM %s in %s, want Stopped", rv.Id, rv.State)
	}
	if x := vmsOne(t, cs, s1.Id); !x.Current || x.State != "Ready" {
		t.Errorf("reverted-to snapshot = %+v, want Ready and current", x)
	}
	if mhz, _ := c.used(t); mhz != usedMHz-500 {
		t.Errorf("capacity used after a revert that stopped the VM: %d MHz, want %d", mhz, usedMHz-500)
	}
	// To a DiskAndMemory snapshot a stopped VM is started on the host that
	// holds its snapshots (its capacity taken again) and runs from the
	// snapshot's memory, as CloudStack does.
	_, err = vmsCreate(cs, d.Id, "mem-of-stopped", true, nil)
	wantVMErr(t, "memory snapshot of a stopped VM", err, 431, "Running")
	rv, err = cs.Snapshot.RevertToVMSnapshot(cs.Snapshot.NewRevertToVMSnapshotParams(s2.Id))
	if err != nil || rv.State != "Running" || rv.Id != d.Id {
		t.Fatalf("revert a stopped VM to a DiskAndMemory snapshot: %v %+v", err, rv)
	}
	if rv.Hostname != host {
		t.Errorf("VM with VM snapshots reverted (started) on %s, not on %s which holds them", rv.Hostname, host)
	}
	if mhz, _ := c.used(t); mhz != usedMHz {
		t.Errorf("capacity used after a revert that started the VM: %d MHz, want %d", mhz, usedMHz)
	}
	if x := vmsOne(t, cs, s2.Id); !x.Current || x.State != "Ready" {
		t.Errorf("s2 = %+v after reverting to it, want Ready and current", x)
	}
	// A running VM reverts to it too, and stays Running.
	rv, err = cs.Snapshot.RevertToVMSnapshot(cs.Snapshot.NewRevertToVMSnapshotParams(s2.Id))
	if err != nil || rv.State != "Running" {
		t.Fatalf("revert to a DiskAndMemory snapshot: %v %+v", err, rv)
	}
	if n := nsCount(t, db, "SELECT COUNT(*) FROM events WHERE type = 'VMSNAPSHOT.REVERTTO' AND level = 'INFO'"); n != 3 {
		t.Errorf("%d VMSNAPSHOT.REVERTTO events, want 3", n)
	}

	// ---- delete ----
	// Deleting the current snapshot makes its parent current.
	del, err := cs.Snapshot.DeleteVMSnapshot(cs.Snapshot.NewDeleteVMSnapshotParams(s2.Id))
	if err != nil || !del.Success {
		t.Fatalf("deleteVMSnapshot: %v %+v", err, del)
	}
	if l := vmsList(t, cs, func(p *cloudstack.ListVMSnapshotParams) { p.SetVirtualmachineid(d.Id) }); len(l) != 1 || l[0].Id != s1.Id || !l[0].Current {
		t.Errorf("after deleting the current snapshot: %+v", l)
	}
	_, err = cs.Snapshot.DeleteVMSnapshot(cs.Snapshot.NewDeleteVMSnapshotParams(s2.Id))
	wantVMErr(t, "delete a deleted snapshot", err, 431, "Unable to find VM snapshot")

	// A stopped VM keeps its snapshots and takes new disk ones.
	vmtMust[*cloudstack.StopVirtualMachineResponse](t, "stop")(cs.VirtualMachine.StopVirtualMachine(cs.VirtualMachine.NewStopVirtualMachineParams(d.Id)))
	s3, err := vmsCreate(cs, d.Id, "stopped", false, nil)
	if err != nil || s3.State != "Ready" || s3.Parent != s1.Id {
		t.Fatalf("snapshot of a stopped VM: %v %+v", err, s3)
	}

	// A stopped VM without snapshots is defined on no host: its first
	// snapshot defines it on its last host, deleting the last one undoes that.
	d2 := vmtMust[*cloudstack.DeployVirtualMachineResponse](t, "deploy second")(c.deploy(t, cs, "snappy2", nil))
	vmtMust[*cloudstack.StopVirtualMachineResponse](t, "stop second")(cs.VirtualMachine.StopVirtualMachine(cs.VirtualMachine.NewStopVirtualMachineParams(d2.Id)))
	s4, err := vmsCreate(cs, d2.Id, "cold", false, nil)
	if err != nil || s4.State != "Ready" {
		t.Fatalf("first snapshot of a stopped VM: %v %+v", err, s4)
	}
	if _, err := cs.Snapshot.DeleteVMSnapshot(cs.Snapshot.NewDeleteVMSnapshotParams(s4.Id)); err != nil {
		t.Fatalf("delete the stopped VM's only snapshot: %v", err)
	}
	if r := vmtMust[*cloudstack.StartVirtualMachineResponse](t, "start second")(cs.VirtualMachine.StartVirtualMachine(cs.VirtualMachine.NewStartVirtualMachineParams(d2.Id))); r.State != "Running" {
		t.Fatalf("start after its snapshots went: %+v", r)
	}

	// A VM snapshot job holds its VM: a VM job meanwhile is refused at once.
	hostSim(t, c.s, "name", "CreateVMSnapshot", "clusterid", c.clusterID, "count", "0", "latency", "4000")
	code, body := signedGet(t, c.s.APIURL, c.s.Admin.APIKey, c.s.Admin.SecretKey,
		url.Values{"command": {"createVMSnapshot"}, "virtualmachineid": {d2.Id}, "name": {"slow"}})
	if code != 200 {
		t.Fatalf("createVMSnapshot (slow): HTTP %d %v", code, body)
	}
	jobID, _ := body["createvmsnapshotresponse"].(map[string]any)["jobid"].(string)
	_, err = cs.VirtualMachine.StopVirtualMachine(cs.VirtualMachine.NewStopVirtualMachineParams(d2.Id))
	wantVMErr(t, "stop a VM while its snapshot is taken", err, 431, "VM snapshot operation in progress")
	_, err = vmsCreate(cs, d2.Id, "second", false, nil)
	wantVMErr(t, "a second snapshot while one is taken", err, 431, "VM snapshot operation in progress")
	if _, err := cs.GetAsyncJobResult(jobID, 120); err != nil {
		t.Fatalf("the slow snapshot job: %v", err)
	}
	hostSim(t, c.s, "action", "clear")
	vmtMust[*cloudstack.StopVirtualMachineResponse](t, "stop after the snapshot")(cs.VirtualMachine.StopVirtualMachine(cs.VirtualMachine.NewStopVirtualMachineParams(d2.Id)))

	// ---- vmsnapshot.max is a global setting read at each create ----
	setMax := func(v string) {
		t.Helper()
		p := cs.Configuration.NewUpdateConfigurationParams("vmsnapshot.max")
		p.SetValue(v)
		if _, err := cs.Configuration.UpdateConfiguration(p); err != nil {
			t.Fatalf("updateConfiguration vmsnapshot.max=%s: %v", v, err)
		}
	}
	setMax("1") // snappy2 has one ("slow")
	_, err = vmsCreate(cs, d2.Id, "over-the-max", false, nil)
	wantVMErr(t, "a second VM snapshot with vmsnapshot.max=1", err, 431, "can just have : 1 VM snapshots", "snappy2")
	setMax("2")
	if s5, err := vmsCreate(cs, d2.Id, "within-the-max", false, nil); err != nil || s5.State != "Ready" {
		t.Fatalf("a second VM snapshot with vmsnapshot.max=2: %v %+v", err, s5)
	}
	setMax("10")

	// ---- destroy takes them along ----
	dp := cs.VirtualMachine.NewDestroyVirtualMachineParams(d.Id)
	dp.SetExpunge(true)
	vmtMust[*cloudstack.DestroyVirtualMachineResponse](t, "destroy")(cs.VirtualMachine.DestroyVirtualMachine(dp))
	if l := vmsList(t, cs, func(p *cloudstack.ListVMSnapshotParams) { p.SetVirtualmachineid(d.Id) }); len(l) != 0 {
		t.Errorf("%d VM snapshots listed after the VM was destroyed", len(l))
	}
	if n := nsCount(t, db, "SELECT COUNT(*) FROM vm_snapshots WHERE uuid IN (?, ?) AND removed IS NULL", s1.Id, s3.Id); n != 0 {
		t.Errorf("%d VM snapshot rows of the destroyed VM not removed", n)
	}
}

// vmsVCenterTree reads a VM's snapshot tree from the simulated vCenter:
// the snapshot names (Nimbus names them by snapshot id), parents first, the
// current one, and the VM's power state; exists is false without the VM.
func vmsVCenterTree(t *testing.T, sim *vcsim.Sim, vmID string) (names []string, current string, power types.VirtualMachinePowerState, exists bool) {
	t.Helper()
	ctx := context.Background()
	c, err := sim.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Logout(ctx) }()
	dc, err := object.NewSearchIndex(c.Client).FindByInventoryPath(ctx, "/DC0")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := object.NewSearchIndex(c.Client).FindByUuid(ctx, dc.(*object.Datacenter), vmID, true, types.NewBool(true))
	if err != nil {
		t.Fatal(err)
	}
	if ref == nil {
		return nil, "", "", false
	}
	var vm mo.VirtualMachine
	if err := property.DefaultCollector(c.Client).RetrieveOne(ctx, ref.Reference(), []string{"snapshot", "runtime.powerState"}, &vm); err != nil {
		t.Fatal(err)
	}
	if vm.Snapshot == nil {
		return nil, "", vm.Runtime.PowerState, true
	}
	var walk func([]types.VirtualMachineSnapshotTree)
	walk = func(l []types.VirtualMachineSnapshotTree) {
		for _, n := range l {
			names = append(names, n.Name)
			if vm.Snapshot.CurrentSnapshot != nil && *vm.Snapshot.CurrentSnapshot == n.Snapshot {
				current = n.Name
			}
			walk(n.ChildSnapshotList)
		}
	}
	walk(vm.Snapshot.RootSnapshotList)
	return names, current, vm.Runtime.PowerState, true
}

// TestVMSnapshotsVSphere takes, reverts to and deletes VM snapshots of a VM
// on the vCenter simulator through the API and checks vCenter's own
// snapshot tree and power state each time.
func TestVMSnapshotsVSphere(t *testing.T) {
	c := vsSetup(t)
	cs, sim := c.cs, c.sim
	dp := cs.VirtualMachine.NewDeployVirtualMachineParams(models.ServiceOfferingSmallUUID, c.tpl, c.zone)
	dp.SetName("vs-snap")
	dp.SetNetworkids([]string{c.nw})
	dep := vmtMust[*cloudstack.DeployVirtualMachineResponse](t, "deploy")(cs.VirtualMachine.DeployVirtualMachine(dp))

	s1, err := vmsCreate(cs, dep.Id, "disk-only", false, nil)
	if err != nil || s1.State != "Ready" || s1.Type != "Disk" || s1.Hypervisor != "VMware" {
		t.Fatalf("createVMSnapshot: %v %+v", err, s1)
	}
	s2, err := vmsCreate(cs, dep.Id, "with-memory", true, func(p *cloudstack.CreateVMSnapshotParams) { p.SetQuiescevm(true) })
	if err != nil || s2.Type != "DiskAndMemory" || s2.Parent != s1.Id || !s2.Current {
		t.Fatalf("createVMSnapshot with memory: %v %+v", err, s2)
	}
	if names, cur, _, _ := vmsVCenterTree(t, sim, dep.Id); !slices.Equal(names, []string{s1.Id, s2.Id}) || cur != s2.Id {
		t.Fatalf("vCenter's snapshot tree = %v (current %s), want [%s %s]", names, cur, s1.Id, s2.Id)
	}

	// Revert to the disk-only snapshot: Stopped, and still in vCenter with
	// its snapshots (stopped VMs are otherwise removed from vCenter).
	rv, err := cs.Snapshot.RevertToVMSnapshot(cs.Snapshot.NewRevertToVMSnapshotParams(s1.Id))
	if err != nil || rv.State != "Stopped" {
		t.Fatalf("revert to the disk snapshot: %v %+v", err, rv)
	}
	if names, cur, power, ok := vmsVCenterTree(t, sim, dep.Id); !ok || len(names) != 2 || cur != s1.Id || power != types.VirtualMachinePowerStatePoweredOff {
		t.Fatalf("vCenter after the revert: exists %v tree %v current %s power %s", ok, names, cur, power)
	}
	st := vmtMust[*cloudstack.StartVirtualMachineResponse](t, "start")(cs.VirtualMachine.StartVirtualMachine(cs.VirtualMachine.NewStartVirtualMachineParams(dep.Id)))
	if st.Hostname != dep.Hostname {
		t.Errorf("started on %s, not on %s where its snapshots are", st.Hostname, dep.Hostname)
	}
	rv, err = cs.Snapshot.RevertToVMSnapshot(cs.Snapshot.NewRevertToVMSnapshotParams(s2.Id))
	if err != nil || rv.State != "Running" {
		t.Fatalf("revert to the memory snapshot: %v %+v", err, rv)
	}
	if _, cur, power, _ := vmsVCenterTree(t, sim, dep.Id); cur != s2.Id || power != types.VirtualMachinePowerStatePoweredOn {
		t.Fatalf("vCenter after reverting to memory: current %s power %s", cur, power)
	}

	// Delete: gone from vCenter's tree.
	if _, err := cs.Snapshot.DeleteVMSnapshot(cs.Snapshot.NewDeleteVMSnapshotParams(s1.Id)); err != nil {
		t.Fatalf("deleteVMSnapshot: %v", err)
	}
	if names, _, _, _ := vmsVCenterTree(t, sim, dep.Id); !slices.Equal(names, []string{s2.Id}) {
		t.Fatalf("vCenter's tree after deleting %s = %v", s1.Id, names)
	}
	if _, err := cs.Snapshot.DeleteVMSnapshot(cs.Snapshot.NewDeleteVMSnapshotParams(s2.Id)); err != nil {
		t.Fatalf("deleteVMSnapshot: %v", err)
	}
	if names, _, _, _ := vmsVCenterTree(t, sim, dep.Id); len(names) != 0 {
		t.Fatalf("vCenter's tree after deleting both = %v", names)
	}

	// Destroy with a snapshot left: the VM and its snapshots leave vCenter.
	if _, err := vmsCreate(cs, dep.Id, "last", false, nil); err != nil {
		t.Fatalf("createVMSnapshot: %v", err)
	}
	dd := cs.VirtualMachine.NewDestroyVirtualMachineParams(dep.Id)
	dd.SetExpunge(true)
	vmtMust[*cloudstack.DestroyVirtualMachineResponse](t, "destroy")(cs.VirtualMachine.DestroyVirtualMachine(dd))
	if _, _, _, ok := vmsVCenterTree(t, sim, dep.Id); ok {
		t.Fatalf("the destroyed VM is still in vCenter")
	}
	if l := vmsList(t, cs, func(p *cloudstack.ListVMSnapshotParams) { p.SetVirtualmachineid(dep.Id) }); len(l) != 0 {
		t.Fatalf("%d VM snapshots listed after destroy", len(l))
	}
}

// kvmRootFile is the source of a domain's first disk (virsh domblklist):
// a file, or a volume of a pool.
func kvmRootFile(t *testing.T, name string) string {
	t.Helper()
	out, err := kvmVirsh(t, "domblklist", name)
	if err != nil {
		t.Fatalf("virsh domblklist %s: %v: %s", name, err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "vda" {
			return f[1]
		}
	}
	t.Fatalf("no vda in virsh domblklist %s:\n%s", name, out)
	return ""
}

// kvmQemuIO runs qemu-io on a stopped domain's qcow2 disk and tells whether
// the command (a write, or a read checking a pattern) succeeded.
func kvmQemuIO(file, cmd string) bool {
	out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", cmd, file).CombinedOutput()
	return err == nil && !strings.Contains(string(out), "failed")
}

// TestVMSnapshotsKVM takes VM snapshots of a real TCG guest through the API:
// virsh lists them, reverting returns the guest to them (running on from
// a memory snapshot without a new boot; a disk snapshot brings the disk's
// data back and leaves the VM Stopped but defined), deleting removes them,
// destroying the VM takes the rest.
func TestVMSnapshotsKVM(t *testing.T) {
	c := kvmSetup(t)
	cs := c.cs
	dep, err := c.deploy(t, "kvm-snap")
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	name := dep.Instancename
	t.Cleanup(func() {
		// A domain with snapshots is undefined only with their metadata.
		lv := os.Getenv("NIMBUS_TEST_LIBVIRT")
		_ = exec.Command("virsh", "-c", lv, "destroy", dep.Id).Run()
		_ = exec.Command("virsh", "-c", lv, "undefine", dep.Id, "--snapshots-metadata", "--nvram").Run()
	})
	kvmWaitBoot(t, name, "kvm-snap", dep.Id, 0, 2*time.Minute)

	s1, err := vmsCreate(cs, dep.Id, "booted", true, nil)
	if err != nil || s1.State != "Ready" || s1.Type != "DiskAndMemory" || s1.Hypervisor != "KVM" {
		t.Fatalf("createVMSnapshot with memory: %v %+v", err, s1)
	}
	s2, err := vmsCreate(cs, dep.Id, "disks", false, nil)
	if err != nil || s2.Type != "Disk" || s2.Parent != s1.Id {
		t.Fatalf("createVMSnapshot disk: %v %+v", err, s2)
	}
	if out, err := kvmVirsh(t, "snapshot-list", name, "--name"); err != nil || !strings.Contains(out, s1.Id) || !strings.Contains(out, s2.Id) {
		t.Fatalf("virsh snapshot-list %s: %v\n%s", name, err, out)
	}
	_, err = vmsCreate(cs, dep.Id, "quiet", false, func(p *cloudstack.CreateVMSnapshotParams) { p.SetQuiescevm(true) })
	wantVMErr(t, "quiescevm on KVM", err, 432, "quiesc")

	// Memory: the guest runs on from the snapshot, it does not boot again.
	boots := kvmBoots(name, "kvm-snap", dep.Id)
	rv, err := cs.Snapshot.RevertToVMSnapshot(cs.Snapshot.NewRevertToVMSnapshotParams(s1.Id))
	if err != nil || rv.State != "Running" {
		t.Fatalf("revert to the memory snapshot: %v %+v", err, rv)
	}
	if st := kvmDomState(t, name); st != "running" {
		t.Fatalf("domain after a memory revert: %s", st)
	}
	if out, _ := kvmVirsh(t, "snapshot-current", name, "--name"); strings.TrimSpace(out) != s1.Id {
		t.Fatalf("virsh snapshot-current = %q, want %s", out, s1.Id)
	}
	time.Sleep(2 * time.Second)
	if n := kvmBoots(name, "kvm-snap", dep.Id); n != boots {
		t.Fatalf("the guest booted again after the memory revert (%d boots, was %d)", n, boots)
	}

	// Disk: Stopped, the domain still defined with its snapshots.
	rv, err = cs.Snapshot.RevertToVMSnapshot(cs.Snapshot.NewRevertToVMSnapshotParams(s2.Id))
	if err != nil || rv.State != "Stopped" {
		t.Fatalf("revert to the disk snapshot: %v %+v", err, rv)
	}
	if st := kvmDomState(t, name); st != "shut off" {
		t.Fatalf("domain after a disk revert: %s", st)
	}
	// Data written after the snapshot is gone after reverting to it.
	root := kvmRootFile(t, name)
	if !strings.HasPrefix(root, "/") { // a pool volume: its file
		out, err := kvmVirsh(t, "vol-path", "--pool", c.poolID, root)
		if err != nil {
			t.Fatalf("virsh vol-path %s: %v: %s", root, err, out)
		}
		root = strings.TrimSpace(out)
	}
	if !kvmQemuIO(root, "write -P 0xcd 20M 64k") || !kvmQemuIO(root, "read -P 0xcd 20M 64k") {
		t.Fatalf("cannot write a pattern to %s", root)
	}
	if _, err := cs.Snapshot.RevertToVMSnapshot(cs.Snapshot.NewRevertToVMSnapshotParams(s2.Id)); err != nil {
		t.Fatalf("revert the stopped VM to the disk snapshot: %v", err)
	}
	if kvmQemuIO(root, "read -P 0xcd 20M 64k") {
		t.Fatal("the data written after the snapshot survived the revert")
	}
	// The stopped VM reverted to the memory snapshot: started on its host,
	// then running from the snapshot's memory (CloudStack's behaviour).
	rv, err = cs.Snapshot.RevertToVMSnapshot(cs.Snapshot.NewRevertToVMSnapshotParams(s1.Id))
	if err != nil || rv.State != "Running" {
		t.Fatalf("revert the stopped VM to the memory snapshot: %v %+v", err, rv)
	}
	if st := kvmDomState(t, name); !strings.HasPrefix(st, "running") {
		t.Fatalf("domain after reverting the stopped VM to memory: %s", st)
	}
	if out, err := kvmVirsh(t, "snapshot-current", name, "--name"); err != nil || strings.TrimSpace(out) != s1.Id {
		t.Errorf("libvirt's current snapshot after the revert: %v %q, want %s", err, out, s1.Id)
	}
	vmtMust[*cloudstack.StopVirtualMachineResponse](t, "stop after the memory revert")(cs.VirtualMachine.StopVirtualMachine(cs.VirtualMachine.NewStopVirtualMachineParams(dep.Id)))
	boots = kvmBoots(name, "kvm-snap", dep.Id)
	st := vmtMust[*cloudstack.StartVirtualMachineResponse](t, "start")(cs.VirtualMachine.StartVirtualMachine(cs.VirtualMachine.NewStartVirtualMachineParams(dep.Id)))
	if st.State != "Running" {
		t.Fatalf("start after the revert: %+v", st)
	}
	kvmWaitBoot(t, name, "kvm-snap", dep.Id, boots, 2*time.Minute)

	// Delete: gone from libvirt.
	for _, id := range []string{s2.Id, s1.Id} {
		if _, err := cs.Snapshot.DeleteVMSnapshot(cs.Snapshot.NewDeleteVMSnapshotParams(id)); err != nil {
			t.Fatalf("deleteVMSnapshot %s: %v", id, err)
		}
	}
	if out, err := kvmVirsh(t, "snapshot-list", name, "--name"); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("virsh snapshot-list after deleting both: %v %q", err, out)
	}

	// Destroy with a snapshot left: the domain goes, and the snapshot with it.
	if _, err := vmsCreate(cs, dep.Id, "last", true, nil); err != nil {
		t.Fatalf("createVMSnapshot: %v", err)
	}
	dd := cs.VirtualMachine.NewDestroyVirtualMachineParams(dep.Id)
	dd.SetExpunge(true)
	vmtMust[*cloudstack.DestroyVirtualMachineResponse](t, "destroy")(cs.VirtualMachine.DestroyVirtualMachine(dd))
	if st := kvmDomState(t, name); !strings.HasPrefix(st, "absent") {
		t.Fatalf("domain after destroy: %s", st)
	}
	if l := vmsList(t, cs, func(p *cloudstack.ListVMSnapshotParams) { p.SetVirtualmachineid(dep.Id) }); len(l) != 0 {
		t.Fatalf("%d VM snapshots listed after destroy", len(l))
	}
}
