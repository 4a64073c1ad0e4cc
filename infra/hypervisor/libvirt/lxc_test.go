package libvirt

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// busyboxRoot builds a container root filesystem: busybox and an init
// that leaves a file when it starts and another when asked to stop.
func busyboxRoot(t *testing.T, dir string) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("no busybox on this machine for the container's root filesystem")
	}
	root := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"sh", "sleep", "echo", "hostname"} {
		os.Symlink("busybox", filepath.Join(root, "bin", l))
	}
	init := "#!/bin/sh\ntrap 'echo stopped >/tmp/stopped; exit 0' TERM\necho booted >/tmp/booted\nwhile :; do sleep 1; done\n"
	if err := os.WriteFile(filepath.Join(root, "init.sh"), []byte(init), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

func waitFile(t *testing.T, path string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear in %v", path, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestLXCContainerLifecycle runs a busybox container through lxc:///.
func TestLXCContainerLifecycle(t *testing.T) {
	testLibvirt(t)
	drv := newTestDriver(t, hypervisor.TypeLXC)
	d := retrying{t, drv}
	h := hypervisor.Host{ID: "h-lxc", URL: "lxc:///"}
	ctx := ctxFor(t, 3*time.Minute)
	info, err := d.ConnectHost(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if info.Details["domain.type"] != "lxc" || info.Capabilities.LiveMigration {
		t.Fatalf("ConnectHost = %+v", info)
	}
	root := busyboxRoot(t, sharedDir(t))
	spec := hypervisor.VMSpec{Name: uniqueName(t), UUID: uuid.NewString(), VCPUs: 1, MemoryBytes: 64 << 20,
		Disks:    []hypervisor.Disk{{Path: root, Format: "dir"}},
		Metadata: map[string]string{"lxc.init": "/init.sh"}}
	if br := testBridge(t); br != "" {
		spec.NICs = []hypervisor.NIC{{MAC: "02:00:00:aa:bb:02", Label: br}}
	}
	ref := spec.Ref()
	t.Cleanup(func() { d.DestroyVM(ctx, h, ref) })
	events := watch(t, drv, h, spec.UUID)
	if _, err := d.DefineVM(ctx, h, spec); err != nil {
		t.Fatal(err)
	}
	if vi, err := d.VMState(ctx, h, ref); err != nil || vi.State != hypervisor.StateStopped || len(vi.Disks) != 1 || vi.Disks[0].Path != root {
		t.Fatalf("defined container: %+v, %v", vi, err)
	}
	if err := d.StartVM(ctx, h, ref); err != nil {
		if strings.Contains(err.Error(), "/sys/fs/cgroup/unified") {
			// libvirt 9.0's LXC driver on a hybrid cgroup v1+v2 host:
			// scripts/services.sh starts libvirtd without the v2 mount.
			t.Fatalf("%v (start libvirtd with scripts/services.sh)", err)
		}
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(root, "tmp", "booted"), 30*time.Second)
	events.waitEvent(t, 0, hypervisor.StateRunning, "started", 30*time.Second)
	next := events.count()
	if err := d.AttachVolume(ctx, h, ref, hypervisor.Disk{Path: "/x"}); err == nil {
		t.Fatal("a container took a disk")
	}
	if err := d.StopVM(ctx, h, ref, hypervisor.StopOptions{Timeout: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(root, "tmp", "stopped"), 5*time.Second) // init ran its TERM trap: not forced
	events.waitEvent(t, next, hypervisor.StateStopped, "", 30*time.Second)
	if vi, err := d.VMState(ctx, h, ref); err != nil || vi.State != hypervisor.StateStopped {
		t.Fatalf("after stop: %+v, %v", vi, err)
	}
	if err := d.StartVM(ctx, h, ref); err != nil {
		t.Fatal(err)
	}
	if err := d.DestroyVM(ctx, h, ref); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(virshListAll(t, "lxc:///"), spec.Name) {
		t.Fatalf("container %s left after DestroyVM", spec.Name)
	}
}
