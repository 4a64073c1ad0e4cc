package tests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"

	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// The KVM tests run a real cloud on this machine's libvirtd
// (NIMBUS_TEST_LIBVIRT, qemu:///system; scripts/services.sh starts it) with
// the bootable test template (NIMBUS_TEST_TEMPLATE), whose guest prints
// "NIMBUS-TEST-GUEST-BOOTED hostname=<name>" and "NIMBUS-TEST-GUEST-DISKS
// vda ..." on its serial console, which the libvirt driver logs to
// /var/log/nimbus/console/<instance name>.log.

const kvmConsoleDir = "/var/log/nimbus/console"

// kvmCloud is a zone set up as an operator would: zone > physical network
// whose guest traffic label names a bridge > pod > KVM cluster > host
// qemu:///system > primary storage on a directory > image store > the test
// template > a tiny offering > a shared untagged network on the bridge.
type kvmCloud struct {
	s          *testenv.Stack
	cs         *cloudstack.CloudStackClient
	libvirt    string
	bridge     string
	zoneID     string
	podID      string
	clusterID  string
	hostID     string
	poolID     string
	poolDir    string
	storeDir   string
	templateID string
	offeringID string
	networkID  string
}

func kvmNeed(t *testing.T) (libvirtURL, template string) {
	t.Helper()
	libvirtURL, template = os.Getenv("NIMBUS_TEST_LIBVIRT"), os.Getenv("NIMBUS_TEST_TEMPLATE")
	if libvirtURL == "" || template == "" {
		t.Skip("NIMBUS_TEST_LIBVIRT or NIMBUS_TEST_TEMPLATE is not set: no libvirtd or test template here (scripts/services.sh sets both up)")
	}
	return libvirtURL, template
}

// kvmVirsh runs virsh against the test libvirtd.
func kvmVirsh(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("virsh", append([]string{"-c", os.Getenv("NIMBUS_TEST_LIBVIRT")}, args...)...).CombinedOutput()
	return string(out), err
}

// kvmBridge creates a Linux bridge for the test's traffic label.
func kvmBridge(t *testing.T) string {
	t.Helper()
	for range 20 {
		name := fmt.Sprintf("nimbus-br%d", rand.IntN(1000))
		if _, err := os.Stat("/sys/class/net/" + name); err == nil {
			continue
		}
		if out, err := exec.Command("ip", "link", "add", name, "type", "bridge").CombinedOutput(); err != nil {
			t.Fatalf("ip link add %s: %v: %s", name, err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "link", "del", name).Run() })
		if out, err := exec.Command("ip", "link", "set", name, "up").CombinedOutput(); err != nil {
			t.Fatalf("ip link set %s up: %v: %s", name, err, out)
		}
		return name
	}
	t.Fatal("no free bridge name")
	return ""
}

// kvmTemplateServer serves the test template (and garbage) over HTTP, as a
// user's web server would.
func kvmTemplateServer(t *testing.T, template string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/nimbus-test.qcow2":
			http.ServeFile(w, r, template)
		case "/garbage.qcow2":
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, strings.Repeat("<html><body>Moved to the new site</body></html>\n", 200))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func kvmSetup(t *testing.T) *kvmCloud {
	t.Helper()
	libvirtURL, template := kvmNeed(t)
	return kvmSetupFor(t, "KVM", libvirtURL, template, "QCOW2")
}

