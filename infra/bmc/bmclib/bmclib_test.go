package bmclib_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/bmc"
	"github.com/nimbus-cloud/nimbus/infra/bmc/bmclib"
	"github.com/nimbus-cloud/nimbus/infra/bmc/bmctest"
)

func open(t *testing.T, provider string, opts map[string]string) bmc.Driver {
	t.Helper()
	d, err := bmc.Open(provider, bmc.Config{Options: opts})
	if err != nil {
		t.Fatalf("open %s: %v", provider, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func wantState(t *testing.T, d bmc.Driver, b bmc.BMC, want bmc.PowerState) {
	t.Helper()
	st, err := d.PowerStatus(context.Background(), b)
	if err != nil || st != want {
		t.Fatalf("PowerStatus = %s, %v; want %s", st, err, want)
	}
}

func wantErr(t *testing.T, what string, err error, kind error, parts ...string) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("%s: error %v, want kind %v", what, err, kind)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %q does not say %q", what, err, p)
		}
	}
}

// TestIPMI drives ipmi_sim (a real IPMI 2.0 LAN endpoint) through bmclib's
// ipmitool provider.
func TestIPMI(t *testing.T) {
	sim := bmctest.StartIPMISim(t, bmctest.IPMIOptions{})
	d := open(t, "IPMI", map[string]string{"power_timeout": "3s", "poll": "200ms"})
	ctx := context.Background()
	b := bmc.BMC{Address: sim.URL, Username: sim.User, Password: sim.Pass}

	wantState(t, d, b, bmc.PowerOff)
	if err := d.SetBootDevice(ctx, b, bmc.BootPXE, bmc.BootOptions{}); err != nil {
		t.Fatalf("SetBootDevice pxe: %v", err)
	}
	if sim.Boot() != "pxe" {
		t.Errorf("chassis boot device %q, want pxe", sim.Boot())
	}
	if err := d.PowerOn(ctx, b); err != nil {
		t.Fatalf("PowerOn: %v", err)
	}
	if !sim.Power() {
		t.Fatal("chassis is off after PowerOn")
	}
	wantState(t, d, b, bmc.PowerOn)
	// Idempotent: on again sends no second power command.
	n := len(sim.Calls())
	if err := d.PowerOn(ctx, b); err != nil {
		t.Fatalf("second PowerOn: %v", err)
	}
	for _, c := range sim.Calls()[n:] {
		if strings.Contains(c, "set power") {
			t.Errorf("second PowerOn sent %q", c)
		}
	}
	if err := d.PowerCycle(ctx, b); err != nil {
		t.Fatalf("PowerCycle: %v", err)
	}
	wantState(t, d, b, bmc.PowerOn)
	if err := d.PowerOff(ctx, b, false); err != nil {
		t.Fatalf("graceful PowerOff: %v", err)
	}
	if !slices.Contains(sim.Calls(), "0x20 set shutdown 1") {
		t.Errorf("graceful off did not ask for a soft shutdown: %q", sim.Calls())
	}
	wantState(t, d, b, bmc.PowerOff)
	if err := d.PowerCycle(ctx, b); err != nil { // off: cycle powers on
		t.Fatalf("PowerCycle from off: %v", err)
	}
	if err := d.PowerOff(ctx, b, true); err != nil {
		t.Fatalf("forced PowerOff: %v", err)
	}
	wantState(t, d, b, bmc.PowerOff)
	_, err := d.Inventory(ctx, b)
	wantErr(t, "Inventory", err, bmc.ErrNotSupported, "ipmitool provider reads no hardware inventory")
	t.Logf("chassis calls: %q", sim.Calls())

	// Faults: each ends in a clear error of its kind, quickly.
	bad := b
	bad.Password = "wrong"
	start := time.Now()
	_, err = d.PowerStatus(ctx, bad)
	wantErr(t, "wrong password", err, bmc.ErrInvalid, "rejected the username or password", sim.Addr)
	if time.Since(start) > 15*time.Second {
		t.Errorf("wrong password took %s", time.Since(start))
	}

	sim.SetStuck(t, true)
	start = time.Now()
	err = d.PowerOn(ctx, b)
	wantErr(t, "stuck power on", err, bmc.ErrUnreachable, "power on did not take effect within 3s", "still reports power off")
	if el := time.Since(start); el < 3*time.Second || el > 20*time.Second {
		t.Errorf("stuck power on failed after %s, want about the 3s power timeout", el)
	}
	sim.SetStuck(t, false)

	sim.Stop()
	start = time.Now()
	_, err = d.PowerStatus(ctx, b)
	wantErr(t, "BMC not answering", err, bmc.ErrUnreachable, "does not answer", sim.Addr)
	t.Logf("dead BMC noticed in %s: %v", time.Since(start), err)
}

