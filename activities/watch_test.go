package activities_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.temporal.io/sdk/testsuite"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere/vcsim"
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

// TestMaintWatchClusterHostsChange: a cluster watch (on vcsim) over the
// one host Up ends early, HostsChanged, once a second host is Up, so that
// its workflow's next watch covers both at once.
func TestMaintWatchClusterHostsChange(t *testing.T) {
	t.Setenv(vsphere.WatchEnv, "true")
	defer activities.SetWatchHostsEvery(200 * time.Millisecond)()
	sim, err := vcsim.Start(vcsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	drv := vsphere.New(hypervisor.Config{})
	t.Cleanup(func() { drv.Close() })
	ctx := context.Background()
	found, err := drv.DiscoverHosts(ctx, hypervisor.Cluster{ID: "c1", URL: sim.ClusterURL(), Username: sim.Username, Password: sim.Password})
	if err != nil || len(found) < 2 {
		t.Fatalf("DiscoverHosts = %d hosts, %v", len(found), err)
	}
	f := newBMFixture(t, testenv.SQLiteDSN(t))
	f.deps.Hypervisors = func(string) (hypervisor.Driver, error) { return drv, nil }
	a := &activities.Maintenance{Deps: f.deps}
	var rows []models.Host
	for i, h := range found[:2] {
		rows = append(rows, f.host(fmt.Sprintf("esx%d", i), models.HypervisorVMware, h.URL, map[string]string{"username": sim.Username, "password": sim.Password}))
	}
	if _, err := f.deps.DB.NewUpdate().Model((*models.Host)(nil)).Set("state = ?", models.HostDown).Where("id = ?", rows[1].ID).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	type result struct {
		res activities.MaintWatchResult
		err error
	}
	done := make(chan result, 1)
	// In an activity environment: the watch needs its worker-stop channel.
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(a)
	go func() {
		var r activities.MaintWatchResult
		v, err := env.ExecuteActivity(a.MaintWatchCluster, activities.MaintWatchClusterInput{ClusterUUID: f.cluster.UUID})
		if err == nil {
			err = v.Get(&r)
		}
		done <- result{r, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("the watch ended before its hosts changed: %+v, %v", r.res, r.err)
	case <-time.After(time.Second):
	}
	if _, err := f.deps.DB.NewUpdate().Model((*models.Host)(nil)).Set("state = ?", models.HostUp).Where("id = ?", rows[1].ID).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil || !r.res.HostsChanged || r.res.Stop {
			t.Fatalf("the watch ended with %+v, %v; want HostsChanged", r.res, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch went on 10 s after a second host came Up")
	}
}
