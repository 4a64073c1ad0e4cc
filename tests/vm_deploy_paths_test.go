package tests

import (
	"context"
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	hvsim "github.com/nimbus-cloud/nimbus/infra/hypervisor/sim"
	"github.com/nimbus-cloud/nimbus/models"
)

// dpVolumes lists a VM's volumes by type, as an admin sees them.
func (c *vmtCloud) dpVolumes(t *testing.T, vmID string) map[string]*cloudstack.Volume {
	t.Helper()
	p := c.cs.Volume.NewListVolumesParams()
	p.SetVirtualmachineid(vmID)
	p.SetListall(true)
	r := vmtMust[*cloudstack.ListVolumesResponse](t, "listVolumes")(c.cs.Volume.ListVolumes(p))
	out := map[string]*cloudstack.Volume{}
	for _, v := range r.Volumes {
		out[v.Type] = v
	}
	return out
}

// TestVMDeployPaths deploys the ways CloudStack clients do besides the
// plain template deploy: with a data disk, from an ISO with a disk
// offering, with an address per network (iptonetworklist), pinned to a
// host by an admin, and with SSH key pairs and user data.
func TestVMDeployPaths(t *testing.T) {
	c := vmtSetup(t)
	cs, ctx := c.cs, context.Background()
	const gib = int64(1) << 30

	// ---- a data disk from diskofferingid, beside the template's root disk ----
	d, err := c.deploy(t, cs, "withdata", func(p *cloudstack.DeployVirtualMachineParams) { p.SetDiskofferingid(models.DiskOfferingSmallUUID) })
	if err != nil || d.State != "Running" {
		t.Fatalf("deploy with a data disk: %v %+v", err, d)
	}
	vols := c.dpVolumes(t, d.Id)
	root, data := vols["ROOT"], vols["DATADISK"]
	if len(vols) != 2 || root == nil || data == nil {
		t.Fatalf("volumes of withdata: %+v", vols)
	}
	if data.State != "Ready" || data.Size != 5*gib || data.Diskofferingid != models.DiskOfferingSmallUUID || data.Deviceid != 1 ||
		data.Storageid != c.poolID || data.Virtualmachineid != d.Id || root.State != "Ready" || root.Deviceid != 0 || root.Templateid != c.templateID {
		t.Fatalf("root %+v, data %+v", root, data)
	}

	// ---- from an ISO: the disk offering makes the root disk ----
	isoSrv := newCatImageServer(t, 1<<20, 256<<10, 0)
	ip := cs.ISO.NewRegisterIsoParams("Installer ISO", "installer", isoSrv.srv.URL+"/image.iso", c.zoneID)
	ip.SetChecksum(isoSrv.sha256())
	ip.SetIspublic(true)
	ip.SetBootable(true)
	iso := vmtMust[*cloudstack.RegisterIsoResponse](t, "registerIso")(cs.ISO.RegisterIso(ip))
	if j := catJob(t, cs, iso.JobID, 60*time.Second); j.Jobstatus != 1 {
		t.Fatalf("registerIso job = %+v %s", j, j.Jobresult)
	}
	isoDeploy := func(name string, set func(*cloudstack.DeployVirtualMachineParams)) (*cloudstack.DeployVirtualMachineResponse, error) {
		p := cs.VirtualMachine.NewDeployVirtualMachineParams(models.ServiceOfferingSmallUUID, iso.Id, c.zoneID)
		p.SetName(name)
		p.SetNetworkids([]string{c.networkID})
		if set != nil {
			set(p)
		}
		return cs.VirtualMachine.DeployVirtualMachine(p)
	}
	_, err = isoDeploy("noroot", nil)
	wantVMErr(t, "deploy from an ISO without a disk offering", err, 431, "diskofferingid")
	di, err := isoDeploy("fromiso", func(p *cloudstack.DeployVirtualMachineParams) {
		p.SetDiskofferingid(models.DiskOfferingMediumUUID)
		p.SetHypervisor("Simulator")
	})
	if err != nil || di.State != "Running" {
		t.Fatalf("deploy from an ISO: %v %+v", err, di)
	}
	vm := c.vm(t, cs, di.Id)
	if vm.Isoid != iso.Id || vm.Isoname != "installer" || vm.Templateid != "" || vm.Hypervisor != "Simulator" ||
		vm.Diskofferingid != models.DiskOfferingMediumUUID {
		t.Fatalf("VM from an ISO = %+v", vm)
	}
	vols = c.dpVolumes(t, di.Id)
	if r := vols["ROOT"]; len(vols) != 1 || r == nil || r.Size != 20*gib || r.Diskofferingid != models.DiskOfferingMediumUUID || r.State != "Ready" || r.Templateid != "" {
		t.Fatalf("volumes of the VM from an ISO: %+v", vols)
	}

	// ---- iptonetworklist: an address on each of two networks ----
	np := cs.Network.NewCreateNetworkParams("shared-200", models.NetworkOfferingDefaultSharedUUID, c.zoneID)
	np.SetDisplaytext("second shared network")
	np.SetVlan("200")
	np.SetGateway("10.60.0.1")
	np.SetNetmask("255.255.255.0")
	np.SetStartip("10.60.0.10")
	np.SetEndip("10.60.0.20")
	np.SetAcltype("Domain")
	net2 := vmtMust[*cloudstack.CreateNetworkResponse](t, "createNetwork")(cs.Network.CreateNetwork(np)).Id
	multi := func(name string, list []map[string]string) (*cloudstack.DeployVirtualMachineResponse, error) {
		p := cs.VirtualMachine.NewDeployVirtualMachineParams(models.ServiceOfferingSmallUUID, c.templateID, c.zoneID)
		p.SetName(name)
		p.SetIptonetworklist(list)
		return cs.VirtualMachine.DeployVirtualMachine(p)
	}
	dm, err := multi("twonics", []map[string]string{{"networkid": net2, "ip": "10.60.0.12"}, {"networkid": c.networkID, "ip": "10.50.0.19"}})
	if err != nil || dm.State != "Running" {
		t.Fatalf("deploy with iptonetworklist: %v %+v", err, dm)
	}
	vm = c.vm(t, cs, dm.Id)
	if len(vm.Nic) != 2 {
		t.Fatalf("VM with two networks has NICs %+v", vm.Nic)
	}
	byNet := map[string]cloudstack.Nic{}
	for _, n := range vm.Nic {
		byNet[n.Networkid] = n
	}
	if n := byNet[net2]; n.Ipaddress != "10.60.0.12" || !n.Isdefault || n.Gateway != "10.60.0.1" || n.Deviceid != "0" {
		t.Errorf("NIC on the first listed network = %+v (want 10.60.0.12, default)", n)
	}
	if n := byNet[c.networkID]; n.Ipaddress != "10.50.0.19" || n.Isdefault || n.Deviceid != "1" {
		t.Errorf("NIC on the second listed network = %+v (want 10.50.0.19)", n)
	}
	_, err = multi("taken", []map[string]string{{"networkid": net2, "ip": "10.60.0.12"}})
	wantVMErr(t, "iptonetworklist with a taken address", err, 431, "10.60.0.12")
	_, err = multi("outside", []map[string]string{{"networkid": net2, "ip": "10.50.0.11"}})
	wantVMErr(t, "iptonetworklist with an address of another network", err, 431, "10.50.0.11")
	// A network of the list without an address takes any free one.
	da, err := multi("anyaddr", []map[string]string{{"networkid": net2}})
	if err != nil || len(da.Nic) != 1 || !strings.HasPrefix(da.Nic[0].Ipaddress, "10.60.0.") {
		t.Fatalf("iptonetworklist without ip: %v %+v", err, da)
	}

	// ---- an admin pins the host; a user may not ----
	for _, h := range []string{"vmh2", "vmh1"} {
		c.hmDeployOn(t, "pinned-"+h, h, nil)
	}
	u := catCreateUser(t, c.s, "pinuser")
	up := u.Client.VirtualMachine.NewDeployVirtualMachineParams(models.ServiceOfferingSmallUUID, c.templateID, c.zoneID)
	up.SetName("userpin")
	up.SetNetworkids([]string{c.networkID})
	up.SetHostid(c.hosts["vmh1"])
	_, err = u.Client.VirtualMachine.DeployVirtualMachine(up)
	wantVMErr(t, "a user picks the host", err, 531, "Only root admins")

	// ---- SSH key pairs and user data ----
	k1 := vmtMust[*cloudstack.CreateSSHKeyPairResponse](t, "createSSHKeyPair")(cs.SSH.CreateSSHKeyPair(cs.SSH.NewCreateSSHKeyPairParams("k1")))
	const pub2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb0XPFj0ZQ2JbT0WmZ0o5c3cQ0lQ7W3GmXoXo7cZsPq dev@laptop"
	vmtMust[*cloudstack.RegisterSSHKeyPairResponse](t, "registerSSHKeyPair")(cs.SSH.RegisterSSHKeyPair(cs.SSH.NewRegisterSSHKeyPairParams("k2", pub2)))
	userdata := base64.StdEncoding.EncodeToString([]byte("#cloud-config\nhostname: keyed\n"))
	dk, err := c.deploy(t, cs, "keyed", func(p *cloudstack.DeployVirtualMachineParams) {
		p.SetKeypairs([]string{"k1", "k2"})
		p.SetUserdata(userdata)
	})
	if err != nil || dk.State != "Running" || dk.Keypairs != "k1,k2" {
		t.Fatalf("deploy with key pairs and user data: %v %+v", err, dk)
	}
	if dk.Userdata != "" {
		t.Errorf("the deploy answer shows the user data")
	}
	lp := cs.VirtualMachine.NewListVirtualMachinesParams()
	lp.SetId(dk.Id)
	r := vmtMust[*cloudstack.ListVirtualMachinesResponse](t, "listVirtualMachines")(cs.VirtualMachine.ListVirtualMachines(lp))
	if r.Count != 1 || r.VirtualMachines[0].Keypairs != "k1,k2" || r.VirtualMachines[0].Userdata != "" {
		t.Fatalf("listVirtualMachines (user data not asked for) = %+v", r.VirtualMachines[0])
	}
	lp.SetUserdata(true)
	r = vmtMust[*cloudstack.ListVirtualMachinesResponse](t, "listVirtualMachines userdata=true")(cs.VirtualMachine.ListVirtualMachines(lp))
	if r.Count != 1 || r.VirtualMachines[0].Userdata != userdata {
		t.Fatalf("listVirtualMachines userdata=true shows %q, want %q", r.VirtualMachines[0].Userdata, userdata)
	}
	lk := cs.VirtualMachine.NewListVirtualMachinesParams()
	lk.SetKeypair("k2")
	if r := vmtMust[*cloudstack.ListVirtualMachinesResponse](t, "listVirtualMachines keypair")(cs.VirtualMachine.ListVirtualMachines(lk)); r.Count != 1 || r.VirtualMachines[0].Id != dk.Id {
		t.Fatalf("listVirtualMachines keypair=k2 = %+v", r)
	}
	_, err = c.deploy(t, cs, "nokey", func(p *cloudstack.DeployVirtualMachineParams) { p.SetKeypair("missing") })
	wantVMErr(t, "deploy with an unknown key pair", err, 431, "missing")
	_, err = c.deploy(t, cs, "baddata", func(p *cloudstack.DeployVirtualMachineParams) { p.SetUserdata("not base64!") })
	wantVMErr(t, "deploy with user data that is not base64", err, 431, "base64")

	// The hypervisor got both: the user data and the public keys.
	for _, w := range c.s.Workers() {
		w.Stop()
	}
	hv, err := hvsim.Open(filepath.Join(c.s.Dir, "simulator"))
	if err != nil {
		t.Fatalf("open the simulator's state: %v", err)
	}
	defer hv.Close()
	h := hypervisor.Host{ID: dk.Hostid, ZoneID: c.zoneID, PodID: c.podID, ClusterID: c.clusterID}
	spec, ok := hv.Spec(h, hypervisor.VMRef{UUID: dk.Id})
	if !ok {
		t.Fatalf("the simulator has no VM %s on %s", dk.Id, dk.Hostname)
	}
	var pub1 string
	if err := c.s.DB.NewSelect().Table("ssh_keypairs").Column("public_key").Where("keypair_name = ?", "k1").Scan(ctx, &pub1); err != nil || k1.Privatekey == "" {
		t.Fatalf("k1's public key: %v (private key given: %v)", err, k1.Privatekey != "")
	}
	keys := spec.Metadata["public-keys"]
	if spec.UserData != userdata || keys != strings.TrimSpace(pub1)+"\n"+pub2 {
		t.Fatalf("VM spec user data %q, public keys %q", spec.UserData, keys)
	}
}
