package api

import (
	"context"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // policy time zones are checked without relying on the host's zoneinfo

	"github.com/uptrace/bun"
	"go.temporal.io/sdk/client"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/workflows"
)

func init() {
	policyFields := []Field{
		{"id", "string", "the ID of the policy"}, {"volumeid", "string", "the volume it snapshots"},
		{"intervaltype", "short", "0 hourly, 1 daily, 2 weekly, 3 monthly"}, {"schedule", "string", "MM, MM:HH or MM:HH:DD"},
		{"timezone", "string", "the time zone of the schedule"}, {"maxsnaps", "int", "how many snapshots it keeps"},
		{"fordisplay", "boolean", "shown to users"},
	}
	Register(
		&Command{
			Name: "createSnapshot", Description: "Takes a snapshot of a volume on its primary storage and backs it up to secondary storage",
			Access: AccessAllWrite, Async: true,
			Params: []Param{
				{Name: "volumeid", Type: TUUID, Required: true, Description: "the volume"},
				{Name: "name", Type: TString, Description: "the snapshot's name (default <vm>_<volume>_<time>)"},
				{Name: "policyid", Type: TUUID, Description: "take it as a run of this policy of the volume"},
				{Name: "account", Type: TString, Description: "ignored: the snapshot belongs to the volume's owner"},
				{Name: "domainid", Type: TUUID, Description: "ignored: the snapshot belongs to the volume's owner"},
				{Name: "asyncbackup", Type: TBoolean, Description: "ignored: the job ends when the backup is done"},
				{Name: "quiescevm", Type: TBoolean, Description: "quiescing the VM is not supported yet"},
				{Name: "locationtype", Type: TString, Description: "ignored: snapshots are kept on primary and secondary storage"},
			},
			ResponseName: "snapshot", Response: snapshotFields, Handler: createSnapshot,
		},
		&Command{
			Name: "listSnapshots", Description: "Lists volume snapshots", Access: AccessAll,
			Params: append(OwnerListParams(),
				Param{Name: "id", Type: TUUID, Description: "the snapshot"},
				Param{Name: "ids", Type: TList, Of: TUUID, Description: "several snapshots"},
				Param{Name: "name", Type: TString, Description: "snapshots of this name"},
				Param{Name: "volumeid", Type: TUUID, Description: "the snapshots of this volume"},
				Param{Name: "snapshottype", Type: TString, Description: "MANUAL, HOURLY, DAILY, WEEKLY or MONTHLY"},
				Param{Name: "intervaltype", Type: TString, Description: "HOURLY, DAILY, WEEKLY or MONTHLY"},
				Param{Name: "zoneid", Type: TUUID, Description: "snapshots of this zone"},
				Param{Name: "state", Type: TString, Description: "snapshots in this state"},
				Param{Name: "imagestoreid", Type: TUUID, Description: "snapshots backed up to this image store (admins)"},
				Param{Name: "storageid", Type: TUUID, Description: "snapshots with a copy on this primary pool (admins)"},
			),
			ResponseName: "snapshot", Response: snapshotFields, Handler: listSnapshots,
		},
		&Command{
			Name: "deleteSnapshot", Description: "Deletes a snapshot from primary and secondary storage", Access: AccessAllWrite, Async: true,
			Params: []Param{
				{Name: "id", Type: TUUID, Required: true, Description: "the snapshot"},
				{Name: "zoneid", Type: TUUID, Description: "ignored: a snapshot lives in one zone"},
			},
			ResponseName: "success", Response: successFields, Handler: deleteSnapshotCmd,
		},
		&Command{
			Name: "revertSnapshot", Description: "Reverts a volume (detached, or of a stopped VM) to a snapshot", Access: AccessAllWrite, Async: true,
			Params:       []Param{{Name: "id", Type: TUUID, Required: true, Description: "the snapshot"}},
			ResponseName: "snapshot", Response: snapshotFields, Handler: revertSnapshotCmd,
		},
		&Command{
			Name: "createTemplate", Description: "Creates a template from a volume (detached, or of a stopped VM) or from a snapshot, on the zone's image store",
			Access: AccessAllWrite, Async: true,
			Params: []Param{
				{Name: "name", Type: TString, Required: true, Description: "the name of the template"},
				{Name: "displaytext", Type: TString, Length: 4096, Description: "its description (default: the name)"},
				{Name: "ostypeid", Type: TUUID, Required: true, Description: "the guest OS type"},
				{Name: "volumeid", Type: TUUID, Description: "the volume to make it from"},
				{Name: "snapshotid", Type: TUUID, Description: "the snapshot to make it from"},
				{Name: "ispublic", Type: TBoolean, Description: "usable by every account"},
				{Name: "isfeatured", Type: TBoolean, Description: "shown as featured (admins only)"},
				{Name: "passwordenabled", Type: TBoolean, Description: "the image resets its password from the cloud"},
				{Name: "sshkeyenabled", Type: TBoolean, Description: "the image takes an SSH key from the cloud"},
				{Name: "isdynamicallyscalable", Type: TBoolean, Description: "the image supports scaling while running"},
				{Name: "requireshvm", Type: TBoolean, Description: "needs hardware virtualization (default true)"},
				{Name: "bits", Type: TInteger, Description: "32 or 64 (default)"},
				{Name: "templatetag", Type: TString, Description: "a tag for the template"},
				{Name: "zoneid", Type: TUUID, Description: "ignored: the template is made in the zone of its source"},
				{Name: "virtualmachineid", Type: TUUID, Description: "ignored: the volume names its VM"},
				{Name: "account", Type: TString, Description: "the owner account; needs domainid"},
				{Name: "domainid", Type: TUUID, Description: "the owner's domain"},
				{Name: "url", Type: TString, Description: "templates from a URL: use registerTemplate"},
				{Name: "projectid", Type: TUUID, Description: "projects are not supported yet"},
			},
			ResponseName: "template", Response: []Field{{"id", "string", "the template's ID"}, {"jobid", "string", "the job"}},
			Handler: createTemplateCmd,
		},
		&Command{
			Name: "createSnapshotPolicy", Description: "Creates (or, for a volume and interval that has one, updates) a recurring snapshot policy, run by a Temporal Schedule",
			Access: AccessAllWrite,
			Params: []Param{
				{Name: "volumeid", Type: TUUID, Required: true, Description: "the volume"},
				{Name: "intervaltype", Type: TString, Required: true, Description: "HOURLY, DAILY, WEEKLY or MONTHLY"},
				{Name: "schedule", Type: TString, Required: true, Description: "HOURLY: MM; DAILY: MM:HH; WEEKLY: MM:HH:DD (DD 1-7, 1 is Sunday); MONTHLY: MM:HH:DD (DD 1-28)"},
				{Name: "timezone", Type: TString, Required: true, Description: "the time zone of the schedule (IANA, e.g. UTC, Europe/Paris)"},
				{Name: "maxsnaps", Type: TInteger, Required: true, Description: "how many of its snapshots to keep; older ones are deleted"},
				{Name: "fordisplay", Type: TBoolean, Description: "shown to users (default true)"},
				{Name: "zoneids", Type: TList, Of: TUUID, Description: "copying snapshots to other zones is not supported yet"},
			},
			ResponseName: "snapshotpolicy", Response: policyFields, Handler: createSnapshotPolicy,
		},
		&Command{
			Name: "updateSnapshotPolicy", Description: "Updates a snapshot policy (its schedule too)", Access: AccessAllWrite,
			Params: []Param{
				{Name: "id", Type: TUUID, Required: true, Description: "the policy"},
				{Name: "fordisplay", Type: TBoolean, Description: "shown to users"},
				{Name: "schedule", Type: TString, Description: "a new schedule (as createSnapshotPolicy)"},
				{Name: "timezone", Type: TString, Description: "a new time zone"},
				{Name: "maxsnaps", Type: TInteger, Description: "a new number of snapshots to keep"},
				{Name: "customid", Type: TString, Description: "ignored"},
			},
			ResponseName: "snapshotpolicy", Response: policyFields, Handler: updateSnapshotPolicy,
		},
		&Command{
			Name: "listSnapshotPolicies", Description: "Lists snapshot policies", Access: AccessAll,
			Params: append(ListParams(),
				Param{Name: "id", Type: TUUID, Description: "the policy"},
				Param{Name: "volumeid", Type: TUUID, Description: "the policies of this volume"},
				Param{Name: "fordisplay", Type: TBoolean, Description: "policies shown (or hidden) to users"},
			),
			ResponseName: "snapshotpolicy", Response: policyFields, Handler: listSnapshotPolicies,
		},
		&Command{
			Name: "deleteSnapshotPolicies", Description: "Deletes snapshot policies and their schedules", Access: AccessAllWrite,
			Params: []Param{
				{Name: "id", Type: TUUID, Description: "the policy"},
				{Name: "ids", Type: TList, Of: TUUID, Description: "several policies"},
			},
			ResponseName: "success", Response: successFields, Handler: deleteSnapshotPolicies,
		},
	)
	RegisterRenderer("Snapshot", func(ctx context.Context, s *Server, id string) (any, error) {
		var rows []snapshotRow
		if err := s.snapshotQuery().Where("snapshot.uuid = ?", id).WhereAllWithDeleted().Scan(ctx, &rows); err != nil {
			return nil, err
		}
		if len(rows) == 0 {
			return nil, models.NotFound(errNoRow, "snapshot "+id)
		}
		views, err := s.snapshotViews(ctx, rows, true)
		if err != nil {
			return nil, err
		}
		return views[0], nil
	})
	RegisterRenderer("SnapshotPolicy", func(ctx context.Context, s *Server, id string) (any, error) {
		var rows []policyRow
		if err := s.policyQuery().Where("sp.uuid = ?", id).Scan(ctx, &rows); err != nil {
			return nil, err
		}
		if len(rows) == 0 {
			return nil, models.NotFound(errNoRow, "snapshot policy "+id)
		}
		return policyView(&rows[0]), nil
	})
}

