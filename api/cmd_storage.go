package api

import (
	"context"
	"errors"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/workflows"
)

// storageJobTimeout bounds how long the synchronous storage commands wait
// for their job; it goes on after, followed with queryAsyncJobResult.
const storageJobTimeout = 5 * time.Minute

func init() {
	poolID := []Param{{Name: "id", Type: TUUID, Required: true, Description: "the ID of the storage pool"}}
	Register(
		&Command{
			Name: "createStoragePool", Description: "Adds primary storage to a cluster or a zone", Access: AccessRootAdmin,
			Params: []Param{
				{Name: "name", Type: TString, Required: true, Description: "the name of the pool"},
				{Name: "url", Type: TString, Required: true, Length: 2048, Description: "nfs://server/export, rbd://user:secret@monitor/pool, iscsi://target/iqn/lun, file:///dir, sharedmountpoint:///dir, clvm:///vg, vmfs://vcenter/dc/datastore, presetup://host/path or smb://server/share"},
				{Name: "zoneid", Type: TUUID, Required: true, Description: "the zone of the pool"},
				{Name: "podid", Type: TUUID, Description: "the pod of a cluster-wide pool"},
				{Name: "clusterid", Type: TUUID, Description: "the cluster of a cluster-wide pool"},
				{Name: "scope", Type: TString, Description: "cluster (default) or zone"},
				{Name: "hypervisor", Type: TString, Description: "the hypervisor type of a zone-wide pool: KVM, VMware or Simulator"},
				{Name: "tags", Type: TList, Of: TString, Description: "tags of the pool, for disk offerings with tags"},
				{Name: "capacitybytes", Type: TLong, Description: "the pool's size, when the backend does not report it"},
				{Name: "capacityiops", Type: TLong, Description: "the pool's IOPS"},
				{Name: "provider", Type: TString, Description: "the storage provider; DefaultPrimary"},
				{Name: "managed", Type: TBoolean, Description: "managed storage is not supported yet"},
				{Name: "istagarule", Type: TBoolean, Description: "tag rules are not supported; false"},
				{Name: "details", Type: TMap, Description: "settings of the pool, passed to its driver"},
			},
			ResponseName: "storagepool", Response: poolFields, Handler: createStoragePool,
		},
		&Command{
			Name: "listStoragePools", Description: "Lists primary storage pools", Access: AccessRootAdmin,
			Params: append(ListParams(),
				Param{Name: "id", Type: TUUID, Description: "the ID of the pool"},
				Param{Name: "name", Type: TString, Description: "the name of the pool"},
				Param{Name: "zoneid", Type: TUUID, Description: "pools of this zone"},
				Param{Name: "podid", Type: TUUID, Description: "pools of this pod"},
				Param{Name: "clusterid", Type: TUUID, Description: "pools of this cluster"},
				Param{Name: "hostid", Type: TUUID, Description: "pools this host uses"},
				Param{Name: "ipaddress", Type: TString, Description: "pools on this server"},
				Param{Name: "path", Type: TString, Description: "pools of this path"},
				Param{Name: "scope", Type: TString, Description: "CLUSTER, ZONE or HOST"},
				Param{Name: "status", Type: TString, Description: "Up, Maintenance, Disabled..."},
			),
			ResponseName: "storagepool", Response: poolFields, Handler: listStoragePools,
		},
		&Command{
			Name: "updateStoragePool", Description: "Updates a storage pool: tags, size, enabled", Access: AccessRootAdmin,
			Params: append(append([]Param{}, poolID...),
				Param{Name: "name", Type: TString, Description: "the new name"},
				Param{Name: "tags", Type: TList, Of: TString, Description: "the pool's tags (replace the current ones)"},
				Param{Name: "capacitybytes", Type: TLong, Description: "the pool's size"},
				Param{Name: "capacityiops", Type: TLong, Description: "the pool's IOPS"},
				Param{Name: "enabled", Type: TBoolean, Description: "false disables the pool (nothing new is placed on it), true enables it"},
				Param{Name: "url", Type: TString, Length: 2048, Description: "a new URL, for a pool in maintenance"},
				Param{Name: "istagarule", Type: TBoolean, Description: "tag rules are not supported; false"},
				Param{Name: "details", Type: TMap, Description: "settings of the pool"},
			),
			ResponseName: "storagepool", Response: poolFields, Handler: updateStoragePool,
		},
		&Command{
			Name: "enableStorageMaintenance", Description: "Puts a primary storage pool in maintenance", Access: AccessRootAdmin, Async: true,
			Params: poolID, ResponseName: "storagepool", Response: poolFields, Handler: enableStorageMaintenance,
		},
		&Command{
			Name: "cancelStorageMaintenance", Description: "Takes a primary storage pool out of maintenance", Access: AccessRootAdmin, Async: true,
			Params: poolID, ResponseName: "storagepool", Response: poolFields, Handler: cancelStorageMaintenance,
		},
		&Command{
			Name: "deleteStoragePool", Description: "Deletes a primary storage pool that holds no volumes", Access: AccessRootAdmin,
			Params: append(append([]Param{}, poolID...),
				Param{Name: "forced", Type: TBoolean, Description: "also remove volumes already destroyed on it"},
			),
			ResponseName: "success", Response: successFields, Handler: deleteStoragePool,
		},
		&Command{
			Name: "addImageStore", Description: "Adds secondary storage: NFS (per zone), S3 or Swift (per region)", Access: AccessRootAdmin,
			Params: []Param{
				{Name: "provider", Type: TString, Required: true, Description: "NFS, S3 or Swift"},
				{Name: "name", Type: TString, Description: "the name of the store"},
				{Name: "url", Type: TString, Length: 2048, Description: "nfs://server/export (or file:///dir), the S3 endpoint, or the Swift URL"},
				{Name: "zoneid", Type: TUUID, Description: "the zone of an NFS store"},
				{Name: "details", Type: TMap, Description: "S3: bucket, endpoint, accesskey, secretkey, usehttps...; Swift: account, username, key"},
			},
			ResponseName: "imagestore", Response: storeFields, Handler: addImageStore,
		},
		&Command{
			Name: "listImageStores", Description: "Lists secondary storage", Access: AccessRootAdmin,
			Params: append(ListParams(),
				Param{Name: "id", Type: TUUID, Description: "the ID of the store"},
				Param{Name: "name", Type: TString, Description: "the name of the store"},
				Param{Name: "zoneid", Type: TUUID, Description: "stores of this zone"},
				Param{Name: "provider", Type: TString, Description: "NFS, S3 or Swift"},
				Param{Name: "protocol", Type: TString, Description: "nfs, http, https"},
				Param{Name: "readonly", Type: TBoolean, Description: "read-only stores"},
			),
			ResponseName: "imagestore", Response: storeFields, Handler: listImageStores,
		},
		&Command{
			Name: "deleteImageStore", Description: "Deletes secondary storage that holds no templates, ISOs or snapshots", Access: AccessRootAdmin,
			Params:       []Param{{Name: "id", Type: TUUID, Required: true, Description: "the ID of the store"}},
			ResponseName: "success", Response: successFields, Handler: deleteImageStore,
		},
		&Command{
			Name: "createSecondaryStagingStore", Description: "Adds the NFS staging store of a zone, in front of S3 or Swift secondary storage", Access: AccessRootAdmin,
			Params: []Param{
				{Name: "url", Type: TString, Required: true, Length: 2048, Description: "nfs://server/export (or file:///dir)"},
				{Name: "zoneid", Type: TUUID, Description: "the zone of the staging store"},
				{Name: "provider", Type: TString, Description: "NFS (the default)"},
				{Name: "scope", Type: TString, Description: "zone (the default)"},
				{Name: "details", Type: TMap, Description: "settings of the store"},
			},
			ResponseName: "secondarystorage", Response: storeFields, Handler: createSecondaryStagingStore,
		},
		&Command{
			Name: "listSecondaryStagingStores", Description: "Lists the NFS staging stores", Access: AccessRootAdmin,
			Params: append(ListParams(),
				Param{Name: "id", Type: TUUID, Description: "the ID of the store"},
				Param{Name: "name", Type: TString, Description: "the name of the store"},
				Param{Name: "zoneid", Type: TUUID, Description: "stores of this zone"},
				Param{Name: "provider", Type: TString, Description: "NFS"},
				Param{Name: "protocol", Type: TString, Description: "nfs"},
			),
			ResponseName: "secondarystagingstore", Response: storeFields, Handler: listSecondaryStagingStores,
		},
		&Command{
			Name: "deleteSecondaryStagingStore", Description: "Deletes an NFS staging store", Access: AccessRootAdmin,
			Params:       []Param{{Name: "id", Type: TUUID, Required: true, Description: "the ID of the staging store"}},
			ResponseName: "success", Response: successFields, Handler: deleteSecondaryStagingStore,
		},
	)
	RegisterRenderer("StoragePool", func(ctx context.Context, s *Server, id string) (any, error) {
		return s.poolView(ctx, id)
	})
	RegisterRenderer("ImageStore", func(ctx context.Context, s *Server, id string) (any, error) {
		return s.storeView(ctx, id)
	})
}

