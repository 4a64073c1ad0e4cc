package api

import (
	"context"
	"errors"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere"
	"github.com/nimbus-cloud/nimbus/infra/storage"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/workflows"
)

// Image formats a hypervisor takes, as CloudStack's ImageFormat names them.
var hypervisorFormats = map[string][]string{
	models.HypervisorKVM:       {models.FormatQCOW2, models.FormatRAW, models.FormatVHD, "VMDK"},
	models.HypervisorLXC:       {models.FormatRAW}, // a filesystem image, loop-mounted as the root; rootfs archives (TAR) are not supported yet
	models.HypervisorXenServer: {models.FormatVHD},
	models.HypervisorVMware:    {models.FormatOVA},
	models.HypervisorHyperV:    {models.FormatVHD, models.FormatVHDX},
	models.HypervisorBareMetal: {"BAREMETAL"},
	hypervisor.TypeXenProject:  {models.FormatQCOW2, models.FormatRAW},
	models.HypervisorSimulator: {models.FormatQCOW2, models.FormatRAW, models.FormatVHD, models.FormatVHDX, models.FormatOVA, "VMDK"},
}

// Template filters of listTemplates (templatefilter) and listIsos (isofilter).
var templateFilters = []string{"featured", "self", "selfexecutable", "sharedexecutable", "executable", "community", "all"}

func init() {
	common := []Param{
		{Name: "name", Type: TString, Required: true, Description: "the name of the template"},
		{Name: "displaytext", Type: TString, Length: 4096, Description: "the description (default: the name)"},
		{Name: "url", Type: TString, Required: true, Length: 2048, Description: "the HTTP or HTTPS URL to download it from"},
		{Name: "ostypeid", Type: TUUID, Description: "the guest OS type (default: Other (64-bit))"},
		{Name: "checksum", Type: TString, Description: "checksum of the file: {SHA-256}hex, {SHA-1}hex, {SHA-512}hex, {MD5}hex or plain hex (MD5 for 32 digits)"},
		{Name: "ispublic", Type: TBoolean, Description: "usable by every account"},
		{Name: "isfeatured", Type: TBoolean, Description: "shown as featured (admins only)"},
		{Name: "isextractable", Type: TBoolean, Description: "may be downloaded with extract"},
		{Name: "passwordenabled", Type: TBoolean, Description: "the image resets its password from the cloud"},
		{Name: "account", Type: TString, Description: "the owner account; needs domainid"},
		{Name: "domainid", Type: TUUID, Description: "the owner's domain"},
		{Name: "projectid", Type: TUUID, Description: "projects are not supported yet"},
		{Name: "directdownload", Type: TBoolean, Description: "direct download is not supported yet"},
	}
	tmplParams := append(append([]Param{}, common...),
		Param{Name: "format", Type: TString, Required: true, Description: "QCOW2, RAW, VHD, VHDX, OVA, VMDK, TAR..."},
		Param{Name: "hypervisor", Type: TString, Required: true, Description: "the hypervisor the template is for"},
		Param{Name: "zoneid", Type: TString, Description: "the zone (its ID), or -1 for every zone"},
		Param{Name: "zoneids", Type: TList, Of: TUUID, Length: 4096, Description: "several zones"},
		Param{Name: "bits", Type: TInteger, Description: "32 or 64 (default)"},
		Param{Name: "requireshvm", Type: TBoolean, Description: "needs hardware virtualization (default true)"},
		Param{Name: "sshkeyenabled", Type: TBoolean, Description: "the image takes an SSH key from the cloud"},
		Param{Name: "isdynamicallyscalable", Type: TBoolean, Description: "the image supports scaling while running"},
		Param{Name: "isrouting", Type: TBoolean, Description: "a template for virtual routers (admins only)"},
		Param{Name: "templatetype", Type: TString, Description: "USER (default), ROUTING, SYSTEM or BUILTIN (admins only)"},
		Param{Name: "templatetag", Type: TString, Description: "a tag for the template"},
		Param{Name: "details", Type: TMap, Description: "template details are not supported yet"},
		Param{Name: "deployasis", Type: TBoolean, Description: "deploy-as-is is not supported yet"},
	)
	isoParams := append(append([]Param{}, common...),
		Param{Name: "zoneid", Type: TString, Required: true, Description: "the zone (its ID), or -1 for every zone"},
		Param{Name: "bootable", Type: TBoolean, Description: "VMs may boot from it (default true)"},
		Param{Name: "isdynamicallyscalable", Type: TBoolean, Description: "the image supports scaling while running"},
		Param{Name: "imagestoreuuid", Type: TString, Description: "ignored: every image store of the zone gets a copy"},
	)
	listParams := func(filter string, required bool) []Param {
		return append(OwnerListParams(),
			Param{Name: filter, Type: TString, Required: required, Description: strings.Join(templateFilters, ", ")},
			Param{Name: "id", Type: TUUID, Description: "the ID"},
			Param{Name: "ids", Type: TList, Of: TUUID, Length: 4096, Description: "several IDs"},
			Param{Name: "name", Type: TString, Description: "the name"},
			Param{Name: "zoneid", Type: TUUID, Description: "entries of this zone"},
			Param{Name: "hypervisor", Type: TString, Description: "templates for this hypervisor"},
			Param{Name: "showremoved", Type: TBoolean, Description: "include removed ones"},
			Param{Name: "showunique", Type: TBoolean, Description: "one entry per template instead of one per zone"},
			Param{Name: "projectid", Type: TUUID, Description: "projects are not supported yet"},
		)
	}
	updParams := []Param{
		{Name: "id", Type: TUUID, Required: true, Description: "the ID"},
		{Name: "name", Type: TString, Description: "the new name"},
		{Name: "displaytext", Type: TString, Length: 4096, Description: "the new description"},
		{Name: "ostypeid", Type: TUUID, Description: "the new guest OS type"},
		{Name: "format", Type: TString, Description: "the new format"},
		{Name: "passwordenabled", Type: TBoolean, Description: "the image resets its password from the cloud"},
		{Name: "sshkeyenabled", Type: TBoolean, Description: "the image takes an SSH key from the cloud"},
		{Name: "bootable", Type: TBoolean, Description: "VMs may boot from it"},
		{Name: "requireshvm", Type: TBoolean, Description: "needs hardware virtualization"},
		{Name: "sortkey", Type: TInteger, Description: "order in lists"},
		{Name: "isrouting", Type: TBoolean, Description: "a template for virtual routers (admins only)"},
		{Name: "templatetype", Type: TString, Description: "USER, ROUTING, SYSTEM or BUILTIN (admins only)"},
		{Name: "isdynamicallyscalable", Type: TBoolean, Description: "the image supports scaling while running"},
		{Name: "details", Type: TMap, Description: "template details are not supported yet"},
		{Name: "cleanupdetails", Type: TBoolean, Description: "template details are not supported yet"},
	}
	permParams := []Param{
		{Name: "id", Type: TUUID, Required: true, Description: "the ID"},
		{Name: "ispublic", Type: TBoolean, Description: "usable by every account"},
		{Name: "isfeatured", Type: TBoolean, Description: "shown as featured (admins only)"},
		{Name: "isextractable", Type: TBoolean, Description: "may be downloaded with extract (root admins only for templates)"},
		{Name: "accounts", Type: TList, Of: TString, Length: 4096, Description: "sharing with accounts is not supported yet"},
		{Name: "op", Type: TString, Description: "add, remove or reset (with accounts)"},
		{Name: "projectids", Type: TList, Of: TUUID, Description: "projects are not supported yet"},
	}
	delParams := []Param{
		{Name: "id", Type: TUUID, Required: true, Description: "the ID"},
		{Name: "zoneid", Type: TUUID, Description: "delete only from this zone"},
		{Name: "forced", Type: TBoolean, Description: "delete even while VMs use it"},
	}
	copyParams := []Param{
		{Name: "id", Type: TUUID, Required: true, Description: "the ID"},
		{Name: "sourcezoneid", Type: TUUID, Description: "the zone to copy from (default: any zone holding it)"},
		{Name: "destzoneid", Type: TUUID, Description: "the zone to copy to"},
		{Name: "destzoneids", Type: TList, Of: TUUID, Length: 4096, Description: "several zones to copy to"},
	}
	extractParams := []Param{
		{Name: "id", Type: TUUID, Required: true, Description: "the ID"},
		{Name: "mode", Type: TString, Required: true, Description: "HTTP_DOWNLOAD (FTP_UPLOAD is not supported)"},
		{Name: "zoneid", Type: TUUID, Description: "the zone whose copy to extract"},
		{Name: "url", Type: TString, Length: 2048, Description: "FTP_UPLOAD's destination (not supported)"},
	}
	Register(
		&Command{Name: "registerTemplate", Description: "Registers a template from an HTTP(S) URL; the download runs as a job", Access: AccessAllWrite,
			Params: tmplParams, ResponseName: "template", Response: templateFields, Handler: func(c *Call) (any, error) { return registerImage(c, false) }},
		&Command{Name: "registerIso", Description: "Registers an ISO from an HTTP(S) URL; the download runs as a job", Access: AccessAllWrite,
			Params: isoParams, ResponseName: "iso", Response: templateFields, Handler: func(c *Call) (any, error) { return registerImage(c, true) }},
		&Command{Name: "listTemplates", Description: "Lists templates, one entry per zone", Access: AccessAll,
			Params:       append(listParams("templatefilter", true), Param{Name: "templatetype", Type: TString, Description: "USER, ROUTING, SYSTEM or BUILTIN"}),
			ResponseName: "template", Response: templateFields, Handler: func(c *Call) (any, error) { return listImages(c, false) }},
		&Command{Name: "listIsos", Description: "Lists ISOs, one entry per zone", Access: AccessAll,
			Params: append(listParams("isofilter", false),
				Param{Name: "bootable", Type: TBoolean, Description: "only bootable ISOs"},
				Param{Name: "ispublic", Type: TBoolean, Description: "only public ISOs"},
				Param{Name: "isready", Type: TBoolean, Description: "only ISOs ready in the zone"}),
			ResponseName: "iso", Response: templateFields, Handler: func(c *Call) (any, error) { return listImages(c, true) }},
		&Command{Name: "updateTemplate", Description: "Updates a template's attributes", Access: AccessAllWrite,
			Params: updParams, ResponseName: "template", Response: templateFields, Handler: func(c *Call) (any, error) { return updateImage(c, false) }},
		&Command{Name: "updateIso", Description: "Updates an ISO's attributes", Access: AccessAllWrite,
			Params: updParams, ResponseName: "iso", Response: templateFields, Handler: func(c *Call) (any, error) { return updateImage(c, true) }},
		&Command{Name: "updateTemplatePermissions", Description: "Makes a template public, featured or extractable", Access: AccessAllWrite,
			Params: permParams, ResponseName: "success", Response: successFields, Handler: func(c *Call) (any, error) { return updateImagePermissions(c, false) }},
		&Command{Name: "updateIsoPermissions", Description: "Makes an ISO public, featured or extractable", Access: AccessAllWrite,
			Params: permParams, ResponseName: "success", Response: successFields, Handler: func(c *Call) (any, error) { return updateImagePermissions(c, true) }},
		&Command{Name: "deleteTemplate", Description: "Deletes a template from a zone or everywhere", Access: AccessAllWrite, Async: true,
			Params: delParams, ResponseName: "success", Response: successFields, Handler: func(c *Call) (any, error) { return deleteImage(c, false) }},
		&Command{Name: "deleteIso", Description: "Deletes an ISO from a zone or everywhere", Access: AccessAllWrite, Async: true,
			Params: delParams[:2], ResponseName: "success", Response: successFields, Handler: func(c *Call) (any, error) { return deleteImage(c, true) }},
		&Command{Name: "copyTemplate", Description: "Copies a template to other zones", Access: AccessAllWrite, Async: true,
			Params: copyParams, ResponseName: "template", Response: templateFields, Handler: func(c *Call) (any, error) { return copyImage(c, false) }},
		&Command{Name: "copyIso", Description: "Copies an ISO to other zones", Access: AccessAllWrite, Async: true,
			Params: copyParams, ResponseName: "iso", Response: templateFields, Handler: func(c *Call) (any, error) { return copyImage(c, true) }},
		&Command{Name: "extractTemplate", Description: "Answers a signed, expiring URL to download a template", Access: AccessAllWrite, Async: true,
			Params: extractParams, ResponseName: "template", Response: extractFields, Handler: func(c *Call) (any, error) { return extractImage(c, false) }},
		&Command{Name: "extractIso", Description: "Answers a signed, expiring URL to download an ISO", Access: AccessAllWrite, Async: true,
			Params: extractParams, ResponseName: "iso", Response: extractFields, Handler: func(c *Call) (any, error) { return extractImage(c, true) }},
	)
	RegisterRenderer("Template", renderTemplate)
	RegisterRenderer("Iso", renderTemplate)
	RegisterRenderer("TemplateExtract", renderExtract)
}

