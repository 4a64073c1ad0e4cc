package models

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"
)

func init() {
	migrations.MustRegister(createSchema, func(context.Context, *bun.DB) error {
		return fmt.Errorf("the inventory schema cannot be rolled back")
	})
}