// TestRedfish drives the test Redfish service through bmclib's gofish
// provider.
func TestRedfish(t *testing.T) {
	var powered []string
	rf := bmctest.StartRedfish(t, bmctest.RedfishOptions{MAC: "52:54:00:AB:CD:EF", OnPower: func(s string) { powered = append(powered, s) }})
	d := open(t, "redfish", map[string]string{"power_timeout": "2s", "poll": "200ms", "call_timeout": "5s"})
	ctx := context.Background()
	b := bmc.BMC{Address: rf.URL, Username: "admin", Password: "password", Insecure: true}

	wantState(t, d, b, bmc.PowerOff)
	if err := d.SetBootDevice(ctx, b, bmc.BootPXE, bmc.BootOptions{}); err != nil {
		t.Fatalf("SetBootDevice: %v", err)
	}
	if tg, en := rf.Boot(); tg != "Pxe" || en != "Once" {
		t.Errorf("boot override %s/%s, want Pxe/Once", tg, en)
	}
	if err := d.PowerOn(ctx, b); err != nil {
		t.Fatalf("PowerOn: %v", err)
	}
	if rf.Power() != "On" {
		t.Fatalf("power %s after PowerOn", rf.Power())
	}
	if tg, _ := rf.Boot(); tg != "None" {
		t.Errorf("one-time override not used by the boot: %s", tg)
	}
	if err := d.PowerCycle(ctx, b); err != nil {
		t.Fatalf("PowerCycle: %v", err)
	}
	if err := d.PowerOff(ctx, b, false); err != nil {
		t.Fatalf("graceful PowerOff: %v", err)
	}
	if err := d.PowerOn(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := d.PowerOff(ctx, b, true); err != nil {
		t.Fatalf("forced PowerOff: %v", err)
	}
	wantState(t, d, b, bmc.PowerOff)
	if got, want := rf.Resets(), []string{"On", "ForceRestart", "GracefulShutdown", "On", "ForceOff"}; !slices.Equal(got, want) {
		t.Errorf("resets %q, want %q", got, want)
	}
	if !slices.Equal(powered, []string{"On", "Off", "On", "Off"}) {
		t.Errorf("power changes %q", powered)
	}

	inv, err := d.Inventory(ctx, b)
	if err != nil {
		t.Fatalf("Inventory: %v", err)
	}
	t.Logf("inventory: %+v", inv)
	if inv.Vendor != "Nimbus" || inv.Model != "Test Server 9000" || inv.Serial != "NB-0001" || inv.BIOSVersion != "2.4.1" ||
		inv.BMCVersion != "1.2.3" || len(inv.CPUs) != 2 || inv.Cores() != 16 || inv.CPUs[0].MHz != 2400 ||
		inv.MemoryBytes != 64<<30 || len(inv.NICs) != 1 || inv.NICs[0].MAC != "52:54:00:ab:cd:ef" || inv.NICs[0].SpeedMbps != 10000 {
		t.Errorf("inventory %+v", inv)
	}

	bad := b
	bad.Password = "nope"
	_, err = d.PowerStatus(ctx, bad)
	wantErr(t, "wrong password", err, bmc.ErrInvalid, "rejected the username or password")

	rf.SetStuck(true)
	err = d.PowerOn(ctx, b)
	wantErr(t, "stuck", err, bmc.ErrUnreachable, "power on did not take effect within 2s", "still reports power off")
	rf.SetStuck(false)

	strict := b
	strict.Insecure = false
	_, err = d.PowerStatus(ctx, strict)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("self-signed certificate accepted without Insecure: %v", err)
	}

	rf.SetDown(true)
	_, err = d.PowerStatus(ctx, b)
	wantErr(t, "down", err, bmc.ErrUnreachable, "does not answer")
}

