package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/sim/simkit"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

var ctx = context.Background()

func open(t *testing.T, dir string) *Driver {
	t.Helper()
	d, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func mustKind(t *testing.T, err, kind error) {
	t.Helper()
	if kind == nil && err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	if kind != nil && !errors.Is(err, kind) {
		t.Fatalf("error %v, want kind %v", err, kind)
	}
}

func testPool(id string) storage.Pool {
	return storage.Pool{ID: id, Type: "NetworkFilesystem", URL: "nfs://10.0.0.9/export/" + id, CapacityBytes: 100 << 30,
		ZoneID: "z1", PodID: "p1", ClusterID: "c1"}
}

// secondary is a file:// image store holding a 1 MiB template.
func secondary(t *testing.T) (storage.ImageStore, string) {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "template/tmpl/2/201"), 0o755)
	os.WriteFile(filepath.Join(dir, "template/tmpl/2/201/tpl.qcow2"), make([]byte, 1<<20), 0o644)
	return storage.ImageStore{ID: "s1", Provider: "NFS", URL: "file://" + dir}, dir
}

func TestLifecycle(t *testing.T) {
	d := open(t, t.TempDir())
	store, sdir := secondary(t)
	p, p2 := testPool("pool-1"), testPool("pool-2")
	st, err := d.CreatePool(ctx, p)
	mustKind(t, err, nil)
	if st.CapacityBytes != 100<<30 || st.UsedBytes != 0 || st.AvailableBytes != 100<<30 {
		t.Fatalf("new pool %+v", st)
	}
	mustKind(t, firstErr(d.CreatePool(ctx, p2)), nil)
	for _, h := range []string{"h1", "h2"} {
		mustKind(t, d.ConnectPool(ctx, p, hypervisor.Host{ID: h}), nil)
	}
	mustKind(t, d.DisconnectPool(ctx, p, hypervisor.Host{ID: "h2"}), nil)
	if hs := d.Hosts("pool-1"); fmt.Sprint(hs) != "[h1]" {
		t.Errorf("hosts %v", hs)
	}

	var reports []storage.Progress
	tpl, err := d.CopyTemplateToPool(ctx, storage.Template{ID: "tpl-201", Format: "qcow2",
		Source: storage.Location{Store: store, Path: "template/tmpl/2/201/tpl.qcow2"}}, p, func(pr storage.Progress) { reports = append(reports, pr) })
	mustKind(t, err, nil)
	if !tpl.Template || tpl.SizeBytes != 1<<20 || len(reports) < 2 || reports[len(reports)-1].Percent() != 100 {
		t.Fatalf("template copy %+v, progress %+v", tpl, reports)
	}
	_, err = d.CopyTemplateToPool(ctx, storage.Template{ID: "tpl-404", Source: storage.Location{Store: store, Path: "template/none.qcow2"}}, p, nil)
	mustKind(t, err, storage.ErrNotFound)

	root, err := d.CreateVolumeFromTemplate(ctx, p, tpl.Path, storage.VolumeSpec{ID: "vol-root", SizeBytes: 8 << 30})
	mustKind(t, err, nil)
	if root.BackingPath != "tpl-201" || root.SizeBytes != 8<<30 || root.Path != "vol-root" {
		t.Fatalf("root %+v", root)
	}
	_, err = d.CreateVolumeFromTemplate(ctx, p, tpl.Path, storage.VolumeSpec{ID: "vol-tiny", SizeBytes: 1})
	mustKind(t, err, storage.ErrInvalid)
	_, err = d.CreateVolumeFromTemplate(ctx, p2, tpl.Path, storage.VolumeSpec{ID: "vol-x"})
	mustKind(t, err, storage.ErrNotFound) // not copied to pool-2
	data, err := d.CreateVolume(ctx, p, storage.VolumeSpec{ID: "vol-data", SizeBytes: 10 << 30, Format: "raw"})
	mustKind(t, err, nil)
	if data.Format != "raw" || data.BackingPath != "" {
		t.Errorf("data %+v", data)
	}
	_, err = d.ResizeVolume(ctx, p, "vol-data", 5<<30)
	mustKind(t, err, storage.ErrInvalid)
	data, err = d.ResizeVolume(ctx, p, "vol-data", 20<<30)
	mustKind(t, err, nil)

	snap, err := d.SnapshotVolume(ctx, p, "vol-data", storage.SnapshotSpec{ID: "snap-1"})
	mustKind(t, err, nil)
	if snap.SizeBytes != 20<<30 || snap.Created.IsZero() {
		t.Errorf("snapshot %+v", snap)
	}
	backup, err := d.BackupSnapshot(ctx, p, "vol-data", "snap-1", storage.Location{Store: store, Path: "snapshots/2/7/snap-1"}, nil)
	mustKind(t, err, nil)
	if fi, err := os.Stat(filepath.Join(sdir, "snapshots/2/7/snap-1")); err != nil || fi.Size() != 20<<30 || backup.SizeBytes != 20<<30 {
		t.Fatalf("backup on secondary: %v %+v", err, backup)
	}
	_, err = d.ResizeVolume(ctx, p, "vol-data", 30<<30)
	mustKind(t, err, nil)
	mustKind(t, d.RevertSnapshot(ctx, p, "vol-data", "snap-1"), nil)
	if v, _ := d.VolumeInfo(ctx, p, "vol-data"); v.SizeBytes != 20<<30 {
		t.Errorf("after revert %+v", v)
	}
	mustKind(t, d.RevertSnapshot(ctx, p, "vol-data", "snap-9"), storage.ErrNotFound)
	restored, err := d.CreateVolumeFromImage(ctx, storage.Location{Store: store, Path: backup.Path}, p2, storage.VolumeSpec{ID: "vol-restored"}, nil)
	mustKind(t, err, nil)
	if restored.SizeBytes != 20<<30 {
		t.Errorf("restored %+v", restored)
	}
	img, err := d.ExportVolume(ctx, p, "vol-root", storage.Location{Store: store, Path: "template/tmpl/2/202/exp.qcow2"}, nil)
	mustKind(t, err, nil)
	if img.SizeBytes != 8<<30 {
		t.Errorf("export %+v", img)
	}
	moved, err := d.CopyVolume(ctx, p, "vol-data", p2, storage.VolumeSpec{}, nil)
	mustKind(t, err, nil)
	if moved.Pool != "pool-2" || moved.SizeBytes != 20<<30 {
		t.Errorf("copy %+v", moved)
	}

	st, _ = d.PoolCapacity(ctx, p)
	want := int64(1<<20 + 8<<30 + 20<<30 + 20<<30) // template, root, data, snapshot
	if st.UsedBytes != want || st.AllocatedBytes != 28<<30 || st.AvailableBytes != 100<<30-want {
		t.Errorf("capacity %+v, want used %d", st, want)
	}
	vols, _ := d.ListVolumes(ctx, p)
	if len(vols) != 3 || vols[0].Path != "tpl-201" {
		t.Errorf("volumes %+v", vols)
	}

	mustKind(t, d.DeleteVolume(ctx, p, "tpl-201"), storage.ErrInvalid) // vol-root depends on it
	mustKind(t, d.DeletePool(ctx, p), storage.ErrInvalid)
	mustKind(t, d.DeleteSnapshot(ctx, p, "vol-data", "snap-1"), nil)
	for _, v := range []string{"vol-root", "vol-data", "tpl-201"} {
		mustKind(t, d.DeleteVolume(ctx, p, v), nil)
	}
	mustKind(t, d.DeletePool(ctx, p), nil)
	_, err = d.PoolCapacity(ctx, p)
	mustKind(t, err, storage.ErrNotFound)
	mustKind(t, d.DeleteVolume(ctx, p, "vol-root"), nil) // with its pool gone
}

