package libvirtpool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/digitalocean/go-libvirt"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// checkName refuses volume names libvirt would read as paths.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return hypervisor.NewError(storage.ErrInvalid, "volume name %q: want a plain name", name)
	}
	return nil
}

func snapName(path, id string) string { return path + snapInfix + id }

// lookupVol finds a volume of the pool; ok is false when there is none.
func (s *session) lookupVol(pool libvirt.StoragePool, name string) (libvirt.StorageVol, bool, error) {
	vol, err := s.l.StorageVolLookupByName(pool, name)
	if notFound(err) {
		return vol, false, nil
	}
	return vol, err == nil, err
}

// mustVol finds a volume or fails with ErrNotFound.
func (s *session) mustVol(pool libvirt.StoragePool, name, what string) (libvirt.StorageVol, error) {
	vol, ok, err := s.lookupVol(pool, name)
	if err == nil && !ok {
		err = s.fail(storage.ErrNotFound, "no %s %s in pool %s", what, name, s.p.ID)
	}
	return vol, err
}

// describe reads a volume's XML.
func (s *session) describe(vol libvirt.StorageVol) (volumeXML, error) {
	var v volumeXML
	x, err := s.l.StorageVolGetXMLDesc(vol, 0)
	if err != nil {
		return v, err
	}
	return v, xml.Unmarshal([]byte(x), &v)
}

// volume reports a volume as the storage layer sees it.
func (s *session) volume(vol libvirt.StorageVol) (storage.Volume, error) {
	v, err := s.describe(vol)
	if err != nil {
		return storage.Volume{}, err
	}
	out := storage.Volume{Path: vol.Name, Pool: s.p.ID, Format: formatRaw, SizeBytes: v.Capacity.bytes(),
		Template: strings.HasPrefix(vol.Name, templatePrefix)}
	if v.Allocation != nil {
		out.AllocatedBytes = v.Allocation.bytes()
	}
	if v.Target.Format != nil && v.Target.Format.Type != "" {
		out.Format = v.Target.Format.Type
	}
	if v.BackingStore != nil && v.BackingStore.Path != "" {
		out.BackingPath = s.nameOfPath(v.BackingStore.Path)
	}
	return out, nil
}

// nameOfPath turns a file path in the pool back into the volume name.
func (s *session) nameOfPath(path string) string {
	if t := s.def.Pool.Target; t != nil && s.def.fileBased() && filepath.Dir(path) == filepath.Clean(t.Path) {
		return filepath.Base(path)
	}
	if vol, err := s.l.StorageVolLookupByPath(path); err == nil {
		return vol.Name
	}
	return path
}

// physical is the bytes a volume's file or image holds (what a download
// yields and an upload wrote).
func (s *session) physical(vol libvirt.StorageVol) (int64, error) {
	_, _, phys, err := s.l.StorageVolGetInfoFlags(vol, uint32(libvirt.StorageVolGetPhysical))
	return int64(phys), err
}

// defaultFormat is qcow2 on file pools, raw elsewhere.
func (s *session) defaultFormat(want string) string {
	if !s.def.fileBased() {
		return formatRaw
	}
	switch strings.ToLower(want) {
	case formatRaw:
		return formatRaw
	}
	return formatQCOW2
}

// create creates a volume from XML; one there already with the name is
// returned instead.
func (s *session) create(pool libvirt.StoragePool, v volumeXML, from *libvirt.StorageVol) (libvirt.StorageVol, error) {
	x, err := render(v)
	if err != nil {
		return libvirt.StorageVol{}, err
	}
	var vol libvirt.StorageVol
	if from != nil {
		vol, err = s.l.StorageVolCreateXMLFrom(pool, x, *from, 0)
	} else {
		vol, err = s.l.StorageVolCreateXML(pool, x, 0)
	}
	if err != nil {
		if v2, ok, _ := s.lookupVol(pool, v.Name); ok {
			return v2, nil
		}
		if isCode(err, libvirt.ErrStorageVolExist) {
			return vol, err
		}
		if strings.Contains(err.Error(), "No space left") || strings.Contains(err.Error(), "Not enough space") {
			return vol, hypervisor.NewError(storage.ErrCapacity, "%v", err)
		}
		return vol, err
	}
	return vol, nil
}

