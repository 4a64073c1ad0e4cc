package tests

import (
	"archive/tar"
	"os"
	"path/filepath"
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
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// vsDeploy deploys a VM on the vSphere zone and waits for it to run.
func vsDeploy(t *testing.T, c *vsCloud, name string) *cloudstack.DeployVirtualMachineResponse {
	t.Helper()
	dp := c.cs.VirtualMachine.NewDeployVirtualMachineParams(models.ServiceOfferingSmallUUID, c.tpl, c.zone)
	dp.SetName(name)
	dp.SetNetworkids([]string{c.nw})
	dep, err := c.cs.VirtualMachine.DeployVirtualMachine(dp)
	if err != nil {
		t.Fatalf("deployVirtualMachine %s: %v", name, err)
	}
	if dep.State != "Running" {
		t.Fatalf("deployed VM = %+v", dep)
	}
	return dep
}

// vsRootVolume is a VM's ROOT volume as listVolumes shows it.
func vsRootVolume(t *testing.T, c *vsCloud, vmID string) *cloudstack.Volume {
	t.Helper()
	lv := c.cs.Volume.NewListVolumesParams()
	lv.SetVirtualmachineid(vmID)
	lv.SetType("ROOT")
	vols, err := c.cs.Volume.ListVolumes(lv)
	if err != nil || vols.Count != 1 {
		t.Fatalf("listVolumes ROOT of %s = %+v, %v", vmID, vols, err)
	}
	return vols.Volumes[0]
}

// vsDiskFiles lists the files backing a vCenter VM's disks.
func vsDiskFiles(t *testing.T, c *vsCloud, vmID string) []string {
	t.Helper()
	vm := vsVM(t, c.sim, vmID)
	if vm == nil {
		t.Fatalf("no vCenter VM %s", vmID)
	}
	var out []string
	for _, d := range object.VirtualDeviceList(vm.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil)) {
		out = append(out, d.GetVirtualDevice().Backing.(types.BaseVirtualDeviceFileBackingInfo).GetVirtualDeviceFileBackingInfo().FileName)
	}
	return out
}

