package api

import (
	"context"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	libvirtdrv "github.com/nimbus-cloud/nimbus/infra/hypervisor/libvirt"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/workflows"
)

// addHostTimeout bounds how long addHost waits for its job; the job goes on
// after it and can be followed with queryAsyncJobResult.
const addHostTimeout = 5 * time.Minute

func init() {
	hostID := []Param{{Name: "id", Type: TUUID, Required: true, Description: "the ID of the host"}}
	Register(
		&Command{
			Name: "addHost", Description: "Adds a host: connects it through its hypervisor driver, discovers its CPU and memory and brings it Up", Access: AccessRootAdmin,
			Params: []Param{
				{Name: "zoneid", Type: TUUID, Required: true, Description: "the zone of the host"},
				{Name: "podid", Type: TUUID, Required: true, Description: "the pod of the host"},
				{Name: "clusterid", Type: TUUID, Description: "the cluster of the host"},
				{Name: "clustername", Type: TString, Description: "the cluster of the host by name (created when missing)"},
				{Name: "hypervisor", Type: TString, Required: true, Description: "the hypervisor type: that of the cluster"},
				{Name: "url", Type: TString, Required: true, Length: 2048, Description: "the host's URL, e.g. qemu:///system, qemu+tcp://10.0.0.5/system, qemu+ssh://10.0.0.5/system, qemu+tls://kvm1/system or http://10.0.0.5 (= qemu+ssh with username and password) for KVM; lxc:/// (LXC); xen:/// (XenProject); sim://host-1?cpus=32&mhz=2400&memory=131072 (Simulator)"},
				{Name: "username", Type: TString, Description: "the user the driver logs in as"},
				{Name: "password", Type: TString, Description: "its password; stored encrypted"},
				{Name: "hosttags", Type: TList, Of: TString, Description: "tags of the host, for offerings with host tags"},
				{Name: "allocationstate", Type: TString, Description: "Enabled (default) or Disabled"},
				{Name: "cpunumber", Type: TInteger, Description: "BareMetal: the machine's CPU cores (over what its BMC reports)"},
				{Name: "cpuspeed", Type: TInteger, Description: "BareMetal: the speed of one core in MHz"},
				{Name: "memory", Type: TInteger, Description: "BareMetal: the machine's memory in MiB"},
				{Name: "hostmac", Type: TString, Description: "BareMetal: the MAC address the machine PXE-boots from"},
			},
			ResponseName: "host", Response: hostFields, Handler: addHost,
		},
		&Command{
			Name: "listHosts", Description: "Lists hosts", Access: AccessRootAdmin,
			Params: append(ListParams(),
				Param{Name: "id", Type: TUUID, Description: "the ID of the host"},
				Param{Name: "name", Type: TString, Description: "the name of the host"},
				Param{Name: "zoneid", Type: TUUID, Description: "hosts of this zone"},
				Param{Name: "podid", Type: TUUID, Description: "hosts of this pod"},
				Param{Name: "clusterid", Type: TUUID, Description: "hosts of this cluster"},
				Param{Name: "type", Type: TString, Description: "the host type: Routing, SecondaryStorage..."},
				Param{Name: "state", Type: TString, Description: "Up, Down, Disconnected, Alert, Connecting..."},
				Param{Name: "resourcestate", Type: TString, Description: "Enabled, Disabled, PrepareForMaintenance, Maintenance..."},
				Param{Name: "hypervisor", Type: TString, Description: "hosts of this hypervisor type"},
				Param{Name: "virtualmachineid", Type: TUUID, Description: "the host this VM runs on"},
				Param{Name: "hahost", Type: TBoolean, Description: "hosts dedicated to HA (none in Nimbus)"},
				Param{Name: "details", Type: TList, Of: TString, Description: "accepted for compatibility: every detail is returned"},
				Param{Name: "outofbandmanagementenabled", Type: TBoolean, Description: "hosts whose out-of-band management is (not) enabled"},
				Param{Name: "outofbandmanagementpowerstate", Type: TString, Description: "hosts whose BMC last reported this power state: On, Off, Unknown, Disabled"},
			),
			ResponseName: "host", Response: hostFields, Handler: listHosts,
		},
		&Command{
			Name: "updateHost", Description: "Updates a host: tags, allocation state, name", Access: AccessRootAdmin,
			Params: append(append([]Param{}, hostID...),
				Param{Name: "allocationstate", Type: TString, Description: "Enable or Disable"},
				Param{Name: "hosttags", Type: TList, Of: TString, Description: "the host's tags (replace the current ones)"},
				Param{Name: "istagarule", Type: TBoolean, Description: "tag rules are not supported; false"},
				Param{Name: "name", Type: TString, Description: "the new name"},
				Param{Name: "annotation", Type: TString, Description: "not supported yet"},
				Param{Name: "oscategoryid", Type: TUUID, Description: "not supported yet"},
				Param{Name: "url", Type: TString, Length: 2048, Description: "the new URL, used at the next reconnect"},
			),
			ResponseName: "host", Response: hostFields, Handler: updateHost,
		},
		&Command{
			Name: "reconnectHost", Description: "Reconnects a host and refreshes what its driver reports", Access: AccessRootAdmin, Async: true,
			Params: hostID, ResponseName: "host", Response: hostFields, Handler: reconnectHost,
		},
		&Command{
			Name: "deleteHost", Description: "Deletes a host in maintenance or disconnected (or any host with forced=true)", Access: AccessRootAdmin,
			Params: append(append([]Param{}, hostID...),
				Param{Name: "forced", Type: TBoolean, Description: "delete even if the host is Up or still has VMs (they are marked Stopped)"},
				Param{Name: "forcedestroylocalstorage", Type: TBoolean, Description: "delete the host's local storage even if volumes are on it"},
			),
			ResponseName: "success", Response: successFields, Handler: deleteHost,
		},
		&Command{
			Name: "prepareHostForMaintenance", Description: "Moves a host's VMs away and puts it in maintenance", Access: AccessRootAdmin, Async: true,
			Params: hostID, ResponseName: "host", Response: hostFields, Handler: prepareHostForMaintenance,
		},
		&Command{
			Name: "cancelHostMaintenance", Description: "Takes a host out of maintenance", Access: AccessRootAdmin, Async: true,
			Params: hostID, ResponseName: "host", Response: hostFields, Handler: cancelHostMaintenance,
		},
	)
	RegisterRenderer("Host", func(ctx context.Context, s *Server, id string) (any, error) {
		return s.hostView(ctx, id)
	})
}