// CreateVolume creates a blank volume: qcow2 on file pools unless raw is
// asked for, raw elsewhere. iSCSI LUNs cannot be created through libvirt.
func (d *Driver) CreateVolume(ctx context.Context, p storage.Pool, v storage.VolumeSpec) (storage.Volume, error) {
	name := cmp(v.Path, v.ID)
	var out storage.Volume
	err := d.do(ctx, "CreateVolume", p, nil, name, func(s *session) error {
		if err := checkName(name); err != nil {
			return err
		}
		if s.def.Kind() == kindISCSI {
			return s.fail(storage.ErrNotSupported, "an iSCSI pool's volumes are its LUNs, made on the target")
		}
		pool, err := s.pool()
		if err != nil {
			return err
		}
		if vol, ok, err := s.lookupVol(pool, name); err != nil || ok {
			if ok {
				out, err = s.volume(vol)
			}
			return err
		}
		if v.SizeBytes <= 0 {
			return s.fail(storage.ErrInvalid, "volume %s: size %d", name, v.SizeBytes)
		}
		vol, err := s.create(pool, newVolumeXML(name, s.defaultFormat(v.Format), v.SizeBytes, nil), nil)
		if err != nil {
			return err
		}
		out, err = s.volume(vol)
		return err
	})
	return result(&out, err)
}

// CreateVolumeFromTemplate makes a volume from a template copy in the pool:
// a qcow2 overlay with the copy as <backingStore> on file pools, a full
// copy elsewhere and for containers (libvirt's LXC driver mounts a raw
// image with a loop device; a qcow2 one would need the nbd module, which
// hosts often lack). Its size is the larger of the template's and the asked.
func (d *Driver) CreateVolumeFromTemplate(ctx context.Context, p storage.Pool, templatePath string, v storage.VolumeSpec) (storage.Volume, error) {
	name := cmp(v.Path, v.ID)
	var out storage.Volume
	err := d.do(ctx, "CreateVolumeFromTemplate", p, nil, name, func(s *session) error {
		if err := checkName(name); err != nil {
			return err
		}
		pool, err := s.pool()
		if err != nil {
			return err
		}
		if vol, ok, err := s.lookupVol(pool, name); err != nil || ok {
			if ok {
				out, err = s.volume(vol)
			}
			return err
		}
		tvol, err := s.mustVol(pool, templatePath, "template copy (CopyTemplateToPool first)")
		if err != nil {
			return err
		}
		tx, err := s.describe(tvol)
		if err != nil {
			return err
		}
		size := max(tx.Capacity.bytes(), v.SizeBytes)
		var vol libvirt.StorageVol
		if s.def.fileBased() && d.typ != hypervisor.TypeLXC {
			tpath, err := s.l.StorageVolGetPath(tvol)
			if err != nil {
				return err
			}
			tfmt := formatRaw
			if tx.Target.Format != nil && tx.Target.Format.Type != "" {
				tfmt = tx.Target.Format.Type
			}
			vol, err = s.create(pool, newVolumeXML(name, formatQCOW2, size, &backingXML{Path: tpath, Format: &typeAttr{Type: tfmt}}), nil)
			if err != nil {
				return err
			}
		} else {
			if vol, err = s.create(pool, newVolumeXML(name, formatRaw, tx.Capacity.bytes(), nil), &tvol); err != nil {
				return err
			}
			if size > tx.Capacity.bytes() {
				if err := s.l.StorageVolResize(vol, uint64(size), 0); err != nil {
					return err
				}
			}
		}
		out, err = s.volume(vol)
		return err
	})
	return result(&out, err)
}

