package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nimbus-cloud/nimbus/api"
	"github.com/nimbus-cloud/nimbus/infra/config"
)

// seedZoneName names the zone `nimbus dev --seed-simulator` builds; when it
// exists, seeding does nothing.
const seedZoneName = "Simulator Zone"

func init() { devSeeders = append(devSeeders, seedSimulator) }

// seedClient makes signed API calls as the admin, waiting for async jobs.
type seedClient struct {
	ctx                 context.Context
	apiURL, key, secret string
}

// errNoCommand means the API has no such command (yet).
var errNoCommand = errors.New("command not available")

// call runs a command and returns its response object; for an async
// command, the job's result.
func (s *seedClient) call(command string, kv ...string) (map[string]any, error) {
	p := url.Values{"command": {command}}
	for i := 0; i+1 < len(kv); i += 2 {
		p.Set(kv[i], kv[i+1])
	}
	body, err := signedCall(s.ctx, s.apiURL, s.key, s.secret, p)
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return nil, fmt.Errorf("%s: %w", command, errNoCommand)
		}
		return nil, fmt.Errorf("%s: %w", command, err)
	}
	var resp map[string]map[string]any
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("%s: %w", command, err)
	}
	r := resp[strings.ToLower(command)+"response"]
	if jobID, ok := r["jobid"].(string); ok && len(r) <= 3 {
		body, err := waitJob(s.ctx, s.apiURL, s.key, s.secret, jobID)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", command, err)
		}
		var q struct {
			Q struct {
				Status int            `json:"jobstatus"`
				Result map[string]any `json:"jobresult"`
			} `json:"queryasyncjobresultresponse"`
		}
		if err := json.Unmarshal(body, &q); err != nil {
			return nil, fmt.Errorf("%s: %w", command, err)
		}
		if q.Q.Status != 1 {
			return nil, fmt.Errorf("%s: job failed: %v", command, q.Q.Result["errortext"])
		}
		return q.Q.Result, nil
	}
	return r, nil
}

// idIn finds the id of the entity in a response: {"zone": {"id": ...}},
// {"count": 1, "host": [{"id": ...}]} or {"id": ...}.
func idIn(r map[string]any) string {
	if id, ok := r["id"].(string); ok {
		return id
	}
	for _, v := range r {
		switch x := v.(type) {
		case map[string]any:
			if id, ok := x["id"].(string); ok {
				return id
			}
		case []any:
			if len(x) > 0 {
				if m, ok := x[0].(map[string]any); ok {
					if id, ok := m["id"].(string); ok {
						return id
					}
				}
			}
		}
	}
	return ""
}

// devDataDir is nimbus dev's data directory, read from its own flags.
func devDataDir() string {
	args := []string{}
	if len(os.Args) > 2 {
		args = os.Args[2:]
	}
	cfg, _, err := parse("dev", args, config.FlagDB|config.FlagTemporal|config.FlagHTTP|config.FlagDev|config.FlagWorker)
	if err != nil || cfg.DataDir == "" {
		d, _ := filepath.Abs(envDefault("NIMBUS_DATA_DIR", ".nimbus"))
		return d
	}
	return cfg.DataDir
}