var templateFields = []Field{
	{"id", "string", "the ID"}, {"name", "string", "its name"}, {"displaytext", "string", "its description"},
	{"zoneid", "string", "the zone of this entry"}, {"zonename", "string", "its name"},
	{"isready", "boolean", "downloaded in this zone and usable"}, {"status", "string", "download progress or error"},
	{"size", "long", "virtual size in bytes"}, {"physicalsize", "long", "bytes stored"},
	{"format", "string", "the image format"}, {"hypervisor", "string", "the hypervisor"},
	{"ostypeid", "string", "the guest OS type"}, {"ostypename", "string", "its name"},
	{"ispublic", "boolean", "usable by every account"}, {"isfeatured", "boolean", "featured"},
	{"isextractable", "boolean", "may be extracted"}, {"crossZones", "boolean", "registered for every zone"},
	{"account", "string", "the owner account"}, {"accountid", "string", "its ID"},
	{"domain", "string", "the owner's domain"}, {"domainid", "string", "its ID"},
	{"templatetype", "string", "USER, ROUTING, SYSTEM or BUILTIN"}, {"checksum", "string", "the checksum given"},
	{"downloaddetails", "list", "per image store: datastore, downloadPercent, downloadState"},
	{"created", "date", "when it was registered"}, {"removed", "date", "when it was removed"},
}

var extractFields = []Field{
	{"id", "string", "the template's ID"}, {"name", "string", "its name"}, {"url", "string", "where to download it (expires)"},
	{"extractMode", "string", "HTTP_DOWNLOAD"}, {"state", "string", "DOWNLOAD_URL_CREATED"},
	{"zoneid", "string", "the zone"}, {"zonename", "string", "its name"},
}

