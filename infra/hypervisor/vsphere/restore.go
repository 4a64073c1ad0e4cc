package vsphere

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vmdk"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// Volumes from snapshot backups (createVolume with snapshotid): the
// backup BackupSnapshot wrote is a tar of a vmdk descriptor and its
// extents. Each extent is uploaded (HTTP PUT through vCenter's datastore
// access, as uploadISO does) beside where the volume's descriptor goes
// (VolumeFolder/<volume>.vmdk, the layout CreateVolume makes), named after
// the volume; the descriptor, rewritten to name them, goes last. A
// descriptor there is therefore a finished upload: a retry takes it as it
// is, and one that finds none uploads the extents again over whatever a
// dead attempt left.

// maxDescriptor bounds what is read as a vmdk descriptor.
const maxDescriptor = 64 << 10

// backupDisk is a snapshot backup's layout: its descriptor and the sizes
// of its members.
type backupDisk struct {
	desc    *vmdk.Descriptor
	members map[string]int64
}

// readBackup finds the descriptor of a backup tar: the member that parses
// as a vmdk descriptor whose extents are all members of the tar.
func readBackup(f *os.File) (*backupDisk, error) {
	b := &backupDisk{members: map[string]int64{}}
	var cands [][]byte
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b.members[h.Name] = h.Size
		if h.Size <= maxDescriptor && strings.HasSuffix(h.Name, ".vmdk") {
			data, err := io.ReadAll(tr)
			if err != nil {
				return nil, err
			}
			cands = append(cands, data)
		}
	}
	for _, data := range cands {
		desc, err := vmdk.ParseDescriptor(strings.NewReader(string(data)))
		if err != nil || len(desc.Extent) == 0 {
			continue
		}
		ok := true
		for _, ext := range desc.Extent {
			if _, in := b.members[ext.Info]; ext.Info != "" && !in {
				ok = false
			}
		}
		if ok && desc.Capacity() > 0 {
			b.desc = desc
			return b, nil
		}
	}
	return nil, errors.New("no vmdk descriptor naming the archive's extents")
}

// extentName names a restored volume's extents as vCenter names a disk's:
// <volume>-flat.vmdk for the one extent of a flat disk (which is what
// DeleteVirtualDisk removes with the descriptor, on vCenter and the
// simulator alike), <volume>-f00N.vmdk for a split one.
func extentName(base string, i, n int) string {
	if n == 1 {
		return base + "-flat.vmdk"
	}
	return fmt.Sprintf("%s-f%03d.vmdk", base, i+1)
}

// diskUUID derives a disk's ddb.uuid from the volume's id: the copy must
// not carry its source's (vCenter tells disks apart by it), and the same
// volume gets the same one on a retry.
func diskUUID(id string) string {
	hex := strings.ReplaceAll(id, "-", "")
	if len(hex) != 32 {
		return ""
	}
	var b strings.Builder
	for i := 0; i < 32; i += 2 {
		switch {
		case i == 16:
			b.WriteByte('-')
		case i > 0:
			b.WriteByte(' ')
		}
		b.WriteString(hex[i : i+2])
	}
	return b.String()
}

// CreateVolumeFromImage makes a volume from a snapshot backup on secondary
// storage (see above), grown to the asked size when that is bigger than
// the snapshot's. Progress is the extents' bytes sent.
func (p *Pool) CreateVolumeFromImage(ctx context.Context, src storage.Location, pl storage.Pool, spec storage.VolumeSpec, pr storage.ProgressFunc) (storage.Volume, error) {
	t, err := p.target(ctx, pl)
	if err != nil {
		return storage.Volume{}, err
	}
	file := t.path(nameOf(spec))
	if _, err := t.diskSize(ctx, file); err == nil {
		return t.restored(ctx, file, spec, pr)
	} else if !errors.Is(err, hypervisor.ErrNotFound) {
		return storage.Volume{}, err
	}
	local, err := p.localPath(src)
	if err != nil {
		return storage.Volume{}, err
	}
	if err := t.uploadDisk(ctx, "CreateVolumeFromImage", local, src.Path, file, spec.ID, pr); err != nil {
		return storage.Volume{}, err
	}
	return t.restored(ctx, file, spec, nil)
}

