package sim

import (
	"fmt"
	"hash/fnv"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// Defaults of a simulated host whose URL does not say otherwise.
const (
	DefaultCores    = 16
	DefaultSockets  = 2
	DefaultMHz      = 2400
	DefaultMemoryMB = 65536
	Version         = "nimbus-sim-1"
)

// ParseHostURL reads what a simulated host reports from its URL:
//
//	sim://host-1?cpus=32&mhz=2400&memory=131072
//
// (memory in MiB). Also accepted: sockets, model, version, ip, and the
// capability switches live, local, hotplug, accel (true/false, default
// true). CloudStack's own simulator URLs (http://sim/c1/h1) work too.
// Unknown parameters are refused so that typos do not go unnoticed.
func ParseHostURL(raw string) (hypervisor.HostInfo, error) {
	bad := func(format string, args ...any) (hypervisor.HostInfo, error) {
		return hypervisor.HostInfo{}, hypervisor.NewError(hypervisor.ErrInvalid, "simulator host url %q: "+format, append([]any{raw}, args...)...)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("%v", err)
	}
	name := u.Hostname()
	switch {
	case u.Scheme == "sim" && name != "":
	case (u.Scheme == "http" || u.Scheme == "https") && name == "sim":
		name = strings.Trim(u.Path, "/")
		if name == "" {
			return bad("no host name after http://sim/")
		}
		name = strings.ReplaceAll(name, "/", "-")
	default:
		return bad("want sim://NAME?cpus=...&mhz=...&memory=MiB")
	}
	info := hypervisor.HostInfo{
		GUID:              "sim:" + name,
		Name:              name,
		CPUSockets:        DefaultSockets,
		CPUCores:          DefaultCores,
		CPUMHz:            DefaultMHz,
		CPUModel:          "Simulated CPU",
		MemoryBytes:       DefaultMemoryMB << 20,
		HypervisorVersion: Version,
		Capabilities: hypervisor.Capabilities{LiveMigration: true, LocalStorage: true,
			VolumeHotplug: true, CPUHotplug: true, MemoryHotplug: true, HardwareAccel: true},
	}
	if ip := net.ParseIP(name); ip != nil {
		info.PrivateIP = ip.String()
	} else {
		h := fnv.New32a()
		h.Write([]byte(name))
		v := h.Sum32()
		info.PrivateIP = fmt.Sprintf("10.%d.%d.%d", byte(v>>16), byte(v>>8), 1+byte(v)%254)
	}
	socketsSet := false
	for key, vals := range u.Query() {
		v := vals[len(vals)-1]
		num := func() (int64, bool) {
			n, err := strconv.ParseInt(v, 10, 64)
			return n, err == nil && n > 0
		}
		flag := func() (bool, bool) {
			b, err := strconv.ParseBool(v)
			return b, err == nil
		}
		var ok bool
		switch strings.ToLower(key) {
		case "cpus", "cores":
			var n int64
			n, ok = num()
			info.CPUCores = int(n)
		case "sockets":
			var n int64
			n, ok = num()
			info.CPUSockets, socketsSet = int(n), true
		case "mhz", "speed":
			var n int64
			n, ok = num()
			info.CPUMHz = int(n)
		case "memory":
			var n int64
			n, ok = num()
			ok = ok && n < 1<<40
			info.MemoryBytes = n << 20
		case "model":
			info.CPUModel, ok = v, v != ""
		case "version":
			info.HypervisorVersion, ok = v, v != ""
		case "ip":
			ip := net.ParseIP(v)
			ok = ip != nil
			if ok {
				info.PrivateIP = ip.String()
			}
		case "live":
			info.Capabilities.LiveMigration, ok = flag()
		case "local":
			info.Capabilities.LocalStorage, ok = flag()
		case "hotplug":
			var b bool
			b, ok = flag()
			info.Capabilities.VolumeHotplug, info.Capabilities.CPUHotplug, info.Capabilities.MemoryHotplug = b, b, b
		case "accel":
			info.Capabilities.HardwareAccel, ok = flag()
		default:
			return bad("unknown parameter %q", key)
		}
		if !ok {
			return bad("bad %s=%q", key, v)
		}
	}
	if !socketsSet {
		info.CPUSockets = min(info.CPUSockets, info.CPUCores)
	}
	if info.CPUSockets > info.CPUCores {
		return bad("%d sockets for %d cores", info.CPUSockets, info.CPUCores)
	}
	return info, nil
}

// discoverHosts expands sim://NAME?hosts=N&<host parameters> into hosts
// sim://NAME-1..NAME-N carrying the same parameters.
func discoverHosts(c hypervisor.Cluster) ([]hypervisor.Host, error) {
	bad := func(format string, args ...any) ([]hypervisor.Host, error) {
		return nil, hypervisor.NewError(hypervisor.ErrInvalid, "simulator cluster url %q: "+format, append([]any{c.URL}, args...)...)
	}
	u, err := url.Parse(c.URL)
	if err != nil || u.Scheme != "sim" || u.Hostname() == "" {
		return bad("want sim://NAME?hosts=N")
	}
	q := u.Query()
	n, err := strconv.Atoi(q.Get("hosts"))
	if err != nil || n <= 0 || n > 10000 {
		return bad("hosts=%q", q.Get("hosts"))
	}
	q.Del("hosts")
	out := make([]hypervisor.Host, n)
	for i := range out {
		hu := url.URL{Scheme: "sim", Host: fmt.Sprintf("%s-%d", u.Hostname(), i+1), RawQuery: q.Encode()}
		if _, err := ParseHostURL(hu.String()); err != nil {
			return nil, err
		}
		out[i] = hypervisor.Host{URL: hu.String(), ZoneID: c.ZoneID, PodID: c.PodID, ClusterID: c.ID}
	}
	return out, nil
}
