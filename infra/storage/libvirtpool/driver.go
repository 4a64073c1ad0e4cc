// Package libvirtpool is primary storage for the libvirt hypervisors (KVM,
// LXC, Xen Project): a Nimbus pool is a libvirt storage pool named by the
// pool's inventory UUID, defined on every host that uses it, and a volume
// is a libvirt volume named by its path (the volume's UUID). The hypervisor
// driver attaches volumes as <disk type='volume'><source pool=.. volume=..>.
//
// Everything goes through libvirt's API on a host of the pool's scope
// (storage.Pool.Via), never through a shell on the host, so a remote host
// (qemu+tcp://, qemu+tls://, qemu+ssh://) works like the local one: images
// move between secondary storage, read and written by the worker, and the
// pool with libvirt's upload and download streams.
//
// Pool types: Filesystem (local storage) and SharedMountPoint are dir
// pools, NetworkFilesystem netfs, RBD rbd (the user's key in a libvirt
// secret), Iscsi iscsi (its LUNs, which Nimbus cannot create, are the
// volumes). On file pools (dir, netfs) volumes are qcow2 and root volumes
// are overlays on the template copy (<backingStore>); on RBD and iSCSI they
// are raw full copies.
//
// Names on the pool:
//
//	<volume uuid>                 a volume
//	tmpl-<template uuid>          a template (or ISO) copy, made once per pool
//	<volume uuid>.snap-<uuid>     a snapshot of the volume: a full, standalone copy
//	<volume uuid>.tmp-<what>      a scratch copy while exporting (removed after)
//
// Snapshots are full copies in the pool rather than qcow2 internal
// snapshots: qemu-img on the host is not reachable through libvirt for a
// remote host, and a standalone copy backs up to secondary storage with a
// plain download. A volume nothing runs from is copied with
// StorageVolCreateXMLFrom (qemu-img convert on the host, which flattens the
// template beneath it); a volume a running domain writes to cannot be read
// by qemu-img (QEMU holds its lock), so the copy is a push-mode domain
// backup (virDomainBackupBegin): QEMU itself writes a point-in-time copy
// into the pool while the guest runs.
package libvirtpool

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/go-libvirt"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/libvirtconn"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

var _ storage.PoolDriver = (*Driver)(nil)

var base64Std = base64.StdEncoding

// Volume formats.
const (
	formatQCOW2 = "qcow2"
	formatRaw   = "raw"
)

// Name parts on the pool (see the package doc).
const (
	templatePrefix = "tmpl-"
	snapInfix      = ".snap-"
	tmpInfix       = ".tmp-"
)

// init registers the driver for the three libvirt hypervisors; image
// stores mounted from NFS are looked for under the "mountroot" option.
func init() {
	for _, t := range []string{hypervisor.TypeKVM, hypervisor.TypeLXC, hypervisor.TypeXenProject} {
		storage.RegisterPool(t, func(cfg storage.Config) (storage.PoolDriver, error) {
			return New(t, Options{MountRoot: cfg.Options["mountroot"]}), nil
		})
	}
}

// Options tunes the driver; zero values take the defaults.
type Options struct {
	// MountRoot is where nfs://server/export image stores are mounted on
	// the worker (see storage.LocalDir).
	MountRoot string
	// Connector gives hosts' libvirt connections; nil = the worker-wide
	// libvirtconn.Default, shared with the hypervisor driver.
	Connector Connector
	// ProgressEvery is the least time between progress reports; default 500ms.
	ProgressEvery time.Duration
	// BusyWait is how long a template or image copy waits for another
	// process's upload of the same volume before failing; default 30 min.
	BusyWait time.Duration
}

// Driver is the libvirt primary storage driver of one hypervisor type.
type Driver struct {
	storage.UnsupportedPool
	typ   string
	o     Options
	locks keyedLocks
}

// New returns a driver for a libvirt hypervisor type (KVM, LXC, XenProject).
func New(hypervisorType string, o Options) *Driver {
	d := &Driver{UnsupportedPool: storage.UnsupportedPool{DriverName: hypervisorType}, typ: hypervisorType, o: o}
	if d.o.Connector == nil {
		d.o.Connector = shared{libvirtconn.Default}
	}
	if d.o.ProgressEvery <= 0 {
		d.o.ProgressEvery = 500 * time.Millisecond
	}
	if d.o.BusyWait <= 0 {
		d.o.BusyWait = 30 * time.Minute
	}
	return d
}