var snapshotFields = []Field{
	{"id", "string", "the ID of the snapshot"}, {"name", "string", "its name"},
	{"volumeid", "string", "the volume it was taken of"}, {"volumename", "string", "that volume's name"},
	{"volumetype", "string", "ROOT or DATADISK"}, {"snapshottype", "string", "MANUAL, HOURLY, DAILY, WEEKLY or MONTHLY"},
	{"intervaltype", "string", "the interval of the policy that took it"},
	{"state", "string", "Allocated, Creating, BackingUp, BackedUp, Destroying, Error"},
	{"physicalsize", "long", "bytes of its backup"}, {"virtualsize", "long", "the volume's size when taken"},
	{"revertable", "boolean", "whether its volume can be reverted to it"},
	{"zoneid", "string", "its zone"}, {"zonename", "string", "the zone's name"}, {"created", "date", "when it was taken"},
	{"account", "string", "the owner"}, {"domain", "string", "the owner's domain"}, {"domainid", "string", "its ID"},
	{"downloaddetails", "map", "the backup: datastore, downloadPercent, downloadState"},
	{"datastoreid", "string", "the image store holding the backup"}, {"datastorename", "string", "its name"},
}

// SnapshotView is a snapshot as listSnapshots shows it (the SDK's Snapshot).
type SnapshotView struct {
	ID              string            `json:"id"`
	Name            string            `json:"name"`
	VolumeID        string            `json:"volumeid"`
	VolumeName      string            `json:"volumename"`
	VolumeType      string            `json:"volumetype"`
	SnapshotType    string            `json:"snapshottype"`
	IntervalType    string            `json:"intervaltype,omitempty"`
	State           string            `json:"state"`
	PhysicalSize    int64             `json:"physicalsize"`
	VirtualSize     int64             `json:"virtualsize"`
	Revertable      bool              `json:"revertable"`
	LocationType    string            `json:"locationtype,omitempty"`
	ZoneID          string            `json:"zoneid"`
	ZoneName        string            `json:"zonename"`
	Created         string            `json:"created"`
	Account         string            `json:"account"`
	Domain          string            `json:"domain"`
	DomainID        string            `json:"domainid"`
	OSTypeID        string            `json:"ostypeid,omitempty"`
	OSDisplayName   string            `json:"osdisplayname,omitempty"`
	DatastoreID     string            `json:"datastoreid,omitempty"`
	DatastoreName   string            `json:"datastorename,omitempty"`
	DatastoreType   string            `json:"datastoretype,omitempty"`
	DatastoreState  string            `json:"datastorestate,omitempty"`
	DownloadDetails map[string]string `json:"downloaddetails,omitempty"`
	Tags            []any             `json:"tags"`
	HasAnnotations  bool              `json:"hasannotations"`
}