// TemplateView is a template or ISO in one zone, as listTemplates and
// listIsos show it (the SDK's Template and Iso).
type TemplateView struct {
	ID                    string              `json:"id"`
	Name                  string              `json:"name"`
	DisplayText           string              `json:"displaytext"`
	IsPublic              bool                `json:"ispublic"`
	IsFeatured            bool                `json:"isfeatured"`
	IsExtractable         bool                `json:"isextractable"`
	IsReady               bool                `json:"isready"`
	IsDynamicallyScalable bool                `json:"isdynamicallyscalable"`
	CrossZones            bool                `json:"crossZones"`
	Created               string              `json:"created"`
	Removed               string              `json:"removed,omitempty"`
	Format                string              `json:"format"`
	OSTypeID              string              `json:"ostypeid,omitempty"`
	OSTypeName            string              `json:"ostypename,omitempty"`
	Account               string              `json:"account"`
	AccountID             string              `json:"accountid"`
	Domain                string              `json:"domain"`
	DomainID              string              `json:"domainid"`
	ZoneID                string              `json:"zoneid,omitempty"`
	ZoneName              string              `json:"zonename,omitempty"`
	Status                string              `json:"status,omitempty"`
	Size                  int64               `json:"size,omitempty"`
	PhysicalSize          int64               `json:"physicalsize,omitempty"`
	TemplateType          string              `json:"templatetype"`
	Hypervisor            string              `json:"hypervisor,omitempty"`
	Bootable              bool                `json:"bootable"`
	Checksum              string              `json:"checksum,omitempty"`
	PasswordEnabled       bool                `json:"passwordenabled"`
	SSHKeyEnabled         bool                `json:"sshkeyenabled"`
	RequiresHVM           bool                `json:"requireshvm"`
	Bits                  int                 `json:"bits"`
	TemplateTag           string              `json:"templatetag,omitempty"`
	URL                   string              `json:"url,omitempty"`
	DirectDownload        bool                `json:"directdownload"`
	DeployAsIs            bool                `json:"deployasis"`
	SourceTemplateID      string              `json:"sourcetemplateid,omitempty"`
	DownloadDetails       []map[string]string `json:"downloaddetails"`
	Tags                  []any               `json:"tags"`
	HasAnnotations        bool                `json:"hasannotations"`
	JobID                 string              `json:"jobid,omitempty"`
}

// ExtractView answers extractTemplate and extractIso (the SDK's
// ExtractTemplateResponse).
type ExtractView struct {
	ID               string `json:"id"`
	Name             string `json:"name"`
	ExtractID        string `json:"extractId"`
	ExtractMode      string `json:"extractMode"`
	State            string `json:"state"`
	Status           string `json:"status"`
	StorageType      string `json:"storagetype"`
	UploadPercentage int    `json:"uploadpercentage"`
	URL              string `json:"url"`
	ZoneID           string `json:"zoneid"`
	ZoneName         string `json:"zonename"`
	AccountID        string `json:"accountid"`
	Created          string `json:"created"`
}

// templateEntry is a template joined with one zone that holds it.
type templateEntry struct {
	models.Template `bun:",extend"`
	ZoneRefID       int64  `bun:"zref_id"`
	EntryZoneID     int64  `bun:"zref_zone_id"`
	ZoneUUID        string `bun:"zref_zone_uuid"`
	ZoneName        string `bun:"zref_zone_name"`
}

func (s *Server) templateEntries(ctx context.Context, withRemoved bool) *bun.SelectQuery {
	q := s.DB.NewSelect().Model((*templateEntry)(nil)).
		ColumnExpr("template.*").
		ColumnExpr("tz.id AS zref_id, z.id AS zref_zone_id, z.uuid AS zref_zone_uuid, z.name AS zref_zone_name").
		Join("JOIN template_zone_refs AS tz ON tz.template_id = template.id").
		Join("JOIN zones AS z ON z.id = tz.zone_id AND z.removed IS NULL")
	if withRemoved {
		return q.WhereAllWithDeleted()
	}
	return q.Where("tz.removed IS NULL")
}

// templateViews renders entries with their owners, OS types and, per zone,
// the download state of the copies on the zone's image stores.
func (s *Server) templateViews(ctx context.Context, entries []templateEntry) ([]TemplateView, error) {
	if len(entries) == 0 {
		return []TemplateView{}, nil
	}
	var acctIDs, osIDs, tmplIDs []int64
	for _, e := range entries {
		acctIDs, osIDs, tmplIDs = append(acctIDs, e.AccountID), append(osIDs, e.OSTypeID), append(tmplIDs, e.ID)
	}
	owners, err := loadOwners(ctx, s.DB, acctIDs)
	if err != nil {
		return nil, err
	}
	var oss []models.OSType
	if err := s.DB.NewSelect().Model(&oss).Where("id IN (?)", bun.In(osIDs)).WhereAllWithDeleted().Scan(ctx); err != nil {
		return nil, err
	}
	osByID := map[int64]models.OSType{}
	for _, o := range oss {
		osByID[o.ID] = o
	}
	var refs []models.TemplateStoreRef
	if err := s.DB.NewSelect().Model(&refs).Where("template_id IN (?)", bun.In(tmplIDs)).Where("destroyed = ?", false).
		Order("id ASC").Scan(ctx); err != nil {
		return nil, err
	}
	stores := map[int64]models.ImageStore{}
	var storeIDs []int64
	for _, r := range refs {
		storeIDs = append(storeIDs, r.StoreID)
	}
	if len(storeIDs) > 0 {
		var ss []models.ImageStore
		if err := s.DB.NewSelect().Model(&ss).Where("id IN (?)", bun.In(storeIDs)).WhereAllWithDeleted().Scan(ctx); err != nil {
			return nil, err
		}
		for _, st := range ss {
			stores[st.ID] = st
		}
	}
	var srcIDs []int64
	for _, e := range entries {
		if e.SourceTemplateID != 0 {
			srcIDs = append(srcIDs, e.SourceTemplateID)
		}
	}
	srcUUIDs := map[int64]string{}
	if len(srcIDs) > 0 {
		var srcs []models.Template
		if err := s.DB.NewSelect().Model(&srcs).Column("id", "uuid").Where("id IN (?)", bun.In(srcIDs)).WhereAllWithDeleted().Scan(ctx); err != nil {
			return nil, err
		}
		for _, t := range srcs {
			srcUUIDs[t.ID] = t.UUID
		}
	}
	out := make([]TemplateView, len(entries))
	for i, e := range entries {
		v := TemplateView{
			ID: e.UUID, Name: e.Name, DisplayText: e.DisplayText, IsPublic: e.Public, IsFeatured: e.Featured,
			IsExtractable: e.Extractable, CrossZones: e.CrossZones, Created: FormatTime(e.Created), Removed: FormatTime(e.Removed),
			Format: e.Format, TemplateType: e.Type, Hypervisor: e.HypervisorType, Bootable: e.Bootable,
			Checksum: e.Checksum, PasswordEnabled: e.EnablePassword, SSHKeyEnabled: e.EnableSSHKey,
			RequiresHVM: e.HVM, Bits: e.Bits, TemplateTag: e.TemplateTag, URL: e.URL, DirectDownload: e.DirectDownload,
			ZoneID: e.ZoneUUID, ZoneName: e.ZoneName, SourceTemplateID: srcUUIDs[e.SourceTemplateID],
			DownloadDetails: []map[string]string{}, Tags: []any{}, Size: e.Size, IsDynamicallyScalable: false,
		}
		if o, ok := owners[e.AccountID]; ok {
			v.Account, v.AccountID, v.Domain, v.DomainID = o.Account.Name, o.Account.UUID, o.Domain.Name, o.Domain.UUID
		}
		if o, ok := osByID[e.OSTypeID]; ok {
			v.OSTypeID, v.OSTypeName = o.UUID, o.DisplayName
		}
		// The zone's copies: on its own stores and on region-wide ones.
		var best *models.TemplateStoreRef
		for j := range refs {
			r := &refs[j]
			if r.TemplateID != e.ID || (r.ZoneID != 0 && r.ZoneID != e.EntryZoneID) {
				continue
			}
			v.DownloadDetails = append(v.DownloadDetails, map[string]string{
				"datastore": stores[r.StoreID].Name, "datastoreId": stores[r.StoreID].UUID, "datastoreRole": r.StoreRole,
				"downloadPercent": strconv.Itoa(r.DownloadPct), "downloadState": r.DownloadState,
			})
			if best == nil || refRank(r) > refRank(best) {
				best = r
			}
		}
		if best != nil {
			v.IsReady = best.DownloadState == models.DownloadDownloaded
			v.Status = refStatus(best)
			v.PhysicalSize = best.PhysicalSize
			if v.Size == 0 {
				v.Size = best.Size
			}
		}
		out[i] = v
	}
	return out, nil
}

