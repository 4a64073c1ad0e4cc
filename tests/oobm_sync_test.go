package tests

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"
	"go.temporal.io/sdk/client"

	"github.com/nimbus-cloud/nimbus/infra/bmc/bmctest"
	ntemporal "github.com/nimbus-cloud/nimbus/infra/temporal"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
	"github.com/nimbus-cloud/nimbus/workflows"
)

// TestOOBMPowerSync is CloudStack's background power-state sync of
// out-of-band management: a host on ipmi_sim and one on the test Redfish
// service, enabled through the API; the machines are powered on and off
// and a BMC password changed directly at the BMC, behind Nimbus's back,
// and each triggered run of the sync schedule shows it in listHosts'
// outofbandmanagement.powerstate. Refused credentials show Unknown with
// one alert (not one per run), which resolves when the BMC answers again.
func TestOOBMPowerSync(t *testing.T) {
	bmctest.Need(t, "ipmi_sim", "ipmitool")
	sim := bmctest.StartIPMISim(t, bmctest.IPMIOptions{})
	rf := bmctest.StartRedfish(t, bmctest.RedfishOptions{})
	s := testenv.StartStack(t, testenv.StackOptions{})
	cs := s.Client
	cs.Timeout(2 * time.Minute)
	cs.AsyncTimeout(120)
	ctx := context.Background()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	setConfig := func(name, value string) {
		t.Helper()
		p := cs.Configuration.NewUpdateConfigurationParams(name)
		p.SetValue(value)
		_, err := cs.Configuration.UpdateConfiguration(p)
		must("updateConfiguration "+name, err)
	}

	z, err := cs.Zone.CreateZone(cs.Zone.NewCreateZoneParams("8.8.8.8", "10.0.0.2", "sync-zone", "Advanced"))
	must("createZone", err)
	c := &vmtCloud{s: s, cs: cs, zoneID: z.Id, hosts: map[string]string{}}
	c.pod(t, "192.168.41")
	cl, err := cs.Cluster.AddCluster(cs.Cluster.NewAddClusterParams("sync-c1", "CloudManaged", "Simulator", c.podID, z.Id))
	must("addCluster", err)
	h1, err := hostAdd(cs, z.Id, c.podID, cl.Id, "sim://sync-h1?cpus=4&mhz=2000&memory=8192")
	must("addHost h1", err)
	h2, err := hostAdd(cs, z.Id, c.podID, cl.Id, "sim://sync-h2?cpus=4&mhz=2000&memory=8192")
	must("addHost h2", err)
	h3, err := hostAdd(cs, z.Id, c.podID, cl.Id, "sim://sync-h3?cpus=4&mhz=2000&memory=8192")
	must("addHost h3", err)
	oob := cs.OutofbandManagement
	_, port, _ := net.SplitHostPort(sim.Addr)
	_, err = oob.ConfigureOutOfBandManagement(oob.NewConfigureOutOfBandManagementParams("127.0.0.1", "ipmitool", h1.Id, sim.Pass, port, sim.User))
	must("configure ipmi", err)
	setConfig("redfish.ignore.ssl", "true")
	rhost, rport, _ := net.SplitHostPort(rf.Addr)
	_, err = oob.ConfigureOutOfBandManagement(oob.NewConfigureOutOfBandManagementParams(rhost, "redfish", h2.Id, "password", rport, "admin"))
	must("configure redfish", err)
	// h3 is configured but left disabled: the sync leaves it alone.
	_, err = oob.ConfigureOutOfBandManagement(oob.NewConfigureOutOfBandManagementParams("127.0.0.1", "ipmitool", h3.Id, "nope", "1", "admin"))
	must("configure h3", err)
	for _, id := range []string{h1.Id, h2.Id} {
		_, err = cs.Host.EnableOutOfBandManagementForHost(cs.Host.NewEnableOutOfBandManagementForHostParams(id))
		must("enable "+id, err)
	}
	powerOf := func(id string) string {
		t.Helper()
		p := cs.Host.NewListHostsParams()
		p.SetId(id)
		r, err := cs.Host.ListHosts(p)
		must("listHosts", err)
		if r.Count != 1 {
			t.Fatalf("listHosts id=%s: %d hosts", id, r.Count)
		}
		return r.Hosts[0].Outofbandmanagement.Powerstate
	}
	if p1, p2 := powerOf(h1.Id), powerOf(h2.Id); p1 != "Unknown" || p2 != "Unknown" {
		t.Fatalf("power states before any sync: %s %s, want Unknown", p1, p2)
	}

	// ---- the schedule exists with CloudStack's default interval, and follows updateConfiguration ----
	tc, err := client.Dial(client.Options{HostPort: s.Temporal, Namespace: "default"})
	must("dial temporal", err)
	defer tc.Close()
	h := tc.ScheduleClient().GetHandle(ctx, ntemporal.ScheduleID(workflows.OOBMSyncScheduleKind, s.TaskQueue))
	interval := func() time.Duration {
		d, err := h.Describe(ctx)
		for deadline := time.Now().Add(30 * time.Second); err != nil && time.Now().Before(deadline); d, err = h.Describe(ctx) {
			time.Sleep(200 * time.Millisecond)
		}
		must("describe the sync schedule", err)
		if iv := d.Schedule.Spec.Intervals; len(iv) == 1 {
			return iv[0].Every
		}
		return 0
	}
	if iv := interval(); iv != 5*time.Minute {
		t.Errorf("sync schedule every %s, want 5m (outofbandmanagement.sync.interval 300000 ms)", iv)
	}
	setConfig("outofbandmanagement.sync.interval", "120000")
	if iv := interval(); iv != 2*time.Minute {
		t.Errorf("sync schedule every %s after updateConfiguration 120000 ms, want 2m", iv)
	}
	p := cs.Configuration.NewUpdateConfigurationParams("outofbandmanagement.sync.interval")
	p.SetValue("0")
	_, err = cs.Configuration.UpdateConfiguration(p)
	wantVMErr(t, "a zero sync interval", err, 431, "milliseconds")

	// ---- the machines' power, changed at the BMCs, shows in listHosts ----
	sim.SetPower(t, true)
	rf.SetPower("Off")
	start := time.Now()
	maintTrigger(t, h, "first sync", 90*time.Second, func() bool { return powerOf(h1.Id) == "On" && powerOf(h2.Id) == "Off" })
	t.Logf("first sync seen after %s", time.Since(start).Round(time.Millisecond))
	if p3 := powerOf(h3.Id); p3 != "Disabled" && p3 != "Unknown" {
		t.Errorf("the disabled host's power state is %s", p3)
	}
	sim.SetPower(t, false) // behind Nimbus's back
	rf.SetPower("On")
	start = time.Now()
	maintTrigger(t, h, "powered off at the BMC", 90*time.Second, func() bool { return powerOf(h1.Id) == "Off" && powerOf(h2.Id) == "On" })
	t.Logf("power change seen after %s", time.Since(start).Round(time.Millisecond))
	ev := cs.Event.NewListEventsParams()
	ev.SetType("HOST.OOBM.POWERSTATE.TRANSITION")
	ev.SetListall(true)
	if r, err := cs.Event.ListEvents(ev); err != nil || r.Count < 4 {
		t.Errorf("HOST.OOBM.POWERSTATE.TRANSITION events: %v, %d, want at least 4", err, r.Count)
	}

	// ---- a password changed at the BMC: Unknown, and one alert however many runs ----
	rf.SetPassword("changed-at-the-console")
	start = time.Now()
	maintTrigger(t, h, "refused credentials", 90*time.Second, func() bool { return powerOf(h2.Id) == "Unknown" })
	t.Logf("refused credentials seen after %s", time.Since(start).Round(time.Millisecond))
	// Two more runs (the ipmi host's power toggled to see each one end; a
	// trigger while a run goes is skipped, so the second is seen only
	// once the first ended).
	for _, on := range []bool{true, false} {
		sim.SetPower(t, on)
		want := map[bool]string{true: "On", false: "Off"}[on]
		maintTrigger(t, h, "ipmi "+want, 90*time.Second, func() bool { return powerOf(h1.Id) == want })
	}
	oobmAlerts := func() []*cloudstack.Alert {
		r, err := cs.Alert.ListAlerts(cs.Alert.NewListAlertsParams())
		must("listAlerts", err)
		var out []*cloudstack.Alert
		for _, a := range r.Alerts {
			if strings.Contains(a.Description, "Out-of-band management") {
				out = append(out, a)
			}
		}
		return out
	}
	al := oobmAlerts()
	if len(al) != 1 {
		t.Fatalf("%d out-of-band management alerts after three runs with refused credentials, want 1: %+v", len(al), al)
	}
	if a := al[0]; a.Type != 29 || !strings.Contains(a.Description, h2.Id) || !strings.Contains(a.Description, "auth-error") || !strings.Contains(a.Description, "check configured credentials") {
		t.Errorf("alert = %+v, want type 29 (ALERT.OOBM.AUTHERROR) naming host %s", a, h2.Id)
	}
	if powerOf(h2.Id) != "Unknown" {
		t.Errorf("redfish host is %s", powerOf(h2.Id))
	}

	// ---- the right password again (configured through the API): read, alert resolved ----
	_, err = oob.ConfigureOutOfBandManagement(oob.NewConfigureOutOfBandManagementParams(rhost, "redfish", h2.Id, "changed-at-the-console", rport, "admin"))
	must("configure the new password", err)
	maintTrigger(t, h, "credentials fixed", 90*time.Second, func() bool { return powerOf(h2.Id) == "On" })
	if n := nsCount(t, s.DB, "SELECT COUNT(*) FROM alerts WHERE name LIKE 'oobm.powerstate:%' AND resolved IS NULL"); n != 0 {
		t.Errorf("%d out-of-band alerts still open after the BMC answered", n)
	}
	if al := oobmAlerts(); len(al) != 1 {
		t.Errorf("%d alerts listed after the resolution, want the 1 resolved", len(al))
	}

	// ---- a BMC that stops answering: Unknown, a host alert ----
	sim.Stop()
	start = time.Now()
	maintTrigger(t, h, "ipmi_sim stopped", 3*time.Minute, func() bool { return powerOf(h1.Id) == "Unknown" })
	t.Logf("silent BMC seen after %s", time.Since(start).Round(time.Millisecond))
	if n := nsCount(t, s.DB, "SELECT COUNT(*) FROM alerts WHERE name = ? AND type = 7 AND resolved IS NULL", "oobm.powerstate:"+h1.Id); n != 1 {
		t.Errorf("%d open host alerts for the silent BMC, want 1", n)
	}
}
