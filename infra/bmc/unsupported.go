package bmc

import (
	"context"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// Unsupported is the base every driver embeds: each method (but Provider)
// fails with ErrNotSupported naming the operation and the driver.
type Unsupported struct {
	DriverName string
}

func (u Unsupported) unsupported(op string) error {
	return &hypervisor.OpError{Driver: u.DriverName, Op: op, Kind: ErrNotSupported}
}

// PowerStatus is not supported.
func (u Unsupported) PowerStatus(context.Context, BMC) (PowerState, error) {
	return PowerUnknown, u.unsupported("PowerStatus")
}

// PowerOn is not supported.
func (u Unsupported) PowerOn(context.Context, BMC) error { return u.unsupported("PowerOn") }

// PowerOff is not supported.
func (u Unsupported) PowerOff(context.Context, BMC, bool) error { return u.unsupported("PowerOff") }

// PowerCycle is not supported.
func (u Unsupported) PowerCycle(context.Context, BMC) error { return u.unsupported("PowerCycle") }

// SetBootDevice is not supported.
func (u Unsupported) SetBootDevice(context.Context, BMC, BootDevice, BootOptions) error {
	return u.unsupported("SetBootDevice")
}

// Inventory is not supported.
func (u Unsupported) Inventory(context.Context, BMC) (Inventory, error) {
	return Inventory{}, u.unsupported("Inventory")
}

// ChangePassword is not supported.
func (u Unsupported) ChangePassword(context.Context, BMC, string) error {
	return u.unsupported("ChangePassword")
}

// Close has nothing to release.
func (u Unsupported) Close() error { return nil }