// seedSimulator builds a ready simulator zone through the API, in the order
// CloudStack's own setup uses: zone, physical network and traffic types,
// pod, public range, a Simulator cluster with hosts, primary and secondary
// storage, a featured template and two offerings; then it enables the
// zone. Steps whose commands do not exist yet are skipped with a log line.
func seedSimulator(ctx context.Context, base string, creds api.AdminCreds, log *slog.Logger) error {
	s := &seedClient{ctx: ctx, apiURL: strings.TrimSuffix(base, "/") + "/client/api", key: creds.APIKey, secret: creds.SecretKey}
	// The API may not be listening yet: nimbus dev starts it beside us.
	var zones map[string]any
	var err error
	for deadline := time.Now().Add(time.Minute); ; {
		if zones, err = s.call("listZones", "name", seedZoneName); err == nil {
			break
		}
		var op *net.OpError
		if !errors.As(err, &op) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if n, _ := zones["count"].(float64); n > 0 {
		log.Info("simulator zone exists; not seeding", "zone", seedZoneName)
		return nil
	}
	skip := func(step string, err error) error {
		if errors.Is(err, errNoCommand) {
			log.Warn("seeding: skipped, the API has no such command yet", "step", step, "err", err)
			return nil
		}
		return fmt.Errorf("seeding %s: %w", step, err)
	}
	log.Info("seeding a simulator zone", "zone", seedZoneName)
	r, err := s.call("createZone", "name", seedZoneName, "networktype", "Advanced", "dns1", "8.8.8.8",
		"internaldns1", "10.0.0.2", "guestcidraddress", "10.1.1.0/24", "localstorageenabled", "true")
	if err != nil {
		return fmt.Errorf("seeding the zone: %w", err)
	}
	zoneID := idIn(r)

	physID := ""
	if r, err = s.call("createPhysicalNetwork", "zoneid", zoneID, "name", "sim-physnet", "isolationmethods", "VLAN", "vlan", "100-199"); err != nil {
		if err := skip("physical network", err); err != nil {
			return err
		}
	} else {
		physID = idIn(r)
		for _, tt := range []string{"Management", "Guest", "Public", "Storage"} {
			if _, err := s.call("addTrafficType", "physicalnetworkid", physID, "traffictype", tt); err != nil {
				return fmt.Errorf("seeding traffic type %s: %w", tt, err)
			}
		}
		if _, err := s.call("updatePhysicalNetwork", "id", physID, "state", "Enabled"); err != nil {
			return fmt.Errorf("seeding: enabling the physical network: %w", err)
		}
	}

	r, err = s.call("createPod", "zoneid", zoneID, "name", "sim-pod", "gateway", "192.168.100.1", "netmask", "255.255.255.0",
		"startip", "192.168.100.10", "endip", "192.168.100.60")
	if err != nil {
		return fmt.Errorf("seeding the pod: %w", err)
	}
	podID := idIn(r)

	if physID != "" {
		if _, err := s.call("createVlanIpRange", "zoneid", zoneID, "physicalnetworkid", physID, "forvirtualnetwork", "true",
			"vlan", "untagged", "gateway", "203.0.113.1", "netmask", "255.255.255.0", "startip", "203.0.113.10", "endip", "203.0.113.250"); err != nil {
			if err := skip("public range", err); err != nil {
				return err
			}
		}
	}

	r, err = s.call("addCluster", "zoneid", zoneID, "podid", podID, "clustername", "sim-cluster", "hypervisor", "Simulator", "clustertype", "CloudManaged")
	if err != nil {
		return fmt.Errorf("seeding the cluster: %w", err)
	}
	clusterID := idIn(r)
	for i := 1; i <= 3; i++ {
		u := fmt.Sprintf("sim://sim-host-%d?cpus=32&mhz=2400&memory=131072", i)
		if _, err := s.call("addHost", "zoneid", zoneID, "podid", podID, "clusterid", clusterID, "hypervisor", "Simulator", "url", u); err != nil {
			return fmt.Errorf("seeding host %d: %w", i, err)
		}
	}
	if _, err := s.call("createStoragePool", "zoneid", zoneID, "podid", podID, "clusterid", clusterID, "name", "sim-primary",
		"url", "nfs://sim-nfs.local/export/primary", "scope", "cluster", "capacitybytes", fmt.Sprint(int64(10)<<40)); err != nil {
		return fmt.Errorf("seeding primary storage: %w", err)
	}
	secondary := filepath.Join(devDataDir(), "secondary")
	if err := os.MkdirAll(secondary, 0o755); err != nil {
		return err
	}
	if _, err := s.call("addImageStore", "provider", "NFS", "name", "sim-secondary", "zoneid", zoneID, "url", "file://"+secondary); err != nil {
		return fmt.Errorf("seeding secondary storage: %w", err)
	}

	for _, o := range [][]string{
		{"name", "Small Instance", "displaytext", "1 vCPU, 1 GHz, 1 GiB", "cpunumber", "1", "cpuspeed", "1000", "memory", "1024"},
		{"name", "Medium Instance", "displaytext", "2 vCPU, 2 GHz, 4 GiB", "cpunumber", "2", "cpuspeed", "2000", "memory", "4096"},
	} {
		if _, err := s.call("createServiceOffering", o...); err != nil {
			if err := skip("service offering "+o[1], err); err != nil {
				return err
			}
		}
	}
	if err := seedTemplate(ctx, s, zoneID, log); err != nil {
		if err := skip("featured template", err); err != nil {
			return err
		}
	}
	if _, err := s.call("updateZone", "id", zoneID, "allocationstate", "Enabled"); err != nil {
		return fmt.Errorf("seeding: enabling the zone: %w", err)
	}
	log.Info("simulator zone ready", "zone", seedZoneName, "hosts", 3)
	return nil
}

// seedTemplate registers a featured template served from this process (a
// tiny qcow2 image; the simulator never boots it), so the quickstart needs
// no network. The download job runs in the background.
func seedTemplate(ctx context.Context, s *seedClient, zoneID string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	img := tinyQcow2(64 << 20)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "sim-tiny.qcow2", time.Time{}, bytes.NewReader(img))
	})}
	go func() { _ = srv.Serve(ln) }()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	u := "http://" + ln.Addr().String() + "/sim-tiny.qcow2"
	_, err = s.call("registerTemplate", "name", "Simulator Tiny Linux", "displaytext", "A tiny image for the simulator",
		"url", u, "zoneid", zoneID, "format", "QCOW2", "hypervisor", "Simulator", "isfeatured", "true", "ispublic", "true")
	if err == nil {
		log.Info("seeding: featured template registered; it downloads in the background", "url", u)
	}
	return err
}

// tinyQcow2 is the header of an empty qcow2 (version 2) disk of the given
// virtual size, which is all a simulated host needs.
func tinyQcow2(size uint64) []byte {
	b := make([]byte, 512)
	copy(b, "QFI\xfb")
	binary.BigEndian.PutUint32(b[4:], 2)     // version
	binary.BigEndian.PutUint32(b[20:], 16)   // cluster bits
	binary.BigEndian.PutUint64(b[24:], size) // virtual size
	return b
}
