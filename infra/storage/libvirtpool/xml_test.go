package libvirtpool

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nimbus-cloud/nimbus/infra/storage"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const poolID = "5f0c2a4e-8a51-4c3b-9d7e-2b6f1c0d9e11"

// golden compares got with testdata/<name>, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n--- got\n%s--- want\n%s", name, got, want)
	}
}

func TestPoolXML(t *testing.T) {
	tests := map[string]struct {
		pool storage.Pool
	}{
		"pool-filesystem":       {storage.Pool{ID: poolID, Type: "Filesystem", URL: "file:///var/lib/nimbus/local"}},
		"pool-sharedmountpoint": {storage.Pool{ID: poolID, Type: "SharedMountPoint", URL: "sharedmountpoint:///mnt/gfs/primary/"}},
		"pool-netfs":            {storage.Pool{ID: poolID, Type: "NetworkFilesystem", URL: "nfs://10.0.0.9/export/primary"}},
		"pool-netfs-options": {storage.Pool{ID: poolID, Type: "NetworkFilesystem", URL: "nfs://nfs.example.com:20490/export/primary",
			Details: map[string]string{"mountpoint": "/srv/nimbus/p1", "nfsvers": "4.1"}}},
		"pool-rbd": {storage.Pool{ID: poolID, Type: "RBD", URL: "rbd://cloudstack@ceph-mon.example.com/vms",
			Username: "cloudstack", Password: "QVFCbUdoTmpBQUFBQUJBQW5ZcGZ3ZkZ0aFJOTk9rZ0RVdz09"}},
		"pool-rbd-anonymous": {storage.Pool{ID: poolID, Type: "RBD", URL: "rbd://mon1:6790/vms"}},
		"pool-iscsi":         {storage.Pool{ID: poolID, Type: "Iscsi", URL: "iscsi://192.168.5.20/iqn.2024-01.com.example:storage.lun1/1"}},
		"pool-iscsi-chap": {storage.Pool{ID: poolID, Type: "Iscsi", URL: "iscsi://192.168.5.20:3261/iqn.2024-01.com.example:storage.lun1/1",
			Username: "initiator", Password: "chapsecret"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			def, err := buildPoolDef(tc.pool)
			if err != nil {
				t.Fatal(err)
			}
			got, err := render(def.Pool)
			if err != nil {
				t.Fatal(err)
			}
			if def.Secret != nil {
				sx, err := render(def.Secret)
				if err != nil {
					t.Fatal(err)
				}
				got += sx
			}
			golden(t, name+".xml", got)
		})
	}
}

func TestPoolXMLRefusals(t *testing.T) {
	tests := map[string]struct {
		pool storage.Pool
		kind error
		text string
	}{
		"no id":          {storage.Pool{Type: "Filesystem", URL: "file:///x"}, storage.ErrInvalid, "no id"},
		"relative dir":   {storage.Pool{ID: poolID, Type: "Filesystem", URL: "file://host/"}, storage.ErrInvalid, "absolute directory"},
		"nfs no export":  {storage.Pool{ID: poolID, Type: "NetworkFilesystem", URL: "nfs://server/"}, storage.ErrInvalid, "nfs://server/export"},
		"rbd no pool":    {storage.Pool{ID: poolID, Type: "RBD", URL: "rbd://mon/"}, storage.ErrInvalid, "rbd://user@monitor/pool"},
		"rbd no key":     {storage.Pool{ID: poolID, Type: "RBD", URL: "rbd://admin@mon/vms"}, storage.ErrInvalid, "has no key"},
		"rbd bad key":    {storage.Pool{ID: poolID, Type: "RBD", URL: "rbd://admin@mon/vms", Password: "not base64!"}, storage.ErrInvalid, "rbd key"},
		"iscsi no iqn":   {storage.Pool{ID: poolID, Type: "Iscsi", URL: "iscsi://target/"}, storage.ErrInvalid, "iscsi://target/iqn"},
		"vmfs elsewhere": {storage.Pool{ID: poolID, Type: "VMFS", URL: "vmfs://vc/dc/ds"}, storage.ErrNotSupported, "not served by libvirt"},
		"no url":         {storage.Pool{ID: poolID, Type: "Filesystem", URL: "::"}, storage.ErrInvalid, "url"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := buildPoolDef(tc.pool)
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("got %v, want %v containing %q", err, tc.kind, tc.text)
			}
		})
	}
}

func TestVolumeXML(t *testing.T) {
	tests := map[string]volumeXML{
		"vol-qcow2":   newVolumeXML("0d6b2a8e-1c1f-4f43-a0a4-0e8f1d1b7c22", formatQCOW2, 8<<30, nil),
		"vol-raw":     newVolumeXML("tmpl-7e1c", formatRaw, 0, nil),
		"vol-overlay": newVolumeXML("0d6b2a8e-1c1f-4f43-a0a4-0e8f1d1b7c22", formatQCOW2, 20<<30, &backingXML{Path: "/var/lib/nimbus/local/tmpl-7e1c", Format: &typeAttr{Type: formatQCOW2}}),
	}
	for name, v := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := render(v)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, name+".xml", got)
		})
	}
}

func TestBackupXML(t *testing.T) {
	got, err := render(newBackupXML("vdb", "/var/lib/nimbus/local/0d6b.snap-9a1f"))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "backup.xml", got)
}

// A volume as libvirt describes it reads back into the storage layer's terms.
func TestVolumeXMLParse(t *testing.T) {
	const x = `<volume type='file'>
  <name>ov</name>
  <capacity unit='bytes'>67108864</capacity>
  <allocation unit='KiB'>196</allocation>
  <target><path>/p/ov</path><format type='qcow2'/></target>
  <backingStore><path>/p/tmpl-1</path><format type='qcow2'/></backingStore>
</volume>`
	v, err := parseVolumeXML(x)
	if err != nil {
		t.Fatal(err)
	}
	if v.Capacity.bytes() != 64<<20 || v.Allocation.bytes() != 196<<10 || v.Target.Format.Type != "qcow2" || v.BackingStore.Path != "/p/tmpl-1" {
		t.Fatalf("parsed %+v", v)
	}
}

func TestDomainDisks(t *testing.T) {
	const x = `<domain type='qemu'><name>i-2-3-VM</name><devices>
  <disk type='volume' device='disk'><source pool='P' volume='root'/><target dev='vda' bus='virtio'/></disk>
  <disk type='file' device='disk'><source file='/p/data'/><target dev='vdb' bus='virtio'/></disk>
</devices></domain>`
	var d domainDisks
	if err := xmlUnmarshal(x, &d); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ pool, vol, path, want string }{
		{"P", "root", "/p/root", "vda"}, {"P", "data", "/p/data", "vdb"}, {"Q", "root", "/q/root", ""},
	} {
		if got := d.diskUsing(tc.pool, tc.vol, tc.path); got != tc.want {
			t.Errorf("diskUsing(%s, %s) = %q, want %q", tc.pool, tc.vol, got, tc.want)
		}
	}
}