var poolFields = []Field{
	{"id", "string", "the ID of the pool"}, {"name", "string", "the name"},
	{"type", "string", "NetworkFilesystem, RBD, Iscsi, Filesystem, SharedMountPoint, VMFS, PreSetup, SMB, CLVM"},
	{"scope", "string", "CLUSTER, ZONE or HOST"}, {"state", "string", "Up, Maintenance, Disabled..."},
	{"hypervisor", "string", "the hypervisor type it serves"}, {"ipaddress", "string", "its server"}, {"path", "string", "its path"},
	{"zoneid", "string", "the zone"}, {"zonename", "string", "its name"}, {"podid", "string", "the pod"}, {"podname", "string", "its name"},
	{"clusterid", "string", "the cluster"}, {"clustername", "string", "its name"},
	{"disksizetotal", "long", "size, bytes"}, {"disksizeused", "long", "used, bytes"}, {"disksizeallocated", "long", "allocated to volumes, bytes"},
	{"capacityiops", "long", "IOPS"}, {"tags", "string", "comma-separated tags"}, {"provider", "string", "the storage provider"},
	{"created", "date", "when it was added"},
}

// PoolView is a primary storage pool as listStoragePools shows it (the
// SDK's StoragePool).
type PoolView struct {
	ID                   string            `json:"id"`
	Name                 string            `json:"name"`
	Type                 string            `json:"type"`
	Scope                string            `json:"scope"`
	State                string            `json:"state"`
	Hypervisor           string            `json:"hypervisor,omitempty"`
	IPAddress            string            `json:"ipaddress"`
	Path                 string            `json:"path"`
	ZoneID               string            `json:"zoneid"`
	ZoneName             string            `json:"zonename"`
	PodID                string            `json:"podid,omitempty"`
	PodName              string            `json:"podname,omitempty"`
	ClusterID            string            `json:"clusterid,omitempty"`
	ClusterName          string            `json:"clustername,omitempty"`
	DiskSizeTotal        int64             `json:"disksizetotal"`
	DiskSizeUsed         int64             `json:"disksizeused"`
	DiskSizeAllocated    int64             `json:"disksizeallocated"`
	CapacityIOPS         int64             `json:"capacityiops,omitempty"`
	AllocatedIOPS        int64             `json:"allocatediops,omitempty"`
	Tags                 string            `json:"tags,omitempty"`
	IsTagARule           bool              `json:"istagarule"`
	Provider             string            `json:"provider"`
	OverprovisionFactor  string            `json:"overprovisionfactor"`
	StorageCapabilities  map[string]string `json:"storagecapabilities,omitempty"`
	SuitableForMigration bool              `json:"suitableformigration"`
	HasAnnotations       bool              `json:"hasannotations"`
	Created              string            `json:"created"`
}

var storeFields = []Field{
	{"id", "string", "the ID of the store"}, {"name", "string", "the name"},
	{"providername", "string", "NFS, S3 or Swift"}, {"protocol", "string", "nfs, http, https"}, {"url", "string", "its URL"},
	{"scope", "string", "ZONE or REGION"}, {"zoneid", "string", "the zone of an NFS store"}, {"zonename", "string", "its name"},
	{"disksizetotal", "long", "size, bytes"}, {"disksizeused", "long", "used, bytes"}, {"readonly", "boolean", "no new data goes there"},
}

// StoreView is an image store as listImageStores shows it (the SDK's
// ImageStore and SecondaryStagingStore).
type StoreView struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	ProviderName   string `json:"providername"`
	Protocol       string `json:"protocol"`
	URL            string `json:"url"`
	Scope          string `json:"scope"`
	ZoneID         string `json:"zoneid,omitempty"`
	ZoneName       string `json:"zonename,omitempty"`
	DiskSizeTotal  int64  `json:"disksizetotal"`
	DiskSizeUsed   int64  `json:"disksizeused"`
	ReadOnly       bool   `json:"readonly"`
	HasAnnotations bool   `json:"hasannotations"`
}

