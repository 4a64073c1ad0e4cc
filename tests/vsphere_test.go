package tests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere/vcsim"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// vsVM reads a VM from the simulated vCenter by its instance UUID (the
// Nimbus VM's id): nil when vCenter has none.
func vsVM(t *testing.T, sim *vcsim.Sim, id string) *mo.VirtualMachine {
	t.Helper()
	ctx := context.Background()
	c, err := sim.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Logout(ctx)
	dc, err := object.NewSearchIndex(c.Client).FindByInventoryPath(ctx, "/DC0")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := object.NewSearchIndex(c.Client).FindByUuid(ctx, dc.(*object.Datacenter), id, true, types.NewBool(true))
	if err != nil {
		t.Fatal(err)
	}
	if ref == nil {
		return nil
	}
	var vm mo.VirtualMachine
	if err := property.DefaultCollector(c.Client).RetrieveOne(ctx, ref.Reference(), []string{"name", "runtime", "config"}, &vm); err != nil {
		t.Fatal(err)
	}
	return &vm
}

// vsHostName names the ESXi host a vCenter VM runs on.
func vsHostName(t *testing.T, sim *vcsim.Sim, vm *mo.VirtualMachine) string {
	t.Helper()
	ctx := context.Background()
	c, err := sim.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Logout(ctx)
	var h mo.HostSystem
	if err := property.DefaultCollector(c.Client).RetrieveOne(ctx, *vm.Runtime.Host, []string{"name"}, &h); err != nil {
		t.Fatal(err)
	}
	return h.Name
}

// vsFileExists tells whether a datastore file exists in the simulator.
func vsFileExists(t *testing.T, sim *vcsim.Sim, ds, path string) bool {
	t.Helper()
	ctx := context.Background()
	c, err := sim.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Logout(ctx)
	u := object.NewDatastoreURL(*c.Client.URL(), "DC0", ds, path)
	rc, _, err := c.Client.Download(ctx, u, &soap.DefaultDownload)
	if err != nil {
		return false
	}
	rc.Close()
	return true
}

// vsCloud is a vSphere zone set up through the API against govmomi's
// vCenter simulator served from the test process (the worker process
// reaches it on loopback): addCluster discovering the vCenter cluster's
// hosts, a cluster-wide and a zone-wide datastore pool, an OVA template,
// and a shared guest network whose traffic label names a distributed
// port group.
type vsCloud struct {
	s     *testenv.Stack
	cs    *cloudstack.CloudStackClient
	sim   *vcsim.Sim
	zone  string
	pod   string
	cl    *cloudstack.AddClusterResponse
	hosts *cloudstack.ListHostsResponse
	ds0   *cloudstack.CreateStoragePoolResponse
	ds1   *cloudstack.CreateStoragePoolResponse
	tpl   string
	nw    string
}

