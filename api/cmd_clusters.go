package api

import (
	"context"
	"errors"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/workflows"
)

func init() {
	Register(
		&Command{
			Name: "addCluster", Description: "Adds a cluster: a homogeneous group of hosts of one hypervisor type", Access: AccessRootAdmin,
			Params: []Param{
				{Name: "zoneid", Type: TUUID, Required: true, Description: "the zone of the cluster"},
				{Name: "podid", Type: TUUID, Required: true, Description: "the pod of the cluster"},
				{Name: "clustername", Type: TString, Required: true, Description: "the name of the cluster (for vSphere, the vCenter cluster's name)"},
				{Name: "hypervisor", Type: TString, Required: true, Description: "the hypervisor type of every host in the cluster: KVM, VMware, Simulator..."},
				{Name: "clustertype", Type: TString, Required: true, Description: "CloudManaged (hosts added one by one) or ExternalManaged (hosts discovered from vCenter)"},
				{Name: "allocationstate", Type: TString, Description: "Enabled (default) or Disabled"},
				{Name: "url", Type: TString, Length: 2048, Description: "the cluster's URL in its manager, e.g. http://vcenter/Datacenter/Cluster for vSphere"},
				{Name: "username", Type: TString, Description: "the manager's user name (vCenter)"},
				{Name: "password", Type: TString, Description: "the manager's password (vCenter); stored encrypted"},
				{Name: "guestvswitchname", Type: TString, Description: "vSphere: the guest traffic vSwitch"},
				{Name: "guestvswitchtype", Type: TString, Description: "vSphere: vmwaresvs or vmwaredvs"},
				{Name: "publicvswitchname", Type: TString, Description: "vSphere: the public traffic vSwitch"},
				{Name: "publicvswitchtype", Type: TString, Description: "vSphere: vmwaresvs or vmwaredvs"},
				{Name: "vsmipaddress", Type: TString, Description: "vSphere: the Nexus 1000v VSM address"},
				{Name: "vsmusername", Type: TString, Description: "vSphere: the Nexus 1000v VSM user"},
				{Name: "vsmpassword", Type: TString, Description: "vSphere: the Nexus 1000v VSM password; stored encrypted"},
				{Name: "ovm3pool", Type: TString, Description: "OVM3 only; not supported"},
				{Name: "ovm3cluster", Type: TString, Description: "OVM3 only; not supported"},
				{Name: "ovm3vip", Type: TString, Description: "OVM3 only; not supported"},
			},
			ResponseName: "cluster", Response: clusterFields, Handler: addCluster,
		},
		&Command{
			Name: "updateCluster", Description: "Updates a cluster", Access: AccessRootAdmin,
			Params: []Param{
				{Name: "id", Type: TUUID, Required: true, Description: "the ID of the cluster"},
				{Name: "clustername", Type: TString, Description: "the new name"},
				{Name: "allocationstate", Type: TString, Description: "Enabled or Disabled"},
				{Name: "managedstate", Type: TString, Description: "Managed or Unmanaged"},
				{Name: "hypervisor", Type: TString, Description: "the hypervisor type; only an empty cluster may change it"},
				{Name: "clustertype", Type: TString, Description: "CloudManaged or ExternalManaged; only an empty cluster may change it"},
			},
			ResponseName: "cluster", Response: clusterFields, Handler: updateCluster,
		},
		&Command{
			Name: "deleteCluster", Description: "Deletes a cluster that holds no hosts and no primary storage", Access: AccessRootAdmin,
			Params:       []Param{{Name: "id", Type: TUUID, Required: true, Description: "the ID of the cluster"}},
			ResponseName: "success", Response: successFields, Handler: deleteCluster,
		},
		&Command{
			Name: "listClusters", Description: "Lists clusters", Access: AccessRootAdmin,
			Params: append(ListParams(),
				Param{Name: "id", Type: TUUID, Description: "the ID of the cluster"},
				Param{Name: "name", Type: TString, Description: "the name of the cluster"},
				Param{Name: "zoneid", Type: TUUID, Description: "clusters of this zone"},
				Param{Name: "podid", Type: TUUID, Description: "clusters of this pod"},
				Param{Name: "hypervisor", Type: TString, Description: "clusters of this hypervisor type"},
				Param{Name: "clustertype", Type: TString, Description: "CloudManaged or ExternalManaged"},
				Param{Name: "allocationstate", Type: TString, Description: "Enabled or Disabled"},
				Param{Name: "managedstate", Type: TString, Description: "Managed or Unmanaged"},
				Param{Name: "showcapacities", Type: TBoolean, Description: "include each cluster's capacities"},
			),
			ResponseName: "cluster", Response: clusterFields, Handler: listClusters,
		},
	)
	RegisterRenderer("Cluster", func(ctx context.Context, s *Server, id string) (any, error) {
		return s.clusterView(ctx, id)
	})
}