// ---- primary storage ----

// poolRow is a pool with the names of its zone, pod and cluster.
type poolRow struct {
	models.StoragePool `bun:",extend"`
	ZoneUUID           string `bun:"zone_uuid"`
	ZoneName           string `bun:"zone_name"`
	PodUUID            string `bun:"pod_uuid"`
	PodName            string `bun:"pod_name"`
	ClusterUUID        string `bun:"cluster_uuid"`
	ClusterName        string `bun:"cluster_name"`
}

func selectPools(db bun.IDB, rows *[]poolRow) *bun.SelectQuery {
	return db.NewSelect().Model(rows).
		ColumnExpr("storage_pool.*").
		ColumnExpr("z.uuid AS zone_uuid, z.name AS zone_name, p.uuid AS pod_uuid, p.name AS pod_name, c.uuid AS cluster_uuid, c.name AS cluster_name").
		Join("LEFT JOIN zones AS z ON z.id = storage_pool.zone_id").
		Join("LEFT JOIN pods AS p ON p.id = storage_pool.pod_id").
		Join("LEFT JOIN clusters AS c ON c.id = storage_pool.cluster_id")
}

func (s *Server) poolViews(ctx context.Context, rows []poolRow) ([]PoolView, error) {
	views := make([]PoolView, len(rows))
	if len(rows) == 0 {
		return views, nil
	}
	ids := make([]int64, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	var tags []models.StoragePoolTag
	if err := s.DB.NewSelect().Model(&tags).Where("pool_id IN (?)", bun.In(ids)).Order("id").Scan(ctx); err != nil {
		return nil, err
	}
	tagsOf := map[int64][]string{}
	for _, t := range tags {
		tagsOf[t.PoolID] = append(tagsOf[t.PoolID], t.Tag)
	}
	for i, r := range rows {
		provider := r.StorageProvider
		if provider == "" {
			provider = "DefaultPrimary"
		}
		views[i] = PoolView{
			ID: r.UUID, Name: r.Name, Type: r.PoolType, Scope: r.Scope, State: r.State, Hypervisor: r.HypervisorType,
			IPAddress: r.HostAddress, Path: r.Path, ZoneID: r.ZoneUUID, ZoneName: r.ZoneName, PodID: r.PodUUID, PodName: r.PodName,
			ClusterID: r.ClusterUUID, ClusterName: r.ClusterName, DiskSizeTotal: r.CapacityBytes, DiskSizeUsed: r.UsedBytes,
			DiskSizeAllocated: r.AllocatedBytes, CapacityIOPS: r.CapacityIOPS, Tags: strings.Join(tagsOf[r.ID], ","),
			Provider: provider, OverprovisionFactor: "1.0", SuitableForMigration: r.State == models.PoolUp,
			Created: FormatTime(r.Created),
		}
	}
	return views, nil
}

func (s *Server) poolView(ctx context.Context, id string) (PoolView, error) {
	var rows []poolRow
	if err := selectPools(s.DB, &rows).Where("storage_pool.uuid = ?", id).Scan(ctx); err != nil {
		return PoolView{}, err
	}
	if len(rows) == 0 {
		return PoolView{}, cserr.Param("Unable to find storage pool by id %s", id)
	}
	views, err := s.poolViews(ctx, rows)
	if err != nil {
		return PoolView{}, err
	}
	return views[0], nil
}

func (c *Call) poolByUUID(id string) (*models.StoragePool, error) {
	var p models.StoragePool
	if err := c.S.DB.NewSelect().Model(&p).Where("uuid = ?", id).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, cserr.Param("Unable to find storage pool by id %s", id)
		}
		return nil, err
	}
	return &p, nil
}

// poolURL is what a primary storage URL says.
type poolURL struct {
	Type     string
	Host     string
	Path     string
	Port     int
	UserInfo string // user:secret (RBD)
}

// parsePoolURL reads a createStoragePool URL into its pool type and parts.
func parsePoolURL(raw string) (poolURL, error) {
	bad := func(format string, args ...any) (poolURL, error) {
		return poolURL{}, cserr.Param("url %q: "+format, append([]any{clip(raw, 128)}, args...)...)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return bad("not a URL; want nfs://server/export, rbd://monitor/pool, iscsi://target/iqn/lun, file:///dir, sharedmountpoint:///dir, clvm:///vg, vmfs://vcenter/dc/datastore, presetup://host/path or smb://server/share")
	}
	p := poolURL{Host: u.Hostname(), Path: u.Path}
	if u.Port() != "" {
		p.Port, _ = strconv.Atoi(u.Port())
	}
	needHost := func(def int) error {
		if p.Host == "" {
			return cserr.Param("url %q: no server", clip(raw, 128))
		}
		if p.Port == 0 {
			p.Port = def
		}
		return nil
	}
	needPath := func() error {
		if p.Path == "" || p.Path == "/" {
			return cserr.Param("url %q: no path", clip(raw, 128))
		}
		return nil
	}
	switch strings.ToLower(u.Scheme) {
	case "nfs":
		p.Type = models.PoolNetworkFilesystem
		if err := needHost(2049); err != nil {
			return p, err
		}
		return p, needPath()
	case "rbd":
		p.Type = models.PoolRBD
		if u.User != nil {
			pw, _ := u.User.Password()
			p.UserInfo = u.User.Username() + ":" + pw
		}
		if err := needHost(6789); err != nil {
			return p, err
		}
		p.Path = strings.Trim(p.Path, "/")
		if p.Path == "" {
			return bad("no RBD pool name (rbd://monitor/pool)")
		}
		return p, nil
	case "iscsi":
		p.Type = models.PoolIscsi
		if err := needHost(3260); err != nil {
			return p, err
		}
		return p, needPath()
	case "file", "local":
		p.Type = models.PoolFilesystem
		if p.Host == "" {
			p.Host = "localhost"
		}
		return p, needPath()
	case "sharedmountpoint":
		p.Type = models.PoolSharedMountPoint
		if p.Host == "" {
			p.Host = "localhost"
		}
		return p, needPath()
	case "clvm":
		p.Type = models.PoolCLVM
		if p.Host == "" {
			p.Host = "localhost"
		}
		return p, needPath()
	case "vmfs", "presetup":
		// vSphere datastores: vmfs://[user:password@]vcenter/<datacenter>/<datastore>.
		p.Type = models.PoolVMFS
		if strings.EqualFold(u.Scheme, "presetup") {
			p.Type = models.PoolPreSetup
		}
		if u.User != nil {
			pw, _ := u.User.Password()
			p.UserInfo = u.User.Username() + ":" + pw
		}
		if err := needHost(0); err != nil {
			return p, err
		}
		return p, needPath()
	case "smb", "cifs":
		p.Type = models.PoolSMB
		if err := needHost(445); err != nil {
			return p, err
		}
		return p, needPath()
	}
	return bad("unknown scheme %q; want nfs, rbd, iscsi, file, sharedmountpoint, clvm, vmfs, presetup or smb", u.Scheme)
}

// poolTypeHypervisors says which hypervisors may use a pool type (the
// seed's rules: RBD only for KVM, SMB only for Hyper-V, VMFS for vSphere);
// the Simulator stands in for any.
var poolTypeHypervisors = map[string][]string{
	models.PoolRBD:              {hypervisor.TypeKVM},
	models.PoolSMB:              {hypervisor.TypeHyperV},
	models.PoolVMFS:             {hypervisor.TypeVMware},
	models.PoolPreSetup:         {hypervisor.TypeVMware, hypervisor.TypeXenServer},
	models.PoolCLVM:             {hypervisor.TypeKVM},
	models.PoolSharedMountPoint: {hypervisor.TypeKVM, hypervisor.TypeLXC},
	models.PoolFilesystem:       {hypervisor.TypeKVM, hypervisor.TypeLXC, hypervisor.TypeXenProject},
	models.PoolNetworkFilesystem: {hypervisor.TypeKVM, hypervisor.TypeLXC, hypervisor.TypeXenProject, hypervisor.TypeVMware,
		hypervisor.TypeXenServer},
	models.PoolIscsi: {hypervisor.TypeKVM, hypervisor.TypeVMware, hypervisor.TypeXenServer},
}

// zoneWideHypervisors may have zone-wide primary storage.
var zoneWideHypervisors = []string{hypervisor.TypeKVM, hypervisor.TypeVMware, hypervisor.TypeSimulator}

func inList(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// detailsParam reads a map parameter in either of CloudStack's forms:
// details[0].bucket=b, or details[0].key=bucket&details[0].value=b.
func detailsParam(c *Call, name string) map[string]string {
	out := map[string]string{}
	for _, m := range c.Map(name) {
		k, hasK := m["key"]
		v, hasV := m["value"]
		if hasK && hasV && len(m) == 2 {
			out[strings.ToLower(k)] = v
			continue
		}
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func createStoragePool(c *Call) (any, error) {
	z, err := c.zoneByUUID(c.Str("zoneid"))
	if err != nil {
		return nil, err
	}
	if c.Bool("managed", false) {
		return nil, cserr.New(cserr.UnsupportedAction, "managed primary storage is not supported yet")
	}
	if c.Bool("istagarule", false) {
		return nil, cserr.New(cserr.UnsupportedAction, "storage tag rules are not supported")
	}
	if p := c.Str("provider"); p != "" && !strings.EqualFold(p, "DefaultPrimary") {
		return nil, cserr.New(cserr.UnsupportedAction, "storage provider %s is not supported; use DefaultPrimary", clip(p, 64))
	}
	pu, err := parsePoolURL(strings.TrimSpace(c.Str("url")))
	if err != nil {
		return nil, err
	}
	scope := strings.ToUpper(c.Str("scope"))
	if scope == "" {
		scope = models.ScopeCluster
		if !c.Has("clusterid") && c.Has("hypervisor") {
			scope = models.ScopeZone
		}
	}
	spec := activities.PoolSpec{
		PoolUUID: models.NewUUID(), Name: strings.TrimSpace(c.Str("name")), PoolType: pu.Type, Scope: scope,
		URL: c.Str("url"), HostAddress: pu.Host, Path: pu.Path, Port: pu.Port, Provider: "DefaultPrimary",
		CapacityBytes: c.Int("capacitybytes", 0), CapacityIOPS: c.Int("capacityiops", 0), ZoneUUID: z.UUID,
		Tags: c.List("tags"), Details: detailsParam(c, "details"), Actor: actorOf(c.Caller),
	}
	if spec.Name == "" {
		return nil, cserr.Param("name must not be empty")
	}
	if spec.CapacityBytes < 0 || spec.CapacityIOPS < 0 {
		return nil, cserr.Param("capacitybytes and capacityiops must not be negative")
	}
	switch scope {
	case models.ScopeCluster:
		if !c.Has("podid") || !c.Has("clusterid") {
			return nil, cserr.Param("a cluster-wide pool needs podid and clusterid")
		}
		p, err := c.podOfZone(c.Str("podid"), z)
		if err != nil {
			return nil, err
		}
		cl, err := c.clusterByUUID(c.Str("clusterid"))
		if err != nil {
			return nil, err
		}
		if cl.PodID != p.ID {
			return nil, cserr.Param("Cluster %s is not in pod %s", cl.Name, p.Name)
		}
		if c.Has("hypervisor") {
			if hv, err := hypervisor.Canonical(c.Str("hypervisor")); err != nil || hv != cl.HypervisorType {
				return nil, cserr.Param("Cluster %s holds %s hosts; its primary storage serves %s, not %s", cl.Name, cl.HypervisorType, cl.HypervisorType, clip(c.Str("hypervisor"), 32))
			}
		}
		spec.HypervisorType, spec.PodUUID, spec.ClusterUUID = cl.HypervisorType, p.UUID, cl.UUID
	case models.ScopeZone:
		if !c.Has("hypervisor") {
			return nil, cserr.Param("a zone-wide pool needs the hypervisor parameter (KVM, VMware or Simulator)")
		}
		hv, err := hypervisor.Canonical(c.Str("hypervisor"))
		if err != nil {
			return nil, cserr.Param("%s", err.Error())
		}
		if !inList(zoneWideHypervisors, hv) {
			return nil, cserr.Param("Zone-wide primary storage is supported for KVM and VMware only, not %s", hv)
		}
		spec.HypervisorType = hv
	default:
		return nil, cserr.Param("scope %q: want cluster or zone", clip(c.Str("scope"), 32))
	}
	if hvs := poolTypeHypervisors[pu.Type]; spec.HypervisorType != hypervisor.TypeSimulator && !inList(hvs, spec.HypervisorType) {
		return nil, cserr.Param("%s primary storage is supported for %s only, not %s", pu.Type, strings.Join(hvs, ", "), spec.HypervisorType)
	}
	if _, err := hypervisorType(spec.HypervisorType); err != nil {
		return nil, err
	}
	if _, err := storage.GetPool(spec.HypervisorType); err != nil {
		if errors.Is(err, hypervisor.ErrNotSupported) {
			return nil, cserr.New(cserr.UnsupportedAction, "%s", err.Error())
		}
		return nil, err
	}
	if spec.HypervisorType == hypervisor.TypeVMware && (pu.Type == models.PoolVMFS || pu.Type == models.PoolPreSetup) {
		if err := c.vcenterPool(z, spec.ClusterUUID, &pu, &spec); err != nil {
			return nil, err
		}
	}
	if pu.UserInfo != "" {
		if spec.UserInfoSealed, err = c.S.Secrets.Encrypt(pu.UserInfo); err != nil {
			return nil, err
		}
		// The URL keeps no secret.
		u, _ := url.Parse(spec.URL)
		u.User = url.User(strings.SplitN(pu.UserInfo, ":", 2)[0])
		spec.URL = u.String()
	}
	if n, err := c.S.DB.NewSelect().Model((*models.StoragePool)(nil)).Where("zone_id = ? AND name = ?", z.ID, spec.Name).Count(c.Ctx); err != nil {
		return nil, err
	} else if n > 0 {
		return nil, cserr.Param("A storage pool named %q already exists in zone %s", spec.Name, z.Name)
	}
	q := c.S.DB.NewSelect().Model((*models.StoragePool)(nil)).Where("zone_id = ? AND host_address = ? AND path = ? AND pool_type = ?", z.ID, pu.Host, pu.Path, pu.Type)
	if n, err := q.Count(c.Ctx); err != nil {
		return nil, err
	} else if n > 0 && pu.Type != models.PoolFilesystem {
		return nil, cserr.Param("Storage at %s%s is already a pool of zone %s", pu.Host, pu.Path, z.Name)
	}
	out, err := c.RunJobSync(JobSpec{
		Workflow: workflows.CreateStoragePool, Input: spec, InstanceType: "StoragePool", InstanceUUID: spec.PoolUUID,
		ResponseID: spec.PoolUUID, Summary: "create primary storage " + spec.Name,
	}, storageJobTimeout)
	if err != nil {
		return nil, err
	}
	v, err := c.S.poolView(c.Ctx, out.ResultUUID)
	if err != nil {
		return nil, err
	}
	return Object{"storagepool": v}, nil
}

// vcenterPool checks a datastore pool against the zone's vSphere
// clusters: the pool's vCenter must be theirs (the cluster's, for a
// cluster-wide pool), its datacenter the zone's, and it takes their
// vCenter login (the storage driver reaches datastores through vCenter).
// A URL naming only the datastore gets the zone's datacenter.
func (c *Call) vcenterPool(z *models.Zone, clusterUUID string, pu *poolURL, spec *activities.PoolSpec) error {
	var clusters []models.Cluster
	q := c.S.DB.NewSelect().Model(&clusters).Where("zone_id = ? AND hypervisor_type = ? AND url IS NOT NULL AND url <> ''", z.ID, hypervisor.TypeVMware).Order("id")
	if clusterUUID != "" {
		q = q.Where("uuid = ?", clusterUUID)
	}
	if err := q.Scan(c.Ctx); err != nil {
		return err
	}
	host := pu.Host
	if pu.Port != 0 {
		host = net.JoinHostPort(pu.Host, strconv.Itoa(pu.Port))
	}
	for _, cl := range clusters {
		u, err := url.Parse(cl.URL)
		if err != nil || !strings.EqualFold(u.Host, host) {
			continue
		}
		parts := strings.Split(strings.Trim(pu.Path, "/"), "/")
		switch {
		case len(parts) == 1 && parts[0] != "":
			pu.Path = "/" + cl.VMwareDatacenter + "/" + parts[0]
			pool, _ := url.Parse(spec.URL)
			pool.Path = pu.Path
			spec.URL = pool.String()
		case len(parts) != 2 || parts[1] == "":
			return cserr.Param("url %q: a datastore pool is vmfs://vcenter/<datacenter>/<datastore>", clip(spec.URL, 128))
		case parts[0] != cl.VMwareDatacenter:
			return cserr.Param("Datacenter %s is not the zone's: zone %s maps to datacenter %s of vCenter %s", parts[0], z.Name, cl.VMwareDatacenter, host)
		}
		spec.Path = pu.Path
		vcenterTrust(cl.URL, spec)
		if pu.UserInfo != "" {
			return nil
		}
		var details []models.ClusterDetail
		if err := c.S.DB.NewSelect().Model(&details).Where("cluster_id = ? AND name IN (?)", cl.ID, bun.In([]string{"username", "password"})).Scan(c.Ctx); err != nil {
			return err
		}
		var user, pw string
		for _, d := range details {
			switch d.Name {
			case "username":
				user = d.Value
			case "password":
				if pw, err = c.S.Secrets.Decrypt(d.Value); err != nil {
					return cserr.Internal("cannot decrypt the vCenter password of cluster %s: %v", cl.Name, err)
				}
			}
		}
		pu.UserInfo = user + ":" + pw
		return nil
	}
	if clusterUUID != "" {
		return cserr.Param("Datastore pool %s is not on the vCenter of its cluster", clip(spec.URL, 128))
	}
	return cserr.Param("Datastore pool %s is on no vCenter of zone %s: add its vSphere cluster first", clip(spec.URL, 128), z.Name)
}

// vcenterTrust gives a datastore pool URL that says nothing of how its
// vCenter's certificate is trusted (thumbprint, cafile, insecure: see the
// vsphere driver) the cluster's.
func vcenterTrust(clusterURL string, spec *activities.PoolSpec) {
	cu, err := url.Parse(clusterURL)
	if err != nil {
		return
	}
	pool, err := url.Parse(spec.URL)
	if err != nil {
		return
	}
	pq, cq := pool.Query(), cu.Query()
	for _, k := range []string{"thumbprint", "cafile", "insecure"} {
		if pq.Has(k) {
			return
		}
	}
	n := 0
	for _, k := range []string{"thumbprint", "cafile", "insecure"} {
		if v := cq.Get(k); v != "" {
			pq.Set(k, v)
			n++
		}
	}
	if n > 0 {
		pool.RawQuery = pq.Encode()
		spec.URL = pool.String()
	}
}

func listStoragePools(c *Call) (any, error) {
	var rows []poolRow
	q := selectPools(c.S.DB, &rows).Order("storage_pool.id ASC")
	if c.Has("id") {
		q = q.Where("storage_pool.uuid = ?", c.Str("id"))
	}
	if c.Has("name") {
		q = q.Where("storage_pool.name = ?", c.Str("name"))
	}
	if c.Has("keyword") {
		q = q.Where("storage_pool.name LIKE ?", likePattern(c.Str("keyword")))
	}
	if c.Has("zoneid") {
		q = q.Where("z.uuid = ?", c.Str("zoneid"))
	}
	if c.Has("podid") {
		q = q.Where("p.uuid = ?", c.Str("podid"))
	}
	if c.Has("clusterid") {
		q = q.Where("c.uuid = ?", c.Str("clusterid"))
	}
	if c.Has("ipaddress") {
		q = q.Where("storage_pool.host_address = ?", c.Str("ipaddress"))
	}
	if c.Has("path") {
		q = q.Where("storage_pool.path = ?", c.Str("path"))
	}
	if c.Has("scope") {
		q = q.Where("storage_pool.scope = ?", strings.ToUpper(c.Str("scope")))
	}
	if c.Has("status") {
		q = q.Where("storage_pool.state = ?", c.Str("status"))
	}
	if c.Has("hostid") {
		h, err := c.hostByUUID(c.Str("hostid"))
		if err != nil {
			return nil, err
		}
		// The pools a host uses: its cluster's, its zone's of its
		// hypervisor type, and its own local storage.
		q = q.WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
			return q.Where("storage_pool.cluster_id = ? AND storage_pool.scope = ?", h.ClusterID, models.ScopeCluster).
				WhereOr("storage_pool.zone_id = ? AND storage_pool.scope = ? AND storage_pool.hypervisor = ?", h.ZoneID, models.ScopeZone, h.HypervisorType).
				WhereOr("storage_pool.host_id = ?", h.ID)
		})
	}
	limit, offset := c.Page()
	total, err := q.Limit(int64(limit)).Offset(int64(offset)).ScanAndCount(c.Ctx)
	if err != nil {
		return nil, err
	}
	views, err := c.S.poolViews(c.Ctx, rows)
	if err != nil {
		return nil, err
	}
	return List{Key: "storagepool", Count: int(total), Items: views}, nil
}

func updateStoragePool(c *Call) (any, error) {
	p, err := c.poolByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	if c.Bool("istagarule", false) {
		return nil, cserr.New(cserr.UnsupportedAction, "storage tag rules are not supported")
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewUpdate().Model((*models.StoragePool)(nil)).Where("id = ? AND state = ?", p.ID, p.State).
			Set("update_count = update_count + 1").Set("update_time = ?", models.Now())
		if b := c.BoolPtr("enabled"); b != nil {
			switch {
			case *b && p.State == models.PoolDisabled:
				p.State = models.PoolUp
			case !*b && p.State == models.PoolUp:
				p.State = models.PoolDisabled
			case *b && p.State == models.PoolUp, !*b && p.State == models.PoolDisabled:
			default:
				return cserr.Param("Storage pool %s is %s; only an Up pool is disabled and only a Disabled one enabled", p.Name, p.State)
			}
			q = q.Set("state = ?", p.State)
		}
		if c.Has("name") {
			name := strings.TrimSpace(c.Str("name"))
			n, err := tx.NewSelect().Model((*models.StoragePool)(nil)).Where("zone_id = ? AND name = ? AND id <> ?", p.ZoneID, name, p.ID).Count(ctx)
			if err != nil {
				return err
			}
			if n > 0 {
				return cserr.Param("A storage pool named %q already exists in this zone", name)
			}
			q = q.Set("name = ?", name)
		}
		if c.Has("capacitybytes") {
			b := c.Int("capacitybytes", 0)
			if b < p.UsedBytes || b <= 0 {
				return cserr.Param("capacitybytes %d is below what the pool uses (%d bytes)", b, p.UsedBytes)
			}
			p.CapacityBytes = b
			q = q.Set("capacity_bytes = ?", b)
		}
		if c.Has("capacityiops") {
			q = q.Set("capacity_iops = ?", c.Int("capacityiops", 0))
		}
		if c.Has("url") {
			if p.State != models.PoolMaintenance {
				return cserr.Param("The URL of storage pool %s changes only in maintenance", p.Name)
			}
			pu, err := parsePoolURL(c.Str("url"))
			if err != nil {
				return err
			}
			if pu.Type != p.PoolType {
				return cserr.Param("The new URL is a %s pool; storage pool %s is %s", pu.Type, p.Name, p.PoolType)
			}
			q = q.Set("url = ?", c.Str("url")).Set("host_address = ?", pu.Host).Set("path = ?", pu.Path)
		}
		res, err := q.Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return cserr.Param("Storage pool %s changed meanwhile; try again", p.Name)
		}
		if c.Has("tags") {
			if err := activities.SetPoolTags(ctx, tx, p.ID, c.List("tags")); err != nil {
				return err
			}
		}
		return activities.SyncPoolCapacity(ctx, tx, p)
	})
	if err != nil {
		return nil, err
	}
	c.Event("STORAGE.POOL.UPDATE", "StoragePool", p.UUID, "updated primary storage "+p.Name)
	v, err := c.S.poolView(c.Ctx, p.UUID)
	if err != nil {
		return nil, err
	}
	return Object{"storagepool": v}, nil
}

func enableStorageMaintenance(c *Call) (any, error) {
	p, err := c.poolByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	switch p.State {
	case models.PoolMaintenance, models.PoolPrepareForMaintenance:
		return nil, cserr.Param("Storage pool %s is already %s", p.Name, p.State)
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.EnableStorageMaintenance, Input: workflows.StoragePoolInput{PoolUUID: p.UUID, Actor: actorOf(c.Caller)},
		InstanceType: "StoragePool", InstanceUUID: p.UUID, ResponseID: p.UUID, Summary: "maintenance of primary storage " + p.Name,
	})
}

func cancelStorageMaintenance(c *Call) (any, error) {
	p, err := c.poolByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	switch p.State {
	case models.PoolMaintenance, models.PoolPrepareForMaintenance, models.PoolErrorInMaintenance, models.PoolErrorInPrepareForMaintenance:
	default:
		return nil, cserr.Param("Storage pool %s is %s, not in maintenance", p.Name, p.State)
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.CancelStorageMaintenance, Input: workflows.StoragePoolInput{PoolUUID: p.UUID, Actor: actorOf(c.Caller)},
		InstanceType: "StoragePool", InstanceUUID: p.UUID, ResponseID: p.UUID, Summary: "end maintenance of primary storage " + p.Name,
	})
}