var hostFields = []Field{
	{"id", "string", "the ID of the host"}, {"name", "string", "the name"},
	{"state", "string", "the connection state: Up, Connecting, Alert, Disconnected..."},
	{"resourcestate", "string", "Enabled, Disabled, PrepareForMaintenance, Maintenance..."},
	{"type", "string", "Routing for hypervisor hosts"}, {"hypervisor", "string", "the hypervisor type"},
	{"hypervisorversion", "string", "the hypervisor's version"}, {"ipaddress", "string", "the management address"},
	{"zoneid", "string", "the zone"}, {"zonename", "string", "its name"},
	{"podid", "string", "the pod"}, {"podname", "string", "its name"},
	{"clusterid", "string", "the cluster"}, {"clustername", "string", "its name"}, {"clustertype", "string", "its type"},
	{"cpunumber", "integer", "CPU cores"}, {"cpusockets", "integer", "CPU sockets"}, {"cpuspeed", "long", "MHz per core"},
	{"cpuallocated", "string", "CPU allocated to VMs, in percent"}, {"cpuallocatedvalue", "long", "CPU allocated, MHz"},
	{"cpuused", "string", "CPU used by running VMs, in percent"},
	{"memorytotal", "long", "memory, bytes"}, {"memoryallocated", "long", "memory allocated to VMs, bytes"},
	{"memoryused", "long", "memory used by running VMs, bytes"},
	{"hosttags", "string", "comma-separated tags"}, {"capabilities", "string", "what the host can do"},
	{"version", "string", "the Nimbus version managing it"}, {"events", "string", "the events the host's state machine takes"},
	{"created", "date", "when it was added"}, {"disconnected", "date", "when it last lost its connection"},
	{"lastpinged", "date", "when it last answered"}, {"details", "map", "statereason: why it is Alert or Disconnected"},
	{"outofbandmanagement", "object", "its BMC for out-of-band management: enabled, powerstate, driver, address, port, username"},
}

// HostView is a host as listHosts shows it (the SDK's Host).
type HostView struct {
	ID                               string            `json:"id"`
	Name                             string            `json:"name"`
	State                            string            `json:"state"`
	ResourceState                    string            `json:"resourcestate"`
	Type                             string            `json:"type"`
	Hypervisor                       string            `json:"hypervisor"`
	HypervisorVersion                string            `json:"hypervisorversion,omitempty"`
	IPAddress                        string            `json:"ipaddress"`
	ZoneID                           string            `json:"zoneid"`
	ZoneName                         string            `json:"zonename"`
	PodID                            string            `json:"podid,omitempty"`
	PodName                          string            `json:"podname,omitempty"`
	ClusterID                        string            `json:"clusterid,omitempty"`
	ClusterName                      string            `json:"clustername,omitempty"`
	ClusterType                      string            `json:"clustertype,omitempty"`
	CPUNumber                        int               `json:"cpunumber"`
	CPUSockets                       int               `json:"cpusockets"`
	CPUSpeed                         int64             `json:"cpuspeed"`
	CPUAllocated                     string            `json:"cpuallocated"`
	CPUAllocatedValue                int64             `json:"cpuallocatedvalue"`
	CPUAllocatedPercentage           string            `json:"cpuallocatedpercentage"`
	CPUAllocatedWithOverprovisioning string            `json:"cpuallocatedwithoverprovisioning"`
	CPUWithOverprovisioning          string            `json:"cpuwithoverprovisioning"`
	CPUUsed                          string            `json:"cpuused"`
	CPULoadAverage                   float64           `json:"cpuloadaverage"`
	MemoryTotal                      int64             `json:"memorytotal"`
	MemoryAllocated                  int64             `json:"memoryallocated"`
	MemoryAllocatedBytes             int64             `json:"memoryallocatedbytes"`
	MemoryAllocatedPercentage        string            `json:"memoryallocatedpercentage"`
	MemoryWithOverprovisioning       string            `json:"memorywithoverprovisioning"`
	MemoryUsed                       int64             `json:"memoryused"`
	HostTags                         string            `json:"hosttags,omitempty"`
	IsTagARule                       bool              `json:"istagarule"`
	Capabilities                     string            `json:"capabilities,omitempty"`
	Version                          string            `json:"version"`
	Events                           string            `json:"events"`
	Created                          string            `json:"created"`
	Disconnected                     string            `json:"disconnected,omitempty"`
	LastPinged                       string            `json:"lastpinged,omitempty"`
	Removed                          string            `json:"removed,omitempty"`
	IsLocalStorageActive             bool              `json:"islocalstorageactive"`
	HAHost                           bool              `json:"hahost"`
	HasEnoughCapacity                bool              `json:"hasenoughcapacity"`
	SuitableForMigration             bool              `json:"suitableformigration"`
	EncryptionSupported              bool              `json:"encryptionsupported"`
	UEFICapability                   bool              `json:"ueficapability"`
	HasAnnotations                   bool              `json:"hasannotations"`
	Details                          map[string]string `json:"details,omitempty"`
	OutOfBandManagement              OOBMView          `json:"outofbandmanagement"`
}