// TestVSphereLiveStorageVMotion moves the root disk of a running VM to the
// other datastore (migrateVolume livemigrate=true): the driver relocates
// that disk alone while the VM runs (RelocateVM_Task with one disk
// locator) and reads the disk back to learn its new path. Our vcsim moves
// the disk's files as vCenter does (govmomi's simulator alone ignores
// disk locators, see vcsim.IgnoreDiskLocators).
//
// First with the disk locators ignored: vCenter ends the relocation with
// the disk where it was, which fails the job with a clear 432 that leaves
// the volume on its pool, its file in place (the job's undo must not
// delete the source: the copy on the target is named by the source's
// path) and the VM running. Then the real move: the volume is on the new
// pool with its new path, the file left the source datastore, the VM ran
// throughout and boots from the new place; destroyed and expunged,
// nothing of it stays on either datastore.
func TestVSphereLiveStorageVMotion(t *testing.T) {
	c := vsSetup(t)
	cs, sim := c.cs, c.sim
	dep := vsDeploy(t, c, "vs-live")
	root := vsRootVolume(t, c, dep.Id)
	to, toDS, fromDS := c.ds1, "LocalDS_1", "LocalDS_0"
	if root.Storageid == c.ds1.Id {
		to, toDS, fromDS = c.ds0, "LocalDS_0", "LocalDS_1"
	}
	rootFile := "nimbus/" + root.Id + ".vmdk"
	rootFlat := "nimbus/" + root.Id + "-flat.vmdk"
	if files := vsDiskFiles(t, c, dep.Id); len(files) != 1 || files[0] != "["+fromDS+"] "+rootFile {
		t.Fatalf("vCenter VM disks before = %v, want [%s] %s", files, fromDS, rootFile)
	}

	// The shared network is VLAN 100 on the traffic label DC0_DVPG0, a
	// port group of distributed switch DVS0: the NIC is on that switch's
	// port group of VLAN 100, made for it.
	ctx := t.Context()
	gc, err := sim.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Logout(ctx)
	nics := object.VirtualDeviceList(vsVM(t, sim, dep.Id).Config.Hardware.Device).SelectByType((*types.VirtualEthernetCard)(nil))
	db, ok := nics[0].GetVirtualDevice().Backing.(*types.VirtualEthernetCardDistributedVirtualPortBackingInfo)
	if len(nics) != 1 || !ok {
		t.Fatalf("NICs %+v", nics)
	}
	var pg mo.DistributedVirtualPortgroup
	if err := property.DefaultCollector(gc.Client).RetrieveOne(ctx, types.ManagedObjectReference{Type: "DistributedVirtualPortgroup", Value: db.Port.PortgroupKey}, []string{"name", "config"}, &pg); err != nil {
		t.Fatal(err)
	}
	vlan, _ := pg.Config.DefaultPortConfig.(*types.VMwareDVSPortSetting).Vlan.(*types.VmwareDistributedVirtualSwitchVlanIdSpec)
	if pg.Name != "cloud.guest.100-DVS0" || vlan == nil || vlan.VlanId != 100 {
		t.Fatalf("the NIC's port group is %s with VLAN %+v, want cloud.guest.100-DVS0 with VLAN 100", pg.Name, vlan)
	}

	_, err = cs.Volume.MigrateVolume(cs.Volume.NewMigrateVolumeParams(to.Id, root.Id))
	hostWantErr(t, "migrateVolume of a running VM's disk without livemigrate", err, 431, "livemigrate")

	p := cs.VirtualMachine.NewListVirtualMachinesParams()
	p.SetId(dep.Id)
	running := func(when string) {
		t.Helper()
		if vm := vsVM(t, sim, dep.Id); vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
			t.Fatalf("the VM is %s in vCenter %s", vm.Runtime.PowerState, when)
		}
		r, err := cs.VirtualMachine.ListVirtualMachines(p)
		if err != nil || r.Count != 1 || r.VirtualMachines[0].State != "Running" {
			t.Fatalf("listVirtualMachines %s = %+v, %v", when, r, err)
		}
	}
	on := func(ds, file string) bool { return vsFileExists(t, sim, ds, file) }

	// vCenter ends the relocation with the disk where it was.
	sim.IgnoreDiskLocators(true)
	mp := cs.Volume.NewMigrateVolumeParams(to.Id, root.Id)
	mp.SetLivemigrate(true)
	_, err = cs.Volume.MigrateVolume(mp)
	hostWantErr(t, "live migrateVolume, the disk locator ignored", err, 432, "relocation of the disk to datastore "+toDS, "still ["+fromDS+"] "+rootFile)
	relocs, err := sim.Tasks(ctx, "VirtualMachine.relocateVm")
	if err != nil {
		t.Fatal(err)
	}
	if len(relocs) != 1 || relocs[0].State != types.TaskInfoStateSuccess {
		t.Fatalf("vCenter relocations = %+v, want the one Storage vMotion (ended in success, the disk unmoved)", relocs)
	}
	after := vsRootVolume(t, c, dep.Id)
	if after.Storageid != root.Storageid || after.State != "Ready" || after.Path != root.Path {
		t.Fatalf("root volume after the failed live migrateVolume = pool %s path %q state %s, want it as it was (%s, %q)", after.Storage, after.Path, after.State, root.Storage, root.Path)
	}
	if files := vsDiskFiles(t, c, dep.Id); len(files) != 1 || files[0] != "["+fromDS+"] "+rootFile {
		t.Fatalf("vCenter VM disks after the failed move = %v", files)
	}
	if !on(fromDS, rootFile) || on(toDS, rootFile) {
		t.Fatalf("after the failed Storage vMotion: on %s %v (want true), on %s %v (want false)", fromDS, on(fromDS, rootFile), toDS, on(toDS, rootFile))
	}
	running("after the failed live migrateVolume")

	// The Storage vMotion.
	sim.IgnoreDiskLocators(false)
	start := time.Now()
	mv, err := cs.Volume.MigrateVolume(mp)
	if err != nil {
		t.Fatalf("live migrateVolume: %v", err)
	}
	t.Logf("live migrateVolume took %v", time.Since(start).Round(time.Millisecond))
	newPath := "[" + toDS + "] " + rootFile
	if mv.Storageid != to.Id || mv.Path != newPath {
		t.Fatalf("migrateVolume answered pool %s path %q, want %s %q", mv.Storage, mv.Path, to.Name, newPath)
	}
	after = vsRootVolume(t, c, dep.Id)
	if after.Storageid != to.Id || after.Path != newPath || after.State != "Ready" {
		t.Fatalf("root volume after live migrateVolume = pool %s path %q state %s, want %s %q Ready", after.Storage, after.Path, after.State, to.Name, newPath)
	}
	if files := vsDiskFiles(t, c, dep.Id); len(files) != 1 || files[0] != newPath {
		t.Fatalf("vCenter VM disks after the move = %v, want %s", files, newPath)
	}
	for _, f := range []string{rootFile, rootFlat} {
		if on(fromDS, f) || !on(toDS, f) {
			t.Fatalf("after the Storage vMotion %s: on %s %v (want false), on %s %v (want true)", f, fromDS, on(fromDS, f), toDS, on(toDS, f))
		}
	}
	if relocs, _ := sim.Tasks(ctx, "VirtualMachine.relocateVm"); len(relocs) != 2 {
		t.Fatalf("vCenter relocations = %d, want 2 (the failed and the real Storage vMotion)", len(relocs))
	}
	running("after the live migrateVolume")

	// Stopped and started: it boots from the disk on the new datastore.
	if _, err := cs.VirtualMachine.StopVirtualMachine(cs.VirtualMachine.NewStopVirtualMachineParams(dep.Id)); err != nil {
		t.Fatalf("stopVirtualMachine: %v", err)
	}
	if _, err := cs.VirtualMachine.StartVirtualMachine(cs.VirtualMachine.NewStartVirtualMachineParams(dep.Id)); err != nil {
		t.Fatalf("startVirtualMachine: %v", err)
	}
	running("after stop and start")
	if files := vsDiskFiles(t, c, dep.Id); len(files) != 1 || files[0] != newPath {
		t.Fatalf("vCenter VM disks after stop and start = %v, want %s", files, newPath)
	}
	home := vsVM(t, sim, dep.Id).Config.Files.VmPathName
	var vmx object.DatastorePath
	if !vmx.FromString(home) || !on(vmx.Datastore, vmx.Path) {
		t.Fatalf("the VM's configuration file %q is not on its datastore", home)
	}

	// Powered off in vCenter behind Nimbus's back: the cluster's VM watch
	// (WatchClusterVMs) has Nimbus show it Stopped within seconds, not at the next
	// reconcile run (every 300 s).
	ref, err := object.NewSearchIndex(gc.Client).FindByUuid(ctx, nil, dep.Id, true, types.NewBool(true))
	if err != nil || ref == nil {
		t.Fatalf("find the VM in vCenter: %v", err)
	}
	task, err := object.NewVirtualMachine(gc.Client, ref.Reference()).PowerOff(ctx)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatalf("power off in vCenter: %v", err)
	}
	off := time.Now()
	for {
		r, err := cs.VirtualMachine.ListVirtualMachines(p)
		if err != nil {
			t.Fatal(err)
		}
		if r.VirtualMachines[0].State == "Stopped" {
			t.Logf("Stopped in listVirtualMachines %v after the power-off in vCenter", time.Since(off).Round(10*time.Millisecond))
			break
		}
		if time.Since(off) > 15*time.Second {
			t.Fatalf("listVirtualMachines shows %s 15 s after the VM was powered off in vCenter", r.VirtualMachines[0].State)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Destroyed and expunged: nothing of it on either datastore.
	dv := cs.VirtualMachine.NewDestroyVirtualMachineParams(dep.Id)
	dv.SetExpunge(true)
	if _, err := cs.VirtualMachine.DestroyVirtualMachine(dv); err != nil {
		t.Fatalf("destroyVirtualMachine: %v", err)
	}
	left := func() []string {
		var out []string
		if vsVM(t, sim, dep.Id) != nil {
			out = append(out, "the VM")
		}
		for _, ds := range []string{fromDS, toDS} {
			for _, f := range []string{rootFile, rootFlat, vmx.Path} {
				if on(ds, f) {
					out = append(out, "["+ds+"] "+f)
				}
			}
		}
		return out
	}
	for deadline := time.Now().Add(time.Minute); len(left()) > 0; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after expunge vCenter still holds %v", left())
		}
	}
}

