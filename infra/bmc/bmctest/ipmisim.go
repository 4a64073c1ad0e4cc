// Package bmctest runs real BMCs for tests: OpenIPMI's ipmi_sim (a real
// IPMI 2.0 LAN endpoint) whose chassis powers either a state file or a
// libvirt domain on and off, a small stateful Redfish service, and a QEMU
// guest that PXE-boots from a libvirt network, so that a power-on through
// the BMC really starts a machine. Production code never imports it.
package bmctest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// IPMIOptions shapes an ipmi_sim BMC.
type IPMIOptions struct {
	User, Password string // default admin / password
	// Domain, when set, is the libvirt domain (on LibvirtURI, default
	// qemu:///system) the chassis powers: power on starts it, power off
	// destroys it, a soft shutdown sends ACPI, a reset resets it. Without
	// one the chassis keeps its power in a file.
	Domain     string
	LibvirtURI string
}

// IPMISim is a running ipmi_sim.
type IPMISim struct {
	Addr string // 127.0.0.1:PORT
	URL  string // ipmi://127.0.0.1:PORT
	User string
	Pass string
	Dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// chassisScript is ipmi_sim's chassis_control program: called as
// "SCRIPT 0x20 get power boot ..." (answering "power:1" lines) or
// "SCRIPT 0x20 set power 1 ...". A "stuck" file in its directory makes it
// accept power commands and ignore them.
const chassisScript = `#!/bin/sh
dir=%q
dom=%q
uri=%q
echo "$(date +%%T.%%N) $*" >>"$dir/calls.log"
state() {
	if [ -n "$dom" ]; then
		if virsh -c "$uri" domstate "$dom" 2>/dev/null | grep -q '^running'; then echo 1; else echo 0; fi
	else
		cat "$dir/power" 2>/dev/null || echo 0
	fi
}
virt() { virsh -c "$uri" "$@" "$dom" >>"$dir/virsh.log" 2>&1 || true; }
op=$2
shift 2
case $op in
get)
	for p in "$@"; do
		case $p in
		power) echo "power:$(state)" ;;
		boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)" ;;
		esac
	done ;;
set)
	while [ $# -ge 2 ]; do
		if [ "$1" = boot ]; then echo "$2" >"$dir/boot"; shift 2; continue; fi
		if [ -e "$dir/stuck" ]; then shift 2; continue; fi
		case $1 in
		power)
			if [ -n "$dom" ]; then
				if [ "$2" = 1 ]; then virt start; else virt destroy; fi
			else
				echo "$2" >"$dir/power"
			fi ;;
		shutdown)
			if [ -n "$dom" ]; then virt shutdown; else echo 0 >"$dir/power"; fi ;;
		reset)
			if [ -n "$dom" ]; then virt reset; fi ;;
		esac
		shift 2
	done ;;
esac
exit 0
`

// Need skips the test when a program is missing, saying which (CI
// installs them all; .ci/run).
func Need(t testing.TB, programs ...string) {
	t.Helper()
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s is not installed (CI installs it; scripts/services.sh too): %v", p, err)
		}
	}
}