// hostEvents are the events of a host's state machine, as CloudStack lists
// them.
const hostEvents = "AgentConnected; AgentDisconnected; HostDown; Ping; PingTimeout; PrepareForMaintenance; CancelMaintenance; Remove; ManagementServerDown; ShutdownRequested"

// hostRow is a host with the names of its cluster, pod and zone, read in
// one query.
type hostRow struct {
	models.Host `bun:",extend"`
	ClusterUUID string  `bun:"cluster_uuid"`
	ClusterName string  `bun:"cluster_name"`
	ClusterType string  `bun:"cluster_type"`
	CPURatio    float64 `bun:"cpu_ratio"`
	MemRatio    float64 `bun:"mem_ratio"`
	PodUUID     string  `bun:"pod_uuid"`
	PodName     string  `bun:"pod_name"`
	ZoneUUID    string  `bun:"zone_uuid"`
	ZoneName    string  `bun:"zone_name"`
}

func selectHosts(db bun.IDB, rows *[]hostRow) *bun.SelectQuery {
	return db.NewSelect().Model(rows).
		// The columns the view shows, not host.*: a page of 500 scans faster.
		ColumnExpr("host.id, host.uuid, host.name, host.type, host.state, host.resource_state, host.state_reason").
		ColumnExpr("host.hypervisor_type, host.hypervisor_version, host.private_ip_address, host.cpu_sockets, host.cpus").
		ColumnExpr("host.speed, host.ram, host.cpu_allocated, host.mem_allocated, host.capabilities").
		ColumnExpr("host.created, host.disconnected, host.last_ping, host.removed").
		ColumnExpr("c.uuid AS cluster_uuid, c.name AS cluster_name, c.cluster_type AS cluster_type").
		ColumnExpr("COALESCE(c.cpu_overcommit_ratio, 1) AS cpu_ratio, COALESCE(c.mem_overcommit_ratio, 1) AS mem_ratio").
		ColumnExpr("p.uuid AS pod_uuid, p.name AS pod_name, z.uuid AS zone_uuid, z.name AS zone_name").
		Join("LEFT JOIN clusters AS c ON c.id = host.cluster_id").
		Join("LEFT JOIN pods AS p ON p.id = host.pod_id").
		Join("LEFT JOIN zones AS z ON z.id = host.zone_id")
}

// pct formats a share as CloudStack does in host responses ("12.5%").
func pct(part, whole float64) string {
	if whole <= 0 {
		return "0%"
	}
	return strconv.FormatFloat(math.Round(part*10000/whole)/100, 'f', -1, 64) + "%"
}

