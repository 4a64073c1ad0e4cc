package planner

import (
	"strings"
	"testing"
)

const GiB = int64(1) << 30

func cloud() Snapshot {
	return Snapshot{
		Pods:     []Pod{{ID: 1, Name: "pod1", Enabled: true}, {ID: 2, Name: "pod2", Enabled: false}},
		Clusters: []Cluster{{ID: 10, PodID: 1, Name: "c10", Enabled: true, CPUOvercommit: 2, MemOvercommit: 1}, {ID: 20, PodID: 2, Name: "c20", Enabled: true}},
		Hosts: []Host{
			{ID: 100, ClusterID: 10, PodID: 1, Name: "h100", Hypervisor: "Simulator", Up: true, Enabled: true, CPUs: 4, MHz: 1000, MemoryBytes: 8 * GiB, Tags: []string{"ssd"}},
			{ID: 101, ClusterID: 10, PodID: 1, Name: "h101", Hypervisor: "Simulator", Up: true, Enabled: true, CPUs: 4, MHz: 1000, MemoryBytes: 16 * GiB},
			{ID: 200, ClusterID: 20, PodID: 2, Name: "h200", Hypervisor: "Simulator", Up: true, Enabled: true, CPUs: 64, MHz: 3000, MemoryBytes: 512 * GiB},
		},
		Pools: []Pool{
			{ID: 1, Name: "nfs1", ClusterID: 10, Up: true, Capacity: 100 * GiB, Tags: []string{"fast"}},
			{ID: 2, Name: "zonewide", Up: true, Capacity: 1000 * GiB, Allocated: 990 * GiB},
			{ID: 3, Name: "local-h101", HostID: 101, ClusterID: 10, Up: true, Capacity: 50 * GiB},
		},
	}
}

func TestPlan(t *testing.T) {
	tests := map[string]struct {
		req       Request
		mutate    func(*Snapshot)
		wantHosts []int64
		wantPools [][]int64
		wantWhy   []string // substrings of the NoCapacity error
	}{
		"most free memory first": {
			req:       Request{VCPUs: 1, MHz: 500, MemoryBytes: GiB, Disks: []DiskRequest{{SizeBytes: 10 * GiB}}},
			wantHosts: []int64{101, 100},
			wantPools: [][]int64{{1}, {1}},
		},
		"host tags": {
			req:       Request{VCPUs: 1, MHz: 500, MemoryBytes: GiB, HostTags: []string{"SSD"}},
			wantHosts: []int64{100},
		},
		"CPU overcommit lets 8 x 1000 MHz onto 4 cores": {
			req:       Request{VCPUs: 4, MHz: 1000, MemoryBytes: GiB},
			mutate:    func(s *Snapshot) { s.Hosts[0].UsedMHz = 4000; s.Hosts[1].UsedMHz = 4000 },
			wantHosts: []int64{101, 100},
		},
		"overcommit exhausted": {
			req:     Request{VCPUs: 4, MHz: 1000, MemoryBytes: GiB},
			mutate:  func(s *Snapshot) { s.Hosts[0].UsedMHz = 5000; s.Hosts[1].UsedMHz = 5000 },
			wantWhy: []string{"not enough free CPU: h100, h101", "pod disabled: h200"},
		},
		"memory": {
			req:     Request{VCPUs: 1, MHz: 100, MemoryBytes: 32 * GiB},
			wantWhy: []string{"not enough free memory: h100, h101"},
		},
		"storage tags": {
			req:       Request{VCPUs: 1, MHz: 100, MemoryBytes: GiB, Disks: []DiskRequest{{SizeBytes: GiB, Tags: []string{"fast"}}}},
			wantHosts: []int64{101, 100},
			wantPools: [][]int64{{1}, {1}},
		},
		"no pool with room": {
			req:     Request{VCPUs: 1, MHz: 100, MemoryBytes: GiB, Disks: []DiskRequest{{SizeBytes: 200 * GiB}}},
			wantWhy: []string{"not enough free primary storage: h100, h101"},
		},
		"two disks add up in one pool": {
			req:     Request{VCPUs: 1, MHz: 100, MemoryBytes: GiB, Disks: []DiskRequest{{SizeBytes: 60 * GiB, Tags: []string{"fast"}}, {SizeBytes: 60 * GiB, Tags: []string{"fast"}}}},
			wantWhy: []string{"not enough free primary storage"},
		},
		"local storage only on its host": {
			req:       Request{VCPUs: 1, MHz: 100, MemoryBytes: GiB, Disks: []DiskRequest{{SizeBytes: GiB, Local: true}}},
			wantHosts: []int64{101},
			wantPools: [][]int64{{3}},
		},
		"anti-affinity": {
			req:       Request{VCPUs: 1, MHz: 100, MemoryBytes: GiB, AntiAffinity: map[int64]bool{101: true}},
			wantHosts: []int64{100},
		},
		"affinity": {
			req:       Request{VCPUs: 1, MHz: 100, MemoryBytes: GiB, Affinity: map[int64]bool{100: true}},
			wantHosts: []int64{100},
		},
		"maintenance and down hosts": {
			req:     Request{VCPUs: 1, MHz: 100, MemoryBytes: GiB},
			mutate:  func(s *Snapshot) { s.Hosts[0].Enabled = false; s.Hosts[1].Up = false },
			wantWhy: []string{"host disabled or in maintenance: h100", "host not Up: h101"},
		},
		"admin pins a host": {
			req:       Request{VCPUs: 1, MHz: 100, MemoryBytes: GiB, HostID: 100},
			wantHosts: []int64{100},
		},
		"disabled cluster": {
			req:     Request{VCPUs: 1, MHz: 100, MemoryBytes: GiB},
			mutate:  func(s *Snapshot) { s.Clusters[0].Enabled = false },
			wantWhy: []string{"cluster disabled: h100, h101"},
		},
		"disable threshold": {
			req:     Request{VCPUs: 1, MHz: 100, MemoryBytes: 2 * GiB},
			mutate:  func(s *Snapshot) { s.Clusters[0].MemDisableFrac = 0.1 },
			wantWhy: []string{"not enough free memory: h100, h101"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := cloud()
			if tc.mutate != nil {
				tc.mutate(&s)
			}
			got, err := Plan(tc.req, s)
			if tc.wantWhy != nil {
				if err == nil {
					t.Fatalf("want NoCapacity, got %+v", got)
				}
				for _, w := range tc.wantWhy {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.wantHosts) {
				t.Fatalf("placements %+v, want hosts %v", got, tc.wantHosts)
			}
			for i, p := range got {
				if p.HostID != tc.wantHosts[i] {
					t.Errorf("placement %d on host %d, want %d", i, p.HostID, tc.wantHosts[i])
				}
				if tc.wantPools != nil && !equal(p.PoolIDs, tc.wantPools[i]) {
					t.Errorf("placement %d pools %v, want %v", i, p.PoolIDs, tc.wantPools[i])
				}
			}
		})
	}
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestNoCapacityMessageIsBounded(t *testing.T) {
	e := &NoCapacity{}
	for i := 0; i < 100; i++ {
		e.add("not enough free memory", "h")
	}
	if msg := e.Error(); !strings.Contains(msg, "and 95 more") || len(msg) > 200 {
		t.Fatalf("message %q", msg)
	}
}
