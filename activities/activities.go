// Package activities holds the small idempotent steps workflows run: thin
// wrappers that load from the inventory, call a driver, and map errors.
// Activities are methods on structs that hold their dependencies; Temporal
// registers struct methods by method name alone, so every method name is
// unique across the package and starts with its area (JobStart,
// HostConnect, VolumeCreate...).
package activities

import (
	"github.com/uptrace/bun"
)

// Deps is what activity structs share; the worker builds it once.
type Deps struct {
	DB *bun.DB
	// Render turns an entity (type name + UUID) into the same JSON object its
	// list command returns; it is the API's renderer, injected to keep
	// activities free of the api package.
	Render func(ctx Context, typ, uuid string) (any, error)
}
