package libvirt

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// testTemplate is the bootable test template (scripts/build-test-template.sh).
func testTemplate(t *testing.T) string {
	t.Helper()
	p := os.Getenv("NIMBUS_TEST_TEMPLATE")
	if p == "" {
		t.Skip("NIMBUS_TEST_TEMPLATE is unset: no bootable test template (scripts/services.sh builds it)")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("NIMBUS_TEST_TEMPLATE: %v", err)
	}
	return p
}

// sharedDir is a temporary directory QEMU (running as its own user) can
// reach: t.TempDir's are private to root.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "nimbus-libvirt-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// serialLog follows a guest's serial console log.
type serialLog struct {
	t    *testing.T
	path string
}

func (s serialLog) read() string {
	b, _ := os.ReadFile(s.path)
	return string(b)
}

// waitFor waits until the log holds n lines containing want, and returns
// the last one.
func (s serialLog) waitFor(want string, n int, timeout time.Duration) string {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var lines []string
		for _, l := range strings.Split(s.read(), "\n") {
			if strings.Contains(l, want) {
				lines = append(lines, strings.TrimSpace(l))
			}
		}
		if len(lines) >= n {
			return lines[n-1]
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("serial log %s: no %d× %q after %v; log:\n%s", s.path, n, want, timeout, tail(s.read(), 2000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitLastDisks waits for the guest's latest disk list to equal want.
func (s serialLog) waitLastDisks(want string, timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		for _, l := range strings.Split(s.read(), "\n") {
			if i := strings.Index(l, "NIMBUS-TEST-GUEST-DISKS"); i >= 0 {
				last = strings.TrimSpace(strings.TrimPrefix(l[i:], "NIMBUS-TEST-GUEST-DISKS"))
			}
		}
		if last == want {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("guest disks %q, want %q after %v; log:\n%s", last, want, timeout, tail(s.read(), 2000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// eventLog collects a host's VM events for one VM. When the stream
// closes (libvirtd restarted: other tests share it) it subscribes again, as
// a real consumer would after reconciling, and counts the gap.
type eventLog struct {
	mu     sync.Mutex
	events []hypervisor.VMEvent
	gaps   []int // len(events) at each resubscription
}

func watch(t *testing.T, d *Driver, h hypervisor.Host, vmUUID string) *eventLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := d.WatchVMs(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	el := &eventLog{}
	go func() {
		for {
			for e := range ch {
				if e.UUID == vmUUID {
					el.mu.Lock()
					el.events = append(el.events, e)
					el.mu.Unlock()
				}
			}
			for {
				if ctx.Err() != nil {
					return
				}
				if ch, err = d.WatchVMs(ctx, h); err == nil {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			el.mu.Lock()
			el.gaps = append(el.gaps, len(el.events))
			el.mu.Unlock()
		}
	}()
	return el
}

// waitEvent waits for an event of the state and reason after index from,
// and returns the index after it. If the stream had a gap meanwhile and
// the event is not there, it returns -1 (the event may have been lost).
func (el *eventLog) waitEvent(t *testing.T, from int, state hypervisor.State, reason string, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		el.mu.Lock()
		for i := from; i < len(el.events); i++ {
			if e := el.events[i]; e.State == state && (reason == "" || e.Reason == reason) {
				el.mu.Unlock()
				return i + 1
			}
		}
		gap := len(el.gaps) > 0 && el.gaps[len(el.gaps)-1] >= from
		evs := fmt.Sprint(el.events)
		el.mu.Unlock()
		if time.Now().After(deadline) {
			if gap {
				t.Logf("no %s/%s event, but the event stream was cut (libvirtd restarted by another test): events may be lost", state, reason)
				return -1
			}
			t.Fatalf("no %s/%s event after #%d in %v; events: %s", state, reason, from, timeout, evs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (el *eventLog) count() int {
	el.mu.Lock()
	defer el.mu.Unlock()
	return len(el.events)
}

func (el *eventLog) at(i int) hypervisor.VMEvent {
	el.mu.Lock()
	defer el.mu.Unlock()
	return el.events[i]
}

func virsh(t *testing.T, uri string, args ...string) {
	t.Helper()
	if out, err := exec.Command("virsh", append([]string{"-c", uri}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("virsh %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func virshListAll(t *testing.T, uri string) string {
	out, err := exec.Command("virsh", "-c", uri, "list", "--all", "--name").CombinedOutput()
	if err != nil {
		t.Fatalf("virsh list: %v: %s", err, out)
	}
	return string(out)
}

// testBridge makes a Linux bridge for the test's NIC, or returns "" when
// this machine cannot (then the VM has no NIC).
func testBridge(t *testing.T) string {
	br := "nbt" + uuid.NewString()[:8]
	if out, err := exec.Command("ip", "link", "add", br, "type", "bridge").CombinedOutput(); err != nil {
		t.Logf("no test bridge (%v: %s): the VM gets no NIC", err, bytes.TrimSpace(out))
		return ""
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", br).Run() })
	if out, err := exec.Command("ip", "link", "set", br, "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set %s up: %v: %s", br, err, out)
	}
	return br
}

// TestQEMUGuestLifecycle boots the test template under QEMU through the
// driver and checks each operation as the guest sees it.
func TestQEMUGuestLifecycle(t *testing.T) {
	uri := testLibvirt(t)
	tpl := testTemplate(t)
	drv := newTestDriver(t, hypervisor.TypeKVM)
	d := retrying{t, drv}
	dir := sharedDir(t)
	consoleDir := filepath.Join(dir, "console", "nested") // the driver makes it
	h := hypervisor.Host{ID: "h-qemu", URL: uri, Details: map[string]string{DetailConsoleDir: consoleDir}}
	ctx := ctxFor(t, 10*time.Minute)

	start := time.Now()
	info, err := d.ConnectHost(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("host %s: %d cpus at %d MHz, %d MiB, %s, hv %s; %s (%v)", info.Name, info.CPUCores, info.CPUMHz,
		info.MemoryBytes>>20, info.CPUModel, info.HypervisorVersion, info.Details["accel.probe"], time.Since(start).Round(time.Millisecond))
	if want := map[bool]string{true: "kvm", false: "qemu"}[info.Capabilities.HardwareAccel]; info.Details["domain.type"] != want {
		t.Fatalf("domain type %q with HardwareAccel %v", info.Details["domain.type"], info.Capabilities.HardwareAccel)
	}

	root := filepath.Join(dir, "root.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", tpl, root)
	os.Chmod(root, 0o666)
	// The data disk is a volume of a libvirt pool, named as the storage
	// driver names them (pool = the Nimbus pool's UUID, volume = path).
	poolName := uuid.NewString()
	poolDir := filepath.Join(dir, "pool")
	virsh(t, uri, "pool-create-as", poolName, "dir", "--target", poolDir, "--build")
	t.Cleanup(func() { exec.Command("virsh", "-c", uri, "pool-destroy", poolName).Run() })
	volName := "vol-" + uuid.NewString()[:8] + ".qcow2"
	virsh(t, uri, "vol-create-as", poolName, volName, "16M", "--format", "qcow2")
	t.Cleanup(func() { exec.Command("virsh", "-c", uri, "vol-delete", "--pool", poolName, volName).Run() })

	name := uniqueName(t)
	hostname := "guest-" + uuid.NewString()[:6]
	spec := hypervisor.VMSpec{Name: name, UUID: uuid.NewString(), DisplayName: "lifecycle test", VCPUs: 1, MHz: 500,
		MemoryBytes: 256 << 20, ConsolePassword: "pw1234",
		Disks:    []hypervisor.Disk{{VolumeID: uuid.NewString(), Path: root, Format: "qcow2"}},
		Metadata: map[string]string{"hostname": hostname, "account": "admin"}}
	if br := testBridge(t); br != "" {
		spec.NICs = []hypervisor.NIC{{MAC: "02:00:00:aa:bb:01", Label: br}}
	}
	ref := spec.Ref()
	t.Cleanup(func() { d.DestroyVM(context.Background(), h, ref) })
	events := watch(t, drv, h, spec.UUID)

	if _, err := d.DefineVM(ctx, h, spec); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := d.StartVM(ctx, h, ref); err != nil {
		t.Fatal(err)
	}
	log := serialLog{t: t, path: ConsoleLogPath(consoleDir, name)}
	booted := log.waitFor("NIMBUS-TEST-GUEST-BOOTED", 1, 3*time.Minute)
	t.Logf("booted in %v: %s", time.Since(start).Round(time.Millisecond), booted)
	if !strings.Contains(booted, "hostname="+hostname+" ") {
		t.Fatalf("guest saw %q; want hostname=%s", booted, hostname)
	}
	if !strings.Contains(strings.ToLower(booted), "uuid="+spec.UUID) {
		t.Errorf("guest saw %q; want uuid=%s", booted, spec.UUID)
	}
	log.waitLastDisks("vda", time.Minute)
	events.waitEvent(t, 0, hypervisor.StateRunning, "started", 30*time.Second)
	next := events.count()

	c, err := d.ConsoleEndpoint(ctx, h, ref)
	if err != nil || c.Protocol != "vnc" || c.Port < 5900 || c.Password != "pw1234" || c.Host == "" {
		t.Fatalf("ConsoleEndpoint = %+v, %v", c, err)
	}

	// Hot-plug a data disk; attaching twice is one disk.
	disk := hypervisor.Disk{VolumeID: uuid.NewString(), Pool: poolName, Path: volName, Format: "qcow2", DeviceID: 1}
	for range 2 {
		if err := d.AttachVolume(ctx, h, ref, disk); err != nil {
			t.Fatal(err)
		}
	}
	log.waitLastDisks("vda vdb", time.Minute)
	vi, err := d.VMState(ctx, h, ref)
	if err != nil || len(vi.Disks) != 3 { // root, data, empty CD-ROM
		t.Fatalf("VMState after attach = %+v, %v", vi.Disks, err)
	}
	for range 2 {
		if err := d.DetachVolume(ctx, h, ref, disk); err != nil {
			t.Fatal(err)
		}
	}
	log.waitLastDisks("vda", time.Minute)

	// Graceful stop: the guest powers itself off on the ACPI button, so
	// the stop is not forced (a forced one is a "destroyed" event).
	start = time.Now()
	if err := d.StopVM(ctx, h, ref, hypervisor.StopOptions{Timeout: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	// The guest's own words say it was not forced.
	log.waitFor("NIMBUS-GUEST-POWEROFF", 1, 10*time.Second)
	if n := events.waitEvent(t, next, hypervisor.StateStopped, "", 30*time.Second); n > 0 {
		if e := events.at(n - 1); e.Reason == "destroyed" {
			t.Fatalf("graceful stop was forced: %+v", e)
		}
		t.Logf("graceful stop in %v (%s)", took.Round(time.Millisecond), events.at(n-1).Reason)
	}
	if vi, _ := d.VMState(ctx, h, ref); vi.State != hypervisor.StateStopped {
		t.Fatalf("state after stop = %s", vi.State)
	}
	// The defined VM keeps its data disk detached (live and config).
	if vi, _ := d.VMState(ctx, h, ref); len(vi.Disks) != 2 {
		t.Fatalf("disks after stop = %+v", vi.Disks)
	}

	// Stopped: a resize grows it; started again, it reboots.
	if err := d.ResizeVM(ctx, h, ref, hypervisor.Resize{VCPUs: 2, MemoryBytes: 320 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := d.StartVM(ctx, h, ref); err != nil {
		t.Fatal(err)
	}
	log.waitFor("NIMBUS-TEST-GUEST-BOOTED", 2, 3*time.Minute)
	if vi, _ := d.VMState(ctx, h, ref); vi.VCPUs != 2 || vi.MemoryBytes != 320<<20 {
		t.Fatalf("after resize: %d vcpus, %d MiB", vi.VCPUs, vi.MemoryBytes>>20)
	}
	if err := d.RebootVM(ctx, h, ref); err != nil {
		t.Fatal(err)
	}
	log.waitFor("NIMBUS-TEST-GUEST-BOOTED", 3, 3*time.Minute)
	if vi, _ := d.VMState(ctx, h, ref); vi.State != hypervisor.StateRunning {
		t.Fatalf("state after reboot = %s", vi.State)
	}

	// A power-off from inside the guest (here its ACPI button pressed
	// behind Nimbus's back) reaches the watcher as guest-shutdown.
	// The press is repeated: the guest ignores one before its acpid runs.
	next = events.count()
	for i := 0; ; i++ {
		if out, err := exec.Command("virsh", "-c", uri, "shutdown", "--mode", "acpi", name).CombinedOutput(); err != nil {
			if vi, _ := d.VMState(ctx, h, ref); vi.State == hypervisor.StateStopped {
				break
			}
			t.Fatalf("virsh shutdown: %v: %s", err, out)
		}
		if vi, _ := d.VMState(ctx, h, ref); vi.State == hypervisor.StateStopped || i > 24 {
			break
		}
		time.Sleep(5 * time.Second)
		if vi, _ := d.VMState(ctx, h, ref); vi.State == hypervisor.StateStopped {
			break
		}
	}
	events.waitEvent(t, next, hypervisor.StateStopped, "guest-shutdown", 30*time.Second)

	// Forced stop of a running VM, then destroy: nothing left.
	if err := d.StartVM(ctx, h, ref); err != nil {
		t.Fatal(err)
	}
	if err := d.StopVM(ctx, h, ref, hypervisor.StopOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := d.StartVM(ctx, h, ref); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := d.DestroyVM(ctx, h, ref); err != nil {
			t.Fatal(err)
		}
	}
	if strings.Contains(virshListAll(t, uri), name) {
		t.Fatalf("domain %s left after DestroyVM", name)
	}
	events.waitEvent(t, next, "", "undefined", 30*time.Second)
}
