package api

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/uptrace/bun"
	"go.temporal.io/api/serviceerror"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/workflows"
)

func init() {
	Register(
		&Command{
			Name: "createVolume", Description: "Creates a data disk: from a disk offering (or a size with a custom offering), it stays Allocated until first attached; from a snapshot, it is created on a pool from the backup",
			Access: AccessAllWrite, Async: true,
			Params: []Param{
				{Name: "name", Type: TString, Description: "the name of the volume"},
				{Name: "diskofferingid", Type: TUUID, Description: "the disk offering; needed unless snapshotid is given"},
				{Name: "size", Type: TLong, Description: "the size in GB, for a custom disk offering (or to grow a volume made from a snapshot)"},
				{Name: "zoneid", Type: TUUID, Description: "the zone; needed unless snapshotid is given"},
				{Name: "snapshotid", Type: TUUID, Description: "create the volume from this snapshot"},
				{Name: "virtualmachineid", Type: TUUID, Description: "attach the new volume to this VM"},
				{Name: "account", Type: TString, Description: "the owner account; needs domainid"},
				{Name: "domainid", Type: TUUID, Description: "the owner's domain"},
				{Name: "displayvolume", Type: TBoolean, Description: "whether users see the volume (admins only)"},
				{Name: "miniops", Type: TLong, Description: "minimum IOPS, for offerings with custom IOPS"},
				{Name: "maxiops", Type: TLong, Description: "maximum IOPS, for offerings with custom IOPS"},
				{Name: "projectid", Type: TUUID, Description: "projects are not supported yet"},
			},
			ResponseName: "volume", Response: volumeFields, Handler: createVolume,
		},
		&Command{
			Name: "attachVolume", Description: "Attaches a data disk to a Running or Stopped VM; a volume without a pool is created first on a pool the VM reaches",
			Access: AccessAllWrite, Async: true,
			Params: []Param{
				{Name: "id", Type: TUUID, Required: true, Description: "the volume"},
				{Name: "virtualmachineid", Type: TUUID, Required: true, Description: "the VM"},
				{Name: "deviceid", Type: TLong, Description: "the device id (1 and up; 0 is the root disk); the first free one by default"},
			},
			ResponseName: "volume", Response: volumeFields, Handler: attachVolumeCmd,
		},
		&Command{
			Name: "detachVolume", Description: "Detaches a data disk from its VM",
			Access: AccessAllWrite, Async: true,
			Params: []Param{
				{Name: "id", Type: TUUID, Description: "the volume"},
				{Name: "virtualmachineid", Type: TUUID, Description: "the VM, with deviceid, instead of id"},
				{Name: "deviceid", Type: TLong, Description: "the device id on virtualmachineid"},
			},
			ResponseName: "volume", Response: volumeFields, Handler: detachVolumeCmd,
		},
		&Command{
			Name: "resizeVolume", Description: "Resizes a volume: to a new disk offering's size, or to size GB with a custom offering; shrinking needs shrinkok",
			Access: AccessAllWrite, Async: true,
			Params: []Param{
				{Name: "id", Type: TUUID, Required: true, Description: "the volume"},
				{Name: "size", Type: TLong, Description: "the new size in GB"},
				{Name: "diskofferingid", Type: TUUID, Description: "a new disk offering"},
				{Name: "shrinkok", Type: TBoolean, Description: "allow shrinking (data beyond the new size is lost)"},
				{Name: "miniops", Type: TLong, Description: "minimum IOPS"},
				{Name: "maxiops", Type: TLong, Description: "maximum IOPS"},
			},
			ResponseName: "volume", Response: volumeFields, Handler: resizeVolumeCmd,
		},
		&Command{
			Name: "migrateVolume", Description: "Moves a volume to another primary storage pool: a detached volume or one of a stopped VM is copied, then switched",
			Access: AccessRootAdmin, Async: true,
			Params: []Param{
				{Name: "volumeid", Type: TUUID, Required: true, Description: "the volume"},
				{Name: "storageid", Type: TUUID, Required: true, Description: "the target pool"},
				{Name: "livemigrate", Type: TBoolean, Description: "move the disk of a running VM (needs a driver that can)"},
				{Name: "newdiskofferingid", Type: TUUID, Description: "changing the offering while migrating is not supported yet"},
			},
			ResponseName: "volume", Response: volumeFields, Handler: migrateVolumeCmd,
		},
		&Command{
			Name: "deleteVolume", Description: "Deletes a detached data disk: removed from its pool, its space released",
			Access:       AccessAllWrite,
			Params:       []Param{{Name: "id", Type: TUUID, Required: true, Description: "the volume"}},
			ResponseName: "success", Response: successFields, Handler: deleteVolumeCmd,
		},
		&Command{
			Name: "listVolumes", Description: "Lists volumes", Access: AccessAll,
			Params: append(OwnerListParams(),
				Param{Name: "id", Type: TUUID, Description: "the volume"},
				Param{Name: "ids", Type: TList, Of: TUUID, Description: "several volumes"},
				Param{Name: "name", Type: TString, Description: "volumes of this name"},
				Param{Name: "virtualmachineid", Type: TUUID, Description: "the volumes of this VM"},
				Param{Name: "type", Type: TString, Description: "ROOT or DATADISK"},
				Param{Name: "zoneid", Type: TUUID, Description: "volumes of this zone"},
				Param{Name: "podid", Type: TUUID, Description: "volumes of this pod (admins)"},
				Param{Name: "clusterid", Type: TUUID, Description: "volumes on pools of this cluster (admins)"},
				Param{Name: "storageid", Type: TUUID, Description: "volumes on this pool (admins)"},
				Param{Name: "hostid", Type: TUUID, Description: "volumes of VMs on this host (admins)"},
				Param{Name: "diskofferingid", Type: TUUID, Description: "volumes of this disk offering"},
				Param{Name: "state", Type: TString, Description: "volumes in this state"},
				Param{Name: "displayvolume", Type: TBoolean, Description: "volumes shown (or hidden) to users (admins)"},
				Param{Name: "listsystemvms", Type: TBoolean, Description: "include system VMs' volumes (root admins)"},
			),
			ResponseName: "volume", Response: volumeFields, Handler: listVolumes,
		},
	)
	RegisterRenderer("Volume", func(ctx context.Context, s *Server, id string) (any, error) {
		rows, err := s.volumeRows(ctx, s.volumeQuery(ctx).Where("volume.uuid = ?", id).WhereAllWithDeleted())
		if err != nil {
			return nil, err
		}
		if len(rows) == 0 {
			return nil, models.NotFound(errNoRow, "volume "+id)
		}
		views, err := s.volumeViews(ctx, rows, true)
		if err != nil {
			return nil, err
		}
		return views[0], nil
	})
}

