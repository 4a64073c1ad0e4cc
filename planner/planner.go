// Package planner chooses where a VM goes: zone > pod > cluster > host with
// CPU and memory headroom (after the cluster's overcommit factors), host
// tags, affinity and anti-affinity, and a storage pool with room and the
// offering's tags. It is plain Go over snapshots of the inventory so that it
// is unit-testable; the deploy workflow loads the snapshot, asks for an
// ordered list of placements, and reserves the first one whose guarded
// capacity update succeeds (so concurrent deploys never oversubscribe).
//
// When nothing fits, the error says which constraint excluded which
// resources, instead of CloudStack's opaque "Unable to create a deployment".
package planner

import (
	"fmt"
	"sort"
	"strings"
)

// Request is what one VM needs.
type Request struct {
	VCPUs       int
	MHz         int   // per vCPU
	MemoryBytes int64 // RAM
	// HostTags must all be present on the host (offering host tags).
	HostTags []string
	// Disks to place: the root disk first.
	Disks []DiskRequest
	// Pins from an admin (hostid) or the caller's choice of pod/cluster; 0 = any.
	PodID, ClusterID, HostID int64
	// Hypervisor restricts hosts to one type ("" = any), e.g. the template's.
	Hypervisor string
	// AntiAffinity are hosts that already run a VM of one of the request's
	// host anti-affinity groups; Affinity, when non-empty, are the only hosts
	// allowed (host affinity groups).
	AntiAffinity map[int64]bool
	Affinity     map[int64]bool
	// Avoid are hosts and pools an earlier attempt failed on.
	AvoidHosts map[int64]bool
	AvoidPools map[int64]bool
}

// DiskRequest is one volume to place.
type DiskRequest struct {
	SizeBytes int64
	Tags      []string // storage tags from the disk offering
	Local     bool     // local storage offering: a host-scoped pool
}

// Host is a snapshot of one host and what is allocated on it.
type Host struct {
	ID, ClusterID, PodID int64
	Name                 string
	Hypervisor           string
	Up                   bool // agent state Up
	Enabled              bool // resource state Enabled (not disabled, not in maintenance)
	Tags                 []string
	CPUs                 int   // cores
	MHz                  int   // per core
	MemoryBytes          int64 // physical
	UsedMHz              int64 // allocated (used + reserved)
	UsedMemory           int64
}

// Cluster carries the overcommit factors and allocation state.
type Cluster struct {
	ID, PodID      int64
	Name           string
	Enabled        bool
	CPUOvercommit  float64 // >= 1 usually; 0 means 1
	MemOvercommit  float64
	CPUDisableFrac float64 // allocation fraction beyond which no new VMs; 0 means 1
	MemDisableFrac float64
}

// Pod carries its allocation state.
type Pod struct {
	ID      int64
	Name    string
	Enabled bool
}

// Pool is a snapshot of a primary storage pool.
type Pool struct {
	ID          int64
	Name        string
	ClusterID   int64 // 0 for zone-wide
	HostID      int64 // set for host-local pools
	Up          bool  // state Up (not in maintenance)
	Tags        []string
	Capacity    int64
	Allocated   int64
	Overcommit  float64 // thin provisioning factor; 0 means 1
	DisableFrac float64 // allocation fraction beyond which no new volumes; 0 means 1
}

// Snapshot is the inventory the planner sees.
type Snapshot struct {
	Pods     []Pod
	Clusters []Cluster
	Hosts    []Host
	Pools    []Pool
}

// Placement is one way to place the request.
type Placement struct {
	HostID    int64
	ClusterID int64
	PodID     int64
	PoolIDs   []int64 // one per disk, in Request.Disks order
}

// NoCapacity explains why nothing fits: for each constraint, which
// resources it excluded.
type NoCapacity struct {
	Excluded map[string][]string
}

