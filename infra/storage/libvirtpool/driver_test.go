package libvirtpool

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// These tests run against the libvirtd of NIMBUS_TEST_LIBVIRT
// (qemu:///system from scripts/services.sh) with dir pools in temporary
// directories, and check what they did with virsh and qemu-img, as an
// admin would.

func libvirtURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("NIMBUS_TEST_LIBVIRT")
	if u == "" {
		t.Skip("NIMBUS_TEST_LIBVIRT is not set: no libvirtd to test against (source .test-services/env after scripts/services.sh)")
	}
	return u
}

func testTemplate(t *testing.T) string {
	t.Helper()
	p := os.Getenv("NIMBUS_TEST_TEMPLATE")
	if p == "" {
		t.Skip("NIMBUS_TEST_TEMPLATE is not set: no test template (scripts/build-test-template.sh)")
	}
	return p
}

func newUUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// worldDir is a temporary directory QEMU (running as its own user) can
// enter.
func worldDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "nimbus-lvpool-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(d, 0o755)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func virsh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("virsh", append([]string{"-c", libvirtURL(t)}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("virsh %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// qemuImg is `qemu-img info -U --output=json`.
type qemuImg struct {
	Format              string `json:"format"`
	VirtualSize         int64  `json:"virtual-size"`
	BackingFilename     string `json:"backing-filename"`
	BackingFilenameFull string `json:"full-backing-filename"`
}

func imgInfo(t *testing.T, path string) qemuImg {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "-U", "--output=json", path).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", path, err)
	}
	var i qemuImg
	if err := json.Unmarshal(out, &i); err != nil {
		t.Fatal(err)
	}
	return i
}

type fixture struct {
	d     *Driver
	host  hypervisor.Host
	pool  storage.Pool
	dir   string
	store storage.ImageStore
	tmpl  storage.Template
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{d: New(hypervisor.TypeKVM, Options{ProgressEvery: time.Millisecond})}
	t.Cleanup(func() { f.d.Close() })
	f.host = hypervisor.Host{ID: newUUID(), URL: libvirtURL(t)}
	f.dir = worldDir(t)
	f.pool = storage.Pool{ID: newUUID(), Name: "p1", Type: "Filesystem", URL: "file://" + f.dir, Via: &f.host}
	f.store = storage.ImageStore{ID: newUUID(), Provider: storage.ProviderNFS, URL: "file://" + worldDir(t)}
	f.tmpl = f.addTemplate(t, testTemplate(t), "qcow2")
	t.Cleanup(func() { f.forgetPool(t, f.pool) })
	return f
}

// addTemplate puts an image on the image store as a template would be.
func (f *fixture) addTemplate(t *testing.T, src, format string) storage.Template {
	t.Helper()
	id := newUUID()
	rel := filepath.Join("template", "tmpl", "2", id[:8], id+"."+format)
	dst := filepath.Join(strings.TrimPrefix(f.store.URL, "file://"), rel)
	os.MkdirAll(filepath.Dir(dst), 0o755)
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	out.Close()
	return storage.Template{ID: id, Source: storage.Location{Store: f.store, Path: rel}, Format: format}
}