type snapshotRow struct {
	models.Snapshot `bun:",extend"`
	VolumeUUID      string `bun:"vol_uuid"`
	VolumeName      string `bun:"vol_name"`
	VolumeType      string `bun:"vol_type"`
	VolumePoolID    int64  `bun:"vol_pool_id"`
	VolumeRemoved   bool   `bun:"vol_removed"`
	VolumeTemplate  int64  `bun:"vol_template_id"`
	ZoneUUID        string `bun:"zone_uuid"`
	ZoneName        string `bun:"zone_name"`
}

func (s *Server) snapshotQuery() *bun.SelectQuery {
	return s.DB.NewSelect().Model((*snapshotRow)(nil)).
		ColumnExpr("snapshot.*").
		ColumnExpr("v.uuid AS vol_uuid, v.name AS vol_name, v.volume_type AS vol_type, v.pool_id AS vol_pool_id").
		ColumnExpr("CASE WHEN v.removed IS NULL THEN 0 ELSE 1 END AS vol_removed, v.template_id AS vol_template_id").
		ColumnExpr("z.uuid AS zone_uuid, z.name AS zone_name").
		Join("LEFT JOIN volumes AS v ON v.id = snapshot.volume_id").
		Join("LEFT JOIN zones AS z ON z.id = snapshot.zone_id").
		Order("snapshot.id ASC")
}

// snapshotViews renders snapshot rows with their owners and copies.
func (s *Server) snapshotViews(ctx context.Context, rows []snapshotRow, admin bool) ([]SnapshotView, error) {
	out := make([]SnapshotView, len(rows))
	if len(rows) == 0 {
		return out, nil
	}
	var acctIDs, snapIDs, tmplIDs []int64
	for _, r := range rows {
		acctIDs, snapIDs = append(acctIDs, r.AccountID), append(snapIDs, r.ID)
		if r.VolumeTemplate != 0 {
			tmplIDs = append(tmplIDs, r.VolumeTemplate)
		}
	}
	owners, err := loadOwners(ctx, s.DB, acctIDs)
	if err != nil {
		return nil, err
	}
	var refs []models.SnapshotStoreRef
	if err := s.DB.NewSelect().Model(&refs).Where("snapshot_id IN (?)", bun.In(snapIDs)).Order("id").Scan(ctx); err != nil {
		return nil, err
	}
	stores := map[int64]models.ImageStore{}
	var storeIDs []int64
	for _, r := range refs {
		if r.StoreRole == models.StoreRoleImage {
			storeIDs = append(storeIDs, r.StoreID)
		}
	}
	if len(storeIDs) > 0 {
		var list []models.ImageStore
		if err := s.DB.NewSelect().Model(&list).Where("id IN (?)", bun.In(storeIDs)).WhereAllWithDeleted().Scan(ctx); err != nil {
			return nil, err
		}
		for _, st := range list {
			stores[st.ID] = st
		}
	}
	osOf := map[int64]models.OSType{}
	if len(tmplIDs) > 0 {
		var list []struct {
			TemplateID int64  `bun:"tid"`
			UUID       string `bun:"uuid"`
			Name       string `bun:"display_name"`
		}
		if err := s.DB.NewSelect().TableExpr("vm_templates AS t").ColumnExpr("t.id AS tid, o.uuid, o.display_name").
			Join("JOIN os_types AS o ON o.id = t.os_type_id").Where("t.id IN (?)", bun.In(tmplIDs)).Scan(ctx, &list); err != nil {
			return nil, err
		}
		for _, x := range list {
			osOf[x.TemplateID] = models.OSType{UUID: x.UUID, DisplayName: x.Name}
		}
	}
	for i := range rows {
		r := &rows[i]
		v := SnapshotView{
			ID: r.UUID, Name: r.Name, VolumeID: r.VolumeUUID, VolumeName: r.VolumeName, VolumeType: r.VolumeType,
			SnapshotType: r.SnapshotType, State: r.State, PhysicalSize: r.PhysicalSize, VirtualSize: r.Size,
			ZoneID: r.ZoneUUID, ZoneName: r.ZoneName, Created: FormatTime(r.Created), Tags: []any{},
		}
		if r.SnapshotType != models.SnapshotManual {
			v.IntervalType = r.SnapshotType
		}
		if o, ok := owners[r.AccountID]; ok {
			v.Account, v.Domain, v.DomainID = o.Account.Name, o.Domain.Name, o.Domain.UUID
		}
		if o, ok := osOf[r.VolumeTemplate]; ok {
			v.OSTypeID, v.OSDisplayName = o.UUID, o.DisplayName
		}
		onPool, onStore := false, false
		for j := range refs {
			ref := &refs[j]
			if ref.SnapshotID != r.ID {
				continue
			}
			switch ref.StoreRole {
			case models.StoreRolePrimary:
				onPool = onPool || (ref.StoreID == r.VolumePoolID && !r.VolumeRemoved)
			case models.StoreRoleImage:
				onStore = true
				st := stores[ref.StoreID]
				v.DownloadDetails = map[string]string{
					"datastore": st.Name, "datastoreId": st.UUID, "datastoreRole": models.StoreRoleImage,
					"downloadPercent": strconv.Itoa(ref.DownloadPct), "downloadState": ref.State,
				}
				v.DatastoreID, v.DatastoreName, v.DatastoreType, v.DatastoreState = st.UUID, st.Name, st.ProviderName, "Ready"
				if !admin {
					v.DatastoreID, v.DownloadDetails["datastoreId"] = "", ""
				}
			}
		}
		v.Revertable = r.State == models.SnapshotBackedUp && onPool
		switch {
		case onPool && onStore:
			v.LocationType = "PRIMARY,SECONDARY"
		case onStore:
			v.LocationType = "SECONDARY"
		case onPool:
			v.LocationType = "PRIMARY"
		}
		out[i] = v
	}
	return out, nil
}

