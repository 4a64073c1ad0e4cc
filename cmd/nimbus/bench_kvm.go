package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor/libvirt"
	"github.com/nimbus-cloud/nimbus/infra/libvirtconn"
	"github.com/nimbus-cloud/nimbus/models"
)

func init() { benchmarks["kvm"] = runBenchKVM }

// bootMarker is what the test template's guest prints on its serial
// console once booted (scripts/build-test-template.sh).
const bootMarker = "NIMBUS-TEST-GUEST-BOOTED"

// runBenchKVM is `nimbus bench kvm`: on a real libvirtd, a cloud of one
// KVM host with a dir pool and the test template, set up through the API;
// then --vms tiny VMs (1 vCPU, 128 MB) deployed one at a time through
// deployVirtualMachine, each timed from the API call to its job reporting
// Running and to the guest's boot marker on its serial console; and after
// each, the raw libvirt baseline of the same VM: its overlay volume made,
// the same domain XML (renamed) defined and started through go-libvirt,
// timed to running and to the marker. The first deployment also copies the
// template into the pool and is reported apart.
func runBenchKVM(ctx context.Context, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("nimbus bench kvm", flag.ContinueOnError)
	dsn := fs.String("db", "", "inventory DSN (default: a SQLite file in a temp dir)")
	temporalAddr := fs.String("temporal-address", envDefault("NIMBUS_TEMPORAL_ADDRESS", "127.0.0.1:7233"), "Temporal frontend")
	lvURL := fs.String("libvirt", envDefault("NIMBUS_TEST_LIBVIRT", "qemu:///system"), "the host's libvirt URL")
	template := fs.String("template", envDefault("NIMBUS_TEST_TEMPLATE", ".test-services/template/nimbus-test.qcow2"), "the bootable test template (scripts/build-test-template.sh)")
	vms := fs.Int("vms", 5, "VMs to deploy (and as many raw libvirt domains)")
	pollers := fs.Int("pollers", 8, "worker task pollers")
	bootTimeout := fs.Duration("boot-timeout", 2*time.Minute, "how long one guest may take to print its marker")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *vms <= 0 {
		return fmt.Errorf("--vms must be positive")
	}
	if _, err := os.Stat(*template); err != nil {
		return fmt.Errorf("test template: %w (build it with scripts/build-test-template.sh)", err)
	}
	l, err := libvirtconn.Get(ctx, *lvURL, "", "")
	if err != nil {
		return err
	}
	st, err := startBenchStack(ctx, "kvm", *dsn, *temporalAddr, *pollers, 16)
	if err != nil {
		return err
	}
	defer st.Close()
	call := st.Call
	callWait := func(kv ...string) (map[string]any, error) { return benchCallWait(st, 20*time.Millisecond, kv...) }
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()

	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if m := regexp.MustCompile(`model name\s*:\s*(.*)`).FindSubmatch(b); m != nil {
			cpu = string(m[1])
		}
	}
	fmt.Printf("nimbus bench kvm: %d tiny VMs (1 vCPU, 128 MB) on %s, %d CPUs (%s), load average %s, template %s\n",
		*vms, *lvURL, runtime.NumCPU(), cpu, loadAvg(), *template)

	// ---- the cloud, through the API ----
	setup := time.Now()
	bridge, err := benchBridge()
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() { exec.Command("ip", "link", "del", bridge).Run() })
	poolDir, err := os.MkdirTemp("", "nimbus-bench-kvm-primary-")
	if err != nil {
		return err
	}
	os.Chmod(poolDir, 0o755) // QEMU runs as its own user
	cleanups = append(cleanups, func() { os.RemoveAll(poolDir) })

	z, err := callWait("command", "createZone", "name", "bench-kvm", "networktype", "Advanced", "dns1", "8.8.8.8", "internaldns1", "10.0.0.2")
	if err != nil {
		return err
	}
	zoneID := idIn(z)
	pn, err := callWait("command", "createPhysicalNetwork", "zoneid", zoneID, "name", "bench-kvm-phys")
	if err != nil {
		return err
	}
	for _, tt := range []string{"Guest", "Management"} {
		if _, err := callWait("command", "addTrafficType", "physicalnetworkid", idIn(pn), "traffictype", tt, "kvmnetworklabel", bridge); err != nil {
			return err
		}
	}
	if _, err := callWait("command", "updatePhysicalNetwork", "id", idIn(pn), "state", "Enabled"); err != nil {
		return err
	}
	p, err := callWait("command", "createPod", "zoneid", zoneID, "name", "bench-kvm-pod", "gateway", "172.31.0.1", "netmask", "255.255.255.0",
		"startip", "172.31.0.10", "endip", "172.31.0.20")
	if err != nil {
		return err
	}
	podID := idIn(p)
	c, err := callWait("command", "addCluster", "zoneid", zoneID, "podid", podID, "clustername", "bench-kvm-c1", "hypervisor", "KVM", "clustertype", "CloudManaged")
	if err != nil {
		return err
	}
	clusterID := idIn(c)
	if _, err := callWait("command", "addHost", "zoneid", zoneID, "podid", podID, "clusterid", clusterID, "hypervisor", "KVM", "url", *lvURL); err != nil {
		return err
	}
	sp, err := callWait("command", "createStoragePool", "zoneid", zoneID, "podid", podID, "clusterid", clusterID, "name", "bench-kvm-primary",
		"url", "sharedmountpoint://"+poolDir)
	if err != nil {
		return err
	}
	poolID := idIn(sp)
	cleanups = append(cleanups, func() { call("command", "deleteStoragePool", "id", poolID) })
	secondary := filepath.Join(st.Dir, "secondary")
	if _, err := callWait("command", "addImageStore", "provider", "NFS", "name", "bench-kvm-secondary", "zoneid", zoneID, "url", "file://"+secondary); err != nil {
		return err
	}
	if _, err := callWait("command", "updateZone", "id", zoneID, "allocationstate", "Enabled"); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	tsrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, *template) })}
	go func() { _ = tsrv.Serve(ln) }()
	defer tsrv.Close()
	tr, err := callWait("command", "registerTemplate", "name", "nimbus test guest", "displaytext", "nimbus test guest", "format", "QCOW2",
		"hypervisor", "KVM", "zoneid", zoneID, "ispublic", "true", "ostypeid", models.OSTypeOtherLinux64UUID,
		"url", "http://"+ln.Addr().String()+"/nimbus-test.qcow2")
	if err != nil {
		return err
	}
	templateID := idIn(tr)
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		r, err := call("command", "listTemplates", "templatefilter", "all", "id", templateID)
		if err != nil {
			return err
		}
		if ts, ok := r["template"].([]any); ok && len(ts) > 0 {
			tm := ts[0].(map[string]any)
			if ready, _ := tm["isready"].(bool); ready {
				break
			}
			if s, _ := tm["status"].(string); strings.Contains(s, "rror") {
				return fmt.Errorf("template download: %s", s)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the template did not download in 2 minutes")
		}
	}
	so, err := callWait("command", "createServiceOffering", "name", "bench-kvm-tiny", "displaytext", "1 vCPU, 128 MB", "cpunumber", "1",
		"cpuspeed", "500", "memory", "128")
	if err != nil {
		return err
	}
	offeringID := idIn(so)
	nw, err := callWait("command", "createNetwork", "name", "bench-kvm-shared", "displaytext", "bench", "networkofferingid", models.NetworkOfferingDefaultSharedUUID,
		"zoneid", zoneID, "vlan", "untagged", "gateway", "10.62.0.1", "netmask", "255.255.255.0", "startip", "10.62.0.10", "endip", "10.62.0.200",
		"acltype", "Domain")
	if err != nil {
		return err
	}
	networkID := idIn(nw)
	fmt.Printf("setup: zone, KVM host, dir pool, image store, template (%s) ready in %s\n", *template, time.Since(setup).Round(time.Millisecond))

	// ---- one Nimbus deployment: API call to Running, to the marker ----
	deploy := func(name string) (running, marker time.Duration, vmID, instance string, err error) {
		t0 := time.Now()
		r, err := call("command", "deployVirtualMachine", "serviceofferingid", offeringID, "templateid", templateID, "zoneid", zoneID,
			"networkids", networkID, "name", name)
		if err != nil {
			return 0, 0, "", "", err
		}
		vmID = idIn(r)
		jobID, _ := r["jobid"].(string)
		for {
			time.Sleep(10 * time.Millisecond)
			j, err := call("command", "queryAsyncJobResult", "jobid", jobID)
			if err != nil {
				return 0, 0, vmID, "", err
			}
			s, _ := j["jobstatus"].(float64)
			if s == 0 {
				continue
			}
			running = time.Since(t0)
			if s != 1 {
				b, _ := json.Marshal(j["jobresult"])
				return running, 0, vmID, "", fmt.Errorf("deploy %s: %s", name, b)
			}
			if res, ok := j["jobresult"].(map[string]any); ok {
				if vm, ok := res["virtualmachine"].(map[string]any); ok {
					instance, _ = vm["instancename"].(string)
				}
			}
			break
		}
		if instance == "" {
			return running, 0, vmID, "", fmt.Errorf("deploy %s: no instance name in the job result", name)
		}
		if err := waitMarker(ctx, filepath.Join(libvirt.DefaultConsoleDir, instance+".log"), vmID, *bootTimeout); err != nil {
			return running, 0, vmID, instance, fmt.Errorf("%s (%s): %w", name, instance, err)
		}
		return running, time.Since(t0), vmID, instance, nil
	}

	_, warmMarker, warmID, warmInst, err := deploy("bench-kvm-first")
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() { benchExpunge(st, warmID) })
	fmt.Printf("first VM (copies the template into the pool): API call to boot marker %s (%s)\n", warmMarker.Round(time.Millisecond), warmInst)

	type row struct{ nRun, nBoot, rRun, rBoot time.Duration }
	rows := make([]row, *vms)
	pool, err := l.StoragePoolLookupByName(poolID)
	if err != nil {
		return err
	}
	tmplVol, err := l.StorageVolLookupByName(pool, "tmpl-"+templateID)
	if err != nil {
		return err
	}
	tmplPath, err := l.StorageVolGetPath(tmplVol)
	if err != nil {
		return err
	}
	// The raw baseline's domain XML is the first Nimbus VM's, renamed: the
	// same devices, console and sysinfo.
	wdom, err := l.DomainLookupByName(warmInst)
	if err != nil {
		return err
	}
	warmXML, err := l.DomainGetXMLDesc(wdom, golibvirt.DomainXMLInactive)
	if err != nil {
		return err
	}
	nimbusRun := func(i int) error {
		name := fmt.Sprintf("bench-kvm-%d", i+1)
		nRun, nBoot, vmID, _, err := deploy(name)
		if err != nil {
			return err
		}
		rows[i].nRun, rows[i].nBoot = nRun, nBoot
		// Gone before the next boot: 2 cores run one TCG guest at a time.
		if _, err := benchCallWait(st, 50*time.Millisecond, "command", "destroyVirtualMachine", "id", vmID, "expunge", "true"); err != nil {
			return err
		}
		return nil
	}
	rawRun := func(i int) error {
		rawName := fmt.Sprintf("bench-raw-%d-%s", i+1, randHex(4))
		volName := rawName + "-root"
		rawUUID := newUUIDString()
		rawXML, err := rawDomainXML(warmXML, warmInst, wdom.UUID, rawName, rawUUID, poolID, volName)
		if err != nil {
			return err
		}
		volXML := fmt.Sprintf(`<volume><name>%s</name><capacity unit='bytes'>%d</capacity><target><format type='qcow2'/><compat>1.1</compat></target>`+
			`<backingStore><path>%s</path><format type='qcow2'/></backingStore></volume>`, volName, 32<<20, tmplPath)
		rawLog := filepath.Join(libvirt.DefaultConsoleDir, rawName+".log")
		t0 := time.Now()
		vol, err := l.StorageVolCreateXML(pool, volXML, 0)
		if err != nil {
			return fmt.Errorf("raw volume: %w", err)
		}
		defer l.StorageVolDelete(vol, 0)
		rdom, err := l.DomainDefineXMLFlags(rawXML, 0)
		if err != nil {
			return fmt.Errorf("raw define: %w", err)
		}
		defer func() {
			l.DomainDestroy(rdom)
			l.DomainUndefineFlags(rdom, golibvirt.DomainUndefineNvram)
			os.Remove(rawLog)
		}()
		if err := l.DomainCreate(rdom); err != nil {
			return fmt.Errorf("raw start: %w", err)
		}
		rows[i].rRun = time.Since(t0)
		if err := waitMarker(ctx, rawLog, rawUUID, *bootTimeout); err != nil {
			return fmt.Errorf("raw %s: %w", rawName, err)
		}
		rows[i].rBoot = time.Since(t0)
		return nil
	}
	for i := range rows {
		// Alternate which goes first, so that neither always meets the
		// other's leftovers.
		runs := []func(int) error{nimbusRun, rawRun}
		if i%2 == 1 {
			runs[0], runs[1] = runs[1], runs[0]
		}
		for _, run := range runs {
			if err := run(i); err != nil {
				return err
			}
		}
		r := rows[i]
		fmt.Printf("  VM %d: Nimbus API->Running %6s  ->marker %6s | raw libvirt (vol-create+define+start) ->running %6s  ->marker %6s | Nimbus adds %6s to Running, %6s to the marker (%.2fx)\n",
			i+1, ms(r.nRun), ms(r.nBoot), ms(r.rRun), ms(r.rBoot), ms(r.nRun-r.rRun), ms(r.nBoot-r.rBoot), r.nBoot.Seconds()/r.rBoot.Seconds())
	}
	var sum row
	var addRun, addBoot []time.Duration
	var ratios []float64
	for _, r := range rows {
		sum.nRun += r.nRun
		sum.nBoot += r.nBoot
		sum.rRun += r.rRun
		sum.rBoot += r.rBoot
		addRun = append(addRun, r.nRun-r.rRun)
		addBoot = append(addBoot, r.nBoot-r.rBoot)
		ratios = append(ratios, r.nBoot.Seconds()/r.rBoot.Seconds())
	}
	n := time.Duration(len(rows))
	fmt.Printf("mean of %d: Nimbus ->Running %s ->marker %s | raw ->running %s ->marker %s | Nimbus adds %s to Running, %s to the marker (%.2fx)\n",
		len(rows), ms(sum.nRun/n), ms(sum.nBoot/n), ms(sum.rRun/n), ms(sum.rBoot/n), ms((sum.nRun-sum.rRun)/n), ms((sum.nBoot-sum.rBoot)/n),
		sum.nBoot.Seconds()/sum.rBoot.Seconds())
	slices.Sort(addRun)
	slices.Sort(addBoot)
	slices.Sort(ratios)
	medRun, medBoot, medRatio := addRun[len(addRun)/2], addBoot[len(addBoot)/2], ratios[len(ratios)/2]
	verdict := "met"
	if medRun >= time.Second || medBoot >= time.Second || medRatio >= 1.3 {
		verdict = "NOT met"
	}
	fmt.Printf("median per VM: Nimbus adds %s to Running, %s to the marker, %.2fx to the marker; worst: %s, %s, %.2fx\n",
		ms(medRun), ms(medBoot), medRatio, ms(addRun[len(addRun)-1]), ms(addBoot[len(addBoot)-1]), ratios[len(ratios)-1])
	fmt.Printf("target (Nimbus adds < 1 s and < 1.3x per VM): %s (median); load average %s at the end\n", verdict, loadAvg())
	log.Info("bench kvm done", "vms", len(rows), "nimbus_marker_mean", sum.nBoot/n, "raw_marker_mean", sum.rBoot/n)
	return nil
}

