package api

import (
	"context"
	"errors"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

// Compute offerings keep their disk settings (storage tags, provisioning,
// IOPS, root disk size) in a disk offering of their own, as CloudStack does
// since 4.17. Such a disk offering is marked by this unique-name prefix and
// never listed on its own.
const computeOnlyPrefix = "compute-only:"

// rateParams are CloudStack's disk QoS rate limits; Nimbus has nowhere to
// keep them yet, so a non-zero value is refused rather than dropped.
var rateParams = []string{
	"bytesreadrate", "bytesreadratemax", "bytesreadratemaxlength",
	"byteswriterate", "byteswriteratemax", "byteswriteratemaxlength",
	"iopsreadrate", "iopsreadratemax", "iopsreadratemaxlength",
	"iopswriterate", "iopswriteratemax", "iopswriteratemaxlength",
}

func rateParamDecls() []Param {
	out := make([]Param, len(rateParams))
	for i, n := range rateParams {
		out[i] = Param{Name: n, Type: TLong, Description: "disk QoS rate limit (not supported yet: only 0 is accepted)"}
	}
	return out
}

func init() {
	diskParams := []Param{
		{Name: "tags", Type: TString, Length: 4096, Description: "storage tags: comma list a primary pool must carry"},
		{Name: "storagetype", Type: TString, Description: "local or shared (default)"},
		{Name: "provisioningtype", Type: TString, Description: "thin (default), sparse or fat"},
		{Name: "customizediops", Type: TBoolean, Description: "the user chooses min/max IOPS"},
		{Name: "miniops", Type: TLong, Description: "minimum IOPS"},
		{Name: "maxiops", Type: TLong, Description: "maximum IOPS"},
		{Name: "cachemode", Type: TString, Description: "none, writeback, writethrough or hypervisor_default"},
		{Name: "domainid", Type: TList, Of: TUUID, Length: 4096, Description: "restrict the offering to these domains (and their subdomains)"},
		{Name: "zoneid", Type: TList, Of: TUUID, Length: 4096, Description: "restrict the offering to these zones"},
	}
	Register(
		&Command{
			Name: "createServiceOffering", Description: "Creates a compute offering", Access: AccessRootAdmin,
			Params: append(append([]Param{
				{Name: "name", Type: TString, Required: true, Description: "the name of the offering"},
				{Name: "displaytext", Type: TString, Length: 4096, Description: "the description (default: the name)"},
				{Name: "cpunumber", Type: TInteger, Description: "number of CPUs; leave out for a customized offering"},
				{Name: "cpuspeed", Type: TInteger, Description: "speed of each CPU in MHz"},
				{Name: "memory", Type: TInteger, Description: "memory in MB (at least 32); leave out for a customized offering"},
				{Name: "customized", Type: TBoolean, Description: "the user chooses CPUs and memory at deploy time"},
				{Name: "mincpunumber", Type: TInteger, Description: "least CPUs of a customized offering"},
				{Name: "maxcpunumber", Type: TInteger, Description: "most CPUs of a customized offering"},
				{Name: "minmemory", Type: TInteger, Description: "least memory (MB) of a customized offering"},
				{Name: "maxmemory", Type: TInteger, Description: "most memory (MB) of a customized offering"},
				{Name: "hosttags", Type: TString, Length: 4096, Description: "host tags: comma list a host must carry"},
				{Name: "offerha", Type: TBoolean, Description: "VMs are restarted elsewhere when their host fails"},
				{Name: "limitcpuuse", Type: TBoolean, Description: "cap CPU use at the offering's speed"},
				{Name: "isvolatile", Type: TBoolean, Description: "the root disk is replaced on every reboot"},
				{Name: "issystem", Type: TBoolean, Description: "an offering for system VMs"},
				{Name: "systemvmtype", Type: TString, Description: "domainrouter, consoleproxy or secondarystoragevm (system offerings)"},
				{Name: "networkrate", Type: TInteger, Description: "network rate in Mbit/s"},
				{Name: "rootdisksize", Type: TLong, Description: "root disk size in GB"},
				{Name: "diskofferingid", Type: TUUID, Description: "use this disk offering for root disks instead of the disk parameters"},
				{Name: "dynamicscalingenabled", Type: TBoolean, Description: "VMs may be scaled while running (default true)"},
			}, diskParams...), rateParamDecls()...),
			ResponseName: "serviceoffering", Response: serviceOfferingFields, Handler: createServiceOffering,
		},
		&Command{
			Name: "updateServiceOffering", Description: "Updates a compute offering", Access: AccessRootAdmin,
			Params: []Param{
				{Name: "id", Type: TUUID, Required: true, Description: "the ID of the offering"},
				{Name: "name", Type: TString, Description: "the new name"},
				{Name: "displaytext", Type: TString, Length: 4096, Description: "the new description"},
				{Name: "sortkey", Type: TInteger, Description: "order in lists"},
				{Name: "hosttags", Type: TString, Length: 4096, Description: "the new host tags"},
				{Name: "storagetags", Type: TString, Length: 4096, Description: "the new storage tags"},
				{Name: "domainid", Type: TString, Length: 4096, Description: "comma list of domain IDs, or public"},
				{Name: "zoneid", Type: TString, Length: 4096, Description: "comma list of zone IDs, or all"},
			},
			ResponseName: "serviceoffering", Response: serviceOfferingFields, Handler: updateServiceOffering,
		},
		&Command{
			Name: "deleteServiceOffering", Description: "Deletes a compute offering", Access: AccessRootAdmin,
			Params:       []Param{{Name: "id", Type: TUUID, Required: true, Description: "the ID of the offering"}},
			ResponseName: "success", Response: successFields, Handler: deleteServiceOffering,
		},
		&Command{
			Name: "listServiceOfferings", Description: "Lists compute offerings", Access: AccessAll,
			Params: append(OwnerListParams(),
				Param{Name: "id", Type: TUUID, Description: "the ID of the offering"},
				Param{Name: "name", Type: TString, Description: "the name of the offering"},
				Param{Name: "zoneid", Type: TUUID, Description: "offerings available in this zone"},
				Param{Name: "issystem", Type: TBoolean, Description: "system VM offerings (admins only)"},
				Param{Name: "systemvmtype", Type: TString, Description: "domainrouter, consoleproxy or secondarystoragevm"},
				Param{Name: "storagetype", Type: TString, Description: "local or shared"},
				Param{Name: "cpunumber", Type: TInteger, Description: "offerings that can give this many CPUs"},
				Param{Name: "cpuspeed", Type: TInteger, Description: "offerings that can give this CPU speed (MHz)"},
				Param{Name: "memory", Type: TInteger, Description: "offerings that can give this much memory (MB)"},
				Param{Name: "virtualmachineid", Type: TUUID, Description: "offerings this VM may change to"},
			),
			ResponseName: "serviceoffering", Response: serviceOfferingFields, Handler: listServiceOfferings,
		},
		&Command{
			Name: "createDiskOffering", Description: "Creates a disk offering", Access: AccessRootAdmin,
			Params: append(append([]Param{
				{Name: "name", Type: TString, Required: true, Description: "the name of the offering"},
				{Name: "displaytext", Type: TString, Length: 4096, Description: "the description (default: the name)"},
				{Name: "disksize", Type: TLong, Description: "size in GB; leave out for a customized offering"},
				{Name: "customized", Type: TBoolean, Description: "the user chooses the size"},
				{Name: "displayoffering", Type: TBoolean, Description: "shown to users (default true)"},
				{Name: "disksizestrictness", Type: TBoolean, Description: "the size may not change with the offering"},
			}, diskParams...), rateParamDecls()...),
			ResponseName: "diskoffering", Response: diskOfferingFields, Handler: createDiskOffering,
		},
		&Command{
			Name: "updateDiskOffering", Description: "Updates a disk offering", Access: AccessRootAdmin,
			Params: append([]Param{
				{Name: "id", Type: TUUID, Required: true, Description: "the ID of the offering"},
				{Name: "name", Type: TString, Description: "the new name"},
				{Name: "displaytext", Type: TString, Length: 4096, Description: "the new description"},
				{Name: "sortkey", Type: TInteger, Description: "order in lists"},
				{Name: "displayoffering", Type: TBoolean, Description: "shown to users"},
				{Name: "tags", Type: TString, Length: 4096, Description: "the new storage tags"},
				{Name: "cachemode", Type: TString, Description: "none, writeback, writethrough or hypervisor_default"},
				{Name: "domainid", Type: TString, Length: 4096, Description: "comma list of domain IDs, or public"},
				{Name: "zoneid", Type: TString, Length: 4096, Description: "comma list of zone IDs, or all"},
			}, rateParamDecls()...),
			ResponseName: "diskoffering", Response: diskOfferingFields, Handler: updateDiskOffering,
		},
		&Command{
			Name: "deleteDiskOffering", Description: "Deletes a disk offering", Access: AccessRootAdmin,
			Params:       []Param{{Name: "id", Type: TUUID, Required: true, Description: "the ID of the offering"}},
			ResponseName: "success", Response: successFields, Handler: deleteDiskOffering,
		},
		&Command{
			Name: "listDiskOfferings", Description: "Lists disk offerings", Access: AccessAll,
			Params: append(OwnerListParams(),
				Param{Name: "id", Type: TUUID, Description: "the ID of the offering"},
				Param{Name: "name", Type: TString, Description: "the name of the offering"},
				Param{Name: "zoneid", Type: TUUID, Description: "offerings available in this zone"},
				Param{Name: "storagetype", Type: TString, Description: "local or shared"},
			),
			ResponseName: "diskoffering", Response: diskOfferingFields, Handler: listDiskOfferings,
		},
		&Command{
			Name: "listNetworkOfferings", Description: "Lists network offerings", Access: AccessAll,
			Params: append(ListParams(),
				Param{Name: "id", Type: TUUID, Description: "the ID of the offering"},
				Param{Name: "name", Type: TString, Description: "the name of the offering"},
				Param{Name: "displaytext", Type: TString, Description: "the description of the offering"},
				Param{Name: "guestiptype", Type: TString, Description: "Shared, Isolated or L2"},
				Param{Name: "traffictype", Type: TString, Description: "the traffic type, e.g. Guest"},
				Param{Name: "isdefault", Type: TBoolean, Description: "only default offerings"},
				Param{Name: "specifyvlan", Type: TBoolean, Description: "offerings whose networks take a VLAN"},
				Param{Name: "specifyipranges", Type: TBoolean, Description: "offerings whose networks take IP ranges"},
				Param{Name: "state", Type: TString, Description: "Enabled or Disabled"},
				Param{Name: "availability", Type: TString, Description: "Required or Optional"},
				Param{Name: "tags", Type: TString, Description: "offerings with these tags"},
				Param{Name: "supportedservices", Type: TList, Of: TString, Description: "offerings supporting all these services"},
				Param{Name: "sourcenatsupported", Type: TBoolean, Description: "offerings with source NAT"},
				Param{Name: "forvpc", Type: TBoolean, Description: "offerings for VPC networks"},
				Param{Name: "zoneid", Type: TUUID, Description: "offerings available in this zone"},
				Param{Name: "domainid", Type: TUUID, Description: "offerings available to this domain"},
			),
			ResponseName: "networkoffering", Response: networkOfferingFields, Handler: listNetworkOfferings,
		},
	)
	RegisterRenderer("ServiceOffering", func(ctx context.Context, s *Server, id string) (any, error) {
		var o models.ServiceOffering
		if err := s.DB.NewSelect().Model(&o).Where("uuid = ?", id).Scan(ctx); err != nil {
			return nil, models.NotFound(err, "service offering "+id)
		}
		v, err := serviceOfferingViews(ctx, s.DB, []models.ServiceOffering{o})
		if err != nil {
			return nil, err
		}
		return v[0], nil
	})
	RegisterRenderer("DiskOffering", func(ctx context.Context, s *Server, id string) (any, error) {
		var o models.DiskOffering
		if err := s.DB.NewSelect().Model(&o).Where("uuid = ?", id).Scan(ctx); err != nil {
			return nil, models.NotFound(err, "disk offering "+id)
		}
		v, err := diskOfferingViews(ctx, s.DB, []models.DiskOffering{o})
		if err != nil {
			return nil, err
		}
		return v[0], nil
	})
}

var serviceOfferingFields = []Field{
	{"id", "string", "the ID of the offering"}, {"name", "string", "its name"}, {"displaytext", "string", "its description"},
	{"cpunumber", "integer", "number of CPUs"}, {"cpuspeed", "integer", "MHz per CPU"}, {"memory", "integer", "memory in MB"},
	{"iscustomized", "boolean", "the user chooses CPUs and memory"}, {"offerha", "boolean", "HA enabled"},
	{"limitcpuuse", "boolean", "CPU use capped"}, {"isvolatile", "boolean", "root disk replaced on reboot"},
	{"issystem", "boolean", "for system VMs"}, {"systemvmtype", "string", "the system VM type"},
	{"hosttags", "string", "host tags"}, {"storagetags", "string", "storage tags"}, {"storagetype", "string", "local or shared"},
	{"provisioningtype", "string", "thin, sparse or fat"}, {"miniops", "long", "minimum IOPS"}, {"maxiops", "long", "maximum IOPS"},
	{"rootdisksize", "long", "root disk size in GB"}, {"diskofferingid", "string", "the root disk offering"},
	{"domainid", "string", "comma list of the domains it is restricted to"}, {"domain", "string", "their names"},
	{"zoneid", "string", "comma list of the zones it is restricted to"}, {"zone", "string", "their names"},
	{"networkrate", "integer", "Mbit/s"}, {"created", "date", "when it was created"},
	{"serviceofferingdetails", "map", "min/max CPU and memory of a customized offering"},
}

var diskOfferingFields = []Field{
	{"id", "string", "the ID of the offering"}, {"name", "string", "its name"}, {"displaytext", "string", "its description"},
	{"disksize", "long", "size in GB (0 when customized)"}, {"iscustomized", "boolean", "the user chooses the size"},
	{"iscustomizediops", "boolean", "the user chooses IOPS"}, {"miniops", "long", "minimum IOPS"}, {"maxiops", "long", "maximum IOPS"},
	{"tags", "string", "storage tags"}, {"storagetype", "string", "local or shared"}, {"provisioningtype", "string", "thin, sparse or fat"},
	{"cacheMode", "string", "the disk cache mode"}, {"displayoffering", "boolean", "shown to users"},
	{"domainid", "string", "comma list of the domains it is restricted to"}, {"domain", "string", "their names"},
	{"zoneid", "string", "comma list of the zones it is restricted to"}, {"zone", "string", "their names"},
	{"created", "date", "when it was created"},
}

var networkOfferingFields = []Field{
	{"id", "string", "the ID of the offering"}, {"name", "string", "its name"}, {"displaytext", "string", "its description"},
	{"guestiptype", "string", "Shared, Isolated or L2"}, {"traffictype", "string", "the traffic type"},
	{"state", "string", "Enabled or Disabled"}, {"isdefault", "boolean", "a default offering"},
	{"specifyvlan", "boolean", "networks take a VLAN"}, {"specifyipranges", "boolean", "networks take IP ranges"},
	{"availability", "string", "Required or Optional"}, {"service", "list", "services and their providers"},
}

// ServiceOfferingView is a compute offering as listServiceOfferings shows it
// (the SDK's ServiceOffering).
type ServiceOfferingView struct {
	ID                      string            `json:"id"`
	Name                    string            `json:"name"`
	DisplayText             string            `json:"displaytext"`
	CPUNumber               int               `json:"cpunumber,omitempty"`
	CPUSpeed                int               `json:"cpuspeed,omitempty"`
	Memory                  int               `json:"memory,omitempty"`
	Created                 string            `json:"created"`
	IsCustomized            bool              `json:"iscustomized"`
	IsCustomizedIOPS        bool              `json:"iscustomizediops"`
	OfferHA                 bool              `json:"offerha"`
	LimitCPUUse             bool              `json:"limitcpuuse"`
	IsVolatile              bool              `json:"isvolatile"`
	IsSystem                bool              `json:"issystem"`
	DefaultUse              bool              `json:"defaultuse"`
	SystemVMType            string            `json:"systemvmtype,omitempty"`
	HostTags                string            `json:"hosttags,omitempty"`
	StorageTags             string            `json:"storagetags,omitempty"`
	StorageType             string            `json:"storagetype"`
	ProvisioningType        string            `json:"provisioningtype"`
	MinIOPS                 int64             `json:"miniops,omitempty"`
	MaxIOPS                 int64             `json:"maxiops,omitempty"`
	RootDiskSize            int64             `json:"rootdisksize,omitempty"`
	CacheMode               string            `json:"cacheMode,omitempty"`
	DiskOfferingID          string            `json:"diskofferingid,omitempty"`
	DiskOfferingName        string            `json:"diskofferingname,omitempty"`
	DiskOfferingDisplayText string            `json:"diskofferingdisplaytext,omitempty"`
	DiskOfferingStrictness  bool              `json:"diskofferingstrictness"`
	DomainID                string            `json:"domainid,omitempty"`
	Domain                  string            `json:"domain,omitempty"`
	ZoneID                  string            `json:"zoneid,omitempty"`
	Zone                    string            `json:"zone,omitempty"`
	NetworkRate             int               `json:"networkrate,omitempty"`
	DynamicScalingEnabled   bool              `json:"dynamicscalingenabled"`
	EncryptRoot             bool              `json:"encryptroot"`
	HasAnnotations          bool              `json:"hasannotations"`
	Details                 map[string]string `json:"serviceofferingdetails,omitempty"`
}

// DiskOfferingView is a disk offering as listDiskOfferings shows it (the
// SDK's DiskOffering).
type DiskOfferingView struct {
	ID                 string `json:"id"`
	Name               string `json:"name"`
	DisplayText        string `json:"displaytext"`
	DiskSize           int64  `json:"disksize"` // GB
	Created            string `json:"created"`
	IsCustomized       bool   `json:"iscustomized"`
	IsCustomizedIOPS   bool   `json:"iscustomizediops"`
	MinIOPS            int64  `json:"miniops,omitempty"`
	MaxIOPS            int64  `json:"maxiops,omitempty"`
	Tags               string `json:"tags,omitempty"`
	StorageType        string `json:"storagetype"`
	ProvisioningType   string `json:"provisioningtype"`
	CacheMode          string `json:"cacheMode,omitempty"`
	DisplayOffering    bool   `json:"displayoffering"`
	DiskSizeStrictness bool   `json:"disksizestrictness"`
	Encrypt            bool   `json:"encrypt"`
	DomainID           string `json:"domainid,omitempty"`
	Domain             string `json:"domain,omitempty"`
	ZoneID             string `json:"zoneid,omitempty"`
	Zone               string `json:"zone,omitempty"`
	HasAnnotations     bool   `json:"hasannotations"`
}

// NetworkOfferingView is a network offering as listNetworkOfferings shows
// it (the SDK's NetworkOffering).
type NetworkOfferingView struct {
	ID                  string                   `json:"id"`
	Name                string                   `json:"name"`
	DisplayText         string                   `json:"displaytext"`
	GuestIPType         string                   `json:"guestiptype,omitempty"`
	TrafficType         string                   `json:"traffictype"`
	Tags                string                   `json:"tags,omitempty"`
	State               string                   `json:"state"`
	IsDefault           bool                     `json:"isdefault"`
	IsPersistent        bool                     `json:"ispersistent"`
	SpecifyVlan         bool                     `json:"specifyvlan"`
	SpecifyIPRanges     bool                     `json:"specifyipranges"`
	ConserveMode        bool                     `json:"conservemode"`
	EgressDefaultPolicy bool                     `json:"egressdefaultpolicy"`
	Availability        string                   `json:"availability"`
	NetworkRate         int                      `json:"networkrate,omitempty"`
	ServiceOfferingID   string                   `json:"serviceofferingid,omitempty"`
	ForVPC              bool                     `json:"forvpc"`
	InternetProtocol    string                   `json:"internetprotocol"`
	DomainID            string                   `json:"domainid,omitempty"`
	Domain              string                   `json:"domain,omitempty"`
	ZoneID              string                   `json:"zoneid,omitempty"`
	Zone                string                   `json:"zone,omitempty"`
	Created             string                   `json:"created"`
	Service             []NetworkOfferingService `json:"service"`
	HasAnnotations      bool                     `json:"hasannotations"`
}

// NetworkOfferingService is one service of a network offering.
type NetworkOfferingService struct {
	Name       string                    `json:"name"`
	Provider   []NetworkOfferingProvider `json:"provider"`
	Capability []any                     `json:"capability"`
}

// NetworkOfferingProvider names a service's provider.
type NetworkOfferingProvider struct {
	Name string `json:"name"`
}

// ---- scope lists (domain_ids, zone_ids) ----

// idList parses a comma list of internal ids.
func idList(s string) []int64 {
	var out []int64
	for _, f := range strings.Split(s, ",") {
		if n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

func joinIDs(ids []int64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(parts, ",")
}

func containsID(ids []int64, id int64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// offeringScope parses the domainid/zoneid restriction of an offering: a
// list of UUIDs, or (when allowAll) "public"/"all" for no restriction. set
// tells whether the parameter was given at all.
func (c *Call) offeringScope(param string, zones bool) (ids string, set bool, err error) {
	v := strings.TrimSpace(c.Str(param))
	if v == "" {
		return "", false, nil
	}
	if strings.EqualFold(v, "public") || strings.EqualFold(v, "all") {
		return "", true, nil
	}
	var out []int64
	for _, u := range strings.Split(v, ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		if zones {
			z, err := c.zoneByUUID(u)
			if err != nil {
				return "", true, err
			}
			out = append(out, z.ID)
		} else {
			d, err := c.DomainByUUID(u)
			if err != nil {
				return "", true, err
			}
			out = append(out, d.ID)
		}
	}
	return joinIDs(out), true, nil
}

// scopeNames resolves restriction lists to UUIDs and names for views.
type scopeNames struct {
	domains map[int64]models.Domain
	zones   map[int64]models.Zone
}

func loadScopeNames(ctx context.Context, db bun.IDB, domainLists, zoneLists []string) (*scopeNames, error) {
	sn := &scopeNames{domains: map[int64]models.Domain{}, zones: map[int64]models.Zone{}}
	var dids, zids []int64
	for _, l := range domainLists {
		dids = append(dids, idList(l)...)
	}
	for _, l := range zoneLists {
		zids = append(zids, idList(l)...)
	}
	if len(dids) > 0 {
		var ds []models.Domain
		if err := db.NewSelect().Model(&ds).Where("id IN (?)", bun.In(dids)).WhereAllWithDeleted().Scan(ctx); err != nil {
			return nil, err
		}
		for _, d := range ds {
			sn.domains[d.ID] = d
		}
	}
	if len(zids) > 0 {
		var zs []models.Zone
		if err := db.NewSelect().Model(&zs).Where("id IN (?)", bun.In(zids)).Scan(ctx); err != nil {
			return nil, err
		}
		for _, z := range zs {
			sn.zones[z.ID] = z
		}
	}
	return sn, nil
}

func (sn *scopeNames) domainList(ids string) (uuids, names string) {
	var us, ns []string
	for _, id := range idList(ids) {
		if d, ok := sn.domains[id]; ok {
			us, ns = append(us, d.UUID), append(ns, d.Name)
		}
	}
	return strings.Join(us, ","), strings.Join(ns, ",")
}

func (sn *scopeNames) zoneList(ids string) (uuids, names string) {
	var us, ns []string
	for _, id := range idList(ids) {
		if z, ok := sn.zones[id]; ok {
			us, ns = append(us, z.UUID), append(ns, z.Name)
		}
	}
	return strings.Join(us, ","), strings.Join(ns, ",")
}

// offeringVisible tells whether an offering restricted to domainIDs serves
// the caller: unrestricted, or restricted to the caller's domain or one of
// its ancestors; domain admins also see those of their subdomains.
func (c *Call) offeringVisible(domainIDs string, paths map[int64]string) bool {
	ids := idList(domainIDs)
	if len(ids) == 0 || c.Caller.IsRootAdmin() {
		return true
	}
	mine := c.Caller.Domain.Path
	for _, id := range ids {
		p, ok := paths[id]
		if !ok {
			continue
		}
		if InSubtree(mine, p) || (c.Caller.IsDomainAdmin() && InSubtree(p, mine)) {
			return true
		}
	}
	return false
}

func (c *Call) domainPaths(lists []string) (map[int64]string, error) {
	out := map[int64]string{}
	var ids []int64
	for _, l := range lists {
		ids = append(ids, idList(l)...)
	}
	if len(ids) == 0 {
		return out, nil
	}
	var ds []models.Domain
	if err := c.S.DB.NewSelect().Model(&ds).Column("id", "path").Where("id IN (?)", bun.In(ids)).Scan(c.Ctx); err != nil {
		return nil, err
	}
	for _, d := range ds {
		out[d.ID] = d.Path
	}
	return out, nil
}

// pageOf returns the bounds of the requested page within n items.
func (c *Call) pageOf(n int) (start, end int) {
	limit, offset := c.Page()
	start = min(offset, n)
	end = min(start+limit, n)
	return start, end
}

// ---- validation helpers ----

func positiveParam(c *Call, name string, least int64) (int64, error) {
	if !c.Has(name) {
		return 0, nil
	}
	v := c.Int(name, 0)
	if v < least {
		return 0, cserr.Param("parameter %s: %d is out of range: at least %d", name, v, least)
	}
	return v, nil
}

func storageTypeParam(c *Call, name string) (local bool, err error) {
	switch v := c.Str(name); {
	case v == "" || strings.EqualFold(v, "shared"):
		return false, nil
	case strings.EqualFold(v, "local"):
		return true, nil
	default:
		return false, cserr.Param("Invalid storage type %s specified, valid types are: 'local' and 'shared'", clip(v, 32))
	}
}

func provisioningParam(c *Call) (string, error) {
	switch v := strings.ToLower(c.Str("provisioningtype")); v {
	case "":
		return models.ProvisioningThin, nil
	case models.ProvisioningThin, models.ProvisioningSparse, models.ProvisioningFat:
		return v, nil
	default:
		return "", cserr.Param("provisioningtype %q: want thin, sparse or fat", clip(c.Str("provisioningtype"), 32))
	}
}

func cacheModeParam(c *Call) (string, error) {
	switch v := strings.ToLower(c.Str("cachemode")); v {
	case "", "none", "writeback", "writethrough", "hypervisor_default":
		return v, nil
	default:
		return "", cserr.Param("cachemode %q: want none, writeback, writethrough or hypervisor_default", clip(c.Str("cachemode"), 32))
	}
}

// tagList normalises a comma list of tags: trimmed, no empties.
func tagList(v string) string {
	var out []string
	for _, t := range strings.Split(v, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return strings.Join(out, ",")
}

func refuseRates(c *Call) error {
	for _, n := range rateParams {
		if c.Has(n) && c.Int(n, 0) != 0 {
			return cserr.Param("parameter %s: disk QoS rate limits are not supported yet", n)
		}
	}
	return nil
}

// iopsParams reads customizediops/miniops/maxiops with CloudStack's rules.
func iopsParams(c *Call) (custom bool, minIOPS, maxIOPS int64, err error) {
	custom = c.Bool("customizediops", false)
	if custom {
		if c.Has("miniops") || c.Has("maxiops") {
			return false, 0, 0, cserr.Param("miniops and maxiops cannot be given when customizediops is true")
		}
		return true, 0, 0, nil
	}
	if minIOPS, err = positiveParam(c, "miniops", 0); err != nil {
		return
	}
	if maxIOPS, err = positiveParam(c, "maxiops", 0); err != nil {
		return
	}
	if maxIOPS > 0 && minIOPS > maxIOPS {
		return false, 0, 0, cserr.Param("The min IOPS must be less than or equal to the max IOPS.")
	}
	return false, minIOPS, maxIOPS, nil
}

// ---- service offerings ----

func createServiceOffering(c *Call) (any, error) {
	if err := refuseRates(c); err != nil {
		return nil, err
	}
	name := strings.TrimSpace(c.Str("name"))
	if name == "" {
		return nil, cserr.Param("parameter name: must not be blank")
	}
	cpu, err := positiveParam(c, "cpunumber", 1)
	if err != nil {
		return nil, cserr.Param("Failed to create service offering %s: specify the cpu number value between 1 and %d", name, math.MaxInt32)
	}
	speed, err := positiveParam(c, "cpuspeed", 1)
	if err != nil {
		return nil, cserr.Param("Failed to create service offering %s: specify the cpu speed value between 1 and %d", name, math.MaxInt32)
	}
	mem, err := positiveParam(c, "memory", 32)
	if err != nil {
		return nil, cserr.Param("Failed to create service offering %s: specify the memory value between 32 and %d MB", name, math.MaxInt32)
	}
	customized := c.Bool("customized", !c.Has("cpunumber") && !c.Has("memory"))
	o := &models.ServiceOffering{
		UUID: models.NewUUID(), Name: name, DisplayText: c.Str("displaytext"),
		CPU: int(cpu), Speed: int(speed), RAMSize: int(mem), Customized: customized,
		HostTag: tagList(c.Str("hosttags")), HAEnabled: c.Bool("offerha", false),
		LimitCPUUse: c.Bool("limitcpuuse", false), IsVolatile: c.Bool("isvolatile", false),
		SystemUse: c.Bool("issystem", false), State: models.OfferingActive, Created: models.Now(),
	}
	if o.DisplayText == "" {
		o.DisplayText = name
	}
	if customized {
		if c.Has("cpunumber") || c.Has("memory") {
			return nil, cserr.Param("a customized offering takes no cpunumber or memory: bound them with mincpunumber/maxcpunumber and minmemory/maxmemory")
		}
		bounds := []struct {
			name  string
			least int64
			dst   *int
		}{{"mincpunumber", 1, &o.MinCPU}, {"maxcpunumber", 1, &o.MaxCPU}, {"minmemory", 32, &o.MinMemory}, {"maxmemory", 32, &o.MaxMemory}}
		for _, b := range bounds {
			v, err := positiveParam(c, b.name, b.least)
			if err != nil {
				return nil, err
			}
			*b.dst = int(v)
		}
		if o.MinCPU > 0 && o.MaxCPU > 0 && o.MinCPU > o.MaxCPU {
			return nil, cserr.Param("mincpunumber %d is greater than maxcpunumber %d", o.MinCPU, o.MaxCPU)
		}
		if o.MinMemory > 0 && o.MaxMemory > 0 && o.MinMemory > o.MaxMemory {
			return nil, cserr.Param("minmemory %d is greater than maxmemory %d", o.MinMemory, o.MaxMemory)
		}
	} else {
		if !c.Has("cpunumber") || !c.Has("memory") {
			return nil, cserr.Param("a compute offering that is not customized needs cpunumber and memory")
		}
		for _, n := range []string{"mincpunumber", "maxcpunumber", "minmemory", "maxmemory"} {
			if c.Has(n) {
				return nil, cserr.Param("parameter %s applies only to customized offerings", n)
			}
		}
	}
	if v := c.Str("systemvmtype"); v != "" {
		if !o.SystemUse {
			return nil, cserr.Param("systemvmtype needs issystem=true")
		}
		switch strings.ToLower(v) {
		case "domainrouter", "consoleproxy", "secondarystoragevm":
			o.VMType = strings.ToLower(v)
		default:
			return nil, cserr.Param("systemvmtype %q: want domainrouter, consoleproxy or secondarystoragevm", clip(v, 32))
		}
	} else if o.SystemUse {
		o.VMType = "domainrouter"
	}
	if c.Has("dynamicscalingenabled") && !c.Bool("dynamicscalingenabled", true) {
		return nil, cserr.Param("dynamicscalingenabled=false is not supported yet")
	}
	rate, err := positiveParam(c, "networkrate", 1)
	if err != nil {
		return nil, err
	}
	o.NetworkRate = int(rate)
	if o.UseLocalStorage, err = storageTypeParam(c, "storagetype"); err != nil {
		return nil, err
	}
	if o.DomainIDs, _, err = c.offeringScope("domainid", false); err != nil {
		return nil, err
	}
	if o.ZoneIDs, _, err = c.offeringScope("zoneid", true); err != nil {
		return nil, err
	}

	var disk *models.DiskOffering
	if c.Has("diskofferingid") {
		for _, n := range []string{"tags", "provisioningtype", "miniops", "maxiops", "customizediops", "rootdisksize", "cachemode"} {
			if c.Has(n) {
				return nil, cserr.Param("parameter %s cannot be given with diskofferingid: the disk offering sets it", n)
			}
		}
		d, err := c.diskOfferingByUUID(c.Str("diskofferingid"))
		if err != nil {
			return nil, err
		}
		if d.UseLocalStorage != o.UseLocalStorage {
			return nil, cserr.Param("the storage type of disk offering %s does not match the offering's storagetype", d.UUID)
		}
		o.DiskOfferingID = d.ID
	} else {
		prov, err := provisioningParam(c)
		if err != nil {
			return nil, err
		}
		cache, err := cacheModeParam(c)
		if err != nil {
			return nil, err
		}
		customIOPS, minIOPS, maxIOPS, err := iopsParams(c)
		if err != nil {
			return nil, err
		}
		root, err := positiveParam(c, "rootdisksize", 1)
		if err != nil {
			return nil, err
		}
		disk = &models.DiskOffering{
			UUID: models.NewUUID(), Name: name, UniqueName: computeOnlyPrefix + o.UUID, DisplayText: o.DisplayText,
			DiskSize: root * models.GiB, CustomizedIOPS: customIOPS, MinIOPS: minIOPS, MaxIOPS: maxIOPS,
			Tags: tagList(c.Str("tags")), UseLocalStorage: o.UseLocalStorage, ProvisioningType: prov, CacheMode: cache,
			DomainIDs: o.DomainIDs, ZoneIDs: o.ZoneIDs, State: models.OfferingActive, Created: o.Created,
		}
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if disk != nil {
			if _, err := tx.NewInsert().Model(disk).Exec(ctx); err != nil {
				return err
			}
			o.DiskOfferingID = disk.ID
		}
		_, err := tx.NewInsert().Model(o).Exec(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.Event("SERVICE.OFFERING.CREATE", "ServiceOffering", o.UUID, "created compute offering "+o.Name)
	views, err := serviceOfferingViews(c.Ctx, c.S.DB, []models.ServiceOffering{*o})
	if err != nil {
		return nil, err
	}
	return Object{"serviceoffering": views[0]}, nil
}

func (c *Call) serviceOfferingByUUID(id string) (*models.ServiceOffering, error) {
	var o models.ServiceOffering
	if err := c.S.DB.NewSelect().Model(&o).Where("uuid = ?", id).Limit(1).Scan(c.Ctx); err != nil {
		if errors.Is(models.NotFound(err, ""), models.ErrNotFound) {
			return nil, cserr.Param("Unable to find service offering by id %s", id)
		}
		return nil, err
	}
	return &o, nil
}

// diskOfferingByUUID loads a live, user-visible disk offering (not the disk
// part of a compute offering).
func (c *Call) diskOfferingByUUID(id string) (*models.DiskOffering, error) {
	var o models.DiskOffering
	err := c.S.DB.NewSelect().Model(&o).Where("uuid = ?", id).Limit(1).Scan(c.Ctx)
	if err != nil || strings.HasPrefix(o.UniqueName, computeOnlyPrefix) {
		if err == nil || errors.Is(models.NotFound(err, ""), models.ErrNotFound) {
			return nil, cserr.Param("Unable to find disk offering by id %s", id)
		}
		return nil, err
	}
	return &o, nil
}

func serviceOfferingViews(ctx context.Context, db bun.IDB, offs []models.ServiceOffering) ([]ServiceOfferingView, error) {
	var dls, zls []string
	var diskIDs []int64
	for _, o := range offs {
		dls, zls = append(dls, o.DomainIDs), append(zls, o.ZoneIDs)
		if o.DiskOfferingID != 0 {
			diskIDs = append(diskIDs, o.DiskOfferingID)
		}
	}
	sn, err := loadScopeNames(ctx, db, dls, zls)
	if err != nil {
		return nil, err
	}
	disks := map[int64]models.DiskOffering{}
	if len(diskIDs) > 0 {
		var ds []models.DiskOffering
		if err := db.NewSelect().Model(&ds).Where("id IN (?)", bun.In(diskIDs)).WhereAllWithDeleted().Scan(ctx); err != nil {
			return nil, err
		}
		for _, d := range ds {
			disks[d.ID] = d
		}
	}
	out := make([]ServiceOfferingView, len(offs))
	for i, o := range offs {
		v := ServiceOfferingView{
			ID: o.UUID, Name: o.Name, DisplayText: o.DisplayText, CPUNumber: o.CPU, CPUSpeed: o.Speed, Memory: o.RAMSize,
			Created: FormatTime(o.Created), IsCustomized: o.Customized, OfferHA: o.HAEnabled, LimitCPUUse: o.LimitCPUUse,
			IsVolatile: o.IsVolatile, IsSystem: o.SystemUse, SystemVMType: o.VMType, HostTags: o.HostTag,
			StorageType: "shared", ProvisioningType: models.ProvisioningThin, NetworkRate: o.NetworkRate,
			DynamicScalingEnabled: true, DefaultUse: o.SystemUse && o.UniqueName != "",
		}
		if o.UseLocalStorage {
			v.StorageType = "local"
		}
		v.DomainID, v.Domain = sn.domainList(o.DomainIDs)
		v.ZoneID, v.Zone = sn.zoneList(o.ZoneIDs)
		if d, ok := disks[o.DiskOfferingID]; ok {
			v.StorageTags, v.ProvisioningType, v.CacheMode = d.Tags, d.ProvisioningType, d.CacheMode
			v.IsCustomizedIOPS, v.MinIOPS, v.MaxIOPS = d.CustomizedIOPS, d.MinIOPS, d.MaxIOPS
			v.RootDiskSize = d.DiskSize / models.GiB
			if !strings.HasPrefix(d.UniqueName, computeOnlyPrefix) {
				v.DiskOfferingID, v.DiskOfferingName, v.DiskOfferingDisplayText = d.UUID, d.Name, d.DisplayText
			}
		}
		if o.Customized {
			det := map[string]string{}
			for k, n := range map[string]int{"mincpunumber": o.MinCPU, "maxcpunumber": o.MaxCPU, "minmemory": o.MinMemory, "maxmemory": o.MaxMemory} {
				if n > 0 {
					det[k] = strconv.Itoa(n)
				}
			}
			if len(det) > 0 {
				v.Details = det
			}
		}
		out[i] = v
	}
	return out, nil
}

func updateServiceOffering(c *Call) (any, error) {
	o, err := c.serviceOfferingByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	q := c.S.DB.NewUpdate().Model(o).WherePK()
	changed := false
	if c.Has("name") {
		if strings.TrimSpace(c.Str("name")) == "" {
			return nil, cserr.Param("parameter name: must not be blank")
		}
		q, changed = q.Set("name = ?", strings.TrimSpace(c.Str("name"))), true
	}
	if c.Has("displaytext") {
		q, changed = q.Set("display_text = ?", c.Str("displaytext")), true
	}
	if c.Has("sortkey") {
		q, changed = q.Set("sort_key = ?", c.Int("sortkey", 0)), true
	}
	if c.Has("hosttags") {
		q, changed = q.Set("host_tag = ?", tagList(c.Str("hosttags"))), true
	}
	doms, dset, err := c.offeringScope("domainid", false)
	if err != nil {
		return nil, err
	}
	if dset {
		q, changed = q.Set("domain_ids = ?", doms), true
	}
	zones, zset, err := c.offeringScope("zoneid", true)
	if err != nil {
		return nil, err
	}
	if zset {
		q, changed = q.Set("zone_ids = ?", zones), true
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if c.Has("storagetags") {
			if err := c.setComputeStorageTags(ctx, tx, o, tagList(c.Str("storagetags"))); err != nil {
				return err
			}
		}
		if changed {
			if _, err := q.Conn(tx).Exec(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if o, err = c.serviceOfferingByUUID(o.UUID); err != nil {
		return nil, err
	}
	c.Event("SERVICE.OFFERING.EDIT", "ServiceOffering", o.UUID, "updated compute offering "+o.Name)
	views, err := serviceOfferingViews(c.Ctx, c.S.DB, []models.ServiceOffering{*o})
	if err != nil {
		return nil, err
	}
	return Object{"serviceoffering": views[0]}, nil
}

// setComputeStorageTags sets the storage tags of a compute offering, which
// live in its own disk offering (made now for offerings that had none).
func (c *Call) setComputeStorageTags(ctx context.Context, tx bun.Tx, o *models.ServiceOffering, tags string) error {
	if o.DiskOfferingID == 0 {
		d := &models.DiskOffering{
			UUID: models.NewUUID(), Name: o.Name, UniqueName: computeOnlyPrefix + o.UUID, DisplayText: o.DisplayText,
			Tags: tags, UseLocalStorage: o.UseLocalStorage, ProvisioningType: models.ProvisioningThin,
			DomainIDs: o.DomainIDs, ZoneIDs: o.ZoneIDs, State: models.OfferingActive, Created: models.Now(),
		}
		if _, err := tx.NewInsert().Model(d).Exec(ctx); err != nil {
			return err
		}
		_, err := tx.NewUpdate().Model(o).Set("disk_offering_id = ?", d.ID).WherePK().Exec(ctx)
		return err
	}
	var d models.DiskOffering
	if err := tx.NewSelect().Model(&d).Where("id = ?", o.DiskOfferingID).WhereAllWithDeleted().Scan(ctx); err != nil {
		return err
	}
	if !strings.HasPrefix(d.UniqueName, computeOnlyPrefix) {
		return cserr.Param("the storage tags of offering %s come from disk offering %s: update that offering's tags", o.Name, d.UUID)
	}
	_, err := tx.NewUpdate().Model(&d).Set("tags = ?", tags).WherePK().Exec(ctx)
	return err
}

func deleteServiceOffering(c *Call) (any, error) {
	o, err := c.serviceOfferingByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	if o.SystemUse && o.UniqueName != "" {
		return nil, cserr.Param("Default service offerings cannot be deleted")
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewUpdate().Model(o).Set("state = ?", models.OfferingInactive).WherePK().Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model(o).WherePK().Exec(ctx); err != nil {
			return err
		}
		if o.DiskOfferingID == 0 {
			return nil
		}
		// Its own disk part goes with it; a shared disk offering stays.
		_, err := tx.NewUpdate().Model((*models.DiskOffering)(nil)).
			Set("state = ?", models.OfferingInactive).Set("removed = ?", models.Now()).
			Where("id = ? AND unique_name = ?", o.DiskOfferingID, computeOnlyPrefix+o.UUID).Exec(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.Event("SERVICE.OFFERING.DELETE", "ServiceOffering", o.UUID, "deleted compute offering "+o.Name)
	return Success{Success: true}, nil
}

func listServiceOfferings(c *Call) (any, error) {
	var offs []models.ServiceOffering
	q := c.S.DB.NewSelect().Model(&offs).Where("state = ?", models.OfferingActive).Order("sort_key ASC", "id ASC")
	q = c.Filtered(q, Filter{ID: "uuid", Name: "name", Keyword: []string{"name", "display_text"}})
	system := c.Bool("issystem", false)
	if system && !c.Caller.IsAdmin() {
		return nil, cserr.Param("Only ROOT admins and Domain admins can list system service offerings.")
	}
	q = q.Where("system_use = ?", system)
	if v := c.Str("systemvmtype"); v != "" {
		q = q.Where("vm_type = ?", strings.ToLower(v))
	}
	if c.Has("storagetype") {
		local, err := storageTypeParam(c, "storagetype")
		if err != nil {
			return nil, err
		}
		q = q.Where("use_local_storage = ?", local)
	}
	if c.Has("virtualmachineid") {
		var vm models.VMInstance
		if err := c.S.DB.NewSelect().Model(&vm).Where("uuid = ?", c.Str("virtualmachineid")).Limit(1).Scan(c.Ctx); err != nil {
			if errors.Is(models.NotFound(err, ""), models.ErrNotFound) {
				return nil, cserr.Param("Unable to find virtual machine by id %s", c.Str("virtualmachineid"))
			}
			return nil, err
		}
		q = q.Where("id <> ?", vm.ServiceOfferingID)
	}
	if err := q.Scan(c.Ctx); err != nil {
		return nil, err
	}
	zoneID, domainID, err := offeringListScope(c)
	if err != nil {
		return nil, err
	}
	var lists []string
	for _, o := range offs {
		lists = append(lists, o.DomainIDs)
	}
	paths, err := c.domainPaths(lists)
	if err != nil {
		return nil, err
	}
	cpu, speed, mem := c.Int("cpunumber", 0), c.Int("cpuspeed", 0), c.Int("memory", 0)
	kept := offs[:0]
	for _, o := range offs {
		if !c.offeringVisible(o.DomainIDs, paths) {
			continue
		}
		if zoneID != 0 && o.ZoneIDs != "" && !containsID(idList(o.ZoneIDs), zoneID) {
			continue
		}
		if domainID != 0 && !containsID(idList(o.DomainIDs), domainID) {
			continue
		}
		if !fits(o.Customized, int64(o.CPU), int64(o.MinCPU), int64(o.MaxCPU), cpu) ||
			!fits(o.Customized, int64(o.RAMSize), int64(o.MinMemory), int64(o.MaxMemory), mem) ||
			(speed > 0 && o.Speed > 0 && int64(o.Speed) < speed) {
			continue
		}
		kept = append(kept, o)
	}
	start, end := c.pageOf(len(kept))
	views, err := serviceOfferingViews(c.Ctx, c.S.DB, kept[start:end])
	if err != nil {
		return nil, err
	}
	return List{Key: "serviceoffering", Count: len(kept), Items: views}, nil
}

// fits tells whether an offering can give want (0: no filter): a fixed one
// gives at least that much, a customized one allows it within its bounds.
func fits(customized bool, fixed, least, most, want int64) bool {
	if want <= 0 {
		return true
	}
	if !customized {
		return fixed >= want
	}
	return (least == 0 || least <= want) && (most == 0 || most >= want)
}

// ---- disk offerings ----

func createDiskOffering(c *Call) (any, error) {
	if err := refuseRates(c); err != nil {
		return nil, err
	}
	name := strings.TrimSpace(c.Str("name"))
	if name == "" {
		return nil, cserr.Param("parameter name: must not be blank")
	}
	customized := c.Bool("customized", false)
	size, err := positiveParam(c, "disksize", 1)
	if err != nil {
		return nil, cserr.Param("Please specify a disk size of at least 1 GB.")
	}
	if size > maxDiskGB {
		return nil, cserr.Param("The maximum size for a disk is %d GB.", maxDiskGB)
	}
	switch {
	case customized && c.Has("disksize"):
		return nil, cserr.Param("Disksize is not allowed for a customized disk offering")
	case !customized && !c.Has("disksize"):
		return nil, cserr.Param("Disksize is required for a non-customized disk offering")
	}
	local, err := storageTypeParam(c, "storagetype")
	if err != nil {
		return nil, err
	}
	prov, err := provisioningParam(c)
	if err != nil {
		return nil, err
	}
	cache, err := cacheModeParam(c)
	if err != nil {
		return nil, err
	}
	customIOPS, minIOPS, maxIOPS, err := iopsParams(c)
	if err != nil {
		return nil, err
	}
	d := &models.DiskOffering{
		UUID: models.NewUUID(), Name: name, DisplayText: c.Str("displaytext"), DiskSize: size * models.GiB,
		Customized: customized, CustomizedIOPS: customIOPS, MinIOPS: minIOPS, MaxIOPS: maxIOPS,
		Tags: tagList(c.Str("tags")), UseLocalStorage: local, ProvisioningType: prov, CacheMode: cache,
		DisplayOffering: c.Bool("displayoffering", true), State: models.OfferingActive, Created: models.Now(),
	}
	if d.DisplayText == "" {
		d.DisplayText = name
	}
	if d.DomainIDs, _, err = c.offeringScope("domainid", false); err != nil {
		return nil, err
	}
	if d.ZoneIDs, _, err = c.offeringScope("zoneid", true); err != nil {
		return nil, err
	}
	if _, err := c.S.DB.NewInsert().Model(d).Exec(c.Ctx); err != nil {
		return nil, err
	}
	c.Event("DISK.OFFERING.CREATE", "DiskOffering", d.UUID, "created disk offering "+d.Name)
	views, err := diskOfferingViews(c.Ctx, c.S.DB, []models.DiskOffering{*d})
	if err != nil {
		return nil, err
	}
	return Object{"diskoffering": views[0]}, nil
}

// maxDiskGB is CloudStack's storage.max.volume.size default.
const maxDiskGB = 2000

func diskOfferingViews(ctx context.Context, db bun.IDB, offs []models.DiskOffering) ([]DiskOfferingView, error) {
	var dls, zls []string
	for _, o := range offs {
		dls, zls = append(dls, o.DomainIDs), append(zls, o.ZoneIDs)
	}
	sn, err := loadScopeNames(ctx, db, dls, zls)
	if err != nil {
		return nil, err
	}
	out := make([]DiskOfferingView, len(offs))
	for i, o := range offs {
		v := DiskOfferingView{
			ID: o.UUID, Name: o.Name, DisplayText: o.DisplayText, DiskSize: o.DiskSize / models.GiB,
			Created: FormatTime(o.Created), IsCustomized: o.Customized, IsCustomizedIOPS: o.CustomizedIOPS,
			MinIOPS: o.MinIOPS, MaxIOPS: o.MaxIOPS, Tags: o.Tags, StorageType: "shared",
			ProvisioningType: o.ProvisioningType, CacheMode: o.CacheMode, DisplayOffering: o.DisplayOffering,
		}
		if o.UseLocalStorage {
			v.StorageType = "local"
		}
		if v.ProvisioningType == "" {
			v.ProvisioningType = models.ProvisioningThin
		}
		v.DomainID, v.Domain = sn.domainList(o.DomainIDs)
		v.ZoneID, v.Zone = sn.zoneList(o.ZoneIDs)
		out[i] = v
	}
	return out, nil
}

func updateDiskOffering(c *Call) (any, error) {
	if err := refuseRates(c); err != nil {
		return nil, err
	}
	d, err := c.diskOfferingByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	q := c.S.DB.NewUpdate().Model(d).WherePK()
	changed := false
	if c.Has("name") {
		if strings.TrimSpace(c.Str("name")) == "" {
			return nil, cserr.Param("parameter name: must not be blank")
		}
		q, changed = q.Set("name = ?", strings.TrimSpace(c.Str("name"))), true
	}
	if c.Has("displaytext") {
		q, changed = q.Set("display_text = ?", c.Str("displaytext")), true
	}
	if c.Has("sortkey") {
		q, changed = q.Set("sort_key = ?", c.Int("sortkey", 0)), true
	}
	if b := c.BoolPtr("displayoffering"); b != nil {
		q, changed = q.Set("display_offering = ?", *b), true
	}
	if c.Has("tags") {
		q, changed = q.Set("tags = ?", tagList(c.Str("tags"))), true
	}
	if c.Has("cachemode") {
		cache, err := cacheModeParam(c)
		if err != nil {
			return nil, err
		}
		q, changed = q.Set("cache_mode = ?", cache), true
	}
	doms, dset, err := c.offeringScope("domainid", false)
	if err != nil {
		return nil, err
	}
	if dset {
		q, changed = q.Set("domain_ids = ?", doms), true
	}
	zones, zset, err := c.offeringScope("zoneid", true)
	if err != nil {
		return nil, err
	}
	if zset {
		q, changed = q.Set("zone_ids = ?", zones), true
	}
	if changed {
		if _, err := q.Exec(c.Ctx); err != nil {
			return nil, err
		}
	}
	if d, err = c.diskOfferingByUUID(d.UUID); err != nil {
		return nil, err
	}
	c.Event("DISK.OFFERING.EDIT", "DiskOffering", d.UUID, "updated disk offering "+d.Name)
	views, err := diskOfferingViews(c.Ctx, c.S.DB, []models.DiskOffering{*d})
	if err != nil {
		return nil, err
	}
	return Object{"diskoffering": views[0]}, nil
}

func deleteDiskOffering(c *Call) (any, error) {
	d, err := c.diskOfferingByUUID(c.Str("id"))
	if err != nil {
		return nil, err
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewUpdate().Model(d).Set("state = ?", models.OfferingInactive).WherePK().Exec(ctx); err != nil {
			return err
		}
		_, err := tx.NewDelete().Model(d).WherePK().Exec(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.Event("DISK.OFFERING.DELETE", "DiskOffering", d.UUID, "deleted disk offering "+d.Name)
	return Success{Success: true}, nil
}

func listDiskOfferings(c *Call) (any, error) {
	var offs []models.DiskOffering
	q := c.S.DB.NewSelect().Model(&offs).
		Where("state = ?", models.OfferingActive).
		Where("system_use = ?", false).
		Where("(unique_name IS NULL OR SUBSTR(unique_name, 1, ?) <> ?)", len(computeOnlyPrefix), computeOnlyPrefix).
		Order("sort_key ASC", "id ASC")
	q = c.Filtered(q, Filter{ID: "uuid", Name: "name", Keyword: []string{"name", "display_text"}})
	if !c.Caller.IsAdmin() {
		q = q.Where("display_offering = ?", true)
	}
	if c.Has("storagetype") {
		local, err := storageTypeParam(c, "storagetype")
		if err != nil {
			return nil, err
		}
		q = q.Where("use_local_storage = ?", local)
	}
	if err := q.Scan(c.Ctx); err != nil {
		return nil, err
	}
	zoneID, domainID, err := offeringListScope(c)
	if err != nil {
		return nil, err
	}
	var lists []string
	for _, o := range offs {
		lists = append(lists, o.DomainIDs)
	}
	paths, err := c.domainPaths(lists)
	if err != nil {
		return nil, err
	}
	kept := offs[:0]
	for _, o := range offs {
		if !c.offeringVisible(o.DomainIDs, paths) {
			continue
		}
		if zoneID != 0 && o.ZoneIDs != "" && !containsID(idList(o.ZoneIDs), zoneID) {
			continue
		}
		if domainID != 0 && !containsID(idList(o.DomainIDs), domainID) {
			continue
		}
		kept = append(kept, o)
	}
	start, end := c.pageOf(len(kept))
	views, err := diskOfferingViews(c.Ctx, c.S.DB, kept[start:end])
	if err != nil {
		return nil, err
	}
	return List{Key: "diskoffering", Count: len(kept), Items: views}, nil
}

// ---- network offerings ----

func listNetworkOfferings(c *Call) (any, error) {
	var offs []models.NetworkOffering
	q := c.S.DB.NewSelect().Model(&offs).Order("sort_key ASC", "id ASC")
	q = c.Filtered(q, Filter{ID: "uuid", Name: "name", Keyword: []string{"name", "display_text"}})
	eq := func(param, col string) {
		if v := c.Str(param); v != "" {
			q = q.Where("LOWER(?) = ?", bun.Ident(col), strings.ToLower(v))
		}
	}
	eq("displaytext", "display_text")
	eq("guestiptype", "guest_type")
	eq("traffictype", "traffic_type")
	eq("state", "state")
	eq("availability", "availability")
	eq("tags", "tags")
	for param, col := range map[string]string{"isdefault": "is_default", "specifyvlan": "specify_vlan", "specifyipranges": "specify_ip_ranges"} {
		if b := c.BoolPtr(param); b != nil {
			q = q.Where("? = ?", bun.Ident(col), *b)
		}
	}
	if !c.Caller.IsAdmin() {
		q = q.Where("system_only = ?", false)
	}
	if c.Bool("forvpc", false) {
		return List{Key: "networkoffering"}, nil // no VPC offerings yet
	}
	if err := q.Scan(c.Ctx); err != nil {
		return nil, err
	}
	ids := make([]int64, len(offs))
	for i, o := range offs {
		ids[i] = o.ID
	}
	services := map[int64][]models.NetworkOfferingService{}
	if len(ids) > 0 {
		var rows []models.NetworkOfferingService
		if err := c.S.DB.NewSelect().Model(&rows).Where("network_offering_id IN (?)", bun.In(ids)).Order("id ASC").Scan(c.Ctx); err != nil {
			return nil, err
		}
		for _, r := range rows {
			services[r.NetworkOfferingID] = append(services[r.NetworkOfferingID], r)
		}
	}
	var zoneID, domainID int64
	if c.Has("zoneid") {
		z, err := c.zoneByUUID(c.Str("zoneid"))
		if err != nil {
			return nil, err
		}
		zoneID = z.ID
	}
	if c.Has("domainid") {
		d, err := c.DomainByUUID(c.Str("domainid"))
		if err != nil {
			return nil, err
		}
		domainID = d.ID
	}
	want := c.List("supportedservices")
	if c.Bool("sourcenatsupported", false) {
		want = append(want, "SourceNat")
	}
	var lists, zlists []string
	for _, o := range offs {
		lists, zlists = append(lists, o.DomainIDs), append(zlists, o.ZoneIDs)
	}
	paths, err := c.domainPaths(lists)
	if err != nil {
		return nil, err
	}
	kept := offs[:0]
	for _, o := range offs {
		if !c.offeringVisible(o.DomainIDs, paths) {
			continue
		}
		if zoneID != 0 && o.ZoneIDs != "" && !containsID(idList(o.ZoneIDs), zoneID) {
			continue
		}
		if domainID != 0 && o.DomainIDs != "" && !containsID(idList(o.DomainIDs), domainID) {
			continue
		}
		if !hasServices(services[o.ID], want) {
			continue
		}
		kept = append(kept, o)
	}
	sn, err := loadScopeNames(c.Ctx, c.S.DB, lists, zlists)
	if err != nil {
		return nil, err
	}
	start, end := c.pageOf(len(kept))
	views := make([]NetworkOfferingView, 0, end-start)
	for _, o := range kept[start:end] {
		v := NetworkOfferingView{
			ID: o.UUID, Name: o.Name, DisplayText: o.DisplayText, GuestIPType: o.GuestType, TrafficType: o.TrafficType,
			Tags: o.Tags, State: o.State, IsDefault: o.IsDefault, IsPersistent: o.IsPersistent,
			SpecifyVlan: o.SpecifyVlan, SpecifyIPRanges: o.SpecifyIPRanges, ConserveMode: o.ConserveMode,
			EgressDefaultPolicy: o.EgressDefaultAllow, Availability: o.Availability, NetworkRate: o.NetworkRate,
			InternetProtocol: "IPv4", Created: FormatTime(o.Created), Service: []NetworkOfferingService{},
		}
		v.DomainID, v.Domain = sn.domainList(o.DomainIDs)
		v.ZoneID, v.Zone = sn.zoneList(o.ZoneIDs)
		byName := map[string]*NetworkOfferingService{}
		var order []string
		for _, s := range services[o.ID] {
			if byName[s.Service] == nil {
				byName[s.Service] = &NetworkOfferingService{Name: s.Service, Capability: []any{}}
				order = append(order, s.Service)
			}
			byName[s.Service].Provider = append(byName[s.Service].Provider, NetworkOfferingProvider{Name: s.Provider})
		}
		sort.Strings(order)
		for _, n := range order {
			v.Service = append(v.Service, *byName[n])
		}
		views = append(views, v)
	}
	return List{Key: "networkoffering", Count: len(kept), Items: views}, nil
}

func hasServices(have []models.NetworkOfferingService, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if strings.EqualFold(h.Service, w) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// offeringListScope resolves the zoneid and domainid filters of an offering
// list (0 when absent); a domain the caller cannot reach is a 531.
func offeringListScope(c *Call) (zoneID, domainID int64, err error) {
	if c.Has("zoneid") {
		z, err := c.zoneByUUID(c.Str("zoneid"))
		if err != nil {
			return 0, 0, err
		}
		zoneID = z.ID
	}
	if c.Has("domainid") {
		d, err := c.DomainByUUID(c.Str("domainid"))
		if err != nil {
			return 0, 0, err
		}
		if !c.CanAccessDomain(d) {
			return 0, 0, cserr.New(cserr.AccountError, "The caller does not have access to domain %s", d.UUID)
		}
		domainID = d.ID
	}
	return zoneID, domainID, nil
}