func (e *NoCapacity) Error() string {
	if len(e.Excluded) == 0 {
		return "no host in the zone"
	}
	keys := make([]string, 0, len(e.Excluded))
	for k := range e.Excluded {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("no host can take the VM:")
	for _, k := range keys {
		names := e.Excluded[k]
		shown := names
		if len(shown) > 5 {
			shown = shown[:5]
		}
		fmt.Fprintf(&b, " %s: %s", k, strings.Join(shown, ", "))
		if len(names) > len(shown) {
			fmt.Fprintf(&b, " and %d more", len(names)-len(shown))
		}
		b.WriteString(";")
	}
	return strings.TrimSuffix(b.String(), ";")
}

func (e *NoCapacity) add(reason, name string) {
	if e.Excluded == nil {
		e.Excluded = map[string][]string{}
	}
	e.Excluded[reason] = append(e.Excluded[reason], name)
}

func ratio(f float64) float64 {
	if f <= 0 {
		return 1
	}
	return f
}

func frac(f float64) float64 {
	if f <= 0 || f > 1 {
		return 1
	}
	return f
}

// HostCPUCapacity is the MHz a host offers after overcommit.
func HostCPUCapacity(h Host, c Cluster) int64 {
	return int64(float64(int64(h.CPUs)*int64(h.MHz)) * ratio(c.CPUOvercommit))
}

// HostMemCapacity is the memory a host offers after overcommit.
func HostMemCapacity(h Host, c Cluster) int64 {
	return int64(float64(h.MemoryBytes) * ratio(c.MemOvercommit))
}

// Plan returns every placement that fits, best first (most free memory,
// then CPU, then id, so the order is deterministic), or a *NoCapacity.
func Plan(req Request, s Snapshot) ([]Placement, error) {
	pods := map[int64]Pod{}
	for _, p := range s.Pods {
		pods[p.ID] = p
	}
	clusters := map[int64]Cluster{}
	for _, c := range s.Clusters {
		clusters[c.ID] = c
	}
	needMHz := int64(req.VCPUs) * int64(req.MHz)
	why := &NoCapacity{}
	type scored struct {
		p                Placement
		freeMem, freeCPU int64
	}
	var fits []scored
	for _, h := range s.Hosts {
		c, okc := clusters[h.ClusterID]
		p, okp := pods[h.PodID]
		switch {
		case req.HostID != 0 && h.ID != req.HostID:
			continue
		case req.ClusterID != 0 && h.ClusterID != req.ClusterID:
			continue
		case req.PodID != 0 && h.PodID != req.PodID:
			continue
		case req.Hypervisor != "" && !strings.EqualFold(req.Hypervisor, h.Hypervisor):
			why.add("hypervisor is not "+req.Hypervisor, h.Name)
			continue
		case !okp || !p.Enabled:
			why.add("pod disabled", h.Name)
			continue
		case !okc || !c.Enabled:
			why.add("cluster disabled", h.Name)
			continue
		case !h.Up:
			why.add("host not Up", h.Name)
			continue
		case !h.Enabled:
			why.add("host disabled or in maintenance", h.Name)
			continue
		case req.AvoidHosts[h.ID]:
			why.add("host failed an earlier attempt", h.Name)
			continue
		case !hasAll(h.Tags, req.HostTags):
			why.add("missing host tags "+strings.Join(req.HostTags, ","), h.Name)
			continue
		case req.AntiAffinity[h.ID]:
			why.add("anti-affinity group already on host", h.Name)
			continue
		case len(req.Affinity) > 0 && !req.Affinity[h.ID]:
			why.add("not the affinity group's host", h.Name)
			continue
		case h.CPUs < req.VCPUs || h.MHz < req.MHz:
			why.add(fmt.Sprintf("host smaller than %d x %d MHz", req.VCPUs, req.MHz), h.Name)
			continue
		}
		cpuCap, memCap := HostCPUCapacity(h, c), HostMemCapacity(h, c)
		if h.UsedMHz+needMHz > int64(float64(cpuCap)*frac(c.CPUDisableFrac)) {
			why.add("not enough free CPU", h.Name)
			continue
		}
		if h.UsedMemory+req.MemoryBytes > int64(float64(memCap)*frac(c.MemDisableFrac)) {
			why.add("not enough free memory", h.Name)
			continue
		}
		pools, reason := placeDisks(req, h, s.Pools)
		if pools == nil && len(req.Disks) > 0 {
			why.add(reason, h.Name)
			continue
		}
		fits = append(fits, scored{
			p:       Placement{HostID: h.ID, ClusterID: h.ClusterID, PodID: h.PodID, PoolIDs: pools},
			freeMem: memCap - h.UsedMemory, freeCPU: cpuCap - h.UsedMHz,
		})
	}
	if len(fits) == 0 {
		return nil, why
	}
	sort.SliceStable(fits, func(i, j int) bool {
		if fits[i].freeMem != fits[j].freeMem {
			return fits[i].freeMem > fits[j].freeMem
		}
		if fits[i].freeCPU != fits[j].freeCPU {
			return fits[i].freeCPU > fits[j].freeCPU
		}
		return fits[i].p.HostID < fits[j].p.HostID
	})
	out := make([]Placement, len(fits))
	for i, f := range fits {
		out[i] = f.p
	}
	return out, nil
}

// placeDisks picks a pool for each disk reachable from host h: host-local
// pools for local disks, cluster or zone-wide pools for shared ones, with
// matching tags and room (disks of one VM may share a pool; their sizes
// add up). It returns nil and the reason when a disk fits nowhere.
func placeDisks(req Request, h Host, pools []Pool) ([]int64, string) {
	planned := map[int64]int64{}
	out := make([]int64, 0, len(req.Disks))
	for _, d := range req.Disks {
		var best *Pool
		var bestFree int64
		// The reason reported is the furthest any pool got through the
		// checks: "full" says more than "wrong tags".
		reason, rank := "no storage pool reachable from the host", 0
		miss := func(r string, n int) {
			if n > rank {
				reason, rank = r, n
			}
		}
		for i := range pools {
			p := &pools[i]
			reachable := (d.Local && p.HostID == h.ID) ||
				(!d.Local && p.HostID == 0 && (p.ClusterID == h.ClusterID || p.ClusterID == 0))
			if !reachable {
				continue
			}
			switch {
			case !p.Up:
				miss("storage pools in maintenance or down", 1)
				continue
			case req.AvoidPools[p.ID]:
				miss("storage pool failed an earlier attempt", 2)
				continue
			case !hasAll(p.Tags, d.Tags):
				miss("no storage pool with tags "+strings.Join(d.Tags, ","), 3)
				continue
			}
			limit := int64(float64(p.Capacity) * ratio(p.Overcommit) * frac(p.DisableFrac))
			free := limit - p.Allocated - planned[p.ID]
			if free < d.SizeBytes {
				miss("not enough free primary storage", 4)
				continue
			}
			if best == nil || free > bestFree || (free == bestFree && p.ID < best.ID) {
				best, bestFree = p, free
			}
		}
		if best == nil {
			return nil, reason
		}
		planned[best.ID] += d.SizeBytes
		out = append(out, best.ID)
	}
	return out, ""
}

func hasAll(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if strings.EqualFold(h, w) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
