package tests

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// vsCDROM is the ISO file backing a vCenter VM's CD-ROM drive ("" for an
// empty drive), and whether the VM has a drive at all.
func vsCDROM(vm *mo.VirtualMachine) (iso string, connected, ok bool) {
	if vm == nil || vm.Config == nil {
		return "", false, false
	}
	for _, d := range vm.Config.Hardware.Device {
		if cd, isCD := d.(*types.VirtualCdrom); isCD {
			if b, isISO := cd.Backing.(*types.VirtualCdromIsoBackingInfo); isISO {
				iso = b.FileName
			}
			if cd.Connectable != nil {
				connected = cd.Connectable.Connected
			}
			return iso, connected, true
		}
	}
	return "", false, false
}

// vsBootOrder is a vCenter VM's config.bootOptions.bootOrder.
func vsBootOrder(vm *mo.VirtualMachine) []types.BaseVirtualMachineBootOptionsBootableDevice {
	if vm == nil || vm.Config == nil || vm.Config.BootOptions == nil {
		return nil
	}
	return vm.Config.BootOptions.BootOrder
}

// vsCDROMFirst tells whether a boot order starts with the CD-ROM.
func vsCDROMFirst(order []types.BaseVirtualMachineBootOptionsBootableDevice) bool {
	if len(order) == 0 {
		return false
	}
	_, ok := order[0].(*types.VirtualMachineBootOptionsBootableCdromDevice)
	return ok
}