var errNoRow = errors.New("no row")

var volumeFields = []Field{
	{"id", "string", "the ID of the volume"}, {"name", "string", "its name"}, {"type", "string", "ROOT or DATADISK"},
	{"state", "string", "Allocated, Creating, Ready, Resizing, Migrating, Snapshotting, Destroy..."},
	{"size", "long", "the size in bytes"}, {"zoneid", "string", "its zone"}, {"zonename", "string", "the zone's name"},
	{"virtualmachineid", "string", "the VM it is attached to"}, {"vmname", "string", "that VM's name"},
	{"vmdisplayname", "string", "that VM's display name"}, {"vmstate", "string", "that VM's state"},
	{"deviceid", "long", "the device id on the VM (0 is the root disk)"},
	{"diskofferingid", "string", "its disk offering"}, {"diskofferingname", "string", "the offering's name"},
	{"storage", "string", "the primary storage pool holding it (admins)"}, {"storageid", "string", "that pool's ID (admins)"},
	{"storagetype", "string", "shared or local"}, {"path", "string", "its path on the pool (admins)"},
	{"hypervisor", "string", "the hypervisor type of its storage"}, {"provisioningtype", "string", "thin, sparse or fat"},
	{"created", "date", "when it was created"}, {"attached", "date", "when it was attached"},
	{"account", "string", "the owner"}, {"domain", "string", "the owner's domain"}, {"domainid", "string", "its ID"},
	{"templateid", "string", "the template of a root disk"}, {"destroyed", "boolean", "whether it is destroyed"},
}

// VolumeView is a volume as listVolumes shows it (the SDK's Volume).
type VolumeView struct {
	ID                         string `json:"id"`
	Name                       string `json:"name"`
	Type                       string `json:"type"`
	State                      string `json:"state"`
	Size                       int64  `json:"size"`
	VirtualSize                int64  `json:"virtualsize,omitempty"`
	PhysicalSize               int64  `json:"physicalsize,omitempty"`
	ZoneID                     string `json:"zoneid"`
	ZoneName                   string `json:"zonename"`
	PodID                      string `json:"podid,omitempty"`
	PodName                    string `json:"podname,omitempty"`
	ClusterID                  string `json:"clusterid,omitempty"`
	ClusterName                string `json:"clustername,omitempty"`
	Account                    string `json:"account"`
	Domain                     string `json:"domain"`
	DomainID                   string `json:"domainid"`
	Created                    string `json:"created"`
	Attached                   string `json:"attached,omitempty"`
	VirtualMachineID           string `json:"virtualmachineid,omitempty"`
	VMName                     string `json:"vmname,omitempty"`
	VMDisplayName              string `json:"vmdisplayname,omitempty"`
	VMState                    string `json:"vmstate,omitempty"`
	VMType                     string `json:"vmtype,omitempty"`
	DeviceID                   *int64 `json:"deviceid,omitempty"`
	DiskOfferingID             string `json:"diskofferingid,omitempty"`
	DiskOfferingName           string `json:"diskofferingname,omitempty"`
	DiskOfferingDisplayText    string `json:"diskofferingdisplaytext,omitempty"`
	ServiceOfferingID          string `json:"serviceofferingid,omitempty"`
	ServiceOfferingName        string `json:"serviceofferingname,omitempty"`
	ServiceOfferingDisplayText string `json:"serviceofferingdisplaytext,omitempty"`
	TemplateID                 string `json:"templateid,omitempty"`
	TemplateName               string `json:"templatename,omitempty"`
	TemplateDisplayText        string `json:"templatedisplaytext,omitempty"`
	StorageID                  string `json:"storageid,omitempty"`
	Storage                    string `json:"storage,omitempty"`
	StorageType                string `json:"storagetype"`
	Path                       string `json:"path,omitempty"`
	ChainInfo                  string `json:"chaininfo,omitempty"`
	Hypervisor                 string `json:"hypervisor"`
	ProvisioningType           string `json:"provisioningtype,omitempty"`
	MinIOPS                    int64  `json:"miniops,omitempty"`
	MaxIOPS                    int64  `json:"maxiops,omitempty"`
	Destroyed                  bool   `json:"destroyed"`
	DisplayVolume              bool   `json:"displayvolume"`
	IsExtractable              bool   `json:"isextractable"`
	QuiesceVM                  bool   `json:"quiescevm"`
	SupportsStorageSnapshot    bool   `json:"supportsstoragesnapshot"`
	HasAnnotations             bool   `json:"hasannotations"`
	Tags                       []any  `json:"tags"`
}