// ResizeVolume changes a volume's virtual size: through the domain
// (virDomainBlockResize) while a running domain on the host uses it, since
// QEMU holds the image then, else on the pool. Shrinking is passed on;
// the API has asked the user to confirm it.
func (d *Driver) ResizeVolume(ctx context.Context, p storage.Pool, path string, sizeBytes int64) (storage.Volume, error) {
	var out storage.Volume
	err := d.do(ctx, "ResizeVolume", p, nil, path, func(s *session) error {
		if sizeBytes <= 0 {
			return s.fail(storage.ErrInvalid, "size %d", sizeBytes)
		}
		pool, err := s.pool()
		if err != nil {
			return err
		}
		vol, err := s.mustVol(pool, path, "volume")
		if err != nil {
			return err
		}
		cur, err := s.volume(vol)
		if err != nil {
			return err
		}
		if cur.SizeBytes != sizeBytes {
			dom, dev, running, err := s.domainUsing(vol)
			switch {
			case err != nil:
				return err
			case running && sizeBytes < cur.SizeBytes:
				return s.fail(storage.ErrInvalid, "volume %s is in use by running VM %s: it grows live but shrinks only while stopped", path, dom.Name)
			case running:
				if err := s.l.DomainBlockResize(dom, dev, uint64(sizeBytes), libvirt.DomainBlockResizeBytes); err != nil {
					return fmt.Errorf("live resize through VM %s: %w", dom.Name, err)
				}
				_ = s.refresh(pool, false)
			default:
				var flags libvirt.StorageVolResizeFlags
				if sizeBytes < cur.SizeBytes {
					flags = libvirt.StorageVolResizeShrink
				}
				if err := s.l.StorageVolResize(vol, uint64(sizeBytes), flags); err != nil {
					return err
				}
			}
		}
		out, err = s.volume(vol)
		return err
	})
	return result(&out, err)
}