// refRank orders a zone's copies so that the most useful one speaks for it.
func refRank(r *models.TemplateStoreRef) int {
	switch r.DownloadState {
	case models.DownloadDownloaded:
		return 1000
	case models.DownloadInProgress:
		return 100 + r.DownloadPct
	case models.DownloadNotDownloaded:
		return 50
	default:
		return 0
	}
}

// refStatus is CloudStack's status text of a copy.
func refStatus(r *models.TemplateStoreRef) string {
	switch r.DownloadState {
	case models.DownloadDownloaded:
		return "Download Complete"
	case models.DownloadInProgress:
		if r.DownloadPct >= 100 {
			return "Installing Template"
		}
		return strconv.Itoa(r.DownloadPct) + "% Downloaded"
	case models.DownloadError, models.DownloadAbandoned:
		if r.ErrorStr != "" {
			return r.ErrorStr
		}
		return "Download Error"
	default:
		if r.ErrorStr != "" {
			return r.ErrorStr
		}
		return "Processing"
	}
}

func imageKind(iso bool) (key, typ, what string) {
	if iso {
		return "iso", "Iso", "ISO"
	}
	return "template", "Template", "template"
}

// renderTemplate renders "uuid" (its first zone) or "uuid@zoneuuid".
func renderTemplate(ctx context.Context, s *Server, id string) (any, error) {
	tid, zone, _ := strings.Cut(id, "@")
	var entries []templateEntry
	q := s.templateEntries(ctx, false).Where("template.uuid = ?", tid).Order("z.id ASC")
	if zone != "" {
		q = q.Where("z.uuid = ?", zone)
	}
	if err := q.Scan(ctx, &entries); err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		var t models.Template
		if err := s.DB.NewSelect().Model(&t).Where("uuid = ?", tid).WhereAllWithDeleted().Scan(ctx); err != nil {
			return nil, models.NotFound(err, "template "+tid)
		}
		entries = []templateEntry{{Template: t}}
	}
	views, err := s.templateViews(ctx, entries[:1])
	if err != nil {
		return nil, err
	}
	return views[0], nil
}

// ---- register ----

func canonicalHypervisor(v string) (string, bool) {
	h, err := hypervisor.Canonical(v)
	if err != nil {
		return "", false
	}
	_, ok := hypervisorFormats[h]
	return h, ok
}

// checkImageURL accepts absolute http and https URLs only.
func checkImageURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return cserr.Param("url %q: want an http:// or https:// URL", clip(raw, 128))
	}
	return nil
}

// imageZones resolves zoneid (-1: every zone) and zoneids.
func (c *Call) imageZones() (zones []models.Zone, cross bool, err error) {
	ids := c.List("zoneids")
	switch z := strings.TrimSpace(c.Str("zoneid")); {
	case z == "-1":
		if len(ids) > 0 {
			return nil, false, cserr.Param("zoneid=-1 and zoneids cannot be given together")
		}
		if err := c.S.DB.NewSelect().Model(&zones).Order("id ASC").Scan(c.Ctx); err != nil {
			return nil, false, err
		}
		if len(zones) == 0 {
			return nil, false, cserr.Param("there is no zone to register in")
		}
		return zones, true, nil
	case z != "":
		ids = append([]string{z}, ids...)
	}
	if len(ids) == 0 {
		return nil, false, cserr.Param("Unable to execute API command %s due to missing parameter zoneid (or zoneids)", strings.ToLower(c.Cmd.Name))
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		zone, err := c.zoneByUUID(id)
		if err != nil {
			return nil, false, err
		}
		zones = append(zones, *zone)
	}
	return zones, false, nil
}

// zoneStores lists the writable image stores that serve a zone: its own and
// region-wide ones.
func zoneStores(ctx context.Context, db bun.IDB, zoneID int64) ([]models.ImageStore, error) {
	var stores []models.ImageStore
	err := db.NewSelect().Model(&stores).
		Where("role = ?", "Image").Where("readonly = ?", false).
		Where("(zone_id = ? OR zone_id IS NULL)", zoneID).Order("id ASC").Scan(ctx)
	return stores, err
}

// imageOwner is the account a registration is for: the caller, or the one
// named by account and domainid (which the caller must administer).
func (c *Call) imageOwner() (models.Account, error) {
	if !c.Has("account") {
		if c.Has("domainid") && c.Str("domainid") != c.Caller.Domain.UUID {
			return models.Account{}, cserr.Param("domainid needs account")
		}
		return c.Caller.Account, nil
	}
	o, err := c.accountRef()
	if err != nil {
		return models.Account{}, err
	}
	return o.Account, nil
}