// forgetPool removes a pool a failed test left on the host.
func (f *fixture) forgetPool(t *testing.T, p storage.Pool) {
	ctx := context.Background()
	f.d.DeletePool(ctx, p)
	f.d.DisconnectPool(ctx, p, f.host)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestPoolLifecycle(t *testing.T) {
	f := newFixture(t)
	ctx := ctxT(t)
	st, err := f.d.CreatePool(ctx, f.pool)
	if err != nil {
		t.Fatal(err)
	}
	if st.CapacityBytes <= 0 || st.AvailableBytes <= 0 || st.AvailableBytes > st.CapacityBytes {
		t.Fatalf("capacity %+v", st)
	}
	for i := 0; i < 2; i++ { // idempotent
		if err := f.d.ConnectPool(ctx, f.pool, f.host); err != nil {
			t.Fatal(err)
		}
	}
	info := virsh(t, "pool-info", f.pool.ID)
	for _, want := range []string{"State:          running", "Persistent:     yes", "Autostart:      yes"} {
		if !strings.Contains(info, want) {
			t.Errorf("pool-info lacks %q:\n%s", want, info)
		}
	}
	if x := virsh(t, "pool-dumpxml", f.pool.ID); !strings.Contains(x, "<path>"+f.dir+"</path>") {
		t.Errorf("pool target is not %s:\n%s", f.dir, x)
	}
	st2, err := f.d.PoolCapacity(ctx, f.pool)
	if err != nil || st2.CapacityBytes != st.CapacityBytes {
		t.Fatalf("PoolCapacity = %+v, %v; want capacity %d", st2, err, st.CapacityBytes)
	}
	// A stopped pool (libvirtd restarted without autostart, an admin) is
	// started again by the next call.
	virsh(t, "pool-destroy", f.pool.ID)
	if _, err := f.d.PoolCapacity(ctx, f.pool); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := f.d.DisconnectPool(ctx, f.pool, f.host); err != nil {
			t.Fatal(err)
		}
	}
	if l := virsh(t, "pool-list", "--all", "--name"); strings.Contains(l, f.pool.ID) {
		t.Fatalf("pool still defined:\n%s", l)
	}
	if err := f.d.DeletePool(ctx, f.pool); err != nil {
		t.Fatal(err)
	}
	if l := virsh(t, "pool-list", "--all", "--name"); strings.Contains(l, f.pool.ID) {
		t.Fatalf("DeletePool left the pool:\n%s", l)
	}
	if _, err := os.Stat(f.dir); err != nil {
		t.Fatalf("the admin's directory went: %v", err)
	}
}

func TestPoolWithoutHost(t *testing.T) {
	d := New(hypervisor.TypeKVM, Options{})
	p := storage.Pool{ID: newUUID(), Type: "Filesystem", URL: "file:///tmp/x"}
	if _, err := d.CreatePool(context.Background(), p); !errors.Is(err, storage.ErrInvalid) || !strings.Contains(err.Error(), "add a host") {
		t.Fatalf("CreatePool without a host: %v", err)
	}
	if _, err := d.VolumeInfo(context.Background(), p, "v"); !errors.Is(err, storage.ErrUnreachable) {
		t.Fatalf("VolumeInfo without a host: %v", err)
	}
	h := hypervisor.Host{ID: "h", URL: "qemu+tcp://127.0.0.1:1/system"}
	p.Via = &h
	if _, err := d.CreatePool(context.Background(), p); !errors.Is(err, storage.ErrUnreachable) {
		t.Fatalf("CreatePool through a host whose libvirtd does not answer: %v", err)
	}
}

