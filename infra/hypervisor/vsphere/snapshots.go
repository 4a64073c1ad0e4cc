package vsphere

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vmdk"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// Volume snapshots on a datastore, the way CloudStack takes them on
// VMware: a snapshot is a full copy of the volume's disk in
// nimbus/snapshots/<volume>/<snapshot id>.vmdk on the volume's datastore.
// A disk a VM uses is first frozen by a VM snapshot without memory (its
// writes then go to a delta disk), copied (CopyVirtualDisk_Task), and the
// VM snapshot removed again, which merges the delta back; a detached disk
// is copied as it is. Backups to secondary storage are a tar of the copy's
// descriptor and extents, downloaded through vCenter's datastore access.

// snapshotFolder is where snapshot copies live, under VolumeFolder (out of
// ListVolumes' way, which searches VolumeFolder alone).
const snapshotFolder = "snapshots"

// vmSnapshotPrefix names the short-lived VM snapshot a volume snapshot
// takes of the VM using the volume.
const vmSnapshotPrefix = "nimbus-volsnap-"

// snapDir is the folder of a volume's snapshot copies.
func (t *dsTarget) snapDir(file string) string {
	var dp object.DatastorePath
	dp.FromString(file)
	base := strings.TrimSuffix(path.Base(dp.Path), ".vmdk")
	return (&object.DatastorePath{Datastore: t.dsName, Path: path.Join(VolumeFolder, snapshotFolder, base)}).String()
}

// snapPath is the copy of one snapshot of a volume.
func (t *dsTarget) snapPath(file, id string) string {
	return t.snapDir(file) + "/" + id + ".vmdk"
}

// mkdir makes a datastore folder and its parents; one there is success.
func (t *dsTarget) mkdir(ctx context.Context, dir string) error {
	dc := t.dc.Reference()
	_, err := methods.MakeDirectory(ctx, t.c.client(), &types.MakeDirectory{This: *t.c.client().ServiceContent.FileManager,
		Name: dir, Datacenter: &dc, CreateParentDirectories: types.NewBool(true)})
	if err != nil && !fault.Is(err, &types.FileAlreadyExists{}) {
		return err
	}
	return nil
}

// diskUse is a VM that has a volume's disk attached.
type diskUse struct {
	vm    types.ManagedObjectReference
	name  string
	key   int32  // the disk's device key
	top   string // the file the VM writes (a delta when it has snapshots)
	snaps *types.VirtualMachineSnapshotInfo
}

// diskUser finds the VM of the datastore that has file attached (as its
// disk or as the base beneath the disk's deltas); nil when none has.
func (t *dsTarget) diskUser(ctx context.Context, file string) (*diskUse, error) {
	pc := property.DefaultCollector(t.c.client())
	var ds mo.Datastore
	if err := pc.RetrieveOne(ctx, t.ds, []string{"vm"}, &ds); err != nil {
		return nil, err
	}
	if len(ds.Vm) == 0 {
		return nil, nil
	}
	var vms []mo.VirtualMachine
	if err := pc.Retrieve(ctx, ds.Vm, []string{"name", "config.template", "config.hardware.device", "snapshot"}, &vms); err != nil {
		return nil, err
	}
	for _, vm := range vms {
		if vm.Config == nil || vm.Config.Template {
			continue
		}
		for _, dev := range object.VirtualDeviceList(vm.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil)) {
			x := dev.(*types.VirtualDisk)
			top := diskFile(x)
			for f := range backingChain(x.Backing) {
				if f == file {
					return &diskUse{vm: vm.Self, name: vm.Name, key: x.Key, top: top, snaps: vm.Snapshot}, nil
				}
			}
		}
	}
	return nil, nil
}

