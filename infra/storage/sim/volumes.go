package sim

import (
	"context"
	"sort"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// mutate runs fn with the pool locked after the fault switches, then
// commits what fn journaled.
func (d *Driver) mutate(ctx context.Context, op string, p storage.Pool, target string, fn func(cur *pool, log func(r *record, important bool) error) error) error {
	if err := d.begin(ctx, op, p, target, nil); err != nil {
		return err
	}
	return d.mutateChecked(op, p, fn)
}

// mutateChecked is mutate for a call whose fault switches were applied.
func (d *Driver) mutateChecked(op string, p storage.Pool, fn func(cur *pool, log func(r *record, important bool) error) error) error {
	var commits []func() error
	err := d.withPool(op, p.ID, func(cur *pool) error {
		return fn(cur, func(r *record, important bool) error {
			r.ID = p.ID
			c, err := d.logApply(cur, r, important)
			if err == nil {
				commits = append(commits, c)
			}
			return err
		})
	})
	if err != nil {
		return err
	}
	for _, c := range commits {
		if err := c(); err != nil {
			return err
		}
	}
	return nil
}

func volPath(v storage.VolumeSpec) string {
	if v.Path != "" {
		return v.Path
	}
	return v.ID
}

func invalid(op, target, format string, args ...any) error {
	return hypervisor.Errorf(driverName, op, target, storage.ErrInvalid, format, args...)
}

func notFound(op, target, format string, args ...any) error {
	return hypervisor.Errorf(driverName, op, target, storage.ErrNotFound, format, args...)
}

// create adds a volume, or returns the one with the same path when it has
// the same size (a retry). checked says the call's fault switches were
// applied already.
func (d *Driver) create(ctx context.Context, op string, p storage.Pool, nv vol, checked bool) (storage.Volume, error) {
	if nv.Path == "" {
		return storage.Volume{}, invalid(op, "", "volume has no id or path")
	}
	if nv.Size <= 0 {
		return storage.Volume{}, invalid(op, nv.Path, "size %d", nv.Size)
	}
	if !checked {
		if err := d.begin(ctx, op, p, nv.Path, nil); err != nil {
			return storage.Volume{}, err
		}
	}
	var out storage.Volume
	err := d.mutateChecked(op, p, func(cur *pool, log func(*record, bool) error) error {
		if old := cur.vols[nv.Path]; old != nil {
			if old.Size != nv.Size || old.Template != nv.Template {
				return invalid(op, nv.Path, "exists with %d bytes", old.Size)
			}
			out = cur.volume(old)
			return nil
		}
		if err := cur.room(op, nv.Path, nv.Size); err != nil {
			return err
		}
		if err := log(&record{T: "vol", Vol: &nv}, true); err != nil {
			return err
		}
		out = cur.volume(cur.vols[nv.Path])
		return nil
	})
	return out, err
}

// CreateVolume creates a blank volume (qcow2 unless said otherwise).
func (d *Driver) CreateVolume(ctx context.Context, p storage.Pool, v storage.VolumeSpec) (storage.Volume, error) {
	format := v.Format
	if format == "" {
		format = "qcow2"
	}
	return d.create(ctx, "CreateVolume", p, vol{Path: volPath(v), Format: format, Size: v.SizeBytes}, false)
}

// CreateVolumeFromTemplate makes an overlay of a template copy in the pool,
// at least as big as the template.
func (d *Driver) CreateVolumeFromTemplate(ctx context.Context, p storage.Pool, templatePath string, v storage.VolumeSpec) (storage.Volume, error) {
	const op = "CreateVolumeFromTemplate"
	var tpl vol
	err := d.withPool(op, p.ID, func(cur *pool) error {
		t := cur.vols[templatePath]
		if t == nil || !t.Template {
			return notFound(op, templatePath, "no template copy in pool %s (CopyTemplateToPool first)", p.ID)
		}
		tpl = *t
		return nil
	})
	if err != nil {
		return storage.Volume{}, err
	}
	size := v.SizeBytes
	if size == 0 {
		size = tpl.Size
	}
	if size < tpl.Size {
		return storage.Volume{}, invalid(op, volPath(v), "%d bytes is smaller than the template's %d", size, tpl.Size)
	}
	format := v.Format
	if format == "" {
		format = "qcow2"
	}
	return d.create(ctx, op, p, vol{Path: volPath(v), Format: format, Size: size, Backing: templatePath}, false)
}

// ResizeVolume grows a volume; shrinking is refused.
func (d *Driver) ResizeVolume(ctx context.Context, p storage.Pool, path string, size int64) (storage.Volume, error) {
	const op = "ResizeVolume"
	var out storage.Volume
	err := d.mutate(ctx, op, p, path, func(cur *pool, log func(*record, bool) error) error {
		v := cur.vols[path]
		if v == nil || v.Template {
			return notFound(op, path, "no such volume in pool %s", p.ID)
		}
		switch {
		case size == v.Size:
			out = cur.volume(v)
			return nil
		case size < v.Size:
			return invalid(op, path, "shrinking %d bytes to %d is not allowed", v.Size, size)
		}
		if err := cur.room(op, path, size-v.Size); err != nil {
			return err
		}
		nv := *v
		nv.Size = size
		if err := log(&record{T: "vol", Vol: &nv}, false); err != nil {
			return err
		}
		out = cur.volume(cur.vols[path])
		return nil
	})
	return out, err
}

// DeleteVolume deletes a volume or template copy with its snapshots; a
// template that volumes still depend on stays. A missing one is success.
func (d *Driver) DeleteVolume(ctx context.Context, p storage.Pool, path string) error {
	const op = "DeleteVolume"
	err := d.mutate(ctx, op, p, path, func(cur *pool, log func(*record, bool) error) error {
		v := cur.vols[path]
		if v == nil {
			return nil
		}
		if v.Template {
			n := 0
			for _, o := range cur.vols {
				if o.Backing == path {
					n++
				}
			}
			if n > 0 {
				return invalid(op, path, "template copy in use by %d volumes", n)
			}
		}
		return log(&record{T: "vol-", Path: path}, true)
	})
	if isNotFound(err) && d.poolGone(p.ID) {
		return nil // the pool is gone, and the volume with it
	}
	return err
}

func (d *Driver) poolGone(id string) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.pools[id] == nil
}

