package libvirtpool

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/digitalocean/go-libvirt"

	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// domainUsing finds the running domain on the host that uses the volume,
// and the disk (vda...) it uses it as.
func (s *session) domainUsing(vol libvirt.StorageVol) (libvirt.Domain, string, bool, error) {
	path, err := s.l.StorageVolGetPath(vol)
	if err != nil {
		return libvirt.Domain{}, "", false, err
	}
	doms, _, err := s.l.ConnectListAllDomains(1, libvirt.ConnectListDomainsActive)
	if err != nil {
		return libvirt.Domain{}, "", false, err
	}
	for _, dom := range doms {
		x, err := s.l.DomainGetXMLDesc(dom, 0)
		if notFound(err) {
			continue
		}
		if err != nil {
			return dom, "", false, err
		}
		var dd domainDisks
		if err := xml.Unmarshal([]byte(x), &dd); err != nil {
			return dom, "", false, err
		}
		if dev := dd.diskUsing(s.p.ID, vol.Name, path); dev != "" {
			return dom, dev, true, nil
		}
	}
	return libvirt.Domain{}, "", false, nil
}

// fullCopy makes name a standalone copy of vol in the pool (qcow2 on file
// pools; the template beneath an overlay flattened in). A copy there
// already is kept, after any backup job still writing it has ended (a
// retried call). See the package doc for why a volume in use is copied by
// a domain backup.
func (s *session) fullCopy(pool libvirt.StoragePool, vol libvirt.StorageVol, name string, progress storage.ProgressFunc) (libvirt.StorageVol, error) {
	dom, dev, running, err := s.domainUsing(vol)
	if err != nil {
		return libvirt.StorageVol{}, err
	}
	if running {
		if err := s.waitJob(dom, nil); err != nil {
			return libvirt.StorageVol{}, err
		}
		_ = s.refresh(pool, true)
	}
	if c, ok, err := s.lookupVol(pool, name); err != nil || ok {
		return c, err
	}
	src, err := s.describe(vol)
	if err != nil {
		return libvirt.StorageVol{}, err
	}
	format := s.defaultFormat(formatQCOW2)
	if !running {
		return s.create(pool, newVolumeXML(name, format, src.Capacity.bytes(), nil), &vol)
	}
	if !s.def.fileBased() || s.def.Pool.Target == nil {
		return libvirt.StorageVol{}, s.fail(storage.ErrNotSupported, "copying a volume in use by running VM %s on a %s pool: stop the VM first", dom.Name, s.def.Kind())
	}
	file := filepath.Join(s.def.Pool.Target.Path, name)
	x, err := render(newBackupXML(dev, file))
	if err != nil {
		return libvirt.StorageVol{}, err
	}
	if err := s.l.DomainBackupBegin(dom, x, nil, 0); err != nil {
		return libvirt.StorageVol{}, fmt.Errorf("backup of disk %s of VM %s: %w", dev, dom.Name, err)
	}
	if err := s.waitJob(dom, progress); err != nil {
		return libvirt.StorageVol{}, err
	}
	typ, params, err := s.l.DomainGetJobStats(dom, libvirt.DomainJobStatsCompleted)
	if err != nil {
		return libvirt.StorageVol{}, err
	}
	if libvirt.DomainJobType(typ) == libvirt.DomainJobFailed {
		msg := "failed"
		for _, p := range params {
			if p.Field == "errmsg" {
				msg = fmt.Sprint(p.Value.I)
			}
		}
		return libvirt.StorageVol{}, fmt.Errorf("backup of disk %s of VM %s: %s", dev, dom.Name, msg)
	}
	if err := s.refresh(pool, true); err != nil {
		return libvirt.StorageVol{}, err
	}
	return s.mustVol(pool, name, "backup copy")
}

