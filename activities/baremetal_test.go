package activities_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/infra/bmc/bmctest"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	_ "github.com/nimbus-cloud/nimbus/infra/hypervisor/baremetal"
	"github.com/nimbus-cloud/nimbus/infra/pxe"
	"github.com/nimbus-cloud/nimbus/infra/secrets"
	"github.com/nimbus-cloud/nimbus/infra/storage"
	_ "github.com/nimbus-cloud/nimbus/infra/storage/local"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// bmFixture is a zone with a BareMetal cluster, an image store directory
// and hosts added to it by the test.
type bmFixture struct {
	t       *testing.T
	deps    activities.Deps
	box     *secrets.Box
	zone    models.Zone
	pod     models.Pod
	cluster models.Cluster
	store   models.ImageStore
}

func newBMFixture(t *testing.T, dsn string) *bmFixture {
	t.Helper()
	ctx := context.Background()
	db := testenv.OpenDB(t, dsn)
	if _, err := models.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	box, err := secrets.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	f := &bmFixture{t: t, box: box}
	f.deps = activities.Deps{DB: db, Secrets: box,
		Hypervisors: func(typ string) (hypervisor.Driver, error) { return hypervisor.Open(typ, hypervisor.Config{}) },
		ImageStores: func(p string) (storage.ImageStoreDriver, error) { return storage.OpenImageStore(p, storage.Config{}) },
	}
	now := models.Now()
	f.zone = models.Zone{UUID: models.NewUUID(), Name: "bz", NetworkType: models.NetworkTypeAdvanced, AllocationState: models.AllocationEnabled, Created: now}
	f.ins(&f.zone)
	f.pod = models.Pod{UUID: models.NewUUID(), Name: "bp", ZoneID: f.zone.ID, AllocationState: models.AllocationEnabled, Created: now}
	f.ins(&f.pod)
	f.cluster = models.Cluster{UUID: models.NewUUID(), Name: "bc", ZoneID: f.zone.ID, PodID: f.pod.ID, HypervisorType: models.HypervisorBareMetal,
		ClusterType: models.ClusterCloudManaged, AllocationState: models.AllocationEnabled, ManagedState: "Managed", CPUOvercommitRatio: 1, MemOvercommitRatio: 1, Created: now}
	f.ins(&f.cluster)
	f.store = models.ImageStore{UUID: models.NewUUID(), Name: "bs", URL: "file://" + t.TempDir(), ProviderName: "NFS", Role: "Image", Scope: "ZONE",
		ZoneID: f.zone.ID, Created: now}
	f.ins(&f.store)
	return f
}

func (f *bmFixture) ins(row any) {
	f.t.Helper()
	if _, err := f.deps.DB.NewInsert().Model(row).Exec(context.Background()); err != nil {
		f.t.Fatal(err)
	}
}

func (f *bmFixture) host(name, hv, url string, details map[string]string) models.Host {
	f.t.Helper()
	h := models.Host{UUID: models.NewUUID(), Name: name, Type: models.HostTypeRouting, State: models.HostUp, ResourceState: models.ResourceEnabled,
		HypervisorType: hv, URL: url, CPUs: 1, Speed: 1000, RAM: 256 << 20, ZoneID: f.zone.ID, PodID: f.pod.ID, ClusterID: f.cluster.ID, Created: models.Now()}
	f.ins(&h)
	for k, v := range details {
		if k == "password" || k == "bmc.password" {
			sealed, err := f.box.Encrypt(v)
			if err != nil {
				f.t.Fatal(err)
			}
			v = sealed
		}
		f.ins(&models.HostDetail{HostID: h.ID, Name: k, Value: v})
	}
	return h
}

