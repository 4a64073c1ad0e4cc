package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/config"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere/vcsim"
	"github.com/nimbus-cloud/nimbus/models"
)

func init() { benchmarks["vsphere"] = runBenchVSphere }

// countRT counts the SOAP round trips of a govmomi client.
type countRT struct {
	rt soap.RoundTripper
	n  atomic.Int64
}

func (c *countRT) RoundTrip(ctx context.Context, req, res soap.HasFault) error {
	c.n.Add(1)
	return c.rt.RoundTrip(ctx, req, res)
}

// runBenchVSphere is `nimbus bench vsphere`: govmomi's vCenter simulator
// in this process, a whole Nimbus beside it (API server and worker in
// process, on a running Temporal), a vSphere zone set up through the API
// (addCluster discovering the hosts, a datastore pool, an OVA template),
// then --vms deployVirtualMachine calls (each timed from the call to its
// job reporting Running) and the vCenter SOAP calls the worker made per
// deployment; beside it, in the same run and against the same simulator,
// a bare govmomi loop cloning the same template VM and powering the clone
// on, once one at a time and once with -c in flight.
func runBenchVSphere(ctx context.Context, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("nimbus bench vsphere", flag.ContinueOnError)
	dsn := fs.String("db", "", "inventory DSN (default: a SQLite file in a temp dir)")
	temporalAddr := fs.String("temporal-address", envDefault("NIMBUS_TEMPORAL_ADDRESS", "127.0.0.1:7233"), "Temporal frontend")
	vms := fs.Int("vms", 100, "VMs to deploy through the API (and to clone in each bare loop)")
	conc := fs.Int("c", 16, "deployVirtualMachine calls in flight (and clones in the parallel bare loop)")
	pollers := fs.Int("pollers", 16, "worker task pollers")
	hosts := fs.Int("hosts", 4, "ESXi hosts in the simulated cluster (32 cores, 256 GiB each)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the deploy phase to FILE.deploy")
	watch := fs.Bool("watch", false, "run the per-cluster VM watches, as a worker does by default")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *vms <= 0 || *conc <= 0 || *hosts <= 0 {
		return fmt.Errorf("--vms, -c and --hosts must be positive")
	}
	// The simulator serves its VM watches in this process and at a cost
	// that grows with VMs times changes (it recollects every watched VM at
	// every change anywhere; a vCenter sends what changed): with them on,
	// the bare loop itself ran 16x slower. Off unless asked for, so the
	// figures measure deployments.
	if !*watch {
		if err := os.Setenv(vsphere.WatchEnv, "false"); err != nil {
			return err
		}
	}
	sim, err := vcsim.Start(vcsim.Options{Hosts: *hosts, Datastores: 1, HostCores: 32, HostMemoryMiB: 256 << 10})
	if err != nil {
		return err
	}
	defer sim.Close()
	st, err := startBenchStack(ctx, "vsphere", *dsn, *temporalAddr, *pollers, *conc*4)
	if err != nil {
		return err
	}
	defer st.Close()
	watches := "on"
	if !vsphere.WatchEnabled() {
		watches = "off (--watch runs them)"
	}
	fmt.Printf("nimbus bench vsphere: vCenter simulator with %d hosts, %d VMs, %d concurrent calls, %d pollers, GOMAXPROCS %d, db %s, VM watches %s\n",
		*hosts, *vms, *conc, *pollers, runtime.GOMAXPROCS(0), config.RedactDSN(st.Cfg.DB), watches)

	callWait := func(kv ...string) (map[string]any, error) { return benchCallWait(st, 20*time.Millisecond, kv...) }
	setup := time.Now()
	z, err := callWait("command", "createZone", "name", "bench-vs", "networktype", "Advanced", "dns1", "8.8.8.8", "internaldns1", "10.0.0.2")
	if err != nil {
		return err
	}
	zoneID := idIn(z)
	pn, err := callWait("command", "createPhysicalNetwork", "zoneid", zoneID, "name", "bench-vs-phys")
	if err != nil {
		return err
	}
	for _, tt := range []string{"Guest", "Management", "Public", "Storage"} {
		kv := []string{"command", "addTrafficType", "physicalnetworkid", idIn(pn), "traffictype", tt}
		if tt == "Guest" {
			kv = append(kv, "vmwarenetworklabel", "VM Network")
		}
		if _, err := callWait(kv...); err != nil {
			return err
		}
	}
	if _, err := callWait("command", "updatePhysicalNetwork", "id", idIn(pn), "state", "Enabled"); err != nil {
		return err
	}
	p, err := callWait("command", "createPod", "zoneid", zoneID, "name", "bench-vs-pod", "gateway", "172.17.0.1", "netmask", "255.255.0.0",
		"startip", "172.17.0.10", "endip", "172.17.0.100")
	if err != nil {
		return err
	}
	podID := idIn(p)
	t0 := time.Now()
	cl, err := callWait("command", "addCluster", "zoneid", zoneID, "podid", podID, "clustername", "DC0_C0", "hypervisor", "VMware",
		"clustertype", "ExternalManaged", "url", sim.ClusterURL(), "username", sim.Username, "password", sim.Password)
	if err != nil {
		return err
	}
	clusterID := clusterIDIn(cl)
	addWall := time.Since(t0)
	hl, err := callWait("command", "listHosts", "clusterid", clusterID)
	if err != nil {
		return err
	}
	if n, _ := hl["count"].(float64); int(n) != *hosts {
		return fmt.Errorf("addCluster discovered %v hosts, want %d", hl["count"], *hosts)
	}
	if _, err := callWait("command", "createStoragePool", "zoneid", zoneID, "podid", podID, "clusterid", clusterID,
		"name", "bench-ds0", "url", sim.PoolURL("LocalDS_0"), "scope", "cluster"); err != nil {
		return err
	}
	secondary := filepath.Join(st.Dir, "secondary")
	if err := os.MkdirAll(secondary, 0o755); err != nil {
		return err
	}
	if _, err := callWait("command", "addImageStore", "provider", "NFS", "name", "bench-vs-secondary", "zoneid", zoneID, "url", "file://"+secondary); err != nil {
		return err
	}
	if _, err := callWait("command", "updateZone", "id", zoneID, "allocationstate", "Enabled"); err != nil {
		return err
	}
	ova := vcsim.OVA("bench-tiny", 64)
	sum := sha256.Sum256(ova)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ovaSrv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(ova) })}
	go func() { _ = ovaSrv.Serve(ln) }()
	defer ovaSrv.Close()
	tr, err := callWait("command", "registerTemplate", "name", "bench tiny ova", "displaytext", "bench tiny ova", "url", "http://"+ln.Addr().String()+"/tiny.ova",
		"zoneid", zoneID, "format", "OVA", "hypervisor", "VMware", "ispublic", "true", "ostypeid", models.OSTypeOtherLinux64UUID,
		"checksum", "{SHA-256}"+hex.EncodeToString(sum[:]))
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
		time.Sleep(100 * time.Millisecond)
	}
	last := 10 + *vms + 10
	nw, err := callWait("command", "createNetwork", "name", "bench-vs-shared", "displaytext", "bench", "networkofferingid", models.NetworkOfferingDefaultSharedUUID,
		"zoneid", zoneID, "vlan", "600", "gateway", "10.90.0.1", "netmask", "255.255.0.0", "startip", "10.90.0.10",
		"endip", fmt.Sprintf("10.90.%d.%d", last>>8, last&255), "acltype", "Domain")
	if err != nil {
		return err
	}
	networkID := idIn(nw)
	// The first deployment imports the OVA into the datastore (once per
	// datastore); it is timed apart from the rest.
	t0 = time.Now()
	if _, err := callWait("command", "deployVirtualMachine", "serviceofferingid", models.ServiceOfferingSmallUUID, "templateid", templateID,
		"zoneid", zoneID, "networkids", networkID, "name", "bench-vs-first"); err != nil {
		return err
	}
	firstWall := time.Since(t0)
	fmt.Printf("setup: addCluster (%d hosts discovered and added) in %s; first deployment (OVA imported into the datastore) in %s; cloud ready in %s\n",
		*hosts, addWall.Round(time.Millisecond), firstWall.Round(time.Millisecond), time.Since(setup).Round(time.Millisecond))

	// ---- Nimbus: deployVirtualMachine, API call to Running ----
	calls0, files0 := vsphere.SOAPCalls(), vsphere.FileCalls()
	queries := newBenchQueryCounter()
	st.DB.AddQueryHook(queries)
	cpu0 := processCPU()
	lat := make([]time.Duration, *vms)
	var failed atomic.Int64
	var firstFail string
	var failOnce sync.Once
	stopProfile, err := startProfile(*cpuProfile, "deploy")
	if err != nil {
		return err
	}
	depStart := time.Now()
	if err := benchParallel(ctx, *vms, *conc, func(i int) error {
		t0 := time.Now()
		r, err := st.Call("command", "deployVirtualMachine", "serviceofferingid", models.ServiceOfferingSmallUUID, "templateid", templateID,
			"zoneid", zoneID, "networkids", networkID, "name", fmt.Sprintf("bench-vs-%04d", i))
		if err != nil {
			return err
		}
		jobID, _ := r["jobid"].(string)
		wait := 10 * time.Millisecond
		for {
			time.Sleep(wait)
			wait = min(wait*3/2, 100*time.Millisecond)
			j, err := st.Call("command", "queryAsyncJobResult", "jobid", jobID)
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
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d of %d deployments failed; first: %s", n, *vms, firstFail)
	}
	nimbusCalls, nimbusFiles := vsphere.SOAPCalls()-calls0, vsphere.FileCalls()-files0
	depQueries := queries.n.Load()
	depCPU := processCPU() - cpu0
	dep := summarize(lat, depWall)
	names, err := sim.VMs(ctx)
	if err != nil {
		return err
	}
	guests := 0
	for _, n := range names {
		if !strings.HasPrefix(n, vsphere.TemplatePrefix) && !strings.HasPrefix(n, "nimbus-diskhelper-") {
			guests++
		}
	}
	if guests != *vms+1 { // and the first VM
		return fmt.Errorf("vCenter holds %d guest VMs after %d deployments, want %d", guests, *vms, *vms+1)
	}
	fmt.Printf("Nimbus deployVirtualMachine: %d VMs Running in %s: %.1f VMs/s (API call to Running); job p50 %s p99 %s; per deployment %.1f vCenter SOAP calls + %.1f datastore HTTP reads, %.1f inventory queries (with the job polls)\n",
		*vms, depWall.Round(time.Millisecond), dep.rps, dep.p50.Round(time.Millisecond), dep.p99.Round(time.Millisecond),
		float64(nimbusCalls)/float64(*vms), float64(nimbusFiles)/float64(*vms), float64(depQueries)/float64(*vms))
	queries.Sites(*vms)
	fmt.Printf("  CPU of this process (API, worker, inventory and the simulated vCenter's side) per deployment: %s; the Temporal server's is not counted\n",
		(depCPU / time.Duration(*vms)).Round(100*time.Microsecond))

	// ---- bare govmomi: clone the template VM, power the clone on ----
	cpu0 = processCPU()
	seq, seqCalls, err := benchBareClones(ctx, sim, "bare-seq", *vms, 1)
	if err != nil {
		return err
	}
	seqCPU := processCPU() - cpu0
	cpu0 = processCPU()
	par, parCalls, err := benchBareClones(ctx, sim, "bare-par", *vms, *conc)
	if err != nil {
		return err
	}
	parCPU := processCPU() - cpu0
	fmt.Printf("bare govmomi loop, one at a time: %d clones powered on in %s: %.1f VMs/s; %.1f SOAP calls and %s CPU per VM\n",
		*vms, seq.Round(time.Millisecond), float64(*vms)/seq.Seconds(), float64(seqCalls)/float64(*vms), (seqCPU / time.Duration(*vms)).Round(100*time.Microsecond))
	fmt.Printf("bare govmomi loop, %d in flight:   %d clones powered on in %s: %.1f VMs/s; %.1f SOAP calls and %s CPU per VM\n",
		*conc, *vms, par.Round(time.Millisecond), float64(*vms)/par.Seconds(), float64(parCalls)/float64(*vms), (parCPU / time.Duration(*vms)).Round(100*time.Microsecond))
	seqRate, parRate := float64(*vms)/seq.Seconds(), float64(*vms)/par.Seconds()
	fmt.Printf("Nimbus / bare loop: %.2fx one at a time, %.2fx at %d in flight (target >= 0.5x)\n", dep.rps/seqRate, dep.rps/parRate, *conc)
	log.Info("bench vsphere done", "vms", *vms, "vms_per_s", fmt.Sprintf("%.1f", dep.rps), "calls_per_deploy", float64(nimbusCalls)/float64(*vms),
		"bare_seq_per_s", fmt.Sprintf("%.1f", seqRate), "bare_par_per_s", fmt.Sprintf("%.1f", parRate))
	return nil
}

// processCPU is the CPU time (user and system) this process has used: a
// phase's cost independent of what else the machine runs.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clusterIDIn reads addCluster's answer: a list of one cluster.
func clusterIDIn(r map[string]any) string {
	if cs, ok := r["cluster"].([]any); ok && len(cs) > 0 {
		if c, ok := cs[0].(map[string]any); ok {
			id, _ := c["id"].(string)
			return id
		}
	}
	return idIn(r)
}

// benchBareClones clones the template VM Nimbus imported n times with
// plain govmomi (VirtualMachine.Clone into the cluster's root pool and a
// host, task.Wait, PowerOn, task.Wait), conc at a time, and answers the
// wall time and the SOAP calls made.
func benchBareClones(ctx context.Context, sim *vcsim.Sim, prefix string, n, conc int) (time.Duration, int64, error) {
	c, err := govmomi.NewClient(ctx, sim.SDKURL(), true)
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = c.Logout(context.Background()) }()
	counter := &countRT{rt: c.Client.RoundTripper}
	c.Client.RoundTripper = counter
	si := object.NewSearchIndex(c.Client)
	pc := property.DefaultCollector(c.Client)
	dcRef, err := si.FindByInventoryPath(ctx, "/DC0")
	if err != nil || dcRef == nil {
		return 0, 0, fmt.Errorf("datacenter DC0: %v", err)
	}
	var dc mo.Datacenter
	if err := pc.RetrieveOne(ctx, dcRef.Reference(), []string{"vmFolder"}, &dc); err != nil {
		return 0, 0, err
	}
	clRef, err := si.FindByInventoryPath(ctx, "/DC0/host/DC0_C0")
	if err != nil || clRef == nil {
		return 0, 0, fmt.Errorf("cluster DC0_C0: %v", err)
	}
	var cl mo.ClusterComputeResource
	if err := pc.RetrieveOne(ctx, clRef.Reference(), []string{"resourcePool", "host"}, &cl); err != nil {
		return 0, 0, err
	}
	var vms []mo.VirtualMachine
	var folder mo.Folder
	if err := pc.RetrieveOne(ctx, dc.VmFolder, []string{"childEntity"}, &folder); err != nil {
		return 0, 0, err
	}
	var children []types.ManagedObjectReference
	for _, e := range folder.ChildEntity {
		if e.Type == "VirtualMachine" {
			children = append(children, e)
		}
	}
	if err := pc.Retrieve(ctx, children, []string{"name", "config.template"}, &vms); err != nil {
		return 0, 0, err
	}
	var tpl *object.VirtualMachine
	for _, vm := range vms {
		if vm.Config != nil && vm.Config.Template {
			tpl = object.NewVirtualMachine(c.Client, vm.Self)
			break
		}
	}
	if tpl == nil {
		return 0, 0, fmt.Errorf("no template VM in vCenter to clone")
	}
	vmFolder := object.NewFolder(c.Client, dc.VmFolder)
	pool := *cl.ResourcePool
	counter.n.Store(0)
	start := time.Now()
	err = benchParallel(ctx, n, conc, func(i int) error {
		host := cl.Host[i%len(cl.Host)]
		task, err := tpl.Clone(ctx, vmFolder, fmt.Sprintf("%s-%04d", prefix, i), types.VirtualMachineCloneSpec{
			Location: types.VirtualMachineRelocateSpec{Pool: &pool, Host: &host},
		})
		if err != nil {
			return err
		}
		info, err := task.WaitForResult(ctx)
		if err != nil {
			return err
		}
		vm := object.NewVirtualMachine(c.Client, info.Result.(types.ManagedObjectReference))
		on, err := vm.PowerOn(ctx)
		if err != nil {
			return err
		}
		return on.Wait(ctx)
	})
	return time.Since(start), counter.n.Load(), err
}