func firstErr[T any](_ T, err error) error { return err }

func TestIdempotent(t *testing.T) {
	store, _ := secondary(t)
	p := testPool("pool-1")
	tplSrc := storage.Template{ID: "tpl", Source: storage.Location{Store: store, Path: "template/tmpl/2/201/tpl.qcow2"}}
	tests := map[string]struct {
		op   func(d *Driver) error
		kind error
	}{
		"create pool":   {op: func(d *Driver) error { return firstErr(d.CreatePool(ctx, p)) }},
		"connect":       {op: func(d *Driver) error { return d.ConnectPool(ctx, p, hypervisor.Host{ID: "h1"}) }},
		"disconnect":    {op: func(d *Driver) error { return d.DisconnectPool(ctx, p, hypervisor.Host{ID: "h9"}) }},
		"template copy": {op: func(d *Driver) error { return firstErr(d.CopyTemplateToPool(ctx, tplSrc, p, nil)) }},
		"create volume": {op: func(d *Driver) error {
			return firstErr(d.CreateVolume(ctx, p, storage.VolumeSpec{ID: "v", SizeBytes: 1 << 30}))
		}},
		"other size": {op: func(d *Driver) error {
			return firstErr(d.CreateVolume(ctx, p, storage.VolumeSpec{ID: "v", SizeBytes: 2 << 30}))
		}, kind: storage.ErrInvalid},
		"snapshot":                {op: func(d *Driver) error { return firstErr(d.SnapshotVolume(ctx, p, "v", storage.SnapshotSpec{ID: "s"})) }},
		"delete missing":          {op: func(d *Driver) error { return d.DeleteVolume(ctx, p, "never") }},
		"delete missing snapshot": {op: func(d *Driver) error { return d.DeleteSnapshot(ctx, p, "v", "never") }},
		"resize to same":          {op: func(d *Driver) error { return firstErr(d.ResizeVolume(ctx, p, "v", 1<<30)) }},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d := open(t, "")
			mustKind(t, firstErr(d.CreatePool(ctx, p)), nil)
			mustKind(t, d.ConnectPool(ctx, p, hypervisor.Host{ID: "h1"}), nil)
			mustKind(t, firstErr(d.CopyTemplateToPool(ctx, tplSrc, p, nil)), nil)
			mustKind(t, firstErr(d.CreateVolume(ctx, p, storage.VolumeSpec{ID: "v", SizeBytes: 1 << 30})), nil)
			mustKind(t, firstErr(d.SnapshotVolume(ctx, p, "v", storage.SnapshotSpec{ID: "s"})), nil)
			before := state(t, d)
			mustKind(t, tc.op(d), tc.kind)
			if after := state(t, d); after != before {
				t.Errorf("state changed:\n%s\n%s", before, after)
			}
		})
	}
}

