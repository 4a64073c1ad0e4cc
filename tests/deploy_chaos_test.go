package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"

	"github.com/nimbus-cloud/nimbus/api"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	hvsim "github.com/nimbus-cloud/nimbus/infra/hypervisor/sim"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/sim/simkit"
	"github.com/nimbus-cloud/nimbus/infra/storage"
	stsim "github.com/nimbus-cloud/nimbus/infra/storage/sim"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// dcCloud is a simulator zone for the deploy concurrency and chaos tests:
// one Simulator cluster of identical hosts, one shared pool, an image store,
// a template and a shared guest network with many addresses.
type dcCloud struct {
	s          *testenv.Stack
	cs         *cloudstack.CloudStackClient
	zoneID     string
	podID      string
	clusterID  string
	poolID     string
	templateID string
	networkID  string
	hosts      map[string]string // id -> name
	http       *http.Client
}

const (
	dcSmallMHz = 500 // the Small Instance offering: 1 x 500 MHz, 512 MiB
	dcSmallMiB = 512
)

// dcSetup builds the zone with n hosts of cpus x 2000 MHz and memMiB each.
func dcSetup(t *testing.T, n, cpus, memMiB int) *dcCloud {
	t.Helper()
	s := testenv.StartStack(t, testenv.StackOptions{})
	cs := s.Client
	cs.Timeout(3 * time.Minute)
	c := &dcCloud{s: s, cs: cs, hosts: map[string]string{},
		http: &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	z, err := cs.Zone.CreateZone(cs.Zone.NewCreateZoneParams("8.8.8.8", "10.0.0.2", "dc-zone", "Advanced"))
	must("createZone", err)
	c.zoneID = z.Id
	pn, err := cs.Network.CreatePhysicalNetwork(cs.Network.NewCreatePhysicalNetworkParams("dc-phys", c.zoneID))
	must("createPhysicalNetwork", err)
	for _, tt := range []string{"Guest", "Management", "Public", "Storage"} {
		_, err := cs.Usage.AddTrafficType(cs.Usage.NewAddTrafficTypeParams(pn.Id, tt))
		must("addTrafficType "+tt, err)
	}
	up := cs.Network.NewUpdatePhysicalNetworkParams(pn.Id)
	up.SetState("Enabled")
	_, err = cs.Network.UpdatePhysicalNetwork(up)
	must("enable physical network", err)
	pp := cs.Pod.NewCreatePodParams("dc-pod", c.zoneID)
	pp.SetGateway("192.168.30.1")
	pp.SetNetmask("255.255.255.0")
	pp.SetStartip("192.168.30.10")
	pp.SetEndip("192.168.30.20")
	pod, err := cs.Pod.CreatePod(pp)
	must("createPod", err)
	c.podID = pod.Id
	cl, err := cs.Cluster.AddCluster(cs.Cluster.NewAddClusterParams("dc-c1", "CloudManaged", "Simulator", c.podID, c.zoneID))
	must("addCluster", err)
	c.clusterID = cl.Id
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("dch%02d", i)
		h, err := hostAdd(cs, c.zoneID, c.podID, c.clusterID, fmt.Sprintf("sim://%s?cpus=%d&mhz=2000&memory=%d", name, cpus, memMiB))
		must("addHost "+name, err)
		c.hosts[h.Id] = name
	}
	sp := cs.Pool.NewCreateStoragePoolParams("dc-primary", "nfs://10.0.0.9/export/dc-primary", c.zoneID)
	sp.SetPodid(c.podID)
	sp.SetClusterid(c.clusterID)
	sp.SetCapacitybytes(1 << 40)
	p, err := cs.Pool.CreateStoragePool(sp)
	must("createStoragePool", err)
	c.poolID = p.Id
	is := cs.ImageStore.NewAddImageStoreParams("NFS")
	is.SetName("dc-secondary")
	is.SetUrl("file://" + filepath.Join(s.Dir, "dc-secondary"))
	is.SetZoneid(c.zoneID)
	_, err = cs.ImageStore.AddImageStore(is)
	must("addImageStore", err)
	ez := cs.Zone.NewUpdateZoneParams(c.zoneID)
	ez.SetAllocationstate("Enabled")
	_, err = cs.Zone.UpdateZone(ez)
	must("enable zone", err)

	img := newCatImageServer(t, 1<<20, 256<<10, 0)
	rp := cs.Template.NewRegisterTemplateParams("dc tiny", "RAW", "Simulator", "dctiny", img.srv.URL+"/image.raw")
	rp.SetZoneid(c.zoneID)
	rp.SetOstypeid(models.OSTypeOtherLinux64UUID)
	rp.SetIspublic(true)
	rp.SetChecksum(img.sha256())
	reg, err := cs.Template.RegisterTemplate(rp)
	must("registerTemplate", err)
	c.templateID = reg.RegisterTemplate[0].Id
	catWaitTemplate(t, cs, c.templateID, 60*time.Second, func(x *cloudstack.Template) bool { return x.Isready })

	np := cs.Network.NewCreateNetworkParams("dc-shared", models.NetworkOfferingDefaultSharedUUID, c.zoneID)
	np.SetDisplaytext("shared guest network for the deploy tests")
	np.SetVlan("300")
	np.SetGateway("10.70.0.1")
	np.SetNetmask("255.255.255.0")
	np.SetStartip("10.70.0.10")
	np.SetEndip("10.70.0.250")
	np.SetAcltype("Domain")
	nw, err := cs.Network.CreateNetwork(np)
	must("createNetwork", err)
	c.networkID = nw.Id
	return c
}

