package models

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"
)

// AffinityHosts returns, for the affinity groups groupIDs of an account, the
// hosts where their VMs run: anti holds the hosts of VMs in its host
// anti-affinity groups (the planner's Request.AntiAffinity), affinity those
// of VMs in its host affinity groups (Request.Affinity; empty when no VM of
// those groups runs yet, which leaves every host allowed). excludeVM is the
// VM being placed (0 for a new one). A VM counts where it runs (host_id);
// destroyed, expunging and failed VMs do not count. A group that does not
// exist or belongs to another account is ErrNotFound.
func AffinityHosts(ctx context.Context, db bun.IDB, accountID int64, groupIDs []int64, excludeVM int64) (anti, affinity map[int64]bool, err error) {
	anti, affinity = map[int64]bool{}, map[int64]bool{}
	if len(groupIDs) == 0 {
		return anti, affinity, nil
	}
	n, err := db.NewSelect().Model((*AffinityGroup)(nil)).
		Where("id IN (?) AND account_id = ?", bun.In(groupIDs), accountID).Count(ctx)
	if err != nil {
		return nil, nil, err
	}
	if want := len(uniqueIDs(groupIDs)); int(n) != want {
		return nil, nil, fmt.Errorf("affinity groups %v of account %d: %w", groupIDs, accountID, ErrNotFound)
	}
	var rows []struct {
		Type   string `bun:"type"`
		HostID int64  `bun:"host_id"`
	}
	err = db.NewSelect().TableExpr("affinity_group_vm_map AS m").
		ColumnExpr("g.type, v.host_id").
		Join("JOIN affinity_groups AS g ON g.id = m.affinity_group_id").
		Join("JOIN vm_instances AS v ON v.id = m.instance_id").
		Where("m.affinity_group_id IN (?)", bun.In(groupIDs)).
		Where("v.id <> ?", excludeVM).
		Where("v.removed IS NULL AND v.host_id IS NOT NULL").
		Where("v.state NOT IN (?)", bun.In([]string{VMDestroyed, VMExpunging, VMError})).
		Scan(ctx, &rows)
	if err != nil {
		return nil, nil, err
	}
	for _, r := range rows {
		switch r.Type {
		case AffinityHostAntiAffinity:
			anti[r.HostID] = true
		case AffinityHostAffinity:
			affinity[r.HostID] = true
		}
	}
	return anti, affinity, nil
}

func uniqueIDs(ids []int64) map[int64]bool {
	m := make(map[int64]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}