// hostViews renders a page of hosts with two more queries whatever its
// size: the tags, and what running VMs use.
func (s *Server) hostViews(ctx context.Context, rows []hostRow) ([]HostView, error) {
	views := make([]HostView, len(rows))
	if len(rows) == 0 {
		return views, nil
	}
	ids := make([]int64, len(rows))
	at := make(map[int64]int, len(rows))
	for i, r := range rows {
		ids[i], at[r.ID] = r.ID, i
	}
	var tags []models.HostTag
	if err := s.DB.NewSelect().Model(&tags).Column("host_id", "tag").Where("host_id IN (?)", bun.In(ids)).Order("id").Scan(ctx); err != nil {
		return nil, err
	}
	tagsOf := make(map[int64][]string, len(rows))
	for _, t := range tags {
		tagsOf[t.HostID] = append(tagsOf[t.HostID], t.Tag)
	}
	var usage []struct {
		HostID int64 `bun:"host_id"`
		MHz    int64 `bun:"mhz"`
		MB     int64 `bun:"mb"`
	}
	if err := s.DB.NewSelect().Model((*models.VMInstance)(nil)).
		ColumnExpr("host_id, SUM(cpu * speed) AS mhz, SUM(ram_size) AS mb").
		Where("host_id IN (?) AND state = ?", bun.In(ids), models.VMRunning).
		GroupExpr("host_id").Scan(ctx, &usage); err != nil {
		return nil, err
	}
	oobm, err := s.oobmViews(ctx, s.DB, ids)
	if err != nil {
		return nil, err
	}
	for i := range rows {
		views[i] = hostViewOf(&rows[i], tagsOf[rows[i].ID])
		views[i].OutOfBandManagement = oobmViewOf("", oobm[rows[i].ID])
	}
	for _, u := range usage {
		v := &views[at[u.HostID]]
		total := float64(v.CPUNumber) * float64(v.CPUSpeed)
		v.CPUUsed = pct(float64(u.MHz), total)
		v.MemoryUsed = u.MB << 20
	}
	return views, nil
}

func hostViewOf(r *hostRow, tags []string) HostView {
	h := &r.Host
	totalMHz := float64(h.CPUs) * float64(h.Speed)
	withOver := totalMHz * r.CPURatio
	memOver := float64(h.RAM) * r.MemRatio
	v := HostView{
		ID: h.UUID, Name: h.Name, State: h.State, ResourceState: h.ResourceState, Type: h.Type,
		Hypervisor: h.HypervisorType, HypervisorVersion: h.HypervisorVersion, IPAddress: h.PrivateIPAddress,
		ZoneID: r.ZoneUUID, ZoneName: r.ZoneName, PodID: r.PodUUID, PodName: r.PodName,
		ClusterID: r.ClusterUUID, ClusterName: r.ClusterName, ClusterType: r.ClusterType,
		CPUNumber: h.CPUs, CPUSockets: h.CPUSockets, CPUSpeed: int64(h.Speed),
		CPUAllocated: pct(float64(h.CPUAllocated), withOver), CPUAllocatedValue: h.CPUAllocated,
		CPUAllocatedPercentage:           pct(float64(h.CPUAllocated), withOver),
		CPUAllocatedWithOverprovisioning: pct(float64(h.CPUAllocated), withOver),
		CPUWithOverprovisioning:          strconv.FormatFloat(withOver, 'f', -1, 64),
		CPUUsed:                          "0%",
		MemoryTotal:                      h.RAM, MemoryAllocated: h.MemAllocated, MemoryAllocatedBytes: h.MemAllocated,
		MemoryAllocatedPercentage:  pct(float64(h.MemAllocated), memOver),
		MemoryWithOverprovisioning: strconv.FormatFloat(memOver, 'f', -1, 64),
		HostTags:                   strings.Join(tags, ","), Capabilities: h.Capabilities,
		Version: Version, Events: hostEvents,
		Created: FormatTime(h.Created), Disconnected: FormatTime(h.Disconnected), LastPinged: FormatTime(h.LastPing),
		Removed:              FormatTime(h.Removed),
		IsLocalStorageActive: strings.Contains(h.Capabilities, "local-storage"),
		HasEnoughCapacity:    h.State == models.HostUp && h.ResourceState == models.ResourceEnabled,
		SuitableForMigration: h.State == models.HostUp && h.ResourceState == models.ResourceEnabled,
	}
	if h.StateReason != "" {
		v.Details = map[string]string{"statereason": h.StateReason}
	}
	return v
}

func (s *Server) hostView(ctx context.Context, id string) (HostView, error) {
	var rows []hostRow
	if err := selectHosts(s.DB, &rows).Where("host.uuid = ?", id).Scan(ctx); err != nil {
		return HostView{}, err
	}
	if len(rows) == 0 {
		return HostView{}, cserr.Param("Unable to find host by id %s", id)
	}
	views, err := s.hostViews(ctx, rows)
	if err != nil {
		return HostView{}, err
	}
	return views[0], nil
}

// hostByUUID loads a live host or answers 431.
func (c *Call) hostByUUID(id string) (*models.Host, error) {
	var h models.Host
	if err := c.S.DB.NewSelect().Model(&h).Where("uuid = ?", id).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, cserr.Param("Unable to find host by id %s", id)
		}
		return nil, err
	}
	return &h, nil
}

// checkHostURL refuses, before any job starts, a URL the host's driver
// cannot use. libvirt hosts take libvirt URLs of their own driver (or
// CloudStack's http://address, meaning SSH to the host).
func checkHostURL(hv, rawURL string) error {
	switch hv {
	case hypervisor.TypeKVM, hypervisor.TypeLXC, hypervisor.TypeXenProject:
		if _, err := libvirtdrv.HostURL(hv, rawURL); err != nil {
			return cserr.Param("url: %s", err.Error())
		}
	}
	return nil
}