func TestCapacity(t *testing.T) {
	d := open(t, "")
	p := testPool("small")
	p.CapacityBytes = 10 << 30
	d.CreatePool(ctx, p)
	mustKind(t, firstErr(d.CreateVolume(ctx, p, storage.VolumeSpec{ID: "a", SizeBytes: 6 << 30})), nil)
	_, err := d.CreateVolume(ctx, p, storage.VolumeSpec{ID: "b", SizeBytes: 6 << 30})
	mustKind(t, err, storage.ErrCapacity)
	if hypervisor.Retryable(err) {
		t.Error("capacity failure retryable")
	}
	_, err = d.SnapshotVolume(ctx, p, "a", storage.SnapshotSpec{ID: "s"})
	mustKind(t, err, storage.ErrCapacity)
	_, err = d.ResizeVolume(ctx, p, "a", 11<<30)
	mustKind(t, err, storage.ErrCapacity)
	d2 := open(t, "")
	p.CapacityBytes = 0
	st, _ := d2.CreatePool(ctx, p)
	if st.CapacityBytes != DefaultCapacity {
		t.Errorf("default capacity %d", st.CapacityBytes)
	}
}

func TestFaults(t *testing.T) {
	p1, p2 := testPool("pool-1"), testPool("pool-2")
	p2.ClusterID = "c2"
	via := hypervisor.Host{ID: "h7"}
	tests := map[string]struct {
		rule  simkit.Rule
		fails []bool // per pool, CreateVolume through h7 on pool-1, direct on pool-2
		kind  error
	}{
		"next call anywhere":  {rule: simkit.Rule{Op: "CreateVolume", Count: 1}, fails: []bool{true, false}},
		"pool scoped":         {rule: simkit.Rule{Count: -1, Scope: simkit.Scope{Pool: "pool-2"}}, fails: []bool{false, true}},
		"cluster scoped":      {rule: simkit.Rule{Count: -1, Scope: simkit.Scope{Cluster: "c1"}, Mode: simkit.ModeCapacity}, fails: []bool{true, false}, kind: storage.ErrCapacity},
		"host scoped":         {rule: simkit.Rule{Count: -1, Scope: simkit.Scope{Host: "h7"}, Mode: simkit.ModeUnreachable}, fails: []bool{true, false}, kind: storage.ErrUnreachable},
		"other operation":     {rule: simkit.Rule{Op: "DeleteVolume", Count: -1}, fails: []bool{false, false}},
		"zone scoped, always": {rule: simkit.Rule{Probability: 1, Scope: simkit.Scope{Zone: "z1"}}, fails: []bool{true, true}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d := open(t, t.TempDir())
			d.CreatePool(ctx, p1)
			d.CreatePool(ctx, p2)
			d.Faults().Add(tc.rule)
			pv := p1
			pv.Via = &via
			for i, pool := range []storage.Pool{pv, p2} {
				_, err := d.CreateVolume(ctx, pool, storage.VolumeSpec{ID: "v", SizeBytes: 1})
				if (err != nil) != tc.fails[i] {
					t.Errorf("pool %d: err %v, want failure %v", i, err, tc.fails[i])
				}
				if err != nil && tc.kind != nil && !errors.Is(err, tc.kind) {
					t.Errorf("pool %d: %v, want %v", i, err, tc.kind)
				}
				if err != nil && !strings.Contains(err.Error(), "Simulator CreateVolume") {
					t.Errorf("error does not name the operation: %v", err)
				}
			}
		})
	}
}