// FreeUDPPort returns a loopback UDP port nothing listens on now (623 is
// shared by every test that would use the default).
func FreeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// StartIPMISim starts ipmi_sim on a free loopback port with a user of
// admin rights and waits until it answers an IPMI ping. It is stopped
// when the test ends.
func StartIPMISim(t testing.TB, o IPMIOptions) *IPMISim {
	t.Helper()
	Need(t, "ipmi_sim", "ipmitool")
	if o.User == "" {
		o.User, o.Password = "admin", "password"
	}
	if o.LibvirtURI == "" {
		o.LibvirtURI = "qemu:///system"
	}
	dir := t.TempDir()
	s := &IPMISim{User: o.User, Pass: o.Password, Dir: dir}
	script := filepath.Join(dir, "chassis.sh")
	if err := os.WriteFile(script, []byte(fmt.Sprintf(chassisScript, dir, o.Domain, o.LibvirtURI)), 0o755); err != nil {
		t.Fatal(err)
	}
	emu := "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n"
	if err := os.WriteFile(filepath.Join(dir, "bmc.emu"), []byte(emu), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o755); err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		port := FreeUDPPort(t)
		s.Addr = "127.0.0.1:" + strconv.Itoa(port)
		s.URL = "ipmi://" + s.Addr
		lan := fmt.Sprintf(`name "nimbus-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid %s
  endlan
  chassis_control "%s 0x20"
  user 2 true "%s" "%s" admin 10 none md2 md5 straight
`, port, randomHex(16), script, o.User, o.Password)
		conf := filepath.Join(dir, "lan.conf")
		if err := os.WriteFile(conf, []byte(lan), 0o644); err != nil {
			t.Fatal(err)
		}
		log, err := os.Create(filepath.Join(dir, "ipmi_sim.log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("ipmi_sim", "-c", conf, "-f", filepath.Join(dir, "bmc.emu"), "-s", state, "-n")
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatalf("start ipmi_sim: %v", err)
		}
		s.cmd, s.done = cmd, make(chan struct{})
		go func() { _ = cmd.Wait(); log.Close(); close(s.done) }()
		if s.waitPing(5 * time.Second) {
			break
		}
		s.Stop()
		if attempt == 2 {
			out, _ := os.ReadFile(filepath.Join(dir, "ipmi_sim.log"))
			t.Fatalf("ipmi_sim did not answer on %s: %s", s.Addr, out)
		}
	}
	t.Cleanup(s.Stop)
	return s
}

func (s *IPMISim) waitPing(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return false
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := Ping(ctx, s.Addr)
		cancel()
		if err == nil {
			return true
		}
	}
	return false
}

// Stop kills ipmi_sim: the BMC stops answering.
func (s *IPMISim) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

// SetStuck makes the chassis accept power commands and ignore them (a
// machine whose power-on never takes effect).
func (s *IPMISim) SetStuck(t testing.TB, stuck bool) {
	t.Helper()
	p := filepath.Join(s.Dir, "stuck")
	if stuck {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	_ = os.Remove(p)
}

// Power is the chassis' power as its state file holds it (file mode).
func (s *IPMISim) Power() bool {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "power"))
	return strings.TrimSpace(string(b)) == "1"
}

// SetPower changes the power behind the BMC's back (file mode).
func (s *IPMISim) SetPower(t testing.TB, on bool) {
	t.Helper()
	v := "0"
	if on {
		v = "1"
	}
	if err := os.WriteFile(filepath.Join(s.Dir, "power"), []byte(v), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Boot is the last boot device set through the BMC ("pxe", "default"...).
func (s *IPMISim) Boot() string {
	b, err := os.ReadFile(filepath.Join(s.Dir, "boot"))
	if err != nil {
		return "default"
	}
	return strings.TrimSpace(string(b))
}

// Calls are the chassis commands ipmi_sim ran, oldest first, without
// their time stamps ("0x20 set power 1").
func (s *IPMISim) Calls() []string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "calls.log"))
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if _, rest, ok := strings.Cut(l, " "); ok {
			out = append(out, rest)
		}
	}
	return out
}

// Ping sends an RMCP/ASF presence ping and waits for the pong.
func Ping(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	ping := []byte{0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, 0x4e, 0x00, 0x00}
	buf := make([]byte, 512)
	for ctx.Err() == nil {
		if _, err := conn.Write(ping); err != nil {
			return err
		}
		_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := conn.Read(buf); err == nil && n >= 9 && buf[8] == 0x40 {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ctx.Err()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// RandomName is prefix plus random hex, for libvirt objects shared by the
// machine's tests (nimbus-bm-1a2b3c4d).
func RandomName(prefix string) string { return prefix + randomHex(4) }