func addHost(c *Call) (any, error) {
	z, err := c.zoneByUUID(c.Str("zoneid"))
	if err != nil {
		return nil, err
	}
	p, err := c.podOfZone(c.Str("podid"), z)
	if err != nil {
		return nil, err
	}
	hv, err := hypervisor.Canonical(c.Str("hypervisor"))
	if err != nil {
		return nil, cserr.Param("%s", err.Error())
	}
	var cl *models.Cluster
	switch {
	case c.Has("clusterid"):
		if cl, err = c.clusterByUUID(c.Str("clusterid")); err != nil {
			return nil, err
		}
		if cl.PodID != p.ID {
			return nil, cserr.Param("Cluster %s is not in pod %s", cl.Name, p.Name)
		}
	case c.Has("clustername"):
		if cl, err = c.clusterOfPod(p, c.Str("clustername"), hv); err != nil {
			return nil, err
		}
	default:
		return nil, cserr.Param("Unable to execute API command addhost due to missing parameter clusterid (or clustername)")
	}
	if cl.HypervisorType != hv {
		return nil, cserr.Param("Cluster %s holds %s hosts; a cluster holds one hypervisor type, so a %s host cannot join it", cl.Name, cl.HypervisorType, hv)
	}
	if _, err := hypervisorType(hv); err != nil {
		return nil, err
	}
	rs := models.ResourceEnabled
	if alloc, err := allocationState(c); err != nil {
		return nil, err
	} else if alloc == models.AllocationDisabled {
		rs = models.ResourceDisabled
	}
	rawURL := strings.TrimSpace(c.Str("url"))
	if err := checkHostURL(hv, rawURL); err != nil {
		return nil, err
	}
	// A host of the same URL in the cluster: one that is Up was added
	// already; one left by an earlier failed add is taken over, so retrying
	// addHost never makes a second row.
	hostUUID := models.NewUUID()
	var prev models.Host
	err = c.S.DB.NewSelect().Model(&prev).Where("cluster_id = ? AND url = ?", cl.ID, rawURL).Limit(1).Scan(c.Ctx)
	switch {
	case err == nil && prev.State == models.HostUp:
		return nil, cserr.Param("A host with URL %s already exists in cluster %s (host %s)", rawURL, cl.Name, prev.Name)
	case err == nil:
		hostUUID = prev.UUID
	case !isNoRows(err):
		return nil, err
	}
	sealed, username := "", c.Str("username")
	if pw := c.Str("password"); pw != "" {
		if sealed, err = c.S.Secrets.Encrypt(pw); err != nil {
			return nil, err
		}
	}
	if hv == hypervisor.TypeVMware && cl.URL != "" && !strings.HasPrefix(rawURL, strings.TrimRight(cl.URL, "/")+"/") {
		// An ESXi host of a vSphere cluster is reached through its vCenter,
		// as the cluster's discovery adds it: http://esxi-name becomes the
		// cluster's URL with the host's name, with the vCenter's login (not
		// the host's own: Nimbus never logs in to ESXi).
		if rawURL, username, sealed, err = c.vmwareHostOf(cl, rawURL); err != nil {
			return nil, err
		}
		if err := c.S.DB.NewSelect().Model(&prev).Where("cluster_id = ? AND url = ?", cl.ID, rawURL).Limit(1).Scan(c.Ctx); err == nil {
			if prev.State == models.HostUp {
				return nil, cserr.Param("A host with URL %s already exists in cluster %s (host %s)", rawURL, cl.Name, prev.Name)
			}
			hostUUID = prev.UUID
		}
	}
	in := workflows.AddHostInput{
		HostUUID: hostUUID, ClusterUUID: cl.UUID, Hypervisor: hv, URL: rawURL,
		Username: username, PasswordSealed: sealed, HostTags: c.List("hosttags"),
		ResourceState: rs, Actor: actorOf(c.Caller),
	}
	// BareMetal machines: the shape and boot NIC CloudStack's BareMetal
	// addHost takes, kept as host details the driver reads.
	for _, p := range []string{"cpunumber", "cpuspeed", "memory", "hostmac"} {
		if !c.Has(p) {
			continue
		}
		if hv != hypervisor.TypeBareMetal {
			return nil, cserr.Param("parameter %s is for BareMetal hosts", p)
		}
		v := strings.TrimSpace(c.Str(p))
		if p == "hostmac" {
			hw, err := net.ParseMAC(v)
			if err != nil || len(hw) != 6 {
				return nil, cserr.Param("hostmac %q is not a MAC address", clip(v, 40))
			}
			v = hw.String()
		} else if c.Int(p, 0) <= 0 {
			return nil, cserr.Param("%s must be positive", p)
		}
		if in.Details == nil {
			in.Details = map[string]string{}
		}
		in.Details[p] = v
	}
	if in.HostTags == nil {
		in.HostTags = []string{}
	}
	out, err := c.RunJobSync(JobSpec{
		Workflow: workflows.AddHost, Input: in, InstanceType: "Host", InstanceUUID: hostUUID, ResponseID: hostUUID,
		Summary: "add host " + rawURL + " to cluster " + cl.Name,
	}, addHostTimeout)
	if err != nil {
		return nil, err
	}
	v, err := c.S.hostView(c.Ctx, out.ResultUUID)
	if err != nil {
		return nil, err
	}
	// CloudStack answers addHost with a list of the hosts added.
	return List{Key: "host", Count: 1, Items: []HostView{v}}, nil
}

