package tests

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"

	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

func TestStoragePrimaryAndSecondary(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	cs := s.Client
	cs.Timeout(3 * time.Minute)
	ctx := context.Background()
	zoneID, podID := hostZonePod(t, s, "zone-storage")
	cl, err := cs.Cluster.AddCluster(cs.Cluster.NewAddClusterParams("sc1", "CloudManaged", "Simulator", podID, zoneID))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"sim://s1?cpus=8", "sim://s2?cpus=8"} {
		if _, err := hostAdd(cs, zoneID, podID, cl.Id, u); err != nil {
			t.Fatalf("addHost %s: %v", u, err)
		}
	}
	const tib = int64(1) << 40

	// Cluster-wide NFS with a declared size and tags.
	pp := cs.Pool.NewCreateStoragePoolParams("nfs1", "nfs://10.0.0.9/export/primary", zoneID)
	pp.SetPodid(podID)
	pp.SetClusterid(cl.Id)
	pp.SetCapacitybytes(2 * tib)
	pp.SetTags("ssd,fast")
	nfs, err := cs.Pool.CreateStoragePool(pp)
	if err != nil {
		t.Fatalf("createStoragePool nfs: %v", err)
	}
	if nfs.Id == "" || nfs.State != "Up" || nfs.Scope != "CLUSTER" || nfs.Type != "NetworkFilesystem" || nfs.Disksizetotal != 2*tib ||
		nfs.Clusterid != cl.Id || nfs.Clustername != "sc1" || nfs.Podid != podID || nfs.Zonename != "zone-storage" ||
		nfs.Ipaddress != "10.0.0.9" || nfs.Path != "/export/primary" || nfs.Tags != "ssd,fast" || nfs.Hypervisor != "Simulator" {
		t.Fatalf("createStoragePool nfs = %+v", nfs)
	}
	// Zone-wide RBD (Ceph) with credentials in the URL; the backend's size.
	pp = cs.Pool.NewCreateStoragePoolParams("ceph1", "rbd://admin:s3cr3t@mon1.example.com/rbdpool", zoneID)
	pp.SetScope("zone")
	pp.SetHypervisor("Simulator")
	rbd, err := cs.Pool.CreateStoragePool(pp)
	if err != nil {
		t.Fatalf("createStoragePool rbd: %v", err)
	}
	if rbd.Scope != "ZONE" || rbd.Type != "RBD" || rbd.Clusterid != "" || rbd.Disksizetotal <= 0 || rbd.State != "Up" {
		t.Fatalf("createStoragePool rbd = %+v", rbd)
	}
	var rbdRow models.StoragePool
	if err := s.DB.NewSelect().Model(&rbdRow).Where("uuid = ?", rbd.Id).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(rbdRow.URL, "s3cr3t") || strings.Contains(rbdRow.UserInfo, "s3cr3t") || rbdRow.UserInfo == "" {
		t.Errorf("RBD secret stored in clear: url %q userinfo %q", rbdRow.URL, rbdRow.UserInfo)
	}

	// The seed's rules, each a clear refusal that writes nothing.
	for name, tc := range map[string]struct {
		url, scope, hv string
		code           int
		says           string
	}{
		"zone-wide for Hyper-V":   {"smb://10.0.0.5/share", "zone", "Hyperv", 431, "KVM and VMware only"},
		"zone-wide RBD on VMware": {"rbd://mon1/pool", "zone", "VMware", 431, "RBD primary storage is supported for KVM only"},
		"SMB on KVM":              {"smb://10.0.0.5/share", "zone", "KVM", 431, "SMB primary storage is supported for Hyperv only"},
		"zone-wide RBD on KVM":    {"rbd://mon1/pool", "zone", "KVM", 431, "add a host before its primary storage"},
		"unknown scheme":          {"ftp://x/y", "zone", "Simulator", 431, "unknown scheme"},
		"NFS without a path":      {"nfs://10.0.0.9", "zone", "Simulator", 431, "no path"},
	} {
		p := cs.Pool.NewCreateStoragePoolParams("bad-"+strings.ReplaceAll(name, " ", "-"), tc.url, zoneID)
		p.SetScope(tc.scope)
		p.SetHypervisor(tc.hv)
		_, err := cs.Pool.CreateStoragePool(p)
		hostWantErr(t, name, err, tc.code, tc.says)
	}
	pp = cs.Pool.NewCreateStoragePoolParams("nfs1", "nfs://10.0.0.10/other", zoneID)
	pp.SetPodid(podID)
	pp.SetClusterid(cl.Id)
	_, err = cs.Pool.CreateStoragePool(pp)
	hostWantErr(t, "duplicate name", err, 431, "already exists")
	// The driver fails: the job ends with its reason and leaves no row.
	hostSim(t, s, "name", "CreatePool", "count", "1", "mode", "invalid", "message", "disk array offline")
	pp = cs.Pool.NewCreateStoragePoolParams("nfs-bad", "nfs://10.0.0.11/export", zoneID)
	pp.SetPodid(podID)
	pp.SetClusterid(cl.Id)
	_, err = cs.Pool.CreateStoragePool(pp)
	hostWantErr(t, "createStoragePool with a failing driver", err, 431, "disk array offline")
	if n := hostCount(t, s, (*models.StoragePool)(nil), ""); n != 2 {
		t.Fatalf("%d pools after refusals, want 2", n)
	}

	// Lists and capacity.
	lp, err := cs.Pool.ListStoragePools(cs.Pool.NewListStoragePoolsParams())
	if err != nil || lp.Count != 2 {
		t.Fatalf("listStoragePools: %v %+v", err, lp)
	}
	lpp := cs.Pool.NewListStoragePoolsParams()
	lpp.SetClusterid(cl.Id)
	if lp, err = cs.Pool.ListStoragePools(lpp); err != nil || lp.Count != 1 || lp.StoragePools[0].Id != nfs.Id {
		t.Fatalf("listStoragePools clusterid: %v %+v", err, lp)
	}
	lpp = cs.Pool.NewListStoragePoolsParams()
	lpp.SetScope("ZONE")
	if lp, err = cs.Pool.ListStoragePools(lpp); err != nil || lp.Count != 1 || lp.StoragePools[0].Id != rbd.Id {
		t.Fatalf("listStoragePools scope=ZONE: %v %+v", err, lp)
	}
	inZone := func(p *cloudstack.ListCapacityParams) { p.SetZoneid(zoneID) }
	wantStorage := 2*tib + rbd.Disksizetotal
	for _, typ := range []int{2, 3} {
		if tot, _ := hostCapacity(t, cs, typ, inZone); tot != wantStorage {
			t.Errorf("capacity type %d = %d, want %d", typ, tot, wantStorage)
		}
	}
	if tot, _ := hostCapacity(t, cs, 2, func(p *cloudstack.ListCapacityParams) { p.SetClusterid(cl.Id) }); tot != 2*tib {
		t.Errorf("storage capacity of the cluster %d, want %d", tot, 2*tib)
	}

	// updateStoragePool: tags, disable, size.
	up := cs.Pool.NewUpdateStoragePoolParams(nfs.Id)
	up.SetTags([]string{"gold"})
	up.SetEnabled(false)
	up.SetCapacitybytes(3 * tib)
	upd, err := cs.Pool.UpdateStoragePool(up)
	if err != nil || upd.Id != nfs.Id || upd.Tags != "gold" || upd.State != "Disabled" || upd.Disksizetotal != 3*tib {
		t.Fatalf("updateStoragePool: %v %+v", err, upd)
	}
	if tot, _ := hostCapacity(t, cs, 2, inZone); tot != rbd.Disksizetotal {
		t.Errorf("storage capacity with nfs1 disabled %d, want %d", tot, rbd.Disksizetotal)
	}
	up = cs.Pool.NewUpdateStoragePoolParams(nfs.Id)
	up.SetEnabled(true)
	if _, err := cs.Pool.UpdateStoragePool(up); err != nil {
		t.Fatal(err)
	}
	wantStorage = 3*tib + rbd.Disksizetotal

	// Maintenance (async).
	em, err := cs.StoragePool.EnableStorageMaintenance(cs.StoragePool.NewEnableStorageMaintenanceParams(nfs.Id))
	if err != nil || em.State != "Maintenance" {
		t.Fatalf("enableStorageMaintenance: %v %+v", err, em)
	}
	if tot, _ := hostCapacity(t, cs, 2, inZone); tot != rbd.Disksizetotal {
		t.Errorf("storage capacity with nfs1 in maintenance %d, want %d", tot, rbd.Disksizetotal)
	}
	cm, err := cs.StoragePool.CancelStorageMaintenance(cs.StoragePool.NewCancelStorageMaintenanceParams(nfs.Id))
	if err != nil || cm.State != "Up" {
		t.Fatalf("cancelStorageMaintenance: %v %+v", err, cm)
	}
	if tot, _ := hostCapacity(t, cs, 2, inZone); tot != wantStorage {
		t.Errorf("storage capacity after maintenance %d, want %d", tot, wantStorage)
	}

	// A cluster with primary storage is not deleted; a pool with volumes
	// neither.
	_, err = cs.Cluster.DeleteCluster(cs.Cluster.NewDeleteClusterParams(cl.Id))
	hostWantErr(t, "deleteCluster with hosts and a pool", err, 536, "1 primary storage pool(s)")
	var nfsRow models.StoragePool
	if err := s.DB.NewSelect().Model(&nfsRow).Where("uuid = ?", nfs.Id).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	vol := &models.Volume{UUID: models.NewUUID(), Name: "ROOT-1", VolumeType: models.VolumeRoot, State: models.VolumeReady,
		Size: 1 << 30, PoolID: nfsRow.ID, ZoneID: nfsRow.ZoneID, AccountID: 1, DomainID: 1, Created: models.Now()}
	if _, err := s.DB.NewInsert().Model(vol).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = cs.Pool.DeleteStoragePool(cs.Pool.NewDeleteStoragePoolParams(nfs.Id))
	hostWantErr(t, "deleteStoragePool with a volume", err, 536, "1 volume(s)")
	if _, err := s.DB.NewDelete().Model(vol).WherePK().ForceDelete().Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Pool.DeleteStoragePool(cs.Pool.NewDeleteStoragePoolParams(nfs.Id)); err != nil {
		t.Fatalf("deleteStoragePool: %v", err)
	}
	if n := hostCount(t, s, (*models.Capacity)(nil), "host_id = ? AND capacity_type IN (2, 3)", nfsRow.ID); n != 0 {
		t.Errorf("deleted pool kept %d capacity rows", n)
	}
	if tot, _ := hostCapacity(t, cs, 2, inZone); tot != rbd.Disksizetotal {
		t.Errorf("storage capacity after deleteStoragePool %d, want %d", tot, rbd.Disksizetotal)
	}

	// Secondary storage: an NFS store (a directory here) per zone.
	dir := t.TempDir()
	ip := cs.ImageStore.NewAddImageStoreParams("NFS")
	ip.SetName("sec1")
	ip.SetUrl("file://" + dir)
	ip.SetZoneid(zoneID)
	st, err := cs.ImageStore.AddImageStore(ip)
	if err != nil {
		t.Fatalf("addImageStore: %v", err)
	}
	if st.Id == "" || st.Name != "sec1" || st.Providername != "NFS" || st.Scope != "ZONE" || st.Zoneid != zoneID || st.Disksizetotal <= 0 {
		t.Fatalf("addImageStore = %+v", st)
	}
	li, err := cs.ImageStore.ListImageStores(cs.ImageStore.NewListImageStoresParams())
	if err != nil || li.Count != 1 || li.ImageStores[0].Id != st.Id {
		t.Fatalf("listImageStores: %v %+v", err, li)
	}
	if tot, _ := hostCapacity(t, cs, 6, inZone); tot != st.Disksizetotal {
		t.Errorf("secondary storage capacity %d, want %d", tot, st.Disksizetotal)
	}
	s3 := cs.ImageStore.NewAddImageStoreParams("S3")
	s3.SetName("s3")
	s3.SetDetails(map[string]string{"bucket": "templates"})
	_, err = cs.ImageStore.AddImageStore(s3)
	hostWantErr(t, "addImageStore S3 without keys", err, 431, "accesskey", "secretkey", "endpoint")
	s3.SetDetails(map[string]string{"bucket": "templates", "endpoint": "s3.example.com", "accesskey": "AK", "secretkey": "SK"})
	_, err = cs.ImageStore.AddImageStore(s3)
	hostWantErr(t, "addImageStore S3 beside NFS", err, 431, "heterogeneous")
	bad := cs.ImageStore.NewAddImageStoreParams("NFS")
	bad.SetName("sec-bad")
	bad.SetUrl("nfs://10.9.9.9/missing")
	bad.SetZoneid(zoneID)
	_, err = cs.ImageStore.AddImageStore(bad)
	if err == nil {
		t.Fatalf("addImageStore of an export that is not there succeeded")
	}
	if n := hostCount(t, s, (*models.ImageStore)(nil), ""); n != 1 {
		t.Fatalf("%d image stores after refusals, want 1", n)
	}

	// Staging store for object storage.
	sp := cs.ImageStore.NewCreateSecondaryStagingStoreParams("file://" + t.TempDir())
	sp.SetZoneid(zoneID)
	stg, err := cs.ImageStore.CreateSecondaryStagingStore(sp)
	if err != nil || stg.Id == "" || stg.Providername != "NFS" {
		t.Fatalf("createSecondaryStagingStore: %v %+v", err, stg)
	}
	ls, err := cs.ImageStore.ListSecondaryStagingStores(cs.ImageStore.NewListSecondaryStagingStoresParams())
	if err != nil || ls.Count != 1 || ls.SecondaryStagingStores[0].Id != stg.Id {
		t.Fatalf("listSecondaryStagingStores: %v %+v", err, ls)
	}

	// A store holding a template is not deleted.
	var stRow models.ImageStore
	if err := s.DB.NewSelect().Model(&stRow).Where("uuid = ?", st.Id).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	ref := &models.TemplateStoreRef{StoreID: stRow.ID, TemplateID: 1, ZoneID: stRow.ZoneID, StoreRole: "Image",
		DownloadState: "DOWNLOADED", State: "Ready", Created: models.Now()}
	if _, err := s.DB.NewInsert().Model(ref).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = cs.ImageStore.DeleteImageStore(cs.ImageStore.NewDeleteImageStoreParams(st.Id))
	hostWantErr(t, "deleteImageStore with a template", err, 536, "template")
	if _, err := s.DB.NewDelete().Model(ref).WherePK().Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.ImageStore.DeleteImageStore(cs.ImageStore.NewDeleteImageStoreParams(st.Id)); err != nil {
		t.Fatalf("deleteImageStore: %v", err)
	}
	// With no NFS store left, S3 is refused only for want of a driver.
	_, err = cs.ImageStore.AddImageStore(s3)
	hostWantErr(t, "addImageStore S3", err, 432, "S3 is not supported yet")
	if tot, _ := hostCapacity(t, cs, 6, inZone); tot != 0 {
		t.Errorf("secondary storage capacity after delete %d", tot)
	}
}