// Type is the hypervisor type the driver serves.
func (d *Driver) Type() string { return d.typ }

// Close releases nothing: connections belong to the shared pool.
func (d *Driver) Close() error { return nil }

// session is one operation on one pool through one host.
type session struct {
	d   *Driver
	ctx context.Context
	op  string
	p   storage.Pool
	h   hypervisor.Host
	def poolDef
	l   *libvirt.Libvirt
}

// do runs fn on a session through host h (p.Via when h is nil). libvirt
// calls take no context, so fn runs aside: when ctx ends first, the
// connection is dropped (which fails the calls still waiting on it) and
// the context's error returned.
func (d *Driver) do(ctx context.Context, op string, p storage.Pool, h *hypervisor.Host, target string, fn func(s *session) error) error {
	if target == "" {
		target = p.ID
	}
	def, err := buildPoolDef(p)
	if err != nil {
		return d.wrap(op, target, err)
	}
	if h == nil {
		h = p.Via
	}
	if h == nil {
		return hypervisor.Errorf(d.typ, op, target, storage.ErrUnreachable, "no host of pool %s's scope is up to reach it through", p.ID)
	}
	l, err := d.o.Connector.Conn(ctx, *h)
	if err != nil {
		return d.wrap(op, target, err)
	}
	s := &session{d: d, ctx: ctx, op: op, p: p, h: *h, def: def, l: l}
	done := make(chan error, 1)
	go func() { done <- fn(s) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		d.o.Connector.Forget(*h) // fails the calls still waiting on it
		err = ctx.Err()
		if errors.Is(err, context.DeadlineExceeded) {
			err = hypervisor.NewError(storage.ErrUnreachable, "libvirt at %s did not answer in time: %w", h.URL, err)
		}
	}
	return d.wrap(op, target, err)
}

// wrap makes err an OpError of the driver with its kind, unless it has one.
func (d *Driver) wrap(op, target string, err error) error {
	if err == nil {
		return nil
	}
	var oe *hypervisor.OpError
	if errors.As(err, &oe) {
		return err
	}
	if hypervisor.ErrorType(err) != "" {
		return &hypervisor.OpError{Driver: d.typ, Op: op, Target: target, Err: err}
	}
	return &hypervisor.OpError{Driver: d.typ, Op: op, Target: target, Kind: kindOf(err), Err: err}
}

// fail builds an error of a kind inside a session.
func (s *session) fail(kind error, format string, args ...any) error {
	return hypervisor.NewError(kind, format, args...)
}

// ---- pools ----

// ensureSecret defines the pool's secret (RBD key, CHAP password) and sets
// its value; both are idempotent.
func (s *session) ensureSecret() error {
	sec := s.def.Secret
	if sec == nil {
		return nil
	}
	x, err := render(sec)
	if err != nil {
		return err
	}
	ref, err := s.l.SecretDefineXML(x, 0)
	if err != nil {
		return fmt.Errorf("define secret %s: %w", sec.UUID, err)
	}
	if err := s.l.SecretSetValue(ref, s.def.Value, 0); err != nil {
		return fmt.Errorf("set secret %s: %w", sec.UUID, err)
	}
	return nil
}

// lookupPool finds the pool on the host; ok is false when it is not defined.
func (s *session) lookupPool() (libvirt.StoragePool, bool, error) {
	pool, err := s.l.StoragePoolLookupByName(s.def.Pool.Name)
	if notFound(err) {
		return pool, false, nil
	}
	return pool, err == nil, err
}

// ensurePool defines (persistent) or creates (transient) the pool on the
// host and starts it; all of it is idempotent. A transient pool is not
// built: it is for reaching storage that should already be there.
func (s *session) ensurePool(persistent bool) (libvirt.StoragePool, error) {
	if err := s.ensureSecret(); err != nil {
		return libvirt.StoragePool{}, err
	}
	x, err := render(s.def.Pool)
	if err != nil {
		return libvirt.StoragePool{}, err
	}
	pool, ok, err := s.lookupPool()
	if err != nil {
		return pool, err
	}
	if !ok && !persistent {
		if pool, err = s.l.StoragePoolCreateXML(x, 0); err != nil {
			if p2, ok2, _ := s.lookupPool(); ok2 { // created meanwhile
				return p2, nil
			}
			return pool, fmt.Errorf("create pool: %w", err)
		}
		return pool, nil
	}
	if !ok {
		if pool, err = s.l.StoragePoolDefineXML(x, 0); err != nil {
			p2, ok2, _ := s.lookupPool()
			if !ok2 {
				return pool, fmt.Errorf("define pool: %w", err)
			}
			pool = p2
		}
	}
	active, err := s.l.StoragePoolIsActive(pool)
	if err != nil {
		return pool, err
	}
	if active == 0 {
		if s.def.fileBased() {
			// Build makes the directory (dir) or mount point (netfs); one
			// that exists is fine.
			if err := s.l.StoragePoolBuild(pool, 0); err != nil && !isCode(err, libvirt.ErrStoragePoolBuilt) {
				return pool, fmt.Errorf("build pool: %w", err)
			}
		}
		if err := s.l.StoragePoolCreate(pool, 0); err != nil {
			if a, _ := s.l.StoragePoolIsActive(pool); a == 0 {
				return pool, fmt.Errorf("start pool: %w", err)
			}
		}
	}
	return pool, nil
}