// vmwareHostOf turns an ESXi host's address into its URL under its
// vSphere cluster (the cluster's URL and the host's name) and fills the
// vCenter login of the cluster.
func (c *Call) vmwareHostOf(cl *models.Cluster, raw string) (hostURL, user, sealed string, err error) {
	name := raw
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		name = u.Hostname()
	}
	name = strings.Trim(name, "/")
	if name == "" || strings.ContainsAny(name, "/?#") {
		return "", "", "", cserr.Param("url %q: want the ESXi host's name as vCenter knows it (http://esxi-1.example.com)", clip(raw, 128))
	}
	var details []models.ClusterDetail
	if err := c.S.DB.NewSelect().Model(&details).Where("cluster_id = ? AND name IN (?)", cl.ID, bun.In([]string{"username", "password"})).Scan(c.Ctx); err != nil {
		return "", "", "", err
	}
	for _, d := range details {
		switch d.Name {
		case "username":
			user = d.Value
		case "password":
			sealed = d.Value
		}
	}
	return strings.TrimRight(cl.URL, "/") + "/" + url.PathEscape(name), user, sealed, nil
}

// clusterOfPod finds a cluster of the pod by name, creating it (cloud
// managed, of the host's hypervisor type) when missing, as CloudStack's
// addHost with clustername does.
func (c *Call) clusterOfPod(p *models.Pod, name, hv string) (*models.Cluster, error) {
	var cl models.Cluster
	err := c.S.DB.NewSelect().Model(&cl).Where("pod_id = ? AND name = ?", p.ID, name).Limit(1).Scan(c.Ctx)
	if err == nil {
		return &cl, nil
	}
	if !isNoRows(err) {
		return nil, err
	}
	cl = models.Cluster{
		UUID: models.NewUUID(), Name: name, ZoneID: p.ZoneID, PodID: p.ID, HypervisorType: hv,
		ClusterType: models.ClusterCloudManaged, AllocationState: models.AllocationEnabled, ManagedState: "Managed",
		CPUOvercommitRatio: 1, MemOvercommitRatio: 1, Created: models.Now(),
	}
	if _, err := c.S.DB.NewInsert().Model(&cl).Exec(c.Ctx); err != nil {
		return nil, err
	}
	return &cl, nil
}

// hostList is listHosts' answer, encoded in one pass (a List's items would
// be encoded and then re-scanned twice, which costs more than the query on
// a page of 500 hosts).
type hostList struct {
	Count int        `json:"count"`
	Host  []HostView `json:"host"`
}

func listHosts(c *Call) (any, error) {
	// Filters by zone, pod and cluster resolve their UUIDs first so that
	// both the page and the count filter on the hosts' own indexed columns,
	// and the count needs no joins.
	var ids [3]int64
	for i, f := range []struct{ param, table string }{{"zoneid", "zones"}, {"podid", "pods"}, {"clusterid", "clusters"}} {
		if !c.Has(f.param) {
			continue
		}
		err := c.S.DB.NewSelect().TableExpr(f.table).Column("id").Where("uuid = ?", c.Str(f.param)).Limit(1).Scan(c.Ctx, &ids[i])
		if err != nil && !isNoRows(err) {
			return nil, err
		}
	}
	hv := ""
	if c.Has("hypervisor") {
		var err error
		if hv, err = hypervisor.Canonical(c.Str("hypervisor")); err != nil {
			return nil, cserr.Param("%s", err.Error())
		}
	}
	if c.Bool("hahost", false) {
		return List{Key: "host"}, nil
	}
	filter := func(q *bun.SelectQuery) *bun.SelectQuery {
		if c.Has("id") {
			q = q.Where("host.uuid = ?", c.Str("id"))
		}
		if c.Has("name") {
			q = q.Where("host.name = ?", c.Str("name"))
		}
		if c.Has("keyword") {
			q = q.Where("host.name LIKE ?", likePattern(c.Str("keyword")))
		}
		for i, col := range []string{"host.zone_id", "host.pod_id", "host.cluster_id"} {
			if c.Has([]string{"zoneid", "podid", "clusterid"}[i]) {
				q = q.Where(col+" = ?", ids[i])
			}
		}
		if c.Has("type") {
			q = q.Where("host.type = ?", c.Str("type"))
		}
		if c.Has("state") {
			q = q.Where("host.state = ?", c.Str("state"))
		}
		if c.Has("resourcestate") {
			q = q.Where("host.resource_state = ?", c.Str("resourcestate"))
		}
		if hv != "" {
			q = q.Where("host.hypervisor_type = ?", hv)
		}
		if c.Has("virtualmachineid") {
			q = q.Where("host.id = (SELECT vm.host_id FROM vm_instances AS vm WHERE vm.uuid = ? AND vm.removed IS NULL)", c.Str("virtualmachineid"))
		}
		if c.Has("outofbandmanagementenabled") {
			in := "IN"
			if !c.Bool("outofbandmanagementenabled", false) {
				in = "NOT IN"
			}
			q = q.Where("host.id "+in+" (SELECT oobm.host_id FROM oobm WHERE oobm.enabled = ?)", true)
		}
		if c.Has("outofbandmanagementpowerstate") {
			st := c.Str("outofbandmanagementpowerstate")
			if strings.EqualFold(st, models.OOBMPowerDisabled) {
				// Unconfigured hosts show Disabled too.
				q = q.Where("(host.id IN (SELECT oobm.host_id FROM oobm WHERE oobm.power_state = ?) OR host.id NOT IN (SELECT oobm.host_id FROM oobm))", models.OOBMPowerDisabled)
			} else {
				q = q.Where("host.id IN (SELECT oobm.host_id FROM oobm WHERE LOWER(oobm.power_state) = ?)", strings.ToLower(st))
			}
		}
		return q
	}
	total, err := filter(c.S.DB.NewSelect().Model((*models.Host)(nil))).Count(c.Ctx)
	if err != nil {
		return nil, err
	}
	if total == 0 {
		return List{Key: "host"}, nil
	}
	var rows []hostRow
	limit, offset := c.Page()
	if err := filter(selectHosts(c.S.DB, &rows)).Order("host.id ASC").Limit(int64(limit)).Offset(int64(offset)).Scan(c.Ctx); err != nil {
		return nil, err
	}
	views, err := c.S.hostViews(c.Ctx, rows)
	if err != nil {
		return nil, err
	}
	return hostList{Count: int(total), Host: views}, nil
}

