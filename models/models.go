// Package models holds the inventory: Bun models for the whole CloudStack
// domain, ordered migrations, and small repository helpers that take
// bun.IDB so they run inside or outside a transaction.
//
// Conventions: every table has an internal int64 id and, where the API shows
// it, a unique uuid; timestamps are UTC; rows CloudStack keeps after removal
// carry a soft-delete "removed" column; state changes go through guarded
// updates (see Transition).
//
// References to other rows are plain int64 columns without database foreign
// keys; an optional one is tagged nullzero, so 0 in Go is NULL in the table
// (and never collides in a unique index). Column names and state values are
// CloudStack's, except: zone_id for its data_center_id, state for host and
// pool status (so Transition covers them), and names that are reserved words
// in MySQL (key, interval, default, revoke) get a prefix or suffix.
package models

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
)

// NewUUID returns a fresh random UUID string for an API-visible row.
func NewUUID() string { return uuid.NewString() }

// Now is the inventory clock: UTC, truncated to seconds so that MySQL
// DATETIME and SQLite round-trip the same value.
func Now() time.Time { return time.Now().UTC().Truncate(time.Second) }

// ErrNotFound is returned by lookups that find no row.
var ErrNotFound = errors.New("not found")

// ErrStateChanged is returned by Transition when the row was not in the
// expected state (someone else moved it first).
var ErrStateChanged = errors.New("state changed concurrently")

// NotFound maps sql.ErrNoRows to ErrNotFound and wraps with what was sought.
func NotFound(err error, what string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return err
}

// Transition moves one row of model's table from state `from` (any of them)
// to `to` with a guarded UPDATE ... WHERE id = ? AND state IN (...), setting
// the extra columns too. It returns ErrStateChanged when no row matched.
func Transition(ctx context.Context, db bun.IDB, model any, id int64, to string, from []string, set map[string]any) error {
	q := db.NewUpdate().Model(model).Set("state = ?", to).Where("id = ?", id)
	if len(from) > 0 {
		q = q.Where("state IN (?)", bun.In(from))
	}
	for col, v := range set {
		q = q.Set("? = ?", bun.Ident(col), v)
	}
	res, err := q.Exec(ctx)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrStateChanged
	}
	return nil
}
