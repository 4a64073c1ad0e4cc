package tests

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"

	"github.com/nimbus-cloud/nimbus/models"
)

// kvmTestISO is the bootable test ISO scripts/build-test-template.sh
// builds beside the template (volume id NIMBUSISO; its guest says
// source=iso).
func kvmTestISO(t *testing.T) string {
	t.Helper()
	_, template := kvmNeed(t)
	iso := filepath.Join(filepath.Dir(template), "nimbus-test.iso")
	if _, err := os.Stat(iso); err != nil {
		t.Fatalf("no test ISO beside the template (%v): scripts/services.sh (or scripts/build-test-template.sh) builds it", err)
	}
	return iso
}

// kvmLastCDROM is the last CD-ROM report of the guest: "sr0=NIMBUSISO",
// "sr0=empty", "none".
func kvmLastCDROM(name string) string { return kvmLastReport(name, "NIMBUS-TEST-GUEST-CDROM") }

func kvmWaitCDROM(t *testing.T, name, want string, timeout time.Duration) {
	t.Helper()
	kvmWaitReport(t, name, "NIMBUS-TEST-GUEST-CDROM", want, timeout)
}

// TestKVMISO runs ISOs on a real libvirtd through the API: an ISO
// registered from a web server, a VM deployed from it that boots from its
// CD-ROM drive (the ISO's copy on the VM's pool), and an ISO put into and
// taken out of a running VM's drive, which its guest sees; the refusals;
// and nothing left in the pool but the template and ISO copies.
func TestKVMISO(t *testing.T) {
	iso := kvmTestISO(t)
	c := kvmSetup(t)
	cs := c.cs

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/nimbus-test.iso" {
			http.NotFound(w, r)
			return
		}
		http.ServeFile(w, r, iso)
	}))
	t.Cleanup(srv.Close)
	ip := cs.ISO.NewRegisterIsoParams("nimbus test ISO", "nimbus-test-iso", srv.URL+"/nimbus-test.iso", c.zoneID)
	ip.SetBootable(true)
	ip.SetIspublic(true)
	ip.SetOstypeid(models.OSTypeOtherLinux64UUID)
	reg := vmtMust[*cloudstack.RegisterIsoResponse](t, "registerIso")(cs.ISO.RegisterIso(ip))
	if j := catJob(t, cs, reg.JobID, 2*time.Minute); j.Jobstatus != 1 {
		t.Fatalf("registerIso job = %+v %s", j, j.Jobresult)
	}
	isoID := reg.Id

	dop := cs.DiskOffering.NewCreateDiskOfferingParams("1 GB blank root disk", "kvm-iso-root")
	dop.SetDisksize(1)
	rootOffering := vmtMust[*cloudstack.CreateDiskOfferingResponse](t, "createDiskOffering")(cs.DiskOffering.CreateDiskOffering(dop)).Id

	listVM := func(t *testing.T, id string) *cloudstack.VirtualMachine {
		t.Helper()
		p := cs.VirtualMachine.NewListVirtualMachinesParams()
		p.SetId(id)
		l, err := cs.VirtualMachine.ListVirtualMachines(p)
		if err != nil || l.Count != 1 {
			t.Fatalf("listVirtualMachines %s: %v %+v", id, err, l)
		}
		return l.VirtualMachines[0]
	}
	destroy := func(t *testing.T, vm *cloudstack.DeployVirtualMachineResponse) {
		t.Helper()
		dp := cs.VirtualMachine.NewDestroyVirtualMachineParams(vm.Id)
		dp.SetExpunge(true)
		if _, err := cs.VirtualMachine.DestroyVirtualMachine(dp); err != nil {
			t.Fatalf("destroyVirtualMachine %s: %v", vm.Name, err)
		}
		if st := kvmDomState(t, vm.Instancename); !strings.HasPrefix(st, "absent") {
			t.Fatalf("after expunge the domain %s is %s", vm.Instancename, st)
		}
	}

	t.Run("deploy from the ISO", func(t *testing.T) {
		p := cs.VirtualMachine.NewDeployVirtualMachineParams(c.offeringID, isoID, c.zoneID)
		p.SetName("kvm-iso1")
		p.SetNetworkids([]string{c.networkID})
		p.SetDiskofferingid(rootOffering)
		p.SetHypervisor("KVM")
		vm, err := cs.VirtualMachine.DeployVirtualMachine(p)
		if err != nil {
			t.Fatalf("deploy from the ISO: %v", err)
		}
		t.Cleanup(func() { kvmForgetDomain(vm.Instancename) })
		if vm.State != "Running" || vm.Isoid != isoID || vm.Isoname != "nimbus-test-iso" || vm.Templateid != "" {
			t.Fatalf("deployed from the ISO: %+v", vm)
		}
		// The guest booted the ISO's kernel (source=iso), from the copy of
		// the ISO on the VM's pool in its CD-ROM drive.
		kvmWaitBoot(t, vm.Instancename, "kvm-iso1", vm.Id, 0, 90*time.Second)
		if !strings.Contains(kvmConsole(vm.Instancename), "uuid="+vm.Id+" source=iso") {
			t.Fatalf("the VM did not boot from the ISO; serial:\n%s", kvmConsole(vm.Instancename))
		}
		kvmWaitCDROM(t, vm.Instancename, "sr0=NIMBUSISO", 60*time.Second)
		out, err := kvmVirsh(t, "domblklist", vm.Instancename, "--details")
		if err != nil || !strings.Contains(out, "cdrom") || !strings.Contains(out, "tmpl-"+isoID) {
			t.Fatalf("virsh domblklist %s: %v\n%s", vm.Instancename, err, out)
		}
		if l := c.vols(t); !strings.Contains(l, "tmpl-"+isoID) {
			t.Fatalf("the ISO is not copied to the pool:\n%s", l)
		}
		// Another ISO cannot go in while this one is there.
		ap := cs.ISO.NewAttachIsoParams(isoID, vm.Id)
		_, err = cs.ISO.AttachIso(ap)
		wantVMErr(t, "attachIso to a VM with an ISO", err, 431, "already has an ISO")
		destroy(t, vm)
	})

	t.Run("attach and detach live", func(t *testing.T) {
		vm, err := c.deploy(t, "kvm-iso2")
		if err != nil {
			t.Fatalf("deployVirtualMachine: %v", err)
		}
		t.Cleanup(func() { kvmForgetDomain(vm.Instancename) })
		kvmWaitBoot(t, vm.Instancename, "kvm-iso2", vm.Id, 0, 90*time.Second)
		if !strings.Contains(kvmConsole(vm.Instancename), "uuid="+vm.Id+" source=disk") {
			t.Fatalf("the template VM did not boot from its disk; serial:\n%s", kvmConsole(vm.Instancename))
		}
		kvmWaitCDROM(t, vm.Instancename, "sr0=empty", 60*time.Second)

		// Refusals: a template is no ISO; no ISO to detach; no such ISO.
		_, err = cs.ISO.AttachIso(cs.ISO.NewAttachIsoParams(c.templateID, vm.Id))
		wantVMErr(t, "attachIso of a template", err, 431, "not an ISO")
		_, err = cs.ISO.DetachIso(cs.ISO.NewDetachIsoParams(vm.Id))
		wantVMErr(t, "detachIso without an ISO", err, 431, "no ISO attached")
		_, err = cs.ISO.AttachIso(cs.ISO.NewAttachIsoParams("6a1f0000-0000-4000-8000-000000000000", vm.Id))
		wantVMErr(t, "attachIso of an unknown ISO", err, 431, "Unable to find ISO")

		t0 := time.Now()
		att, err := cs.ISO.AttachIso(cs.ISO.NewAttachIsoParams(isoID, vm.Id))
		if err != nil {
			t.Fatalf("attachIso: %v", err)
		}
		if att.Isoid != isoID || att.Isoname != "nimbus-test-iso" || att.Isodisplaytext != "nimbus test ISO" {
			t.Fatalf("attachIso answered %+v", att)
		}
		kvmWaitCDROM(t, vm.Instancename, "sr0=NIMBUSISO", 60*time.Second)
		t.Logf("attachIso to the guest seeing the ISO: %v", time.Since(t0).Round(time.Millisecond))
		if got := listVM(t, vm.Id); got.Isoid != isoID || got.Isoname != "nimbus-test-iso" {
			t.Fatalf("listVirtualMachines after attachIso: isoid %q isoname %q", got.Isoid, got.Isoname)
		}

		t0 = time.Now()
		det, err := cs.ISO.DetachIso(cs.ISO.NewDetachIsoParams(vm.Id))
		if err != nil {
			t.Fatalf("detachIso: %v", err)
		}
		if det.Isoid != "" {
			t.Fatalf("detachIso answered isoid %q", det.Isoid)
		}
		kvmWaitCDROM(t, vm.Instancename, "sr0=empty", 60*time.Second)
		t.Logf("detachIso to the guest seeing an empty drive: %v", time.Since(t0).Round(time.Millisecond))
		if got := listVM(t, vm.Id); got.Isoid != "" {
			t.Fatalf("listVirtualMachines after detachIso: isoid %q", got.Isoid)
		}

		// Stopped: the ISO is recorded, and the next start boots from it.
		if _, err := cs.VirtualMachine.StopVirtualMachine(cs.VirtualMachine.NewStopVirtualMachineParams(vm.Id)); err != nil {
			t.Fatalf("stopVirtualMachine: %v", err)
		}
		if _, err := cs.ISO.AttachIso(cs.ISO.NewAttachIsoParams(isoID, vm.Id)); err != nil {
			t.Fatalf("attachIso to the stopped VM: %v", err)
		}
		boots := kvmBoots(vm.Instancename, "kvm-iso2", vm.Id)
		if _, err := cs.VirtualMachine.StartVirtualMachine(cs.VirtualMachine.NewStartVirtualMachineParams(vm.Id)); err != nil {
			t.Fatalf("startVirtualMachine: %v", err)
		}
		kvmWaitBoot(t, vm.Instancename, "kvm-iso2", vm.Id, boots, 90*time.Second)
		if n := strings.Count(kvmConsole(vm.Instancename), "uuid="+vm.Id+" source=iso"); n != 1 {
			t.Fatalf("the restarted VM with the ISO did not boot from it (%d ISO boots); serial:\n%s", n, kvmConsole(vm.Instancename))
		}
		destroy(t, vm)
	})

	// What stays in the pool is the copies of the template and the ISO,
	// made once per pool and kept for the next VM; deleteIso deletes the
	// ISO's.
	l := c.vols(t)
	if strings.Count(l, c.poolDir) != 2 || !strings.Contains(l, "tmpl-"+c.templateID) || !strings.Contains(l, "tmpl-"+isoID) {
		t.Fatalf("the pool holds more than the template and ISO copies:\n%s", l)
	}
	if _, err := cs.ISO.DeleteIso(cs.ISO.NewDeleteIsoParams(isoID)); err != nil {
		t.Fatalf("deleteIso: %v", err)
	}
	if l := c.vols(t); strings.Count(l, c.poolDir) != 1 || !strings.Contains(l, "tmpl-"+c.templateID) {
		t.Fatalf("after deleteIso the pool holds:\n%s", l)
	}
}