// kvmSetupFor sets up the cloud for a libvirt hypervisor type: its host
// URL, and its template file registered in format.
func kvmSetupFor(t *testing.T, hv, libvirtURL, template, format string) *kvmCloud {
	t.Helper()
	s := testenv.StartStack(t, testenv.StackOptions{})
	cs := s.Client
	cs.Timeout(5 * time.Minute)
	c := &kvmCloud{s: s, cs: cs, libvirt: libvirtURL, bridge: kvmBridge(t)}

	z := vmtMust[*cloudstack.CreateZoneResponse](t, "createZone")(cs.Zone.CreateZone(cs.Zone.NewCreateZoneParams("8.8.8.8", "10.0.0.2", "kvm-zone", "Advanced")))
	c.zoneID = z.Id
	pn := vmtMust[*cloudstack.CreatePhysicalNetworkResponse](t, "createPhysicalNetwork")(cs.Network.CreatePhysicalNetwork(cs.Network.NewCreatePhysicalNetworkParams("kvm-phys", c.zoneID)))
	for _, tt := range []string{"Guest", "Management", "Public", "Storage"} {
		p := cs.Usage.NewAddTrafficTypeParams(pn.Id, tt)
		p.SetKvmnetworklabel(c.bridge)
		vmtMust[*cloudstack.AddTrafficTypeResponse](t, "addTrafficType "+tt)(cs.Usage.AddTrafficType(p))
	}
	up := cs.Network.NewUpdatePhysicalNetworkParams(pn.Id)
	up.SetState("Enabled")
	vmtMust[*cloudstack.UpdatePhysicalNetworkResponse](t, "enable physical network")(cs.Network.UpdatePhysicalNetwork(up))
	pp := cs.Pod.NewCreatePodParams("kvm-pod", c.zoneID)
	pp.SetGateway("192.168.60.1")
	pp.SetNetmask("255.255.255.0")
	pp.SetStartip("192.168.60.10")
	pp.SetEndip("192.168.60.20")
	c.podID = vmtMust[*cloudstack.CreatePodResponse](t, "createPod")(cs.Pod.CreatePod(pp)).Id
	c.clusterID = vmtMust[*cloudstack.AddClusterResponse](t, "addCluster")(cs.Cluster.AddCluster(cs.Cluster.NewAddClusterParams("kvm-c1", "CloudManaged", hv, c.podID, c.zoneID))).Id

	hp := cs.Host.NewAddHostParams(hv, c.podID, libvirtURL, c.zoneID)
	hp.SetClusterid(c.clusterID)
	h := vmtMust[*cloudstack.AddHostResponse](t, "addHost "+libvirtURL)(cs.Host.AddHost(hp))
	if h.State != "Up" || h.Cpunumber <= 0 || h.Memorytotal <= 0 || h.Hypervisor != hv {
		t.Fatalf("addHost: %+v", h)
	}
	c.hostID = h.Id

	// Primary storage: a directory the host's QEMU can enter.
	var err error
	tmp, prefix := "", "nimbus-kvm-primary-"
	if hv == "LXC" {
		tmp, prefix = "/tmp", "nlxc-" // libvirt's LXC loop devices take image paths under 64 characters
	}
	if c.poolDir, err = os.MkdirTemp(tmp, prefix); err != nil {
		t.Fatal(err)
	}
	os.Chmod(c.poolDir, 0o755)
	t.Cleanup(func() { os.RemoveAll(c.poolDir) })
	sp := cs.Pool.NewCreateStoragePoolParams("kvm-primary", "sharedmountpoint://"+c.poolDir, c.zoneID)
	sp.SetPodid(c.podID)
	sp.SetClusterid(c.clusterID)
	pool := vmtMust[*cloudstack.CreateStoragePoolResponse](t, "createStoragePool")(cs.Pool.CreateStoragePool(sp))
	if pool.State != "Up" || pool.Disksizetotal <= 0 || pool.Type != "SharedMountPoint" {
		t.Fatalf("createStoragePool: %+v", pool)
	}
	c.poolID = pool.Id
	t.Cleanup(func() { kvmForgetPool(c.poolID) })
	if out, err := kvmVirsh(t, "pool-info", c.poolID); err != nil || !strings.Contains(out, "running") || !strings.Contains(out, "Autostart:      yes") {
		t.Fatalf("virsh pool-info %s: %v\n%s", c.poolID, err, out)
	}

	c.storeDir = filepath.Join(s.Dir, "kvm-secondary")
	is := cs.ImageStore.NewAddImageStoreParams("NFS")
	is.SetName("kvm-secondary")
	is.SetUrl("file://" + c.storeDir)
	is.SetZoneid(c.zoneID)
	vmtMust[*cloudstack.AddImageStoreResponse](t, "addImageStore")(cs.ImageStore.AddImageStore(is))
	ez := cs.Zone.NewUpdateZoneParams(c.zoneID)
	ez.SetAllocationstate("Enabled")
	_, _ = cs.Zone.UpdateZone(ez)

	srv := kvmTemplateServer(t, template)
	rp := cs.Template.NewRegisterTemplateParams("nimbus test guest", format, hv, "nimbus-test", srv.URL+"/nimbus-test.qcow2")
	rp.SetZoneid(c.zoneID)
	rp.SetOstypeid(models.OSTypeOtherLinux64UUID)
	rp.SetIspublic(true)
	c.templateID = vmtMust[*cloudstack.RegisterTemplateResponse](t, "registerTemplate")(cs.Template.RegisterTemplate(rp)).RegisterTemplate[0].Id
	tm, _ := catWaitTemplate(t, cs, c.templateID, 2*time.Minute, func(x *cloudstack.Template) bool { return x.Isready || strings.Contains(x.Status, "rror") })
	if !tm.Isready {
		t.Fatalf("the test template did not download: %s", tm.Status)
	}

	op := cs.ServiceOffering.NewCreateServiceOfferingParams("1 vCPU, 128 MB", "kvm-tiny")
	op.SetCpunumber(1)
	op.SetCpuspeed(500)
	op.SetMemory(128)
	c.offeringID = vmtMust[*cloudstack.CreateServiceOfferingResponse](t, "createServiceOffering")(cs.ServiceOffering.CreateServiceOffering(op)).Id

	np := cs.Network.NewCreateNetworkParams("kvm-shared", models.NetworkOfferingDefaultSharedUUID, c.zoneID)
	np.SetDisplaytext("shared, untagged, on the test bridge")
	np.SetVlan("untagged")
	np.SetGateway("10.61.0.1")
	np.SetNetmask("255.255.255.0")
	np.SetStartip("10.61.0.10")
	np.SetEndip("10.61.0.50")
	np.SetAcltype("Domain")
	c.networkID = vmtMust[*cloudstack.CreateNetworkResponse](t, "createNetwork")(cs.Network.CreateNetwork(np)).Id
	return c
}