// snapshotForUse loads a live snapshot the caller may act on.
func (c *Call) snapshotForUse(id string) (*models.Snapshot, error) {
	var s models.Snapshot
	if err := c.S.DB.NewSelect().Model(&s).Where("uuid = ?", id).Limit(1).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, cserr.Param("Unable to find snapshot by id %s", id)
		}
		return nil, err
	}
	ok, err := c.ownsOrAdmins(s.AccountID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, cserr.Param("Unable to find snapshot by id %s", id)
	}
	return &s, nil
}

// vmNameOf is the name of the VM a volume is attached to ("" if none).
func (c *Call) vmNameOf(v *models.Volume) string {
	if v.InstanceID == 0 {
		return ""
	}
	var name string
	_ = c.S.DB.NewSelect().Model((*models.VMInstance)(nil)).Column("name").Where("id = ?", v.InstanceID).WhereAllWithDeleted().Limit(1).Scan(c.Ctx, &name)
	return name
}

func createSnapshot(c *Call) (any, error) {
	if c.Bool("quiescevm", false) {
		return nil, cserr.Param("quiescevm is not supported yet")
	}
	v, err := c.volumeForUse(c.Str("volumeid"))
	if err != nil {
		return nil, err
	}
	if err := checkErr(activities.CheckSnapshot(v)); err != nil {
		return nil, err
	}
	if err := checkErr(activities.HasImageStore(c.Ctx, c.S.DB, v.ZoneID)); err != nil {
		return nil, err
	}
	now := models.Now()
	s := &models.Snapshot{UUID: models.NewUUID(), Name: strings.TrimSpace(c.Str("name")), VolumeID: v.ID,
		SnapshotType: models.SnapshotManual, State: models.SnapshotAllocated, Size: v.Size, DiskOfferingID: v.DiskOfferingID,
		ZoneID: v.ZoneID, AccountID: v.AccountID, DomainID: v.DomainID, Created: now}
	if c.Has("policyid") {
		var p models.SnapshotPolicy
		if err := c.S.DB.NewSelect().Model(&p).Where("uuid = ? AND volume_id = ?", c.Str("policyid"), v.ID).Limit(1).Scan(c.Ctx); err != nil {
			if isNoRows(err) {
				return nil, cserr.Param("Volume %s has no snapshot policy %s", v.Name, c.Str("policyid"))
			}
			return nil, err
		}
		s.PolicyID, s.SnapshotType = p.ID, p.IntervalType
	}
	if s.Name == "" {
		s.Name = activities.SnapshotName(c.vmNameOf(v), v.Name, now)
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := models.ReserveResources(ctx, tx, s.AccountID, map[string]int64{models.ResourceSnapshot: 1}); err != nil {
			return err
		}
		_, err := tx.NewInsert().Model(s).Exec(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	in := activities.SnapshotInput{SnapshotUUID: s.UUID, Actor: actorOf(c.Caller)}
	resp, err := c.StartJob(JobSpec{Workflow: workflows.CreateSnapshot, Input: in, InstanceType: "Snapshot", InstanceUUID: s.UUID,
		ResponseID: s.UUID, Summary: "snapshot volume " + v.Name})
	if err != nil {
		_ = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			if _, err := tx.NewDelete().Model(s).WherePK().ForceDelete().Exec(ctx); err != nil {
				return err
			}
			return models.ReleaseResources(ctx, tx, s.AccountID, map[string]int64{models.ResourceSnapshot: 1})
		})
		return nil, err
	}
	return resp, nil
}

func listSnapshots(c *Call) (any, error) {
	scope, err := c.Visibility()
	if err != nil {
		return nil, err
	}
	q := c.S.snapshotQuery().Apply(scope.Modifier("snapshot.account_id", "snapshot.domain_id"))
	q = c.Filtered(q, Filter{ID: "snapshot.uuid", Name: "snapshot.name", Keyword: []string{"snapshot.name"}})
	if ids := c.List("ids"); len(ids) > 0 {
		q = q.Where("snapshot.uuid IN (?)", bun.In(ids))
	}
	if c.Has("volumeid") {
		q = q.Where("v.uuid = ?", c.Str("volumeid"))
	}
	if c.Has("zoneid") {
		q = q.Where("z.uuid = ?", c.Str("zoneid"))
	}
	if c.Has("snapshottype") {
		q = q.Where("snapshot.snapshot_type = ?", strings.ToUpper(c.Str("snapshottype")))
	}
	if c.Has("intervaltype") {
		q = q.Where("snapshot.snapshot_type = ?", strings.ToUpper(c.Str("intervaltype")))
	}
	if c.Has("state") {
		q = q.Where("LOWER(snapshot.state) = ?", strings.ToLower(c.Str("state")))
	}
	if c.Caller.IsRootAdmin() {
		if c.Has("imagestoreid") {
			q = q.Where("snapshot.id IN (SELECT r.snapshot_id FROM snapshot_store_refs AS r JOIN image_stores AS st ON st.id = r.store_id WHERE r.store_role = ? AND st.uuid = ?)",
				models.StoreRoleImage, c.Str("imagestoreid"))
		}
		if c.Has("storageid") {
			q = q.Where("snapshot.id IN (SELECT r.snapshot_id FROM snapshot_store_refs AS r JOIN storage_pools AS p ON p.id = r.store_id WHERE r.store_role = ? AND p.uuid = ?)",
				models.StoreRolePrimary, c.Str("storageid"))
		}
	}
	var rows []snapshotRow
	total, err := c.ScanPage(q, &rows)
	if err != nil {
		return nil, err
	}
	views, err := c.S.snapshotViews(c.Ctx, rows, c.Caller.IsRootAdmin())
	if err != nil {
		return nil, err
	}
	return List{Key: "snapshot", Count: total, Items: views}, nil
}