// volumeRow is a volume joined with what its view names.
type volumeRow struct {
	models.Volume  `bun:",extend"`
	VMUUID         string `bun:"vm_uuid"`
	VMName         string `bun:"vm_name"`
	VMDisplayName  string `bun:"vm_display_name"`
	VMState        string `bun:"vm_state"`
	VMType         string `bun:"vm_type"`
	VMHypervisor   string `bun:"vm_hypervisor"`
	VMServiceOffer int64  `bun:"vm_service_offering_id"`
	PoolUUID       string `bun:"pool_uuid"`
	PoolName       string `bun:"pool_name"`
	PoolScope      string `bun:"pool_scope"`
	PoolHypervisor string `bun:"pool_hypervisor"`
	PoolClusterID  int64  `bun:"pool_cluster_id"`
	OfferingUUID   string `bun:"off_uuid"`
	OfferingName   string `bun:"off_name"`
	OfferingText   string `bun:"off_text"`
	OfferingLocal  bool   `bun:"off_local"`
	ZoneUUID       string `bun:"zone_uuid"`
	ZoneName       string `bun:"zone_name"`
	TemplateUUID   string `bun:"tmpl_uuid"`
	TemplateName   string `bun:"tmpl_name"`
	TemplateText   string `bun:"tmpl_text"`
}

func (s *Server) volumeQuery(ctx context.Context) *bun.SelectQuery {
	return s.DB.NewSelect().Model((*volumeRow)(nil)).
		ColumnExpr("volume.*").
		ColumnExpr("vm.uuid AS vm_uuid, vm.name AS vm_name, vm.display_name AS vm_display_name, vm.state AS vm_state, vm.type AS vm_type").
		ColumnExpr("vm.hypervisor_type AS vm_hypervisor, vm.service_offering_id AS vm_service_offering_id").
		ColumnExpr("sp.uuid AS pool_uuid, sp.name AS pool_name, sp.scope AS pool_scope, sp.hypervisor AS pool_hypervisor, sp.cluster_id AS pool_cluster_id").
		ColumnExpr("dof.uuid AS off_uuid, dof.name AS off_name, dof.display_text AS off_text, dof.use_local_storage AS off_local").
		ColumnExpr("z.uuid AS zone_uuid, z.name AS zone_name").
		ColumnExpr("t.uuid AS tmpl_uuid, t.name AS tmpl_name, t.display_text AS tmpl_text").
		Join("LEFT JOIN vm_instances AS vm ON vm.id = volume.instance_id").
		Join("LEFT JOIN storage_pools AS sp ON sp.id = volume.pool_id").
		Join("LEFT JOIN disk_offerings AS dof ON dof.id = volume.disk_offering_id").
		Join("LEFT JOIN zones AS z ON z.id = volume.zone_id").
		Join("LEFT JOIN vm_templates AS t ON t.id = volume.template_id")
}

func (s *Server) volumeRows(ctx context.Context, q *bun.SelectQuery) ([]volumeRow, error) {
	var rows []volumeRow
	if err := q.Order("volume.id ASC").Scan(ctx, &rows); err != nil {
		return nil, err
	}
	return rows, nil
}

