package models

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/migrate"
)

// Tables lists every model; the first migration creates them all. Add a new
// model here only before a release; afterwards add a migration below.
func Tables() []any {
	return []any{
		(*Region)(nil),
		(*Domain)(nil),
		(*Account)(nil),
		(*User)(nil),
		(*Role)(nil),
		(*RolePermission)(nil),
		(*Session)(nil),
		(*Configuration)(nil),
		(*AsyncJob)(nil),
		(*Event)(nil),
	}
}

// Index is a secondary index created by the first migration.
type Index struct {
	Table   string
	Name    string
	Columns []string
	Unique  bool
}

// Indexes lists the secondary indexes: the columns lists and lookups filter on.
func Indexes() []Index {
	return []Index{
		{"domains", "idx_domains_parent", []string{"parent_id"}, false},
		{"accounts", "idx_accounts_domain_name", []string{"domain_id", "name"}, false},
		{"users", "idx_users_account", []string{"account_id"}, false},
		{"users", "idx_users_username", []string{"username"}, false},
		{"role_permissions", "idx_role_permissions_role", []string{"role_id", "sort_order"}, false},
		{"async_jobs", "idx_async_jobs_account", []string{"account_id", "created"}, false},
		{"async_jobs", "idx_async_jobs_instance", []string{"instance_uuid"}, false},
		{"events", "idx_events_account", []string{"account_id", "created"}, false},
		{"events", "idx_events_domain", []string{"domain_id", "created"}, false},
	}
}

// migrations is the ordered list; each lives in a file named
// <14-digit version>_<name>.go that registers itself in init (bun derives the
// name from the file), and they apply in version order.
var migrations = migrate.NewMigrations()

func createSchema(ctx context.Context, db *bun.DB) error {
	for _, m := range Tables() {
		if _, err := db.NewCreateTable().Model(m).IfNotExists().Exec(ctx); err != nil {
			return fmt.Errorf("create table for %T: %w", m, err)
		}
	}
	for _, ix := range Indexes() {
		q := db.NewCreateIndex().Table(ix.Table).Index(ix.Name).Column(ix.Columns...)
		if ix.Unique {
			q = q.Unique()
		}
		if _, err := q.Exec(ctx); err != nil && !alreadyExists(err) {
			return fmt.Errorf("create index %s: %w", ix.Name, err)
		}
	}
	return nil
}

func alreadyExists(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "already exists") || strings.Contains(s, "duplicate key name")
}

// Migrate applies every pending migration under the migration lock. Several
// processes may call it at once: the losers wait for the lock, then find
// nothing left to do. It returns the names of the migrations it applied.
func Migrate(ctx context.Context, db *bun.DB) ([]string, error) {
	m := migrate.NewMigrator(db, migrations,
		migrate.WithTableName("nimbus_migrations"),
		migrate.WithLocksTableName("nimbus_migration_locks"),
		migrate.WithMarkAppliedOnSuccess(true))
	if err := m.Init(ctx); err != nil {
		return nil, fmt.Errorf("migrate init: %w", err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err := m.Lock(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("migration lock still held after 2 minutes (if no migration runs, delete the row in nimbus_migration_locks): %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	defer m.Unlock(context.WithoutCancel(ctx)) //nolint:errcheck
	group, err := m.Migrate(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	var names []string
	for _, mg := range group.Migrations {
		names = append(names, mg.Name)
	}
	if err := Seed(ctx, db); err != nil {
		return names, fmt.Errorf("seed: %w", err)
	}
	return names, nil
}

// Pending returns the names of migrations not yet applied, so that server
// and worker can refuse to run on an old schema with a clear message.
func Pending(ctx context.Context, db *bun.DB) ([]string, error) {
	m := migrate.NewMigrator(db, migrations,
		migrate.WithTableName("nimbus_migrations"),
		migrate.WithLocksTableName("nimbus_migration_locks"))
	// No migrations table yet: every migration is pending.
	var n int
	if err := db.NewSelect().TableExpr("nimbus_migrations").ColumnExpr("count(*)").Scan(ctx, &n); err != nil {
		var all []string
		for _, mg := range migrations.Sorted() {
			all = append(all, mg.Name)
		}
		return all, nil
	}
	ms, err := m.MigrationsWithStatus(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, mg := range ms.Unapplied() {
		out = append(out, mg.Name)
	}
	return out, nil
}