func deleteSnapshotCmd(c *Call) (any, error) {
	s, err := c.snapshotForUse(c.Str("id"))
	if err != nil {
		return nil, err
	}
	if err := checkErr(activities.CheckDeleteSnapshot(s)); err != nil {
		return nil, err
	}
	in := activities.SnapshotInput{SnapshotUUID: s.UUID, Actor: actorOf(c.Caller)}
	return c.StartJob(JobSpec{Workflow: workflows.DeleteSnapshot, Input: in, InstanceType: "Snapshot", InstanceUUID: s.UUID,
		Summary: "delete snapshot " + s.Name})
}

func revertSnapshotCmd(c *Call) (any, error) {
	s, err := c.snapshotForUse(c.Str("id"))
	if err != nil {
		return nil, err
	}
	v, err := c.snapshotVolume(s)
	if err != nil {
		return nil, err
	}
	if err := checkErr(activities.CheckRevert(c.Ctx, c.S.DB, s, v)); err != nil {
		return nil, err
	}
	in := activities.SnapshotInput{SnapshotUUID: s.UUID, Actor: actorOf(c.Caller)}
	return c.StartJob(JobSpec{Workflow: workflows.RevertSnapshot, Input: in, InstanceType: "Snapshot", InstanceUUID: s.UUID,
		ResponseID: s.UUID, Summary: "revert volume " + v.Name + " to snapshot " + s.Name})
}

// ---- createTemplate ----

func createTemplateCmd(c *Call) (any, error) {
	for _, p := range []string{"url", "projectid"} {
		if c.Has(p) {
			return nil, cserr.Param("parameter %s is not supported by createTemplate", p)
		}
	}
	if c.Has("volumeid") == c.Has("snapshotid") {
		return nil, cserr.Param("Exactly one of volumeid and snapshotid must be given")
	}
	name := strings.TrimSpace(c.Str("name"))
	if name == "" {
		return nil, cserr.Param("parameter name: must not be blank")
	}
	ost, err := c.osTypeByUUID(c.S.DB, c.Str("ostypeid"))
	if err != nil {
		return nil, err
	}
	if ost == nil {
		return nil, cserr.Param("Unable to find OS type by id %s", c.Str("ostypeid"))
	}
	o, err := c.resourceOwner()
	if err != nil {
		return nil, err
	}
	in := activities.SnapshotTemplateInput{Actor: actorOf(c.Caller)}
	var v *models.Volume
	if c.Has("snapshotid") {
		s, err := c.snapshotForUse(c.Str("snapshotid"))
		if err != nil {
			return nil, err
		}
		if s.State != models.SnapshotBackedUp {
			return nil, cserr.Param("Snapshot %s is %s; templates are made from BackedUp snapshots", s.Name, s.State)
		}
		if v, err = c.snapshotVolume(s); err != nil {
			return nil, err
		}
		n, err := c.S.DB.NewSelect().Model((*models.SnapshotStoreRef)(nil)).
			Where("snapshot_id = ? AND store_role = ? AND store_id = ?", s.ID, models.StoreRolePrimary, v.PoolID).Count(c.Ctx)
		if err != nil {
			return nil, err
		}
		if n == 0 || !v.Removed.IsZero() {
			return nil, cserr.Param("Snapshot %s has no copy on primary storage to make a template from", s.Name)
		}
		in.SnapshotUUID = s.UUID
	} else {
		if v, err = c.volumeForUse(c.Str("volumeid")); err != nil {
			return nil, err
		}
		if v.State != models.VolumeReady || v.PoolID == 0 {
			return nil, cserr.Param("Volume %s is %s; templates are made from Ready volumes", v.Name, v.State)
		}
		if v.InstanceID != 0 {
			var vm models.VMInstance
			if err := c.S.DB.NewSelect().Model(&vm).Where("id = ?", v.InstanceID).Limit(1).Scan(c.Ctx); err != nil {
				return nil, err
			}
			if vm.State != models.VMStopped {
				return nil, cserr.Param("Virtual machine %s is %s; stop it before making a template of its volume", vm.Name, vm.State)
			}
		}
		in.VolumeUUID = v.UUID
	}
	pool, err := c.poolByUUIDOrID(v.PoolID)
	if err != nil {
		return nil, err
	}
	store, err := activities.ZoneImageStore(c.Ctx, c.S.DB, v.ZoneID)
	if err != nil {
		return nil, checkErr(err)
	}
	if c.Bool("isfeatured", false) && !c.Caller.IsRootAdmin() {
		return nil, cserr.Param("only root admins may set isfeatured")
	}
	bits := int(c.Int("bits", 64))
	if bits != 32 && bits != 64 {
		return nil, cserr.Param("bits must be 32 or 64")
	}
	now := models.Now()
	t := &models.Template{
		UUID: models.NewUUID(), Name: name, DisplayText: c.Str("displaytext"), Format: strings.ToUpper(v.Format),
		Type: models.TemplateTypeUser, Public: c.Bool("ispublic", false), Featured: c.Bool("isfeatured", false),
		OSTypeID: ost.ID, HypervisorType: pool.HypervisorType, Bits: bits, HVM: c.Bool("requireshvm", true),
		Bootable: true, EnablePassword: c.Bool("passwordenabled", false), EnableSSHKey: c.Bool("sshkeyenabled", false),
		TemplateTag: c.Str("templatetag"), SourceTemplateID: v.TemplateID, State: models.TemplateInactive,
		AccountID: o.Account.ID, DomainID: o.Account.DomainID, Created: now,
	}
	if t.DisplayText == "" {
		t.DisplayText = name
	}
	if t.Format == "" {
		t.Format = models.FormatQCOW2
	}
	t.UniqueName = strconv.FormatInt(t.AccountID, 10) + "-" + strings.ReplaceAll(t.UUID, "-", "")
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := models.ReserveResources(ctx, tx, t.AccountID, map[string]int64{models.ResourceTemplate: 1}); err != nil {
			return err
		}
		if _, err := tx.NewInsert().Model(t).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewInsert().Model(&models.TemplateZoneRef{ZoneID: v.ZoneID, TemplateID: t.ID, Created: now, LastUpdated: now}).Exec(ctx); err != nil {
			return err
		}
		ref := &models.TemplateStoreRef{StoreID: store.ID, TemplateID: t.ID, ZoneID: store.ZoneID, StoreRole: store.Role,
			DownloadState: models.DownloadNotDownloaded, State: models.ObjectAllocated, InstallPath: activities.TemplateInstallPath(t),
			Created: now, LastUpdated: now}
		_, err := tx.NewInsert().Model(ref).Exec(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	in.TemplateUUID = t.UUID
	from := "volume " + v.Name
	if in.SnapshotUUID != "" {
		from = "snapshot " + in.SnapshotUUID
	}
	resp, err := c.StartJob(JobSpec{Workflow: workflows.CreateTemplateFromVolume, Input: in, InstanceType: "Template", InstanceUUID: t.UUID,
		ResponseID: t.UUID, Summary: "create template " + t.Name + " from " + from})
	if err != nil {
		_ = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			if _, err := tx.NewDelete().Model((*models.TemplateStoreRef)(nil)).Where("template_id = ?", t.ID).Exec(ctx); err != nil {
				return err
			}
			if _, err := tx.NewDelete().Model((*models.TemplateZoneRef)(nil)).Where("template_id = ?", t.ID).ForceDelete().Exec(ctx); err != nil {
				return err
			}
			if _, err := tx.NewDelete().Model(t).WherePK().ForceDelete().Exec(ctx); err != nil {
				return err
			}
			return models.ReleaseResources(ctx, tx, t.AccountID, map[string]int64{models.ResourceTemplate: 1})
		})
		return nil, err
	}
	return resp, nil
}

