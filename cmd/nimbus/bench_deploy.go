package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uptrace/bun"
	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/infra/config"
	"github.com/nimbus-cloud/nimbus/models"
)

func init() { benchmarks["deploy"] = runBenchDeploy }

// benchNoopActivity and benchNoopWorkflow are the raw Temporal baseline:
// one workflow task, one trivial activity, done.
func benchNoopActivity(ctx context.Context, n int) (int, error) { return n + 1, nil }

func benchNoopWorkflow(ctx workflow.Context, n int) (int, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
	var out int
	err := workflow.ExecuteActivity(ctx, benchNoopActivity, n).Get(ctx, &out)
	return out, err
}

// runBenchDeploy is `nimbus bench deploy`: a simulated cloud of --hosts
// hosts (added through addHost on an in-process worker with the Simulator
// at zero latency), --vms deployVirtualMachine calls through the signed API
// (each timed from the call to its job reporting Running), then the same
// Temporal setup (a worker with the same options on its own queue) running
// trivial one-activity workflows, and the ratio of the two; last,
// listVirtualMachines pagesize 500 at --list-vms VMs, the VMs beyond the
// deployed ones inserted directly in the inventory.
func runBenchDeploy(ctx context.Context, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("nimbus bench deploy", flag.ContinueOnError)
	dsn := fs.String("db", "", "inventory DSN (default: a SQLite file in a temp dir)")
	temporalAddr := fs.String("temporal-address", envDefault("NIMBUS_TEMPORAL_ADDRESS", "127.0.0.1:7233"), "Temporal frontend")
	hosts := fs.Int("hosts", 10000, "simulated hosts")
	clusters := fs.Int("clusters", 100, "clusters to spread them over (one primary storage pool each)")
	vms := fs.Int("vms", 1000, "VMs to deploy through the API")
	conc := fs.Int("c", 32, "concurrent API calls (addHost and deployVirtualMachine) and raw workflows in flight")
	hostConc := fs.Int("host-c", 32, "concurrent addHost calls")
	pollers := fs.Int("pollers", 16, "worker task pollers (both workers)")
	raw := fs.Int("raw", 0, "trivial workflows for the raw Temporal figure (default: --vms)")
	listVMs := fs.Int("list-vms", 100000, "VMs in the inventory for the listVirtualMachines timing")
	lists := fs.Int("lists", 100, "listVirtualMachines calls (pagesize 500) to time")
	cpuProfile := fs.String("cpuprofile", "", "write CPU profiles of the deploy, raw and list phases to FILE.deploy, FILE.raw and FILE.list")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *hosts <= 0 || *clusters <= 0 || *vms <= 0 || *conc <= 0 {
		return fmt.Errorf("--hosts, --clusters, --vms and -c must be positive")
	}
	*clusters = min(*clusters, *hosts)
	if *raw <= 0 {
		*raw = *vms
	}

	st, err := startBenchStack(ctx, "deploy", *dsn, *temporalAddr, *pollers, *conc*4)
	if err != nil {
		return err
	}
	defer st.Close()
	cfg, d, tc, tmp, get, call := st.Cfg, st.DB, st.Temporal, st.Dir, st.Get, st.Call
	queries := newBenchQueryCounter()
	d.AddQueryHook(queries)

	// callWait is call that, for an async command, waits for its job and
	// answers the job's result.
	callWait := func(kv ...string) (map[string]any, error) {
		r, err := call(kv...)
		if err != nil {
			return nil, err
		}
		jobID, _ := r["jobid"].(string)
		if jobID == "" {
			return r, nil
		}
		for {
			time.Sleep(20 * time.Millisecond)
			j, err := call("command", "queryAsyncJobResult", "jobid", jobID)
			if err != nil {
				return nil, err
			}
			switch s, _ := j["jobstatus"].(float64); s {
			case 0:
				continue
			case 1:
				res, _ := j["jobresult"].(map[string]any)
				if res == nil {
					res = r
				}
				if idIn(res) == "" {
					res["id"] = r["id"]
				}
				return res, nil
			default:
				b, _ := json.Marshal(j["jobresult"])
				return nil, fmt.Errorf("%s: job failed: %s", kv[1], b)
			}
		}
	}
	// parallel runs n calls of fn on conc goroutines; the first error stops it.
	parallel := func(n, conc int, fn func(i int) error) error { return benchParallel(ctx, n, conc, fn) }

	fmt.Printf("nimbus bench deploy: %d hosts in %d clusters, %d VMs, %d concurrent calls, %d pollers, GOMAXPROCS %d, db %s\n",
		*hosts, *clusters, *vms, *conc, *pollers, runtime.GOMAXPROCS(0), config.RedactDSN(cfg.DB))

	// ---- the cloud: zone, physical network, pod, clusters, hosts, pools,
	// image store, template, shared network ----
	setup := time.Now()
	z, err := callWait("command", "createZone", "name", "bench", "networktype", "Advanced", "dns1", "8.8.8.8", "internaldns1", "10.0.0.2")
	if err != nil {
		return err
	}
	zoneID := idIn(z)
	pn, err := callWait("command", "createPhysicalNetwork", "zoneid", zoneID, "name", "bench-phys")
	if err != nil {
		return err
	}
	for _, tt := range []string{"Guest", "Management", "Public", "Storage"} {
		if _, err := callWait("command", "addTrafficType", "physicalnetworkid", idIn(pn), "traffictype", tt); err != nil {
			return err
		}
	}
	if _, err := callWait("command", "updatePhysicalNetwork", "id", idIn(pn), "state", "Enabled"); err != nil {
		return err
	}
	p, err := callWait("command", "createPod", "zoneid", zoneID, "name", "bench-pod", "gateway", "172.16.0.1", "netmask", "255.255.0.0",
		"startip", "172.16.0.10", "endip", "172.16.0.100")
	if err != nil {
		return err
	}
	podID := idIn(p)
	clusterIDs := make([]string, *clusters)
	for i := range clusterIDs {
		c, err := callWait("command", "addCluster", "zoneid", zoneID, "podid", podID, "clustername", fmt.Sprintf("bench-c%03d", i+1),
			"hypervisor", "Simulator", "clustertype", "CloudManaged")
		if err != nil {
			return err
		}
		clusterIDs[i] = idIn(c)
	}
	hostStart := time.Now()
	if err := parallel(*hosts, *hostConc, func(i int) error {
		_, err := callWait("command", "addHost", "zoneid", zoneID, "podid", podID, "clusterid", clusterIDs[i%*clusters],
			"hypervisor", "Simulator", "url", fmt.Sprintf("sim://bench-h%05d?cpus=32&mhz=2400&memory=262144", i+1))
		return err
	}); err != nil {
		return err
	}
	hostWall := time.Since(hostStart)
	if err := parallel(*clusters, min(*clusters, 8), func(i int) error {
		_, err := callWait("command", "createStoragePool", "zoneid", zoneID, "podid", podID, "clusterid", clusterIDs[i],
			"name", fmt.Sprintf("bench-primary-%03d", i+1), "url", fmt.Sprintf("nfs://10.0.0.9/export/bench-%03d", i+1),
			"scope", "cluster", "capacitybytes", fmt.Sprint(int64(100)<<40))
		return err
	}); err != nil {
		return err
	}
	secondary := filepath.Join(tmp, "secondary")
	if err := os.MkdirAll(secondary, 0o755); err != nil {
		return err
	}
	if _, err := callWait("command", "addImageStore", "provider", "NFS", "name", "bench-secondary", "zoneid", zoneID, "url", "file://"+secondary); err != nil {
		return err
	}
	if _, err := callWait("command", "updateZone", "id", zoneID, "allocationstate", "Enabled"); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	img := tinyQcow2(1 << 30)
	imgSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(img)
	})}
	go func() { _ = imgSrv.Serve(ln) }()
	defer imgSrv.Close()
	tr, err := callWait("command", "registerTemplate", "name", "bench tiny", "displaytext", "bench tiny", "url", "http://"+ln.Addr().String()+"/tiny.qcow2",
		"zoneid", zoneID, "format", "QCOW2", "hypervisor", "Simulator", "ispublic", "true", "ostypeid", models.OSTypeOtherLinux64UUID)
	if err != nil {
		return err
	}
	templateID := idIn(tr)
	for deadline := time.Now().Add(2 * time.Minute); ; {
		r, err := callWait("command", "listTemplates", "templatefilter", "all", "id", templateID)
		if err != nil {
			return err
		}
		if ts, ok := r["template"].([]any); ok && len(ts) > 0 {
			if ready, _ := ts[0].(map[string]any)["isready"].(bool); ready {
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the template did not become ready in 2 minutes")
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A shared network with an address for every VM.
	last := 10 + *vms + 10
	if last > 65000 {
		return fmt.Errorf("--vms %d: at most 64,980", *vms)
	}
	nw, err := callWait("command", "createNetwork", "name", "bench-shared", "displaytext", "bench", "networkofferingid", models.NetworkOfferingDefaultSharedUUID,
		"zoneid", zoneID, "vlan", "500", "gateway", "10.80.0.1", "netmask", "255.255.0.0", "startip", "10.80.0.10",
		"endip", fmt.Sprintf("10.80.%d.%d", last>>8, last&255), "acltype", "Domain")
	if err != nil {
		return err
	}
	networkID := idIn(nw)
	fmt.Printf("setup: %d hosts through addHost in %s (%.1f hosts/s), cloud ready in %s\n",
		*hosts, hostWall.Round(time.Millisecond), float64(*hosts)/hostWall.Seconds(), time.Since(setup).Round(time.Millisecond))

	// ---- deploy: API call to Running ----
	stopProfile, err := startProfile(*cpuProfile, "deploy")
	if err != nil {
		return err
	}
	queries.Reset()
	lat := make([]time.Duration, *vms)
	var failed atomic.Int64
	var firstFail string
	var failOnce sync.Once
	depStart := time.Now()
	if err := parallel(*vms, *conc, func(i int) error {
		t0 := time.Now()
		r, err := call("command", "deployVirtualMachine", "serviceofferingid", models.ServiceOfferingSmallUUID, "templateid", templateID,
			"zoneid", zoneID, "networkids", networkID, "name", fmt.Sprintf("bench-vm-%06d", i))
		if err != nil {
			return err
		}
		jobID, _ := r["jobid"].(string)
		// Poll the job: 10 ms at first, backing off to 100 ms, so that the
		// polling neither blurs the figure nor loads the server much.
		wait := 10 * time.Millisecond
		for {
			time.Sleep(wait)
			wait = min(wait*3/2, 100*time.Millisecond)
			j, err := call("command", "queryAsyncJobResult", "jobid", jobID)
			if err != nil {
				return err
			}
			s, _ := j["jobstatus"].(float64)
			if s == 0 {
				continue
			}
			lat[i] = time.Since(t0)
			if s != 1 {
				failed.Add(1)
				failOnce.Do(func() { b, _ := json.Marshal(j["jobresult"]); firstFail = string(b) })
			}
			return nil
		}
	}); err != nil {
		return err
	}
	depWall := time.Since(depStart)
	stopProfile()
	depQueries := queries.n.Load()
	dep := summarize(lat, depWall)
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d of %d deployments failed; first: %s", n, *vms, firstFail)
	}
	running, err := d.NewSelect().Model((*models.VMInstance)(nil)).Where("state = ?", models.VMRunning).Count(ctx)
	if err != nil {
		return err
	}
	if running != int64(*vms) {
		return fmt.Errorf("%d VMs Running after %d deployments", running, *vms)
	}
	fmt.Printf("deployVirtualMachine: %d VMs Running in %s: %.1f VMs/s end to end (API call to Running); job time p50 %s p99 %s max %s\n",
		*vms, depWall.Round(time.Millisecond), dep.rps, dep.p50.Round(time.Millisecond), dep.p99.Round(time.Millisecond), dep.max.Round(time.Millisecond))
	fmt.Printf("inventory queries during the deployments (API, worker and job polling): %d, %.1f per VM\n", depQueries, float64(depQueries)/float64(*vms))
	queries.Sites(*vms)

	// ---- raw Temporal: the same worker options on a queue of its own ----
	rawQueue := cfg.TaskQueue + "-raw"
	rw := sdkworker.New(tc, rawQueue, sdkworker.Options{
		MaxConcurrentWorkflowTaskPollers: *pollers, MaxConcurrentActivityTaskPollers: *pollers,
		MaxConcurrentLocalActivityExecutionSize: 256,
	})
	rw.RegisterWorkflow(benchNoopWorkflow)
	rw.RegisterActivity(benchNoopActivity)
	if err := rw.Start(); err != nil {
		return err
	}
	defer rw.Stop()
	if stopProfile, err = startProfile(*cpuProfile, "raw"); err != nil {
		return err
	}
	rlat := make([]time.Duration, *raw)
	rawStart := time.Now()
	if err := parallel(*raw, *conc, func(i int) error {
		t0 := time.Now()
		run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprintf("%s-%d", rawQueue, i), TaskQueue: rawQueue}, benchNoopWorkflow, i)
		if err != nil {
			return err
		}
		var out int
		if err := run.Get(ctx, &out); err != nil {
			return err
		}
		rlat[i] = time.Since(t0)
		return nil
	}); err != nil {
		return err
	}
	rawWall := time.Since(rawStart)
	stopProfile()
	rs := summarize(rlat, rawWall)
	fmt.Printf("raw Temporal (one trivial activity per workflow, %d in flight): %d workflows in %s: %.1f workflows/s; p50 %s p99 %s\n",
		*conc, *raw, rawWall.Round(time.Millisecond), rs.rps, rs.p50.Round(time.Millisecond), rs.p99.Round(time.Millisecond))
	fmt.Printf("deploy / raw Temporal throughput: %.2fx (target >= 0.5x)\n", dep.rps/rs.rps)

	// ---- listVirtualMachines at --list-vms VMs ----
	extra := *listVMs - *vms
	if extra > 0 {
		t0 := time.Now()
		if err := benchInsertVMs(ctx, d, zoneID, networkID, extra); err != nil {
			return err
		}
		fmt.Printf("inserted %d more VM rows (with a NIC each) directly in the inventory, in batches of 2000, in %s (not deployed: deploying %d through workflows takes too long here)\n",
			extra, time.Since(t0).Round(time.Millisecond), extra)
	}
	total := max(*listVMs, *vms)
	pages := (total + 499) / 500
	if _, err := get("command", "listVirtualMachines", "listall", "true", "pagesize", "500", "page", "1"); err != nil { // warm up
		return err
	}
	if stopProfile, err = startProfile(*cpuProfile, "list"); err != nil {
		return err
	}
	queries.Reset()
	llat := make([]time.Duration, *lists)
	lstart := time.Now()
	for i := range llat {
		page := (i*7)%pages + 1
		t0 := time.Now()
		body, err := get("command", "listVirtualMachines", "listall", "true", "pagesize", "500", "page", fmt.Sprint(page))
		llat[i] = time.Since(t0)
		if err != nil {
			return err
		}
		var r struct {
			R struct {
				Count int               `json:"count"`
				VMs   []json.RawMessage `json:"virtualmachine"`
			} `json:"listvirtualmachinesresponse"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			return err
		}
		if want := min(500, total-(page-1)*500); r.R.Count != total || len(r.R.VMs) != want {
			return fmt.Errorf("listVirtualMachines page %d: count %d with %d VMs, want %d with %d", page, r.R.Count, len(r.R.VMs), total, want)
		}
	}
	ls := summarize(llat, time.Since(lstart))
	stopProfile()
	fmt.Printf("listVirtualMachines pagesize=500 listall=true at %d VMs: %d calls, p50 %s p99 %s max %s (target p99 < 100ms)\n",
		total, ls.n, ls.p50.Round(10*time.Microsecond), ls.p99.Round(10*time.Microsecond), ls.max.Round(10*time.Microsecond))
	fmt.Printf("inventory queries per listVirtualMachines call: %.1f\n", float64(queries.n.Load())/float64(*lists))
	queries.Sites(*lists)
	log.Info("bench deploy done", "vms", *vms, "vms_per_s", fmt.Sprintf("%.1f", dep.rps), "raw_per_s", fmt.Sprintf("%.1f", rs.rps),
		"ratio", fmt.Sprintf("%.2f", dep.rps/rs.rps), "list_p99", ls.p99)
	return nil
}

// benchInsertVMs adds n Running Small VMs of the admin, each with a NIC on
// the network, straight into the inventory in batches of 2000 (no hosts,
// volumes or capacity: rows for listVirtualMachines to page through).
func benchInsertVMs(ctx context.Context, d *bun.DB, zoneUUID, networkUUID string, n int) error {
	var zone models.Zone
	var admin models.Account
	var so models.ServiceOffering
	var nw models.Network
	if err := d.NewSelect().Model(&zone).Where("uuid = ?", zoneUUID).Scan(ctx); err != nil {
		return err
	}
	if err := d.NewSelect().Model(&admin).Where("uuid = ?", models.AdminAccountUUID).Scan(ctx); err != nil {
		return err
	}
	if err := d.NewSelect().Model(&so).Where("uuid = ?", models.ServiceOfferingSmallUUID).Scan(ctx); err != nil {
		return err
	}
	if err := d.NewSelect().Model(&nw).Where("uuid = ?", networkUUID).Scan(ctx); err != nil {
		return err
	}
	const batch = 2000
	for start := 0; start < n; start += batch {
		k := min(batch, n-start)
		vms := make([]models.VMInstance, k)
		for i := range vms {
			j := start + i
			vms[i] = models.VMInstance{UUID: models.NewUUID(), Name: fmt.Sprintf("bench-row-%07d", j), DisplayName: fmt.Sprintf("bench row %d", j),
				InstanceName: fmt.Sprintf("i-%d-%d-ROW", admin.ID, j), Type: models.VMTypeUser, State: models.VMRunning, ZoneID: zone.ID,
				ServiceOfferingID: so.ID, HypervisorType: models.HypervisorSimulator, CPU: 1, Speed: 500, RAMSize: 512,
				AccountID: admin.ID, DomainID: admin.DomainID, DisplayVM: true, Created: models.Now()}
		}
		if _, err := d.NewInsert().Model(&vms).Exec(ctx); err != nil {
			return err
		}
		nics := make([]models.Nic, k)
		for i, vm := range vms {
			j := start + i
			nics[i] = models.Nic{UUID: models.NewUUID(), InstanceID: vm.ID, NetworkID: nw.ID,
				MacAddress: fmt.Sprintf("02:01:%02x:%02x:%02x:%02x", j>>24, (j>>16)&255, (j>>8)&255, j&255),
				IP4Address: fmt.Sprintf("10.%d.%d.%d", 100+(j>>16), (j>>8)&255, j&255), DefaultNic: true, State: models.NicReserved, Created: models.Now()}
		}
		if _, err := d.NewInsert().Model(&nics).Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

// startProfile starts a CPU profile into prefix.phase (nothing when prefix
// is empty) and returns what stops it.
func startProfile(prefix, phase string) (func(), error) {
	if prefix == "" {
		return func() {}, nil
	}
	f, err := os.Create(prefix + "." + phase)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
