// Package vsphere is the VMware vSphere driver: hosts, VMs and datastores
// of a vCenter, through govmomi. A Nimbus zone maps to one vCenter
// datacenter and a Nimbus cluster to one vCenter cluster, whose ESXi hosts
// are discovered (DiscoverHosts) rather than added one by one.
//
// Everything is reached through vCenter: a cluster's URL is
// https://vcenter[:port]/<datacenter>/<cluster>, a host's the cluster's URL
// with the ESXi host's inventory name appended, a primary storage pool's
// vmfs://vcenter[:port]/<datacenter>/<datastore> (or presetup://...). An
// "http://vcenter/..." URL without a port means https, as CloudStack
// users write it; with an explicit port the scheme is taken as written.
// vCenter's certificate is verified: against the system's CAs, or the
// thumbprint or CA file the URL's query gives, or not at all when it says
// insecure=true (see tls.go).
//
// Sessions are cached per vCenter and user across the process (the
// hypervisor and storage drivers share them), kept alive while idle, and
// logged in again when vCenter answers NotAuthenticated.
//
// Long vCenter tasks report their reference through hypervisor.Tasks
// before the driver waits on them, and a retried call reattaches to the
// task an earlier attempt started instead of starting a second one.
package vsphere

import (
	"context"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

const driverName = hypervisor.TypeVMware

var _ hypervisor.Driver = (*Driver)(nil)

func init() {
	hypervisor.Register(hypervisor.TypeVMware, func(cfg hypervisor.Config) (hypervisor.Driver, error) {
		return New(cfg), nil
	})
}

// Driver is the vSphere hypervisor driver.
type Driver struct {
	hypervisor.Unsupported
	s       *sessions
	watches watchSet // the running WatchVMs, ended by Close
}

// New returns a driver. Options: "keepalive" (a Go duration) is how often
// an idle session is kept alive (default 5m).
func New(cfg hypervisor.Config) *Driver {
	return &Driver{Unsupported: hypervisor.Unsupported{DriverName: driverName}, s: acquireSessions(keepAliveOf(cfg.Options))}
}

func keepAliveOf(opts map[string]string) time.Duration {
	d, _ := time.ParseDuration(opts["keepalive"])
	return d
}

// Type is VMware.
func (d *Driver) Type() string { return hypervisor.TypeVMware }

// Close drops the driver's hold on the shared sessions; the last driver
// closed logs them out.
func (d *Driver) Close() error {
	// The watches first, while their session is still logged in: each
	// cancels its long poll in vCenter and destroys its collector.
	d.watches.stop()
	if d.s != nil {
		d.s.release()
		d.s = nil
	}
	return nil
}

// location is where a cluster or host lives in vCenter.
type location struct {
	ep         endpoint
	Datacenter string
	Cluster    string // path of the cluster under the datacenter's host folder
	Host       string // ESXi host's inventory name; "" for a cluster
}

// inventoryPath of the cluster (or of the host when set).
func (l location) inventoryPath() string {
	p := "/" + escapeName(l.Datacenter) + "/host/" + l.Cluster
	if l.Host != "" {
		p += "/" + escapeName(l.Host)
	}
	return p
}

// escapeName escapes what vCenter's inventory paths cannot hold.
func escapeName(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "%", "%25"), "/", "%2f")
}

// parseEndpoint reads the vCenter part of a URL: scheme, host and port.
func parseEndpoint(u *url.URL, user, password string) (endpoint, error) {
	if u.Host == "" {
		return endpoint{}, hypervisor.NewError(hypervisor.ErrInvalid, "url %q names no vCenter", u.Redacted())
	}
	scheme := "https"
	switch strings.ToLower(u.Scheme) {
	case "http":
		// CloudStack users write http://vcenter/...; vCenter answers on
		// https. Only an explicit port makes plain http (a simulator).
		if u.Port() != "" {
			scheme = "http"
		}
	case "https", "vmfs", "presetup", "":
	default:
		return endpoint{}, hypervisor.NewError(hypervisor.ErrInvalid, "url %q: want https://vcenter/...", u.Redacted())
	}
	if u.User != nil {
		if user == "" {
			user = u.User.Username()
		}
		if pw, ok := u.User.Password(); ok && password == "" {
			password = pw
		}
	}
	if user == "" {
		return endpoint{}, hypervisor.NewError(hypervisor.ErrInvalid, "vCenter %s: no user name", u.Host)
	}
	tr, err := parseTrust(u)
	if err != nil {
		return endpoint{}, err
	}
	return endpoint{URL: &url.URL{Scheme: scheme, Host: u.Host, Path: "/sdk"}, Username: user, Password: password, trust: tr}, nil
}