// DeleteVolume deletes a volume (or template copy) with its snapshots and
// scratch copies; a missing one is success.
func (d *Driver) DeleteVolume(ctx context.Context, p storage.Pool, path string) error {
	return d.do(ctx, "DeleteVolume", p, nil, path, func(s *session) error {
		if err := checkName(path); err != nil {
			return err
		}
		pool, err := s.pool()
		if err != nil {
			return err
		}
		vols, _, err := s.l.StoragePoolListAllVolumes(pool, 1, 0)
		if err != nil {
			return err
		}
		for _, v := range vols {
			if v.Name == path || strings.HasPrefix(v.Name, path+snapInfix) || strings.HasPrefix(v.Name, path+tmpInfix) {
				if err := s.deleteVol(v); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func (s *session) deleteVol(v libvirt.StorageVol) error {
	if err := s.l.StorageVolDelete(v, 0); err != nil && !notFound(err) {
		return fmt.Errorf("delete %s: %w", v.Name, err)
	}
	return nil
}

// VolumeInfo reports one volume.
func (d *Driver) VolumeInfo(ctx context.Context, p storage.Pool, path string) (storage.Volume, error) {
	var out storage.Volume
	err := d.do(ctx, "VolumeInfo", p, nil, path, func(s *session) error {
		pool, err := s.pool()
		if err != nil {
			return err
		}
		vol, err := s.mustVol(pool, path, "volume")
		if err != nil {
			return err
		}
		out, err = s.volume(vol)
		return err
	})
	return result(&out, err)
}

// ListVolumes reports the pool's volumes and template copies (snapshots
// and scratch copies are not volumes).
func (d *Driver) ListVolumes(ctx context.Context, p storage.Pool) ([]storage.Volume, error) {
	var out []storage.Volume
	err := d.do(ctx, "ListVolumes", p, nil, "", func(s *session) error {
		pool, err := s.pool()
		if err != nil {
			return err
		}
		_ = s.refresh(pool, false)
		vols, _, err := s.l.StoragePoolListAllVolumes(pool, 1, 0)
		if err != nil {
			return err
		}
		for _, v := range vols {
			if strings.Contains(v.Name, snapInfix) || strings.Contains(v.Name, tmpInfix) {
				continue
			}
			info, err := s.volume(v)
			if notFound(err) {
				continue // deleted meanwhile
			}
			if err != nil {
				return err
			}
			out = append(out, info)
		}
		return nil
	})
	return result(&out, err)
}

// ---- templates and images ----

// localPath resolves a place on secondary storage to a file the worker
// reads or writes.
func (d *Driver) localPath(loc storage.Location) (string, error) {
	dir, mounted, err := storage.LocalDir(loc.Store.URL, d.o.MountRoot)
	if err != nil {
		return "", err
	}
	if mounted {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return "", hypervisor.NewError(storage.ErrUnreachable, "image store %s is not mounted at %s", loc.Store.URL, dir)
		}
	}
	clean := filepath.Clean(loc.Path)
	if loc.Path == "" || filepath.IsAbs(loc.Path) || clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", hypervisor.NewError(storage.ErrInvalid, "image path %q: want a relative path inside the store", loc.Path)
	}
	return filepath.Join(dir, clean), nil
}

// openImage opens an image on secondary storage and inspects it.
func (d *Driver) openImage(loc storage.Location, format string) (*os.File, imageInfo, error) {
	path, err := d.localPath(loc)
	if err != nil {
		return nil, imageInfo{}, err
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, imageInfo{}, hypervisor.NewError(storage.ErrNotFound, "%s is not on image store %s", loc.Path, loc.Store.URL)
	}
	if err != nil {
		return nil, imageInfo{}, err
	}
	info, err := inspectImage(f, format)
	if err != nil {
		f.Close()
		return nil, info, fmt.Errorf("%s: %w", loc.Path, err)
	}
	return f, info, nil
}

// CopyTemplateToPool copies a template (or ISO, as raw) from secondary
// storage into the pool as tmpl-<template uuid>, streaming it through
// libvirt; a complete copy there already is returned without copying.
func (d *Driver) CopyTemplateToPool(ctx context.Context, t storage.Template, p storage.Pool, progress storage.ProgressFunc) (storage.Volume, error) {
	name := templatePrefix + t.ID
	var out storage.Volume
	err := d.do(ctx, "CopyTemplateToPool", p, nil, name, func(s *session) error {
		if t.ID == "" {
			return s.fail(storage.ErrInvalid, "template has no id")
		}
		f, info, err := d.openImage(t.Source, t.Format)
		if err != nil {
			return err
		}
		defer f.Close()
		out, err = s.uploadOnce(name, f, info, progress)
		return err
	})
	return result(&out, err)
}

// CreateVolumeFromImage creates a volume from an image on secondary
// storage (a snapshot backup, an uploaded volume), as large as the image
// or the asked size.
func (d *Driver) CreateVolumeFromImage(ctx context.Context, src storage.Location, p storage.Pool, v storage.VolumeSpec, progress storage.ProgressFunc) (storage.Volume, error) {
	name := cmp(v.Path, v.ID)
	var out storage.Volume
	err := d.do(ctx, "CreateVolumeFromImage", p, nil, name, func(s *session) error {
		if err := checkName(name); err != nil {
			return err
		}
		f, info, err := d.openImage(src, "")
		if err != nil {
			return err
		}
		defer f.Close()
		vol, err := s.uploadOnce(name, f, info, progress)
		if err != nil {
			return err
		}
		if v.SizeBytes > vol.SizeBytes {
			pool, err := s.pool()
			if err != nil {
				return err
			}
			lv, err := s.mustVol(pool, name, "volume")
			if err != nil {
				return err
			}
			if err := s.l.StorageVolResize(lv, uint64(v.SizeBytes), 0); err != nil {
				return err
			}
			vol, err = s.volume(lv)
			if err != nil {
				return err
			}
		}
		out = vol
		return nil
	})
	return result(&out, err)
}

// uploadOnce makes name a copy of the image file. A volume there already
// whose bytes are as many as the file's is the complete copy (an upload
// writes in order, so a partial one is shorter). A shorter one is either
// another worker's upload running (libvirt then refuses to delete it: wait
// for it) or one that died (deleted and copied again).
func (s *session) uploadOnce(name string, f *os.File, info imageInfo, progress storage.ProgressFunc) (storage.Volume, error) {
	if !s.def.fileBased() && info.Format == formatQCOW2 {
		return storage.Volume{}, s.fail(storage.ErrNotSupported, "a %s pool takes RAW images only; this one is qcow2", s.def.Kind())
	}
	unlock, err := s.d.locks.lock(s.ctx, s.h.URL+"|"+s.p.ID+"|"+name)
	if err != nil {
		return storage.Volume{}, err
	}
	defer unlock()
	pool, err := s.pool()
	if err != nil {
		return storage.Volume{}, err
	}
	deadline := time.Now().Add(s.d.o.BusyWait)
	for {
		vol, ok, err := s.lookupVol(pool, name)
		if err != nil {
			return storage.Volume{}, err
		}
		if ok {
			phys, err := s.physical(vol)
			if err != nil {
				return storage.Volume{}, err
			}
			if phys == info.FileBytes {
				progress.Report(info.FileBytes, info.FileBytes)
				return s.volume(vol)
			}
			err = s.l.StorageVolDelete(vol, 0)
			if err != nil && !notFound(err) {
				if !strings.Contains(err.Error(), "in use") || time.Now().After(deadline) {
					return storage.Volume{}, fmt.Errorf("volume %s is partial (%d of %d bytes) and cannot be replaced: %w", name, phys, info.FileBytes, err)
				}
				progress.Report(phys, info.FileBytes)
				if err := sleep(s.ctx, 2*time.Second); err != nil {
					return storage.Volume{}, err
				}
				continue
			}
		}
		// qcow2 starts as a small empty image the upload overwrites, so
		// libvirt knows its format from the start; raw starts empty.
		capacity := int64(0)
		if info.Format == formatQCOW2 {
			capacity = info.VirtualSize
		}
		vol, err = s.create(pool, newVolumeXML(name, info.Format, capacity, nil), nil)
		if isCode(err, libvirt.ErrStorageVolExist) {
			continue // another worker's, just made
		}
		if err != nil {
			return storage.Volume{}, err
		}
		if err := s.upload(vol, f, info.FileBytes, progress); err != nil {
			_ = s.l.StorageVolDelete(vol, 0) // nothing half-copied stays
			return storage.Volume{}, err
		}
		out, err := s.volume(vol)
		if err != nil {
			return out, err
		}
		if info.Format == formatQCOW2 && out.SizeBytes < info.VirtualSize {
			out.SizeBytes = info.VirtualSize // libvirt's own probe may lag the upload
		}
		return out, nil
	}
}

// upload streams a file into a volume.
func (s *session) upload(vol libvirt.StorageVol, f *os.File, size int64, progress storage.ProgressFunc) error {
	r := &progressIO{ctx: s.ctx, r: io.NewSectionReader(f, 0, size), total: size, report: progress, every: s.d.o.ProgressEvery}
	r.start()
	if err := s.l.StorageVolUpload(vol, r, 0, uint64(size), 0); err != nil {
		if e := s.ctx.Err(); e != nil {
			return e
		}
		return fmt.Errorf("upload to %s after %d of %d bytes: %w", vol.Name, r.done, size, err)
	}
	r.finish()
	return nil
}

// downloadTo writes a volume's bytes to a file of secondary storage
// (through a .part file renamed when complete), with its SHA-256. A file
// there already with the volume's size is the earlier, finished copy.
func (s *session) downloadTo(vol libvirt.StorageVol, dest string, progress storage.ProgressFunc) (size int64, sum string, err error) {
	total, err := s.physical(vol)
	if err != nil {
		return 0, "", err
	}
	if fi, err := os.Stat(dest); err == nil && fi.Mode().IsRegular() && fi.Size() == total {
		progress.Report(total, total)
		return total, "", nil
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return 0, "", err
	}
	part := dest + ".part"
	f, err := os.Create(part)
	if err != nil {
		return 0, "", err
	}
	defer func() {
		f.Close()
		if err != nil {
			os.Remove(part)
		}
	}()
	h := sha256.New()
	w := &progressIO{ctx: s.ctx, w: io.MultiWriter(f, h), total: total, report: progress, every: s.d.o.ProgressEvery}
	w.start()
	if err := s.l.StorageVolDownload(vol, w, 0, 0, 0); err != nil {
		if e := s.ctx.Err(); e != nil {
			return 0, "", e
		}
		return 0, "", fmt.Errorf("download of %s after %d bytes: %w", vol.Name, w.done, err)
	}
	if err := f.Sync(); err != nil {
		return 0, "", err
	}
	if err := f.Close(); err != nil {
		return 0, "", err
	}
	if err := os.Rename(part, dest); err != nil {
		return 0, "", err
	}
	w.finish()
	return w.done, "{SHA-256}" + hex.EncodeToString(h.Sum(nil)), nil
}

// progressIO counts bytes through a stream, reports progress at most every
// so often, and ends the stream when the context ends.
type progressIO struct {
	ctx         context.Context
	r           io.Reader
	w           io.Writer
	done, total int64
	report      storage.ProgressFunc
	every       time.Duration
	last        time.Time
}

func (p *progressIO) start() {
	p.last = time.Now()
	p.report.Report(0, p.total)
}

func (p *progressIO) tick(n int) {
	p.done += int64(n)
	if time.Since(p.last) >= p.every {
		p.report.Report(p.done, p.total)
		p.last = time.Now()
	}
}

func (p *progressIO) finish() { p.report.Report(p.done, max(p.done, p.total)) }

func (p *progressIO) Read(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := p.r.Read(b)
	p.tick(n)
	return n, err
}

func (p *progressIO) Write(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := p.w.Write(b)
	p.tick(n)
	return n, err
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