var clusterFields = []Field{
	{"id", "string", "the ID of the cluster"}, {"name", "string", "the name"},
	{"podid", "string", "its pod"}, {"podname", "string", "its pod's name"},
	{"zoneid", "string", "its zone"}, {"zonename", "string", "its zone's name"},
	{"hypervisortype", "string", "the hypervisor type of its hosts"},
	{"clustertype", "string", "CloudManaged or ExternalManaged"},
	{"allocationstate", "string", "Enabled or Disabled"}, {"managedstate", "string", "Managed or Unmanaged"},
	{"cpuovercommitratio", "string", "CPU overcommit factor"}, {"memoryovercommitratio", "string", "memory overcommit factor"},
	{"capacity", "list", "capacities (showcapacities=true)"}, {"resourcedetails", "map", "settings of the cluster"},
}

// ClusterView is a cluster as listClusters shows it (the SDK's Cluster).
type ClusterView struct {
	ID                    string            `json:"id"`
	Name                  string            `json:"name"`
	PodID                 string            `json:"podid"`
	PodName               string            `json:"podname"`
	ZoneID                string            `json:"zoneid"`
	ZoneName              string            `json:"zonename"`
	HypervisorType        string            `json:"hypervisortype"`
	ClusterType           string            `json:"clustertype"`
	AllocationState       string            `json:"allocationstate"`
	ManagedState          string            `json:"managedstate"`
	CPUOvercommitRatio    string            `json:"cpuovercommitratio"`
	MemoryOvercommitRatio string            `json:"memoryovercommitratio"`
	Capacity              []CapacityView    `json:"capacity,omitempty"`
	ResourceDetails       map[string]string `json:"resourcedetails,omitempty"`
	HasAnnotations        bool              `json:"hasannotations"`
}

