package tests

import (
	"context"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"
	"go.temporal.io/sdk/client"

	ntemporal "github.com/nimbus-cloud/nimbus/infra/temporal"
)

// TestMaintenanceOrphanDisks: a disk left on a pool by a failed cleanup
// (the source copy of a migrated volume that could not be deleted) is
// reported by the reconciler once, left as it is by default, and deleted
// once storage.orphan.cleanup.delay says so.
func TestMaintenanceOrphanDisks(t *testing.T) {
	c := vmtSetup(t)
	cs, s, ctx := c.cs, c.s, context.Background()
	tc, err := client.Dial(client.Options{HostPort: s.Temporal, Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	reconcile := tc.ScheduleClient().GetHandle(ctx, ntemporal.ScheduleID("reconcile", s.TaskQueue))
	for deadline := time.Now().Add(90 * time.Second); ; {
		if _, err := reconcile.Describe(ctx); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("reconcile schedule: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	orphanEvents := func(typ string) int {
		return nsCount(t, s.DB, "SELECT COUNT(*) FROM events WHERE type = ?", typ)
	}

	// A second pool in the cluster, and a stopped VM whose root disk moves there.
	sp := cs.Pool.NewCreateStoragePoolParams("vm-primary-b", "nfs://10.0.0.9/export/vm-primary-b", c.zoneID)
	sp.SetPodid(c.podID)
	sp.SetClusterid(c.clusterID)
	sp.SetCapacitybytes(100 << 30)
	poolB := vmtMust[*cloudstack.CreateStoragePoolResponse](t, "createStoragePool")(cs.Pool.CreateStoragePool(sp)).Id
	d, err := c.deploy(t, cs, "mover", nil)
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	vmtMust[*cloudstack.StopVirtualMachineResponse](t, "stop")(cs.VirtualMachine.StopVirtualMachine(cs.VirtualMachine.NewStopVirtualMachineParams(d.Id)))
	lv := cs.Volume.NewListVolumesParams()
	lv.SetVirtualmachineid(d.Id)
	root := vmtMust[*cloudstack.ListVolumesResponse](t, "listVolumes")(cs.Volume.ListVolumes(lv)).Volumes[0]
	if root.Storageid != c.poolID {
		t.Fatalf("root volume on %s, want the first pool", root.Storageid)
	}
	var path string
	if err := s.DB.NewSelect().Table("volumes").Column("path").Where("uuid = ?", root.Id).Scan(ctx, &path); err != nil {
		t.Fatal(err)
	}

	// runs triggers n reconcile runs, each after the last ended.
	lastRun := func() string {
		d, err := reconcile.Describe(ctx)
		if err != nil {
			t.Fatalf("describe reconcile: %v", err)
		}
		if n := len(d.Info.RecentActions); n > 0 {
			return d.Info.RecentActions[n-1].StartWorkflowResult.WorkflowID
		}
		return ""
	}
	runs := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			prev := lastRun()
			id := prev
			// A trigger while the schedule still counts the last run as
			// running is skipped (overlap policy): trigger again.
			for try, deadline := 0, time.Now().Add(60*time.Second); id == prev; try, id = try+1, lastRun() {
				if time.Now().After(deadline) {
					t.Fatal("the reconcile run did not start")
				}
				if try%10 == 0 {
					if err := reconcile.Trigger(ctx, client.ScheduleTriggerOptions{}); err != nil {
						t.Fatal(err)
					}
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err := tc.GetWorkflow(ctx, id, "").Get(ctx, nil); err != nil {
				t.Fatalf("reconcile run %s: %v", id, err)
			}
		}
	}
	// Reconciling a clean cloud reports nothing.
	runs(2)
	if n := orphanEvents("STORAGE.ORPHAN"); n != 0 {
		t.Fatalf("%d STORAGE.ORPHAN events on a clean cloud", n)
	}

	// The source copy cannot be deleted after the move: it stays behind.
	hostSim(t, s, "name", "DeleteVolume", "count", "1", "mode", "invalid", "message", "the NFS server said no")
	mv, err := cs.Volume.MigrateVolume(cs.Volume.NewMigrateVolumeParams(poolB, root.Id))
	if err != nil || mv.Storageid != poolB {
		t.Fatalf("migrateVolume: %v %+v", err, mv)
	}
	// Seen by one run, reported by the next.
	runs(1)
	if n := orphanEvents("STORAGE.ORPHAN"); n != 0 {
		t.Fatalf("%d STORAGE.ORPHAN events at the first sighting, want 0", n)
	}
	runs(1)
	if n := nsCount(t, s.DB, "SELECT COUNT(*) FROM events e JOIN storage_pools p ON p.uuid = e.resource_uuid WHERE e.type = 'STORAGE.ORPHAN' AND e.level = 'WARN' AND p.uuid = ? AND e.description LIKE ?",
		c.poolID, "%"+path+"%left as it is%"); n != 1 {
		t.Fatalf("%d STORAGE.ORPHAN events naming disk %s on the first pool", n, path)
	}
	// Reported once, kept: later runs add nothing (report only by default).
	runs(2)
	if n := orphanEvents("STORAGE.ORPHAN"); n != 1 {
		t.Errorf("%d STORAGE.ORPHAN events after more runs, want 1", n)
	}
	if n := nsCount(t, s.DB, "SELECT COUNT(*) FROM pool_orphans WHERE path = ? AND reported", path); n != 1 {
		t.Errorf("%d pool_orphans rows for the disk", n)
	}
	if n := orphanEvents("STORAGE.ORPHAN.DELETE"); n != 0 {
		t.Errorf("%d disks deleted with storage.orphan.cleanup.delay 0", n)
	}
	// The moved volume is no orphan on its new pool, and still there.
	if n := nsCount(t, s.DB, "SELECT COUNT(*) FROM pool_orphans o JOIN storage_pools p ON p.id = o.pool_id WHERE p.uuid = ?", poolB); n != 0 {
		t.Errorf("%d orphans on the target pool", n)
	}

	// With a cleanup delay, the disk goes.
	up := cs.Configuration.NewUpdateConfigurationParams("storage.orphan.cleanup.delay")
	up.SetValue("1")
	if _, err := cs.Configuration.UpdateConfiguration(up); err != nil {
		t.Fatalf("updateConfiguration storage.orphan.cleanup.delay: %v", err)
	}
	// The worker's configuration cache takes up to 10 s to see it.
	for deadline := time.Now().Add(60 * time.Second); orphanEvents("STORAGE.ORPHAN.DELETE") == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the orphan disk was not deleted")
		}
		runs(1)
		time.Sleep(time.Second)
	}
	if n := nsCount(t, s.DB, "SELECT COUNT(*) FROM pool_orphans"); n != 0 {
		t.Errorf("%d pool_orphans rows after the delete", n)
	}
	runs(1)
	if n := orphanEvents("STORAGE.ORPHAN.DELETE") + orphanEvents("STORAGE.ORPHAN"); n != 2 {
		t.Errorf("%d orphan events after the delete, want 2 (the report and the delete)", n)
	}
	// The VM starts from its disk on the new pool.
	if _, err := cs.VirtualMachine.StartVirtualMachine(cs.VirtualMachine.NewStartVirtualMachineParams(d.Id)); err != nil {
		t.Fatalf("start after the move: %v", err)
	}
}