// volumeViews renders volume rows; admin adds where they are stored.
func (s *Server) volumeViews(ctx context.Context, rows []volumeRow, admin bool) ([]VolumeView, error) {
	out := make([]VolumeView, len(rows))
	if len(rows) == 0 {
		return out, nil
	}
	var acctIDs, soIDs, podIDs, clusterIDs []int64
	for _, r := range rows {
		acctIDs = append(acctIDs, r.AccountID)
		if r.VMServiceOffer != 0 {
			soIDs = append(soIDs, r.VMServiceOffer)
		}
		if r.PodID != 0 {
			podIDs = append(podIDs, r.PodID)
		}
		if r.PoolClusterID != 0 {
			clusterIDs = append(clusterIDs, r.PoolClusterID)
		}
	}
	owners, err := loadOwners(ctx, s.DB, acctIDs)
	if err != nil {
		return nil, err
	}
	sos := map[int64]models.ServiceOffering{}
	if len(soIDs) > 0 {
		var list []models.ServiceOffering
		if err := s.DB.NewSelect().Model(&list).Where("id IN (?)", bun.In(soIDs)).WhereAllWithDeleted().Scan(ctx); err != nil {
			return nil, err
		}
		for _, o := range list {
			sos[o.ID] = o
		}
	}
	names := func(table string, ids []int64) (map[int64][2]string, error) {
		m := map[int64][2]string{}
		if len(ids) == 0 {
			return m, nil
		}
		var list []struct {
			ID   int64  `bun:"id"`
			UUID string `bun:"uuid"`
			Name string `bun:"name"`
		}
		if err := s.DB.NewSelect().TableExpr(table).Column("id", "uuid", "name").Where("id IN (?)", bun.In(ids)).Scan(ctx, &list); err != nil {
			return nil, err
		}
		for _, x := range list {
			m[x.ID] = [2]string{x.UUID, x.Name}
		}
		return m, nil
	}
	pods, err := names("pods", podIDs)
	if err != nil {
		return nil, err
	}
	clusters, err := names("clusters", clusterIDs)
	if err != nil {
		return nil, err
	}
	for i := range rows {
		r := &rows[i]
		v := VolumeView{
			ID: r.UUID, Name: r.Name, Type: r.VolumeType, State: r.State, Size: r.Size, VirtualSize: r.Size,
			ZoneID: r.ZoneUUID, ZoneName: r.ZoneName, Created: FormatTime(r.Created), Attached: FormatTime(r.Attached),
			DiskOfferingID: r.OfferingUUID, DiskOfferingName: r.OfferingName, DiskOfferingDisplayText: r.OfferingText,
			ProvisioningType: r.ProvisioningType, MinIOPS: r.MinIOPS, MaxIOPS: r.MaxIOPS, DisplayVolume: r.DisplayVolume,
			Destroyed: r.State == models.VolumeDestroy || r.State == models.VolumeExpunged, ChainInfo: r.ChainInfo,
			StorageType: "shared", Tags: []any{}, Hypervisor: "None",
			TemplateID: r.TemplateUUID, TemplateName: r.TemplateName, TemplateDisplayText: r.TemplateText,
		}
		if r.OfferingLocal || r.PoolScope == models.ScopeHost {
			v.StorageType = "local"
		}
		switch {
		case r.PoolHypervisor != "":
			v.Hypervisor = r.PoolHypervisor
		case r.VMHypervisor != "":
			v.Hypervisor = r.VMHypervisor
		}
		if o, ok := owners[r.AccountID]; ok {
			v.Account, v.Domain, v.DomainID = o.Account.Name, o.Domain.Name, o.Domain.UUID
		}
		if r.InstanceID != 0 {
			dev := r.DeviceID
			v.VirtualMachineID, v.VMName, v.VMDisplayName, v.VMState, v.VMType, v.DeviceID =
				r.VMUUID, r.VMName, r.VMDisplayName, r.VMState, r.VMType, &dev
			if v.VMDisplayName == "" {
				v.VMDisplayName = r.VMName
			}
			if so, ok := sos[r.VMServiceOffer]; ok && r.VolumeType == models.VolumeRoot {
				v.ServiceOfferingID, v.ServiceOfferingName, v.ServiceOfferingDisplayText = so.UUID, so.Name, so.DisplayText
			}
		}
		if r.State == models.VolumeReady || r.State == models.VolumeSnapshotting {
			v.PhysicalSize = r.Size
		}
		if admin {
			v.StorageID, v.Storage, v.Path = r.PoolUUID, r.PoolName, r.Path
			if p, ok := pods[r.PodID]; ok {
				v.PodID, v.PodName = p[0], p[1]
			}
			if c, ok := clusters[r.PoolClusterID]; ok {
				v.ClusterID, v.ClusterName = c[0], c[1]
			}
		}
		out[i] = v
	}
	return out, nil
}

// ownsOrAdmins tells whether the caller may act on a resource of an
// account: its own, or one it administers.
func (c *Call) ownsOrAdmins(accountID int64) (bool, error) {
	if accountID == c.Caller.Account.ID {
		return true, nil
	}
	if !c.Caller.IsAdmin() {
		return false, nil
	}
	owners, err := loadOwners(c.Ctx, c.S.DB, []int64{accountID})
	if err != nil {
		return false, err
	}
	o, ok := owners[accountID]
	return ok && c.CanAdminAccount(&o.Account, &o.Domain), nil
}

// volumeForUse loads a live volume the caller may act on (431 otherwise,
// as if it did not exist).
func (c *Call) volumeForUse(id string) (*models.Volume, error) {
	var v models.Volume
	if err := c.S.DB.NewSelect().Model(&v).Where("uuid = ?", id).Limit(1).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, cserr.Param("Unable to find volume by id %s", id)
		}
		return nil, err
	}
	ok, err := c.ownsOrAdmins(v.AccountID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, cserr.Param("Unable to find volume by id %s", id)
	}
	return &v, nil
}

// vmForUse loads a live user VM the caller may act on (431 otherwise).
func (c *Call) vmForUse(id string) (*models.VMInstance, error) {
	var vm models.VMInstance
	if err := c.S.DB.NewSelect().Model(&vm).Where("uuid = ?", id).Limit(1).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, cserr.Param("Unable to find virtual machine by id %s", id)
		}
		return nil, err
	}
	ok, err := c.ownsOrAdmins(vm.AccountID)
	if err != nil {
		return nil, err
	}
	if !ok || vm.Type != models.VMTypeUser {
		return nil, cserr.Param("Unable to find virtual machine by id %s", id)
	}
	return &vm, nil
}

