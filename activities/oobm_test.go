package activities_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"go.temporal.io/sdk/temporal"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/infra/bmc/bmctest"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// oobm gives a host an out-of-band management record on ipmi_sim.
func (f *bmFixture) oobm(h models.Host, sim *bmctest.IPMISim, password string, enabled bool) {
	f.t.Helper()
	sealed, err := f.box.Encrypt(password)
	if err != nil {
		f.t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(sim.Addr)
	f.ins(&models.OutOfBandManagement{HostID: h.ID, Enabled: enabled, PowerState: models.OOBMPowerUnknown, Driver: models.OOBMDriverIPMI,
		Address: "127.0.0.1", Port: port, Username: sim.User, Password: sealed, Created: models.Now()})
}

// TestHostFenceOOBM fences hosts through their out-of-band management: a
// KVM host configured through it is powered off via its BMC (and refused
// while management is disabled); a BareMetal host's record wins over its
// URL's credentials (a password changed through the OOBM API is used).
func TestHostFenceOOBM(t *testing.T) {
	sim := bmctest.StartIPMISim(t, bmctest.IPMIOptions{})
	f := newBMFixture(t, testenv.SQLiteDSN(t))
	ctx := context.Background()
	a := &activities.BMC{Deps: f.deps}

	kvm := f.host("kvm1", models.HypervisorKVM, "http://10.0.0.5", nil)
	f.oobm(kvm, sim, sim.Pass, true)
	sim.SetPower(t, true)
	res, err := a.HostFence(ctx, activities.HostFenceInput{HostUUID: kvm.UUID, Reason: "stopped answering"})
	if err != nil || res.Power != "off" || sim.Power() {
		t.Fatalf("fence through OOBM: %+v, %v (chassis on %v)", res, err, sim.Power())
	}
	r, err := activities.OOBMRecord(ctx, f.deps.DB, kvm.ID)
	if err != nil || r.PowerState != models.OOBMPowerOff {
		t.Errorf("record after fencing: %+v, %v", r, err)
	}
	if f.events("HOST.FENCE", kvm.UUID) != 1 {
		t.Error("no HOST.FENCE event")
	}

	kvm2 := f.host("kvm2", models.HypervisorKVM, "http://10.0.0.6", nil)
	f.oobm(kvm2, sim, sim.Pass, false)
	sim.SetPower(t, true)
	_, err = a.HostFence(ctx, activities.HostFenceInput{HostUUID: kvm2.UUID})
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || app.Type() != "NotSupported" || !app.NonRetryable() || !strings.Contains(err.Error(), "disabled or not configured") {
		t.Errorf("fence with OOBM disabled: %v", err)
	}
	if !sim.Power() {
		t.Error("a refused fence powered the machine off")
	}

	bm := f.host("bm1", models.HypervisorBareMetal, sim.URL+"?power_timeout=5s", map[string]string{"username": sim.User, "password": "stale"})
	f.oobm(bm, sim, sim.Pass, true)
	if _, err := a.HostFence(ctx, activities.HostFenceInput{HostUUID: bm.UUID}); err != nil || sim.Power() {
		t.Fatalf("fence a BareMetal host through its OOBM record: %v", err)
	}
}
