package activities_test

import (
	"context"
	"fmt"
	"math/rand"
	"testing"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/planner"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// TestPlaceCandidatesAreTheHostsWithMostFreeMemory: the placement's
// candidates, read by allocated memory with an early stop, are exactly the
// 64 hosts that "ORDER BY free memory DESC, id LIMIT 64" over every host
// returns, on hosts of different sizes, in clusters of different overcommit
// ratios, with ties, some hosts Down, disabled or without room.
func TestPlaceCandidatesAreTheHostsWithMostFreeMemory(t *testing.T) {
	for name, dsn := range testenv.Dialects(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			db := testenv.OpenDB(t, dsn)
			if _, err := models.Migrate(ctx, db); err != nil {
				t.Fatal(err)
			}
			now := models.Now()
			z := &models.Zone{UUID: models.NewUUID(), Name: "z", NetworkType: models.NetworkTypeAdvanced, AllocationState: models.AllocationEnabled, Created: now}
			if _, err := db.NewInsert().Model(z).Exec(ctx); err != nil {
				t.Fatal(err)
			}
			p := &models.Pod{UUID: models.NewUUID(), Name: "p", ZoneID: z.ID, AllocationState: models.AllocationEnabled, Created: now}
			if _, err := db.NewInsert().Model(p).Exec(ctx); err != nil {
				t.Fatal(err)
			}
			ratios := []float64{1, 1, 1.5, 2, 0}
			cl := make([]models.Cluster, len(ratios))
			for i, r := range ratios {
				cl[i] = models.Cluster{UUID: models.NewUUID(), Name: fmt.Sprint("c", i), ZoneID: z.ID, PodID: p.ID, HypervisorType: models.HypervisorSimulator,
					ClusterType: models.ClusterCloudManaged, AllocationState: models.AllocationEnabled, ManagedState: "Managed",
					CPUOvercommitRatio: 1, MemOvercommitRatio: r, Created: now}
			}
			if _, err := db.NewInsert().Model(&cl).Exec(ctx); err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewSource(1))
			hosts := make([]models.Host, 600)
			for i := range hosts {
				state, rs := models.HostUp, models.ResourceEnabled
				switch rng.Intn(20) {
				case 0:
					state = "Down"
				case 1:
					rs = "Disabled"
				}
				ram := []int64{64, 128, 256}[rng.Intn(3)] << 30
				hosts[i] = models.Host{UUID: models.NewUUID(), Name: fmt.Sprintf("h%03d", i), Type: models.HostTypeRouting, State: state, ResourceState: rs,
					HypervisorType: models.HypervisorSimulator, CPUs: 16, Speed: 2000, RAM: ram,
					MemAllocated: int64(rng.Intn(8)) * ram / 8, CPUAllocated: int64(rng.Intn(4)) * 8000,
					ZoneID: z.ID, PodID: p.ID, ClusterID: cl[rng.Intn(len(cl))].ID, Created: now}
			}
			if _, err := db.NewInsert().Model(&hosts).Exec(ctx); err != nil {
				t.Fatal(err)
			}
			vms := &activities.VMs{Deps: activities.Deps{DB: db}}
			for _, req := range []planner.Request{
				{VCPUs: 1, MHz: 500, MemoryBytes: 512 << 20},
				{VCPUs: 4, MHz: 2000, MemoryBytes: 48 << 30},
				{VCPUs: 1, MHz: 500, MemoryBytes: 1 << 30, ClusterID: cl[2].ID},
				{VCPUs: 1, MHz: 500, MemoryBytes: 1 << 40},
			} {
				got, err := activities.PlaceCandidates(ctx, vms, z.ID, req)
				if err != nil {
					t.Fatal(err)
				}
				// What every host's free memory says, computed by the database.
				var want []models.Host
				ratio := func(col string) string { return "(CASE WHEN c." + col + " > 0 THEN c." + col + " ELSE 1 END)" }
				q := db.NewSelect().Model(&want).Column("host.id", "host.name").
					Join("JOIN clusters AS c ON c.id = host.cluster_id").
					Where("host.zone_id = ? AND host.type = ?", z.ID, models.HostTypeRouting).
					Where("host.state = ? AND host.resource_state = ?", models.HostUp, models.ResourceEnabled).
					Where("host.cpus * host.speed * "+ratio("cpu_overcommit_ratio")+" - host.cpu_allocated >= ?", int64(req.VCPUs)*int64(req.MHz)).
					Where("host.ram * "+ratio("mem_overcommit_ratio")+" - host.mem_allocated >= ?", req.MemoryBytes).
					OrderExpr("host.ram * " + ratio("mem_overcommit_ratio") + " - host.mem_allocated DESC").OrderExpr("host.id").Limit(64)
				if req.ClusterID != 0 {
					q = q.Where("host.cluster_id = ?", req.ClusterID)
				}
				if err := q.Scan(ctx); err != nil {
					t.Fatal(err)
				}
				if len(got) != len(want) {
					t.Fatalf("%+v: %d candidates, want %d", req, len(got), len(want))
				}
				for i := range want {
					if got[i].ID != want[i].ID {
						t.Fatalf("%+v: candidate %d is %s, want %s", req, i, got[i].Name, want[i].Name)
					}
				}
				if req.MemoryBytes < 1<<40 && len(want) == 0 {
					t.Fatalf("%+v: no candidates at all: the test proves nothing", req)
				}
			}
		})
	}
}