// TestVSphereISO drives ISOs on govmomi's vCenter simulator through the
// API: a VM deployed from an ISO has a CD-ROM drive backed by the ISO's
// copy in its datastore and boots from it first (then its disk), and an
// ISO goes into and out of a running VM's
// drive (ReconfigVM), with nothing left in vCenter after the VMs go.
func TestVSphereISO(t *testing.T) {
	c := vsSetup(t)
	cs := c.cs

	// An ISO 9660 image is recognised by "CD001" at 0x8001.
	img := make([]byte, 64<<10)
	copy(img[0x8001:], "CD001")
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/tools.iso" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(img)
	}))
	t.Cleanup(web.Close)
	ip := cs.ISO.NewRegisterIsoParams("tools ISO", "tools", web.URL+"/tools.iso", c.zone)
	ip.SetBootable(true)
	ip.SetIspublic(true)
	reg := vmtMust[*cloudstack.RegisterIsoResponse](t, "registerIso")(cs.ISO.RegisterIso(ip))
	if j := catJob(t, cs, reg.JobID, time.Minute); j.Jobstatus != 1 {
		t.Fatalf("registerIso job = %+v %s", j, j.Jobresult)
	}
	isoID := reg.Id
	isoFile := "] nimbus/iso-" + isoID + ".iso"

	dop := cs.DiskOffering.NewCreateDiskOfferingParams("1 GB blank root disk", "vs-iso-root")
	dop.SetDisksize(1)
	rootOffering := vmtMust[*cloudstack.CreateDiskOfferingResponse](t, "createDiskOffering")(cs.DiskOffering.CreateDiskOffering(dop)).Id
	so := cs.ServiceOffering.NewCreateServiceOfferingParams("1 vCPU, 256 MB", "vs-iso-small")
	so.SetCpunumber(1)
	so.SetCpuspeed(500)
	so.SetMemory(256)
	offering := vmtMust[*cloudstack.CreateServiceOfferingResponse](t, "createServiceOffering")(cs.ServiceOffering.CreateServiceOffering(so)).Id

	expunge := func(t *testing.T, id string) {
		t.Helper()
		dp := cs.VirtualMachine.NewDestroyVirtualMachineParams(id)
		dp.SetExpunge(true)
		if _, err := cs.VirtualMachine.DestroyVirtualMachine(dp); err != nil {
			t.Fatalf("destroyVirtualMachine: %v", err)
		}
		if vsVM(t, c.sim, id) != nil {
			t.Fatalf("VM %s is left in vCenter", id)
		}
	}

	t.Run("deploy from the ISO", func(t *testing.T) {
		p := cs.VirtualMachine.NewDeployVirtualMachineParams(offering, isoID, c.zone)
		p.SetName("vs-iso1")
		p.SetNetworkids([]string{c.nw})
		p.SetDiskofferingid(rootOffering)
		p.SetHypervisor("VMware")
		vm, err := cs.VirtualMachine.DeployVirtualMachine(p)
		if err != nil {
			t.Fatalf("deploy from the ISO: %v", err)
		}
		if vm.State != "Running" || vm.Isoid != isoID || vm.Hypervisor != "VMware" {
			t.Fatalf("deployed from the ISO: %+v", vm)
		}
		iso, connected, ok := vsCDROM(vsVM(t, c.sim, vm.Id))
		if !ok || !strings.HasSuffix(iso, isoFile) || !connected {
			t.Fatalf("the VM's CD-ROM drive: %v, backed by %q, connected %v; want the ISO's copy *%s", ok, iso, connected, isoFile)
		}
		// The CD-ROM boots first, then the (blank) root disk.
		got := vsVM(t, c.sim, vm.Id)
		order := vsBootOrder(got)
		if !vsCDROMFirst(order) || len(order) < 2 {
			t.Fatalf("the ISO-deployed VM's boot order is %#v, want the CD-ROM, then the disk", order)
		}
		disks := object.VirtualDeviceList(got.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil))
		if d, ok := order[1].(*types.VirtualMachineBootOptionsBootableDiskDevice); !ok || len(disks) != 1 || d.DeviceKey != disks[0].GetVirtualDevice().Key {
			t.Fatalf("the ISO-deployed VM boots second from %#v, want its disk (of %d)", order[1], len(disks))
		}
		ds := strings.TrimPrefix(strings.TrimSuffix(iso, isoFile), "[")
		if !vsFileExists(t, c.sim, ds, "nimbus/iso-"+isoID+".iso") {
			t.Fatalf("the ISO's copy %s is not in datastore %s", iso, ds)
		}
		expunge(t, vm.Id)
	})

	t.Run("attach and detach live", func(t *testing.T) {
		p := cs.VirtualMachine.NewDeployVirtualMachineParams(offering, c.tpl, c.zone)
		p.SetName("vs-iso2")
		p.SetNetworkids([]string{c.nw})
		vm, err := cs.VirtualMachine.DeployVirtualMachine(p)
		if err != nil || vm.State != "Running" {
			t.Fatalf("deployVirtualMachine: %v %+v", err, vm)
		}
		if iso, _, _ := vsCDROM(vsVM(t, c.sim, vm.Id)); iso != "" {
			t.Fatalf("a VM from a template has ISO %q", iso)
		}
		if order := vsBootOrder(vsVM(t, c.sim, vm.Id)); vsCDROMFirst(order) {
			t.Fatalf("a VM from a template boots from the CD-ROM first: %#v", order)
		}
		_, err = cs.ISO.AttachIso(cs.ISO.NewAttachIsoParams(c.tpl, vm.Id))
		wantVMErr(t, "attachIso of a template", err, 431, "not an ISO")
		// An ISO whose download failed is not ready in the zone.
		bp := cs.ISO.NewRegisterIsoParams("missing ISO", "missing", web.URL+"/missing.iso", c.zone)
		bp.SetIspublic(true)
		bad := vmtMust[*cloudstack.RegisterIsoResponse](t, "registerIso missing")(cs.ISO.RegisterIso(bp))
		catJob(t, cs, bad.JobID, time.Minute)
		_, err = cs.ISO.AttachIso(cs.ISO.NewAttachIsoParams(bad.Id, vm.Id))
		wantVMErr(t, "attachIso of an ISO not downloaded", err, 431, "not ready in zone")

		att, err := cs.ISO.AttachIso(cs.ISO.NewAttachIsoParams(isoID, vm.Id))
		if err != nil || att.Isoid != isoID || att.Isoname != "tools" {
			t.Fatalf("attachIso: %v %+v", err, att)
		}
		got := vsVM(t, c.sim, vm.Id)
		iso, connected, ok := vsCDROM(got)
		if !ok || !strings.HasSuffix(iso, isoFile) || !connected || got.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
			t.Fatalf("after attachIso the running VM's drive: %v, %q, connected %v, %s", ok, iso, connected, got.Runtime.PowerState)
		}
		_, err = cs.ISO.AttachIso(cs.ISO.NewAttachIsoParams(isoID, vm.Id))
		wantVMErr(t, "attachIso twice", err, 431, "already has an ISO")

		det, err := cs.ISO.DetachIso(cs.ISO.NewDetachIsoParams(vm.Id))
		if err != nil || det.Isoid != "" {
			t.Fatalf("detachIso: %v %+v", err, det)
		}
		if iso, _, ok := vsCDROM(vsVM(t, c.sim, vm.Id)); !ok || iso != "" {
			t.Fatalf("after detachIso the drive: %v, %q", ok, iso)
		}
		expunge(t, vm.Id)
	})

	// deleteIso deletes the ISO's copies in the datastores too.
	if !vsFileExists(t, c.sim, "LocalDS_0", "nimbus/iso-"+isoID+".iso") && !vsFileExists(t, c.sim, "LocalDS_1", "nimbus/iso-"+isoID+".iso") {
		t.Fatal("no copy of the ISO in a datastore before deleteIso")
	}
	if _, err := cs.ISO.DeleteIso(cs.ISO.NewDeleteIsoParams(isoID)); err != nil {
		t.Fatalf("deleteIso: %v", err)
	}
	for _, ds := range []string{"LocalDS_0", "LocalDS_1"} {
		if vsFileExists(t, c.sim, ds, "nimbus/iso-"+isoID+".iso") {
			t.Fatalf("the ISO's copy is left in %s after deleteIso", ds)
		}
	}
}
