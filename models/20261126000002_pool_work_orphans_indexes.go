package models

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"
)

// The second migration brings an inventory made by the first one up to the
// current schema: the tables added since (storage_pool_work, pool_orphans)
// and the indexes added since (placement by allocated memory, VM paging).
// createSchema only creates what is missing, so on a fresh inventory, where
// the first migration already made everything, it changes nothing.
func init() {
	migrations.MustRegister(createSchema, func(context.Context, *bun.DB) error {
		return fmt.Errorf("the inventory schema cannot be rolled back")
	})
}