func updateHost(c *Call) (any, error) {
	h, err := c.hostByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	if c.Bool("istagarule", false) {
		return nil, cserr.New(cserr.UnsupportedAction, "host tag rules are not supported")
	}
	if c.Has("url") {
		if err := checkHostURL(h.HypervisorType, strings.TrimSpace(c.Str("url"))); err != nil {
			return nil, err
		}
	}
	rs := ""
	switch v := c.Str("allocationstate"); {
	case v == "":
	case strings.EqualFold(v, "Enable"), strings.EqualFold(v, "Enabled"):
		rs = models.ResourceEnabled
	case strings.EqualFold(v, "Disable"), strings.EqualFold(v, "Disabled"):
		rs = models.ResourceDisabled
	default:
		return nil, cserr.Param("allocationstate %q: want Enable or Disable", clip(v, 32))
	}
	if rs != "" && rs != h.ResourceState && h.ResourceState != models.ResourceEnabled && h.ResourceState != models.ResourceDisabled {
		return nil, cserr.Param("Host %s is %s; cancel its maintenance before enabling or disabling it", h.Name, h.ResourceState)
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewUpdate().Model((*models.Host)(nil)).Where("id = ?", h.ID).Set("update_count = update_count + 1")
		if rs != "" && rs != h.ResourceState {
			q = q.Set("resource_state = ?", rs).Where("resource_state = ?", h.ResourceState)
		}
		if c.Has("name") {
			q = q.Set("name = ?", strings.TrimSpace(c.Str("name")))
		}
		if c.Has("url") {
			q = q.Set("url = ?", strings.TrimSpace(c.Str("url")))
		}
		res, err := q.Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return cserr.Param("Host %s changed meanwhile; try again", h.Name)
		}
		if rs != "" && rs != h.ResourceState {
			if err := activities.SetCapacityState(ctx, tx, h.ID, rs == models.ResourceEnabled, models.CapacityCPU, models.CapacityMemory); err != nil {
				return err
			}
		}
		if c.Has("hosttags") {
			return activities.SetHostTags(ctx, tx, h.ID, c.List("hosttags"))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.Event("HOST.UPDATE", "Host", h.UUID, "updated host "+h.Name)
	v, err := c.S.hostView(c.Ctx, h.UUID)
	if err != nil {
		return nil, err
	}
	return Object{"host": v}, nil
}

func reconnectHost(c *Call) (any, error) {
	h, err := c.hostByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.ReconnectHost, Input: workflows.ReconnectHostInput{HostUUID: h.UUID, Actor: actorOf(c.Caller)},
		InstanceType: "Host", InstanceUUID: h.UUID, ResponseID: h.UUID, Summary: "reconnect host " + h.Name,
	})
}

func prepareHostForMaintenance(c *Call) (any, error) {
	h, err := c.hostByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	switch h.ResourceState {
	case models.ResourceMaintenance, models.ResourcePrepareForMaintenance:
		return nil, cserr.Param("Host %s is already %s", h.Name, h.ResourceState)
	}
	if err := c.noPinnedVMs(h); err != nil {
		return nil, err
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.PrepareHostForMaintenance, Input: workflows.HostMaintenanceInput{HostUUID: h.UUID, Actor: actorOf(c.Caller)},
		InstanceType: "Host", InstanceUUID: h.UUID, ResponseID: h.UUID, Summary: "prepare host " + h.Name + " for maintenance",
	})
}