// loadAvg is the machine's 1, 5 and 15 minute load average: other work
// slows TCG guests down.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// benchExpunge destroys a VM with expunge, waiting for it.
func benchExpunge(st *benchStack, vmID string) {
	_, _ = benchCallWait(st, 50*time.Millisecond, "command", "destroyVirtualMachine", "id", vmID, "expunge", "true")
}

// benchBridge makes a Linux bridge for the guest traffic label.
func benchBridge() (string, error) {
	for i := 0; i < 20; i++ {
		name := "nimbus-bb" + randHex(2)
		if _, err := os.Stat("/sys/class/net/" + name); err == nil {
			continue
		}
		if out, err := exec.Command("ip", "link", "add", name, "type", "bridge").CombinedOutput(); err != nil {
			return "", fmt.Errorf("ip link add %s: %v: %s (bench kvm needs root)", name, err, out)
		}
		if out, err := exec.Command("ip", "link", "set", name, "up").CombinedOutput(); err != nil {
			exec.Command("ip", "link", "del", name).Run()
			return "", fmt.Errorf("ip link set %s up: %v: %s", name, err, out)
		}
		return name, nil
	}
	return "", fmt.Errorf("no free bridge name")
}

// waitMarker waits until a serial log shows the boot marker of the guest
// with this UUID (logs are appended to, and keep the boots of earlier VMs
// that had the same instance name).
func waitMarker(ctx context.Context, path, uuid string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	want := "uuid=" + uuid
	for {
		if b, err := os.ReadFile(path); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, bootMarker) && strings.Contains(line, want) {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no boot marker of %s in %s within %v", uuid, path, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

var macRE = regexp.MustCompile(`\s*<mac address=['"][^'"]*['"]\s*/>`)

// rawDomainXML is a Nimbus domain's XML for another, raw domain: its name,
// UUID (also in SMBIOS), root volume and console log renamed, MAC
// addresses left for libvirt to choose.
func rawDomainXML(x, name string, uuid golibvirt.UUID, rawName, rawUUID, poolID, volName string) (string, error) {
	u := uuidString(uuid)
	if !strings.Contains(x, "volume='") && !strings.Contains(x, `volume="`) {
		return "", fmt.Errorf("domain %s has no pool volume disk", name)
	}
	out := strings.ReplaceAll(x, u, rawUUID)
	out = strings.ReplaceAll(out, name, rawName)
	out = macRE.ReplaceAllString(out, "")
	// The first disk (the root volume) moves to the raw volume.
	re := regexp.MustCompile(`pool=['"]` + regexp.QuoteMeta(poolID) + `['"] volume=['"][^'"]*['"]`)
	loc := re.FindStringIndex(out)
	if loc == nil {
		return "", fmt.Errorf("domain %s: no disk in pool %s", name, poolID)
	}
	out = out[:loc[0]] + fmt.Sprintf("pool='%s' volume='%s'", poolID, volName) + out[loc[1]:]
	return out, nil
}

func uuidString(u golibvirt.UUID) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

func newUUIDString() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return uuidString(golibvirt.UUID(b))
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }
