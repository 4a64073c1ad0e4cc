package api

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/models"
)

func init() {
	Register(&Command{
		Name: "listCapacity", Description: "Lists the capacity of zones, pods or clusters: CPU, memory, primary and secondary storage, IP addresses, VLANs", Access: AccessRootAdmin,
		Params: append(ListParams(),
			Param{Name: "zoneid", Type: TUUID, Description: "capacity of this zone"},
			Param{Name: "podid", Type: TUUID, Description: "capacity of this pod (per pod)"},
			Param{Name: "clusterid", Type: TUUID, Description: "capacity of this cluster (per cluster)"},
			Param{Name: "type", Type: TInteger, Description: "one type: 0 memory, 1 CPU, 2 storage, 3 storage allocated, 4 public IPs, 5 private IPs, 6 secondary storage, 7 VLANs, 8 direct attached public IPs, 9 local storage"},
			Param{Name: "fetchlatest", Type: TBoolean, Description: "accepted for compatibility: Nimbus computes capacity when asked"},
			Param{Name: "sortby", Type: TString, Description: "usage: most used first"},
		),
		ResponseName: "capacity", Response: capacityFields, Handler: listCapacity,
	})
}

var capacityFields = []Field{
	{"type", "integer", "the capacity type"}, {"name", "string", "the capacity type's name"},
	{"zoneid", "string", "the zone"}, {"zonename", "string", "its name"},
	{"podid", "string", "the pod (per-pod capacity)"}, {"podname", "string", "its name"},
	{"clusterid", "string", "the cluster (per-cluster capacity)"}, {"clustername", "string", "its name"},
	{"capacitytotal", "long", "total (MHz, bytes or count; CPU and memory with the overcommit factor)"},
	{"capacityused", "long", "used or allocated"}, {"capacityallocated", "long", "allocated"},
	{"percentused", "string", "used as a percentage of total"},
}

// CapacityView is one capacity figure (the SDK's Capacity and ClusterCapacity).
type CapacityView struct {
	Type              int    `json:"type"`
	Name              string `json:"name"`
	ZoneID            string `json:"zoneid,omitempty"`
	ZoneName          string `json:"zonename,omitempty"`
	PodID             string `json:"podid,omitempty"`
	PodName           string `json:"podname,omitempty"`
	ClusterID         string `json:"clusterid,omitempty"`
	ClusterName       string `json:"clustername,omitempty"`
	CapacityTotal     int64  `json:"capacitytotal"`
	CapacityUsed      int64  `json:"capacityused"`
	CapacityAllocated int64  `json:"capacityallocated"`
	PercentUsed       string `json:"percentused"`
}

var capacityNames = map[int]string{
	models.CapacityMemory: "MEMORY", models.CapacityCPU: "CPU", models.CapacityStorage: "STORAGE",
	models.CapacityStorageAllocated: "STORAGE_ALLOCATED", models.CapacityVirtualNetworkPublicIP: "VIRTUAL_NETWORK_PUBLIC_IP",
	models.CapacityPrivateIP: "PRIVATE_IP", models.CapacitySecondaryStorage: "SECONDARY_STORAGE", models.CapacityVLAN: "VLAN",
	models.CapacityDirectAttachedPublicIP: "DIRECT_ATTACHED_PUBLIC_IP", models.CapacityLocalStorage: "LOCAL_STORAGE",
	models.CapacityCPUCore: "CPU_CORE",
}

type capacityLevel int

const (
	levelZone capacityLevel = iota
	levelPod
	levelCluster
)

// capacityFilter narrows listCapacity; Level is what figures are summed by.
type capacityFilter struct {
	ZoneID, PodID, ClusterID int64
	Type                     *int
	Level                    capacityLevel
}

// capacityAgg is one summed figure of one zone, pod or cluster.
type capacityAgg struct {
	Key   int64  `bun:"k"`
	Total sqlNum `bun:"total"`
	Used  sqlNum `bun:"used"`
}

// sqlNum scans whatever number a SUM yields: an integer or a real on
// SQLite, a decimal (as text) on MySQL, NULL for no rows.
type sqlNum float64

// Scan implements sql.Scanner.
func (n *sqlNum) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*n = 0
	case int64:
		*n = sqlNum(v)
	case float64:
		*n = sqlNum(v)
	case []byte:
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return err
		}
		*n = sqlNum(f)
	case string:
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return err
		}
		*n = sqlNum(f)
	default:
		return fmt.Errorf("capacity: cannot scan %T", src)
	}
	return nil
}

// percent formats as CloudStack's "##.##".
func percent(used, total int64) string {
	if total <= 0 {
		return "0"
	}
	p := math.Round(float64(used)*10000/float64(total)) / 100
	return strconv.FormatFloat(p, 'f', -1, 64)
}

// capacities computes the capacity figures from the inventory: CPU and
// memory from op_host_capacity (totals from discovery times the cluster's
// overcommit factor, used from what the planner allocated on the hosts),
// storage from the pools, IPs and VLANs from their allocation tables. Only
// enabled capacity counts: hosts disabled or in maintenance, pools disabled
// or in maintenance do not.
func (s *Server) capacities(ctx context.Context, f capacityFilter) ([]CapacityView, error) {
	type source struct {
		typ    int
		levels []capacityLevel
		query  func(key string) *bun.SelectQuery
		// keyCol returns the grouping column for a level.
		keyCol func(capacityLevel) string
	}
	col := func(alias string) func(capacityLevel) string {
		return func(l capacityLevel) string {
			switch l {
			case levelPod:
				return alias + ".pod_id"
			case levelCluster:
				return alias + ".cluster_id"
			}
			return alias + ".zone_id"
		}
	}
	scope := func(q *bun.SelectQuery, alias string, levels ...capacityLevel) *bun.SelectQuery {
		if f.ZoneID != 0 {
			q = q.Where(alias+".zone_id = ?", f.ZoneID)
		}
		if f.PodID != 0 {
			q = q.Where(alias+".pod_id = ?", f.PodID)
		}
		if f.ClusterID != 0 {
			q = q.Where(alias+".cluster_id = ?", f.ClusterID)
		}
		return q
	}
	hostCap := func(typ int, ratioCol, usedCol string) func(string) *bun.SelectQuery {
		return func(key string) *bun.SelectQuery {
			q := s.DB.NewSelect().TableExpr("op_host_capacity AS oc").
				ColumnExpr(key+" AS k").
				ColumnExpr("SUM(oc.total_capacity * COALESCE(c."+ratioCol+", 1)) AS total").
				ColumnExpr("SUM(h."+usedCol+") AS used").
				Join("JOIN hosts AS h ON h.id = oc.host_id AND h.removed IS NULL").
				Join("LEFT JOIN clusters AS c ON c.id = oc.cluster_id").
				Where("oc.capacity_type = ? AND oc.capacity_state = ?", typ, models.AllocationEnabled)
			return scope(q, "oc").GroupExpr(key)
		}
	}
	poolCap := func(local bool, total, used string) func(string) *bun.SelectQuery {
		return func(key string) *bun.SelectQuery {
			q := s.DB.NewSelect().TableExpr("storage_pools AS sp").
				ColumnExpr(key+" AS k").ColumnExpr("SUM("+total+") AS total").ColumnExpr("SUM("+used+") AS used").
				Where("sp.removed IS NULL").
				Where("sp.state NOT IN (?)", bun.In([]string{models.PoolMaintenance, models.PoolPrepareForMaintenance,
					models.PoolErrorInMaintenance, models.PoolDisabled, models.PoolRemoved}))
			if local {
				q = q.Where("sp.scope = ?", models.ScopeHost)
			} else {
				q = q.Where("sp.scope <> ?", models.ScopeHost)
			}
			return scope(q, "sp").Where(key + " IS NOT NULL").GroupExpr(key)
		}
	}
	publicIPs := func(vlanType string) func(string) *bun.SelectQuery {
		return func(key string) *bun.SelectQuery {
			q := s.DB.NewSelect().TableExpr("ip_addresses AS ia").
				ColumnExpr(key+" AS k").ColumnExpr("COUNT(*) AS total").
				ColumnExpr("SUM(CASE WHEN ia.state <> ? THEN 1 ELSE 0 END) AS used", models.IPFree).
				Join("JOIN vlans AS v ON v.id = ia.vlan_id AND v.removed IS NULL").
				Where("v.vlan_type = ?", vlanType)
			if f.ZoneID != 0 {
				q = q.Where("ia.zone_id = ?", f.ZoneID)
			}
			return q.GroupExpr(key)
		}
	}
	sources := []source{
		{typ: models.CapacityMemory, levels: []capacityLevel{levelZone, levelPod, levelCluster}, keyCol: col("oc"),
			query: hostCap(models.CapacityMemory, "mem_overcommit_ratio", "mem_allocated")},
		{typ: models.CapacityCPU, levels: []capacityLevel{levelZone, levelPod, levelCluster}, keyCol: col("oc"),
			query: hostCap(models.CapacityCPU, "cpu_overcommit_ratio", "cpu_allocated")},
		{typ: models.CapacityStorage, levels: []capacityLevel{levelZone, levelPod, levelCluster}, keyCol: col("sp"),
			query: poolCap(false, "sp.capacity_bytes", "sp.used_bytes")},
		{typ: models.CapacityStorageAllocated, levels: []capacityLevel{levelZone, levelPod, levelCluster}, keyCol: col("sp"),
			query: poolCap(false, "sp.capacity_bytes", "sp.allocated_bytes")},
		{typ: models.CapacityLocalStorage, levels: []capacityLevel{levelZone, levelPod, levelCluster}, keyCol: col("sp"),
			query: poolCap(true, "sp.capacity_bytes", "sp.used_bytes")},
		{typ: models.CapacityVirtualNetworkPublicIP, levels: []capacityLevel{levelZone}, keyCol: col("ia"),
			query: publicIPs(models.VlanTypeVirtualNetwork)},
		{typ: models.CapacityDirectAttachedPublicIP, levels: []capacityLevel{levelZone}, keyCol: col("ia"),
			query: publicIPs(models.VlanTypeDirectAttached)},
		{typ: models.CapacityPrivateIP, levels: []capacityLevel{levelZone, levelPod}, keyCol: col("pa"),
			query: func(key string) *bun.SelectQuery {
				q := s.DB.NewSelect().TableExpr("op_dc_ip_address_alloc AS pa").
					ColumnExpr(key + " AS k").ColumnExpr("COUNT(*) AS total").
					ColumnExpr("SUM(CASE WHEN pa.taken IS NOT NULL OR pa.nic_id IS NOT NULL THEN 1 ELSE 0 END) AS used")
				if f.ZoneID != 0 {
					q = q.Where("pa.zone_id = ?", f.ZoneID)
				}
				if f.PodID != 0 {
					q = q.Where("pa.pod_id = ?", f.PodID)
				}
				return q.GroupExpr(key)
			}},
		{typ: models.CapacitySecondaryStorage, levels: []capacityLevel{levelZone}, keyCol: col("st"),
			query: func(key string) *bun.SelectQuery {
				q := s.DB.NewSelect().TableExpr("image_stores AS st").
					ColumnExpr(key+" AS k").ColumnExpr("SUM(st.total_size) AS total").ColumnExpr("SUM(st.used_bytes) AS used").
					Where("st.removed IS NULL AND st.role = ? AND st.zone_id IS NOT NULL", models.ImageRoleImage)
				if f.ZoneID != 0 {
					q = q.Where("st.zone_id = ?", f.ZoneID)
				}
				return q.GroupExpr(key)
			}},
		{typ: models.CapacityVLAN, levels: []capacityLevel{levelZone}, keyCol: col("vn"),
			query: func(key string) *bun.SelectQuery {
				q := s.DB.NewSelect().TableExpr("op_dc_vnet_alloc AS vn").
					ColumnExpr(key + " AS k").ColumnExpr("COUNT(*) AS total").
					ColumnExpr("SUM(CASE WHEN vn.taken IS NOT NULL OR vn.network_id IS NOT NULL THEN 1 ELSE 0 END) AS used")
				if f.ZoneID != 0 {
					q = q.Where("vn.zone_id = ?", f.ZoneID)
				}
				return q.GroupExpr(key)
			}},
	}
	type figure struct {
		typ  int
		key  int64
		agg  capacityAgg
		used int64
	}
	var figs []figure
	keys := map[int64]bool{}
	for _, src := range sources {
		if f.Type != nil && *f.Type != src.typ {
			continue
		}
		ok := false
		for _, l := range src.levels {
			ok = ok || l == f.Level
		}
		if !ok {
			continue
		}
		var aggs []capacityAgg
		if err := src.query(src.keyCol(f.Level)).Scan(ctx, &aggs); err != nil {
			return nil, err
		}
		for _, a := range aggs {
			if a.Key == 0 {
				continue
			}
			figs = append(figs, figure{typ: src.typ, key: a.Key, agg: a})
			keys[a.Key] = true
		}
	}
	names, err := s.capacityPlaces(ctx, f.Level, keys)
	if err != nil {
		return nil, err
	}
	out := make([]CapacityView, 0, len(figs))
	for _, fg := range figs {
		total, used := int64(math.Round(float64(fg.agg.Total))), int64(math.Round(float64(fg.agg.Used)))
		v := CapacityView{Type: fg.typ, Name: capacityNames[fg.typ], CapacityTotal: total, CapacityUsed: used,
			CapacityAllocated: used, PercentUsed: percent(used, total)}
		p := names[fg.key]
		v.ZoneID, v.ZoneName, v.PodID, v.PodName, v.ClusterID, v.ClusterName = p.zoneID, p.zoneName, p.podID, p.podName, p.clusterID, p.clusterName
		out = append(out, v)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].ZoneName != out[j].ZoneName {
			return out[i].ZoneName < out[j].ZoneName
		}
		if out[i].PodName+out[i].ClusterName != out[j].PodName+out[j].ClusterName {
			return out[i].PodName+out[i].ClusterName < out[j].PodName+out[j].ClusterName
		}
		return out[i].Type < out[j].Type
	})
	return out, nil
}

type capacityPlace struct {
	zoneID, zoneName, podID, podName, clusterID, clusterName string
}

// capacityPlaces names the zones, pods or clusters figures were summed by.
func (s *Server) capacityPlaces(ctx context.Context, level capacityLevel, keys map[int64]bool) (map[int64]capacityPlace, error) {
	out := map[int64]capacityPlace{}
	if len(keys) == 0 {
		return out, nil
	}
	ids := make([]int64, 0, len(keys))
	for k := range keys {
		ids = append(ids, k)
	}
	var rows []struct {
		ID          int64  `bun:"id"`
		ZoneUUID    string `bun:"zone_uuid"`
		ZoneName    string `bun:"zone_name"`
		PodUUID     string `bun:"pod_uuid"`
		PodName     string `bun:"pod_name"`
		ClusterUUID string `bun:"cluster_uuid"`
		ClusterName string `bun:"cluster_name"`
	}
	var q *bun.SelectQuery
	switch level {
	case levelCluster:
		q = s.DB.NewSelect().TableExpr("clusters AS c").
			ColumnExpr("c.id, z.uuid AS zone_uuid, z.name AS zone_name, p.uuid AS pod_uuid, p.name AS pod_name, c.uuid AS cluster_uuid, c.name AS cluster_name").
			Join("LEFT JOIN pods AS p ON p.id = c.pod_id").Join("LEFT JOIN zones AS z ON z.id = c.zone_id").
			Where("c.id IN (?)", bun.In(ids))
	case levelPod:
		q = s.DB.NewSelect().TableExpr("pods AS p").
			ColumnExpr("p.id, z.uuid AS zone_uuid, z.name AS zone_name, p.uuid AS pod_uuid, p.name AS pod_name").
			Join("LEFT JOIN zones AS z ON z.id = p.zone_id").Where("p.id IN (?)", bun.In(ids))
	default:
		q = s.DB.NewSelect().TableExpr("zones AS z").
			ColumnExpr("z.id, z.uuid AS zone_uuid, z.name AS zone_name").Where("z.id IN (?)", bun.In(ids))
	}
	if err := q.Scan(ctx, &rows); err != nil {
		return nil, err
	}
	for _, r := range rows {
		out[r.ID] = capacityPlace{r.ZoneUUID, r.ZoneName, r.PodUUID, r.PodName, r.ClusterUUID, r.ClusterName}
	}
	return out, nil
}

func listCapacity(c *Call) (any, error) {
	var f capacityFilter
	if c.Has("zoneid") {
		z, err := c.zoneByUUID(c.Str("zoneid"))
		if err != nil {
			return nil, err
		}
		f.ZoneID = z.ID
	}
	if c.Has("podid") {
		p, err := c.podOfZone(c.Str("podid"), nil)
		if err != nil {
			return nil, err
		}
		f.PodID, f.Level = p.ID, levelPod
	}
	if c.Has("clusterid") {
		cl, err := c.clusterByUUID(c.Str("clusterid"))
		if err != nil {
			return nil, err
		}
		f.ClusterID, f.Level = cl.ID, levelCluster
	}
	if c.Has("type") {
		t := int(c.Int("type", 0))
		f.Type = &t
	}
	caps, err := c.S.capacities(c.Ctx, f)
	if err != nil {
		return nil, err
	}
	if strings.EqualFold(c.Str("sortby"), "usage") {
		pct := func(v CapacityView) float64 {
			if v.CapacityTotal <= 0 {
				return 0
			}
			return float64(v.CapacityUsed) / float64(v.CapacityTotal)
		}
		sort.SliceStable(caps, func(i, j int) bool { return pct(caps[i]) > pct(caps[j]) })
	}
	total := len(caps)
	limit, offset := c.Page()
	if offset > len(caps) {
		offset = len(caps)
	}
	caps = caps[offset:min(len(caps), offset+limit)]
	return List{Key: "capacity", Count: total, Items: caps}, nil
}
