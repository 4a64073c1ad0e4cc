package api

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/apache/cloudstack-go/v2/cloudstack"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

// volFixture is a zone with a pool, an image store, two users with a
// running VM each, alice's root disk, data disk, snapshot and policy,
// written directly into a SQLite inventory: the list commands and the
// refusals made before any job run without Temporal.
type volFixture struct {
	ts         *testServer
	alice, bob *testUser
	aliceVM    models.VMInstance
	bobVM      models.VMInstance
	root, data models.Volume
	snap       models.Snapshot
	policy     models.SnapshotPolicy
}

func newVolFixture(t *testing.T) *volFixture {
	t.Helper()
	ts := newTestServer(t, nil)
	ctx := context.Background()
	db := ts.S.DB
	ins := func(m any) {
		t.Helper()
		if _, err := db.NewInsert().Model(m).Exec(ctx); err != nil {
			t.Fatalf("insert %T: %v", m, err)
		}
	}
	now := models.Now()
	z := &models.Zone{UUID: models.NewUUID(), Name: "z1", NetworkType: models.NetworkTypeBasic, AllocationState: models.AllocationEnabled,
		ZoneToken: models.NewUUID(), Created: now}
	ins(z)
	p := &models.StoragePool{UUID: models.NewUUID(), Name: "p1", PoolType: models.PoolNetworkFilesystem, Scope: models.ScopeZone,
		HypervisorType: models.HypervisorSimulator, URL: "nfs://x/y", CapacityBytes: 100 << 30, AllocatedBytes: 6 << 30,
		State: models.PoolUp, ZoneID: z.ID, Created: now}
	ins(p)
	st := &models.ImageStore{UUID: models.NewUUID(), Name: "sec", Protocol: "file", URL: "file:///tmp/sec", ProviderName: "NFS",
		Role: models.ImageRoleImage, Scope: models.ScopeZone, ZoneID: z.ID, Created: now}
	ins(st)
	f := &volFixture{ts: ts, alice: ts.addUser(models.RoleUserUUID), bob: ts.addUser(models.RoleUserUUID)}
	vm := func(u *testUser, name string) models.VMInstance {
		v := models.VMInstance{UUID: models.NewUUID(), Name: name, InstanceName: "i-" + name, Type: models.VMTypeUser,
			State: models.VMRunning, ZoneID: z.ID, ServiceOfferingID: 1, HypervisorType: models.HypervisorSimulator, CPU: 1, Speed: 1000,
			RAMSize: 512, AccountID: u.Account.ID, DomainID: u.Account.DomainID, Created: now}
		ins(&v)
		return v
	}
	f.aliceVM, f.bobVM = vm(f.alice, "avm"), vm(f.bob, "bvm")
	f.root = models.Volume{UUID: models.NewUUID(), Name: "ROOT-1", VolumeType: models.VolumeRoot, State: models.VolumeReady, Size: 1 << 30,
		Format: "QCOW2", Path: "root-path", PoolID: p.ID, InstanceID: f.aliceVM.ID, ZoneID: z.ID, AccountID: f.alice.Account.ID,
		DomainID: f.alice.Account.DomainID, DisplayVolume: true, Attached: now, Created: now}
	ins(&f.root)
	var off models.DiskOffering
	if err := db.NewSelect().Model(&off).Where("uuid = ?", models.DiskOfferingCustomUUID).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	f.data = models.Volume{UUID: models.NewUUID(), Name: "data", VolumeType: models.VolumeDataDisk, State: models.VolumeReady, Size: 5 << 30,
		Format: "QCOW2", Path: "data-path", PoolID: p.ID, InstanceID: f.aliceVM.ID, DeviceID: 1, DiskOfferingID: off.ID, ZoneID: z.ID,
		AccountID: f.alice.Account.ID, DomainID: f.alice.Account.DomainID, DisplayVolume: true, Attached: now, Created: now}
	ins(&f.data)
	f.snap = models.Snapshot{UUID: models.NewUUID(), Name: "avm_data_1", VolumeID: f.data.ID, SnapshotType: models.SnapshotDaily,
		State: models.SnapshotBackedUp, Size: 5 << 30, PhysicalSize: 5 << 30, ZoneID: z.ID, AccountID: f.alice.Account.ID,
		DomainID: f.alice.Account.DomainID, Created: now}
	ins(&f.snap)
	ins(&models.SnapshotStoreRef{StoreID: p.ID, StoreRole: models.StoreRolePrimary, SnapshotID: f.snap.ID, VolumeID: f.data.ID,
		State: models.ObjectReady, DownloadPct: 100, Created: now})
	ins(&models.SnapshotStoreRef{StoreID: st.ID, StoreRole: models.StoreRoleImage, SnapshotID: f.snap.ID, VolumeID: f.data.ID,
		ZoneID: z.ID, State: models.ObjectReady, DownloadPct: 100, InstallPath: "snapshots/x", Created: now})
	f.policy = models.SnapshotPolicy{UUID: models.NewUUID(), VolumeID: f.data.ID, IntervalType: "WEEKLY", Schedule: "00:03:2",
		Timezone: "UTC", MaxSnaps: 4, Active: true, Display: true, AccountID: f.alice.Account.ID, DomainID: f.alice.Account.DomainID, Created: now}
	ins(&f.policy)
	return f
}

