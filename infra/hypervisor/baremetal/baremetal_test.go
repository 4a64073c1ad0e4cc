package baremetal_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nimbus-cloud/nimbus/infra/bmc"
	"github.com/nimbus-cloud/nimbus/infra/bmc/bmctest"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/baremetal"
)

func newDriver(t *testing.T) hypervisor.Driver {
	t.Helper()
	d, err := hypervisor.Open("baremetal", hypervisor.Config{Options: map[string]string{"power_timeout": "3s", "poll": "200ms", "call_timeout": "5s"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func wantKind(t *testing.T, what string, err error, kind error, parts ...string) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("%s: %v, want kind %v", what, err, kind)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %q does not say %q", what, err, p)
		}
	}
}

// since returns the chassis commands after the first n.
func since(sim *bmctest.IPMISim, n int) []string {
	var out []string
	for _, c := range sim.Calls()[n:] {
		if !strings.Contains(c, " get ") {
			out = append(out, strings.TrimPrefix(c, "0x20 "))
		}
	}
	return out
}

func TestIPMIMachine(t *testing.T) {
	sim := bmctest.StartIPMISim(t, bmctest.IPMIOptions{})
	d := newDriver(t)
	ctx := context.Background()
	h := hypervisor.Host{ID: "h1", URL: sim.URL, Username: sim.User, Password: sim.Pass,
		Details: map[string]string{"cpunumber": "4", "cpuspeed": "2000", "memory": "8192", "hostmac": "52:54:00:12:34:56"}}

	info, err := d.ConnectHost(ctx, h)
	if err != nil {
		t.Fatalf("ConnectHost: %v", err)
	}
	if info.GUID != "baremetal-525400123456" || info.CPUCores != 4 || info.CPUSockets != 1 || info.CPUMHz != 2000 || info.MemoryBytes != 8<<30 ||
		info.Details["mac"] != "52:54:00:12:34:56" || info.Details["power"] != "off" || info.HypervisorVersion != "ipmi" {
		t.Fatalf("ConnectHost = %+v", info)
	}
	// The same shape as URL parameters (the Go SDK's addHost has no
	// cpunumber...).
	hq := hypervisor.Host{ID: "h1", URL: sim.URL + "?cpunumber=2&cpuspeed=1000&memory=512&mac=52-54-00-AA-BB-CC", Username: sim.User, Password: sim.Pass}
	if info, err := d.ConnectHost(ctx, hq); err != nil || info.CPUCores != 2 || info.MemoryBytes != 512<<20 || info.Details["mac"] != "52:54:00:aa:bb:cc" {
		t.Fatalf("ConnectHost with URL parameters = %+v, %v", info, err)
	}
	_, err = d.ConnectHost(ctx, hypervisor.Host{ID: "h1", URL: sim.URL, Username: sim.User, Password: sim.Pass})
	wantKind(t, "no shape", err, hypervisor.ErrInvalid, "reports no CPU or memory inventory", "cpunumber, cpuspeed (MHz) and memory (MiB)")
	bad := h
	bad.Password = "wrong"
	_, err = d.ConnectHost(ctx, bad)
	wantKind(t, "wrong password", err, hypervisor.ErrInvalid, "BareMetal ConnectHost h1", "rejected the username or password")
	if _, err := d.CheckHost(ctx, h); err != nil {
		t.Fatalf("CheckHost: %v", err)
	}

	vm := hypervisor.VMRef{Name: "i-2-7-VM", UUID: "vm-7"}
	spec := hypervisor.VMSpec{Name: vm.Name, UUID: vm.UUID, VCPUs: 4, MHz: 2000, MemoryBytes: 8 << 30}
	for range 2 {
		if _, err := d.DefineVM(ctx, h, spec); err != nil {
			t.Fatalf("DefineVM: %v", err)
		}
	}
	if len(since(sim, 0)) != 0 {
		t.Fatalf("DefineVM touched the chassis: %q", since(sim, 0))
	}
	// The provisioning activity records the owner; the driver reads it.
	h.Details["vm.uuid"], h.Details["vm.name"] = vm.UUID, vm.Name
	sim.SetPower(t, true) // whatever ran before
	n := len(sim.Calls())
	prov, ok := d.(interface {
		ProvisionVM(context.Context, hypervisor.Host, hypervisor.VMRef) error
	})
	if !ok {
		t.Fatal("the BareMetal driver does not provision")
	}
	if err := prov.ProvisionVM(ctx, h, vm); err != nil {
		t.Fatalf("ProvisionVM: %v", err)
	}
	if got, want := since(sim, n), []string{"set power 0", "set boot pxe", "set power 1"}; !slices.Equal(got, want) {
		t.Errorf("provisioning chassis commands %q, want %q", got, want)
	}
	if st, err := d.VMState(ctx, h, vm); err != nil || st.State != hypervisor.StateRunning || st.Name != vm.Name {
		t.Errorf("VMState = %+v, %v", st, err)
	}
	if l, err := d.ListVMs(ctx, h); err != nil || len(l) != 1 || l[0].UUID != vm.UUID || l[0].State != hypervisor.StateRunning {
		t.Errorf("ListVMs = %+v, %v", l, err)
	}
	_, err = d.VMState(ctx, h, hypervisor.VMRef{UUID: "other"})
	wantKind(t, "VMState of another VM", err, hypervisor.ErrNotFound)
	_, err = d.DefineVM(ctx, h, hypervisor.VMSpec{Name: "i-2-8-VM", UUID: "vm-8", VCPUs: 1, MemoryBytes: 1 << 30})
	wantKind(t, "DefineVM of a second VM", err, hypervisor.ErrInvalid, "belongs to VM vm-7")

	n = len(sim.Calls())
	if err := d.StopVM(ctx, h, vm, hypervisor.StopOptions{}); err != nil {
		t.Fatalf("StopVM: %v", err)
	}
	if got := since(sim, n); !slices.Equal(got, []string{"set shutdown 1"}) {
		t.Errorf("graceful stop chassis commands %q", got)
	}
	err = d.RebootVM(ctx, h, vm)
	wantKind(t, "reboot stopped", err, hypervisor.ErrInvalid, "only a running machine reboots")
	if err := d.StartVM(ctx, h, vm); err != nil {
		t.Fatalf("StartVM: %v", err)
	}
	n = len(sim.Calls())
	if err := d.RebootVM(ctx, h, vm); err != nil {
		t.Fatalf("RebootVM: %v", err)
	}
	if got := since(sim, n); !slices.Equal(got, []string{"set power 0", "set power 1"}) { // ipmi_sim's cycle
		t.Errorf("reboot chassis commands %q", got)
	}
	if st, _ := d.VMState(ctx, h, vm); st.State != hypervisor.StateRunning {
		t.Errorf("after reboot: %s", st.State)
	}
	if err := d.DestroyVM(ctx, h, hypervisor.VMRef{UUID: "other"}); err != nil || !sim.Power() {
		t.Errorf("DestroyVM of another VM: %v (power on %v)", err, sim.Power())
	}
	if err := d.DestroyVM(ctx, h, vm); err != nil || sim.Power() {
		t.Fatalf("DestroyVM: %v (power on %v)", err, sim.Power())
	}
	if err := d.DestroyVM(ctx, h, vm); err != nil {
		t.Fatalf("second DestroyVM: %v", err)
	}

	// A machine whose power-on never takes effect: a clear error.
	sim.SetStuck(t, true)
	err = d.StartVM(ctx, h, vm)
	wantKind(t, "stuck start", err, hypervisor.ErrUnreachable, "BareMetal StartVM h1", "power on did not take effect within 3s")
	sim.SetStuck(t, false)

	// Fencing powers off and confirms it.
	if err := d.StartVM(ctx, h, vm); err != nil {
		t.Fatal(err)
	}
	if err := d.(*baremetal.Driver).Fence(ctx, h); err != nil || sim.Power() {
		t.Fatalf("Fence: %v (power on %v)", err, sim.Power())
	}
	sim.Stop()
	_, err = d.CheckHost(ctx, h)
	wantKind(t, "BMC gone", err, hypervisor.ErrUnreachable, "does not answer")
	err = d.(*baremetal.Driver).Fence(ctx, h)
	wantKind(t, "fence with the BMC gone", err, hypervisor.ErrUnreachable, "does not answer")
}

func TestRedfishMachine(t *testing.T) {
	rf := bmctest.StartRedfish(t, bmctest.RedfishOptions{MAC: "52:54:00:0A:0B:0C", Sockets: 1, CoresPerSocket: 6, MHz: 3000, MemoryMiB: 32768})
	d := newDriver(t)
	ctx := context.Background()
	h := hypervisor.Host{ID: "r1", URL: rf.URL + "?insecure=true", Username: "admin", Password: "password"}
	info, err := d.ConnectHost(ctx, h)
	if err != nil {
		t.Fatalf("ConnectHost: %v", err)
	}
	if info.CPUCores != 6 || info.CPUSockets != 1 || info.CPUMHz != 3000 || info.MemoryBytes != 32<<30 || info.GUID != "baremetal-5254000a0b0c" ||
		info.Details["vendor"] != "Nimbus" || info.Details["serial"] != "NB-0001" || info.HypervisorVersion != "redfish 1.2.3" {
		t.Fatalf("ConnectHost = %+v", info)
	}
	// Operator's numbers win over the inventory.
	h.Details = map[string]string{"cpunumber": "4"}
	if info, _ := d.ConnectHost(ctx, h); info.CPUCores != 4 || info.CPUMHz != 3000 {
		t.Errorf("cpunumber did not win: %+v", info)
	}
	_, err = d.ConnectHost(ctx, hypervisor.Host{ID: "r1", URL: rf.URL, Username: "admin", Password: "password"})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("self-signed certificate accepted without insecure=true: %v", err)
	}
	h.Details["vm.uuid"] = "vm-1"
	vm := hypervisor.VMRef{UUID: "vm-1", Name: "i-2-1-VM"}
	if err := d.(*baremetal.Driver).ProvisionVM(ctx, h, vm); err != nil {
		t.Fatalf("ProvisionVM: %v", err)
	}
	if rf.Power() != "On" || !slices.Equal(rf.Resets(), []string{"On"}) {
		t.Errorf("after provisioning: power %s, resets %q", rf.Power(), rf.Resets())
	}
	if err := d.StopVM(ctx, h, vm, hypervisor.StopOptions{Force: true}); err != nil || rf.Power() != "Off" {
		t.Fatalf("forced StopVM: %v, %s", err, rf.Power())
	}
	rf.SetStuck(true)
	err = d.StartVM(ctx, h, vm)
	wantKind(t, "stuck", err, hypervisor.ErrUnreachable, "power on did not take effect")
	if _, err := bmc.ParseURL("ftp://x"); !errors.Is(err, bmc.ErrInvalid) {
		t.Errorf("ParseURL ftp: %v", err)
	}
}
