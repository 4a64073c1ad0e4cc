// Package activities holds the small idempotent steps workflows run: thin
// wrappers that load from the inventory, call a driver, and map errors.
// Activities are methods on structs that hold their dependencies; Temporal
// registers struct methods by method name alone, so every method name is
// unique across the package and starts with its area (JobStart,
// HostConnect, VolumeCreate...).
package activities

import (
	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/infra/bmc"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/secrets"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// Deps is what activity structs share; the worker builds it once.
type Deps struct {
	DB *bun.DB
	// Render turns an entity (type name + UUID) into the same JSON object its
	// list command returns; it is the API's renderer, injected to keep
	// activities free of the api package.
	Render func(ctx Context, typ, uuid string) (any, error)
	// Hypervisors returns the driver of a hypervisor type ("KVM",
	// "Simulator"...), opened once per worker; a type without a driver
	// fails with the registry's error naming it.
	Hypervisors func(typ string) (hypervisor.Driver, error)
	// Pools returns the primary storage driver of a hypervisor type, and
	// ImageStores the driver of an image store provider (NFS, S3...).
	Pools       func(hypervisorType string) (storage.PoolDriver, error)
	ImageStores func(provider string) (storage.ImageStoreDriver, error)
	// BMCs returns the driver of a BMC provider (ipmi, redfish) for
	// fencing; nil opens them on first use with default settings.
	BMCs func(provider string) (bmc.Driver, error)
	// Secrets decrypts credentials the API stored encrypted (host and
	// cluster passwords, storage keys).
	Secrets *secrets.Box
}