// state renders everything the simulator holds.
func state(t *testing.T, d *Driver) string {
	t.Helper()
	var lines []string
	d.mu.RLock()
	defer d.mu.RUnlock()
	for _, p := range d.pools {
		p.mu.Lock()
		b, _ := json.Marshal(p.rec)
		hosts := make([]string, 0)
		for h := range p.hosts {
			hosts = append(hosts, h)
		}
		sort.Strings(hosts)
		lines = append(lines, fmt.Sprintf("pool %s %v", b, hosts))
		for _, v := range p.vols {
			b, _ := json.Marshal(v)
			sn, _ := json.Marshal(v.Snaps)
			lines = append(lines, fmt.Sprintf("vol %s %s %s", p.rec.ID, b, sn))
		}
		p.mu.Unlock()
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestPersistence(t *testing.T) {
	store, _ := secondary(t)
	for name, crash := range map[string]bool{"close": false, "crash": true} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			d, err := OpenWith(dir, Options{CompactBytes: 2 << 10}) // compact often
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				p := testPool(fmt.Sprintf("pool-%d", i))
				p.CapacityBytes = 0 // the default 10 TiB
				d.CreatePool(ctx, p)
				d.ConnectPool(ctx, p, hypervisor.Host{ID: "h1"})
				d.CopyTemplateToPool(ctx, storage.Template{ID: "tpl", Source: storage.Location{Store: store, Path: "template/tmpl/2/201/tpl.qcow2"}}, p, nil)
				for j := 0; j < 40; j++ {
					id := fmt.Sprintf("v%d", j)
					mustKind(t, firstErr(d.CreateVolumeFromTemplate(ctx, p, "tpl", storage.VolumeSpec{ID: id, SizeBytes: 2 << 30})), nil)
					switch j % 4 {
					case 0:
						mustKind(t, firstErr(d.SnapshotVolume(ctx, p, id, storage.SnapshotSpec{ID: "s" + id})), nil)
					case 1:
						mustKind(t, d.DeleteVolume(ctx, p, id), nil)
					case 2:
						mustKind(t, firstErr(d.ResizeVolume(ctx, p, id, 4<<30)), nil)
					}
				}
			}
			d.DeletePool(ctx, testPool("pool-9"))
			d.Faults().Add(simkit.Rule{Op: "CreateVolume", Count: 2})
			want := state(t, d)
			if crash {
				d.crash()
			} else {
				mustKind(t, d.Close(), nil)
			}
			d2 := open(t, dir)
			if got := state(t, d2); got != want {
				t.Fatalf("state after reopen differs:\n got %s\nwant %s", got, want)
			}
			if r := d2.Faults().Rules(); len(r) != 1 {
				t.Errorf("faults %+v", r)
			}
		})
	}
}

