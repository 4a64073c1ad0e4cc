package tests

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"

	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// hostWantErr checks an API error carries the code and every text part.
func hostWantErr(t *testing.T, what string, err error, code int, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want error %d", what, code)
	}
	if !strings.Contains(err.Error(), fmt.Sprint(code)) {
		t.Errorf("%s: want error %d, got %v", what, code, err)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %q does not say %q", what, err.Error(), p)
		}
	}
}

// hostCount counts inventory rows (live ones, for soft-deleted models).
func hostCount(t *testing.T, s *testenv.Stack, model any, where string, args ...any) int {
	t.Helper()
	q := s.DB.NewSelect().Model(model)
	if where != "" {
		q = q.Where(where, args...)
	}
	n, err := q.Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// hostSim calls configureSimulator (not in the SDK) with the admin's keys.
func hostSim(t *testing.T, s *testenv.Stack, kv ...string) map[string]any {
	t.Helper()
	p := url.Values{"command": {"configureSimulator"}}
	for i := 0; i+1 < len(kv); i += 2 {
		p.Set(kv[i], kv[i+1])
	}
	code, body := signedGet(t, s.APIURL, s.Admin.APIKey, s.Admin.SecretKey, p)
	if code != 200 {
		t.Fatalf("configureSimulator %v: HTTP %d %v", kv, code, body)
	}
	return body
}

// hostZonePod makes a zone and a pod to put clusters in.
func hostZonePod(t *testing.T, s *testenv.Stack, name string) (zoneID, podID string) {
	t.Helper()
	cs := s.Client
	zp := cs.Zone.NewCreateZoneParams("8.8.8.8", "10.0.0.2", name, "Advanced")
	z, err := cs.Zone.CreateZone(zp)
	if err != nil {
		t.Fatalf("createZone: %v", err)
	}
	pp := cs.Pod.NewCreatePodParams(name+"-pod1", z.Id)
	pp.SetGateway("192.168.10.1")
	pp.SetNetmask("255.255.255.0")
	pp.SetStartip("192.168.10.10")
	pp.SetEndip("192.168.10.20")
	pod, err := cs.Pod.CreatePod(pp)
	if err != nil {
		t.Fatalf("createPod: %v", err)
	}
	return z.Id, pod.Id
}

func hostAdd(cs *cloudstack.CloudStackClient, zoneID, podID, clusterID, rawURL string) (*cloudstack.AddHostResponse, error) {
	p := cs.Host.NewAddHostParams("Simulator", podID, rawURL, zoneID)
	p.SetClusterid(clusterID)
	return cs.Host.AddHost(p)
}

// hostCapacity returns listCapacity's total and used of one type.
func hostCapacity(t *testing.T, cs *cloudstack.CloudStackClient, typ int, set func(*cloudstack.ListCapacityParams)) (total, used int64) {
	t.Helper()
	p := cs.SystemCapacity.NewListCapacityParams()
	p.SetType(typ)
	set(p)
	r, err := cs.SystemCapacity.ListCapacity(p)
	if err != nil {
		t.Fatalf("listCapacity: %v", err)
	}
	for _, c := range r.Capacity {
		total += c.Capacitytotal
		used += c.Capacityused
	}
	return total, used
}

func TestHostsClustersAndCapacity(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	cs := s.Client
	cs.Timeout(3 * time.Minute)
	ctx := context.Background()
	zoneID, podID := hostZonePod(t, s, "zone-hosts")

	// Clusters: one hypervisor type each; types without a driver are
	// refused with the registry's words.
	cl, err := cs.Cluster.AddCluster(cs.Cluster.NewAddClusterParams("c1", "CloudManaged", "Simulator", podID, zoneID))
	if err != nil {
		t.Fatalf("addCluster: %v", err)
	}
	if cl.Name != "c1" || cl.Hypervisortype != "Simulator" || cl.Clustertype != "CloudManaged" || cl.Allocationstate != "Enabled" ||
		cl.Podid != podID || cl.Zoneid != zoneID || cl.Zonename != "zone-hosts" || cl.Cpuovercommitratio != "1.0" {
		t.Fatalf("addCluster = %+v", cl)
	}
	for name, hv := range map[string]string{"hyperv": "Hyperv", "xenserver": "XenServer"} {
		p := cs.Cluster.NewAddClusterParams("c-"+name, "CloudManaged", hv, podID, zoneID)
		_, err := cs.Cluster.AddCluster(p)
		hostWantErr(t, "addCluster "+hv, err, 432, "hypervisor type "+hv+" is not supported yet")
	}
	// A vSphere cluster whose vCenter does not answer is not added.
	vp := cs.Cluster.NewAddClusterParams("c-vmware", "ExternalManaged", "VMware", podID, zoneID)
	vp.SetUrl("https://127.0.0.1:1/DC1/Cluster1")
	vp.SetUsername("administrator@vsphere.local")
	vp.SetPassword("secret")
	_, err = cs.Cluster.AddCluster(vp)
	hostWantErr(t, "addCluster VMware without a vCenter", err, 534, "Unable to discover the hosts of the cluster", "127.0.0.1:1")
	_, err = cs.Cluster.AddCluster(cs.Cluster.NewAddClusterParams("c-x", "CloudManaged", "Parallels", podID, zoneID))
	hostWantErr(t, "addCluster Parallels", err, 431, "unknown hypervisor type")
	_, err = cs.Cluster.AddCluster(cs.Cluster.NewAddClusterParams("c1", "CloudManaged", "Simulator", podID, zoneID))
	hostWantErr(t, "addCluster duplicate name", err, 431, "already exists")
	if n := hostCount(t, s, (*models.Cluster)(nil), ""); n != 1 {
		t.Fatalf("%d clusters after refused adds, want 1", n)
	}
	c2, err := cs.Cluster.AddCluster(cs.Cluster.NewAddClusterParams("c2", "CloudManaged", "Simulator", podID, zoneID))
	if err != nil {
		t.Fatalf("addCluster c2: %v", err)
	}

	// Hosts through the addHost workflow.
	type spec struct {
		url       string
		cpus, mhz int
		memMB     int64
		clusterID string
		name      string
	}
	specs := []spec{
		{url: "sim://h1?cpus=16&mhz=2000&memory=65536", cpus: 16, mhz: 2000, memMB: 65536, clusterID: cl.Id, name: "h1"},
		{url: "sim://h2?cpus=32&mhz=2400&memory=131072&sockets=4", cpus: 32, mhz: 2400, memMB: 131072, clusterID: cl.Id, name: "h2"},
		{url: "sim://h3?cpus=8&mhz=3000&memory=16384", cpus: 8, mhz: 3000, memMB: 16384, clusterID: c2.Id, name: "h3"},
	}
	hosts := map[string]*cloudstack.AddHostResponse{}
	var wantMHz, wantMem int64
	for _, sp := range specs {
		h, err := hostAdd(cs, zoneID, podID, sp.clusterID, sp.url)
		if err != nil {
			t.Fatalf("addHost %s: %v", sp.url, err)
		}
		if h.Id == "" || h.Name != sp.name || h.State != "Up" || h.Resourcestate != "Enabled" || h.Type != "Routing" ||
			h.Hypervisor != "Simulator" || h.Cpunumber != sp.cpus || h.Cpuspeed != int64(sp.mhz) || h.Memorytotal != sp.memMB<<20 ||
			h.Zoneid != zoneID || h.Zonename != "zone-hosts" || h.Podid != podID || h.Podname != "zone-hosts-pod1" ||
			h.Clusterid != sp.clusterID || h.Ipaddress == "" || h.Hypervisorversion == "" || h.Cpuallocated != "0%" {
			t.Fatalf("addHost %s = %+v", sp.url, h)
		}
		hosts[sp.name] = h
		wantMHz += int64(sp.cpus * sp.mhz)
		wantMem += sp.memMB << 20
	}
	if hosts["h2"].Cpusockets != 4 {
		t.Errorf("h2 sockets = %d", hosts["h2"].Cpusockets)
	}

	// Negatives leave the inventory as it was.
	_, err = hostAdd(cs, zoneID, podID, cl.Id, specs[0].url)
	hostWantErr(t, "addHost same URL", err, 431, "already exists")
	p := cs.Host.NewAddHostParams("KVM", podID, "http://10.1.1.1", zoneID)
	p.SetClusterid(cl.Id)
	_, err = cs.Host.AddHost(p)
	hostWantErr(t, "addHost KVM into a Simulator cluster", err, 431, "one hypervisor type")
	up := cs.Cluster.NewUpdateClusterParams(cl.Id)
	up.SetHypervisor("KVM")
	_, err = cs.Cluster.UpdateCluster(up)
	hostWantErr(t, "updateCluster to a second hypervisor type", err, 431, "one hypervisor type")
	_, err = cs.Cluster.DeleteCluster(cs.Cluster.NewDeleteClusterParams(cl.Id))
	hostWantErr(t, "deleteCluster with hosts", err, 536, "2 host(s)")
	// A host may not take an address of a pod's system reserved range.
	_, err = hostAdd(cs, zoneID, podID, cl.Id, "sim://h-reserved?ip=192.168.10.15")
	hostWantErr(t, "addHost inside the reserved range", err, 431, "system reserved range")
	if n := hostCount(t, s, (*models.Host)(nil), ""); n != 3 {
		t.Fatalf("%d hosts after refused adds, want 3", n)
	}

	// Lists.
	lh, err := cs.Host.ListHosts(cs.Host.NewListHostsParams())
	if err != nil || lh.Count != 3 || len(lh.Hosts) != 3 {
		t.Fatalf("listHosts: %v %+v", err, lh)
	}
	lp := cs.Host.NewListHostsParams()
	lp.SetClusterid(cl.Id)
	lp.SetState("Up")
	if lh, err = cs.Host.ListHosts(lp); err != nil || lh.Count != 2 {
		t.Fatalf("listHosts clusterid state=Up: %v %+v", err, lh)
	}
	lp = cs.Host.NewListHostsParams()
	lp.SetKeyword("h3")
	if lh, err = cs.Host.ListHosts(lp); err != nil || lh.Count != 1 || lh.Hosts[0].Clustername != "c2" || lh.Hosts[0].Memorytotal != 16384<<20 {
		t.Fatalf("listHosts keyword=h3: %v %+v", err, lh)
	}
	lc, err := cs.Cluster.ListClusters(cs.Cluster.NewListClustersParams())
	if err != nil || lc.Count != 2 {
		t.Fatalf("listClusters: %v %+v", err, lc)
	}
	lcp := cs.Cluster.NewListClustersParams()
	lcp.SetId(cl.Id)
	lcp.SetShowcapacities(true)
	if lc, err = cs.Cluster.ListClusters(lcp); err != nil || lc.Count != 1 || len(lc.Clusters[0].Capacity) == 0 {
		t.Fatalf("listClusters showcapacities: %v %+v", err, lc)
	}
	for _, c := range lc.Clusters[0].Capacity {
		if c.Type == 1 && c.Capacitytotal != 16*2000+32*2400 {
			t.Errorf("cluster c1 CPU capacity %d", c.Capacitytotal)
		}
	}

	// Capacity is the sum of the hosts.
	inZone := func(p *cloudstack.ListCapacityParams) { p.SetZoneid(zoneID) }
	if tot, _ := hostCapacity(t, cs, 1, inZone); tot != wantMHz {
		t.Errorf("CPU capacity %d, want %d", tot, wantMHz)
	}
	if tot, _ := hostCapacity(t, cs, 0, inZone); tot != wantMem {
		t.Errorf("memory capacity %d, want %d", tot, wantMem)
	}
	if tot, _ := hostCapacity(t, cs, 1, func(p *cloudstack.ListCapacityParams) { p.SetClusterid(c2.Id) }); tot != 8*3000 {
		t.Errorf("CPU capacity of c2 %d, want %d", tot, 8*3000)
	}
	if tot, _ := hostCapacity(t, cs, 1, func(p *cloudstack.ListCapacityParams) { p.SetPodid(podID) }); tot != wantMHz {
		t.Errorf("CPU capacity of the pod %d, want %d", tot, wantMHz)
	}
	if n := hostCount(t, s, (*models.Capacity)(nil), "capacity_type IN (0, 1)"); n != 6 {
		t.Errorf("%d host capacity rows, want 6", n)
	}

	// A driver failure during addHost leaves the host in Alert with the
	// reason and no capacity; adding it again takes the same row over.
	hostSim(t, s, "name", "ConnectHost", "clusterid", c2.Id, "count", "1", "mode", "invalid", "message", "the BMC says no")
	_, err = hostAdd(cs, zoneID, podID, c2.Id, "sim://hbad?cpus=4")
	hostWantErr(t, "addHost with a failing driver", err, 431, "the BMC says no")
	var bad models.Host
	if err := s.DB.NewSelect().Model(&bad).Where("url = ?", "sim://hbad?cpus=4").Scan(ctx); err != nil {
		t.Fatalf("failed host row: %v", err)
	}
	if bad.State != "Alert" || !strings.Contains(bad.StateReason, "the BMC says no") || bad.GUID != "" || bad.CPUs != 0 {
		t.Fatalf("failed host = state %s reason %q guid %q cpus %d", bad.State, bad.StateReason, bad.GUID, bad.CPUs)
	}
	if n := hostCount(t, s, (*models.Capacity)(nil), "host_id = ?", bad.ID); n != 0 {
		t.Errorf("failed host has %d capacity rows", n)
	}
	if tot, _ := hostCapacity(t, cs, 1, inZone); tot != wantMHz {
		t.Errorf("CPU capacity after a failed add %d, want %d", tot, wantMHz)
	}
	lp = cs.Host.NewListHostsParams()
	lp.SetState("Alert")
	if lh, err = cs.Host.ListHosts(lp); err != nil || lh.Count != 1 || !strings.Contains(lh.Hosts[0].Details["statereason"], "the BMC says no") {
		t.Fatalf("listHosts state=Alert: %v %+v", err, lh)
	}
	again, err := hostAdd(cs, zoneID, podID, c2.Id, "sim://hbad?cpus=4")
	if err != nil || again.Id != bad.UUID || again.State != "Up" {
		t.Fatalf("addHost again after the fault: %v %+v", err, again)
	}
	if n := hostCount(t, s, (*models.Host)(nil), "url = ?", "sim://hbad?cpus=4"); n != 1 {
		t.Fatalf("%d rows for the re-added host, want 1", n)
	}
	wantMHz += 4 * 2400
	wantMem += 65536 << 20

	// Maintenance: the host's capacity stops counting, then counts again.
	h1 := hosts["h1"]
	pm, err := cs.Host.PrepareHostForMaintenance(cs.Host.NewPrepareHostForMaintenanceParams(h1.Id))
	if err != nil || pm.Resourcestate != "Maintenance" || pm.Id != h1.Id {
		t.Fatalf("prepareHostForMaintenance: %v %+v", err, pm)
	}
	if tot, _ := hostCapacity(t, cs, 1, inZone); tot != wantMHz-16*2000 {
		t.Errorf("CPU capacity with h1 in maintenance %d, want %d", tot, wantMHz-16*2000)
	}
	_, err = cs.Host.PrepareHostForMaintenance(cs.Host.NewPrepareHostForMaintenanceParams(h1.Id))
	hostWantErr(t, "prepareHostForMaintenance twice", err, 431, "already Maintenance")
	cm, err := cs.Host.CancelHostMaintenance(cs.Host.NewCancelHostMaintenanceParams(h1.Id))
	if err != nil || cm.Resourcestate != "Enabled" {
		t.Fatalf("cancelHostMaintenance: %v %+v", err, cm)
	}
	if tot, _ := hostCapacity(t, cs, 1, inZone); tot != wantMHz {
		t.Errorf("CPU capacity after maintenance %d, want %d", tot, wantMHz)
	}

	// updateHost: tags and allocation state.
	uh := cs.Host.NewUpdateHostParams(h1.Id)
	uh.SetHosttags([]string{"ssd", "gpu"})
	uh.SetAllocationstate("Disable")
	uhr, err := cs.Host.UpdateHost(uh)
	if err != nil || uhr.Id != h1.Id || uhr.Hosttags != "ssd,gpu" || uhr.Resourcestate != "Disabled" {
		t.Fatalf("updateHost: %v %+v", err, uhr)
	}
	lp = cs.Host.NewListHostsParams()
	lp.SetId(h1.Id)
	if lh, err = cs.Host.ListHosts(lp); err != nil || lh.Count != 1 || lh.Hosts[0].Hosttags != "ssd,gpu" || lh.Hosts[0].Resourcestate != "Disabled" {
		t.Fatalf("after updateHost: %v %+v", err, lh)
	}
	if tot, _ := hostCapacity(t, cs, 1, inZone); tot != wantMHz-16*2000 {
		t.Errorf("CPU capacity with h1 disabled %d, want %d", tot, wantMHz-16*2000)
	}
	uh = cs.Host.NewUpdateHostParams(h1.Id)
	uh.SetAllocationstate("Enable")
	if _, err := cs.Host.UpdateHost(uh); err != nil {
		t.Fatalf("updateHost enable: %v", err)
	}

	// reconnectHost (async).
	rh, err := cs.Host.ReconnectHost(cs.Host.NewReconnectHostParams(hosts["h2"].Id))
	if err != nil || rh.State != "Up" || rh.Cpunumber != 32 {
		t.Fatalf("reconnectHost: %v %+v", err, rh)
	}

	// deleteHost: an Up host needs maintenance first (or forced).
	h3 := hosts["h3"]
	_, err = cs.Host.DeleteHost(cs.Host.NewDeleteHostParams(h3.Id))
	hostWantErr(t, "deleteHost of an Up host", err, 431, "maintenance")
	if _, err := cs.Host.PrepareHostForMaintenance(cs.Host.NewPrepareHostForMaintenanceParams(h3.Id)); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Host.DeleteHost(cs.Host.NewDeleteHostParams(h3.Id)); err != nil {
		t.Fatalf("deleteHost: %v", err)
	}
	if tot, _ := hostCapacity(t, cs, 1, inZone); tot != wantMHz-8*3000 {
		t.Errorf("CPU capacity after deleteHost %d, want %d", tot, wantMHz-8*3000)
	}
	if n := hostCount(t, s, (*models.Capacity)(nil), "host_id = (SELECT id FROM hosts WHERE uuid = ?)", h3.Id); n != 0 {
		t.Errorf("deleted host kept %d capacity rows", n)
	}
	// The same machine may be added again (its GUID was released).
	h3b, err := hostAdd(cs, zoneID, podID, c2.Id, specs[2].url)
	if err != nil || h3b.Id == h3.Id || h3b.State != "Up" {
		t.Fatalf("re-adding a deleted host: %v %+v", err, h3b)
	}
	dp := cs.Host.NewDeleteHostParams(h3b.Id)
	dp.SetForced(true)
	if _, err := cs.Host.DeleteHost(dp); err != nil {
		t.Fatalf("deleteHost forced: %v", err)
	}
	dp = cs.Host.NewDeleteHostParams(bad.UUID)
	dp.SetForced(true)
	if _, err := cs.Host.DeleteHost(dp); err != nil {
		t.Fatalf("deleteHost forced: %v", err)
	}
	if _, err := cs.Cluster.DeleteCluster(cs.Cluster.NewDeleteClusterParams(c2.Id)); err != nil {
		t.Fatalf("deleteCluster of an empty cluster: %v", err)
	}
	if tot, _ := hostCapacity(t, cs, 1, inZone); tot != 16*2000+32*2400 {
		t.Errorf("CPU capacity at the end %d, want %d", tot, 16*2000+32*2400)
	}
}

// TestHostsWorkerKilledDuringAddHost kills the worker while addHost's
// driver call is in flight (slowed by the simulator's latency switch); a
// new worker finishes the job with no duplicate rows.
func TestHostsWorkerKilledDuringAddHost(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	cs := s.Client
	cs.Timeout(3 * time.Minute)
	ctx := context.Background()
	zoneID, podID := hostZonePod(t, s, "zone-kill")
	cl, err := cs.Cluster.AddCluster(cs.Cluster.NewAddClusterParams("ck", "CloudManaged", "Simulator", podID, zoneID))
	if err != nil {
		t.Fatal(err)
	}
	hostSim(t, s, "name", "ConnectHost", "latency", "20000")
	const hostURL = "sim://slow?cpus=12&mhz=2500&memory=32768"
	var (
		wg   sync.WaitGroup
		res  *cloudstack.AddHostResponse
		aerr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		res, aerr = hostAdd(cs, zoneID, podID, cl.Id, hostURL)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var h models.Host
		err := s.DB.NewSelect().Model(&h).Where("url = ?", hostURL).Scan(ctx)
		if err == nil && h.State == "Connecting" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("addHost did not reach Connecting: %v %+v", err, h)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // the ConnectHost call is sleeping in the simulator now
	s.Workers()[0].Kill()
	s.StartWorker()
	hostSim(t, s, "action", "clear")
	wg.Wait()
	if aerr != nil {
		t.Fatalf("addHost across a worker kill: %v", aerr)
	}
	if res.State != "Up" || res.Cpunumber != 12 || res.Memorytotal != 32768<<20 {
		t.Fatalf("addHost = %+v", res)
	}
	if n := hostCount(t, s, (*models.Host)(nil), "url = ?", hostURL); n != 1 {
		t.Fatalf("%d host rows, want 1", n)
	}
	var h models.Host
	if err := s.DB.NewSelect().Model(&h).Where("url = ?", hostURL).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if n := hostCount(t, s, (*models.Capacity)(nil), "host_id = ?", h.ID); n != 2 {
		t.Fatalf("%d capacity rows, want 2", n)
	}
	if n := hostCount(t, s, (*models.Event)(nil), "resource_uuid = ? AND type = ?", h.UUID, "HOST.ADD"); n != 1 {
		t.Errorf("%d HOST.ADD events, want 1", n)
	}
	var job models.AsyncJob
	if err := s.DB.NewSelect().Model(&job).Where("instance_uuid = ?", h.UUID).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if job.Status != models.JobSucceeded {
		t.Errorf("job status %d, want succeeded", job.Status)
	}
}