func vsSetup(t *testing.T) *vsCloud {
	t.Helper()
	sim, err := vcsim.Start(vcsim.Options{Hosts: 3, Datastores: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	// VM watches on: the default (NIMBUS_VSPHERE_WATCH=false in the
	// environment turns them off).
	s := testenv.StartStack(t, testenv.StackOptions{})
	cs := s.Client
	cs.Timeout(3 * time.Minute)
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	z, err := cs.Zone.CreateZone(cs.Zone.NewCreateZoneParams("8.8.8.8", "10.0.0.2", "vs-zone", "Advanced"))
	must("createZone", err)
	pn, err := cs.Network.CreatePhysicalNetwork(cs.Network.NewCreatePhysicalNetworkParams("vs-phys", z.Id))
	must("createPhysicalNetwork", err)
	for _, tt := range []string{"Guest", "Management", "Public", "Storage"} {
		p := cs.Usage.NewAddTrafficTypeParams(pn.Id, tt)
		if tt == "Guest" {
			p.SetVmwarenetworklabel("DC0_DVPG0") // the guest port group
		}
		_, err := cs.Usage.AddTrafficType(p)
		must("addTrafficType "+tt, err)
	}
	up := cs.Network.NewUpdatePhysicalNetworkParams(pn.Id)
	up.SetState("Enabled")
	_, err = cs.Network.UpdatePhysicalNetwork(up)
	must("enable physical network", err)
	pp := cs.Pod.NewCreatePodParams("vs-pod", z.Id)
	pp.SetGateway("192.168.30.1")
	pp.SetNetmask("255.255.255.0")
	pp.SetStartip("192.168.30.10")
	pp.SetEndip("192.168.30.20")
	pod, err := cs.Pod.CreatePod(pp)
	must("createPod", err)

	// addCluster with the vCenter's URL and login: the hosts come with it.
	bad := cs.Cluster.NewAddClusterParams("DC0_C0", "ExternalManaged", "VMware", pod.Id, z.Id)
	bad.SetUrl(sim.ClusterURL())
	bad.SetUsername(sim.Username)
	bad.SetPassword("wrong")
	_, err = cs.Cluster.AddCluster(bad)
	hostWantErr(t, "addCluster with a wrong vCenter password", err, 431, "refused the login")
	ap := cs.Cluster.NewAddClusterParams("DC0_C0", "ExternalManaged", "VMware", pod.Id, z.Id)
	ap.SetUrl(sim.ClusterURL())
	ap.SetUsername(sim.Username)
	ap.SetPassword(sim.Password)
	cl, err := cs.Cluster.AddCluster(ap)
	must("addCluster VMware", err)
	if cl.Hypervisortype != "VMware" || cl.Clustertype != "ExternalManaged" {
		t.Fatalf("addCluster = %+v", cl)
	}
	// A zone maps to one vCenter datacenter, and a datacenter to one zone.
	other := cs.Cluster.NewAddClusterParams("C9", "ExternalManaged", "VMware", pod.Id, z.Id)
	other.SetUrl("https://" + sim.Host + "/DC9/C9")
	other.SetUsername(sim.Username)
	other.SetPassword(sim.Password)
	_, err = cs.Cluster.AddCluster(other)
	hostWantErr(t, "addCluster of another datacenter", err, 431, "a zone maps to one vCenter datacenter")
	z2, err := cs.Zone.CreateZone(cs.Zone.NewCreateZoneParams("8.8.8.8", "10.0.0.2", "vs-zone2", "Advanced"))
	must("createZone", err)
	pp2 := cs.Pod.NewCreatePodParams("vs-pod2", z2.Id)
	pp2.SetGateway("192.168.31.1")
	pp2.SetNetmask("255.255.255.0")
	pp2.SetStartip("192.168.31.10")
	pp2.SetEndip("192.168.31.20")
	pod2, err := cs.Pod.CreatePod(pp2)
	must("createPod", err)
	again := cs.Cluster.NewAddClusterParams("DC0_C0", "ExternalManaged", "VMware", pod2.Id, z2.Id)
	again.SetUrl(sim.ClusterURL())
	again.SetUsername(sim.Username)
	again.SetPassword(sim.Password)
	_, err = cs.Cluster.AddCluster(again)
	hostWantErr(t, "addCluster of the datacenter in a second zone", err, 431, "maps to one zone")

	lh := cs.Host.NewListHostsParams()
	lh.SetClusterid(cl.Id)
	hosts, err := cs.Host.ListHosts(lh)
	must("listHosts", err)
	if hosts.Count != 3 {
		t.Fatalf("listHosts after addCluster = %d hosts, want the cluster's 3", hosts.Count)
	}
	for _, h := range hosts.Hosts {
		if h.State != "Up" || h.Hypervisor != "VMware" || h.Cpunumber <= 0 || h.Cpuspeed <= 0 || h.Memorytotal <= 0 || !strings.HasPrefix(h.Name, "DC0_C0_H") {
			t.Fatalf("discovered host %+v", h)
		}
	}
	// One VM watch for the cluster's 3 hosts, not one per host.
	var hostIDs []string
	for _, h := range hosts.Hosts {
		hostIDs = append(hostIDs, h.Id)
	}
	vsWatchesPerCluster(t, s, cl.Id, hostIDs)

	// Datastores as primary storage: one for the cluster, one zone-wide.
	sp := cs.Pool.NewCreateStoragePoolParams("ds0", sim.PoolURL("LocalDS_0"), z.Id)
	sp.SetPodid(pod.Id)
	sp.SetClusterid(cl.Id)
	ds0, err := cs.Pool.CreateStoragePool(sp)
	must("createStoragePool ds0", err)
	zp := cs.Pool.NewCreateStoragePoolParams("ds1", sim.PoolURL("LocalDS_1"), z.Id)
	zp.SetScope("zone")
	zp.SetHypervisor("VMware")
	ds1, err := cs.Pool.CreateStoragePool(zp)
	must("createStoragePool ds1", err)
	if ds0.State != "Up" || ds0.Type != "VMFS" || ds0.Disksizetotal <= 0 || ds1.Scope != "ZONE" {
		t.Fatalf("pools = %+v / %+v", ds0, ds1)
	}
	foreign := cs.Pool.NewCreateStoragePoolParams("ds-x", "vmfs://vcenter.example.com/DC0/LocalDS_0", z.Id)
	foreign.SetScope("zone")
	foreign.SetHypervisor("VMware")
	_, err = cs.Pool.CreateStoragePool(foreign)
	hostWantErr(t, "a datastore of another vCenter", err, 431, "no vCenter of zone")

	is := cs.ImageStore.NewAddImageStoreParams("NFS")
	is.SetName("vs-secondary")
	is.SetUrl("file://" + filepath.Join(s.Dir, "vs-secondary"))
	is.SetZoneid(z.Id)
	_, err = cs.ImageStore.AddImageStore(is)
	must("addImageStore", err)
	ez := cs.Zone.NewUpdateZoneParams(z.Id)
	ez.SetAllocationstate("Enabled")
	_, err = cs.Zone.UpdateZone(ez)
	must("enable zone", err)

	// An OVA template served over HTTP from this test.
	ova := vcsim.OVA("tiny", 64)
	sum := sha256.Sum256(ova)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/tiny.ova" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(ova)
	}))
	t.Cleanup(web.Close)
	rp := cs.Template.NewRegisterTemplateParams("tiny ova", "OVA", "VMware", "tiny", web.URL+"/tiny.ova")
	rp.SetZoneid(z.Id)
	rp.SetOstypeid(models.OSTypeOtherLinux64UUID)
	rp.SetIspublic(true)
	rp.SetChecksum("{SHA-256}" + hex.EncodeToString(sum[:]))
	reg, err := cs.Template.RegisterTemplate(rp)
	must("registerTemplate", err)
	tplID := reg.RegisterTemplate[0].Id
	catWaitTemplate(t, cs, tplID, 60*time.Second, func(x *cloudstack.Template) bool { return x.Isready })

	np := cs.Network.NewCreateNetworkParams("vs-shared", models.NetworkOfferingDefaultSharedUUID, z.Id)
	np.SetDisplaytext("shared guest network")
	np.SetVlan("100")
	np.SetGateway("10.60.0.1")
	np.SetNetmask("255.255.255.0")
	np.SetStartip("10.60.0.10")
	np.SetEndip("10.60.0.20")
	np.SetAcltype("Domain")
	nw, err := cs.Network.CreateNetwork(np)
	must("createNetwork", err)

	return &vsCloud{s: s, cs: cs, sim: sim, zone: z.Id, pod: pod.Id, cl: cl, hosts: hosts, ds0: ds0, ds1: ds1, tpl: tplID, nw: nw.Id}
}