func TestRegistered(t *testing.T) {
	d, err := storage.OpenPool("simulator", storage.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Type() != "Simulator" {
		t.Errorf("type %s", d.Type())
	}
	// Sharing fault switches with the hypervisor simulator.
	f, _ := simkit.NewFaults("")
	s, _ := OpenWith("", Options{Faults: f})
	f.HostDown("h1", false)
	p := testPool("p")
	s.CreatePool(ctx, p)
	mustKind(t, s.ConnectPool(ctx, p, hypervisor.Host{ID: "h1"}), storage.ErrUnreachable)
}

func TestMigrateVolumeLive(t *testing.T) {
	d := open(t, t.TempDir())
	p1, p2 := testPool("pool-1"), testPool("pool-2")
	mustKind(t, firstErr(d.CreatePool(ctx, p1)), nil)
	mustKind(t, firstErr(d.CreatePool(ctx, p2)), nil)
	mustKind(t, firstErr(d.CreateVolume(ctx, p1, storage.VolumeSpec{ID: "disk-1", SizeBytes: 5 << 30})), nil)
	h, vm := hypervisor.Host{ID: "h1"}, hypervisor.VMRef{Name: "i-2-3-VM"}

	// A fault scoped to the VM's host fails it; nothing is left on the target.
	d.Faults().Add(simkit.Rule{Op: "MigrateVolumeLive", Count: 1, Mode: simkit.ModeInvalid, Scope: simkit.Scope{Host: "h1"}})
	mustKind(t, firstErr(d.MigrateVolumeLive(ctx, p1, "disk-1", p2, storage.VolumeSpec{}, h, vm, nil)), storage.ErrInvalid)
	mustKind(t, firstErr(d.VolumeInfo(ctx, p2, "disk-1")), storage.ErrNotFound)

	var last storage.Progress
	got, err := d.MigrateVolumeLive(ctx, p1, "disk-1", p2, storage.VolumeSpec{}, h, vm, func(p storage.Progress) { last = p })
	mustKind(t, err, nil)
	if got.Path != "disk-1" || got.Pool != "pool-2" || got.SizeBytes != 5<<30 || last.Percent() != 100 {
		t.Fatalf("migrated volume %+v, progress %+v", got, last)
	}
	// Idempotent: a retry finds the copy; the source stays for the caller.
	mustKind(t, firstErr(d.MigrateVolumeLive(ctx, p1, "disk-1", p2, storage.VolumeSpec{}, h, vm, nil)), nil)
	mustKind(t, firstErr(d.VolumeInfo(ctx, p1, "disk-1")), nil)
	mustKind(t, firstErr(d.MigrateVolumeLive(ctx, p1, "nope", p2, storage.VolumeSpec{}, h, vm, nil)), storage.ErrNotFound)
	mustKind(t, firstErr(d.MigrateVolumeLive(ctx, p1, "disk-1", p2, storage.VolumeSpec{}, h, hypervisor.VMRef{}, nil)), storage.ErrInvalid)

	// Drivers that cannot keep UnsupportedPool's answer.
	var u storage.UnsupportedPool
	mustKind(t, firstErr(u.MigrateVolumeLive(ctx, p1, "disk-1", p2, storage.VolumeSpec{}, h, vm, nil)), storage.ErrNotSupported)
}
