package libvirt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/google/uuid"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/libvirtconn"
)

// testLibvirt is the libvirtd URL tests use (qemu:///system), or skips.
func testLibvirt(t *testing.T) string {
	t.Helper()
	u := os.Getenv("NIMBUS_TEST_LIBVIRT")
	if u == "" {
		t.Skip("NIMBUS_TEST_LIBVIRT is unset: no libvirtd to test against (scripts/services.sh starts one and writes .test-services/env)")
	}
	return u
}

// newTestDriver returns a driver of the type on its own connection pool.
// Its data directory is shared by the package's tests, so the KVM probe
// runs once per test run.
func newTestDriver(t *testing.T, typ string) *Driver {
	t.Helper()
	pool := libvirtconn.NewPool()
	t.Cleanup(func() { pool.Close() })
	d, err := New(typ, hypervisor.Config{DataDir: probeCacheDir}, pool)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

var probeCacheDir = func() string {
	dir, err := os.MkdirTemp("", "nimbus-libvirt-test-")
	if err != nil {
		panic(err)
	}
	return dir
}()

// uniqueName is a domain name no parallel test (or helper) uses.
func uniqueName(t *testing.T) string {
	n := strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())
	if len(n) > 40 {
		n = n[:40]
	}
	return "nimbus-" + strings.ToLower(n) + "-" + uuid.NewString()[:8]
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func tinySpec(name string) hypervisor.VMSpec {
	return hypervisor.VMSpec{Name: name, UUID: uuid.NewString(), DisplayName: name, VCPUs: 1, MemoryBytes: 64 << 20,
		Metadata: map[string]string{"account": "admin"}}
}

// TestTestDriver runs the cheap cases on libvirt's in-memory test driver
// (test:///default through libvirtd).
func TestTestDriver(t *testing.T) {
	testLibvirt(t)
	d := newTestDriver(t, hypervisor.TypeKVM)
	h := hypervisor.Host{ID: "h-test", URL: "test:///default"}
	ctx := ctxFor(t, time.Minute)

	info, err := d.ConnectHost(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if info.CPUCores <= 0 || info.MemoryBytes <= 0 || info.GUID == "" || info.HypervisorVersion == "" {
		t.Fatalf("ConnectHost = %+v", info)
	}
	if info.Capabilities.HardwareAccel {
		t.Errorf("test driver reported hardware acceleration")
	}

	spec := tinySpec(uniqueName(t))
	ref := spec.Ref()
	t.Cleanup(func() { d.DestroyVM(context.Background(), h, ref) })
	vi, err := d.DefineVM(ctx, h, spec)
	if err != nil {
		t.Fatal(err)
	}
	if vi.State != hypervisor.StateStopped || vi.UUID != spec.UUID || vi.Metadata["account"] != "admin" {
		t.Fatalf("DefineVM = %+v", vi)
	}
	// Same UUID again: redefined, with the new shape.
	spec.VCPUs = 2
	if vi, err = d.DefineVM(ctx, h, spec); err != nil || vi.VCPUs != 2 {
		t.Fatalf("redefine = %+v, %v", vi, err)
	}
	// Another VM with the name: refused.
	other := tinySpec(spec.Name)
	if _, err := d.DefineVM(ctx, h, other); !errors.Is(err, hypervisor.ErrInvalid) {
		t.Fatalf("define of another uuid under the name = %v; want ErrInvalid", err)
	}
	if _, err := d.VMState(ctx, h, hypervisor.VMRef{UUID: uuid.NewString()}); !errors.Is(err, hypervisor.ErrNotFound) {
		t.Fatalf("VMState of a missing vm = %v; want ErrNotFound", err)
	}
	if err := d.RebootVM(ctx, h, ref); !errors.Is(err, hypervisor.ErrInvalid) {
		t.Fatalf("reboot of a stopped vm = %v; want ErrInvalid", err)
	}

	for range 2 { // starting a running VM is success
		if err := d.StartVM(ctx, h, ref); err != nil {
			t.Fatal(err)
		}
	}
	if vi, err := d.VMState(ctx, h, ref); err != nil || vi.State != hypervisor.StateRunning {
		t.Fatalf("VMState after start = %+v, %v", vi, err)
	}
	list, err := d.ListVMs(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, v := range list {
		if v.UUID == spec.UUID {
			found = v.State == hypervisor.StateRunning && v.Metadata["account"] == "admin" && v.HostID == h.ID
		}
	}
	if !found {
		t.Fatalf("ListVMs misses the running vm: %+v", list)
	}
	// The test driver has no guest to shut down: Force.
	for range 2 {
		if err := d.StopVM(ctx, h, ref, hypervisor.StopOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	if vi, _ := d.VMState(ctx, h, ref); vi.State != hypervisor.StateStopped {
		t.Fatalf("state after stop = %s", vi.State)
	}
	if err := d.ResizeVM(ctx, h, ref, hypervisor.Resize{VCPUs: 3, MemoryBytes: 128 << 20}); err != nil {
		t.Fatal(err)
	}
	if vi, _ := d.VMState(ctx, h, ref); vi.VCPUs != 3 || vi.MemoryBytes != 128<<20 {
		t.Fatalf("after resize: %d vcpus, %d bytes", vi.VCPUs, vi.MemoryBytes)
	}
	for range 2 { // destroying a missing VM is success
		if err := d.DestroyVM(ctx, h, ref); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.VMState(ctx, h, ref); !errors.Is(err, hypervisor.ErrNotFound) {
		t.Fatalf("VMState after destroy = %v; want ErrNotFound", err)
	}
}

func TestUnreachableHost(t *testing.T) {
	d := newTestDriver(t, hypervisor.TypeKVM)
	h := hypervisor.Host{ID: "gone", URL: "qemu:///system?socket=/nonexistent/libvirt-sock"}
	ctx := ctxFor(t, 10*time.Second)
	if _, err := d.ConnectHost(ctx, h); !errors.Is(err, hypervisor.ErrUnreachable) {
		t.Fatalf("ConnectHost = %v; want ErrUnreachable", err)
	}
	if _, err := d.CheckHost(ctx, h); !errors.Is(err, hypervisor.ErrUnreachable) || !hypervisor.Retryable(err) {
		t.Fatalf("CheckHost = %v; want retryable ErrUnreachable", err)
	}
	if _, err := d.ConnectHost(ctx, hypervisor.Host{URL: "lxc:///"}); !errors.Is(err, hypervisor.ErrInvalid) {
		t.Fatalf("KVM host with an lxc url = %v; want ErrInvalid", err)
	}
}

func TestRegistered(t *testing.T) {
	for _, typ := range []string{hypervisor.TypeKVM, hypervisor.TypeLXC, hypervisor.TypeXenProject} {
		drv, err := hypervisor.Open(typ, hypervisor.Config{})
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if drv.Type() != typ {
			t.Fatalf("Open(%s).Type() = %s", typ, drv.Type())
		}
	}
}

// TestGoldenXMLValidates has libvirtd check every golden domain against
// its schema (the Xen and LXC ones included, which this machine cannot
// run): the test driver validates before it refuses a foreign domain type.
func TestGoldenXMLValidates(t *testing.T) {
	testLibvirt(t)
	pool := libvirtconn.NewPool()
	t.Cleanup(func() { pool.Close() })
	l, err := pool.Get(ctxFor(t, 30*time.Second), "test:///default", "", "")
	if err != nil {
		t.Fatal(err)
	}
	// The check bites: an element out of the schema is refused.
	bad := "<domain type='lxc'><name>" + uniqueName(t) + "</name><memory>65536</memory><os><type>exe</type><init>/bin/sh</init></os>" +
		"<devices><filesystem type='volume'><source pool='p' volume='v'/><target dir='/'/></filesystem></devices></domain>"
	if _, err := l.DomainDefineXMLFlags(bad, golibvirt.DomainDefineValidate); libvirtconn.Code(err) != int(golibvirt.ErrXMLInvalidSchema) {
		t.Fatalf("schema-invalid domain: %v (code %d); want a schema error", err, libvirtconn.Code(err))
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "*.xml"))
	if len(files) == 0 {
		t.Fatal("no golden files")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// A name of its own: the test driver is shared by every client.
		x := strings.Replace(string(b), "<name>i-2-13-VM</name>", "<name>"+uniqueName(t)+"</name>", 1)
		x = strings.ReplaceAll(x, "6f1c7a52-94c5-4a8e-9a55-0c2d3e4f5a6b", uuid.NewString())
		dom, err := l.DomainDefineXMLFlags(x, golibvirt.DomainDefineValidate)
		if err == nil {
			l.DomainUndefine(dom)
			continue
		}
		if c := libvirtconn.Code(err); c == int(golibvirt.ErrXMLInvalidSchema) || c == int(golibvirt.ErrXMLError) || c == int(golibvirt.ErrXMLDetail) {
			t.Errorf("%s does not validate: %v", f, err)
		} else {
			t.Logf("%s validates (the test driver then says: %v)", f, err)
		}
	}
}

// TestTestDriverConcurrent drives several VMs at once through one driver
// and one connection (run it with -race).
func TestTestDriverConcurrent(t *testing.T) {
	testLibvirt(t)
	d := newTestDriver(t, hypervisor.TypeKVM)
	h := hypervisor.Host{ID: "h-test", URL: "test:///default"}
	ctx := ctxFor(t, time.Minute)
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			spec := tinySpec(fmt.Sprintf("%s-%d", uniqueName(t), i))
			errs <- func() error {
				defer d.DestroyVM(context.Background(), h, spec.Ref())
				if _, err := d.DefineVM(ctx, h, spec); err != nil {
					return err
				}
				if err := d.StartVM(ctx, h, spec.Ref()); err != nil {
					return err
				}
				if _, err := d.ListVMs(ctx, h); err != nil {
					return err
				}
				return d.DestroyVM(ctx, h, spec.Ref())
			}()
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