// TestVSphereVolumeSnapshots snapshots the root volume of a running VM
// on vSphere: the VM is frozen by a VM snapshot without memory, its disk
// copied on the datastore, the VM snapshot removed again, and the copy
// backed up to the image store; then the volume is reverted (VM stopped)
// and the snapshot deleted, leaving nothing on the datastore.
func TestVSphereVolumeSnapshots(t *testing.T) {
	c := vsSetup(t)
	cs, sim := c.cs, c.sim
	dep := vsDeploy(t, c, "vs-snap")
	root := vsRootVolume(t, c, dep.Id)
	ds := "LocalDS_0"
	if root.Storageid == c.ds1.Id {
		ds = "LocalDS_1"
	}

	snap, err := cs.Snapshot.CreateSnapshot(cs.Snapshot.NewCreateSnapshotParams(root.Id))
	if err != nil || snap.State != "BackedUp" {
		t.Fatalf("createSnapshot: %v %+v", err, snap)
	}
	copyFile := "nimbus/snapshots/" + root.Id + "/" + snap.Id + ".vmdk"
	if !vsFileExists(t, sim, ds, copyFile) {
		t.Fatalf("no snapshot copy %s on %s", copyFile, ds)
	}
	vm := vsVM(t, sim, dep.Id)
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		t.Fatalf("the VM is %s after the volume snapshot", vm.Runtime.PowerState)
	}
	if vm.Snapshot != nil && len(vm.Snapshot.RootSnapshotList) > 0 {
		t.Fatalf("the VM keeps the VM snapshot the volume snapshot took: %+v", vm.Snapshot.RootSnapshotList)
	}
	vmSnaps, err := sim.Tasks(t.Context(), "VirtualMachine.createSnapshotEx")
	if err != nil {
		t.Fatal(err)
	}
	rmSnaps, err := sim.Tasks(t.Context(), "VirtualMachine.removeSnapshot")
	if err != nil {
		t.Fatal(err)
	}
	onVM := func(ts []types.TaskInfo) (n int) {
		for _, x := range ts {
			if x.Entity != nil && *x.Entity == vm.Self && x.State == types.TaskInfoStateSuccess {
				n++
			}
		}
		return n
	}
	if onVM(vmSnaps) != 1 || onVM(rmSnaps) != 1 {
		t.Fatalf("VM snapshots taken %d, removed %d: want the one taken and removed", len(vmSnaps), len(rmSnaps))
	}
	var backups []string
	filepath.Walk(filepath.Join(c.s.Dir, "vs-secondary"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && strings.Contains(p, "snapshots") {
			backups = append(backups, p)
		}
		return nil
	})
	if len(backups) != 1 {
		t.Fatalf("snapshot backups on secondary storage: %q", backups)
	}
	f, err := os.Open(backups[0])
	if err != nil {
		t.Fatal(err)
	}
	var members []string
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		members = append(members, h.Name)
	}
	f.Close()
	if fi, _ := os.Stat(backups[0]); fi.Size() == 0 || !slices.Contains(members, snap.Id+".vmdk") || !slices.Contains(members, snap.Id+"-flat.vmdk") {
		t.Fatalf("the backup %s holds %v, want the copy's descriptor and extent", backups[0], members)
	}
	ls := cs.Snapshot.NewListSnapshotsParams()
	ls.SetId(snap.Id)
	l, err := cs.Snapshot.ListSnapshots(ls)
	if err != nil || l.Count != 1 || l.Snapshots[0].State != "BackedUp" || l.Snapshots[0].Physicalsize <= 0 {
		t.Fatalf("listSnapshots = %+v, %v", l, err)
	}

	// Revert: refused while the VM runs, done once it is stopped.
	_, err = cs.Snapshot.RevertSnapshot(cs.Snapshot.NewRevertSnapshotParams(snap.Id))
	hostWantErr(t, "revertSnapshot while the VM runs", err, 431, "stop it")
	if _, err := cs.VirtualMachine.StopVirtualMachine(cs.VirtualMachine.NewStopVirtualMachineParams(dep.Id)); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := cs.Snapshot.RevertSnapshot(cs.Snapshot.NewRevertSnapshotParams(snap.Id)); err != nil {
		t.Fatalf("revertSnapshot: %v", err)
	}
	reverts, err := sim.Tasks(t.Context(), "VirtualDiskManager.copyVirtualDisk")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(reverts); n < 2 {
		t.Fatalf("vCenter ran %d disk copies, want the snapshot's and the revert's", n)
	}
	if _, err := cs.VirtualMachine.StartVirtualMachine(cs.VirtualMachine.NewStartVirtualMachineParams(dep.Id)); err != nil {
		t.Fatalf("start after revert: %v", err)
	}
	if after := vsRootVolume(t, c, dep.Id); after.State != "Ready" || after.Path != root.Path {
		t.Fatalf("root volume after revert = %+v", after)
	}

	if _, err := cs.Snapshot.DeleteSnapshot(cs.Snapshot.NewDeleteSnapshotParams(snap.Id)); err != nil {
		t.Fatalf("deleteSnapshot: %v", err)
	}
	if vsFileExists(t, sim, ds, copyFile) {
		t.Fatalf("the snapshot copy %s stays on %s after deleteSnapshot", copyFile, ds)
	}
	if _, err := os.Stat(backups[0]); !os.IsNotExist(err) {
		t.Fatalf("the backup %s stays after deleteSnapshot: %v", backups[0], err)
	}
}

