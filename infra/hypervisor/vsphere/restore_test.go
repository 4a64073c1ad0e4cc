package vsphere_test

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/soap"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// dsFile reads a datastore file through the simulated vCenter's datastore
// access ("" when there is none).
func dsFile(t *testing.T, e *env, ds, path string) string {
	t.Helper()
	ctx := context.Background()
	c, err := e.sim.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Logout(ctx)
	rc, _, err := c.Client.Download(ctx, object.NewDatastoreURL(*c.Client.URL(), "DC0", ds, path), &soap.DefaultDownload)
	if err != nil {
		return ""
	}
	defer rc.Close()
	var b strings.Builder
	buf := make([]byte, 64<<10)
	for {
		n, err := rc.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}

// TestCreateVolumeFromImage restores a snapshot backup into a new volume
// on the other datastore: its descriptor names extents named after it,
// holds the snapshot's bytes and size, carries a uuid of its own; a retry
// finds it; a bigger size grows it; deleting it leaves no file.
func TestCreateVolumeFromImage(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	vol, err := e.pools.CreateVolume(ctx, e.ds0, storage.VolumeSpec{ID: "src-1", Path: "src-1", SizeBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.sim.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Logout(ctx)
	// Data in the source's extent, to find again in the restored one.
	up := soap.DefaultUpload
	u := object.NewDatastoreURL(*c.Client.URL(), "DC0", "LocalDS_0", "nimbus/src-1-flat.vmdk")
	if err := c.Client.Upload(ctx, strings.NewReader("snapshot bytes"), u, &up); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pools.SnapshotVolume(ctx, e.ds0, vol.Path, storage.SnapshotSpec{ID: "snap-1"}); err != nil {
		t.Fatalf("SnapshotVolume: %v", err)
	}
	dir := t.TempDir()
	loc := storage.Location{Store: storage.ImageStore{URL: "file://" + dir}, Path: "snapshots/1/snap-1.tar"}
	if _, err := e.pools.BackupSnapshot(ctx, e.ds0, vol.Path, "snap-1", loc, nil); err != nil {
		t.Fatalf("BackupSnapshot: %v", err)
	}

	var reports []storage.Progress
	spec := storage.VolumeSpec{ID: "5b9d0a53-6f1e-4c3e-9f4e-0a00000000aa", SizeBytes: 8 << 20}
	got, err := e.pools.CreateVolumeFromImage(ctx, loc, e.ds1, spec, func(p storage.Progress) { reports = append(reports, p) })
	if err != nil {
		t.Fatalf("CreateVolumeFromImage: %v", err)
	}
	file := "[LocalDS_1] nimbus/" + spec.ID + ".vmdk"
	if got.Path != file || got.SizeBytes != 8<<20 || got.Format != "vmdk" {
		t.Fatalf("CreateVolumeFromImage = %+v", got)
	}
	if len(reports) == 0 || reports[len(reports)-1].Done != reports[len(reports)-1].Total {
		t.Fatalf("progress reports %+v", reports)
	}
	desc := dsFile(t, e, "LocalDS_1", "nimbus/"+spec.ID+".vmdk")
	if !strings.Contains(desc, `"`+spec.ID+`-flat.vmdk"`) || !strings.Contains(desc, `ddb.uuid = "5b 9d 0a 53 6f 1e 4c 3e-9f 4e 0a 00 00 00 00 aa"`) {
		t.Fatalf("restored descriptor:\n%s", desc)
	}
	if data := dsFile(t, e, "LocalDS_1", "nimbus/"+spec.ID+"-flat.vmdk"); data != "snapshot bytes" {
		t.Fatalf("restored extent holds %q", data)
	}
	// A retry finds the finished upload, even with the backup gone.
	if err := os.Remove(filepath.Join(dir, loc.Path)); err != nil {
		t.Fatal(err)
	}
	if again, err := e.pools.CreateVolumeFromImage(ctx, loc, e.ds1, spec, nil); err != nil || again.Path != file {
		t.Fatalf("CreateVolumeFromImage again = %+v, %v", again, err)
	}
	if info, err := e.pools.VolumeInfo(ctx, e.ds1, file); err != nil || info.SizeBytes != 8<<20 {
		t.Fatalf("VolumeInfo = %+v, %v", info, err)
	}
	if err := e.pools.DeleteVolume(ctx, e.ds1, file); err != nil {
		t.Fatalf("DeleteVolume: %v", err)
	}
	for _, f := range []string{spec.ID + ".vmdk", spec.ID + "-flat.vmdk"} {
		if dsFile(t, e, "LocalDS_1", "nimbus/"+f) != "" {
			t.Fatalf("%s stays after DeleteVolume", f)
		}
	}

	// Asked bigger than the snapshot: grown.
	loc2 := storage.Location{Store: loc.Store, Path: "snapshots/1/snap-1b.tar"}
	if _, err := e.pools.BackupSnapshot(ctx, e.ds0, vol.Path, "snap-1", loc2, nil); err != nil {
		t.Fatal(err)
	}
	big, err := e.pools.CreateVolumeFromImage(ctx, loc2, e.ds1, storage.VolumeSpec{ID: "big-1", SizeBytes: 16 << 20}, nil)
	if err != nil || big.SizeBytes != 16<<20 {
		t.Fatalf("CreateVolumeFromImage bigger = %+v, %v", big, err)
	}

	// A template from the snapshot (VMDK): uploaded once, a plain disk
	// root volumes are full copies of.
	tpl := storage.Template{ID: "5b9d0a53-6f1e-4c3e-9f4e-0a00000000bb", Source: loc2, Format: "VMDK"}
	tv, err := e.pools.CopyTemplateToPool(ctx, tpl, e.ds1, nil)
	if err != nil || !tv.Template || tv.Path != "[LocalDS_1] nimbus/templates/"+tpl.ID+".vmdk" || tv.SizeBytes != 8<<20 {
		t.Fatalf("CopyTemplateToPool VMDK = %+v, %v", tv, err)
	}
	if again, err := e.pools.CopyTemplateToPool(ctx, storage.Template{ID: tpl.ID, Format: "VMDK"}, e.ds1, nil); err != nil || again.Path != tv.Path {
		t.Fatalf("CopyTemplateToPool VMDK again = %+v, %v", again, err)
	}
	rv, err := e.pools.CreateVolumeFromTemplate(ctx, e.ds1, tv.Path, storage.VolumeSpec{ID: "root-t", SizeBytes: 8 << 20})
	if err != nil || rv.BackingPath != "" || rv.SizeBytes != 8<<20 {
		t.Fatalf("CreateVolumeFromTemplate of a VMDK template = %+v, %v", rv, err)
	}
	if data := dsFile(t, e, "LocalDS_1", "nimbus/root-t-flat.vmdk"); data != "snapshot bytes" {
		t.Fatalf("the root volume from the VMDK template holds %q", data)
	}

	// A file that is no backup: invalid, and nothing left behind.
	junk := filepath.Join(dir, "junk.tar")
	f, err := os.Create(junk)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	tw.WriteHeader(&tar.Header{Name: "x.vmdk", Mode: 0o644, Size: 3})
	tw.Write([]byte("abc"))
	tw.Close()
	f.Close()
	_, err = e.pools.CreateVolumeFromImage(ctx, storage.Location{Store: loc.Store, Path: "junk.tar"}, e.ds1, storage.VolumeSpec{ID: "junk-1", SizeBytes: 8 << 20}, nil)
	if !errors.Is(err, hypervisor.ErrInvalid) {
		t.Fatalf("CreateVolumeFromImage of junk = %v, want invalid", err)
	}
	_, err = e.pools.CreateVolumeFromImage(ctx, storage.Location{Store: loc.Store, Path: "missing.tar"}, e.ds1, storage.VolumeSpec{ID: "junk-2", SizeBytes: 8 << 20}, nil)
	if !errors.Is(err, hypervisor.ErrNotFound) {
		t.Fatalf("CreateVolumeFromImage of a missing backup = %v, want not found", err)
	}
	// A dead restore's extent (no descriptor) goes with DeleteVolume.
	u = object.NewDatastoreURL(*c.Client.URL(), "DC0", "LocalDS_1", "nimbus/dead-1-flat.vmdk")
	if err := c.Client.Upload(ctx, strings.NewReader("partial"), u, &up); err != nil {
		t.Fatal(err)
	}
	if err := e.pools.DeleteVolume(ctx, e.ds1, "dead-1"); err != nil {
		t.Fatalf("DeleteVolume of a dead restore: %v", err)
	}
	if dsFile(t, e, "LocalDS_1", "nimbus/dead-1-flat.vmdk") != "" {
		t.Fatal("a dead restore's extent stays after DeleteVolume")
	}
}