func (f *volFixture) as(u *testUser, command string, kv ...string) reply {
	f.ts.t.Helper()
	return f.ts.signed(u.APIKey, u.Secret, cmdParams(command, kv...))
}

func decodeInner(t *testing.T, r reply, v any) {
	t.Helper()
	if r.Status != 200 {
		t.Fatalf("got %s", r)
	}
	for _, raw := range r.Body {
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatalf("decode %s: %v", raw, err)
		}
	}
}

func TestVolumeListsOnSQLite(t *testing.T) {
	f := newVolFixture(t)
	var vols cloudstack.ListVolumesResponse
	decodeInner(t, f.as(f.alice, "listVolumes"), &vols)
	if vols.Count != 2 {
		t.Fatalf("alice's volumes: %+v", vols)
	}
	for _, v := range vols.Volumes {
		if v.Storageid != "" || v.Path != "" || v.Vmname != "avm" || v.Vmstate != "Running" || v.Account != f.alice.Username || v.Hypervisor != "Simulator" {
			t.Fatalf("alice's view of %s: %+v", v.Name, v)
		}
		if v.Type == "DATADISK" && (v.Deviceid != 1 || v.Size != 5<<30 || v.Diskofferingname == "" || v.Attached == "") {
			t.Fatalf("data disk %+v", v)
		}
	}
	vols = cloudstack.ListVolumesResponse{}
	decodeInner(t, f.as(f.bob, "listVolumes", "id", f.data.UUID), &vols)
	if vols.Count != 0 {
		t.Fatalf("bob sees alice's volume: %+v", vols)
	}
	decodeInner(t, f.ts.admin(cmdParams("listVolumes", "listall", "true", "type", "ROOT")), &vols)
	if vols.Count != 1 || vols.Volumes[0].Storage != "p1" || vols.Volumes[0].Path != "root-path" || vols.Volumes[0].Deviceid != 0 {
		t.Fatalf("admin's ROOT list: %+v", vols)
	}
	decodeInner(t, f.ts.admin(cmdParams("listVolumes", "listall", "true", "keyword", "DAT", "virtualmachineid", f.aliceVM.UUID)), &vols)
	if vols.Count != 1 || vols.Volumes[0].Id != f.data.UUID {
		t.Fatalf("keyword and vm filter: %+v", vols)
	}

	var snaps cloudstack.ListSnapshotsResponse
	decodeInner(t, f.as(f.alice, "listSnapshots", "volumeid", f.data.UUID), &snaps)
	if snaps.Count != 1 {
		t.Fatalf("snapshots: %+v", snaps)
	}
	s := snaps.Snapshots[0]
	if s.Id != f.snap.UUID || s.State != "BackedUp" || !s.Revertable || s.Snapshottype != "DAILY" || s.Intervaltype != "DAILY" ||
		s.Volumename != "data" || s.Physicalsize != 5<<30 || s.Downloaddetails["downloadPercent"] != "100" || s.Datastorename != "sec" {
		t.Fatalf("snapshot %+v", s)
	}
	snaps = cloudstack.ListSnapshotsResponse{}
	decodeInner(t, f.as(f.bob, "listSnapshots"), &snaps)
	if snaps.Count != 0 {
		t.Fatalf("bob sees %+v", snaps)
	}

	var pols cloudstack.ListSnapshotPoliciesResponse
	decodeInner(t, f.as(f.alice, "listSnapshotPolicies", "volumeid", f.data.UUID), &pols)
	if pols.Count != 1 || pols.SnapshotPolicies[0].Intervaltype != 2 || pols.SnapshotPolicies[0].Schedule != "00:03:2" || pols.SnapshotPolicies[0].Maxsnaps != 4 {
		t.Fatalf("policies %+v", pols)
	}
	pols = cloudstack.ListSnapshotPoliciesResponse{}
	decodeInner(t, f.as(f.bob, "listSnapshotPolicies"), &pols)
	if pols.Count != 0 {
		t.Fatalf("bob sees %+v", pols)
	}
}