func deleteStoragePool(c *Call) (any, error) {
	p, err := c.poolByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	live := []string{models.VolumeDestroy, models.VolumeExpunged}
	if c.Bool("forced", false) {
		live = []string{models.VolumeDestroy, models.VolumeExpunged, models.VolumeExpunging}
	}
	n, err := c.S.DB.NewSelect().Model((*models.Volume)(nil)).Where("pool_id = ? AND state NOT IN (?)", p.ID, bun.In(live)).Count(c.Ctx)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		return nil, cserr.InUse("Storage pool %s holds %d volume(s); delete or migrate them first", p.Name, n)
	}
	if _, err := c.RunJobSync(JobSpec{
		Workflow: workflows.DeleteStoragePool, Input: workflows.StoragePoolInput{PoolUUID: p.UUID, Actor: actorOf(c.Caller)},
		InstanceType: "StoragePool", InstanceUUID: p.UUID, Summary: "delete primary storage " + p.Name,
	}, storageJobTimeout); err != nil {
		return nil, err
	}
	return Success{Success: true}, nil
}

// ---- secondary storage ----

type storeRow struct {
	models.ImageStore `bun:",extend"`
	ZoneUUID          string `bun:"zone_uuid"`
	ZoneName          string `bun:"zone_name"`
}

func selectStores(db bun.IDB, rows *[]storeRow) *bun.SelectQuery {
	return db.NewSelect().Model(rows).
		ColumnExpr("image_store.*").ColumnExpr("z.uuid AS zone_uuid, z.name AS zone_name").
		Join("LEFT JOIN zones AS z ON z.id = image_store.zone_id")
}

func storeViewOf(r *storeRow) StoreView {
	return StoreView{
		ID: r.UUID, Name: r.Name, ProviderName: r.ProviderName, Protocol: r.Protocol, URL: r.URL, Scope: r.Scope,
		ZoneID: r.ZoneUUID, ZoneName: r.ZoneName, DiskSizeTotal: r.TotalSize, DiskSizeUsed: r.UsedBytes, ReadOnly: r.ReadOnly,
	}
}

func (s *Server) storeView(ctx context.Context, id string) (StoreView, error) {
	var rows []storeRow
	if err := selectStores(s.DB, &rows).Where("image_store.uuid = ?", id).Scan(ctx); err != nil {
		return StoreView{}, err
	}
	if len(rows) == 0 {
		return StoreView{}, cserr.Param("Unable to find image store by id %s", id)
	}
	return storeViewOf(&rows[0]), nil
}

// storeProtocol is the protocol CloudStack shows for a store URL.
func storeProtocol(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Scheme != "" {
		return strings.ToLower(u.Scheme)
	}
	return ""
}

// secretStoreDetails are provider details stored encrypted.
var secretStoreDetails = []string{"secretkey", "key", "password"}

// newStoreSpec checks an image store request and builds its job input.
func (c *Call) newStoreSpec(provider, role string) (activities.ImageStoreSpec, error) {
	p, err := storage.CanonicalProvider(provider)
	if err != nil {
		return activities.ImageStoreSpec{}, cserr.Param("%s", err.Error())
	}
	spec := activities.ImageStoreSpec{
		StoreUUID: models.NewUUID(), Name: strings.TrimSpace(c.Str("name")), Provider: p, Role: role,
		URL: strings.TrimSpace(c.Str("url")), Details: detailsParam(c, "details"), Actor: actorOf(c.Caller),
	}
	switch p {
	case storage.ProviderNFS:
		spec.Scope = models.ScopeZone
		if !c.Has("zoneid") {
			return spec, cserr.Param("an NFS store belongs to a zone: zoneid is required")
		}
		if spec.URL == "" {
			return spec, cserr.Param("an NFS store needs its url (nfs://server/export)")
		}
		if s := storeProtocol(spec.URL); s != "nfs" && s != "file" {
			return spec, cserr.Param("url %q: an NFS store needs nfs://server/export (or file:///dir)", clip(spec.URL, 128))
		}
	case storage.ProviderS3:
		spec.Scope = models.ScopeRegion
		var missing []string
		for _, k := range []string{"bucket", "accesskey", "secretkey"} {
			if spec.Details[k] == "" {
				missing = append(missing, k)
			}
		}
		if spec.Details["endpoint"] == "" && spec.URL == "" {
			missing = append(missing, "endpoint")
		}
		if len(missing) > 0 {
			return spec, cserr.Param("an S3 store needs details %s", strings.Join(missing, ", "))
		}
		if spec.URL == "" {
			scheme := "https"
			if strings.EqualFold(spec.Details["usehttps"], "false") {
				scheme = "http"
			}
			spec.URL = scheme + "://" + spec.Details["endpoint"] + "/" + spec.Details["bucket"]
		}
	case storage.ProviderSwift:
		spec.Scope = models.ScopeRegion
		if spec.URL == "" || spec.Details["account"] == "" || spec.Details["username"] == "" || spec.Details["key"] == "" {
			return spec, cserr.Param("a Swift store needs its url and details account, username and key")
		}
	default:
		return spec, cserr.New(cserr.UnsupportedAction, "image store provider %s is not supported for secondary storage", p)
	}
	if c.Has("zoneid") {
		z, err := c.zoneByUUID(c.Str("zoneid"))
		if err != nil {
			return spec, err
		}
		spec.ZoneUUID = z.UUID
		if spec.Scope == models.ScopeRegion {
			return spec, cserr.Param("%s stores serve the whole region: no zoneid", p)
		}
	}
	spec.Protocol = storeProtocol(spec.URL)
	if spec.Name == "" {
		spec.Name = spec.URL
	}
	for _, k := range secretStoreDetails {
		if v := spec.Details[k]; v != "" {
			sealed, err := c.S.Secrets.Encrypt(v)
			if err != nil {
				return spec, err
			}
			spec.Details[k] = sealed
			spec.Secret = append(spec.Secret, k)
		}
	}
	sort.Strings(spec.Secret)
	if n, err := c.S.DB.NewSelect().Model((*models.ImageStore)(nil)).Where("name = ?", spec.Name).Count(c.Ctx); err != nil {
		return spec, err
	} else if n > 0 {
		return spec, cserr.Param("An image store named %q already exists", spec.Name)
	}
	return spec, nil
}