// resourceOwner is the account a new resource belongs to: the caller's, or
// account+domainid for admins over it.
func (c *Call) resourceOwner() (*owner, error) {
	if !c.Has("account") {
		if c.Has("domainid") && c.Str("domainid") != c.Caller.Domain.UUID {
			return nil, cserr.Param("domainid needs account")
		}
		return &owner{Account: c.Caller.Account, Domain: c.Caller.Domain, Role: c.Caller.Role}, nil
	}
	return c.accountRef()
}

// checkErr turns an activity check's Temporal error into the API's error.
func checkErr(err error) error {
	if err == nil {
		return nil
	}
	return cserr.As(err)
}

// diskOfferingForUse loads an active disk offering the caller may use in a
// zone.
func (c *Call) diskOfferingForUse(id string, zoneID int64) (*models.DiskOffering, error) {
	o, err := c.diskOfferingByUUID(id)
	if err != nil {
		return nil, err
	}
	if o.State != models.OfferingActive {
		return nil, cserr.Param("Disk offering %s is not active", o.Name)
	}
	paths, err := c.domainPaths([]string{o.DomainIDs})
	if err != nil {
		return nil, err
	}
	if !c.offeringVisible(o.DomainIDs, paths) {
		return nil, cserr.Param("Unable to find disk offering by id %s", id)
	}
	if zs := idList(o.ZoneIDs); len(zs) > 0 && zoneID != 0 {
		found := false
		for _, z := range zs {
			found = found || z == zoneID
		}
		if !found {
			return nil, cserr.Param("Disk offering %s is not available in this zone", o.Name)
		}
	}
	return o, nil
}

// gib reads a size parameter in GB as bytes.
func (c *Call) gib(name string) (int64, error) {
	n := c.Int(name, 0)
	if n <= 0 || n > 1<<20 {
		return 0, cserr.Param("%s must be a number of GB from 1 to %d", name, 1<<20)
	}
	return n * models.GiB, nil
}

