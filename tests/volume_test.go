package tests

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

const gib = int64(1) << 30

// volCloud is the simulator zone the volume tests run in.
type volCloud struct {
	zoneID, podID, clusterID string
	poolA, poolB             string
	storeDir                 string
	templateID               string
}

// volSetup builds a Basic simulator zone through the API: physical network,
// pod with a guest range, a cluster of two hosts, two 100 GiB pools, a
// file image store, and a small ready template.
func volSetup(t *testing.T, s *testenv.Stack) volCloud {
	t.Helper()
	cs := s.Client
	var vc volCloud
	z, err := cs.Zone.CreateZone(cs.Zone.NewCreateZoneParams("8.8.8.8", "10.0.0.2", "vol-zone", "Basic"))
	if err != nil {
		t.Fatalf("createZone: %v", err)
	}
	vc.zoneID = z.Id
	pn, err := cs.Network.CreatePhysicalNetwork(cs.Network.NewCreatePhysicalNetworkParams("vol-phys", z.Id))
	if err != nil {
		t.Fatalf("createPhysicalNetwork: %v", err)
	}
	for _, tt := range []string{"Guest", "Management", "Storage"} {
		if _, err := cs.Usage.AddTrafficType(cs.Usage.NewAddTrafficTypeParams(pn.Id, tt)); err != nil {
			t.Fatalf("addTrafficType %s: %v", tt, err)
		}
	}
	lp := cs.Network.NewListNetworkServiceProvidersParams()
	lp.SetPhysicalnetworkid(pn.Id)
	provs, err := cs.Network.ListNetworkServiceProviders(lp)
	if err != nil {
		t.Fatalf("listNetworkServiceProviders: %v", err)
	}
	for _, p := range provs.NetworkServiceProviders {
		if p.Name == "VirtualRouter" || p.Name == "SecurityGroupProvider" {
			up := cs.Network.NewUpdateNetworkServiceProviderParams(p.Id)
			up.SetState("Enabled")
			if _, err := cs.Network.UpdateNetworkServiceProvider(up); err != nil {
				t.Fatalf("updateNetworkServiceProvider: %v", err)
			}
		}
	}
	upn := cs.Network.NewUpdatePhysicalNetworkParams(pn.Id)
	upn.SetState("Enabled")
	if _, err := cs.Network.UpdatePhysicalNetwork(upn); err != nil {
		t.Fatalf("updatePhysicalNetwork: %v", err)
	}
	pp := cs.Pod.NewCreatePodParams("vol-pod", z.Id)
	pp.SetGateway("192.168.10.1")
	pp.SetNetmask("255.255.255.0")
	pp.SetStartip("192.168.10.10")
	pp.SetEndip("192.168.10.50")
	pod, err := cs.Pod.CreatePod(pp)
	if err != nil {
		t.Fatalf("createPod: %v", err)
	}
	vc.podID = pod.Id
	gr := cs.VLAN.NewCreateVlanIpRangeParams()
	gr.SetPodid(pod.Id)
	gr.SetForvirtualnetwork(false)
	gr.SetGateway("192.168.10.1")
	gr.SetNetmask("255.255.255.0")
	gr.SetStartip("192.168.10.100")
	gr.SetEndip("192.168.10.199")
	if _, err := cs.VLAN.CreateVlanIpRange(gr); err != nil {
		t.Fatalf("createVlanIpRange: %v", err)
	}
	cl, err := cs.Cluster.AddCluster(cs.Cluster.NewAddClusterParams("vol-c1", "CloudManaged", "Simulator", pod.Id, z.Id))
	if err != nil {
		t.Fatalf("addCluster: %v", err)
	}
	vc.clusterID = cl.Id
	for _, h := range []string{"vol-h1", "vol-h2"} {
		if _, err := hostAdd(cs, z.Id, pod.Id, cl.Id, "sim://"+h+"?cpus=16&mhz=2000&memory=65536"); err != nil {
			t.Fatalf("addHost %s: %v", h, err)
		}
	}
	for i, name := range []string{"pool-a", "pool-b"} {
		p := cs.Pool.NewCreateStoragePoolParams(name, fmt.Sprintf("nfs://10.9.0.%d/export/%s", i+1, name), z.Id)
		p.SetPodid(pod.Id)
		p.SetClusterid(cl.Id)
		p.SetScope("cluster")
		p.SetCapacitybytes(100 * gib)
		sp, err := cs.Pool.CreateStoragePool(p)
		if err != nil {
			t.Fatalf("createStoragePool %s: %v", name, err)
		}
		if i == 0 {
			vc.poolA = sp.Id
		} else {
			vc.poolB = sp.Id
		}
	}
	vc.storeDir = filepath.Join(s.Dir, "secondary")
	if err := os.MkdirAll(vc.storeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	ip := cs.ImageStore.NewAddImageStoreParams("NFS")
	ip.SetName("vol-secondary")
	ip.SetZoneid(z.Id)
	ip.SetUrl("file://" + vc.storeDir)
	if _, err := cs.ImageStore.AddImageStore(ip); err != nil {
		t.Fatalf("addImageStore: %v", err)
	}
	uz := cs.Zone.NewUpdateZoneParams(z.Id)
	uz.SetAllocationstate("Enabled")
	_, _ = cs.Zone.UpdateZone(uz) // CloudStack nests the answer; the SDK decodes it flat
	img := newCatImageServer(t, 1<<20, 1<<16, 0)
	rp := cs.Template.NewRegisterTemplateParams("vol-tiny", "RAW", "Simulator", "vol-tiny", img.srv.URL+"/image.raw")
	rp.SetZoneid(z.Id)
	rp.SetIspublic(true)
	reg, err := cs.Template.RegisterTemplate(rp)
	if err != nil {
		t.Fatalf("registerTemplate: %v", err)
	}
	vc.templateID = reg.RegisterTemplate[0].Id
	catWaitTemplate(t, cs, vc.templateID, 60*time.Second, func(x *cloudstack.Template) bool { return x.Isready })
	return vc
}

// volDeploy deploys a VM for a user (Running, or Stopped when !start).
func volDeploy(t *testing.T, cs *cloudstack.CloudStackClient, vc volCloud, name string, start bool) *cloudstack.DeployVirtualMachineResponse {
	t.Helper()
	p := cs.VirtualMachine.NewDeployVirtualMachineParams(models.ServiceOfferingSmallUUID, vc.templateID, vc.zoneID)
	p.SetName(name)
	p.SetStartvm(start)
	vm, err := cs.VirtualMachine.DeployVirtualMachine(p)
	if err != nil {
		t.Fatalf("deployVirtualMachine %s: %v", name, err)
	}
	want := "Running"
	if !start {
		want = "Stopped"
	}
	if vm.State != want {
		t.Fatalf("deployVirtualMachine %s: state %s, want %s", name, vm.State, want)
	}
	return vm
}

// volGet reads one volume as the given client lists it.
func volGet(t *testing.T, cs *cloudstack.CloudStackClient, id string) *cloudstack.Volume {
	t.Helper()
	p := cs.Volume.NewListVolumesParams()
	p.SetId(id)
	r, err := cs.Volume.ListVolumes(p)
	if err != nil {
		t.Fatalf("listVolumes id=%s: %v", id, err)
	}
	if r.Count != 1 {
		t.Fatalf("listVolumes id=%s: %d entries", id, r.Count)
	}
	return r.Volumes[0]
}

// volRow reads a volume's row.
func volRow(t *testing.T, s *testenv.Stack, id string) models.Volume {
	t.Helper()
	var v models.Volume
	if err := s.DB.NewSelect().Model(&v).Where("uuid = ?", id).WhereAllWithDeleted().Scan(context.Background()); err != nil {
		t.Fatalf("volume %s: %v", id, err)
	}
	return v
}

// volPoolAllocated is a pool's disksizeallocated in listStoragePools.
func volPoolAllocated(t *testing.T, cs *cloudstack.CloudStackClient, id string) int64 {
	t.Helper()
	p := cs.Pool.NewListStoragePoolsParams()
	p.SetId(id)
	r, err := cs.Pool.ListStoragePools(p)
	if err != nil || r.Count != 1 {
		t.Fatalf("listStoragePools %s: %v %+v", id, err, r)
	}
	return r.StoragePools[0].Disksizeallocated
}

// volCheckPools checks that each pool's allocation is exactly the sizes of
// the volumes on it, in listStoragePools and in listCapacity.
func volCheckPools(t *testing.T, s *testenv.Stack, vc volCloud) {
	t.Helper()
	var sum int64
	for _, id := range []string{vc.poolA, vc.poolB} {
		var want int64
		err := s.DB.NewSelect().TableExpr("volumes AS v").ColumnExpr("COALESCE(SUM(v.size), 0)").
			Join("JOIN storage_pools AS p ON p.id = v.pool_id").
			Where("p.uuid = ? AND v.removed IS NULL AND v.state NOT IN (?)", id, []string{"Allocated", "Error", "Expunged"}).
			Scan(context.Background(), &want)
		if err != nil {
			t.Fatal(err)
		}
		if got := volPoolAllocated(t, s.Client, id); got != want {
			t.Errorf("pool %s: disksizeallocated %d, volumes on it %d", id, got, want)
		}
		sum += want
	}
	_, used := hostCapacity(t, s.Client, models.CapacityStorageAllocated, func(p *cloudstack.ListCapacityParams) { p.SetZoneid(vc.zoneID) })
	if used != sum {
		t.Errorf("listCapacity storage allocated = %d, volumes %d", used, sum)
	}
}

// volJobErr checks an async call failed with code and text.
func volJobErr(t *testing.T, what string, err error, code int, text string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded, want %d", what, code)
	}
	if !strings.Contains(err.Error(), fmt.Sprint(code)) || !strings.Contains(err.Error(), text) {
		t.Fatalf("%s: %v, want %d saying %q", what, err, code, text)
	}
}