// poolByUUIDOrID loads a pool by id, removed or not.
func (c *Call) poolByUUIDOrID(id int64) (*models.StoragePool, error) {
	var p models.StoragePool
	if err := c.S.DB.NewSelect().Model(&p).Where("id = ?", id).WhereAllWithDeleted().Limit(1).Scan(c.Ctx); err != nil {
		return nil, models.NotFound(err, "storage pool")
	}
	return &p, nil
}

// ---- snapshot policies ----
//
// A policy is a row and a Temporal Schedule (ID nimbus-snappolicy-<uuid>)
// whose action starts workflows.SnapshotPolicyRun. The handlers create,
// update and delete the schedule right after the row (and undo the row
// when the schedule cannot be made): it is one idempotent call on a client
// the server holds anyway, the commands are synchronous in CloudStack's
// API, and the row alone would do nothing, so a workflow around it would
// only add a job to wait for. A schedule whose policy is gone deletes
// itself on its next run, so the two cannot drift for long.

// SnapshotPolicyView is a policy as listSnapshotPolicies shows it.
type SnapshotPolicyView struct {
	ID             string `json:"id"`
	VolumeID       string `json:"volumeid"`
	IntervalType   int    `json:"intervaltype"`
	Schedule       string `json:"schedule"`
	Timezone       string `json:"timezone"`
	MaxSnaps       int    `json:"maxsnaps"`
	ForDisplay     bool   `json:"fordisplay"`
	Tags           []any  `json:"tags"`
	Zone           []any  `json:"zone"`
	HasAnnotations bool   `json:"hasannotations"`
}

type policyRow struct {
	models.SnapshotPolicy `bun:",extend"`
	VolumeUUID            string `bun:"vol_uuid"`
}

func (s *Server) policyQuery() *bun.SelectQuery {
	return s.DB.NewSelect().Model((*policyRow)(nil)).ModelTableExpr("snapshot_policies AS sp").
		ColumnExpr("sp.*").ColumnExpr("v.uuid AS vol_uuid").
		Join("JOIN volumes AS v ON v.id = sp.volume_id").Order("sp.id ASC")
}

func policyView(r *policyRow) SnapshotPolicyView {
	return SnapshotPolicyView{ID: r.UUID, VolumeID: r.VolumeUUID, IntervalType: workflows.SnapshotIntervalNumber(r.IntervalType),
		Schedule: r.Schedule, Timezone: r.Timezone, MaxSnaps: r.MaxSnaps, ForDisplay: r.Display, Tags: []any{}, Zone: []any{}}
}

// policyResponse answers the policy nested under "snapshotpolicy", as
// CloudStack does, and at the top level, where cloudstack-go's
// CreateSnapshotPolicy and UpdateSnapshotPolicy decode it.
func policyResponse(v SnapshotPolicyView) Object {
	return Object{"snapshotpolicy": v, "id": v.ID, "volumeid": v.VolumeID, "intervaltype": v.IntervalType,
		"schedule": v.Schedule, "timezone": v.Timezone, "maxsnaps": v.MaxSnaps, "fordisplay": v.ForDisplay,
		"tags": v.Tags, "zone": v.Zone, "hasannotations": false}
}

