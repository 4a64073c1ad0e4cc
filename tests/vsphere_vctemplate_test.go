package tests

import (
	"context"
	"strings"
	"testing"

	"github.com/apache/cloudstack-go/v2/cloudstack"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere"
	"github.com/nimbus-cloud/nimbus/models"
)

// TestVSphereTemplateFromVCenter registers a template that an operator
// keeps in vCenter (vsphere://<vcenter>/<datacenter>/<path>): checked
// there and ready at once, nothing on secondary storage; a VM deployed
// from it has its datastore get one clone of it as Nimbus's template VM,
// which later VMs on that datastore reuse. Bad sources leave nothing.
func TestVSphereTemplateFromVCenter(t *testing.T) {
	c := vsSetup(t)
	cs, sim := c.cs, c.sim
	ctx := context.Background()
	if _, err := sim.CreateTemplate(ctx, "Templates", "golden", "LocalDS_1", 48); err != nil {
		t.Fatalf("a template in vCenter: %v", err)
	}
	reg := func(name, url, hv, format string) (*cloudstack.RegisterTemplateResponse, error) {
		rp := cs.Template.NewRegisterTemplateParams(name, format, hv, name, url)
		rp.SetZoneid(c.zone)
		rp.SetOstypeid(models.OSTypeOtherLinux64UUID)
		return cs.Template.RegisterTemplate(rp)
	}
	src := "vsphere://" + sim.Host + "/DC0/Templates/golden"

	// Bad sources: a clear error, and no template left behind.
	_, err := reg("bad1", "vsphere://vcenter.example.com/DC0/Templates/golden", "VMware", "OVA")
	hostWantErr(t, "a vCenter of no cluster", err, 431, "is not a vCenter of zone vs-zone")
	_, err = reg("bad2", "vsphere://"+sim.Host+"/DC0/Templates/nothere", "VMware", "OVA")
	hostWantErr(t, "a template not in vCenter", err, 431, "no template or VM Templates/nothere in datacenter DC0")
	_, err = reg("bad3", src, "KVM", "QCOW2")
	hostWantErr(t, "a vCenter template for KVM", err, 431, "is for hypervisor VMware")
	_, err = reg("bad4", src, "VMware", "QCOW2")
	hostWantErr(t, "format QCOW2", err, 431, "not supported for hypervisor VMware")
	_, err = reg("bad5", "vsphere://administrator:nimbus@"+sim.Host+"/DC0/Templates/golden", "VMware", "OVA")
	hostWantErr(t, "credentials in the url", err, 431, "must not carry credentials")
	_, err = reg("bad6", "vsphere://"+sim.Host+"/DC0/Templates", "VMware", "OVA")
	hostWantErr(t, "a folder", err, 431, "not a template or VM")
	_, err = reg("bad8", "http://images.example.com/golden/golden.ovf", "VMware", "OVA")
	hostWantErr(t, "a bare OVF", err, 431, "OVF descriptor with its disks beside it is not supported yet")
	ip := cs.ISO.NewRegisterIsoParams("bad7", "bad7", src, c.zone)
	_, err = cs.ISO.RegisterIso(ip)
	hostWantErr(t, "registerIso from vCenter", err, 431, "an ISO is registered from an HTTP(S) URL")
	lt := cs.Template.NewListTemplatesParams("all")
	lt.SetKeyword("bad")
	if l, err := cs.Template.ListTemplates(lt); err != nil || l.Count != 0 {
		t.Fatalf("templates after refused registrations = %+v, %v", l, err)
	}

	r, err := reg("golden", src, "VMware", "OVA")
	if err != nil {
		t.Fatalf("registerTemplate %s: %v", src, err)
	}
	tm := r.RegisterTemplate[0]
	if !tm.Isready || tm.Size != 48<<20 || tm.Url != src || tm.Status != "Download Complete" {
		t.Fatalf("registered vCenter template = %+v", tm)
	}
	got := catTemplate(t, cs, tm.Id, "")
	if !got.Isready || got.Size != 48<<20 || got.Physicalsize != 0 {
		t.Fatalf("listTemplates = %+v", got)
	}

	// Deploy two VMs: each datastore a root disk lands on clones the
	// source once.
	ct := *c
	ct.tpl = tm.Id
	vm1 := vsDeploy(t, &ct, "vc-tpl-vm1")
	vm2 := vsDeploy(t, &ct, "vc-tpl-vm2")
	for _, d := range []*cloudstack.DeployVirtualMachineResponse{vm1, vm2} {
		vm := vsVM(t, sim, d.Id)
		if vm == nil || vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
			t.Fatalf("vCenter VM %s = %+v", d.Name, vm)
		}
	}
	lv := cs.Volume.NewListVolumesParams()
	lv.SetType("ROOT")
	vols, err := cs.Volume.ListVolumes(lv)
	if err != nil {
		t.Fatal(err)
	}
	pools := map[string]bool{}
	for _, v := range vols.Volumes {
		if v.Virtualmachineid == vm1.Id || v.Virtualmachineid == vm2.Id {
			pools[v.Storageid] = true
		}
	}
	names, err := sim.VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var copies []string
	for _, n := range names {
		if strings.HasPrefix(n, vsphere.TemplatePrefix+tm.Id+"-") {
			copies = append(copies, n)
		}
	}
	clones, err := sim.Tasks(ctx, "VirtualMachine.cloneVm")
	if err != nil {
		t.Fatal(err)
	}
	if len(pools) == 0 || len(copies) != len(pools) || len(clones) != len(pools) {
		t.Fatalf("root disks on %d datastores, %d template VMs (%v), %d clones of the source", len(pools), len(copies), copies, len(clones))
	}
	// A third VM reuses a clone already made.
	vsDeploy(t, &ct, "vc-tpl-vm3")
	if clones, _ := sim.Tasks(ctx, "VirtualMachine.cloneVm"); len(clones) > 2 {
		t.Fatalf("%d clones of the source for 3 VMs on 2 datastores", len(clones))
	}

	// Nothing to copy or extract: it is not on secondary storage.
	ep := cs.Template.NewExtractTemplateParams(tm.Id, "HTTP_DOWNLOAD")
	_, err = cs.Template.ExtractTemplate(ep)
	hostWantErr(t, "extractTemplate of a vCenter template", err, 431, "is a vCenter template")
}
