package vsphere_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/vmware/govmomi/simulator"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

func TestParseTemplateSource(t *testing.T) {
	for raw, want := range map[string]string{
		"vsphere://vc.example.com/DC0/golden":                "vc.example.com|DC0|golden",
		"VSPHERE://vc:8443/DC0/Templates/linux/golden":       "vc:8443|DC0|Templates/linux/golden",
		"vsphere://vc/My%20DC/a%2fb":                         "vc|My DC|a%2fb",
		"vsphere://vc/DC0":                                   "",
		"vsphere://user:pw@vc/DC0/golden":                    "",
		"vsphere://vc/DC0/golden?thumbprint=x":               "",
		"vsphere:///DC0/golden":                              "",
		"vsphere://vc/DC0/../golden":                         "",
		"https://vc/DC0/golden":                              "",
		"vsphere://vc.example.com/DC0/Templates//golden.ova": "",
	} {
		s, err := vsphere.ParseTemplateSource(raw)
		got := ""
		if err == nil {
			got = s.Host + "|" + s.Datacenter + "|" + s.Path
		} else if !errors.Is(err, hypervisor.ErrInvalid) {
			t.Errorf("%s: %v, want an invalid-argument error", raw, err)
		}
		if got != want {
			t.Errorf("ParseTemplateSource(%s) = %q (%v), want %q", raw, got, err, want)
		}
	}
}

// TestTemplateFromVCenter imports a template that is already in vCenter:
// its source checked and measured, then cloned into a datastore once as
// Nimbus's template VM (with the snapshot linked clones need), even when
// the call is retried while the clone runs.
func TestTemplateFromVCenter(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.sim.CreateTemplate(ctx, "Templates/linux", "golden", "LocalDS_1", 48); err != nil {
		t.Fatalf("CreateTemplate: %v", err)
	}
	vc := storage.Pool{URL: e.sim.ClusterURL(), Username: e.sim.Username, Password: e.sim.Password}
	host := e.sim.Host
	for _, p := range []string{"Templates/linux/golden", "golden"} {
		size, err := e.pools.InspectTemplateSource(ctx, vc, "vsphere://"+host+"/DC0/"+p)
		if err != nil || size != 48<<20 {
			t.Fatalf("InspectTemplateSource %s = %d, %v", p, size, err)
		}
	}
	for raw, kind := range map[string]error{
		"vsphere://" + host + "/DC0/Templates/nothere": hypervisor.ErrNotFound,
		"vsphere://" + host + "/DC0/nothere":           hypervisor.ErrNotFound,
		"vsphere://" + host + "/DC9/golden":            hypervisor.ErrNotFound,
		"vsphere://" + host + "/DC0/Templates":         hypervisor.ErrInvalid, // a folder
		"vsphere://other.example.com/DC0/golden":       hypervisor.ErrInvalid,
	} {
		if _, err := e.pools.InspectTemplateSource(ctx, vc, raw); !errors.Is(err, kind) {
			t.Errorf("InspectTemplateSource %s = %v, want %v", raw, err, kind)
		}
	}

	// The clone runs long; the first attempt dies once it started it, the
	// second reattaches to it rather than clone again.
	simulator.TaskDelay.MethodDelay = map[string]int{"CloneVm": 1000, "LockHandoff": 0}
	t.Cleanup(func() { simulator.TaskDelay.MethodDelay = nil })
	tpl := storage.Template{ID: "tpl-vc", Format: "ova", URL: "vsphere://" + host + "/DC0/Templates/linux/golden"}
	dctx, cancel := context.WithCancel(ctx)
	var saved map[string]string
	tasks := hypervisor.NewTasks(nil, func(m map[string]string) {
		saved = m
		if len(m) > 0 {
			cancel()
		}
	}, nil)
	if _, err := e.pools.CopyTemplateToPool(hypervisor.WithTasks(dctx, tasks), tpl, e.ds0, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("first attempt = %v, want it cancelled mid-clone", err)
	}
	if len(saved) != 1 {
		t.Fatalf("saved tasks = %v, want the clone's", saved)
	}
	vol, err := e.pools.CopyTemplateToPool(hypervisor.WithTasks(ctx, hypervisor.NewTasks(saved, nil, nil)), tpl, e.ds0, nil)
	if err != nil || !vol.Template || vol.SizeBytes != 48<<20 || !strings.HasPrefix(vol.Path, "[LocalDS_0] ") {
		t.Fatalf("CopyTemplateToPool = %+v, %v", vol, err)
	}
	again, err := e.pools.CopyTemplateToPool(ctx, tpl, e.ds0, nil)
	if err != nil || again.Path != vol.Path {
		t.Fatalf("second CopyTemplateToPool = %+v, %v", again, err)
	}
	clones, err := e.sim.Tasks(ctx, "VirtualMachine.cloneVm")
	if err != nil || len(clones) != 1 {
		t.Fatalf("%d clones of the source for one datastore (%v)", len(clones), err)
	}
	names, _ := e.sim.VMs(ctx)
	n := 0
	for _, name := range names {
		if strings.HasPrefix(name, vsphere.TemplatePrefix+"tpl-vc-") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("template VMs after the import: %v", names)
	}
	// Volumes come from it as from an imported OVA: a linked clone of its
	// base disk, or a full copy.
	linked, err := e.pools.CreateVolumeFromTemplate(ctx, e.ds0, vol.Path, storage.VolumeSpec{ID: "root-vc", Path: "root-vc"})
	if err != nil || linked.BackingPath != vol.Path {
		t.Fatalf("linked clone of the vCenter template = %+v, %v", linked, err)
	}
	full, err := e.pools.CreateVolumeFromTemplate(ctx, e.ds0, vol.Path, storage.VolumeSpec{ID: "root-vc2", Path: "root-vc2", SizeBytes: 64 << 20})
	if err != nil || full.BackingPath != "" || full.SizeBytes != 64<<20 {
		t.Fatalf("full copy of the vCenter template = %+v, %v", full, err)
	}
}