// noPinnedVMs refuses, before any job starts, maintenance of a host whose
// running VMs cannot leave it: they have VM snapshots and their hypervisor
// cannot migrate such a VM (the rule of migrateVirtualMachine).
func (c *Call) noPinnedVMs(h *models.Host) error {
	var vms []models.VMInstance
	err := c.S.DB.NewSelect().Model(&vms).Column("id", "name", "hypervisor_type").
		Where("host_id = ? AND state = ?", h.ID, models.VMRunning).
		Where("EXISTS (SELECT 1 FROM vm_snapshots AS s WHERE s.vm_id = vm_instance.id AND s.state IN (?) AND s.removed IS NULL)", bun.In(models.VMSnapshotLive)).
		Order("name").Scan(c.Ctx)
	if err != nil {
		return err
	}
	var names []string
	hv := ""
	for _, vm := range vms {
		if activities.VMSnapshotsBlockMigration(vm.HypervisorType) {
			names, hv = append(names, vm.Name), vm.HypervisorType
		}
	}
	if len(names) == 0 {
		return nil
	}
	return cserr.Param("Unable to prepare host %s for maintenance: running virtual machine(s) %s have VM snapshots, and %s cannot migrate a VM with VM snapshots; delete their VM snapshots or stop them first",
		h.Name, strings.Join(names, ", "), hv)
}

func cancelHostMaintenance(c *Call) (any, error) {
	h, err := c.hostByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	switch h.ResourceState {
	case models.ResourceMaintenance, models.ResourcePrepareForMaintenance, models.ResourceErrorInMaintenance, models.ResourceErrorInPrepareForMaint:
	default:
		return nil, cserr.Param("Host %s is %s, not in maintenance", h.Name, h.ResourceState)
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.CancelHostMaintenance, Input: workflows.HostMaintenanceInput{HostUUID: h.UUID, Actor: actorOf(c.Caller)},
		InstanceType: "Host", InstanceUUID: h.UUID, ResponseID: h.UUID, Summary: "cancel maintenance of host " + h.Name,
	})
}

// vmsGone are VM states that no longer hold a host.
var vmsGone = []string{models.VMDestroyed, models.VMExpunging}

func deleteHost(c *Call) (any, error) {
	h, err := c.hostByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	forced := c.Bool("forced", false)
	inMaint := h.ResourceState == models.ResourceMaintenance || h.ResourceState == models.ResourceErrorInMaintenance
	gone := h.State != models.HostUp && h.State != models.HostConnecting
	if !forced && !inMaint && !gone {
		return nil, cserr.Param("Host %s is %s and %s: put it in maintenance (prepareHostForMaintenance) or wait until it is disconnected before deleting it, or pass forced=true",
			h.Name, h.State, h.ResourceState)
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		vms, err := tx.NewSelect().Model((*models.VMInstance)(nil)).
			Where("host_id = ? AND state NOT IN (?)", h.ID, bun.In(vmsGone)).Count(ctx)
		if err != nil {
			return err
		}
		if vms > 0 && !forced {
			return cserr.InUse("Host %s still has %d VM(s); migrate or stop them, or pass forced=true", h.Name, vms)
		}
		if vms > 0 {
			// Forced: the VMs lose their host; they are Stopped and start
			// elsewhere next time.
			if _, err := tx.NewUpdate().Model((*models.VMInstance)(nil)).
				Set("state = ?", models.VMStopped).Set("last_host_id = host_id").Set("host_id = NULL").
				Set("update_count = update_count + 1").
				Where("host_id = ? AND state NOT IN (?)", h.ID, bun.In(vmsGone)).Exec(ctx); err != nil {
				return err
			}
		}
		var local []models.StoragePool
		if err := tx.NewSelect().Model(&local).Where("host_id = ? AND scope = ?", h.ID, models.ScopeHost).Scan(ctx); err != nil {
			return err
		}
		for _, sp := range local {
			n, err := tx.NewSelect().Model((*models.Volume)(nil)).Where("pool_id = ? AND state NOT IN (?)", sp.ID,
				bun.In([]string{models.VolumeDestroy, models.VolumeExpunged})).Count(ctx)
			if err != nil {
				return err
			}
			if n > 0 && !c.Bool("forcedestroylocalstorage", false) {
				return cserr.InUse("Host %s has %d volume(s) on its local storage %s; pass forcedestroylocalstorage=true to delete them with it", h.Name, n, sp.Name)
			}
			if _, err := tx.NewUpdate().Model((*models.StoragePool)(nil)).Set("state = ?", models.PoolRemoved).
				Set("removed = ?", models.Now()).Where("id = ?", sp.ID).Exec(ctx); err != nil {
				return err
			}
			if err := activities.DeleteCapacity(ctx, tx, sp.ID, models.CapacityLocalStorage, models.CapacityStorage, models.CapacityStorageAllocated); err != nil {
				return err
			}
		}
		return activities.RemoveHost(ctx, tx, h)
	})
	if err != nil {
		return nil, err
	}
	c.Event("HOST.DELETE", "Host", h.UUID, "deleted host "+h.Name)
	return Success{Success: true}, nil
}
