package models

import (
	"time"

	"github.com/uptrace/bun"
)

// Zone network types (networktype).
const (
	NetworkTypeBasic    = "Basic"
	NetworkTypeAdvanced = "Advanced"
)

// Allocation states of zones, pods, clusters (allocationstate): a Disabled
// resource keeps running what it has but the planner puts nothing new on it.
const (
	AllocationEnabled  = "Enabled"
	AllocationDisabled = "Disabled"
)

// Hypervisor types as CloudStack spells them.
const (
	HypervisorKVM       = "KVM"
	HypervisorVMware    = "VMware"
	HypervisorXenServer = "XenServer"
	HypervisorHyperV    = "Hyperv"
	HypervisorLXC       = "LXC"
	HypervisorBareMetal = "BareMetal"
	HypervisorSimulator = "Simulator"
	HypervisorNone      = "None"
)

// Host types (type).
const (
	HostTypeRouting          = "Routing"
	HostTypeSecondaryStorage = "SecondaryStorage"
	HostTypeConsoleProxy     = "ConsoleProxy"
	HostTypeStorage          = "Storage"
	HostTypeExternalDhcp     = "ExternalDhcp"
)

// Host states (the agent connection; CloudStack's host.status).
const (
	HostUp           = "Up"
	HostDown         = "Down"
	HostDisconnected = "Disconnected"
	HostAlert        = "Alert"
	HostConnecting   = "Connecting"
	HostCreating     = "Creating"
	HostError        = "Error"
	HostRemoved      = "Removed"
)

// Host resource states (resourcestate): what the admin allows.
const (
	ResourceEnabled                = "Enabled"
	ResourceDisabled               = "Disabled"
	ResourceMaintenance            = "Maintenance"
	ResourcePrepareForMaintenance  = "PrepareForMaintenance"
	ResourceErrorInMaintenance     = "ErrorInMaintenance"
	ResourceErrorInPrepareForMaint = "ErrorInPrepareForMaintenance"
)