func (c *Call) runStoreJob(spec activities.ImageStoreSpec, what string) (StoreView, error) {
	if _, err := storage.GetImageStore(spec.Provider); err != nil {
		if errors.Is(err, hypervisor.ErrNotSupported) {
			return StoreView{}, cserr.New(cserr.UnsupportedAction, "%s", err.Error())
		}
		return StoreView{}, err
	}
	out, err := c.RunJobSync(JobSpec{
		Workflow: workflows.AddImageStore, Input: spec, InstanceType: "ImageStore", InstanceUUID: spec.StoreUUID,
		ResponseID: spec.StoreUUID, Summary: what + " " + spec.Name,
	}, storageJobTimeout)
	if err != nil {
		return StoreView{}, err
	}
	return c.S.storeView(c.Ctx, out.ResultUUID)
}

func addImageStore(c *Call) (any, error) {
	spec, err := c.newStoreSpec(c.Str("provider"), models.ImageRoleImage)
	if err != nil {
		return nil, err
	}
	// Heterogeneous secondary storage is not supported: NFS image stores and
	// object stores (S3, Swift) do not mix.
	var others []string
	if err := c.S.DB.NewSelect().Model((*models.ImageStore)(nil)).Column("image_provider_name").
		Where("role = ? AND image_provider_name <> ?", models.ImageRoleImage, spec.Provider).Scan(c.Ctx, &others); err != nil {
		return nil, err
	}
	if len(others) > 0 {
		return nil, cserr.Param("The cloud's secondary storage is %s: %s stores cannot be added beside it (heterogeneous secondary storage is not supported)", others[0], spec.Provider)
	}
	v, err := c.runStoreJob(spec, "add image store")
	if err != nil {
		return nil, err
	}
	return Object{"imagestore": v}, nil
}

func createSecondaryStagingStore(c *Call) (any, error) {
	provider := c.Str("provider")
	if provider == "" {
		provider = storage.ProviderNFS
	}
	if !strings.EqualFold(provider, storage.ProviderNFS) {
		return nil, cserr.Param("a staging store is NFS, not %s", clip(provider, 32))
	}
	if s := c.Str("scope"); s != "" && !strings.EqualFold(s, "zone") {
		return nil, cserr.Param("a staging store serves one zone: scope zone")
	}
	spec, err := c.newStoreSpec(provider, models.ImageRoleImageCache)
	if err != nil {
		return nil, err
	}
	v, err := c.runStoreJob(spec, "add staging store")
	if err != nil {
		return nil, err
	}
	return Object{"secondarystorage": v}, nil
}

func listStores(c *Call, role, key string) (any, error) {
	var rows []storeRow
	q := selectStores(c.S.DB, &rows).Where("image_store.role = ?", role).Order("image_store.id ASC")
	if c.Has("id") {
		q = q.Where("image_store.uuid = ?", c.Str("id"))
	}
	if c.Has("name") {
		q = q.Where("image_store.name = ?", c.Str("name"))
	}
	if c.Has("keyword") {
		q = q.Where("image_store.name LIKE ?", likePattern(c.Str("keyword")))
	}
	if c.Has("zoneid") {
		q = q.Where("z.uuid = ?", c.Str("zoneid"))
	}
	if c.Has("provider") {
		q = q.Where("image_store.image_provider_name = ?", c.Str("provider"))
	}
	if c.Has("protocol") {
		q = q.Where("image_store.protocol = ?", strings.ToLower(c.Str("protocol")))
	}
	if b := c.BoolPtr("readonly"); b != nil {
		q = q.Where("image_store.readonly = ?", *b)
	}
	limit, offset := c.Page()
	total, err := q.Limit(int64(limit)).Offset(int64(offset)).ScanAndCount(c.Ctx)
	if err != nil {
		return nil, err
	}
	views := make([]StoreView, len(rows))
	for i := range rows {
		views[i] = storeViewOf(&rows[i])
	}
	return List{Key: key, Count: int(total), Items: views}, nil
}

func listImageStores(c *Call) (any, error) {
	return listStores(c, models.ImageRoleImage, "imagestore")
}

func listSecondaryStagingStores(c *Call) (any, error) {
	return listStores(c, models.ImageRoleImageCache, "secondarystagingstore")
}

func deleteStore(c *Call, role string) (any, error) {
	var st models.ImageStore
	if err := c.S.DB.NewSelect().Model(&st).Where("uuid = ? AND role = ?", c.Str("id"), role).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, cserr.Param("Unable to find image store by id %s", c.Str("id"))
		}
		return nil, err
	}
	err := c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		tmpl, err := tx.NewSelect().Model((*models.TemplateStoreRef)(nil)).
			Where("store_id = ? AND store_role = ? AND destroyed = ?", st.ID, st.Role, false).Count(ctx)
		if err != nil {
			return err
		}
		snaps, err := tx.NewSelect().Model((*models.SnapshotStoreRef)(nil)).
			Where("store_id = ? AND store_role = ? AND state <> ?", st.ID, models.StoreRoleImage, models.SnapshotDestroyed).Count(ctx)
		if err != nil {
			return err
		}
		if role == models.ImageRoleImageCache {
			snaps = 0 // staging copies are caches
		}
		if tmpl > 0 || snaps > 0 {
			return cserr.InUse("Image store %s still holds %d template/ISO cop(ies) and %d snapshot(s); delete or move them first", st.Name, tmpl, snaps)
		}
		if role == models.ImageRoleImageCache {
			if _, err := tx.NewDelete().Model((*models.TemplateStoreRef)(nil)).Where("store_id = ? AND store_role = ?", st.ID, st.Role).Exec(ctx); err != nil {
				return err
			}
		}
		if _, err := tx.NewDelete().Model((*models.ImageStoreDetail)(nil)).Where("store_id = ?", st.ID).Exec(ctx); err != nil {
			return err
		}
		_, err = tx.NewDelete().Model(&st).WherePK().Exec(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.Event("IMAGE.STORE.DELETE", "ImageStore", st.UUID, "deleted image store "+st.Name)
	return Success{Success: true}, nil
}

func deleteImageStore(c *Call) (any, error) { return deleteStore(c, models.ImageRoleImage) }

func deleteSecondaryStagingStore(c *Call) (any, error) {
	return deleteStore(c, models.ImageRoleImageCache)
}