func volEvents(t *testing.T, s *testenv.Stack, typ, resource string) int {
	t.Helper()
	return hostCount(t, s, (*models.Event)(nil), "type = ? AND resource_uuid = ?", typ, resource)
}

func volUsage(t *testing.T, s *testenv.Stack, typ, table, uuid string) int {
	t.Helper()
	return hostCount(t, s, (*models.UsageEvent)(nil), "type = ? AND resource_id = (SELECT id FROM "+table+" WHERE uuid = ?)", typ, uuid)
}

func volSnapshot(t *testing.T, cs *cloudstack.CloudStackClient, id string) *cloudstack.Snapshot {
	t.Helper()
	p := cs.Snapshot.NewListSnapshotsParams()
	p.SetId(id)
	r, err := cs.Snapshot.ListSnapshots(p)
	if err != nil || r.Count != 1 {
		t.Fatalf("listSnapshots id=%s: %v %+v", id, err, r)
	}
	return r.Snapshots[0]
}

func TestVolumesSnapshotsAndPolicies(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	cs := s.Client
	cs.Timeout(3 * time.Minute)
	ctx := context.Background()
	vc := volSetup(t, s)
	alice := catCreateUser(t, s, "alice")
	bob := catCreateUser(t, s, "bob")
	ac := alice.Client
	vm1 := volDeploy(t, ac, vc, "avm1", true)
	vm2 := volDeploy(t, ac, vc, "avm2", false)
	bvm := volDeploy(t, bob.Client, vc, "bvm1", true)

	// ---- create: Allocated, no pool until first attach ----
	cp := ac.Volume.NewCreateVolumeParams()
	cp.SetName("data1")
	cp.SetZoneid(vc.zoneID)
	cp.SetDiskofferingid(models.DiskOfferingCustomUUID)
	cp.SetSize(5)
	v1, err := ac.Volume.CreateVolume(cp)
	if err != nil {
		t.Fatalf("createVolume: %v", err)
	}
	if v1.Id == "" || v1.Name != "data1" || v1.State != "Allocated" || v1.Type != "DATADISK" || v1.Size != 5*gib ||
		v1.Zoneid != vc.zoneID || v1.Storageid != "" || v1.Virtualmachineid != "" || v1.Account != "alice" || v1.Diskofferingid != models.DiskOfferingCustomUUID {
		t.Fatalf("createVolume = %+v", v1)
	}
	cp = ac.Volume.NewCreateVolumeParams()
	cp.SetName("data2")
	cp.SetZoneid(vc.zoneID)
	cp.SetDiskofferingid(models.DiskOfferingSmallUUID)
	v2, err := ac.Volume.CreateVolume(cp)
	if err != nil || v2.State != "Allocated" || v2.Size <= 0 {
		t.Fatalf("createVolume fixed = %+v, %v", v2, err)
	}
	if volEvents(t, s, "VOLUME.CREATE", v1.Id) != 1 || volUsage(t, s, "VOLUME.CREATE", "volumes", v1.Id) != 1 {
		t.Error("VOLUME.CREATE event or usage event missing")
	}
	bad := ac.Volume.NewCreateVolumeParams()
	bad.SetZoneid(vc.zoneID)
	bad.SetDiskofferingid(models.DiskOfferingCustomUUID)
	_, err = ac.Volume.CreateVolume(bad)
	hostWantErr(t, "createVolume custom without size", err, 431, "custom size")

	// Admins see where volumes are; users see their own only.
	lp := ac.Volume.NewListVolumesParams()
	lp.SetType("DATADISK")
	list, err := ac.Volume.ListVolumes(lp)
	if err != nil || list.Count != 2 {
		t.Fatalf("alice listVolumes DATADISK: %v %+v", err, list)
	}
	bl, err := bob.Client.Volume.ListVolumes(bob.Client.Volume.NewListVolumesParams())
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range bl.Volumes {
		if v.Account != "bob" {
			t.Fatalf("bob sees %+v", v)
		}
	}

	// ---- negatives that change nothing ----
	_, err = ac.Volume.AttachVolume(ac.Volume.NewAttachVolumeParams(v1.Id, bvm.Id))
	hostWantErr(t, "alice attaching to bob's VM", err, 431, "Unable to find virtual machine")
	_, err = cs.Volume.AttachVolume(cs.Volume.NewAttachVolumeParams(v1.Id, bvm.Id))
	hostWantErr(t, "admin attaching alice's volume to bob's VM", err, 431, "different accounts")
	if r := volRow(t, s, v1.Id); r.InstanceID != 0 || r.PoolID != 0 || r.State != "Allocated" {
		t.Fatalf("refused attach changed the volume: %+v", r)
	}

	// ---- attach to a running VM: placed on a pool the VM reaches ----
	allocA0, allocB0 := volPoolAllocated(t, cs, vc.poolA), volPoolAllocated(t, cs, vc.poolB)
	att, err := ac.Volume.AttachVolume(ac.Volume.NewAttachVolumeParams(v1.Id, vm1.Id))
	if err != nil {
		t.Fatalf("attachVolume: %v", err)
	}
	if att.State != "Ready" || att.Virtualmachineid != vm1.Id || att.Deviceid != 1 || att.Vmname != "avm1" || att.Vmstate != "Running" || att.Attached == "" {
		t.Fatalf("attachVolume = %+v", att)
	}
	adminView := volGet(t, cs, v1.Id)
	if adminView.Storageid == "" || adminView.Storage == "" || adminView.Path == "" || adminView.Hypervisor != "Simulator" {
		t.Fatalf("admin listVolumes = %+v", adminView)
	}
	if userView := volGet(t, ac, v1.Id); userView.Storageid != "" || userView.Path != "" {
		t.Fatalf("alice sees the storage: %+v", userView)
	}
	poolOf := map[string]string{v1.Id: adminView.Storageid}
	if got := volPoolAllocated(t, cs, vc.poolA) + volPoolAllocated(t, cs, vc.poolB); got != allocA0+allocB0+5*gib {
		t.Fatalf("pools allocated %d after attaching 5 GiB, want %d", got, allocA0+allocB0+5*gib)
	}
	if volEvents(t, s, "VOLUME.ATTACH", v1.Id) != 1 {
		t.Error("VOLUME.ATTACH event missing")
	}
	// To a stopped VM: created on a pool too, device 1 there.
	att2, err := ac.Volume.AttachVolume(ac.Volume.NewAttachVolumeParams(v2.Id, vm2.Id))
	if err != nil || att2.State != "Ready" || att2.Deviceid != 1 || att2.Vmstate != "Stopped" {
		t.Fatalf("attach to a stopped VM = %+v, %v", att2, err)
	}
	poolOf[v2.Id] = volGet(t, cs, v2.Id).Storageid
	// listVolumes by VM shows its root disk and its data disk.
	vp := ac.Volume.NewListVolumesParams()
	vp.SetVirtualmachineid(vm1.Id)
	byVM, err := ac.Volume.ListVolumes(vp)
	if err != nil || byVM.Count != 2 {
		t.Fatalf("listVolumes virtualmachineid: %v %+v", err, byVM)
	}
	volCheckPools(t, s, vc)

	// A failed live attach (simulator fault) undoes the pool creation.
	cp = ac.Volume.NewCreateVolumeParams()
	cp.SetName("data3")
	cp.SetZoneid(vc.zoneID)
	cp.SetDiskofferingid(models.DiskOfferingCustomUUID)
	cp.SetSize(3)
	v3, err := ac.Volume.CreateVolume(cp)
	if err != nil {
		t.Fatal(err)
	}
	hostSim(t, s, "name", "AttachVolume", "count", "1", "mode", "invalid", "message", "disk bus full")
	allocBefore := volPoolAllocated(t, cs, vc.poolA) + volPoolAllocated(t, cs, vc.poolB)
	_, err = ac.Volume.AttachVolume(ac.Volume.NewAttachVolumeParams(v3.Id, vm1.Id))
	volJobErr(t, "attach with a failing hypervisor", err, 431, "disk bus full")
	if r := volRow(t, s, v3.Id); r.State != "Allocated" || r.PoolID != 0 || r.InstanceID != 0 || r.DeviceID != 0 || r.Path != "" {
		t.Fatalf("failed attach left %+v", r)
	}
	if got := volPoolAllocated(t, cs, vc.poolA) + volPoolAllocated(t, cs, vc.poolB); got != allocBefore {
		t.Fatalf("failed attach leaked allocation: %d, was %d", got, allocBefore)
	}
	volCheckPools(t, s, vc)

	// ---- delete of an attached volume is refused ----
	_, err = ac.Volume.DeleteVolume(ac.Volume.NewDeleteVolumeParams(v1.Id))
	hostWantErr(t, "deleteVolume attached", err, 431, "not attached")
	if r := volRow(t, s, v1.Id); r.State != "Ready" || !r.Removed.IsZero() {
		t.Fatalf("refused delete changed %+v", r)
	}

	// ---- resize ----
	rp := ac.Volume.NewResizeVolumeParams(v1.Id)
	rp.SetSize(2)
	_, err = ac.Volume.ResizeVolume(rp)
	hostWantErr(t, "resize smaller without shrinkok", err, 431, "shrinkok")
	if r := volRow(t, s, v1.Id); r.Size != 5*gib || r.State != "Ready" {
		t.Fatalf("refused shrink changed %+v", r)
	}
	rp = ac.Volume.NewResizeVolumeParams(v1.Id)
	rp.SetSize(10)
	rs, err := ac.Volume.ResizeVolume(rp)
	if err != nil || rs.Size != 10*gib || rs.State != "Ready" {
		t.Fatalf("resizeVolume 10 = %+v, %v", rs, err)
	}
	volCheckPools(t, s, vc)
	// More than the pool may allocate (100 GiB x 2.0): 533, nothing changes.
	rp = ac.Volume.NewResizeVolumeParams(v1.Id)
	rp.SetSize(500)
	_, err = ac.Volume.ResizeVolume(rp)
	volJobErr(t, "resize beyond the pool", err, 533, "no room")
	if r := volRow(t, s, v1.Id); r.Size != 10*gib || r.State != "Ready" {
		t.Fatalf("refused growth changed %+v", r)
	}
	volCheckPools(t, s, vc)

	// ---- detach, then migrate between pools ----
	dp := ac.Volume.NewDetachVolumeParams()
	dp.SetId(v1.Id)
	dt, err := ac.Volume.DetachVolume(dp)
	if err != nil || dt.Virtualmachineid != "" || dt.State != "Ready" || dt.Attached != "" {
		t.Fatalf("detachVolume = %+v, %v", dt, err)
	}
	if volEvents(t, s, "VOLUME.DETACH", v1.Id) != 1 {
		t.Error("VOLUME.DETACH event missing")
	}
	target := vc.poolB
	if poolOf[v1.Id] == vc.poolB {
		target = vc.poolA
	}
	_, err = ac.Volume.MigrateVolume(ac.Volume.NewMigrateVolumeParams(target, v1.Id))
	hostWantErr(t, "migrateVolume as a user", err, 405, "not allowed")
	mv, err := cs.Volume.MigrateVolume(cs.Volume.NewMigrateVolumeParams(target, v1.Id))
	if err != nil || mv.Storageid != target || mv.State != "Ready" {
		t.Fatalf("migrateVolume = %+v, %v", mv, err)
	}
	if r := volRow(t, s, v1.Id); r.LastPoolID == 0 {
		t.Errorf("migrated volume has no last pool: %+v", r)
	}
	poolOf[v1.Id] = target
	volCheckPools(t, s, vc)
	// The root disk of a running VM moves only live (livemigrate=true): the
	// VM runs on where it was while the pool driver mirrors its disk.
	rootP := cs.Volume.NewListVolumesParams()
	rootP.SetVirtualmachineid(vm1.Id)
	rootP.SetType("ROOT")
	rootP.SetListall(true)
	roots, err := cs.Volume.ListVolumes(rootP)
	if err != nil || roots.Count != 1 {
		t.Fatalf("root volume of vm1: %v %+v", err, roots)
	}
	rootTarget := vc.poolA
	if roots.Volumes[0].Storageid == vc.poolA {
		rootTarget = vc.poolB
	}
	_, err = cs.Volume.MigrateVolume(cs.Volume.NewMigrateVolumeParams(rootTarget, roots.Volumes[0].Id))
	hostWantErr(t, "migrate a running VM's disk", err, 431, "stop it")
	rootID, rootSource := roots.Volumes[0].Id, roots.Volumes[0].Storageid
	vmHost := func() (string, string) {
		p := cs.VirtualMachine.NewListVirtualMachinesParams()
		p.SetId(vm1.Id)
		p.SetListall(true)
		r, err := cs.VirtualMachine.ListVirtualMachines(p)
		if err != nil || r.Count != 1 {
			t.Fatalf("listVirtualMachines vm1: %v %+v", err, r)
		}
		return r.VirtualMachines[0].State, r.VirtualMachines[0].Hostid
	}
	_, hostBefore := vmHost()
	// A mirror the hypervisor gives up on fails the job; the disk stays.
	hostSim(t, s, "name", "MigrateVolumeLive", "count", "1", "mode", "invalid", "message", "the block job was aborted")
	mp := cs.Volume.NewMigrateVolumeParams(rootTarget, rootID)
	mp.SetLivemigrate(true)
	_, err = cs.Volume.MigrateVolume(mp)
	volJobErr(t, "live migrate with a failing mirror", err, 431, "the block job was aborted")
	if r, err := cs.Volume.ListVolumes(rootP); err != nil || r.Count != 1 || r.Volumes[0].State != "Ready" || r.Volumes[0].Storageid != rootSource {
		t.Fatalf("root volume after a failed live migration: %v %+v", err, r)
	}
	volCheckPools(t, s, vc)
	lm, err := cs.Volume.MigrateVolume(mp)
	if err != nil || lm.Storageid != rootTarget || lm.State != "Ready" || lm.Virtualmachineid != vm1.Id || lm.Vmstate != "Running" {
		t.Fatalf("live migrateVolume = %+v, %v", lm, err)
	}
	if st, h := vmHost(); st != "Running" || h != hostBefore {
		t.Fatalf("vm1 is %s on %s after the live migration of its disk, want Running on %s", st, h, hostBefore)
	}
	if r := volRow(t, s, rootID); r.LastPoolID == 0 || volEvents(t, s, "VOLUME.MIGRATE", rootID) != 2 {
		t.Errorf("live-migrated root volume %+v, %d VOLUME.MIGRATE events (want the failure and the move)", r, volEvents(t, s, "VOLUME.MIGRATE", rootID))
	}
	volCheckPools(t, s, vc)
	// The data disk of the stopped VM moves with it attached.
	t2 := vc.poolA
	if poolOf[v2.Id] == vc.poolA {
		t2 = vc.poolB
	}
	if mv2, err := cs.Volume.MigrateVolume(cs.Volume.NewMigrateVolumeParams(t2, v2.Id)); err != nil || mv2.Storageid != t2 || mv2.Virtualmachineid != vm2.Id {
		t.Fatalf("migrate a stopped VM's disk = %+v, %v", mv2, err)
	}
	volCheckPools(t, s, vc)

	// ---- snapshots ----
	// Slow backups, so that BackingUp shows; the job is started without
	// waiting (as the admin, on alice's volume) and followed in the list.
	hostSim(t, s, "name", "BackupSnapshot", "count", "0", "latency", "1500")
	code, body := signedGet(t, s.APIURL, s.Admin.APIKey, s.Admin.SecretKey, url.Values{"command": {"createSnapshot"}, "volumeid": {v1.Id}})
	started, _ := body["createsnapshotresponse"].(map[string]any)
	snapID, _ := started["id"].(string)
	if code != 200 || snapID == "" || started["jobid"] == "" {
		t.Fatalf("createSnapshot: HTTP %d %v", code, body)
	}
	raw := struct{ Id string }{snapID}
	seen := map[string]bool{}
	deadline := time.Now().Add(90 * time.Second)
	for {
		sn := volSnapshot(t, ac, raw.Id)
		seen[sn.State] = true
		if sn.State == "BackedUp" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot still %s (seen %v)", sn.State, seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !seen["BackingUp"] {
		t.Errorf("snapshot states seen %v, want BackingUp on the way", seen)
	}
	hostSim(t, s, "action", "clear")
	sn := volSnapshot(t, ac, raw.Id)
	if sn.Volumeid != v1.Id || sn.Volumename != "data1" || sn.Snapshottype != "MANUAL" || sn.Virtualsize != 10*gib ||
		sn.Physicalsize != 10*gib || !sn.Revertable || sn.Account != "alice" || sn.Zoneid != vc.zoneID ||
		sn.Downloaddetails["downloadPercent"] != "100" || !strings.HasPrefix(sn.Name, "detached_data1_") {
		t.Fatalf("listSnapshots = %+v", sn)
	}
	var backup models.SnapshotStoreRef
	if err := s.DB.NewSelect().Model(&backup).Where("store_role = ? AND snapshot_id = (SELECT id FROM snapshots WHERE uuid = ?)", "Image", raw.Id).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(vc.storeDir, backup.InstallPath)); err != nil || fi.Size() != 10*gib || backup.DownloadPct != 100 {
		t.Fatalf("backup file %s: %v (ref %+v)", backup.InstallPath, err, backup)
	}
	if volEvents(t, s, "SNAPSHOT.CREATE", raw.Id) != 1 || volUsage(t, s, "SNAPSHOT.CREATE", "snapshots", raw.Id) != 1 {
		t.Error("SNAPSHOT.CREATE event or usage event missing")
	}
	if r := volRow(t, s, v1.Id); r.State != "Ready" {
		t.Fatalf("volume after snapshot %+v", r)
	}

	// A simulator fault during the backup leaves no half-made snapshot.
	snapsBefore := hostCount(t, s, (*models.SnapshotStoreRef)(nil), "")
	hostSim(t, s, "name", "BackupSnapshot", "count", "1", "mode", "invalid", "message", "secondary storage full")
	_, err = ac.Snapshot.CreateSnapshot(ac.Snapshot.NewCreateSnapshotParams(v1.Id))
	volJobErr(t, "snapshot with a failing backup", err, 431, "secondary storage full")
	slp := ac.Snapshot.NewListSnapshotsParams()
	slp.SetVolumeid(v1.Id)
	if sl, err := ac.Snapshot.ListSnapshots(slp); err != nil || sl.Count != 1 {
		t.Fatalf("after a failed snapshot listSnapshots = %+v, %v", sl, err)
	}
	if n := hostCount(t, s, (*models.SnapshotStoreRef)(nil), ""); n != snapsBefore {
		t.Fatalf("snapshot copies %d after a failed snapshot, were %d", n, snapsBefore)
	}
	if n := hostCount(t, s, (*models.Snapshot)(nil), "volume_id = (SELECT id FROM volumes WHERE uuid = ?)", v1.Id); n != 1 {
		t.Fatalf("%d live snapshots of the volume, want 1", n)
	}
	if files := catFiles(t, filepath.Join(vc.storeDir, "snapshots")); len(files) != 1 {
		t.Fatalf("snapshot files %v, want the one backup", files)
	}
	if r := volRow(t, s, v1.Id); r.State != "Ready" {
		t.Fatalf("volume after a failed snapshot: %+v", r)
	}

	// ---- revert: grow the volume, revert, it is 10 GiB again ----
	rp = ac.Volume.NewResizeVolumeParams(v1.Id)
	rp.SetSize(20)
	if _, err := ac.Volume.ResizeVolume(rp); err != nil {
		t.Fatalf("resize 20: %v", err)
	}
	rv, err := ac.Snapshot.RevertSnapshot(ac.Snapshot.NewRevertSnapshotParams(raw.Id))
	if err != nil || rv.Id != raw.Id {
		t.Fatalf("revertSnapshot = %+v, %v", rv, err)
	}
	if r := volRow(t, s, v1.Id); r.Size != 10*gib || r.State != "Ready" {
		t.Fatalf("after revert %+v", r)
	}
	volCheckPools(t, s, vc)
	// A snapshot of a running VM's disk is not reverted.
	if _, err := ac.Volume.AttachVolume(ac.Volume.NewAttachVolumeParams(v1.Id, vm1.Id)); err == nil {
		_, err = ac.Snapshot.RevertSnapshot(ac.Snapshot.NewRevertSnapshotParams(raw.Id))
		hostWantErr(t, "revert under a running VM", err, 431, "stop it")
		dp := ac.Volume.NewDetachVolumeParams()
		dp.SetId(v1.Id)
		if _, err := ac.Volume.DetachVolume(dp); err != nil {
			t.Fatalf("detach: %v", err)
		}
	} else if poolOf[v1.Id] != "" {
		t.Logf("re-attach after migration refused (pool not reached): %v", err)
	}

	// ---- a volume and a template from the snapshot ----
	fp := ac.Volume.NewCreateVolumeParams()
	fp.SetSnapshotid(raw.Id)
	fp.SetName("from-snap")
	fv, err := ac.Volume.CreateVolume(fp)
	if err != nil || fv.State != "Ready" || fv.Size != 10*gib || fv.Name != "from-snap" {
		t.Fatalf("createVolume from snapshot = %+v, %v", fv, err)
	}
	if volGet(t, cs, fv.Id).Storageid == "" {
		t.Fatal("volume from a snapshot has no pool")
	}
	volCheckPools(t, s, vc)
	tp := ac.Template.NewCreateTemplateParams("from snapshot", "snap-tmpl", models.OSTypeOtherLinux64UUID)
	tp.SetSnapshotid(raw.Id)
	tm, err := ac.Template.CreateTemplate(tp)
	if err != nil || tm.Id == "" {
		t.Fatalf("createTemplate: %+v, %v", tm, err)
	}
	got := catTemplate(t, cs, tm.Id, "")
	if !got.Isready || got.Name != "snap-tmpl" || got.Size != 10*gib || got.Account != "alice" || got.Templatetype != "USER" {
		t.Fatalf("template from snapshot = %+v", got)
	}
	// From a volume: the stopped VM's data disk, not the running VM's root.
	tp = ac.Template.NewCreateTemplateParams("from volume", "vol-tmpl", models.OSTypeOtherLinux64UUID)
	tp.SetVolumeid(v2.Id)
	tv, err := ac.Template.CreateTemplate(tp)
	if err != nil {
		t.Fatalf("createTemplate from a volume: %v", err)
	}
	if got := catTemplate(t, cs, tv.Id, ""); !got.Isready || got.Size != volRow(t, s, v2.Id).Size {
		t.Fatalf("template from a volume = %+v", got)
	}
	tp = ac.Template.NewCreateTemplateParams("root", "root-tmpl", models.OSTypeOtherLinux64UUID)
	tp.SetVolumeid(roots.Volumes[0].Id)
	_, err = ac.Template.CreateTemplate(tp)
	hostWantErr(t, "createTemplate of a running VM's root", err, 431, "stop it")
	if files := catFiles(t, filepath.Join(vc.storeDir, "template")); len(files) < 3 {
		t.Fatalf("template files %v", files)
	}

	// ---- snapshot policies are Temporal Schedules ----
	tc := tenTemporal(t, s)
	pp := ac.Snapshot.NewCreateSnapshotPolicyParams("DAILY", 2, "30:02", "Europe/Paris", v1.Id)
	pol, err := ac.Snapshot.CreateSnapshotPolicy(pp)
	if err != nil || pol.Id == "" || pol.Intervaltype != 1 || pol.Schedule != "30:02" || pol.Maxsnaps != 2 || pol.Volumeid != v1.Id {
		t.Fatalf("createSnapshotPolicy = %+v, %v", pol, err)
	}
	h := tc.ScheduleClient().GetHandle(ctx, "nimbus-snappolicy-"+pol.Id)
	desc, err := volDescribe(t, h)
	if err != nil {
		t.Fatalf("the policy's schedule: %v", err)
	}
	cal := desc.Schedule.Spec.Calendars
	act, ok := desc.Schedule.Action.(*client.ScheduleWorkflowAction)
	if len(cal) != 1 || cal[0].Minute[0].Start != 30 || cal[0].Hour[0].Start != 2 || desc.Schedule.Spec.TimeZoneName != "Europe/Paris" ||
		!ok || act.TaskQueue != s.TaskQueue || fmt.Sprint(act.Workflow) != "SnapshotPolicyRun" {
		t.Fatalf("schedule = %+v, action %+v", desc.Schedule.Spec, desc.Schedule.Action)
	}
	lpp := ac.Snapshot.NewListSnapshotPoliciesParams()
	lpp.SetVolumeid(v1.Id)
	if pl, err := ac.Snapshot.ListSnapshotPolicies(lpp); err != nil || pl.Count != 1 || pl.SnapshotPolicies[0].Id != pol.Id || pl.SnapshotPolicies[0].Timezone != "Europe/Paris" {
		t.Fatalf("listSnapshotPolicies = %+v, %v", pl, err)
	}
	code, body = signedGet(t, s.APIURL, s.Admin.APIKey, s.Admin.SecretKey, url.Values{"command": {"updateSnapshotPolicy"}, "id": {pol.Id}, "schedule": {"15:03"}})
	if code != 200 {
		t.Fatalf("updateSnapshotPolicy: HTTP %d %v", code, body)
	}
	if desc, err = volDescribe(t, h); err != nil || desc.Schedule.Spec.Calendars[0].Hour[0].Start != 3 || desc.Schedule.Spec.Calendars[0].Minute[0].Start != 15 {
		t.Fatalf("schedule after update: %+v %v", desc, err)
	}
	_, err = ac.Snapshot.CreateSnapshotPolicy(ac.Snapshot.NewCreateSnapshotPolicyParams("WEEKLY", 2, "30:02:9", "UTC", v1.Id))
	hostWantErr(t, "weekly policy on day 9", err, 431, "day of the week")
	_, err = ac.Snapshot.CreateSnapshotPolicy(ac.Snapshot.NewCreateSnapshotPolicyParams("DAILY", 2, "30:02", "Mars/Olympus", v1.Id))
	hostWantErr(t, "unknown time zone", err, 431, "time zone")
	// Three runs (triggered one after the other: the schedule skips a run
	// that would overlap the last) keep the two newest.
	var policySnaps []string
	for i := 0; i < 3; i++ {
		before := policySnaps
		time.Sleep(time.Second) // a run's workflow ID carries its second
		if err := h.Trigger(ctx, client.ScheduleTriggerOptions{}); err != nil {
			t.Fatalf("trigger: %v", err)
		}
		deadline := time.Now().Add(90 * time.Second)
		for {
			d, err := volDescribe(t, h)
			if err != nil {
				t.Fatal(err)
			}
			now := volPolicySnaps(t, s, pol.Id)
			if d.Info.NumActions == i+1 && len(d.Info.RunningWorkflows) == 0 && now != nil {
				if len(now) != min(len(before)+1, 2) || (len(before) > 0 && now[len(now)-1] == before[len(before)-1]) {
					t.Fatalf("run %d: policy snapshots %v (before %v)", i+1, now, before)
				}
				policySnaps = now
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("run %d: %d actions, %d running, policy snapshots %v (before %v)", i+1, d.Info.NumActions, len(d.Info.RunningWorkflows), now, before)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	stp := ac.Snapshot.NewListSnapshotsParams()
	stp.SetIntervaltype("DAILY")
	if sl, err := ac.Snapshot.ListSnapshots(stp); err != nil || sl.Count != 2 {
		t.Fatalf("daily snapshots = %+v, %v (policy ones %v)", sl, err, policySnaps)
	}
	dpp := ac.Snapshot.NewDeleteSnapshotPoliciesParams()
	dpp.SetId(pol.Id)
	if _, err := ac.Snapshot.DeleteSnapshotPolicies(dpp); err != nil {
		t.Fatalf("deleteSnapshotPolicies: %v", err)
	}
	var nf *serviceerror.NotFound
	if _, err := volDescribe(t, h); !errors.As(err, &nf) {
		t.Fatalf("schedule after delete: %v, want not found", err)
	}
	if pl, err := ac.Snapshot.ListSnapshotPolicies(lpp); err != nil || pl.Count != 0 {
		t.Fatalf("listSnapshotPolicies after delete = %+v, %v", pl, err)
	}

	// ---- delete the snapshot and the volumes ----
	if _, err := ac.Snapshot.DeleteSnapshot(ac.Snapshot.NewDeleteSnapshotParams(raw.Id)); err != nil {
		t.Fatalf("deleteSnapshot: %v", err)
	}
	slp = ac.Snapshot.NewListSnapshotsParams()
	slp.SetId(raw.Id)
	if sl, err := ac.Snapshot.ListSnapshots(slp); err != nil || sl.Count != 0 {
		t.Fatalf("listSnapshots after delete = %+v, %v", sl, err)
	}
	if _, err := os.Stat(filepath.Join(vc.storeDir, backup.InstallPath)); !os.IsNotExist(err) {
		t.Fatalf("backup still there: %v", err)
	}
	if volUsage(t, s, "SNAPSHOT.DELETE", "snapshots", raw.Id) != 1 {
		t.Error("SNAPSHOT.DELETE usage event missing")
	}
	for _, id := range []string{fv.Id, v3.Id} {
		if r, err := ac.Volume.DeleteVolume(ac.Volume.NewDeleteVolumeParams(id)); err != nil || !r.Success {
			t.Fatalf("deleteVolume %s = %+v, %v", id, r, err)
		}
		if volUsage(t, s, "VOLUME.DELETE", "volumes", id) != 1 {
			t.Errorf("VOLUME.DELETE usage event for %s missing", id)
		}
	}
	lp = ac.Volume.NewListVolumesParams()
	lp.SetType("DATADISK")
	if list, err := ac.Volume.ListVolumes(lp); err != nil || list.Count != 2 {
		t.Fatalf("after deletes listVolumes = %+v, %v", list, err)
	}
	volCheckPools(t, s, vc)
	// Device ids past the hypervisor's limit are refused before any job.
	xp := ac.Volume.NewAttachVolumeParams(v1.Id, vm1.Id)
	xp.SetDeviceid(99)
	_, err = ac.Volume.AttachVolume(xp)
	hostWantErr(t, "attach at device 99", err, 431, "device ids 1 to")
	// The account's counts are what its inventory holds.
	aliceID := arID(t, s, "accounts", alice.AccountID)
	stored, err := models.AccountsCounts(ctx, s.DB, []int64{aliceID})
	if err != nil {
		t.Fatal(err)
	}
	inv, err := models.InventoryCounts(ctx, s.DB, aliceID)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{models.ResourceVolume, models.ResourcePrimaryStorage, models.ResourceSnapshot, models.ResourceSecondaryStorage, models.ResourceTemplate} {
		if stored[aliceID][typ] != inv[typ] {
			t.Errorf("alice's %s count %d, inventory %d", typ, stored[aliceID][typ], inv[typ])
		}
	}

	// ---- deleting an account removes its volumes, snapshots and policies ----
	bc := bob.Client
	cp = bc.Volume.NewCreateVolumeParams()
	cp.SetName("bob-data")
	cp.SetZoneid(vc.zoneID)
	cp.SetDiskofferingid(models.DiskOfferingCustomUUID)
	cp.SetSize(2)
	bv, err := bc.Volume.CreateVolume(cp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bc.Volume.AttachVolume(bc.Volume.NewAttachVolumeParams(bv.Id, bvm.Id)); err != nil {
		t.Fatalf("bob attach: %v", err)
	}
	bsnap, err := bc.Snapshot.CreateSnapshot(bc.Snapshot.NewCreateSnapshotParams(bv.Id))
	if err != nil {
		t.Fatalf("bob snapshot: %v", err)
	}
	bpol, err := bc.Snapshot.CreateSnapshotPolicy(bc.Snapshot.NewCreateSnapshotPolicyParams("HOURLY", 1, "10", "UTC", bv.Id))
	if err != nil {
		t.Fatalf("bob policy: %v", err)
	}
	if _, err := cs.Account.DeleteAccount(cs.Account.NewDeleteAccountParams(bob.AccountID)); err != nil {
		t.Fatalf("deleteAccount bob: %v", err)
	}
	if n := hostCount(t, s, (*models.Volume)(nil), "account_id = (SELECT id FROM accounts WHERE uuid = ?)", bob.AccountID); n != 0 {
		t.Fatalf("%d volumes of bob left", n)
	}
	if n := hostCount(t, s, (*models.Snapshot)(nil), "uuid = ?", bsnap.Id); n != 0 {
		t.Fatal("bob's snapshot left")
	}
	if _, err := volDescribe(t, tc.ScheduleClient().GetHandle(ctx, "nimbus-snappolicy-"+bpol.Id)); !errors.As(err, &nf) {
		t.Fatalf("bob's policy schedule: %v, want not found", err)
	}
	for _, f := range catFiles(t, filepath.Join(vc.storeDir, "snapshots")) {
		if strings.Contains(f, bsnap.Id) {
			t.Fatalf("bob's backup %s left", f)
		}
	}
	volCheckPools(t, s, vc)
}

// volDescribe describes a schedule, retrying calls that time out on a
// loaded Temporal; not found is answered at once.
func volDescribe(t *testing.T, h client.ScheduleHandle) (*client.ScheduleDescription, error) {
	t.Helper()
	var nf *serviceerror.NotFound
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		d, err := h.Describe(ctx)
		cancel()
		if err == nil || errors.As(err, &nf) || i == 4 {
			return d, err
		}
		time.Sleep(time.Second)
	}
}

// volPolicySnaps lists a policy's live snapshots, oldest first, when all
// are BackedUp (a run is over); nil while one is on its way in or out.
func volPolicySnaps(t *testing.T, s *testenv.Stack, policyID string) []string {
	t.Helper()
	var snaps []models.Snapshot
	if err := s.DB.NewSelect().Model(&snaps).
		Where("policy_id = (SELECT id FROM snapshot_policies WHERE uuid = ?)", policyID).
		Order("id").Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	ids := []string{}
	for _, sn := range snaps {
		if sn.State != "BackedUp" {
			return nil
		}
		ids = append(ids, sn.UUID)
	}
	return ids
}