// TestVSphereEndToEnd drives a vSphere zone through the API as an operator
// and a user would: the cluster's hosts discovered, datastores as primary
// storage, an OVA template, and a VM deployed, power-cycled, moved by
// vMotion and its disk by Storage vMotion (stopped, then back while it
// runs), then destroyed with nothing left in vCenter.
func TestVSphereEndToEnd(t *testing.T) {
	c := vsSetup(t)
	cs, sim, hosts, ds0, ds1, tplID := c.cs, c.sim, c.hosts, c.ds0, c.ds1, c.tpl
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// Deploy: the template is imported into the chosen datastore, the root
	// disk copied from it, the VM created around it and powered on.
	dp := cs.VirtualMachine.NewDeployVirtualMachineParams(models.ServiceOfferingSmallUUID, tplID, c.zone)
	dp.SetName("vs-vm1")
	dp.SetNetworkids([]string{c.nw})
	dep, err := cs.VirtualMachine.DeployVirtualMachine(dp)
	must("deployVirtualMachine", err)
	if dep.State != "Running" || dep.Hypervisor != "VMware" {
		t.Fatalf("deployed VM = %+v", dep)
	}
	vm := vsVM(t, sim, dep.Id)
	if vm == nil || vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn || vm.Name != dep.Instancename ||
		vm.Config.Hardware.NumCPU != int32(dep.Cpunumber) || int64(vm.Config.Hardware.MemoryMB) != int64(dep.Memory) {
		t.Fatalf("vCenter VM after deploy = %+v", vm)
	}
	nics := object.VirtualDeviceList(vm.Config.Hardware.Device).SelectByType((*types.VirtualEthernetCard)(nil))
	if len(nics) != 1 || len(dep.Nic) != 1 || !strings.EqualFold(nics[0].(types.BaseVirtualEthernetCard).GetVirtualEthernetCard().MacAddress, dep.Nic[0].Macaddress) {
		t.Fatalf("vCenter NICs %+v, Nimbus NICs %+v", nics, dep.Nic)
	}
	if _, ok := nics[0].(types.BaseVirtualEthernetCard).GetVirtualEthernetCard().Backing.(*types.VirtualEthernetCardDistributedVirtualPortBackingInfo); !ok {
		t.Fatalf("the NIC is not on the guest traffic label's distributed port group: %T", nics[0].GetVirtualDevice().Backing)
	}
	if got := vsHostName(t, sim, vm); got != dep.Hostname {
		t.Fatalf("vCenter runs the VM on %s, Nimbus says %s", got, dep.Hostname)
	}

	vmState := func(want string) *cloudstack.VirtualMachine {
		t.Helper()
		p := cs.VirtualMachine.NewListVirtualMachinesParams()
		p.SetId(dep.Id)
		r, err := cs.VirtualMachine.ListVirtualMachines(p)
		must("listVirtualMachines", err)
		if r.Count != 1 || r.VirtualMachines[0].State != want {
			t.Fatalf("VM state = %+v, want %s", r.VirtualMachines, want)
		}
		return r.VirtualMachines[0]
	}

	// Power operations.
	_, err = cs.VirtualMachine.StopVirtualMachine(cs.VirtualMachine.NewStopVirtualMachineParams(dep.Id))
	must("stopVirtualMachine", err)
	vmState("Stopped")
	if v := vsVM(t, sim, dep.Id); v != nil && v.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
		t.Fatalf("vCenter VM still on after stop")
	}
	_, err = cs.VirtualMachine.StartVirtualMachine(cs.VirtualMachine.NewStartVirtualMachineParams(dep.Id))
	must("startVirtualMachine", err)
	vmState("Running")
	if v := vsVM(t, sim, dep.Id); v == nil || v.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		t.Fatalf("vCenter VM after start = %+v", v)
	}
	_, err = cs.VirtualMachine.RebootVirtualMachine(cs.VirtualMachine.NewRebootVirtualMachineParams(dep.Id))
	must("rebootVirtualMachine", err)
	cur := vmState("Running")

	// A data disk: created on a datastore and attached to the running VM.
	cv := cs.Volume.NewCreateVolumeParams()
	cv.SetName("vs-data")
	cv.SetDiskofferingid(models.DiskOfferingSmallUUID)
	cv.SetZoneid(c.zone)
	vol, err := cs.Volume.CreateVolume(cv)
	must("createVolume", err)
	_, err = cs.Volume.AttachVolume(cs.Volume.NewAttachVolumeParams(vol.Id, dep.Id))
	must("attachVolume", err)
	disks := func() int {
		v := vsVM(t, sim, dep.Id)
		return len(object.VirtualDeviceList(v.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil)))
	}
	if n := disks(); n != 2 {
		t.Fatalf("vCenter VM has %d disks after attachVolume, want 2", n)
	}
	_, err = cs.Volume.DetachVolume(func() *cloudstack.DetachVolumeParams {
		p := cs.Volume.NewDetachVolumeParams()
		p.SetId(vol.Id)
		return p
	}())
	must("detachVolume", err)
	if n := disks(); n != 1 {
		t.Fatalf("vCenter VM has %d disks after detachVolume, want 1", n)
	}
	_, err = cs.Volume.DeleteVolume(cs.Volume.NewDeleteVolumeParams(vol.Id))
	must("deleteVolume", err)

	// vMotion to another host of the cluster.
	var target *cloudstack.Host
	for _, h := range hosts.Hosts {
		if h.Id != cur.Hostid {
			target = h
			break
		}
	}
	mp := cs.VirtualMachine.NewMigrateVirtualMachineParams(dep.Id)
	mp.SetHostid(target.Id)
	_, err = cs.VirtualMachine.MigrateVirtualMachine(mp)
	must("migrateVirtualMachine", err)
	if got := vmState("Running"); got.Hostid != target.Id {
		t.Fatalf("after migrateVirtualMachine the VM is on %s, want %s", got.Hostname, target.Name)
	}
	if got := vsHostName(t, sim, vsVM(t, sim, dep.Id)); got != target.Name {
		t.Fatalf("vCenter runs the VM on %s after vMotion, want %s", got, target.Name)
	}

	// Storage vMotion of the root disk to the other datastore (cold: the
	// VM is stopped, which undefines it in vCenter).
	lv := cs.Volume.NewListVolumesParams()
	lv.SetVirtualmachineid(dep.Id)
	lv.SetType("ROOT")
	vols, err := cs.Volume.ListVolumes(lv)
	must("listVolumes", err)
	if vols.Count != 1 {
		t.Fatalf("root volumes = %+v", vols.Volumes)
	}
	root := vols.Volumes[0]
	to, toDS, fromDS := ds1, "LocalDS_1", "LocalDS_0"
	if root.Storageid == ds1.Id {
		to, toDS, fromDS = ds0, "LocalDS_0", "LocalDS_1"
	}
	rootFile := "nimbus/" + root.Id + ".vmdk"
	if !vsFileExists(t, sim, fromDS, rootFile) {
		t.Fatalf("root disk %s not on %s", rootFile, fromDS)
	}
	_, err = cs.VirtualMachine.StopVirtualMachine(cs.VirtualMachine.NewStopVirtualMachineParams(dep.Id))
	must("stopVirtualMachine", err)
	_, err = cs.Volume.MigrateVolume(cs.Volume.NewMigrateVolumeParams(to.Id, root.Id))
	must("migrateVolume", err)
	vols, err = cs.Volume.ListVolumes(lv)
	must("listVolumes", err)
	if vols.Volumes[0].Storageid != to.Id {
		t.Fatalf("root volume on %s after migrateVolume, want %s", vols.Volumes[0].Storage, to.Name)
	}
	if !vsFileExists(t, sim, toDS, rootFile) || vsFileExists(t, sim, fromDS, rootFile) {
		t.Fatalf("after Storage vMotion: on %s %v, on %s %v", toDS, vsFileExists(t, sim, toDS, rootFile), fromDS, vsFileExists(t, sim, fromDS, rootFile))
	}
	_, err = cs.VirtualMachine.StartVirtualMachine(cs.VirtualMachine.NewStartVirtualMachineParams(dep.Id))
	must("start after migrateVolume", err)
	vmState("Running")
	v := vsVM(t, sim, dep.Id)
	if v == nil || !strings.HasPrefix(object.VirtualDeviceList(v.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil))[0].GetVirtualDevice().Backing.(types.BaseVirtualDeviceFileBackingInfo).GetVirtualDeviceFileBackingInfo().FileName, "["+toDS+"]") {
		t.Fatalf("the VM does not boot from %s after migrateVolume: %+v", toDS, v)
	}

	// Live Storage vMotion of the root disk back, the VM running.
	lm := cs.Volume.NewMigrateVolumeParams(root.Storageid, root.Id)
	lm.SetLivemigrate(true)
	_, err = cs.Volume.MigrateVolume(lm)
	must("live migrateVolume", err)
	vols, err = cs.Volume.ListVolumes(lv)
	must("listVolumes", err)
	if got := vols.Volumes[0]; got.Storageid != root.Storageid || got.Path != "["+fromDS+"] "+rootFile || got.State != "Ready" {
		t.Fatalf("root volume after live migrateVolume = %s %q %s, want %s", got.Storage, got.Path, got.State, root.Storage)
	}
	if !vsFileExists(t, sim, fromDS, rootFile) || vsFileExists(t, sim, toDS, rootFile) {
		t.Fatalf("after live Storage vMotion: on %s %v, on %s %v", fromDS, vsFileExists(t, sim, fromDS, rootFile), toDS, vsFileExists(t, sim, toDS, rootFile))
	}
	vmState("Running")
	if v := vsVM(t, sim, dep.Id); v == nil || v.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		t.Fatalf("vCenter VM after live Storage vMotion = %+v", v)
	}

	// Destroy and expunge: nothing of the VM stays in vCenter.
	dv := cs.VirtualMachine.NewDestroyVirtualMachineParams(dep.Id)
	dv.SetExpunge(true)
	_, err = cs.VirtualMachine.DestroyVirtualMachine(dv)
	must("destroyVirtualMachine", err)
	deadline := time.Now().Add(time.Minute)
	for vsVM(t, sim, dep.Id) != nil || vsFileExists(t, sim, fromDS, rootFile) || vsFileExists(t, sim, toDS, rootFile) {
		if time.Now().After(deadline) {
			t.Fatalf("the VM or its disk is still in vCenter after expunge")
		}
		time.Sleep(200 * time.Millisecond)
	}
	names, err := sim.VMs(context.Background())
	must("list vCenter VMs", err)
	for _, n := range names {
		// Left: Nimbus's own per-datastore VMs, the template copies and the
		// helper that makes linked clones.
		if !strings.HasPrefix(n, "nimbus-tpl-") && !strings.HasPrefix(n, "nimbus-diskhelper-") {
			t.Fatalf("vCenter still holds %s after expunge (all: %v)", n, names)
		}
	}
	// Removing the pools removes those too: vCenter is empty.
	for _, p := range []*cloudstack.CreateStoragePoolResponse{ds0, ds1} {
		_, err := cs.Pool.DeleteStoragePool(cs.Pool.NewDeleteStoragePoolParams(p.Id))
		must("deleteStoragePool "+p.Name, err)
	}
	names, err = sim.VMs(context.Background())
	must("list vCenter VMs", err)
	if len(names) != 0 || slices.Contains(names, dep.Instancename) {
		t.Fatalf("vCenter still holds %v after the pools went", names)
	}
}