func registerImage(c *Call, iso bool) (any, error) {
	key, typ, what := imageKind(iso)
	for _, p := range []string{"projectid", "details"} {
		if c.Has(p) || (p == "details" && len(c.Map(p)) > 0) {
			return nil, cserr.Param("parameter %s is not supported yet", p)
		}
	}
	for _, p := range []string{"directdownload", "deployasis"} {
		if c.Bool(p, false) {
			return nil, cserr.Param("parameter %s is not supported yet", p)
		}
	}
	name := strings.TrimSpace(c.Str("name"))
	if name == "" {
		return nil, cserr.Param("parameter name: must not be blank")
	}
	// vsphere://<vcenter>/<datacenter>/<path>: a template or VM already in
	// a vCenter of the zone, cloned into each datastore (cmd_vctemplates.go).
	vcsrc, err := vcenterSource(c, iso)
	if err != nil {
		return nil, err
	}
	if vcsrc == nil {
		if err := checkImageURL(c.Str("url")); err != nil {
			return nil, err
		}
	}
	checksum := strings.TrimSpace(c.Str("checksum"))
	if checksum != "" {
		cs, err := storage.ParseChecksum(checksum)
		if err != nil {
			return nil, cserr.Param("%v", err)
		}
		checksum = cs.String()
	}
	t := &models.Template{
		UUID: models.NewUUID(), Name: name, DisplayText: c.Str("displaytext"), URL: c.Str("url"), Checksum: checksum,
		Public: c.Bool("ispublic", false), Featured: c.Bool("isfeatured", false), Extractable: c.Bool("isextractable", false),
		EnablePassword: c.Bool("passwordenabled", false), EnableSSHKey: c.Bool("sshkeyenabled", false),
		Bits: 64, HVM: true, Bootable: true, Type: models.TemplateTypeUser, State: models.TemplateActive, Created: models.Now(),
	}
	if t.DisplayText == "" {
		t.DisplayText = name
	}
	if t.Featured && !c.Caller.IsAdmin() {
		return nil, cserr.Param("Only admins may register featured %ss", what)
	}
	if iso {
		t.Format = models.FormatISO
		t.Bootable = c.Bool("bootable", true)
		t.HVM = false
	} else {
		h, ok := canonicalHypervisor(c.Str("hypervisor"))
		if !ok {
			return nil, cserr.Param("Hypervisor Type: %s is invalid. Supported hypervisors: %s", clip(c.Str("hypervisor"), 32), strings.Join(sortedKeys(hypervisorFormats), ", "))
		}
		t.HypervisorType = h
		f := strings.ToUpper(strings.TrimSpace(c.Str("format")))
		if f == models.FormatISO {
			return nil, cserr.Param("format ISO: register ISOs with registerIso")
		}
		if !containsString(hypervisorFormats[h], f) {
			return nil, cserr.Param("Format %s is not supported for hypervisor %s: want one of %s", clip(c.Str("format"), 32), h, strings.Join(hypervisorFormats[h], ", "))
		}
		t.Format = f
		if err := refuseOVF(t.URL, f); err != nil {
			return nil, err
		}
		if vcsrc != nil && h != models.HypervisorVMware {
			return nil, cserr.Param("url %s: a vCenter template is for hypervisor VMware, not %s", clip(t.URL, 200), h)
		}
		if c.Has("bits") {
			if b := c.Int("bits", 64); b != 32 && b != 64 {
				return nil, cserr.Param("bits %d: want 32 or 64", b)
			}
			t.Bits = int(c.Int("bits", 64))
		}
		t.HVM = c.Bool("requireshvm", true)
		t.TemplateTag = c.Str("templatetag")
		tt, err := c.templateType(c.Str("templatetype"), c.BoolPtr("isrouting"))
		if err != nil {
			return nil, err
		}
		if tt != "" {
			t.Type = tt
		}
	}
	osID := c.Str("ostypeid")
	if osID == "" {
		osID = models.OSTypeOther64UUID
	}
	ost, err := c.osTypeByUUID(c.S.DB, osID)
	if err != nil {
		return nil, err
	}
	if ost == nil {
		return nil, cserr.Param("Unable to find OS type by id %s", osID)
	}
	t.OSTypeID = ost.ID
	owner, err := c.imageOwner()
	if err != nil {
		return nil, err
	}
	t.AccountID, t.DomainID = owner.ID, owner.DomainID
	zones, cross, err := c.imageZones()
	if err != nil {
		return nil, err
	}
	t.CrossZones = cross
	type placement struct {
		zone   models.Zone
		stores []models.ImageStore
	}
	var places []placement
	for _, z := range zones {
		stores, err := zoneStores(c.Ctx, c.S.DB, z.ID)
		if err != nil {
			return nil, err
		}
		if len(stores) == 0 {
			if cross {
				continue // the other zones get it; this one once it has a store
			}
			return nil, cserr.Param("zone %s has no image store (secondary storage) to hold the %s: add one with addImageStore", z.Name, what)
		}
		places = append(places, placement{z, stores})
	}
	if len(places) == 0 {
		return nil, cserr.Param("no zone has an image store (secondary storage) to hold the %s: add one with addImageStore", what)
	}
	if vcsrc != nil {
		kept := places[:0]
		for _, p := range places {
			cl, err := activities.VCenterClusterOf(c.Ctx, c.S.DB, p.zone.ID, *vcsrc)
			if err != nil {
				return nil, err
			}
			switch {
			case cl != nil:
				kept = append(kept, p)
			case !cross:
				return nil, cserr.Param("vCenter %s (datacenter %s) is not a vCenter of zone %s: add its vSphere cluster first", vcsrc.Host, vcsrc.Datacenter, p.zone.Name)
			}
		}
		if len(kept) == 0 {
			return nil, cserr.Param("vCenter %s (datacenter %s) is a vCenter of no zone: add its vSphere cluster first", vcsrc.Host, vcsrc.Datacenter)
		}
		places = kept
	}
	t.UniqueName = uniqueImageName(t)
	now := models.Now()
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewInsert().Model(t).Exec(ctx); err != nil {
			return err
		}
		seen := map[int64]bool{}
		for _, p := range places {
			if _, err := tx.NewInsert().Model(&models.TemplateZoneRef{ZoneID: p.zone.ID, TemplateID: t.ID, Created: now}).Exec(ctx); err != nil {
				return err
			}
			for _, st := range p.stores {
				if seen[st.ID] { // a region-wide store holds one copy for all zones
					continue
				}
				seen[st.ID] = true
				ref := &models.TemplateStoreRef{
					StoreID: st.ID, TemplateID: t.ID, ZoneID: st.ZoneID, StoreRole: st.Role, URL: t.URL,
					DownloadState: models.DownloadNotDownloaded, State: models.ObjectAllocated, Created: now, LastUpdated: now,
				}
				if _, err := tx.NewInsert().Model(ref).Exec(ctx); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	in := workflows.TemplateJobInput{TemplateID: t.ID, TemplateUUID: t.UUID, ISO: iso}
	takeBack := func() {
		if _, derr := c.S.DB.NewDelete().Model((*models.TemplateStoreRef)(nil)).Where("template_id = ?", t.ID).Exec(c.Ctx); derr == nil {
			_, _ = c.S.DB.NewDelete().Model((*models.TemplateZoneRef)(nil)).Where("template_id = ?", t.ID).ForceDelete().Exec(c.Ctx)
			_, _ = c.S.DB.NewDelete().Model(t).WherePK().ForceDelete().Exec(c.Ctx)
		}
	}
	job := &models.AsyncJob{}
	if vcsrc != nil {
		// Checked in the vCenter before answering: a source that is not
		// there leaves nothing registered.
		if _, err := c.RunJobSync(JobSpec{Workflow: workflows.RegisterVCenterTemplate, Input: in, InstanceType: typ, InstanceUUID: t.UUID,
			ResponseID: t.UUID, Summary: "register " + what + " " + t.Name + " from " + clip(t.URL, 200)}, 2*time.Minute); err != nil {
			takeBack()
			return nil, err
		}
	} else {
		job, _, err = c.startJob(JobSpec{Workflow: workflows.RegisterTemplate, Input: in, InstanceType: typ, InstanceUUID: t.UUID,
			ResponseID: t.UUID, Summary: "download " + what + " " + t.Name + " from " + clip(t.URL, 200)})
		if err != nil {
			takeBack() // nothing will download it
			return nil, err
		}
		_, _ = c.S.DB.NewUpdate().Model((*models.TemplateStoreRef)(nil)).Set("job_id = ?", job.UUID).Where("template_id = ?", t.ID).Exec(c.Ctx)
	}
	evt := "TEMPLATE.CREATE"
	if iso {
		evt = "ISO.CREATE"
	}
	c.Event(evt, typ, t.UUID, "registered "+what+" "+t.Name)
	var entries []templateEntry
	if err := c.S.templateEntries(c.Ctx, false).Where("template.id = ?", t.ID).Order("z.id ASC").Scan(c.Ctx, &entries); err != nil {
		return nil, err
	}
	views, err := c.S.templateViews(c.Ctx, entries)
	if err != nil {
		return nil, err
	}
	for i := range views {
		views[i].JobID = job.UUID
	}
	return List{Key: key, Count: len(views), Items: views}, nil
}

func uniqueImageName(t *models.Template) string {
	return strconv.FormatInt(t.AccountID, 10) + "-" + strings.ReplaceAll(t.UUID, "-", "")
}

func (c *Call) templateType(v string, isRouting *bool) (string, error) {
	if v == "" && isRouting == nil {
		return "", nil
	}
	if !c.Caller.IsRootAdmin() {
		return "", cserr.Param("only root admins may set templatetype or isrouting")
	}
	if v == "" {
		if *isRouting {
			return models.TemplateTypeRouting, nil
		}
		return models.TemplateTypeUser, nil
	}
	switch u := strings.ToUpper(v); u {
	case models.TemplateTypeUser, models.TemplateTypeRouting, models.TemplateTypeSystem, models.TemplateTypeBuiltin:
		return u, nil
	default:
		return "", cserr.Param("templatetype %q: want USER, ROUTING, SYSTEM or BUILTIN", clip(v, 32))
	}
}

func sortedKeys(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func containsString(list []string, v string) bool {
	for _, s := range list {
		if s == v {
			return true
		}
	}
	return false
}

// ---- list ----

func listImages(c *Call, iso bool) (any, error) {
	key, _, _ := imageKind(iso)
	param := "templatefilter"
	if iso {
		param = "isofilter"
	}
	filter := strings.ToLower(c.Str(param))
	if filter == "" {
		filter = "selfexecutable"
	}
	if !containsString(templateFilters, filter) {
		return nil, cserr.Param("%s %q: want one of %s", param, clip(c.Str(param), 32), strings.Join(templateFilters, ", "))
	}
	if filter == "all" && !c.Caller.IsAdmin() {
		return nil, cserr.Param("Filter all can be specified by admin only")
	}
	if c.Has("projectid") {
		return List{Key: key}, nil // no projects, so nothing of theirs
	}
	scope, err := c.Visibility()
	if err != nil {
		return nil, err
	}
	showRemoved := c.Bool("showremoved", false)
	q := c.S.templateEntries(c.Ctx, showRemoved).Order("template.sort_key ASC", "template.id ASC", "z.id ASC")
	if iso {
		q = q.Where("template.format = ?", models.FormatISO)
	} else {
		q = q.Where("template.format <> ?", models.FormatISO)
	}
	q = c.Filtered(q, Filter{ID: "template.uuid", Name: "template.name", Keyword: []string{"template.name", "template.display_text"}})
	if ids := c.List("ids"); len(ids) > 0 {
		q = q.Where("template.uuid IN (?)", bun.In(ids))
	}
	if c.Has("zoneid") {
		q = q.Where("z.uuid = ?", c.Str("zoneid"))
	}
	if h := c.Str("hypervisor"); h != "" {
		q = q.Where("LOWER(template.hypervisor_type) = ?", strings.ToLower(h))
	}
	if tt := c.Str("templatetype"); tt != "" {
		q = q.Where("template.type = ?", strings.ToUpper(tt))
	}
	if b := c.BoolPtr("bootable"); b != nil {
		q = q.Where("template.bootable = ?", *b)
	}
	if b := c.BoolPtr("ispublic"); b != nil {
		q = q.Where("template.public = ?", *b)
	}
	ready := "EXISTS (SELECT 1 FROM template_store_refs AS r WHERE r.template_id = template.id AND r.destroyed = ? AND r.download_state = ? AND (r.zone_id = z.id OR r.zone_id IS NULL))"
	if b := c.BoolPtr("isready"); b != nil {
		if *b {
			q = q.Where(ready, false, models.DownloadDownloaded)
		} else {
			q = q.Where("NOT "+ready, false, models.DownloadDownloaded)
		}
	}
	own := scope.Modifier("template.account_id", "template.domain_id")
	switch filter {
	case "featured":
		q = q.Where("template.featured = ? AND template.public = ?", true, true)
	case "community":
		q = q.Where("template.public = ? AND template.featured = ?", true, false)
	case "self", "selfexecutable":
		q = q.Apply(own)
	case "sharedexecutable":
		return List{Key: key}, nil // sharing with accounts is not supported yet
	case "executable":
		q = q.WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
			return q.Where("template.public = ?", true).WhereGroup(" OR ", func(q *bun.SelectQuery) *bun.SelectQuery { return own(q) })
		})
	case "all":
		if !c.Caller.IsRootAdmin() {
			q = q.WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
				return q.Where("template.public = ?", true).
					WhereOr("template.domain_id IN (?)", SubtreeIDs(c.S.DB, c.Caller.Domain.Path))
			})
		}
	}
	if strings.HasSuffix(filter, "executable") {
		q = q.Where(ready, false, models.DownloadDownloaded)
	}
	var entries []templateEntry
	var n int
	if c.Bool("showunique", false) {
		if err := q.Scan(c.Ctx, &entries); err != nil {
			return nil, err
		}
		seen := map[int64]bool{}
		uniq := entries[:0]
		for _, e := range entries {
			if !seen[e.ID] {
				seen[e.ID] = true
				uniq = append(uniq, e)
			}
		}
		n = len(uniq)
		start, end := c.pageOf(n)
		entries = uniq[start:end]
	} else {
		total, err := c.ScanPage(q, &entries)
		if err != nil {
			return nil, err
		}
		n = total
	}
	views, err := c.S.templateViews(c.Ctx, entries)
	if err != nil {
		return nil, err
	}
	return List{Key: key, Count: n, Items: views}, nil
}