// parseLocation reads a cluster URL (host=false: /<dc>/<cluster...>) or a
// host URL (host=true: /<dc>/<cluster...>/<host>).
func parseLocation(raw, user, password string, host bool) (location, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return location{}, hypervisor.NewError(hypervisor.ErrInvalid, "url %q: %v", raw, err)
	}
	ep, err := parseEndpoint(u, user, password)
	if err != nil {
		return location{}, err
	}
	var parts []string
	for _, p := range strings.Split(strings.Trim(u.EscapedPath(), "/"), "/") {
		if p == "" {
			continue
		}
		s, err := url.PathUnescape(p)
		if err != nil {
			return location{}, hypervisor.NewError(hypervisor.ErrInvalid, "url %q: %v", raw, err)
		}
		parts = append(parts, s)
	}
	want := 2
	if host {
		want = 3
	}
	if len(parts) < want {
		if host {
			return location{}, hypervisor.NewError(hypervisor.ErrInvalid, "url %q: a vSphere host is https://vcenter/<datacenter>/<cluster>/<host>", u.Redacted())
		}
		return location{}, hypervisor.NewError(hypervisor.ErrInvalid, "url %q: a vSphere cluster is https://vcenter/<datacenter>/<cluster>", u.Redacted())
	}
	l := location{ep: ep, Datacenter: parts[0]}
	cl := parts[1:]
	if host {
		l.Host = parts[len(parts)-1]
		cl = parts[1 : len(parts)-1]
	}
	esc := make([]string, len(cl))
	for i, p := range cl {
		esc[i] = escapeName(p)
	}
	l.Cluster = strings.Join(esc, "/")
	return l, nil
}

// HostURL is the URL of an ESXi host of a cluster: the cluster's URL with
// the host's name appended to its path (its query, how vCenter's
// certificate is trusted, kept).
func HostURL(clusterURL, hostName string) string {
	base, query, ok := strings.Cut(clusterURL, "?")
	u := strings.TrimRight(base, "/") + "/" + url.PathEscape(hostName)
	if ok {
		u += "?" + query
	}
	return u
}

// conn returns the session of a location's vCenter.
func (d *Driver) conn(ctx context.Context, ep endpoint) (*conn, error) {
	if d.s == nil {
		return nil, hypervisor.NewError(hypervisor.ErrInvalid, "vsphere driver closed")
	}
	return d.s.get(ctx, ep)
}

// find returns the object at an inventory path, remembered per session.
func (c *conn) find(ctx context.Context, path, what string) (types.ManagedObjectReference, error) {
	if r, ok := c.cache.get("path:" + path); ok {
		return r, nil
	}
	ref, err := object.NewSearchIndex(c.client()).FindByInventoryPath(ctx, path)
	if err != nil {
		return types.ManagedObjectReference{}, classify("find", path, err)
	}
	if ref == nil {
		return types.ManagedObjectReference{}, hypervisor.Errorf(driverName, "find", path, hypervisor.ErrNotFound, "no %s at %s in vCenter %s", what, path, c.ep.URL.Host)
	}
	c.cache.put("path:"+path, ref.Reference())
	return ref.Reference(), nil
}

// datacenter returns a datacenter by name.
func (c *conn) datacenter(ctx context.Context, name string) (*object.Datacenter, error) {
	ref, err := c.find(ctx, "/"+escapeName(name), "datacenter")
	if err != nil {
		return nil, err
	}
	if ref.Type != "Datacenter" {
		return nil, hypervisor.Errorf(driverName, "find", name, hypervisor.ErrInvalid, "%s is a %s, not a datacenter", name, ref.Type)
	}
	return object.NewDatacenter(c.client(), ref), nil
}

// hostTarget is an ESXi host resolved: its datacenter, itself and the root
// resource pool of its cluster.
type hostTarget struct {
	c    *conn
	loc  location
	dc   *object.Datacenter
	host types.ManagedObjectReference
	pool types.ManagedObjectReference
}