func (c *Call) loadPolicyView(id int64) (SnapshotPolicyView, error) {
	var rows []policyRow
	if err := c.S.policyQuery().Where("sp.id = ?", id).Scan(c.Ctx, &rows); err != nil {
		return SnapshotPolicyView{}, err
	}
	if len(rows) == 0 {
		return SnapshotPolicyView{}, cserr.Internal("snapshot policy %d vanished", id)
	}
	return policyView(&rows[0]), nil
}

func checkTimezone(tz string) (string, error) {
	tz = strings.TrimSpace(tz)
	if tz == "" {
		return "", cserr.Param("timezone must not be blank")
	}
	if _, err := time.LoadLocation(tz); err != nil {
		return "", cserr.Param("timezone %q is not a known time zone (IANA names, e.g. UTC or Europe/Paris)", clip(tz, 64))
	}
	return tz, nil
}

func (c *Call) policySpec(p *models.SnapshotPolicy, volumeUUID string) workflows.SnapshotPolicySpec {
	acct := ""
	owners, err := loadOwners(c.Ctx, c.S.DB, []int64{p.AccountID})
	if o, ok := owners[p.AccountID]; err == nil && ok {
		acct = o.Account.Name
	}
	return workflows.SnapshotPolicySpec{PolicyUUID: p.UUID, VolumeUUID: volumeUUID, IntervalType: p.IntervalType,
		Schedule: p.Schedule, Timezone: p.Timezone, MaxSnaps: p.MaxSnaps, Account: acct}
}

// updatePolicySchedule replaces a policy's schedule spec and action.
func (c *Call) updatePolicySchedule(spec workflows.SnapshotPolicySpec) error {
	opts, err := workflows.SnapshotPolicySchedule(spec, c.S.TaskQueue)
	if err != nil {
		return cserr.Param("%v", err)
	}
	h := c.S.Temporal.ScheduleClient().GetHandle(c.Ctx, opts.ID)
	return h.Update(c.Ctx, client.ScheduleUpdateOptions{DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
		s := in.Description.Schedule
		s.Spec, s.Action = &opts.Spec, opts.Action
		return &client.ScheduleUpdate{Schedule: &s}, nil
	}})
}

func createSnapshotPolicy(c *Call) (any, error) {
	if len(c.List("zoneids")) > 0 {
		return nil, cserr.Param("copying snapshots to other zones (zoneids) is not supported yet")
	}
	v, err := c.volumeForUse(c.Str("volumeid"))
	if err != nil {
		return nil, err
	}
	interval := strings.ToUpper(strings.TrimSpace(c.Str("intervaltype")))
	if workflows.SnapshotIntervalNumber(interval) < 0 {
		return nil, cserr.Param("intervaltype %q: want HOURLY, DAILY, WEEKLY or MONTHLY", clip(c.Str("intervaltype"), 32))
	}
	schedule := strings.TrimSpace(c.Str("schedule"))
	if _, err := workflows.SnapshotCalendar(interval, schedule); err != nil {
		return nil, cserr.Param("%v", err)
	}
	tz, err := checkTimezone(c.Str("timezone"))
	if err != nil {
		return nil, err
	}
	maxSnaps := int(c.Int("maxsnaps", 0))
	if maxSnaps < 1 {
		return nil, cserr.Param("maxsnaps must be at least 1")
	}
	display := c.Bool("fordisplay", true)
	// CloudStack keeps one policy per volume and interval: a second create
	// updates it.
	var cur models.SnapshotPolicy
	err = c.S.DB.NewSelect().Model(&cur).Where("volume_id = ? AND interval_type = ?", v.ID, interval).Limit(1).Scan(c.Ctx)
	switch {
	case err == nil:
		old := cur
		cur.Schedule, cur.Timezone, cur.MaxSnaps, cur.Display = schedule, tz, maxSnaps, display
		if _, err := c.S.DB.NewUpdate().Model(&cur).Column("schedule", "timezone", "max_snaps", "display").WherePK().Exec(c.Ctx); err != nil {
			return nil, err
		}
		if err := c.updatePolicySchedule(c.policySpec(&cur, v.UUID)); err != nil {
			_, _ = c.S.DB.NewUpdate().Model(&old).Column("schedule", "timezone", "max_snaps", "display").WherePK().Exec(c.Ctx)
			return nil, cserr.Internal("cannot update the policy's schedule: %v", err)
		}
		c.Event("SNAPSHOTPOLICY.UPDATE", "SnapshotPolicy", cur.UUID, "updated the "+strings.ToLower(interval)+" snapshot policy of volume "+v.Name)
		view, err := c.loadPolicyView(cur.ID)
		if err != nil {
			return nil, err
		}
		return policyResponse(view), nil
	case !isNoRows(err):
		return nil, err
	}
	p := &models.SnapshotPolicy{UUID: models.NewUUID(), VolumeID: v.ID, IntervalType: interval, Schedule: schedule, Timezone: tz,
		MaxSnaps: maxSnaps, Active: true, Display: display, AccountID: v.AccountID, DomainID: v.DomainID, Created: models.Now()}
	if _, err := c.S.DB.NewInsert().Model(p).Exec(c.Ctx); err != nil {
		return nil, err
	}
	opts, err := workflows.SnapshotPolicySchedule(c.policySpec(p, v.UUID), c.S.TaskQueue)
	if err == nil {
		_, err = c.S.Temporal.ScheduleClient().Create(c.Ctx, opts)
	}
	if err != nil {
		// Without its schedule the policy would never run: take it back.
		_, _ = c.S.DB.NewDelete().Model(p).WherePK().Exec(context.WithoutCancel(c.Ctx))
		return nil, cserr.Internal("cannot create the policy's schedule: %v", err)
	}
	c.Event("SNAPSHOTPOLICY.CREATE", "SnapshotPolicy", p.UUID, "created a "+strings.ToLower(interval)+" snapshot policy for volume "+v.Name)
	view, err := c.loadPolicyView(p.ID)
	if err != nil {
		return nil, err
	}
	return policyResponse(view), nil
}

