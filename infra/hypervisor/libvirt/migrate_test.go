package libvirt

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// secondLibvirtd starts another libvirtd on this machine that passes for
// another host: its own mount namespace over /run/libvirt, /etc/libvirt,
// /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt, its own host
// name (UTS namespace) and host UUID. libvirt refuses to migrate a guest
// to the daemon it runs on, and a lab with one machine has no second
// host. It returns the URL of its socket, or skips when this machine
// cannot make namespaces (not root, no unshare).
func secondLibvirtd(t *testing.T) string {
	t.Helper()
	if u := os.Getenv("NIMBUS_TEST_LIBVIRT_SECOND"); u != "" {
		return u
	}
	if os.Geteuid() != 0 {
		t.Skip("a second libvirtd needs root (mount and UTS namespaces); set NIMBUS_TEST_LIBVIRT_SECOND to a second host's URL")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("no unshare to run a second libvirtd; set NIMBUS_TEST_LIBVIRT_SECOND to a second host's URL")
	}
	dir, err := os.MkdirTemp("/var/tmp", "nimbus-libvirtd2-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, d := range []string{"run", "lib", "cache", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	etc := filepath.Join(dir, "etc")
	if out, err := exec.Command("cp", "-a", "/etc/libvirt", etc).CombinedOutput(); err != nil {
		t.Fatalf("copy /etc/libvirt: %v: %s", err, out)
	}
	// No domains, pools or networks of the first daemon.
	for _, g := range []string{"qemu/*.xml", "qemu/autostart", "qemu/networks", "storage"} {
		m, _ := filepath.Glob(filepath.Join(etc, g))
		for _, p := range m {
			os.RemoveAll(p)
		}
	}
	appendFile(t, filepath.Join(etc, "libvirtd.conf"), "\nhost_uuid = \""+uuid.NewString()+"\"\n")
	// Both daemons label the same disk files: let the second leave them be.
	appendFile(t, filepath.Join(etc, "qemu.conf"), "\ndynamic_ownership = 0\nremember_owner = 0\nstdio_handler = \"file\"\n")
	script := "set -e\n"
	for _, m := range [][2]string{{"run", "/run/libvirt"}, {"etc", "/etc/libvirt"}, {"lib", "/var/lib/libvirt"},
		{"cache", "/var/cache/libvirt"}, {"log", "/var/log/libvirt"}} {
		script += "mount --bind " + filepath.Join(dir, m[0]) + " " + m[1] + "\n"
	}
	script += "hostname nimbus-second-" + uuid.NewString()[:6] + "\nexec libvirtd\n"
	cmd := exec.Command("unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", script)
	logf, err := os.Create(filepath.Join(dir, "libvirtd.out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start a second libvirtd: %v", err)
	}
	sock := filepath.Join(dir, "run", "libvirt-sock")
	u := "qemu:///system?socket=" + sock
	t.Cleanup(func() {
		// Its guests first: QEMU outlives libvirtd.
		exec.Command("sh", "-c", "for d in $(virsh -c '"+u+"' list --name); do virsh -c '"+u+"' destroy $d; done").Run()
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if exec.Command("virsh", "-c", u, "version").Run() == nil {
			return u
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "libvirtd.out"))
			t.Skipf("the second libvirtd did not come up: %s", tail(string(b), 1000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// TestQEMULiveMigration moves a booted guest between two libvirtds (the
// shared one and a second one on this machine, see secondLibvirtd) and
// checks it keeps running on the destination, defined there only, and
// goes back cold.
func TestQEMULiveMigration(t *testing.T) {
	uri := testLibvirt(t)
	tpl := testTemplate(t)
	uri2 := secondLibvirtd(t)
	drv := newTestDriver(t, hypervisor.TypeKVM)
	d := retrying{t, drv}
	dir := sharedDir(t)
	consoleDir := filepath.Join(dir, "console")
	// Both "hosts" see the same /var/tmp: shared storage libvirt cannot
	// tell is shared.
	src := hypervisor.Host{ID: "src", URL: uri, Details: map[string]string{DetailConsoleDir: consoleDir, DetailMigrateShared: "true"}}
	dst := hypervisor.Host{ID: "dst", URL: uri2, Details: map[string]string{DetailConsoleDir: consoleDir, DetailMigrateAddr: "127.0.0.1",
		DetailMigrateShared: "true"}}
	ctx := ctxFor(t, 10*time.Minute)
	for _, h := range []hypervisor.Host{src, dst} {
		if _, err := d.ConnectHost(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	root := filepath.Join(dir, "root.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", tpl, root)
	os.Chmod(root, 0o666)
	name := uniqueName(t)
	spec := hypervisor.VMSpec{Name: name, UUID: uuid.NewString(), VCPUs: 1, MemoryBytes: 256 << 20,
		Disks:    []hypervisor.Disk{{Path: root, Format: "qcow2"}},
		Metadata: map[string]string{"hostname": "migrant"}}
	ref := spec.Ref()
	t.Cleanup(func() {
		d.DestroyVM(context.Background(), src, ref)
		d.DestroyVM(context.Background(), dst, ref)
	})
	// Both daemons' QEMUs write the serial log.
	if err := os.MkdirAll(consoleDir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(consoleDir, 0o777)
	logPath := ConsoleLogPath(consoleDir, name)
	if err := os.WriteFile(logPath, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(logPath, 0o666)
	if _, err := d.DefineVM(ctx, src, spec); err != nil {
		t.Fatal(err)
	}
	if err := d.StartVM(ctx, src, ref); err != nil {
		t.Fatal(err)
	}
	log := serialLog{t: t, path: logPath}
	log.waitFor("NIMBUS-TEST-GUEST-BOOTED hostname=migrant", 1, 3*time.Minute)
	log.waitLastDisks("vda", time.Minute)

	if err := d.MigrateVM(ctx, src, ref, src, hypervisor.MigrateOptions{Live: true}); err == nil {
		t.Fatal("migration to the same libvirtd succeeded")
	}
	start := time.Now()
	if err := d.MigrateVM(ctx, src, ref, dst, hypervisor.MigrateOptions{Live: true, Timeout: 3 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	t.Logf("live migration took %v", time.Since(start).Round(time.Millisecond))
	if _, err := d.VMState(ctx, src, ref); err == nil {
		t.Fatal("vm still defined on the source (UNDEFINE_SOURCE)")
	}
	vi, err := d.VMState(ctx, dst, ref)
	if err != nil || vi.State != hypervisor.StateRunning || vi.Metadata["hostname"] != "migrant" {
		t.Fatalf("on the destination: %+v, %v", vi, err)
	}
	// The guest lives on: it still answers its power button, once.
	if err := d.StopVM(ctx, dst, ref, hypervisor.StopOptions{Timeout: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	log.waitFor("NIMBUS-GUEST-POWEROFF", 1, 30*time.Second)
	if n := strings.Count(log.read(), "NIMBUS-TEST-GUEST-BOOTED"); n != 1 {
		t.Fatalf("guest booted %d times: the migration restarted it", n)
	}
	// Persistent on the destination (PERSIST_DEST): stopped, still there.
	if vi, err := d.VMState(ctx, dst, ref); err != nil || vi.State != hypervisor.StateStopped {
		t.Fatalf("after stop on the destination: %+v, %v", vi, err)
	}
	// Cold migration back; moving it again is success.
	for range 2 {
		if err := d.MigrateVM(ctx, dst, ref, src, hypervisor.MigrateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.VMState(ctx, dst, ref); err == nil {
		t.Fatal("vm still defined on the destination after cold migration")
	}
	if vi, err := d.VMState(ctx, src, ref); err != nil || vi.State != hypervisor.StateStopped {
		t.Fatalf("back on the source: %+v, %v", vi, err)
	}
}
