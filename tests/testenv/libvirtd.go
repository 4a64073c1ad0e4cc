package testenv

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Libvirtd is a libvirtd of one test's own, beside the machine's shared one
// (scripts/services.sh), so that a test may kill and restart it without
// disturbing the tests that share the other: its own /etc/libvirt (copied,
// without the shared daemon's domains, pools and networks), /run/libvirt,
// /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt, bind-mounted
// in a mount namespace of its own, and its own host UUID. It shares the
// machine's network, bridges and QEMU.
type Libvirtd struct {
	URL string // qemu:///system?socket=<its socket>
	t   testing.TB
	dir string
	cmd *exec.Cmd
}

// StartLibvirtd starts a private libvirtd for the test and stops it (and
// its guests) at the end. It needs root and unshare(1); without them the
// test is skipped, saying so.
func StartLibvirtd(t testing.TB) *Libvirtd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a private libvirtd needs root (mount namespace)")
	}
	for _, bin := range []string{"unshare", "libvirtd", "virsh"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("no %s here for a private libvirtd", bin)
		}
	}
	dir, err := os.MkdirTemp("/var/tmp", "nimbus-libvirtd-")
	if err != nil {
		t.Fatal(err)
	}
	d := &Libvirtd{t: t, dir: dir, URL: "qemu:///system?socket=" + filepath.Join(dir, "run", "libvirt-sock")}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, sub := range []string{"run", "lib", "cache", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	etc := filepath.Join(dir, "etc")
	if out, err := exec.Command("cp", "-a", "/etc/libvirt", etc).CombinedOutput(); err != nil {
		t.Fatalf("copy /etc/libvirt: %v: %s", err, out)
	}
	for _, g := range []string{"qemu/*.xml", "qemu/autostart", "qemu/networks", "storage", "secrets"} {
		m, _ := filepath.Glob(filepath.Join(etc, g))
		for _, p := range m {
			os.RemoveAll(p)
		}
	}
	u := make([]byte, 16)
	rand.Read(u)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	hostUUID := fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
	appendTo(t, filepath.Join(etc, "libvirtd.conf"), "\nhost_uuid = \""+hostUUID+"\"\n")
	// Consoles to files directly: the shared virtlogd's socket is not in
	// this daemon's /run/libvirt.
	appendTo(t, filepath.Join(etc, "qemu.conf"), "\nstdio_handler = \"file\"\n")
	t.Cleanup(d.stop)
	d.Start()
	return d
}

// Start starts the daemon (again, after Kill) on the same state.
func (d *Libvirtd) Start() {
	d.t.Helper()
	script := "set -e\n"
	for _, m := range [][2]string{{"run", "/run/libvirt"}, {"etc", "/etc/libvirt"}, {"lib", "/var/lib/libvirt"},
		{"cache", "/var/cache/libvirt"}, {"log", "/var/log/libvirt"}} {
		script += "mount --bind " + filepath.Join(d.dir, m[0]) + " " + m[1] + "\n"
	}
	// As scripts/services.sh does: no cgroup v2 mount on a hybrid host, or
	// libvirt 9.0's LXC driver cannot start containers.
	script += "if [ \"$(stat -f -c %T /sys/fs/cgroup)\" = tmpfs ] && mountpoint -q /sys/fs/cgroup/unified; then umount -l /sys/fs/cgroup/unified; fi\n"
	script += "exec libvirtd\n"
	os.Remove(filepath.Join(d.dir, "run", "libvirtd.pid"))
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	out, err := os.OpenFile(filepath.Join(d.dir, "libvirtd.out"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		d.t.Skipf("cannot start a private libvirtd: %v", err)
	}
	d.cmd = cmd
	go cmd.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for exec.Command("virsh", "-c", d.URL, "version").Run() != nil {
		if time.Now().After(deadline) {
			d.t.Fatalf("the private libvirtd did not come up in 30 s:\n%s", tail(filepath.Join(d.dir, "libvirtd.out"), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Kill kills the daemon as a crash would (SIGKILL); its guests keep running
// and the next Start takes them over.
func (d *Libvirtd) Kill() {
	d.t.Helper()
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	pid := d.cmd.Process.Pid
	syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	d.cmd = nil
}

// stop destroys the daemon's guests, then stops it.
func (d *Libvirtd) stop() {
	if d.cmd == nil {
		return
	}
	exec.Command("sh", "-c", "for d in $(virsh -c '"+d.URL+"' list --name); do virsh -c '"+d.URL+"' destroy $d; done").Run()
	d.cmd.Process.Signal(syscall.SIGTERM)
	pid := d.cmd.Process.Pid
	for i := 0; i < 250 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	d.cmd = nil
}

func appendTo(t testing.TB, path, s string) {
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