// policyForUse loads a policy the caller may act on.
func (c *Call) policyForUse(id string) (*models.SnapshotPolicy, string, error) {
	var rows []policyRow
	if err := c.S.policyQuery().Where("sp.uuid = ?", id).Scan(c.Ctx, &rows); err != nil {
		return nil, "", err
	}
	if len(rows) == 0 {
		return nil, "", cserr.Param("Unable to find snapshot policy by id %s", id)
	}
	ok, err := c.ownsOrAdmins(rows[0].AccountID)
	if err != nil {
		return nil, "", err
	}
	if !ok {
		return nil, "", cserr.Param("Unable to find snapshot policy by id %s", id)
	}
	return &rows[0].SnapshotPolicy, rows[0].VolumeUUID, nil
}

func updateSnapshotPolicy(c *Call) (any, error) {
	p, volUUID, err := c.policyForUse(c.Str("id"))
	if err != nil {
		return nil, err
	}
	old := *p
	if b := c.BoolPtr("fordisplay"); b != nil {
		p.Display = *b
	}
	if c.Has("schedule") {
		p.Schedule = strings.TrimSpace(c.Str("schedule"))
		if _, err := workflows.SnapshotCalendar(p.IntervalType, p.Schedule); err != nil {
			return nil, cserr.Param("%v", err)
		}
	}
	if c.Has("timezone") {
		if p.Timezone, err = checkTimezone(c.Str("timezone")); err != nil {
			return nil, err
		}
	}
	if c.Has("maxsnaps") {
		if p.MaxSnaps = int(c.Int("maxsnaps", 0)); p.MaxSnaps < 1 {
			return nil, cserr.Param("maxsnaps must be at least 1")
		}
	}
	if _, err := c.S.DB.NewUpdate().Model(p).Column("schedule", "timezone", "max_snaps", "display").WherePK().Exec(c.Ctx); err != nil {
		return nil, err
	}
	if p.Schedule != old.Schedule || p.Timezone != old.Timezone || p.MaxSnaps != old.MaxSnaps {
		if err := c.updatePolicySchedule(c.policySpec(p, volUUID)); err != nil {
			_, _ = c.S.DB.NewUpdate().Model(&old).Column("schedule", "timezone", "max_snaps", "display").WherePK().Exec(c.Ctx)
			return nil, cserr.Internal("cannot update the policy's schedule: %v", err)
		}
	}
	c.Event("SNAPSHOTPOLICY.UPDATE", "SnapshotPolicy", p.UUID, "updated snapshot policy "+p.UUID)
	view, err := c.loadPolicyView(p.ID)
	if err != nil {
		return nil, err
	}
	return policyResponse(view), nil
}

func listSnapshotPolicies(c *Call) (any, error) {
	q := c.S.policyQuery()
	if c.Has("id") {
		q = q.Where("sp.uuid = ?", c.Str("id"))
	}
	if c.Has("volumeid") {
		q = q.Where("v.uuid = ?", c.Str("volumeid"))
	}
	if b := c.BoolPtr("fordisplay"); b != nil {
		q = q.Where("sp.display = ?", *b)
	}
	if kw := c.Str("keyword"); kw != "" {
		q = q.Where("LOWER(v.name) LIKE ? ESCAPE '!'", "%"+likeEscape(strings.ToLower(kw))+"%")
	}
	// Policies of the volumes the caller may see: its own account's, and
	// for admins those of the accounts they administer.
	switch {
	case c.Caller.IsRootAdmin():
	case c.Caller.IsDomainAdmin():
		q = q.Where("sp.domain_id IN (?)", SubtreeIDs(c.S.DB, c.Caller.Domain.Path))
	default:
		q = q.Where("sp.account_id = ?", c.Caller.Account.ID)
	}
	var rows []policyRow
	total, err := c.ScanPage(q, &rows)
	if err != nil {
		return nil, err
	}
	views := make([]SnapshotPolicyView, len(rows))
	for i := range rows {
		views[i] = policyView(&rows[i])
	}
	return List{Key: "snapshotpolicy", Count: total, Items: views}, nil
}

func deleteSnapshotPolicies(c *Call) (any, error) {
	ids := c.List("ids")
	if c.Has("id") {
		ids = append(ids, c.Str("id"))
	}
	if len(ids) == 0 {
		return nil, cserr.Param("Either id or ids must be given")
	}
	type target struct {
		p      *models.SnapshotPolicy
		volume string
	}
	var targets []target
	for _, id := range ids {
		p, vol, err := c.policyForUse(id)
		if err != nil {
			return nil, err
		}
		targets = append(targets, target{p, vol})
	}
	for _, t := range targets {
		// Schedule first: a row without a schedule is harmless to retry,
		// a schedule without a row would run on.
		if err := c.deletePolicySchedule(t.p.UUID); err != nil {
			return nil, cserr.Internal("cannot delete the schedule of snapshot policy %s: %v", t.p.UUID, err)
		}
		if _, err := c.S.DB.NewDelete().Model((*models.SnapshotPolicy)(nil)).Where("id = ?", t.p.ID).Exec(c.Ctx); err != nil {
			return nil, err
		}
		c.Event("SNAPSHOTPOLICY.DELETE", "SnapshotPolicy", t.p.UUID, "deleted the "+strings.ToLower(t.p.IntervalType)+" snapshot policy of volume "+t.volume)
	}
	return Success{Success: true}, nil
}