// pool returns the started pool, connecting it on the host first when
// needed (a host added after the pool, a libvirtd that lost it).
func (s *session) pool() (libvirt.StoragePool, error) {
	pool, ok, err := s.lookupPool()
	if err != nil {
		return pool, err
	}
	if ok {
		if a, err := s.l.StoragePoolIsActive(pool); err == nil && a == 1 {
			return pool, nil
		}
	}
	return s.ensurePool(true)
}

// refresh rescans the pool, for files libvirt did not write itself (a
// domain backup). libvirt refuses while an upload or download runs in the
// pool; with wait it retries for a while, else it gives up at once.
func (s *session) refresh(pool libvirt.StoragePool, wait bool) error {
	tries := 1
	if wait {
		tries = 50
	}
	var err error
	for i := 0; i < tries; i++ {
		if err = s.l.StoragePoolRefresh(pool, 0); err == nil || !strings.Contains(err.Error(), "asynchronous jobs") {
			return err
		}
		if e := sleep(s.ctx, 200*time.Millisecond); e != nil {
			return e
		}
	}
	return err
}

// CreatePool connects the pool on the host it is reached through and
// reports its capacity; the per-host ConnectPool calls follow.
func (d *Driver) CreatePool(ctx context.Context, p storage.Pool) (storage.PoolStats, error) {
	if p.Via == nil {
		return storage.PoolStats{}, hypervisor.Errorf(d.typ, "CreatePool", p.ID, storage.ErrInvalid,
			"no host of the pool's scope is up: add a host before its primary storage")
	}
	var st storage.PoolStats
	err := d.do(ctx, "CreatePool", p, nil, "", func(s *session) error {
		pool, err := s.ensurePool(true)
		if err != nil {
			return err
		}
		st, err = s.stats(pool)
		return err
	})
	return result(&st, err)
}

// ConnectPool defines, builds, starts and autostarts the pool on a host.
func (d *Driver) ConnectPool(ctx context.Context, p storage.Pool, h hypervisor.Host) error {
	return d.do(ctx, "ConnectPool", p, &h, "", func(s *session) error {
		pool, err := s.ensurePool(true)
		if err != nil {
			return err
		}
		return s.l.StoragePoolSetAutostart(pool, 1)
	})
}

// DisconnectPool stops and undefines the pool (and its secret) on a host;
// a pool the host does not know is success. Volumes stay on the storage.
func (d *Driver) DisconnectPool(ctx context.Context, p storage.Pool, h hypervisor.Host) error {
	return d.do(ctx, "DisconnectPool", p, &h, "", func(s *session) error {
		if err := s.stopPool(); err != nil {
			return err
		}
		if s.def.Secret != nil {
			if sec, err := s.l.SecretLookupByUUID(uuidBytes(s.def.Secret.UUID)); err == nil {
				if err := s.l.SecretUndefine(sec); err != nil && !notFound(err) {
					return err
				}
			}
		}
		return nil
	})
}

func (s *session) stopPool() error {
	pool, ok, err := s.lookupPool()
	if err != nil || !ok {
		return err
	}
	if a, _ := s.l.StoragePoolIsActive(pool); a == 1 {
		var err error
		for i := 0; i < 50; i++ { // not while an upload or download runs
			if err = s.l.StoragePoolDestroy(pool); err == nil || !strings.Contains(err.Error(), "asynchronous jobs") {
				break
			}
			if e := sleep(s.ctx, 200*time.Millisecond); e != nil {
				return e
			}
		}
		if err != nil && !notFound(err) {
			if a, _ := s.l.StoragePoolIsActive(pool); a == 1 {
				return fmt.Errorf("stop pool: %w", err)
			}
		}
	}
	if p, _ := s.l.StoragePoolIsPersistent(pool); p == 1 {
		if err := s.l.StoragePoolUndefine(pool); err != nil && !notFound(err) {
			return fmt.Errorf("undefine pool: %w", err)
		}
	}
	return nil
}