// waitJob waits until the domain runs no job (a backup), reporting the
// job's progress.
func (s *session) waitJob(dom libvirt.Domain, progress storage.ProgressFunc) error {
	for {
		typ, _, _, _, _, _, _, _, _, total, processed, _, err := s.l.DomainGetJobInfo(dom)
		if notFound(err) || (err == nil && libvirt.DomainJobType(typ) == libvirt.DomainJobNone) {
			return nil
		}
		if err != nil {
			return err
		}
		progress.Report(int64(processed), int64(total))
		if err := sleep(s.ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// SnapshotVolume copies the volume to <path>.snap-<id> in the pool: by
// qemu-img when nothing runs from it, by a domain backup when a running
// domain on the host does. The same snapshot again is success.
func (d *Driver) SnapshotVolume(ctx context.Context, p storage.Pool, path string, spec storage.SnapshotSpec) (storage.Snapshot, error) {
	var out storage.Snapshot
	err := d.do(ctx, "SnapshotVolume", p, nil, path, func(s *session) error {
		if spec.ID == "" {
			return s.fail(storage.ErrInvalid, "snapshot has no id")
		}
		pool, err := s.pool()
		if err != nil {
			return err
		}
		vol, err := s.mustVol(pool, path, "volume")
		if err != nil {
			return err
		}
		snap, err := s.fullCopy(pool, vol, snapName(path, spec.ID), nil)
		if err != nil {
			return err
		}
		size, err := s.physical(snap)
		if err != nil {
			return err
		}
		out = storage.Snapshot{ID: spec.ID, VolumePath: path, Path: snap.Name, SizeBytes: size, Created: time.Now().UTC()}
		return nil
	})
	return result(&out, err)
}

// BackupSnapshot downloads the snapshot's copy (standalone already) to
// secondary storage.
func (d *Driver) BackupSnapshot(ctx context.Context, p storage.Pool, path, snapshotID string, dst storage.Location, progress storage.ProgressFunc) (storage.Image, error) {
	var out storage.Image
	err := d.do(ctx, "BackupSnapshot", p, nil, snapName(path, snapshotID), func(s *session) error {
		dest, err := d.localPath(dst)
		if err != nil {
			return err
		}
		pool, err := s.pool()
		if err != nil {
			return err
		}
		snap, err := s.mustVol(pool, snapName(path, snapshotID), "snapshot")
		if err != nil {
			return err
		}
		size, sum, err := s.downloadTo(snap, dest, progress)
		out = storage.Image{Path: dst.Path, SizeBytes: size, Checksum: sum}
		return err
	})
	return result(&out, err)
}

// RevertSnapshot replaces the volume by a copy of the snapshot (standalone:
// the template beneath is no longer shared). The volume must not be in use
// by a running domain.
func (d *Driver) RevertSnapshot(ctx context.Context, p storage.Pool, path, snapshotID string) error {
	return d.do(ctx, "RevertSnapshot", p, nil, path, func(s *session) error {
		pool, err := s.pool()
		if err != nil {
			return err
		}
		snap, err := s.mustVol(pool, snapName(path, snapshotID), "snapshot")
		if err != nil {
			return err
		}
		sx, err := s.describe(snap)
		if err != nil {
			return err
		}
		if vol, ok, err := s.lookupVol(pool, path); err != nil {
			return err
		} else if ok {
			if dom, _, running, err := s.domainUsing(vol); err != nil {
				return err
			} else if running {
				return s.fail(storage.ErrInvalid, "volume %s is in use by running VM %s: stop it to revert", path, dom.Name)
			}
			// Deleting first leaves, should this stop half-way, a missing
			// volume that the retry makes from the snapshot.
			if err := s.deleteVol(vol); err != nil {
				return err
			}
		}
		format := formatRaw
		if sx.Target.Format != nil {
			format = sx.Target.Format.Type
		}
		_, err = s.create(pool, newVolumeXML(path, format, sx.Capacity.bytes(), nil), &snap)
		return err
	})
}

// DeleteSnapshot deletes the snapshot's copy in the pool; a missing one is
// success.
func (d *Driver) DeleteSnapshot(ctx context.Context, p storage.Pool, path, snapshotID string) error {
	return d.do(ctx, "DeleteSnapshot", p, nil, snapName(path, snapshotID), func(s *session) error {
		pool, err := s.pool()
		if err != nil {
			return err
		}
		snap, ok, err := s.lookupVol(pool, snapName(path, snapshotID))
		if err != nil || !ok {
			return err
		}
		return s.deleteVol(snap)
	})
}

// standalone returns a volume whose bytes stand alone: the volume itself
// when it has no backing store and no running domain writes it, else a
// scratch full copy (done() deletes it).
func (s *session) standalone(pool libvirt.StoragePool, vol libvirt.StorageVol, why string, progress storage.ProgressFunc) (libvirt.StorageVol, func(), error) {
	x, err := s.describe(vol)
	if err != nil {
		return vol, nil, err
	}
	_, _, running, err := s.domainUsing(vol)
	if err != nil {
		return vol, nil, err
	}
	if !running && (x.BackingStore == nil || x.BackingStore.Path == "") {
		return vol, func() {}, nil
	}
	name := vol.Name + tmpInfix + why
	if old, ok, _ := s.lookupVol(pool, name); ok {
		_ = s.deleteVol(old) // an earlier attempt's, maybe partial
	}
	c, err := s.fullCopy(pool, vol, name, progress)
	if err != nil {
		return vol, nil, err
	}
	return c, func() { _ = s.deleteVol(c) }, nil
}

// ExportVolume copies a volume, flattened, to secondary storage (a
// template made from a volume).
func (d *Driver) ExportVolume(ctx context.Context, p storage.Pool, path string, dst storage.Location, progress storage.ProgressFunc) (storage.Image, error) {
	var out storage.Image
	err := d.do(ctx, "ExportVolume", p, nil, path, func(s *session) error {
		dest, err := d.localPath(dst)
		if err != nil {
			return err
		}
		pool, err := s.pool()
		if err != nil {
			return err
		}
		vol, err := s.mustVol(pool, path, "volume")
		if err != nil {
			return err
		}
		src, done, err := s.standalone(pool, vol, "export", nil)
		if err != nil {
			return err
		}
		defer done()
		size, sum, err := s.downloadTo(src, dest, progress)
		out = storage.Image{Path: dst.Path, SizeBytes: size, Checksum: sum}
		return err
	})
	return result(&out, err)
}

// CopyVolume copies a volume to another pool (a stopped VM's disk moving):
// on one host with StorageVolCreateXMLFrom, between hosts by streaming a
// standalone copy from one libvirtd to the other through the worker.
func (d *Driver) CopyVolume(ctx context.Context, src storage.Pool, path string, dst storage.Pool, v storage.VolumeSpec, progress storage.ProgressFunc) (storage.Volume, error) {
	name := cmp(v.Path, path)
	var out storage.Volume
	err := d.do(ctx, "CopyVolume", src, nil, path, func(s *session) error {
		if err := checkName(name); err != nil {
			return err
		}
		if dst.Via == nil {
			return s.fail(storage.ErrUnreachable, "no host of pool %s's scope is up to reach it through", dst.ID)
		}
		ddef, err := buildPoolDef(dst)
		if err != nil {
			return err
		}
		t := &session{d: d, ctx: s.ctx, op: s.op, p: dst, h: *dst.Via, def: ddef, l: s.l}
		if dst.Via.URL != s.h.URL {
			if t.l, err = d.o.Connector.Conn(s.ctx, *dst.Via); err != nil {
				return err
			}
		}
		spool, err := s.pool()
		if err != nil {
			return err
		}
		dpool, err := t.pool()
		if err != nil {
			return err
		}
		vol, err := s.mustVol(spool, path, "volume")
		if err != nil {
			return err
		}
		sx, err := s.describe(vol)
		if err != nil {
			return err
		}
		if t.l == s.l {
			if _, _, running, err := s.domainUsing(vol); err != nil {
				return err
			} else if running {
				return s.fail(storage.ErrInvalid, "volume %s is in use by a running VM: stop it to copy", path)
			}
			c, err := t.create(dpool, newVolumeXML(name, t.defaultFormat(formatQCOW2), sx.Capacity.bytes(), nil), &vol)
			if err != nil {
				return err
			}
			out, err = t.volume(c)
			return err
		}
		from, done, err := s.standalone(spool, vol, "copy", nil)
		if err != nil {
			return err
		}
		defer done()
		fx, err := s.describe(from)
		if err != nil {
			return err
		}
		size, err := s.physical(from)
		if err != nil {
			return err
		}
		format := formatRaw
		if fx.Target.Format != nil {
			format = fx.Target.Format.Type
		}
		if format == formatQCOW2 && !t.def.fileBased() {
			return t.fail(storage.ErrNotSupported, "a %s pool takes RAW images only; volume %s is qcow2", t.def.Kind(), path)
		}
		if c, ok, err := t.lookupVol(dpool, name); err != nil {
			return err
		} else if ok {
			if got, _ := t.physical(c); got == size {
				out, err = t.volume(c)
				return err
			}
			if err := t.deleteVol(c); err != nil {
				return err
			}
		}
		capacity := int64(0)
		if format == formatQCOW2 {
			capacity = fx.Capacity.bytes()
		}
		c, err := t.create(dpool, newVolumeXML(name, format, capacity, nil), nil)
		if err != nil {
			return err
		}
		if err := stream(s, from, t, c, size, progress); err != nil {
			_ = t.deleteVol(c)
			return err
		}
		out, err = t.volume(c)
		if err == nil && out.SizeBytes < fx.Capacity.bytes() {
			out.SizeBytes = fx.Capacity.bytes()
		}
		return err
	})
	return result(&out, err)
}

// stream pipes one host's volume into another's.
func stream(s *session, from libvirt.StorageVol, t *session, to libvirt.StorageVol, size int64, progress storage.ProgressFunc) error {
	pr, pw := io.Pipe()
	dl := make(chan error, 1)
	go func() {
		err := s.l.StorageVolDownload(from, pw, 0, 0, 0)
		pw.CloseWithError(err)
		dl <- err
	}()
	r := &progressIO{ctx: s.ctx, r: pr, total: size, report: progress, every: s.d.o.ProgressEvery}
	r.start()
	err := t.l.StorageVolUpload(to, r, 0, uint64(size), 0)
	pr.CloseWithError(io.ErrClosedPipe)
	if derr := <-dl; derr != nil && err == nil {
		err = derr
	}
	if err != nil {
		return fmt.Errorf("stream %s to %s after %d of %d bytes: %w", from.Name, to.Name, r.done, size, err)
	}
	r.finish()
	return nil
}