// ---- lookups and permissions ----

// imageByUUID loads a live template (iso=false) or ISO.
func (c *Call) imageByUUID(id string, iso bool) (*models.Template, error) {
	_, _, what := imageKind(iso)
	var t models.Template
	err := c.S.DB.NewSelect().Model(&t).Where("uuid = ?", id).Limit(1).Scan(c.Ctx)
	if err == nil && (t.Format == models.FormatISO) == iso {
		return &t, nil
	}
	if err == nil || errors.Is(models.NotFound(err, ""), models.ErrNotFound) {
		return nil, cserr.Param("Unable to find %s by id %s", what, id)
	}
	return nil, err
}

// imageForChange loads a template the caller may change: its own, or one of
// an account it administers.
func (c *Call) imageForChange(id string, iso bool) (*models.Template, error) {
	t, err := c.imageByUUID(id, iso)
	if err != nil {
		return nil, err
	}
	owners, err := loadOwners(c.Ctx, c.S.DB, []int64{t.AccountID})
	if err != nil {
		return nil, err
	}
	o := owners[t.AccountID]
	if o == nil || !c.CanAdminAccount(&o.Account, &o.Domain) && o.Account.ID != c.Caller.Account.ID {
		return nil, cserr.New(cserr.AccountError, "The caller does not have permission to operate on %s %s", imageWhat(iso), t.UUID)
	}
	return t, nil
}