// call sends a signed GET and returns the HTTP status and the body's
// single top-level object.
func (c *dcCloud) call(kv ...string) (int, map[string]any, error) {
	p := url.Values{"response": {"json"}, "apiKey": {c.s.Admin.APIKey}}
	for i := 0; i+1 < len(kv); i += 2 {
		p.Set(kv[i], kv[i+1])
	}
	resp, err := c.http.Get(c.s.APIURL + "?" + api.EncodeSigned(p, c.s.Admin.SecretKey))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	var out map[string]map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("%s: %v: %s", p.Get("command"), err, body)
	}
	for _, v := range out {
		return resp.StatusCode, v, nil
	}
	return resp.StatusCode, nil, fmt.Errorf("%s: empty answer", p.Get("command"))
}

// dcOutcome is how one deployVirtualMachine ended.
type dcOutcome struct {
	name    string
	vmID    string
	jobID   string
	status  int    // 1 done, 2 failed (0: never finished)
	code    int    // the failure's errorcode (HTTP status when refused at once)
	text    string // the failure's errortext
	elapsed time.Duration
}

// deploy starts one deployment and waits for its job (up to timeout).
func (c *dcCloud) deploy(name string, timeout time.Duration) dcOutcome {
	o := dcOutcome{name: name}
	t0 := time.Now()
	defer func() { o.elapsed = time.Since(t0) }()
	st, r, err := c.call("command", "deployVirtualMachine", "serviceofferingid", models.ServiceOfferingSmallUUID,
		"templateid", c.templateID, "zoneid", c.zoneID, "networkids", c.networkID, "name", name)
	if err != nil || st != http.StatusOK {
		o.status, o.code = 2, st
		if r != nil {
			o.text = fmt.Sprint(r["errortext"])
		} else if err != nil {
			o.text = err.Error()
		}
		return o
	}
	o.vmID, _ = r["id"].(string)
	o.jobID, _ = r["jobid"].(string)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		time.Sleep(300 * time.Millisecond)
		st, j, err := c.call("command", "queryAsyncJobResult", "jobid", o.jobID)
		if err != nil || st != http.StatusOK {
			continue // the server answers again in a moment
		}
		js, _ := j["jobstatus"].(float64)
		if js == 0 {
			continue
		}
		o.status = int(js)
		if o.status == 2 {
			if res, ok := j["jobresult"].(map[string]any); ok {
				ec, _ := res["errorcode"].(float64)
				o.code, o.text = int(ec), fmt.Sprint(res["errortext"])
			}
		}
		break
	}
	o.elapsed = time.Since(t0)
	return o
}

// deployMany runs n deployments named prefix-NNN with conc at a time;
// onDone sees the count of finished ones after each.
func (c *dcCloud) deployMany(prefix string, n, conc int, timeout time.Duration, onDone func(done int)) []dcOutcome {
	out := make([]dcOutcome, n)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				out[i] = c.deploy(fmt.Sprintf("%s-%03d", prefix, i), timeout)
				d := int(done.Add(1))
				if onDone != nil {
					onDone(d)
				}
			}
		}()
	}
	wg.Wait()
	return out
}

// dcVM is a VM row as the checks need it.
type dcVM struct {
	UUID, Name, InstanceName, State, Reason string
	HostUUID                                string
	MHz, MiB                                int64
}