func TestAddresses(t *testing.T) {
	tests := map[string]struct {
		provider, addr string
		kind           error // nil: parses
		message        string
	}{
		"ipmi url":            {provider: "ipmi", addr: "ipmi://10.0.0.5:6230"},
		"ipmi bare":           {provider: "ipmi", addr: "10.0.0.5"},
		"redfish url":         {provider: "redfish", addr: "redfish://bmc.example.com"},
		"redfish https":       {provider: "redfish", addr: "https://10.0.0.5:8443"},
		"redfish plain":       {provider: "redfish", addr: "redfish+http://10.0.0.5:8000"},
		"ipmi given redfish":  {provider: "ipmi", addr: "redfish://10.0.0.5", kind: bmc.ErrInvalid, message: "is a Redfish address, not ipmi"},
		"redfish given ipmi":  {provider: "redfish", addr: "ipmi://10.0.0.5", kind: bmc.ErrInvalid, message: "is an IPMI address, not redfish"},
		"unknown scheme":      {provider: "ipmi", addr: "ftp://10.0.0.5", kind: bmc.ErrInvalid, message: `unknown scheme "ftp"`},
		"bad port":            {provider: "ipmi", addr: "ipmi://10.0.0.5:99999", kind: bmc.ErrInvalid, message: "bad port"},
		"empty":               {provider: "redfish", addr: "", kind: bmc.ErrInvalid, message: "no bmc address"},
		"no host":             {provider: "redfish", addr: "redfish://:443", kind: bmc.ErrInvalid, message: "names no host"},
		"unknown boot device": {provider: "ipmi", addr: "ipmi://127.0.0.1:1", kind: bmc.ErrInvalid, message: `unknown boot device "floppy"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d, err := bmclib.New(tc.provider, bmc.Config{Options: map[string]string{"call_timeout": "1s"}})
			if err != nil {
				t.Fatal(err)
			}
			dev := bmc.BootDevice("floppy")
			if tc.kind == nil {
				dev = bmc.BootDevice("nothing") // fails on the device, after the address parsed
			}
			err = d.SetBootDevice(context.Background(), bmc.BMC{Address: tc.addr}, dev, bmc.BootOptions{})
			if tc.kind == nil {
				if err == nil || !strings.Contains(err.Error(), "unknown boot device") {
					t.Fatalf("address %q: %v", tc.addr, err)
				}
				return
			}
			if name == "unknown boot device" {
				wantErr(t, name, err, tc.kind, tc.message)
				return
			}
			err = d.PowerOn(context.Background(), bmc.BMC{Address: tc.addr})
			wantErr(t, name, err, tc.kind, tc.message)
		})
	}
	if _, err := bmclib.New("simulator", bmc.Config{}); !errors.Is(err, bmc.ErrInvalid) {
		t.Errorf("New(simulator) = %v", err)
	}
	if _, err := bmclib.New("ipmi", bmc.Config{Options: map[string]string{"power_timeout": "soon"}}); !errors.Is(err, bmc.ErrInvalid) {
		t.Errorf("bad power_timeout = %v", err)
	}
}

// TestSessionCache: calls to one BMC share a session until it fails or
// idles out; a session the BMC ended is reopened without the caller
// noticing; a changed password opens a new session.
func TestSessionCache(t *testing.T) {
	rf := bmctest.StartRedfish(t, bmctest.RedfishOptions{})
	d, err := bmclib.New("redfish", bmc.Config{Options: map[string]string{"power_timeout": "2s", "poll": "100ms", "call_timeout": "5s", "session_idle": "500ms"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b := bmc.BMC{Address: rf.URL, Username: "admin", Password: "password", Insecure: true}
	for range 5 {
		wantState(t, d, b, bmc.PowerOff)
	}
	if err := d.PowerOn(ctx, b); err != nil {
		t.Fatal(err)
	}
	if n := rf.Logins(); n != 1 {
		t.Errorf("6 calls logged in %d times, want 1", n)
	}
	rf.DropSessions() // the BMC forgot the session: the next call logs in again
	wantState(t, d, b, bmc.PowerOn)
	if st := d.Sessions(); rf.Logins() != 2 || st.Dropped != 1 || st.Open != 1 {
		t.Errorf("after the BMC dropped the session: %d logins, %+v", rf.Logins(), st)
	}

	// The password changes on the BMC through the cached session; the new
	// password opens a new session, the old one no longer logs in.
	if err := d.ChangePassword(ctx, b, "s3cret"); err != nil {
		t.Fatalf("ChangePassword: %v", err)
	}
	if rf.Password() != "s3cret" {
		t.Fatalf("BMC password %q", rf.Password())
	}
	nb := b
	nb.Password = "s3cret"
	wantState(t, d, nb, bmc.PowerOn)
	d2 := open(t, "redfish", map[string]string{"call_timeout": "5s"})
	_, err = d2.PowerStatus(ctx, b)
	wantErr(t, "old password", err, bmc.ErrInvalid, "rejected the username or password")

	time.Sleep(time.Second) // idle timeout: the janitor closes them
	if st := d.Sessions(); st.Open != 0 {
		t.Errorf("idle sessions still open: %+v", st)
	}
	wantState(t, d, nb, bmc.PowerOn)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if st := d.Sessions(); st.Open != 0 {
		t.Errorf("Close left sessions open: %+v", st)
	}

	ipmi, _ := bmclib.New("ipmi", bmc.Config{})
	err = ipmi.ChangePassword(ctx, bmc.BMC{Address: "ipmi://127.0.0.1:1", Username: "admin"}, "x")
	wantErr(t, "ipmi password", err, bmc.ErrNotSupported, "cannot change a BMC user's password")
}

// BenchmarkSessions measures what the session cache saves: PowerStatus
// with a session per call against a cached session, in one process, on
// ipmi_sim (IPMI) and on the test Redfish service, and reports the ratio
// (uncached time / cached time) of each.
//
//	go test ./infra/bmc/bmclib/ -run '^$' -bench Sessions -benchtime 40x
func BenchmarkSessions(b *testing.B) {
	sim := bmctest.StartIPMISim(b, bmctest.IPMIOptions{})
	rf := bmctest.StartRedfish(b, bmctest.RedfishOptions{})
	for _, tc := range []struct {
		provider string
		target   bmc.BMC
	}{
		{"ipmi", bmc.BMC{Address: sim.URL, Username: sim.User, Password: sim.Pass}},
		{"redfish", bmc.BMC{Address: rf.URL, Username: "admin", Password: "password", Insecure: true}},
	} {
		b.Run(tc.provider, func(b *testing.B) {
			ctx := context.Background()
			per := map[string]time.Duration{}
			for _, mode := range []string{"uncached", "cached"} {
				idle := "0"
				if mode == "cached" {
					idle = "5m"
				}
				d, err := bmclib.New(tc.provider, bmc.Config{Options: map[string]string{"session_idle": idle}})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := d.PowerStatus(ctx, tc.target); err != nil { // warm: ipmitool in the page cache, session open
					b.Fatal(err)
				}
				start := time.Now()
				for range b.N {
					if _, err := d.PowerStatus(ctx, tc.target); err != nil {
						b.Fatal(err)
					}
				}
				per[mode] = time.Since(start) / time.Duration(b.N)
				b.Logf("%s %s: %s per PowerStatus (%+v)", tc.provider, mode, per[mode], d.Sessions())
				d.Close()
			}
			b.ReportMetric(float64(per["uncached"].Microseconds())/1000, "ms/uncached")
			b.ReportMetric(float64(per["cached"].Microseconds())/1000, "ms/cached")
			b.ReportMetric(float64(per["uncached"])/float64(per["cached"]), "speedup")
		})
	}
}