// kvmForgetPool removes a pool a failed test left on the host.
func kvmForgetPool(id string) {
	virsh := func(args ...string) {
		exec.Command("virsh", append([]string{"-c", os.Getenv("NIMBUS_TEST_LIBVIRT")}, args...)...).Run()
	}
	virsh("pool-destroy", id)
	virsh("pool-undefine", id)
}

// deploy deploys a tiny VM and waits for its job.
func (c *kvmCloud) deploy(t *testing.T, name string) (*cloudstack.DeployVirtualMachineResponse, error) {
	t.Helper()
	p := c.cs.VirtualMachine.NewDeployVirtualMachineParams(c.offeringID, c.templateID, c.zoneID)
	p.SetName(name)
	p.SetNetworkids([]string{c.networkID})
	return c.cs.VirtualMachine.DeployVirtualMachine(p)
}

// kvmForgetDomain destroys and undefines a domain a failed test left.
func kvmForgetDomain(name string) {
	virsh := func(args ...string) {
		exec.Command("virsh", append([]string{"-c", os.Getenv("NIMBUS_TEST_LIBVIRT")}, args...)...).Run()
	}
	virsh("destroy", name)
	virsh("undefine", name, "--nvram")
}

// console reads a VM's serial log.
func kvmConsole(name string) string {
	b, _ := os.ReadFile(filepath.Join(kvmConsoleDir, name+".log"))
	return string(b)
}

func kvmDomState(t *testing.T, name string) string {
	t.Helper()
	return kvmDomStateAt(os.Getenv("NIMBUS_TEST_LIBVIRT"), name)
}

// kvmDomStateAt is virsh domstate on a libvirtd, "absent: ..." when the
// domain is not defined.
func kvmDomStateAt(url, name string) string {
	out, err := exec.Command("virsh", "-c", url, "domstate", name).CombinedOutput()
	if err != nil {
		return "absent: " + strings.TrimSpace(string(out))
	}
	return strings.TrimSpace(string(out))
}

