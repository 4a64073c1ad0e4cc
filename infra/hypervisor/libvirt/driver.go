// Package libvirt is the hypervisor driver for KVM, LXC and Xen Project
// hosts managed through libvirtd (github.com/digitalocean/go-libvirt, no
// cgo). One Driver type serves the three types; the domain XML differs
// (domainxml.go). Connections come from infra/libvirtconn, shared with the
// libvirt storage driver.
//
// Host URLs are libvirt URLs (qemu:///system, qemu+tcp://h/system,
// qemu+tls://h/system, qemu+ssh://h/system, lxc:///, xen:///; see
// libvirtconn). CloudStack adds KVM hosts as http://<address> with root's
// SSH password: such a URL means qemu+ssh://<address>/system (lxc+ssh, xen+ssh
// for the other types) with the host's username and password.
//
// KVM acceleration is probed, not assumed: when the host's capabilities list
// the kvm domain type, a tiny guest (probe.S) runs once under KVM; if it does
// not finish, the host's guests run under QEMU's TCG (domain type qemu).
package libvirt

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/libvirtconn"
)

var _ hypervisor.Driver = (*Driver)(nil)

func init() {
	for _, t := range []string{hypervisor.TypeKVM, hypervisor.TypeLXC, hypervisor.TypeXenProject} {
		hypervisor.Register(t, func(cfg hypervisor.Config) (hypervisor.Driver, error) {
			return New(t, cfg, nil)
		})
	}
}

// Driver options (hypervisor.Config.Options).
const (
	// OptionStopTimeout is how long StopVM waits for a graceful shutdown
	// before forcing it when the caller gives no timeout (Go duration).
	OptionStopTimeout = "stop.timeout"
	// OptionProbeTimeout bounds the KVM acceleration probe (Go duration).
	OptionProbeTimeout = "probe.timeout"
)

// Driver manages libvirt hosts of one hypervisor type.
type Driver struct {
	hypervisor.Unsupported
	typ          string
	conns        *libvirtconn.Pool
	dataDir      string
	stopTimeout  time.Duration
	probeTimeout time.Duration

	mu       sync.Mutex
	hosts    map[string]*hostState // by host URL
	consoles map[string]bool       // host URL + console dir: made already
}

// hostState is what the driver learned about a host. Rebuilt on
// ConnectHost.
type hostState struct {
	mu    sync.Mutex // one discovery at a time
	ready bool
	info  hostFacts
}

// hostFacts are a host's capabilities and the domain settings they lead to.
type hostFacts struct {
	caps   capsXML
	accel  bool   // KVM works (TypeKVM)
	probe  string // how accel was decided
	params domainParams
}

// New returns a driver for a hypervisor type (KVM, LXC or XenProject);
// conns nil means the process-wide libvirtconn.Default.
func New(typ string, cfg hypervisor.Config, conns *libvirtconn.Pool) (*Driver, error) {
	t, err := hypervisor.Canonical(typ)
	if err != nil {
		return nil, err
	}
	switch t {
	case hypervisor.TypeKVM, hypervisor.TypeLXC, hypervisor.TypeXenProject:
	default:
		return nil, hypervisor.NewError(hypervisor.ErrInvalid, "libvirt driver: %s is not KVM, LXC or XenProject", t)
	}
	if conns == nil {
		conns = libvirtconn.Default
	}
	d := &Driver{
		Unsupported: hypervisor.Unsupported{DriverName: t},
		typ:         t, conns: conns, dataDir: cfg.DataDir,
		stopTimeout: 30 * time.Second, probeTimeout: 30 * time.Second,
		hosts: map[string]*hostState{}, consoles: map[string]bool{},
	}
	for k, dst := range map[string]*time.Duration{OptionStopTimeout: &d.stopTimeout, OptionProbeTimeout: &d.probeTimeout} {
		if v := cfg.Options[k]; v != "" {
			dur, err := time.ParseDuration(v)
			if err != nil || dur <= 0 {
				return nil, hypervisor.NewError(hypervisor.ErrInvalid, "libvirt driver option %s=%q: not a positive duration", k, v)
			}
			*dst = dur
		}
	}
	return d, nil
}