// backingChain yields the files of a disk backing and its parents.
func backingChain(b types.BaseVirtualDeviceBackingInfo) func(func(string) bool) {
	return func(yield func(string) bool) {
		for b != nil {
			fb, ok := b.(types.BaseVirtualDeviceFileBackingInfo)
			if !ok || !yield(fb.GetVirtualDeviceFileBackingInfo().FileName) {
				return
			}
			switch x := b.(type) {
			case *types.VirtualDiskFlatVer2BackingInfo:
				if x.Parent == nil {
					return
				}
				b = x.Parent
			case *types.VirtualDiskSeSparseBackingInfo:
				if x.Parent == nil {
					return
				}
				b = x.Parent
			case *types.VirtualDiskSparseVer2BackingInfo:
				if x.Parent == nil {
					return
				}
				b = x.Parent
			default:
				return
			}
		}
	}
}

// findVMSnapshot finds a VM snapshot by name in a snapshot tree.
func findVMSnapshot(list []types.VirtualMachineSnapshotTree, name string) *types.ManagedObjectReference {
	for i := range list {
		if list[i].Name == name {
			return &list[i].Snapshot
		}
		if r := findVMSnapshot(list[i].ChildSnapshotList, name); r != nil {
			return r
		}
	}
	return nil
}

// SnapshotVolume copies the volume's disk to its snapshot copy, freezing
// it first by a VM snapshot when a VM uses it. The same snapshot again is
// success; a retry reattaches to the copy an earlier attempt started and
// removes the VM snapshot it left.
func (p *Pool) SnapshotVolume(ctx context.Context, pl storage.Pool, file string, spec storage.SnapshotSpec) (storage.Snapshot, error) {
	if spec.ID == "" {
		return storage.Snapshot{}, hypervisor.NewError(hypervisor.ErrInvalid, "snapshot has no id")
	}
	t, err := p.target(ctx, pl)
	if err != nil {
		return storage.Snapshot{}, err
	}
	file = t.path(file)
	snap := t.snapPath(file, spec.ID)
	use, err := t.diskUser(ctx, file)
	if err != nil {
		return storage.Snapshot{}, classify("SnapshotVolume", file, err)
	}
	vmSnapName := vmSnapshotPrefix + spec.ID
	var vmSnap *types.ManagedObjectReference
	if use != nil && use.snaps != nil {
		vmSnap = findVMSnapshot(use.snaps.RootSnapshotList, vmSnapName)
	}
	done := func() (storage.Snapshot, error) {
		if vmSnap != nil {
			if err := t.removeVMSnapshot(ctx, *vmSnap, spec.ID); err != nil {
				return storage.Snapshot{}, classify("SnapshotVolume", use.name, err)
			}
		}
		size, err := t.diskSize(ctx, snap)
		if err != nil {
			return storage.Snapshot{}, err
		}
		return storage.Snapshot{ID: spec.ID, VolumePath: file, Path: snap, SizeBytes: size, Created: time.Now().UTC()}, nil
	}
	// A copy there and no copy task of an earlier attempt to wait on: the
	// snapshot was taken.
	if hypervisor.TasksFrom(ctx).Prior("copy:"+snap) == "" {
		if _, err := t.diskSize(ctx, snap); err == nil {
			return done()
		} else if !errors.Is(err, hypervisor.ErrNotFound) {
			return storage.Snapshot{}, err
		}
	}
	if err := t.mkdir(ctx, t.snapDir(file)); err != nil {
		return storage.Snapshot{}, classify("SnapshotVolume", file, err)
	}
	src := file
	if use != nil {
		// What the VM writes now (its top) is frozen by the VM snapshot and
		// copied whole; its writes go to the new delta meanwhile.
		src = use.top
		if vmSnap == nil {
			key := "vmsnap:" + spec.ID
			info, err := t.c.reattach(ctx, key)
			if err != nil {
				return storage.Snapshot{}, classify("SnapshotVolume", use.name, err)
			}
			if info == nil {
				info, err = t.c.runTask(ctx, key, func(ctx context.Context) (types.ManagedObjectReference, error) {
					res, err := methods.CreateSnapshot_Task(ctx, t.c.client(), &types.CreateSnapshot_Task{This: use.vm, Name: vmSnapName,
						Description: "frozen while Nimbus copies volume " + path.Base(file), Memory: false, Quiesce: false})
					if err != nil {
						return types.ManagedObjectReference{}, err
					}
					return res.Returnval, nil
				})
				if err != nil {
					return storage.Snapshot{}, classify("SnapshotVolume", use.name, err)
				}
			}
			if r, ok := info.Result.(types.ManagedObjectReference); ok {
				vmSnap = &r
			}
		} else if prior := t.snapshotBase(ctx, use); prior != "" {
			// A retry: the VM snapshot an earlier attempt took froze the
			// file beneath the disk's current delta.
			src = prior
		}
	}
	if err := t.copyDisk(ctx, "SnapshotVolume", src, snap); err != nil {
		if vmSnap != nil {
			_ = t.removeVMSnapshot(context.WithoutCancel(ctx), *vmSnap, spec.ID)
		}
		return storage.Snapshot{}, err
	}
	return done()
}