// host resolves a Nimbus host to its ESXi host.
func (d *Driver) host(ctx context.Context, h hypervisor.Host) (*hostTarget, error) {
	loc, err := parseLocation(h.URL, h.Username, h.Password, true)
	if err != nil {
		return nil, err
	}
	c, err := d.conn(ctx, loc.ep)
	if err != nil {
		return nil, err
	}
	dc, err := c.datacenter(ctx, loc.Datacenter)
	if err != nil {
		return nil, err
	}
	ref, err := c.find(ctx, loc.inventoryPath(), "ESXi host")
	if err != nil {
		return nil, err
	}
	if ref.Type != "HostSystem" {
		return nil, hypervisor.Errorf(driverName, "find", loc.inventoryPath(), hypervisor.ErrInvalid, "%s is a %s, not an ESXi host", loc.Host, ref.Type)
	}
	t := &hostTarget{c: c, loc: loc, dc: dc, host: ref}
	if p, ok := c.cache.get("pool:" + ref.Value); ok {
		t.pool = p
		return t, nil
	}
	// The root resource pool of the host's cluster (or standalone compute
	// resource): one call for the parent, one for its pool.
	var hs mo.HostSystem
	pc := property.DefaultCollector(c.client())
	if err := pc.RetrieveOne(ctx, ref, []string{"parent"}, &hs); err != nil {
		return nil, classify("find", loc.Host, err)
	}
	var cr mo.ComputeResource
	if err := pc.RetrieveOne(ctx, *hs.Parent, []string{"resourcePool"}, &cr); err != nil {
		return nil, classify("find", loc.Host, err)
	}
	if cr.ResourcePool == nil {
		return nil, hypervisor.Errorf(driverName, "find", loc.Host, hypervisor.ErrInvalid, "the cluster of %s has no resource pool", loc.Host)
	}
	t.pool = *cr.ResourcePool
	c.cache.put("pool:"+ref.Value, t.pool)
	return t, nil
}

// guid is a host's stable identity: the vCenter's instance UUID and the
// host's managed object id.
func (c *conn) guid(ref types.ManagedObjectReference) string {
	id := c.about.InstanceUuid
	if id == "" {
		id = c.ep.URL.Host
	}
	return id + ":" + ref.Value
}

// ---- hosts ----

// DiscoverHosts lists the ESXi hosts of a vCenter cluster.
func (d *Driver) DiscoverHosts(ctx context.Context, cl hypervisor.Cluster) ([]hypervisor.Host, error) {
	loc, err := parseLocation(cl.URL, cl.Username, cl.Password, false)
	if err != nil {
		return nil, err
	}
	c, err := d.conn(ctx, loc.ep)
	if err != nil {
		return nil, err
	}
	if _, err := c.datacenter(ctx, loc.Datacenter); err != nil {
		return nil, err
	}
	ref, err := c.find(ctx, loc.inventoryPath(), "cluster")
	if err != nil {
		return nil, err
	}
	if ref.Type != "ClusterComputeResource" && ref.Type != "ComputeResource" {
		return nil, hypervisor.Errorf(driverName, "DiscoverHosts", cl.URL, hypervisor.ErrInvalid, "%s is a %s, not a cluster", loc.Cluster, ref.Type)
	}
	pc := property.DefaultCollector(c.client())
	var cr mo.ComputeResource
	if err := pc.RetrieveOne(ctx, ref, []string{"host"}, &cr); err != nil {
		return nil, classify("DiscoverHosts", cl.URL, err)
	}
	if len(cr.Host) == 0 {
		return nil, nil
	}
	var hosts []mo.HostSystem
	if err := pc.Retrieve(ctx, cr.Host, []string{"name"}, &hosts); err != nil {
		return nil, classify("DiscoverHosts", cl.URL, err)
	}
	out := make([]hypervisor.Host, 0, len(hosts))
	for _, h := range hosts {
		out = append(out, hypervisor.Host{
			URL: HostURL(cl.URL, h.Name), Username: cl.Username, Password: cl.Password,
			ZoneID: cl.ZoneID, PodID: cl.PodID, ClusterID: cl.ID,
		})
	}
	return out, nil
}

var hostProps = []string{"name", "summary.hardware", "summary.config.product", "runtime.connectionState",
	"runtime.inMaintenanceMode", "config.network.vnic", "capability.vmotionSupported"}

