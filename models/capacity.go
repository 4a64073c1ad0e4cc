package models

import (
	"context"
	"errors"
	"fmt"

	"github.com/uptrace/bun"
)

// ErrNoCapacity is returned by ReserveHost and ReservePool when the guarded
// update finds no room: another reservation took it first, or there never
// was enough.
var ErrNoCapacity = errors.New("insufficient capacity")

// Capacity reservation is done here and nowhere else. A host's CPU (MHz) and
// memory (bytes) live in its two op_host_capacity rows, which the guarded
// updates below move; hosts.cpu_allocated and hosts.mem_allocated mirror
// used_capacity in the same transaction so that listHosts, listCapacity and
// the planner's snapshot read the same numbers (and a later
// SyncHostCapacity, which copies hosts into op_host_capacity, keeps them).
// A pool's allocated bytes live in storage_pools.allocated_bytes, mirrored
// in its STORAGE_ALLOCATED capacity row. Each guard is one UPDATE whose
// WHERE clause checks the room, so two transactions can never both take the
// last of it, on MariaDB (the UPDATE locks and re-reads the row) and SQLite
// (writers are serialized).

// ReserveHost takes mhz of CPU and memBytes of memory on a host, with the
// cluster's overcommit ratios: both or neither. It returns ErrNoCapacity
// when either does not fit. Call it in a transaction: on success the caller
// commits with the rest of its reservation (the VM row that records it).
func ReserveHost(ctx context.Context, db bun.IDB, hostID, mhz, memBytes int64, cpuRatio, memRatio float64) error {
	if mhz < 0 || memBytes < 0 {
		return fmt.Errorf("reserve host %d: negative amount", hostID)
	}
	ok, err := reserveRow(ctx, db, hostID, CapacityCPU, mhz, ratioOrOne(cpuRatio))
	if err != nil || !ok {
		return orNoCapacity(err)
	}
	ok, err = reserveRow(ctx, db, hostID, CapacityMemory, memBytes, ratioOrOne(memRatio))
	if err != nil || !ok {
		// The CPU row moved in this transaction: put it back, so that a
		// caller trying the next host in the same transaction leaves none.
		if _, uerr := releaseRow(ctx, db, hostID, CapacityCPU, mhz); uerr != nil && err == nil {
			err = uerr
		}
		return orNoCapacity(err)
	}
	_, err = db.NewUpdate().Model((*Host)(nil)).
		Set("cpu_allocated = cpu_allocated + ?", mhz).
		Set("mem_allocated = mem_allocated + ?", memBytes).
		Where("id = ?", hostID).Exec(ctx)
	return err
}

// ReleaseHost gives back what ReserveHost took. It never goes below zero.
// Callers make it happen once by clearing, in the same transaction, the
// record of the reservation (the VM's host_id).
func ReleaseHost(ctx context.Context, db bun.IDB, hostID, mhz, memBytes int64) error {
	if _, err := releaseRow(ctx, db, hostID, CapacityCPU, mhz); err != nil {
		return err
	}
	if _, err := releaseRow(ctx, db, hostID, CapacityMemory, memBytes); err != nil {
		return err
	}
	_, err := db.NewUpdate().Model((*Host)(nil)).
		Set("cpu_allocated = CASE WHEN cpu_allocated > ? THEN cpu_allocated - ? ELSE 0 END", mhz, mhz).
		Set("mem_allocated = CASE WHEN mem_allocated > ? THEN mem_allocated - ? ELSE 0 END", memBytes, memBytes).
		Where("id = ?", hostID).Exec(ctx)
	return err
}

func reserveRow(ctx context.Context, db bun.IDB, hostID int64, typ int, amount int64, ratio float64) (bool, error) {
	if amount == 0 {
		// Nothing would change, and MySQL counts changed rows, not matched ones.
		return db.NewSelect().Model((*Capacity)(nil)).
			Where("host_id = ? AND capacity_type = ? AND capacity_state = ?", hostID, typ, AllocationEnabled).
			Where("used_capacity + reserved_capacity <= total_capacity * ?", ratio).Exists(ctx)
	}
	res, err := db.NewUpdate().Model((*Capacity)(nil)).
		Set("used_capacity = used_capacity + ?", amount).
		Set("update_time = ?", Now()).
		Where("host_id = ? AND capacity_type = ?", hostID, typ).
		Where("capacity_state = ?", AllocationEnabled).
		Where("used_capacity + reserved_capacity + ? <= total_capacity * ?", amount, ratio).
		Exec(ctx)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func releaseRow(ctx context.Context, db bun.IDB, hostID int64, typ int, amount int64) (bool, error) {
	res, err := db.NewUpdate().Model((*Capacity)(nil)).
		Set("used_capacity = CASE WHEN used_capacity > ? THEN used_capacity - ? ELSE 0 END", amount, amount).
		Set("update_time = ?", Now()).
		Where("host_id = ? AND capacity_type = ?", hostID, typ).
		Exec(ctx)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// ReservePool takes bytes of a primary storage pool's allocation, allowing
// allocation up to capacity times the overprovisioning factor (thin
// provisioning). It returns ErrNoCapacity when they do not fit or the pool
// is not Up.
func ReservePool(ctx context.Context, db bun.IDB, poolID, bytes int64, overprovisioning float64) error {
	if bytes < 0 {
		return fmt.Errorf("reserve pool %d: negative amount", poolID)
	}
	if bytes == 0 {
		ok, err := db.NewSelect().Model((*StoragePool)(nil)).Where("id = ? AND state = ?", poolID, PoolUp).Exists(ctx)
		if err != nil || !ok {
			return orNoCapacity(err)
		}
		return nil
	}
	res, err := db.NewUpdate().Model((*StoragePool)(nil)).
		Set("allocated_bytes = allocated_bytes + ?", bytes).
		Set("update_time = ?", Now()).
		Where("id = ? AND state = ?", poolID, PoolUp).
		Where("allocated_bytes + ? <= capacity_bytes * ?", bytes, ratioOrOne(overprovisioning)).
		Exec(ctx)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return orNoCapacity(err)
	}
	return syncPoolAllocated(ctx, db, poolID)
}

// ReleasePool gives back what ReservePool took (never below zero); as with
// ReleaseHost, the caller clears its record (the volume's pool) with it.
func ReleasePool(ctx context.Context, db bun.IDB, poolID, bytes int64) error {
	_, err := db.NewUpdate().Model((*StoragePool)(nil)).
		Set("allocated_bytes = CASE WHEN allocated_bytes > ? THEN allocated_bytes - ? ELSE 0 END", bytes, bytes).
		Set("update_time = ?", Now()).
		Where("id = ?", poolID).Exec(ctx)
	if err != nil {
		return err
	}
	return syncPoolAllocated(ctx, db, poolID)
}

// syncPoolAllocated copies the pool's allocated bytes into its
// STORAGE_ALLOCATED capacity row, when it has one.
func syncPoolAllocated(ctx context.Context, db bun.IDB, poolID int64) error {
	_, err := db.NewUpdate().Model((*Capacity)(nil)).
		Set("used_capacity = (SELECT sp.allocated_bytes FROM storage_pools AS sp WHERE sp.id = ?)", poolID).
		Set("update_time = ?", Now()).
		Where("host_id = ? AND capacity_type = ?", poolID, CapacityStorageAllocated).
		Exec(ctx)
	return err
}

func ratioOrOne(f float64) float64 {
	if f <= 0 {
		return 1
	}
	return f
}

func orNoCapacity(err error) error {
	if err != nil {
		return err
	}
	return ErrNoCapacity
}