// ratio formats an overcommit factor as CloudStack does ("1.0", "1.5").
func ratio(f float64) string {
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// clusterRow is a cluster with its pod's and zone's names.
type clusterRow struct {
	models.Cluster `bun:",extend"`
	PodUUID        string `bun:"pod_uuid"`
	PodName        string `bun:"pod_name"`
	ZoneUUID       string `bun:"zone_uuid"`
	ZoneName       string `bun:"zone_name"`
}

func selectClusters(db bun.IDB, rows *[]clusterRow) *bun.SelectQuery {
	return db.NewSelect().Model(rows).
		ColumnExpr("cluster.*").
		ColumnExpr("p.uuid AS pod_uuid, p.name AS pod_name, z.uuid AS zone_uuid, z.name AS zone_name").
		Join("LEFT JOIN pods AS p ON p.id = cluster.pod_id").
		Join("LEFT JOIN zones AS z ON z.id = cluster.zone_id")
}

// secretDetails are cluster details stored encrypted and never shown.
var secretDetails = map[string]bool{"password": true, "vsmpassword": true}

func (s *Server) clusterViews(ctx context.Context, rows []clusterRow, capacities bool) ([]ClusterView, error) {
	views := make([]ClusterView, len(rows))
	ids := make([]int64, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
		views[i] = ClusterView{
			ID: r.UUID, Name: r.Name, PodID: r.PodUUID, PodName: r.PodName, ZoneID: r.ZoneUUID, ZoneName: r.ZoneName,
			HypervisorType: r.HypervisorType, ClusterType: r.ClusterType, AllocationState: r.AllocationState,
			ManagedState: r.ManagedState, CPUOvercommitRatio: ratio(r.CPUOvercommitRatio), MemoryOvercommitRatio: ratio(r.MemOvercommitRatio),
		}
	}
	if len(rows) == 0 {
		return views, nil
	}
	var details []models.ClusterDetail
	if err := s.DB.NewSelect().Model(&details).Where("cluster_id IN (?)", bun.In(ids)).Order("id").Scan(ctx); err != nil {
		return nil, err
	}
	at := make(map[int64]int, len(rows))
	for i, r := range rows {
		at[r.ID] = i
	}
	for _, d := range details {
		if secretDetails[d.Name] {
			continue
		}
		v := &views[at[d.ClusterID]]
		if v.ResourceDetails == nil {
			v.ResourceDetails = map[string]string{}
		}
		v.ResourceDetails[d.Name] = d.Value
	}
	if capacities {
		for i := range rows {
			caps, err := s.capacities(ctx, capacityFilter{ClusterID: rows[i].ID, Level: levelCluster})
			if err != nil {
				return nil, err
			}
			views[i].Capacity = caps
		}
	}
	return views, nil
}

func (s *Server) clusterView(ctx context.Context, id string) (ClusterView, error) {
	var rows []clusterRow
	if err := selectClusters(s.DB, &rows).Where("cluster.uuid = ?", id).Scan(ctx); err != nil {
		return ClusterView{}, err
	}
	if len(rows) == 0 {
		return ClusterView{}, cserr.Param("Unable to find cluster by id %s", id)
	}
	views, err := s.clusterViews(ctx, rows, false)
	if err != nil {
		return ClusterView{}, err
	}
	return views[0], nil
}

// podOfZone loads a live pod and checks it belongs to the zone (431
// otherwise).
func (c *Call) podOfZone(podID string, z *models.Zone) (*models.Pod, error) {
	var p models.Pod
	if err := c.S.DB.NewSelect().Model(&p).Where("uuid = ?", podID).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, cserr.Param("Unable to find pod by id %s", podID)
		}
		return nil, err
	}
	if z != nil && p.ZoneID != z.ID {
		return nil, cserr.Param("Pod %s does not belong to zone %s", p.Name, z.Name)
	}
	return &p, nil
}

// clusterByUUID loads a live cluster or answers 431.
func (c *Call) clusterByUUID(id string) (*models.Cluster, error) {
	var cl models.Cluster
	if err := c.S.DB.NewSelect().Model(&cl).Where("uuid = ?", id).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, cserr.Param("Unable to find cluster by id %s", id)
		}
		return nil, err
	}
	return &cl, nil
}

// hypervisorType checks a hypervisor type against the driver registry: an
// unknown name is a 431 listing the known types, a known type without a
// driver yet a 432 naming it.
func hypervisorType(name string) (string, error) {
	t, err := hypervisor.Canonical(name)
	if err != nil {
		return "", cserr.Param("%s", err.Error())
	}
	if _, err := hypervisor.Get(t); err != nil {
		if errors.Is(err, hypervisor.ErrNotSupported) {
			return "", cserr.New(cserr.UnsupportedAction, "%s", err.Error())
		}
		return "", cserr.Param("%s", err.Error())
	}
	return t, nil
}

func clusterType(v, hv string) (string, error) {
	switch {
	case v == "" && hv == hypervisor.TypeVMware:
		return models.ClusterExternalManaged, nil
	case v == "" || strings.EqualFold(v, models.ClusterCloudManaged):
		return models.ClusterCloudManaged, nil
	case strings.EqualFold(v, models.ClusterExternalManaged):
		if hv != hypervisor.TypeVMware && hv != hypervisor.TypeSimulator {
			return "", cserr.Param("clustertype ExternalManaged is for vSphere clusters; %s clusters are CloudManaged", hv)
		}
		return models.ClusterExternalManaged, nil
	}
	return "", cserr.Param("clustertype %q: want CloudManaged or ExternalManaged", clip(v, 32))
}