// TestVSphereWorkerDiesMidCopy kills the worker while vCenter copies a
// VM's root disk (a full clone, the long task on a real vCenter, made to
// take 40 s, longer than the activity's
// heartbeat timeout) and starts another: the retried activity finds the
// copy task in the heartbeat details the dead worker saved and waits on it
// instead of starting a second copy, and the deployment ends Running.
func TestVSphereWorkerDiesMidCopy(t *testing.T) {
	c := vsSetup(t)
	cs, sim := c.cs, c.sim
	ctx := context.Background()
	simulator.TaskDelay.MethodDelay = map[string]int{"CopyVirtualDisk": 40000, "LockHandoff": 0}
	t.Cleanup(func() { simulator.TaskDelay.MethodDelay = nil })

	dp := cs.VirtualMachine.NewDeployVirtualMachineParams(models.ServiceOfferingSmallUUID, c.tpl, c.zone)
	dp.SetName("vs-crash")
	dp.SetRootdisksize(1) // bigger than the template: a full copy, not a linked clone
	dp.SetNetworkids([]string{c.nw})
	type res struct {
		vm  *cloudstack.DeployVirtualMachineResponse
		err error
	}
	done := make(chan res, 1)
	go func() {
		cs2 := cloudstack.NewAsyncClient(c.s.APIURL, c.s.Admin.APIKey, c.s.Admin.SecretKey, false)
		cs2.AsyncTimeout(300)
		vm, err := cs2.VirtualMachine.DeployVirtualMachine(dp)
		done <- res{vm, err}
	}()
	running := func() int {
		tasks, err := sim.Tasks(ctx, "VirtualDiskManager.copyVirtualDisk")
		if err != nil {
			t.Fatal(err)
		}
		return len(tasks)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for running() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no disk copy started in vCenter")
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second) // the task's reference reaches Temporal within a second
	c.s.Workers()[0].Kill()
	c.s.StartWorker()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("deploy after the worker died: %v", r.err)
		}
		if r.vm.State != "Running" {
			t.Fatalf("deployed VM = %+v", r.vm)
		}
	case <-time.After(4 * time.Minute):
		t.Fatal("the deployment did not end")
	}
	tasks, err := sim.Tasks(ctx, "VirtualDiskManager.copyVirtualDisk")
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) != 1 || tasks[0].State != types.TaskInfoStateSuccess {
		t.Fatalf("vCenter ran %d disk copies for one deployment (want the one, reattached to): %+v", len(tasks), tasks)
	}
}