func createVolume(c *Call) (any, error) {
	if c.Has("projectid") {
		return nil, cserr.Param("parameter projectid is not supported yet")
	}
	o, err := c.resourceOwner()
	if err != nil {
		return nil, err
	}
	now := models.Now()
	v := &models.Volume{UUID: models.NewUUID(), Name: strings.TrimSpace(c.Str("name")), VolumeType: models.VolumeDataDisk,
		State: models.VolumeAllocated, AccountID: o.Account.ID, DomainID: o.Account.DomainID, DisplayVolume: true,
		ProvisioningType: models.ProvisioningThin, Created: now, Updated: now}
	if b := c.BoolPtr("displayvolume"); b != nil {
		if !c.Caller.IsAdmin() {
			return nil, cserr.Param("only admins may set displayvolume")
		}
		v.DisplayVolume = *b
	}
	in := workflows.CreateVolumeInput{VolumeUUID: v.UUID, Actor: actorOf(c.Caller)}
	var zone *models.Zone
	switch {
	case c.Has("snapshotid"):
		var s models.Snapshot
		if err := c.S.DB.NewSelect().Model(&s).Where("uuid = ?", c.Str("snapshotid")).Limit(1).Scan(c.Ctx); err != nil {
			if isNoRows(err) {
				return nil, cserr.Param("Unable to find snapshot by id %s", c.Str("snapshotid"))
			}
			return nil, err
		}
		if ok, err := c.ownsOrAdmins(s.AccountID); err != nil {
			return nil, err
		} else if !ok {
			return nil, cserr.Param("Unable to find snapshot by id %s", c.Str("snapshotid"))
		}
		if s.State != models.SnapshotBackedUp {
			return nil, cserr.Param("Snapshot %s is %s; volumes are made from BackedUp snapshots", s.Name, s.State)
		}
		if zone, err = c.zoneByID(s.ZoneID); err != nil {
			return nil, err
		}
		v.Size, v.DiskOfferingID = s.Size, s.DiskOfferingID
		if c.Has("size") {
			size, err := c.gib("size")
			if err != nil {
				return nil, err
			}
			if size < s.Size {
				return nil, cserr.Param("size %d GB is smaller than the snapshot's %d GB", size/models.GiB, (s.Size+models.GiB-1)/models.GiB)
			}
			v.Size = size
		}
		src, err := c.snapshotVolume(&s)
		if err != nil {
			return nil, err
		}
		in.SnapshotUUID, in.HypervisorType = s.UUID, s.HypervisorType
		if src.Removed.IsZero() {
			in.PreferPoolID = src.PoolID
		}
		if v.Name == "" {
			v.Name = s.Name
		}
		if c.Has("diskofferingid") {
			off, err := c.diskOfferingForUse(c.Str("diskofferingid"), zone.ID)
			if err != nil {
				return nil, err
			}
			v.DiskOfferingID = off.ID
		}
	default:
		if !c.Has("zoneid") {
			return nil, cserr.Param("Unable to execute API command createvolume due to missing parameter zoneid")
		}
		if !c.Has("diskofferingid") {
			return nil, cserr.Param("Either diskofferingid or snapshotid must be given")
		}
		if zone, err = c.zoneByUUID(c.Str("zoneid")); err != nil {
			return nil, err
		}
		off, err := c.diskOfferingForUse(c.Str("diskofferingid"), zone.ID)
		if err != nil {
			return nil, err
		}
		v.DiskOfferingID, v.ProvisioningType = off.ID, off.ProvisioningType
		if v.ProvisioningType == "" {
			v.ProvisioningType = models.ProvisioningThin
		}
		switch {
		case off.Customized && !c.Has("size"):
			return nil, cserr.Param("Disk offering %s has a custom size: give size (GB)", off.Name)
		case off.Customized:
			if v.Size, err = c.gib("size"); err != nil {
				return nil, err
			}
		case c.Has("size") && c.Int("size", 0)*models.GiB != off.DiskSize:
			return nil, cserr.Param("Disk offering %s has a fixed size of %d GB; size is for custom offerings", off.Name, off.DiskSize/models.GiB)
		default:
			v.Size = off.DiskSize
		}
		if off.CustomizedIOPS {
			v.MinIOPS, v.MaxIOPS = c.Int("miniops", 0), c.Int("maxiops", 0)
		} else {
			v.MinIOPS, v.MaxIOPS = off.MinIOPS, off.MaxIOPS
		}
	}
	if zone.AllocationState != models.AllocationEnabled && !c.Caller.IsRootAdmin() {
		return nil, cserr.Param("Zone %s is disabled", zone.Name)
	}
	if zone.DomainID != 0 && !c.Caller.IsRootAdmin() {
		if d, err := c.DomainByUUID(o.Domain.UUID); err != nil || !zoneServesDomain(c, zone, d) {
			return nil, cserr.Param("Zone %s is private to another domain", zone.Name)
		}
	}
	v.ZoneID = zone.ID
	if v.Name == "" {
		v.Name = "DATA-" + strings.SplitN(v.UUID, "-", 2)[0]
	}
	if c.Has("virtualmachineid") {
		vm, err := c.vmForUse(c.Str("virtualmachineid"))
		if err != nil {
			return nil, err
		}
		if err := checkErr(activities.CheckAttach(c.Ctx, c.S.DB, v, vm)); err != nil {
			return nil, err
		}
		in.VMUUID = vm.UUID
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := models.ReserveResources(ctx, tx, v.AccountID, map[string]int64{models.ResourceVolume: 1, models.ResourcePrimaryStorage: v.Size}); err != nil {
			return err
		}
		_, err := tx.NewInsert().Model(v).Exec(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	resp, err := c.StartJob(JobSpec{Workflow: workflows.CreateVolume, Input: in, InstanceType: "Volume", InstanceUUID: v.UUID,
		ResponseID: v.UUID, Summary: "create volume " + v.Name})
	if err != nil {
		// Nothing will create it: take the row and its counts back.
		_ = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			if _, err := tx.NewDelete().Model(v).WherePK().ForceDelete().Exec(ctx); err != nil {
				return err
			}
			return models.ReleaseResources(ctx, tx, v.AccountID, map[string]int64{models.ResourceVolume: 1, models.ResourcePrimaryStorage: v.Size})
		})
		return nil, err
	}
	return resp, nil
}

// zoneServesDomain tells whether a private zone serves domain d (its own
// domain or one below it).
func zoneServesDomain(c *Call, z *models.Zone, d *models.Domain) bool {
	var zd models.Domain
	if err := c.S.DB.NewSelect().Model(&zd).Where("id = ?", z.DomainID).Limit(1).Scan(c.Ctx); err != nil {
		return false
	}
	return InSubtree(d.Path, zd.Path)
}

// snapshotVolume loads a snapshot's volume, removed or not.
func (c *Call) snapshotVolume(s *models.Snapshot) (*models.Volume, error) {
	var v models.Volume
	if err := c.S.DB.NewSelect().Model(&v).Where("id = ?", s.VolumeID).WhereAllWithDeleted().Limit(1).Scan(c.Ctx); err != nil {
		return nil, models.NotFound(err, "volume of snapshot "+s.UUID)
	}
	return &v, nil
}

func attachVolumeCmd(c *Call) (any, error) {
	v, err := c.volumeForUse(c.Str("id"))
	if err != nil {
		return nil, err
	}
	vm, err := c.vmForUse(c.Str("virtualmachineid"))
	if err != nil {
		return nil, err
	}
	if err := checkErr(activities.CheckAttach(c.Ctx, c.S.DB, v, vm)); err != nil {
		return nil, err
	}
	if err := c.noVMSnapshots(vm.ID, "attach a volume"); err != nil {
		return nil, err
	}
	if err := checkErr(activities.CheckDeviceID(c.Ctx, c.S.DB, vm, c.Int("deviceid", 0))); err != nil {
		return nil, err
	}
	in := activities.VolumeAttachInput{VolumeUUID: v.UUID, VMUUID: vm.UUID, DeviceID: c.Int("deviceid", 0), Actor: actorOf(c.Caller)}
	return c.StartJob(JobSpec{Workflow: workflows.AttachVolume, Input: in, InstanceType: "Volume", InstanceUUID: v.UUID,
		ResponseID: v.UUID, Summary: "attach volume " + v.Name + " to " + vm.Name})
}

