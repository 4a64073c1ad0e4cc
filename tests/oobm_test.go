package tests

import (
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"

	"github.com/nimbus-cloud/nimbus/infra/bmc/bmctest"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// TestOutOfBandManagement gives Simulator hosts real BMCs through
// CloudStack's out-of-band management API (the SDK's
// OutofbandManagementService and the host, cluster and zone enable/disable
// commands): one on OpenIPMI's ipmi_sim, one on the test Redfish service.
// Power actions are read back from the BMC; disabled or unconfigured
// management, a wrong password and an IPMI password change are refused
// with CloudStack's errors and leave no job running; listHosts shows the
// configuration without the password.
func TestOutOfBandManagement(t *testing.T) {
	bmctest.Need(t, "ipmi_sim", "ipmitool")
	sim := bmctest.StartIPMISim(t, bmctest.IPMIOptions{})
	rf := bmctest.StartRedfish(t, bmctest.RedfishOptions{})
	s := testenv.StartStack(t, testenv.StackOptions{})
	cs := s.Client
	cs.Timeout(2 * time.Minute)
	cs.AsyncTimeout(120)
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	refused := func(what string, err error, parts ...string) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: accepted", what)
		}
		for _, p := range parts {
			if !strings.Contains(err.Error(), p) {
				t.Errorf("%s: error %q does not say %q", what, err, p)
			}
		}
	}

	z, err := cs.Zone.CreateZone(cs.Zone.NewCreateZoneParams("8.8.8.8", "10.0.0.2", "oobm-zone", "Advanced"))
	must("createZone", err)
	c := &vmtCloud{s: s, cs: cs, zoneID: z.Id, hosts: map[string]string{}}
	c.pod(t, "192.168.40")
	cl, err := cs.Cluster.AddCluster(cs.Cluster.NewAddClusterParams("oobm-c1", "CloudManaged", "Simulator", c.podID, z.Id))
	must("addCluster", err)
	h1, err := hostAdd(cs, z.Id, c.podID, cl.Id, "sim://oobm-h1?cpus=4&mhz=2000&memory=8192")
	must("addHost h1", err)
	h2, err := hostAdd(cs, z.Id, c.podID, cl.Id, "sim://oobm-h2?cpus=4&mhz=2000&memory=8192")
	must("addHost h2", err)
	id1, id2 := h1.Id, h2.Id
	oob := cs.OutofbandManagement
	power := func(host, action string) (*cloudstack.IssueOutOfBandManagementPowerActionResponse, error) {
		p := oob.NewIssueOutOfBandManagementPowerActionParams(action, host)
		p.SetTimeout(20)
		return oob.IssueOutOfBandManagementPowerAction(p)
	}
	wantPower := func(host, action, state string) {
		t.Helper()
		r, err := power(host, action)
		if err != nil {
			t.Fatalf("power %s: %v", action, err)
		}
		if r.Powerstate != state || r.Hostid != host || !r.Status || !strings.EqualFold(r.Action, action) {
			t.Fatalf("power %s = %+v, want power state %s", action, r, state)
		}
	}

	// Unconfigured: refused with CloudStack's error, code 530.
	_, err = power(id1, "STATUS")
	refused("power of an unconfigured host", err, "530", "disabled or not configured for the host")
	_, err = cs.Host.EnableOutOfBandManagementForHost(cs.Host.NewEnableOutOfBandManagementForHostParams(id1))
	refused("enable unconfigured", err, "530", "not configured for the host")

	// ---- IPMI (ipmi_sim) ----
	_, port, _ := net.SplitHostPort(sim.Addr)
	cr, err := oob.ConfigureOutOfBandManagement(oob.NewConfigureOutOfBandManagementParams("127.0.0.1", "ipmitool", id1, sim.Pass, port, sim.User))
	must("configureOutOfBandManagement", err)
	if cr.Hostid != id1 || cr.Driver != "ipmitool" || cr.Address != "127.0.0.1" || cr.Port != port || cr.Username != sim.User || cr.Password != "" || cr.Enabled || !cr.Status {
		t.Fatalf("configure = %+v", cr)
	}
	_, err = power(id1, "STATUS")
	refused("power before enabling", err, "530", "disabled or not configured for the host")
	er, err := cs.Host.EnableOutOfBandManagementForHost(cs.Host.NewEnableOutOfBandManagementForHostParams(id1))
	must("enableOutOfBandManagementForHost", err)
	if !er.Enabled || er.Hostid != id1 {
		t.Fatalf("enable = %+v", er)
	}
	wantPower(id1, "STATUS", "Off")
	wantPower(id1, "ON", "On")
	if !sim.Power() {
		t.Fatal("ipmi_sim's chassis is off after ON")
	}
	wantPower(id1, "SOFT", "Off")
	wantPower(id1, "CYCLE", "On")
	wantPower(id1, "RESET", "On")
	wantPower(id1, "OFF", "Off")
	if sim.Power() {
		t.Fatal("ipmi_sim's chassis is on after OFF")
	}
	sim.SetPower(t, true) // changed behind Nimbus's back: STATUS reads it
	wantPower(id1, "STATUS", "On")
	_, err = power(id1, "EXPLODE")
	refused("unknown action", err, "431", "ON, OFF, CYCLE, RESET, SOFT, STATUS")

	// listHosts shows the block, never the password.
	lp := cs.Host.NewListHostsParams()
	lp.SetId(id1)
	lh, err := cs.Host.ListHosts(lp)
	must("listHosts", err)
	o := lh.Hosts[0].Outofbandmanagement
	if lh.Count != 1 || !o.Enabled || o.Powerstate != "On" || o.Driver != "ipmitool" || o.Address != "127.0.0.1" || o.Port != port || o.Username != sim.User || o.Password != "" {
		t.Errorf("listHosts outofbandmanagement = %+v", o)
	}
	var raw map[string]any
	cp := &cloudstack.CustomServiceParams{}
	cp.SetParam("id", id1)
	must("raw listHosts", cs.Custom.(*cloudstack.CustomService).CustomRequest("listHosts", cp, &raw))
	b, _ := json.Marshal(raw)
	if strings.Contains(string(b), sim.Pass) || strings.Contains(string(b), `"password"`) {
		t.Errorf("listHosts shows the password: %s", b)
	}
	fp := cs.Host.NewListHostsParams()
	fp.SetOutofbandmanagementenabled(true)
	if lh, err := cs.Host.ListHosts(fp); err != nil || lh.Count != 1 || lh.Hosts[0].Id != id1 {
		t.Errorf("listHosts outofbandmanagementenabled=true: %v %+v", err, lh)
	}

	// Disabled for the cluster, the zone, then the host: refused each time.
	_, err = cs.Cluster.DisableOutOfBandManagementForCluster(cs.Cluster.NewDisableOutOfBandManagementForClusterParams(cl.Id))
	must("disable for cluster", err)
	_, err = power(id1, "STATUS")
	refused("power with the cluster disabled", err, "530", "disabled for the host's cluster")
	_, err = cs.Cluster.EnableOutOfBandManagementForCluster(cs.Cluster.NewEnableOutOfBandManagementForClusterParams(cl.Id))
	must("enable for cluster", err)
	dz, err := cs.Zone.DisableOutOfBandManagementForZone(cs.Zone.NewDisableOutOfBandManagementForZoneParams(z.Id))
	must("disable for zone", err)
	if dz.Enabled {
		t.Errorf("disable for zone = %+v", dz)
	}
	_, err = power(id1, "OFF")
	refused("power with the zone disabled", err, "530", "disabled for the host's zone")
	_, err = cs.Zone.EnableOutOfBandManagementForZone(cs.Zone.NewEnableOutOfBandManagementForZoneParams(z.Id))
	must("enable for zone", err)
	wantPower(id1, "STATUS", "On")
	dh, err := cs.Host.DisableOutOfBandManagementForHost(cs.Host.NewDisableOutOfBandManagementForHostParams(id1))
	must("disable for host", err)
	if dh.Enabled || dh.Powerstate != "Disabled" {
		t.Errorf("disable for host = %+v", dh)
	}
	_, err = power(id1, "OFF")
	refused("power with the host disabled", err, "530", "disabled or not configured for the host")
	if !sim.Power() {
		t.Error("a refused OFF powered the machine off")
	}
	_, err = cs.Host.EnableOutOfBandManagementForHost(cs.Host.NewEnableOutOfBandManagementForHostParams(id1))
	must("enable for host again", err)

	// IPMI passwords cannot be changed through bmclib: a clear error.
	_, err = oob.ChangeOutOfBandManagementPassword(func() *cloudstack.ChangeOutOfBandManagementPasswordParams {
		p := oob.NewChangeOutOfBandManagementPasswordParams(id1)
		p.SetPassword("n3w")
		return p
	}())
	refused("ipmi password change", err, "432", "cannot change a BMC user's password")

	// A wrong password: the job fails at once with the reason, none stays.
	_, err = oob.ConfigureOutOfBandManagement(oob.NewConfigureOutOfBandManagementParams("127.0.0.1", "ipmitool", id1, "wrong", port, sim.User))
	must("configure a wrong password", err)
	start := time.Now()
	_, err = power(id1, "STATUS")
	refused("wrong password", err, "530", "authentication error", "rejected the username or password", "Please check configured credentials")
	if el := time.Since(start); el > 45*time.Second {
		t.Errorf("wrong password noticed after %s", el)
	}
	jobs, err := cs.Asyncjob.ListAsyncJobs(cs.Asyncjob.NewListAsyncJobsParams())
	must("listAsyncJobs", err)
	for _, j := range jobs.AsyncJobs {
		if j.Jobstatus == 0 {
			t.Errorf("job %s (%s) still pending", j.JobID, j.Cmd)
		}
	}
	_, err = oob.ConfigureOutOfBandManagement(oob.NewConfigureOutOfBandManagementParams("127.0.0.1", "ipmitool", id1, sim.Pass, port, sim.User))
	must("configure the right password", err)
	wantPower(id1, "STATUS", "On")

	// ---- Redfish (test service, self-signed HTTPS) ----
	up := cs.Configuration.NewUpdateConfigurationParams("redfish.ignore.ssl")
	up.SetValue("true")
	_, err = cs.Configuration.UpdateConfiguration(up)
	must("redfish.ignore.ssl", err)
	rhost, rport, _ := net.SplitHostPort(rf.Addr)
	_, err = oob.ConfigureOutOfBandManagement(oob.NewConfigureOutOfBandManagementParams(rhost, "redfish", id2, "password", rport, "admin"))
	must("configure redfish", err)
	_, err = cs.Host.EnableOutOfBandManagementForHost(cs.Host.NewEnableOutOfBandManagementForHostParams(id2))
	must("enable redfish host", err)
	wantPower(id2, "STATUS", "Off")
	wantPower(id2, "ON", "On")
	if rf.Power() != "On" {
		t.Fatalf("redfish power %s after ON", rf.Power())
	}
	pw, err := oob.ChangeOutOfBandManagementPassword(func() *cloudstack.ChangeOutOfBandManagementPasswordParams {
		p := oob.NewChangeOutOfBandManagementPasswordParams(id2)
		p.SetPassword("s3cret-2")
		return p
	}())
	must("changeOutOfBandManagementPassword", err)
	if !pw.Status || pw.Hostid != id2 || pw.Password != "" {
		t.Errorf("change password = %+v", pw)
	}
	if rf.Password() != "s3cret-2" {
		t.Fatalf("the BMC's password is %q after the change", rf.Password())
	}
	wantPower(id2, "OFF", "Off") // with the stored new password
	// ---- a BareMetal host: addHost fills its record, enabled ----
	bmc, err := cs.Cluster.AddCluster(cs.Cluster.NewAddClusterParams("oobm-bm", "CloudManaged", "BareMetal", c.podID, z.Id))
	must("addCluster BareMetal", err)
	ap := cs.Host.NewAddHostParams("BareMetal", c.podID, sim.URL+"?mac=52:54:00:aa:bb:01&cpunumber=2&cpuspeed=2000&memory=4096", z.Id)
	ap.SetClusterid(bmc.Id)
	ap.SetUsername(sim.User)
	ap.SetPassword(sim.Pass)
	bh, err := cs.Host.AddHost(ap)
	must("addHost BareMetal", err)
	lp = cs.Host.NewListHostsParams()
	lp.SetId(bh.Id)
	lh, err = cs.Host.ListHosts(lp)
	must("listHosts BareMetal", err)
	if o := lh.Hosts[0].Outofbandmanagement; !o.Enabled || o.Driver != "ipmitool" || o.Address != "127.0.0.1" || o.Port != port || o.Username != sim.User || o.Password != "" {
		t.Errorf("BareMetal host's outofbandmanagement = %+v", o)
	}
	sim.SetPower(t, false)
	wantPower(bh.Id, "STATUS", "Off")

	t.Logf("ipmi_sim chassis calls: %d; redfish logins: %d, resets %q", len(sim.Calls()), rf.Logins(), rf.Resets())
}