// kvmBoots counts the boots of one VM in its serial log: the marker with
// its host name and UUID (the log is appended to across starts, and keeps
// the boots of earlier VMs that had the same instance name).
func kvmBoots(name, hostname, uuid string) int {
	return strings.Count(kvmConsole(name), "NIMBUS-TEST-GUEST-BOOTED hostname="+hostname+" uuid="+uuid)
}

// kvmWaitBoot waits for a boot of the VM newer than the `before` seen earlier.
func kvmWaitBoot(t *testing.T, name, hostname, uuid string, before int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for kvmBoots(name, hostname, uuid) <= before {
		if time.Now().After(deadline) {
			t.Fatalf("%s (%s, %s) did not boot (again) within %v; domain %s; serial:\n%s", name, hostname, uuid, timeout, kvmDomState(t, name), kvmConsole(name))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kvmLastReport is what the guest's last line with marker says after it,
// e.g. "vda vdb" for NIMBUS-TEST-GUEST-DISKS.
func kvmLastReport(name, marker string) string {
	last := ""
	for _, line := range strings.Split(kvmConsole(name), "\n") {
		if i := strings.Index(line, marker); i >= 0 {
			last = strings.TrimSpace(line[i+len(marker):])
		}
	}
	return last
}

// kvmWaitReport waits for the guest's last report of marker to be want.
func kvmWaitReport(t *testing.T, name, marker, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for kvmLastReport(name, marker) != want {
		if time.Now().After(deadline) {
			t.Fatalf("the guest %s reports %s %q, want %q; serial:\n%s", name, marker, kvmLastReport(name, marker), want, kvmConsole(name))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func kvmLastDisks(name string) string { return kvmLastReport(name, "NIMBUS-TEST-GUEST-DISKS") }

func kvmWaitDisks(t *testing.T, name, want string, timeout time.Duration) {
	t.Helper()
	kvmWaitReport(t, name, "NIMBUS-TEST-GUEST-DISKS", want, timeout)
}

// vols lists the pool's volumes as virsh shows them.
func (c *kvmCloud) vols(t *testing.T) string {
	t.Helper()
	out, err := kvmVirsh(t, "vol-list", c.poolID)
	if err != nil {
		t.Fatalf("virsh vol-list %s: %v: %s", c.poolID, err, out)
	}
	return out
}

// TestKVMCloud runs a VM's life on a real libvirtd through the API: boot
// from the template, stop, start, reboot, a data volume hot-plugged,
// snapshotted and unplugged, destroy with expunge, then the pool deleted,
// with nothing left on the host; and the faults: a garbage template, an
// unreachable host, libvirtd killed during a deploy.
func TestKVMCloud(t *testing.T) {
	c := kvmSetup(t)
	cs := c.cs
	ctx := context.Background()

	t.Run("lifecycle", func(t *testing.T) {
		t0 := time.Now()
		vm, err := c.deploy(t, "kvm-vm1")
		if err != nil {
			t.Fatalf("deployVirtualMachine: %v", err)
		}
		t.Cleanup(func() { kvmForgetDomain(vm.Instancename) })
		if vm.State != "Running" || vm.Hostid != c.hostID || vm.Instancename == "" {
			t.Fatalf("deployed %+v", vm)
		}
		kvmWaitBoot(t, vm.Instancename, "kvm-vm1", vm.Id, 0, 90*time.Second)
		t.Logf("deploy to Running and booted in %v", time.Since(t0).Round(time.Millisecond))
		if st := kvmDomState(t, vm.Instancename); st != "running" {
			t.Fatalf("virsh domstate %s: %s", vm.Instancename, st)
		}
		// The root volume is an overlay on the template's copy in the pool.
		rp := cs.Volume.NewListVolumesParams()
		rp.SetVirtualmachineid(vm.Id)
		rp.SetType("ROOT")
		root := vmtMust[*cloudstack.ListVolumesResponse](t, "listVolumes root")(cs.Volume.ListVolumes(rp))
		if root.Count != 1 || root.Volumes[0].Storageid != c.poolID {
			t.Fatalf("root volume: %+v", root)
		}
		rootPath := filepath.Join(c.poolDir, root.Volumes[0].Path)
		info, err := exec.Command("qemu-img", "info", "-U", rootPath).CombinedOutput()
		if err != nil || !strings.Contains(string(info), "backing file: "+filepath.Join(c.poolDir, "tmpl-"+c.templateID)) {
			t.Fatalf("qemu-img info %s: %v\n%s", rootPath, err, info)
		}

		boots := kvmBoots(vm.Instancename, "kvm-vm1", vm.Id)
		t1 := time.Now()
		if _, err := cs.VirtualMachine.StopVirtualMachine(cs.VirtualMachine.NewStopVirtualMachineParams(vm.Id)); err != nil {
			t.Fatalf("stopVirtualMachine: %v", err)
		}
		if v := c.vm(t, vm.Id); v.State != "Stopped" {
			t.Fatalf("after stop: %s", v.State)
		}
		t.Logf("stopped in %v", time.Since(t1).Round(time.Millisecond))
		// Stopped is shut off, or (as CloudStack's KVM agent does it)
		// undefined until the next start defines it again.
		if st := kvmDomState(t, vm.Instancename); st != "shut off" && !strings.HasPrefix(st, "absent") {
			t.Fatalf("after stop the domain is %s", st)
		}
		if !strings.Contains(kvmConsole(vm.Instancename), "NIMBUS-GUEST-POWEROFF") {
			t.Logf("the guest did not power itself down (a forced stop?); serial:\n%s", kvmConsole(vm.Instancename))
		}
		if _, err := cs.VirtualMachine.StartVirtualMachine(cs.VirtualMachine.NewStartVirtualMachineParams(vm.Id)); err != nil {
			t.Fatalf("startVirtualMachine: %v", err)
		}
		kvmWaitBoot(t, vm.Instancename, "kvm-vm1", vm.Id, boots, 90*time.Second)
		boots = kvmBoots(vm.Instancename, "kvm-vm1", vm.Id)
		if _, err := cs.VirtualMachine.RebootVirtualMachine(cs.VirtualMachine.NewRebootVirtualMachineParams(vm.Id)); err != nil {
			t.Fatalf("rebootVirtualMachine: %v", err)
		}
		kvmWaitBoot(t, vm.Instancename, "kvm-vm1", vm.Id, boots, 90*time.Second)
		if v := c.vm(t, vm.Id); v.State != "Running" {
			t.Fatalf("after reboot: %s", v.State)
		}

		// A data volume, hot-plugged: the guest sees vdb; snapshotted while
		// attached; unplugged: the guest sees it go.
		kvmWaitDisks(t, vm.Instancename, "vda", 30*time.Second)
		cp := cs.Volume.NewCreateVolumeParams()
		cp.SetName("kvm-data")
		cp.SetZoneid(c.zoneID)
		cp.SetDiskofferingid(models.DiskOfferingCustomUUID)
		cp.SetSize(1)
		data := vmtMust[*cloudstack.CreateVolumeResponse](t, "createVolume")(cs.Volume.CreateVolume(cp))
		att, err := cs.Volume.AttachVolume(cs.Volume.NewAttachVolumeParams(data.Id, vm.Id))
		if err != nil || att.Virtualmachineid != vm.Id || att.Storageid != c.poolID {
			t.Fatalf("attachVolume: %v %+v", err, att)
		}
		kvmWaitDisks(t, vm.Instancename, "vda vdb", 30*time.Second)
		if !strings.Contains(c.vols(t), att.Path) {
			t.Fatalf("the data volume %s is not in the pool:\n%s", att.Path, c.vols(t))
		}
		snap, err := cs.Snapshot.CreateSnapshot(cs.Snapshot.NewCreateSnapshotParams(data.Id))
		if err != nil || snap.State != "BackedUp" {
			t.Fatalf("createSnapshot: %v %+v", err, snap)
		}
		var backups []string
		filepath.Walk(c.storeDir, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() && strings.Contains(p, "snapshots") {
				backups = append(backups, p)
			}
			return nil
		})
		if len(backups) != 1 {
			t.Fatalf("snapshot backups on secondary storage: %q", backups)
		}
		if out, err := exec.Command("qemu-img", "info", backups[0]).CombinedOutput(); err != nil || !strings.Contains(string(out), "file format: qcow2") ||
			strings.Contains(string(out), "backing file") || !strings.Contains(string(out), "virtual size: 1 GiB") {
			t.Fatalf("the backup is not a standalone 1 GiB qcow2: %v\n%s", err, out)
		}
		if _, err := cs.Volume.DetachVolume(func() *cloudstack.DetachVolumeParams {
			p := cs.Volume.NewDetachVolumeParams()
			p.SetId(data.Id)
			return p
		}()); err != nil {
			t.Fatalf("detachVolume: %v", err)
		}
		kvmWaitDisks(t, vm.Instancename, "vda", 30*time.Second)

		// Destroy with expunge: no domain, no root volume; then the data
		// volume and the snapshot go too.
		dp := cs.VirtualMachine.NewDestroyVirtualMachineParams(vm.Id)
		dp.SetExpunge(true)
		if _, err := cs.VirtualMachine.DestroyVirtualMachine(dp); err != nil {
			t.Fatalf("destroyVirtualMachine: %v", err)
		}
		if st := kvmDomState(t, vm.Instancename); !strings.HasPrefix(st, "absent") {
			t.Fatalf("after expunge the domain is %s", st)
		}
		if l := c.vols(t); strings.Contains(l, root.Volumes[0].Path) {
			t.Fatalf("the root volume is left:\n%s", l)
		}
		if _, err := cs.Snapshot.DeleteSnapshot(cs.Snapshot.NewDeleteSnapshotParams(snap.Id)); err != nil {
			t.Fatalf("deleteSnapshot: %v", err)
		}
		if _, err := cs.Volume.DeleteVolume(cs.Volume.NewDeleteVolumeParams(data.Id)); err != nil {
			t.Fatalf("deleteVolume: %v", err)
		}
		if l := c.vols(t); strings.Contains(l, att.Path) {
			t.Fatalf("the data volume or its snapshot is left:\n%s", l)
		}
	})

	t.Run("garbage template", func(t *testing.T) {
		_, template := kvmNeed(t)
		srv := kvmTemplateServer(t, template)
		rp := cs.Template.NewRegisterTemplateParams("moved", "QCOW2", "KVM", "moved", srv.URL+"/garbage.qcow2")
		rp.SetZoneid(c.zoneID)
		rp.SetOstypeid(models.OSTypeOtherLinux64UUID)
		reg, err := cs.Template.RegisterTemplate(rp)
		if err != nil {
			t.Fatalf("registerTemplate: %v", err)
		}
		tm, _ := catWaitTemplate(t, cs, reg.RegisterTemplate[0].Id, time.Minute, func(x *cloudstack.Template) bool {
			return x.Isready || strings.Contains(x.Status, "rror") || strings.Contains(x.Status, "QCOW2")
		})
		if tm.Isready || !strings.Contains(tm.Status, "not QCOW2") {
			t.Fatalf("a template serving HTML: ready %v, status %q", tm.Isready, tm.Status)
		}
		var files []string
		filepath.Walk(c.storeDir, func(p string, fi os.FileInfo, err error) error {
			if err == nil && strings.Contains(p, reg.RegisterTemplate[0].Id) {
				files = append(files, p)
			}
			return nil
		})
		if len(files) != 0 {
			t.Fatalf("the refused download left %q", files)
		}
	})

	t.Run("unreachable host", func(t *testing.T) {
		bad := "qemu+tcp://127.0.0.1:1/system"
		hp := cs.Host.NewAddHostParams("KVM", c.podID, bad, c.zoneID)
		hp.SetClusterid(c.clusterID)
		_, err := cs.Host.AddHost(hp)
		if err == nil {
			t.Fatal("addHost of a host whose libvirtd does not answer succeeded")
		}
		lp := cs.Host.NewListHostsParams()
		lp.SetClusterid(c.clusterID)
		hosts := vmtMust[*cloudstack.ListHostsResponse](t, "listHosts")(cs.Host.ListHosts(lp))
		var found *cloudstack.Host
		for _, h := range hosts.Hosts {
			if h.Id != c.hostID {
				found = h
			}
		}
		if found == nil || (found.State != "Alert" && found.State != "Disconnected") || !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Fatalf("addHost %s: %v; host %+v", bad, err, found)
		}
		var row models.Host
		if err := c.s.DB.NewSelect().Model(&row).Where("uuid = ?", found.Id).Scan(ctx); err != nil || !strings.Contains(row.StateReason, "127.0.0.1:1") {
			t.Fatalf("the host's recorded reason %q (%v)", row.StateReason, err)
		}
		t.Logf("unreachable host: %s, %q", found.State, row.StateReason)
		if _, err := cs.Host.DeleteHost(cs.Host.NewDeleteHostParams(found.Id)); err != nil {
			t.Fatalf("deleteHost of the unreachable host: %v", err)
		}
	})

	t.Run("libvirtd restart during deploy", func(t *testing.T) {
		// A host of its own, on a libvirtd of this test's own, so that
		// killing it disturbs no other test.
		d := testenv.StartLibvirtd(t)
		c2 := vmtMust[*cloudstack.AddClusterResponse](t, "addCluster")(cs.Cluster.AddCluster(cs.Cluster.NewAddClusterParams("kvm-c2", "CloudManaged", "KVM", c.podID, c.zoneID))).Id
		hp := cs.Host.NewAddHostParams("KVM", c.podID, d.URL, c.zoneID)
		hp.SetClusterid(c2)
		h2 := vmtMust[*cloudstack.AddHostResponse](t, "addHost "+d.URL)(cs.Host.AddHost(hp))
		dir2, err := os.MkdirTemp("", "nimbus-kvm-primary2-")
		if err != nil {
			t.Fatal(err)
		}
		os.Chmod(dir2, 0o755)
		t.Cleanup(func() { os.RemoveAll(dir2) })
		sp := cs.Pool.NewCreateStoragePoolParams("kvm-primary2", "sharedmountpoint://"+dir2, c.zoneID)
		sp.SetPodid(c.podID)
		sp.SetClusterid(c2)
		pool2 := vmtMust[*cloudstack.CreateStoragePoolResponse](t, "createStoragePool 2")(cs.Pool.CreateStoragePool(sp))

		p := cs.VirtualMachine.NewDeployVirtualMachineParams(c.offeringID, c.templateID, c.zoneID)
		p.SetName("kvm-vm2")
		p.SetNetworkids([]string{c.networkID})
		p.SetHostid(h2.Id)
		done := make(chan error, 1)
		var vm *cloudstack.DeployVirtualMachineResponse
		go func() {
			var err error
			vm, err = cs.VirtualMachine.DeployVirtualMachine(p)
			done <- err
		}()
		// Kill libvirtd once the job has made the root volume: between the
		// storage steps and the domain's define and start.
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
			fresh := ""
			ents, _ := os.ReadDir(dir2)
			for _, e := range ents {
				if !strings.HasPrefix(e.Name(), "tmpl-") {
					fresh = e.Name()
				}
			}
			if fresh != "" {
				t.Logf("root volume %s made; killing libvirtd", fresh)
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the deploy made no root volume within 2 minutes")
			}
		}
		d.Kill()
		time.Sleep(500 * time.Millisecond) // down long enough for the worker to notice
		d.Start()
		select {
		case err = <-done:
		case <-time.After(5 * time.Minute):
			t.Fatal("the deploy did not finish within 5 minutes of libvirtd's restart")
		}
		lp := cs.VirtualMachine.NewListVirtualMachinesParams()
		lp.SetName("kvm-vm2")
		list := vmtMust[*cloudstack.ListVirtualMachinesResponse](t, "listVirtualMachines")(cs.VirtualMachine.ListVirtualMachines(lp))
		if list.Count != 1 {
			t.Fatalf("after the deploy (err %v): %d VMs named kvm-vm2", err, list.Count)
		}
		got := list.VirtualMachines[0]
		if err == nil {
			// It finished: the guest really runs.
			if vm.State != "Running" || vm.Hostid != h2.Id {
				t.Fatalf("deploy answered %s on %s", vm.State, vm.Hostid)
			}
			kvmWaitBoot(t, got.Instancename, "kvm-vm2", got.Id, 0, 90*time.Second)
			t.Logf("the deploy finished across libvirtd's restart")
		} else {
			// It compensated: the VM is in Error with nothing on the host.
			if got.State != "Error" {
				t.Fatalf("deploy failed (%v) leaving the VM %s", err, got.State)
			}
			if st := kvmDomStateAt(d.URL, got.Instancename); !strings.HasPrefix(st, "absent") {
				t.Fatalf("a failed deploy left the domain %s", st)
			}
			t.Logf("the deploy compensated: %v", err)
		}
		dp := cs.VirtualMachine.NewDestroyVirtualMachineParams(got.Id)
		dp.SetExpunge(true)
		if _, err := cs.VirtualMachine.DestroyVirtualMachine(dp); err != nil {
			t.Fatalf("destroyVirtualMachine: %v", err)
		}
		if st := kvmDomStateAt(d.URL, got.Instancename); !strings.HasPrefix(st, "absent") {
			t.Fatalf("after expunge the domain is %s", st)
		}
		if _, err := cs.Pool.DeleteStoragePool(cs.Pool.NewDeleteStoragePoolParams(pool2.Id)); err != nil {
			t.Fatalf("deleteStoragePool 2: %v", err)
		}
		if left, _ := os.ReadDir(dir2); len(left) != 0 {
			t.Fatalf("files left in the second pool's directory: %v", left)
		}
	})

	t.Run("nothing left", func(t *testing.T) {
		// Only the template's copy stays in the pool; deleting the primary
		// storage removes it and the pool from the host.
		if l := c.vols(t); strings.Count(l, c.poolDir) != 1 || !strings.Contains(l, "tmpl-"+c.templateID) {
			t.Fatalf("the pool holds more than the template copy:\n%s", l)
		}
		if _, err := cs.Pool.DeleteStoragePool(cs.Pool.NewDeleteStoragePoolParams(c.poolID)); err != nil {
			t.Fatalf("deleteStoragePool: %v", err)
		}
		if out, _ := kvmVirsh(t, "pool-list", "--all", "--name"); strings.Contains(out, c.poolID) {
			t.Fatalf("the pool is still on the host:\n%s", out)
		}
		if left, _ := os.ReadDir(c.poolDir); len(left) != 0 {
			t.Fatalf("files left in the pool directory: %v", left)
		}
		out, _ := kvmVirsh(t, "list", "--all", "--name")
		var row models.VMInstance
		_ = c.s.DB.NewSelect().Model(&row).Column("instance_name").WhereAllWithDeleted().Where("name = ?", "kvm-vm1").Scan(ctx)
		if row.InstanceName == "" || strings.Contains(out, row.InstanceName) {
			t.Fatalf("domains left (%q):\n%s", row.InstanceName, out)
		}
	})
}

// vm reads one VM.
func (c *kvmCloud) vm(t *testing.T, id string) *cloudstack.VirtualMachine {
	t.Helper()
	p := c.cs.VirtualMachine.NewListVirtualMachinesParams()
	p.SetId(id)
	r := vmtMust[*cloudstack.ListVirtualMachinesResponse](t, "listVirtualMachines")(c.cs.VirtualMachine.ListVirtualMachines(p))
	if r.Count != 1 {
		t.Fatalf("listVirtualMachines id=%s: %d", id, r.Count)
	}
	return r.VirtualMachines[0]
}
