package tests

import (
	"archive/tar"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"

	"github.com/nimbus-cloud/nimbus/infra/bmc/bmctest"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// bmTemplateArchive builds a BareMetal template (a tar of vmlinuz,
// initrd.img and cmdline) from the test template's kernel and initramfs,
// which scripts/build-test-template.sh leaves beside the test image.
func bmTemplateArchive(t *testing.T) string {
	t.Helper()
	img := os.Getenv("NIMBUS_TEST_TEMPLATE")
	dir := filepath.Dir(img)
	for _, f := range []string{"vmlinuz", "initrd.img"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); img == "" || err != nil || fi.Size() == 0 {
			t.Skipf("no %s beside NIMBUS_TEST_TEMPLATE=%q: run scripts/build-test-template.sh (scripts/services.sh does; CI does)", f, img)
		}
	}
	out := filepath.Join(t.TempDir(), "nimbus-test-baremetal.tar")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	add := func(name string, body []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"vmlinuz", "initrd.img"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		add("boot/"+name, b)
	}
	add("cmdline", []byte("console=ttyS0 panic=-1\n"))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// bmHostDetail reads one host detail from the inventory ("" when absent).
func bmHostDetail(t *testing.T, s *testenv.Stack, hostUUID, name string) string {
	t.Helper()
	var v []string
	err := s.DB.NewSelect().Model((*models.HostDetail)(nil)).Column("value").
		Where("name = ? AND host_id = (SELECT id FROM hosts WHERE uuid = ?)", name, hostUUID).Scan(context.Background(), &v)
	if err != nil {
		t.Fatal(err)
	}
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// sets are the chassis commands that change something, after the first n.
func bmSets(sim *bmctest.IPMISim, n int) []string {
	var out []string
	for _, c := range sim.Calls()[n:] {
		if strings.Contains(c, " set ") {
			out = append(out, strings.TrimPrefix(c, "0x20 "))
		}
	}
	return out
}

// TestBareMetal runs BareMetal end to end through the API: a QEMU machine
// whose power is driven by ipmi_sim (the chassis control starts and stops
// the libvirt domain) PXE-boots, from a libvirt network whose dnsmasq
// points at the worker's provisioning server, the kernel and initrd of a
// BareMetal template; its init calls back, and the deployment completes.
// Then stop, start, reboot and destroy drive the machine's power; and the
// faults end in clear errors: wrong password, a BMC that stops answering,
// a power-on that never takes effect, a system that never calls back.
func TestBareMetal(t *testing.T) {
	archive := bmTemplateArchive(t)
	bmctest.NeedLibvirt(t, os.Getenv("NIMBUS_TEST_LIBVIRT"))
	pxePort := freeTCPPort(t)
	guest := bmctest.StartGuest(t, bmctest.GuestOptions{BootFile: func(gw string) string {
		return fmt.Sprintf("http://%s:%d/pxe/boot.ipxe", gw, pxePort)
	}})
	sim := bmctest.StartIPMISim(t, bmctest.IPMIOptions{Domain: guest.Name})
	t.Logf("machine %s (MAC %s) on %s, BMC %s, provisioning server %s:%d", guest.Name, guest.MAC, guest.Gateway, sim.URL, guest.Gateway, pxePort)

	s := testenv.StartStack(t, testenv.StackOptions{Env: []string{
		fmt.Sprintf("NIMBUS_PXE_LISTEN=0.0.0.0:%d", pxePort),
		fmt.Sprintf("NIMBUS_PXE_URL=http://%s:%d", guest.Gateway, pxePort),
	}})
	cs := s.Client
	cs.Timeout(6 * time.Minute)
	cs.AsyncTimeout(600)
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// ---- the zone ----
	z, err := cs.Zone.CreateZone(cs.Zone.NewCreateZoneParams("8.8.8.8", "10.0.0.2", "bm-zone", "Advanced"))
	must("createZone", err)
	c := &vmtCloud{s: s, cs: cs, zoneID: z.Id, hosts: map[string]string{}}
	c.physnet(t, "bm-phys", "Guest", "Management", "Public", "Storage")
	c.pod(t, "192.168.30")
	for name, hv := range map[string]string{"hyperv": "Hyperv", "xenserver": "XenServer"} {
		_, err := cs.Cluster.AddCluster(cs.Cluster.NewAddClusterParams("c-"+name, "CloudManaged", hv, c.podID, z.Id))
		hostWantErr(t, "addCluster "+hv, err, 432, "hypervisor type "+hv+" is not supported yet")
	}
	cl, err := cs.Cluster.AddCluster(cs.Cluster.NewAddClusterParams("bm-c1", "CloudManaged", "BareMetal", c.podID, z.Id))
	must("addCluster BareMetal", err)
	is := cs.ImageStore.NewAddImageStoreParams("NFS")
	is.SetName("bm-secondary")
	is.SetUrl("file://" + filepath.Join(s.Dir, "bm-secondary"))
	is.SetZoneid(z.Id)
	_, err = cs.ImageStore.AddImageStore(is)
	must("addImageStore", err)
	ez := cs.Zone.NewUpdateZoneParams(z.Id)
	ez.SetAllocationstate("Enabled")
	_, err = cs.Zone.UpdateZone(ez)
	must("enable zone", err)
	np := cs.Network.NewCreateNetworkParams("bm-shared", models.NetworkOfferingDefaultSharedUUID, z.Id)
	np.SetDisplaytext("machines' network")
	np.SetVlan("200")
	np.SetGateway("10.60.0.1")
	np.SetNetmask("255.255.255.0")
	np.SetStartip("10.60.0.10")
	np.SetEndip("10.60.0.20")
	np.SetAcltype("Domain")
	n, err := cs.Network.CreateNetwork(np)
	must("createNetwork", err)

	// ---- the template: a kernel/initrd archive ----
	files := httptest.NewServer(http.FileServer(http.Dir(filepath.Dir(archive))))
	defer files.Close()
	rp := cs.Template.NewRegisterTemplateParams("bm-linux", "BAREMETAL", "BareMetal", "bm-linux", files.URL+"/"+filepath.Base(archive))
	rp.SetZoneid(z.Id)
	rp.SetOstypeid(models.OSTypeOtherLinux64UUID)
	reg, err := cs.Template.RegisterTemplate(rp)
	must("registerTemplate", err)
	tmplID := reg.RegisterTemplate[0].Id
	catWaitTemplate(t, cs, tmplID, 2*time.Minute, func(x *cloudstack.Template) bool { return x.Isready })

	// ---- the offering: the machine's size ----
	sop := cs.ServiceOffering.NewCreateServiceOfferingParams("one whole test machine", "bm-small")
	sop.SetCpunumber(1)
	sop.SetCpuspeed(1000)
	sop.SetMemory(256)
	sop.SetHosttags("baremetal")
	so, err := cs.ServiceOffering.CreateServiceOffering(sop)
	must("createServiceOffering", err)

	// ---- hosts ----
	// The Go SDK's addHost has no cpunumber/cpuspeed/memory/hostmac: the
	// URL carries them.
	hostURL := fmt.Sprintf("%s?cpunumber=1&cpuspeed=1000&memory=256&mac=%s&power_timeout=10s", sim.URL, guest.MAC)
	add := func(url, user, pass string) (*cloudstack.AddHostResponse, error) {
		p := cs.Host.NewAddHostParams("BareMetal", c.podID, url, z.Id)
		p.SetClusterid(cl.Id)
		p.SetUsername(user)
		p.SetPassword(pass)
		p.SetHosttags([]string{"baremetal"})
		return cs.Host.AddHost(p)
	}
	start := time.Now()
	_, err = add(hostURL, sim.User, "wrong-password")
	hostWantErr(t, "addHost with a wrong password", err, 431, "rejected the username or password")
	if el := time.Since(start); el > 30*time.Second {
		t.Errorf("wrong password took %s to report", el)
	}
	h1, err := add(hostURL, sim.User, sim.Pass)
	must("addHost", err)
	if h1.State != "Up" || h1.Hypervisor != "BareMetal" || h1.Cpunumber != 1 || h1.Cpuspeed != 1000 || h1.Memorytotal != 256<<20 {
		t.Fatalf("addHost = %+v", h1)
	}
	if got := bmHostDetail(t, s, h1.Id, "mac"); got != guest.MAC {
		t.Errorf("host detail mac %q, want %s", got, guest.MAC)
	}
	if hostCount(t, s, (*models.Host)(nil), "hypervisor_type = 'BareMetal' AND removed IS NULL") != 1 {
		t.Errorf("the refused add left a second host row")
	}

	// A Redfish machine: its shape and NIC come from the BMC's inventory.
	rf := bmctest.StartRedfish(t, bmctest.RedfishOptions{MAC: "52:54:00:fe:00:01", Sockets: 2, CoresPerSocket: 4, MHz: 2600, MemoryMiB: 16384})
	hr, err := add(rf.URL+"?insecure=true", "admin", "password")
	must("addHost redfish", err)
	if hr.State != "Up" || hr.Cpunumber != 8 || hr.Cpuspeed != 2600 || hr.Memorytotal != 16<<30 || hr.Hypervisorversion != "redfish 1.2.3" {
		t.Errorf("addHost redfish = %+v", hr)
	}
	if got := bmHostDetail(t, s, hr.Id, "mac"); got != "52:54:00:fe:00:01" {
		t.Errorf("redfish host mac %q", got)
	}
	// A machine with no QEMU behind its chassis, added with CloudStack's
	// own addHost parameters: it powers on, but nothing boots.
	dud := bmctest.StartIPMISim(t, bmctest.IPMIOptions{})
	cp := &cloudstack.CustomServiceParams{}
	for k, v := range map[string]string{"zoneid": z.Id, "podid": c.podID, "clusterid": cl.Id, "hypervisor": "BareMetal", "url": dud.URL,
		"username": dud.User, "password": dud.Pass, "cpunumber": "1", "cpuspeed": "1000", "memory": "256", "hostmac": "52:54:00:dd:00:01", "hosttags": "baremetal"} {
		cp.SetParam(k, v)
	}
	var dudResp struct {
		Host []cloudstack.Host `json:"host"`
	}
	must("addHost with hostmac", cs.Custom.(*cloudstack.CustomService).CustomRequest("addHost", cp, &dudResp))
	if len(dudResp.Host) != 1 || dudResp.Host[0].State != "Up" || dudResp.Host[0].Cpunumber != 1 {
		t.Fatalf("addHost with hostmac = %+v", dudResp)
	}
	hd := dudResp.Host[0].Id
	if got := bmHostDetail(t, s, hd, "mac"); got != "52:54:00:dd:00:01" {
		t.Errorf("hostmac detail %q", got)
	}

	deploy := func(name, hostID string) (*cloudstack.DeployVirtualMachineResponse, error) {
		p := cs.VirtualMachine.NewDeployVirtualMachineParams(so.Id, tmplID, z.Id)
		p.SetName(name)
		p.SetNetworkids([]string{n.Id})
		p.SetHostid(hostID)
		return cs.VirtualMachine.DeployVirtualMachine(p)
	}

	// ---- deploy: power off, PXE once, power on, the machine boots the
	// template and calls back. The worker is killed while the job waits,
	// and a new one (with its own provisioning server) finishes it.
	calls := len(sim.Calls())
	type result struct {
		vm  *cloudstack.DeployVirtualMachineResponse
		err error
	}
	done := make(chan result, 1)
	start = time.Now()
	go func() {
		vm, err := deploy("metal1", h1.Id)
		done <- result{vm, err}
	}()
	guest.WaitConsole(t, "Run /init as init process", 3*time.Minute)
	t.Logf("machine booted the template's kernel %s after deploy; killing the worker", time.Since(start).Round(time.Second))
	s.Workers()[0].Kill()
	s.StartWorker()
	var r result
	select {
	case r = <-done:
	case <-time.After(5 * time.Minute):
		t.Fatal("deploy did not finish")
	}
	must("deploy", r.err)
	t.Logf("deployed in %s", time.Since(start).Round(time.Second))
	vm := r.vm
	if vm.State != "Running" || vm.Hostid != h1.Id || vm.Hypervisor != "BareMetal" || len(vm.Nic) != 1 {
		t.Fatalf("deploy answered %+v", vm)
	}
	guest.WaitConsole(t, "NIMBUS-TEST-GUEST-CALLBACK ok mac="+guest.MAC, time.Second)
	if !guest.Running() {
		t.Errorf("machine is %s after deploy", guest.State())
	}
	if got, want := bmSets(sim, calls), []string{"set boot pxe", "set power 1"}; !slices.Equal(got, want) {
		// The machine was off, so powering it off sent nothing.
		t.Errorf("chassis commands of the deployment %q, want %q", got, want)
	}
	if bmHostDetail(t, s, h1.Id, "pxe.state") != "done" || bmHostDetail(t, s, h1.Id, "vm.uuid") != vm.Id {
		t.Errorf("host details after deploy: pxe.state %q vm.uuid %q", bmHostDetail(t, s, h1.Id, "pxe.state"), bmHostDetail(t, s, h1.Id, "vm.uuid"))
	}
	if k := nsCount(t, s.DB, "SELECT COUNT(*) FROM events WHERE type = 'HOST.PROVISIONED' AND resource_uuid = ?", h1.Id); k != 1 {
		t.Errorf("%d HOST.PROVISIONED events", k)
	}
	if k := nsCount(t, s.DB, "SELECT COUNT(*) FROM volumes v JOIN vm_instances i ON i.id = v.instance_id WHERE i.uuid = ?", vm.Id); k != 0 {
		t.Errorf("a BareMetal VM got %d volumes", k)
	}
	// The machine is taken: a second VM cannot have it.
	_, err = deploy("metal-too", h1.Id)
	hostWantErr(t, "second VM on the machine", err, 533)

	// ---- stop (ACPI: the guest's acpid powers off), start, reboot ----
	calls = len(sim.Calls())
	st, err := cs.VirtualMachine.StopVirtualMachine(cs.VirtualMachine.NewStopVirtualMachineParams(vm.Id))
	must("stop", err)
	if st.State != "Stopped" || guest.Running() {
		t.Fatalf("stop: VM %s, machine %s", st.State, guest.State())
	}
	if got := bmSets(sim, calls); !slices.Contains(got, "set shutdown 1") || slices.Contains(got, "set power 0") {
		t.Errorf("graceful stop's chassis commands %q", got)
	}
	guest.WaitConsole(t, "NIMBUS-GUEST-POWEROFF", 5*time.Second)
	calls = len(sim.Calls())
	sr, err := cs.VirtualMachine.StartVirtualMachine(cs.VirtualMachine.NewStartVirtualMachineParams(vm.Id))
	must("start", err)
	if sr.State != "Running" || sr.Hostid != h1.Id || !guest.Running() {
		t.Fatalf("start: %+v, machine %s", sr, guest.State())
	}
	if got := bmSets(sim, calls); !slices.Equal(got, []string{"set power 1"}) {
		t.Errorf("start's chassis commands %q: want a power-on, no new provisioning", got)
	}
	calls = len(sim.Calls())
	rr, err := cs.VirtualMachine.RebootVirtualMachine(cs.VirtualMachine.NewRebootVirtualMachineParams(vm.Id))
	must("reboot", err)
	if rr.State != "Running" || !guest.Running() {
		t.Fatalf("reboot: %+v, machine %s", rr, guest.State())
	}
	if got := bmSets(sim, calls); !slices.Equal(got, []string{"set power 0", "set power 1"}) {
		t.Errorf("reboot's chassis commands %q, want a power cycle", got)
	}

	// ---- destroy powers off and releases the machine ----
	dp := cs.VirtualMachine.NewDestroyVirtualMachineParams(vm.Id)
	dp.SetExpunge(true)
	_, err = cs.VirtualMachine.DestroyVirtualMachine(dp)
	must("destroy", err)
	guest.WaitState(t, false, 10*time.Second)
	if bmHostDetail(t, s, h1.Id, "vm.uuid") != "" || bmHostDetail(t, s, h1.Id, "pxe.state") != "" {
		t.Errorf("the machine was not released")
	}
	mhz, mem := c.hostAllocOf(t, h1.Id)
	if mhz != 0 || mem != 0 {
		t.Errorf("machine still holds %d MHz %d bytes", mhz, mem)
	}

	// ---- faults ----
	// A power-on that never takes effect: the job fails, the VM is in
	// Error, the machine is free again.
	sim.SetStuck(t, true)
	start = time.Now()
	_, err = deploy("metal-stuck", h1.Id)
	hostWantErr(t, "deploy on a machine that never powers on", err, 530, "power on did not take effect within 10s", "still reports power off")
	t.Logf("stuck power-on failed the job in %s", time.Since(start).Round(time.Second))
	sim.SetStuck(t, false)
	c.wantFailedVM(t, "metal-stuck", h1.Id)

	// A system that never calls back: the job waits for the configured
	// time, then fails and powers the machine off.
	up := cs.Configuration.NewUpdateConfigurationParams("baremetal.provision.done.notification.timeout")
	up.SetValue("15")
	_, err = cs.Configuration.UpdateConfiguration(up)
	must("updateConfiguration", err)
	start = time.Now()
	_, err = deploy("metal-silent", hd)
	hostWantErr(t, "deploy of a system that never calls back", err, 530, "did not report provisioned in time")
	if el := time.Since(start); el < 15*time.Second {
		t.Errorf("gave up after %s, before the 15s timeout", el)
	}
	if dud.Power() {
		t.Errorf("the machine that never called back was left on")
	}
	c.wantFailedVM(t, "metal-silent", hd)

	// A BMC that stops answering: reconnect says so, and a deploy fails.
	sim.Stop()
	_, err = cs.Host.ReconnectHost(cs.Host.NewReconnectHostParams(h1.Id))
	hostWantErr(t, "reconnect with the BMC gone", err, 534, "does not answer")
	lh, err := cs.Host.ListHosts(func() *cloudstack.ListHostsParams { p := cs.Host.NewListHostsParams(); p.SetId(h1.Id); return p }())
	must("listHosts", err)
	if lh.Count != 1 || lh.Hosts[0].State != "Disconnected" {
		t.Errorf("host with its BMC gone: %+v", lh.Hosts[0])
	}
	// Every job ended.
	if k := nsCount(t, s.DB, "SELECT COUNT(*) FROM async_jobs WHERE status = 0"); k != 0 {
		t.Errorf("%d jobs still pending", k)
	}
}

// hostAllocOf returns what listHosts says is allocated on a host.
func (c *vmtCloud) hostAllocOf(t *testing.T, id string) (mhz, mem int64) {
	t.Helper()
	p := c.cs.Host.NewListHostsParams()
	p.SetId(id)
	r, err := c.cs.Host.ListHosts(p)
	if err != nil || r.Count != 1 {
		t.Fatalf("listHosts %s: %v", id, err)
	}
	return r.Hosts[0].Cpuallocatedvalue, r.Hosts[0].Memoryallocated
}

// wantFailedVM checks a failed deployment left its VM in Error and the
// machine free.
func (c *vmtCloud) wantFailedVM(t *testing.T, name, hostID string) {
	t.Helper()
	p := c.cs.VirtualMachine.NewListVirtualMachinesParams()
	p.SetName(name)
	r, err := c.cs.VirtualMachine.ListVirtualMachines(p)
	if err != nil || r.Count != 1 {
		t.Fatalf("listVirtualMachines %s: %v", name, err)
	}
	if r.VirtualMachines[0].State != "Error" || r.VirtualMachines[0].Hostid != "" {
		t.Errorf("failed VM %s: state %s host %q", name, r.VirtualMachines[0].State, r.VirtualMachines[0].Hostid)
	}
	if mhz, mem := c.hostAllocOf(t, hostID); mhz != 0 || mem != 0 {
		t.Errorf("after the failed deploy of %s the machine holds %d MHz %d bytes", name, mhz, mem)
	}
	if v := bmHostDetail(t, c.s, hostID, "vm.uuid"); v != "" {
		t.Errorf("after the failed deploy of %s the machine is still owned by %s", name, v)
	}
}