func (f *bmFixture) detail(h models.Host, name string) string {
	f.t.Helper()
	var v []string
	if err := f.deps.DB.NewSelect().Model((*models.HostDetail)(nil)).Column("value").Where("host_id = ? AND name = ?", h.ID, name).
		Scan(context.Background(), &v); err != nil {
		f.t.Fatal(err)
	}
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func (f *bmFixture) events(typ, uuid string) int {
	f.t.Helper()
	n, err := f.deps.DB.NewSelect().Model((*models.Event)(nil)).Where("type = ? AND resource_uuid = ?", typ, uuid).Count(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return int(n)
}

// TestHostFence powers hosts off through their BMCs: a BareMetal host's
// (its URL, over IPMI) and another host's (bmc.* details, over Redfish).
func TestHostFence(t *testing.T) {
	sim := bmctest.StartIPMISim(t, bmctest.IPMIOptions{})
	rf := bmctest.StartRedfish(t, bmctest.RedfishOptions{})
	for name, dsn := range testenv.Dialects(t) {
		t.Run(name, func(t *testing.T) {
			f := newBMFixture(t, dsn)
			ctx := context.Background()
			a := &activities.BMC{Deps: f.deps}
			bm := f.host("bm1", models.HypervisorBareMetal, sim.URL+"?power_timeout=3s", map[string]string{"username": sim.User, "password": sim.Pass})
			kvm := f.host("kvm1", models.HypervisorKVM, "http://10.0.0.5", map[string]string{
				"bmc.url": rf.URL + "?insecure=true", "bmc.username": "admin", "bmc.password": "password"})
			bare := f.host("kvm2", models.HypervisorKVM, "http://10.0.0.6", nil)

			sim.SetPower(t, true)
			rf.SetPower("On")
			for _, h := range []models.Host{bm, kvm} {
				res, err := a.HostFence(ctx, activities.HostFenceInput{HostUUID: h.UUID, Reason: "stopped answering"})
				if err != nil || res.Power != "off" {
					t.Fatalf("fence %s: %+v, %v", h.Name, res, err)
				}
				if f.events("HOST.FENCE", h.UUID) != 1 {
					t.Errorf("no HOST.FENCE event for %s", h.Name)
				}
			}
			if sim.Power() || rf.Power() != "Off" {
				t.Errorf("after fencing: ipmi on %v, redfish %s", sim.Power(), rf.Power())
			}
			// Fencing a host that is off already is success.
			if _, err := a.HostFence(ctx, activities.HostFenceInput{HostUUID: bm.UUID}); err != nil {
				t.Errorf("second fence: %v", err)
			}
			_, err := a.HostFence(ctx, activities.HostFenceInput{HostUUID: bare.UUID})
			var app *temporal.ApplicationError
			if !errors.As(err, &app) || app.Type() != "NotSupported" || !app.NonRetryable() || !strings.Contains(err.Error(), "has no BMC") {
				t.Errorf("fence without a BMC: %v", err)
			}
			// A machine whose power-off does not take effect is not fenced.
			sim.SetPower(t, true)
			sim.SetStuck(t, true)
			_, err = a.HostFence(ctx, activities.HostFenceInput{HostUUID: bm.UUID})
			if !errors.As(err, &app) || app.Type() != "Unreachable" || app.NonRetryable() || !strings.Contains(err.Error(), "power off did not take effect") {
				t.Errorf("fence of a stuck machine: %v", err)
			}
			sim.SetStuck(t, false)
			sim.SetPower(t, false)
		})
	}
	sim.Stop()
	f := newBMFixture(t, testenv.SQLiteDSN(t))
	bm := f.host("bm9", models.HypervisorBareMetal, sim.URL, map[string]string{"username": sim.User, "password": sim.Pass})
	_, err := (&activities.BMC{Deps: f.deps}).HostFence(context.Background(), activities.HostFenceInput{HostUUID: bm.UUID})
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || app.Type() != "Unreachable" || !strings.Contains(err.Error(), "does not answer") {
		t.Errorf("fence with the BMC gone: %v", err)
	}
}

// bmArchive is a gzipped template archive.
func bmArchive(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestPXEStoreAndServer serves a machine's provisioning from the inventory
// through the provisioning server's HTTP routes, and the waiting step sees
// the callback.
func TestPXEStoreAndServer(t *testing.T) {
	for name, dsn := range testenv.Dialects(t) {
		t.Run(name, func(t *testing.T) {
			f := newBMFixture(t, dsn)
			ctx := context.Background()
			tmpl := models.Template{UUID: models.NewUUID(), UniqueName: "bm", Name: "bm-linux", Format: "BAREMETAL", Type: models.TemplateTypeUser,
				HypervisorType: models.HypervisorBareMetal, State: models.TemplateActive, Bootable: true, Created: models.Now()}
			f.ins(&tmpl)
			rel := "template/tmpl/2/" + strconv.FormatInt(tmpl.ID, 10) + "/" + tmpl.UUID + ".baremetal"
			dir := strings.TrimPrefix(f.store.URL, "file://")
			if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(rel)), 0o755); err != nil {
				t.Fatal(err)
			}
			arch := bmArchive(t, map[string]string{"boot/vmlinuz": "KERNEL", "boot/initrd.img": "INITRD", "cmdline": "console=ttyS0  quiet\n"})
			if err := os.WriteFile(filepath.Join(dir, rel), arch, 0o644); err != nil {
				t.Fatal(err)
			}
			f.ins(&models.TemplateStoreRef{StoreID: f.store.ID, TemplateID: tmpl.ID, ZoneID: f.zone.ID, StoreRole: "Image", DownloadState: models.DownloadDownloaded,
				InstallPath: rel, State: models.ObjectReady, Created: models.Now(), LastUpdated: models.Now()})
			vmUUID := models.NewUUID()
			h := f.host("bm1", models.HypervisorBareMetal, "ipmi://127.0.0.1:1", map[string]string{"mac": "52:54:00:00:00:aa",
				"vm.uuid": vmUUID, "vm.name": "i-2-5-VM", "pxe.state": "pending", "pxe.token": "tok1", "pxe.template": tmpl.UUID,
				"pxe.deadline": strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)})

			srv := httptest.NewServer((&pxe.Server{Store: &activities.PXEStore{Deps: f.deps}, BaseURL: "http://nimbus.test:8081"}).Handler())
			defer srv.Close()
			get := func(path string) (int, string) {
				t.Helper()
				r, err := http.Get(srv.URL + path)
				if err != nil {
					t.Fatal(err)
				}
				defer r.Body.Close()
				b, _ := io.ReadAll(r.Body)
				return r.StatusCode, string(b)
			}
			if code, body := get("/pxe/boot.ipxe"); code != 200 || !strings.Contains(body, "chain --autofree http://nimbus.test:8081/pxe/script?mac=${netX/mac}") {
				t.Errorf("boot.ipxe: %d %q", code, body)
			}
			code, body := get("/pxe/script?mac=52-54-00-00-00-AA")
			for _, want := range []string{"#!ipxe", "kernel http://nimbus.test:8081/pxe/files/tok1/vmlinuz initrd=initrd.img console=ttyS0 quiet nimbus.callback=http://nimbus.test:8081/pxe/done/tok1",
				"initrd --name initrd.img http://nimbus.test:8081/pxe/files/tok1/initrd.img", "boot", "deploying VM i-2-5-VM from template bm-linux on host bm1"} {
				if code != 200 || !strings.Contains(body, want) {
					t.Errorf("script: %d %q lacks %q", code, body, want)
				}
			}
			if code, body := get("/pxe/script?mac=52:54:00:00:00:bb"); code != 200 || !strings.Contains(body, "exit") || strings.Contains(body, "kernel") {
				t.Errorf("script of an unknown machine: %d %q", code, body)
			}
			if code, body := get("/pxe/files/tok1/vmlinuz"); code != 200 || body != "KERNEL" {
				t.Errorf("kernel: %d %q", code, body)
			}
			if code, body := get("/pxe/files/tok1/initrd.img"); code != 200 || body != "INITRD" {
				t.Errorf("initrd: %d %q", code, body)
			}
			if code, _ := get("/pxe/files/nope/vmlinuz"); code != 404 {
				t.Errorf("kernel with a wrong token: %d", code)
			}

			// The waiting step: nothing yet, so a short wait past the
			// deadline fails; after the callback it returns.
			vm := models.VMInstance{UUID: vmUUID, Name: "metal", InstanceName: "i-2-5-VM", Type: models.VMTypeUser, State: models.VMStarting,
				ZoneID: f.zone.ID, HostID: h.ID, HypervisorType: models.HypervisorBareMetal, CPU: 1, Speed: 1000, RAMSize: 256, AccountID: 2, DomainID: 1, Created: models.Now()}
			f.ins(&vm)
			bm := &activities.BareMetal{Deps: f.deps}
			wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			err := bm.BareMetalAwaitProvisioned(wctx, activities.BareMetalAwaitInput{VMUUID: vmUUID, Poll: 50 * time.Millisecond})
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("await before the callback: %v", err)
			}
			if code, _ := get("/pxe/done/tok1?mac=52:54:00:00:00:bb"); code != 409 {
				t.Errorf("callback from another MAC: %d", code)
			}
			if code, _ := get("/pxe/done/other"); code != 404 {
				t.Errorf("callback with an unknown token: %d", code)
			}
			for range 2 {
				if code, body := get("/pxe/done/tok1?mac=52:54:00:00:00:aa"); code != 200 {
					t.Fatalf("callback: %d %q", code, body)
				}
			}
			if f.detail(h, "pxe.state") != "done" || f.events("HOST.PROVISIONED", h.UUID) != 1 {
				t.Errorf("after the callback: state %q, %d events", f.detail(h, "pxe.state"), f.events("HOST.PROVISIONED", h.UUID))
			}
			if err := bm.BareMetalAwaitProvisioned(ctx, activities.BareMetalAwaitInput{VMUUID: vmUUID, Poll: 50 * time.Millisecond}); err != nil {
				t.Errorf("await after the callback: %v", err)
			}
			if code, body := get("/pxe/script?mac=52:54:00:00:00:aa"); !strings.Contains(body, "exit") || code != 200 {
				t.Errorf("script once provisioned: %d %q (want boot from disk)", code, body)
			}
			if code, _ := get("/pxe/files/tok1/vmlinuz"); code != 404 {
				t.Errorf("kernel once provisioned: %d", code)
			}

			// A deadline passed without a callback fails for good.
			if _, err := f.deps.DB.NewUpdate().Model((*models.HostDetail)(nil)).Set("value = ?", "pending").Where("host_id = ? AND name = ?", h.ID, "pxe.state").Exec(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := f.deps.DB.NewUpdate().Model((*models.HostDetail)(nil)).Set("value = ?", "1").Where("host_id = ? AND name = ?", h.ID, "pxe.deadline").Exec(ctx); err != nil {
				t.Fatal(err)
			}
			err = bm.BareMetalAwaitProvisioned(ctx, activities.BareMetalAwaitInput{VMUUID: vmUUID, Poll: 50 * time.Millisecond})
			var app *temporal.ApplicationError
			if !errors.As(err, &app) || app.Type() != activities.ErrTypeProvision || !app.NonRetryable() || !strings.Contains(err.Error(), "did not report provisioned in time") {
				t.Errorf("await past the deadline: %v", err)
			}
		})
	}
}

func TestPXEArchives(t *testing.T) {
	good := bmArchive(t, map[string]string{"vmlinuz": "k", "initrd.img": "i"})
	if cmd, err := pxe.Contents(bytes.NewReader(good)); err != nil || cmd != "" {
		t.Errorf("Contents = %q, %v", cmd, err)
	}
	for name, b := range map[string][]byte{
		"no initrd":   bmArchive(t, map[string]string{"vmlinuz": "k"}),
		"not a tar":   []byte("this is a qcow2, honest"),
		"empty gzip":  bmArchive(t, nil),
		"kernel only": bmArchive(t, map[string]string{"boot/kernel": "k", "README": "x"}),
	} {
		if _, err := pxe.Contents(bytes.NewReader(b)); !errors.Is(err, pxe.ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