// Zone is a datacenter (CloudStack's data_center). A zone with DomainID set
// is private to that domain and its subdomains.
type Zone struct {
	bun.BaseModel          `bun:"table:zones"`
	ID                     int64  `bun:"id,pk,autoincrement"`
	UUID                   string `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name                   string `bun:"name,notnull"`
	Description            string `bun:"description,type:text"`
	NetworkType            string `bun:"networktype,notnull"` // Basic, Advanced
	DNS1                   string `bun:"dns1"`
	DNS2                   string `bun:"dns2"`
	IP6DNS1                string `bun:"ip6_dns1"`
	IP6DNS2                string `bun:"ip6_dns2"`
	InternalDNS1           string `bun:"internal_dns1"`
	InternalDNS2           string `bun:"internal_dns2"`
	GuestNetworkCIDR       string `bun:"guest_network_cidr"`
	NetworkDomain          string `bun:"network_domain"`
	DomainID               int64  `bun:"domain_id,nullzero"` // set for a private zone
	AllocationState        string `bun:"allocation_state,notnull"`
	IsSecurityGroupEnabled bool   `bun:"is_security_group_enabled,notnull"`
	IsLocalStorageEnabled  bool   `bun:"is_local_storage_enabled,notnull"`
	// MacAddress is the counter guest MACs are derived from (as CloudStack's
	// data_center.mac_address), bumped with a guarded update per NIC.
	MacAddress int64     `bun:"mac_address,notnull"`
	ZoneToken  string    `bun:"zone_token"`
	SortKey    int       `bun:"sort_key,notnull"`
	Created    time.Time `bun:"created,notnull"`
	Removed    time.Time `bun:"removed,soft_delete,nullzero"`
}

// Pod is a rack with its own management subnet (CloudStack's host_pod_ref).
// StartIP..EndIP is the system reserved range, handed out row by row from
// op_dc_ip_address_alloc; the netmask follows from CIDRSize.
type Pod struct {
	bun.BaseModel   `bun:"table:pods"`
	ID              int64     `bun:"id,pk,autoincrement"`
	UUID            string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name            string    `bun:"name,notnull"`
	ZoneID          int64     `bun:"zone_id,notnull"`
	Gateway         string    `bun:"gateway"`
	CIDRAddress     string    `bun:"cidr_address"`
	CIDRSize        int       `bun:"cidr_size,notnull"`
	StartIP         string    `bun:"start_ip,type:varchar(40)"`
	EndIP           string    `bun:"end_ip,type:varchar(40)"`
	AllocationState string    `bun:"allocation_state,notnull"`
	ExternalDhcp    bool      `bun:"external_dhcp,notnull"`
	Created         time.Time `bun:"created,notnull"`
	Removed         time.Time `bun:"removed,soft_delete,nullzero"`
}

// Cluster types.
const (
	ClusterCloudManaged    = "CloudManaged"
	ClusterExternalManaged = "ExternalManaged"
)

// Cluster is a homogeneous group of hosts: one hypervisor type, one subnet,
// shared primary storage. The overcommit ratios are per cluster (CloudStack
// keeps them in cluster_details; they are read on every placement).
type Cluster struct {
	bun.BaseModel      `bun:"table:clusters"`
	ID                 int64     `bun:"id,pk,autoincrement"`
	UUID               string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name               string    `bun:"name,notnull"`
	GUID               string    `bun:"guid,nullzero,unique"`
	ZoneID             int64     `bun:"zone_id,notnull"`
	PodID              int64     `bun:"pod_id,notnull"`
	HypervisorType     string    `bun:"hypervisor_type,notnull"`
	ClusterType        string    `bun:"cluster_type,notnull"` // CloudManaged, ExternalManaged
	URL                string    `bun:"url,type:text"`        // vCenter cluster URL for VMware
	VMwareDatacenter   string    `bun:"vmware_datacenter"`
	AllocationState    string    `bun:"allocation_state,notnull"`
	ManagedState       string    `bun:"managed_state,notnull"` // Managed, PrepareUnmanaged, Unmanaged...
	CPUOvercommitRatio float64   `bun:"cpu_overcommit_ratio,notnull"`
	MemOvercommitRatio float64   `bun:"mem_overcommit_ratio,notnull"`
	Created            time.Time `bun:"created,notnull"`
	Removed            time.Time `bun:"removed,soft_delete,nullzero"`
}

// ClusterDetail is a key/value setting of a cluster (e.g. vCenter username
// and password, the password encrypted by the caller with infra/secrets).
type ClusterDetail struct {
	bun.BaseModel `bun:"table:cluster_details"`
	ID            int64  `bun:"id,pk,autoincrement"`
	ClusterID     int64  `bun:"cluster_id,notnull"`
	Name          string `bun:"name,notnull"`
	Value         string `bun:"value,type:text"`
}

// Host is one compute node (or, for other types, an agent-like resource).
// CPU and memory come from the driver's discovery. CPUAllocated (MHz) and
// MemAllocated (bytes) are what the planner has reserved, moved with guarded
// updates so two deployments never overbook the same headroom.
type Host struct {
	bun.BaseModel     `bun:"table:hosts"`
	ID                int64     `bun:"id,pk,autoincrement"`
	UUID              string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name              string    `bun:"name,notnull"`
	Type              string    `bun:"type,notnull"`
	State             string    `bun:"state,notnull"`          // Up, Down, Disconnected, Alert, Connecting, Creating...
	ResourceState     string    `bun:"resource_state,notnull"` // Enabled, Disabled, Maintenance...
	StateReason       string    `bun:"state_reason,type:text"`
	HypervisorType    string    `bun:"hypervisor_type,notnull"`
	HypervisorVersion string    `bun:"hypervisor_version"`
	URL               string    `bun:"url,type:text"`
	GUID              string    `bun:"guid,nullzero,unique"` // driver's stable identity; NULL until discovered
	PrivateIPAddress  string    `bun:"private_ip_address,type:varchar(40)"`
	PrivateNetmask    string    `bun:"private_netmask,type:varchar(40)"`
	PrivateMacAddress string    `bun:"private_mac_address,type:varchar(17)"`
	PublicIPAddress   string    `bun:"public_ip_address,type:varchar(40)"`
	PublicNetmask     string    `bun:"public_netmask,type:varchar(40)"`
	StorageIPAddress  string    `bun:"storage_ip_address,type:varchar(40)"`
	CPUSockets        int       `bun:"cpu_sockets,notnull"`
	CPUs              int       `bun:"cpus,notnull"`  // cores
	Speed             int       `bun:"speed,notnull"` // MHz per core
	RAM               int64     `bun:"ram,notnull"`   // bytes
	CPUAllocated      int64     `bun:"cpu_allocated,notnull"`
	MemAllocated      int64     `bun:"mem_allocated,notnull"`
	Capabilities      string    `bun:"capabilities,type:text"`
	Version           string    `bun:"version"`
	ZoneID            int64     `bun:"zone_id,notnull"`
	PodID             int64     `bun:"pod_id,nullzero"`
	ClusterID         int64     `bun:"cluster_id,nullzero"`
	MgmtServerID      int64     `bun:"mgmt_server_id,nullzero"`
	LastPing          time.Time `bun:"last_ping,nullzero"`
	Disconnected      time.Time `bun:"disconnected,nullzero"`
	UpdateCount       int64     `bun:"update_count,notnull"`
	Created           time.Time `bun:"created,notnull"`
	Removed           time.Time `bun:"removed,soft_delete,nullzero"`
}

// HostDetail is a key/value setting of a host (credentials, BMC address...;
// secrets encrypted by the caller with infra/secrets).
type HostDetail struct {
	bun.BaseModel `bun:"table:host_details"`
	ID            int64  `bun:"id,pk,autoincrement"`
	HostID        int64  `bun:"host_id,notnull"`
	Name          string `bun:"name,notnull"`
	Value         string `bun:"value,type:text"`
}

// HostTag is one tag of a host; service offerings with a host tag only land
// on hosts carrying it. Implicit tags come from the driver, not the admin.
type HostTag struct {
	bun.BaseModel `bun:"table:host_tags"`
	ID            int64  `bun:"id,pk,autoincrement"`
	HostID        int64  `bun:"host_id,notnull"`
	Tag           string `bun:"tag,notnull"`
	IsImplicit    bool   `bun:"is_implicit,notnull"`
}
