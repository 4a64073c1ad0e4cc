package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"
)

// lxcBooted reads the marker the LXC test template's init leaves in the
// container (scripts/build-test-lxc-template.sh), from inside it, as an
// operator would look.
func lxcBooted(name string) string {
	out, err := exec.Command("virsh", "-c", "lxc:///", "lxc-enter-namespace", name, "--noseclabel", "/bin/cat", "/run/nimbus-booted").CombinedOutput()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func lxcWaitBooted(t *testing.T, name, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := lxcBooted(name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s: marker %q, want %q", name, got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func lxcDomState(name string) string {
	out, err := exec.Command("virsh", "-c", "lxc:///", "domstate", name).CombinedOutput()
	if err != nil {
		return "absent: " + strings.TrimSpace(string(out))
	}
	return strings.TrimSpace(string(out))
}

// TestLXCCloud runs a container's life on the machine's libvirtd through
// the API, as TestKVMCloud does a VM's: an LXC cluster and host lxc:///, a
// directory pool, a raw filesystem image registered as the template, a
// container deployed (its init runs with the name the user gave it), stopped
// gracefully, started again, destroyed with expunge, and nothing left.
func TestLXCCloud(t *testing.T) {
	kvmNeed(t)
	template := os.Getenv("NIMBUS_TEST_LXC_TEMPLATE")
	if template == "" {
		t.Skip("NIMBUS_TEST_LXC_TEMPLATE is not set: no LXC test template (scripts/services.sh builds it)")
	}
	c := kvmSetupFor(t, "LXC", "lxc:///", template, "RAW")
	cs := c.cs

	vm, err := c.deploy(t, "ct-1")
	if err != nil {
		t.Fatalf("deployVirtualMachine: %v", err)
	}
	t.Cleanup(func() {
		exec.Command("virsh", "-c", "lxc:///", "destroy", vm.Instancename).Run()
		exec.Command("virsh", "-c", "lxc:///", "undefine", vm.Instancename).Run()
	})
	if vm.State != "Running" || vm.Hypervisor != "LXC" || vm.Hostid != c.hostID {
		t.Fatalf("deployed %+v", vm)
	}
	want := "NIMBUS-TEST-GUEST-BOOTED hostname=ct-1 uuid=" + vm.Id
	lxcWaitBooted(t, vm.Instancename, want, 30*time.Second)

	// The root volume is the container's own raw copy of the template in
	// the pool, loop-mounted as its root.
	rp := cs.Volume.NewListVolumesParams()
	rp.SetVirtualmachineid(vm.Id)
	root := vmtMust[*cloudstack.ListVolumesResponse](t, "listVolumes")(cs.Volume.ListVolumes(rp))
	if root.Count != 1 || root.Volumes[0].Type != "ROOT" || root.Volumes[0].Storageid != c.poolID {
		t.Fatalf("volumes: %+v", root)
	}
	rootPath := filepath.Join(c.poolDir, root.Volumes[0].Path)
	if out, err := exec.Command("qemu-img", "info", "-U", rootPath).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "file format: raw") || strings.Contains(string(out), "backing file") {
		t.Fatalf("qemu-img info %s: %v\n%s", rootPath, err, out)
	}

	if _, err := cs.VirtualMachine.StopVirtualMachine(cs.VirtualMachine.NewStopVirtualMachineParams(vm.Id)); err != nil {
		t.Fatalf("stopVirtualMachine: %v", err)
	}
	if v := c.vm(t, vm.Id); v.State != "Stopped" {
		t.Fatalf("after stop: %s", v.State)
	}
	if st := lxcDomState(vm.Instancename); st != "shut off" && !strings.HasPrefix(st, "absent") {
		t.Fatalf("after stop the container is %s", st)
	}
	if _, err := cs.VirtualMachine.StartVirtualMachine(cs.VirtualMachine.NewStartVirtualMachineParams(vm.Id)); err != nil {
		t.Fatalf("startVirtualMachine: %v", err)
	}
	if v := c.vm(t, vm.Id); v.State != "Running" {
		t.Fatalf("after start: %s", v.State)
	}
	lxcWaitBooted(t, vm.Instancename, want, 30*time.Second)

	dp := cs.VirtualMachine.NewDestroyVirtualMachineParams(vm.Id)
	dp.SetExpunge(true)
	if _, err := cs.VirtualMachine.DestroyVirtualMachine(dp); err != nil {
		t.Fatalf("destroyVirtualMachine: %v", err)
	}
	if st := lxcDomState(vm.Instancename); !strings.HasPrefix(st, "absent") {
		t.Fatalf("after expunge the container is %s", st)
	}
	if _, err := os.Stat(rootPath); !os.IsNotExist(err) {
		t.Fatalf("the root volume is left: %v", err)
	}
	if _, err := cs.Pool.DeleteStoragePool(cs.Pool.NewDeleteStoragePoolParams(c.poolID)); err != nil {
		t.Fatalf("deleteStoragePool: %v", err)
	}
	if left, _ := os.ReadDir(c.poolDir); len(left) != 0 {
		t.Fatalf("files left in the pool directory: %v", left)
	}
}