// ConnectHost reads an ESXi host's CPU, memory and version through vCenter.
func (d *Driver) ConnectHost(ctx context.Context, h hypervisor.Host) (hypervisor.HostInfo, error) {
	t, err := d.host(ctx, h)
	if err != nil {
		return hypervisor.HostInfo{}, err
	}
	var hs mo.HostSystem
	if err := property.DefaultCollector(t.c.client()).RetrieveOne(ctx, t.host, hostProps, &hs); err != nil {
		return hypervisor.HostInfo{}, classify("ConnectHost", t.loc.Host, err)
	}
	if hs.Runtime.ConnectionState != types.HostSystemConnectionStateConnected {
		return hypervisor.HostInfo{}, hypervisor.Errorf(driverName, "ConnectHost", t.loc.Host, hypervisor.ErrUnreachable,
			"vCenter reports the host %s", hs.Runtime.ConnectionState)
	}
	hw := hs.Summary.Hardware
	if hw == nil {
		return hypervisor.HostInfo{}, hypervisor.Errorf(driverName, "ConnectHost", t.loc.Host, hypervisor.ErrUnreachable, "vCenter has no hardware summary of the host yet")
	}
	info := hypervisor.HostInfo{
		GUID: t.c.guid(t.host), Name: hs.Name,
		CPUSockets: int(hw.NumCpuPkgs), CPUCores: int(hw.NumCpuCores), CPUMHz: int(hw.CpuMhz), CPUModel: hw.CpuModel,
		MemoryBytes: hw.MemorySize,
		Capabilities: hypervisor.Capabilities{
			LiveMigration: hs.Capability == nil || hs.Capability.VmotionSupported,
			VolumeHotplug: true, CPUHotplug: true, MemoryHotplug: true, HardwareAccel: true,
		},
		Details: map[string]string{"vsphere.host": t.host.Value, "vsphere.datacenter": t.loc.Datacenter},
	}
	if p := hs.Summary.Config.Product; p != nil {
		info.HypervisorVersion = p.Version
		info.Details["product"] = p.FullName
	}
	if hs.Config != nil && hs.Config.Network != nil {
		for _, v := range hs.Config.Network.Vnic {
			if v.Spec.Ip != nil && v.Spec.Ip.IpAddress != "" {
				info.PrivateIP = v.Spec.Ip.IpAddress
				break
			}
		}
	}
	if info.PrivateIP == "" {
		if ip := net.ParseIP(hs.Name); ip != nil {
			info.PrivateIP = ip.String()
		}
	}
	return info, nil
}

// CheckHost tells whether vCenter has the host connected and what runs on
// it.
func (d *Driver) CheckHost(ctx context.Context, h hypervisor.Host) (hypervisor.HostStats, error) {
	t, err := d.host(ctx, h)
	if err != nil {
		return hypervisor.HostStats{}, err
	}
	var hs mo.HostSystem
	if err := property.DefaultCollector(t.c.client()).RetrieveOne(ctx, t.host, []string{"runtime", "summary.quickStats", "summary.hardware"}, &hs); err != nil {
		return hypervisor.HostStats{}, classify("CheckHost", t.loc.Host, err)
	}
	if hs.Runtime.ConnectionState != types.HostSystemConnectionStateConnected {
		return hypervisor.HostStats{}, hypervisor.Errorf(driverName, "CheckHost", t.loc.Host, hypervisor.ErrUnreachable,
			"vCenter reports the host %s", hs.Runtime.ConnectionState)
	}
	st := hypervisor.HostStats{CheckedAt: time.Now()}
	qs := hs.Summary.QuickStats
	if hw := hs.Summary.Hardware; hw != nil {
		st.FreeMemoryBytes = hw.MemorySize - int64(qs.OverallMemoryUsage)<<20
		if total := int64(hw.NumCpuCores) * int64(hw.CpuMhz); total > 0 {
			st.CPUUtilization = float64(qs.OverallCpuUsage) / float64(total)
		}
	}
	st.HypervisorUptime = time.Duration(qs.Uptime) * time.Second
	vms, err := t.hostVMs(ctx, []string{"runtime.powerState", "config.hardware.numCPU", "config.hardware.memoryMB"})
	if err != nil {
		return st, classify("CheckHost", t.loc.Host, err)
	}
	for _, vm := range vms {
		st.DefinedVMs++
		if vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn && vm.Config != nil {
			st.RunningVMs++
			st.UsedVCPUs += int(vm.Config.Hardware.NumCPU)
			st.UsedMemoryBytes += int64(vm.Config.Hardware.MemoryMB) << 20
		}
	}
	return st, nil
}

// DisconnectHost has nothing to release: sessions belong to the vCenter,
// which other hosts share.
func (d *Driver) DisconnectHost(context.Context, hypervisor.Host) error { return nil }
