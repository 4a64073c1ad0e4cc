package models

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"
)

// The VM snapshots migration adds the vm_snapshots table and its indexes to
// an inventory made before them. Like the second migration it runs
// createSchema, which creates only what is missing (a no-op on a fresh
// inventory, where the first migration made everything).
func init() {
	migrations.MustRegister(createSchema, func(context.Context, *bun.DB) error {
		return fmt.Errorf("the inventory schema cannot be rolled back")
	})
}
