package libvirt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// MigrateVM moves a VM to another host of the cluster; its disks must be
// on storage both hosts see (the same pool names). A running VM migrates
// live (libvirt's managed direct migration, version 3 with parameters:
// Begin on the source, Prepare on the destination, Perform on the source,
// Finish on the destination, Confirm on the source, the way virsh migrate
// drives it) with VIR_MIGRATE_LIVE|PERSIST_DEST|UNDEFINE_SOURCE; a stopped
// VM moves by defining it on the destination and undefining it on the
// source. A VM already on the destination only is success.
func (d *Driver) MigrateVM(ctx context.Context, src hypervisor.Host, vm hypervisor.VMRef, dst hypervisor.Host, opts hypervisor.MigrateOptions) error {
	if d.typ == hypervisor.TypeLXC {
		return d.wrap("MigrateVM", vm.String(), hypervisor.NewError(hypervisor.ErrNotSupported, "containers do not migrate"))
	}
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	dl, err := d.conn(ctx, dst)
	if err != nil {
		return d.wrap("MigrateVM", vm.String(), err)
	}
	return d.run(ctx, src, "MigrateVM", vm.String(), func(ctx context.Context, sl *golibvirt.Libvirt) error {
		if sameLibvirtd(sl, dl) {
			return hypervisor.NewError(hypervisor.ErrInvalid, "source and destination are the same libvirtd")
		}
		dom, err := lookup(sl, vm)
		if errors.Is(err, hypervisor.ErrNotFound) {
			if _, derr := lookup(dl, vm); derr == nil {
				return nil // moved already
			}
			return err
		}
		if err != nil {
			return err
		}
		s, err := domState(sl, dom)
		if err != nil {
			return err
		}
		if !running(s) {
			return coldMigrate(sl, dl, dom, d.undefineFlags())
		}
		if !opts.Live {
			return hypervisor.NewError(hypervisor.ErrInvalid, "vm %s is running: migrate it live or stop it first", vm)
		}
		unsafe := strings.EqualFold(src.Details[DetailMigrateShared], "true")
		return liveMigrate(ctx, sl, dl, dom, migrateURI(dst), unsafe)
	})
}

// sameLibvirtd tells whether two connections reach one daemon: libvirt
// refuses to migrate a guest to the host it runs on.
func sameLibvirtd(a, b *golibvirt.Libvirt) bool {
	if a == b {
		return true
	}
	ca, err1 := a.ConnectGetCapabilities()
	cb, err2 := b.ConnectGetCapabilities()
	if err1 != nil || err2 != nil {
		return false
	}
	var xa, xb capsXML
	if xmlUnmarshal(ca, &xa) != nil || xmlUnmarshal(cb, &xb) != nil {
		return false
	}
	return xa.Host.UUID != "" && xa.Host.UUID == xb.Host.UUID
}

// migrateURI is where the destination's QEMU listens for the guest's
// memory: the host's migration.address detail, else its URL's host; ""
// lets libvirt use the destination's host name.
func migrateURI(h hypervisor.Host) string {
	addr := h.Details[DetailMigrateAddr]
	if addr == "" {
		if u, err := url.Parse(h.URL); err == nil {
			addr = u.Hostname()
		}
	}
	if addr == "" {
		return ""
	}
	if strings.Contains(addr, ":") && net.ParseIP(addr) != nil {
		addr = "[" + addr + "]"
	}
	return "tcp://" + addr
}

func stringParam(field, v string) golibvirt.TypedParam {
	return golibvirt.TypedParam{Field: field, Value: *golibvirt.NewTypedParamValueString(v)}
}

// setParam replaces or adds a string parameter.
func setParam(ps []golibvirt.TypedParam, field, v string) []golibvirt.TypedParam {
	out := make([]golibvirt.TypedParam, 0, len(ps)+1)
	for _, p := range ps {
		if p.Field != field {
			out = append(out, p)
		}
	}
	return append(out, stringParam(field, v))
}

func liveMigrate(ctx context.Context, sl, dl *golibvirt.Libvirt, dom golibvirt.Domain, uri string, unsafe bool) error {
	flags := golibvirt.MigrateLive | golibvirt.MigratePersistDest | golibvirt.MigrateUndefineSource |
		golibvirt.MigrateChangeProtection | golibvirt.MigrateAutoConverge
	if unsafe {
		flags |= golibvirt.MigrateUnsafe
	}
	destFlags := uint32(flags &^ golibvirt.MigrateAutoConverge &^ golibvirt.MigrateChangeProtection)
	var params []golibvirt.TypedParam
	if uri != "" {
		params = setParam(params, golibvirt.MigrateParamURI, uri)
	}
	cookie, domXML, err := sl.DomainMigrateBegin3Params(dom, params, uint32(flags))
	if err != nil {
		return fmt.Errorf("migration begin: %w", err)
	}
	params = setParam(params, golibvirt.MigrateParamDestXML, domXML)
	cookie, uriOut, err := dl.DomainMigratePrepare3Params(params, cookie, destFlags)
	if err != nil {
		return fmt.Errorf("migration prepare on destination: %w", err)
	}
	if len(uriOut) > 0 && uriOut[0] != "" {
		params = setParam(params, golibvirt.MigrateParamURI, uriOut[0])
	}

	// Perform blocks until the guest has moved: abort the job if ctx ends.
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			_ = sl.DomainAbortJob(dom)
		case <-done:
		}
	}()
	cookie, perr := sl.DomainMigratePerform3Params(dom, nil, params, cookie, flags)
	close(done)
	cancelled := int32(0)
	if perr != nil {
		cancelled = 1
	}
	params = setParam(params, golibvirt.MigrateParamDestName, dom.Name)
	_, cookie, ferr := dl.DomainMigrateFinish3Params(params, cookie, destFlags, cancelled)
	if ferr != nil && cancelled == 0 {
		cancelled = 1
	}
	// Confirm on the source: kills the source guest on success, resumes it
	// on failure.
	cerr := sl.DomainMigrateConfirm3Params(dom, params, cookie, uint32(flags), cancelled)
	switch {
	case perr != nil:
		if ctx.Err() != nil {
			return hypervisor.NewError(hypervisor.ErrUnreachable, "migration aborted: %w: %w", ctx.Err(), perr)
		}
		return fmt.Errorf("migration: %w", perr)
	case ferr != nil:
		return fmt.Errorf("migration finish on destination: %w", ferr)
	case cerr != nil:
		return fmt.Errorf("migration confirm on source: %w", cerr)
	}
	return nil
}

// coldMigrate moves a stopped VM's definition.
func coldMigrate(sl, dl *golibvirt.Libvirt, dom golibvirt.Domain, undefine golibvirt.DomainUndefineFlagsValues) error {
	// Secure: the VNC password moves along.
	x, err := sl.DomainGetXMLDesc(dom, golibvirt.DomainXMLInactive|golibvirt.DomainXMLSecure)
	if err != nil {
		return err
	}
	if _, err := dl.DomainDefineXMLFlags(x, 0); err != nil {
		return fmt.Errorf("define on destination: %w", err)
	}
	if err := sl.DomainUndefineFlags(dom, undefine); err != nil && !golibvirt.IsNotFound(err) {
		return fmt.Errorf("undefine on source: %w", err)
	}
	return nil
}