func (c *dcCloud) vms(t *testing.T) map[string]dcVM {
	t.Helper()
	rows, err := c.s.DB.QueryContext(context.Background(), `SELECT i.uuid, i.name, i.instance_name, i.state, COALESCE(i.state_reason, ''),
		COALESCE(h.uuid, ''), i.cpu * i.speed, i.ram_size FROM vm_instances i LEFT JOIN hosts h ON h.id = i.host_id WHERE i.removed IS NULL`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]dcVM{}
	for rows.Next() {
		var v dcVM
		if err := rows.Scan(&v.UUID, &v.Name, &v.InstanceName, &v.State, &v.Reason, &v.HostUUID, &v.MHz, &v.MiB); err != nil {
			t.Fatal(err)
		}
		out[v.UUID] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkInventory checks what the inventory alone can tell: every VM
// settled (Running, Stopped or Error), an address held only by a live VM's
// NIC and one per Running VM, capacity (listCapacity, listHosts) equal to
// the sum of the Running VMs and within every host's total, no Ready or
// placed volume without a live VM, and pool allocation equal to the live
// volumes. It returns the VM rows.
func (c *dcCloud) checkInventory(t *testing.T) map[string]dcVM {
	t.Helper()
	db := c.s.DB
	vms := c.vms(t)
	var runMHz, runMiB int64
	running := 0
	perHost := map[string][2]int64{}
	for _, v := range vms {
		switch v.State {
		case models.VMRunning:
			running++
			runMHz += v.MHz
			runMiB += v.MiB
			if v.HostUUID == "" {
				t.Errorf("VM %s (%s) is Running without a host", v.Name, v.UUID)
			}
			ph := perHost[v.HostUUID]
			perHost[v.HostUUID] = [2]int64{ph[0] + v.MHz, ph[1] + v.MiB}
		case models.VMStopped, models.VMError:
			if v.HostUUID != "" {
				t.Errorf("VM %s (%s) is %s but holds host %s", v.Name, v.UUID, v.State, c.hosts[v.HostUUID])
			}
		default:
			t.Errorf("VM %s (%s) stuck in %s (%s)", v.Name, v.UUID, v.State, v.Reason)
		}
	}
	// Addresses: every allocated address of the network belongs to a NIC
	// of a Running or Stopped VM, and every Running VM holds one.
	if n := nsCount(t, db, `SELECT COUNT(*) FROM ip_addresses ia JOIN vlans v ON v.id = ia.vlan_id JOIN networks n ON n.id = v.network_id
		WHERE n.uuid = ? AND ia.state <> 'Free' AND NOT EXISTS (SELECT 1 FROM nics nc JOIN vm_instances i ON i.id = nc.instance_id
		WHERE nc.network_id = n.id AND nc.ip4_address = ia.public_ip_address AND nc.removed IS NULL AND i.removed IS NULL AND i.state IN ('Running', 'Stopped'))`,
		c.networkID); n != 0 {
		t.Errorf("%d addresses allocated to no Running/Stopped VM (leaked)", n)
	}
	if n := nsCount(t, db, `SELECT COUNT(*) FROM ip_addresses ia JOIN vlans v ON v.id = ia.vlan_id JOIN networks n ON n.id = v.network_id
		WHERE n.uuid = ? AND ia.state <> 'Free'`, c.networkID); n != running {
		t.Errorf("%d addresses allocated for %d Running VMs", n, running)
	}
	if n := nsCount(t, db, `SELECT COUNT(*) FROM nics nc JOIN vm_instances i ON i.id = nc.instance_id
		WHERE nc.removed IS NULL AND i.state NOT IN ('Running', 'Stopped') AND (nc.state <> 'Allocated' OR COALESCE(nc.ip4_address, '') <> '')`); n != 0 {
		t.Errorf("%d NICs of VMs neither Running nor Stopped still hold an address", n)
	}
	// Volumes: a Ready (or placed) volume belongs to a live VM.
	if n := nsCount(t, db, `SELECT COUNT(*) FROM volumes v LEFT JOIN vm_instances i ON i.id = v.instance_id
		WHERE v.removed IS NULL AND (v.state <> 'Allocated' OR v.pool_id IS NOT NULL) AND (i.id IS NULL OR i.state NOT IN ('Running', 'Stopped'))`); n != 0 {
		t.Errorf("%d volumes created or placed for no Running/Stopped VM (orphans)", n)
	}
	if n := nsCount(t, db, `SELECT COUNT(*) FROM volumes v JOIN vm_instances i ON i.id = v.instance_id
		WHERE v.removed IS NULL AND i.state = 'Running' AND v.volume_type = 'ROOT' AND v.state = 'Ready'`); n != running {
		t.Errorf("%d Ready root volumes for %d Running VMs", n, running)
	}
	var poolAlloc, volBytes int64
	if err := db.QueryRowContext(context.Background(), "SELECT allocated_bytes FROM storage_pools WHERE uuid = ?", c.poolID).Scan(&poolAlloc); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(context.Background(), `SELECT COALESCE(SUM(v.size), 0) FROM volumes v JOIN storage_pools p ON p.id = v.pool_id
		WHERE p.uuid = ? AND v.removed IS NULL`, c.poolID).Scan(&volBytes); err != nil {
		t.Fatal(err)
	}
	if poolAlloc != volBytes {
		t.Errorf("pool allocated %d bytes, its volumes sum to %d", poolAlloc, volBytes)
	}
	// Capacity: listCapacity and every host against the Running VMs.
	inZone := func(p *cloudstack.ListCapacityParams) { p.SetZoneid(c.zoneID) }
	if _, used := hostCapacity(t, c.cs, 1, inZone); used != runMHz {
		t.Errorf("listCapacity CPU used %d MHz, Running VMs sum to %d", used, runMHz)
	}
	if _, used := hostCapacity(t, c.cs, 0, inZone); used != runMiB<<20 {
		t.Errorf("listCapacity memory used %d bytes, Running VMs sum to %d", used, runMiB<<20)
	}
	lp := c.cs.Host.NewListHostsParams()
	lp.SetClusterid(c.clusterID)
	lp.SetPagesize(500)
	hr, err := c.cs.Host.ListHosts(lp)
	if err != nil {
		t.Fatalf("listHosts: %v", err)
	}
	if hr.Count != len(c.hosts) {
		t.Errorf("listHosts: %d hosts, want %d", hr.Count, len(c.hosts))
	}
	for _, h := range hr.Hosts {
		want := perHost[h.Id]
		if h.Memoryallocated > h.Memorytotal {
			t.Errorf("host %s: memory allocated %d > total %d", h.Name, h.Memoryallocated, h.Memorytotal)
		}
		if h.Cpuallocatedvalue > int64(h.Cpunumber)*int64(h.Cpuspeed) {
			t.Errorf("host %s: CPU allocated %d MHz > %d x %d", h.Name, h.Cpuallocatedvalue, h.Cpunumber, h.Cpuspeed)
		}
		if h.Memoryallocated != want[1]<<20 || h.Cpuallocatedvalue != want[0] {
			t.Errorf("host %s: allocated %d MHz %d bytes, its Running VMs sum to %d MHz %d bytes", h.Name, h.Cpuallocatedvalue, h.Memoryallocated, want[0], want[1]<<20)
		}
	}
	return vms
}

// checkSimulator compares the inventory with what the simulator holds. The
// simulator lives in the worker process and owns its data directory, so
// the stack's workers are stopped first and the test opens the
// simulator's journal itself (hypervisor and storage): every Running VM is
// running on its host there, no simulator VM lacks a Running/Stopped row
// on that host, and every disk in the pool is a live volume's or a
// template copy.
func (c *dcCloud) checkSimulator(t *testing.T, vms map[string]dcVM) {
	t.Helper()
	for _, w := range c.s.Workers() {
		w.Stop()
	}
	ctx := context.Background()
	hv, err := hvsim.Open(filepath.Join(c.s.Dir, "simulator"))
	if err != nil {
		t.Fatalf("open the simulator's state: %v", err)
	}
	defer hv.Close()
	if err := hv.Faults().Clear(simkit.Scope{}, true); err != nil {
		t.Fatalf("clear the fault switches: %v", err)
	}
	seen := map[string]bool{}
	for hostID, name := range c.hosts {
		list, err := hv.ListVMs(ctx, hypervisor.Host{ID: hostID, ZoneID: c.zoneID, PodID: c.podID, ClusterID: c.clusterID})
		if err != nil {
			t.Fatalf("simulator ListVMs %s: %v", name, err)
		}
		for _, sv := range list {
			seen[sv.UUID] = true
			v, ok := vms[sv.UUID]
			switch {
			case !ok:
				t.Errorf("simulator VM %s (%s) on %s has no inventory row (orphan)", sv.Name, sv.UUID, name)
			case v.State != models.VMRunning && v.State != models.VMStopped:
				t.Errorf("simulator VM %s on %s is %s but its row is %s (%s)", sv.Name, name, sv.State, v.State, v.Reason)
			case v.State == models.VMRunning && (v.HostUUID != hostID || sv.State != hypervisor.StateRunning):
				t.Errorf("VM %s is Running on %s in the inventory, the simulator has it %s on %s", v.Name, c.hosts[v.HostUUID], sv.State, name)
			}
		}
	}
	for _, v := range vms {
		if v.State == models.VMRunning && !seen[v.UUID] {
			t.Errorf("VM %s (%s) is Running on %s in the inventory but not on the simulator", v.Name, v.UUID, c.hosts[v.HostUUID])
		}
	}

	st, err := stsim.OpenWith(filepath.Join(c.s.Dir, "simulator", "storage"), stsim.Options{Faults: hv.Faults()})
	if err != nil {
		t.Fatalf("open the storage simulator's state: %v", err)
	}
	defer st.Close()
	disks, err := st.ListVolumes(ctx, storage.Pool{ID: c.poolID, ZoneID: c.zoneID, PodID: c.podID, ClusterID: c.clusterID})
	if err != nil {
		t.Fatalf("storage simulator ListVolumes: %v", err)
	}
	rows, err := c.s.DB.QueryContext(ctx, `SELECT v.path, COALESCE(i.state, '') FROM volumes v LEFT JOIN vm_instances i ON i.id = v.instance_id
		JOIN storage_pools p ON p.id = v.pool_id WHERE p.uuid = ? AND v.removed IS NULL`, c.poolID)
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{}
	for rows.Next() {
		var p, s string
		if err := rows.Scan(&p, &s); err != nil {
			t.Fatal(err)
		}
		paths[p] = s
	}
	rows.Close()
	onDisk := map[string]bool{}
	for _, d := range disks {
		if d.Template {
			continue
		}
		onDisk[d.Path] = true
		if s, ok := paths[d.Path]; !ok {
			t.Errorf("simulator disk %s in the pool has no volume row (orphan)", d.Path)
		} else if s != models.VMRunning && s != models.VMStopped {
			t.Errorf("simulator disk %s belongs to a %s VM", d.Path, s)
		}
	}
	for p, s := range paths {
		if !onDisk[p] {
			t.Errorf("volume %s (VM %s) is in the inventory but not in the simulator's pool", p, s)
		}
	}
}

func dcStates(vms map[string]dcVM) map[string]int {
	m := map[string]int{}
	for _, v := range vms {
		m[v.State]++
	}
	return m
}

func dcPercentiles(out []dcOutcome) string {
	d := make([]time.Duration, 0, len(out))
	for _, o := range out {
		d = append(d, o.elapsed)
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	if len(d) == 0 {
		return "none"
	}
	return fmt.Sprintf("p50 %v, p99 %v, max %v", d[len(d)/2].Round(time.Millisecond), d[(len(d)*99)/100].Round(time.Millisecond),
		d[len(d)-1].Round(time.Millisecond))
}

// 200 deployments at once onto room for exactly 150 (15 hosts whose memory
// holds 10 Small VMs each, overcommit 1, CPU to spare): 150 Running, 50
// refused with 533, no host over its limits, capacity exactly the Running
// VMs'.
func TestDeployConcurrency(t *testing.T) {
	const hosts, perHost, total = 15, 10, 200
	c := dcSetup(t, hosts, 16, perHost*dcSmallMiB)
	started := time.Now()
	out := c.deployMany("cc", total, total, 8*time.Minute, nil)
	t.Logf("%d deployments in %v; per call %s", total, time.Since(started).Round(time.Millisecond), dcPercentiles(out))

	ok, refused := 0, 0
	for _, o := range out {
		switch {
		case o.status == 1:
			ok++
		case o.status == 2 && o.code == 533:
			refused++
			if !strings.Contains(o.text, "dch") {
				t.Errorf("%s: 533 without the planner's reasons naming hosts: %q", o.name, o.text)
			}
		case o.status == 0:
			t.Errorf("%s: job %s did not finish", o.name, o.jobID)
		default:
			t.Errorf("%s: failed with %d, want success or 533: %s", o.name, o.code, o.text)
		}
	}
	if ok != hosts*perHost || refused != total-hosts*perHost {
		t.Errorf("%d Running and %d refused with 533, want %d and %d", ok, refused, hosts*perHost, total-hosts*perHost)
	}
	vms := c.checkInventory(t)
	st := dcStates(vms)
	if st[models.VMRunning] != hosts*perHost || st[models.VMError] != total-hosts*perHost {
		t.Errorf("VM states %v, want %d Running and %d Error", st, hosts*perHost, total-hosts*perHost)
	}
	lp := c.cs.VirtualMachine.NewListVirtualMachinesParams()
	lp.SetState("Running")
	lp.SetListall(true)
	lp.SetPagesize(500)
	if r, err := c.cs.VirtualMachine.ListVirtualMachines(lp); err != nil || r.Count != hosts*perHost {
		t.Errorf("listVirtualMachines state=Running: %v %v, want %d", err, r, hosts*perHost)
	}
	c.checkSimulator(t, vms)
}

// Deploy 100 VMs while the worker is killed (SIGKILL) twice; then deploy
// 50 with the simulator failing define, start and volume creation at
// random. Every job ends (Running, or failed with its reason), and nothing
// is stuck, leaked or orphaned, in the inventory or on the simulator.
func TestDeployChaos(t *testing.T) {
	c := dcSetup(t, 4, 64, 64*1024)

	// ---- kill -9 the worker twice mid-way ----
	const total, conc = 100, 20
	var mu sync.Mutex
	kills := []int{15, 50} // after this many deployments finished
	killed := make(chan int, len(kills))
	started := time.Now()
	out := c.deployMany("chaos", total, conc, 8*time.Minute, func(done int) {
		mu.Lock()
		defer mu.Unlock()
		if len(kills) > 0 && done >= kills[0] {
			kills = kills[1:]
			ws := c.s.Workers()
			ws[len(ws)-1].Kill()
			killed <- done
			c.s.StartWorker()
		}
	})
	close(killed)
	var at []int
	for d := range killed {
		at = append(at, d)
	}
	if len(at) != 2 {
		t.Fatalf("the worker was killed %d times, want 2", len(at))
	}
	t.Logf("%d deployments with the worker killed after %v finished, in %v; per call %s", total, at, time.Since(started).Round(time.Millisecond), dcPercentiles(out))
	running, failed := 0, 0
	for _, o := range out {
		switch o.status {
		case 1:
			running++
		case 2:
			failed++
			if o.code == 0 || o.text == "" {
				t.Errorf("%s: failed without a code or reason: %+v", o.name, o)
			} else {
				t.Logf("%s failed cleanly: %d %s", o.name, o.code, o.text)
			}
		default:
			t.Errorf("%s: job %s did not finish after the restarts", o.name, o.jobID)
		}
	}
	t.Logf("after two kills: %d Running, %d failed", running, failed)
	vms := c.checkInventory(t)
	if st := dcStates(vms); st[models.VMRunning] != running || st[models.VMRunning]+st[models.VMError] != total {
		t.Errorf("VM states %v, want %d Running and the rest Error", st, running)
	}
	if running < total/2 {
		t.Errorf("only %d of %d deployments survived two worker crashes; a crash should cost retries, not deployments", running, total)
	}

	// ---- random faults in define, start and volume creation ----
	before := c.vms(t)
	for _, op := range []string{"DefineVM", "StartVM", "CreateVolumeFromTemplate"} {
		hostSim(t, c.s, "name", op, "clusterid", c.clusterID, "probability", "0.15", "mode", "invalid", "message", "chaos in "+op)
	}
	// Retryable failures too: the retries must not leave doubles behind.
	hostSim(t, c.s, "name", "DefineVM", "clusterid", c.clusterID, "probability", "0.1", "mode", "error", "message", "transient chaos")
	out = c.deployMany("fault", 50, 10, 5*time.Minute, nil)
	hostSim(t, c.s, "action", "clear")
	ok, bad := 0, 0
	for _, o := range out {
		switch o.status {
		case 1:
			ok++
		case 2:
			bad++
			if o.code == 0 || !strings.Contains(o.text, "chaos") {
				t.Errorf("%s: failed without the injected reason: %d %q", o.name, o.code, o.text)
			}
		default:
			t.Errorf("%s: job %s did not finish", o.name, o.jobID)
		}
	}
	t.Logf("50 deployments with random faults: %d Running, %d failed", ok, bad)
	if bad == 0 {
		t.Errorf("no deployment failed: the fault switches did not fire")
	}
	vms = c.checkInventory(t)
	for id, v := range vms {
		if _, old := before[id]; old {
			continue
		}
		if v.State == models.VMError && !strings.Contains(v.Reason, "chaos") {
			t.Errorf("failed VM %s in Error without the injected reason: %q", v.Name, v.Reason)
		}
	}
	c.checkSimulator(t, vms)
}