// TestVSphereCertificate adds a vSphere cluster whose vCenter (the
// simulator) has a self-signed certificate: refused without its thumbprint
// and with a wrong one, each with an error that says why and shows the
// certificate's thumbprint; accepted with it. A datastore pool whose URL
// gives no thumbprint takes the cluster's.
func TestVSphereCertificate(t *testing.T) {
	sim, err := vcsim.Start(vcsim.Options{Hosts: 2, Datastores: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	s := testenv.StartStack(t, testenv.StackOptions{})
	cs := s.Client
	z, err := cs.Zone.CreateZone(cs.Zone.NewCreateZoneParams("8.8.8.8", "10.0.0.2", "vs-tls", "Advanced"))
	if err != nil {
		t.Fatal(err)
	}
	pp := cs.Pod.NewCreatePodParams("vs-tls-pod", z.Id)
	pp.SetGateway("192.168.32.1")
	pp.SetNetmask("255.255.255.0")
	pp.SetStartip("192.168.32.10")
	pp.SetEndip("192.168.32.20")
	pod, err := cs.Pod.CreatePod(pp)
	if err != nil {
		t.Fatal(err)
	}
	add := func(url string) (*cloudstack.AddClusterResponse, error) {
		p := cs.Cluster.NewAddClusterParams("DC0_C0", "ExternalManaged", "VMware", pod.Id, z.Id)
		p.SetUrl(url)
		p.SetUsername(sim.Username)
		p.SetPassword(sim.Password)
		return cs.Cluster.AddCluster(p)
	}
	base := "https://" + sim.Host + "/DC0/DC0_C0"
	_, err = add(base)
	hostWantErr(t, "addCluster without the vCenter's thumbprint", err, 431, "certificate is not trusted", sim.Thumbprint())
	wrong := strings.Repeat("12:", 31) + "12"
	_, err = add(base + "?thumbprint=" + wrong)
	hostWantErr(t, "addCluster with a wrong thumbprint", err, 431, "does not match thumbprint "+wrong, sim.Thumbprint())
	if n, err := cs.Cluster.ListClusters(cs.Cluster.NewListClustersParams()); err != nil || n.Count != 0 {
		t.Fatalf("clusters after the refused adds = %+v, %v", n, err)
	}
	cl, err := add(sim.ClusterURL())
	if err != nil {
		t.Fatalf("addCluster with the thumbprint: %v", err)
	}
	lh := cs.Host.NewListHostsParams()
	lh.SetClusterid(cl.Id)
	hosts, err := cs.Host.ListHosts(lh)
	if err != nil || hosts.Count != 2 || hosts.Hosts[0].State != "Up" {
		t.Fatalf("hosts = %+v, %v", hosts, err)
	}
	sp := cs.Pool.NewCreateStoragePoolParams("tls-ds0", "vmfs://"+sim.Host+"/DC0/LocalDS_0", z.Id)
	sp.SetPodid(pod.Id)
	sp.SetClusterid(cl.Id)
	pool, err := cs.Pool.CreateStoragePool(sp)
	if err != nil || pool.State != "Up" {
		t.Fatalf("createStoragePool without a thumbprint of its own: %+v, %v", pool, err)
	}
}