// Type is KVM, LXC or XenProject.
func (d *Driver) Type() string { return d.typ }

// Close releases nothing: connections belong to the shared pool.
func (d *Driver) Close() error { return nil }

// driverScheme is the libvirt driver a hypervisor type talks to.
func (d *Driver) driverScheme() string {
	switch d.typ {
	case hypervisor.TypeLXC:
		return "lxc"
	case hypervisor.TypeXenProject:
		return "xen"
	}
	return "qemu"
}

// HostURL turns a host URL as users give it into the libvirt URL the
// driver dials: http(s)://addr (CloudStack's form for KVM hosts) becomes
// <driver>+ssh://addr/..., and a libvirt URL for another driver than the
// type's is refused (test:/// is accepted for tests).
func HostURL(typ, raw string) (string, error) {
	d := &Driver{typ: typ}
	return d.hostURL(raw)
}

func (d *Driver) hostURL(raw string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return "", hypervisor.NewError(hypervisor.ErrInvalid, "host url %q: %v", libvirtconn.Redact(raw), err)
	}
	want := d.driverScheme()
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
		if u.Hostname() == "" {
			return "", hypervisor.NewError(hypervisor.ErrInvalid, "host url %q names no host", libvirtconn.Redact(raw))
		}
		p := "/"
		if want == "qemu" {
			p = "/system"
		}
		return (&url.URL{Scheme: want + "+ssh", Host: u.Host, Path: p}).String(), nil
	}
	t, err := libvirtconn.Parse(raw)
	if err != nil {
		return "", err
	}
	if t.Driver != want && t.Driver != "test" {
		return "", hypervisor.NewError(hypervisor.ErrInvalid, "host url %q: a %s host needs a %s url (e.g. %s)",
			libvirtconn.Redact(raw), d.typ, want, exampleURL(want))
	}
	return strings.TrimSpace(raw), nil
}

func exampleURL(drv string) string {
	if drv == "qemu" {
		return "qemu:///system or qemu+tcp://host/system"
	}
	return drv + ":/// or " + drv + "+ssh://host/"
}

// conn returns the host's live connection.
func (d *Driver) conn(ctx context.Context, h hypervisor.Host) (*golibvirt.Libvirt, error) {
	u, err := d.hostURL(h.URL)
	if err != nil {
		return nil, err
	}
	return d.conns.Get(ctx, u, h.Username, h.Password)
}

// run runs one driver operation against the host's connection. go-libvirt
// calls take no context, so the operation runs aside and run returns when
// ctx ends (the call finishes on its own). Errors come back as OpErrors of
// the right kind.
func (d *Driver) run(ctx context.Context, h hypervisor.Host, op, target string, fn func(ctx context.Context, l *golibvirt.Libvirt) error) error {
	l, err := d.conn(ctx, h)
	if err != nil {
		return d.wrap(op, target, err)
	}
	done := make(chan error, 1)
	go func() { done <- fn(ctx, l) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		err = hypervisor.NewError(hypervisor.ErrUnreachable, "host %s did not answer in time: %w", h, ctx.Err())
	}
	if err != nil && !l.IsConnected() {
		err = hypervisor.NewError(hypervisor.ErrUnreachable, "connection to host %s lost: %w", h, err)
	}
	return d.wrap(op, target, err)
}