func detachVolumeCmd(c *Call) (any, error) {
	var v *models.Volume
	var err error
	switch {
	case c.Has("id"):
		if v, err = c.volumeForUse(c.Str("id")); err != nil {
			return nil, err
		}
	case c.Has("virtualmachineid") && c.Has("deviceid"):
		vm, err := c.vmForUse(c.Str("virtualmachineid"))
		if err != nil {
			return nil, err
		}
		var row models.Volume
		if err := c.S.DB.NewSelect().Model(&row).Where("instance_id = ? AND device_id = ?", vm.ID, c.Int("deviceid", 0)).Limit(1).Scan(c.Ctx); err != nil {
			if isNoRows(err) {
				return nil, cserr.Param("Virtual machine %s has no volume with device id %d", vm.Name, c.Int("deviceid", 0))
			}
			return nil, err
		}
		v = &row
	default:
		return nil, cserr.Param("Either id, or virtualmachineid and deviceid, must be given")
	}
	if v.InstanceID == 0 {
		return nil, cserr.Param("Volume %s is not attached to a virtual machine", v.Name)
	}
	var vm models.VMInstance
	if err := c.S.DB.NewSelect().Model(&vm).Where("id = ?", v.InstanceID).Limit(1).Scan(c.Ctx); err != nil {
		return nil, models.NotFound(err, "virtual machine")
	}
	if err := checkErr(activities.CheckDetach(v, &vm)); err != nil {
		return nil, err
	}
	if err := c.noVMSnapshots(vm.ID, "detach a volume"); err != nil {
		return nil, err
	}
	in := activities.VolumeAttachInput{VolumeUUID: v.UUID, VMUUID: vm.UUID, Actor: actorOf(c.Caller)}
	return c.StartJob(JobSpec{Workflow: workflows.DetachVolume, Input: in, InstanceType: "Volume", InstanceUUID: v.UUID,
		ResponseID: v.UUID, Summary: "detach volume " + v.Name + " from " + vm.Name})
}

func resizeVolumeCmd(c *Call) (any, error) {
	v, err := c.volumeForUse(c.Str("id"))
	if err != nil {
		return nil, err
	}
	in := activities.VolumeResizeInput{VolumeUUID: v.UUID, ShrinkOK: c.Bool("shrinkok", false), Actor: actorOf(c.Caller)}
	var cur *models.DiskOffering
	if v.DiskOfferingID != 0 {
		var o models.DiskOffering
		if err := c.S.DB.NewSelect().Model(&o).Where("id = ?", v.DiskOfferingID).WhereAllWithDeleted().Limit(1).Scan(c.Ctx); err == nil {
			cur = &o
		}
	}
	switch {
	case c.Has("diskofferingid"):
		off, err := c.diskOfferingForUse(c.Str("diskofferingid"), v.ZoneID)
		if err != nil {
			return nil, err
		}
		if cur != nil && cur.UseLocalStorage != off.UseLocalStorage {
			return nil, cserr.Param("Disk offering %s is for %s storage, the volume's for the other kind", off.Name, map[bool]string{true: "local", false: "shared"}[off.UseLocalStorage])
		}
		in.DiskOfferingID = off.ID
		if off.Customized {
			if in.NewSize, err = c.gib("size"); err != nil {
				return nil, err
			}
		} else {
			if c.Has("size") {
				return nil, cserr.Param("Disk offering %s has a fixed size; size is for custom offerings", off.Name)
			}
			in.NewSize = off.DiskSize
		}
	case c.Has("size"):
		if cur != nil && !cur.Customized && v.VolumeType == models.VolumeDataDisk {
			return nil, cserr.Param("Volume %s has the fixed-size disk offering %s: give a new diskofferingid", v.Name, cur.Name)
		}
		if in.NewSize, err = c.gib("size"); err != nil {
			return nil, err
		}
	default:
		return nil, cserr.Param("Either size or diskofferingid must be given")
	}
	if err := checkErr(activities.CheckResize(v, in.NewSize, in.ShrinkOK)); err != nil {
		return nil, err
	}
	if err := c.noVMSnapshots(v.InstanceID, "resize the volume"); err != nil {
		return nil, err
	}
	return c.StartJob(JobSpec{Workflow: workflows.ResizeVolume, Input: in, InstanceType: "Volume", InstanceUUID: v.UUID,
		ResponseID: v.UUID, Summary: "resize volume " + v.Name})
}

