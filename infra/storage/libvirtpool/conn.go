package libvirtpool

import (
	"context"
	"errors"
	"strings"
	"syscall"

	"github.com/digitalocean/go-libvirt"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/libvirtconn"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// Connector gives the libvirt connection of a host, dialling it or reusing
// a live one. Forget drops a connection that misbehaved (a call stuck past
// its context), so the next call dials again.
type Connector interface {
	Conn(ctx context.Context, h hypervisor.Host) (*libvirt.Libvirt, error)
	Forget(h hypervisor.Host)
}

// shared is the Connector over a libvirtconn pool: by default the
// process-wide one, so the storage and hypervisor drivers of a worker share
// one connection per host.
type shared struct{ p *libvirtconn.Pool }

func (s shared) Conn(ctx context.Context, h hypervisor.Host) (*libvirt.Libvirt, error) {
	return s.p.Get(ctx, h.URL, h.Username, h.Password)
}

func (s shared) Forget(h hypervisor.Host) { s.p.Drop(h.URL) }

func isCode(err error, codes ...libvirt.ErrorNumber) bool {
	c := libvirtconn.Code(err)
	for _, want := range codes {
		if c == int(want) {
			return true
		}
	}
	return false
}

func notFound(err error) bool {
	return isCode(err, libvirt.ErrNoStoragePool, libvirt.ErrNoStorageVol, libvirt.ErrNoDomain, libvirt.ErrNoSecret)
}

// kindOf classifies an error as libvirtconn does, but for two storage
// cases: a full disk is ErrCapacity, and libvirt's "operation invalid" is
// left retryable, since for pools and volumes it says "busy" (asynchronous
// jobs in the pool, another job on the domain, a volume being uploaded).
func kindOf(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ENOSPC) || strings.Contains(err.Error(), "No space left on device"):
		return storage.ErrCapacity
	case isCode(err, libvirt.ErrOperationInvalid):
		return nil
	}
	return libvirtconn.Kind(err)
}