// uploadDisk uploads the disk a backup tar (local, secondary storage's
// path src) holds to the datastore file "[ds] dir/<name>.vmdk" (see
// above); id, a UUID, makes the disk's own uuid.
func (t *dsTarget) uploadDisk(ctx context.Context, op, local, src, file, id string, pr storage.ProgressFunc) error {
	f, err := os.Open(local)
	if err != nil {
		if os.IsNotExist(err) {
			return hypervisor.Errorf(driverName, op, src, hypervisor.ErrNotFound, "no backup: %v", err)
		}
		return hypervisor.Errorf(driverName, op, src, hypervisor.ErrUnreachable, "backup: %v", err)
	}
	defer f.Close()
	b, err := readBackup(f)
	if err != nil {
		return hypervisor.Errorf(driverName, op, src, hypervisor.ErrInvalid, "not a vSphere snapshot backup: %v", err)
	}
	var dp object.DatastorePath
	dp.FromString(file)
	dir, base := path.Dir(dp.Path), strings.TrimSuffix(path.Base(dp.Path), ".vmdk")
	rename := map[string]string{} // backup member -> extent file on the datastore
	var total int64
	n := 0
	for _, ext := range b.desc.Extent {
		if ext.Info != "" {
			n++
		}
	}
	i := 0
	for k, ext := range b.desc.Extent {
		if ext.Info == "" {
			continue // a ZERO extent has no file
		}
		if _, dup := rename[ext.Info]; !dup {
			rename[ext.Info] = extentName(base, i, n)
			total += b.members[ext.Info]
			i++
		}
		b.desc.Extent[k].Info = rename[ext.Info]
	}
	if err := t.mkdir(ctx, (&object.DatastorePath{Datastore: t.dsName, Path: dir}).String()); err != nil {
		return classify(op, file, err)
	}
	ds := object.NewDatastore(t.c.client(), t.ds)
	ds.InventoryPath, ds.DatacenterPath = "/"+t.dcName+"/datastore/"+t.dsName, t.dcName
	uploaded := []string{}
	fail := func(err error) error {
		// What this attempt sent is removed, so that a failed create
		// leaves nothing behind (a dead worker's leftovers are removed
		// by DeleteVolume, which the failed job's undo calls).
		for _, name := range uploaded {
			_ = t.deleteFile(context.WithoutCancel(ctx), (&object.DatastorePath{Datastore: t.dsName, Path: path.Join(dir, name)}).String())
		}
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	pr.Report(0, total)
	var sent int64
	tr := tar.NewReader(f)
	for len(uploaded) < len(rename) {
		h, err := tr.Next()
		if err != nil {
			return fail(hypervisor.Errorf(driverName, op, src, hypervisor.ErrInvalid, "backup ends before its extents: %v", err))
		}
		name, ok := rename[h.Name]
		if !ok || h.Typeflag != tar.TypeReg || slices.Contains(uploaded, name) {
			continue
		}
		done := sent
		up := soap.DefaultUpload // PUT
		up.ContentLength = h.Size
		fileCalls.Add(1)
		r := &countReader{r: tr, report: func(n int64) { pr.Report(done+n, total) }}
		if err := ds.Upload(ctx, r, path.Join(dir, name), &up); err != nil {
			uploaded = append(uploaded, name)
			return fail(classify(op, file, err))
		}
		uploaded = append(uploaded, name)
		sent += h.Size
	}
	if u := diskUUID(id); u != "" {
		b.desc.DDB["uuid"] = u
	}
	var db strings.Builder
	if err := b.desc.Write(&db); err != nil {
		return fail(err)
	}
	up := soap.DefaultUpload
	up.ContentLength = int64(db.Len())
	fileCalls.Add(1)
	if err := ds.Upload(ctx, strings.NewReader(db.String()), dp.Path, &up); err != nil {
		return fail(classify(op, file, err))
	}
	pr.Report(total, total)
	return nil
}

// restored is a restored volume grown to the asked size.
func (t *dsTarget) restored(ctx context.Context, file string, spec storage.VolumeSpec, pr storage.ProgressFunc) (storage.Volume, error) {
	size, err := t.extend(ctx, "CreateVolumeFromImage", file, spec.SizeBytes)
	if err != nil {
		return storage.Volume{}, err
	}
	pr.Report(size, size)
	return t.volume(file, size, ""), nil
}

// deleteFile deletes one datastore file; a missing one is success.
func (t *dsTarget) deleteFile(ctx context.Context, file string) error {
	fm := object.NewFileManager(t.c.client())
	task, err := fm.DeleteDatastoreFile(ctx, file, t.dc)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil && (fault.Is(err, &types.FileNotFound{}) || fault.Is(err, &types.NotFound{})) {
		return nil
	}
	return err
}

// countReader reports the bytes read through it.
type countReader struct {
	r      io.Reader
	n      int64
	report func(int64)
}

func (c *countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if c.report != nil && n > 0 {
		c.report(c.n)
	}
	return n, err
}

// templateFolder holds, under VolumeFolder, the copies of templates made
// from snapshots (createTemplate with snapshotid: a snapshot backup, VMDK,
// no OVA). Such a copy is a plain disk out of ListVolumes' way (like the
// snapshot copies); with no template VM to hang linked clones off, root
// volumes are full copies of it (CreateVolumeFromTemplate).
const templateFolder = "templates"

// copyDiskTemplate uploads a VMDK template (a snapshot backup) to the
// datastore once, as uploadDisk does; later calls find it there.
func (p *Pool) copyDiskTemplate(ctx context.Context, t *dsTarget, tpl storage.Template, pr storage.ProgressFunc) (storage.Volume, error) {
	const op = "CopyTemplateToPool"
	if tpl.ID == "" {
		return storage.Volume{}, hypervisor.Errorf(driverName, op, tpl.Source.Path, hypervisor.ErrInvalid, "template has no id")
	}
	file := (&object.DatastorePath{Datastore: t.dsName, Path: path.Join(VolumeFolder, templateFolder, tpl.ID+".vmdk")}).String()
	// Two deploys of the template at once upload it once (in this
	// worker): the second would rewrite the extent the first's copies
	// read.
	mu, _ := p.imports.LoadOrStore(file, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	done := func() (storage.Volume, error) {
		size, err := t.diskSize(ctx, file)
		if err != nil {
			return storage.Volume{}, err
		}
		v := t.volume(file, size, "")
		v.Template = true
		return v, nil
	}
	if v, err := done(); err == nil {
		return v, nil
	} else if !errors.Is(err, hypervisor.ErrNotFound) {
		return storage.Volume{}, err
	}
	dir, _, err := storage.LocalDir(tpl.Source.Store.URL, p.mountRoot)
	if err != nil {
		return storage.Volume{}, err
	}
	local := path.Join(dir, path.Clean("/"+tpl.Source.Path))
	if err := t.uploadDisk(ctx, op, local, tpl.Source.Path, file, tpl.ID, pr); err != nil {
		return storage.Volume{}, err
	}
	return done()
}