func migrateVolumeCmd(c *Call) (any, error) {
	if c.Has("newdiskofferingid") {
		return nil, cserr.Param("parameter newdiskofferingid is not supported yet")
	}
	v, err := c.volumeForUse(c.Str("volumeid"))
	if err != nil {
		return nil, err
	}
	dst, err := c.poolByUUID(c.Str("storageid"))
	if err != nil {
		return nil, err
	}
	live := c.Bool("livemigrate", false)
	if err := checkErr(activities.CheckMigrate(c.Ctx, c.S.DB, v, dst, live)); err != nil {
		return nil, err
	}
	if err := c.noVMSnapshots(v.InstanceID, "migrate the volume"); err != nil {
		return nil, err
	}
	in := activities.VolumeMigrateInput{VolumeUUID: v.UUID, PoolUUID: dst.UUID, Live: live, Actor: actorOf(c.Caller)}
	return c.StartJob(JobSpec{Workflow: workflows.MigrateVolume, Input: in, InstanceType: "Volume", InstanceUUID: v.UUID,
		ResponseID: v.UUID, Summary: "migrate volume " + v.Name + " to " + dst.Name})
}

// deleteVolumeTimeout bounds the synchronous deleteVolume.
const deleteVolumeTimeout = 2 * time.Minute

func deleteVolumeCmd(c *Call) (any, error) {
	v, err := c.volumeForUse(c.Str("id"))
	if err != nil {
		return nil, err
	}
	if v.State != models.VolumeDestroy {
		if err := checkErr(activities.CheckDelete(v)); err != nil {
			return nil, err
		}
	}
	var policies []string
	if err := c.S.DB.NewSelect().Model((*models.SnapshotPolicy)(nil)).Column("uuid").Where("volume_id = ?", v.ID).Scan(c.Ctx, &policies); err != nil {
		return nil, err
	}
	in := activities.VolumeRefInput{VolumeUUID: v.UUID, Actor: actorOf(c.Caller)}
	if _, err := c.RunJobSync(JobSpec{Workflow: workflows.DeleteVolume, Input: in, InstanceType: "Volume", InstanceUUID: v.UUID,
		ResponseID: v.UUID, Summary: "delete volume " + v.Name}, deleteVolumeTimeout); err != nil {
		return nil, err
	}
	// The job removed the policies; their schedules go now (a schedule
	// left behind removes itself on its next run).
	for _, id := range policies {
		if err := c.deletePolicySchedule(id); err != nil {
			c.S.Log.Warn("cannot delete a snapshot policy's schedule", "policy", id, "err", err)
		}
	}
	return Success{Success: true}, nil
}

// deletePolicySchedule deletes a policy's Temporal Schedule; one that is
// not there is success.
func (c *Call) deletePolicySchedule(policyUUID string) error {
	err := c.S.Temporal.ScheduleClient().GetHandle(c.Ctx, activities.SnapshotPolicyScheduleID(policyUUID)).Delete(c.Ctx)
	var nf *serviceerror.NotFound
	if err != nil && !errors.As(err, &nf) {
		return err
	}
	return nil
}

func listVolumes(c *Call) (any, error) {
	scope, err := c.Visibility()
	if err != nil {
		return nil, err
	}
	admin := c.Caller.IsAdmin()
	q := c.S.volumeQuery(c.Ctx).Apply(scope.Modifier("volume.account_id", "volume.domain_id"))
	q = c.Filtered(q, Filter{ID: "volume.uuid", Name: "volume.name", Keyword: []string{"volume.name"}})
	if ids := c.List("ids"); len(ids) > 0 {
		q = q.Where("volume.uuid IN (?)", bun.In(ids))
	}
	for _, f := range []struct{ param, col string }{
		{"virtualmachineid", "vm.uuid"}, {"zoneid", "z.uuid"}, {"diskofferingid", "dof.uuid"},
	} {
		if c.Has(f.param) {
			q = q.Where("? = ?", bun.Ident(f.col), c.Str(f.param))
		}
	}
	if c.Has("type") {
		q = q.Where("volume.volume_type = ?", strings.ToUpper(c.Str("type")))
	}
	if c.Has("state") {
		q = q.Where("LOWER(volume.state) = ?", strings.ToLower(c.Str("state")))
	}
	if admin {
		if c.Has("storageid") {
			q = q.Where("sp.uuid = ?", c.Str("storageid"))
		}
		if c.Has("clusterid") {
			q = q.Where("sp.cluster_id = (SELECT id FROM clusters WHERE uuid = ?)", c.Str("clusterid"))
		}
		if c.Has("podid") {
			q = q.Where("volume.pod_id = (SELECT id FROM pods WHERE uuid = ?)", c.Str("podid"))
		}
		if c.Has("hostid") {
			q = q.Where("vm.host_id = (SELECT id FROM hosts WHERE uuid = ?)", c.Str("hostid"))
		}
		if b := c.BoolPtr("displayvolume"); b != nil {
			q = q.Where("volume.display_volume = ?", *b)
		}
	} else {
		q = q.Where("volume.display_volume = ?", true)
	}
	if !(c.Caller.IsRootAdmin() && c.Bool("listsystemvms", false)) {
		q = q.Where("(vm.id IS NULL OR vm.type = ?)", models.VMTypeUser)
	}
	var rows []volumeRow
	total, err := c.ScanPage(q.Order("volume.id ASC"), &rows)
	if err != nil {
		return nil, err
	}
	views, err := c.S.volumeViews(c.Ctx, rows, c.Caller.IsRootAdmin())
	if err != nil {
		return nil, err
	}
	return List{Key: "volume", Count: total, Items: views}, nil
}