func TestVolumeRefusalsBeforeAnyJob(t *testing.T) {
	f := newVolFixture(t)
	tests := map[string]struct {
		r    func() reply
		code int
		text string
	}{
		"attach to another account's VM": {func() reply {
			return f.as(f.alice, "attachVolume", "id", f.data.UUID, "virtualmachineid", f.bobVM.UUID)
		}, cserr.ParamError, "Unable to find virtual machine"},
		"admin attaching across accounts": {func() reply {
			return f.ts.admin(cmdParams("attachVolume", "id", f.data.UUID, "virtualmachineid", f.bobVM.UUID))
		}, cserr.ParamError, "already attached"},
		"delete an attached volume": {func() reply { return f.as(f.alice, "deleteVolume", "id", f.data.UUID) },
			cserr.ParamError, "not attached"},
		"delete a root disk": {func() reply { return f.as(f.alice, "deleteVolume", "id", f.root.UUID) },
			cserr.ParamError, "not attached"},
		"shrink without shrinkok": {func() reply { return f.as(f.alice, "resizeVolume", "id", f.data.UUID, "size", "2") },
			cserr.ParamError, "shrinkok"},
		"revert under a running VM": {func() reply { return f.as(f.alice, "revertSnapshot", "id", f.snap.UUID) },
			cserr.ParamError, "stop it"},
		"migrate as a user": {func() reply {
			return f.as(f.alice, "migrateVolume", "volumeid", f.data.UUID, "storageid", models.NewUUID())
		}, cserr.MethodNotAllowed, "not allowed"},
		"bob deleting alice's snapshot": {func() reply { return f.as(f.bob, "deleteSnapshot", "id", f.snap.UUID) },
			cserr.ParamError, "Unable to find snapshot"},
		"policy with a bad schedule": {func() reply {
			return f.as(f.alice, "createSnapshotPolicy", "volumeid", f.data.UUID, "intervaltype", "MONTHLY", "schedule", "00:01:31",
				"timezone", "UTC", "maxsnaps", "2")
		}, cserr.ParamError, "day of the month"},
		"policy in an unknown time zone": {func() reply {
			return f.as(f.alice, "createSnapshotPolicy", "volumeid", f.data.UUID, "intervaltype", "HOURLY", "schedule", "5",
				"timezone", "Nowhere/Land", "maxsnaps", "2")
		}, cserr.ParamError, "time zone"},
		"detach a root disk": {func() reply { return f.as(f.alice, "detachVolume", "id", f.root.UUID) },
			cserr.ParamError, "root disk"},
		"createVolume without offering": {func() reply {
			return f.as(f.alice, "createVolume", "zoneid", models.NewUUID())
		}, cserr.ParamError, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			wantError(t, tc.r(), tc.code, tc.text)
		})
	}
	// Nothing changed.
	n, err := f.ts.S.DB.NewSelect().Model((*models.AsyncJob)(nil)).Count(context.Background())
	if err != nil || n != 0 {
		t.Fatalf("%d jobs started by refusals (%v)", n, err)
	}
	var v models.Volume
	if err := f.ts.S.DB.NewSelect().Model(&v).Where("id = ?", f.data.ID).Scan(context.Background()); err != nil ||
		v.State != models.VolumeReady || v.Size != 5<<30 || v.InstanceID != f.aliceVM.ID {
		t.Fatalf("data disk after refusals: %+v %v", v, err)
	}
}
