package libvirt

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// retrying calls the driver as the worker's activities do: an unreachable
// host (libvirtd restarted, which other tests sharing it do) is tried
// again; every other outcome is final.
type retrying struct {
	t *testing.T
	d *Driver
}

func again[T any](t *testing.T, what string, fn func() (T, error)) (T, error) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		v, err := fn()
		if err == nil || !errors.Is(err, hypervisor.ErrUnreachable) || time.Now().After(deadline) {
			return v, err
		}
		t.Logf("%s: %v: trying again", what, err)
		time.Sleep(500 * time.Millisecond)
	}
}

func again0(t *testing.T, what string, fn func() error) error {
	t.Helper()
	_, err := again(t, what, func() (struct{}, error) { return struct{}{}, fn() })
	return err
}

func (r retrying) ConnectHost(ctx context.Context, h hypervisor.Host) (hypervisor.HostInfo, error) {
	return again(r.t, "ConnectHost", func() (hypervisor.HostInfo, error) { return r.d.ConnectHost(ctx, h) })
}

func (r retrying) DefineVM(ctx context.Context, h hypervisor.Host, s hypervisor.VMSpec) (hypervisor.VMInfo, error) {
	return again(r.t, "DefineVM", func() (hypervisor.VMInfo, error) { return r.d.DefineVM(ctx, h, s) })
}

func (r retrying) VMState(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef) (hypervisor.VMInfo, error) {
	return again(r.t, "VMState", func() (hypervisor.VMInfo, error) { return r.d.VMState(ctx, h, vm) })
}

func (r retrying) ConsoleEndpoint(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef) (hypervisor.Console, error) {
	return again(r.t, "ConsoleEndpoint", func() (hypervisor.Console, error) { return r.d.ConsoleEndpoint(ctx, h, vm) })
}

func (r retrying) StartVM(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef) error {
	return again0(r.t, "StartVM", func() error { return r.d.StartVM(ctx, h, vm) })
}

func (r retrying) StopVM(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef, o hypervisor.StopOptions) error {
	return again0(r.t, "StopVM", func() error { return r.d.StopVM(ctx, h, vm, o) })
}

func (r retrying) RebootVM(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef) error {
	return again0(r.t, "RebootVM", func() error { return r.d.RebootVM(ctx, h, vm) })
}

func (r retrying) DestroyVM(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef) error {
	return again0(r.t, "DestroyVM", func() error { return r.d.DestroyVM(ctx, h, vm) })
}

func (r retrying) AttachVolume(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef, disk hypervisor.Disk) error {
	return again0(r.t, "AttachVolume", func() error { return r.d.AttachVolume(ctx, h, vm, disk) })
}

func (r retrying) DetachVolume(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef, disk hypervisor.Disk) error {
	return again0(r.t, "DetachVolume", func() error { return r.d.DetachVolume(ctx, h, vm, disk) })
}

func (r retrying) ResizeVM(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef, rs hypervisor.Resize) error {
	return again0(r.t, "ResizeVM", func() error { return r.d.ResizeVM(ctx, h, vm, rs) })
}

func (r retrying) MigrateVM(ctx context.Context, src hypervisor.Host, vm hypervisor.VMRef, dst hypervisor.Host, o hypervisor.MigrateOptions) error {
	return again0(r.t, "MigrateVM", func() error { return r.d.MigrateVM(ctx, src, vm, dst, o) })
}