// imageForUse loads a template the caller may use: its own, public ones, or
// any an admin can reach.
func (c *Call) imageForUse(id string, iso bool) (*models.Template, error) {
	t, err := c.imageByUUID(id, iso)
	if err != nil {
		return nil, err
	}
	if t.Public {
		return t, nil
	}
	return c.imageForChange(id, iso)
}

func imageWhat(iso bool) string {
	_, _, w := imageKind(iso)
	return w
}

// ---- update ----

func updateImage(c *Call, iso bool) (any, error) {
	key, typ, what := imageKind(iso)
	if len(c.Map("details")) > 0 || c.Bool("cleanupdetails", false) {
		return nil, cserr.Param("template details are not supported yet")
	}
	t, err := c.imageForChange(c.Str("id"), iso)
	if err != nil {
		return nil, err
	}
	q := c.S.DB.NewUpdate().Model(t).WherePK().Set("update_count = update_count + 1")
	if c.Has("name") {
		if strings.TrimSpace(c.Str("name")) == "" {
			return nil, cserr.Param("parameter name: must not be blank")
		}
		q = q.Set("name = ?", strings.TrimSpace(c.Str("name")))
	}
	if c.Has("displaytext") {
		q = q.Set("display_text = ?", c.Str("displaytext"))
	}
	if c.Has("ostypeid") {
		ost, err := c.osTypeByUUID(c.S.DB, c.Str("ostypeid"))
		if err != nil {
			return nil, err
		}
		if ost == nil {
			return nil, cserr.Param("Unable to find OS type by id %s", c.Str("ostypeid"))
		}
		q = q.Set("os_type_id = ?", ost.ID)
	}
	if c.Has("format") {
		f := strings.ToUpper(c.Str("format"))
		switch {
		case iso && f != models.FormatISO:
			return nil, cserr.Param("an ISO's format is ISO")
		case !iso && !containsString(hypervisorFormats[t.HypervisorType], f):
			return nil, cserr.Param("Format %s is not supported for hypervisor %s: want one of %s", clip(c.Str("format"), 32), t.HypervisorType, strings.Join(hypervisorFormats[t.HypervisorType], ", "))
		}
		q = q.Set("format = ?", f)
	}
	for param, col := range map[string]string{"passwordenabled": "enable_password", "sshkeyenabled": "enable_sshkey", "bootable": "bootable", "requireshvm": "hvm"} {
		if b := c.BoolPtr(param); b != nil {
			q = q.Set("? = ?", bun.Ident(col), *b)
		}
	}
	if c.Has("sortkey") {
		q = q.Set("sort_key = ?", c.Int("sortkey", 0))
	}
	if c.Bool("isdynamicallyscalable", false) {
		return nil, cserr.Param("isdynamicallyscalable is not supported yet")
	}
	tt, err := c.templateType(c.Str("templatetype"), c.BoolPtr("isrouting"))
	if err != nil {
		return nil, err
	}
	if tt != "" {
		q = q.Set("type = ?", tt)
	}
	if _, err := q.Exec(c.Ctx); err != nil {
		return nil, err
	}
	evt := "TEMPLATE.UPDATE"
	if iso {
		evt = "ISO.UPDATE"
	}
	c.Event(evt, typ, t.UUID, "updated "+what+" "+t.Name)
	v, err := renderTemplate(c.Ctx, c.S, t.UUID)
	if err != nil {
		return nil, err
	}
	return Object{key: v}, nil
}

func updateImagePermissions(c *Call, iso bool) (any, error) {
	_, typ, what := imageKind(iso)
	if len(c.List("accounts")) > 0 || len(c.List("projectids")) > 0 {
		return nil, cserr.Param("sharing a %s with accounts or projects is not supported yet", what)
	}
	if op := strings.ToLower(c.Str("op")); op != "" && op != "add" && op != "remove" && op != "reset" {
		return nil, cserr.Param("op %q: want add, remove or reset", clip(c.Str("op"), 32))
	}
	t, err := c.imageForChange(c.Str("id"), iso)
	if err != nil {
		return nil, err
	}
	q := c.S.DB.NewUpdate().Model(t).WherePK().Set("update_count = update_count + 1")
	if b := c.BoolPtr("isfeatured"); b != nil {
		if !c.Caller.IsAdmin() {
			return nil, cserr.Param("Only admins may change the featured flag of a %s", what)
		}
		q = q.Set("featured = ?", *b)
	}
	if b := c.BoolPtr("isextractable"); b != nil {
		if !iso && !c.Caller.IsRootAdmin() {
			return nil, cserr.Param("Only ROOT admins are allowed to modify isExtractable attribute.")
		}
		q = q.Set("extractable = ?", *b)
	}
	if b := c.BoolPtr("ispublic"); b != nil {
		q = q.Set("public = ?", *b)
	}
	if _, err := q.Exec(c.Ctx); err != nil {
		return nil, err
	}
	c.Event(strings.ToUpper(what)+".UPDATE", typ, t.UUID, "updated permissions of "+what+" "+t.Name)
	return Success{Success: true}, nil
}

// ---- delete, copy, extract (jobs) ----

// cancelImageJobs asks Temporal to cancel the pending jobs working on the
// template (downloads and copies), so they stop writing into the stores.
func (c *Call) cancelImageJobs(t *models.Template) {
	var jobs []models.AsyncJob
	err := c.S.DB.NewSelect().Model(&jobs).Where("instance_uuid = ? AND status = ?", t.UUID, models.JobPending).Scan(c.Ctx)
	if err != nil {
		c.S.Log.Warn("cannot list jobs of template", "template", t.UUID, "err", err)
		return
	}
	for _, j := range jobs {
		if err := c.S.Temporal.CancelWorkflow(c.Ctx, j.UUID, ""); err != nil {
			c.S.Log.Info("cannot cancel job", "jobid", j.UUID, "err", err)
		}
	}
}

func deleteImage(c *Call, iso bool) (any, error) {
	_, typ, what := imageKind(iso)
	t, err := c.imageForChange(c.Str("id"), iso)
	if err != nil {
		return nil, err
	}
	in := workflows.TemplateJobInput{TemplateID: t.ID, TemplateUUID: t.UUID, ISO: iso}
	if c.Has("zoneid") {
		z, err := c.zoneByUUID(c.Str("zoneid"))
		if err != nil {
			return nil, err
		}
		n, err := c.S.DB.NewSelect().Model((*models.TemplateZoneRef)(nil)).Where("template_id = ? AND zone_id = ?", t.ID, z.ID).Count(c.Ctx)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, cserr.Param("%s %s is not in zone %s", what, t.UUID, z.Name)
		}
		in.ZoneIDs = []int64{z.ID}
	}
	if !c.Bool("forced", false) {
		col := "template_id"
		if iso {
			col = "iso_id"
		}
		var vms []models.VMInstance
		err := c.S.DB.NewSelect().Model(&vms).Column("uuid").Where("? = ?", bun.Ident(col), t.ID).
			Where("state NOT IN (?)", bun.In([]string{"Expunging", "Error"})).Limit(10).Scan(c.Ctx)
		if err != nil {
			return nil, err
		}
		if len(vms) > 0 {
			ids := make([]string, len(vms))
			for i, v := range vms {
				ids[i] = v.UUID
			}
			return nil, cserr.Param("Unable to delete %s %s because VM instances [%s] are using it; use forced=true to delete it anyway", what, t.UUID, strings.Join(ids, ", "))
		}
	}
	c.cancelImageJobs(t)
	return c.StartJob(JobSpec{Workflow: workflows.DeleteTemplate, Input: in, InstanceType: typ, InstanceUUID: t.UUID,
		Summary: "delete " + what + " " + t.Name})
}

