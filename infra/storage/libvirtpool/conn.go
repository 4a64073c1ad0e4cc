package libvirtpool

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"

	"github.com/digitalocean/go-libvirt"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// Connector gives the libvirt connection of a host, dialling it or reusing
// a live one. Forget drops a connection that misbehaved (a call stuck past
// its context), so the next call dials again.
type Connector interface {
	Conn(ctx context.Context, h hypervisor.Host) (*libvirt.Libvirt, error)
	Forget(h hypervisor.Host, l *libvirt.Libvirt)
}

// dialer is the built-in Connector: one connection per host URL, dialled
// again once libvirtd dropped it (a restart).
type dialer struct {
	mu    sync.Mutex
	conns map[string]*libvirt.Libvirt
}

func newDialer() *dialer { return &dialer{conns: map[string]*libvirt.Libvirt{}} }

func (d *dialer) Conn(ctx context.Context, h hypervisor.Host) (*libvirt.Libvirt, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if l := d.conns[h.URL]; l != nil && l.IsConnected() {
		return l, nil
	}
	delete(d.conns, h.URL)
	u, err := url.Parse(h.URL)
	if err != nil || u.Scheme == "" {
		return nil, hypervisor.NewError(storage.ErrInvalid, "host %s: libvirt url %q: want qemu:///system, qemu+tcp://host/system, ...", h, h.URL)
	}
	type result struct {
		l   *libvirt.Libvirt
		err error
	}
	ch := make(chan result, 1)
	go func() {
		l, err := libvirt.ConnectToURI(u)
		ch <- result{l, err}
	}()
	select {
	case <-ctx.Done():
		go func() { // a connection that arrives late is closed
			if r := <-ch; r.l != nil {
				r.l.Disconnect()
			}
		}()
		return nil, hypervisor.NewError(storage.ErrUnreachable, "host %s: libvirt at %s: %v", h, h.URL, ctx.Err())
	case r := <-ch:
		if r.err != nil {
			return nil, hypervisor.NewError(storage.ErrUnreachable, "host %s: libvirt at %s: %v", h, h.URL, r.err)
		}
		d.conns[h.URL] = r.l
		return r.l, nil
	}
}

func (d *dialer) Forget(h hypervisor.Host, l *libvirt.Libvirt) {
	d.mu.Lock()
	if d.conns[h.URL] == l {
		delete(d.conns, h.URL)
	}
	d.mu.Unlock()
	if l != nil {
		go l.Disconnect()
	}
}

func (d *dialer) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, l := range d.conns {
		l.Disconnect()
		delete(d.conns, k)
	}
}

// lvCode returns the libvirt error number of err, or -1.
func lvCode(err error) libvirt.ErrorNumber {
	var e libvirt.Error
	if errors.As(err, &e) {
		return libvirt.ErrorNumber(e.Code)
	}
	return -1
}

func isCode(err error, codes ...libvirt.ErrorNumber) bool {
	c := lvCode(err)
	for _, want := range codes {
		if c == want {
			return true
		}
	}
	return false
}

func notFound(err error) bool {
	return isCode(err, libvirt.ErrNoStoragePool, libvirt.ErrNoStorageVol, libvirt.ErrNoDomain, libvirt.ErrNoSecret)
}

// kindOf classifies a libvirt or transport error into the drivers' kinds.
func kindOf(err error) error {
	switch {
	case err == nil:
		return nil
	case notFound(err):
		return storage.ErrNotFound
	case isCode(err, libvirt.ErrNoSupport, libvirt.ErrOperationUnsupported, libvirt.ErrArgumentUnsupported):
		return storage.ErrNotSupported
	case isCode(err, libvirt.ErrInvalidArg, libvirt.ErrXMLError, libvirt.ErrXMLDetail, libvirt.ErrConfigUnsupported, libvirt.ErrXMLInvalidSchema):
		return storage.ErrInvalid
	case errors.Is(err, syscall.ENOSPC) || strings.Contains(err.Error(), "No space left on device"):
		return storage.ErrCapacity
	case errors.Is(err, libvirt.ErrInterrupted), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.EINVAL), errors.Is(err, context.DeadlineExceeded):
		return storage.ErrUnreachable
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return storage.ErrUnreachable
	}
	return nil
}