// Every golden pool XML is one libvirt accepts (defined, validated against
// its schema, then undefined; not started, its storage does not exist here).
// RBD is left out when libvirtd has no RBD backend (Debian's
// libvirt-daemon-driver-storage-rbd).
func TestPoolXMLDefines(t *testing.T) {
	url := libvirtURL(t)
	d := New(hypervisor.TypeKVM, Options{})
	defer d.Close()
	l, err := d.o.Connector.Conn(context.Background(), hypervisor.Host{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("testdata/pool-*.xml")
	for _, file := range files {
		b, _ := os.ReadFile(file)
		x := string(b)
		if i := strings.Index(x, "\n<secret"); i > 0 {
			x = x[:i+1]
		}
		id := newUUID()
		x = strings.ReplaceAll(x, poolID, id)
		pool, err := l.StoragePoolDefineXML(x, 1 /* VIR_STORAGE_POOL_DEFINE_VALIDATE */)
		if err != nil {
			if strings.Contains(file, "rbd") && strings.Contains(err.Error(), "missing backend") {
				t.Logf("%s: not checked, this libvirtd has no RBD backend: %v", file, err)
				continue
			}
			t.Errorf("%s: %v", file, err)
			continue
		}
		l.StoragePoolUndefine(pool)
	}
}

func TestVolumes(t *testing.T) {
	f := newFixture(t)
	ctx := ctxT(t)
	if _, err := f.d.CreatePool(ctx, f.pool); err != nil {
		t.Fatal(err)
	}

	// The template is copied once, streaming with progress; every later
	// call (three at once here) finds the copy.
	var reports []storage.Progress
	tv, err := f.d.CopyTemplateToPool(ctx, f.tmpl, f.pool, func(p storage.Progress) { reports = append(reports, p) })
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(testTemplate(t))
	if len(reports) < 2 || reports[len(reports)-1].Done != fi.Size() {
		t.Fatalf("progress %v, want reports ending at %d", reports, fi.Size())
	}
	if !tv.Template || tv.Format != "qcow2" || tv.Path != "tmpl-"+f.tmpl.ID || tv.SizeBytes != imgInfo(t, testTemplate(t)).VirtualSize {
		t.Fatalf("template copy %+v", tv)
	}
	tpath := filepath.Join(f.dir, tv.Path)
	st1, _ := os.Stat(tpath)
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if v, err := f.d.CopyTemplateToPool(ctx, f.tmpl, f.pool, nil); err != nil || v.Path != tv.Path {
				t.Errorf("second copy: %+v, %v", v, err)
			}
		}()
	}
	wg.Wait()
	if st2, _ := os.Stat(tpath); !st2.ModTime().Equal(st1.ModTime()) {
		t.Fatal("the template was copied again")
	}
	// A partial copy (a worker that died mid-upload) is replaced.
	os.Truncate(tpath, 1<<20)
	virsh(t, "pool-refresh", f.pool.ID)
	if _, err := f.d.CopyTemplateToPool(ctx, f.tmpl, f.pool, nil); err != nil {
		t.Fatal(err)
	}
	if st3, _ := os.Stat(tpath); st3.Size() != fi.Size() {
		t.Fatalf("partial copy kept: %d bytes", st3.Size())
	}

	// A root volume is a qcow2 overlay on the template copy.
	rootID := newUUID()
	root, err := f.d.CreateVolumeFromTemplate(ctx, f.pool, tv.Path, storage.VolumeSpec{ID: rootID, Path: rootID, SizeBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if root.BackingPath != tv.Path || root.Format != "qcow2" || root.SizeBytes != 64<<20 {
		t.Fatalf("root volume %+v", root)
	}
	ii := imgInfo(t, filepath.Join(f.dir, rootID))
	if ii.Format != "qcow2" || ii.BackingFilename != tpath || ii.VirtualSize != 64<<20 {
		t.Fatalf("qemu-img info of the root volume: %+v", ii)
	}
	again, err := f.d.CreateVolumeFromTemplate(ctx, f.pool, tv.Path, storage.VolumeSpec{ID: rootID, Path: rootID, SizeBytes: 64 << 20})
	if err != nil || again.Path != rootID {
		t.Fatalf("second create: %+v, %v", again, err)
	}
	small := newUUID() // asked smaller than the template: the template's size
	if v, err := f.d.CreateVolumeFromTemplate(ctx, f.pool, tv.Path, storage.VolumeSpec{ID: small, SizeBytes: 1 << 20}); err != nil || v.SizeBytes != tv.SizeBytes {
		t.Fatalf("small root: %+v, %v", v, err)
	}
	if _, err := f.d.CreateVolumeFromTemplate(ctx, f.pool, "tmpl-none", storage.VolumeSpec{ID: newUUID(), SizeBytes: 1 << 20}); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("from a missing template: %v", err)
	}

	// Data volumes, resize.
	dataID := newUUID()
	data, err := f.d.CreateVolume(ctx, f.pool, storage.VolumeSpec{ID: dataID, SizeBytes: 32 << 20})
	if err != nil || data.Format != "qcow2" || data.SizeBytes != 32<<20 || data.BackingPath != "" {
		t.Fatalf("data volume %+v, %v", data, err)
	}
	if r, err := f.d.ResizeVolume(ctx, f.pool, rootID, 128<<20); err != nil || r.SizeBytes != 128<<20 || imgInfo(t, filepath.Join(f.dir, rootID)).VirtualSize != 128<<20 {
		t.Fatalf("resize: %+v, %v", r, err)
	}

	vols, err := f.d.ListVolumes(ctx, f.pool)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]storage.Volume{}
	for _, v := range vols {
		seen[v.Path] = v
	}
	if len(vols) != 4 || !seen[tv.Path].Template || seen[rootID].Template || seen[rootID].BackingPath != tv.Path || seen[dataID].Path == "" {
		t.Fatalf("ListVolumes: %+v", vols)
	}

	// Snapshot (offline: qemu-img convert), backup to secondary storage,
	// revert, delete.
	snapID := newUUID()
	snap, err := f.d.SnapshotVolume(ctx, f.pool, rootID, storage.SnapshotSpec{ID: snapID})
	if err != nil {
		t.Fatal(err)
	}
	si := imgInfo(t, filepath.Join(f.dir, snap.Path))
	if si.BackingFilename != "" || si.VirtualSize != 128<<20 || snap.SizeBytes <= 0 {
		t.Fatalf("snapshot %+v is not a standalone copy: %+v", snap, si)
	}
	if s2, err := f.d.SnapshotVolume(ctx, f.pool, rootID, storage.SnapshotSpec{ID: snapID}); err != nil || s2.Path != snap.Path {
		t.Fatalf("second snapshot: %+v, %v", s2, err)
	}
	var backupReports int
	dst := storage.Location{Store: f.store, Path: "snapshots/2/" + rootID + "/" + snapID + ".qcow2"}
	img, err := f.d.BackupSnapshot(ctx, f.pool, rootID, snapID, dst, func(storage.Progress) { backupReports++ })
	if err != nil {
		t.Fatal(err)
	}
	bpath := filepath.Join(strings.TrimPrefix(f.store.URL, "file://"), dst.Path)
	bi := imgInfo(t, bpath)
	if bi.Format != "qcow2" || bi.BackingFilename != "" || bi.VirtualSize != 128<<20 || img.SizeBytes != snap.SizeBytes ||
		!strings.HasPrefix(img.Checksum, "{SHA-256}") || backupReports == 0 {
		t.Fatalf("backup %+v (%d progress reports): %+v", img, backupReports, bi)
	}
	if img2, err := f.d.BackupSnapshot(ctx, f.pool, rootID, snapID, dst, nil); err != nil || img2.SizeBytes != img.SizeBytes {
		t.Fatalf("second backup: %+v, %v", img2, err)
	}
	if _, err := f.d.ResizeVolume(ctx, f.pool, rootID, 256<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.d.RevertSnapshot(ctx, f.pool, rootID, snapID); err != nil {
		t.Fatal(err)
	}
	if v, err := f.d.VolumeInfo(ctx, f.pool, rootID); err != nil || v.SizeBytes != 128<<20 {
		t.Fatalf("after revert: %+v, %v", v, err)
	}
	if err := f.d.RevertSnapshot(ctx, f.pool, rootID, "nope"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("revert to a missing snapshot: %v", err)
	}

	// A volume from the backup; an exported volume (createTemplate).
	fromID := newUUID()
	from, err := f.d.CreateVolumeFromImage(ctx, dst, f.pool, storage.VolumeSpec{ID: fromID, SizeBytes: 200 << 20}, nil)
	if err != nil || from.SizeBytes != 200<<20 || from.Format != "qcow2" || from.BackingPath != "" {
		t.Fatalf("volume from image: %+v, %v", from, err)
	}
	exp := storage.Location{Store: f.store, Path: "template/tmpl/2/201/" + small + ".qcow2"}
	ei, err := f.d.ExportVolume(ctx, f.pool, small, exp, nil)
	if err != nil {
		t.Fatal(err)
	}
	if x := imgInfo(t, filepath.Join(strings.TrimPrefix(f.store.URL, "file://"), exp.Path)); x.BackingFilename != "" || x.VirtualSize != tv.SizeBytes || ei.SizeBytes <= 0 {
		t.Fatalf("exported %+v: %+v", ei, x)
	}

	// A copy to another pool on the same host.
	p2 := storage.Pool{ID: newUUID(), Type: "SharedMountPoint", URL: "sharedmountpoint://" + worldDir(t), Via: &f.host}
	t.Cleanup(func() { f.forgetPool(t, p2) })
	if _, err := f.d.CreatePool(ctx, p2); err != nil {
		t.Fatal(err)
	}
	cp, err := f.d.CopyVolume(ctx, f.pool, rootID, p2, storage.VolumeSpec{Path: rootID}, nil)
	if err != nil || cp.Pool != p2.ID || cp.SizeBytes != 128<<20 || cp.BackingPath != "" {
		t.Fatalf("copy: %+v, %v", cp, err)
	}

	// Deleting a volume deletes its snapshots; deleting the pool what
	// Nimbus put there (template copies).
	if err := f.d.DeleteVolume(ctx, f.pool, rootID); err != nil {
		t.Fatal(err)
	}
	if err := f.d.DeleteVolume(ctx, f.pool, rootID); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := f.d.VolumeInfo(ctx, f.pool, rootID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("deleted volume: %v", err)
	}
	if l := virsh(t, "vol-list", f.pool.ID); strings.Contains(l, rootID) {
		t.Fatalf("volume or snapshot left:\n%s", l)
	}
	for _, id := range []string{small, dataID, fromID} {
		if err := f.d.DeleteVolume(ctx, f.pool, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.d.DeleteVolume(ctx, p2, rootID); err != nil {
		t.Fatal(err)
	}
	for _, p := range []storage.Pool{f.pool, p2} {
		if err := f.d.DisconnectPool(ctx, p, f.host); err != nil {
			t.Fatal(err)
		}
		if err := f.d.DeletePool(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if l := virsh(t, "pool-list", "--all", "--name"); strings.Contains(l, f.pool.ID) || strings.Contains(l, p2.ID) {
		t.Fatalf("pools left:\n%s", l)
	}
	if left, _ := os.ReadDir(f.dir); len(left) != 0 {
		t.Fatalf("files left in the pool directory: %v", left)
	}
}

func TestImageChecks(t *testing.T) {
	f := newFixture(t)
	ctx := ctxT(t)
	if _, err := f.d.CreatePool(ctx, f.pool); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte(strings.Repeat("<html>not an image</html>\n", 1000)), 0o644)
	backed := filepath.Join(dir, "backed.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-f", "qcow2", "-F", "qcow2", "-b", testTemplate(t), backed).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	raw := strings.TrimSuffix(testTemplate(t), ".qcow2") + ".raw"
	tests := map[string]struct {
		src, format string
		kind        error
		text        string
	}{
		"garbage as qcow2":   {garbage, "qcow2", storage.ErrInvalid, "not QCOW2"},
		"backing file":       {backed, "qcow2", storage.ErrInvalid, "backing file"},
		"qcow2 declared raw": {testTemplate(t), "raw", storage.ErrInvalid, "declared RAW but is qcow2"},
		"vhd":                {garbage, "vhd", storage.ErrNotSupported, "QCOW2, RAW or ISO"},
		"raw":                {raw, "raw", nil, ""},
		"iso":                {garbage, "iso", nil, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tmpl := f.addTemplate(t, tc.src, tc.format)
			v, err := f.d.CopyTemplateToPool(ctx, tmpl, f.pool, nil)
			if tc.kind == nil {
				fi, _ := os.Stat(tc.src)
				if err != nil || v.Format != "raw" || v.SizeBytes != fi.Size() {
					t.Fatalf("got %+v, %v; want a raw copy of %d bytes", v, err, fi.Size())
				}
				return
			}
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("got %v, want %v containing %q", err, tc.kind, tc.text)
			}
			if l := virsh(t, "vol-list", f.pool.ID); strings.Contains(l, tmpl.ID) {
				t.Fatalf("a refused template left a volume:\n%s", l)
			}
		})
	}
	if _, err := f.d.CopyTemplateToPool(ctx, storage.Template{ID: newUUID(), Source: storage.Location{Store: f.store, Path: "nope.qcow2"}, Format: "qcow2"}, f.pool, nil); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("missing template file: %v", err)
	}
}

// A volume a running guest writes is snapshotted by a domain backup (QEMU
// holds the image, so qemu-img cannot read it), grows live through the
// domain, and cannot be reverted until the guest stops.
func TestLiveVolume(t *testing.T) {
	f := newFixture(t)
	ctx := ctxT(t)
	if _, err := f.d.CreatePool(ctx, f.pool); err != nil {
		t.Fatal(err)
	}
	tv, err := f.d.CopyTemplateToPool(ctx, f.tmpl, f.pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	rootID := newUUID()
	if _, err := f.d.CreateVolumeFromTemplate(ctx, f.pool, tv.Path, storage.VolumeSpec{ID: rootID, SizeBytes: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	name := "nimbus-lvpool-" + rootID[:8]
	serial := filepath.Join(f.dir, "serial.log")
	dom := fmt.Sprintf(`<domain type='qemu'><name>%s</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os><features><acpi/></features>
<devices><disk type='volume' device='disk'><driver name='qemu' type='qcow2'/><source pool='%s' volume='%s'/><target dev='vda' bus='virtio'/></disk>
<serial type='file'><source path='%s'/><target port='0'/></serial><console type='file'><source path='%s'/><target type='serial' port='0'/></console>
</devices></domain>`, name, f.pool.ID, rootID, serial, serial)
	xf := filepath.Join(f.dir, "dom.xml")
	os.WriteFile(xf, []byte(dom), 0o644)
	virsh(t, "create", xf)
	t.Cleanup(func() { exec.Command("virsh", "-c", libvirtURL(t), "destroy", name).Run() })
	deadline := time.Now().Add(90 * time.Second)
	for {
		b, _ := os.ReadFile(serial)
		if strings.Contains(string(b), "NIMBUS-TEST-GUEST-BOOTED") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest did not boot; serial:\n%s", b)
		}
		time.Sleep(200 * time.Millisecond)
	}

	snapID := newUUID()
	snap, err := f.d.SnapshotVolume(ctx, f.pool, rootID, storage.SnapshotSpec{ID: snapID})
	if err != nil {
		t.Fatal(err)
	}
	if si := imgInfo(t, filepath.Join(f.dir, snap.Path)); si.Format != "qcow2" || si.BackingFilename != "" || si.VirtualSize != 64<<20 {
		t.Fatalf("live snapshot %+v: %+v", snap, si)
	}
	// The snapshot is the guest's disk, template included (the test guest
	// runs from its initramfs and writes nothing to it).
	if out, err := exec.Command("qemu-img", "compare", "-U", filepath.Join(f.dir, snap.Path), filepath.Join(f.dir, tv.Path)).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img compare of the snapshot and the template: %v: %s", err, out)
	}
	if _, err := f.d.ResizeVolume(ctx, f.pool, rootID, 96<<20); err != nil {
		t.Fatal(err)
	}
	if bi := virsh(t, "domblkinfo", name, "vda"); !strings.Contains(bi, fmt.Sprint(96<<20)) {
		t.Fatalf("the running guest does not see the new size:\n%s", bi)
	}
	if err := f.d.RevertSnapshot(ctx, f.pool, rootID, snapID); !errors.Is(err, storage.ErrInvalid) || !strings.Contains(err.Error(), name) {
		t.Fatalf("revert while running: %v", err)
	}
	if _, err := f.d.ExportVolume(ctx, f.pool, rootID, storage.Location{Store: f.store, Path: "export/" + rootID + ".qcow2"}, nil); err != nil {
		t.Fatalf("export while running: %v", err)
	}
	virsh(t, "destroy", name)
	if err := f.d.RevertSnapshot(ctx, f.pool, rootID, snapID); err != nil {
		t.Fatal(err)
	}
	if v, err := f.d.VolumeInfo(ctx, f.pool, rootID); err != nil || v.SizeBytes != 64<<20 {
		t.Fatalf("reverted: %+v, %v", v, err)
	}
	if err := f.d.DeleteVolume(ctx, f.pool, rootID); err != nil {
		t.Fatal(err)
	}
	if l := virsh(t, "vol-list", f.pool.ID); strings.Contains(l, rootID) {
		t.Fatalf("left:\n%s", l)
	}
}