// VolumeInfo reports a volume.
func (d *Driver) VolumeInfo(ctx context.Context, p storage.Pool, path string) (storage.Volume, error) {
	const op = "VolumeInfo"
	if err := d.begin(ctx, op, p, path, nil); err != nil {
		return storage.Volume{}, err
	}
	var out storage.Volume
	err := d.withPool(op, p.ID, func(cur *pool) error {
		v := cur.vols[path]
		if v == nil {
			return notFound(op, path, "no such volume in pool %s", p.ID)
		}
		out = cur.volume(v)
		return nil
	})
	return out, err
}

// ListVolumes reports every volume and template copy, sorted by path.
func (d *Driver) ListVolumes(ctx context.Context, p storage.Pool) ([]storage.Volume, error) {
	const op = "ListVolumes"
	if err := d.begin(ctx, op, p, p.ID, nil); err != nil {
		return nil, err
	}
	var out []storage.Volume
	err := d.withPool(op, p.ID, func(cur *pool) error {
		out = make([]storage.Volume, 0, len(cur.vols))
		for _, v := range cur.vols {
			out = append(out, cur.volume(v))
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, err
}

// CopyVolume copies a volume to another pool as a full (unbacked) copy.
func (d *Driver) CopyVolume(ctx context.Context, src storage.Pool, path string, dst storage.Pool, v storage.VolumeSpec, pf storage.ProgressFunc) (storage.Volume, error) {
	return d.copyVolume(ctx, "CopyVolume", src, path, dst, v, nil, pf)
}

// copyVolume creates a copy of a disk on dst; h scopes the fault switches
// to a host too.
func (d *Driver) copyVolume(ctx context.Context, op string, src storage.Pool, path string, dst storage.Pool, v storage.VolumeSpec, h *hypervisor.Host, pf storage.ProgressFunc) (storage.Volume, error) {
	if err := d.begin(ctx, op, src, path, h); err != nil {
		return storage.Volume{}, err
	}
	var from vol
	err := d.withPool(op, src.ID, func(cur *pool) error {
		sv := cur.vols[path]
		if sv == nil || sv.Template {
			return notFound(op, path, "no such volume in pool %s", src.ID)
		}
		from = *sv
		return nil
	})
	if err != nil {
		return storage.Volume{}, err
	}
	progress(pf, from.Size)
	to := volPath(v)
	if to == "" {
		to = path
	}
	return d.create(ctx, op, dst, vol{Path: to, Format: from.Format, Size: from.Size}, false)
}

// MigrateVolumeLive copies a running VM's disk to another pool as
// CopyVolume does; its fault switches are scoped by the VM's host too
// (the simulator's VMs do not read their disks, so the switch of the VM to
// the copy has nothing more to do).
func (d *Driver) MigrateVolumeLive(ctx context.Context, src storage.Pool, path string, dst storage.Pool, v storage.VolumeSpec, h hypervisor.Host, vm hypervisor.VMRef, pf storage.ProgressFunc) (storage.Volume, error) {
	if vm.Name == "" && vm.UUID == "" {
		return storage.Volume{}, invalid("MigrateVolumeLive", path, "no virtual machine named")
	}
	return d.copyVolume(ctx, "MigrateVolumeLive", src, path, dst, v, &h, pf)
}

// CopyTemplateToPool copies a template into the pool once, named by the
// template's ID. From a file:// or mounted NFS store it must be there (its
// size is read from the file); from other stores t.SizeBytes is trusted.
func (d *Driver) CopyTemplateToPool(ctx context.Context, t storage.Template, p storage.Pool, pf storage.ProgressFunc) (storage.Volume, error) {
	const op = "CopyTemplateToPool"
	if t.ID == "" {
		return storage.Volume{}, invalid(op, t.Source.Path, "template has no id")
	}
	if err := d.begin(ctx, op, p, t.ID, nil); err != nil {
		return storage.Volume{}, err
	}
	var have *storage.Volume
	d.withPool(op, p.ID, func(cur *pool) error {
		if v := cur.vols[t.ID]; v != nil && v.Template {
			out := cur.volume(v)
			have = &out
		}
		return nil
	})
	if have != nil {
		pf.Report(have.SizeBytes, have.SizeBytes)
		return *have, nil
	}
	size, known, err := d.statStore(op, t.Source)
	if err != nil {
		return storage.Volume{}, err
	}
	size = max(size, t.SizeBytes)
	if !known && size <= 0 {
		return storage.Volume{}, invalid(op, t.ID, "template size unknown")
	}
	progress(pf, size)
	format := t.Format
	if format == "" {
		format = "qcow2"
	}
	return d.create(ctx, op, p, vol{Path: t.ID, Format: format, Size: size, Template: true}, true)
}

// SnapshotVolume records a snapshot of a volume; the same ID again is
// success.
func (d *Driver) SnapshotVolume(ctx context.Context, p storage.Pool, path string, s storage.SnapshotSpec) (storage.Snapshot, error) {
	const op = "SnapshotVolume"
	if s.ID == "" {
		return storage.Snapshot{}, invalid(op, path, "snapshot has no id")
	}
	var out storage.Snapshot
	err := d.mutate(ctx, op, p, path, func(cur *pool, log func(*record, bool) error) error {
		v := cur.vols[path]
		if v == nil || v.Template {
			return notFound(op, path, "no such volume in pool %s", p.ID)
		}
		sn, ok := v.Snaps[s.ID]
		if !ok {
			if err := cur.room(op, path, v.Size); err != nil {
				return err
			}
			sn = snap{ID: s.ID, Size: v.Size, VolSize: v.Size, Created: time.Now().UTC()}
			if err := log(&record{T: "snap", Path: path, Snap: &sn}, true); err != nil {
				return err
			}
		}
		out = storage.Snapshot{ID: sn.ID, VolumePath: path, Path: path + "@" + sn.ID, SizeBytes: sn.Size, Created: sn.Created}
		return nil
	})
	return out, err
}

func (d *Driver) snapshot(op string, p storage.Pool, path, id string) (snap, error) {
	var out snap
	err := d.withPool(op, p.ID, func(cur *pool) error {
		v := cur.vols[path]
		if v == nil {
			return notFound(op, path, "no such volume in pool %s", p.ID)
		}
		s, ok := v.Snaps[id]
		if !ok {
			return notFound(op, path+"@"+id, "no such snapshot")
		}
		out = s
		return nil
	})
	return out, err
}

// BackupSnapshot writes the snapshot to secondary storage (a sparse file
// of its size).
func (d *Driver) BackupSnapshot(ctx context.Context, p storage.Pool, path, id string, dst storage.Location, pf storage.ProgressFunc) (storage.Image, error) {
	const op = "BackupSnapshot"
	if err := d.begin(ctx, op, p, path+"@"+id, nil); err != nil {
		return storage.Image{}, err
	}
	s, err := d.snapshot(op, p, path, id)
	if err != nil {
		return storage.Image{}, err
	}
	progress(pf, s.Size)
	return d.writeStub(op, dst, s.Size)
}

// RevertSnapshot puts the volume back to the snapshot's size.
func (d *Driver) RevertSnapshot(ctx context.Context, p storage.Pool, path, id string) error {
	const op = "RevertSnapshot"
	return d.mutate(ctx, op, p, path+"@"+id, func(cur *pool, log func(*record, bool) error) error {
		v := cur.vols[path]
		if v == nil {
			return notFound(op, path, "no such volume in pool %s", p.ID)
		}
		s, ok := v.Snaps[id]
		if !ok {
			return notFound(op, path+"@"+id, "no such snapshot")
		}
		if v.Size == s.VolSize {
			return nil
		}
		nv := *v
		nv.Size = s.VolSize
		return log(&record{T: "vol", Vol: &nv}, false)
	})
}

// DeleteSnapshot deletes a snapshot on the pool; a missing one is success.
func (d *Driver) DeleteSnapshot(ctx context.Context, p storage.Pool, path, id string) error {
	const op = "DeleteSnapshot"
	return d.mutate(ctx, op, p, path+"@"+id, func(cur *pool, log func(*record, bool) error) error {
		v := cur.vols[path]
		if v == nil {
			return nil
		}
		if _, ok := v.Snaps[id]; !ok {
			return nil
		}
		return log(&record{T: "snap-", Path: path, Snap: &snap{ID: id}}, true)
	})
}

// CreateVolumeFromImage creates a volume from an image on secondary
// storage (a snapshot backup), at least as big as the image.
func (d *Driver) CreateVolumeFromImage(ctx context.Context, src storage.Location, p storage.Pool, v storage.VolumeSpec, pf storage.ProgressFunc) (storage.Volume, error) {
	const op = "CreateVolumeFromImage"
	if err := d.begin(ctx, op, p, volPath(v), nil); err != nil {
		return storage.Volume{}, err
	}
	size, known, err := d.statStore(op, src)
	if err != nil {
		return storage.Volume{}, err
	}
	if !known {
		return storage.Volume{}, hypervisor.Errorf(driverName, op, src.Path, storage.ErrNotSupported, "the simulator reads file:// and mounted NFS stores only")
	}
	progress(pf, size)
	format := v.Format
	if format == "" {
		format = "qcow2"
	}
	return d.create(ctx, op, p, vol{Path: volPath(v), Format: format, Size: max(size, v.SizeBytes)}, true)
}

// ExportVolume writes a volume to secondary storage (a sparse file of its
// size).
func (d *Driver) ExportVolume(ctx context.Context, p storage.Pool, path string, dst storage.Location, pf storage.ProgressFunc) (storage.Image, error) {
	const op = "ExportVolume"
	if err := d.begin(ctx, op, p, path, nil); err != nil {
		return storage.Image{}, err
	}
	var size int64
	err := d.withPool(op, p.ID, func(cur *pool) error {
		v := cur.vols[path]
		if v == nil {
			return notFound(op, path, "no such volume in pool %s", p.ID)
		}
		size = v.Size
		return nil
	})
	if err != nil {
		return storage.Image{}, err
	}
	progress(pf, size)
	return d.writeStub(op, dst, size)
}
