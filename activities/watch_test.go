package activities_test

import (
	"context"
	"testing"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// TestMaintWatchClusterStops: a per-host watch of a host in a cluster
// hands over (Stop, naming the cluster); a cluster watch stops when the
// cluster is gone or holds no vSphere host, and waits (no Stop) while its
// vSphere hosts are all down. (Watching itself is covered end to end by
// TestVSphereLiveStorageVMotion on vcsim.)
func TestMaintWatchClusterStops(t *testing.T) {
	f := newBMFixture(t, testenv.SQLiteDSN(t))
	ctx := context.Background()
	a := &activities.Maintenance{Deps: f.deps}

	vs := f.host("esx1", models.HypervisorVMware, "https://vc.example/DC0/bc/esx1", nil)
	res, err := a.MaintWatchHost(ctx, activities.MaintWatchInput{HostUUID: vs.UUID})
	if err != nil || !res.Stop || res.ClusterUUID != f.cluster.UUID {
		t.Fatalf("MaintWatchHost of a clustered host = %+v, %v; want Stop naming cluster %s", res, err, f.cluster.UUID)
	}

	res, err = a.MaintWatchCluster(ctx, activities.MaintWatchClusterInput{ClusterUUID: models.NewUUID()})
	if err != nil || !res.Stop {
		t.Fatalf("MaintWatchCluster of no cluster = %+v, %v; want Stop", res, err)
	}

	if _, err := f.deps.DB.NewUpdate().Model((*models.Host)(nil)).Set("state = ?", models.HostDown).Where("id = ?", vs.ID).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	f.host("kvm1", models.HypervisorKVM, "http://10.0.0.5", nil)
	res, err = a.MaintWatchCluster(ctx, activities.MaintWatchClusterInput{ClusterUUID: f.cluster.UUID})
	if err != nil || res.Stop || res.Events != 0 {
		t.Fatalf("MaintWatchCluster with its vSphere host down = %+v, %v; want a return without Stop", res, err)
	}

	if _, err := f.deps.DB.NewDelete().Model((*models.Host)(nil)).Where("id = ?", vs.ID).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	res, err = a.MaintWatchCluster(ctx, activities.MaintWatchClusterInput{ClusterUUID: f.cluster.UUID})
	if err != nil || !res.Stop {
		t.Fatalf("MaintWatchCluster with no vSphere host = %+v, %v; want Stop", res, err)
	}
}