func addCluster(c *Call) (any, error) {
	z, err := c.zoneByUUID(c.Str("zoneid"))
	if err != nil {
		return nil, err
	}
	p, err := c.podOfZone(c.Str("podid"), z)
	if err != nil {
		return nil, err
	}
	hv, err := hypervisorType(c.Str("hypervisor"))
	if err != nil {
		return nil, err
	}
	ct, err := clusterType(c.Str("clustertype"), hv)
	if err != nil {
		return nil, err
	}
	alloc, err := allocationState(c)
	if err != nil {
		return nil, err
	}
	if alloc == "" {
		alloc = models.AllocationEnabled
	}
	for _, p := range []string{"ovm3pool", "ovm3cluster", "ovm3vip"} {
		if c.Has(p) {
			return nil, cserr.New(cserr.UnsupportedAction, "Ovm3 clusters are not supported (parameter %s)", p)
		}
	}
	name := strings.TrimSpace(c.Str("clustername"))
	if name == "" {
		return nil, cserr.Param("clustername must not be empty")
	}
	cl := &models.Cluster{
		UUID: models.NewUUID(), Name: name, ZoneID: z.ID, PodID: p.ID, HypervisorType: hv, ClusterType: ct,
		URL: c.Str("url"), AllocationState: alloc, ManagedState: "Managed",
		CPUOvercommitRatio: 1, MemOvercommitRatio: 1, Created: models.Now(),
	}
	details := map[string]string{}
	if hv == hypervisor.TypeVMware {
		// A vSphere cluster is reached through vCenter: its URL names the
		// datacenter and the cluster (http://vcenter/DC/cluster).
		u, err := url.Parse(cl.URL)
		parts := []string{}
		if err == nil {
			parts = strings.Split(strings.Trim(u.Path, "/"), "/")
		}
		if err != nil || u.Host == "" || len(parts) < 2 || parts[0] == "" {
			return nil, cserr.Param("url %q: a vSphere cluster needs http://vcenter/<datacenter>/<cluster>", clip(cl.URL, 128))
		}
		if c.Str("username") == "" || c.Str("password") == "" {
			return nil, cserr.Param("a vSphere cluster needs the vCenter username and password")
		}
		cl.VMwareDatacenter = parts[0]
	}
	for _, k := range []string{"username", "password", "guestvswitchname", "guestvswitchtype", "publicvswitchname", "publicvswitchtype", "vsmipaddress", "vsmusername", "vsmpassword"} {
		v := c.Str(k)
		if v == "" {
			continue
		}
		if secretDetails[k] {
			if v, err = c.S.Secrets.Encrypt(v); err != nil {
				return nil, err
			}
		}
		details[k] = v
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		n, err := tx.NewSelect().Model((*models.Cluster)(nil)).Where("pod_id = ? AND name = ?", p.ID, name).Count(ctx)
		if err != nil {
			return err
		}
		if n > 0 {
			return cserr.Param("A cluster named %q already exists in pod %s", name, p.Name)
		}
		if hv == hypervisor.TypeVMware {
			if err := oneVCenterDatacenter(ctx, tx, z, cl); err != nil {
				return err
			}
		}
		if _, err := tx.NewInsert().Model(cl).Exec(ctx); err != nil {
			return err
		}
		for _, k := range detailKeys(details) {
			if _, err := tx.NewInsert().Model(&models.ClusterDetail{ClusterID: cl.ID, Name: k, Value: details[k]}).Exec(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if cl.ClusterType == models.ClusterExternalManaged && hv == hypervisor.TypeVMware {
		// The cluster's hosts come from vCenter: discover and add them now,
		// durably, in one job; a vCenter that cannot be read removes the
		// cluster again and answers why.
		in := activities.ClusterDiscoverInput{ClusterUUID: cl.UUID, Adding: true, Actor: actorOf(c.Caller)}
		if _, err := c.RunJobSync(JobSpec{
			Workflow: workflows.DiscoverCluster, Input: in, InstanceType: "Cluster", InstanceUUID: cl.UUID, ResponseID: cl.UUID,
			Summary: "add vSphere cluster " + cl.Name + " and discover its hosts",
		}, addHostTimeout); err != nil {
			return nil, err
		}
	}
	v, err := c.S.clusterView(c.Ctx, cl.UUID)
	if err != nil {
		return nil, err
	}
	// CloudStack answers addCluster with a list of the clusters added.
	return List{Key: "cluster", Count: 1, Items: []ClusterView{v}}, nil
}

// oneVCenterDatacenter enforces that a zone maps to one vCenter
// datacenter and a datacenter to one zone: every VMware cluster of the
// zone is in the same datacenter of the same vCenter, and no cluster of
// another zone is in it (Nimbus's template copies and disk helpers on a
// datastore are per datacenter).
func oneVCenterDatacenter(ctx context.Context, tx bun.IDB, z *models.Zone, cl *models.Cluster) error {
	var others []models.Cluster
	if err := tx.NewSelect().Model(&others).Column("name", "url", "vmware_datacenter", "zone_id").
		Where("hypervisor_type = ?", hypervisor.TypeVMware).Scan(ctx); err != nil {
		return err
	}
	host := func(raw string) string {
		if u, err := url.Parse(raw); err == nil {
			return strings.ToLower(u.Host)
		}
		return raw
	}
	for _, o := range others {
		same := host(o.URL) == host(cl.URL) && o.VMwareDatacenter == cl.VMwareDatacenter
		switch {
		case o.ZoneID == z.ID && !same:
			return cserr.Param("Zone %s maps to datacenter %s of vCenter %s (cluster %s); a zone maps to one vCenter datacenter",
				z.Name, o.VMwareDatacenter, host(o.URL), o.Name)
		case o.ZoneID != z.ID && same:
			return cserr.Param("Datacenter %s of vCenter %s belongs to another zone (cluster %s); a vCenter datacenter maps to one zone",
				o.VMwareDatacenter, host(o.URL), o.Name)
		}
	}
	return nil
}

func detailKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// clusterHolds counts a cluster's live hosts and primary pools.
func clusterHolds(ctx context.Context, db bun.IDB, clusterID int64) (hosts, pools int64, err error) {
	if hosts, err = db.NewSelect().Model((*models.Host)(nil)).Where("cluster_id = ?", clusterID).Count(ctx); err != nil {
		return
	}
	pools, err = db.NewSelect().Model((*models.StoragePool)(nil)).Where("cluster_id = ?", clusterID).Count(ctx)
	return
}

func updateCluster(c *Call) (any, error) {
	cl, err := c.clusterByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	alloc, err := allocationState(c)
	if err != nil {
		return nil, err
	}
	q := c.S.DB.NewUpdate().Model((*models.Cluster)(nil)).Where("id = ?", cl.ID)
	changed := false
	if alloc != "" {
		q, changed = q.Set("allocation_state = ?", alloc), true
	}
	if c.Has("managedstate") {
		var ms string
		switch v := c.Str("managedstate"); {
		case strings.EqualFold(v, "Managed"):
			ms = "Managed"
		case strings.EqualFold(v, "Unmanaged"):
			ms = "Unmanaged"
		default:
			return nil, cserr.Param("managedstate %q: want Managed or Unmanaged", clip(v, 32))
		}
		q, changed = q.Set("managed_state = ?", ms), true
	}
	hv := cl.HypervisorType
	if c.Has("hypervisor") {
		if hv, err = hypervisor.Canonical(c.Str("hypervisor")); err != nil {
			return nil, cserr.Param("%s", err.Error())
		}
	}
	ct := cl.ClusterType
	if c.Has("clustertype") {
		if ct, err = clusterType(c.Str("clustertype"), hv); err != nil {
			return nil, err
		}
	}
	if hv != cl.HypervisorType || ct != cl.ClusterType {
		hosts, pools, err := clusterHolds(c.Ctx, c.S.DB, cl.ID)
		if err != nil {
			return nil, err
		}
		if hosts > 0 || pools > 0 {
			return nil, cserr.Param("Cluster %s holds %d host(s) and %d storage pool(s) of type %s; a cluster holds one hypervisor type, so it cannot become %s %s",
				cl.Name, hosts, pools, cl.HypervisorType, ct, hv)
		}
		if _, err := hypervisorType(hv); err != nil {
			return nil, err
		}
		q, changed = q.Set("hypervisor_type = ?", hv).Set("cluster_type = ?", ct), true
	}
	if c.Has("clustername") {
		name := strings.TrimSpace(c.Str("clustername"))
		n, err := c.S.DB.NewSelect().Model((*models.Cluster)(nil)).Where("pod_id = ? AND name = ? AND id <> ?", cl.PodID, name, cl.ID).Count(c.Ctx)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			return nil, cserr.Param("A cluster named %q already exists in this pod", name)
		}
		q, changed = q.Set("name = ?", name), true
	}
	if changed {
		if _, err := q.Exec(c.Ctx); err != nil {
			return nil, err
		}
	}
	v, err := c.S.clusterView(c.Ctx, cl.UUID)
	if err != nil {
		return nil, err
	}
	return Object{"cluster": v}, nil
}

func deleteCluster(c *Call) (any, error) {
	cl, err := c.clusterByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		hosts, pools, err := clusterHolds(ctx, tx, cl.ID)
		if err != nil {
			return err
		}
		if hosts > 0 || pools > 0 {
			return cserr.InUse("The cluster %s is not deletable because it holds %d host(s) and %d primary storage pool(s); delete them first", cl.Name, hosts, pools)
		}
		if _, err := tx.NewDelete().Model((*models.ClusterDetail)(nil)).Where("cluster_id = ?", cl.ID).Exec(ctx); err != nil {
			return err
		}
		_, err = tx.NewDelete().Model(cl).WherePK().Exec(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	return Success{Success: true}, nil
}

func listClusters(c *Call) (any, error) {
	var rows []clusterRow
	q := selectClusters(c.S.DB, &rows).Order("cluster.id ASC")
	if c.Has("id") {
		q = q.Where("cluster.uuid = ?", c.Str("id"))
	}
	if c.Has("name") {
		q = q.Where("cluster.name = ?", c.Str("name"))
	}
	if c.Has("keyword") {
		q = q.Where("cluster.name LIKE ?", likePattern(c.Str("keyword")))
	}
	if c.Has("zoneid") {
		q = q.Where("z.uuid = ?", c.Str("zoneid"))
	}
	if c.Has("podid") {
		q = q.Where("p.uuid = ?", c.Str("podid"))
	}
	if c.Has("hypervisor") {
		hv, err := hypervisor.Canonical(c.Str("hypervisor"))
		if err != nil {
			return nil, cserr.Param("%s", err.Error())
		}
		q = q.Where("cluster.hypervisor_type = ?", hv)
	}
	if c.Has("clustertype") {
		q = q.Where("cluster.cluster_type = ?", c.Str("clustertype"))
	}
	if c.Has("allocationstate") {
		q = q.Where("cluster.allocation_state = ?", c.Str("allocationstate"))
	}
	if c.Has("managedstate") {
		q = q.Where("cluster.managed_state = ?", c.Str("managedstate"))
	}
	limit, offset := c.Page()
	total, err := q.Limit(int64(limit)).Offset(int64(offset)).ScanAndCount(c.Ctx)
	if err != nil {
		return nil, err
	}
	views, err := c.S.clusterViews(c.Ctx, rows, c.Bool("showcapacities", false))
	if err != nil {
		return nil, err
	}
	return List{Key: "cluster", Count: int(total), Items: views}, nil
}
