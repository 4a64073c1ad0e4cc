package models

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"

	"github.com/uptrace/bun"
)

// Fixed UUIDs of the rows every inventory starts with, so that all processes
// and tests agree on them.
const (
	RootDomainUUID      = "5e1a5d2c-0000-4000-8000-000000000001"
	RegionUUID          = "5e1a5d2c-0000-4000-8000-000000000002"
	SystemAccountUUID   = "5e1a5d2c-0000-4000-8000-000000000003"
	AdminAccountUUID    = "5e1a5d2c-0000-4000-8000-000000000004"
	RoleRootAdminUUID   = "5e1a5d2c-0000-4000-8000-000000000011"
	RoleDomainAdminUUID = "5e1a5d2c-0000-4000-8000-000000000012"
	RoleUserUUID        = "5e1a5d2c-0000-4000-8000-000000000013"
	RoleReadOnlyUUID    = "5e1a5d2c-0000-4000-8000-000000000014"
)

// Seed inserts the rows every inventory needs (region, ROOT domain, default
// roles, system and admin accounts, global settings). It only adds what is
// missing, so it is safe to run after every migration.
func Seed(ctx context.Context, db *bun.DB) error {
	return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		now := Now()
		if err := insertMissing(ctx, tx, &Region{UUID: RegionUUID, Name: "Region1", Created: now}, "uuid", RegionUUID); err != nil {
			return err
		}
		root := &Domain{UUID: RootDomainUUID, Name: "ROOT", Path: "/", Level: 0, State: "Active", Created: now}
		if err := insertMissing(ctx, tx, root, "uuid", RootDomainUUID); err != nil {
			return err
		}
		roles := []*Role{
			{UUID: RoleRootAdminUUID, Name: "Root Admin", Type: RoleTypeAdmin, Description: "Default root admin role", IsDefault: true},
			{UUID: RoleDomainAdminUUID, Name: "Domain Admin", Type: RoleTypeDomainAdmin, Description: "Default domain admin role", IsDefault: true},
			{UUID: RoleUserUUID, Name: "User", Type: RoleTypeUser, Description: "Default user role", IsDefault: true},
			{UUID: RoleReadOnlyUUID, Name: "Read-Only User", Type: RoleTypeUser, Description: "Default read-only user role", IsDefault: true, ReadOnly: true},
		}
		for _, r := range roles {
			r.Created = now
			if err := insertMissing(ctx, tx, r, "uuid", r.UUID); err != nil {
				return err
			}
		}
		for _, a := range []*Account{
			{UUID: SystemAccountUUID, Name: "system", DomainID: root.ID, Type: AccountTypeAdmin, RoleID: roles[0].ID, State: "enabled", Created: now},
			{UUID: AdminAccountUUID, Name: "admin", DomainID: root.ID, Type: AccountTypeAdmin, RoleID: roles[0].ID, State: "enabled", Created: now},
		} {
			if err := insertMissing(ctx, tx, a, "uuid", a.UUID); err != nil {
				return err
			}
		}
		for _, c := range DefaultConfigurations() {
			c := c
			if err := insertMissing(ctx, tx, &c, "name", c.Name); err != nil {
				return err
			}
		}
		return nil
	})
}

// insertMissing inserts row unless a row with col = val exists; either way
// row ends up holding the stored row's id.
func insertMissing(ctx context.Context, tx bun.IDB, row any, col string, val any) error {
	q := tx.NewSelect().Model(row).Where("? = ?", bun.Ident(col), val).Limit(1)
	if tx.Dialect().Tables().Get(reflect.TypeOf(row)).SoftDeleteField != nil {
		q = q.WhereAllWithDeleted()
	}
	err := q.Scan(ctx)
	if err == nil {
		return nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("seed lookup %T: %w", row, err)
	}
	if _, err := tx.NewInsert().Model(row).Exec(ctx); err != nil {
		return fmt.Errorf("seed insert %T: %w", row, err)
	}
	return nil
}

// DefaultConfigurations are the global settings and their defaults.
func DefaultConfigurations() []Configuration {
	return []Configuration{
		{Name: "expunge.delay", Value: "86400", DefaultValue: "86400", Category: "Advanced", Scope: "global", Description: "Seconds a destroyed VM waits before it is expunged"},
		{Name: "expunge.interval", Value: "86400", DefaultValue: "86400", Category: "Advanced", Scope: "global", Description: "Seconds between runs of the expunge schedule"},
		{Name: "cpu.overprovisioning.factor", Value: "1.0", DefaultValue: "1.0", Category: "Advanced", Scope: "cluster", Description: "CPU overcommit ratio"},
		{Name: "mem.overprovisioning.factor", Value: "1.0", DefaultValue: "1.0", Category: "Advanced", Scope: "cluster", Description: "Memory overcommit ratio"},
		{Name: "storage.overprovisioning.factor", Value: "2.0", DefaultValue: "2.0", Category: "Storage", Scope: "zone", Description: "Thin-provisioned primary storage overcommit ratio"},
		{Name: "cluster.cpu.allocated.capacity.disablethreshold", Value: "1.0", DefaultValue: "1.0", Category: "Alert", Scope: "cluster", Description: "CPU allocation fraction beyond which a cluster takes no new VMs"},
		{Name: "cluster.memory.allocated.capacity.disablethreshold", Value: "1.0", DefaultValue: "1.0", Category: "Alert", Scope: "cluster", Description: "Memory allocation fraction beyond which a cluster takes no new VMs"},
		{Name: "pool.storage.allocated.capacity.disablethreshold", Value: "0.85", DefaultValue: "0.85", Category: "Alert", Scope: "zone", Description: "Storage allocation fraction beyond which a pool takes no new volumes"},
		{Name: "default.page.size", Value: "500", DefaultValue: "500", Category: "Advanced", Scope: "global", Description: "Page size when a list call gives none"},
		{Name: "host.reconcile.interval", Value: "300", DefaultValue: "300", Category: "Advanced", Scope: "global", Description: "Seconds between reconciliations of hosts against the inventory"},
	}
}
