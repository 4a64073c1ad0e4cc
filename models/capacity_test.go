package models_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/models"
)

// capHost writes a host with its CPU and memory capacity rows.
func capHost(t *testing.T, db *bun.DB, name string, cpus, mhz int, ram int64) *models.Host {
	t.Helper()
	ctx := context.Background()
	h := &models.Host{UUID: models.NewUUID(), Name: name, Type: models.HostTypeRouting, State: models.HostUp,
		ResourceState: models.ResourceEnabled, HypervisorType: models.HypervisorSimulator, CPUs: cpus, Speed: mhz, RAM: ram,
		ZoneID: 1, Created: models.Now()}
	if _, err := db.NewInsert().Model(h).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	for typ, total := range map[int]int64{models.CapacityCPU: int64(cpus) * int64(mhz), models.CapacityMemory: ram} {
		row := &models.Capacity{HostID: h.ID, ZoneID: 1, CapacityType: typ, TotalCapacity: total,
			CapacityState: models.AllocationEnabled, Created: models.Now()}
		if _, err := db.NewInsert().Model(row).Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func capUsed(t *testing.T, db *bun.DB, hostID int64, typ int) int64 {
	t.Helper()
	var c models.Capacity
	if err := db.NewSelect().Model(&c).Where("host_id = ? AND capacity_type = ?", hostID, typ).Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c.UsedCapacity
}

// reserveConcurrently runs n reservations at once, each in its own
// transaction, and returns how many succeeded.
func reserveConcurrently(t *testing.T, db *bun.DB, n int, fn func(ctx context.Context, tx bun.Tx) error) int {
	t.Helper()
	var ok atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := db.RunInTx(context.Background(), nil, fn)
			switch {
			case err == nil:
				ok.Add(1)
			case !errors.Is(err, models.ErrNoCapacity):
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("reservation failed with %v, want success or ErrNoCapacity", err)
	}
	return int(ok.Load())
}

func TestReserveHostConcurrent(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dsn string) {
		db := migrated(t, dsn)
		ctx := context.Background()
		const mhz, mem = 1000, int64(1) << 30

		// CPU for 150 (memory plenty): exactly 150 of 200 fit.
		h := capHost(t, db, "cpu-bound", 150, mhz, 1000*mem)
		got := reserveConcurrently(t, db, 200, func(ctx context.Context, tx bun.Tx) error {
			return models.ReserveHost(ctx, tx, h.ID, mhz, mem, 1, 1)
		})
		if got != 150 {
			t.Fatalf("CPU-bound host took %d reservations, want 150", got)
		}
		if u := capUsed(t, db, h.ID, models.CapacityCPU); u != 150*mhz {
			t.Errorf("CPU used %d, want %d", u, 150*mhz)
		}
		if u := capUsed(t, db, h.ID, models.CapacityMemory); u != 150*mem {
			t.Errorf("memory used %d, want %d (no memory taken by refused reservations)", u, 150*mem)
		}
		var row models.Host
		if err := db.NewSelect().Model(&row).Where("id = ?", h.ID).Scan(ctx); err != nil {
			t.Fatal(err)
		}
		if row.CPUAllocated != 150*mhz || row.MemAllocated != 150*mem {
			t.Errorf("hosts row says %d MHz %d bytes allocated, want %d and %d", row.CPUAllocated, row.MemAllocated, 150*mhz, 150*mem)
		}

		// Memory for 150 with an overcommit of 1.5 on 100 (CPU plenty): the
		// CPU taken by a reservation whose memory does not fit is put back.
		m := capHost(t, db, "mem-bound", 1000, mhz, 100*mem)
		got = reserveConcurrently(t, db, 200, func(ctx context.Context, tx bun.Tx) error {
			return models.ReserveHost(ctx, tx, m.ID, mhz, mem, 1, 1.5)
		})
		if got != 150 {
			t.Fatalf("memory-bound host took %d reservations, want 150", got)
		}
		if u := capUsed(t, db, m.ID, models.CapacityCPU); u != 150*mhz {
			t.Errorf("CPU used %d on the memory-bound host, want %d", u, 150*mhz)
		}

		// Releases bring it back to zero, and never below.
		for i := 0; i < 151; i++ {
			if err := models.ReleaseHost(ctx, db, h.ID, mhz, mem); err != nil {
				t.Fatal(err)
			}
		}
		if u := capUsed(t, db, h.ID, models.CapacityCPU); u != 0 {
			t.Errorf("CPU used %d after releasing everything, want 0", u)
		}
		if err := db.NewSelect().Model(&row).Where("id = ?", h.ID).Scan(ctx); err != nil {
			t.Fatal(err)
		}
		if row.CPUAllocated != 0 || row.MemAllocated != 0 {
			t.Errorf("hosts row says %d MHz %d bytes allocated after releasing, want 0", row.CPUAllocated, row.MemAllocated)
		}

		// A disabled host takes nothing.
		if _, err := db.NewUpdate().Model((*models.Capacity)(nil)).Set("capacity_state = ?", models.AllocationDisabled).
			Where("host_id = ?", h.ID).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if err := models.ReserveHost(ctx, db, h.ID, mhz, mem, 1, 1); !errors.Is(err, models.ErrNoCapacity) {
			t.Errorf("reserve on a disabled host = %v, want ErrNoCapacity", err)
		}
	})
}

