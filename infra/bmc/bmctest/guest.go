package bmctest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// GuestOptions shapes a PXE-booting QEMU machine.
type GuestOptions struct {
	LibvirtURI string // default qemu:///system
	MemoryMiB  int    // default 256
	// BootFile builds the URL DHCP hands out as the boot file from the
	// network's gateway address (where the host answers the guest), e.g.
	// func(gw string) string { return "http://" + gw + ":8081/pxe/boot.ipxe" }.
	BootFile func(gateway string) string
}

// Guest is a libvirt network (dnsmasq run by libvirt, pointing PXE at the
// boot file) and a diskless domain on it that boots from the network only,
// with an iPXE NIC ROM: a bare-metal machine in miniature. The domain is
// defined but off; a BMC (StartIPMISim with Domain) powers it. Both are
// removed when the test ends.
type Guest struct {
	Name    string // of the domain and the network (nimbus-bm-<random>)
	MAC     string // the NIC's
	Gateway string // the host's address on the network
	Console string // file the serial console is written to
	uri     string
}

// virsh runs virsh on the URI and returns its combined output.
func virsh(uri string, args ...string) (string, error) {
	out, err := exec.Command("virsh", append([]string{"-c", uri}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// NeedLibvirt skips the test when libvirtd with QEMU does not answer.
func NeedLibvirt(t testing.TB, uri string) {
	t.Helper()
	Need(t, "virsh")
	if uri == "" {
		uri = "qemu:///system"
	}
	if out, err := virsh(uri, "version"); err != nil {
		t.Skipf("libvirtd does not answer on %s (scripts/services.sh starts it; CI runs it): %s", uri, out)
	}
}

// StartGuest creates the network and defines the domain.
func StartGuest(t testing.TB, o GuestOptions) *Guest {
	t.Helper()
	if o.LibvirtURI == "" {
		o.LibvirtURI = "qemu:///system"
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 256
	}
	NeedLibvirt(t, o.LibvirtURI)
	suffix := randomHex(4)
	g := &Guest{Name: "nimbus-bm-" + suffix, uri: o.LibvirtURI,
		MAC: fmt.Sprintf("52:54:00:%02x:%02x:%02x", rand.IntN(256), rand.IntN(256), rand.IntN(256))}
	dir := t.TempDir()
	// qemu may run as another user: it must reach the console file.
	_ = os.Chmod(dir, 0o755)
	g.Console = filepath.Join(dir, "console.log")
	addrs, _ := exec.Command("ip", "-4", "-o", "addr").Output()
	var lastErr string
	for attempt := 0; attempt < 8 && g.Gateway == ""; attempt++ {
		subnet := fmt.Sprintf("192.168.%d", 100+rand.IntN(150))
		if bytes.Contains(addrs, []byte(" "+subnet+".")) {
			continue
		}
		gw := subnet + ".1"
		xml := fmt.Sprintf(`<network>
  <name>%s</name>
  <bridge name='nbm%s' stp='off'/>
  <ip address='%s' netmask='255.255.255.0'>
    <dhcp>
      <range start='%s.10' end='%s.100'/>
      <bootp file='%s'/>
    </dhcp>
  </ip>
</network>`, g.Name, suffix, gw, subnet, subnet, o.BootFile(gw))
		f := filepath.Join(dir, "net.xml")
		if err := os.WriteFile(f, []byte(xml), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := virsh(g.uri, "net-create", f)
		if err != nil {
			lastErr = out
			continue
		}
		g.Gateway = gw
	}
	if g.Gateway == "" {
		t.Fatalf("cannot create libvirt network %s: %s", g.Name, lastErr)
	}
	t.Cleanup(func() {
		if out, err := virsh(g.uri, "net-destroy", g.Name); err != nil {
			t.Logf("net-destroy %s: %s", g.Name, out)
		}
	})
	dom := fmt.Sprintf(`<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>%d</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <interface type='network'><source network='%s'/><mac address='%s'/><model type='virtio'/></interface>
    <serial type='file'><source path='%s' append='on'/></serial>
  </devices>
</domain>`, g.Name, o.MemoryMiB, g.Name, g.MAC, g.Console)
	f := filepath.Join(dir, "dom.xml")
	if err := os.WriteFile(f, []byte(dom), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := virsh(g.uri, "define", f); err != nil {
		t.Fatalf("define %s: %s", g.Name, out)
	}
	t.Cleanup(func() {
		_, _ = virsh(g.uri, "destroy", g.Name)
		if out, err := virsh(g.uri, "undefine", g.Name); err != nil {
			t.Logf("undefine %s: %s", g.Name, out)
		}
	})
	return g
}

// State is the domain's state as virsh says it ("running", "shut off").
func (g *Guest) State() string {
	out, _ := virsh(g.uri, "domstate", g.Name)
	return out
}

// Running tells whether the domain runs.
func (g *Guest) Running() bool { return strings.HasPrefix(g.State(), "running") }

// ConsoleText is what the guest wrote to its serial console so far.
func (g *Guest) ConsoleText() string {
	b, _ := os.ReadFile(g.Console)
	return string(b)
}

// WaitConsole waits until the console holds s, failing the test after
// timeout with the console's tail.
func (g *Guest) WaitConsole(t testing.TB, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(g.ConsoleText(), s) {
		if time.Now().After(deadline) {
			txt := g.ConsoleText()
			if len(txt) > 3000 {
				txt = txt[len(txt)-3000:]
			}
			t.Fatalf("guest %s did not print %q within %s (state %s); console:\n%s", g.Name, s, timeout, g.State(), txt)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// WaitState waits until the domain is running (or not).
func (g *Guest) WaitState(t testing.TB, running bool, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for g.Running() != running {
		if time.Now().After(deadline) {
			t.Fatalf("guest %s is %s after %s, want running=%v", g.Name, g.State(), timeout, running)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