// snapshotBase is the file a VM snapshot froze of the disk a volume is:
// the parent of the disk's delta in the VM's current configuration (""
// when it has none: the simulator makes no deltas).
func (t *dsTarget) snapshotBase(ctx context.Context, use *diskUse) string {
	var vm mo.VirtualMachine
	if err := property.DefaultCollector(t.c.client()).RetrieveOne(ctx, use.vm, []string{"config.hardware.device"}, &vm); err != nil || vm.Config == nil {
		return ""
	}
	if x, ok := object.VirtualDeviceList(vm.Config.Hardware.Device).FindByKey(use.key).(*types.VirtualDisk); ok {
		if b, ok := x.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok && b.Parent != nil {
			return b.Parent.FileName
		}
	}
	return ""
}

// removeVMSnapshot removes the VM snapshot a volume snapshot took (its
// delta merged back into the disk); one gone is success.
func (t *dsTarget) removeVMSnapshot(ctx context.Context, ref types.ManagedObjectReference, id string) error {
	key := "vmsnap-rm:" + id
	if info, err := t.c.reattach(ctx, key); err != nil || info != nil {
		return err
	}
	_, err := t.c.runTask(ctx, key, func(ctx context.Context) (types.ManagedObjectReference, error) {
		res, err := methods.RemoveSnapshot_Task(ctx, t.c.client(), &types.RemoveSnapshot_Task{This: ref, RemoveChildren: false, Consolidate: types.NewBool(true)})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	if fault.Is(err, &types.ManagedObjectNotFound{}) {
		return nil
	}
	return err
}

// BackupSnapshot writes the snapshot's copy to secondary storage as a tar
// of its descriptor and extent files (downloaded through vCenter's
// datastore access), written aside and renamed into place.
func (p *Pool) BackupSnapshot(ctx context.Context, pl storage.Pool, file, snapshotID string, dst storage.Location, pr storage.ProgressFunc) (storage.Image, error) {
	t, err := p.target(ctx, pl)
	if err != nil {
		return storage.Image{}, err
	}
	snap := t.snapPath(t.path(file), snapshotID)
	dest, err := p.localPath(dst)
	if err != nil {
		return storage.Image{}, err
	}
	var dp object.DatastorePath
	dp.FromString(snap)
	vc := t.c.client()
	get := func(name string) (io.ReadCloser, int64, error) {
		u := object.NewDatastoreURL(*vc.URL(), t.dcName, dp.Datastore, path.Join(path.Dir(dp.Path), name))
		rc, n, err := download(ctx, vc, u)
		if err != nil {
			if errors.Is(err, errNoFile) {
				return nil, 0, hypervisor.Errorf(driverName, "BackupSnapshot", snap, hypervisor.ErrNotFound, "no snapshot file %s", name)
			}
			return nil, 0, classify("BackupSnapshot", snap, err)
		}
		return rc, n, nil
	}
	rc, _, err := get(path.Base(dp.Path))
	if err != nil {
		return storage.Image{}, err
	}
	descBytes, err := io.ReadAll(io.LimitReader(rc, 64<<10))
	rc.Close()
	if err != nil {
		return storage.Image{}, classify("BackupSnapshot", snap, err)
	}
	desc, err := vmdk.ParseDescriptor(strings.NewReader(string(descBytes)))
	if err != nil {
		return storage.Image{}, hypervisor.Errorf(driverName, "BackupSnapshot", snap, hypervisor.ErrInvalid, "not a vmdk descriptor: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return storage.Image{}, err
	}
	part := dest + ".part"
	f, err := os.Create(part)
	if err != nil {
		return storage.Image{}, err
	}
	ok := false
	defer func() {
		f.Close()
		if !ok {
			os.Remove(part)
		}
	}()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	tw := tar.NewWriter(cw)
	total := desc.Capacity()
	pr.Report(0, total)
	var sent int64
	for i, ext := range desc.Extent {
		if ext.Info == "" {
			continue
		}
		// A copy's descriptor names its own extent on vCenter; the
		// simulator copies descriptors verbatim, naming the source's, so
		// the copy's standard flat extent is looked for too and the
		// descriptor in the tar names what it holds.
		rc, n, err := get(ext.Info)
		if errors.Is(err, hypervisor.ErrNotFound) {
			flat := strings.TrimSuffix(path.Base(dp.Path), ".vmdk") + "-flat.vmdk"
			if rc, n, err = get(flat); err == nil {
				desc.Extent[i].Info = flat
			}
		}
		if err != nil {
			return storage.Image{}, err
		}
		err = tarFile(tw, rc, n, desc.Extent[i].Info, func(n int64) { pr.Report(sent+n, total) })
		rc.Close()
		if err != nil {
			return storage.Image{}, err
		}
		sent += ext.Size * vmdk.SectorSize
	}
	var db strings.Builder
	if err := desc.Write(&db); err != nil {
		return storage.Image{}, err
	}
	if err := tw.WriteHeader(&tar.Header{Name: path.Base(dp.Path), Mode: 0o644, Size: int64(db.Len()), ModTime: time.Now()}); err != nil {
		return storage.Image{}, err
	}
	if _, err := io.WriteString(tw, db.String()); err != nil {
		return storage.Image{}, err
	}
	if err := tw.Close(); err != nil {
		return storage.Image{}, err
	}
	if err := f.Sync(); err != nil {
		return storage.Image{}, err
	}
	if err := f.Close(); err != nil {
		return storage.Image{}, err
	}
	if err := os.Rename(part, dest); err != nil {
		return storage.Image{}, err
	}
	ok = true
	pr.Report(total, total)
	return storage.Image{Path: dst.Path, SizeBytes: cw.n, Checksum: "{SHA-256}" + hex.EncodeToString(h.Sum(nil)), VirtualSizeBytes: total}, nil
}

// tarFile adds one file to the tar. A tar header needs the size first:
// the download's length, or the bytes spooled to a scratch file when the
// server sends none.
func tarFile(tw *tar.Writer, rc io.Reader, n int64, name string, sent func(int64)) error {
	r := rc
	if n < 0 {
		tmp, err := os.CreateTemp("", "nimbus-extent-*")
		if err != nil {
			return err
		}
		defer os.Remove(tmp.Name())
		defer tmp.Close()
		if n, err = io.Copy(tmp, rc); err != nil {
			return classify("BackupSnapshot", name, err)
		}
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return err
		}
		r = tmp
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: n, ModTime: time.Now()}); err != nil {
		return err
	}
	if _, err := io.Copy(&countWriter{w: tw, report: sent}, r); err != nil {
		return classify("BackupSnapshot", name, err)
	}
	return nil
}

// countWriter counts the bytes through it.
type countWriter struct {
	w      io.Writer
	n      int64
	report func(int64)
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	if c.report != nil {
		c.report(c.n)
	}
	return n, err
}

// localPath is where a secondary storage location is on this machine.
func (p *Pool) localPath(loc storage.Location) (string, error) {
	dir, mounted, err := storage.LocalDir(loc.Store.URL, p.mountRoot)
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

// RevertSnapshot puts the volume's disk back to the snapshot's copy
// (CopyVirtualDisk_Task over it, forced): vSphere VMs Nimbus stops are
// undefined, so the disk is attached to none; a VM that still uses it
// refuses the revert.
func (p *Pool) RevertSnapshot(ctx context.Context, pl storage.Pool, file, snapshotID string) error {
	t, err := p.target(ctx, pl)
	if err != nil {
		return err
	}
	file = t.path(file)
	snap := t.snapPath(file, snapshotID)
	key := "revert:" + file + "<" + snapshotID
	if info, err := t.c.reattach(ctx, key); err != nil || info != nil {
		return classify("RevertSnapshot", file, err)
	}
	if _, err := t.diskSize(ctx, snap); err != nil {
		return err
	}
	if use, err := t.diskUser(ctx, file); err != nil {
		return classify("RevertSnapshot", file, err)
	} else if use != nil {
		return hypervisor.Errorf(driverName, "RevertSnapshot", file, hypervisor.ErrInvalid, "volume %s is in use by VM %s: stop it to revert", file, use.name)
	}
	err = t.fileTask(ctx, key, func(ctx context.Context, v *vimClient) (types.ManagedObjectReference, error) {
		res, err := methods.CopyVirtualDisk_Task(ctx, t.c.client(), &types.CopyVirtualDisk_Task{This: v.vdm(),
			SourceName: snap, SourceDatacenter: &v.dc, DestName: file, DestDatacenter: &v.dc, Force: types.NewBool(true)})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	return classify("RevertSnapshot", file, err)
}

// DeleteSnapshot deletes the snapshot's copy on the datastore; a missing
// one is success.
func (p *Pool) DeleteSnapshot(ctx context.Context, pl storage.Pool, file, snapshotID string) error {
	t, err := p.target(ctx, pl)
	if err != nil {
		return err
	}
	snap := t.snapPath(t.path(file), snapshotID)
	key := "delete:" + snap
	if _, err := t.c.reattach(ctx, key); err != nil {
		return classify("DeleteSnapshot", snap, err)
	}
	err = t.fileTask(ctx, key, func(ctx context.Context, v *vimClient) (types.ManagedObjectReference, error) {
		res, err := methods.DeleteVirtualDisk_Task(ctx, t.c.client(), &types.DeleteVirtualDisk_Task{This: v.vdm(), Name: snap, Datacenter: &v.dc})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	if err != nil && (fault.Is(err, &types.FileNotFound{}) || fault.Is(err, &types.NotFound{})) {
		return nil
	}
	return classify("DeleteSnapshot", snap, err)
}

// deleteSnapshots deletes the folder of a volume's snapshot copies (with
// the volume); a missing one is success.
func (t *dsTarget) deleteSnapshots(ctx context.Context, file string) error {
	dir := t.snapDir(file)
	dc := t.dc.Reference()
	_, err := t.c.runTask(ctx, "rmdir:"+dir, func(ctx context.Context) (types.ManagedObjectReference, error) {
		res, err := methods.DeleteDatastoreFile_Task(ctx, t.c.client(), &types.DeleteDatastoreFile_Task{
			This: *t.c.client().ServiceContent.FileManager, Name: dir, Datacenter: &dc})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	if err != nil && (fault.Is(err, &types.FileNotFound{}) || fault.Is(err, &types.NotFound{})) {
		return nil
	}
	return err
}