func copyImage(c *Call, iso bool) (any, error) {
	_, typ, what := imageKind(iso)
	t, err := c.imageForChange(c.Str("id"), iso)
	if err != nil {
		return nil, err
	}
	if vsphere.IsTemplateSource(t.URL) {
		return nil, cserr.Param("%s %s is a vCenter template (%s), not on secondary storage: register it in the other zone from its own vCenter", what, t.Name, clip(t.URL, 200))
	}
	dest := c.List("destzoneids")
	if d := c.Str("destzoneid"); d != "" {
		dest = append([]string{d}, dest...)
	}
	if len(dest) == 0 {
		return nil, cserr.Param("Unable to execute API command %s due to missing parameter destzoneid (or destzoneids)", strings.ToLower(c.Cmd.Name))
	}
	in := workflows.TemplateJobInput{TemplateID: t.ID, TemplateUUID: t.UUID, ISO: iso, BaseURL: c.S.Cfg.PublicURL}
	if c.Has("sourcezoneid") {
		z, err := c.zoneByUUID(c.Str("sourcezoneid"))
		if err != nil {
			return nil, err
		}
		in.SourceZoneID = z.ID
	}
	ready := c.S.DB.NewSelect().Model((*models.TemplateStoreRef)(nil)).
		Where("template_id = ? AND destroyed = ? AND download_state = ?", t.ID, false, models.DownloadDownloaded)
	if in.SourceZoneID != 0 {
		ready = ready.Where("(zone_id = ? OR zone_id IS NULL)", in.SourceZoneID)
	}
	if ok, err := ready.Exists(c.Ctx); err != nil {
		return nil, err
	} else if !ok {
		return nil, cserr.Param("%s %s is not ready in the source zone: it can be copied once downloaded", what, t.UUID)
	}
	for _, id := range dest {
		z, err := c.zoneByUUID(id)
		if err != nil {
			return nil, err
		}
		if z.ID == in.SourceZoneID {
			return nil, cserr.Param("the destination zone %s is the source zone", z.Name)
		}
		stores, err := zoneStores(c.Ctx, c.S.DB, z.ID)
		if err != nil {
			return nil, err
		}
		if len(stores) == 0 {
			return nil, cserr.Param("zone %s has no image store (secondary storage) to hold the %s: add one with addImageStore", z.Name, what)
		}
		if !containsID(in.ZoneIDs, z.ID) {
			in.ZoneIDs = append(in.ZoneIDs, z.ID)
		}
		if in.ZoneUUID == "" {
			in.ZoneUUID = z.UUID
		}
	}
	return c.StartJob(JobSpec{Workflow: workflows.CopyTemplate, Input: in, InstanceType: typ, InstanceUUID: t.UUID,
		ResponseID: t.UUID, Summary: "copy " + what + " " + t.Name})
}

func extractImage(c *Call, iso bool) (any, error) {
	_, typ, what := imageKind(iso)
	switch strings.ToUpper(c.Str("mode")) {
	case "HTTP_DOWNLOAD":
	case "FTP_UPLOAD":
		return nil, cserr.Param("mode FTP_UPLOAD is not supported: use HTTP_DOWNLOAD")
	default:
		return nil, cserr.Param("mode %q: want HTTP_DOWNLOAD", clip(c.Str("mode"), 32))
	}
	t, err := c.imageForUse(c.Str("id"), iso)
	if err != nil {
		return nil, err
	}
	if !t.Extractable && !c.Caller.IsRootAdmin() {
		return nil, cserr.Param("Unable to extract %s id=%s as it's not extractable", what, t.UUID)
	}
	if vsphere.IsTemplateSource(t.URL) {
		return nil, cserr.Param("%s %s is a vCenter template (%s), not on secondary storage: export it from vCenter", what, t.Name, clip(t.URL, 200))
	}
	in := workflows.TemplateJobInput{TemplateID: t.ID, TemplateUUID: t.UUID, ISO: iso, BaseURL: c.S.Cfg.PublicURL}
	if c.Has("zoneid") {
		z, err := c.zoneByUUID(c.Str("zoneid"))
		if err != nil {
			return nil, err
		}
		in.ZoneIDs, in.ZoneUUID = []int64{z.ID}, z.UUID
	}
	return c.StartJob(JobSpec{Workflow: workflows.ExtractTemplate, Input: in, InstanceType: typ, InstanceUUID: t.UUID,
		ResponseID: t.UUID, Summary: "extract " + what + " " + t.Name})
}

// renderExtract renders ExtractTemplate's outcome: "<template uuid>|<store
// ref id>|<expiry unix>|<base URL>", with a freshly signed link.
func renderExtract(ctx context.Context, s *Server, id string) (any, error) {
	parts := strings.SplitN(id, "|", 4)
	if len(parts) != 4 {
		return nil, errors.New("malformed extract result " + clip(id, 64))
	}
	refID, _ := strconv.ParseInt(parts[1], 10, 64)
	expires, _ := strconv.ParseInt(parts[2], 10, 64)
	var t models.Template
	if err := s.DB.NewSelect().Model(&t).Where("uuid = ?", parts[0]).WhereAllWithDeleted().Scan(ctx); err != nil {
		return nil, models.NotFound(err, "template "+parts[0])
	}
	var ref models.TemplateStoreRef
	if err := s.DB.NewSelect().Model(&ref).Where("id = ?", refID).Scan(ctx); err != nil {
		return nil, models.NotFound(err, "template copy")
	}
	v := ExtractView{
		ID: t.UUID, Name: t.Name, ExtractMode: "HTTP_DOWNLOAD", State: "DOWNLOAD_URL_CREATED", Status: "DOWNLOAD_URL_CREATED",
		StorageType: "Image", UploadPercentage: 100, Created: FormatTime(models.Now()),
	}
	token, err := activities.DownloadToken(s.Secrets, refID, time.Unix(expires, 0))
	if err != nil {
		return nil, err
	}
	v.ExtractID = uuid.NewSHA1(uuid.NameSpaceURL, []byte(token)).String()
	v.URL = strings.TrimRight(parts[3], "/") + activities.DownloadPath + token
	var st models.ImageStore
	if err := s.DB.NewSelect().Model(&st).Where("id = ?", ref.StoreID).WhereAllWithDeleted().Scan(ctx); err == nil {
		zid := st.ZoneID
		if zid == 0 {
			zid = ref.ZoneID
		}
		var z models.Zone
		if err := s.DB.NewSelect().Model(&z).Where("id = ?", zid).WhereAllWithDeleted().Scan(ctx); err == nil {
			v.ZoneID, v.ZoneName = z.UUID, z.Name
		}
	}
	owners, err := loadOwners(ctx, s.DB, []int64{t.AccountID})
	if err == nil && owners[t.AccountID] != nil {
		v.AccountID = owners[t.AccountID].Account.UUID
	}
	return v, nil
}