func (d *Driver) wrap(op, target string, err error) error {
	return libvirtconn.Wrap(d.typ, op, target, err)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ---- host discovery ----

type capsXML struct {
	Host struct {
		UUID string `xml:"uuid"`
		CPU  struct {
			Arch     string `xml:"arch"`
			Model    string `xml:"model"`
			Vendor   string `xml:"vendor"`
			Topology struct {
				Sockets int `xml:"sockets,attr"`
				Cores   int `xml:"cores,attr"`
				Threads int `xml:"threads,attr"`
			} `xml:"topology"`
		} `xml:"cpu"`
		Migration *struct{} `xml:"migration_features"`
	} `xml:"host"`
	Guests []struct {
		OSType string `xml:"os_type"`
		Arch   struct {
			Name     string   `xml:"name,attr"`
			Machines []string `xml:"machine"`
			Domains  []struct {
				Type string `xml:"type,attr"`
			} `xml:"domain"`
		} `xml:"arch"`
	} `xml:"guest"`
}

// hasDomainType tells whether the capabilities offer a domain type for a
// guest OS type (hvm, exe, xen).
func (c capsXML) hasDomainType(osType, arch, typ string) bool {
	for _, g := range c.Guests {
		if g.OSType != osType || (arch != "" && g.Arch.Name != arch) {
			continue
		}
		for _, d := range g.Arch.Domains {
			if d.Type == typ {
				return true
			}
		}
	}
	return false
}

// state returns what the driver knows of a host, discovering it first
// (capabilities, KVM probe, console directory) when it does not yet.
func (d *Driver) state(ctx context.Context, h hypervisor.Host, l *golibvirt.Libvirt, refresh bool) (hostFacts, error) {
	key := strings.TrimSpace(h.URL)
	d.mu.Lock()
	hs := d.hosts[key]
	if hs == nil {
		hs = &hostState{}
		d.hosts[key] = hs
	}
	d.mu.Unlock()
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.ready && !refresh {
		return hs.info, nil
	}
	var f hostFacts
	capsStr, err := l.ConnectGetCapabilities()
	if err != nil {
		return f, err
	}
	var caps capsXML
	if err := xmlUnmarshal(capsStr, &caps); err != nil {
		return f, err
	}
	p := domainParams{Type: d.typ, Arch: caps.Host.CPU.Arch, Machine: h.Details[DetailMachine],
		ConsoleDir: h.Details[DetailConsoleDir], VNCListen: h.Details[DetailVNCListen],
		CPUMode: h.Details[DetailCPUMode], CPUModel: h.Details[DetailCPUModel],
		OVS: strings.EqualFold(h.Details[DetailBridgeType], "openvswitch")}
	if p.ConsoleDir == "" {
		p.ConsoleDir = DefaultConsoleDir
	}
	uri, _ := l.ConnectGetUri()
	switch {
	case strings.HasPrefix(uri, "test:"):
		// libvirt's in-memory test driver, for cheap tests: its own type.
		p.DomainType = "test"
		f.probe = "test driver"
	case d.typ == hypervisor.TypeKVM:
		accel, note, err := d.decideAccel(ctx, h, l, caps)
		if err != nil {
			return f, err
		}
		f.accel, f.probe = accel, note
		p.DomainType = libvirtDomainType(d.typ, accel)
		if p.CPUMode == "" && accel {
			p.CPUMode = "host-model"
		}
	case d.typ == hypervisor.TypeLXC:
		p.DomainType = "lxc"
		f.probe = "containers"
	case d.typ == hypervisor.TypeXenProject:
		p.DomainType = "xen"
		f.accel = caps.hasDomainType("hvm", "", "xen")
		f.probe = "xen hvm in capabilities"
	}
	f.caps, f.params = caps, p
	hs.info, hs.ready = f, true
	return f, nil
}

// decideAccel chooses between KVM and TCG for a host: a detail forcing
// one, a remembered probe result, or a probe.
func (d *Driver) decideAccel(ctx context.Context, h hypervisor.Host, l *golibvirt.Libvirt, caps capsXML) (bool, string, error) {
	switch strings.ToLower(h.Details[DetailDomainType]) {
	case "kvm":
		return true, "kvm forced by host detail " + DetailDomainType, nil
	case "qemu", "tcg":
		return false, "tcg forced by host detail " + DetailDomainType, nil
	}
	if !caps.hasDomainType("hvm", caps.Host.CPU.Arch, "kvm") {
		return false, "libvirt offers no kvm domain type: tcg", nil
	}
	ver, _ := l.ConnectGetVersion()
	cacheKey := fmt.Sprintf("%s/%d", caps.Host.UUID, ver)
	if ok, found := d.cachedProbe(cacheKey); found {
		return ok, "kvm probe (remembered): " + map[bool]string{true: "kvm works", false: "kvm fails: tcg"}[ok], nil
	}
	pctx, cancel := context.WithTimeout(ctx, d.probeTimeout+15*time.Second)
	defer cancel()
	ok, note, err := probeKVM(pctx, l, d.probeTimeout)
	if err != nil {
		return false, "", fmt.Errorf("kvm acceleration probe: %w", err)
	}
	d.rememberProbe(cacheKey, ok)
	return ok, note, nil
}

// The probe's verdict is kept in the driver's data directory, so a worker
// that restarts does not probe again (the probe costs seconds when KVM
// is broken).
func (d *Driver) probeCacheFile() string {
	if d.dataDir == "" {
		return ""
	}
	return filepath.Join(d.dataDir, "kvm-probe.json")
}

var probeCacheMu sync.Mutex

func (d *Driver) cachedProbe(key string) (bool, bool) {
	f := d.probeCacheFile()
	if f == "" {
		return false, false
	}
	probeCacheMu.Lock()
	defer probeCacheMu.Unlock()
	b, err := os.ReadFile(f)
	if err != nil {
		return false, false
	}
	m := map[string]bool{}
	if json.Unmarshal(b, &m) != nil {
		return false, false
	}
	ok, found := m[key]
	return ok, found
}

func (d *Driver) rememberProbe(key string, ok bool) {
	f := d.probeCacheFile()
	if f == "" {
		return
	}
	probeCacheMu.Lock()
	defer probeCacheMu.Unlock()
	m := map[string]bool{}
	if b, err := os.ReadFile(f); err == nil {
		_ = json.Unmarshal(b, &m)
	}
	m[key] = ok
	b, _ := json.Marshal(m)
	if os.MkdirAll(filepath.Dir(f), 0o755) == nil {
		tmp := f + ".tmp"
		if os.WriteFile(tmp, b, 0o644) == nil {
			_ = os.Rename(tmp, f)
		}
	}
}

// ConnectHost connects and discovers the host: CPU, memory, versions and
// whether KVM acceleration works (probed afresh).
func (d *Driver) ConnectHost(ctx context.Context, h hypervisor.Host) (hypervisor.HostInfo, error) {
	var info hypervisor.HostInfo
	err := d.run(ctx, h, "ConnectHost", h.String(), func(ctx context.Context, l *golibvirt.Libvirt) error {
		hs, err := d.state(ctx, h, l, true)
		if err != nil {
			return err
		}
		_, mem, cpus, mhz, nodes, sockets, cores, threads, err := l.NodeGetInfo()
		if err != nil {
			return err
		}
		name, err := l.ConnectGetHostname()
		if err != nil {
			return err
		}
		hv, err := l.ConnectGetVersion()
		if err != nil {
			return err
		}
		lib, err := l.ConnectGetLibVersion()
		if err != nil {
			return err
		}
		caps := hs.caps
		cpuModel := strings.TrimSpace(caps.Host.CPU.Vendor + " " + caps.Host.CPU.Model)
		if cpuModel == "" {
			cpuModel = caps.Host.CPU.Arch
		}
		guid := caps.Host.UUID
		if guid == "" {
			guid = name
		}
		info = hypervisor.HostInfo{
			// One machine may serve KVM and LXC at once: the type keeps
			// the two hosts apart.
			GUID:              guid + "-" + d.typ,
			Name:              name,
			PrivateIP:         hostAddress(h.URL),
			CPUSockets:        int(max(nodes, 1) * max(sockets, 1)),
			CPUCores:          int(cpus), // logical CPUs, as CloudStack's KVM agent counts them
			CPUMHz:            int(mhz),
			CPUModel:          cpuModel,
			MemoryBytes:       int64(mem) * 1024,
			HypervisorVersion: versionString(hv),
			Capabilities: hypervisor.Capabilities{
				LiveMigration: d.typ != hypervisor.TypeLXC,
				LocalStorage:  true,
				VolumeHotplug: d.typ != hypervisor.TypeLXC,
				CPUHotplug:    d.typ == hypervisor.TypeKVM,
				MemoryHotplug: d.typ == hypervisor.TypeKVM,
				HardwareAccel: hs.accel,
			},
			Details: map[string]string{
				"libvirt.version":   versionString(lib),
				"libvirt.host.uuid": caps.Host.UUID,
				"domain.type":       hs.params.DomainType,
				"accel.probe":       hs.probe,
				"cpu.arch":          caps.Host.CPU.Arch,
				"cpu.topology":      fmt.Sprintf("%d nodes, %d sockets, %d cores, %d threads", nodes, sockets, cores, threads),
				DetailCPUMode:       hs.params.CPUMode,
				DetailConsoleDir:    hs.params.ConsoleDir,
			},
		}
		if info.CPUMHz <= 0 {
			info.CPUMHz = 1000 // some hosts (nested, ARM) report 0
		}
		return nil
	})
	return info, err
}

// versionString renders libvirt's major*1e6+minor*1e3+micro.
func versionString(v uint64) string {
	return fmt.Sprintf("%d.%d.%d", v/1000000, v/1000%1000, v%1000)
}

// hostAddress is the management address of a host: its URL's host, or
// this machine's first non-loopback IPv4 address for a local socket.
func hostAddress(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Hostname() != "" {
		return u.Hostname()
	}
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ip, ok := a.(*net.IPNet); ok && !ip.IP.IsLoopback() && ip.IP.To4() != nil {
				return ip.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

// CheckHost tells whether the host answers and how loaded it is.
func (d *Driver) CheckHost(ctx context.Context, h hypervisor.Host) (hypervisor.HostStats, error) {
	var st hypervisor.HostStats
	err := d.run(ctx, h, "CheckHost", h.String(), func(ctx context.Context, l *golibvirt.Libvirt) error {
		doms, _, err := l.ConnectListAllDomains(1, 0)
		if err != nil {
			return err
		}
		st.DefinedVMs = len(doms)
		for _, dom := range doms {
			state, _, mem, vcpus, _, err := l.DomainGetInfo(dom)
			if err != nil {
				if golibvirt.IsNotFound(err) {
					continue
				}
				return err
			}
			if s := stateOf(golibvirt.DomainState(state)); s == hypervisor.StateRunning || s == hypervisor.StatePaused {
				st.RunningVMs++
				st.UsedVCPUs += int(vcpus)
				st.UsedMemoryBytes += int64(mem) * 1024
			}
		}
		free, err := l.NodeGetFreeMemory()
		if err != nil {
			return err
		}
		st.FreeMemoryBytes = int64(free)
		st.CheckedAt = time.Now()
		return nil
	})
	return st, err
}

// DisconnectHost forgets what the driver learned about the host. The
// connection itself stays in the shared pool (the storage driver may be
// using it) and is closed with the pool.
func (d *Driver) DisconnectHost(ctx context.Context, h hypervisor.Host) error {
	d.mu.Lock()
	delete(d.hosts, strings.TrimSpace(h.URL))
	d.mu.Unlock()
	return nil
}

// ensureConsoleDir makes the directory serial logs go to, on the host (not
// where the worker runs): libvirt builds a transient dir pool there, which
// creates the directory, and the pool is dropped at once.
func (d *Driver) ensureConsoleDir(l *golibvirt.Libvirt, h hypervisor.Host, f hostFacts) {
	dir := f.params.ConsoleDir
	key := strings.TrimSpace(h.URL) + "\x00" + dir
	d.mu.Lock()
	done := d.consoles[key]
	d.mu.Unlock()
	if done {
		return
	}
	made := func() {
		d.mu.Lock()
		d.consoles[key] = true
		d.mu.Unlock()
	}
	name := fmt.Sprintf("nimbus-console-%08x", fnv32(dir))
	x := fmt.Sprintf("<pool type='dir'><name>%s</name><target><path>%s</path></target></pool>", name, escape(dir))
	pool, err := l.StoragePoolCreateXML(x, golibvirt.StoragePoolCreateWithBuild)
	if err == nil {
		_ = l.StoragePoolDestroy(pool)
		made()
		return
	}
	// A pool already there (another call's, or the operator's) means the
	// directory exists; anything else shows when the domain starts.
	if libvirtconn.Code(err) == int(golibvirt.ErrOperationFailed) || libvirtconn.Code(err) == int(golibvirt.ErrStoragePoolBuilt) {
		made()
	}
}

func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

func xmlUnmarshal(s string, v any) error {
	if err := xml.Unmarshal([]byte(s), v); err != nil {
		return fmt.Errorf("libvirt xml: %w", err)
	}
	return nil
}
