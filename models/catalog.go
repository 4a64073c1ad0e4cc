package models

import (
	"time"

	"github.com/uptrace/bun"
)

// OSCategory groups OS types (listOsCategories).
type OSCategory struct {
	bun.BaseModel `bun:"table:os_categories"`
	ID            int64  `bun:"id,pk,autoincrement"`
	UUID          string `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name          string `bun:"name,notnull,unique"`
}

// OSType is a guest OS (CloudStack's guest_os; listOsTypes). Templates and
// VMs refer to it for hypervisor-specific guest settings.
type OSType struct {
	bun.BaseModel `bun:"table:os_types"`
	ID            int64     `bun:"id,pk,autoincrement"`
	UUID          string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	CategoryID    int64     `bun:"category_id,notnull"`
	Name          string    `bun:"name"`
	DisplayName   string    `bun:"display_name,notnull"`
	IsUserDefined bool      `bun:"is_user_defined,notnull"`
	ForDisplay    bool      `bun:"display,notnull"`
	Created       time.Time `bun:"created,notnull"`
	Removed       time.Time `bun:"removed,soft_delete,nullzero"`
}

// Template formats and types.
const (
	FormatQCOW2 = "QCOW2"
	FormatRAW   = "RAW"
	FormatVHD   = "VHD"
	FormatVHDX  = "VHDX"
	FormatOVA   = "OVA"
	FormatISO   = "ISO"

	TemplateTypeUser    = "USER"
	TemplateTypeBuiltin = "BUILTIN"
	TemplateTypeSystem  = "SYSTEM"
	TemplateTypeRouting = "ROUTING"
	TemplateTypePerHost = "PERHOSTROUTING"
)

// Template states.
const (
	TemplateActive   = "Active"
	TemplateInactive = "Inactive"
)

// Template is a template or an ISO (Format ISO), as CloudStack keeps both in
// vm_template. Where its bits are is in the ref tables: per image store
// (download), per primary pool (copy for root volumes), per zone.
type Template struct {
	bun.BaseModel    `bun:"table:vm_templates"`
	ID               int64     `bun:"id,pk,autoincrement"`
	UUID             string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	UniqueName       string    `bun:"unique_name,notnull"`
	Name             string    `bun:"name,notnull"`
	DisplayText      string    `bun:"display_text,type:text"`
	Format           string    `bun:"format,notnull"`
	Type             string    `bun:"type,notnull"` // USER, BUILTIN, SYSTEM, ROUTING
	Public           bool      `bun:"public,notnull"`
	Featured         bool      `bun:"featured,notnull"`
	CrossZones       bool      `bun:"cross_zones,notnull"`
	URL              string    `bun:"url,type:text"`
	Checksum         string    `bun:"checksum"` // "{SHA-256}hex" or bare MD5, as CloudStack
	OSTypeID         int64     `bun:"os_type_id,notnull"`
	HypervisorType   string    `bun:"hypervisor_type"`
	Bits             int       `bun:"bits,notnull"`
	HVM              bool      `bun:"hvm,notnull"`
	Size             int64     `bun:"size,nullzero"` // virtual size in bytes, once known
	Bootable         bool      `bun:"bootable,notnull"`
	Extractable      bool      `bun:"extractable,notnull"`
	EnablePassword   bool      `bun:"enable_password,notnull"`
	EnableSSHKey     bool      `bun:"enable_sshkey,notnull"`
	DirectDownload   bool      `bun:"direct_download,notnull"`
	TemplateTag      string    `bun:"template_tag"`
	SourceTemplateID int64     `bun:"source_template_id,nullzero"`
	State            string    `bun:"state,notnull"`
	AccountID        int64     `bun:"account_id,notnull"`
	DomainID         int64     `bun:"domain_id,notnull"`
	SortKey          int       `bun:"sort_key,notnull"`
	UpdateCount      int64     `bun:"update_count,notnull"`
	Created          time.Time `bun:"created,notnull"`
	Removed          time.Time `bun:"removed,soft_delete,nullzero"`
}

// Download states of a template (or volume) copy.
const (
	DownloadNotDownloaded = "NOT_DOWNLOADED"
	DownloadInProgress    = "DOWNLOAD_IN_PROGRESS"
	DownloadDownloaded    = "DOWNLOADED"
	DownloadError         = "DOWNLOAD_ERROR"
	DownloadAbandoned     = "ABANDONED"
	DownloadUploaded      = "UPLOADED"
)

// Data object states of a copy on a store (ObjectInDataStoreStateMachine).
const (
	ObjectAllocated  = "Allocated"
	ObjectCreating   = "Creating"
	ObjectCreated    = "Created"
	ObjectReady      = "Ready"
	ObjectCopying    = "Copying"
	ObjectDestroying = "Destroying"
	ObjectDestroyed  = "Destroyed"
	ObjectFailed     = "Failed"
)

// TemplateStoreRef is a template's copy on an image store: its download
// progress and where it was installed.
type TemplateStoreRef struct {
	bun.BaseModel `bun:"table:template_store_refs"`
	ID            int64     `bun:"id,pk,autoincrement"`
	StoreID       int64     `bun:"store_id,notnull"`
	TemplateID    int64     `bun:"template_id,notnull"`
	ZoneID        int64     `bun:"zone_id,nullzero"`
	StoreRole     string    `bun:"store_role,notnull"` // Image, ImageCache
	DownloadState string    `bun:"download_state,notnull"`
	DownloadPct   int       `bun:"download_pct,notnull"`
	ErrorStr      string    `bun:"error_str,type:text"`
	LocalPath     string    `bun:"local_path,type:text"`
	InstallPath   string    `bun:"install_path,type:text"`
	URL           string    `bun:"url,type:text"`
	Size          int64     `bun:"size,notnull"`
	PhysicalSize  int64     `bun:"physical_size,notnull"`
	State         string    `bun:"state,notnull"`
	JobID         string    `bun:"job_id,type:varchar(64)"`
	Destroyed     bool      `bun:"destroyed,notnull"`
	UpdateCount   int64     `bun:"update_count,notnull"`
	Created       time.Time `bun:"created,notnull"`
	LastUpdated   time.Time `bun:"last_updated,nullzero"`
}

// TemplatePoolRef is a template's copy on a primary pool, the base that root
// volumes are cloned from (CloudStack's template_spool_ref).
type TemplatePoolRef struct {
	bun.BaseModel `bun:"table:template_pool_refs"`
	ID            int64     `bun:"id,pk,autoincrement"`
	PoolID        int64     `bun:"pool_id,notnull"`
	TemplateID    int64     `bun:"template_id,notnull"`
	DownloadState string    `bun:"download_state,notnull"`
	DownloadPct   int       `bun:"download_pct,notnull"`
	ErrorStr      string    `bun:"error_str,type:text"`
	LocalPath     string    `bun:"local_path,type:text"`
	InstallPath   string    `bun:"install_path,type:text"`
	TemplateSize  int64     `bun:"template_size,notnull"`
	MarkedForGC   bool      `bun:"marked_for_gc,notnull"`
	State         string    `bun:"state,notnull"`
	JobID         string    `bun:"job_id,type:varchar(64)"`
	UpdateCount   int64     `bun:"update_count,notnull"`
	Created       time.Time `bun:"created,notnull"`
	LastUpdated   time.Time `bun:"last_updated,nullzero"`
}

// TemplateZoneRef says a template is available in a zone.
type TemplateZoneRef struct {
	bun.BaseModel `bun:"table:template_zone_refs"`
	ID            int64     `bun:"id,pk,autoincrement"`
	ZoneID        int64     `bun:"zone_id,notnull"`
	TemplateID    int64     `bun:"template_id,notnull"`
	Created       time.Time `bun:"created,notnull"`
	LastUpdated   time.Time `bun:"last_updated,nullzero"`
	Removed       time.Time `bun:"removed,soft_delete,nullzero"`
}

// Offering states.
const (
	OfferingActive   = "Active"
	OfferingInactive = "Inactive"

	NetworkOfferingEnabled  = "Enabled"
	NetworkOfferingDisabled = "Disabled"
)

// Provisioning types of disks.
const (
	ProvisioningThin   = "thin"
	ProvisioningSparse = "sparse"
	ProvisioningFat    = "fat"
)

// ServiceOffering is a compute offering: CPU count, MHz per CPU and memory
// (MB). Customized offerings leave CPU/Speed/RAMSize zero and bound what the
// user may ask with the Min/Max fields. DomainIDs and ZoneIDs restrict it
// (comma lists of internal ids, empty = everywhere), as CloudStack's
// domainid/zoneid details. UseLocalStorage is storagetype=local.
type ServiceOffering struct {
	bun.BaseModel   `bun:"table:service_offerings"`
	ID              int64     `bun:"id,pk,autoincrement"`
	UUID            string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name            string    `bun:"name,notnull"`
	UniqueName      string    `bun:"unique_name,nullzero,unique"` // system offerings' stable key
	DisplayText     string    `bun:"display_text,type:text"`
	CPU             int       `bun:"cpu,nullzero"`
	Speed           int       `bun:"speed,nullzero"`    // MHz
	RAMSize         int       `bun:"ram_size,nullzero"` // MB
	MinCPU          int       `bun:"min_cpu,nullzero"`
	MaxCPU          int       `bun:"max_cpu,nullzero"`
	MinMemory       int       `bun:"min_memory,nullzero"`
	MaxMemory       int       `bun:"max_memory,nullzero"`
	Customized      bool      `bun:"customized,notnull"`
	HostTag         string    `bun:"host_tag"`
	UseLocalStorage bool      `bun:"use_local_storage,notnull"`
	HAEnabled       bool      `bun:"ha_enabled,notnull"`
	LimitCPUUse     bool      `bun:"limit_cpu_use,notnull"`
	IsVolatile      bool      `bun:"is_volatile,notnull"`
	SystemUse       bool      `bun:"system_use,notnull"`
	VMType          string    `bun:"vm_type"` // for system offerings: domainrouter, consoleproxy, secondarystoragevm
	DiskOfferingID  int64     `bun:"disk_offering_id,nullzero"`
	NetworkRate     int       `bun:"nw_rate,nullzero"` // Mbit/s
	DomainIDs       string    `bun:"domain_ids,type:text"`
	ZoneIDs         string    `bun:"zone_ids,type:text"`
	State           string    `bun:"state,notnull"`
	SortKey         int       `bun:"sort_key,notnull"`
	Created         time.Time `bun:"created,notnull"`
	Removed         time.Time `bun:"removed,soft_delete,nullzero"`
}

// DiskOffering is a disk size (bytes, 0 when Customized) with placement tags
// and QoS. DomainIDs and ZoneIDs as on ServiceOffering.
type DiskOffering struct {
	bun.BaseModel    `bun:"table:disk_offerings"`
	ID               int64     `bun:"id,pk,autoincrement"`
	UUID             string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name             string    `bun:"name,notnull"`
	UniqueName       string    `bun:"unique_name,nullzero,unique"`
	DisplayText      string    `bun:"display_text,type:text"`
	DiskSize         int64     `bun:"disk_size,notnull"` // bytes
	Customized       bool      `bun:"customized,notnull"`
	CustomizedIOPS   bool      `bun:"customized_iops,notnull"`
	MinIOPS          int64     `bun:"min_iops,nullzero"`
	MaxIOPS          int64     `bun:"max_iops,nullzero"`
	Tags             string    `bun:"tags"` // comma list matched against storage_pool_tags
	UseLocalStorage  bool      `bun:"use_local_storage,notnull"`
	ProvisioningType string    `bun:"provisioning_type,notnull"` // thin, sparse, fat
	CacheMode        string    `bun:"cache_mode"`
	SystemUse        bool      `bun:"system_use,notnull"`
	DisplayOffering  bool      `bun:"display_offering,notnull"`
	DomainIDs        string    `bun:"domain_ids,type:text"`
	ZoneIDs          string    `bun:"zone_ids,type:text"`
	State            string    `bun:"state,notnull"`
	SortKey          int       `bun:"sort_key,notnull"`
	Created          time.Time `bun:"created,notnull"`
	Removed          time.Time `bun:"removed,soft_delete,nullzero"`
}

// NetworkOffering says what a guest network gets: its guest type, traffic
// type and which services from which providers (NetworkOfferingService).
type NetworkOffering struct {
	bun.BaseModel      `bun:"table:network_offerings"`
	ID                 int64     `bun:"id,pk,autoincrement"`
	UUID               string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name               string    `bun:"name,notnull"`
	UniqueName         string    `bun:"unique_name,nullzero,unique"`
	DisplayText        string    `bun:"display_text,type:text"`
	GuestType          string    `bun:"guest_type"` // Shared, Isolated, L2
	TrafficType        string    `bun:"traffic_type,notnull"`
	Tags               string    `bun:"tags"`
	State              string    `bun:"state,notnull"` // Enabled, Disabled
	IsDefault          bool      `bun:"is_default,notnull"`
	SystemOnly         bool      `bun:"system_only,notnull"`
	SpecifyVlan        bool      `bun:"specify_vlan,notnull"`
	SpecifyIPRanges    bool      `bun:"specify_ip_ranges,notnull"`
	ConserveMode       bool      `bun:"conserve_mode,notnull"`
	IsPersistent       bool      `bun:"is_persistent,notnull"`
	EgressDefaultAllow bool      `bun:"egress_default_policy,notnull"`
	Availability       string    `bun:"availability,notnull"` // Required, Optional
	NetworkRate        int       `bun:"nw_rate,nullzero"`
	ServiceOfferingID  int64     `bun:"service_offering_id,nullzero"` // of its virtual router
	DomainIDs          string    `bun:"domain_ids,type:text"`
	ZoneIDs            string    `bun:"zone_ids,type:text"`
	SortKey            int       `bun:"sort_key,notnull"`
	Created            time.Time `bun:"created,notnull"`
	Removed            time.Time `bun:"removed,soft_delete,nullzero"`
}

// NetworkOfferingService is one supported service of a network offering and
// its provider (CloudStack's ntwk_offering_service_map).
type NetworkOfferingService struct {
	bun.BaseModel     `bun:"table:network_offering_services"`
	ID                int64     `bun:"id,pk,autoincrement"`
	NetworkOfferingID int64     `bun:"network_offering_id,notnull"`
	Service           string    `bun:"service,notnull,type:varchar(64)"`  // Dhcp, Dns, UserData, SourceNat...
	Provider          string    `bun:"provider,notnull,type:varchar(64)"` // VirtualRouter, ...
	Created           time.Time `bun:"created,notnull"`
}