// DeletePool removes what Nimbus itself put on the storage (template
// copies, snapshots, scratch copies) through a host of the pool's scope,
// then stops the pool there. Other files are the admin's and stay; the
// directory, export or RBD pool stays too. Without a host to act through
// there is nothing to reach: success.
func (d *Driver) DeletePool(ctx context.Context, p storage.Pool) error {
	if p.Via == nil {
		return nil
	}
	return d.do(ctx, "DeletePool", p, nil, "", func(s *session) error {
		_, known, err := s.lookupPool()
		if err != nil {
			return err
		}
		var pool libvirt.StoragePool
		if known {
			pool, err = s.pool()
		} else if pool, err = s.ensurePool(false); err != nil && s.def.Kind() == kindDir {
			return nil // the directory is gone, and all in it
		}
		if err != nil {
			return err
		}
		vols, _, err := s.l.StoragePoolListAllVolumes(pool, 1, 0)
		if err != nil {
			return err
		}
		for _, v := range vols {
			if strings.HasPrefix(v.Name, templatePrefix) || strings.Contains(v.Name, snapInfix) || strings.Contains(v.Name, tmpInfix) {
				if err := s.l.StorageVolDelete(v, 0); err != nil && !notFound(err) {
					return fmt.Errorf("delete %s: %w", v.Name, err)
				}
			}
		}
		if !known {
			return s.stopPool()
		}
		return nil
	})
}

// PoolCapacity reads the pool's size and use (after a rescan, so files
// written by domains count) and sums its volumes' virtual sizes.
func (d *Driver) PoolCapacity(ctx context.Context, p storage.Pool) (storage.PoolStats, error) {
	var st storage.PoolStats
	err := d.do(ctx, "PoolCapacity", p, nil, "", func(s *session) error {
		pool, err := s.pool()
		if err != nil {
			return err
		}
		_ = s.refresh(pool, false) // stale figures beat none
		st, err = s.stats(pool)
		return err
	})
	return result(&st, err)
}

func (s *session) stats(pool libvirt.StoragePool) (storage.PoolStats, error) {
	_, capacity, allocation, available, err := s.l.StoragePoolGetInfo(pool)
	if err != nil {
		return storage.PoolStats{}, err
	}
	st := storage.PoolStats{CapacityBytes: int64(capacity), UsedBytes: int64(allocation), AvailableBytes: int64(available)}
	if s.p.CapacityBytes > 0 && s.p.CapacityBytes < st.CapacityBytes {
		st.CapacityBytes = s.p.CapacityBytes
	}
	vols, _, err := s.l.StoragePoolListAllVolumes(pool, 1, 0)
	if err != nil {
		return st, err
	}
	for _, v := range vols {
		if _, c, _, err := s.l.StorageVolGetInfo(v); err == nil {
			st.AllocatedBytes += int64(c)
		}
	}
	return st, nil
}

// ---- helpers ----

// result answers an operation's value only when it succeeded: after a
// context ended, the call still running aside may yet write it.
func result[T any](v *T, err error) (T, error) {
	if err != nil {
		var zero T
		return zero, err
	}
	return *v, nil
}

// keyedLocks serialises work on one name (a template copy on one pool of
// one host) inside this process.
type keyedLocks struct {
	mu sync.Mutex
	m  map[string]*keyedLock
}

type keyedLock struct {
	ch   chan struct{}
	refs int
}

// lock takes the lock of key, or fails when ctx ends first.
func (k *keyedLocks) lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyedLock{ch: make(chan struct{}, 1)}
		k.m[key] = l
	}
	l.refs++
	k.mu.Unlock()
	release := func() {
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// uuidBytes parses a textual UUID for libvirt's lookups.
func uuidBytes(s string) libvirt.UUID {
	var u libvirt.UUID
	h := strings.ReplaceAll(s, "-", "")
	for i := 0; i < len(u) && 2*i+1 < len(h); i++ {
		fmt.Sscanf(h[2*i:2*i+2], "%02x", &u[i])
	}
	return u
}
