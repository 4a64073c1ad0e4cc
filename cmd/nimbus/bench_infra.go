package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/config"
)

func init() { benchmarks["infra"] = runBenchInfra }

// runBenchInfra is `nimbus bench infra`: it adds simulated hosts in
// clusters through the API (signed addHost calls, each a durable job on an
// in-process worker with the Simulator driver), reports hosts per second,
// then measures listHosts with pagesize 500 over all of them.
func runBenchInfra(ctx context.Context, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("nimbus bench infra", flag.ContinueOnError)
	dsn := fs.String("db", "", "inventory DSN (default: a SQLite file in a temp dir)")
	temporalAddr := fs.String("temporal-address", envDefault("NIMBUS_TEMPORAL_ADDRESS", "127.0.0.1:7233"), "Temporal frontend")
	hosts := fs.Int("hosts", 10000, "simulated hosts to add")
	clusters := fs.Int("clusters", 100, "clusters to spread them over")
	conc := fs.Int("c", 32, "concurrent addHost calls")
	pollers := fs.Int("pollers", 16, "worker task pollers")
	lists := fs.Int("lists", 200, "listHosts calls (pagesize 500) to time")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the listHosts phase to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *hosts <= 0 || *clusters <= 0 {
		return fmt.Errorf("--hosts and --clusters must be positive")
	}

	st, err := startBenchStack(ctx, "infra", *dsn, *temporalAddr, *pollers, *conc*2)
	if err != nil {
		return err
	}
	defer st.Close()
	cfg, get, call := st.Cfg, st.Get, st.Call

	fmt.Printf("nimbus bench infra: %d hosts in %d clusters, %d concurrent addHost, %d pollers, GOMAXPROCS %d, db %s\n",
		*hosts, *clusters, *conc, *pollers, runtime.GOMAXPROCS(0), config.RedactDSN(cfg.DB))
	z, err := call("command", "createZone", "name", "bench", "networktype", "Advanced", "dns1", "8.8.8.8", "internaldns1", "10.0.0.2")
	if err != nil {
		return err
	}
	zoneID := idIn(z)
	p, err := call("command", "createPod", "zoneid", zoneID, "name", "bench-pod", "gateway", "172.16.0.1", "netmask", "255.255.0.0",
		"startip", "172.16.0.10", "endip", "172.16.0.100")
	if err != nil {
		return err
	}
	podID := idIn(p)
	clusterIDs := make([]string, *clusters)
	for i := range clusterIDs {
		c, err := call("command", "addCluster", "zoneid", zoneID, "podid", podID, "clustername", fmt.Sprintf("bench-c%03d", i+1),
			"hypervisor", "Simulator", "clustertype", "CloudManaged")
		if err != nil {
			return err
		}
		clusterIDs[i] = idIn(c)
	}

	// addHost, concurrently: each call waits for its job (SYNC on the wire).
	lat := make([]time.Duration, *hosts)
	var next atomic.Int64
	var failed atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	progress := time.NewTicker(15 * time.Second)
	defer progress.Stop()
	go func() {
		for range progress.C {
			n := min(int(next.Load()), *hosts)
			fmt.Printf("  ... %d hosts added in %s (%.1f/s)\n", n, time.Since(start).Round(time.Second), float64(n)/time.Since(start).Seconds())
		}
	}()
	for c := 0; c < *conc; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= *hosts || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				_, err := call("command", "addHost", "zoneid", zoneID, "podid", podID, "clusterid", clusterIDs[i%*clusters],
					"hypervisor", "Simulator", "url", fmt.Sprintf("sim://bench-h%05d?cpus=32&mhz=2400&memory=262144", i+1))
				lat[i] = time.Since(t0)
				if err != nil {
					failed.Add(1)
					once.Do(func() { firstErr = err })
				}
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	progress.Stop()
	if firstErr != nil {
		return fmt.Errorf("%d addHost calls failed; first: %w", failed.Load(), firstErr)
	}
	add := summarize(lat, wall)
	fmt.Printf("addHost: %d hosts in %s: %.1f hosts/s; per call p50 %s p99 %s max %s\n",
		*hosts, wall.Round(time.Millisecond), add.rps, add.p50.Round(time.Millisecond), add.p99.Round(time.Millisecond), add.max.Round(time.Millisecond))

	// listHosts, pagesize 500, cycling through the pages; one client.
	pages := (*hosts + 499) / 500
	if _, err := call("command", "listHosts", "pagesize", "500", "page", "1"); err != nil { // warm up
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	llat := make([]time.Duration, *lists)
	lstart := time.Now()
	for i := range llat {
		t0 := time.Now()
		body, err := get("command", "listHosts", "pagesize", "500", "page", fmt.Sprint(i%pages+1))
		llat[i] = time.Since(t0)
		if err != nil {
			return err
		}
		var r struct {
			R struct {
				Count int               `json:"count"`
				Host  []json.RawMessage `json:"host"`
			} `json:"listhostsresponse"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			return err
		}
		if want := min(500, *hosts-(i%pages)*500); r.R.Count != *hosts || len(r.R.Host) != want {
			return fmt.Errorf("listHosts page %d: count %d with %d hosts, want %d with %d", i%pages+1, r.R.Count, len(r.R.Host), *hosts, want)
		}
	}
	ls := summarize(llat, time.Since(lstart))
	if *cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	fmt.Printf("listHosts pagesize=500 at %d hosts: %d calls, p50 %s p99 %s max %s (target p99 < 100ms)\n",
		*hosts, ls.n, ls.p50.Round(10*time.Microsecond), ls.p99.Round(10*time.Microsecond), ls.max.Round(10*time.Microsecond))

	// The capacity is exactly the hosts'.
	r, err := call("command", "listCapacity", "zoneid", zoneID, "type", "1")
	if err != nil {
		return err
	}
	var cpu float64
	if cs, ok := r["capacity"].([]any); ok && len(cs) > 0 {
		cpu, _ = cs[0].(map[string]any)["capacitytotal"].(float64)
	}
	if want := float64(*hosts) * 32 * 2400; cpu != want {
		return fmt.Errorf("listCapacity CPU total %.0f MHz, want %.0f", cpu, want)
	}
	fmt.Printf("listCapacity CPU total %.0f MHz = %d hosts x 32 x 2400 MHz\n", cpu, *hosts)
	log.Info("bench infra done", "hosts", *hosts, "hosts_per_s", fmt.Sprintf("%.1f", add.rps),
		"listhosts_p50", ls.p50, "listhosts_p99", ls.p99)
	return nil
}