func TestReservePoolConcurrent(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dsn string) {
		db := migrated(t, dsn)
		ctx := context.Background()
		const gib = models.GiB
		p := &models.StoragePool{UUID: models.NewUUID(), Name: "p1", PoolType: models.PoolNetworkFilesystem, Scope: models.ScopeCluster,
			HypervisorType: models.HypervisorSimulator, CapacityBytes: 75 * gib, State: models.PoolUp, ZoneID: 1, Created: models.Now()}
		if _, err := db.NewInsert().Model(p).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		row := &models.Capacity{HostID: p.ID, ZoneID: 1, CapacityType: models.CapacityStorageAllocated, TotalCapacity: p.CapacityBytes,
			CapacityState: models.AllocationEnabled, Created: models.Now()}
		if _, err := db.NewInsert().Model(row).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		// 75 GiB overprovisioned twice: room for 150 disks of 1 GiB.
		got := reserveConcurrently(t, db, 200, func(ctx context.Context, tx bun.Tx) error {
			return models.ReservePool(ctx, tx, p.ID, gib, 2.0)
		})
		if got != 150 {
			t.Fatalf("pool took %d reservations, want 150", got)
		}
		var after models.StoragePool
		if err := db.NewSelect().Model(&after).Where("id = ?", p.ID).Scan(ctx); err != nil {
			t.Fatal(err)
		}
		if after.AllocatedBytes != 150*gib {
			t.Errorf("pool allocated %d, want %d", after.AllocatedBytes, 150*gib)
		}
		if u := capUsed(t, db, p.ID, models.CapacityStorageAllocated); u != 150*gib {
			t.Errorf("STORAGE_ALLOCATED row used %d, want %d", u, 150*gib)
		}
		if err := models.ReleasePool(ctx, db, p.ID, 10*gib); err != nil {
			t.Fatal(err)
		}
		if u := capUsed(t, db, p.ID, models.CapacityStorageAllocated); u != 140*gib {
			t.Errorf("STORAGE_ALLOCATED row used %d after a release, want %d", u, 140*gib)
		}
		// A pool in maintenance takes nothing.
		if _, err := db.NewUpdate().Model((*models.StoragePool)(nil)).Set("state = ?", models.PoolMaintenance).Where("id = ?", p.ID).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if err := models.ReservePool(ctx, db, p.ID, 1, 2); !errors.Is(err, models.ErrNoCapacity) {
			t.Errorf("reserve on a pool in maintenance = %v, want ErrNoCapacity", err)
		}
	})
}
