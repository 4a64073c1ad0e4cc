package models

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"
)

// Out-of-band management: the oobm table (a host's BMC) and zone_details
// (where a zone turns it off). A fresh inventory got both from the first
// migration; this one brings older ones up to date.
func init() {
	migrations.MustRegister(func(ctx context.Context, db *bun.DB) error {
		for _, m := range []any{(*OutOfBandManagement)(nil), (*ZoneDetail)(nil)} {
			if _, err := db.NewCreateTable().Model(m).IfNotExists().Exec(ctx); err != nil {
				return fmt.Errorf("create table for %T: %w", m, err)
			}
		}
		for _, ix := range Indexes() {
			if ix.Table != "zone_details" {
				continue
			}
			if _, err := db.NewCreateIndex().Table(ix.Table).Index(ix.Name).Column(ix.Columns...).Unique().Exec(ctx); err != nil && !alreadyExists(err) {
				return fmt.Errorf("create index %s: %w", ix.Name, err)
			}
		}
		return nil
	}, func(ctx context.Context, db *bun.DB) error {
		for _, m := range []any{(*OutOfBandManagement)(nil), (*ZoneDetail)(nil)} {
			if _, err := db.NewDropTable().Model(m).IfExists().Exec(ctx); err != nil {
				return err
			}
		}
		return nil
	})
}
